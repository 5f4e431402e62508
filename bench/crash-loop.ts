/**
 * A crash loop under new connections: what happens to the connections the
 * kernel hands to a slot of the demo's workers (`GRACE_WORKERS`) while that
 * slot has no worker, its worker killed every time it starts.
 *
 *   npm run bench:crash-loop [-- --scenarios 2x1,4x2 --runs 2 --rate 200 --kill-seconds 20 --deadline 10
 *                               --warmup 3 --tail 5 --before DIR --out bench/results]
 *
 * A scenario `NxK` is the demo with N workers, slots 1..K crash-looping. A
 * run starts the demo on fresh ports and, once it is ready, sends `--rate`
 * requests a second to its first port, each on a new TCP connection
 * (`Connection: close`) with a deadline (`--deadline` seconds). After the
 * warm-up it kills (SIGKILL) the worker of each looping slot, then every
 * worker started for those slots as soon as the primary logs `worker
 * started`, for `--kill-seconds`: the primary starts each again after its
 * backoff (1 s, then 1.5 times longer each time). The load goes on until
 * every looping slot serves again (`worker serving`), then `--tail` seconds.
 * `ss` samples the accept queue (Recv-Q) of every listening socket of the
 * port every half second.
 *
 * Each request ends as one of: answered (a 2xx answer read to the end
 * within the deadline), connect timeout (the handshake did not complete: the
 * accept queue it was hashed to was full), timeout after connect (it waited
 * in an accept queue no one accepted from), error (a reset, a refusal, a
 * close without an answer, another status). The target: none fails or times
 * out, and none takes a second or more.
 *
 * With `--before DIR`, every run is made on the demo of the checkout at DIR
 * too (a build of the library before a change, with its dependencies
 * installed), interleaved with this one's: the report sets them side by side.
 */
import { execFile } from "node:child_process"
import * as Net from "node:net"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { DEMO, logReader, spawnDemo } from "./support/demo.ts"
import type { Demo, Logs, LogLine } from "./support/demo.ts"
import { freePorts } from "./support/net.ts"
import { otherLoad } from "./support/proc.ts"
import { deadline, runMain } from "./support/process.ts"
import { fixed, machine, markdownTable, writeResults } from "./support/report.ts"
import { latencyOf } from "./support/stats.ts"
import { sleep } from "./support/wait.ts"

const HOST = "127.0.0.1"

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

interface Scenario {
  readonly name: string
  readonly workers: number
  readonly slots: ReadonlyArray<number>
}

const scenarioOf = (name: string): Scenario => {
  const match = name.match(/^(\d+)x(\d+)$/)
  if (match === null || Number(match[2]) >= Number(match[1])) throw new Error(`a scenario is NxK, K < N: ${name}`)
  return { name, workers: Number(match[1]), slots: Array.from({ length: Number(match[2]) }, (_, i) => i + 1) }
}

const { values: flags } = parseArgs({
  options: {
    scenarios: { type: "string", default: "2x1,4x2" },
    runs: { type: "string", default: "2" },
    rate: { type: "string", default: "200" },
    "kill-seconds": { type: "string", default: "20" },
    deadline: { type: "string", default: "10" },
    warmup: { type: "string", default: "3" },
    tail: { type: "string", default: "5" },
    before: { type: "string" },
    out: { type: "string" }
  }
})

const settings = {
  scenarios: flags.scenarios.split(",").map(scenarioOf),
  runs: Number(flags.runs),
  rate: Number(flags.rate),
  killMs: Number(flags["kill-seconds"]) * 1000,
  deadlineMs: Number(flags.deadline) * 1000,
  warmupMs: Number(flags.warmup) * 1000,
  tailMs: Number(flags.tail) * 1000
}

/** A run's bound: the loop, the slowest recovery (a backoff of up to 30 s and a start-up), the tail, start-ups. */
const RUN_MS = settings.warmupMs + settings.killMs + 45_000 + settings.tailMs + settings.deadlineMs

/** Which demo: this checkout's, or the one at `--before`. */
interface Build {
  readonly label: string
  readonly entry: string
  readonly revision: string
}

// -----------------------------------------------------------------------------
// The load: a new connection per request, at a fixed rate
// -----------------------------------------------------------------------------

type Outcome = "answered" | "connect-timeout" | "timeout-after-connect" | "error"

