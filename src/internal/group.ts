/**
 * A primary's workers at run time: the pool's machine (pool.ts) on the loop
 * (loop.ts), its actions carried out on the workers (child.ts). The loop's
 * owner is the one that starts, tells, kills and forgets workers, and holds
 * the listening sockets: those inherited, and those it binds when a worker
 * asks for an address (a `SO_REUSEPORT` socket per slot, or one shared),
 * for the life of the service, and sends a slot's sockets to the worker the
 * machine lends them to (the fd over its second socket, then the line).
 *
 * The group lives in the supervisor's application scope, as an application
 * would: built once every worker is ready, and closing that scope is its
 * drain (every worker drains and exits; a forced stop kills them).
 *
 * With a memory limit, it samples the size of each worker that serves
 * (memory.ts) and tells the machine of one above the limit for the grace
 * period, which replaces it through its slot. A worker already above the
 * limit when the group is first ready fails the start-up: every
 * replacement would start above it too.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Scope from "effect/Scope"
import { closeSync } from "node:fs"
import { availableParallelism } from "node:os"
import type { Held } from "./address.ts"
import { formatAddress } from "./address.ts"
import * as Child from "./child.ts"
import { MemoryLimitTooLow, TooFewWorkers } from "./errors.ts"
import * as Loop from "./loop.ts"
import * as Memory from "./memory.ts"
import { countWorkers } from "./metrics.ts"
import type * as Os from "./os.ts"
import * as Pool from "./pool.ts"
import type { Command, ListenFailure, ListenRequest, ToParent } from "./protocol.ts"
import * as Sys from "./sys.ts"
import * as Tickets from "./tickets.ts"

export interface Settings {
  readonly workers: number
  readonly surge: number
  readonly probation: Duration.Duration
  readonly readyTimeout: Duration.Duration
  /** The memory limit of each worker, in bytes; none without one. */
  readonly maxMemory: number | undefined
  readonly maxMemoryGrace: Duration.Duration
}

/** How a rolling restart ended: every slot rolled (its new workers, by slot), or it stopped at one that failed. */
export type Rolled =
  | { readonly _tag: "RollDone"; readonly workers: ReadonlyArray<{ readonly slot: number; readonly pid: number }> }
  | { readonly _tag: "RollStopped"; readonly failure: Pool.Failure }

/** What the group is given by its primary. */
export interface Given {
  readonly os: Os.Os
  readonly keyring: Tickets.Keyring
  /** Variables for every worker's environment beside the primary's own (`undefined` removes one). */
  readonly env: Readonly<Record<string, string | undefined>>
  readonly settings: Settings
  /** The listening sockets inherited (from systemd, or the previous primary's groups): the group's from the start. */
  readonly inherited: ReadonlyArray<Held>
  /** Binds an address a worker asked for, held for the scope's life (the primary's `Listeners`). */
  readonly listen: (request: {
    readonly address: string
    readonly name: string | undefined
    readonly backlog: number
  }) => Effect.Effect<Held, ListenFailure, Scope.Scope>
  /** Tells the primary's supervisor how a rolling restart ended. */
  readonly rolled: (outcome: Rolled) => Effect.Effect<void>
  /** A worker's application asks for a rolling restart. */
  readonly requestRoll: Effect.Effect<void>
  /** Completes on a second termination signal: the workers still draining are killed. */
  readonly forced: Effect.Effect<void>
  readonly log: (message: string, annotations: Readonly<Record<string, unknown>>) => Effect.Effect<void>
  /** The annotations of the primary's log lines. */
  readonly annotations: Readonly<Record<string, unknown>>
}

/**
 * What a worker is doing: starting (not ready yet), serving, on probation (a roll's canary), paused (its slot's new
 * worker is on probation, or the group is paused), draining (let go by a roll or a replacement, or stopping).
 */
export type WorkerPhase = "starting" | "serving" | "probation" | "paused" | "draining"

