/**
 * The workers of a primary, as a state machine: a pure function of the state
 * and an event, giving the next state and the actions the primary carries
 * out, in order, as the supervisor's own machine (machine.ts) does. The
 * primary never accepts: its workers do, on the listening sockets it holds
 * for the life of the service and passes to each worker it starts.
 *
 * Each slot has at most one worker that serves, and while it is being
 * replaced, one more: a new worker starting, or, once ready, on probation
 * while the old one is paused (it stopped accepting and drains, but can
 * accept again). Old workers a roll let go (`retiring`) belong to no slot:
 * paused, they drain in the background and exit.
 *
 * - Start: every slot starts a worker; the group is ready (phase `Serving`)
 *   once every slot serves. A worker that exits before the group was first
 *   ready fails the start-up (`failure`): the program is broken, and says so
 *   at once.
 * - Rolling restart: the probation protects the roll, not each slot. The
 *   first slot's new worker is the canary: once it is ready, the old one is
 *   paused and the canary is on probation; once that has passed, the old one
 *   drains in the background, and the other slots roll `surge` at a time,
 *   each new worker replacing its old one (paused, then draining in the
 *   background) as soon as it is ready. At most N + surge workers accept at
 *   any moment, and at most `surge` slots start a new worker at a time (a
 *   replacement after a death counts among them). A new worker that exits
 *   before it is ready, or within its probation (the old one then accepts
 *   again), stops the rollout: the slots not begun keep their old workers,
 *   and every slot serves. A slot whose replacement is still starting when
 *   the roll reaches it waits for it, then rolls: every worker that serves
 *   once the roll is done was started after it began.
 * - A worker that serves and dies is replaced at once; a replacement that dies
 *   before it is ready is started again after a delay that grows 1.5x per
 *   death (as einhorn does), capped.
 * - Memory: a worker that serves and stays above the memory limit (its owner
 *   watches, memory.ts, and says so: `OverMemory`) is replaced as a roll
 *   replaces its slot: a new worker first, and once it is ready the old one
 *   is paused and drains. One slot at a time, never while a roll runs, nor
 *   while any slot starts a worker or waits to (a death's replacement, the
 *   group's probation); what is refused is said again by the watch after
 *   another grace period. A replacement for a worker that was above the
 *   limit from its start (its predecessor's replacement, a second time in a
 *   row) waits as a replacement after a death does: the limit is too low for
 *   the program, and the slot does not restart in a loop.
 * - The whole group pauses and resumes together, during the primary's own
 *   probation after a full upgrade.
 * - Stop: workers still starting are killed; every other one drains and
 *   exits; the pool has stopped (phase `Stopped`) once none is left. A forced stop (a second
 *   termination signal) kills every worker left.
 * - Sockets: the listening sockets of the group are the pool's, in order:
 *   inherited ones first, then those bound for a worker's ask, a group of
 *   `SO_REUSEPORT` sockets per address (one a slot) or one shared socket.
 *   Each worker is started with one socket of each (its slot's), and a
 *   worker's ask for an address the group holds is answered with its slot's
 *   socket; one the group does not hold is bound once, whoever asks meanwhile
 *   waiting for it.
 * - Loans: the kernel hands each new connection to one socket of a
 *   `SO_REUSEPORT` group whether or not a worker accepts on it, so a slot with
 *   no worker that accepts (dead, backing off, still starting) would keep
 *   its share in its backlog until the backlog fills and connections are
 *   dropped. Once the group serves, such a slot's sockets (its socket of each
 *   group) are lent to a worker of another slot that accepts, which accepts on
 *   them too for its own servers of those addresses; the loans spread over
 *   the workers that accept, the fewest first. A loan is taken back as soon as
 *   the slot's own worker accepts (the primary keeps its socket open, so
 *   nothing queued is lost), and moved before its borrower is paused or
 *   terminated (taken back first, lent again once the step is done); what a
 *   borrower held when it died is lent again. After every step: each loan is
 *   held by a worker that accepts, for a slot with none that does, and every
 *   such slot is lent if any worker accepts.
 *
 * Workers are known by an id the machine gives them when it starts them.
 */
import type { Step as LoopStep } from "./loop.ts"
import type { ChildExit, ListenFailure, ListenRequest } from "./protocol.ts"

/** How a worker failed: it exited (before it was ready, or within its probation), or it never started. */
export type Failure =
  | { readonly _tag: "ExitedBeforeReady" | "HandedBack"; readonly slot: number; readonly exit: ChildExit }
  | { readonly _tag: "SpawnFailed"; readonly slot: number; readonly cause: unknown }

/** Why a rolling restart stopped before every slot had rolled. */
export type RollFailure = Failure

