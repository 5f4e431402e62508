/**
 * The memory limit (`GRACE_MAX_MEMORY`): the watch that says which process
 * has stayed above it for the grace period (src/internal/memory.ts); then
 * real processes: a worker that grows past it is replaced through its slot,
 * and a single process restarts itself, with nothing failed under load; a
 * limit below what a process uses once started ends the program with one
 * line and exit code 1.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Memory from "../src/internal/memory.ts"
import {
  bothLoads,
  gone,
  killTaggedOnClose,
  logsOf,
  matching,
  newTag,
  pidOf,
  startSingle,
  startWorkers,
  waitForLog,
  waitForLogWhere,
  workersStarted
} from "./support/fixture.ts"
import { get } from "./support/http.ts"
import { freePort } from "./support/net.ts"
import { spawnFixture } from "./support/process.ts"

const limit: Memory.Limit = { bytes: 100, graceMillis: 1000 }

/** Feeds samples `(time, rss)` of one process to the watch; the times at which it was due, and since its start. */
const dueAt = (samples: ReadonlyArray<readonly [number, number | undefined]>) => {
  let marks: ReadonlyMap<string, Memory.Mark> = new Map()
  const due: Array<string> = []
  for (const [now, rss] of samples) {
    const observed = Memory.observe(marks, [{ key: "p", rss }], now, limit)
    marks = observed.marks
    for (const d of observed.due) due.push(`${now}${d.sinceStart ? " since start" : ""}`)
  }
  return due
}

describe("the memory watch", () => {
  it("is due once above the limit for the whole grace period, then again after another", () => {
    assert.deepStrictEqual(
      dueAt([
        [0, 50],
        [500, 150],
        [1000, 150],
        [1500, 150],
        [2000, 150],
        [2500, 150]
      ]),
      ["1500", "2500"]
    )
  })

  it("a sample at or below the limit starts the grace period again; a process gone is forgotten", () => {
    assert.deepStrictEqual(
      dueAt([
        [0, 150],
        [500, 150],
        [900, 100],
        [1000, 150],
        [1900, 150],
        [2000, undefined],
        [2100, 150],
        [3000, 150]
      ]),
      []
    )
  })

  it("says whether the process was above the limit from its first sample", () => {
    assert.deepStrictEqual(
      dueAt([
        [0, 150],
        [1000, 150]
      ]),
      ["1000 since start"]
    )
  })

  it("samples every second, or four times within a shorter grace period", () => {
    const every = (grace: Duration.Input) => Duration.toMillis(Memory.interval(Duration.fromInputUnsafe(grace)))
    assert.deepStrictEqual(
      [every("10 seconds"), every("2 seconds"), every("500 millis"), every("100 millis")],
      [1000, 500, 125, 100]
    )
  })
})

// Limits well above what the fixture uses once started, and the growth well above them.
const LIMIT = "200MiB"
const LIMIT_BYTES = 200 * 1024 * 1024
const GROWTH_MB = 240

