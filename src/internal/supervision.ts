/**
 * What one supervision of this process holds, whatever its role: its
 * settings, what it took from the operating system and the public services
 * (through the narrow ports below, so that nothing here imports them), its
 * machine's loop, and the fibers its actions start. The interpreter
 * (interpreter.ts, upgrade.ts) carries out the machine's actions on it; a
 * role (single.ts, primary.ts, worker.ts) says what differs between a
 * single process, a primary and a worker.
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as FiberHandle from "effect/FiberHandle"
import type * as FiberSet from "effect/FiberSet"
import type * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import type * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import type * as Net from "node:net"
import type { Held, Listener } from "./address.ts"
import type * as Child from "./child.ts"
import { RestartError } from "./errors.ts"
import type {
  ExitedBeforeReady,
  HandedBack,
  NotReadyInTime,
  RestartErrorReason,
  RestartUnsupported,
  SpawnFailed
} from "./errors.ts"
import type * as Gate from "./gate.ts"
import type * as Group from "./group.ts"
import type * as Loop from "./loop.ts"
import type * as Machine from "./machine.ts"
import type * as Os from "./os.ts"
import type * as Parent from "./parent.ts"
import type { ListenFailure } from "./protocol.ts"
import type { Settings } from "./settings.ts"
import type * as Tickets from "./tickets.ts"

/** How a programmatic restart is answered. */
export type Reply = Deferred.Deferred<number, RestartError>

/** Why a restart under way failed. */
export type Failure = SpawnFailed | ExitedBeforeReady | NotReadyInTime | HandedBack

export type State = Machine.State<Reply, Child.Child>
export type Event = Machine.Event<Reply, Child.Child, Failure>
export type Action = Machine.Action<Reply, Child.Child, Failure>

/** The listening sockets, as the supervisor uses them: the `Listeners` service. */
export interface Sockets {
  readonly active: Effect.Effect<ReadonlyArray<Listener>>
  readonly unclaimed: Effect.Effect<ReadonlyArray<Held>>
  readonly closeUnclaimed: Effect.Effect<void>
  readonly handOff: Effect.Effect<void>
  readonly listen: (spec: {
    readonly address: string
    readonly name: string | undefined
    readonly backlog: number
    readonly mode?: number | undefined
  }) => Effect.Effect<Listener, { readonly reason: ListenFailure }, Scope.Scope>
}

/** Serving a listener the supervisor itself accepts on (the control socket): `Listeners`' own functions. */
export interface Serving {
  readonly serve: (listener: Listener, server: Net.Server) => Effect.Effect<void, unknown>
  /** Stops accepting, the socket kept open to accept again (a successor's probation). */
  readonly pause: (listener: Listener) => Effect.Effect<void>
  readonly resume: (listener: Listener) => Effect.Effect<void, unknown>
  /** Stops accepting for good; a successor that holds the socket goes on accepting on it. */
  readonly stop: (listener: Listener) => Effect.Effect<void>
}

/** How `Listeners` binds for this process: its primary's binds, for a worker; `SO_REUSEPORT`, for a primary. */
export interface Binding {
  readonly remote:
    ((request: Parameters<Parent.Parent["listen"]>[0]) => Effect.Effect<number, ListenFailure>) | undefined
  readonly reusePort: boolean
}

/** systemd's notify socket, as the supervisor uses it: the `Notify` service. */
export interface Notifier {
  readonly ready: Effect.Effect<void, unknown>
  readonly reloading: Effect.Effect<void, unknown>
  readonly stopping: Effect.Effect<void, unknown>
  readonly status: (text: string) => Effect.Effect<void, unknown>
  readonly mainPid: (pid: number, options?: { readonly ready?: boolean | undefined }) => Effect.Effect<void, unknown>
}

/** A line this process logged, as the control socket's progress lines repeat it. */
export interface Line {
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
  readonly at: number
}

/** The last restart asked of this process, and how it went. */
export interface LastRestart {
  readonly at: number
  readonly kind: Machine.Kind
  readonly by: string
  /** `ready`, or the tag of the reason it failed. */
  readonly outcome: string
  readonly millis: number
  readonly pid: number | undefined
}

/** A primary's worker: its slot, and its primary's pid. */
export interface WorkerInfo {
  readonly slot: number
  readonly primaryPid: number
}

/**
 * What differs between a single process, a primary and a worker: decided once, at start (supervise.ts), and the
 * same for the life of the process.
 */
