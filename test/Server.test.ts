import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as LogLevel from "effect/LogLevel"
import * as NetAddress from "effect/net/NetAddress"
import * as References from "effect/References"
import * as Result from "effect/Result"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/testing/TestClock"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Http2 from "node:http2"
import * as Net from "node:net"
import * as Tls from "node:tls"
import { Client } from "undici"
import { WebSocket } from "ws"
import * as ListenFds from "../src/ListenFds.ts"
import * as Listeners from "../src/Listeners.ts"
import * as Server from "../src/Server.ts"
import * as Drain from "../src/Drain.ts"
import * as DrainInternal from "../src/internal/drain.ts"
import * as Sys from "../src/internal/sys.ts"
import * as Tickets from "../src/internal/tickets.ts"
import { closed, get, keepAliveAgent, untilRefused } from "./support/http.ts"
import { eventually } from "./support/process.ts"
import { certificateFiles, curl, curlPath, h2Request, tlsConnect } from "./support/tls.ts"
import type { Reply } from "./support/http.ts"
import { tempDir } from "./support/fs.ts"

// -----------------------------------------------------------------------------
// Support
// -----------------------------------------------------------------------------

interface Logged {
  readonly level: LogLevel.LogLevel
  readonly message: string
  readonly annotations: Record<string, unknown>
}

/** Collects the drain reports the servers log. */
const captureLogs = () => {
  const logs: Array<Logged> = []
  const logger = Logger.make(({ fiber, logLevel, message }) => {
    const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
    logs.push({ level: logLevel, message: text, annotations: { ...fiber.getRef(References.CurrentLogAnnotations) } })
  })
  const drains = () => logs.filter((log) => log.message.includes("drain finished"))
  return { logs, drains, layer: Logger.layer([logger]) }
}

const portOf = (address: NetAddress.SocketAddress): number => (address as NetAddress.InetAddress).port

/**
 * Builds `app` (with fresh listeners, or `inherited` ones) in a scope of its own, closed by `close` or at the end of
 * the test. Yields the listeners and `close`.
 */
const start = <E>(
  app: Layer.Layer<never, E, Listeners.Listeners>,
  inherited: ReadonlyArray<ListenFds.InheritedFd> = []
) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(Layer.provideMerge(app, Listeners.layerFrom(inherited)), scope)
    const active = yield* Context.get(context, Listeners.Listeners).active
    const ports = Object.fromEntries(active.map((listener) => [listener.name, portOf(listener.address)]))
    return { ports, active, close: Scope.close(scope, Exit.void) }
  })

const serve = <E, R>(routes: Layer.Layer<never, E, R>, spec: Listeners.ListenSpec, options?: Server.Options) =>
  HttpRouter.serve(routes, { disableLogger: true, disableListenLog: true }).pipe(
    Layer.provide(Server.layer(spec, options))
  )

/** Times an effect, in milliseconds. */
const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const started = Date.now()
    const value = yield* effect
    return { value, millis: Date.now() - started }
  })

const refused = (port: number) => untilRefused({ port })

const body = 64 * 1024

/**
 * Routes: `/fast`; `/slow?ms=N`, a 64 KiB body after N ms, with `x-draining` saying whether the drain had begun when
 * it was made; `/never`. `started` completes when a slow one begins.
 */
const routes = (started = Deferred.makeUnsafe<void>()) =>
  Layer.mergeAll(
    HttpRouter.add("GET", "/fast", HttpServerResponse.text("fast")),
    HttpRouter.add("GET", "/slow", (request) =>
      Effect.gen(function* () {
        const ms = Number(new URL(request.url, "http://test").searchParams.get("ms") ?? "0")
        yield* Deferred.succeed(started, undefined)
        yield* Effect.sleep(Duration.millis(ms))
        const draining = yield* Drain.isDraining
        return HttpServerResponse.text("x".repeat(body), { headers: { "x-draining": String(draining) } })
      })
    ),
    HttpRouter.add("GET", "/never", Effect.andThen(Deferred.succeed(started, undefined), Effect.never))
  )

/** `/ws`: a WebSocket that echoes what it receives. */
const echo = HttpRouter.add(
  "GET",
  "/ws",
  Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest
    const socket = yield* request.upgrade
    const reader = yield* socket.reader
    const writer = yield* socket.writer
    yield* Effect.forever(Effect.flatMap(reader.pull, (chunks) => writer.writeAll(chunks)))
  }).pipe(Effect.scoped, Effect.ignore, Effect.as(HttpServerResponse.empty()))
)

/** A self-signed certificate for localhost, made now. */
const certificate = Effect.gen(function* () {
  const { key, cert } = certificateFiles(yield* tempDir)
  return { key: Fs.readFileSync(key), cert: Fs.readFileSync(cert) }
})

/** A listening socket bound here, standing in for one passed by a service manager (or a predecessor). */
const passedFd = (name: string) =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const fd = Sys.bindListen(NetAddress.inetAddressUnsafe(NetAddress.ipv4Loopback, 0), 16)
      assert.isTrue(Result.isSuccess(fd), "bind")
      return yield* ListenFds.checkFd((fd as Result.Success<number, never>).success, name)
    }).pipe(Effect.orDie),
    // Listeners owns the fd once claimed, and has closed it already.
    (passed) => Effect.sync(() => Fs.existsSync(`/proc/self/fd/${passed.fd}`) && Fs.closeSync(passed.fd))
  )

interface Answer {
  readonly status: number
  readonly connection: string | undefined
  readonly length: number
  /** Received after the test began closing the server's scope. */
  readonly afterClose: boolean
  /** Made by the handler once the drain had begun (`x-draining`). */
  readonly draining: boolean
}

/**
 * An undici client on one connection (pipelining 1), destroyed with its scope. `opened` counts the connections it
 * made; `ended` has the code of each one's end: `UND_ERR_INFO` when the client closed it after a `Connection: close`,
 * `UND_ERR_SOCKET` when the server closed it first, `ECONNRESET` for a reset.
 */
const undiciClient = (origin: string, ca?: Buffer) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const client = new Client(origin, { pipelining: 1, ...(ca !== undefined ? { connect: { ca } } : {}) })
      const connections = { opened: 0, ended: [] as Array<string> }
      client.on("connect", () => void connections.opened++)
      client.on("disconnect", (_origin, _targets, error) => void connections.ended.push(error.code ?? error.message))
      return { client, connections }
    }),
    ({ client }) => Effect.promise(() => client.destroy())
  )

/** One GET on an undici client, read to the end, bounded. */
const send = (client: Client, path: string, closing: () => boolean): Effect.Effect<Answer, unknown> =>
  Effect.tryPromise({
    try: async (signal) => {
      const response = await client.request({ path, method: "GET", signal })
      const text = await response.body.text()
      const connection = response.headers.connection
      return {
        status: response.statusCode,
        connection: Array.isArray(connection) ? connection.join(", ") : connection,
        length: text.length,
        afterClose: closing(),
        draining: response.headers["x-draining"] === "true"
      }
    },
    catch: (cause) => cause
  }).pipe(
    Effect.timeoutOrElse({
      duration: Duration.seconds(10),
      orElse: () => Effect.fail(new Error(`no answer to GET ${path}`))
    })
  )

/**
 * Forks a loop that sends request after request on `client`, with no pause, until a response says `Connection: close`
 * (or a request fails). Yields what it received and the failures.
 */
