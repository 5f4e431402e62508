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
 *   primary (a rolling restart: a canary, then the other slots) and
 *   `--upgrades` times (default 5; 2 with `--quick`) by `SIGUSR2` (a new
 *   primary and its workers), the upgrades spread evenly among the rolls,
 *   each new worker or primary on probation for `--probation`
 *   (`GRACE_PROBATION`, default `1 second`, to keep the run a few minutes).
 *   Results go to `restart-workers.json`, `.md` and `.svg`; that
 *   measurement is `bench/restart-workers.ts`, which this file runs.
 *   `--hold 20s` puts a request that long in flight on every worker at each
 *   signal, which its old worker must answer.
 * - `--sweep 1,2,4,8`: roll time against N, one workers run per N, rolls
 *   only, the default probation (5 s); `bench/restart-sweep.ts`, which this
 *   file runs, says more.
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
 * The clients honour `Connection: close`, which autocannon alone ignores, and
 * count a request left unanswered when the server closes the connection: see
 * `bench/support/restart-load.ts`.
 */
import { measureSweep } from "./restart-sweep.ts"
import { measureWorkers } from "./restart-workers.ts"
import { BANNER, freshCompileCache, restartDemo, spawnDemo } from "./support/demo.ts"
import type { Demo, Handoff } from "./support/demo.ts"
import { freePorts } from "./support/net.ts"
import { processGroup, processStats } from "./support/proc.ts"
import { deadline, terminate } from "./support/process.ts"
import { fixed, markdownTable } from "./support/report.ts"
import type { machine } from "./support/report.ts"
import { makeRecorder, startRestartLoad } from "./support/restart-load.ts"
import type { Ended, Recorder, RestartLoad } from "./support/restart-load.ts"
import {
  failuresBetween,
  latencyText,
  mib,
  picture,
  printAndWrite,
  requestRows,
  spreadText,
  summarizeLoad,
  terminatedRow
} from "./support/restart-report.ts"
import type { Phases, RunTimes } from "./support/restart-report.ts"
import {
  DEADLINE_MS,
  demoEnv,
  demoPath,
  flags,
  flattenCache,
  outputOf,
  restartEach,
  runFailed,
  setExitCode,
  settings,
  settingsText
} from "./support/restart-run.ts"
import { spreadOf } from "./support/stats.ts"
import { sleep } from "./support/wait.ts"
import { startRenicer } from "./support/watch.ts"

/** A restart: the pids, the times (the signal, the successor's banner, the old process gone), and `--renice`'s. */
interface Restart extends Handoff {
  /** `--renice`: ms from the signal to the successor reniced. */
  readonly renicedMs: number
}

type Renicer = ReturnType<typeof startRenicer>

const loadSettings = { ...settings, durationSeconds: DEADLINE_MS / 1000 }

const main = async () => {
  const ports = await freePorts(3)
  console.log(
    `Restarts under load: ${settings.restarts} restarts, ${settings.connections} keep-alive connections on ` +
      `127.0.0.1:${ports.join(", ")}, ${settings.steadyMs} ms steady state after each\n`
  )
  const cache = freshCompileCache()
  if (settings.flatCache) flattenCache(cache.directory)
  const demo = spawnDemo(ports, { entry: demoPath, env: demoEnv(cache.directory) })
  const renicer = settings.renice === 0 ? undefined : startRenicer(settings.renice)
  const recorder = makeRecorder()
  let load: RestartLoad | undefined
  try {
    const first = Number((await demo.waitForLine(BANNER, 20_000))[1])
    load = startRestartLoad(ports, recorder, loadSettings)
    await sleep(settings.warmupMs)
    await measure({ demo, ports, first, recorder, load, renicer })
  } catch (error) {
    runFailed(error, demo)
  } finally {
    await load?.stop()
    // Every generation, whichever is left.
    await demo.stop(1000)
    await renicer?.stop()
    cache.remove()
  }
}

/** The restarts, under the load that runs from its warm-up on; then the report. */
const measure = async (run: {
  readonly demo: Demo
  readonly ports: ReadonlyArray<number>
  readonly first: number
  readonly recorder: Recorder
  readonly load: RestartLoad
  readonly renicer: Renicer | undefined
}) => {
  const { demo, recorder } = run
  const measuredFrom = performance.now()
  const first = { pid: run.first, ...processStats(run.first) }
  const restarts: Array<Restart> = []
  let current = run.first
  const aborted = await restartEach(
    settings.restarts,
    async (i) => {
      const restart = await restartOnce(demo, current, run.renicer)
      current = restart.to
      restarts.push(restart)
      printRestart(i, restart, recorder)
    },
    demo
  )
  const final = { pid: current, ...processStats(current) }
  const ended = await run.load.end()
  const times = { loadStart: run.load.loadStart, measuredFrom, stopped: ended.stopped }
  const report = summarize(recorder, times, restarts, ended)
  const terminated = await terminate(current, () => processGroup(demo.pid))
  const output = outputOf({ settings, ports: run.ports, aborted, report, first, final, terminated })
  write(output, svgOf(recorder, times, restarts, output.machine.revision))
  setExitCode({ aborted, failed: report.failed, terminated })
}

