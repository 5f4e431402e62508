/**
 * The `effect-grace` command, run as a user runs it (`node src/cli.ts`, on the Node of node_modules), against a fake
 * service: a unix socket in the test that speaks the control protocol and answers as each test says.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import * as Path from "node:path"
import * as Cli from "../src/cli.ts"
import { tempDir } from "./support/fs.ts"
import { spawnProcess } from "./support/process.ts"

const cli = new URL("../src/cli.ts", import.meta.url).pathname
const node = new URL("../node_modules/node/bin/node", import.meta.url).pathname

/** What the fake service does with a connection, given the request line. */
type Answer = (request: string, socket: Net.Socket) => void

/** `server` listening on `path` until the scope closes, which closes it and its connections (`sockets`). */
const listening = (server: Net.Server, path: string, sockets: Set<Net.Socket>) =>
  Effect.acquireRelease(
    Effect.callback<void>((resume) => {
      server.listen(path, () => resume(Effect.void))
    }),
    () =>
      Effect.callback<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  )

/** A fake service on a unix socket in a temporary folder; closed, its connections too, with the scope. */
const fakeService = (answer: Answer): Effect.Effect<{ path: string; requests: Array<string> }, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const path = Path.join(dir, "control.sock")
    const requests: Array<string> = []
    const sockets = new Set<Net.Socket>()
    const server = Net.createServer((socket) => {
      sockets.add(socket)
      socket.on("close", () => sockets.delete(socket))
      socket.on("error", () => {})
      let buffered = ""
      socket.setEncoding("utf8")
      socket.on("data", (chunk: string) => {
        buffered += chunk
        const newline = buffered.indexOf("\n")
        if (newline < 0 || requests.length > 0) return
        const request = buffered.slice(0, newline)
        requests.push(request)
        answer(request, socket)
      })
    })
    yield* listening(server, path, sockets)
    return { path, requests }
  })

const line = (socket: Net.Socket, value: unknown) => socket.write(JSON.stringify(value) + "\n")

/** Runs the command to its end; its stdout and stderr lines and exit code. */
const run = (args: ReadonlyArray<string>, env: Record<string, string | undefined> = {}) =>
  Effect.gen(function* () {
    const program = yield* spawnProcess(node, [cli, ...args], { env: { GRACE_CONTROL: undefined, ...env } })
    const { code } = yield* program.closed("20 seconds")
    return { code, out: program.lines, err: program.errors }
  }).pipe(Effect.scoped)

const status = {
  role: "primary",
  pid: 1234,
  phase: "Serving",
  startedAt: "2026-12-06T07:30:00.000Z",
  uptimeMillis: 7_380_000,
  version: "0.1.0",
  listeners: [
    { address: "[::]:8080", name: "a0", inherited: true },
    { address: "/run/demo/control.sock", name: "effect-grace-control", inherited: false }
  ],
  workers: [
    {
      slot: 0,
      pid: 1301,
      phase: "serving",
      rssBytes: 52_428_800,
      startedAt: "2026-12-06T07:30:01.000Z",
      deaths: 0,
      memoryReplacements: 0
    },
    {
      slot: 1,
      pid: 1302,
      phase: "serving",
      rssBytes: 48_234_496,
      startedAt: "2026-12-06T07:30:01.000Z",
      deaths: 2,
      memoryReplacements: 1
    }
  ],
  restarts: { available: true },
  lastReload: {
    at: "2026-12-06T07:40:01.000Z",
    kind: "roll",
    by: "control",
    outcome: "ready",
    millis: 6100,
    pid: 1234
  },
  pending: null,
  settings: { readyTimeout: "1m", probation: "5s", workers: 2, maxMemory: null, control: "/run/demo/control.sock" },
  aFieldFromLater: { ignored: true }
}

