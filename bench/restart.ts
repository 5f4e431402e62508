/**
 * Restarts under load: the demo (`examples/demo.ts`, three HTTP ports) is
 * restarted again and again with `SIGUSR2` while keep-alive clients hammer
 * all three ports; every request must be answered.
 *
 *   npm run bench:restart [-- --restarts 20 --connections 48 --steady 1500 --warmup 2000]
 *
 * Options:
 * - `--quick`: a shorter run (6 restarts, 800 ms steady, 1000 ms warm-up),
 *   unless those are given too.
 * - `--demo PATH`: the demo to restart, for instance an older checkout's
 *   `examples/demo.ts`; the revision recorded is that checkout's.
 * - `--compile-cache fresh|first|off`: each run has a compile cache
 *   directory of its own (`GRACE_COMPILE_CACHE`), empty at the start, so that
 *   runs compare: `fresh` (the default) as the supervisor does by default
 *   (the second generation writes the cache, later ones read it), `first`
 *   with `NODE_COMPILE_CACHE` set for the first generation too (a systemd
 *   unit that sets it), `off` with `GRACE_COMPILE_CACHE=off`.
 *   `NODE_COMPILE_CACHE` from this shell never reaches the demo.
 * - `--flat-cache`: a stand-in for a fix of the supervisor at dbf7ab1, which
 *   hands its successors the directory Node resolved (with Node's own
 *   `v<version>-<arch>-<hash>-<uid>` folder in it) when the cache was already
 *   on (`NODE_COMPILE_CACHE`): the successor's Node adds that folder again,
 *   so each generation from the third on (from the second with `first`)
 *   caches one level deeper and reads nothing. A link from that folder to
 *   itself makes every level the same directory.
 * - `--renice N`: a prototype of a lower CPU priority for the successor until
 *   it is ready: the successor (found as the child of the process signalled)
 *   gets nice N, every thread, as soon as it appears, and 0 again at its
 *   banner. Needs root (or CAP_SYS_NICE) to go back to 0.
 * - `--bundle`: the demo bundled into one file with rolldown first (in its
 *   checkout's `.cache/restart/`), as the README advises for the fastest
 *   hand-offs: Node then resolves and reads one module instead of hundreds.
 * - `--out DIR`: where to write the results (default `bench/results/`).
 * - `--workers N`: the demo in workers mode (`GRACE_WORKERS=N`), restarted
 *   `--rolls` times (default 20; 4 with `--quick`) by `SIGHUP` to its
 *   primary (a rolling restart, one slot at a time) and `--upgrades` times
 *   (default 5; 2 with `--quick`) by `SIGUSR2` (a new primary and its
 *   workers), the upgrades spread evenly among the rolls, each new worker
 *   or primary on probation for `--probation` (`GRACE_PROBATION`, default
 *   `1 second`, to keep the run a few minutes). Results go to
 *   `restart-workers.json`, `.md` and `.svg`; see "Workers" below.
 *
 * Load: autocannon, `--connections` keep-alive connections spread over the
 * three ports, each sending `GET /sleep/?duration=0s` as soon as the previous
 * answer arrives. Alongside, a prober sends one request at a time, each on a
 * new connection, and reads which pid answered.
 *
 * Restarts, one at a time: signal the current pid, wait (bounded) for the
 * successor's `Serving ... with pid N.` line and for the old process to drain
 * and exit, then let the load run in steady state for `--steady` ms.
 *
 * How to read it:
 * - failed requests: connection errors (resets, refusals), timeouts, non-2xx
 *   answers, requests the server never answered on a connection it closed,
 *   requests still unanswered when the load stopped, and prober failures. The
 *   target is 0; the script exits 1 otherwise. Every failure is listed with
 *   its time relative to the restart it fell into.
 * - latency: per request, from write to last byte; "during restarts" are the
 *   requests that overlap a restart window, from a signal to the old
 *   process's exit, "steady" all the others after the warm-up; "start-up"
 *   the requests overlapping a signal to the successor's banner (part of the
 *   window, where the successor's start-up competes for the CPU).
 * - handoff: from the signal to the first prober answer from the new pid.
 *   ready: signal to the successor's banner. drained: signal to the old
 *   process's exit.
 * - fds and RSS of the first and the final process, both read under load in
 *   steady state: they should be close; growth over restarts is a leak.
 *
 * Workers: the demo's processes (a primary, its workers, and during an
 * upgrade the new primary and its workers) are counted every 20 ms by their
 * command line (the demo's first address is unique to the run), in a worker
 * thread, and each restart's peak is reported (a roll should peak at N + 2,
 * an upgrade at 2N + 2). The times come from the demo's logs (logfmt on
 * stderr, with their timestamps): a roll lasts from the signal to the
 * primary's `workers restarted` (each old worker gone), an upgrade from the
 * signal to the old primary and its workers gone (polled); the handoff is
 * the signal to the first prober answer from a new worker. Latency phases:
 * the window is the whole restart; start-up is each new worker's
 * `worker started` to its `ready` (for an upgrade, the signal to the old
 * primary's `successor ready`); hand-over is a new worker's `ready` to its
 * slot's old worker's `stopped` (for an upgrade, `successor ready` to the
 * old group gone).
 *
 * autocannon ignores `Connection: close`: it writes its next request on a
 * connection the server said it is closing (that request is then lost, and
 * autocannon does not notice). A draining server says exactly that, so each
 * client here behaves like an HTTP/1.1 client (RFC 9112, section 9.6):
 * after a response with `Connection: close` it opens a new connection for
 * its next request. It also counts what autocannon does not: a request left
 * unanswered when the server closes the connection.
 */
import { execFileSync } from "node:child_process"
import type { EventEmitter } from "node:events"
import { symlinkSync } from "node:fs"
import * as Path from "node:path"
import * as Http from "node:http"
import { Worker } from "node:worker_threads"
import type * as Net from "node:net"
import { parseArgs } from "node:util"
import type autocannon from "autocannon"
import {
  bundleProgram,
  fixed,
  freshCompileCache,
  freePorts,
  isAlive,
  killAllWithArgument,
  machine,
  markdownTable,
  percentile,
  processGroup,
  processesWithArgument,
  processStats,
  setNice,
  sleep,
  sortedOf,
  spawnNode,
  startLoad,
  until,
  within,
  writeResults
} from "./support.ts"
import type { Load } from "./support.ts"
import { timelineSvg } from "./svg.ts"
import type { Panel } from "./svg.ts"

const { values: flags } = parseArgs({
  options: {
    restarts: { type: "string" },
    connections: { type: "string", default: "48" },
    steady: { type: "string" },
    warmup: { type: "string" },
    quick: { type: "boolean", default: false },
    demo: { type: "string" },
    "compile-cache": { type: "string", default: "fresh" },
    renice: { type: "string", default: "0" },
    out: { type: "string" },
    "flat-cache": { type: "boolean", default: false },
    bundle: { type: "boolean", default: false },
    workers: { type: "string" },
    rolls: { type: "string" },
    upgrades: { type: "string" },
    probation: { type: "string", default: "1 second" }
  }
})
const COMPILE_CACHE_MODES = ["fresh", "first", "off"] as const
const compileCache = flags["compile-cache"] as (typeof COMPILE_CACHE_MODES)[number]
if (!COMPILE_CACHE_MODES.includes(compileCache))
  throw new Error(`--compile-cache ${compileCache}: use ${COMPILE_CACHE_MODES.join(", ")}`)
