/**
 * What Linux's /proc says of processes and of the machine: whether a process
 * lives, which processes belong to a run, their fds, memory and CPU time, how
 * busy the rest of the machine is; and the nice value of a process's threads.
 */
import { readdirSync, readFileSync } from "node:fs"
import { setPriority } from "node:os"

const stat = (pid: number): Array<string> | undefined => {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8")
    // The command name, in parentheses, may itself contain spaces: fields start after the last ")".
    return text.slice(text.lastIndexOf(")") + 2).split(" ")
  } catch {
    return undefined
  }
}

/** Every pid in /proc. */
const everyPid = (): Array<number> =>
  readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)

/** Whether a process exists and is not a zombie (a generation's parent may never reap it). */
export const isAlive = (pid: number): boolean => {
  const state = stat(pid)?.[0]
  return state !== undefined && state !== "Z" && state !== "X"
}

/** The live (non-zombie) processes of a process group. */
export const processGroup = (pgid: number): Array<number> =>
  everyPid().filter((pid) => {
    const fields = stat(pid)
    return fields !== undefined && Number(fields[2]) === pgid && isAlive(pid)
  })

/**
 * The live (non-zombie) processes with `argument` as one of their command-line arguments: a program's unique
 * address (`127.0.0.1:40123`) finds every process of it, those in process groups of their own (workers) too.
 */
export const processesWithArgument = (argument: string): Array<number> => {
  const needle = `\0${argument}\0`
  return everyPid().filter((pid) => {
    try {
      return `\0${readFileSync(`/proc/${pid}/cmdline`, "latin1")}`.includes(needle) && isAlive(pid)
    } catch {
      return false
    }
  })
}

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

/** What `cpuDuring` measured, CPU in cores (1 = one core busy all along). */
export interface CpuDuring<A> {
  readonly result: A
  readonly elapsedMs: number
  /** Of each of the processes watched, in their order. */
  readonly cores: Array<number>
  /** Of this process: the client, when it runs the load. */
  readonly clientCores: number
  /** Of every other process on the machine (see `otherLoad`). */
  readonly otherCores: number
}

/** Runs `work`, measuring the CPU that `pids`, this process and the rest of the machine used meanwhile. */
export const cpuDuring = async <A>(pids: ReadonlyArray<number>, work: () => Promise<A>): Promise<CpuDuring<A>> => {
  const others = otherLoad(pids)
  const before = pids.map(cpuMillis)
  const clientBefore = process.cpuUsage()
  const started = performance.now()
  const result = await work()
  const elapsedMs = performance.now() - started
  const cores = pids.map((pid, i) => (cpuMillis(pid) - before[i]!) / elapsedMs)
  const client = process.cpuUsage(clientBefore)
  const otherCores = others.stop()
  return { result, elapsedMs, cores, clientCores: (client.user + client.system) / 1000 / elapsedMs, otherCores }
}
