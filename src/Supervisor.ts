/**
 * Zero-downtime restarts: a running program replaces itself with a new process
 * of the same program (new code, new configuration, new certificates) without
 * refusing or dropping a connection, and terminates gracefully.
 *
 * `layer(app)` is what a program launches:
 * `Layer.launch(Supervisor.layer(App)).pipe(Supervisor.runMain)`. It builds the
 * application's layers (its servers) on Listeners, says it is ready, and
 * waits. On the restart signal (`SIGUSR2` by default) or a call to `restart`,
 * it starts a successor with every active listener as fds 3.. (`LISTEN_FDS`,
 * `LISTEN_FDNAMES`, `LISTEN_PID`), and waits until the successor's own servers
 * listen. Then the successor is on probation: this process stops accepting
 * and drains, but keeps its sockets and its application, and takes the
 * service back if the successor dies within the window. Once the window has
 * passed it finishes its drain and the program ends. On `SIGTERM` or `SIGINT`
 * it drains the same way.
 *
 * With workers (`GRACE_WORKERS`), the process launched is a primary that
 * runs no application: it holds the listening sockets and starts that many
 * workers, each this program running `app` on those sockets; `SIGHUP` (or a
 * worker's `restart`) restarts them one slot at a time, each new worker on
 * probation while the old one is paused, and `SIGUSR2` replaces the primary
 * and its workers as above (internal/pool.ts, internal/group.ts).
 *
 * Its whole life is a state machine (internal/machine.ts) that one fiber
 * follows, taking events (signals, calls, the successor's readiness or exit,
 * timers, the drain's end) from a queue; what it asks of the operating system
 * (signals, children, the PID file) goes through one service, which tests
 * replace, and the successor protocol (internal/successor.ts) sits above it.
 *
 * Invariants, as cloudflare/tableflip keeps them:
 * - One restart at a time; none before this process is ready, none while its
 *   own parent is still draining, none once it is draining itself. Every
 *   request and refusal is logged, whoever asked.
 * - A termination wins over whatever is under way: a start-up is cut (what it
 *   built is closed), a restart's successor is killed and reaped, and systemd
 *   hears nothing after `STOPPING=1`.
 * - The old process stops accepting only after the successor is ready, and
 *   the two share one listening socket, so no connection is refused.
 * - A failed restart (spawn failure, early exit, readiness timeout) leaves
 *   this process serving, is reported as a typed `RestartError`, and leaves no
 *   successor behind: it is killed and reaped. A successor that dies within
 *   its probation hands the service back: this process accepts again on the
 *   same sockets, and `restart` fails with `HandedBack`.
 * - Every drain has a deadline (the servers' drain timeout); a second
 *   `SIGTERM`/`SIGINT` during it ends the process at once.
 * - Under systemd (`NOTIFY_SOCKET`): `READY=1` at start, `RELOADING=1` when a
 *   restart begins, `READY=1` once the successor is ready, `MAINPID=<successor>`
 *   once its probation has passed and it is found alive (never a process that
 *   died in its window), and
 *   `STOPPING=1` on termination.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberHandle from "effect/FiberHandle"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { dual } from "effect/Function"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { availableParallelism, constants } from "node:os"
import { resolve } from "node:path"
import * as ListenFds from "./ListenFds.ts"
import * as Listeners from "./Listeners.ts"
import * as Notify from "./Notify.ts"
import * as Variables from "./internal/config.ts"
import * as Drain from "./Drain.ts"
import * as Health from "./Health.ts"
import * as DrainInternal from "./internal/drain.ts"
import * as Report from "./internal/report.ts"
import * as Machine from "./internal/machine.ts"
import * as Os from "./internal/os.ts"
import * as Gate from "./internal/gate.ts"
import * as Program from "./internal/program.ts"
import * as Successor from "./internal/successor.ts"
import * as Tickets from "./internal/tickets.ts"
import * as Group from "./internal/group.ts"
import * as Worker from "./internal/worker.ts"

// -----------------------------------------------------------------------------
// Errors
// -----------------------------------------------------------------------------

/**
 * The successor could not be started at all.
 *
 * @since 0.1.0
 * @category errors
 */
export class SpawnFailed extends Data.TaggedError("SpawnFailed")<{
  readonly cause: unknown
}> {
  override get message(): string {
    return `the successor could not be started: ${String(this.cause)}; this process keeps serving`
  }
}

/**
 * The successor exited before it was ready.
 *
 * @since 0.1.0
 * @category errors
 */
export class ExitedBeforeReady extends Data.TaggedError("ExitedBeforeReady")<{
  readonly pid: number | undefined
  readonly code: number | null
  readonly signal: string | null
}> {
  override get message(): string {
    const how = Os.describeExit(this)
    return `the successor ${how} before it was ready (see its output); this process keeps serving`
  }
}

/**
 * The successor was ready, then exited within its probation window: this
 * process took the service back, on the sockets it kept, and serves on.
 *
 * @since 0.1.0
 * @category errors
 */
export class HandedBack extends Data.TaggedError("HandedBack")<{
  readonly pid: number
  readonly code: number | null
  readonly signal: string | null
}> {
  override get message(): string {
    const how = Os.describeExit(this)
    return `the successor (pid ${this.pid}) ${how} within its probation window; this process took the service back and serves on`
  }
}

/**
 * The successor was not ready within the timeout, and was killed.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotReadyInTime extends Data.TaggedError("NotReadyInTime")<{
  readonly timeout: Duration.Duration
}> {
  override get message(): string {
    return `the successor was not ready within ${Duration.format(this.timeout)} and was killed; this process keeps serving`
  }
}

/**
 * A restart is already under way.
 *
 * @since 0.1.0
 * @category errors
 */
export class AlreadyInProgress extends Data.TaggedError("AlreadyInProgress")<{}> {
  override get message(): string {
    return "a restart is already in progress; wait for it to finish"
  }
}

/**
 * This process is a successor whose parent has not exited yet.
 *
 * @since 0.1.0
 * @category errors
 */
export class ParentStillRunning extends Data.TaggedError("ParentStillRunning")<{
  readonly parentPid: number
}> {
  override get message(): string {
    return `this process is still waiting for its parent (pid ${this.parentPid}) to finish draining; restart again once it has exited`
  }
}

/**
 * This process is not ready yet, or is already shutting down.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotServing extends Data.TaggedError("NotServing")<{
  readonly state: "starting" | "draining"
}> {
  override get message(): string {
    return this.state === "starting"
      ? "this process is still starting; restart once it is ready"
      : "this process is shutting down; it does not restart"
  }
}

/**
 * This process cannot restart in place: handing the listeners to a
 * successor needs native calls that are not available (not Linux, or koffi
 * not installed), or the process is PID 1 (a container's init), whose exit
 * ends its successor too. `detail` says which. Stop and start the program
 * (or replace the container) instead.
 *
 * @since 0.1.0
 * @category errors
 */
export class RestartUnsupported extends Data.TaggedError("RestartUnsupported")<{
  readonly platform: string
  readonly detail: string
}> {
  override get message(): string {
    return `restarting in place is not possible here: ${this.detail}; stop and start the program instead`
  }
}

/**
 * Why a restart did not happen.
 *
 * @since 0.1.0
 * @category errors
 */
export type RestartErrorReason =
  | SpawnFailed
  | ExitedBeforeReady
  | HandedBack
  | NotReadyInTime
  | AlreadyInProgress
  | ParentStillRunning
  | NotServing
  | RestartUnsupported

/**
 * A restart failed or was refused; this process keeps serving. `reason` says why.
 *
 * @since 0.1.0
 * @category errors
 */
export class RestartError extends Data.TaggedError("RestartError")<{
  readonly reason: RestartErrorReason
}> {
  override get message(): string {
    return `restart failed: ${this.reason.message}`
  }
}

/**
 * The supervisor cannot run as the program is composed; `problem` says why,
 * and the message what to write instead.
 *
 * @since 0.1.0
 * @category errors
 */
