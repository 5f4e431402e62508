/**
 * effect-grace among its peers: the same keep-alive load, with a 5 ms
 * handler, against
 *
 * - `node`: a bare `node:http` server (`bench/programs/peers-app.ts`), never restarted:
 *   the ceiling;
 * - `pm2-fork`: the same app under PM2 in fork mode, restarted by `pm2 reload`
 *   (in fork mode a reload is a restart: stop, then start);
 * - `pm2-cluster`: the same app under PM2 in cluster mode, 2 instances,
 *   `pm2 reload` (one instance at a time: start a new one, wait until it
 *   listens, stop the old one);
 * - `grace`: the demo (`examples/demo.ts`, `GET /sleep/?duration=5ms`),
 *   restarted by `SIGUSR2`;
 * - `grace-workers`: the demo with 2 workers (`GRACE_WORKERS=2`), restarted
 *   by `SIGHUP` to its primary (one worker at a time).
 *
 *   npm run bench:peers [-- --restarts 5 --steady 2000 --connections 32 --targets node,pm2-fork,pm2-cluster,grace,grace-workers]
 *
 * The app stops as PM2's documentation recommends (on SIGINT: close the
 * server, exit when it has closed); PM2 runs with its defaults otherwise.
 * PM2 (pinned below) is installed on first use into `.cache/pm2`, not as a
 * dependency, and runs with `PM2_HOME=.cache/pm2/home`; its daemon is killed
 * at the end, whatever happens. Everything listens on 127.0.0.1.
 *
 * The load (`bench/support/load.ts`) records every request, so each run gives
 * failures by kind (reset, refused, timeout, non-2xx), answers per second,
 * latency percentiles, the longest time without any answer, and a picture:
 * `bench/results/peers.svg`.
 */
import { execFile, execFileSync } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { dirname } from "node:path"
import { promisify } from "node:util"
import { parseArgs } from "node:util"
import { BANNER, freshCompileCache, restartDemo, spawnDemo } from "./support/demo.ts"
import { Outcome, outcomeNames, startRequests } from "./support/load.ts"
import type { Requests } from "./support/load.ts"
import { freePorts } from "./support/net.ts"
import { isAlive } from "./support/proc.ts"
import { deadline, onCleanup, runMain, spawnNode } from "./support/process.ts"
import type { Child } from "./support/process.ts"
import { fixed, machine, markdownTable, writeResults } from "./support/report.ts"
import { latencyOf } from "./support/stats.ts"
import { timelineSvg } from "./support/svg.ts"
import type { Window } from "./support/svg.ts"
import { sleep, until } from "./support/wait.ts"

const PM2_VERSION = "7.0.4"

const { values: flags } = parseArgs({
  options: {
    restarts: { type: "string", default: "5" },
    connections: { type: "string", default: "32" },
    steady: { type: "string", default: "2000" },
    warmup: { type: "string", default: "1500" },
    handler: { type: "string", default: "5" },
    targets: { type: "string", default: "node,pm2-fork,pm2-cluster,grace,grace-workers" }
  }
})
const settings = {
  restarts: Number(flags.restarts),
  connections: Number(flags.connections),
  steadyMs: Number(flags.steady),
  warmupMs: Number(flags.warmup),
  handlerMs: Number(flags.handler),
  targets: flags.targets.split(","),
  timeoutMs: 10_000,
  pauseAfterFailureMs: 10,
  maxRequestsPerTarget: 2_000_000,
  pm2: PM2_VERSION
}
/** The whole run, whatever happens. */
const DEADLINE_MS = 300_000

const now = () => performance.now()
const root = new URL("..", import.meta.url).pathname
const appPath = new URL("programs/peers-app.ts", import.meta.url).pathname

// -----------------------------------------------------------------------------
// Targets
// -----------------------------------------------------------------------------

