/**
 * What the supervisor asks of the operating system, behind one service, as
 * cloudflare/tableflip's `env`: signals, starting a child with the listeners
 * and a channel, the channel to a parent, the PID file, the native calls'
 * availability, and the forced exit. What is said over the channels (the
 * protocol, protocol.ts) sits above this seam. The real
 * implementation is the reference's default; tests provide a fake and drive
 * the supervisor, and both ends of the protocol, under a `TestClock`.
 */
import { spawn as spawnProcess } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { closeSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs"
import * as Module from "node:module"
import * as Net from "node:net"
import { basename, dirname, join } from "node:path"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Channel from "./channel.ts"
import * as Preload from "./preload.ts"
import * as Program from "./program.ts"
import type { ChildExit } from "./protocol.ts"
import * as Sys from "./sys.ts"

/** The variable naming the successor's end of the channel. */
export const CHANNEL_FD_VARIABLE = "EFFECT_GRACE_READY_FD"

/** The variable naming a worker's end of the socket its primary sends listening fds over. */
export const FDS_FD_VARIABLE = "EFFECT_GRACE_FDS_FD"

/** How a child is started: as a successor (the default), or as a primary's worker. */
export interface SpawnOptions {
  /**
   * A worker: in a process group of its own (a terminal's Ctrl-C reaches the primary alone, which stops its
   * workers in order), with a second socket over which the primary sends it listening fds.
   */
  readonly worker?: boolean | undefined
}

/** A listening fd to hand on, with its name for `LISTEN_FDNAMES`. */
export interface Passed {
  readonly fd: number
  readonly name: string
}

/** The child could not be started at all. */
export interface SpawnFailure {
  readonly _tag: "SpawnFailed"
  readonly cause: unknown
}

/** A child: this program again, with the listeners at fds 3.. and a channel after them. */
export interface Child {
  readonly pid: number
  readonly channel: Channel.Channel
  /** Completes once the child has exited and been reaped, with how. */
  readonly exited: Effect.Effect<ChildExit>
  /** Whether it runs now: not exited, nor a zombie whose exit Node has yet to report. */
  readonly alive: () => boolean
  /** Kills it (SIGKILL) if it still runs, and waits until it is reaped. */
  readonly kill: Effect.Effect<void>
  /** Sends it SIGTERM if it still runs. */
  readonly terminate: Effect.Effect<void>
  /** Leaves it running: this process may exit before it, and the channel's close tells it when. */
  readonly release: Effect.Effect<void>
  /** A worker's: sends it a copy of a listening fd; it reads it once told over the channel. */
  readonly sendFd: (fd: number) => Effect.Effect<void, Sys.SysError>
}

/** The channel to the parent that started this process. */
export interface Parent {
  readonly pid: number
  readonly channel: Channel.Channel
  /** A worker's: the next listening fd its primary sent, once the channel has said it was sent. */
  readonly receiveFd: () => Effect.Effect<number, Sys.SysError>
}

export interface Os {
  readonly pid: number
  /**
   * Installs handlers for the given signals now (so that none arriving from here on takes its default action),
   * until the scope closes; the stream yields each signal as it arrives.
   */
  readonly signals: (
    names: ReadonlyArray<NodeJS.Signals>
  ) => Effect.Effect<Stream.Stream<NodeJS.Signals>, never, Scope.Scope>
  /** Handlers of these signals that others installed (a runtime's, for example), counted before ours. */
  readonly foreignHandlers: (names: ReadonlyArray<NodeJS.Signals>) => Effect.Effect<number>
  /**
   * Starts this program again with the listeners and a channel, and `env` added to this process's environment (a
   * variable set to `undefined` is removed).
   */
  readonly spawn: (
    passed: ReadonlyArray<Passed>,
    env: Readonly<Record<string, string | undefined>>,
    options?: SpawnOptions
  ) => Effect.Effect<Child, SpawnFailure>
  /** The channel to the parent that started this process, if one did; `variables` are read and removed. */
  readonly parent: (
    variables: ReadonlyArray<string>
  ) => Effect.Effect<
    { readonly parent: Parent | undefined; readonly values: Readonly<Record<string, string>> },
    Config.ConfigError
  >
  /**
   * Turns Node's compile cache on (in `directory`, or Node's default one) and says its directory, or nothing if it
   * cannot be turned on.
   */
  readonly enableCompileCache: (directory: true | string) => string | undefined
  /** Writes what was compiled so far to the compile cache. */
  readonly flushCompileCache: () => void
  /** This process's parent now: it changes the moment the parent exits (the orphan is adopted). */
  readonly ppid: () => number
  /** Whether the native calls are to be used here (`Sys.enabled`): listeners can be handed on, workers run. */
  readonly native: Effect.Effect<Sys.Native>
  readonly writePidFile: (path: string) => Effect.Effect<void>
  readonly removePidFile: (path: string) => Effect.Effect<void>
  /** Ends the process at once, with the code of death by `signal`, where the program's runtime allows it. */
  readonly forceExit: (signal: string) => Effect.Effect<void>
  /** As PID 1 (a container's init), reaps the orphans the kernel hands it, for as long as the scope lives. */
  readonly reapOrphans: Effect.Effect<void, never, Scope.Scope>
  /** A process's resident set size in bytes (this process's with its own pid); none once it is gone. */
  readonly rss: (pid: number) => Effect.Effect<number | undefined>
}

// -----------------------------------------------------------------------------
// Signals
// -----------------------------------------------------------------------------

const signals = (names: ReadonlyArray<NodeJS.Signals>) =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<NodeJS.Signals>()
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        const handler = (signal: NodeJS.Signals) => void Queue.offerUnsafe(queue, signal)
        for (const name of names) process.on(name, handler)
        // What arrived while the child still loaded, kept by its preload, comes first.
        for (const signal of Preload.takeEarly()) if (names.includes(signal)) handler(signal)
        return handler
      }),
      (handler) =>
        Effect.sync(() => {
          for (const name of names) process.off(name, handler)
        })
    )
    return Stream.fromQueue(queue)
  })

