/**
 * The app `bench/peers.ts` runs bare and under PM2: a `node:http` server whose
 * every answer waits 5 ms (`HANDLER_MS`), then says which pid served it, as the
 * demo does (`... from pid N.`).
 *
 *   PORT=8080 node bench/programs/peers-app.ts
 *
 * It stops as PM2's documentation recommends (graceful shutdown): on SIGINT
 * (what `pm2 reload` sends) or SIGTERM it stops accepting, lets the requests
 * in flight finish, and exits. `process.send("ready")` tells PM2 it listens
 * (used with `wait_ready`); it prints `listening PORT` for everyone else.
 */
import * as Http from "node:http"

const port = Number(process.env.PORT)
const handlerMs = Number(process.env.HANDLER_MS ?? 5)

const server = Http.createServer((request, response) => {
  request.resume()
  setTimeout(() => {
    response.writeHead(200, { "content-type": "text/plain" })
    response.end(`slept for ${handlerMs} ms from pid ${process.pid}.\n`)
  }, handlerMs)
})

server.listen(port, "127.0.0.1", () => {
  console.log(`listening ${port} with pid ${process.pid}`)
  process.send?.("ready")
})

// PM2's IPC channel would keep the process alive once the server has closed.
// oxlint-disable-next-line unicorn/no-process-exit
const stop = () => server.close(() => process.exit(0))
process.once("SIGINT", stop)
process.once("SIGTERM", stop)