export class LaunchError extends Data.TaggedError("LaunchError")<{
  readonly problem: "NoRunMain" | "ForeignSignalHandlers" | "TwoSupervisors" | "WorkersUnsupported"
  /** What the platform lacks, for `WorkersUnsupported`. */
  readonly detail?: string | undefined
}> {
  override get message(): string {
    switch (this.problem) {
      case "NoRunMain":
        return (
          "Supervisor.layer ends the program after a hand-off, which only Supervisor.runMain lets it do; " +
          "write Layer.launch(Supervisor.layer(App)).pipe(Supervisor.runMain)"
        )
      case "ForeignSignalHandlers":
        return (
          "another handler of SIGTERM or SIGINT is installed (NodeRuntime.runMain installs one), and it would stop " +
          "the program in the middle of the supervisor's drain; run the program with Supervisor.runMain"
        )
      case "TwoSupervisors":
        return "this program already has a supervisor; run one Supervisor.layer (or run) per program"
      case "WorkersUnsupported":
        return (
          `workers cannot run here: ${this.detail ?? "the native calls are not available"}; the primary passes ` +
          "listening sockets to its workers with them. Unset GRACE_WORKERS (and the workers option) to run one process"
        )
    }
  }
}

/**
 * A worker exited before the group was first ready, so the program does not start: it is broken, and the worker's
 * output says why.
 *
 * @since 0.1.0
 * @category errors
 */
export const WorkerFailed: typeof Group.WorkerFailed = Group.WorkerFailed

/**
 * @since 0.1.0
 * @category errors
 */
export type WorkerFailed = Group.WorkerFailed

/**
 * A full upgrade to fewer workers than the previous primary had: it handed on a socket per worker for each
 * address, and connections the kernel gave the sockets no worker took would wait for ever. The old primary serves
 * on; stop and start the service to run fewer workers.
 *
 * @since 0.1.0
 * @category errors
 */
export const TooFewWorkers: typeof Group.TooFewWorkers = Group.TooFewWorkers

/**
 * @since 0.1.0
 * @category errors
 */
export type TooFewWorkers = Group.TooFewWorkers

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/**
 * How the supervisor restarts and stops.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Signals that start a restart. Default `["SIGUSR2"]`; `["SIGHUP"]` for servers reloaded by HUP. On a primary
   * (with `workers`), `SIGHUP` always restarts the workers one at a time, and these signals (but `SIGHUP`) replace
   * the primary and its workers.
   */
  readonly restartSignals?: ReadonlyArray<NodeJS.Signals> | undefined
  /** How long a successor may take to be ready before it is killed. Default 60 seconds. */
  readonly readyTimeout?: Duration.Input | undefined
  /** A PID file, rewritten atomically by each generation once it is ready (for `kill -USR2 $(cat ...)`, `PIDFile=`). */
  readonly pidFile?: string | undefined
  /**
   * On termination, how long to go on serving, unready, before the drain: every response says
   * `Connection: close` (HTTP/2 gets a GOAWAY) so that clients move to other instances while load balancers and
   * kube-proxy stop sending new connections. Default 0.
   */
  readonly shutdownDelay?: Duration.Input | undefined
  /**
   * Node's compile cache (`module.enableCompileCache`), so that successors start faster: on by default, in Node's
   * default directory, or in the directory given; `false` turns it off. This process flushes the cache once ready,
   * and each successor starts with `NODE_COMPILE_CACHE` set, so it reads what its predecessors compiled. Set
   * `NODE_COMPILE_CACHE` where the program starts (a systemd unit) for the first generation to use it too.
   */
  readonly compileCache?: boolean | string | undefined
  /**
   * How long a successor that is ready stays on probation: this process stops accepting and drains, but keeps its
   * sockets and its application, and takes the service back if the successor exits within the window. Default 5
   * seconds (a deploy that fails on its first real traffic fails within them); 0 hands off at once.
   */
  readonly probation?: Duration.Input | undefined
  /**
   * Workers: this process becomes a primary that runs no application code. It holds the listening sockets and
   * starts this many workers (the same program, each the application in full), which accept on those sockets
   * themselves; `"auto"` is one per core (`os.availableParallelism()`). `SIGHUP` (or `restart` in a worker)
   * restarts them one slot at a time; the restart signal (`SIGUSR2`) replaces the primary and its workers.
   * Unset: one process, as without workers.
   */
  readonly workers?: number | "auto" | undefined
  /** During a rolling restart, how many slots start a new worker at a time. Default 1. */
  readonly surge?: number | undefined
}

/**
 * The defaults of `Options`, read through `Config`: `GRACE_READY_TIMEOUT`
 * and `GRACE_SHUTDOWN_DELAY` (durations such as `30 seconds`),
 * `GRACE_PROBATION`, `GRACE_PID_FILE`, and `GRACE_COMPILE_CACHE` (`off`, or
 * a directory).
 * Values given in `Options` win.
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<{
  readonly readyTimeout: Option.Option<Duration.Duration>
  readonly shutdownDelay: Option.Option<Duration.Duration>
  readonly pidFile: Option.Option<string>
  readonly compileCache: Option.Option<string>
  readonly probation: Option.Option<Duration.Duration>
  readonly workers: Option.Option<number | "auto">
  readonly surge: Option.Option<number>
}> = Config.all({
  readyTimeout: Variables.duration("GRACE_READY_TIMEOUT"),
  shutdownDelay: Variables.duration("GRACE_SHUTDOWN_DELAY"),
  pidFile: Config.option(Config.String("GRACE_PID_FILE")),
  compileCache: Config.option(Config.String("GRACE_COMPILE_CACHE")),
  probation: Variables.duration("GRACE_PROBATION"),
  workers: Variables.workers("GRACE_WORKERS"),
  surge: Variables.count("GRACE_SURGE")
})

// -----------------------------------------------------------------------------
// Service
// -----------------------------------------------------------------------------

/**
 * The supervisor of this process, available to the application's layers (for
 * example, an admin endpoint that restarts on request).
 *
 * @since 0.1.0
 * @category services
 */
export class Supervisor extends Context.Service<
  Supervisor,
  {
    /**
     * Starts a successor and, once it is ready and its probation has passed,
     * hands over: this process then drains and `run` returns. Succeeds with
     * the successor's pid; fails with `HandedBack` if the successor died
     * within its probation (this process serves on). In a primary's worker,
     * asks the primary for a rolling restart of its workers (this one among
     * them) and succeeds at once with the primary's pid; the primary logs and
     * counts how it goes.
     */
    readonly restart: Effect.Effect<number, RestartError>
    /** Starts a graceful termination: the servers drain and `run` returns. */
    readonly terminate: Effect.Effect<void>
    /** The pid of the parent this process took over from, while it is still draining. */
    readonly parentPid: Effect.Effect<Option.Option<number>>
    /** In a primary's worker: its slot (0 to workers - 1) and its primary's pid; none without workers. */
    readonly worker: Option.Option<WorkerInfo>
  }
>()("effect-grace/Supervisor") {}

/**
 * Where a worker stands in its primary's group.
 *
 * @since 0.1.0
 * @category models
 */
export interface WorkerInfo {
  readonly slot: number
  readonly primaryPid: number
}

/**
 * The supervisor's metrics: `effect-grace.restarts`, a counter of restart
 * attempts by `outcome` (`ready`, or the reason's tag: `SpawnFailed`,
 * `AlreadyInProgress`, ...), and `effect-grace.restart.handoff`, the time from
 * spawning a successor to its being ready. Each attempt is also a span,
 * `effect-grace.restart`, with `effect-grace.outcome` and, once spawned,
 * `effect-grace.successor.pid`; the work of a restart that goes ahead (spawn,
 * wait for ready) is the span `effect-grace.restart.successor`. The servers'
 * drains have their own
 * (`effect-grace.drain`, see `Drain`).
 *
 * @since 0.1.0
 * @category observability
 */
export const metrics = {
  restarts: Metric.counter("effect-grace.restarts", { description: "Restart attempts, by outcome", incremental: true }),
  handOff: Metric.timer("effect-grace.restart.handoff", {
    description: "How long a successor took from spawn to ready"
  })
}

// -----------------------------------------------------------------------------
// The runtime
// -----------------------------------------------------------------------------

