/**
 * Rolling restarts and upgrades of workers under load: the demo in workers
 * mode (`GRACE_WORKERS=N`), restarted `--rolls` times by `SIGHUP` to its
 * primary (a rolling restart: a canary on probation, then the other slots
 * `GRACE_SURGE` at a time) and `--upgrades` times by `SIGUSR2` (a new
 * primary and its workers), the upgrades spread evenly among the rolls,
 * while keep-alive clients hammer its three ports; every request must be
 * answered.
 *
 *   npm run bench:restart -- --workers N [--rolls 20 --upgrades 5 --probation "1 second" --hold 20s ...]
 *
 * What it measures: how long a roll takes, from the signal to the primary's
 * `restarted` (every slot has a new worker: the roll is done) and to the last
 * old worker gone (the old workers drain in the background); how long an
 * upgrade takes; and whether any request failed. Targets, with the default
 * probation (`--probation "5 seconds"`), median of the rolls, one sitting on
 * the 2-core machine of the README: 2 workers at most 7.5 s from the signal
 * to the roll done, 4 workers at most 9 s, the time growing by about one
 * worker's start-up per extra slot (`--sweep 1,2,4,8` measures it against N:
 * `bench/restart-sweep.ts`); the same with `--hold 20s`; 0 failed requests.
 *
 * `--hold DURATION` (Go's syntax: `20s`): before each restart, a request
 * that lasts that long is put in flight on every worker of the group, each
 * on a connection of its own, and each must be answered by the worker that
 * holds it (`support/restart-hold.ts`); a held request answered by another
 * pid, or not at all, is a failed request.
 *
 * `bench/restart.ts` runs this measurement when given `--workers`; its
 * options, load and way of reading the results hold here too. Results go to
 * `restart-workers.json`, `.md` and `.svg`.
 *
 * The demo's processes (a primary, its workers, and during an upgrade the
 * new primary and its workers) are counted every 20 ms by their command line
 * (the demo's first address is unique to the run), in a worker thread, and
 * each restart's peak is reported (a roll accepts on at most N + 1 workers,
 * with the primary N + 2 processes, and more while old workers drain in the
 * background; an upgrade peaks at 2N + 2). The times come from the demo's
 * logs (logfmt on stderr, with their timestamps): a roll lasts from the
 * signal to the primary's `restarted` (`workers restarted` before the canary
 * roll), an upgrade from the signal to the old primary and its workers gone
 * (polled); the handoff is the signal to the first prober answer from a new
 * worker. Latency phases: the window is the whole restart; start-up is each
 * new worker's `rolling worker` (the primary's, before the spawn) to its
 * `ready` (for an upgrade, the signal to the old primary's `successor ready`); hand-over is a new worker's `ready`
 * to its slot's old worker's `stopped` (for an upgrade, `successor ready` to
 * the old group gone).
 */
import { freshCompileCache, logged, logReader, spawnDemo } from "./support/demo.ts"
import type { Demo, LogLine, Logs } from "./support/demo.ts"
import { freePorts } from "./support/net.ts"
import { isAlive, processesWithArgument, processStats } from "./support/proc.ts"
import { terminate } from "./support/process.ts"
import type { Terminated } from "./support/process.ts"
import { fixed, markdownTable } from "./support/report.ts"
import type { machine } from "./support/report.ts"
import { holdOnEvery } from "./support/restart-hold.ts"
import type { Held } from "./support/restart-hold.ts"
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
import type { Interval, Phases, RunTimes } from "./support/restart-report.ts"
import {
  DEADLINE_MS,
  demoEnv,
  demoPath,
  flags,
  outputOf,
  restartEach,
  runFailed,
  setExitCode,
  settings,
  settingsText,
  workerSettings
} from "./support/restart-run.ts"
import { median, spreadOf } from "./support/stats.ts"
import { sleep, until } from "./support/wait.ts"
import { startSampler } from "./support/watch.ts"
import type { Sample } from "./support/watch.ts"

