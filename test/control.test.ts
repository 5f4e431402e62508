/**
 * The control socket, with real processes: `reload` answers once the new code
 * serves (or why not), `status` says what serves, `stop` answers once
 * drained; the socket survives restarts, is made 0600, refuses another user,
 * and no client can stop or crash the service. Load runs on the service's own
 * port throughout, and no request may fail.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Result from "effect/Result"
import { spawn } from "node:child_process"
import { chmodSync, statSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import { dirname, join } from "node:path"
import * as Control from "../src/internal/control.ts"
import * as Sys from "../src/internal/sys.ts"
import { bothLoads, groupReady, killTaggedOnClose, startSingle, startWorkers, waitForLog } from "./support/fixture.ts"
import { tempDir } from "./support/fs.ts"
import { answeredBy } from "./support/http.ts"
import { exchange, freePort } from "./support/net.ts"
import { eventually, isAlive, nodePath, spawnFixture, spawnProcess } from "./support/process.ts"

type Line = Record<string, unknown> & { readonly ok?: boolean; readonly progress?: string; readonly error?: Failure }

interface Failure {
  readonly _tag: string
  readonly message: string
}

interface Status {
  readonly role: string
  readonly pid: number
  readonly phase: string
  readonly listeners: ReadonlyArray<{
    readonly address: string
    readonly name: string
    readonly inherited: boolean
    readonly sockets: number
  }>
  readonly workers: ReadonlyArray<{
    readonly slot: number
    readonly pid: number
    readonly phase: string
    readonly rssBytes: number
  }>
  readonly lastReload: { readonly kind: string; readonly outcome: string; readonly by: string; readonly from?: number }
}

/** One request on the control socket at `path`: every line it answered, parsed. */
const ask = (path: string, request: string, timeout: Duration.Input = "30 seconds") =>
  Effect.map(exchange({ path }, `${request}\n`, timeout), (text) =>
    text
      .split("\n")
      .filter((line) => line.length > 0)
      .map((line) => JSON.parse(line) as Line)
  )

/** The answer line (the last) of a request. */
const answer = (lines: ReadonlyArray<Line>): Line => {
  const last = lines.at(-1)
  assert.isDefined(last, "an answer line")
  return last!
}

const statusOf = (path: string) => Effect.map(ask(path, "status"), (lines) => answer(lines).status as Status)

/** One process on a free port with a control socket, under load; probation `probation`. */
const single = (env: Record<string, string> = {}) =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const path = join(dir, "control.sock")
    const port = yield* freePort()
    const started = yield* startSingle({
      specs: (tag) => [`${tag}=127.0.0.1:${port}`],
      env: { GRACE_CONTROL: path, GRACE_PROBATION: "500 millis", FIXTURE_MODE_FILE: join(dir, "mode"), ...env }
    })
    const load = yield* bothLoads(`http://127.0.0.1:${port}/`)
    yield* load.more(20)
    const mode = (text: string) => writeFileSync(join(dir, "mode"), text)
    return { ...started, dir, path, port, load, mode }
  })

describe("control socket: requests", () => {
  it("reads the three commands and their flags; anything else is one line that says what to send", () => {
    assert.deepStrictEqual(
      Control.parse("reload"),
      Result.succeed({ command: "reload", upgrade: false, progress: false })
    )
    assert.deepStrictEqual(
      Control.parse("  reload --progress --upgrade \r"),
      Result.succeed({ command: "reload", upgrade: true, progress: true })
    )
    assert.deepStrictEqual(Control.parse("status"), Result.succeed({ command: "status" }))
    assert.deepStrictEqual(Control.parse("stop --progress"), Result.succeed({ command: "stop", progress: true }))
    assert.deepStrictEqual(Control.parse(""), Result.fail("empty request; use reload, status or stop"))
    assert.deepStrictEqual(
      Control.parse("restart"),
      Result.fail('unknown command "restart"; use reload, status or stop')
    )
    assert.deepStrictEqual(
      Control.parse("status --json"),
      Result.fail('unknown flag "--json" for status; it takes none')
    )
    assert.deepStrictEqual(
      Control.parse("reload --force"),
      Result.fail('unknown flag "--force" for reload; use --upgrade or --progress')
    )
  })

  it("lets the service's user and root in, and no one else", () => {
    assert.isUndefined(Control.refusal(Result.succeed({ pid: 1, uid: 1000, gid: 1000 }), 1000))
    assert.isUndefined(Control.refusal(Result.succeed({ pid: 1, uid: 0, gid: 0 }), 1000))
    assert.match(
      Control.refusal(Result.succeed({ pid: 7, uid: 1001, gid: 1001 }), 1000)!,
      /^uid 1001 \(pid 7\) may not control this service, which runs as uid 1000/
    )
    assert.match(Control.refusal(Result.fail("no fd"), 1000)!, /could not be checked/)
  })

  it.live("Node internal: an accepted net.Socket's _handle.fd is its fd, which SO_PEERCRED reads", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const path = join(dir, "peer.sock")
      const peer = yield* Effect.callback<unknown>((resume) => {
        const server = Net.createServer((socket) => {
          const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd
          resume(Effect.succeed(typeof fd === "number" ? Sys.peerCredentials(fd) : `_handle.fd is ${String(fd)}`))
          socket.destroy()
          server.close()
        })
        server.listen(path, () => Net.connect(path).on("error", () => {}))
      })
      assert.deepStrictEqual(
        peer,
        Result.succeed({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() }),
        "net.Socket#_handle.fd changed: the control socket's peer check reads it"
      )
    })
  )
})

