import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Result from "effect/Result"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Notify from "../src/Notify.ts"
import * as Sys from "../src/internal/sys.ts"
import { tempDir } from "./support/fs.ts"

const configWith = (env: Record<string, string>) =>
  Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown(env))

const makeWith = (env: Record<string, string>) => Notify.make.pipe(configWith(env))

const reasonOf = <A>(effect: Effect.Effect<A, Notify.NotifyError | unknown>) =>
  Effect.map(Effect.flip(effect), (error) => {
    assert.instanceOf(error, Notify.NotifyError)
    return (error as Notify.NotifyError).reason
  })

const unwrap = <A>(result: Result.Result<A, Sys.SysError>): A => {
  if (Result.isFailure(result)) throw new Error(Sys.formatSysError(result.failure))
  return result.success
}

interface Receiver {
  readonly socket: string
  /** The next datagram, waited for with a bound (sends are synchronous, so it is normally there at once). */
  readonly next: Effect.Effect<string>
  /** Whether no datagram is waiting, without blocking. */
  readonly empty: Effect.Effect<boolean>
}

// A real unix datagram socket standing in for the service manager; its fd is closed when the scope closes.
const receiver = (socket: string): Effect.Effect<Receiver, never, Scope.Scope> =>
  Effect.gen(function* () {
    const fd = yield* Effect.acquireRelease(
      Effect.sync(() => unwrap(Sys.bindDatagram(socket))),
      (bound) => Effect.sync(() => Fs.closeSync(bound))
    )
    const poll = Effect.sync(() => {
      const received = Sys.receiveDatagram(fd)
      // sys.ts names errno 11 EWOULDBLOCK (its alias), so an empty queue can surface as a failure.
      if (Result.isFailure(received) && received.failure.code === "EWOULDBLOCK") return undefined
      return unwrap(received)
    })
    const next = poll.pipe(
      Effect.flatMap((datagram) =>
        datagram === undefined ? Effect.fail("nothing yet" as const) : Effect.succeed(datagram.toString())
      ),
      Effect.retry(Schedule.spaced("5 millis")),
      Effect.timeoutOrElse({
        duration: "2 seconds",
        orElse: () => Effect.die(new Error(`no datagram on ${socket} within 2 seconds`))
      }),
      // Retried until the timeout: "nothing yet" never gets out.
      Effect.orDie
    )
    return { socket, next, empty: Effect.map(poll, (datagram) => datagram === undefined) }
  })

const pathReceiver = Effect.flatMap(tempDir, (dir) => receiver(Path.join(dir, "notify.sock")))

