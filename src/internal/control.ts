/**
 * The control socket: a unix stream socket on which the serving process (the
 * single process, or the primary) takes `reload`, `status` and `stop`, one
 * request line each, and answers with one JSON line once it is done (the
 * README's "The control socket" is the protocol; the `effect-grace` command,
 * cli.ts, speaks it).
 *
 * - It is one more listener (`effect-grace-control`), handed to each
 *   successor with the others, so a restart never closes it, and a client
 *   that connected before the hand-off keeps its connection and its answer.
 *   While a successor is on probation, only the successor accepts on it (it
 *   pauses with the servers, and accepts again on a hand-back); once this
 *   process hands off or stops, it accepts no more.
 * - A path is made mode 0600, whatever the umask. Each connection's peer is
 *   checked (`SO_PEERCRED`): the service's own user, or root; a refused peer
 *   gets one line and is closed. An abstract name (`@name`) has no
 *   permissions: without the peer check (no native calls) it is refused at
 *   start.
 * - A request is one line of at most 1 KiB, sent within 10 seconds of the
 *   connection; anything else gets one error line and is closed. Nothing a
 *   client sends reaches the supervisor but the three commands: a `reload`
 *   is the restart a signal asks for (queued behind one under way, answered
 *   when the one that covers it ends), a `stop` the termination `SIGTERM`
 *   asks for.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as PubSub from "effect/PubSub"
import * as Ref from "effect/Ref"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import { createRequire } from "node:module"
import * as Net from "node:net"
import { formatAddress } from "./address.ts"
import type { Held, Listener } from "./address.ts"
import { LaunchError } from "./errors.ts"
import type { RestartError } from "./errors.ts"
import * as Interpreter from "./interpreter.ts"
import type * as Machine from "./machine.ts"
import type { ListenFailure } from "./protocol.ts"
import * as Requests from "./requests.ts"
import type { LastRestart, Line, Supervision } from "./supervision.ts"
import * as Sys from "./sys.ts"

/** The control socket's name among the listeners (`LISTEN_FDNAMES`), as a successor claims it. */
export const CONTROL_NAME = "effect-grace-control"

/** The longest request line taken. */
export const MAX_REQUEST = 1024
const REQUEST_TIMEOUT = 10_000
const MAX_CONNECTIONS = 1024
// How long a last line may take to be written.
const FLUSH_TIMEOUT = Duration.seconds(5)

// -----------------------------------------------------------------------------
// Requests
// -----------------------------------------------------------------------------

/** A request line, read. */
export type Request =
  | { readonly command: "reload"; readonly upgrade: boolean; readonly progress: boolean }
  | { readonly command: "status" }
  | { readonly command: "stop"; readonly progress: boolean }

const FLAGS: Record<Request["command"], ReadonlyArray<string>> = {
  reload: ["--upgrade", "--progress"],
  status: [],
  stop: ["--progress"]
}

/** Reads a request line: the request, or why it is not one (one line for the client). */
export const parse = (line: string): Result.Result<Request, string> => {
  const [command, ...flags] = line
    .trim()
    .split(/\s+/)
    .filter((word) => word.length > 0)
  if (command === undefined) return Result.fail("empty request; use reload, status or stop")
  if (!(command in FLAGS)) {
    return Result.fail(`unknown command ${JSON.stringify(command.slice(0, 64))}; use reload, status or stop`)
  }
  const known = FLAGS[command as Request["command"]]
  const unknown = flags.find((flag) => !known.includes(flag))
  if (unknown !== undefined) {
    const accepted = known.length === 0 ? "it takes none" : `use ${known.join(" or ")}`
    return Result.fail(`unknown flag ${JSON.stringify(unknown.slice(0, 64))} for ${command}; ${accepted}`)
  }
  const progress = flags.includes("--progress")
  switch (command as Request["command"]) {
    case "reload":
      return Result.succeed({ command: "reload", upgrade: flags.includes("--upgrade"), progress })
    case "status":
      return Result.succeed({ command: "status" })
    case "stop":
      return Result.succeed({ command: "stop", progress })
  }
}