describe("a memory limit, with real processes", () => {
  it.live(
    "a worker that grows past the limit is replaced through its slot, new worker first; nothing fails under load",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers, url } = yield* startWorkers({
          GRACE_MAX_MEMORY: LIMIT,
          GRACE_MAX_MEMORY_GRACE: "500ms"
        })
        const load = yield* bothLoads(url)
        yield* load.more(20)
        const from = program.lines.length
        const grown = pidOf(yield* get(`${url}grow?mb=${GROWTH_MB}`))
        const slot = workers.indexOf(grown)
        assert.isAtLeast(slot, 0, `${grown} is one of ${workers.join(", ")}`)
        const over = yield* waitForLog(program, from, "effect-grace: worker over memory limit", { worker: grown })
        assert.strictEqual(over.annotations.slot, slot)
        assert.strictEqual(over.annotations.pid, primary)
        assert.strictEqual(over.annotations.limit, LIMIT_BYTES)
        assert.isAbove(Number(over.annotations.rss), LIMIT_BYTES)
        assert.include(String(over.annotations.maximum), "200 MiB")
        // The new worker is ready before the old one goes.
        yield* gone(grown)
        const replacement = workersStarted(program, primary, from, workers.length)[slot]
        assert.isDefined(replacement)
        const servingAt = logsOf(program, from).findIndex((log) =>
          matching(log, "effect-grace: worker serving", { pid: primary, slot })
        )
        assert.isAtLeast(servingAt, 0, "the replacement served")
        const drainedAt = logsOf(program, from).findIndex((log) =>
          matching(log, "effect-grace: drain started", { pid: grown })
        )
        assert.isAbove(drainedAt, servingAt, "the old worker drained once its replacement served")
        // It answers; the other slot kept its worker; one replacement only.
        const mark = load.mark()
        yield* load.more(40)
        assert.include(load.pids(mark), replacement!)
        assert.deepStrictEqual(
          workersStarted(program, primary, from, workers.length).filter((pid) => pid !== undefined),
          [replacement]
        )
        yield* load.stop
        assert.deepStrictEqual(load.failures(), [])
        const replaced = logsOf(program, from).filter((log) => log.message === "effect-grace: worker over memory limit")
        assert.strictEqual(replaced.length, 1)
      }),
    { timeout: 60_000 }
  )

  it.live(
    "a single process that grows past the limit restarts itself; nothing fails under load",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const url = `http://127.0.0.1:${port}/`
        const { fixture, first } = yield* startSingle({
          specs: (tag) => [`${tag}=127.0.0.1:${port}`],
          env: { GRACE_MAX_MEMORY: LIMIT, GRACE_MAX_MEMORY_GRACE: "500ms" }
        })
        const load = yield* bothLoads(url)
        yield* load.more(20)
        const from = fixture.lines.length
        assert.strictEqual(pidOf(yield* get(`${url}grow?mb=${GROWTH_MB}`)), first.pid)
        const over = yield* waitForLog(fixture, from, "effect-grace: over memory limit; restarting", { pid: first.pid })
        assert.isAbove(Number(over.annotations.rss), LIMIT_BYTES)
        const successor = yield* waitForLogWhere(
          fixture,
          from,
          "a successor ready",
          (log) => log.message === "effect-grace: ready" && log.annotations.pid !== first.pid
        )
        yield* gone(first.pid)
        const mark = load.mark()
        yield* load.more(40)
        assert.deepStrictEqual([...new Set(load.pids(mark))], [successor.annotations.pid])
        yield* load.stop
        assert.deepStrictEqual(load.failures(), [])
        const restarts = logsOf(fixture, from).filter(
          (log) => log.message === "effect-grace: over memory limit; restarting"
        )
        assert.strictEqual(restarts.length, 1)
      }),
    { timeout: 60_000 }
  )

  for (const workers of [undefined, "2"]) {
    it.live(
      `a limit below what ${workers === undefined ? "the process" : "a worker"} uses once started ends the program: one line, exit code 1`,
      () =>
        Effect.gen(function* () {
          const port = yield* freePort()
          const tag = newTag()
          yield* killTaggedOnClose(tag)
          const started = Date.now()
          const program = yield* spawnFixture("supervised", [`${tag}=127.0.0.1:${port}`], {
            env: {
              GRACE_MAX_MEMORY: "20MB",
              GRACE_MAX_MEMORY_GRACE: "500ms",
              ...(workers === undefined ? {} : { GRACE_WORKERS: workers })
            }
          })
          const exit = yield* program.closed("20 seconds")
          assert.strictEqual(exit.code, 1)
          assert.isBelow(Date.now() - started, 15_000)
          // The fixture logs JSON lines on stdout: the refusal is one of them.
          const refusals = logsOf(program).filter((log) => log.message.startsWith("effect-grace: cannot start:"))
          assert.strictEqual(refusals.length, 1, program.lines.join("\n"))
          const line = refusals[0]!.message
          assert.include(
            line,
            "the memory limit (GRACE_MAX_MEMORY, maxMemory) of 19.07 MiB (20000000 bytes) is below what"
          )
          assert.include(line, workers === undefined ? "this process (pid" : "worker ")
          assert.include(line, "raise the limit")
          assert.notInclude(line, "\n")
          const replaced = logsOf(program).filter((log) => log.message === "effect-grace: worker over memory limit")
          assert.deepStrictEqual(replaced, [], "no replacement tried")
        }),
      { timeout: 30_000 }
    )
  }
})
