/**
 * The processes a benchmark starts, and its own end.
 *
 * Every process a benchmark starts is registered here and killed (SIGKILL)
 * when the benchmark exits, throws, or is interrupted by a signal, so a failed
 * run leaves nothing listening. Every wait has a deadline.
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { createInterface } from "node:readline"
import { isAlive, processesWithArgument } from "./proc.ts"
import { until, within } from "./wait.ts"

// -----------------------------------------------------------------------------
// Clean-up
// -----------------------------------------------------------------------------

const cleanups = new Set<() => void>()

/** Registers a synchronous clean-up, run at exit (normal, thrown or signalled); returns its removal. */
export const onCleanup = (cleanup: () => void): (() => void) => {
  cleanups.add(cleanup)
  return () => void cleanups.delete(cleanup)
}

const runCleanups = () => {
  for (const cleanup of cleanups) {
    try {
      cleanup()
    } catch {
      // Already gone.
    }
  }
  cleanups.clear()
}

process.on("exit", runCleanups)
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    runCleanups()
    // The handler is gone: the signal's default action ends the benchmark.
    process.kill(process.pid, signal)
  })
}

/** Sends `signal` (by default SIGKILL) to a process, or with a negative pid to a process group, if it is still there. */
const killQuietly = (pid: number, signal: NodeJS.Signals = "SIGKILL"): void => {
  try {
    process.kill(pid, signal)
  } catch {
    // Already gone.
  }
}

/** Kills (SIGKILL) every live process with `argument` in its command line (see `processesWithArgument`). */
export const killAllWith = (argument: string): void => {
  for (const pid of processesWithArgument(argument)) killQuietly(pid)
}

/** Registers a clean-up that kills (SIGKILL) every process with `argument` (see `processesWithArgument`). */
export const killAllWithArgument = (argument: string): (() => void) => onCleanup(() => killAllWith(argument))

// -----------------------------------------------------------------------------
// Node programs
// -----------------------------------------------------------------------------

/** A Node program started by a benchmark, with its output read line by line. */
export interface Child {
  readonly pid: number
  /** Every stdout line so far, of this process and of any descendant writing to the same pipe. */
  readonly lines: Array<string>
  /** Every stderr line so far. */
  readonly errors: Array<string>
  /** Waits, bounded, for a stdout line at index `from` or later that matches `pattern`. */
  readonly waitForLine: (pattern: RegExp, ms: number, from?: number) => Promise<RegExpMatchArray>
  /** Settles when the process itself has exited. */
  readonly exited: Promise<void>
  /** SIGTERM, then SIGKILL (to the whole group, with `group`) when it has not exited within `ms`. */
  readonly stop: (ms?: number) => Promise<void>
}

/**
 * Runs `node ...args` on this benchmark's Node. With `group`, the child leads
 * a process group of its own, and clean-up kills the whole group: the
 * descendants (restarted generations, which are not our children) with it.
 * With `wrapper`, Node runs under that command (`valgrind ...`), which must
 * exec it in the same process. `env` adds to (or, with `undefined`, removes
 * from) this process's environment.
 */
export const spawnNode = (
  args: ReadonlyArray<string>,
  options: {
    readonly group?: boolean
    readonly wrapper?: ReadonlyArray<string>
    readonly env?: Record<string, string | undefined>
  } = {}
): Child => {
  const group = options.group ?? false
  const [command, ...prefix] = [...(options.wrapper ?? []), process.execPath]
  const child = spawn(command!, [...prefix, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    detached: group,
    env: { ...process.env, ...options.env }
  })
  const pid = child.pid
  if (pid === undefined) throw new Error(`cannot start node ${args.join(" ")}`)
  const killAll = () => killQuietly(group ? -pid : pid)
  const removeCleanup = onCleanup(killAll)
  const output = readOutput(child, pid)
  const exit = exitOf(child, () => {
    if (!group) removeCleanup()
  })
  const stop = async (ms = 5000) => {
    if (!exit.hasExited()) {
      child.kill("SIGTERM")
      await within(exit.exited, ms, `pid ${pid} to exit`).catch(killAll)
      await exit.exited
    }
    if (group) {
      // The other generations, if any is left.
      killAll()
      removeCleanup()
    }
  }
  return { pid, ...output, exited: exit.exited, stop }
}

