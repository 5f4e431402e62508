/**
 * The supervisor's settings: its options, with the environment's values
 * (read through `Config`) where the options say nothing, checked once at
 * start. `Supervisor` is the public home of `Options` and `config`.
 */
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { availableParallelism } from "node:os"
import { resolve } from "node:path"
import * as Variables from "./config.ts"

export interface Options {
  /**
   * Signals that start a restart, besides `SIGUSR2` and `SIGHUP`, which always do. On a primary (with `workers`),
   * `SIGHUP` restarts the workers (a canary, then the other slots), and the others replace the primary and its
   * workers.
   */
  readonly restartSignals?: ReadonlyArray<NodeJS.Signals> | undefined
  /** How long a successor may take to be ready before it is killed. Default 60 seconds. */
  readonly readyTimeout?: Duration.Input | undefined
  /** A PID file, rewritten atomically by each generation once it is ready (for `kill -USR2 $(cat ...)`, `PIDFile=`). */
  readonly pidFile?: string | undefined
  /**
   * On termination, how long to go on serving, unready, before the drain: every response says
   * `Connection: close` (HTTP/2 gets a GOAWAY) so that clients move to other instances while load balancers and
   * kube-proxy stop sending new connections. Default 0.
   */
  readonly shutdownDelay?: Duration.Input | undefined
  /**
   * Node's compile cache (`module.enableCompileCache`), so that successors start faster: on by default, in Node's
   * default directory, or in the directory given; `false` turns it off. This process flushes the cache once ready,
   * and each successor starts with `NODE_COMPILE_CACHE` set, so it reads what its predecessors compiled. Set
   * `NODE_COMPILE_CACHE` where the program starts (a systemd unit) for the first generation to use it too.
   */
  readonly compileCache?: boolean | string | undefined
  /**
   * How long a successor that is ready stays on probation: this process stops accepting and drains, but keeps its
   * sockets and its application, and takes the service back if the successor exits within the window. Default 5
   * seconds (a deploy that fails on its first real traffic fails within them); 0 hands off at once.
   */
  readonly probation?: Duration.Input | undefined
  /**
   * Workers: this process becomes a primary that runs no application code. It holds the listening sockets and
   * starts this many workers (the same program, each the application in full), which accept on those sockets
   * themselves; `"auto"` is one per core (`os.availableParallelism()`). `SIGHUP` (or `restart` in a worker)
   * restarts them one slot at a time; the restart signal (`SIGUSR2`) replaces the primary and its workers.
   * Unset: one process, as without workers.
   */
  readonly workers?: number | "auto" | undefined
  /** During a rolling restart, how many slots start a new worker at a time. Default 1. */
  readonly surge?: number | undefined
  /**
   * A control socket: the serving process (the single process, or the primary) listens on this unix socket path
   * (made mode 0600) for `reload`, `status` and `stop`, each answered once done (the `effect-grace` command speaks
   * it). It is handed to each successor with the other listeners. `@name` is an abstract name, which has no
   * permissions: only the peer check guards it. Unset: none.
   */
  readonly control?: string | undefined
  /**
   * A memory limit: a worker whose resident set size stays above it for `maxMemoryGrace` is replaced as a roll
   * replaces its slot (the new worker first); a single process restarts itself. Bytes, or a string with a unit
   * (`"512MiB"`, `"1.5GiB"`, `"800MB"`, `"1G"`). Unset: no limit.
   */
  readonly maxMemory?: number | string | undefined
  /** How long the resident set size must stay above `maxMemory` before the process is replaced. Default 10 seconds. */
  readonly maxMemoryGrace?: Duration.Input | undefined
}

/** The options' defaults from the environment. */
export const config: Config.Config<{
  readonly readyTimeout: Option.Option<Duration.Duration>
  readonly shutdownDelay: Option.Option<Duration.Duration>
  readonly pidFile: Option.Option<string>
  readonly compileCache: Option.Option<string>
  readonly probation: Option.Option<Duration.Duration>
  readonly workers: Option.Option<number | "auto">
  readonly surge: Option.Option<number>
  readonly control: Option.Option<string>
  readonly maxMemory: Option.Option<number>
  readonly maxMemoryGrace: Option.Option<Duration.Duration>
}> = Config.all({
  readyTimeout: Variables.duration("GRACE_READY_TIMEOUT"),
  shutdownDelay: Variables.duration("GRACE_SHUTDOWN_DELAY"),
  pidFile: Config.option(Config.String("GRACE_PID_FILE")),
  compileCache: Config.option(Config.String("GRACE_COMPILE_CACHE")),
  probation: Variables.duration("GRACE_PROBATION"),
  workers: Variables.workers("GRACE_WORKERS"),
  surge: Variables.count("GRACE_SURGE"),
  control: Config.option(Config.String("GRACE_CONTROL")),
  maxMemory: Variables.size("GRACE_MAX_MEMORY"),
  maxMemoryGrace: Variables.duration("GRACE_MAX_MEMORY_GRACE")
})

