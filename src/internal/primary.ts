/**
 * The primary: it runs no application. It holds the listening sockets and
 * runs that many workers (group.ts), each the program running the
 * application on those sockets; it restarts them a slot at a time, and
 * replaces itself and its group as a single process replaces itself.
 *
 * - Signals: `SIGHUP` restarts its workers, a canary on probation then the
 *   other slots (a worker's `restart` asks the same); `SIGUSR2` and the
 *   restart signals replace the primary and its workers; `SIGTERM` and
 *   `SIGINT` terminate it.
 * - Rules: it hands off where the platform allows and rolls; no shutdown
 *   delay of its own (its workers keep it); a successor primary goes through
 *   the probation window, its workers paused meanwhile.
 * - A successor primary is given every socket its workers accept on, and
 *   adopts the group's sockets; each worker is started with its slot's.
 * - Ready (every worker ready) is told to its predecessor or to systemd.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { ExitedBeforeReady, HandedBack, SpawnFailed, WorkerFailed } from "./errors.ts"
import type { RestartUnsupported } from "./errors.ts"
import * as Group from "./group.ts"
import * as Interpreter from "./interpreter.ts"
import type * as Parent from "./parent.ts"
import type * as Pool from "./pool.ts"
import * as Program from "./program.ts"
import * as Requests from "./requests.ts"
import type { Settings } from "./settings.ts"
import { isOn } from "./settings.ts"
import type { Failure, Role, Supervision } from "./supervision.ts"
import { cacheEnv, log, send } from "./supervision.ts"
import * as Upgrade from "./upgrade.ts"

/** The signal that restarts a primary's workers, one slot at a time. */
export const ROLL_SIGNAL: NodeJS.Signals = "SIGHUP"

// A worker that failed in a roll, as the restart's failure.
const rollFailure = (failure: Pool.Failure): Failure =>
  failure._tag === "SpawnFailed"
    ? new SpawnFailed({ cause: failure.cause })
    : failure._tag === "HandedBack"
      ? new HandedBack(failure.exit)
      : new ExitedBeforeReady(failure.exit)

// A worker that failed before the group was first ready: the program does not start.
const startupFailure = (failure: Pool.Failure): WorkerFailed =>
  failure._tag === "SpawnFailed"
    ? new WorkerFailed({ slot: failure.slot, pid: undefined, code: null, signal: null, cause: failure.cause })
    : new WorkerFailed({ slot: failure.slot, ...failure.exit })

// What a worker's environment must not carry: systemd's socket and the PID file are the primary's, and a worker is
// told its role by its slot.
const workerEnv = (supervision: Supervision): Record<string, string | undefined> => ({
  NOTIFY_SOCKET: undefined,
  GRACE_PID_FILE: undefined,
  GRACE_WORKERS: undefined,
  GRACE_CONTROL: undefined,
  ...cacheEnv(supervision)
})

// The group, as the primary's application: built once every worker is ready; its scope's closing stops them. It
// pauses and resumes with the servers of a process (the primary's own probation, after a full upgrade).
const makeGroup = (supervision: Supervision, workers: number, held: (group: Group.Group) => void) =>
  Effect.gen(function* () {
    const { os, listeners, keyring, settings } = supervision
    const group = yield* Group.make({
      os,
      keyring,
      env: workerEnv(supervision),
      settings: {
        workers,
        surge: settings.surge,
        probation: settings.probation,
        readyTimeout: settings.readyTimeout,
        maxMemory: settings.maxMemory,
        maxMemoryGrace: settings.maxMemoryGrace
      },
      inherited: yield* listeners.unclaimed,
      // A primary binds with the native calls (its workers need them): its listeners always have their fd.
      listen: (spec) =>
        listeners.listen(spec).pipe(
          Effect.mapError((error) => error.reason),
          Effect.map((listener) => ({ fd: listener.fd!, name: listener.name, address: listener.address }))
        ),
      rolled: (outcome) =>
        send(
          supervision,
          outcome._tag === "RollDone"
            ? { _tag: "RollDone", pid: os.pid, workers: outcome.workers }
            : { _tag: "RollStopped", failure: rollFailure(outcome.failure) }
        ),
      requestRoll: Requests.requestInBackground(supervision, "worker", "roll"),
      forced: Interpreter.forced(supervision),
      log: (message, annotations) => log(supervision, message, annotations),
      annotations: supervision.role.annotations
    }).pipe(
      Effect.mapError((error) =>
        error._tag === "TooFewWorkers" || error._tag === "MemoryLimitTooLow" ? error : startupFailure(error)
      )
    )
    yield* supervision.gate.gate.register({ pause: group.pause, resume: group.resume })
    held(group)
  })

// The group, once its start-up has built it: written before the machine hears `Started`, read only by actions that
// follow (a roll, a restart's sockets), which nothing asks for sooner.
const built = (group: Group.Group | undefined): Effect.Effect<Group.Group> =>
  group === undefined ? Effect.die(new Error("effect-grace: the workers are not started yet")) : Effect.succeed(group)

// Every socket its workers accept on, and its own beside them (the control socket).
const passedOn = (supervision: Supervision, group: Group.Group) =>
  Effect.gen(function* () {
    const held = yield* group.held
    const own = (yield* supervision.listeners.active).flatMap((l) =>
      l.fd === undefined || held.some((h) => h.fd === l.fd) ? [] : [{ fd: l.fd, name: l.name }]
    )
    return [...held, ...own]
  })

export const make = (
  settings: Settings,
  workers: number,
  pid: number,
  predecessor: Parent.Parent | undefined,
  handOffBlocked: RestartUnsupported | undefined
): Role => {
  let group: Group.Group | undefined
  return {
    kind: "primary",
    binding: { remote: undefined, reusePort: true },
    predecessor,
    onSignal: (supervision, signal) =>
      signal === ROLL_SIGNAL
        ? Requests.requestInBackground(supervision, signal, "roll")
        : Program.TERMINATION_SIGNALS.includes(signal)
          ? Requests.terminate(supervision, "signal", signal)
          : Requests.requestInBackground(supervision, signal, "upgrade"),
    rules: {
      canHandOff: handOffBlocked === undefined,
      // Its workers keep the delay themselves (unready, `Connection: close`): its own would come twice.
      shutdownDelay: false,
      probation: isOn(settings.probation),
      canRoll: true,
      waitsForGroup: false
    },
    annotations: { pid },
    around: (effect) => effect,
    // Its rolls need no hand-off: only a full upgrade is out of reach.
    unavailable: handOffBlocked === undefined ? {} : { upgrades: "unavailable", reason: handOffBlocked.detail },
    pidFile: settings.pidFile,
    tellReady: Upgrade.tellReady,
    // It holds every inherited fd for its workers, which claim them.
    holdsUnclaimed: true,
    restart: (supervision) => Requests.requestRestart(supervision, undefined, "upgrade"),
    serves: (supervision) => Layer.effectDiscard(makeGroup(supervision, workers, (made) => void (group = made))),
    listen: Upgrade.listenToPredecessor,
    passedOn: (supervision) => Effect.flatMap(built(group), (made) => passedOn(supervision, made)),
    roll: Effect.suspend(() => Effect.flatMap(built(group), (made) => made.roll)),
    reload: (upgrade) => (upgrade ? "upgrade" : "roll"),
    workers: () => Effect.suspend(() => (group === undefined ? Effect.succeed([]) : group.workers)),
    worker: Option.none()
  }
}
