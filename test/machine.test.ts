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

const rules: Machine.Rules = { canHandOff: true, shutdownDelay: false, probation: false, canRoll: false }
const step = (state: State, event: Event, given: Partial<Machine.Rules> = {}) =>
  Machine.transition(state, event, { ...rules, ...given })
// What the actions are, logs named by their message.
const tags = (actions: ReadonlyArray<Action>) =>
  actions.map((action) => (action._tag === "Log" ? `Log ${action.message.replace("effect-grace: ", "")}` : action._tag))

const at = (phase: Phase, parentPid?: number): State => ({ phase, parentPid })
const starting = at({ _tag: "Starting" })
const serving = at({ _tag: "Serving" })
const restarting = at({ _tag: "Restarting", reply: "first" })
const delaying = at({ _tag: "Delaying", signals: 1 })
const handingOff = at({ _tag: "Draining", reason: "handoff", signals: 0 })
const terminating = at({ _tag: "Draining", reason: "terminate", signals: 1 })
const stopped = at({ _tag: "Stopped", reason: "terminate", forced: false })

const restart = (reply = "second", signal?: string): Event => ({
  _tag: "RestartRequested",
  reply,
  signal,
  kind: "upgrade"
})
const term = (source: Machine.Source = "signal"): Event => ({
  _tag: "Terminate",
  source,
  signal: source === "signal" ? "SIGTERM" : undefined
})
const ready: Event = { _tag: "SuccessorReady", successor: "successor", pid: 200 }

const refusal = (state: State, event: Event, given?: Partial<Machine.Rules>) => {
  const [next, actions] = step(state, event, given)
  assert.deepStrictEqual(next, state, "a refusal changes nothing")
  assert.deepStrictEqual(tags(actions), ["Log restart requested", "Refuse"], "logged, then refused")
  return actions[1] as Extract<Action, { _tag: "Refuse" }>
}

