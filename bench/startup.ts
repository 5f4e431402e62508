/**
 * Where a successor's start-up time goes: the demo (`examples/demo.ts`) from
 * process start to its banner (`Serving ... with pid N.`), the moment a
 * successor is ready, without and with Node's compile cache
 * (`NODE_COMPILE_CACHE`, what `module.enableCompileCache()` turns on).
 *
 *   npm run bench:startup [-- --runs 7]
 *
 * - time to ready: spawn to banner of the demo itself, `--runs` times per
 *   mode, the median; and `node -e 0`, spawn to exit, for Node's own share.
 * - phases: `bench/programs/startup-probe.ts` imports the demo's dependencies group by
 *   group (the marginal cost of each, given those before it), then runs the
 *   demo to its banner; median of `--runs` per phase.
 * - CPU profile: one run of the demo under `--cpu-prof` per mode, ended by
 *   SIGTERM at the banner; self time by where the code comes from.
 *
 * With the cache, one run fills it first (not counted): what every successor
 * after the first would see. Where rolldown is installed (with vitest), the
 * demo is also bundled into one file (`.cache/startup/demo.mjs`) and timed.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { addressArgs, BANNER, bundleProgram, DEMO, spawnDemo } from "./support/demo.ts"
import { onCleanup, runMain } from "./support/process.ts"
import { fixed, machine, markdownTable, writeResults } from "./support/report.ts"
import { median } from "./support/stats.ts"

const { values: flags } = parseArgs({ options: { runs: { type: "string", default: "7" } } })
const settings = { runs: Number(flags.runs) }

const probePath = new URL("programs/startup-probe.ts", import.meta.url).pathname
/** Any free port, three times: the demo's addresses are no concern here. */
const ANY_PORTS = [0, 0, 0]

const scratch = mkdtempSync(join(tmpdir(), "effect-grace-startup-"))
onCleanup(() => rmSync(scratch, { recursive: true, force: true }))

interface Mode {
  readonly name: string
  readonly env: Record<string, string | undefined>
}

const modes: ReadonlyArray<Mode> = [
  { name: "no compile cache", env: { NODE_COMPILE_CACHE: undefined, NODE_DISABLE_COMPILE_CACHE: "1" } },
  { name: "compile cache", env: { NODE_COMPILE_CACHE: join(scratch, "compile-cache") } }
]

/** Spawn to banner of the demo, in ms; then stops it. */
const timeToReady = async (
  mode: Mode,
  extraArgs: ReadonlyArray<string> = [],
  entry: string = DEMO
): Promise<number> => {
  const started = performance.now()
  const demo = spawnDemo(ANY_PORTS, { entry, nodeArgs: extraArgs, env: mode.env })
  await demo.waitForLine(BANNER, 30_000)
  const ready = performance.now() - started
  await demo.stop(10_000)
  return ready
}

const bareNode = (mode: Mode): number => {
  const started = performance.now()
  execFileSync(process.execPath, ["-e", "0"], { env: { ...process.env, ...mode.env } })
  return performance.now() - started
}

const probe = (mode: Mode, library: "src" | "dist" = "src"): Array<[string, number]> => {
  const output = execFileSync(process.execPath, [probePath, ...addressArgs(ANY_PORTS)], {
    env: { ...process.env, ...mode.env, PROBE_LIBRARY: library },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
    timeout: 60_000
  })
  return (JSON.parse(output.trim().split("\n").at(-1)!) as { phases: Array<[string, number]> }).phases
}

