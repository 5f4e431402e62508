/**
 * An application under the supervisor on the fake OS, as `test/Supervisor.unit.test.ts` runs one, recording every
 * log line with its level and annotations, for tests of what an operator reads.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import * as Notify from "../../src/Notify.ts"
import * as Supervisor from "../../src/Supervisor.ts"
import * as DrainInternal from "../../src/internal/drain.ts"
import * as Os from "../../src/internal/os.ts"
import * as FakeOs from "./os.ts"

/** Yields to the other fibers until `check` holds: a bound on scheduler turns, not on time. */
export const until = (check: () => boolean, what: string) =>
  Effect.gen(function* () {
    for (let turn = 0; turn < 10_000; turn++) {
      if (check()) return
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

/**
 * Runs an application under the supervisor on a fake OS, its logs recorded. `gate`, if given, holds the
 * application's start-up until opened, and `drainGate` its drain.
 */
export const supervised = (
  options: Supervisor.Options & {
    readonly pid?: number
    readonly spawnGate?: Deferred.Deferred<void>
    readonly gate?: Deferred.Deferred<void>
    readonly drainGate?: Deferred.Deferred<void>
  } = {}
) =>
  Effect.gen(function* () {
    const fake = yield* FakeOs.make(options)
    const lines: Array<Line> = []
    let supervisor: Supervisor.Supervisor["Service"] | undefined
    const App = Layer.effectDiscard(
      Effect.gen(function* () {
        supervisor = yield* Supervisor.Supervisor
        const forced = yield* DrainInternal.Forced
        yield* Effect.addFinalizer(() =>
          Effect.raceFirst(options.drainGate !== undefined ? Deferred.await(options.drainGate) : Effect.void, forced)
        )
        if (options.gate !== undefined) yield* Deferred.await(options.gate)
      })
    )
    const logger = Logger.make(({ fiber, logLevel, message }) => {
      lines.push({
        level: logLevel,
        message: (Array.isArray(message) ? message : [message]).map(String).join(" "),
        annotations: { ...fiber.getRef(References.CurrentLogAnnotations) }
      })
    })
    const fiber = yield* Effect.forkChild(
      Supervisor.run(App, options).pipe(
        Effect.provideService(Os.Os, fake.os),
        Effect.provide(Notify.layerTest(() => Effect.void)),
        Effect.provide(Logger.layer([logger]))
      )
    )
    yield* until(() => supervisor !== undefined, "the application building")
    if (options.gate === undefined) {
      yield* until(() => lines.some((line) => line.message === "effect-grace: ready"), "ready")
    }
    return { fake, lines, fiber, supervisor: supervisor! }
  })
