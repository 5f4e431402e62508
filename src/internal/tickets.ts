/**
 * The TLS session ticket keys of a lineage of processes: a keyring whose one
 * key every HTTPS server of a process shares, unless given `ticketKeys` of
 * its own. Each `tls.Server` makes its own key by default, so after a
 * restart no client could resume its session; under the `Supervisor` the
 * key is handed to the successor over the private readiness channel (never
 * the environment, argv or a file), with the time it was made.
 *
 * Invariants:
 * - The key rotates once its age reaches the rotation period (24 hours by
 *   default, as Go's crypto/tls does for its automatic keys), the age counted
 *   from when the first process of the lineage made it: a restart neither
 *   resets nor shortens a key's life. A key found past due is replaced
 *   before it is used.
 * - Every registered server holds the current key: it is set when the
 *   server registers and at each rotation, until the registration's scope
 *   closes.
 * - A leaked key opens the sessions resumed (and the 0-RTT data sent) with
 *   tickets it sealed during its period, not those of earlier or later ones.
 *
 * Node's `setTicketKeys` takes one key (48 bytes: name, HMAC and AES keys)
 * and keeps no previous key for decryption: after a rotation, a client
 * offering a ticket sealed with the old key makes one full handshake and
 * gets a new ticket.
 */
import { randomBytes } from "node:crypto"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Variables from "./config.ts"

/** The size of a `ticketKeys` buffer. */
export const TICKET_KEYS_BYTES = 48

/** How long a key lives when nothing says otherwise: 24 hours, as Go's crypto/tls rotates its automatic keys. */
export const DEFAULT_ROTATION: Duration.Duration = Duration.hours(24)

/** A ticket key and when it was made. */
export interface TicketKey {
  /** The `ticketKeys` buffer: 48 bytes. */
  readonly key: Buffer
  /** When the key was made, in epoch milliseconds. */
  readonly createdAt: number
}

// -----------------------------------------------------------------------------
// Encoding, for the readiness channel
// -----------------------------------------------------------------------------

// The time in decimal, a dot, the key in unpadded base64url: one token, with no whitespace.
const TOKEN = /^(\d{1,15})\.([\w-]{64})$/

/** A key as one token (`<createdAt>.<base64url key>`), with no whitespace or newline. */
export const encode = (key: TicketKey): string => `${key.createdAt}.${key.key.toString("base64url")}`

/** The key `encode` made, or `undefined` for anything else. */
export const decode = (text: string): TicketKey | undefined => {
  const match = TOKEN.exec(text)
  if (match === null) return undefined
  return { createdAt: Number(match[1]), key: Buffer.from(match[2]!, "base64url") }
}

// -----------------------------------------------------------------------------
// The keyring
// -----------------------------------------------------------------------------

/** A server that takes ticket keys: an `https.Server`, an `Http2SecureServer`, any `tls.Server`. */
export interface TicketServer {
  setTicketKeys(keys: Buffer): void
}

/** The current ticket key of the servers of a context, and the servers that hold it. */
export interface Keyring {
  /** The current key, made anew first if it is due. */
  readonly current: Effect.Effect<TicketKey>
  /** Sets the current key on the server now and on every rotation, for as long as the scope lives. */
  readonly register: (server: TicketServer) => Effect.Effect<void, never, Scope.Scope>
}

/**
 * A keyring starting from `initial` (made at the first use if none) that rotates when its key is read past due,
 * and, with `timed`, on a timer that each registration runs in its own scope.
 */
const keyring = (initial: TicketKey | undefined, rotateEvery: Duration.Duration, timed: boolean) => {
  const period = Duration.toMillis(rotateEvery)
  let latest = initial
  const servers = new Set<TicketServer>()
  // The key at `now`: a key whose time has come is replaced at once on every registered server.
  const at = (now: number): TicketKey => {
    if (latest === undefined || now - latest.createdAt >= period) {
      latest = { key: randomBytes(TICKET_KEYS_BYTES), createdAt: now }
      for (const server of servers) server.setTicketKeys(latest.key)
    } else if (latest.createdAt > now) {
      // Made in the future by the clock's reckoning (it went back): its age counts from now, not from then.
      latest = { key: latest.key, createdAt: now }
    }
    return latest
  }
  const current = Effect.map(Clock.currentTimeMillis, at)
  // Sleeps until the key is due, and replaces it; an infinite period never wakes.
  const rotating = Effect.forever(
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      yield* Effect.sleep(Duration.millis(Math.max(at(now).createdAt + period - now, 0)))
    })
  )
  const register = (server: TicketServer): Effect.Effect<void, never, Scope.Scope> =>
    Effect.andThen(
      Effect.acquireRelease(
        Effect.map(current, ({ key }) => {
          servers.add(server)
          server.setTicketKeys(key)
        }),
        () => Effect.sync(() => servers.delete(server))
      ),
      timed ? Effect.asVoid(Effect.forkScoped(rotating)) : Effect.void
    )
  return { keyring: { current, register } satisfies Keyring, rotating }
}

/**
 * A keyring starting from `initial` (a parent's key) or a fresh random key, that rotates when a key's age reaches
 * `rotateEvery` (counted from `createdAt`, so it carries across restarts) on an Effect timer, for the scope's life.
 * An infinite `rotateEvery` never rotates.
 */
export const makeKeyring = (options: {
  readonly initial?: TicketKey | undefined
  readonly rotateEvery: Duration.Duration
}): Effect.Effect<Keyring, never, Scope.Scope> =>
  Effect.gen(function* () {
    const made = keyring(options.initial, options.rotateEvery, false)
    yield* made.keyring.current
    yield* Effect.forkScoped(made.rotating)
    return made.keyring
  })

/**
 * The keyring of the HTTPS servers of the current context. The default is made at its first use, once per process,
 * and rotates every 24 hours. Having no scope to own a timer of its own, it rotates when its key is read past due,
 * and on a timer that each registered server runs in its registration's scope (a server's scope): any server that
 * holds its key is replaced on time.
 */
export const TicketKeyring: Context.Reference<Keyring> = Context.Reference<Keyring>("effect-grace/TicketKeyring", {
  defaultValue: () => keyring(undefined, DEFAULT_ROTATION, true).keyring
})

// -----------------------------------------------------------------------------
// Configuration
// -----------------------------------------------------------------------------

const ROTATION_VARIABLE = "GRACE_TICKET_ROTATION"

const rotationError = (raw: string, what: string) =>
  new ConfigProvider.SourceError({
    message: `${ROTATION_VARIABLE}=${JSON.stringify(raw)} ${what}; give a positive duration in Go's syntax ("24h") or Effect's ("24 hours"), or "off" never to rotate the key`
  })

/**
 * `GRACE_TICKET_ROTATION`: how long a ticket key lives, a positive duration (`24h`, `24 hours`), 24 hours if unset.
 * `off` (or `Infinity`) keeps one key for the lineage's life; zero is refused, as it would rotate all the time.
 */
export const ticketRotation: Config.Config<Duration.Duration> = Config.option(Config.String(ROTATION_VARIABLE)).pipe(
  Config.flatMap(
    Option.match({
      onNone: () => Config.succeed(DEFAULT_ROTATION),
      onSome: (raw) => {
        if (raw.trim().toLowerCase() === "off") return Config.succeed(Duration.infinity)
        const parsed = Variables.parseDuration(raw)
        if (Option.isNone(parsed)) return Config.fail(rotationError(raw, "is not a duration"))
        if (!Duration.isPositive(parsed.value)) return Config.fail(rotationError(raw, "would rotate all the time"))
        return Config.succeed(parsed.value)
      }
    })
  )
)
