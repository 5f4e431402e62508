/**
 * A primary's workers at run time: one fiber owns the pool's state
 * (pool.ts), takes its events (a worker ready, exited, a timer, a roll, a
 * pause) from a queue, and carries out its actions through the worker
 * protocol (worker.ts). The primary itself runs no application code: it
 * holds the listening sockets, binds those its workers ask for, and starts,
 * pauses, resumes and stops workers.
 *
 * The group lives in the supervisor's application scope, as an application
 * would: built once every worker is ready, and closing that scope is its
 * drain (every worker drains and exits).
 */
import type * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Metric from "effect/Metric"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import { closeSync } from "node:fs"
import * as Result from "effect/Result"
import * as Semaphore from "effect/Semaphore"
import type * as ListenFds from "../ListenFds.ts"
import * as Listeners from "../Listeners.ts"
import * as Sys from "./sys.ts"
import * as Os from "./os.ts"
import * as Pool from "./pool.ts"
import * as Tickets from "./tickets.ts"
import * as Worker from "./worker.ts"

/**
 * A worker exited before the group was first ready: the program does not start.
 *
 * @since 0.1.0
 * @category errors
 */
export class WorkerFailed extends Data.TaggedError("WorkerFailed")<{
  readonly slot: number
  readonly pid: number | undefined
  readonly code: number | null
  readonly signal: string | null
}> {
  override get message(): string {
    const how = Os.describeExit(this)
    return `worker ${this.slot} (pid ${this.pid ?? "unknown"}) ${how} before it was ready (see its output)`
  }
}

/**
 * The previous primary handed on more sockets of one address (one per worker) than this primary has workers:
 * connections the kernel gave the others would wait for ever.
 *
 * @since 0.1.0
 * @category errors
 */
export class TooFewWorkers extends Data.TaggedError("TooFewWorkers")<{
  readonly workers: number
  readonly sockets: number
  readonly address: string
}> {
  override get message(): string {
    return (
      `${this.workers} workers are fewer than the ${this.sockets} sockets of ${this.address} that the previous ` +
      "primary handed on, one per worker; stop and start the service to run fewer workers"
    )
  }
}

export interface Settings {
  readonly workers: number
  readonly surge: number
  readonly probation: Duration.Duration
  readonly readyTimeout: Duration.Duration
}

/** What the group is given by the supervisor of its primary. */
export interface Context {
  readonly os: Os.Os
  readonly listeners: Listeners.Listeners["Service"]
  readonly keyring: Tickets.Keyring
  /** Variables for every worker's environment beside the primary's own (`undefined` removes one). */
  readonly env: Readonly<Record<string, string | undefined>>
  readonly settings: Settings
  /** Tells the primary's supervisor how a rolling restart ended. */
  readonly rolled: (outcome: Rolled) => Effect.Effect<void>
  /** A worker's application asks for a rolling restart. */
  readonly requestRoll: Effect.Effect<void>
  /** Completes on a second termination signal: the workers still draining are killed. */
  readonly forced: Effect.Effect<void>
  readonly log: (message: string, annotations: Readonly<Record<string, unknown>>) => Effect.Effect<void>
}

/** How a rolling restart ended: every slot rolled, or it stopped at a new worker that exited (`pid`). */
export type Rolled =
  | { readonly _tag: "RollDone" }
  | {
      readonly _tag: "ExitedBeforeReady" | "HandedBack"
      readonly slot: number
      readonly pid: number | undefined
      readonly code: number | null
      readonly signal: string | null
    }

/**
 * The listening sockets of one address: a `SO_REUSEPORT` group, one socket per slot, which the kernel spreads
 * connections over (measured: even where one shared socket gave one worker most keep-alive connections,
 * bench/results/balance.md); or one socket every slot shares (a unix path, or a socket systemd passed).
 */
interface Sockets {
  readonly name: string
  readonly fds: ReadonlyArray<number>
}

/** The socket of `sockets` that the worker of `slot` accepts on. */
const socketOf = (sockets: Sockets, slot: number) => sockets.fds[slot % sockets.fds.length]!

