/**
 * What effect-grace's HTTP server costs per request: requests per second and
 * latency of one trivial handler (`GET /` answered `200 hello`) served three
 * ways, under the same load.
 *
 *   npm run bench [-- --rounds 3 --duration 6 --warmup 2 --connections 48]
 *
 * - raw:   a bare `node:http` server, the ceiling.
 * - node:  an `HttpRouter` app on `NodeHttpServer.layer` (@effect/platform-node).
 * - grace: the same app on effect-grace's `Server.layer("127.0.0.1:0")`.
 *
 * Each server runs in a process of its own (`bench/targets.ts`); autocannon
 * runs here, so load and server do not share an event loop (on two cores,
 * each gets one). For each server: a warm-up run (discarded, it lets the JIT
 * settle), then a measured run with keep-alive connections for a fixed
 * duration. The three servers are measured once per round, in a rotated order,
 * and the table shows each one's median over the rounds.
 *
 * How to read it: `req/s` is completed requests over the run's duration;
 * latencies are per request, from autocannon's write to the response's last
 * byte (recorded at full precision here, not autocannon's whole-millisecond
 * histogram); `server CPU µs/req` is the server process's user + system time
 * during the measured run (/proc, 10 ms ticks) per request. `grace / node` is
 * the cost of effect-grace over a plain NodeHttpServer (the target: at most 3%
 * fewer requests per second), `node / raw` the cost of Effect's HTTP stack.
 *
 * On a small shared machine req/s is noisy (other processes take the cores,
 * and autocannon's own core caps the fastest server), so a few percent between
 * rounds is noise: read the per-round rows, and the CPU per request, which
 * depends much less on who else runs, before trusting a small ratio.
 */
import { parseArgs } from "node:util"
import {
  cpuMillis,
  fixed,
  machine,
  markdownTable,
  median,
  percentile,
  sortedOf,
  spawnNode,
  startLoad,
  writeResults
} from "./support.ts"

const { values: flags } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    duration: { type: "string", default: "6" },
    warmup: { type: "string", default: "2" },
    connections: { type: "string", default: "48" }
  }
})
const settings = {
  rounds: Number(flags.rounds),
  durationSeconds: Number(flags.duration),
  warmupSeconds: Number(flags.warmup),
  connections: Number(flags.connections)
}
const TARGET_RATIO = 0.97

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
  readonly requests: number
  readonly failures: { readonly errors: number; readonly timeouts: number; readonly non2xx: number }
}

const measure = async (target: TargetId, round: number): Promise<Run> => {
  const server = spawnNode([new URL("targets.ts", import.meta.url).pathname, target])
  try {
    const [, url] = await server.waitForLine(/^listening (\S+)$/, 15_000)
    const load = (duration: number) =>
      startLoad({ url: `${url}/`, connections: settings.connections, duration, pipelining: 1 })

    await load(settings.warmupSeconds).result

    const latencies: Array<number> = []
    const cpuBefore = cpuMillis(server.pid)
    const measured = load(settings.durationSeconds)
    measured.instance.on("response", (_client, _status, _bytes, responseTime) => latencies.push(responseTime))
    const result = await measured.result
    const cpu = cpuMillis(server.pid) - cpuBefore
    const sorted = sortedOf(latencies)
    return {
      target,
      round,
      requestsPerSecond: result.requests.total / result.duration,
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      cpuMicrosPerRequest: (cpu * 1000) / result.requests.total,
      requests: result.requests.total,
      failures: { errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx }
    }
  } finally {
    await server.stop()
  }
}

