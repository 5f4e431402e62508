/**
 * Listening sockets that survive a restart: inherited when they were passed
 * in (systemd socket activation, or a restarting predecessor), bound when not.
 *
 * A program asks for a listener by address (`:8080`, `127.0.0.1:0`,
 * `localhost:8080`, `[::1]:9000`, `/run/app.sock`, `@abstract`), read as
 * Node's `listen` reads it, or by name. An inherited fd
 * with that name, or else with that address, is adopted; otherwise a new
 * socket is bound. The program cannot tell the two apart, which is the point:
 * the same code runs fresh, under systemd and as a restarted successor.
 *
 * Invariants:
 * - A listener does not accept until a server adopts it (`serve`), so a
 *   process that is still starting leaves connections in the kernel's backlog,
 *   where the process already serving, or this one once ready, accepts them.
 * - The active listeners are kept in order, with their fds and names: that set
 *   is what a restart hands to the successor.
 * - Closing a listener's scope closes its fd. A unix socket path is unlinked
 *   only by the process that bound it, and only if it was never handed off.
 *   A socket file that nothing accepts on any more is replaced when bound.
 * - Inherited fds the program never asks for are closed by `closeUnclaimed`,
 *   once start-up is over.
 *
 * Where the native calls are not available (macOS, or Linux without koffi),
 * a listener is bound through Node's own `listen`: it serves and drains the
 * same way, and holds the connections it accepts before its server is
 * served, but it has no fd (`fd` is `undefined`), so it cannot be inherited
 * or handed on.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as NetAddress from "effect/net/NetAddress"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import type * as Config from "effect/Config"
import { chmodSync, closeSync, lstatSync, rmSync } from "node:fs"
import * as Dns from "node:dns"
import * as Net from "node:net"
import { resolve } from "node:path"
import * as Address from "./internal/address.ts"
import * as Portable from "./internal/portable.ts"
import type { ListenFailure } from "./internal/protocol.ts"
import * as Sys from "./internal/sys.ts"
import * as ListenFds from "./ListenFds.ts"

/**
 * What to listen on: an address string, or a name with an optional address.
 *
 * **Details**
 *
 * - Read as Node's `listen(port, host)` reads them: `":8080"`, `"8080"` and
 *   `"[::]:8080"` every interface, IPv6 and IPv4 (IPv4 alone on a host without
 *   IPv6); `"0.0.0.0:8080"` every IPv4 interface, and IPv4 only;
 *   `"127.0.0.1:0"` a free port; `"[::1]:9000"` IPv6.
 * - A host name (`"localhost:8080"`) is resolved when the listener is asked
 *   for, as Node's `listen` does: the first address `dns.lookup` gives (in
 *   the resolver's order) is bound, alone. A name that does not resolve is a
 *   `BindFailed` (`ENOTFOUND`).
 * - `"/run/app.sock"` or `"./app.sock"` a unix socket path, `"@name"` the
 *   abstract namespace.
 * - With a `name`, an inherited fd of that name (`LISTEN_FDNAMES`, or the
 *   `FileDescriptorName=` of a systemd socket unit) is taken first; then one
 *   with the address; the address is bound only when neither was passed. The
 *   name travels with the listener to a successor.
 * - An inherited socket matches an address that, bound here, could have made
 *   it: `":8080"` matches an inherited `[::]:8080` or `0.0.0.0:8080`, but
 *   `"0.0.0.0:8080"` only `0.0.0.0:8080` (IPv4 only is not had from a
 *   socket that also serves IPv6).
 * - Port 0 matches an inherited fd of the same host on any port, in order, so
 *   a successor keeps the ports its predecessor was given.
 * - `mode` is the permission bits of a unix socket path bound here (`0o600`:
 *   its user alone may connect), set as it is created whatever the umask; an
 *   inherited socket keeps its own.
 *
 * @since 0.1.0
 * @category models
 */
export type ListenSpec =
  | string
  | {
      readonly address?: string | undefined
      readonly name?: string | undefined
      readonly backlog?: number | undefined
      readonly mode?: number | undefined
    }

