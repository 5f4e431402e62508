/**
 * Helpers shared by the benchmarks: child processes that are killed whatever
 * happens, bounded waits, autocannon runs, readings from /proc, statistics and
 * result files.
 *
 * Every process a benchmark starts is registered here and killed (SIGKILL) when
 * the benchmark exits, throws, or is interrupted by a signal, so a failed run
 * leaves nothing listening. Every wait has a deadline.
 */
import { execFileSync, spawn } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import { availableParallelism, loadavg, setPriority, tmpdir } from "node:os"
import { dirname, join, relative } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import autocannon from "autocannon"
import * as NetAddress from "effect/net/NetAddress"
import * as Result from "effect/Result"
import * as Sys from "../src/internal/sys.ts"

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

// -----------------------------------------------------------------------------
// Waiting
// -----------------------------------------------------------------------------

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Rejects when `promise` has not settled within `ms`. */
export const within = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Polls `check` until it holds, for at most `ms`. */
export const until = async (check: () => boolean, ms: number, what: string, every = 10): Promise<void> => {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(every)
  }
}

// -----------------------------------------------------------------------------
// Processes
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
  const killAll = () => {
    try {
      process.kill(group ? -pid : pid, "SIGKILL")
    } catch {
      // Nothing left to kill.
    }
  }
  const removeCleanup = onCleanup(killAll)

  const lines: Array<string> = []
  const errors: Array<string> = []
  // Stdout ends once every process holding it (with `group`, every generation) has gone.
  let outputEnded = false
  const waiters = new Set<() => void>()
  const wake = () => {
    for (const waiter of waiters) waiter()
  }
  createInterface({ input: child.stdout })
    .on("line", (line) => {
      lines.push(line)
      wake()
    })
    .on("close", () => {
      outputEnded = true
      wake()
    })
  createInterface({ input: child.stderr }).on("line", (line) => {
    errors.push(line)
    if (process.env.BENCH_VERBOSE) process.stderr.write(`  [${pid}] ${line}\n`)
  })
  let hasExited = false
  const exited = new Promise<void>((resolve) =>
    child.once("exit", () => {
      hasExited = true
      if (!group) removeCleanup()
      resolve()
    })
  )

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
          if (outputEnded) {
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

  const stop = async (ms = 5000) => {
    if (!hasExited) {
      child.kill("SIGTERM")
      await within(exited, ms, `pid ${pid} to exit`).catch(killAll)
      await exited
    }
    if (group) {
      // The other generations, if any is left.
      killAll()
      removeCleanup()
    }
  }

  return { pid, lines, errors, waitForLine, exited, stop }
}

const stat = (pid: number): Array<string> | undefined => {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8")
    // The command name, in parentheses, may itself contain spaces: fields start after the last ")".
    return text.slice(text.lastIndexOf(")") + 2).split(" ")
  } catch {
    return undefined
  }
}

/** Whether a process exists and is not a zombie (a generation's parent may never reap it). */
export const isAlive = (pid: number): boolean => {
  const state = stat(pid)?.[0]
  return state !== undefined && state !== "Z" && state !== "X"
}

/** The live (non-zombie) processes of a process group. */
export const processGroup = (pgid: number): Array<number> =>
  readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((pid) => {
      const fields = stat(pid)
      return fields !== undefined && Number(fields[2]) === pgid && isAlive(pid)
    })

/**
 * The live (non-zombie) processes with `argument` as one of their command-line arguments: a program's unique
 * address (`127.0.0.1:40123`) finds every process of it, those in process groups of their own (workers) too.
 */
export const processesWithArgument = (argument: string): Array<number> => {
  const needle = `\0${argument}\0`
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((pid) => {
      try {
        return `\0${readFileSync(`/proc/${pid}/cmdline`, "latin1")}`.includes(needle) && isAlive(pid)
      } catch {
        return false
      }
    })
}

/** Registers a clean-up that kills (SIGKILL) every process with `argument` (see `processesWithArgument`). */
export const killAllWithArgument = (argument: string): (() => void) =>
  onCleanup(() => {
    for (const pid of processesWithArgument(argument)) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // Already gone.
      }
    }
  })

