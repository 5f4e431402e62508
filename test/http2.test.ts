/**
 * HTTP/2 at a drain: streams a client sends before it has seen the GOAWAY are
 * run, not refused (RFC 9113, section 6.8: a GOAWAY that admits every stream,
 * then, after a round trip, the one naming the last stream received).
 *
 * With h2load (an nghttp2 client, as most are), no stream fails across a
 * restart. With Node's own client a few may (it answers the first GOAWAY with
 * its own, and Node's server then sends the final one at once): those are
 * refused streams, above the last stream ID, which the client may retry; no
 * stream the server accepted is ever dropped.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as NetAddress from "effect/net/NetAddress"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Http2 from "node:http2"
import * as Listeners from "../src/Listeners.ts"
import * as Server from "../src/Server.ts"
import { tempDir } from "./support/fs.ts"
import { freePort } from "./support/net.ts"
import { eventually, spawnFixture } from "./support/process.ts"
import { killTaggedOnClose, newTag } from "./support/fixture.ts"
import type { Spawned } from "./support/process.ts"
import { certificateFiles } from "./support/tls.ts"

// -----------------------------------------------------------------------------
// Support
// -----------------------------------------------------------------------------

/** Collects the drain reports the servers log. */
const captureDrains = () => {
  const drains: Array<Record<string, unknown>> = []
  const logger = Logger.make(({ fiber, message }) => {
    const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
    if (text.includes("drain finished")) drains.push({ ...fiber.getRef(References.CurrentLogAnnotations) })
  })
  return { drains, layer: Logger.layer([logger]) }
}

interface Failure {
  readonly id: number | undefined
  readonly rstCode: number
  /** The last stream ID of the latest GOAWAY the client had received. */
  readonly lastStreamID: number | undefined
}

interface Load {
  readonly answered: () => number
  readonly failures: Array<Failure>
  readonly sessionErrors: Array<string>
  readonly closed: () => boolean
  readonly destroy: () => void
}

/**
 * `sessions` clients, each keeping `concurrency` streams in flight (as `h2load -m`): a stream that ends is followed by
 * the next at once, until its session has been told to go away.
 */
const load = (url: string, options: Http2.SecureClientSessionOptions, sessions: number, concurrency: number): Load => {
  let answered = 0
  let closed = 0
  const failures: Array<Failure> = []
  const sessionErrors: Array<string> = []
  const clients = Array.from({ length: sessions }, () => {
    const session = Http2.connect(url, options)
    let lastStreamID: number | undefined
    session.on("goaway", (_code: number, last: number) => (lastStreamID = last))
    session.on("error", (error: NodeJS.ErrnoException) => sessionErrors.push(String(error.code)))
    session.once("close", () => closed++)
    const next = () => {
      if (session.closed || session.destroyed) return
      const stream = session.request({ ":path": "/" })
      let ended = false
      stream.resume()
      stream.once("end", () => {
        ended = true
        answered++
        next()
      })
      stream.once("close", () => {
        if (!ended) failures.push({ id: stream.id, rstCode: stream.rstCode, lastStreamID })
      })
      stream.on("error", () => {})
    }
    session.once("connect", () => {
      for (let i = 0; i < concurrency; i++) next()
    })
    return session
  })
  return {
    answered: () => answered,
    failures,
    sessionErrors,
    closed: () => closed === sessions,
    destroy: () => clients.forEach((session) => session.destroy())
  }
}

const app = HttpRouter.serve(
  // A stream stays open for a moment, as a real handler's would.
  HttpRouter.add("GET", "/", Effect.as(Effect.sleep(Duration.millis(50)), HttpServerResponse.text("ok"))),
  { disableLogger: true, disableListenLog: true }
)

/**
 * One round: the server on a fresh listener, the load on it, and the drain once the load is under way. Yields the
 * load, for its counts, and the drain's report.
 */
const round = (options: Server.Options, client: Http2.SecureClientSessionOptions, scheme: "http" | "https") => {
  const capture = captureDrains()
  return Effect.gen(function* () {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      Layer.provideMerge(Layer.provide(app, Server.layer("127.0.0.1:0", options)), Listeners.layerFrom([])),
      scope
    )
    const [listener] = yield* Context.get(context, Listeners.Listeners).active
    const port = (listener!.address as NetAddress.InetAddress).port
    const traffic = yield* Effect.acquireRelease(
      Effect.sync(() => load(`${scheme}://127.0.0.1:${port}`, client, 8, 4)),
      (started) => Effect.sync(() => started.destroy())
    )
    yield* eventually(() => traffic.answered() >= 200, "200 streams answered before the drain")
    // The drain begins while streams are in flight and more are on their way.
    yield* Scope.close(scope, Exit.void)
    yield* eventually(traffic.closed, "every client session to close", "10 seconds")
    return { traffic, report: capture.drains[0] }
  }).pipe(Effect.provide(capture.layer), Effect.scoped)
}