// Already on (NODE_COMPILE_CACHE, or the program's own call) counts as on, in the directory it has. Node then names
// the folder of this Node version inside it: a successor is given the folder itself, where Node finds the same one.
const enableCompileCache = (directory: true | string): string | undefined => {
  const result = Module.enableCompileCache(directory === true ? undefined : directory)
  const { ENABLED, ALREADY_ENABLED } = Module.constants.compileCacheStatus
  if (result.status !== ENABLED && result.status !== ALREADY_ENABLED) return undefined
  const found = result.directory
  return found !== undefined && basename(found).startsWith(`v${process.versions.node}-`) ? dirname(found) : found
}

const foreignHandlers = (names: ReadonlyArray<NodeJS.Signals>) =>
  Effect.sync(() =>
    names.reduce((count, name) => count + process.listeners(name).filter((h) => !Preload.isEarly(h)).length, 0)
  )

// Only the program's runtime ends the process: elsewhere every drain is cut, and the program finishes by itself.
const forceExit = (signal: string) =>
  Effect.gen(function* () {
    const program = yield* Program.Program
    program?.exitNow(signal as NodeJS.Signals)
  })

// -----------------------------------------------------------------------------
// Children
// -----------------------------------------------------------------------------

/** The command that started this process, and the directory it started in, with the preload first. */
const selfCommand = () => ({
  execPath: process.execPath,
  args: [...Preload.execArgv, ...Preload.withoutPreload(process.execArgv), ...process.argv.slice(1)],
  cwd: process.cwd()
})

// Node itself, with no shell between (images without one restart too): the preload sets `LISTEN_PID` to the
// child's own pid, which sd_listen_fds(3) wants and spawn cannot know (preload.ts).
const startChild = (
  passed: ReadonlyArray<Passed>,
  env: Readonly<Record<string, string | undefined>>,
  fds: number | undefined
): ChildProcess => {
  const command = selfCommand()
  const variables: Record<string, string | undefined> = {
    ...process.env,
    ...env,
    // None passed is no LISTEN_FDS at all (sd_listen_fds(3) wants a positive count).
    LISTEN_FDS: passed.length === 0 ? undefined : String(passed.length),
    LISTEN_FDNAMES: passed.length === 0 ? undefined : passed.map((p) => p.name).join(":"),
    LISTEN_PID: undefined,
    [Preload.MARKER_VARIABLE]: "1",
    [CHANNEL_FD_VARIABLE]: String(3 + passed.length),
    [FDS_FD_VARIABLE]: fds === undefined ? undefined : String(4 + passed.length)
  }
  for (const [name, value] of Object.entries(variables)) if (value === undefined) delete variables[name]
  return spawnProcess(command.execPath, command.args, {
    cwd: command.cwd,
    env: variables,
    detached: fds !== undefined,
    stdio: ["inherit", "inherit", "inherit", ...passed.map((p) => p.fd), "pipe", ...(fds === undefined ? [] : [fds])]
  })
}

