/**
 * What the two restart measurements report alike: what the clients saw
 * (requests, failures by restart, latency by phase of a restart), the
 * picture, the tables' common rows, and the verdict (0 failed requests).
 */
import type autocannon from "autocannon"
import type { Probe, Recorder } from "./restart-load.ts"
import { fixed, markdownTable, writeResults } from "./report.ts"
import { latencyOf } from "./stats.ts"
import type { Latency, Spread } from "./stats.ts"
import { timelineSvg } from "./svg.ts"
import type { Panel } from "./svg.ts"
import type { Terminated } from "./process.ts"

// -----------------------------------------------------------------------------
// What the clients saw
// -----------------------------------------------------------------------------

/** A span of a run (`performance.now()` ms). */
export interface Interval {
  readonly from: number
  readonly to: number
}

/**
 * The spans of the restarts a request can overlap: the whole window of each
 * restart, the start-up of a new process, the hand-over (the new one ready,
 * the old one not gone yet), and the half second after a restart.
 */
export interface Phases {
  readonly windows: ReadonlyArray<Interval>
  readonly startups: ReadonlyArray<Interval>
  readonly handovers: ReadonlyArray<Interval>
  readonly afters: ReadonlyArray<Interval>
}

/** The times of a run (`performance.now()`): the load's start, the warm-up's end, the load's stop. */
export interface RunTimes {
  readonly loadStart: number
  readonly measuredFrom: number
  readonly stopped: number
}

/** Latency of the requests measured, by phase: a request belongs to a phase of a restart if it overlaps it. */
const latencyByPhase = (recorder: Recorder, measuredFrom: number, phases: Phases) => {
  const phase = (intervals: ReadonlyArray<Interval>) => (start: number, end: number) =>
    intervals.some((interval) => start <= interval.to && end >= interval.from)
  const [inWindow, inStartup, inHandover, inAfter] = [
    phase(phases.windows),
    phase(phases.startups),
    phase(phases.handovers),
    phase(phases.afters)
  ]
  const steady: Array<number> = []
  const during: Array<number> = []
  // Where in a restart the tail is: the successor starting, the hand-over (ready to the old process gone), and the
  // half second after it (counted as steady), where the successor serves with code not yet optimized.
  const startup: Array<number> = []
  const handover: Array<number> = []
  const after: Array<number> = []
  for (let i = 0; i < recorder.ends.length; i++) {
    const end = recorder.ends[i]!
    const latency = recorder.latencies[i]!
    const start = end - latency
    if (start < measuredFrom) continue
    ;(inWindow(start, end) ? during : steady).push(latency)
    if (inStartup(start, end)) startup.push(latency)
    if (inHandover(start, end)) handover.push(latency)
    else if (inAfter(start, start)) after.push(latency)
  }
  return {
    steady: latencyOf(steady),
    duringRestarts: latencyOf(during),
    startup: latencyOf(startup),
    handover: latencyOf(handover),
    afterRestarts: latencyOf(after)
  }
}

/** Every failure, with its time from the load's start and from the signal of the restart it fell into. */
const failuresByRestart = (recorder: Recorder, loadStart: number, signals: ReadonlyArray<number>) => {
  const failures = recorder.failures.map((failure) => {
    const index = signals.findLastIndex((signalled) => signalled <= failure.at)
    return {
      ...failure,
      at: Math.round(failure.at - loadStart),
      restart: index + 1,
      sinceSignalMs: index >= 0 ? Math.round(failure.at - signals[index]!) : undefined
    }
  })
  const byKind: Record<string, number> = {}
  for (const failure of failures)
    byKind[`${failure.source} ${failure.kind}`] = (byKind[`${failure.source} ${failure.kind}`] ?? 0) + 1
  return { failures, byKind }
}

