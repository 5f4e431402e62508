/**
 * A primary and its workers over a fake operating system, under a TestClock:
 * the primary is the supervisor run with `workers`, its workers are children
 * the test plays (they say `ready`, ask for listeners, exit), and every line
 * the primary writes to each is recorded.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as TestClock from "effect/testing/TestClock"
import { fstatSync } from "node:fs"
import * as Listeners from "../src/Listeners.ts"
import * as Supervisor from "../src/Supervisor.ts"
import type * as Os from "../src/internal/os.ts"
import * as Parent from "../src/internal/parent.ts"
import * as Duration from "effect/Duration"
import * as Scope from "effect/Scope"
import * as Group from "../src/internal/group.ts"
import * as Tickets from "../src/internal/tickets.ts"
import * as Sys from "../src/internal/sys.ts"
import * as FakeOs from "./support/os.ts"
import { primary, supervised, until, untilEffect } from "./support/supervised.ts"
import type { SupervisedOptions } from "./support/supervised.ts"

type Primary = Effect.Success<ReturnType<typeof primary>>

/** A child the primary started, and every line the primary has written to it, in order. */
interface Heard {
  readonly child: FakeOs.FakeChild
  readonly lines: Array<string>
}

const heard = (child: FakeOs.FakeChild) =>
  Effect.gen(function* () {
    const lines: Array<string> = []
    const record = Effect.flatMap(child.channel.receive, (line) => Effect.sync(() => void lines.push(line)))
    // Until its channel closes: it has exited.
    yield* Effect.forkChild(Effect.forever(record).pipe(Effect.catch(() => Effect.void)))
    return { child, lines } satisfies Heard
  })

/** The next child the primary starts. */
const spawned = (s: Primary) => Effect.flatMap(s.fake.spawned, heard)

const hears = (w: Heard, line: string) => until(() => w.lines.includes(line), `${w.child.pid} told ${line}`)

/** Asked to drain and exit: a line on its channel, not a signal (systemd signals every process of the service). */
const terminated = (w: Heard) => w.lines.includes("terminate")

const count = (metric: Metric.Metric<number, Metric.CounterState<number>>, attributes: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, attributes)), (state) => state.count)
const restarts = (outcome: string) => count(Supervisor.metrics.restarts, { outcome })
const readies = count(Supervisor.metrics.workers, { event: "ready" })
const exits = count(Supervisor.metrics.workers, { event: "exited" })

/** `act`, then the primary has taken `n` more of `counted`, and done what it does then. */
const taken = <A, E, R>(counted: Effect.Effect<number>, n: number, act: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const before = yield* counted
    yield* act
    yield* untilEffect(
      Effect.map(counted, (now) => now >= before + n),
      "the primary took the words"
    )
    // What follows in the primary's fibers, before anything is checked not to have happened.
    for (let turn = 0; turn < 50; turn++) yield* Effect.yieldNow
  })

/** Workers say ready: the primary has taken each word, and done what it does then. */
const sayReady = (...workers: ReadonlyArray<Heard>) =>
  taken(
    readies,
    workers.length,
    Effect.forEach(workers, (w) => w.child.sayReady)
  )

/** A primary of two workers, both ready. */
const serving = (options: Omit<SupervisedOptions, "workers"> = {}) =>
  Effect.gen(function* () {
    const s = yield* primary({ ...options, workers: 2 })
    const workers = [yield* spawned(s), yield* spawned(s)] as const
    for (const w of workers) yield* w.child.sayReady
    yield* until(() => s.logs().includes("effect-grace: ready"), "the primary ready")
    for (const w of workers) yield* hears(w, "serving")
    return { s, workers }
  })

/** SIGTERM: each worker still there is asked to drain and exit, and does; the run ends. */
const terminate = (s: Primary, workers: ReadonlyArray<Heard>) =>
  Effect.gen(function* () {
    yield* s.fake.signal("SIGTERM")
    for (const w of workers) {
      yield* until(() => terminated(w), `${w.child.pid} terminated`)
      yield* w.child.exit({ code: 0, signal: null })
    }
    yield* Fiber.join(s.fiber)
  })

const slotOf = (w: Heard) => w.child.env.EFFECT_GRACE_WORKER

/** The port a listening fd is bound to. */
const portOf = (fd: number) => {
  const address = Sys.localAddress(fd)
  assert.isTrue(address._tag === "Success")
  return address._tag === "Success" && "port" in address.success ? address.success.port : undefined
}

