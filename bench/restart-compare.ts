/**
 * `bench/restart.ts` under several settings in one sitting, in alternating
 * rounds (the order reversed every other round), so that a noisy, shared
 * machine weighs on each setting alike:
 *
 *   node bench/restart-compare.ts --rounds 3 --restarts 10 \
 *     --run "old=--demo ../old/examples/demo.ts" --run "main=" --run "first=--compile-cache first"
 *
 * Each `--run` is `name=flags` for `bench/restart.ts` (split at spaces, no
 * quoting). `--restarts`, `--steady` and `--warmup` go to every run. Each
 * run's results go to `--out` (default: a temporary directory), one folder
 * per run; the table gives, per setting, the median over rounds of each
 * run's median ready and handoff times and of its p99 latencies, with the
 * range over rounds.
 */
import { execFile } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { loadavg, tmpdir } from "node:os"
import * as Path from "node:path"
import { parseArgs, promisify } from "node:util"
import { fixed, markdownTable } from "./support/report.ts"
import { median } from "./support/stats.ts"

const { values: flags } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    restarts: { type: "string", default: "10" },
    steady: { type: "string", default: "1000" },
    warmup: { type: "string", default: "1500" },
    run: { type: "string", multiple: true, default: [] },
    out: { type: "string" }
  }
})

/** Each `--run name=flags`, its flags split at spaces. */
const parseRuns = (texts: ReadonlyArray<string>) => {
  const runs = texts.map((text) => {
    const at = text.indexOf("=")
    if (at <= 0) throw new Error(`--run ${JSON.stringify(text)}: use name=flags`)
    return {
      name: text.slice(0, at),
      flags: text
        .slice(at + 1)
        .split(" ")
        .filter(Boolean)
    }
  })
  if (runs.length === 0) throw new Error("no --run given")
  return runs
}
type Setting = ReturnType<typeof parseRuns>[number]

const runs = parseRuns(flags.run)
const out = flags.out === undefined ? mkdtempSync(Path.join(tmpdir(), "restart-compare-")) : Path.resolve(flags.out)
mkdirSync(out, { recursive: true })
const script = new URL("restart.ts", import.meta.url).pathname

/** What one run of bench/restart.ts wrote that the comparison reads. */
interface Measured {
  readonly readyMs: number
  readonly handoffMs: number
  readonly steadyP99Ms: number
  readonly duringP99Ms: number
  readonly ratio: number
  readonly failed: number
}

const runOnce = async (round: number, run: Setting): Promise<Measured> => {
  const directory = Path.join(out, `${round}-${run.name}`)
  const args = [script, "--restarts", flags.restarts, "--steady", flags.steady, "--warmup", flags.warmup]
  const load = loadavg()[0]!.toFixed(2)
  console.log(`round ${round} ${run.name}: ${run.flags.join(" ")} (load average ${load})`)
  // A run that fails still writes its results; its exit code is in them (failed, aborted).
  await promisify(execFile)(process.execPath, [...args, ...run.flags, "--out", directory], {
    maxBuffer: 64 * 1024 * 1024
  }).catch((error: Error) => console.error(`  exited with an error: ${error.message.split("\n", 1)[0]}`))
  const json = JSON.parse(readFileSync(Path.join(directory, "restart.json"), "utf8"))
  const measured: Measured = {
    readyMs: json.ready.medianMs,
    handoffMs: json.handoff.medianMs,
    steadyP99Ms: json.latency.steady.p99Ms,
    duringP99Ms: json.latency.duringRestarts.p99Ms,
    ratio: json.latency.p99DuringOverSteady,
    failed: json.failed
  }
  console.log(
    `  ready ${fixed(measured.readyMs, 0)} ms, handoff ${fixed(measured.handoffMs, 0)} ms, ` +
      `p99 ${fixed(measured.duringP99Ms, 1)} / ${fixed(measured.steadyP99Ms, 1)} ms (${fixed(measured.ratio)}), ` +
      `${measured.failed} failed`
  )
  return measured
}

/** Every setting once per round, the order reversed every other round. */
const measureAll = async () => {
  const results = new Map(runs.map((run) => [run.name, [] as Array<Measured>]))
  for (let round = 1; round <= Number(flags.rounds); round++) {
    for (const run of round % 2 === 1 ? runs : runs.toReversed()) results.get(run.name)!.push(await runOnce(round, run))
  }
  return results
}

const cell = (values: ReadonlyArray<number>, digits: number) =>
  `${fixed(median(values), digits)} (${fixed(Math.min(...values), digits)}-${fixed(Math.max(...values), digits)})`

const compareTable = (results: ReadonlyMap<string, ReadonlyArray<Measured>>) =>
  markdownTable(
    ["setting", "ready ms", "handoff ms", "p99 steady ms", "p99 during restarts ms", "p99 ratio", "failed"],
    runs.map((run) => {
      const list = results.get(run.name)!
      const of = (pick: (m: Measured) => number, digits: number) => cell(list.map(pick), digits)
      return [
        run.name,
        of((m) => m.readyMs, 0),
        of((m) => m.handoffMs, 0),
        of((m) => m.steadyP99Ms, 1),
        of((m) => m.duringP99Ms, 1),
        of((m) => m.ratio, 2),
        String(list.reduce((n, m) => n + m.failed, 0))
      ]
    })
  )

const main = async () => {
  const results = await measureAll()
  const markdown = [
    `${flags.rounds} rounds of ${flags.restarts} restarts each; per setting, the median over rounds of each run's ` +
      "median (ready, handoff) or p99, and in parentheses the range over rounds.",
    "",
    ...runs.map((run) => `- ${run.name}: \`${run.flags.join(" ") || "(defaults)"}\``),
    "",
    compareTable(results)
  ].join("\n")
  console.log(`\n${markdown}`)
  writeFileSync(Path.join(out, "compare.md"), `${markdown}\n`)
  writeFileSync(Path.join(out, "compare.json"), `${JSON.stringify(Object.fromEntries(results), null, 2)}\n`)
  console.log(`\nWrote ${Path.join(out, "compare.md")} and compare.json`)
}

await main()