/** A worker alive, as the status shows it. */
export interface WorkerStatus {
  /** Its slot; none for an old worker a roll or a replacement let go, which drains. */
  readonly slot: number | undefined
  readonly pid: number
  readonly phase: WorkerPhase
  /** Its resident set size now, in bytes; none if unknown. */
  readonly rssBytes: number | undefined
  /** When it was started, in milliseconds since the epoch. */
  readonly startedAt: number
  /** Deaths of its slot's workers, since the group started. */
  readonly deaths: number
  /** Replacements of its slot's workers for memory, since the group started. */
  readonly memoryReplacements: number
}

/** The group, as the primary's supervisor drives it. */
export interface Group {
  readonly roll: Effect.Effect<void>
  readonly pause: Effect.Effect<void>
  readonly resume: Effect.Effect<void>
  /** Every listening socket the group holds, for a successor primary. */
  readonly held: Effect.Effect<ReadonlyArray<Os.Passed>>
  /** Every worker alive, by slot, then the old ones draining. */
  readonly workers: Effect.Effect<ReadonlyArray<WorkerStatus>>
}

const count = countWorkers

/** The group's own bookkeeping beside the pool's actions: a worker that has exited is forgotten. */
type Action = Pool.Action | { readonly _tag: "Forget"; readonly id: number }

interface Owner {
  readonly given: Given
  readonly scope: Scope.Scope
  readonly loop: Loop.Loop<Pool.State, Pool.Event>
  /** The workers running, by id: read and written by the loop's owner alone. */
  readonly workers: Map<number, Child.Child>
  /** When each worker running was started (epoch milliseconds), by id: written by the loop's owner alone. */
  readonly startedAt: Map<number, number>
  readonly fibers: FiberSet.FiberSet
}

const send = (owner: Owner, event: Pool.Event) => Effect.asVoid(owner.loop.send(event))

// -----------------------------------------------------------------------------
// Sockets
// -----------------------------------------------------------------------------

const reusesPort = (fd: number) => Result.getOrElse(Sys.reusesPort(fd), () => false)

// An address asked for: a socket per slot (a SO_REUSEPORT group), or one socket every slot shares (a unix path).
const bindSockets = (owner: Owner, request: ListenRequest) =>
  Effect.gen(function* () {
    const { listen, settings } = owner.given
    const { address, name, backlog } = request
    const bind = (at: string) => Scope.provide(listen({ address: at, name, backlog }), owner.scope)
    const first = yield* bind(address)
    const fds = [first.fd]
    if (first.address._tag !== "UnixPathAddress" && reusesPort(first.fd)) {
      const bound = formatAddress(first.address)
      while (fds.length < settings.workers) fds.push((yield* bind(bound)).fd)
    }
    return { name: first.name, fds }
  })

// The sockets inherited (from systemd, or from the previous primary, a group per address): one per slot, bound
// here up to the number of workers where the previous primary had fewer.
const adoptInherited = (given: Given, scope: Scope.Scope) =>
  Effect.gen(function* () {
    const byAddress = new Map<string, Array<Held>>()
    for (const fd of given.inherited) {
      const key = JSON.stringify([fd.name, formatAddress(fd.address)])
      byAddress.set(key, [...(byAddress.get(key) ?? []), fd])
    }
    const sockets: Array<Pool.Sockets> = []
    for (const fds of byAddress.values()) {
      const group = fds.filter((fd) => fd.address._tag !== "UnixPathAddress" && reusesPort(fd.fd))
      for (const fd of fds) if (!group.includes(fd)) sockets.push({ key: undefined, name: fd.name, fds: [fd.fd] })
      if (group.length > 0) sockets.push(yield* completeGroup(given, scope, group))
    }
    return sockets
  })

