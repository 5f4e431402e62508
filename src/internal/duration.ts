/**
 * Durations as people write them: Go's syntax or Effect's. Its own module, importing nothing of Effect beyond
 * `Duration` and `Option`, so that the `effect-grace` command parses `--timeout` without loading `Config`.
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"

const goUnits: Readonly<Record<string, number>> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 }
const goTerm = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/g

/**
 * A duration in Go's syntax (`30s`, `1m30s`, `250ms`: what systemd, Kubernetes and Go tools write), in Effect's
 * (`30 seconds`, `500 millis`), or a bare `0`: no time at all, whatever its unit, the way to turn a window off.
 */
export const parseDuration = (input: string): Option.Option<Duration.Duration> => {
  const raw = input.trim()
  if (raw === "0") return Option.some(Duration.zero)
  if (/^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$/.test(raw)) {
    let nanos = 0
    for (const [, value, unit] of raw.matchAll(goTerm)) nanos += Number(value) * goUnits[unit!]!
    return Option.some(Duration.nanos(BigInt(Math.round(nanos))))
  }
  return Duration.fromInput(raw as Duration.Input)
}

/** What a duration is written as, for the line that refuses one. */
export const DURATION_SYNTAX = `Go's syntax ("30s", "1m30s", "500ms") or Effect's ("30 seconds")`
