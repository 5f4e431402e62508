/**
 * HTTP, HTTPS and HTTP/2 (over TLS) servers for `effect/http` apps, on
 * listeners from `Listeners`, whose shutdown is a drain: when the serve scope
 * closes, nothing in flight is lost. TLS servers share a session ticket key
 * (`TicketKeyring`) that rotates and that restarts hand on.
 *
 * A server provides the same services as `NodeHttpServer.layer` and serves
 * requests with the same handlers (`NodeHttpServer.makeHandler` and
 * `makeUpgradeHandler`); only the lifecycle differs.
 *
 * Invariants:
 * - It accepts only once the app's handlers are attached, so a successor
 *   never accepts a connection it cannot answer yet.
 * - The drain stops accepting at once (the listening handle only: idle
 *   connections are not closed under a client that is sending).
 * - Requests in flight run to completion; every response from then on says
 *   `Connection: close`, and its connection closes after it. A request read
 *   on a connection that the drain is closing is not run: it is either
 *   answered or never run.
 * - A keep-alive connection with no request in flight is closed only once it
 *   has been quiet for `idleGrace`: a client that is sending its next request
 *   is answered, never reset, and one that went quiet cannot hold the drain.
 * - WebSockets get a 1001 close and HTTP/2 sessions a GOAWAY; they are held
 *   until they close.
 * - At `drainTimeout`, what is left is destroyed. The drain is logged with
 *   its counts, as a warning when something was forced.
 *
 * The drain's knobs (`Drain.DrainTimeout`, `Drain.IdleGrace`), the signal a
 * handler sees (`Drain.draining`) and its log line are described in `Drain`.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import type * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { LazyArg } from "effect/Function"
import type * as Etag from "effect/http/Etag"
import type * as HttpPlatform from "effect/http/HttpPlatform"
import * as HttpServer from "effect/http/HttpServer"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type * as NodeServices from "@effect/platform-node/NodeServices"
import * as NodeWS from "@effect/platform-node/NodeWS"
import type * as Http from "node:http"
import type * as Http2 from "node:http2"
import type * as Https from "node:https"
import type * as Net from "node:net"
import type { Duplex } from "node:stream"
import type * as Tls from "node:tls"
import * as Drain from "./internal/drain.ts"
import * as Tickets from "./internal/tickets.ts"
import * as Gate from "./internal/gate.ts"
import * as Listeners from "./Listeners.ts"

// Node's HTTP modules, taken when a server is made: an ES import of `node:http` builds its module namespace, which
// loads Node's bundled undici too (bench:startup: 17.9 ms of a successor's start with the compile cache, 60-90 ms
// without; `process.getBuiltinModule` takes 5 ms). Types come from type-only imports.
const builtin: {
  (id: "node:http"): typeof Http
  (id: "node:https"): typeof Https
  (id: "node:http2"): typeof Http2
} = (id: string) => process.getBuiltinModule(id) as never

// -----------------------------------------------------------------------------
// TLS sessions
// -----------------------------------------------------------------------------

/**
 * A TLS session ticket key (48 bytes) and when it was made.
 *
 * @since 0.1.0
 * @category models
 */
export type TicketKey = Tickets.TicketKey

/**
 * The current session ticket key of the HTTPS servers of a context, and
 * the servers that hold it (`register`).
 *
 * @since 0.1.0
 * @category models
 */
export type TicketKeyring = Tickets.Keyring

/**
 * The keyring of every TLS server (HTTPS, HTTP/2 over TLS) not given
 * `ticketKeys` of its own: they share one session ticket key, so a TLS 1.3
 * client (or a TLS 1.2 one with tickets) resumes its session with any of
 * them, and, under the `Supervisor`, with the successor after a restart,
 * which receives the key and its age over the private readiness channel.
 *
 * **Details**
 *
 * - The key is replaced once it is 24 hours old (`GRACE_TICKET_ROTATION`
 *   under the `Supervisor`, or `layerTicketKeyring`), its age counted across
 *   restarts: a key that leaks opens the sessions of its own period only.
 * - By default the keyring is made at its first use, once per process; it
 *   rotates on a timer that each server runs in its own scope.
 * - `https.ticketKeys` given to a server is used as given, never rotated nor
 *   handed on by the supervisor: give the same keys to every generation
 *   yourself.
 * - A TLS server from `createServer` registers with the keyring too; to give
 *   it a keyring of its own, provide this reference to its layer.
 *
 * **Gotchas**
 *
 * - Node holds one key per server, with no older key kept to decrypt
 *   tickets: after a rotation, each client with an older ticket makes one
 *   full handshake (and gets a new ticket), as a new client does.
 *
 * @since 0.1.0
 * @category references
 */
