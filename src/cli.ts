#!/usr/bin/env node
/**
 * The `effect-grace` command: asks a running service, over its control socket (`GRACE_CONTROL`), to reload, to
 * report its status or to stop, and waits for the answer, so that a deploy learns whether the new code serves.
 *
 *   effect-grace reload [--upgrade] [--control PATH] [--timeout 2m] [--progress | --no-progress] [--json]
 *   effect-grace status [--json] [--control PATH] [--timeout 2m]
 *   effect-grace stop [--control PATH] [--timeout 2m] [--progress | --no-progress] [--json]
 *
 * Exit codes: 0 the service did it (the new code serves, the status came, the service stopped); 1 it did not (the
 * reload failed or was handed back, no answer within the timeout, the connection closed before the answer); 2 the
 * service cannot be reached, refused this user, or the command was used wrongly.
 *
 * One request line, then the lines of the answer: progress (when asked) and one answer, each a JSON object (the
 * protocol is in the README).
 *
 * Plain Node (`node:util` `parseArgs`, `node:net`), not `effect/cli` and Effect's runtime: the command runs in deploy
 * pipelines and should start at once (loading `effect/cli` with the platform's services costs about ten times
 * Node's own start), and `effect/cli` answers a usage error with the whole help and exit code 1, where a pipeline
 * wants one line and exit code 2, and adds flags (`--wizard`, `--completions`, `--log-level`) that mean nothing here.
 * What it decides is pure (`parse`, `progressLine`, `outcome`, `statusTable`); `main` does the I/O.
 */
import { realpathSync } from "node:fs"
import * as Net from "node:net"
import { parseArgs } from "node:util"
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import { DURATION_SYNTAX, parseDuration } from "./internal/duration.ts"

// ---------------------------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------------------------

type Verb = "reload" | "status" | "stop"

/** What the command line asks for. */
export type Invocation =
  | { readonly _tag: "Help"; readonly text: string }
  | { readonly _tag: "Usage"; readonly message: string }
  | {
      readonly _tag: "Run"
      readonly verb: Verb
      readonly upgrade: boolean
      readonly json: boolean
      readonly progress: boolean
      readonly control: string
      readonly timeoutMillis: number
    }

const PROGRAM = "effect-grace"
const DEFAULT_TIMEOUT = "2m"
// setTimeout's longest wait (about 24.8 days); a longer timeout waits that long.
const MAX_TIMEOUT_MILLIS = 2 ** 31 - 1

const common = `Options:
  --control PATH       the service's control socket: a path, or @name for an abstract socket
                       (default: $GRACE_CONTROL, the variable the service was started with)
  --timeout DURATION   how long to wait for the answer (default: ${DEFAULT_TIMEOUT}); Go's syntax (30s, 1m30s)
                       or Effect's ("30 seconds")
  -h, --help           this help`

const progressOptions = `  --progress           print each step as it happens (default: on when stdout is a terminal)
  --no-progress        print only the final line
  --json               print the service's answer line as received (JSON), and progress lines as JSON`

const exitCodes = `Exit codes:
  0  the service did it
  1  it did not, or no answer came in time, or the connection closed before the answer
  2  the service cannot be reached, refused this user, or the command was used wrongly`

