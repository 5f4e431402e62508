/**
 * Workers with real processes (`GRACE_WORKERS=2`): the primary holds the
 * sockets and never answers, its workers do; SIGHUP rolls them one slot at a
 * time, SIGUSR2 replaces the primary and its group, a worker killed is
 * replaced, SIGTERM drains them all; as PID 1 of a PID namespace and under
 * systemd-socket-activate too. The signals are sent under keep-alive load and
 * load on new connections, counting every failed request, or while slow
 * requests are in flight on the workers that must drain them.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { keepAliveAgent, keepAliveLoad, request, steadyLoad } from "./support/http.ts"
import type { Reply } from "./support/http.ts"
import { tempDir } from "./support/fs.ts"
import { freePort } from "./support/net.ts"
import { eventually, isAlive, nodePath, processesTagged, spawnFixture, spawnProcess } from "./support/process.ts"
import type { Spawned } from "./support/process.ts"

// -----------------------------------------------------------------------------
// Helpers
// -----------------------------------------------------------------------------

const WORKERS = 2

const fixturePath = new URL("./fixtures/supervised.ts", import.meta.url).pathname

/** Small: a roll of two slots takes two probations. */
const workersEnv = { GRACE_WORKERS: String(WORKERS), GRACE_PROBATION: "200 millis" }

const pidOf = (reply: Reply): number => {
  const match = reply.body.match(/pid (\d+)/)
  assert.isNotNull(match, `a pid in ${JSON.stringify(reply.body)}`)
  return Number(match![1])
}

interface Log {
  readonly message: string
  readonly level: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** The JSON log lines a program (and every process that shares its stdout) printed, from line `from` on. */
const logsOf = (program: Spawned, from = 0): Array<Log> =>
  program.lines.slice(from).flatMap((line) => {
    if (!line.startsWith("{")) return []
    try {
      const { message, level, annotations } = JSON.parse(line) as Log
      return [{ message: String(message), level, annotations: annotations ?? {} }]
    } catch {
      return []
    }
  })

const matching = (log: Log, message: string, fields: Readonly<Record<string, unknown>>) =>
  log.message === message && Object.entries(fields).every(([key, value]) => log.annotations[key] === value)

/** Waits, bounded, for a log line from line `from` on that `where` accepts; `what` names it in a timeout. */
const waitForLogWhere = (program: Spawned, from: number, what: string, where: (log: Log) => boolean) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 15_000
    while (true) {
      const found = logsOf(program, from).find(where)
      if (found !== undefined) return found
      if (Date.now() > deadline) {
        return yield* Effect.die(
          new Error(
            `no log ${what} from line ${from} within 15 s; output:\n` +
              `${program.lines.join("\n")}\nstderr:\n${program.errors.join("\n")}`
          )
        )
      }
      yield* Effect.sleep("20 millis")
    }
  })

/** Waits, bounded, for a log line from line `from` on with `message` and these annotations. */
const waitForLog = (program: Spawned, from: number, message: string, fields: Readonly<Record<string, unknown>> = {}) =>
  waitForLogWhere(program, from, `"${message}" ${JSON.stringify(fields)}`, (log) => matching(log, message, fields))

const sorted = (pids: Iterable<number>): Array<number> => [...pids].toSorted((a, b) => a - b)

/** The workers `primary` started from line `from` on, by slot: the last started for each. */
const workersStarted = (program: Spawned, primary: number, from: number): Array<number | undefined> => {
  const bySlot: Array<number | undefined> = Array.from({ length: WORKERS }, () => undefined)
  for (const log of logsOf(program, from)) {
    if (matching(log, "effect-grace: worker started", { pid: primary })) {
      bySlot[Number(log.annotations.slot)] = Number(log.annotations.worker)
    }
  }
  return bySlot
}

/** Waits until `primary` is ready (every slot serves) from line `from` on; its workers, by slot. */
const groupReady = (program: Spawned, primary: number, from: number) =>
  Effect.gen(function* () {
    const ready = yield* waitForLog(program, from, "effect-grace: ready", { pid: primary })
    assert.isUndefined(ready.annotations.slot, "the primary's own ready")
    const workers = workersStarted(program, primary, from)
    assert.isTrue(
      workers.every((pid) => pid !== undefined),
      `a worker for every slot: ${workers.join(", ")}`
    )
    return workers as Array<number>
  })

/** Sends SIGHUP and waits until every slot has rolled; the new workers, by slot. */
const roll = (program: Spawned, primary: number, signalled: number = primary) =>
  Effect.gen(function* () {
    const from = program.lines.length
    process.kill(signalled, "SIGHUP")
    yield* waitForLog(program, from, "effect-grace: rolling restart requested", { pid: primary, by: "SIGHUP" })
    yield* waitForLog(program, from, "effect-grace: workers restarted", { pid: primary })
    const workers = workersStarted(program, primary, from)
    assert.isTrue(
      workers.every((pid) => pid !== undefined),
      `every slot rolled: ${workers.join(", ")}`
    )
    return workers as Array<number>
  })

