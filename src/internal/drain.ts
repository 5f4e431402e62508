/**
 * Connection tracking and the drain, shared by the HTTP and the raw socket
 * servers. The knobs, the signal and the metrics are defined here and are
 * public in `Drain`, which documents them.
 *
 * Invariants of a drain (the caller has already closed the listening handle):
 * - Work in flight (a request, a raw connection's handler) runs to completion
 *   or to the deadline, whichever comes first.
 * - A connection that may be closed between requests (HTTP/1 keep-alive, a
 *   TLS handshake that stalls) is closed only once it has been quiet for the
 *   idle grace: no request in flight, and no byte read since its last
 *   activity. Closing one that merely looks idle races a client that is
 *   sending its next request right now into a reset.
 * - Long-lived connections (WebSockets, HTTP/2 sessions) are told to go away
 *   when the drain begins, and stay until they close.
 * - An HTTP/2 session is told in two steps (RFC 9113, section 6.8): a GOAWAY
 *   that admits every stream (last stream ID 2^31-1), then, after PINGs have
 *   made the round trip (or after `GOAWAY_GRACE_MS`), the GOAWAY naming the
 *   last stream received. A stream the client sent before it saw the first is
 *   run, not refused; every stream up to the last one completes. (Node
 *   limits this: see `goAwayGracefully`.)
 * - At the deadline, whatever is left is destroyed and counted as forced.
 * - A drain with nothing open completes at once.
 */
import type * as Http from "node:http"
import type * as Http2 from "node:http2"
import type * as Net from "node:net"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"

// -----------------------------------------------------------------------------
// The knobs, the signal and the metrics (public in `Drain`, which documents them)
// -----------------------------------------------------------------------------

export const DrainTimeout: Context.Reference<Duration.Duration> = Context.Reference<Duration.Duration>(
  "effect-grace/DrainTimeout",
  { defaultValue: () => Duration.seconds(30) }
)

export const IdleGrace: Context.Reference<Duration.Duration> = Context.Reference<Duration.Duration>(
  "effect-grace/IdleGrace",
  { defaultValue: () => Duration.millis(250) }
)

/** What a handler can learn of its server's shutdown. */
export interface DrainSignal {
  readonly await: Effect.Effect<void>
  readonly isDraining: Effect.Effect<boolean>
}

const never: DrainSignal = { await: Effect.never, isDraining: Effect.succeed(false) }

export const Draining: Context.Reference<DrainSignal> = Context.Reference<DrainSignal>("effect-grace/Draining", {
  defaultValue: () => never
})

export const metrics = {
  duration: Metric.timer("effect-grace.drain.duration", { description: "How long a server's drain took" }),
  forced: Metric.counter("effect-grace.drain.forced", {
    description: "Connections destroyed at a drain's deadline",
    incremental: true
  }),
  cut: Metric.counter("effect-grace.drain.cut", {
    description: "Requests (raw servers: handlers) still running at a drain's deadline, cut",
    incremental: true
  }),
  refused: Metric.counter("effect-grace.drain.refused", {
    description: "Requests read on a connection a drain was closing, not run",
    incremental: true
  })
}

// -----------------------------------------------------------------------------
// Settings
// -----------------------------------------------------------------------------

/** The per-server settings: options first, then the references. */
export interface Settings {
  readonly timeout: Duration.Duration
  readonly idleGrace: Duration.Duration
  /** Completes when the drain must end now, as at its deadline (a second termination signal). */
  readonly forced: Effect.Effect<void>
  /** Whether the program is past its start-up (see `Started`). */
  readonly started: Effect.Effect<boolean>
}

export const resolveSettings = (options: {
  readonly drainTimeout?: Duration.Input | undefined
  readonly idleGrace?: Duration.Input | undefined
}): Effect.Effect<Settings> =>
  Effect.gen(function* () {
    return {
      timeout:
        options.drainTimeout !== undefined ? Duration.fromInputUnsafe(options.drainTimeout) : yield* DrainTimeout,
      idleGrace: options.idleGrace !== undefined ? Duration.fromInputUnsafe(options.idleGrace) : yield* IdleGrace,
      forced: yield* Forced,
      started: yield* Started
    }
  })

