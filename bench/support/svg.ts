/**
 * Latency over time, hand-written SVG: each answer a dot at its completion
 * time, at its latency (log scale), coloured by the pid that served it; each
 * restart a shaded window from its signal (dashed line) to the old process's
 * exit, with the successor's readiness marked; failures as crosses under the
 * axis, one row per kind. One panel per run.
 *
 * Dots that would land on the same 2-pixel cell with the same pid are drawn
 * once, so a run of a million answers stays a file of a few hundred KB.
 */

/** One dot per answer: completion time and latency (ms), and the pid that answered. */
export interface Points {
  readonly count: number
  readonly ends: ArrayLike<number>
  readonly latencies: ArrayLike<number>
  readonly pids: ArrayLike<number>
}

/** A restart: its signal (or command), when the successor was ready, when the old process was gone (if known). */
export interface Window {
  readonly signalled: number
  readonly ready?: number | undefined
  readonly drained?: number | undefined
}

export interface Panel {
  readonly title: string
  /** Time shown as 0; `from` and `to` bound the x axis (all `performance.now()` ms). */
  readonly origin: number
  readonly from: number
  readonly to: number
  readonly points: Points
  readonly windows: ReadonlyArray<Window>
  readonly failures: ReadonlyArray<{ readonly at: number; readonly kind: string }>
}

const WIDTH = 1200
const LEFT = 96
const RIGHT = 16
const PLOT_HEIGHT = 200
/** Title above, the x axis and failure rows below. */
const PANEL_TOP = 34
const FAILURE_ROW = 11
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
const FAILURE_COLOURS: Record<string, string> = {
  reset: "#d62728",
  refused: "#ff9896",
  timeout: "#7b4173",
  "non-2xx": "#843c39"
}

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
const round = (n: number) => Math.round(n * 10) / 10

/** A step of 1, 2 or 5 times a power of ten giving about `target` ticks over `span`. */
const niceStep = (span: number, target: number) => {
  const raw = span / target
  const power = 10 ** Math.floor(Math.log10(raw))
  return ([1, 2, 5, 10].find((m) => m * power >= raw) ?? 10) * power
}

const panelHeight = (panel: Panel) => PANEL_TOP + PLOT_HEIGHT + 26 + failureKinds(panel).length * FAILURE_ROW

const failureKinds = (panel: Panel) => [...new Set(panel.failures.map((f) => f.kind))].toSorted()

/** Where a panel's times and latencies land: `x` of a time, `y` of a latency (log scale). */
interface Scale {
  readonly panel: Panel
  readonly top: number
  readonly plotTop: number
  readonly plotBottom: number
  readonly plotWidth: number
  readonly range: readonly [number, number]
  readonly x: (t: number) => number
  readonly y: (ms: number) => number
  readonly inRange: (t: number) => boolean
}

const scaleOf = (panel: Panel, top: number, range: readonly [number, number]): Scale => {
  const { from, to } = panel
  const plotTop = top + PANEL_TOP
  const plotBottom = plotTop + PLOT_HEIGHT
  const plotWidth = WIDTH - LEFT - RIGHT
  const [low, high] = range
  return {
    panel,
    top,
    plotTop,
    plotBottom,
    plotWidth,
    range,
    x: (t) => LEFT + ((t - from) / (to - from)) * plotWidth,
    y: (ms) => plotBottom - ((Math.log10(Math.max(ms, 10 ** low)) - low) / (high - low)) * PLOT_HEIGHT,
    inRange: (t) => t >= from && t <= to
  }
}

/** The panel's title, its frame, and the latency grid (log scale). */
const frame = ({ panel, top, plotTop, plotWidth, range, y }: Scale): Array<string> => {
  const parts = [
    `<text x="${LEFT}" y="${top + 22}" font-size="14" font-weight="bold">${escape(panel.title)}</text>`,
    `<rect x="${LEFT}" y="${plotTop}" width="${plotWidth}" height="${PLOT_HEIGHT}" fill="#fff" stroke="#999"/>`
  ]
  for (let p = range[0]; p <= range[1]; p++) {
    const label = 10 ** p >= 1 ? String(10 ** p) : (10 ** p).toFixed(-p)
    parts.push(
      `<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${round(y(10 ** p))}" y2="${round(y(10 ** p))}" stroke="#eee"/>`,
      `<text x="${LEFT - 6}" y="${round(y(10 ** p)) + 4}" font-size="11" text-anchor="end">${label} ms</text>`
    )
  }
  return parts
}

/** Restart windows: shaded from the signal to the old process's exit. */
const windowMarks = ({ panel, plotTop, plotBottom, x, inRange }: Scale): Array<string> => {
  const parts: Array<string> = []
  const line = (t: number, style: string) =>
    `<line x1="${round(x(t))}" x2="${round(x(t))}" y1="${plotTop}" y2="${plotBottom}" ${style}/>`
  for (const window of panel.windows) {
    if (!inRange(window.signalled)) continue
    const end = Math.min(panel.to, window.drained ?? window.ready ?? window.signalled)
    parts.push(
      `<rect x="${round(x(window.signalled))}" y="${plotTop}" width="${round(Math.max(1, x(end) - x(window.signalled)))}" height="${PLOT_HEIGHT}" fill="#000" fill-opacity="0.06"/>`,
      line(window.signalled, `stroke="#000" stroke-dasharray="4 3"`)
    )
    if (window.ready !== undefined && inRange(window.ready))
      parts.push(line(window.ready, `stroke="#2ca02c" stroke-width="1.5"`))
    if (window.drained !== undefined && inRange(window.drained))
      parts.push(line(window.drained, `stroke="#666" stroke-dasharray="1 2"`))
  }
  return parts
}