/** The group, as the primary's supervisor drives it. */
export interface Group {
  readonly roll: Effect.Effect<void>
  readonly pause: Effect.Effect<void>
  readonly resume: Effect.Effect<void>
  /** The pid of each worker that serves, by slot (for logs and tests). */
  readonly pids: Effect.Effect<ReadonlyArray<number | undefined>>
  /** Every listening socket the group holds, for a successor primary. */
  readonly held: Effect.Effect<ReadonlyArray<Os.Passed>>
}

/**
 * The primary's counter of its workers' events: `effect-grace.workers`, by `event` (`started`, `ready`, `exited`).
 *
 * @since 0.1.0
 * @category observability
 */
export const workersCounter = Metric.counter("effect-grace.workers", {
  description: "Workers started, ready and exited, by event",
  incremental: true
})

const count = (event: string) => Metric.update(Metric.withAttributes(workersCounter, { event }), 1)

interface Runtime {
  readonly context: Context
  readonly rules: Pool.Rules
  readonly scope: Scope.Scope
  readonly events: Queue.Queue<Pool.Event, Cause.Done>
  readonly state: Ref.Ref<Pool.State>
  readonly workers: Map<number, Worker.Worker>
  readonly fibers: FiberSet.FiberSet
  /** The sockets of each address, in the order they were inherited or asked for. */
  readonly sockets: Array<Sockets>
  /** Those bound for the workers' asks, by address, name and order. */
  readonly bound: Map<string, Sockets>
  /** One ask bound at a time: two workers asking for one address get one group of sockets. */
  readonly binding: Semaphore.Semaphore
  readonly ready: Deferred.Deferred<void, WorkerFailed>
  readonly stopped: Deferred.Deferred<void>
}

const send = (runtime: Runtime, event: Pool.Event) => Queue.offer(runtime.events, event)

// What the worker of `slot` is given: one socket of each address.
const passed = (runtime: Runtime, slot: number): ReadonlyArray<Os.Passed> =>
  runtime.sockets.map((sockets) => ({ fd: socketOf(sockets, slot), name: sockets.name }))

const reusesPort = (fd: number) => Result.getOrElse(Sys.reusesPort(fd), () => false)

// Bound once for the group, a socket per slot, and held for the life of the service; a later ask of the same is
// given the same sockets.
const listen = (runtime: Runtime, slot: number) => (request: Worker.ListenRequest) =>
  Effect.gen(function* () {
    const key = JSON.stringify([request.address, request.name, request.nth])
    const held = runtime.bound.get(key) ?? (yield* bindSockets(runtime, request))
    runtime.bound.set(key, held)
    return socketOf(held, slot)
  }).pipe(runtime.binding.withPermits(1))

const bindSockets = (runtime: Runtime, request: Worker.ListenRequest) =>
  Effect.gen(function* () {
    const { listeners, settings } = runtime.context
    const { name, backlog } = request
    const bind = (address: string) => Scope.provide(listeners.listen({ address, name, backlog }), runtime.scope)
    // A primary binds with the native calls (workers need them): a listener always has its fd here.
    const first = yield* bind(request.address)
    const fds = [first.fd!]
    if (first.address._tag !== "UnixPathAddress" && reusesPort(first.fd!)) {
      const address = Listeners.formatAddress(first.address)
      while (fds.length < settings.workers) fds.push((yield* bind(address)).fd!)
    }
    const sockets: Sockets = { name: first.name, fds }
    runtime.sockets.push(sockets)
    return sockets
  })

// The sockets inherited (from systemd, or from the previous primary, a group per address): one per slot, bound
// here up to the number of workers where the previous primary had fewer.
const adoptInherited = (runtime: Runtime) =>
  Effect.gen(function* () {
    const byAddress = new Map<string, Array<ListenFds.InheritedFd>>()
    for (const fd of yield* runtime.context.listeners.unclaimed) {
      const key = JSON.stringify([fd.name, Listeners.formatAddress(fd.address)])
      byAddress.set(key, [...(byAddress.get(key) ?? []), fd])
    }
    for (const fds of byAddress.values()) {
      const group = fds.filter((fd) => fd.address._tag !== "UnixPathAddress" && reusesPort(fd.fd))
      for (const fd of fds) if (!group.includes(fd)) runtime.sockets.push({ name: fd.name, fds: [fd.fd] })
      if (group.length > 0) runtime.sockets.push(yield* completeGroup(runtime, group))
    }
  })