// -----------------------------------------------------------------------------
// The drain signal
// -----------------------------------------------------------------------------

/**
 * Provides `signal` as `Draining` to `effect` (the making of a request
 * handler), in a flat copy of its context. That context is the base of every
 * request's, so an overlay from `Effect.provideService` would be walked by
 * every lookup of every request (measured: about 1% more instructions per
 * request).
 */
export const provideSignal =
  (signal: DrainSignal) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.updateContext(effect, (context: Context.Context<R>) =>
      Context.merge(context, Context.make(Draining, signal))
    )

// -----------------------------------------------------------------------------
// The shutdown delay
// -----------------------------------------------------------------------------

/**
 * Completes when the supervisor's shutdown delay begins: each server then
 * says `Connection: close` on every response (`Tracker.beginClosing`) and goes
 * on accepting until its drain. Outside a supervisor (or without a delay) it
 * never completes before the drain, which closes the same way.
 */
export const Closing: Context.Reference<Effect.Effect<void>> = Context.Reference<Effect.Effect<void>>(
  "effect-grace/Closing",
  { defaultValue: () => Effect.never }
)

/**
 * Completes when every drain must end now, as at its deadline: the
 * supervisor's answer to a second termination signal. A program then ends by
 * finishing, which works even as PID 1, where no signal ends the process.
 */
export const Forced: Context.Reference<Effect.Effect<void>> = Context.Reference<Effect.Effect<void>>(
  "effect-grace/Forced",
  { defaultValue: () => Effect.never }
)

/**
 * Whether the program is past its start-up: the supervisor's says so once it
 * is ready. A start-up that fails closes the servers already served; their
 * drains, with nothing to drain, are not reported, as the program never
 * served. Outside a supervisor, always.
 */
export const Started: Context.Reference<Effect.Effect<boolean>> = Context.Reference<Effect.Effect<boolean>>(
  "effect-grace/Started",
  { defaultValue: () => Effect.succeed(true) }
)

/** Follows `Closing` for `tracker`, for as long as the current scope lives. */
export const followClosing = (tracker: Tracker): Effect.Effect<void, never, Scope.Scope> =>
  Effect.flatMap(Effect.service(Closing), (closing) =>
    Effect.asVoid(
      Effect.forkScoped(
        Effect.andThen(
          closing,
          Effect.sync(() => tracker.beginClosing())
        )
      )
    )
  )

// -----------------------------------------------------------------------------
// Reporting
// -----------------------------------------------------------------------------

/**
 * Drains and reports it: a debug line `effect-grace: drain started` once the
 * server has stopped accepting, the span `effect-grace.drain` (attributes
 * `effect-grace.server` and one `effect-grace.<count>` per count of the
 * report), the drain metrics, and the log line `effect-grace: drain
 * finished` (a warning when something was forced). `omit` names counts that
 * mean nothing for the kind of server.
 */
export const drainReported = (
  tracker: Tracker,
  settings: Settings,
  server: string,
  omit: ReadonlyArray<keyof DrainReport> = []
): Effect.Effect<DrainReport | "resumed"> =>
  Effect.gen(function* () {
    // A drain under way (a paused server's) reports itself: this one waits for its end.
    if (tracker.drainUnderway) return yield* tracker.drain(settings)
    // The caller has stopped accepting: from here on, new connections go to a successor, or are refused.
    yield* Effect.logDebug("effect-grace: drain started").pipe(Effect.annotateLogs({ server, pid: process.pid }))
    const report = yield* tracker.drain(settings)
    if (report === "resumed") {
      yield* Effect.logInfo("effect-grace: accepting again").pipe(Effect.annotateLogs({ server, pid: process.pid }))
      return report
    }
    if (report.connections === 0 && !(yield* settings.started)) return report
    const counts = Object.fromEntries(
      Object.entries(report).filter(([key]) => !omit.includes(key as keyof DrainReport))
    )
    yield* Effect.annotateCurrentSpan(
      Object.fromEntries(Object.entries(counts).map(([key, value]) => [`effect-grace.${key}`, value]))
    )
    const attributes = { server }
    yield* Metric.update(Metric.withAttributes(metrics.duration, attributes), Duration.millis(report.millis))
    yield* Metric.update(Metric.withAttributes(metrics.forced, attributes), report.forced)
    yield* Metric.update(Metric.withAttributes(metrics.cut, attributes), report.cut)
    if (!omit.includes("refused")) {
      yield* Metric.update(Metric.withAttributes(metrics.refused, attributes), report.refused)
    }
    const log = report.forced > 0 ? Effect.logWarning : Effect.logInfo
    yield* log("effect-grace: drain finished").pipe(Effect.annotateLogs({ server, ...counts }))
    return report
  }).pipe(Effect.withSpan("effect-grace.drain", { attributes: { "effect-grace.server": server } }))