const settings = {
  restarts: Number(flags.restarts ?? (flags.quick ? 6 : 20)),
  connections: Number(flags.connections),
  steadyMs: Number(flags.steady ?? (flags.quick ? 800 : 1500)),
  warmupMs: Number(flags.warmup ?? (flags.quick ? 1000 : 2000)),
  path: "/sleep/?duration=0s",
  requestTimeoutSeconds: 10,
  compileCache,
  /** `--flat-cache`: every generation's compile cache in one directory whatever the supervisor hands on. */
  flatCache: flags["flat-cache"],
  /** The successor's nice value until its banner; 0: left alone. */
  renice: Number(flags.renice),
  /** `--bundle`: the demo bundled into one file first. */
  bundle: flags.bundle
}
const BANNER = /^Serving .* with pid (\d+)\.$/
const ANSWER = /from pid (\d+)\.\s*$/
/** The whole run, whatever happens (a workers run has more, and longer, restarts). */
const DEADLINE_MS = flags.workers === undefined ? 180_000 : 900_000

const now = () => performance.now()

// -----------------------------------------------------------------------------
// What the clients saw
// -----------------------------------------------------------------------------

interface Failure {
  /** `performance.now()` when it was seen. */
  readonly at: number
  readonly source: "load" | "prober"
  readonly kind: string
  readonly detail: string
}

/** Every answer's end time, latency and pid (parallel arrays), and every failure. */
const record = {
  ends: [] as Array<number>,
  latencies: [] as Array<number>,
  pids: [] as Array<number>,
  failures: [] as Array<Failure>,
  answersByPid: new Map<number, number>(),
  /** Answers with `Connection: close`: each one moved a client to a new connection. */
  connectionClose: 0
}
const fail = (failure: Omit<Failure, "at">) => record.failures.push({ at: now(), ...failure })
/** The pid read from the body of the answer being counted: autocannon reads the body just before its `response` event. */
let answeredBy = 0

// -----------------------------------------------------------------------------
// An autocannon client that honours `Connection: close`
// -----------------------------------------------------------------------------

/** The parts of autocannon's client (lib/httpClient.js, autocannon 9) that `politeClient` wraps. */
interface ClientInternals {
  conn: Net.Socket
  pipelinedRequests: { clear(): void }
  _connect(): void
  _doRequest(): void
  _resetConnection(): void
}

/** Clients with a request in flight, and when it was written: what is left at the end was never answered. */
const inFlight = new Map<ClientInternals, number>()

/**
 * autocannon's `setupClient`: after a response with `Connection: close` the
 * next request goes on a new connection, and a request left unanswered when
 * the server closes the connection is a failure.
 */
const politeClient = (client: autocannon.Client) => {
  const internals = client as unknown as ClientInternals
  const events = client as EventEmitter
  for (const name of ["pipelinedRequests", "_connect", "_doRequest", "_resetConnection"] as const) {
    if (!(name in internals)) throw new Error(`autocannon's client has no ${name}: update bench/restart.ts`)
  }
  let closing = false
  events.on("headers", (info: { readonly shouldKeepAlive: boolean }) => {
    closing = !info.shouldKeepAlive
    if (closing) record.connectionClose++
  })
  events.on("request", () => inFlight.set(internals, now()))
  events.on("response", () => inFlight.delete(internals))

  const doRequest = internals._doRequest
  internals._doRequest = function (this: ClientInternals) {
    if (closing) {
      // A new connection, whose `_connect` sends the request.
      closing = false
      return this._resetConnection()
    }
    doRequest.call(this)
  }

  const connect = internals._connect
  internals._connect = function (this: ClientInternals) {
    inFlight.delete(this)
    closing = false
    connect.call(this)
    const conn = this.conn
    // Runs before autocannon's own `end` handler, which reconnects without a word.
    conn.prependListener("end", () => {
      if (conn !== this.conn) return
      if (inFlight.has(this)) {
        fail({
          source: "load",
          kind: "unanswered",
          detail: "the server closed the connection with a request in flight"
        })
        inFlight.delete(this)
      }
      this.pipelinedRequests.clear()
      // autocannon would reconnect a second time on a later error of this socket.
      conn.removeAllListeners("error")
      conn.on("error", (error: NodeJS.ErrnoException) =>
        fail({ source: "load", kind: "error after close", detail: error.code ?? error.message })
      )
    })
    // An error is counted by autocannon (`reqError`); its request must not be matched with the next answer.
    conn.prependListener("error", () => {
      inFlight.delete(this)
      this.pipelinedRequests.clear()
    })
  }
}

const startClients = (ports: ReadonlyArray<number>): Array<Load> =>
  ports.map((port, i) => {
    const load = startLoad({
      url: `http://127.0.0.1:${port}${settings.path}`,
      // Spread over the ports, at least one connection each.
      connections: Math.max(
        1,
        Math.floor(settings.connections / ports.length) + (i < settings.connections % ports.length ? 1 : 0)
      ),
      duration: DEADLINE_MS / 1000,
      timeout: settings.requestTimeoutSeconds,
      pipelining: 1,
      setupClient: politeClient,
      requests: [
        {
          method: "GET",
          path: settings.path,
          onResponse: (_status, body) => {
            const pid = Number(body.match(ANSWER)?.[1] ?? 0)
            record.answersByPid.set(pid, (record.answersByPid.get(pid) ?? 0) + 1)
            answeredBy = pid
          }
        }
      ]
    })
    load.instance.on("response", (_client, status, _bytes, latency) => {
      if (status < 200 || status > 299) fail({ source: "load", kind: "non-2xx", detail: String(status) })
      record.ends.push(now())
      record.latencies.push(latency)
      record.pids.push(answeredBy)
      answeredBy = 0
    })
    load.instance.on("reqError", (error: NodeJS.ErrnoException) =>
      fail({
        source: "load",
        kind: error.code === "ECONNRESET" ? "reset" : "error",
        detail: error.code ?? error.message
      })
    )
    return load
  })

// -----------------------------------------------------------------------------
// The prober: one request at a time, each on a new connection
// -----------------------------------------------------------------------------

interface Probe {
  readonly end: number
  readonly pid: number
}

const probe = (port: number): Promise<number> =>
  new Promise((resolve, reject) => {
    const request = Http.get(
      { host: "127.0.0.1", port, path: settings.path, agent: false, timeout: 5000 },
      (response) => {
        let body = ""
        response.setEncoding("utf8")
        response.on("data", (chunk: string) => (body += chunk))
        response.on("error", reject)
        response.on("end", () => {
          const pid = body.match(ANSWER)?.[1]
          if (response.statusCode === 200 && pid !== undefined) resolve(Number(pid))
          else reject(new Error(`status ${response.statusCode}: ${JSON.stringify(body)}`))
        })
      }
    )
    request.on("timeout", () => request.destroy(new Error("no answer within 5 s")))
    request.on("error", reject)
  })

const startProber = (ports: ReadonlyArray<number>) => {
  const probes: Array<Probe> = []
  const stopping = new AbortController()
  const done = (async () => {
    for (let i = 0; !stopping.signal.aborted; i++) {
      try {
        const pid = await probe(ports[i % ports.length]!)
        probes.push({ end: now(), pid })
      } catch (error) {
        const cause = error as NodeJS.ErrnoException
        fail({
          source: "prober",
          kind: cause.code === "ECONNRESET" ? "reset" : "error",
          detail: cause.code ?? cause.message
        })
      }
      await sleep(2)
    }
  })()
  return {
    probes,
    stop: () => {
      stopping.abort()
      return done
    }
  }
}

// -----------------------------------------------------------------------------
// The run
// -----------------------------------------------------------------------------

interface Restart {
  readonly from: number
  readonly to: number
  /** Times (`performance.now()`): the signal, the successor's banner, the old process gone. */
  readonly signalled: number
  readonly ready: number
  readonly drained: number
  /** `--renice`: ms from the signal to the successor reniced. */
  readonly renicedMs: number
}

const demoSource =
  flags.demo === undefined ? new URL("../examples/demo.ts", import.meta.url).pathname : Path.resolve(flags.demo)

