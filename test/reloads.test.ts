/**
 * Every reload lands, with real processes: a restart asked for while another
 * is under way (a successor starting or on probation, a parent still
 * draining, a roll) is kept, at most one, and runs once that one ends, so
 * that once the restarts have settled every process that serves was started
 * after the last request. Reloads sent as each new generation first answers,
 * for one process and for workers; storms of signals; a programmatic restart
 * asked during one. Keep-alive load and load on new connections run
 * throughout, and no request may fail.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import {
  bothLoads,
  groupReady,
  logsOf,
  matching,
  sorted,
  startSingle,
  startWorkers,
  waitForLog,
  waitForLogWhere,
  workersStarted
} from "./support/fixture.ts"
import type { Log } from "./support/fixture.ts"
import { request } from "./support/http.ts"
import { freePort } from "./support/net.ts"
import { eventually, processesTagged } from "./support/process.ts"
import type { Spawned } from "./support/process.ts"

// -----------------------------------------------------------------------------
// Helpers
// -----------------------------------------------------------------------------

/** Short, to keep the tests fast: the window in which the second reload of each test arrives. */
const PROBATION_MS = 1000
const probation = { GRACE_PROBATION: `${PROBATION_MS} millis` }

/** Time for the extra steps of a restart (signals, lines of the private channel, the drain of idle connections). */
const SLACK_MS = 1000

/** One process on a free loopback port, on probation `PROBATION_MS`, under load; ready. */
const single = Effect.gen(function* () {
  const port = yield* freePort()
  const started = yield* startSingle({ specs: (tag) => [`${tag}=127.0.0.1:${port}`], env: probation })
  const url = `http://127.0.0.1:${port}/`
  const load = yield* bothLoads(url)
  yield* load.more(50)
  return { ...started, url, load }
})

/** Two workers on probation `PROBATION_MS` (the canary's), under load; ready. */
const group = Effect.gen(function* () {
  const started = yield* startWorkers({ GRACE_WORKERS: "2", ...probation })
  const load = yield* bothLoads(started.url)
  yield* load.more(50)
  return { ...started, load }
})

type Load = Effect.Success<typeof single>["load"]

/** The log lines `effect-grace: <message>` with these annotations, from line `from` on. */
const linesOf = (program: Spawned, message: string, fields: Readonly<Record<string, unknown>>, from = 0) =>
  logsOf(program, from).filter((log) => matching(log, `effect-grace: ${message}`, fields))

/** No restart refused or failed, in any process of the program. */
const noRestartFailed = (program: Spawned) =>
  assert.deepStrictEqual(
    logsOf(program)
      .filter((log) => log.message.startsWith("effect-grace: restart failed"))
      .map((log) => `${log.message} (pid ${log.annotations.pid})`),
    []
  )

/**
 * Once the restarts have settled: the processes left are `serving` and no other, every one of them started after
 * the last request (none alive just before it: `before`), and from now on `answering` answer, each of them and no
 * other; 0 failed.
 */
const settled = (
  run: { readonly tag: string; readonly load: Load },
  expected: { readonly serving: ReadonlyArray<number>; readonly answering: ReadonlyArray<number> },
  before: ReadonlyArray<number>
) =>
  Effect.gen(function* () {
    const { tag, load } = run
    yield* eventually(
      () => String(sorted(processesTagged(tag))) === String(sorted(expected.serving)),
      `only ${expected.serving.join(", ")} left`
    )
    for (const pid of expected.answering) assert.notInclude(before, pid, `pid ${pid} started after the last request`)
    // Answers the old processes sent before they exited may still be on their way to the load: 100 more first.
    yield* load.more(100)
    const after = load.mark()
    yield* eventually(
      () => expected.answering.every((pid) => load.pids(after).includes(pid)),
      `each of ${expected.answering.join(", ")} answering`
    )
    yield* load.stop
    for (const pid of load.pids(after)) assert.include(expected.answering, pid, "only the last generation answers")
    assert.deepStrictEqual(load.failures(), [], "0 failed requests")
  })

