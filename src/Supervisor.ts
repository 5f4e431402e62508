/**
 * Zero-downtime restarts: a running program replaces itself with a new process
 * of the same program (new code, new configuration, new certificates) without
 * refusing or dropping a connection, and terminates gracefully.
 *
 * `Layer.launch(Supervisor.layer(App)).pipe(Supervisor.runMain)` builds the
 * application's servers on Listeners and says it is ready. On the restart
 * signal (`SIGUSR2`) or a call to `restart`, it starts a successor with every
 * listener as fds 3.. and, once the successor is ready and its probation has
 * passed, drains and ends; if the successor dies within the window, it takes
 * the service back. `SIGTERM` and `SIGINT` drain the same way. With workers
 * (`GRACE_WORKERS`), the process is a primary that runs that many workers on
 * its sockets, and restarts them a slot at a time on `SIGHUP`.
 *
 * The README's "Guarantees" say what it keeps; the machine
 * (`internal/machine.ts`) and the roles (`internal/single.ts`, `primary.ts`,
 * `worker.ts`) how.
 *
 * @since 0.1.0
 */
import type * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Runtime from "effect/Runtime"
import * as Drain from "./Drain.ts"
import * as Health from "./Health.ts"
import * as ListenFds from "./ListenFds.ts"
import * as Listeners from "./Listeners.ts"
import * as Notify from "./Notify.ts"
import * as DrainInternal from "./internal/drain.ts"
import * as Errors from "./internal/errors.ts"
import * as Gate from "./internal/gate.ts"
import * as Interpreter from "./internal/interpreter.ts"
import * as Metrics from "./internal/metrics.ts"
import * as Program from "./internal/program.ts"
import * as Report from "./internal/report.ts"
import * as Requests from "./internal/requests.ts"
import * as Settings from "./internal/settings.ts"
import * as Supervise from "./internal/supervise.ts"
import type * as Supervision from "./internal/supervision.ts"
import * as Tickets from "./internal/tickets.ts"

// -----------------------------------------------------------------------------
// Errors
// -----------------------------------------------------------------------------

/**
 * The successor could not be started at all; `cause` says why. This process keeps serving.
 *
 * @since 0.1.0
 * @category errors
 */
export const SpawnFailed: typeof Errors.SpawnFailed = Errors.SpawnFailed
/** @since 0.1.0 */
export type SpawnFailed = Errors.SpawnFailed

/**
 * The successor (or a roll's new worker) exited before it was ready: its pid, and its exit code or the signal that
 * killed it. This process keeps serving.
 *
 * @since 0.1.0
 * @category errors
 */
export const ExitedBeforeReady: typeof Errors.ExitedBeforeReady = Errors.ExitedBeforeReady
/** @since 0.1.0 */
export type ExitedBeforeReady = Errors.ExitedBeforeReady

/**
 * The successor (or a roll's new worker) was ready, then exited within its probation window: this process (or the
 * old worker) took the service back, on the sockets it kept, and serves on.
 *
 * @since 0.1.0
 * @category errors
 */
export const HandedBack: typeof Errors.HandedBack = Errors.HandedBack
/** @since 0.1.0 */
export type HandedBack = Errors.HandedBack

/**
 * The successor was not ready within the timeout, and was killed.
 *
 * @since 0.1.0
 * @category errors
 */
export const NotReadyInTime: typeof Errors.NotReadyInTime = Errors.NotReadyInTime
/** @since 0.1.0 */
export type NotReadyInTime = Errors.NotReadyInTime

/**
 * This process is shutting down: it restarts no more (a restart it had kept for later is refused too).
 *
 * @since 0.1.0
 * @category errors
 */
export const NotServing: typeof Errors.NotServing = Errors.NotServing
/** @since 0.1.0 */
export type NotServing = Errors.NotServing

/**
 * This process cannot restart in place: handing the listeners to a successor needs native calls that are not
 * available (not Linux, or koffi not installed), or the process is PID 1 (a container's init), whose exit ends its
 * successor too, or a primary's worker, which its primary restarts. `detail` says which. Stop and start the program
 * (or replace the container) instead.
 *
 * @since 0.1.0
 * @category errors
 */