/** How a programmatic restart is answered. */
type Reply = Deferred.Deferred<number, RestartError>
type Failure =
  | Os.SpawnFailure
  | Successor.EarlyExit
  | { readonly _tag: "NotReadyInTime" }
  | { readonly _tag: "RollStopped"; readonly rolled: Exclude<Group.Rolled, { readonly _tag: "RollDone" }> }
type Event = Machine.Event<Reply, Successor.Successor, Failure>
type State = Machine.State<Reply, Successor.Successor>
type Action = Machine.Action<Reply, Successor.Successor, Failure>

/** How the supervision ended: after a termination or a hand-off, or a start-up that failed; forced or not. */
interface Outcome {
  readonly reason: Machine.Reason | "failed"
  readonly forced: boolean
}

/** The options, with the environment's values where the options say nothing. */
interface Settings {
  readonly readyTimeout: Duration.Duration
  readonly shutdownDelay: Duration.Duration
  readonly pidFile: string | undefined
  readonly restartSignals: ReadonlyArray<NodeJS.Signals>
  /** Off, or on in Node's default directory (`true`) or in a directory. */
  readonly compileCache: boolean | string
  readonly probation: Duration.Duration
  /** How many workers a primary starts; none without workers. */
  readonly workers: number | undefined
  readonly surge: number
  /** This process's slot, if it is a primary's worker. */
  readonly slot: number | undefined
}

// A count given in the options is checked as the environment's is.
const wholeNumber = (name: string, value: number) =>
  Number.isInteger(value) && value >= 1
    ? Effect.void
    : Effect.fail(
        new Config.ConfigError(
          new ConfigProvider.SourceError({ message: `${name}: ${value} is not a whole number of at least 1` })
        )
      )

const settingsOf = (options: Options): Effect.Effect<Settings, Config.ConfigError> =>
  Effect.gen(function* () {
    const configured = yield* config
    const slot = Option.getOrUndefined(yield* Config.option(Config.Int(Worker.WORKER_VARIABLE)))
    // The primary writes the PID file; a worker never does.
    const pidFile = slot !== undefined ? undefined : (options.pidFile ?? Option.getOrUndefined(configured.pidFile))
    const workers = options.workers ?? Option.getOrUndefined(configured.workers)
    if (workers !== undefined && workers !== "auto") yield* wholeNumber("workers", workers)
    if (options.surge !== undefined) yield* wholeNumber("surge", options.surge)
    return {
      workers: workers === "auto" ? availableParallelism() : workers,
      surge: options.surge ?? Option.getOrElse(configured.surge, () => 1),
      slot,
      readyTimeout: Duration.fromInputUnsafe(
        options.readyTimeout ?? Option.getOrElse(configured.readyTimeout, () => Duration.seconds(60))
      ),
      shutdownDelay: Duration.fromInputUnsafe(
        options.shutdownDelay ?? Option.getOrElse(configured.shutdownDelay, () => Duration.zero)
      ),
      pidFile: pidFile === undefined ? undefined : resolve(pidFile),
      restartSignals: options.restartSignals ?? ["SIGUSR2"],
      probation: Duration.fromInputUnsafe(
        options.probation ?? Option.getOrElse(configured.probation, () => Duration.seconds(5))
      ),
      compileCache:
        options.compileCache ??
        Option.match(configured.compileCache, {
          onNone: () => true,
          onSome: (value) => (["off", "false", "0"].includes(value.trim()) ? false : value.trim())
        })
    }
  })

/** What the supervisor holds for the life of the process. */
interface Resources {
  readonly os: Os.Os
  readonly signals: Stream.Stream<NodeJS.Signals>
  readonly parent: Successor.ParentLink | undefined
  readonly listeners: Listeners.Listeners["Service"]
  readonly notify: Notify.Notify["Service"]
  /** The TLS session ticket key of this lineage, handed down and rotated. */
  readonly keyring: Tickets.Keyring
  /** Why listeners cannot be handed on here, if they cannot. */
  readonly handOffBlocked: RestartUnsupported | undefined
  /** The compile cache's directory, for successors, if it is on. */
  readonly compileCache: string | undefined
  readonly role: Role
}

/**
 * One process serving alone; a primary, which runs workers and no application; or a primary's worker, which runs the
 * application, on the primary's sockets.
 */
type Role =
  | { readonly _tag: "Single" }
  | { readonly _tag: "Primary"; readonly workers: number }
  | { readonly _tag: "Worker"; readonly link: Worker.PrimaryLink }

const TERMINATION_SIGNALS: ReadonlyArray<NodeJS.Signals> = ["SIGTERM", "SIGINT"]

/** The signal that restarts a primary's workers, one slot at a time. */
const ROLL_SIGNAL: NodeJS.Signals = "SIGHUP"

// A worker hears only its primary (it is in a process group of its own): termination, never a restart signal.
const signalsOf = (settings: Settings): ReadonlyArray<NodeJS.Signals> => {
  if (settings.slot !== undefined) return TERMINATION_SIGNALS
  const restart = settings.workers === undefined ? settings.restartSignals : [...settings.restartSignals, ROLL_SIGNAL]
  return [...new Set([...restart, ...TERMINATION_SIGNALS])]
}

// Why listeners cannot be handed on here, if they cannot: one answer for the machine and for the refusal.
const handOffBlocked = (os: Os.Os): RestartUnsupported | undefined => {
  const native = os.native()
  if (!native.available) return new RestartUnsupported({ platform: native.platform, detail: native.reason })
  // As PID 1 (a container's init), exiting ends the PID namespace, successor and all.
  if (os.pid !== 1) return undefined
  return new RestartUnsupported({
    platform: process.platform,
    detail:
      "this process is PID 1 (a container's init), and when it exits the kernel ends every process of its " +
      "PID namespace, the successor too; replace the container instead (a rolling update)"
  })
}

/** Signals first, so that none takes its default action (SIGUSR2 would kill the process) and none is lost. */
// A worker's primary binds what the worker was not given; its parent is its primary, not a predecessor.
const roleOf = (settings: Settings, os: Os.Os, parent: Os.Parent | undefined) =>
  Effect.gen(function* () {
    if (settings.slot !== undefined && parent !== undefined) {
      return { _tag: "Worker", link: yield* Worker.connect(parent, settings.slot) } satisfies Role
    }
    if (settings.workers === undefined) return { _tag: "Single" } satisfies Role
    const native = os.native()
    if (!native.available) return yield* new LaunchError({ problem: "WorkersUnsupported", detail: native.reason })
    return { _tag: "Primary", workers: settings.workers } satisfies Role
  })

const acquire = (settings: Settings) =>
  Effect.gen(function* () {
    const os = yield* Os.Os
    const signals = yield* os.signals(signalsOf(settings))
    yield* os.reapOrphans
    const { parent, values } = yield* os.parent([Successor.TICKET_KEYS_VARIABLE, Worker.WORKER_VARIABLE])
    const role = yield* roleOf(settings, os, parent)
    const link = parent === undefined || role._tag === "Worker" ? undefined : yield* Successor.connect(parent, values)
    const remote = role._tag === "Worker" ? role.link.listen : undefined
    // A primary binds a socket per worker for each address (a SO_REUSEPORT group): see internal/group.ts.
    const listeners = yield* Listeners.make(yield* ListenFds.make(), { remote, reusePort: role._tag === "Primary" })
    // A Notify given by the caller (a test's) wins over the one NOTIFY_SOCKET names.
    const given = yield* Effect.serviceOption(Notify.Notify)
    const notify = Option.isSome(given) ? given.value : yield* Notify.make
    // TLS sessions resume across restarts: the parent's key, with its age; a key that is not one is ignored.
    const inherited = yield* (role._tag === "Worker" ? role.link : link)?.ticketKey ?? Effect.succeed(undefined)
    const keyring = yield* Tickets.makeKeyring({
      initial: inherited === undefined ? undefined : Tickets.decode(inherited),
      rotateEvery: yield* Tickets.ticketRotation
    })
    const compileCache = settings.compileCache === false ? undefined : os.enableCompileCache(settings.compileCache)
    return {
      os,
      signals,
      parent: link,
      listeners,
      notify,
      keyring,
      handOffBlocked: handOffBlocked(os),
      compileCache,
      role
    }
  })

