/**
 * The grace demo: three HTTP ports, a slow endpoint, and restarts that drop
 * nothing.
 *
 *   node examples/demo.ts [--a0 :48567] [--a1 :48568] [--a2 :48569]
 *
 * `GET /sleep/?duration=20s` waits, then answers with the pid that served it;
 * `GET /readyz` and `GET /livez` answer the probes. `GRACE_SHUTDOWN_DELAY`
 * (say `5 seconds`) keeps it serving, unready, for that long after SIGTERM.
 * `kill -USR2 <pid>` restarts it gracefully; `kill -TERM <pid>` or Ctrl-C
 * stops it gracefully. Under `systemd-socket-activate -l ... -l ... -l ...`
 * it serves on the inherited sockets.
 */
import { parseArgs } from "node:util"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import { Health, Listeners, Server, Supervisor } from "../src/index.ts"

const { values: flags } = parseArgs({
  options: {
    a0: { type: "string", default: ":48567" },
    a1: { type: "string", default: ":48568" },
    a2: { type: "string", default: ":48569" }
  }
})

const goUnits: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 }

/** Go's duration syntax (`20s`, `1m30s`, `250ms`, `0`), or Effect's (`20 seconds`). */
export const parseDuration = (input: string): Option.Option<Duration.Duration> => {
  if (input === "0") return Option.some(Duration.zero)
  const parts = input.match(/^((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$/)
  if (parts !== null) {
    let nanos = 0
    for (const [, value, unit] of input.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/g)) {
      nanos += Number(value) * goUnits[unit!]!
    }
    return Option.some(Duration.nanos(BigInt(Math.round(nanos))))
  }
  return Duration.fromInput(input as Duration.Input)
}

const sleep = HttpRouter.add("GET", "/sleep/", (request) =>
  Effect.gen(function* () {
    const raw = new URL(request.url, "http://demo").searchParams.get("duration") ?? "0s"
    const duration = parseDuration(raw)
    if (Option.isNone(duration)) {
      return HttpServerResponse.text(
        `invalid duration ${JSON.stringify(raw)}: use Go's syntax (20s, 250ms, 1m30s) or Effect's (20 seconds)\n`,
        { status: 400 }
      )
    }
    const started = new Date()
    yield* Effect.sleep(duration.value)
    return HttpServerResponse.text(
      `started at ${started.toISOString()} slept for ${Duration.toNanosUnsafe(duration.value)} nanoseconds from pid ${process.pid}.\n`
    )
  })
)

const Routes = Layer.mergeAll(
  sleep,
  // GET /readyz and GET /livez, for the probes: unready from the moment a termination begins.
  Health.routes,
  HttpRouter.add(
    "GET",
    "/",
    HttpServerResponse.text(`effect-grace demo, pid ${process.pid}. Try /sleep/?duration=2s\n`)
  )
)

const serveOn = (address: string) =>
  HttpRouter.serve(Routes, { disableListenLog: true, disableLogger: true }).pipe(Layer.provide(Server.layer(address)))

const Servers = Layer.mergeAll(serveOn(flags.a0), serveOn(flags.a1), serveOn(flags.a2))

// Printed once every server listens, as the grace demo does.
const Banner = Layer.effectDiscard(
  Effect.gen(function* () {
    const listeners = yield* Listeners.Listeners
    const addresses = (yield* listeners.active).map((listener) => Listeners.formatAddress(listener.address))
    console.log(`Serving ${addresses.join(", ")} with pid ${process.pid}.`)
  })
).pipe(Layer.provide(Servers))

// Operator logs (ready, restart, drain), one logfmt line each, go to stderr; stdout has the banner alone.
Layer.launch(Supervisor.layer(Banner)).pipe(
  Effect.provide(Logger.layer([Logger.withConsoleError(Logger.formatLogFmt)])),
  Supervisor.runMain
)
