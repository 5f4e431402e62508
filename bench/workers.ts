/**
 * What workers buy, on this machine: requests/s with 1 and with 2 (or more)
 * worker processes, for plain `node:http` processes sharing a port (the
 * machine's limits) and for the effect-grace demo in workers mode
 * (`GRACE_WORKERS`), with each worker's share of the requests and the
 * latency beside the single-process demo's.
 *
 *   npm run bench:workers [-- --workers 1,2 --targets node-shared,node-reuseport,grace,grace-single
 *                            --loads keepalive-32,keepalive-128 --delays 0,5 --rounds 3 --duration 5 --warmup 1
 *                            --out bench/results]
 *
 * Targets:
 * - `node-shared`: this process binds one listening socket (it never accepts)
 *   and passes it to every worker as fd 3; each worker is
 *   `bench/programs/plain-worker.ts` (plain `node:http`, `hello from pid N.`).
 * - `node-reuseport`: this process binds one socket per worker on one port,
 *   each with `SO_REUSEPORT` (it never accepts), and passes worker i its
 *   socket i as fd 3, as effect-grace's primary gives each slot a socket of
 *   its own where it binds the sockets itself; the kernel picks a socket per
 *   connection by a hash of its addresses and ports.
 * - `grace`: `examples/demo.ts` with `GRACE_WORKERS=N`: a primary (no
 *   application) and N workers, each answering `GET /sleep/?duration=...`
 *   with `... from pid N.`.
 * - `grace-single`: the demo without `GRACE_WORKERS`, one process (shown
 *   with N = 1).
 *
 * Handlers: `--delays` in ms; 0 answers at once, 5 after a 5 ms timer
 * (`/5` for the plain workers, `duration=5ms` for the demo).
 *
 * Loads: `keepalive-C`, autocannon with C keep-alive connections, no
 * pipelining, in this process (on a small machine it shares the cores with the
 * servers, alike for every target). Every answer's `from pid N.` is read on
 * the client side (autocannon's per-request `onResponse`): that is each
 * worker's count. A run is a warm-up run then the measured run; every
 * configuration (target and N) gets fresh processes each round, and their
 * order rotates from round to round.
 *
 * What a run reports: req/s (answers over the run's seconds), p50 and p99
 * latency, each worker's share of the requests and of the connections (the
 * clients whose answers it sent) and max/mean (1 is even, N is everything on
 * one worker), the CPU each process used (the client's too: near a core, it
 * sets the pace), and how busy the rest of the machine was. The summary: the N-worker/1-worker ratio per target, round by
 * round; effect-grace's ratio over plain node's (target: at least 0.95, and
 * `node-reuseport` is the way the primary shares the port); the largest
 * share over the mean under keep-alive (target: at most 1.2).
 */
import { availableParallelism } from "node:os"
import { parseArgs } from "node:util"
import { BANNER, spawnDemo } from "./support/demo.ts"
import { pidOf, timedLoad } from "./support/load.ts"
import { bindLoopback, freePorts } from "./support/net.ts"
import { cpuDuring } from "./support/proc.ts"
import { startPlainPool } from "./support/plain-workers.ts"
import type { Listen } from "./support/plain-workers.ts"
import { fixed, machine, markdownTable, otherLoadText, percents, writeResults } from "./support/report.ts"
import { measureOn, pairs, rotated } from "./support/rounds.ts"
import { median, percentile, sharing, sortedOf } from "./support/stats.ts"

const TARGETS = ["node-shared", "node-reuseport", "grace", "grace-single"] as const
type Target = (typeof TARGETS)[number]

const HOST = "127.0.0.1"

// -----------------------------------------------------------------------------
// Servers
// -----------------------------------------------------------------------------

/** A target running with its workers: the port to load, and the processes to count. */
interface Running {
  readonly port: number
  readonly path: (delayMs: number) => string
  /** The processes that answer, in the order they started. */
  readonly workers: ReadonlyArray<number>
  /** A primary, which never answers, if any. */
  readonly primary: number | undefined
  readonly stop: () => Promise<void>
}

