/**
 * The supervisor's state machine, as a pure function: every phase, every
 * event in it, and the order of the actions.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Machine from "../src/internal/machine.ts"

type State = Machine.State<string, string>
type Event = Machine.Event<string, string, string>
type Action = Machine.Action<string, string, string>
type Phase = Machine.Phase<string, string>

const rules: Machine.Rules = {
  canHandOff: true,
  shutdownDelay: false,
  probation: false,
  canRoll: false,
  waitsForGroup: false
}
// Events arrive at 1000 ms; a restart under way began at 0 unless it says otherwise.
const step = (state: State, event: Event, given: Partial<Machine.Rules> = {}, now = 1000) =>
  Machine.transition(state, event, { ...rules, ...given }, now)
// What the actions are, logs named by their message.
const tags = (actions: ReadonlyArray<Action>) =>
  actions.map((action) => (action._tag === "Log" ? `Log ${action.message.replace("effect-grace: ", "")}` : action._tag))

const at = (phase: Phase, parentPid?: number): State => ({ ...Machine.initial(parentPid), phase })
// The readiness the probes see in `state`.
const readiness = (state: State, given: Partial<Machine.Rules> = {}) => Machine.readiness(state, { ...rules, ...given })
const starting = at({ _tag: "Starting" })
const serving = at({ _tag: "Serving" })
const restarting = at({ _tag: "Restarting", replies: ["first"], since: 0 })
const delaying = at({ _tag: "Delaying", signals: 1 })
const handingOff = at({ _tag: "Draining", reason: "handoff", signals: 0, successor: "successor" })
const terminating = at({ _tag: "Draining", reason: "terminate", signals: 1 })
const stopped = at({ _tag: "Stopped", reason: "terminate", forced: false })

const restart = (reply = "second", by = "call"): Event => ({ _tag: "RestartRequested", reply, by, kind: "upgrade" })
const term = (source: Machine.Source = "signal"): Event => ({
  _tag: "Terminate",
  source,
  signal: source === "signal" ? "SIGTERM" : undefined
})
const ready: Event = { _tag: "SuccessorReady", successor: "successor", pid: 200 }

const refusal = (state: State, event: Event, given?: Partial<Machine.Rules>) => {
  const [next, actions] = step(state, event, given)
  assert.deepStrictEqual(next, state, "a refusal changes nothing")
  assert.deepStrictEqual(tags(actions), [tags([actions[0]!])[0]!, "Refuse"], "logged, then refused")
  return actions[1] as Extract<Action, { _tag: "Refuse" }>
}

/** A request kept for later: the state's pending restart, and the wait said. */
const kept = (state: State, event: Event, given?: Partial<Machine.Rules>) => {
  const [next, actions] = step(state, event, given)
  assert.deepStrictEqual(next.phase, state.phase, "the restart under way goes on")
  assert.deepStrictEqual(tags(actions).slice(1), ["Queue"], "logged, then kept")
  return { next, queued: actions[1] as Extract<Action, { _tag: "Queue" }> }
}