const main = async () => {
  console.log(
    `HTTP overhead: ${settings.rounds} rounds, ${settings.connections} keep-alive connections, ` +
      `${settings.warmupSeconds} s warm-up + ${settings.durationSeconds} s per server\n`
  )
  const runs: Array<Run> = []
  for (let round = 1; round <= settings.rounds; round++) {
    // Rotated, so no server always runs first (cold machine) or last (warm one).
    const order = targets.map((_, i) => targets[(i + round - 1) % targets.length]!)
    for (const { id, label } of order) {
      const run = await measure(id, round)
      runs.push(run)
      console.log(
        `round ${round} ${label.padEnd(26)} ${fixed(run.requestsPerSecond, 0).padStart(7)} req/s  ` +
          `p50 ${fixed(run.p50Ms)} ms  p99 ${fixed(run.p99Ms)} ms  server CPU ${fixed(run.cpuMicrosPerRequest, 1)} µs/req`
      )
    }
  }

  const metrics = ["requestsPerSecond", "p50Ms", "p99Ms", "cpuMicrosPerRequest"] as const
  type Summary = { readonly label: string; readonly failed: number } & Record<(typeof metrics)[number], number>
  const summary = Object.fromEntries(
    targets.map(({ id, label }): [TargetId, Summary] => {
      const mine = runs.filter((run) => run.target === id)
      const failed = mine.reduce((n, run) => n + run.failures.errors + run.failures.timeouts + run.failures.non2xx, 0)
      const medians = Object.fromEntries(metrics.map((metric) => [metric, median(mine.map((run) => run[metric]))]))
      return [id, { label, failed, ...(medians as Record<(typeof metrics)[number], number>) }]
    })
  ) as Record<TargetId, Summary>

  const ratioOf = (a: TargetId, b: TargetId) =>
    Object.fromEntries(metrics.map((metric) => [metric, summary[a][metric] / summary[b][metric]])) as Record<
      (typeof metrics)[number],
      number
    >
  const ratios = { graceVsNode: ratioOf("grace", "node"), nodeVsRaw: ratioOf("node", "raw") }
  const met = ratios.graceVsNode.requestsPerSecond >= TARGET_RATIO

  const table = markdownTable(
    ["server", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "failed"],
    targets.map(({ id }) => {
      const s = summary[id]
      return [
        s.label,
        fixed(s.requestsPerSecond, 0),
        fixed(s.p50Ms),
        fixed(s.p99Ms),
        fixed(s.cpuMicrosPerRequest, 1),
        String(s.failed)
      ]
    })
  )
  const ratioTable = markdownTable(
    ["ratio", "req/s", "p99", "server CPU/req"],
    [
      ["effect-grace / NodeHttpServer", ratios.graceVsNode] as const,
      ["NodeHttpServer / node:http", ratios.nodeVsRaw] as const
    ].map(([name, r]) => [name, fixed(r.requestsPerSecond, 3), fixed(r.p99Ms, 3), fixed(r.cpuMicrosPerRequest, 3)])
  )
  const verdict =
    `Target (effect-grace at least ${TARGET_RATIO * 100}% of NodeHttpServer's req/s): ` +
    `${met ? "met" : "NOT met"} (${fixed(ratios.graceVsNode.requestsPerSecond * 100, 1)}%; ` +
    `server CPU per request ${fixed(ratios.graceVsNode.cpuMicrosPerRequest * 100, 1)}% of NodeHttpServer's).`
  const runTable = markdownTable(
    ["round", "server", "req/s", "p50 ms", "p99 ms", "server CPU µs/req"],
    runs.map((run) => [
      String(run.round),
      summary[run.target].label,
      fixed(run.requestsPerSecond, 0),
      fixed(run.p50Ms),
      fixed(run.p99Ms),
      fixed(run.cpuMicrosPerRequest, 1)
    ])
  )
  console.log(`\n${table}\n\n${ratioTable}\n\n${verdict}`)

  const about = machine()
  writeResults(
    "http",
    { machine: about, settings, summary, ratios, target: { ratio: TARGET_RATIO, met }, runs },
    [
      "# HTTP overhead",
      "",
      `\`npm run bench\` at ${about.revision} on Node ${about.node}, ${about.cpus} CPUs, ${about.date}: ${settings.rounds} rounds, ` +
        `${settings.connections} keep-alive connections, ${settings.warmupSeconds} s warm-up and ` +
        `${settings.durationSeconds} s measured per server, \`GET /\` answered \`200 hello\`; medians over the rounds. ` +
        "Server CPU is the server process's user + system time during the measured run, per request.",
      "",
      table,
      "",
      ratioTable,
      "",
      verdict,
      "",
      "Every run:",
      "",
      runTable
    ].join("\n")
  )
}

await main()
