/**
 * The few socket system calls that Node does not expose, called through koffi
 * (a maintained FFI with prebuilt binaries, so nothing is compiled at install).
 *
 * Node can only bind a socket by also accepting on it, cannot ask an inherited
 * fd what it is, cannot mark a fd close-on-exec and has no AF_UNIX datagram
 * socket. The listener protocol needs all four: a successor must not accept
 * before it can answer, inherited fds are checked before they are adopted, and
 * sd_notify speaks unix datagrams. Linux only, as systemd is.
 *
 * Every function here is synchronous and returns a `SysError` value instead of
 * throwing, so callers wrap it in the error type of their own module. Where
 * the calls cannot be made (another platform, koffi not installed or its
 * binary not loadable), `native()` says why and every function fails with
 * `ENOTSUP`; nothing is loaded before the first call. Whether they are used
 * is `enabled`, which `GRACE_NATIVE=off` (read through `Config`) turns off.
 */
import { closeSync, fstatSync } from "node:fs"
import { createRequire } from "node:module"
import { arch, constants, endianness } from "node:os"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as NetAddress from "effect/net/NetAddress"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import type Koffi from "koffi"

const AF_UNIX = 1
const AF_INET = 2
const AF_INET6 = 10
const SOCK_STREAM = 1
const SOCK_DGRAM = 2
const SOCK_CLOEXEC = 0o2000000
const SOL_SOCKET = 1
const SO_REUSEADDR = 2
const SO_REUSEPORT = 15
const SO_TYPE = 3
const SO_ACCEPTCONN = 30
const SO_DOMAIN = 39
const SO_PEERCRED = 17
const IPPROTO_IPV6 = 41
const IPV6_V6ONLY = 26
const F_GETFD = 1
const F_SETFD = 2
const F_DUPFD_CLOEXEC = 1030
const FD_CLOEXEC = 1
const MSG_NOSIGNAL = 0x4000
const MSG_DONTWAIT = 0x40
const SUN_PATH_MAX = 108

/** A failed system call: its name, the errno name (`EADDRINUSE`) and number. */
export interface SysError {
  readonly syscall: string
  readonly code: string
  readonly errno: number
  /** Why, where the errno alone does not say (the native calls are not available). */
  readonly detail?: string
}

interface Libc {
  readonly socket: (domain: number, type: number, protocol: number) => number
  readonly bind: (fd: number, addr: Buffer, len: number) => number
  readonly listen: (fd: number, backlog: number) => number
  readonly setsockopt: (fd: number, level: number, name: number, value: Array<number>, len: number) => number
  readonly getsockopt: (fd: number, level: number, name: number, value: Array<number>, len: Array<number>) => number
  readonly getsockname: (fd: number, addr: Buffer, len: Array<number>) => number
  readonly getsockoptBytes: (fd: number, level: number, name: number, value: Buffer, len: Array<number>) => number
  readonly sendto: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrLen: number) => number
  readonly recv: (fd: number, buf: Buffer, len: number, flags: number) => number
  readonly connect: (fd: number, addr: Buffer, len: number) => number
  readonly fcntl: (fd: number, cmd: number, ...args: Array<unknown>) => number
  readonly waitpid: (pid: number, status: Array<number>, options: number) => number
  readonly socketpair: (domain: number, type: number, protocol: number, sv: Array<number>) => number
  readonly sendmsg: (fd: number, msg: MessageHeader, flags: number) => number
  readonly recvmsg: (fd: number, msg: MessageHeader, flags: number) => number
  readonly errno: () => number
  /** Where a control message carrying one fd puts its parts, on this machine. */
  readonly control: ControlLayout
  /** sizeof(struct msghdr) as koffi lays it out. */
  readonly messageHeaderSize: number
}

// struct msghdr, with one iovec, as koffi marshals it.
interface MessageHeader {
  readonly name: null
  readonly namelen: number
  readonly iov: ReadonlyArray<{ readonly base: Buffer; readonly len: number }>
  readonly iovlen: number
  readonly control: Buffer
  readonly controllen: number
  readonly flags: number
}

