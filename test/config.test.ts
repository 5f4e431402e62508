/**
 * The settings read from the environment and the options: what is taken,
 * and the one line that refuses the rest (src/internal/config.ts,
 * src/internal/settings.ts).
 */
import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Variables from "../src/internal/config.ts"
import * as Settings from "../src/internal/settings.ts"

const withEnv = (env: Record<string, string>) =>
  Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown(env))

/** The settings of `options` in `env`, or the message that refuses them. */
const settle = (env: Record<string, string>, options: Settings.Options = {}) =>
  Settings.make(options).pipe(
    Effect.map((settings) => ({ settings, refused: undefined })),
    Effect.catch((error) => Effect.succeed({ settings: undefined, refused: error.message })),
    withEnv(env)
  )

describe("durations", () => {
  const cases: ReadonlyArray<readonly [string, number]> = [
    ["1s", 1000],
    ["1m30s", 90_000],
    ["250ms", 250],
    ["1.5h", 5_400_000],
    ["500us", 0.5],
    ["0", 0],
    ["30 seconds", 30_000],
    ["500 millis", 500]
  ]
  for (const [input, millis] of cases) {
    it(`${JSON.stringify(input)} is ${millis} ms`, () => {
      const parsed = Variables.parseDuration(input)
      assert.isTrue(Option.isSome(parsed))
      assert.strictEqual(Duration.toMillis(Option.getOrThrow(parsed)), millis)
    })
  }
  for (const input of ["banana", "1x", "s", "1 s s", "-1s", ""]) {
    it(`${JSON.stringify(input)} is refused`, () => assert.isTrue(Option.isNone(Variables.parseDuration(input))))
  }

  it.effect("every duration variable takes both syntaxes", () =>
    Effect.gen(function* () {
      const go = yield* settle({ GRACE_PROBATION: "1s", GRACE_READY_TIMEOUT: "1m30s", GRACE_SHUTDOWN_DELAY: "250ms" })
      const effect = yield* settle({ GRACE_PROBATION: "1 second", GRACE_READY_TIMEOUT: "90 seconds" })
      assert.strictEqual(Duration.toMillis(go.settings!.probation), 1000)
      assert.strictEqual(Duration.toMillis(go.settings!.readyTimeout), 90_000)
      assert.strictEqual(Duration.toMillis(go.settings!.shutdownDelay), 250)
      assert.strictEqual(Duration.toMillis(effect.settings!.probation), 1000)
      assert.strictEqual(Duration.toMillis(effect.settings!.readyTimeout), 90_000)
      const { refused } = yield* settle({ GRACE_PROBATION: "soon" })
      assert.include(refused, `GRACE_PROBATION="soon" is not a duration; use Go's syntax`)
    })
  )

  it.effect("a duration option given as a string takes both syntaxes too, and is refused in a line", () =>
    Effect.gen(function* () {
      const { settings } = yield* settle({}, { probation: "2s" as Duration.Input })
      assert.strictEqual(Duration.toMillis(settings!.probation), 2000)
      const { refused } = yield* settle({}, { readyTimeout: "later" as Duration.Input })
      assert.include(refused, `readyTimeout: "later" is not a duration`)
    })
  )
})

describe("workers", () => {
  it.effect("a count from 1 to 1024, or auto; empty is none (one process)", () =>
    Effect.gen(function* () {
      assert.strictEqual((yield* settle({ GRACE_WORKERS: "1024" })).settings!.workers, 1024)
      assert.strictEqual((yield* settle({ GRACE_WORKERS: " 3 " })).settings!.workers, 3)
      assert.isAtLeast((yield* settle({ GRACE_WORKERS: "auto" })).settings!.workers!, 1)
      assert.isUndefined((yield* settle({ GRACE_WORKERS: "" })).settings!.workers)
      assert.isUndefined((yield* settle({ GRACE_WORKERS: "  " })).settings!.workers)
      assert.isUndefined((yield* settle({})).settings!.workers)
    })
  )

  const tooMany = ["1025", "100000000", "4294967295", "4294967296", "99999999999999999999"]
  for (const raw of tooMany) {
    it.effect(`GRACE_WORKERS=${raw} is refused with the bound`, () =>
      Effect.gen(function* () {
        const { refused } = yield* settle({ GRACE_WORKERS: raw })
        assert.include(refused, `GRACE_WORKERS="${raw}" is more than 1024`)
      })
    )
  }

  for (const raw of ["0", "-1", "abc", "2.5", "1e3", "0x10", "+2", "02"]) {
    it.effect(`GRACE_WORKERS=${raw} is not a number of workers`, () =>
      Effect.gen(function* () {
        const { refused } = yield* settle({ GRACE_WORKERS: raw })
        assert.include(refused, `GRACE_WORKERS="${raw}" is not a number of workers`)
      })
    )
  }

  it.effect("GRACE_SURGE and the options have the same bound", () =>
    Effect.gen(function* () {
      assert.include((yield* settle({ GRACE_SURGE: "5000" })).refused, `GRACE_SURGE="5000" is more than 1024`)
      assert.include((yield* settle({ GRACE_SURGE: "0" })).refused, `GRACE_SURGE="0" is not a whole number`)
      assert.include((yield* settle({}, { workers: 4_294_967_296 })).refused, "workers: 4294967296 is more than 1024")
      assert.include((yield* settle({}, { surge: 1025 })).refused, "surge: 1025 is more than 1024")
      assert.include((yield* settle({}, { workers: 2.5 })).refused, "workers: 2.5 is not a whole number")
      assert.strictEqual((yield* settle({ GRACE_SURGE: "1024" })).settings!.surge, 1024)
    })
  )
})