const helps: Record<"program" | Verb, string> = {
  program: `Usage: ${PROGRAM} <command> [options]

Controls a service that runs effect-grace, through its control socket (GRACE_CONTROL), and waits for the
answer: a deploy learns whether the new code serves.

Commands:
  reload [--upgrade]   restart without dropping a connection; exits 0 once the new code serves
  status [--json]      what serves: role, pid, phase, listeners, workers, last reload, settings
  stop                 a graceful stop; exits 0 once the drain has ended

${common}

${exitCodes}

Examples:
  ${PROGRAM} reload --control /run/my-service/control.sock
  GRACE_CONTROL=/run/my-service/control.sock ${PROGRAM} status
  ${PROGRAM} status --json | jq '.workers[].pid'

Run '${PROGRAM} <command> --help' for a command's options.
`,
  reload: `Usage: ${PROGRAM} reload [--upgrade] [options]

Reloads the service as SIGUSR2 does (SIGHUP on a primary with workers: a roll), and waits until it has ended.
Prints one line: the pids that serve now and how long it took, or why the reload failed.

  --upgrade            with workers: a full upgrade (a new primary and its workers) instead of a roll
${progressOptions}
${common}

Exits 0 when the new code serves; 1 when the reload failed or was handed back (the old code serves on), or no
answer came within the timeout (the reload may still be under way); 2 when the service cannot be reached.

Examples:
  ${PROGRAM} reload --control /run/my-service/control.sock
      reloaded: upgrade, pid 1240 serves (6.1 s)
  ${PROGRAM} reload --upgrade --timeout 5m --control @my-service
  ExecReload=${PROGRAM} reload          (in a systemd unit, with Environment=GRACE_CONTROL=...)
`,
  status: `Usage: ${PROGRAM} status [--json] [options]

Prints what the service is doing: its role, pid, phase and uptime, its listeners, each worker (slot, pid, phase,
memory, start, deaths), the last reload and any pending one, whether restarts are available, the settings.

  --json               the status object as the service sent it, on one line (for scripts)
${common}

Exits 0 with the status; 2 when the service cannot be reached.

Examples:
  ${PROGRAM} status --control /run/my-service/control.sock
  ${PROGRAM} status --json | jq '.workers | length'
`,
  stop: `Usage: ${PROGRAM} stop [options]

Stops the service gracefully, as SIGTERM does: it stops accepting, drains its connections and exits. Waits
until the drain has ended.

${progressOptions}
${common}

Exits 0 once the service has drained; 1 when no answer came within the timeout; 2 when it cannot be reached.

Examples:
  ${PROGRAM} stop --control /run/my-service/control.sock
      stopped: pid 1234 drained in 812 ms
`
}

// The options each command takes (help aside).
const takes: Record<Verb, ReadonlyArray<string>> = {
  reload: ["control", "timeout", "progress", "json", "upgrade"],
  status: ["control", "timeout", "json"],
  stop: ["control", "timeout", "progress", "json"]
}

const isVerb = (word: string): word is Verb => word === "reload" || word === "status" || word === "stop"

const usage = (message: string, verb?: Verb): Invocation => ({
  _tag: "Usage",
  message: `${message}; see '${PROGRAM}${verb === undefined ? "" : ` ${verb}`} --help'`
})

