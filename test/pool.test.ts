/**
 * A primary's workers as a pure state machine (internal/pool.ts): start,
 * rolling restarts with surge and probation, deaths and their backoff,
 * pause and resume, stop; then random sequences of events, checked against
 * the invariants the module states.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Pool from "../src/internal/pool.ts"

const rules: Pool.Rules = { surge: 1, probation: true, backoffMillis: 1000, maxBackoffMillis: 30_000 }

/** An action as a short line: ids and slots, logs by their message. */
const show = (action: Pool.Action): string => {
  switch (action._tag) {
    case "Log":
      return `Log ${action.message.replace("effect-grace: ", "")}`
    case "Spawn":
      return `Spawn ${action.slot}:${action.id}`
    case "ScheduleRespawn":
      return `ScheduleRespawn ${action.slot} ${action.millis}`
    case "StartupFailed":
      return `StartupFailed ${action.slot}:${action.id}`
    case "RollStopped":
      return `RollStopped ${action.failure._tag} ${action.failure.slot}:${action.failure.id}`
    case "GroupReady":
    case "RollDone":
    case "Stopped":
      return action._tag
    default:
      return `${action._tag} ${action.id}`
  }
}

const ready = (id: number): Pool.Event => ({ _tag: "Ready", id })
const exited = (id: number, code: number | null = 1, signal: string | null = null): Pool.Event => ({
  _tag: "Exited",
  id,
  code,
  signal
})
const probationOver = (id: number): Pool.Event => ({ _tag: "ProbationOver", id })
const roll: Pool.Event = { _tag: "Roll" }
const stop: Pool.Event = { _tag: "Stop" }

/** Applies `events` in order: the last state, and the actions of each event as lines. */
const apply = (state: Pool.State, events: ReadonlyArray<Pool.Event>, given: Partial<Pool.Rules> = {}) => {
  const said: Array<Array<string>> = []
  let current = state
  for (const event of events) {
    const [next, actions] = Pool.transition(current, event, { ...rules, ...given })
    said.push(actions.map(show))
    current = next
  }
  return { state: current, said, last: said.at(-1) ?? [] }
}

/** `workers` slots, each serving the worker of its own number (ids 0 to workers - 1). */
const serving = (workers: number): Pool.State => {
  const [started] = Pool.start(workers)
  const { state } = apply(
    started,
    Array.from({ length: workers }, (_, id) => ready(id))
  )
  assert.strictEqual(state.phase, "Serving")
  return state
}

const servers = (state: Pool.State) => state.slots.map((slot) => slot.serving)
const tracked = (state: Pool.State) =>
  state.slots.reduce(
    (n, slot) => n + [slot.serving, slot.starting, slot.probation].filter((id) => id !== undefined).length,
    0
  )