/**
 * The listening sockets of one address: a `SO_REUSEPORT` group, one socket per slot, which the kernel spreads
 * connections over (measured: even where one shared socket gave one worker most keep-alive connections,
 * bench/results/balance.md); or one socket every slot shares (a unix path, or a socket systemd passed). `key` names
 * a worker's ask that it answers (none for an inherited group nobody has asked for by that key).
 */
export interface Sockets {
  readonly key: string | undefined
  readonly name: string
  readonly fds: ReadonlyArray<number>
}

/** The socket of `sockets` that the worker of `slot` accepts on. */
export const socketOf = (sockets: Sockets, slot: number): number => sockets.fds[slot % sockets.fds.length]!

/** A worker's ask for a listener, waiting for its address to be bound. */
export interface Ask {
  readonly id: number
  readonly ask: number
  /** The address asked for, as the worker wrote it. */
  readonly address: string
}

/** The key of a worker's ask: asks of the same address, name and order share the group's sockets. */
export const keyOf = (request: ListenRequest): string => JSON.stringify([request.address, request.name, request.nth])

export interface Slot {
  /** The worker that serves this slot (paused while `probation` is on). */
  readonly serving: number | undefined
  /** A worker started for this slot, not ready yet. */
  readonly starting: number | undefined
  /** A new worker, ready, on probation: it serves, and `serving` is paused. */
  readonly probation: number | undefined
  /** Deaths before ready, in a row: the backoff's count. */
  readonly deaths: number
  /** Every death of this slot's workers, for the status. */
  readonly died: number
  /** The worker of `serving` is being replaced for its memory (its replacement starting, or waiting to). */
  readonly overMemory: boolean
  /** Replacements for memory of this slot, for the status. */
  readonly memoryReplacements: number
  /** Replacements for memory in a row of workers above the limit from their start: the backoff's count. */
  readonly memoryStreak: number
}

/** A slot's sockets lent to a worker of another slot, which accepts on them while the slot has no worker that does. */
export interface Loan {
  readonly slot: number
  /** The worker that accepts on them. */
  readonly to: number
  /** The slot's socket of each `SO_REUSEPORT` group, as lent. */
  readonly fds: ReadonlyArray<number>
}

export interface Roll {
  /** Slots not begun yet, in order. */
  readonly pending: ReadonlyArray<number>
  /** Slots under way. */
  readonly active: ReadonlyArray<number>
  readonly failure: RollFailure | undefined
  /** The canary has passed its probation (or there is no probation): the other slots roll without one. */
  readonly tried: boolean
  /** The new workers the roll has put in place, by slot. */
  readonly rolled: ReadonlyArray<{ readonly slot: number; readonly id: number }>
}

export interface State {
  readonly phase: "Starting" | "Serving" | "Stopping" | "Stopped"
  readonly slots: ReadonlyArray<Slot>
  readonly nextId: number
  readonly roll: Roll | undefined
  /** The whole group is paused (the primary's own probation). */
  readonly paused: boolean
  /** Old workers a roll let go: paused, draining until they exit. */
  readonly retiring: ReadonlyArray<number>
  /** Every listening socket the group holds, in the order workers are given them. */
  readonly sockets: ReadonlyArray<Sockets>
  /** Addresses being bound for a worker's ask, and the asks that wait for them. */
  readonly binding: ReadonlyArray<{ readonly key: string; readonly waiting: ReadonlyArray<Ask> }>
  /** Why the start-up failed: a worker failed before the group was first ready. */
  readonly failure: Failure | undefined
  /** The slots whose sockets another worker accepts on, for want of their own. */
  readonly loans: ReadonlyArray<Loan>
}

export interface Rules {
  readonly surge: number
  /** At start, how many workers start at a time: the next starts as one is ready. */
  readonly startAtOnce: number
  readonly probation: boolean
  /** The first delay before a replacement that died before ready starts again, in milliseconds. */
  readonly backoffMillis: number
  readonly maxBackoffMillis: number
}

export type Event =
  | { readonly _tag: "Ready"; readonly id: number }
  | { readonly _tag: "Exited"; readonly id: number; readonly exit: ChildExit }
  /** The worker `id` could not be started at all. */
  | { readonly _tag: "SpawnFailed"; readonly id: number; readonly cause: unknown }
  | { readonly _tag: "RespawnDue"; readonly slot: number }
  | { readonly _tag: "Roll" }
  | { readonly _tag: "ProbationOver"; readonly id: number }
  | { readonly _tag: "PauseAll" }
  | { readonly _tag: "ResumeAll" }
  | { readonly _tag: "Stop" }
  /** A second termination signal: every worker left is killed. */
  | { readonly _tag: "ForceStop" }
  | { readonly _tag: "ListenAsked"; readonly id: number; readonly ask: number; readonly request: ListenRequest }
  | { readonly _tag: "Bound"; readonly key: string; readonly name: string; readonly fds: ReadonlyArray<number> }
  | { readonly _tag: "BindFailed"; readonly key: string; readonly failure: ListenFailure }
  /** An action failed with `cause` (logged too). */
  | { readonly _tag: "ActionFailed"; readonly action: Action; readonly cause: unknown }
  /**
   * The worker `id` has stayed above the memory limit for the grace period, with `rss` bytes now; `sinceStart`: it
   * has been above the limit since its first sample.
   */
  | { readonly _tag: "OverMemory"; readonly id: number; readonly rss: number; readonly sinceStart: boolean }

