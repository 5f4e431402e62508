/**
 * The sd_notify(3) client: tells the service manager what the service is doing.
 *
 * A service manager (systemd with `Type=notify` or `Type=notify-reload`)
 * names a unix datagram socket in `NOTIFY_SOCKET`, either a path (`/run/...`)
 * or a name in the abstract namespace (`@name`). The service sends it one
 * datagram per state change, made of newline-separated `VAR=value` lines:
 * `READY=1` when start-up or a reload is done, `RELOADING=1` with
 * `MONOTONIC_USEC` when a reload begins, `MAINPID=` when another process takes
 * over as the main process, `STOPPING=1` when shutdown begins, `STATUS=` free
 * text and `EXTEND_TIMEOUT_USEC=` for more time.
 *
 * Invariants:
 * - `NOTIFY_SOCKET` is read through Effect `Config`. Unset or empty: every
 *   call does nothing and fails with nothing, as libsystemd does.
 * - A `NOTIFY_SOCKET` that is neither an absolute path nor `@name` is an error
 *   when the service is built, not a silent no-op at the first send.
 * - One call, one datagram: variables that must arrive together (`RELOADING=1`
 *   with `MONOTONIC_USEC`, `MAINPID` with `READY=1`) are never split.
 * - A value with a newline (or a NUL byte) is refused with a typed error
 *   rather than sent as a second, unintended variable.
 * - A failed send is a typed `NotifyError`: the caller decides whether to log
 *   it and go on. Nothing here logs or retries.
 * - `NOTIFY_SOCKET` stays in the environment, unlike
 *   `sd_notify(unset_environment = true)`: a restarted successor must find it.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Sys from "./internal/sys.ts"

/**
 * The largest message, in bytes, that systemd accepts (`NOTIFY_BUFFER_MAX`,
 * one `PIPE_BUF`). systemd drops a longer datagram with only a log line, so a
 * longer message is refused here instead.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_MESSAGE_BYTES = 4096

// A sockaddr_un holds 108 bytes: a path needs its NUL, an abstract name its leading NUL.
const MAX_ADDRESS_BYTES = 107

/**
 * The variables of one message, in the order they are sent: pairs, or a
 * record (in its key order).
 *
 * @since 0.1.0
 * @category models
 */
export type State = ReadonlyArray<readonly [variable: string, value: string]> | Readonly<Record<string, string>>

/**
 * `NOTIFY_SOCKET` is set but is not an address sd_notify can send to.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidSocket extends Data.TaggedError("InvalidSocket")<{
  readonly socket: string
  readonly problem: string
}> {
  override get message(): string {
    return (
      `NOTIFY_SOCKET=${JSON.stringify(this.socket)} ${this.problem}; ` +
      "set it to the socket the service manager passed, or unset it to run without a service manager"
    )
  }
}

/**
 * A message that cannot be sent as given: a newline or NUL byte in a value, a
 * malformed variable name, an empty or too long message, or a value out of
 * range.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidMessage extends Data.TaggedError("InvalidMessage")<{
  readonly variable: string | undefined
  readonly problem: string
}> {
  override get message(): string {
    const subject = this.variable === undefined ? "the message" : JSON.stringify(this.variable)
    return `cannot send ${subject}: ${this.problem}; fix the caller, nothing was sent`
  }
}

/**
 * The datagram could not be sent: no socket at that path (`ENOENT`), nothing
 * receiving on it any more (`ECONNREFUSED`), no permission (`EACCES`), ...
 *
 * @since 0.1.0
 * @category errors
 */
export class SendFailed extends Data.TaggedError("SendFailed")<{
  readonly socket: string
  readonly syscall: string
  readonly code: string
  readonly cause: unknown
}> {
  override get message(): string {
    const hint =
      this.code === "ENOENT"
        ? "no socket exists there: is NOTIFY_SOCKET left over from another service manager or boot?"
        : this.code === "ECONNREFUSED"
          ? "nothing receives on it any more: the service manager has gone away"
          : this.code === "EACCES" || this.code === "EPERM"
            ? "permission denied: the service's user cannot write to the socket"
            : this.code === "EAGAIN" || this.code === "EWOULDBLOCK"
              ? "the service manager's queue is full"
              : "check that the service manager is running"
    return (
      `sending to NOTIFY_SOCKET ${JSON.stringify(this.socket)} failed (${this.syscall}: ${this.code}); ` +
      `${hint}. The service manager did not see this state change`
    )
  }
}