describe("the pool of a primary's workers", () => {
  it("starts a worker per slot; the group is ready once every slot is, and each is then told it serves", () => {
    const [state, actions] = Pool.start(3)
    assert.deepStrictEqual(actions.map(show), ["Log starting workers", "Spawn 0:0", "Spawn 1:1", "Spawn 2:2"])
    assert.deepStrictEqual(actions[0], {
      _tag: "Log",
      message: "effect-grace: starting workers",
      annotations: { workers: 3 }
    })
    assert.strictEqual(state.phase, "Starting")
    const { state: next, said } = apply(state, [ready(2), ready(0), ready(0), ready(7), ready(1)])
    assert.deepStrictEqual(said.slice(0, 4), [[], [], [], []], "nothing until the last one, twice or unknown alike")
    assert.deepStrictEqual(said[4], ["GroupReady", "Serving 0", "Serving 1", "Serving 2"])
    assert.strictEqual(next.phase, "Serving")
    assert.deepStrictEqual(servers(next), [0, 1, 2])
    assert.deepStrictEqual(apply(next, [ready(1)]).last, [], "a second ready says nothing")
  })

  it("a worker that exits before the group is ready fails the start-up; the others are stopped", () => {
    const [state] = Pool.start(3)
    const { state: failed, said } = apply(state, [ready(0), exited(1, 3)])
    assert.deepStrictEqual(said[1], ["StartupFailed 1:1", "Terminate 0", "Kill 2"])
    assert.strictEqual(failed.phase, "Stopping")
    const { state: over, said: then } = apply(failed, [ready(2), exited(2, null, "SIGKILL"), exited(0, 0)])
    assert.deepStrictEqual(then, [[], [], ["Stopped"]], "a ready after the failure changes nothing")
    assert.strictEqual(over.phase, "Stopped")
    // Alone: stopped at once.
    const { state: alone, last } = apply(Pool.start(1)[0], [exited(0)])
    assert.deepStrictEqual(last, ["StartupFailed 0:0", "Stopped"])
    assert.strictEqual(alone.phase, "Stopped")
  })

  it("a worker that was ready and exits before the group is ready fails the start-up too", () => {
    // "A worker that exits before the group was first ready fails the start-up" (pool.ts): not replaced.
    const { state, last } = apply(Pool.start(2)[0], [ready(0), exited(0, null, "SIGSEGV")])
    assert.deepStrictEqual(last, ["StartupFailed 0:0", "Kill 1"])
    assert.strictEqual(state.phase, "Stopping")
  })

  describe("a rolling restart", () => {
    it("with surge 1: a slot at a time, the old one paused once the new one is ready, terminated after probation", () => {
      const { state, said } = apply(serving(3), [
        roll,
        ready(3),
        probationOver(3),
        ready(4),
        probationOver(4),
        ready(5),
        probationOver(5)
      ])
      assert.deepStrictEqual(said, [
        ["Log rolling worker", "Spawn 0:3"],
        ["Serving 3", "Pause 0", "StartProbation 3"],
        ["Terminate 0", "Log rolling worker", "Spawn 1:4"],
        ["Serving 4", "Pause 1", "StartProbation 4"],
        ["Terminate 1", "Log rolling worker", "Spawn 2:5"],
        ["Serving 5", "Pause 2", "StartProbation 5"],
        ["Terminate 2", "RollDone"]
      ])
      assert.deepStrictEqual(servers(state), [3, 4, 5])
      assert.isUndefined(state.roll)
      // The old ones finish their drain: nothing to do.
      assert.deepStrictEqual(apply(state, [exited(0, 0), exited(1, 0), exited(2, 0)]).said, [[], [], []])
    })

    it("with surge 2: two slots at a time, never more new workers, the peak is workers + surge", () => {
      const events = [roll, ready(4), probationOver(4), ready(3), probationOver(3), ready(5), probationOver(5)]
      let state = serving(3)
      let peak = tracked(state)
      const said: Array<Array<string>> = []
      for (const event of events) {
        const [next, actions] = Pool.transition(state, event, { ...rules, surge: 2 })
        said.push(actions.map(show))
        state = next
        peak = Math.max(peak, tracked(state))
        const starting = state.slots.filter((s) => s.starting !== undefined || s.probation !== undefined).length
        assert.isAtMost(starting, 2, "never more than surge slots under way")
      }
      assert.deepStrictEqual(said, [
        ["Log rolling worker", "Spawn 0:3", "Log rolling worker", "Spawn 1:4"],
        ["Serving 4", "Pause 1", "StartProbation 4"],
        ["Terminate 1", "Log rolling worker", "Spawn 2:5"],
        ["Serving 3", "Pause 0", "StartProbation 3"],
        ["Terminate 0"],
        ["Serving 5", "Pause 2", "StartProbation 5"],
        ["Terminate 2", "RollDone"]
      ])
      assert.strictEqual(peak, 5)
      assert.deepStrictEqual(servers(state), [3, 4, 5])
    })

    it("a surge larger than the group begins every slot at once", () => {
      const { last } = apply(serving(2), [roll], { surge: 5 })
      assert.deepStrictEqual(last, ["Log rolling worker", "Spawn 0:2", "Log rolling worker", "Spawn 1:3"])
    })

    it("without probation: the old one is terminated as soon as the new one is ready, never paused", () => {
      const { state, said } = apply(serving(2), [roll, ready(2), ready(3)], { probation: false })
      assert.deepStrictEqual(said, [
        ["Log rolling worker", "Spawn 0:2"],
        ["Serving 2", "Terminate 0", "Log rolling worker", "Spawn 1:3"],
        ["Serving 3", "Terminate 1", "RollDone"]
      ])
      assert.deepStrictEqual(servers(state), [2, 3])
    })

    it("is refused while one is under way, while starting or stopping, and while the group is paused", () => {
      const { state: rolling } = apply(serving(2), [roll])
      assert.deepStrictEqual(apply(rolling, [roll]).last, [])
      assert.deepStrictEqual(apply(Pool.start(2)[0], [roll]).last, [])
      const paused = apply(serving(2), [{ _tag: "PauseAll" }]).state
      assert.deepStrictEqual(Pool.transition(paused, roll, rules), [paused, []])
      const { state: stopping } = apply(serving(2), [stop])
      assert.deepStrictEqual(Pool.transition(stopping, roll, rules), [stopping, []])
    })

    it("a new worker that exits before it is ready stops it: slots not begun keep their old workers, never paused", () => {
      const { state, said } = apply(serving(3), [roll, exited(3, 2)])
      assert.deepStrictEqual(said[1], ["Log worker exited before it was ready", "RollStopped ExitedBeforeReady 0:3"])
      assert.deepStrictEqual(servers(state), [0, 1, 2])
      assert.isUndefined(state.roll)
      assert.notInclude(said.flat(), "Pause 0")
      // A roll after it starts over from the first slot.
      assert.deepStrictEqual(apply(state, [roll]).last, ["Log rolling worker", "Spawn 0:4"])
    })

    it("with surge 2, one failure lets the slot under way finish, begins no other, and is the one reported", () => {
      const { state, said } = apply(serving(3), [roll, exited(3, 2), ready(4), probationOver(4)], { surge: 2 })
      assert.deepStrictEqual(said.slice(1), [
        ["Log worker exited before it was ready"],
        ["Serving 4", "Pause 1", "StartProbation 4"],
        ["Terminate 1", "RollStopped ExitedBeforeReady 0:3"]
      ])
      assert.deepStrictEqual(servers(state), [0, 4, 2])
      const stopped = Pool.transition(apply(serving(3), [roll, exited(3, 2)], { surge: 2 }).state, roll, rules)
      assert.deepStrictEqual(stopped[1], [], "no second roll while the first one finishes")
    })

    it("a new worker that exits on probation hands back: the old one resumes, the roll stops", () => {
      const { state, said } = apply(serving(2), [roll, ready(2), exited(2, null, "SIGSEGV"), probationOver(2)])
      assert.deepStrictEqual(said.slice(1), [
        ["Serving 2", "Pause 0", "StartProbation 2"],
        ["Log new worker exited on probation; the old one serves again", "Resume 0", "RollStopped HandedBack 0:2"],
        []
      ])
      const handedBack = Pool.transition(apply(serving(2), [roll, ready(2)]).state, exited(2, null, "SIGSEGV"), rules)
      assert.deepStrictEqual(handedBack[1].at(-1), {
        _tag: "RollStopped",
        failure: { _tag: "HandedBack", slot: 0, id: 2, code: null, signal: "SIGSEGV" }
      })
      assert.deepStrictEqual(servers(state), [0, 1])
      assert.isUndefined(state.roll)
    })

    it("the old one dying while the new one is on probation: the new one keeps the slot, nothing to terminate", () => {
      const { state, said } = apply(serving(2), [roll, ready(2), exited(0, null, "SIGKILL"), probationOver(2)])
      assert.deepStrictEqual(said.slice(2), [["Log worker died"], ["Log rolling worker", "Spawn 1:3"]])
      assert.deepStrictEqual(servers(state), [2, 1])
    })

    it("the old one dead, then the new one dying on probation: the slot starts afresh", () => {
      const { state, last } = apply(serving(2), [roll, ready(2), exited(0), exited(2)])
      assert.deepStrictEqual(last, [
        "Log new worker exited on probation; the old one serves again",
        "Spawn 0:3",
        "RollStopped HandedBack 0:2"
      ])
      assert.deepStrictEqual(apply(state, [ready(3)]).last, ["Log worker serving", "Serving 3"])
    })

    it("the old one dying while the new one starts: the new one takes the slot when ready", () => {
      const { state, said } = apply(serving(2), [roll, exited(0), ready(2)])
      assert.deepStrictEqual(said.slice(1), [
        ["Log worker died"],
        ["Log worker serving", "Serving 2", "Log rolling worker", "Spawn 1:3"]
      ])
      assert.deepStrictEqual(servers(state), [2, 1])
    })

    it("a new worker that exits before ready where the old one has died stops the roll too; the slot starts again", () => {
      // The old worker of slot 0 dies while its new one starts; the new one (the new code) then exits before ready.
      const { state, last } = apply(serving(2), [roll, exited(0, null, "SIGKILL"), exited(2, 1)])
      assert.include(last, "ScheduleRespawn 0 1000", "the slot has no worker: it starts one again")
      assert.include(last, "RollStopped ExitedBeforeReady 0:2", "the roll ends, and says why")
      assert.isUndefined(state.roll)
      assert.notInclude(last, "Spawn 1:3", "the next slot keeps its old worker")
    })

    it("a slot already starting a replacement when the roll reaches it is rolled by it", () => {
      // Slot 1's worker dies and its replacement (which has the new code) starts before the roll reaches it.
      const { state, said } = apply(serving(2), [exited(1), roll, ready(3), probationOver(3)])
      assert.deepStrictEqual(said[3], ["Terminate 0", "RollDone"])
      assert.strictEqual(state.slots[1]!.starting, 2)
    })
  })

  describe("deaths after start", () => {
    it("a serving worker that dies is replaced at once", () => {
      const { state, said } = apply(serving(2), [exited(1, null, "SIGKILL"), ready(2)])
      assert.deepStrictEqual(said, [
        ["Log worker died", "Spawn 1:2"],
        ["Log worker serving", "Serving 2"]
      ])
      assert.deepStrictEqual(servers(state), [0, 2])
    })

    it("a replacement that dies before ready starts again after 1 s, then 1.5x, capped", () => {
      let { state, last } = apply(serving(2), [exited(1), exited(2)])
      assert.deepStrictEqual(last, ["Log worker exited before it was ready", "ScheduleRespawn 1 1000"])
      assert.isUndefined(state.slots[1]!.starting)
      const delays: Array<string> = []
      for (let n = 3; n < 13; n++) {
        ;({ state, last } = apply(state, [{ _tag: "RespawnDue", slot: 1 }]))
        assert.deepStrictEqual(last, [`Spawn 1:${n}`])
        ;({ state, last } = apply(state, [exited(n)]))
        delays.push(last[1]!)
      }
      assert.deepStrictEqual(
        delays.map((line) => Number(line.split(" ")[2])),
        [1500, 2250, 3375, 5063, 7594, 11391, 17086, 25629, 30000, 30000]
      )
      // Ready resets the count: the next death of a replacement waits 1 s again.
      ;({ state, last } = apply(state, [{ _tag: "RespawnDue", slot: 1 }, ready(13), exited(13), exited(14)]))
      assert.deepStrictEqual(last, ["Log worker exited before it was ready", "ScheduleRespawn 1 1000"])
      assert.strictEqual(state.slots[1]!.deaths, 1)
    })

    it("the backoff", () => {
      assert.deepStrictEqual(
        [0, 1, 2, 3, 20].map((deaths) => Pool.backoff(rules, deaths)),
        [1000, 1000, 1500, 2250, 30_000]
      )
      assert.strictEqual(Pool.backoff({ ...rules, maxBackoffMillis: 2000 }, 3), 2000)
    })

    it("a respawn that is not due any more does nothing: the slot serves, starts, or the pool stops", () => {
      const { state } = apply(serving(2), [exited(1), exited(2)])
      const respawn: Pool.Event = { _tag: "RespawnDue", slot: 1 }
      const { state: restarted } = apply(state, [respawn])
      assert.deepStrictEqual(Pool.transition(restarted, respawn, rules), [restarted, []])
      const { state: stopped, last } = apply(state, [stop, exited(0), respawn])
      assert.deepStrictEqual(last, [])
      assert.strictEqual(stopped.phase, "Stopped")
      assert.deepStrictEqual(apply(serving(1), [respawn]).last, [])
    })
  })

  describe("stop", () => {
    it("during a roll: starting ones killed, the others terminated; stopped once every one has exited", () => {
      const { state, last } = apply(serving(3), [roll, ready(3), stop], { surge: 2 })
      assert.deepStrictEqual(last, ["Terminate 0", "Terminate 3", "Kill 4", "Terminate 1", "Terminate 2"])
      assert.strictEqual(state.phase, "Stopping")
      assert.isUndefined(state.roll, "the roll ends with it, said to no one")
      const late = [ready(4), probationOver(3), roll, { _tag: "PauseAll" }, stop] as const
      assert.deepStrictEqual(apply(state, late).said, [[], [], [], [], []])
      const { state: over, said } = apply(state, [exited(4), exited(0), exited(3), exited(2), exited(1)])
      assert.deepStrictEqual(said, [[], [], [], [], ["Stopped"]])
      assert.strictEqual(over.phase, "Stopped")
      assert.deepStrictEqual(apply(over, [stop, exited(9)]).said, [[], []])
    })

    it("waits for the old workers a roll let go, still draining, before it has stopped", () => {
      // Slot 0 has rolled: its old worker (0) was asked to drain and exit, and has not yet.
      const { state, said } = apply(serving(2), [roll, ready(2), probationOver(2), stop])
      assert.deepStrictEqual(said[2], ["Terminate 0", "Log rolling worker", "Spawn 1:3"])
      assert.deepStrictEqual(said[3], ["Terminate 2", "Kill 3", "Terminate 1"])
      const { state: left, said: exits } = apply(state, [exited(2, 0), exited(3, null, "SIGKILL"), exited(1, 0)])
      assert.deepStrictEqual(exits.flat(), [], "not stopped while worker 0 still drains")
      assert.strictEqual(left.phase, "Stopping")
      assert.deepStrictEqual(apply(left, [exited(0, 0)]).last, ["Stopped"])
    })

    it("with nothing left to stop, stopped at once", () => {
      const { state, last } = apply(serving(1), [exited(0), exited(1), stop])
      assert.deepStrictEqual(last, ["Stopped"], "a respawn only scheduled is no worker")
      assert.strictEqual(state.phase, "Stopped")
    })
  })

  describe("pause and resume of the whole group", () => {
    it("pauses and resumes every serving worker; a replacement ready while paused is paused too", () => {
      const { state, said } = apply(serving(2), [{ _tag: "PauseAll" }, exited(1), ready(2), { _tag: "ResumeAll" }])
      assert.deepStrictEqual(said, [
        ["Pause 0", "Pause 1"],
        ["Log worker died", "Spawn 1:2"],
        ["Log worker serving", "Serving 2", "Pause 2"],
        ["Resume 0", "Resume 2"]
      ])
      assert.isFalse(state.paused)
    })

    it("means nothing before the group is ready", () => {
      const [starting] = Pool.start(2)
      assert.deepStrictEqual(Pool.transition(starting, { _tag: "PauseAll" }, rules), [starting, []])
      assert.deepStrictEqual(Pool.transition(starting, { _tag: "ResumeAll" }, rules), [starting, []])
    })
  })
})