export type Action =
  | { readonly _tag: "Log"; readonly message: string; readonly annotations: Readonly<Record<string, unknown>> }
  /** Starts the worker `id` for `slot`, with one socket of each address (`passed`, in order). */
  | {
      readonly _tag: "Spawn"
      readonly slot: number
      readonly id: number
      readonly passed: ReadonlyArray<{ readonly fd: number; readonly name: string }>
    }
  /** Kills a worker that is not ready (SIGKILL) and reaps it. */
  | { readonly _tag: "Kill"; readonly id: number }
  /** Asks a worker to drain and exit (a `terminate` line: not a signal, see protocol.ts). */
  | { readonly _tag: "Terminate"; readonly id: number }
  | { readonly _tag: "Pause"; readonly id: number }
  | { readonly _tag: "Resume"; readonly id: number }
  /** Tells a worker that the group serves (its readiness). */
  | { readonly _tag: "Serving"; readonly id: number }
  | { readonly _tag: "StartProbation"; readonly id: number }
  | { readonly _tag: "ScheduleRespawn"; readonly slot: number; readonly millis: number }
  /** Binds an address for a worker's ask: `Bound` or `BindFailed` follows. */
  | { readonly _tag: "Bind"; readonly key: string; readonly request: ListenRequest }
  /** Sends the worker `id` the socket `fd`, then answers its ask `ask`. */
  | {
      readonly _tag: "SendListener"
      readonly id: number
      readonly ask: number
      readonly fd: number
      readonly address: string
    }
  | { readonly _tag: "RefuseListen"; readonly id: number; readonly ask: number; readonly failure: ListenFailure }
  /** Sends the worker `id` the sockets `fds` of `slot`: it accepts on them too, until they are reclaimed. */
  | { readonly _tag: "Lend"; readonly id: number; readonly slot: number; readonly fds: ReadonlyArray<number> }
  /** Tells the worker `id` to stop accepting on the sockets `fds` of `slot` (its copies closed, the group's kept). */
  | { readonly _tag: "Reclaim"; readonly id: number; readonly slot: number; readonly fds: ReadonlyArray<number> }
  /** Every slot has rolled: the new workers, by slot. */
  | { readonly _tag: "RollDone"; readonly workers: ReadonlyArray<{ readonly slot: number; readonly id: number }> }
  | { readonly _tag: "RollStopped"; readonly failure: RollFailure }
  /** The worker `id` of `slot` is replaced for its memory (logged and counted), after `millis` if not 0. */
  | {
      readonly _tag: "ReplaceForMemory"
      readonly slot: number
      readonly id: number
      readonly rss: number
      readonly millis: number
    }

export type Step = LoopStep<State, Action>

const emptySlot: Slot = {
  serving: undefined,
  starting: undefined,
  probation: undefined,
  deaths: 0,
  died: 0,
  overMemory: false,
  memoryReplacements: 0,
  memoryStreak: 0
}

const log = (message: string, annotations: Record<string, unknown> = {}): Action => ({
  _tag: "Log",
  message,
  annotations
})

const withSlot = (state: State, index: number, slot: Slot): State => ({
  ...state,
  slots: state.slots.map((s, i) => (i === index ? slot : s))
})

// What the worker of `slot` is given: one socket of each address.
const passedTo = (state: State, slot: number) =>
  state.sockets.map((sockets) => ({ fd: socketOf(sockets, slot), name: sockets.name }))

// Starts a worker for `slot`: the next id is its.
const spawn = (state: State, slot: number): Step => {
  const id = state.nextId
  const next = withSlot({ ...state, nextId: id + 1 }, slot, { ...state.slots[slot]!, starting: id })
  return [next, [{ _tag: "Spawn", slot, id, passed: passedTo(state, slot) }]]
}

/**
 * The first state: the first slots start a worker (`atOnce` of them; the others as these are ready), given the
 * sockets the group holds already (inherited).
 */
export const start = (workers: number, sockets: ReadonlyArray<Sockets> = [], atOnce = workers): Step => {
  let state: State = {
    phase: "Starting",
    slots: Array.from({ length: workers }, () => emptySlot),
    nextId: 0,
    roll: undefined,
    paused: false,
    retiring: [],
    sockets,
    binding: [],
    failure: undefined,
    loans: []
  }
  const [next, spawned] = startMore(state, atOnce)
  return [next, [log("effect-grace: starting workers", { workers }), ...spawned]]
}

