/**
 * The single process: it serves the application alone, and restarts by
 * handing its listeners to a successor (upgrade.ts).
 *
 * - Signals: `SIGHUP`, `SIGUSR2` and the restart signals restart it;
 *   `SIGTERM` and `SIGINT` terminate it.
 * - Rules: it hands off where the platform allows; its termination keeps the
 *   shutdown delay; a successor goes through the probation window.
 * - A successor is given every listener it serves on.
 * - Ready is told to its predecessor (after a restart) or to systemd.
 * - `restart` is its own restart; it builds the application itself.
 * - With a memory limit, it watches its own size (memory.ts) and, above the
 *   limit for the grace period, restarts itself as `SIGUSR2` asks, while it
 *   serves and no restart is under way or waiting; a restart that fails is
 *   asked again only after a delay that grows as a crashed worker's does.
 *   Above the limit once ready: the first process of the service ends with
 *   the reason (every successor would start above it too); a successor
 *   serves on and says so, and restarts itself for memory only once it has
 *   been below the limit.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { MemoryLimitTooLow } from "./errors.ts"
import type { RestartUnsupported } from "./errors.ts"
import * as Memory from "./memory.ts"
import type * as Parent from "./parent.ts"
import * as Program from "./program.ts"
import * as Requests from "./requests.ts"
import type { Settings } from "./settings.ts"
import { isOn } from "./settings.ts"
import type { Role, Supervision } from "./supervision.ts"
import { log } from "./supervision.ts"
import * as Upgrade from "./upgrade.ts"

// Every listener it serves on, where it has a fd.
const listening = (supervision: Supervision) =>
  Effect.map(supervision.listeners.active, (active) =>
    active.flatMap((l) => (l.fd === undefined ? [] : [{ fd: l.fd, name: l.name }]))
  )

// Only while it serves with no restart under way or waiting: one asked now would queue behind it, and ask again.
const mayRestart = (supervision: Supervision) =>
  Effect.map(supervision.loop.state, (state) => state.phase._tag === "Serving" && state.pending === undefined)

// Above the limit for the grace period: a restart, as SIGUSR2 asks, waited for; one that fails holds the watch back.
const overLimit = (supervision: Supervision, limit: Memory.Limit, failures: { count: number }, rss: number) =>
  Effect.gen(function* () {
    if (!(yield* mayRestart(supervision))) return
    yield* log(supervision, "effect-grace: over memory limit; restarting", Memory.annotations(rss, limit))
    yield* Memory.countReplacement
    const restarted = yield* Effect.result(Requests.requestRestart(supervision, "memory", "upgrade"))
    if (restarted._tag === "Success") return
    failures.count++
    const millis = Math.min(30_000, Math.round(1000 * 1.5 ** (failures.count - 1)))
    yield* log(supervision, "effect-grace: restart for memory failed; the next waits", { millis })
    yield* Effect.sleep(Duration.millis(millis))
  })

// Its own size, once ready and then on the schedule, in the application's scope.
const watchOwnMemory = (supervision: Supervision, limit: Memory.Limit) =>
  Effect.gen(function* () {
    const { os, role, settings } = supervision
    const first = yield* os.rss(os.pid)
    const startedOver = first !== undefined && first > limit.bytes
    if (startedOver && role.predecessor === undefined) {
      return yield* new MemoryLimitTooLow({ slot: undefined, pid: os.pid, rss: first, limit: limit.bytes })
    }
    if (startedOver) {
      yield* log(
        supervision,
        "effect-grace: above the memory limit once ready; no restart for memory until below it (a successor would start above it too)",
        Memory.annotations(first, limit)
      )
    }
    const failures = { count: 0 }
    yield* Memory.watch({
      limit,
      grace: settings.maxMemoryGrace,
      sample: Effect.map(os.rss(os.pid), (rss) => [{ key: os.pid, rss }]),
      over: ({ rss, sinceStart }) =>
        sinceStart && startedOver ? Effect.void : overLimit(supervision, limit, failures, rss)
    })
  })

// The application, then the watch on its size if there is a limit.
const serves = (supervision: Supervision, app: Layer.Layer<never, unknown>): Layer.Layer<never, unknown> => {
  const limit = Memory.limitOf(supervision.settings)
  return limit === undefined ? app : Layer.flatMap(app, () => Layer.effectDiscard(watchOwnMemory(supervision, limit)))
}

export const make = (
  settings: Settings,
  pid: number,
  predecessor: Parent.Parent | undefined,
  handOffBlocked: RestartUnsupported | undefined
): Role => ({
  kind: "single",
  binding: { remote: undefined, reusePort: false },
  predecessor,
  onSignal: (supervision, signal) =>
    Program.TERMINATION_SIGNALS.includes(signal)
      ? Requests.terminate(supervision, "signal", signal)
      : Requests.requestInBackground(supervision, signal, "upgrade"),
  rules: {
    canHandOff: handOffBlocked === undefined,
    shutdownDelay: isOn(settings.shutdownDelay),
    probation: isOn(settings.probation),
    canRoll: false,
    waitsForGroup: false
  },
  annotations: { pid },
  around: (effect) => effect,
  unavailable: handOffBlocked === undefined ? {} : { restarts: "unavailable", reason: handOffBlocked.detail },
  pidFile: settings.pidFile,
  tellReady: Upgrade.tellReady,
  holdsUnclaimed: false,
  restart: (supervision) => Requests.requestRestart(supervision, undefined, "upgrade"),
  serves,
  listen: Upgrade.listenToPredecessor,
  passedOn: listening,
  roll: Effect.void,
  reload: () => "upgrade",
  workers: () => Effect.succeed([]),
  worker: Option.none()
})
