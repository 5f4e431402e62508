/**
 * Real processes for integration tests: spawned in a scope (killed and reaped
 * when it closes, pass or fail), with their output read line by line and every
 * wait bounded.
 */
import { spawn } from "node:child_process"
import type { ChildProcess, StdioOptions } from "node:child_process"
import { readdirSync, readFileSync, readlinkSync } from "node:fs"
import { createInterface } from "node:readline"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Os from "../../src/internal/os.ts"

/** The Node binary the tests run on (Node 24 from node_modules), for fixtures under type stripping. */
export const nodePath = process.execPath

export interface Spawned {
  readonly child: ChildProcess
  readonly pid: number
  /** Every stdout line so far. */
  readonly lines: Array<string>
  /** Every stderr line so far. */
  readonly errors: Array<string>
  /** Waits, bounded, for a stdout line matching `pattern`; yields the match. Lines already seen count. */
  readonly waitForLine: (pattern: RegExp, timeout?: Duration.Input) => Effect.Effect<RegExpMatchArray>
  /** The same, among the stdout lines from index `from` on: those printed since `lines.length` was `from`. */
  readonly waitForLineFrom: (from: number, pattern: RegExp, timeout?: Duration.Input) => Effect.Effect<RegExpMatchArray>
  /** The same for stderr. */
  readonly waitForErrorLine: (pattern: RegExp, timeout?: Duration.Input) => Effect.Effect<RegExpMatchArray>
  /** Waits, bounded, for the process to exit; yields its code or signal. */
  readonly exited: (timeout?: Duration.Input) => Effect.Effect<{ code: number | null; signal: string | null }>
  /** Waits, bounded, for the process to exit and its stdout and stderr to close (every line read). */
  readonly closed: (timeout?: Duration.Input) => Effect.Effect<{ code: number | null; signal: string | null }>
}

export interface SpawnOptions {
  readonly env?: Record<string, string | undefined>
  readonly stdio?: StdioOptions
  readonly cwd?: string
}

const defaultTimeout = Duration.seconds(15)

/** Spawns a command; the scope's close kills (SIGKILL after a grace) and reaps it. */
export const spawnProcess = (
  command: string,
  args: ReadonlyArray<string>,
  options: SpawnOptions = {}
): Effect.Effect<Spawned, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(command, args, {
        env: { ...process.env, ...options.env },
        stdio: options.stdio ?? ["ignore", "pipe", "pipe"],
        ...(options.cwd !== undefined ? { cwd: options.cwd } : {})
      })
      const lines: Array<string> = []
      const errors: Array<string> = []
      const waiters = new Set<() => void>()
      const notify = () => {
        for (const waiter of waiters) waiter()
      }
      if (child.stdout) {
        createInterface({ input: child.stdout }).on("line", (line) => {
          lines.push(line)
          notify()
        })
      }
      if (child.stderr) {
        createInterface({ input: child.stderr }).on("line", (line) => {
          errors.push(line)
          notify()
          if (process.env.GRACE_TEST_VERBOSE) process.stderr.write(`[${child.pid}] ${line}\n`)
        })
      }
      let exit: { code: number | null; signal: string | null } | undefined
      child.on("exit", (code, signal) => {
        exit = { code, signal }
        notify()
      })
      let closed = false
      child.on("close", () => {
        closed = true
        notify()
      })
      const waitFor = <A>(check: () => A | undefined, what: string, timeout: Duration.Input = defaultTimeout) =>
        Effect.callback<A>((resume) => {
          const attempt = () => {
            const found = check()
            if (found === undefined) return false
            waiters.delete(waiter)
            resume(Effect.succeed(found))
            return true
          }
          const waiter = () => void attempt()
          if (attempt()) return
          waiters.add(waiter)
          return Effect.sync(() => waiters.delete(waiter))
        }).pipe(
          Effect.timeoutOrElse({
            duration: timeout,
            orElse: () =>
              Effect.die(
                new Error(
                  `timed out waiting for ${what} from pid ${child.pid} (${command} ${args.join(" ")})\n` +
                    `stdout:\n${lines.join("\n")}\nstderr:\n${errors.join("\n")}`
                )
              )
          })
        )
      const waitForIn = (source: Array<string>, pattern: RegExp, timeout: Duration.Input | undefined, from = 0) =>
        waitFor(
          () => {
            for (const line of source.slice(from)) {
              const match = line.match(pattern)
              if (match) return match
            }
            return undefined
          },
          `a line matching ${pattern}`,
          timeout
        )
      const spawned: Spawned = {
        child,
        pid: child.pid ?? -1,
        lines,
        errors,
        waitForLine: (pattern, timeout) => waitForIn(lines, pattern, timeout),
        waitForLineFrom: (from, pattern, timeout) => waitForIn(lines, pattern, timeout, from),
        waitForErrorLine: (pattern, timeout) => waitForIn(errors, pattern, timeout),
        exited: (timeout) => waitFor(() => exit, "exit", timeout),
        closed: (timeout) => waitFor(() => (closed ? exit : undefined), "exit and the close of its output", timeout)
      }
      return spawned
    }),
    (spawned) => kill(spawned.child)
  )

/** Kills a process (TERM, then KILL after a bound) and waits until it is reaped. */
export const kill = (child: ChildProcess): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    const timer = setTimeout(() => child.kill("SIGKILL"), 3000)
    child.once("exit", () => {
      clearTimeout(timer)
      resume(Effect.void)
    })
    child.kill("SIGTERM")
  })

/** Runs a fixture (`test/fixtures/NAME.ts`) on this Node, under type stripping. */
export const spawnFixture = (
  name: string,
  args: ReadonlyArray<string> = [],
  options: SpawnOptions = {}
): Effect.Effect<Spawned, never, Scope.Scope> =>
  spawnProcess(nodePath, [new URL(`../fixtures/${name}.ts`, import.meta.url).pathname, ...args], options)

/** Every process alive now that carries `tag` in its arguments: all the generations of one test's program. */
export const processesTagged = (tag: string): Array<number> =>
  readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(tag) && isAlive(pid)
      } catch {
        return false
      }
    })

/** A process's state letter and parent pid, from /proc; none once it is gone: the OS service's own reader. */
export const procStat = Os.procStat

/** Whether a process exists (and is not a zombie). */
export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    const stat = readlinkSync(`/proc/${pid}/exe`)
    return stat.length > 0
  } catch {
    return false
  }
}

/** The open fds of a process, from /proc. */
export const openFds = (pid: number): Array<number> =>
  readdirSync(`/proc/${pid}/fd`)
    .map(Number)
    .toSorted((a, b) => a - b)

/** Polls a condition until it holds, bounded; for states no event announces (a process gone). */
export const eventually = <A>(
  check: () => A | undefined | false,
  what: string,
  timeout: Duration.Input = defaultTimeout
): Effect.Effect<A> =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.fromInputUnsafe(timeout))
    while (true) {
      const value = check()
      if (value !== undefined && value !== false) return value
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* Effect.sleep(Duration.millis(20))
    }
  })
