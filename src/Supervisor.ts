/**
 * Zero-downtime restarts: a running program replaces itself with a new process
 * of the same program (new code, new configuration, new certificates) without
 * refusing or dropping a connection, and terminates gracefully.
 *
 * `layer(app)` is what a program launches (`Layer.launch(Supervisor.layer(App))`
 * with `NodeRuntime.runMain({ teardown: Supervisor.teardown })`). It builds the
 * application's layers (its servers) on Listeners, says it is ready, and
 * waits. On the restart signal (`SIGUSR2` by default) or a call to `restart`,
 * it starts a successor with every active listener as fds 3.. (`LISTEN_FDS`,
 * `LISTEN_FDNAMES`, `LISTEN_PID`), waits until the successor's own servers
 * listen, and only then drains: the servers drain as finalizers of the
 * application's scope, and the program ends. On `SIGTERM` or `SIGINT` it
 * drains the same way.
 *
 * Its life is a small state machine (internal/machine.ts), and what it asks
 * of the operating system (signals, the successor, the PID file) goes through
 * one service, which tests replace.
 *
 * Invariants, as cloudflare/tableflip keeps them:
 * - One restart at a time; none before this process is ready, none while its
 *   own parent is still draining, none once it is draining itself. Every
 *   refusal is logged, whoever asked.
 * - A termination wins over a restart under way: the successor is killed and
 *   reaped, and systemd hears nothing after `STOPPING=1`.
 * - The old process stops accepting only after the successor is ready, and
 *   the two share one listening socket, so no connection is refused.
 * - A failed restart (spawn failure, early exit, readiness timeout) leaves
 *   this process serving, is reported as a typed `RestartError`, and leaves no
 *   successor behind: it is killed and reaped.
 * - Every drain has a deadline (the servers' drain timeout); a second
 *   `SIGTERM`/`SIGINT` during it ends the process at once.
 * - Under systemd (`NOTIFY_SOCKET`): `READY=1` at start, `RELOADING=1` when a
 *   restart begins, `MAINPID=<successor>` and `READY=1` at hand-off, and
 *   `STOPPING=1` on termination.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberHandle from "effect/FiberHandle"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
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
import type * as Successor from "./internal/successor.ts"
import * as Tickets from "./internal/tickets.ts"

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
    const how = this.signal !== null ? `was killed by ${this.signal}` : `exited with code ${this.code}`
    return `the successor ${how} before it was ready (see its output); this process keeps serving`
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
export class Unsupported extends Data.TaggedError("Unsupported")<{
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
  SpawnFailed | ExitedBeforeReady | NotReadyInTime | AlreadyInProgress | ParentStillRunning | NotServing | Unsupported

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
  /** Signals that start a restart. Default `["SIGUSR2"]`; `["SIGHUP"]` for servers reloaded by HUP. */
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
}

/**
 * The defaults of `Options`, read through `Config`: `GRACE_READY_TIMEOUT`
 * and `GRACE_SHUTDOWN_DELAY` (durations such as `30 seconds`) and
 * `GRACE_PID_FILE`. Values given in `Options` win.
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<{
  readonly readyTimeout: Option.Option<Duration.Duration>
  readonly shutdownDelay: Option.Option<Duration.Duration>
  readonly pidFile: Option.Option<string>
}> = Config.all({
  readyTimeout: Variables.duration("GRACE_READY_TIMEOUT"),
  shutdownDelay: Variables.duration("GRACE_SHUTDOWN_DELAY"),
  pidFile: Config.option(Config.String("GRACE_PID_FILE"))
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
     * Starts a successor and, once it is ready, hands over: this process then
     * drains and `run` returns. Succeeds with the successor's pid.
     */
    readonly restart: Effect.Effect<number, RestartError>
    /** Starts a graceful termination: the servers drain and `run` returns. */
    readonly terminate: Effect.Effect<void>
    /** The pid of the parent this process took over from, while it is still draining. */
    readonly parentPid: Effect.Effect<Option.Option<number>>
  }
>()("effect-grace/Supervisor") {}

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

const logged = (message: string, annotations: Record<string, unknown>) =>
  Effect.logInfo(message).pipe(Effect.annotateLogs(annotations))

// -----------------------------------------------------------------------------
// The runtime
// -----------------------------------------------------------------------------

/** How a programmatic restart is answered. */
type Reply = Deferred.Deferred<number, RestartError>

type Failure = Successor.SpawnFailure | Successor.EarlyExit | { readonly _tag: "NotReadyInTime" }

