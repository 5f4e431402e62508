/**
 * What an operator reads: the supervisor's log lines for a restart, a refused or failed restart, a programmatic
 * restart, a termination and a termination during a restart, each event once and in the order it happens. On the
 * fake OS, under a TestClock; the servers' own `drain finished` lines are the Server tests'.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/testing/TestClock"
import { supervised, until, type Line } from "./support/supervised.ts"

const SHOWN = ["by", "reason", "successor", "signal", "waitingFor"] as const

/** A line as the assertions compare it: level, message (a refusal's without its wording), annotations that matter. */
const show = (line: Line): string => {
  const message = line.message.startsWith("effect-grace: restart failed:")
    ? "effect-grace: restart failed"
    : line.message
  const annotations = SHOWN.filter((key) => line.annotations[key] !== undefined).map(
    (key) => `${key}=${String(line.annotations[key])}`
  )
  return [line.level, message, ...annotations].join(" ")
}

/** The supervisor's own lines, in order. */
const sequence = (lines: ReadonlyArray<Line>) => lines.filter((l) => l.message.startsWith("effect-grace:")).map(show)

const has = (lines: ReadonlyArray<Line>, shown: string) => () => sequence(lines).includes(shown)

const READY = "Info effect-grace: ready"

describe("the supervisor's log lines, in order", () => {
  it.effect("a restart by signal", () =>
    Effect.gen(function* () {
      const s = yield* supervised()
      yield* s.fake.signal("SIGUSR2")
      yield* (yield* s.fake.spawned).sayReady
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(sequence(s.lines), [
        READY,
        "Info effect-grace: restart requested by=SIGUSR2",
        "Info effect-grace: restart started",
        "Info effect-grace: successor started successor=200",
        "Info effect-grace: successor ready successor=200",
        "Info effect-grace: restarted successor=200",
        "Info effect-grace: draining reason=handoff",
        "Info effect-grace: stopped reason=handoff"
      ])
    })
  )

  it.effect("a programmatic restart", () =>
    Effect.gen(function* () {
      const s = yield* supervised()
      const restart = yield* Effect.forkChild(s.supervisor.restart)
      yield* (yield* s.fake.spawned).sayReady
      assert.strictEqual(yield* Fiber.join(restart), 200)
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(sequence(s.lines), [
        READY,
        "Info effect-grace: restart requested by=call",
        "Info effect-grace: restart started",
        "Info effect-grace: successor started successor=200",
        "Info effect-grace: successor ready successor=200",
        "Info effect-grace: restarted successor=200",
        "Info effect-grace: draining reason=handoff",
        "Info effect-grace: stopped reason=handoff"
      ])
    })
  )

  it.effect(
    "restarts asked during a restart, by a call and by a signal: kept as one, passed on after the hand-off",
    () =>
      Effect.gen(function* () {
        const drainGate = yield* Deferred.make<void>()
        const s = yield* supervised({ drainGate })
        yield* s.fake.signal("SIGUSR2")
        const successor = yield* s.fake.spawned
        const call = yield* Effect.forkChild(s.supervisor.restart)
        yield* s.fake.signal("SIGUSR2")
        yield* until(() => s.lines.filter((l) => l.message === "effect-grace: restart queued").length === 2, "kept")
        yield* successor.sayReady
        // The successor carries out what was kept, and answers.
        let line = yield* successor.channel.receive
        while (!line.startsWith("restart ")) line = yield* successor.channel.receive
        const { key } = JSON.parse(line.slice("restart ".length)) as { key: number }
        yield* successor.channel.send(`restarted ${JSON.stringify({ key, pid: 300 })}`)
        assert.strictEqual(yield* Fiber.join(call), 300)
        yield* Deferred.succeed(drainGate, undefined)
        yield* Fiber.join(s.fiber)
        assert.deepStrictEqual(sequence(s.lines), [
          READY,
          "Info effect-grace: restart requested by=SIGUSR2",
          "Info effect-grace: restart started",
          "Info effect-grace: successor started successor=200",
          "Info effect-grace: restart requested by=call",
          "Info effect-grace: restart queued waitingFor=the restart under way",
          "Info effect-grace: restart requested by=SIGUSR2",
          "Info effect-grace: restart queued waitingFor=the restart under way",
          "Info effect-grace: successor ready successor=200",
          "Info effect-grace: restarted successor=200",
          "Info effect-grace: restart passed on successor=200",
          "Info effect-grace: draining reason=handoff",
          "Info effect-grace: restarted successor=300",
          "Info effect-grace: stopped reason=handoff"
        ])
      })
  )

  it.effect("a restart asked before ready is kept, and runs once ready", () =>
    Effect.gen(function* () {
      const gate = yield* Deferred.make<void>()
      const s = yield* supervised({ gate })
      const call = yield* Effect.forkChild(s.supervisor.restart)
      yield* until(has(s.lines, "Info effect-grace: restart queued waitingFor=the start-up"), "kept")
      yield* Deferred.succeed(gate, undefined)
      yield* (yield* s.fake.spawned).sayReady
      assert.strictEqual(yield* Fiber.join(call), 200)
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(sequence(s.lines), [
        "Info effect-grace: restart requested by=call",
        "Info effect-grace: restart queued waitingFor=the start-up",
        READY,
        "Info effect-grace: restart started",
        "Info effect-grace: successor started successor=200",
        "Info effect-grace: successor ready successor=200",
        "Info effect-grace: restarted successor=200",
        "Info effect-grace: draining reason=handoff",
        "Info effect-grace: stopped reason=handoff"
      ])
    })
  )

  it.effect("a restart whose successor exits before ready: one warning, and the process goes on serving", () =>
    Effect.gen(function* () {
      const s = yield* supervised()
      yield* s.fake.signal("SIGUSR2")
      yield* (yield* s.fake.spawned).exit({ code: 1, signal: null })
      yield* until(has(s.lines, "Warn effect-grace: restart failed reason=ExitedBeforeReady"), "the failure logged")
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(sequence(s.lines), [
        READY,
        "Info effect-grace: restart requested by=SIGUSR2",
        "Info effect-grace: restart started",
        "Info effect-grace: successor started successor=200",
        "Warn effect-grace: restart failed reason=ExitedBeforeReady",
        "Info effect-grace: termination requested by=SIGTERM",
        "Info effect-grace: draining reason=terminate",
        "Info effect-grace: stopped reason=terminate"
      ])
    })
  )

  it.effect("a restart signal during a drain is refused; a second SIGTERM says it exits at once", () =>
    Effect.gen(function* () {
      const drainGate = yield* Deferred.make<void>()
      const s = yield* supervised({ drainGate })
      yield* s.fake.signal("SIGTERM")
      yield* until(has(s.lines, "Info effect-grace: draining reason=terminate"), "the drain")
      yield* s.fake.signal("SIGUSR2")
      yield* until(has(s.lines, "Warn effect-grace: restart failed reason=NotServing"), "the refusal")
      yield* s.fake.signal("SIGTERM")
      // The fake OS does not exit: the forced drain ends, and the supervisor stops.
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(sequence(s.lines), [
        READY,
        "Info effect-grace: termination requested by=SIGTERM",
        "Info effect-grace: draining reason=terminate",
        "Info effect-grace: restart requested by=SIGUSR2",
        "Warn effect-grace: restart failed reason=NotServing",
        "Info effect-grace: termination requested by=SIGTERM",
        "Warn effect-grace: a second termination signal; exiting at once signal=SIGTERM",
        "Info effect-grace: stopped reason=terminate"
      ])
      assert.deepStrictEqual(s.fake.forced, ["SIGTERM"])
    })
  )

  it.effect("a termination by signal, and by a call", () =>
    Effect.gen(function* () {
      const bySignal = yield* supervised()
      yield* bySignal.fake.signal("SIGINT")
      yield* Fiber.join(bySignal.fiber)
      assert.deepStrictEqual(sequence(bySignal.lines), [
        READY,
        "Info effect-grace: termination requested by=SIGINT",
        "Info effect-grace: draining reason=terminate",
        "Info effect-grace: stopped reason=terminate"
      ])
      const byCall = yield* supervised()
      yield* byCall.supervisor.terminate
      yield* Fiber.join(byCall.fiber)
      assert.deepStrictEqual(sequence(byCall.lines), [
        READY,
        "Info effect-grace: termination requested by=call",
        "Info effect-grace: draining reason=terminate",
        "Info effect-grace: stopped reason=terminate"
      ])
    })
  )

  it.effect("a termination with a shutdown delay: the delay, then the drain", () =>
    Effect.gen(function* () {
      const s = yield* supervised({ shutdownDelay: "2 seconds" })
      yield* s.fake.signal("SIGTERM")
      yield* until(has(s.lines, "Info effect-grace: shutdown delay"), "the delay")
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(s.fiber)
      assert.deepStrictEqual(sequence(s.lines), [
        READY,
        "Info effect-grace: termination requested by=SIGTERM",
        "Info effect-grace: shutdown delay",
        "Info effect-grace: draining reason=terminate",
        "Info effect-grace: stopped reason=terminate"
      ])
    })
  )

  it.effect("a termination during a restart: the restart refused, never a successor ready", () =>
    Effect.gen(function* () {
      const s = yield* supervised()
      yield* s.fake.signal("SIGUSR2")
      const successor = yield* s.fake.spawned
      yield* s.fake.signal("SIGTERM")
      yield* Fiber.join(s.fiber)
      // Ready too late: nothing more is logged.
      yield* successor.sayReady
      yield* Effect.yieldNow
      assert.deepStrictEqual(sequence(s.lines), [
        READY,
        "Info effect-grace: restart requested by=SIGUSR2",
        "Info effect-grace: restart started",
        "Info effect-grace: successor started successor=200",
        "Info effect-grace: termination requested by=SIGTERM",
        "Warn effect-grace: restart failed reason=NotServing",
        "Info effect-grace: draining reason=terminate",
        "Info effect-grace: stopped reason=terminate"
      ])
    })
  )
})
