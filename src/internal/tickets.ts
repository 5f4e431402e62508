/**
 * The TLS session ticket keys of a lineage of processes. Each `tls.Server`
 * makes its own keys by default, so after a restart no client could resume
 * its session. Here every HTTPS server of a process that was not given keys
 * of its own shares one key, made at random by the first process, and each
 * restart hands it to the successor over the private readiness channel
 * (never the environment, argv or a file).
 *
 * Node's `setTicketKeys` takes one key (48 bytes: name, HMAC and AES keys):
 * there is no previous key kept for decryption, so a rotation would end
 * every session at once. The key is kept for the lineage's life, as a single
 * process keeps its own.
 */
import { randomBytes } from "node:crypto"
import * as Context from "effect/Context"

/** The size of a `ticketKeys` buffer. */
export const TICKET_KEYS_BYTES = 48

let processKeys: Buffer | undefined

/** This process's keys, made at random the first time they are needed. */
const made = (): Buffer => (processKeys ??= randomBytes(TICKET_KEYS_BYTES))

/** The ticket keys of the HTTPS servers of the current context. */
export const TicketKeys: Context.Reference<Buffer> = Context.Reference<Buffer>("effect-grace/TicketKeys", {
  defaultValue: made
})
