/**
 * A primary's workers as a pure state machine (internal/pool.ts): start,
 * rolling restarts with surge and probation, deaths and their backoff,
 * pause and resume, stop, the sockets of a slot with no worker that accepts
 * lent to one that does; then random sequences of events, checked against
 * the invariants the module states.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Pool from "../src/internal/pool.ts"

const rules: Pool.Rules = {
  surge: 1,
  startAtOnce: 64,
  probation: true,
  backoffMillis: 1000,
  maxBackoffMillis: 30_000
}

// A failed worker as `slot:id` (the tests give each worker a pid equal to its id).
const failedAs = (failure: Pool.Failure) => `${failure.slot}:${"exit" in failure ? failure.exit.pid : "-"}`

/** An action as a short line: ids and slots, logs by their message. */
const show = (action: Pool.Action): string => {
  switch (action._tag) {
    case "Log":
      return `Log ${action.message.replace("effect-grace: ", "")}`
    case "Spawn":
      return `Spawn ${action.slot}:${action.id}`
    case "ScheduleRespawn":
      return `ScheduleRespawn ${action.slot} ${action.millis}`
    case "ReplaceForMemory":
      return `ReplaceForMemory ${action.slot}:${action.id} ${action.rss}${action.millis > 0 ? ` after ${action.millis}` : ""}`
    case "RollStopped":
      return `RollStopped ${action.failure._tag} ${failedAs(action.failure)}`
    case "RollDone":
      return ["RollDone", ...action.workers.map(({ slot, id }) => `${slot}:${id}`)].join(" ")
    case "Bind":
      return `Bind ${action.key}`
    case "SendListener":
      return `SendListener ${action.id} ${action.ask} fd ${action.fd}`
    case "RefuseListen":
      return `RefuseListen ${action.id} ${action.ask} ${action.failure._tag}`
    case "Lend":
    case "Reclaim":
      return `${action._tag} ${action.id} slot ${action.slot} fd ${action.fds.join(",")}`
    default:
      return `${action._tag} ${action.id}`
  }
}

/**
 * A step as lines: what the state now says first (the group ready, its start-up failed), then the actions, then
 * whether the pool has stopped. The group's readiness, failure and stop are its state, which its owner waits for.
 */
const lines = (before: Pool.State, after: Pool.State, actions: ReadonlyArray<Pool.Action>): Array<string> => [
  ...(before.phase === "Starting" && after.phase === "Serving" ? ["GroupReady"] : []),
  ...(before.failure === undefined && after.failure !== undefined ? [`StartupFailed ${failedAs(after.failure)}`] : []),
  ...actions.map(show),
  ...(before.phase !== "Stopped" && after.phase === "Stopped" ? ["Stopped"] : [])
]