// parseArgs' own messages are long and suggest `--`; one short line instead.
const argsProblem = (error: unknown): string => {
  const { code, message } = error as { code?: string; message?: string }
  const option = message?.match(/'(-[^' ]*)/)?.[1] ?? ""
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option ${option}`
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return /argument missing/.test(message ?? "") ? `${option} needs a value` : `${option} takes no value`
    default:
      return message ?? String(error)
  }
}

const parseOptions = (args: ReadonlyArray<string>) =>
  parseArgs({
    args: [...args],
    allowPositionals: true,
    allowNegative: true,
    tokens: true,
    options: {
      control: { type: "string" },
      timeout: { type: "string" },
      progress: { type: "boolean" },
      json: { type: "boolean" },
      upgrade: { type: "boolean" },
      help: { type: "boolean", short: "h" }
    }
  })

/** Reads the command line; `env` gives `GRACE_CONTROL`, `terminal` whether stdout is a terminal. */
export const parse = (
  args: ReadonlyArray<string>,
  env: Readonly<Record<string, string | undefined>>,
  terminal: boolean
): Invocation => {
  let parsed: ReturnType<typeof parseOptions>
  try {
    parsed = parseOptions(args)
  } catch (error) {
    const verb = args.find(isVerb)
    return usage(argsProblem(error), verb)
  }
  const { values, positionals, tokens } = parsed
  const [first, ...rest] = positionals
  if (first === "help") {
    const topic = rest[0]
    if (topic === undefined) return { _tag: "Help", text: helps.program }
    return isVerb(topic) ? { _tag: "Help", text: helps[topic] } : usage(`no command ${JSON.stringify(topic)}`)
  }
  if (first === undefined) return values.help ? { _tag: "Help", text: helps.program } : usage("no command given")
  if (!isVerb(first)) return usage(`unknown command ${JSON.stringify(first)}; use reload, status or stop`)
  if (values.help) return { _tag: "Help", text: helps[first] }
  if (rest.length > 0) return usage(`${first} takes no argument ${JSON.stringify(rest[0])}`, first)
  for (const token of tokens) {
    if (token.kind === "option" && token.name !== "help" && !takes[first].includes(token.name)) {
      return usage(`${first} takes no option ${token.rawName}`, first)
    }
  }
  const control = values.control ?? env.GRACE_CONTROL ?? ""
  if (control.trim() === "") {
    return usage("no control socket: give --control PATH, or set GRACE_CONTROL as the service has it", first)
  }
  const rawTimeout = values.timeout ?? DEFAULT_TIMEOUT
  const timeout = parseDuration(rawTimeout)
  if (Option.isNone(timeout)) {
    return usage(`--timeout ${JSON.stringify(rawTimeout)} is not a duration; use ${DURATION_SYNTAX}`, first)
  }
  const timeoutMillis = Duration.toMillis(timeout.value)
  if (!(timeoutMillis > 0)) return usage(`--timeout ${JSON.stringify(rawTimeout)} must be more than 0`, first)
  const json = values.json ?? false
  return {
    _tag: "Run",
    verb: first,
    upgrade: values.upgrade ?? false,
    json,
    // JSON is for scripts: progress only when asked for.
    progress: first !== "status" && (values.progress ?? (terminal && !json)),
    control,
    timeoutMillis: Math.min(timeoutMillis, MAX_TIMEOUT_MILLIS)
  }
}

/** The request line for an invocation (protocol v1). */
export const requestLine = (run: Extract<Invocation, { _tag: "Run" }>): string =>
  [run.verb, ...(run.upgrade ? ["--upgrade"] : []), ...(run.progress ? ["--progress"] : [])].join(" ") + "\n"

// ---------------------------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------------------------

/** What the command prints last, where, and how it exits. */
export interface Outcome {
  readonly code: 0 | 1 | 2
  readonly line: string
}

type Json = Record<string, unknown>

const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value)

/** `812 ms`, `6.1 s`, `2m`, `2m 5s`, `3h 12m`, `4d 2h`. */
export const formatMillis = (millis: number): string => {
  if (!Number.isFinite(millis)) return "?"
  if (millis < 1000) return `${Math.round(millis)} ms`
  if (millis < 120_000) return `${(millis / 1000).toFixed(1)} s`
  const minutes = Math.floor(millis / 60_000)
  const hours = Math.floor(minutes / 60)
  const days = Math.floor(hours / 24)
  if (days > 0) return `${days}d ${hours % 24}h`
  if (hours > 0) return `${hours}h ${minutes % 60}m`
  const seconds = Math.floor(millis / 1000) % 60
  return seconds === 0 ? `${minutes}m` : `${minutes}m ${seconds}s`
}

const formatValue = (value: unknown): string =>
  typeof value === "string" ? (/^[^\s"=]+$/.test(value) ? value : JSON.stringify(value)) : JSON.stringify(value)

const pairs = (fields: Json, skip: ReadonlyArray<string>): string =>
  Object.entries(fields)
    .filter(([key]) => !skip.includes(key))
    .map(([key, value]) => ` ${key}=${formatValue(value)}`)
    .join("")

/** A progress line as a person reads it: the time since the request, the step, then its fields. */
export const progressLine = (line: Json, elapsedMillis: number): string =>
  `  +${(elapsedMillis / 1000).toFixed(1)}s ${String(line.progress)}${pairs(line, ["progress", "at"])}`

const errorOf = (answer: Json): { readonly tag: string; readonly message: string } => {
  const error = isObject(answer.error) ? answer.error : {}
  return {
    tag: typeof error._tag === "string" ? error._tag : "Error",
    message: typeof error.message === "string" ? error.message : "the service gave no reason"
  }
}

const workersList = (workers: unknown): string =>
  Array.isArray(workers)
    ? workers
        .filter(isObject)
        .map((worker) => `${worker.slot}:${worker.pid}`)
        .join(" ")
    : ""

// The requests a client gets wrong, or the service refuses to take from it: the command was used wrongly.
const refusals = ["BadRequest", "PeerRefused"]

/** The last line and the exit code for an answer. */
export const outcome = (verb: Verb, answer: Json): Outcome => {
  if (answer.ok !== true) {
    const { tag, message } = errorOf(answer)
    if (refusals.includes(tag)) return { code: 2, line: `${PROGRAM} ${verb}: refused: ${tag}: ${message}` }
    const took = typeof answer.millis === "number" ? ` (${formatMillis(answer.millis)})` : ""
    return { code: 1, line: `${verb} failed: ${tag}: ${message}${took}` }
  }
  const took = formatMillis(Number(answer.millis))
  switch (verb) {
    case "reload": {
      const workers = workersList(answer.workers)
      return {
        code: 0,
        line:
          workers === ""
            ? `reloaded: ${answer.kind}, pid ${answer.pid} serves (${took})`
            : `reloaded: ${answer.kind}, pid ${answer.pid} serves with workers ${workers} (${took})`
      }
    }
    case "stop":
      return { code: 0, line: `stopped: pid ${answer.pid} drained in ${took}` }
    case "status":
      return { code: 0, line: isObject(answer.status) ? statusTable(answer.status, Date.now()) : "" }
  }
}

const timeOf = (iso: unknown, now: number): string => {
  if (typeof iso !== "string" || Number.isNaN(Date.parse(iso))) return "-"
  const at = new Date(iso)
  const pad = (n: number) => String(n).padStart(2, "0")
  const clock = `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`
  const today = new Date(now).toDateString() === at.toDateString()
  return today ? clock : `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ${clock}`
}

/** Rows as columns, each as wide as its widest cell. */
const columns = (rows: ReadonlyArray<ReadonlyArray<string>>, indent = "  "): Array<string> => {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((row) => row[i]?.length ?? 0))) ?? []
  return rows.map(
    (row) =>
      indent +
      row
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd()
  )
}

const mib = (bytes: unknown): string => (typeof bytes === "number" ? `${(bytes / 1048576).toFixed(1)} MiB` : "-")

const text = (value: unknown): string => (value === undefined || value === null ? "-" : String(value))

const lastReload = (last: unknown, now: number): string => {
  if (!isObject(last)) return "none"
  const by = last.by === undefined ? "" : ` by ${last.by}`
  const took = typeof last.millis === "number" ? ` in ${formatMillis(last.millis)}` : ""
  const pid = last.pid === undefined ? "" : `, pid ${last.pid}`
  return `${text(last.kind)}${by} at ${timeOf(last.at, now)}: ${text(last.outcome)}${took}${pid}`
}

/** The status object as a readable table. Fields it does not know are left out; `--json` has them all. */
export const statusTable = (status: Json, now: number): string => {
  const lines: Array<string> = []
  const uptime = typeof status.uptimeMillis === "number" ? formatMillis(status.uptimeMillis) : "-"
  lines.push(
    `${text(status.role)} pid ${text(status.pid)}  ${text(status.phase)}  up ${uptime} (since ${timeOf(status.startedAt, now)})` +
      (status.version === undefined ? "" : `  effect-grace ${status.version}`)
  )
  const listeners = Array.isArray(status.listeners) ? status.listeners.filter(isObject) : []
  lines.push("", "listeners")
  lines.push(
    ...(listeners.length === 0
      ? ["  none"]
      : columns(listeners.map((l) => [text(l.address), text(l.name), l.inherited === true ? "inherited" : "bound"])))
  )
  if (Array.isArray(status.workers)) {
    const workers = status.workers.filter(isObject)
    lines.push("", `workers (${workers.length})`)
    lines.push(
      ...columns([
        ["SLOT", "PID", "PHASE", "RSS", "STARTED", "DEATHS", "MEMORY REPLACEMENTS"],
        ...workers.map((w) => [
          text(w.slot),
          text(w.pid),
          text(w.phase),
          mib(w.rssBytes),
          timeOf(w.startedAt, now),
          text(w.deaths),
          text(w.memoryReplacements)
        ])
      ])
    )
  }
  const restarts = isObject(status.restarts)
    ? status.restarts.available === true
      ? "available"
      : `unavailable: ${text(status.restarts.reason)}`
    : "-"
  const pending = isObject(status.pending) ? `${text(status.pending.kind)} x${text(status.pending.count)}` : "none"
  const settings = isObject(status.settings)
    ? Object.entries(status.settings)
        .map(([key, value]) => `${key}=${value === null ? "none" : formatValue(value)}`)
        .join(" ")
    : "-"
  lines.push(
    "",
    ...columns(
      [
        ["last reload", lastReload(status.lastReload, now)],
        ["pending", pending],
        ["restarts", restarts],
        ["settings", settings]
      ],
      ""
    )
  )
  return lines.join("\n")
}

// ---------------------------------------------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------------------------------------------

// An answer is one line; a status with a thousand workers is far below this.
const MAX_LINE_BYTES = 16 * 1024 * 1024

/** Why the socket cannot be reached, and what to check. */
export const unreachable = (verb: Verb, control: string, code: string | undefined): Outcome => {
  const where = control.startsWith("@") ? `abstract socket ${control}` : control
  const why: Record<string, string> = {
    ENOENT: `${where} does not exist: is the service running, with GRACE_CONTROL=${control}?`,
    ECONNREFUSED: control.startsWith("@")
      ? `nothing listens on ${where}: is the service running, with GRACE_CONTROL=${control}?`
      : `nothing listens on ${where}: the service is not running (a socket file left behind?), or this is not its control socket`,
    EACCES: `permission denied on ${where}: run as the service's user or root`,
    EPERM: `permission denied on ${where}: run as the service's user or root`,
    ENOTDIR: `${where}: a part of the path is not a directory`
  }
  return {
    code: 2,
    line: `${PROGRAM} ${verb}: cannot reach the service (${code ?? "error"}): ${why[code ?? ""] ?? `cannot connect to ${where}`}`
  }
}