/** Everything the interpreter of the machine's actions works with. */
interface Runtime {
  readonly settings: Settings
  readonly resources: Resources
  readonly events: Queue.Queue<Event, Cause.Done>
  /** The machine's state as its owner last left it: read, never written, by others. */
  readonly state: Ref.Ref<State>
  readonly health: ReturnType<typeof Health.make>
  /** The servers, paused and resumed during a successor's probation. */
  readonly gate: ReturnType<typeof Gate.make>
  /** The application's scope: closing it is the drain. */
  readonly appScope: Scope.Closeable
  readonly startup: FiberHandle.FiberHandle
  readonly restarting: FiberHandle.FiberHandle
  readonly delaying: FiberHandle.FiberHandle
  readonly draining: FiberHandle.FiberHandle
  /** The probation's timer, and the watch on the successor during it. */
  readonly probation: FiberHandle.FiberHandle
  readonly watching: FiberHandle.FiberHandle
  /** The servers' pauses: each ends once its server has drained what it had. */
  readonly pauses: FiberSet.FiberSet
  /** The shutdown delay has begun: the servers answer `Connection: close`. */
  readonly closing: Deferred.Deferred<void>
  /** A second termination signal: every drain (and the shutdown delay) ends now. */
  readonly forced: Deferred.Deferred<void>
  /** The application has been ready: its servers' drains are worth reporting. */
  readonly served: Deferred.Deferred<void>
  /** The application is ready (or its start-up was cut by a termination), or failed to start. */
  readonly started: Deferred.Deferred<void, unknown>
  readonly stopped: Deferred.Deferred<Outcome>
  /** Restarts asked for by a signal or a worker, each answered to no one: owned by the supervisor's scope. */
  readonly requests: FiberSet.FiberSet<number, RestartError>
  /** A primary's workers, once they have started. */
  readonly group: Deferred.Deferred<Group.Group>
}

const makeRuntime = (settings: Settings, resources: Resources) =>
  Effect.gen(function* () {
    const runtime: Runtime = {
      settings,
      resources,
      events: yield* Queue.unbounded<Event, Cause.Done>(),
      state: yield* Ref.make(Machine.initial<Reply, Successor.Successor>(resources.parent?.pid)),
      gate: Gate.make(),
      health: Health.make("starting"),
      appScope: yield* Scope.fork(yield* Effect.scope, "sequential"),
      startup: yield* FiberHandle.make(),
      restarting: yield* FiberHandle.make(),
      delaying: yield* FiberHandle.make(),
      draining: yield* FiberHandle.make(),
      probation: yield* FiberHandle.make(),
      watching: yield* FiberHandle.make(),
      pauses: yield* FiberSet.make(),
      closing: yield* Deferred.make<void>(),
      forced: yield* Deferred.make<void>(),
      served: yield* Deferred.make<void>(),
      started: yield* Deferred.make<void, unknown>(),
      stopped: yield* Deferred.make<Outcome>(),
      group: yield* Deferred.make<Group.Group>(),
      requests: yield* FiberSet.make<number, RestartError>()
    }
    // Once the owner has gone, no event is taken: a restart still asked for is refused, and later ones too.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        yield* Queue.end(runtime.events)
        for (const event of yield* Queue.collect(runtime.events)) {
          if (event._tag === "RestartRequested" && event.reply !== undefined) {
            yield* Deferred.fail(event.reply, new RestartError({ reason: new NotServing({ state: "draining" }) }))
          }
        }
      })
    )
    return runtime
  })

const send = (runtime: Runtime, event: Event) => Queue.offer(runtime.events, event)

// Every line says which process wrote it: its pid, and a worker's slot.
const whose = (runtime: Runtime): Record<string, unknown> => {
  const { os, role } = runtime.resources
  return role._tag === "Worker" ? { pid: os.pid, slot: role.link.slot } : { pid: os.pid }
}

const logged = (runtime: Runtime, message: string, annotations: Readonly<Record<string, unknown>> = {}) =>
  Effect.logInfo(message).pipe(Effect.annotateLogs({ ...whose(runtime), ...annotations }))

// What a successor is given: every listener; a primary's, every socket its workers accept on.
const passedOn = (runtime: Runtime) =>
  Effect.gen(function* () {
    if (runtime.resources.role._tag === "Primary") return yield* (yield* Deferred.await(runtime.group)).held
    const active = yield* runtime.resources.listeners.active
    return active.flatMap((l) => (l.fd === undefined ? [] : [{ fd: l.fd, name: l.name }]))
  })

// A successor or a worker reads what this lineage compiled.
const cacheEnv = (runtime: Runtime): Record<string, string> => {
  const directory = runtime.resources.compileCache
  return directory === undefined ? {} : { NODE_COMPILE_CACHE: directory }
}

// The restart: spawn, wait for ready (an Effect timer: a TestClock drives it), tell the machine. The successor is
// the machine's once it is ready and told; one that fails, times out or is interrupted before that is killed here.
const restartWork = (runtime: Runtime) =>
  Effect.gen(function* () {
    const { os, keyring } = runtime.resources
    const passed = yield* passedOn(runtime)
    yield* logged(runtime, "effect-grace: restart started", { listeners: passed.length })
    const spawned = yield* Clock.currentTimeMillis
    const outcome = yield* Effect.acquireUseRelease(
      Successor.start(os, {
        passed,
        ticketKey: Tickets.encode(yield* keyring.current),
        env: cacheEnv(runtime)
      }).pipe(Effect.catchDefect((cause) => Effect.fail<Os.SpawnFailure>({ _tag: "SpawnFailed", cause }))),
      (successor) =>
        successor.ready.pipe(
          Effect.timeoutOrElse({
            duration: runtime.settings.readyTimeout,
            orElse: () => Effect.fail({ _tag: "NotReadyInTime" } as const)
          }),
          Effect.andThen(Clock.currentTimeMillis),
          Effect.flatMap((now) => Metric.update(metrics.handOff, Duration.millis(now - spawned))),
          Effect.andThen(send(runtime, { _tag: "SuccessorReady", successor, pid: successor.pid }))
        ),
      (successor, exit) => (Exit.isSuccess(exit) ? Effect.void : successor.kill)
    ).pipe(Effect.result)
    if (outcome._tag === "Failure") yield* send(runtime, { _tag: "RestartFailed", failure: outcome.failure })
  }).pipe(Effect.withSpan("effect-grace.restart.successor"))

const refusalReason = (runtime: Runtime, refusal: Machine.Refusal): RestartErrorReason => {
  switch (refusal._tag) {
    case "AlreadyInProgress":
      return new AlreadyInProgress()
    case "NotServing":
      return new NotServing({ state: refusal.state })
    case "ParentStillRunning":
      return new ParentStillRunning({ parentPid: refusal.parentPid })
    case "RestartUnsupported":
      return (
        runtime.resources.handOffBlocked ?? new RestartUnsupported({ platform: process.platform, detail: "unknown" })
      )
  }
}

const failureReason = (runtime: Runtime, failure: Failure): RestartErrorReason => {
  switch (failure._tag) {
    case "SpawnFailed":
      return new SpawnFailed({ cause: failure.cause })
    case "ExitedBeforeReady":
      return new ExitedBeforeReady({ pid: failure.pid, code: failure.code, signal: failure.signal })
    case "NotReadyInTime":
      return new NotReadyInTime({ timeout: runtime.settings.readyTimeout })
    case "RollStopped": {
      const { pid, code, signal } = failure.rolled
      return failure.rolled._tag === "HandedBack"
        ? new HandedBack({ pid: pid ?? 0, code, signal })
        : new ExitedBeforeReady({ pid, code, signal })
    }
  }
}

// Every refusal and failure is logged, whoever asked; a caller is answered.
const refuse = (runtime: Runtime, reply: Reply | undefined, reason: RestartErrorReason) => {
  const error = new RestartError({ reason })
  return Effect.andThen(
    Effect.logWarning(`effect-grace: ${error.message}`).pipe(
      Effect.annotateLogs({ pid: runtime.resources.os.pid, reason: reason._tag })
    ),
    reply === undefined ? Effect.void : Deferred.fail(reply, error)
  )
}

