/**
 * No signal the service documents (SIGHUP, SIGUSR2, SIGTERM, SIGINT) kills
 * one of its processes by its default action, at any moment of its life:
 * each is sent to each kind of process (a single process, a successor, a
 * primary, a worker) while it starts (from its first instruction: the
 * moment its parent says it was started), while it serves, and while it
 * drains after a hand-off; and to a process started by hand with the
 * worker's variable. What each does is the README's signal table.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { tempDir } from "./support/fs.ts"
import { answeredBy, request, steadyLoad } from "./support/http.ts"
import { freePort } from "./support/net.ts"
import { eventually, isAlive, spawnFixture } from "./support/process.ts"
import { killTaggedOnClose, newTag } from "./support/fixture.ts"
import type { Spawned } from "./support/process.ts"

interface Started {
  readonly program: Spawned
  readonly url: string
  readonly mode: (mode: string) => void
  readonly pidFile: string
}

/** The supervised fixture on a free port, every process of it killed at the end; not waited for. */
const launch = (env: Record<string, string> = {}, firstMode = "ok") =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const modeFile = Path.join(dir, "mode")
    const pidFile = Path.join(dir, "pid")
    Fs.writeFileSync(modeFile, firstMode)
    const port = yield* freePort()
    const tag = newTag()
    yield* killTaggedOnClose(tag)
    const program = yield* spawnFixture("supervised", [`${tag}=127.0.0.1:${port}`], {
      env: { FIXTURE_MODE_FILE: modeFile, GRACE_PID_FILE: pidFile, GRACE_PROBATION: "0", ...env }
    })
    const started: Started = {
      program,
      url: `http://127.0.0.1:${port}/`,
      mode: (mode) => Fs.writeFileSync(modeFile, mode),
      pidFile
    }
    return started
  })

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** The first line from `from` on with this message (its start) and these annotations, in their order. */
const line = (program: Spawned, from: number, message: string, fields: string = "") =>
  program.waitForLineFrom(from, new RegExp(`"effect-grace: ${escape(message)}.*"annotations":\\{${fields}`))

/**
 * Whether `pid` has a handler of `signal` (SigCgt in /proc/PID/status): from its preload's first instruction on. In
 * the milliseconds Node takes to start before it, a signal has its default action (Node's spawn resets them all).
 */
const catches = (pid: number, signal: NodeJS.Signals) => {
  try {
    const status = Fs.readFileSync(`/proc/${pid}/status`, "utf8")
    const caught = BigInt(`0x${status.match(/^SigCgt:\s*([0-9a-f]+)$/m)![1]}`)
    return ((caught >> BigInt(Os.constants.signals[signal] - 1)) & 1n) === 1n
  } catch {
    return false
  }
}

/** Sends `signal` to `pid` as soon as it takes it: polled every millisecond, bounded. */
const signalOnceCaught = (pid: number, signal: NodeJS.Signals) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 10_000
    while (!catches(pid, signal)) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`pid ${pid} never took ${signal}`))
      yield* Effect.sleep("1 millis")
    }
    process.kill(pid, signal)
  })

const readyPid = (program: Spawned, from = 0) =>
  Effect.map(line(program, from, "ready", `"pid":(\\d+),"listeners"`), (match) => Number(match[1]))

describe("a single process", () => {
  for (const signal of ["SIGHUP", "SIGUSR2"] as const) {
    it.live(
      `${signal} while it serves restarts it`,
      () =>
        Effect.gen(function* () {
          const s = yield* launch()
          const first = yield* readyPid(s.program)
          const from = s.program.lines.length
          process.kill(first, signal)
          const done = yield* line(s.program, from, "restarted", `"pid":${first},"kind":"upgrade","successor":(\\d+)`)
          yield* answeredBy(s.url, Number(done[1]))
          yield* eventually(() => !isAlive(first), "the old process gone")
        }),
      { timeout: 30_000 }
    )
  }

  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it.live(
      `${signal} while it starts: the start-up is cut, and it exits 0`,
      () =>
        Effect.gen(function* () {
          const s = yield* launch({}, "hang")
          yield* s.program.waitForLine(new RegExp(`^starting ${s.program.pid}$`))
          process.kill(s.program.pid, signal)
          assert.deepStrictEqual(yield* s.program.exited(), { code: 0, signal: null })
        }),
      { timeout: 30_000 }
    )
  }

  it.live(
    "SIGHUP while it starts is kept, and restarts it once ready",
    () =>
      Effect.gen(function* () {
        const s = yield* launch({}, "slow:1500")
        yield* s.program.waitForLine(new RegExp(`^starting ${s.program.pid}$`))
        s.mode("ok")
        process.kill(s.program.pid, "SIGHUP")
        yield* line(s.program, 0, "restart queued", `"pid":${s.program.pid}`)
        const done = yield* line(
          s.program,
          0,
          "restarted",
          `"pid":${s.program.pid},"kind":"upgrade","successor":(\\d+)`
        )
        yield* answeredBy(s.url, Number(done[1]))
      }),
    { timeout: 30_000 }
  )
})

