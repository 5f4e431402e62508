/**
 * The memory limit's watch: each process's resident set size sampled on a
 * schedule, and which of them have stayed above the limit for the whole
 * grace period. A primary watches its workers (group.ts) and a single
 * process itself (single.ts); what is done about it is theirs to decide.
 *
 * - A process is due once every sample for the grace period was above the
 *   limit; it is due again only after another full grace period above it.
 * - A process that was above the limit from its first sample says so
 *   (`sinceStart`): replacing it would start one above it too, so that a
 *   replacement is held back (a slot backs off) or not made (a single
 *   process), rather than restarted in a loop.
 * - A process gone (no size) is forgotten.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { formatSize } from "./config.ts"
import { metrics } from "./metrics.ts"

/** What the watch knows of one process. */
export interface Mark {
  /** When the process went above the limit, this time; none while it is below. */
  readonly overSince: number | undefined
  /** It has been at or below the limit at least once. */
  readonly wasUnder: boolean
}

/** A process's size at one sample: none once it is gone. */
export interface Sample<K> {
  readonly key: K
  readonly rss: number | undefined
}

/** A process above the limit for the grace period. */
export interface Due<K> {
  readonly key: K
  readonly rss: number
  readonly sinceStart: boolean
}

/** The limit and its grace period, in bytes and milliseconds. */
export interface Limit {
  readonly bytes: number
  readonly graceMillis: number
}

/**
 * The marks after the samples taken at `now`, and the processes due: above the limit for the whole grace period.
 * A process not sampled is forgotten.
 */
export const observe = <K>(
  marks: ReadonlyMap<K, Mark>,
  samples: ReadonlyArray<Sample<K>>,
  now: number,
  limit: Limit
): { readonly marks: Map<K, Mark>; readonly due: Array<Due<K>> } => {
  const next = new Map<K, Mark>()
  const due: Array<Due<K>> = []
  for (const { key, rss } of samples) {
    if (rss === undefined) continue
    const before = marks.get(key)
    if (rss <= limit.bytes) {
      next.set(key, { overSince: undefined, wasUnder: true })
      continue
    }
    const wasUnder = before?.wasUnder ?? false
    const overSince = before?.overSince ?? now
    if (now - overSince >= limit.graceMillis) {
      due.push({ key, rss, sinceStart: !wasUnder })
      // Due again only after another full grace period above the limit.
      next.set(key, { overSince: now, wasUnder })
    } else {
      next.set(key, { overSince, wasUnder })
    }
  }
  return { marks: next, due }
}

/** How often the sizes are sampled: every second, or four times within a shorter grace period (at most 10 a second). */
export const interval = (grace: Duration.Duration): Duration.Duration =>
  Duration.millis(Math.min(1000, Math.max(100, Math.round(Duration.toMillis(grace) / 4))))

/**
 * Samples `sample` on the schedule, in a fiber of the current scope, and hands each process due to `over`. The
 * schedule follows the `Clock` (a `TestClock` drives it).
 */
export const watch = <K>(options: {
  readonly limit: Limit
  readonly grace: Duration.Duration
  readonly sample: Effect.Effect<ReadonlyArray<Sample<K>>>
  readonly over: (due: Due<K>) => Effect.Effect<void>
}): Effect.Effect<void, never, Scope.Scope> => {
  let marks: ReadonlyMap<K, Mark> = new Map()
  const tick = Effect.gen(function* () {
    const samples = yield* options.sample
    const now = yield* Clock.currentTimeMillis
    const observed = observe(marks, samples, now, options.limit)
    marks = observed.marks
    yield* Effect.forEach(observed.due, options.over, { discard: true })
  })
  return Effect.asVoid(Effect.forkScoped(Effect.repeat(tick, Schedule.spaced(interval(options.grace)))))
}

/** The limit of the settings, if there is one. */
export const limitOf = (settings: {
  readonly maxMemory: number | undefined
  readonly maxMemoryGrace: Duration.Duration
}): Limit | undefined =>
  settings.maxMemory === undefined
    ? undefined
    : { bytes: settings.maxMemory, graceMillis: Duration.toMillis(settings.maxMemoryGrace) }

/** The annotations of the line that says a process is above the limit: the sizes in bytes, and for a person. */
export const annotations = (rss: number, limit: Limit): Record<string, unknown> => ({
  rss,
  limit: limit.bytes,
  size: formatSize(rss),
  maximum: formatSize(limit.bytes)
})

/** Counts one replacement (or restart) for memory. */
export const countReplacement: Effect.Effect<void> = Metric.update(metrics.memoryReplacements, 1)