export const TicketKeyring: Context.Reference<TicketKeyring> = Tickets.TicketKeyring

/**
 * Provides `TicketKeyring`: a keyring with a fresh key, rotated every
 * `rotateEvery`, else every `GRACE_TICKET_ROTATION` (a duration in Effect's
 * syntax, or `off` never to rotate), else every 24 hours. The `Supervisor`
 * provides its own, which restarts hand on; use this one without it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerTicketKeyring = (
  options: { readonly rotateEvery?: Duration.Input | undefined } = {}
): Layer.Layer<never, Config.ConfigError> =>
  Layer.effect(TicketKeyring)(
    Effect.flatMap(
      options.rotateEvery !== undefined
        ? Effect.succeed(Duration.fromInputUnsafe(options.rotateEvery))
        : Tickets.ticketRotation,
      (rotateEvery) => Tickets.makeKeyring({ rotateEvery })
    )
  )

// -----------------------------------------------------------------------------
// Errors
// -----------------------------------------------------------------------------

/**
 * The options contradict each other.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidOptions extends Data.TaggedError("InvalidOptions")<{
  readonly detail: string
}> {
  override get message(): string {
    return `invalid server options: ${this.detail}`
  }
}

/**
 * Node could not create the server: most often a TLS key or certificate it
 * cannot load.
 *
 * @since 0.1.0
 * @category errors
 */
export class CreateFailed extends Data.TaggedError("CreateFailed")<{
  readonly address: string
  readonly cause: unknown
}> {
  override get message(): string {
    return `cannot create the server for ${this.address}: ${String(this.cause)}; check the key and certificate`
  }
}

/**
 * Why a server could not be made.
 *
 * @since 0.1.0
 * @category errors
 */
export type ServerErrorReason = InvalidOptions | CreateFailed

/**
 * A server could not be made; `reason` says why. Listener failures come as
 * `Listeners.ListenersError`.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServerError extends Data.TaggedError("ServerError")<{
  readonly reason: ServerErrorReason
}> {
  override get message(): string {
    return this.reason.message
  }
}

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/**
 * A Node server the app can be served on: HTTP/1, HTTPS, or HTTP/2.
 *
 * @since 0.1.0
 * @category models
 */
export type NodeServer = Http.Server | Https.Server | Http2.Http2Server | Http2.Http2SecureServer

/**
 * The HTTP/2 options of an HTTPS server with `http2`: those of
 * `http2.createSecureServer` other than TLS's, which are given as `https`.
 *
 * @since 0.1.0
 * @category models
 */
export type Http2Options = Omit<Http2.SecureServerOptions, keyof Tls.TlsOptions>

/**
 * Options of an HTTP server.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The listener's name: an inherited fd of that name is adopted first, and the name travels to a successor. */
  readonly name?: string | undefined
  /**
   * HTTPS: the key and certificate (and any other `tls` option). TLS runs over the listener, inherited or not.
   * Without `ticketKeys`, the server takes its session ticket key from `TicketKeyring`, which rotates it and which a
   * restart hands to the successor.
   */
  readonly https?: Tls.SecureContextOptions & Tls.TlsOptions
  /**
   * With `https`: HTTP/2, chosen by ALPN, and HTTP/1.1 for clients that do not offer it (and for WebSockets), on one
   * `Http2SecureServer`. `true`, or its HTTP/2 options (`settings`, `maxSessionMemory`, `allowHTTP1: false` to refuse
   * HTTP/1.1, ...). Not to be combined with `http`, whose options are HTTP/1.1's.
   */
  readonly http2?: boolean | Http2Options | undefined
  /**
   * Node's HTTP server options: `requestTimeout`, `headersTimeout`, `keepAliveTimeout`, `maxHeaderSize`, ... A
   * `ServerResponse` class given here is extended (requests are tracked by a subclass), not replaced.
   */
  readonly http?: Http.ServerOptions
  /**
   * Creates the Node server, for what the other options do not cover (an
   * cleartext HTTP/2 server, for example). It must not listen: the listener is
   * adopted once the app is attached. Not to be combined with `https`,
   * `http2` or `http`.
   */
  readonly createServer?: LazyArg<NodeServer> | undefined
  /** Overrides `Drain.DrainTimeout` for this server. */
  readonly drainTimeout?: Duration.Input | undefined
  /** Overrides `Drain.IdleGrace` for this server. */
  readonly idleGrace?: Duration.Input | undefined
  /** Options of the WebSocket server that upgrades requests (`perMessageDeflate`, `maxPayload`, ...). */
  readonly websocket?: Omit<NodeWS.ServerOptions, "noServer" | "server" | "host" | "port" | "path"> | undefined
}

