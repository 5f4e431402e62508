/**
 * The supervisor's whole life as a state machine: a pure function of the
 * state, an event and the time it arrived, giving the next state and the
 * actions the interpreter (interpreter.ts) carries out, in order, on the
 * loop (loop.ts) that owns the state. Nothing else decides; what others know
 * of the process (its readiness, whether it is closing, forced, started or
 * stopped) is derived from this state.
 *
 * Phases: Starting → Serving ⇄ Restarting (→ Probation → Serving, on a
 * hand-back) → (Delaying →) Draining → Stopped. A primary (workers) also
 * goes Serving ⇄ Rolling, a rolling restart of its workers; a worker goes
 * Serving ⇄ Paused, as its primary says.
 *
 * The invariants, written here once (the README states them for users):
 * - Every restart asked for lands: once the restarts have settled, every
 *   process that serves was started after the last request. One restart runs
 *   at a time; one asked for meanwhile (before ready, during a restart, a
 *   probation or a roll, or while the parent that started this process still
 *   drains) is kept, not refused: at most one is pending, later ones join it,
 *   and it runs as soon as the one under way ends, whatever its outcome. A
 *   full upgrade covers a roll. A process that has handed off passes what is
 *   asked of it on to its successor, which serves then. Only a process that
 *   is stopping, or one that cannot restart at all, refuses. Every request,
 *   wait and refusal is logged, and every caller answered with the outcome of
 *   the restart that covers its request.
 * - A termination wins over whatever is under way: a start-up is interrupted
 *   (its partly built application closed), a restart is interrupted (its
 *   successor killed and reaped) before anything is said to systemd, so
 *   nothing follows `STOPPING=1`, and `READY=1` never comes after it; a
 *   pending restart is refused.
 * - The old process stops accepting only after the successor is ready, and
 *   the two share the listening sockets, so no connection is refused. A
 *   successor that is ready once this process no longer restarts is killed:
 *   only a restart still under way hands off.
 * - A failed restart (spawn failure, early exit, readiness timeout) leaves
 *   this process serving, answers the callers with its reason, and leaves no
 *   successor behind.
 * - With a probation window, a successor that is ready does not yet replace
 *   this process: this process stops accepting and drains, but keeps its
 *   sockets and its application; if the successor exits within the window,
 *   this process accepts again and serves on (hand-back), and systemd's
 *   `MAINPID` names the successor only once the window has passed and it is
 *   found alive then, so it never names a process that died in the window.
 * - Every drain has a deadline; the second termination signal of a drain (or
 *   of the shutdown delay) forces the exit. A call or the scope closing is
 *   not a signal, and never forces.
 * - Unready (`readiness`) from the moment a termination begins or a
 *   successor takes over, before anything stops accepting; a worker is ready
 *   only once its primary says the whole group serves.
 *
 * `R` is how a programmatic restart is answered (a Deferred), `S` a successor
 * that is ready and `F` why a restart failed; the machine only carries them.
 */
import type { Step } from "./loop.ts"

/** Why a restart is refused: this process is stopping, or cannot restart (that way) at all. */
export type Refusal =
  | { readonly _tag: "NotServing"; readonly state: "draining" }
  | { readonly _tag: "RestartUnsupported"; readonly kind: Kind }

/** Why this process drains: it was told to stop, or it handed its listeners on. */
export type Reason = "terminate" | "handoff"

/** A restart asked for while another was under way: at most one, which later requests join. */
export interface Pending<R> {
  readonly kind: Kind
  readonly replies: ReadonlyArray<R>
  /** Asked for by the parent that passed it on: its drain is not waited for (it waits for the outcome). */
  readonly passedOn: boolean
}

