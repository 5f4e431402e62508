/**
 * A restart of this process, both ends. The parent's, as the interpreter
 * carries out the machine's actions for it: the successor started with every
 * listening socket this process holds (a primary's, every socket its workers
 * accept on), its readiness waited for, its probation (this process paused,
 * ready to take the service back), and the hand-off or the hand-back. The
 * successor's: its readiness told to its predecessor (or else to systemd),
 * the predecessor's exit heard, and the restarts it passes on carried out.
 * The same for a single process and for a primary; a worker never restarts
 * itself.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberHandle from "effect/FiberHandle"
import * as Metric from "effect/Metric"
import * as FiberSet from "effect/FiberSet"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import * as Scope from "effect/Scope"
import * as Child from "./child.ts"
import { ExitedBeforeReady, HandedBack, NotReadyInTime, reasonToData, SpawnFailed } from "./errors.ts"
import * as Requests from "./requests.ts"
import { metrics } from "./metrics.ts"
import type * as Parent from "./parent.ts"
import type { Action, Failure, Supervision } from "./supervision.ts"
import { cacheEnv, log, refuse, send } from "./supervision.ts"
import * as Tickets from "./tickets.ts"

// Ready within the timeout (an Effect timer: a TestClock drives it), with how long it took, or why not.
const awaitReady = (supervision: Supervision, successor: Child.Child, spawned: number) =>
  successor.ready.pipe(
    Effect.mapError((exit): Failure => new ExitedBeforeReady(exit)),
    Effect.timeoutOrElse({
      duration: supervision.settings.readyTimeout,
      orElse: () => Effect.fail<Failure>(new NotReadyInTime({ timeout: supervision.settings.readyTimeout }))
    }),
    Effect.andThen(Clock.currentTimeMillis),
    Effect.flatMap((now) => Metric.update(metrics.handOff, Duration.millis(now - spawned)))
  )

/**
 * The restart: spawn, wait for ready, tell the machine. The successor is the machine's once it is ready and told;
 * one that fails, times out or is interrupted before that is killed here.
 */
export const restart = (supervision: Supervision): Effect.Effect<void> =>
  Effect.gen(function* () {
    const { os, keyring } = supervision
    const passed = yield* supervision.role.passedOn(supervision)
    yield* log(supervision, "effect-grace: restart started", { listeners: passed.length })
    const spawned = yield* Clock.currentTimeMillis
    const options = { passed, ticketKey: Tickets.encode(yield* keyring.current), env: cacheEnv(supervision) }
    const start = Child.start(os, options).pipe(
      Scope.provide(supervision.scope),
      Effect.mapError((failure): Failure => new SpawnFailed({ cause: failure.cause })),
      Effect.catchDefect((cause) => Effect.fail<Failure>(new SpawnFailed({ cause })))
    )
    const outcome = yield* Effect.acquireUseRelease(
      start,
      (successor) =>
        log(supervision, "effect-grace: successor started", { successor: successor.pid }).pipe(
          Effect.andThen(awaitReady(supervision, successor, spawned)),
          Effect.andThen(send(supervision, { _tag: "SuccessorReady", successor, pid: successor.pid }))
        ),
      (successor, exit) => (Exit.isSuccess(exit) ? Effect.void : successor.kill)
    ).pipe(Effect.result)
    if (outcome._tag === "Failure") yield* send(supervision, { _tag: "RestartFailed", failure: outcome.failure })
  }).pipe(
    // A defect of the restart's own work is a failed restart too: the machine never waits on a restart that died.
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.failCause(cause)
        : send(supervision, { _tag: "RestartFailed", failure: new SpawnFailed({ cause: Cause.squash(cause) }) })
    ),
    Effect.withSpan("effect-grace.restart.successor")
  )

// The successor replaces this process: at once, or once its probation has passed (READY=1 was said then).
const handOff = (supervision: Supervision, action: Extract<Action, { readonly _tag: "HandOff" }>) =>
  Effect.gen(function* () {
    // From here on the successor serves too: this process must not unlink what it hands on.
    yield* supervision.listeners.handOff
    yield* Effect.ignore(supervision.notify.mainPid(action.pid, { ready: action.ready }))
    const message = action.ready ? "effect-grace: successor ready" : "effect-grace: probation over"
    yield* log(supervision, message, { successor: action.pid })
    yield* log(supervision, "effect-grace: restarted", {
      kind: "upgrade",
      successor: action.pid,
      millis: action.millis
    })
    yield* Effect.forEach(action.replies, (reply) => Deferred.succeed(reply, action.pid), { discard: true })
  })