const completeGroup = (runtime: Runtime, group: ReadonlyArray<ListenFds.InheritedFd>) =>
  Effect.gen(function* () {
    const { workers } = runtime.context.settings
    const { name, address } = group[0]!
    if (group.length > workers) {
      return yield* new TooFewWorkers({ workers, sockets: group.length, address: Listeners.formatAddress(address) })
    }
    const fds = group.map((fd) => fd.fd)
    while (fds.length < workers) {
      const bound = Sys.bindListen(address, 511, { reusePort: true })
      if (Result.isFailure(bound)) return yield* Effect.die(new Error(Sys.formatSysError(bound.failure)))
      const fd = bound.success
      yield* Scope.addFinalizer(
        runtime.scope,
        Effect.sync(() => closeSync(fd))
      )
      fds.push(fd)
    }
    return { name, fds }
  })

// Starts the worker `id` for `slot`, and watches it: ready (within the timeout, or it is killed), and its exit.
const spawn = (runtime: Runtime, slot: number, id: number) =>
  Effect.gen(function* () {
    const { os, keyring, env, settings } = runtime.context
    const requests: Worker.Requests = { listen: listen(runtime, slot), roll: runtime.context.requestRoll }
    const started = yield* Worker.start(
      os,
      { slot, passed: passed(runtime, slot), ticketKey: Tickets.encode(yield* keyring.current), env },
      requests
    ).pipe(Scope.provide(runtime.scope), Effect.result)
    if (started._tag === "Failure") {
      yield* runtime.context.log("effect-grace: a worker could not be started", { slot, cause: started.failure.cause })
      return yield* send(runtime, { _tag: "Exited", id, code: null, signal: null })
    }
    const worker = started.success
    runtime.workers.set(id, worker)
    yield* count("started")
    yield* runtime.context.log("effect-grace: worker started", { slot, worker: worker.pid })
    const ready = worker.ready.pipe(
      Effect.timeout(settings.readyTimeout),
      Effect.withSpan("effect-grace.worker.start", {
        attributes: { "effect-grace.slot": slot, "effect-grace.worker.pid": worker.pid }
      }),
      Effect.matchEffect({
        onSuccess: () => send(runtime, { _tag: "Ready", id }),
        onFailure: (error) => (error._tag === "ExitedBeforeReady" ? Effect.void : worker.kill)
      })
    )
    const exited = Effect.flatMap(worker.exited, ({ code, signal }) =>
      Effect.andThen(count("exited"), send(runtime, { _tag: "Exited", id, code, signal }))
    )
    yield* FiberSet.run(runtime.fibers, ready)
    yield* FiberSet.run(runtime.fibers, exited)
  })

const withWorker = (runtime: Runtime, id: number, f: (worker: Worker.Worker) => Effect.Effect<void>) =>
  Effect.suspend(() => {
    const worker = runtime.workers.get(id)
    return worker === undefined ? Effect.void : f(worker)
  })

const later = (runtime: Runtime, millis: number, event: Pool.Event) =>
  Effect.asVoid(
    FiberSet.run(runtime.fibers, Effect.andThen(Effect.sleep(Duration.millis(millis)), send(runtime, event)))
  )

const rollFailure = (runtime: Runtime, { _tag, slot, id, code, signal }: Pool.RollFailure) =>
  runtime.context.rolled({ _tag, slot, pid: runtime.workers.get(id)?.pid, code, signal })

const perform =
  (runtime: Runtime) =>
  (action: Pool.Action): Effect.Effect<void> => {
    switch (action._tag) {
      case "Log":
        return runtime.context.log(action.message, action.annotations)
      case "Spawn":
        return spawn(runtime, action.slot, action.id)
      case "Kill":
        return withWorker(runtime, action.id, (w) => w.kill)
      case "Terminate":
        return withWorker(runtime, action.id, (w) => w.terminate)
      case "Pause":
      case "Resume":
      case "Serving":
        return withWorker(runtime, action.id, (w) =>
          w.tell(action._tag === "Pause" ? "pause" : action._tag === "Resume" ? "resume" : "serving")
        )
      case "StartProbation":
        return later(runtime, Duration.toMillis(runtime.context.settings.probation), {
          _tag: "ProbationOver",
          id: action.id
        })
      case "ScheduleRespawn":
        return Effect.andThen(
          runtime.context.log("effect-grace: starting the worker again after a delay", {
            slot: action.slot,
            millis: action.millis
          }),
          later(runtime, action.millis, { _tag: "RespawnDue", slot: action.slot })
        )
      case "GroupReady":
        return Deferred.succeed(runtime.ready, undefined)
      case "StartupFailed":
        return Deferred.fail(
          runtime.ready,
          new WorkerFailed({
            slot: action.slot,
            pid: runtime.workers.get(action.id)?.pid,
            code: action.code,
            signal: action.signal
          })
        )
      case "RollDone":
        return runtime.context.rolled({ _tag: "RollDone" })
      case "RollStopped":
        return rollFailure(runtime, action.failure)
      case "Stopped":
        return Deferred.succeed(runtime.stopped, undefined)
    }
  }

