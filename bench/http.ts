/**
 * What effect-grace's HTTP server costs per request: requests per second and
 * latency of one trivial handler (`GET /` answered `200 hello`) served three
 * ways, under the same load.
 *
 *   npm run bench [-- --rounds 15 --duration 2 --warmup 2 --connections 48
 *                    --instruction-runs 3 --instruction-requests 20000 --instruction-warmup 30000]
 *
 * - raw:   a bare `node:http` server, the ceiling.
 * - node:  an `HttpRouter` app on `NodeHttpServer.layer` (@effect/platform-node).
 * - grace: the same app on effect-grace's `Server.layer("127.0.0.1:0")`.
 *
 * Each server runs in a process of its own (`bench/programs/http-server.ts`); autocannon
 * runs here, so load and server do not share an event loop (on two cores,
 * each gets one). Every round starts the three afresh and gives each a
 * warm-up run (discarded: it lets the JIT settle); then each server in turn
 * (rotated from round to round) gets a measured run with keep-alive
 * connections, in two halves of the duration, in the order A B C C B A:
 * short interleaved runs, so that the machine's slow and fast phases hit all
 * three alike, and a drift over the round cancels out. Fresh processes,
 * because what the JIT makes of a server differs from one process to the
 * next: with one process per server for a whole benchmark, one draw shows up
 * in every round as a steady gap (seen here: 8% in one run, none in the next).
 * The tables show each server's median over the rounds, and ratios taken per
 * round (the two servers measured seconds apart), then their median.
 *
 * How to read it: `req/s` is completed requests over the run's duration;
 * latencies are per request, from autocannon's write to the response's last
 * byte (recorded at full precision here, not autocannon's whole-millisecond
 * histogram); `server CPU µs/req` is the server process's user + system time
 * during the measured run (/proc, 10 ms ticks) per request. `grace / node` is
 * the cost of effect-grace over a plain NodeHttpServer (the target: at most 3%
 * fewer requests per second), `node / raw` the cost of Effect's HTTP stack.
 *
 * Instructions per request, counted by valgrind's callgrind in a separate
 * phase (each server in a process of its own under valgrind, counting on for a fixed
 * number of requests after a warm-up), are the figure that does not move with
 * the machine. Two things are held still for it. The main thread's count is
 * the one compared: the event loop runs every request's JavaScript, and its
 * instructions are what bound a server's requests per second; V8's background
 * compiler, which under valgrind was still at work in the counted window and
 * by varying amounts from process to process, is counted in the all-threads
 * column only. And the young generation starts at its full size (16 MB,
 * `--min-semi-space-size`, the size V8 grows it to under this load): V8 sizes
 * it by heuristics that, under valgrind's slowdown, settled differently from
 * process to process, moving the garbage collector's count per request by
 * several percent. So held, three runs of one server agreed within 0.1% to
 * 2.3% (seen here, highest against lowest).
 * A server limited by its CPU, as these are, answers requests at a rate
 * inversely proportional to them. The target is met when both say so: the
 * timed req/s ratio, and (when valgrind is present) the rate the main thread's
 * instruction counts imply. `--instruction-runs 0` skips the phase. The
 * kernel's share, which callgrind does not see, is alike for the two: under
 * `strace -c`, both made one `read` and one `writev` per request.
 *
 * On a small virtual machine req/s is noisy: here, runs of a few seconds of
 * the same server differed by up to 40% with no other process busy (the host,
 * not the guest), in phases lasting seconds. Hence many short interleaved runs
 * and per-round ratios: adjacent runs share the phase. Read the spread of the
 * per-round ratios (printed with the verdict) and the CPU per request before
 * trusting a small difference; "other load" says when processes inside the
 * machine competed with the run.
 */
import { parseArgs } from "node:util"
import { hasCallgrind, instructionsPerRequest } from "./support/callgrind.ts"
import type { InstructionCount } from "./support/callgrind.ts"
import { startLoad, timedLoad } from "./support/load.ts"
import { cpuMillis, otherLoad } from "./support/proc.ts"
import { spawnNode } from "./support/process.ts"
import type { Child } from "./support/process.ts"
import { fixed, machine, markdownTable, otherLoadText, writeResults } from "./support/report.ts"
import { rotated } from "./support/rounds.ts"
import { median, percentile, sortedOf } from "./support/stats.ts"