describe("the supervisor's state machine", () => {
  it("starts in Starting, with the parent it took over from", () => {
    assert.deepStrictEqual(Machine.initial(41), {
      phase: { _tag: "Starting" },
      parentPid: 41,
      served: false,
      closing: false,
      groupServing: false,
      pending: undefined
    })
    assert.strictEqual(readiness(Machine.initial(41)), "starting")
  })

  it("is ready once started, and only then: nothing is announced after a termination", () => {
    assert.deepStrictEqual(step(starting, { _tag: "Started" }), [
      { ...serving, served: true },
      [{ _tag: "AnnounceReady" }]
    ])
    assert.strictEqual(readiness(serving), "serving")
    for (const state of [serving, terminating, stopped])
      assert.deepStrictEqual(step(state, { _tag: "Started" }), [state, []])
  })

  it("a failed start-up closes what it built and finishes, without a drain", () => {
    const [next, actions] = step(starting, { _tag: "StartupFailed", cause: "boom" })
    assert.deepStrictEqual(next.phase, { _tag: "Stopped", reason: "failed", forced: false, failure: "boom" })
    assert.deepStrictEqual(tags(actions), ["CloseApplication", "Finish"])
    // A start-up a termination cut fails too: the drain goes on, and its end carries the failure, for whoever runs it.
    const [cut, none] = step(terminating, { _tag: "StartupFailed", cause: "boom" })
    assert.deepStrictEqual([cut.phase, none], [terminating.phase, []], "a cut start-up drains")
    assert.deepStrictEqual(step(cut, { _tag: "Drained", millis: 3 })[0].phase, {
      _tag: "Stopped",
      reason: "terminate",
      forced: false,
      failure: "boom"
    })
    const served = { ...serving, served: true }
    assert.deepStrictEqual(step(served, { _tag: "StartupFailed", cause: "late" }), [served, []], "once served, nothing")
  })

  it("restarts from serving: logged, RELOADING, then the restart", () => {
    const [next, actions] = step(serving, restart("second", "SIGUSR2"))
    assert.deepStrictEqual(next.phase, { _tag: "Restarting", replies: ["second"], since: 1000 })
    assert.deepStrictEqual(tags(actions), ["Log restart requested", "NotifyReloading", "StartRestart"])
    assert.deepStrictEqual((actions[0] as Extract<Action, { _tag: "Log" }>).annotations, { by: "SIGUSR2" })
  })

  it("keeps a restart asked before ready, during one, or while the parent drains; later ones join it", () => {
    const early = kept(starting, restart())
    assert.deepStrictEqual(early.next.pending, { kind: "upgrade", replies: ["second"], passedOn: false })
    assert.deepStrictEqual(early.queued, { _tag: "Queue", kind: "upgrade", waitingFor: "the start-up" })
    const during = kept(restarting, restart())
    assert.strictEqual(during.queued.waitingFor, "the restart under way")
    const joined = kept(during.next, restart("third", "SIGUSR2"))
    assert.deepStrictEqual(
      joined.next.pending,
      { kind: "upgrade", replies: ["second", "third"], passedOn: false },
      "one pending"
    )
    const parent = kept(at({ _tag: "Serving" }, 41), restart())
    assert.strictEqual(parent.queued.waitingFor, "the parent (pid 41) to exit")
    // A signal's request has no caller to answer, and is kept all the same.
    const signalled: Event = { _tag: "RestartRequested", reply: undefined, by: "SIGUSR2", kind: "upgrade" }
    assert.deepStrictEqual(kept(restarting, signalled).next.pending?.replies, [])
  })

  it("refuses only where nothing can honour it: stopping, or unable to restart that way", () => {
    for (const state of [delaying, terminating, stopped]) {
      const refused = refusal(state, restart())
      assert.deepStrictEqual(refused.refusal, { _tag: "NotServing", state: "draining" })
      assert.deepStrictEqual(refused.replies, ["second"], "the refusal answers the one who asked")
    }
    assert.deepStrictEqual(refusal(serving, restart(), { canHandOff: false }).refusal, {
      _tag: "RestartUnsupported",
      kind: "upgrade"
    })
    assert.deepStrictEqual(refusal(restarting, restart(), { canHandOff: false }).refusal, {
      _tag: "RestartUnsupported",
      kind: "upgrade"
    })
  })

  it("once handed off, passes a restart on to the successor, which serves now", () => {
    const [next, actions] = step(handingOff, restart("late", "SIGUSR2"))
    assert.deepStrictEqual(next, handingOff)
    assert.deepStrictEqual(actions.slice(1), [
      { _tag: "Forward", successor: "successor", kind: "upgrade", replies: ["late"] }
    ])
  })

  it("a restart the parent passed on does not wait for the parent's drain: the parent waits for its outcome", () => {
    const passed: Event = { _tag: "RestartRequested", reply: "passed", by: "parent", kind: "upgrade", passedOn: true }
    const [next, actions] = step(at({ _tag: "Serving" }, 41), passed)
    assert.deepStrictEqual(next.phase, { _tag: "Restarting", replies: ["passed"], since: 1000 })
    assert.deepStrictEqual(tags(actions), ["Log restart requested", "NotifyReloading", "StartRestart"])
    // Joined to one kept for the parent's exit, both begin at once.
    const { next: waiting } = kept(at({ _tag: "Serving" }, 41), restart())
    const [joined, more] = step(waiting, passed)
    assert.deepStrictEqual(joined.phase, { _tag: "Restarting", replies: ["second", "passed"], since: 1000 })
    assert.deepStrictEqual(tags(more), ["Log restart requested", "NotifyReloading", "StartRestart"])
    assert.isUndefined(joined.pending)
  })

  it("the parent's exit runs what was kept for it; without one, nothing", () => {
    const { next: waiting } = kept(at({ _tag: "Serving" }, 41), restart())
    const [next, actions] = step(waiting, { _tag: "ParentExited" })
    assert.deepStrictEqual(next.phase, { _tag: "Restarting", replies: ["second"], since: 1000 })
    assert.isUndefined(next.pending)
    assert.deepStrictEqual(tags(actions), ["NotifyReloading", "StartRestart"])
    assert.deepStrictEqual(step(at({ _tag: "Serving" }, 41), { _tag: "ParentExited" }), [serving, []])
  })

  it("ready with a restart kept: READY first, then the restart it waited for", () => {
    const { next: waiting } = kept(starting, restart())
    const [next, actions] = step(waiting, { _tag: "Started" })
    assert.deepStrictEqual(tags(actions), ["AnnounceReady", "NotifyReloading", "StartRestart"])
    assert.deepStrictEqual(next.phase, { _tag: "Restarting", replies: ["second"], since: 1000 })
  })

  it("hands off when the successor is ready: released, MAINPID, unready, then the drain", () => {
    const [next, actions] = step(restarting, ready)
    assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "handoff", signals: 0, successor: "successor" })
    assert.deepStrictEqual(tags(actions), ["ReleaseSuccessor", "HandOff", "BeginDrain"])
    assert.deepStrictEqual(actions[1], { _tag: "HandOff", replies: ["first"], pid: 200, ready: true, millis: 1000 })
    assert.strictEqual(readiness(next), "handed off")
  })

  it("hands off with a restart kept: it goes to the successor, for its callers, once", () => {
    const { next: waiting } = kept(restarting, restart())
    const [next, actions] = step(waiting, ready)
    assert.deepStrictEqual(tags(actions), ["ReleaseSuccessor", "HandOff", "Forward", "BeginDrain"])
    assert.deepStrictEqual(actions[2], {
      _tag: "Forward",
      successor: "successor",
      kind: "upgrade",
      replies: ["second"]
    })
    assert.isUndefined(next.pending)
  })

  it("kills a successor ready when no restart is under way any more", () => {
    for (const state of [serving, terminating, delaying, stopped]) {
      assert.deepStrictEqual(step(state, ready), [state, [{ _tag: "KillSuccessor", successor: "successor" }]])
    }
  })

  it("a failed restart serves on and answers the caller", () => {
    const [next, actions] = step(restarting, { _tag: "RestartFailed", failure: "exited" })
    assert.deepStrictEqual(next, serving)
    assert.deepStrictEqual(actions, [{ _tag: "RestartFailed", replies: ["first"], failure: "exited" }])
    assert.deepStrictEqual(step(terminating, { _tag: "RestartFailed", failure: "late" }), [terminating, []])
  })

  it("a failed restart with one kept: the kept one runs at once (it may carry the fix)", () => {
    const { next: waiting } = kept(restarting, restart())
    const [next, actions] = step(waiting, { _tag: "RestartFailed", failure: "exited" })
    assert.deepStrictEqual(tags(actions), ["RestartFailed", "NotifyReloading", "StartRestart"])
    assert.deepStrictEqual(next.phase, { _tag: "Restarting", replies: ["second"], since: 1000 })
  })

  it("terminates while serving: logged, unready, STOPPING=1, then the drain, or the shutdown delay", () => {
    const [next, actions] = step(serving, term())
    assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
    assert.deepStrictEqual(tags(actions), ["Log termination requested", "NotifyStopping", "BeginDrain"])
    assert.strictEqual(readiness(next), "stopping")
    assert.isFalse(next.closing, "no delay: the servers are not told to close before the drain")
    const [delayed, first] = step(serving, term(), { shutdownDelay: true })
    assert.deepStrictEqual(delayed.phase, { _tag: "Delaying", signals: 1 })
    assert.deepStrictEqual(tags(first), ["Log termination requested", "NotifyStopping", "BeginDelay"])
    assert.strictEqual(readiness(delayed), "stopping")
    assert.isTrue(delayed.closing, "the delay: every response says Connection: close")
    const [draining, then] = step(delayed, { _tag: "DelayOver" })
    assert.deepStrictEqual(draining.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
    assert.deepStrictEqual(tags(then), ["BeginDrain"])
  })

  it("terminates during start-up: the start-up is interrupted, what it built drains, never READY", () => {
    const [next, actions] = step(starting, term())
    assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
    assert.deepStrictEqual(tags(actions), [
      "Log termination requested",
      "NotifyStopping",
      "InterruptStartup",
      "BeginDrain"
    ])
    assert.strictEqual(readiness(next), "stopping")
    // No shutdown delay for what never served.
    assert.deepStrictEqual(step(starting, term(), { shutdownDelay: true })[0].phase._tag, "Draining")
  })

  it("a termination during a restart interrupts it and refuses its caller before STOPPING=1", () => {
    const [next, actions] = step(restarting, term("call"))
    assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "terminate", signals: 0 })
    assert.deepStrictEqual(tags(actions), [
      "Log termination requested",
      "InterruptRestart",
      "Refuse",
      "NotifyStopping",
      "BeginDrain"
    ])
    assert.strictEqual(readiness(next), "stopping")
    assert.deepStrictEqual(actions[2], {
      _tag: "Refuse",
      replies: ["first"],
      refusal: { _tag: "NotServing", state: "draining" }
    })
  })

  it("a termination refuses what was kept for later too, and forgets it", () => {
    const { next: waiting } = kept(restarting, restart())
    const [next, actions] = step(waiting, term())
    assert.deepStrictEqual(tags(actions).slice(0, 4), [
      "Log termination requested",
      "Refuse",
      "InterruptRestart",
      "Refuse"
    ])
    assert.deepStrictEqual((actions[1] as Extract<Action, { _tag: "Refuse" }>).replies, ["second"])
    assert.isUndefined(next.pending)
  })

  it("a second termination signal forces the exit; calls, the scope and one signal in a hand-off do not", () => {
    const [twice, forcing] = step(terminating, term())
    assert.deepStrictEqual(tags(forcing), ["Log termination requested", "ForceExit"])
    assert.deepStrictEqual(twice.phase, { _tag: "Draining", reason: "terminate", signals: 2 })
    assert.isTrue(Machine.isForced(twice))
    assert.isFalse(Machine.isForced(terminating))
    assert.deepStrictEqual(tags(step(delaying, term())[1]), ["Log termination requested", "ForceExit"])
    for (const source of ["call", "scope"] as const)
      assert.deepStrictEqual(step(terminating, term(source)), [terminating, []])
    const [once, actions] = step(handingOff, term())
    assert.deepStrictEqual(tags(actions), ["Log termination requested"])
    assert.deepStrictEqual(tags(step(once, term())[1]), ["Log termination requested", "ForceExit"])
    assert.deepStrictEqual(step(stopped, term()), [stopped, []])
  })

  it("a drain's end finishes, forced or not, with its reason and length", () => {
    const [next, actions] = step(handingOff, { _tag: "Drained", millis: 12 })
    assert.deepStrictEqual(next.phase, { _tag: "Stopped", reason: "handoff", forced: false })
    assert.deepStrictEqual(actions, [{ _tag: "Finish", reason: "handoff", forced: false, millis: 12 }])
    const forced = at({ _tag: "Draining", reason: "terminate", signals: 2 })
    assert.deepStrictEqual(step(forced, { _tag: "Drained", millis: 3 })[0].phase, {
      _tag: "Stopped",
      reason: "terminate",
      forced: true
    })
    assert.deepStrictEqual(step(serving, { _tag: "Drained", millis: 1 }), [serving, []])
    assert.deepStrictEqual(step(serving, { _tag: "DelayOver" }), [serving, []])
  })

  it("an action that failed: the restart's own work ends the restart; any other is logged, and nothing changes", () => {
    const failed: Event = { _tag: "ActionFailed", action: "StartRestart", failure: "broken" }
    assert.deepStrictEqual(step(restarting, failed), [
      serving,
      [{ _tag: "RestartFailed", replies: ["first"], failure: "broken" }]
    ])
    for (const action of ["AnnounceReady", "NotifyStopping", "Finish"] as const) {
      assert.deepStrictEqual(step(serving, { _tag: "ActionFailed", action, failure: "x" }), [serving, []])
    }
    assert.deepStrictEqual(step(terminating, failed), [terminating, []], "a restart over already")
  })

  describe("a successor on probation", () => {
    const probation = at({
      _tag: "Probation",
      replies: ["first"],
      successor: "successor",
      pid: 200,
      signals: 0,
      since: 0
    })

    it("ready with a window: watched, READY=1, unready, the servers paused; no MAINPID yet", () => {
      const [next, actions] = step(restarting, ready, { probation: true })
      assert.deepStrictEqual(next, probation)
      assert.deepStrictEqual(tags(actions), ["WatchSuccessor", "BeginProbation", "PauseServing"])
      assert.strictEqual(readiness(next), "handed off")
    })

    it("the window passes: is the successor alive? Then released, MAINPID, the drain", () => {
      assert.deepStrictEqual(step(probation, { _tag: "ProbationOver" }), [
        probation,
        [{ _tag: "ConfirmSuccessor", successor: "successor" }]
      ])
      const [next, actions] = step(probation, { _tag: "SuccessorAlive" })
      assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "handoff", signals: 0, successor: "successor" })
      assert.deepStrictEqual(tags(actions), ["ReleaseSuccessor", "HandOff", "BeginDrain"])
      assert.deepStrictEqual(actions[1], { _tag: "HandOff", replies: ["first"], pid: 200, ready: false, millis: 1000 })
      for (const event of [{ _tag: "ProbationOver" }, { _tag: "SuccessorAlive" }] as const) {
        assert.deepStrictEqual(step(serving, event), [serving, []])
      }
    })

    it("the successor exits within it: serving again, handed back with its exit", () => {
      const exited: Event = { _tag: "SuccessorExited", pid: 200, code: null, signal: "SIGKILL" }
      const [next, actions] = step(probation, exited)
      assert.deepStrictEqual(next, serving)
      assert.deepStrictEqual(actions, [
        { _tag: "HandBack", replies: ["first"], pid: 200, code: null, signal: "SIGKILL" }
      ])
      assert.strictEqual(readiness(next), "serving")
      // Another pid, or another phase: nothing.
      assert.deepStrictEqual(step(probation, { ...exited, pid: 201 }), [probation, []])
      assert.deepStrictEqual(step(handingOff, exited), [handingOff, []])
    })

    it("a restart is kept: passed on to the successor if it stays, run here if it dies in the window", () => {
      const { next: waiting, queued } = kept(probation, restart())
      assert.strictEqual(queued.waitingFor, "the successor's probation")
      const [, alive] = step(waiting, { _tag: "SuccessorAlive" })
      assert.deepStrictEqual(tags(alive), ["ReleaseSuccessor", "HandOff", "Forward", "BeginDrain"])
      const exited: Event = { _tag: "SuccessorExited", pid: 200, code: 1, signal: null }
      const [back, actions] = step(waiting, exited)
      assert.deepStrictEqual(tags(actions), ["HandBack", "NotifyReloading", "StartRestart"])
      assert.deepStrictEqual(back.phase, { _tag: "Restarting", replies: ["second"], since: 1000 })
    })

    it("a termination ends both: the successor told to terminate, the caller refused, STOPPING=1, the drain", () => {
      const [next, actions] = step(probation, term())
      assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
      assert.deepStrictEqual(tags(actions), [
        "Log termination requested",
        "TerminateSuccessor",
        "Refuse",
        "NotifyStopping",
        "BeginDrain"
      ])
      assert.strictEqual(readiness(next), "stopping")
      assert.deepStrictEqual(tags(step(next, term())[1]), ["Log termination requested", "ForceExit"])
    })
  })
})

