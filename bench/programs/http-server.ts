/**
 * The three servers `bench/http.ts` compares, one per process, each answering
 * every `GET /` with `200 hello` (text/plain):
 *
 *   node bench/programs/http-server.ts raw     a bare `node:http` server
 *   node bench/programs/http-server.ts node    an `HttpRouter` app on `NodeHttpServer.layer`
 *   node bench/programs/http-server.ts grace   the same app on effect-grace's `Server.layer`
 *
 * Each listens on a free port of 127.0.0.1, prints `listening http://127.0.0.1:PORT`
 * on stdout once it accepts, and stops on SIGTERM.
 */
import * as Http from "node:http"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServer from "effect/http/HttpServer"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Listeners from "../../src/Listeners.ts"
import * as Server from "../../src/Server.ts"

const target = process.argv[2]

const announce = (address: string) => console.log(`listening ${address}`)

const App = HttpRouter.add("GET", "/", HttpServerResponse.text("hello"))

// Request logging off: it would measure the logger.
const Serve = HttpRouter.serve(App, { disableLogger: true, disableListenLog: true })

const Announce = Layer.effectDiscard(
  Effect.gen(function* () {
    const server = yield* HttpServer.HttpServer
    announce(HttpServer.formatAddress(server.address))
  })
)

const serveEffect = <E>(server: Layer.Layer<HttpServer.HttpServer, E>) =>
  Layer.launch(Layer.mergeAll(Serve, Announce).pipe(Layer.provide(server))).pipe(NodeRuntime.runMain)

switch (target) {
  case "raw": {
    const server = Http.createServer((_request, response) => {
      response.writeHead(200, { "content-type": "text/plain", "content-length": 5 })
      response.end("hello")
    })
    server.listen(0, "127.0.0.1", () => announce(`http://127.0.0.1:${(server.address() as { port: number }).port}`))
    process.once("SIGTERM", () => {
      server.close()
      server.closeAllConnections()
    })
    break
  }
  case "node":
    serveEffect(NodeHttpServer.layer(() => Http.createServer(), { port: 0, host: "127.0.0.1" }))
    break
  case "grace":
    serveEffect(Server.layer("127.0.0.1:0").pipe(Layer.provide(Listeners.layerFrom([]))))
    break
  default:
    throw new Error(`unknown target ${JSON.stringify(target)}: use raw, node or grace`)
}