const now = () => performance.now()

// -----------------------------------------------------------------------------
// Restarts
// -----------------------------------------------------------------------------

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
  /** `--hold`: the requests held on the old workers, and whether each was answered by the worker that held it. */
  readonly held: Held | undefined
}

/** Beyond the probations and held requests a restart waits for (one of each per slot, before the canary roll). */
const SLACK_MS = 60_000

/** How long a restart of the group may take: every slot's probation and held request, one after another. */
const restartBoundMs = () => SLACK_MS + workerSettings.workers * (workerSettings.probationMs + workerSettings.holdMs)

/** Slot to worker pid, from the `worker started` lines of `primary` at or after `from`. */
const startedWorkers = (lines: ReadonlyArray<LogLine>, primary: number) =>
  lines
    .filter(logged("worker started", primary))
    .map((line) => ({ at: line.at, slot: Number(line.fields.slot), worker: Number(line.fields.worker) }))

/** When the primary began rolling `slot` (its `rolling worker`, before the spawn), at or before `by`. */
const rollingAt = (lines: ReadonlyArray<LogLine>, primary: number, slot: number, by: number) =>
  lines.findLast(
    (line) => logged("rolling worker", primary)(line) && Number(line.fields.slot) === slot && line.at <= by
  )?.at

/**
 * A roll's new workers, read from the lines it logged: each one's start-up (`rolling worker`, or without one
 * `worker started`, to `ready`: the spawn counts) and hand-over (`ready` to its slot's old worker `stopped`); `slots`
 * is updated to the new workers.
 */
const rolledWorkers = (lines: ReadonlyArray<LogLine>, primary: number, slots: Map<number, number>, doneAt: number) => {
  const startups: Array<Interval> = []
  const handovers: Array<Interval> = []
  const newWorkers: Array<number> = []
  for (const started of startedWorkers(lines, primary)) {
    const ready = lines.find(logged("ready", started.worker))?.at ?? doneAt
    const old = slots.get(started.slot)
    const stopped = old === undefined ? undefined : lines.find(logged("stopped", old))
    startups.push({ from: rollingAt(lines, primary, started.slot, started.at) ?? started.at, to: ready })
    handovers.push({ from: ready, to: stopped?.at ?? doneAt })
    slots.set(started.slot, started.worker)
    newWorkers.push(started.worker)
  }
  return { startups, handovers, newWorkers }
}

/**
 * Sends `signal` to the primary, and waits (bounded) for the line it logs once the restart is done; a refusal or
 * failure it logs ends the wait. Returns the index of the first line after the signal, the workers before it, the
 * signal's time and the line.
 */
const signalPrimary = async (
  logs: Logs,
  primary: number,
  slots: ReadonlyMap<number, number>,
  signal: NodeJS.Signals,
  awaited: { readonly done: (line: LogLine) => boolean; readonly what: string; readonly ms: number }
) => {
  const from = logs.lines().length
  const oldWorkers = [...slots.values()]
  const signalled = now()
  process.kill(primary, signal)
  const line = await logs.waitFor(from, awaited.what, awaited.ms, awaited.done, primary)
  return { from, oldWorkers, signalled, line }
}

/** The primary's line once a roll is done: `restarted` (kind `roll`), or before the canary roll `workers restarted`. */
const rolled = (primary: number) => (line: LogLine) =>
  (logged("restarted", primary)(line) && line.fields.kind === "roll") || logged("workers restarted", primary)(line)