describe("the supervisor's state machine: a primary's rolling restart, a worker's pause", () => {
  const primary: Partial<Machine.Rules> = { canRoll: true }
  const rolling = at({ _tag: "Rolling", replies: ["first"], since: 0 })
  const paused = at({ _tag: "Paused" })
  const probation = at({
    _tag: "Probation",
    replies: ["first"],
    successor: "successor",
    pid: 200,
    signals: 0,
    since: 0
  })
  const rollRequest = (reply = "second", by = "SIGHUP"): Extract<Event, { _tag: "RestartRequested" }> => ({
    _tag: "RestartRequested",
    reply,
    by,
    kind: "roll"
  })
  const rollRefusal = (state: State, given: Partial<Machine.Rules> = primary) => {
    const [next, actions] = step(state, rollRequest(), given)
    assert.deepStrictEqual(next, state, "a refusal changes nothing")
    assert.deepStrictEqual(tags(actions), ["Log rolling restart requested", "Refuse"], "logged, then refused")
    const refused = actions[1] as Extract<Action, { _tag: "Refuse" }>
    assert.deepStrictEqual(refused.replies, ["second"], "the refusal answers the one who asked")
    return refused.refusal
  }
  const workers = [
    { slot: 0, pid: 301 },
    { slot: 1, pid: 302 }
  ]
  const rollDone: Event = { _tag: "RollDone", pid: 100, workers }

  it("a roll from serving: logged with who asked, RELOADING, then the roll", () => {
    const [next, actions] = step(serving, rollRequest("second", "SIGHUP"), primary)
    assert.deepStrictEqual(next.phase, { _tag: "Rolling", replies: ["second"], since: 1000 })
    assert.deepStrictEqual(tags(actions), ["Log rolling restart requested", "NotifyReloading", "StartRoll"])
    assert.deepStrictEqual((actions[0] as Extract<Action, { _tag: "Log" }>).annotations, { by: "SIGHUP" })
    const [, called] = step(serving, rollRequest("second", "call"), primary)
    assert.deepStrictEqual((called[0] as Extract<Action, { _tag: "Log" }>).annotations, { by: "call" })
  })

  it("a roll needs a primary, not a native hand-off nor the parent gone", () => {
    assert.deepStrictEqual(rollRefusal(serving, { canRoll: false }), { _tag: "RestartUnsupported", kind: "roll" })
    assert.deepStrictEqual(rollRefusal(starting, { canRoll: false }), { _tag: "RestartUnsupported", kind: "roll" })
    assert.strictEqual(step(serving, rollRequest(), { canRoll: true, canHandOff: false })[0].phase._tag, "Rolling")
    assert.strictEqual(step(at({ _tag: "Serving" }, 41), rollRequest(), primary)[0].phase._tag, "Rolling")
  })

  it("a roll asked before ready, during a restart, a probation or a roll is kept; once stopping, refused", () => {
    for (const [state, waitingFor] of [
      [starting, "the start-up"],
      [restarting, "the restart under way"],
      [probation, "the successor's probation"],
      [rolling, "the roll under way"]
    ] as const) {
      const { next, queued } = kept(state, rollRequest(), primary)
      assert.deepStrictEqual(queued, { _tag: "Queue", kind: "roll", waitingFor }, state.phase._tag)
      assert.deepStrictEqual(next.pending, { kind: "roll", replies: ["second"], passedOn: false })
    }
    for (const state of [delaying, terminating, stopped]) {
      assert.deepStrictEqual(rollRefusal(state), { _tag: "NotServing", state: "draining" }, state.phase._tag)
    }
    // Once handed off: the successor primary rolls its own workers.
    assert.deepStrictEqual(step(handingOff, rollRequest(), primary)[1][1], {
      _tag: "Forward",
      successor: "successor",
      kind: "roll",
      replies: ["second"]
    })
  })

  it("an upgrade covers a roll: one kept becomes an upgrade, and a roll joins an upgrade kept", () => {
    const { next: roll } = kept(rolling, rollRequest(), primary)
    const { next: upgraded } = kept(roll, restart("third"), primary)
    assert.deepStrictEqual(upgraded.pending, { kind: "upgrade", replies: ["second", "third"], passedOn: false })
    const { next: joined } = kept(kept(restarting, restart(), primary).next, rollRequest("fourth"), primary)
    assert.deepStrictEqual(joined.pending, { kind: "upgrade", replies: ["second", "fourth"], passedOn: false })
    // The roll done, the upgrade kept runs.
    const [next, actions] = step(upgraded, rollDone, primary)
    assert.deepStrictEqual(tags(actions), ["RollDone", "NotifyReloading", "StartRestart"])
    assert.deepStrictEqual(next.phase, { _tag: "Restarting", replies: ["second", "third"], since: 1000 })
  })

  it("a successor ready during a roll is killed", () => {
    assert.deepStrictEqual(step(rolling, ready, primary), [
      rolling,
      [{ _tag: "KillSuccessor", successor: "successor" }]
    ])
  })

  it("the roll done: serving again, the caller answered, the new workers and the time said", () => {
    const [next, actions] = step(rolling, rollDone, primary)
    assert.deepStrictEqual(next, serving)
    assert.deepStrictEqual(actions, [{ _tag: "RollDone", replies: ["first"], pid: 100, workers, millis: 1000 }])
    // A second roll after it goes ahead.
    assert.strictEqual(step(next, rollRequest(), primary)[0].phase._tag, "Rolling")
  })

  it("the roll stopped: serving again, the caller refused with why; each end only in its own phase", () => {
    const [next, actions] = step(rolling, { _tag: "RollStopped", failure: "handed back" }, primary)
    assert.deepStrictEqual(next, serving)
    assert.deepStrictEqual(actions, [{ _tag: "RestartFailed", replies: ["first"], failure: "handed back" }])
    for (const state of [serving, restarting, terminating, stopped]) {
      assert.deepStrictEqual(step(state, rollDone, primary), [state, []], state.phase._tag)
      assert.deepStrictEqual(step(state, { _tag: "RollStopped", failure: "late" }, primary), [state, []])
    }
    assert.deepStrictEqual(step(rolling, { _tag: "RestartFailed", failure: "upgrade's" }, primary), [rolling, []])
  })

  it("a termination during a roll refuses its caller before STOPPING=1, then drains (the workers with it)", () => {
    const [next, actions] = step(rolling, term(), primary)
    assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
    assert.deepStrictEqual(tags(actions), ["Log termination requested", "Refuse", "NotifyStopping", "BeginDrain"])
    assert.strictEqual(readiness(next, primary), "stopping")
    assert.deepStrictEqual(actions[1], {
      _tag: "Refuse",
      replies: ["first"],
      refusal: { _tag: "NotServing", state: "draining" }
    })
    assert.notInclude(tags(actions), "InterruptRestart", "no successor to interrupt: the pool stops its workers")
    const [delayed, then] = step(rolling, term("call"), { ...primary, shutdownDelay: true })
    assert.deepStrictEqual(delayed.phase, { _tag: "Delaying", signals: 0 })
    assert.deepStrictEqual(tags(then), ["Log termination requested", "Refuse", "NotifyStopping", "BeginDelay"])
    // The roll's end after it says nothing.
    assert.deepStrictEqual(step(next, rollDone, primary), [next, []])
  })

  it("a worker paused by its primary: unready, the servers paused; resumed: they accept again", () => {
    const [next, actions] = step(serving, { _tag: "Pause" })
    assert.deepStrictEqual(next, paused)
    assert.deepStrictEqual(actions, [{ _tag: "PauseServing" }])
    assert.strictEqual(readiness(next), "handed off")
    const [back, resumed] = step(next, { _tag: "Resume" })
    assert.deepStrictEqual(back, serving)
    assert.deepStrictEqual(resumed, [{ _tag: "ResumeServing" }])
    assert.strictEqual(readiness(back), "serving")
  })

  it("pause only from serving, resume only from paused", () => {
    for (const state of [starting, paused, restarting, delaying, terminating, stopped]) {
      assert.deepStrictEqual(step(state, { _tag: "Pause" }), [state, []], state.phase._tag)
    }
    for (const state of [starting, serving, restarting, delaying, terminating, stopped]) {
      assert.deepStrictEqual(step(state, { _tag: "Resume" }), [state, []], state.phase._tag)
    }
  })

  it("a worker is ready once its primary says the group serves, and only while it serves", () => {
    const worker = { waitsForGroup: true }
    assert.strictEqual(readiness(serving, worker), "starting", "ready itself, but the group not yet")
    const [told, actions] = step(serving, { _tag: "GroupServing" }, worker)
    assert.deepStrictEqual(actions, [])
    assert.strictEqual(readiness(told, worker), "serving")
    assert.strictEqual(readiness(step(told, { _tag: "Pause" }, worker)[0], worker), "handed off")
    assert.strictEqual(readiness(step(paused, { _tag: "GroupServing" }, worker)[0], worker), "handed off")
  })

  it("a restart asked of a worker, which cannot hand off, is refused as unsupported", () => {
    assert.deepStrictEqual(refusal(paused, restart(), { canHandOff: false }).refusal, {
      _tag: "RestartUnsupported",
      kind: "upgrade"
    })
  })

  it("terminated while paused: no delay, no STOPPING=1, the drain goes on to its end; a second signal forces", () => {
    for (const shutdownDelay of [false, true]) {
      const [next, actions] = step(paused, term(), { shutdownDelay })
      assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
      assert.deepStrictEqual(tags(actions), ["Log termination requested", "BeginDrain"])
      assert.strictEqual(readiness(next), "stopping")
    }
    const [gone, first] = step(paused, term("primary"))
    assert.deepStrictEqual(gone.phase, { _tag: "Draining", reason: "terminate", signals: 0 }, "the primary's going")
    assert.deepStrictEqual((first[0] as Extract<Action, { _tag: "Log" }>).annotations, { by: "primary" })
    const [once, after] = step(gone, term())
    assert.deepStrictEqual(tags(after), ["Log termination requested"], "one signal after the primary's going")
    assert.deepStrictEqual(tags(step(once, term())[1]), ["Log termination requested", "ForceExit"])
    assert.deepStrictEqual(step(gone, { _tag: "Resume" }), [gone, []], "a resume once draining changes nothing")
  })
})
