import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as NetAddress from "effect/net/NetAddress"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import type * as Socket from "effect/socket/Socket"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as Listeners from "../src/Listeners.ts"
import * as Drain from "../src/Drain.ts"
import * as TcpServer from "../src/TcpServer.ts"
import { connectOptions, exchange } from "./support/net.ts"
import type { Target } from "./support/net.ts"
import { untilRefused } from "./support/http.ts"
import { tempDir } from "./support/fs.ts"

/** Drain reports logged by the server: level and annotations. */
const captureDrains = () => {
  const reports: Array<{ readonly level: string; readonly counts: Record<string, unknown> }> = []
  const logger = Logger.make(({ fiber, logLevel, message }) => {
    const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
    if (text.includes("drain finished")) {
      reports.push({ level: logLevel, counts: { ...fiber.getRef(References.CurrentLogAnnotations) } })
    }
  })
  return { reports, layer: Logger.layer([logger]) }
}

/** Serves `handler` on `spec` in a scope of its own (closed by `close`, or at the end); yields where it listens. */
const startServer = <E>(
  handler: (socket: Socket.Socket) => Effect.Effect<void, E>,
  options: { readonly spec?: string; readonly drainTimeout?: Duration.Input } = {}
) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(
      TcpServer.serve(handler).pipe(
        Layer.provide(TcpServer.layer(options.spec ?? "127.0.0.1:0", { drainTimeout: options.drainTimeout })),
        Layer.provideMerge(Listeners.layerFrom([]))
      ),
      scope
    )
    const [listener] = yield* Context.get(context, Listeners.Listeners).active
    const address = listener!.address
    const target: Target =
      address._tag === "UnixPathAddress" ? { path: address.path } : { port: (address as NetAddress.InetAddress).port }
    return { target, close: Scope.close(scope, Exit.void) }
  })

const text = (chunks: ReadonlyArray<Uint8Array | string>) =>
  chunks.map((chunk) => (typeof chunk === "string" ? chunk : Buffer.from(chunk).toString())).join("")

/** Reads one chunk (then completes `read`), waits `delay`, answers it in upper case, and ends. */
const slowUpper =
  (delay: Duration.Input, read = Deferred.makeUnsafe<void>()) =>
  (socket: Socket.Socket) =>
    Effect.scoped(
      Effect.gen(function* () {
        const reader = yield* socket.reader
        const writer = yield* socket.writer
        const chunks = yield* reader.pull
        yield* Deferred.succeed(read, undefined)
        yield* Effect.sleep(delay)
        yield* writer.write(text(chunks).toUpperCase())
      })
    )

/** Connects, bounded. */
const connected = (target: Target) =>
  Effect.callback<Net.Socket, Error>((resume) => {
    const socket = Net.connect(connectOptions(target), () => resume(Effect.succeed(socket)))
    socket.once("error", (error) => resume(Effect.fail(error)))
  }).pipe(
    Effect.timeoutOrElse({ duration: "5 seconds", orElse: () => Effect.fail(new Error("connect timed out")) }),
    Effect.tap((socket) => Effect.addFinalizer(() => Effect.sync(() => socket.destroy())))
  )

/** Everything received until the connection closes, and whether it closed with an error. */
const received = (socket: Net.Socket) =>
  Effect.callback<{ data: string; error: Error | undefined }>((resume) => {
    let data = ""
    let error: Error | undefined
    socket.on("data", (chunk) => (data += chunk.toString()))
    socket.on("error", (e) => (error = e))
    socket.on("close", () => resume(Effect.succeed({ data, error })))
  })

describe("TcpServer", () => {
  it.live("an exchange in flight when the scope closes completes; new connections are refused", () => {
    const drains = captureDrains()
    return Effect.gen(function* () {
      const read = Deferred.makeUnsafe<void>()
      const { target, close } = yield* startServer(slowUpper("400 millis", read), { drainTimeout: "10 seconds" })
      const client = yield* connected(target)
      const reply = yield* Effect.forkChild(received(client))
      client.write("hello\n")
      yield* Deferred.await(read)
      const closing = yield* Effect.forkChild(close)
      // Refused while the exchange is still in flight.
      yield* untilRefused(target)
      assert.isUndefined(reply.pollUnsafe())
      const result = yield* Fiber.join(reply)
      assert.strictEqual(result.data, "HELLO\n")
      assert.isUndefined(result.error)
      yield* Fiber.join(closing)
      assert.include((yield* Effect.flip(exchange(target))).message, "ECONNREFUSED")
      assert.deepStrictEqual(drains.reports.length, 1)
      assert.strictEqual(drains.reports[0]?.level, "Info")
      assert.include(drains.reports[0]?.counts, { connections: 1, finished: 1, forced: 0, requests: 1, completed: 1 })
    }).pipe(Effect.provide(drains.layer))
  })

  it.live("a handler that never ends is destroyed at the deadline, and the scope still closes", () => {
    const drains = captureDrains()
    return Effect.gen(function* () {
      const accepted = Deferred.makeUnsafe<void>()
      const { target, close } = yield* startServer(
        () => Effect.andThen(Deferred.succeed(accepted, undefined), Effect.never),
        { drainTimeout: "300 millis" }
      )
      const client = yield* connected(target)
      const ended = yield* Effect.forkChild(received(client))
      yield* Deferred.await(accepted)
      const started = Date.now()
      yield* close
      assert.isAtLeast(Date.now() - started, 250)
      yield* Fiber.join(ended)
      assert.strictEqual(drains.reports[0]?.level, "Warn")
      assert.include(drains.reports[0]?.counts, { connections: 1, forced: 1, cut: 1 })
    }).pipe(Effect.provide(drains.layer))
  })

  it.live("handlers learn that a drain began, and can say goodbye", () =>
    Effect.gen(function* () {
      const goodbye = (socket: Socket.Socket) =>
        Effect.scoped(
          Effect.gen(function* () {
            // effect's Socket opens the connection with its reader: the writer works once it is taken.
            yield* socket.reader
            const writer = yield* socket.writer
            yield* writer.write("hi\n")
            assert.isFalse(yield* Drain.isDraining)
            yield* Drain.draining
            yield* writer.write("bye\n")
          })
        )
      const { target, close } = yield* startServer(goodbye, { drainTimeout: "10 seconds" })
      const client = yield* connected(target)
      const result = yield* Effect.forkChild(received(client))
      yield* Effect.callback<void>((resume) => void client.once("data", () => resume(Effect.void)))
      const started = Date.now()
      yield* close
      assert.isBelow(Date.now() - started, 1000)
      assert.strictEqual((yield* Fiber.join(result)).data, "hi\nbye\n")
    })
  )

  it.live("on a unix socket: served, drained, and the path removed with its listener", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const path = Path.join(dir, "upper.sock")
      const { target, close } = yield* startServer(slowUpper("100 millis"), { spec: path })
      const client = yield* connected(target)
      const reply = yield* Effect.forkChild(received(client))
      client.write("unix\n")
      assert.strictEqual((yield* Fiber.join(reply)).data, "UNIX\n")
      yield* close
      assert.isFalse(Fs.existsSync(path))
    })
  )

  it.live("a drain with no connection completes at once", () =>
    Effect.gen(function* () {
      const { close } = yield* startServer(slowUpper(0))
      const started = Date.now()
      yield* close
      assert.isBelow(Date.now() - started, 1000)
    })
  )
})
