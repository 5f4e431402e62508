/**
 * A slot whose worker keeps dying, with real processes: its worker is killed,
 * and every worker started for it afterwards crashes at start-up (the
 * fixture's `crash` mode), so the slot stays without a worker that accepts
 * through its backoff, as in a crash loop. The kernel still hands that slot's
 * socket its share of new connections; the primary lends the socket to a
 * worker that accepts, so under a steady rate of new connections no request
 * fails and none takes a second. Once the slot's worker starts again, the
 * loan is taken back. With two workers and one slot looping, and four
 * workers with two.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { request } from "./support/http.ts"
import { tempDir } from "./support/fs.ts"
import { freePort } from "./support/net.ts"
import { eventually, spawnFixture } from "./support/process.ts"
import { killTaggedOnClose, newTag } from "./support/fixture.ts"
import type { Spawned } from "./support/process.ts"

interface Log {
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** The JSON log lines of the program and its workers (they share its stdout). */
const logsOf = (program: Spawned): Array<Log> =>
  program.lines.flatMap((line) => {
    if (!line.startsWith("{")) return []
    try {
      const { message, annotations } = JSON.parse(line) as Log
      return [{ message: String(message), annotations: annotations ?? {} }]
    } catch {
      return []
    }
  })

/** How many lines the primary logged with `message`, for `slot` if given. */
const logged = (program: Spawned, message: string, slot?: number) =>
  logsOf(program).filter(
    (log) =>
      log.message === message &&
      log.annotations.pid === program.pid &&
      (slot === undefined || log.annotations.slot === slot)
  ).length

/** The worker started last for `slot`, by the primary's log. */
const workerOf = (program: Spawned, slot: number): number | undefined =>
  logsOf(program)
    .filter((log) => log.message === "effect-grace: worker started" && log.annotations.slot === slot)
    .map((log) => Number(log.annotations.worker))
    .at(-1)

interface Outcome {
  readonly millis: number
  readonly answered: boolean
  readonly detail: string
}

/**
 * Requests at `perSecond`, on schedule (a late tick sends what is due), each on a new connection and bounded in
 * time, until `stop`; every one's time and outcome.
 */
const steadyRate = (url: string, perSecond: number) =>
  Effect.gen(function* () {
    const requests = yield* FiberSet.make<void>()
    const outcomes: Array<Outcome> = []
    const sending = { on: true, sent: 0 }
    const one = Effect.gen(function* () {
      const started = performance.now()
      const reply = yield* Effect.result(request(url, { timeout: "5 seconds" }))
      const millis = performance.now() - started
      outcomes.push(
        reply._tag === "Success"
          ? { millis, answered: reply.success.status === 200, detail: `status ${reply.success.status}` }
          : { millis, answered: false, detail: reply.failure.message }
      )
    })
    const began = Date.now()
    const pace = Effect.gen(function* () {
      while (sending.on) {
        const due = Math.floor(((Date.now() - began) * perSecond) / 1000)
        for (; sending.sent < due; sending.sent++) yield* FiberSet.run(requests, one)
        yield* Effect.sleep("5 millis")
      }
    })
    const pacing = yield* FiberSet.run(requests, pace)
    const stop = Effect.gen(function* () {
      sending.on = false
      yield* FiberSet.awaitEmpty(requests)
      assert.strictEqual(pacing.pollUnsafe()?._tag, "Success")
      return outcomes
    })
    return { stop, sent: () => sending.sent }
  })

/**
 * The fixture with `workers` workers; once ready, the workers of `slots` are killed and every worker started for
 * them crashes, for `deaths` deaths of each before ready, under `perSecond` new connections a second; then the
 * slots start again, and serve. Every request's outcome.
 */
const crashLoop = (workers: number, slots: ReadonlyArray<number>, deaths: number, perSecond: number) =>
  Effect.gen(function* () {
    const port = yield* freePort()
    const tag = newTag()
    yield* killTaggedOnClose(tag)
    const modeFile = Path.join(yield* tempDir, "mode")
    const program = yield* spawnFixture("supervised", [`${tag}=127.0.0.1:${port}`], {
      env: { GRACE_WORKERS: String(workers), FIXTURE_MODE_FILE: modeFile }
    })
    yield* eventually(() => logged(program, "effect-grace: ready") === 1, "the primary ready", "60 seconds")
    // From here every new worker crashes at start-up; the serving ones are killed, with no request in flight.
    Fs.writeFileSync(modeFile, "crash")
    for (const slot of slots) process.kill(workerOf(program, slot)!, "SIGKILL")
    const load = yield* steadyRate(`http://127.0.0.1:${port}/`, perSecond)
    const exitedEarly = "effect-grace: worker exited before it was ready"
    yield* eventually(
      () => slots.every((slot) => logged(program, exitedEarly, slot) >= deaths),
      `${deaths} deaths before ready of each of slots ${slots.join(", ")}`,
      "30 seconds"
    )
    Fs.writeFileSync(modeFile, "ok")
    const serving = "effect-grace: worker serving"
    yield* eventually(() => slots.every((slot) => logged(program, serving, slot) >= 1), "the slots serving again")
    const after = load.sent()
    yield* eventually(() => load.sent() >= after + perSecond / 2, "half a second more of load")
    const outcomes = yield* load.stop
    return { program, outcomes }
  })

/** No request failed, none took a second or more, and the dead slots were lent. */
const checkServed = (
  { program, outcomes }: Effect.Success<ReturnType<typeof crashLoop>>,
  slots: ReadonlyArray<number>,
  least: number
) => {
  assert.isAtLeast(outcomes.length, least, "requests sent")
  const failed = outcomes.filter((outcome) => !outcome.answered)
  assert.deepStrictEqual(failed.slice(0, 5), [], `${failed.length} of ${outcomes.length} failed`)
  const slow = outcomes.filter((outcome) => outcome.millis >= 1000).map((outcome) => Math.round(outcome.millis))
  assert.deepStrictEqual(slow, [], "none took a second or more")
  for (const slot of slots) {
    assert.isAtLeast(logged(program, "effect-grace: lending the slot's sockets to another worker", slot), 1)
  }
}

describe("a slot whose worker keeps dying", () => {
  it.live(
    "two workers, one slot crash-looping under new connections: its socket is lent; none fails, none takes 1 s",
    () =>
      Effect.gen(function* () {
        const run = yield* crashLoop(2, [1], 3, 100)
        checkServed(run, [1], 300)
      }),
    { timeout: 90_000 }
  )

  it.live(
    "four workers, two slots crash-looping: each lent to a different worker; none fails, none takes 1 s",
    () =>
      Effect.gen(function* () {
        const run = yield* crashLoop(4, [1, 2], 3, 100)
        checkServed(run, [1, 2], 300)
        const lent = logsOf(run.program).filter((log) => log.message.startsWith("effect-grace: lending"))
        const borrowers = new Set(lent.slice(0, 2).map((log) => log.annotations.to))
        assert.strictEqual(borrowers.size, 2, `the two slots' first loans went to two workers: ${JSON.stringify(lent)}`)
      }),
    { timeout: 90_000 }
  )
})
