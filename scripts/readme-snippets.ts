/**
 * The README's TypeScript snippets, typechecked as a user would write them: every ```ts block becomes a module of its
 * own in a scratch folder inside the repository (so `effect` and `@effect/platform-node` resolve from node_modules),
 * `effect-grace` is mapped to `src/`, and the project's `tsc` checks them all in one run.
 *
 * A block fenced as ```ts-partial, or whose first line is `// snippet: partial`, is a fragment and is not checked.
 * The OpenTelemetry packages the README imports are not dependencies of the project: they are declared here with the
 * little the README uses of them, so that the rest of that snippet is checked.
 *
 *   node scripts/readme-snippets.ts   prints each snippet's errors; exits 1 if any has one
 */
import { execFile } from "node:child_process"
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join, relative, resolve } from "node:path"

/** One fenced TypeScript block of a Markdown file. */
export interface Snippet {
  /** The line of its opening fence, counted from 1. */
  readonly line: number
  /** The heading it stands under. */
  readonly heading: string
  /** Its first line of code. */
  readonly firstLine: string
  readonly code: string
  /** Marked as a fragment: not checked. */
  readonly partial: boolean
}

/** A snippet's name in a failure: where it is and how it begins. */
export const nameOf = (snippet: Snippet): string =>
  `README.md:${snippet.line} (${snippet.heading}): ${snippet.firstLine}`

const PARTIAL_COMMENT = "// snippet: partial"

/** Every ```ts and ```ts-partial block of `markdown`, in order. */
export const extract = (markdown: string): ReadonlyArray<Snippet> => {
  const snippets: Array<Snippet> = []
  const lines = markdown.split("\n")
  let heading = "(top)"
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i]!
    if (/^#{1,6} /.test(text)) heading = text.replace(/^#+ /, "")
    const fence = /^(`{3,})(ts|ts-partial|typescript)\s*$/.exec(text)
    if (fence === null) continue
    const start = i
    const body: Array<string> = []
    for (i++; i < lines.length && lines[i] !== fence[1]; i++) body.push(lines[i]!)
    const code = body.join("\n") + "\n"
    const firstLine = body.find((line) => line.trim() !== "") ?? ""
    snippets.push({
      line: start + 1,
      heading,
      firstLine,
      code,
      partial: fence[2] === "ts-partial" || firstLine.trim() === PARTIAL_COMMENT
    })
  }
  return snippets
}

// The little of OpenTelemetry's packages that the README uses; the real ones are not dependencies of the project.
const OPENTELEMETRY = `
declare module "@effect/opentelemetry" {
  import type * as Layer from "effect/Layer"
  export const NodeSdk: {
    readonly layer: (evaluate: () => {
      readonly resource?: { readonly serviceName: string }
      readonly spanProcessor?: unknown
      readonly metricReader?: unknown
    }) => Layer.Layer<never>
  }
}
declare module "@opentelemetry/exporter-metrics-otlp-http" {
  export class OTLPMetricExporter { constructor(config?: object) }
}
declare module "@opentelemetry/exporter-trace-otlp-http" {
  export class OTLPTraceExporter { constructor(config?: object) }
}
declare module "@opentelemetry/sdk-metrics" {
  export class PeriodicExportingMetricReader { constructor(options: { readonly exporter: unknown }) }
}
declare module "@opentelemetry/sdk-trace-base" {
  export class BatchSpanProcessor { constructor(exporter: unknown) }
}
`

/** The file a checked snippet is written to. */
export const fileOf = (index: number): string => `snippet-${String(index + 1).padStart(2, "0")}.ts`

/** Writes the snippets that are not partial, a declaration file and a tsconfig into `dir`, inside `root`. */
export const write = (root: string, dir: string, snippets: ReadonlyArray<Snippet>): void => {
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const files: Array<string> = ["opentelemetry.d.ts"]
  snippets.forEach((snippet, index) => {
    if (snippet.partial) return
    // Each snippet is a module of its own, whether or not it imports anything.
    writeFileSync(join(dir, fileOf(index)), `${snippet.code}export {}\n`)
    files.push(fileOf(index))
  })
  writeFileSync(join(dir, "opentelemetry.d.ts"), OPENTELEMETRY)
  const src = relative(dir, join(root, "src"))
  const tsconfig = {
    extends: relative(dir, join(root, "tsconfig.json")),
    compilerOptions: {
      // A snippet may define what it only shows (a layer it does not launch).
      noUnusedLocals: false,
      noUnusedParameters: false,
      paths: { "effect-grace": [`${src}/index.ts`], "effect-grace/*": [`${src}/*.ts`] }
    },
    include: [],
    files
  }
  writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(tsconfig, null, 2))
}

/** A compiler error, with the file it is in (relative to the scratch folder) and its message. */
export interface TypeError {
  readonly file: string
  readonly text: string
}

/** Runs the project's tsc on `dir`'s tsconfig; every error, with its file. */
export const typecheck = (root: string, dir: string): Promise<ReadonlyArray<TypeError>> =>
  new Promise((done, fail) => {
    const tsc = join(root, "node_modules", "typescript", "bin", "tsc")
    execFile(
      process.execPath,
      [tsc, "-p", join(dir, "tsconfig.json"), "--pretty", "false"],
      { cwd: root, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const errors: Array<{ file: string; text: string }> = []
        for (const line of stdout.split("\n")) {
          const match = /^(.+?)\(\d+,\d+\): error /.exec(line)
          if (match !== null) errors.push({ file: relative(dir, resolve(root, match[1]!)), text: line })
          else if (line.startsWith(" ") && errors.length > 0) errors[errors.length - 1]!.text += `\n${line}`
        }
        // tsc exits 2 when it reports errors; anything else unexplained is the checker failing, not a snippet.
        if (error !== null && errors.length === 0) fail(new Error(`tsc failed: ${error.message}\n${stdout}${stderr}`))
        else done(errors)
      }
    )
  })

const main = async () => {
  const root = resolve(import.meta.dirname, "..")
  const dir = join(root, ".cache", "readme-snippets")
  const snippets = extract(readFileSync(join(root, "README.md"), "utf8"))
  write(root, dir, snippets)
  const errors = await typecheck(root, dir)
  snippets.forEach((snippet, index) => {
    const own = errors.filter((e) => e.file === fileOf(index))
    const status = snippet.partial ? "partial, not checked" : own.length === 0 ? "ok" : "FAILS"
    console.log(`${status}: ${nameOf(snippet)}`)
    for (const e of own) console.log(`  ${e.text}`)
  })
  const elsewhere = errors.filter((e) => !/^snippet-\d+\.ts$/.test(e.file))
  for (const e of elsewhere) console.log(`  ${e.text}`)
  rmSync(dir, { recursive: true, force: true })
  if (errors.length > 0) process.exitCode = 1
}

if (import.meta.filename === resolve(process.argv[1] ?? "")) await main()