export type Phase<R, S = unknown> =
  | { readonly _tag: "Starting" }
  | { readonly _tag: "Serving" }
  /** A successor starting; `since` when this restart began. */
  | { readonly _tag: "Restarting"; readonly replies: ReadonlyArray<R>; readonly since: number }
  /** A primary restarts its workers, a slot at a time. */
  | { readonly _tag: "Rolling"; readonly replies: ReadonlyArray<R>; readonly since: number }
  /** A worker, told by its primary: stopped accepting and drained, ready to accept again. */
  | { readonly _tag: "Paused" }
  /** The successor serves; this process has stopped accepting, and takes the service back if it dies. */
  | {
      readonly _tag: "Probation"
      readonly replies: ReadonlyArray<R>
      readonly successor: S
      readonly pid: number
      readonly signals: number
      readonly since: number
    }
  /** The shutdown delay: still serving, unready, every response saying `Connection: close`. */
  | { readonly _tag: "Delaying"; readonly signals: number }
  /** Draining; after a hand-off, `successor` is the process that serves now, to which a restart asked for goes. */
  | { readonly _tag: "Draining"; readonly reason: Reason; readonly signals: number; readonly successor?: S }
  /** Over; `failure` is why a start-up failed (its cause, for whoever runs the supervisor). */
  | {
      readonly _tag: "Stopped"
      readonly reason: Reason | "failed"
      readonly forced: boolean
      readonly failure?: unknown
    }

export interface State<R, S = unknown> {
  readonly phase: Phase<R, S>
  /** The pid of the parent this process took over from, until it has exited. */
  readonly parentPid: number | undefined
  /** The application has been ready: its servers have served, and their drains are worth reporting. */
  readonly served: boolean
  /** The shutdown delay has begun: from then on every response says `Connection: close`. */
  readonly closing: boolean
  /** A worker's primary has said that the whole group serves. */
  readonly groupServing: boolean
  /** The restart asked for while another was under way (or before this process could restart). */
  readonly pending: Pending<R> | undefined
  /** Why the start-up failed, when it failed after a termination had begun: whoever runs it hears it still. */
  readonly failure?: unknown
}

/** What the role fixed when the process started; the same for its whole life. */
export interface Rules {
  /** Whether listeners can be handed on here (native calls available, not PID 1, not a worker). */
  readonly canHandOff: boolean
  /** Whether a termination waits for a shutdown delay before the drain. */
  readonly shutdownDelay: boolean
  /** Whether a successor that is ready goes through a probation window before it replaces this process. */
  readonly probation: boolean
  /** Whether this process is a primary, whose workers restart in turn. */
  readonly canRoll: boolean
  /** Whether this process is ready only once its primary says the group serves (a worker). */
  readonly waitsForGroup: boolean
}

/** A restart of this process (a successor takes over), or of a primary's workers, one slot at a time. */
export type Kind = "upgrade" | "roll"

export type Source = "signal" | "call" | "scope" | "primary"

/** A worker a roll started: its slot and pid. */
export interface Rolled {
  readonly slot: number
  readonly pid: number
}

export type Event<R, S, F> =
  /** The application's layers are built: every server listens. */
  | { readonly _tag: "Started" }
  /** Building the application failed, with `cause`; reported to whoever launched it. */
  | { readonly _tag: "StartupFailed"; readonly cause: unknown }
  | {
      readonly _tag: "RestartRequested"
      readonly reply: R | undefined
      /** Who asked: a signal's name, `call`, `parent` (passed on by the process this one replaced), a worker. */
      readonly by: string
      readonly kind: Kind
      /**
       * Passed on by the parent this process replaced, which asked for it once this one served: the parent's drain
       * is not waited for, as the parent waits for its outcome (its caller may be a request it drains).
       */
      readonly passedOn?: boolean | undefined
    }
  /** Every slot of a rolling restart has rolled: the new workers. */
  | { readonly _tag: "RollDone"; readonly pid: number; readonly workers: ReadonlyArray<Rolled> }
  /** A rolling restart stopped: the slots not rolled keep their workers. */
  | { readonly _tag: "RollStopped"; readonly failure: F }
  /** A worker's primary asks it to stop accepting (and drain), or to accept again, or says the group serves. */
  | { readonly _tag: "Pause" }
  | { readonly _tag: "Resume" }
  | { readonly _tag: "GroupServing" }
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
  /** An action failed (its cause is logged, `failure` says it as a restart's failure): the machine decides what follows. */
  | { readonly _tag: "ActionFailed"; readonly action: Action<R, S, F>["_tag"]; readonly failure: F }