/**
 * A listening socket, not yet accepting. Hand it to a server with `serve`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Listener extends Address.Listener {}

/**
 * The address string cannot be parsed.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidAddress extends Data.TaggedError("InvalidAddress")<{
  readonly address: string
  readonly detail: string
}> {
  override get message(): string {
    return `invalid listen address ${JSON.stringify(this.address)}: ${this.detail}`
  }
}

/**
 * Binding or listening failed (`EADDRINUSE`, `EACCES`, `EADDRNOTAVAIL`, ...),
 * or the host name did not resolve (`ENOTFOUND`, `EAI_AGAIN`, syscall
 * `getaddrinfo`).
 *
 * @since 0.1.0
 * @category errors
 */
export class BindFailed extends Data.TaggedError("BindFailed")<{
  readonly address: string
  readonly code: string
  readonly syscall: string
}> {
  override get message(): string {
    const hint =
      this.code === "EADDRINUSE"
        ? "another process is listening there: stop it, or choose another address"
        : this.code === "EACCES"
          ? "permission denied: ports below 1024 need privileges (CAP_NET_BIND_SERVICE), or choose another port"
          : this.code === "EADDRNOTAVAIL"
            ? "no interface has that address: choose one this host has, or :port for every interface"
            : this.code === "ENOTFOUND"
              ? "the host name does not resolve: use one this host resolves, or an IP address"
              : this.syscall
    return `cannot listen on ${this.address}: ${this.code} (${hint})`
  }
}

/**
 * A listener was asked for by name only, and no fd of that name was passed.
 *
 * @since 0.1.0
 * @category errors
 */
export class NameNotFound extends Data.TaggedError("NameNotFound")<{
  readonly name: string
  readonly available: ReadonlyArray<string>
}> {
  override get message(): string {
    const available = this.available.length === 0 ? "none were passed" : `passed: ${this.available.join(", ")}`
    return `no inherited listener is named ${JSON.stringify(this.name)} (${available}); give an address to bind instead`
  }
}

/**
 * A server could not start accepting on a listener.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServeFailed extends Data.TaggedError("ServeFailed")<{
  readonly address: string
  readonly cause: unknown
}> {
  override get message(): string {
    return `cannot serve on ${this.address}: ${String(this.cause)}`
  }
}

/**
 * A listener name that cannot travel in `LISTEN_FDNAMES`.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidName extends Data.TaggedError("InvalidName")<{
  readonly name: string
}> {
  override get message(): string {
    return `invalid listener name ${JSON.stringify(this.name)}: use 1 to 255 printable ASCII characters, without ":"`
  }
}

/**
 * Why a listener could not be had.
 *
 * @since 0.1.0
 * @category errors
 */
export type ListenersErrorReason = InvalidAddress | InvalidName | BindFailed | NameNotFound | ServeFailed

/**
 * A listener could not be had; `reason` says why.
 *
 * @since 0.1.0
 * @category errors
 */
export class ListenersError extends Data.TaggedError("ListenersError")<{
  readonly reason: ListenersErrorReason
}> {
  override get message(): string {
    return this.reason.message
  }
}

/**
 * Gives out listeners and keeps the set a restart hands on.
 *
 * @since 0.1.0
 * @category services
 */
export class Listeners extends Context.Service<
  Listeners,
  {
    /** Adopts an inherited fd that matches `spec`, or binds a new socket. Closing the scope closes it. */
    readonly listen: (spec: ListenSpec) => Effect.Effect<Listener, ListenersError, Scope.Scope>
    /** The open listeners, in the order they were asked for. */
    readonly active: Effect.Effect<ReadonlyArray<Listener>>
    /** The inherited fds no one has asked for yet. */
    readonly unclaimed: Effect.Effect<ReadonlyArray<ListenFds.InheritedFd>>
    /** Closes the inherited fds no one asked for. Call once start-up is over. */
    readonly closeUnclaimed: Effect.Effect<void>
    /** Records that a successor now holds the listeners too: unix paths bound here are left in place. */
    readonly handOff: Effect.Effect<void>
  }
>()("effect-grace/Listeners") {}

// -----------------------------------------------------------------------------
// Addresses
// -----------------------------------------------------------------------------

/**
 * A parsed listen address. A wildcard TCP address (`:8080`, `8080`,
 * `[::]:8080`: every interface, both families) has no host; `0.0.0.0` is a
 * host, IPv4 only. A host name is resolved when the listener is asked for.
 *
 * @since 0.1.0
 * @category models
 */