const keepSending = (client: Client, path: string, closing: () => boolean) =>
  Effect.gen(function* () {
    const answers: Array<Answer> = []
    const errors: Array<unknown> = []
    const loop = Effect.gen(function* () {
      while (true) {
        const answer = yield* send(client, path, closing)
        answers.push(answer)
        if (answer.connection === "close") return
      }
    }).pipe(Effect.catch((error) => Effect.sync(() => errors.push(error))))
    return { answers, errors, fiber: yield* Effect.forkChild(loop) }
  })

/**
 * Runs `clients` undici clients, each sending request after request on one kept-alive connection (every request
 * taking `ms`), closes the server's scope while they send, and checks that each got every response, the last with
 * `Connection: close`, and that its connection then closed without a reset. Logs the counts.
 */
const throughTheDrain = (
  clients: number,
  options: { readonly https?: { key: Buffer; cert: Buffer }; readonly server?: Server.Options; ms: number }
) => {
  const logs = captureLogs()
  return Effect.gen(function* () {
    const secure = options.https !== undefined
    const server = { ...options.server, ...(secure ? { https: options.https } : {}) }
    const { ports, close } = yield* start(serve(routes(), "127.0.0.1:0", server))
    const origin = `${secure ? "https" : "http"}://127.0.0.1:${ports.unknown}`
    let closing = false
    const running = yield* Effect.forEach(Array.from({ length: clients }), () =>
      Effect.gen(function* () {
        const { client, connections } = yield* undiciClient(origin, options.https?.cert)
        const sending = yield* keepSending(client, `/slow?ms=${options.ms}`, () => closing)
        return { ...sending, connections }
      })
    )
    // Every client has a connection in use, and is sending on it, when the drain begins.
    yield* eventually(() => running.every((client) => client.answers.length >= 3), "three responses each")
    closing = true
    const closer = yield* Effect.forkChild(timed(close))
    yield* Effect.forEach(running, (client) => Fiber.join(client.fiber))
    const { millis } = yield* Fiber.join(closer)
    yield* eventually(
      () => running.every((client) => client.connections.ended.length === client.connections.opened),
      "every connection closed"
    )
    const errors = running.flatMap((client) => client.errors)
    const ends = running.flatMap((client) => client.connections.ended)
    const resets = errors.length + ends.filter((code) => code !== "UND_ERR_INFO").length
    const answers = running.flatMap((client) => client.answers)
    const afterClose = running.map((client) => client.answers.filter((answer) => answer.afterClose).length)
    const draining = answers.filter((answer) => answer.draining).length
    console.log(
      `${clients} undici client(s) over ${secure ? "HTTPS" : "HTTP"} through the drain: ${answers.length} responses, ` +
        `${afterClose.join("/")} received after the close began, ${draining} made during the drain, ` +
        `${resets} resets, drain ${millis} ms`
    )
    assert.deepStrictEqual(errors, [])
    for (const client of running) {
      assert.strictEqual(client.connections.opened, 1, "one connection per client")
      assert.deepStrictEqual(client.connections.ended, ["UND_ERR_INFO"], "closed after Connection: close, no reset")
      assert.isTrue(client.answers.every((answer) => answer.status === 200 && answer.length === body))
      assert.strictEqual(client.answers.at(-1)?.connection, "close")
      assert.isTrue(client.answers.slice(0, -1).every((answer) => answer.connection !== "close"))
      assert.isAtLeast(client.answers.filter((answer) => answer.afterClose).length, 1)
      // A response made once the drain had begun says so.
      assert.isTrue(client.answers.every((answer) => !answer.draining || answer.connection === "close"))
    }
    assert.strictEqual(resets, 0)
    assert.isBelow(millis, 2000)
    const [drain] = logs.drains()
    assert.strictEqual(drain?.level, "Info")
    assert.include(drain?.annotations, { connections: clients, finished: clients, forced: 0, cut: 0 })
  }).pipe(Effect.provide(logs.layer))
}

/** A keep-alive connection of raw HTTP/1.1 requests: what it sent, and the ids of the responses that arrived. */
const rawConnection = (port: number, tls: { readonly cert: Buffer } | undefined) =>
  Effect.acquireRelease(
    Effect.callback<Net.Socket, Error>((resume) => {
      const socket: Net.Socket = tls
        ? Tls.connect({ port, host: "127.0.0.1", ca: tls.cert, servername: "localhost" }, () =>
            resume(Effect.succeed(socket))
          )
        : // Half-open: a request can still go out after the server's FIN arrives, as one already on the wire then.
          Net.connect({ port, host: "127.0.0.1", allowHalfOpen: true }, () => resume(Effect.succeed(socket)))
      socket.once("error", (error) => resume(Effect.fail(error)))
    }),
    (socket) => Effect.sync(() => socket.destroy())
  ).pipe(
    Effect.map((socket) => {
      let received = ""
      let serverDone = false
      const waiters = new Set<() => void>()
      const wake = () => {
        for (const waiter of waiters) waiter()
      }
      socket.on("data", (chunk: Buffer) => {
        received += chunk.toString()
        wake()
      })
      socket.on("error", () => {})
      // The server's side is done: an end (a half-open client keeps its own side) or a close.
      const ended = () => {
        serverDone = true
        wake()
      }
      socket.on("end", ended)
      socket.on("close", ended)
      const answered = () => [...received.matchAll(/id=(\w+);/g)].map((match) => match[1]!)
      const until = (done: () => boolean, what: string) =>
        Effect.callback<void>((resume) => {
          const waiter = () => {
            if (!done()) return
            waiters.delete(waiter)
            resume(Effect.void)
          }
          waiters.add(waiter)
          waiter()
          return Effect.sync(() => waiters.delete(waiter))
        }).pipe(
          Effect.timeoutOrElse({ duration: "10 seconds", orElse: () => Effect.die(new Error(`timed out: ${what}`)) })
        )
      return {
        /** Sends a request, unless the connection has already ended on this side; says whether it did. */
        send: (id: string, path = "/work"): boolean => {
          if (socket.writableEnded || socket.destroyed) return false
          socket.write(`GET ${path}?id=${id} HTTP/1.1\r\nhost: localhost\r\n\r\n`)
          return true
        },
        answered,
        answer: (id: string) => until(() => answered().includes(id), `the answer to ${id}`),
        closed: until(() => serverDone, "the server to close the connection")
      }
    })
  )

/**
 * Races the drain as a client that sends its next request just as the drain begins: `count` keep-alive
 * connections, quiet from about 1000 ms down to 0 ms when it begins (the idle grace being 250 ms), each sends a
 * request at that moment. On the server, the ids whose handler ran; on the clients, the ids answered: they match,
 * and every other request was never run.
 */