// -----------------------------------------------------------------------------
// Tracking
// -----------------------------------------------------------------------------

/**
 * - `http`: an HTTP/1 connection, closed once quiet between requests.
 * - `handshake`: a TCP connection still in its TLS handshake, closed once quiet.
 * - `upgraded`: an upgraded HTTP connection (WebSocket), held until it closes.
 * - `session`: an HTTP/2 session, sent GOAWAY and held until it closes.
 * - `raw`: a raw socket server connection, held while its handler runs.
 */
export type Kind = "http" | "handshake" | "upgraded" | "session" | "raw"

const closesWhenQuiet = (kind: Kind): boolean => kind === "http" || kind === "handshake"

// -----------------------------------------------------------------------------
// The activity clock
// -----------------------------------------------------------------------------

const EPOCH_MS = 10
// Epochs whose end is remembered.
const KEPT_EPOCHS = 64

/**
 * When connections were last active, coarse and never early. Reading the
 * time as every request ends cost more than the rest of the tracking (a
 * clock read once per event-loop turn still cost 1.5-2% of the requests per
 * second of a trivial handler), so activity is stamped with an epoch: a
 * counter that a timer advances `EPOCH_MS` after the first activity of an
 * epoch, noting the time. Activity stamped `e` happened before epoch `e`
 * ended, or, in the epoch still running, up to now: a connection's quiet is
 * judged from that end, so up to an epoch (and the timer's lateness) longer
 * than it was, never shorter. Nothing runs while nothing is active.
 */
export class ActivityClock {
  private epoch = 0
  private running = false
  private readonly ends = new Float64Array(KEPT_EPOCHS)
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private readonly advance = () => {
    this.ends[this.epoch % KEPT_EPOCHS] = performance.now()
    this.epoch++
    this.running = false
  }

  /** Activity now: the epoch to stamp it with. Called for every request; it does as little as it can. */
  touch(): number {
    if (!this.running) this.start()
    return this.epoch
  }

  /** The latest time activity stamped `epoch` can have happened, `now` being the time. */
  latest(epoch: number, now: number): number {
    if (epoch === this.epoch) return now
    // An epoch older than those remembered ended before the oldest of them.
    return this.ends[Math.max(epoch, this.epoch - KEPT_EPOCHS) % KEPT_EPOCHS]!
  }

  stop(): void {
    clearTimeout(this.timer)
    this.running = false
  }

  private start(): void {
    this.running = true
    if (this.timer === undefined) {
      this.timer = setTimeout(this.advance, EPOCH_MS)
      this.timer.unref()
    } else this.timer.refresh()
  }
}

export class Connection {
  /** Requests (or the handler) in flight. */
  busy = 0
  /** The `ActivityClock` epoch of the latest request's end (or the connection's start). */
  lastEpoch: number
  /** Bytes read by then: more, later, are a request on its way. */
  lastBytes: number
  closing = false
  socketClosed = false
  session: Http2.ServerHttp2Session | undefined = undefined
  /** HTTP/2: the session's open streams, and who follows their count (`goAwayGracefully`). */
  streams = 0
  streamsChanged: (() => void) | undefined = undefined
  /** HTTP/1: the latest response, to be marked `Connection: close` if the drain begins before its headers go. */
  response: Http.ServerResponse | undefined = undefined
  timer: ReturnType<typeof setTimeout> | undefined = undefined
  readonly socket: Net.Socket
  kind: Kind

