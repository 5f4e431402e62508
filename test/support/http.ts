/**
 * HTTP and HTTPS clients for tests, on node:http: every call is bounded in
 * time, and keep-alive agents are destroyed when their scope closes.
 */
import * as Http from "node:http"
import * as Https from "node:https"
import * as Net from "node:net"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import { connectOptions } from "./net.ts"
import type { Target } from "./net.ts"

export interface Reply {
  readonly status: number
  readonly headers: Http.IncomingHttpHeaders
  readonly body: string
  /** The client's port: the same on two replies means the same connection. */
  readonly localPort: number
  /** The client's socket, to watch a kept-alive connection close. */
  readonly socket: Net.Socket
}

export interface RequestOptions {
  readonly method?: string
  readonly agent?: Http.Agent | false
  readonly ca?: string | Buffer
  /** A unix socket to send the request on (the URL's host is then only the Host header). */
  readonly socketPath?: string
  readonly timeout?: Duration.Input
}

/** A request, read to the end; fails on a refused or reset connection, or after `timeout` (10 s). */
export const request = (url: string, options: RequestOptions = {}): Effect.Effect<Reply, Error> =>
  Effect.callback<Reply, Error>((resume) => {
    const client = url.startsWith("https:") ? Https : Http
    const outgoing = client.request(
      url,
      {
        method: options.method ?? "GET",
        agent: options.agent ?? false,
        ...(options.ca !== undefined ? { ca: options.ca } : {}),
        ...(options.socketPath !== undefined ? { socketPath: options.socketPath } : {})
      },
      (response) => {
        // A keep-alive agent takes the socket back at the end.
        const socket = response.socket
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on("error", (error) => resume(Effect.fail(error)))
        response.on("end", () =>
          resume(
            Effect.succeed({
              status: response.statusCode ?? 0,
              headers: response.headers,
              body: Buffer.concat(chunks).toString(),
              localPort: socket.localPort ?? 0,
              socket
            })
          )
        )
      }
    )
    outgoing.on("error", (error) => resume(Effect.fail(error)))
    outgoing.end()
    return Effect.sync(() => outgoing.destroy())
  }).pipe(
    Effect.timeoutOrElse({
      duration: options.timeout ?? Duration.seconds(10),
      orElse: () => Effect.fail(new Error(`no answer to ${options.method ?? "GET"} ${url}`))
    })
  )

/** A GET: `request` with the default method. */
export const get = (url: string, options: Omit<RequestOptions, "method"> = {}): Effect.Effect<Reply, Error> =>
  request(url, options)

/** A keep-alive agent (HTTPS with `secure`) with one connection per origin, destroyed with its scope. */
export const keepAliveAgent = (
  secure = false,
  options: Https.AgentOptions = {}
): Effect.Effect<Http.Agent, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const settings = { keepAlive: true, maxSockets: 1, ...options }
      return secure ? new Https.Agent(settings) : new Http.Agent(settings)
    }),
    (agent) => Effect.sync(() => agent.destroy())
  )

/** Waits, bounded, for a socket to close; yields whether it closed with an error (a reset). */
export const closed = (
  socket: Net.Socket,
  timeout: Duration.Input = Duration.seconds(10)
): Effect.Effect<boolean, Error> =>
  Effect.callback<boolean>((resume) => {
    if (socket.closed) return resume(Effect.succeed(socket.errored !== null))
    socket.once("close", (hadError) => resume(Effect.succeed(hadError)))
  }).pipe(
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () => Effect.fail(new Error("the connection stayed open"))
    })
  )

/**
 * Waits, bounded, until a connection to `target` is refused: the server stopped accepting. A connection accepted
 * before that is closed at once.
 */
export const untilRefused = (target: Target, timeout: Duration.Input = Duration.seconds(2)): Effect.Effect<void> =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.fromInputUnsafe(timeout))
    while (true) {
      const outcome = yield* Effect.callback<string>((resume) => {
        const socket = Net.connect(connectOptions(target))
        socket.on("connect", () => {
          socket.destroy()
          resume(Effect.succeed("accepted"))
        })
        socket.on("error", (error: NodeJS.ErrnoException) => resume(Effect.succeed(error.code ?? error.message)))
      })
      if (outcome === "ECONNREFUSED") return
      if (Date.now() > deadline)
        return yield* Effect.die(new Error(`${JSON.stringify(target)} still answers: ${outcome}`))
      yield* Effect.sleep(Duration.millis(10))
    }
  })

/**
 * Keep-alive clients, one per URL, each sending request after request on its own agent until `stop`; the replies
 * and the failures, as they come. Every request is bounded in time (`request`).
 */
export const keepAliveLoad = (urls: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const load = { sending: true }
    const answers: Array<Reply> = []
    const failures: Array<string> = []
    const agents = yield* Effect.forEach(urls, () => keepAliveAgent())
    const fibers = yield* Effect.forEach(agents, (agent, i) =>
      Effect.forkChild(
        Effect.gen(function* () {
          while (load.sending) {
            const reply = yield* Effect.result(request(urls[i]!, { agent }))
            if (reply._tag === "Success") answers.push(reply.success)
            else failures.push(reply.failure.message)
          }
        })
      )
    )
    const stop = Effect.andThen(
      Effect.sync(() => {
        load.sending = false
      }),
      Effect.forEach(fibers, Fiber.join, { discard: true })
    )
    return { answers, failures, stop }
  })

/** One request of `steadyLoad`: when it ended, and the pid that answered it or the error code it failed with. */
export interface Outcome {
  readonly at: number
  readonly pid?: number
  readonly code?: string
}

/**
 * Clients each sending request after request to `url`, every one on a new connection (so that a refused connection
 * shows), until `stop`; every outcome, as it comes.
 */
export const steadyLoad = (url: string, clients: number) =>
  Effect.gen(function* () {
    const load = { sending: true }
    const outcomes: Array<Outcome> = []
    const client = Effect.gen(function* () {
      while (load.sending) {
        const reply = yield* Effect.result(request(url, { timeout: "5 seconds" }))
        const at = Date.now()
        if (reply._tag === "Success") outcomes.push({ at, pid: Number(reply.success.body.match(/pid (\d+)/)?.[1]) })
        else outcomes.push({ at, code: (reply.failure as NodeJS.ErrnoException).code ?? reply.failure.message })
      }
    })
    const fibers = yield* Effect.forEach(Array.from({ length: clients }), () => Effect.forkChild(client))
    const stop = Effect.andThen(
      Effect.sync(() => void (load.sending = false)),
      Effect.forEach(fibers, Fiber.join, { discard: true })
    )
    return { outcomes, stop }
  })

/**
 * Requests `url` on new connections until one is answered from `pid` (a body saying `pid <n>`), bounded: once a
 * successor is ready the old process stops accepting soon, but until then the kernel may give either a connection.
 */
export const answeredBy = (url: string, pid: number, options: RequestOptions = {}) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 15_000
    while (Date.now() < deadline) {
      if (Number((yield* request(url, options)).body.match(/pid (\d+)/)?.[1]) === pid) return
      yield* Effect.sleep("10 millis")
    }
    return yield* Effect.die(new Error(`no answer from pid ${pid} at ${url} within 15 s`))
  })