const raceTheDrain = (count: number, tls?: { readonly key: Buffer; readonly cert: Buffer }) => {
  const logs = captureLogs()
  return Effect.gen(function* () {
    const ran = new Set<string>()
    const began = Deferred.makeUnsafe<void>()
    const app = Layer.mergeAll(
      HttpRouter.add("GET", "/work", (request) =>
        Effect.sync(() => {
          const id = new URL(request.url, "http://test").searchParams.get("id") ?? ""
          ran.add(id)
          return HttpServerResponse.text(`id=${id};`)
        })
      ),
      // A request in flight that learns of the drain as a handler does, and tells the test.
      HttpRouter.add(
        "GET",
        "/watch",
        Effect.as(Effect.andThen(Drain.draining, Deferred.succeed(began, undefined)), HttpServerResponse.text(""))
      )
    )
    const { ports, close } = yield* start(serve(app, "127.0.0.1:0", tls ? { https: tls } : {}))
    const port = ports.unknown!
    const connections = yield* Effect.forEach(Array.from({ length: count }), () => rawConnection(port, tls))
    // First requests a step apart: when the drain begins, the first connection has been quiet longest.
    const step = Duration.millis(Math.round(1000 / count))
    for (const [i, connection] of connections.entries()) {
      connection.send(`a${i}`)
      yield* connection.answer(`a${i}`)
      yield* Effect.sleep(step)
    }
    const watcher = yield* rawConnection(port, tls)
    watcher.send("watch", "/watch")
    const watching = yield* Effect.forkChild(
      Effect.gen(function* () {
        yield* Deferred.await(began)
        return connections.flatMap((connection, i) => (connection.send(`b${i}`) ? [`b${i}`] : []))
      })
    )
    const closing = yield* Effect.forkChild(close)
    const sent = yield* Fiber.join(watching)
    yield* Fiber.join(closing)
    yield* Effect.forEach(connections, (connection) => connection.closed)

    const answered = connections.flatMap((connection) => connection.answered()).filter((id) => id.startsWith("b"))
    const run = sent.filter((id) => ran.has(id))
    const [drain] = logs.drains()
    const refusals = Number(drain?.annotations.refused)
    console.log(
      `${count} connections over ${tls ? "HTTPS" : "HTTP"} racing the drain: ${sent.length} sent, ` +
        `${answered.length} answered, ${sent.length - run.length} never run (${refusals} read and refused)`
    )
    // Every first request was answered; of the second, exactly those that ran were answered.
    for (const [i, connection] of connections.entries()) assert.include(connection.answered(), `a${i}`)
    assert.deepStrictEqual(answered.toSorted(), run.toSorted())
    assert.strictEqual([...ran].filter((id) => id.startsWith("b") && !sent.includes(id)).length, 0)
    // The race was run: requests read on connections that were being closed were refused, not run.
    assert.isAtLeast(refusals, 1)
    assert.isAtMost(refusals, sent.length - run.length)
  }).pipe(Effect.scoped, Effect.provide(logs.layer))
}

// -----------------------------------------------------------------------------
// Tests
// -----------------------------------------------------------------------------