// -----------------------------------------------------------------------------
// Constructors
// -----------------------------------------------------------------------------

const withName = (spec: Listeners.ListenSpec, name: string | undefined): Listeners.ListenSpec =>
  name === undefined ? spec : typeof spec === "string" ? { address: spec, name } : { ...spec, name }

const describe = (spec: Listeners.ListenSpec): string =>
  typeof spec === "string" ? spec : (spec.address ?? spec.name ?? "a listener")

// Tells every WebSocket it upgrades to the drain, including those upgraded during one.
class TrackedWebSocketServer extends NodeWS.WebSocketServer {
  onClient: (client: NodeWS.WebSocket) => void = () => {}
  override handleUpgrade(
    request: Http.IncomingMessage,
    socket: Duplex,
    head: Buffer,
    callback: (client: NodeWS.WebSocket, request: Http.IncomingMessage) => void
  ): void {
    super.handleUpgrade(request, socket, head, (client, upgraded) => {
      this.onClient(client)
      callback(client, upgraded)
    })
  }
}

const kConnection = Symbol("effect-grace/connection")
const kOpen = Symbol("effect-grace/open")

interface TrackedResponse extends Http.ServerResponse {
  [kConnection]: Drain.Connection | undefined
  [kOpen]: boolean
}

// The two halves of a tracked response's life. A response that is not open once constructed belongs to a request
// read on a connection the drain is closing: it is refused, not run.
const started = (response: TrackedResponse, tracker: Drain.Tracker, request: Http.IncomingMessage): void => {
  const connection = tracker.get(request.socket)
  response[kConnection] = connection
  if (connection !== undefined && connection.closing) {
    response[kOpen] = false
    return
  }
  response[kOpen] = true
  tracker.beginResponse(connection, response)
}

const finished = (response: TrackedResponse, tracker: Drain.Tracker): void => {
  if (!response[kOpen]) return
  response[kOpen] = false
  const connection = response[kConnection]
  if (connection?.response === response) connection.response = undefined
  tracker.end(connection)
}

/**
 * The response class of a server made here: its requests are tracked at the
 * cost of a few field writes, with no listener (the per-request cost that
 * matters next to `NodeHttpServer`). Node constructs it for every request
 * (the `ServerResponse` option of `http.createServer`), and calls its
 * `detachSocket` once the response has finished; a response whose socket
 * closes first ends with the connection (`Tracker.track`).
 *
 * Node's own `ServerResponse` is a function, and so is this one's subclass of
 * it: `new` of a function is allocated inline by optimized code, where `new`
 * of a class that extends one goes through V8's construct stubs (measured:
 * about 1.5% more instructions per request). A `ServerResponse` given as a
 * class is extended by a class.
 */
