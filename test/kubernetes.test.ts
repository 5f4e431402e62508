/**
 * The demo as Kubernetes runs it: probes on /readyz and /livez, a shutdown
 * delay after SIGTERM, and the program as PID 1 of its own PID namespace (as
 * in a container), with real processes, signals and sockets on loopback.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Fs from "node:fs"
import { keepAliveLoad, request } from "./support/http.ts"
import { freePort } from "./support/net.ts"
import { eventually, isAlive, nodePath, spawnProcess } from "./support/process.ts"

const demo = new URL("../examples/demo.ts", import.meta.url).pathname

/** Three free ports, and the demo's flags for them. */
const threePorts = Effect.gen(function* () {
  const ports = [yield* freePort(), yield* freePort(), yield* freePort()]
  return { ports, flags: ports.map((port, i) => `--a${i}=127.0.0.1:${port}`) }
})

/** The pid, outside, of the init of the PID namespace that `unshare` made: its child. */
const initOf = (unshare: number) =>
  eventually(() => {
    const children = Fs.readFileSync(`/proc/${unshare}/task/${unshare}/children`, "utf8").trim()
    return children === "" ? undefined : Number(children.split(" ")[0])
  }, "the namespace's init")

/** The children of `pid` that are zombies. */
const zombiesOf = (pid: number): Array<number> =>
  Fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
    .trim()
    .split(" ")
    .filter(Boolean)
    .map(Number)
    .filter((child) => {
      try {
        const stat = Fs.readFileSync(`/proc/${child}/stat`, "utf8")
        return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")
      } catch {
        return false
      }
    })

/** The supervised fixture as PID 1 of a PID namespace of its own, ready; `init` is its pid outside. */
const fixtureAsInit = Effect.gen(function* () {
  const port = yield* freePort()
  const fixture = new URL("./fixtures/supervised.ts", import.meta.url).pathname
  const namespace = yield* spawnProcess("/usr/bin/unshare", [
    "--pid",
    "--fork",
    "--mount-proc",
    // If the test ends early, the namespace ends with unshare: its init is killed, and every process in it.
    "--kill-child",
    nodePath,
    fixture,
    `127.0.0.1:${port}`
  ])
  yield* namespace.waitForLine(/"effect-grace: ready"/)
  return { port, namespace, init: yield* initOf(namespace.pid) }
})