// At start, the slots not begun yet start a worker each, until `atOnce` are starting: a host is not asked to start
// hundreds of processes at the same moment.
const startMore = (state: State, atOnce: number): Step => {
  let next = state
  const actions: Array<Action> = []
  let starting = state.slots.filter((s) => s.starting !== undefined).length
  for (const [slot, s] of state.slots.entries()) {
    if (starting >= atOnce) break
    if (s.starting !== undefined || s.serving !== undefined) continue
    const [after, spawned] = spawn(next, slot)
    next = after
    actions.push(...spawned)
    starting++
  }
  return [next, actions]
}

/** Where the worker `id` is: its slot and its part there, or among the old workers a roll let go. */
const find = (state: State, id: number) => {
  for (const [slot, s] of state.slots.entries()) {
    if (s.serving === id) return { slot, role: "serving" as const }
    if (s.starting === id) return { slot, role: "starting" as const }
    if (s.probation === id) return { slot, role: "probation" as const }
  }
  return state.retiring.includes(id) ? { slot: -1, role: "retiring" as const } : undefined
}

const workerIds = (slot: Slot): Array<number> =>
  [slot.serving, slot.starting, slot.probation].filter((id): id is number => id !== undefined)

/** Every worker alive: a slot's, or an old one draining. */
export const everyWorker = (state: State): Array<number> => [...state.slots.flatMap(workerIds), ...state.retiring]

// Slots starting a new worker, or trying one on probation: what `surge` bounds (a replacement after a death too).
const underWay = (state: State): number =>
  state.slots.filter((s) => s.starting !== undefined || s.probation !== undefined).length

export const backoff = (rules: Rules, deaths: number): number =>
  Math.min(rules.maxBackoffMillis, Math.round(rules.backoffMillis * 1.5 ** Math.max(0, deaths - 1)))

// The roll is over: every slot has rolled, or a new worker failed (the slots not begun keep their old workers).
const endRoll = (state: State, roll: Roll): Step => {
  const done: Action =
    roll.failure === undefined
      ? { _tag: "RollDone", workers: roll.rolled.toSorted((a, b) => a.slot - b.slot) }
      : { _tag: "RollStopped", failure: roll.failure }
  return [{ ...state, roll: undefined }, [done]]
}

// Begins slots until as many are under way as the roll allows (one, the canary, until it has passed its probation),
// or none is left that can begin (a slot whose replacement still starts waits for it); ends the roll when done.
const advance = (state: State, rules: Rules): Step => {
  const roll = state.roll
  if (roll === undefined) return [state, []]
  if (roll.active.length === 0 && (roll.pending.length === 0 || roll.failure !== undefined)) return endRoll(state, roll)
  const limit = roll.tried || !rules.probation ? rules.surge : 1
  const slot = roll.pending.find((pending) => state.slots[pending]!.starting === undefined)
  const busy = Math.max(roll.active.length, underWay(state))
  if (roll.failure !== undefined || busy >= limit || slot === undefined) return [state, []]
  const pending = roll.pending.filter((waiting) => waiting !== slot)
  const [spawned, actions] = spawn({ ...state, roll: { ...roll, pending, active: [...roll.active, slot] } }, slot)
  const [next, more] = advance(spawned, rules)
  return [next, [log("effect-grace: rolling worker", { slot }), ...actions, ...more]]
}

// A slot of the roll is done: rolled to `id`, or failed.
const slotDone = (state: State, slot: number, outcome: { readonly id: number } | RollFailure): State => {
  const roll = state.roll
  if (roll === undefined) return state
  const active = roll.active.filter((s) => s !== slot)
  if ("_tag" in outcome) return { ...state, roll: { ...roll, active, failure: roll.failure ?? outcome } }
  return { ...state, roll: { ...roll, active, rolled: [...roll.rolled, { slot, id: outcome.id }] } }
}

const rolling = (state: State, slot: number): boolean => state.roll?.active.includes(slot) ?? false

// A slot's new worker takes it; the old one, paused first, drains in the background. Paused first: a worker told to
// terminate while it serves would keep a shutdown delay, which only a whole service's termination needs (the new
// worker accepts on the same socket already).
const replace = (state: State, slot: number, id: number, told: ReadonlyArray<Action>): Step => {
  const s = state.slots[slot]!
  const old = s.serving
  const next = withSlot(state, slot, {
    ...s,
    serving: id,
    starting: undefined,
    probation: undefined,
    deaths: 0,
    overMemory: false
  })
  const retiring: State = old === undefined ? next : { ...next, retiring: [...next.retiring, old] }
  // The canary's old worker was paused when its probation began.
  const letGo: ReadonlyArray<Action> =
    old === undefined
      ? []
      : s.probation === id
        ? [{ _tag: "Terminate", id: old }]
        : [
            { _tag: "Pause", id: old },
            { _tag: "Terminate", id: old }
          ]
  return [slotDone(retiring, slot, { id }), [...told, ...letGo]]
}