// Ready means every server listens: only then are unclaimed inherited fds closed, the PID file written, and the
// parent (after a restart) or systemd told.
const announceReady = (runtime: Runtime) =>
  Effect.gen(function* () {
    const { os, listeners, parent, notify, role } = runtime.resources
    // A primary holds every inherited fd for its workers, which claim them.
    if (role._tag !== "Primary") yield* listeners.closeUnclaimed
    // What this process compiled, for its successors to read. Writing it blocks for tens of milliseconds: before
    // the parent is told, while it still accepts (measured: 72-140 ms from ready to the first answer when after).
    if (runtime.resources.compileCache !== undefined) os.flushCompileCache()
    if (runtime.settings.pidFile !== undefined) yield* os.writePidFile(runtime.settings.pidFile)
    const told = role._tag === "Worker" ? role.link.signalReady : parent?.signalReady
    yield* told ?? Effect.ignore(notify.ready)
    // A worker is ready once its primary says the group serves.
    if (role._tag !== "Worker") runtime.health.setPhase("serving")
    yield* Deferred.succeed(runtime.served, undefined)
    // A primary's listeners are also those it inherited for its workers.
    const held = role._tag === "Primary" ? yield* listeners.unclaimed : []
    const addresses = [...(yield* listeners.active), ...held].map((l) => Listeners.formatAddress(l.address))
    // A primary holds a socket per worker of each address: each address is said once.
    yield* logged(runtime, "effect-grace: ready", { listeners: [...new Set(addresses)].join(", ") })
    yield* Deferred.succeed(runtime.started, undefined)
  })

// Every slot has a new worker: systemd hears that the reload is over, the caller that the primary serves on.
const rolled = (runtime: Runtime, action: Extract<Action, { readonly _tag: "RollDone" }>) =>
  Effect.gen(function* () {
    yield* Effect.ignore(runtime.resources.notify.ready)
    yield* logged(runtime, "effect-grace: workers restarted", { workers: runtime.settings.workers })
    if (action.reply !== undefined) yield* Deferred.succeed(action.reply, action.pid)
  })

// The successor replaces this process: at once, or once its probation has passed (READY=1 was said then).
const handOff = (runtime: Runtime, action: Extract<Action, { readonly _tag: "HandOff" }>) =>
  Effect.gen(function* () {
    // From here on the successor serves too: this process must not unlink what it hands on.
    yield* runtime.resources.listeners.handOff
    yield* Effect.ignore(runtime.resources.notify.mainPid(action.pid, { ready: action.ready }))
    const message = action.ready ? "effect-grace: successor ready" : "effect-grace: probation over"
    yield* logged(runtime, message, { successor: action.pid })
    if (action.reply !== undefined) yield* Deferred.succeed(action.reply, action.pid)
  })

// The successor serves too; systemd hears that the reload is over, but its main process stays this one for now. The
// listeners are this process's still (a unix path is unlinked if it ends with its successor, in a termination).
const beginProbation = (runtime: Runtime, pid: number) =>
  Effect.gen(function* () {
    yield* Effect.ignore(runtime.resources.notify.ready)
    const probation = runtime.settings.probation
    yield* logged(runtime, "effect-grace: successor ready", {
      successor: pid,
      probationMillis: Duration.toMillis(probation)
    })
    yield* FiberHandle.run(
      runtime.probation,
      Effect.andThen(Effect.sleep(probation), send(runtime, { _tag: "ProbationOver" }))
    )
  })

const watchSuccessor = (runtime: Runtime, successor: Successor.Successor) =>
  FiberHandle.run(
    runtime.watching,
    Effect.flatMap(successor.exited, ({ code, signal }) =>
      send(runtime, { _tag: "SuccessorExited", pid: successor.pid, code, signal })
    )
  )

// The successor died within its window: accept again at once (what arrived meanwhile waits in the shared backlog),
// and name this process again wherever the successor was named.
const handBack = (runtime: Runtime, action: Extract<Action, { readonly _tag: "HandBack" }>) =>
  Effect.gen(function* () {
    yield* FiberHandle.clear(runtime.probation)
    yield* runtime.gate.resume
    runtime.health.setPhase("serving")
    const { os, notify } = runtime.resources
    if (runtime.settings.pidFile !== undefined) yield* os.writePidFile(runtime.settings.pidFile)
    const reason = new HandedBack({ pid: action.pid, code: action.code, signal: action.signal })
    yield* Effect.ignore(notify.status(`serving again: ${reason.message}`))
    yield* refuse(runtime, action.reply, reason)
  })

// Unready already; the servers go on serving for the delay, every response saying Connection: close.
const beginDelay = (runtime: Runtime) => {
  const delay = runtime.settings.shutdownDelay
  const over = Effect.andThen(
    Effect.raceFirst(Effect.sleep(delay), Deferred.await(runtime.forced)),
    send(runtime, { _tag: "DelayOver" })
  )
  return Effect.all([
    Deferred.succeed(runtime.closing, undefined),
    logged(runtime, "effect-grace: shutdown delay", { millis: Duration.toMillis(delay) }),
    FiberHandle.run(runtime.delaying, over)
  ])
}

// The servers drain as the finalizers of the application's scope.
const beginDrain = (runtime: Runtime, reason: Machine.Reason) => {
  const drain = Effect.gen(function* () {
    yield* logged(runtime, "effect-grace: draining", { reason })
    const started = yield* Clock.currentTimeMillis
    yield* Scope.close(runtime.appScope, Exit.void)
    yield* send(runtime, { _tag: "Drained", millis: (yield* Clock.currentTimeMillis) - started })
  })
  return FiberHandle.run(runtime.draining, drain)
}

const forceExit = (runtime: Runtime, signal: string) =>
  Effect.logWarning("effect-grace: a second termination signal; exiting at once").pipe(
    Effect.annotateLogs({ pid: runtime.resources.os.pid, signal }),
    // Where the runtime allows, the process ends here; elsewhere every drain is cut, and the program finishes.
    Effect.andThen(runtime.resources.os.forceExit(signal)),
    Effect.andThen(Deferred.succeed(runtime.forced, undefined))
  )

const finish = (runtime: Runtime, action: Extract<Action, { readonly _tag: "Finish" }>) =>
  Effect.gen(function* () {
    const { reason, forced, millis } = action
    const pidFile = runtime.settings.pidFile
    if (reason === "terminate" && pidFile !== undefined) yield* runtime.resources.os.removePidFile(pidFile)
    if (reason !== "failed") yield* logged(runtime, "effect-grace: stopped", { reason, drainMillis: millis })
    // A start-up cut by a termination is over too: whoever waits for it goes on to the end. A failed one says so.
    if (reason !== "failed") yield* Deferred.succeed(runtime.started, undefined)
    yield* Deferred.succeed(runtime.stopped, { reason, forced })
  })