// Bundled inside the demo's own checkout, where its node_modules (koffi) are.
const bundled = (): string => {
  const file = Path.join(Path.dirname(demoSource), "../.cache/restart/demo.mjs")
  const written = bundleProgram(demoSource, file)
  if (written === undefined) throw new Error("--bundle needs rolldown (installed with vitest): run npm ci")
  return written
}
const demoPath = settings.bundle ? bundled() : demoSource

/** Node's own folder in a compile cache directory, linked to itself (see `--flat-cache`). */
const flattenCache = (directory: string) => {
  const script = `const m = require("node:module"); m.enableCompileCache(${JSON.stringify(directory)}); m.getCompileCacheDir()`
  const env = { ...process.env }
  delete env.NODE_COMPILE_CACHE
  const versioned = execFileSync(process.execPath, ["-p", script], { encoding: "utf8", env }).trim()
  symlinkSync(".", Path.join(versioned, Path.basename(versioned)))
}

/** The first generation's environment: a compile cache directory of this run's alone (see `--compile-cache`). */
const demoEnv = (directory: string): Record<string, string | undefined> => ({
  GRACE_COMPILE_CACHE: compileCache === "off" ? "off" : directory,
  NODE_COMPILE_CACHE: compileCache === "first" ? directory : undefined
})

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

const startRenicer = () => {
  const worker = new Worker(RENICE_WORKER, { eval: true })
  worker.unref()
  return {
    /** Starts watching for `from`'s successor; `ready` stops watching and sets it back to nice 0. */
    watch: (from: number, since: number) => {
      const stop = new SharedArrayBuffer(4)
      const found = new Promise<{ readonly child: number; readonly at: number }>((resolve) =>
        worker.once("message", resolve)
      )
      // A worker thread's port, not a window: there is no origin.
      // oxlint-disable-next-line unicorn/require-post-message-target-origin
      worker.postMessage({ from, nice: settings.renice, stop })
      return {
        ready: async (to: number) => {
          Atomics.store(new Int32Array(stop), 0, 1)
          const { child, at } = await found
          // Every thread, those started since the renice (which inherited it) too.
          setNice(child === 0 ? to : child, 0)
          return child === 0 ? Number.NaN : at - (performance.timeOrigin + since)
        }
      }
    },
    stop: () => worker.terminate()
  }
}

const main = async () => {
  const ports = await freePorts(3)
  console.log(
    `Restarts under load: ${settings.restarts} restarts, ${settings.connections} keep-alive connections on ` +
      `127.0.0.1:${ports.join(", ")}, ${settings.steadyMs} ms steady state after each\n`
  )
  const cache = freshCompileCache()
  if (settings.flatCache) flattenCache(cache.directory)
  const demo = spawnNode([demoPath, ...ports.flatMap((port, i) => [`--a${i}`, `127.0.0.1:${port}`])], {
    group: true,
    env: demoEnv(cache.directory)
  })
  const restarts: Array<Restart> = []
  const renicer = settings.renice === 0 ? undefined : startRenicer()
  let loads: Array<Load> = []
  let prober: ReturnType<typeof startProber> | undefined
  try {
    let current = Number((await demo.waitForLine(BANNER, 20_000))[1])
    const first = current
    const loadStart = now()
    loads = startClients(ports)
    prober = startProber(ports)
    await sleep(settings.warmupMs)
    const measuredFrom = now()
    const firstStats = processStats(current)

    // A restart that does not complete ends the restarts, not the report.
    let aborted: string | undefined
    try {
      for (let i = 1; i <= settings.restarts; i++) {
        const from = current
        const seen = demo.lines.length
        const signalled = now()
        const watch = renicer?.watch(from, signalled)
        process.kill(from, "SIGUSR2")
        const to = Number((await demo.waitForLine(BANNER, 20_000, seen))[1])
        const ready = now()
        const renicedMs = (await watch?.ready(to)) ?? Number.NaN
        current = to
        await until(() => !isAlive(from), 30_000, `pid ${from} to drain and exit`)
        const drained = now()
        restarts.push({ from, to, signalled, ready, drained, renicedMs })
        console.log(
          `restart ${String(i).padStart(2)}: ${from} -> ${to}  ready ${fixed(ready - signalled, 0)} ms, ` +
            `old gone ${fixed(drained - signalled, 0)} ms, failures so far ${record.failures.length}` +
            (watch === undefined ? "" : `, reniced at ${fixed(renicedMs, 0)} ms`)
        )
        await sleep(settings.steadyMs)
      }
    } catch (error) {
      aborted = error instanceof Error ? error.message : String(error)
      console.error(
        `\nRestarts stopped: ${aborted}\ndemo stderr (last 20 lines):\n${demo.errors.slice(-20).join("\n")}`
      )
    }

    const finalStats = processStats(current)
    const stopped = now()
    for (const load of loads) load.instance.stop()
    const results = await within(Promise.all(loads.map((load) => load.result)), 10_000, "autocannon to stop")
    await within(prober.stop(), 10_000, "the prober to stop")
    for (const written of inFlight.values()) {
      if (stopped - written > 2000) {
        fail({ source: "load", kind: "stalled", detail: `unanswered for ${fixed(stopped - written, 0)} ms at the end` })
      }
    }

    const report = summarize({ loadStart, measuredFrom, stopped, restarts, results, probes: prober.probes })
    const terminated = await terminate(demo.pid, current)
    const output = {
      machine: machine(Path.dirname(demoSource)),
      demo: demoPath,
      settings,
      ports,
      aborted,
      ...report,
      first: { pid: first, ...firstStats },
      final: { pid: current, ...finalStats },
      terminated
    }
    const svg = picture({
      loadStart,
      stopped,
      restarts: restarts.map((r, i) => ({ ...r, label: `restart ${i + 1}, pid ${r.from} -> ${r.to}` })),
      title: "Restarts under load (bench:restart)",
      subtitle:
        `${output.machine.revision}, Node ${process.version}: the demo on three ports, ` +
        `${settings.connections} keep-alive connections, ${restarts.length} restarts by SIGUSR2`
    })
    printAndWrite(output, svg)
    if (aborted !== undefined || report.failed > 0 || !terminated.exited || terminated.leftover.length > 0)
      process.exitCode = 1
  } catch (error) {
    process.exitCode = 1
    console.error(`\nFAILED: ${error instanceof Error ? error.message : String(error)}`)
    console.error(`demo stderr (last 40 lines):\n${demo.errors.slice(-40).join("\n")}`)
  } finally {
    for (const load of loads) load.instance.stop()
    await prober?.stop()
    // Every generation, whichever is left.
    await demo.stop(1000)
    await renicer?.stop()
    cache.remove()
  }
}

/** SIGTERM to the final process; waits for it, then for its whole process group, to be gone. */
const terminate = async (group: number, pid: number) => {
  const started = now()
  process.kill(pid, "SIGTERM")
  const exited = await until(() => !isAlive(pid), 15_000, `pid ${pid} to exit after SIGTERM`).then(
    () => true,
    () => false
  )
  const exitMs = now() - started
  const leftover = processGroup(group)
  return { pid, exited, exitMs, leftover }
}

// -----------------------------------------------------------------------------
// Report
// -----------------------------------------------------------------------------

/** A span of a run (`performance.now()` ms). */
interface Interval {
  readonly from: number
  readonly to: number
}

/**
 * The spans of the restarts a request can overlap: the whole window of each
 * restart, the start-up of a new process, the hand-over (the new one ready,
 * the old one not gone yet), and the half second after a restart.
 */
interface Phases {
  readonly windows: ReadonlyArray<Interval>
  readonly startups: ReadonlyArray<Interval>
  readonly handovers: ReadonlyArray<Interval>
  readonly afters: ReadonlyArray<Interval>
}

