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
import * as Listeners from "../Listeners.ts"
import type * as Drain from "./drain.ts"

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

/**
 * Registers a served listener with the supervisor's gate, for the serve scope's life. Pausing stops it accepting
 * (its socket kept open) and runs `drain`, the same drain its scope's finalizer runs, which then joins the one under
 * way; resuming ends that drain (or undoes it, if it is over) without forcing anything and accepts again on the same
 * socket.
 */
export const registerServer = (
  listener: Listeners.Listener,
  tracker: Drain.Tracker,
  drain: Effect.Effect<unknown>
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const gate = yield* Gate
    const resume = Effect.andThen(
      Effect.sync(() => tracker.resume()),
      Listeners.resumeAccepting(listener).pipe(
        Effect.catch((error) => Effect.logError(`effect-grace: cannot accept again: ${error.message}`))
      )
    )
    yield* gate.register({ pause: Effect.andThen(Listeners.pauseAccepting(listener), Effect.asVoid(drain)), resume })
  })
