/**
 * What the two restart measurements (`bench/restart.ts`, one process, and
 * `bench/restart-workers.ts`, `--workers N`) share: the command line of
 * `npm run bench:restart`, the demo they restart and its environment, and
 * the steps every run takes: restarts one at a time until one fails, the
 * demo's end, and the exit code.
 */
import { execFileSync } from "node:child_process"
import { symlinkSync } from "node:fs"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import * as Duration from "effect/Duration"
import { bundleProgram, DEMO } from "./demo.ts"
import type { Child, Terminated } from "./process.ts"
import { machine } from "./report.ts"
import { sleep } from "./wait.ts"

export const { values: flags } = parseArgs({
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
    probation: { type: "string" },
    hold: { type: "string" },
    sweep: { type: "string" },
    baseline: { type: "string" }
  }
})

const COMPILE_CACHE_MODES = ["fresh", "first", "off"] as const
const compileCache = flags["compile-cache"] as (typeof COMPILE_CACHE_MODES)[number]
if (!COMPILE_CACHE_MODES.includes(compileCache))
  throw new Error(`--compile-cache ${compileCache}: use ${COMPILE_CACHE_MODES.join(", ")}`)

export const settings = {
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
export type Settings = typeof settings

const goUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000 }

/** Milliseconds of a duration in Go's syntax (`20s`, `1m30s`, `500ms`), as the demo's `/sleep/` reads it. */
const millisOf = (name: string, text: string): number => {
  if (!/^(\d+(\.\d+)?(ms|s|m))+$/.test(text)) throw new Error(`--${name} ${text}: use Go's syntax (20s, 500ms, 1m)`)
  let millis = 0
  for (const [, value, unit] of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m)/g)) millis += Number(value) * goUnits[unit!]!
  return millis
}

/** A duration as `GRACE_PROBATION` takes it (`5 seconds`, `500 millis`), in milliseconds. */
const probationMillis = (text: string): number => Duration.toMillis(Duration.fromInputUnsafe(text as Duration.Input))

const probation = flags.probation ?? "1 second"

/** What a workers run does: the rolls and upgrades, their probation, and the request held on every worker. */
export const workerSettings = {
  workers: Number(flags.workers),
  rolls: Number(flags.rolls ?? (flags.quick ? 4 : 20)),
  upgrades: Number(flags.upgrades ?? (flags.quick ? 2 : 5)),
  /** `GRACE_PROBATION`: how long a new worker (or primary) is on probation before the old one drains. */
  probation,
  probationMs: probationMillis(probation),
  /** `--hold`: a request this long in flight on every old worker when each restart's signal comes; 0: none. */
  holdMs: flags.hold === undefined ? 0 : millisOf("hold", flags.hold),
  /** How often the demo's processes are counted. */
  sampleEveryMs: 20
}

/**
 * The whole run, whatever happens: a workers run has more, and longer, restarts (before the canary roll, a
 * probation and a drain per slot); a sweep's runs each have their own.
 */
export const DEADLINE_MS =
  flags.sweep !== undefined
    ? 24 * 3_600_000
    : flags.workers === undefined
      ? 180_000
      : 900_000 +
        (workerSettings.rolls + workerSettings.upgrades) *
          workerSettings.workers *
          (workerSettings.probationMs + workerSettings.holdMs)

// -----------------------------------------------------------------------------
// The demo
// -----------------------------------------------------------------------------

/** The demo's source: this checkout's, or `--demo`'s (another checkout's, whose revision is recorded). */
const demoSource = flags.demo === undefined ? DEMO : Path.resolve(flags.demo)

// Bundled inside the demo's own checkout, where its node_modules (koffi) are.
const bundled = (): string => {
  const file = Path.join(Path.dirname(demoSource), "../.cache/restart/demo.mjs")
  const written = bundleProgram(demoSource, file)
  if (written === undefined) throw new Error("--bundle needs rolldown (installed with vitest): run npm ci")
  return written
}

/** What runs: the demo's source, or with `--bundle` its bundle. */
export const demoPath = settings.bundle ? bundled() : demoSource

/** Node's own folder in a compile cache directory, linked to itself (see `--flat-cache`). */
export const flattenCache = (directory: string) => {
  const script = `const m = require("node:module"); m.enableCompileCache(${JSON.stringify(directory)}); m.getCompileCacheDir()`
  const env = { ...process.env }
  delete env.NODE_COMPILE_CACHE
  const versioned = execFileSync(process.execPath, ["-p", script], { encoding: "utf8", env }).trim()
  symlinkSync(".", Path.join(versioned, Path.basename(versioned)))
}

/** The first generation's environment: a compile cache directory of this run's alone (see `--compile-cache`). */
export const demoEnv = (directory: string): Record<string, string | undefined> => ({
  GRACE_COMPILE_CACHE: compileCache === "off" ? "off" : directory,
  NODE_COMPILE_CACHE: compileCache === "first" ? directory : undefined
})

/** The settings that change what is measured, in words, for the markdown. */
export const settingsText = (s: Settings) =>
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
// Steps of a run
// -----------------------------------------------------------------------------

/**
 * Runs `restart` `count` times (`i` from 1), one at a time, with `--steady` ms of steady load after each. A
 * restart that does not complete ends the restarts, not the report: the reason is returned (and printed, with the
 * demo's last lines).
 */
export const restartEach = async (
  count: number,
  restart: (i: number) => Promise<void>,
  demo: Child
): Promise<string | undefined> => {
  try {
    for (let i = 1; i <= count; i++) {
      await restart(i)
      await sleep(settings.steadyMs)
    }
    return undefined
  } catch (error) {
    const aborted = error instanceof Error ? error.message : String(error)
    console.error(`\nRestarts stopped: ${aborted}\ndemo stderr (last 20 lines):\n${demo.errors.slice(-20).join("\n")}`)
    return aborted
  }
}

/**
 * What a run writes (`restart.json`, `restart-workers.json`): what ran, then the report, the first and the final
 * processes (fds and memory), and how the demo ended on SIGTERM.
 */
export const outputOf = <S, R extends object, G>(run: {
  readonly settings: S
  readonly ports: ReadonlyArray<number>
  readonly aborted: string | undefined
  readonly report: R
  readonly first: G
  readonly final: G
  readonly terminated: Terminated
}) => ({
  machine: machine(Path.dirname(demoSource)),
  demo: demoPath,
  settings: run.settings,
  ports: run.ports,
  aborted: run.aborted,
  ...run.report,
  first: run.first,
  final: run.final,
  terminated: run.terminated
})

/** A run that could not report: why, with the demo's last lines. */
export const runFailed = (error: unknown, demo: Child): void => {
  process.exitCode = 1
  console.error(`\nFAILED: ${error instanceof Error ? error.message : String(error)}`)
  console.error(`demo stderr (last 40 lines):\n${demo.errors.slice(-40).join("\n")}`)
}

/** Exit code 1 unless every restart was done, no request failed, and the demo ended on SIGTERM leaving nothing. */
export const setExitCode = (run: {
  readonly aborted: string | undefined
  readonly failed: number
  readonly terminated: { readonly exited: boolean; readonly leftover: ReadonlyArray<number> }
}): void => {
  if (run.aborted !== undefined || run.failed > 0 || !run.terminated.exited || run.terminated.leftover.length > 0)
    process.exitCode = 1
}