/** When the process itself exits; `onExit` runs then. */
const exitOf = (child: ChildProcess, onExit: () => void) => {
  let done = false
  const exited = new Promise<void>((resolve) =>
    child.once("exit", () => {
      done = true
      onExit()
      resolve()
    })
  )
  return { exited, hasExited: () => done }
}

/** A child's stdout and stderr, line by line, and bounded waits for a stdout line. */
const readOutput = (child: ChildProcess, pid: number): Pick<Child, "lines" | "errors" | "waitForLine"> => {
  const lines: Array<string> = []
  const errors: Array<string> = []
  // Stdout ends once every process holding it (with `group`, every generation) has gone.
  const state = { ended: false }
  const waiters = new Set<() => void>()
  const wake = () => {
    for (const waiter of waiters) waiter()
  }
  createInterface({ input: child.stdout! })
    .on("line", (line) => {
      lines.push(line)
      wake()
    })
    .on("close", () => {
      state.ended = true
      wake()
    })
  createInterface({ input: child.stderr! }).on("line", (line) => {
    errors.push(line)
    if (process.env.BENCH_VERBOSE) process.stderr.write(`  [${pid}] ${line}\n`)
  })
  const waitForLine = (pattern: RegExp, ms: number, from = 0) =>
    within(
      new Promise<RegExpMatchArray>((resolve, reject) => {
        let next = from
        const check = () => {
          for (; next < lines.length; next++) {
            const match = lines[next]!.match(pattern)
            if (match !== null) {
              waiters.delete(check)
              return resolve(match)
            }
          }
          if (state.ended) {
            waiters.delete(check)
            reject(new Error(`pid ${pid} ended without a line matching ${pattern}; stderr:\n${errors.join("\n")}`))
          }
        }
        waiters.add(check)
        check()
      }),
      ms,
      `a line matching ${pattern} from pid ${pid}`
    )
  return { lines, errors, waitForLine }
}

/** What `terminate` saw. */
export interface Terminated {
  readonly pid: number
  readonly exited: boolean
  readonly exitMs: number
  /** The processes `others` still found at the end. */
  readonly leftover: Array<number>
}

/**
 * SIGTERM to `pid`; waits (15 s) for it to exit, then up to `settleMs` for the processes `others` finds (those
 * that must end with it) to be gone.
 */
export const terminate = async (pid: number, others: () => Array<number>, settleMs = 0): Promise<Terminated> => {
  const started = performance.now()
  process.kill(pid, "SIGTERM")
  const exited = await until(() => !isAlive(pid), 15_000, `pid ${pid} to exit after SIGTERM`).then(
    () => true,
    () => false
  )
  const exitMs = performance.now() - started
  if (settleMs > 0) await until(() => others().length === 0, settleMs, "the others to exit").catch(() => undefined)
  return { pid, exited, exitMs, leftover: others() }
}

// -----------------------------------------------------------------------------
// This benchmark's end
// -----------------------------------------------------------------------------

/** Ends the benchmark (exit code 2) if it has not ended within `ms`, with every process it started (see above). */
export const deadline = (ms: number): void => {
  setTimeout(() => {
    console.error(`\nFAILED: the run took more than ${ms / 1000} s`)
    // oxlint-disable-next-line unicorn/no-process-exit
    process.exit(2)
  }, ms).unref()
}

/** Runs a benchmark's `main`: a failure is printed with its stack, and the exit code says it. */
export const runMain = (main: () => Promise<void>): Promise<void> =>
  main().catch((error: unknown) => {
    process.exitCode = 1
    console.error(`\nFAILED: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
  })
