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
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { RestartUnsupported } from "./errors.ts"
import type * as Parent from "./parent.ts"
import * as Program from "./program.ts"
import * as Requests from "./requests.ts"
import type { Settings } from "./settings.ts"
import { isOn } from "./settings.ts"
import type { Role, Supervision } from "./supervision.ts"
import * as Upgrade from "./upgrade.ts"

// Every listener it serves on, where it has a fd.
const listening = (supervision: Supervision) =>
  Effect.map(supervision.listeners.active, (active) =>
    active.flatMap((l) => (l.fd === undefined ? [] : [{ fd: l.fd, name: l.name }]))
  )

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
  serves: (_supervision, app) => app,
  listen: Upgrade.listenToPredecessor,
  passedOn: listening,
  roll: Effect.void,
  reload: () => "upgrade",
  workers: () => Effect.succeed([]),
  worker: Option.none()
})