export const RestartUnsupported: typeof Errors.RestartUnsupported = Errors.RestartUnsupported
/** @since 0.1.0 */
export type RestartUnsupported = Errors.RestartUnsupported

/**
 * Why a restart did not happen.
 *
 * @since 0.1.0
 * @category errors
 */
export type RestartErrorReason = Errors.RestartErrorReason

/**
 * A restart failed or was refused; this process keeps serving. `reason` says why.
 *
 * @since 0.1.0
 * @category errors
 */
export const RestartError: typeof Errors.RestartError = Errors.RestartError
/** @since 0.1.0 */
export type RestartError = Errors.RestartError

/**
 * The supervisor cannot run as the program is composed (`NoRunMain`, `ForeignSignalHandlers`, `TwoSupervisors`), or
 * workers cannot run here (`WorkersUnsupported`); the message says what to write or do instead.
 *
 * @since 0.1.0
 * @category errors
 */
export const LaunchError: typeof Errors.LaunchError = Errors.LaunchError
/** @since 0.1.0 */
export type LaunchError = Errors.LaunchError

/**
 * A worker exited (or could not be started) before the group was first ready, so the program does not start: it is
 * broken, and the worker's output says why.
 *
 * @since 0.1.0
 * @category errors
 */
export const WorkerFailed: typeof Errors.WorkerFailed = Errors.WorkerFailed
/** @since 0.1.0 */
export type WorkerFailed = Errors.WorkerFailed

/**
 * A full upgrade to fewer workers than the previous primary had: it handed on a socket per worker for each address,
 * and connections the kernel gave the sockets no worker took would wait for ever. The old primary serves on; stop
 * and start the service to run fewer workers.
 *
 * @since 0.1.0
 * @category errors
 */
export const TooFewWorkers: typeof Errors.TooFewWorkers = Errors.TooFewWorkers
/** @since 0.1.0 */
export type TooFewWorkers = Errors.TooFewWorkers

/**
 * The memory limit (`maxMemory`, `GRACE_MAX_MEMORY`) is below what a worker (or the single process) uses once it is
 * ready, when the service first starts: every replacement would start above it too, so the program ends rather than
 * replace workers in a loop. Raise the limit, or unset it.
 *
 * @since 0.1.0
 * @category errors
 */
export const MemoryLimitTooLow: typeof Errors.MemoryLimitTooLow = Errors.MemoryLimitTooLow
/** @since 0.1.0 */
export type MemoryLimitTooLow = Errors.MemoryLimitTooLow

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/**
 * How the supervisor restarts and stops: the restart signals, the readiness timeout, the PID file, the shutdown
 * delay, the compile cache, the probation window, workers and their surge. Each option left out is read from the
 * environment (`config`), else its default.
 *
 * @since 0.1.0
 * @category models
 */
export type Options = Settings.Options

/**
 * The defaults of `Options`, read through `Config`: `GRACE_READY_TIMEOUT`,
 * `GRACE_SHUTDOWN_DELAY` and `GRACE_PROBATION` (durations such as
 * `30 seconds`), `GRACE_PID_FILE`, `GRACE_COMPILE_CACHE` (`off`, or a
 * directory), `GRACE_WORKERS` (a count, or `auto`), `GRACE_SURGE`,
 * `GRACE_MAX_MEMORY` (a size such as `512MiB`), `GRACE_MAX_MEMORY_GRACE`
 * and `GRACE_CONTROL` (the control socket's path).
 * Values given in `Options` win.
 *
 * @since 0.1.0
 * @category config
 */
export const config: typeof Settings.config = Settings.config

// -----------------------------------------------------------------------------
// Service
// -----------------------------------------------------------------------------

/**
 * Where a worker stands in its primary's group.
 *
 * @since 0.1.0
 * @category models
 */
