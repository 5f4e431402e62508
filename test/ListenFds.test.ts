import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as NetAddress from "effect/net/NetAddress"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as ListenFds from "../src/ListenFds.ts"
import * as Sys from "../src/internal/sys.ts"

const withEnv = (env: Record<string, string>) =>
  ListenFds.make({ unsetEnvironment: false }).pipe(
    Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown(env))
  )

const reasonOf = (env: Record<string, string>) =>
  Effect.map(Effect.flip(withEnv(env)), (error) => {
    assert.strictEqual(error._tag, "ListenFdsError")
    return (error as ListenFds.ListenFdsError).reason
  })

const pid = String(process.pid)

describe("ListenFds", () => {
  describe("outside socket activation", () => {
    it.effect("no variables: an empty set, no error", () =>
      Effect.gen(function* () {
        assert.deepStrictEqual(yield* withEnv({}), [])
      })
    )

    it.effect("LISTEN_FDS without LISTEN_PID: nothing was passed", () =>
      Effect.gen(function* () {
        assert.deepStrictEqual(yield* withEnv({ LISTEN_FDS: "2" }), [])
      })
    )

    it.effect("LISTEN_PID of another process: the fds are not ours, even when malformed", () =>
      Effect.gen(function* () {
        assert.deepStrictEqual(yield* withEnv({ LISTEN_PID: "1", LISTEN_FDS: "2" }), [])
        assert.deepStrictEqual(yield* withEnv({ LISTEN_PID: "1", LISTEN_FDS: "abc", LISTEN_FDNAMES: "a:b:c" }), [])
      })
    )
  })

  describe("malformed environment: a typed error", () => {
    for (const value of ["abc", "-1", "0", "1.5", " 2", "", "99999999999999999999", String(ListenFds.MAX_FDS + 1)]) {
      it.effect(`LISTEN_FDS=${JSON.stringify(value)}`, () =>
        Effect.gen(function* () {
          if (value === "") {
            // An empty value reads as unset: nothing was passed.
            assert.deepStrictEqual(yield* withEnv({ LISTEN_PID: pid, LISTEN_FDS: value }), [])
            return
          }
          const reason = yield* reasonOf({ LISTEN_PID: pid, LISTEN_FDS: value })
          assert.strictEqual(reason._tag, "InvalidVariable")
          assert.include(reason.message, "LISTEN_FDS")
          assert.include(reason.message, JSON.stringify(value))
        })
      )
    }

    it.effect("LISTEN_PID that is not a pid", () =>
      Effect.gen(function* () {
        const reason = yield* reasonOf({ LISTEN_PID: "self", LISTEN_FDS: "1" })
        assert.strictEqual(reason._tag, "InvalidVariable")
        assert.include(reason.message, "LISTEN_PID")
      })
    )

    it.effect("a name count that differs from LISTEN_FDS", () =>
      Effect.gen(function* () {
        const reason = yield* reasonOf({ LISTEN_PID: pid, LISTEN_FDS: "2", LISTEN_FDNAMES: "web:admin:extra" })
        assert.strictEqual(reason._tag, "NameCountMismatch")
        assert.include(reason.message, "3 name(s)")
        assert.include(reason.message, "LISTEN_FDS=2")
      })
    )
  })

  describe("the environment is removed after reading", () => {
    it.effect("whether or not parsing succeeded", () =>
      Effect.gen(function* () {
        const saved = { ...process.env }
        try {
          for (const env of [
            { LISTEN_PID: pid, LISTEN_FDS: "abc", LISTEN_FDNAMES: "x" },
            { LISTEN_PID: "1", LISTEN_FDS: "1", LISTEN_FDNAMES: "x" }
          ]) {
            Object.assign(process.env, env, { LISTEN_PIDFDID: "7" })
            yield* Effect.result(ListenFds.make())
            for (const variable of ListenFds.environmentVariables) assert.isUndefined(process.env[variable])
          }
        } finally {
          process.env = saved
        }
      })
    )
  })

  describe("checkFd: every passed fd must be a listening stream socket", () => {
    const problemOf = (fd: number) =>
      Effect.map(Effect.flip(ListenFds.checkFd(fd, "web")), (error) => {
        assert.strictEqual(error.reason._tag, "BadFd")
        assert.include(error.message, `fd ${fd} (web)`)
        return (error.reason as ListenFds.BadFd).problem
      })

    it.effect("a fd that is not open", () =>
      Effect.gen(function* () {
        const fd = Fs.openSync("/dev/null", "r")
        Fs.closeSync(fd)
        assert.strictEqual(yield* problemOf(fd), "not open")
      })
    )

    it.effect("a regular file", () =>
      Effect.gen(function* () {
        const fd = Fs.openSync("/dev/null", "r")
        yield* Effect.addFinalizer(() => Effect.sync(() => Fs.closeSync(fd)))
        assert.strictEqual(yield* problemOf(fd), "not a socket")
      })
    )

    it.effect("a datagram socket", () =>
      Effect.gen(function* () {
        const path = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-grace-")), "dgram.sock")
        yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(Path.dirname(path), { recursive: true })))
        const bound = Sys.bindDatagram(path)
        assert.isTrue(bound._tag === "Success")
        const fd = (bound as { success: number }).success
        yield* Effect.addFinalizer(() => Effect.sync(() => Fs.closeSync(fd)))
        assert.strictEqual(yield* problemOf(fd), "not a stream socket")
      })
    )

    it.live("a connected, not listening, TCP socket", () =>
      Effect.gen(function* () {
        const server = Net.createServer((socket) => socket.on("error", () => {}))
        yield* Effect.addFinalizer(() => Effect.sync(() => void server.close()))
        yield* Effect.callback<void>((resume) => {
          server.listen(0, "127.0.0.1", () => resume(Effect.void))
        })
        const client = Net.connect((server.address() as Net.AddressInfo).port, "127.0.0.1")
        yield* Effect.addFinalizer(() => Effect.sync(() => void client.destroy()))
        yield* Effect.callback<void>((resume) => {
          client.once("connect", () => resume(Effect.void))
        })
        const fd = (client as unknown as { _handle: { fd: number } })._handle.fd
        assert.strictEqual(yield* problemOf(fd), "not listening")
      })
    )

    it.effect("a listening socket: its address, and close-on-exec set", () =>
      Effect.gen(function* () {
        const bound = Sys.bindListen(NetAddress.inetAddressFromStringUnsafe("127.0.0.1:0"), 8)
        assert.isTrue(bound._tag === "Success")
        const fd = (bound as { success: number }).success
        yield* Effect.addFinalizer(() => Effect.sync(() => Fs.closeSync(fd)))
        const clear = Sys.setCloseOnExec(fd, false)
        assert.strictEqual(clear._tag, "Success")
        const inherited = yield* ListenFds.checkFd(fd, "web")
        assert.strictEqual(inherited.name, "web")
        assert.strictEqual(inherited.address._tag, "InetAddressV4")
        assert.notStrictEqual((inherited.address as NetAddress.InetAddressV4).port, 0)
        const cloexec = Sys.isCloseOnExec(fd)
        assert.isTrue(cloexec._tag === "Success" && cloexec.success)
      })
    )
  })
})
