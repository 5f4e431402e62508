/**
 * The first instructions of every child the supervisor starts (a successor,
 * a worker), given to Node as `--import data:...` so that they run before
 * any module of the program, with no shell and no file of their own.
 *
 * - `LISTEN_PID`: sd_listen_fds(3) takes the fds only if `LISTEN_PID` is the
 *   process's own pid, which `spawn` cannot know before the child exists
 *   (nothing of ours runs between fork and exec). The preload sets it to
 *   `process.pid`, so `ListenFds` keeps the strict check that systemd's
 *   socket activation needs. A process the application spawns inherits a
 *   `LISTEN_PID` that is not its own, and takes nothing; a `fork` of it
 *   inherits the `--import` too, but not the marker the preload consumes,
 *   so there the preload does nothing.
 * - Signals: until the supervisor installs its handlers, `SIGHUP` and
 *   `SIGUSR2` would end the process and `SIGTERM` during its imports would
 *   cut its start-up. The preload keeps each one that arrives, and the
 *   supervisor takes them over with its handlers (os.ts), so a restart or a
 *   termination asked for while the child still loads is honoured. A
 *   second termination signal before then ends the process, as it would
 *   once running.
 *
 * Chosen over accepting `LISTEN_FDS` without `LISTEN_PID` from a child that
 * has a channel: the check stays the one systemd documents, a grandchild
 * can never take fds meant for its parent, and the early signals needed a
 * preload anyway. A data URL rather than a file: it survives bundling.
 */

/** The marker the preload consumes: present only in the environment the supervisor gives its children. */
export const MARKER_VARIABLE = "EFFECT_GRACE_PRELOAD"

/** The signals a child takes from its first instruction: those every process of the service takes. */
export const EARLY_SIGNALS: ReadonlyArray<NodeJS.Signals> = ["SIGHUP", "SIGUSR2", "SIGTERM", "SIGINT"]

const EARLY_KEY = "effect-grace/early-signals"

// Plain JavaScript, run by Node as a module before the program: no imports, nothing the program could see but
// `LISTEN_PID` and the record under `EARLY_KEY`.
const source = `
const env = process.env
if (env.${MARKER_VARIABLE} === "1") {
  delete env.${MARKER_VARIABLE}
  if (env.LISTEN_FDS !== undefined) env.LISTEN_PID = String(process.pid)
  const early = { signals: [], handlers: [] }
  const terminations = ["SIGTERM", "SIGINT"]
  for (const name of ${JSON.stringify(EARLY_SIGNALS)}) {
    const handler = () => {
      if (terminations.includes(name) && early.signals.some((s) => terminations.includes(s))) {
        for (const [n, h] of early.handlers) process.off(n, h)
        process.kill(process.pid, name)
        return
      }
      early.signals.push(name)
    }
    process.on(name, handler)
    early.handlers.push([name, handler])
  }
  globalThis[Symbol.for(${JSON.stringify(EARLY_KEY)})] = early
}
`

/** The `--import` argument that runs the preload. */
export const URL = `data:text/javascript,${encodeURIComponent(source)}`

/** The arguments that give a child the preload, before the program's own `execArgv`. */
export const execArgv: ReadonlyArray<string> = ["--import", URL]

/**
 * This process's `execArgv` without the preload it was started with, if it was: a child is given it once, first.
 */
export const withoutPreload = (args: ReadonlyArray<string>): ReadonlyArray<string> => {
  const kept: Array<string> = []
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--import" && args[i + 1] === URL) i++
    else if (args[i] !== `--import=${URL}`) kept.push(args[i]!)
  }
  return kept
}

interface Early {
  readonly signals: Array<NodeJS.Signals>
  readonly handlers: Array<readonly [NodeJS.Signals, () => void]>
}

const earlyRecord = (): Early | undefined => (globalThis as Record<symbol, Early | undefined>)[Symbol.for(EARLY_KEY)]

/** Whether `handler` is the preload's own, still installed: not a handler of the program's. */
export const isEarly = (handler: unknown): boolean =>
  earlyRecord()?.handlers.some(([, installed]) => installed === handler) ?? false

/**
 * The signals that arrived before the supervisor's handlers, in order, once: the preload's handlers are removed,
 * so the caller installs its own first. Empty in a process the preload did not start.
 */
export const takeEarly = (): ReadonlyArray<NodeJS.Signals> => {
  const early = earlyRecord()
  if (early === undefined) return []
  delete (globalThis as Record<symbol, Early | undefined>)[Symbol.for(EARLY_KEY)]
  for (const [name, handler] of early.handlers) process.off(name, handler)
  return early.signals
}
