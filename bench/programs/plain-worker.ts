/**
 * A plain `node:http` worker, with no effect-grace code, that `bench/balance.ts`
 * and `bench/workers.ts` start beside one another on one port:
 *
 *   node bench/programs/plain-worker.ts               listens on the socket passed as its fd 3
 *   BALANCE_PORT=PORT node bench/programs/plain-worker.ts   binds a SO_REUSEPORT socket of its own
 *
 * It answers `GET /<ms>[/close]` with `hello from pid N.` after a timer of
 * `ms` milliseconds (none for 0), with `Connection: close` given `/close`, and
 * counts the requests it answered and the connections it accepted. Over IPC
 * (fd 4 in the parent's `stdio`) it says `listening`, and answers `reset`
 * (the counts set to zero) and `counts`. It ends when its IPC channel closes.
 */
import * as Http from "node:http"
import type { FromWorker } from "../support/plain-workers.ts"

const HOST = "127.0.0.1"

const body = `hello from pid ${process.pid}.`
const headers = { "content-type": "text/plain", "content-length": Buffer.byteLength(body) }
let requests = 0
let connections = 0

const server = Http.createServer((request, response) => {
  const [, ms, close] = /^\/(\d+)(\/close)?/.exec(request.url ?? "") ?? []
  const answer = () => {
    requests++
    if (close !== undefined) response.setHeader("connection", "close")
    response.writeHead(200, headers).end(body)
  }
  const delay = Number(ms ?? 0)
  if (delay > 0) setTimeout(answer, delay)
  else answer()
})
server.on("connection", () => connections++)

const send = (message: FromWorker) => process.send!(message)
process.on("message", (message) => {
  if (message === "reset") {
    requests = 0
    connections = 0
    send({ type: "reset" })
  } else if (message === "counts") send({ type: "counts", requests, connections })
})
// The parent gone (or done), nothing else keeps this process: it ends.
process.on("disconnect", () => {
  server.close()
  server.closeAllConnections()
})

const port = process.env.BALANCE_PORT
const options = port === undefined ? { fd: 3 } : { port: Number(port), host: HOST, reusePort: true }
server.listen(options, () => send({ type: "listening" }))