// A new worker is ready: at start, in a roll (the canary goes on probation), or replacing one that died.
const ready = (state: State, id: number, rules: Rules): Step => {
  const where = find(state, id)
  if (where === undefined || where.role !== "starting") return [state, []]
  const { slot } = where
  const s = state.slots[slot]!
  const told: Array<Action> = [{ _tag: "Serving", id }]
  if (state.paused) told.push({ _tag: "Pause", id })
  if (state.phase === "Starting") {
    const next = withSlot(state, slot, { ...s, serving: id, starting: undefined, deaths: 0 })
    if (!next.slots.every((x) => x.serving !== undefined)) return startMore(next, rules.startAtOnce)
    const everyone = next.slots.map((x): Action => ({ _tag: "Serving", id: x.serving! }))
    return [{ ...next, phase: "Serving" }, everyone]
  }
  // A replacement for memory: the old worker, paused, drains in the background.
  if (!rolling(state, slot) && s.serving !== undefined) {
    return replace(state, slot, id, [log("effect-grace: worker serving", { slot }), ...told])
  }
  if (!rolling(state, slot)) {
    // A replacement after a death takes the slot.
    const next = withSlot(state, slot, { ...s, serving: id, starting: undefined, deaths: 0 })
    return [next, [log("effect-grace: worker serving", { slot }), ...told]]
  }
  if (s.serving !== undefined && rules.probation && !state.roll!.tried) {
    const next = withSlot(state, slot, { ...s, probation: id, starting: undefined, deaths: 0 })
    return [next, [...told, { _tag: "Pause", id: s.serving }, { _tag: "StartProbation", id }]]
  }
  return replace(state, slot, id, told)
}

// The canary outlived its window: it keeps the slot, its old worker drains, and the others roll without a window.
const probationOver = (state: State, id: number): Step => {
  const where = find(state, id)
  if (where === undefined || where.role !== "probation") return [state, []]
  const [next, actions] = replace(state, where.slot, id, [])
  return [next.roll === undefined ? next : { ...next, roll: { ...next.roll, tried: true } }, actions]
}

// An old worker a roll let go has drained and exited.
const retired = (state: State, id: number): Step => [
  { ...state, retiring: state.retiring.filter((old) => old !== id) },
  []
]

const exitedWhileStopping = (state: State, id: number): Step => {
  const where = find(state, id)
  if (where === undefined) return [state, []]
  const next =
    where.role === "retiring"
      ? { ...state, retiring: state.retiring.filter((old) => old !== id) }
      : withSlot(state, where.slot, { ...state.slots[where.slot]!, [where.role]: undefined })
  if (everyWorker(next).length > 0) return [next, []]
  return [{ ...next, phase: "Stopped" }, []]
}

/** A worker gone: it exited (`exit`), or could not be started at all (`cause`). */
type Gone = { readonly id: number; readonly exit: ChildExit } | { readonly id: number; readonly cause: unknown }

const failureOf = (tag: "ExitedBeforeReady" | "HandedBack", slot: number, gone: Gone): Failure =>
  "exit" in gone ? { _tag: tag, slot, exit: gone.exit } : { _tag: "SpawnFailed", slot, cause: gone.cause }

// How it ended, for a log line.
const howGone = (gone: Gone): Record<string, unknown> =>
  "exit" in gone ? { code: gone.exit.code, signal: gone.exit.signal } : { cause: String(gone.cause) }

// A worker failed before the group was first ready (before it was ready itself, or after): the program is broken.
// The others are stopped with it: the pool has stopped once they have gone.
const startupFailed = (state: State, slot: number, gone: Gone): Step => {
  const s = state.slots[slot]!
  const emptied: Slot = {
    ...s,
    starting: s.starting === gone.id ? undefined : s.starting,
    serving: s.serving === gone.id ? undefined : s.serving
  }
  const [next, actions] = stop({
    ...withSlot(state, slot, emptied),
    failure: failureOf("ExitedBeforeReady", slot, gone)
  })
  return [next, actions]
}

// A worker started for a slot exited before it was ready, or could not be started.
const diedStarting = (state: State, slot: number, gone: Gone, rules: Rules): Step => {
  const s = state.slots[slot]!
  const exited = log("effect-grace: worker exited before it was ready", { slot, ...howGone(gone) })
  const failure = failureOf("ExitedBeforeReady", slot, gone)
  if (rolling(state, slot) && s.serving !== undefined) {
    return [slotDone(withSlot(state, slot, { ...s, starting: undefined, died: s.died + 1 }), slot, failure), [exited]]
  }
  const deaths = s.deaths + 1
  const millis = backoff(rules, deaths)
  // A replacement for memory that died is started again after the delay too, the old worker serving meanwhile.
  const emptied = withSlot(state, slot, { ...s, starting: undefined, deaths, died: s.died + 1 })
  // In a roll (its old worker died meanwhile), the roll stops here too.
  const next = rolling(state, slot) ? slotDone(emptied, slot, failure) : emptied
  return [next, [exited, { _tag: "ScheduleRespawn", slot, millis }]]
}

