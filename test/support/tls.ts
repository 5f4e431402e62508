/**
 * TLS for tests: a certificate made now, a client that reports whether its
 * session was resumed, an HTTP/2 request, and curl. Every wait is bounded.
 */
import { execFile, execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import type * as Http2 from "node:http2"
import * as Path from "node:path"
import * as Tls from "node:tls"
import * as Effect from "effect/Effect"

/** A self-signed certificate for localhost, made now, in `dir`. */
export const certificateFiles = (dir: string) => {
  const key = Path.join(dir, "key.pem")
  const cert = Path.join(dir, "cert.pem")
  execFileSync(
    "/usr/bin/openssl",
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
      .concat(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1"])
      .concat(["-keyout", key, "-out", cert]),
    { stdio: "ignore" }
  )
  return { key, cert }
}

/**
 * One TLS 1.3 connection, offering `session` if given: whether the server resumed it, the session ticket it issued,
 * and, for `http/1.1`, the body of `GET /`.
 */
export const tlsConnect = (port: number, ca: Buffer, protocol: "http/1.1" | "h2", session?: Buffer) =>
  Effect.callback<{ readonly reused: boolean; readonly ticket: Buffer | undefined; readonly body: string }, Error>(
    (resume) => {
      const socket = Tls.connect({
        port,
        host: "127.0.0.1",
        servername: "localhost",
        ca,
        ALPNProtocols: [protocol],
        minVersion: "TLSv1.3",
        ...(session !== undefined ? { session } : {})
      })
      let reused = false
      let ticket: Buffer | undefined
      let received = ""
      socket.once("secureConnect", () => {
        reused = socket.isSessionReused()
        if (protocol === "http/1.1") socket.write("GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        else if (session !== undefined) socket.end()
      })
      // TLS 1.3 sends its tickets after the handshake.
      socket.on("session", (issued: Buffer) => {
        ticket ??= issued
        if (protocol === "h2") socket.end()
      })
      socket.on("data", (chunk: Buffer) => (received += chunk.toString()))
      socket.on("error", (error) => resume(Effect.fail(error)))
      socket.on("close", () => resume(Effect.succeed({ reused, ticket, body: received.split("\r\n\r\n")[1] ?? "" })))
      return Effect.sync(() => socket.destroy())
    }
  ).pipe(
    Effect.timeoutOrElse({
      duration: "10 seconds",
      orElse: () => Effect.fail(new Error(`no TLS exchange with port ${port} within 10 s`))
    })
  )

/** One request on an HTTP/2 session, read to the end, bounded: its status and body. */
export const h2Request = (session: Http2.ClientHttp2Session, path: string) =>
  Effect.callback<{ readonly status: number; readonly body: string }, Error>((resume) => {
    const stream = session.request({ ":path": path })
    let status = 0
    let body = ""
    stream.on("response", (headers) => (status = Number(headers[":status"])))
    stream.on("data", (chunk: Buffer) => (body += chunk.toString()))
    stream.on("end", () => resume(Effect.succeed({ status, body })))
    stream.on("error", (error) => resume(Effect.fail(error)))
    return Effect.sync(() => stream.close())
  }).pipe(
    Effect.timeoutOrElse({
      duration: "10 seconds",
      orElse: () => Effect.fail(new Error(`no HTTP/2 answer to ${path} within 10 s`))
    })
  )

/** Where curl is, if it is installed. */
export const curlPath = ["/usr/bin/curl", "/usr/local/bin/curl"].find((path) => Fs.existsSync(path))

/** Runs curl with `args`, bounded, killed if interrupted: what it printed. */
export const curl = (args: ReadonlyArray<string>) =>
  Effect.callback<string, Error>((resume) => {
    const child = execFile(
      curlPath ?? "curl",
      ["--silent", "--show-error", "--max-time", "10", ...args],
      (error, out) => resume(error === null ? Effect.succeed(out) : Effect.fail(error))
    )
    return Effect.sync(() => child.kill())
  })
