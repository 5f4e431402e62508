/**
 * Zero-downtime restarts: a running program replaces itself with a new process
 * of the same program (new code, new configuration, new certificates) without
 * refusing or dropping a connection, and terminates gracefully.
 *
 * `run(app)` builds the application's layers (its servers) on Listeners, says
 * it is ready, and waits. On the restart signal (`SIGUSR2` by default) or a
 * call to `restart`, it starts a successor with every active listener as fds
 * 3.. (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`), waits until the
 * successor's own servers listen, and only then closes its application scope:
 * the servers drain as finalizers, and `run` returns. On `SIGTERM` or `SIGINT`
 * it drains the same way.
 *
 * Invariants, as cloudflare/tableflip keeps them:
 * - One restart at a time; none before this process is ready, none while its
 *   own parent is still draining, none once it is draining itself.
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
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import { renameSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import * as ListenFds from "./ListenFds.ts"
import * as Listeners from "./Listeners.ts"
import * as Notify from "./Notify.ts"
import * as Variables from "./internal/config.ts"
import * as Drain from "./Drain.ts"
import * as Report from "./internal/report.ts"
import * as Successor from "./internal/successor.ts"
import * as Sys from "./internal/sys.ts"
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
 * This platform cannot restart in place: handing the listeners to a
 * successor needs native calls that are not available (not Linux, or koffi
 * not installed). `detail` says which. Stop and start the program instead.
 *
 * @since 0.1.0
 * @category errors
 */
