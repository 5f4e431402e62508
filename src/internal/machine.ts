/**
 * The supervisor's whole life as a state machine: a pure function of the
 * state and an event, giving the next state and the actions the runtime
 * carries out, in order. One fiber of the runtime (Supervisor) owns the state:
 * it takes the events from a queue, one at a time, and follows this function.
 * Nothing else decides.
 *
 * Phases: Starting → Serving ⇄ Restarting (→ Probation → Serving, on a
 * hand-back) → (Delaying →) Draining → Stopped. A primary (workers) also
 * goes Serving ⇄ Rolling, a rolling restart of its workers; a worker goes
 * Serving ⇄ Paused, as its primary says.
 *
 * Rules, as tableflip keeps them:
 * - One restart at a time; none before ready, none while the parent that
 *   started this process still drains, none once stopping, none where the
 *   platform cannot hand listeners on. Every request is logged, and every
 *   refusal answered.
 * - A termination wins over whatever is under way: a start-up is interrupted
 *   (its partly built application closed), a restart is interrupted (its
 *   successor killed and reaped) before anything is said to systemd, so
 *   nothing follows `STOPPING=1`, and `READY=1` never comes after it.
 * - A successor that is ready once this process no longer restarts is killed:
 *   only a restart still under way hands off.
 * - With a probation window, a successor that is ready does not yet replace
 *   this process: this process stops accepting and drains, but keeps its
 *   sockets and its application; if the successor exits within the window,
 *   this process accepts again and serves on (hand-back), and systemd's
 *   `MAINPID` names the successor only once the window has passed and it is
 *   found alive then, so it never names a process that died in the window.
 * - The second termination signal of a drain (or of the shutdown delay) forces
 *   the exit; a call or the scope closing is not a signal, and never forces.
 *
 * `R` is how a programmatic restart is answered (a Deferred), `S` a successor
 * that is ready and `F` why a restart failed; the machine only carries them.
 */

/** Why a restart is refused before it starts. */
export type Refusal =
  | { readonly _tag: "AlreadyInProgress" }
  | { readonly _tag: "NotServing"; readonly state: "starting" | "draining" }
  | { readonly _tag: "ParentStillRunning"; readonly parentPid: number }
  | { readonly _tag: "RestartUnsupported" }

/** Why this process drains: it was told to stop, or it handed its listeners on. */
export type Reason = "terminate" | "handoff"

export type Phase<R, S = unknown> =
  | { readonly _tag: "Starting" }
  | { readonly _tag: "Serving" }
  | { readonly _tag: "Restarting"; readonly reply: R | undefined }
  /** A primary restarts its workers, a slot at a time. */
  | { readonly _tag: "Rolling"; readonly reply: R | undefined }
  /** A worker, told by its primary: stopped accepting and drained, ready to accept again. */
  | { readonly _tag: "Paused" }
  /** The successor serves; this process has stopped accepting, and takes the service back if it dies. */
  | {
      readonly _tag: "Probation"
      readonly reply: R | undefined
      readonly successor: S
      readonly pid: number
      readonly signals: number
    }
  /** The shutdown delay: still serving, unready, every response saying `Connection: close`. */
  | { readonly _tag: "Delaying"; readonly signals: number }
  | { readonly _tag: "Draining"; readonly reason: Reason; readonly signals: number }
  | { readonly _tag: "Stopped"; readonly reason: Reason | "failed"; readonly forced: boolean }

export interface State<R, S = unknown> {
  readonly phase: Phase<R, S>
  /** The pid of the parent this process took over from, until it has exited. */
  readonly parentPid: number | undefined
}

/** What the runtime fixed when it started; the same for the whole life. */
export interface Rules {
  /** Whether listeners can be handed on here (native calls available, not PID 1). */
  readonly canHandOff: boolean
  /** Whether a termination waits for a shutdown delay before the drain. */
  readonly shutdownDelay: boolean
  /** Whether a successor that is ready goes through a probation window before it replaces this process. */
  readonly probation: boolean
  /** Whether this process is a primary, whose workers restart in turn. */
  readonly canRoll: boolean
}

/** A restart of this process (a successor takes over), or of a primary's workers, one slot at a time. */
export type Kind = "upgrade" | "roll"