describe("effect-grace reload", () => {
  it.live("prints the steps as they come and one line, and exits 0 once the new code serves", () =>
    Effect.gen(function* () {
      const service = yield* fakeService((_, socket) => {
        line(socket, { progress: "restart started", at: new Date().toISOString(), pid: 1234 })
        line(socket, { progress: "successor started", at: new Date().toISOString(), pid: 1234, successor: 1240 })
        line(socket, { progress: "a step from a later version", at: new Date().toISOString(), note: "two words" })
        line(socket, { ok: true, command: "reload", kind: "upgrade", pid: 1240, millis: 6123 })
        socket.end()
      })
      const result = yield* run(["reload", "--upgrade", "--progress", "--control", service.path])
      assert.deepStrictEqual(service.requests, ["reload --upgrade --progress"])
      assert.strictEqual(result.code, 0)
      assert.deepStrictEqual(result.err, [])
      assert.strictEqual(result.out.length, 4)
      assert.match(result.out[0]!, /^ {2}\+\d+\.\ds restart started pid=1234$/)
      assert.match(result.out[1]!, /^ {2}\+\d+\.\ds successor started pid=1234 successor=1240$/)
      assert.match(result.out[2]!, /^ {2}\+\d+\.\ds a step from a later version note="two words"$/)
      assert.strictEqual(result.out[3], "reloaded: upgrade, pid 1240 serves (6.1 s)")
    })
  )

  it.live("after a roll, names each slot's new worker; without a terminal, asks for no progress", () =>
    Effect.gen(function* () {
      const service = yield* fakeService((_, socket) => {
        line(socket, {
          ok: true,
          command: "reload",
          kind: "roll",
          pid: 1234,
          millis: 812,
          workers: [
            { slot: 0, pid: 1301 },
            { slot: 1, pid: 1302 }
          ]
        })
        socket.end()
      })
      // GRACE_CONTROL is the default socket.
      const result = yield* run(["reload"], { GRACE_CONTROL: service.path })
      assert.deepStrictEqual(service.requests, ["reload"])
      assert.deepStrictEqual(result, {
        code: 0,
        out: ["reloaded: roll, pid 1234 serves with workers 0:1301 1:1302 (812 ms)"],
        err: []
      })
    })
  )

  it.live("a reload handed back exits 1 with the reason's tag and message", () =>
    Effect.gen(function* () {
      const message = "the successor (pid 1240) exited with code 1 within its probation; this process serves again"
      const service = yield* fakeService((_, socket) => {
        line(socket, { progress: "successor started", at: new Date().toISOString(), pid: 1234, successor: 1240 })
        line(socket, {
          ok: false,
          command: "reload",
          kind: "upgrade",
          millis: 3100,
          error: { _tag: "HandedBack", message }
        })
        socket.end()
      })
      const result = yield* run(["reload", "--no-progress", "--control", service.path])
      assert.deepStrictEqual(service.requests, ["reload"])
      assert.deepStrictEqual(result, { code: 1, out: [], err: [`reload failed: HandedBack: ${message} (3.1 s)`] })
    })
  )

  it.live("--json prints the answer line as received, and keeps the exit code", () =>
    Effect.gen(function* () {
      const answer = JSON.stringify({
        ok: false,
        command: "reload",
        kind: "upgrade",
        millis: 40,
        error: { _tag: "ExitedBeforeReady", message: "the successor exited with code 1 before it was ready" }
      })
      const service = yield* fakeService((_, socket) => {
        line(socket, { progress: "successor started", at: new Date().toISOString(), pid: 1 })
        socket.end(answer + "\n")
      })
      const result = yield* run(["reload", "--json", "--progress", "--control", service.path])
      assert.strictEqual(result.code, 1)
      assert.strictEqual(result.out.length, 2)
      assert.strictEqual(JSON.parse(result.out[0]!).progress, "successor started")
      assert.strictEqual(result.out[1], answer)
    })
  )

  it.live("no answer within the timeout: exits 1, saying the reload may still be under way", () =>
    Effect.gen(function* () {
      const service = yield* fakeService(() => {})
      const result = yield* run(["reload", "--timeout", "300ms", "--control", service.path])
      assert.strictEqual(result.code, 1)
      assert.deepStrictEqual(result.out, [])
      assert.strictEqual(result.err.length, 1)
      assert.match(result.err[0]!, /no answer within 300 ms; the reload may still be under way/)
    })
  )

  it.live("a connection closed before the answer: exits 1, saying the service went away", () =>
    Effect.gen(function* () {
      const service = yield* fakeService((_, socket) => {
        line(socket, { progress: "restart started", at: new Date().toISOString(), pid: 1234 })
        socket.destroy()
      })
      const result = yield* run(["reload", "--control", service.path])
      assert.strictEqual(result.code, 1)
      assert.strictEqual(result.err.length, 1)
      assert.match(result.err[0]!, /closed before the answer: the service went away during the reload/)
    })
  )

  it.live("a request the service refuses (bad request, refused peer) exits 2", () =>
    Effect.gen(function* () {
      const service = yield* fakeService((_, socket) => {
        socket.end(
          JSON.stringify({
            ok: false,
            error: {
              _tag: "PeerRefused",
              message: "uid 1001 may not control this service (uid 1000); use its user or root"
            }
          }) + "\n"
        )
      })
      const refused = yield* run(["stop", "--control", service.path])
      assert.strictEqual(refused.code, 2)
      assert.deepStrictEqual(refused.err, [
        "effect-grace stop: refused: PeerRefused: uid 1001 may not control this service (uid 1000); use its user or root"
      ])
      const bad = yield* fakeService((_, socket) => {
        line(socket, { ok: false, error: { _tag: "BadRequest", message: 'unknown command "reload"' } })
        socket.end()
      })
      const result = yield* run(["reload", "--control", bad.path])
      assert.strictEqual(result.code, 2)
      assert.match(result.err[0]!, /refused: BadRequest: unknown command "reload"$/)
    })
  )

  it.live("a refusal written and closed at once, before the request is read, still reaches the command", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const path = Path.join(dir, "control.sock")
      const refusal = { ok: false, error: { _tag: "PeerRefused", message: "uid 1001 may not control this service" } }
      const sockets = new Set<Net.Socket>()
      const server = Net.createServer((socket) => {
        sockets.add(socket)
        socket.on("error", () => {})
        socket.end(JSON.stringify(refusal) + "\n")
      })
      yield* listening(server, path, sockets)
      const result = yield* run(["reload", "--control", path])
      assert.strictEqual(result.code, 2, JSON.stringify(result))
      assert.deepStrictEqual(result.err, [
        "effect-grace reload: refused: PeerRefused: uid 1001 may not control this service"
      ])
    })
  )

  it.live("a service that cannot be reached exits 2 with one line that says what to check", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const missing = yield* run(["reload", "--control", Path.join(dir, "control.sock")])
      assert.strictEqual(missing.code, 2)
      assert.strictEqual(missing.err.length, 1)
      assert.match(missing.err[0]!, /cannot reach the service \(ENOENT\): .* does not exist: is the service running/)
      const abstract = yield* run(["status", "--control", `@effect-grace-test-none-${process.pid}`])
      assert.strictEqual(abstract.code, 2)
      assert.match(abstract.err[0]!, /\(ECONNREFUSED\): nothing listens on abstract socket @effect-grace-test-none/)
    })
  )

  it.live("an abstract socket (@name) is reached by its name", () =>
    Effect.gen(function* () {
      const name = `effect-grace-test-${process.pid}`
      const sockets = new Set<Net.Socket>()
      const server = Net.createServer((socket) => {
        sockets.add(socket)
        socket.once("data", () => socket.end(JSON.stringify({ ok: true, command: "stop", pid: 7, millis: 12 }) + "\n"))
      })
      yield* Effect.acquireRelease(
        Effect.callback<void>((resume) => {
          server.listen(`\0${name}`, () => resume(Effect.void))
        }),
        () =>
          Effect.callback<void>((resume) => {
            for (const socket of sockets) socket.destroy()
            server.close(() => resume(Effect.void))
          })
      )
      const result = yield* run(["stop", "--control", `@${name}`])
      assert.deepStrictEqual(result, { code: 0, out: ["stopped: pid 7 drained in 12 ms"], err: [] })
    })
  )
})

