/**
 * The supervisor over a fake operating system, under a TestClock: every
 * transition and refusal, in milliseconds. `test/Supervisor.test.ts` checks
 * the same guarantees with real processes.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as TestClock from "effect/testing/TestClock"
import * as Notify from "../src/Notify.ts"
import * as Supervisor from "../src/Supervisor.ts"
import * as Os from "../src/internal/os.ts"
import * as Tickets from "../src/internal/tickets.ts"
import * as Program from "../src/internal/program.ts"
import * as FakeOs from "./support/os.ts"
import { supervised, until, untilEffect } from "./support/supervised.ts"
import type { Line, SupervisedOptions } from "./support/supervised.ts"

const reasonOf = (effect: Effect.Effect<number, Supervisor.RestartError>) =>
  Effect.map(Effect.flip(effect), (error) => error.reason)

/** The lines that said a restart was kept for later. */
const queued = (s: { readonly lines: ReadonlyArray<Line> }) =>
  s.lines.filter((line) => line.message === "effect-grace: restart queued")

/** The next restart this process passed on to `successor`: its ask and kind. */
const passedOn = (successor: FakeOs.FakeChild) =>
  Effect.gen(function* () {
    while (true) {
      const line = yield* successor.channel.receive
      if (line.startsWith("restart ")) return JSON.parse(line.slice("restart ".length)) as { key: number; kind: string }
    }
  })