  constructor(socket: Net.Socket, kind: Kind, epoch: number) {
    this.socket = socket
    this.kind = kind
    this.lastEpoch = epoch
    this.lastBytes = socket.bytesRead
  }
}

/** What a drain did, as logged. */
export interface DrainReport {
  /** Connections that were open when the drain began, or opened during it. */
  readonly connections: number
  /** Of those, the ones that closed before the deadline. */
  readonly finished: number
  /** Of those, the ones destroyed at the deadline. */
  readonly forced: number
  /** Requests (raw: handlers) in flight when the drain began, or started during it. */
  readonly requests: number
  /** Of those, the ones that ended before the deadline: answered, or given up by their client. */
  readonly completed: number
  /** Of those, the ones still running at the deadline, cut. */
  readonly cut: number
  /** Requests read on a connection the drain was closing, not run: their client sees the connection close unanswered. */
  readonly refused: number
  /** WebSockets and HTTP/2 sessions told to go away. */
  readonly toldToGoAway: number
  readonly millis: number
}

/** Makes an HTTP/1 response say `Connection: close`, and its connection close after it, unless its headers are gone. */
const closeAfter = (response: Http.ServerResponse): void => {
  if (response.headersSent) return
  response.shouldKeepAlive = false
  response.setHeader("connection", "close")
}

// After our FIN, how long a client gets to close its side before the socket is destroyed.
const END_GRACE_MS = 1000

// HTTP/2: how long a quiet session waits for a stream, and the first GOAWAY for its PINGs' acks, before the final one.
const GOAWAY_GRACE_MS = 1000
// The GOAWAY that admits every stream a client may have sent (2^31-1), with NO_ERROR (0).
const ANY_STREAM = 2 ** 31 - 1
const NO_ERROR = 0

/**
 * Tells an HTTP/2 session to go away without refusing a stream in flight
 * towards us. A single GOAWAY names the last stream received so far, and the
 * client loses the streams it sent before it saw it (h2load counted 16-32
 * per restart). So: a GOAWAY that admits every stream, and two PINGs in
 * turn, the second answered after every frame the client sent before it saw
 * the GOAWAY; then `close` sends the final GOAWAY (the last stream processed)
 * and waits for every stream up to it.
 *
 * Node reads nothing more from a session once it has sent a GOAWAY and no
 * stream is open (it stops reading when nghttp2 no longer wants to; it
 * exposes no `nghttp2_submit_shutdown_notice`, the first GOAWAY that keeps it
 * reading). So the first GOAWAY waits until a stream is open (a session with
 * none is closed once it has been quiet for `GOAWAY_GRACE_MS`), and the final
 * one goes as soon as no stream is open, since Node no longer reads the ack.
 * And a client that answers the first GOAWAY with its own (Node's does) gets
 * the final one at once: Node's session closes itself on it. Measured, one
 * restart under `h2load -c 8 -m 4`: 16-32 streams lost before, none after;
 * with Node's client, a few in some drains (see test/http2.test.ts).
 */
export const goAwayGracefully = (connection: Connection): void => {
  const session = connection.session
  if (session === undefined || session.closed || session.destroyed) return
  let step: "quiet" | "told" | "done" = "quiet"
  const final = () => {
    if (step === "done") return
    step = "done"
    connection.streamsChanged = undefined
    clearTimeout(timer)
    if (!session.closed && !session.destroyed) session.close()
  }
  // The ack (or an error: the session has gone) ends a wait; `ping` refuses when too many are unanswered.
  const roundTrip = (then: () => void) => {
    if (step !== "told" || session.destroyed || session.ping(then) === false) final()
  }
  const first = () => {
    step = "told"
    session.goaway(NO_ERROR, ANY_STREAM)
    timer.refresh()
    // Two round trips: nghttp2 sends a PING's ack ahead of the frames it has queued, so the first ack may come just
    // before streams the client sent before it saw the GOAWAY; the second comes after them.
    roundTrip(() => roundTrip(final))
  }
  const timer = setTimeout(final, GOAWAY_GRACE_MS)
  timer.unref()
  connection.streamsChanged = () => {
    if (step === "quiet" && connection.streams > 0) first()
    else if (step === "told" && connection.streams === 0) final()
  }
  if (connection.streams > 0) first()
}

