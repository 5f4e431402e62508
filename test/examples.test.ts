import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { answeredBy, request } from "./support/http.ts"
import { freePort } from "./support/net.ts"
import { eventually, isAlive, nodePath, spawnProcess } from "./support/process.ts"
import type { Spawned } from "./support/process.ts"

const example = (name: string) => new URL(`../examples/${name}`, import.meta.url).pathname

const pidIn = (text: string): number => Number(text.match(/pid (\d+)/)?.[1])

/** Kills, at the end, every process started from this example run (later generations are not our children). */
const killAllWith = (marker: string) =>
  Effect.addFinalizer(() =>
    Effect.sync(() => {
      for (const entry of Fs.readdirSync("/proc")) {
        if (!/^\d+$/.test(entry)) continue
        try {
          if (Fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) process.kill(Number(entry), "SIGKILL")
        } catch {
          // Gone.
        }
      }
    })
  )

const banner = (spawned: Spawned, after = 0) =>
  spawned.waitForLine(/^Serving (.*) with pid (\d+)\.$/).pipe(
    Effect.flatMap(() =>
      eventually(() => {
        const lines = spawned.lines.filter((line) => /^(Serving|Echoing on) /.test(line))
        return lines.length > after ? lines[after] : undefined
      }, "a banner line")
    )
  )