const { values: flags } = parseArgs({
  options: {
    rounds: { type: "string", default: "15" },
    duration: { type: "string", default: "2" },
    warmup: { type: "string", default: "2" },
    connections: { type: "string", default: "48" },
    "instruction-runs": { type: "string", default: "3" },
    "instruction-requests": { type: "string", default: "20000" },
    "instruction-warmup": { type: "string", default: "30000" }
  }
})
const settings = {
  rounds: Number(flags.rounds),
  durationSeconds: Number(flags.duration),
  warmupSeconds: Number(flags.warmup),
  connections: Number(flags.connections),
  instructionRuns: Number(flags["instruction-runs"]),
  instructionRequests: Number(flags["instruction-requests"]),
  instructionWarmup: Number(flags["instruction-warmup"])
}
const TARGET_RATIO = 0.97
// The young generation at the size V8 grows it to, from the start: see the instruction counts above.
const YOUNG_GENERATION = "--min-semi-space-size=16"

const targets = [
  { id: "raw", label: "node:http" },
  { id: "node", label: "NodeHttpServer.layer" },
  { id: "grace", label: "effect-grace Server.layer" }
] as const
type TargetId = (typeof targets)[number]["id"]

interface Run {
  readonly target: TargetId
  readonly round: number
  readonly requestsPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly cpuMicrosPerRequest: number
  /** CPU used meanwhile by other processes on the machine, in cores: above ~0.2, the run competed with them. */
  readonly otherCores: number
  readonly requests: number
  readonly failures: { readonly errors: number; readonly timeouts: number; readonly non2xx: number }
}

interface Started {
  readonly id: TargetId
  readonly label: string
  readonly server: Child
  readonly url: string
}

const loadOptions = (url: string, duration: number) => ({
  url: `${url}/`,
  connections: settings.connections,
  duration,
  pipelining: 1
})

/** One measured load run on one server. */
interface Slice {
  readonly requests: number
  readonly seconds: number
  readonly cpuMillis: number
  readonly latencies: ReadonlyArray<number>
  readonly otherCores: number
  readonly failures: Run["failures"]
}

const measureSlice = async ({ server, url }: Started, all: ReadonlyArray<Started>, seconds: number): Promise<Slice> => {
  const others = otherLoad(all.map((target) => target.server.pid))
  const cpuBefore = cpuMillis(server.pid)
  const { result, latencies } = await timedLoad(loadOptions(url, seconds))
  return {
    requests: result.requests.total,
    seconds: result.duration,
    cpuMillis: cpuMillis(server.pid) - cpuBefore,
    latencies,
    otherCores: others.stop(),
    failures: { errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx }
  }
}

/** A server's run in a round: its slices together. */
const combine = (target: TargetId, round: number, slices: ReadonlyArray<Slice>): Run => {
  const total = (f: (slice: Slice) => number) => slices.reduce((sum, slice) => sum + f(slice), 0)
  const requests = total((slice) => slice.requests)
  const sorted = sortedOf(slices.flatMap((slice) => slice.latencies))
  return {
    target,
    round,
    requestsPerSecond: requests / total((slice) => slice.seconds),
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    cpuMicrosPerRequest: (total((slice) => slice.cpuMillis) * 1000) / requests,
    otherCores: total((slice) => slice.otherCores) / slices.length,
    requests,
    failures: {
      errors: total((slice) => slice.failures.errors),
      timeouts: total((slice) => slice.failures.timeouts),
      non2xx: total((slice) => slice.failures.non2xx)
    }
  }
}

const SERVER = new URL("programs/http-server.ts", import.meta.url).pathname

/** Starts the three servers, each in a fresh process, and waits until each accepts. */
const startAll = async (): Promise<ReadonlyArray<Started>> => {
  const servers = targets.map(({ id }) => spawnNode([SERVER, id]))
  try {
    return await Promise.all(
      targets.map(async ({ id, label }, i) => {
        const server = servers[i]!
        const [, url] = await server.waitForLine(/^listening (\S+)$/, 15_000)
        return { id, label, server, url: url! }
      })
    )
  } catch (error) {
    await Promise.all(servers.map((server) => server.stop()))
    throw error
  }
}

const stopAll = async (started: ReadonlyArray<Started>) => {
  await Promise.all(started.map(({ server }) => server.stop()))
}