/** A single process's restarts: signal to old process gone, of which signal to ready and ready to gone. */
const phasesOf = (restarts: ReadonlyArray<Restart>): Phases => ({
  windows: restarts.map((r) => ({ from: r.signalled, to: r.drained })),
  startups: restarts.map((r) => ({ from: r.signalled, to: r.ready })),
  handovers: restarts.map((r) => ({ from: r.ready, to: r.drained })),
  afters: restarts.map((r) => ({ from: r.drained, to: r.drained + 500 }))
})

/** What the clients saw, whatever the restarts were: requests, failures and latency by phase. */
const summarizeLoad = (input: {
  readonly loadStart: number
  readonly measuredFrom: number
  readonly stopped: number
  /** When each restart was signalled, in order: failures are counted from one to the next. */
  readonly signals: ReadonlyArray<number>
  readonly phases: Phases
  readonly results: ReadonlyArray<autocannon.Result>
  readonly probes: ReadonlyArray<Probe>
}) => {
  const { signals, phases, results, probes } = input
  // A request belongs to a phase of a restart if it overlaps it.
  const phase = (intervals: ReadonlyArray<Interval>) => (start: number, end: number) =>
    intervals.some((interval) => start <= interval.to && end >= interval.from)
  const inWindow = phase(phases.windows)
  const inStartup = phase(phases.startups)
  const inHandover = phase(phases.handovers)
  const inAfter = phase(phases.afters)

  const steady: Array<number> = []
  const during: Array<number> = []
  // Where in a restart the tail is: the successor starting, the hand-over (ready to the old process gone), and the
  // half second after it (counted as steady), where the successor serves with code not yet optimized.
  const startup: Array<number> = []
  const handover: Array<number> = []
  const after: Array<number> = []
  for (let i = 0; i < record.ends.length; i++) {
    const end = record.ends[i]!
    const latency = record.latencies[i]!
    const start = end - latency
    if (start < input.measuredFrom) continue
    ;(inWindow(start, end) ? during : steady).push(latency)
    if (inStartup(start, end)) startup.push(latency)
    if (inHandover(start, end)) handover.push(latency)
    else if (inAfter(start, start)) after.push(latency)
  }
  const latency = (values: Array<number>) => {
    const sorted = sortedOf(values)
    return {
      requests: sorted.length,
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      maxMs: sorted.length > 0 ? sorted[sorted.length - 1]! : Number.NaN
    }
  }

  const failures = record.failures.map((failure) => {
    const index = signals.findLastIndex((signalled) => signalled <= failure.at)
    return {
      ...failure,
      at: Math.round(failure.at - input.loadStart),
      restart: index + 1,
      sinceSignalMs: index >= 0 ? Math.round(failure.at - signals[index]!) : undefined
    }
  })
  const byKind: Record<string, number> = {}
  for (const failure of failures)
    byKind[`${failure.source} ${failure.kind}`] = (byKind[`${failure.source} ${failure.kind}`] ?? 0) + 1

  const sum = (f: (result: autocannon.Result) => number) => results.reduce((n, result) => n + f(result), 0)
  const latencies = {
    steady: latency(steady),
    duringRestarts: latency(during),
    startup: latency(startup),
    handover: latency(handover),
    afterRestarts: latency(after)
  }
  return {
    requests: {
      sent: sum((r) => r.requests.sent),
      answered: sum((r) => r.requests.total),
      probes: probes.length,
      connectionClose: record.connectionClose,
      durationSeconds: (input.stopped - input.loadStart) / 1000,
      answersByPid: Object.fromEntries(record.answersByPid)
    },
    autocannon: {
      errors: sum((r) => r.errors),
      timeouts: sum((r) => r.timeouts),
      non2xx: sum((r) => r.non2xx)
    },
    failed: failures.length,
    failuresByKind: byKind,
    failures,
    latency: {
      ...latencies,
      /** The target: at most 1.3. */
      p99DuringOverSteady: latencies.duringRestarts.p99Ms / latencies.steady.p99Ms
    }
  }
}

/** Failures seen from `signalled` until `next`: those of one restart. */
const failuresBetween = (signalled: number, next: number) =>
  record.failures.filter((f) => f.at >= signalled && f.at < next).length

/** The median, smallest and largest of durations, and how many are missing (NaN). */
const spreadOf = (values: ReadonlyArray<number>) => {
  const sorted = sortedOf(values.filter(Number.isFinite))
  return {
    medianMs: percentile(sorted, 50),
    minMs: sorted.length > 0 ? sorted[0]! : Number.NaN,
    maxMs: sorted.length > 0 ? sorted[sorted.length - 1]! : Number.NaN,
    missing: values.length - sorted.length
  }
}

const summarize = (input: {
  readonly loadStart: number
  readonly measuredFrom: number
  readonly stopped: number
  readonly restarts: ReadonlyArray<Restart>
  readonly results: ReadonlyArray<autocannon.Result>
  readonly probes: ReadonlyArray<Probe>
}) => {
  const { restarts, probes } = input
  const perRestart = restarts.map((restart, i) => {
    const answered = probes.find((p) => p.pid === restart.to && p.end >= restart.signalled)
    return {
      from: restart.from,
      to: restart.to,
      readyMs: restart.ready - restart.signalled,
      handoffMs: answered === undefined ? Number.NaN : answered.end - restart.signalled,
      drainedMs: restart.drained - restart.signalled,
      renicedMs: restart.renicedMs,
      failures: failuresBetween(restart.signalled, restarts[i + 1]?.signalled ?? input.stopped)
    }
  })
  return {
    ...summarizeLoad({ ...input, signals: restarts.map((r) => r.signalled), phases: phasesOf(restarts) }),
    ready: spreadOf(perRestart.map((r) => r.readyMs)),
    handoff: spreadOf(perRestart.map((r) => r.handoffMs)),
    drained: spreadOf(perRestart.map((r) => r.drainedMs)),
    restarts: perRestart
  }
}

type Output = ReturnType<typeof summarize> & {
  readonly aborted: string | undefined
  readonly machine: ReturnType<typeof machine>
  readonly demo: string
  readonly settings: typeof settings
  readonly ports: ReadonlyArray<number>
  readonly first: { readonly pid: number; readonly fds: number; readonly rssKiB: number }
  readonly final: { readonly pid: number; readonly fds: number; readonly rssKiB: number }
  readonly terminated: Awaited<ReturnType<typeof terminate>>
}

/** A restart as drawn: its window, from the signal to the old process(es) gone, and what to call it. */
interface Shown {
  readonly signalled: number
  readonly ready: number
  readonly drained: number
  readonly label: string
}

/**
 * The run as a picture: the whole run, then two restarts up close: the worst
 * (most failures, else the slowest answer) and a typical one (the median time
 * from signal to the old process's exit).
 */
const picture = (input: {
  readonly loadStart: number
  readonly stopped: number
  /** Each restart's window, from the signal to the old process(es) gone, and what to call it. */
  readonly restarts: ReadonlyArray<Shown>
  readonly title: string
  readonly subtitle: string
}): string => {
  const { loadStart, stopped, restarts } = input
  const points = { count: record.ends.length, ends: record.ends, latencies: record.latencies, pids: record.pids }
  const failures = record.failures.map((f) => ({ at: f.at, kind: `${f.source} ${f.kind}` }))
  const panel = (title: string, origin: number, from: number, to: number): Panel => ({
    title,
    origin,
    from,
    to,
    points,
    windows: restarts,
    failures
  })
  const worstLatency = (restart: Shown) => {
    let worst = 0
    for (let i = 0; i < record.ends.length; i++) {
      const end = record.ends[i]!
      if (end >= restart.signalled && end - record.latencies[i]! <= restart.drained)
        worst = Math.max(worst, record.latencies[i]!)
    }
    return worst
  }
  const failuresIn = (restart: Shown) =>
    record.failures.filter((f) => f.at >= restart.signalled - 500 && f.at <= restart.drained + 500).length
  const ranked = restarts
    .map((restart, i) => ({ restart, i, failures: failuresIn(restart), worst: worstLatency(restart) }))
    .toSorted((a, b) => b.failures - a.failures || b.worst - a.worst)
  const byDrain = restarts
    .map((restart, i) => ({ restart, i }))
    .toSorted((a, b) => a.restart.drained - a.restart.signalled - (b.restart.drained - b.restart.signalled))
  const closeUp = (label: string, chosen: { readonly restart: Shown; readonly i: number } | undefined) => {
    if (chosen === undefined) return []
    const { restart } = chosen
    return [
      panel(
        `${label}: ${restart.label}; ms since the signal`,
        restart.signalled,
        restart.signalled - 400,
        restart.drained + 600
      )
    ]
  }
  return timelineSvg(
    input.title,
    `${input.subtitle}, ${record.ends.length} answers, ${record.failures.length} failures`,
    [
      panel("The whole run; s since the load started", loadStart, loadStart, stopped),
      ...closeUp("Worst", ranked[0]),
      // The median restart, or its neighbour when that one is the worst.
      ...closeUp("Typical", byDrain.filter((candidate) => candidate.i !== ranked[0]?.i)[(byDrain.length - 1) >> 1])
    ]
  )
}

