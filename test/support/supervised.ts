/**
 * An application under the supervisor on the fake OS (test/support/os.ts),
 * under the test's clock: what it sees of the supervisor, what it was told
 * (systemd's datagrams), what its servers did (`events`: closing, paused,
 * resumed, forced, drained), and every log line with its level and
 * annotations.
 */
import * as ConfigProvider from "effect/ConfigProvider"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import * as Health from "../../src/Health.ts"
import * as Notify from "../../src/Notify.ts"
import * as Server from "../../src/Server.ts"
import * as Supervisor from "../../src/Supervisor.ts"
import * as DrainInternal from "../../src/internal/drain.ts"
import * as Gate from "../../src/internal/gate.ts"
import * as Os from "../../src/internal/os.ts"
import * as Tickets from "../../src/internal/tickets.ts"
import * as FakeOs from "./os.ts"

/** Yields to the other fibers until `check` holds: a bound on scheduler turns, not on time. */
export const until = (check: () => boolean, what: string) =>
  untilEffect(
    Effect.sync(() => check()),
    what
  )

/** As `until`, for a check that is an Effect. */
export const untilEffect = (check: Effect.Effect<boolean>, what: string) =>
  Effect.gen(function* () {
    for (let turn = 0; turn < 10_000; turn++) {
      if (yield* check) return
      yield* Effect.yieldNow
    }
    return yield* Effect.die(new Error(`never: ${what}`))
  })

/** A log line: its level, its message, and its annotations. */
export interface Line {
  readonly level: string
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

export interface SupervisedOptions extends Supervisor.Options {
  readonly pid?: number
  readonly parentPid?: number
  readonly parentValues?: Readonly<Record<string, string>>
  readonly spawnGate?: Deferred.Deferred<void>
  /** Holds the application's start-up until opened. */
  readonly gate?: Deferred.Deferred<void>
  /** Holds the application's drain, and its servers' pause, until opened. */
  readonly drainGate?: Deferred.Deferred<void>
  /** The parent sends this ticket key on the channel first. */
  readonly keysFrom?: Tickets.TicketKey
  /** The parent goes before it sends anything. */
  readonly parentGone?: boolean
  /** The environment as `Config` reads it, instead of the process's (`EFFECT_GRACE_WORKER` makes a worker). */
  readonly env?: Readonly<Record<string, string>>
}

/** An application whose one server records what the supervisor makes it do. */
const application = (options: SupervisedOptions, events: Array<string>, seen: (app: Seen) => void) =>
  Layer.effectDiscard(
    Effect.gen(function* () {
      seen({
        supervisor: yield* Supervisor.Supervisor,
        health: yield* Health.Health,
        ticketKey: yield* (yield* Server.TicketKeyring).current
      })
      const record = (event: string) => Effect.sync(() => void events.push(event))
      const held = options.drainGate !== undefined ? Deferred.await(options.drainGate) : Effect.void
      // What a server does when the shutdown delay begins, when it is paused or resumed, and when its drain is forced.
      const forced = Effect.andThen(yield* DrainInternal.Forced, record("forced"))
      yield* Effect.forkScoped(Effect.andThen(yield* DrainInternal.Closing, record("closing")))
      yield* (yield* Gate.Gate).register({
        pause: Effect.andThen(record("paused"), Effect.raceFirst(held, forced)),
        resume: record("resumed")
      })
      yield* Effect.addFinalizer(() => Effect.andThen(Effect.raceFirst(held, forced), record("drained")))
      if (options.gate !== undefined) yield* Deferred.await(options.gate)
    })
  )

interface Seen {
  readonly supervisor: Supervisor.Supervisor["Service"]
  readonly health: Health.Health["Service"]
  readonly ticketKey: Tickets.TicketKey
}

/** Runs the application under the supervisor on a fake OS, with no probation unless `options` asks for one. */
export const supervised = (options: SupervisedOptions = {}) =>
  Effect.gen(function* () {
    const launched = yield* launch(options)
    const { fake, lines, logs, fiber } = launched
    yield* until(() => launched.seen() !== undefined, "the application building")
    if (options.gate === undefined) yield* until(() => logs().includes("effect-grace: ready"), "ready")
    const seen = launched.seen()!
    return {
      fake,
      notes: launched.notes,
      events: launched.events,
      lines,
      /** Every message logged, in order. */
      logs,
      /** The warnings, with the reason each names. */
      warnings: launched.warnings,
      fiber,
      supervisor: seen.supervisor,
      health: seen.health,
      ticketKey: seen.ticketKey
    }
  })

/**
 * A primary (`workers` set) under the supervisor on a fake OS: it runs no application, and its workers are children
 * the test plays (`fake.spawned`). Returned at once: the primary is ready once its workers say they are.
 */
export const primary = (options: SupervisedOptions & { readonly workers: number }) =>
  Effect.gen(function* () {
    const launched = yield* launch(options)
    // A test that fails leaves its workers running: they exit with it, so that the primary's drain does not wait.
    yield* Effect.addFinalizer(() =>
      Effect.forEach(
        launched.fake.children,
        (child) => (child.state === "running" ? child.exit({ code: 0, signal: null }) : Effect.void),
        { discard: true }
      )
    )
    return launched
  })

// The supervisor started on the fake OS, with what the test watches.
const launch = (options: SupervisedOptions) =>
  Effect.gen(function* () {
    const fake = yield* FakeOs.make(options)
    if (options.keysFrom !== undefined) {
      yield* fake.parent!.channel.send(`ticket-keys ${Tickets.encode(options.keysFrom)}`)
    }
    if (options.parentGone === true) yield* fake.parent!.exits
    const notes: Array<string> = []
    const events: Array<string> = []
    const lines: Array<Line> = []
    let seen: Seen | undefined
    const logger = Logger.make(({ fiber, logLevel, message }) => {
      const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
      lines.push({ level: logLevel, message: text, annotations: { ...fiber.getRef(References.CurrentLogAnnotations) } })
    })
    const fiber = yield* Effect.forkChild(
      Supervisor.run(
        application(options, events, (app) => void (seen = app)),
        { probation: 0, ...options }
      ).pipe(
        Effect.provideService(Os.Os, fake.os),
        Effect.provide(Notify.layerCallback((message) => Effect.sync(() => void notes.push(message)))),
        Effect.provide(Logger.layer([logger])),
        (run) =>
          options.env === undefined
            ? run
            : Effect.provideService(run, ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown(options.env))
      )
    )
    return {
      fake,
      notes,
      events,
      lines,
      /** Every message logged, in order. */
      logs: () => lines.map((line) => line.message),
      /** The warnings, with the reason each names. */
      warnings: () =>
        lines.filter((line) => line.level === "Warn").map((line) => ({ ...line, reason: line.annotations.reason })),
      fiber,
      /** What the application saw of the supervisor, once it builds (never in a primary). */
      seen: () => seen
    }
  })