const restartOnce = async (demo: Demo, from: number, renicer: Renicer | undefined): Promise<Restart> => {
  const { watched, ...handoff } = await restartDemo(demo, from, renicer?.watch)
  return { ...handoff, renicedMs: watched ?? Number.NaN }
}

const printRestart = (i: number, restart: Restart, recorder: Recorder) => {
  const { from, to, signalled, ready, drained, renicedMs } = restart
  console.log(
    `restart ${String(i).padStart(2)}: ${from} -> ${to}  ready ${fixed(ready - signalled, 0)} ms, ` +
      `old gone ${fixed(drained - signalled, 0)} ms, failures so far ${recorder.failures.length}` +
      (settings.renice === 0 ? "" : `, reniced at ${fixed(renicedMs, 0)} ms`)
  )
}

// -----------------------------------------------------------------------------
// Report
// -----------------------------------------------------------------------------

/** A single process's restarts: signal to old process gone, of which signal to ready and ready to gone. */
const phasesOf = (restarts: ReadonlyArray<Restart>): Phases => ({
  windows: restarts.map((r) => ({ from: r.signalled, to: r.drained })),
  startups: restarts.map((r) => ({ from: r.signalled, to: r.ready })),
  handovers: restarts.map((r) => ({ from: r.ready, to: r.drained })),
  afters: restarts.map((r) => ({ from: r.drained, to: r.drained + 500 }))
})

const summarize = (recorder: Recorder, times: RunTimes, restarts: ReadonlyArray<Restart>, ended: Ended) => {
  const perRestart = restarts.map((restart, i) => {
    const answered = ended.probes.find((p) => p.pid === restart.to && p.end >= restart.signalled)
    return {
      from: restart.from,
      to: restart.to,
      readyMs: restart.ready - restart.signalled,
      handoffMs: answered === undefined ? Number.NaN : answered.end - restart.signalled,
      drainedMs: restart.drained - restart.signalled,
      renicedMs: restart.renicedMs,
      failures: failuresBetween(recorder, restart.signalled, restarts[i + 1]?.signalled ?? times.stopped)
    }
  })
  const signals = restarts.map((r) => r.signalled)
  return {
    ...summarizeLoad(recorder, { ...times, ...ended, signals, phases: phasesOf(restarts) }),
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

const svgOf = (recorder: Recorder, times: RunTimes, restarts: ReadonlyArray<Restart>, revision: string) =>
  picture(recorder, {
    loadStart: times.loadStart,
    stopped: times.stopped,
    restarts: restarts.map((r, i) => ({ ...r, label: `restart ${i + 1}, pid ${r.from} -> ${r.to}` })),
    title: "Restarts under load (bench:restart)",
    subtitle:
      `${revision}, Node ${process.version}: the demo on three ports, ` +
      `${settings.connections} keep-alive connections, ${restarts.length} restarts by SIGUSR2`
  })

const summaryTable = (output: Output) =>
  markdownTable(
    ["measure", "value"],
    [
      ["restarts", String(output.restarts.length)],
      ...requestRows(output),
      ["latency steady (p50 / p99 / max)", latencyText(output.latency.steady)],
      [
        "latency during restarts, signal to old process gone (p50 / p99 / max)",
        latencyText(output.latency.duringRestarts)
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
      terminatedRow("SIGTERM to the final process", output.terminated)
    ]
  )

const perRestartTable = (output: Output) => {
  const reniced = output.settings.renice !== 0
  return markdownTable(
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
}

const write = (output: Output, svg: string) =>
  printAndWrite({
    name: "restart",
    output,
    summary: summaryTable(output),
    perRestart: perRestartTable(output),
    heading: [
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
        "there to the old process's exit (a request overlapping both counts in both)."
    ],
    pictureLine: "Picture: `restart.svg`.",
    svg,
    out: flags.out
  })

// A run that hangs anyway is ended, with every process it started (support/process.ts's exit clean-up).
deadline(DEADLINE_MS)

if (flags.hold !== undefined && flags.workers === undefined && flags.sweep === undefined) {
  throw new Error("--hold holds a request on every worker: give --workers N or --sweep")
}
await (flags.sweep !== undefined ? measureSweep() : flags.workers === undefined ? main() : measureWorkers())