export type ParsedAddress =
  | { readonly _tag: "Tcp"; readonly host: NetAddress.IpAddress | undefined; readonly port: number }
  | { readonly _tag: "HostName"; readonly host: string; readonly port: number }
  | { readonly _tag: "Unix"; readonly path: string }

// An address with its host name resolved: what is matched and bound.
type Resolved = Exclude<ParsedAddress, { readonly _tag: "HostName" }>

const forms = "use :port, host:port, [ipv6]:port or a unix path"

const parsePort = (text: string): number | undefined =>
  /^(0|[1-9][0-9]{0,4})$/.test(text) && Number(text) <= 65535 ? Number(text) : undefined

// As Node's listen: `::` is every interface of both families, `0.0.0.0` every IPv4 one.
const tcp = (host: NetAddress.IpAddress, port: number): Resolved => ({
  _tag: "Tcp",
  host: NetAddress.isIpv6Address(host) && NetAddress.isUnspecified(host) ? undefined : host,
  port
})

// RFC 1123 labels; an all-numeric last label is a mistyped IPv4 address, not a name.
const isHostName = (host: string): boolean => {
  const labels = (host.endsWith(".") ? host.slice(0, -1) : host).split(".")
  return (
    host.length <= 253 &&
    labels.every((label) => /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i.test(label)) &&
    !/^[0-9]+$/.test(labels[labels.length - 1]!)
  )
}

const parseHost = (host: string, port: number): Result.Result<ParsedAddress, string> => {
  if (host.startsWith("[") && host.endsWith("]")) {
    const ip = NetAddress.ipv6FromString(host.slice(1, -1))
    return Result.isSuccess(ip)
      ? Result.succeed(tcp(ip.success, port))
      : Result.fail(`not an IPv6 address: ${ip.failure.message}`)
  }
  if (host.includes(":")) return Result.fail("an IPv6 address goes in brackets, as [::1]:8080")
  if (/^[0-9.]+$/.test(host)) {
    const ip = NetAddress.ipv4FromString(host)
    return Result.isSuccess(ip)
      ? Result.succeed(tcp(ip.success, port))
      : Result.fail(`not an IPv4 address: ${ip.failure.message}`)
  }
  if (isHostName(host)) return Result.succeed({ _tag: "HostName", host, port })
  return Result.fail(`${JSON.stringify(host)} is neither an IP address nor a host name`)
}

