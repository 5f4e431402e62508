/**
 * A second instance of a service on the addresses of the first (a deploy run
 * twice, a manual start beside systemd's) must not start: whatever the modes
 * of the two (a single process, or a primary with workers, whose sockets are
 * `SO_REUSEPORT` groups any process of the same user could join), it fails
 * with one line naming the address and `EADDRINUSE`, exits 1, and the first
 * instance answers every request.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { request } from "./support/http.ts"
import { freePort } from "./support/net.ts"
import { spawnFixture } from "./support/process.ts"
import { killTaggedOnClose, newTag } from "./support/fixture.ts"

type Mode = "single" | "workers"

const envOf = (mode: Mode): Record<string, string> => (mode === "workers" ? { GRACE_WORKERS: "2" } : {})

/** The supervised fixture on `address`, in `mode`, with its processes tagged for the clean-up. */
const instance = (mode: Mode, address: string) =>
  Effect.gen(function* () {
    const tag = newTag()
    yield* killTaggedOnClose(tag)
    return yield* spawnFixture("supervised", [`${tag}=${address}`], { env: envOf(mode) })
  })

const pidsAnswering = (url: string, times: number) =>
  Effect.forEach(Array.from({ length: times }), () =>
    Effect.map(request(`${url}worker`, { timeout: "5 seconds" }), (reply) => reply.body.trim())
  )

const cases: ReadonlyArray<readonly [Mode, Mode]> = [
  ["workers", "workers"],
  ["single", "single"],
  ["single", "workers"],
  ["workers", "single"]
]

describe("a second instance on the same address", () => {
  for (const [first, second] of cases) {
    it.live(
      `${second} beside ${first}: one line, exit 1, and the first answers every request`,
      () =>
        Effect.gen(function* () {
          const port = yield* freePort()
          const address = `127.0.0.1:${port}`
          const url = `http://${address}/`
          const one = yield* instance(first, address)
          yield* one.waitForLine(/"effect-grace: ready".*?"annotations":\{"pid":\d+,"listeners"/)
          const two = yield* instance(second, address)
          const exit = yield* two.closed("20 seconds")
          assert.deepStrictEqual(exit, { code: 1, signal: null })
          const errors = two.lines.filter((line) => line.includes('"level":"ERROR"'))
          assert.isTrue(
            errors.some((line) => line.includes(`cannot listen on ${address}: EADDRINUSE`)),
            `a line naming the address and EADDRINUSE:\n${two.lines.join("\n")}`
          )
          // `worker <slot> of <primary> pid <pid>`, or `single pid <pid>`: the first instance's, every one.
          const ours =
            first === "workers" ? new RegExp(`^worker \\d of ${one.pid} `) : new RegExp(`^single pid ${one.pid}$`)
          const answered = yield* pidsAnswering(url, 40)
          const others = answered.filter((who) => !ours.test(who))
          assert.deepStrictEqual(others, [], "only the first instance answers")
        }),
      { timeout: 40_000 }
    )
  }
})
