/**
 * The path every platform without the native calls takes (macOS, Linux
 * without koffi), forced here with GRACE_NATIVE=off: CI runs on Linux only.
 * It is read through `Config`: the environment's for what reads the default
 * provider, and given to each provider a test makes (each test file runs in
 * its own worker).
 */
process.env.GRACE_NATIVE = "off"

import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as NetAddress from "effect/net/NetAddress"
import * as Result from "effect/Result"
import * as Dns from "node:dns"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as ListenFds from "../src/ListenFds.ts"
import * as Listeners from "../src/Listeners.ts"
import * as Notify from "../src/Notify.ts"
import * as Sys from "../src/internal/sys.ts"
import { request } from "./support/http.ts"
import { exchange, freePort } from "./support/net.ts"
import { spawnFixture } from "./support/process.ts"
import { tempDir } from "./support/fs.ts"

const withEnv = (env: Record<string, string>) =>
  Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ GRACE_NATIVE: "off", ...env })))

const answering = (text: string) => Net.createServer((socket) => socket.end(text))

/** Whether a served listener on `port` answers on the IPv4 and the IPv6 loopback; anything but a refusal fails. */
const answersOn = (port: number) => {
  const on = (host: string) =>
    Effect.map(Effect.result(exchange({ port, host }, undefined, "5 seconds")), (result) => {
      if (Result.isSuccess(result)) return true
      assert.include(result.failure.message, "ECONNREFUSED", host)
      return false
    })
  return Effect.all([on("127.0.0.1"), on("::1")])
}

