/**
 * A keep-alive HTTP load that records every request: when it was written,
 * when it ended, which pid answered (the body's `from pid N.`) or how it
 * failed. autocannon keeps aggregates only; the pictures need each request.
 *
 * `connections` clients, each with a connection of its own (a `node:http`
 * Agent with keep-alive and one socket), send their next request as soon as
 * the previous one ends. `node:http` is an HTTP/1.1 client: after an answer
 * with `Connection: close` it opens a new connection. After a failure a client
 * waits `pauseAfterFailureMs` before its next request, as a retrying client
 * would (without it, a refused port turns into a busy loop of refusals).
 *
 * Bounded: at most `maxRequests` are recorded, then the clients stop.
 */
import * as Http from "node:http"

/** How a request ended. */
export const Outcome = { ok: 0, reset: 1, refused: 2, timeout: 3, non2xx: 4, other: 5 } as const
export type Outcome = (typeof Outcome)[keyof typeof Outcome]
export const outcomeNames = ["ok", "reset", "refused", "timeout", "non-2xx", "other"] as const

/** Every request, in parallel arrays (`performance.now()` times). */
export interface Requests {
  count: number
  readonly starts: Float64Array
  readonly ends: Float64Array
  /** The pid that answered; 0 when none did. */
  readonly pids: Int32Array
  readonly outcomes: Uint8Array
  /** The first few error messages of each outcome, to read what "other" was. */
  readonly samples: Map<Outcome, Array<string>>
}

const ANSWER = /from pid (\d+)\.\s*$/

const classify = (error: NodeJS.ErrnoException, timedOut: boolean): Outcome => {
  if (timedOut) return Outcome.timeout
  switch (error.code) {
    case "ECONNRESET": // also "socket hang up": the connection closed before an answer
    case "EPIPE":
      return Outcome.reset
    case "ECONNREFUSED":
      return Outcome.refused
    default:
      return Outcome.other
  }
}

export interface LoadOptions {
  readonly host: string
  readonly port: number
  readonly path: string
  readonly connections: number
  readonly timeoutMs: number
  readonly maxRequests: number
  readonly pauseAfterFailureMs: number
}

/** A running load: `stop` ends it once every request in flight has ended (each is bounded by `timeoutMs`). */
export interface RunningLoad {
  readonly requests: Requests
  readonly stop: () => Promise<Requests>
}

export const startRequests = (options: LoadOptions): RunningLoad => {
  const capacity = options.maxRequests
  const requests: Requests = {
    count: 0,
    starts: new Float64Array(capacity),
    ends: new Float64Array(capacity),
    pids: new Int32Array(capacity),
    outcomes: new Uint8Array(capacity),
    samples: new Map()
  }
  const state = { stopping: false }
  const record = (start: number, pid: number, outcome: Outcome, detail?: string) => {
    if (requests.count >= capacity) {
      state.stopping = true
      return
    }
    const i = requests.count++
    requests.starts[i] = start
    requests.ends[i] = performance.now()
    requests.pids[i] = pid
    requests.outcomes[i] = outcome
    if (detail !== undefined) {
      const samples = requests.samples.get(outcome) ?? []
      if (samples.length < 5) samples.push(detail)
      requests.samples.set(outcome, samples)
    }
  }

  const send = (agent: Http.Agent): Promise<Outcome> =>
    new Promise((resolve) => {
      const start = performance.now()
      let settled = false
      let timedOut = false
      const settle = (pid: number, outcome: Outcome, detail?: string) => {
        if (settled) return
        settled = true
        record(start, pid, outcome, detail)
        resolve(outcome)
      }
      const request = Http.request(
        { host: options.host, port: options.port, path: options.path, agent },
        (response) => {
          let body = ""
          response.setEncoding("utf8")
          response.on("data", (chunk: string) => (body += chunk))
          response.on("end", () => {
            const status = response.statusCode ?? 0
            const pid = Number(body.match(ANSWER)?.[1] ?? 0)
            if (status >= 200 && status <= 299) settle(pid, Outcome.ok)
            else settle(pid, Outcome.non2xx, String(status))
          })
          response.on("error", (error: NodeJS.ErrnoException) =>
            settle(0, classify(error, timedOut), error.code ?? error.message)
          )
        }
      )
      request.setTimeout(options.timeoutMs, () => {
        timedOut = true
        request.destroy(new Error(`no answer within ${options.timeoutMs} ms`))
      })
      request.on("error", (error: NodeJS.ErrnoException) =>
        settle(0, classify(error, timedOut), error.code ?? error.message)
      )
      request.end()
    })

  const client = async () => {
    const agent = new Http.Agent({ keepAlive: true, maxSockets: 1 })
    try {
      while (!state.stopping) {
        const outcome = await send(agent)
        if (outcome !== Outcome.ok && !state.stopping)
          await new Promise((r) => setTimeout(r, options.pauseAfterFailureMs))
      }
    } finally {
      agent.destroy()
    }
  }
  const clients = Array.from({ length: options.connections }, client)

  return {
    requests,
    stop: async () => {
      state.stopping = true
      await Promise.all(clients)
      return requests
    }
  }
}
