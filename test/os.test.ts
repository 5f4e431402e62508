/**
 * The real OS service, where a fake cannot say what Node does: the compile
 * cache's folder as a successor must be given it.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const root = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")

// What `enableCompileCache` says in a fresh process, with `env`.
const enabledIn = (env: Record<string, string>, directory: string): string =>
  execFileSync(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import { live } from ${JSON.stringify(Path.join(root, "src/internal/os.ts"))}
       console.log(live().enableCompileCache(${JSON.stringify(directory)}))`
    ],
    { env: { ...process.env, ...env }, encoding: "utf8" }
  ).trim()

describe("the OS service", () => {
  it("names the compile cache's own folder, whether this process or NODE_COMPILE_CACHE turned it on", () => {
    const dir = Path.join(root, ".cache", "compile-cache-test")
    assert.strictEqual(enabledIn({}, dir), dir)
    // Already on from the environment, as in a successor: the same folder, not Node's folder of its version in it.
    assert.strictEqual(enabledIn({ NODE_COMPILE_CACHE: dir }, Path.join(dir, "other")), dir)
  })
})
