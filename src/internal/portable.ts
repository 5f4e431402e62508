/**
 * Listening without the native calls, for platforms that lack them (macOS,
 * or Linux without koffi): a socket is bound by Node's own `listen`, which
 * also accepts at once. So that a listener still answers nothing before its
 * server is served, the Node server that accepts for it holds each
 * connection until a server is served on it, then hands every connection to
 * that server as its own `connection` event (the documented way to give an
 * HTTP, HTTPS or HTTP/2 server a connection).
 *
 * Such a listener has no fd to hand on: restarts and inheritance need the
 * native calls, and are refused where they are not available.
 */
import { lstatSync, rmSync } from "node:fs"
import * as Net from "node:net"
import * as Effect from "effect/Effect"
import * as NetAddress from "effect/net/NetAddress"

/** What to bind: a TCP port on a host (every interface without one), or a unix path (`@name`: abstract). */
export type Target =
  | { readonly _tag: "Tcp"; readonly host: string | undefined; readonly port: number }
  | { readonly _tag: "Unix"; readonly path: string }

/** A failed bind, as Node reports it. */
export interface BindError {
  readonly code: string
  readonly syscall: string
}

const ignore = () => {}

/** The Node server that accepts for a listener, and the server it accepts for once one is served. */
export class Acceptor {
  private target: Net.Server | undefined = undefined
  private readonly held: Array<Net.Socket> = []
  readonly server: Net.Server
  readonly address: NetAddress.SocketAddress

  constructor(server: Net.Server) {
    this.server = server
    this.address = addressOf(server)
    server.on("connection", (socket: Net.Socket) => {
      if (this.target !== undefined) return void this.target.emit("connection", socket)
      // Held until a server is served: an error on it now has no one else to go to.
      socket.on("error", ignore)
      this.held.push(socket)
    })
  }

  /** Hands every connection, held or new, to `target`. */
  serve(target: Net.Server): void {
    this.target = target
    // An HTTP server sets up its request and header timeouts when it starts listening.
    target.emit("listening")
    for (const socket of this.held.splice(0)) {
      socket.off("error", ignore)
      if (!socket.destroyed) target.emit("connection", socket)
    }
  }

  /** Stops accepting; connections already handed on stay with their server. */
  stopAccepting(): void {
    if (this.server.listening) this.server.close()
  }

  /** Stops accepting, and closes connections still held (no server was ever served). */
  close(): void {
    this.stopAccepting()
    for (const socket of this.held.splice(0)) socket.destroy()
  }
}

const addressOf = (server: Net.Server): NetAddress.SocketAddress => {
  const info = server.address()
  if (typeof info === "string") return NetAddress.unixPathAddress(info.startsWith("\0") ? `@${info.slice(1)}` : info)
  if (info === null) throw new Error("effect-grace: a listening server has no address")
  return NetAddress.inetAddressUnsafe(NetAddress.ipFromStringUnsafe(info.address), info.port)
}

const listenOnce = (target: Target, backlog: number): Effect.Effect<Net.Server, BindError> =>
  Effect.callback<Net.Server, BindError>((resume) => {
    const server = Net.createServer()
    const onError = (error: NodeJS.ErrnoException) => {
      server.off("listening", onListening)
      resume(Effect.fail({ code: error.code ?? "EINVAL", syscall: error.syscall ?? "listen" }))
    }
    const onListening = () => {
      server.off("error", onError)
      resume(Effect.succeed(server))
    }
    server.once("error", onError)
    server.once("listening", onListening)
    if (target._tag === "Unix") {
      server.listen({ path: target.path.startsWith("@") ? `\0${target.path.slice(1)}` : target.path, backlog })
    } else {
      server.listen({ port: target.port, backlog, ...(target.host !== undefined ? { host: target.host } : {}) })
    }
  })

// Whether a unix socket file is left by a process that is gone: nothing accepts on it.
const isStale = (path: string): Effect.Effect<boolean> =>
  Effect.callback<boolean>((resume) => {
    try {
      if (!lstatSync(path).isSocket()) return resume(Effect.succeed(false))
    } catch {
      return resume(Effect.succeed(false))
    }
    const probe = Net.connect({ path })
    probe.once("connect", () => {
      probe.destroy()
      resume(Effect.succeed(false))
    })
    probe.once("error", (error: NodeJS.ErrnoException) => resume(Effect.succeed(error.code === "ECONNREFUSED")))
  })

/**
 * Binds and listens through Node, replacing a unix socket file that nothing
 * accepts on any more, as the native path does.
 */
export const listen = (target: Target, backlog: number): Effect.Effect<Acceptor, BindError> =>
  listenOnce(target, backlog).pipe(
    Effect.catchIf(
      (error) => error.code === "EADDRINUSE" && target._tag === "Unix" && !target.path.startsWith("@"),
      (error) =>
        Effect.flatMap(isStale((target as { readonly path: string }).path), (stale) =>
          stale
            ? Effect.andThen(
                Effect.sync(() => rmSync((target as { readonly path: string }).path, { force: true })),
                listenOnce(target, backlog)
              )
            : Effect.fail(error)
        )
    ),
    Effect.map((server) => new Acceptor(server))
  )