export type Action<R, S, F> =
  | { readonly _tag: "Log"; readonly message: string; readonly annotations: Readonly<Record<string, unknown>> }
  /** Unclaimed fds closed, the PID file written, the parent or systemd told. */
  | { readonly _tag: "AnnounceReady" }
  | { readonly _tag: "Refuse"; readonly replies: ReadonlyArray<R>; readonly refusal: Refusal }
  /** A restart asked for waits for the one under way (`waitingFor`, in words): logged and counted. */
  | { readonly _tag: "Queue"; readonly kind: Kind; readonly waitingFor: string }
  /** A restart asked for after the hand-off is passed on to the successor, which serves now; its callers answered. */
  | { readonly _tag: "Forward"; readonly successor: S; readonly kind: Kind; readonly replies: ReadonlyArray<R> }
  | { readonly _tag: "NotifyReloading" }
  | { readonly _tag: "StartRestart" }
  | { readonly _tag: "StartRoll" }
  | {
      readonly _tag: "RollDone"
      readonly replies: ReadonlyArray<R>
      readonly pid: number
      readonly workers: ReadonlyArray<Rolled>
      readonly millis: number
    }
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
      readonly replies: ReadonlyArray<R>
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
   * unless the probation said it already), the callers are answered; `millis` since the restart began.
   */
  | {
      readonly _tag: "HandOff"
      readonly replies: ReadonlyArray<R>
      readonly pid: number
      readonly ready: boolean
      readonly millis: number
    }
  | { readonly _tag: "RestartFailed"; readonly replies: ReadonlyArray<R>; readonly failure: F }
  | { readonly _tag: "NotifyStopping" }
  | { readonly _tag: "InterruptStartup" }
  | { readonly _tag: "BeginDelay" }
  | { readonly _tag: "BeginDrain"; readonly reason: Reason }
  | { readonly _tag: "ForceExit"; readonly signal: string }
  /** Closes what a failed start-up built. */
  | { readonly _tag: "CloseApplication" }
  | { readonly _tag: "Finish"; readonly reason: Reason | "failed"; readonly forced: boolean; readonly millis: number }

type Next<R, S, F> = Step<State<R, S>, Action<R, S, F>>

/** The state of a process that has just begun, started by `parentPid` if it was. */
export const initial = <R, S = unknown>(parentPid: number | undefined): State<R, S> => ({
  phase: { _tag: "Starting" },
  parentPid,
  served: false,
  closing: false,
  groupServing: false,
  pending: undefined
})

// -----------------------------------------------------------------------------
// What others know of the state
// -----------------------------------------------------------------------------

/** Readiness, as probes see it: the life of the process in one word (`Health`'s phase). */
export type Readiness = "starting" | "serving" | "stopping" | "handed off"

/** The readiness of a process in `state`. */
export const readiness = <R, S>(state: State<R, S>, rules: Rules): Readiness => {
  const phase = state.phase
  switch (phase._tag) {
    case "Starting":
      return "starting"
    case "Serving":
    case "Restarting":
    case "Rolling":
      return rules.waitsForGroup && !state.groupServing ? "starting" : "serving"
    case "Paused":
    case "Probation":
      return "handed off"
    case "Delaying":
      return "stopping"
    case "Draining":
    case "Stopped":
      return phase.reason === "handoff" ? "handed off" : "stopping"
  }
}

/** Whether a second termination signal has forced the end: every drain (and the shutdown delay) ends now. */
export const isForced = <R, S>(state: State<R, S>): boolean => {
  const phase = state.phase
  switch (phase._tag) {
    case "Delaying":
    case "Draining":
      return phase.signals >= 2
    case "Stopped":
      return phase.forced
    default:
      return false
  }
}

// -----------------------------------------------------------------------------
// Restarts asked for, begun, kept and passed on
// -----------------------------------------------------------------------------

const log = <R, S, F>(message: string, annotations: Record<string, unknown> = {}): Action<R, S, F> => ({
  _tag: "Log",
  message,
  annotations
})

const enter = <R, S>(state: State<R, S>, phase: Phase<R, S>): State<R, S> => ({ ...state, phase })

const repliesOf = <R>(reply: R | undefined): ReadonlyArray<R> => (reply === undefined ? [] : [reply])

// Whether a restart of `kind` can begin now; what it waits for, in words, if not.
const waitingFor = <R, S>(state: State<R, S>, kind: Kind, passedOn: boolean): string | undefined => {
  switch (state.phase._tag) {
    case "Starting":
      return "the start-up"
    case "Restarting":
      return "the restart under way"
    case "Rolling":
      return "the roll under way"
    case "Probation":
      return "the successor's probation"
    case "Serving":
      // A roll restarts this process's own workers: no need for the parent to be gone; nor for one the parent asked.
      return kind === "upgrade" && state.parentPid !== undefined && !passedOn
        ? `the parent (pid ${state.parentPid}) to exit`
        : undefined
    default:
      return "the state this process is in"
  }
}

