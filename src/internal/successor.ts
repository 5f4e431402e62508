/**
 * The two ends of a restart: the parent spawns its successor with the
 * listeners and waits for it to say it is ready; the successor says so once
 * it serves, and learns when its parent has gone.
 *
 * The successor is the same program (`process.execPath`, `execArgv`, `argv`,
 * the start-up working directory, the environment, stdout and stderr) started
 * through `sh -c 'LISTEN_PID=$$ exec ...'`: spawn cannot know the child's pid
 * before it runs, and sd_listen_fds(3) wants `LISTEN_PID` to be the pid of the
 * program itself; exec keeps the shell's pid. The listeners sit at fds
 * 3..3+n-1, and the readiness channel, one end of a socket pair, right after
 * them: its number is passed in `EFFECT_GRACE_READY_FD`. The successor writes
 * one line on it when ready, and sees it close when the parent exits. The
 * successor never signals its parent by pid.
 *
 * The parent writes first: one line with the TLS session ticket keys
 * (`EFFECT_GRACE_TICKET_KEYS=channel` tells the successor to wait for it),
 * so that clients resume their sessions with the successor. The channel is a
 * socket pair between the two processes alone.
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as Net from "node:net"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Sys from "./sys.ts"
import * as Tickets from "./tickets.ts"

/** The variable naming the successor's readiness fd. */
export const READY_FD_VARIABLE = "EFFECT_GRACE_READY_FD"

/** The variable that tells the successor its parent sends the ticket keys on the channel. */
export const TICKET_KEYS_VARIABLE = "EFFECT_GRACE_TICKET_KEYS"

const READY_LINE = "ready\n"
const KEYS_PREFIX = "ticket-keys "

/** How the successor is started: the program itself, as it was started. */
export interface Command {
  readonly execPath: string
  readonly args: ReadonlyArray<string>
  readonly cwd: string
}

/** The command that started this process, and the directory it started in. */
export const selfCommand = (): Command => ({
  execPath: process.execPath,
  args: [...process.execArgv, ...process.argv.slice(1)],
  cwd: process.cwd()
})

/** A listening fd to hand on, with its name for `LISTEN_FDNAMES`. */
export interface Passed {
  readonly fd: number
  readonly name: string
}

/** The successor could not be started at all. */
export interface SpawnFailure {
  readonly _tag: "SpawnFailed"
  readonly cause: unknown
}

/** The successor exited before it said it was ready. */
export interface EarlyExit {
  readonly _tag: "ExitedBeforeReady"
  readonly pid: number
  readonly code: number | null
  readonly signal: string | null
}

/**
 * A successor, running. Whoever spawned it either `release`s it once it is
 * ready (it is the new main process) or `kill`s it: nothing else ends it.
 */
export interface Successor {
  readonly pid: number
  /** Completes once it has said it is ready; fails if it exits first. Kills nothing. */
  readonly ready: Effect.Effect<void, EarlyExit>
  /** Kills it (SIGKILL) if it still runs, and waits until it is reaped. */
  readonly kill: Effect.Effect<void>
  /** Leaves it running; the channel stays open until this process exits, which its close tells the successor. */
  readonly release: Effect.Effect<void>
}

/** What a successor is started with. */
export interface SpawnOptions {
  readonly command: Command
  readonly passed: ReadonlyArray<Passed>
  readonly env: NodeJS.ProcessEnv
  readonly ticketKeys: Buffer
}

