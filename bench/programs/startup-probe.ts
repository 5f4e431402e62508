/**
 * Where the demo's start-up time goes, run by `bench/startup.ts`: imports
 * the demo's dependencies one group at a time, timing each (the marginal
 * cost, given the groups before it), then the demo itself, and stops at its
 * banner (`Serving ... with pid N.`): the moment a successor is ready.
 * Prints one JSON line, `{"phases":[[name, ms], ...]}`, and exits. With
 * `PROBE_LIBRARY=dist` it imports the built library (`dist/`, `npm run build`)
 * in place of `src/`, and stops there.
 *
 *   node bench/programs/startup-probe.ts --a0 127.0.0.1:0 --a1 127.0.0.1:0 --a2 127.0.0.1:0
 */
import { createRequire } from "node:module"

const phases: Array<[string, number]> = [["node: start-up to the probe's first line", performance.now()]]

const step = async (name: string, load: () => Promise<unknown>) => {
  const started = performance.now()
  await load()
  phases.push([name, performance.now() - started])
}

const all =
  (...specifiers: Array<string>) =>
  () =>
    Promise.all(specifiers.map((specifier) => import(specifier)))

await step(
  "effect: core (Effect, Layer, Context, Config, Option, Duration, Logger, Data, Result)",
  all(
    "effect/Effect",
    "effect/Layer",
    "effect/Context",
    "effect/Config",
    "effect/Option",
    "effect/Duration",
    "effect/Logger",
    "effect/Data",
    "effect/Result"
  )
)
await step(
  "effect: Stream, Queue, Schedule, Metric, FiberSet, FiberHandle, Semaphore",
  all(
    "effect/Stream",
    "effect/Queue",
    "effect/Schedule",
    "effect/Metric",
    "effect/FiberSet",
    "effect/FiberHandle",
    "effect/Semaphore"
  )
)
await step(
  "effect: http (HttpRouter, HttpServerResponse, HttpServer)",
  all("effect/http/HttpRouter", "effect/http/HttpServerResponse", "effect/http/HttpServer")
)
await step("@effect/platform-node: NodeRuntime", all("@effect/platform-node/NodeRuntime"))
await step("ws (for NodeWS)", all("ws"))
await step("@effect/platform-node: NodeServices", all("@effect/platform-node/NodeServices"))
await step("@effect/platform-node: NodeMultipart", all("@effect/platform-node/NodeMultipart"))
await step("@effect/platform-node: NodeHttpServer (the rest)", all("@effect/platform-node/NodeHttpServer"))
await step("node:crypto, node:child_process", all("node:crypto", "node:child_process"))
await step(
  "@effect/platform-node: NodeSocket, effect/socket/SocketServer",
  all("@effect/platform-node/NodeSocket", "effect/socket/SocketServer")
)
// As src/Server.ts takes them, when a server is made: an ES import's namespace would evaluate node:http's lazy
// exports (WebSocket, ...), which load Node's bundled undici (about 18 ms here with the compile cache).
await step("node:http, node:https, node:http2 by process.getBuiltinModule (src/Server.ts)", async () =>
  ["node:http", "node:https", "node:http2"].map((id) => process.getBuiltinModule(id))
)
// PROBE_LIBRARY=dist: the built JavaScript (`npm run build`) instead of the .ts sources, and no demo (it imports src).
const built = process.env.PROBE_LIBRARY === "dist"
const src = (file: string) =>
  new URL(built ? `../../dist/${file.replace(/\.ts$/, ".js")}` : `../../src/${file}`, import.meta.url).href
// Each module of the library in an order that loads what it imports first, so that each step times its own code.
for (const file of [
  "internal/config.ts",
  "internal/tickets.ts",
  "internal/report.ts",
  "internal/sys.ts",
  "internal/portable.ts",
  "internal/address.ts",
  "internal/drain.ts",
  "internal/protocol.ts",
  "internal/channel.ts",
  "internal/program.ts",
  "internal/os.ts",
  "internal/loop.ts",
  "internal/machine.ts",
  "internal/pool.ts",
  "internal/errors.ts",
  "internal/metrics.ts",
  "internal/settings.ts",
  "internal/gate.ts",
  "internal/child.ts",
  "internal/parent.ts",
  "internal/supervision.ts",
  "internal/upgrade.ts",
  "internal/interpreter.ts",
  "internal/group.ts",
  "internal/single.ts",
  "internal/primary.ts",
  "internal/worker.ts",
  "internal/supervise.ts",
  "ListenFds.ts",
  "Listeners.ts",
  "Drain.ts",
  "Health.ts",
  "Notify.ts",
  "Server.ts",
  "TcpServer.ts",
  "Supervisor.ts",
  "index.ts"
]) {
  await step(built ? `dist/${file.replace(/\.ts$/, ".js")}` : `src/${file}`, all(src(file)))
}
await step("koffi: require, load libc.so.6", async () => {
  if (process.env.GRACE_NATIVE === "off") return
  const koffi = createRequire(import.meta.url)("koffi") as { load: (path: string) => unknown }
  koffi.load("libc.so.6")
})

// The demo: its own code, building its layers, listening, telling the supervisor it is ready; then its banner.
let bannerSeen: () => void = () => {}
const banner = new Promise<void>((resolve) => (bannerSeen = resolve))
const log = console.log
console.log = (...args: Array<unknown>) => {
  if (typeof args[0] === "string" && args[0].startsWith("Serving ")) bannerSeen()
  else log(...args)
}
if (!built) {
  await step("examples/demo.ts: its code, layers, listen, ready (to the banner)", async () => {
    await import(new URL("../../examples/demo.ts", import.meta.url).href)
    await banner
  })
}
phases.push([
  built ? "total: process start to the last import" : "total: process start to the banner",
  performance.now()
])
log(JSON.stringify({ phases }))
// A probe: the demo's graceful stop is not what is measured.
// oxlint-disable-next-line unicorn/no-process-exit
process.exit(0)
