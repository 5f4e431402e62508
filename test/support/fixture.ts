/**
 * The supervised fixture (test/fixtures/supervised.ts) run for real, as one
 * process or as a primary with its workers: every process of a run carries a
 * tag in its arguments and is killed when the scope closes, pass or fail; its
 * JSON log lines (on stdout, which every generation and worker shares) read
 * and waited for, bounded; the pid an answer names; load that records which
 * pid answered each request.
 */
import { assert } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { keepAliveLoad, steadyLoad } from "./http.ts"
import type { Reply } from "./http.ts"
import { freePort } from "./net.ts"
import { eventually, isAlive, processesTagged, spawnFixture } from "./process.ts"
import type { Spawned } from "./process.ts"

// -----------------------------------------------------------------------------
// Processes
// -----------------------------------------------------------------------------

/** A tag for a test's program, in its arguments: every process of it (generations, primaries, workers) carries it. */
export const newTag = () => `t${process.pid}x${Math.random().toString(36).slice(2, 10)}`

/** When the scope closes, pass or fail: every process of the program is killed. */
export const killTaggedOnClose = (tag: string) =>
  Effect.addFinalizer(() =>
    Effect.sync(() => {
      for (const pid of processesTagged(tag)) {
        try {
          process.kill(pid, "SIGKILL")
        } catch {
          // Gone meanwhile.
        }
      }
    })
  )

/** The pid an answer of the fixture names (`pid <n>`). */
export const pidOf = (reply: Reply): number => {
  const match = reply.body.match(/pid (\d+)/)
  assert.isNotNull(match, `a pid in ${JSON.stringify(reply.body)}`)
  return Number(match![1])
}

export const gone = (pid: number) => eventually(() => !isAlive(pid), `pid ${pid} to exit`)

export const sorted = (pids: Iterable<number>): Array<number> => [...pids].toSorted((a, b) => a - b)

// -----------------------------------------------------------------------------
// Log lines
// -----------------------------------------------------------------------------

export interface Log {
  readonly message: string
  readonly level: string
  /** When it was logged, in ms since the epoch. */
  readonly at: number
  readonly annotations: Readonly<Record<string, unknown>>
}

/** The JSON log lines a program (and every process that shares its stdout) printed, from line `from` on. */
export const logsOf = (program: Spawned, from = 0): Array<Log> =>
  program.lines.slice(from).flatMap((line) => {
    if (!line.startsWith("{")) return []
    try {
      const { message, level, timestamp, annotations } = JSON.parse(line) as Omit<Log, "at"> & { timestamp: string }
      return [{ message: String(message), level, at: Date.parse(timestamp), annotations: annotations ?? {} }]
    } catch {
      return []
    }
  })

export const matching = (log: Log, message: string, fields: Readonly<Record<string, unknown>>) =>
  log.message === message && Object.entries(fields).every(([key, value]) => log.annotations[key] === value)

/** Waits, bounded, for a log line from line `from` on that `where` accepts; `what` names it in a timeout. */
export const waitForLogWhere = (
  program: Spawned,
  from: number,
  what: string,
  where: (log: Log) => boolean,
  timeoutMs = 15_000
) =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    while (true) {
      const found = logsOf(program, from).find(where)
      if (found !== undefined) return found
      if (Date.now() > deadline) {
        return yield* Effect.die(
          new Error(
            `no log ${what} from line ${from} within ${timeoutMs / 1000} s; output:\n` +
              `${program.lines.join("\n")}\nstderr:\n${program.errors.join("\n")}`
          )
        )
      }
      yield* Effect.sleep("20 millis")
    }
  })

/** Waits, bounded, for a log line from line `from` on with `message` and these annotations. */
export const waitForLog = (
  program: Spawned,
  from: number,
  message: string,
  fields: Readonly<Record<string, unknown>> = {}
) => waitForLogWhere(program, from, `"${message}" ${JSON.stringify(fields)}`, (log) => matching(log, message, fields))

// -----------------------------------------------------------------------------
// One process
// -----------------------------------------------------------------------------

export interface Generation {
  readonly pid: number
}

/** Waits until the generation `pid` is ready. */
export const readyOf = (fixture: Spawned, pid: number): Effect.Effect<Generation> =>
  Effect.as(fixture.waitForLine(new RegExp(`"effect-grace: ready".*"pid":${pid}\\b`)), { pid })

