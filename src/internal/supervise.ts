/**
 * A supervision started: the settings read, the parent found, the role
 * chosen once (a single process, a primary or a worker), what the role
 * needs taken from the operating system and from the public services (the
 * listeners and systemd's notify socket, made by the caller, `Supervisor`),
 * the machine's loop started, and what this process serves built.
 * Closing the scope terminates it (a start-up or a restart under way is
 * cut) and waits until it has drained.
 */
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Control from "./control.ts"
import { LaunchError, RestartUnsupported } from "./errors.ts"
import * as Interpreter from "./interpreter.ts"
import * as Os from "./os.ts"
import * as Parent from "./parent.ts"
import * as Primary from "./primary.ts"
import * as Program from "./program.ts"
import * as Requests from "./requests.ts"
import { TICKET_KEYS_VARIABLE, WORKER_VARIABLE } from "./protocol.ts"
import * as Settings from "./settings.ts"
import * as Single from "./single.ts"
import type { Binding, Notifier, Role, Serving, Sockets, Supervision } from "./supervision.ts"
import type * as Sys from "./sys.ts"
import * as Tickets from "./tickets.ts"
import * as Worker from "./worker.ts"

/** The public services a supervision is made with, made by the caller. */
export interface Services<L extends Sockets, E1, E2> {
  /** The `Listeners` service over the fds passed in, binding as the role says. */
  readonly listeners: (binding: Binding) => Effect.Effect<L, E1>
  /** The `Notify` service. */
  readonly notify: Effect.Effect<Notifier, E2>
  /** Serving a listener: `Listeners`' own functions. */
  readonly serving: Serving
}

const PID_1 =
  "this process is PID 1 (a container's init), and when it exits the kernel ends every process of its " +
  "PID namespace, the successor too; replace the container instead (a rolling update)"

/**
 * The signals every process of the service takes, from its start: whatever it is, none of them takes its default
 * action (`SIGHUP` and `SIGUSR2` would end it), and what each asks for is its role's to say.
 */
export const signalsOf = (settings: Settings.Settings): ReadonlyArray<NodeJS.Signals> => [
  ...new Set<NodeJS.Signals>([...settings.restartSignals, "SIGHUP", "SIGUSR2", ...Program.TERMINATION_SIGNALS])
]

// Why listeners cannot be handed on here, if they cannot: one answer for the machine and for the refusal.
const handOffBlocked = (os: Os.Os, native: Sys.Native): RestartUnsupported | undefined => {
  if (!native.available) return new RestartUnsupported({ platform: native.platform, detail: native.reason })
  // As PID 1 (a container's init), exiting ends the PID namespace, successor and all.
  if (os.pid === 1) return new RestartUnsupported({ platform: process.platform, detail: PID_1 })
  return undefined
}

// A worker is a process its primary started: the slot it was given, and the channel to its primary. The slot alone
// (set by hand, or inherited by mistake) makes no worker: it is said once, and the process serves alone. A slot
// that is not one, from a primary, is a broken start.
const workerSlot = (parent: Parent.Parent | undefined, slot: string | undefined) =>
  Effect.gen(function* () {
    if (slot === undefined) return undefined
    if (parent === undefined) {
      yield* Effect.logWarning(
        `effect-grace: ${WORKER_VARIABLE}=${JSON.stringify(slot)} is ignored: no primary started this process, ` +
          "which runs as a process of its own; the variable is the primary's to set, for its workers alone"
      )
      return undefined
    }
    if (/^\d{1,9}$/.test(slot)) return Number(slot)
    const message = `${WORKER_VARIABLE}=${JSON.stringify(slot)} is not a worker's slot`
    return yield* Effect.fail(new Config.ConfigError(new ConfigProvider.SourceError({ message })))
  })

/** The role of this process, chosen once: a primary's worker, a primary, or a single process. */
const chooseRole = (
  settings: Settings.Settings,
  os: Os.Os,
  parent: Parent.Parent | undefined,
  slotVariable: string | undefined
) =>
  Effect.gen(function* () {
    const native = yield* os.native
    const slot = yield* workerSlot(parent, slotVariable)
    const blocked = handOffBlocked(os, native)
    const chosen = (role: Role) => ({ role, blocked })
    if (slot !== undefined) return chosen(Worker.make(settings, slot, os.pid, parent!))
    if (settings.workers === undefined) return chosen(Single.make(settings, os.pid, parent, blocked))
    if (!native.available) return yield* new LaunchError({ problem: "WorkersUnsupported", detail: native.reason })
    return chosen(Primary.make(settings, settings.workers, os.pid, parent, blocked))
  })

