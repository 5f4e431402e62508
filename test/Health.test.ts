import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as Layer from "effect/Layer"
import type * as NetAddress from "effect/net/NetAddress"
import * as Health from "../src/Health.ts"
import * as Listeners from "../src/Listeners.ts"
import * as Server from "../src/Server.ts"
import { request } from "./support/http.ts"

describe("Health", () => {
  it.live("/readyz follows the application marking itself unready and ready again; /livez stays 200", () =>
    Effect.gen(function* () {
      const app = HttpRouter.serve(Health.routes, { disableLogger: true, disableListenLog: true }).pipe(
        Layer.provide(Server.layer("127.0.0.1:0")),
        Layer.provideMerge(Health.layer),
        Layer.provideMerge(Listeners.layerFrom([]))
      )
      const context = yield* Layer.build(app)
      const health = Context.get(context, Health.Health)
      const [listener] = yield* Context.get(context, Listeners.Listeners).active
      const base = `http://127.0.0.1:${(listener!.address as NetAddress.InetAddress).port}`
      const probe = (path: string) => Effect.map(request(`${base}${path}`), (reply) => [reply.status, reply.body])

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

  it.effect("the supervisor's phases: not ready while starting, stopping or handed off", () =>
    Effect.gen(function* () {
      const { health, setPhase } = Health.make()
      assert.deepStrictEqual(yield* health.status, { ready: false, live: true, reasons: ["starting"] })
      setPhase("serving")
      assert.isTrue((yield* health.status).ready)
      for (const phase of ["stopping", "handed off"] as const) {
        setPhase(phase)
        assert.deepStrictEqual(yield* health.status, { ready: false, live: true, reasons: [phase] })
      }
    })
  )
})
