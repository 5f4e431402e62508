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
        const result = yield* run(["--a0", "localhost", ...free])
        assertOneLine(result, 'invalid listen address \\"localhost\\": no port', "use :port, host:port")
      }),
    { timeout: 30_000 }
  )

  it.live(
    "a host name that does not resolve names the address and what to do",
    () =>
      Effect.gen(function* () {
        // RFC 6761: no name under .invalid resolves.
        const result = yield* run(["--a0", "nowhere.invalid:80", ...free])
        assertOneLine(result, "cannot listen on nowhere.invalid:80: ", "use one this host resolves, or an IP address")
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

  for (const workers of ["100000000", "4294967296", "99999999999999999999"]) {
    it.live(
      `GRACE_WORKERS=${workers} names the variable and the bound, and starts nothing`,
      () =>
        Effect.gen(function* () {
          const result = yield* run(["--a0", "127.0.0.1:0", ...free], { GRACE_WORKERS: workers })
          assertOneLine(result, `GRACE_WORKERS=\\"${workers}\\" is more than 1024`)
          assert.deepStrictEqual(result.lines, [], "no worker started, nothing served")
        }),
      { timeout: 30_000 }
    )
  }

  it.live(
    "GRACE_DEBUG shows the cause with the line",
    () =>
      Effect.gen(function* () {
        const result = yield* run(["--a0", "localhost", ...free], { GRACE_DEBUG: "1" })
        assert.strictEqual(result.exit.code, 1)
        const text = result.errors.join("\n")
        assert.include(text, "effect-grace: cannot start: invalid listen address")
        assert.include(text, "ListenersError")
        assert.match(text, /Listeners\.ts:\d+:\d+/)
      }),
    { timeout: 30_000 }
  )

  // Issue 20: a later server's busy port was a stack trace through the default logger, with a drain logged for a
  // server that never served.
  const servers = new URL("fixtures/servers.ts", import.meta.url).pathname
  for (const path of ["native", "portable"] as const) {
    for (const [position, index] of [
      ["first", 0],
      ["second", 1],
      ["last", 2]
    ] as const) {
      it.live(
        `a busy port ${position} of three (${path}): one line through the application's logger, exit 1`,
        () =>
          Effect.gen(function* () {
            const taken = Net.createServer()
            yield* Effect.acquireRelease(
              Effect.callback<void>((resume) => void taken.listen(0, "127.0.0.1", () => resume(Effect.void))),
              () => Effect.sync(() => void taken.close())
            )
            const busy = `127.0.0.1:${(taken.address() as Net.AddressInfo).port}`
            const addresses = [0, 1, 2].map((i) => (i === index ? busy : "127.0.0.1:0"))
            const env: Record<string, string> = path === "portable" ? { GRACE_NATIVE: "off" } : {}
            const spawned = yield* spawnProcess(nodePath, [servers, ...addresses], { env })
            const exit = yield* spawned.closed("20 seconds")
            const all = [...spawned.lines, ...spawned.errors].join("\n")
            assert.strictEqual(exit.code, 1, all)
            assert.deepStrictEqual(spawned.lines, [], "never ready")
            assert.notInclude(all, "drain finished")
            assert.strictEqual(spawned.errors.length, 1, all)
            const line = spawned.errors[0]!
            // The fixture's logger prefixes its lines: any other logger's line would not start so.
            assert.match(line, /^app timestamp=\S+ level=ERROR /)
            assert.include(line, `message="effect-grace: cannot start: cannot listen on ${busy}: EADDRINUSE`)
            assert.notMatch(line, /\bat \S+:\d+:\d+/)
          }),
        { timeout: 30_000 }
      )
    }
  }
})