// Nothing can honour it: this process is stopping (or has handed off with nobody to pass it on to), or it cannot
// restart this way at all.
const refusalOf = <R, S>(state: State<R, S>, kind: Kind, rules: Rules): Refusal | undefined => {
  const phase = state.phase
  const stopping = phase._tag === "Delaying" || phase._tag === "Draining" || phase._tag === "Stopped"
  if (stopping && !(phase._tag === "Draining" && phase.successor !== undefined)) {
    return { _tag: "NotServing", state: "draining" }
  }
  if (kind === "roll" ? !rules.canRoll : !rules.canHandOff) return { _tag: "RestartUnsupported", kind }
  return undefined
}

// The restart of `kind`, begun now for `replies`: RELOADING, then the successor or the roll.
const begin = <R, S, F>(state: State<R, S>, kind: Kind, replies: ReadonlyArray<R>, now: number): Next<R, S, F> =>
  kind === "roll"
    ? [enter(state, { _tag: "Rolling", replies, since: now }), [{ _tag: "NotifyReloading" }, { _tag: "StartRoll" }]]
    : [
        enter(state, { _tag: "Restarting", replies, since: now }),
        [{ _tag: "NotifyReloading" }, { _tag: "StartRestart" }]
      ]

// At most one pending: a later request joins it, and an upgrade covers a roll.
const join = <R>(pending: Pending<R> | undefined, kind: Kind, replies: ReadonlyArray<R>, passedOn: boolean) => ({
  kind: pending?.kind === "upgrade" || kind === "upgrade" ? ("upgrade" as const) : ("roll" as const),
  replies: [...(pending?.replies ?? []), ...replies],
  passedOn: passedOn || (pending?.passedOn ?? false)
})

const requestRestart = <R, S, F>(
  state: State<R, S>,
  event: Extract<Event<R, S, F>, { readonly _tag: "RestartRequested" }>,
  rules: Rules,
  now: number
): Next<R, S, F> => {
  const { reply, by, kind } = event
  const passedOn = event.passedOn === true
  const requested = log<R, S, F>(
    kind === "roll" ? "effect-grace: rolling restart requested" : "effect-grace: restart requested",
    { by }
  )
  const refusal = refusalOf(state, kind, rules)
  if (refusal !== undefined) return [state, [requested, { _tag: "Refuse", replies: repliesOf(reply), refusal }]]
  const phase = state.phase
  if (phase._tag === "Draining" && phase.successor !== undefined) {
    return [state, [requested, { _tag: "Forward", successor: phase.successor, kind, replies: repliesOf(reply) }]]
  }
  // Joined to what was kept already (at most one pending), it begins at once if nothing is under way for it to wait.
  const pending = join(state.pending, kind, repliesOf(reply), passedOn)
  const [next, actions] = runPending<R, S, F>([{ ...state, pending }, [requested]], now)
  if (next.pending === undefined) return [next, actions]
  const waiting = waitingFor(state, pending.kind, pending.passedOn) ?? "the restart asked for before"
  return [next, [...actions, { _tag: "Queue", kind: pending.kind, waitingFor: waiting }]]
}

// Whatever ended (a start-up, a restart, a roll, the parent's drain), the restart kept meanwhile begins, if it can.
const runPending = <R, S, F>(step: Next<R, S, F>, now: number): Next<R, S, F> => {
  const [state, actions] = step
  const pending = state.pending
  if (pending === undefined || waitingFor(state, pending.kind, pending.passedOn) !== undefined) return step
  const [next, more] = begin<R, S, F>({ ...state, pending: undefined }, pending.kind, pending.replies, now)
  return [next, [...actions, ...more]]
}

// A hand-off: what was kept for this process goes to the successor, which serves from now on.
const handOn = <R, S, F>(state: State<R, S>, successor: S): ReadonlyArray<Action<R, S, F>> =>
  state.pending === undefined
    ? []
    : [{ _tag: "Forward", successor, kind: state.pending.kind, replies: state.pending.replies }]

// -----------------------------------------------------------------------------
// Start-up and termination
// -----------------------------------------------------------------------------