export type Source = "signal" | "call" | "scope" | "primary"

export type Event<R, S, F> =
  /** The application's layers are built: every server listens. */
  | { readonly _tag: "Started" }
  /** Building the application failed; the runtime reports the error to whoever launched it. */
  | { readonly _tag: "StartupFailed" }
  | {
      readonly _tag: "RestartRequested"
      readonly reply: R | undefined
      readonly signal: string | undefined
      readonly kind: Kind
    }
  /** Every slot of a rolling restart has rolled. */
  | { readonly _tag: "RollDone"; readonly pid: number }
  /** A rolling restart stopped: the slots not rolled keep their workers. */
  | { readonly _tag: "RollStopped"; readonly failure: F }
  /** A worker's primary asks it to stop accepting (and drain), or to accept again. */
  | { readonly _tag: "Pause" }
  | { readonly _tag: "Resume" }
  | { readonly _tag: "SuccessorReady"; readonly successor: S; readonly pid: number }
  | { readonly _tag: "RestartFailed"; readonly failure: F }
  /** A successor on probation has exited, by `code` or by `signal`. */
  | {
      readonly _tag: "SuccessorExited"
      readonly pid: number
      readonly code: number | null
      readonly signal: string | null
    }
  | { readonly _tag: "ProbationOver" }
  /** The successor was found alive when its probation was over. */
  | { readonly _tag: "SuccessorAlive" }
  | { readonly _tag: "ParentExited" }
  | { readonly _tag: "Terminate"; readonly source: Source; readonly signal: string | undefined }
  | { readonly _tag: "DelayOver" }
  | { readonly _tag: "Drained"; readonly millis: number }

export type Action<R, S, F> =
  | { readonly _tag: "Log"; readonly message: string; readonly annotations: Readonly<Record<string, unknown>> }
  /** Unclaimed fds closed, the PID file written, the parent or systemd told, healthy. */
  | { readonly _tag: "AnnounceReady" }
  | { readonly _tag: "Refuse"; readonly reply: R | undefined; readonly refusal: Refusal }
  | { readonly _tag: "NotifyReloading" }
  | { readonly _tag: "StartRestart" }
  | { readonly _tag: "StartRoll" }
  | { readonly _tag: "RollDone"; readonly reply: R | undefined; readonly pid: number }
  /** The servers accept again (a worker resumed by its primary). */
  | { readonly _tag: "ResumeServing" }
  | { readonly _tag: "InterruptRestart" }
  | { readonly _tag: "ReleaseSuccessor"; readonly successor: S }
  | { readonly _tag: "KillSuccessor"; readonly successor: S }
  /** The successor serves too from now: the listeners are not unlinked; `READY=1`; the probation's timer. */
  | { readonly _tag: "BeginProbation"; readonly pid: number }
  /** Watches the successor until it exits (`SuccessorExited`). */
  | { readonly _tag: "WatchSuccessor"; readonly successor: S }
  /** The servers stop accepting and drain, keeping their sockets and the application. */
  | { readonly _tag: "PauseServing" }
  /** The successor has died: the servers accept again, systemd and the PID file name this process again. */
  | {
      readonly _tag: "HandBack"
      readonly reply: R | undefined
      readonly pid: number
      readonly code: number | null
      readonly signal: string | null
    }
  /** Looks whether the successor still lives (`SuccessorAlive`); if not, its exit is on its way. */
  | { readonly _tag: "ConfirmSuccessor"; readonly successor: S }
  /** Asks the successor to terminate gracefully (a termination during its probation ends both). */
  | { readonly _tag: "TerminateSuccessor"; readonly successor: S }
  /**
   * The successor replaces this process: the listeners are not unlinked, systemd follows `MAINPID` (with `READY=1`
   * unless the probation said it already), the caller is answered.
   */
  | { readonly _tag: "HandOff"; readonly reply: R | undefined; readonly pid: number; readonly ready: boolean }
  | { readonly _tag: "RestartFailed"; readonly reply: R | undefined; readonly failure: F }
  | { readonly _tag: "NotifyStopping" }
  | { readonly _tag: "Unready"; readonly why: "stopping" | "handed off" }
  | { readonly _tag: "InterruptStartup" }
  | { readonly _tag: "BeginDelay" }
  | { readonly _tag: "BeginDrain"; readonly reason: Reason }
  | { readonly _tag: "ForceExit"; readonly signal: string }
  /** Closes what a failed start-up built. */
  | { readonly _tag: "CloseApplication" }
  | { readonly _tag: "Finish"; readonly reason: Reason | "failed"; readonly forced: boolean; readonly millis: number }