// Whether this process has drained after a termination or a hand-off, for `teardown`.
let stoppedGracefully = false

/**
 * Supervises `app` in the current scope: builds it on Listeners with
 * Supervisor provided, announces readiness, and follows the state machine.
 * Closing the scope terminates (interrupting a restart under way) and drains.
 * `stopped` completes once a termination or a hand-off has begun.
 */
const supervise = <A, E, R>(app: Layer.Layer<A, E, R>, options: Options) =>
  Effect.gen(function* () {
    const os = yield* Os.Os
    const configured = yield* config
    const readyTimeout = Duration.fromInputUnsafe(
      options.readyTimeout ?? Option.getOrElse(configured.readyTimeout, () => Duration.seconds(60))
    )
    const pidFile = Option.getOrUndefined(
      Option.map(Option.fromUndefinedOr(options.pidFile).pipe(Option.orElse(() => configured.pidFile)), (p) =>
        resolve(p)
      )
    )
    const shutdownDelay = Duration.fromInputUnsafe(
      options.shutdownDelay ?? Option.getOrElse(configured.shutdownDelay, () => Duration.zero)
    )
    const restartSignals = options.restartSignals ?? ["SIGUSR2"]
    // Signals: handled from here on, before anything else, so that none takes its default action (SIGUSR2 would
    // kill the process) and a termination during start-up is not lost.
    const signals = yield* os.signals([...restartSignals, "SIGTERM", "SIGINT"])
    yield* os.reapOrphans
    const parent = yield* os.parent
    const inherited = yield* ListenFds.make()
    const listeners = yield* Listeners.make(inherited)
    // A Notify given by the caller (a test's) wins over the one NOTIFY_SOCKET names.
    const given = yield* Effect.serviceOption(Notify.Notify)
    const notify = Option.isSome(given) ? given.value : yield* Notify.make
    // TLS sessions resume across restarts: the keys of the first generation, handed down.
    const ticketKeys = (parent !== undefined ? yield* parent.ticketKeys : undefined) ?? (yield* Tickets.TicketKeys)

    const stopped = yield* Deferred.make<"terminate" | "handoff">()
    const closing = yield* Deferred.make<void>()
    // A second termination signal: every drain (and the shutdown delay) ends now.
    const forced = yield* Deferred.make<void>()
    const health = Health.make("starting")
    const lock = yield* Semaphore.make(1)
    const restarting = yield* FiberHandle.make<void, never>()
    // Restarts asked for by a signal; made before the drain's finalizer, so a signal during the drain is refused.
    const requested = yield* FiberSet.make<number, RestartError>()
    let state: Machine.State<Reply> = { _tag: "Starting" }
    let lastSignal: NodeJS.Signals = "SIGTERM"

    // Why listeners cannot be handed on here, if they cannot: one answer for the machine and for the refusal.
    const handOffBlocked = (): Unsupported | undefined => {
      const native = os.native()
      if (!native.available) return new Unsupported({ platform: native.platform, detail: native.reason })
      // As PID 1 (a container's init), exiting ends the PID namespace, successor and all.
      if (os.pid === 1) {
        return new Unsupported({
          platform: process.platform,
          detail:
            "this process is PID 1 (a container's init), and when it exits the kernel ends every process of its " +
            "PID namespace, the successor too; replace the container instead (a rolling update)"
        })
      }
      return undefined
    }
    const facts = (): Machine.Facts => ({
      parentPid: parent !== undefined && parent.isAlive() ? parent.pid : undefined,
      canHandOff: handOffBlocked() === undefined
    })

    const fail = (reply: Reply | undefined, reason: RestartErrorReason) => {
      const error = new RestartError({ reason })
      return Effect.gen(function* () {
        yield* Effect.logWarning(`effect-grace: ${error.message}`).pipe(
          Effect.annotateLogs({ pid: os.pid, reason: reason._tag })
        )
        if (reply !== undefined) yield* Deferred.fail(reply, error)
      })
    }

    const refusalReason = (refusal: Machine.Refusal): RestartErrorReason => {
      switch (refusal._tag) {
        case "AlreadyInProgress":
          return new AlreadyInProgress()
        case "NotServing":
          return new NotServing({ state: refusal.state })
        case "ParentStillRunning":
          return new ParentStillRunning({ parentPid: refusal.parentPid })
        case "Unsupported":
          return handOffBlocked() ?? new Unsupported({ platform: process.platform, detail: "no hand-off is possible" })
      }
    }

    const failureReason = (failure: Failure): RestartErrorReason => {
      switch (failure._tag) {
        case "SpawnFailed":
          return new SpawnFailed({ cause: failure.cause })
        case "ExitedBeforeReady":
          return new ExitedBeforeReady({ pid: failure.pid, code: failure.code, signal: failure.signal })
        case "NotReadyInTime":
          return new NotReadyInTime({ timeout: readyTimeout })
      }
    }

    // The restart: spawn, wait for ready (an Effect timer: a TestClock drives it), tell the machine. A successor
    // that is not handed off (failure, timeout, interruption by a termination) is killed and reaped.
    const restartFiber = Effect.gen(function* () {
      const passed = (yield* listeners.active).flatMap((l) => (l.fd === undefined ? [] : [{ fd: l.fd, name: l.name }]))
      yield* logged("effect-grace: restart started", { pid: os.pid, listeners: passed.length })
      const started = yield* Clock.currentTimeMillis
      const outcome = yield* Effect.acquireUseRelease(
        os.spawn({ passed, ticketKeys }),
        (successor) =>
          successor.ready.pipe(
            Effect.timeoutOrElse({
              duration: readyTimeout,
              orElse: () => Effect.fail({ _tag: "NotReadyInTime" } as const)
            }),
            Effect.andThen(
              Effect.gen(function* () {
                yield* Metric.update(metrics.handOff, Duration.millis((yield* Clock.currentTimeMillis) - started))
                yield* dispatch({ _tag: "SuccessorReady", pid: successor.pid })
              })
            )
          ),
        (successor, exit) =>
          Exit.isSuccess(exit) && state._tag === "Draining" && state.reason === "handoff"
            ? successor.release
            : successor.kill
      ).pipe(Effect.result)
      if (outcome._tag === "Failure") yield* dispatch({ _tag: "RestartFailed", failure: outcome.failure })
    }).pipe(Effect.withSpan("effect-grace.restart.successor"))

    const perform = (action: Machine.Action<Reply, Failure>): Effect.Effect<void> => {
      switch (action._tag) {
        case "Refuse":
          return fail(action.reply, refusalReason(action.refusal))
        case "StartRestart":
          return Effect.asVoid(FiberHandle.run(restarting, restartFiber))
        case "InterruptRestart":
          return FiberHandle.clear(restarting)
        case "HandOff":
          return Effect.gen(function* () {
            // From here on the successor serves too: this process must not unlink what it hands on.
            yield* listeners.handOff
            yield* Effect.ignore(notify.mainPid(action.pid, { ready: true }))
            yield* logged("effect-grace: successor ready", { pid: os.pid, successor: action.pid })
            if (action.reply !== undefined) yield* Deferred.succeed(action.reply, action.pid)
          })
        case "RestartFailed":
          return Effect.andThen(Effect.ignore(notify.ready), fail(action.reply, failureReason(action.failure)))
        case "NotifyReloading":
          return Effect.ignore(notify.reloading)
        case "NotifyStopping":
          return Effect.ignore(notify.stopping)
        case "Stop":
          return Effect.sync(() => health.setPhase(action.reason === "terminate" ? "stopping" : "handed off")).pipe(
            Effect.andThen(Deferred.succeed(stopped, action.reason)),
            Effect.asVoid
          )
        case "ForceExit":
          return Effect.logWarning("effect-grace: a second termination signal; exiting at once").pipe(
            Effect.annotateLogs({ pid: os.pid, signal: lastSignal }),
            // Where a signal can end the process it does so here; as PID 1, the forced drain ends the program.
            Effect.andThen(os.forceExit(lastSignal)),
            Effect.andThen(Deferred.succeed(forced, undefined))
          )
      }
    }

    // One event at a time: the machine decides, the runtime carries out its actions in order, in the supervisor's
    // own context (its logger and tracer), whoever sent the event.
    const services = yield* Effect.context<never>()
    const dispatch = (event: Machine.Event<Reply, Failure>): Effect.Effect<void> =>
      lock
        .withPermits(1)(
          Effect.suspend(() => {
            const [next, actions] = Machine.transition(state, event, facts())
            state = next
            return Effect.forEach(actions, perform, { discard: true })
          })
        )
        .pipe(Effect.provideContext(services))

    const restart: Effect.Effect<number, RestartError> = Effect.gen(function* () {
      const reply = yield* Deferred.make<number, RestartError>()
      yield* dispatch({ _tag: "RestartRequested", reply })
      return yield* Deferred.await(reply)
    }).pipe(
      Effect.onExit((exit) => {
        const outcome = Exit.isSuccess(exit)
          ? "ready"
          : Option.match(Cause.findErrorOption(exit.cause), {
              onNone: () => "interrupted",
              onSome: (e) => e.reason._tag
            })
        return Effect.all([
          Effect.annotateCurrentSpan("effect-grace.outcome", outcome),
          Exit.isSuccess(exit) ? Effect.annotateCurrentSpan("effect-grace.successor.pid", exit.value) : Effect.void,
          Metric.update(Metric.withAttributes(metrics.restarts, { outcome }), 1)
        ])
      }),
      Effect.withSpan("effect-grace.restart", { attributes: { "effect-grace.pid": os.pid } })
    )

    const supervisor = Supervisor.of({
      restart,
      terminate: dispatch({ _tag: "Terminate", source: "call" }),
      parentPid: Effect.sync(() => Option.fromUndefinedOr(facts().parentPid))
    })

    yield* Effect.forkScoped(
      Stream.runForEach(signals, (signal) => {
        if (restartSignals.includes(signal)) {
          return Effect.andThen(
            logged("effect-grace: restart requested", { pid: os.pid, signal }),
            FiberSet.run(requested, restart)
          )
        }
        lastSignal = signal
        return Effect.andThen(
          logged("effect-grace: termination requested", { pid: os.pid, signal }),
          dispatch({ _tag: "Terminate", source: "signal" })
        )
      })
    )

    // The application: its servers listen once its layers are built, and drain when its scope closes.
    const appScope = yield* Scope.fork(yield* Effect.scope, "sequential")
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        // A start-up that failed (or was interrupted) served nothing: there is nothing to drain or report.
        if (state._tag === "Starting") return yield* Scope.close(appScope, Exit.void)
        // The scope closing (the runtime stopping the program) terminates like a call: a restart is interrupted.
        yield* dispatch({ _tag: "Terminate", source: "scope" })
        yield* FiberHandle.clear(restarting)
        const reason = state._tag === "Draining" ? state.reason : "terminate"
        if (reason === "terminate" && Duration.isGreaterThan(shutdownDelay, Duration.zero)) {
          // Unready already; the servers go on serving, every response saying Connection: close.
          yield* Deferred.succeed(closing, undefined)
          yield* logged("effect-grace: shutdown delay", { pid: os.pid, millis: Duration.toMillis(shutdownDelay) })
          yield* Effect.raceFirst(Effect.sleep(shutdownDelay), Deferred.await(forced))
        }
        yield* logged("effect-grace: draining", { pid: os.pid, reason })
        const started = yield* Clock.currentTimeMillis
        yield* Scope.close(appScope, Exit.void)
        if (reason === "terminate" && pidFile !== undefined) yield* os.removePidFile(pidFile)
        stoppedGracefully = !(yield* Deferred.isDone(forced))
        const drainMillis = (yield* Clock.currentTimeMillis) - started
        yield* logged("effect-grace: stopped", { pid: os.pid, reason, drainMillis })
      })
    )
    yield* Layer.buildWithScope(
      app.pipe(
        Layer.provide(Layer.succeed(Listeners.Listeners)(listeners)),
        Layer.provide(Layer.succeed(Supervisor)(supervisor)),
        Layer.provide(Layer.succeed(Tickets.TicketKeys)(ticketKeys)),
        Layer.provide(Layer.succeed(Health.Health)(health.health)),
        Layer.provide(Layer.succeed(DrainInternal.Closing)(Deferred.await(closing))),
        Layer.provide(Layer.succeed(DrainInternal.Forced)(Deferred.await(forced))),
        // GRACE_DRAIN_TIMEOUT and GRACE_IDLE_GRACE, for every server of the application.
        Layer.provide(Drain.layerConfig)
      ) as Layer.Layer<A, E | Config.ConfigError, Exclude<R, Listeners.Listeners | Supervisor | Health.Health>>,
      appScope
    )

    yield* listeners.closeUnclaimed
    if (pidFile !== undefined) yield* os.writePidFile(pidFile)
    if (parent !== undefined) yield* parent.signalReady
    else yield* Effect.ignore(notify.ready)
    const addresses = (yield* listeners.active).map((l) => Listeners.formatAddress(l.address))
    yield* dispatch({ _tag: "Ready" })
    // Unless a termination came first (the state moves under the other fibers' events).
    if ((state as Machine.State<Reply>)._tag === "Serving") health.setPhase("serving")
    yield* logged("effect-grace: ready", { pid: os.pid, listeners: addresses.join(", ") })
    return { stopped }
  })