/**
 * `NOTIFY_SOCKET` is set, but this platform cannot send to it: Node has no
 * unix datagram socket, and the native calls that make one are not available
 * (not Linux, or koffi not installed). `detail` says which.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotifyUnsupported extends Data.TaggedError("NotifyUnsupported")<{
  readonly socket: string
  readonly platform: string
  readonly detail: string
}> {
  override get message(): string {
    return `NOTIFY_SOCKET=${JSON.stringify(this.socket)} is set, but sending to it needs native calls that are not available here: ${this.detail}; unset NOTIFY_SOCKET to run without a service manager`
  }
}

/**
 * Why a notification could not be sent.
 *
 * @since 0.1.0
 * @category errors
 */
export type NotifyErrorReason = InvalidSocket | InvalidMessage | SendFailed | NotifyUnsupported

/**
 * A notification could not be sent, or `NOTIFY_SOCKET` is unusable; `reason`
 * says why.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotifyError extends Data.TaggedError("NotifyError")<{
  readonly reason: NotifyErrorReason
}> {
  override get message(): string {
    return `sd_notify: ${this.reason.message}`
  }
}

/**
 * The sd_notify client. Every method sends one datagram, or does nothing when
 * `enabled` is `false` (no `NOTIFY_SOCKET`).
 *
 * **When to use**
 *
 * Use it from the code that owns the process's life cycle (the supervisor):
 * `ready` once the servers answer, `reloading` and `mainPid(pid, { ready:
 * true })` around a restart, `stopping` when the drain begins.
 *
 * **Details**
 *
 * - `notify(state)` sends any variables, in order, in one datagram.
 * - `ready` sends `READY=1`.
 * - `reloading` sends `RELOADING=1` and `MONOTONIC_USEC=` (CLOCK_MONOTONIC
 *   in microseconds, read when it runs) together, as `Type=notify-reload`
 *   requires.
 * - `mainPid(pid)` sends `MAINPID=<pid>`; with `{ ready: true }`, `READY=1`
 *   in the same datagram, as a restart's hand-off does.
 * - `stopping` sends `STOPPING=1`, `status(text)` sends `STATUS=<text>` and
 *   `extendTimeout(duration)` sends `EXTEND_TIMEOUT_USEC=<microseconds>`.
 *
 * **Gotchas**
 *
 * - With `NotifyAccess=main` (implied by `Type=notify`) systemd accepts
 *   messages only from the main pid: a successor's own messages count only
 *   after the old main process sent `MAINPID=` naming it.
 * - Sending is synchronous, from a fresh socket each time, as libsystemd does.
 * - When disabled, messages are not checked either: use `layerCallback` to check
 *   them in tests.
 *
 * @since 0.1.0
 * @category services
 */
export class Notify extends Context.Service<
  Notify,
  {
    /** Whether messages go anywhere: `NOTIFY_SOCKET` is set (or this is a test double). */
    readonly enabled: boolean
    /** Sends the variables in one datagram. */
    readonly notify: (state: State) => Effect.Effect<void, NotifyError>
    /** `READY=1`. */
    readonly ready: Effect.Effect<void, NotifyError>
    /** `RELOADING=1` and `MONOTONIC_USEC=<now>` in one datagram. */
    readonly reloading: Effect.Effect<void, NotifyError>
    /** `MAINPID=<pid>`, and `READY=1` in the same datagram with `{ ready: true }`. */
    readonly mainPid: (
      pid: number,
      options?: { readonly ready?: boolean | undefined }
    ) => Effect.Effect<void, NotifyError>
    /** `STOPPING=1`. */
    readonly stopping: Effect.Effect<void, NotifyError>
    /** `STATUS=<text>`. */
    readonly status: (text: string) => Effect.Effect<void, NotifyError>
    /** `EXTEND_TIMEOUT_USEC=<duration in microseconds>`. */
    readonly extendTimeout: (duration: Duration.Input) => Effect.Effect<void, NotifyError>
  }
