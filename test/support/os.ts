/**
 * A fake operating system for the supervisor, as tableflip's `fakeProcess`:
 * signals the test sends, successors the test makes ready (or not), and a
 * record of what the supervisor did. Under a `TestClock`, a restart takes no
 * time at all.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import type * as Os from "../../src/internal/os.ts"
import type * as Successor from "../../src/internal/successor.ts"

export interface FakeSuccessor {
  readonly pid: number
  /** Completed by the test: ready, or exited first. */
  readonly ready: Deferred.Deferred<void, Successor.EarlyExit>
  state: "running" | "killed" | "released"
}

export const make = (
  options: { readonly pid?: number; readonly parentPid?: number; readonly spawnGate?: Deferred.Deferred<void> } = {}
) =>
  Effect.gen(function* () {
    const signals = yield* Queue.unbounded<NodeJS.Signals>()
    const spawns = yield* Queue.unbounded<FakeSuccessor>()
    const successors: Array<FakeSuccessor> = []
    const pidFile: Array<string> = []
    const forced: Array<NodeJS.Signals> = []
    let parentAlive = options.parentPid !== undefined
    const parent: Successor.ParentChannel | undefined =
      options.parentPid === undefined
        ? undefined
        : {
            pid: options.parentPid,
            ticketKeys: Effect.succeed(undefined),
            signalReady: Effect.void,
            exited: Effect.void,
            isAlive: () => parentAlive
          }
    const os: Os.Os = {
      pid: options.pid ?? 100,
      signals: () => Effect.succeed(Stream.fromQueue(signals)),
      spawn: () =>
        Effect.gen(function* () {
          if (options.spawnGate !== undefined) yield* Deferred.await(options.spawnGate)
          const successor: FakeSuccessor = {
            pid: 200 + successors.length,
            ready: yield* Deferred.make<void, Successor.EarlyExit>(),
            state: "running"
          }
          successors.push(successor)
          yield* Queue.offer(spawns, successor)
          return {
            pid: successor.pid,
            ready: Deferred.await(successor.ready),
            kill: Effect.sync(() => {
              successor.state = "killed"
            }),
            release: Effect.sync(() => {
              successor.state = "released"
            })
          }
        }),
      parent: Effect.succeed(parent),
      native: () => ({ available: true }),
      writePidFile: (path) => Effect.sync(() => void pidFile.push(`write ${path}`)),
      removePidFile: (path) => Effect.sync(() => void pidFile.push(`remove ${path}`)),
      forceExit: (signal) => Effect.sync(() => void forced.push(signal)),
      reapOrphans: Effect.void
    }
    return {
      os,
      /** Sends a signal to the supervised process. */
      signal: (signal: NodeJS.Signals) => Queue.offer(signals, signal),
      /** The next successor spawned. */
      spawned: Queue.take(spawns),
      successors,
      pidFile,
      forced,
      parentExits: () => {
        parentAlive = false
      }
    }
  })