const main = async () => {
  console.log(
    `HTTP overhead: ${settings.rounds} rounds, ${settings.connections} keep-alive connections, ` +
      `${settings.warmupSeconds} s warm-up, then ${settings.durationSeconds} s per server per round\n`
  )
  const runs = await measureRounds()
  report(runs, await countInstructions())
}

interface Counted extends InstructionCount {
  readonly target: TargetId
}

const labelOf = (id: TargetId) => targets.find((target) => target.id === id)!.label

/**
 * Instructions per request of each server, `instructionRuns` times, two
 * servers at a time (the count does not depend on the other). Skipped when
 * valgrind is not here, or with `--instruction-runs 0`.
 */
const countInstructions = async (): Promise<ReadonlyArray<Counted>> => {
  if (settings.instructionRuns <= 0) return []
  if (!hasCallgrind()) {
    console.log("\nvalgrind (callgrind) is not on this machine: no instruction counts (apt-get install valgrind)")
    return []
  }
  console.log(
    `\nInstructions per request (callgrind): ${settings.instructionRuns} runs per server, ` +
      `${settings.instructionRequests} requests counted after ${settings.instructionWarmup} of warm-up`
  )
  const queue = Array.from({ length: settings.instructionRuns }, () => targets.map(({ id }) => id)).flat()
  const counted: Array<Counted> = []
  const worker = async () => {
    for (let target = queue.shift(); target !== undefined; target = queue.shift()) {
      const count = await instructionsPerRequest({
        args: [YOUNG_GENERATION, SERVER, target],
        path: "/",
        connections: settings.connections,
        warmup: settings.instructionWarmup,
        requests: settings.instructionRequests
      })
      counted.push({ target, ...count })
      console.log(
        `${labelOf(target).padEnd(26)} ${fixed(count.mainThreadPerRequest, 0).padStart(7)} instructions/request on the main thread, ` +
          `${fixed(count.perRequest, 0)} in all threads`
      )
    }
  }
  await Promise.all([worker(), worker()])
  return counted
}

/** One round: the three servers started afresh, warmed up, then measured in the order A B C C B A. */
const measureRound = async (round: number): Promise<Array<Run>> => {
  // Fresh processes every round: what the JIT makes of a server differs from one process to the next, so one
  // process per server for the whole run would repeat a single draw in every round.
  const started = await startAll()
  try {
    for (const { url } of started) await startLoad(loadOptions(url, settings.warmupSeconds)).result
    // Rotated, so that no server is always measured first or last in a round; then in reverse (A B C C B A), each
    // for half the duration: a drift of the machine's speed over the round hits every server alike.
    const order = rotated(started, round)
    const slices = new Map<TargetId, Array<Slice>>(order.map(({ id }) => [id, []]))
    for (const target of [...order, ...order.toReversed()]) {
      slices.get(target.id)!.push(await measureSlice(target, started, settings.durationSeconds / 2))
    }
    return order.map((target) => {
      const run = combine(target.id, round, slices.get(target.id)!)
      console.log(
        `round ${round} ${target.label.padEnd(26)} ${fixed(run.requestsPerSecond, 0).padStart(7)} req/s  ` +
          `p50 ${fixed(run.p50Ms)} ms  p99 ${fixed(run.p99Ms)} ms  server CPU ${fixed(run.cpuMicrosPerRequest, 1)} µs/req  other load ${fixed(run.otherCores)} cores`
      )
      return run
    })
  } finally {
    await stopAll(started)
  }
}

const measureRounds = async () => {
  const runs: Array<Run> = []
  for (let round = 1; round <= settings.rounds; round++) runs.push(...(await measureRound(round)))
  return runs
}

// -----------------------------------------------------------------------------
// Report
// -----------------------------------------------------------------------------

const metrics = ["requestsPerSecond", "p50Ms", "p99Ms", "cpuMicrosPerRequest"] as const
type Metrics = Record<(typeof metrics)[number], number>
type Summary = { readonly label: string; readonly failed: number } & Metrics

/** Each server's medians over the rounds, and its failed requests. */
const summarize = (runs: ReadonlyArray<Run>): Record<TargetId, Summary> =>
  Object.fromEntries(
    targets.map(({ id, label }): [TargetId, Summary] => {
      const mine = runs.filter((run) => run.target === id)
      const failed = mine.reduce((n, run) => n + run.failures.errors + run.failures.timeouts + run.failures.non2xx, 0)
      const medians = Object.fromEntries(metrics.map((metric) => [metric, median(mine.map((run) => run[metric]))]))
      return [id, { label, failed, ...(medians as Metrics) }]
    })
  ) as Record<TargetId, Summary>