/** A server under test: where to send the load, and how to restart it. */
interface Target {
  readonly port: number
  readonly path: string
  /** Restarts once; resolves when the restart is complete (the old process gone, or the reload command done). */
  readonly restart: () => Promise<Window>
  readonly stop: () => Promise<void>
}

/** Waits, bounded, until `GET path` on the port answers 200. */
const answers = async (port: number, path: string) => {
  const giveUpAt = now() + 20_000
  while (
    !(await fetch(`http://127.0.0.1:${port}${path}`).then(
      (r) => r.ok,
      () => false
    ))
  ) {
    if (now() > giveUpAt) throw new Error(`timed out after 20 s waiting for port ${port} to answer`)
    await sleep(50)
  }
}

const node = async (port: number): Promise<Target> => {
  const app = spawnNode([appPath], { env: { PORT: String(port), HANDLER_MS: String(settings.handlerMs) } })
  await app.waitForLine(/^listening/, 20_000)
  return {
    port,
    path: "/",
    restart: () => Promise.reject(new Error("the bare node target is not restarted")),
    stop: () => app.stop()
  }
}

/**
 * The demo on `port` and two more free ports (the load goes to the first), with a compile cache directory of its
 * own as the supervisor does by default (no run reads an earlier one's cache).
 */
const startDemo = async (port: number, env: Record<string, string> = {}) => {
  const cache = freshCompileCache()
  const demo = spawnDemo([port, ...(await freePorts(2))], {
    byAddress: true,
    env: { ...env, GRACE_COMPILE_CACHE: cache.directory, NODE_COMPILE_CACHE: undefined }
  })
  const stop = async () => {
    await demo.stop(5000)
    cache.remove()
  }
  return { demo, stop }
}

const grace = async (port: number): Promise<Target> => {
  const { demo, stop } = await startDemo(port)
  let current = Number((await demo.waitForLine(BANNER, 20_000))[1])
  return {
    port,
    path: `/sleep/?duration=${settings.handlerMs}ms`,
    restart: async () => {
      const { to, signalled, ready, drained } = await restartDemo(demo, current)
      current = to
      return { signalled, ready, drained }
    },
    stop
  }
}

/** Waits for two workers' banners printed from line `from` on: their pids. */
const bannersFrom = async (demo: Child, from: number) => {
  const first = await demo.waitForLine(BANNER, 30_000, from)
  const index = demo.lines.findIndex((line, i) => i >= from && BANNER.test(line))
  const second = await demo.waitForLine(BANNER, 30_000, index + 1)
  return [Number(first[1]), Number(second[1])]
}

const graceWorkers = async (port: number): Promise<Target> => {
  const { demo, stop } = await startDemo(port, { GRACE_WORKERS: "2" })
  // The primary serves nothing and prints no banner: each of its two workers prints one.
  let workers = await bannersFrom(demo, 0)
  return {
    port,
    path: `/sleep/?duration=${settings.handlerMs}ms`,
    restart: async () => {
      const seen = demo.lines.length
      const signalled = now()
      process.kill(demo.pid, "SIGHUP")
      // Ready: the second new worker's banner; complete: the old workers gone.
      const old = workers
      workers = await bannersFrom(demo, seen)
      const ready = now()
      for (const pid of old) await until(() => !isAlive(pid), 30_000, `worker ${pid} to drain and exit`)
      return { signalled, ready, drained: now() }
    },
    stop
  }
}

// PM2 -------------------------------------------------------------------------