/** Carries out one action of the machine, in the supervisor's own context. */
const perform =
  (runtime: Runtime) =>
  (action: Action): Effect.Effect<void> => {
    const { notify } = runtime.resources
    switch (action._tag) {
      case "Log":
        return logged(runtime, action.message, action.annotations)
      case "AnnounceReady":
        return announceReady(runtime)
      case "Refuse":
        return refuse(runtime, action.reply, refusalReason(runtime, action.refusal))
      case "NotifyReloading":
        return Effect.ignore(notify.reloading)
      case "StartRestart":
        return Effect.asVoid(FiberHandle.run(runtime.restarting, restartWork(runtime)))
      case "InterruptRestart":
        return FiberHandle.clear(runtime.restarting)
      case "StartRoll":
        return Effect.flatMap(Deferred.await(runtime.group), (group) => group.roll)
      case "RollDone":
        return rolled(runtime, action)
      case "ResumeServing":
        return Effect.andThen(
          runtime.gate.resume,
          Effect.sync(() => runtime.health.setPhase("serving"))
        )
      case "ReleaseSuccessor":
        return Effect.andThen(FiberHandle.clear(runtime.watching), action.successor.release)
      case "KillSuccessor":
        return action.successor.kill
      case "HandOff":
        return handOff(runtime, action)
      case "BeginProbation":
        return beginProbation(runtime, action.pid)
      case "WatchSuccessor":
        return Effect.asVoid(watchSuccessor(runtime, action.successor))
      case "PauseServing":
        return Effect.asVoid(FiberSet.run(runtime.pauses, runtime.gate.pause))
      case "HandBack":
        return handBack(runtime, action)
      case "ConfirmSuccessor":
        return Effect.suspend(() =>
          action.successor.alive() ? send(runtime, { _tag: "SuccessorAlive" }) : Effect.void
        )
      case "TerminateSuccessor":
        // It ends by itself, gracefully; this process does not wait for it.
        return Effect.all([FiberHandle.clear(runtime.watching), action.successor.terminate, action.successor.release])
      case "RestartFailed":
        return Effect.andThen(
          Effect.ignore(notify.ready),
          refuse(runtime, action.reply, failureReason(runtime, action.failure))
        )
      case "NotifyStopping":
        return Effect.ignore(notify.stopping)
      case "Unready":
        return Effect.sync(() => runtime.health.setPhase(action.why))
      case "InterruptStartup":
        return FiberHandle.clear(runtime.startup)
      case "BeginDelay":
        return Effect.asVoid(beginDelay(runtime))
      case "BeginDrain":
        return Effect.asVoid(beginDrain(runtime, action.reason))
      case "ForceExit":
        return forceExit(runtime, action.signal)
      case "CloseApplication":
        return Scope.close(runtime.appScope, Exit.void)
      case "Finish":
        return finish(runtime, action)
    }
  }

// An action that fails (a PID file that cannot be written, ...) is logged: the owner of the state goes on.
const performSafely = (runtime: Runtime, action: Action): Effect.Effect<void> =>
  perform(runtime)(action).pipe(
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.failCause(cause)
        : Effect.logError(`effect-grace: ${action._tag} failed`, cause).pipe(
            Effect.annotateLogs({ pid: runtime.resources.os.pid })
          )
    )
  )

/** The one owner of the state: takes each event, follows the machine, carries out its actions in order. */
const follow = (runtime: Runtime): Effect.Effect<void> => {
  const rules: Machine.Rules = {
    canRoll: runtime.resources.role._tag === "Primary",
    canHandOff: runtime.resources.handOffBlocked === undefined && runtime.resources.role._tag !== "Worker",
    // A primary's workers keep the delay themselves (unready, `Connection: close`): its own would come twice.
    shutdownDelay:
      runtime.resources.role._tag !== "Primary" &&
      Duration.isGreaterThan(runtime.settings.shutdownDelay, Duration.zero),
    probation: Duration.isGreaterThan(runtime.settings.probation, Duration.zero)
  }
  const step = (event: Event) =>
    Effect.gen(function* () {
      const [next, actions] = Machine.transition(yield* Ref.get(runtime.state), event, rules)
      yield* Ref.set(runtime.state, next)
      yield* Effect.forEach(actions, (action) => performSafely(runtime, action), { discard: true })
    })
  // Until the events end, when the supervisor's scope closes.
  return Effect.forever(Effect.flatMap(Queue.take(runtime.events), step)).pipe(Effect.catch(() => Effect.void))
}

// -----------------------------------------------------------------------------
// The service, the events from outside, the application
// -----------------------------------------------------------------------------

// The channel's close tells that the parent has gone, but a restart asked for at the same moment may be seen first:
// the kernel says so at once, by adopting this process.
const noticeParentExit = (runtime: Runtime) => {
  const { os, parent } = runtime.resources
  return parent !== undefined && os.ppid() !== parent.pid ? send(runtime, { _tag: "ParentExited" }) : Effect.void
}

/** A restart asked for by `signal` or a call: one span and one count per attempt, whatever its outcome. */
const requestRestart = (
  runtime: Runtime,
  signal: string | undefined,
  kind: Machine.Kind
): Effect.Effect<number, RestartError> =>
  Effect.gen(function* () {
    const reply = yield* Deferred.make<number, RestartError>()
    yield* noticeParentExit(runtime)
    if (!(yield* send(runtime, { _tag: "RestartRequested", reply, signal, kind }))) {
      return yield* new RestartError({ reason: new NotServing({ state: "draining" }) })
    }
    return yield* Deferred.await(reply)
  }).pipe(
    Effect.onExit((exit) => {
      const outcome = Exit.isSuccess(exit)
        ? "ready"
        : Option.match(Cause.findErrorOption(exit.cause), { onNone: () => "interrupted", onSome: (e) => e.reason._tag })
      return Effect.all([
        Effect.annotateCurrentSpan("effect-grace.outcome", outcome),
        Exit.isSuccess(exit) ? Effect.annotateCurrentSpan("effect-grace.successor.pid", exit.value) : Effect.void,
        Metric.update(Metric.withAttributes(metrics.restarts, { outcome }), 1)
      ])
    }),
    Effect.withSpan("effect-grace.restart", { attributes: { "effect-grace.pid": runtime.resources.os.pid, kind } })
  )

/** A restart asked for by a signal or a worker: logged and counted, answered to no one. */
const requestInBackground = (runtime: Runtime, by: string, kind: Machine.Kind) =>
  Effect.asVoid(FiberSet.run(runtime.requests, requestRestart(runtime, by, kind)))

const serviceOf = (runtime: Runtime): Supervisor["Service"] => {
  const { role } = runtime.resources
  return Supervisor.of({
    // A worker's restart is its primary's rolling restart, which this worker may itself not outlive: the call is
    // answered once it is asked, with the primary's pid; the primary logs and counts how it goes.
    restart:
      role._tag === "Worker" ? Effect.as(role.link.roll, role.link.pid) : requestRestart(runtime, undefined, "upgrade"),
    terminate: send(runtime, { _tag: "Terminate", source: "call", signal: undefined }),
    parentPid: Effect.map(Ref.get(runtime.state), (state) => Option.fromUndefinedOr(state.parentPid)),
    worker: role._tag === "Worker" ? Option.some({ slot: role.link.slot, primaryPid: role.link.pid }) : Option.none()
  })
}

// A worker hears its primary: pause, resume, the group serving, and its going (this worker then drains and exits).
const listenToPrimary = (runtime: Runtime, link: Worker.PrimaryLink) =>
  Effect.gen(function* () {
    const command = (line: Worker.Command): Effect.Effect<void> => {
      switch (line) {
        case "serving":
          return Effect.flatMap(Ref.get(runtime.state), (state) =>
            Effect.sync(() => {
              if (state.phase._tag === "Serving") runtime.health.setPhase("serving")
            })
          )
        case "terminate":
          return Effect.asVoid(send(runtime, { _tag: "Terminate", source: "primary", signal: undefined }))
        case "pause":
        case "resume":
          return Effect.asVoid(send(runtime, { _tag: line === "pause" ? "Pause" : "Resume" }))
      }
    }
    yield* Effect.forkScoped(
      Effect.forever(Effect.flatMap(Queue.take(link.commands), command)).pipe(Effect.catch(() => Effect.void))
    )
    yield* Effect.forkScoped(
      Effect.andThen(link.exited, send(runtime, { _tag: "Terminate", source: "primary", signal: undefined }))
    )
  })

/** Signals and the parent's exit, as events; restarts asked by a signal run in a set owned by the scope. */
const listen = (runtime: Runtime) =>
  Effect.gen(function* () {
    const { signals, parent, role } = runtime.resources
    yield* Effect.forkScoped(
      Stream.runForEach(signals, (signal) => {
        if (signal === ROLL_SIGNAL && role._tag === "Primary") return requestInBackground(runtime, signal, "roll")
        return runtime.settings.restartSignals.includes(signal)
          ? requestInBackground(runtime, signal, "upgrade")
          : send(runtime, { _tag: "Terminate", source: "signal", signal })
      })
    )
    if (parent !== undefined)
      yield* Effect.forkScoped(Effect.andThen(parent.exited, send(runtime, { _tag: "ParentExited" })))
    if (role._tag === "Worker") yield* listenToPrimary(runtime, role.link)
  })