// The successor serves too; systemd hears that the reload is over, but its main process stays this one for now. The
// listeners are this process's still (a unix path is unlinked if it ends with its successor, in a termination).
const beginProbation = (supervision: Supervision, pid: number) =>
  Effect.gen(function* () {
    yield* Effect.ignore(supervision.notify.ready)
    const probation = supervision.settings.probation
    yield* log(supervision, "effect-grace: successor ready", {
      successor: pid,
      probationMillis: Duration.toMillis(probation)
    })
    yield* FiberHandle.run(
      supervision.fibers.probation,
      Effect.andThen(Effect.sleep(probation), send(supervision, { _tag: "ProbationOver" }))
    )
  })

const watch = (supervision: Supervision, successor: Child.Child) =>
  FiberHandle.run(
    supervision.fibers.watching,
    Effect.flatMap(successor.exited, ({ pid, code, signal }) =>
      send(supervision, { _tag: "SuccessorExited", pid, code, signal })
    )
  )

// The successor died within its window: accept again at once (what arrived meanwhile waits in the shared backlog),
// and name this process again wherever the successor was named.
const handBack = (supervision: Supervision, action: Extract<Action, { readonly _tag: "HandBack" }>) =>
  Effect.gen(function* () {
    yield* FiberHandle.clear(supervision.fibers.probation)
    yield* supervision.gate.resume
    const { os, notify, role } = supervision
    if (role.pidFile !== undefined) yield* os.writePidFile(role.pidFile)
    const reason = new HandedBack({ pid: action.pid, code: action.code, signal: action.signal })
    yield* Effect.ignore(notify.status(`serving again: ${reason.message}`))
    yield* refuse(supervision, action.replies, reason)
  })

/** The machine's actions for a restart, carried out. */
export const perform = (
  supervision: Supervision,
  action: Extract<
    Action,
    {
      readonly _tag:
        | "StartRestart"
        | "InterruptRestart"
        | "ReleaseSuccessor"
        | "KillSuccessor"
        | "HandOff"
        | "BeginProbation"
        | "WatchSuccessor"
        | "HandBack"
        | "ConfirmSuccessor"
        | "TerminateSuccessor"
    }
  >
): Effect.Effect<void> => {
  const { fibers } = supervision
  switch (action._tag) {
    case "StartRestart":
      return Effect.asVoid(FiberHandle.run(fibers.restarting, restart(supervision)))
    case "InterruptRestart":
      return FiberHandle.clear(fibers.restarting)
    case "ReleaseSuccessor":
      return Effect.andThen(FiberHandle.clear(fibers.watching), action.successor.release)
    case "KillSuccessor":
      return action.successor.kill
    case "HandOff":
      return handOff(supervision, action)
    case "BeginProbation":
      return beginProbation(supervision, action.pid)
    case "WatchSuccessor":
      return Effect.asVoid(watch(supervision, action.successor))
    case "HandBack":
      return handBack(supervision, action)
    case "ConfirmSuccessor":
      return Effect.suspend(() =>
        action.successor.alive() ? send(supervision, { _tag: "SuccessorAlive" }) : Effect.void
      )
    case "TerminateSuccessor":
      // It ends by itself, gracefully; this process does not wait for it.
      return Effect.asVoid(
        Effect.all([FiberHandle.clear(fibers.watching), action.successor.terminate, action.successor.release])
      )
  }
}

// -----------------------------------------------------------------------------
// The successor's end
// -----------------------------------------------------------------------------

/** Ready is told to the predecessor after a restart (which then hands off), or else to systemd. */
export const tellReady = (supervision: Supervision): Effect.Effect<void> =>
  supervision.role.predecessor?.signalReady ?? Effect.ignore(supervision.notify.ready)

// A restart the predecessor passed on (asked of it once this process served): carried out here, its outcome
// answered.
const carryOut = (supervision: Supervision, predecessor: Parent.Parent) => (passed: Parent.Passed) =>
  Effect.asVoid(
    FiberSet.run(
      supervision.fibers.passedOn,
      Requests.requestRestart(supervision, "parent", passed.kind, true).pipe(
        Effect.result,
        Effect.flatMap((outcome) =>
          predecessor.restarted(
            passed.ask,
            Result.mapError(outcome, (error) => reasonToData(error.reason))
          )
        )
      )
    )
  )

/** The predecessor a successor took over from: its exit, and the restarts it passes on. */
export const listenToPredecessor = (supervision: Supervision): Effect.Effect<void, never, Scope.Scope> => {
  const predecessor = supervision.role.predecessor
  if (predecessor === undefined) return Effect.void
  const passedOn = Effect.forever(Effect.flatMap(Queue.take(predecessor.restarts), carryOut(supervision, predecessor)))
  return Effect.asVoid(
    Effect.all([
      Effect.forkScoped(Effect.andThen(predecessor.exited, send(supervision, { _tag: "ParentExited" }))),
      Effect.forkScoped(Effect.catch(passedOn, () => Effect.void))
    ])
  )
}