/**
 * Parses a listen address: `:port` or a bare port (every interface, IPv6
 * and IPv4), `host:port` (an IPv4 address, `0.0.0.0` for every IPv4
 * interface, or a host name), `[ipv6]:port` (`[::]` for every interface), a
 * unix path (containing a `/`) or an abstract unix name (`@name`).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseAddress = (address: string): Result.Result<ParsedAddress, InvalidAddress> => {
  const invalid = (detail: string) => Result.fail(new InvalidAddress({ address, detail }))
  if (address.startsWith("@")) {
    return address.length > 1 ? Result.succeed({ _tag: "Unix", path: address }) : invalid("empty abstract name")
  }
  if (address.includes("/")) return Result.succeed({ _tag: "Unix", path: resolve(address) })
  const bare = /^[0-9]+$/.test(address)
  const colon = address.lastIndexOf(":")
  if (!bare && (colon < 0 || (address.startsWith("[") && !address.slice(0, colon).endsWith("]")))) {
    return invalid(`no port; ${forms}`)
  }
  const port = parsePort(bare ? address : address.slice(colon + 1))
  if (port === undefined) return invalid("port must be 0 to 65535")
  if (bare || colon === 0) return Result.succeed({ _tag: "Tcp", host: undefined, port })
  const parsed = parseHost(address.slice(0, colon), port)
  return Result.isSuccess(parsed) ? Result.succeed(parsed.success) : invalid(`${parsed.failure}; ${forms}`)
}

/**
 * Formats an address as the servers report it: `[::]:8080`,
 * `127.0.0.1:8080`, or a unix path.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatAddress: (address: NetAddress.SocketAddress) => string = Address.formatAddress

// A host name is resolved as Node's listen resolves it: the first address dns.lookup gives, in the resolver's order.
const lookup = (address: string, wanted: { readonly host: string; readonly port: number }) =>
  Effect.callback<Resolved, ListenersError>((resume) =>
    Dns.lookup(wanted.host, (error, ip) => {
      if (error !== null) {
        const code = error.code ?? "ENOTFOUND"
        return resume(failWith(new BindFailed({ address, code, syscall: error.syscall ?? "getaddrinfo" })))
      }
      const parsed = NetAddress.ipFromString(ip)
      resume(
        Result.isSuccess(parsed)
          ? Effect.succeed(tcp(parsed.success, wanted.port))
          : failWith(new InvalidAddress({ address, detail: `${wanted.host} resolves to ${ip}, which cannot be bound` }))
      )
    })
  )

// An inherited socket matches an address that, bound here, could have made it.
const matches = (wanted: Resolved, actual: NetAddress.SocketAddress): boolean => {
  if (wanted._tag === "Unix") return actual._tag === "UnixPathAddress" && actual.path === wanted.path
  if (actual._tag === "UnixPathAddress") return false
  if (wanted.port !== 0 && wanted.port !== actual.port) return false
  // A wildcard binds `::`, or `0.0.0.0` on a host without IPv6.
  if (wanted.host === undefined) return NetAddress.isUnspecified(actual.address)
  return NetAddress.formatIp(wanted.host) === NetAddress.formatIp(actual.address)
}

const toSocketAddress = (wanted: Resolved, ipv6: boolean): NetAddress.SocketAddress =>
  wanted._tag === "Unix"
    ? NetAddress.unixPathAddress(wanted.path)
    : NetAddress.inetAddressUnsafe(
        wanted.host ?? (ipv6 ? NetAddress.ipv6Unspecified : NetAddress.ipv4Unspecified),
        wanted.port
      )

const bind = (
  spec: string,
  wanted: Resolved,
  backlog: number,
  options: Sys.BindOptions
): Result.Result<number, BindFailed> => {
  let bound = Sys.bindListen(toSocketAddress(wanted, true), backlog, options)
  // A wildcard on a host without IPv6 falls back to IPv4, as Node's listen(port) does.
  if (Result.isFailure(bound) && wanted._tag === "Tcp" && wanted.host === undefined) {
    if (bound.failure.code === "EAFNOSUPPORT" || bound.failure.code === "EADDRNOTAVAIL") {
      bound = Sys.bindListen(toSocketAddress(wanted, false), backlog, options)
    }
  }
  // A unix socket file that no one accepts on was left by a process that is gone: replace it.
  if (Result.isFailure(bound) && bound.failure.code === "EADDRINUSE" && isStaleUnixSocket(wanted)) {
    rmSync((wanted as { readonly path: string }).path, { force: true })
    bound = Sys.bindListen(toSocketAddress(wanted, true), backlog)
  }
  return Result.mapError(bound, (e) => new BindFailed({ address: spec, code: e.code, syscall: e.syscall }))
}

// A unix path created with `mode` whatever the umask: the umask narrowed while the socket file is made (bind(2) is
// synchronous here, so nothing else runs meanwhile), then the mode set exactly. A worker thread cannot change the
// umask; the chmod alone then sets it.
const withMode = <A>(wanted: Resolved, mode: number | undefined, f: () => A): A => {
  if (mode === undefined || wanted._tag !== "Unix" || wanted.path.startsWith("@")) return f()
  let previous: number | undefined
  try {
    previous = process.umask(0o777 & ~mode)
  } catch {
    previous = undefined
  }
  try {
    return f()
  } finally {
    if (previous !== undefined) process.umask(previous)
    try {
      chmodSync(wanted.path, mode)
    } catch {
      // Not created: the bind failed, and says why.
    }
  }
}

const isStaleUnixSocket = (wanted: Resolved): boolean => {
  if (wanted._tag !== "Unix" || wanted.path.startsWith("@")) return false
  try {
    if (!lstatSync(wanted.path).isSocket()) return false
  } catch {
    return false
  }
  const accepts = Sys.unixPathAccepts(wanted.path)
  return Result.isSuccess(accepts) && !accepts.success
}

// -----------------------------------------------------------------------------
// Acquiring and releasing
// -----------------------------------------------------------------------------

/**
 * A listener's socket, as its `Listeners` service keeps it: the fd open for it in this process (a copy while its
 * server is paused), and what accepts on it, the Node server that took it or the acceptor that holds it where Node
 * bound it. The service's state holds every one it gave out; a `Listener` is its face.
 */