/** Whether the native calls can be made here; if not, why not. */
export type Native =
  { readonly available: true } | { readonly available: false; readonly platform: string; readonly reason: string }

let loaded: { readonly libc: Libc } | { readonly unavailable: Native & { readonly available: false } } | undefined

const unavailable = (reason: string) => ({
  unavailable: { available: false as const, platform: process.platform, reason }
})

// Loaded on first use: importing the library must not load native code, nor fail where it cannot be loaded.
const probe = (): NonNullable<typeof loaded> => {
  if (process.platform !== "linux") return unavailable(`they need Linux, and this is ${process.platform}`)
  // The messages are written in little-endian order (every Linux koffi ships for but s390x and ppc64 BE).
  if (endianness() !== "LE") return unavailable(`they need a little-endian machine, and this is ${arch()}`)
  let koffi: typeof Koffi
  try {
    koffi = createRequire(import.meta.url)("koffi") as typeof Koffi
  } catch (cause) {
    const detail = cause instanceof Error ? cause.message.split("\n")[0] : String(cause)
    return unavailable(`koffi, the optional dependency that makes them, could not be loaded (${detail})`)
  }
  let lib: ReturnType<typeof koffi.load>
  try {
    lib = koffi.load("libc.so.6")
  } catch (cause) {
    return unavailable(`libc.so.6 could not be loaded (${cause instanceof Error ? cause.message : String(cause)})`)
  }
  const word = koffi.sizeof("size_t")
  if (word !== 4 && word !== 8) return unavailable(`size_t is ${word} bytes here, where 4 or 8 are known`)
  return {
    libc: {
      control: controlLayout(word),
      socket: lib.func("int socket(int, int, int)"),
      bind: lib.func("int bind(int, const uint8_t *addr, uint32_t len)"),
      listen: lib.func("int listen(int, int)"),
      setsockopt: lib.func("int setsockopt(int, int, int, const int *value, uint32_t len)"),
      getsockopt: lib.func("int getsockopt(int, int, int, _Out_ int *value, _Inout_ uint32_t *len)"),
      getsockname: lib.func("int getsockname(int, _Out_ uint8_t *addr, _Inout_ uint32_t *len)"),
      getsockoptBytes: lib.func("int getsockopt(int, int, int, _Out_ uint8_t *value, _Inout_ uint32_t *len)"),
      sendto: lib.func(
        "intptr_t sendto(int, const uint8_t *buf, size_t len, int flags, const uint8_t *addr, uint32_t)"
      ),
      recv: lib.func("intptr_t recv(int, _Out_ uint8_t *buf, size_t len, int flags)"),
      connect: lib.func("int connect(int, const uint8_t *addr, uint32_t len)"),
      fcntl: lib.func("int fcntl(int, int, ...)"),
      waitpid: lib.func("int waitpid(int, _Out_ int *status, int options)"),
      socketpair: lib.func("int socketpair(int, int, int, _Out_ int *sv)"),
      ...messages(koffi, lib),
      errno: () => koffi.errno()
    }
  }
}

// sendmsg(2) and recvmsg(2), for passing fds (SCM_RIGHTS): koffi lays struct msghdr out as the C compiler of this
// machine would (pointers and size_t of its width).
const messages = (koffi: typeof Koffi, lib: ReturnType<typeof Koffi.load>) => {
  const iovec = koffi.struct("effect_grace_iovec", { base: "uint8_t *", len: "size_t" })
  const msghdr = koffi.struct("effect_grace_msghdr", {
    name: "void *",
    namelen: "uint32_t",
    iov: koffi.pointer(iovec),
    iovlen: "size_t",
    control: "uint8_t *",
    controllen: "size_t",
    flags: "int"
  })
  return {
    messageHeaderSize: koffi.sizeof(msghdr),
    sendmsg: lib.func("sendmsg", "intptr_t", ["int", koffi.pointer(msghdr), "int"]),
    recvmsg: lib.func("recvmsg", "intptr_t", ["int", koffi.inout(koffi.pointer(msghdr)), "int"])
  }
}

const state = (): NonNullable<typeof loaded> => (loaded ??= probe())

