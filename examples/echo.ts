/**
 * A raw TCP echo server that drains: it echoes what it receives, restarts on
 * `SIGUSR2` without refusing a connection, and when it drains (restart or
 * `SIGTERM`) tells each open connection goodbye before closing it.
 *
 *   node examples/echo.ts [--listen :7007]
 *   nc localhost 7007
 */
import { parseArgs } from "node:util"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as Socket from "effect/socket/Socket"
import { Drain, Listeners, Supervisor, TcpServer } from "../src/index.ts"

const { values: flags } = parseArgs({ options: { listen: { type: "string", default: ":7007" } } })

const echo = (socket: Socket.Socket) =>
  Effect.scoped(
    Effect.gen(function* () {
      const reader = yield* socket.reader
      const writer = yield* socket.writer
      yield* writer.write(`hello from pid ${process.pid}\n`)
      const relay = Effect.forever(Effect.flatMap(reader.pull, (chunks) => writer.writeAll(chunks)))
      const goodbye = Effect.andThen(Drain.draining, writer.write(`bye from pid ${process.pid}\n`))
      // Until the client leaves, or the server drains: then say goodbye, and the connection closes.
      yield* Effect.raceFirst(Effect.ignore(relay), goodbye)
    })
  )

const Echo = TcpServer.serve(echo).pipe(Layer.provide(TcpServer.layer(flags.listen)))

const Banner = Layer.effectDiscard(
  Effect.gen(function* () {
    const listeners = yield* Listeners.Listeners
    const [listener] = yield* listeners.active
    console.log(`Echoing on ${listener ? Listeners.formatAddress(listener.address) : "?"} with pid ${process.pid}.`)
  })
).pipe(Layer.provide(Echo))

Layer.launch(Supervisor.layer(Banner)).pipe(Effect.provideService(Logger.LogToStderr, true), Supervisor.runMain)
