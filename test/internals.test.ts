/**
 * Canaries: one test per Node internal the library leans on (an undocumented
 * method, a private field, an event's order), each against real Node objects
 * on loopback. A failure names the internal and what the library relies on:
 * on that Node version, the trick that uses it must change.
 *
 * Where each is used:
 * - `ServerResponse.prototype.detachSocket`, and `ServerResponse` being a
 *   plain function: src/Server.ts, `trackedResponse`.
 * - `TLSSocket#_parent`: src/Server.ts, `onSecureConnection`.
 * - The order of an HTTP/2 server's `session` event: src/Server.ts,
 *   `onSession` / `established`.
 * - `OutgoingMessage#shouldKeepAlive`: src/internal/drain.ts, `closeAfter`.
 * - `net.Server.prototype.close` on an HTTP or HTTP/2 server: src/Listeners.ts,
 *   `stopAccepting`.
 * - `net.Socket#destroySoon`: src/internal/drain.ts, `refuse`, and
 *   src/TcpServer.ts, `closeSoon`.
 * - An HTTP server's timeouts set up by its own `listening` event:
 *   src/internal/portable.ts, `Acceptor.serve`.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as NetAddress from "effect/net/NetAddress"
import * as References from "effect/References"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Http2 from "node:http2"
import * as Https from "node:https"
import * as Net from "node:net"
import * as Tls from "node:tls"
import * as Listeners from "../src/Listeners.ts"
import * as Server from "../src/Server.ts"
import { tempDir } from "./support/fs.ts"
import { certificateFiles } from "./support/tls.ts"

// -----------------------------------------------------------------------------
// Support
// -----------------------------------------------------------------------------

/** The message of a failed canary: which internal, and what the library relies on. */
const relied = (internal: string, what: string): string =>
  `Node internal ${internal} no longer behaves as effect-grace relies on (Node ${process.version}): ${what}`

/** Waits, bounded, for `register` to call `done` (or `fail`); the timeout's message says what was awaited. */
const awaiting = <A>(
  what: string,
  register: (done: (value: A) => void, fail: (error: Error) => void) => void,
  timeout: Duration.Input = Duration.seconds(5)
): Effect.Effect<A, Error> =>
  Effect.callback<A, Error>((resume) => {
    register(
      (value) => resume(Effect.succeed(value)),
      (error) => resume(Effect.fail(error))
    )
  }).pipe(
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () =>
        Effect.fail(new Error(`${what}: nothing within ${Duration.format(Duration.fromInputUnsafe(timeout))}`))
    })
  )

/** Listens on a free loopback port; the scope closes the server and every connection it still has. */
const listening = <S extends Net.Server>(server: S) =>
  Effect.acquireRelease(
    Effect.orDie(awaiting<number>("listen", (done) => server.listen(0, "127.0.0.1", () => done(portOf(server))))),
    () =>
      Effect.sync(() => {
        if ("closeAllConnections" in server) (server as unknown as Http.Server).closeAllConnections()
        server.close()
      })
  )

const portOf = (server: Net.Server): number => (server.address() as Net.AddressInfo).port

/** A raw TCP client, connected; destroyed with the scope. */
const connect = (port: number) =>
  Effect.acquireRelease(
    Effect.orDie(
      awaiting<Net.Socket>("connect", (done, fail) => {
        const socket = Net.connect(port, "127.0.0.1", () => done(socket))
        socket.once("error", fail)
      })
    ),
    (socket) => Effect.sync(() => socket.destroy())
  )

/** Collects what `socket` receives, as text. */
const collect = (socket: Net.Socket) => {
  const received = { text: "" }
  socket.on("data", (chunk: Buffer) => (received.text += chunk.toString("latin1")))
  return received
}

/** Waits, bounded, until `socket` has received `count` occurrences of `marker`. */
const receivedTimes = (socket: Net.Socket, received: { text: string }, marker: string, count: number, what: string) =>
  awaiting<void>(what, (done) => {
    const check = () => {
      if (received.text.split(marker).length - 1 < count) return
      socket.off("data", check)
      done()
    }
    socket.on("data", check)
    check()
  })

/** Waits, bounded, for the server to end `socket` (a FIN), or fails on an error. */
const ended = (socket: Net.Socket, what: string, timeout?: Duration.Input) =>
  awaiting<void>(
    what,
    (done, fail) => {
      if (socket.readableEnded) return done()
      socket.once("end", () => done())
      socket.once("error", fail)
    },
    timeout
  )

