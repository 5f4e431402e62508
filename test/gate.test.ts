/**
 * The gate (internal/gate.ts) as a primary's worker uses it for the sockets its
 * primary lends it: a lent socket is accepted on for the registered server of
 * its address, each connection that server's own; taken back, paused or
 * unregistered, this process's copy is closed and the socket, still held by
 * its owner, keeps what arrives for whoever accepts next; a socket of an
 * address no server here serves is refused, its copy closed. Real sockets on
 * loopback.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as NetAddress from "effect/net/NetAddress"
import * as Result from "effect/Result"
import * as Scope from "effect/Scope"
import { closeSync, fstatSync } from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import * as Gate from "../src/internal/gate.ts"
import * as Sys from "../src/internal/sys.ts"
import { request } from "./support/http.ts"

/** A listening socket this test holds as a primary would, accepted on by no one here until lent. */
const owned = Effect.acquireRelease(
  Effect.sync(() => {
    const bound = Sys.bindListen(NetAddress.inetAddressUnsafe(NetAddress.ipFromStringUnsafe("127.0.0.1"), 0), 64)
    if (Result.isFailure(bound)) throw new Error(Sys.formatSysError(bound.failure))
    const local = Sys.localAddress(bound.success)
    const port = Result.isSuccess(local) && "port" in local.success ? local.success.port : 0
    return { fd: bound.success, port, address: `127.0.0.1:${port}` }
  }),
  ({ fd }) => Effect.sync(() => closeSync(fd))
)

/** A copy of the socket, as a worker receives one (SCM_RIGHTS gives the receiver an fd of its own). */
const copyOf = (fd: number): number => {
  const copy = Sys.dup(fd)
  if (Result.isFailure(copy)) throw new Error(Sys.formatSysError(copy.failure))
  return copy.success
}

const isOpen = (fd: number) => {
  try {
    return fstatSync(fd).isSocket()
  } catch {
    return false
  }
}

/** An HTTP server that listens nowhere of its own: it answers with its name and how its connection was made. */
const httpServer = (name: string) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      Http.createServer((incoming, response) =>
        response.end(`${name} halfOpen=${incoming.socket.allowHalfOpen} ${incoming.url}`)
      )
    ),
    (server) => Effect.sync(() => server.closeAllConnections())
  )

const paused: Array<string> = []

const registered = (gate: ReturnType<typeof Gate.make>, address: string, server: Net.Server) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const pausable: Gate.Pausable = {
      pause: Effect.sync(() => void paused.push(address)),
      resume: Effect.void,
      lentTo: { address, server }
    }
    yield* Scope.provide(gate.gate.register(pausable), scope)
    return scope
  })

describe("sockets lent to a worker", () => {
  it.live("accepted on for the server of their address; taken back, what arrives waits for the next loan", () =>
    Effect.gen(function* () {
      const socket = yield* owned
      const gate = Gate.make()
      yield* registered(gate, socket.address, yield* httpServer("web"))
      const url = (path: string) => `http://${socket.address}${path}`
      assert.isTrue(yield* gate.lend(1, copyOf(socket.fd)))
      const first = yield* request(url("/first"))
      assert.strictEqual(first.body, "web halfOpen=true /first", "the HTTP server's, as if it had accepted it")
      yield* gate.reclaim(1)
      // Nobody accepts now: a request connects (the socket's backlog takes it) and waits, unanswered.
      const waiting = yield* Effect.forkChild(request(url("/waiting")))
      yield* Effect.sleep("200 millis")
      assert.isUndefined(waiting.pollUnsafe(), "not answered while no one accepts")
      assert.isTrue(isOpen(socket.fd), "the owner's socket is open")
      assert.isTrue(yield* gate.lend(2, copyOf(socket.fd)))
      assert.strictEqual((yield* Fiber.join(waiting)).body, "web halfOpen=true /waiting", "lent again: answered")
      yield* gate.reclaim(2)
      yield* gate.reclaim(2)
    })
  )

  it.live("given back when their server pauses or stops serving; refused for an address no server here has", () =>
    Effect.gen(function* () {
      const socket = yield* owned
      const gate = Gate.make()
      const scope = yield* registered(gate, socket.address, yield* httpServer("web"))
      const copy = copyOf(socket.fd)
      assert.isTrue(yield* gate.lend(1, copy))
      yield* gate.pause
      assert.deepStrictEqual(paused, [socket.address], "the server's own pause runs too")
      const waiting = yield* Effect.forkChild(request(`http://${socket.address}/`))
      yield* Effect.sleep("200 millis")
      assert.isUndefined(waiting.pollUnsafe(), "paused: the lent socket is not accepted on")
      assert.isTrue(yield* gate.lend(2, copyOf(socket.fd)))
      assert.strictEqual((yield* Fiber.join(waiting)).status, 200)
      yield* Scope.close(scope, Exit.void)
      const after = yield* Effect.forkChild(request(`http://${socket.address}/`))
      yield* Effect.sleep("200 millis")
      assert.isUndefined(after.pollUnsafe(), "its server gone: the lent socket is not accepted on")
      const stray = copyOf(socket.fd)
      assert.isFalse(yield* gate.lend(3, stray), "no server of that address here")
      assert.isFalse(isOpen(stray), "its copy closed")
      yield* Fiber.interrupt(after)
    })
  )

  it("the options a connection takes from its server are net.Server's own fields (Node changes them: this fails)", () => {
    const http = Http.createServer({ keepAlive: true, keepAliveInitialDelay: 3000 })
    const fields = http as unknown as Record<string, unknown>
    assert.deepStrictEqual(
      [fields.allowHalfOpen, fields.noDelay, fields.pauseOnConnect, fields.keepAlive, fields.keepAliveInitialDelay],
      [true, true, false, true, 3],
      "net.Server's allowHalfOpen, noDelay, pauseOnConnect, keepAlive and keepAliveInitialDelay (seconds)"
    )
    const plain = Net.createServer() as unknown as Record<string, unknown>
    assert.deepStrictEqual([plain.allowHalfOpen, plain.noDelay], [false, false])
  })
})