/** Whether the native calls can be made here. The first call loads them. */
export const native = (): Native => {
  const current = state()
  return "libc" in current ? { available: true } : current.unavailable
}

/**
 * Whether the native calls are to be used: they can be made here, and `GRACE_NATIVE` (read through `Config`) is not
 * `off`, a switch for trying, on Linux, the path every other platform takes. Every choice between the native path
 * and Node's own reads this.
 */
export const enabled: Effect.Effect<Native> = Config.option(Config.String("GRACE_NATIVE")).pipe(
  Effect.orElseSucceed(() => Option.none<string>()),
  Effect.map((value) =>
    Option.getOrUndefined(value)?.trim() === "off"
      ? { available: false, platform: process.platform, reason: "they are turned off by GRACE_NATIVE=off" }
      : native()
  )
)

// Every call goes through here: the library, or the failure that says why there is none.
const withLibc = <A>(syscall: string, f: (lib: Libc) => Result.Result<A, SysError>): Result.Result<A, SysError> => {
  const current = state()
  if ("libc" in current) return f(current.libc)
  return Result.fail({
    syscall,
    code: "ENOTSUP",
    errno: constants.errno.ENOTSUP ?? 95,
    detail: `native calls are not available: ${current.unavailable.reason}`
  })
}

// The first name wins where two share a number (EAGAIN before EWOULDBLOCK).
const errnoNames = new Map<number, string>()
for (const [name, n] of Object.entries(constants.errno)) if (!errnoNames.has(n)) errnoNames.set(n, name)

const lastError = (lib: Libc, syscall: string): SysError => {
  const errno = lib.errno()
  return { syscall, errno, code: errnoNames.get(errno) ?? `errno ${errno}` }
}

const fail = (lib: Libc, syscall: string): Result.Result<never, SysError> => Result.fail(lastError(lib, syscall))

const check = (lib: Libc, syscall: string, rc: number): Result.Result<number, SysError> =>
  rc < 0 ? fail(lib, syscall) : Result.succeed(rc)

const intOption = (lib: Libc, fd: number, name: number): Result.Result<number, SysError> => {
  const value = [0]
  return Result.map(check(lib, "getsockopt", lib.getsockopt(fd, SOL_SOCKET, name, value, [4])), () => value[0]!)
}

/** What a fd is, as far as the listener protocol cares. */
export type FdKind =
  | { readonly _tag: "NotOpen" }
  | { readonly _tag: "NotSocket" }
  | { readonly _tag: "NotStream"; readonly type: number }
  | { readonly _tag: "NotListening" }
  | { readonly _tag: "UnsupportedFamily"; readonly family: number }
  | { readonly _tag: "Listening"; readonly address: NetAddress.SocketAddress }

/**
 * Inspects a fd as sd_is_socket(3) does: open, a socket, a stream socket, in
 * the listening state, and of family AF_INET, AF_INET6 or AF_UNIX.
 */
export const inspect = (fd: number): Result.Result<FdKind, SysError> => {
  try {
    if (!fstatSync(fd).isSocket()) return Result.succeed({ _tag: "NotSocket" })
  } catch {
    return Result.succeed({ _tag: "NotOpen" })
  }
  return withLibc("getsockopt", (lib) => {
    return Result.gen(function* () {
      const type = yield* intOption(lib, fd, SO_TYPE)
      if (type !== SOCK_STREAM) return { _tag: "NotStream", type } as const
      const family = yield* intOption(lib, fd, SO_DOMAIN)
      if (family !== AF_INET && family !== AF_INET6 && family !== AF_UNIX) {
        return { _tag: "UnsupportedFamily", family } as const
      }
      if ((yield* intOption(lib, fd, SO_ACCEPTCONN)) === 0) return { _tag: "NotListening" } as const
      return { _tag: "Listening", address: yield* localAddress(fd) } as const
    })
  })
}

/** Who is at the other end of a connected unix socket, as the kernel saw it connect. */
export interface PeerCredentials {
  readonly pid: number
  readonly uid: number
  readonly gid: number
}