type Errors<E> = E | ListenFds.ListenFdsError | Notify.NotifyError | Config.ConfigError

/**
 * The application `app` under the supervisor, as the layer a program
 * launches:
 *
 * ```ts
 * Layer.launch(Supervisor.layer(App)).pipe(NodeRuntime.runMain({ teardown: Supervisor.teardown }))
 * ```
 *
 * It builds `app` with `Listeners`, `Supervisor` and `Health` provided, says it is
 * ready once every layer of `app` is built, restarts on the restart signals
 * (`SIGUSR2`) and on `restart`, and drains on `SIGTERM`, `SIGINT`, a call to
 * `terminate`, or a hand-off, then ends the program by interrupting the fiber
 * that built it.
 *
 * **Details**
 *
 * - Ready means every server listens. Only then are unclaimed inherited fds
 *   closed, the PID file written, and the parent (after a restart) or
 *   systemd (`READY=1`) told.
 * - A successor receives its parent's TLS session ticket keys
 *   (`Server.TicketKeys`) over the private readiness channel before it builds
 *   `app`, so clients resume their TLS sessions across a restart.
 * - Every restart attempt, refused or failed ones too, is logged with its
 *   reason, is a span (`effect-grace.restart`) and counts in `metrics`.
 * - A termination during a restart wins: the successor is killed and reaped,
 *   and systemd hears `STOPPING=1`, never `MAINPID=` after it.
 * - A second termination signal during a drain ends the process at once: by
 *   its default action, or, as PID 1 (which no signal ends), by cutting every
 *   drain and the shutdown delay, so that the program finishes.
 * - `Health` turns unready when a termination begins; with `shutdownDelay`
 *   the servers go on serving for that long, every response saying
 *   `Connection: close`, before the drain.
 * - As PID 1 (a container's init) a restart is refused (`Unsupported`):
 *   when PID 1 exits, the kernel ends its successor with it. Termination
 *   drains and exits 0 there as anywhere.
 *
 * **Gotchas**
 *
 * - Launch this layer itself, with everything of the application inside
 *   `app`: merged beside other layers, it is built on a fiber of its own, and
 *   ending that fiber does not end the program.
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
): Layer.Layer<never, Errors<E>, Exclude<R, Listeners.Listeners | Supervisor | Health.Health>> =>
  Layer.effectDiscard(
    Effect.withFiber((main) =>
      Report.startupFailure(
        Effect.gen(function* () {
          const { stopped } = yield* supervise(app, options)
          // Once stopping, the program ends: the launching fiber's scope closing is the drain.
          yield* Effect.forkScoped(
            Effect.andThen(
              Deferred.await(stopped),
              Effect.sync(() => main.interruptUnsafe())
            )
          )
        })
      )
    )
  ) as Layer.Layer<never, Errors<E>, Exclude<R, Listeners.Listeners | Supervisor | Health.Health>>

/**
 * Runs `app` under the supervisor as an Effect that returns once the drain
 * after a termination or a hand-off is done: the same supervisor as `layer`,
 * for a program that does more after it, or a test.
 *
 * @since 0.1.0
 * @category running
 */
