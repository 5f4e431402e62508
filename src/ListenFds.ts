/**
 * The systemd socket-passing protocol, as sd_listen_fds(3) defines it.
 *
 * A service manager, `systemd-socket-activate` or a restarting predecessor
 * passes listening sockets as fds 3.. and describes them in three environment
 * variables: `LISTEN_PID` (the pid they are meant for), `LISTEN_FDS` (how many)
 * and `LISTEN_FDNAMES` (colon-separated names, one per fd). This module reads
 * them through Effect `Config`, checks every fd, and returns what was passed.
 *
 * Invariants, as libsystemd keeps them:
 * - `LISTEN_PID` or `LISTEN_FDS` absent, or `LISTEN_PID` naming another
 *   process: nothing was passed to us, whatever the other variables say.
 * - A `LISTEN_PID` that is not a pid is an error, not a guess; so, once
 *   `LISTEN_PID` names this process, is a `LISTEN_FDS` that is not a positive
 *   integer, or names that do not match the count.
 * - Every passed fd must be an open, listening stream socket (TCP or unix),
 *   and is made close-on-exec, so it does not leak into subprocesses.
 * - The three variables are removed from the environment whether or not
 *   parsing succeeded, so subprocesses do not believe they were activated.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import type * as Address from "./internal/address.ts"
import * as Sys from "./internal/sys.ts"

/**
 * The first passed fd, `SD_LISTEN_FDS_START`.
 *
 * @since 0.1.0
 * @category constants
 */
export const FDS_START = 3

/**
 * The largest `LISTEN_FDS` accepted. A larger count is a corrupted
 * environment, not a set of sockets.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_FDS = 4096

/**
 * The environment variables of the protocol, removed once read.
 *
 * @since 0.1.0
 * @category constants
 */
export const environmentVariables = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID"] as const

/**
 * A passed listening socket: its fd, its name (`unknown` when none was given)
 * and the local address it is bound to.
 *
 * @since 0.1.0
 * @category models
 */
export interface InheritedFd extends Address.Held {}

/**
 * `LISTEN_FDS` or `LISTEN_PID` is not a valid number.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidVariable extends Data.TaggedError("InvalidVariable")<{
  readonly variable: string
  readonly value: string
  readonly expected: string
}> {
  override get message(): string {
    return `${this.variable}=${JSON.stringify(this.value)} is not ${this.expected}; fix the service manager's or the parent's environment`
  }
}

/**
 * `LISTEN_FDNAMES` has a different number of names than `LISTEN_FDS`.
 *
 * @since 0.1.0
 * @category errors
 */
export class NameCountMismatch extends Data.TaggedError("NameCountMismatch")<{
  readonly count: number
  readonly names: ReadonlyArray<string>
}> {
  override get message(): string {
    return `LISTEN_FDNAMES has ${this.names.length} name(s) (${this.names.join(":")}) for LISTEN_FDS=${this.count}; give exactly one name per fd`
  }
}

/**
 * A passed fd is not an open, listening TCP or unix stream socket.
 *
 * @since 0.1.0
 * @category errors
 */
export class BadFd extends Data.TaggedError("BadFd")<{
  readonly fd: number
  readonly name: string
  readonly problem: "not open" | "not a socket" | "not a stream socket" | "not listening" | "not TCP or unix"
  readonly cause?: unknown
}> {
  override get message(): string {
    return `fd ${this.fd} (${this.name}) is ${this.problem}: the passed fds must be listening stream sockets`
  }
}

/**
 * Sockets were passed, but this platform cannot inherit them: the native
 * calls that check a passed fd are not available (not Linux, or koffi not
 * installed). `detail` says which.
 *
 * @since 0.1.0
 * @category errors
 */
export class ListenFdsUnsupported extends Data.TaggedError("ListenFdsUnsupported")<{
  readonly platform: string
  readonly count: number
  readonly detail: string
}> {
  override get message(): string {
    return `LISTEN_FDS passes ${this.count} socket(s), but inheriting them needs native calls that are not available here: ${this.detail}; start the program without socket activation`
  }
}

/**
 * Why passed fds could not be taken.
 *
 * @since 0.1.0
 * @category errors
 */
export type ListenFdsErrorReason = InvalidVariable | NameCountMismatch | BadFd | ListenFdsUnsupported

/**
 * The passed fds could not be taken; `reason` says why.
 *
 * @since 0.1.0
 * @category errors
 */
export class ListenFdsError extends Data.TaggedError("ListenFdsError")<{
  readonly reason: ListenFdsErrorReason
}> {
  override get message(): string {
    return `socket activation: ${this.reason.message}`
  }
}