const started = <R, S, F>(state: State<R, S>, now: number): Next<R, S, F> =>
  state.phase._tag === "Starting"
    ? runPending([{ ...enter(state, { _tag: "Serving" }), served: true }, [{ _tag: "AnnounceReady" }]], now)
    : // A termination came first: nothing is announced after STOPPING=1.
      [state, []]

// A start-up a termination cut may still fail (what it had built fails to close, say): the drain goes on, and the
// failure is the run's all the same.
const startupFailed = <R, S, F>(state: State<R, S>, cause: unknown): Next<R, S, F> => {
  if (state.phase._tag !== "Starting") {
    return state.served || state.phase._tag === "Stopped" ? [state, []] : [{ ...state, failure: cause }, []]
  }
  return [
    { ...enter(state, { _tag: "Stopped", reason: "failed", forced: false, failure: cause }), pending: undefined },
    [
      ...refusePending<R, S, F>(state),
      { _tag: "CloseApplication" },
      { _tag: "Finish", reason: "failed", forced: false, millis: 0 }
    ]
  ]
}

const refusedBy = <R, S, F>(replies: ReadonlyArray<R>): Action<R, S, F> => ({
  _tag: "Refuse",
  replies,
  refusal: { _tag: "NotServing", state: "draining" }
})

// A restart kept for later is refused once this process stops: nothing will honour it.
const refusePending = <R, S, F>(state: State<R, S>): ReadonlyArray<Action<R, S, F>> =>
  state.pending === undefined ? [] : [refusedBy(state.pending.replies)]

// The first termination of a process that serves (or starts): unready, STOPPING=1, then the delay or the drain.
const beginStopping = <R, S, F>(state: State<R, S>, signals: number, rules: Rules): Next<R, S, F> => {
  const stopping: ReadonlyArray<Action<R, S, F>> = [{ _tag: "NotifyStopping" }]
  if (state.phase._tag === "Starting") {
    return [
      enter(state, { _tag: "Draining", reason: "terminate", signals }),
      [...stopping, { _tag: "InterruptStartup" }, { _tag: "BeginDrain", reason: "terminate" }]
    ]
  }
  return rules.shutdownDelay
    ? [{ ...enter(state, { _tag: "Delaying", signals }), closing: true }, [...stopping, { _tag: "BeginDelay" }]]
    : [
        enter(state, { _tag: "Draining", reason: "terminate", signals }),
        [...stopping, { _tag: "BeginDrain", reason: "terminate" }]
      ]
}

// A restart or a roll under way is cut first: a successor is killed and reaped, and never announced; a roll's new
// workers are stopped by the drain (those still starting are killed, and never serve).
const stopRestart = <R, S, F>(
  state: State<R, S>,
  phase: Extract<Phase<R, S>, { readonly _tag: "Restarting" | "Rolling" }>,
  signals: number,
  rules: Rules
): Next<R, S, F> => {
  const [next, actions] = beginStopping<R, S, F>(state, signals, rules)
  const interrupt: ReadonlyArray<Action<R, S, F>> = phase._tag === "Restarting" ? [{ _tag: "InterruptRestart" }] : []
  return [next, [...interrupt, refusedBy(phase.replies), ...actions]]
}

// Both end: the successor is asked to terminate as gracefully, and this process drains what it has left.
const stopProbation = <R, S, F>(
  state: State<R, S>,
  phase: Extract<Phase<R, S>, { readonly _tag: "Probation" }>,
  signals: number
): Next<R, S, F> => [
  enter(state, { _tag: "Draining", reason: "terminate", signals: phase.signals + signals }),
  [
    { _tag: "TerminateSuccessor", successor: phase.successor },
    refusedBy(phase.replies),
    { _tag: "NotifyStopping" },
    { _tag: "BeginDrain", reason: "terminate" }
  ]
]

// The second termination signal ends the process at once; a first one during a hand-off's drain lets it go on.
const stopAgain = <R, S, F>(
  state: State<R, S>,
  phase: Extract<Phase<R, S>, { readonly _tag: "Delaying" | "Draining" }>,
  signal: string | undefined
): Next<R, S, F> => {
  const next = enter(state, { ...phase, signals: phase.signals + 1 })
  return phase.signals + 1 >= 2 ? [next, [{ _tag: "ForceExit", signal: signal ?? "SIGTERM" }]] : [next, []]
}