export class Unsupported extends Data.TaggedError("Unsupported")<{
  readonly platform: string
  readonly detail: string
}> {
  override get message(): string {
    return `restarting in place needs native calls that are not available here: ${this.detail}; stop and start the program instead`
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
}

/**
 * The defaults of `Options`, read through `Config`: `GRACE_READY_TIMEOUT`
 * (a duration such as `30 seconds`) and `GRACE_PID_FILE`. Values given in
 * `Options` win.
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<{
  readonly readyTimeout: Option.Option<Duration.Duration>
  readonly pidFile: Option.Option<string>
}> = Config.all({
  readyTimeout: Variables.duration("GRACE_READY_TIMEOUT"),
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

type State = "starting" | "serving" | "restarting" | "draining"

const fromFailure = (failure: Successor.Failure): RestartErrorReason => {
  switch (failure._tag) {
    case "SpawnFailed":
      return new SpawnFailed({ cause: failure.cause })
    case "ExitedBeforeReady":
      return new ExitedBeforeReady({ pid: failure.pid, code: failure.code, signal: failure.signal })
    case "NotReadyInTime":
      return new NotReadyInTime({ timeout: failure.timeout })
  }
}

const writePidFile = (path: string) =>
  Effect.sync(() => {
    // Written to a temporary file and renamed, so a reader never sees a partial pid.
    const temp = join(dirname(path), `.${process.pid}.${Date.now()}.pid.tmp`)
    writeFileSync(temp, `${process.pid}\n`)
    renameSync(temp, path)
  })

const removePidFileIfOurs = (path: string) =>
  Effect.sync(() => {
    try {
      if (readFileSync(path, "utf8").trim() === String(process.pid)) rmSync(path, { force: true })
    } catch {
      // Gone already.
    }
  })

/**
 * The supervisor's metrics: `effect-grace.restarts`, a counter of restart
 * attempts by `outcome` (`ready`, or the reason's tag: `SpawnFailed`,
 * `AlreadyInProgress`, ...), and `effect-grace.restart.handoff`, the time from
 * spawning a successor to its being ready. Each attempt is also a span,
 * `effect-grace.restart`, with `effect-grace.outcome` and, once spawned,
 * `effect-grace.successor.pid`. The servers' drains have their own
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

/**
 * Runs an application under the supervisor: builds `app` with `Listeners`
 * (from the environment) and `Supervisor` provided, says it is ready, serves
 * until a restart hands over or a termination signal arrives, then closes the
 * application's scope (the servers drain) and returns.
 *
 * **When to use**
 *
 * As the main effect of a server program, usually through `runMain`. The
 * application is a layer: its servers (`Server.layer`, `SocketServer.layer`)
 * and whatever they need.
 *
 * **Details**
 *
 * - A successor receives its parent's TLS session ticket keys
 *   (`Server.TicketKeys`) over the private readiness channel before it builds
 *   `app`, so clients resume their TLS sessions across a restart.
 * - Ready means every layer of `app` is built: every server listens. Only then
 *   are unclaimed inherited fds closed, the PID file written, and the parent
 *   (after a restart) or systemd (`READY=1`) told.
 * - A restart signal that arrives while a restart is under way, before this
 *   process is ready, while its parent still drains or while it drains itself
 *   is refused and logged; a programmatic `restart` fails with the reason.
 * - `run` handles `SIGTERM` and `SIGINT` itself and returns normally after the
 *   drain, so the process exits 0. A second one during the drain re-raises
 *   the signal with its default action, which ends the process at once.
 *
 * **Gotchas**
 *
 * The successor is `process.execPath` with `process.execArgv` and
 * `process.argv`: start the program as `node main.ts`, not through `npm run`,
 * or the restarted process is npm's child and `LISTEN_PID` names npm.
 *
 * @since 0.1.0
 * @category running
 */
export const run = <A, E, R>(
  app: Layer.Layer<A, E, R>,
  options: Options = {}
): Effect.Effect<
  void,
  E | ListenFds.ListenFdsError | Notify.NotifyError | Config.ConfigError,
  Exclude<R, Listeners.Listeners | Supervisor>
> =>
  // The application's requirements other than Listeners and Supervisor come from the caller.
  Report.startupFailure(
    Effect.scoped(
      Effect.gen(function* () {
        const command = Successor.selfCommand()
        const configured = yield* config
        const readyTimeout = Duration.fromInputUnsafe(
          options.readyTimeout ?? Option.getOrElse(configured.readyTimeout, () => Duration.seconds(60))
        )
        const pidFile = Option.map(
          Option.fromUndefinedOr(options.pidFile).pipe(Option.orElse(() => configured.pidFile)),
          (p) => resolve(p)
        )
        const restartSignals = options.restartSignals ?? ["SIGUSR2"]

        const readyFd = yield* Config.option(Config.Int(Successor.READY_FD_VARIABLE))
        const sendsTicketKeys = yield* Config.option(Config.String(Successor.TICKET_KEYS_VARIABLE))
        delete process.env[Successor.READY_FD_VARIABLE]
        delete process.env[Successor.TICKET_KEYS_VARIABLE]
        const inherited = yield* ListenFds.make()
        const listeners = yield* Listeners.make(inherited)
        const notify = yield* Notify.make
        const parent = yield* Successor.openParentChannel(
          Option.getOrUndefined(readyFd),
          Option.getOrUndefined(sendsTicketKeys) === "channel"
        )
        // TLS sessions resume across restarts: the keys of the first generation, handed down.
        const ticketKeys = (parent !== undefined ? yield* parent.ticketKeys : undefined) ?? (yield* Tickets.TicketKeys)

        let state: State = "starting"
        const stop = yield* Deferred.make<"terminate" | "handoff">()
        const services = yield* Effect.context<never>()

        const warn = (error: RestartError) =>
          Effect.logWarning(`effect-grace: ${error.message}`).pipe(
            Effect.annotateLogs({ pid: process.pid, reason: error.reason._tag })
          )
        const attempt: Effect.Effect<number, RestartError> = Effect.suspend(() => {
          // A refusal is logged as a failure is, whoever asked.
          const refuse = (reason: RestartErrorReason) => {
            const error = new RestartError({ reason })
            return Effect.andThen(warn(error), Effect.fail(error))
          }
          if (state === "restarting") return refuse(new AlreadyInProgress())
          if (state === "starting" || state === "draining") return refuse(new NotServing({ state }))
          if (parent !== undefined && parent.isAlive()) return refuse(new ParentStillRunning({ parentPid: parent.pid }))
          const native = Sys.native()
          if (!native.available) return refuse(new Unsupported({ platform: native.platform, detail: native.reason }))
          state = "restarting"
          return Effect.gen(function* () {
            // With the native calls, every listener has a fd.
            const passed = (yield* listeners.active).flatMap((l) =>
              l.fd === undefined ? [] : [{ fd: l.fd, name: l.name }]
            )
            yield* logged("effect-grace: restart started", { pid: process.pid, listeners: passed.length })
            yield* Effect.ignore(notify.reloading)
            const started = Date.now()
            const successor = yield* Successor.spawnSuccessor({
              command,
              passed,
              env: process.env,
              readyTimeout,
              ticketKeys
            }).pipe(Effect.mapError((failure) => new RestartError({ reason: fromFailure(failure) })))
            // From here on the successor serves too: this process must not unlink what it hands on.
            yield* listeners.handOff
            state = "draining"
            yield* Effect.ignore(notify.mainPid(successor.pid, { ready: true }))
            yield* Metric.update(metrics.handOff, Duration.millis(Date.now() - started))
            yield* Effect.annotateCurrentSpan("effect-grace.successor.pid", successor.pid)
            yield* logged("effect-grace: successor ready", { pid: process.pid, successor: successor.pid })
            yield* Deferred.succeed(stop, "handoff")
            return successor.pid
          }).pipe(
            Effect.tapError((error) =>
              Effect.gen(function* () {
                state = "serving"
                yield* Effect.ignore(notify.ready)
                yield* warn(error)
              })
            ),
            Effect.onInterrupt(() =>
              Effect.sync(() => {
                if (state === "restarting") state = "serving"
              })
            )
          )
        })

        // Every attempt, refused or not, is a span and counts by its outcome.
        const restart: Effect.Effect<number, RestartError> = attempt.pipe(
          Effect.onExit((exit) => {
            const outcome = Exit.isSuccess(exit)
              ? "ready"
              : Option.match(Cause.findErrorOption(exit.cause), {
                  onNone: () => "interrupted",
                  onSome: (error) => error.reason._tag
                })
            return Effect.andThen(
              Effect.annotateCurrentSpan("effect-grace.outcome", outcome),
              Metric.update(Metric.withAttributes(metrics.restarts, { outcome }), 1)
            )
          }),
          Effect.withSpan("effect-grace.restart", { attributes: { "effect-grace.pid": process.pid } })
        )

        const terminate = Effect.gen(function* () {
          if (state === "draining") return
          state = "draining"
          yield* Effect.ignore(notify.stopping)
          yield* Deferred.succeed(stop, "terminate")
        })

        const supervisor = Supervisor.of({
          restart,
          terminate,
          parentPid: Effect.sync(() =>
            parent !== undefined && parent.isAlive() ? Option.some(parent.pid) : Option.none()
          )
        })

        // Signals: installed first, so a termination during start-up is not lost.
        const runFork = Effect.runForkWith(services)
        let terminations = 0
        const onTerminate = (signal: NodeJS.Signals) => {
          terminations++
          if (terminations > 1) {
            // A second termination signal during the drain: the signal's default action, at once.
            removeHandlers()
            process.kill(process.pid, signal)
            return
          }
          runFork(
            Effect.andThen(logged("effect-grace: termination requested", { pid: process.pid, signal }), terminate)
          )
        }
        const onRestart = (signal: NodeJS.Signals) => {
          runFork(
            Effect.andThen(
              logged("effect-grace: restart requested", { pid: process.pid, signal }),
              Effect.ignore(restart)
            )
          )
        }
        const removeHandlers = () => {
          process.off("SIGTERM", onTerminate)
          process.off("SIGINT", onTerminate)
          for (const signal of restartSignals) process.off(signal, onRestart)
        }
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            process.on("SIGTERM", onTerminate)
            process.on("SIGINT", onTerminate)
            for (const signal of restartSignals) process.on(signal, onRestart)
          }),
          () => Effect.sync(removeHandlers)
        )

        // The application: its servers listen once its layers are built, and drain when its scope closes.
        const appScope = yield* Scope.make()
        yield* Effect.addFinalizer((exit) => Scope.close(appScope, exit))
        yield* Layer.buildWithScope(
          app.pipe(
            Layer.provide(Layer.succeed(Listeners.Listeners)(listeners)),
            Layer.provide(Layer.succeed(Supervisor)(supervisor)),
            Layer.provide(Layer.succeed(Tickets.TicketKeys)(ticketKeys)),
            // GRACE_DRAIN_TIMEOUT and GRACE_IDLE_GRACE, for every server of the application.
            Layer.provide(Drain.layerConfig)
          ) as Layer.Layer<A, E | Config.ConfigError, Exclude<R, Listeners.Listeners | Supervisor>>,
          appScope
        )

        yield* listeners.closeUnclaimed
        if (Option.isSome(pidFile)) yield* writePidFile(pidFile.value)
        if (parent !== undefined) {
          yield* parent.signalReady
        } else {
          yield* Effect.ignore(notify.ready)
        }
        if (state === "starting") state = "serving"
        const addresses = (yield* listeners.active).map((l) => Listeners.formatAddress(l.address))
        yield* logged("effect-grace: ready", { pid: process.pid, listeners: addresses.join(", ") })

        const reason = yield* Deferred.await(stop)
        yield* logged("effect-grace: draining", { pid: process.pid, reason })
        const started = Date.now()
        yield* Scope.close(appScope, Exit.void)
        if (reason === "terminate" && Option.isSome(pidFile)) yield* removePidFileIfOurs(pidFile.value)
        yield* logged("effect-grace: stopped", { pid: process.pid, reason, drainMillis: Date.now() - started })
      })
    )
  ) as Effect.Effect<
    void,
    E | ListenFds.ListenFdsError | Notify.NotifyError | Config.ConfigError,
    Exclude<R, Listeners.Listeners | Supervisor>
  >

/**
 * Runs an effect, usually `run(app)`, as the main program of the process: the
 * exit code is 0 when it succeeds (after a graceful termination or a
 * hand-off) and 1 when it fails (for example, the application could not
 * start). Unlike `NodeRuntime.runMain`, it installs no signal handlers (`run`
 * has its own) and never calls `process.exit`: the process ends when its work
 * is done.
 *
 * @example
 * ```ts
 * Supervisor.run(App).pipe(Supervisor.runMain)
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const runMain = Runtime.makeRunMain(({ fiber, teardown }) => {
  fiber.addObserver((exit) => {
    teardown(exit, (code) => {
      process.exitCode = code
    })
  })
})
