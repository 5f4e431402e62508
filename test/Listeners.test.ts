import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as NetAddress from "effect/net/NetAddress"
import * as Result from "effect/Result"
import * as Scope from "effect/Scope"
import * as Dns from "node:dns"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as ListenFds from "../src/ListenFds.ts"
import * as Listeners from "../src/Listeners.ts"
import * as Sys from "../src/internal/sys.ts"
import { exchange, freePort } from "./support/net.ts"
import { nodePath, spawnProcess } from "./support/process.ts"
import { tempDir } from "./support/fs.ts"

/** A listening socket bound here, standing in for one passed by a service manager. */
const passedFd = (address: string, name: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const parsed = Listeners.parseAddress(address)
      assert.isTrue(Result.isSuccess(parsed))
      const wanted = (parsed as Result.Success<Listeners.ParsedAddress, never>).success
      assert.notStrictEqual(wanted._tag, "HostName", "a numeric address")
      const socketAddress =
        wanted._tag === "Unix"
          ? NetAddress.unixPathAddress(wanted.path)
          : NetAddress.inetAddressUnsafe(
              (wanted.host as NetAddress.IpAddress) ?? NetAddress.ipv6Unspecified,
              wanted.port
            )
      const fd = Sys.bindListen(socketAddress, 16)
      assert.isTrue(Result.isSuccess(fd), `bind ${address}`)
      const bound = (fd as Result.Success<number, never>).success
      return { fd: bound, inode: Fs.fstatSync(bound).ino }
    }),
    // Listeners owns a passed fd once it is claimed, and may have closed it already.
    ({ fd, inode }) => Effect.sync(() => closeIfStill(fd, inode))
  ).pipe(Effect.flatMap(({ fd }) => ListenFds.checkFd(fd, name)))

const closeIfStill = (fd: number, inode: number) => {
  try {
    if (Fs.fstatSync(fd).ino === inode) Fs.closeSync(fd)
  } catch {
    // Already closed.
  }
}

const portOf = (listener: Listeners.Listener) => (listener.address as NetAddress.InetAddress).port

/** Serves a listener with a server that answers each connection with `text` and closes. */
const answer = (listener: Listeners.Listener, text: string) =>
  Listeners.serve(
    listener,
    Net.createServer((socket) => socket.end(text))
  )

const listenersOver = Listeners.make

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

const reasonOf = <A>(effect: Effect.Effect<A, Listeners.ListenersError, Scope.Scope>) =>
  Effect.map(Effect.flip(effect), (error) => error.reason)