const trackedResponse = (Base: typeof Http.ServerResponse, tracker: Drain.Tracker): typeof Http.ServerResponse => {
  // Node constructs responses with options (the highWaterMark) beyond the request, which its types leave out.
  if (Function.prototype.toString.call(Base).startsWith("class")) {
    const NodeResponse = Base as unknown as new (request: Http.IncomingMessage, options?: object) => TrackedResponse
    class TrackedResponseClass extends NodeResponse {
      constructor(request: Http.IncomingMessage, options?: object) {
        super(request, options)
        started(this, tracker, request)
      }
      override detachSocket(socket: Net.Socket): void {
        finished(this, tracker)
        super.detachSocket(socket)
      }
    }
    return TrackedResponseClass as unknown as typeof Http.ServerResponse
  }
  const NodeResponse = Base as unknown as (
    this: TrackedResponse,
    request: Http.IncomingMessage,
    options?: object
  ) => void
  const detachSocket = Base.prototype.detachSocket
  function TrackedResponseFunction(this: TrackedResponse, request: Http.IncomingMessage, options?: object): void {
    NodeResponse.call(this, request, options)
    started(this, tracker, request)
  }
  Object.setPrototypeOf(TrackedResponseFunction.prototype, Base.prototype)
  Object.setPrototypeOf(TrackedResponseFunction, Base)
  TrackedResponseFunction.prototype.detachSocket = function (this: TrackedResponse, socket: Net.Socket): void {
    finished(this, tracker)
    detachSocket.call(this, socket)
  }
  return TrackedResponseFunction as unknown as typeof Http.ServerResponse
}

const invalidCombination = (options: Options): string | undefined => {
  if (
    options.createServer !== undefined &&
    (options.https !== undefined || options.http !== undefined || isHttp2(options))
  ) {
    return "give the https, http and http2 options to createServer, not beside it"
  }
  if (isHttp2(options) && options.https === undefined) {
    return "http2 is served over TLS (ALPN): give https too, or createServer: () => http2.createServer() for cleartext"
  }
  if (isHttp2(options) && options.http !== undefined) {
    return "the http options are HTTP/1.1's; give HTTP/2's as http2: { ... }"
  }
  return undefined
}

const isHttp2 = (options: Options): boolean => options.http2 !== undefined && options.http2 !== false

/** The Node server of `options`: made here (HTTP/1.1 with the tracked response class), or by `createServer`. */
const createNodeServer = (
  spec: Listeners.ListenSpec,
  options: Options,
  tracker: Drain.Tracker
): Effect.Effect<NodeServer, ServerError> =>
  Effect.try({
    try: (): NodeServer => {
      if (options.createServer !== undefined) return options.createServer()
      if (isHttp2(options)) {
        const http2 = typeof options.http2 === "object" ? options.http2 : {}
        return builtin("node:http2").createSecureServer({ allowHTTP1: true, ...http2, ...options.https })
      }
      const http = builtin("node:http")
      const Response = trackedResponse(options.http?.ServerResponse ?? http.ServerResponse, tracker)
      if (options.https === undefined) return http.createServer({ ...options.http, ServerResponse: Response })
      return builtin("node:https").createServer({ ...options.http, ...options.https, ServerResponse: Response })
    },
    catch: (cause) => new ServerError({ reason: new CreateFailed({ address: describe(spec), cause }) })
  })

/**
 * A TLS server not given `ticketKeys` of its own takes the key of the context's keyring, for the scope's life: it
 * resumes the sessions of its siblings and predecessors, and its key rotates. One from `createServer` always does.
 */
const shareTicketKey = (server: NodeServer, options: Options): Effect.Effect<void, never, Scope.Scope> =>
  "setTicketKeys" in server && options.https?.ticketKeys === undefined
    ? Effect.flatMap(Effect.service(TicketKeyring), (keyring) => keyring.register(server))
    : Effect.void

/**
 * Tracks each connection from its `connection` event: a TCP socket is tracked while in its handshake (for HTTPS),
 * then as the TLS socket requests arrive on; an HTTP/2 session is attached to its connection.
 */
const trackConnections = (server: NodeServer, tracker: Drain.Tracker): void => {
  // Node emits `session` from its own connection listener, just before ours runs for the same socket.
  let session: Http2.ServerHttp2Session | undefined
  const established = (connection: Drain.Connection) => {
    if (session !== undefined) tracker.attachSession(connection, session)
    session = undefined
  }
  const secure = "setSecureContext" in server
  server.on("session", (created: Http2.ServerHttp2Session) => {
    session = created
  })
  server.on("connection", (socket: Net.Socket) => {
    if (secure) tracker.track(socket, "handshake")
    else established(tracker.track(socket, "http"))
  })
  server.on("secureConnection", (socket: Tls.TLSSocket) => {
    // Node keeps the TCP socket as `_parent`; failing that, it is the one in handshake from the same peer.
    const raw =
      (socket as unknown as { readonly _parent?: Net.Socket })._parent ??
      tracker.find(
        (connection) =>
          connection.kind === "handshake" &&
          connection.socket.remotePort === socket.remotePort &&
          connection.socket.remoteAddress === socket.remoteAddress
      )?.socket
    established(raw !== undefined ? tracker.promote(raw, socket, "http") : tracker.track(socket, "http"))
  })
}

