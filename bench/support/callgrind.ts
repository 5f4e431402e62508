/**
 * Instructions per request, counted by valgrind's callgrind: the figure that
 * does not move with the machine's load.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { startLoad } from "./load.ts"
import { onCleanup, spawnNode } from "./process.ts"

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
    const { instructions, mainThread } = readCounts(dir)
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

/** The instructions callgrind dumped in `dir`: of every thread, and of the main thread. */
const readCounts = (dir: string) => {
  // One file per thread and dump: `callgrind.out.1-01` is the first dump's count of thread 1, the main thread.
  const totals = readdirSync(dir).map((file) => ({
    main: file.endsWith("-01"),
    instructions: Number(readFileSync(join(dir, file), "utf8").match(/^totals: (\d+)/m)?.[1] ?? 0)
  }))
  const sum = (counts: ReadonlyArray<{ readonly instructions: number }>) =>
    counts.reduce((total, count) => total + count.instructions, 0)
  return { instructions: sum(totals), mainThread: sum(totals.filter((count) => count.main)) }
}