class ListenerSocket implements Listener {
  /** The fd open for the socket in this process: the one a restart hands on (a copy, while paused). */
  fd: number | undefined
  readonly name: string
  readonly address: NetAddress.SocketAddress
  readonly inherited: boolean
  /** The Node server that accepts on it, once one is served. */
  server: Net.Server | undefined = undefined
  /** Where Node bound it (no native calls): the Node server that accepts for it. */
  readonly acceptor: Portable.Acceptor | undefined
  /** Its server stopped accepting for a while (`pauseAccepting`): this module holds the fd. */
  paused = false

  constructor(
    fd: number | undefined,
    name: string,
    address: NetAddress.SocketAddress,
    inherited: boolean,
    acceptor?: Portable.Acceptor
  ) {
    this.fd = fd
    this.name = name
    this.address = address
    this.inherited = inherited
    this.acceptor = acceptor
  }

  /** Holds a copy of the fd while paused: closing the server's handle closed its own. */
  holdCopy(copy: number): void {
    this.fd = copy
    this.paused = true
  }
}

const socketOf = (listener: Listener): ListenerSocket | undefined =>
  listener instanceof ListenerSocket ? listener : undefined

// The state of one Listeners service.
interface State {
  readonly inherited: ReadonlyArray<ListenFds.InheritedFd>
  readonly unclaimed: Map<number, ListenFds.InheritedFd>
  // In the order asked for (`asked` counts the asks), though a host name's lookup may end after a later bind.
  readonly active: Array<{ readonly order: number; readonly socket: ListenerSocket }>
  asked: number
  handedOff: boolean
  /** How to bind where this process does not bind itself (a primary's worker), and how often each was asked. */
  readonly remote: Remote | undefined
  readonly remoteAsks: Map<string, number>
  /** TCP sockets bound here join their address's `SO_REUSEPORT` group (a primary's, one socket per worker). */
  readonly reusePort: boolean
  /** Whether the native calls are used (`GRACE_NATIVE`); else Node binds, and nothing is inherited or handed on. */
  readonly native: boolean
}

/**
 * Where listeners are bound for this process: a worker's primary binds them (or has them already), and sends the
 * fd, or says why it could not. The `nth` ask of the same address and name gets a socket of its own (two servers on
 * port 0).
 *
 * @since 0.1.0
 * @category models
 */
export type Remote = (request: {
  readonly address: string
  readonly name: string | undefined
  readonly backlog: number
  readonly nth: number
}) => Effect.Effect<number, ListenFailure>

// A listen request, checked, with its host name resolved unless an inherited fd of its name stands in for it.
interface Request {
  readonly name: string | undefined
  readonly address: string | undefined
  readonly wanted: ParsedAddress | undefined
  readonly backlog: number
  readonly mode: number | undefined
}

const failWith = (reason: ListenersErrorReason) => Effect.fail(new ListenersError({ reason }))

// A failure a primary sent, as this module's error.
const reasonOf = (failure: ListenFailure): ListenersErrorReason => {
  switch (failure._tag) {
    case "InvalidAddress":
      return new InvalidAddress(failure)
    case "InvalidName":
      return new InvalidName(failure)
    case "NameNotFound":
      return new NameNotFound(failure)
    case "BindFailed":
      return new BindFailed(failure)
    case "ServeFailed":
      return new ServeFailed(failure)
  }
}

// As systemd's fdname_is_valid: the name is handed to a successor in LISTEN_FDNAMES.
const isValidName = (name: string): boolean => /^[\x21-\x39\x3b-\x7e]{1,255}$/.test(name)