/** Paired: the two servers' ratio in each round (measured seconds apart), then the median over rounds. */
const pairedRatios = (runs: ReadonlyArray<Run>) => {
  const rounds = Array.from({ length: settings.rounds }, (_, i) => i + 1)
  const runOf = (id: TargetId, round: number) => runs.find((run) => run.target === id && run.round === round)!
  const perRound = (a: TargetId, b: TargetId, metric: (typeof metrics)[number]) =>
    rounds.map((round) => runOf(a, round)[metric] / runOf(b, round)[metric])
  const ratioOf = (a: TargetId, b: TargetId) =>
    Object.fromEntries(metrics.map((metric) => [metric, median(perRound(a, b, metric))])) as Metrics
  return {
    ratios: { graceVsNode: ratioOf("grace", "node"), nodeVsRaw: ratioOf("node", "raw") },
    spread: perRound("grace", "node", "requestsPerSecond")
  }
}

/**
 * Main-thread instructions per request, median over runs; a CPU-bound server's req/s is inversely proportional to
 * them. All threads' for the table.
 */
const instructionFigures = (counted: ReadonlyArray<Counted>) => {
  const countOf = (id: TargetId, count: (run: Counted) => number) =>
    median(counted.filter((run) => run.target === id).map(count))
  const instructionsOf = (count: (run: Counted) => number) =>
    counted.length === 0
      ? undefined
      : { raw: countOf("raw", count), node: countOf("node", count), grace: countOf("grace", count) }
  const instructions = instructionsOf((run) => run.mainThreadPerRequest)
  const instructionRatios =
    instructions === undefined
      ? undefined
      : { graceVsNode: instructions.grace / instructions.node, nodeVsRaw: instructions.node / instructions.raw }
  return {
    instructions,
    allThreads: instructionsOf((run) => run.perRequest),
    instructionRatios,
    // effect-grace's req/s as a fraction of NodeHttpServer's, when the CPU is what limits both.
    cpuBound: instructionRatios === undefined ? undefined : 1 / instructionRatios.graceVsNode
  }
}
type Figures = ReturnType<typeof instructionFigures>
type Paired = ReturnType<typeof pairedRatios>

/** Whether the target is met, by the timed runs and by the instruction counts, and the sentences that say so. */
const verdictOf = ({ ratios, spread }: Paired, { instructionRatios, cpuBound }: Figures) => {
  const timedMet = ratios.graceVsNode.requestsPerSecond >= TARGET_RATIO
  const countedMet = cpuBound === undefined ? undefined : cpuBound >= TARGET_RATIO
  const met = timedMet && countedMet !== false
  const percent = (ratio: number) => `${fixed(ratio * 100, 1)}%`
  const text = [
    `Target (effect-grace at least ${TARGET_RATIO * 100}% of NodeHttpServer's req/s): ${met ? "met" : "NOT met"}.`,
    `Timed: req/s ${percent(ratios.graceVsNode.requestsPerSecond)} of NodeHttpServer's (rounds from ` +
      `${percent(Math.min(...spread))} to ${percent(Math.max(...spread))}), server CPU per request ` +
      `${percent(ratios.graceVsNode.cpuMicrosPerRequest)} of NodeHttpServer's.`,
    cpuBound === undefined
      ? "Instructions: not counted."
      : `Instructions: effect-grace's main thread executes ${percent(instructionRatios!.graceVsNode)} of NodeHttpServer's per ` +
        `request, so where the CPU limits both it answers ${percent(cpuBound)} as many requests per second.`
  ].join(" ")
  return { met, timedMet, countedMet, text }
}

const summaryTable = (
  summary: Record<TargetId, Summary>,
  { instructions, allThreads }: Figures,
  counted: ReadonlyArray<Counted>
) =>
  markdownTable(
    ["server", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "instructions/req", "all threads", "failed"],
    targets.map(({ id }) => {
      const s = summary[id]
      const failed = s.failed + counted.filter((run) => run.target === id).reduce((n, run) => n + run.failed, 0)
      return [
        s.label,
        fixed(s.requestsPerSecond, 0),
        fixed(s.p50Ms),
        fixed(s.p99Ms),
        fixed(s.cpuMicrosPerRequest, 1),
        instructions === undefined ? "n/a" : fixed(instructions[id], 0),
        allThreads === undefined ? "n/a" : fixed(allThreads[id], 0),
        String(failed)
      ]
    })
  )