/** One socket for every worker, or (`reusePort`) one each, all on the same port. */
const bindAll = (count: number, reusePort: boolean): Array<{ readonly fd: number; readonly port: number }> => {
  const first = bindLoopback(0, reusePort)
  if (!reusePort) return Array.from({ length: count }, () => first)
  return [first, ...Array.from({ length: count - 1 }, () => bindLoopback(first.port, true))]
}

const startPlain = async (target: "node-shared" | "node-reuseport", count: number): Promise<Running> => {
  const sockets = bindAll(count, target === "node-reuseport")
  const pool = await startPlainPool(sockets.map((socket): Listen => ({ _tag: "Shared", fd: socket.fd })))
  return {
    port: sockets[0]!.port,
    path: (ms) => `/${ms}`,
    workers: pool.workers.map((w) => w.pid),
    primary: undefined,
    stop: pool.stop
  }
}

/**
 * The demo on three fresh ports, in workers mode with `workers`, else as one
 * process. Its workers are in process groups of their own: they are found,
 * and killed if need be, by the demo's first address in their command line.
 */
const startDemo = async (workers: number | undefined): Promise<Running> => {
  const ports = await freePorts(3)
  const demo = spawnDemo(ports, {
    byAddress: true,
    env: {
      GRACE_WORKERS: workers === undefined ? undefined : String(workers),
      GRACE_PROBATION: undefined,
      GRACE_SHUTDOWN_DELAY: undefined
    }
  })
  const stop = () => demo.stop(10_000, 10_000)
  try {
    // Stdout has the banners alone: the i-th line is the i-th worker's.
    const pids: Array<number> = []
    for (let i = 0; i < (workers ?? 1); i++) pids.push(Number((await demo.waitForLine(BANNER, 30_000, i))[1]))
    return {
      port: ports[0]!,
      path: (ms) => `/sleep/?duration=${ms === 0 ? "0s" : `${ms}ms`}`,
      workers: pids,
      primary: workers === undefined ? undefined : demo.pid,
      stop
    }
  } catch (error) {
    await stop()
    throw error
  }
}

const startTarget = (target: Target, workers: number): Promise<Running> => {
  switch (target) {
    case "node-shared":
    case "node-reuseport":
      return startPlain(target, workers)
    case "grace":
      return startDemo(workers)
    case "grace-single":
      return startDemo(undefined)
  }
}

// -----------------------------------------------------------------------------
// Load
// -----------------------------------------------------------------------------

/** What the client saw in one run. */
interface Seen {
  readonly requests: number
  readonly seconds: number
  readonly latencies: ReadonlyArray<number>
  /** Answers per pid read from their bodies (0: no pid in the body). */
  readonly byPid: ReadonlyMap<number, number>
  /** Connections (autocannon clients) per pid that answered them: a keep-alive connection stays with one. */
  readonly connectionsByPid: ReadonlyMap<number, number>
  readonly failed: number
}

const keepAlive = async (port: number, path: string, connections: number, seconds: number): Promise<Seen> => {
  const byPid = new Map<number, number>()
  const clientsByPid = new Map<number, Set<unknown>>()
  // autocannon reads the body (`onResponse`) just before it emits the answer's `response` with its client.
  let answeredBy = 0
  const onResponse = (_status: number, body: string) => {
    answeredBy = pidOf(body)
    byPid.set(answeredBy, (byPid.get(answeredBy) ?? 0) + 1)
  }
  const { result, latencies, failed } = await timedLoad(
    {
      url: `http://${HOST}:${port}${path}`,
      connections,
      duration: seconds,
      pipelining: 1,
      requests: [{ method: "GET", path, onResponse }]
    },
    (client) => {
      const clients = clientsByPid.get(answeredBy) ?? new Set()
      clientsByPid.set(answeredBy, clients.add(client))
    }
  )
  return {
    requests: result.requests.total,
    seconds: result.duration,
    latencies,
    byPid,
    connectionsByPid: new Map([...clientsByPid].map(([pid, clients]) => [pid, clients.size])),
    failed
  }
}

// -----------------------------------------------------------------------------
// Measuring
// -----------------------------------------------------------------------------