const childOf = (child: ChildProcess, pid: number, channel: Channel.Channel, fds: number | undefined): Child => {
  const exit = Deferred.makeUnsafe<ChildExit>()
  const running = () => !Deferred.isDoneUnsafe(exit)
  child.on("error", () => {})
  child.once("exit", (code, signal) => Deferred.doneUnsafe(exit, Effect.succeed({ pid, code, signal })))
  const exited = Deferred.await(exit)
  return {
    pid,
    channel,
    exited,
    alive: () => running() && !isZombie(pid),
    kill: Effect.andThen(
      channel.close,
      Effect.suspend(() => {
        if (running()) child.kill("SIGKILL")
        return Effect.asVoid(exited)
      })
    ),
    terminate: Effect.sync(() => {
      if (running()) child.kill("SIGTERM")
    }),
    release: Effect.andThen(
      channel.unref,
      Effect.sync(() => child.unref())
    ),
    sendFd: (fd) =>
      fds === undefined ? Effect.die(new Error("only a worker is sent fds")) : Effect.fromResult(Sys.sendFd(fds, fd))
  }
}

// A worker's fd socket: this end stays here (closed once the child has exited), the other is the child's.
const fdSocket = (worker: boolean | undefined) =>
  Effect.suspend(() => {
    if (worker !== true) return Effect.succeed(undefined)
    const pair = Sys.socketPair()
    return Result.isFailure(pair)
      ? Effect.fail<SpawnFailure>({ _tag: "SpawnFailed", cause: new Error(Sys.formatSysError(pair.failure)) })
      : Effect.succeed(pair.success)
  })

// However this process ends (a second termination signal exits at once), its workers end with it: one `exit` hook
// for them all (one each would pass Node's limit of listeners with more than ten workers).
const killedOnExit = () => {
  const running = new Set<ChildProcess>()
  const killAll = () => {
    for (const child of running) child.kill("SIGKILL")
  }
  return (child: ChildProcess): void => {
    if (running.size === 0) process.on("exit", killAll)
    running.add(child)
    child.once("exit", () => {
      running.delete(child)
      if (running.size === 0) process.off("exit", killAll)
    })
  }
}

const spawnWith =
  (killOnExit: (child: ChildProcess) => void) =>
  (passed: ReadonlyArray<Passed>, env: Readonly<Record<string, string | undefined>>, options: SpawnOptions = {}) =>
    Effect.gen(function* () {
      const pair = yield* fdSocket(options.worker)
      const child = yield* Effect.try({
        try: () => startChild(passed, env, pair?.[1]),
        catch: (cause): SpawnFailure => ({ _tag: "SpawnFailed", cause })
      }).pipe(Effect.ensuring(Effect.sync(() => pair !== undefined && closeSync(pair[1]))))
      if (pair !== undefined) {
        killOnExit(child)
        child.once("exit", () => closeSync(pair[0]))
      }
      // Node has no pid (nor stdio) for a child it could not start, and reports why as an `error` event.
      if (child.pid === undefined) {
        return yield* Effect.callback<never, SpawnFailure>((resume) => {
          child.once("error", (cause) => resume(Effect.fail({ _tag: "SpawnFailed", cause })))
        })
      }
      const socket = child.stdio[3 + passed.length] as Net.Socket
      socket.on("error", () => {})
      return childOf(child, child.pid, yield* Channel.fromSocket(socket), pair?.[0])
    })

// The channel's fd is made close-on-exec first, so that the application's own subprocesses do not hold it.
const openParent = (fd: number, fds: number | undefined) =>
  Effect.gen(function* () {
    const kind = Sys.inspect(fd)
    if (Result.isFailure(kind) || kind.success._tag === "NotOpen" || kind.success._tag === "NotSocket") {
      return undefined
    }
    Sys.setCloseOnExec(fd, true)
    const socket = new Net.Socket({ fd, readable: true, writable: true })
    socket.unref()
    if (fds !== undefined) Sys.setCloseOnExec(fds, true)
    const channel = yield* Channel.fromSocket(socket)
    return { pid: process.ppid, channel, receiveFd: () => receiveFd(fds) } satisfies Parent
  })