describe("a primary and its workers, on a fake OS", () => {
  it.effect("starts its workers with the ticket key first; ready once both are, then each is told it serves", () =>
    Effect.gen(function* () {
      const s = yield* primary({ workers: 2, pidFile: "/run/app.pid" })
      const a = yield* spawned(s)
      const b = yield* spawned(s)
      assert.deepStrictEqual([a.child.worker, b.child.worker], [true, true])
      assert.deepStrictEqual([slotOf(a), slotOf(b)], ["0", "1"])
      for (const name of ["NOTIFY_SOCKET", "GRACE_WORKERS", "GRACE_PID_FILE"]) assert.notProperty(a.child.env, name)
      assert.strictEqual(a.child.env.NODE_COMPILE_CACHE, "/tmp/compile-cache", "workers read what the primary compiled")
      for (const w of [a, b]) {
        yield* until(() => w.lines.length > 0, "the first line")
        assert.match(w.lines[0]!, /^ticket-keys \S+$/)
      }
      assert.strictEqual(a.lines[0], b.lines[0], "one key for the group")
      yield* sayReady(a)
      assert.deepStrictEqual(s.notes, [], "not ready with one worker of two")
      assert.notInclude(s.logs(), "effect-grace: ready")
      assert.deepStrictEqual(s.fake.pidFile, [])
      assert.deepStrictEqual(a.lines.slice(1), [], "not told it serves before the group does")
      yield* b.child.sayReady
      yield* until(() => s.logs().includes("effect-grace: ready"), "ready")
      assert.deepStrictEqual(s.notes, ["READY=1"])
      yield* hears(a, "serving")
      yield* hears(b, "serving")
      assert.deepStrictEqual(a.lines.slice(1), ["serving"])
      assert.strictEqual(s.fake.children.length, 2)
      assert.deepStrictEqual(s.fake.pidFile, ["write /run/app.pid"], "the primary's pid, once the group serves")
      yield* terminate(s, [a, b])
      assert.deepStrictEqual(s.notes, ["READY=1", "STOPPING=1"])
    })
  )

  it.effect("a worker that exits before the group is ready: the run fails with WorkerFailed, the others stopped", () =>
    Effect.gen(function* () {
      const s = yield* primary({ workers: 3 })
      const [a, b, c] = [yield* spawned(s), yield* spawned(s), yield* spawned(s)]
      yield* sayReady(a)
      yield* b.child.exit({ code: 3, signal: null })
      yield* until(() => terminated(a), "the ready one asked to stop")
      assert.strictEqual(c.child.state, "killed", "the one not ready is killed")
      yield* a.child.exit({ code: 0, signal: null })
      const exit = yield* Fiber.await(s.fiber)
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail")?.error : undefined
      assert.instanceOf(error, Supervisor.WorkerFailed)
      assert.deepInclude(error, { slot: 1, pid: b.child.pid, code: 3, signal: null })
      assert.deepStrictEqual(s.notes, [], "never READY=1")
    })
  )

  it.effect("SIGTERM while the workers start: those not ready killed, the ready ones drain; never READY=1", () =>
    Effect.gen(function* () {
      const s = yield* primary({ workers: 2 })
      const [a, b] = [yield* spawned(s), yield* spawned(s)]
      yield* sayReady(a)
      yield* s.fake.signal("SIGTERM")
      yield* until(() => terminated(a), "the ready one asked to drain")
      assert.strictEqual(b.child.state, "killed")
      assert.isUndefined(s.fiber.pollUnsafe(), "the run waits for the ready one")
      yield* a.child.exit({ code: 0, signal: null })
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.notes, ["STOPPING=1"])
    })
  )

  it.effect("a worker's listen: bound on loopback, the fd sent before `listened`; a socket a slot, on one port", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving()
      const [a, b] = workers
      const ask = (w: Heard, key: number, address: string) =>
        w.child.channel.send(`listen ${JSON.stringify({ key, address, name: "http", backlog: 16, nth: 0 })}`)
      yield* ask(a, 7, "127.0.0.1:0")
      yield* hears(a, `listened {"key":7}`)
      assert.strictEqual(a.child.sentFds.length, 1)
      const fd = a.child.sentFds[0]!
      assert.isTrue(fstatSync(fd).isSocket(), "a socket the primary holds")
      yield* ask(b, 0, "127.0.0.1:0")
      yield* hears(b, `listened {"key":0}`)
      assert.strictEqual(b.child.sentFds.length, 1)
      const other = b.child.sentFds[0]!
      assert.notStrictEqual(other, fd, "a socket of its own: the kernel spreads connections over the two")
      assert.deepStrictEqual(portOf(other), portOf(fd), "on the same port (SO_REUSEPORT)")
      yield* ask(a, 8, "nowhere:abc")
      yield* until(() => a.lines.some((line) => line.startsWith("listen-failed ")), "the refusal")
      const failed = JSON.parse(a.lines.find((line) => line.startsWith("listen-failed "))!.slice(14))
      assert.strictEqual(failed.key, 8)
      assert.strictEqual(failed.reason._tag, "InvalidAddress")
      assert.strictEqual(a.child.sentFds.length, 1, "no fd for a refusal")
      // A worker started later is given it at its start.
      yield* a.child.exit({ code: null, signal: "SIGKILL" })
      const c = yield* spawned(s)
      assert.deepStrictEqual(c.child.passed, [{ fd, name: "http" }], "slot 0's socket, and only it")
      yield* sayReady(c)
      yield* terminate(s, [b, c])
      // Held for the life of the service, closed with it.
      assert.throws(() => fstatSync(fd))
      assert.throws(() => fstatSync(other))
    })
  )

  it.effect("two workers asking at once for the same host name get the sockets of one group, on one port", () =>
    Effect.gen(function* () {
      const s = yield* primary({ workers: 2 })
      const [a, b] = [yield* spawned(s), yield* spawned(s)]
      // As two workers starting together do, before either is ready: the name takes a lookup to resolve.
      for (const w of [a, b]) {
        const ask = { key: 0, address: "localhost:0", name: "http", backlog: 16, nth: 0 }
        yield* w.child.channel.send(`listen ${JSON.stringify(ask)}`)
      }
      yield* hears(a, `listened {"key":0}`)
      yield* hears(b, `listened {"key":0}`)
      assert.notDeepEqual(b.child.sentFds, a.child.sentFds, "a socket each")
      assert.deepStrictEqual(portOf(b.child.sentFds[0]!), portOf(a.child.sentFds[0]!), "one group: one port")
      yield* sayReady(a, b)
      yield* terminate(s, [a, b])
    })
  )

  it.effect("SIGHUP: the canary on probation, then the next slot at once, old workers draining in the background", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving({ probation: "5 seconds" })
      const [a, b] = workers
      const before = yield* restarts("ready")
      yield* s.fake.signal("SIGHUP")
      const c = yield* spawned(s)
      assert.isTrue(c.child.worker)
      assert.strictEqual(slotOf(c), "0")
      assert.match(s.notes[1]!, /^RELOADING=1/)
      assert.isTrue(
        s.lines.some((l) => l.message === "effect-grace: rolling restart requested" && l.annotations.by === "SIGHUP")
      )
      yield* until(() => c.lines.length > 0, "the new one's key")
      assert.match(c.lines[0]!, /^ticket-keys /)
      yield* sayReady(c)
      yield* hears(a, "pause")
      yield* hears(c, "serving")
      assert.strictEqual(s.fake.children.length, 3, "the canary alone on probation")
      assert.isFalse(terminated(a))
      yield* TestClock.adjust("4999 millis")
      assert.isFalse(terminated(a), "not before the probation has passed")
      assert.strictEqual(s.fake.children.length, 3)
      yield* TestClock.adjust("1 millis")
      yield* until(() => terminated(a), "the old one of slot 0 ended")
      // The next slot does not wait for the old one's drain, nor for a probation of its own.
      const d = yield* spawned(s)
      assert.strictEqual(slotOf(d), "1")
      assert.deepStrictEqual(b.lines.slice(1), ["serving"], "the next slot's old one untouched so far")
      yield* sayReady(d)
      yield* until(() => terminated(b), "the old one of slot 1 paused and ended at once")
      assert.deepStrictEqual(b.lines.slice(1), ["serving", "pause", "terminate"])
      yield* until(() => s.logs().includes("effect-grace: restarted"), "the roll done")
      const done = s.lines.find((l) => l.message === "effect-grace: restarted")!
      assert.deepInclude(done.annotations, { kind: "roll", workers: `0:${c.child.pid}, 1:${d.child.pid}` })
      assert.deepStrictEqual(s.notes.slice(2), ["READY=1"], "the reload is over")
      assert.strictEqual((yield* restarts("ready")) - before, 1)
      assert.deepStrictEqual(a.lines.slice(1), ["serving", "pause", "terminate"], "paused, never resumed")
      // The old ones drain on; the primary's stop waits for them too.
      yield* s.fake.signal("SIGTERM")
      for (const w of [c, d]) yield* until(() => terminated(w), `${w.child.pid} asked to drain`)
      for (const w of [c, d, a]) yield* w.child.exit({ code: 0, signal: null })
      assert.isUndefined(s.fiber.pollUnsafe(), "not over while the old one of slot 1 still drains")
      yield* b.child.exit({ code: 0, signal: null })
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("a worker's `roll` asks its primary for the same rolling restart", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving()
      const [a, b] = workers
      yield* a.child.channel.send("roll")
      const c = yield* spawned(s)
      assert.isTrue(
        s.lines.some((l) => l.message === "effect-grace: rolling restart requested" && l.annotations.by === "worker")
      )
      // Without probation, the old one stops accepting and ends as soon as the new one is ready.
      yield* sayReady(c)
      yield* until(() => terminated(a), "the old one ended")
      assert.deepStrictEqual(a.lines.slice(1), ["serving", "pause", "terminate"])
      const d = yield* spawned(s)
      yield* sayReady(d)
      yield* until(() => terminated(b), "the old one ended")
      yield* until(() => s.logs().includes("effect-grace: restarted"), "the roll done")
      yield* a.child.exit({ code: 0, signal: null })
      yield* b.child.exit({ code: 0, signal: null })
      yield* terminate(s, [c, d])
    })
  )

  it.effect("a roll asked for during a roll is kept, and rolls every slot again once the first is done", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving()
      const [a, b] = workers
      yield* s.fake.signal("SIGHUP")
      const c = yield* spawned(s)
      yield* s.fake.signal("SIGHUP")
      yield* s.fake.signal("SIGHUP")
      yield* until(() => s.logs().filter((l) => l === "effect-grace: restart queued").length === 2, "kept, as one")
      yield* sayReady(c)
      const d = yield* spawned(s)
      yield* sayReady(d)
      // The second roll replaces the first one's workers, started before it was asked for.
      const e = yield* spawned(s)
      assert.strictEqual(slotOf(e), "0")
      yield* sayReady(e)
      const f = yield* spawned(s)
      yield* sayReady(f)
      yield* until(() => s.logs().filter((l) => l === "effect-grace: restarted").length === 2, "two rolls done")
      assert.strictEqual(s.fake.children.length, 6, "two workers, two rolls of two: one pending roll, not two")
      for (const w of [a, b, c, d]) yield* until(() => terminated(w), `${w.child.pid} let go`)
      for (const w of [a, b, c, d]) yield* w.child.exit({ code: 0, signal: null })
      yield* terminate(s, [e, f])
    })
  )

  it.effect("a new worker that exits within its probation: the old one resumes, logged, the roll stops there", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving({ probation: "5 seconds" })
      const [a, b] = workers
      const before = yield* restarts("HandedBack")
      yield* s.fake.signal("SIGHUP")
      const c = yield* spawned(s)
      yield* sayReady(c)
      yield* hears(a, "pause")
      yield* c.child.exit({ code: null, signal: "SIGSEGV" })
      yield* hears(a, "resume")
      assert.include(s.logs(), "effect-grace: new worker exited on probation; the old one serves again")
      yield* until(() => s.warnings().some((w) => w.reason === "HandedBack"), "the roll's failure logged")
      const warning = s.warnings().find((w) => w.reason === "HandedBack")!
      assert.include(warning.message, `pid ${c.child.pid}`)
      assert.strictEqual((yield* restarts("HandedBack")) - before, 1)
      assert.strictEqual(s.notes.at(-1), "READY=1", "the reload is over")
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(s.fake.children.length, 3, "slot 1 keeps its worker")
      assert.isFalse(terminated(a))
      assert.deepStrictEqual(b.lines.slice(1), ["serving"])
      // The next roll goes ahead.
      yield* s.fake.signal("SIGHUP")
      const d = yield* spawned(s)
      assert.strictEqual(slotOf(d), "0")
      yield* terminate(s, [a, b])
      assert.strictEqual(d.child.state, "killed")
    })
  )

  it.effect("a new worker that exits before it is ready: the old one never paused, the roll stops there", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving({ probation: "5 seconds" })
      const [a, b] = workers
      yield* s.fake.signal("SIGHUP")
      const c = yield* spawned(s)
      yield* c.child.exit({ code: 1, signal: null })
      yield* until(() => s.warnings().some((w) => w.reason === "ExitedBeforeReady"), "the roll's failure logged")
      assert.include(s.logs(), "effect-grace: worker exited before it was ready")
      assert.strictEqual(s.notes.at(-1), "READY=1")
      assert.deepStrictEqual(a.lines.slice(1), ["serving"], "never paused")
      assert.strictEqual(s.fake.children.length, 3)
      yield* terminate(s, [a, b])
    })
  )

  it.effect("a serving worker that dies is replaced at once, and told it serves once ready", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving()
      const [a, b] = workers
      yield* b.child.exit({ code: null, signal: "SIGKILL" })
      const c = yield* spawned(s)
      assert.strictEqual(slotOf(c), "1")
      assert.isTrue(
        s.lines.some((l) => l.message === "effect-grace: worker died" && l.annotations.signal === "SIGKILL")
      )
      yield* c.child.sayReady
      yield* hears(c, "serving")
      assert.deepStrictEqual(s.notes, ["READY=1"], "nothing said to systemd")
      yield* terminate(s, [a, c])
    })
  )

  it.effect(
    "a dead slot's socket is lent to the other worker, the fd before `lend`, and taken back once it serves",
    () =>
      Effect.gen(function* () {
        const { s, workers } = yield* serving()
        const [a, b] = workers
        for (const w of workers) {
          yield* w.child.channel.send(
            `listen ${JSON.stringify({ key: 0, address: "127.0.0.1:0", backlog: 16, nth: 0 })}`
          )
          yield* hears(w, `listened {"key":0}`)
        }
        const dead = b.child.sentFds[0]!
        yield* b.child.exit({ code: null, signal: "SIGKILL" })
        const c = yield* spawned(s)
        yield* hears(a, `lend {"loan":${dead}}`)
        assert.deepStrictEqual(a.child.sentFds.slice(1), [dead], "slot 1's socket, sent first")
        assert.isTrue(fstatSync(dead).isSocket(), "the primary's copy stays open")
        assert.isTrue(s.lines.some((l) => l.message.includes("lending") && l.annotations.slot === 1))
        yield* c.child.exit({ code: 1, signal: null })
        yield* TestClock.adjust("1 second")
        const d = yield* spawned(s)
        assert.deepStrictEqual(
          a.lines.filter((line) => line.startsWith("lend ")).length,
          1,
          "lent once, for the outage"
        )
        yield* sayReady(d)
        yield* hears(a, `reclaim {"loan":${dead}}`)
        assert.isTrue(fstatSync(dead).isSocket())
        yield* terminate(s, [a, d])
      })
  )

  it.effect("a replacement that exits before ready starts again after 1 s, not before, then after 1.5 s", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving()
      const [a, b] = workers
      yield* b.child.exit({ code: null, signal: "SIGKILL" })
      const c = yield* spawned(s)
      yield* c.child.exit({ code: 1, signal: null })
      yield* until(() => s.logs().includes("effect-grace: starting the worker again after a delay"), "the delay")
      const delays = () =>
        s.lines
          .filter((l) => l.message === "effect-grace: starting the worker again after a delay")
          .map((l) => l.annotations.millis)
      assert.deepStrictEqual(delays(), [1000])
      yield* TestClock.adjust("999 millis")
      assert.strictEqual(s.fake.children.length, 3, "not before the delay")
      yield* TestClock.adjust("1 millis")
      const d = yield* spawned(s)
      assert.strictEqual(slotOf(d), "1")
      yield* d.child.exit({ code: 1, signal: null })
      yield* until(() => delays().length === 2, "the second delay")
      assert.deepStrictEqual(delays(), [1000, 1500])
      yield* TestClock.adjust("1499 millis")
      assert.strictEqual(s.fake.children.length, 4)
      yield* TestClock.adjust("1 millis")
      const e = yield* spawned(s)
      yield* e.child.sayReady
      yield* hears(e, "serving")
      yield* terminate(s, [a, e])
    })
  )

  it.effect("a worker not ready within readyTimeout is killed, and started again after the delay", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving({ readyTimeout: "3 seconds" })
      const [a, b] = workers
      yield* b.child.exit({ code: null, signal: "SIGKILL" })
      const c = yield* spawned(s)
      yield* TestClock.adjust("2999 millis")
      assert.strictEqual(c.child.state, "running")
      yield* TestClock.adjust("1 millis")
      yield* until(() => c.child.state === "killed", "killed")
      yield* until(() => s.logs().includes("effect-grace: starting the worker again after a delay"), "the delay")
      yield* TestClock.adjust("1 seconds")
      const d = yield* spawned(s)
      yield* d.child.sayReady
      yield* hears(d, "serving")
      yield* terminate(s, [a, d])
    })
  )

  it.effect("SIGTERM during a roll: the run is over only once the old worker, still draining, has exited", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving()
      const [a, b] = workers
      yield* s.fake.signal("SIGHUP")
      const c = yield* spawned(s)
      yield* sayReady(c)
      // a was asked to drain and exit, and still drains.
      yield* until(() => terminated(a), "the old one of slot 0 asked to end")
      yield* s.fake.signal("SIGTERM")
      for (const w of [b, c]) yield* until(() => terminated(w), `${w.child.pid} asked to drain`)
      assert.strictEqual(a.lines.filter((line) => line === "terminate").length, 1, "a is not asked twice")
      yield* taken(
        exits,
        2,
        Effect.all([b.child.exit({ code: 0, signal: null }), c.child.exit({ code: 0, signal: null })])
      )
      // The primary's exit would cut a's drain (the last process of a container; systemd's stop of the cgroup).
      assert.isUndefined(s.fiber.pollUnsafe(), "not over while a worker still drains")
      yield* a.child.exit({ code: 0, signal: null })
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("a roll whose new worker exits before ready, where the old one has died, stops and is over", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving({ probation: "5 seconds" })
      const [a, b] = workers
      yield* s.fake.signal("SIGHUP")
      const c = yield* spawned(s)
      yield* a.child.exit({ code: null, signal: "SIGKILL" })
      yield* until(() => s.logs().includes("effect-grace: worker died"), "the old one's death seen")
      yield* c.child.exit({ code: 1, signal: null })
      // The roll ends there: systemd hears the reload is over, and the next restart is not refused.
      yield* until(() => s.warnings().some((w) => w.reason === "ExitedBeforeReady"), "the roll's failure logged")
      assert.strictEqual(s.notes.at(-1), "READY=1")
      yield* TestClock.adjust("1 seconds")
      const d = yield* spawned(s)
      assert.strictEqual(slotOf(d), "0", "the slot starts again after the delay")
      yield* sayReady(d)
      yield* terminate(s, [b, d])
    })
  )

  it.effect(
    "SIGTERM during a roll: the workers not ready killed, the others asked to drain; over once all exited",
    () =>
      Effect.gen(function* () {
        const { s, workers } = yield* serving({ probation: "5 seconds", surge: 2 })
        const [a, b] = workers
        yield* s.fake.signal("SIGHUP")
        const c = yield* spawned(s)
        yield* sayReady(c)
        yield* hears(a, "pause")
        yield* TestClock.adjust("5 seconds")
        // The canary passed: the other slot begins.
        const d = yield* spawned(s)
        assert.strictEqual(slotOf(d), "1")
        yield* s.fake.signal("SIGTERM")
        yield* until(() => d.child.state === "killed", "the one not ready killed")
        for (const w of [a, b, c]) yield* until(() => terminated(w), `${w.child.pid} asked to drain`)
        assert.include(s.notes, "STOPPING=1")
        yield* a.child.exit({ code: 0, signal: null })
        yield* b.child.exit({ code: 0, signal: null })
        assert.isUndefined(s.fiber.pollUnsafe(), "not over while one still drains")
        yield* c.child.exit({ code: 0, signal: null })
        yield* Fiber.join(s.fiber)
        assert.notInclude(s.logs(), "effect-grace: restarted")
      })
  )

  it.effect(
    "SIGUSR2 upgrades the primary: a successor, not a worker; once ready every worker pauses, and resumes if it dies",
    () =>
      Effect.gen(function* () {
        const { s, workers } = yield* serving({ probation: "5 seconds" })
        const [a, b] = workers
        yield* s.fake.signal("SIGUSR2")
        const successor = yield* spawned(s)
        assert.isFalse(successor.child.worker)
        assert.notProperty(successor.child.env, "EFFECT_GRACE_WORKER")
        yield* until(() => successor.lines.length > 0, "the successor's key")
        assert.match(successor.lines[0]!, /^ticket-keys /)
        yield* successor.child.sayReady
        yield* hears(a, "pause")
        yield* hears(b, "pause")
        yield* successor.child.exit({ code: 1, signal: null })
        yield* hears(a, "resume")
        yield* hears(b, "resume")
        yield* until(() => s.warnings().some((w) => w.reason === "HandedBack"), "handed back")
        assert.deepStrictEqual(a.lines.slice(1), ["serving", "pause", "resume"])
        yield* terminate(s, [a, b])
      })
  )

  it.effect("SIGUSR2 with the successor alive after its probation: MAINPID, and every worker drains and exits", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving({ probation: "5 seconds" })
      const [a, b] = workers
      yield* s.fake.signal("SIGUSR2")
      const successor = yield* spawned(s)
      yield* successor.child.sayReady
      yield* hears(a, "pause")
      yield* TestClock.adjust("5 seconds")
      yield* until(() => s.notes.some((n) => n.startsWith(`MAINPID=${successor.child.pid}`)), "MAINPID")
      for (const w of [a, b]) yield* until(() => terminated(w), `${w.child.pid} asked to drain`)
      assert.isUndefined(s.fiber.pollUnsafe(), "the primary waits for its workers")
      yield* a.child.exit({ code: 0, signal: null })
      yield* b.child.exit({ code: 0, signal: null })
      yield* Fiber.join(s.fiber)
      assert.strictEqual(successor.child.state, "released")
    })
  )

  it.effect("a second SIGTERM forces the exit: outside runMain every worker is killed, and the run is over", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving()
      const [a, b] = workers
      yield* s.fake.signal("SIGTERM")
      for (const w of [a, b]) yield* until(() => terminated(w), `${w.child.pid} asked to drain`)
      yield* s.fake.signal("SIGTERM")
      yield* until(() => s.fake.forced.length === 1, "the forced exit")
      // The runtime does not end the process here: every drain is cut, every worker killed, and the run ends.
      yield* until(() => s.fiber.pollUnsafe() !== undefined, "the run over")
      assert.deepStrictEqual(
        [a, b].map((w) => w.child.state),
        ["killed", "killed"],
        "no worker is left running"
      )
    })
  )

  it.effect("workers below 1 in the options fail at start, as GRACE_WORKERS=0 does, instead of never being ready", () =>
    Effect.gen(function* () {
      for (const workers of [0, Number.NaN]) {
        const s = yield* primary({ workers })
        yield* until(() => s.fiber.pollUnsafe() !== undefined, `workers: ${workers} refused`)
        const exit = yield* Fiber.await(s.fiber)
        assert.isTrue(Exit.isFailure(exit))
        assert.match(String(Exit.isFailure(exit) ? Cause.squash(exit.cause) : ""), /workers/i)
        assert.strictEqual(s.fake.children.length, 0)
      }
    })
  )

  it.effect("SIGUSR2 without probation: MAINPID with READY once the successor is ready, then the workers drain", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving()
      const [a, b] = workers
      yield* s.fake.signal("SIGUSR2")
      const successor = yield* spawned(s)
      assert.isFalse(terminated(a), "serving while the successor starts")
      yield* successor.child.sayReady
      yield* until(() => s.notes.includes(`MAINPID=${successor.child.pid}\nREADY=1`), "MAINPID")
      for (const w of [a, b]) yield* until(() => terminated(w), `${w.child.pid} asked to drain`)
      assert.notInclude(a.lines, "pause", "no window: straight to the drain")
      yield* a.child.exit({ code: 0, signal: null })
      yield* b.child.exit({ code: 0, signal: null })
      yield* Fiber.join(s.fiber)
      assert.strictEqual(successor.child.state, "released")
      assert.notInclude(s.notes, "STOPPING=1")
    })
  )

  it.effect("a replacement ready while the group is paused (the primary's probation) is paused too", () =>
    Effect.gen(function* () {
      const { s, workers } = yield* serving({ probation: "5 seconds" })
      const [a, b] = workers
      yield* s.fake.signal("SIGUSR2")
      const successor = yield* spawned(s)
      yield* successor.child.sayReady
      yield* hears(b, "pause")
      yield* b.child.exit({ code: null, signal: "SIGKILL" })
      const c = yield* spawned(s)
      yield* c.child.sayReady
      yield* hears(c, "pause")
      assert.deepStrictEqual(c.lines.slice(1), ["serving", "pause"])
      yield* successor.child.exit({ code: 1, signal: null })
      yield* hears(c, "resume")
      yield* hears(a, "resume")
      yield* terminate(s, [a, c])
    })
  )

  it.effect(
    "a worker above the memory limit for the grace period is replaced through its slot, counted and logged",
    () =>
      Effect.gen(function* () {
        const replaced = Effect.map(Metric.value(Supervisor.metrics.memoryReplacements), (state) => state.count)
        const before = yield* replaced
        const { s, workers } = yield* serving({ maxMemory: 1000, maxMemoryGrace: "2 seconds" })
        const [a, b] = workers
        s.fake.rss.set(a.child.pid, 400)
        s.fake.rss.set(b.child.pid, 400)
        yield* TestClock.adjust("5 seconds")
        assert.strictEqual(s.fake.children.length, 2, "below the limit: nothing")
        s.fake.rss.set(a.child.pid, 5000)
        // Sampled every 500 ms: above the limit since the next sample, for less than the grace period.
        yield* TestClock.adjust("2 seconds")
        assert.strictEqual(s.fake.children.length, 2, "not for the whole grace period yet")
        yield* TestClock.adjust("500 millis")
        const c = yield* spawned(s)
        assert.strictEqual(slotOf(c), "0")
        const line = s.lines.find((l) => l.message === "effect-grace: worker over memory limit")
        assert.deepInclude(line?.annotations, { slot: 0, worker: a.child.pid, rss: 5000, limit: 1000 })
        assert.strictEqual((yield* replaced) - before, 1)
        // The new worker first: the old one serves until it is ready, then is paused and drains.
        assert.notInclude(a.lines, "pause")
        yield* sayReady(c)
        yield* hears(a, "pause")
        yield* hears(a, "terminate")
        assert.notInclude(b.lines, "pause")
        yield* a.child.exit({ code: 0, signal: null })
        // Said again while the slot's new worker is below the limit: nothing more.
        s.fake.rss.set(c.child.pid, 400)
        yield* TestClock.adjust("10 seconds")
        assert.strictEqual(s.fake.children.length, 3)
        yield* terminate(s, [b, c])
      })
  )
})

