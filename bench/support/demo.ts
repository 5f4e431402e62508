/**
 * The demo (`examples/demo.ts`) as the benchmarks run it: on three addresses
 * of 127.0.0.1, leading a process group of its own, with a compile cache of
 * the run's own, or bundled into one file.
 */
import { execFileSync } from "node:child_process"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { isAlive, processesWithArgument } from "./proc.ts"
import { killAllWith, killAllWithArgument, onCleanup, spawnNode } from "./process.ts"
import type { Child } from "./process.ts"
import { until } from "./wait.ts"

export const DEMO = fileURLToPath(new URL("../../examples/demo.ts", import.meta.url))

/** The line a demo process prints once it serves: the moment a successor (or a worker) is ready. */
export const BANNER = /^Serving .* with pid (\d+)\.$/

/** The demo's arguments for its three addresses: `--a0 127.0.0.1:PORT ...`. */
export const addressArgs = (ports: ReadonlyArray<number>): Array<string> =>
  ports.flatMap((port, i) => [`--a${i}`, `127.0.0.1:${port}`])

/** A demo running: its first process, and its first address. */
export interface Demo extends Child {
  readonly address: string
  /** Stops the demo (see `Child`); with `byAddress`, waits up to `settleMs` for its other processes, then kills them. */
  readonly stop: (ms?: number, settleMs?: number) => Promise<void>
}

/**
 * Starts the demo (or `entry`, another build of it) on `ports`, under `nodeArgs`, leading a process group of its
 * own. With `byAddress`, every process of it is also found by its first address in its command line (unique to
 * the run: give it fresh ports): workers, in process groups of their own, are then killed at exit and by `stop`.
 */
export const spawnDemo = (
  ports: ReadonlyArray<number>,
  options: {
    readonly entry?: string
    readonly nodeArgs?: ReadonlyArray<string>
    readonly env?: Record<string, string | undefined>
    readonly byAddress?: boolean
  } = {}
): Demo => {
  const address = `127.0.0.1:${ports[0]}`
  const removeKill = options.byAddress ? killAllWithArgument(address) : undefined
  const args = [...(options.nodeArgs ?? []), options.entry ?? DEMO, ...addressArgs(ports)]
  const demo = spawnNode(args, { group: true, env: options.env ?? {} })
  const stop = async (ms?: number, settleMs = 0) => {
    await demo.stop(ms)
    if (removeKill === undefined) return
    if (settleMs > 0) {
      const gone = () => processesWithArgument(address).length === 0
      await until(gone, settleMs, `every process of ${address} to exit`).catch(() => undefined)
    }
    killAllWith(address)
    removeKill()
  }
  return { ...demo, address, stop }
}

/**
 * A compile cache directory of its own for one run, removed at exit, so that
 * no run reads what an earlier one compiled (Node's default directory,
 * `<tmpdir>/node-compile-cache`, outlives runs).
 */
export const freshCompileCache = (): { readonly directory: string; readonly remove: () => void } => {
  const directory = mkdtempSync(join(tmpdir(), "effect-grace-compile-cache-"))
  const remove = () => rmSync(directory, { recursive: true, force: true })
  const removeCleanup = onCleanup(remove)
  return {
    directory,
    remove: () => {
      removeCleanup()
      remove()
    }
  }
}

/**
 * A program bundled into one ES module with rolldown (vite's bundler, installed with vitest), at `file`, which must
 * be inside the program's repository so that the bundle still finds its native dependency (koffi) there. Undefined
 * where rolldown is not installed.
 */
export const bundleProgram = (entry: string, file: string): string | undefined => {
  const rolldown = fileURLToPath(new URL("../../node_modules/.bin/rolldown", import.meta.url))
  if (!existsSync(rolldown)) return undefined
  execFileSync(rolldown, [entry, "--format", "esm", "--platform", "node", "--file", file], {
    stdio: "ignore",
    timeout: 120_000
  })
  return file
}

/** One restart of the demo in one process: the pids, and the times (`performance.now()`) of each step. */
export interface Handoff {
  readonly from: number
  readonly to: number
  /** The signal, the successor's banner, the old process gone. */
  readonly signalled: number
  readonly ready: number
  readonly drained: number
}

/** Something that watches a restart from its signal (the old pid, the signal's time) to the successor's banner. */
export type Watch<A> = (from: number, signalled: number) => { readonly ready: (to: number) => Promise<A> }

/**
 * Restarts the demo in one process once: SIGUSR2 to `from`, the process serving; waits (bounded) for its
 * successor's banner, then for `from` to drain and exit. `watch`, if any, starts just before the signal.
 */
export const restartDemo = async <A = never>(
  demo: Child,
  from: number,
  watch?: Watch<A>
): Promise<Handoff & { readonly watched: A | undefined }> => {
  const seen = demo.lines.length
  const signalled = performance.now()
  const watching = watch?.(from, signalled)
  process.kill(from, "SIGUSR2")
  const to = Number((await demo.waitForLine(BANNER, 20_000, seen))[1])
  const ready = performance.now()
  const watched = await watching?.ready(to)
  await until(() => !isAlive(from), 30_000, `pid ${from} to drain and exit`)
  return { from, to, signalled, ready, drained: performance.now(), watched }
}

// -----------------------------------------------------------------------------
// Its log lines
// -----------------------------------------------------------------------------

/** One logfmt line of the demo's stderr; `at` is its timestamp on this process's `performance.now()` clock. */
export interface LogLine {
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
export const logReader = (errors: ReadonlyArray<string>) => {
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

export const logged = (message: string, pid: number) => (line: LogLine) =>
  line.message === `effect-grace: ${message}` && line.fields.pid === String(pid)

export type Logs = ReturnType<typeof logReader>