export const run = <A, E, R>(
  app: Layer.Layer<A, E, R>,
  options: Options = {}
): Effect.Effect<void, Errors<E>, Exclude<R, Listeners.Listeners | Supervisor | Health.Health>> =>
  Report.startupFailure(
    Effect.scoped(Effect.flatMap(supervise(app, options), ({ stopped }) => Effect.asVoid(Deferred.await(stopped))))
  ) as Effect.Effect<void, Errors<E>, Exclude<R, Listeners.Listeners | Supervisor | Health.Health>>

/**
 * The teardown for `NodeRuntime.runMain` (or any `Runtime.makeRunMain`): exit
 * code 0 once the supervisor has drained after a termination or a hand-off
 * (the main fiber then ends interrupted, which the default teardown counts as
 * 130), 1 for a failure, and the default teardown's codes otherwise.
 *
 * @since 0.1.0
 * @category running
 */
export const teardown: Runtime.Teardown = (exit, onExit) => {
  if (stoppedGracefully && (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause))) return onExit(0)
  return Runtime.defaultTeardown(exit, onExit)
}

/**
 * A `Supervisor` for testing an application's own code (an admin endpoint
 * that restarts, for example) without processes: `restart` answers as given
 * (by default a successor's pid, 1), and every call is recorded in `calls`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerTest = (
  options: {
    readonly restart?: Effect.Effect<number, RestartError> | undefined
    readonly parentPid?: number | undefined
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
      parentPid: Effect.succeed(Option.fromUndefinedOr(options.parentPid))
    })
  )