const printAndWrite = (output: Output, svg: string) => {
  const mib = (kib: number) => fixed(kib / 1024, 1)
  const summary = markdownTable(
    ["measure", "value"],
    [
      ["restarts", String(output.restarts.length)],
      ["requests answered (load)", String(output.requests.answered)],
      ["prober requests", String(output.requests.probes)],
      ["answers with Connection: close (load)", String(output.requests.connectionClose)],
      ["failed requests", String(output.failed)],
      ...Object.entries(output.failuresByKind).map(([kind, n]) => [`  ${kind}`, String(n)]),
      [
        "latency steady (p50 / p99 / max)",
        `${fixed(output.latency.steady.p50Ms)} / ${fixed(output.latency.steady.p99Ms)} / ${fixed(output.latency.steady.maxMs)} ms (${output.latency.steady.requests} requests)`
      ],
      [
        "latency during restarts, signal to old process gone (p50 / p99 / max)",
        `${fixed(output.latency.duringRestarts.p50Ms)} / ${fixed(output.latency.duringRestarts.p99Ms)} / ${fixed(output.latency.duringRestarts.maxMs)} ms (${output.latency.duringRestarts.requests} requests)`
      ],
      ["p99 during restarts / p99 steady (target at most 1.3)", fixed(output.latency.p99DuringOverSteady)],
      ["  of which: start-up, signal to successor ready (p50 / p99 / max)", latencyText(output.latency.startup)],
      ["  of which: hand-over, successor ready to old process gone", latencyText(output.latency.handover)],
      ["steady, but in the half second after the old process is gone", latencyText(output.latency.afterRestarts)],
      ["ready, signal to the successor's banner (median, min-max)", spreadText(output.ready)],
      ["handoff, signal to first answer from the new pid (median, min-max)", spreadText(output.handoff)],
      ["old process gone, signal to its exit (median, min-max)", spreadText(output.drained)],
      ["first process: fds, RSS", `${output.first.fds}, ${mib(output.first.rssKiB)} MiB (pid ${output.first.pid})`],
      ["final process: fds, RSS", `${output.final.fds}, ${mib(output.final.rssKiB)} MiB (pid ${output.final.pid})`],
      [
        "SIGTERM to the final process",
        output.terminated.exited
          ? `exited in ${fixed(output.terminated.exitMs, 0)} ms, ${output.terminated.leftover.length} process(es) left`
          : `did not exit within 15 s; left: ${output.terminated.leftover.join(", ")}`
      ]
    ]
  )
  const reniced = output.settings.renice !== 0
  const perRestart = markdownTable(
    [
      "#",
      "old pid",
      "new pid",
      "ready ms",
      "handoff ms",
      "old gone ms",
      ...(reniced ? ["reniced ms"] : []),
      "failures"
    ],
    output.restarts.map((r, i) => [
      String(i + 1),
      String(r.from),
      String(r.to),
      fixed(r.readyMs, 0),
      fixed(r.handoffMs, 0),
      fixed(r.drainedMs, 0),
      ...(reniced ? [fixed(r.renicedMs, 0)] : []),
      String(r.failures)
    ])
  )
  const { failureList, verdict } = failureReport(output)
  console.log(`\n${summary}\n\n${perRestart}\n\n${failureList}\n\n${verdict}`)
  writeResults(
    "restart",
    output,
    [
      "# Restarts under load",
      "",
      `\`npm run bench:restart\` at ${output.machine.revision} on Node ${output.machine.node}, ${output.machine.cpus} CPUs, ${output.machine.date}: ` +
        `the demo on three ports, ${output.settings.connections} keep-alive connections sending ` +
        `\`GET ${output.settings.path}\`, ${output.restarts.length} restarts by \`SIGUSR2\`, one at a time, ` +
        `${output.settings.steadyMs} ms of steady state after each; ${settingsText(output.settings)}.`,
      "",
      "Latency is per request, from write to last byte. A restart's window runs from the signal to the old " +
        'process\'s exit: requests overlapping a window are "during restarts", the others (after the warm-up) ' +
        '"steady". Within a window, "start-up" runs from the signal to the successor\'s banner, "hand-over" from ' +
        "there to the old process's exit (a request overlapping both counts in both).",
      "",
      summary,
      "",
      verdict,
      "",
      perRestart,
      "",
      failureList,
      "",
      "Picture: `restart.svg`."
    ].join("\n"),
    svg,
    flags.out === undefined ? undefined : Path.resolve(flags.out)
  )
}

/** Every failed request listed, and whether the run met its target: the same for one process and for workers. */
const failureReport = (output: {
  readonly aborted: string | undefined
  readonly failed: number
  readonly failures: ReadonlyArray<{
    readonly at: number
    readonly restart: number
    readonly sinceSignalMs: number | undefined
    readonly source: string
    readonly kind: string
    readonly detail: string
  }>
}) => ({
  failureList:
    output.failures.length === 0
      ? "No failed requests."
      : markdownTable(
          ["t ms", "restart", "ms after signal", "client", "kind", "detail"],
          output.failures.map((f) => [
            String(f.at),
            String(f.restart),
            String(f.sinceSignalMs ?? ""),
            f.source,
            f.kind,
            f.detail
          ])
        ),
  verdict:
    output.aborted !== undefined
      ? `Target (0 failed requests, every restart done): NOT met: ${output.aborted}.`
      : output.failed === 0
        ? "Target (0 failed requests): met."
        : `Target (0 failed requests): NOT met (${output.failed} failed).`
})

const latencyText = (l: {
  readonly p50Ms: number
  readonly p99Ms: number
  readonly maxMs: number
  readonly requests: number
}) => `${fixed(l.p50Ms)} / ${fixed(l.p99Ms)} / ${fixed(l.maxMs)} ms (${l.requests} requests)`

const spreadText = (spread: { readonly medianMs: number; readonly minMs: number; readonly maxMs: number }) =>
  `${fixed(spread.medianMs, 0)} ms, ${fixed(spread.minMs, 0)}-${fixed(spread.maxMs, 0)}`

const settingsText = (s: typeof settings) =>
  [
    {
      fresh:
        "compile cache in a fresh directory (the supervisor's default: generation 2 writes it, 3 and later read it)",
      first: "compile cache in a fresh directory, NODE_COMPILE_CACHE set for the first generation too",
      off: "compile cache off (GRACE_COMPILE_CACHE=off)"
    }[s.compileCache],
    ...(s.flatCache ? ["every generation's compile cache in one directory (--flat-cache)"] : []),
    ...(s.bundle ? ["the demo bundled into one file (--bundle, rolldown)"] : []),
    s.renice === 0 ? "successor at the same priority" : `successor at nice ${s.renice} until its banner`
  ].join(", ")