export type WorkerInfo = Supervision.WorkerInfo

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
 * The supervisor's metrics: `effect-grace.restarts`, a counter of restart
 * attempts by `outcome` (`ready`, or the reason's tag: `SpawnFailed`,
 * `HandedBack`, ...); `effect-grace.restart.handoff`, the time from
 * spawning a successor to its being ready; and, in a primary,
 * `effect-grace.workers`, its workers' events by `event` (`started`, `ready`,
 * `exited`); `effect-grace.memory.replacements`, the workers replaced (or
 * single processes restarted) for staying above the memory limit. Each
 * attempt is also a span, `effect-grace.restart`, with
 * `effect-grace.outcome` and, once spawned, `effect-grace.successor.pid`; the
 * work of a restart that goes ahead (spawn, wait for ready) is the span
 * `effect-grace.restart.successor`, and each worker's start the span
 * `effect-grace.worker.start`. The servers' drains have their own
 * (`effect-grace.drain`, see `Drain`).
 *
 * @since 0.1.0
 * @category observability
 */
export const metrics: typeof Metrics.metrics = Metrics.metrics

// -----------------------------------------------------------------------------
// Running
// -----------------------------------------------------------------------------

type Provided = Listeners.Listeners | Supervisor | Health.Health

type Launch = ListenFds.ListenFdsError | Notify.NotifyError | Config.ConfigError | LaunchError
type Failures<E> = E | Launch | WorkerFailed | TooFewWorkers | MemoryLimitTooLow

const serviceOf = (supervision: Supervision.Supervision): Supervisor["Service"] =>
  Supervisor.of({
    restart: supervision.role.restart(supervision),
    terminate: Requests.terminate(supervision, "call"),
    parentPid: Effect.map(supervision.loop.state, (state) => Option.fromUndefinedOr(state.parentPid)),
    worker: supervision.role.worker
  })

// The application, with what the supervisor gives it: its listeners, its supervisor, its health, the ticket keys
// handed down, and what its servers follow (the shutdown delay, a forced end, whether it has served, the pauses).
const provide = <A, E, R>(
  app: Layer.Layer<A, E, R>,
  supervision: Supervision.Supervision,
  listeners: Listeners.Listeners["Service"]
): Layer.Layer<A, E | Config.ConfigError, Exclude<R, Provided>> =>
  app.pipe(
    Layer.provide(Layer.succeed(Listeners.Listeners)(listeners)),
    Layer.provide(Layer.succeed(Supervisor)(serviceOf(supervision))),
    Layer.provide(Layer.succeed(Health.Health)(Health.fromPhase(Interpreter.readiness(supervision)))),
    Layer.provide(Layer.succeed(Tickets.TicketKeyring)(supervision.keyring)),
    Layer.provide(Layer.succeed(DrainInternal.Closing)(Interpreter.closing(supervision))),
    Layer.provide(Layer.succeed(DrainInternal.Forced)(Interpreter.forced(supervision))),
    Layer.provide(Layer.succeed(Gate.Gate)(supervision.gate.gate)),
    // A start-up that fails or is cut closes the servers built so far: they served nothing, and report nothing.
    Layer.provide(Layer.succeed(DrainInternal.Started)(Interpreter.served(supervision))),
    // GRACE_DRAIN_TIMEOUT and GRACE_IDLE_GRACE, for every server of the application.
    Layer.provide(Drain.layerConfig)
  ) as Layer.Layer<A, E | Config.ConfigError, Exclude<R, Provided>>

/**
 * Supervises `app` in the current scope, and answers when it has started and when the supervision is over. Closing
 * the scope terminates (interrupting a start-up or a restart under way) and drains.
 */