const certificate = Effect.gen(function* () {
  const { key, cert } = certificateFiles(yield* tempDir)
  return { key: Fs.readFileSync(key), cert: Fs.readFileSync(cert) }
})

const httpRequest = (path: string, close = false) =>
  `GET ${path} HTTP/1.1\r\nhost: localhost\r\n${close ? "connection: close\r\n" : ""}\r\n`

// -----------------------------------------------------------------------------
// Canaries
// -----------------------------------------------------------------------------

describe("Node internals", () => {
  it.live(
    "Node internal: ServerResponse.prototype.detachSocket is called with the socket once the response finishes",
    () =>
      Effect.gen(function* () {
        const internal = "ServerResponse.prototype.detachSocket"
        const calls: Array<{
          readonly response: Http.ServerResponse
          readonly socket: Net.Socket
          readonly ended: boolean
        }> = []
        // A subclass made as src/Server.ts makes it for Node's own (function) ServerResponse.
        const detachSocket = Http.ServerResponse.prototype.detachSocket
        assert.strictEqual(typeof detachSocket, "function", relied(internal, "it exists on Node's ServerResponse"))
        function Tracked(this: Http.ServerResponse, request: Http.IncomingMessage, options?: object): void {
          ;(Http.ServerResponse as unknown as (this: Http.ServerResponse, ...args: Array<unknown>) => void).call(
            this,
            request,
            options
          )
        }
        Object.setPrototypeOf(Tracked.prototype, Http.ServerResponse.prototype)
        Object.setPrototypeOf(Tracked, Http.ServerResponse)
        Tracked.prototype.detachSocket = function (this: Http.ServerResponse, socket: Net.Socket): void {
          calls.push({ response: this, socket, ended: this.writableEnded })
          detachSocket.call(this, socket)
        }
        const answered: Array<{ readonly response: Http.ServerResponse; readonly socket: Net.Socket }> = []
        const server = Http.createServer(
          { ServerResponse: Tracked as unknown as typeof Http.ServerResponse },
          (request, response) => {
            answered.push({ response, socket: request.socket })
            response.end("ok")
          }
        )
        const port = yield* listening(server)
        const client = yield* connect(port)
        const received = collect(client)
        // Two requests on one kept-alive connection, the second pipelined behind the first.
        client.write(httpRequest("/one") + httpRequest("/two", true))
        yield* ended(client, "the server to answer both requests and close")
        assert.strictEqual(received.text.split("HTTP/1.1 200").length - 1, 2)
        assert.strictEqual(calls.length, 2, relied(internal, "Node calls it once for every response that finishes"))
        for (const [i, call] of calls.entries()) {
          assert.strictEqual(call.response, answered[i]!.response, relied(internal, "it is called on each response"))
          assert.strictEqual(call.socket, answered[i]!.socket, relied(internal, "its argument is the request's socket"))
          assert.isTrue(call.ended, relied(internal, "it is called once the response has ended, not before"))
        }
      })
  )

  it.live("Node internal: http.ServerResponse is a plain function, not a class, so that it is subclassed as one", () =>
    Effect.sync(() => {
      const internal = "http.ServerResponse (a function)"
      // The library takes the class branch for a class: correct, but about 1.5% more instructions per request.
      assert.isFalse(
        Function.prototype.toString.call(Http.ServerResponse).startsWith("class"),
        relied(internal, "it is an ES5 function, called on a subclass instance (`Base.call(this, request, options)`)")
      )
    })
  )

  it.live("Node internal: a TLS socket's _parent is the TCP socket of the server's connection event", () =>
    Effect.gen(function* () {
      const internal = "TLSSocket#_parent"
      const { key, cert } = yield* certificate
      const servers = {
        https: Https.createServer({ key, cert }, (_, response) => response.end("ok")),
        h2: Http2.createSecureServer({ key, cert }, (_, response) => response.end("ok"))
      }
      for (const [kind, server] of Object.entries(servers)) {
        const raw: Array<Net.Socket> = []
        const parents: Array<unknown> = []
        server.on("connection", (socket: Net.Socket) => raw.push(socket))
        server.on("secureConnection", (socket: Tls.TLSSocket) => parents.push(Reflect.get(socket, "_parent")))
        const port = yield* listening(server)
        // The server completes its handshake after the client (TLS 1.3): the client stays until it has.
        yield* Effect.orDie(
          awaiting<void>(`${kind}: the server's secureConnection`, (done, fail) => {
            const alpn = kind === "h2" ? ["h2"] : ["http/1.1"]
            const socket = Tls.connect({
              port,
              host: "127.0.0.1",
              ca: cert,
              servername: "localhost",
              ALPNProtocols: alpn
            })
            socket.once("error", fail)
            server.once("secureConnection", () => {
              socket.destroy()
              done()
            })
          })
        )
        assert.strictEqual(raw.length, 1)
        assert.strictEqual(
          parents[0],
          raw[0],
          relied(internal, `${kind}: a TLS socket keeps the TCP socket that the server's connection event gave`)
        )
      }
    })
  )

  it.live(
    "Node internal: an HTTP/2 server emits session just before a later connection listener runs for its socket",
    () =>
      Effect.gen(function* () {
        const internal = "the order of Http2Server's session event"
        const { key, cert } = yield* certificate
        const cases = [
          { kind: "h2c", server: Http2.createServer(), event: "connection", url: "http" },
          {
            kind: "h2",
            server: Http2.createSecureServer({ key, cert, allowHTTP1: true }),
            event: "secureConnection",
            url: "https"
          }
        ] as const
        for (const { kind, server, event, url } of cases) {
          const events: Array<string> = []
          server.on("session", (session: Http2.ServerHttp2Session) =>
            events.push(`session ${session.socket.remotePort}`)
          )
          server.on(event, (socket: Net.Socket) => events.push(`${event} ${socket.remotePort}`))
          server.on("stream", (stream) => {
            stream.respond({ ":status": 200 })
            stream.end("ok")
          })
          const port = yield* listening(server)
          const ports: Array<number> = []
          for (let i = 0; i < 2; i++) {
            yield* Effect.orDie(
              awaiting<void>(`${kind}: a stream`, (done, fail) => {
                const session = Http2.connect(`${url}://127.0.0.1:${port}`, { ca: cert, servername: "localhost" })
                session.once("error", fail)
                const stream = session.request({ ":path": "/" })
                stream.resume()
                stream.once("error", fail)
                stream.once("end", () => {
                  ports.push(session.socket.localPort!)
                  session.close()
                  done()
                })
              })
            )
          }
          assert.deepStrictEqual(
            events,
            ports.flatMap((p) => [`session ${p}`, `${event} ${p}`]),
            relied(
              internal,
              `${kind}: session is emitted, synchronously, just before the server's later ${event} listeners`
            )
          )
        }
        // HTTP/1 on an HTTP/2 TLS server has no session: none is emitted before its secureConnection.
        const events: Array<string> = []
        const server = Http2.createSecureServer({ key, cert, allowHTTP1: true }, (_, response) => response.end("ok"))
        server.on("session", () => events.push("session"))
        server.on("secureConnection", () => events.push("secureConnection"))
        const port = yield* listening(server)
        yield* Effect.orDie(
          awaiting<void>("an HTTP/1 request over TLS", (done, fail) => {
            Https.get({ port, host: "127.0.0.1", ca: cert, servername: "localhost", agent: false }, (response) => {
              response.resume()
              response.once("end", () => done())
            }).once("error", fail)
          })
        )
        assert.deepStrictEqual(events, ["secureConnection"], relied(internal, "an HTTP/1 connection emits no session"))
      })
  )

  it.live(
    "Node internal: response.shouldKeepAlive = false makes the response say Connection: close and close after",
    () =>
      Effect.gen(function* () {
        const internal = "OutgoingMessage#shouldKeepAlive"
        const server = Http.createServer({ keepAliveTimeout: 30_000 }, (_, response) => {
          // As the drain marks a response before its headers go: this field alone (no header).
          response.shouldKeepAlive = false
          response.end("ok")
        })
        const port = yield* listening(server)
        const client = yield* connect(port)
        const received = collect(client)
        client.write(httpRequest("/"))
        const closedAfter = yield* Effect.result(ended(client, "the connection to close", Duration.seconds(3)))
        assert.match(
          received.text,
          /\r\nconnection: close\r\n/i,
          relied(internal, "false before the headers go makes them say Connection: close")
        )
        assert.isTrue(
          closedAfter._tag === "Success",
          relied(internal, "false before the headers go makes Node close a kept-alive connection after the response")
        )
      })
  )

  it.live(
    "Node internal: net.Server.prototype.close on an http.Server closes the listening handle, not idle connections",
    () =>
      Effect.gen(function* () {
        const internal = "net.Server.prototype.close called on an http.Server"
        const server = Http.createServer({ keepAliveTimeout: 30_000 }, (_, response) => response.end("ok"))
        const port = yield* listening(server)
        const client = yield* connect(port)
        const received = collect(client)
        client.write(httpRequest("/one"))
        yield* receivedTimes(client, received, "\r\n\r\nok", 1, "the first answer")
        // The connection is idle now: http.Server's own close would close it.
        Net.Server.prototype.close.call(server)
        assert.isFalse(server.listening, relied(internal, "the server stops listening"))
        const refused = yield* Effect.flip(
          awaiting<void>("a new connection", (done, fail) => {
            const socket = Net.connect(port, "127.0.0.1", () => {
              socket.destroy()
              done()
            })
            socket.once("error", fail)
          })
        )
        assert.strictEqual((refused as NodeJS.ErrnoException).code, "ECONNREFUSED", relied(internal, "nothing accepts"))
        client.write(httpRequest("/two"))
        const answered = yield* Effect.result(receivedTimes(client, received, "\r\n\r\nok", 2, "the second answer"))
        assert.isTrue(
          answered._tag === "Success" && !client.destroyed,
          relied(internal, "an idle kept-alive connection stays open and is answered")
        )
      })
  )

  it.live(
    "Node internal: net.Server.prototype.close on an Http2Server closes the listening handle, not its sessions",
    () =>
      Effect.gen(function* () {
        const internal = "net.Server.prototype.close called on an Http2Server"
        const server = Http2.createServer()
        server.on("stream", (stream) => {
          stream.respond({ ":status": 200 })
          stream.end("ok")
        })
        const port = yield* listening(server)
        const session = Http2.connect(`http://127.0.0.1:${port}`)
        yield* Effect.addFinalizer(() => Effect.sync(() => session.destroy()))
        let goaway = false
        session.on("goaway", () => (goaway = true))
        const stream = (what: string) =>
          awaiting<void>(what, (done, fail) => {
            const request = session.request({ ":path": "/" })
            request.resume()
            request.once("end", () => done())
            request.once("error", fail)
          })
        yield* Effect.orDie(stream("a first stream"))
        // Http2Server's own close would send every session a GOAWAY (the drain does, in two steps).
        Net.Server.prototype.close.call(server)
        assert.isFalse(server.listening, relied(internal, "the server stops listening"))
        const answered = yield* Effect.result(stream("a stream after the close"))
        assert.isTrue(
          answered._tag === "Success" && !goaway,
          relied(internal, "an open session is neither sent a GOAWAY nor closed, and its next stream is answered")
        )
      })
  )

  it.live("Node internal: net.Socket#destroySoon ends the socket once its writes are flushed, then destroys it", () =>
    Effect.gen(function* () {
      const internal = "net.Socket#destroySoon"
      const size = 8 * 1024 * 1024
      let serverSide: Net.Socket | undefined
      const server = Net.createServer((socket) => {
        serverSide = socket
        socket.write(Buffer.alloc(size, 1))
        socket.destroySoon()
      })
      const port = yield* listening(server)
      const client = yield* connect(port)
      let bytes = 0
      client.pause()
      client.on("data", (chunk: Buffer) => (bytes += chunk.length))
      // The client reads only once the server has queued what it cannot send yet.
      yield* Effect.orDie(
        awaiting<void>("the server's connection", (done) => {
          const check = () => (serverSide !== undefined ? done() : void setTimeout(check, 5))
          check()
        })
      )
      assert.isFalse(serverSide!.destroyed, relied(internal, "it does not destroy a socket with writes pending"))
      client.resume()
      yield* Effect.orDie(ended(client, "the server to end the connection"))
      assert.strictEqual(bytes, size, relied(internal, "every byte written before it is delivered"))
      yield* Effect.orDie(
        awaiting<void>("the server's socket to close", (done) => {
          if (serverSide!.closed) return done()
          serverSide!.once("close", () => done())
        })
      )
      assert.isTrue(serverSide!.destroyed, relied(internal, "the socket is destroyed once its writes are flushed"))
    })
  )

  it.live("Node internal: an http.Server sets up its request and header timeouts on its own listening event", () =>
    Effect.gen(function* () {
      const internal = "http.Server's listening listener (setupConnectionsTracking)"
      // As Portable.Acceptor serves it: never listening itself, told `listening`, then given connections.
      const http = Http.createServer(
        { headersTimeout: 200, requestTimeout: 400, connectionsCheckingInterval: 50 },
        (_, response) => response.end("ok")
      )
      http.emit("listening")
      yield* Effect.addFinalizer(() => Effect.sync(() => http.closeAllConnections()))
      const acceptor = Net.createServer((socket) => http.emit("connection", socket))
      const port = yield* listening(acceptor)
      const client = yield* connect(port)
      const received = collect(client)
      client.write("GET / HTTP/1.1\r\n")
      const timedOut = yield* Effect.result(ended(client, "the header timeout", Duration.seconds(3)))
      assert.isTrue(
        timedOut._tag === "Success" && received.text.startsWith("HTTP/1.1 408"),
        relied(internal, "after `listening` is emitted, headersTimeout applies to connections emitted to the server")
      )
    })
  )
})

