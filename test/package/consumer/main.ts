// A TypeScript program using effect-grace as a user installs it, typechecked with strict NodeNext settings.
import { Duration, Effect, Layer } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { Listeners, Server, Supervisor } from "effect-grace"
import * as ServerModule from "effect-grace/Server"

const describe = (reason: Supervisor.RestartErrorReason): string => {
  switch (reason._tag) {
    case "SpawnFailed":
      return `could not spawn: ${String(reason.cause)}`
    case "ExitedBeforeReady":
      return `exited with ${reason.code ?? reason.signal}`
    case "HandedBack":
      return `pid ${reason.pid} died within its probation, with ${reason.code ?? reason.signal}`
    case "NotReadyInTime":
      return `not ready within ${Duration.format(reason.timeout)}`
    case "NotServing":
      return `not serving: ${reason.state}`
    case "RestartUnsupported":
      return `not on ${reason.platform}: ${reason.detail}`
    default: {
      const unreachable: never = reason
      return unreachable
    }
  }
}

const restart = Effect.gen(function* () {
  const supervisor = yield* Supervisor.Supervisor
  return yield* supervisor.restart.pipe(
    Effect.map((pid) => HttpServerResponse.text(`restarted ${pid}\n`)),
    Effect.catchTag("RestartError", (error) =>
      Effect.succeed(HttpServerResponse.text(`${describe(error.reason)}\n`, { status: 409 }))
    )
  )
})

const Public = HttpRouter.serve(HttpRouter.add("GET", "/", HttpServerResponse.text("hello\n"))).pipe(
  Layer.provide(Server.layer(":8080", { drainTimeout: "10 seconds" }))
)
const Admin = HttpRouter.serve(HttpRouter.add("POST", "/restart", restart)).pipe(
  Layer.provide(ServerModule.layer({ name: "admin", address: "127.0.0.1:9090" }))
)

const banner: Effect.Effect<void, never, Listeners.Listeners> = Effect.gen(function* () {
  const listeners = yield* Listeners.Listeners
  for (const listener of yield* listeners.active) console.log(Listeners.formatAddress(listener.address))
})

export const App: Layer.Layer<never, unknown> = Supervisor.layer(
  Layer.mergeAll(Public, Admin, Layer.effectDiscard(banner))
)

export const main = (): void => Layer.launch(App).pipe(Supervisor.runMain({ disableErrorReporting: false }))

// The application's own tests get a supervisor without processes.
export const tested: Effect.Effect<string, never, never> = restart.pipe(
  Effect.map((response) => String(response.status)),
  Effect.provide(Supervisor.layerStub({ restart: Effect.succeed(42) }))
)

// Internals are closed, for the type checker as for Node.
// @ts-expect-error effect-grace/internal/* is not exported
export const internal = () => import("effect-grace/internal/sys")