type Provided = Listeners.Listeners | Supervisor | Health.Health

// In a worker, every line, span and metric of the application says which worker: its slot (and, in logs, its pid).
const asWorker =
  (runtime: Runtime) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
    const role = runtime.resources.role
    if (role._tag !== "Worker") return effect
    const slot = { "effect-grace.slot": String(role.link.slot) }
    return Effect.gen(function* () {
      const attributes = yield* Metric.CurrentMetricAttributes
      return yield* effect.pipe(
        Effect.annotateLogs(whose(runtime)),
        Effect.annotateSpans(slot),
        Effect.provideService(Metric.CurrentMetricAttributes, { ...attributes, ...slot })
      )
    })
  }

/** Builds the application in its own scope, on a fiber the machine can interrupt; tells the machine how it went. */
const startApplication = <A, E, R>(runtime: Runtime, app: Layer.Layer<A, E, R>) => {
  const { listeners, keyring } = runtime.resources
  const provided = app.pipe(
    Layer.provide(Layer.succeed(Listeners.Listeners)(listeners)),
    Layer.provide(Layer.succeed(Supervisor)(serviceOf(runtime))),
    Layer.provide(Layer.succeed(Tickets.TicketKeyring)(keyring)),
    Layer.provide(Layer.succeed(Health.Health)(runtime.health.health)),
    Layer.provide(Layer.succeed(DrainInternal.Closing)(Deferred.await(runtime.closing))),
    Layer.provide(Layer.succeed(DrainInternal.Forced)(Deferred.await(runtime.forced))),
    Layer.provide(Layer.succeed(Gate.Gate)(runtime.gate.gate)),
    // A start-up that fails or is cut closes the servers built so far: they served nothing, and report nothing.
    Layer.provide(Layer.succeed(DrainInternal.Started)(Deferred.isDone(runtime.served))),
    // GRACE_DRAIN_TIMEOUT and GRACE_IDLE_GRACE, for every server of the application.
    Layer.provide(Drain.layerConfig)
  ) as Layer.Layer<A, E | Config.ConfigError, Exclude<R, Provided>>
  const build = Layer.buildWithScope(provided, runtime.appScope).pipe(
    asWorker(runtime),
    Effect.matchCauseEffect({
      onSuccess: () => send(runtime, { _tag: "Started" }),
      // The machine hears of it first: whatever the failure makes happen next (the scope closing) comes after.
      onFailure: (cause) =>
        Effect.andThen(send(runtime, { _tag: "StartupFailed" }), Deferred.failCause(runtime.started, cause))
    })
  )
  return FiberHandle.run(runtime.startup, build)
}

// What a worker's environment must not carry: systemd's socket and the PID file are the primary's, and a worker
// is told its role by its slot.
const workerEnv = (runtime: Runtime): Record<string, string | undefined> => ({
  NOTIFY_SOCKET: undefined,
  GRACE_PID_FILE: undefined,
  GRACE_WORKERS: undefined,
  ...cacheEnv(runtime)
})

/**
 * A primary's application: its workers. Built once every worker is ready; its scope's closing stops them. It
 * pauses and resumes with the servers of a process (the primary's own probation, after a full upgrade).
 */
const groupOf = (runtime: Runtime, workers: number) =>
  Layer.effectDiscard(
    Effect.gen(function* () {
      const { os, listeners, keyring } = runtime.resources
      const { surge, probation, readyTimeout } = runtime.settings
      const group = yield* Group.make({
        os,
        listeners,
        keyring,
        env: workerEnv(runtime),
        settings: { workers, surge, probation, readyTimeout },
        rolled: (outcome) =>
          Effect.asVoid(
            send(
              runtime,
              outcome._tag === "RollDone"
                ? { _tag: "RollDone", pid: os.pid }
                : { _tag: "RollStopped", failure: { _tag: "RollStopped", rolled: outcome } }
            )
          ),
        requestRoll: requestInBackground(runtime, "worker", "roll"),
        forced: Deferred.await(runtime.forced),
        log: (message, annotations) => logged(runtime, message, annotations)
      })
      yield* (yield* Gate.Gate).register({ pause: group.pause, resume: group.resume })
      yield* Deferred.succeed(runtime.group, group)
    })
  )

/**
 * Supervises `app` in the current scope: takes the process's resources, starts the machine's owner, builds `app`,
 * and answers when it has started and when the supervision is over. Closing the scope terminates (interrupting a
 * start-up or a restart under way) and drains.
 */
const supervise = <A, E, R>(app: Layer.Layer<A, E, R>, options: Options) =>
  Effect.gen(function* () {
    const settings = yield* settingsOf(options)
    const resources = yield* acquire(settings)
    const runtime = yield* makeRuntime(settings, resources)
    // A worker's drains (the application scope's finalizers, run by this fiber's children) say its slot too.
    yield* Effect.forkScoped(asWorker(runtime)(follow(runtime)))
    yield* listen(runtime)
    // Runs before the owner is interrupted (finalizers run last-added first): the scope closing is a termination.
    yield* Effect.addFinalizer(() =>
      Effect.andThen(
        send(runtime, { _tag: "Terminate", source: "scope", signal: undefined }),
        Deferred.await(runtime.stopped)
      )
    )
    const role = resources.role
    yield* role._tag === "Primary"
      ? startApplication(runtime, groupOf(runtime, role.workers))
      : startApplication(runtime, app)
    const started = Deferred.await(runtime.started) as Effect.Effect<void, E | Config.ConfigError>
    return { started, stopped: Deferred.await(runtime.stopped) }
  })

// -----------------------------------------------------------------------------
// Running
// -----------------------------------------------------------------------------

type Errors<E> =
  E | ListenFds.ListenFdsError | Notify.NotifyError | Config.ConfigError | LaunchError | WorkerFailed | TooFewWorkers

// How the program runs the supervisor: under Supervisor.runMain (which it ends) or on its own. Another handler of the
// termination signals would race the supervisor's drain (NodeRuntime.runMain's interrupts the program, exit 130).
const claimProgram = (as: "layer" | "run") =>
  Effect.gen(function* () {
    const program = yield* Program.Program
    if (program === undefined) {
      if (as === "layer") return yield* new LaunchError({ problem: "NoRunMain" })
      const os = yield* Os.Os
      if ((yield* os.foreignHandlers(TERMINATION_SIGNALS)) > 0) {
        return yield* new LaunchError({ problem: "ForeignSignalHandlers" })
      }
      return undefined
    }
    if (!program.claimSignals()) return yield* new LaunchError({ problem: "TwoSupervisors" })
    yield* Effect.addFinalizer(() => Effect.sync(() => program.releaseSignals()))
    return program
  })

