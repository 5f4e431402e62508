/**
 * The successor protocol: what a process and the successor it starts say to
 * each other over their channel (channel.ts), above the OS seam (os.ts), so
 * that unit tests drive both ends against a fake OS.
 *
 * - The parent starts the successor with the listeners, then writes one line,
 *   `ticket-keys <key>`: the TLS session ticket key, so that clients resume
 *   their sessions with the successor (`EFFECT_GRACE_TICKET_KEYS=channel`
 *   tells the successor to wait for it). Never the environment, argv or a
 *   file: the channel is a socket pair between the two processes alone.
 * - The successor writes `ready` once it serves.
 * - The successor learns that its parent has gone when the channel closes.
 *   Neither signals the other by pid.
 * - A successor that exits first (before `ready`) has failed, with its exit
 *   code or signal.
 */
import * as Effect from "effect/Effect"
import type * as Os from "./os.ts"

/** The variable that tells the successor its parent sends the ticket key on the channel. */
export const TICKET_KEYS_VARIABLE = "EFFECT_GRACE_TICKET_KEYS"

const READY = "ready"
const KEYS_PREFIX = "ticket-keys "

/** The successor exited before it said it was ready. */
export interface EarlyExit {
  readonly _tag: "ExitedBeforeReady"
  readonly pid: number
  readonly code: number | null
  readonly signal: string | null
}

/**
 * A successor, running. Whoever started it either `release`s it once it is
 * ready (it is the new main process) or `kill`s it: nothing else ends it.
 */
export interface Successor {
  readonly pid: number
  /** Completes once it has said it is ready; fails if it exits first. Kills nothing. */
  readonly ready: Effect.Effect<void, EarlyExit>
  /** Completes once it has exited. */
  readonly exited: Effect.Effect<Os.Exited>
  /** Whether it runs now (not exited, nor a zombie whose exit this process has yet to hear of). */
  readonly alive: () => boolean
  readonly kill: Effect.Effect<void>
  /** Asks it to terminate gracefully (SIGTERM). */
  readonly terminate: Effect.Effect<void>
  readonly release: Effect.Effect<void>
}

// Lines until `ready`; the channel closing first means the successor has gone.
const awaitReadyLine = (child: Os.Child): Effect.Effect<boolean> =>
  child.channel.receive.pipe(
    Effect.flatMap((line) => (line === READY ? Effect.succeed(true) : awaitReadyLine(child))),
    Effect.catch(() => Effect.succeed(false))
  )

/** Fails once the child has exited, with how: raced against its `ready`, an exit first is a failure. */
export const exitedEarly = (child: Os.Child): Effect.Effect<never, EarlyExit> =>
  Effect.flatMap(child.exited, ({ code, signal }) =>
    Effect.fail<EarlyExit>({ _tag: "ExitedBeforeReady", pid: child.pid, code, signal })
  )

const awaitReady = (child: Os.Child): Effect.Effect<void, EarlyExit> => {
  const early = exitedEarly(child)
  return Effect.raceFirst(
    Effect.flatMap(awaitReadyLine(child), (ready) => (ready ? Effect.void : early)),
    early
  )
}

/** Starts a successor with the listeners, and sends it the ticket key. */
export const start = (
  os: Os.Os,
  options: {
    readonly passed: ReadonlyArray<Os.Passed>
    readonly ticketKey: string
    /** Variables for the successor's environment, beside this process's own. */
    readonly env: Readonly<Record<string, string>>
  }
): Effect.Effect<Successor, Os.SpawnFailure> =>
  Effect.gen(function* () {
    const child = yield* os.spawn(options.passed, { ...options.env, [TICKET_KEYS_VARIABLE]: "channel" })
    yield* child.channel.send(`${KEYS_PREFIX}${options.ticketKey}`)
    const ready = yield* Effect.cached(awaitReady(child))
    const { pid, exited, alive, kill, terminate, release } = child
    return { pid, ready, exited, alive, kill, terminate, release }
  })

/** A successor's link to the parent that started it. */
export interface ParentLink {
  readonly pid: number
  /** The parent's ticket key, once it has arrived; none if it sends none, or has gone first. */
  readonly ticketKey: Effect.Effect<string | undefined>
  readonly signalReady: Effect.Effect<void>
  /** Completes once the parent has exited (the channel closed). */
  readonly exited: Effect.Effect<void>
}

/** The successor's end: `values` are the variables its parent set (`Os.parent`). */
export const connect = (parent: Os.Parent, values: Readonly<Record<string, string>>): Effect.Effect<ParentLink> =>
  Effect.gen(function* () {
    const sendsKeys = values[TICKET_KEYS_VARIABLE] === "channel"
    const firstLine = parent.channel.receive.pipe(
      Effect.map((line) => (line.startsWith(KEYS_PREFIX) ? line.slice(KEYS_PREFIX.length) : undefined)),
      Effect.catch(() => Effect.succeed(undefined))
    )
    return {
      pid: parent.pid,
      ticketKey: sendsKeys ? yield* Effect.cached(firstLine) : Effect.succeed(undefined),
      signalReady: parent.channel.send(READY),
      exited: parent.channel.closed
    }
  })