export type Step<R, S, F> = readonly [State<R, S>, ReadonlyArray<Action<R, S, F>>]

/** The state of a process that has just begun, started by `parentPid` if it was. */
export const initial = <R, S = unknown>(parentPid: number | undefined): State<R, S> => ({
  phase: { _tag: "Starting" },
  parentPid
})

const log = <R, S, F>(message: string, annotations: Record<string, unknown> = {}): Action<R, S, F> => ({
  _tag: "Log",
  message,
  annotations
})

const enter = <R, S>(state: State<R, S>, phase: Phase<R, S>): State<R, S> => ({ ...state, phase })

const started = <R, S, F>(state: State<R, S>): Step<R, S, F> =>
  state.phase._tag === "Starting"
    ? [enter(state, { _tag: "Serving" }), [{ _tag: "AnnounceReady" }]]
    : // A termination came first: nothing is announced after STOPPING=1.
      [state, []]

const startupFailed = <R, S, F>(state: State<R, S>): Step<R, S, F> =>
  state.phase._tag === "Starting"
    ? [
        enter(state, { _tag: "Stopped", reason: "failed", forced: false }),
        [{ _tag: "CloseApplication" }, { _tag: "Finish", reason: "failed", forced: false, millis: 0 }]
      ]
    : [state, []]

const refusalIn = <R, S>(state: State<R, S>, rules: Rules): Refusal | undefined => {
  switch (state.phase._tag) {
    case "Starting":
      return { _tag: "NotServing", state: "starting" }
    case "Restarting":
    case "Rolling":
    case "Probation":
    case "Paused":
      return { _tag: "AlreadyInProgress" }
    case "Delaying":
    case "Draining":
    case "Stopped":
      return { _tag: "NotServing", state: "draining" }
    case "Serving":
      if (state.parentPid !== undefined) return { _tag: "ParentStillRunning", parentPid: state.parentPid }
      return rules.canHandOff ? undefined : { _tag: "RestartUnsupported" }
  }
}

// A roll needs neither native hand-off (the primary stays) nor the parent gone (its own workers roll).
const rollRefusal = <R, S>(state: State<R, S>, rules: Rules): Refusal | undefined =>
  !rules.canRoll ? { _tag: "RestartUnsupported" } : state.phase._tag === "Serving" ? undefined : refusalIn(state, rules)

const requestRestart = <R, S, F>(
  state: State<R, S>,
  event: Extract<Event<R, S, F>, { readonly _tag: "RestartRequested" }>,
  rules: Rules
): Step<R, S, F> => {
  const { reply, signal, kind } = event
  const requested = log<R, S, F>(
    kind === "roll" ? "effect-grace: rolling restart requested" : "effect-grace: restart requested",
    { by: signal ?? "call" }
  )
  const refusal = kind === "roll" ? rollRefusal(state, rules) : refusalIn(state, rules)
  if (refusal !== undefined) return [state, [requested, { _tag: "Refuse", reply, refusal }]]
  if (kind === "roll") {
    return [enter(state, { _tag: "Rolling", reply }), [requested, { _tag: "NotifyReloading" }, { _tag: "StartRoll" }]]
  }
  return [
    enter(state, { _tag: "Restarting", reply }),
    [requested, { _tag: "NotifyReloading" }, { _tag: "StartRestart" }]
  ]
}

// The first termination of a process that serves (or starts): unready, STOPPING=1, then the delay or the drain.
const beginStopping = <R, S, F>(state: State<R, S>, signals: number, rules: Rules): Step<R, S, F> => {
  const stopping: ReadonlyArray<Action<R, S, F>> = [{ _tag: "Unready", why: "stopping" }, { _tag: "NotifyStopping" }]
  if (state.phase._tag === "Starting") {
    return [
      enter(state, { _tag: "Draining", reason: "terminate", signals }),
      [...stopping, { _tag: "InterruptStartup" }, { _tag: "BeginDrain", reason: "terminate" }]
    ]
  }
  return rules.shutdownDelay
    ? [enter(state, { _tag: "Delaying", signals }), [...stopping, { _tag: "BeginDelay" }]]
    : [
        enter(state, { _tag: "Draining", reason: "terminate", signals }),
        [...stopping, { _tag: "BeginDrain", reason: "terminate" }]
      ]
}

