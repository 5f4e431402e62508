/**
 * The application's servers, as the supervisor stops and restarts their
 * accepting during a successor's probation: a server paused stops accepting
 * and drains its connections, but keeps its listening socket and stays
 * built, so that it can accept again at once if the successor dies
 * (hand-back). Connections that arrive meanwhile wait in the kernel's
 * backlog of the socket, which the successor shares.
 *
 * In a primary's worker, the gate also accepts for its servers on sockets
 * the primary lends it: another slot's socket of a server's address, while
 * that slot has no worker that accepts (pool.ts). Each connection goes to the
 * server of that address, as its own (`connection`, the documented way to
 * give an HTTP, HTTPS or HTTP/2 server a connection, as portable.ts does). A
 * server stops accepting on what it borrowed whenever it stops accepting on
 * its own socket (paused, draining): closing the borrowed copy leaves the
 * primary's open, so nothing queued there is lost.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import { closeSync } from "node:fs"
import * as Net from "node:net"
import { formatAddress } from "./address.ts"
import type * as Drain from "./drain.ts"
import * as Sys from "./sys.ts"

/** One server's part. */
export interface Pausable {
  /** Stops accepting (the socket kept open) and drains the connections; done once they are gone. */
  readonly pause: Effect.Effect<void>
  /** Accepts again on the same socket; connections still draining go on draining. */
  readonly resume: Effect.Effect<void>
  /** The server that takes connections accepted on a lent socket of its address, as its own. */
  readonly lentTo?: { readonly address: string; readonly server: Net.Server } | undefined
}

/** Where a server registers, for as long as it serves. */
export interface Gate {
  readonly register: (server: Pausable) => Effect.Effect<void, never, Scope.Scope>
}

/** Servers outside a supervisor register nowhere. */
export const Gate: Context.Reference<Gate> = Context.Reference<Gate>("effect-grace/Gate", {
  defaultValue: () => ({ register: () => Effect.void })
})

// A registered server, and what it accepts on of the sockets lent to this process, by loan.
interface Registered {
  readonly server: Pausable
  readonly borrowed: Map<number, Net.Server>
}

// Accepts on a lent socket for `target`, with the options a connection gets from the server that accepts it (an
// HTTP server's sockets are half-open and without Nagle's delay; a plain one's as it was made). The fields read are
// net.Server's own (test/gate.test.ts names them).
const acceptFor = (fd: number, target: Net.Server): Net.Server => {
  const own = target as Net.Server &
    Partial<Record<"allowHalfOpen" | "noDelay" | "pauseOnConnect" | "keepAlive", boolean>>
  const seconds = (target as { readonly keepAliveInitialDelay?: number }).keepAliveInitialDelay ?? 0
  const acceptor = Net.createServer({
    allowHalfOpen: own.allowHalfOpen === true,
    noDelay: own.noDelay === true,
    pauseOnConnect: own.pauseOnConnect === true,
    keepAlive: own.keepAlive === true,
    keepAliveInitialDelay: seconds * 1000
  })
  acceptor.on("connection", (socket: Net.Socket) => void target.emit("connection", socket))
  // An accept that fails (EMFILE) is Node's to retry; nothing else is reported on a listening socket.
  acceptor.on("error", () => {})
  acceptor.listen({ fd } as Net.ListenOptions)
  return acceptor
}

const addressOf = (fd: number): string | undefined => {
  const local = Sys.localAddress(fd)
  return Result.isSuccess(local) ? formatAddress(local.success) : undefined
}

/** The supervisor's gate: every server registered, paused and resumed together, and the sockets lent to it. */
export const make = () => {
  const servers = new Set<Registered>()
  const loans = new Map<number, Registered>()
  const giveBack = (loan: number) => {
    const holder = loans.get(loan)
    loans.delete(loan)
    holder?.borrowed.get(loan)?.close()
    holder?.borrowed.delete(loan)
  }
  const giveBackAll = (holder: Registered) => {
    for (const loan of holder.borrowed.keys()) giveBack(loan)
  }
  const gate: Gate = {
    register: (server) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const registered = { server, borrowed: new Map() }
          servers.add(registered)
          return registered
        }),
        (registered) =>
          Effect.sync(() => {
            giveBackAll(registered)
            servers.delete(registered)
          })
      ).pipe(Effect.asVoid)
  }
  return {
    gate,
    pause: Effect.suspend(() =>
      Effect.forEach(
        [...servers],
        (s) =>
          Effect.andThen(
            Effect.sync(() => giveBackAll(s)),
            s.server.pause
          ),
        { concurrency: "unbounded", discard: true }
      )
    ),
    resume: Effect.suspend(() => Effect.forEach([...servers], (s) => s.server.resume, { discard: true })),
    /**
     * Accepts on a lent socket (`fd`, this process's copy) for the server of its address, until `reclaim`; false,
     * and the copy closed, if no server here serves that address.
     */
    lend: (loan: number, fd: number): Effect.Effect<boolean> =>
      Effect.sync(() => {
        giveBack(loan)
        const address = addressOf(fd)
        const holder = [...servers].find((s) => s.server.lentTo !== undefined && s.server.lentTo.address === address)
        if (holder === undefined) {
          closeSync(fd)
          return false
        }
        holder.borrowed.set(loan, acceptFor(fd, holder.server.lentTo!.server))
        loans.set(loan, holder)
        return true
      }),
    /** Stops accepting on a lent socket: this process's copy is closed, the primary's stays open. */
    reclaim: (loan: number): Effect.Effect<void> => Effect.sync(() => giveBack(loan))
  }
}

/**
 * Registers a served listener with the supervisor's gate, for the serve scope's life. Pausing stops it accepting
 * (`accepting.stop`, its socket kept open) and runs `drain`, the same drain its scope's finalizer runs, which then
 * joins the one under way; resuming ends that drain (or undoes it, if it is over) without forcing anything and
 * accepts again on the same socket (`accepting.start`). `lentTo` is the server that takes connections from sockets
 * of its address lent to this process; they are given back when it pauses, and when its scope closes (before its
 * drain: registered after it, released first).
 */
export const registerServer = (
  accepting: {
    readonly stop: Effect.Effect<void>
    readonly start: Effect.Effect<void, { readonly message: string }>
  },
  tracker: Drain.Tracker,
  drain: Effect.Effect<unknown>,
  lentTo?: { readonly address: string; readonly server: Net.Server }
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const gate = yield* Gate
    const resume = Effect.andThen(
      Effect.sync(() => tracker.resume()),
      accepting.start.pipe(
        Effect.catch((error) => Effect.logError(`effect-grace: cannot accept again: ${error.message}`))
      )
    )
    yield* gate.register({ pause: Effect.andThen(accepting.stop, Effect.asVoid(drain)), resume, lentTo })
  })
