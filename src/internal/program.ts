/**
 * The program a supervisor runs in, as `Supervisor.runMain` runs it: how the
 * supervisor ends it after a hand-off or a termination, however its layers
 * are composed, and takes the termination signals from the runtime.
 */
import * as Context from "effect/Context"

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