const terminate = <R, S, F>(
  state: State<R, S>,
  source: Source,
  signal: string | undefined,
  rules: Rules
): Step<R, S, F> => {
  const requested = log<R, S, F>("effect-grace: termination requested", { by: signal ?? source })
  const signals = source === "signal" ? 1 : 0
  const phase = state.phase
  switch (phase._tag) {
    case "Starting":
    case "Serving": {
      const [next, actions] = beginStopping<R, S, F>(state, signals, rules)
      return [next, [requested, ...actions]]
    }
    case "Paused":
      // Not accepting already: no delay, the drain goes on to its end.
      return [
        enter(state, { _tag: "Draining", reason: "terminate", signals }),
        [requested, { _tag: "Unready", why: "stopping" }, { _tag: "BeginDrain", reason: "terminate" }]
      ]
    case "Restarting":
    case "Rolling": {
      // A restart is interrupted first: its successor is killed and reaped, and never announced. A roll's new
      // workers are stopped by the drain: those still starting are killed, and never serve.
      const [next, actions] = beginStopping<R, S, F>(state, signals, rules)
      const refused: Action<R, S, F> = {
        _tag: "Refuse",
        reply: phase.reply,
        refusal: { _tag: "NotServing", state: "draining" }
      }
      const interrupt: ReadonlyArray<Action<R, S, F>> =
        phase._tag === "Restarting" ? [{ _tag: "InterruptRestart" }] : []
      return [next, [requested, ...interrupt, refused, ...actions]]
    }
    case "Probation": {
      // Both end: the successor is asked to terminate as gracefully, and this process drains what it has left.
      const refused: Action<R, S, F> = {
        _tag: "Refuse",
        reply: phase.reply,
        refusal: { _tag: "NotServing", state: "draining" }
      }
      return [
        enter(state, { _tag: "Draining", reason: "terminate", signals: phase.signals + signals }),
        [
          requested,
          { _tag: "TerminateSuccessor", successor: phase.successor },
          refused,
          { _tag: "Unready", why: "stopping" },
          { _tag: "NotifyStopping" },
          { _tag: "BeginDrain", reason: "terminate" }
        ]
      ]
    }
    case "Delaying":
    case "Draining": {
      if (source !== "signal") return [state, []]
      // The second termination signal ends the process at once; a first one during a hand-off's drain lets it go on.
      const next = enter(state, { ...phase, signals: phase.signals + 1 })
      return phase.signals + 1 >= 2
        ? [next, [requested, { _tag: "ForceExit", signal: signal ?? "SIGTERM" }]]
        : [next, [requested]]
    }
    case "Stopped":
      return [state, []]
  }
}

const successorReady = <R, S, F>(state: State<R, S>, successor: S, pid: number, rules: Rules): Step<R, S, F> => {
  if (state.phase._tag !== "Restarting") return [state, [{ _tag: "KillSuccessor", successor }]]
  const reply = state.phase.reply
  if (rules.probation) {
    return [
      enter(state, { _tag: "Probation", reply, successor, pid, signals: 0 }),
      [
        { _tag: "WatchSuccessor", successor },
        { _tag: "BeginProbation", pid },
        { _tag: "Unready", why: "handed off" },
        { _tag: "PauseServing" }
      ]
    ]
  }
  return [
    enter(state, { _tag: "Draining", reason: "handoff", signals: 0 }),
    [
      { _tag: "ReleaseSuccessor", successor },
      { _tag: "HandOff", reply, pid, ready: true },
      { _tag: "Unready", why: "handed off" },
      { _tag: "BeginDrain", reason: "handoff" }
    ]
  ]
}

// The window has passed: first, is the successor alive? Its exit may have come at the same moment, and still be on
// its way: systemd's MAINPID must never name a process that has exited.
const probationOver = <R, S, F>(state: State<R, S>): Step<R, S, F> =>
  state.phase._tag === "Probation"
    ? [state, [{ _tag: "ConfirmSuccessor", successor: state.phase.successor }]]
    : [state, []]

