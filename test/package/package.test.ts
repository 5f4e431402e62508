/**
 * effect-grace as a user gets it: packed (`npm pack`, which builds it), and
 * installed from the tarball into scratch projects outside the repo, next to
 * `effect`, `@effect/platform-node`, `typescript` and Node itself from the
 * registry. Each project is made once per Node version, and removed after.
 *
 *   npm run test:package                        # Node 24 and 26
 *   GRACE_PACKAGE_NODE=26 npm run test:package  # one version
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync, spawnSync } from "node:child_process"
import type { ExecFileSyncOptions } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { answeredBy, request } from "../support/http.ts"
import { freePort } from "../support/net.ts"
import { eventually, isAlive, spawnProcess } from "../support/process.ts"

const repo = new URL("../..", import.meta.url).pathname
const consumer = new URL("./consumer/", import.meta.url).pathname
const versions = (process.env.GRACE_PACKAGE_NODE ?? "24,26").split(",").map((v) => v.trim())

const run = (command: string, args: ReadonlyArray<string>, options: ExecFileSyncOptions = {}): string => {
  try {
    return execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...options }) as string
  } catch (error) {
    const failed = error as { status: number | null; stdout?: string; stderr?: string }
    throw new Error(
      `${command} ${args.join(" ")} exited with ${failed.status}\n${failed.stdout ?? ""}\n${failed.stderr ?? ""}`,
      { cause: error }
    )
  }
}

const scratch: Array<string> = []
let tarball = ""

beforeAll(() => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-grace-pack-"))
  scratch.push(dir)
  const packed = JSON.parse(run("npm", ["pack", "--pack-destination", dir, "--json"], { cwd: repo }))
  tarball = Path.join(dir, packed[0].filename)
})

afterAll(() => {
  for (const dir of scratch) Fs.rmSync(dir, { recursive: true, force: true })
})

/** A scratch project with the tarball installed, and Node `major` from the registry. */
const project = (major: string, extra: ReadonlyArray<string> = []) => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), `effect-grace-consumer-${major}-`))
  scratch.push(dir)
  // What a consumer puts in package.json: Node's own binary needs its install script; koffi's binaries ship in
  // the package and load without its script.
  Fs.writeFileSync(
    Path.join(dir, "package.json"),
    JSON.stringify({ name: "consumer", private: true, type: "module", allowScripts: { node: true, koffi: false } })
  )
  for (const file of ["main.mjs", "main.ts", "tsconfig.json"]) Fs.copyFileSync(consumer + file, Path.join(dir, file))
  run(
    "npm",
    [
      "install",
      "--no-audit",
      "--no-fund",
      ...extra,
      tarball,
      "effect@~4.1.0",
      "@effect/platform-node@~4.1.0",
      `node@${major}`,
      "typescript@^7.0.2",
      "@types/node",
      "publint",
      "@arethetypeswrong/cli"
    ],
    { cwd: dir }
  )
  const node = Path.join(dir, "node_modules", ".bin", "node")
  assert.strictEqual(run(node, ["--version"]).split(".")[0], `v${major}`)
  return { dir, node, bin: (name: string) => Path.join(dir, "node_modules", ".bin", name) }
}

type Project = ReturnType<typeof project>

/** The processes running in `dir`: a program's generations, its successors included. */
const processesIn = (dir: string): Array<number> =>
  Fs.readdirSync("/proc").flatMap((entry) => {
    if (!/^\d+$/.test(entry)) return []
    try {
      return Fs.readlinkSync(`/proc/${entry}/cwd`) === dir ? [Number(entry)] : []
    } catch {
      return []
    }
  })

/** Starts `main.mjs` on a free port; every process of it, successors too, is killed when the scope closes. */
const start = (p: Project, env: Record<string, string> = {}) =>
  Effect.gen(function* () {
    // Even if the test fails half way through a restart.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const pid of processesIn(Fs.realpathSync(p.dir))) process.kill(pid, "SIGKILL")
      })
    )
    const port = yield* freePort()
    const program = yield* spawnProcess(p.node, ["main.mjs"], { cwd: p.dir, env: { PORT: String(port), ...env } })
    yield* program.waitForLine(/effect-grace: ready/, "30 seconds")
    return { program, url: `http://127.0.0.1:${port}` }
  })

const pidOf = (body: string): number => Number(body.match(/^pid (\d+)$/m)?.[1])

