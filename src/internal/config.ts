/**
 * Environment variables read through `Config`, with errors that name the
 * variable and the value, and say what would be accepted.
 */
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"

/** An optional duration in Effect's syntax (`30 seconds`, `500 millis`), or `0`. */
export const duration = (name: string): Config.Config<Option.Option<Duration.Duration>> =>
  Config.option(
    Config.String(name).pipe(
      Config.flatMap((raw) => {
        // A bare 0 is no time at all, whatever its unit: the way to turn a window or a delay off.
        const parsed =
          raw.trim() === "0" ? Option.some(Duration.zero) : Duration.fromInput(raw.trim() as Duration.Input)
        return Option.isSome(parsed)
          ? Config.succeed(parsed.value)
          : Config.fail(
              new ConfigProvider.SourceError({
                message: `${name}=${JSON.stringify(raw)} is not a duration; use Effect's syntax, such as "30 seconds" or "500 millis"`
              })
            )
      })
    )
  )

const invalid = (name: string, raw: string, wanted: string) =>
  Config.fail(new ConfigProvider.SourceError({ message: `${name}=${JSON.stringify(raw)} is not ${wanted}` }))

/** An optional whole number of at least 1. */
export const count = (name: string): Config.Config<Option.Option<number>> =>
  Config.option(
    Config.String(name).pipe(
      Config.flatMap((raw) =>
        /^\s*[1-9]\d*\s*$/.test(raw) ? Config.succeed(Number(raw)) : invalid(name, raw, "a whole number of at least 1")
      )
    )
  )

/** An optional number of workers: a whole number of at least 1, or `auto` (one per core). */
export const workers = (name: string): Config.Config<Option.Option<number | "auto">> =>
  Config.option(
    Config.String(name).pipe(
      Config.flatMap((raw): Config.Config<number | "auto"> => {
        if (raw.trim() === "auto") return Config.succeed("auto")
        return /^\s*[1-9]\d*\s*$/.test(raw)
          ? Config.succeed(Number(raw))
          : invalid(name, raw, "a number of workers; use a whole number of at least 1, or auto (one per core)")
      })
    )
  )