/** Open fds (`/proc/<pid>/fd`) and resident memory (`VmRSS`, in KiB) of a process. */
export const processStats = (pid: number): { readonly fds: number; readonly rssKiB: number } => {
  const fds = readdirSync(`/proc/${pid}/fd`).length
  const rss = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB$/m)
  return { fds, rssKiB: rss === null ? Number.NaN : Number(rss[1]) }
}

/** CPU time (user + system, `/proc/<pid>/stat`) a process has used so far, in milliseconds (10 ms ticks). */
export const cpuMillis = (pid: number): number => {
  const fields = stat(pid)
  if (fields === undefined) throw new Error(`no process ${pid}`)
  // utime and stime, fields 14 and 15 of stat(5), in clock ticks of 1/100 s (USER_HZ on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10
}

/** Busy CPU time of the whole machine so far, in milliseconds (`/proc/stat`, 10 ms ticks). */
const machineBusyMillis = (): number => {
  // cpu  user nice system idle iowait irq softirq steal ...
  const [user, nice, system, , , irq, softirq, steal] = readFileSync("/proc/stat", "utf8")
    .split("\n", 1)[0]!
    .split(/\s+/)
    .slice(1)
    .map(Number)
  return (user! + nice! + system! + irq! + softirq! + steal!) * 10
}

/**
 * Starts measuring how busy the rest of the machine is: the CPU used by every
 * process but this one and `pids`. `stop` returns it in cores (1 = one core
 * busy all along), the measure of how much other work competed with the run.
 */
export const otherLoad = (pids: ReadonlyArray<number>): { readonly stop: () => number } => {
  const ours = () => {
    const self = process.cpuUsage()
    return (self.user + self.system) / 1000 + pids.reduce((n, pid) => n + cpuMillis(pid), 0)
  }
  const started = { at: performance.now(), machine: machineBusyMillis(), ours: ours() }
  return {
    stop: () => {
      const elapsed = performance.now() - started.at
      return Math.max(0, machineBusyMillis() - started.machine - (ours() - started.ours)) / elapsed
    }
  }
}

/**
 * Sets the nice value of every thread of a process. On Linux a nice value
 * belongs to a thread (setpriority(2) with a pid sets the main thread's
 * alone), and a new thread starts with its creator's; returns how many
 * threads were set.
 */
export const setNice = (pid: number, nice: number): number => {
  let set = 0
  let threads: Array<string> = []
  try {
    threads = readdirSync(`/proc/${pid}/task`)
  } catch {
    return 0
  }
  for (const tid of threads) {
    try {
      setPriority(Number(tid), nice)
      set++
    } catch {
      // The thread has ended.
    }
  }
  return set
}

/**
 * A compile cache directory of its own for one run, removed at exit, so that
 * no run reads what an earlier one compiled (Node's default directory,
 * `<tmpdir>/node-compile-cache`, outlives runs).
 */
export const freshCompileCache = (): { readonly directory: string; readonly remove: () => void } => {
  const directory = mkdtempSync(join(tmpdir(), "effect-grace-compile-cache-"))
  const remove = () => rmSync(directory, { recursive: true, force: true })
  const removeCleanup = onCleanup(remove)
  return {
    directory,
    remove: () => {
      removeCleanup()
      remove()
    }
  }
}

/** `n` distinct ports free on 127.0.0.1 right now (bound together, then released). */
export const freePorts = async (n: number): Promise<Array<number>> => {
  const servers = Array.from({ length: n }, () => Net.createServer())
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))))
  const ports = servers.map((server) => (server.address() as Net.AddressInfo).port)
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))))
  return ports
}

// -----------------------------------------------------------------------------
// Load
// -----------------------------------------------------------------------------

/** A running autocannon instance and its result. */
export interface Load {
  readonly instance: autocannon.Instance
  readonly result: Promise<autocannon.Result>
}

/** Starts autocannon (programmatic API; keep-alive connections, no pipelining). */
export const startLoad = (options: autocannon.Options): Load => {
  let instance: autocannon.Instance | undefined
  const result = new Promise<autocannon.Result>((resolve, reject) => {
    instance = autocannon(options, (error, done) => (error ? reject(error) : resolve(done)))
  })
  return { instance: instance!, result }
}

// -----------------------------------------------------------------------------
// Instruction counts
// -----------------------------------------------------------------------------