const noAnswer = (verb: Verb, timeoutMillis: number): Outcome => ({
  code: 1,
  line:
    verb === "status"
      ? `${PROGRAM} status: no answer within ${formatMillis(timeoutMillis)}`
      : `${PROGRAM} ${verb}: no answer within ${formatMillis(timeoutMillis)}; the ${verb} may still be under way ('${PROGRAM} status' shows it)`
})

const closedEarly = (verb: Verb): Outcome => ({
  code: 1,
  line:
    verb === "status"
      ? `${PROGRAM} status: the service closed the connection without an answer`
      : `${PROGRAM} ${verb}: the connection closed before the answer: the service went away during the ${verb} ('${PROGRAM} status' shows what serves now)`
})

const notProtocol = (verb: Verb, line: string): Outcome => ({
  code: 2,
  line: `${PROGRAM} ${verb}: the service answered a line that is not JSON (is this an effect-grace control socket?): ${JSON.stringify(line.slice(0, 80))}`
})

/** How the command writes: each line goes out as it comes. */
export interface Output {
  readonly out: (line: string) => void
  readonly err: (line: string) => void
}

/** Connects, sends the request, prints progress as it comes, and settles with the outcome. */
export const request = (run: Extract<Invocation, { _tag: "Run" }>, output: Output): Promise<Outcome> =>
  new Promise((resolve) => {
    const path = run.control.startsWith("@") ? `\0${run.control.slice(1)}` : run.control
    const socket = Net.createConnection({ path })
    const sent = performance.now()
    let connected = false
    let buffered = ""
    let settled = false
    const settle = (result: Outcome) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve(result)
    }
    const timer = setTimeout(() => settle(noAnswer(run.verb, run.timeoutMillis)), run.timeoutMillis)
    const take = (line: string) => {
      if (line.trim() === "") return
      let parsed: unknown
      try {
        parsed = JSON.parse(line)
      } catch {
        return settle(notProtocol(run.verb, line))
      }
      if (!isObject(parsed)) return settle(notProtocol(run.verb, line))
      if (typeof parsed.progress === "string") {
        if (run.progress) output.out(run.json ? line : progressLine(parsed, performance.now() - sent))
        return
      }
      const result = outcome(run.verb, parsed)
      if (run.json) return settle({ code: result.code, line: run.verb === "status" ? statusJson(parsed, line) : line })
      settle(result)
    }
    socket.setEncoding("utf8")
    socket.on("connect", () => {
      connected = true
      socket.write(requestLine(run))
    })
    socket.on("data", (chunk: string) => {
      buffered += chunk
      for (let newline = buffered.indexOf("\n"); newline >= 0; newline = buffered.indexOf("\n")) {
        const line = buffered.slice(0, newline)
        buffered = buffered.slice(newline + 1)
        take(line)
        if (settled) return
      }
      if (buffered.length > MAX_LINE_BYTES) settle(notProtocol(run.verb, buffered))
    })
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (!connected) settle(unreachable(run.verb, run.control, error.code))
      // Once connected, a reset is the end of the connection: 'close' follows and says so.
    })
    socket.on("close", () => {
      // An answer without its final newline still counts.
      if (!settled && buffered.trim() !== "") take(buffered)
      settle(closedEarly(run.verb))
    })
  })

