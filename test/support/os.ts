/**
 * A fake operating system for the supervisor, as tableflip's `fakeProcess`:
 * signals the test sends, children whose end of the channel the test holds
 * (so it speaks the successor protocol as a real successor would, or exits
 * first), a parent whose end the test holds too, and a record of what the
 * supervisor did. Under a `TestClock`, a restart takes no time at all.
 */
import type * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import type * as Channel from "../../src/internal/channel.ts"
import type * as Os from "../../src/internal/os.ts"
import type { ChildExit } from "../../src/internal/protocol.ts"

/** A channel in memory, which also says what has arrived and not been taken yet. */
export interface TestChannel extends Channel.Channel {
  readonly waiting: Effect.Effect<ReadonlyArray<string>>
}

/** Two channels connected to each other in memory. */
export const channelPair: Effect.Effect<readonly [TestChannel, TestChannel]> = Effect.gen(function* () {
  const side = Effect.map(Queue.unbounded<string, Cause.Done>(), (lines) => ({
    lines,
    gone: Deferred.makeUnsafe<void>()
  }))
  const a = yield* side
  const b = yield* side
  type Side = typeof a
  const end = (s: Side) => {
    Queue.endUnsafe(s.lines)
    Deferred.doneUnsafe(s.gone, Effect.void)
  }
  const channel = (own: Side, other: Side): TestChannel => ({
    send: (line) => Effect.sync(() => void Queue.offerUnsafe(other.lines, line)),
    receive: Queue.take(own.lines),
    closed: Deferred.await(own.gone),
    close: Effect.sync(() => {
      end(own)
      end(other)
    }),
    unref: Effect.void,
    waiting: Effect.orElseSucceed(Queue.clear(own.lines), () => [])
  })
  return [channel(a, b), channel(b, a)] as const
})

/** A child the supervisor started; the test plays its part. */
export interface FakeChild {
  readonly pid: number
  readonly env: Readonly<Record<string, string>>
  readonly passed: ReadonlyArray<Os.Passed>
  /** The child's end of the channel. */
  readonly channel: Channel.Channel
  /** Says `ready`, as a successor does once it serves. */
  readonly sayReady: Effect.Effect<void>
  /** Exits (or dies of a signal): its end of the channel closes. */
  readonly exit: (exited: Omit<ChildExit, "pid">) => Effect.Effect<void>
  state: "running" | "killed" | "released" | "exited"
  /** Asked to terminate (SIGTERM). */
  terminated: boolean
  /** Started as a primary's worker. */
  readonly worker: boolean
  /** The listening fds sent to it (a worker's). */
  readonly sentFds: Array<number>
}

/** The parent of the supervised process, when it has one; the test plays its part. */
export interface FakeParent {
  readonly channel: TestChannel
  /** The parent exits: its end of the channel closes. */
  readonly exits: Effect.Effect<void>
}

const makeChild = (
  pid: number,
  passed: ReadonlyArray<Os.Passed>,
  given: Readonly<Record<string, string | undefined>>,
  worker: boolean
) =>
  Effect.gen(function* () {
    const env = Object.fromEntries(
      Object.entries(given).filter((entry): entry is [string, string] => entry[1] !== undefined)
    )
    const [own, theirs] = yield* channelPair
    const exited = yield* Deferred.make<ChildExit>()
    const child: FakeChild = {
      pid,
      env,
      passed,
      channel: theirs,
      sayReady: theirs.send("ready"),
      exit: (how) =>
        Effect.andThen(
          Effect.sync(() => void (child.state = child.state === "running" ? "exited" : child.state)),
          Effect.andThen(theirs.close, Deferred.succeed(exited, { pid, ...how }))
        ),
      state: "running",
      terminated: false,
      worker,
      sentFds: []
    }
    const handle: Os.Child = {
      pid,
      channel: own,
      exited: Deferred.await(exited),
      alive: () => child.state === "running" || child.state === "released",
      kill: Effect.suspend(() => {
        if (child.state === "running" || child.state === "released") child.state = "killed"
        return Effect.andThen(own.close, Deferred.succeed(exited, { pid, code: null, signal: "SIGKILL" }))
      }),
      terminate: Effect.sync(() => void (child.terminated = true)),
      release: Effect.sync(() => void (child.state = "released")),
      sendFd: (fd) => Effect.sync(() => void child.sentFds.push(fd))
    }
    return { child, handle }
  })