/** getsockopt(SO_PEERCRED) of a connected unix socket: struct ucred, three 32-bit fields. */
export const peerCredentials = (fd: number): Result.Result<PeerCredentials, SysError> =>
  withLibc("getsockopt", (lib) => {
    const buf = Buffer.alloc(12)
    const len = [buf.length]
    return Result.map(check(lib, "getsockopt", lib.getsockoptBytes(fd, SOL_SOCKET, SO_PEERCRED, buf, len)), () => ({
      pid: buf.readInt32LE(0),
      uid: buf.readUInt32LE(4),
      gid: buf.readUInt32LE(8)
    }))
  })

/** Whether a socket is in a `SO_REUSEPORT` group (bound with the option). */
export const reusesPort = (fd: number): Result.Result<boolean, SysError> =>
  withLibc("getsockopt", (lib) => Result.map(intOption(lib, fd, SO_REUSEPORT), (on) => on !== 0))

/** getsockname(2), decoded. An abstract unix address is reported with a leading `@`. */
export const localAddress = (fd: number): Result.Result<NetAddress.SocketAddress, SysError> => {
  return withLibc("getsockname", (lib) => {
    const buf = Buffer.alloc(128)
    const len = [buf.length]
    return Result.map(check(lib, "getsockname", lib.getsockname(fd, buf, len)), () => decodeSockaddr(buf, len[0]!))
  })
}

const decodeSockaddr = (buf: Buffer, len: number): NetAddress.SocketAddress => {
  const family = buf.readUInt16LE(0)
  if (family === AF_INET) {
    return NetAddress.inetAddressUnsafe(NetAddress.ipv4FromBytesUnsafe(buf.subarray(4, 8)), buf.readUInt16BE(2))
  }
  if (family === AF_INET6) {
    return NetAddress.inetAddressUnsafe(NetAddress.ipv6FromBytesUnsafe(buf.subarray(8, 24)), buf.readUInt16BE(2))
  }
  const raw = buf.subarray(2, len)
  const path = raw[0] === 0 ? `@${raw.subarray(1).toString()}` : raw.toString().replace(/\0.*$/s, "")
  return NetAddress.unixPathAddress(path)
}

const encodeSockaddr = (address: NetAddress.SocketAddress): Result.Result<Buffer, SysError> => {
  if (address._tag === "UnixPathAddress") {
    const abstract = address.path.startsWith("@")
    const name = Buffer.from(abstract ? address.path.slice(1) : address.path)
    if (name.length + 1 > SUN_PATH_MAX) {
      return Result.fail({ syscall: "bind", code: "ENAMETOOLONG", errno: constants.errno.ENAMETOOLONG })
    }
    // An abstract name is exactly its bytes after a NUL; a path is NUL-terminated.
    const buf = Buffer.alloc(2 + 1 + name.length)
    buf.writeUInt16LE(AF_UNIX, 0)
    name.copy(buf, abstract ? 3 : 2)
    return Result.succeed(abstract ? buf : buf.subarray(0, 2 + name.length + 1))
  }
  if (address._tag === "InetAddressV4") {
    const buf = Buffer.alloc(16)
    buf.writeUInt16LE(AF_INET, 0)
    buf.writeUInt16BE(address.port, 2)
    Buffer.from(NetAddress.ipv4ToOctets(address.address)).copy(buf, 4)
    return Result.succeed(buf)
  }
  const buf = Buffer.alloc(28)
  buf.writeUInt16LE(AF_INET6, 0)
  buf.writeUInt16BE(address.port, 2)
  Buffer.from(NetAddress.ipv6ToOctets(address.address)).copy(buf, 8)
  buf.writeUInt32LE(address.scopeId, 24)
  return Result.succeed(buf)
}

const familyOf = (address: NetAddress.SocketAddress): number =>
  address._tag === "UnixPathAddress" ? AF_UNIX : address._tag === "InetAddressV4" ? AF_INET : AF_INET6