// Exited workers are forgotten once the machine has seen their exit.
const forget = (runtime: Runtime, event: Pool.Event) =>
  Effect.sync(() => {
    if (event._tag === "Exited") runtime.workers.delete(event.id)
  })

/** The one owner of the pool's state. */
const follow = (runtime: Runtime, first: Pool.Step): Effect.Effect<void> => {
  const run = (actions: ReadonlyArray<Pool.Action>) => Effect.forEach(actions, perform(runtime), { discard: true })
  const step = (event: Pool.Event) =>
    Effect.gen(function* () {
      if (event._tag === "Ready") yield* count("ready")
      const [next, actions] = Pool.transition(yield* Ref.get(runtime.state), event, runtime.rules)
      yield* Ref.set(runtime.state, next)
      yield* run(actions)
      yield* forget(runtime, event)
    })
  return Effect.andThen(
    Effect.andThen(Ref.set(runtime.state, first[0]), run(first[1])),
    Effect.forever(Effect.flatMap(Queue.take(runtime.events), step))
  ).pipe(Effect.catch(() => Effect.void))
}

/**
 * Starts the group in the current scope and waits until every worker is ready; fails with `WorkerFailed` if one
 * exits first. Closing the scope stops the group: every worker drains and exits (or is killed, if not ready), and
 * the scope's closing waits for them.
 */
export const make = (context: Context): Effect.Effect<Group, WorkerFailed | TooFewWorkers, Scope.Scope> =>
  Effect.gen(function* () {
    const { settings } = context
    const runtime: Runtime = {
      context,
      rules: {
        surge: Math.max(1, settings.surge),
        probation: Duration.isGreaterThan(settings.probation, Duration.zero),
        backoffMillis: 1000,
        maxBackoffMillis: 30_000
      },
      scope: yield* Effect.scope,
      events: yield* Queue.unbounded<Pool.Event, Cause.Done>(),
      state: yield* Ref.make(Pool.start(0)[0]),
      workers: new Map(),
      fibers: yield* FiberSet.make(),
      sockets: [],
      bound: new Map(),
      binding: yield* Semaphore.make(1),
      ready: yield* Deferred.make<void, WorkerFailed>(),
      stopped: yield* Deferred.make<void>()
    }
    yield* adoptInherited(runtime)
    yield* Effect.forkScoped(follow(runtime, Pool.start(settings.workers)))
    // Runs before the owner is interrupted: every worker drains and exits first, or is killed once forced.
    const killAll = Effect.forEach([...runtime.workers.values()], (worker) => worker.kill, { discard: true })
    const forced = Effect.andThen(context.forced, killAll)
    yield* Effect.addFinalizer(() =>
      Effect.andThen(send(runtime, { _tag: "Stop" }), Effect.raceFirst(Deferred.await(runtime.stopped), forced))
    )
    yield* Deferred.await(runtime.ready)
    return {
      roll: Effect.asVoid(send(runtime, { _tag: "Roll" })),
      pause: Effect.asVoid(send(runtime, { _tag: "PauseAll" })),
      resume: Effect.asVoid(send(runtime, { _tag: "ResumeAll" })),
      pids: Effect.map(Ref.get(runtime.state), (state) =>
        state.slots.map((slot) => (slot.serving === undefined ? undefined : runtime.workers.get(slot.serving)?.pid))
      ),
      held: Effect.sync(() => runtime.sockets.flatMap(({ name, fds }) => fds.map((fd) => ({ fd, name }))))
    }
  })
