/**
 * The parent that started this process, as this process sees it: the
 * process it takes over from (this one is its successor), or its primary
 * (this one is a worker). The OS service opens the channel (os.ts); this
 * module speaks the protocol over it (protocol.ts): the ticket key, the
 * `ready` this process says once it serves, and, for a worker, its
 * primary's commands, the answers to its asks for listeners, and the
 * sockets its primary lends it and takes back.
 */
import type * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import type * as Os from "./os.ts"
import * as Protocol from "./protocol.ts"
import type { Command, ListenFailure, ListenRequest, RestartFailure, ToChild } from "./protocol.ts"

/** A restart the parent passed on to this process, its successor: the ask to answer, and its kind. */
export interface Passed {
  readonly ask: number
  readonly kind: "upgrade" | "roll"
}

/**
 * A socket a primary lends its worker, of a slot with no worker that accepts (`fd`, this process's copy), or takes
 * back; `loan` names it in both.
 */
export type Loan =
  | { readonly _tag: "Lend"; readonly loan: number; readonly fd: number }
  | { readonly _tag: "Reclaim"; readonly loan: number }

/** The link to the parent that started this process. */
export interface Parent {
  readonly pid: number
  /** The parent's ticket key, once it has arrived; none if it sends none, or has gone first. */
  readonly ticketKey: Effect.Effect<string | undefined>
  readonly signalReady: Effect.Effect<void>
  /** Completes once the parent has exited (the channel closed). */
  readonly exited: Effect.Effect<void>
  /** What a primary tells its worker, in order; ends once it has gone. */
  readonly commands: Queue.Dequeue<Command, Cause.Done>
  /** The sockets a primary lends its worker and takes back, in order; ends once it has gone. */
  readonly loans: Queue.Dequeue<Loan, Cause.Done>
  /** A worker asks its primary for a listener: its fd. */
  readonly listen: (request: ListenRequest) => Effect.Effect<number, ListenFailure>
  /** A worker asks its primary for a rolling restart. */
  readonly roll: Effect.Effect<void>
  /** Restarts the parent passed on to this process, its successor, in order; ends once it has gone. */
  readonly restarts: Queue.Dequeue<Passed, Cause.Done>
  /** Answers a restart passed on: this process's successor's pid, or why the restart failed. */
  readonly restarted: (ask: number, outcome: Result.Result<number, RestartFailure>) => Effect.Effect<void>
}

type Pending = Deferred.Deferred<number, ListenFailure>

interface Link {
  readonly pending: Map<number, Pending>
  readonly ticketKey: Deferred.Deferred<string | undefined>
  readonly commands: Queue.Queue<Command, Cause.Done>
  readonly loans: Queue.Queue<Loan, Cause.Done>
  readonly restarts: Queue.Queue<Passed, Cause.Done>
}

const lost = (code: string, syscall = "primary"): ListenFailure => ({ _tag: "BindFailed", address: "", code, syscall })

// An ask answered: the fd the primary sent, or why it could not.
const answered = (parent: Os.Parent, link: Link, message: Extract<ToChild, { readonly ask: number }>) => {
  const pending = link.pending.get(message.ask)
  if (pending === undefined) return Effect.void
  link.pending.delete(message.ask)
  if (message._tag === "ListenFailed") return Deferred.fail(pending, message.failure)
  return Effect.matchEffect(parent.receiveFd(), {
    onSuccess: (fd) => Deferred.succeed(pending, fd),
    onFailure: (error) => Deferred.fail(pending, lost(error.code, error.syscall))
  })
}

// A socket lent: its fd was sent first. One that cannot be received is no loan (the next reclaim of it is nothing).
const lent = (parent: Os.Parent, link: Link, loan: number) =>
  Effect.matchEffect(parent.receiveFd(), {
    onSuccess: (fd) => Queue.offer(link.loans, { _tag: "Lend", loan, fd }),
    onFailure: (error) =>
      Effect.logWarning("effect-grace: a socket lent by the primary could not be received").pipe(
        Effect.annotateLogs({ loan, code: error.code })
      )
  })

const dispatch = (parent: Os.Parent, link: Link, line: string): Effect.Effect<void> => {
  const message = Protocol.decodeToChild(line)
  if (message === undefined) return Protocol.unknownLine(line)
  switch (message._tag) {
    case "TicketKeys":
      return Deferred.succeed(link.ticketKey, message.key)
    case "Command":
      return Queue.offer(link.commands, message.command)
    case "Listened":
    case "ListenFailed":
      return answered(parent, link, message)
    case "Restart":
      return Queue.offer(link.restarts, { ask: message.ask, kind: message.kind })
    case "Lend":
      return lent(parent, link, message.loan)
    case "Reclaim":
      return Queue.offer(link.loans, { _tag: "Reclaim", loan: message.loan })
  }
}

// The parent has gone: no key is coming, no command, and no answer to an ask.
const gone = (link: Link) =>
  Effect.gen(function* () {
    yield* Deferred.succeed(link.ticketKey, undefined)
    yield* Queue.end(link.commands)
    yield* Queue.end(link.loans)
    yield* Queue.end(link.restarts)
    for (const pending of link.pending.values()) yield* Deferred.fail(pending, lost("ECONNRESET"))
  })

/**
 * This process's end: reads what its parent says, in a fiber of the current scope, until the channel closes.
 * `values` are the variables the parent set (`Os.parent`): a parent that sends no ticket key is not waited for.
 */
export const connect = (
  parent: Os.Parent,
  values: Readonly<Record<string, string>>
): Effect.Effect<Parent, never, Scope.Scope> =>
  Effect.gen(function* () {
    const link: Link = {
      pending: new Map(),
      ticketKey: yield* Deferred.make<string | undefined>(),
      commands: yield* Queue.unbounded<Command, Cause.Done>(),
      loans: yield* Queue.unbounded<Loan, Cause.Done>(),
      restarts: yield* Queue.unbounded<Passed, Cause.Done>()
    }
    yield* Effect.forkScoped(
      Effect.forever(Effect.flatMap(parent.channel.receive, (line) => dispatch(parent, link, line))).pipe(
        Effect.catch(() => gone(link))
      )
    )
    if (values[Protocol.TICKET_KEYS_VARIABLE] !== "channel") yield* Deferred.succeed(link.ticketKey, undefined)
    const send = (message: Protocol.ToParent) => parent.channel.send(Protocol.encodeToParent(message))
    let asked = 0
    return {
      pid: parent.pid,
      ticketKey: Deferred.await(link.ticketKey),
      signalReady: send({ _tag: "Ready" }),
      exited: parent.channel.closed,
      commands: link.commands,
      loans: link.loans,
      listen: (request) =>
        Effect.gen(function* () {
          const ask = asked++
          const answer = yield* Deferred.make<number, ListenFailure>()
          link.pending.set(ask, answer)
          yield* send({ _tag: "Listen", ask, request })
          return yield* Deferred.await(answer)
        }),
      roll: send({ _tag: "Roll" }),
      restarts: link.restarts,
      restarted: (ask, outcome) =>
        send(
          Result.isSuccess(outcome)
            ? { _tag: "Restarted", ask, pid: outcome.success }
            : { _tag: "RestartFailed", ask, reason: outcome.failure }
        )
    }
  })
