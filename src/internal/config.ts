/**
 * Environment variables read through `Config`, with errors that name the
 * variable and the value, and say what would be accepted.
 */
import * as ByteSize from "effect/ByteSize"
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

// PM2's and systemd's short units: powers of 1024, as `MemoryMax=1G` means.
const shortUnits: Readonly<Record<string, string>> = { K: "KiB", M: "MiB", G: "GiB", T: "TiB" }

/**
 * A size in bytes: a whole number of bytes (`536870912`), or a number and a unit as `effect/ByteSize` reads them
 * (`512MiB`, `1.5GiB`, `800MB`, `2 gibibytes`: decimal units are powers of 1000, binary ones of 1024), or PM2's and
 * systemd's short units (`512M`, `1G`: powers of 1024). Not a whole number of bytes, or none at all, is no size.
 */
export const parseSize = (input: string): Option.Option<number> => {
  const raw = input.trim()
  if (/^\d+$/.test(raw)) return positive(BigInt(raw))
  const short = /^(\d+(?:\.\d+)?)\s*([KMGT])$/.exec(raw)
  const parsed = ByteSize.fromString(short === null ? raw : `${short[1]}${shortUnits[short[2]!]}`)
  return Option.flatMap(parsed, (size) => positive(ByteSize.toBigInt(size)))
}

const positive = (bytes: bigint): Option.Option<number> =>
  bytes > 0n && bytes <= BigInt(Number.MAX_SAFE_INTEGER) ? Option.some(Number(bytes)) : Option.none()

/** What a size is written as, for the line that refuses one. */
export const SIZE_SYNTAX = `bytes ("536870912"), or a number and a unit ("512MiB", "1.5GiB", "800MB", "1G")`

/** A size for a person: binary units, and the bytes. */
export const formatSize = (bytes: number): string => `${ByteSize.format(ByteSize.bytes(bytes))} (${bytes} bytes)`

/** An optional size (`parseSize`); empty is none. */
export const size = (name: string): Config.Config<Option.Option<number>> =>
  Config.option(Config.String(name)).pipe(
    Config.flatMap((found): Config.Config<Option.Option<number>> => {
      if (Option.isNone(found) || found.value.trim() === "") return Config.succeed(Option.none())
      const parsed = parseSize(found.value)
      return Option.isSome(parsed)
        ? Config.succeed(parsed)
        : refused(name, found.value, `is not a size; use ${SIZE_SYNTAX}`)
    })
  )
