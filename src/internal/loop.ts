/**
 * The one loop that follows a state machine. A machine of this project is a
 * pure function `(state, event) => [state, actions]` (machine.ts, the
 * supervisor's life; pool.ts, a primary's workers); the loop gives it a
 * queue of events and one fiber that owns its state: it takes each event,
 * applies the transition, and performs the actions in order. Nothing else
 * writes the state. Others read it (`state`: the owner's as soon as it has
 * decided), or wait for a state they want (`when`: a state is published once
 * the actions that came with it are done, so whoever waits for a phase finds
 * what entering it does done; the first state is published as the loop
 * begins).
 *
 * Every machine treats a failing action the same way: the failure is logged
 * with its cause, the machine is told (the event its `failed` gives, queued
 * after the step's other actions), and the owner fiber goes on. Only an
 * interruption stops it. Once the loop's scope closes, no event is taken: a
 * `send` answers `false`, and events still queued are handed to `dropped`
 * (to answer a caller that waits).
 */
import type * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"

/** The next state, and what to do, in order. */
export type Step<S, A> = readonly [S, ReadonlyArray<A>]

/** A machine, and how this process carries out its actions. */
export interface Machine<S, E, A extends { readonly _tag: string }> {
  /** Names the machine in the log line of an action that failed. */
  readonly name: string
  /** The next state and its actions when `event` arrives in `state` at `now` (the loop's clock, in milliseconds). */
  readonly transition: (state: S, event: E, now: number) => Step<S, A>
  /** Carries out an action; a failure (or a defect) is the loop's to log and tell. */
  readonly perform: (action: A) => Effect.Effect<void, unknown>
  /** What the machine is told when `action` failed with `cause`; `undefined` when it needs not know. */
  readonly failed: (action: A, cause: Cause.Cause<unknown>) => E | undefined
  /** Answers an event that arrived once the loop had ended. */
  readonly dropped?: ((event: E) => Effect.Effect<void>) | undefined
  /** Annotations of the log line of an action that failed. */
  readonly annotations?: Readonly<Record<string, unknown>> | undefined
}

/** A machine's loop, as others see it. */
export interface Loop<S, E> {
  /** Queues an event for the owner; `false` once the loop has ended. */
  readonly send: (event: E) => Effect.Effect<boolean>
  /** The state as the owner last decided it. */
  readonly state: Effect.Effect<S>
  /** The state as last published: its actions done. */
  readonly published: Effect.Effect<S>
  /** The first value `select` gives of a published state (its actions done), now or later. */
  readonly when: <B>(select: (state: S) => B | undefined) => Effect.Effect<B>
}

/**
 * Starts the owner of a machine's state in the current scope, from `initial` and the actions that go with it;
 * closing the scope ends the loop. The machine is made with its loop, to which its actions send events.
 */
export const make = <S, E, A extends { readonly _tag: string }>(
  initial: Step<S, A>,
  build: (loop: Loop<S, E>) => Machine<S, E, A>
): Effect.Effect<Loop<S, E>, never, Scope.Scope> =>
  Effect.gen(function* () {
    const events = yield* Queue.unbounded<E, Cause.Done>()
    const owned: Owned<S> = { current: initial[0], published: yield* SubscriptionRef.make(initial[0]) }
    const send = (event: E) => Queue.offer(events, event)
    const loop: Loop<S, E> = {
      send,
      state: Effect.sync(() => owned.current),
      published: SubscriptionRef.get(owned.published),
      when: (select) =>
        SubscriptionRef.changes(owned.published).pipe(
          Stream.map(select),
          Stream.filter((value) => value !== undefined),
          Stream.runHead,
          Effect.map(Option.getOrThrow)
        ) as Effect.Effect<NonNullable<ReturnType<typeof select>>>
    }
    const machine = build(loop)
    yield* Effect.addFinalizer(() => drop(machine, events))
    yield* Effect.forkScoped(follow(machine, events, owned, initial[1]))
    return loop
  })

/** The state, as its owner holds it: decided, and published once its actions are done. */
interface Owned<S> {
  current: S
  readonly published: SubscriptionRef.SubscriptionRef<S>
}

// The loop has ended: what was still queued, or comes later, is dropped.
const drop = <S, E, A extends { readonly _tag: string }>(
  machine: Machine<S, E, A>,
  events: Queue.Queue<E, Cause.Done>
) =>
  Effect.gen(function* () {
    yield* Queue.end(events)
    const left = yield* Queue.collect(events)
    if (machine.dropped !== undefined) yield* Effect.forEach(left, machine.dropped, { discard: true })
  })

const follow = <S, E, A extends { readonly _tag: string }>(
  machine: Machine<S, E, A>,
  events: Queue.Queue<E, Cause.Done>,
  owned: Owned<S>,
  first: ReadonlyArray<A>
): Effect.Effect<void> => {
  // An action interrupted is an action that failed, as any other: the owner goes on. The owner's own interruption
  // (its scope closing) stops it at its next wait for an event.
  const perform = (action: A) =>
    machine.perform(action).pipe(Effect.catchCause((cause) => failed(machine, events, action, cause)))
  const run = (actions: ReadonlyArray<A>) => Effect.forEach(actions, perform, { discard: true })
  const step = (event: E) =>
    Effect.gen(function* () {
      const [next, actions] = machine.transition(owned.current, event, yield* Clock.currentTimeMillis)
      owned.current = next
      yield* run(actions)
      yield* SubscriptionRef.set(owned.published, next)
    })
  // Until the events end, when the loop's scope closes.
  return Effect.andThen(run(first), Effect.forever(Effect.flatMap(Queue.take(events), step))).pipe(
    Effect.catch(() => Effect.void)
  )
}

const failed = <S, E, A extends { readonly _tag: string }>(
  machine: Machine<S, E, A>,
  events: Queue.Queue<E, Cause.Done>,
  action: A,
  cause: Cause.Cause<unknown>
) => {
  const told = machine.failed(action, cause)
  return Effect.andThen(
    Effect.logError(`effect-grace: ${machine.name}: ${action._tag} failed`, cause).pipe(
      Effect.annotateLogs(machine.annotations ?? {})
    ),
    told === undefined ? Effect.void : Queue.offer(events, told)
  )
}