describe("control socket: one process", () => {
  it.live(
    "reload answers once the new code serves, with its pid and the steps on request; status names it; 0 failed",
    () =>
      Effect.gen(function* () {
        const { path, first, load } = yield* single()
        const before = yield* statusOf(path)
        assert.strictEqual(before.role, "single")
        assert.strictEqual(before.pid, first.pid)
        assert.strictEqual(before.phase, "Serving")
        const control = before.listeners.find((l) => l.name === Control.CONTROL_NAME)
        assert.deepStrictEqual(control, { address: path, name: Control.CONTROL_NAME, inherited: false, sockets: 1 })
        assert.strictEqual(statSync(path).mode & 0o777, 0o600)

        const lines = yield* ask(path, "reload --progress")
        const done = answer(lines)
        assert.strictEqual(done.ok, true, JSON.stringify(lines))
        assert.strictEqual(done.kind, "upgrade")
        assert.notStrictEqual(done.pid, first.pid)
        const steps = lines.slice(0, -1).map((line) => line.progress)
        for (const step of ["restart started", "successor started", "successor ready", "probation over"]) {
          assert.include(steps, step, JSON.stringify(steps))
        }

        const after = yield* statusOf(path)
        assert.strictEqual(after.pid, done.pid)
        assert.strictEqual(
          after.listeners.find((l) => l.name === Control.CONTROL_NAME)?.inherited,
          true,
          "the successor took the control socket over"
        )
        assert.deepStrictEqual(
          [after.lastReload.kind, after.lastReload.outcome, after.lastReload.from],
          ["upgrade", "ready", first.pid]
        )
        // And again, from the successor: the socket serves every generation.
        const again = answer(yield* ask(path, "reload"))
        assert.strictEqual(again.ok, true)
        assert.strictEqual((yield* statusOf(path)).pid, again.pid)
        yield* load.more(20)
        assert.deepStrictEqual(load.failures(), [])
      }),
    60_000
  )

  it.live("a reload whose new code fails at start-up answers why, and the old process serves on; 0 failed", () =>
    Effect.gen(function* () {
      const { path, first, load, mode } = yield* single()
      mode("crash")
      const failed = answer(yield* ask(path, "reload"))
      assert.strictEqual(failed.ok, false)
      assert.strictEqual(failed.error!._tag, "ExitedBeforeReady")
      assert.match(failed.error!.message, /this process keeps serving/)
      const status = yield* statusOf(path)
      assert.strictEqual(status.pid, first.pid)
      assert.deepStrictEqual([status.lastReload.outcome, status.lastReload.by], ["ExitedBeforeReady", "control"])
      yield* load.more(20)
      assert.deepStrictEqual(load.failures(), [])
    })
  )

  // No load here: new code that dies resets the connections it had (the hand-back tests count what the old process
  // answers).
  it.live("new code that dies within its probation answers HandedBack; the old process serves on", () =>
    Effect.gen(function* () {
      const { path, first, load, mode, port } = yield* single({ GRACE_PROBATION: "3 seconds" })
      yield* load.stop
      mode("die:1500")
      const failed = answer(yield* ask(path, "reload"))
      assert.strictEqual(failed.ok, false, JSON.stringify(failed))
      assert.strictEqual(failed.error!._tag, "HandedBack")
      assert.strictEqual((yield* statusOf(path)).pid, first.pid)
      yield* answeredBy(`http://127.0.0.1:${port}/`, first.pid)
    })
  )

  it.live(
    "a reload sent during another is answered when the one that covers it ends, by a newer generation",
    () =>
      Effect.gen(function* () {
        const { path, fixture, first, load } = yield* single({ GRACE_PROBATION: "1 second" })
        const firstReload = yield* Effect.forkChild(ask(path, "reload"))
        yield* waitForLog(fixture, 0, "effect-grace: successor started", { pid: first.pid })
        const second = answer(yield* ask(path, "reload"))
        const one = answer(yield* Fiber.join(firstReload))
        assert.strictEqual(one.ok, true, JSON.stringify(one))
        assert.strictEqual(second.ok, true, JSON.stringify(second))
        assert.notStrictEqual(second.pid, one.pid, "the second reload started a generation of its own")
        yield* eventually(() => !isAlive(one.pid as number), "the first reload's generation to go")
        assert.strictEqual((yield* statusOf(path)).pid, second.pid)
        yield* load.more(20)
        assert.deepStrictEqual(load.failures(), [])
      }),
    60_000
  )

  it.live("stop answers once drained, and the process exits 0", () =>
    Effect.gen(function* () {
      const { path, fixture, load } = yield* single()
      yield* load.stop
      const stopped = answer(yield* ask(path, "stop"))
      assert.strictEqual(stopped.ok, true)
      assert.strictEqual(stopped.pid, fixture.pid)
      assert.deepStrictEqual(yield* fixture.exited(), { code: 0, signal: null })
    })
  )

  it.live(
    "hostile clients neither stop nor crash it: bytes, a huge line, silence, a thousand at once; 0 failed",
    () =>
      Effect.gen(function* () {
        const { path, first, load } = yield* single()
        const random = Buffer.from(Array.from({ length: 4096 }, () => Math.floor(Math.random() * 256)))
        const rude = yield* Effect.exit(exchange({ path }, random.toString("latin1")))
        if (rude._tag === "Success") assert.match(rude.value, /"BadRequest"/)
        const huge = yield* exchange({ path }, "x".repeat(1 << 20))
        assert.match(huge, /at most 1024 bytes/)
        // Half-open and silent: connected, nothing sent, never closed by the client.
        const silent = yield* Effect.acquireRelease(
          Effect.sync(() => Array.from({ length: 50 }, () => Net.connect(path).on("error", () => {}))),
          (sockets) => Effect.sync(() => sockets.forEach((s) => s.destroy()))
        )
        // Each is answered, refused at connect once the backlog is full (EAGAIN, as for any unix socket), or closed at
        // once beyond the 1,024 connections taken at a time (with the 50 silent ones): none gets a broken answer, and
        // none hangs.
        const many = yield* Effect.forEach(
          Array.from({ length: 1000 }),
          () =>
            ask(path, "status").pipe(
              Effect.map((lines) =>
                answer(lines).ok === true && lines.length === 1 ? "answered" : JSON.stringify(lines)
              ),
              Effect.catch((error) =>
                Effect.succeed(
                  ["EAGAIN", "ECONNRESET", "EPIPE"].includes((error as NodeJS.ErrnoException).code ?? "")
                    ? "refused"
                    : String(error)
                )
              )
            ),
          { concurrency: "unbounded" }
        )
        const outcomes = new Set(many)
        outcomes.delete("answered")
        outcomes.delete("refused")
        assert.deepStrictEqual([...outcomes], [], "every status request answered, or refused at connect")
        assert.isAbove(many.filter((outcome) => outcome === "answered").length, 0)
        assert.lengthOf(silent, 50)
        const status = yield* statusOf(path)
        assert.strictEqual(status.pid, first.pid)
        assert.strictEqual(status.phase, "Serving")
        assert.strictEqual(answer(yield* ask(path, "reload")).ok, true)
        yield* load.more(20)
        assert.deepStrictEqual(load.failures(), [])
      }),
    60_000
  )

  it.live("made 0600 whatever the umask; a peer of another user is refused with one line", () =>
    Effect.gen(function* () {
      const previous = process.umask(0)
      const { path } = yield* Effect.ensuring(
        single(),
        Effect.sync(() => process.umask(previous))
      )
      assert.strictEqual(statSync(path).mode & 0o777, 0o600)
      // Opened to everyone by hand: the peer check still refuses another user.
      chmodSync(dirname(path), 0o755)
      chmodSync(path, 0o666)
      const client = `const s=require("net").connect(${JSON.stringify(path)});let o="";s.on("data",d=>o+=d);s.on("end",()=>{process.stdout.write(o)});s.write("status\\n")`
      const out = yield* Effect.callback<string>((resume) => {
        const child = spawn(nodePath, ["-e", client], { uid: 65534, gid: 65534, stdio: ["ignore", "pipe", "inherit"] })
        let text = ""
        child.stdout.on("data", (d) => (text += d))
        child.on("close", () => resume(Effect.succeed(text)))
      })
      const refused = JSON.parse(out.trim()) as Line
      assert.strictEqual(refused.error!._tag, "PeerRefused")
      assert.match(refused.error!.message, /^uid 65534 \(pid \d+\) may not control this service/)
    })
  )

  it.live("an abstract name without the peer check is refused at start, in one line", () =>
    Effect.gen(function* () {
      const port = yield* freePort()
      const program = yield* spawnFixture("supervised", [`127.0.0.1:${port}`], {
        env: { GRACE_NATIVE: "off", GRACE_CONTROL: "@effect-grace-test" }
      })
      assert.deepStrictEqual(yield* program.exited(), { code: 1, signal: null })
      const lines = program.lines.filter((line) => line.includes("cannot start"))
      assert.lengthOf(lines, 1, program.lines.join("\n"))
      assert.match(
        (JSON.parse(lines[0]!) as { readonly message: string }).message,
        /^effect-grace: cannot start: the control socket \(GRACE_CONTROL\) cannot be opened: @effect-grace-test is an abstract name, which has no permissions/
      )
    })
  )
})