describe("Server", () => {
  it.live("layerConfig: the address and the options read through Config; a bad value fails with its error", () =>
    Effect.gen(function* () {
      const app = HttpRouter.serve(HttpRouter.add("GET", "/", HttpServerResponse.text("configured")), {
        disableLogger: true,
        disableListenLog: true
      }).pipe(Layer.provide(Server.layerConfig(Config.String("HTTP_ADDRESS"), { name: Config.String("HTTP_NAME") })))
      const env = (values: Record<string, string>) => ConfigProvider.layer(ConfigProvider.fromUnknown(values))
      const { ports } = yield* start(
        app.pipe(Layer.provide(env({ HTTP_ADDRESS: "127.0.0.1:0", HTTP_NAME: "configured" })))
      )
      assert.strictEqual((yield* get(`http://127.0.0.1:${ports.configured}/`)).body, "configured")
      const bad = yield* Effect.flip(start(app.pipe(Layer.provide(env({ HTTP_ADDRESS: "nowhere", HTTP_NAME: "x" })))))
      assert.strictEqual(bad._tag, "ListenersError")
      const missing = yield* Effect.flip(start(app.pipe(Layer.provide(env({ HTTP_NAME: "x" })))))
      assert.strictEqual(missing._tag, "ConfigError")
    }).pipe(Effect.scoped)
  )

  it.live(
    "a slow request in flight completes with its full body and Connection: close; new connections are refused",
    () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const started = Deferred.makeUnsafe<void>()
        const { ports, close } = yield* start(serve(routes(started), { address: "127.0.0.1:0", name: "web" }))
        const slow = yield* Effect.forkChild(get(`http://127.0.0.1:${ports.web}/slow?ms=2000`))
        yield* Deferred.await(started)
        const closing = yield* Effect.forkChild(timed(close))
        yield* refused(ports.web!)
        assert.isUndefined(slow.pollUnsafe(), "refused while the slow request is still running")
        const reply = yield* Fiber.join(slow)
        assert.strictEqual(reply.status, 200)
        assert.strictEqual(reply.body.length, body)
        assert.strictEqual(reply.headers.connection, "close")
        const { millis } = yield* Fiber.join(closing)
        assert.isBelow(millis, 5000)
        yield* refused(ports.web!)
        const [drain] = logs.drains()
        assert.strictEqual(drain?.level, "Info")
        assert.include(drain?.annotations, { requests: 1, completed: 1, cut: 0, forced: 0, finished: 1 })
      }).pipe(Effect.provide(logs.layer))
    }
  )

  it.live("keep-alive clients sending through the drain get every response, the last with Connection: close", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const { ports, close } = yield* start(serve(routes(), { address: "127.0.0.1:0", name: "web" }))
      // Eight clients, each on one kept-alive connection, pausing 0 to 70 ms between requests.
      const clients = yield* Effect.forEach(
        Array.from({ length: 8 }, (_, i) => i * 10),
        (pause) =>
          Effect.gen(function* () {
            const agent = yield* keepAliveAgent()
            const replies: Array<Reply> = []
            const errors: Array<Error> = []
            // Request after request, until the server says it closes the connection (or a request fails).
            const loop = Effect.gen(function* () {
              while (true) {
                const reply = yield* get(`http://127.0.0.1:${ports.web}/slow?ms=0`, { agent })
                replies.push(reply)
                if (reply.headers.connection === "close") return
                yield* Effect.sleep(Duration.millis(pause))
              }
            }).pipe(Effect.catch((error) => Effect.sync(() => errors.push(error))))
            return { replies, errors, fiber: yield* Effect.forkChild(loop) }
          })
      )
      yield* eventually(() => clients.every((client) => client.replies.length >= 2), "two responses each")
      yield* close
      yield* Effect.forEach(clients, (client) => Fiber.join(client.fiber))
      const errors = clients.flatMap((client) => client.errors)
      const replies = clients.flatMap((client) => client.replies)
      console.log(`keep-alive through the drain: ${replies.length} responses, ${errors.length} failed requests`)
      assert.deepStrictEqual(errors, [])
      for (const client of clients) {
        const last = client.replies.at(-1)!
        assert.strictEqual(last.headers.connection, "close")
        assert.isTrue(client.replies.every((reply) => reply.status === 200 && reply.body.length === body))
        assert.strictEqual(new Set(client.replies.map((reply) => reply.localPort)).size, 1, "one connection")
        assert.isFalse(yield* closed(last.socket), "closed without a reset")
      }
      const [drain] = logs.drains()
      assert.include(drain?.annotations, { connections: 8, finished: 8, forced: 0, cut: 0 })
    }).pipe(Effect.provide(logs.layer))
  })

  it.live("an undici client sending request after request on one connection through the drain is never reset", () =>
    throughTheDrain(1, { ms: 3 })
  )

  it.live("eight undici clients sending through the drain: every response, no reset", () =>
    throughTheDrain(8, { ms: 3 })
  )

  it.live("eight undici clients sending through the drain over HTTPS: every response, no reset", () =>
    Effect.flatMap(certificate, (tls) => throughTheDrain(8, { ms: 3, https: tls }))
  )

  it.live("an HTTP/1 server from createServer drains the same way: every response, no reset", () =>
    throughTheDrain(4, { ms: 3, server: { createServer: () => Http.createServer() } })
  )

  it.live("a ServerResponse class of the user's answers every request, and drains the same way", () => {
    let made = 0
    class Counted extends Http.ServerResponse {
      constructor(...args: ConstructorParameters<typeof Http.ServerResponse>) {
        super(...args)
        made++
      }
    }
    return Effect.gen(function* () {
      yield* throughTheDrain(4, { ms: 3, server: { http: { ServerResponse: Counted as typeof Http.ServerResponse } } })
      // Three responses each at least before the drain began.
      assert.isAtLeast(made, 12)
    })
  })

  it.live("a request sent as the drain closes its quiet connection is either answered or never run", () =>
    raceTheDrain(40)
  )

  it.live("the same over HTTPS", () => Effect.flatMap(certificate, (tls) => raceTheDrain(40, tls)))

  it.live("a forced drain ends at once, as at its deadline", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const started = Deferred.makeUnsafe<void>()
      const forced = Deferred.makeUnsafe<void>()
      const { ports, close } = yield* start(
        serve(routes(started), "127.0.0.1:0").pipe(
          Layer.provide(Layer.succeed(DrainInternal.Forced)(Deferred.await(forced)))
        )
      )
      const stuck = yield* Effect.forkChild(Effect.result(get(`http://127.0.0.1:${ports.unknown}/never`)))
      yield* Deferred.await(started)
      const closing = yield* Effect.forkChild(close)
      yield* Deferred.succeed(forced, undefined)
      yield* Fiber.join(closing)
      assert.isTrue(Result.isFailure(yield* Fiber.join(stuck)), "the request in flight was cut")
      const [drain] = logs.drains()
      assert.include(drain?.annotations, { forced: 1, cut: 1 })
    }).pipe(Effect.provide(logs.layer))
  })

  it.effect("the deadline is an Effect timer: a TestClock cuts a handler that never finishes at drainTimeout", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const running = Deferred.makeUnsafe<void>()
      const began = Deferred.makeUnsafe<void>()
      const app = HttpRouter.add(
        "GET",
        "/work",
        Effect.gen(function* () {
          yield* Deferred.succeed(running, undefined)
          yield* Drain.draining
          yield* Deferred.succeed(began, undefined)
          return yield* Effect.never
        })
      )
      const { ports, close } = yield* start(serve(app, "127.0.0.1:0", { drainTimeout: "30 seconds" }))
      const client = yield* rawConnection(ports.unknown!, undefined)
      client.send("stuck")
      yield* Deferred.await(running)
      const closing = yield* Effect.forkChild(close)
      yield* Deferred.await(began)
      yield* TestClock.adjust("29 seconds")
      assert.isUndefined(closing.pollUnsafe(), "still draining before the deadline")
      assert.deepStrictEqual(logs.drains(), [])
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(closing)
      yield* client.closed
      const [drain] = logs.drains()
      assert.strictEqual(drain?.level, "Warn")
      assert.include(drain?.annotations, { connections: 1, forced: 1, requests: 1, cut: 1 })
    }).pipe(Effect.scoped, Effect.provide(logs.layer))
  })

  it.live(
    "HTTPS servers share the TicketKeyring of their context; ticketKeys given to a server are used as given",
    () =>
      Effect.gen(function* () {
        const tls = yield* certificate
        const keyring = yield* Tickets.makeKeyring({ rotateEvery: Duration.hours(24) })
        const { key } = yield* keyring.current
        const app = HttpRouter.add("GET", "/", HttpServerResponse.text("ok"))
        const { ports } = yield* start(
          Layer.mergeAll(
            serve(app, { name: "shared", address: "127.0.0.1:0" }, { https: tls }),
            serve(app, { name: "h2", address: "127.0.0.1:0" }, { https: tls, http2: true }),
            serve(app, { name: "given", address: "127.0.0.1:0" }, { https: { ...tls, ticketKeys: key } }),
            serve(
              app,
              { name: "own", address: "127.0.0.1:0" },
              { https: { ...tls, ticketKeys: Crypto.randomBytes(48) } }
            )
          ).pipe(Layer.provide(Layer.succeed(Server.TicketKeyring)(keyring)))
        )
        const first = yield* tlsConnect(ports.shared!, tls.cert, "http/1.1")
        assert.isDefined(first.ticket)
        assert.isTrue((yield* tlsConnect(ports.given!, tls.cert, "http/1.1", first.ticket)).reused)
        assert.isFalse((yield* tlsConnect(ports.own!, tls.cert, "http/1.1", first.ticket)).reused)
        // The HTTP/2 server shares the key, over HTTP/1.1 or HTTP/2.
        const h1 = yield* tlsConnect(ports.h2!, tls.cert, "http/1.1", first.ticket)
        assert.deepStrictEqual([h1.reused, h1.body], [true, "ok"])
        const h2 = yield* tlsConnect(ports.h2!, tls.cert, "h2")
        assert.isTrue((yield* tlsConnect(ports.shared!, tls.cert, "http/1.1", h2.ticket)).reused)
      }).pipe(Effect.scoped)
  )

  it.live("a keep-alive connection left quiet is closed within the idle grace", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const { ports, close } = yield* start(serve(routes(), "127.0.0.1:0", { idleGrace: "200 millis" }))
      const agent = yield* keepAliveAgent()
      // Taken before the request goes out, so before the server's last activity on the connection, however late.
      const sent = performance.now()
      const reply = yield* get(`http://127.0.0.1:${ports.unknown}/fast`, { agent })
      assert.notStrictEqual(reply.headers.connection, "close")
      const { millis } = yield* timed(close)
      assert.isFalse(yield* closed(reply.socket), "a clean close")
      // Quiet since its response: closed once the grace has run from that response (not at once when the drain
      // began), and not at the deadline (30 seconds).
      assert.isAtLeast(performance.now() - sent, 200, "quiet for the grace before it was closed")
      assert.isBelow(millis, 1000)
      assert.include(logs.drains()[0]?.annotations, { connections: 1, finished: 1, forced: 0 })
    }).pipe(Effect.provide(logs.layer))
  })

  it.live(
    "a handler that never finishes is cut at the deadline (GRACE_DRAIN_TIMEOUT), and the scope still closes",
    () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const started = Deferred.makeUnsafe<void>()
        const config = ConfigProvider.layer(ConfigProvider.fromUnknown({ GRACE_DRAIN_TIMEOUT: "300 millis" }))
        const app = serve(routes(started), "127.0.0.1:0").pipe(Layer.provide(Drain.layerConfig), Layer.provide(config))
        const { ports, close } = yield* start(app)
        const never = yield* Effect.forkChild(Effect.flip(get(`http://127.0.0.1:${ports.unknown}/never`)))
        yield* Deferred.await(started)
        const { millis } = yield* timed(close)
        assert.isAtLeast(millis, 250)
        assert.isBelow(millis, 3000)
        const error = yield* Fiber.join(never)
        assert.match(error.message, /socket hang up|ECONNRESET/)
        const [drain] = logs.drains()
        assert.strictEqual(drain?.level, "Warn")
        assert.include(drain?.annotations, { requests: 1, completed: 0, cut: 1, forced: 1 })
      }).pipe(Effect.provide(logs.layer))
    }
  )

  it.live("requests whose client goes away, pipelined ones too, do not hold the drain to its deadline", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const started = Deferred.makeUnsafe<void>()
      const { ports, close } = yield* start(serve(routes(started), "127.0.0.1:0", { drainTimeout: "20 seconds" }))
      const socket = Net.connect(ports.unknown!, "127.0.0.1")
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
      const request = "GET /never HTTP/1.1\r\nhost: test\r\n\r\n"
      socket.write(request + request)
      yield* Deferred.await(started)
      const closing = yield* Effect.forkChild(timed(close))
      // Once the drain has begun (the port refuses), the client gives up on both requests.
      yield* refused(ports.unknown!)
      assert.lengthOf(logs.drains(), 0, "the drain waits for the requests")
      socket.destroy()
      const { millis } = yield* Fiber.join(closing)
      assert.isBelow(millis, 5000)
      const [drain] = logs.drains()
      assert.strictEqual(drain?.level, "Info")
      assert.include(drain?.annotations, { connections: 1, finished: 1, forced: 0, requests: 2, cut: 0 })
    }).pipe(Effect.provide(logs.layer))
  })

  it.live("drainTimeout wins over GRACE_DRAIN_TIMEOUT: a handler that never finishes is cut at 300 ms", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const started = Deferred.makeUnsafe<void>()
      const config = ConfigProvider.layer(ConfigProvider.fromUnknown({ GRACE_DRAIN_TIMEOUT: "30 seconds" }))
      const app = serve(routes(started), "127.0.0.1:0", { drainTimeout: "300 millis" }).pipe(
        Layer.provide(Drain.layerConfig),
        Layer.provide(config)
      )
      const { ports, close } = yield* start(app)
      const agent = yield* keepAliveAgent()
      const never = yield* Effect.forkChild(Effect.flip(get(`http://127.0.0.1:${ports.unknown}/never`, { agent })))
      yield* Deferred.await(started)
      const { millis } = yield* timed(close)
      assert.isAtLeast(millis, 250)
      assert.isBelow(millis, 3000)
      assert.match((yield* Fiber.join(never)).message, /socket hang up|ECONNRESET/)
      assert.strictEqual(logs.drains()[0]?.level, "Warn")
      assert.include(logs.drains()[0]?.annotations, { connections: 1, finished: 0, forced: 1, cut: 1 })
    }).pipe(Effect.provide(logs.layer))
  })

  it.live("HTTPS on an inherited fd, with a certificate made now; a stalled handshake does not hold the drain", () =>
    Effect.gen(function* () {
      const tls = yield* certificate
      const passed = yield* passedFd("secure")
      const started = Deferred.makeUnsafe<void>()
      // Asked for by its address: the inherited socket is adopted, not a new one bound.
      const { ports, active, close } = yield* start(
        serve(routes(started), `127.0.0.1:${portOf(passed.address)}`, { https: tls, drainTimeout: "10 seconds" }),
        [passed]
      )
      assert.strictEqual(ports.secure, portOf(passed.address))
      assert.deepStrictEqual(
        active.map((listener) => [listener.fd, listener.inherited]),
        [[passed.fd, true]]
      )
      const agent = yield* keepAliveAgent(true, { ca: tls.cert })
      const hello = yield* get(`https://localhost:${ports.secure}/fast`, { agent })
      assert.strictEqual(hello.body, "fast")
      // A TCP connection that never says hello, and a kept-alive TLS connection gone quiet.
      const stalled = Net.connect(ports.secure!, "127.0.0.1")
      yield* Effect.addFinalizer(() => Effect.sync(() => stalled.destroy()))
      yield* Effect.callback<void>((resume) => void stalled.once("connect", () => resume(Effect.void)))
      const slow = yield* Effect.forkChild(get(`https://localhost:${ports.secure}/slow?ms=500`, { ca: tls.cert }))
      yield* Deferred.await(started)
      const { millis } = yield* timed(close)
      const reply = yield* Fiber.join(slow)
      assert.strictEqual(reply.body.length, body)
      assert.strictEqual(reply.headers.connection, "close")
      assert.isFalse(yield* closed(hello.socket))
      yield* closed(stalled)
      assert.isBelow(millis, 3000, "nothing waited for the deadline")
    })
  )

  it.live("public, admin and HTTPS servers in one layer graph drain together", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const tls = yield* certificate
      const started = [Deferred.makeUnsafe<void>(), Deferred.makeUnsafe<void>(), Deferred.makeUnsafe<void>()] as const
      const app = Layer.mergeAll(
        serve(routes(started[0]), { name: "public", address: "127.0.0.1:0" }),
        serve(routes(started[1]), { name: "admin", address: "127.0.0.1:0" }),
        serve(routes(started[2]), { name: "secure", address: "127.0.0.1:0" }, { https: tls })
      )
      const { ports, close } = yield* start(app)
      const urls = [
        `http://127.0.0.1:${ports.public}`,
        `http://127.0.0.1:${ports.admin}`,
        `https://localhost:${ports.secure}`
      ]
      const slow = yield* Effect.forEach(urls, (url) => Effect.forkChild(get(`${url}/slow?ms=700`, { ca: tls.cert })))
      yield* Effect.forEach(started, Deferred.await)
      const closing = yield* Effect.forkChild(close)
      // Every server stopped accepting at once, while every slow request still runs: they drain together.
      yield* Effect.forEach([ports.public!, ports.admin!, ports.secure!], refused)
      assert.isTrue(
        slow.every((fiber) => fiber.pollUnsafe() === undefined),
        "refused while the slow requests are running"
      )
      for (const fiber of slow) {
        const reply = yield* Fiber.join(fiber)
        assert.strictEqual(reply.body.length, body)
        assert.strictEqual(reply.headers.connection, "close")
      }
      yield* Fiber.join(closing)
      yield* Effect.forEach([ports.public!, ports.admin!, ports.secure!], refused)
      const servers = logs.drains().map((log) => log.annotations.server)
      assert.sameMembers(servers, [
        `127.0.0.1:${ports.public}`,
        `127.0.0.1:${ports.admin}`,
        `127.0.0.1:${ports.secure}`
      ])
      for (const drain of logs.drains()) {
        assert.include(drain.annotations, { requests: 1, completed: 1, cut: 0, forced: 0 })
      }
    }).pipe(Effect.provide(logs.layer))
  })

  it.live("a WebSocket gets a 1001 close when the drain begins", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const { ports, close } = yield* start(serve(echo, "127.0.0.1:0"))
      const ws = new WebSocket(`ws://127.0.0.1:${ports.unknown}/ws`)
      yield* Effect.addFinalizer(() => Effect.sync(() => ws.terminate()))
      const closeEvent = Deferred.makeUnsafe<{ code: number; reason: string }>()
      ws.on("close", (code, reason) => Deferred.doneUnsafe(closeEvent, Effect.succeed({ code, reason: `${reason}` })))
      const echoed = yield* Effect.callback<string>((resume) => {
        ws.on("open", () => ws.send("ping"))
        ws.once("message", (data) => resume(Effect.succeed(`${data}`)))
      })
      assert.strictEqual(echoed, "ping")
      const { millis } = yield* timed(close)
      const event = yield* Deferred.await(closeEvent)
      assert.strictEqual(event.code, 1001)
      assert.isBelow(millis, 1000)
      assert.include(logs.drains()[0]?.annotations, { toldToGoAway: 1, forced: 0 })
    }).pipe(Effect.provide(logs.layer))
  })

  it.live("a streaming response learns of the drain and ends; its kept-alive connection is closed after it", () =>
    Effect.gen(function* () {
      const sent = Deferred.makeUnsafe<void>()
      const events = HttpRouter.add(
        "GET",
        "/events",
        HttpServerResponse.stream(
          Stream.concat(
            Stream.make("hello\n"),
            // Pulled once the first chunk is written, so the headers are out before the drain.
            Stream.fromEffect(Effect.andThen(Deferred.succeed(sent, undefined), Effect.as(Drain.draining, "goodbye\n")))
          ).pipe(Stream.encodeText)
        )
      )
      const { ports, close } = yield* start(serve(events, "127.0.0.1:0", { drainTimeout: "10 seconds" }))
      const agent = yield* keepAliveAgent()
      const reply = yield* Effect.forkChild(get(`http://127.0.0.1:${ports.unknown}/events`, { agent }))
      yield* Deferred.await(sent)
      const { millis } = yield* timed(close)
      const { body: received, headers, socket } = yield* Fiber.join(reply)
      assert.strictEqual(received, "hello\ngoodbye\n")
      assert.notStrictEqual(headers.connection, "close", "the headers went out before the drain")
      assert.isFalse(yield* closed(socket), "closed cleanly once quiet")
      assert.isBelow(millis, 1000)
    })
  )

  it.live("HTTP/2 sessions get a GOAWAY, and their streams in flight complete", () =>
    Effect.gen(function* () {
      const started = Deferred.makeUnsafe<void>()
      const { ports, close } = yield* start(
        serve(routes(started), "127.0.0.1:0", { createServer: () => Http2.createServer() })
      )
      const session = Http2.connect(`http://127.0.0.1:${ports.unknown}`)
      yield* Effect.addFinalizer(() => Effect.sync(() => session.destroy()))
      const goaway = Deferred.makeUnsafe<void>()
      session.on("goaway", () => Deferred.doneUnsafe(goaway, Effect.void))
      const slow = yield* Effect.forkChild(
        Effect.callback<string, Error>((resume) => {
          const stream = session.request({ ":path": "/slow?ms=300" })
          let data = ""
          stream.on("data", (chunk: Buffer) => (data += chunk.toString()))
          stream.on("end", () => resume(Effect.succeed(data)))
          stream.on("error", (error) => resume(Effect.fail(error)))
        })
      )
      yield* Deferred.await(started)
      yield* close
      yield* Deferred.await(goaway)
      assert.strictEqual((yield* Fiber.join(slow)).length, body)
    })
  )

  it.live(
    "https with http2: HTTP/2 by ALPN, HTTP/1.1 (and WebSockets) otherwise; the drain: GOAWAY, Connection: close, 1001",
    () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const tls = yield* certificate
        // `/slow?as=h1` and `/slow?as=h2` each tell the test when they have begun.
        const begun = { h1: Deferred.makeUnsafe<void>(), h2: Deferred.makeUnsafe<void>() }
        const app = Layer.mergeAll(
          echo,
          HttpRouter.add("GET", "/", HttpServerResponse.text("ok")),
          HttpRouter.add("GET", "/fast", HttpServerResponse.text("fast")),
          HttpRouter.add("GET", "/slow", (request) =>
            Effect.gen(function* () {
              const as = new URL(request.url, "http://test").searchParams.get("as") === "h1" ? "h1" : "h2"
              yield* Deferred.succeed(begun[as], undefined)
              yield* Effect.sleep("300 millis")
              return HttpServerResponse.text("x".repeat(body))
            })
          )
        )
        const { ports, close } = yield* start(
          serve(app, { name: "secure", address: "127.0.0.1:0" }, { https: tls, http2: true })
        )
        const origin = `https://localhost:${ports.secure}`
        const session = Http2.connect(origin, { ca: tls.cert })
        yield* Effect.addFinalizer(() => Effect.sync(() => session.destroy()))
        assert.deepStrictEqual(yield* h2Request(session, "/fast"), { status: 200, body: "fast" })
        assert.strictEqual(session.alpnProtocol, "h2")
        // A client that offers no ALPN, or only HTTP/1.1, is served HTTP/1.1.
        assert.strictEqual((yield* get(`${origin}/fast`, { ca: tls.cert })).body, "fast")
        assert.strictEqual((yield* tlsConnect(ports.secure!, tls.cert, "http/1.1")).body, "ok")
        if (curlPath !== undefined) {
          const version = (flag: string) =>
            curl([flag, "--insecure", "--output", "/dev/null", "--write-out", "%{http_version}", `${origin}/fast`])
          assert.strictEqual(yield* version("--http2"), "2")
          assert.strictEqual(yield* version("--http1.1"), "1.1")
        }

        // A WebSocket, over HTTP/1.1.
        const ws = new WebSocket(`wss://localhost:${ports.secure}/ws`, { ca: tls.cert })
        yield* Effect.addFinalizer(() => Effect.sync(() => ws.terminate()))
        const wsClosed = Deferred.makeUnsafe<number>()
        ws.on("close", (code) => Deferred.doneUnsafe(wsClosed, Effect.succeed(code)))
        const echoed = yield* Effect.callback<string>((resume) => {
          ws.on("open", () => ws.send("ping"))
          ws.once("message", (data) => resume(Effect.succeed(`${data}`)))
        })
        assert.strictEqual(echoed, "ping")

        const goaway = Deferred.makeUnsafe<void>()
        session.on("goaway", () => Deferred.doneUnsafe(goaway, Effect.void))
        const slowH2 = yield* Effect.forkChild(h2Request(session, "/slow?as=h2"))
        const slowH1 = yield* Effect.forkChild(get(`${origin}/slow?as=h1`, { ca: tls.cert }))
        yield* Effect.all([Deferred.await(begun.h1), Deferred.await(begun.h2)])
        const { millis } = yield* timed(close)
        yield* Deferred.await(goaway)
        assert.strictEqual((yield* Fiber.join(slowH2)).body.length, body)
        const h1 = yield* Fiber.join(slowH1)
        assert.deepStrictEqual([h1.body.length, h1.headers.connection], [body, "close"])
        assert.isBelow(millis, 3000)
        assert.strictEqual(yield* Deferred.await(wsClosed), 1001)
        assert.include(logs.drains()[0]?.annotations, { requests: 2, completed: 2, toldToGoAway: 2, forced: 0, cut: 0 })
      }).pipe(Effect.provide(logs.layer))
    }
  )

  it.live(
    "the shutdown delay: responses say Connection: close, HTTP/2 sessions get a GOAWAY, new connections are served",
    () =>
      Effect.gen(function* () {
        const closing = Deferred.makeUnsafe<void>()
        const delayed = Layer.provide(Layer.succeed(DrainInternal.Closing)(Deferred.await(closing)))
        const { ports } = yield* start(
          Layer.mergeAll(
            serve(routes(), { name: "h1", address: "127.0.0.1:0" }),
            serve(routes(), { name: "h2", address: "127.0.0.1:0" }, { createServer: () => Http2.createServer() })
          ).pipe(delayed)
        )
        const agent = yield* keepAliveAgent()
        const before = yield* get(`http://127.0.0.1:${ports.h1}/fast`, { agent })
        assert.notStrictEqual(before.headers.connection, "close")
        const session = Http2.connect(`http://127.0.0.1:${ports.h2}`)
        yield* Effect.addFinalizer(() => Effect.sync(() => session.destroy()))
        yield* Effect.callback<void>((resume) => void session.once("connect", () => resume(Effect.void)))
        const goaway = Deferred.makeUnsafe<void>()
        session.on("goaway", () => Deferred.doneUnsafe(goaway, Effect.void))

        yield* Deferred.succeed(closing, undefined)
        yield* Deferred.await(goaway)
        // The kept-alive connection's next response says close; a new connection is accepted and told the same.
        const next = yield* get(`http://127.0.0.1:${ports.h1}/fast`, { agent })
        assert.deepStrictEqual([next.status, next.headers.connection, next.localPort], [200, "close", before.localPort])
        const fresh = yield* get(`http://127.0.0.1:${ports.h1}/fast`)
        assert.deepStrictEqual([fresh.status, fresh.headers.connection], [200, "close"])
        const h2 = Http2.connect(`http://127.0.0.1:${ports.h2}`)
        yield* Effect.addFinalizer(() => Effect.sync(() => h2.destroy()))
        yield* Effect.callback<void>((resume) => void h2.once("goaway", () => resume(Effect.void)))
      })
  )

  it.live("a drain with nothing in flight completes fast, with or without a connection before", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const untouched = yield* start(serve(routes(), "127.0.0.1:0"))
      const { millis: untouchedMillis } = yield* timed(untouched.close)
      assert.isBelow(untouchedMillis, 1000)
      assert.include(logs.drains()[0]?.annotations, { connections: 0, requests: 0, forced: 0 })
      yield* refused(untouched.ports.unknown!)

      const { ports, close } = yield* start(serve(routes(), "127.0.0.1:0"))
      assert.strictEqual((yield* get(`http://127.0.0.1:${ports.unknown}/fast`)).body, "fast")
      const { millis } = yield* timed(close)
      assert.isBelow(millis, 1000)
      assert.include(logs.drains()[1]?.annotations, { forced: 0 })
    }).pipe(Effect.provide(logs.layer))
  })

  it.effect("options that contradict each other, or a key Node cannot load, are a typed ServerError", () =>
    Effect.gen(function* () {
      const made = (options: Server.Options) =>
        Effect.flip(Effect.scoped(Server.make("127.0.0.1:0", options))).pipe(Effect.provide(Listeners.layerFrom([])))
      const conflicting = yield* made({ https: {}, createServer: () => Http2.createServer() })
      assert.strictEqual(conflicting._tag, "ServerError")
      assert.strictEqual(conflicting.reason._tag, "InvalidOptions")
      const besideCreateServer = yield* made({ http2: true, createServer: () => Http2.createServer() })
      assert.match(besideCreateServer.message, /give the https, http and http2 options to createServer/)
      const cleartextHttp2 = yield* made({ http2: true })
      assert.match(cleartextHttp2.message, /http2 is served over TLS/)
      const http1Options = yield* made({ https: {}, http2: true, http: { keepAliveTimeout: 1000 } })
      assert.match(http1Options.message, /the http options are HTTP\/1\.1's/)
      assert.deepStrictEqual(
        [cleartextHttp2.reason._tag, http1Options.reason._tag],
        ["InvalidOptions", "InvalidOptions"]
      )
      const badKey = yield* made({ https: { key: "not a key", cert: "not a certificate" } })
      assert.strictEqual(badKey.reason._tag, "CreateFailed")
      assert.match(badKey.message, /cannot create the server for 127\.0\.0\.1:0: .*check the key and certificate/)
    })
  )

  it.effect("layerConfig reads GRACE_DRAIN_TIMEOUT and GRACE_IDLE_GRACE, in Effect's Duration syntax", () =>
    Effect.gen(function* () {
      const read = Effect.all([Effect.service(Drain.DrainTimeout), Effect.service(Drain.IdleGrace)])
      const [timeout, grace] = yield* read.pipe(
        Effect.provide(
          Drain.layerConfig.pipe(
            Layer.provide(
              ConfigProvider.layer(
                ConfigProvider.fromUnknown({ GRACE_DRAIN_TIMEOUT: "45 seconds", GRACE_IDLE_GRACE: "100 millis" })
              )
            )
          )
        )
      )
      assert.strictEqual(Duration.toMillis(timeout), 45_000)
      assert.strictEqual(Duration.toMillis(grace), 100)
      const [defaultTimeout, defaultGrace] = yield* read.pipe(
        Effect.provide(Drain.layerConfig.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({})))))
      )
      assert.strictEqual(Duration.toMillis(defaultTimeout), 30_000)
      assert.strictEqual(Duration.toMillis(defaultGrace), 250)
    })
  )

  it.effect(
    "a server's settings: its options first, then GRACE_DRAIN_TIMEOUT and GRACE_IDLE_GRACE, then defaults",
    () =>
      Effect.gen(function* () {
        const configured = (env: Record<string, string>) =>
          Effect.provide(Drain.layerConfig.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env)))))
        const millis = (settings: DrainInternal.Settings) => [
          Duration.toMillis(settings.timeout),
          Duration.toMillis(settings.idleGrace)
        ]
        const fromConfig = yield* DrainInternal.resolveSettings({}).pipe(
          configured({ GRACE_DRAIN_TIMEOUT: "2 seconds" })
        )
        assert.deepStrictEqual(millis(fromConfig), [2000, 250])
        const fromOptions = yield* DrainInternal.resolveSettings({ drainTimeout: "300 millis", idleGrace: 50 }).pipe(
          configured({ GRACE_DRAIN_TIMEOUT: "2 seconds", GRACE_IDLE_GRACE: "1 second" })
        )
        assert.deepStrictEqual(millis(fromOptions), [300, 50])
        assert.deepStrictEqual(millis(yield* DrainInternal.resolveSettings({})), [30_000, 250])
        const invalid = yield* Effect.flip(
          DrainInternal.resolveSettings({}).pipe(configured({ GRACE_DRAIN_TIMEOUT: "soon" }))
        )
        assert.strictEqual(invalid._tag, "ConfigError")
      })
  )
})

