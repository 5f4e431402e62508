/**
 * The supervisor's metrics, updated by the machinery below the public
 * modules; `Supervisor.metrics` is their public home, and documents them.
 */
import * as Metric from "effect/Metric"

export const metrics = {
  restarts: Metric.counter("effect-grace.restarts", { description: "Restart attempts, by outcome", incremental: true }),
  handOff: Metric.timer("effect-grace.restart.handoff", {
    description: "How long a successor took from spawn to ready"
  }),
  queued: Metric.counter("effect-grace.restart.queued", {
    description: "Restarts asked for while another was under way, kept to run after it, by kind",
    incremental: true
  }),
  workers: Metric.counter("effect-grace.workers", {
    description: "Workers started, ready and exited, by event",
    incremental: true
  }),
  memoryReplacements: Metric.counter("effect-grace.memory.replacements", {
    description: "Workers replaced, or single processes restarted, for staying above the memory limit",
    incremental: true
  })
}

/** Counts one event of a primary's workers (`started`, `ready`, `exited`). */
export const countWorkers = (event: string) => Metric.update(Metric.withAttributes(metrics.workers, { event }), 1)