describe("the supervisor's state machine", () => {
  it("starts in Starting, with the parent it took over from", () => {
    assert.deepStrictEqual(Machine.initial(41), { phase: { _tag: "Starting" }, parentPid: 41 })
  })

  it("is ready once started, and only then: nothing is announced after a termination", () => {
    assert.deepStrictEqual(step(starting, { _tag: "Started" }), [serving, [{ _tag: "AnnounceReady" }]])
    for (const state of [serving, terminating, stopped])
      assert.deepStrictEqual(step(state, { _tag: "Started" }), [state, []])
  })

  it("a failed start-up closes what it built and finishes, without a drain", () => {
    const [next, actions] = step(starting, { _tag: "StartupFailed" })
    assert.deepStrictEqual(next.phase, { _tag: "Stopped", reason: "failed", forced: false })
    assert.deepStrictEqual(tags(actions), ["CloseApplication", "Finish"])
    assert.deepStrictEqual(step(terminating, { _tag: "StartupFailed" }), [terminating, []], "a cut start-up drains")
  })

  it("restarts from serving: logged, RELOADING, then the restart", () => {
    const [next, actions] = step(serving, restart("second", "SIGUSR2"))
    assert.deepStrictEqual(next.phase, { _tag: "Restarting", reply: "second" })
    assert.deepStrictEqual(tags(actions), ["Log restart requested", "NotifyReloading", "StartRestart"])
    assert.deepStrictEqual((actions[0] as Extract<Action, { _tag: "Log" }>).annotations, { by: "SIGUSR2" })
  })

  it("refuses a restart before ready, during one, while the parent drains, once stopping, where it cannot hand off", () => {
    assert.deepStrictEqual(refusal(starting, restart()).refusal, { _tag: "NotServing", state: "starting" })
    const during = refusal(restarting, restart())
    assert.deepStrictEqual(during.refusal, { _tag: "AlreadyInProgress" })
    assert.strictEqual(during.reply, "second", "the refusal answers the one who asked")
    assert.deepStrictEqual(refusal(at({ _tag: "Serving" }, 41), restart()).refusal, {
      _tag: "ParentStillRunning",
      parentPid: 41
    })
    for (const state of [delaying, handingOff, terminating, stopped]) {
      assert.deepStrictEqual(refusal(state, restart()).refusal, { _tag: "NotServing", state: "draining" })
    }
    assert.deepStrictEqual(refusal(serving, restart(), { canHandOff: false }).refusal, { _tag: "RestartUnsupported" })
  })

  it("the parent's exit lifts its refusal, in any phase", () => {
    const [next] = step(at({ _tag: "Serving" }, 41), { _tag: "ParentExited" })
    assert.deepStrictEqual(next, serving)
    assert.deepStrictEqual(step(next, restart())[0].phase._tag, "Restarting")
  })

  it("hands off when the successor is ready: released, MAINPID, unready, then the drain", () => {
    const [next, actions] = step(restarting, ready)
    assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "handoff", signals: 0 })
    assert.deepStrictEqual(tags(actions), ["ReleaseSuccessor", "HandOff", "Unready", "BeginDrain"])
    assert.deepStrictEqual(actions[1], { _tag: "HandOff", reply: "first", pid: 200, ready: true })
  })

  it("kills a successor ready when no restart is under way any more", () => {
    for (const state of [serving, terminating, delaying, stopped]) {
      assert.deepStrictEqual(step(state, ready), [state, [{ _tag: "KillSuccessor", successor: "successor" }]])
    }
  })

  it("a failed restart serves on and answers the caller", () => {
    const [next, actions] = step(restarting, { _tag: "RestartFailed", failure: "exited" })
    assert.deepStrictEqual(next, serving)
    assert.deepStrictEqual(actions, [{ _tag: "RestartFailed", reply: "first", failure: "exited" }])
    assert.deepStrictEqual(step(terminating, { _tag: "RestartFailed", failure: "late" }), [terminating, []])
  })

  it("terminates while serving: logged, unready, STOPPING=1, then the drain, or the shutdown delay", () => {
    const [next, actions] = step(serving, term())
    assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
    assert.deepStrictEqual(tags(actions), ["Log termination requested", "Unready", "NotifyStopping", "BeginDrain"])
    const [delayed, first] = step(serving, term(), { shutdownDelay: true })
    assert.deepStrictEqual(delayed.phase, { _tag: "Delaying", signals: 1 })
    assert.deepStrictEqual(tags(first), ["Log termination requested", "Unready", "NotifyStopping", "BeginDelay"])
    const [draining, then] = step(delayed, { _tag: "DelayOver" })
    assert.deepStrictEqual(draining.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
    assert.deepStrictEqual(tags(then), ["BeginDrain"])
  })

  it("terminates during start-up: the start-up is interrupted, what it built drains, never READY", () => {
    const [next, actions] = step(starting, term())
    assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
    assert.deepStrictEqual(tags(actions), [
      "Log termination requested",
      "Unready",
      "NotifyStopping",
      "InterruptStartup",
      "BeginDrain"
    ])
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
      "Unready",
      "NotifyStopping",
      "BeginDrain"
    ])
    assert.deepStrictEqual(actions[2], {
      _tag: "Refuse",
      reply: "first",
      refusal: { _tag: "NotServing", state: "draining" }
    })
  })

  it("a second termination signal forces the exit; calls, the scope and one signal in a hand-off do not", () => {
    const [twice, forcing] = step(terminating, term())
    assert.deepStrictEqual(tags(forcing), ["Log termination requested", "ForceExit"])
    assert.deepStrictEqual(twice.phase, { _tag: "Draining", reason: "terminate", signals: 2 })
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

  describe("a successor on probation", () => {
    const probation = at({ _tag: "Probation", reply: "first", successor: "successor", pid: 200, signals: 0 })

    it("ready with a window: watched, READY=1, unready, the servers paused; no MAINPID yet", () => {
      const [next, actions] = step(restarting, ready, { probation: true })
      assert.deepStrictEqual(next, probation)
      assert.deepStrictEqual(tags(actions), ["WatchSuccessor", "BeginProbation", "Unready", "PauseServing"])
    })

    it("the window passes: is the successor alive? Then released, MAINPID, the drain", () => {
      assert.deepStrictEqual(step(probation, { _tag: "ProbationOver" }), [
        probation,
        [{ _tag: "ConfirmSuccessor", successor: "successor" }]
      ])
      const [next, actions] = step(probation, { _tag: "SuccessorAlive" })
      assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "handoff", signals: 0 })
      assert.deepStrictEqual(tags(actions), ["ReleaseSuccessor", "HandOff", "BeginDrain"])
      assert.deepStrictEqual(actions[1], { _tag: "HandOff", reply: "first", pid: 200, ready: false })
      for (const event of [{ _tag: "ProbationOver" }, { _tag: "SuccessorAlive" }] as const) {
        assert.deepStrictEqual(step(serving, event), [serving, []])
      }
    })

    it("the successor exits within it: serving again, handed back with its exit", () => {
      const exited: Event = { _tag: "SuccessorExited", pid: 200, code: null, signal: "SIGKILL" }
      const [next, actions] = step(probation, exited)
      assert.deepStrictEqual(next, serving)
      assert.deepStrictEqual(actions, [{ _tag: "HandBack", reply: "first", pid: 200, code: null, signal: "SIGKILL" }])
      // Another pid, or another phase: nothing.
      assert.deepStrictEqual(step(probation, { ...exited, pid: 201 }), [probation, []])
      assert.deepStrictEqual(step(handingOff, exited), [handingOff, []])
    })

    it("a restart is refused as one in progress", () => {
      assert.deepStrictEqual(refusal(probation, restart()).refusal, { _tag: "AlreadyInProgress" })
    })

    it("a termination ends both: the successor told to terminate, the caller refused, STOPPING=1, the drain", () => {
      const [next, actions] = step(probation, term())
      assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
      assert.deepStrictEqual(tags(actions), [
        "Log termination requested",
        "TerminateSuccessor",
        "Refuse",
        "Unready",
        "NotifyStopping",
        "BeginDrain"
      ])
      assert.deepStrictEqual(tags(step(next, term())[1]), ["Log termination requested", "ForceExit"])
    })
  })
})