const ratioTable = ({ ratios }: Paired, { instructionRatios }: Figures) =>
  markdownTable(
    ["ratio (median over rounds)", "req/s", "p99", "server CPU/req", "instructions/req"],
    [
      ["effect-grace / NodeHttpServer", ratios.graceVsNode, instructionRatios?.graceVsNode] as const,
      ["NodeHttpServer / node:http", ratios.nodeVsRaw, instructionRatios?.nodeVsRaw] as const
    ].map(([name, r, i]) => [
      name,
      fixed(r.requestsPerSecond, 3),
      fixed(r.p99Ms, 3),
      fixed(r.cpuMicrosPerRequest, 3),
      i === undefined ? "n/a" : fixed(i, 3)
    ])
  )

const runTable = (runs: ReadonlyArray<Run>) =>
  markdownTable(
    ["round", "server", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "other load (cores)"],
    runs.map((run) => [
      String(run.round),
      labelOf(run.target),
      fixed(run.requestsPerSecond, 0),
      fixed(run.p50Ms),
      fixed(run.p99Ms),
      fixed(run.cpuMicrosPerRequest, 1),
      fixed(run.otherCores)
    ])
  )

/** Every instruction count, at the end of the markdown; nothing when none was counted. */
const countSection = (counted: ReadonlyArray<Counted>): Array<string> =>
  counted.length === 0
    ? []
    : [
        "",
        `Every instruction count (callgrind; ${settings.instructionRequests} requests counted after ` +
          `${settings.instructionWarmup} of warm-up, ${settings.connections} connections):`,
        "",
        markdownTable(
          ["server", "instructions/request (main thread)", "all threads", "failed"],
          counted.map((run) => [
            labelOf(run.target),
            fixed(run.mainThreadPerRequest, 0),
            fixed(run.perRequest, 0),
            String(run.failed)
          ])
        )
      ]

const report = (runs: ReadonlyArray<Run>, counted: ReadonlyArray<Counted>) => {
  const summary = summarize(runs)
  const paired = pairedRatios(runs)
  const figures = instructionFigures(counted)
  const verdict = verdictOf(paired, figures)
  const table = summaryTable(summary, figures, counted)
  const ratios = ratioTable(paired, figures)
  const { otherCores, noise } = otherLoadText(runs)
  console.log(`\n${table}\n\n${ratios}\n\n${verdict.text}\n${noise}`)

  const about = machine()
  const { met, timedMet, countedMet } = verdict
  const { instructions, allThreads, instructionRatios, cpuBound } = figures
  writeResults(
    "http",
    {
      machine: about,
      settings,
      otherCores,
      summary,
      ratios: paired.ratios,
      target: { ratio: TARGET_RATIO, met, timedMet, countedMet, cpuBound, perRound: paired.spread },
      instructions: {
        perRequest: instructions,
        allThreads,
        ratios: instructionRatios,
        flags: [YOUNG_GENERATION],
        runs: counted
      },
      runs
    },
    [
      "# HTTP overhead",
      "",
      `\`npm run bench\` at ${about.revision} on Node ${about.node}, ${about.cpus} CPUs, ${about.date}: ${settings.rounds} rounds, ` +
        `${settings.connections} keep-alive connections, ${settings.warmupSeconds} s warm-up and ` +
        `${settings.durationSeconds} s measured per server, fresh server processes every round, \`GET /\` answered ` +
        "`200 hello`; medians over the rounds, ratios per round then their median. " +
        "Server CPU is the server process's user + system time during the measured run, per request. " +
        "Instructions per request are counted by callgrind (the median of the runs listed at the end), " +
        `independent of the machine's load: the main thread's, with \`${YOUNG_GENERATION}\`, and all threads'.`,
      "",
      table,
      "",
      ratios,
      "",
      verdict.text,
      "",
      noise,
      "",
      "Every run:",
      "",
      runTable(runs),
      ...countSection(counted)
    ].join("\n")
  )
}

await main()