const ready = (id: number): Pool.Event => ({ _tag: "Ready", id })
const exited = (id: number, code: number | null = 1, signal: string | null = null): Pool.Event => ({
  _tag: "Exited",
  id,
  exit: { pid: id, code, signal }
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
    said.push(lines(current, next, actions))
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
/** Slots starting a new worker or trying one on probation. */
const underWay = (state: Pool.State) =>
  state.slots.filter((slot) => slot.starting !== undefined || slot.probation !== undefined).length

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

  it("starts a few workers at a time: the next slot starts as one is ready, and the group is ready with the last", () => {
    const [state, actions] = Pool.start(5, [], 2)
    assert.deepStrictEqual(actions.map(show), ["Log starting workers", "Spawn 0:0", "Spawn 1:1"])
    const { state: next, said } = apply(state, [ready(1), ready(0), ready(2), ready(3), ready(4)], { startAtOnce: 2 })
    assert.deepStrictEqual(said.slice(0, 4), [["Spawn 2:2"], ["Spawn 3:3"], ["Spawn 4:4"], []])
    assert.deepStrictEqual(said[4], ["GroupReady", "Serving 0", "Serving 1", "Serving 2", "Serving 3", "Serving 4"])
    assert.deepStrictEqual(servers(next), [0, 1, 2, 3, 4])
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
    it("the canary on probation, then the other slots one at a time, each old worker draining in the background", () => {
      const { state, said } = apply(serving(3), [
        roll,
        ready(3),
        probationOver(3),
        ready(4),
        ready(5),
        exited(0, 0),
        exited(1, 0),
        exited(2, 0)
      ])
      assert.deepStrictEqual(said, [
        ["Log rolling worker", "Spawn 0:3"],
        ["Serving 3", "Pause 0", "StartProbation 3"],
        ["Terminate 0", "Log rolling worker", "Spawn 1:4"],
        ["Serving 4", "Pause 1", "Terminate 1", "Log rolling worker", "Spawn 2:5"],
        ["Serving 5", "Pause 2", "Terminate 2", "RollDone 0:3 1:4 2:5"],
        [],
        [],
        []
      ])
      assert.deepStrictEqual(servers(state), [3, 4, 5])
      assert.isUndefined(state.roll)
      assert.deepStrictEqual(state.retiring, [])
    })

    it("the roll is done before the old workers have drained: they drain on, and stop with the pool", () => {
      const { state, last } = apply(serving(2), [roll, ready(2), probationOver(2), ready(3)])
      assert.deepStrictEqual(last.at(-1), "RollDone 0:2 1:3")
      assert.deepStrictEqual(state.retiring, [0, 1], "still draining")
      // A second roll may begin meanwhile.
      assert.deepStrictEqual(apply(state, [roll]).last, ["Log rolling worker", "Spawn 0:4"])
      const { state: stopping, said } = apply(state, [stop, exited(2, 0), exited(3, 0), exited(0, 0)])
      assert.deepStrictEqual(said[0], ["Terminate 2", "Terminate 3"], "the old ones were asked already")
      assert.strictEqual(stopping.phase, "Stopping", "one old worker still drains")
      assert.deepStrictEqual(apply(stopping, [exited(1, 0)]).last, ["Stopped"])
    })

    it("with surge 2: the canary alone, then two slots at a time, never more starting", () => {
      const events = [roll, ready(3), probationOver(3), ready(5), ready(4)]
      let state = serving(3)
      const said: Array<Array<string>> = []
      for (const event of events) {
        const [next, actions] = Pool.transition(state, event, { ...rules, surge: 2 })
        said.push(lines(state, next, actions))
        state = next
        assert.isAtMost(underWay(state), 2, "never more than surge slots under way")
      }
      assert.deepStrictEqual(said, [
        ["Log rolling worker", "Spawn 0:3"],
        ["Serving 3", "Pause 0", "StartProbation 3"],
        ["Terminate 0", "Log rolling worker", "Spawn 1:4", "Log rolling worker", "Spawn 2:5"],
        ["Serving 5", "Pause 2", "Terminate 2"],
        ["Serving 4", "Pause 1", "Terminate 1", "RollDone 0:3 1:4 2:5"]
      ])
      assert.deepStrictEqual(servers(state), [3, 4, 5])
    })

    it("a surge larger than the group: the canary first, then every other slot at once", () => {
      const { said } = apply(serving(3), [roll, ready(3), probationOver(3)], { surge: 5 })
      assert.deepStrictEqual(said[0], ["Log rolling worker", "Spawn 0:3"])
      assert.deepStrictEqual(said[2], [
        "Terminate 0",
        "Log rolling worker",
        "Spawn 1:4",
        "Log rolling worker",
        "Spawn 2:5"
      ])
    })

    it("without probation: no canary; each old one stops accepting and ends as soon as its new one is ready", () => {
      const { state, said } = apply(serving(2), [roll, ready(2), ready(3), exited(0, 0), exited(1, 0)], {
        probation: false
      })
      assert.deepStrictEqual(said, [
        ["Log rolling worker", "Spawn 0:2"],
        ["Serving 2", "Pause 0", "Terminate 0", "Log rolling worker", "Spawn 1:3"],
        ["Serving 3", "Pause 1", "Terminate 1", "RollDone 0:2 1:3"],
        [],
        []
      ])
      assert.deepStrictEqual(servers(state), [2, 3])
      assert.deepStrictEqual(apply(serving(3), [roll], { probation: false, surge: 2 }).last, [
        "Log rolling worker",
        "Spawn 0:3",
        "Log rolling worker",
        "Spawn 1:4"
      ])
    })

    it("is not begun while one is under way, while starting or stopping, and while the group is paused", () => {
      const { state: rolling } = apply(serving(2), [roll])
      assert.deepStrictEqual(apply(rolling, [roll]).last, [])
      assert.deepStrictEqual(apply(Pool.start(2)[0], [roll]).last, [])
      const paused = apply(serving(2), [{ _tag: "PauseAll" }]).state
      assert.deepStrictEqual(Pool.transition(paused, roll, rules), [paused, []])
      const { state: stopping } = apply(serving(2), [stop])
      assert.deepStrictEqual(Pool.transition(stopping, roll, rules), [stopping, []])
    })

    it("a canary that exits before it is ready stops it: slots not begun keep their old workers, never paused", () => {
      const { state, said } = apply(serving(3), [roll, exited(3, 2)])
      assert.deepStrictEqual(said[1], ["Log worker exited before it was ready", "RollStopped ExitedBeforeReady 0:3"])
      assert.deepStrictEqual(servers(state), [0, 1, 2])
      assert.isUndefined(state.roll)
      assert.notInclude(said.flat(), "Pause 0")
      // A roll after it starts over from the first slot.
      assert.deepStrictEqual(apply(state, [roll]).last, ["Log rolling worker", "Spawn 0:4"])
    })

    it("after the canary, a new worker that exits before ready stops it: its slot keeps the old one, never paused", () => {
      const { state, said } = apply(serving(3), [roll, ready(3), probationOver(3), exited(4, 2), ready(5)], {
        surge: 2
      })
      assert.deepStrictEqual(said.slice(3), [
        ["Log worker exited before it was ready"],
        ["Serving 5", "Pause 2", "Terminate 2", "RollStopped ExitedBeforeReady 1:4"]
      ])
      assert.notInclude(said.flat(), "Pause 1")
      assert.deepStrictEqual(servers(state), [3, 1, 5])
      const { state: failed } = apply(serving(3), [roll, ready(3), probationOver(3), exited(4, 2)], { surge: 2 })
      assert.deepStrictEqual(Pool.transition(failed, roll, rules)[1], [], "no second roll while the first finishes")
    })

    it("a canary that exits on probation hands back: the old one resumes, the roll stops", () => {
      const { state, said } = apply(serving(2), [roll, ready(2), exited(2, null, "SIGSEGV"), probationOver(2)])
      assert.deepStrictEqual(said.slice(1), [
        ["Serving 2", "Pause 0", "StartProbation 2"],
        ["Log new worker exited on probation; the old one serves again", "Resume 0", "RollStopped HandedBack 0:2"],
        []
      ])
      const handedBack = Pool.transition(apply(serving(2), [roll, ready(2)]).state, exited(2, null, "SIGSEGV"), rules)
      assert.deepStrictEqual(handedBack[1].at(-1), {
        _tag: "RollStopped",
        failure: { _tag: "HandedBack", slot: 0, exit: { pid: 2, code: null, signal: "SIGSEGV" } }
      })
      assert.deepStrictEqual(servers(state), [0, 1])
      assert.isUndefined(state.roll)
    })

    it("the old one dying while the canary is on probation: the canary keeps the slot, nothing to terminate", () => {
      const { state, said } = apply(serving(2), [roll, ready(2), exited(0, null, "SIGKILL"), probationOver(2)])
      assert.deepStrictEqual(said.slice(2), [["Log worker died"], ["Log rolling worker", "Spawn 1:3"]])
      assert.deepStrictEqual(servers(state), [2, 1])
    })

    it("the old one dead, then the canary dying on probation: the slot starts afresh", () => {
      const { state, last } = apply(serving(2), [roll, ready(2), exited(0), exited(2)])
      assert.deepStrictEqual(last, [
        "Log new worker exited on probation; the old one serves again",
        "Spawn 0:3",
        "RollStopped HandedBack 0:2"
      ])
      assert.deepStrictEqual(apply(state, [ready(3)]).last, ["Log worker serving", "Serving 3"])
    })

    it("the old one dying while the canary starts: it takes the slot untried, and the next slot is the canary", () => {
      const { state, said } = apply(serving(2), [roll, exited(0), ready(2), ready(3)])
      assert.deepStrictEqual(said.slice(1), [
        ["Log worker died"],
        ["Serving 2", "Log rolling worker", "Spawn 1:3"],
        ["Serving 3", "Pause 1", "StartProbation 3"]
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

    it("a replacement still starting when the roll is asked for takes its place, and is rolled too", () => {
      // Slot 1's worker dies and its replacement starts before the roll: begun before the restart was asked for.
      const { state, said } = apply(serving(2), [exited(1), roll, ready(2), ready(3), probationOver(3), ready(4)])
      assert.deepStrictEqual(said.slice(1), [
        [],
        ["Log worker serving", "Serving 2", "Log rolling worker", "Spawn 0:3"],
        ["Serving 3", "Pause 0", "StartProbation 3"],
        ["Terminate 0", "Log rolling worker", "Spawn 1:4"],
        ["Serving 4", "Pause 2", "Terminate 2", "RollDone 0:3 1:4"]
      ])
      assert.deepStrictEqual(servers(state), [3, 4])
    })
  })

  describe("memory", () => {
    const over = (id: number, sinceStart = false): Pool.Event => ({ _tag: "OverMemory", id, rss: 900, sinceStart })

    it("a worker above the limit is replaced as a roll replaces its slot: the new one first, then the old drains", () => {
      const { state, said } = apply(serving(2), [over(1), ready(2), exited(1, 0)])
      assert.deepStrictEqual(said, [
        ["ReplaceForMemory 1:1 900", "Spawn 1:2"],
        ["Log worker serving", "Serving 2", "Pause 1", "Terminate 1"],
        []
      ])
      assert.deepStrictEqual(servers(state), [0, 2])
      assert.deepStrictEqual(state.retiring, [])
      assert.strictEqual(state.slots[1]!.memoryReplacements, 1)
      assert.isFalse(state.slots[1]!.overMemory)
    })

    it("one slot at a time: another slot above the limit meanwhile waits for the watch to say so again", () => {
      const { state, said } = apply(serving(3), [over(0), over(1), over(0), ready(3), over(1)])
      assert.deepStrictEqual(said.slice(1, 3), [[], []])
      assert.deepStrictEqual(said[4], ["ReplaceForMemory 1:1 900", "Spawn 1:4"])
      assert.deepStrictEqual(servers(state), [3, 1, 2])
    })

    it("never while a roll runs, while the group is paused, while a slot is dead or starting, nor once stopping", () => {
      const refused: ReadonlyArray<ReadonlyArray<Pool.Event>> = [
        [roll],
        [{ _tag: "PauseAll" }],
        [exited(0, null, "SIGKILL")],
        [exited(0), exited(2)],
        [stop]
      ]
      for (const before of refused) {
        const { last } = apply(serving(2), [...before, over(1)])
        assert.deepStrictEqual(last, [], JSON.stringify(before))
      }
      // Nor for a worker that does not serve: one starting, or on probation.
      const rolling = apply(serving(2), [roll]).state
      assert.deepStrictEqual(apply(rolling, [over(2), ready(2), over(2)]).said, [
        [],
        ["Serving 2", "Pause 0", "StartProbation 2"],
        []
      ])
    })

    it("a roll begun while a replacement starts waits for it, then rolls that slot too", () => {
      const { state, said } = apply(serving(2), [over(0), roll, ready(2)], { probation: false })
      assert.deepStrictEqual(said[1], [])
      assert.deepStrictEqual(said[2]!.slice(0, 4), ["Log worker serving", "Serving 2", "Pause 0", "Terminate 0"])
      assert.include(said[2]!, "Spawn 0:3")
      assert.deepStrictEqual(state.roll?.active, [0])
    })

    it("the old worker dying meanwhile leaves the slot to its replacement", () => {
      const { state, said } = apply(serving(2), [over(1), exited(1, null, "SIGKILL"), ready(2)])
      assert.deepStrictEqual(said[1], ["Log worker died"])
      assert.deepStrictEqual(said[2], ["Log worker serving", "Serving 2"])
      assert.deepStrictEqual(servers(state), [0, 2])
      assert.deepStrictEqual(state.retiring, [])
    })

    it("a replacement that dies before ready starts again after the crash backoff; the old one serves meanwhile", () => {
      const { state, said } = apply(serving(2), [over(1), exited(2), { _tag: "RespawnDue", slot: 1 }, ready(3)])
      assert.deepStrictEqual(said[1], ["Log worker exited before it was ready", "ScheduleRespawn 1 1000"])
      assert.deepStrictEqual(said[2], ["Spawn 1:3"])
      assert.deepStrictEqual(said[3], ["Log worker serving", "Serving 3", "Pause 1", "Terminate 1"])
      assert.deepStrictEqual(servers(state), [0, 3])
      assert.strictEqual(state.slots[1]!.died, 1)
    })

    it("replacements of workers above the limit from their start back off as crash replacements do", () => {
      // A leak (below the limit once): replaced at once. Its replacement, above the limit from its start: after 1 s,
      // then 1.5 s, ...; one that was below the limit once starts the count again.
      let { state, last } = apply(serving(1), [over(0)])
      assert.deepStrictEqual(last, ["ReplaceForMemory 0:0 900", "Spawn 0:1"])
      const delays: Array<string> = []
      for (let id = 1; id < 5; id++) {
        ;({ state } = apply(state, [ready(id)]))
        ;({ state, last } = apply(state, [over(id, true)]))
        delays.push(last[0]!)
        assert.deepStrictEqual(last[1], `ScheduleRespawn 0 ${Pool.backoff(rules, id)}`)
        ;({ state, last } = apply(state, [over(id, true), { _tag: "RespawnDue", slot: 0 }]))
        assert.deepStrictEqual(last, [`Spawn 0:${id + 1}`], "said again while it waits: nothing more")
      }
      assert.deepStrictEqual(delays, [
        "ReplaceForMemory 0:1 900 after 1000",
        "ReplaceForMemory 0:2 900 after 1500",
        "ReplaceForMemory 0:3 900 after 2250",
        "ReplaceForMemory 0:4 900 after 3375"
      ])
      ;({ state, last } = apply(state, [ready(5), over(5)]))
      assert.deepStrictEqual(last, ["ReplaceForMemory 0:5 900", "Spawn 0:6"])
      assert.strictEqual(state.slots[0]!.memoryReplacements, 6)
    })

    it("a replacement that waits is given up when a roll begins meanwhile: the roll replaces the worker", () => {
      const { state, said } = apply(serving(1), [over(0), ready(1), over(1, true), roll], { probation: false })
      assert.deepStrictEqual(said[3], ["Log rolling worker", "Spawn 0:2"])
      assert.isFalse(state.slots[0]!.overMemory)
      const { last } = apply(state, [{ _tag: "RespawnDue", slot: 0 }], { probation: false })
      assert.deepStrictEqual(last, [])
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
      const { state, last } = apply(serving(3), [roll, ready(3), probationOver(3), stop], { surge: 2 })
      assert.deepStrictEqual(last, ["Terminate 3", "Kill 4", "Terminate 1", "Kill 5", "Terminate 2"])
      assert.strictEqual(state.phase, "Stopping")
      assert.isUndefined(state.roll, "the roll ends with it, said to no one")
      const late = [ready(4), probationOver(3), roll, { _tag: "PauseAll" }, stop] as const
      assert.deepStrictEqual(apply(state, late).said, [[], [], [], [], []])
      const exits = [exited(4), exited(5), exited(0), exited(3), exited(2), exited(1)]
      const { state: over, said } = apply(state, exits)
      assert.deepStrictEqual(said, [[], [], [], [], [], ["Stopped"]])
      assert.strictEqual(over.phase, "Stopped")
      assert.deepStrictEqual(apply(over, [stop, exited(9)]).said, [[], []])
    })

    it("waits for the old workers a roll let go, still draining, before it has stopped", () => {
      // Slot 0 has rolled: its old worker (0) was asked to drain and exit, and has not yet.
      const { state, said } = apply(serving(2), [roll, ready(2), probationOver(2), stop])
      assert.deepStrictEqual(said[2], ["Terminate 0", "Log rolling worker", "Spawn 1:3"])
      assert.deepStrictEqual(said[3], ["Terminate 2", "Kill 3", "Terminate 1"], "worker 0, told already, not twice")
      const { state: left, said: exits } = apply(state, [exited(2, 0), exited(3), exited(1, 0)])
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

  describe("a forced stop", () => {
    it("kills every worker left, those draining too; stopped once each has exited", () => {
      const { state, said } = apply(serving(2), [roll, ready(2), stop, { _tag: "ForceStop" }])
      assert.deepStrictEqual(said[2], ["Terminate 0", "Terminate 2", "Terminate 1"])
      assert.deepStrictEqual(said[3], ["Kill 0", "Kill 2", "Kill 1"], "the paused old worker of slot 0 too")
      const { state: over, last } = apply(state, [exited(1, null, "SIGKILL"), exited(0), exited(2)])
      assert.deepStrictEqual(last, ["Stopped"])
      assert.strictEqual(over.phase, "Stopped")
    })

    it("before a stop, stops first: the workers not ready are killed as the others", () => {
      const { state, last } = apply(Pool.start(2)[0], [ready(0), { _tag: "ForceStop" }])
      assert.deepStrictEqual(last, ["Kill 0", "Kill 1"])
      assert.strictEqual(state.phase, "Stopping")
      assert.deepStrictEqual(apply(apply(state, [exited(0), exited(1)]).state, [{ _tag: "ForceStop" }]).last, [])
    })
  })

  describe("a worker that could not be started", () => {
    const spawnFailed = (id: number): Pool.Event => ({ _tag: "SpawnFailed", id, cause: "spawn EAGAIN" })

    it("at start-up fails it, with the cause and no pid", () => {
      const { state, last } = apply(Pool.start(2)[0], [spawnFailed(1)])
      assert.deepStrictEqual(state.failure, { _tag: "SpawnFailed", slot: 1, cause: "spawn EAGAIN" })
      assert.deepStrictEqual(last, ["StartupFailed 1:-", "Kill 0"])
    })

    it("later is started again after the backoff; in a roll, stops it with the cause", () => {
      const { last } = apply(serving(2), [exited(1), spawnFailed(2)])
      assert.deepStrictEqual(last, ["Log worker exited before it was ready", "ScheduleRespawn 1 1000"])
      const rolled = apply(serving(2), [roll, spawnFailed(2)])
      assert.deepStrictEqual(rolled.last, ["Log worker exited before it was ready", "RollStopped SpawnFailed 0:-"])
      assert.deepStrictEqual(servers(rolled.state), [0, 1], "the old workers serve on")
    })

    it("as an action that failed: the same", () => {
      const [state] = Pool.start(1)
      const spawn: Pool.Action = { _tag: "Spawn", slot: 0, id: 0, passed: [] }
      const { state: failed } = apply(state, [{ _tag: "ActionFailed", action: spawn, cause: "EAGAIN" }])
      assert.deepStrictEqual(failed.failure, { _tag: "SpawnFailed", slot: 0, cause: "EAGAIN" }, "with its cause")
      const other: Pool.Action = { _tag: "Pause", id: 0 }
      assert.deepStrictEqual(apply(state, [{ _tag: "ActionFailed", action: other, cause: "x" }]), {
        state,
        said: [[]],
        last: []
      })
    })
  })

  describe("the group's sockets", () => {
    const held: Pool.Sockets = { key: undefined, name: "web", fds: [10, 11] }
    const shared: Pool.Sockets = { key: undefined, name: "unix", fds: [20] }
    const request = (address: string, nth = 0) => ({ address, name: undefined, backlog: 511, nth })
    const ask = (id: number, n: number, address: string): Pool.Event => ({
      _tag: "ListenAsked",
      id,
      ask: n,
      request: request(address)
    })

    it("each worker is started with its slot's socket of every address, in order", () => {
      const [, actions] = Pool.start(2, [held, shared])
      assert.deepStrictEqual(
        actions.flatMap((a) => (a._tag === "Spawn" ? [a.passed] : [])),
        [
          [
            { fd: 10, name: "web" },
            { fd: 20, name: "unix" }
          ],
          [
            { fd: 11, name: "web" },
            { fd: 20, name: "unix" }
          ]
        ]
      )
    })

    it("an address asked for is bound once; every ask meanwhile waits, and each gets its own slot's socket", () => {
      const key = Pool.keyOf(request(":8080"))
      const bound: Pool.Event = { _tag: "Bound", key, name: "unknown", fds: [30, 31] }
      const { state, said } = apply(Pool.start(2)[0], [ask(0, 0, ":8080"), ask(1, 0, ":8080"), bound])
      assert.deepStrictEqual(said, [[`Bind ${key}`], [], ["SendListener 0 0 fd 30", "SendListener 1 0 fd 31"]])
      assert.deepStrictEqual(state.binding, [])
      // Held for the service's life: a later ask, and every later worker, gets it.
      assert.deepStrictEqual(apply(state, [ask(1, 1, ":8080")]).last, ["SendListener 1 1 fd 31"])
      const { state: ready2 } = apply(state, [ready(0), ready(1)])
      const { last } = apply(ready2, [exited(1)])
      assert.deepStrictEqual(last, [
        "Log worker died",
        "Spawn 1:2",
        "Log lending the slot's sockets to another worker",
        "Lend 0 slot 1 fd 31"
      ])
      const [, respawned] = Pool.transition(ready2, exited(1), rules)
      assert.deepStrictEqual(
        respawned.find((a) => a._tag === "Spawn"),
        {
          _tag: "Spawn",
          slot: 1,
          id: 2,
          passed: [{ fd: 31, name: "unknown" }]
        }
      )
    })

    it("a failed bind answers every ask that waited with why; the next ask binds again", () => {
      const key = Pool.keyOf(request("nowhere"))
      const failure = { _tag: "InvalidAddress", address: "nowhere", detail: "no port" } as const
      const { state, said } = apply(Pool.start(2)[0], [
        ask(0, 0, "nowhere"),
        ask(1, 3, "nowhere"),
        { _tag: "BindFailed", key, failure }
      ])
      assert.deepStrictEqual(said[2], ["RefuseListen 0 0 InvalidAddress", "RefuseListen 1 3 InvalidAddress"])
      assert.deepStrictEqual(apply(state, [ask(0, 1, "nowhere")]).last, [`Bind ${key}`])
    })

    it("an ask of a worker gone is not answered", () => {
      const key = Pool.keyOf(request(":8080"))
      const { last } = apply(Pool.start(2)[0], [
        ask(0, 0, ":8080"),
        ask(1, 0, ":8080"),
        exited(1),
        { _tag: "Bound", key, name: "unknown", fds: [30, 31] }
      ])
      assert.deepStrictEqual(last, ["SendListener 0 0 fd 30"])
    })
  })
})

describe("loans: a slot with no worker that accepts is served by another", () => {
  // Two SO_REUSEPORT groups (one socket a slot) and a unix socket every slot shares.
  const groups = (workers: number): Array<Pool.Sockets> => [
    { key: undefined, name: "web", fds: Array.from({ length: workers }, (_, slot) => 10 + slot) },
    { key: undefined, name: "api", fds: Array.from({ length: workers }, (_, slot) => 20 + slot) },
    { key: undefined, name: "unix", fds: [30] }
  ]
  const lent = "Log lending the slot's sockets to another worker"
  const servingWith = (workers: number): Pool.State => {
    const { state } = apply(
      Pool.start(workers, groups(workers))[0],
      Array.from({ length: workers }, (_, id) => ready(id))
    )
    assert.strictEqual(state.phase, "Serving")
    return state
  }
  const loans = (state: Pool.State) => state.loans.map((loan) => `${loan.slot}>${loan.to}`)

  it("a dead slot's socket of each group is lent to a worker that accepts, until its own worker is ready", () => {
    const { state, said } = apply(servingWith(2), [
      exited(1, null, "SIGKILL"),
      exited(2),
      { _tag: "RespawnDue", slot: 1 },
      ready(3)
    ])
    assert.deepStrictEqual(said, [
      ["Log worker died", "Spawn 1:2", lent, "Lend 0 slot 1 fd 11,21"],
      ["Log worker exited before it was ready", "ScheduleRespawn 1 1000"],
      ["Spawn 1:3"],
      ["Reclaim 0 slot 1 fd 11,21", "Log worker serving", "Serving 3"]
    ])
    assert.deepStrictEqual(state.loans, [])
    assert.deepStrictEqual(
      apply(servingWith(2), [exited(1), exited(2)]).state.loans,
      [{ slot: 1, to: 0, fds: [11, 21] }],
      "the loan stays through the replacements' deaths and backoff"
    )
  })

  it("spreads over the workers that accept: of four, two dead slots go to two different workers", () => {
    const { state, said } = apply(servingWith(4), [exited(1), exited(2)])
    assert.deepStrictEqual(said[0]!.slice(-1), ["Lend 2 slot 1 fd 11,21"], "the nearest slot after it")
    // Worker 2 dies holding slot 1's loan: both slots are lent again, one to each worker left.
    assert.deepStrictEqual(said[1]!.slice(2), [lent, "Lend 3 slot 1 fd 11,21", lent, "Lend 0 slot 2 fd 12,22"])
    assert.deepStrictEqual(loans(state), ["1>3", "2>0"])
  })

  it("with no worker that accepts, nothing is lent; the first that does again takes every dead slot", () => {
    const { state, said } = apply(servingWith(2), [exited(1), exited(0), ready(2)])
    assert.deepStrictEqual(said[1], ["Log worker died", "Spawn 0:3"], "nothing to take back from a worker gone")
    assert.deepStrictEqual(said[2], ["Log worker serving", "Serving 2", lent, "Lend 2 slot 0 fd 10,20"])
    assert.deepStrictEqual(loans(state), ["0>2"])
  })

  it("moves a loan before its borrower is paused (a roll's canary), and takes it back once the slot serves", () => {
    const start = apply(servingWith(3), [exited(2), exited(3)]).state
    assert.deepStrictEqual(loans(start), ["2>0"])
    const { state, said } = apply(start, [roll, ready(4), probationOver(4), ready(5), ready(6)])
    // The canary of slot 0 is ready: its old worker, the borrower, gives the loan back before it is paused.
    assert.deepStrictEqual(said[1], [
      "Reclaim 0 slot 2 fd 12,22",
      "Serving 4",
      "Pause 0",
      "StartProbation 4",
      lent,
      "Lend 4 slot 2 fd 12,22"
    ])
    assert.deepStrictEqual(said.at(-1), ["Reclaim 4 slot 2 fd 12,22", "Serving 6", "RollDone 0:4 1:5 2:6"])
    assert.deepStrictEqual(state.loans, [])
  })

  it("a pause of the group takes every loan back first; its resume lends again after the resumes", () => {
    const { said } = apply(servingWith(2), [exited(1), { _tag: "PauseAll" }, { _tag: "ResumeAll" }])
    assert.deepStrictEqual(said[1], ["Reclaim 0 slot 1 fd 11,21", "Pause 0"])
    assert.deepStrictEqual(said[2], ["Resume 0", lent, "Lend 0 slot 1 fd 11,21"])
  })

  it("a stop takes every loan back before its borrower drains", () => {
    const { state, last } = apply(servingWith(2), [exited(1), stop])
    assert.deepStrictEqual(last, ["Reclaim 0 slot 1 fd 11,21", "Terminate 0", "Kill 2"])
    assert.deepStrictEqual(state.loans, [])
  })

  it("nothing is lent before the group serves, nor where every socket is shared", () => {
    const [starting] = Pool.start(2, groups(2))
    assert.deepStrictEqual(apply(starting, [ready(0)]).state.loans, [])
    const shared = apply(Pool.start(2, [{ key: undefined, name: "unix", fds: [30] }])[0], [
      ready(0),
      ready(1),
      exited(1)
    ])
    assert.deepStrictEqual(shared.last, ["Log worker died", "Spawn 1:2"])
  })

  it("a group bound while a slot is lent: its socket of that slot is lent too, and taken back with the others", () => {
    const request = { address: ":9000", name: undefined, backlog: 511, nth: 0 }
    const key = Pool.keyOf(request)
    const { state, said } = apply(servingWith(2), [
      exited(1),
      { _tag: "ListenAsked", id: 0, ask: 0, request },
      { _tag: "Bound", key, name: "late", fds: [40, 41] },
      ready(2)
    ])
    assert.deepStrictEqual(said[2], ["SendListener 0 0 fd 40", "Lend 0 slot 1 fd 41"])
    assert.deepStrictEqual(said[3], ["Reclaim 0 slot 1 fd 11,21,41", "Log worker serving", "Serving 2"])
    assert.deepStrictEqual(state.loans, [])
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
/**
 * A world that plays the workers' part. With `deaths`, any worker may die at any moment; without, only those told to
 * end do (or a start-up failing before the group is ready).
 */
const world = (
  seed: number,
  workers: number,
  given: Pool.Rules,
  deaths: boolean,
  sockets: ReadonlyArray<Pool.Sockets> = []
) => {
  const alive = new Set<number>()
  const saidReady = new Set<number>()
  const paused = new Set<number>()
  const told = new Set<number>()
  const spawned = new Set<number>()
  const probations = new Set<number>()
  const respawns = new Set<number>()
  /** Workers told to drain and exit (or killed): they exit in the end. */
  const ending = new Set<number>()
  // The last steps, written out only when a check fails.
  const trace: Array<readonly [Pool.Event, ReadonlyArray<Pool.Action>]> = []
  const counts = {
    groupReady: 0,
    stopped: 0,
    rollsEnded: 0,
    rollsBegun: 0,
    handedBack: 0,
    respawns: 0,
    loans: 0,
    memory: 0
  }
  /** The sockets lent, each to the worker that accepts on it now. */
  const borrowed = new Map<number, number>()
  let [state, first] = Pool.start(workers, sockets)
  let rollOpen = false
  // The first id of the workers started since the roll under way was asked for.
  let rollAskedAt = 0
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
        if (action._tag === "Terminate" && [...borrowed.values()].includes(action.id)) {
          fail(`worker ${action.id} told to end while it holds a loan`)
        }
        if (action._tag === "StartProbation") probations.add(action.id)
        else ending.add(action.id)
        return
      case "Pause":
        known(action.id)
        if ([...borrowed.values()].includes(action.id)) fail(`worker ${action.id} paused while it holds a loan`)
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
      case "RollDone":
      case "RollStopped":
        // Every worker that serves once a roll is done was started after the roll was asked for.
        for (const slot of action._tag === "RollDone" ? state.slots : []) {
          if (slot.serving !== undefined && slot.serving < rollAskedAt) fail(`worker ${slot.serving} predates the roll`)
        }
        if (!rollOpen) fail(`${action._tag} without a roll`)
        rollOpen = false
        counts.rollsEnded++
        if (action._tag === "RollStopped" && action.failure._tag === "HandedBack") counts.handedBack++
        return
      case "Lend":
        counts.loans++
        // Only to a worker that serves and accepts: told it serves, not paused, not asked to end.
        known(action.id)
        if (!told.has(action.id) || paused.has(action.id) || ending.has(action.id)) {
          fail(`lent to worker ${action.id}, which does not accept`)
        }
        for (const fd of action.fds) {
          if (borrowed.has(fd)) fail(`fd ${fd} lent to ${action.id} while ${borrowed.get(fd)} has it`)
          borrowed.set(fd, action.id)
        }
        return
      case "Reclaim":
        known(action.id)
        for (const fd of action.fds) {
          if (borrowed.get(fd) !== action.id) fail(`fd ${fd} taken back from ${action.id}, which did not have it`)
          borrowed.delete(fd)
        }
        return
      case "ReplaceForMemory":
        // One slot at a time, never while a roll runs, and only a worker that serves its slot.
        known(action.id)
        counts.memory++
        if (state.roll !== undefined) fail("a replacement for memory during a roll")
        if (state.slots[action.slot]?.serving !== action.id) fail(`worker ${action.id} replaced, not serving`)
        if (state.slots.filter((slot) => slot.overMemory).length !== 1) fail("two slots replaced for memory")
        if (underWay(state) > 1) fail("a replacement for memory beside another slot under way")
        return
      case "Log":
      case "Bind":
      case "SendListener":
      case "RefuseListen":
        return
    }
  }

  // After every step: what the workers were lent is the pool's loans; each is held by a worker that accepts, for a
  // slot with none that does; and every slot with none that does is lent while any worker accepts.
  const checkLoans = () => {
    const held = state.loans.flatMap((loan) => loan.fds.map((fd) => `${fd}>${loan.to}`)).toSorted()
    const lent = [...borrowed].map(([fd, id]) => `${fd}>${id}`).toSorted()
    if (held.join() !== lent.join()) fail(`loans ${held.join()} but lent ${lent.join()}`)
    const acceptors = state.slots.map((_, slot) => Pool.acceptorOf(state, slot))
    const serves = state.phase === "Serving"
    for (const loan of state.loans) {
      if (!serves) fail("a loan while the group does not serve")
      if (acceptors[loan.slot] !== undefined)
        fail(`slot ${loan.slot} lent while worker ${acceptors[loan.slot]} accepts`)
      if (!acceptors.includes(loan.to)) fail(`slot ${loan.slot} lent to ${loan.to}, which accepts for no slot`)
    }
    const anyone = acceptors.some((id) => id !== undefined)
    for (const [slot, id] of acceptors.entries()) {
      const orphan = serves && id === undefined && Pool.lendable(state, slot).length > 0
      if (orphan && anyone && !state.loans.some((loan) => loan.slot === slot)) fail(`slot ${slot} not lent`)
    }
  }

  const checkState = () => {
    checkLoans()
    const ids = Pool.everyWorker(state)
    if (new Set(ids).size !== ids.length) fail("a worker in two places")
    for (const id of ids) if (!alive.has(id)) fail(`worker ${id} kept after it exited`)
    // The old workers a roll let go accept nothing, and were asked to end.
    for (const id of state.retiring) if (!paused.has(id) || !ending.has(id)) fail(`old worker ${id} not let go`)
    // A roll starts at most `surge` new workers at a time, and the canary alone until its probation has passed; a
    // death's replacement starts at once, though, whatever the roll does.
    const current = state.roll
    const most = current === undefined ? workers : current.tried || !given.probation ? given.surge : 1
    if (!deaths && underWay(state) > most) fail(`${underWay(state)} slots under way, more than ${most}`)
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
    const before = state
    const wasRolling = state.roll !== undefined
    const [next, actions] = Pool.transition(state, event, given)
    trace.push([event, actions])
    // The group ready and the pool stopped are its state: each counted as the state says it.
    if (state.phase === "Starting" && next.phase === "Serving") counts.groupReady++
    if (state.phase !== "Stopped" && next.phase === "Stopped") counts.stopped++
    state = next
    // A roll begins (it may wait for a place: an old worker still draining), or may end in the same step (every slot
    // replaced already); a refused one leaves nothing.
    const ended = actions.some((action) => action._tag === "RollDone" || action._tag === "RollStopped")
    if (!wasRolling && event._tag === "Roll" && (state.roll !== undefined || ended)) {
      rollOpen = true
      rollAskedAt = before.nextId
      counts.rollsBegun++
    }
    if (event._tag === "Stop") rollOpen = false
    if (event._tag === "Exited") {
      alive.delete(event.id)
      ending.delete(event.id)
      for (const [fd, id] of borrowed) if (id === event.id) borrowed.delete(fd)
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
      if (deaths || ending.has(id) || state.phase === "Starting") {
        events.push(exited(id, random(id)() < 0.5 ? 1 : null, "SIGKILL"))
      }
    }
    for (const id of probations) events.push(probationOver(id))
    for (const slot of respawns) events.push({ _tag: "RespawnDue", slot })
    if (!stopping) {
      events.push(roll)
      if (state.roll === undefined) events.push({ _tag: "PauseAll" })
      if (state.paused) events.push({ _tag: "ResumeAll" })
      // A worker that serves may stay above the memory limit, since its start or not.
      for (const slot of state.slots) {
        if (slot.serving !== undefined) {
          events.push({ _tag: "OverMemory", id: slot.serving, rss: 1, sinceStart: random(slot.serving)() < 0.5 })
        }
      }
    }
    return events
  }

  return {
    send,
    possible,
    alive,
    probations,
    respawns,
    ending,
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
    const seen = { started: 0, failed: 0, rolls: 0, handedBack: 0, respawns: 0, loans: 0, memory: 0 }
    for (let seed = 1; seed <= 400; seed++) {
      const next = random(seed)
      const workers = 1 + Math.floor(next() * 4)
      const given: Pool.Rules = { ...rules, surge: 1 + Math.floor(next() * 3), probation: next() < 0.7 }
      // Mostly a SO_REUSEPORT group (a socket a slot) and a shared socket, whose dead slots are lent.
      const sockets: Array<Pool.Sockets> =
        next() < 0.8
          ? [
              { key: undefined, name: "web", fds: Array.from({ length: workers }, (_, slot) => 100 + slot) },
              { key: undefined, name: "unix", fds: [99] }
            ]
          : []
      const w = world(seed, workers, given, next() < 0.7, sockets)
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
            ...[...w.ending].map((id) => exited(id, 0)),
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
      seen.loans += w.counts.loans
      seen.memory += w.counts.memory
    }
    // The sequences reach every case: start-ups that fail, rolls, hand-backs, respawns after a backoff, loans, and
    // replacements for memory.
    for (const [what, n] of Object.entries(seen)) assert.isAbove(n, 10, what)
  })
})
