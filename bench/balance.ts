/**
 * How the kernel spreads connections among worker processes that accept on
 * the same port, on Linux: plain `node:http` workers (no effect-grace code),
 * one benchmark per way of sharing the port.
 *
 *   npm run bench:balance [-- --workers 2,4 --modes shared,single-accept,reuseport
 *                            --loads keepalive-32,keepalive-128,churn-32 --delays 0,5
 *                            --rounds 2 --duration 5 --warmup 1]
 *
 * Modes:
 * - `shared`: this process binds one listening socket (socket, bind, listen
 *   through `src/internal/sys.ts`; it never accepts, nor polls it) and passes
 *   it to every worker as fd 3, as a primary passes LISTEN_FDS; each worker
 *   does `listen({ fd: 3 })`. Every worker's epoll watches the same socket,
 *   and whichever wakes first accepts.
 * - `single-accept`: the same, with `UV_TCP_SINGLE_ACCEPT=1` in the workers'
 *   environment. libuv no longer reads it: since 1.45 (libuv commit
 *   6c692ad1c, "unix: don't accept() connections in a loop") every wake-up
 *   accepts one connection, which the variable used to ask for. Node 26 has
 *   libuv 1.52, so this mode is the `shared` mode run again: the spread
 *   between the two is the noise.
 * - `reuseport`: every worker binds a socket of its own on the same port with
 *   `SO_REUSEPORT` (`listen({ port, host, reusePort: true })`); the kernel
 *   picks a socket per connection by a hash of its addresses and ports, as it
 *   would if the primary held one such socket per worker.
 *
 * Loads (this process runs them, so on a small machine they share its cores
 * with the workers):
 * - `keepalive-C`: autocannon, C keep-alive connections, no pipelining.
 * - `churn-C`: `bench/support/load.ts`, C clients, one new connection per request
 *   (the server answers with `Connection: close`; autocannon cannot do this:
 *   its `reconnectRate` stops counting answers, and its pipeline misreads a
 *   closed connection).
 *
 * Each worker (`bench/programs/plain-worker.ts`) answers `GET /<ms>[/close]`
 * with `hello from pid N.` after a timer of `ms` milliseconds (none for 0),
 * and counts the requests it answered and the connections it accepted.
 * Before each measured run (after a warm-up run) this process sets the counts
 * to zero over IPC and reads them after. Every mode gets fresh workers each round, and the order of the
 * modes rotates from round to round.
 *
 * What a run reports: req/s (answers over the run's seconds, seen by the
 * client), p50 and p99 latency, each worker's share of the requests and of
 * the connections, and max/mean (1 is an even spread; N is everything on one
 * worker), the CPU each worker used, and how busy the rest of the machine was.
 */
import { parseArgs } from "node:util"
import { Outcome, startRequests, timedLoad } from "./support/load.ts"
import { bindLoopback, freePorts } from "./support/net.ts"
import { cpuDuring } from "./support/proc.ts"
import { startPlainPool } from "./support/plain-workers.ts"
import type { Listen, PlainPool } from "./support/plain-workers.ts"
import { fixed, machine, markdownTable, otherLoadText, percents, writeResults } from "./support/report.ts"
import { measureOn, pairs, rotated } from "./support/rounds.ts"
import { median, percentile, sharing, sortedOf } from "./support/stats.ts"
import { sleep } from "./support/wait.ts"

const MODES = ["shared", "single-accept", "reuseport"] as const
type Mode = (typeof MODES)[number]

const HOST = "127.0.0.1"

// -----------------------------------------------------------------------------
// Workers
// -----------------------------------------------------------------------------

/** The listening socket(s) of a mode and its workers. */
interface Pool extends PlainPool {
  readonly port: number
}

const startPool = async (mode: Mode, count: number): Promise<Pool> => {
  const shared = mode === "reuseport" ? undefined : bindLoopback(0)
  const port = shared?.port ?? (await freePorts(1))[0]!
  const env: Record<string, string> = mode === "single-accept" ? { UV_TCP_SINGLE_ACCEPT: "1" } : {}
  const listen: Listen = shared === undefined ? { _tag: "ReusePort", port } : { _tag: "Shared", fd: shared.fd }
  return {
    port,
    ...(await startPlainPool(
      Array.from({ length: count }, () => listen),
      env
    ))
  }
}

