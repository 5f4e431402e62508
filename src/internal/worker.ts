/**
 * A primary's worker: the application, serving on the sockets its primary
 * holds, in the slot its primary gave it. It never restarts itself: its
 * primary starts, pauses, resumes and stops it (protocol.ts).
 *
 * - Signals: `SIGTERM` and `SIGINT` terminate it; `SIGHUP`, `SIGUSR2` and
 *   the restart signals are ignored, with a line that says where to send
 *   them: its primary restarts it (`systemctl kill -s HUP` signals every
 *   process of the service, and the primary's roll is the one restart). It
 *   is in a process group of its own, so a terminal's Ctrl-C reaches its
 *   primary alone, which stops its workers in order.
 * - Rules: it never hands off nor rolls; its termination keeps the shutdown
 *   delay; it is ready only once its primary says the whole group serves.
 * - A listener it was not given is asked of its primary, which binds it (or
 *   has it) and sends the fd.
 * - Ready is told to its primary; its primary's `pause`, `resume`,
 *   `serving` and `terminate` are events of its machine, and its primary's
 *   going is a termination.
 * - A socket its primary lends it (another slot's, while that slot has no
 *   worker that accepts) is accepted on for the server of its address, until
 *   the primary takes it back, or the server stops accepting (gate.ts).
 * - `restart` asks its primary for a rolling restart of the group (this
 *   worker among them), answered at once with the primary's pid; the
 *   primary logs and counts how it goes.
 * - Every line, span and metric of its application says its slot.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as Parent from "./parent.ts"
import * as Program from "./program.ts"
import type { Command } from "./protocol.ts"
import * as Requests from "./requests.ts"
import type { Settings } from "./settings.ts"
import { isOn } from "./settings.ts"
import type { Event, Role, Supervision } from "./supervision.ts"
import { log, send } from "./supervision.ts"

const events: Record<Command, Event> = {
  serving: { _tag: "GroupServing" },
  pause: { _tag: "Pause" },
  resume: { _tag: "Resume" },
  terminate: { _tag: "Terminate", source: "primary", signal: undefined }
}

// What its primary tells it, and the primary's going (this worker then drains and exits).
const listenToPrimary = (supervision: Supervision, primary: Parent.Parent) =>
  Effect.gen(function* () {
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.flatMap(Queue.take(primary.commands), (command) => send(supervision, events[command]))
      ).pipe(Effect.catch(() => Effect.void))
    )
    yield* Effect.forkScoped(
      Effect.forever(Effect.flatMap(Queue.take(primary.loans), (loan) => borrow(supervision, loan))).pipe(
        Effect.catch(() => Effect.void)
      )
    )
    yield* Effect.forkScoped(Effect.andThen(primary.exited, Requests.terminate(supervision, "primary")))
  })

// A socket lent, for the server of its address (none here: logged, its copy closed), or taken back.
const borrow = (supervision: Supervision, loan: Parent.Loan): Effect.Effect<void> => {
  if (loan._tag === "Reclaim") return supervision.gate.reclaim(loan.loan)
  return Effect.flatMap(supervision.gate.lend(loan.loan, loan.fd), (taken) =>
    taken ? Effect.void : log(supervision, "effect-grace: a socket lent by the primary has no server here")
  )
}

// Every line, span and metric of the application says which worker: its slot (and, in logs, its pid).
const asWorker =
  (annotations: Readonly<Record<string, unknown>>, slot: number) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
    const attribute = { "effect-grace.slot": String(slot) }
    return Effect.gen(function* () {
      const attributes = yield* Metric.CurrentMetricAttributes
      return yield* effect.pipe(
        Effect.annotateLogs(annotations),
        Effect.annotateSpans(attribute),
        Effect.provideService(Metric.CurrentMetricAttributes, { ...attributes, ...attribute })
      )
    })
  }

export const make = (settings: Settings, slot: number, pid: number, primary: Parent.Parent): Role => {
  const annotations = { pid, slot }
  return {
    kind: "worker",
    binding: { remote: primary.listen, reusePort: false },
    predecessor: undefined,
    onSignal: (supervision, signal) =>
      Program.TERMINATION_SIGNALS.includes(signal)
        ? Requests.terminate(supervision, "signal", signal)
        : log(supervision, `effect-grace: ${signal} ignored: a worker is restarted by its primary`, {
            primary: primary.pid
          }),
    rules: {
      canHandOff: false,
      shutdownDelay: isOn(settings.shutdownDelay),
      probation: false,
      canRoll: false,
      waitsForGroup: true
    },
    annotations,
    around: asWorker(annotations, slot),
    unavailable: {},
    pidFile: undefined,
    tellReady: () => primary.signalReady,
    holdsUnclaimed: false,
    restart: () => Effect.as(primary.roll, primary.pid),
    serves: (_supervision, app) => app,
    listen: (supervision) => listenToPrimary(supervision, primary),
    passedOn: () => Effect.succeed([]),
    roll: Effect.void,
    reload: undefined,
    workers: () => Effect.succeed([]),
    worker: Option.some({ slot, primaryPid: primary.pid })
  }
}