describe("a group's workers, as the status reads them", () => {
  it.effect("each worker alive: slot, pid, phase, size, start, and its slot's deaths and replacements", () =>
    Effect.gen(function* () {
      const fake = yield* FakeOs.make({})
      const keyring = yield* Tickets.makeKeyring({ rotateEvery: Duration.hours(24) })
      const scope = yield* Scope.make()
      const given: Group.Given = {
        os: fake.os,
        keyring,
        env: {},
        settings: {
          workers: 2,
          surge: 1,
          probation: Duration.zero,
          readyTimeout: Duration.minutes(1),
          maxMemory: 1000,
          maxMemoryGrace: Duration.seconds(2)
        },
        inherited: [],
        listen: () => Effect.die(new Error("no address is asked for")),
        rolled: () => Effect.void,
        requestRoll: Effect.void,
        forced: Effect.never,
        log: () => Effect.void,
        annotations: {}
      }
      const making = yield* Effect.forkChild(Scope.provide(Group.make(given), scope))
      const a = yield* Effect.flatMap(fake.spawned, heard)
      const b = yield* Effect.flatMap(fake.spawned, heard)
      fake.rss.set(a.child.pid, 500)
      yield* a.child.sayReady
      yield* b.child.sayReady
      const group = yield* Fiber.join(making)
      const first = yield* group.workers
      assert.deepStrictEqual(first, [
        { slot: 0, pid: a.child.pid, phase: "serving", rssBytes: 500, startedAt: 0, deaths: 0, memoryReplacements: 0 },
        {
          slot: 1,
          pid: b.child.pid,
          phase: "serving",
          rssBytes: undefined,
          startedAt: 0,
          deaths: 0,
          memoryReplacements: 0
        }
      ])
      // Slot 0 above the limit: its new worker starts, the old one serves meanwhile. Slot 1's worker dies.
      yield* TestClock.adjust("1 second")
      fake.rss.set(a.child.pid, 5000)
      yield* TestClock.adjust("3 seconds")
      const c = yield* Effect.flatMap(fake.spawned, heard)
      yield* b.child.exit({ code: 1, signal: null })
      const d = yield* Effect.flatMap(fake.spawned, heard)
      const phases = (workers: ReadonlyArray<Group.WorkerStatus>) =>
        workers.map((w) => `${w.slot}:${w.pid}:${w.phase}:${w.deaths}:${w.memoryReplacements}`)
      yield* untilEffect(
        Effect.map(group.workers, (workers) => workers.length === 3),
        "the replacements in the status"
      )
      assert.deepStrictEqual(phases(yield* group.workers), [
        `0:${a.child.pid}:serving:0:1`,
        `0:${c.child.pid}:starting:0:1`,
        `1:${d.child.pid}:starting:1:0`
      ])
      const started = (yield* group.workers).find((w) => w.pid === c.child.pid)!
      // Sampled every 500 ms: above the limit from the sample at 1.5 s, for the grace period at 3.5 s.
      assert.strictEqual(started.startedAt, 3500, "the clock's time when it was started")
      // Ready: the old worker of slot 0 drains, of no slot.
      yield* c.child.sayReady
      yield* d.child.sayReady
      yield* hears(a, "terminate")
      assert.deepStrictEqual(phases(yield* group.workers), [
        `0:${c.child.pid}:serving:0:1`,
        `1:${d.child.pid}:serving:1:0`,
        `undefined:${a.child.pid}:draining:0:0`
      ])
      // Closing the scope stops the group: each worker drains and exits.
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      for (const w of [c, d]) yield* hears(w, "terminate")
      for (const w of [a, c, d]) yield* w.child.exit({ code: 0, signal: null })
      yield* Fiber.join(closing)
    })
  )
})

