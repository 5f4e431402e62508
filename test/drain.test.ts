import { afterEach, assert, beforeEach, describe, it, vi } from "@effect/vitest"
import type * as Http2 from "node:http2"
import * as Net from "node:net"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { ActivityClock, Connection, goAwayGracefully, Tracker } from "../src/internal/drain.ts"

// The clock's own timer and time, under vitest's fake timers: each step below is exact.
describe("ActivityClock", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it("judges activity in the running epoch as happening now, and in an ended one as happening at its end", () => {
    const clock = new ActivityClock()
    vi.advanceTimersByTime(1000)
    const epoch = clock.touch()
    vi.advanceTimersByTime(4)
    assert.strictEqual(clock.latest(epoch, performance.now()), 1004)
    // The epoch ends 10 ms after its first activity: activity in it happened by then, and is never judged earlier.
    vi.advanceTimersByTime(6)
    assert.strictEqual(clock.latest(epoch, 1010), 1010)
    vi.advanceTimersByTime(500)
    assert.strictEqual(clock.latest(epoch, performance.now()), 1010)
    clock.stop()
  })

  it("runs no timer while nothing is active", () => {
    const clock = new ActivityClock()
    assert.strictEqual(vi.getTimerCount(), 0)
    const first = clock.touch()
    assert.strictEqual(clock.touch(), first)
    assert.strictEqual(vi.getTimerCount(), 1)
    vi.advanceTimersByTime(10)
    assert.strictEqual(vi.getTimerCount(), 0)
    // The next activity starts the next epoch, ending 10 ms later.
    vi.advanceTimersByTime(90)
    const second = clock.touch()
    assert.strictEqual(second, first + 1)
    vi.advanceTimersByTime(10)
    assert.strictEqual(clock.latest(second, performance.now()), 110)
    assert.strictEqual(clock.latest(first, performance.now()), 10)
    clock.stop()
    assert.strictEqual(vi.getTimerCount(), 0)
  })

  it("judges activity older than the epochs it remembers by the oldest it remembers: later, never earlier", () => {
    const clock = new ActivityClock()
    const old = clock.touch()
    vi.advanceTimersByTime(10)
    let latest = old
    for (let i = 0; i < 100; i++) {
      latest = clock.touch()
      vi.advanceTimersByTime(10)
    }
    assert.strictEqual(latest, old + 100)
    const now = performance.now()
    const judged = clock.latest(old, now)
    assert.isAbove(judged, 10)
    assert.isBelow(judged, now)
    // The 64 most recent epochs are remembered exactly.
    assert.strictEqual(clock.latest(latest, now), now)
    assert.strictEqual(clock.latest(latest - 63, now), now - 630)
    clock.stop()
  })
})

/** An HTTP/2 session as the drain sees it: what it was sent, and the PINGs waiting for their acks. */
const fakeSession = (options: { readonly pingRefused?: boolean } = {}) => {
  const sent: Array<string> = []
  const acks: Array<() => void> = []
  const session = {
    closed: false,
    destroyed: false,
    goaway: (code: number, last: number) => void sent.push(`goaway ${code} ${last}`),
    ping: (ack: () => void) => {
      if (options.pingRefused === true) return false
      sent.push("ping")
      acks.push(ack)
      return true
    },
    close: () => {
      sent.push("close")
      session.closed = true
    }
  }
  const connection = new Connection({ bytesRead: 0 } as Net.Socket, "session", 0)
  connection.session = session as unknown as Http2.ServerHttp2Session
  const streams = (open: number) => {
    connection.streams = open
    connection.streamsChanged?.()
  }
  return { sent, acks, connection, streams }
}

