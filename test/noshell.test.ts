/**
 * Restarts on a machine with no shell, as in a distroless image: every test
 * runs its program in a mount namespace where /dev/null hides each shell of
 * /etc/shells (test/fixtures/noshell.ts), so executing `/bin/sh` fails with
 * EACCES. Successors and workers must start all the same, with the
 * listeners taken by the processes they are meant for only. Needs root
 * (`unshare --mount`); skipped elsewhere, with the reason.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { tempDir } from "./support/fs.ts"
import { request, steadyLoad } from "./support/http.ts"
import { freePort } from "./support/net.ts"
import { nodePath, spawnProcess } from "./support/process.ts"
import { killTaggedOnClose, newTag } from "./support/fixture.ts"
import type { Spawned } from "./support/process.ts"

const UNSHARE = "/usr/bin/unshare"
const canMask = process.getuid?.() === 0 && Fs.existsSync(UNSHARE)
const fixture = (name: string) => new URL(`./fixtures/${name}.ts`, import.meta.url).pathname

/** Runs `command` with no shell, every process tagged for the clean-up; the wrapper says once the shell is gone. */
const withoutShell = (command: ReadonlyArray<string>, env: Record<string, string>) =>
  Effect.gen(function* () {
    const tag = command.map((arg) => arg.match(/^(t\d+x\w+)=/)?.[1]).find((found) => found !== undefined)!
    yield* killTaggedOnClose(tag)
    const program = yield* spawnProcess(UNSHARE, ["--mount", "--", nodePath, fixture("noshell"), ...command], { env })
    yield* program.waitForLine(/^no shell: EACCES$/)
    return program
  })

const readyPid = (program: Spawned, from = 0) =>
  Effect.map(
    // The ready line of the process that serves (a primary's, not a worker's: no slot).
    program.waitForLineFrom(from, /"effect-grace: ready".*?"annotations":\{"pid":(\d+),"listeners"/),
    (match) => Number(match[1])
  )

const pidOf = (url: string) =>
  Effect.map(request(url, { timeout: "10 seconds" }), (reply) => Number(reply.body.match(/pid (\d+)/)![1]))

describe.skipIf(!canMask)("no shell on the machine (a distroless image)", () => {
  it.live(
    "a restart hands the listeners to a successor; a subprocess started as the program starts takes none of them",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const url = `http://127.0.0.1:${port}/`
        const program = yield* withoutShell([nodePath, fixture("supervised"), `${newTag()}=127.0.0.1:${port}`], {
          GRACE_PROBATION: "0",
          FIXTURE_EARLY_FORK: "1"
        })
        const first = yield* readyPid(program)
        const load = yield* steadyLoad(url, 2)
        const from = program.lines.length
        process.kill(first, "SIGUSR2")
        const successor = Number(
          (yield* program.waitForLineFrom(from, /"effect-grace: successor ready".*?"successor":(\d+)/))[1]
        )
        yield* readyPid(program, from)
        assert.strictEqual(yield* pidOf(url), successor, "the successor serves on the inherited socket")
        yield* load.stop
        assert.deepStrictEqual(
          load.outcomes.filter((o) => o.code !== undefined),
          [],
          "no request failed"
        )
        // The successor's early subprocess inherits the variables, but LISTEN_PID is its parent's: it takes nothing.
        const grandchild = yield* program.waitForLineFrom(from, /^grandchild (\d+) (.*)$/)
        const seen = JSON.parse(grandchild[2]!) as Record<string, unknown>
        assert.strictEqual(seen.listenFds, "1", "the variables are there to be misread")
        assert.strictEqual(seen.listenPid, String(successor), "LISTEN_PID names the successor, not the subprocess")
        assert.notStrictEqual(seen.listenPid, grandchild[1])
        assert.isUndefined(seen.marker, "the preload's marker is the successor's alone")
      }),
    { timeout: 30_000 }
  )

  it.live(
    "a successor that dies in its probation hands the service back",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const url = `http://127.0.0.1:${port}/`
        const modeFile = Path.join(yield* tempDir, "mode")
        const program = yield* withoutShell([nodePath, fixture("supervised"), `${newTag()}=127.0.0.1:${port}`], {
          GRACE_PROBATION: "5 seconds",
          FIXTURE_MODE_FILE: modeFile
        })
        const first = yield* readyPid(program)
        Fs.writeFileSync(modeFile, "die:500")
        const from = program.lines.length
        process.kill(first, "SIGUSR2")
        yield* program.waitForLineFrom(from, /"effect-grace: restart failed: .*"reason":"HandedBack"/)
        assert.strictEqual(yield* pidOf(url), first, "the old process serves again")
      }),
    { timeout: 30_000 }
  )

  it.live(
    "workers start, roll (SIGHUP) and upgrade (SIGUSR2)",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const url = `http://127.0.0.1:${port}/`
        const program = yield* withoutShell([nodePath, fixture("supervised"), `${newTag()}=127.0.0.1:${port}`], {
          GRACE_WORKERS: "2",
          GRACE_PROBATION: "200 millis"
        })
        const primary = yield* readyPid(program)
        const load = yield* steadyLoad(url, 2)
        let from = program.lines.length
        process.kill(primary, "SIGHUP")
        yield* program.waitForLineFrom(from, new RegExp(`"effect-grace: restarted".*"pid":${primary},"kind":"roll"`))
        from = program.lines.length
        process.kill(primary, "SIGUSR2")
        const next = Number(
          (yield* program.waitForLineFrom(from, /"effect-grace: restarted".*?"kind":"upgrade","successor":(\d+)/))[1]
        )
        yield* program.waitForLineFrom(from, new RegExp(`"effect-grace: stopped".*"pid":${primary}\\b`))
        yield* load.stop
        assert.deepStrictEqual(
          load.outcomes.filter((o) => o.code !== undefined),
          [],
          "no request failed"
        )
        const worker = yield* request(`${url}worker`, { timeout: "10 seconds" })
        assert.match(worker.body, new RegExp(`^worker \\d of ${next} `), "a worker of the new primary answers")
      }),
    { timeout: 40_000 }
  )

  it.live(
    "under systemd-socket-activate: workers start on the activated socket, and roll",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const url = `http://127.0.0.1:${port}/`
        const program = yield* withoutShell(
          [
            "systemd-socket-activate",
            "-l",
            `127.0.0.1:${port}`,
            "-E",
            "GRACE_WORKERS=2",
            "-E",
            "GRACE_PROBATION=200 millis",
            nodePath,
            fixture("supervised"),
            `${newTag()}=127.0.0.1:${port}`
          ],
          {}
        )
        yield* program.waitForErrorLine(new RegExp(`Listening on 127\\.0\\.0\\.1:${port}`))
        const first = yield* Effect.forkChild(request(url, { timeout: "10 seconds" }))
        const primary = yield* readyPid(program)
        assert.match((yield* Fiber.join(first)).body, /pid \d+/)
        const from = program.lines.length
        process.kill(primary, "SIGHUP")
        yield* program.waitForLineFrom(from, new RegExp(`"effect-grace: restarted".*"pid":${primary},"kind":"roll"`))
        assert.match((yield* request(`${url}worker`, { timeout: "10 seconds" })).body, new RegExp(`of ${primary} `))
      }),
    { timeout: 30_000 }
  )
})