>()("effect-grace/Notify") {}

const fail = (reason: NotifyErrorReason) => Effect.fail(new NotifyError({ reason }))

const invalid = (variable: string | undefined, problem: string) => fail(new InvalidMessage({ variable, problem }))

const entriesOf = (state: State): ReadonlyArray<readonly [string, string]> =>
  Array.isArray(state) ? (state as ReadonlyArray<readonly [string, string]>) : Object.entries(state)

// Checks every variable and joins them; nothing is sent unless all are fine.
const encode = (state: State): Effect.Effect<string, NotifyError> => {
  const entries = entriesOf(state)
  if (entries.length === 0) return invalid(undefined, "it has no variables")
  const lines: Array<string> = []
  for (const [variable, value] of entries) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(variable)) {
      return invalid(variable, "a variable name is letters, digits and underscores, not starting with a digit")
    }
    if (value.includes("\n")) {
      return invalid(variable, "its value contains a newline, which would start another variable")
    }
    if (value.includes("\0")) return invalid(variable, "its value contains a NUL byte, which systemd rejects")
    lines.push(`${variable}=${value}`)
  }
  const message = lines.join("\n")
  const bytes = Buffer.byteLength(message)
  if (bytes > MAX_MESSAGE_BYTES) {
    return invalid(undefined, `it is ${bytes} bytes long, and systemd drops messages over ${MAX_MESSAGE_BYTES} bytes`)
  }
  return Effect.succeed(message)
}

// process.hrtime is libuv's uv_hrtime, which reads CLOCK_MONOTONIC on Linux: the clock systemd compares against.
const monotonicMicros = (): string => String(process.hrtime.bigint() / 1000n)

// Every call does nothing, and checks nothing, as libsystemd without NOTIFY_SOCKET.
const disabled: Notify["Service"] = Notify.of({
  enabled: false,
  notify: () => Effect.void,
  ready: Effect.void,
  reloading: Effect.void,
  mainPid: () => Effect.void,
  stopping: Effect.void,
  status: () => Effect.void,
  extendTimeout: () => Effect.void
})

const makeWith = (send: (message: string) => Effect.Effect<void, NotifyError>): Notify["Service"] => {
  const notify = (state: State): Effect.Effect<void, NotifyError> => Effect.flatMap(encode(state), send)
  return Notify.of({
    enabled: true,
    notify,
    ready: notify([["READY", "1"]]),
    // Suspended: the clock is read each time the effect runs, not once here.
    reloading: Effect.suspend(() =>
      notify([
        ["RELOADING", "1"],
        ["MONOTONIC_USEC", monotonicMicros()]
      ])
    ),
    mainPid: (pid, options) => {
      if (!Number.isSafeInteger(pid) || pid <= 0) return invalid("MAINPID", `${pid} is not a process id`)
      const mainPid = ["MAINPID", String(pid)] as const
      return notify(options?.ready === true ? [mainPid, ["READY", "1"]] : [mainPid])
    },
    stopping: notify([["STOPPING", "1"]]),
    status: (text) => notify([["STATUS", text]]),
    extendTimeout: (duration) => {
      const micros = Option.getOrElse(Option.map(Duration.fromInput(duration), Duration.toMicros), () => NaN)
      if (!Number.isFinite(micros) || micros < 0) {
        return invalid("EXTEND_TIMEOUT_USEC", `${String(duration)} is not a finite, non-negative duration`)
      }
      // Rounded up: asking for a little more time is safer than for a little less.
      return notify([["EXTEND_TIMEOUT_USEC", String(Math.ceil(micros))]])
    }
  })
}