const rounds = (options: Server.Options, client: Http2.SecureClientSessionOptions, scheme: "http" | "https") =>
  Effect.gen(function* () {
    for (let i = 0; i < 5; i++) {
      const { traffic, report } = yield* round(options, client, scheme)
      assert.deepStrictEqual(traffic.sessionErrors, [], `round ${i}: no session fails`)
      // A stream that fails was refused by the final GOAWAY (above its last stream ID): never run, safe to retry.
      for (const failure of traffic.failures) {
        assert.strictEqual(
          failure.rstCode,
          Http2.constants.NGHTTP2_REFUSED_STREAM,
          `round ${i}: ${JSON.stringify(failure)}`
        )
        assert.isAbove(failure.id!, failure.lastStreamID!, `round ${i}: refused above the last stream ID`)
      }
      assert.isDefined(report)
      // Every stream in flight at the drain, or sent before the client saw the GOAWAY, is counted, and completed.
      assert.include(report, { toldToGoAway: 8, forced: 0, cut: 0 }, `round ${i}`)
      assert.isAbove(report!.requests as number, 0, `round ${i}: streams in flight at the drain are counted`)
      assert.strictEqual(report!.completed, report!.requests, `round ${i}: every stream counted completes`)
    }
  })

/** Where h2load is, if it is installed (Debian: nghttp2-client). */
const h2load = ["/usr/bin/h2load", "/usr/local/bin/h2load"].find((path) => Fs.existsSync(path))

// -----------------------------------------------------------------------------
// Tests
// -----------------------------------------------------------------------------

describe("HTTP/2 at a drain", () => {
  it.live(
    "h2c, Node's client: a drain under load on 8 sessions of 4 streams completes every stream it accepts, 5 times",
    () => rounds({ createServer: () => Http2.createServer() }, {}, "http")
  )

  it.live(
    "h2 over TLS, Node's client: a drain under load on 8 sessions of 4 streams completes every stream it accepts, 5 times",
    () =>
      Effect.gen(function* () {
        const files = certificateFiles(yield* tempDir)
        const [key, cert] = [Fs.readFileSync(files.key), Fs.readFileSync(files.cert)]
        yield* rounds(
          { createServer: () => Http2.createSecureServer({ key, cert }) },
          { ca: cert, servername: "localhost" },
          "https"
        )
      })
  )

  // Skipped on a machine without h2load, never in CI (.ci/run installs it), where its absence fails.
  for (const kind of ["h2c", "h2"] as const) {
    it.live.skipIf(h2load === undefined && process.env.CI !== "true")(
      `h2load across restarts of a real process (${kind}): -c 8 -m 4, a restart mid-run, 3 times: no stream fails`,
      () =>
        Effect.gen(function* () {
          const tag = newTag()
          yield* killTaggedOnClose(tag)
          const port = yield* freePort()
          const { key, cert } = certificateFiles(yield* tempDir)
          const fixture = yield* spawnFixture("supervised", [`${kind}:${tag}=127.0.0.1:${port}`], {
            // A hand-off at once: each round restarts the generation the previous one left.
            env: { FIXTURE_TLS_KEY: key, FIXTURE_TLS_CERT: cert, GRACE_PROBATION: "0" }
          })
          yield* fixture.waitForLine(new RegExp(`"effect-grace: ready".*"pid":${fixture.pid}\\b`))
          let generation = fixture.pid
          for (let attempt = 1; attempt <= 3; attempt++) {
            generation = yield* restartUnderH2load(fixture, generation, port, kind === "h2" ? "https" : "http")
          }
        }),
      90_000
    )
  }
})

/** One round: h2load on the server's port, a restart of `generation` mid-run, no stream failed; the successor's pid. */
const restartUnderH2load = (fixture: Spawned, generation: number, port: number, scheme: "http" | "https") =>
  Effect.gen(function* () {
    const since = fixture.lines.length
    const run = yield* Effect.forkChild(
      Effect.callback<string, Error>((resume) => {
        const child = execFile(
          h2load!,
          ["-c", "8", "-m", "4", "-D", "3", `${scheme}://127.0.0.1:${port}/`],
          { timeout: 20_000 },
          (error, stdout) => resume(error === null ? Effect.succeed(stdout) : Effect.fail(error))
        )
        return Effect.sync(() => child.kill("SIGKILL"))
      })
    )
    // The load is on: h2load's 8 connections are established (the server's side of each, in /proc/net/tcp).
    const established = () =>
      Fs.readFileSync("/proc/net/tcp", "utf8")
        .split("\n")
        .filter((line) => {
          const fields = line.trim().split(/\s+/)
          return fields[1]?.endsWith(`:${port.toString(16).toUpperCase().padStart(4, "0")}`) && fields[3] === "01"
        }).length
    yield* eventually(() => established() >= 8, "h2load's 8 connections")
    process.kill(generation, "SIGUSR2")
    const ready = yield* fixture.waitForLineFrom(
      since,
      new RegExp(`"effect-grace: successor ready".*"pid":${generation},"successor":(\\d+)`)
    )
    // Only the old process drains here: the successor serves on.
    const drained = (yield* fixture.waitForLineFrom(since, /"effect-grace: drain finished"/)).input!
    const output = yield* Fiber.join(run)
    const requests = output.match(
      /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/
    )
    assert.isNotNull(requests, output)
    const [, total, succeeded, failed, errored] = requests!.map(Number)
    assert.deepStrictEqual({ failed, errored }, { failed: 0, errored: 0 }, output)
    assert.strictEqual(succeeded, total)
    assert.isAbove(succeeded!, 0)
    assert.match(drained, /"toldToGoAway":8\b/)
    assert.match(drained, /"cut":0\b/)
    return Number(ready[1])
  })