const completeGroup = (given: Given, scope: Scope.Scope, group: ReadonlyArray<Held>) =>
  Effect.gen(function* () {
    const { workers } = given.settings
    const { name, address } = group[0]!
    if (group.length > workers) {
      return yield* new TooFewWorkers({ workers, sockets: group.length, address: formatAddress(address) })
    }
    const fds = group.map((fd) => fd.fd)
    while (fds.length < workers) {
      const bound = Sys.bindListen(address, 511, { reusePort: true })
      if (Result.isFailure(bound)) return yield* Effect.die(new Error(Sys.formatSysError(bound.failure)))
      const fd = bound.success
      yield* Scope.addFinalizer(
        scope,
        Effect.sync(() => closeSync(fd))
      )
      fds.push(fd)
    }
    return { key: undefined, name, fds } satisfies Pool.Sockets
  })

// -----------------------------------------------------------------------------
// Workers
// -----------------------------------------------------------------------------

// What a worker says beside `ready`: asks for listeners, and for a rolling restart.
const onMessage =
  (owner: Owner, id: number) =>
  (message: ToParent): Effect.Effect<void> => {
    if (message._tag === "Roll") return owner.given.requestRoll
    if (message._tag === "Listen")
      return send(owner, { _tag: "ListenAsked", id, ask: message.ask, request: message.request })
    return Effect.void
  }

// Starts the worker `id` for `slot`, and watches it: ready (within the timeout, or it is killed), and its exit.
const spawn = (owner: Owner, action: Extract<Pool.Action, { readonly _tag: "Spawn" }>) =>
  Effect.gen(function* () {
    const { os, keyring, env, settings } = owner.given
    const { slot, id, passed } = action
    const options = { slot, passed, ticketKey: Tickets.encode(yield* keyring.current), env }
    const started = yield* Child.start(os, options, onMessage(owner, id)).pipe(
      Scope.provide(owner.scope),
      Effect.result
    )
    if (Result.isFailure(started)) {
      yield* owner.given.log("effect-grace: a worker could not be started", { slot, cause: started.failure.cause })
      return yield* send(owner, { _tag: "SpawnFailed", id, cause: started.failure.cause })
    }
    const worker = started.success
    owner.workers.set(id, worker)
    owner.startedAt.set(id, yield* Clock.currentTimeMillis)
    yield* count("started")
    yield* owner.given.log("effect-grace: worker started", { slot, worker: worker.pid })
    const spawned = owner.startedAt.get(id)!
    const isReady = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      owner.given.log("effect-grace: worker ready", { slot, worker: worker.pid, millis: now - spawned })
    )
    const ready = worker.ready.pipe(
      Effect.timeout(settings.readyTimeout),
      Effect.withSpan("effect-grace.worker.start", {
        attributes: { "effect-grace.slot": slot, "effect-grace.worker.pid": worker.pid }
      }),
      Effect.matchEffect({
        onSuccess: () => Effect.all([count("ready"), isReady, send(owner, { _tag: "Ready", id })]),
        // Exited first: its exit is the event. Not ready in time: killed, and its exit follows.
        onFailure: (error) => ("pid" in error ? Effect.void : worker.kill)
      })
    )
    const exited = Effect.flatMap(worker.exited, (exit) =>
      Effect.andThen(count("exited"), send(owner, { _tag: "Exited", id, exit }))
    )
    yield* FiberSet.run(owner.fibers, ready)
    yield* FiberSet.run(owner.fibers, exited)
  })

// The workers a roll put in place, by slot and pid (one already gone is left out).
const pidsOf = (owner: Owner, workers: ReadonlyArray<{ readonly slot: number; readonly id: number }>) =>
  workers.flatMap(({ slot, id }) => {
    const worker = owner.workers.get(id)
    return worker === undefined ? [] : [{ slot, pid: worker.pid }]
  })

const withWorker = (owner: Owner, id: number, f: (worker: Child.Child) => Effect.Effect<void>) =>
  Effect.suspend(() => {
    const worker = owner.workers.get(id)
    return worker === undefined ? Effect.void : f(worker)
  })

const later = (owner: Owner, millis: number, event: Pool.Event) =>
  Effect.asVoid(FiberSet.run(owner.fibers, Effect.andThen(Effect.sleep(Duration.millis(millis)), send(owner, event))))