describe("a successor, from its first instruction", () => {
  for (const signal of ["SIGHUP", "SIGUSR2"] as const) {
    it.live(
      `${signal} as it is started is kept: it serves, then restarts once its parent has exited`,
      () =>
        Effect.gen(function* () {
          const s = yield* launch()
          const first = yield* readyPid(s.program)
          const load = yield* steadyLoad(s.url, 2)
          process.kill(first, "SIGUSR2")
          const started = yield* line(s.program, 0, "successor started", `"pid":${first},"successor":(\\d+)`)
          const successor = Number(started[1])
          yield* signalOnceCaught(successor, signal)
          const done = yield* line(s.program, 0, "restarted", `"pid":${successor},"kind":"upgrade","successor":(\\d+)`)
          const third = Number(done[1])
          yield* answeredBy(s.url, third)
          yield* load.stop
          assert.deepStrictEqual(
            load.outcomes.filter((o) => o.code !== undefined),
            [],
            "no request failed"
          )
        }),
      { timeout: 30_000 }
    )
  }

  it.live(
    "SIGTERM as it is started ends it before ready: the restart fails, its parent serves on",
    () =>
      Effect.gen(function* () {
        const s = yield* launch()
        const first = yield* readyPid(s.program)
        s.mode("slow:1000")
        process.kill(first, "SIGUSR2")
        const started = yield* line(s.program, 0, "successor started", `"pid":${first},"successor":(\\d+)`)
        yield* signalOnceCaught(Number(started[1]), "SIGTERM")
        yield* line(s.program, 0, "restart failed: ", `"pid":${first},"reason":"ExitedBeforeReady"`)
        yield* answeredBy(s.url, first)
      }),
    { timeout: 30_000 }
  )
})

describe("an old process, draining after its hand-off", () => {
  it.live(
    "SIGHUP is passed on to its successor, which restarts",
    () =>
      Effect.gen(function* () {
        const s = yield* launch({ GRACE_PROBATION: "0" })
        const first = yield* readyPid(s.program)
        // A slow request keeps the old process draining for as long as the test needs.
        yield* Effect.forkChild(request(`${s.url}sleep?ms=4000`, { timeout: "10 seconds" }))
        yield* s.program.waitForLine(new RegExp(`^sleeping ${first}$`))
        process.kill(first, "SIGUSR2")
        yield* line(s.program, 0, "draining", `"pid":${first},"reason":"handoff"`)
        const from = s.program.lines.length
        process.kill(first, "SIGHUP")
        yield* line(s.program, from, "restart passed on", `"pid":${first}`)
        const ready = yield* line(s.program, 0, "successor ready", `"pid":${first},"successor":(\\d+)`)
        const done = yield* line(s.program, from, "restarted", `"pid":${ready[1]},"kind":"upgrade","successor":(\\d+)`)
        yield* answeredBy(s.url, Number(done[1]))
      }),
    { timeout: 30_000 }
  )
})