describe("effect-grace status", () => {
  it.live("prints a table: the process, listeners, workers, last reload, restarts, settings", () =>
    Effect.gen(function* () {
      const service = yield* fakeService((_, socket) => {
        line(socket, { ok: true, command: "status", status })
        socket.end()
      })
      const result = yield* run(["status", "--control", service.path])
      assert.deepStrictEqual(service.requests, ["status"])
      assert.strictEqual(result.code, 0, result.err.join("\n"))
      const out = result.out.join("\n")
      assert.match(result.out[0]!, /^primary pid 1234 {2}Serving {2}up 2h 3m \(since .*\) {2}effect-grace 0\.1\.0$/)
      assert.match(out, /\[::\]:8080 +a0 +inherited/)
      assert.match(out, /\/run\/demo\/control\.sock +effect-grace-control +bound/)
      assert.match(out, /workers \(2\)/)
      assert.match(out, /SLOT +PID +PHASE +RSS +STARTED +DEATHS/)
      assert.match(out, /\n {2}0 +1301 +serving +50\.0 MiB +\S.* +0 +0/)
      assert.match(out, /\n {2}1 +1302 +serving +46\.0 MiB +\S.* +2 +1/)
      assert.match(out, /last reload +roll by control at .*: ready in 6\.1 s, pid 1234/)
      assert.match(out, /pending +none/)
      assert.match(out, /restarts +available/)
      assert.match(
        out,
        /settings +readyTimeout=1m probation=5s workers=2 maxMemory=none control=\/run\/demo\/control\.sock/
      )
      assert.notInclude(out, "aFieldFromLater")
    })
  )

  it.live("--json prints the status object as sent, on one line", () =>
    Effect.gen(function* () {
      const service = yield* fakeService((_, socket) => {
        line(socket, { ok: true, command: "status", status })
        socket.end()
      })
      const result = yield* run(["status", "--json", "--control", service.path])
      assert.strictEqual(result.code, 0)
      assert.strictEqual(result.out.length, 1)
      assert.deepStrictEqual(JSON.parse(result.out[0]!), status)
    })
  )

  it.live("a single process (no workers) and restarts unavailable", () =>
    Effect.gen(function* () {
      const single = {
        ...status,
        role: "single",
        workers: undefined,
        restarts: { available: false, reason: "koffi is not installed" },
        lastReload: null,
        pending: { kind: "upgrade", count: 1 }
      }
      const service = yield* fakeService((_, socket) => {
        line(socket, { ok: true, command: "status", status: single })
        socket.end()
      })
      const result = yield* run(["status", "--control", service.path])
      const out = result.out.join("\n")
      assert.strictEqual(result.code, 0)
      assert.match(result.out[0]!, /^single pid 1234/)
      assert.notMatch(out, /^workers/m)
      assert.match(out, /last reload +none/)
      assert.match(out, /pending +upgrade x1/)
      assert.match(out, /restarts +unavailable: koffi is not installed/)
    })
  )
})

