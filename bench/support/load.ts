/**
 * Load on HTTP servers, from this process.
 *
 * - `startLoad`: autocannon (keep-alive connections, aggregates), and
 *   `timedLoad`, a run of it to its end with every answer's latency.
 * - `startRequests`: a keep-alive load that records every request: when it
 *   was written, when it ended, which pid answered (the body's `from pid N.`)
 *   or how it failed. autocannon keeps aggregates only; the pictures need each
 *   request.
 *
 * `startRequests` runs `connections` clients, each with a connection of its
 * own (a `node:http` Agent with keep-alive and one socket), that send their
 * next request as soon as the previous one ends. `node:http` is an HTTP/1.1
 * client: after an answer with `Connection: close` it opens a new connection.
 * After a failure a client waits `pauseAfterFailureMs` before its next
 * request, as a retrying client would (without it, a refused port turns into a
 * busy loop of refusals). Bounded: at most `maxRequests` are recorded, then
 * the clients stop.
 */
import * as Http from "node:http"
import autocannon from "autocannon"
import { sleep } from "./wait.ts"

/** The end of every answer of the servers measured here: the pid that sent it. */
const ANSWER = /from pid (\d+)\.\s*$/

/** The pid an answer's body names; 0 when it names none. */
export const pidOf = (body: string): number => Number(body.match(ANSWER)?.[1] ?? 0)

// -----------------------------------------------------------------------------
// autocannon
// -----------------------------------------------------------------------------

/** A running autocannon instance and its result. */
export interface Load {
  readonly instance: autocannon.Instance
  readonly result: Promise<autocannon.Result>
}

/** Starts autocannon (programmatic API; keep-alive connections, no pipelining). */
export const startLoad = (options: autocannon.Options): Load => {
  let instance: autocannon.Instance | undefined
  const result = new Promise<autocannon.Result>((resolve, reject) => {
    instance = autocannon(options, (error, done) => (error ? reject(error) : resolve(done)))
  })
  return { instance: instance!, result }
}

/** What `timedLoad` saw. */
export interface Timed {
  readonly result: autocannon.Result
  /** Every answer's latency in ms, at full precision (not autocannon's whole-millisecond histogram). */
  readonly latencies: Array<number>
  /** Errors, timeouts and non-2xx answers. */
  readonly failed: number
}

/** Runs autocannon to its end, recording each answer's latency; `onResponse` sees each answer's client too. */
export const timedLoad = async (
  options: autocannon.Options,
  onResponse?: (client: autocannon.Client) => void
): Promise<Timed> => {
  const latencies: Array<number> = []
  const load = startLoad(options)
  load.instance.on("response", (client, _status, _bytes, responseTime) => {
    latencies.push(responseTime)
    onResponse?.(client)
  })
  const result = await load.result
  return { result, latencies, failed: result.errors + result.timeouts + result.non2xx }
}

// -----------------------------------------------------------------------------
// Every request recorded
// -----------------------------------------------------------------------------

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

/** Records one request's end; `false` once `requests` is full. */
type RecordRequest = (start: number, pid: number, outcome: Outcome, detail?: string) => boolean

const recorder = (capacity: number): { readonly requests: Requests; readonly record: RecordRequest } => {
  const requests: Requests = {
    count: 0,
    starts: new Float64Array(capacity),
    ends: new Float64Array(capacity),
    pids: new Int32Array(capacity),
    outcomes: new Uint8Array(capacity),
    samples: new Map()
  }
  const record: RecordRequest = (start, pid, outcome, detail) => {
    if (requests.count >= capacity) return false
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
    return true
  }
  return { requests, record }
}

/** One request on `agent`, recorded when it ends; resolves with how it ended. */
const send = (
  options: LoadOptions & { readonly onFull: () => void },
  agent: Http.Agent,
  record: RecordRequest
): Promise<Outcome> =>
  new Promise((resolve) => {
    const start = performance.now()
    let settled = false
    let timedOut = false
    const settle = (pid: number, outcome: Outcome, detail?: string) => {
      if (settled) return
      settled = true
      if (!record(start, pid, outcome, detail)) options.onFull()
      resolve(outcome)
    }
    const failed = (error: NodeJS.ErrnoException) => settle(0, classify(error, timedOut), error.code ?? error.message)
    const request = Http.request({ host: options.host, port: options.port, path: options.path, agent }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.on("end", () => {
        const status = response.statusCode ?? 0
        if (status >= 200 && status <= 299) settle(pidOf(body), Outcome.ok)
        else settle(pidOf(body), Outcome.non2xx, String(status))
      })
      response.on("error", failed)
    })
    request.setTimeout(options.timeoutMs, () => {
      timedOut = true
      request.destroy(new Error(`no answer within ${options.timeoutMs} ms`))
    })
    request.on("error", failed)
    request.end()
  })

export const startRequests = (options: LoadOptions): RunningLoad => {
  const { requests, record } = recorder(options.maxRequests)
  const state = { stopping: false }
  const sending = { ...options, onFull: () => (state.stopping = true) }
  const client = async () => {
    const agent = new Http.Agent({ keepAlive: true, maxSockets: 1 })
    try {
      while (!state.stopping) {
        const outcome = await send(sending, agent, record)
        if (outcome !== Outcome.ok && !state.stopping) await sleep(options.pauseAfterFailureMs)
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