describe("a worker", () => {
  for (const signal of ["SIGHUP", "SIGUSR2"] as const) {
    it.live(
      `${signal} to a serving worker is ignored, with a line: it serves on`,
      () =>
        Effect.gen(function* () {
          const s = yield* launch({ GRACE_WORKERS: "2" })
          const primary = yield* readyPid(s.program)
          const load = yield* steadyLoad(s.url, 2)
          const worker = Number(
            (yield* line(s.program, 0, "worker started", `"pid":${primary},"slot":0,"worker":(\\d+)`))[1]
          )
          process.kill(worker, signal)
          yield* line(s.program, 0, `${signal} ignored`, `"pid":${worker},"slot":0`)
          yield* eventually(() => load.outcomes.filter((o) => o.pid === worker).length > 5, "the worker answering on")
          yield* load.stop
          assert.deepStrictEqual(
            load.outcomes.filter((o) => o.code !== undefined),
            [],
            "no request failed"
          )
          assert.isTrue(isAlive(worker))
        }),
      { timeout: 30_000 }
    )
  }

  it.live(
    "SIGHUP to a worker as it is started is ignored, with a line: it starts and serves",
    () =>
      Effect.gen(function* () {
        const s = yield* launch({ GRACE_WORKERS: "2" }, "slow:800")
        const started = yield* line(s.program, 0, "worker started", `"pid":${s.program.pid},"slot":0,"worker":(\\d+)`)
        const worker = Number(started[1])
        yield* signalOnceCaught(worker, "SIGHUP")
        yield* signalOnceCaught(worker, "SIGUSR2")
        yield* readyPid(s.program)
        yield* line(s.program, 0, "SIGHUP ignored", `"pid":${worker},"slot":0`)
        yield* line(s.program, 0, "SIGUSR2 ignored", `"pid":${worker},"slot":0`)
        assert.isTrue(isAlive(worker))
      }),
    { timeout: 30_000 }
  )

  it.live(
    "SIGTERM to a worker drains it; its primary starts another in its slot",
    () =>
      Effect.gen(function* () {
        const s = yield* launch({ GRACE_WORKERS: "2" })
        const primary = yield* readyPid(s.program)
        const worker = Number(
          (yield* line(s.program, 0, "worker started", `"pid":${primary},"slot":0,"worker":(\\d+)`))[1]
        )
        const from = s.program.lines.length
        process.kill(worker, "SIGTERM")
        yield* line(s.program, from, "stopped", `"pid":${worker},"slot":0`)
        yield* line(s.program, from, "worker started", `"pid":${primary},"slot":0`)
        assert.isTrue(isAlive(primary))
      }),
    { timeout: 30_000 }
  )
})

describe("a primary", () => {
  it.live(
    "SIGHUP while it starts is kept: the workers roll once the group is ready",
    () =>
      Effect.gen(function* () {
        const s = yield* launch({ GRACE_WORKERS: "2", GRACE_PROBATION: "200 millis" }, "slow:1000")
        yield* line(s.program, 0, "worker started", `"pid":${s.program.pid},"slot":1`)
        s.mode("ok")
        process.kill(s.program.pid, "SIGHUP")
        yield* line(s.program, 0, "restart queued", `"pid":${s.program.pid}`)
        yield* line(s.program, 0, "restarted", `"pid":${s.program.pid},"kind":"roll"`)
      }),
    { timeout: 30_000 }
  )
})

describe("EFFECT_GRACE_WORKER set by hand", () => {
  for (const value of ["0", "abc", "-5"]) {
    it.live(
      `=${value}: one warning, the process serves alone, writes its PID file, and restarts on SIGHUP and SIGUSR2`,
      () =>
        Effect.gen(function* () {
          const s = yield* launch({ EFFECT_GRACE_WORKER: value })
          const first = yield* readyPid(s.program)
          const warnings = s.program.lines.filter((l) => l.includes('"level":"WARN"'))
          assert.strictEqual(warnings.length, 1, warnings.join("\n"))
          assert.include(warnings[0], `EFFECT_GRACE_WORKER=\\"${value}\\" is ignored`)
          assert.strictEqual(Fs.readFileSync(s.pidFile, "utf8").trim(), String(first))
          let current = first
          for (const signal of ["SIGHUP", "SIGUSR2"] as const) {
            const from = s.program.lines.length
            process.kill(current, signal)
            const done = yield* line(
              s.program,
              from,
              "restarted",
              `"pid":${current},"kind":"upgrade","successor":(\\d+)`
            )
            current = Number(done[1])
          }
          yield* answeredBy(s.url, current)
        }),
      { timeout: 30_000 }
    )
  }
})
