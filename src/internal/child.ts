/**
 * A child this process starts, as this process sees it: a successor (the
 * program again, to take over) or a primary's worker. The OS service starts
 * it with the listeners at fds 3.. and a channel after them (os.ts); this
 * module speaks the protocol over that channel (protocol.ts): the ticket key
 * first, then the child's `ready`, a worker's asks, and whatever this
 * process tells it. Unit tests play the child against a fake OS.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Os from "./os.ts"
import * as Protocol from "./protocol.ts"
import type { ChildExit, RestartFailure, ToChild, ToParent } from "./protocol.ts"
import type * as Sys from "./sys.ts"

/**
 * A child, running. Whoever started it either `release`s it (a successor that replaced this process) or `kill`s it,
 * or lets it end by itself (a worker told to terminate): nothing else ends it.
 */
export interface Child {
  readonly pid: number
  /** Completes once it has said it is ready; fails with how it ended if it exits first. Kills nothing. */
  readonly ready: Effect.Effect<void, ChildExit>
  /** Completes once it has exited, with how. */
  readonly exited: Effect.Effect<ChildExit>
  /** Whether it runs now (not exited, nor a zombie whose exit this process has yet to hear of). */
  readonly alive: () => boolean
  /** Kills it (SIGKILL) if it still runs, and waits until it is reaped. */
  readonly kill: Effect.Effect<void>
  /** Asks a successor to terminate gracefully (SIGTERM): a termination during its probation ends both. */
  readonly terminate: Effect.Effect<void>
  /** Leaves it running: this process may exit before it, and the channel's close tells it when. */
  readonly release: Effect.Effect<void>
  readonly tell: (message: ToChild) => Effect.Effect<void>
  /** Sends a worker a listening fd over its second socket, then tells it that its ask `ask` is answered. */
  readonly sendListener: (ask: number, fd: number) => Effect.Effect<void, Sys.SysError>
  /** Lends a worker a socket of a slot with no worker that accepts: the fd over its second socket, then the line. */
  readonly lend: (fd: number) => Effect.Effect<void, Sys.SysError>
  /**
   * Passes a restart on to a successor that serves now: its pid once the restart that covers it is done, or why it
   * failed; `undefined` if the successor goes first.
   */
  readonly restart: (kind: "upgrade" | "roll") => Effect.Effect<number, RestartFailure | undefined>
}

/** What a child is started with. */
export interface Options {
  readonly passed: ReadonlyArray<Os.Passed>
  /** The ticket key, encoded (tickets.ts), sent first. */
  readonly ticketKey: string
  /** Variables for the child's environment, beside this process's own (`undefined` removes one). */
  readonly env: Readonly<Record<string, string | undefined>>
  /** A worker's slot; a successor has none. */
  readonly slot?: number | undefined
}

/**
 * Starts a child, sends it the ticket key, and reads what it says until its channel closes, in a fiber of the
 * current scope: its `ready`, and every other message through `onMessage` (a worker's asks).
 */
export const start = (
  os: Os.Os,
  options: Options,
  onMessage: (message: ToParent) => Effect.Effect<void> = () => Effect.void
): Effect.Effect<Child, Os.SpawnFailure, Scope.Scope> =>
  Effect.gen(function* () {
    const worker = options.slot !== undefined
    const env = {
      ...options.env,
      [Protocol.TICKET_KEYS_VARIABLE]: "channel",
      ...(worker ? { [Protocol.WORKER_VARIABLE]: String(options.slot) } : {})
    }
    const child = yield* os.spawn(options.passed, env, { worker })
    const tell = (message: ToChild) => child.channel.send(Protocol.encodeToChild(message))
    yield* tell({ _tag: "TicketKeys", key: options.ticketKey })
    const said = yield* Deferred.make<void>()
    const restarts = new Map<number, Deferred.Deferred<number, RestartFailure | undefined>>()
    const read = (line: string): Effect.Effect<void> => {
      const message = Protocol.decodeToParent(line)
      if (message === undefined) return Protocol.unknownLine(line)
      switch (message._tag) {
        case "Ready":
          return Deferred.succeed(said, undefined)
        case "Restarted":
        case "RestartFailed":
          return answered(restarts, message)
        default:
          return onMessage(message)
      }
    }
    // Until the channel closes: the child has exited, and no answer is coming.
    const link = { asked: 0, gone: false }
    yield* Effect.forkScoped(
      Effect.forever(Effect.flatMap(child.channel.receive, read)).pipe(
        Effect.catch(() =>
          Effect.andThen(
            Effect.sync(() => void (link.gone = true)),
            Effect.forEach(restarts.values(), (answer) => Deferred.fail(answer, undefined))
          )
        )
      )
    )
    const { pid, exited, alive, kill, terminate, release } = child
    const early = Effect.flatMap(exited, (exit) => Effect.fail(exit))
    return {
      pid,
      ready: Effect.raceFirst(Deferred.await(said), early),
      exited,
      alive,
      kill,
      terminate,
      release,
      tell,
      sendListener: (ask, fd) => Effect.andThen(child.sendFd(fd), tell({ _tag: "Listened", ask })),
      lend: (fd) => Effect.andThen(child.sendFd(fd), tell({ _tag: "Lend", loan: fd })),
      restart: (kind) =>
        Effect.gen(function* () {
          if (link.gone) return yield* Effect.fail(undefined)
          const ask = link.asked++
          const answer = yield* Deferred.make<number, RestartFailure | undefined>()
          restarts.set(ask, answer)
          yield* tell({ _tag: "Restart", ask, kind })
          return yield* Deferred.await(answer)
        })
    }
  })

// A successor's answer to a restart passed on to it.
const answered = (
  restarts: Map<number, Deferred.Deferred<number, RestartFailure | undefined>>,
  message: Extract<ToParent, { readonly _tag: "Restarted" | "RestartFailed" }>
) => {
  const answer = restarts.get(message.ask)
  if (answer === undefined) return Effect.void
  restarts.delete(message.ask)
  return message._tag === "Restarted" ? Deferred.succeed(answer, message.pid) : Deferred.fail(answer, message.reason)
}
