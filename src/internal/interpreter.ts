/**
 * The supervisor's machine (machine.ts) at run time: its loop (loop.ts), the
 * interpreter of its actions, and the events that reach it from outside
 * (signals, calls, the application's start-up). The same for every role;
 * what a role changes, it says through its `Role` (supervision.ts). A
 * restart's own actions are in upgrade.ts.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberHandle from "effect/FiberHandle"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as PubSub from "effect/PubSub"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { formatAddress } from "./address.ts"
import { NotServing, reasonFromData, RestartError, RestartUnsupported, SpawnFailed } from "./errors.ts"
import type { RestartErrorReason } from "./errors.ts"
import * as Gate from "./gate.ts"
import * as Loop from "./loop.ts"
import * as Machine from "./machine.ts"
import { metrics } from "./metrics.ts"
import type { Action, Event, Fibers, LastRestart, Line, State, Supervision, Taken } from "./supervision.ts"
import { log, refuse, send } from "./supervision.ts"
import * as Upgrade from "./upgrade.ts"

// -----------------------------------------------------------------------------
// The actions
// -----------------------------------------------------------------------------

// Ready means every server listens: only then are unclaimed inherited fds closed, the PID file written, and the
// parent (after a restart), the primary or systemd told.
const announceReady = (supervision: Supervision) =>
  Effect.gen(function* () {
    const { os, listeners, role } = supervision
    if (!role.holdsUnclaimed) yield* listeners.closeUnclaimed
    // What this process compiled, for its successors to read. Writing it blocks for tens of milliseconds: before
    // the parent is told, while it still accepts (measured: 72-140 ms from ready to the first answer when after).
    if (supervision.compileCache !== undefined) os.flushCompileCache()
    if (role.pidFile !== undefined) yield* os.writePidFile(role.pidFile)
    yield* role.tellReady(supervision)
    // A primary's listeners are also those it inherited for its workers, a socket per worker: each address once.
    const held = role.holdsUnclaimed ? yield* listeners.unclaimed : []
    const addresses = [...(yield* listeners.active), ...held].map((l) => formatAddress(l.address))
    const listening = [...new Set(addresses)].join(", ")
    yield* log(supervision, "effect-grace: ready", { listeners: listening, ...role.unavailable })
  })

// Every slot has a new worker: systemd hears that the reload is over, the callers that the primary serves on.
const rolled = (supervision: Supervision, action: Extract<Action, { readonly _tag: "RollDone" }>) =>
  Effect.gen(function* () {
    yield* Effect.ignore(supervision.notify.ready)
    const workers = action.workers.map(({ slot, pid }) => `${slot}:${pid}`).join(", ")
    yield* log(supervision, "effect-grace: restarted", { kind: "roll", workers, millis: action.millis })
    yield* Effect.forEach(action.replies, (reply) => Deferred.succeed(reply, action.pid), { discard: true })
  })

// A restart that waits for the one under way: said, and counted.
const queued = (supervision: Supervision, action: Extract<Action, { readonly _tag: "Queue" }>) =>
  Effect.andThen(
    log(supervision, "effect-grace: restart queued", { kind: action.kind, waitingFor: action.waitingFor }),
    Metric.update(Metric.withAttributes(metrics.queued, { kind: action.kind }), 1)
  )

// A restart asked of this process once it has handed off (or kept until then): its successor serves now, and carries
// it out. The callers are answered with its outcome there, for as long as this process lives.
const forward = (supervision: Supervision, action: Extract<Action, { readonly _tag: "Forward" }>) => {
  const { successor, kind, replies } = action
  const answer = successor.restart(kind).pipe(
    Effect.matchEffect({
      onSuccess: (pid) =>
        Effect.andThen(
          log(supervision, "effect-grace: restarted", { kind, successor: pid, passedOn: successor.pid }),
          Effect.forEach(replies, (reply) => Deferred.succeed(reply, pid), { discard: true })
        ),
      onFailure: (failure) =>
        refuse(
          supervision,
          replies,
          failure === undefined ? new NotServing({ state: "draining" }) : reasonFromData(failure)
        )
    })
  )
  return Effect.andThen(
    log(supervision, "effect-grace: restart passed on", { kind, successor: successor.pid }),
    FiberSet.run(supervision.fibers.passedOn, answer)
  )
}

// Unready already; the servers go on serving for the delay, every response saying Connection: close.
const beginDelay = (supervision: Supervision) => {
  const delay = supervision.settings.shutdownDelay
  const over = Effect.andThen(
    Effect.raceFirst(Effect.sleep(delay), forced(supervision)),
    send(supervision, { _tag: "DelayOver" })
  )
  return Effect.andThen(
    log(supervision, "effect-grace: shutdown delay", { millis: Duration.toMillis(delay) }),
    FiberHandle.run(supervision.fibers.delaying, over)
  )
}

// The servers drain as the finalizers of the application's scope. One of the application's that fails is logged with
// its cause: the drain is over all the same, and the process ends.
const beginDrain = (supervision: Supervision, reason: Machine.Reason) => {
  const drain = Effect.gen(function* () {
    yield* log(supervision, "effect-grace: draining", { reason })
    const started = yield* Clock.currentTimeMillis
    const closed = yield* Effect.exit(Scope.close(supervision.appScope, Exit.void))
    if (Exit.isFailure(closed) && !Cause.hasInterruptsOnly(closed.cause)) {
      yield* Effect.logError("effect-grace: a finalizer of the application failed", closed.cause).pipe(
        Effect.annotateLogs(supervision.role.annotations)
      )
    }
    yield* send(supervision, { _tag: "Drained", millis: (yield* Clock.currentTimeMillis) - started })
  })
  return FiberHandle.run(supervision.fibers.draining, drain)
}

// Where the runtime allows, the process ends here; elsewhere every drain is cut (the state says forced), and the
// program finishes.
const forceExit = (supervision: Supervision, signal: string) =>
  Effect.logWarning("effect-grace: a second termination signal; exiting at once").pipe(
    Effect.annotateLogs({ ...supervision.role.annotations, signal }),
    Effect.andThen(supervision.os.forceExit(signal))
  )

const finish = (supervision: Supervision, action: Extract<Action, { readonly _tag: "Finish" }>) =>
  Effect.gen(function* () {
    const { reason, millis } = action
    const pidFile = supervision.role.pidFile
    if (reason === "terminate" && pidFile !== undefined) yield* supervision.os.removePidFile(pidFile)
    if (reason !== "failed") yield* log(supervision, "effect-grace: stopped", { reason, drainMillis: millis })
  })

const refusalReason = (supervision: Supervision, refusal: Machine.Refusal): RestartErrorReason => {
  switch (refusal._tag) {
    case "NotServing":
      return new NotServing({ state: refusal.state })
    case "RestartUnsupported":
      return refusal.kind === "upgrade" && supervision.handOffBlocked !== undefined
        ? supervision.handOffBlocked
        : new RestartUnsupported({
            platform: process.platform,
            detail: "only a primary (GRACE_WORKERS) restarts workers one at a time"
          })
  }
}

const perform =
  (supervision: Supervision) =>
  (action: Action): Effect.Effect<void> => {
    const { notify, fibers, gate } = supervision
    switch (action._tag) {
      case "Log":
        return log(supervision, action.message, action.annotations)
      case "AnnounceReady":
        return announceReady(supervision)
      case "Refuse":
        return refuse(supervision, action.replies, refusalReason(supervision, action.refusal))
      case "Queue":
        return queued(supervision, action)
      case "Forward":
        return Effect.asVoid(forward(supervision, action))
      case "NotifyReloading":
        return Effect.ignore(notify.reloading)
      case "StartRoll":
        return supervision.role.roll
      case "RollDone":
        return rolled(supervision, action)
      case "ResumeServing":
        return gate.resume
      case "PauseServing":
        return Effect.asVoid(FiberSet.run(fibers.pauses, gate.pause))
      case "RestartFailed":
        return Effect.andThen(Effect.ignore(notify.ready), refuse(supervision, action.replies, action.failure))
      case "NotifyStopping":
        return Effect.ignore(notify.stopping)
      case "InterruptStartup":
        return FiberHandle.clear(fibers.startup)
      case "BeginDelay":
        return Effect.asVoid(beginDelay(supervision))
      case "BeginDrain":
        return Effect.asVoid(beginDrain(supervision, action.reason))
      case "ForceExit":
        return forceExit(supervision, action.signal)
      case "CloseApplication":
        return Scope.close(supervision.appScope, Exit.void)
      case "Finish":
        return finish(supervision, action)
      default:
        return Upgrade.perform(supervision, action)
    }
  }

// -----------------------------------------------------------------------------
// What others see of the state
// -----------------------------------------------------------------------------

/** Completes once a second termination signal has forced the end. */
export const forced = (supervision: Supervision): Effect.Effect<void> =>
  Effect.asVoid(supervision.loop.when((state) => (Machine.isForced(state) ? true : undefined)))

