/**
 * Raw TCP and unix socket servers, for protocols other than HTTP, on
 * listeners from `Listeners`, with the same drain as `Server`.
 *
 * A server provides effect's `SocketServer.SocketServer`: `run(handler)`
 * serves each connection with an Effect handler that gets a `Socket.Socket`,
 * as `NodeSocketServer` does. The module has a name of its own, so that it
 * sits beside `effect/socket/SocketServer` in one file without an alias.
 *
 * Invariants:
 * - It accepts only once `run` has attached the handler.
 * - When `run` is interrupted (its scope closes), the server stops accepting
 *   at once: new connections go to a successor sharing the socket, or are
 *   refused.
 * - Handlers in flight run to completion. They can learn that the drain
 *   began (`Drain.draining`) to finish their exchange and say goodbye: a raw
 *   protocol has no idle state the server could use to close a connection
 *   safely on its own.
 * - A connection is closed when its handler ends.
 * - At `drainTimeout`, the connections left are destroyed and their handlers
 *   interrupted. The drain is logged with its counts, as a warning when
 *   something was forced.
 *
 * The drain's log line, `effect-grace: drain finished`, carries the same
 * annotations as `Server`'s, with handlers counted as `requests`. There is
 * no idle grace: a raw connection is held for as long as its handler runs.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import * as SocketServer from "effect/socket/SocketServer"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Net from "node:net"
import { Draining } from "./Drain.ts"
import * as Drain from "./internal/drain.ts"
import * as Gate from "./internal/gate.ts"
import * as Listeners from "./Listeners.ts"

// -----------------------------------------------------------------------------
// Constructors
// -----------------------------------------------------------------------------

/**
 * Options of a socket server.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The listener's name: an inherited fd of that name is adopted first, and the name travels to a successor. */
  readonly name?: string | undefined
  /** Overrides `Drain.DrainTimeout` for this server. */
  readonly drainTimeout?: Duration.Input | undefined
}

type RunWith = <R, E, _>(
  handler: (socket: Socket.Socket) => Effect.Effect<_, E, R>,
  listening: Deferred.Deferred<void>
) => Effect.Effect<never, SocketServer.SocketServerError, R>

// The servers made here, with a `run` that reports when it accepts (see `serve`).
const runners = new WeakMap<SocketServer.SocketServer["Service"], RunWith>()

const openError = (cause: unknown) =>
  new SocketServer.SocketServerError({ reason: new SocketServer.SocketServerOpenError({ cause }) })