/**
 * Starts a supervision in the current scope with the public services `services` makes: the signals taken, the
 * loop started. Closing the scope is a termination, which waits for the drain.
 */
export const make = <L extends Sockets, E1, E2>(
  options: Settings.Options,
  services: Services<L, E1, E2>
): Effect.Effect<
  { readonly supervision: Supervision; readonly listeners: L; readonly over: Effect.Effect<Interpreter.Outcome> },
  E1 | E2 | Config.ConfigError | LaunchError,
  Scope.Scope
> =>
  Effect.gen(function* () {
    const settings = yield* Settings.make(options)
    const os = yield* Os.Os
    // Signals first, so that none takes its default action (SIGUSR2 would end the process) and none is lost.
    const signals = yield* os.signals(signalsOf(settings))
    const found = yield* os.parent([TICKET_KEYS_VARIABLE, WORKER_VARIABLE])
    const parent = found.parent === undefined ? undefined : yield* Parent.connect(found.parent, found.values)
    const { role, blocked } = yield* chooseRole(settings, os, parent, found.values[WORKER_VARIABLE])
    yield* os.reapOrphans
    const listeners = yield* services.listeners(role.binding)
    const notify = yield* services.notify
    // TLS sessions resume across restarts: the parent's key, with its age; a key that is not one is ignored.
    const inherited = yield* parent?.ticketKey ?? Effect.succeed(undefined)
    const keyring = yield* Tickets.makeKeyring({
      initial: inherited === undefined ? undefined : Tickets.decode(inherited),
      rotateEvery: yield* Tickets.ticketRotation
    })
    const compileCache = settings.compileCache === false ? undefined : os.enableCompileCache(settings.compileCache)
    const supervision = yield* Interpreter.make({
      settings,
      role,
      os,
      signals,
      listeners,
      serving: services.serving,
      notify,
      keyring,
      compileCache,
      handOffBlocked: blocked
    }).pipe(role.around)
    const control =
      settings.control !== undefined && role.reload !== undefined
        ? yield* Control.make(supervision, settings.control)
        : undefined
    // Over once stopped, and then the restarts passed on and the control socket's answers under way answered: the
    // program ends then, while all they need (the channels to the successor and the predecessor) is still open.
    // The scope closing first is a termination (this finalizer runs before the loop ends: last-added first).
    const over = Interpreter.stopped(supervision).pipe(
      Effect.tap(Interpreter.answered(supervision)),
      Effect.tap(control?.settle ?? Effect.void)
    )
    yield* Effect.addFinalizer(() => Effect.andThen(Requests.terminate(supervision, "scope"), over))
    return { supervision, listeners, over }
  })

/** Builds what this process serves (`app`, or a primary's workers) in its application scope. */
export const start = (supervision: Supervision, app: Layer.Layer<never, unknown>): Effect.Effect<void> =>
  Effect.asVoid(Interpreter.startApplication(supervision, app))

/**
 * Takes the program the supervisor runs in: under `Supervisor.runMain` (which it ends), or on its own, where another
 * handler of the termination signals would race the supervisor's drain (NodeRuntime.runMain's interrupts the
 * program, exit 130).
 */
export const claimProgram = (as: "layer" | "run") =>
  Effect.gen(function* () {
    const program = yield* Program.Program
    if (program === undefined) {
      if (as === "layer") return yield* new LaunchError({ problem: "NoRunMain" })
      const os = yield* Os.Os
      if ((yield* os.foreignHandlers(Program.TERMINATION_SIGNALS)) > 0) {
        return yield* new LaunchError({ problem: "ForeignSignalHandlers" })
      }
      return undefined
    }
    if (!program.claimSignals()) return yield* new LaunchError({ problem: "TwoSupervisors" })
    yield* Effect.addFinalizer(() => Effect.sync(() => program.releaseSignals()))
    return program
  })
