/**
 * A channel of text lines between a process and a child it started (a
 * successor, or a worker): one end of a socket pair each. The OS service
 * makes them (`Os.spawn`, `Os.parent`); the protocol (protocol.ts, spoken by
 * child.ts and parent.ts) goes over them; tests connect two in memory.
 */
import type * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import type * as Net from "node:net"

export interface Channel {
  /** Sends one line (without its newline); done once written, or at once if the other end has gone. */
  readonly send: (line: string) => Effect.Effect<void>
  /** The next line received; fails with `Done` once the other end has gone and every line was taken. */
  readonly receive: Effect.Effect<string, Cause.Done>
  /** Completes once the other end has gone (closed, exited). */
  readonly closed: Effect.Effect<void>
  /** Closes this end. */
  readonly close: Effect.Effect<void>
  /** Lets the process exit while the channel is open. */
  readonly unref: Effect.Effect<void>
}

/** A channel over a connected socket. */
export const fromSocket = (socket: Net.Socket): Effect.Effect<Channel> =>
  Effect.map(Queue.unbounded<string, Cause.Done>(), (lines) => {
    const gone = Deferred.makeUnsafe<void>()
    let buffered = ""
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString()
      let end: number
      while ((end = buffered.indexOf("\n")) >= 0) {
        Queue.offerUnsafe(lines, buffered.slice(0, end))
        buffered = buffered.slice(end + 1)
      }
    })
    const onGone = () => {
      Queue.endUnsafe(lines)
      Deferred.doneUnsafe(gone, Effect.void)
    }
    socket.on("end", onGone)
    socket.on("close", onGone)
    socket.on("error", onGone)
    return {
      send: (line) =>
        Effect.callback<void>((resume) => {
          if (socket.destroyed || !socket.writable) return resume(Effect.void)
          socket.write(`${line}\n`, () => resume(Effect.void))
        }),
      receive: Queue.take(lines),
      closed: Deferred.await(gone),
      close: Effect.sync(() => void socket.destroy()),
      unref: Effect.sync(() => void socket.unref())
    }
  })