const stopping = <R, S, F>(
  state: State<R, S>,
  source: Source,
  signal: string | undefined,
  rules: Rules
): Next<R, S, F> => {
  const signals = source === "signal" ? 1 : 0
  const phase = state.phase
  switch (phase._tag) {
    case "Starting":
    case "Serving":
      return beginStopping(state, signals, rules)
    case "Paused":
      // Not accepting already: no delay, the drain goes on to its end.
      return [
        enter(state, { _tag: "Draining", reason: "terminate", signals }),
        [{ _tag: "BeginDrain", reason: "terminate" }]
      ]
    case "Restarting":
    case "Rolling":
      return stopRestart(state, phase, signals, rules)
    case "Probation":
      return stopProbation(state, phase, signals)
    case "Delaying":
    case "Draining":
      return source === "signal" ? stopAgain(state, phase, signal) : [state, []]
    case "Stopped":
      return [state, []]
  }
}

const isStopping = <R, S>(state: State<R, S>): boolean =>
  state.phase._tag === "Delaying" || state.phase._tag === "Draining"

const terminate = <R, S, F>(
  state: State<R, S>,
  source: Source,
  signal: string | undefined,
  rules: Rules
): Next<R, S, F> => {
  const quiet = state.phase._tag === "Stopped" || (source !== "signal" && isStopping(state))
  if (quiet) return [state, []]
  const [next, actions] = stopping<R, S, F>(state, source, signal, rules)
  return [
    { ...next, pending: undefined },
    [
      log<R, S, F>("effect-grace: termination requested", { by: signal ?? source }),
      ...refusePending<R, S, F>(state),
      ...actions
    ]
  ]
}

const delayOver = <R, S, F>(state: State<R, S>): Next<R, S, F> =>
  state.phase._tag === "Delaying"
    ? [
        enter(state, { _tag: "Draining", reason: "terminate", signals: state.phase.signals }),
        [{ _tag: "BeginDrain", reason: "terminate" }]
      ]
    : [state, []]

const drained = <R, S, F>(state: State<R, S>, millis: number): Next<R, S, F> => {
  if (state.phase._tag !== "Draining") return [state, []]
  const { reason, signals } = state.phase
  const forced = signals >= 2
  const stopped: Phase<R, S> =
    state.failure === undefined
      ? { _tag: "Stopped", reason, forced }
      : { _tag: "Stopped", reason, forced, failure: state.failure }
  return [enter(state, stopped), [{ _tag: "Finish", reason, forced, millis }]]
}

// -----------------------------------------------------------------------------
// A restart's course
// -----------------------------------------------------------------------------

// The successor replaces this process now: released, MAINPID, the drain; what was kept goes to the successor.
const handOff = <R, S, F>(
  state: State<R, S>,
  running: { readonly replies: ReadonlyArray<R>; readonly since: number; readonly signals: number },
  successor: S,
  pid: number,
  ready: boolean,
  now: number
): Next<R, S, F> => [
  { ...enter(state, { _tag: "Draining", reason: "handoff", signals: running.signals, successor }), pending: undefined },
  [
    { _tag: "ReleaseSuccessor", successor },
    { _tag: "HandOff", replies: running.replies, pid, ready, millis: now - running.since },
    ...handOn<R, S, F>(state, successor),
    { _tag: "BeginDrain", reason: "handoff" }
  ]
]

const successorReady = <R, S, F>(
  state: State<R, S>,
  successor: S,
  pid: number,
  rules: Rules,
  now: number
): Next<R, S, F> => {
  if (state.phase._tag !== "Restarting") return [state, [{ _tag: "KillSuccessor", successor }]]
  const { replies, since } = state.phase
  if (rules.probation) {
    return [
      enter(state, { _tag: "Probation", replies, successor, pid, signals: 0, since }),
      [{ _tag: "WatchSuccessor", successor }, { _tag: "BeginProbation", pid }, { _tag: "PauseServing" }]
    ]
  }
  return handOff(state, { replies, since, signals: 0 }, successor, pid, true, now)
}

// The window has passed: first, is the successor alive? Its exit may have come at the same moment, and still be on
// its way: systemd's MAINPID must never name a process that has exited.
const probationOver = <R, S, F>(state: State<R, S>): Next<R, S, F> =>
  state.phase._tag === "Probation"
    ? [state, [{ _tag: "ConfirmSuccessor", successor: state.phase.successor }]]
    : [state, []]

