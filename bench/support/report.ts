/**
 * Results: numbers and tables as the reports print them, what the benchmark
 * ran on, and the files it writes (`<name>.json`, `.md` and `.svg`, by
 * default in `bench/results/`).
 */
import { execFileSync } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import { availableParallelism, loadavg } from "node:os"
import { join, relative, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { median } from "./stats.ts"

/** A number with fixed decimals, for tables. */
export const fixed = (value: number, digits = 2): string => (Number.isFinite(value) ? value.toFixed(digits) : "n/a")

/** Shares as percents: `58/42`. */
export const percents = (shares: ReadonlyArray<number>) => shares.map((share) => fixed(share * 100, 0)).join("/")

/** A markdown table with padded columns (readable on a terminal as well). */
export const markdownTable = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) => `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join("\n")
}

/**
 * How busy the rest of the machine was over `runs` (each run's `otherCores`): the median, and a sentence that says
 * it, and whether the numbers are noisy for it.
 */
export const otherLoadText = (
  runs: ReadonlyArray<{ readonly otherCores: number }>
): { readonly otherCores: number; readonly noise: string } => {
  const otherCores = median(runs.map((run) => run.otherCores))
  const noise =
    `Other processes on the machine used a median of ${fixed(otherCores)} cores during the measured runs ` +
    `(max ${fixed(Math.max(...runs.map((run) => run.otherCores)))})` +
    (otherCores > 0.2 ? ": the machine was busy, the numbers are noisy." : ".")
  return { otherCores, noise }
}

/**
 * Writes `<name>.json`, `<name>.md` and, given one, `<name>.svg` in `directory`
 * (by default `bench/results/`; a relative one from the current directory, as `--out` is given).
 */
export const writeResults = (name: string, json: unknown, markdown: string, svg?: string, out?: string): void => {
  const directory = out === undefined ? fileURLToPath(new URL("../results/", import.meta.url)) : resolve(out)
  mkdirSync(directory, { recursive: true })
  writeFileSync(join(directory, `${name}.json`), `${JSON.stringify(json, null, 2)}\n`)
  writeFileSync(join(directory, `${name}.md`), `${markdown.trimEnd()}\n`)
  if (svg !== undefined) writeFileSync(join(directory, `${name}.svg`), svg)
  const near = relative(process.cwd(), directory)
  const shown = near.startsWith("..") ? directory : near
  console.log(`\nWrote ${join(shown, name)}.json, ${name}.md${svg === undefined ? "" : ` and ${name}.svg`}`)
}

/**
 * The commit measured, `-dirty` when src/ has uncommitted changes (`BENCH_REVISION` overrides), of the checkout
 * holding `directory` (by default this one).
 */
const revision = (directory: string = fileURLToPath(new URL("../..", import.meta.url))): string => {
  if (process.env.BENCH_REVISION) return process.env.BENCH_REVISION
  try {
    const git = (...args: Array<string>) =>
      execFileSync("git", args, {
        cwd: directory,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"]
      }).trim()
    return `${git("rev-parse", "--short", "HEAD")}${git("status", "--porcelain", "--", "src") === "" ? "" : "-dirty"}`
  } catch {
    return "unknown"
  }
}

/** What the benchmark ran on, recorded with its results; `directory` is in the checkout measured, if not this one. */
export const machine = (directory?: string) => ({
  revision: revision(directory),
  node: process.version,
  cpus: availableParallelism(),
  /** 1, 5 and 15 minute load averages when this is read (the run's own load included): how busy the machine was. */
  loadAverage: loadavg().map((n) => Math.round(n * 100) / 100),
  date: new Date().toISOString()
})