describe("examples", () => {
  it.live(
    "demo: the walkthrough — slow request on the old pid, quick one on the new, after kill -USR2",
    () =>
      Effect.gen(function* () {
        const ports = [yield* freePort(), yield* freePort(), yield* freePort()]
        const marker = `--a2=127.0.0.1:${ports[2]}`
        yield* killAllWith(marker)
        const demo = yield* spawnProcess(nodePath, [
          example("demo.ts"),
          `--a0=127.0.0.1:${ports[0]}`,
          `--a1=:${ports[1]}`,
          marker
        ])
        const first = yield* banner(demo)
        assert.strictEqual(
          first,
          `Serving 127.0.0.1:${ports[0]}, [::]:${ports[1]}, 127.0.0.1:${ports[2]} with pid ${demo.pid}.`
        )
        const base = `http://127.0.0.1:${ports[0]}`
        const slow = yield* Effect.forkChild(request(`${base}/sleep/?duration=2s`))
        // Every port answers before the restart.
        for (const port of ports) {
          const reply = yield* request(`http://127.0.0.1:${port}/sleep/?duration=0s`)
          assert.match(reply.body, new RegExp(`^started at \\S+ slept for 0 nanoseconds from pid ${demo.pid}\\.\\n$`))
        }
        process.kill(demo.pid, "SIGUSR2")
        const second = pidIn(yield* banner(demo, 1))
        assert.notStrictEqual(second, demo.pid)
        // The old process stops accepting once the successor is ready and the hand-off has begun; until then the
        // kernel may give a new connection to either.
        yield* answeredBy(`${base}/sleep/?duration=0s`, second)
        const quick = yield* request(`${base}/sleep/?duration=250ms`)
        assert.match(quick.body, new RegExp(`slept for 250000000 nanoseconds from pid ${second}\\.\\n$`))
        const slowReply = yield* Fiber.join(slow)
        assert.match(slowReply.body, new RegExp(`slept for 2000000000 nanoseconds from pid ${demo.pid}\\.\\n$`))
        assert.deepStrictEqual(yield* demo.exited(), { code: 0, signal: null })

        const bad = yield* request(`${base}/sleep/?duration=soon`)
        assert.strictEqual(bad.status, 400)
        assert.include(bad.body, "invalid duration")
        const effectSyntax = yield* request(`${base}/sleep/?duration=1%20millis`)
        assert.match(effectSyntax.body, /slept for 1000000 nanoseconds/)

        process.kill(second, "SIGTERM")
        yield* eventually(() => !isAlive(second), "the successor to stop")
      }),
    { timeout: 60_000 }
  )

  it.live(
    "demo under systemd-socket-activate serves on the three inherited sockets",
    () =>
      Effect.gen(function* () {
        const ports = [yield* freePort(), yield* freePort(), yield* freePort()]
        const activate = yield* spawnProcess("systemd-socket-activate", [
          ...ports.flatMap((port) => ["-l", `127.0.0.1:${port}`]),
          nodePath,
          example("demo.ts"),
          ...ports.map((port, i) => `--a${i}=127.0.0.1:${port}`)
        ])
        yield* activate.waitForErrorLine(new RegExp(`Listening on 127\\.0\\.0\\.1:${ports[2]}`))
        // The first connection starts the demo, which answers it.
        const reply = yield* request(`http://127.0.0.1:${ports[1]}/sleep/?duration=0s`)
        assert.strictEqual(pidIn(reply.body), activate.pid)
        assert.strictEqual(
          yield* banner(activate),
          `Serving ${ports.map((port) => `127.0.0.1:${port}`).join(", ")} with pid ${activate.pid}.`
        )
      }),
    { timeout: 30_000 }
  )

  it.live(
    "https-admin: TLS on the public port, an admin port, and a restart through the admin API",
    () =>
      Effect.gen(function* () {
        const tlsDir = yield* Effect.acquireRelease(
          Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-grace-tls-"))),
          (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
        )
        const key = Path.join(tlsDir, "key.pem")
        const cert = Path.join(tlsDir, "cert.pem")
        execFileSync(
          "openssl",
          [
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "1",
            "-keyout",
            key,
            "-out",
            cert
          ],
          { stdio: "ignore" }
        )
        const ca = Fs.readFileSync(cert)
        const publicPort = yield* freePort()
        const adminPort = yield* freePort()
        const marker = `--admin=127.0.0.1:${adminPort}`
        yield* killAllWith(marker)
        const server = yield* spawnProcess(nodePath, [
          example("https-admin.ts"),
          `--key=${key}`,
          `--cert=${cert}`,
          `--public=127.0.0.1:${publicPort}`,
          marker
        ])
        assert.strictEqual(
          yield* banner(server),
          `Serving public 127.0.0.1:${publicPort}, admin 127.0.0.1:${adminPort} with pid ${server.pid}.`
        )
        const hello = yield* request(`https://127.0.0.1:${publicPort}/`, { ca, timeout: "30 seconds" })
        assert.strictEqual(hello.body, `hello over TLS from pid ${server.pid}\n`)
        const health = yield* request(`http://127.0.0.1:${adminPort}/health`)
        assert.strictEqual(health.body, `ok from pid ${server.pid}\n`)

        const restarted = yield* request(`http://127.0.0.1:${adminPort}/restart`, { method: "POST" })
        assert.strictEqual(restarted.status, 200)
        const successor = pidIn(restarted.body)
        yield* answeredBy(`https://127.0.0.1:${publicPort}/`, successor, { ca })
        assert.strictEqual(
          (yield* request(`https://127.0.0.1:${publicPort}/`, { ca, timeout: "30 seconds" })).body,
          `hello over TLS from pid ${successor}\n`
        )
        assert.deepStrictEqual(yield* server.exited(), { code: 0, signal: null })
        process.kill(successor, "SIGTERM")
        yield* eventually(() => !isAlive(successor), "the successor to stop")
      }),
    { timeout: 60_000 }
  )

  it.live(
    "echo: echoes, and says goodbye to an open connection when it restarts",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort()
        const marker = `--listen=127.0.0.1:${port}`
        yield* killAllWith(marker)
        const echo = yield* spawnProcess(nodePath, [example("echo.ts"), marker])
        yield* echo.waitForLine(new RegExp(`^Echoing on 127\\.0\\.0\\.1:${port} with pid ${echo.pid}\\.$`))
        const client = Net.connect(port, "127.0.0.1")
        yield* Effect.addFinalizer(() => Effect.sync(() => client.destroy()))
        let received = ""
        const closed = Effect.callback<void>((resume) => {
          client.on("close", () => resume(Effect.void))
        })
        client.on("data", (chunk) => (received += chunk.toString()))
        client.write("ping\n")
        yield* eventually(() => received.includes("ping\n"), "the echo")
        assert.strictEqual(received, `hello from pid ${echo.pid}\nping\n`)

        process.kill(echo.pid, "SIGUSR2")
        yield* closed
        assert.strictEqual(received, `hello from pid ${echo.pid}\nping\nbye from pid ${echo.pid}\n`)
        assert.deepStrictEqual(yield* echo.exited(), { code: 0, signal: null })
        const successor = Number(
          echo.lines
            .find((line) => line.startsWith("Echoing") && !line.endsWith(`pid ${echo.pid}.`))
            ?.match(/pid (\d+)/)?.[1]
        )
        const greeting = yield* Effect.callback<string>((resume) => {
          const next = Net.connect(port, "127.0.0.1")
          next.once("data", (chunk) => {
            next.destroy()
            resume(Effect.succeed(chunk.toString()))
          })
        })
        assert.strictEqual(greeting, `hello from pid ${successor}\n`)
        process.kill(successor, "SIGTERM")
        yield* eventually(() => !isAlive(successor), "the successor to stop")
      }),
    { timeout: 30_000 }
  )
})
