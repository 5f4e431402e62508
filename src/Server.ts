/**
 * HTTP and HTTPS servers for `effect/http` apps, on listeners from
 * `Listeners`, whose shutdown is a drain: when the server's scope closes,
 * nothing in flight is lost.
 *
 * It provides the same services as `NodeHttpServer.layer` and serves requests
 * with the same handlers (`NodeHttpServer.makeHandler` and
 * `makeUpgradeHandler`); only the lifecycle differs:
 *
 * - It accepts only once the app's handlers are attached (`HttpServer.serve`),
 *   so a successor never accepts a connection it cannot answer yet.
 * - When the serve scope closes it stops accepting at once, marks every
 *   further response `Connection: close`, lets requests in flight finish,
 *   closes keep-alive connections only once they have been quiet for
 *   `idleGrace` (closing a connection that merely looks idle races the
 *   client's next request into a reset), sends WebSockets a 1001 close, and
 *   destroys what is left at `drainTimeout`. The drain is logged.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Etag from "effect/http/Etag"
import type * as HttpPlatform from "effect/http/HttpPlatform"
import * as HttpServer from "effect/http/HttpServer"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type * as NodeServices from "@effect/platform-node/NodeServices"
import * as NodeWS from "@effect/platform-node/NodeWS"
import * as Http from "node:http"
import * as Https from "node:https"
import type * as Net from "node:net"
import type * as Tls from "node:tls"
import { Tracker } from "./internal/drain.ts"
import * as Listeners from "./Listeners.ts"

/**
 * How long a drain may take before what is left is destroyed. Default 30
 * seconds; `GRACE_DRAIN_TIMEOUT` (through `Config`) or a server's
 * `drainTimeout` option overrides it.
 *
 * @since 0.1.0
 * @category references
 */
export const DrainTimeout: Context.Reference<Duration.Duration> = Context.Reference<Duration.Duration>(
  "effect-grace/Server/DrainTimeout",
  { defaultValue: () => Duration.seconds(30) }
)

/**
 * How long a connection with nothing in flight must be quiet before a drain
 * closes it. Default 250 milliseconds; `GRACE_IDLE_GRACE` (through `Config`)
 * or a server's `idleGrace` option overrides it.
 *
 * @since 0.1.0
 * @category references
 */
export const IdleGrace: Context.Reference<Duration.Duration> = Context.Reference<Duration.Duration>(
  "effect-grace/Server/IdleGrace",
  { defaultValue: () => Duration.millis(250) }
)

/**
 * Drain settings shared by every server kind.
 *
 * @since 0.1.0
 * @category models
 */
export interface DrainOptions {
  readonly drainTimeout?: Duration.Input | undefined
  readonly idleGrace?: Duration.Input | undefined
}

/**
 * Options of an HTTP server.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends DrainOptions {
  /** TLS: key and certificate (and any other `tls` option) for HTTPS. */
  readonly https?: Tls.SecureContextOptions & Tls.TlsOptions
  /** Node's HTTP server options: `requestTimeout`, `headersTimeout`, `keepAliveTimeout`, ... */
  readonly http?: Http.ServerOptions
  /** Options for the WebSocket server that upgrades requests (`permessage-deflate`, payload limits). */
  readonly websocket?: Omit<NodeWS.ServerOptions, "noServer" | "server" | "host" | "port" | "path">
}