describe("effect-grace stop", () => {
  it.live("prints how long the drain took and exits 0", () =>
    Effect.gen(function* () {
      const service = yield* fakeService((_, socket) => {
        line(socket, { ok: true, command: "stop", pid: 1234, millis: 812 })
        socket.end()
      })
      const result = yield* run(["stop", "--control", service.path])
      assert.deepStrictEqual(service.requests, ["stop"])
      assert.deepStrictEqual(result, { code: 0, out: ["stopped: pid 1234 drained in 812 ms"], err: [] })
    })
  )
})

describe("usage", () => {
  it.live("--help, for the program and each command, with examples, exits 0", () =>
    Effect.gen(function* () {
      for (const args of [["--help"], ["help"], ["reload", "--help"], ["status", "-h"], ["help", "stop"]]) {
        const result = yield* run(args)
        assert.strictEqual(result.code, 0, args.join(" "))
        assert.deepStrictEqual(result.err, [])
        const out = result.out.join("\n")
        assert.match(out, /^Usage: effect-grace /)
        assert.match(out, /Examples:\n {2}effect-grace /)
        assert.include(out, "--control PATH")
      }
    })
  )

  it.live("a wrong command line exits 2 with one line, without connecting", () =>
    Effect.gen(function* () {
      const cases: Array<[ReadonlyArray<string>, RegExp]> = [
        [[], /no command given/],
        [["frob"], /unknown command "frob"; use reload, status or stop/],
        [["reload", "--bogus", "--control", "/x"], /unknown option --bogus; see 'effect-grace reload --help'/],
        [["reload", "--control"], /--control needs a value/],
        [["status", "--upgrade", "--control", "/x"], /status takes no option --upgrade/],
        [["reload"], /no control socket: give --control PATH, or set GRACE_CONTROL/],
        [["reload", "--control", "/x", "--timeout", "soon"], /--timeout "soon" is not a duration; use Go's syntax/],
        [["stop", "--control", "/x", "now"], /stop takes no argument "now"/]
      ]
      for (const [args, pattern] of cases) {
        const result = yield* run(args)
        assert.strictEqual(result.code, 2, args.join(" "))
        assert.deepStrictEqual(result.out, [])
        assert.strictEqual(result.err.length, 1, result.err.join("\n"))
        assert.match(result.err[0]!, pattern)
      }
    })
  )

  it("the timeout takes Go's and Effect's syntaxes, and progress follows the terminal", () => {
    const parsed = (args: ReadonlyArray<string>, terminal = false) => Cli.parse(args, { GRACE_CONTROL: "/c" }, terminal)
    assert.deepStrictEqual(parsed(["reload", "--timeout", "1m30s"]), {
      _tag: "Run",
      verb: "reload",
      upgrade: false,
      json: false,
      progress: false,
      control: "/c",
      timeoutMillis: 90_000
    })
    const effectSyntax = parsed(["stop", "--timeout", "30 seconds"])
    assert.strictEqual(effectSyntax._tag === "Run" && effectSyntax.timeoutMillis, 30_000)
    const onTerminal = parsed(["reload"], true)
    assert.isTrue(onTerminal._tag === "Run" && onTerminal.progress && onTerminal.timeoutMillis === 120_000)
    const off = parsed(["reload", "--no-progress"], true)
    assert.isTrue(off._tag === "Run" && !off.progress)
    const json = parsed(["reload", "--json"], true)
    assert.isTrue(json._tag === "Run" && !json.progress)
  })
})