interface Run {
  readonly round: number
  readonly target: Target
  readonly workers: number
  readonly connections: number
  readonly delayMs: number
  readonly requestsPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly failed: number
  readonly perWorker: ReadonlyArray<{
    readonly pid: number
    readonly requests: number
    readonly connections: number
    readonly cpuCores: number
  }>
  /** Answers from no worker known (no pid in the body, or another pid): 0 expected. */
  readonly strayAnswers: number
  /** The primary's CPU in the run, in cores (none for the plain targets and the single process). */
  readonly primaryCpuCores: number
  /** Each worker's share of the requests, largest first. */
  readonly shares: ReadonlyArray<number>
  /** The largest share over the mean share: 1 is even, N is all on one worker. */
  readonly maxOverMean: number
  /** The same of the connections. */
  readonly connectionMaxOverMean: number
  /** CPU used meanwhile by other processes on the machine, in cores. */
  readonly otherCores: number
  /** CPU used by this process, the client, in cores: near 1, the client is the bottleneck. */
  readonly clientCores: number
}

const measure = async (
  running: Running,
  connections: number,
  delayMs: number,
  where: Pick<Run, "round" | "target" | "workers">
): Promise<Run> => {
  const path = running.path(delayMs)
  await keepAlive(running.port, path, connections, settings.warmupSeconds)
  const pids = [...running.workers, ...(running.primary === undefined ? [] : [running.primary])]
  const measured = await cpuDuring(pids, () => keepAlive(running.port, path, connections, settings.durationSeconds))
  const { result: seen, cores: cpu, clientCores, otherCores } = measured
  const perWorker = running.workers.map((pid, i) => ({
    pid,
    requests: seen.byPid.get(pid) ?? 0,
    connections: seen.connectionsByPid.get(pid) ?? 0,
    cpuCores: cpu[i]!
  }))
  const answeredByWorkers = perWorker.reduce((n, w) => n + w.requests, 0)
  const shared = sharing(perWorker)
  const sorted = sortedOf(seen.latencies)
  return {
    ...where,
    connections,
    delayMs,
    requestsPerSecond: seen.requests / seen.seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    failed: seen.failed,
    perWorker,
    strayAnswers: [...seen.byPid.values()].reduce((a, b) => a + b, 0) - answeredByWorkers,
    primaryCpuCores: running.primary === undefined ? 0 : cpu[cpu.length - 1]!,
    shares: shared.requestShares,
    maxOverMean: shared.requestMaxOverMean,
    connectionMaxOverMean: shared.connectionMaxOverMean,
    otherCores,
    clientCores
  }
}

const printRun = (run: Run) =>
  console.log(
    `round ${run.round} ${run.target.padEnd(14)} N=${run.workers} keepalive-${String(run.connections).padEnd(4)} ` +
      `${String(run.delayMs).padStart(2)} ms  ${fixed(run.requestsPerSecond, 0).padStart(6)} req/s  ` +
      `p50 ${fixed(run.p50Ms).padStart(6)} p99 ${fixed(run.p99Ms).padStart(6)} ms  ` +
      `shares ${percents(run.shares).padEnd(11)} (max/mean ${fixed(run.maxOverMean)}, ` +
      `connections ${fixed(run.connectionMaxOverMean)})  ` +
      `failed ${run.failed}  stray ${run.strayAnswers}  client ${fixed(run.clientCores)} cores  ` +
      `other load ${fixed(run.otherCores)} cores`
  )

/** The configurations of a round: each target with each worker count (the single process once). */
const configurations = (): Array<{ readonly target: Target; readonly workers: number }> =>
  settings.targets.flatMap((target): Array<{ readonly target: Target; readonly workers: number }> =>
    target === "grace-single" ? [{ target, workers: 1 }] : settings.workers.map((workers) => ({ target, workers }))
  )

/** Every configuration, `rounds` times, each in fresh processes, the order rotated from round to round. */
const measureAll = async (): Promise<Array<Run>> => {
  const runs: Array<Run> = []
  const cases = pairs(settings.connections, settings.delays)
  for (let round = 1; round <= settings.rounds; round++) {
    for (const { target, workers } of rotated(configurations(), round)) {
      const measureCase = (running: Running, [connections, delayMs]: (typeof cases)[number]) =>
        measure(running, connections, delayMs, { round, target, workers })
      runs.push(...(await measureOn(() => startTarget(target, workers), cases, measureCase, printRun)))
    }
  }
  return runs
}

// -----------------------------------------------------------------------------
// Report
// -----------------------------------------------------------------------------