// -----------------------------------------------------------------------------
// A connection
// -----------------------------------------------------------------------------

type Answer = Readonly<Record<string, unknown>>

const error = (tag: string, message: string): Answer => ({ ok: false, error: { _tag: tag, message } })

const write = (socket: Net.Socket, answer: Answer): Effect.Effect<void> =>
  Effect.sync(() => void (socket.writable && socket.write(`${JSON.stringify(answer)}\n`)))

// The last line, then the end; a client gone meanwhile ends it too.
const end = (socket: Net.Socket, answer: Answer): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    const done = () => resume(Effect.void)
    socket.once("close", done)
    if (socket.writable) socket.end(`${JSON.stringify(answer)}\n`)
    else socket.destroy()
    return Effect.sync(() => void socket.off("close", done))
  }).pipe(Effect.timeoutOption(FLUSH_TIMEOUT), Effect.ensuring(Effect.sync(() => void socket.destroy())))

type Read = { readonly _tag: "Line"; readonly line: string } | { readonly _tag: "Bad"; readonly message: string }

// The request line: up to the first newline (or the end, from a client that half-closes without one), in bytes.
const readLine = (socket: Net.Socket): Effect.Effect<Read | undefined> =>
  Effect.callback<Read | undefined>((resume) => {
    let buffered = Buffer.alloc(0)
    const finish = (read: Read | undefined) => {
      cleanup()
      socket.pause()
      resume(Effect.succeed(read))
    }
    const line = (length: number): Read => ({ _tag: "Line", line: buffered.subarray(0, length).toString("utf8") })
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk])
      const newline = buffered.indexOf(0x0a)
      if (newline >= 0 && newline <= MAX_REQUEST) return finish(line(newline))
      if (buffered.length > MAX_REQUEST) {
        finish({ _tag: "Bad", message: `a request is one line of at most ${MAX_REQUEST} bytes` })
      }
    }
    const onEnd = () => finish(buffered.toString("utf8").trim().length > 0 ? line(buffered.length) : undefined)
    const onClose = () => finish(undefined)
    const onTimeout = () => finish({ _tag: "Bad", message: `no request within ${REQUEST_TIMEOUT / 1000} seconds` })
    const cleanup = () => {
      socket.off("data", onData).off("end", onEnd).off("close", onClose).off("timeout", onTimeout)
      socket.setTimeout(0)
    }
    socket.on("data", onData).on("end", onEnd).on("close", onClose).on("timeout", onTimeout)
    socket.setTimeout(REQUEST_TIMEOUT)
    return Effect.sync(cleanup)
  })

// The fd of an accepted connection, for the peer check: Node keeps it on the socket's handle (a private field; the
// control test names it, and a peer that cannot be checked is refused).
const fdOf = (socket: Net.Socket): number | undefined => {
  const fd = (socket as unknown as { readonly _handle?: { readonly fd?: unknown } })._handle?.fd
  return typeof fd === "number" && fd >= 0 ? fd : undefined
}

/** Why a peer may not control this service, if it may not: the service's own user, or root, may. */
export const refusal = (peer: Result.Result<Sys.PeerCredentials, unknown>, uid: number): string | undefined => {
  if (Result.isFailure(peer))
    return "the peer could not be checked; connect through the socket's path as the service's user"
  const { uid: theirs, pid } = peer.success
  if (theirs === uid || theirs === 0) return undefined
  return `uid ${theirs} (pid ${pid}) may not control this service, which runs as uid ${uid}; use its user or root`
}

// -----------------------------------------------------------------------------
// The commands
// -----------------------------------------------------------------------------

const VERSION = (() => {
  try {
    return (createRequire(import.meta.url)("../../package.json") as { readonly version?: string }).version
  } catch {
    return undefined
  }
})()

const iso = (millis: number): string => new Date(millis).toISOString()