// The two GOAWAYs of RFC 9113, section 6.8, with the session's streams and PINGs played by hand.
describe("goAwayGracefully", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it("with streams open: a GOAWAY admitting every stream, then the final one after two PING round trips", () => {
    const { sent, acks, connection, streams } = fakeSession()
    streams(4)
    goAwayGracefully(connection)
    assert.deepStrictEqual(sent, [`goaway 0 ${2 ** 31 - 1}`, "ping"])
    acks[0]!()
    assert.deepStrictEqual(sent.slice(2), ["ping"], "the first ack may come ahead of streams: one more round trip")
    acks[1]!()
    assert.deepStrictEqual(sent.slice(3), ["close"])
    streams(0)
    vi.advanceTimersByTime(5000)
    assert.strictEqual(sent.filter((frame) => frame === "close").length, 1)
  })

  it("the final GOAWAY goes as soon as no stream is open, Node reading nothing more then", () => {
    const { sent, connection, streams } = fakeSession()
    streams(1)
    goAwayGracefully(connection)
    streams(0)
    assert.deepStrictEqual(sent, [`goaway 0 ${2 ** 31 - 1}`, "ping", "close"])
  })

  it("a quiet session is told once a stream arrives, or closed after the grace", () => {
    const told = fakeSession()
    goAwayGracefully(told.connection)
    assert.deepStrictEqual(told.sent, [])
    told.streams(1)
    assert.deepStrictEqual(told.sent, [`goaway 0 ${2 ** 31 - 1}`, "ping"])

    const quiet = fakeSession()
    goAwayGracefully(quiet.connection)
    vi.advanceTimersByTime(999)
    assert.deepStrictEqual(quiet.sent, [])
    vi.advanceTimersByTime(1)
    assert.deepStrictEqual(quiet.sent, ["close"])
  })

  it("without an ack (or a PING refused), the final GOAWAY goes after the grace (or at once)", () => {
    const silent = fakeSession()
    silent.streams(2)
    goAwayGracefully(silent.connection)
    vi.advanceTimersByTime(1000)
    assert.deepStrictEqual(silent.sent, [`goaway 0 ${2 ** 31 - 1}`, "ping", "close"])

    const refused = fakeSession({ pingRefused: true })
    refused.streams(2)
    goAwayGracefully(refused.connection)
    assert.deepStrictEqual(refused.sent, [`goaway 0 ${2 ** 31 - 1}`, "close"])
  })
})

// A server paused for a successor's probation drains, then serves again if the successor dies: its tracker too.
describe("Tracker, paused and resumed", () => {
  const settings = {
    timeout: Duration.seconds(30),
    idleGrace: Duration.millis(250),
    forced: Effect.never,
    started: Effect.succeed(true)
  }

  it.effect("a drain over before the hand-back is undone: serving again, and a later drain runs anew", () =>
    Effect.gen(function* () {
      const tracker = new Tracker()
      const paused = yield* tracker.drain(settings)
      assert.notStrictEqual(paused, "resumed", "nothing to drain: over at once")
      assert.isTrue(tracker.draining)
      tracker.resume()
      assert.isFalse(tracker.draining, "serving again")
      assert.isFalse(tracker.drainUnderway)
      assert.isFalse(yield* tracker.signal.isDraining)
      const final = yield* tracker.drain(settings)
      assert.notStrictEqual(final, "resumed")
      assert.isTrue(tracker.draining)
    })
  )

  it.effect("a drain under way ends as resumed, forcing nothing; without a resume, another drain joins it", () =>
    Effect.gen(function* () {
      const tracker = new Tracker()
      const socket = new Net.Socket()
      const connection = tracker.track(socket, "raw")
      tracker.begin(connection)
      const pausing = yield* Effect.forkChild(tracker.drain(settings))
      yield* Effect.yieldNow
      tracker.resume()
      assert.strictEqual(yield* Fiber.join(pausing), "resumed")
      assert.isFalse(socket.destroyed, "nothing forced")
      const again = yield* Effect.forkChild(tracker.drain(settings))
      yield* Effect.yieldNow
      const joined = yield* Effect.forkChild(tracker.drain(settings))
      yield* Effect.yieldNow
      tracker.end(connection)
      socket.destroy()
      const [first, second] = [yield* Fiber.join(again), yield* Fiber.join(joined)]
      assert.deepStrictEqual(first, second, "one drain, one report")
    })
  )
})