export const make = (
  options: {
    readonly pid?: number
    readonly parentPid?: number
    /** What the parent set in the environment (the ticket keys variable, for one). */
    readonly parentValues?: Readonly<Record<string, string>>
    readonly spawnGate?: Deferred.Deferred<void>
    /** Handlers of the termination signals that others installed. */
    readonly foreign?: number | undefined
  } = {}
) =>
  Effect.gen(function* () {
    const signals = yield* Queue.unbounded<NodeJS.Signals>()
    /** The signals the supervisor took, as it installed them. */
    const installed: Array<NodeJS.Signals> = []
    const spawns = yield* Queue.unbounded<FakeChild>()
    const children: Array<FakeChild> = []
    const pidFile: Array<string> = []
    const forced: Array<string> = []
    const flushed: Array<string> = []
    /** The resident set size of each process, by pid, as a test sets it: none is unknown (gone). */
    const rss = new Map<number, number>()
    /** Fds the parent (a primary) has sent this process, a worker, in order. */
    const parentFds: Array<number> = []
    const [parentEnd, ownEnd] = yield* channelPair
    let ppid = options.parentPid ?? 1
    const parent: FakeParent | undefined =
      options.parentPid === undefined
        ? undefined
        : {
            channel: parentEnd,
            exits: Effect.andThen(
              Effect.sync(() => void (ppid = 1)),
              parentEnd.close
            )
          }
    const os: Os.Os = {
      pid: options.pid ?? 100,
      signals: (names) =>
        Effect.sync(() => {
          installed.push(...names)
          return Stream.fromQueue(signals)
        }),
      foreignHandlers: () => Effect.succeed(options.foreign ?? 0),
      spawn: (passed, env, spawnOptions) =>
        Effect.gen(function* () {
          if (options.spawnGate !== undefined) yield* Deferred.await(options.spawnGate)
          const { child, handle } = yield* makeChild(200 + children.length, passed, env, spawnOptions?.worker === true)
          children.push(child)
          yield* Queue.offer(spawns, child)
          return handle
        }),
      parent: () =>
        Effect.succeed({
          parent:
            options.parentPid === undefined
              ? undefined
              : {
                  pid: options.parentPid,
                  channel: ownEnd,
                  receiveFd: () =>
                    parentFds.length > 0
                      ? Effect.succeed(parentFds.shift()!)
                      : Effect.fail({ syscall: "recvmsg", code: "EAGAIN", errno: 11 })
                },
          values: options.parentValues ?? {}
        }),
      ppid: () => ppid,
      enableCompileCache: (directory) => (directory === true ? "/tmp/compile-cache" : directory),
      flushCompileCache: () => void flushed.push("flush"),
      native: Effect.succeed({ available: true }),
      writePidFile: (path) => Effect.sync(() => void pidFile.push(`write ${path}`)),
      removePidFile: (path) => Effect.sync(() => void pidFile.push(`remove ${path}`)),
      forceExit: (signal) => Effect.sync(() => void forced.push(signal)),
      reapOrphans: Effect.void,
      rss: (pid) => Effect.sync(() => rss.get(pid))
    }
    return {
      os,
      /** Sends a signal to the supervised process. */
      signal: (signal: NodeJS.Signals) => Queue.offer(signals, signal),
      installed,
      /** The next child started. */
      spawned: Queue.take(spawns),
      children,
      parent,
      pidFile,
      forced,
      flushed,
      parentFds,
      rss
    }
  })
