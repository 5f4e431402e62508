/**
 * Restarts and terminations asked of this process, by a signal, a call, a
 * worker or the predecessor: each an event of the supervisor's machine, a
 * restart with its span and its count whatever its outcome.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import { NotServing, RestartError } from "./errors.ts"
import type * as Machine from "./machine.ts"
import { metrics } from "./metrics.ts"
import type { Event, Supervision } from "./supervision.ts"
import { send } from "./supervision.ts"

// A successor's parent that has gone is seen by the kernel at once (it adopts this process), before the channel's
// close may be read: a restart asked for at that moment does not wait for a parent already gone.
const noticeParentExit = (supervision: Supervision) => {
  const { os, role } = supervision
  const predecessor = role.predecessor
  return predecessor !== undefined && os.ppid() !== predecessor.pid
    ? send(supervision, { _tag: "ParentExited" })
    : Effect.void
}

const outcomeOf = (exit: Exit.Exit<number, RestartError>): string =>
  Exit.isSuccess(exit)
    ? "ready"
    : Option.match(Cause.findErrorOption(exit.cause), { onNone: () => "interrupted", onSome: (e) => e.reason._tag })

// The last restart, as `status` reports it: each one that was taken, once it has ended.
const record = (
  supervision: Supervision,
  exit: Exit.Exit<number, RestartError>,
  asked: number,
  by: string,
  kind: Machine.Kind
) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Ref.set(supervision.lastRestart, {
      at: asked,
      kind,
      by,
      outcome: outcomeOf(exit),
      millis: now - asked,
      pid: Exit.isSuccess(exit) ? exit.value : undefined
    })
  )

/** A restart asked for by `signal` or a call: one span and one count per attempt, whatever its outcome. */
export const requestRestart = (
  supervision: Supervision,
  signal: string | undefined,
  kind: Machine.Kind,
  passedOn = false
): Effect.Effect<number, RestartError> =>
  Effect.gen(function* () {
    const by = signal ?? "call"
    const asked = yield* Clock.currentTimeMillis
    const reply = yield* Deferred.make<number, RestartError>()
    yield* noticeParentExit(supervision)
    const requested: Event = { _tag: "RestartRequested", reply, by, kind, passedOn }
    if (!(yield* supervision.loop.send(requested))) {
      return yield* new RestartError({ reason: new NotServing({ state: "draining" }) })
    }
    return yield* Deferred.await(reply).pipe(Effect.onExit((exit) => record(supervision, exit, asked, by, kind)))
  }).pipe(
    Effect.onExit((exit) => {
      const outcome = outcomeOf(exit)
      return Effect.all([
        Effect.annotateCurrentSpan("effect-grace.outcome", outcome),
        Exit.isSuccess(exit) ? Effect.annotateCurrentSpan("effect-grace.successor.pid", exit.value) : Effect.void,
        Metric.update(Metric.withAttributes(metrics.restarts, { outcome }), 1)
      ])
    }),
    Effect.withSpan("effect-grace.restart", { attributes: { "effect-grace.pid": supervision.os.pid, kind } })
  )

/** A restart asked for by a signal or a worker: logged and counted, answered to no one. */
export const requestInBackground = (supervision: Supervision, by: string, kind: Machine.Kind): Effect.Effect<void> =>
  Effect.asVoid(FiberSet.run(supervision.fibers.requests, requestRestart(supervision, by, kind)))

/** A termination asked for. */
export const terminate = (
  supervision: Supervision,
  source: Machine.Source,
  signal?: NodeJS.Signals | undefined
): Effect.Effect<void> => send(supervision, { _tag: "Terminate", source, signal })