// -----------------------------------------------------------------------------
// Loads
// -----------------------------------------------------------------------------

interface Load {
  readonly id: string
  readonly kind: "keepalive" | "churn"
  readonly connections: number
}

const parseLoad = (id: string): Load => {
  const match = /^(keepalive|churn)-(\d+)$/.exec(id)
  if (match === null) throw new Error(`unknown load ${JSON.stringify(id)}: use keepalive-C or churn-C`)
  return { id, kind: match[1] as Load["kind"], connections: Number(match[2]) }
}

/** What the client saw in one run. */
interface Seen {
  readonly requests: number
  readonly seconds: number
  readonly latencies: ArrayLike<number>
  readonly failed: number
}

const keepAlive = async (port: number, path: string, connections: number, seconds: number): Promise<Seen> => {
  const url = `http://${HOST}:${port}${path}`
  const { result, latencies, failed } = await timedLoad({ url, connections, duration: seconds, pipelining: 1 })
  return { requests: result.requests.total, seconds: result.duration, latencies, failed }
}

const churn = async (port: number, path: string, connections: number, seconds: number): Promise<Seen> => {
  const started = performance.now()
  const load = startRequests({
    host: HOST,
    port,
    path: `${path}/close`,
    connections,
    timeoutMs: 10_000,
    maxRequests: 2_000_000,
    pauseAfterFailureMs: 10
  })
  await sleep(seconds * 1000)
  const requests = await load.stop()
  const elapsed = (performance.now() - started) / 1000
  const latencies: Array<number> = []
  let failed = 0
  for (let i = 0; i < requests.count; i++) {
    if (requests.outcomes[i] === Outcome.ok) latencies.push(requests.ends[i]! - requests.starts[i]!)
    else failed++
  }
  return { requests: latencies.length, seconds: elapsed, latencies, failed }
}

const runLoad = (load: Load, port: number, delayMs: number, seconds: number): Promise<Seen> =>
  (load.kind === "keepalive" ? keepAlive : churn)(port, `/${delayMs}`, load.connections, seconds)

// -----------------------------------------------------------------------------
// Measuring
// -----------------------------------------------------------------------------

interface WorkerCounts {
  readonly pid: number
  readonly requests: number
  readonly connections: number
  /** CPU (user + system) the worker used in the run, in cores. */
  readonly cpuCores: number
}

interface Run {
  readonly round: number
  readonly workers: number
  readonly mode: Mode
  readonly load: string
  readonly delayMs: number
  readonly requestsPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly failed: number
  readonly perWorker: ReadonlyArray<WorkerCounts>
  /** Each worker's share of the requests, largest first. */
  readonly requestShares: ReadonlyArray<number>
  readonly connectionShares: ReadonlyArray<number>
  /** The largest share over the mean share: 1 is even, N is all on one worker. */
  readonly requestMaxOverMean: number
  readonly connectionMaxOverMean: number
  /** CPU used meanwhile by other processes on the machine, in cores. */
  readonly otherCores: number
}

const measure = async (
  pool: Pool,
  load: Load,
  delayMs: number,
  where: Pick<Run, "round" | "workers" | "mode">
): Promise<Run> => {
  await runLoad(load, pool.port, delayMs, settings.warmupSeconds)
  await Promise.all(pool.workers.map((w) => w.ask("reset", "reset")))
  const pids = pool.workers.map((w) => w.pid)
  const measured = await cpuDuring(pids, () => runLoad(load, pool.port, delayMs, settings.durationSeconds))
  const { result: seen, cores: cpu, otherCores } = measured
  const counts = await Promise.all(pool.workers.map((w) => w.ask("counts", "counts")))
  const perWorker = counts.map(({ requests, connections }, i) => ({
    pid: pids[i]!,
    requests,
    connections,
    cpuCores: cpu[i]!
  }))
  const sorted = sortedOf(seen.latencies)
  return {
    ...where,
    load: load.id,
    delayMs,
    requestsPerSecond: seen.requests / seen.seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    failed: seen.failed,
    perWorker,
    ...sharing(perWorker),
    otherCores
  }
}