const sendTo =
  (socket: string) =>
  (message: string): Effect.Effect<void, NotifyError> =>
    Effect.suspend(() => {
      const sent = Sys.sendDatagram(socket, Buffer.from(message))
      return Result.isSuccess(sent)
        ? Effect.void
        : fail(new SendFailed({ socket, syscall: sent.failure.syscall, code: sent.failure.code, cause: sent.failure }))
    })

const checkSocket = (socket: string): Effect.Effect<string, NotifyError> => {
  const invalidSocket = (problem: string) => fail(new InvalidSocket({ socket, problem }))
  if (socket.startsWith("@")) {
    if (socket.length === 1) return invalidSocket("names no abstract socket after the @")
  } else if (!socket.startsWith("/")) {
    return invalidSocket(
      "is neither an absolute path nor an abstract socket name (@name); vsock addresses are not supported"
    )
  }
  if (socket.includes("\0")) return invalidSocket("contains a NUL byte")
  const bytes = Buffer.byteLength(socket.startsWith("@") ? socket.slice(1) : socket)
  if (bytes > MAX_ADDRESS_BYTES) {
    return invalidSocket(`is ${bytes} bytes long, more than the ${MAX_ADDRESS_BYTES} a unix socket address holds`)
  }
  return Effect.succeed(socket)
}

/**
 * A client for a given socket (`/path` or `@name`), or a disabled one for
 * `undefined` or an empty string. Fails with `InvalidSocket` for anything
 * else, and with `NotifyUnsupported` where no unix datagram can be sent.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromSocket = (socket: string | undefined): Effect.Effect<Notify["Service"], NotifyError> => {
  if (socket === undefined || socket === "") return Effect.succeed(disabled)
  return Effect.flatMap(Effect.zip(checkSocket(socket), Sys.enabled), ([checked, native]) => {
    if (!native.available) {
      return fail(new NotifyUnsupported({ socket, platform: native.platform, detail: native.reason }))
    }
    return Effect.succeed(makeWith(sendTo(checked)))
  })
}

/**
 * Reads `NOTIFY_SOCKET` through the current `ConfigProvider` and builds the
 * client, as `sd_notify(unset_environment = false)` does.
 *
 * **Details**
 *
 * Unset or empty, the client is disabled and every call succeeds without
 * doing anything. Set, it must be an absolute path or `@name`; anything else
 * fails here with `InvalidSocket`. The socket is not opened until a message
 * is sent, so the client holds no resources.
 *
 * **Gotchas**
 *
 * `NOTIFY_SOCKET` is left in `process.env`: a successor started by a restart
 * inherits the environment and must still find the socket to report
 * `READY=1` on its own later reloads and `STOPPING=1` at its own shutdown.
 * Unset it yourself before spawning subprocesses that are not successors.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Notify["Service"], NotifyError | Config.ConfigError> = Effect.flatMap(
  // Deliberately not unsetting NOTIFY_SOCKET (libsystemd's unset_environment): the successor needs it.
  Config.option(Config.String("NOTIFY_SOCKET")),
  (socket) => fromSocket(Option.getOrUndefined(socket))
)

/**
 * The client for the `NOTIFY_SOCKET` of the current `ConfigProvider`
 * (the environment by default).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Notify, NotifyError | Config.ConfigError> = Layer.effect(Notify)(make)

/**
 * A disabled client: every call succeeds and sends nothing, as outside a
 * service manager.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerNoop: Layer.Layer<Notify> = Layer.succeed(Notify)(disabled)

/**
 * A client that checks each message as the real one does and hands it, as the
 * text of the datagram it would send, to `onMessage` instead of a socket.
 *
 * @example
 * ```ts
 * const sent: Array<string> = []
 * const NotifyTest = Notify.layerCallback((message) => Effect.sync(() => sent.push(message)))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerCallback = (onMessage: (message: string) => Effect.Effect<void>): Layer.Layer<Notify> =>
  Layer.succeed(Notify)(makeWith(onMessage))
