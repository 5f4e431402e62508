/**
 * Roll time against N: `bench/restart-workers.ts` run once for each number
 * of workers in `--sweep` (a fresh demo each time, rolled `--rolls` times by
 * `SIGHUP` under load, no upgrades), then the median time from the signal to
 * the roll done (the primary's `restarted`) and to the last old worker gone,
 * against N, with the growth per extra slot beside a new worker's start-up.
 *
 *   npm run bench:restart -- --sweep 1,2,4,8 [--rolls 5 --hold 20s --baseline ../old/examples/demo.ts]
 *
 * Targets, with the library's default probation (5 s, used here unless
 * `--probation` says otherwise), one sitting on the 2-core machine of the
 * README: 2 workers at most 7.5 s from the signal to the roll done, 4 workers
 * at most 9 s, the time growing by about one worker's start-up per extra
 * slot; the same with `--hold 20s` (a 20 s request in flight on every worker
 * when the signal comes, each answered by the worker that held it); 0 failed
 * requests.
 *
 * Options: `--rolls` per N (default 5, 3 with `--quick`); `--baseline PATH`,
 * the demo of another checkout (an older revision) measured too, N by N,
 * which of the two goes first alternating from one N to the next, so that a
 * busy machine weighs on both alike; `--demo`, `--hold`, `--probation`,
 * `--connections`, `--steady`, `--warmup`, `--compile-cache`, `--bundle` and
 * `--quick` go to every run. Each run's own results (`restart-workers.*`, its
 * output in `output.txt`) go to a folder of `--out` (default: a temporary
 * directory), the table to `restart-sweep.md` and `.json` there (default
 * `bench/results/`; `restart-sweep-hold.*` with `--hold`).
 */
import { execFile } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { loadavg, tmpdir } from "node:os"
import * as Path from "node:path"
import { promisify } from "node:util"
import { fixed, markdownTable, writeResults } from "./support/report.ts"
import { flags } from "./support/restart-run.ts"
import type { Spread } from "./support/stats.ts"

/** The numbers of workers of `--sweep`. */
const countsOf = (text: string): Array<number> => {
  const counts = text.split(",").map(Number)
  if (!counts.every((n) => Number.isInteger(n) && n > 0)) {
    throw new Error(`--sweep ${text}: use numbers of workers, such as 1,2,4,8`)
  }
  return counts
}
const rolls = flags.rolls ?? (flags.quick ? "3" : "5")
/** The library's default. */
const probation = flags.probation ?? "5 seconds"
const script = new URL("restart.ts", import.meta.url).pathname

/** The demos measured: this checkout's (or `--demo`'s), and `--baseline`'s. */
const demos = [
  ...(flags.baseline === undefined ? [] : [{ name: "baseline", demo: Path.resolve(flags.baseline) }]),
  { name: "measured", demo: flags.demo === undefined ? undefined : Path.resolve(flags.demo) }
]
type Demo = (typeof demos)[number]

/** The flags every run gets, besides its number of workers, demo and folder. */
const common = (): Array<string> => {
  const given = (name: keyof typeof flags) => (flags[name] === undefined ? [] : [`--${name}`, String(flags[name])])
  return [
    "--rolls",
    rolls,
    "--upgrades",
    "0",
    "--probation",
    probation,
    ...given("hold"),
    ...given("connections"),
    ...given("steady"),
    ...given("warmup"),
    ...given("compile-cache"),
    ...(flags.bundle ? ["--bundle"] : []),
    ...(flags.quick ? ["--quick"] : [])
  ]
}

// -----------------------------------------------------------------------------
// The runs
// -----------------------------------------------------------------------------

/** What a run of bench/restart-workers.ts wrote that the sweep reads. */
interface Measured {
  readonly demo: string
  readonly workers: number
  readonly revision: string
  readonly rolls: number
  readonly done: Spread
  readonly oldGone: Spread
  readonly startup: Spread
  readonly peakProcesses: number
  readonly held: { readonly requests: number; readonly answeredByHolder: number; readonly failed: number }
  readonly failed: number
  readonly aborted: string | undefined
}

