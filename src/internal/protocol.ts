/**
 * The private channel's protocol: what a process says to a child it started
 * (a successor, or a primary's worker) and what the child says back, one
 * line each way at a time, over the socket pair of channel.ts. Both ends
 * (child.ts, the parent's; parent.ts, the child's) speak it through this one
 * vocabulary and codec, and nothing else reads or writes a line.
 *
 * Parent to child:
 * - `ticket-keys <key>`: first, always: the TLS session ticket key and its
 *   age (tickets.ts), so that clients resume their sessions with the child.
 *   Never the environment, argv or a file.
 * - To a worker: `serving` (the group serves: the worker is ready), `pause`
 *   (stop accepting, drain, stay built), `resume`, `terminate` (drain and
 *   exit: a line, not a signal, since systemd's stop signals every process
 *   of the service and a second termination signal cuts a drain short), and
 *   the answers to its asks for listeners: `listened <json>` once the fd was
 *   sent over the worker's second socket (SCM_RIGHTS), or
 *   `listen-failed <json>` with the reason.
 * - To a worker that accepts: `lend <json>`, once a socket of a slot with no
 *   worker that accepts was sent over its second socket: it accepts on it
 *   too, for its server of that address, until `reclaim <json>` names the
 *   same loan (then it closes its copy; the primary keeps the socket). A
 *   loan is named by the primary's fd of the socket.
 * - To a successor: `restart <json>`, a restart asked of this process once
 *   the successor serves (or was about to), which the successor carries out
 *   in its place.
 *
 * Child to parent:
 * - `ready`: it serves.
 * - A worker's `listen <json>`: a listener it was not given, which its
 *   primary binds (or has) and holds for the service's life; and `roll`,
 *   its application's `restart`: a rolling restart of the group.
 * - A successor's answer to a `restart` passed on to it, once the restart
 *   that covers it has ended: `restarted <json>` with its pid, or
 *   `restart-failed <json>` with the reason.
 *
 * A child that exits before `ready` has failed; how it ended is one
 * `ChildExit`, carried unchanged from the OS service to the error the user
 * sees. Either end learns that the other has gone when the channel closes:
 * neither signals the other by pid.
 */
import * as Effect from "effect/Effect"

/** The variable that tells a child its parent sends the ticket key on the channel. */
export const TICKET_KEYS_VARIABLE = "EFFECT_GRACE_TICKET_KEYS"

/** The variable that tells a child it is a primary's worker, and its slot. */
export const WORKER_VARIABLE = "EFFECT_GRACE_WORKER"

/** How a child process ended: its exit code, or the signal that killed it. */
export interface ChildExit {
  readonly pid: number
  readonly code: number | null
  readonly signal: string | null
}

