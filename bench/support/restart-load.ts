/**
 * The load a restart is measured under, and what the clients saw: every
 * answer's end, latency and pid, and every failure.
 *
 * Load: autocannon, `connections` keep-alive connections spread over the
 * demo's ports, each sending its next request as soon as the previous answer
 * arrives. Alongside, a prober sends one request at a time, each on a new
 * connection, and reads which pid answered.
 *
 * autocannon ignores `Connection: close`: it writes its next request on a
 * connection the server said it is closing (that request is then lost, and
 * autocannon does not notice). A draining server says exactly that, so each
 * client here behaves like an HTTP/1.1 client (RFC 9112, section 9.6):
 * after a response with `Connection: close` it opens a new connection for
 * its next request. It also counts what autocannon does not: a request left
 * unanswered when the server closes the connection.
 */
import type { EventEmitter } from "node:events"
import * as Http from "node:http"
import type * as Net from "node:net"
import type autocannon from "autocannon"
import { pidOf, startLoad } from "./load.ts"
import type { Load } from "./load.ts"
import { fixed } from "./report.ts"
import { sleep, within } from "./wait.ts"

const now = () => performance.now()

// -----------------------------------------------------------------------------
// What the clients saw
// -----------------------------------------------------------------------------

export interface Failure {
  /** `performance.now()` when it was seen. */
  readonly at: number
  readonly source: "load" | "prober" | "held"
  readonly kind: string
  readonly detail: string
}

/** Every answer's end time, latency and pid (parallel arrays), and every failure. */
export interface Recorder {
  readonly ends: Array<number>
  readonly latencies: Array<number>
  readonly pids: Array<number>
  readonly failures: Array<Failure>
  readonly answersByPid: Map<number, number>
  /** Answers with `Connection: close`: each one moved a client to a new connection. */
  connectionClose: number
  /** Clients with a request in flight, and when it was written: what is left at the end was never answered. */
  readonly inFlight: Map<ClientInternals, number>
  readonly fail: (failure: Omit<Failure, "at">) => void
}

export const makeRecorder = (): Recorder => {
  const failures: Array<Failure> = []
  return {
    ends: [],
    latencies: [],
    pids: [],
    failures,
    answersByPid: new Map(),
    connectionClose: 0,
    inFlight: new Map(),
    fail: (failure) => failures.push({ at: now(), ...failure })
  }
}

// -----------------------------------------------------------------------------
// An autocannon client that honours `Connection: close`
// -----------------------------------------------------------------------------

/** The parts of autocannon's client (lib/httpClient.js, autocannon 9) that `politeClient` wraps. */
interface ClientInternals {
  conn: Net.Socket
  pipelinedRequests: { clear(): void }
  _connect(): void
  _doRequest(): void
  _resetConnection(): void
}

/**
 * autocannon's `setupClient`: after a response with `Connection: close` the
 * next request goes on a new connection, and a request left unanswered when
 * the server closes the connection is a failure.
 */
const politeClient = (recorder: Recorder) => (client: autocannon.Client) => {
  const internals = client as unknown as ClientInternals
  const events = client as EventEmitter
  for (const name of ["pipelinedRequests", "_connect", "_doRequest", "_resetConnection"] as const) {
    if (!(name in internals))
      throw new Error(`autocannon's client has no ${name}: update bench/support/restart-load.ts`)
  }
  const state = { closing: false }
  events.on("headers", (info: { readonly shouldKeepAlive: boolean }) => {
    state.closing = !info.shouldKeepAlive
    if (state.closing) recorder.connectionClose++
  })
  events.on("request", () => recorder.inFlight.set(internals, now()))
  events.on("response", () => recorder.inFlight.delete(internals))

  const doRequest = internals._doRequest
  internals._doRequest = function (this: ClientInternals) {
    if (state.closing) {
      // A new connection, whose `_connect` sends the request.
      state.closing = false
      return this._resetConnection()
    }
    doRequest.call(this)
  }

  const connect = internals._connect
  internals._connect = function (this: ClientInternals) {
    recorder.inFlight.delete(this)
    state.closing = false
    connect.call(this)
    watchConnection(this, recorder)
  }
}

/** A request in flight when the server ends the connection is a failure; an error's request is no longer in flight. */
const watchConnection = (client: ClientInternals, recorder: Recorder) => {
  const conn = client.conn
  // Runs before autocannon's own `end` handler, which reconnects without a word.
  conn.prependListener("end", () => {
    if (conn !== client.conn) return
    if (recorder.inFlight.has(client)) {
      recorder.fail({
        source: "load",
        kind: "unanswered",
        detail: "the server closed the connection with a request in flight"
      })
      recorder.inFlight.delete(client)
    }
    client.pipelinedRequests.clear()
    // autocannon would reconnect a second time on a later error of this socket.
    conn.removeAllListeners("error")
    conn.on("error", (error: NodeJS.ErrnoException) =>
      recorder.fail({ source: "load", kind: "error after close", detail: error.code ?? error.message })
    )
  })
  // An error is counted by autocannon (`reqError`); its request must not be matched with the next answer.
  conn.prependListener("error", () => {
    recorder.inFlight.delete(client)
    client.pipelinedRequests.clear()
  })
}