const pm2Dir = `${root}.cache/pm2`
const pm2Bin = `${pm2Dir}/node_modules/pm2/bin/pm2`
const pm2Env = {
  ...process.env,
  PM2_HOME: `${pm2Dir}/home`,
  // PM2's daemon and its fork-mode apps run on this benchmark's Node.
  PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`
}

/** Installs the pinned PM2 into `.cache/pm2` unless it is there. */
const installPm2 = () => {
  const installed = `${pm2Dir}/node_modules/pm2/package.json`
  if (existsSync(installed) && JSON.parse(readFileSync(installed, "utf8")).version === PM2_VERSION) return
  console.log(`Installing pm2@${PM2_VERSION} into .cache/pm2 ...`)
  mkdirSync(pm2Dir, { recursive: true })
  writeFileSync(`${pm2Dir}/package.json`, '{ "private": true }\n')
  execFileSync("npm", ["install", "--prefix", pm2Dir, "--no-audit", "--no-fund", "--silent", `pm2@${PM2_VERSION}`], {
    stdio: ["ignore", "inherit", "inherit"],
    timeout: 180_000
  })
}

const pm2 = async (...args: Array<string>): Promise<string> => {
  const { stdout } = await promisify(execFile)(process.execPath, [pm2Bin, ...args], {
    env: pm2Env,
    timeout: 60_000,
    maxBuffer: 16 * 1024 * 1024
  })
  return stdout
}

/** Kills PM2's daemon and its apps: at the end, and at exit whatever happened. */
const killPm2 = () => {
  try {
    execFileSync(process.execPath, [pm2Bin, "kill"], { env: pm2Env, stdio: "ignore", timeout: 20_000 })
  } catch {
    // Below: the daemon by its pid file.
  }
  try {
    process.kill(Number(readFileSync(`${pm2Env.PM2_HOME}/pm2.pid`, "utf8")), "SIGKILL")
  } catch {
    // Gone.
  }
}

const pm2Target =
  (mode: "fork" | "cluster") =>
  async (port: number): Promise<Target> => {
    const name = `peers-${mode}`
    const env = { ...pm2Env, PORT: String(port), HANDLER_MS: String(settings.handlerMs) }
    const args = ["start", appPath, "--name", name, "--interpreter", process.execPath, "--update-env"]
    await promisify(execFile)(process.execPath, [pm2Bin, ...args, ...(mode === "cluster" ? ["-i", "2"] : [])], {
      env,
      timeout: 60_000
    })
    await answers(port, "/")
    return {
      port,
      path: "/",
      restart: async () => {
        const signalled = now()
        await pm2("reload", name)
        return { signalled, drained: now() }
      },
      stop: async () => {
        await pm2("delete", name)
      }
    }
  }

const targets: Record<string, { readonly describe: string; readonly start: (port: number) => Promise<Target> }> = {
  node: { describe: "node:http, no restarts (the ceiling)", start: node },
  "pm2-fork": { describe: "PM2 fork mode, pm2 reload", start: pm2Target("fork") },
  "pm2-cluster": { describe: "PM2 cluster mode, 2 instances, pm2 reload", start: pm2Target("cluster") },
  grace: { describe: "effect-grace demo, SIGUSR2", start: grace },
  "grace-workers": { describe: "effect-grace demo, 2 workers, SIGHUP (rolling)", start: graceWorkers }
}

// -----------------------------------------------------------------------------
// A run
// -----------------------------------------------------------------------------

interface Run {
  readonly name: string
  readonly loadStart: number
  readonly measuredFrom: number
  readonly stopped: number
  readonly windows: ReadonlyArray<Window>
  readonly requests: Requests
}

const runTarget = async (name: string): Promise<Run> => {
  const [port] = await freePorts(1)
  const target = await targets[name]!.start(port!)
  try {
    const load = startRequests({
      host: "127.0.0.1",
      port: target.port,
      path: target.path,
      connections: settings.connections,
      timeoutMs: settings.timeoutMs,
      maxRequests: settings.maxRequestsPerTarget,
      pauseAfterFailureMs: settings.pauseAfterFailureMs
    })
    const loadStart = now()
    await sleep(settings.warmupMs)
    const measuredFrom = now()
    const windows: Array<Window> = []
    for (let i = 1; i <= settings.restarts; i++) {
      if (name === "node") {
        // No restarts: as long a run as the others, roughly.
        await sleep(settings.steadyMs + 500)
        continue
      }
      const window = await target.restart()
      windows.push(window)
      const failed = countFailures(load.requests, window.signalled)
      console.log(
        `  ${name} restart ${i}: done in ${fixed((window.drained ?? now()) - window.signalled, 0)} ms, failures since signal ${failed}`
      )
      await sleep(settings.steadyMs)
    }
    const stopped = now()
    const requests = await load.stop()
    return { name, loadStart, measuredFrom, stopped, windows, requests }
  } finally {
    await target.stop()
  }
}

const countFailures = (requests: Requests, since: number) => {
  let n = 0
  for (let i = 0; i < requests.count; i++) if (requests.ends[i]! >= since && requests.outcomes[i] !== Outcome.ok) n++
  return n
}

/** The requests measured (from the end of the warm-up to the end of the run): how each ended; the answers' ends and latencies. */
const measured = (run: Run) => {
  const { requests } = run
  const outcomes = Object.fromEntries(outcomeNames.map((name) => [name, 0])) as Record<
    (typeof outcomeNames)[number],
    number
  >
  // Latencies of the answered requests: a refusal is quick, and no answer.
  const latencies: Array<number> = []
  const ends: Array<number> = []
  let total = 0
  for (let i = 0; i < requests.count; i++) {
    const end = requests.ends[i]!
    if (requests.starts[i]! < run.measuredFrom || end > run.stopped) continue
    const outcome = requests.outcomes[i] as Outcome
    outcomes[outcomeNames[outcome]]++
    total++
    if (outcome === Outcome.ok) {
      ends.push(end)
      latencies.push(end - requests.starts[i]!)
    }
  }
  return { total, outcomes, ends, latencies }
}

/** The longest time without any answer between `from` and `to`, given the answers' end times. */
const longestGap = (ends: ReadonlyArray<number>, from: number, to: number) => {
  let lastAnswer = from
  let longest = 0
  for (const end of ends.toSorted((a, b) => a - b)) {
    longest = Math.max(longest, end - lastAnswer)
    lastAnswer = end
  }
  return Math.max(longest, to - lastAnswer)
}

const summarize = (run: Run) => {
  const { requests } = run
  const { total, outcomes, ends, latencies } = measured(run)
  const answered = ends.length
  const latency = latencyOf(latencies)
  const seconds = (run.stopped - run.measuredFrom) / 1000
  const pids = new Set<number>()
  for (let i = 0; i < requests.count; i++) if (requests.pids[i]! > 0) pids.add(requests.pids[i]!)
  return {
    target: run.name,
    describe: targets[run.name]!.describe,
    restarts: run.windows.length,
    restartMs: run.windows.map((w) => Math.round((w.drained ?? w.signalled) - w.signalled)),
    seconds,
    requests: total,
    answered,
    failed: total - answered,
    outcomes,
    answersPerSecond: answered / seconds,
    p50Ms: latency.p50Ms,
    p99Ms: latency.p99Ms,
    maxMs: latency.maxMs,
    // The longest time without any answer, once measuring began.
    longestGapMs: longestGap(ends, run.measuredFrom, run.stopped),
    pids: pids.size,
    samples: Object.fromEntries([...requests.samples].map(([outcome, texts]) => [outcomeNames[outcome], texts]))
  }
}

// -----------------------------------------------------------------------------
// Report
// -----------------------------------------------------------------------------

const picture = (runs: ReadonlyArray<Run>) => {
  // Every panel spans the longest run, so the panels compare at a glance.
  const span = Math.max(...runs.map((run) => run.stopped - run.loadStart))
  return timelineSvg(
    "effect-grace and its peers: restarts under keep-alive load",
    `${settings.connections} keep-alive connections, ${settings.handlerMs} ms handler, ${settings.restarts} restarts each; ${machine().revision}, Node ${process.version}`,
    runs.map((run) => {
      // Answers are dots, failures crosses.
      const { requests } = run
      const ends: Array<number> = []
      const latencies: Array<number> = []
      const pids: Array<number> = []
      const failures: Array<{ at: number; kind: string }> = []
      for (let i = 0; i < requests.count; i++) {
        const outcome = requests.outcomes[i]!
        if (outcome === Outcome.ok) {
          ends.push(requests.ends[i]!)
          latencies.push(requests.ends[i]! - requests.starts[i]!)
          pids.push(requests.pids[i]!)
        } else failures.push({ at: requests.ends[i]!, kind: outcomeNames[outcome]! })
      }
      return {
        title: `${run.name}: ${targets[run.name]!.describe}`,
        origin: run.loadStart,
        from: run.loadStart,
        to: run.loadStart + span,
        points: { count: ends.length, ends, latencies, pids },
        windows: run.windows,
        failures
      }
    })
  )
}

const table = (rows: ReadonlyArray<ReturnType<typeof summarize>>) =>
  markdownTable(
    [
      "target",
      "restarts",
      "answers/s",
      "p50 ms",
      "p99 ms",
      "max ms",
      "failed",
      "reset",
      "refused",
      "timeout",
      "non-2xx",
      "other",
      "longest gap ms"
    ],
    rows.map((row) => [
      row.target,
      String(row.restarts),
      fixed(row.answersPerSecond, 0),
      fixed(row.p50Ms),
      fixed(row.p99Ms),
      fixed(row.maxMs),
      String(row.failed),
      String(row.outcomes.reset),
      String(row.outcomes.refused),
      String(row.outcomes.timeout),
      String(row.outcomes["non-2xx"]),
      String(row.outcomes.other),
      fixed(row.longestGapMs, 0)
    ])
  )

const report = (runs: ReadonlyArray<Run>) => {
  const rows = runs.map(summarize)
  const summary = table(rows)
  const output = { machine: machine(), settings, targets: rows }
  console.log(`\n${summary}`)
  writeResults(
    "peers",
    output,
    [
      "# effect-grace and its peers",
      "",
      `\`npm run bench:peers\` at ${output.machine.revision} on Node ${output.machine.node}, ${output.machine.cpus} CPUs, ${output.machine.date}: ` +
        `${settings.connections} keep-alive connections (\`bench/support/load.ts\`, \`node:http\` clients; ${settings.pauseAfterFailureMs} ms pause after a failure) ` +
        `on 127.0.0.1, a ${settings.handlerMs} ms handler, ${settings.restarts} restarts per target, ${settings.steadyMs} ms between restarts, PM2 ${PM2_VERSION}.`,
      "",
      ...rows.map((row) => `- ${row.target}: ${row.describe}`),
      "",
      summary,
      "",
      "Counted from the end of the warm-up to the end of the run; latencies of the answered requests. " +
        "failed = reset + refused + timeout + non-2xx + other; " +
        "longest gap: the longest time in which no request was answered. Picture: `peers.svg`.",
      "",
      "Restart (signal or `pm2 reload` to the old process gone, or the command done), ms:",
      "",
      ...rows.filter((row) => row.restarts > 0).map((row) => `- ${row.target}: ${row.restartMs.join(", ")}`)
    ].join("\n"),
    picture(runs)
  )
}

// -----------------------------------------------------------------------------
// Main
// -----------------------------------------------------------------------------

const main = async () => {
  for (const name of settings.targets) if (!(name in targets)) throw new Error(`unknown target ${name}`)
  const usesPm2 = settings.targets.some((name) => name.startsWith("pm2"))
  if (usesPm2) {
    installPm2()
    onCleanup(killPm2)
  }
  console.log(
    `Peers: ${settings.targets.join(", ")}; ${settings.connections} connections, ${settings.handlerMs} ms handler, ${settings.restarts} restarts each\n`
  )
  const runs: Array<Run> = []
  try {
    for (const name of settings.targets) {
      console.log(`${name}: ${targets[name]!.describe}`)
      runs.push(await runTarget(name))
    }
  } finally {
    if (usesPm2) killPm2()
  }
  report(runs)
}

deadline(DEADLINE_MS)
await runMain(main)