describe("control socket: workers", () => {
  it.live(
    "status names every worker; reload rolls them and answers with the new ones; --upgrade a new primary",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = join(dir, "control.sock")
        const { program, primary, workers, url } = yield* startWorkers({
          GRACE_WORKERS: "2",
          GRACE_CONTROL: path,
          GRACE_PROBATION: "500 millis"
        })
        const load = yield* bothLoads(url)
        yield* load.more(20)
        const status = yield* statusOf(path)
        assert.strictEqual(status.role, "primary")
        assert.strictEqual(status.pid, primary)
        assert.deepStrictEqual(
          status.workers.map((w) => [w.slot, w.pid, w.phase]),
          workers.map((pid, slot) => [slot, pid, "serving"])
        )
        for (const worker of status.workers) assert.isAbove(worker.rssBytes, 10 << 20)

        const rolled = answer(yield* ask(path, "reload"))
        assert.strictEqual(rolled.ok, true, JSON.stringify(rolled))
        assert.strictEqual(rolled.kind, "roll")
        assert.strictEqual(rolled.pid, primary)
        const fresh = (rolled.workers as Array<{ slot: number; pid: number }>).map((w) => w.pid)
        assert.lengthOf(fresh, 2)
        for (const pid of fresh) assert.notInclude(workers, pid)

        const upgraded = answer(yield* ask(path, "reload --upgrade"))
        assert.strictEqual(upgraded.ok, true, JSON.stringify(upgraded))
        assert.notStrictEqual(upgraded.pid, primary)
        yield* groupReady(program, upgraded.pid as number, 0)
        const after = yield* statusOf(path)
        assert.strictEqual(after.pid, upgraded.pid)
        assert.lengthOf(after.workers, 2)
        yield* load.more(20)
        assert.deepStrictEqual(load.failures(), [])
      }),
    60_000
  )
})

