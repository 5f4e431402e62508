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
 * accept again).
 *
 * - Start: every slot starts a worker; the group is ready once every slot
 *   serves. A worker that exits before the group was first ready fails the
 *   start-up: the program is broken, and says so at once.
 * - Rolling restart: `surge` slots at a time start a new worker; once it is
 *   ready, the old one is paused and the new one is on probation; once that
 *   has passed, the old one drains, and once it has exited the next slot
 *   begins: the roll never makes more than N + surge workers (a worker that
 *   dies is replaced at once, though, beside an old one still draining). A new
 *   worker that exits before it is ready, or within its probation (the old one
 *   then accepts again), stops the rollout: the slots not begun keep their
 *   old workers, and every slot serves.
 * - A worker that serves and dies is replaced at once; a replacement that dies
 *   before it is ready is started again after a delay that grows 1.5x per
 *   death (as einhorn does), capped.
 * - The whole group pauses and resumes together, during the primary's own
 *   probation after a full upgrade.
 * - Stop: workers still starting are killed; every other one drains and
 *   exits; the pool has stopped once none is left.
 *
 * Workers are known by an id the machine gives them when it starts them.
 */

/** Why a rolling restart stopped before every slot had rolled. */
export interface RollFailure {
  readonly _tag: "ExitedBeforeReady" | "HandedBack"
  readonly slot: number
  readonly id: number
  readonly code: number | null
  readonly signal: string | null
}

export interface Slot {
  /** The worker that serves this slot (paused while `probation` is on). */
  readonly serving: number | undefined
  /** A worker started for this slot, not ready yet. */
  readonly starting: number | undefined
  /** A new worker, ready, on probation: it serves, and `serving` is paused. */
  readonly probation: number | undefined
  /** The old worker of a slot that rolled, draining until it exits. */
  readonly retiring: number | undefined
  /** Deaths before ready, in a row: the backoff's count. */
  readonly deaths: number
}

export interface Roll {
  /** Slots not begun yet, in order. */
  readonly pending: ReadonlyArray<number>
  /** Slots under way. */
  readonly active: ReadonlyArray<number>
  readonly failure: RollFailure | undefined
}

export interface State {
  readonly phase: "Starting" | "Serving" | "Stopping" | "Stopped"
  readonly slots: ReadonlyArray<Slot>
  readonly nextId: number
  readonly roll: Roll | undefined
  /** The whole group is paused (the primary's own probation). */
  readonly paused: boolean
}

export interface Rules {
  readonly surge: number
  readonly probation: boolean
  /** The first delay before a replacement that died before ready starts again, in milliseconds. */
  readonly backoffMillis: number
  readonly maxBackoffMillis: number
}

export type Event =
  | { readonly _tag: "Ready"; readonly id: number }
  | { readonly _tag: "Exited"; readonly id: number; readonly code: number | null; readonly signal: string | null }
  | { readonly _tag: "RespawnDue"; readonly slot: number }
  | { readonly _tag: "Roll" }
  | { readonly _tag: "ProbationOver"; readonly id: number }
  | { readonly _tag: "PauseAll" }
  | { readonly _tag: "ResumeAll" }
  | { readonly _tag: "Stop" }

export type Action =
  | { readonly _tag: "Log"; readonly message: string; readonly annotations: Readonly<Record<string, unknown>> }
  | { readonly _tag: "Spawn"; readonly slot: number; readonly id: number }
  /** Kills a worker that is not ready (SIGKILL) and reaps it. */
  | { readonly _tag: "Kill"; readonly id: number }
  /** Asks a worker to drain and exit (a `terminate` line: not a signal, see worker.ts). */
  | { readonly _tag: "Terminate"; readonly id: number }
  | { readonly _tag: "Pause"; readonly id: number }
  | { readonly _tag: "Resume"; readonly id: number }
  /** Tells a worker that the group serves (its readiness). */
  | { readonly _tag: "Serving"; readonly id: number }
  | { readonly _tag: "StartProbation"; readonly id: number }
  | { readonly _tag: "ScheduleRespawn"; readonly slot: number; readonly millis: number }
  /** Every slot serves, for the first time. */
  | { readonly _tag: "GroupReady" }
  | {
      readonly _tag: "StartupFailed"
      readonly slot: number
      readonly id: number
      readonly code: number | null
      readonly signal: string | null
    }
  | { readonly _tag: "RollDone" }
  | { readonly _tag: "RollStopped"; readonly failure: RollFailure }
  /** Every worker has exited after a stop. */
  | { readonly _tag: "Stopped" }