// -----------------------------------------------------------------------------
// Workers (`--workers N`)
// -----------------------------------------------------------------------------

const workerSettings = {
  workers: Number(flags.workers),
  rolls: Number(flags.rolls ?? (flags.quick ? 4 : 20)),
  upgrades: Number(flags.upgrades ?? (flags.quick ? 2 : 5)),
  /** `GRACE_PROBATION`: how long a new worker (or primary) is on probation before the old one drains. */
  probation: flags.probation,
  /** How often the demo's processes are counted. */
  sampleEveryMs: 20
}

/** One logfmt line of the demo's stderr; `at` is its timestamp on this process's `performance.now()` clock. */
interface LogLine {
  readonly at: number
  readonly message: string
  readonly fields: Readonly<Record<string, string>>
}

const parseLogLine = (line: string): LogLine | undefined => {
  const fields: Record<string, string> = {}
  for (const [, key, raw] of line.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
    try {
      fields[key!] = raw!.startsWith('"') ? (JSON.parse(raw!) as string) : raw!
    } catch {
      fields[key!] = raw!
    }
  }
  if (fields.timestamp === undefined || fields.message === undefined) return undefined
  return { at: Date.parse(fields.timestamp) - performance.timeOrigin, message: fields.message, fields }
}

/** The demo's log lines, parsed as they come, and a bounded wait for one after an index. */
const logReader = (errors: ReadonlyArray<string>) => {
  const parsed: Array<LogLine> = []
  let read = 0
  const lines = () => {
    for (; read < errors.length; read++) {
      const line = parseLogLine(errors[read]!)
      if (line !== undefined) parsed.push(line)
    }
    return parsed
  }
  /** Waits for a line matching `match`; a refusal or failure logged by `refusedBy` (a warning with a reason) ends it. */
  const waitFor = async (
    from: number,
    what: string,
    ms: number,
    match: (line: LogLine) => boolean,
    refusedBy?: number
  ) => {
    let found: LogLine | undefined
    const refused = (line: LogLine) =>
      line.fields.level === "WARN" && line.fields.pid === String(refusedBy) && line.fields.reason !== undefined
    await until(
      () =>
        (found = lines()
          .slice(from)
          .find((line) => match(line) || refused(line))) !== undefined,
      ms,
      what,
      5
    )
    if (!match(found!)) throw new Error(`${found!.message} (reason ${found!.fields.reason}, pid ${refusedBy})`)
    return found!
  }
  return { lines, waitFor }
}

const logged = (message: string, pid: number) => (line: LogLine) =>
  line.message === `effect-grace: ${message}` && line.fields.pid === String(pid)

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

const startSampler = (argument: string) => {
  const worker = new Worker(SAMPLER_WORKER, {
    eval: true,
    workerData: { argument, everyMs: workerSettings.sampleEveryMs }
  })
  const stop = async (): Promise<Array<{ readonly at: number; readonly count: number }>> => {
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
    const samples: Array<{ readonly at: number; readonly count: number }> = []
    for (let i = 0; i < flat.length; i += 2)
      samples.push({ at: flat[i]! - performance.timeOrigin, count: flat[i + 1]! })
    return samples
  }
  return { stop, kill: () => void worker.terminate() }
}

/** A rolling restart (SIGHUP) or a full upgrade (SIGUSR2) of the workers demo. */
interface WorkersRestart {
  readonly kind: "roll" | "upgrade"
  /** The primary signalled, and the one serving after (the same for a roll). */
  readonly primary: number
  readonly successor: number
  readonly oldWorkers: ReadonlyArray<number>
  readonly newWorkers: ReadonlyArray<number>
  /** Times: the signal; every new worker ready; the restart done (see the header); every old process gone. */
  readonly signalled: number
  readonly ready: number
  readonly done: number
  readonly oldGone: number
  readonly startups: ReadonlyArray<Interval>
  readonly handovers: ReadonlyArray<Interval>
}

type Logs = ReturnType<typeof logReader>

/** Slot to worker pid, from the `worker started` lines of `primary` at or after `from`. */
const startedWorkers = (lines: ReadonlyArray<LogLine>, primary: number) =>
  lines
    .filter(logged("worker started", primary))
    .map((line) => ({ at: line.at, slot: Number(line.fields.slot), worker: Number(line.fields.worker) }))

const roll = async (logs: Logs, primary: number, slots: Map<number, number>): Promise<WorkersRestart> => {
  const from = logs.lines().length
  const oldWorkers = [...slots.values()]
  const signalled = now()
  process.kill(primary, "SIGHUP")
  const done = await logs.waitFor(
    from,
    `pid ${primary} to restart its workers`,
    120_000,
    logged("workers restarted", primary),
    primary
  )
  await until(() => oldWorkers.every((pid) => !isAlive(pid)), 30_000, "every old worker to exit")
  const oldGone = now()
  const lines = logs.lines().slice(from)
  const startups: Array<Interval> = []
  const handovers: Array<Interval> = []
  const newWorkers: Array<number> = []
  for (const started of startedWorkers(lines, primary)) {
    const ready = lines.find(logged("ready", started.worker))?.at ?? done.at
    const old = slots.get(started.slot)
    const stopped = old === undefined ? undefined : lines.find(logged("stopped", old))
    startups.push({ from: started.at, to: ready })
    handovers.push({ from: ready, to: stopped?.at ?? done.at })
    slots.set(started.slot, started.worker)
    newWorkers.push(started.worker)
  }
  const ready = Math.max(...startups.map((startup) => startup.to))
  return {
    kind: "roll",
    primary,
    successor: primary,
    oldWorkers,
    newWorkers,
    signalled,
    ready,
    done: done.at,
    oldGone,
    startups,
    handovers
  }
}

const upgrade = async (logs: Logs, primary: number, slots: Map<number, number>): Promise<WorkersRestart> => {
  const from = logs.lines().length
  const oldWorkers = [...slots.values()]
  const signalled = now()
  process.kill(primary, "SIGUSR2")
  const ready = await logs.waitFor(
    from,
    `pid ${primary}'s successor to be ready`,
    60_000,
    logged("successor ready", primary),
    primary
  )
  const successor = Number(ready.fields.successor)
  await until(
    () => !isAlive(primary) && oldWorkers.every((pid) => !isAlive(pid)),
    60_000,
    `pid ${primary} and its workers to exit`
  )
  const done = now()
  slots.clear()
  for (const started of startedWorkers(logs.lines().slice(from), successor)) slots.set(started.slot, started.worker)
  return {
    kind: "upgrade",
    primary,
    successor,
    oldWorkers,
    newWorkers: [...slots.values()],
    signalled,
    ready: ready.at,
    done,
    oldGone: done,
    startups: [{ from: signalled, to: ready.at }],
    handovers: [{ from: ready.at, to: done }]
  }
}

/** `rolls` rolls and `upgrades` upgrades, the upgrades spread evenly among the rolls. */
const schedule = (rolls: number, upgrades: number): Array<WorkersRestart["kind"]> => {
  const total = rolls + upgrades
  return Array.from({ length: total }, (_, i) =>
    Math.floor(((i + 1) * upgrades) / total) > Math.floor((i * upgrades) / total) ? "upgrade" : "roll"
  )
}

/** fds and RSS of the primary and of each worker. */
const groupStats = (primary: number, slots: ReadonlyMap<number, number>) => ({
  primary: { pid: primary, ...processStats(primary) },
  workers: [...slots.values()].map((pid) => ({ pid, ...processStats(pid) }))
})