// A worker on probation died: the old one accepts again, and the roll stops.
const diedOnProbation = (state: State, slot: number, gone: Gone): Step => {
  const s = state.slots[slot]!
  const failure = failureOf("HandedBack", slot, gone)
  const handedBack = log("effect-grace: new worker exited on probation; the old one serves again", {
    slot,
    ...howGone(gone)
  })
  if (s.serving === undefined) {
    // The old one has died too: the slot starts afresh.
    const emptied = withSlot(state, slot, { ...s, probation: undefined, died: s.died + 1 })
    const [next, actions] = spawn(slotDone(emptied, slot, failure), slot)
    return [next, [handedBack, ...actions]]
  }
  const next = slotDone(withSlot(state, slot, { ...s, probation: undefined, died: s.died + 1 }), slot, failure)
  return [next, [handedBack, { _tag: "Resume", id: s.serving }]]
}

// A worker that served died (crash, kill -9): replaced at once, unless a new one is on its way to the slot already.
const diedServing = (state: State, slot: number, gone: Gone): Step => {
  const s = state.slots[slot]!
  const died = log("effect-grace: worker died", { slot, ...howGone(gone) })
  // One being replaced for its memory is gone already: its replacement takes the slot, or starts at once.
  const next = withSlot(state, slot, { ...s, serving: undefined, died: s.died + 1, overMemory: false })
  if (s.starting !== undefined || s.probation !== undefined) return [next, [died]]
  const [after, actions] = spawn(next, slot)
  return [after, [died, ...actions]]
}

const exited = (state: State, gone: Gone, rules: Rules): Step => {
  if (state.phase === "Stopping") return exitedWhileStopping(state, gone.id)
  const where = find(state, gone.id)
  if (where === undefined) return [state, []]
  if (state.phase === "Starting") return startupFailed(state, where.slot, gone)
  switch (where.role) {
    case "starting":
      return diedStarting(state, where.slot, gone, rules)
    case "probation":
      return diedOnProbation(state, where.slot, gone)
    case "serving":
      return diedServing(state, where.slot, gone)
    case "retiring":
      return retired(state, gone.id)
  }
}

const respawnDue = (state: State, slot: number): Step => {
  const s = state.slots[slot]
  if (state.phase !== "Serving" || s === undefined || s.starting !== undefined || s.probation !== undefined) {
    return [state, []]
  }
  if (s.serving !== undefined && !s.overMemory) return [state, []]
  // A replacement for memory that waited: a roll begun meanwhile replaces the worker itself, and the group's pause
  // is no time to start one; the watch says so again if the worker is still above the limit.
  if (s.serving !== undefined && (state.roll !== undefined || state.paused)) {
    return [withSlot(state, slot, { ...s, overMemory: false }), []]
  }
  return spawn(state, slot)
}

// A worker above the memory limit for the grace period is replaced through its slot, as a roll would: one slot at a
// time, none while a roll runs, while the group is paused, or while any slot starts a worker or waits to.
const overMemory = (state: State, event: Extract<Event, { readonly _tag: "OverMemory" }>, rules: Rules): Step => {
  const where = find(state, event.id)
  const busy =
    state.phase !== "Serving" ||
    state.roll !== undefined ||
    state.paused ||
    underWay(state) > 0 ||
    state.slots.some((s) => s.overMemory || (s.serving === undefined && s.starting === undefined))
  if (busy || where === undefined || where.role !== "serving") return [state, []]
  const { slot } = where
  const s = state.slots[slot]!
  // In a row: this worker was above the limit from its start, as the one it replaced may have been.
  const memoryStreak = event.sinceStart ? s.memoryStreak + 1 : 1
  const millis = memoryStreak > 1 ? backoff(rules, memoryStreak - 1) : 0
  const marked = withSlot(state, slot, {
    ...s,
    overMemory: true,
    memoryReplacements: s.memoryReplacements + 1,
    memoryStreak
  })
  const replacing: Action = { _tag: "ReplaceForMemory", slot, id: event.id, rss: event.rss, millis }
  if (millis > 0) return [marked, [replacing, { _tag: "ScheduleRespawn", slot, millis }]]
  const [next, actions] = spawn(marked, slot)
  return [next, [replacing, ...actions]]
}

// Begun by `advance`, after this step, as every roll goes on.
const roll = (state: State): Step => {
  if (state.phase !== "Serving" || state.roll !== undefined || state.paused) return [state, []]
  const pending = state.slots.map((_, slot) => slot)
  // The roll replaces every worker: a replacement for memory waiting to start is given up.
  const slots = state.slots.map((s) => (s.overMemory && s.starting === undefined ? { ...s, overMemory: false } : s))
  return [{ ...state, slots, roll: { pending, active: [], failure: undefined, tried: false, rolled: [] } }, []]
}