// -----------------------------------------------------------------------------
// CPU profile
// -----------------------------------------------------------------------------

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string }
}
interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const origin = (node: ProfileNode): string => {
  const { functionName, url } = node.callFrame
  if (url === "") {
    if (functionName === "(garbage collector)") return "V8: garbage collector"
    if (functionName === "(program)") return "V8: (program): parse, compile, native"
    if (functionName === "(idle)") return "(idle)"
    return "V8/Node native functions"
  }
  if (url.startsWith("node:")) return "Node internals (node:*)"
  if (url.includes("/node_modules/effect/")) return "effect"
  if (url.includes("/node_modules/@effect/")) return "@effect/platform-node(-shared)"
  const other = url.match(/\/node_modules\/((?:@[^/]+\/)?[^/]+)\//)
  if (other !== null) return `other packages (${other[1]})`
  if (url.includes("/src/")) return "effect-grace src/"
  if (url.includes("/examples/")) return "examples/demo.ts"
  return `other (${url})`
}

/** Self time (ms) by origin, idle left out, and the functions with the most self time. */
const profileOf = async (
  mode: Mode
): Promise<{ readonly byOrigin: Record<string, number>; readonly top: Array<[string, number]> }> => {
  const dir = join(scratch, `profile-${mode.name.replace(/\W+/g, "-")}`)
  await timeToReady(mode, ["--cpu-prof", `--cpu-prof-dir=${dir}`])
  const file = readdirSync(dir).find((name) => name.endsWith(".cpuprofile"))
  if (file === undefined) throw new Error(`no CPU profile in ${dir}`)
  const profile = JSON.parse(readFileSync(join(dir, file), "utf8")) as Profile
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const totals: Record<string, number> = {}
  const functions = new Map<string, number>()
  profile.samples.forEach((id, i) => {
    const node = byId.get(id)!
    const ms = (profile.timeDeltas[i] ?? 0) / 1000
    const key = origin(node)
    totals[key] = (totals[key] ?? 0) + ms
    const { functionName, url } = node.callFrame
    const where = `${functionName || "(anonymous)"} ${url.replace(/^.*\/node_modules\//, "").replace(/^file:\/\/.*\/(src|examples)\//, "$1/")}`
    functions.set(where, (functions.get(where) ?? 0) + ms)
  })
  delete totals["(idle)"]
  functions.delete("(idle) ")
  const top = [...functions].toSorted((a, b) => b[1] - a[1]).slice(0, 12)
  return { byOrigin: totals, top }
}

// -----------------------------------------------------------------------------
// Main
// -----------------------------------------------------------------------------

const runMode = async (mode: Mode) => {
  if (mode.env.NODE_COMPILE_CACHE !== undefined) {
    // Fills the cache.
    await timeToReady(mode)
    if (bundlePath !== undefined) await timeToReady(mode, [], bundlePath)
  }
  const bundled: Array<number> = []
  const ready: Array<number> = []
  const bare: Array<number> = []
  const probes: Array<Array<[string, number]>> = []
  const builtProbes: Array<Array<[string, number]>> = []
  for (let i = 0; i < settings.runs; i++) {
    ready.push(await timeToReady(mode))
    if (bundlePath !== undefined) bundled.push(await timeToReady(mode, [], bundlePath))
    bare.push(bareNode(mode))
    probes.push(probe(mode))
    builtProbes.push(probe(mode, "dist"))
  }
  const medians = (runs: ReadonlyArray<ReadonlyArray<[string, number]>>) =>
    runs[0]!.map(([name], i) => ({ name, ms: median(runs.map((run) => run[i]?.[1] ?? Number.NaN)) }))
  const phases = medians(probes)
  const builtPhases = medians(builtProbes)
  const profile = await profileOf(mode)
  console.log(`${mode.name}: time to ready, median of ${settings.runs}: ${fixed(median(ready), 0)} ms`)
  return {
    mode: mode.name,
    readyMs: median(ready),
    readyRuns: ready,
    bundledReadyMs: bundlePath === undefined ? Number.NaN : median(bundled),
    bundledReadyRuns: bundled,
    bareNodeMs: median(bare),
    phases,
    builtPhases,
    profile
  }
}

/** The demo bundled with rolldown (see `bundleProgram` in support/demo.ts); undefined without rolldown. */
const bundle = (): string | undefined =>
  bundleProgram(DEMO, new URL("../.cache/startup/demo.mjs", import.meta.url).pathname)
let bundlePath: string | undefined

type Results = Awaited<ReturnType<typeof runMode>>

const summaryTable = (plain: Results, cached: Results) =>
  markdownTable(
    ["measure (median)", plain.mode, cached.mode],
    [
      ["demo: spawn to banner (ready)", fixed(plain.readyMs, 0), fixed(cached.readyMs, 0)],
      [
        "demo bundled into one file (rolldown): spawn to banner",
        fixed(plain.bundledReadyMs, 0),
        fixed(cached.bundledReadyMs, 0)
      ],
      ["node -e 0: spawn to exit", fixed(plain.bareNodeMs, 0), fixed(cached.bareNodeMs, 0)]
    ]
  )

const phaseTable = (plain: Results, cached: Results) =>
  markdownTable(
    ["phase (marginal, in this order)", `${plain.mode} ms`, `${cached.mode} ms`],
    plain.phases.map((phase, i) => [phase.name, fixed(phase.ms, 1), fixed(cached.phases[i]?.ms ?? Number.NaN, 1)])
  )

const libraryTable = (plain: Results, cached: Results) => {
  const ours = (rows: ReadonlyArray<{ readonly name: string; readonly ms: number }>) =>
    rows.filter((row) => /^(src|dist)\//.test(row.name)).reduce((sum, row) => sum + row.ms, 0)
  return markdownTable(
    ["effect-grace's own modules (sum of their rows)", `${plain.mode} ms`, `${cached.mode} ms`],
    [
      [
        "src/*.ts, as the demo loads them (type stripping)",
        fixed(ours(plain.phases), 1),
        fixed(ours(cached.phases), 1)
      ],
      [
        "dist/*.js, as users of the package load them",
        fixed(ours(plain.builtPhases), 1),
        fixed(ours(cached.builtPhases), 1)
      ]
    ]
  )
}

const profileTable = (plain: Results, cached: Results) => {
  const origins = [
    ...new Set([...Object.keys(plain.profile.byOrigin), ...Object.keys(cached.profile.byOrigin)])
  ].toSorted((a, b) => (plain.profile.byOrigin[b] ?? 0) - (plain.profile.byOrigin[a] ?? 0))
  return markdownTable(
    ["CPU self time by origin (one run each)", `${plain.mode} ms`, `${cached.mode} ms`],
    origins.map((key) => [key, fixed(plain.profile.byOrigin[key] ?? 0, 1), fixed(cached.profile.byOrigin[key] ?? 0, 1)])
  )
}

const topTable = (plain: Results) =>
  markdownTable(
    [`functions with the most self time (${plain.mode})`, "ms"],
    plain.profile.top.map(([name, ms]) => [name, fixed(ms, 1)])
  )

const report = (results: ReadonlyArray<Results>) => {
  const [plain, cached] = results as [Results, Results]
  const summary = summaryTable(plain, cached)
  const phases = phaseTable(plain, cached)
  const library = libraryTable(plain, cached)
  const profile = profileTable(plain, cached)
  const top = topTable(plain)
  console.log(`\n${summary}\n\n${phases}\n\n${library}\n\n${profile}\n\n${top}`)
  const output = { machine: machine(), settings, results }
  writeResults(
    "startup",
    output,
    [
      "# Where a successor's start-up time goes",
      "",
      `\`npm run bench:startup\` at ${output.machine.revision} on Node ${output.machine.node}, ${output.machine.cpus} CPUs, ${output.machine.date}: ` +
        `the demo from process start to its banner (ready), without and with \`NODE_COMPILE_CACHE\` (filled by one run first); ` +
        `medians of ${settings.runs} runs.`,
      "",
      summary,
      "",
      "Phases (`bench/programs/startup-probe.ts`): each group of imports timed after the groups above it, so a module's " +
        "cost is what it adds to what was already loaded; the last phase is the demo itself, from its import to its banner.",
      "",
      phases,
      "",
      "CPU profile (`--cpu-prof`) of one run of the demo per mode, ended by SIGTERM at the banner (its stop included), idle left out:",
      "",
      profile,
      "",
      top,
      "",
      "The same imports with the built library (`PROBE_LIBRARY=dist`, after `npm run build`): what a successor of an " +
        "application using the published package loads.",
      "",
      library
    ].join("\n")
  )
}

const main = async () => {
  console.log(`Start-up of the demo, ${settings.runs} runs per mode\n`)
  // The built library (dist/), for what users of the package load.
  execFileSync("npm", ["run", "build", "--silent"], { stdio: ["ignore", "ignore", "inherit"], timeout: 120_000 })
  bundlePath = bundle()
  const results: Array<Results> = []
  for (const mode of modes) results.push(await runMode(mode))
  report(results)
}

await runMain(main)
