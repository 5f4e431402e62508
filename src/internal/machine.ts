/**
 * The supervisor's life as a state machine: a pure function of the state and
 * an event, giving the next state and the actions the runtime carries out,
 * in order. The runtime (Supervisor) feeds it one event at a time.
 *
 * Rules, as tableflip keeps them:
 * - One restart at a time; none before ready, none while the parent that
 *   started this process still drains, none once draining, none where the
 *   platform cannot hand listeners on.
 * - A termination wins over a restart under way: the restart is interrupted
 *   (its successor killed and reaped) before anything is said to systemd, so
 *   nothing follows `STOPPING=1`.
 * - A second termination signal while draining forces the exit; the scope
 *   closing (the runtime stopping the program) is not a signal, and never
 *   forces.
 *
 * `R` is how a programmatic restart is answered (a Deferred); the machine only
 * carries it.
 */

/** Why a restart is refused before it starts. */
export type Refusal =
  | { readonly _tag: "AlreadyInProgress" }
  | { readonly _tag: "NotServing"; readonly state: "starting" | "draining" }
  | { readonly _tag: "ParentStillRunning"; readonly parentPid: number }
  | { readonly _tag: "Unsupported" }

export type State<R> =
  | { readonly _tag: "Starting" }
  | { readonly _tag: "Serving" }
  | { readonly _tag: "Restarting"; readonly reply: R | undefined }
  | { readonly _tag: "Draining"; readonly reason: "terminate" | "handoff"; readonly signals: number }

export type Event<R, F> =
  | { readonly _tag: "Ready" }
  | { readonly _tag: "RestartRequested"; readonly reply: R | undefined }
  | { readonly _tag: "SuccessorReady"; readonly pid: number }
  | { readonly _tag: "RestartFailed"; readonly failure: F }
  | { readonly _tag: "Terminate"; readonly source: "signal" | "call" | "scope" }

export type Action<R, F> =
  | { readonly _tag: "Refuse"; readonly reply: R | undefined; readonly refusal: Refusal }
  | { readonly _tag: "StartRestart" }
  | { readonly _tag: "InterruptRestart" }
  | { readonly _tag: "HandOff"; readonly reply: R | undefined; readonly pid: number }
  | { readonly _tag: "RestartFailed"; readonly reply: R | undefined; readonly failure: F }
  | { readonly _tag: "NotifyReloading" }
  | { readonly _tag: "NotifyStopping" }
  | { readonly _tag: "Stop"; readonly reason: "terminate" | "handoff" }
  | { readonly _tag: "ForceExit" }

/** What the machine needs to know of the world when an event arrives. */
export interface Facts {
  /** The pid of the parent this process took over from, while it still runs. */
  readonly parentPid: number | undefined
  /** Whether listeners can be handed on here (the native calls are available). */
  readonly canHandOff: boolean
}

export type Step<R, F> = readonly [State<R>, ReadonlyArray<Action<R, F>>]

const stay = <R, F>(state: State<R>, ...actions: ReadonlyArray<Action<R, F>>): Step<R, F> => [state, actions]

const requestRestart = <R, F>(state: State<R>, reply: R | undefined, facts: Facts): Step<R, F> => {
  const refuse = (refusal: Refusal) => stay<R, F>(state, { _tag: "Refuse", reply, refusal })
  switch (state._tag) {
    case "Starting":
      return refuse({ _tag: "NotServing", state: "starting" })
    case "Draining":
      return refuse({ _tag: "NotServing", state: "draining" })
    case "Restarting":
      return refuse({ _tag: "AlreadyInProgress" })
    case "Serving":
      if (facts.parentPid !== undefined) return refuse({ _tag: "ParentStillRunning", parentPid: facts.parentPid })
      if (!facts.canHandOff) return refuse({ _tag: "Unsupported" })
      return [{ _tag: "Restarting", reply }, [{ _tag: "NotifyReloading" }, { _tag: "StartRestart" }]]
  }
}

const terminate = <R, F>(state: State<R>, source: "signal" | "call" | "scope"): Step<R, F> => {
  const draining: State<R> = { _tag: "Draining", reason: "terminate", signals: source === "signal" ? 1 : 0 }
  switch (state._tag) {
    case "Starting":
    case "Serving":
      return [draining, [{ _tag: "NotifyStopping" }, { _tag: "Stop", reason: "terminate" }]]
    case "Restarting":
      // The restart is interrupted first: its successor is killed and reaped, and never announced.
      return [
        draining,
        [
          { _tag: "InterruptRestart" },
          {
            _tag: "Refuse",
            reply: state.reply,
            refusal: { _tag: "NotServing", state: "draining" }
          },
          { _tag: "NotifyStopping" },
          { _tag: "Stop", reason: "terminate" }
        ]
      ]
    case "Draining": {
      if (source !== "signal") return stay(state)
      // The second termination signal of a drain ends the process at once; a first one (during a hand-off's
      // drain, or one begun by a call) lets it go on.
      const next: State<R> = { ...state, signals: state.signals + 1 }
      return next.signals >= 2 ? stay(next, { _tag: "ForceExit" }) : stay(next)
    }
  }
}

/** The next state, and what to do, when `event` arrives in `state`. */
export const transition = <R, F>(state: State<R>, event: Event<R, F>, facts: Facts): Step<R, F> => {
  switch (event._tag) {
    case "Ready":
      return state._tag === "Starting" ? [{ _tag: "Serving" }, []] : stay(state)
    case "RestartRequested":
      return requestRestart(state, event.reply, facts)
    case "SuccessorReady":
      // Only a restart still under way hands off; one that a termination interrupted is gone.
      return state._tag === "Restarting"
        ? [
            { _tag: "Draining", reason: "handoff", signals: 0 },
            [
              { _tag: "HandOff", reply: state.reply, pid: event.pid },
              { _tag: "Stop", reason: "handoff" }
            ]
          ]
        : stay(state)
    case "RestartFailed":
      return state._tag === "Restarting"
        ? [{ _tag: "Serving" }, [{ _tag: "RestartFailed", reply: state.reply, failure: event.failure }]]
        : stay(state)
    case "Terminate":
      return terminate(state, event.source)
  }
}