/** A small seeded generator (mulberry32): the same seed, the same sequence. */
const random = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * The workers and timers as the primary's runtime would see them, driven by the pool's actions, with the checks
 * every step must pass. Events are what the world may say next: a worker alive says ready or exits, a timer fires,
 * the supervisor rolls, pauses (never during a roll, as the supervisor never does), resumes what it paused, or stops.
 */
const world = (seed: number, workers: number, given: Pool.Rules) => {
  const alive = new Set<number>()
  const saidReady = new Set<number>()
  const paused = new Set<number>()
  const told = new Set<number>()
  const spawned = new Set<number>()
  const probations = new Set<number>()
  const respawns = new Set<number>()
  // The last steps, written out only when a check fails.
  const trace: Array<readonly [Pool.Event, ReadonlyArray<Pool.Action>]> = []
  const counts = { groupReady: 0, stopped: 0, rollsEnded: 0, rollsBegun: 0, handedBack: 0, respawns: 0 }
  let [state, first] = Pool.start(workers)
  let rollOpen = false
  const fail = (what: string) => {
    const steps = trace
      .slice(-12)
      .map(([event, actions]) => `${JSON.stringify(event)} -> ${actions.map(show).join(", ")}`)
    return assert.fail(`seed ${seed}: ${what}\n${steps.join("\n")}`)
  }

  const perform = (action: Pool.Action) => {
    const known = (id: number) => {
      if (!alive.has(id)) fail(`${show(action)} names a worker not alive`)
    }
    switch (action._tag) {
      case "Spawn":
        if (spawned.has(action.id)) fail(`id ${action.id} spawned twice`)
        if (counts.stopped > 0) fail("a spawn after the pool stopped")
        spawned.add(action.id)
        alive.add(action.id)
        return
      case "Kill":
      case "Terminate":
      case "StartProbation":
        known(action.id)
        if (action._tag === "StartProbation") probations.add(action.id)
        return
      case "Pause":
        known(action.id)
        paused.add(action.id)
        return
      case "Resume":
        known(action.id)
        paused.delete(action.id)
        return
      case "Serving":
        known(action.id)
        if (!saidReady.has(action.id)) fail(`worker ${action.id} told it serves before it said ready`)
        if (told.has(action.id)) fail(`worker ${action.id} told twice that it serves`)
        told.add(action.id)
        return
      case "ScheduleRespawn":
        counts.respawns++
        respawns.add(action.slot)
        return
      case "GroupReady":
        counts.groupReady++
        return
      case "RollDone":
      case "RollStopped":
        if (!rollOpen) fail(`${action._tag} without a roll`)
        rollOpen = false
        counts.rollsEnded++
        if (action._tag === "RollStopped" && action.failure._tag === "HandedBack") counts.handedBack++
        return
      case "Stopped":
        counts.stopped++
        return
      case "Log":
      case "StartupFailed":
        return
    }
  }

  const checkState = () => {
    const ids = state.slots.flatMap((s) => [s.serving, s.starting, s.probation].filter((id) => id !== undefined))
    if (new Set(ids).size !== ids.length) fail("a worker in two places")
    for (const id of ids) if (!alive.has(id)) fail(`worker ${id} kept after it exited`)
    if (ids.length > workers + given.surge) fail(`${ids.length} workers, more than ${workers} + surge`)
    if (state.phase !== "Serving") return
    if (rollOpen !== (state.roll !== undefined)) fail("a roll ended without RollDone or RollStopped")
    for (const [i, s] of state.slots.entries()) {
      if (s.serving === undefined && s.starting === undefined && s.probation === undefined && !respawns.has(i)) {
        fail(`slot ${i} forgotten: no worker, none starting, no respawn due`)
      }
      if (s.serving === undefined) continue
      const shouldPause = s.probation !== undefined || state.paused
      if (paused.has(s.serving) !== shouldPause) fail(`slot ${i}: worker ${s.serving} paused: ${!shouldPause}`)
      if (s.probation !== undefined && paused.has(s.probation)) fail(`slot ${i}: the worker on probation paused`)
    }
  }

  const send = (event: Pool.Event) => {
    const wasRolling = state.roll !== undefined
    const [next, actions] = Pool.transition(state, event, given)
    trace.push([event, actions])
    state = next
    // A roll begins with actions (a refused one has none), and may end in the same step (every slot replaced).
    if (!wasRolling && event._tag === "Roll" && actions.length > 0) {
      rollOpen = true
      counts.rollsBegun++
    }
    if (event._tag === "Stop") rollOpen = false
    if (event._tag === "Exited") {
      alive.delete(event.id)
      paused.delete(event.id)
      probations.delete(event.id)
    }
    if (event._tag === "Ready") saidReady.add(event.id)
    if (event._tag === "ProbationOver") probations.delete(event.id)
    if (event._tag === "RespawnDue") respawns.delete(event.slot)
    actions.forEach(perform)
    checkState()
  }
  first.forEach(perform)
  first = []

  /** The events the world may send now. */
  const possible = (stopping: boolean): Array<Pool.Event> => {
    const events: Array<Pool.Event> = []
    for (const id of alive) {
      if (!saidReady.has(id)) events.push(ready(id))
      events.push(exited(id, random(id)() < 0.5 ? 1 : null, "SIGKILL"))
    }
    for (const id of probations) events.push(probationOver(id))
    for (const slot of respawns) events.push({ _tag: "RespawnDue", slot })
    if (!stopping) {
      events.push(roll)
      if (state.roll === undefined) events.push({ _tag: "PauseAll" })
      if (state.paused) events.push({ _tag: "ResumeAll" })
    }
    return events
  }

  return {
    send,
    possible,
    alive,
    probations,
    respawns,
    saidReady,
    counts,
    fail,
    get state() {
      return state
    }
  }
}

