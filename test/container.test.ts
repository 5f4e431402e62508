/**
 * examples/container/: the Dockerfile and the Kubernetes Deployment parse,
 * say the same things (the settings, the ports the probes ask), and the
 * program they run is the one tested here: bundled by the Dockerfile's own
 * rolldown command, run with the image's command line and environment as
 * PID 1 of a PID namespace where no shell can run (as on the distroless
 * image). Only the port numbers differ: free ones, on loopback. The image
 * itself cannot be built here (no Docker daemon, no registry).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import * as Yaml from "yaml"
import { tempDir } from "./support/fs.ts"
import { request } from "./support/http.ts"
import { freePort } from "./support/net.ts"
import { eventually, isAlive, nodePath, spawnProcess } from "./support/process.ts"

const root = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")
const dockerfilePath = Path.join(root, "examples/container/Dockerfile")
const manifestPath = Path.join(root, "examples/container/deployment.yaml")

// -----------------------------------------------------------------------------
// The files
// -----------------------------------------------------------------------------

interface Instruction {
  readonly keyword: string
  readonly args: string
}

/** A Dockerfile's instructions, by stage: comments dropped, continued lines joined. */
const parseDockerfile = (text: string): Array<Array<Instruction>> => {
  const logical = text
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("#"))
    .join("\n")
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
  const stages: Array<Array<Instruction>> = []
  for (const line of logical) {
    const [, keyword, args] = line.match(/^([A-Z]+)\s+(.*)$/) ?? []
    if (keyword === undefined || args === undefined) throw new Error(`not an instruction: ${line}`)
    if (keyword === "FROM") stages.push([])
    if (stages.length === 0) throw new Error(`${keyword} before FROM`)
    stages.at(-1)!.push({ keyword, args })
  }
  return stages
}

/** `ENV a=1 b=2` instructions, as one record. */
const envOf = (stage: ReadonlyArray<Instruction>): Record<string, string> =>
  Object.fromEntries(
    stage
      .filter((i) => i.keyword === "ENV")
      .flatMap((i) => [...i.args.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!] as const))
  )

const dockerfile = parseDockerfile(Fs.readFileSync(dockerfilePath, "utf8"))
const runtime = dockerfile.at(-1)!
const build = dockerfile[0]!
const cmd = JSON.parse(runtime.find((i) => i.keyword === "CMD")!.args) as Array<string>
const bundleCommand = build.find((i) => i.keyword === "RUN" && i.args.startsWith("npx rolldown "))!.args.split(/\s+/)
/** What the runtime stage copies of the build's node_modules (`node_modules/koffi`, ...), as paths in the repository. */
const copiedModules = runtime.flatMap((i) => {
  const [, from] = i.args.match(/^--from=build \/src\/(node_modules\/\S+) \.\/\1$/) ?? []
  return i.keyword === "COPY" && from !== undefined ? [from] : []
})

interface Container {
  readonly env: ReadonlyArray<{ readonly name: string; readonly value: string }>
  readonly ports: ReadonlyArray<{ readonly name: string; readonly containerPort: number }>
  readonly readinessProbe: { readonly httpGet: { readonly path: string; readonly port: string } }
  readonly livenessProbe: { readonly httpGet: { readonly path: string; readonly port: string } }
}

const manifest = Yaml.parse(Fs.readFileSync(manifestPath, "utf8"))
const container = manifest.spec.template.spec.containers[0] as Container
const manifestEnv = Object.fromEntries(container.env.map((e) => [e.name, e.value]))

/** The demo's flags of the command line: `--a0 :8080` and so on. */
const flagsOf = (args: ReadonlyArray<string>) =>
  Object.fromEntries(args.flatMap((arg, i) => (arg.startsWith("--") ? [[arg.slice(2), args[i + 1]!]] : [])))

const seconds = (go: string) => {
  const match = go.match(/^(\d+)s$/)
  assert.isNotNull(match, `${go} in seconds`)
  return Number(match![1])
}

describe("examples/container", () => {
  it("the Dockerfile builds in one stage and runs Node alone on a distroless image, as a numbered non-root user", () => {
    assert.isAtLeast(dockerfile.length, 2, "a multi-stage build")
    assert.match(runtime[0]!.args, /^gcr\.io\/distroless\/nodejs(\d+)-debian\d+$/)
    const major = Number(runtime[0]!.args.match(/nodejs(\d+)/)![1])
    assert.isAtLeast(major, 22, "a Node the library supports")
    assert.deepStrictEqual(
      runtime.filter((i) => i.keyword === "RUN" || i.keyword === "ENTRYPOINT" || i.keyword === "SHELL"),
      [],
      "no shell in the image: nothing runs in it but the image's own entry point, Node"
    )
    assert.match(runtime.find((i) => i.keyword === "USER")!.args, /^\d+$/)
    assert.strictEqual(cmd[0], "demo.mjs")
    assert.include(bundleCommand, "examples/demo.ts")
    assert.strictEqual(bundleCommand[bundleCommand.indexOf("--file") + 1], "dist/demo.mjs")
    // koffi and its binary, which koffi 3 loads from its platform package beside it.
    assert.includeMembers(copiedModules, ["node_modules/koffi", "node_modules/@koromix"])
  })

  it("the Deployment says what the image says, probes a port the program serves, and gives the drain its time", () => {
    assert.strictEqual(manifest.kind, "Deployment")
    assert.deepStrictEqual(manifestEnv, envOf(runtime), "the same settings as the image")
    const flags = flagsOf(cmd.slice(1))
    const served = Object.values(flags).map((address) => Number(address.split(":").at(-1)))
    assert.deepStrictEqual(
      container.ports.map((p) => p.containerPort),
      served
    )
    for (const probe of [container.readinessProbe, container.livenessProbe]) {
      const port = container.ports.find((p) => p.name === probe.httpGet.port)
      assert.isDefined(port, `the probe's port ${probe.httpGet.port} is named`)
    }
    assert.strictEqual(container.readinessProbe.httpGet.path, "/readyz")
    assert.strictEqual(container.livenessProbe.httpGet.path, "/livez")
    const grace = manifest.spec.template.spec.terminationGracePeriodSeconds as number
    const needed = seconds(manifestEnv.GRACE_SHUTDOWN_DELAY!) + seconds(manifestEnv.GRACE_DRAIN_TIMEOUT!)
    assert.isBelow(needed, grace, "the shutdown delay and the drain fit in the grace period")
    assert.strictEqual(manifest.spec.strategy.rollingUpdate.maxUnavailable, 0)
  })
})