// `status --json` prints the status object, as sent; an answer without one (a refusal) is printed whole.
const statusJson = (answer: Json, line: string): string =>
  answer.ok === true && isObject(answer.status) ? JSON.stringify(answer.status) : line

/** Runs the command line; yields the exit code. */
export const main = async (
  args: ReadonlyArray<string>,
  env: Readonly<Record<string, string | undefined>>,
  terminal: boolean,
  output: Output
): Promise<number> => {
  const invocation = parse(args, env, terminal)
  switch (invocation._tag) {
    case "Help":
      output.out(invocation.text.trimEnd())
      return 0
    case "Usage":
      output.err(`${PROGRAM}: ${invocation.message}`)
      return 2
    case "Run": {
      const result = await request(invocation, output)
      // The answer is the data a script reads (stdout); a failure is a diagnostic (stderr), unless it is JSON.
      if (result.code === 0 || invocation.json) output.out(result.line)
      else output.err(result.line)
      return result.code
    }
  }
}

// Run when executed (`effect-grace` through its link in node_modules/.bin, `node src/cli.ts`), not when imported.
const isEntry = (argv1: string | undefined): boolean => {
  try {
    return argv1 !== undefined && realpathSync(argv1) === realpathSync(import.meta.filename)
  } catch {
    return false
  }
}

if (isEntry(process.argv[1])) {
  main(process.argv.slice(2), process.env, process.stdout.isTTY === true, {
    out: (line) => process.stdout.write(line + "\n"),
    err: (line) => process.stderr.write(line + "\n")
  }).then(
    (code) => {
      // Not process.exit: stdout, when a pipe, is written asynchronously and would lose its last line.
      process.exitCode = code
    },
    (error: unknown) => {
      process.stderr.write(`${PROGRAM}: ${error instanceof Error ? error.message : String(error)}\n`)
      process.exitCode = 2
    }
  )
}