/**
 * Starts the supervised fixture: its first generation is a child of this test; later generations are started by
 * it. A hand-off at once (no probation) unless `env` says otherwise.
 */
export const startSingle = (options: {
  readonly specs: (tag: string) => ReadonlyArray<string>
  readonly env?: Record<string, string>
}) =>
  Effect.gen(function* () {
    const tag = newTag()
    yield* killTaggedOnClose(tag)
    const fixture = yield* spawnFixture("supervised", options.specs(tag), {
      env: { GRACE_PROBATION: "0", ...options.env }
    })
    const first = yield* readyOf(fixture, fixture.pid)
    return { fixture, tag, first }
  })

// -----------------------------------------------------------------------------
// Workers
// -----------------------------------------------------------------------------

/** The workers `primary` started from line `from` on, by slot (of `count`): the last started for each. */
export const workersStarted = (
  program: Spawned,
  primary: number,
  from: number,
  count = 2
): Array<number | undefined> => {
  const bySlot: Array<number | undefined> = Array.from({ length: count }, () => undefined)
  for (const log of logsOf(program, from)) {
    if (matching(log, "effect-grace: worker started", { pid: primary })) {
      bySlot[Number(log.annotations.slot)] = Number(log.annotations.worker)
    }
  }
  return bySlot
}

/** Waits until `primary` is ready (every slot of `count` serves) from line `from` on; its workers, by slot. */
export const groupReady = (program: Spawned, primary: number, from: number, count = 2) =>
  Effect.gen(function* () {
    const ready = yield* waitForLog(program, from, "effect-grace: ready", { pid: primary })
    assert.isUndefined(ready.annotations.slot, "the primary's own ready")
    const workers = workersStarted(program, primary, from, count)
    assert.isTrue(
      workers.every((pid) => pid !== undefined),
      `a worker for every slot: ${workers.join(", ")}`
    )
    return workers as Array<number>
  })

/**
 * The supervised fixture with workers (`GRACE_WORKERS` of `env`, else 2) on a free loopback port, ready: the
 * primary is this test's child.
 */
export const startWorkers = (env: Readonly<Record<string, string>> = {}) =>
  Effect.gen(function* () {
    const count = Number(env.GRACE_WORKERS ?? 2)
    const port = yield* freePort()
    const tag = newTag()
    yield* killTaggedOnClose(tag)
    const program = yield* spawnFixture("supervised", [`${tag}=127.0.0.1:${port}`], {
      env: { GRACE_WORKERS: String(count), ...env }
    })
    const workers = yield* groupReady(program, program.pid, 0, count)
    return { port, tag, program, primary: program.pid, workers, url: `http://127.0.0.1:${port}/` }
  })

// -----------------------------------------------------------------------------
// Load
// -----------------------------------------------------------------------------

/** Where a load is: `pids(mark)` is every pid that answered since. */
export interface Mark {
  readonly keptAlive: number
  readonly fresh: number
}

/** Keep-alive load on four connections and load on new connections (two clients), on `url`. */
export const bothLoads = (url: string) =>
  Effect.gen(function* () {
    const keepAlive = yield* keepAliveLoad([url, url, url, url])
    const fresh = yield* steadyLoad(url, 2)
    const answered = () => keepAlive.answers.length + fresh.outcomes.length
    const mark = (): Mark => ({ keptAlive: keepAlive.answers.length, fresh: fresh.outcomes.length })
    const pids = (since: Mark = { keptAlive: 0, fresh: 0 }) => [
      ...keepAlive.answers.slice(since.keptAlive).map(pidOf),
      ...fresh.outcomes.slice(since.fresh).flatMap((o) => (o.pid === undefined ? [] : [o.pid]))
    ]
    const failures = () => [
      ...keepAlive.failures,
      ...fresh.outcomes.flatMap((o) => (o.code === undefined ? [] : [o.code]))
    ]
    /** Waits until `more` requests more have been answered. */
    const more = (count: number) => {
      const target = answered() + count
      return eventually(() => answered() >= target, `${count} more answers`)
    }
    const stop = Effect.andThen(keepAlive.stop, fresh.stop)
    return { keepAlive, fresh, answered, mark, pids, failures, more, stop }
  })