/** How a process ended, in words: `exited with code 1`, `was killed by SIGKILL`. */
export const describeExit = (exit: Pick<ChildExit, "code" | "signal">): string =>
  exit.signal !== null ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`

/** A listener a worker asks its primary for: the `nth` ask of the same address and name by that worker. */
export interface ListenRequest {
  readonly address: string
  readonly name: string | undefined
  readonly backlog: number
  readonly nth: number
}

/** Why a listener could not be had, as data that crosses the channel (Listeners makes its errors of it). */
export type ListenFailure =
  | { readonly _tag: "InvalidAddress"; readonly address: string; readonly detail: string }
  | { readonly _tag: "InvalidName"; readonly name: string }
  | { readonly _tag: "NameNotFound"; readonly name: string; readonly available: ReadonlyArray<string> }
  | { readonly _tag: "BindFailed"; readonly address: string; readonly code: string; readonly syscall: string }
  | { readonly _tag: "ServeFailed"; readonly address: string; readonly cause: unknown }

/** A restart's reason, as data that crosses the channel (errors.ts makes its error of it). */
export type RestartFailure = { readonly _tag: string } & Readonly<Record<string, unknown>>

/** What the primary tells a worker about its own life. */
export type Command = "serving" | "pause" | "resume" | "terminate"

/** A line from a parent to its child. */
export type ToChild =
  | { readonly _tag: "TicketKeys"; readonly key: string }
  | { readonly _tag: "Command"; readonly command: Command }
  | { readonly _tag: "Listened"; readonly ask: number }
  | { readonly _tag: "ListenFailed"; readonly ask: number; readonly failure: ListenFailure }
  | { readonly _tag: "Restart"; readonly ask: number; readonly kind: "upgrade" | "roll" }
  | { readonly _tag: "Lend" | "Reclaim"; readonly loan: number }

/** A line from a child to its parent. */
export type ToParent =
  | { readonly _tag: "Ready" }
  | { readonly _tag: "Roll" }
  | { readonly _tag: "Listen"; readonly ask: number; readonly request: ListenRequest }
  | { readonly _tag: "Restarted"; readonly ask: number; readonly pid: number }
  | { readonly _tag: "RestartFailed"; readonly ask: number; readonly reason: RestartFailure }

const TICKET_KEYS = "ticket-keys "
const LISTEN = "listen "
const LISTENED = "listened "
const LISTEN_FAILED = "listen-failed "
const READY = "ready"
const ROLL = "roll"
const RESTART = "restart "
const RESTARTED = "restarted "
const RESTART_FAILED = "restart-failed "
const LEND = "lend "
const RECLAIM = "reclaim "
const COMMANDS: ReadonlyArray<string> = ["serving", "pause", "resume", "terminate"] satisfies ReadonlyArray<Command>

// A failure's fields, and its tag, whatever object it is (an error class of Listeners, or data); a cause in words.
const failureJson = (failure: ListenFailure): ListenFailure => {
  const { _tag, ...fields } = failure
  return { ...fields, ...("cause" in failure ? { cause: String(failure.cause) } : {}), _tag } as ListenFailure
}

/** The line for a message to a child. */
export const encodeToChild = (message: ToChild): string => {
  switch (message._tag) {
    case "TicketKeys":
      return `${TICKET_KEYS}${message.key}`
    case "Command":
      return message.command
    case "Listened":
      return `${LISTENED}${JSON.stringify({ key: message.ask })}`
    case "ListenFailed":
      return `${LISTEN_FAILED}${JSON.stringify({ key: message.ask, reason: failureJson(message.failure) })}`
    case "Restart":
      return `${RESTART}${JSON.stringify({ key: message.ask, kind: message.kind })}`
    case "Lend":
      return `${LEND}${JSON.stringify({ loan: message.loan })}`
    case "Reclaim":
      return `${RECLAIM}${JSON.stringify({ loan: message.loan })}`
  }
}

/** The line for a message to a parent. */
export const encodeToParent = (message: ToParent): string => {
  switch (message._tag) {
    case "Ready":
      return READY
    case "Roll":
      return ROLL
    case "Listen":
      return `${LISTEN}${JSON.stringify({ key: message.ask, ...message.request })}`
    case "Restarted":
      return `${RESTARTED}${JSON.stringify({ key: message.ask, pid: message.pid })}`
    case "RestartFailed":
      return `${RESTART_FAILED}${JSON.stringify({ key: message.ask, reason: message.reason })}`
  }
}

const json = (text: string): Record<string, unknown> | undefined => {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

const string = (value: unknown): string => (typeof value === "string" ? value : String(value ?? ""))

// The reason a primary sent, as the data it was; an unknown one is a failed bind.
const failureOf = (reason: Record<string, unknown>): ListenFailure => {
  switch (reason._tag) {
    case "InvalidAddress":
      return { _tag: "InvalidAddress", address: string(reason.address), detail: string(reason.detail) }
    case "InvalidName":
      return { _tag: "InvalidName", name: string(reason.name) }
    case "NameNotFound":
      return { _tag: "NameNotFound", name: string(reason.name), available: [] }
    case "ServeFailed":
      return { _tag: "ServeFailed", address: string(reason.address), cause: string(reason.cause) }
    default:
      return {
        _tag: "BindFailed",
        address: string(reason.address),
        code: string(reason.code),
        syscall: string(reason.syscall)
      }
  }
}

// The JSON after a line's word, with the ask it answers (`key`), or `undefined`.
const asked = (line: string, word: string): (Record<string, unknown> & { readonly key: number }) | undefined => {
  const body = json(line.slice(word.length))
  return body !== undefined && typeof body.key === "number"
    ? (body as Record<string, unknown> & { key: number })
    : undefined
}

/** Logs a line that this version does not know (from a newer or broken peer), and goes on. */
export const unknownLine = (line: string) =>
  Effect.logDebug("effect-grace: a line of the private channel this version does not know").pipe(
    Effect.annotateLogs({ line: line.slice(0, 200) })
  )

/** The message a line from a parent carries, or `undefined` for a line this version does not know. */
export const decodeToChild = (line: string): ToChild | undefined => {
  if (line.startsWith(TICKET_KEYS)) return { _tag: "TicketKeys", key: line.slice(TICKET_KEYS.length) }
  if (COMMANDS.includes(line)) return { _tag: "Command", command: line as Command }
  if (line.startsWith(RESTART)) {
    const body = asked(line, RESTART)
    if (body === undefined) return undefined
    return { _tag: "Restart", ask: body.key, kind: body.kind === "roll" ? "roll" : "upgrade" }
  }
  const loan = line.startsWith(LEND) ? "Lend" : line.startsWith(RECLAIM) ? "Reclaim" : undefined
  if (loan !== undefined) {
    const body = json(line.slice(line.indexOf(" ") + 1))
    return typeof body?.loan === "number" ? { _tag: loan, loan: body.loan } : undefined
  }
  const listened = line.startsWith(LISTENED)
  if (!listened && !line.startsWith(LISTEN_FAILED)) return undefined
  const body = json(line.slice(line.indexOf(" ") + 1))
  if (body === undefined || typeof body.key !== "number") return undefined
  if (listened) return { _tag: "Listened", ask: body.key }
  const reason = typeof body.reason === "object" && body.reason !== null ? (body.reason as Record<string, unknown>) : {}
  return { _tag: "ListenFailed", ask: body.key, failure: failureOf(reason) }
}

/** The message a line from a child carries, or `undefined` for a line this version does not know. */
export const decodeToParent = (line: string): ToParent | undefined => {
  if (line === READY) return { _tag: "Ready" }
  if (line === ROLL) return { _tag: "Roll" }
  if (line.startsWith(RESTARTED)) {
    const body = asked(line, RESTARTED)
    return body === undefined || typeof body.pid !== "number"
      ? undefined
      : { _tag: "Restarted", ask: body.key, pid: body.pid }
  }
  if (line.startsWith(RESTART_FAILED)) {
    const body = asked(line, RESTART_FAILED)
    const reason = body?.reason
    if (body === undefined || typeof reason !== "object" || reason === null || !("_tag" in reason)) return undefined
    return { _tag: "RestartFailed", ask: body.key, reason: reason as RestartFailure }
  }
  if (!line.startsWith(LISTEN)) return undefined
  const body = json(line.slice(LISTEN.length))
  if (body === undefined || typeof body.key !== "number" || typeof body.address !== "string") return undefined
  const name = typeof body.name === "string" ? body.name : undefined
  const backlog = typeof body.backlog === "number" ? body.backlog : 511
  const nth = typeof body.nth === "number" ? body.nth : 0
  return { _tag: "Listen", ask: body.key, request: { address: body.address, name, backlog, nth } }
}