const underWay = (phase: Machine.Phase<unknown>): Answer | null => {
  switch (phase._tag) {
    case "Restarting":
      return { kind: "upgrade", step: "starting", since: iso(phase.since) }
    case "Rolling":
      return { kind: "roll", step: "rolling", since: iso(phase.since) }
    case "Probation":
      return { kind: "upgrade", step: "probation", since: iso(phase.since), successor: phase.pid }
    default:
      return null
  }
}

// A listener given out says whether it was inherited; one a primary holds unclaimed was.
const inheritedOf = (listener: Held | Listener): boolean => !("inherited" in listener) || listener.inherited

// The listeners, each address once: a primary holds a socket per worker of each.
const listenersOf = (supervision: Supervision) =>
  Effect.gen(function* () {
    const { listeners, role } = supervision
    const all = [...(yield* listeners.active), ...(role.holdsUnclaimed ? yield* listeners.unclaimed : [])]
    const seen = new Map<string, { address: string; name: string; inherited: boolean; sockets: number }>()
    for (const listener of all) {
      const address = formatAddress(listener.address)
      const key = `${listener.name}\u0000${address}`
      const entry = seen.get(key)
      if (entry !== undefined) entry.sockets++
      else seen.set(key, { address, name: listener.name, inherited: inheritedOf(listener), sockets: 1 })
    }
    return [...seen.values()]
  })

const settingsOf = (supervision: Supervision): Answer => {
  const { settings } = supervision
  return {
    readyTimeout: Duration.format(settings.readyTimeout),
    probation: Duration.format(settings.probation),
    shutdownDelay: Duration.format(settings.shutdownDelay),
    workers: settings.workers ?? null,
    surge: settings.surge,
    pidFile: settings.pidFile ?? null,
    control: settings.control ?? null,
    maxMemory: settings.maxMemory ?? null,
    maxMemoryGrace: Duration.format(settings.maxMemoryGrace)
  }
}

// The last restart asked of this process; else, in a successor, the upgrade that started it.
const lastReload = (supervision: Supervision, last: LastRestart | undefined): Answer | null => {
  if (last !== undefined) return { ...last, at: iso(last.at), pid: last.pid ?? null }
  const predecessor = supervision.role.predecessor
  if (predecessor === undefined) return null
  const { os, startedAt } = supervision
  return {
    at: iso(startedAt),
    kind: "upgrade",
    by: "predecessor",
    outcome: "ready",
    millis: null,
    pid: os.pid,
    from: predecessor.pid
  }
}

/** What `status` answers: this process, its listeners and workers, its restarts and its settings. */
export const status = (supervision: Supervision): Effect.Effect<Answer> =>
  Effect.gen(function* () {
    const { role, os } = supervision
    const state = yield* supervision.loop.state
    const now = yield* Clock.currentTimeMillis
    const last = yield* Ref.get(supervision.lastRestart)
    const blocked = supervision.handOffBlocked
    const workers = yield* role.workers(supervision)
    return {
      role: role.kind,
      pid: os.pid,
      phase: state.phase._tag,
      startedAt: iso(supervision.startedAt),
      uptimeMillis: now - supervision.startedAt,
      version: VERSION ?? null,
      listeners: yield* listenersOf(supervision),
      workers:
        role.kind === "primary"
          ? workers.map((w) => ({
              ...w,
              slot: w.slot ?? null,
              startedAt: iso(w.startedAt),
              rssBytes: w.rssBytes ?? null
            }))
          : null,
      restarts: {
        available: role.rules.canRoll || role.rules.canHandOff,
        upgrade: role.rules.canHandOff,
        roll: role.rules.canRoll,
        ...(blocked === undefined ? {} : { reason: blocked.detail })
      },
      underWay: underWay(state.phase),
      lastReload: lastReload(supervision, last),
      pending: state.pending === undefined ? null : { kind: state.pending.kind, waiting: state.pending.replies.length },
      settings: settingsOf(supervision)
    }
  })

const progressLine = (line: Line): Answer => ({
  progress: line.message.replace(/^effect-grace: /, ""),
  at: iso(line.at),
  ...line.annotations
})