export class Tracker {
  private readonly connections = new Map<Net.Socket, Connection>()
  private readonly clock = new ActivityClock()
  // `closing`: the shutdown delay, when every response says Connection: close while the server goes on accepting.
  private state: "serving" | "closing" | "draining" | "done" = "serving"
  private idleGraceMs = 0
  private readonly hooks: Array<() => void> = []
  private started = Deferred.makeUnsafe<void>()
  // The drain under way, which a final drain joins; and what ends it early, a resume (the server accepts again).
  private underway: Deferred.Deferred<DrainReport> | undefined = undefined
  private resumed: Deferred.Deferred<void> | undefined = undefined
  private onEmpty: (() => void) | undefined = undefined
  private finished = 0
  private inFlight = 0
  private requests = 0
  private completed = 0
  private toldToGoAway = 0
  private refused = 0

  /** The signal handlers of this server see as `Draining`. */
  readonly signal: DrainSignal = {
    // A fresh signal after a resume: the one of the drain that was resumed has fired.
    await: Effect.suspend(() => Deferred.await(this.started)),
    isDraining: Effect.sync(() => this.state !== "serving")
  }

  get draining(): boolean {
    return this.state !== "serving"
  }

  /** Tracks a connection until its socket has closed and nothing is in flight on it. */
  track(socket: Net.Socket, kind: Kind): Connection {
    const connection = new Connection(socket, kind, this.clock.touch())
    this.connections.set(socket, connection)
    socket.once("close", () => {
      connection.socketClosed = true
      clearTimeout(connection.timer)
      // An HTTP/1 request is over once its socket has closed: its response can no longer finish.
      if (connection.kind === "http" && connection.busy > 0) {
        this.ended(connection.busy)
        connection.busy = 0
      }
      this.release(connection)
    })
    this.arm(connection)
    return connection
  }

  get(socket: Net.Socket | undefined): Connection | undefined {
    return socket === undefined ? undefined : this.connections.get(socket)
  }

  /** The first tracked connection that satisfies `predicate`. */
  find(predicate: (connection: Connection) => boolean): Connection | undefined {
    for (const connection of this.connections.values()) if (predicate(connection)) return connection
    return undefined
  }

  /** A TLS handshake completed: the TLS socket takes the place of the TCP one, which is no longer counted. */
  promote(raw: Net.Socket, socket: Net.Socket, kind: Kind): Connection {
    const previous = this.connections.get(raw)
    if (previous !== undefined) {
      clearTimeout(previous.timer)
      this.connections.delete(raw)
    }
    return this.track(socket, kind)
  }

  /** An HTTP/2 session: sent GOAWAY when the drain begins (at once, during one). */
  attachSession(connection: Connection, session: Http2.ServerHttp2Session): void {
    connection.kind = "session"
    connection.session = session
    clearTimeout(connection.timer)
    session.on("stream", (stream: Http2.ServerHttp2Stream) => {
      connection.streams++
      connection.streamsChanged?.()
      stream.once("close", () => {
        if (--connection.streams === 0) connection.streamsChanged?.()
      })
    })
    if (this.draining) this.goAway(() => goAwayGracefully(connection))
  }

  /** Marks a connection upgraded: it is no longer closed for being quiet. */
  upgraded(connection: Connection | undefined): void {
    if (connection === undefined) return
    connection.kind = "upgraded"
    clearTimeout(connection.timer)
  }

