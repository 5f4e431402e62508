import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Result from "effect/Result"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Sys from "../src/internal/sys.ts"
import { keepAliveLoad, request, steadyLoad } from "./support/http.ts"
import type { Reply } from "./support/http.ts"
import { freePort } from "./support/net.ts"
import { certificateFiles, tlsConnect } from "./support/tls.ts"
import { gone, pidOf, readyOf, startSingle } from "./support/fixture.ts"
import type { Generation } from "./support/fixture.ts"
import { eventually, isAlive, openFds, procStat, processesTagged, spawnFixture } from "./support/process.ts"
import type { Spawned } from "./support/process.ts"
import { tempDir } from "./support/fs.ts"

// -----------------------------------------------------------------------------
// Helpers
// -----------------------------------------------------------------------------

type Target = { readonly port: number } | { readonly socketPath: string }

/** One request on a new connection, to a loopback port or a unix socket. */
const get = (target: Target, path: string, method = "GET"): Effect.Effect<Reply, Error> =>
  "port" in target
    ? request(`http://127.0.0.1:${target.port}${path}`, { method, timeout: "20 seconds" })
    : request(`http://localhost${path}`, { method, socketPath: target.socketPath, timeout: "20 seconds" })

const childrenOf = (ppid: number): Array<{ pid: number; state: string }> =>
  Fs.readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .flatMap((entry) => {
      const stat = procStat(entry)
      return stat?.ppid === ppid ? [{ pid: Number(entry), state: stat.state }] : []
    })

/** Sends the restart signal to a generation and waits for its successor to be ready. */
const restart = (fixture: Spawned, generation: Generation) =>
  Effect.gen(function* () {
    process.kill(generation.pid, "SIGUSR2")
    // Each generation hands off once: its "successor ready" line can only be this restart's.
    const match = yield* fixture.waitForLine(
      new RegExp(`"effect-grace: successor ready".*"pid":${generation.pid},"successor":(\\d+)`)
    )
    const successor = Number(match[1])
    // The old process has stopped accepting: every new connection goes to the successor from here on.
    yield* fixture.waitForLine(new RegExp(`"effect-grace: drain started".*"pid":${generation.pid}\\b`))
    return yield* readyOf(fixture, successor)
  })

/** A request held on `generation` until `release` makes its file: a request in flight for as long as a test needs. */
const hold = (port: number, dir: string, name: string) =>
  Effect.gen(function* () {
    const file = Path.join(dir, name)
    const reply = yield* Effect.forkChild(get({ port }, `/hold?file=${encodeURIComponent(file)}`))
    return { reply, release: Effect.sync(() => Fs.writeFileSync(file, "")) }
  })

const holding = (fixture: Spawned, generation: Generation) =>
  fixture.waitForLine(new RegExp(`^holding ${generation.pid}$`))

/** Waits until a generation has received a /sleep request (the fixture prints a line). */
const sleeping = (fixture: Spawned, generation: Generation) =>
  fixture.waitForLine(new RegExp(`^sleeping ${generation.pid}$`))

/**
 * A notify socket of the test's own, as systemd's: its path, the next datagram (a bounded wait), the datagrams
 * waiting now, and every one received.
 */
const notifySocket = Effect.gen(function* () {
  const path = Path.join(yield* tempDir, "notify.sock")
  const bound = Sys.bindDatagram(path)
  assert.isTrue(Result.isSuccess(bound))
  const fd = (bound as Result.Success<number, never>).success
  yield* Effect.addFinalizer(() => Effect.sync(() => Fs.closeSync(fd)))
  const received: Array<string> = []
  const poll = (): string | undefined => {
    const datagram = Sys.receiveDatagram(fd)
    if (Result.isFailure(datagram)) throw new Error(Sys.formatSysError(datagram.failure))
    if (datagram.success === undefined) return undefined
    received.push(datagram.success.toString())
    return received.at(-1)
  }
  const waiting = (): Array<string> => {
    const now: Array<string> = []
    for (let datagram = poll(); datagram !== undefined; datagram = poll()) now.push(datagram)
    return now
  }
  return { path, received, next: eventually(poll, "a notify datagram"), waiting }
})

/**
 * Until the kernel has moved `child` away from `parent`: the parent has exited for good. A process whose memory is
 * gone (not `isAlive`) may still be closing its fds; a restart asked of its successor then is rightly refused.
 */
const orphaned = (child: number, parent: number) =>
  eventually(() => procStat(child)?.ppid !== parent, `pid ${child} to lose its parent ${parent}`)