describe("a worker, on a fake OS", () => {
  const keys: Tickets.TicketKey = { key: Buffer.alloc(48, 9), createdAt: 0 }
  // Its primary is its parent (pid 41), and the environment names its slot.
  const worker = (options: SupervisedOptions = {}) =>
    Effect.gen(function* () {
      const s = yield* supervised({
        parentPid: 41,
        parentValues: { EFFECT_GRACE_TICKET_KEYS: "channel", EFFECT_GRACE_WORKER: "1" },
        env: { EFFECT_GRACE_WORKER: "1" },
        keysFrom: keys,
        ...options
      })
      // A test that fails leaves the worker running: it is stopped with the clock moving, through any shutdown delay.
      const ticking = Effect.forever(Effect.andThen(TestClock.adjust("1 second"), Effect.yieldNow))
      yield* Effect.addFinalizer(() => Effect.raceFirst(Fiber.interrupt(s.fiber), ticking))
      return s
    })
  const ready = (s: Effect.Success<ReturnType<typeof worker>>) =>
    untilEffect(
      Effect.map(s.health.status, (status) => status.ready),
      "ready"
    )

  it.effect("takes its primary's key, says ready to it, and is ready itself only once the group serves", () =>
    Effect.gen(function* () {
      const s = yield* worker({ pidFile: "/run/app.pid" })
      assert.deepStrictEqual(s.ticketKey, keys, "the group's key, with its age")
      assert.strictEqual(yield* s.fake.parent!.channel.receive, "ready")
      assert.deepStrictEqual(s.notes, [], "the primary tells systemd")
      assert.deepStrictEqual(s.supervisor.worker, Option.some({ slot: 1, primaryPid: 41 }))
      assert.deepStrictEqual(yield* s.supervisor.parentPid, Option.none(), "its primary is no predecessor")
      assert.deepStrictEqual(yield* s.health.status, { ready: false, live: true, reasons: ["starting"] })
      yield* s.fake.parent!.channel.send("serving")
      yield* ready(s)
      assert.isTrue(s.lines.some((l) => l.message === "effect-grace: ready" && l.annotations.slot === 1))
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.events, ["drained"])
      assert.deepStrictEqual(s.fake.pidFile, [], "the PID file is the primary's")
    })
  )

  it.effect("paused by its primary: unready, its servers stop accepting and drain; resumed: they accept again", () =>
    Effect.gen(function* () {
      const s = yield* worker()
      yield* s.fake.parent!.channel.send("serving")
      yield* ready(s)
      yield* s.fake.parent!.channel.send("pause")
      yield* until(() => s.events.includes("paused"), "paused")
      assert.deepStrictEqual(yield* s.health.status, { ready: false, live: true, reasons: ["handed off"] })
      yield* s.fake.parent!.channel.send("resume")
      yield* until(() => s.events.includes("resumed"), "resumed")
      yield* ready(s)
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.events, ["paused", "resumed", "drained"])
    })
  )

  it.effect("terminated while paused: no shutdown delay, nothing to systemd, the drain goes on", () =>
    Effect.gen(function* () {
      const s = yield* worker({ shutdownDelay: "2 seconds" })
      yield* s.fake.parent!.channel.send("serving")
      yield* ready(s)
      yield* s.fake.parent!.channel.send("pause")
      yield* until(() => s.events.includes("paused"), "paused")
      yield* s.fake.signal("SIGTERM")
      yield* until(() => s.logs().includes("effect-grace: draining"), "the drain at once")
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.events, ["paused", "drained"], "never closing: it accepts nothing already")
      assert.deepStrictEqual(s.notes, [])
    })
  )

  it.effect("told to terminate by its primary, it drains; systemd's SIGTERM to every process then forces nothing", () =>
    Effect.gen(function* () {
      const drainGate = yield* Deferred.make<void>()
      const s = yield* worker({ drainGate })
      yield* s.fake.parent!.channel.send("serving")
      yield* ready(s)
      yield* s.fake.parent!.channel.send("terminate")
      yield* until(() => s.logs().includes("effect-grace: draining"), "the drain")
      assert.isTrue(
        s.lines.some((l) => l.message === "effect-grace: termination requested" && l.annotations.by === "primary")
      )
      // systemd's stop signals the whole control group, during the drain: this worker's first signal, not its second.
      yield* s.fake.signal("SIGTERM")
      yield* until(
        () => s.lines.filter((l) => l.message === "effect-grace: termination requested").length === 2,
        "the signal taken"
      )
      yield* Deferred.succeed(drainGate, undefined)
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.fake.forced, [], "no forced exit")
      assert.notInclude(s.events, "forced")
    })
  )

  it.effect("its primary gone, it drains and its run ends", () =>
    Effect.gen(function* () {
      const s = yield* worker()
      yield* s.fake.parent!.channel.send("serving")
      yield* ready(s)
      yield* s.fake.parent!.exits
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.events, ["drained"])
      assert.isTrue(
        s.lines.some((l) => l.message === "effect-grace: termination requested" && l.annotations.by === "primary")
      )
    })
  )

  it.effect("takes every signal from its start; SIGHUP and SIGUSR2 are its primary's to act on: it says so", () =>
    Effect.gen(function* () {
      const s = yield* worker()
      assert.sameMembers([...s.fake.installed], ["SIGHUP", "SIGUSR2", "SIGTERM", "SIGINT"])
      assert.strictEqual(yield* s.fake.parent!.channel.receive, "ready")
      for (const signal of ["SIGHUP", "SIGUSR2"] as const) yield* s.fake.signal(signal)
      yield* until(
        () => s.logs().filter((l) => l.includes("ignored: a worker is restarted by its primary")).length === 2,
        "both said"
      )
      // Nothing was asked of the primary: a roll is its own to start.
      assert.deepStrictEqual(yield* s.fake.parent!.channel.waiting, [])
      assert.strictEqual(s.fake.children.length, 0)
      assert.isUndefined(s.fiber.pollUnsafe(), "serving on")
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("restart asks its primary for a rolling restart, and is answered with the primary's pid", () =>
    Effect.gen(function* () {
      const s = yield* worker()
      assert.strictEqual(yield* s.fake.parent!.channel.receive, "ready")
      assert.strictEqual(yield* s.supervisor.restart, 41)
      assert.strictEqual(yield* s.fake.parent!.channel.receive, "roll")
      assert.strictEqual(s.fake.children.length, 0, "a worker starts no successor")
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
    })
  )
})

describe("a worker's link to its primary", () => {
  // The primary's end of the channel, and the fds it has sent over the worker's second socket.
  const linked = Effect.gen(function* () {
    const [primaryEnd, workerEnd] = yield* FakeOs.channelPair
    const fds: Array<number> = []
    const parent: Os.Parent = {
      pid: 41,
      channel: workerEnd,
      receiveFd: () =>
        fds.length > 0 ? Effect.succeed(fds.shift()!) : Effect.fail({ syscall: "recvmsg", code: "EAGAIN", errno: 11 })
    }
    const link = yield* Parent.connect(parent, { EFFECT_GRACE_TICKET_KEYS: "channel" })
    return { primaryEnd, fds, link }
  })
  const http = { address: "127.0.0.1:0", name: "http", backlog: 511, nth: 0 }

  it.effect("the ticket key, then the commands in order; the channel closing ends them: the primary has gone", () =>
    Effect.gen(function* () {
      const { primaryEnd, link } = yield* linked
      assert.strictEqual(link.pid, 41)
      for (const line of ["ticket-keys abc", "serving", "pause", "junk", "resume"]) yield* primaryEnd.send(line)
      assert.strictEqual(yield* link.ticketKey, "abc")
      const commands = [yield* Queue.take(link.commands), yield* Queue.take(link.commands)]
      assert.deepStrictEqual([...commands, yield* Queue.take(link.commands)], ["serving", "pause", "resume"])
      yield* link.signalReady
      yield* link.roll
      assert.deepStrictEqual([yield* primaryEnd.receive, yield* primaryEnd.receive], ["ready", "roll"])
      yield* primaryEnd.close
      yield* link.exited
      assert.isTrue(Exit.isFailure(yield* Effect.exit(Queue.take(link.commands))), "no command after it")
    })
  )

  it.effect("a listen ask: its line with a key; `listened` takes the fd sent, `listen-failed` gives the reason", () =>
    Effect.gen(function* () {
      const { primaryEnd, fds, link } = yield* linked
      const first = yield* Effect.forkChild(link.listen(http))
      const asked = JSON.parse((yield* primaryEnd.receive).slice("listen ".length))
      assert.deepStrictEqual(asked, { key: 0, ...http })
      const second = yield* Effect.forkChild(Effect.flip(link.listen({ ...http, address: "nowhere" })))
      assert.strictEqual(JSON.parse((yield* primaryEnd.receive).slice("listen ".length)).key, 1)
      // Answered out of order, and one answer for no ask at all.
      const reason = { _tag: "InvalidAddress", address: "nowhere", detail: "no port" }
      yield* primaryEnd.send(`listen-failed ${JSON.stringify({ key: 1, reason })}`)
      yield* primaryEnd.send(`listened ${JSON.stringify({ key: 7 })}`)
      const error = yield* Fiber.join(second)
      assert.deepStrictEqual(error, { _tag: "InvalidAddress", address: "nowhere", detail: "no port" })
      // The worker's Listeners gives it as its own error.
      const listeners = yield* Listeners.make([], { remote: () => Effect.fail(error) })
      const failed = yield* Effect.flip(Effect.scoped(listeners.listen("127.0.0.1:0")))
      assert.deepStrictEqual(failed.reason, new Listeners.InvalidAddress({ address: "nowhere", detail: "no port" }))
      fds.push(9)
      yield* primaryEnd.send(`listened ${JSON.stringify({ key: 0 })}`)
      assert.strictEqual(yield* Fiber.join(first), 9)
    })
  )

  it.effect(
    "`lend` takes the fd sent, `reclaim` follows in order; a lend with no fd is no loan; both end with it",
    () =>
      Effect.gen(function* () {
        const { primaryEnd, fds, link } = yield* linked
        fds.push(12)
        yield* primaryEnd.send(`lend ${JSON.stringify({ loan: 5 })}`)
        yield* primaryEnd.send(`lend ${JSON.stringify({ loan: 6 })}`)
        yield* primaryEnd.send(`reclaim ${JSON.stringify({ loan: 5 })}`)
        yield* primaryEnd.send(`reclaim {"loan":"x"}`)
        assert.deepStrictEqual(yield* Queue.take(link.loans), { _tag: "Lend", loan: 5, fd: 12 })
        assert.deepStrictEqual(yield* Queue.take(link.loans), { _tag: "Reclaim", loan: 5 }, "no fd for loan 6: none")
        yield* primaryEnd.close
        assert.isTrue(Exit.isFailure(yield* Effect.exit(Queue.take(link.loans))), "no loan after the primary has gone")
      })
  )

  it.effect("`listened` with no fd to take fails the ask with why; the primary gone fails the asks waiting", () =>
    Effect.gen(function* () {
      const { primaryEnd, link } = yield* linked
      const first = yield* Effect.forkChild(Effect.flip(link.listen(http)))
      yield* primaryEnd.receive
      yield* primaryEnd.send(`listened ${JSON.stringify({ key: 0 })}`)
      assert.deepInclude(yield* Fiber.join(first), { _tag: "BindFailed", code: "EAGAIN", syscall: "recvmsg" })
      const waiting = yield* Effect.forkChild(Effect.flip(link.listen(http)))
      yield* primaryEnd.receive
      yield* primaryEnd.close
      assert.deepInclude(yield* Fiber.join(waiting), { _tag: "BindFailed", code: "ECONNRESET" })
      assert.isUndefined(yield* link.ticketKey, "never sent: none")
    })
  )
})