// Bound in a fiber of its own (a host name is looked up first): the loop goes on meanwhile. A defect is a failed
// bind too, so that no ask waits for ever.
const bind = (owner: Owner, action: Extract<Pool.Action, { readonly _tag: "Bind" }>) => {
  const { key, request } = action
  const failed = (code: string) => ({ _tag: "BindFailed", address: request.address, code, syscall: "bind" }) as const
  return Effect.asVoid(
    FiberSet.run(
      owner.fibers,
      Effect.matchCauseEffect(bindSockets(owner, request), {
        onSuccess: ({ name, fds }) => send(owner, { _tag: "Bound", key, name, fds }),
        onFailure: (cause) =>
          Cause.hasInterruptsOnly(cause)
            ? Effect.failCause(cause)
            : send(owner, {
                _tag: "BindFailed",
                key,
                failure: Option.getOrElse(Cause.findErrorOption(cause), () => failed(String(Cause.squash(cause))))
              })
      })
    )
  )
}

// The fd first, then the line that says it was sent; a fd that cannot be sent is a failed ask.
const sendListener = (owner: Owner, action: Extract<Pool.Action, { readonly _tag: "SendListener" }>) =>
  withWorker(owner, action.id, (worker) =>
    Effect.catch(worker.sendListener(action.ask, action.fd), (error) =>
      worker.tell({
        _tag: "ListenFailed",
        ask: action.ask,
        failure: { _tag: "BindFailed", address: action.address, code: error.code, syscall: error.syscall }
      })
    )
  )

// Each socket of the loan, fd first; one that cannot be sent is logged and left (the slot's backlog keeps its
// connections until its own worker, or the next borrower, accepts), rather than lent again and again.
const lend = (owner: Owner, action: Extract<Pool.Action, { readonly _tag: "Lend" }>) =>
  withWorker(owner, action.id, (worker) =>
    Effect.forEach(
      action.fds,
      (fd) =>
        Effect.catch(worker.lend(fd), (error) =>
          owner.given.log("effect-grace: a slot's socket could not be lent", {
            slot: action.slot,
            worker: worker.pid,
            code: error.code
          })
        ),
      { discard: true }
    )
  )

const reclaim = (owner: Owner, action: Extract<Pool.Action, { readonly _tag: "Reclaim" }>) =>
  withWorker(owner, action.id, (worker) =>
    Effect.forEach(action.fds, (fd) => worker.tell({ _tag: "Reclaim", loan: fd }), { discard: true })
  )

const tell = (owner: Owner, id: number, command: Command) =>
  withWorker(owner, id, (worker) => worker.tell({ _tag: "Command", command }))

// The line and the count of a worker replaced for its memory; the machine's next actions start its replacement.
const replaceForMemory = (owner: Owner, action: Extract<Pool.Action, { readonly _tag: "ReplaceForMemory" }>) =>
  Effect.gen(function* () {
    const limit = Memory.limitOf(owner.given.settings)
    const worker = owner.workers.get(action.id)
    yield* owner.given.log("effect-grace: worker over memory limit", {
      slot: action.slot,
      worker: worker?.pid,
      ...(limit === undefined ? {} : Memory.annotations(action.rss, limit)),
      ...(action.millis > 0 ? { delayMillis: action.millis } : {})
    })
    yield* Memory.countReplacement
  })