const each = (state: State, tag: "Pause" | "Resume"): ReadonlyArray<Action> =>
  state.slots.flatMap((s) => (s.serving === undefined ? [] : [{ _tag: tag, id: s.serving }]))

// Workers not ready are killed; the others drain and exit. A roll under way ends with them.
const stop = (state: State): Step => {
  if (state.phase === "Stopping" || state.phase === "Stopped") return [state, []]
  const actions: Array<Action> = []
  for (const s of state.slots) {
    if (s.starting !== undefined) actions.push({ _tag: "Kill", id: s.starting })
    for (const id of [s.serving, s.probation]) if (id !== undefined) actions.push({ _tag: "Terminate", id })
  }
  const next: State = { ...state, phase: "Stopping", roll: undefined }
  // The old workers a roll let go are draining already.
  if (everyWorker(next).length === 0) return [{ ...next, phase: "Stopped" }, []]
  return [next, actions]
}

// A second termination signal: every worker still running is killed (each then exits, and the pool stops).
const forceStop = (state: State): Step => {
  const [stopping, actions] = stop(state)
  if (stopping.phase === "Stopped") return [stopping, actions]
  const kills = everyWorker(stopping).map((id): Action => ({ _tag: "Kill", id }))
  return [stopping, kills]
}

// -----------------------------------------------------------------------------
// Listeners asked for by workers
// -----------------------------------------------------------------------------

const listenAsked = (state: State, event: Extract<Event, { readonly _tag: "ListenAsked" }>): Step => {
  const { id, ask, request } = event
  const where = find(state, id)
  // An old worker draining takes no new listener.
  if (where === undefined || where.role === "retiring" || state.phase === "Stopped") return [state, []]
  const key = keyOf(request)
  const asked: Ask = { id, ask, address: request.address }
  const held = state.sockets.find((sockets) => sockets.key === key)
  if (held !== undefined) return [state, [{ _tag: "SendListener", ...asked, fd: socketOf(held, where.slot) }]]
  // Bound once: every ask of it meanwhile waits for it.
  const binding = state.binding.find((b) => b.key === key)
  const waiting = [...(binding?.waiting ?? []), asked]
  const others = state.binding.filter((b) => b !== binding)
  const bind: ReadonlyArray<Action> = binding === undefined ? [{ _tag: "Bind", key, request }] : []
  return [{ ...state, binding: [...others, { key, waiting }] }, bind]
}

// The address is bound (or failed to be): every ask that waited for it is answered, with its own slot's socket.
const bindEnded = (state: State, key: string, answer: (ask: Ask, slot: number) => Action, held?: Sockets): Step => {
  const binding = state.binding.find((b) => b.key === key)
  const next: State = {
    ...state,
    binding: state.binding.filter((b) => b !== binding),
    sockets: held === undefined ? state.sockets : [...state.sockets, held]
  }
  const answers = (binding?.waiting ?? []).flatMap((ask) => {
    const where = find(state, ask.id)
    return where === undefined || where.role === "retiring" ? [] : [answer(ask, where.slot)]
  })
  return [next, answers]
}

const bound = (state: State, event: Extract<Event, { readonly _tag: "Bound" }>): Step => {
  const held: Sockets = { key: event.key, name: event.name, fds: event.fds }
  return bindEnded(
    state,
    event.key,
    (asked, slot) => ({ _tag: "SendListener", ...asked, fd: socketOf(held, slot) }),
    held
  )
}

const bindFailed = (state: State, event: Extract<Event, { readonly _tag: "BindFailed" }>): Step =>
  bindEnded(state, event.key, ({ id, ask }) => ({ _tag: "RefuseListen", id, ask, failure: event.failure }))

// A worker that could not be started is gone as one that exited; any other action that failed is logged only.
const actionFailed = (state: State, action: Action, cause: unknown, rules: Rules): Step =>
  action._tag === "Spawn" ? exited(state, { id: action.id, cause }, rules) : [state, []]

// -----------------------------------------------------------------------------
// Loans: a slot with no worker that accepts, served by another
// -----------------------------------------------------------------------------

/** The worker that accepts on the sockets of `slot`: the new one on probation, else the one serving; none if paused. */
export const acceptorOf = (state: State, slot: number): number | undefined => {
  const s = state.slots[slot]
  return state.paused || s === undefined ? undefined : (s.probation ?? s.serving)
}

/** The sockets of `slot` another worker may accept on: its own of each `SO_REUSEPORT` group (one shared is all's). */
export const lendable = (state: State, slot: number): Array<number> =>
  state.sockets.flatMap((sockets) => (sockets.fds.length > 1 ? [socketOf(sockets, slot)] : []))