describe("Listeners", () => {
  describe("parseAddress", () => {
    const ok = (input: string) => {
      const parsed = Listeners.parseAddress(input)
      assert.isTrue(Result.isSuccess(parsed), input)
      return (parsed as Result.Success<Listeners.ParsedAddress, never>).success
    }

    it("accepts the address forms", () => {
      // Every interface, both families, as Node's listen(8080) and listen(8080, "::").
      assert.deepStrictEqual(ok(":8080"), { _tag: "Tcp", host: undefined, port: 8080 })
      assert.deepStrictEqual(ok("8080"), { _tag: "Tcp", host: undefined, port: 8080 })
      assert.deepStrictEqual(ok("[::]:8080"), { _tag: "Tcp", host: undefined, port: 8080 })
      // Every IPv4 interface only, as Node's listen(8080, "0.0.0.0").
      const any4 = ok("0.0.0.0:8080")
      assert.strictEqual(any4._tag === "Tcp" && any4.host && NetAddress.formatIp(any4.host), "0.0.0.0")
      assert.deepStrictEqual(ok("localhost:8080"), { _tag: "HostName", host: "localhost", port: 8080 })
      assert.deepStrictEqual(ok("api.example.com.:443"), { _tag: "HostName", host: "api.example.com.", port: 443 })
      const v4 = ok("127.0.0.1:0")
      assert.strictEqual(v4._tag === "Tcp" && v4.host && NetAddress.formatIp(v4.host), "127.0.0.1")
      const v6 = ok("[::1]:9000")
      assert.strictEqual(v6._tag === "Tcp" && v6.host && NetAddress.formatIp(v6.host), "::1")
      assert.deepStrictEqual(ok("/run/app.sock"), { _tag: "Unix", path: "/run/app.sock" })
      assert.deepStrictEqual(ok("./app.sock"), { _tag: "Unix", path: Path.resolve("app.sock") })
      assert.deepStrictEqual(ok("@app"), { _tag: "Unix", path: "@app" })
    })

    const bad = {
      ":http": "port must be 0 to 65535",
      ":65536": "port must be 0 to 65535",
      "99999": "port must be 0 to 65535",
      ":-1": "port must be 0 to 65535",
      localhost: "no port",
      "::1:80": "an IPv6 address goes in brackets",
      "[::1]": "no port",
      "[::1]:": "port must be 0 to 65535",
      "[nope]:80": "IPv6",
      "1.2.3.4:": "port must be 0 to 65535",
      "999.1.1.1:80": "octets must be at most 255",
      "a b:80": "neither an IP address nor a host name",
      "-dash:80": "neither an IP address nor a host name",
      "@": "empty abstract name",
      "": "no port"
    }
    for (const [input, detail] of Object.entries(bad)) {
      it(`rejects ${JSON.stringify(input)} in one line naming the address`, () => {
        const parsed = Listeners.parseAddress(input)
        assert.isTrue(Result.isFailure(parsed))
        const error = (parsed as Result.Failure<never, Listeners.InvalidAddress>).failure
        assert.strictEqual(error._tag, "InvalidAddress")
        assert.include(error.message, `invalid listen address ${JSON.stringify(input)}: `)
        assert.include(error.message, detail)
        assert.notInclude(error.message, "\n")
      })
    }
  })

  describe("binding", () => {
    it.live("binds a free port, resolves it, and accepts only once served", () =>
      Effect.gen(function* () {
        const listeners = yield* listenersOver([])
        const listener = yield* listeners.listen("127.0.0.1:0")
        assert.isFalse(listener.inherited)
        assert.strictEqual(listener.name, "unknown")
        assert.notStrictEqual(portOf(listener), 0)
        assert.strictEqual(Listeners.formatAddress(listener.address), `127.0.0.1:${portOf(listener)}`)
        // A connection made before the server is ready waits in the backlog and is answered once it serves.
        const early = yield* Effect.forkChild(exchange({ port: portOf(listener) }))
        yield* answer(listener, "served")
        assert.strictEqual(yield* Fiber.join(early), "served")
        assert.deepStrictEqual(
          (yield* listeners.active).map((l) => l.fd),
          [listener.fd]
        )
      })
    )

    it.live("an address in use is a typed error naming the address", () =>
      Effect.gen(function* () {
        const listeners = yield* listenersOver([])
        const first = yield* listeners.listen("127.0.0.1:0")
        const address = `127.0.0.1:${portOf(first)}`
        const reason = yield* reasonOf(listeners.listen(address))
        assert.strictEqual(reason._tag, "BindFailed")
        assert.strictEqual((reason as Listeners.BindFailed).code, "EADDRINUSE")
        assert.include(reason.message, address)
      })
    )

    it.live("addresses as Node's listen reads them: 0.0.0.0 is IPv4 only, :port, a port and [::] both families", () =>
      Effect.gen(function* () {
        const listeners = yield* listenersOver([])
        const families = (address: string) =>
          Effect.scoped(
            Effect.gen(function* () {
              const listener = yield* listeners.listen(address)
              yield* answer(listener, "hi")
              return yield* answersOn(portOf(listener))
            })
          )
        assert.deepStrictEqual(yield* families("0.0.0.0:0"), [true, false])
        assert.deepStrictEqual(yield* families(":0"), [true, true])
        assert.deepStrictEqual(yield* families("0"), [true, true])
        assert.deepStrictEqual(yield* families("[::]:0"), [true, true])
        assert.deepStrictEqual(yield* families("[::1]:0"), [false, true])
      })
    )

    it.live("a host name is bound at the first address dns.lookup gives, as Node's listen does", () =>
      Effect.gen(function* () {
        const first = yield* Effect.promise(() => Dns.promises.lookup("localhost"))
        const listeners = yield* listenersOver([])
        const listener = yield* listeners.listen("localhost:0")
        const host = NetAddress.formatIp((listener.address as NetAddress.InetAddress).address)
        assert.strictEqual(host, first.address)
        yield* answer(listener, "by name")
        assert.strictEqual(yield* exchange({ port: portOf(listener), host }), "by name")
        // Its lookup ends after a later numeric address is bound; the listeners stay in the order asked for.
        const [named, numeric] = yield* Effect.all([listeners.listen("localhost:0"), listeners.listen("127.0.0.1:0")], {
          concurrency: "unbounded"
        })
        assert.deepStrictEqual(yield* listeners.active, [listener, named, numeric])
      })
    )

    it.live("an address no interface has, and a malformed address, are typed errors", () =>
      Effect.gen(function* () {
        const listeners = yield* listenersOver([])
        const unavailable = yield* reasonOf(listeners.listen("192.0.2.1:0"))
        assert.strictEqual((unavailable as Listeners.BindFailed).code, "EADDRNOTAVAIL")
        assert.include(unavailable.message, "192.0.2.1:0")
        const malformed = yield* reasonOf(listeners.listen("localhost"))
        assert.strictEqual(malformed._tag, "InvalidAddress")
        // RFC 6761: no name under .invalid resolves.
        const unknown = yield* reasonOf(listeners.listen("nowhere.invalid:0"))
        assert.strictEqual(unknown._tag, "BindFailed")
        assert.include(unknown.message, "cannot listen on nowhere.invalid:0: ")
        assert.notInclude(unknown.message, "\n")
      })
    )

    it.live("a name that was not passed, with no address to bind, is a typed error", () =>
      Effect.gen(function* () {
        const web = yield* passedFd("127.0.0.1:0", "web")
        const listeners = yield* listenersOver([web])
        const reason = yield* reasonOf(listeners.listen({ name: "admin" }))
        assert.strictEqual(reason._tag, "NameNotFound")
        assert.include(reason.message, '"admin"')
        assert.include(reason.message, "web (127.0.0.1:")
      })
    )

    it.live("a name that cannot travel in LISTEN_FDNAMES is a typed error", () =>
      Effect.gen(function* () {
        const listeners = yield* listenersOver([])
        for (const name of ["a:b", "", "with space", "x".repeat(256)]) {
          const reason = yield* reasonOf(listeners.listen({ name, address: "127.0.0.1:0" }))
          assert.strictEqual(reason._tag, "InvalidName", name)
        }
        const ok = yield* listeners.listen({ name: "admin-2.internal_x", address: "127.0.0.1:0" })
        assert.strictEqual(ok.name, "admin-2.internal_x")
      })
    )

    it.live("a serve interrupted before Node's listening event leaves the fd to the server: it is closed once", () =>
      Effect.gen(function* () {
        const listeners = yield* listenersOver([])
        const scope = yield* Scope.make()
        const listener = yield* listeners.listen("127.0.0.1:0").pipe(Scope.provide(scope))
        const server = Net.createServer()
        // Started at once, it has handed the fd to Node and waits for the listening event (a next tick away).
        const serving = yield* Effect.forkChild(Listeners.serve(listener, server), { startImmediately: true })
        assert.isTrue(server.listening)
        yield* Fiber.interrupt(serving)
        // As a server's drain does: its close closes the fd; the listener's scope must not close it again.
        server.close()
        const exit = yield* Effect.exit(Scope.close(scope, Effect.void as never))
        assert.isTrue(exit._tag === "Success", String(exit))
        const refused = yield* Effect.flip(exchange({ port: portOf(listener) }))
        assert.include(refused.message, "ECONNREFUSED")
      })
    )

    it.live("closing the scope closes the listener", () =>
      Effect.gen(function* () {
        const listeners = yield* listenersOver([])
        const scope = yield* Scope.make()
        const listener = yield* listeners.listen("127.0.0.1:0").pipe(Scope.provide(scope))
        yield* answer(listener, "hi")
        const port = portOf(listener)
        assert.strictEqual(yield* exchange({ port }), "hi")
        yield* Scope.close(scope, Effect.void as never)
        const refused = yield* Effect.flip(exchange({ port }))
        assert.include(refused.message, "ECONNREFUSED")
        assert.deepStrictEqual(yield* listeners.active, [])
      })
    )
  })

  describe("inheriting", () => {
    it.live("matches by name first, then by address; :port and [::]:port match an inherited [::]:port", () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const wildcard = yield* passedFd(`[::]:${port}`, "unknown")
        const admin = yield* passedFd("127.0.0.1:0", "admin")
        const local = yield* passedFd("127.0.0.1:0", "unknown")
        const listeners = yield* listenersOver([wildcard, admin, local])

        const byName = yield* listeners.listen({ name: "admin", address: "127.0.0.1:1" })
        assert.strictEqual(byName.fd, admin.fd)
        assert.isTrue(byName.inherited)
        assert.strictEqual(byName.name, "admin")

        const byWildcard = yield* listeners.listen(`:${port}`)
        assert.strictEqual(byWildcard.fd, wildcard.fd)
        assert.strictEqual(Listeners.formatAddress(byWildcard.address), `[::]:${port}`)

        // Port 0 takes the next inherited socket of that host: a successor keeps its predecessor's ports.
        const byPortZero = yield* listeners.listen("127.0.0.1:0")
        assert.strictEqual(byPortZero.fd, local.fd)
        assert.deepStrictEqual(yield* listeners.unclaimed, [])

        // Each inherited fd is taken once: a second ask binds anew (and here collides).
        const again = yield* reasonOf(listeners.listen(`[::]:${port}`))
        assert.strictEqual((again as Listeners.BindFailed).code, "EADDRINUSE")

        yield* answer(byWildcard, "inherited")
        assert.strictEqual(yield* exchange({ port }), "inherited")
        assert.deepStrictEqual(
          (yield* listeners.active).map((l) => l.fd),
          [admin.fd, wildcard.fd, local.fd]
        )
      })
    )

    it.live("a host name is not resolved for a listener that an inherited fd of its name provides", () =>
      Effect.gen(function* () {
        const admin = yield* passedFd("127.0.0.1:0", "admin")
        const listeners = yield* listenersOver([admin])
        // RFC 6761: no name under .invalid resolves.
        const byName = yield* listeners.listen({ name: "admin", address: "nowhere.invalid:9090" })
        assert.strictEqual(byName.fd, admin.fd)
        const unresolved = yield* reasonOf(listeners.listen({ name: "admin", address: "nowhere.invalid:9090" }))
        assert.include(["ENOTFOUND", "EAI_AGAIN"], (unresolved as Listeners.BindFailed).code)
      })
    )

    it.live("0.0.0.0:port matches an inherited IPv4 socket only; :port matches either", () =>
      Effect.gen(function* () {
        const [dual, v4, other] = [yield* freePort(), yield* freePort(), yield* freePort()]
        const passedDual = yield* passedFd(`[::]:${dual}`, "unknown")
        const passedV4 = yield* passedFd(`0.0.0.0:${v4}`, "unknown")
        const passedOther = yield* passedFd(`0.0.0.0:${other}`, "unknown")
        const listeners = yield* listenersOver([passedDual, passedV4, passedOther])
        // IPv4 only cannot be had from a socket that also serves IPv6: bound anew, it collides.
        const refused = yield* reasonOf(listeners.listen(`0.0.0.0:${dual}`))
        assert.strictEqual((refused as Listeners.BindFailed).code, "EADDRINUSE")
        assert.strictEqual((yield* listeners.listen(`0.0.0.0:${v4}`)).fd, passedV4.fd)
        assert.strictEqual((yield* listeners.listen(`${dual}`)).fd, passedDual.fd)
        // A wildcard binds 0.0.0.0 on a host without IPv6: such a socket is one it could have made.
        assert.strictEqual((yield* listeners.listen(`:${other}`)).fd, passedOther.fd)
      })
    )

    it.live("closeUnclaimed closes the inherited fds no one asked for", () =>
      Effect.gen(function* () {
        const used = yield* passedFd("127.0.0.1:0", "used")
        const spare = yield* passedFd("127.0.0.1:0", "spare")
        const spareInode = Fs.fstatSync(spare.fd).ino
        const listeners = yield* listenersOver([used, spare])
        yield* listeners.listen({ name: "used" })
        yield* listeners.closeUnclaimed
        const closed = (() => {
          try {
            return Fs.fstatSync(spare.fd).ino !== spareInode
          } catch {
            return true
          }
        })()
        assert.isTrue(closed)
        assert.isTrue(Fs.fstatSync(used.fd).isSocket())
      })
    )
  })

  describe("unix sockets", () => {
    it.live("a path bound here is unlinked on close, unless it was handed off", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const listeners = yield* listenersOver([])
        for (const handOff of [false, true]) {
          const path = Path.join(dir, `app-${handOff}.sock`)
          const scope = yield* Scope.make()
          const listener = yield* listeners.listen(path).pipe(Scope.provide(scope))
          assert.strictEqual(Listeners.formatAddress(listener.address), path)
          yield* answer(listener, "unix")
          assert.strictEqual(yield* exchange({ path }), "unix")
          if (handOff) yield* listeners.handOff
          yield* Scope.close(scope, Effect.void as never)
          assert.strictEqual(Fs.existsSync(path), handOff, path)
        }
      })
    )

    it.live("a socket file left by a process that is gone is replaced; a live one is not", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = Path.join(dir, "stale.sock")
        const listeners = yield* listenersOver([])
        // A path handed off and then closed stays behind, with no one accepting on it.
        const scope = yield* Scope.make()
        yield* listeners.listen(path).pipe(Scope.provide(scope))
        yield* listeners.handOff
        yield* Scope.close(scope, Effect.void as never)
        assert.isTrue(Fs.existsSync(path))
        const listener = yield* listeners.listen(path)
        yield* answer(listener, "fresh")
        assert.strictEqual(yield* exchange({ path }), "fresh")
        const reason = yield* reasonOf(listeners.listen(path))
        assert.strictEqual((reason as Listeners.BindFailed).code, "EADDRINUSE")
      })
    )

    it.live("an inherited unix socket is matched by path and its path is never unlinked", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = Path.join(dir, "passed.sock")
        const passed = yield* passedFd(path, "unknown")
        const listeners = yield* listenersOver([passed])
        const scope = yield* Scope.make()
        const listener = yield* listeners.listen(path).pipe(Scope.provide(scope))
        assert.isTrue(listener.inherited)
        yield* Scope.close(scope, Effect.void as never)
        assert.isTrue(Fs.existsSync(path))
      })
    )

    it.live("adopted from an inherited fd, the path survives the close of the process that bound it", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = Path.join(dir, "handed.sock")
        // This process binds the socket, passes it as fd 3 to a program on Listeners, and closes its own.
        const listeners = yield* listenersOver([])
        const scope = yield* Scope.make()
        const mine = yield* listeners.listen({ address: path, name: "api" }).pipe(Scope.provide(scope))
        const child = yield* spawnProcess(
          "/bin/sh",
          ["-c", 'LISTEN_PID=$$ exec "$0" "$@"', nodePath, fixture, `api=${path}`],
          {
            env: { LISTEN_FDS: "1", LISTEN_FDNAMES: "api" },
            stdio: ["ignore", "pipe", "pipe", mine.fd]
          }
        )
        yield* child.waitForLine(/^ready /)
        yield* listeners.handOff
        yield* Scope.close(scope, Effect.void as never)
        assert.isTrue(Fs.existsSync(path))
        const reply = JSON.parse(yield* exchange({ path }))
        assert.strictEqual(reply.pid, child.pid)
        assert.strictEqual(reply.name, "api")
        assert.isTrue(reply.inherited)
      })
    )
  })

  describe("systemd-socket-activate", () => {
    it.live("lazy activation: the first connection starts the program, which matches fds by name and address", () =>
      Effect.gen(function* () {
        const web = yield* freePort()
        const admin = yield* freePort()
        const activate = yield* spawnProcess("systemd-socket-activate", [
          `-l`,
          `127.0.0.1:${web}`,
          `-l`,
          `127.0.0.1:${admin}`,
          "--fdname=web:admin",
          nodePath,
          fixture,
          "admin=",
          `127.0.0.1:${web}`
        ])
        yield* activate.waitForErrorLine(new RegExp(`Listening on 127\\.0\\.0\\.1:${admin}`))
        assert.deepStrictEqual(activate.lines, [], "not started before the first connection")

        // This connection triggers the start and waits in the backlog until the program serves.
        const first = JSON.parse(yield* exchange({ port: admin }))
        assert.strictEqual(first.pid, activate.pid, "systemd-socket-activate execs the program in place")
        assert.strictEqual(first.name, "admin")
        assert.strictEqual(first.address, `127.0.0.1:${admin}`)
        assert.isTrue(first.inherited)

        const second = JSON.parse(yield* exchange({ port: web }))
        assert.strictEqual(second.name, "web")
        assert.isTrue(second.inherited)

        // A subprocess of the program sees no LISTEN_* variables and no listener fds (only ls's own fd 3).
        assert.deepStrictEqual(first.env, [])
        assert.deepStrictEqual(first.fds, [0, 1, 2, 3])
      })
    )

    it.live("unix socket listeners, and inherited fds the program does not ask for are closed", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const used = Path.join(dir, "used.sock")
        const unused = Path.join(dir, "unused.sock")
        const activate = yield* spawnProcess("systemd-socket-activate", [
          "-l",
          used,
          "-l",
          unused,
          nodePath,
          fixture,
          used
        ])
        yield* activate.waitForErrorLine(/Listening on .*unused\.sock/)
        const reply = JSON.parse(yield* exchange({ path: used }))
        assert.strictEqual(reply.address, used)
        assert.strictEqual(reply.name, "unknown")
        const ready = yield* activate.waitForLine(/^ready (.*)$/)
        assert.strictEqual(JSON.parse(ready[1]!).length, 1)
        // The unused one was closed: nothing in this process accepts there any more.
        const refused = yield* Effect.flip(exchange({ path: unused }))
        assert.match(refused.message, /ECONNREFUSED/)
      })
    )

    it.live("a fd that is not a listening socket stops the program with a typed error", () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        // LISTEN_FDS=2, but fd 4 is /dev/null.
        const activate = yield* spawnProcess("systemd-socket-activate", [
          "-l",
          `127.0.0.1:${port}`,
          "/bin/sh",
          "-c",
          'exec 4</dev/null; LISTEN_FDS=2 LISTEN_FDNAMES=a:b exec "$0" "$@"',
          nodePath,
          fixture,
          `127.0.0.1:${port}`
        ])
        yield* activate.waitForErrorLine(/Listening on/)
        yield* Effect.ignore(exchange({ port }, undefined, "2 seconds"))
        const line = yield* activate.waitForLine(/^error /)
        assert.match(line.input!, /^error BadFd socket activation: fd 4 \(b\) is not a socket/)
        const exit = yield* activate.exited()
        assert.strictEqual(exit.code, 1)
      })
    )
  })
})

const fixture = new URL("fixtures/listeners.ts", import.meta.url).pathname