interface Request {
  /** When it began, in milliseconds since the load began. */
  readonly start: number
  readonly millis: number
  readonly outcome: Outcome
  readonly detail: string | undefined
}

/** One request on a connection of its own; never rejects. */
const oneRequest = (port: number, began: number): Promise<Request> =>
  new Promise((resolve) => {
    const start = performance.now()
    const state = { connected: false, done: false, data: "" }
    const socket = Net.connect({ host: HOST, port })
    const finish = (outcome: Outcome, detail?: string) => {
      if (state.done) return
      state.done = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ start: start - began, millis: performance.now() - start, outcome, detail })
    }
    const timer = setTimeout(
      () => finish(state.connected ? "timeout-after-connect" : "connect-timeout"),
      settings.deadlineMs
    )
    socket.setEncoding("latin1")
    socket.once("connect", () => {
      state.connected = true
      socket.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`)
    })
    socket.on("data", (chunk: string) => (state.data += chunk))
    socket.once("end", () => {
      const status = Number(state.data.slice(9, 12))
      if (status >= 200 && status < 300) finish("answered")
      else finish("error", state.data === "" ? "closed without an answer" : `status ${status}`)
    })
    socket.once("error", (error: NodeJS.ErrnoException) => finish("error", error.code ?? error.message))
  })

/** Sends `--rate` requests a second, on schedule (a late tick sends what is due), until stopped. */
const startLoad = (port: number) => {
  const began = performance.now()
  const pending: Array<Promise<Request>> = []
  const tick = setInterval(() => {
    const due = Math.floor(((performance.now() - began) * settings.rate) / 1000)
    while (pending.length < due) pending.push(oneRequest(port, began))
  }, 2)
  return {
    clock: () => performance.now() - began,
    /** Stops sending; every request, once the last has ended. */
    stop: () => {
      clearInterval(tick)
      return Promise.all(pending)
    }
  }
}

// -----------------------------------------------------------------------------
// Accept queues, from ss
// -----------------------------------------------------------------------------

/** The accept queues (Recv-Q) of the listening sockets of `port`, by inode. */
const readQueues = (port: number): Promise<Map<string, number>> =>
  new Promise((resolve) => {
    execFile("ss", ["-Hltne", `sport = :${port}`], { encoding: "utf8" }, (error, stdout) => {
      const queues = new Map<string, number>()
      if (error !== null) return resolve(queues)
      for (const line of stdout.trim().split("\n")) {
        const inode = line.match(/ino:(\d+)/)?.[1]
        if (inode !== undefined) queues.set(inode, Number(line.trim().split(/\s+/)[1]))
      }
      resolve(queues)
    })
  })

/** Samples every half second until stopped: the largest accept queue any socket of `port` had. */
const sampleQueues = (port: number) => {
  const state = { running: true, largest: 0, samples: 0 }
  const loop = (async () => {
    while (state.running) {
      for (const queue of (await readQueues(port)).values()) state.largest = Math.max(state.largest, queue)
      state.samples++
      await sleep(500)
    }
  })()
  return {
    stop: async () => {
      state.running = false
      await loop
      return state.samples > 0 ? state.largest : Number.NaN
    }
  }
}

// -----------------------------------------------------------------------------
// The crash loop
// -----------------------------------------------------------------------------

const byPrimary = (demo: Demo, message: string) => (line: LogLine) =>
  line.message === `effect-grace: ${message}` && line.fields.pid === String(demo.pid)

/** The demo of `build` with `workers` workers on fresh ports, ready (the primary's own `ready`). */
const startDemo = async (build: Build, workers: number) => {
  const ports = await freePorts(3)
  const demo = spawnDemo(ports, {
    entry: build.entry,
    byAddress: true,
    env: { GRACE_WORKERS: String(workers), GRACE_PROBATION: undefined, GRACE_SHUTDOWN_DELAY: undefined }
  })
  const logs = logReader(demo.errors)
  const ready = byPrimary(demo, "ready")
  await logs.waitFor(0, "the primary ready", 60_000, (line) => ready(line) && line.fields.slot === undefined)
  return { demo, logs, port: ports[0]! }
}

/** A kill: when, in seconds since the load began, and of which slot. */
interface Kill {
  readonly atSecond: number
  readonly slot: number
}

/**
 * Kills the worker of each looping slot now, then every worker started for them (the primary's `worker started`,
 * read every 5 ms) until `--kill-seconds` have passed. Resolves once each serves again after that, or at `bound`.
 */
const crashLoop = (demo: Demo, logs: Logs, slots: ReadonlyArray<number>, clock: () => number, bound: number) => {
  const kills: Array<Kill> = []
  const started = byPrimary(demo, "worker started")
  const serving = byPrimary(demo, "worker serving")
  const kill = (slot: number, pid: number) => {
    try {
      process.kill(pid, "SIGKILL")
      kills.push({ atSecond: clock() / 1000, slot })
    } catch {
      // Gone already.
    }
  }
  const lastWorker = (slot: number) =>
    logs
      .lines()
      .filter((line) => started(line) && line.fields.slot === String(slot))
      .at(-1)
  for (const slot of slots) kill(slot, Number(lastWorker(slot)?.fields.worker))
  const endsAt = clock() + settings.killMs
  const seen = logs.lines().length
  return new Promise<{ readonly kills: Array<Kill>; readonly backAtSecond: number }>((resolve) => {
    let read = seen
    const waiting = new Set(slots)
    const timer = setInterval(() => {
      const lines = logs.lines()
      for (; read < lines.length; read++) {
        const line = lines[read]!
        const slot = Number(line.fields.slot)
        if (started(line) && slots.includes(slot) && clock() < endsAt) kill(slot, Number(line.fields.worker))
        if (serving(line) && clock() >= endsAt) waiting.delete(slot)
      }
      if (waiting.size === 0 || clock() > bound) {
        clearInterval(timer)
        resolve({ kills, backAtSecond: waiting.size === 0 ? clock() / 1000 : Number.NaN })
      }
    }, 5)
  })
}

// -----------------------------------------------------------------------------
// A run
// -----------------------------------------------------------------------------

/** Counts by outcome, latency of the answered ones, the slow ones, and the errors by detail. */
const summarize = (requests: ReadonlyArray<Request>, firstKillMs: number) => {
  const count = (outcome: Outcome) => requests.filter((r) => r.outcome === outcome).length
  const answered = requests.filter((r) => r.outcome === "answered").map((r) => r.millis)
  const errors: Record<string, number> = {}
  for (const r of requests) if (r.outcome === "error") errors[r.detail ?? "?"] = (errors[r.detail ?? "?"] ?? 0) + 1
  const failed = requests.filter((r) => r.outcome !== "answered")
  return {
    requests: requests.length,
    answered: answered.length,
    connectTimeout: count("connect-timeout"),
    timeoutAfterConnect: count("timeout-after-connect"),
    error: count("error"),
    errors,
    failed: failed.length,
    /** In flight on, or queued for, the serving worker the first kill took: any mechanism may lose those. */
    failedBegunBeforeFirstKill: failed.filter((r) => r.start < firstKillMs).length,
    latency: latencyOf(answered),
    atLeast1s: answered.filter((ms) => ms >= 1000).length
  }
}

type Summary = ReturnType<typeof summarize>

interface Run {
  readonly build: string
  readonly scenario: string
  readonly run: number
  readonly summary: Summary
  readonly kills: ReadonlyArray<Kill>
  readonly backAtSecond: number
  readonly largestAcceptQueue: number
  readonly otherCores: number
}

const runOnce = async (build: Build, scenario: Scenario, run: number): Promise<Run> => {
  const { demo, logs, port } = await startDemo(build, scenario.workers)
  try {
    // The processes that live through the run: the primary and the workers of the slots not looping.
    const lasting = logs
      .lines()
      .filter((line) => byPrimary(demo, "worker started")(line) && !scenario.slots.includes(Number(line.fields.slot)))
    const others = otherLoad([demo.pid, ...lasting.map((line) => Number(line.fields.worker))])
    const load = startLoad(port)
    const queues = sampleQueues(port)
    await sleep(settings.warmupMs)
    const firstKillMs = load.clock()
    const loop = await crashLoop(demo, logs, scenario.slots, load.clock, firstKillMs + RUN_MS - settings.tailMs)
    if (Number.isFinite(loop.backAtSecond)) await sleep(settings.tailMs)
    const requests = await load.stop()
    const largestAcceptQueue = await queues.stop()
    const summary = summarize(requests, firstKillMs)
    const otherCores = others.stop()
    return { build: build.label, scenario: scenario.name, run, summary, ...loop, largestAcceptQueue, otherCores }
  } finally {
    await demo.stop(15_000, 10_000)
  }
}

// -----------------------------------------------------------------------------
// Report
// -----------------------------------------------------------------------------

const met = (s: Summary) => s.failed === 0 && s.atLeast1s === 0

const runRow = (r: Run): Array<string> => {
  const s = r.summary
  return [
    r.build,
    r.scenario,
    String(r.run),
    String(s.requests),
    String(s.answered),
    String(s.connectTimeout),
    String(s.timeoutAfterConnect),
    String(s.error),
    fixed(s.latency.p50Ms, 1),
    fixed(s.latency.p99Ms, 0),
    fixed(s.latency.maxMs, 0),
    String(s.atLeast1s),
    String(r.kills.length),
    fixed(r.backAtSecond, 1),
    String(r.largestAcceptQueue),
    fixed(r.otherCores),
    met(s) ? "met" : "NOT met"
  ]
}

const report = (runs: ReadonlyArray<Run>, builds: ReadonlyArray<Build>, at: ReturnType<typeof machine>) => {
  const header = [
    "build",
    "scenario",
    "run",
    "requests",
    "answered",
    "connect timeout",
    "timeout after connect",
    "error",
    "p50 ms",
    "p99 ms",
    "max ms",
    ">= 1 s",
    "kills",
    "slots back at s",
    "largest accept queue",
    "other cores",
    "target"
  ]
  const errors = runs.filter((r) => Object.keys(r.summary.errors).length > 0)
  return [
    "# Crash loop: new connections while a slot's worker keeps dying",
    "",
    `\`npm run bench:crash-loop\` on Node ${at.node}, ${at.cpus} CPUs, ${at.date}, load average at the end ` +
      `${at.loadAverage.join(" / ")}. Builds: ${builds.map((b) => `${b.label} = ${b.revision}`).join(", ")}. ` +
      `Scenarios \`NxK\`: the demo with N workers, slots 1..K crash-looping for ${settings.killMs / 1000} s ` +
      `(killed as soon as each worker starts); ${settings.rate} new connections a second to one port, ` +
      `${settings.deadlineMs / 1000} s deadline each, ${settings.warmupMs / 1000} s warm-up; the load ends ` +
      `${settings.tailMs / 1000} s after the slots serve again. See the top of \`bench/crash-loop.ts\`.`,
    "",
    "Target: no request fails or times out, none takes a second or more (`>= 1 s`, of the answered ones).",
    "",
    markdownTable(header, runs.map(runRow)),
    "",
    "`largest accept queue`: the largest Recv-Q any listening socket of the port had (`ss`, every 0.5 s); a " +
      "socket's queue holds backlog + 1 = 512 at most, then SYNs are dropped. `other cores`: the CPU the rest of " +
      "the machine used meanwhile (the replacements' start-ups included), in cores: the machine is shared with " +
      "other work, so latencies move with it.",
    ...(errors.length === 0
      ? []
      : [
          "",
          "Errors:",
          ...errors.map((r) => `- ${r.build} ${r.scenario} run ${r.run}: ${JSON.stringify(r.summary.errors)}`)
        ])
  ].join("\n")
}