// Of the workers that accept, the one holding the fewest loans, then the nearest slot after `slot`: with two slots
// dead among four, each of two others takes one.
const borrowerFor = (slot: number, acceptors: ReadonlyArray<number | undefined>, loans: ReadonlyArray<Loan>) => {
  let best: { readonly id: number; readonly held: number; readonly distance: number } | undefined
  for (const [other, id] of acceptors.entries()) {
    if (id === undefined) continue
    const held = loans.filter((loan) => loan.to === id).length
    const distance = (other - slot + acceptors.length) % acceptors.length
    if (best === undefined || held < best.held || (held === best.held && distance < best.distance)) {
      best = { id, held, distance }
    }
  }
  return best?.id
}

const slotOf = (state: State, id: number) => state.slots.findIndex((s) => workerIds(s).includes(id))

interface Lending {
  readonly state: State
  /** Loans taken back: before the step's actions, so that a borrower is paused or terminated only after. */
  readonly reclaims: ReadonlyArray<Action>
  /** New loans: after them, so that a worker is resumed, or told it serves, first. */
  readonly lends: ReadonlyArray<Action>
}

// The loans a state calls for once the group serves: a loan stays while its borrower accepts and its slot has no
// worker that does (topped up with sockets bound since); the others are taken back from borrowers alive (one that
// died took its copies with it); then every slot with no worker that accepts is lent, if any worker accepts.
const lending = (state: State): Lending => {
  const acceptors = state.slots.map((_, slot) => (state.phase === "Serving" ? acceptorOf(state, slot) : undefined))
  const alive = everyWorker(state)
  const reclaims: Array<Action> = []
  const lends: Array<Action> = []
  const loans: Array<Loan> = []
  for (const loan of state.loans) {
    if (acceptors[loan.slot] !== undefined || !acceptors.includes(loan.to)) {
      if (alive.includes(loan.to)) reclaims.push({ _tag: "Reclaim", id: loan.to, slot: loan.slot, fds: loan.fds })
      continue
    }
    const missing = lendable(state, loan.slot).filter((fd) => !loan.fds.includes(fd))
    if (missing.length > 0) lends.push({ _tag: "Lend", id: loan.to, slot: loan.slot, fds: missing })
    loans.push(missing.length === 0 ? loan : { ...loan, fds: [...loan.fds, ...missing] })
  }
  for (const [slot, acceptor] of acceptors.entries()) {
    if (state.phase !== "Serving" || acceptor !== undefined || loans.some((loan) => loan.slot === slot)) continue
    const fds = lendable(state, slot)
    const to = borrowerFor(slot, acceptors, loans)
    if (fds.length === 0 || to === undefined) continue
    loans.push({ slot, to, fds })
    lends.push(log("effect-grace: lending the slot's sockets to another worker", { slot, to: slotOf(state, to) }))
    lends.push({ _tag: "Lend", id: to, slot, fds })
  }
  if (state.loans.length === 0 && loans.length === 0) return { state, reclaims, lends }
  return { state: { ...state, loans }, reclaims, lends }
}

/** The next state, and what to do, when `event` arrives in `state`. */
export const transition = (state: State, event: Event, rules: Rules): Step => {
  const [next, actions] = step(state, event, rules)
  // Whatever freed a slot's place (an old worker gone, a replacement ready), a roll under way goes on.
  const [advanced, more] = next.phase === "Serving" && next.roll !== undefined ? advance(next, rules) : [next, []]
  // Whatever changed who accepts where, the loans follow.
  const lent = lending(advanced)
  return [lent.state, [...lent.reclaims, ...actions, ...more, ...lent.lends]]
}

const step = (state: State, event: Event, rules: Rules): Step => {
  switch (event._tag) {
    case "Ready":
      return state.phase === "Stopping" || state.phase === "Stopped" ? [state, []] : ready(state, event.id, rules)
    case "Exited":
      return exited(state, { id: event.id, exit: event.exit }, rules)
    case "SpawnFailed":
      return exited(state, { id: event.id, cause: event.cause }, rules)
    case "RespawnDue":
      return respawnDue(state, event.slot)
    case "Roll":
      return roll(state)
    case "ProbationOver":
      return state.phase === "Serving" ? probationOver(state, event.id) : [state, []]
    case "PauseAll":
      return state.phase === "Serving" ? [{ ...state, paused: true }, each(state, "Pause")] : [state, []]
    case "ResumeAll":
      return state.phase === "Serving" ? [{ ...state, paused: false }, each(state, "Resume")] : [state, []]
    case "Stop":
      return stop(state)
    case "ForceStop":
      return forceStop(state)
    case "ListenAsked":
      return listenAsked(state, event)
    case "Bound":
      return bound(state, event)
    case "BindFailed":
      return bindFailed(state, event)
    case "ActionFailed":
      return actionFailed(state, event.action, event.cause, rules)
    case "OverMemory":
      return overMemory(state, event, rules)
  }
}