// The successor outlived its window: it replaces this process, whose servers have drained already.
const successorAlive = <R, S, F>(state: State<R, S>, now: number): Next<R, S, F> => {
  if (state.phase._tag !== "Probation") return [state, []]
  const { successor, pid } = state.phase
  return handOff(state, state.phase, successor, pid, false, now)
}

// The successor died within its window: this process serves again, on the sockets it kept, and what was kept for
// later runs now.
const successorExited = <R, S, F>(
  state: State<R, S>,
  event: Extract<Event<R, S, F>, { readonly _tag: "SuccessorExited" }>,
  now: number
): Next<R, S, F> => {
  if (state.phase._tag !== "Probation" || state.phase.pid !== event.pid) return [state, []]
  const { pid, code, signal } = event
  const back: Action<R, S, F> = { _tag: "HandBack", replies: state.phase.replies, pid, code, signal }
  return runPending([enter(state, { _tag: "Serving" }), [back]], now)
}

const restartFailed = <R, S, F>(
  state: State<R, S>,
  failure: F,
  during: "Restarting" | "Rolling",
  now: number
): Next<R, S, F> =>
  state.phase._tag === during
    ? runPending(
        [enter(state, { _tag: "Serving" }), [{ _tag: "RestartFailed", replies: state.phase.replies, failure }]],
        now
      )
    : [state, []]

const rollDone = <R, S, F>(
  state: State<R, S>,
  event: Extract<Event<R, S, F>, { readonly _tag: "RollDone" }>,
  now: number
): Next<R, S, F> => {
  if (state.phase._tag !== "Rolling") return [state, []]
  const { replies, since } = state.phase
  const done: Action<R, S, F> = {
    _tag: "RollDone",
    replies,
    pid: event.pid,
    workers: event.workers,
    millis: now - since
  }
  return runPending([enter(state, { _tag: "Serving" }), [done]], now)
}

const parentExited = <R, S, F>(state: State<R, S>, now: number): Next<R, S, F> =>
  runPending([{ ...state, parentPid: undefined }, []], now)

const pause = <R, S, F>(state: State<R, S>): Next<R, S, F> =>
  state.phase._tag === "Serving" ? [enter(state, { _tag: "Paused" }), [{ _tag: "PauseServing" }]] : [state, []]

const resume = <R, S, F>(state: State<R, S>): Next<R, S, F> =>
  state.phase._tag === "Paused" ? [enter(state, { _tag: "Serving" }), [{ _tag: "ResumeServing" }]] : [state, []]

// A restart's own work that failed outright (not a successor's failure, which has its event) is a failed restart;
// any other action's failure is logged, and the life goes on.
const actionFailed = <R, S, F>(
  state: State<R, S>,
  action: Action<R, S, F>["_tag"],
  failure: F,
  now: number
): Next<R, S, F> => (action === "StartRestart" ? restartFailed(state, failure, "Restarting", now) : [state, []])

/** The next state, and what to do, when `event` arrives in `state` at `now` (milliseconds). */
export const transition = <R, S, F>(
  state: State<R, S>,
  event: Event<R, S, F>,
  rules: Rules,
  now = 0
): Next<R, S, F> => {
  switch (event._tag) {
    case "Started":
      return started(state, now)
    case "StartupFailed":
      return startupFailed(state, event.cause)
    case "RestartRequested":
      return requestRestart(state, event, rules, now)
    case "SuccessorReady":
      return successorReady(state, event.successor, event.pid, rules, now)
    case "ProbationOver":
      return probationOver(state)
    case "SuccessorAlive":
      return successorAlive(state, now)
    case "SuccessorExited":
      return successorExited(state, event, now)
    case "RestartFailed":
      return restartFailed(state, event.failure, "Restarting", now)
    case "RollDone":
      return rollDone(state, event, now)
    case "RollStopped":
      return restartFailed(state, event.failure, "Rolling", now)
    case "Pause":
      return pause(state)
    case "Resume":
      return resume(state)
    case "GroupServing":
      return [{ ...state, groupServing: true }, []]
    case "ParentExited":
      return parentExited(state, now)
    case "Terminate":
      return terminate(state, event.source, event.signal, rules)
    case "DelayOver":
      return delayOver(state)
    case "Drained":
      return drained(state, event.millis)
    case "ActionFailed":
      return actionFailed(state, event.action, event.failure, now)
  }
}