  /**
   * A request answered by `response` starts (`begin`); `connection` is
   * undefined for an HTTP/2 stream. The caller has checked that the
   * connection is not `closing` (or refused the request). On an HTTP/1 connection, during a drain
   * the response says `Connection: close`; otherwise it is the connection's
   * latest, marked so if a drain begins before its headers go. Only the latest
   * is marked: the connection closes after it.
   */
  beginResponse(connection: Connection | undefined, response: Http.ServerResponse): void {
    this.begin(connection)
    if (connection === undefined) return
    if (this.draining) closeAfter(response)
    else connection.response = response
  }

  /**
   * A request (or handler) starts; `connection` is undefined for an HTTP/2
   * stream. Called for every request: it does as little as it can.
   */
  begin(connection: Connection | undefined): void {
    this.inFlight++
    if (this.state === "draining") this.requests++
    if (connection === undefined) return
    connection.busy++
    if (connection.timer !== undefined) {
      clearTimeout(connection.timer)
      connection.timer = undefined
    }
  }

  /**
   * A request (or handler) ends. Called for every request. An HTTP/1 request
   * whose socket has closed ended then, and is not counted again.
   */
  end(connection: Connection | undefined): void {
    if (connection === undefined) return this.ended(1)
    if (connection.socketClosed && connection.kind === "http") return
    this.ended(1)
    connection.busy--
    connection.lastEpoch = this.clock.touch()
    connection.lastBytes = connection.socket.bytesRead
    if (connection.socketClosed) this.release(connection)
    else if (this.state === "draining") this.arm(connection)
  }

  private ended(requests: number): void {
    this.inFlight -= requests
    if (this.state === "draining") this.completed += requests
  }

  /**
   * A request read on a connection that the drain is closing: it is not run,
   * and the connection closes once what it is still writing has gone (so an
   * earlier response is not cut short). Its client sees the connection close
   * with no answer, which it may retry: closing races the client's next
   * request, and this is the way to lose that race without running a request
   * whose answer cannot arrive.
   */
  refuse(connection: Connection): void {
    this.refused++
    connection.socket.destroySoon()
  }

  /**
   * The shutdown delay begins (or the drain, without one): the drain signal
   * fires, long-lived connections are told to go away, and every response
   * from now on says `Connection: close`, so that clients move to other
   * servers; new connections are still accepted. Once only.
   */
  beginClosing(): void {
    if (this.state !== "serving") return
    this.state = "closing"
    Deferred.doneUnsafe(this.started, Effect.void)
    for (const hook of this.hooks) hook()
    for (const connection of this.connections.values()) {
      if (connection.session !== undefined) this.goAway(() => goAwayGracefully(connection))
      if (connection.response !== undefined) closeAfter(connection.response)
    }
  }

  /** Says goodbye to a long-lived connection (a WebSocket close, a GOAWAY), counted in the report. */
  goAway(f: () => void): void {
    this.toldToGoAway++
    f()
  }

  /** Runs `f` whenever a drain begins (again after a resume), and at once during one. */
  onDrain(f: () => void): void {
    this.hooks.push(f)
    if (this.draining) f()
  }

  /** Whether a drain has begun (and was not resumed): another drain joins it. */
  get drainUnderway(): boolean {
    return this.underway !== undefined
  }

  /**
   * Ends the drain under way, or undoes the one that is over, and serves
   * again as before it (a hand-back): connections already closing close, the
   * others are served as usual, and a drain's effect still running ends
   * without forcing anything. Nothing if no drain has begun.
   */
  resume(): void {
    // A pause's drain, under way or over (a quiet server drains in a moment): either way the server serves again.
    if (this.underway === undefined || (this.state !== "draining" && this.state !== "done")) return
    this.state = "serving"
    this.started = Deferred.makeUnsafe<void>()
    this.underway = undefined
    this.onEmpty = undefined
    for (const connection of this.connections.values()) {
      if (connection.closing) continue
      clearTimeout(connection.timer)
      connection.timer = undefined
    }
    this.finished = this.completed = this.refused = this.toldToGoAway = 0
    if (this.resumed !== undefined) Deferred.doneUnsafe(this.resumed, Effect.void)
  }