describe("Notify", () => {
  describe("with NOTIFY_SOCKET set", () => {
    it.live(
      "sends READY, RELOADING with MONOTONIC_USEC, MAINPID with READY, STOPPING: one datagram each, in order",
      () =>
        Effect.gen(function* () {
          const manager = yield* pathReceiver
          const notify = yield* makeWith({ NOTIFY_SOCKET: manager.socket })
          assert.isTrue(notify.enabled)

          yield* notify.ready
          const before = process.hrtime.bigint() / 1000n
          yield* notify.reloading
          const after = process.hrtime.bigint() / 1000n
          yield* notify.mainPid(123, { ready: true })
          yield* notify.stopping

          assert.strictEqual(yield* manager.next, "READY=1")
          const reloading = (yield* manager.next).match(/^RELOADING=1\nMONOTONIC_USEC=(\d+)$/)
          assert.isNotNull(reloading)
          const usec = BigInt(reloading![1]!)
          // CLOCK_MONOTONIC, read during the call: not the wall clock, not milliseconds or nanoseconds.
          assert.isTrue(before <= usec && usec <= after, `${before} <= ${usec} <= ${after}`)
          assert.isTrue(usec < (BigInt(Date.now()) * 1000n) / 2n)
          assert.strictEqual(yield* manager.next, "MAINPID=123\nREADY=1")
          assert.strictEqual(yield* manager.next, "STOPPING=1")
          assert.isTrue(yield* manager.empty)
        })
    )

    it.live("MONOTONIC_USEC is read each time reloading runs", () =>
      Effect.gen(function* () {
        const manager = yield* pathReceiver
        const notify = yield* makeWith({ NOTIFY_SOCKET: manager.socket })
        yield* notify.reloading
        yield* Effect.sleep("2 millis")
        yield* notify.reloading
        const usec = (message: string) => BigInt(message.split("MONOTONIC_USEC=")[1]!)
        const first = usec(yield* manager.next)
        const second = usec(yield* manager.next)
        assert.isTrue(second - first >= 1000n, `${first} then ${second}`)
      })
    )

    it.live("the other messages, and any variables in order", () =>
      Effect.gen(function* () {
        const manager = yield* pathReceiver
        const notify = yield* makeWith({ NOTIFY_SOCKET: manager.socket })
        yield* notify.mainPid(4567)
        yield* notify.status("Serving on :8080, 3 connections")
        yield* notify.extendTimeout("5 seconds")
        yield* notify.extendTimeout(1.0004)
        yield* notify.notify([
          ["STATUS", "reloading config"],
          ["X_EFFECT_GRACE", "a=b"]
        ])
        yield* notify.notify({ WATCHDOG: "1", STATUS: "" })

        assert.strictEqual(yield* manager.next, "MAINPID=4567")
        assert.strictEqual(yield* manager.next, "STATUS=Serving on :8080, 3 connections")
        assert.strictEqual(yield* manager.next, "EXTEND_TIMEOUT_USEC=5000000")
        assert.strictEqual(yield* manager.next, "EXTEND_TIMEOUT_USEC=1001")
        assert.strictEqual(yield* manager.next, "STATUS=reloading config\nX_EFFECT_GRACE=a=b")
        assert.strictEqual(yield* manager.next, "WATCHDOG=1\nSTATUS=")
        assert.isTrue(yield* manager.empty)
      })
    )

    it.live("an abstract socket (@name), through the layer", () =>
      Effect.gen(function* () {
        const manager = yield* receiver(`@effect-grace-test-${process.pid}-${Math.random().toString(36).slice(2)}`)
        yield* Effect.gen(function* () {
          const notify = yield* Notify.Notify
          assert.isTrue(notify.enabled)
          yield* notify.ready
          yield* notify.mainPid(123, { ready: true })
        }).pipe(Effect.provide(Notify.layer), configWith({ NOTIFY_SOCKET: manager.socket }))
        assert.strictEqual(yield* manager.next, "READY=1")
        assert.strictEqual(yield* manager.next, "MAINPID=123\nREADY=1")
        assert.isTrue(yield* manager.empty)
      })
    )

    it.live("NOTIFY_SOCKET stays in the environment for a successor", () =>
      Effect.gen(function* () {
        const saved = process.env.NOTIFY_SOCKET
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            if (saved === undefined) delete process.env.NOTIFY_SOCKET
            else process.env.NOTIFY_SOCKET = saved
          })
        )
        const manager = yield* pathReceiver
        process.env.NOTIFY_SOCKET = manager.socket
        // The default ConfigProvider: the environment itself.
        const notify = yield* Notify.make
        yield* notify.ready
        assert.strictEqual(yield* manager.next, "READY=1")
        assert.strictEqual(process.env.NOTIFY_SOCKET, manager.socket)
      })
    )
  })

  describe("without NOTIFY_SOCKET: nothing is sent and nothing fails", () => {
    for (const [what, env] of [
      ["unset", {}],
      ["empty", { NOTIFY_SOCKET: "" }]
    ] as const) {
      it.live(what, () =>
        Effect.gen(function* () {
          const manager = yield* pathReceiver
          const notify = yield* makeWith(env)
          assert.isFalse(notify.enabled)
          yield* notify.ready
          yield* notify.reloading
          yield* notify.mainPid(123, { ready: true })
          yield* notify.stopping
          yield* notify.status("ignored")
          yield* notify.extendTimeout("1 second")
          // Not even checked: without a service manager there is nobody to tell.
          yield* notify.status("two\nlines")
          yield* notify.mainPid(-1)
          assert.isTrue(yield* manager.empty)
        })
      )
    }

    it.effect("layerNoop", () =>
      Effect.gen(function* () {
        const notify = yield* Notify.Notify
        assert.isFalse(notify.enabled)
        yield* notify.ready
        yield* notify.notify({ STATUS: "a\nb" })
      }).pipe(Effect.provide(Notify.layerNoop))
    )
  })

  describe("an unusable NOTIFY_SOCKET: a typed error when the layer is built", () => {
    for (const socket of [
      "run/notify.sock",
      "./notify.sock",
      "notify.sock",
      "@",
      "vsock:2:1234",
      `/${"x".repeat(107)}`
    ]) {
      it.effect(`NOTIFY_SOCKET=${JSON.stringify(socket.length > 40 ? `${socket.slice(0, 10)}...` : socket)}`, () =>
        Effect.gen(function* () {
          const reason = yield* reasonOf(
            Layer.build(Notify.layer).pipe(Effect.scoped, configWith({ NOTIFY_SOCKET: socket }))
          )
          assert.strictEqual(reason._tag, "InvalidSocket")
          assert.strictEqual((reason as Notify.InvalidSocket).socket, socket)
          assert.include(reason.message, "NOTIFY_SOCKET=")
          assert.include(reason.message, "unset it")
        })
      )
    }

    it.effect("the longest addresses still fit", () =>
      Effect.gen(function* () {
        const path = yield* makeWith({ NOTIFY_SOCKET: `/${"x".repeat(106)}` })
        const abstract = yield* makeWith({ NOTIFY_SOCKET: `@${"x".repeat(107)}` })
        assert.isTrue(path.enabled && abstract.enabled)
      })
    )
  })

  describe("a failed send: a typed SendFailed", () => {
    it.live("no socket at the path: ENOENT", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const notify = yield* makeWith({ NOTIFY_SOCKET: Path.join(dir, "missing.sock") })
        const reason = yield* reasonOf(notify.ready)
        assert.strictEqual(reason._tag, "SendFailed")
        const failed = reason as Notify.SendFailed
        assert.strictEqual(failed.code, "ENOENT")
        assert.strictEqual(failed.syscall, "sendto")
        assert.deepInclude(failed.cause as object, { code: "ENOENT" })
        assert.include(failed.message, "missing.sock")
        assert.include(failed.message, "ENOENT")
      })
    )

    it.live("a socket file that nothing receives on any more: ECONNREFUSED", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const socket = Path.join(dir, "gone.sock")
        Fs.closeSync(unwrap(Sys.bindDatagram(socket)))
        assert.isTrue(Fs.statSync(socket).isSocket())
        const notify = yield* makeWith({ NOTIFY_SOCKET: socket })
        const reason = yield* reasonOf(notify.stopping)
        assert.strictEqual(reason._tag, "SendFailed")
        assert.strictEqual((reason as Notify.SendFailed).code, "ECONNREFUSED")
        assert.include(reason.message, "gone away")
      })
    )

    it.live("an abstract name nobody bound: ECONNREFUSED", () =>
      Effect.gen(function* () {
        const notify = yield* makeWith({
          NOTIFY_SOCKET: `@effect-grace-test-unbound-${Math.random().toString(36).slice(2)}`
        })
        const reason = yield* reasonOf(notify.ready)
        assert.strictEqual(reason._tag, "SendFailed")
        assert.strictEqual((reason as Notify.SendFailed).code, "ECONNREFUSED")
      })
    )
  })

  describe("an invalid message: a typed InvalidMessage, and nothing sent", () => {
    const cases: ReadonlyArray<
      readonly [string, (notify: Notify.Notify["Service"]) => Effect.Effect<void, Notify.NotifyError>]
    > = [
      ["a newline in STATUS", (notify) => notify.status("line one\nline two")],
      [
        "a newline in a value among others",
        (notify) =>
          notify.notify([
            ["READY", "1"],
            ["STATUS", "a\n"]
          ])
      ],
      ["a NUL byte in a value", (notify) => notify.notify({ STATUS: "a\0b" })],
      ["a variable name with =", (notify) => notify.notify([["READY=1\nSTATUS", "x"]])],
      ["an empty variable name", (notify) => notify.notify([["", "x"]])],
      ["no variables", (notify) => notify.notify([])],
      ["a message over 4096 bytes", (notify) => notify.status("x".repeat(Notify.MAX_MESSAGE_BYTES))],
      ["MAINPID 0", (notify) => notify.mainPid(0, { ready: true })],
      ["MAINPID 1.5", (notify) => notify.mainPid(1.5)],
      ["an infinite timeout extension", (notify) => notify.extendTimeout("Infinity")],
      ["a negative timeout extension", (notify) => notify.extendTimeout(-5)]
    ]
    for (const [what, send] of cases) {
      it.live(what, () =>
        Effect.gen(function* () {
          const manager = yield* pathReceiver
          const notify = yield* makeWith({ NOTIFY_SOCKET: manager.socket })
          const reason = yield* reasonOf(send(notify))
          assert.strictEqual(reason._tag, "InvalidMessage")
          assert.include(reason.message, "nothing was sent")
          assert.isTrue(yield* manager.empty)
        })
      )
    }

    it.live("the longest message that fits is sent", () =>
      Effect.gen(function* () {
        const manager = yield* pathReceiver
        const notify = yield* makeWith({ NOTIFY_SOCKET: manager.socket })
        const text = "x".repeat(Notify.MAX_MESSAGE_BYTES - "STATUS=".length)
        yield* notify.status(text)
        assert.strictEqual(yield* manager.next, `STATUS=${text}`)
      })
    )
  })

  describe("layerCallback", () => {
    it.effect("hands over each datagram's text, checked as the real client does", () =>
      Effect.gen(function* () {
        const sent: Array<string> = []
        yield* Effect.gen(function* () {
          const notify = yield* Notify.Notify
          assert.isTrue(notify.enabled)
          yield* notify.ready
          yield* notify.mainPid(42, { ready: true })
          const reason = yield* reasonOf(notify.status("a\nb"))
          assert.strictEqual(reason._tag, "InvalidMessage")
          yield* notify.stopping
        }).pipe(Effect.provide(Notify.layerCallback((message) => Effect.sync(() => sent.push(message)))))
        assert.deepStrictEqual(sent, ["READY=1", "MAINPID=42\nREADY=1", "STOPPING=1"])
      })
    )
  })
})