describe("without the native calls", () => {
  it.effect("says why they are not available: GRACE_NATIVE=off, read through Config, and that alone", () =>
    Effect.gen(function* () {
      const native = yield* Sys.enabled.pipe(withEnv({}))
      assert.isFalse(native.available)
      assert.include((native as { reason: string }).reason, "GRACE_NATIVE=off")
      assert.isFalse((yield* Sys.enabled).available, "the environment's value, through the default provider")
      // The switch, not the platform: without it, on this Linux with koffi, they are used.
      assert.isTrue((yield* Sys.enabled.pipe(withEnv({ GRACE_NATIVE: "on" }))).available)
      assert.isTrue(Sys.native().available)
    })
  )

  it.live("a listener is bound through Node, reports its port, and answers nothing before it is served", () =>
    Effect.gen(function* () {
      const listeners = yield* Listeners.make([])
      const listener = yield* listeners.listen("127.0.0.1:0")
      assert.isUndefined(listener.fd)
      assert.isFalse(listener.inherited)
      const port = (listener.address as NetAddress.InetAddress).port
      assert.isAbove(port, 0)
      // A connection made now is held, and answered once a server is served on the listener.
      const early = yield* Effect.forkChild(exchange({ port }, undefined, "5 seconds"))
      yield* Effect.sleep("50 millis")
      assert.isUndefined(early.pollUnsafe())
      yield* Listeners.serve(listener, answering("served"))
      assert.strictEqual(yield* Fiber.join(early), "served")
      assert.strictEqual(yield* exchange({ port }), "served")
      // Stopping accepting refuses new connections.
      yield* Listeners.stopAccepting(listener)
      const refused = yield* Effect.flip(exchange({ port }))
      assert.include(refused.message, "ECONNREFUSED")
    }).pipe(Effect.scoped)
  )

  it.live("an address in use is a typed BindFailed", () =>
    Effect.gen(function* () {
      const listeners = yield* Listeners.make([])
      const first = yield* listeners.listen("127.0.0.1:0")
      const address = `127.0.0.1:${(first.address as NetAddress.InetAddress).port}`
      const error = yield* Effect.flip(listeners.listen(address))
      assert.strictEqual(error.reason._tag, "BindFailed")
      assert.strictEqual((error.reason as Listeners.BindFailed).code, "EADDRINUSE")
      assert.include(error.message, `cannot listen on ${address}: EADDRINUSE`)
    }).pipe(Effect.scoped)
  )

  it.live("addresses as Node's listen reads them: 0.0.0.0 is IPv4 only, :port, a port and [::] both families", () =>
    Effect.gen(function* () {
      const listeners = yield* Listeners.make([])
      const families = (address: string) =>
        Effect.scoped(
          Effect.gen(function* () {
            const listener = yield* listeners.listen(address)
            yield* Listeners.serve(listener, answering("hi"))
            return yield* answersOn((listener.address as NetAddress.InetAddress).port)
          })
        )
      assert.deepStrictEqual(yield* families("0.0.0.0:0"), [true, false])
      assert.deepStrictEqual(yield* families(":0"), [true, true])
      assert.deepStrictEqual(yield* families("0"), [true, true])
      assert.deepStrictEqual(yield* families("[::]:0"), [true, true])
    })
  )

  it.live("a host name is bound at the first address dns.lookup gives, as Node's listen does", () =>
    Effect.gen(function* () {
      const first = yield* Effect.promise(() => Dns.promises.lookup("localhost"))
      const listeners = yield* Listeners.make([])
      const listener = yield* listeners.listen("localhost:0")
      const { address, port } = listener.address as NetAddress.InetAddress
      assert.strictEqual(NetAddress.formatIp(address), first.address)
      yield* Listeners.serve(listener, answering("by name"))
      assert.strictEqual(yield* exchange({ port, host: first.address }), "by name")
    }).pipe(Effect.scoped)
  )

  it.live("a unix socket path: served, a stale socket file replaced, removed at the end", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const path = Path.join(dir, "app.sock")
      // A socket file that nothing accepts on any more.
      const stale = Net.createServer()
      yield* Effect.callback<void>((resume) => void stale.listen(path, () => resume(Effect.void)))
      Fs.renameSync(path, `${path}.keep`)
      yield* Effect.callback<void>((resume) => void stale.close(() => resume(Effect.void)))
      Fs.renameSync(`${path}.keep`, path)
      assert.isTrue(Fs.lstatSync(path).isSocket())

      yield* Effect.scoped(
        Effect.gen(function* () {
          const listeners = yield* Listeners.make([])
          const listener = yield* listeners.listen(path)
          assert.deepStrictEqual(listener.address, NetAddress.unixPathAddress(path))
          yield* Listeners.serve(listener, answering("over unix"))
          assert.strictEqual(yield* exchange({ path }), "over unix")
        })
      )
      assert.isFalse(Fs.existsSync(path))
    }).pipe(Effect.scoped)
  )

  it.effect("sockets passed in LISTEN_FDS are refused with a typed ListenFdsUnsupported", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        ListenFds.make({ unsetEnvironment: false }).pipe(withEnv({ LISTEN_PID: String(process.pid), LISTEN_FDS: "2" }))
      )
      assert.strictEqual(error._tag, "ListenFdsError")
      assert.strictEqual((error as ListenFds.ListenFdsError).reason._tag, "ListenFdsUnsupported")
      assert.include(error.message, "LISTEN_FDS passes 2 socket(s)")
      assert.include(error.message, "GRACE_NATIVE=off")
      // Outside socket activation, nothing to inherit and no error.
      assert.deepStrictEqual(yield* ListenFds.make({ unsetEnvironment: false }).pipe(withEnv({})), [])
    })
  )

  it.effect("NOTIFY_SOCKET is refused with a typed NotifyUnsupported; without it, notify does nothing", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Notify.make.pipe(withEnv({ NOTIFY_SOCKET: "/run/systemd/notify" })))
      assert.strictEqual(error._tag, "NotifyError")
      assert.strictEqual((error as Notify.NotifyError).reason._tag, "NotifyUnsupported")
      assert.include(error.message, 'NOTIFY_SOCKET="/run/systemd/notify" is set')
      const disabled = yield* Notify.make.pipe(withEnv({}))
      assert.isFalse(disabled.enabled)
      yield* disabled.ready
    })
  )

  it.live(
    "a supervised program serves, refuses a restart with the typed reason, and drains on SIGTERM",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const fixture = yield* spawnFixture("supervised", [`127.0.0.1:${port}`], { env: { GRACE_NATIVE: "off" } })
        yield* fixture.waitForLine(/"effect-grace: ready"/)
        const url = `http://127.0.0.1:${port}`
        assert.strictEqual((yield* request(`${url}/`)).body, `pid ${fixture.pid}\n`)

        const refused = yield* request(`${url}/restart`, { method: "POST" })
        assert.strictEqual(refused.status, 409)
        assert.strictEqual(refused.body, "failed RestartUnsupported\n")
        yield* fixture.waitForLine(
          /restarting in place is not possible here: .*GRACE_NATIVE=off.*"level":"WARN".*"reason":"RestartUnsupported"/
        )
        assert.strictEqual((yield* request(`${url}/`)).body, `pid ${fixture.pid}\n`)

        // A request in flight when SIGTERM arrives completes; then the process exits 0.
        const slow = yield* Effect.forkChild(request(`${url}/sleep?ms=500`))
        yield* fixture.waitForLine(new RegExp(`^sleeping ${fixture.pid}$`))
        process.kill(fixture.pid, "SIGTERM")
        assert.strictEqual((yield* Fiber.join(slow)).body, `slept 500 from pid ${fixture.pid}\n`)
        assert.deepStrictEqual(yield* fixture.exited(), { code: 0, signal: null })
      }),
    { timeout: 30_000 }
  )
})
