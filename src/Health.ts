/**
 * Readiness and liveness, as Kubernetes (and load balancers) probe them.
 *
 * Invariants:
 * - Not ready until the supervisor is ready: every server listens.
 * - Unready from the moment a termination begins (or the process has handed
 *   off to a successor), before anything stops accepting: with a shutdown
 *   delay, the servers go on serving while the probes take the process out of
 *   rotation.
 * - The application can mark itself unready for a reason of its own (a
 *   database it depends on is down), and ready again; it is ready only when
 *   no such reason remains.
 * - Live until the process exits: `/livez` answers 200 whenever it is
 *   answered at all, while starting, serving, stopping and handed off.
 *
 * Liveness is the process answering, and nothing more. A failed liveness
 * probe makes Kubernetes kill the container, so a liveness of its own that
 * turned false (past a drain deadline, after a hand-off) would kill the
 * process in the middle of the very drain this library makes graceful, and a
 * drain already ends at its deadline. What liveness is for, a process that is
 * wedged, fails the probe by not answering: a blocked event loop accepts no
 * request and answers none, and the probe's `timeoutSeconds` catches it.
 *
 * `routes` answers `GET /readyz` and `GET /livez` with 200 or 503 and a short
 * body, on any server the application mounts them on (a public port or an
 * admin port).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import type * as Machine from "./internal/machine.ts"

/**
 * What a probe is told.
 *
 * @since 0.1.0
 * @category models
 */
export interface Status {
  readonly ready: boolean
  /** Always `true`: a process that can say anything is live (see the module's notes). */
  readonly live: boolean
  /** Why not ready: `starting`, `stopping`, `handed off`, or the application's own reasons. */
  readonly reasons: ReadonlyArray<string>
}

/**
 * Readiness and liveness of this process. `Supervisor.layer` provides it to
 * the application; `layer` does outside a supervisor.
 *
 * @since 0.1.0
 * @category services
 */
export class Health extends Context.Service<
  Health,
  {
    readonly status: Effect.Effect<Status>
    /** Marks the process unready for `reason` (a dependency that is down), until `ready(reason)`. */
    readonly unready: (reason: string) => Effect.Effect<void>
    /** Takes back an `unready(reason)`. */
    readonly ready: (reason: string) => Effect.Effect<void>
  }
>()("effect-grace/Health") {}

/**
 * The life of the process in one word, as the supervisor's state says it:
 * `starting`, `serving`, `stopping` or `handed off` (a successor, or the
 * primary's newer worker, serves).
 *
 * @since 0.1.0
 * @category models
 */
export type Phase = Machine.Readiness

/**
 * A `Health` service whose phase is read from `phase` at every probe, with
 * the application's own reasons beside it. The supervisor's reads its state.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromPhase = (phase: Effect.Effect<Phase>): Health["Service"] => {
  const reasons = new Set<string>()
  return Health.of({
    status: Effect.map(phase, (current) => {
      const why = [...(current === "serving" ? [] : [current]), ...reasons]
      return { ready: why.length === 0, live: true, reasons: why }
    }),
    unready: (reason) => Effect.sync(() => void reasons.add(reason)),
    ready: (reason) => Effect.sync(() => void reasons.delete(reason))
  })
}

/**
 * A `Health` service and the hand that sets its phase, for an application
 * that runs its own life (without the supervisor, or in a test).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  phase: Phase = "starting"
): { readonly health: Health["Service"]; readonly setPhase: (phase: Phase) => void } => {
  let current = phase
  return {
    health: fromPhase(Effect.sync(() => current)),
    setPhase: (next) => {
      current = next
    }
  }
}

/**
 * A `Health` that is serving from the start, for an application run without
 * the supervisor.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Health> = Layer.sync(Health)(() => make("serving").health)

const respond = (ok: boolean, text: string) => HttpServerResponse.text(`${text}\n`, { status: ok ? 200 : 503 })

/**
 * `GET /readyz` (200 `ready`, or 503 `not ready: <reasons>`) and `GET /livez`
 * (200 `live`), for the probes; mount them on any of the application's
 * servers (`HttpRouter.serve(Layer.mergeAll(App, Health.routes))`).
 *
 * @since 0.1.0
 * @category routes
 */
export const routes: Layer.Layer<never, never, HttpRouter.HttpRouter | Health> = Layer.unwrap(
  Effect.gen(function* () {
    const health = yield* Health
    return Layer.mergeAll(
      HttpRouter.add(
        "GET",
        "/readyz",
        Effect.map(health.status, (s) => respond(s.ready, s.ready ? "ready" : `not ready: ${s.reasons.join(", ")}`))
      ),
      HttpRouter.add(
        "GET",
        "/livez",
        Effect.map(health.status, (s) => respond(s.live, s.live ? "live" : "not live"))
      )
    )
  })
)
