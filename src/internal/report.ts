/**
 * What a person reads when a program fails to start: one line that names
 * the bad value and says what to do, not a stack trace of the library.
 *
 * A typed failure (a `ListenersError`, a `ConfigError`, ...) is logged as
 * one line at `ERROR`, through the application's own logger, and marked as
 * reported, so that `runMain` (this library's or `NodeRuntime`'s) does not
 * log its cause again; the exit code is still 1. With `GRACE_DEBUG` set the
 * cause is logged with the line. A defect is a bug, and is left to `runMain`, which
 * logs it with its stack.
 */
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"

/** A typed failure, as one line. */
export const oneLine = (error: unknown): string => {
  const text =
    // A ConfigError's own message is its cause's `toString`, prefixed with the cause's tag.
    error instanceof Config.ConfigError
      ? error.cause.message
      : error instanceof Error
        ? error.message || error.name
        : typeof error === "object" && error !== null && "_tag" in error
          ? String(error._tag)
          : String(error)
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .join("; ")
}

// GRACE_DEBUG, read through Config: set (and not 0, false or empty), the cause is logged with the line.
const debug: Effect.Effect<boolean> = Config.option(Config.String("GRACE_DEBUG")).pipe(
  Effect.map((value) => Option.match(value, { onNone: () => false, onSome: (v) => !["", "0", "false"].includes(v) })),
  Effect.orElseSucceed(() => false)
)

/** Logs a start-up failure of `effect` as one line, and marks it reported (see the module header). */
export const startupFailure = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.tapCause(effect, (cause) => {
    const error = Cause.findErrorOption(cause)
    if (Option.isNone(error) || Cause.hasDies(cause)) return Effect.void
    const failure = error.value
    const line = `effect-grace: cannot start: ${oneLine(failure)}`
    return Effect.andThen(
      Effect.flatMap(debug, (on) => (on ? Effect.logError(line, cause) : Effect.logError(line))),
      Effect.sync(() => {
        if (typeof failure === "object" && failure !== null) {
          Object.defineProperty(failure, Runtime.errorReported, { value: false, configurable: true })
        }
      })
    )
  })
