/**
 * The supervisor's state machine, as a pure function: every transition and
 * refusal.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Machine from "../src/internal/machine.ts"

type State = Machine.State<string>
type Event = Machine.Event<string, string>

const free: Machine.Facts = { parentPid: undefined, canHandOff: true }
const step = (state: State, event: Event, facts: Machine.Facts = free) => Machine.transition(state, event, facts)
const tags = (actions: ReadonlyArray<Machine.Action<string, string>>) => actions.map((action) => action._tag)

const starting: State = { _tag: "Starting" }
const serving: State = { _tag: "Serving" }
const restarting: State = { _tag: "Restarting", reply: "first" }
const handingOff: State = { _tag: "Draining", reason: "handoff", signals: 0 }
const terminating: State = { _tag: "Draining", reason: "terminate", signals: 1 }

const restart = (reply = "second"): Event => ({ _tag: "RestartRequested", reply })
const term = (source: "signal" | "call" | "scope" = "signal"): Event => ({ _tag: "Terminate", source })

const refusal = (state: State, event: Event, facts?: Machine.Facts) => {
  const [next, actions] = step(state, event, facts)
  assert.deepStrictEqual(next, state, "a refusal changes nothing")
  assert.strictEqual(actions.length, 1)
  const [action] = actions
  assert.strictEqual(action?._tag, "Refuse")
  return action as Extract<Machine.Action<string, string>, { _tag: "Refuse" }>
}

describe("the supervisor's state machine", () => {
  it("is ready once started, and only then", () => {
    assert.deepStrictEqual(step(starting, { _tag: "Ready" }), [serving, []])
    assert.deepStrictEqual(step(serving, { _tag: "Ready" }), [serving, []])
  })

  it("restarts from serving: RELOADING, then the restart", () => {
    const [next, actions] = step(serving, restart())
    assert.deepStrictEqual(next, { _tag: "Restarting", reply: "second" })
    assert.deepStrictEqual(tags(actions), ["NotifyReloading", "StartRestart"])
  })

  it("refuses a restart before ready, during a restart, while the parent drains, while draining, off Linux", () => {
    assert.deepStrictEqual(refusal(starting, restart()).refusal, { _tag: "NotServing", state: "starting" })
    const during = refusal(restarting, restart())
    assert.deepStrictEqual(during.refusal, { _tag: "AlreadyInProgress" })
    assert.strictEqual(during.reply, "second", "the refusal answers the one who asked")
    assert.deepStrictEqual(refusal(serving, restart(), { parentPid: 41, canHandOff: true }).refusal, {
      _tag: "ParentStillRunning",
      parentPid: 41
    })
    for (const draining of [handingOff, terminating]) {
      assert.deepStrictEqual(refusal(draining, restart()).refusal, { _tag: "NotServing", state: "draining" })
    }
    assert.deepStrictEqual(refusal(serving, restart(), { parentPid: undefined, canHandOff: false }).refusal, {
      _tag: "Unsupported"
    })
  })

  it("hands off when the successor is ready: MAINPID and READY, then the drain", () => {
    const [next, actions] = step(restarting, { _tag: "SuccessorReady", pid: 7 })
    assert.deepStrictEqual(next, handingOff)
    assert.deepStrictEqual(actions, [
      { _tag: "HandOff", reply: "first", pid: 7 },
      { _tag: "Stop", reason: "handoff" }
    ])
  })

  it("goes back to serving when the restart fails, and says why to the one who asked", () => {
    const [next, actions] = step(restarting, { _tag: "RestartFailed", failure: "exited" })
    assert.deepStrictEqual(next, serving)
    assert.deepStrictEqual(actions, [{ _tag: "RestartFailed", reply: "first", failure: "exited" }])
  })

  it("terminates from starting or serving: STOPPING, then the drain", () => {
    for (const state of [starting, serving]) {
      const [next, actions] = step(state, term())
      assert.deepStrictEqual(next, terminating)
      assert.deepStrictEqual(tags(actions), ["NotifyStopping", "Stop"])
    }
    const [byCall] = step(serving, term("call"))
    assert.deepStrictEqual(byCall, { _tag: "Draining", reason: "terminate", signals: 0 })
  })

  it("a termination wins over a restart: interrupted first, refused to its caller, then STOPPING", () => {
    for (const source of ["signal", "call", "scope"] as const) {
      const [next, actions] = step(restarting, term(source))
      assert.strictEqual(next._tag, "Draining")
      assert.strictEqual((next as { reason: string }).reason, "terminate")
      assert.deepStrictEqual(tags(actions), ["InterruptRestart", "Refuse", "NotifyStopping", "Stop"])
      assert.deepStrictEqual(actions[1], {
        _tag: "Refuse",
        reply: "first",
        refusal: { _tag: "NotServing", state: "draining" }
      })
    }
    // A successor that becomes ready after that is never announced, nor a late failure reported.
    assert.deepStrictEqual(step(terminating, { _tag: "SuccessorReady", pid: 7 }), [terminating, []])
    assert.deepStrictEqual(step(terminating, { _tag: "RestartFailed", failure: "late" }), [terminating, []])
  })

  it("a second termination signal during a drain forces the exit; the scope closing never does", () => {
    const [again, forced] = step(terminating, term())
    assert.deepStrictEqual(tags(forced), ["ForceExit"])
    assert.strictEqual((again as { signals: number }).signals, 2)
    assert.deepStrictEqual(step(terminating, term("scope")), [terminating, []])
    assert.deepStrictEqual(step(terminating, term("call")), [terminating, []])
    // A hand-off's drain, or one a call began, lets a first signal pass.
    const [first, none] = step(handingOff, term())
    assert.deepStrictEqual(none, [])
    assert.deepStrictEqual(tags(step(first, term())[1]), ["ForceExit"])
    const [byCall] = step(serving, term("call"))
    assert.deepStrictEqual(step(byCall, term())[1], [])
  })

  it("a restart signal after a termination signal is refused", () => {
    const [draining] = step(serving, term())
    assert.deepStrictEqual(refusal(draining, { _tag: "RestartRequested", reply: undefined }).refusal, {
      _tag: "NotServing",
      state: "draining"
    })
  })
})