// Runs `effect` while the lines this process logs are written to the client as progress, all of them before the
// answer.
const following = <A, E>(
  supervision: Supervision,
  socket: Net.Socket,
  progress: boolean,
  effect: Effect.Effect<A, E>
): Effect.Effect<Exit.Exit<A, E>> =>
  progress
    ? Effect.scoped(
        Effect.gen(function* () {
          const lines = yield* PubSub.subscribe(supervision.lines)
          const fiber = yield* Effect.forkScoped(effect)
          const flush = Effect.flatMap(PubSub.takeUpTo(lines, Number.POSITIVE_INFINITY), (taken) =>
            Effect.forEach(taken, (line) => write(socket, progressLine(line)), { discard: true })
          )
          while (true) {
            const next = yield* Effect.raceFirst(
              Effect.map(PubSub.take(lines), (line) => ({ _tag: "Line" as const, line })),
              Effect.map(Fiber.await(fiber), (exit) => ({ _tag: "Done" as const, exit }))
            )
            if (next._tag === "Done") {
              yield* flush
              return next.exit
            }
            yield* write(socket, progressLine(next.line))
          }
        })
      )
    : Effect.exit(effect)

const reload = (
  supervision: Supervision,
  socket: Net.Socket,
  request: Extract<Request, { readonly command: "reload" }>
) =>
  Effect.gen(function* () {
    const kind = supervision.role.reload!(request.upgrade)
    const asked = yield* Clock.currentTimeMillis
    const exit = yield* following(
      supervision,
      socket,
      request.progress,
      Requests.requestRestart(supervision, "control", kind)
    )
    const millis = (yield* Clock.currentTimeMillis) - asked
    if (Exit.isSuccess(exit)) {
      const workers = kind === "roll" ? yield* supervision.role.workers(supervision) : []
      const serving = workers.filter((w) => w.phase === "serving").map(({ slot, pid }) => ({ slot, pid }))
      return {
        ok: true,
        command: "reload",
        kind,
        pid: exit.value,
        millis,
        ...(kind === "roll" ? { workers: serving } : {})
      }
    }
    const failure = Exit.findErrorOption(exit)
    const reason = failure._tag === "Some" ? (failure.value as RestartError).reason : undefined
    return {
      ok: false,
      command: "reload",
      kind,
      millis,
      error:
        reason === undefined
          ? { _tag: "Interrupted", message: "the reload was interrupted" }
          : { _tag: reason._tag, message: reason.message }
    }
  })

const stop = (supervision: Supervision, socket: Net.Socket, progress: boolean) =>
  Effect.gen(function* () {
    const asked = yield* Clock.currentTimeMillis
    yield* following(
      supervision,
      socket,
      progress,
      Effect.andThen(Requests.terminate(supervision, "call"), Interpreter.stopped(supervision))
    )
    return { ok: true, command: "stop", pid: supervision.os.pid, millis: (yield* Clock.currentTimeMillis) - asked }
  })

const answer = (supervision: Supervision, socket: Net.Socket, request: Request): Effect.Effect<Answer> => {
  switch (request.command) {
    case "reload":
      return reload(supervision, socket, request)
    case "status":
      return Effect.map(status(supervision), (found) => ({ ok: true, command: "status", status: found }))
    case "stop":
      return stop(supervision, socket, request.progress)
  }
}

// One connection: the peer checked, one request read, answered, closed. Whatever the client sends or does, it ends
// here (an error line at worst).
const serveConnection = (
  supervision: Supervision,
  socket: Net.Socket,
  uid: number | undefined,
  asked: (socket: Net.Socket) => void
): Effect.Effect<void> =>
  Effect.gen(function* () {
    // The peer check, where the native calls are (`uid`, the service's user).
    if (uid !== undefined) {
      const fd = fdOf(socket)
      const refused = refusal(fd === undefined ? Result.fail("no fd") : Sys.peerCredentials(fd), uid)
      if (refused !== undefined) return yield* end(socket, error("PeerRefused", refused))
    }
    const read = yield* readLine(socket)
    if (read === undefined) return yield* Effect.sync(() => void socket.destroy())
    if (read._tag === "Bad") return yield* end(socket, error("BadRequest", read.message))
    const request = parse(read.line)
    if (Result.isFailure(request)) return yield* end(socket, error("BadRequest", request.failure))
    asked(socket)
    yield* end(socket, yield* answer(supervision, socket, request.success))
  }).pipe(
    // A defect here is the library's: said once, and the client told; the service serves on.
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.sync(() => void socket.destroy())
        : Effect.andThen(
            Effect.logWarning("effect-grace: a control request failed", cause).pipe(
              Effect.annotateLogs(supervision.role.annotations)
            ),
            end(socket, error("Internal", "the request failed inside the service (its log says why)"))
          )
    )
  )