// -----------------------------------------------------------------------------
// The fallback when a TLS socket has no `_parent`
// -----------------------------------------------------------------------------

/** Makes `server`'s TLS sockets show no `_parent` to its secureConnection listeners. */
const parentless = (server: Https.Server): Https.Server => {
  const emit = server.emit.bind(server) as (event: string | symbol, ...args: Array<unknown>) => boolean
  server.emit = ((event: string | symbol, ...args: Array<unknown>): boolean => {
    if (event !== "secureConnection") return emit(event, ...args)
    const socket = args[0] as Tls.TLSSocket
    const parent: unknown = Reflect.get(socket, "_parent")
    Reflect.set(socket, "_parent", undefined)
    try {
      return emit(event, ...args)
    } finally {
      Reflect.set(socket, "_parent", parent)
    }
  }) as typeof server.emit
  return server
}

describe("Server without TLSSocket#_parent", () => {
  it.live("a TLS connection is matched to its TCP handshake by the peer's address: one connection, drained", () => {
    const drains: Array<Record<string, unknown>> = []
    const logger = Logger.make(({ fiber, message }) => {
      const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
      if (text.includes("drain finished")) drains.push({ ...fiber.getRef(References.CurrentLogAnnotations) })
    })
    return Effect.gen(function* () {
      const { key, cert } = yield* certificate
      const app = HttpRouter.serve(HttpRouter.add("GET", "/", HttpServerResponse.text("ok")), {
        disableLogger: true,
        disableListenLog: true
      }).pipe(
        Layer.provide(
          Server.layer("127.0.0.1:0", {
            createServer: () => parentless(Https.createServer({ key, cert })),
            idleGrace: "50 millis"
          })
        ),
        Layer.provideMerge(Listeners.layerFrom([]))
      )
      const answered = yield* Effect.scoped(
        Effect.gen(function* () {
          const context = yield* Layer.build(app)
          const [listener] = yield* Context.get(context, Listeners.Listeners).active
          const port = (listener!.address as NetAddress.InetAddress).port
          const agent = new Https.Agent({ keepAlive: true, maxSockets: 1, ca: cert, servername: "localhost" })
          yield* Effect.addFinalizer(() => Effect.sync(() => agent.destroy()))
          return yield* awaiting<string>("an HTTPS request", (done, fail) => {
            Https.get({ port, host: "127.0.0.1", agent }, (response) => {
              let body = ""
              response.on("data", (chunk: Buffer) => (body += chunk.toString()))
              response.once("end", () => done(body))
            }).once("error", fail)
          })
        })
      )
      assert.strictEqual(answered, "ok")
      // Without the fallback, the TLS socket and its TCP socket would be two connections, the TCP one closed as a
      // stalled handshake under the client.
      assert.strictEqual(drains.length, 1)
      assert.include(drains[0], { connections: 1, finished: 1, forced: 0 })
    }).pipe(Effect.provide(Logger.layer([logger])))
  })
})