/**
 * socket(2), bind(2) and listen(2), without accepting: the caller adopts the fd
 * (`server.listen({ fd })`) when it is ready to answer. The fd is blocking and
 * close-on-exec, as systemd passes them. An IPv6 wildcard also accepts IPv4, as
 * Node's own `listen(port)` does. With `reusePort`, a TCP socket joins the
 * `SO_REUSEPORT` group of its address: the kernel spreads connections among
 * the group's sockets.
 */
export const bindListen = (
  address: NetAddress.SocketAddress,
  backlog: number,
  options: BindOptions = {}
): Result.Result<number, SysError> =>
  withLibc("socket", (lib) =>
    Result.flatMap(encodeSockaddr(address), (sockaddr) => {
      const alone = options.alone === true && options.reusePort === true
      const guard = alone ? boundAlone(lib, address, sockaddr) : undefined
      if (guard !== undefined && Result.isFailure(guard)) return guard
      const result = bound(lib, address, sockaddr, { reusePort: options.reusePort === true }, (fd) =>
        lib.listen(fd, backlog) < 0 ? fail(lib, "listen") : Result.succeed(fd)
      )
      if (guard !== undefined) closeSync(guard.success)
      return result
    })
  )

/** How `bindListen` binds. */
export interface BindOptions {
  /** Joins the `SO_REUSEPORT` group of the address (TCP only). */
  readonly reusePort?: boolean | undefined
  /**
   * With `reusePort`, the first socket of a group: fails with `EADDRINUSE` where another socket listens on the
   * address already, as a bind without `SO_REUSEPORT` would, so that a second instance of a service cannot join the
   * group of the first (any process of the same user could).
   */
  readonly alone?: boolean | undefined
}

// A socket, its options and bind(2), then `then`; closed unless `then` keeps it.
const bound = (
  lib: Libc,
  address: NetAddress.SocketAddress,
  sockaddr: Buffer,
  options: { readonly reusePort: boolean },
  then: (fd: number) => Result.Result<number, SysError>
): Result.Result<number, SysError> => {
  const fd = lib.socket(familyOf(address), SOCK_STREAM | SOCK_CLOEXEC, 0)
  if (fd < 0) return fail(lib, "socket")
  const steps = (): Result.Result<number, SysError> => {
    if (address._tag !== "UnixPathAddress") {
      if (lib.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, [1], 4) < 0) return fail(lib, "setsockopt")
      if (options.reusePort && lib.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, [1], 4) < 0) {
        return fail(lib, "setsockopt")
      }
      if (address._tag === "InetAddressV6" && NetAddress.isUnspecified(address.address)) {
        if (lib.setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, [0], 4) < 0) return fail(lib, "setsockopt")
      }
    }
    if (lib.bind(fd, sockaddr, sockaddr.length) < 0) return fail(lib, "bind")
    return then(fd)
  }
  const result = steps()
  if (Result.isFailure(result)) closeSync(fd)
  return result
}

// A socket bound to the address with SO_REUSEADDR alone, held while the group's first socket binds and listens:
// Linux refuses it (EADDRINUSE) where any socket listens there, and it does not stand in the way of the group (two
// SO_REUSEADDR sockets conflict only once one listens).
const boundAlone = (lib: Libc, address: NetAddress.SocketAddress, sockaddr: Buffer) =>
  bound(lib, address, sockaddr, { reusePort: false }, Result.succeed)

/** Sets or clears FD_CLOEXEC. */
export const setCloseOnExec = (fd: number, on: boolean): Result.Result<void, SysError> => {
  return withLibc("fcntl", (lib) => {
    const flags = lib.fcntl(fd, F_GETFD)
    if (flags < 0) return fail(lib, "fcntl")
    const next = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC
    return Result.map(check(lib, "fcntl", lib.fcntl(fd, F_SETFD, "int", next)), () => undefined)
  })
}

/** A new fd, close-on-exec, for the same open socket (or file) as `fd`: closing one leaves the other open. */
export const dup = (fd: number): Result.Result<number, SysError> =>
  withLibc("fcntl", (lib) => check(lib, "fcntl", lib.fcntl(fd, F_DUPFD_CLOEXEC, "int", 3)))