// -----------------------------------------------------------------------------
// The socket
// -----------------------------------------------------------------------------

const describe = (failure: ListenFailure): string => {
  switch (failure._tag) {
    case "BindFailed":
      return `${failure.syscall} ${failure.address}: ${failure.code}`
    case "InvalidAddress":
      return `${failure.address}: ${failure.detail}`
    case "ServeFailed":
      return `${failure.address}: ${String(failure.cause)}`
    case "InvalidName":
    case "NameNotFound":
      return failure._tag
  }
}

/** The control socket, open. */
export interface Control {
  /** Waits, bounded, for the answers under way (a reload passed on, a stop), and closes the connections idle. */
  readonly settle: Effect.Effect<void>
}

/**
 * Opens the control socket at `address` for this supervision, for as long as its scope lives. Its owner runs
 * `settle` once the supervision is over, before the scope closes what the answers need (the successor's channel).
 */
export const make = (supervision: Supervision, address: string): Effect.Effect<Control, LaunchError, Scope.Scope> =>
  Effect.gen(function* () {
    const native = yield* supervision.os.native
    if (address.startsWith("@") && !native.available) {
      const detail = `${address} is an abstract name, which has no permissions, and the peer check that would guard it needs the native calls (${native.reason}); use a path`
      return yield* new LaunchError({ problem: "ControlUnavailable", detail })
    }
    const listener = yield* supervision.listeners
      .listen({ address, name: CONTROL_NAME, backlog: 511, mode: 0o600 })
      .pipe(Effect.mapError((e) => new LaunchError({ problem: "ControlUnavailable", detail: describe(e.reason) })))
    const fibers = yield* FiberSet.make<void, never>()
    const run = yield* FiberSet.runtime(fibers)<never>()
    const uid = process.getuid?.() ?? -1
    // Connections that have not asked yet: closed at the end, where answers under way are waited for.
    const waiting = new Set<Net.Socket>()
    const server = Net.createServer({ allowHalfOpen: true, pauseOnConnect: false })
    server.maxConnections = MAX_CONNECTIONS
    server.on("error", () => {})
    server.on("connection", (socket: Net.Socket) => {
      socket.on("error", () => {})
      waiting.add(socket)
      socket.once("close", () => waiting.delete(socket))
      run(serveConnection(supervision, socket, native.available ? uid : undefined, (s) => void waiting.delete(s)))
    })
    // At the end (after the drain and the restarts passed on, before anything else closes), the answers under way
    // are written: each has its outcome by then.
    const settle = Effect.andThen(
      Effect.sync(() => {
        for (const socket of waiting) socket.destroy()
      }),
      Effect.ignore(Effect.timeoutOption(FiberSet.awaitEmpty(fibers), FLUSH_TIMEOUT))
    )
    yield* supervision.serving
      .serve(listener, server)
      .pipe(Effect.mapError((cause) => new LaunchError({ problem: "ControlUnavailable", detail: String(cause) })))
    yield* supervision.gate.gate.register({
      pause: supervision.serving.pause(listener),
      resume: Effect.ignore(supervision.serving.resume(listener))
    })
    // Once this process hands off or stops, the control socket is its successor's, or no one's.
    yield* Effect.forkScoped(
      Effect.andThen(
        supervision.loop.when((state) =>
          ["Delaying", "Draining", "Stopped"].includes(state.phase._tag) ? true : undefined
        ),
        supervision.serving.stop(listener)
      )
    )
    return { settle }
  })