/**
 * Resolves the drain settings: the given options, else `GRACE_DRAIN_TIMEOUT`
 * and `GRACE_IDLE_GRACE` from `Config`, else `DrainTimeout` and `IdleGrace`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const drainSettings = (
  options: DrainOptions
): Effect.Effect<{ readonly timeout: Duration.Duration; readonly idleGrace: Duration.Duration }, Config.ConfigError> =>
  Effect.gen(function* () {
    const configured = yield* Config.all({
      timeout: Config.option(Config.Duration("GRACE_DRAIN_TIMEOUT")),
      idleGrace: Config.option(Config.Duration("GRACE_IDLE_GRACE"))
    })
    const pick = (
      given: Duration.Input | undefined,
      fromConfig: Option.Option<Duration.Duration>,
      fallback: Duration.Duration
    ) => (given !== undefined ? Duration.fromInputUnsafe(given) : Option.getOrElse(fromConfig, () => fallback))
    return {
      timeout: pick(options.drainTimeout, configured.timeout, yield* DrainTimeout),
      idleGrace: pick(options.idleGrace, configured.idleGrace, yield* IdleGrace)
    }
  })

/**
 * Creates an `HttpServer` on a listener from `Listeners`: inherited when one
 * matches `spec`, bound otherwise. It accepts once an app is served on it,
 * and drains when the serve scope closes.
 *
 * **When to use**
 *
 * In place of `NodeHttpServer.make`, for a server that must restart or stop
 * without losing a request. Most programs use `layer`.
 *
 * **Details**
 *
 * With `https`, TLS runs over the listener, inherited or not. Upgrade
 * requests become WebSockets as with `NodeHttpServer`; a drain sends them a
 * 1001 close and destroys them at the deadline.
 *
 * **Gotchas**
 *
 * HTTP/2 is not served: HTTP/1.1 keep-alive is what this drain handles.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  spec: Listeners.ListenSpec,
  options: Options = {}
): Effect.Effect<
  HttpServer.HttpServer["Service"],
  Listeners.ListenersError | Config.ConfigError,
  Scope.Scope | Listeners.Listeners
> =>
  Effect.gen(function* () {
    const settings = yield* drainSettings(options)
    const listeners = yield* Listeners.Listeners
    const listener = yield* listeners.listen(spec)
    const address = Listeners.formatAddress(listener.address)
    const server: Http.Server =
      options.https !== undefined
        ? Https.createServer({ ...options.http, ...options.https })
        : Http.createServer(options.http ?? {})
    const tracker = new Tracker()

    // The connection the HTTP parser reads: the TLS socket for HTTPS. Sockets still in the TLS handshake are
    // tracked too (pinned: they become HTTP connections, or fail).
    if (options.https !== undefined) {
      server.on("connection", (socket: Net.Socket) => tracker.add(socket, { pinned: true, counted: false }))
      server.on("secureConnection", (socket: Tls.TLSSocket) => {
        tracker.add(socket)
        socket.on("data", () => tracker.touch(socket))
      })
      server.on("tlsClientError", (_error, socket) => socket.destroy())
    } else {
      server.on("connection", (socket: Net.Socket) => {
        tracker.add(socket)
        socket.on("data", () => tracker.touch(socket))
      })
    }

    const wss = yield* Effect.acquireRelease(
      Effect.sync(() => new NodeWS.WebSocketServer({ ...options.websocket, noServer: true })),
      (ws) => Effect.callback<void>((resume) => void ws.close(() => resume(Effect.void)))
    )

    return HttpServer.make({
      address: listener.address,
      serve: Effect.fnUntraced(function* (httpApp, middleware) {
        const serveScope = yield* Effect.scope
        // Forked first, so that it closes (interrupting what the drain left) after the drain below.
        const requestScope = Scope.forkUnsafe(serveScope, "parallel")
        const handler = yield* NodeHttpServer.makeHandler(httpApp, {
          middleware: middleware as never,
          scope: requestScope
        }) as Effect.Effect<(request: Http.IncomingMessage, response: Http.ServerResponse) => void>
        const upgradeHandler = yield* NodeHttpServer.makeUpgradeHandler(Effect.succeed(wss), httpApp, {
          middleware: middleware as never,
          scope: requestScope
        }) as Effect.Effect<(request: Http.IncomingMessage, socket: Net.Socket, head: Buffer) => void>

        let requests = 0
        const track = (request: Http.IncomingMessage, response: Http.ServerResponse) => {
          const socket = request.socket
          requests++
          tracker.start(socket)
          response.once("close", () => tracker.end(socket))
          if (tracker.isDraining) response.setHeader("connection", "close")
          else tracker.whenDraining(() => response.headersSent || response.setHeader("connection", "close"))
        }
        const onRequest = (request: Http.IncomingMessage, response: Http.ServerResponse) => {
          track(request, response)
          handler(request, response)
        }
        const onCheckContinue = (request: Http.IncomingMessage, response: Http.ServerResponse) => {
          track(request, response)
          response.writeContinue()
          handler(request, response)
        }
        const onUpgrade = (request: Http.IncomingMessage, socket: Net.Socket, head: Buffer) => {
          tracker.pin(socket)
          upgradeHandler(request, socket, head)
        }
        server.on("request", onRequest)
        server.on("checkContinue", onCheckContinue)
        server.on("upgrade", onUpgrade)

        yield* Scope.addFinalizer(
          serveScope,
          Effect.gen(function* () {
            // Stop accepting only: http.Server#close also closes connections that look idle, racing their clients.
            yield* Effect.sync(() => {
              if (server.listening) (Object.getPrototypeOf(Http.Server.prototype) as Net.Server).close.call(server)
            })
            tracker.whenDraining(() => {
              for (const client of wss.clients) client.close(1001, "going away")
            })
            const report = yield* tracker.drain(settings)
            const log = report.forced > 0 ? Effect.logWarning : Effect.logInfo
            yield* log("effect-grace: drain finished").pipe(
              Effect.annotateLogs({ server: address, requests, ...report })
            )
            server.off("request", onRequest)
            server.off("checkContinue", onCheckContinue)
            server.off("upgrade", onUpgrade)
          })
        )
        // Every handler is attached: accept.
        yield* Effect.orDie(Listeners.serve(listener, server))
      })
    })
  })

/**
 * An `HttpServer` on a listener, with the Node HTTP platform services, as
 * `NodeHttpServer.layer` provides them. Requires `Listeners`.
 *
 * **When to use**
 *
 * Replace `NodeHttpServer.layer(() => http.createServer(), { port: 8080 })`
 * with `Server.layer(":8080")`; the app (`HttpRouter.serve(app)`) stays as it
 * is. Several servers in one process are several layers, each provided to its
 * own app.
 *
 * @example
 * ```ts
 * const Public = HttpRouter.serve(app).pipe(Layer.provide(Server.layer(":8080")))
 * const Admin = HttpRouter.serve(admin).pipe(Layer.provide(Server.layer({ name: "admin", address: "127.0.0.1:9090" })))
 * Supervisor.run(Layer.mergeAll(Public, Admin)).pipe(Supervisor.runMain)
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
  Listeners.ListenersError | Config.ConfigError,
  Listeners.Listeners
> => Layer.mergeAll(Layer.effect(HttpServer.HttpServer)(make(spec, options)), NodeHttpServer.layerHttpServices)
