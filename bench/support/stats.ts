/**
 * Numbers over requests and runs: percentiles, medians, spreads, and how
 * evenly workers shared the requests.
 */

/** The nearest-rank percentile (`p` in 0..100) of values sorted in ascending order. */
export const percentile = (sorted: ArrayLike<number>, p: number): number =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

/** Sorts latencies for `percentile`. */
export const sortedOf = (values: ArrayLike<number>): Float64Array => Float64Array.from(values).toSorted()

/** The largest of values sorted in ascending order; NaN for none. */
export const largest = (sorted: ArrayLike<number>): number =>
  sorted.length > 0 ? sorted[sorted.length - 1]! : Number.NaN

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = sortedOf(values)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

/** How many latencies, and their p50, p99 and largest. */
export interface Latency {
  readonly requests: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly maxMs: number
}

export const latencyOf = (values: ArrayLike<number>): Latency => {
  const sorted = sortedOf(values)
  return {
    requests: sorted.length,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: largest(sorted)
  }
}

/** The median, smallest and largest of durations, and how many are missing (NaN). */
export interface Spread {
  readonly medianMs: number
  readonly minMs: number
  readonly maxMs: number
  readonly missing: number
}

export const spreadOf = (values: ReadonlyArray<number>): Spread => {
  const sorted = sortedOf(values.filter(Number.isFinite))
  return {
    medianMs: percentile(sorted, 50),
    minMs: sorted.length > 0 ? sorted[0]! : Number.NaN,
    maxMs: largest(sorted),
    missing: values.length - sorted.length
  }
}

/** Each worker's share of `counts`, largest first. */
const sharesOf = (counts: ReadonlyArray<number>): Array<number> => {
  const total = counts.reduce((a, b) => a + b, 0)
  return counts.map((n) => (total === 0 ? Number.NaN : n / total)).toSorted((a, b) => b - a)
}

/** The largest share over the mean share: 1 is even, N is everything on one of N workers. */
const maxOverMean = (shares: ReadonlyArray<number>): number => (shares[0] ?? Number.NaN) * shares.length

/** How evenly workers shared the requests and the connections: each one's share, largest first, and max/mean. */
export const sharing = (perWorker: ReadonlyArray<{ readonly requests: number; readonly connections: number }>) => {
  const requestShares = sharesOf(perWorker.map((w) => w.requests))
  const connectionShares = sharesOf(perWorker.map((w) => w.connections))
  return {
    requestShares,
    connectionShares,
    requestMaxOverMean: maxOverMean(requestShares),
    connectionMaxOverMean: maxOverMean(connectionShares)
  }
}
