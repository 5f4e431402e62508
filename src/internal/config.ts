/**
 * Environment variables read through `Config`, with errors that name the
 * variable and the value, and say what would be accepted.
 */
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import type * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import { DURATION_SYNTAX, parseDuration } from "./duration.ts"

// Parsed in their own module, which the `effect-grace` command loads without `Config`.
export { DURATION_SYNTAX, parseDuration } from "./duration.ts"

/** An optional duration (`parseDuration`). */
export const duration = (name: string): Config.Config<Option.Option<Duration.Duration>> =>
  Config.option(
    Config.String(name).pipe(
      Config.flatMap((raw) => {
        const parsed = parseDuration(raw)
        return Option.isSome(parsed)
          ? Config.succeed(parsed.value)
          : Config.fail(
              new ConfigProvider.SourceError({
                message: `${name}=${JSON.stringify(raw)} is not a duration; use ${DURATION_SYNTAX}`
              })
            )
      })
    )
  )

const invalid = (name: string, raw: string, wanted: string) => refused(name, raw, `is not ${wanted}`)

/**
 * The most workers (and slots rolled at a time) a primary takes: far above the cores of any host, and low enough
 * that a typo (`100000000`) fails at once with one line instead of exhausting memory or the process table.
 */
export const MAX_WORKERS = 1024

/** Why a count is refused (what follows its name and value), or nothing: a whole number from 1 to `MAX_WORKERS`. */
export const checkCount = (value: number): string | undefined =>
  !Number.isInteger(value) || value < 1
    ? "is not a whole number of at least 1"
    : value > MAX_WORKERS
      ? `is more than ${MAX_WORKERS}, the most this library runs (one per core is the usual choice)`
      : undefined

const refused = (name: string, raw: string, problem: string) =>
  Config.fail(new ConfigProvider.SourceError({ message: `${name}=${JSON.stringify(raw)} ${problem}` }))

// Digits only (no sign, exponent, fraction, base or leading zero), then the bound.
const countOf = (name: string, raw: string, wanted: string): Config.Config<number> => {
  if (!/^\s*[1-9]\d*\s*$/.test(raw)) return invalid(name, raw, wanted)
  const problem = checkCount(Number(raw))
  return problem === undefined ? Config.succeed(Number(raw)) : refused(name, raw, problem)
}

/** An optional whole number from 1 to `MAX_WORKERS`. */
export const count = (name: string): Config.Config<Option.Option<number>> =>
  Config.option(Config.String(name).pipe(Config.flatMap((raw) => countOf(name, raw, "a whole number of at least 1"))))

/**
 * An optional number of workers: a whole number from 1 to `MAX_WORKERS`, or `auto` (one per core). Empty is none
 * (`Environment=GRACE_WORKERS=` in a unit): one process.
 */
export const workers = (name: string): Config.Config<Option.Option<number | "auto">> =>
  Config.option(Config.String(name)).pipe(
    Config.flatMap((found): Config.Config<Option.Option<number | "auto">> => {
      if (Option.isNone(found) || found.value.trim() === "") return Config.succeed(Option.none())
      const raw = found.value
      if (raw.trim() === "auto") return Config.succeed(Option.some("auto"))
      const wanted = "a number of workers; use a whole number of at least 1, or auto (one per core)"
      return Config.map(countOf(name, raw, wanted), Option.some)
    })
  )