// The successor outlived its window: it replaces this process, whose servers have drained already.
const successorAlive = <R, S, F>(state: State<R, S>): Step<R, S, F> => {
  if (state.phase._tag !== "Probation") return [state, []]
  const { reply, successor, pid, signals } = state.phase
  return [
    enter(state, { _tag: "Draining", reason: "handoff", signals }),
    [
      { _tag: "ReleaseSuccessor", successor },
      { _tag: "HandOff", reply, pid, ready: false },
      { _tag: "BeginDrain", reason: "handoff" }
    ]
  ]
}

// The successor died within its window: this process serves again, on the sockets it kept.
const successorExited = <R, S, F>(
  state: State<R, S>,
  event: Extract<Event<R, S, F>, { readonly _tag: "SuccessorExited" }>
): Step<R, S, F> => {
  if (state.phase._tag !== "Probation" || state.phase.pid !== event.pid) return [state, []]
  const { pid, code, signal } = event
  return [enter(state, { _tag: "Serving" }), [{ _tag: "HandBack", reply: state.phase.reply, pid, code, signal }]]
}

const restartFailed = <R, S, F>(state: State<R, S>, failure: F, during: "Restarting" | "Rolling"): Step<R, S, F> =>
  state.phase._tag === during
    ? [enter(state, { _tag: "Serving" }), [{ _tag: "RestartFailed", reply: state.phase.reply, failure }]]
    : [state, []]

const rollDone = <R, S, F>(state: State<R, S>, pid: number): Step<R, S, F> =>
  state.phase._tag === "Rolling"
    ? [enter(state, { _tag: "Serving" }), [{ _tag: "RollDone", reply: state.phase.reply, pid }]]
    : [state, []]

const pause = <R, S, F>(state: State<R, S>): Step<R, S, F> =>
  state.phase._tag === "Serving"
    ? [enter(state, { _tag: "Paused" }), [{ _tag: "Unready", why: "handed off" }, { _tag: "PauseServing" }]]
    : [state, []]

const resume = <R, S, F>(state: State<R, S>): Step<R, S, F> =>
  state.phase._tag === "Paused" ? [enter(state, { _tag: "Serving" }), [{ _tag: "ResumeServing" }]] : [state, []]

const delayOver = <R, S, F>(state: State<R, S>): Step<R, S, F> =>
  state.phase._tag === "Delaying"
    ? [
        enter(state, { _tag: "Draining", reason: "terminate", signals: state.phase.signals }),
        [{ _tag: "BeginDrain", reason: "terminate" }]
      ]
    : [state, []]

const drained = <R, S, F>(state: State<R, S>, millis: number): Step<R, S, F> => {
  if (state.phase._tag !== "Draining") return [state, []]
  const { reason, signals } = state.phase
  const forced = signals >= 2
  return [enter(state, { _tag: "Stopped", reason, forced }), [{ _tag: "Finish", reason, forced, millis }]]
}

/** The next state, and what to do, when `event` arrives in `state`. */
export const transition = <R, S, F>(state: State<R, S>, event: Event<R, S, F>, rules: Rules): Step<R, S, F> => {
  switch (event._tag) {
    case "Started":
      return started(state)
    case "StartupFailed":
      return startupFailed(state)
    case "RestartRequested":
      return requestRestart(state, event, rules)
    case "SuccessorReady":
      return successorReady(state, event.successor, event.pid, rules)
    case "ProbationOver":
      return probationOver(state)
    case "SuccessorAlive":
      return successorAlive(state)
    case "SuccessorExited":
      return successorExited(state, event)
    case "RestartFailed":
      return restartFailed(state, event.failure, "Restarting")
    case "RollDone":
      return rollDone(state, event.pid)
    case "RollStopped":
      return restartFailed(state, event.failure, "Rolling")
    case "Pause":
      return pause(state)
    case "Resume":
      return resume(state)
    case "ParentExited":
      return [{ ...state, parentPid: undefined }, []]
    case "Terminate":
      return terminate(state, event.source, event.signal, rules)
    case "DelayOver":
      return delayOver(state)
    case "Drained":
      return drained(state, event.millis)
  }
}