// -----------------------------------------------------------------------------
// The effect-grace command, against the real service
// -----------------------------------------------------------------------------

const cli = new URL("../src/cli.ts", import.meta.url).pathname
const demo = new URL("../examples/demo.ts", import.meta.url).pathname

/** Runs `effect-grace` to its end: its exit code and output lines. */
const command = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const program = yield* spawnProcess(nodePath, [cli, ...args], { env: { GRACE_CONTROL: undefined } })
    const { code } = yield* program.closed("60 seconds")
    return { code, out: program.lines, err: program.errors }
  }).pipe(Effect.scoped)

interface StatusJson {
  readonly pid: number
  readonly workers: ReadonlyArray<{ readonly slot: number; readonly pid: number; readonly phase: string }>
}

const statusJson = (path: string) =>
  Effect.map(command(["status", "--json", "--control", path]), ({ code, out }) => {
    assert.strictEqual(code, 0)
    assert.lengthOf(out, 1)
    return JSON.parse(out[0]!) as StatusJson
  })

/** Waits, bounded, until `status --json` answers with `workers` workers that serve. */
const servingWith = (path: string, workers: number) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 20_000
    while (true) {
      const { code, out } = yield* command(["status", "--json", "--control", path])
      const status = code === 0 ? (JSON.parse(out[0]!) as StatusJson) : undefined
      if (status?.workers.filter((w) => w.phase === "serving").length === workers) return status
      if (Date.now() > deadline) return yield* Effect.die(new Error(`no status with ${workers} workers within 20 s`))
      yield* Effect.sleep("100 millis")
    }
  })