const prepare = (state: State, input: ListenSpec): Effect.Effect<Request, ListenersError> => {
  const spec = typeof input === "string" ? { address: input } : input
  if (spec.name !== undefined && !isValidName(spec.name)) return failWith(new InvalidName({ name: spec.name }))
  const request = {
    name: spec.name,
    address: spec.address,
    wanted: undefined,
    backlog: spec.backlog ?? 511,
    mode: spec.mode
  }
  if (spec.address === undefined) return Effect.succeed(request)
  const parsed = parseAddress(spec.address)
  if (Result.isFailure(parsed)) return failWith(parsed.failure)
  const wanted = parsed.success
  const named = [...state.unclaimed.values()].some((fd) => fd.name === spec.name)
  if (wanted._tag !== "HostName" || named) return Effect.succeed<Request>({ ...request, wanted })
  return Effect.map(lookup(spec.address, wanted), (resolved): Request => ({ ...request, wanted: resolved }))
}

// By name first, when one is given; then by address.
const claim = (state: State, request: Request): ListenFds.InheritedFd | undefined => {
  const { name, wanted } = request
  const candidates = [...state.unclaimed.values()]
  const found =
    (name !== undefined ? candidates.find((fd) => fd.name === name) : undefined) ??
    (wanted !== undefined && wanted._tag !== "HostName"
      ? candidates.find((fd) => matches(wanted, fd.address))
      : undefined)
  if (found !== undefined) state.unclaimed.delete(found.fd)
  return found
}

type Bindable = Request & { readonly address: string; readonly wanted: Resolved }

// A group's first socket binds alone: where another process listens already (a second instance of the service), it
// fails as a bind without SO_REUSEPORT would. Its other sockets join it; port 0 is a new port each time.
const bindNative = (state: State, request: Bindable) => {
  const { wanted } = request
  const reusePort = state.reusePort
  const joins = state.active.some((entry) => matches(wanted, entry.socket.address))
  const alone = reusePort && !joins && !(wanted._tag === "Tcp" && wanted.port === 0)
  const bound = withMode(wanted, request.mode, () =>
    bind(request.address, wanted, request.backlog, { reusePort, alone })
  )
  if (Result.isFailure(bound)) return failWith(bound.failure)
  const fd = bound.success
  const address = Sys.localAddress(fd)
  if (Result.isFailure(address)) {
    closeSync(fd)
    const e = address.failure
    return failWith(new BindFailed({ address: request.address, code: e.code, syscall: e.syscall }))
  }
  return Effect.succeed(new ListenerSocket(fd, request.name ?? "unknown", address.success, false))
}

const bindPortable = (request: Bindable): Effect.Effect<ListenerSocket, ListenersError> => {
  const { wanted } = request
  const target: Portable.Target =
    wanted._tag === "Unix"
      ? wanted
      : {
          _tag: "Tcp",
          host: wanted.host === undefined ? undefined : NetAddress.formatIp(wanted.host),
          port: wanted.port
        }
  // Node binds inside its own listen: the mode is set once it listens.
  const listening = Effect.tap(Portable.listen(target, request.backlog), () =>
    Effect.sync(() => withMode(wanted, request.mode, () => undefined))
  )
  return listening.pipe(
    Effect.mapError(
      (e) =>
        new ListenersError({ reason: new BindFailed({ address: request.address, code: e.code, syscall: e.syscall }) })
    ),
    Effect.map(
      (acceptor) => new ListenerSocket(undefined, request.name ?? "unknown", acceptor.address, false, acceptor)
    )
  )
}

// An inherited fd that matches, or else a socket bound now.
const acquire = (state: State, request: Request): Effect.Effect<ListenerSocket, ListenersError> =>
  Effect.suspend(() => {
    const found = claim(state, request)
    if (found !== undefined) return Effect.succeed(new ListenerSocket(found.fd, found.name, found.address, true))
    const { address, wanted } = request
    if (address === undefined || wanted === undefined) {
      const available = state.inherited.map((fd) => `${fd.name} (${formatAddress(fd.address)})`)
      return failWith(new NameNotFound({ name: request.name ?? "", available }))
    }
    // Left unresolved for an inherited fd of its name, which another listen has taken since.
    if (wanted._tag === "HostName") {
      return Effect.flatMap(lookup(address, wanted), (resolved) => acquire(state, { ...request, wanted: resolved }))
    }
    const bindable = { ...request, address, wanted }
    if (state.remote !== undefined) return bindRemote(state, state.remote, bindable)
    return state.native ? bindNative(state, bindable) : bindPortable(bindable)
  })