// -----------------------------------------------------------------------------
// Tests
// -----------------------------------------------------------------------------

describe("Supervisor", () => {
  it.live(
    "a slow request in flight completes from the old pid while new requests go to the successor",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const dir = yield* tempDir
        const { fixture, tag, first } = yield* startSingle({ specs: (id) => [`${id}=127.0.0.1:${port}`] })
        assert.strictEqual(pidOf(yield* get({ port }, "/")), first.pid)

        const slow = yield* hold(port, dir, "slow")
        yield* holding(fixture, first)
        const second = yield* restart(fixture, first)
        assert.notStrictEqual(second.pid, first.pid)

        const quick = yield* get({ port }, "/")
        assert.strictEqual(pidOf(quick), second.pid)
        // While its parent still drains (it holds the slow request), the successor keeps a restart asked of it.
        assert.isTrue(isAlive(first.pid))
        const early = yield* Effect.forkChild(get({ port }, "/restart", "POST"))
        yield* fixture.waitForLine(
          new RegExp(
            `"effect-grace: restart queued".*"pid":${second.pid},.*"waitingFor":"the parent \\(pid ${first.pid}\\) to exit"`
          )
        )
        yield* slow.release
        const slowReply = yield* Fiber.join(slow.reply)
        assert.strictEqual(slowReply.status, 200)
        assert.strictEqual(slowReply.body, `held from pid ${first.pid}\n`)

        const exit = yield* fixture.exited()
        assert.deepStrictEqual(exit, { code: 0, signal: null })
        // Its parent gone, it restarts: the restart asked of it lands.
        const third = Number((yield* Fiber.join(early)).body.match(/^restarted (\d+)\n$/)?.[1])
        yield* readyOf(fixture, third)
        yield* gone(second.pid)
        assert.deepStrictEqual(processesTagged(tag), [third])
      }),
    { timeout: 30_000 }
  )

  it.live(
    "a successor that fails (throws, exits 0, never ready) leaves the old process serving, typed, reaped",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const modeFile = Path.join(dir, "mode")
        const port = yield* freePort()
        const { fixture, tag, first } = yield* startSingle({
          specs: (id) => [`${id}=127.0.0.1:${port}`],
          // Long enough that a successor that crashes is seen to exit, not to time out, on a loaded machine.
          env: { FIXTURE_MODE_FILE: modeFile, GRACE_READY_TIMEOUT: "6 seconds" }
        })
        const expected = { crash: "ExitedBeforeReady", exit0: "ExitedBeforeReady", hang: "NotReadyInTime" }
        for (const [mode, reason] of Object.entries(expected)) {
          Fs.writeFileSync(modeFile, mode)
          // The old process answers throughout the failed restart.
          const during = yield* Effect.forkChild(
            Effect.forEach(Array.from({ length: 10 }), () => get({ port }, "/"), { concurrency: 2 })
          )
          const restartReply = yield* get({ port }, "/restart", "POST")
          assert.strictEqual(restartReply.status, 409, mode)
          assert.strictEqual(restartReply.body, `failed ${reason}\n`, mode)
          for (const reply of yield* Fiber.join(during)) assert.strictEqual(pidOf(reply), first.pid)
          assert.strictEqual(pidOf(yield* get({ port }, "/")), first.pid)
          assert.deepStrictEqual(childrenOf(first.pid), [], `no successor and no zombie after ${mode}`)
          yield* fixture.waitForLine(new RegExp(`"level":"WARN".*"reason":"${reason}"`))
        }
        assert.match(fixture.lines.join("\n"), /start-up failed on purpose/)

        // The next restart succeeds.
        Fs.writeFileSync(modeFile, "ok")
        const second = yield* restart(fixture, first)
        assert.strictEqual(pidOf(yield* get({ port }, "/")), second.pid)
        yield* fixture.exited()
        assert.deepStrictEqual(processesTagged(tag), [second.pid])
      }),
    { timeout: 40_000 }
  )

  it.live(
    "five restart signals within 100 ms: one restart, one kept and passed on; the last generation serves, no orphan",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const { fixture, tag, first } = yield* startSingle({ specs: (id) => [`${id}=127.0.0.1:${port}`] })
        for (let i = 0; i < 5; i++) process.kill(first.pid, "SIGUSR2")
        const match = yield* fixture.waitForLine(/"effect-grace: successor ready".*"successor":(\d+)/)
        const second = yield* readyOf(fixture, Number(match[1]))
        yield* fixture.exited()
        const linesOf = (text: string, pid = first.pid) =>
          fixture.lines.filter((line) => line.includes(text) && line.includes(`"pid":${pid},`)).length
        assert.strictEqual(linesOf('"effect-grace: restart started"'), 1, "one successor of the first")
        // The kernel may merge signals that are pending together; each one delivered beyond the first is kept, as
        // one, and passed on to the successor once it serves, which restarts once more.
        const requested = linesOf('"effect-grace: restart requested"')
        assert.isAtLeast(requested, 1)
        assert.strictEqual(linesOf('"effect-grace: restart queued"'), requested - 1)
        assert.strictEqual(linesOf('"effect-grace: restart passed on"'), requested === 1 ? 0 : 1)
        let last = second
        if (requested > 1) {
          const passed = yield* fixture.waitForLine(
            new RegExp(`"effect-grace: successor ready".*"pid":${second.pid},"successor":(\\d+)`)
          )
          last = yield* readyOf(fixture, Number(passed[1]))
          yield* gone(second.pid)
        }
        assert.deepStrictEqual(processesTagged(tag), [last.pid])
        assert.strictEqual(pidOf(yield* get({ port }, "/")), last.pid)
      }),
    { timeout: 30_000 }
  )

  it.live(
    "two programmatic restarts at once: one runs, the other is kept and lands after it; the PID file follows",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const pidFile = Path.join(dir, "server.pid")
        const port = yield* freePort()
        const { fixture, first } = yield* startSingle({
          specs: (id) => [`${id}=127.0.0.1:${port}`],
          env: { GRACE_PID_FILE: pidFile }
        })
        assert.strictEqual(Fs.readFileSync(pidFile, "utf8"), `${first.pid}\n`)
        // A request held in flight keeps the old process draining after the hand-off, so the order is observable.
        const slow = yield* hold(port, dir, "slow")
        yield* holding(fixture, first)
        const replies = yield* Effect.all([get({ port }, "/restart", "POST"), get({ port }, "/restart", "POST")], {
          concurrency: 2
        })
        // The second was kept, passed on to the successor once it served, which restarted at once (its parent, draining
        // the slow request, waits for the outcome): each caller has its own generation's pid.
        const pids = replies.map((reply) => Number(reply.body.match(/^restarted (\d+)\n$/)?.[1]))
        assert.isTrue(
          pids.every((pid) => pid > 0),
          replies.map((reply) => reply.body).join("")
        )
        assert.notStrictEqual(pids[0], pids[1])
        const last = yield* eventually(
          () => pids.find((pid) => isAlive(pid) && Fs.readFileSync(pidFile, "utf8") === `${pid}\n`),
          "the PID file naming the last generation"
        )
        // Written by the last successor while its parents still drain.
        assert.isTrue(isAlive(first.pid))
        yield* slow.release
        assert.strictEqual((yield* Fiber.join(slow.reply)).body, `held from pid ${first.pid}\n`)
        yield* fixture.exited()
        yield* Effect.forEach(
          pids.filter((pid) => pid !== last),
          gone,
          { discard: true }
        )
        assert.deepStrictEqual(Fs.readdirSync(dir).toSorted(), ["server.pid", "slow"], "no temporary file left behind")
        // A graceful termination removes the file it wrote.
        process.kill(last, "SIGTERM")
        yield* gone(last)
        assert.isFalse(Fs.existsSync(pidFile))
      }),
    { timeout: 30_000 }
  )

  it.live(
    "twenty sequential restarts: every generation answers, and the last holds as many fds as the first",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const { fixture, tag, first } = yield* startSingle({ specs: (id) => [`${id}=127.0.0.1:${port}`] })
        const firstFds = openFds(first.pid).length
        let current = first
        for (let i = 0; i < 20; i++) {
          const next = yield* restart(fixture, current)
          assert.strictEqual(pidOf(yield* get({ port }, "/")), next.pid, `generation ${i + 2}`)
          yield* gone(current.pid)
          yield* orphaned(next.pid, current.pid)
          current = next
        }
        assert.deepStrictEqual(processesTagged(tag), [current.pid])
        // Once its parent is gone, a successor has closed the readiness channel too.
        yield* eventually(() => openFds(current.pid).length === firstFds, "the fd count to settle", "5 seconds").pipe(
          Effect.catchDefect(() => Effect.void)
        )
        assert.strictEqual(openFds(current.pid).length, firstFds)
      }),
    { timeout: 120_000 }
  )

  it.live(
    "a unix socket listener keeps accepting across a restart, and its path is kept",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const socketPath = Path.join(dir, "api.sock")
        const { fixture, first } = yield* startSingle({ specs: (id) => [`${id}=${socketPath}`] })
        assert.strictEqual(pidOf(yield* get({ socketPath }, "/")), first.pid)
        const second = yield* restart(fixture, first)
        yield* fixture.exited()
        assert.isTrue(Fs.existsSync(socketPath))
        assert.strictEqual(pidOf(yield* get({ socketPath }, "/")), second.pid)
      }),
    { timeout: 30_000 }
  )

  it.live(
    "LISTEN_* variables and listener fds do not leak into subprocesses the application spawns",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const dir = yield* tempDir
        const { fixture, first } = yield* startSingle({
          specs: (id) => [`${id}=127.0.0.1:${port}`, `admin=${Path.join(dir, "admin.sock")}`]
        })
        // What a subprocess of this test sees: fds this test itself leaks (from whatever started it) are not ours.
        const baseline = execFileSync("/bin/sh", ["-c", "ls /proc/self/fd"], { encoding: "utf8" })
          .split("\n")
          .filter(Boolean)
          .map(Number)
        const views = [JSON.parse((yield* get({ port }, "/spawn")).body)]
        const second = yield* restart(fixture, first)
        views.push(JSON.parse((yield* get({ port }, "/spawn")).body))
        for (const view of views) {
          assert.deepStrictEqual(view.env, [])
          assert.deepStrictEqual(view.fds, baseline)
        }
        assert.strictEqual(pidOf(yield* get({ port }, "/")), second.pid)
      }),
    { timeout: 30_000 }
  )

  it.live(
    "systemd notify: READY, RELOADING with MONOTONIC_USEC, MAINPID with READY, STOPPING, in order",
    () =>
      Effect.gen(function* () {
        const notify = yield* notifySocket
        const nextDatagram = notify.next
        const port = yield* freePort()
        const { fixture, first } = yield* startSingle({
          specs: (id) => [`${id}=127.0.0.1:${port}`],
          env: { NOTIFY_SOCKET: notify.path }
        })
        assert.strictEqual(yield* nextDatagram, "READY=1")
        const second = yield* restart(fixture, first)
        const reloading = yield* nextDatagram
        assert.match(reloading, /^RELOADING=1\nMONOTONIC_USEC=\d+$/)
        assert.strictEqual(yield* nextDatagram, `MAINPID=${second.pid}\nREADY=1`)
        yield* fixture.exited()
        process.kill(second.pid, "SIGTERM")
        assert.strictEqual(yield* nextDatagram, "STOPPING=1")
        yield* gone(second.pid)
        assert.deepStrictEqual(notify.waiting(), [])
        assert.strictEqual(notify.received.length, 4)
      }),
    { timeout: 30_000 }
  )

  it.live(
    "TLS sessions made before a restart resume with the successor, over HTTPS and HTTP/2",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const paths = certificateFiles(dir)
        const ca = Fs.readFileSync(paths.cert)
        const [h1, h2] = [yield* freePort(), yield* freePort()]
        const { fixture, first } = yield* startSingle({
          specs: (id) => [`tls:${id}=127.0.0.1:${h1}`, `h2:127.0.0.1:${h2}`],
          env: { FIXTURE_TLS_KEY: paths.key, FIXTURE_TLS_CERT: paths.cert }
        })
        const before = yield* tlsConnect(h1, ca, "http/1.1")
        assert.isFalse(before.reused)
        assert.strictEqual(before.body, `pid ${first.pid}\n`)
        assert.isDefined(before.ticket)
        const beforeH2 = yield* tlsConnect(h2, ca, "h2")
        assert.isDefined(beforeH2.ticket)
        // Resumed within one process, as Node does by itself.
        assert.isTrue((yield* tlsConnect(h1, ca, "http/1.1", before.ticket)).reused)

        const second = yield* restart(fixture, first)
        yield* fixture.exited()
        const after = yield* tlsConnect(h1, ca, "http/1.1", before.ticket)
        assert.strictEqual(after.body, `pid ${second.pid}\n`)
        assert.isTrue(after.reused, "an HTTPS session from the old process resumes with the successor")
        assert.isTrue((yield* tlsConnect(h2, ca, "h2", beforeH2.ticket)).reused, "and an HTTP/2 one")
        assert.isFalse((yield* tlsConnect(h1, ca, "http/1.1")).reused, "a new client makes a new session")
      }),
    { timeout: 30_000 }
  )

  it.live(
    "an application's tracer and metrics see each restart attempt, with its outcome, and each drain",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const modeFile = Path.join(yield* tempDir, "mode")
        const { fixture, first } = yield* startSingle({
          specs: (id) => [`${id}=127.0.0.1:${port}`],
          env: { FIXTURE_OBSERVE: "1", FIXTURE_MODE_FILE: modeFile }
        })
        // A restart whose successor fails, then one that lands.
        Fs.writeFileSync(modeFile, "crash")
        assert.strictEqual((yield* get({ port }, "/restart", "POST")).body, "failed ExitedBeforeReady\n")
        Fs.writeFileSync(modeFile, "ok")
        const restarted = (yield* get({ port }, "/restart", "POST")).body
        const successor = Number(restarted.match(/^restarted (\d+)\n$/)?.[1])
        assert.isTrue(isAlive(successor))
        assert.deepStrictEqual(yield* fixture.exited(), { code: 0, signal: null })
        // The exporter writes its batch only when its layer closes: every span of the hand-off reached it. (The
        // successor that crashed printed its own, earlier.)
        const stoppedAt = fixture.lines.findIndex((line) =>
          new RegExp(`"effect-grace: stopped".*"pid":${first.pid}\\b`).test(line)
        )
        assert.isAbove(stoppedAt, -1)
        const metricsLine = yield* eventually(
          () =>
            fixture.lines
              .slice(stoppedAt)
              .map((line) => line.match(/^metrics (.*)$/))
              .find((m) => m !== null),
          "the first process's metrics"
        )
        const after = fixture.lines.slice(stoppedAt)
        assert.isTrue(
          after.some((line) => line.startsWith("span ")),
          "spans flushed at the program's end, after the drain"
        )

        const spans = after
          .filter((line) => line.startsWith("span "))
          .map((line) => JSON.parse(line.slice(5)) as { name: string; attributes: Record<string, unknown> })
        const restarts = spans.filter((span) => span.name === "effect-grace.restart")
        assert.deepStrictEqual(restarts.map((span) => span.attributes["effect-grace.outcome"]).toSorted(), [
          "ExitedBeforeReady",
          "ready"
        ])
        const ready = restarts.find((span) => span.attributes["effect-grace.outcome"] === "ready")
        assert.strictEqual(ready?.attributes["effect-grace.successor.pid"], successor)
        assert.strictEqual(ready?.attributes["effect-grace.pid"], first.pid)
        const drains = spans.filter((span) => span.name === "effect-grace.drain")
        assert.strictEqual(drains.length, 1)
        assert.include(drains[0]!.attributes, {
          "effect-grace.server": `127.0.0.1:${port}`,
          "effect-grace.forced": 0,
          "effect-grace.cut": 0,
          "effect-grace.refused": 0
        })

        type Snapshot = { id: string; attributes?: Record<string, string>; state: { count: number } }
        const metrics = JSON.parse(metricsLine[1]!) as Array<Snapshot>
        const count = (id: string, attributes: Record<string, string>) =>
          metrics.find(
            (metric) =>
              metric.id === id && Object.entries(attributes).every(([key, value]) => metric.attributes?.[key] === value)
          )?.state.count
        assert.strictEqual(count("effect-grace.restarts", { outcome: "ready" }), 1)
        assert.strictEqual(count("effect-grace.restarts", { outcome: "ExitedBeforeReady" }), 1)
        assert.strictEqual(count("effect-grace.restart.handoff", {}), 1, "the one successor that was ready")
        assert.strictEqual(count("effect-grace.drain.duration", { server: `127.0.0.1:${port}` }), 1)
        assert.strictEqual(count("effect-grace.drain.forced", { server: `127.0.0.1:${port}` }), 0)
      }),
    { timeout: 30_000 }
  )

  it.live(
    "merged beside another layer, keep-alive clients sending through three restarts lose no request",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const { fixture, tag, first } = yield* startSingle({
          specs: (id) => [`${id}=127.0.0.1:${port}`],
          env: { FIXTURE_COMPOSE: "merged" }
        })
        const load = yield* keepAliveLoad(Array.from({ length: 4 }, () => `http://127.0.0.1:${port}/`))
        const lastPid = () => {
          const last = load.answers.at(-1)
          return last === undefined ? undefined : pidOf(last)
        }
        const generations = [first]
        for (let i = 0; i < 3; i++) {
          const answered = load.answers.length
          yield* eventually(() => load.answers.length >= answered + 100, "load before the restart")
          generations.push(yield* restart(fixture, generations.at(-1)!))
          yield* eventually(() => lastPid() === generations.at(-1)!.pid, "the successor answering")
        }
        const answered = load.answers.length
        yield* eventually(() => load.answers.length >= answered + 100, "load after the last restart")
        yield* load.stop
        assert.deepStrictEqual(load.failures, [])
        assert.deepStrictEqual(
          [...new Set(load.answers.map(pidOf))].toSorted(),
          generations.map((g) => g.pid).toSorted(),
          "every generation answered"
        )
        assert.deepStrictEqual(yield* fixture.exited(), { code: 0, signal: null }, "the first exits 0 after hand-off")
        const last = generations.at(-1)!
        for (const old of generations.slice(0, -1)) {
          yield* gone(old.pid)
          // The program's own layer closes after the supervisor has drained: the program ended, not just its servers.
          const stopped = fixture.lines.findIndex((line) =>
            new RegExp(`"effect-grace: stopped".*"pid":${old.pid}\\b`).test(line)
          )
          const closed = fixture.lines.indexOf(`reporter closed ${old.pid}`)
          assert.isAbove(stopped, -1, `generation ${old.pid} drained`)
          assert.isAbove(closed, stopped, `generation ${old.pid} closed its other layers after the drain`)
        }
        const after = yield* Effect.all(Array.from({ length: 10 }, () => get({ port }, "/")))
        assert.deepStrictEqual([...new Set(after.map(pidOf))], [last.pid], "only the newest generation answers")
        process.kill(last.pid, "SIGTERM")
        yield* gone(last.pid)
        yield* fixture.waitForLine(new RegExp(`"effect-grace: stopped".*"pid":${last.pid},"reason":"terminate"`))
        assert.deepStrictEqual(processesTagged(tag), [])
      }),
    { timeout: 60_000 }
  )

  it.live(
    "SIGTERM during a restart: the successor is killed, the old process drains and exits 0, STOPPING=1 is last",
    () =>
      Effect.gen(function* () {
        const modeFile = Path.join(yield* tempDir, "mode")
        const notify = yield* notifySocket
        const port = yield* freePort()
        const { fixture, tag, first } = yield* startSingle({
          specs: (id) => [`${id}=127.0.0.1:${port}`],
          env: { FIXTURE_MODE_FILE: modeFile, NOTIFY_SOCKET: notify.path }
        })
        // The successor will never be ready.
        Fs.writeFileSync(modeFile, "hang")
        process.kill(first.pid, "SIGUSR2")
        yield* fixture.waitForLine(/"effect-grace: restart started"/)
        yield* eventually(() => processesTagged(tag).length === 2, "the successor to run")
        process.kill(first.pid, "SIGTERM")
        assert.deepStrictEqual(yield* fixture.exited(), { code: 0, signal: null })
        yield* eventually(() => processesTagged(tag).length === 0, "no process of the run left")
        const received = notify.waiting()
        assert.strictEqual(received.length, 3, received.join(" | "))
        assert.strictEqual(received[0], "READY=1")
        assert.match(received[1]!, /^RELOADING=1\nMONOTONIC_USEC=\d+$/)
        assert.strictEqual(received[2], "STOPPING=1")
      }),
    { timeout: 30_000 }
  )

  it.live(
    "SIGTERM drains and exits 0; a second SIGTERM during the drain ends the process at once",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const { fixture, first } = yield* startSingle({ specs: (id) => [`${id}=127.0.0.1:${port}`] })
        const slow = yield* Effect.forkChild(get({ port }, "/sleep?ms=800"))
        yield* sleeping(fixture, first)
        process.kill(first.pid, "SIGTERM")
        const reply = yield* Fiber.join(slow)
        assert.strictEqual(reply.body, `slept 800 from pid ${first.pid}\n`)
        assert.deepStrictEqual(yield* fixture.exited(), { code: 0, signal: null })

        const again = yield* startSingle({ specs: (id) => [`${id}=127.0.0.1:${port}`] })
        const stuck = yield* Effect.forkChild(Effect.result(get({ port }, "/sleep?ms=60000")))
        yield* sleeping(again.fixture, again.first)
        process.kill(again.first.pid, "SIGTERM")
        yield* again.fixture.waitForLine(/"effect-grace: draining"/)
        process.kill(again.first.pid, "SIGTERM")
        // At once, with the code of death by SIGTERM (128 + 15), as a shell would report it.
        assert.deepStrictEqual(yield* again.fixture.exited("5 seconds"), { code: 143, signal: null })
        assert.isTrue(Result.isFailure(yield* Fiber.join(stuck)))
      }),
    { timeout: 30_000 }
  )
  it.live(
    "SIGTERM during a slow start-up: exit 0, STOPPING=1 and never READY=1",
    () =>
      Effect.gen(function* () {
        const modeFile = Path.join(yield* tempDir, "mode")
        Fs.writeFileSync(modeFile, "hang")
        const notify = yield* notifySocket
        const port = yield* freePort()
        const tag = `t${process.pid}x${Math.random().toString(36).slice(2, 10)}`
        const fixture = yield* spawnFixture("supervised", [`${tag}=127.0.0.1:${port}`], {
          env: { FIXTURE_MODE_FILE: modeFile, NOTIFY_SOCKET: notify.path }
        })
        // Its application is being built, and will not be ready by itself.
        yield* fixture.waitForLine(new RegExp(`^starting ${fixture.pid}$`))
        process.kill(fixture.pid, "SIGTERM")
        assert.deepStrictEqual(yield* fixture.exited(), { code: 0, signal: null })
        assert.deepStrictEqual(notify.waiting(), ["STOPPING=1"])
        assert.isTrue(fixture.lines.some((line) => line.includes('"effect-grace: termination requested"')))
        assert.deepStrictEqual(processesTagged(tag), [])
      }),
    { timeout: 30_000 }
  )
})

