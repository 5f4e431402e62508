// A plain Node program using effect-grace as a user installs it: `PORT=8080 node main.mjs`.
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { Server, Supervisor } from "effect-grace"

const text = (body, status = 200) => HttpServerResponse.text(body, { status })

const restart = Effect.gen(function* () {
  const supervisor = yield* Supervisor.Supervisor
  return yield* supervisor.restart.pipe(
    Effect.map((pid) => text(`restarted ${pid}\n`)),
    Effect.catchTag("RestartError", (error) => Effect.succeed(text(`${error.reason._tag}: ${error.message}\n`, 409)))
  )
})

const Routes = Layer.mergeAll(
  HttpRouter.add(
    "GET",
    "/",
    Effect.sync(() => text(`pid ${process.pid}\n`))
  ),
  HttpRouter.add("POST", "/restart", restart)
)

const App = HttpRouter.serve(Routes, { disableListenLog: true, disableLogger: true }).pipe(
  Layer.provide(Server.layer(`127.0.0.1:${process.env.PORT}`))
)

Layer.launch(Supervisor.layer(App)).pipe(Supervisor.runMain)