describe("Kubernetes and containers", () => {
  it.live(
    "SIGTERM with GRACE_SHUTDOWN_DELAY: /readyz turns 503 at once, the ports serve with Connection: close for the delay, then drain; exit 0",
    () =>
      Effect.gen(function* () {
        const { ports, flags } = yield* threePorts
        const program = yield* spawnProcess(nodePath, [demo, ...flags], {
          env: { GRACE_SHUTDOWN_DELAY: "2 seconds" }
        })
        yield* program.waitForLine(/^Serving /)
        const load = yield* keepAliveLoad(ports.map((port) => `http://127.0.0.1:${port}/`))
        yield* eventually(() => load.answers.length >= 300, "load on the three ports")
        // Probes on a new connection each time, as kubelet makes them.
        const probes: Array<{ at: number; status: number | string }> = []
        const probing = { on: true }
        const prober = yield* Effect.forkChild(
          Effect.gen(function* () {
            while (probing.on) {
              const reply = yield* Effect.result(request(`http://127.0.0.1:${ports[0]}/readyz`))
              probes.push({ at: Date.now(), status: reply._tag === "Success" ? reply.success.status : "refused" })
              yield* Effect.sleep("50 millis")
            }
          })
        )
        const slow = yield* Effect.forkChild(request(`http://127.0.0.1:${ports[1]}/sleep/?duration=3s`))
        yield* program.waitForErrorLine(/message="effect-grace: ready"/)
        assert.isTrue(probes.every((probe) => probe.status === 200))

        const sentAt = Date.now()
        process.kill(program.pid, "SIGTERM")
        const unready = yield* eventually(() => probes.find((p) => p.at > sentAt && p.status === 503), "a 503")
        assert.isBelow(unready.at - sentAt, 1000, "unready within a probe period")
        // The load balancer takes the pod out of rotation: the clients move away, and none of them failed.
        yield* load.stop
        assert.deepStrictEqual(load.failures, [])

        // During the delay: new connections are served, and told to close; the process is live.
        for (const port of ports) {
          const reply = yield* request(`http://127.0.0.1:${port}/`)
          assert.strictEqual(reply.status, 200)
          assert.strictEqual(reply.headers.connection, "close")
          const live = yield* request(`http://127.0.0.1:${port}/livez`)
          assert.deepStrictEqual([live.status, live.body], [200, "live\n"])
          const ready = yield* request(`http://127.0.0.1:${port}/readyz`)
          assert.deepStrictEqual([ready.status, ready.body], [503, "not ready: stopping\n"])
        }
        // Then the drain: new connections are refused, never before the delay has passed.
        yield* eventually(() => probes.some((p) => p.status === "refused"), "new connections refused", "10 seconds")
        const refusedAt = probes.find((p) => p.status === "refused")!.at
        assert.isAtLeast(refusedAt - sentAt, 2000)
        probing.on = false
        yield* Fiber.join(prober)
        const slowReply = yield* Fiber.join(slow)
        assert.strictEqual(slowReply.status, 200, "the request in flight finishes")
        assert.deepStrictEqual(yield* program.exited(), { code: 0, signal: null })
      }),
    { timeout: 30_000 }
  )

  it.live(
    "as PID 1 of a PID namespace, a second SIGTERM during the drain ends the container at once",
    () =>
      Effect.gen(function* () {
        const { port, namespace, init } = yield* fixtureAsInit
        // A request that would hold the drain for 20 seconds (the fixture's drain timeout is 10).
        const stuck = yield* Effect.forkChild(Effect.result(request(`http://127.0.0.1:${port}/sleep?ms=20000`)))
        yield* namespace.waitForLine(/^sleeping 1$/)
        process.kill(init, "SIGTERM")
        yield* namespace.waitForLine(/"effect-grace: draining"/)
        const secondAt = Date.now()
        process.kill(init, "SIGTERM")
        const exit = yield* namespace.exited("10 seconds")
        assert.isBelow(Date.now() - secondAt, 5000, "well before the request's 20 seconds, or the drain's 10")
        assert.notStrictEqual(exit.code, 0, "a forced end is not a graceful one")
        assert.strictEqual((yield* Fiber.join(stuck))._tag, "Failure", "the request in flight was cut")
      }),
    { timeout: 30_000 }
  )

  it.live(
    "as PID 1 of a PID namespace, orphans left behind are reaped",
    () =>
      Effect.gen(function* () {
        const { port, namespace, init } = yield* fixtureAsInit
        // A shell's background job, orphaned once the shell exits: the kernel makes it PID 1's child.
        const orphan = Number((yield* request(`http://127.0.0.1:${port}/orphan`)).body.trim())
        assert.isAbove(orphan, 1)
        yield* eventually(() => zombiesOf(init).length > 0, "the orphan to exit, a zombie")
        yield* eventually(() => zombiesOf(init).length === 0, "the zombie to be reaped", "10 seconds")
        process.kill(init, "SIGTERM")
        assert.deepStrictEqual(yield* namespace.exited(), { code: 0, signal: null })
      }),
    { timeout: 30_000 }
  )

  it.live(
    "as PID 1 of a PID namespace: SIGUSR2 is refused and the container serves on; SIGTERM ends it with 0",
    () =>
      Effect.gen(function* () {
        const { ports, flags } = yield* threePorts
        const namespace = yield* spawnProcess("/usr/bin/unshare", [
          "--pid",
          "--fork",
          "--mount-proc",
          // If the test ends early, the namespace ends with unshare: its init is killed, and every process in it.
          "--kill-child",
          nodePath,
          demo,
          ...flags
        ])
        const banner = yield* namespace.waitForLine(/^Serving .* with pid (\d+)\.$/)
        assert.strictEqual(banner[1], "1", "the program is PID 1 inside")
        const outside = yield* initOf(namespace.pid)
        const load = yield* keepAliveLoad(ports.map((port) => `http://127.0.0.1:${port}/`))
        yield* eventually(() => load.answers.length >= 100, "load")
        process.kill(outside, "SIGUSR2")
        yield* namespace.waitForErrorLine(
          /restart failed: restarting in place is not possible here: this process is PID 1/
        )
        const answered = load.answers.length
        yield* eventually(() => load.answers.length >= answered + 100, "load after the refusal")
        yield* load.stop
        assert.deepStrictEqual(load.failures, [])
        assert.isTrue(isAlive(outside), "the container is still up")
        assert.isTrue(load.answers.every((reply) => reply.status === 200))

        process.kill(outside, "SIGTERM")
        assert.deepStrictEqual(yield* namespace.exited(), { code: 0, signal: null })
      }),
    { timeout: 30_000 }
  )
})