/** The values of every round, in round order: `a / b`. */
const perRound = (values: ReadonlyArray<number>, digits = 0) => values.map((v) => fixed(v, digits)).join(" / ")

const medianText = (values: ReadonlyArray<number>, digits = 2) =>
  values.length === 0 ? "n/a" : fixed(median(values), digits)

/** The loads and handlers measured, in order. */
const cases = () =>
  settings.connections.flatMap((connections) => settings.delays.map((delayMs) => ({ connections, delayMs })))

const caseName = (c: { readonly connections: number; readonly delayMs: number }) =>
  `keepalive-${c.connections}, ${c.delayMs} ms`

const select = (
  runs: ReadonlyArray<Run>,
  where: Partial<Pick<Run, "target" | "workers" | "connections" | "delayMs">>
) => runs.filter((run) => Object.entries(where).every(([key, value]) => run[key as keyof Run] === value))

/** Per round: req/s with `workers` over req/s with 1, for one target and case (rounds missing either are left out). */
const ratios = (runs: ReadonlyArray<Run>, target: Target, workers: number, c: ReturnType<typeof cases>[number]) =>
  Array.from({ length: settings.rounds }, (_, i) => {
    const at = (n: number) => select(runs, { target, workers: n, ...c }).find((run) => run.round === i + 1)
    const [many, one] = [at(workers), at(1)]
    return many === undefined || one === undefined ? Number.NaN : many.requestsPerSecond / one.requestsPerSecond
  }).filter(Number.isFinite)

const scaled = () => settings.workers.filter((n) => n > 1)
const scalingTargets = () => settings.targets.filter((t) => t !== "grace-single")

const throughputTable = (runs: ReadonlyArray<Run>): string =>
  markdownTable(
    [
      "load, handler",
      "at most (C / handler)",
      "target",
      ...settings.workers.map((n) => `N=${n} req/s`),
      ...scaled().map((n) => `N=${n}/N=1`),
      ...scaled().map((n) => `N=${n}/N=1 median`)
    ],
    cases().flatMap((c) =>
      scalingTargets().map((target) => [
        caseName(c),
        c.delayMs === 0 ? "" : fixed((c.connections * 1000) / c.delayMs, 0),
        target,
        ...settings.workers.map((n) =>
          perRound(select(runs, { target, workers: n, ...c }).map((r) => r.requestsPerSecond))
        ),
        ...scaled().map((n) => perRound(ratios(runs, target, n, c), 2)),
        ...scaled().map((n) => medianText(ratios(runs, target, n, c)))
      ])
    )
  )

/** effect-grace's scaling over plain node's, round by round: the first target. */
const scalingVerdicts = (runs: ReadonlyArray<Run>) =>
  cases().flatMap((c) =>
    scaled().flatMap((n) =>
      (["node-reuseport", "node-shared"] as const)
        .filter((node) => settings.targets.includes(node))
        .map((node) => {
          const grace = ratios(runs, "grace", n, c)
          const plain = ratios(runs, node, n, c)
          const relative = grace.length === plain.length ? grace.map((g, i) => g / plain[i]!) : []
          const value = relative.length === 0 ? Number.NaN : median(relative)
          return { c, n, node, relative, value, met: value >= 0.95 }
        })
    )
  )

const scalingTable = (runs: ReadonlyArray<Run>): string =>
  markdownTable(
    ["load, handler", "N", "against", "grace ratio / node ratio, per round", "median", "target at least 0.95"],
    scalingVerdicts(runs).map((v) => [
      caseName(v.c),
      String(v.n),
      v.node,
      perRound(v.relative, 2),
      fixed(v.value),
      Number.isFinite(v.value) ? (v.met ? "met" : "NOT met") : "n/a"
    ])
  )

/**
 * The chance that `connections`, each given to one of `workers` at random
 * (as a hash of its ports would), put more than `limit` times the mean on one
 * worker: how often a perfectly random spread misses the target. Estimated
 * over 20,000 draws of a seeded generator (mulberry32), the same every run.
 */
