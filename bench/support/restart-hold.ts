/**
 * Long requests held on every worker when a restart's signal comes
 * (`--hold`): each one must be answered by the worker that accepted it, an
 * old one by then, however long the new workers have served meanwhile.
 *
 * Which worker holds a request is read from Linux's /proc, not guessed: the
 * server's end of the connection is a socket in `/proc/net/tcp` (its inode,
 * and the bytes that wait unread in it), and one worker has it as an fd. A
 * request is held once that worker has read it (nothing unread). The kernel
 * spreads new connections over the workers' sockets, so requests are sent,
 * each on a connection of its own, until every worker holds one.
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs"
import * as Http from "node:http"
import { pidOf } from "./load.ts"
import type { Recorder } from "./restart-load.ts"
import { until } from "./wait.ts"

/** How a held request ended: answered (its status and the pid its body names), or failed. */
type Outcome = { readonly status: number; readonly pid: number } | { readonly error: string }

/** A held request: the server port, the client's port (its connection), and its outcome to come. */
interface Sent {
  readonly port: number
  readonly clientPort: () => number
  /** The request is written: its bytes are in the kernel, on their way to the server's socket. */
  readonly written: () => boolean
  readonly outcome: Promise<Outcome>
}

/** GET `path` on a connection of its own, bounded by `timeoutMs`. */
const send = (port: number, path: string, timeoutMs: number): Sent => {
  const state = { clientPort: 0, written: false }
  const outcome = new Promise<Outcome>((resolve) => {
    const request = Http.get({ host: "127.0.0.1", port, path, agent: false, timeout: timeoutMs }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.on("end", () => resolve({ status: response.statusCode ?? 0, pid: pidOf(body) }))
      response.on("error", (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }))
    })
    request.on("socket", (socket) => socket.on("connect", () => (state.clientPort = socket.localPort ?? 0)))
    request.on("finish", () => (state.written = true))
    request.on("timeout", () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)))
    request.on("error", (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }))
  })
  return { port, clientPort: () => state.clientPort, written: () => state.written, outcome }
}

/** The inode of the server's end of the connection from `clientPort` to `port`, once it has read every byte. */
const serverSocket = (port: number, clientPort: number): string | undefined => {
  // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode; ports in hex.
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/)
    if (fields.length < 10 || fields[3] !== "01") continue
    const local = Number.parseInt(fields[1]!.split(":")[1]!, 16)
    const remote = Number.parseInt(fields[2]!.split(":")[1]!, 16)
    const unread = Number.parseInt(fields[4]!.split(":")[1]!, 16)
    if (local === port && remote === clientPort && unread === 0 && fields[9] !== "0") return fields[9]
  }
  return undefined
}

/** Whether `pid` has the socket `inode` open. */
const holds = (pid: number, inode: string): boolean => {
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`
      } catch {
        return false
      }
    })
  } catch {
    return false
  }
}

/** Waits (bounded) until one of `workers` has accepted `sent`'s connection and read its request; that worker. */
const holderOf = async (sent: Sent, workers: ReadonlyArray<number>): Promise<number> => {
  let holder: number | undefined
  await until(
    () => {
      if (!sent.written()) return false
      const inode = serverSocket(sent.port, sent.clientPort())
      holder = inode === undefined ? undefined : workers.find((pid) => holds(pid, inode))
      return holder !== undefined
    },
    10_000,
    `a worker of ${workers.join(", ")} to read a held request on port ${sent.port}`
  )
  return holder!
}

/** The requests held on a group's workers for one restart, and what became of them. */
export interface Holding {
  /** How many requests were sent (the workers hold at least one each). */
  readonly requests: number
  /** Waits for every answer; failures (an answer from another pid than the holder's, or none) go to `recorder`. */
  readonly settled: (recorder: Recorder) => Promise<Held>
}

/** What became of the requests held for one restart. */
export interface Held {
  readonly requests: number
  /** Answered, 200, by the worker that held it (the old one). */
  readonly answeredByHolder: number
  readonly failed: number
}

/**
 * Sends `GET /sleep/?duration=<holdMs>ms` on new connections, round the `ports`, until each of `workers` holds one
 * (at most 8 per worker, then it gives up, naming those left without).
 */
export const holdOnEvery = async (
  ports: ReadonlyArray<number>,
  workers: ReadonlyArray<number>,
  holdMs: number
): Promise<Holding> => {
  const held: Array<{ readonly sent: Sent; readonly holder: number }> = []
  const without = () => workers.filter((pid) => !held.some((h) => h.holder === pid))
  for (let i = 0; without().length > 0; i++) {
    if (i >= 8 * workers.length) throw new Error(`no held request reached worker(s) ${without().join(", ")}`)
    const sent = send(ports[i % ports.length]!, `/sleep/?duration=${holdMs}ms`, holdMs + 60_000)
    held.push({ sent, holder: await holderOf(sent, workers) })
  }
  const settled = async (recorder: Recorder): Promise<Held> => {
    let answeredByHolder = 0
    for (const { sent, holder } of held) {
      const outcome = await sent.outcome
      if ("error" in outcome) recorder.fail({ source: "held", kind: "error", detail: outcome.error })
      else if (outcome.status !== 200)
        recorder.fail({ source: "held", kind: "non-2xx", detail: String(outcome.status) })
      else if (outcome.pid !== holder) {
        recorder.fail({ source: "held", kind: "wrong pid", detail: `held by ${holder}, answered by ${outcome.pid}` })
      } else answeredByHolder++
    }
    return { requests: held.length, answeredByHolder, failed: held.length - answeredByHolder }
  }
  return { requests: held.length, settled }
}