  private release(connection: Connection): void {
    if (connection.busy > 0 || this.connections.get(connection.socket) !== connection) return
    this.connections.delete(connection.socket)
    if (this.state !== "draining") return
    this.finished++
    if (this.connections.size === 0) this.onEmpty?.()
  }

  private arm(connection: Connection): void {
    clearTimeout(connection.timer)
    connection.timer = undefined
    if (this.state !== "draining" || connection.closing || connection.busy > 0) return
    if (!closesWhenQuiet(connection.kind)) return
    const now = performance.now()
    // Bytes read since the last activity are a request on its way: not quiet.
    const bytes = connection.socket.bytesRead
    if (bytes !== connection.lastBytes) {
      connection.lastBytes = bytes
      connection.lastEpoch = this.clock.touch()
    }
    const wait = this.clock.latest(connection.lastEpoch, now) + this.idleGraceMs - now
    if (wait > 0) {
      connection.timer = setTimeout(() => this.arm(connection), Math.ceil(wait))
      return
    }
    connection.closing = true
    const socket = connection.socket
    if (connection.kind === "handshake") {
      socket.destroy()
      return
    }
    socket.end()
    const timer = setTimeout(() => socket.destroy(), END_GRACE_MS)
    timer.unref()
    socket.once("close", () => clearTimeout(timer))
  }

  /**
   * Drains: says goodbye to long-lived connections, closes each closable one
   * once quiet for `idleGrace`, waits for the rest to close, and destroys what
   * is left at `timeout` (an Effect timer: a `TestClock` drives it). The
   * caller has stopped accepting.
   */
  drain(settings: Settings): Effect.Effect<DrainReport | "resumed"> {
    return Effect.suspend(() => {
      // A drain begun already (a pause's) is joined: its end, or the end it had, is this one's.
      if (this.underway !== undefined) return Deferred.await(this.underway)
      if (this.state === "done") return Effect.die(new Error("effect-grace: a server drains only once"))
      const started = performance.now()
      const underway = (this.underway = Deferred.makeUnsafe<DrainReport>())
      const resumed = (this.resumed = Deferred.makeUnsafe<void>())
      this.beginClosing()
      this.state = "draining"
      this.idleGraceMs = Duration.toMillis(settings.idleGrace)
      this.requests = this.inFlight
      for (const connection of this.connections.values()) this.arm(connection)
      const emptied = Effect.callback<void>((resume) => {
        if (this.connections.size === 0) return resume(Effect.void)
        this.onEmpty = () => resume(Effect.void)
        return Effect.sync(() => {
          this.onEmpty = undefined
        })
      })
      const deadline = Effect.raceFirst(Effect.sleep(settings.timeout), settings.forced)
      const ended = Effect.raceAll([
        Effect.as(emptied, "emptied" as const),
        Effect.as(deadline, "deadline" as const),
        Effect.as(Deferred.await(resumed), "resumed" as const)
      ])
      return Effect.map(ended, (end) => {
        if (end === "resumed") return end
        const report = this.finish(end === "deadline", started)
        Deferred.doneUnsafe(underway, Effect.succeed(report))
        return report
      })
    })
  }

  // The drain's end: at the deadline, what is left is destroyed.
  private finish(atDeadline: boolean, started: number): DrainReport {
    const cut = atDeadline ? this.inFlight : 0
    const forced = atDeadline ? this.destroyAll() : 0
    this.clock.stop()
    this.onEmpty = undefined
    this.state = "done"
    return {
      connections: this.finished + forced,
      finished: this.finished,
      forced,
      requests: this.requests,
      completed: this.completed,
      cut,
      refused: this.refused,
      toldToGoAway: this.toldToGoAway,
      millis: Math.round(performance.now() - started)
    }
  }

  // The deadline: every connection left is destroyed. Returns how many there were.
  private destroyAll(): number {
    let forced = 0
    for (const connection of this.connections.values()) {
      clearTimeout(connection.timer)
      forced++
      connection.session?.destroy()
      connection.socket.destroy()
    }
    this.connections.clear()
    return forced
  }
}