const runOnce = async (runs: string, demo: Demo, workers: number): Promise<Measured> => {
  const directory = Path.join(runs, `${demo.name}-${workers}`)
  const file = Path.join(directory, "restart-workers.json")
  mkdirSync(directory, { recursive: true })
  // An earlier run's, in a folder used again, must not pass for this one's.
  rmSync(file, { force: true })
  const args = [script, "--workers", String(workers), ...common(), "--out", directory]
  if (demo.demo !== undefined) args.push("--demo", demo.demo)
  console.log(`${demo.name}, ${workers} worker(s) (load average ${loadavg()[0]!.toFixed(2)})`)
  // A run that fails still writes its results (failed, aborted) unless it could not start at all.
  const output = await promisify(execFile)(process.execPath, args, { maxBuffer: 256 * 1024 * 1024 }).catch(
    (error: Error & { stdout?: string; stderr?: string }) => {
      console.error(`  exited with an error: ${error.message.split("\n", 1)[0]}`)
      return { stdout: error.stdout ?? "", stderr: error.stderr ?? "" }
    }
  )
  writeFileSync(Path.join(directory, "output.txt"), `${output.stdout}\n${output.stderr}`)
  if (!existsSync(file)) throw new Error(`no results from ${demo.name}, ${workers} worker(s): see ${directory}`)
  const json = JSON.parse(readFileSync(file, "utf8"))
  const measured: Measured = {
    demo: demo.name,
    workers,
    revision: json.machine.revision,
    rolls: json.restarts.length,
    done: json.rolls.done,
    oldGone: json.rolls.oldGone,
    startup: json.rolls.startup,
    peakProcesses: json.rolls.peakProcesses,
    held: json.held,
    failed: json.failed,
    aborted: json.aborted ?? undefined
  }
  console.log(`  ${rowText(measured)}`)
  return measured
}

/** Every N once for each demo, which demo goes first alternating from one N to the next. */
const measureAll = async (runs: string, counts: ReadonlyArray<number>): Promise<Array<Measured>> => {
  const all: Array<Measured> = []
  for (const [i, workers] of counts.entries()) {
    for (const demo of i % 2 === 0 ? demos : demos.toReversed()) all.push(await runOnce(runs, demo, workers))
  }
  return all
}

// -----------------------------------------------------------------------------
// Report
// -----------------------------------------------------------------------------

const seconds = (ms: number) => `${fixed(ms / 1000, 1)} s`

const spreadSeconds = (spread: Spread) =>
  `${seconds(spread.medianMs)} (${fixed(spread.minMs / 1000, 1)}-${fixed(spread.maxMs / 1000, 1)})`

const heldText = (m: Measured) =>
  m.held.requests === 0 ? "" : `, held ${m.held.answeredByHolder}/${m.held.requests} answered by their old worker`

const rowText = (m: Measured) =>
  `${m.rolls} rolls: done ${spreadSeconds(m.done)}, old gone ${spreadSeconds(m.oldGone)}, ` +
  `start-up ${seconds(m.startup.medianMs)}${heldText(m)}, ${m.failed} failed` +
  (m.aborted === undefined ? "" : `; stopped: ${m.aborted}`)

/** The growth of the median roll time per extra slot, from the run of the previous N of the same demo. */
const perSlot = (list: ReadonlyArray<Measured>, i: number) => {
  const previous = list[i - 1]
  const m = list[i]!
  return previous === undefined
    ? Number.NaN
    : (m.done.medianMs - previous.done.medianMs) / (m.workers - previous.workers)
}

const byDemo = (all: ReadonlyArray<Measured>) =>
  demos.map((demo) => ({ demo, list: all.filter((m) => m.demo === demo.name) }))

const label = (list: ReadonlyArray<Measured>, name: string) => `${name} (${list[0]?.revision ?? "?"})`

