/**
 * Every TypeScript snippet of the README typechecks as it stands, with `effect-grace` mapped to `src/`: one test per
 * snippet, named by its line, heading and first line, failing with the compiler's errors. The snippets are written
 * to a scratch folder inside the repository and checked by the project's tsc in one run.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { readFileSync, rmSync } from "node:fs"
import { join, resolve } from "node:path"
import * as Snippets from "../scripts/readme-snippets.ts"

const root = resolve(import.meta.dirname, "..")
const dir = join(root, ".cache", `readme-snippets-${process.pid}`)
const snippets = Snippets.extract(readFileSync(join(root, "README.md"), "utf8"))

// One tsc run for all the snippets, started by the first test that needs it.
let checked: Promise<ReadonlyArray<Snippets.TypeError>> | undefined
const errors = Effect.promise(() => {
  if (checked === undefined) {
    Snippets.write(root, dir, snippets)
    checked = Snippets.typecheck(root, dir)
  }
  return checked
})

afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("README snippets", () => {
  it("the README has TypeScript snippets, and few of them are partial", () => {
    assert.isAtLeast(snippets.length, 3)
    const partial = snippets.filter((s) => s.partial).map(Snippets.nameOf)
    assert.isAtMost(partial.length, 1, `partial snippets: ${partial.join("; ")}`)
  })

  snippets.forEach((snippet, index) => {
    const name = Snippets.nameOf(snippet)
    it.live.skipIf(snippet.partial)(`typechecks: ${name}`, () =>
      Effect.gen(function* () {
        const own = (yield* errors).filter((e) => e.file === Snippets.fileOf(index))
        assert.deepStrictEqual(
          own.map((e) => e.text),
          [],
          `${name}\n${own.map((e) => e.text).join("\n")}`
        )
      })
    )
  })

  it.live("nothing else fails to typecheck (the shared declarations, the configuration)", () =>
    Effect.gen(function* () {
      const others = (yield* errors).filter((e) => !/^snippet-\d+\.ts$/.test(e.file))
      assert.deepStrictEqual(
        others.map((e) => e.text),
        []
      )
    })
  )
})