/** How the load runs. */
export interface LoadSettings {
  readonly connections: number
  readonly path: string
  readonly requestTimeoutSeconds: number
  /** Longer than the whole run: the load is stopped, not timed. */
  readonly durationSeconds: number
}

/** autocannon on each port, `connections` spread over them (at least one each), every answer recorded. */
const startClients = (ports: ReadonlyArray<number>, recorder: Recorder, settings: LoadSettings): Array<Load> => {
  // The pid read from the body of the answer being counted: autocannon reads the body just before its `response`.
  let answeredBy = 0
  const onResponse = (_status: number, body: string) => {
    const pid = pidOf(body)
    recorder.answersByPid.set(pid, (recorder.answersByPid.get(pid) ?? 0) + 1)
    answeredBy = pid
  }
  return ports.map((port, i) => {
    const load = startLoad({
      url: `http://127.0.0.1:${port}${settings.path}`,
      connections: Math.max(
        1,
        Math.floor(settings.connections / ports.length) + (i < settings.connections % ports.length ? 1 : 0)
      ),
      duration: settings.durationSeconds,
      timeout: settings.requestTimeoutSeconds,
      pipelining: 1,
      setupClient: politeClient(recorder),
      requests: [{ method: "GET", path: settings.path, onResponse }]
    })
    load.instance.on("response", (_client, status, _bytes, latency) => {
      if (status < 200 || status > 299) recorder.fail({ source: "load", kind: "non-2xx", detail: String(status) })
      recorder.ends.push(now())
      recorder.latencies.push(latency)
      recorder.pids.push(answeredBy)
      answeredBy = 0
    })
    load.instance.on("reqError", (error: NodeJS.ErrnoException) =>
      recorder.fail({
        source: "load",
        kind: error.code === "ECONNRESET" ? "reset" : "error",
        detail: error.code ?? error.message
      })
    )
    return load
  })
}

// -----------------------------------------------------------------------------
// The prober: one request at a time, each on a new connection
// -----------------------------------------------------------------------------

export interface Probe {
  readonly end: number
  readonly pid: number
}

const probe = (port: number, path: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const request = Http.get({ host: "127.0.0.1", port, path, agent: false, timeout: 5000 }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.on("error", reject)
      response.on("end", () => {
        const pid = pidOf(body)
        if (response.statusCode === 200 && pid !== 0) resolve(pid)
        else reject(new Error(`status ${response.statusCode}: ${JSON.stringify(body)}`))
      })
    })
    request.on("timeout", () => request.destroy(new Error("no answer within 5 s")))
    request.on("error", reject)
  })

const startProber = (ports: ReadonlyArray<number>, path: string, recorder: Recorder) => {
  const probes: Array<Probe> = []
  const stopping = new AbortController()
  const done = (async () => {
    for (let i = 0; !stopping.signal.aborted; i++) {
      try {
        const pid = await probe(ports[i % ports.length]!, path)
        probes.push({ end: now(), pid })
      } catch (error) {
        const cause = error as NodeJS.ErrnoException
        recorder.fail({
          source: "prober",
          kind: cause.code === "ECONNRESET" ? "reset" : "error",
          detail: cause.code ?? cause.message
        })
      }
      await sleep(2)
    }
  })()
  return {
    probes,
    stop: () => {
      stopping.abort()
      return done
    }
  }
}

// -----------------------------------------------------------------------------
// The load, started and stopped
// -----------------------------------------------------------------------------

/** What the load saw when it stopped. */
export interface Ended {
  readonly stopped: number
  readonly results: ReadonlyArray<autocannon.Result>
  readonly probes: ReadonlyArray<Probe>
}

export interface RestartLoad {
  /** When the load started (`performance.now()`). */
  readonly loadStart: number
  /** Stops the clients and the prober; a request still unanswered after 2 s is then a failure (stalled). */
  readonly end: () => Promise<Ended>
  /** Stops whatever is still running, after `end` or instead of it. */
  readonly stop: () => Promise<void>
}

/** The clients and the prober on `ports`, recording into `recorder`. */
export const startRestartLoad = (
  ports: ReadonlyArray<number>,
  recorder: Recorder,
  settings: LoadSettings
): RestartLoad => {
  const loadStart = now()
  const loads = startClients(ports, recorder, settings)
  const prober = startProber(ports, settings.path, recorder)
  const end = async (): Promise<Ended> => {
    const stopped = now()
    for (const load of loads) load.instance.stop()
    const results = await within(Promise.all(loads.map((load) => load.result)), 10_000, "autocannon to stop")
    await within(prober.stop(), 10_000, "the prober to stop")
    for (const written of recorder.inFlight.values()) {
      if (stopped - written > 2000) {
        const detail = `unanswered for ${fixed(stopped - written, 0)} ms at the end`
        recorder.fail({ source: "load", kind: "stalled", detail })
      }
    }
    return { stopped, results, probes: prober.probes }
  }
  const stop = async () => {
    for (const load of loads) load.instance.stop()
    await prober.stop()
  }
  return { loadStart, end, stop }
}
