/**
 * What a primary and its workers say to each other, over the channel each
 * worker is started with (channel.ts), above the OS seam (os.ts), so that
 * unit tests play either end against a fake OS.
 *
 * - The primary starts a worker with every listening socket it holds as
 *   fds 3.. (`LISTEN_FDS`), its slot (`EFFECT_GRACE_WORKER`), and writes
 *   `ticket-keys <key>` first, as to a successor.
 * - A worker asks for a listener it was not given with `listen <json>`: the
 *   primary binds it (or takes it from those it holds), sends the fd over the
 *   worker's second socket (SCM_RIGHTS), then answers `listened <json>` on
 *   the channel, or `listen-failed <json>` with the reason. The primary holds
 *   every listening socket for the life of the service, so no restart closes
 *   one, and every later worker is given it at its start.
 * - The worker writes `ready` once it serves, and `roll` to ask for a rolling
 *   restart (its application's `restart`).
 * - The primary writes `serving` once the group serves (the worker's
 *   readiness), `pause` (stop accepting, drain, stay built), `resume`, and
 *   `terminate` (drain and exit). Not a signal: systemd's stop signals every
 *   process of the service, and a worker's second termination signal would
 *   cut its drain short. It kills a worker with SIGKILL.
 * - A worker whose channel closes has lost its primary: it drains and exits.
 */
import type * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Listeners from "../Listeners.ts"
import type * as Os from "./os.ts"
import * as Successor from "./successor.ts"

/** The variable that tells a process it is a worker, and its slot. */
export const WORKER_VARIABLE = "EFFECT_GRACE_WORKER"

/** What the primary tells a worker. */
export type Command = "serving" | "pause" | "resume" | "terminate"

/** A listener a worker asks its primary for: the `nth` ask of the same address and name by that worker. */
export interface ListenRequest {
  readonly address: string
  readonly name: string | undefined
  readonly backlog: number
  readonly nth: number
}

/** What a primary answers a worker's requests with. */
export interface Requests {
  readonly listen: (request: ListenRequest) => Effect.Effect<number, Listeners.ListenersError>
  readonly roll: Effect.Effect<void>
}

/** A worker, as its primary sees it. */
export interface Worker {
  readonly pid: number
  /** Completes once it has said it is ready; fails if it exits first. */
  readonly ready: Effect.Effect<void, Successor.EarlyExit>
  readonly exited: Effect.Effect<Os.Exited>
  readonly tell: (command: Command) => Effect.Effect<void>
  readonly kill: Effect.Effect<void>
  readonly terminate: Effect.Effect<void>
}

const READY = "ready"
const LISTEN = "listen "
const LISTENED = "listened "
const LISTEN_FAILED = "listen-failed "
const ROLL = "roll"
const COMMANDS: ReadonlyArray<string> = ["serving", "pause", "resume", "terminate"]

// One listen request: the fd first, then the line that says it was sent.
const answerListen = (child: Os.Child, requests: Requests, line: string) =>
  Effect.gen(function* () {
    const { key, ...request } = JSON.parse(line.slice(LISTEN.length)) as ListenRequest & { readonly key: number }
    const answer = yield* requests.listen(request).pipe(
      Effect.flatMap((fd) => child.sendFd(fd)),
      Effect.mapError((error) =>
        "reason" in error
          ? error.reason
          : new Listeners.BindFailed({ address: request.address, code: error.code, syscall: error.syscall })
      ),
      Effect.result
    )
    yield* answer._tag === "Success"
      ? child.channel.send(`${LISTENED}${JSON.stringify({ key })}`)
      : child.channel.send(
          `${LISTEN_FAILED}${JSON.stringify({ key, reason: { ...answer.failure, _tag: answer.failure._tag } })}`
        )
  })

/** Starts a worker for `slot` with the listeners, sends it the ticket key, and answers its requests until it exits. */
export const start = (
  os: Os.Os,
  options: {
    readonly slot: number
    readonly passed: ReadonlyArray<Os.Passed>
    readonly ticketKey: string
    readonly env: Readonly<Record<string, string | undefined>>
  },
  requests: Requests
): Effect.Effect<Worker, Os.SpawnFailure, Scope.Scope> =>
  Effect.gen(function* () {
    const env = { ...options.env, [WORKER_VARIABLE]: String(options.slot), [Successor.TICKET_KEYS_VARIABLE]: "channel" }
    const child = yield* os.spawn(options.passed, env, { worker: true })
    yield* child.channel.send(`ticket-keys ${options.ticketKey}`)
    const said = yield* Deferred.make<void>()
    const handle = (line: string): Effect.Effect<void> => {
      if (line === READY) return Deferred.succeed(said, undefined)
      if (line === ROLL) return requests.roll
      if (line.startsWith(LISTEN)) return Effect.catchDefect(answerListen(child, requests, line), Effect.logWarning)
      return Effect.void
    }
    // Until the channel closes: the worker has exited.
    yield* Effect.forkScoped(
      Effect.forever(Effect.flatMap(child.channel.receive, handle)).pipe(Effect.catch(() => Effect.void))
    )
    return {
      pid: child.pid,
      ready: Effect.raceFirst(Deferred.await(said), Successor.exitedEarly(child)),
      exited: child.exited,
      tell: (command) => child.channel.send(command),
      kill: child.kill,
      terminate: child.channel.send("terminate")
    }
  })