const chanceAbove = (connections: number, workers: number, limit: number): number => {
  let seed = 0x9e3779b9
  const random = () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const draws = 20_000
  let above = 0
  const counts = new Int32Array(workers)
  for (let draw = 0; draw < draws; draw++) {
    counts.fill(0)
    for (let i = 0; i < connections; i++) counts[Math.floor(random() * workers)]!++
    if (Math.max(...counts) > (limit * connections) / workers) above++
  }
  return above / draws
}

const SHARE_LIMIT = 1.2

const sharesTable = (runs: ReadonlyArray<Run>): string =>
  markdownTable(
    [
      "load, handler",
      "N",
      "target",
      "request shares % per round",
      "requests max/mean per round",
      "connections max/mean per round",
      "worst (requests)",
      `at most ${SHARE_LIMIT}`,
      `a random spread of the connections above ${SHARE_LIMIT}`
    ],
    cases().flatMap((c) =>
      scaled().flatMap((n) =>
        scalingTargets().map((target) => {
          const mine = select(runs, { target, workers: n, ...c })
          const worst = Math.max(...mine.map((r) => r.maxOverMean))
          return [
            caseName(c),
            String(n),
            target,
            mine.map((r) => percents(r.shares)).join(" / "),
            perRound(
              mine.map((r) => r.maxOverMean),
              2
            ),
            perRound(
              mine.map((r) => r.connectionMaxOverMean),
              2
            ),
            fixed(worst),
            mine.length === 0 ? "n/a" : worst <= SHARE_LIMIT ? "met" : "NOT met",
            `${fixed(chanceAbove(c.connections, n, SHARE_LIMIT) * 100, 1)}% of runs`
          ]
        })
      )
    )
  )

const latencyTable = (runs: ReadonlyArray<Run>): string => {
  const columns = [
    ...(settings.targets.includes("grace-single") ? [{ target: "grace-single" as Target, workers: 1 }] : []),
    ...(["grace", "node-reuseport"] as const)
      .filter((t) => settings.targets.includes(t))
      .flatMap((target) => settings.workers.map((workers) => ({ target, workers })))
  ]
  const label = (col: { readonly target: Target; readonly workers: number }) =>
    col.target === "grace-single" ? "single process" : `${col.target} N=${col.workers}`
  return markdownTable(
    ["load, handler", ...columns.map((col) => `${label(col)} p50 / p99 ms`)],
    cases().map((c) => [
      caseName(c),
      ...columns.map((col) => {
        const mine = select(runs, { ...col, ...c })
        return `${medianText(
          mine.map((r) => r.p50Ms),
          1
        )} / ${medianText(
          mine.map((r) => r.p99Ms),
          1
        )}`
      })
    ])
  )
}

const runTable = (runs: ReadonlyArray<Run>): string =>
  markdownTable(
    [
      "round",
      "target",
      "N",
      "load",
      "handler ms",
      "req/s",
      "p50 ms",
      "p99 ms",
      "requests per worker",
      "connections per worker",
      "worker CPU (cores)",
      "primary CPU",
      "client CPU",
      "failed",
      "stray",
      "other load"
    ],
    runs.map((run) => [
      String(run.round),
      run.target,
      String(run.workers),
      `keepalive-${run.connections}`,
      String(run.delayMs),
      fixed(run.requestsPerSecond, 0),
      fixed(run.p50Ms),
      fixed(run.p99Ms),
      run.perWorker.map((w) => w.requests).join(" "),
      run.perWorker.map((w) => w.connections).join(" "),
      run.perWorker.map((w) => fixed(w.cpuCores)).join(" "),
      fixed(run.primaryCpuCores),
      fixed(run.clientCores),
      String(run.failed),
      String(run.strayAnswers),
      fixed(run.otherCores)
    ])
  )

