/**
 * Connection tracking and the drain, shared by the HTTP and the raw socket
 * servers.
 *
 * A drain never races a client. A connection with work in flight (a request,
 * a raw handler) finishes it; one with none is closed only once it has been
 * quiet for the idle grace, so a keep-alive client that is sending its next
 * request right now is answered (with `Connection: close`) instead of reset.
 * At the deadline, what is left is destroyed.
 */
import type * as Net from "node:net"
import { performance } from "node:perf_hooks"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

/** What a drain did. */
export interface DrainReport {
  readonly connections: number
  readonly finished: number
  readonly forced: number
  readonly millis: number
}

interface Connection {
  inflight: number
  lastActive: number
  /** Upgraded (WebSocket) or raw: closed by its owner, or destroyed at the deadline; never closed as idle. */
  pinned: boolean
  readonly counted: boolean
  timer: ReturnType<typeof setTimeout> | undefined
}

// After our FIN, how long a client gets to close its side before the socket is destroyed.
const END_GRACE_MS = 1000

export class Tracker {
  private readonly connections = new Map<Net.Socket, Connection>()
  private draining = false
  private addedWhileDraining = 0
  private idleGraceMs = 0
  private onEmpty: (() => void) | undefined
  private readonly onDrainStart: Array<() => void> = []

  get isDraining(): boolean {
    return this.draining
  }

  get size(): number {
    return this.connections.size
  }

  /**
   * Tracks a connection until it closes. A `pinned` one is not closed for being idle; one not `counted` (a TCP
   * socket under a TLS one) holds the drain open but is not reported.
   */
  add(socket: Net.Socket, options: { readonly pinned?: boolean; readonly counted?: boolean } = {}): void {
    if (socket.destroyed) return
    const connection: Connection = {
      inflight: 0,
      lastActive: performance.now(),
      pinned: options.pinned ?? false,
      counted: options.counted ?? true,
      timer: undefined
    }
    this.connections.set(socket, connection)
    if (this.draining && connection.counted) this.addedWhileDraining++
    socket.once("close", () => {
      clearTimeout(connection.timer)
      this.connections.delete(socket)
      if (this.connections.size === 0) this.onEmpty?.()
    })
    if (this.draining) this.scheduleIdleClose(socket, connection)
  }

  /** Marks bytes received: the connection is not quiet. */
  touch(socket: Net.Socket): void {
    const connection = this.connections.get(socket)
    if (connection !== undefined) connection.lastActive = performance.now()
  }

  pin(socket: Net.Socket): void {
    const connection = this.connections.get(socket)
    if (connection !== undefined) {
      connection.pinned = true
      clearTimeout(connection.timer)
    }
  }

  start(socket: Net.Socket): void {
    const connection = this.connections.get(socket)
    if (connection === undefined) return
    connection.inflight++
    connection.lastActive = performance.now()
    clearTimeout(connection.timer)
  }

  end(socket: Net.Socket): void {
    const connection = this.connections.get(socket)
    if (connection === undefined) return
    connection.inflight = Math.max(0, connection.inflight - 1)
    connection.lastActive = performance.now()
    if (this.draining) this.scheduleIdleClose(socket, connection)
  }

  /** Runs `f` when the drain starts (at once if it has). */
  whenDraining(f: () => void): void {
    if (this.draining) f()
    else this.onDrainStart.push(f)
  }

  private scheduleIdleClose(socket: Net.Socket, connection: Connection): void {
    clearTimeout(connection.timer)
    if (connection.pinned || connection.inflight > 0) return
    const check = () => {
      if (connection.pinned || connection.inflight > 0 || socket.destroyed) return
      const quiet = performance.now() - connection.lastActive
      if (quiet >= this.idleGraceMs) return endSocket(socket)
      connection.timer = setTimeout(check, Math.ceil(this.idleGraceMs - quiet))
    }
    check()
  }

  /**
   * Drains: every idle connection is closed once quiet for `idleGrace`, busy
   * ones when their work ends, and whatever is left at `timeout` is destroyed.
   * The caller has already stopped accepting.
   */
  drain(options: { readonly timeout: Duration.Duration; readonly idleGrace: Duration.Duration }) {
    return Effect.callback<DrainReport>((resume) => {
      const started = performance.now()
      const counted = () => [...this.connections.values()].filter((c) => c.counted).length
      const initial = counted()
      let forced = 0
      const report = () => ({
        connections: initial + this.addedWhileDraining,
        finished: initial + this.addedWhileDraining - forced,
        forced,
        millis: Math.round(performance.now() - started)
      })
      const done = () => {
        clearTimeout(deadline)
        this.onEmpty = undefined
        resume(Effect.succeed(report()))
      }
      const deadline = setTimeout(() => {
        this.onEmpty = undefined
        forced = counted()
        for (const socket of this.connections.keys()) socket.destroy()
        resume(Effect.succeed(report()))
      }, Duration.toMillis(options.timeout))
      this.idleGraceMs = Duration.toMillis(options.idleGrace)
      this.draining = true
      for (const f of this.onDrainStart.splice(0)) f()
      if (this.connections.size === 0) return done()
      this.onEmpty = done
      for (const [socket, connection] of this.connections) this.scheduleIdleClose(socket, connection)
      return Effect.sync(() => clearTimeout(deadline))
    })
  }
}

const endSocket = (socket: Net.Socket): void => {
  socket.end()
  const timer = setTimeout(() => socket.destroy(), END_GRACE_MS)
  timer.unref()
  socket.once("close", () => clearTimeout(timer))
}