/** A worker's link to its primary. */
export interface PrimaryLink {
  readonly pid: number
  readonly slot: number
  readonly ticketKey: Effect.Effect<string | undefined>
  readonly signalReady: Effect.Effect<void>
  /** Completes once the primary has gone (the channel closed). */
  readonly exited: Effect.Effect<void>
  /** What the primary tells this worker, in order; ends once it has gone. */
  readonly commands: Queue.Dequeue<Command, Cause.Done>
  /** Asks the primary for a listener: its fd. */
  readonly listen: (request: ListenRequest) => Effect.Effect<number, Listeners.ListenersError>
  /** Asks the primary for a rolling restart. */
  readonly roll: Effect.Effect<void>
}

type Pending = Deferred.Deferred<number, Listeners.ListenersError>

// The reason a primary sent, as the error it was.
const reasonOf = (json: { readonly _tag: string } & Record<string, unknown>): Listeners.ListenersErrorReason => {
  const field = (name: string) => String(json[name] ?? "")
  switch (json._tag) {
    case "InvalidAddress":
      return new Listeners.InvalidAddress({ address: field("address"), detail: field("detail") })
    case "InvalidName":
      return new Listeners.InvalidName({ name: field("name") })
    case "NameNotFound":
      return new Listeners.NameNotFound({ name: field("name"), available: [] })
    default:
      return new Listeners.BindFailed({ address: field("address"), code: field("code"), syscall: field("syscall") })
  }
}

const dispatch = (
  parent: Os.Parent,
  line: string,
  state: {
    readonly pending: Map<number, Pending>
    readonly ticketKey: Deferred.Deferred<string | undefined>
    readonly commands: Queue.Queue<Command, Cause.Done>
  }
): Effect.Effect<void> => {
  if (line.startsWith("ticket-keys ")) return Deferred.succeed(state.ticketKey, line.slice("ticket-keys ".length))
  if (COMMANDS.includes(line)) return Queue.offer(state.commands, line as Command)
  const answer = line.startsWith(LISTENED) || line.startsWith(LISTEN_FAILED)
  if (!answer) return Effect.void
  const json = JSON.parse(line.slice(line.indexOf(" ") + 1)) as { key: number; reason?: { _tag: string } }
  const pending = state.pending.get(json.key)
  if (pending === undefined) return Effect.void
  state.pending.delete(json.key)
  if (json.reason !== undefined)
    return Deferred.fail(pending, new Listeners.ListenersError({ reason: reasonOf(json.reason) }))
  return Effect.matchEffect(parent.receiveFd(), {
    onSuccess: (fd) => Deferred.succeed(pending, fd),
    onFailure: (error) =>
      Deferred.fail(
        pending,
        new Listeners.ListenersError({
          reason: new Listeners.BindFailed({ address: "", code: error.code, syscall: error.syscall })
        })
      )
  })
}

/** The worker's end, once `parent` is known to be its primary (`slot` set). */
export const connect = (parent: Os.Parent, slot: number): Effect.Effect<PrimaryLink, never, Scope.Scope> =>
  Effect.gen(function* () {
    const state = {
      pending: new Map<number, Pending>(),
      ticketKey: yield* Deferred.make<string | undefined>(),
      commands: yield* Queue.unbounded<Command, Cause.Done>()
    }
    let asked = 0
    const gone = Effect.gen(function* () {
      yield* Deferred.succeed(state.ticketKey, undefined)
      yield* Queue.end(state.commands)
      for (const pending of state.pending.values()) {
        yield* Deferred.fail(
          pending,
          new Listeners.ListenersError({
            reason: new Listeners.BindFailed({ address: "", code: "ECONNRESET", syscall: "primary" })
          })
        )
      }
    })
    yield* Effect.forkScoped(
      Effect.forever(Effect.flatMap(parent.channel.receive, (line) => dispatch(parent, line, state))).pipe(
        Effect.catch(() => gone)
      )
    )
    return {
      pid: parent.pid,
      slot,
      ticketKey: Deferred.await(state.ticketKey),
      signalReady: parent.channel.send(READY),
      exited: parent.channel.closed,
      commands: state.commands,
      listen: (request) =>
        Effect.gen(function* () {
          const key = asked++
          const answer = yield* Deferred.make<number, Listeners.ListenersError>()
          state.pending.set(key, answer)
          yield* parent.channel.send(`${LISTEN}${JSON.stringify({ key, ...request })}`)
          return yield* Deferred.await(answer)
        }),
      roll: parent.channel.send(ROLL)
    }
  })