describe("TicketKeyring", () => {
  const day = Duration.hours(24)

  /** A stand-in server that records the keys it is given. */
  const recorder = () => {
    const keys: Array<Buffer> = []
    return { keys, server: { setTicketKeys: (key: Buffer) => void keys.push(key) } }
  }

  it.effect("encode and decode: one token that round-trips; anything malformed is undefined", () =>
    Effect.sync(() => {
      const key = { key: Crypto.randomBytes(48), createdAt: 1_764_590_400_123 }
      const text = Tickets.encode(key)
      assert.notMatch(text, /\s/)
      const decoded = Tickets.decode(text)
      assert.isTrue(decoded?.key.equals(key.key))
      assert.strictEqual(decoded?.createdAt, key.createdAt)
      const b64 = key.key.toString("base64url")
      const malformed = [
        "",
        `${text}\n`,
        ` ${text}`,
        text.slice(0, -1),
        `${text}A`,
        b64,
        `${key.createdAt}${b64}`,
        `-1.${b64}`,
        `1e12.${b64}`,
        `1.5.${b64}`,
        `.${b64}`,
        `${key.createdAt}.${Buffer.alloc(48, 0xff).toString("base64")}`,
        `${key.createdAt}.${Crypto.randomBytes(47).toString("base64url")}`,
        `${key.createdAt}.${Crypto.randomBytes(49).toString("base64url")}`,
        `${"9".repeat(16)}.${b64}`
      ]
      for (const token of malformed) assert.isUndefined(Tickets.decode(token), JSON.stringify(token))
    })
  )

  it.effect("a registered server's key changes when the key's age reaches rotateEvery, and not before", () =>
    Effect.gen(function* () {
      const keyring = yield* Tickets.makeKeyring({ rotateEvery: day })
      const first = yield* keyring.current
      const { keys, server } = recorder()
      const registration = yield* Scope.make()
      yield* keyring.register(server).pipe(Scope.provide(registration))
      assert.lengthOf(keys, 1)
      assert.isTrue(keys[0]!.equals(first.key))
      yield* TestClock.adjust(Duration.subtract(day, Duration.millis(1)))
      assert.lengthOf(keys, 1, "not before")
      assert.isTrue((yield* keyring.current).key.equals(first.key))
      yield* TestClock.adjust(Duration.millis(1))
      assert.lengthOf(keys, 2, "at the rotation time")
      const second = yield* keyring.current
      assert.isFalse(second.key.equals(first.key))
      assert.isTrue(keys[1]!.equals(second.key))
      assert.strictEqual(second.createdAt, first.createdAt + Duration.toMillis(day))
      yield* TestClock.adjust(day)
      assert.lengthOf(keys, 3, "and every period after")
      // Once the registration's scope is closed, the server is left alone.
      yield* Scope.close(registration, Exit.void)
      yield* TestClock.adjust(day)
      assert.lengthOf(keys, 3)
      assert.isFalse((yield* keyring.current).key.equals(keys[2]!), "the keyring rotates on")
    })
  )

  it.effect(
    "a key's age counts from its createdAt: a parent's key is replaced when it is due, not a period later",
    () =>
      Effect.gen(function* () {
        yield* TestClock.adjust(Duration.hours(100))
        const now = yield* Clock.currentTimeMillis
        const parent = { key: Crypto.randomBytes(48), createdAt: now - Duration.toMillis(Duration.hours(20)) }
        const keyring = yield* Tickets.makeKeyring({ initial: parent, rotateEvery: day })
        assert.deepStrictEqual(yield* keyring.current, parent)
        const { keys, server } = recorder()
        yield* keyring.register(server)
        yield* TestClock.adjust(Duration.subtract(Duration.hours(4), Duration.millis(1)))
        assert.lengthOf(keys, 1)
        yield* TestClock.adjust(Duration.millis(1))
        assert.lengthOf(keys, 2)
        assert.strictEqual((yield* keyring.current).createdAt, now + Duration.toMillis(Duration.hours(4)))

        // A key already due is never used; one made in the future (a clock that went back) ages from now.
        const overdue = { key: Crypto.randomBytes(48), createdAt: now - Duration.toMillis(day) }
        const replaced = yield* (yield* Tickets.makeKeyring({ initial: overdue, rotateEvery: day })).current
        assert.isFalse(replaced.key.equals(overdue.key))
        const future = { key: Crypto.randomBytes(48), createdAt: now + Duration.toMillis(Duration.hours(10)) }
        const ahead = yield* Tickets.makeKeyring({ initial: future, rotateEvery: day })
        assert.deepStrictEqual(yield* ahead.current, { key: future.key, createdAt: yield* Clock.currentTimeMillis })
      }).pipe(Effect.scoped)
  )

  it.effect("an infinite rotateEvery never rotates", () =>
    Effect.gen(function* () {
      const keyring = yield* Tickets.makeKeyring({ rotateEvery: Duration.infinity })
      const first = yield* keyring.current
      const { keys, server } = recorder()
      yield* keyring.register(server)
      yield* TestClock.adjust(Duration.days(1000))
      assert.lengthOf(keys, 1)
      assert.deepStrictEqual(yield* keyring.current, first)
    }).pipe(Effect.scoped)
  )

  it.effect("the default keyring rotates every 24 hours, on the timers of the servers registered with it", () =>
    Effect.gen(function* () {
      const keyring = yield* Server.TicketKeyring
      const { keys, server } = recorder()
      yield* keyring.register(server)
      const first = yield* keyring.current
      assert.isAtMost(first.createdAt, yield* Clock.currentTimeMillis)
      yield* TestClock.adjust(day)
      assert.lengthOf(keys, 2)
      assert.isFalse(keys[1]!.equals(first.key))
      assert.isTrue((yield* keyring.current).key.equals(keys[1]!))
    }).pipe(Effect.scoped)
  )

  it.effect("GRACE_TICKET_ROTATION: a positive duration, or off; 24 hours if unset; zero or nonsense is refused", () =>
    Effect.gen(function* () {
      const read = (env: Record<string, string>) =>
        Tickets.ticketRotation.parse(ConfigProvider.fromUnknown(env)).pipe(Effect.map(Duration.toMillis))
      assert.strictEqual(yield* read({}), 24 * 3_600_000)
      assert.strictEqual(yield* read({ GRACE_TICKET_ROTATION: "12 hours" }), 12 * 3_600_000)
      assert.strictEqual(yield* read({ GRACE_TICKET_ROTATION: " OFF " }), Infinity)
      assert.strictEqual(yield* read({ GRACE_TICKET_ROTATION: "Infinity" }), Infinity)
      assert.strictEqual(yield* read({ GRACE_TICKET_ROTATION: "" }), 24 * 3_600_000, "empty is unset")
      for (const value of ["0", "0 seconds", "-1 hours", "soon"]) {
        const error = yield* Effect.flip(read({ GRACE_TICKET_ROTATION: value }))
        assert.match(error.message, /GRACE_TICKET_ROTATION=.*"off"/, value)
      }
    })
  )

  it.effect("a TLS 1.3 session resumes until the rotation, and makes a full handshake after it", () =>
    Effect.gen(function* () {
      const tls = yield* certificate
      const keyring = yield* Tickets.makeKeyring({ rotateEvery: Duration.hours(1) })
      const app = HttpRouter.add("GET", "/", HttpServerResponse.text("ok"))
      const { ports } = yield* start(
        serve(app, { name: "secure", address: "127.0.0.1:0" }, { https: tls }).pipe(
          Layer.provide(Layer.succeed(Server.TicketKeyring)(keyring))
        )
      )
      const first = yield* tlsConnect(ports.secure!, tls.cert, "http/1.1")
      assert.isFalse(first.reused)
      assert.isTrue((yield* tlsConnect(ports.secure!, tls.cert, "http/1.1", first.ticket)).reused)
      yield* TestClock.adjust("59 minutes")
      assert.isTrue((yield* tlsConnect(ports.secure!, tls.cert, "http/1.1", first.ticket)).reused, "before")
      yield* TestClock.adjust("1 minute")
      const after = yield* tlsConnect(ports.secure!, tls.cert, "http/1.1", first.ticket)
      assert.deepStrictEqual([after.reused, after.body], [false, "ok"], "a full handshake after the rotation")
      assert.isTrue((yield* tlsConnect(ports.secure!, tls.cert, "http/1.1", after.ticket)).reused, "a new ticket")
    }).pipe(Effect.scoped)
  )
})
