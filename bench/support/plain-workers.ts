/**
 * Plain `node:http` workers (`bench/programs/plain-worker.ts`), no
 * effect-grace code, started from this process on one port: each listens on
 * a socket passed as its fd 3 (one shared by all, or one each), or binds a
 * `SO_REUSEPORT` socket of its own; this process talks to each over IPC.
 */
import { spawn } from "node:child_process"
import { closeSync } from "node:fs"
import { onCleanup } from "./process.ts"
import { within } from "./wait.ts"

const PLAIN_WORKER = new URL("../programs/plain-worker.ts", import.meta.url).pathname

/** What a worker sends over IPC. */
export type FromWorker =
  | { readonly type: "listening" }
  | { readonly type: "reset" }
  | { readonly type: "counts"; readonly requests: number; readonly connections: number }

type Reply<T extends FromWorker["type"]> = Extract<FromWorker, { readonly type: T }>

/** How a worker listens: on a listening socket passed as its fd 3, or on a reuseport socket of its own. */
export type Listen =
  { readonly _tag: "Shared"; readonly fd: number } | { readonly _tag: "ReusePort"; readonly port: number }

export interface PlainWorker {
  readonly pid: number
  /** Sends `message`, and waits (bounded) for the worker's reply of type `reply`. */
  readonly ask: <T extends FromWorker["type"]>(message: string, reply: T) => Promise<Reply<T>>
  readonly listening: Promise<unknown>
  /** Closes its IPC channel, on which the worker closes its server and ends; SIGKILL if it has not within 5 s. */
  readonly stop: () => Promise<void>
}

const IPC_MS = 10_000
const LISTEN_MS = 30_000

const startPlainWorker = (listen: Listen, env: Record<string, string> = {}): PlainWorker => {
  const child = spawn(process.execPath, [PLAIN_WORKER], {
    // fd 3 is the listening socket (or nothing), fd 4 the IPC channel.
    stdio: ["ignore", "inherit", "inherit", listen._tag === "Shared" ? listen.fd : "ignore", "ipc"],
    env: { ...process.env, ...env, BALANCE_PORT: listen._tag === "ReusePort" ? String(listen.port) : undefined }
  })
  const pid = child.pid
  if (pid === undefined) throw new Error("cannot start a plain worker")
  const kill = () => child.kill("SIGKILL")
  const removeCleanup = onCleanup(kill)
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const next = <T extends FromWorker["type"]>(type: T, ms: number) =>
    within(
      Promise.race([
        new Promise<Reply<T>>((resolve) => {
          const onMessage = (message: FromWorker) => {
            if (message.type !== type) return
            child.off("message", onMessage)
            resolve(message as Reply<T>)
          }
          child.on("message", onMessage)
        }),
        exited.then(() => Promise.reject(new Error(`plain worker ${pid} exited while waiting for ${type}`)))
      ]),
      ms,
      `${type} from plain worker ${pid}`
    )
  return {
    pid,
    listening: next("listening", LISTEN_MS),
    ask: (message, reply) => {
      const answer = next(reply, IPC_MS)
      child.send(message)
      return answer
    },
    stop: async () => {
      if (child.connected) child.disconnect()
      await within(exited, 5000, `plain worker ${pid} to exit`).catch(kill)
      await exited
      removeCleanup()
    }
  }
}

/** Workers listening, and their stop, which closes the sockets passed to them too. */
export interface PlainPool {
  readonly workers: ReadonlyArray<PlainWorker>
  readonly stop: () => Promise<void>
}

/** One worker per `listens`, all listening; this process's copies of the sockets passed are closed at `stop`. */
export const startPlainPool = async (
  listens: ReadonlyArray<Listen>,
  env: Record<string, string> = {}
): Promise<PlainPool> => {
  const workers = listens.map((listen) => startPlainWorker(listen, env))
  const fds = new Set(listens.flatMap((listen) => (listen._tag === "Shared" ? [listen.fd] : [])))
  const stop = async () => {
    await Promise.all(workers.map((w) => w.stop()))
    for (const fd of fds) closeSync(fd)
  }
  try {
    await Promise.all(workers.map((w) => w.listening))
  } catch (error) {
    await stop()
    throw error
  }
  return { workers, stop }
}