/** Completes once the shutdown delay has begun. */
export const closing = (supervision: Supervision): Effect.Effect<void> =>
  Effect.asVoid(supervision.loop.when((state) => (state.closing ? true : undefined)))

/** Whether the application has been ready: its servers' drains are worth reporting. */
export const served = (supervision: Supervision): Effect.Effect<boolean> =>
  Effect.map(supervision.loop.state, (state) => state.served)

/**
 * The readiness the probes see: unready as soon as the machine has decided it (a termination begins), ready only
 * once what makes it so is done (the parent, the primary or systemd told; the servers accepting again).
 */
export const readiness = (supervision: Supervision): Effect.Effect<Machine.Readiness> =>
  Effect.gen(function* () {
    const rules = supervision.role.rules
    const decided = Machine.readiness(yield* supervision.loop.state, rules)
    return decided === "serving" ? Machine.readiness(yield* supervision.loop.published, rules) : decided
  })

/**
 * Completes once the application is ready (or its start-up was cut by a termination, once that is over); fails
 * with the cause of a start-up that failed.
 */
export const started = (supervision: Supervision): Effect.Effect<void, unknown> =>
  Effect.flatMap(
    supervision.loop.when((state): Exit.Exit<void, unknown> | undefined => {
      if (state.served) return Exit.void
      if (state.phase._tag !== "Stopped") return undefined
      const failure = state.phase.failure
      return failure === undefined ? Exit.void : Exit.failCause(failure as Cause.Cause<unknown>)
    }),
    (exit) => exit
  )