const roll = async (logs: Logs, primary: number, slots: Map<number, number>): Promise<Omit<WorkersRestart, "held">> => {
  const sent = await signalPrimary(logs, primary, slots, "SIGHUP", {
    done: rolled(primary),
    what: `pid ${primary} to restart its workers`,
    ms: restartBoundMs()
  })
  const { from, oldWorkers, signalled, line: done } = sent
  await until(
    () => oldWorkers.every((pid) => !isAlive(pid)),
    SLACK_MS + workerSettings.holdMs,
    "every old worker to exit"
  )
  const oldGone = now()
  const { startups, handovers, newWorkers } = rolledWorkers(logs.lines().slice(from), primary, slots, done.at)
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

const upgrade = async (
  logs: Logs,
  primary: number,
  slots: Map<number, number>
): Promise<Omit<WorkersRestart, "held">> => {
  const sent = await signalPrimary(logs, primary, slots, "SIGUSR2", {
    done: logged("successor ready", primary),
    what: `pid ${primary}'s successor to be ready`,
    ms: SLACK_MS
  })
  const { from, oldWorkers, signalled, line: ready } = sent
  const successor = Number(ready.fields.successor)
  await until(
    () => !isAlive(primary) && oldWorkers.every((pid) => !isAlive(pid)),
    SLACK_MS + workerSettings.probationMs + workerSettings.holdMs,
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

const printRestart = (i: number, restart: WorkersRestart, recorder: Recorder) =>
  console.log(
    `${restart.kind.padEnd(7)} ${String(i).padStart(2)}: primary ${restart.primary} -> ${restart.successor}, ` +
      `workers ${restart.oldWorkers.join(" ")} -> ${restart.newWorkers.join(" ")}  ` +
      `ready ${fixed(restart.ready - restart.signalled, 0)} ms, done ${fixed(restart.done - restart.signalled, 0)} ms, ` +
      `old gone ${fixed(restart.oldGone - restart.signalled, 0)} ms, ` +
      (restart.held === undefined
        ? ""
        : `held ${restart.held.answeredByHolder}/${restart.held.requests} answered by their old worker, `) +
      `failures so far ${recorder.failures.length}`
  )

// -----------------------------------------------------------------------------
// The run
// -----------------------------------------------------------------------------

/** The demo in workers mode, rolled and upgraded under load. */
export const measureWorkers = async () => {
  const { workers } = workerSettings
  const ports = await freePorts(3)
  console.log(
    `Restarts under load, workers: GRACE_WORKERS=${workers}, ${workerSettings.rolls} rolls (SIGHUP) and ` +
      `${workerSettings.upgrades} upgrades (SIGUSR2), probation ${workerSettings.probation}, ` +
      `${settings.connections} keep-alive connections on 127.0.0.1:${ports.join(", ")}, ` +
      `${settings.steadyMs} ms steady state after each\n`
  )
  const cache = freshCompileCache()
  // The workers are in process groups of their own: found, and killed at exit, by the demo's address.
  const demo = spawnDemo(ports, {
    entry: demoPath,
    byAddress: true,
    env: {
      ...demoEnv(cache.directory),
      GRACE_WORKERS: String(workers),
      GRACE_PROBATION: workerSettings.probation,
      GRACE_SHUTDOWN_DELAY: undefined
    }
  })
  const sampler = startSampler(demo.address, workerSettings.sampleEveryMs)
  let load: RestartLoad | undefined
  try {
    const logs = logReader(demo.errors)
    await logs.waitFor(0, `pid ${demo.pid} to be ready`, 30_000, logged("ready", demo.pid))
    const slots = new Map<number, number>()
    for (const started of startedWorkers(logs.lines(), demo.pid)) slots.set(started.slot, started.worker)
    const recorder = makeRecorder()
    load = startRestartLoad(ports, recorder, { ...settings, durationSeconds: DEADLINE_MS / 1000 })
    await sleep(settings.warmupMs)
    await measure({ demo, ports, logs, slots, recorder, load, sampler })
  } catch (error) {
    runFailed(error, demo)
  } finally {
    await load?.stop()
    sampler.kill()
    await demo.stop(1000)
    cache.remove()
  }
}

/** The rolls and upgrades, under the load that runs from its warm-up on; then the report. */
const measure = async (run: {
  readonly demo: Demo
  readonly ports: ReadonlyArray<number>
  readonly logs: Logs
  readonly slots: Map<number, number>
  readonly recorder: Recorder
  readonly load: RestartLoad
  readonly sampler: ReturnType<typeof startSampler>
}) => {
  const { demo, logs, slots, recorder } = run
  const kinds = schedule(workerSettings.rolls, workerSettings.upgrades)
  const measuredFrom = now()
  let primary = demo.pid
  // Read under load, as the final ones are.
  const first = groupStats(primary, slots)
  const restarts: Array<WorkersRestart> = []
  const aborted = await restartEach(
    kinds.length,
    async (i) => {
      const holding =
        workerSettings.holdMs > 0 ? await holdOnEvery(run.ports, [...slots.values()], workerSettings.holdMs) : undefined
      const restarted = await (kinds[i - 1] === "roll" ? roll : upgrade)(logs, primary, slots)
      // The old workers are gone: every held request has its answer, or never will.
      const restart = { ...restarted, held: await holding?.settled(recorder) }
      primary = restart.successor
      restarts.push(restart)
      printRestart(i, restart, recorder)
    },
    demo
  )
  const final = groupStats(primary, slots)
  const ended = await run.load.end()
  const samples = await run.sampler.stop()
  const times = { loadStart: run.load.loadStart, measuredFrom, stopped: ended.stopped }
  const report = summarize(recorder, times, restarts, ended, samples)
  const terminated = await terminate(primary, () => processesWithArgument(demo.address), 5000)
  const output = outputOf({
    settings: { ...settings, ...workerSettings },
    ports: run.ports,
    aborted,
    report,
    first,
    final,
    terminated
  })
  write(output, svgOf(recorder, times, restarts, output.machine.revision))
  setExitCode({ aborted, failed: report.failed, terminated })
}

// -----------------------------------------------------------------------------
// Report
// -----------------------------------------------------------------------------

/** A restart's window is the whole restart; its start-ups and hand-overs are those of each new worker. */
const phasesOf = (restarts: ReadonlyArray<WorkersRestart>): Phases => ({
  windows: restarts.map((r) => ({ from: r.signalled, to: Math.max(r.done, r.oldGone) })),
  startups: restarts.flatMap((r) => r.startups),
  handovers: restarts.flatMap((r) => r.handovers),
  afters: restarts.map((r) => ({ from: Math.max(r.done, r.oldGone), to: Math.max(r.done, r.oldGone) + 500 }))
})

/** Each restart's times from its signal, its peak process count, and its failures. */
const perRestartOf = (
  recorder: Recorder,
  restarts: ReadonlyArray<WorkersRestart>,
  { probes, stopped }: Ended,
  samples: ReadonlyArray<Sample>
) => {
  const peak = (from: number, to: number) =>
    samples.filter((s) => s.at >= from && s.at <= to).reduce((n, s) => Math.max(n, s.count), 0)
  return restarts.map((restart, i) => {
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
      /** The median of its new workers' start-ups (`rolling worker` to `ready`; for an upgrade, signal to ready). */
      startupMs: median(restart.startups.map((startup) => startup.to - startup.from)),
      peakProcesses: peak(restart.signalled, Math.max(restart.done, restart.oldGone)),
      held: restart.held,
      failures: failuresBetween(recorder, restart.signalled, restarts[i + 1]?.signalled ?? stopped)
    }
  })
}

const heldOf = (perRestart: ReadonlyArray<{ readonly held: Held | undefined }>) => {
  const all = perRestart.flatMap((r) => (r.held === undefined ? [] : [r.held]))
  const sum = (pick: (held: Held) => number) => all.reduce((n, held) => n + pick(held), 0)
  return {
    holdMs: workerSettings.holdMs,
    requests: sum((h) => h.requests),
    answeredByHolder: sum((h) => h.answeredByHolder),
    failed: sum((h) => h.failed)
  }
}

const summarize = (
  recorder: Recorder,
  times: RunTimes,
  restarts: ReadonlyArray<WorkersRestart>,
  ended: Ended,
  samples: ReadonlyArray<Sample>
) => {
  const perRestart = perRestartOf(recorder, restarts, ended, samples)
  const of = (kind: WorkersRestart["kind"]) => perRestart.filter((r) => r.kind === kind)
  const before = samples.filter((s) => s.at >= times.loadStart && s.at < (restarts[0]?.signalled ?? times.stopped))
  const signals = restarts.map((r) => r.signalled)
  return {
    ...summarizeLoad(recorder, { ...times, ...ended, signals, phases: phasesOf(restarts) }),
    rolls: {
      /** Signal to the primary's `workers restarted`. */
      done: spreadOf(of("roll").map((r) => r.doneMs)),
      oldGone: spreadOf(of("roll").map((r) => r.oldGoneMs)),
      handoff: spreadOf(of("roll").map((r) => r.handoffMs)),
      /** A new worker's start-up, `rolling worker` to `ready`, of every roll's new workers. */
      startup: spreadOf(restarts.filter((r) => r.kind === "roll").flatMap((r) => r.startups.map((i) => i.to - i.from))),
      peakProcesses: Math.max(0, ...of("roll").map((r) => r.peakProcesses))
    },
    /** `--hold`: the requests held on the old workers of every restart. */
    held: heldOf(perRestart),
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

type Output = ReturnType<typeof summarize> & {
  readonly aborted: string | undefined
  readonly machine: ReturnType<typeof machine>
  readonly settings: typeof settings & typeof workerSettings
  readonly first: ReturnType<typeof groupStats>
  readonly final: ReturnType<typeof groupStats>
  readonly terminated: Terminated
}

const svgOf = (recorder: Recorder, times: RunTimes, restarts: ReadonlyArray<WorkersRestart>, revision: string) =>
  picture(recorder, {
    loadStart: times.loadStart,
    stopped: times.stopped,
    restarts: restarts.map((r, i) => ({
      signalled: r.signalled,
      ready: r.ready,
      drained: r.oldGone,
      label: `${r.kind} ${i + 1}, primary ${r.primary} -> ${r.successor}`
    })),
    title: "Rolling restarts and upgrades of workers under load (bench:restart --workers)",
    subtitle:
      `${revision}, Node ${process.version}: GRACE_WORKERS=${workerSettings.workers}, three ports, ` +
      `${settings.connections} keep-alive connections, ${workerSettings.rolls} rolls by SIGHUP, ` +
      `${workerSettings.upgrades} upgrades by SIGUSR2, probation ${workerSettings.probation}`
  })

const countOf = (output: Output, kind: WorkersRestart["kind"]) => output.restarts.filter((r) => r.kind === kind).length

const groupText = (group: ReturnType<typeof groupStats>) =>
  `primary ${group.primary.fds} fds, ${mib(group.primary.rssKiB)} MiB (pid ${group.primary.pid}); workers ` +
  group.workers.map((w) => `${w.fds} fds, ${mib(w.rssKiB)} MiB (pid ${w.pid})`).join("; ")

const heldRows = (output: Output): Array<[string, string]> =>
  output.held.holdMs === 0
    ? []
    : [
        [
          `requests of ${fixed(output.held.holdMs / 1000, 1)} s held on every old worker at each signal`,
          `${output.held.requests}, ${output.held.answeredByHolder} answered by the worker that held them, ` +
            `${output.held.failed} failed`
        ]
      ]

const summaryTable = (output: Output) => {
  const n = output.settings.workers
  return markdownTable(
    ["measure", "value"],
    [
      ["rolls (SIGHUP), upgrades (SIGUSR2)", `${countOf(output, "roll")}, ${countOf(output, "upgrade")}`],
      ...requestRows(output),
      ["latency steady (p50 / p99 / max)", latencyText(output.latency.steady)],
      ["latency during restarts, signal to old processes gone", latencyText(output.latency.duringRestarts)],
      ["p99 during restarts / p99 steady (target at most 1.3)", fixed(output.latency.p99DuringOverSteady)],
      ["  of which: start-up, a new worker (or primary) starting", latencyText(output.latency.startup)],
      ["  of which: hand-over, new one ready to old one gone", latencyText(output.latency.handover)],
      ["steady, but in the half second after a restart", latencyText(output.latency.afterRestarts)],
      ["roll, signal to `restarted`: the roll done (median, min-max)", spreadText(output.rolls.done)],
      ["roll, signal to every old worker gone", spreadText(output.rolls.oldGone)],
      ["roll, signal to first prober answer from a new worker", spreadText(output.rolls.handoff)],
      ["roll, a new worker's start-up (`rolling worker` to `ready`)", spreadText(output.rolls.startup)],
      ...heldRows(output),
      ["upgrade, signal to `successor ready`", spreadText(output.upgrades.ready)],
      ["upgrade, signal to old primary and its workers gone", spreadText(output.upgrades.done)],
      ["upgrade, signal to first prober answer from a new worker", spreadText(output.upgrades.handoff)],
      [
        "processes before the first restart (min-max)",
        `${output.processes.steady.min}-${output.processes.steady.max} (expected ${n + 1})`
      ],
      [
        "peak processes during a roll",
        `${output.rolls.peakProcesses} (${n + 2}: primary, N workers, one new; more while old ones drain)`
      ],
      [
        "peak processes during an upgrade",
        `${output.upgrades.peakProcesses} (expected ${2 * n + 2}: two primaries, each with N workers)`
      ],
      ["first: fds, RSS", groupText(output.first)],
      ["final: fds, RSS", groupText(output.final)],
      terminatedRow("SIGTERM to the final primary", output.terminated)
    ]
  )
}

const perRestartTable = (output: Output) =>
  markdownTable(
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
      ...(output.held.holdMs === 0 ? [] : ["held answered"]),
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
      ...(output.held.holdMs === 0 ? [] : [`${r.held?.answeredByHolder ?? 0}/${r.held?.requests ?? 0}`]),
      String(r.failures)
    ])
  )

const heading = (output: Output) => {
  const n = output.settings.workers
  return [
    "# Rolling restarts and upgrades of workers under load",
    "",
    `\`npm run bench:restart -- --workers ${n}\` at ${output.machine.revision} on Node ${output.machine.node}, ` +
      `${output.machine.cpus} CPUs, ${output.machine.date}: the demo with \`GRACE_WORKERS=${n}\` on three ports, ` +
      `${output.settings.connections} keep-alive connections sending \`GET ${output.settings.path}\`, ` +
      `${output.settings.rolls} rolling restarts by \`SIGHUP\` and ${output.settings.upgrades} upgrades by ` +
      `\`SIGUSR2\` to the primary, spread among the rolls, one at a time, \`GRACE_PROBATION=${output.settings.probation}\`, ` +
      (output.held.holdMs === 0
        ? ""
        : `a request of ${fixed(output.held.holdMs / 1000, 1)} s in flight on every old worker at each signal, `) +
      `${output.settings.steadyMs} ms of steady state after each; ${settingsText(output.settings)}.`,
    "",
    "Latency is per request, from write to last byte. A restart's window runs from the signal to the old " +
      'processes gone: requests overlapping a window are "during restarts", the others (after the warm-up) ' +
      '"steady". Start-up is a new worker\'s `rolling worker` to its `ready` (for an upgrade, the signal to ' +
      "`successor ready`); hand-over a new worker's `ready` to its slot's old worker's `stopped` (for an upgrade, " +
      "`successor ready` to the old group gone). Processes are the demo's, counted by command line every " +
      `${output.settings.sampleEveryMs} ms.`
  ]
}

const write = (output: Output, svg: string) =>
  printAndWrite({
    name: "restart-workers",
    output,
    summary: summaryTable(output),
    perRestart: perRestartTable(output),
    heading: heading(output),
    pictureLine: "Picture: `restart-workers.svg` (answers coloured by the pid that served them).",
    svg,
    out: flags.out
  })