describe("the supervisor's state machine: a primary's rolling restart, a worker's pause", () => {
  const primary: Partial<Machine.Rules> = { canRoll: true }
  const rolling = at({ _tag: "Rolling", reply: "first" })
  const paused = at({ _tag: "Paused" })
  const probation = at({ _tag: "Probation", reply: "first", successor: "successor", pid: 200, signals: 0 })
  const rollRequest = (
    reply = "second",
    signal: string | undefined = "SIGHUP"
  ): Extract<Event, { _tag: "RestartRequested" }> => ({
    _tag: "RestartRequested",
    reply,
    signal,
    kind: "roll"
  })
  const rollRefusal = (state: State, given: Partial<Machine.Rules> = primary) => {
    const [next, actions] = step(state, rollRequest(), given)
    assert.deepStrictEqual(next, state, "a refusal changes nothing")
    assert.deepStrictEqual(tags(actions), ["Log rolling restart requested", "Refuse"], "logged, then refused")
    const refused = actions[1] as Extract<Action, { _tag: "Refuse" }>
    assert.strictEqual(refused.reply, "second", "the refusal answers the one who asked")
    return refused.refusal
  }

  it("a roll from serving: logged with who asked, RELOADING, then the roll", () => {
    const [next, actions] = step(serving, rollRequest("second", "SIGHUP"), primary)
    assert.deepStrictEqual(next.phase, { _tag: "Rolling", reply: "second" })
    assert.deepStrictEqual(tags(actions), ["Log rolling restart requested", "NotifyReloading", "StartRoll"])
    assert.deepStrictEqual((actions[0] as Extract<Action, { _tag: "Log" }>).annotations, { by: "SIGHUP" })
    const [, called] = step(serving, { ...rollRequest(), signal: undefined }, primary)
    assert.deepStrictEqual((called[0] as Extract<Action, { _tag: "Log" }>).annotations, { by: "call" })
  })

  it("a roll needs a primary, not a native hand-off nor the parent gone", () => {
    assert.deepStrictEqual(rollRefusal(serving, { canRoll: false }), { _tag: "RestartUnsupported" })
    assert.deepStrictEqual(rollRefusal(starting, { canRoll: false }), { _tag: "RestartUnsupported" })
    assert.strictEqual(step(serving, rollRequest(), { canRoll: true, canHandOff: false })[0].phase._tag, "Rolling")
    assert.strictEqual(step(at({ _tag: "Serving" }, 41), rollRequest(), primary)[0].phase._tag, "Rolling")
  })

  it("a roll is refused before ready, during a restart, a probation, a roll or a pause, and once stopping", () => {
    assert.deepStrictEqual(rollRefusal(starting), { _tag: "NotServing", state: "starting" })
    for (const state of [restarting, probation, rolling, paused]) {
      assert.deepStrictEqual(rollRefusal(state), { _tag: "AlreadyInProgress" }, state.phase._tag)
    }
    for (const state of [delaying, handingOff, terminating, stopped]) {
      assert.deepStrictEqual(rollRefusal(state), { _tag: "NotServing", state: "draining" }, state.phase._tag)
    }
  })

  it("an upgrade during a roll is refused as one in progress, and a successor ready then is killed", () => {
    const [next, actions] = step(rolling, restart(), primary)
    assert.deepStrictEqual(next, rolling)
    assert.deepStrictEqual(tags(actions), ["Log restart requested", "Refuse"])
    assert.deepStrictEqual((actions[1] as Extract<Action, { _tag: "Refuse" }>).refusal, { _tag: "AlreadyInProgress" })
    assert.deepStrictEqual(step(rolling, ready, primary), [
      rolling,
      [{ _tag: "KillSuccessor", successor: "successor" }]
    ])
  })

  it("the roll done: serving again, the caller answered with the primary's pid", () => {
    const [next, actions] = step(rolling, { _tag: "RollDone", pid: 100 }, primary)
    assert.deepStrictEqual(next, serving)
    assert.deepStrictEqual(actions, [{ _tag: "RollDone", reply: "first", pid: 100 }])
    // A second roll after it goes ahead.
    assert.strictEqual(step(next, rollRequest(), primary)[0].phase._tag, "Rolling")
  })

  it("the roll stopped: serving again, the caller refused with why; each end only in its own phase", () => {
    const [next, actions] = step(rolling, { _tag: "RollStopped", failure: "handed back" }, primary)
    assert.deepStrictEqual(next, serving)
    assert.deepStrictEqual(actions, [{ _tag: "RestartFailed", reply: "first", failure: "handed back" }])
    for (const state of [serving, restarting, terminating, stopped]) {
      assert.deepStrictEqual(step(state, { _tag: "RollDone", pid: 100 }, primary), [state, []], state.phase._tag)
      assert.deepStrictEqual(step(state, { _tag: "RollStopped", failure: "late" }, primary), [state, []])
    }
    assert.deepStrictEqual(step(rolling, { _tag: "RestartFailed", failure: "upgrade's" }, primary), [rolling, []])
  })

  it("a termination during a roll refuses its caller before STOPPING=1, then drains (the workers with it)", () => {
    const [next, actions] = step(rolling, term(), primary)
    assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
    assert.deepStrictEqual(tags(actions), [
      "Log termination requested",
      "Refuse",
      "Unready",
      "NotifyStopping",
      "BeginDrain"
    ])
    assert.deepStrictEqual(actions[1], {
      _tag: "Refuse",
      reply: "first",
      refusal: { _tag: "NotServing", state: "draining" }
    })
    assert.notInclude(tags(actions), "InterruptRestart", "no successor to interrupt: the pool stops its workers")
    const [delayed, then] = step(rolling, term("call"), { ...primary, shutdownDelay: true })
    assert.deepStrictEqual(delayed.phase, { _tag: "Delaying", signals: 0 })
    assert.deepStrictEqual(tags(then), [
      "Log termination requested",
      "Refuse",
      "Unready",
      "NotifyStopping",
      "BeginDelay"
    ])
    // The roll's end after it says nothing.
    assert.deepStrictEqual(step(next, { _tag: "RollDone", pid: 100 }, primary), [next, []])
  })

  it("a worker paused by its primary: unready, the servers paused; resumed: they accept again", () => {
    const [next, actions] = step(serving, { _tag: "Pause" })
    assert.deepStrictEqual(next, paused)
    assert.deepStrictEqual(actions, [{ _tag: "Unready", why: "handed off" }, { _tag: "PauseServing" }])
    const [back, resumed] = step(next, { _tag: "Resume" })
    assert.deepStrictEqual(back, serving)
    assert.deepStrictEqual(resumed, [{ _tag: "ResumeServing" }])
  })

  it("pause only from serving, resume only from paused", () => {
    for (const state of [starting, paused, restarting, delaying, terminating, stopped]) {
      assert.deepStrictEqual(step(state, { _tag: "Pause" }), [state, []], state.phase._tag)
    }
    for (const state of [starting, serving, restarting, delaying, terminating, stopped]) {
      assert.deepStrictEqual(step(state, { _tag: "Resume" }), [state, []], state.phase._tag)
    }
  })

  it("a restart asked of a paused worker is refused as one in progress", () => {
    const [next, actions] = step(paused, restart(), { canHandOff: false })
    assert.deepStrictEqual(next, paused)
    assert.deepStrictEqual((actions[1] as Extract<Action, { _tag: "Refuse" }>).refusal, { _tag: "AlreadyInProgress" })
  })

  it("terminated while paused: no delay, no STOPPING=1, the drain goes on to its end; a second signal forces", () => {
    for (const shutdownDelay of [false, true]) {
      const [next, actions] = step(paused, term(), { shutdownDelay })
      assert.deepStrictEqual(next.phase, { _tag: "Draining", reason: "terminate", signals: 1 })
      assert.deepStrictEqual(tags(actions), ["Log termination requested", "Unready", "BeginDrain"])
      assert.deepStrictEqual(actions[1], { _tag: "Unready", why: "stopping" })
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