/** As `settled`, for a group: its primary stays, and the workers left are the last started for each slot since `from`. */
const groupSettled = (run: Effect.Success<typeof group>, from: number, before: ReadonlyArray<number>) =>
  Effect.gen(function* () {
    const last = workersStarted(run.program, run.primary, from)
    assert.isTrue(
      last.every((pid) => pid !== undefined),
      `a new worker in every slot: ${last.join(", ")}`
    )
    const workers = last as Array<number>
    const others = before.filter((pid) => pid !== run.primary)
    yield* settled(run, { serving: [run.primary, ...workers], answering: workers }, others)
  })

/** Waits for a pid none of `known` that answered since `mark`: a new generation, or a new worker, serving. */
const newAnswer = (load: Load, mark: ReturnType<Load["mark"]>, known: ReadonlyArray<number>, what: string) =>
  eventually(() => load.pids(mark).find((pid) => !known.includes(pid)), what)

/** The generation systemd names (`MAINPID`): the one before the newest, until it has handed off (`restarted`). */
const mainPid = (program: Spawned, generations: ReadonlyArray<number>): number => {
  const before = generations.at(-2)
  const handedOff = before !== undefined && linesOf(program, "restarted", { pid: before, kind: "upgrade" }).length > 0
  return before === undefined || handedOff ? generations.at(-1)! : before
}

/** 30 signals to `pid`, 10 ms apart: within a second. When the first was sent (ms since the epoch). */
const storm = (pid: number, signal: NodeJS.Signals) =>
  Effect.gen(function* () {
    const signalled = Date.now()
    for (let i = 0; i < 30; i++) {
      process.kill(pid, signal)
      yield* Effect.sleep("10 millis")
    }
    assert.isBelow(Date.now() - signalled, 1000, "30 signals within a second")
    return signalled
  })

/** From a start to the `ready` of the process it started, in ms: a start-up, as the logs say it. */
const startup = (program: Spawned, from: Log, pid: number) => {
  const ready = linesOf(program, "ready", { pid })[0]
  assert.isDefined(ready, `pid ${pid} ready`)
  return ready!.at - from.at
}

// -----------------------------------------------------------------------------
// Tests
// -----------------------------------------------------------------------------