// -----------------------------------------------------------------------------
// Hand-back
// -----------------------------------------------------------------------------

describe("Supervisor, hand-back", () => {
  /** The fixture with a probation window, a mode file, and steady requests on new connections. */
  const underLoad = (probation: string, env: Record<string, string> = {}) =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const modeFile = Path.join(dir, "mode")
      const port = yield* freePort()
      const started = yield* startSingle({
        specs: (id) => [`${id}=127.0.0.1:${port}`],
        env: { GRACE_PROBATION: probation, FIXTURE_MODE_FILE: modeFile, ...env }
      })
      const load = yield* steadyLoad(`http://127.0.0.1:${port}/`, 4)
      yield* Effect.addFinalizer(() => load.stop)
      return { ...started, port, load, mode: (mode: string) => Fs.writeFileSync(modeFile, mode) }
    })

  /** A restart whose successor reports ready: its pid, once the old process has begun its probation. */
  const successorOnProbation = (fixture: Spawned, generation: Generation) =>
    Effect.gen(function* () {
      const since = fixture.lines.length
      process.kill(generation.pid, "SIGUSR2")
      // This restart's line: the same process may have had a successor before.
      const match = yield* fixture.waitForLineFrom(
        since,
        new RegExp(`"effect-grace: successor ready".*"pid":${generation.pid},"successor":(\\d+),"probationMillis"`)
      )
      return Number(match[1])
    })

  /** After the successor's death: it was served again by `old` within 500 ms, and no connection was ever refused. */
  const handedBack = (s: Effect.Success<ReturnType<typeof underLoad>>, successor: number, diedAt: number) =>
    Effect.gen(function* () {
      yield* s.fixture.waitForLine(new RegExp(`"reason":"HandedBack"`))
      yield* eventually(() => s.load.outcomes.some((o) => o.at > diedAt + 500), "half a second of load after the death")
      const first = s.load.outcomes.find((o) => o.at > diedAt && o.pid === s.first.pid)
      assert.isDefined(first, "the old process answers again")
      assert.isAtMost(first!.at - diedAt, 500, "answered again within 500 ms of the death")
      const after = s.load.outcomes.filter((o) => o.at > diedAt + 100)
      assert.isTrue(
        after.every((o) => o.pid === s.first.pid),
        `from then on only the old pid: ${JSON.stringify(after.filter((o) => o.pid !== s.first.pid))}`
      )
      const failed = s.load.outcomes.filter((o) => o.code !== undefined)
      assert.isFalse(
        failed.some((o) => o.code === "ECONNREFUSED"),
        `no connection refused: ${JSON.stringify(failed)}`
      )
      // Only what was in flight on the dead successor's connections may fail: one request per client at most.
      assert.isAtMost(failed.length, 4, JSON.stringify(failed))
      assert.isTrue(
        s.load.outcomes.some((o) => o.pid === successor),
        "the successor served before it died"
      )
    })

  it.live(
    "a successor that dies a second after ready: the old process takes the service back, nothing refused, and restarts again",
    () =>
      Effect.gen(function* () {
        const s = yield* underLoad("3 seconds")
        yield* eventually(() => s.load.outcomes.length >= 50, "load before the restart")
        s.mode("die:1200")
        const successor = yield* successorOnProbation(s.fixture, s.first)
        const dying = yield* s.fixture.waitForLine(new RegExp(`^dying ${successor} (\\d+)$`))
        yield* handedBack(s, successor, Number(dying[1]))
        // The PID file and the next restart: this process is the service again.
        s.mode("ok")
        const next = yield* successorOnProbation(s.fixture, s.first)
        yield* s.fixture.waitForLine(new RegExp(`"effect-grace: probation over".*"pid":${s.first.pid}\\b`))
        assert.deepStrictEqual(yield* s.fixture.exited(), { code: 0, signal: null })
        yield* eventually(() => s.load.outcomes.at(-1)?.pid === next, "the second successor answering")
        yield* s.load.stop
        assert.isFalse(s.load.outcomes.some((o) => o.code === "ECONNREFUSED"))
      }),
    { timeout: 60_000 }
  )

  it.live(
    "kill -9 of the successor within its window: the old process takes the service back",
    () =>
      Effect.gen(function* () {
        const s = yield* underLoad("3 seconds")
        yield* eventually(() => s.load.outcomes.length >= 50, "load before the restart")
        const successor = yield* successorOnProbation(s.fixture, s.first)
        yield* eventually(() => s.load.outcomes.some((o) => o.pid === successor), "the successor serving")
        const diedAt = Date.now()
        process.kill(successor, "SIGKILL")
        yield* handedBack(s, successor, diedAt)
        assert.isTrue(isAlive(s.first.pid))
        const warning = s.fixture.lines.find((line) => line.includes('"reason":"HandedBack"'))!
        assert.include(warning, "was killed by SIGKILL within its probation window")
      }),
    { timeout: 60_000 }
  )

  it.live(
    "a healthy successor: the old process stops accepting at once, and exits 0 once the window has passed",
    () =>
      Effect.gen(function* () {
        const s = yield* underLoad("1500 millis")
        const successor = yield* successorOnProbation(s.fixture, s.first)
        const ready = Date.now()
        yield* s.fixture.waitForLine(new RegExp(`"effect-grace: drain started".*"pid":${s.first.pid}\\b`))
        assert.deepStrictEqual(yield* s.fixture.exited(), { code: 0, signal: null })
        assert.isAtLeast(Date.now() - ready, 1400, "alive for the window")
        yield* s.load.stop
        assert.deepStrictEqual(
          s.load.outcomes.filter((o) => o.code !== undefined),
          []
        )
        assert.strictEqual(s.load.outcomes.at(-1)?.pid, successor)
      }),
    { timeout: 30_000 }
  )

  it.live(
    "under systemd: READY=1 when the successor is ready, MAINPID only once its window has passed; never a dead pid",
    () =>
      Effect.gen(function* () {
        const notify = yield* notifySocket
        // Each datagram as it arrives, with whether the MAINPID it names is alive then.
        const received: Array<string> = []
        const nextDatagram = Effect.map(notify.next, (text) => {
          const main = text.match(/MAINPID=(\d+)/)?.[1]
          received.push(main !== undefined && !isAlive(Number(main)) ? `${text} (dead)` : text)
          return received.at(-1)!
        })
        // A window well past the death, which comes about a second after the successor starts.
        const s = yield* underLoad("3 seconds", { NOTIFY_SOCKET: notify.path })
        assert.strictEqual(yield* nextDatagram, "READY=1")
        s.mode("die:1000")
        const dying = yield* successorOnProbation(s.fixture, s.first)
        assert.match(yield* nextDatagram, /^RELOADING=1\nMONOTONIC_USEC=\d+$/)
        assert.strictEqual(yield* nextDatagram, "READY=1", "the reload is over; the main process is still this one")
        assert.match(yield* nextDatagram, /^STATUS=serving again: the successor \(pid \d+\) exited with code 1/)
        yield* s.fixture.waitForLine(new RegExp(`^dying ${dying} `))
        s.mode("ok")
        const next = yield* successorOnProbation(s.fixture, s.first)
        assert.match(yield* nextDatagram, /^RELOADING=1/)
        assert.strictEqual(yield* nextDatagram, "READY=1")
        assert.strictEqual(yield* nextDatagram, `MAINPID=${next}`, "named once its window has passed, alive")
        assert.deepStrictEqual(yield* s.fixture.exited(), { code: 0, signal: null })
        assert.isFalse(
          received.some((text) => text.includes("(dead)")),
          received.join(" | ")
        )
        assert.isFalse(
          received.some((text) => text.includes(`MAINPID=${dying}`)),
          "never the successor that died"
        )
      }),
    { timeout: 60_000 }
  )
})
