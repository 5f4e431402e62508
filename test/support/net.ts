/**
 * Loopback clients for tests: every call is bounded in time.
 */
import * as Net from "node:net"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

/** Where to connect: a TCP port on loopback, or a unix socket path. */
export type Target = { readonly port: number; readonly host?: string } | { readonly path: string }

export const connectOptions = (target: Target): Net.NetConnectOpts =>
  "path" in target ? { path: target.path } : { port: target.port, host: target.host ?? "127.0.0.1" }

/** Connects, optionally writes, and reads until the server closes; fails on a refused or reset connection. */
export const exchange = (
  target: Target,
  payload?: string,
  timeout: Duration.Input = Duration.seconds(10)
): Effect.Effect<string, Error> =>
  Effect.callback<string, Error>((resume) => {
    const socket = Net.connect(connectOptions(target))
    const chunks: Array<Buffer> = []
    socket.on("connect", () => {
      if (payload !== undefined) socket.write(payload)
    })
    socket.on("data", (chunk) => chunks.push(chunk))
    socket.on("error", (error) => resume(Effect.fail(error)))
    socket.on("end", () => resume(Effect.succeed(Buffer.concat(chunks).toString())))
    return Effect.sync(() => socket.destroy())
  }).pipe(
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () =>
        Effect.fail(
          new Error(
            `no answer from ${JSON.stringify(target)} within ${Duration.format(Duration.fromInputUnsafe(timeout))}`
          )
        )
    })
  )

/** A TCP port that is free now (bound on loopback, then released). */
export const freePort = (): Effect.Effect<number> =>
  Effect.callback<number>((resume) => {
    const server = Net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resume(Effect.succeed(port)))
    })
  })