const receiveFd = (socket: number | undefined) =>
  Effect.suspend(() => {
    const received = socket === undefined ? undefined : Sys.receiveFd(socket)
    if (received !== undefined && Result.isSuccess(received) && received.success !== undefined) {
      return Effect.succeed(received.success)
    }
    const error: Sys.SysError =
      received !== undefined && Result.isFailure(received)
        ? received.failure
        : { syscall: "recvmsg", code: "EAGAIN", errno: 11, detail: "no fd was waiting" }
    return Effect.fail(error)
  })

const parent = (variables: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const fd = Option.getOrUndefined(yield* Config.option(Config.Int(CHANNEL_FD_VARIABLE)))
    const fds = Option.getOrUndefined(yield* Config.option(Config.Int(FDS_FD_VARIABLE)))
    const values: Record<string, string> = {}
    for (const name of variables) {
      const value = yield* Config.option(Config.String(name))
      if (Option.isSome(value)) values[name] = value.value
    }
    // Read once: the application's subprocesses must not take this process's channel for theirs.
    for (const name of [CHANNEL_FD_VARIABLE, FDS_FD_VARIABLE, ...variables]) delete process.env[name]
    return { parent: fd === undefined ? undefined : yield* openParent(fd, fds), values }
  })

// -----------------------------------------------------------------------------
// PID file and orphans
// -----------------------------------------------------------------------------

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

/** A process's state letter and parent pid, from /proc; none once it is gone. */
export const procStat = (pid: number | string): { readonly state: string; readonly ppid: number } | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const [state = "", ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return { state, ppid: Number(ppid) }
  } catch {
    return undefined
  }
}

/**
 * A process's resident set size in bytes, from `VmRSS` in /proc/<pid>/status (kB there, the kernel's own count, as
 * `ps` and `top` show it, with no page size to find); none once it is gone, or where /proc has no such line (a
 * zombie, a kernel thread). Elsewhere than Linux, this process's own from Node; another's is unknown.
 */
export const residentBytes = (pid: number): number | undefined => {
  try {
    const found = /^VmRSS:\s*(\d+)\s*kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
    return found === null ? undefined : Number(found[1]) * 1024
  } catch {
    return pid === process.pid && process.platform !== "linux" ? process.memoryUsage.rss() : undefined
  }
}

// Exited, not yet reaped: its exit is on its way to this process (SIGCHLD), and Node has not reported it yet.
const isZombie = (pid: number): boolean => (procStat(pid)?.state ?? "Z") === "Z"

// This process's children that are zombies now.
const zombieChildren = (): Array<number> =>
  readdirSync("/proc").flatMap((entry) => {
    if (!/^\d+$/.test(entry)) return []
    const stat = procStat(entry)
    return stat?.state === "Z" && stat.ppid === process.pid ? [Number(entry)] : []
  })

// An orphan of a container becomes PID 1's child, and a zombie once it exits, until PID 1 waits for it. Node's own
// children are reaped by libuv at once, on SIGCHLD, and it must get their status: so only a child that is still a
// zombie a sweep later, which no one is waiting for, is reaped here, by its pid.
const reapOrphans: Effect.Effect<void, never, Scope.Scope> = Effect.flatMap(Sys.enabled, (native) => {
  if (process.pid !== 1 || !native.available) return Effect.void
  let seen = new Set<number>()
  const sweep = Effect.sync(() => {
    const zombies = zombieChildren()
    for (const pid of zombies) if (seen.has(pid)) Sys.reap(pid)
    seen = new Set(zombies)
  })
  return Effect.asVoid(Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced("1 second"))))
})

/** The operating system, as this process sees it. */
export const live = (): Os => ({
  spawn: spawnWith(killedOnExit()),
  pid: process.pid,
  signals,
  foreignHandlers,
  parent,
  ppid: () => process.ppid,
  enableCompileCache,
  flushCompileCache: Module.flushCompileCache,
  native: Sys.enabled,
  writePidFile,
  removePidFile,
  forceExit,
  reapOrphans,
  rss: (pid) => Effect.sync(() => residentBytes(pid))
})

/** The operating system the supervisor uses: the real one unless a test provides another. */
export const Os: Context.Reference<Os> = Context.Reference<Os>("effect-grace/Os", { defaultValue: live })