/** The WebSocket upgrader, closed with the scope: each WebSocket it makes gets a 1001 close when the drain begins. */
const webSocketServer = (
  tracker: Drain.Tracker,
  options: Options["websocket"]
): Effect.Effect<TrackedWebSocketServer, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => new TrackedWebSocketServer({ ...options, noServer: true })),
      (upgrader) => Effect.callback<void>((resume) => void upgrader.close(() => resume(Effect.void)))
    ),
    (wss) => {
      const webSockets = new Set<NodeWS.WebSocket>()
      const goingAway = (client: NodeWS.WebSocket) => tracker.goAway(() => client.close(1001, "server going away"))
      wss.onClient = (client) => {
        if (tracker.draining) return goingAway(client)
        webSockets.add(client)
        client.once("close", () => webSockets.delete(client))
      }
      tracker.onDrain(() => {
        for (const client of webSockets) goingAway(client)
        webSockets.clear()
      })
      return wss
    }
  )

/** Whether to run a request: not if it was read on a connection the drain is closing (it is refused). */
type Admit = (request: Http.IncomingMessage, response: Http.ServerResponse) => boolean

/** On a server made here, requests are tracked by their response class, without a listener per request. */
const admitTrackedResponse =
  (tracker: Drain.Tracker): Admit =>
  (_request, response) => {
    const tracked = response as TrackedResponse
    if (tracked[kOpen]) return true
    tracker.refuse(tracked[kConnection]!)
    return false
  }

/** On a server from `createServer`, or an HTTP/2 one, requests are tracked by a `close` listener. */
const admitWithListener =
  (tracker: Drain.Tracker): Admit =>
  (request, response) => {
    const connection = request.httpVersionMajor === 1 ? tracker.get(request.socket) : undefined
    if (connection !== undefined && connection.closing) {
      tracker.refuse(connection)
      return false
    }
    tracker.beginResponse(connection, response)
    response.once("close", () => tracker.end(connection))
    return true
  }

type Serve = Parameters<typeof HttpServer.make>[0]["serve"]
type RequestHandler = (request: Http.IncomingMessage, response: Http.ServerResponse) => void
type UpgradeHandler = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => void

/** What serving an app needs of the server made for it. */
interface Served {
  readonly server: NodeServer
  readonly listener: Listeners.Listener
  readonly tracker: Drain.Tracker
  readonly settings: Drain.Settings
  readonly wss: TrackedWebSocketServer
  readonly admit: Admit
}

/** The request and upgrade handlers of `NodeHttpServer`, for the app, their fibers in `scope`. */
const makeHandlers = (
  served: Served,
  httpApp: Parameters<Serve>[0],
  middleware: Parameters<Serve>[1],
  scope: Scope.Scope
) =>
  Effect.all({
    request: NodeHttpServer.makeHandler(httpApp, { middleware: middleware as never, scope }).pipe(
      Drain.provideSignal(served.tracker.signal)
    ) as Effect.Effect<RequestHandler>,
    upgrade: NodeHttpServer.makeUpgradeHandler(Effect.succeed(served.wss), httpApp, {
      middleware: middleware as never,
      scope
    }).pipe(Drain.provideSignal(served.tracker.signal)) as Effect.Effect<UpgradeHandler>
  })

