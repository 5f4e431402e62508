/**
 * The program a supervisor runs in, as `Supervisor.runMain` runs it: how the
 * supervisor ends it after a hand-off or a termination, however its layers
 * are composed, and takes the termination signals from the runtime.
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"
import { constants } from "node:os"

export interface Program {
  /**
   * Takes SIGTERM and SIGINT from the runtime, for as long as the supervisor lives; false if another supervisor
   * of this program has them.
   */
  readonly claimSignals: () => boolean
  readonly releaseSignals: () => void
  /** Ends the program: its main fiber is interrupted and every finalizer runs; `graceful` makes the exit code 0. */
  readonly end: (graceful: boolean) => void
  /** Marks a graceful stop, for a supervisor whose program ends by itself. */
  readonly stoppedGracefully: () => void
  /** Exits the process now, running no finalizer, with the code of death by `signal` (128 + its number). */
  readonly exitNow: (signal: NodeJS.Signals) => void
}

/** The program, when `Supervisor.runMain` runs it. */
export const Program: Context.Reference<Program | undefined> = Context.Reference<Program | undefined>(
  "effect-grace/Program",
  { defaultValue: () => undefined }
)

/** The signals that terminate a program. */
export const TERMINATION_SIGNALS: ReadonlyArray<NodeJS.Signals> = ["SIGTERM", "SIGINT"]

// The runtime ends the process, as NodeRuntime.runMain does; nowhere else in the library.
// oxlint-disable-next-line unicorn/no-process-exit
const exitProcess = (code: number): never => process.exit(code)

const signalExitCode = (signal: NodeJS.Signals) => 128 + (constants.signals[signal] ?? constants.signals.SIGTERM)

/**
 * The program of `runMain`: its main fiber, whether it stopped gracefully, and the termination signals, which
 * interrupt it until a supervisor claims them (a second one exits at once).
 */
const make = () => {
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
  const program: Program = {
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

/** How `runMain` runs a program: as `NodeRuntime.runMain` does, with a `Program` its supervisor ends. */
export const runMain = <E, A>(
  effect: Effect.Effect<A, E>,
  options: { readonly disableErrorReporting?: boolean | undefined; readonly teardown?: Runtime.Teardown | undefined }
): void => {
  const made = make()
  const exitCodeOf: Runtime.Teardown = (exit, onExit) =>
    made.graceful() && (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause))
      ? onExit(0)
      : (options.teardown ?? Runtime.defaultTeardown)(exit, onExit)
  const launch = Runtime.makeRunMain(({ fiber, teardown }) => {
    made.attach(fiber)
    fiber.addObserver((exit) => {
      made.detach()
      // The program is over, every finalizer run: nothing it left behind keeps the process alive.
      teardown(exit, exitProcess)
    })
  })
  launch(Effect.provideService(effect, Program, made.program), {
    disableErrorReporting: options.disableErrorReporting,
    teardown: exitCodeOf
  })
}
