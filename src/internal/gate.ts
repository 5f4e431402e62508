/**
 * The application's servers, as the supervisor stops and restarts their
 * accepting during a successor's probation: a server paused stops accepting
 * and drains its connections, but keeps its listening socket and stays
 * built, so that it can accept again at once if the successor dies
 * (hand-back). Connections that arrive meanwhile wait in the kernel's
 * backlog of the socket, which the successor shares.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/** One server's part. */
export interface Pausable {
  /** Stops accepting (the socket kept open) and drains the connections; done once they are gone. */
  readonly pause: Effect.Effect<void>
  /** Accepts again on the same socket; connections still draining go on draining. */
  readonly resume: Effect.Effect<void>
}

/** Where a server registers, for as long as it serves. */
export interface Gate {
  readonly register: (server: Pausable) => Effect.Effect<void, never, Scope.Scope>
}

/** Servers outside a supervisor register nowhere. */
export const Gate: Context.Reference<Gate> = Context.Reference<Gate>("effect-grace/Gate", {
  defaultValue: () => ({ register: () => Effect.void })
})

/** The supervisor's gate: every server registered, paused and resumed together. */
export const make = () => {
  const servers = new Set<Pausable>()
  const gate: Gate = {
    register: (server) =>
      Effect.acquireRelease(
        Effect.sync(() => void servers.add(server)),
        () => Effect.sync(() => void servers.delete(server))
      )
  }
  return {
    gate,
    pause: Effect.suspend(() =>
      Effect.forEach([...servers], (s) => s.pause, { concurrency: "unbounded", discard: true })
    ),
    resume: Effect.suspend(() => Effect.forEach([...servers], (s) => s.resume, { discard: true }))
  }
}
