/**
 * Sockets on 127.0.0.1: ports free for a run, and a listening socket this
 * process holds but never accepts on, as effect-grace's primary does.
 */
import * as Net from "node:net"
import * as NetAddress from "effect/net/NetAddress"
import * as Result from "effect/Result"
import * as Sys from "../../src/internal/sys.ts"

/** `n` distinct ports free on 127.0.0.1 right now (bound together, then released). */
export const freePorts = async (n: number): Promise<Array<number>> => {
  const servers = Array.from({ length: n }, () => Net.createServer())
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))))
  const ports = servers.map((server) => (server.address() as Net.AddressInfo).port)
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))))
  return ports
}

/**
 * Binds 127.0.0.1:`port` without accepting (`SO_REUSEPORT` with `reusePort`): this process holds the socket and
 * never polls it, as effect-grace's primary does.
 */
export const bindLoopback = (port: number, reusePort = false): { readonly fd: number; readonly port: number } => {
  const fd = Sys.bindListen(NetAddress.inetAddressUnsafe(NetAddress.ipv4Loopback, port), 511, { reusePort })
  if (Result.isFailure(fd)) throw new Error(`cannot bind 127.0.0.1:${port}: ${Sys.formatSysError(fd.failure)}`)
  const address = Sys.localAddress(fd.success)
  if (Result.isFailure(address) || address.success._tag !== "InetAddressV4") {
    throw new Error(`cannot read the address of fd ${fd.success}`)
  }
  return { fd: fd.success, port: address.success.port }
}