// Asked of the primary, which holds the socket for the life of the service: here it is as if inherited.
const bindRemote = (state: State, remote: Remote, request: Request & { readonly address: string }) => {
  const key = JSON.stringify([request.address, request.name])
  const nth = state.remoteAsks.get(key) ?? 0
  state.remoteAsks.set(key, nth + 1)
  const { address, name, backlog } = request
  return remote({ address, name, backlog, nth }).pipe(
    Effect.mapError((failure) => new ListenersError({ reason: reasonOf(failure) })),
    Effect.flatMap((fd) => {
      const local = Sys.localAddress(fd)
      if (Result.isFailure(local)) {
        closeSync(fd)
        return failWith(new BindFailed({ address, code: local.failure.code, syscall: local.failure.syscall }))
      }
      return Effect.succeed(new ListenerSocket(fd, name ?? "unknown", local.success, true))
    })
  )
}

// Whoever holds the fd closes it: the acceptor, the Node server that took it, or else this module (a listener never
// served, or paused).
const closeSocket = (socket: ListenerSocket): void => {
  if (socket.acceptor !== undefined) return socket.acceptor.close()
  const server = socket.server
  // Closing the server closes the fd (and never unlinks: it has no path); it may have closed already.
  if (server?.listening) return void server.close()
  if (socket.fd !== undefined && (server === undefined || socket.paused)) closeSync(socket.fd)
}

const activate = (state: State, order: number, socket: ListenerSocket): void => {
  const index = state.active.findIndex((entry) => entry.order > order)
  state.active.splice(index < 0 ? state.active.length : index, 0, { order, socket })
}

const release = (state: State, socket: ListenerSocket): Effect.Effect<void> =>
  Effect.sync(() => {
    const index = state.active.findIndex((entry) => entry.socket === socket)
    if (index >= 0) state.active.splice(index, 1)
    closeSocket(socket)
    const address = socket.address
    if (!socket.inherited && !state.handedOff && address._tag === "UnixPathAddress" && !address.path.startsWith("@")) {
      rmSync(address.path, { force: true })
    }
  })

// -----------------------------------------------------------------------------
// Constructors
// -----------------------------------------------------------------------------

const service = (state: State): Listeners["Service"] =>
  Listeners.of({
    // Resolving a host name may take a while: it stays interruptible, outside the acquisition.
    listen: (spec) =>
      Effect.suspend(() => {
        const order = state.asked++
        return Effect.flatMap(prepare(state, spec), (request) =>
          Effect.acquireRelease(
            Effect.tap(acquire(state, request), (socket) => Effect.sync(() => activate(state, order, socket))),
            (socket) => release(state, socket)
          )
        )
      }),
    active: Effect.sync(() => state.active.map((entry) => entry.socket)),
    unclaimed: Effect.sync(() => [...state.unclaimed.values()]),
    closeUnclaimed: Effect.sync(() => {
      for (const fd of state.unclaimed.values()) closeSync(fd.fd)
      state.unclaimed.clear()
    }),
    handOff: Effect.sync(() => {
      state.handedOff = true
    })
  })

/**
 * Builds the Listeners service over a set of inherited fds.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  inherited: ReadonlyArray<ListenFds.InheritedFd>,
  options: {
    /** Where to bind what was not inherited, if not here. */
    readonly remote?: Remote | undefined
    /** Binds TCP sockets with `SO_REUSEPORT`, so that several can be bound to one address. */
    readonly reusePort?: boolean | undefined
  } = {}
): Effect.Effect<Listeners["Service"]> =>
  Effect.map(Sys.enabled, (native) =>
    service({
      inherited,
      unclaimed: new Map(inherited.map((fd) => [fd.fd, fd])),
      active: [],
      asked: 0,
      handedOff: false,
      remote: options.remote,
      remoteAsks: new Map(),
      reusePort: options.reusePort === true,
      native: native.available
    })
  )

/**
 * Starts a Node server accepting on a listener (`server.listen({ fd })`) and
 * waits until it listens. Attach the server's handlers first: it accepts at
 * once. The listener's scope closes the server if it is still open then.
 *
 * @since 0.1.0
 * @category serving
 */
