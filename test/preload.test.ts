/**
 * A child's first instructions (src/internal/preload.ts), in real processes
 * started as the supervisor starts its children: `LISTEN_PID` set to the
 * child's own pid, and the signals that arrive before the supervisor's
 * handlers kept for it; in a process without the marker (a subprocess of
 * the application), nothing.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import * as Preload from "../src/internal/preload.ts"
import { spawnProcess } from "./support/process.ts"

const preloadModule = Path.join(Path.dirname(fileURLToPath(import.meta.url)), "../src/internal/preload.ts")

// Prints what it was given, then each change of the preload's record; on a line of stdin, takes what was kept.
const watcher = `
console.log("up " + JSON.stringify({ listenPid: process.env.LISTEN_PID, pid: String(process.pid),
  marker: process.env.${Preload.MARKER_VARIABLE} }))
const early = globalThis[Symbol.for("effect-grace/early-signals")]
let seen = 0
setInterval(() => {
  if (early === undefined || early.signals.length === seen) return
  console.log("early " + early.signals.slice(seen).join())
  seen = early.signals.length
}, 5)
process.stdin.once("data", async () => {
  const { takeEarly } = await import(${JSON.stringify(preloadModule)})
  console.log("taken " + takeEarly().join())
  process.exit(0)
})
`

const child = (env: Record<string, string | undefined>) =>
  spawnProcess(process.execPath, [...Preload.execArgv, "--input-type=module", "-e", watcher], {
    env: { LISTEN_FDS: "1", [Preload.MARKER_VARIABLE]: "1", ...env },
    stdio: ["pipe", "pipe", "pipe"]
  })

const upLine = (match: RegExpMatchArray) => JSON.parse(match[1]!) as Record<string, string | undefined>

describe("the preload of a child", () => {
  it.live("sets LISTEN_PID to the child's own pid, and consumes its marker", () =>
    Effect.gen(function* () {
      const program = yield* child({})
      const up = upLine(yield* program.waitForLine(/^up (.*)$/))
      assert.strictEqual(up.listenPid, up.pid)
      assert.isUndefined(up.marker, "a subprocess of the child does not run it again")
    })
  )

  it.live("keeps the signals that arrive before the supervisor's handlers, in order, for the supervisor", () =>
    Effect.gen(function* () {
      const program = yield* child({})
      yield* program.waitForLine(/^up /)
      for (const signal of ["SIGHUP", "SIGUSR2", "SIGTERM"] as const) {
        program.child.kill(signal)
        yield* program.waitForLine(new RegExp(`^early ${signal}$`))
      }
      program.child.stdin!.write("take\n")
      yield* program.waitForLine(/^taken SIGHUP,SIGUSR2,SIGTERM$/)
      assert.deepStrictEqual(yield* program.exited(), { code: 0, signal: null })
    })
  )

  it.live("a second termination signal before the supervisor's handlers ends the child, as it would once running", () =>
    Effect.gen(function* () {
      const program = yield* child({})
      yield* program.waitForLine(/^up /)
      program.child.kill("SIGTERM")
      yield* program.waitForLine(/^early SIGTERM$/)
      program.child.kill("SIGINT")
      assert.deepStrictEqual(yield* program.exited(), { code: null, signal: "SIGINT" })
    })
  )

  it.live("without the marker (a process the application started) it does nothing: no LISTEN_PID, no handlers", () =>
    Effect.gen(function* () {
      const program = yield* child({ [Preload.MARKER_VARIABLE]: undefined, LISTEN_PID: "1" })
      const up = upLine(yield* program.waitForLine(/^up (.*)$/))
      assert.strictEqual(up.listenPid, "1", "LISTEN_PID as inherited: another process's")
      program.child.kill("SIGHUP")
      assert.deepStrictEqual(yield* program.exited(), { code: null, signal: "SIGHUP" })
    })
  )

  it("is given once: a child's own execArgv loses the preload it was started with", () => {
    assert.deepStrictEqual(Preload.withoutPreload([...Preload.execArgv, "--enable-source-maps"]), [
      "--enable-source-maps"
    ])
    assert.deepStrictEqual(Preload.withoutPreload([`--import=${Preload.URL}`, "--import", "./other.js"]), [
      "--import",
      "./other.js"
    ])
  })
})