/** Attaches the handlers, each request admitted first; returns what detaches them. */
const attachHandlers = (
  { admit, server, tracker }: Served,
  handlers: { readonly request: RequestHandler; readonly upgrade: UpgradeHandler }
): (() => void) => {
  const onRequest = (request: Http.IncomingMessage, response: Http.ServerResponse) => {
    if (admit(request, response)) handlers.request(request, response)
  }
  const onCheckContinue = (request: Http.IncomingMessage, response: Http.ServerResponse) => {
    if (!admit(request, response)) return
    response.writeContinue()
    handlers.request(request, response)
  }
  const onUpgrade = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const connection = tracker.get(socket as Net.Socket)
    if (connection !== undefined && connection.closing) return tracker.refuse(connection)
    tracker.upgraded(connection)
    handlers.upgrade(request, socket, head)
  }
  server.on("request", onRequest)
  server.on("checkContinue", onCheckContinue)
  server.on("upgrade", onUpgrade)
  return () => {
    server.off("request", onRequest)
    server.off("checkContinue", onCheckContinue)
    server.off("upgrade", onUpgrade)
  }
}

/**
 * Serves one app: forks the request scope first, attaches the handlers, adds the drain as a finalizer of the serve
 * scope (so it runs before the request scope closes), then accepts.
 */
const serveApp = (served: Served): Serve => {
  const address = Listeners.formatAddress(served.listener.address)
  let serving = false
  return Effect.fnUntraced(function* (httpApp, middleware) {
    if (serving) {
      return yield* Effect.die(
        new Error(`effect-grace: ${address} has served an app already; give each app its own Server.layer`)
      )
    }
    serving = true
    const serveScope = yield* Effect.scope
    // Forked first, so that it closes (interrupting what the drain leaves) after the drain below.
    const requestScope = Scope.forkUnsafe(serveScope, "parallel")
    const detach = attachHandlers(served, yield* makeHandlers(served, httpApp, middleware, requestScope))
    // Stopping to accept and draining: for good when the scope closes, or paused while a successor is on probation.
    const drained = Drain.drainReported(served.tracker, served.settings, address)
    yield* Scope.addFinalizer(
      serveScope,
      Effect.andThen(
        Effect.andThen(Listeners.stopAccepting(served.listener), drained),
        Effect.sync(() => {
          detach()
          // Nothing is left to close; this clears the connection checks Node runs for request timeouts.
          served.server.close()
        })
      )
    )
    const accepting = {
      stop: Listeners.pauseAccepting(served.listener),
      start: Listeners.resumeAccepting(served.listener)
    }
    // Connections from another slot's socket of this address, lent to this worker, are this server's too.
    const lentTo = { address, server: served.server as Net.Server }
    yield* Gate.registerServer(accepting, served.tracker, drained, lentTo)
    // Every handler is attached: accept.
    yield* Effect.orDie(Listeners.serve(served.listener, served.server as Net.Server))
  })
}

