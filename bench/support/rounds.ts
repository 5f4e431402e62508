/**
 * How the measurements order their runs on a shared, noisy machine: fresh
 * processes for each configuration, and the configurations rotated from
 * round to round, so that none is always measured first or last.
 */

/** `items` rotated by one place per round after the first. */
export const rotated = <A>(items: ReadonlyArray<A>, round: number): Array<A> =>
  items.map((_, i) => items[(i + round - 1) % items.length]!)

/** Every pair of an item of `as` and one of `bs`, in order: `as` outer. */
export const pairs = <A, B>(as: ReadonlyArray<A>, bs: ReadonlyArray<B>): Array<readonly [A, B]> =>
  as.flatMap((a) => bs.map((b) => [a, b] as const))

/**
 * Starts fresh servers, measures each of `cases` on them in turn (each run printed as it ends), and stops them
 * whatever happens.
 */
export const measureOn = async <S extends { readonly stop: () => Promise<void> }, C, R>(
  start: () => Promise<S>,
  cases: ReadonlyArray<C>,
  measure: (servers: S, c: C) => Promise<R>,
  print: (run: R) => void
): Promise<Array<R>> => {
  const servers = await start()
  const runs: Array<R> = []
  try {
    for (const c of cases) {
      const run = await measure(servers, c)
      print(run)
      runs.push(run)
    }
  } finally {
    await servers.stop()
  }
  return runs
}