/** Spawns the successor with the listeners and the channel, and sends it the ticket keys. */
export const spawnSuccessor = (options: SpawnOptions): Effect.Effect<Successor, SpawnFailure> =>
  Effect.callback<Successor, SpawnFailure>((resume) => {
    const { command, passed } = options
    const readyFd = 3 + passed.length
    let child: ChildProcess
    try {
      child = spawn("/bin/sh", ["-c", 'LISTEN_PID=$$ exec "$0" "$@"', command.execPath, ...command.args], {
        cwd: command.cwd,
        env: {
          ...options.env,
          LISTEN_FDS: String(passed.length),
          LISTEN_FDNAMES: passed.map((p) => p.name).join(":"),
          [READY_FD_VARIABLE]: String(readyFd),
          [TICKET_KEYS_VARIABLE]: "channel"
        },
        stdio: ["inherit", "inherit", "inherit", ...passed.map((p) => p.fd), "pipe"]
      })
    } catch (cause) {
      return resume(Effect.fail({ _tag: "SpawnFailed", cause }))
    }
    const channel = child.stdio[readyFd] as Net.Socket
    channel.on("error", () => {})
    // Node has no pid for a child it could not start, and reports why as an `error` event.
    if (child.pid === undefined) {
      child.once("error", (cause) => resume(Effect.fail({ _tag: "SpawnFailed", cause })))
      return
    }
    const pid = child.pid
    channel.write(`${KEYS_PREFIX}${options.ticketKeys.toString("base64")}\n`)

    let isReady = false
    let exit: EarlyExit | undefined
    const waiters = new Set<() => void>()
    const wake = () => {
      for (const waiter of waiters) waiter()
    }
    let received = ""
    const onData = (chunk: Buffer) => {
      received += chunk.toString()
      if (!received.includes(READY_LINE)) return
      isReady = true
      channel.off("data", onData)
      wake()
    }
    channel.on("data", onData)
    child.on("error", () => {})
    child.once("exit", (code, signal) => {
      exit = { _tag: "ExitedBeforeReady", pid, code, signal }
      wake()
    })
    const exited = () => child.exitCode !== null || child.signalCode !== null

    resume(
      Effect.succeed<Successor>({
        pid,
        ready: Effect.callback<void, EarlyExit>((done) => {
          const check = () => {
            if (isReady) done(Effect.void)
            else if (exit !== undefined) done(Effect.fail(exit))
            else return false
            waiters.delete(check)
            return true
          }
          if (check()) return
          waiters.add(check)
          return Effect.sync(() => waiters.delete(check))
        }),
        kill: Effect.callback<void>((done) => {
          channel.destroy()
          if (exited()) return done(Effect.void)
          child.once("exit", () => done(Effect.void))
          child.kill("SIGKILL")
        }),
        release: Effect.sync(() => {
          channel.unref()
          child.unref()
        })
      })
    )
  })

/** The successor's end of the channel: tell the parent we are ready, learn when it has gone. */
export interface ParentChannel {
  readonly pid: number
  /** The parent's TLS session ticket keys, once they have arrived; none if it sends none, or has gone. */
  readonly ticketKeys: Effect.Effect<Buffer | undefined>
  readonly signalReady: Effect.Effect<void>
  /** Resolves once the parent has exited (the channel closed). */
  readonly exited: Effect.Effect<void>
  readonly isAlive: () => boolean
}

/**
 * Opens the channel named by `EFFECT_GRACE_READY_FD`, if this process is a
 * successor. The fd is made close-on-exec first, so the application's own
 * subprocesses do not hold it.
 */
export const openParentChannel = (
  readyFd: number | undefined,
  sendsTicketKeys: boolean
): Effect.Effect<ParentChannel | undefined> =>
  Effect.sync(() => {
    if (readyFd === undefined) return undefined
    const kind = Sys.inspect(readyFd)
    if (Result.isFailure(kind) || kind.success._tag === "NotOpen" || kind.success._tag === "NotSocket") {
      return undefined
    }
    Sys.setCloseOnExec(readyFd, true)
    const socket = new Net.Socket({ fd: readyFd, readable: true, writable: true })
    socket.unref()
    let alive = true
    const waiters: Array<() => void> = []
    // The ticket keys: still awaited (a list of waiters), or settled.
    let keys: { readonly value: Buffer | undefined } | undefined = sendsTicketKeys ? undefined : { value: undefined }
    const keyWaiters: Array<() => void> = []
    const settleKeys = (value: Buffer | undefined) => {
      if (keys !== undefined) return
      keys = { value }
      for (const waiter of keyWaiters.splice(0)) waiter()
    }
    const gone = () => {
      if (!alive) return
      alive = false
      socket.destroy()
      settleKeys(undefined)
      for (const waiter of waiters.splice(0)) waiter()
    }
    let received = ""
    socket.on("data", (chunk: Buffer) => {
      if (keys !== undefined) return
      received += chunk.toString()
      const end = received.indexOf("\n")
      if (end < 0) return
      const line = received.slice(0, end)
      const decoded = line.startsWith(KEYS_PREFIX) ? Buffer.from(line.slice(KEYS_PREFIX.length), "base64") : undefined
      settleKeys(decoded?.length === Tickets.TICKET_KEYS_BYTES ? decoded : undefined)
    })
    socket.on("end", gone)
    socket.on("close", gone)
    socket.on("error", gone)
    return {
      pid: process.ppid,
      ticketKeys: Effect.callback<Buffer | undefined>((resume) => {
        if (keys !== undefined) return resume(Effect.succeed(keys.value))
        keyWaiters.push(() => resume(Effect.succeed(keys?.value)))
      }),
      isAlive: () => alive,
      signalReady: Effect.callback<void>((resume) => {
        if (!alive) return resume(Effect.void)
        socket.write(READY_LINE, () => resume(Effect.void))
      }),
      exited: Effect.callback<void>((resume) => {
        if (!alive) return resume(Effect.void)
        waiters.push(() => resume(Effect.void))
      })
    }
  })