/** Dots, one per occupied 2-pixel cell and pid. */
const dots = ({ panel, x, y, inRange }: Scale, colourOf: (pid: number) => string): Array<string> => {
  const { points } = panel
  const cells = new Map<number, Set<number>>()
  for (let i = 0; i < points.count; i++) {
    const end = points.ends[i]!
    if (!inRange(end)) continue
    const cell = Math.round(x(end) / 2) * 4096 + Math.round(y(points.latencies[i]!) / 2)
    const pid = points.pids[i]!
    const set = cells.get(pid) ?? new Set<number>()
    set.add(cell)
    cells.set(pid, set)
  }
  return [...cells].map(([pid, set]) => {
    let d = ""
    for (const cell of set) d += `M${Math.floor(cell / 4096) * 2} ${(cell % 4096) * 2}h0.01`
    return `<path d="${d}" stroke="${colourOf(pid)}" stroke-width="2.6" stroke-linecap="round" stroke-opacity="0.75"/>`
  })
}

/** The time axis, in ms or (over 5 s) in seconds from the panel's origin. */
const timeAxis = ({ panel, plotBottom, x }: Scale): Array<string> => {
  const { origin, from, to } = panel
  const parts: Array<string> = []
  const span = to - from
  const inSeconds = span > 5000
  const step = niceStep(span, 12)
  for (let t = Math.ceil((from - origin) / step) * step; t <= to - origin; t += step) {
    const at = round(x(origin + t))
    const label = inSeconds ? `${round(t / 1000)} s` : `${Math.round(t)} ms`
    parts.push(
      `<line x1="${at}" x2="${at}" y1="${plotBottom}" y2="${plotBottom + 4}" stroke="#999"/>`,
      `<text x="${at}" y="${plotBottom + 15}" font-size="11" text-anchor="${at > WIDTH - RIGHT - 24 ? "end" : "middle"}">${label}</text>`
    )
  }
  return parts
}

/** Failures: one row of crosses per kind, under the axis. */
const failureRows = ({ panel, plotBottom, x, inRange }: Scale): Array<string> =>
  failureKinds(panel).flatMap((kind, row) => {
    const rowY = plotBottom + 26 + row * FAILURE_ROW
    const colour = FAILURE_COLOURS[kind] ?? "#d62728"
    const seen = new Set<number>()
    let d = ""
    let n = 0
    for (const failure of panel.failures) {
      if (failure.kind !== kind || !inRange(failure.at)) continue
      n++
      const px = Math.round(x(failure.at))
      if (seen.has(px)) continue
      seen.add(px)
      d += `M${px - 3} ${rowY - 3}l6 6m0 -6l-6 6`
    }
    return [
      `<text x="${LEFT - 6}" y="${rowY + 4}" font-size="10" text-anchor="end" fill="${colour}">${escape(kind)} ${n}</text>`,
      `<path d="${d}" stroke="${colour}" stroke-width="1.6"/>`
    ]
  })

const renderPanel = (
  panel: Panel,
  top: number,
  range: readonly [number, number],
  colourOf: (pid: number) => string
): string => {
  const scale = scaleOf(panel, top, range)
  return [
    ...frame(scale),
    ...windowMarks(scale),
    ...dots(scale, colourOf),
    ...timeAxis(scale),
    ...failureRows(scale)
  ].join("\n")
}

/** Powers of ten bounding every latency shown, so that panels compare. */
const latencyRange = (panels: ReadonlyArray<Panel>): [number, number] => {
  let min = Infinity
  let max = 1
  for (const { points, from, to } of panels) {
    for (let i = 0; i < points.count; i++) {
      if (points.ends[i]! < from || points.ends[i]! > to) continue
      min = Math.min(min, points.latencies[i]!)
      max = Math.max(max, points.latencies[i]!)
    }
  }
  const low = Math.floor(Math.log10(Math.max(0.01, Number.isFinite(min) ? min : 0.1)))
  return [low, Math.max(low + 1, Math.ceil(Math.log10(max)))]
}

/** Colours in the order the pids first answer: successive generations always differ. */
const coloursOf = (points: Points) => {
  const firsts = new Map<number, number>()
  for (let i = 0; i < points.count; i++) {
    const pid = points.pids[i]!
    if (!firsts.has(pid)) firsts.set(pid, points.ends[i]!)
  }
  const colours = new Map(
    [...firsts.entries()]
      .toSorted((a, b) => a[1] - b[1])
      .map(([pid], i) => [pid, PALETTE[i % PALETTE.length]!] as const)
  )
  return (pid: number) => colours.get(pid) ?? "#000"
}

/** An SVG document of `panels`, one under the other, with a legend. */
export const timelineSvg = (title: string, subtitle: string, panels: ReadonlyArray<Panel>): string => {
  const range = latencyRange(panels)
  const header = 80
  let top = header
  const bodies = panels.map((panel) => {
    const body = renderPanel(panel, top, range, coloursOf(panel.points))
    top += panelHeight(panel) + 10
    return body
  })
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${top}" viewBox="0 0 ${WIDTH} ${top}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="#fafafa"/>`,
    `<text x="${LEFT}" y="20" font-size="16" font-weight="bold">${escape(title)}</text>`,
    `<text x="${LEFT}" y="38" font-size="11" fill="#444">${escape(subtitle)}</text>`,
    `<text x="${LEFT}" y="56" font-size="11">Each dot: an answer, at its completion time and its latency (log scale), coloured by the pid that answered.</text>`,
    `<text x="${LEFT}" y="70" font-size="11">Dashed line: restart signal (or reload command); green line: successor ready; shaded until the old process exited` +
      ` (or the command returned); crosses under the axis: failed requests, by kind.</text>`,
    ...bodies,
    "</svg>",
    ""
  ].join("\n")
}