const printRun = (run: Run) =>
  console.log(
    `round ${run.round} N=${run.workers} ${run.mode.padEnd(13)} ${run.load.padEnd(13)} ${String(run.delayMs).padStart(2)} ms  ` +
      `${fixed(run.requestsPerSecond, 0).padStart(6)} req/s  p99 ${fixed(run.p99Ms).padStart(6)} ms  ` +
      `requests ${percents(run.requestShares).padEnd(11)} (max/mean ${fixed(run.requestMaxOverMean)})  ` +
      `connections ${percents(run.connectionShares).padEnd(11)} (max/mean ${fixed(run.connectionMaxOverMean)})  ` +
      `failed ${run.failed}  other load ${fixed(run.otherCores)} cores`
  )

/** Every configuration, `rounds` times: per round and worker count, each mode (rotated) in fresh workers. */
const measureAll = async (): Promise<Array<Run>> => {
  const runs: Array<Run> = []
  const cases = pairs(settings.loads, settings.delays)
  for (let round = 1; round <= settings.rounds; round++) {
    for (const workers of settings.workers) {
      for (const mode of rotated(settings.modes, round)) {
        const measureCase = (pool: Pool, [load, delayMs]: (typeof cases)[number]) =>
          measure(pool, load, delayMs, { round, workers, mode })
        runs.push(...(await measureOn(() => startPool(mode, workers), cases, measureCase, printRun)))
      }
    }
  }
  return runs
}

// -----------------------------------------------------------------------------
// Report
// -----------------------------------------------------------------------------

/** The values of every round, in round order: `a / b`. */
const perRound = (runs: ReadonlyArray<Run>, format: (run: Run) => string) => runs.map(format).join(" / ")

const summaryTable = (runs: ReadonlyArray<Run>): string => {
  const rows: Array<Array<string>> = []
  for (const workers of settings.workers) {
    for (const load of settings.loads) {
      for (const delayMs of settings.delays) {
        for (const mode of settings.modes) {
          const mine = runs.filter(
            (run) => run.workers === workers && run.load === load.id && run.delayMs === delayMs && run.mode === mode
          )
          if (mine.length === 0) continue
          rows.push([
            String(workers),
            load.id,
            String(delayMs),
            mode,
            perRound(mine, (run) => fixed(run.requestsPerSecond, 0)),
            perRound(mine, (run) => fixed(run.p99Ms, 1)),
            perRound(mine, (run) => percents(run.requestShares)),
            perRound(mine, (run) => fixed(run.requestMaxOverMean)),
            perRound(mine, (run) => fixed(run.connectionMaxOverMean)),
            String(mine.reduce((n, run) => n + run.failed, 0))
          ])
        }
      }
    }
  }
  return markdownTable(
    [
      "N",
      "load",
      "handler ms",
      "mode",
      "req/s",
      "p99 ms",
      "request shares %",
      "requests max/mean",
      "connections max/mean",
      "failed"
    ],
    rows
  )
}

/** Per worker count and mode, over every load, handler and round: how even the spread was. */
const modeTable = (runs: ReadonlyArray<Run>): string => {
  const spread = (values: ReadonlyArray<number>) =>
    values.length === 0
      ? "n/a"
      : `${fixed(median(values))} (${fixed(Math.min(...values))} to ${fixed(Math.max(...values))})`
  const rows = settings.workers.flatMap((workers) =>
    settings.modes.map((mode) => {
      const mine = runs.filter((run) => run.workers === workers && run.mode === mode)
      const of = (kind: Load["kind"]) => mine.filter((run) => run.load.startsWith(`${kind}-`))
      return [
        String(workers),
        mode,
        spread(of("keepalive").map((run) => run.requestMaxOverMean)),
        spread(of("keepalive").map((run) => run.connectionMaxOverMean)),
        spread(of("churn").map((run) => run.requestMaxOverMean))
      ]
    })
  )
  return markdownTable(
    [
      "N",
      "mode",
      "keep-alive requests max/mean: median (min to max)",
      "keep-alive connections max/mean",
      "churn requests max/mean"
    ],
    rows
  )
}