export const serve = (listener: Listener, server: Net.Server): Effect.Effect<void, ListenersError> =>
  Effect.suspend(() => {
    // A listener made elsewhere (with a fd) is served as it is; pausing and resuming are for those Listeners gave.
    const socket =
      socketOf(listener) ?? new ListenerSocket(listener.fd, listener.name, listener.address, listener.inherited)
    socket.server = server
    if (socket.acceptor === undefined) return listenOn(socket, server)
    socket.acceptor.serve(server)
    return Effect.void
  })

const listenOn = (socket: ListenerSocket, server: Net.Server): Effect.Effect<void, ListenersError> =>
  Effect.callback<void, ListenersError>((resume) => {
    const onError = (cause: Error) => {
      server.off("listening", onListening)
      resume(
        Effect.fail(new ListenersError({ reason: new ServeFailed({ address: formatAddress(socket.address), cause }) }))
      )
    }
    const onListening = () => {
      server.off("error", onError)
      resume(Effect.void)
    }
    server.once("error", onError)
    server.once("listening", onListening)
    // Node takes the fd synchronously (its error and listening events come later): from here its server owns it,
    // and closing the server closes the fd, even if this fiber is interrupted before the listening event.
    socket.paused = false
    server.listen({ fd: socket.fd } as Net.ListenOptions)
    return Effect.sync(() => {
      server.off("error", onError)
      server.off("listening", onListening)
    })
  })

/**
 * Stops a served listener accepting but keeps its socket open, to accept
 * again (`resumeAccepting`): connections that arrive meanwhile wait in its
 * backlog, which a successor sharing the socket accepts from. Needs the
 * native calls (and a free fd); without them it leaves the listener
 * accepting, as nothing could make it accept again.
 *
 * @since 0.1.0
 * @category serving
 */
export const pauseAccepting = (listener: Listener): Effect.Effect<void> =>
  Effect.sync(() => {
    const socket = socketOf(listener)
    const server = socket?.server
    if (socket?.fd === undefined || server === undefined || !server.listening) return
    // A copy of the fd first: closing the server's handle closes the fd it took, not the socket. Without a copy (no
    // fd left), it goes on accepting: a listener it could not accept on again would be lost to the service.
    const copy = Sys.dup(socket.fd)
    if (Result.isFailure(copy)) return
    Net.Server.prototype.close.call(server)
    // The listener's fd is the one open for its socket in this process, the one a restart hands on.
    socket.holdCopy(copy.success)
  })

/**
 * Starts a paused listener (`pauseAccepting`) accepting again, on the same
 * socket: connections waiting in its backlog are accepted now. A listener
 * that accepts already, or that was stopped for good, is left as it is.
 *
 * @since 0.1.0
 * @category serving
 */
export const resumeAccepting = (listener: Listener): Effect.Effect<void, ListenersError> =>
  Effect.suspend(() => {
    const socket = socketOf(listener)
    const server = socket?.server
    return socket !== undefined && server !== undefined && !server.listening && socket.paused
      ? listenOn(socket, server)
      : Effect.void
  })

/**
 * Stops a served listener accepting: it closes the listening handle only,
 * never a connection (an `http.Server`'s own `close` would also close the
 * connections that look idle, racing a client that is sending right then,
 * nodejs/node#60617). On a listener handed to a successor, the successor
 * goes on accepting on the same socket.
 *
 * @since 0.1.0
 * @category serving
 */
export const stopAccepting = (listener: Listener): Effect.Effect<void> =>
  Effect.sync(() => {
    const socket = socketOf(listener)
    if (socket?.acceptor !== undefined) return socket.acceptor.stopAccepting()
    const server = socket?.server
    if (server?.listening) Net.Server.prototype.close.call(server)
  })

/**
 * Listeners over the fds passed in the environment (`LISTEN_FDS`, read
 * through `Config`), or none outside socket activation.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Listeners, ListenFds.ListenFdsError | Config.ConfigError> = Layer.effect(Listeners)(
  Effect.flatMap(ListenFds.make(), make)
)

/**
 * Listeners over a given set of inherited fds.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFrom = (inherited: ReadonlyArray<ListenFds.InheritedFd>): Layer.Layer<Listeners> =>
  Layer.effect(Listeners)(make(inherited))