/** Whether a window or a delay is on: more than no time at all. */
export const isOn = (duration: Duration.Duration): boolean => Duration.isGreaterThan(duration, Duration.zero)

/** The options, with the environment's values where the options say nothing. */
export interface Settings {
  readonly readyTimeout: Duration.Duration
  readonly shutdownDelay: Duration.Duration
  readonly pidFile: string | undefined
  readonly restartSignals: ReadonlyArray<NodeJS.Signals>
  /** Off, or on in Node's default directory (`true`) or in a directory. */
  readonly compileCache: boolean | string
  readonly probation: Duration.Duration
  /** How many workers a primary starts; none without workers. */
  readonly workers: number | undefined
  readonly surge: number
  /** The control socket's address: a path, resolved, or `@name`; none if unset. */
  readonly control: string | undefined
  /** The memory limit in bytes; none without one. */
  readonly maxMemory: number | undefined
  readonly maxMemoryGrace: Duration.Duration
}

// A count given in the options is checked as the environment's is.
const wholeNumber = (name: string, value: number) => {
  const problem = Variables.checkCount(value)
  return problem === undefined ? Effect.void : refuse(`${name}: ${value} ${problem}`)
}

const refuse = (message: string) => Effect.fail(new Config.ConfigError(new ConfigProvider.SourceError({ message })))

// A duration given in the options: a Duration, a number of milliseconds, or a string in either syntax.
const durationOf = (name: string, given: Duration.Input) => {
  const parsed = typeof given === "string" ? Variables.parseDuration(given) : Duration.fromInput(given)
  return Option.isSome(parsed)
    ? Effect.succeed(parsed.value)
    : refuse(`${name}: ${JSON.stringify(given)} is not a duration; use ${Variables.DURATION_SYNTAX}`)
}

// A size given in the options: a number of bytes, or a string as the environment's.
const sizeOf = (name: string, given: number | string) => {
  const parsed =
    typeof given === "string"
      ? Variables.parseSize(given)
      : Number.isSafeInteger(given) && given > 0
        ? Option.some(given)
        : Option.none()
  return Option.isSome(parsed)
    ? Effect.succeed(parsed.value)
    : refuse(`${name}: ${JSON.stringify(given)} is not a size; use ${Variables.SIZE_SYNTAX}`)
}

const compileCacheOf = (options: Options, configured: Option.Option<string>): boolean | string =>
  options.compileCache ??
  Option.match(configured, {
    onNone: () => true,
    onSome: (value) => (["off", "false", "0"].includes(value.trim()) ? false : value.trim())
  })

/** The settings of `options`, checked, with the environment's values where they say nothing. */
export const make = (options: Options): Effect.Effect<Settings, Config.ConfigError> =>
  Effect.gen(function* () {
    const configured = yield* config
    const workers = options.workers ?? Option.getOrUndefined(configured.workers)
    if (workers !== undefined && workers !== "auto") yield* wholeNumber("workers", workers)
    if (options.surge !== undefined) yield* wholeNumber("surge", options.surge)
    const pidFile = options.pidFile ?? Option.getOrUndefined(configured.pidFile)
    const control = (options.control ?? Option.getOrUndefined(configured.control))?.trim() || undefined
    const duration = (name: keyof Options, found: Option.Option<Duration.Duration>, or: Duration.Duration) => {
      const given = options[name] as Duration.Input | undefined
      return given === undefined ? Effect.succeed(Option.getOrElse(found, () => or)) : durationOf(name, given)
    }
    return {
      workers: workers === "auto" ? Math.min(availableParallelism(), Variables.MAX_WORKERS) : workers,
      surge: options.surge ?? Option.getOrElse(configured.surge, () => 1),
      readyTimeout: yield* duration("readyTimeout", configured.readyTimeout, Duration.seconds(60)),
      shutdownDelay: yield* duration("shutdownDelay", configured.shutdownDelay, Duration.zero),
      pidFile: pidFile === undefined ? undefined : resolve(pidFile),
      control: control === undefined || control.startsWith("@") ? control : resolve(control),
      restartSignals: options.restartSignals ?? ["SIGUSR2"],
      probation: yield* duration("probation", configured.probation, Duration.seconds(5)),
      compileCache: compileCacheOf(options, configured.compileCache),
      maxMemory:
        options.maxMemory === undefined
          ? Option.getOrUndefined(configured.maxMemory)
          : yield* sizeOf("maxMemory", options.maxMemory),
      maxMemoryGrace: yield* duration("maxMemoryGrace", configured.maxMemoryGrace, Duration.seconds(10))
    }
  })