export interface Role {
  readonly kind: "single" | "primary" | "worker"
  /** How `Listeners` binds what this process was not given. */
  readonly binding: Binding
  /** The process this one took over from, while it drains: a successor's parent (a worker has none). */
  readonly predecessor: Parent.Parent | undefined
  /** What a signal asks for (every process takes the same signals, from its start: `SIGNALS`). */
  readonly onSignal: (supervision: Supervision, signal: NodeJS.Signals) => Effect.Effect<void>
  readonly rules: Machine.Rules
  /** Annotations of every line this process logs: its pid, and a worker's slot. */
  readonly annotations: Readonly<Record<string, unknown>>
  /** Runs the application's building and serving as this role's (a worker's slot on its spans and metrics). */
  readonly around: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** What the `ready` line says this process cannot do here (a restart, an upgrade), and why; nothing if it can. */
  readonly unavailable: Readonly<Record<string, string>>
  /** The PID file this process writes once ready; a worker writes none. */
  readonly pidFile: string | undefined
  /** Tells whoever waits that this process serves: its parent (after a restart), its primary, or systemd. */
  readonly tellReady: (supervision: Supervision) => Effect.Effect<void>
  /** Whether the inherited fds nobody asked for stay open once ready (a primary's, for its workers). */
  readonly holdsUnclaimed: boolean
  /** The `restart` of the application's `Supervisor`. */
  readonly restart: (supervision: Supervision) => Effect.Effect<number, RestartError>
  /** What this process serves, in its application scope: the application, or a primary's workers. */
  readonly serves: (supervision: Supervision, app: Layer.Layer<never, unknown>) => Layer.Layer<never, unknown>
  /** Events from outside beside the signals (a worker's primary), for as long as the scope lives. */
  readonly listen: (supervision: Supervision) => Effect.Effect<void, never, Scope.Scope>
  /** What a successor is given: every listening socket this process holds. */
  readonly passedOn: (supervision: Supervision) => Effect.Effect<ReadonlyArray<Os.Passed>>
  /** Starts a rolling restart of a primary's workers. */
  readonly roll: Effect.Effect<void>
  /**
   * What a reload asked on the control socket restarts: a primary's workers (a roll), or with `upgrade` the process
   * itself; `undefined` where this process takes no control socket (a worker: its primary's is the service's).
   */
  readonly reload: ((upgrade: boolean) => Machine.Kind) | undefined
  /** A primary's workers, as `status` reports them; none elsewhere. */
  readonly workers: (supervision: Supervision) => Effect.Effect<ReadonlyArray<Group.WorkerStatus>>
  readonly worker: Option.Option<WorkerInfo>
}

/** The fibers the machine's actions start, each owned by the supervision's scope. */
export interface Fibers {
  readonly startup: FiberHandle.FiberHandle
  readonly restarting: FiberHandle.FiberHandle
  readonly delaying: FiberHandle.FiberHandle
  readonly draining: FiberHandle.FiberHandle
  /** The probation's timer, and the watch on the successor during it. */
  readonly probation: FiberHandle.FiberHandle
  readonly watching: FiberHandle.FiberHandle
  /** The servers' pauses: each ends once its server has drained what it had. */
  readonly pauses: FiberSet.FiberSet
  /** Restarts asked for by a signal or a worker, each answered to no one. */
  readonly requests: FiberSet.FiberSet<number, RestartError>
  /** Restarts passed on: to the successor, waiting for their outcome there; from the parent, answering it. */
  readonly passedOn: FiberSet.FiberSet
}

/** What a supervision is made with: its settings, its role, and what it took at start. */
export interface Taken {
  readonly settings: Settings
  readonly role: Role
  readonly os: Os.Os
  readonly listeners: Sockets
  readonly serving: Serving
  readonly notify: Notifier
  /** The TLS session ticket key of this lineage, handed down and rotated. */
  readonly keyring: Tickets.Keyring
  /** The compile cache's directory, for successors, if it is on. */
  readonly compileCache: string | undefined
  /** Why listeners cannot be handed on here, if they cannot. */
  readonly handOffBlocked: RestartUnsupported | undefined
}

/** One supervision of this process. */
export interface Supervision extends Taken {
  readonly loop: Loop.Loop<State, Event>
  /** The supervision's own scope: the process's life. */
  readonly scope: Scope.Scope
  /** The servers, paused and resumed during a successor's probation. */
  readonly gate: ReturnType<typeof Gate.make>
  /** The application's scope: closing it is the drain. */
  readonly appScope: Scope.Closeable
  readonly fibers: Fibers
  /** Every line `log` writes, for whoever listens (a control client that asked for progress). */
  readonly lines: PubSub.PubSub<Line>
  /** When the supervision started, in epoch milliseconds. */
  readonly startedAt: number
  /** The last restart asked for, once one has ended (written by `Requests.requestRestart` alone). */
  readonly lastRestart: Ref.Ref<LastRestart | undefined>
}

/** Tells the machine of an event. */
export const send = (supervision: Supervision, event: Event): Effect.Effect<void> =>
  Effect.asVoid(supervision.loop.send(event))

/** Logs a line of this process, with its pid (and slot), and `annotations`. */
export const log = (
  supervision: Supervision,
  message: string,
  annotations: Readonly<Record<string, unknown>> = {}
): Effect.Effect<void> =>
  Effect.andThen(
    Effect.logInfo(message).pipe(Effect.annotateLogs({ ...supervision.role.annotations, ...annotations })),
    publish(supervision, message, annotations)
  )

// A line, for the control clients that follow them; none listening, it is dropped.
const publish = (supervision: Supervision, message: string, annotations: Readonly<Record<string, unknown>>) =>
  Effect.flatMap(Clock.currentTimeMillis, (at) =>
    Effect.asVoid(
      PubSub.publish(supervision.lines, {
        message,
        annotations: { ...supervision.role.annotations, ...annotations },
        at
      })
    )
  )

/** What a successor or a worker is given of the compile cache: the directory this lineage compiles into. */
export const cacheEnv = (supervision: Supervision): Record<string, string> =>
  supervision.compileCache === undefined ? {} : { NODE_COMPILE_CACHE: supervision.compileCache }

/** Every refusal and failure of a restart is logged once, whoever asked; every caller is answered. */
export const refuse = (supervision: Supervision, replies: ReadonlyArray<Reply>, reason: RestartErrorReason) => {
  const error = new RestartError({ reason })
  return Effect.andThen(
    Effect.logWarning(`effect-grace: ${error.message}`).pipe(
      Effect.annotateLogs({ ...supervision.role.annotations, reason: reason._tag }),
      Effect.andThen(publish(supervision, `effect-grace: ${error.message}`, { reason: reason._tag }))
    ),
    Effect.forEach(replies, (reply) => Deferred.fail(reply, error), { discard: true })
  )
}