/**
 * The application `app` under the supervisor, as the layer a program
 * launches, with `Supervisor.runMain`:
 *
 * ```ts
 * Layer.launch(Supervisor.layer(App)).pipe(Supervisor.runMain)
 * ```
 *
 * It builds `app` with `Listeners`, `Supervisor` and `Health` provided, says it is
 * ready once every layer of `app` is built, restarts on the restart signals
 * (`SIGUSR2`) and on `restart`, and drains on `SIGTERM`, `SIGINT`, a call to
 * `terminate`, or a hand-off; once drained, it ends the program, whose other
 * layers then finalize, and the process exits 0.
 *
 * **When to use**
 *
 * The way to run a server program. Compose it as any layer: merged beside
 * other layers (`Layer.mergeAll(Supervisor.layer(App), Reporter)`), provided
 * with telemetry or configuration (`Effect.provide(Otel)` on the launch).
 * `run` is the same supervisor as an Effect.
 *
 * **Details**
 *
 * - Ready means every server listens. Only then are unclaimed inherited fds
 *   closed, the PID file written, and the parent (after a restart) or
 *   systemd (`READY=1`) told.
 * - A successor receives its parent's TLS session ticket key, with its age
 *   (`Server.TicketKeyring`), over the private readiness channel before it
 *   builds `app`, so clients resume their TLS sessions across a restart; the
 *   key rotates every 24 hours (`GRACE_TICKET_ROTATION`).
 * - Every restart attempt, refused or failed ones too, is logged with its
 *   reason, is a span (`effect-grace.restart`) and counts in `metrics`.
 * - A termination at any moment ends the same way, during start-up too (the
 *   application's layers built so far are closed): `STOPPING=1`, never
 *   `READY=1` or `MAINPID=` after it, the PID file removed, exit code 0. A
 *   restart under way is interrupted: its successor is killed and reaped.
 * - A second termination signal during a drain ends the process at once, with
 *   a non-zero code (128 + the signal's number).
 * - `Health` turns unready when a termination begins; with `shutdownDelay`
 *   the servers go on serving for that long, every response saying
 *   `Connection: close`, before the drain.
 * - As PID 1 (a container's init) a restart is refused (`RestartUnsupported`):
 *   when PID 1 exits, the kernel ends its successor with it. Termination
 *   drains and exits 0 there as anywhere. With workers, the primary stays
 *   while its workers roll (`SIGHUP`), as PID 1 too.
 * - With `workers` (`GRACE_WORKERS`), this process is a primary and `app` runs
 *   in each worker only; a worker's logs, spans and metrics carry its slot, and
 *   `Supervisor`'s `worker` says it. A worker that exits before every worker
 *   is first ready fails the start-up (`WorkerFailed`).
 *
 * **Gotchas**
 *
 * - It needs `Supervisor.runMain` to end the program: under another runtime
 *   (`NodeRuntime.runMain`) it fails at start with a `LaunchError` that says
 *   so. Two supervisors in one program fail the same way.
 * - The successor is `process.execPath` with `process.execArgv` and
 *   `process.argv`: start the program as `node main.ts`, not through
 *   `npm run`, or `LISTEN_PID` names npm.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <A, E, R>(
  app: Layer.Layer<A, E, R>,
  options: Options = {}
): Layer.Layer<never, Errors<E>, Exclude<R, Provided>> =>
  Layer.effectDiscard(
    Report.startupFailure(
      Effect.gen(function* () {
        const program = (yield* claimProgram("layer"))!
        const { started, stopped } = yield* supervise(app, options)
        yield* started
        // Drained: the program ends, and its other layers finalize.
        yield* Effect.forkScoped(Effect.flatMap(stopped, (outcome) => Effect.sync(() => program.end(!outcome.forced))))
      })
    )
  ) as Layer.Layer<never, Errors<E>, Exclude<R, Provided>>

/**
 * Runs `app` under the supervisor as an Effect that returns once the drain
 * after a termination or a hand-off is done: the same supervisor as `layer`,
 * for a program that does more after it, or a test. Under
 * `Supervisor.runMain` the process then exits 0; under another runtime, the
 * program must not have handlers of its own for `SIGTERM` or `SIGINT`
 * (`NodeRuntime.runMain` installs some): it fails at start with a
 * `LaunchError` if it does.
 *
 * @since 0.1.0
 * @category running
 */
export const run = <A, E, R>(
  app: Layer.Layer<A, E, R>,
  options: Options = {}
): Effect.Effect<void, Errors<E>, Exclude<R, Provided>> =>
  Report.startupFailure(
    Effect.scoped(
      Effect.gen(function* () {
        const program = yield* claimProgram("run")
        const { started, stopped } = yield* supervise(app, options)
        yield* started
        const outcome = yield* stopped
        if (!outcome.forced) program?.stoppedGracefully()
      })
    )
  ) as Effect.Effect<void, Errors<E>, Exclude<R, Provided>>

/**
 * Runs a program as the process's main program, as `NodeRuntime.runMain`
 * does, for a program with a supervisor (`Supervisor.layer` or `run`):
 *
 * ```ts
 * Layer.launch(Supervisor.layer(App)).pipe(Supervisor.runMain)
 * ```
 *
 * **Details**
 *
 * - The supervisor takes `SIGTERM` and `SIGINT` while it runs; before it
 *   starts (while layers provided around it build) they interrupt the
 *   program, and every finalizer runs.
 * - A hand-off or a termination ends the program once the supervisor has
 *   drained: every finalizer runs (a tracer flushes its last spans), then the
 *   process exits 0. A failure exits 1, a start-up failure after one line
 *   through the application's logger. A second termination signal exits at
 *   once with 128 + its number.
 * - `teardown`, if given, decides the code of every other ending.
 *
 * @since 0.1.0
 * @category running
 */
export const runMain: {
  (options?: RunMainOptions): <E, A>(effect: Effect.Effect<A, E>) => void
  <E, A>(effect: Effect.Effect<A, E>, options?: RunMainOptions): void
} = dual(
  (args) => Effect.isEffect(args[0]),
  <E, A>(effect: Effect.Effect<A, E>, options: RunMainOptions = {}): void => {
    const program = makeProgram()
    const exitCodeOf: Runtime.Teardown = (exit, onExit) =>
      program.graceful() && (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause))
        ? onExit(0)
        : (options.teardown ?? Runtime.defaultTeardown)(exit, onExit)
    const launch = Runtime.makeRunMain(({ fiber, teardown }) => {
      program.attach(fiber)
      fiber.addObserver((exit) => {
        program.detach()
        // The program is over, every finalizer run: nothing it left behind keeps the process alive.
        teardown(exit, exitProcess)
      })
    })
    launch(Effect.provideService(effect, Program.Program, program.program), {
      disableErrorReporting: options.disableErrorReporting,
      teardown: exitCodeOf
    })
  }
)

// The runtime ends the process, as NodeRuntime.runMain does; nowhere else in the library.
// oxlint-disable-next-line unicorn/no-process-exit
const exitProcess = (code: number): never => process.exit(code)

const signalExitCode = (signal: NodeJS.Signals) => 128 + (constants.signals[signal] ?? constants.signals.SIGTERM)

/**
 * The program of `runMain`: its main fiber, whether it stopped gracefully, and the termination signals, which
 * interrupt it until a supervisor claims them (a second one exits at once).
 */
const makeProgram = () => {
  let claimed = false
  let graceful = false
  let signalled = false
  let main: Fiber.Fiber<unknown, unknown> | undefined
  const onSignal = (signal: NodeJS.Signals) => {
    if (claimed) return
    if (signalled) exitProcess(signalExitCode(signal))
    signalled = graceful = true
    main?.interruptUnsafe()
  }
  const program: Program.Program = {
    claimSignals: () => (claimed ? false : (claimed = true)),
    releaseSignals: () => void (claimed = false),
    end: (isGraceful) => {
      graceful ||= isGraceful
      main?.interruptUnsafe()
    },
    stoppedGracefully: () => void (graceful = true),
    exitNow: (signal) => exitProcess(signalExitCode(signal))
  }
  return {
    program,
    graceful: () => graceful,
    attach: (fiber: Fiber.Fiber<unknown, unknown>) => {
      main = fiber
      for (const signal of TERMINATION_SIGNALS) process.on(signal, onSignal)
    },
    detach: () => {
      for (const signal of TERMINATION_SIGNALS) process.off(signal, onSignal)
    }
  }
}

/**
 * The options of `runMain`, as `NodeRuntime.runMain` takes them.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunMainOptions {
  readonly disableErrorReporting?: boolean | undefined
  readonly teardown?: Runtime.Teardown | undefined
}

/**
 * A `Supervisor` for testing an application's own code (an admin endpoint
 * that restarts, for example) without processes: `restart` answers as given
 * (by default a successor's pid, 1), and every call is recorded in `calls`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerStub = (
  options: {
    readonly restart?: Effect.Effect<number, RestartError> | undefined
    readonly parentPid?: number | undefined
    readonly worker?: WorkerInfo | undefined
    readonly calls?: Array<"restart" | "terminate"> | undefined
  } = {}
): Layer.Layer<Supervisor> =>
  Layer.succeed(Supervisor)(
    Supervisor.of({
      restart: Effect.suspend(() => {
        options.calls?.push("restart")
        return options.restart ?? Effect.succeed(1)
      }),
      terminate: Effect.sync(() => void options.calls?.push("terminate")),
      parentPid: Effect.succeed(Option.fromUndefinedOr(options.parentPid)),
      worker: Option.fromUndefinedOr(options.worker)
    })
  )