/**
 * The fds passed to this process, in order; empty outside socket activation.
 *
 * @since 0.1.0
 * @category services
 */
export class ListenFds extends Context.Service<ListenFds, ReadonlyArray<InheritedFd>>()("effect-grace/ListenFds") {}

const fail = (reason: ListenFdsErrorReason) => Effect.fail(new ListenFdsError({ reason }))

const positiveInt = (variable: string, value: string, max: number) => {
  const n = /^[0-9]+$/.test(value) ? Number(value) : NaN
  return Number.isSafeInteger(n) && n > 0 && n <= max
    ? Effect.succeed(n)
    : fail(new InvalidVariable({ variable, value, expected: `an integer from 1 to ${max}` }))
}

const variables = Config.all({
  pid: Config.option(Config.String("LISTEN_PID")),
  fds: Config.option(Config.String("LISTEN_FDS")),
  names: Config.option(Config.String("LISTEN_FDNAMES"))
})

const problems = {
  NotOpen: "not open",
  NotSocket: "not a socket",
  NotStream: "not a stream socket",
  NotListening: "not listening",
  UnsupportedFamily: "not TCP or unix"
} as const

/**
 * Checks one passed fd, as sd_is_socket(3) would: open, a stream socket of
 * family TCP or unix, listening. Marks it close-on-exec and reads its address.
 *
 * @since 0.1.0
 * @category constructors
 */
export const checkFd = (fd: number, name: string): Effect.Effect<InheritedFd, ListenFdsError> => {
  const inspected = Sys.inspect(fd)
  if (Result.isFailure(inspected)) {
    return fail(new BadFd({ fd, name, problem: "not a socket", cause: Sys.formatSysError(inspected.failure) }))
  }
  const kind = inspected.success
  if (kind._tag !== "Listening") return fail(new BadFd({ fd, name, problem: problems[kind._tag] }))
  const cloexec = Sys.setCloseOnExec(fd, true)
  if (Result.isFailure(cloexec)) {
    return fail(new BadFd({ fd, name, problem: "not open", cause: Sys.formatSysError(cloexec.failure) }))
  }
  return Effect.succeed({ fd, name, address: kind.address })
}

/**
 * Reads the protocol's variables through `Config` and checks the passed fds,
 * as `sd_listen_fds_with_names(unset_environment = true)` does.
 *
 * **Details**
 *
 * Outside socket activation (no `LISTEN_PID` or `LISTEN_FDS`, or a
 * `LISTEN_PID` that names another process) it succeeds with an empty array,
 * on any platform, without looking at `LISTEN_FDS`. Where the
 * native calls are not available, fds passed to this process are refused
 * (`ListenFdsUnsupported`). The variables are removed from
 * `process.env` in every case, unless `unsetEnvironment` is `false`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options?: {
  readonly unsetEnvironment?: boolean | undefined
}): Effect.Effect<ReadonlyArray<InheritedFd>, ListenFdsError | Config.ConfigError> =>
  Effect.gen(function* () {
    const env = yield* variables
    if (Option.isNone(env.pid) || Option.isNone(env.fds)) return []
    const pid = yield* positiveInt("LISTEN_PID", env.pid.value, 2 ** 31 - 1)
    if (pid !== process.pid) return []
    const count = yield* positiveInt("LISTEN_FDS", env.fds.value, MAX_FDS)
    const names = Option.match(env.names, {
      onNone: () => Array.from({ length: count }, () => "unknown"),
      onSome: (value) => value.split(":")
    })
    if (names.length !== count) return yield* fail(new NameCountMismatch({ count, names }))
    const native = yield* Sys.enabled
    if (!native.available) {
      return yield* fail(new ListenFdsUnsupported({ platform: native.platform, count, detail: native.reason }))
    }
    return yield* Effect.forEach(names, (name, i) => checkFd(FDS_START + i, name))
  }).pipe(
    Effect.ensuring(
      Effect.sync(() => {
        if (options?.unsetEnvironment === false) return
        for (const variable of environmentVariables) delete process.env[variable]
      })
    )
  )

/**
 * The passed fds, read from the environment through the current
 * `ConfigProvider`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<ListenFds, ListenFdsError | Config.ConfigError> = Layer.effect(ListenFds)(make())

/**
 * A fixed set of passed fds, for tests.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFrom = (fds: ReadonlyArray<InheritedFd>): Layer.Layer<ListenFds> => Layer.succeed(ListenFds)(fds)
