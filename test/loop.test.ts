/**
 * The one loop that follows every machine (internal/loop.ts): events in
 * order, actions in order, the state decided at once and published once its
 * actions are done, a failing action logged with its cause and told to the
 * machine while the owner goes on, and events after the end dropped.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as Scope from "effect/Scope"
import * as Exit from "effect/Exit"
import * as Loop from "../src/internal/loop.ts"

type Event = { readonly _tag: "Add"; readonly n: number } | { readonly _tag: "Failed"; readonly action: string }
type Action =
  | { readonly _tag: "Record"; readonly n: number }
  | { readonly _tag: "Boom" }
  | { readonly _tag: "Die" }
  | { readonly _tag: "Interrupted" }

// A counter: each Add adds; an Add of 0 asks for an action that fails, an Add of -1 for one that dies.
const transition = (total: number, event: Event): Loop.Step<number, Action> => {
  if (event._tag === "Failed") return [total + 1000, []]
  if (event.n === 0) return [total, [{ _tag: "Boom" }]]
  if (event.n === -1) return [total, [{ _tag: "Die" }]]
  if (event.n === -2) return [total, [{ _tag: "Interrupted" }]]
  return [total + event.n, [{ _tag: "Record", n: event.n }]]
}

const errors: Array<string> = []
const logger = Logger.make(({ logLevel, message, cause }) => {
  const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
  if (logLevel === "Error") errors.push(`${text} ${Cause.pretty(cause)}`)
})

const make = (performed: Array<string>, dropped: Array<Event>, gate?: Deferred.Deferred<void>) =>
  Loop.make<number, Event, Action>([0, [{ _tag: "Record", n: 0 }]], () => ({
    name: "counter",
    transition,
    perform: (action) => {
      switch (action._tag) {
        case "Record":
          // The first action (record 0) is never held.
          return Effect.andThen(
            gate === undefined || action.n === 0 ? Effect.void : Deferred.await(gate),
            Effect.sync(() => void performed.push(`record ${action.n}`))
          )
        case "Boom":
          return Effect.fail("boom")
        case "Die":
          return Effect.die(new Error("died"))
        case "Interrupted":
          return Effect.interrupt
      }
    },
    failed: (action) => ({ _tag: "Failed", action: action._tag }),
    dropped: (event) => Effect.sync(() => void dropped.push(event))
  }))

describe("the loop", () => {
  it.effect("takes events in order, performs the first actions and each step's in order", () =>
    Effect.gen(function* () {
      const performed: Array<string> = []
      const loop = yield* make(performed, [])
      for (const n of [1, 2, 3]) yield* loop.send({ _tag: "Add", n })
      assert.strictEqual(yield* loop.when((total) => (total === 6 ? total : undefined)), 6)
      assert.deepStrictEqual(performed, ["record 0", "record 1", "record 2", "record 3"])
    }).pipe(Effect.scoped)
  )

  it.effect("a state is decided at once, and published only once its actions are done", () =>
    Effect.gen(function* () {
      const held = yield* Deferred.make<void>()
      const slow = yield* make([], [], held)
      yield* slow.send({ _tag: "Add", n: 5 })
      const published = yield* Effect.forkChild(slow.when((total) => (total === 5 ? total : undefined)))
      while ((yield* slow.state) !== 5) yield* Effect.yieldNow
      for (let turn = 0; turn < 20; turn++) yield* Effect.yieldNow
      assert.isUndefined(published.pollUnsafe(), "not published while its action waits")
      yield* Deferred.succeed(held, undefined)
      assert.strictEqual(yield* Fiber.join(published), 5)
    }).pipe(Effect.scoped)
  )

  it.effect("an action that fails or dies is logged with its cause, the machine is told, and the owner goes on", () =>
    Effect.gen(function* () {
      errors.length = 0
      const performed: Array<string> = []
      const loop = yield* make(performed, [])
      yield* loop.send({ _tag: "Add", n: 0 })
      yield* loop.send({ _tag: "Add", n: -1 })
      yield* loop.send({ _tag: "Add", n: -2 })
      yield* loop.send({ _tag: "Add", n: 7 })
      // Each failure comes back as an event (+1000), after the step's other actions; the owner took the 7 too.
      assert.strictEqual(yield* loop.when((total) => (total === 3007 ? total : undefined)), 3007)
      assert.deepStrictEqual(performed, ["record 0", "record 7"])
      assert.strictEqual(errors.length, 3, "an action interrupted too")
      assert.include(errors[0], "effect-grace: counter: Boom failed")
      assert.include(errors[0], "boom", "with its cause")
      assert.include(errors[1], "effect-grace: counter: Die failed")
      assert.include(errors[1], "died", "a defect too")
    }).pipe(Effect.scoped, Effect.provide(Logger.layer([logger])))
  )

  it.effect("once its scope has closed, a send answers false and what was queued is dropped", () =>
    Effect.gen(function* () {
      const dropped: Array<Event> = []
      const scope = yield* Scope.make()
      const gate = yield* Deferred.make<void>()
      const loop = yield* make([], dropped, gate).pipe(Scope.provide(scope))
      // The owner waits in the action of the first: the others stay queued.
      yield* loop.send({ _tag: "Add", n: 9 })
      while ((yield* loop.state) !== 9) yield* Effect.yieldNow
      yield* loop.send({ _tag: "Add", n: 1 })
      yield* loop.send({ _tag: "Add", n: 2 })
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(dropped, [
        { _tag: "Add", n: 1 },
        { _tag: "Add", n: 2 }
      ])
      assert.isFalse(yield* loop.send({ _tag: "Add", n: 3 }))
    })
  )
})