/** SIGTERM to the final primary; waits for it, then for every process of the demo, to be gone. */
const terminateWorkers = async (address: string, pid: number) => {
  const started = now()
  process.kill(pid, "SIGTERM")
  const exited = await until(() => !isAlive(pid), 15_000, `pid ${pid} to exit after SIGTERM`).then(
    () => true,
    () => false
  )
  const exitMs = now() - started
  await until(() => processesWithArgument(address).length === 0, 5000, "the workers to exit").catch(() => undefined)
  return { pid, exited, exitMs, leftover: processesWithArgument(address) }
}

/** The demo in workers mode, rolled and upgraded under load. */
const mainWorkers = async () => {
  const { workers } = workerSettings
  const kinds = schedule(workerSettings.rolls, workerSettings.upgrades)
  const ports = await freePorts(3)
  const address = `127.0.0.1:${ports[0]}`
  console.log(
    `Restarts under load, workers: GRACE_WORKERS=${workers}, ${workerSettings.rolls} rolls (SIGHUP) and ` +
      `${workerSettings.upgrades} upgrades (SIGUSR2), probation ${workerSettings.probation}, ` +
      `${settings.connections} keep-alive connections on 127.0.0.1:${ports.join(", ")}, ` +
      `${settings.steadyMs} ms steady state after each\n`
  )
  const cache = freshCompileCache()
  // The workers are in process groups of their own: found, and killed at exit, by the demo's address.
  const removeKill = killAllWithArgument(address)
  const demo = spawnNode([demoPath, ...ports.flatMap((port, i) => [`--a${i}`, `127.0.0.1:${port}`])], {
    group: true,
    env: {
      ...demoEnv(cache.directory),
      GRACE_WORKERS: String(workers),
      GRACE_PROBATION: workerSettings.probation,
      GRACE_SHUTDOWN_DELAY: undefined
    }
  })
  const logs = logReader(demo.errors)
  const sampler = startSampler(address)
  const restarts: Array<WorkersRestart> = []
  let loads: Array<Load> = []
  let prober: ReturnType<typeof startProber> | undefined
  try {
    let primary = demo.pid
    await logs.waitFor(0, `pid ${primary} to be ready`, 30_000, logged("ready", primary))
    const slots = new Map<number, number>()
    for (const started of startedWorkers(logs.lines(), primary)) slots.set(started.slot, started.worker)
    const loadStart = now()
    loads = startClients(ports)
    prober = startProber(ports)
    await sleep(settings.warmupMs)
    const measuredFrom = now()
    // Read under load, as the final ones are.
    const first = groupStats(primary, slots)

    let aborted: string | undefined
    try {
      for (const [i, kind] of kinds.entries()) {
        const restart = await (kind === "roll" ? roll : upgrade)(logs, primary, slots)
        primary = restart.successor
        restarts.push(restart)
        console.log(
          `${kind.padEnd(7)} ${String(i + 1).padStart(2)}: primary ${restart.primary} -> ${restart.successor}, ` +
            `workers ${restart.oldWorkers.join(" ")} -> ${restart.newWorkers.join(" ")}  ` +
            `ready ${fixed(restart.ready - restart.signalled, 0)} ms, done ${fixed(restart.done - restart.signalled, 0)} ms, ` +
            `old gone ${fixed(restart.oldGone - restart.signalled, 0)} ms, failures so far ${record.failures.length}`
        )
        await sleep(settings.steadyMs)
      }
    } catch (error) {
      aborted = error instanceof Error ? error.message : String(error)
      console.error(
        `\nRestarts stopped: ${aborted}\ndemo stderr (last 20 lines):\n${demo.errors.slice(-20).join("\n")}`
      )
    }

    const final = groupStats(primary, slots)
    const stopped = now()
    for (const load of loads) load.instance.stop()
    const results = await within(Promise.all(loads.map((load) => load.result)), 10_000, "autocannon to stop")
    await within(prober.stop(), 10_000, "the prober to stop")
    for (const written of inFlight.values()) {
      if (stopped - written > 2000) {
        fail({ source: "load", kind: "stalled", detail: `unanswered for ${fixed(stopped - written, 0)} ms at the end` })
      }
    }
    const samples = await sampler.stop()
    const report = summarizeWorkers({
      loadStart,
      measuredFrom,
      stopped,
      restarts,
      results,
      probes: prober.probes,
      samples
    })
    const terminated = await terminateWorkers(address, primary)
    const output = {
      machine: machine(Path.dirname(demoSource)),
      demo: demoPath,
      settings: { ...settings, ...workerSettings },
      ports,
      aborted,
      ...report,
      first,
      final,
      terminated
    }
    const svg = picture({
      loadStart,
      stopped,
      restarts: restarts.map((r, i) => ({
        signalled: r.signalled,
        ready: r.ready,
        drained: r.oldGone,
        label: `${r.kind} ${i + 1}, primary ${r.primary} -> ${r.successor}`
      })),
      title: "Rolling restarts and upgrades of workers under load (bench:restart --workers)",
      subtitle:
        `${output.machine.revision}, Node ${process.version}: GRACE_WORKERS=${workers}, three ports, ` +
        `${settings.connections} keep-alive connections, ${workerSettings.rolls} rolls by SIGHUP, ` +
        `${workerSettings.upgrades} upgrades by SIGUSR2, probation ${workerSettings.probation}`
    })
    printAndWriteWorkers(output, svg)
    if (aborted !== undefined || report.failed > 0 || !terminated.exited || terminated.leftover.length > 0)
      process.exitCode = 1
  } catch (error) {
    process.exitCode = 1
    console.error(`\nFAILED: ${error instanceof Error ? error.message : String(error)}`)
    console.error(`demo stderr (last 40 lines):\n${demo.errors.slice(-40).join("\n")}`)
  } finally {
    for (const load of loads) load.instance.stop()
    await prober?.stop()
    sampler.kill()
    await demo.stop(1000)
    for (const pid of processesWithArgument(address)) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // Gone meanwhile.
      }
    }
    removeKill()
    cache.remove()
  }
}

const summarizeWorkers = (input: {
  readonly loadStart: number
  readonly measuredFrom: number
  readonly stopped: number
  readonly restarts: ReadonlyArray<WorkersRestart>
  readonly results: ReadonlyArray<autocannon.Result>
  readonly probes: ReadonlyArray<Probe>
  readonly samples: ReadonlyArray<{ readonly at: number; readonly count: number }>
}) => {
  const { restarts, probes, samples } = input
  const phases: Phases = {
    windows: restarts.map((r) => ({ from: r.signalled, to: Math.max(r.done, r.oldGone) })),
    startups: restarts.flatMap((r) => r.startups),
    handovers: restarts.flatMap((r) => r.handovers),
    afters: restarts.map((r) => ({ from: Math.max(r.done, r.oldGone), to: Math.max(r.done, r.oldGone) + 500 }))
  }
  const peak = (from: number, to: number) =>
    samples.filter((s) => s.at >= from && s.at <= to).reduce((n, s) => Math.max(n, s.count), 0)
  const perRestart = restarts.map((restart, i) => {
    const answered = probes.find((p) => restart.newWorkers.includes(p.pid) && p.end >= restart.signalled)
    return {
      kind: restart.kind,
      primary: restart.primary,
      successor: restart.successor,
      oldWorkers: restart.oldWorkers,
      newWorkers: restart.newWorkers,
      readyMs: restart.ready - restart.signalled,
      handoffMs: answered === undefined ? Number.NaN : answered.end - restart.signalled,
      doneMs: restart.done - restart.signalled,
      oldGoneMs: restart.oldGone - restart.signalled,
      peakProcesses: peak(restart.signalled, Math.max(restart.done, restart.oldGone)),
      failures: failuresBetween(restart.signalled, restarts[i + 1]?.signalled ?? input.stopped)
    }
  })
  const of = (kind: WorkersRestart["kind"]) => perRestart.filter((r) => r.kind === kind)
  const before = samples.filter((s) => s.at >= input.loadStart && s.at < (restarts[0]?.signalled ?? input.stopped))
  return {
    ...summarizeLoad({ ...input, signals: restarts.map((r) => r.signalled), phases }),
    rolls: {
      /** Signal to the primary's `workers restarted`. */
      done: spreadOf(of("roll").map((r) => r.doneMs)),
      oldGone: spreadOf(of("roll").map((r) => r.oldGoneMs)),
      handoff: spreadOf(of("roll").map((r) => r.handoffMs)),
      peakProcesses: Math.max(0, ...of("roll").map((r) => r.peakProcesses))
    },
    upgrades: {
      /** Signal to the old primary's `successor ready`. */
      ready: spreadOf(of("upgrade").map((r) => r.readyMs)),
      /** Signal to the old primary and its workers gone. */
      done: spreadOf(of("upgrade").map((r) => r.doneMs)),
      handoff: spreadOf(of("upgrade").map((r) => r.handoffMs)),
      peakProcesses: Math.max(0, ...of("upgrade").map((r) => r.peakProcesses))
    },
    processes: {
      /** Counted every `sampleEveryMs` by command line, from the load's start to the first signal. */
      steady: { min: Math.min(...before.map((s) => s.count)), max: Math.max(...before.map((s) => s.count)) },
      samples: samples.length
    },
    restarts: perRestart
  }
}