const perform =
  (owner: Owner) =>
  (action: Action): Effect.Effect<void> => {
    const { given } = owner
    switch (action._tag) {
      case "Log":
        return given.log(action.message, action.annotations)
      case "Spawn":
        return spawn(owner, action)
      case "Kill":
        return withWorker(owner, action.id, (w) => w.kill)
      case "Terminate":
        return tell(owner, action.id, "terminate")
      case "Pause":
        return tell(owner, action.id, "pause")
      case "Resume":
        return tell(owner, action.id, "resume")
      case "Serving":
        return tell(owner, action.id, "serving")
      case "StartProbation":
        return Effect.andThen(
          withWorker(owner, action.id, (w) =>
            given.log("effect-grace: canary on probation", {
              worker: w.pid,
              probationMillis: Duration.toMillis(given.settings.probation)
            })
          ),
          later(owner, Duration.toMillis(given.settings.probation), { _tag: "ProbationOver", id: action.id })
        )
      case "ScheduleRespawn":
        return Effect.andThen(
          given.log("effect-grace: starting the worker again after a delay", {
            slot: action.slot,
            millis: action.millis
          }),
          later(owner, action.millis, { _tag: "RespawnDue", slot: action.slot })
        )
      case "Bind":
        return bind(owner, action)
      case "SendListener":
        return sendListener(owner, action)
      case "RefuseListen":
        return withWorker(owner, action.id, (w) =>
          w.tell({ _tag: "ListenFailed", ask: action.ask, failure: action.failure })
        )
      case "Lend":
        return lend(owner, action)
      case "Reclaim":
        return reclaim(owner, action)
      case "RollDone":
        return given.rolled({ _tag: "RollDone", workers: pidsOf(owner, action.workers) })
      case "RollStopped":
        return given.rolled({ _tag: "RollStopped", failure: action.failure })
      case "ReplaceForMemory":
        return replaceForMemory(owner, action)
      case "Forget":
        return Effect.sync(() => {
          owner.workers.delete(action.id)
          owner.startedAt.delete(action.id)
        })
    }
  }

const rulesOf = (settings: Settings): Pool.Rules => ({
  surge: Math.max(1, settings.surge),
  // A few start-ups at a time, one per core on a larger host: more only contend for the cores (and the process
  // table: a thousand at once met EAGAIN).
  startAtOnce: Math.max(8, availableParallelism()),
  probation: Duration.isGreaterThan(settings.probation, Duration.zero),
  backoffMillis: 1000,
  maxBackoffMillis: 30_000
})

// The pool's transition, and the worker that exited forgotten once the machine has seen its exit.
const transition =
  (rules: Pool.Rules) =>
  (state: Pool.State, event: Pool.Event): Loop.Step<Pool.State, Action> => {
    const [next, actions] = Pool.transition(state, event, rules)
    return event._tag === "Exited" ? [next, [...actions, { _tag: "Forget", id: event.id }]] : [next, actions]
  }

// The workers that serve, by id, slot and pid.
const servingWorkers = (owner: Owner, state: Pool.State) =>
  state.slots.flatMap((slot, index) => {
    const worker = slot.serving === undefined ? undefined : owner.workers.get(slot.serving)
    return worker === undefined ? [] : [{ id: slot.serving!, slot: index, pid: worker.pid }]
  })

// Once first ready, a worker above the limit already fails the start-up: every replacement would start above it.
const checkFirstSizes = (owner: Owner, limit: Memory.Limit) =>
  Effect.gen(function* () {
    for (const { slot, pid } of servingWorkers(owner, yield* owner.loop.state)) {
      const rss = yield* owner.given.os.rss(pid)
      if (rss !== undefined && rss > limit.bytes) {
        return yield* new MemoryLimitTooLow({ slot, pid, rss, limit: limit.bytes })
      }
    }
  })

// Samples the workers that serve, in the group's scope, and tells the machine of those above the limit.
const watchMemory = (owner: Owner, limit: Memory.Limit) =>
  Memory.watch<number>({
    limit,
    grace: owner.given.settings.maxMemoryGrace,
    sample: Effect.flatMap(owner.loop.state, (state) =>
      Effect.forEach(servingWorkers(owner, state), ({ id, pid }) =>
        Effect.map(owner.given.os.rss(pid), (rss) => ({ key: id, rss }))
      )
    ),
    over: ({ key, rss, sinceStart }) => send(owner, { _tag: "OverMemory", id: key, rss, sinceStart })
  }).pipe(Scope.provide(owner.scope))

const phaseOf = (state: Pool.State, slot: Pool.Slot, id: number): WorkerPhase =>
  state.phase === "Stopping" || state.phase === "Stopped"
    ? "draining"
    : id === slot.starting
      ? "starting"
      : id === slot.probation
        ? "probation"
        : state.paused || slot.probation !== undefined
          ? "paused"
          : "serving"

