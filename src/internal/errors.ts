/**
 * The supervisor's errors, defined here so that the machinery that raises
 * them (the roles, the interpreter, the group) can, below the public
 * modules; `Supervisor` is their public home, and documents each.
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import { formatSize } from "./config.ts"
import { describeExit } from "./protocol.ts"
import type { ChildExit, RestartFailure } from "./protocol.ts"

export class SpawnFailed extends Data.TaggedError("SpawnFailed")<{
  readonly cause: unknown
}> {
  override get message(): string {
    return `the successor could not be started: ${String(this.cause)}; this process keeps serving`
  }
}

export class ExitedBeforeReady extends Data.TaggedError("ExitedBeforeReady")<ChildExit> {
  override get message(): string {
    return `the successor (pid ${this.pid}) ${describeExit(this)} before it was ready (see its output); this process keeps serving`
  }
}

export class HandedBack extends Data.TaggedError("HandedBack")<ChildExit> {
  override get message(): string {
    return `the successor (pid ${this.pid}) ${describeExit(this)} within its probation window; this process took the service back and serves on`
  }
}

export class NotReadyInTime extends Data.TaggedError("NotReadyInTime")<{
  readonly timeout: Duration.Duration
}> {
  override get message(): string {
    return `the successor was not ready within ${Duration.format(this.timeout)} and was killed; this process keeps serving`
  }
}

export class NotServing extends Data.TaggedError("NotServing")<{
  readonly state: "draining"
}> {
  override get message(): string {
    return "this process is shutting down; it does not restart"
  }
}

export class RestartUnsupported extends Data.TaggedError("RestartUnsupported")<{
  readonly platform: string
  readonly detail: string
}> {
  override get message(): string {
    return `restarting in place is not possible here: ${this.detail}; stop and start the program instead`
  }
}

export type RestartErrorReason =
  SpawnFailed | ExitedBeforeReady | HandedBack | NotReadyInTime | NotServing | RestartUnsupported

/** A reason as data, to cross the private channel (a successor's answer to a restart passed on to it). */
export const reasonToData = (reason: RestartErrorReason): RestartFailure => {
  switch (reason._tag) {
    case "SpawnFailed":
      return { _tag: reason._tag, cause: String(reason.cause) }
    case "ExitedBeforeReady":
    case "HandedBack":
      return { _tag: reason._tag, pid: reason.pid, code: reason.code, signal: reason.signal }
    case "NotReadyInTime":
      return { _tag: reason._tag, millis: Duration.toMillis(reason.timeout) }
    case "NotServing":
      return { _tag: reason._tag }
    case "RestartUnsupported":
      return { _tag: reason._tag, platform: reason.platform, detail: reason.detail }
  }
}

const field = <A>(data: RestartFailure, name: string, is: (value: unknown) => value is A, or: A): A =>
  is(data[name]) ? (data[name] as A) : or

const isNumber = (value: unknown): value is number => typeof value === "number"
const isString = (value: unknown): value is string => typeof value === "string"
const isCode = (value: unknown): value is number | null => value === null || typeof value === "number"
const isSignal = (value: unknown): value is string | null => value === null || typeof value === "string"

/** The reason `reasonToData` made; one this version does not know is the failure it is, in words. */
export const reasonFromData = (data: RestartFailure): RestartErrorReason => {
  const exit = (pid: number) => ({
    pid,
    code: field(data, "code", isCode, null),
    signal: field(data, "signal", isSignal, null)
  })
  const pid = isNumber(data.pid) ? data.pid : undefined
  switch (data._tag) {
    case "ExitedBeforeReady":
      if (pid !== undefined) return new ExitedBeforeReady(exit(pid))
      break
    case "HandedBack":
      if (pid !== undefined) return new HandedBack(exit(pid))
      break
    case "NotReadyInTime":
      return new NotReadyInTime({ timeout: Duration.millis(field(data, "millis", isNumber, 0)) })
    case "NotServing":
      return new NotServing({ state: "draining" })
    case "RestartUnsupported":
      return new RestartUnsupported({
        platform: field(data, "platform", isString, process.platform),
        detail: field(data, "detail", isString, "")
      })
  }
  return new SpawnFailed({ cause: field(data, "cause", isString, JSON.stringify(data)) })
}

export class RestartError extends Data.TaggedError("RestartError")<{
  readonly reason: RestartErrorReason
}> {
  override get message(): string {
    return `restart failed: ${this.reason.message}`
  }
}

export type LaunchProblem =
  "NoRunMain" | "ForeignSignalHandlers" | "TwoSupervisors" | "WorkersUnsupported" | "ControlUnavailable"

const launchMessages: Record<LaunchProblem, (detail: string | undefined) => string> = {
  NoRunMain: () =>
    "Supervisor.layer ends the program after a hand-off, which only Supervisor.runMain lets it do; " +
    "write Layer.launch(Supervisor.layer(App)).pipe(Supervisor.runMain)",
  ForeignSignalHandlers: () =>
    "another handler of SIGTERM or SIGINT is installed (NodeRuntime.runMain installs one), and it would stop " +
    "the program in the middle of the supervisor's drain; run the program with Supervisor.runMain",
  TwoSupervisors: () => "this program already has a supervisor; run one Supervisor.layer (or run) per program",
  WorkersUnsupported: (detail) =>
    `workers cannot run here: ${detail ?? "the native calls are not available"}; the primary passes ` +
    "listening sockets to its workers with them. Unset GRACE_WORKERS (and the workers option) to run one process",
  ControlUnavailable: (detail) => `the control socket (GRACE_CONTROL) cannot be opened: ${detail ?? "unknown"}`
}

export class LaunchError extends Data.TaggedError("LaunchError")<{
  readonly problem: LaunchProblem
  /** What the platform lacks, for `WorkersUnsupported`; why, for `ControlUnavailable`. */
  readonly detail?: string | undefined
}> {
  override get message(): string {
    return launchMessages[this.problem](this.detail)
  }
}

export class WorkerFailed extends Data.TaggedError("WorkerFailed")<{
  readonly slot: number
  /** The worker's pid; `undefined` if it could not be started at all (`cause` says why). */
  readonly pid: number | undefined
  readonly code: number | null
  readonly signal: string | null
  readonly cause?: unknown
}> {
  override get message(): string {
    return this.pid === undefined
      ? `worker ${this.slot} could not be started: ${String(this.cause)}`
      : `worker ${this.slot} (pid ${this.pid}) ${describeExit(this)} before it was ready (see its output)`
  }
}

export class TooFewWorkers extends Data.TaggedError("TooFewWorkers")<{
  readonly workers: number
  readonly sockets: number
  readonly address: string
}> {
  override get message(): string {
    return (
      `${this.workers} workers are fewer than the ${this.sockets} sockets of ${this.address} that the previous ` +
      "primary handed on, one per worker; stop and start the service to run fewer workers"
    )
  }
}

export class MemoryLimitTooLow extends Data.TaggedError("MemoryLimitTooLow")<{
  /** The worker's slot; none for a single process. */
  readonly slot: number | undefined
  readonly pid: number
  readonly rss: number
  readonly limit: number
}> {
  override get message(): string {
    const who = this.slot === undefined ? `this process (pid ${this.pid})` : `worker ${this.slot} (pid ${this.pid})`
    return (
      `the memory limit (GRACE_MAX_MEMORY, maxMemory) of ${formatSize(this.limit)} is below what ${who} uses once ` +
      `started, ${formatSize(this.rss)}: every replacement would start above it; raise the limit above what a ` +
      "process uses under load, or unset it"
    )
  }
}