const runTable = (runs: ReadonlyArray<Run>): string =>
  markdownTable(
    [
      "round",
      "N",
      "mode",
      "load",
      "handler ms",
      "req/s",
      "p50 ms",
      "p99 ms",
      "requests per worker",
      "connections per worker",
      "worker CPU (cores)",
      "other load"
    ],
    runs.map((run) => [
      String(run.round),
      String(run.workers),
      run.mode,
      run.load,
      String(run.delayMs),
      fixed(run.requestsPerSecond, 0),
      fixed(run.p50Ms),
      fixed(run.p99Ms),
      run.perWorker.map((w) => w.requests).join(" "),
      run.perWorker.map((w) => w.connections).join(" "),
      run.perWorker.map((w) => fixed(w.cpuCores)).join(" "),
      fixed(run.otherCores)
    ])
  )

const report = (runs: ReadonlyArray<Run>) => {
  const about = machine()
  const summary = summaryTable(runs)
  const byMode = modeTable(runs)
  const { otherCores, noise } = otherLoadText(runs)
  console.log(`\n${summary}\n\n${byMode}\n\n${noise}`)
  writeResults(
    "balance",
    { machine: about, settings: { ...settings, loads: settings.loads.map((load) => load.id) }, otherCores, runs },
    [
      "# Spreading connections among worker processes",
      "",
      `\`npm run bench:balance\` at ${about.revision} on Node ${about.node} (libuv ${process.versions.uv}), ` +
        `${about.cpus} CPUs, ${about.date}: plain \`node:http\` workers, ${settings.rounds} rounds, ` +
        `${settings.warmupSeconds} s warm-up then ${settings.durationSeconds} s measured per configuration; ` +
        "the load runs in the benchmark's own process, on the same cores as the workers. " +
        "Modes and loads are described at the top of `bench/balance.ts`. Values are per round (`round 1 / round 2`); " +
        "request shares are each worker's share of the answered requests, largest first; max/mean is the largest " +
        "share over the mean share (1 is even, N is everything on one worker). `single-accept` is `shared` with " +
        "`UV_TCP_SINGLE_ACCEPT=1`, which this libuv ignores (it accepts one connection per wake-up anyway): " +
        "the gap between the two is noise.",
      "",
      byMode,
      "",
      summary,
      "",
      noise,
      "",
      "Every run (requests, connections and CPU per worker, in the order the workers were started):",
      "",
      runTable(runs)
    ].join("\n")
  )
}

// -----------------------------------------------------------------------------
// Main
// -----------------------------------------------------------------------------

const list = (value: string) => value.split(",").filter((item) => item !== "")

const { values: flags } = parseArgs({
  options: {
    workers: { type: "string", default: "2,4" },
    modes: { type: "string", default: MODES.join(",") },
    loads: { type: "string", default: "keepalive-32,keepalive-128,churn-32" },
    delays: { type: "string", default: "0,5" },
    rounds: { type: "string", default: "2" },
    duration: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" }
  }
})

const settings = {
  workers: list(flags.workers).map(Number),
  modes: list(flags.modes).map((mode) => {
    if (!(MODES as ReadonlyArray<string>).includes(mode))
      throw new Error(`unknown mode ${mode}: use ${MODES.join(", ")}`)
    return mode as Mode
  }),
  loads: list(flags.loads).map(parseLoad),
  delays: list(flags.delays).map(Number),
  rounds: Number(flags.rounds),
  durationSeconds: Number(flags.duration),
  warmupSeconds: Number(flags.warmup)
}

const main = async () => {
  console.log(
    `Balance: workers ${settings.workers.join(", ")}; modes ${settings.modes.join(", ")}; ` +
      `loads ${settings.loads.map((load) => load.id).join(", ")}; handler ${settings.delays.join(", ")} ms; ` +
      `${settings.rounds} rounds of ${settings.warmupSeconds} s warm-up + ${settings.durationSeconds} s; ` +
      `${machine().cpus} CPUs, libuv ${process.versions.uv}\n`
  )
  report(await measureAll())
}

await main()
