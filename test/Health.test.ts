import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as Layer from "effect/Layer"
import type * as NetAddress from "effect/net/NetAddress"
import * as Health from "../src/Health.ts"
import * as DrainInternal from "../src/internal/drain.ts"
import * as Listeners from "../src/Listeners.ts"
import * as Server from "../src/Server.ts"
import { request } from "./support/http.ts"

/** `Health.routes` on a server of its own, with `health`; the shutdown delay begins when `closing` completes. */
const serveRoutes = (health: Health.Health["Service"], closing = Deferred.makeUnsafe<void>()) =>
  Effect.gen(function* () {
    const app = HttpRouter.serve(Health.routes, { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provide(Server.layer("127.0.0.1:0")),
      Layer.provide(Layer.succeed(DrainInternal.Closing)(Deferred.await(closing))),
      Layer.provideMerge(Layer.succeed(Health.Health)(health)),
      Layer.provideMerge(Listeners.layerFrom([]))
    )
    const context = yield* Layer.build(app)
    const [listener] = yield* Context.get(context, Listeners.Listeners).active
    const base = `http://127.0.0.1:${(listener!.address as NetAddress.InetAddress).port}`
    // Each probe on a connection of its own, as a kubelet's.
    return (path: string) => Effect.map(request(`${base}${path}`), (reply) => [reply.status, reply.body])
  })

describe("Health", () => {
  it.live("/readyz follows the application marking itself unready and ready again; /livez stays 200", () =>
    Effect.gen(function* () {
      const { health } = Health.make("serving")
      const probe = yield* serveRoutes(health)

      assert.deepStrictEqual(yield* probe("/readyz"), [200, "ready\n"])
      yield* health.unready("database")
      yield* health.unready("cache")
      assert.deepStrictEqual(yield* probe("/readyz"), [503, "not ready: database, cache\n"])
      assert.deepStrictEqual(yield* probe("/livez"), [200, "live\n"])
      yield* health.ready("database")
      assert.deepStrictEqual(yield* probe("/readyz"), [503, "not ready: cache\n"])
      yield* health.ready("cache")
      assert.deepStrictEqual(yield* probe("/readyz"), [200, "ready\n"])
    }).pipe(Effect.scoped)
  )

  it.live("during the shutdown delay the server still answers: /readyz says 503 stopping, /livez 200", () =>
    Effect.gen(function* () {
      const { health, setPhase } = Health.make("serving")
      const closing = Deferred.makeUnsafe<void>()
      const probe = yield* serveRoutes(health, closing)
      assert.deepStrictEqual(yield* probe("/readyz"), [200, "ready\n"])

      // As the supervisor does when a termination begins: unready first, then the delay (new connections served).
      setPhase("stopping")
      yield* Deferred.succeed(closing, undefined)
      assert.deepStrictEqual(yield* probe("/readyz"), [503, "not ready: stopping\n"])
      assert.deepStrictEqual(yield* probe("/livez"), [200, "live\n"], "a draining process is not killed")
      // A process that has handed off to a successor drains the same way.
      setPhase("handed off")
      assert.deepStrictEqual(yield* probe("/readyz"), [503, "not ready: handed off\n"])
      assert.deepStrictEqual(yield* probe("/livez"), [200, "live\n"])
    }).pipe(Effect.scoped)
  )

  it.effect("the supervisor's phases: not ready while starting, stopping or handed off; live in every phase", () =>
    Effect.gen(function* () {
      const { health, setPhase } = Health.make()
      assert.deepStrictEqual(yield* health.status, { ready: false, live: true, reasons: ["starting"] })
      setPhase("serving")
      assert.deepStrictEqual(yield* health.status, { ready: true, live: true, reasons: [] })
      yield* health.unready("database")
      for (const phase of ["stopping", "handed off"] as const) {
        setPhase(phase)
        assert.deepStrictEqual(yield* health.status, { ready: false, live: true, reasons: [phase, "database"] })
      }
    })
  )
})