const gone = (pid: number) => eventually(() => !isAlive(pid), `pid ${pid} to exit`)

/** A tag for a test's program, in its arguments: every process of it (primaries, workers) carries it. */
const newTag = () => `w${process.pid}x${Math.random().toString(36).slice(2, 10)}`

/** When the scope closes, pass or fail: every process of the program is killed. */
const killTaggedOnClose = (tag: string) =>
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

/** The supervised fixture with workers on a free loopback port, ready: the primary is this test's child. */
const startWorkers = (env: Readonly<Record<string, string>> = {}) =>
  Effect.gen(function* () {
    const port = yield* freePort()
    const tag = newTag()
    yield* killTaggedOnClose(tag)
    const program = yield* spawnFixture("supervised", [`${tag}=127.0.0.1:${port}`], { env: { ...workersEnv, ...env } })
    const workers = yield* groupReady(program, program.pid, 0)
    return { port, tag, program, primary: program.pid, workers, url: `http://127.0.0.1:${port}/` }
  })

/**
 * Samples, every few milliseconds until stopped, how many processes of the program are alive (zombies are not); the
 * most seen at once, and which.
 */
const sampleProcesses = (tag: string) =>
  Effect.gen(function* () {
    const sampling = { on: true }
    const most = { count: 0, pids: [] as Array<number> }
    const fiber = yield* Effect.forkChild(
      Effect.gen(function* () {
        while (sampling.on) {
          const pids = processesTagged(tag)
          if (pids.length > most.count) Object.assign(most, { count: pids.length, pids })
          yield* Effect.sleep("5 millis")
        }
      })
    )
    const stop = Effect.andThen(
      Effect.sync(() => void (sampling.on = false)),
      Fiber.join(fiber)
    )
    return { most, stop }
  })

/**
 * Slow requests (`/sleep?ms=millis`), each on a new connection, until every one of `pids` holds one; their replies.
 * Only the drains of the workers that hold them take long.
 */
const holdOnEach = (program: Spawned, url: string, pids: ReadonlyArray<number>, millis: number) =>
  Effect.gen(function* () {
    const from = program.lines.length
    const arrived = () => program.lines.slice(from).filter((line) => line.startsWith("sleeping "))
    const holding = () => pids.every((pid) => arrived().includes(`sleeping ${pid}`))
    const replies: Array<Fiber.Fiber<Reply, Error>> = []
    for (let i = 0; i < 16 && !holding(); i++) {
      replies.push(yield* Effect.forkChild(request(`${url}sleep?ms=${millis}`, { timeout: "30 seconds" })))
      yield* eventually(() => arrived().length >= replies.length, "the slow request to arrive")
    }
    assert.isTrue(holding(), `a slow request on each of ${pids.join(", ")}: ${arrived().join(", ")}`)
    return replies
  })

interface Mark {
  readonly keptAlive: number
  readonly fresh: number
}