export type Step = readonly [State, ReadonlyArray<Action>]

const emptySlot: Slot = {
  serving: undefined,
  starting: undefined,
  probation: undefined,
  retiring: undefined,
  deaths: 0
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

// Starts a worker for `slot`: the next id is its.
const spawn = (state: State, slot: number): Step => {
  const id = state.nextId
  const next = withSlot({ ...state, nextId: id + 1 }, slot, { ...state.slots[slot]!, starting: id })
  return [next, [{ _tag: "Spawn", slot, id }]]
}

/** The first state: every slot starts a worker. */
export const start = (workers: number): Step => {
  let state: State = {
    phase: "Starting",
    slots: Array.from({ length: workers }, () => emptySlot),
    nextId: 0,
    roll: undefined,
    paused: false
  }
  const actions: Array<Action> = [log("effect-grace: starting workers", { workers })]
  for (let slot = 0; slot < workers; slot++) {
    const [next, spawned] = spawn(state, slot)
    state = next
    actions.push(...spawned)
  }
  return [state, actions]
}

/** Where the worker `id` is: its slot, and its part there. */
const find = (state: State, id: number) => {
  for (const [slot, s] of state.slots.entries()) {
    if (s.serving === id) return { slot, role: "serving" as const }
    if (s.starting === id) return { slot, role: "starting" as const }
    if (s.probation === id) return { slot, role: "probation" as const }
    if (s.retiring === id) return { slot, role: "retiring" as const }
  }
  return undefined
}

const workerIds = (slot: Slot): Array<number> =>
  [slot.serving, slot.starting, slot.probation, slot.retiring].filter((id): id is number => id !== undefined)

// Workers beyond one per slot: the new ones starting or on probation, the old ones draining. A roll keeps them at
// most `surge`, whatever else is under way (a replacement after a death, an old worker of an earlier roll).
const extra = (state: State): number => state.slots.reduce((n, slot) => n + Math.max(0, workerIds(slot).length - 1), 0)

export const backoff = (rules: Rules, deaths: number): number =>
  Math.min(rules.maxBackoffMillis, Math.round(rules.backoffMillis * 1.5 ** Math.max(0, deaths - 1)))

// Begins slots until `surge` are under way, or none is left (or the roll failed); ends the roll when none is active.
const advance = (state: State, rules: Rules): Step => {
  const roll = state.roll
  if (roll === undefined) return [state, []]
  if (roll.active.length === 0 && (roll.pending.length === 0 || roll.failure !== undefined)) {
    const done: Action =
      roll.failure === undefined ? { _tag: "RollDone" } : { _tag: "RollStopped", failure: roll.failure }
    return [{ ...state, roll: undefined }, [done]]
  }
  const busy = Math.max(roll.active.length, extra(state))
  if (roll.failure !== undefined || busy >= rules.surge || roll.pending.length === 0) {
    return [state, []]
  }
  const [slot, ...pending] = roll.pending as [number, ...Array<number>]
  // A slot already starting a replacement (after a death) gets the new code with it: nothing to begin there.
  const begun: State = { ...state, roll: { ...roll, pending, active: [...roll.active, slot] } }
  if (state.slots[slot]!.starting !== undefined) return advance(slotDone(begun, slot), rules)
  const [spawned, actions] = spawn(begun, slot)
  const [next, more] = advance(spawned, rules)
  return [next, [log("effect-grace: rolling worker", { slot }), ...actions, ...more]]
}

const slotDone = (state: State, slot: number, failure?: RollFailure): State =>
  state.roll === undefined
    ? state
    : {
        ...state,
        roll: {
          ...state.roll,
          active: state.roll.active.filter((s) => s !== slot),
          failure: state.roll.failure ?? failure
        }
      }

const rolling = (state: State, slot: number): boolean => state.roll?.active.includes(slot) ?? false

// A new worker is ready: at start, in a roll, or replacing one that died.
const ready = (state: State, id: number, rules: Rules): Step => {
  const where = find(state, id)
  if (where === undefined || where.role !== "starting") return [state, []]
  const { slot } = where
  const s = state.slots[slot]!
  const told: Array<Action> = [{ _tag: "Serving", id }]
  if (state.paused) told.push({ _tag: "Pause", id })
  if (state.phase === "Starting") {
    const next = withSlot(state, slot, { ...s, serving: id, starting: undefined, deaths: 0 })
    if (!next.slots.every((x) => x.serving !== undefined)) return [next, []]
    const everyone = next.slots.map((x): Action => ({ _tag: "Serving", id: x.serving! }))
    return [{ ...next, phase: "Serving" }, [{ _tag: "GroupReady" }, ...everyone]]
  }
  if (s.serving === undefined || !rolling(state, slot)) {
    // A replacement (or a new worker whose old one has died meanwhile) takes the slot.
    const next = withSlot(state, slot, { ...s, serving: id, starting: undefined, deaths: 0 })
    // The slot is done once its old worker, if one still drains, has exited too.
    const done = rolling(state, slot) && s.retiring === undefined ? slotDone(next, slot) : next
    return [done, [log("effect-grace: worker serving", { slot }), ...told]]
  }
  if (rules.probation) {
    const next = withSlot(state, slot, { ...s, probation: id, starting: undefined, deaths: 0 })
    return [next, [...told, { _tag: "Pause", id: s.serving }, { _tag: "StartProbation", id }]]
  }
  // Paused first: a worker told to terminate while it serves would keep a shutdown delay, which only a whole
  // service's termination needs (the new worker accepts on the same socket already). The slot is done once it exits.
  const next = withSlot(state, slot, { ...s, serving: id, starting: undefined, retiring: s.serving, deaths: 0 })
  return [next, [...told, { _tag: "Pause", id: s.serving }, { _tag: "Terminate", id: s.serving }]]
}

// The new worker outlived its window: the old one, paused, drains, and the slot is done once it has exited.
const probationOver = (state: State, id: number): Step => {
  const where = find(state, id)
  if (where === undefined || where.role !== "probation") return [state, []]
  const s = state.slots[where.slot]!
  const next = withSlot(state, where.slot, { ...s, serving: id, probation: undefined, retiring: s.serving })
  if (s.serving === undefined) return [slotDone(next, where.slot), []]
  return [next, [{ _tag: "Terminate", id: s.serving }]]
}

// The old worker of a rolled slot has drained and exited: the slot is done, and the roll goes on.
const retired = (state: State, slot: number): Step => {
  const next = withSlot(state, slot, { ...state.slots[slot]!, retiring: undefined })
  return [rolling(state, slot) ? slotDone(next, slot) : next, []]
}

const exitedWhileStopping = (state: State, id: number): Step => {
  const where = find(state, id)
  if (where === undefined) return [state, []]
  const s = state.slots[where.slot]!
  const next = withSlot(state, where.slot, { ...s, [where.role]: undefined })
  if (next.slots.some((x) => workerIds(x).length > 0)) return [next, []]
  return [{ ...next, phase: "Stopped" }, [{ _tag: "Stopped" }]]
}

// A worker exited before the group was first ready (before it was ready itself, or after): the program is broken.
// The others are stopped with it: the pool has stopped once they have gone.
const startupFailed = (state: State, slot: number, event: Exited): Step => {
  const { id, code, signal } = event
  const s = state.slots[slot]!
  const gone: Slot = {
    ...s,
    starting: s.starting === id ? undefined : s.starting,
    serving: s.serving === id ? undefined : s.serving
  }
  const [next, actions] = stop(withSlot(state, slot, gone))
  return [next, [{ _tag: "StartupFailed", slot, id, code, signal }, ...actions]]
}

// A worker started for a slot exited before it was ready.
const diedStarting = (state: State, slot: number, event: Exited, rules: Rules): Step => {
  const s = state.slots[slot]!
  const { id, code, signal } = event
  const exited = log("effect-grace: worker exited before it was ready", { slot, code, signal })
  const failure: RollFailure = { _tag: "ExitedBeforeReady", slot, id, code, signal }
  if (rolling(state, slot) && s.serving !== undefined) {
    return [slotDone(withSlot(state, slot, { ...s, starting: undefined }), slot, failure), [exited]]
  }
  const deaths = s.deaths + 1
  const millis = backoff(rules, deaths)
  const emptied = withSlot(state, slot, { ...s, starting: undefined, deaths })
  // In a roll (its old worker died meanwhile), the roll stops here too.
  const next = rolling(state, slot) ? slotDone(emptied, slot, failure) : emptied
  return [next, [exited, { _tag: "ScheduleRespawn", slot, millis }]]
}

type Exited = Extract<Event, { readonly _tag: "Exited" }>

// A worker on probation died: the old one accepts again, and the roll stops.
const diedOnProbation = (state: State, slot: number, event: Exited): Step => {
  const s = state.slots[slot]!
  const { id, code, signal } = event
  const failure: RollFailure = { _tag: "HandedBack", slot, id, code, signal }
  const handedBack = log("effect-grace: new worker exited on probation; the old one serves again", {
    slot,
    code,
    signal
  })
  if (s.serving === undefined) {
    // The old one has died too: the slot starts afresh.
    const [next, actions] = spawn(slotDone(withSlot(state, slot, { ...s, probation: undefined }), slot, failure), slot)
    return [next, [handedBack, ...actions]]
  }
  const next = slotDone(withSlot(state, slot, { ...s, probation: undefined }), slot, failure)
  return [next, [handedBack, { _tag: "Resume", id: s.serving }]]
}

// A worker that served died (crash, kill -9): replaced at once, unless a new one is on its way to the slot already.
const diedServing = (state: State, slot: number, event: Exited): Step => {
  const s = state.slots[slot]!
  const died = log("effect-grace: worker died", { slot, code: event.code, signal: event.signal })
  const next = withSlot(state, slot, { ...s, serving: undefined })
  if (s.starting !== undefined || s.probation !== undefined) return [next, [died]]
  const [after, actions] = spawn(next, slot)
  return [after, [died, ...actions]]
}

const exited = (state: State, event: Exited, rules: Rules): Step => {
  if (state.phase === "Stopping") return exitedWhileStopping(state, event.id)
  const where = find(state, event.id)
  if (where === undefined) return [state, []]
  if (state.phase === "Starting") return startupFailed(state, where.slot, event)
  switch (where.role) {
    case "starting":
      return diedStarting(state, where.slot, event, rules)
    case "probation":
      return diedOnProbation(state, where.slot, event)
    case "serving":
      return diedServing(state, where.slot, event)
    case "retiring":
      return retired(state, where.slot)
  }
}

const respawnDue = (state: State, slot: number): Step => {
  const s = state.slots[slot]
  if (state.phase !== "Serving" || s === undefined || s.starting !== undefined || s.serving !== undefined) {
    return [state, []]
  }
  return spawn(state, slot)
}

// Begun by `advance`, after this step, as every roll goes on.
const roll = (state: State): Step => {
  if (state.phase !== "Serving" || state.roll !== undefined || state.paused) return [state, []]
  const pending = state.slots.map((_, slot) => slot)
  return [{ ...state, roll: { pending, active: [], failure: undefined } }, []]
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
  if (actions.length === 0) return [{ ...next, phase: "Stopped" }, [{ _tag: "Stopped" }]]
  return [next, actions]
}

/** The next state, and what to do, when `event` arrives in `state`. */
export const transition = (state: State, event: Event, rules: Rules): Step => {
  const [next, actions] = step(state, event, rules)
  // Whatever freed a slot's place (an old worker gone, a replacement ready), a roll under way goes on.
  if (next.phase !== "Serving" || next.roll === undefined) return [next, actions]
  const [after, more] = advance(next, rules)
  return [after, [...actions, ...more]]
}

const step = (state: State, event: Event, rules: Rules): Step => {
  switch (event._tag) {
    case "Ready":
      return state.phase === "Stopping" || state.phase === "Stopped" ? [state, []] : ready(state, event.id, rules)
    case "Exited":
      return exited(state, event, rules)
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
  }
}