/**
 * Creates an `HttpServer` on a listener from `Listeners`: inherited when one
 * matches `spec`, bound otherwise. It accepts once an app is served on it,
 * and drains when that serve scope closes.
 *
 * **When to use**
 *
 * In place of `NodeHttpServer.make`, for a server that must restart or stop
 * without losing a request. Most programs use `layer`.
 *
 * **Details**
 *
 * - Serving forks the request scope first, attaches the request, continue
 *   and upgrade handlers, then adopts the listener (`Listeners.serve`); the
 *   drain is a finalizer of the serve scope added after the request scope,
 *   so it runs first and the fibers it leaves are interrupted after it.
 * - Upgrade requests become WebSockets as with `NodeHttpServer`.
 * - `Expect: 100-continue` is answered at once, as Node does by default.
 * - With `https` and `http2`, or `createServer` returning an HTTP/2 server,
 *   requests are served as `NodeHttpServer` serves them, and a drain sends
 *   each session a GOAWAY.
 *
 * **Gotchas**
 *
 * - One app per server: serving a second app on the same server while the
 *   first is served is a defect. Give each app its own `Server.layer`.
 * - A listener that Node cannot adopt when the app is served is a defect
 *   (`HttpServer.serve` has no error channel); binding errors come earlier,
 *   as `ListenersError`.
 * - A response whose headers were sent before the drain began goes out
 *   without `Connection: close`; its connection is closed once quiet, like an
 *   idle one.
 * - HTTP/2 has no `Connection: close`: its sessions get a GOAWAY instead.
 *   WebSockets need HTTP/1.1, which `http2` allows unless told not to.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  spec: Listeners.ListenSpec,
  options: Options = {}
): Effect.Effect<
  HttpServer.HttpServer["Service"],
  Listeners.ListenersError | ServerError,
  Scope.Scope | Listeners.Listeners
> =>
  Effect.gen(function* () {
    const invalid = invalidCombination(options)
    if (invalid !== undefined) return yield* new ServerError({ reason: new InvalidOptions({ detail: invalid }) })
    const settings = yield* Drain.resolveSettings(options)
    const tracker = new Drain.Tracker()
    yield* Drain.followClosing(tracker)
    const server = yield* createNodeServer(spec, options, tracker)
    yield* shareTicketKey(server, options)
    const listeners = yield* Listeners.Listeners
    const listener = yield* listeners.listen(withName(spec, options.name))
    trackConnections(server, tracker)
    const wss = yield* webSocketServer(tracker, options.websocket)
    const own = options.createServer === undefined && !isHttp2(options)
    const admit = own ? admitTrackedResponse(tracker) : admitWithListener(tracker)
    return HttpServer.make({
      address: listener.address,
      serve: serveApp({ server, listener, tracker, settings, wss, admit })
    })
  })

// -----------------------------------------------------------------------------
// Layers
// -----------------------------------------------------------------------------

/**
 * An `HttpServer` on a listener, with the Node HTTP platform services, as
 * `NodeHttpServer.layer` provides them. Requires `Listeners`.
 *
 * **When to use**
 *
 * Replace `NodeHttpServer.layer(() => http.createServer(), { port: 8080 })`
 * with `Server.layer(":8080")`; the app (`HttpRouter.serve(app)`) stays as it
 * is, and `Listeners.layer` is provided once at the top. Several servers in
 * one process are several layers, each provided to its own app.
 *
 * **Details**
 *
 * `spec` is a `Listeners.ListenSpec`: `":8080"`, `"127.0.0.1:0"`,
 * `"[::1]:9000"`, `"/run/app.sock"`, or `{ name, address }`.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { HttpRouter, HttpServerResponse } from "effect/http"
 * import { Listeners, Server } from "effect-grace"
 *
 * const Public = HttpRouter.serve(HttpRouter.add("GET", "/", HttpServerResponse.text("hello"))).pipe(
 *   Layer.provide(Server.layer(":8080"))
 * )
 * const Admin = HttpRouter.serve(HttpRouter.add("GET", "/health", HttpServerResponse.text("ok"))).pipe(
 *   Layer.provide(Server.layer({ name: "admin", address: "127.0.0.1:9090" }, { drainTimeout: "5 seconds" }))
 * )
 * const Main = Layer.mergeAll(Public, Admin).pipe(Layer.provide(Listeners.layer))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  spec: Listeners.ListenSpec,
  options?: Options
): Layer.Layer<
  HttpServer.HttpServer | HttpPlatform.HttpPlatform | Etag.Generator | NodeServices.NodeServices,
  Listeners.ListenersError | ServerError,
  Listeners.Listeners
> => Layer.mergeAll(Layer.effect(HttpServer.HttpServer)(make(spec, options)), NodeHttpServer.layerHttpServices)

/**
 * `layer`, with the address (and the options) read through `Config`, as
 * `NodeHttpServer.layerConfig` reads its own: the address from the
 * environment, a drain timeout from a variable of the application's.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { Server } from "effect-grace"
 *
 * const Public = Server.layerConfig(Config.String("HTTP_ADDRESS").pipe(Config.withDefault(":8080")), {
 *   drainTimeout: Config.Duration("HTTP_DRAIN_TIMEOUT").pipe(Config.withDefault("30 seconds"))
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  spec: Config.Wrap<Listeners.ListenSpec>,
  options?: Config.Wrap<Options>
): Layer.Layer<
  HttpServer.HttpServer | HttpPlatform.HttpPlatform | Etag.Generator | NodeServices.NodeServices,
  Listeners.ListenersError | ServerError | Config.ConfigError,
  Listeners.Listeners
> =>
  Layer.mergeAll(
    Layer.effect(HttpServer.HttpServer)(
      Effect.flatMap(
        Config.all({
          spec: Config.unwrap(spec),
          options: options === undefined ? Config.succeed({}) : Config.unwrap(options)
        }),
        (read) => make(read.spec, read.options)
      )
    ),
    NodeHttpServer.layerHttpServices
  )