const table = (all: ReadonlyArray<Measured>) =>
  markdownTable(
    [
      "demo",
      "N",
      "rolls",
      "signal to `restarted`: roll done (median, min-max)",
      "per extra slot",
      "signal to last old worker gone",
      "a new worker's start-up",
      "peak processes",
      "held answered by their old worker",
      "failed"
    ],
    byDemo(all).flatMap(({ demo, list }) =>
      list.map((m, i) => [
        label(list, demo.name),
        String(m.workers),
        String(m.rolls),
        spreadSeconds(m.done),
        Number.isNaN(perSlot(list, i)) ? "" : `+${seconds(perSlot(list, i))}`,
        spreadSeconds(m.oldGone),
        seconds(m.startup.medianMs),
        String(m.peakProcesses),
        m.held.requests === 0 ? "" : `${m.held.answeredByHolder}/${m.held.requests}`,
        String(m.failed)
      ])
    )
  )

/** "roll time against N": one line per demo, and the growth per extra slot in start-ups. */
const againstN = (all: ReadonlyArray<Measured>) =>
  byDemo(all).map(({ demo, list }) => {
    const points = list.map((m) => `N=${m.workers} ${seconds(m.done.medianMs)}`).join(", ")
    const first = list[0]
    const last = list.at(-1)
    const growth =
      first === undefined || last === undefined || last.workers === first.workers
        ? ""
        : `; ${seconds((last.done.medianMs - first.done.medianMs) / (last.workers - first.workers))} per extra slot ` +
          `from N=${first.workers} to N=${last.workers}, against a new worker's start-up of ` +
          `${seconds(last.startup.medianMs)} at N=${last.workers}`
    return `- roll time against N, ${label(list, demo.name)}: ${points}${growth}.`
  })

const targets = (all: ReadonlyArray<Measured>) =>
  byDemo(all).flatMap(({ demo, list }) => {
    const at = (n: number, limitMs: number) => {
      const m = list.find((x) => x.workers === n)
      if (m === undefined) return []
      const verdict = m.done.medianMs <= limitMs ? "met" : "NOT met"
      return [`${n} workers, signal to roll done at most ${seconds(limitMs)}: ${verdict} (${seconds(m.done.medianMs)})`]
    }
    const failed = list.reduce((n, m) => n + m.failed, 0)
    const aborted = list.filter((m) => m.aborted !== undefined).length
    const lines = [
      ...at(2, 7500),
      ...at(4, 9000),
      `0 failed requests, every roll done: ${failed === 0 && aborted === 0 ? "met" : `NOT met (${failed} failed, ${aborted} run(s) stopped)`}`
    ]
    return [`- ${label(list, demo.name)}: ${lines.join("; ")}.`]
  })

/** The sweep: every run, then the table, the line and the targets. */
export const measureSweep = async (): Promise<void> => {
  const counts = countsOf(flags.sweep ?? "")
  const runs =
    flags.out === undefined
      ? mkdtempSync(Path.join(tmpdir(), "restart-sweep-"))
      : Path.resolve(flags.out, "restart-sweep-runs")
  console.log(
    `Roll time against N: N = ${counts.join(", ")}, ${rolls} rolls each, probation ${probation}` +
      (flags.hold === undefined ? "" : `, a ${flags.hold} request held on every worker at each signal`) +
      `; runs in ${runs}\n`
  )
  const all = await measureAll(runs, counts)
  const markdown = [
    "# Roll time against N",
    "",
    `\`npm run bench:restart -- --sweep ${counts.join(",")}\`, ${new Date().toISOString()}: for each N, a fresh demo ` +
      `with \`GRACE_WORKERS=N\` rolled ${rolls} times by \`SIGHUP\` under load (\`bench/restart-workers.ts\`), ` +
      `\`GRACE_PROBATION=${probation}\`` +
      (flags.hold === undefined ? "" : `, a request of ${flags.hold} in flight on every worker at each signal`) +
      ". Times from the signal, medians of the rolls (min-max); per extra slot: the growth of the median from the " +
      "previous N.",
    "",
    ...againstN(all),
    "",
    table(all),
    "",
    "Targets (2-core machine, default probation):",
    "",
    ...targets(all)
  ].join("\n")
  console.log(`\n${markdown}`)
  writeResults(
    flags.hold === undefined ? "restart-sweep" : "restart-sweep-hold",
    { settings: { counts, rolls, probation, hold: flags.hold }, runs: all },
    markdown,
    undefined,
    flags.out
  )
  if (all.some((m) => m.failed > 0 || m.aborted !== undefined)) process.exitCode = 1
}