/** Keep-alive load on four connections and load on new connections (two clients), on `url`. */
const bothLoads = (url: string) =>
  Effect.gen(function* () {
    const keepAlive = yield* keepAliveLoad([url, url, url, url])
    const fresh = yield* steadyLoad(url, 2)
    const answered = () => keepAlive.answers.length + fresh.outcomes.length
    /** Where the load is now: `pids(mark)` is every pid that answered since. */
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

interface Answer {
  readonly pid: number
  /** The client's port: its connection. */
  readonly port: number
}

interface Client {
  readonly answers: Array<Answer>
  /** Each failure, with the connection that last answered this client (the one the request went on, if kept). */
  readonly failures: Array<{ readonly message: string; readonly on: Answer | undefined }>
}

/** Keep-alive clients added one at a time, each on its own connection, each recording what answered it. */
const keepAliveClients = (url: string) => {
  const sending = { on: true }
  const clients: Array<Client> = []
  const fibers: Array<Fiber.Fiber<void>> = []
  const add = Effect.gen(function* () {
    const agent = yield* keepAliveAgent()
    const client: Client = { answers: [], failures: [] }
    clients.push(client)
    const loop = Effect.gen(function* () {
      while (sending.on) {
        const reply = yield* Effect.result(request(url, { agent }))
        if (reply._tag === "Success") client.answers.push({ pid: pidOf(reply.success), port: reply.success.localPort })
        else client.failures.push({ message: reply.failure.message, on: client.answers.at(-1) })
      }
    })
    fibers.push(yield* Effect.forkChild(loop))
    yield* eventually(() => client.answers.length > 0 || client.failures.length > 0, "a first answer")
  })
  /** The pid each client's connection is on now: the last that answered it. */
  const current = () => clients.map((client) => client.answers.at(-1)?.pid)
  const stop = Effect.andThen(
    Effect.sync(() => void (sending.on = false)),
    Effect.forEach(fibers, Fiber.join, { discard: true })
  )
  return { clients, add, current, stop }
}

/** The pid, outside, of the init of the PID namespace that `unshare` made: its child. */
const initOf = (unshare: number) =>
  eventually(() => {
    const children = Fs.readFileSync(`/proc/${unshare}/task/${unshare}/children`, "utf8").trim()
    return children === "" ? undefined : Number(children.split(" ")[0])
  }, "the namespace's init")

// -----------------------------------------------------------------------------
// Tests
// -----------------------------------------------------------------------------

describe("Workers", () => {
  it.live(
    "both workers answer, on new and on kept-alive connections; the primary never does",
    () =>
      Effect.gen(function* () {
        const { primary, workers, url } = yield* startWorkers()
        assert.strictEqual(new Set(workers).size, WORKERS)
        assert.notInclude(workers, primary)

        // New connections, a few at a time, until both workers have answered: bounded.
        const seen = new Set<number>()
        for (let round = 0; round < 50 && seen.size < WORKERS; round++) {
          const replies = yield* Effect.forEach(Array.from({ length: 4 }), () => request(url), { concurrency: 4 })
          for (const reply of replies) seen.add(pidOf(reply))
        }
        assert.deepStrictEqual(sorted(seen), sorted(workers), "both workers, and only they, answer")

        // Each worker says it is one, of this primary, in its slot.
        const bodies = new Set<string>()
        for (let round = 0; round < 50 && bodies.size < WORKERS; round++) {
          const replies = yield* Effect.forEach(Array.from({ length: 4 }), () => request(`${url}worker`), {
            concurrency: 4
          })
          for (const reply of replies) bodies.add(reply.body)
        }
        assert.deepStrictEqual(
          [...bodies].toSorted(),
          workers.map((pid, slot) => `worker ${slot} of ${primary} pid ${pid}\n`).toSorted()
        )

        // Kept-alive connections: each is answered by one worker throughout, never by the primary.
        const agents = yield* Effect.forEach(Array.from({ length: 6 }), () => keepAliveAgent())
        const answers = yield* Effect.forEach(
          agents,
          (agent) => Effect.forEach(Array.from({ length: 20 }), () => request(url, { agent })),
          { concurrency: "unbounded" }
        )
        for (const replies of answers) {
          assert.strictEqual(new Set(replies.map((reply) => reply.localPort)).size, 1, "one connection")
          assert.strictEqual(new Set(replies.map(pidOf)).size, 1, "one worker per connection")
        }
        for (const pid of answers.flat().map(pidOf)) assert.include(workers, pid)
      }),
    { timeout: 30_000 }
  )

  it.live(
    "SIGHUP x3 under load: every worker replaced each time, the primary stays, 0 failed",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers, url, tag } = yield* startWorkers()
        const load = yield* bothLoads(url)
        yield* load.more(200)
        const every = new Set(workers)
        let current = workers
        for (let round = 1; round <= 3; round++) {
          const next = yield* roll(program, primary)
          for (const pid of next) {
            assert.notInclude(current, pid, `round ${round}: a new worker in every slot`)
            assert.isFalse(every.has(pid), `round ${round}: a worker never seen before`)
            every.add(pid)
          }
          // The old ones drain and exit.
          yield* Effect.forEach(current, gone, { discard: true })
          assert.isTrue(isAlive(primary), `round ${round}: the primary stays`)
          current = next
          yield* load.more(100)
        }
        // Only the last workers answer now, and both do.
        const after = load.mark()
        yield* eventually(() => current.every((pid) => load.pids(after).includes(pid)), "both new workers answering")
        yield* load.stop
        assert.deepStrictEqual(load.failures(), [])
        for (const pid of load.pids(after)) assert.include(current, pid)
        for (const pid of load.pids()) assert.isTrue(every.has(pid), `pid ${pid} is a worker`)
        assert.isAtLeast(load.answered(), 500)
        assert.deepStrictEqual(sorted(processesTagged(tag)), sorted([primary, ...current]))
      }),
    { timeout: 60_000 }
  )

  it.live(
    "SIGHUP while the old workers drain slow requests: never more than N + 2 processes alive (surge 1)",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers, url, tag } = yield* startWorkers()
        // Longer than a roll takes: each old worker drains for seconds after it is told to.
        const slow = yield* holdOnEach(program, url, workers, 5000)
        const sampler = yield* sampleProcesses(tag)
        const next = yield* roll(program, primary)
        yield* Effect.forEach(workers, gone, { discard: true })
        yield* sampler.stop
        for (const reply of yield* Effect.forEach(slow, Fiber.join)) assert.strictEqual(reply.status, 200)
        assert.deepStrictEqual(sorted(processesTagged(tag)), sorted([primary, ...next]))
        assert.isAtMost(
          sampler.most.count,
          WORKERS + 2,
          `the primary, ${WORKERS} workers and one more (surge 1) at most; seen at once: ` +
            `${sampler.most.pids.join(", ")} (primary ${primary}, old ${workers.join(", ")}, new ${next.join(", ")})`
        )
      }),
    { timeout: 30_000 }
  )

  it.live(
    "a rolling restart whose new worker fails to start stops there: the old workers serve on, 0 failed",
    () =>
      Effect.gen(function* () {
        const modeFile = Path.join(yield* tempDir, "mode")
        const { program, primary, workers, url, tag } = yield* startWorkers({ FIXTURE_MODE_FILE: modeFile })
        const load = yield* bothLoads(url)
        yield* load.more(200)
        Fs.writeFileSync(modeFile, "crash")
        const from = program.lines.length
        const after = load.mark()
        process.kill(primary, "SIGHUP")
        const warning = yield* waitForLogWhere(program, from, "a warning", (log) => log.level === "WARN")
        assert.strictEqual(warning.annotations.reason, "ExitedBeforeReady", warning.message)
        assert.strictEqual(warning.annotations.pid, primary)
        yield* load.more(200)
        // Mended, the next roll goes through.
        Fs.writeFileSync(modeFile, "ok")
        const next = yield* roll(program, primary)
        for (const pid of next) assert.notInclude(workers, pid)
        yield* Effect.forEach(workers, gone, { discard: true })
        yield* load.stop
        assert.deepStrictEqual(load.failures(), [])
        for (const pid of load.pids(after)) assert.include([...workers, ...next], pid)
        assert.deepStrictEqual(sorted(processesTagged(tag)), sorted([primary, ...next]))
      }),
    { timeout: 30_000 }
  )

  it.live(
    "a new worker that dies on probation hands its slot back: the old worker accepts again, the roll stops",
    () =>
      Effect.gen(function* () {
        const modeFile = Path.join(yield* tempDir, "mode")
        const { program, primary, workers, url, tag } = yield* startWorkers({
          FIXTURE_MODE_FILE: modeFile,
          // Long enough that the new worker dies within it, on a loaded machine.
          GRACE_PROBATION: "10 seconds"
        })
        Fs.writeFileSync(modeFile, "die:1500")
        const from = program.lines.length
        process.kill(primary, "SIGHUP")
        const started = yield* waitForLog(program, from, "effect-grace: worker started", { pid: primary, slot: 0 })
        const doomed = Number(started.annotations.worker)
        // On probation, the new worker serves and the old one of its slot is paused.
        yield* waitForLog(program, from, "effect-grace: drain started", { pid: workers[0] })
        const warning = yield* waitForLogWhere(program, from, "a warning", (log) => log.level === "WARN")
        assert.strictEqual(warning.annotations.reason, "HandedBack", warning.message)
        yield* gone(doomed)
        // The old worker of slot 0 accepts again: new connections reach both old workers, and only them.
        const seen = new Set<number>()
        for (let round = 0; round < 50 && seen.size < WORKERS; round++) {
          const replies = yield* Effect.forEach(Array.from({ length: 4 }), () => request(url), { concurrency: 4 })
          for (const reply of replies) seen.add(pidOf(reply))
        }
        assert.deepStrictEqual(sorted(seen), sorted(workers))
        assert.deepStrictEqual(workersStarted(program, primary, from), [doomed, undefined], "slot 1 not begun")
        assert.deepStrictEqual(sorted(processesTagged(tag)), sorted([primary, ...workers]))
      }),
    { timeout: 30_000 }
  )

  it.live(
    "SIGUSR2 under load: a new primary with new workers, the old primary exits 0 after its workers, 0 failed",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers, url, tag } = yield* startWorkers()
        const load = yield* bothLoads(url)
        yield* load.more(200)
        const from = program.lines.length
        process.kill(primary, "SIGUSR2")
        const ready = yield* waitForLog(program, from, "effect-grace: successor ready", { pid: primary })
        const successor = Number(ready.annotations.successor)
        assert.notStrictEqual(successor, primary)
        const next = yield* groupReady(program, successor, from)
        for (const pid of next) assert.notInclude(workers, pid)
        // Within the probation the old group is paused: the new one answers.
        const exit = yield* program.exited()
        assert.deepStrictEqual(exit, { code: 0, signal: null })
        yield* Effect.forEach(workers, gone, { discard: true })
        const after = load.mark()
        yield* eventually(() => next.every((pid) => load.pids(after).includes(pid)), "both new workers answering")
        yield* load.stop
        assert.deepStrictEqual(load.failures(), [])
        for (const pid of load.pids(after)) assert.include(next, pid)
        for (const pid of load.pids()) assert.include([...workers, ...next], pid)
        assert.deepStrictEqual(sorted(processesTagged(tag)), sorted([successor, ...next]))
      }),
    { timeout: 60_000 }
  )

  it.live(
    "SIGUSR2 while the old workers serve slow requests: they finish, the old primary exits 0 after its workers",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers, url, tag } = yield* startWorkers()
        const slow = yield* holdOnEach(program, url, workers, 3000)
        const from = program.lines.length
        process.kill(primary, "SIGUSR2")
        const ready = yield* waitForLog(program, from, "effect-grace: successor ready", { pid: primary })
        const successor = Number(ready.annotations.successor)
        const next = yield* groupReady(program, successor, from)
        const exit = yield* program.exited()
        const aliveAtExit = workers.filter(isAlive)
        const replies = yield* Effect.forEach(slow, (fiber) => Effect.result(Fiber.join(fiber)))
        const cut = replies.flatMap((reply) => (reply._tag === "Failure" ? [reply.failure.message] : []))
        assert.deepStrictEqual(cut, [], "every slow request on an old worker is answered")
        assert.deepStrictEqual(exit, { code: 0, signal: null })
        assert.deepStrictEqual(aliveAtExit, [], "no old worker alive when the old primary has exited")
        assert.deepStrictEqual(sorted(processesTagged(tag)), sorted([successor, ...next]))
      }),
    { timeout: 30_000 }
  )

  it.live(
    "kill -9 of a worker under load: replaced at once; no request on the other worker fails",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers, url } = yield* startWorkers()
        const [victim, survivor] = workers as [number, number]
        const load = keepAliveClients(url)
        // Connections on both workers: more clients until each has some (each connection stays on one worker).
        for (let i = 0; i < 4; i++) yield* load.add
        for (let i = 0; i < 16 && !workers.every((pid) => load.current().includes(pid)); i++) yield* load.add
        assert.includeMembers(load.current(), workers, "connections on both workers")

        const from = program.lines.length
        const onVictim = yield* Effect.sync(() => {
          const clients = load.current().filter((pid) => pid === victim).length
          process.kill(victim, "SIGKILL")
          return clients
        })
        yield* waitForLog(program, from, "effect-grace: worker died", { pid: primary, slot: 0, signal: "SIGKILL" })
        const started = yield* waitForLog(program, from, "effect-grace: worker started", { pid: primary, slot: 0 })
        const replacement = Number(started.annotations.worker)
        yield* waitForLog(program, from, "effect-grace: ready", { pid: replacement })
        // New connections reach the replacement.
        const seen = new Set<number>()
        for (let round = 0; round < 50 && !seen.has(replacement); round++) {
          const replies = yield* Effect.forEach(Array.from({ length: 4 }), () => request(url), { concurrency: 4 })
          for (const reply of replies) seen.add(pidOf(reply))
        }
        assert.isTrue(seen.has(replacement), "the replacement answers")
        yield* load.stop

        const failures = load.clients.flatMap((client) => client.failures)
        const elsewhere = failures.filter((failure) => failure.on?.pid !== victim)
        assert.deepStrictEqual(elsewhere, [], "no failure but on the killed worker's connections")
        assert.isAtMost(failures.length, onVictim, "at most one failure per connection on the killed worker")
        for (const pid of load.clients.flatMap((client) => client.answers.map((answer) => answer.pid))) {
          assert.include([victim, survivor, replacement], pid)
        }
        assert.isTrue(isAlive(survivor), "the other worker serves on")
        assert.deepStrictEqual(workersStarted(program, primary, from), [replacement, undefined])
      }),
    { timeout: 30_000 }
  )

  it.live(
    "SIGTERM: a request in flight finishes, every worker drains and exits, the primary exits 0 last",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers, url, tag } = yield* startWorkers()
        const slow = yield* Effect.forkChild(request(`${url}sleep?ms=1000`))
        const sleeping = yield* program.waitForLine(/^sleeping (\d+)$/)
        assert.include(workers, Number(sleeping[1]))
        const from = program.lines.length
        process.kill(primary, "SIGTERM")
        const reply = yield* Fiber.join(slow)
        assert.strictEqual(reply.status, 200)
        assert.strictEqual(reply.body, `slept 1000 from pid ${sleeping[1]}\n`)
        const exit = yield* program.exited()
        assert.deepStrictEqual(exit, { code: 0, signal: null })
        // The primary waited for its workers: when it has exited, they have too.
        for (const pid of [primary, ...workers]) assert.isFalse(isAlive(pid), `pid ${pid} gone`)
        assert.deepStrictEqual(processesTagged(tag), [])
        for (const pid of workers) {
          const stopped = logsOf(program, from).find((log) => matching(log, "effect-grace: stopped", { pid }))
          assert.isDefined(stopped, `worker ${pid} drained and stopped`)
        }
      }),
    { timeout: 30_000 }
  )

  it.live(
    "a second SIGTERM during the drain ends the primary and every worker at once",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers, url, tag } = yield* startWorkers()
        // Longer than the fixture's drain timeout (10 s): only the second signal ends these drains early.
        const stuck = yield* holdOnEach(program, url, workers, 20_000)
        const from = program.lines.length
        process.kill(primary, "SIGTERM")
        for (const pid of workers) yield* waitForLog(program, from, "effect-grace: draining", { pid })
        const secondAt = Date.now()
        process.kill(primary, "SIGTERM")
        const exit = yield* program.exited("10 seconds")
        yield* eventually(() => processesTagged(tag).length === 0, "every worker gone", "5 seconds")
        assert.isBelow(Date.now() - secondAt, 5000, "well before the drain timeout")
        assert.notDeepEqual(exit, { code: 0, signal: null }, "a forced end is not a graceful one")
        for (const reply of yield* Effect.forEach(stuck, (fiber) => Effect.result(Fiber.join(fiber)))) {
          assert.strictEqual(reply._tag, "Failure", "the requests in flight were cut")
        }
      }),
    { timeout: 30_000 }
  )

  it.live(
    "kill -9 of the primary: its workers finish their requests, drain and exit",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers, url, tag } = yield* startWorkers()
        const slow = yield* holdOnEach(program, url, workers, 1500)
        process.kill(primary, "SIGKILL")
        assert.deepStrictEqual(yield* program.exited(), { code: null, signal: "SIGKILL" })
        for (const reply of yield* Effect.forEach(slow, Fiber.join)) assert.strictEqual(reply.status, 200)
        yield* Effect.forEach(workers, gone, { discard: true })
        for (const pid of workers) {
          const stopped = logsOf(program).find((log) => matching(log, "effect-grace: stopped", { pid }))
          assert.isDefined(stopped, `worker ${pid} drained and stopped`)
        }
        assert.deepStrictEqual(processesTagged(tag), [])
      }),
    { timeout: 30_000 }
  )

  it.live(
    "SIGTERM while rolled-out workers still drain slow requests: the requests finish, the primary exits 0 last",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers, url, tag } = yield* startWorkers()
        const slow = yield* holdOnEach(program, url, workers, 4000)
        const next = yield* roll(program, primary)
        // The last slot's old worker drains its slow request still (the roll is over once its probation is).
        yield* waitForLog(program, 0, "effect-grace: draining", { pid: workers[1] })
        process.kill(primary, "SIGTERM")
        const exit = yield* program.exited()
        const aliveAtExit = [...workers, ...next].filter(isAlive)
        const replies = yield* Effect.forEach(slow, (fiber) => Effect.result(Fiber.join(fiber)))
        const cut = replies.flatMap((reply) => (reply._tag === "Failure" ? [reply.failure.message] : []))
        assert.deepStrictEqual(cut, [], "every slow request on a rolled-out worker is answered")
        assert.deepStrictEqual(exit, { code: 0, signal: null })
        assert.deepStrictEqual(aliveAtExit, [], "no worker alive when the primary has exited")
        for (const pid of workers) {
          const stopped = logsOf(program).find((log) => matching(log, "effect-grace: stopped", { pid }))
          assert.isDefined(stopped, `old worker ${pid} drained and stopped`)
        }
        yield* eventually(() => processesTagged(tag).length === 0, "no process of the program left")
      }),
    { timeout: 30_000 }
  )

  it.live(
    "as PID 1 of a PID namespace: SIGHUP rolls the workers with 0 failed; SIGUSR2 is refused (RestartUnsupported)",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const tag = newTag()
        yield* killTaggedOnClose(tag)
        const namespace = yield* spawnProcess(
          "/usr/bin/unshare",
          // If the test ends early, the namespace ends with unshare: its init is killed, and every process in it.
          ["--pid", "--fork", "--mount-proc", "--kill-child", nodePath, fixturePath, `${tag}=127.0.0.1:${port}`],
          { env: workersEnv }
        )
        // Pids in the logs and answers are the namespace's: the primary is 1.
        const workers = yield* groupReady(namespace, 1, 0)
        const init = yield* initOf(namespace.pid)
        const load = yield* bothLoads(`http://127.0.0.1:${port}/`)
        yield* load.more(200)

        const next = yield* roll(namespace, 1, init)
        for (const pid of next) assert.notInclude(workers, pid)
        for (const pid of workers) yield* waitForLog(namespace, 0, "effect-grace: stopped", { pid })
        const after = load.mark()
        yield* eventually(() => next.every((pid) => load.pids(after).includes(pid)), "both new workers answering")

        const from = namespace.lines.length
        process.kill(init, "SIGUSR2")
        const warning = yield* waitForLogWhere(namespace, from, "a warning", (log) => log.level === "WARN")
        assert.strictEqual(warning.annotations.reason, "RestartUnsupported", warning.message)
        assert.strictEqual(warning.annotations.pid, 1)
        assert.match(warning.message, /PID 1/)
        yield* load.more(100)
        yield* load.stop
        assert.deepStrictEqual(load.failures(), [])
        assert.deepStrictEqual(workersStarted(namespace, 1, from), [undefined, undefined], "no worker started")
        for (const pid of load.pids(after)) assert.include(next, pid)

        process.kill(init, "SIGTERM")
        assert.deepStrictEqual(yield* namespace.exited(), { code: 0, signal: null })
      }),
    { timeout: 60_000 }
  )

  it.live(
    "under systemd-socket-activate: the primary is the activator's pid, its workers serve on the inherited socket",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const tag = newTag()
        yield* killTaggedOnClose(tag)
        const activate = yield* spawnProcess("systemd-socket-activate", [
          "-l",
          `127.0.0.1:${port}`,
          ...Object.entries(workersEnv).flatMap(([name, value]) => ["-E", `${name}=${value}`]),
          nodePath,
          fixturePath,
          `${tag}=127.0.0.1:${port}`
        ])
        yield* activate.waitForErrorLine(new RegExp(`Listening on 127\\.0\\.0\\.1:${port}`))
        assert.deepStrictEqual(activate.lines, [], "not started before the first connection")
        const url = `http://127.0.0.1:${port}/`

        // The first connection starts the program (exec'd in place), and waits in the backlog until a worker serves.
        const first = yield* request(`${url}worker`, { timeout: "20 seconds" })
        const workers = yield* groupReady(activate, activate.pid, 0)
        assert.match(first.body, new RegExp(`^worker [01] of ${activate.pid} pid (${workers.join("|")})\\n$`))
        const seen = new Set<number>()
        for (let round = 0; round < 50 && seen.size < WORKERS; round++) {
          const replies = yield* Effect.forEach(Array.from({ length: 4 }), () => request(url), { concurrency: 4 })
          for (const reply of replies) seen.add(pidOf(reply))
        }
        assert.deepStrictEqual(sorted(seen), sorted(workers), "both workers, and only they, answer")

        process.kill(activate.pid, "SIGTERM")
        assert.deepStrictEqual(yield* activate.exited(), { code: 0, signal: null })
        assert.deepStrictEqual(processesTagged(tag), [])
      }),
    { timeout: 30_000 }
  )

  it.live(
    "keep-alive connections spread over both workers: each accepts on a SO_REUSEPORT socket of its own",
    () =>
      Effect.gen(function* () {
        const { url, workers } = yield* startWorkers()
        // 32 connections opened at once, as a load balancer's pool does: on one shared socket, the worker woken first
        // took most of them (bench/results/balance.md); here the kernel hashes each to a worker's own socket.
        const agents = yield* Effect.forEach(Array.from({ length: 32 }), () => keepAliveAgent())
        const replies = yield* Effect.forEach(agents, (agent) => request(url, { agent }), { concurrency: "unbounded" })
        const counts = workers.map((pid) => replies.filter((reply) => pidOf(reply) === pid).length)
        assert.strictEqual(counts[0]! + counts[1]!, 32, `every connection answered by a worker: ${counts.join(", ")}`)
        // Binomial(32, 1/2) falls under 4 once in about 100,000 runs.
        for (const count of counts) assert.isAtLeast(count, 4, `each worker holds connections: ${counts.join(", ")}`)
      }),
    { timeout: 30_000 }
  )

  it.live(
    "a full upgrade to fewer workers is refused (TooFewWorkers): the old group serves on; to more, it works",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const workersFile = Path.join(dir, "workers")
          Fs.writeFileSync(workersFile, "2")
          const { program, primary, workers, url } = yield* startWorkers({ FIXTURE_WORKERS_FILE: workersFile })
          Fs.writeFileSync(workersFile, "1")
          const from = program.lines.length
          process.kill(primary, "SIGUSR2")
          const refused = yield* waitForLogWhere(program, from, "the restart failing", (log) =>
            log.message.startsWith("effect-grace: restart failed")
          )
          assert.strictEqual(refused.annotations.reason, "ExitedBeforeReady")
          const failed = yield* waitForLogWhere(program, from, "the successor's reason", (log) =>
            log.message.includes("fewer than the 2 sockets")
          )
          assert.match(failed.message, /1 workers are fewer than the 2 sockets of .*:\d+/)
          const answers = yield* Effect.forEach(Array.from({ length: 8 }), () => request(url))
          for (const reply of answers) assert.include(workers, pidOf(reply))
          Fs.writeFileSync(workersFile, "3")
          const again = program.lines.length
          process.kill(primary, "SIGUSR2")
          const ready = yield* waitForLog(program, again, "effect-grace: successor ready", { pid: primary })
          const successor = Number(ready.annotations.successor)
          const started = logsOf(program, again).filter((log) =>
            matching(log, "effect-grace: worker started", { pid: successor })
          )
          assert.strictEqual(started.length, 3, "the new primary runs three workers")
          assert.deepStrictEqual(yield* program.exited(), { code: 0, signal: null })
        })
      ),
    { timeout: 60_000 }
  )

  it.live(
    "each worker's drain span and metrics carry its slot; the primary counts its workers' lives",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers } = yield* startWorkers({ FIXTURE_OBSERVE: "1" })
        process.kill(primary, "SIGTERM")
        assert.deepStrictEqual(yield* program.exited(), { code: 0, signal: null })
        const spans = program.lines.flatMap((line) =>
          line.startsWith("span ")
            ? [JSON.parse(line.slice(5)) as { name: string; attributes: Record<string, unknown> }]
            : []
        )
        const drainSlots = spans
          .filter((span) => span.name === "effect-grace.drain")
          .map((span) => span.attributes["effect-grace.slot"])
        assert.sameMembers([...new Set(drainSlots)], ["0", "1"], `drain spans by slot: ${drainSlots.join(", ")}`)
        const starts = spans.filter((span) => span.name === "effect-grace.worker.start")
        assert.sameMembers(
          starts.map((span) => span.attributes["effect-grace.worker.pid"]),
          workers,
          "a start span per worker, in the primary"
        )
        type Metric = { id: string; attributes: Record<string, string> | undefined; state: { count?: number } }
        const metrics = program.lines.flatMap((line) =>
          line.startsWith("metrics ") ? (JSON.parse(line.slice(8)) as Array<Metric>) : []
        )
        const drainMetricSlots = metrics
          .filter((metric) => metric.id === "effect-grace.drain.duration")
          .map((metric) => metric.attributes?.["effect-grace.slot"])
        assert.sameMembers([...new Set(drainMetricSlots)], ["0", "1"])
        const counted = metrics.filter((metric) => metric.id === "effect-grace.workers")
        const started = counted.find((metric) => metric.attributes?.event === "started")
        assert.strictEqual(started?.state.count, 2, `workers started, counted: ${JSON.stringify(counted)}`)
      }),
    { timeout: 30_000 }
  )

  it.live(
    "a new primary killed within its probation hands the service back to the old primary and its workers, 0 failed",
    () =>
      Effect.gen(function* () {
        const { program, primary, workers, url, tag } = yield* startWorkers({ GRACE_PROBATION: "10 seconds" })
        const load = yield* bothLoads(url)
        yield* load.more(100)
        const from = program.lines.length
        process.kill(primary, "SIGUSR2")
        const ready = yield* waitForLog(program, from, "effect-grace: successor ready", { pid: primary })
        const successor = Number(ready.annotations.successor)
        const next = yield* groupReady(program, successor, from)
        // The old workers are paused: the new ones serve, until their primary dies.
        const during = load.mark()
        yield* eventually(() => load.pids(during).some((pid) => next.includes(pid)), "a new worker answering")
        process.kill(successor, "SIGKILL")
        const warning = yield* waitForLogWhere(program, from, "the hand-back", (log) => log.level === "WARN")
        assert.strictEqual(warning.annotations.reason, "HandedBack", warning.message)
        // Orphaned, the new workers drain what they had and exit; the old ones accept again.
        yield* Effect.forEach(next, gone, { discard: true })
        const after = load.mark()
        yield* load.more(200)
        yield* eventually(() => workers.every((pid) => load.pids(after).includes(pid)), "both old workers answering")
        yield* load.stop
        assert.deepStrictEqual(load.failures(), [], "nothing refused or cut, then or since")
        for (const pid of load.pids(after)) assert.include(workers, pid)
        assert.deepStrictEqual(sorted(processesTagged(tag)), sorted([primary, ...workers]))
      }),
    { timeout: 60_000 }
  )
})