// Root, for the namespaces (as the CI machines are); skipped elsewhere.
const canRun = process.getuid?.() === 0 && Fs.existsSync("/usr/bin/unshare")

describe.skipIf(!canRun)("examples/container, run", () => {
  it.live(
    "its program, bundled as the Dockerfile bundles it, runs as PID 1 without a shell: probes, a roll, SIGTERM's delay and drain, exit 0",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const bundle = yield* bundled(dir)
        const ports = [yield* freePort(), yield* freePort(), yield* freePort()]
        const args = cmd.slice(1).map((arg) => {
          const at = Object.values(flagsOf(cmd.slice(1))).indexOf(arg)
          return at < 0 ? arg : `:${ports[at]}`
        })
        const program = yield* spawnProcess(
          "/usr/bin/unshare",
          // A mount namespace whose shells are masked, then a PID namespace in it whose init is the program.
          ["--mount", "--", nodePath, fixture("noshell"), "/usr/bin/unshare", "--pid", "--fork", "--mount-proc"].concat(
            ["--kill-child", nodePath, bundle, ...args]
          ),
          { env: { ...envOf(runtime), ...manifestEnv } }
        )
        const probe = (path: string) => request(`http://127.0.0.1:${ports[0]}${path}`, { timeout: "5 seconds" })
        yield* program.waitForErrorLine(/message="effect-grace: ready" pid=1 listeners=/)
        assert.strictEqual((yield* probe("/readyz")).status, 200)
        assert.strictEqual((yield* probe("/livez")).status, 200)
        const init = yield* initNamed(bundle)
        process.kill(init, "SIGHUP")
        yield* program.waitForErrorLine(/message="effect-grace: restarted" pid=1 kind=roll/)
        const signalled = Date.now()
        process.kill(init, "SIGTERM")
        yield* untilStatus(() => probe("/readyz"), 503)
        assert.strictEqual((yield* probe("/")).status, 200, "the port answers on for the delay")
        assert.isBelow(Date.now() - signalled, 5000, "unready within the shutdown delay")
        const exit = yield* program.exited(`${manifest.spec.template.spec.terminationGracePeriodSeconds} seconds`)
        assert.deepStrictEqual(exit, { code: 0, signal: null })
        assert.isFalse(isAlive(init))
      }),
    { timeout: 90_000 }
  )
})

// -----------------------------------------------------------------------------
// Running it
// -----------------------------------------------------------------------------

const fixture = (name: string) => Path.join(root, "test/fixtures", `${name}.ts`)

/** The Dockerfile's bundle command, run in the repository with its output in `dir`; koffi found as in the image. */
const bundled = (dir: string) =>
  Effect.sync(() => {
    const file = Path.join(dir, "demo.mjs")
    const [, tool, ...rest] = bundleCommand
    const args = rest.map((arg, i) => (rest[i - 1] === "--file" ? file : arg))
    execFileSync(Path.join(root, "node_modules/.bin", tool!), args, { cwd: root, stdio: "ignore", timeout: 120_000 })
    // What the image copies of node_modules, copied (not linked: the image has no path back to the build).
    for (const from of copiedModules) {
      Fs.cpSync(Path.join(root, from), Path.join(dir, from), { recursive: true, dereference: true })
    }
    return file
  })

/** Asks until the answer has `status`, bounded. */
const untilStatus = (ask: () => Effect.Effect<{ readonly status: number }, Error>, status: number) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 10_000
    while ((yield* ask()).status !== status) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`never answered ${status}`))
      yield* Effect.sleep("20 millis")
    }
  })

/** The pid, outside, of the process running `bundle` that is PID 1 of its namespace. */
const initNamed = (bundle: string) =>
  eventually(() => {
    for (const entry of Fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue
      try {
        if (!Fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(bundle)) continue
        const nspid = Fs.readFileSync(`/proc/${entry}/status`, "utf8").match(/^NSpid:\s+(.*)$/m)?.[1]
        if (nspid?.trim().split(/\s+/).at(-1) === "1") return Number(entry)
      } catch {
        // Gone meanwhile.
      }
    }
    return undefined
  }, "the namespace's init")