describe("Reloads", () => {
  // A deploy tool signals the newest generation; systemd's `kill -USR2 $MAINPID` the one before it until the hand-off.
  for (const target of ["the newest generation", "the process systemd names (the one before, on probation)"] as const) {
    it.live(
      `one process: SIGUSR2 to ${target} each time a new generation first answers, 3 times: the last serves alone`,
      () =>
        Effect.gen(function* () {
          const run = yield* single
          const { fixture, tag, first, load } = run
          const generations = [first.pid]
          let before: Array<number> = []
          for (let i = 1; i <= 3; i++) {
            const mark = load.mark()
            before = processesTagged(tag)
            process.kill(
              target === "the newest generation" ? generations.at(-1)! : mainPid(fixture, generations),
              "SIGUSR2"
            )
            generations.push(yield* newAnswer(load, mark, generations, `generation ${i + 1} answering`))
          }
          const last = generations.at(-1)!
          yield* settled(run, { serving: [last], answering: [last] }, before)
          assert.strictEqual(new Set(generations).size, 4, `four generations: ${generations.join(", ")}`)
          noRestartFailed(fixture)
        }),
      { timeout: 40_000 }
    )
  }

  for (const moment of ["the canary answers, on probation", "the roll has moved on to the next slot"] as const) {
    it.live(
      `workers: SIGHUP, and SIGHUP again once ${moment}: the kept roll runs next, every worker left started after it`,
      () =>
        Effect.gen(function* () {
          const run = yield* group
          const { program, primary, workers, tag, load } = run
          const from = program.lines.length
          const mark = load.mark()
          process.kill(primary, "SIGHUP")
          if (moment === "the canary answers, on probation") {
            const canary = yield* newAnswer(load, mark, workers, "the canary answering")
            yield* waitForLog(program, from, "effect-grace: drain started", { pid: workers[0] })
            assert.strictEqual(workersStarted(program, primary, from)[0], canary)
            assert.deepStrictEqual(
              linesOf(program, "rolling worker", { pid: primary, slot: 1 }, from),
              [],
              "on probation"
            )
          } else {
            yield* waitForLog(program, from, "effect-grace: rolling worker", { pid: primary, slot: 1 })
          }
          const before = processesTagged(tag)
          process.kill(primary, "SIGHUP")
          const queued = yield* waitForLog(program, from, "effect-grace: restart queued", { pid: primary })
          assert.strictEqual(queued.annotations.waitingFor, "the roll under way")
          yield* eventually(
            () => linesOf(program, "restarted", { pid: primary, kind: "roll" }, from).length === 2,
            "the roll under way, then the one kept"
          )
          yield* groupSettled(run, from, before)
          assert.lengthOf(linesOf(program, "worker started", { pid: primary }, from), 4, "two rolls of two, no more")
          noRestartFailed(program)
        }),
      { timeout: 40_000 }
    )
  }

  it.live(
    "a storm of 30 SIGUSR2 within a second: one restart under way and one kept; one process serves after two start-ups",
    () =>
      Effect.gen(function* () {
        const run = yield* single
        const { fixture, first } = run
        const signalled = yield* storm(first.pid, "SIGUSR2")
        const before = processesTagged(run.tag)
        const began = yield* waitForLog(fixture, 0, "effect-grace: restart started", { pid: first.pid })
        // At the hand-off, the restart kept goes to the successor, which runs it at once.
        const handed = yield* waitForLog(fixture, 0, "effect-grace: restart passed on", { pid: first.pid })
        const middle = Number(handed.annotations.successor)
        const again = yield* waitForLog(fixture, 0, "effect-grace: restart started", { pid: middle })
        const done = yield* waitForLog(fixture, 0, "effect-grace: restarted", { pid: middle, kind: "upgrade" })
        const last = Number(done.annotations.successor)
        yield* settled(run, { serving: [last], answering: [last] }, before)

        // The kernel merges signals still pending together: each one heard beyond the first joined the one kept.
        const requested = linesOf(fixture, "restart requested", { pid: first.pid }).length
        assert.isAtLeast(requested, 2, "signals 10 ms apart are not all merged")
        assert.lengthOf(linesOf(fixture, "restart queued", { pid: first.pid }), requested - 1, "every one kept")
        assert.lengthOf(linesOf(fixture, "restart started", {}), 2, "two restarts: the first, and the one kept")
        assert.lengthOf(linesOf(fixture, "restart requested", { pid: middle }), 1, "one passed on")
        assert.lengthOf(linesOf(fixture, "restart requested", { pid: last }), 0)
        // The last serves alone (its predecessor paused) once ready: a probation and two start-ups from the signal.
        const alone = linesOf(fixture, "ready", { pid: last })[0]!.at - signalled
        const bound = PROBATION_MS + startup(fixture, began, middle) + startup(fixture, again, last) + SLACK_MS
        assert.isAtMost(alone, bound, "one process serves within a probation and two start-ups")
        noRestartFailed(fixture)
      }),
    { timeout: 40_000 }
  )

  it.live(
    "a storm of 30 SIGHUP within a second to a primary: one roll under way and one kept; one group serves after two",
    () =>
      Effect.gen(function* () {
        const run = yield* group
        const { program, primary } = run
        const signalled = yield* storm(primary, "SIGHUP")
        const before = processesTagged(run.tag)
        yield* eventually(
          () => linesOf(program, "restarted", { pid: primary, kind: "roll" }).length === 2,
          "two rolls done"
        )
        yield* groupSettled(run, 0, before)
        const requested = linesOf(program, "rolling restart requested", { pid: primary }).length
        assert.isAtLeast(requested, 2, "signals 10 ms apart are not all merged")
        assert.lengthOf(linesOf(program, "restart queued", { pid: primary }), requested - 1, "every one kept")
        const started = linesOf(program, "worker started", { pid: primary }).slice(2)
        assert.lengthOf(started, 4, "two rolls of two workers, no more")
        // Each roll: the canary's start-up and probation, then the other slot's start-up; nothing waits for more.
        const startups = started.map((line) => startup(program, line, Number(line.annotations.worker)))
        const second = linesOf(program, "restarted", { pid: primary, kind: "roll" })[1]!
        const bound = 2 * PROBATION_MS + startups.reduce((a, b) => a + b, 0) + SLACK_MS
        assert.isAtMost(second.at - signalled, bound, "two rolls, each one probation and a start-up per slot")
        noRestartFailed(program)
      }),
    { timeout: 40_000 }
  )

  it.live(
    "a storm of 30 SIGUSR2 within a second to a primary: one upgrade under way and one kept; one group serves after two",
    () =>
      Effect.gen(function* () {
        const run = yield* group
        const { program, primary } = run
        const signalled = yield* storm(primary, "SIGUSR2")
        const before = processesTagged(run.tag)
        const began = yield* waitForLog(program, 0, "effect-grace: restart started", { pid: primary })
        const handed = yield* waitForLog(program, 0, "effect-grace: restart passed on", { pid: primary })
        const middle = Number(handed.annotations.successor)
        const again = yield* waitForLog(program, 0, "effect-grace: restart started", { pid: middle })
        const done = yield* waitForLog(program, 0, "effect-grace: restarted", { pid: middle, kind: "upgrade" })
        const last = Number(done.annotations.successor)
        const workers = yield* groupReady(program, last, 0)
        yield* settled(run, { serving: [last, ...workers], answering: workers }, before)
        const requested = linesOf(program, "restart requested", { pid: primary }).length
        assert.isAtLeast(requested, 2, "signals 10 ms apart are not all merged")
        assert.lengthOf(linesOf(program, "restart queued", { pid: primary }), requested - 1, "every one kept")
        assert.lengthOf(linesOf(program, "restart started", {}), 2, "two upgrades: the first, and the one kept")
        // The last group serves alone (the one before paused) once ready: a probation and two start-ups.
        const alone = linesOf(program, "ready", { pid: last })[0]!.at - signalled
        const bound = PROBATION_MS + startup(program, began, middle) + startup(program, again, last) + SLACK_MS
        assert.isAtMost(alone, bound, "one group serves within a probation and two start-ups")
        noRestartFailed(program)
      }),
    { timeout: 40_000 }
  )

  it.live(
    "a programmatic restart asked during a restart completes with the outcome of the restart that covers it",
    () =>
      Effect.gen(function* () {
        const run = yield* single
        const { fixture, first, url } = run
        process.kill(first.pid, "SIGUSR2")
        yield* waitForLog(fixture, 0, "effect-grace: restart started", { pid: first.pid })
        const before = processesTagged(run.tag)
        // On a new connection: the process that accepts it (the first, or its successor once it listens) keeps it.
        const reply = yield* request(`${url}restart`, { method: "POST", timeout: "20 seconds" })
        assert.strictEqual(reply.status, 200, reply.body)
        const last = Number(reply.body.match(/^restarted (\d+)\n$/)?.[1])
        const underWay = yield* waitForLog(fixture, 0, "effect-grace: successor ready", { pid: first.pid })
        assert.notStrictEqual(last, Number(underWay.annotations.successor), "not the outcome of the one under way")
        // The restart kept: the successor of the one under way, restarted once more; its end is the caller's answer.
        yield* waitForLogWhere(fixture, 0, `the restart to ${last} done`, (log) =>
          matching(log, "effect-grace: restarted", { successor: last })
        )
        yield* settled(run, { serving: [last], answering: [last] }, before)
        assert.lengthOf(linesOf(fixture, "restart started", {}), 2, "the restart under way, then the one kept")
        noRestartFailed(fixture)
      }),
    { timeout: 40_000 }
  )

  it.live(
    "a worker's restart asked during a roll is answered at once with its primary's pid; the roll it asks runs next",
    () =>
      Effect.gen(function* () {
        const run = yield* group
        const { program, primary, tag, url } = run
        const from = program.lines.length
        process.kill(primary, "SIGHUP")
        yield* waitForLog(program, from, "effect-grace: rolling worker", { pid: primary, slot: 0 })
        const before = processesTagged(tag)
        const reply = yield* request(`${url}restart`, { method: "POST" })
        assert.strictEqual(reply.body, `restarted ${primary}\n`)
        const queued = yield* waitForLog(program, from, "effect-grace: restart queued", { pid: primary })
        assert.strictEqual(queued.annotations.waitingFor, "the roll under way")
        yield* eventually(
          () => linesOf(program, "restarted", { pid: primary, kind: "roll" }, from).length === 2,
          "the roll under way, then the one asked"
        )
        yield* groupSettled(run, from, before)
        noRestartFailed(program)
      }),
    { timeout: 40_000 }
  )
})