const supervise = <A, E, R>(app: Layer.Layer<A, E, R>, options: Options) =>
  Effect.gen(function* () {
    const { supervision, listeners, over } = yield* Supervise.make(options, {
      listeners: (binding) => Effect.flatMap(ListenFds.make(), (fds) => Listeners.make(fds, binding)),
      serving: {
        serve: Listeners.serve,
        pause: Listeners.pauseAccepting,
        resume: Listeners.resumeAccepting,
        stop: Listeners.stopAccepting
      },
      // A Notify given by the caller (a test's) wins over the one NOTIFY_SOCKET names.
      notify: Effect.flatMap(
        Effect.serviceOption(Notify.Notify),
        Option.match({ onNone: () => Notify.make, onSome: Effect.succeed })
      )
    })
    // What the application requires beyond what is provided here comes from the context the supervisor runs in.
    yield* Supervise.start(supervision, provide(app, supervision, listeners) as unknown as Layer.Layer<never, unknown>)
    const started = Interpreter.started(supervision) as Effect.Effect<void, E | Config.ConfigError>
    return { started, stopped: over }
  })

/**
 * The application `app` under the supervisor, as the layer a program
 * launches, with `Supervisor.runMain`:
 *
 * ```ts
 * Layer.launch(Supervisor.layer(App)).pipe(Supervisor.runMain)
 * ```
 *
 * It builds `app` with `Listeners`, `Supervisor` and `Health` provided, says
 * it is ready once every layer of `app` is built, restarts on the restart
 * signals (`SIGUSR2`) and on `restart`, and drains on `SIGTERM`, `SIGINT`, a
 * call to `terminate`, or a hand-off; once drained, it ends the program, whose
 * other layers then finalize, and the process exits 0.
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
 * - The README's "Guarantees" say what it keeps: one restart at a time, no
 *   connection refused, a failed restart leaves this process serving, every
 *   drain has a deadline, systemd hears each step.
 * - A successor receives its parent's TLS session ticket key, with its age
 *   (`Server.TicketKeyring`), over the private channel before it builds
 *   `app`, so clients resume their TLS sessions across a restart.
 * - Every restart attempt, refused or failed ones too, is logged with its
 *   reason, is a span (`effect-grace.restart`) and counts in `metrics`.
 * - A termination at any moment ends the same way, during start-up too:
 *   `STOPPING=1`, the PID file removed, exit code 0; a second termination
 *   signal ends the process at once, with 128 + the signal's number.
 * - `Health` turns unready when a termination begins; with `shutdownDelay`
 *   the servers go on serving for that long, every response saying
 *   `Connection: close`, before the drain.
 * - With `workers` (`GRACE_WORKERS`), this process is a primary and `app` runs
 *   in each worker only; a worker's logs, spans and metrics carry its slot, and
 *   `Supervisor`'s `worker` says it.
 *
 * **Gotchas**
 *
 * - It needs `Supervisor.runMain` to end the program: under another runtime
 *   (`NodeRuntime.runMain`) it fails at start with a `LaunchError` that says
 *   so. Two supervisors in one program fail the same way.
 * - As PID 1 a restart is refused (`RestartUnsupported`): the kernel ends the
 *   successor with PID 1. With workers, the primary stays while they roll.
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
): Layer.Layer<never, Failures<E>, Exclude<R, Provided>> =>
  Layer.effectDiscard(
    Report.startupFailure(
      Effect.gen(function* () {
        const program = (yield* Supervise.claimProgram("layer"))!
        const { started, stopped } = yield* supervise(app, options)
        yield* started
        // Drained: the program ends, and its other layers finalize.
        yield* Effect.forkScoped(Effect.flatMap(stopped, (outcome) => Effect.sync(() => program.end(!outcome.forced))))
      })
    )
  ) as Layer.Layer<never, Failures<E>, Exclude<R, Provided>>

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
): Effect.Effect<void, Failures<E>, Exclude<R, Provided>> =>
  Report.startupFailure(
    Effect.scoped(
      Effect.gen(function* () {
        const program = yield* Supervise.claimProgram("run")
        const { started, stopped } = yield* supervise(app, options)
        yield* started
        const outcome = yield* stopped
        if (!outcome.forced) program?.stoppedGracefully()
      })
    )
  ) as Effect.Effect<void, Failures<E>, Exclude<R, Provided>>

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
  <E, A>(effect: Effect.Effect<A, E>, options: RunMainOptions = {}): void => Program.runMain(effect, options)
)

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