/** Whether valgrind, with callgrind and `callgrind_control`, is on this machine. */
export const hasCallgrind = (): boolean => {
  try {
    execFileSync("valgrind", ["--version"], { stdio: "ignore" })
    execFileSync("callgrind_control", ["--version"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}

/** What `instructionsPerRequest` counted. */
export interface InstructionCount {
  /** Instructions the server process executed (all its threads) while it answered `requests`. */
  readonly instructions: number
  /** Of those, the main thread's: the event loop, which runs every request's JavaScript. */
  readonly mainThread: number
  readonly requests: number
  readonly perRequest: number
  readonly mainThreadPerRequest: number
  /** Errors, timeouts and non-2xx answers among those requests. */
  readonly failed: number
}

/**
 * Counts the instructions a Node server executes per request, with
 * callgrind: the server (`node ...args`, which prints `listening URL` once it
 * accepts) runs under valgrind with counting off; `warmup` requests let the
 * JIT settle; counting is on for `requests` more, then off, and the counts are
 * dumped and read, per thread: all of them, and the main thread alone. V8's
 * background threads (its optimizing compiler, helpers of its garbage
 * collector) run beside the main thread; under valgrind, some fifty times
 * slower, the compiler was still at work in the counted window (seen here:
 * some 10% of all instructions, varying from process to process).
 */
export const instructionsPerRequest = async (options: {
  readonly args: ReadonlyArray<string>
  readonly path: string
  readonly connections: number
  readonly warmup: number
  readonly requests: number
}): Promise<InstructionCount> => {
  const dir = mkdtempSync(join(tmpdir(), "effect-grace-callgrind-"))
  const removeDir = () => rmSync(dir, { recursive: true, force: true })
  const removeCleanup = onCleanup(removeDir)
  const server = spawnNode(options.args, {
    wrapper: [
      "valgrind",
      "--tool=callgrind",
      "--instr-atstart=no",
      "--separate-threads=yes",
      `--callgrind-out-file=${join(dir, "callgrind.out")}`
    ]
  })
  try {
    // Under valgrind, Node starts some ten times slower.
    const [, origin] = await server.waitForLine(/^listening (\S+)$/, 180_000)
    const url = `${origin}${options.path}`
    const control = (flag: string) => execFileSync("callgrind_control", [flag, String(server.pid)], { stdio: "ignore" })
    const run = (amount: number) =>
      startLoad({ url, connections: options.connections, amount, timeout: 60, pipelining: 1 }).result
    await run(options.warmup)
    control("--instr=on")
    const result = await run(options.requests)
    control("--instr=off")
    control("--dump")
    // One file per thread and dump: `callgrind.out.1-01` is the first dump's count of thread 1, the main thread.
    const totals = readdirSync(dir).map((file) => ({
      main: file.endsWith("-01"),
      instructions: Number(readFileSync(join(dir, file), "utf8").match(/^totals: (\d+)/m)?.[1] ?? 0)
    }))
    const sum = (counts: ReadonlyArray<{ readonly instructions: number }>) =>
      counts.reduce((total, count) => total + count.instructions, 0)
    const instructions = sum(totals)
    const mainThread = sum(totals.filter((count) => count.main))
    if (mainThread === 0)
      throw new Error(`callgrind counted nothing on the main thread of node ${options.args.join(" ")}`)
    const requests = result.requests.total
    return {
      instructions,
      mainThread,
      requests,
      perRequest: instructions / requests,
      mainThreadPerRequest: mainThread / requests,
      failed: result.errors + result.timeouts + result.non2xx
    }
  } finally {
    await server.stop()
    removeDir()
    removeCleanup()
  }
}

// -----------------------------------------------------------------------------
// Statistics and reports
// -----------------------------------------------------------------------------

/** The nearest-rank percentile (`p` in 0..100) of values sorted in ascending order. */
export const percentile = (sorted: ArrayLike<number>, p: number): number =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

/** Sorts latencies for `percentile`. */
export const sortedOf = (values: ArrayLike<number>): Float64Array => Float64Array.from(values).toSorted()

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = sortedOf(values)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

/** A number with fixed decimals, for tables. */
export const fixed = (value: number, digits = 2): string => (Number.isFinite(value) ? value.toFixed(digits) : "n/a")

/** A markdown table with padded columns (readable on a terminal as well). */
export const markdownTable = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) => `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join("\n")
}

/**
 * Writes `<name>.json`, `<name>.md` and, given one, `<name>.svg` in `directory`
 * (by default `bench/results/`).
 */
export const writeResults = (
  name: string,
  json: unknown,
  markdown: string,
  svg?: string,
  directory: string = fileURLToPath(new URL("results/", import.meta.url))
): void => {
  mkdirSync(directory, { recursive: true })
  writeFileSync(join(directory, `${name}.json`), `${JSON.stringify(json, null, 2)}\n`)
  writeFileSync(join(directory, `${name}.md`), `${markdown.trimEnd()}\n`)
  if (svg !== undefined) writeFileSync(join(directory, `${name}.svg`), svg)
  const near = relative(process.cwd(), directory)
  const shown = near.startsWith("..") ? directory : near
  console.log(`\nWrote ${join(shown, name)}.json, ${name}.md${svg === undefined ? "" : ` and ${name}.svg`}`)
}

/**
 * The commit measured, `-dirty` when src/ has uncommitted changes (`BENCH_REVISION` overrides), of the checkout
 * holding `directory` (by default this one).
 */
const revision = (directory: string = fileURLToPath(new URL("..", import.meta.url))): string => {
  if (process.env.BENCH_REVISION) return process.env.BENCH_REVISION
  try {
    const git = (...args: Array<string>) =>
      execFileSync("git", args, {
        cwd: directory,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"]
      }).trim()
    return `${git("rev-parse", "--short", "HEAD")}${git("status", "--porcelain", "--", "src") === "" ? "" : "-dirty"}`
  } catch {
    return "unknown"
  }
}

/** What the benchmark ran on, recorded with its results; `directory` is in the checkout measured, if not this one. */
export const machine = (directory?: string) => ({
  revision: revision(directory),
  node: process.version,
  cpus: availableParallelism(),
  /** 1, 5 and 15 minute load averages when this is read (the run's own load included): how busy the machine was. */
  loadAverage: loadavg().map((n) => Math.round(n * 100) / 100),
  date: new Date().toISOString()
})

/**
 * A program bundled into one ES module with rolldown (vite's bundler, installed with vitest), at `file`, which must
 * be inside the program's repository so that the bundle still finds its native dependency (koffi) there. Undefined
 * where rolldown is not installed.
 */
export const bundleProgram = (entry: string, file: string): string | undefined => {
  const rolldown = join(dirname(fileURLToPath(import.meta.url)), "../node_modules/.bin/rolldown")
  if (!existsSync(rolldown)) return undefined
  execFileSync(rolldown, [entry, "--format", "esm", "--platform", "node", "--file", file], {
    stdio: "ignore",
    timeout: 120_000
  })
  return file
}

// -----------------------------------------------------------------------------
// Workers sharing a port (bench:balance, bench:workers)
// -----------------------------------------------------------------------------

/**
 * Binds 127.0.0.1:`port` without accepting (`SO_REUSEPORT` with `reusePort`): this process holds the socket and
 * never polls it, as effect-grace's primary does.
 */
export const bindLoopback = (port: number, reusePort = false): { readonly fd: number; readonly port: number } => {
  const fd = Sys.bindListen(NetAddress.inetAddressUnsafe(NetAddress.ipv4Loopback, port), 511, { reusePort })
  if (Result.isFailure(fd)) throw new Error(`cannot bind 127.0.0.1:${port}: ${Sys.formatSysError(fd.failure)}`)
  const address = Sys.localAddress(fd.success)
  if (Result.isFailure(address) || address.success._tag !== "InetAddressV4") {
    throw new Error(`cannot read the address of fd ${fd.success}`)
  }
  return { fd: fd.success, port: address.success.port }
}

/** Each worker's share of `counts`, largest first. */
export const sharesOf = (counts: ReadonlyArray<number>): Array<number> => {
  const total = counts.reduce((a, b) => a + b, 0)
  return counts.map((n) => (total === 0 ? Number.NaN : n / total)).toSorted((a, b) => b - a)
}

/** The largest share over the mean share: 1 is even, N is everything on one of N workers. */
export const maxOverMean = (shares: ReadonlyArray<number>): number => (shares[0] ?? Number.NaN) * shares.length

/** Shares as percents: `58/42`. */
export const percents = (shares: ReadonlyArray<number>) => shares.map((share) => fixed(share * 100, 0)).join("/")