const report = (runs: ReadonlyArray<Run>) => {
  const about = machine()
  const { otherCores, noise } = otherLoadText(runs)
  const failed = runs.reduce((n, run) => n + run.failed, 0)
  const stray = runs.reduce((n, run) => n + run.strayAnswers, 0)
  const sections = [
    "Requests/s, per round (`round 1 / round 2 / ...`), and the N-worker/1-worker ratio of each round. With a " +
      "handler of d ms, C connections answer at most C / d requests/s, whatever the workers: near that bound, " +
      "more workers cannot help. The client runs in this process: where it uses about a core (`client CPU` " +
      "below) it, not the servers, sets the pace, and on a machine of 2 cores the workers share the other one.",
    throughputTable(runs),
    "effect-grace's ratio over plain node's, round by round (the primary gives each slot a `SO_REUSEPORT` socket " +
      "of its own where it binds the sockets itself: `node-reuseport` is the comparison; `node-shared` is the " +
      "other way to share a port):",
    scalingTable(runs),
    "Each worker's share of the requests, counted from the answers' `from pid N.`, largest first, and the same " +
      "max/mean of the connections (a keep-alive connection stays with the worker that accepted it). With " +
      "`SO_REUSEPORT` the kernel picks a socket by a hash of each connection's ports: even a perfect hash puts " +
      `more than ${SHARE_LIMIT}x the mean of C connections on one worker in the share of runs the last column gives.`,
    sharesTable(runs),
    "Latency, median over the rounds of each run's p50 and p99:",
    latencyTable(runs),
    `${failed} failed requests (errors, timeouts, non-2xx) and ${stray} answers from no known worker over all runs. ` +
      `The client used a median of ${fixed(median(runs.map((run) => run.clientCores)))} cores. ${noise}`
  ]
  console.log(`\n${sections.join("\n\n")}`)
  writeResults(
    "workers",
    { machine: about, settings, otherCores, verdicts: scalingVerdicts(runs), runs },
    [
      "# Workers: requests/s with 1 and more worker processes",
      "",
      `\`npm run bench:workers\` at ${about.revision} on Node ${about.node} (libuv ${process.versions.uv}), ` +
        `${about.cpus} CPUs, ${about.date}: ${settings.rounds} rounds, ${settings.warmupSeconds} s warm-up then ` +
        `${settings.durationSeconds} s measured per configuration, autocannon with keep-alive connections in the ` +
        "benchmark's own process, on the same cores as the servers. Targets are described at the top of " +
        "`bench/workers.ts`: plain `node:http` workers sharing one socket (`node-shared`) or on a `SO_REUSEPORT` " +
        "socket each (`node-reuseport`), the demo with `GRACE_WORKERS=N` (`grace`), and the demo as one process " +
        "(`grace-single`).",
      "",
      ...sections.flatMap((section) => [section, ""]),
      "Every run (requests and CPU per worker, in the order the workers started):",
      "",
      runTable(runs)
    ].join("\n"),
    undefined,
    flags.out
  )
}

// -----------------------------------------------------------------------------
// Main
// -----------------------------------------------------------------------------

const list = (value: string) => value.split(",").filter((item) => item !== "")

const { values: flags } = parseArgs({
  options: {
    workers: { type: "string" },
    targets: { type: "string", default: TARGETS.join(",") },
    loads: { type: "string", default: "keepalive-32,keepalive-128" },
    delays: { type: "string", default: "0,5" },
    rounds: { type: "string", default: "3" },
    duration: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
    out: { type: "string" }
  }
})

const cpus = availableParallelism()

const settings = {
  // 1 and 2, and every core where there are more.
  workers: list(flags.workers ?? (cpus > 2 ? `1,2,${cpus}` : "1,2")).map(Number),
  targets: list(flags.targets).map((target) => {
    if (!(TARGETS as ReadonlyArray<string>).includes(target))
      throw new Error(`unknown target ${target}: use ${TARGETS.join(", ")}`)
    return target as Target
  }),
  connections: list(flags.loads).map((load) => {
    const match = /^keepalive-(\d+)$/.exec(load)
    if (match === null) throw new Error(`unknown load ${JSON.stringify(load)}: use keepalive-C`)
    return Number(match[1])
  }),
  delays: list(flags.delays).map(Number),
  rounds: Number(flags.rounds),
  durationSeconds: Number(flags.duration),
  warmupSeconds: Number(flags.warmup)
}
if (!settings.workers.includes(1)) throw new Error("--workers must include 1: the ratios are over N=1")

console.log(
  `Workers: N ${settings.workers.join(", ")}; targets ${settings.targets.join(", ")}; ` +
    `keep-alive ${settings.connections.join(", ")} connections; handler ${settings.delays.join(", ")} ms; ` +
    `${settings.rounds} rounds of ${settings.warmupSeconds} s warm-up + ${settings.durationSeconds} s; ` +
    `${cpus} CPUs\n`
)
report(await measureAll())
