/**
 * Watching processes from a worker thread, off the load's event loop: the
 * count of a run's processes every few ms (`startSampler`), and a successor's
 * priority lowered as soon as it appears (`startRenicer`, `--renice`).
 */
import { Worker } from "node:worker_threads"
import type { Watch } from "./demo.ts"
import { setNice } from "./proc.ts"
import { within } from "./wait.ts"

/** A count of processes at a time (`performance.now()`). */
export interface Sample {
  readonly at: number
  readonly count: number
}

/**
 * Counts the demo's processes (those with `argument` in their command line)
 * every `everyMs` in a worker thread, off the load's event loop: each sample
 * is a time (`performance.timeOrigin + performance.now()`) and a count.
 */
const SAMPLER_WORKER = `
const { parentPort, workerData } = require("node:worker_threads")
const { readdirSync, readFileSync } = require("node:fs")
const needle = "\\0" + workerData.argument + "\\0"
const alive = (pid) => {
  try {
    const stat = readFileSync("/proc/" + pid + "/stat", "utf8")
    const state = stat[stat.lastIndexOf(")") + 2]
    return state !== "Z" && state !== "X"
  } catch {
    return false
  }
}
const count = () => {
  let n = 0
  for (const entry of readdirSync("/proc")) {
    if (!/^\\d+$/.test(entry)) continue
    try {
      if (("\\0" + readFileSync("/proc/" + entry + "/cmdline", "latin1")).includes(needle) && alive(entry)) n++
    } catch {}
  }
  return n
}
const samples = []
const timer = setInterval(() => samples.push(performance.timeOrigin + performance.now(), count()), workerData.everyMs)
parentPort.on("message", () => {
  clearInterval(timer)
  parentPort.postMessage(samples)
})
`

export const startSampler = (argument: string, everyMs: number) => {
  const worker = new Worker(SAMPLER_WORKER, {
    eval: true,
    workerData: { argument, everyMs }
  })
  const stop = async (): Promise<Array<Sample>> => {
    const flat = await within(
      new Promise<Array<number>>((resolve) => {
        worker.once("message", resolve)
        // A worker thread's port, not a window: there is no origin.
        // oxlint-disable-next-line unicorn/require-post-message-target-origin
        worker.postMessage("stop")
      }),
      10_000,
      "the process sampler to stop"
    )
    await worker.terminate()
    const samples: Array<Sample> = []
    for (let i = 0; i < flat.length; i += 2)
      samples.push({ at: flat[i]! - performance.timeOrigin, count: flat[i + 1]! })
    return samples
  }
  return { stop, kill: () => void worker.terminate() }
}

/**
 * `--renice`: a worker thread watches for the successor of a signalled
 * process (its child, polled every 0.5 ms: this thread is busy with the load)
 * and sets the nice value of all its threads as soon as it appears, the main
 * thread first, so that threads started meanwhile inherit it.
 */
const RENICE_WORKER = `
const { parentPort } = require("node:worker_threads")
const { readFileSync, readdirSync } = require("node:fs")
const { setPriority } = require("node:os")
const pause = new Int32Array(new SharedArrayBuffer(4))
const childOf = (pid) => {
  try {
    return Number(readFileSync("/proc/" + pid + "/task/" + pid + "/children", "utf8").split(" ").find(Boolean)) || 0
  } catch {
    return 0
  }
}
const renice = (pid, nice) => {
  try { setPriority(pid, nice) } catch {}
  try { for (const tid of readdirSync("/proc/" + pid + "/task")) try { setPriority(Number(tid), nice) } catch {} } catch {}
}
parentPort.on("message", ({ from, nice, stop }) => {
  const stopped = new Int32Array(stop)
  let child = 0
  while (child === 0 && Atomics.load(stopped, 0) === 0) {
    child = childOf(from)
    if (child === 0) Atomics.wait(pause, 0, 0, 0.5)
  }
  if (child !== 0) renice(child, nice)
  parentPort.postMessage({ child, at: performance.timeOrigin + performance.now() })
})
`

export const startRenicer = (nice: number) => {
  const worker = new Worker(RENICE_WORKER, { eval: true })
  worker.unref()
  /**
   * Starts watching for `from`'s successor; `ready` stops watching, sets it back to nice 0, and gives the ms from
   * the signal to the renice (NaN if it never appeared).
   */
  const watch: Watch<number> = (from, since) => {
    const stop = new SharedArrayBuffer(4)
    const found = new Promise<{ readonly child: number; readonly at: number }>((resolve) =>
      worker.once("message", resolve)
    )
    // A worker thread's port, not a window: there is no origin.
    // oxlint-disable-next-line unicorn/require-post-message-target-origin
    worker.postMessage({ from, nice, stop })
    return {
      ready: async (to: number) => {
        Atomics.store(new Int32Array(stop), 0, 1)
        const { child, at } = await found
        // Every thread, those started since the renice (which inherited it) too.
        setNice(child === 0 ? to : child, 0)
        return child === 0 ? Number.NaN : at - (performance.timeOrigin + since)
      }
    }
  }
  return { watch, stop: () => worker.terminate() }
}