describe("the effect-grace command, against the real service", () => {
  it.live(
    "the demo with 2 workers: status --json names every worker; reload and reload --upgrade exit 0 with the pids that serve; 0 failed",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = join(dir, "control.sock")
        const ports = [yield* freePort(), yield* freePort(), yield* freePort()]
        const marker = `--a2=127.0.0.1:${ports[2]}`
        yield* killTaggedOnClose(marker)
        yield* spawnProcess(nodePath, [demo, `--a0=127.0.0.1:${ports[0]}`, `--a1=127.0.0.1:${ports[1]}`, marker], {
          env: { GRACE_WORKERS: "2", GRACE_CONTROL: path, GRACE_PROBATION: "500ms" }
        })
        const first = yield* servingWith(path, 2)
        assert.deepStrictEqual(
          first.workers.map((w) => [w.slot, w.phase]),
          [
            [0, "serving"],
            [1, "serving"]
          ]
        )
        const load = yield* bothLoads(`http://127.0.0.1:${ports[0]}/sleep/?duration=0s`)
        yield* load.more(20)

        const rolled = yield* command(["reload", "--control", path])
        assert.strictEqual(rolled.code, 0, rolled.err.join("\n"))
        const after = yield* statusJson(path)
        assert.strictEqual(
          rolled.out.at(-1),
          `reloaded: roll, pid ${first.pid} serves with workers ${after.workers.map((w) => `${w.slot}:${w.pid}`).join(" ")} (${rolled.out.at(-1)!.match(/\(([^)]+)\)$/)![1]})`
        )
        for (const worker of after.workers)
          assert.notInclude(
            first.workers.map((w) => w.pid),
            worker.pid
          )

        const upgraded = yield* command(["reload", "--upgrade", "--control", path])
        assert.strictEqual(upgraded.code, 0, upgraded.err.join("\n"))
        const serving = Number(upgraded.out.at(-1)!.match(/^reloaded: upgrade, pid (\d+) serves/)![1])
        assert.notStrictEqual(serving, first.pid)
        assert.strictEqual((yield* statusJson(path)).pid, serving)
        yield* load.more(20)
        assert.deepStrictEqual(load.failures(), [])
      }),
    90_000
  )

  it.live(
    "reload exits 1 naming the reason when the new code throws at start-up; the old process serves on",
    () =>
      Effect.gen(function* () {
        const { path, first, load, mode } = yield* single()
        mode("crash")
        const failed = yield* command(["reload", "--control", path])
        assert.strictEqual(failed.code, 1)
        assert.match(
          failed.err.at(-1)!,
          /^reload failed: ExitedBeforeReady: the successor \(pid \d+\) exited with code 1/
        )
        assert.strictEqual((yield* statusJson(path)).pid, first.pid)
        mode("ok")
        const [one, two] = yield* Effect.all(
          [command(["reload", "--control", path]), command(["reload", "--control", path])],
          { concurrency: 2 }
        )
        assert.deepStrictEqual([one.code, two.code], [0, 0], [...one.err, ...two.err].join("\n"))
        yield* load.more(20)
        assert.deepStrictEqual(load.failures(), [])
      }),
    60_000
  )
})
