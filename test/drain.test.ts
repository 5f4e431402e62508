import { afterEach, assert, beforeEach, describe, it, vi } from "@effect/vitest"
import { ActivityClock } from "../src/internal/drain.ts"

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