describe("Supervisor, on a fake OS", () => {
  it.effect("a restart signal: RELOADING, a successor, MAINPID with READY once it is ready, then the drain", () =>
    Effect.gen(function* () {
      const s = yield* supervised({ pidFile: "/run/app.pid" })
      assert.deepStrictEqual(s.fake.pidFile, ["write /run/app.pid"])
      yield* s.fake.signal("SIGUSR2")
      const successor = yield* s.fake.spawned
      assert.deepStrictEqual(s.notes.slice(0, 1), ["READY=1"])
      assert.match(s.notes[1]!, /^RELOADING=1\nMONOTONIC_USEC=\d+$/)
      assert.deepStrictEqual(s.events, [], "still serving while the successor starts")
      yield* successor.sayReady
      yield* Fiber.join(s.fiber)
      assert.strictEqual(s.notes[2], "MAINPID=200\nREADY=1")
      assert.strictEqual(s.notes.length, 3)
      assert.strictEqual(successor.state, "released")
      assert.deepStrictEqual(s.events, ["drained"])
      // The successor has written its own pid: the old process leaves the file alone.
      assert.deepStrictEqual(s.fake.pidFile, ["write /run/app.pid"])
    })
  )

  it.effect(
    "restarts asked during one are kept: one more after it, on the process that serves then, for them all",
    () =>
      Effect.gen(function* () {
        const drainGate = yield* Deferred.make<void>()
        const s = yield* supervised({ drainGate })
        const first = yield* Effect.forkChild(s.supervisor.restart)
        const successor = yield* s.fake.spawned
        const second = yield* Effect.forkChild(s.supervisor.restart)
        yield* s.fake.signal("SIGUSR2")
        const third = yield* Effect.forkChild(s.supervisor.restart)
        yield* until(() => queued(s).length === 3, "each kept, and said")
        assert.deepStrictEqual(queued(s)[0]!.annotations, {
          pid: 100,
          kind: "upgrade",
          waitingFor: "the restart under way"
        })
        yield* successor.sayReady
        assert.strictEqual(yield* Fiber.join(first), 200)
        // Handed off: the one restart kept goes to the successor, which serves now; every caller has its outcome.
        const passed = yield* passedOn(successor)
        assert.strictEqual(passed.kind, "upgrade")
        yield* successor.channel.send(`restarted ${JSON.stringify({ key: passed.key, pid: 300 })}`)
        assert.deepStrictEqual([yield* Fiber.join(second), yield* Fiber.join(third)], [300, 300])
        // Asked once handed off: passed on too, its failure there the caller's.
        const after = yield* Effect.forkChild(reasonOf(s.supervisor.restart))
        const again = yield* passedOn(successor)
        const reason = { _tag: "ExitedBeforeReady", pid: 301, code: 1, signal: null }
        yield* successor.channel.send(`restart-failed ${JSON.stringify({ key: again.key, reason })}`)
        assert.deepStrictEqual(
          yield* Fiber.join(after),
          new Supervisor.ExitedBeforeReady({ pid: 301, code: 1, signal: null })
        )
        assert.strictEqual(s.fake.children.length, 1, "this process started one successor for them all")
        yield* Deferred.succeed(drainGate, undefined)
        yield* Fiber.join(s.fiber)
      })
  )

  it.effect("a storm of restart signals: one restart under way, one kept, each signal logged", () =>
    Effect.gen(function* () {
      const drainGate = yield* Deferred.make<void>()
      const s = yield* supervised({ drainGate })
      for (let i = 0; i < 30; i++) yield* s.fake.signal("SIGUSR2")
      const successor = yield* s.fake.spawned
      yield* until(() => queued(s).length === 29, "29 kept, as one")
      yield* successor.sayReady
      const passed = yield* passedOn(successor)
      yield* successor.channel.send(`restarted ${JSON.stringify({ key: passed.key, pid: 300 })}`)
      yield* until(() => s.logs().filter((l) => l === "effect-grace: restart requested").length === 30, "all seen")
      assert.strictEqual(s.fake.children.length, 1)
      // Nothing more was passed on: the 29 were one.
      yield* Deferred.succeed(drainGate, undefined)
      yield* Fiber.join(s.fiber)
      yield* successor.channel.close
      assert.isTrue(Exit.isFailure(yield* Effect.exit(passedOn(successor))), "one restart passed on, no more")
    })
  )

  it.effect("a restart before ready is kept, and runs once the process is ready", () =>
    Effect.gen(function* () {
      const gate = yield* Deferred.make<void>()
      const s = yield* supervised({ gate })
      const early = yield* Effect.forkChild(s.supervisor.restart)
      yield* until(() => queued(s).length === 1, "kept")
      assert.strictEqual(queued(s)[0]!.annotations.waitingFor, "the start-up")
      assert.strictEqual(s.fake.children.length, 0)
      assert.deepStrictEqual(s.notes, [])
      yield* Deferred.succeed(gate, undefined)
      const successor = yield* s.fake.spawned
      assert.strictEqual(s.notes[0], "READY=1", "ready first, then the restart")
      yield* successor.sayReady
      assert.strictEqual(yield* Fiber.join(early), 200)
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("a successor keeps a restart asked while its parent drains, and runs it once the parent has exited", () =>
    Effect.gen(function* () {
      const s = yield* supervised({ parentPid: 41 })
      const restart = yield* Effect.forkChild(s.supervisor.restart)
      yield* until(() => queued(s).length === 1, "kept")
      assert.strictEqual(queued(s)[0]!.annotations.waitingFor, "the parent (pid 41) to exit")
      assert.strictEqual(s.fake.children.length, 0)
      yield* s.fake.parent!.exits
      yield* (yield* s.fake.spawned).sayReady
      assert.strictEqual(yield* Fiber.join(restart), 200)
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("a restart its parent passed on runs at once, though the parent drains; its outcome goes back to it", () =>
    Effect.gen(function* () {
      const s = yield* supervised({ parentPid: 41 })
      yield* s.fake.parent!.channel.send("junk")
      yield* s.fake.parent!.channel.send(`restart ${JSON.stringify({ key: 7, kind: "upgrade" })}`)
      const successor = yield* s.fake.spawned
      assert.isTrue(
        s.lines.some((l) => l.message === "effect-grace: restart requested" && l.annotations.by === "parent")
      )
      assert.deepStrictEqual(queued(s), [], "the parent, which waits for the outcome, is not waited for")
      yield* successor.sayReady
      let line = yield* s.fake.parent!.channel.receive
      while (!line.startsWith("restarted ")) line = yield* s.fake.parent!.channel.receive
      assert.deepStrictEqual(JSON.parse(line.slice("restarted ".length)), { key: 7, pid: 200 })
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("a successor that exits before ready is killed, the error names its pid, READY=1 again; next works", () =>
    Effect.gen(function* () {
      const s = yield* supervised()
      const restart = yield* Effect.forkChild(Effect.flip(s.supervisor.restart))
      const failed = yield* s.fake.spawned
      yield* failed.exit({ code: 1, signal: null })
      const error = yield* Fiber.join(restart)
      assert.deepStrictEqual(error.reason, new Supervisor.ExitedBeforeReady({ pid: failed.pid, code: 1, signal: null }))
      assert.strictEqual(failed.state, "exited")
      assert.strictEqual(s.notes.at(-1), "READY=1", "systemd hears the reload is over")
      assert.isTrue(s.warnings().some((w) => w.reason === "ExitedBeforeReady"))
      assert.deepStrictEqual(s.events, [], "still serving")
      const next = yield* Effect.forkChild(s.supervisor.restart)
      yield* (yield* s.fake.spawned).sayReady
      assert.strictEqual(yield* Fiber.join(next), 201)
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("a successor not ready within readyTimeout is killed then, and not before (TestClock)", () =>
    Effect.gen(function* () {
      const s = yield* supervised({ readyTimeout: "5 seconds" })
      const restart = yield* Effect.forkChild(Effect.flip(s.supervisor.restart))
      const hung = yield* s.fake.spawned
      yield* TestClock.adjust("4999 millis")
      assert.isUndefined(restart.pollUnsafe())
      assert.strictEqual(hung.state, "running")
      yield* TestClock.adjust("1 millis")
      const error = yield* Fiber.join(restart)
      assert.strictEqual(error.reason._tag, "NotReadyInTime")
      assert.strictEqual(hung.state, "killed")
      assert.strictEqual(s.notes.at(-1), "READY=1")
      assert.isTrue(s.warnings().some((w) => w.reason === "NotReadyInTime"))
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("SIGTERM while the successor waits to be ready: killed, the caller refused, STOPPING, never MAINPID", () =>
    Effect.gen(function* () {
      const s = yield* supervised({ pidFile: "/run/app.pid" })
      const restart = yield* Effect.forkChild(Effect.flip(s.supervisor.restart))
      const successor = yield* s.fake.spawned
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
      assert.strictEqual(successor.state, "killed")
      assert.strictEqual((yield* Fiber.join(restart)).reason._tag, "NotServing")
      assert.deepStrictEqual(s.notes.slice(2), ["STOPPING=1"], "never MAINPID, nothing after STOPPING=1")
      assert.deepStrictEqual(s.events, ["drained"])
      assert.deepStrictEqual(s.fake.pidFile, ["write /run/app.pid", "remove /run/app.pid"])
    })
  )

  it.effect("SIGTERM while the successor is being spawned: it is killed as soon as it exists", () =>
    Effect.gen(function* () {
      const spawnGate = yield* Deferred.make<void>()
      const s = yield* supervised({ spawnGate })
      yield* s.fake.signal("SIGUSR2")
      yield* until(() => s.notes.length === 2, "RELOADING")
      yield* s.fake.signal("SIGTERM")
      yield* Deferred.succeed(spawnGate, undefined)
      yield* Fiber.join(s.fiber)
      assert.strictEqual(s.fake.children[0]?.state, "killed")
      assert.deepStrictEqual(s.notes.slice(2), ["STOPPING=1"])
    })
  )

  it.effect("SIGTERM once the successor is ready: the hand-off stands, and the drain goes on", () =>
    Effect.gen(function* () {
      const drainGate = yield* Deferred.make<void>()
      const s = yield* supervised({ drainGate })
      yield* s.fake.signal("SIGUSR2")
      const successor = yield* s.fake.spawned
      yield* successor.sayReady
      yield* until(() => s.notes.length === 3, "MAINPID")
      yield* s.fake.signal("SIGTERM")
      yield* until(() => s.logs().includes("effect-grace: termination requested"), "the signal handled")
      yield* Deferred.succeed(drainGate, undefined)
      yield* Fiber.join(s.fiber)
      assert.strictEqual(successor.state, "released")
      assert.deepStrictEqual(s.fake.forced, [], "one signal during a hand-off's drain does not force")
      assert.notInclude(s.notes, "STOPPING=1")
    })
  )

  it.effect("takes SIGHUP, SIGUSR2, SIGTERM and SIGINT first; SIGHUP restarts a single process as SIGUSR2 does", () =>
    Effect.gen(function* () {
      const s = yield* supervised({ restartSignals: ["SIGUSR1"] })
      assert.sameMembers([...s.fake.installed], ["SIGUSR1", "SIGHUP", "SIGUSR2", "SIGTERM", "SIGINT"])
      yield* s.fake.signal("SIGHUP")
      yield* (yield* s.fake.spawned).sayReady
      yield* Fiber.join(s.fiber)
      assert.isTrue(
        s.lines.some((l) => l.message === "effect-grace: restart requested" && l.annotations.by === "SIGHUP")
      )
    })
  )

  it.effect(
    "a finalizer of the application that fails during the drain: logged with its cause, and the end comes",
    () =>
      Effect.gen(function* () {
        const fake = yield* FakeOs.make()
        const errors: Array<string> = []
        const logger = Logger.make(({ logLevel, message, cause }) => {
          if (logLevel === "Error") errors.push(`${String(message)} ${Cause.pretty(cause)}`)
        })
        const App = Layer.effectDiscard(Effect.addFinalizer(() => Effect.die(new Error("pool would not close"))))
        const run = yield* Effect.forkChild(
          Supervisor.run(App).pipe(
            Effect.provideService(Os.Os, fake.os),
            Effect.provide(Notify.layerNoop),
            Effect.provide(Logger.layer([logger]))
          )
        )
        yield* fake.signal("SIGTERM")
        yield* Fiber.join(run)
        assert.isTrue(
          errors.some((e) => e.includes("a finalizer of the application failed") && e.includes("would not"))
        )
      })
  )

  it.effect("during a drain, SIGUSR2 is refused and logged; a second SIGTERM forces the exit", () =>
    Effect.gen(function* () {
      const drainGate = yield* Deferred.make<void>()
      const s = yield* supervised({ drainGate })
      yield* s.fake.signal("SIGTERM")
      yield* until(() => s.notes.includes("STOPPING=1"), "STOPPING")
      yield* s.fake.signal("SIGUSR2")
      yield* until(() => s.warnings().some((w) => w.reason === "NotServing"), "the refusal logged")
      assert.strictEqual(s.fake.children.length, 0)
      assert.deepStrictEqual(s.fake.forced, [])
      yield* s.fake.signal("SIGTERM")
      yield* until(() => s.fake.forced.length === 1, "the forced exit")
      assert.deepStrictEqual(s.fake.forced, ["SIGTERM"])
      yield* Deferred.succeed(drainGate, undefined)
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("with a shutdown delay, SIGTERM: unready at once, the servers closing, the drain once it has passed", () =>
    Effect.gen(function* () {
      const drainGate = yield* Deferred.make<void>()
      const s = yield* supervised({ shutdownDelay: "2 seconds", drainGate })
      assert.deepStrictEqual(yield* s.health.status, { ready: true, live: true, reasons: [] })
      yield* s.fake.signal("SIGTERM")
      yield* until(() => s.events.includes("closing"), "the servers closing")
      assert.deepStrictEqual(yield* s.health.status, { ready: false, live: true, reasons: ["stopping"] })
      assert.deepStrictEqual(s.notes.slice(1), ["STOPPING=1"])
      yield* TestClock.adjust("1999 millis")
      assert.notInclude(s.logs(), "effect-grace: draining")
      yield* TestClock.adjust("1 millis")
      yield* until(() => s.logs().includes("effect-grace: draining"), "the drain")
      assert.isTrue((yield* s.health.status).live, "live until the process exits")
      yield* Deferred.succeed(drainGate, undefined)
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.events, ["closing", "drained"])
    })
  )

  it.effect("without a delay the drain begins at once; a hand-off has no delay either", () =>
    Effect.gen(function* () {
      const s = yield* supervised({ shutdownDelay: "2 seconds" })
      yield* s.fake.signal("SIGUSR2")
      yield* (yield* s.fake.spawned).sayReady
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.events, ["drained"], "a hand-off leaves the successor serving: no delay")
      assert.deepStrictEqual(yield* s.health.status, { ready: false, live: true, reasons: ["handed off"] })
      const t = yield* supervised()
      yield* t.fake.signal("SIGTERM")
      yield* Fiber.join(t.fiber)
      assert.deepStrictEqual(t.events, ["drained"])
    })
  )

  it.effect("readiness: starting, then ready; the application marks itself unready and ready again", () =>
    Effect.gen(function* () {
      const gate = yield* Deferred.make<void>()
      const s = yield* supervised({ gate })
      assert.deepStrictEqual(yield* s.health.status, { ready: false, live: true, reasons: ["starting"] })
      yield* Deferred.succeed(gate, undefined)
      yield* until(() => s.notes.includes("READY=1"), "ready")
      assert.isTrue((yield* s.health.status).ready)
      yield* s.health.unready("database")
      assert.deepStrictEqual(yield* s.health.status, { ready: false, live: true, reasons: ["database"] })
      yield* s.health.ready("database")
      assert.isTrue((yield* s.health.status).ready)
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("as PID 1 a restart is refused, with the reason, and logged; termination drains as anywhere", () =>
    Effect.gen(function* () {
      const s = yield* supervised({ pid: 1 })
      // Said once ready, before any restart is asked for.
      const ready = s.lines.find((line) => line.message === "effect-grace: ready")
      assert.strictEqual(ready?.annotations.restarts, "unavailable")
      assert.include(String(ready?.annotations.reason), "PID 1")
      const refused = yield* reasonOf(s.supervisor.restart)
      assert.strictEqual(refused._tag, "RestartUnsupported")
      assert.include((refused as Supervisor.RestartUnsupported).detail, "PID 1")
      yield* s.fake.signal("SIGUSR2")
      yield* until(
        () => s.warnings().filter((w) => w.reason === "RestartUnsupported").length === 2,
        "both refusals logged"
      )
      assert.strictEqual(s.fake.children.length, 0)
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.events, ["drained"])
    })
  )

  it.effect("as PID 1, a second SIGTERM ends the drain and the shutdown delay at once", () =>
    Effect.gen(function* () {
      const drainGate = yield* Deferred.make<void>()
      const s = yield* supervised({ pid: 1, drainGate, shutdownDelay: "10 seconds" })
      yield* s.fake.signal("SIGTERM")
      yield* until(() => s.events.includes("closing"), "the shutdown delay")
      yield* s.fake.signal("SIGTERM")
      // Neither the delay's ten seconds nor the drain's gate are waited for: the program ends by itself.
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.events, ["closing", "forced", "drained"])
      assert.deepStrictEqual(s.fake.forced, ["SIGTERM"])
    })
  )

  it.effect("layerStub gives an application a supervisor to test its own code against", () =>
    Effect.gen(function* () {
      const calls: Array<"restart" | "terminate"> = []
      const refused = new Supervisor.RestartError({ reason: new Supervisor.NotServing({ state: "draining" }) })
      const supervisor = yield* Effect.provide(
        Effect.gen(function* () {
          return yield* Supervisor.Supervisor
        }),
        Supervisor.layerStub({ restart: Effect.fail(refused), calls })
      )
      assert.strictEqual(yield* Effect.flip(supervisor.restart), refused)
      yield* supervisor.terminate
      assert.deepStrictEqual(calls, ["restart", "terminate"])
    })
  )

  it.effect("the compile cache: flushed once ready, and named to every successor; off when told", () =>
    Effect.gen(function* () {
      const s = yield* supervised()
      assert.deepStrictEqual(s.fake.flushed, ["flush"])
      yield* s.fake.signal("SIGUSR2")
      const child = yield* s.fake.spawned
      assert.strictEqual(child.env.NODE_COMPILE_CACHE, "/tmp/compile-cache")
      yield* child.sayReady
      yield* Fiber.join(s.fiber)
      const off = yield* supervised({ compileCache: false })
      yield* off.fake.signal("SIGUSR2")
      const plain = yield* off.fake.spawned
      assert.isUndefined(plain.env.NODE_COMPILE_CACHE)
      assert.deepStrictEqual(off.fake.flushed, [])
      yield* plain.sayReady
      yield* Fiber.join(off.fiber)
    })
  )

  it.effect("SIGTERM during start-up: the start-up is cut, what it built closed, STOPPING=1, never READY=1", () =>
    Effect.gen(function* () {
      const gate = yield* Deferred.make<void>()
      const s = yield* supervised({ gate, pidFile: "/run/app.pid" })
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.events, ["drained"], "the layers built so far are closed")
      assert.deepStrictEqual(s.notes, ["STOPPING=1"])
      // Opening the gate now builds nothing more and announces nothing.
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.yieldNow
      assert.deepStrictEqual(s.notes, ["STOPPING=1"])
      assert.deepStrictEqual(s.fake.pidFile, ["remove /run/app.pid"], "no PID file written, none left")
      assert.deepStrictEqual(yield* s.health.status, { ready: false, live: true, reasons: ["stopping"] })
      assert.deepStrictEqual(
        s.logs().filter((line) => line.startsWith("effect-grace:")),
        ["effect-grace: termination requested", "effect-grace: draining", "effect-grace: stopped"]
      )
    })
  )

  it.effect("a termination called during start-up ends it the same way; a restart then is refused", () =>
    Effect.gen(function* () {
      const gate = yield* Deferred.make<void>()
      const s = yield* supervised({ gate })
      yield* s.supervisor.terminate
      yield* Fiber.join(s.fiber)
      const refused = yield* reasonOf(s.supervisor.restart)
      assert.deepStrictEqual([refused._tag, (refused as Supervisor.NotServing).state], ["NotServing", "draining"])
      assert.deepStrictEqual(s.notes, ["STOPPING=1"])
    })
  )

  it.effect("a start-up that fails: the error for whoever runs it, nothing drained or announced", () =>
    Effect.gen(function* () {
      const fake = yield* FakeOs.make()
      const notes: Array<string> = []
      const logs: Array<string> = []
      const closed: Array<string> = []
      const App = Layer.effectDiscard(
        Effect.andThen(
          Effect.addFinalizer(() => Effect.sync(() => void closed.push("pool"))),
          Effect.fail("no database" as const)
        )
      )
      const exit = yield* Supervisor.run(App).pipe(
        Effect.provideService(Os.Os, fake.os),
        Effect.provide(Notify.layerCallback((message) => Effect.sync(() => void notes.push(message)))),
        Effect.provide(Logger.layer([Logger.make(({ message }) => void logs.push(String(message)))])),
        Effect.exit
      )
      assert.deepStrictEqual(exit, Exit.fail("no database"))
      assert.deepStrictEqual(closed, ["pool"], "what it built is closed")
      assert.deepStrictEqual(notes, [])
      assert.notInclude(logs, "effect-grace: draining")
      assert.notInclude(logs, "effect-grace: stopped")
    })
  )

  it.effect("a start-up failure is one line; its cause with it under GRACE_DEBUG, read through Config", () =>
    Effect.gen(function* () {
      const failing = (env: Record<string, string>) =>
        Effect.gen(function* () {
          const fake = yield* FakeOs.make()
          const lines: Array<{ message: string; cause: string }> = []
          const logger = Logger.make(({ message, cause }) => {
            lines.push({ message: String(message), cause: Cause.pretty(cause) })
          })
          yield* Supervisor.run(Layer.effectDiscard(Effect.fail(new Error("no database")))).pipe(
            Effect.provideService(Os.Os, fake.os),
            Effect.provide(Notify.layerNoop),
            Effect.provide(Logger.layer([logger])),
            Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown(env)),
            Effect.exit
          )
          return lines.find((line) => line.message.startsWith("effect-grace: cannot start"))!
        })
      const plain = yield* failing({})
      assert.strictEqual(plain.message, "effect-grace: cannot start: no database")
      assert.notInclude(plain.cause, "Error: no database")
      const debug = yield* failing({ GRACE_DEBUG: "1" })
      assert.strictEqual(debug.message, plain.message)
      assert.include(debug.cause, "Error: no database")
    })
  )

  it.effect(
    "EFFECT_GRACE_WORKER set with no primary: one warning naming it; a single process, restarting on SIGUSR2",
    () =>
      Effect.gen(function* () {
        const s = yield* supervised({ parentValues: { EFFECT_GRACE_WORKER: "0" } })
        const warned = s.warnings().filter((line) => line.message.includes("EFFECT_GRACE_WORKER"))
        assert.strictEqual(warned.length, 1)
        assert.include(warned[0]!.message, 'EFFECT_GRACE_WORKER="0" is ignored: no primary started this process')
        assert.isTrue(Option.isNone(s.supervisor.worker), "no worker")
        yield* s.fake.signal("SIGUSR2")
        const successor = yield* s.fake.spawned
        assert.isFalse(successor.worker, "a successor, as a single process starts")
        yield* successor.sayReady
        yield* Fiber.join(s.fiber)
        assert.isTrue(s.logs().includes("effect-grace: successor ready"))
      })
  )

  it.effect("the successor protocol, parent side: the child gets the listeners and the ticket keys first", () =>
    Effect.gen(function* () {
      const s = yield* supervised()
      yield* s.fake.signal("SIGUSR2")
      const child = yield* s.fake.spawned
      assert.strictEqual(child.env.EFFECT_GRACE_TICKET_KEYS, "channel")
      const line = yield* child.channel.receive
      assert.strictEqual(line, `ticket-keys ${Tickets.encode(s.ticketKey)}`)
      yield* child.sayReady
      yield* Fiber.join(s.fiber)
      assert.strictEqual(child.state, "released")
    })
  )

  it.effect("the successor protocol, child side: the parent's keys before the application, ready once it serves", () =>
    Effect.gen(function* () {
      const keys: Tickets.TicketKey = { key: Buffer.alloc(48, 7), createdAt: 0 }
      const s = yield* supervised({
        parentPid: 41,
        parentValues: { EFFECT_GRACE_TICKET_KEYS: "channel" },
        keysFrom: keys
      })
      assert.deepStrictEqual(s.ticketKey, keys, "the application's servers use the parent's key, with its age")
      assert.strictEqual(yield* s.fake.parent!.channel.receive, "ready")
      assert.deepStrictEqual(s.notes, [], "the parent tells systemd, not the successor")
      assert.deepStrictEqual(yield* s.supervisor.parentPid, Option.some(41))
      yield* s.fake.parent!.exits
      yield* untilEffect(Effect.map(s.supervisor.parentPid, Option.isNone), "the parent's exit seen")
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("a parent that goes before sending its keys: the successor makes its own and starts", () =>
    Effect.gen(function* () {
      const s = yield* supervised({
        parentPid: 41,
        parentValues: { EFFECT_GRACE_TICKET_KEYS: "channel" },
        parentGone: true
      })
      assert.strictEqual(s.ticketKey.key.length, 48)
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
    })
  )
})

describe("Supervisor, a successor on probation", () => {
  const onProbation = (options: SupervisedOptions = {}) =>
    Effect.gen(function* () {
      const s = yield* supervised({ probation: "5 seconds", pidFile: "/run/app.pid", ...options })
      const restart = yield* Effect.forkChild(Effect.result(s.supervisor.restart))
      const child = yield* s.fake.spawned
      yield* child.sayReady
      yield* until(() => s.events.includes("paused"), "the servers paused")
      return { ...s, child, restart }
    })

  it.effect("ready: the servers pause, READY=1 but no MAINPID yet; the window passes: MAINPID, released, drained", () =>
    Effect.gen(function* () {
      const s = yield* onProbation()
      assert.deepStrictEqual(s.notes.slice(2), ["READY=1"], "the reload is over; the main process stays this one")
      assert.strictEqual(s.child.state, "running")
      assert.isUndefined(s.restart.pollUnsafe(), "the caller waits for the window")
      assert.deepStrictEqual((yield* s.health.status).reasons, ["handed off"])
      yield* TestClock.adjust("4999 millis")
      assert.strictEqual(s.child.state, "running")
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(s.notes.slice(3), ["MAINPID=200"])
      assert.strictEqual(s.child.state, "released")
      assert.deepStrictEqual(s.events, ["paused", "drained"])
      assert.deepStrictEqual(yield* Fiber.join(s.restart), Result.succeed(200))
    })
  )

  for (const drainedFirst of [false, true]) {
    it.effect(
      `the successor exits within the window (${drainedFirst ? "after" : "before"} the old drain ended): handed back`,
      () =>
        Effect.gen(function* () {
          const drainGate = yield* Deferred.make<void>()
          const s = yield* onProbation({ drainGate })
          if (drainedFirst) yield* Deferred.succeed(drainGate, undefined)
          yield* TestClock.adjust("1 second")
          yield* s.child.exit({ code: 1, signal: null })
          const answer = yield* Fiber.join(s.restart)
          assert.isTrue(Result.isFailure(answer))
          const reason = (answer as Result.Failure<number, Supervisor.RestartError>).failure.reason
          assert.deepStrictEqual(reason, new Supervisor.HandedBack({ pid: 200, code: 1, signal: null }))
          assert.deepStrictEqual(s.events, ["paused", "resumed"])
          // Ready again once the hand-back is done (the servers accept, the PID file and systemd name this process).
          yield* untilEffect(
            Effect.map(s.health.status, (status) => status.ready),
            "ready again"
          )
          assert.deepStrictEqual(yield* s.health.status, { ready: true, live: true, reasons: [] })
          assert.deepStrictEqual(s.fake.pidFile, ["write /run/app.pid", "write /run/app.pid"], "named again")
          assert.match(s.notes.at(-1)!, /^STATUS=serving again: the successor \(pid 200\) exited with code 1/)
          assert.notInclude(s.notes.join("\n"), "MAINPID", "systemd never heard of the successor as main")
          assert.isTrue(s.warnings().some((w) => w.reason === "HandedBack"))
          // The window's timer is gone; the next restart works.
          yield* TestClock.adjust("10 seconds")
          assert.isUndefined(s.fiber.pollUnsafe(), "serving on")
          const next = yield* Effect.forkChild(s.supervisor.restart)
          const second = yield* s.fake.spawned
          yield* second.sayReady
          yield* TestClock.adjust("5 seconds")
          assert.strictEqual(yield* Fiber.join(next), 201)
          if (!drainedFirst) yield* Deferred.succeed(drainGate, undefined)
          yield* Fiber.join(s.fiber)
        })
    )
  }

  it.effect("a successor that died as its window ended (its exit not heard yet): never MAINPID, handed back", () =>
    Effect.gen(function* () {
      const s = yield* onProbation()
      // Exited, a zombie: the exit is on its way to this process.
      s.child.state = "exited"
      yield* TestClock.adjust("5 seconds")
      yield* Effect.yieldNow
      assert.isUndefined(s.fiber.pollUnsafe(), "no hand-off to a dead successor")
      yield* s.child.exit({ code: null, signal: "SIGSEGV" })
      const answer = yield* Fiber.join(s.restart)
      assert.isTrue(Result.isFailure(answer))
      assert.notInclude(s.notes.join("\n"), "MAINPID")
      assert.deepStrictEqual(s.events, ["paused", "resumed"])
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("a restart during the window is kept: passed on once the window has passed, to the successor", () =>
    Effect.gen(function* () {
      const drainGate = yield* Deferred.make<void>()
      const s = yield* onProbation({ drainGate })
      const kept = yield* Effect.forkChild(s.supervisor.restart)
      yield* s.fake.signal("SIGUSR2")
      yield* until(() => queued(s).length === 2, "both kept")
      assert.strictEqual(queued(s)[0]!.annotations.waitingFor, "the successor's probation")
      yield* TestClock.adjust("5 seconds")
      const passed = yield* passedOn(s.child)
      yield* s.child.channel.send(`restarted ${JSON.stringify({ key: passed.key, pid: 300 })}`)
      assert.strictEqual(yield* Fiber.join(kept), 300)
      assert.strictEqual(s.fake.children.length, 1)
      yield* Deferred.succeed(drainGate, undefined)
      yield* Fiber.join(s.fiber)
      // A successor that exits after its window is not watched: nothing is resumed.
      yield* s.child.exit({ code: 0, signal: null })
      assert.isFalse(s.events.includes("resumed"))
    })
  )

  it.effect("a restart kept during the window runs here when the successor dies in it", () =>
    Effect.gen(function* () {
      const s = yield* onProbation()
      const kept = yield* Effect.forkChild(s.supervisor.restart)
      yield* until(() => queued(s).length === 1, "kept")
      yield* s.child.exit({ code: 1, signal: null })
      assert.isTrue(Result.isFailure(yield* Fiber.join(s.restart)), "the first: handed back")
      // Serving again, this process runs what was kept for it: new code, maybe the fix.
      const next = yield* s.fake.spawned
      yield* next.sayReady
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual(yield* Fiber.join(kept), 201)
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("a termination refuses a restart kept for later, with the reason", () =>
    Effect.gen(function* () {
      const s = yield* onProbation()
      const kept = yield* Effect.forkChild(reasonOf(s.supervisor.restart))
      yield* until(() => queued(s).length === 1, "kept")
      yield* s.fake.signal("SIGTERM")
      assert.deepStrictEqual(yield* Fiber.join(kept), new Supervisor.NotServing({ state: "draining" }))
      yield* s.child.exit({ code: 0, signal: null })
      yield* Fiber.join(s.fiber)
    })
  )

  it.effect("SIGTERM during the window: the successor is told to terminate, this process drains, STOPPING=1", () =>
    Effect.gen(function* () {
      const s = yield* onProbation()
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
      assert.isTrue(s.child.terminated)
      assert.deepStrictEqual(s.notes.slice(3), ["STOPPING=1"])
      assert.notInclude(s.notes.join("\n"), "MAINPID")
      assert.deepStrictEqual(s.events, ["paused", "drained"])
      assert.isTrue(Result.isFailure(yield* Fiber.join(s.restart)))
      assert.deepStrictEqual(s.fake.pidFile, ["write /run/app.pid", "remove /run/app.pid"])
    })
  )
})

/**
 * The supervisor launched as programs compose it, under a stand-in for `Supervisor.runMain`'s program: ending the
 * program interrupts the fiber that runs it, as the real one does.
 */
const launched = <E>(
  launch: (App: Layer.Layer<never>, Reporter: Layer.Layer<never>) => Effect.Effect<unknown, E>,
  options: { readonly program?: boolean; readonly foreign?: number } = {}
) =>
  Effect.gen(function* () {
    const fake = yield* FakeOs.make({ foreign: options.foreign })
    const events: Array<string> = []
    const ended: Array<boolean> = []
    let fiber: Fiber.Fiber<unknown, E> | undefined
    let claimed = false
    const program: Program.Program = {
      claimSignals: () => (claimed ? false : (claimed = true)),
      releaseSignals: () => void (claimed = false),
      end: (graceful) => {
        ended.push(graceful)
        fiber?.interruptUnsafe()
      },
      stoppedGracefully: () => void ended.push(true),
      exitNow: () => {}
    }
    const closes = (name: string) =>
      Layer.effectDiscard(Effect.addFinalizer(() => Effect.sync(() => void events.push(name))))
    fiber = yield* Effect.forkChild(
      launch(closes("drained"), closes("reporter closed")).pipe(
        Effect.provideService(Os.Os, fake.os),
        options.program === false ? (effect) => effect : Effect.provideService(Program.Program, program),
        Effect.provide(Notify.layerCallback(() => Effect.void)),
        Effect.provide(Logger.layer([]))
      )
    )
    return { fake, events, ended, fiber }
  })

/** A restart by signal, its successor ready at once: the old program must end after its drain. */
const handOff = (fake: Effect.Success<ReturnType<typeof FakeOs.make>>) =>
  Effect.gen(function* () {
    yield* fake.signal("SIGUSR2")
    const child = yield* fake.spawned
    yield* child.sayReady
    // The default probation window (5 seconds) passes with the successor alive: then it is released.
    for (let second = 0; second < 10 && child.state !== "released"; second++) yield* TestClock.adjust("1 second")
    assert.strictEqual(child.state, "released")
    return child
  })

describe("Supervisor, composed as Effect programs are", () => {
  type Launch = (App: Layer.Layer<never>, Reporter: Layer.Layer<never>) => Effect.Effect<unknown, unknown>
  const cases: ReadonlyArray<readonly [string, Launch, ReadonlyArray<string>]> = [
    ["launched alone", (App) => Layer.launch(Supervisor.layer(App)), ["drained"]],
    [
      "merged beside another layer",
      (App, Reporter) => Layer.launch(Layer.mergeAll(Supervisor.layer(App), Reporter)),
      ["drained", "reporter closed"]
    ],
    [
      "provided with another layer (a tracer's)",
      (App, Reporter) => Layer.launch(Supervisor.layer(App)).pipe(Effect.provide(Reporter)),
      ["drained", "reporter closed"]
    ],
    [
      "as an Effect",
      (App, Reporter) => Supervisor.run(App).pipe(Effect.provide(Reporter)),
      ["drained", "reporter closed"]
    ]
  ]
  for (const [name, launch, closed] of cases) {
    it.effect(`${name}: a hand-off ends the program after the drain, every finalizer run, gracefully`, () =>
      Effect.gen(function* () {
        const s = yield* launched(launch)
        const child = yield* handOff(s.fake)
        const exit = yield* Fiber.await(s.fiber)
        assert.isTrue(Exit.isSuccess(exit) || Exit.hasInterrupts(exit), "ended, not failed")
        assert.deepStrictEqual(s.events, closed, "the drain first, then the rest")
        assert.deepStrictEqual(s.ended, [true])
        assert.strictEqual(child.state, "released")
      })
    )
  }

  it.effect("Supervisor.layer without Supervisor.runMain fails at start, saying what to write", () =>
    Effect.gen(function* () {
      const s = yield* launched((App) => Layer.launch(Supervisor.layer(App)), { program: false })
      const error = yield* Effect.flip(Fiber.join(s.fiber))
      assert.instanceOf(error, Supervisor.LaunchError)
      assert.strictEqual((error as Supervisor.LaunchError).problem, "NoRunMain")
      assert.include((error as Supervisor.LaunchError).message, "Supervisor.runMain")
      assert.deepStrictEqual(s.fake.children, [])
    })
  )

  it.effect("two supervisors in one program: the second fails at start", () =>
    Effect.gen(function* () {
      const s = yield* launched((App, Other) =>
        Layer.launch(Layer.mergeAll(Supervisor.layer(App), Supervisor.layer(Other)))
      )
      const error = yield* Effect.flip(Fiber.join(s.fiber))
      assert.strictEqual((error as Supervisor.LaunchError).problem, "TwoSupervisors")
    })
  )

  it.effect("run under a runtime that handles SIGTERM itself (NodeRuntime.runMain) fails at start", () =>
    Effect.gen(function* () {
      const s = yield* launched((App) => Supervisor.run(App), { program: false, foreign: 1 })
      const error = yield* Effect.flip(Fiber.join(s.fiber))
      assert.strictEqual((error as Supervisor.LaunchError).problem, "ForeignSignalHandlers")
      const alone = yield* launched((App) => Supervisor.run(App), { program: false })
      yield* handOff(alone.fake)
      yield* Fiber.join(alone.fiber)
      assert.deepStrictEqual(alone.events, ["drained"])
    })
  )
})
