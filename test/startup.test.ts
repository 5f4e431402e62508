/**
 * A program that cannot start says why in one line a person can read,
 * naming the bad value, and exits non-zero; the cause is shown on request.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Net from "node:net"
import { nodePath, spawnProcess } from "./support/process.ts"

const demo = new URL("../examples/demo.ts", import.meta.url).pathname
const free = ["--a1", "127.0.0.1:0", "--a2", "127.0.0.1:0"]

/** Runs the demo to its exit, bounded; yields its exit code and stderr lines. */
const run = (args: ReadonlyArray<string>, env: Record<string, string> = {}, shell = false) =>
  Effect.gen(function* () {
    const spawned = shell
      ? // LISTEN_PID must be the program's own pid, as a service manager sets it: the shell execs node in place.
        yield* spawnProcess("/bin/sh", ["-c", 'LISTEN_PID=$$ exec "$0" "$@"', nodePath, demo, ...args], { env })
      : yield* spawnProcess(nodePath, [demo, ...args], { env })
    const exit = yield* spawned.closed("20 seconds")
    return { exit, errors: spawned.errors, lines: spawned.lines }
  })

const assertOneLine = (
  result: { readonly exit: { code: number | null }; readonly errors: ReadonlyArray<string> },
  ...wanted: ReadonlyArray<string>
) => {
  assert.strictEqual(result.exit.code, 1)
  assert.strictEqual(result.errors.length, 1, result.errors.join("\n"))
  const line = result.errors[0]!
  assert.match(line, /message="effect-grace: cannot start: /)
  for (const text of wanted) assert.include(line, text)
  assert.notInclude(line, "src/")
  assert.notMatch(line, /\bat \S+:\d+:\d+/)
}

describe("start-up errors", () => {
  it.live(
    "an address in use names the address and what to do",
    () =>
      Effect.gen(function* () {
        const taken = Net.createServer()
        yield* Effect.acquireRelease(
          Effect.callback<void>((resume) => void taken.listen(0, "127.0.0.1", () => resume(Effect.void))),
          () => Effect.sync(() => void taken.close())
        )
        const address = `127.0.0.1:${(taken.address() as Net.AddressInfo).port}`
        const result = yield* run(["--a0", address, ...free])
        assertOneLine(result, `cannot listen on ${address}: EADDRINUSE`, "choose another address")
        assert.deepStrictEqual(result.lines, [], "nothing on stdout")
      }),
    { timeout: 30_000 }
  )

  it.live(
    "a bad address string names the string and the forms accepted",
    () =>
      Effect.gen(function* () {
        const result = yield* run(["--a0", "nonsense:80", ...free])
        assertOneLine(result, 'invalid listen address \\"nonsense:80\\"', "use :port, a numeric host:port")
      }),
    { timeout: 30_000 }
  )

  it.live(
    "LISTEN_FDS=abc names the variable and its value",
    () =>
      Effect.gen(function* () {
        const result = yield* run(["--a0", "127.0.0.1:0", ...free], { LISTEN_FDS: "abc" }, true)
        assertOneLine(result, 'LISTEN_FDS=\\"abc\\" is not an integer from 1 to 4096')
      }),
    { timeout: 30_000 }
  )

  it.live(
    "GRACE_DRAIN_TIMEOUT=banana names the variable, its value and the syntax",
    () =>
      Effect.gen(function* () {
        const result = yield* run(["--a0", "127.0.0.1:0", ...free], { GRACE_DRAIN_TIMEOUT: "banana" })
        assertOneLine(result, 'GRACE_DRAIN_TIMEOUT=\\"banana\\" is not a duration', "30 seconds")
      }),
    { timeout: 30_000 }
  )

  it.live(
    "GRACE_DEBUG shows the cause with the line",
    () =>
      Effect.gen(function* () {
        const result = yield* run(["--a0", "nonsense:80", ...free], { GRACE_DEBUG: "1" })
        assert.strictEqual(result.exit.code, 1)
        const text = result.errors.join("\n")
        assert.include(text, "effect-grace: cannot start: invalid listen address")
        assert.include(text, "ListenersError")
        assert.match(text, /Listeners\.ts:\d+:\d+/)
      }),
    { timeout: 30_000 }
  )
})
