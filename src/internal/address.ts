/**
 * A listening socket as the machinery below the public modules knows it:
 * its fd, its name (`LISTEN_FDNAMES`) and its address. `ListenFds` calls it
 * `InheritedFd`; `Listeners` formats addresses with `formatAddress`.
 */
import * as NetAddress from "effect/net/NetAddress"

/** A listening socket's fd, name and local address. */
export interface Held {
  readonly fd: number
  readonly name: string
  readonly address: NetAddress.SocketAddress
}

/** An address as the servers report it: `[::]:8080`, `127.0.0.1:8080`, or a unix path. */
export const formatAddress = (address: NetAddress.SocketAddress): string =>
  address._tag === "UnixPathAddress" ? address.path : NetAddress.formatInet(address)

/** A listener, as `Listeners` gives it out: its fd (none where Node bound it), name and address, and whence. */
export interface Listener {
  /** The listening fd; `undefined` for a listener bound through Node, where the native calls are not available. */
  readonly fd: number | undefined
  readonly name: string
  /** The address it is bound to, with port 0 resolved. */
  readonly address: NetAddress.SocketAddress
  readonly inherited: boolean
}