/** Whether FD_CLOEXEC is set. */
export const isCloseOnExec = (fd: number): Result.Result<boolean, SysError> => {
  return withLibc("fcntl", (lib) => {
    return Result.map(check(lib, "fcntl", lib.fcntl(fd, F_GETFD)), (flags) => (flags & FD_CLOEXEC) !== 0)
  })
}

/**
 * Sends one datagram to a unix datagram socket (`/path`, or `@name` in the
 * abstract namespace) from a fresh, unbound socket, as sd_notify(3) does.
 */
export const sendDatagram = (path: string, payload: Uint8Array): Result.Result<void, SysError> => {
  return withLibc("socket", (lib) => {
    return Result.flatMap(encodeSockaddr(NetAddress.unixPathAddress(path)), (sockaddr) => {
      const fd = lib.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)
      if (fd < 0) return fail(lib, "socket")
      try {
        const buf = Buffer.from(payload)
        // Never blocks the event loop: a receiver that stopped reading is an EAGAIN error, not a hang.
        const sent = lib.sendto(fd, buf, buf.length, MSG_NOSIGNAL | MSG_DONTWAIT, sockaddr, sockaddr.length)
        return sent < 0 ? fail(lib, "sendto") : Result.succeed(undefined)
      } finally {
        closeSync(fd)
      }
    })
  })
}

/**
 * Binds a unix datagram socket and returns its fd: the receiving end of
 * sd_notify, for tests and for tools that stand in for the service manager.
 */
export const bindDatagram = (path: string): Result.Result<number, SysError> => {
  return withLibc("socket", (lib) => {
    return Result.flatMap(encodeSockaddr(NetAddress.unixPathAddress(path)), (sockaddr) => {
      const fd = lib.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)
      if (fd < 0) return fail(lib, "socket")
      if (lib.bind(fd, sockaddr, sockaddr.length) < 0) {
        const error = fail(lib, "bind")
        closeSync(fd)
        return error
      }
      return Result.succeed(fd)
    })
  })
}

/**
 * Receives one datagram if one is waiting (`MSG_DONTWAIT`), or `undefined`:
 * a read that never blocks, so a caller can poll with a bound.
 */
export const receiveDatagram = (fd: number): Result.Result<Buffer | undefined, SysError> => {
  return withLibc("recv", (lib) => {
    const buf = Buffer.alloc(4096)
    const n = lib.recv(fd, buf, buf.length, MSG_DONTWAIT)
    if (n >= 0) return Result.succeed(buf.subarray(0, n))
    const error = lastError(lib, "recv")
    return error.errno === constants.errno.EAGAIN ? Result.succeed(undefined) : Result.fail(error)
  })
}

/**
 * Whether something accepts connections on a unix stream socket path. A path
 * whose socket refuses (`ECONNREFUSED`) was left behind by a process that is
 * gone, and can be removed before binding it again.
 */
export const unixPathAccepts = (path: string): Result.Result<boolean, SysError> => {
  return withLibc("socket", (lib) => {
    return Result.flatMap(encodeSockaddr(NetAddress.unixPathAddress(path)), (sockaddr) => {
      const fd = lib.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)
      if (fd < 0) return fail(lib, "socket")
      try {
        if (lib.connect(fd, sockaddr, sockaddr.length) === 0) return Result.succeed(true)
        const error = lastError(lib, "connect")
        return error.code === "ECONNREFUSED" ? Result.succeed(false) : Result.fail(error)
      } finally {
        closeSync(fd)
      }
    })
  })
}

const WNOHANG = 1

/**
 * Reaps the child `pid` if it has exited (`waitpid(pid, WNOHANG)`): whether it
 * was reaped. Only for children no one else waits for: Node's own are reaped
 * by libuv, which must get their status.
 */
export const reap = (pid: number): Result.Result<boolean, SysError> =>
  withLibc("waitpid", (lib) => check(lib, "waitpid", lib.waitpid(pid, [0], WNOHANG)).pipe(Result.map((n) => n === pid)))

const SCM_RIGHTS = 1
const MSG_CMSG_CLOEXEC = 0x40000000

