/**
 * The drain, as the servers of `Server` and `TcpServer` do it when their
 * scope closes: its knobs, and the signal a handler sees.
 *
 * Invariants of every drain:
 * - The server stops accepting at once; the listening socket lives on in a
 *   successor that shares it.
 * - Work in flight (a request, a raw connection's handler) runs to
 *   completion or to the deadline, whichever comes first.
 * - A request is either answered or never run: every response from the
 *   drain on says `Connection: close`, and a request read on a connection
 *   that the drain is closing is not run (its client sees the connection
 *   close with no answer, which HTTP clients may retry).
 * - A keep-alive connection with nothing in flight is closed only once it
 *   has been quiet for `IdleGrace`.
 * - WebSockets get a 1001 close and HTTP/2 sessions a GOAWAY when the drain
 *   begins; they stay until they close.
 * - At `DrainTimeout`, what is left is destroyed. The deadline is an Effect
 *   timer, so a `TestClock` drives it.
 *
 * Each server logs its drain as `effect-grace: drain finished`, annotated
 * with `server` (its address), `connections` (open when the drain began or
 * opened during it), `finished` and `forced` (of those, closed before the
 * deadline and destroyed at it), `requests`, `completed` and `cut` (the same
 * for requests; a request whose client went away counts as completed),
 * `refused` (requests read on a connection being closed, not run),
 * `toldToGoAway` (WebSockets and HTTP/2 sessions) and `millis`; as a warning
 * when something was forced. The same report is the span `effect-grace.drain`
 * and the `metrics` below.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Variables from "./internal/config.ts"
import * as Internal from "./internal/drain.ts"

// -----------------------------------------------------------------------------
// Knobs
// -----------------------------------------------------------------------------

/**
 * How long a drain may take before what is left is destroyed. Default 30
 * seconds. A server's `drainTimeout` option overrides it; `layerConfig` sets
 * it from `GRACE_DRAIN_TIMEOUT`.
 *
 * @since 0.1.0
 * @category references
 */
export const DrainTimeout: Context.Reference<Duration.Duration> = Internal.DrainTimeout

/**
 * How long an HTTP connection with nothing in flight must be quiet before a
 * drain closes it. Default 250 milliseconds. Quiet is measured in steps of
 * 10 milliseconds, from the end of the step of the last activity: a
 * connection may wait up to a step longer, never less. A server's
 * `idleGrace` option overrides it; `layerConfig` sets it from
 * `GRACE_IDLE_GRACE`. Raw socket servers have no idle state: a connection is
 * held for as long as its handler runs.
 *
 * @since 0.1.0
 * @category references
 */
export const IdleGrace: Context.Reference<Duration.Duration> = Internal.IdleGrace

/**
 * Sets `DrainTimeout` and `IdleGrace` from `GRACE_DRAIN_TIMEOUT` and
 * `GRACE_IDLE_GRACE`, read through `Config` in Effect's Duration syntax
 * (`45 seconds`, `500 millis`). A variable that is not set keeps the
 * default; one that is not a duration fails with a `ConfigError` that names
 * its value.
 *
 * **When to use**
 *
 * Provide it once, above the server layers, so that operators can tune the
 * drain without a rebuild (`Supervisor.run` provides it to the application):
 *
 * ```ts
 * Layer.mergeAll(Public, Admin).pipe(Layer.provide(Drain.layerConfig))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<never, Config.ConfigError> = Layer.effectContext(
  Effect.gen(function* () {
    const configured = yield* Config.all({
      drainTimeout: Variables.duration("GRACE_DRAIN_TIMEOUT"),
      idleGrace: Variables.duration("GRACE_IDLE_GRACE")
    })
    const drainTimeout = Option.getOrElse(configured.drainTimeout, () => DrainTimeout.defaultValue())
    const idleGrace = Option.getOrElse(configured.idleGrace, () => IdleGrace.defaultValue())
    return Context.make(DrainTimeout, drainTimeout).pipe(Context.add(IdleGrace, idleGrace))
  })
)

// -----------------------------------------------------------------------------
// The drain signal
// -----------------------------------------------------------------------------

/**
 * What a handler can learn of its server's shutdown: `await` completes once
 * the server has begun to stop (never, outside a server), `isDraining` tells
 * whether it has. The server begins to stop at the start of the supervisor's
 * shutdown delay, if there is one (it still accepts, but every response says
 * `Connection: close`), and otherwise when its drain begins: either way, the
 * moment a long exchange should end, so that its client moves elsewhere.
 *
 * @since 0.1.0
 * @category models
 */
export interface DrainSignal extends Internal.DrainSignal {}

/**
 * The drain signal of the server running the current handler. Every request
 * (and upgraded connection) of a `Server`, and every connection handler of a
 * `TcpServer`, sees its server's signal. A reference, not a service: a
 * handler that uses it runs anywhere, and outside a server the signal never
 * fires.
 *
 * @since 0.1.0
 * @category references
 */
export const Draining: Context.Reference<DrainSignal> = Internal.Draining

/**
 * Completes once the current handler's server has begun to stop: at the
 * start of the shutdown delay (`Supervisor`'s `shutdownDelay`), or when the
 * drain begins if there is no delay.
 *
 * **When to use**
 *
 * A long response (server-sent events, long polling), a WebSocket protocol,
 * or a raw connection's handler that wants to end its exchange at a point
 * the protocol allows, and say goodbye before the deadline:
 *
 * ```ts
 * const events = Stream.interruptWhen(ticks, Drain.draining)
 * Effect.raceFirst(relay, Effect.andThen(Drain.draining, writer.write("bye\n")))
 * ```
 *
 * @since 0.1.0
 * @category accessors
 */
export const draining: Effect.Effect<void> = Effect.flatMap(Effect.service(Draining), (signal) => signal.await)

/**
 * Whether the current handler's server has begun to stop (see `draining`).
 *
 * @since 0.1.0
 * @category accessors
 */
export const isDraining: Effect.Effect<boolean> = Effect.flatMap(
  Effect.service(Draining),
  (signal) => signal.isDraining
)

// -----------------------------------------------------------------------------
// Observability
// -----------------------------------------------------------------------------

/**
 * The drain's metrics, each with the server's address as its `server`
 * attribute: `effect-grace.drain.duration` (a timer), and the counters
 * `effect-grace.drain.forced` (connections destroyed at the deadline),
 * `effect-grace.drain.cut` (requests or handlers cut there) and
 * `effect-grace.drain.refused` (requests read on a connection being closed,
 * not run). Each drain is also a span, `effect-grace.drain`, with
 * `effect-grace.server` and the report's counts as `effect-grace.<count>`.
 * A tracer or metric exporter of the application (`@effect/opentelemetry`,
 * for example) sees them with no more wiring.
 *
 * @since 0.1.0
 * @category observability
 */
export const metrics: typeof Internal.metrics = Internal.metrics
