/**
 * What the supervisor asks of the operating system, behind one service, as
 * cloudflare/tableflip's `env`: signals, the successor, the channel to a
 * parent, the PID file, the native calls' availability, and the forced exit.
 * The real implementation is the reference's default; tests provide a fake
 * and drive the supervisor in milliseconds under a `TestClock`.
 */
import { readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Successor from "./successor.ts"
import * as Sys from "./sys.ts"

export interface Os {
  readonly pid: number
  /**
   * Installs handlers for the given signals now (so that none arriving from here on takes its default action),
   * until the scope closes; the stream yields each signal as it arrives.
   */
  readonly signals: (
    names: ReadonlyArray<NodeJS.Signals>
  ) => Effect.Effect<Stream.Stream<NodeJS.Signals>, never, Scope.Scope>
  /** Starts a successor: this program again, with the listeners and the channel. */
  readonly spawn: (
    options: Omit<Successor.SpawnOptions, "command" | "env">
  ) => Effect.Effect<Successor.Successor, Successor.SpawnFailure>
  /** The channel to the parent that started this process, if it did; read from the environment once. */
  readonly parent: Effect.Effect<Successor.ParentChannel | undefined, Config.ConfigError>
  /** Whether listeners can be handed on here. */
  readonly native: () => Sys.Native
  readonly writePidFile: (path: string) => Effect.Effect<void>
  readonly removePidFile: (path: string) => Effect.Effect<void>
  /** Ends the process at once, as `signal` does by default; as PID 1 nothing can, and the forced drain does. */
  readonly forceExit: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** As PID 1 (a container's init), reaps the orphans the kernel hands it, for as long as the scope lives. */
  readonly reapOrphans: Effect.Effect<void, never, Scope.Scope>
}

const signals = (names: ReadonlyArray<NodeJS.Signals>) =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<NodeJS.Signals>()
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        const handler = (signal: NodeJS.Signals) => void Queue.offerUnsafe(queue, signal)
        for (const name of names) process.on(name, handler)
        return handler
      }),
      (handler) =>
        Effect.sync(() => {
          for (const name of names) process.off(name, handler)
        })
    )
    return Stream.fromQueue(queue)
  })

// Written to a temporary file and renamed, so that a reader never sees a partial pid.
const writePidFile = (path: string) =>
  Effect.sync(() => {
    const temp = join(dirname(path), `.${process.pid}.${Date.now()}.pid.tmp`)
    writeFileSync(temp, `${process.pid}\n`)
    renameSync(temp, path)
  })

// Only a file this process wrote: a successor may have written its own pid there since.
const removePidFile = (path: string) =>
  Effect.sync(() => {
    try {
      if (readFileSync(path, "utf8").trim() === String(process.pid)) rmSync(path, { force: true })
    } catch {
      // Gone already.
    }
  })

// Every other handler of the signal is removed first (`NodeRuntime.runMain`'s too), so the default action runs. PID 1
// has no default action: there the forced drain ends the program, which ends the process.
const forceExit = (signal: NodeJS.Signals) =>
  Effect.sync(() => {
    if (process.pid === 1) return
    process.removeAllListeners(signal)
    process.kill(process.pid, signal)
  })

// This process's children that are zombies now.
const zombieChildren = (): Array<number> =>
  readdirSync("/proc").flatMap((entry) => {
    if (!/^\d+$/.test(entry)) return []
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      return state === "Z" && Number(ppid) === process.pid ? [Number(entry)] : []
    } catch {
      return []
    }
  })

// An orphan of a container becomes PID 1's child, and a zombie once it exits, until PID 1 waits for it. Node's own
// children are reaped by libuv at once, on SIGCHLD, and it must get their status: so only a child that is still a
// zombie a sweep later, which no one is waiting for, is reaped here, by its pid.
const reapOrphans: Effect.Effect<void, never, Scope.Scope> = Effect.suspend(() => {
  if (process.pid !== 1 || !Sys.native().available) return Effect.void
  let seen = new Set<number>()
  const sweep = Effect.sync(() => {
    const zombies = zombieChildren()
    for (const pid of zombies) if (seen.has(pid)) Sys.reap(pid)
    seen = new Set(zombies)
  })
  return Effect.asVoid(Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced("1 second"))))
})

let parent: Effect.Effect<Successor.ParentChannel | undefined, Config.ConfigError> | undefined

const readParent: Effect.Effect<Successor.ParentChannel | undefined, Config.ConfigError> = Effect.gen(function* () {
  const readyFd = yield* Config.option(Config.Int(Successor.READY_FD_VARIABLE))
  const sendsTicketKeys = yield* Config.option(Config.String(Successor.TICKET_KEYS_VARIABLE))
  delete process.env[Successor.READY_FD_VARIABLE]
  delete process.env[Successor.TICKET_KEYS_VARIABLE]
  return yield* Successor.openParentChannel(
    Option.getOrUndefined(readyFd),
    Option.getOrUndefined(sendsTicketKeys) === "channel"
  )
})

/** The operating system, as this process sees it. */
export const live = (): Os => ({
  pid: process.pid,
  signals,
  spawn: (options) =>
    Effect.suspend(() => Successor.spawnSuccessor({ ...options, command: Successor.selfCommand(), env: process.env })),
  // Once per process: the variables are removed once read, and the channel is opened once.
  parent: Effect.suspend(() => (parent ??= Effect.cached(readParent).pipe(Effect.runSync))),
  native: Sys.native,
  writePidFile,
  removePidFile,
  forceExit,
  reapOrphans
})

/** The operating system the supervisor uses: the real one unless a test provides another. */
export const Os: Context.Reference<Os> = Context.Reference<Os>("effect-grace/Os", { defaultValue: live })
