/**
 * A public HTTPS port (HTTP/2, and HTTP/1.1 for clients without it) and an
 * internal admin HTTP port in one process, each its own app, restarted and
 * stopped together without dropping a request. TLS sessions resume across
 * restarts; their ticket key is replaced every GRACE_TICKET_ROTATION
 * (24 hours by default).
 *
 *   node examples/https-admin.ts --key key.pem --cert cert.pem [--public :8443] [--admin 127.0.0.1:9090]
 *
 * Public:  GET  /            hello, with the pid that served it (try `curl --http2 -k`)
 * Admin:   GET  /health      ok
 *          POST /restart     restarts the whole process (new code, new certificates); 409 with the reason if it fails
 *
 * The listeners are named (`public`, `admin`), so a systemd socket unit can
 * pass them with `FileDescriptorName=public` and `FileDescriptorName=admin`.
 */
import { readFileSync } from "node:fs"
import { parseArgs } from "node:util"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import { Listeners, Server, Supervisor } from "../src/index.ts"

const { values: flags } = parseArgs({
  options: {
    key: { type: "string" },
    cert: { type: "string" },
    public: { type: "string", default: ":8443" },
    admin: { type: "string", default: "127.0.0.1:9090" }
  }
})
if (flags.key === undefined || flags.cert === undefined) {
  console.error(
    "usage: node examples/https-admin.ts --key key.pem --cert cert.pem [--public :8443] [--admin 127.0.0.1:9090]"
  )
  process.exitCode = 2
} else {
  // Read at start-up: a restart picks up renewed certificates, and clients resume their TLS sessions with it.
  const tls = { key: readFileSync(flags.key), cert: readFileSync(flags.cert) }

  const Public = HttpRouter.serve(
    HttpRouter.add("GET", "/", HttpServerResponse.text(`hello over TLS from pid ${process.pid}\n`)),
    { disableListenLog: true }
  ).pipe(Layer.provide(Server.layer({ name: "public", address: flags.public }, { https: tls, http2: true })))

  const restart = Effect.gen(function* () {
    const supervisor = yield* Supervisor.Supervisor
    return yield* supervisor.restart.pipe(
      Effect.map((pid) => HttpServerResponse.text(`restarted: pid ${pid} serves now\n`)),
      Effect.catchTag("RestartError", (error) =>
        Effect.succeed(HttpServerResponse.text(`${error.message}\n`, { status: 409 }))
      )
    )
  })

  const Admin = HttpRouter.serve(
    Layer.mergeAll(
      HttpRouter.add("GET", "/health", HttpServerResponse.text(`ok from pid ${process.pid}\n`)),
      HttpRouter.add("POST", "/restart", restart)
    ),
    { disableListenLog: true }
  ).pipe(Layer.provide(Server.layer({ name: "admin", address: flags.admin })))

  const Banner = Layer.effectDiscard(
    Effect.gen(function* () {
      const listeners = yield* Listeners.Listeners
      const active = yield* listeners.active
      const described = active.map((listener) => `${listener.name} ${Listeners.formatAddress(listener.address)}`)
      console.log(`Serving ${described.join(", ")} with pid ${process.pid}.`)
    })
  ).pipe(Layer.provide(Layer.mergeAll(Public, Admin)))

  Layer.launch(Supervisor.layer(Banner)).pipe(Effect.provideService(Logger.LogToStderr, true), Supervisor.runMain)
}