/**
 * Once the supervision is over: the restarts passed on are answered, bounded by as long as a restart may take. A
 * successor answers its predecessor only once the restart it carried out is done, and the predecessor its callers
 * (a control client) only once that answer has come.
 */
export const answered = (supervision: Supervision): Effect.Effect<void> => {
  const { readyTimeout, probation } = supervision.settings
  const longest = Duration.sum(Duration.sum(readyTimeout, probation), Duration.seconds(10))
  return Effect.ignore(Effect.timeoutOption(FiberSet.awaitEmpty(supervision.fibers.passedOn), longest))
}

/** How the supervision ended: after a termination or a hand-off, or a start-up that failed; forced or not. */
export interface Outcome {
  readonly reason: Machine.Reason | "failed"
  readonly forced: boolean
}

/** Completes once the supervision is over. */
export const stopped = (supervision: Supervision): Effect.Effect<Outcome> =>
  supervision.loop.when((state) =>
    state.phase._tag === "Stopped" ? { reason: state.phase.reason, forced: state.phase.forced } : undefined
  )

// -----------------------------------------------------------------------------
// Events from outside
// -----------------------------------------------------------------------------

/** Builds what this process serves in its own scope, on a fiber the machine can interrupt; tells the machine how. */
export const startApplication = (supervision: Supervision, app: Layer.Layer<never, unknown>) => {
  const build = Layer.buildWithScope(supervision.role.serves(supervision, app), supervision.appScope).pipe(
    supervision.role.around,
    Effect.matchCauseEffect({
      onSuccess: () => send(supervision, { _tag: "Started" }),
      onFailure: (cause) => send(supervision, { _tag: "StartupFailed", cause })
    })
  )
  return FiberHandle.run(supervision.fibers.startup, build)
}

/** Signals, and the role's own events, for as long as the scope lives. */
const listen = (supervision: Supervision, signals: Stream.Stream<NodeJS.Signals>) =>
  Effect.andThen(
    Effect.forkScoped(Stream.runForEach(signals, (signal) => supervision.role.onSignal(supervision, signal))),
    supervision.role.listen(supervision)
  )

// -----------------------------------------------------------------------------
// Making one
// -----------------------------------------------------------------------------

const makeFibers = Effect.all({
  startup: FiberHandle.make(),
  restarting: FiberHandle.make(),
  delaying: FiberHandle.make(),
  draining: FiberHandle.make(),
  probation: FiberHandle.make(),
  watching: FiberHandle.make(),
  pauses: FiberSet.make(),
  requests: FiberSet.make<number, RestartError>(),
  passedOn: FiberSet.make()
}) satisfies Effect.Effect<Fibers, never, Scope.Scope>

// Once the loop has ended, a restart still asked for is refused.
const dropped = (event: Event) =>
  event._tag === "RestartRequested" && event.reply !== undefined
    ? Deferred.fail(event.reply, new RestartError({ reason: new NotServing({ state: "draining" }) }))
    : Effect.void

/** Makes the supervision in the current scope: its loop started, and the signals and the role's events heard. */
export const make = (
  taken: Taken & { readonly signals: Stream.Stream<NodeJS.Signals> }
): Effect.Effect<Supervision, never, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const appScope = yield* Scope.fork(scope, "sequential")
    const fibers = yield* makeFibers
    // Sliding: a control client that reads slowly misses old lines, never holds up the supervisor.
    const lines = yield* Effect.acquireRelease(PubSub.sliding<Line>(256), PubSub.shutdown)
    const startedAt = yield* Clock.currentTimeMillis
    const lastRestart = yield* Ref.make<LastRestart | undefined>(undefined)
    const { signals, ...resources } = taken
    const rules = taken.role.rules
    let supervision: Supervision | undefined
    const initial: Loop.Step<State, Action> = [Machine.initial(taken.role.predecessor?.pid), []]
    const loop = yield* Loop.make<State, Event, Action>(initial, (owned) => {
      supervision = {
        ...resources,
        loop: owned,
        scope,
        appScope,
        fibers,
        gate: Gate.make(),
        lines,
        startedAt,
        lastRestart
      }
      return {
        name: "supervisor",
        transition: (state, event, now) => Machine.transition(state, event, rules, now),
        perform: perform(supervision),
        failed: (action, cause) => ({
          _tag: "ActionFailed",
          action: action._tag,
          failure: new SpawnFailed({ cause: Cause.squash(cause) })
        }),
        dropped,
        annotations: taken.role.annotations
      }
    })
    yield* listen(supervision!, signals)
    return { ...supervision!, loop }
  })