/**
 * Creates a `SocketServer` on a listener from `Listeners` (inherited when one
 * matches `spec`, bound otherwise). It accepts once `run` is called, and
 * drains when `run` is interrupted.
 *
 * **Details**
 *
 * - Each connection runs its handler in a fiber, with the Node socket as
 *   `NodeSocket.NetSocket` and the drain signal as `Draining`. The socket is
 *   paused until the handler takes its reader, so nothing is lost before.
 * - The connection is closed (after its writes are flushed) when its handler
 *   ends, whether or not the handler took the reader.
 * - A drain waits for every handler, and destroys the connections left at
 *   the drain timeout; their handlers are interrupted after it.
 * - A failure to adopt the listener fails `run` with a
 *   `SocketServerError` (`SocketServerOpenError`).
 *
 * **Gotchas**
 *
 * One `run` at a time: a second one while the first runs is a defect.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  spec: Listeners.ListenSpec,
  options: Options = {}
): Effect.Effect<SocketServer.SocketServer["Service"], Listeners.ListenersError, Scope.Scope | Listeners.Listeners> =>
  Effect.gen(function* () {
    const settings = yield* Drain.resolveSettings(options)
    const listeners = yield* Listeners.Listeners
    const listener = yield* listeners.listen(withName(spec, options.name))
    const runWith = makeRunWith(listener, settings)
    const service = SocketServer.SocketServer.of({
      address: listener.address,
      run: (handler) => runWith(handler, Deferred.makeUnsafe<void>())
    })
    runners.set(service, runWith)
    return service
  })

const withName = (spec: Listeners.ListenSpec, name: string | undefined): Listeners.ListenSpec =>
  name === undefined ? spec : typeof spec === "string" ? { address: spec, name } : { ...spec, name }

// `run`, one at a time: it serves until interrupted, and drains then.
const makeRunWith = (listener: Listeners.Listener, settings: Drain.Settings): RunWith => {
  const address = Listeners.formatAddress(listener.address)
  let running = false
  return <R, E, _>(handler: (socket: Socket.Socket) => Effect.Effect<_, E, R>, listening: Deferred.Deferred<void>) =>
    Effect.scoped(
      Effect.gen(function* () {
        if (running) {
          return yield* Effect.die(new Error(`effect-grace: ${address} already runs a handler`))
        }
        running = true
        const scope = yield* Effect.scope
        // Forked first, so that it closes (interrupting what the drain leaves) after the drain below.
        const handlers = Scope.forkUnsafe(scope, "parallel")
        const tracker = new Drain.Tracker()
        yield* Drain.followClosing(tracker)
        const services = Context.add(
          Context.omit(Scope.Scope)(yield* Effect.context<R>()) as Context.Context<R>,
          Draining,
          tracker.signal
        )
        const server = Net.createServer()
        server.on("connection", (conn: Net.Socket) => serveConnection(conn, { tracker, handler, services, handlers }))
        yield* Scope.addFinalizer(scope, drain(listener, tracker, settings, address))
        // A raw connection has no requests to refuse, and nothing to tell to go away.
        const drained = Drain.drainReported(tracker, settings, address, ["refused", "toldToGoAway"])
        const accepting = { stop: Listeners.pauseAccepting(listener), start: Listeners.resumeAccepting(listener) }
        // Connections from another slot's socket of this address, lent to this worker, are this server's too.
        yield* Scope.provide(Gate.registerServer(accepting, tracker, drained, { address, server }), scope)
        // The handler is attached: accept.
        yield* Effect.mapError(Listeners.serve(listener, server), openError)
        yield* Deferred.succeed(listening, undefined)
        return yield* Effect.never
      })
    )
}

// What every connection of one `run` shares.
interface Serving<R, E, _> {
  readonly tracker: Drain.Tracker
  readonly handler: (socket: Socket.Socket) => Effect.Effect<_, E, R>
  readonly services: Context.Context<R>
  readonly handlers: Scope.Scope
}

// Runs the handler for one connection in a fiber of `handlers`, and closes the connection when it ends.
const serveConnection = <R, E, _>(conn: Net.Socket, { handler, handlers, services, tracker }: Serving<R, E, _>) => {
  conn.pause()
  const connection = tracker.track(conn, "raw")
  tracker.begin(connection)
  let error: Error | undefined
  conn.on("error", (cause) => {
    error = cause
  })
  const closeSoon = Effect.sync(() => {
    if (!conn.destroyed) conn.destroySoon()
  })
  NodeSocket.fromDuplex(
    Effect.acquireRelease(
      open(conn, () => error),
      () => closeSoon
    )
  ).pipe(
    Effect.flatMap(handler),
    Effect.ignoreCause({ log: "Unhandled", message: "Unhandled error in SocketServer" }),
    Effect.ensuring(
      Effect.andThen(
        closeSoon,
        Effect.sync(() => tracker.end(connection))
      )
    ),
    Effect.runForkWith(Context.add(services, NodeSocket.NetSocket, conn) as Context.Context<R>),
    Fiber.runIn(handlers)
  )
}

// The connection, for the handler's socket: unless it failed or closed before the handler took it.
const open = (conn: Net.Socket, error: () => Error | undefined) =>
  Effect.suspend((): Effect.Effect<Net.Socket, Socket.SocketError> => {
    const cause = error()
    if (cause !== undefined) {
      return Effect.fail(new Socket.SocketError({ reason: new Socket.SocketOpenError({ kind: "Unknown", cause }) }))
    }
    if (conn.closed) {
      return Effect.fail(new Socket.SocketError({ reason: new Socket.SocketCloseError({ code: 1000 }) }))
    }
    return Effect.succeed(conn)
  })

const drain = (listener: Listeners.Listener, tracker: Drain.Tracker, settings: Drain.Settings, address: string) =>
  Effect.gen(function* () {
    // The listening handle only; the fd lives on in a successor that shares it.
    yield* Listeners.stopAccepting(listener)
    // A raw connection has no requests to refuse, and nothing to tell to go away.
    yield* Drain.drainReported(tracker, settings, address, ["refused", "toldToGoAway"])
  })

// -----------------------------------------------------------------------------
// Layers
// -----------------------------------------------------------------------------

/**
 * A `SocketServer` on a listener. Requires `Listeners`.
 *
 * **Details**
 *
 * `spec` is a `Listeners.ListenSpec`: `":7000"`, `"127.0.0.1:0"`,
 * `"/run/app.sock"`, or `{ name, address }`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  spec: Listeners.ListenSpec,
  options?: Options
): Layer.Layer<SocketServer.SocketServer, Listeners.ListenersError, Listeners.Listeners> =>
  Layer.effect(SocketServer.SocketServer)(make(spec, options))

/**
 * Runs `handler` for every connection of the current `SocketServer`, for as
 * long as the layer lives: closing the layer's scope drains the server.
 *
 * **When to use**
 *
 * As `HttpRouter.serve` is for an HTTP app: the layer is built once the
 * server accepts, so a process is ready exactly when its servers are.
 *
 * **Details**
 *
 * `NodeSocket.NetSocket` and `Draining` are provided to the handler. On a
 * `SocketServer` not made here, the layer is built once `run` has started.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import type { Socket } from "effect/socket"
 * import { Drain, Listeners, TcpServer } from "effect-grace"
 *
 * const echo = (socket: Socket.Socket) =>
 *   Effect.scoped(
 *     Effect.gen(function* () {
 *       const reader = yield* socket.reader
 *       const writer = yield* socket.writer
 *       const relay = Effect.forever(Effect.flatMap(reader.pull, (chunks) => writer.writeAll(chunks)))
 *       yield* Effect.raceFirst(Effect.ignore(relay), Effect.andThen(Drain.draining, writer.write("bye\n")))
 *     })
 *   )
 *
 * const Echo = TcpServer.serve(echo).pipe(
 *   Layer.provide(TcpServer.layer(":7007")),
 *   Layer.provide(Listeners.layer)
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const serve = <R, E, _>(
  handler: (socket: Socket.Socket) => Effect.Effect<_, E, R>
): Layer.Layer<
  never,
  SocketServer.SocketServerError,
  SocketServer.SocketServer | Exclude<R, Scope.Scope | NodeSocket.NetSocket>
> =>
  Layer.effectDiscard(
    Effect.gen(function* () {
      const server = yield* SocketServer.SocketServer
      const runWith = runners.get(server)
      const listening = Deferred.makeUnsafe<void>()
      const running = runWith !== undefined ? runWith(handler, listening) : server.run(handler)
      // Interrupted when the layer's scope closes: that is the drain.
      const fiber = yield* Effect.forkScoped(running)
      if (runWith === undefined) return
      yield* Effect.raceFirst(Deferred.await(listening), Fiber.join(fiber))
    })
    // `NetSocket` is provided to every handler, as `NodeSocketServer` does.
  ) as never