describe.each(versions)("the packed package on Node %s", (major) => {
  let p: Project
  beforeAll(() => {
    p = project(major)
  })

  it.live("a plain .mjs program serves, restarts on SIGUSR2 and terminates on SIGTERM", () =>
    Effect.gen(function* () {
      const { program, url } = yield* start(p)
      const first = program.pid
      assert.strictEqual(pidOf((yield* request(`${url}/`)).body), first)

      process.kill(first, "SIGUSR2")
      // The successor shares the program's stdout.
      const ready = yield* program.waitForLine(
        new RegExp(`effect-grace: successor ready \\{ pid: ${first}, successor: (\\d+)[, ]`),
        "30 seconds"
      )
      const second = Number(ready[1])
      // The old process stops accepting once the hand-off has begun: soon, every new connection is the successor's.
      yield* answeredBy(`${url}/`, second)
      assert.isTrue(isAlive(second))
      // The first generation drains and exits 0 on its own.
      assert.deepStrictEqual(yield* program.exited("30 seconds"), { code: 0, signal: null })
      assert.strictEqual(pidOf((yield* request(`${url}/`)).body), second)

      process.kill(second, "SIGTERM")
      yield* eventually(() => !isAlive(second), `pid ${second} to exit`, "30 seconds")
      yield* program.waitForLine(new RegExp(`effect-grace: stopped.*pid: ${second}, reason: 'terminate'`))
      const refused = yield* Effect.flip(request(`${url}/`))
      assert.include(refused.message, "ECONNREFUSED")
    }).pipe(Effect.scoped)
  )

  it("a .ts program typechecks with strict NodeNext settings and skipLibCheck: false", () => {
    // tsc prints nothing when there is nothing to say; it exits non-zero (and `run` throws) on any error.
    assert.strictEqual(run(p.bin("tsc"), ["-p", "tsconfig.json"], { cwd: p.dir }).trim(), "")
  })

  it("internal modules are not importable", () => {
    const out = run(
      p.node,
      [
        "--input-type=module",
        "-e",
        'import("effect-grace/internal/sys").then(() => console.log("imported"), (e) => console.log(e.code))'
      ],
      { cwd: p.dir }
    )
    assert.strictEqual(out.trim(), "ERR_PACKAGE_PATH_NOT_EXPORTED")
    // The public modules are, each on its own path.
    const modules = run(
      p.node,
      ["--input-type=module", "-e", 'import("effect-grace/Supervisor").then((m) => console.log(typeof m.run))'],
      { cwd: p.dir }
    )
    assert.strictEqual(modules.trim(), "function")
  })

  it("every module of the package is exported, with its types, and nothing internal", () => {
    const installed = Path.join(p.dir, "node_modules", "effect-grace")
    const manifest = JSON.parse(Fs.readFileSync(Path.join(installed, "package.json"), "utf8"))
    // cli.js is the `effect-grace` command (the package's bin), not a module.
    const modules = Fs.readdirSync(Path.join(installed, "dist"))
      .filter((file) => file.endsWith(".js") && file !== "index.js" && file !== "cli.js")
      .map((file) => `./${file.slice(0, -3)}`)
    assert.isAbove(modules.length, 0)
    for (const name of modules) {
      assert.deepStrictEqual(manifest.exports[name], {
        types: `./dist${name.slice(1)}.d.ts`,
        default: `./dist${name.slice(1)}.js`
      })
    }
    assert.deepStrictEqual(
      Object.keys(manifest.exports).toSorted(),
      [".", "./package.json", "./internal/*", ...modules].toSorted()
    )
    assert.isNull(manifest.exports["./internal/*"])
  })

  it("the effect-grace command runs from the package's bin: help, and one line and exit code 2 without a service", () => {
    const help = run("npx", ["--no-install", "effect-grace", "--help"], { cwd: p.dir })
    assert.match(help, /^Usage: effect-grace <command>/)
    assert.match(help, /Examples:/)
    const missing = spawnSync("npx", ["--no-install", "effect-grace", "status", "--control", "/nonexistent"], {
      cwd: p.dir,
      encoding: "utf8"
    })
    assert.strictEqual(missing.status, 2, missing.stderr)
    assert.strictEqual(missing.stdout, "")
    assert.match(missing.stderr, /^effect-grace status: cannot reach the service \(ENOENT\): [^\n]*\n$/)
  })

  it("publint and arethetypeswrong pass", () => {
    const installed = Path.join(p.dir, "node_modules", "effect-grace")
    const lint = run(p.node, [p.bin("publint"), "--strict", installed], { cwd: p.dir })
    assert.notMatch(lint, /warning|error/i, lint)
    // attw exits non-zero on a problem; each entry point (`.`, `./package.json` and every module) resolves.
    const types = run(p.node, [p.bin("attw"), tarball, "--profile", "esm-only"], { cwd: p.dir })
    const entries = Object.keys(JSON.parse(Fs.readFileSync(Path.join(installed, "package.json"), "utf8")).exports)
    const resolved = entries.filter((entry) => !entry.includes("*"))
    assert.strictEqual(types.match(/node16 \(from ESM\): 🟢/g)?.length, resolved.length, types)
    assert.strictEqual(types.match(/bundler: 🟢/g)?.length, resolved.length, types)
  })
})

describe("the packed package without its optional dependency (koffi)", () => {
  let p: Project
  beforeAll(() => {
    p = project(versions.at(-1)!, ["--omit=optional"])
  })

  it.live("serves through Node's own listen, and refuses a restart with a reason that names koffi", () =>
    Effect.gen(function* () {
      assert.isFalse(Fs.existsSync(Path.join(p.dir, "node_modules", "koffi")))
      const { program, url } = yield* start(p)
      assert.strictEqual(pidOf((yield* request(`${url}/`)).body), program.pid)
      const refused = yield* request(`${url}/restart`, { method: "POST" })
      assert.strictEqual(refused.status, 409)
      assert.match(refused.body, /^RestartUnsupported: .*koffi/)
      process.kill(program.pid, "SIGTERM")
      assert.deepStrictEqual(yield* program.exited("30 seconds"), { code: 0, signal: null })
    }).pipe(Effect.scoped)
  )
})
