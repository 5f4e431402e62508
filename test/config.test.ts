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

describe("memory limit", () => {
  const MiB = 1024 * 1024
  const cases: ReadonlyArray<readonly [string, number]> = [
    ["536870912", 536_870_912],
    ["512MiB", 512 * MiB],
    ["1.5GiB", 1.5 * 1024 * MiB],
    ["800MB", 800_000_000],
    ["800 MB", 800_000_000],
    ["1G", 1024 * MiB],
    ["512M", 512 * MiB],
    ["1.5G", 1.5 * 1024 * MiB],
    ["64K", 64 * 1024],
    ["2 gibibytes", 2 * 1024 * MiB]
  ]
  for (const [input, bytes] of cases) {
    it(`${JSON.stringify(input)} is ${bytes} bytes`, () => {
      assert.deepStrictEqual(Variables.parseSize(input), Option.some(bytes))
    })
  }
  for (const input of ["0", "0MiB", "lots", "512 MiBs", "-1G", "1.5", "1.1B", "512mb", "1e9", "1P", ""]) {
    it(`${JSON.stringify(input)} is refused`, () => assert.isTrue(Option.isNone(Variables.parseSize(input))))
  }

  it.effect("GRACE_MAX_MEMORY and GRACE_MAX_MEMORY_GRACE, or the options; none and 10 seconds by default", () =>
    Effect.gen(function* () {
      const none = (yield* settle({})).settings!
      assert.isUndefined(none.maxMemory)
      assert.strictEqual(Duration.toMillis(none.maxMemoryGrace), 10_000)
      const set = (yield* settle({ GRACE_MAX_MEMORY: "512MiB", GRACE_MAX_MEMORY_GRACE: "30s" })).settings!
      assert.strictEqual(set.maxMemory, 512 * MiB)
      assert.strictEqual(Duration.toMillis(set.maxMemoryGrace), 30_000)
      assert.isUndefined((yield* settle({ GRACE_MAX_MEMORY: "" })).settings!.maxMemory)
      const options = (yield* settle({ GRACE_MAX_MEMORY: "1G" }, { maxMemory: "800MB", maxMemoryGrace: 500 })).settings!
      assert.strictEqual(options.maxMemory, 800_000_000)
      assert.strictEqual(Duration.toMillis(options.maxMemoryGrace), 500)
      assert.strictEqual((yield* settle({}, { maxMemory: 1_000_000 })).settings!.maxMemory, 1_000_000)
    })
  )

  it.effect("a bad size is refused in one line naming the forms accepted", () =>
    Effect.gen(function* () {
      const forms = `use bytes ("536870912"), or a number and a unit ("512MiB", "1.5GiB", "800MB", "1G")`
      assert.include(
        (yield* settle({ GRACE_MAX_MEMORY: "lots" })).refused,
        `GRACE_MAX_MEMORY="lots" is not a size; ${forms}`
      )
      assert.include(
        (yield* settle({}, { maxMemory: "512 mb" })).refused,
        `maxMemory: "512 mb" is not a size; ${forms}`
      )
      assert.include((yield* settle({}, { maxMemory: -1 })).refused, "maxMemory: -1 is not a size")
      assert.include((yield* settle({}, { maxMemory: 1.5 })).refused, "maxMemory: 1.5 is not a size")
      assert.include(
        (yield* settle({ GRACE_MAX_MEMORY_GRACE: "soon" })).refused,
        `GRACE_MAX_MEMORY_GRACE="soon" is not a duration`
      )
    })
  )
})
