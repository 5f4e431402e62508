/**
 * effect-grace: graceful restart and termination of socket servers for Effect.
 *
 * - `ListenFds`: the systemd socket-passing protocol (sd_listen_fds).
 * - `Listeners`: listening sockets inherited when passed in, bound when not.
 * - `Server`: HTTP and HTTPS servers for `effect/http` apps that drain when their scope closes.
 * - `TcpServer`: raw TCP and unix socket servers (effect's `SocketServer`) that drain the same way.
 * - `Drain`: the drain's knobs and the signal a handler sees.
 * - `Health`: readiness and liveness, and the probe routes.
 * - `Supervisor`: zero-downtime restarts on a signal, graceful termination, systemd notify.
 * - `Notify`: the sd_notify client.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as Drain from "./Drain.ts"

/**
 * @since 0.1.0
 */
export * as Health from "./Health.ts"

/**
 * @since 0.1.0
 */
export * as ListenFds from "./ListenFds.ts"

/**
 * @since 0.1.0
 */
export * as Listeners from "./Listeners.ts"

/**
 * @since 0.1.0
 */
export * as Notify from "./Notify.ts"

/**
 * @since 0.1.0
 */
export * as Server from "./Server.ts"

/**
 * @since 0.1.0
 */
export * as Supervisor from "./Supervisor.ts"

/**
 * @since 0.1.0
 */
export * as TcpServer from "./TcpServer.ts"