/**
 * The control message that carries one fd, as the kernel reads it: `struct cmsghdr { size_t cmsg_len; int
 * cmsg_level; int cmsg_type; }`, then the fd, each part aligned to `size_t` (CMSG_ALIGN). `word` is `sizeof(size_t)`.
 */
export interface ControlLayout {
  readonly word: number
  /** Offsets of `cmsg_level`, `cmsg_type` and the fd. */
  readonly level: number
  readonly type: number
  readonly data: number
  /** CMSG_LEN(sizeof(int)): the value of `cmsg_len`. */
  readonly length: number
  /** CMSG_SPACE(sizeof(int)): the buffer's size, `msg_controllen`. */
  readonly space: number
}

/** The layout for a machine whose `size_t` is `word` bytes (4 or 8). */
export const controlLayout = (word: number): ControlLayout => {
  const align = (n: number) => Math.ceil(n / word) * word
  const header = align(word + 8)
  return { word, level: word, type: word + 4, data: header, length: header + 4, space: header + align(4) }
}

/** The layouts the native calls use on this machine, if they can be made here: to check against C's. */
export const layouts = (): { readonly control: ControlLayout; readonly messageHeaderSize: number } | undefined => {
  const current = state()
  return "libc" in current ? current.libc : undefined
}

// A message of one byte, with its control data (the fd).
const oneByte = (byte: Buffer, control: Buffer): MessageHeader => ({
  name: null,
  namelen: 0,
  iov: [{ base: byte, len: 1 }],
  iovlen: 1,
  control,
  controllen: control.length,
  flags: 0
})

/** A connected pair of unix stream sockets, close-on-exec: one end for this process, one for a child. */
export const socketPair = (): Result.Result<readonly [number, number], SysError> =>
  withLibc("socketpair", (lib) => {
    const sv = [0, 0]
    return Result.map(check(lib, "socketpair", lib.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)), () => [
      sv[0]!,
      sv[1]!
    ])
  })

/** Sends a copy of `fd` over the unix socket `socket` (SCM_RIGHTS), with one byte; never blocks. */
export const sendFd = (socket: number, fd: number): Result.Result<void, SysError> =>
  withLibc("sendmsg", (lib) => {
    const layout = lib.control
    const control = Buffer.alloc(layout.space)
    if (layout.word === 8) control.writeBigUInt64LE(BigInt(layout.length), 0)
    else control.writeUInt32LE(layout.length, 0)
    control.writeInt32LE(SOL_SOCKET, layout.level)
    control.writeInt32LE(SCM_RIGHTS, layout.type)
    control.writeInt32LE(fd, layout.data)
    return Result.map(
      check(lib, "sendmsg", lib.sendmsg(socket, oneByte(Buffer.from("f"), control), MSG_NOSIGNAL | MSG_DONTWAIT)),
      () => undefined
    )
  })

/**
 * Receives a fd sent with `sendFd`, close-on-exec, if one is waiting (`MSG_DONTWAIT`), or `undefined`: the sender
 * sends it before it says so on the line channel, so it is there once that line has been read.
 */
export const receiveFd = (socket: number): Result.Result<number | undefined, SysError> =>
  withLibc("recvmsg", (lib) => {
    const layout = lib.control
    const control = Buffer.alloc(layout.space)
    const n = lib.recvmsg(socket, oneByte(Buffer.alloc(1), control), MSG_DONTWAIT | MSG_CMSG_CLOEXEC)
    if (n < 0) {
      const error = lastError(lib, "recvmsg")
      return error.errno === constants.errno.EAGAIN ? Result.succeed(undefined) : Result.fail(error)
    }
    const carriesFd =
      control.readInt32LE(layout.level) === SOL_SOCKET && control.readInt32LE(layout.type) === SCM_RIGHTS
    return n === 1 && carriesFd ? Result.succeed(control.readInt32LE(layout.data)) : Result.succeed(undefined)
  })

/** A readable description of a system call failure. */
export const formatSysError = (error: SysError): string =>
  error.detail === undefined ? `${error.syscall}: ${error.code}` : `${error.syscall}: ${error.code} (${error.detail})`