describe("the pool, over random sequences of events", () => {
  it("keeps its invariants, finishes every roll, and stops once every worker has exited", () => {
    const seen = { started: 0, failed: 0, rolls: 0, handedBack: 0, respawns: 0 }
    for (let seed = 1; seed <= 400; seed++) {
      const next = random(seed)
      const workers = 1 + Math.floor(next() * 4)
      const given: Pool.Rules = { ...rules, surge: 1 + Math.floor(next() * 3), probation: next() < 0.7 }
      const w = world(seed, workers, given)
      // Mostly the workers start: a start-up that fails is checked too, but less often.
      for (let id = 0; id < workers; id++) if (next() < 0.95) w.send(ready(id))
      for (let n = 0; n < 150 && w.state.phase !== "Stopped"; n++) {
        const events = w.possible(w.state.phase === "Stopping")
        // Deaths are rarer than the rest, so that rolls get somewhere.
        const calm = events.filter((e) => e._tag !== "Exited" || next() < 0.25)
        const pool = calm.length > 0 ? calm : events
        if (pool.length === 0) break
        w.send(pool[Math.floor(next() * pool.length)]!)
      }
      if (w.state.phase === "Serving") {
        // Settles: every worker starting says ready, every timer fires; then the group serves, whole, and no roll is
        // left under way.
        for (let turn = 0; turn < 100; turn++) {
          const due: Array<Pool.Event> = [
            ...[...w.alive].filter((id) => !w.saidReady.has(id)).map(ready),
            ...[...w.probations].map(probationOver),
            ...[...w.respawns].map((slot): Pool.Event => ({ _tag: "RespawnDue", slot }))
          ]
          if (due.length === 0) break
          due.forEach(w.send)
        }
        if (w.state.roll !== undefined) w.fail("a roll never finished")
        if (w.state.slots.some((s) => s.serving === undefined || s.starting !== undefined)) w.fail("not settled")
        if (w.counts.rollsBegun !== w.counts.rollsEnded) w.fail("a roll ended without a word")
        if (w.counts.groupReady !== 1) w.fail("the group was ready more or less than once")
        w.send({ _tag: "ResumeAll" })
        w.send(stop)
      } else if (w.state.phase === "Starting") {
        w.send(stop)
      }
      // Every worker alive exits, in some order: the pool stops, and says so once.
      const left = [...w.alive]
      for (let i = left.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1))
        ;[left[i], left[j]] = [left[j]!, left[i]!]
      }
      for (const id of left) if (w.alive.has(id)) w.send(exited(id, 0))
      if (w.state.phase !== "Stopped" || w.counts.stopped !== 1) w.fail(`not stopped once: ${w.counts.stopped}`)
      seen[w.counts.groupReady === 1 ? "started" : "failed"]++
      seen.rolls += w.counts.rollsEnded
      seen.handedBack += w.counts.handedBack
      seen.respawns += w.counts.respawns
    }
    // The sequences reach every case: start-ups that fail, rolls, hand-backs, and respawns after a backoff.
    for (const [what, n] of Object.entries(seen)) assert.isAbove(n, 10, what)
  })
})