// -----------------------------------------------------------------------------
// Main
// -----------------------------------------------------------------------------

const buildsOf = (): Array<Build> => {
  const after: Build = { label: "after", entry: DEMO, revision: machine().revision }
  if (flags.before === undefined) return [after]
  const entry = join(flags.before, "examples", "demo.ts")
  return [{ label: "before", entry, revision: machine(flags.before).revision }, after]
}

const main = async () => {
  const builds = buildsOf()
  const runs: Array<Run> = []
  for (let run = 1; run <= settings.runs; run++) {
    for (const scenario of settings.scenarios) {
      for (const build of builds) {
        console.log(`${build.label} ${scenario.name} run ${run}...`)
        const result = await runOnce(build, scenario, run)
        console.log(`  ${JSON.stringify({ ...result.summary, kills: result.kills.length, back: result.backAtSecond })}`)
        runs.push(result)
      }
    }
  }
  const at = machine()
  const markdown = report(runs, builds, at)
  console.log(`\n${markdown}`)
  writeResults("crash-loop", { machine: at, settings, builds, runs }, markdown, undefined, flags.out)
  if (runs.some((r) => r.build === "after" && !met(r.summary))) process.exitCode = 1
}

const runs = settings.runs * settings.scenarios.length * (flags.before === undefined ? 1 : 2)
deadline(runs * (RUN_MS + 90_000))
await runMain(main)