type WorkersOutput = ReturnType<typeof summarizeWorkers> & {
  readonly aborted: string | undefined
  readonly machine: ReturnType<typeof machine>
  readonly settings: typeof settings & typeof workerSettings
  readonly first: ReturnType<typeof groupStats>
  readonly final: ReturnType<typeof groupStats>
  readonly terminated: Awaited<ReturnType<typeof terminateWorkers>>
}

const printAndWriteWorkers = (output: WorkersOutput, svg: string) => {
  const mib = (kib: number) => fixed(kib / 1024, 1)
  const n = output.settings.workers
  const stats = (group: ReturnType<typeof groupStats>) =>
    `primary ${group.primary.fds} fds, ${mib(group.primary.rssKiB)} MiB (pid ${group.primary.pid}); workers ` +
    group.workers.map((w) => `${w.fds} fds, ${mib(w.rssKiB)} MiB (pid ${w.pid})`).join("; ")
  const summary = markdownTable(
    ["measure", "value"],
    [
      ["rolls (SIGHUP), upgrades (SIGUSR2)", `${countOf(output, "roll")}, ${countOf(output, "upgrade")}`],
      ["requests answered (load)", String(output.requests.answered)],
      ["prober requests", String(output.requests.probes)],
      ["answers with Connection: close (load)", String(output.requests.connectionClose)],
      ["failed requests", String(output.failed)],
      ...Object.entries(output.failuresByKind).map(([kind, count]) => [`  ${kind}`, String(count)]),
      ["latency steady (p50 / p99 / max)", latencyText(output.latency.steady)],
      ["latency during restarts, signal to old processes gone", latencyText(output.latency.duringRestarts)],
      ["p99 during restarts / p99 steady (target at most 1.3)", fixed(output.latency.p99DuringOverSteady)],
      ["  of which: start-up, a new worker (or primary) starting", latencyText(output.latency.startup)],
      ["  of which: hand-over, new one ready to old one gone", latencyText(output.latency.handover)],
      ["steady, but in the half second after a restart", latencyText(output.latency.afterRestarts)],
      ["roll, signal to `workers restarted` (median, min-max)", spreadText(output.rolls.done)],
      ["roll, signal to every old worker gone", spreadText(output.rolls.oldGone)],
      ["roll, signal to first prober answer from a new worker", spreadText(output.rolls.handoff)],
      ["upgrade, signal to `successor ready`", spreadText(output.upgrades.ready)],
      ["upgrade, signal to old primary and its workers gone", spreadText(output.upgrades.done)],
      ["upgrade, signal to first prober answer from a new worker", spreadText(output.upgrades.handoff)],
      [
        "processes before the first restart (min-max)",
        `${output.processes.steady.min}-${output.processes.steady.max} (expected ${n + 1})`
      ],
      [
        "peak processes during a roll",
        `${output.rolls.peakProcesses} (expected ${n + 2}: primary, N workers, one new)`
      ],
      [
        "peak processes during an upgrade",
        `${output.upgrades.peakProcesses} (expected ${2 * n + 2}: two primaries, each with N workers)`
      ],
      ["first: fds, RSS", stats(output.first)],
      ["final: fds, RSS", stats(output.final)],
      [
        "SIGTERM to the final primary",
        output.terminated.exited
          ? `exited in ${fixed(output.terminated.exitMs, 0)} ms, ${output.terminated.leftover.length} process(es) left`
          : `did not exit within 15 s; left: ${output.terminated.leftover.join(", ")}`
      ]
    ]
  )
  const perRestart = markdownTable(
    [
      "#",
      "kind",
      "primary",
      "workers",
      "ready ms",
      "handoff ms",
      "done ms",
      "old gone ms",
      "peak processes",
      "failures"
    ],
    output.restarts.map((r, i) => [
      String(i + 1),
      r.kind,
      r.primary === r.successor ? String(r.primary) : `${r.primary} -> ${r.successor}`,
      `${r.oldWorkers.join(" ")} -> ${r.newWorkers.join(" ")}`,
      fixed(r.readyMs, 0),
      fixed(r.handoffMs, 0),
      fixed(r.doneMs, 0),
      fixed(r.oldGoneMs, 0),
      String(r.peakProcesses),
      String(r.failures)
    ])
  )
  const { failureList, verdict } = failureReport(output)
  console.log(`\n${summary}\n\n${perRestart}\n\n${failureList}\n\n${verdict}`)
  writeResults(
    "restart-workers",
    output,
    [
      "# Rolling restarts and upgrades of workers under load",
      "",
      `\`npm run bench:restart -- --workers ${n}\` at ${output.machine.revision} on Node ${output.machine.node}, ` +
        `${output.machine.cpus} CPUs, ${output.machine.date}: the demo with \`GRACE_WORKERS=${n}\` on three ports, ` +
        `${output.settings.connections} keep-alive connections sending \`GET ${output.settings.path}\`, ` +
        `${output.settings.rolls} rolling restarts by \`SIGHUP\` and ${output.settings.upgrades} upgrades by ` +
        `\`SIGUSR2\` to the primary, spread among the rolls, one at a time, \`GRACE_PROBATION=${output.settings.probation}\`, ` +
        `${output.settings.steadyMs} ms of steady state after each; ${settingsText(output.settings)}.`,
      "",
      "Latency is per request, from write to last byte. A restart's window runs from the signal to the old " +
        'processes gone: requests overlapping a window are "during restarts", the others (after the warm-up) ' +
        '"steady". Start-up is a new worker\'s `worker started` to its `ready` (for an upgrade, the signal to ' +
        "`successor ready`); hand-over a new worker's `ready` to its slot's old worker's `stopped` (for an upgrade, " +
        "`successor ready` to the old group gone). Processes are the demo's, counted by command line every " +
        `${output.settings.sampleEveryMs} ms.`,
      "",
      summary,
      "",
      verdict,
      "",
      perRestart,
      "",
      failureList,
      "",
      "Picture: `restart-workers.svg` (answers coloured by the pid that served them)."
    ].join("\n"),
    svg,
    flags.out === undefined ? undefined : Path.resolve(flags.out)
  )
}

const countOf = (output: WorkersOutput, kind: WorkersRestart["kind"]) =>
  output.restarts.filter((r) => r.kind === kind).length

// A run that hangs anyway is ended, with every process it started (support.ts's exit clean-up).
setTimeout(() => {
  console.error(`\nFAILED: the run took more than ${DEADLINE_MS / 1000} s`)
  // oxlint-disable-next-line unicorn/no-process-exit
  process.exit(2)
}, DEADLINE_MS).unref()

await (flags.workers === undefined ? main() : mainWorkers())