/** What the clients saw, whatever the restarts were: requests, failures and latency by phase. */
export const summarizeLoad = (
  recorder: Recorder,
  input: RunTimes & {
    /** When each restart was signalled, in order: failures are counted from one to the next. */
    readonly signals: ReadonlyArray<number>
    readonly phases: Phases
    readonly results: ReadonlyArray<autocannon.Result>
    readonly probes: ReadonlyArray<Probe>
  }
) => {
  const { results } = input
  const { failures, byKind } = failuresByRestart(recorder, input.loadStart, input.signals)
  const sum = (f: (result: autocannon.Result) => number) => results.reduce((n, result) => n + f(result), 0)
  const latencies = latencyByPhase(recorder, input.measuredFrom, input.phases)
  return {
    requests: {
      sent: sum((r) => r.requests.sent),
      answered: sum((r) => r.requests.total),
      probes: input.probes.length,
      connectionClose: recorder.connectionClose,
      durationSeconds: (input.stopped - input.loadStart) / 1000,
      answersByPid: Object.fromEntries(recorder.answersByPid)
    },
    autocannon: { errors: sum((r) => r.errors), timeouts: sum((r) => r.timeouts), non2xx: sum((r) => r.non2xx) },
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
export type LoadSummary = ReturnType<typeof summarizeLoad>

/** Failures seen from `signalled` until `next`: those of one restart. */
export const failuresBetween = (recorder: Recorder, signalled: number, next: number) =>
  recorder.failures.filter((f) => f.at >= signalled && f.at < next).length

// -----------------------------------------------------------------------------
// The picture
// -----------------------------------------------------------------------------

/** A restart as drawn: its window, from the signal to the old process(es) gone, and what to call it. */
export interface Shown {
  readonly signalled: number
  readonly ready: number
  readonly drained: number
  readonly label: string
}

/** The slowest answer that overlapped a restart's window. */
const worstLatency = (recorder: Recorder, restart: Shown) => {
  let worst = 0
  for (let i = 0; i < recorder.ends.length; i++) {
    const end = recorder.ends[i]!
    if (end >= restart.signalled && end - recorder.latencies[i]! <= restart.drained)
      worst = Math.max(worst, recorder.latencies[i]!)
  }
  return worst
}

/** The restarts to show up close: the worst (most failures, else the slowest answer) and a typical one. */
const closeUps = (recorder: Recorder, restarts: ReadonlyArray<Shown>) => {
  const failuresIn = (restart: Shown) =>
    recorder.failures.filter((f) => f.at >= restart.signalled - 500 && f.at <= restart.drained + 500).length
  const ranked = restarts
    .map((restart, i) => ({ restart, i, failures: failuresIn(restart), worst: worstLatency(recorder, restart) }))
    .toSorted((a, b) => b.failures - a.failures || b.worst - a.worst)
  const byDrain = restarts
    .map((restart, i) => ({ restart, i }))
    .toSorted((a, b) => a.restart.drained - a.restart.signalled - (b.restart.drained - b.restart.signalled))
  // The median restart (the median time from signal to the old process's exit), or its neighbour when that one is
  // the worst.
  const typical = byDrain.filter((candidate) => candidate.i !== ranked[0]?.i)[(byDrain.length - 1) >> 1]
  return [
    ...(ranked[0] === undefined ? [] : [{ label: "Worst", restart: ranked[0].restart }]),
    ...(typical === undefined ? [] : [{ label: "Typical", restart: typical.restart }])
  ]
}

/** The run as a picture: the whole run, then two restarts up close (see `closeUps`). */
export const picture = (
  recorder: Recorder,
  input: {
    readonly loadStart: number
    readonly stopped: number
    readonly restarts: ReadonlyArray<Shown>
    readonly title: string
    readonly subtitle: string
  }
): string => {
  const { loadStart, stopped, restarts } = input
  const points = {
    count: recorder.ends.length,
    ends: recorder.ends,
    latencies: recorder.latencies,
    pids: recorder.pids
  }
  const failures = recorder.failures.map((f) => ({ at: f.at, kind: `${f.source} ${f.kind}` }))
  const panel = (title: string, origin: number, from: number, to: number): Panel => ({
    title,
    origin,
    from,
    to,
    points,
    windows: restarts,
    failures
  })
  return timelineSvg(
    input.title,
    `${input.subtitle}, ${recorder.ends.length} answers, ${recorder.failures.length} failures`,
    [
      panel("The whole run; s since the load started", loadStart, loadStart, stopped),
      ...closeUps(recorder, restarts).map(({ label, restart }) =>
        panel(
          `${label}: ${restart.label}; ms since the signal`,
          restart.signalled,
          restart.signalled - 400,
          restart.drained + 600
        )
      )
    ]
  )
}

// -----------------------------------------------------------------------------
// Tables and verdict
// -----------------------------------------------------------------------------

export const mib = (kib: number) => fixed(kib / 1024, 1)

export const latencyText = (l: Latency) =>
  `${fixed(l.p50Ms)} / ${fixed(l.p99Ms)} / ${fixed(l.maxMs)} ms (${l.requests} requests)`

export const spreadText = (spread: Spread) =>
  `${fixed(spread.medianMs, 0)} ms, ${fixed(spread.minMs, 0)}-${fixed(spread.maxMs, 0)}`

/** The summary table's rows on the requests: answered, probes, `Connection: close`, failed (by kind). */
export const requestRows = (output: LoadSummary): Array<[string, string]> => [
  ["requests answered (load)", String(output.requests.answered)],
  ["prober requests", String(output.requests.probes)],
  ["answers with Connection: close (load)", String(output.requests.connectionClose)],
  ["failed requests", String(output.failed)],
  ...Object.entries(output.failuresByKind).map(([kind, n]): [string, string] => [`  ${kind}`, String(n)])
]

/** The summary table's row on the final SIGTERM. */
export const terminatedRow = (label: string, terminated: Terminated): [string, string] => [
  label,
  terminated.exited
    ? `exited in ${fixed(terminated.exitMs, 0)} ms, ${terminated.leftover.length} process(es) left`
    : `did not exit within 15 s; left: ${terminated.leftover.join(", ")}`
]

/** Every failed request listed, and whether the run met its target: the same for one process and for workers. */
const failureReport = (output: LoadSummary & { readonly aborted: string | undefined }) => ({
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

/**
 * Prints the summary, the table of restarts, the failures and the verdict, and writes `<name>.json`, `.md` (its
 * title and introduction, then the same) and `.svg`.
 */
export const printAndWrite = (input: {
  readonly name: string
  readonly output: LoadSummary & { readonly aborted: string | undefined }
  readonly summary: string
  readonly perRestart: string
  readonly heading: ReadonlyArray<string>
  readonly pictureLine: string
  readonly svg: string
  readonly out: string | undefined
}): void => {
  const { summary, perRestart } = input
  const { failureList, verdict } = failureReport(input.output)
  console.log(`\n${summary}\n\n${perRestart}\n\n${failureList}\n\n${verdict}`)
  const markdown = [...input.heading, "", summary, "", verdict, "", perRestart, "", failureList, "", input.pictureLine]
  writeResults(input.name, input.output, markdown.join("\n"), input.svg, input.out)
}