// Every worker alive: the state says where each is, the owner's maps its pid and start, the OS its size.
const statusOf = (owner: Owner) =>
  Effect.gen(function* () {
    const state = yield* owner.loop.state
    const found: Array<{ readonly id: number; readonly slot: Pool.Slot | undefined; readonly index?: number }> = [
      ...state.slots.flatMap((slot, index) =>
        [slot.serving, slot.probation, slot.starting].flatMap((id) => (id === undefined ? [] : [{ id, slot, index }]))
      ),
      ...state.retiring.map((id) => ({ id, slot: undefined }))
    ]
    return yield* Effect.forEach(
      found.flatMap(({ id, slot, index }) => {
        const worker = owner.workers.get(id)
        return worker === undefined ? [] : [{ id, slot, index, pid: worker.pid }]
      }),
      ({ id, slot, index, pid }) =>
        Effect.map(owner.given.os.rss(pid), (rssBytes): WorkerStatus => ({
          slot: index,
          pid,
          phase: slot === undefined ? "draining" : phaseOf(state, slot, id),
          rssBytes,
          startedAt: owner.startedAt.get(id) ?? 0,
          deaths: slot?.died ?? 0,
          memoryReplacements: slot?.memoryReplacements ?? 0
        }))
    )
  })

// Ready once every slot serves; a worker that failed first fails the start-up.
const started = (loop: Loop.Loop<Pool.State, Pool.Event>) =>
  Effect.flatMap(
    loop.when((state): Result.Result<void, Pool.Failure> | undefined =>
      state.phase === "Serving" ? Result.void : state.failure !== undefined ? Result.fail(state.failure) : undefined
    ),
    Effect.fromResult
  )

/**
 * Starts the group in the current scope and waits until every worker is ready; fails with how a worker failed if
 * one fails first. Closing the scope stops the group: every worker drains and exits (or is killed, if not ready, or
 * once forced), and the scope's closing waits for them.
 */
export const make = (
  given: Given
): Effect.Effect<Group, Pool.Failure | TooFewWorkers | MemoryLimitTooLow, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const fibers = yield* FiberSet.make()
    const workers = new Map<number, Child.Child>()
    const startedAt = new Map<number, number>()
    let owner: Owner | undefined
    const inherited = yield* adoptInherited(given, scope)
    const rules = rulesOf(given.settings)
    const first = Pool.start(given.settings.workers, inherited, rules.startAtOnce)
    const loop = yield* Loop.make<Pool.State, Pool.Event, Action>(first, (owned) => {
      owner = { given, scope, loop: owned, workers, startedAt, fibers }
      return {
        name: "workers",
        transition: transition(rules),
        perform: perform(owner),
        failed: (action, cause) =>
          action._tag === "Forget" ? undefined : { _tag: "ActionFailed", action, cause: Cause.squash(cause) },
        annotations: given.annotations
      }
    })
    const stopped = loop.when((state) => (state.phase === "Stopped" ? true : undefined))
    // Runs before the loop ends: every worker drains and exits first, or is killed once forced.
    const forced = given.forced.pipe(Effect.andThen(loop.send({ _tag: "ForceStop" })), Effect.andThen(stopped))
    yield* Effect.addFinalizer(() => Effect.andThen(loop.send({ _tag: "Stop" }), Effect.raceFirst(stopped, forced)))
    yield* started(loop)
    const limit = Memory.limitOf(given.settings)
    if (limit !== undefined) {
      yield* checkFirstSizes(owner!, limit)
      yield* watchMemory(owner!, limit)
    }
    return {
      roll: Effect.asVoid(loop.send({ _tag: "Roll" })),
      pause: Effect.asVoid(loop.send({ _tag: "PauseAll" })),
      resume: Effect.asVoid(loop.send({ _tag: "ResumeAll" })),
      held: Effect.map(loop.state, (state) =>
        state.sockets.flatMap(({ name, fds }) => fds.map((fd) => ({ fd, name })))
      ),
      workers: statusOf(owner!)
    }
  })
