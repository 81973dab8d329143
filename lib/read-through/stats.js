'use strict'
// The read-through's counters and loader latency histogram: in
// `getStats().cache.readThrough` and appended to `metrics()` (Prometheus).

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

const COUNTERS = [
  ['failsafeActivations', 'cache_failsafe_activations_total', 'Loader failures or hard timeouts answered with a fallback value (fail-safe).'],
  ['fallbackServed', 'cache_fallback_served_total', 'Fallback (stale) values served instead of an error or a wait.'],
  ['softTimeouts', 'cache_soft_timeouts_total', 'Loads slower than softTimeoutMs, answered with the fallback while they went on.'],
  ['hardTimeouts', 'cache_hard_timeouts_total', 'Loads abandoned after hardTimeoutMs.'],
  ['backgroundRefreshes', 'cache_background_refreshes_total', 'Loads that went on in the background: eager refreshes, and loads past a soft timeout.'],
  ['throttledLoads', 'cache_throttled_loads_total', 'Loader calls skipped because the key failed within failSafeThrottleMs.'],
  ['lockWaits', 'cache_lock_waits_total', 'Loads that waited for another instance holding the distributed lock.'],
  ['tagInvalidations', 'cache_tag_invalidations_total', 'Tags invalidated (invalidateTags).'],
]

class ReadThroughStats {
  constructor() {
    for (const [name] of COUNTERS) this[name] = 0
    this.loaderCalls = 0
    this.loaderFailures = 0
    this.tagInvalidatedEntries = 0
    this.lockAcquired = 0
    this.buckets = new Array(BUCKETS.length).fill(0)
    this.durationSum = 0
    this.durationCount = 0
  }

  observe(seconds) {
    for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]) this.buckets[i]++
    this.durationSum += seconds
    this.durationCount++
  }

  toJSON() {
    const out = {}
    for (const [name] of COUNTERS) out[name] = this[name]
    Object.assign(out, {
      loaderCalls: this.loaderCalls,
      loaderFailures: this.loaderFailures,
      tagInvalidatedEntries: this.tagInvalidatedEntries,
      locksAcquired: this.lockAcquired,
      loaderDuration: {
        count: this.durationCount,
        meanMs: this.durationCount ? (this.durationSum / this.durationCount) * 1000 : 0,
      },
    })
    return out
  }

  metricsText() {
    const lines = []
    for (const [name, metric, help] of COUNTERS) {
      lines.push(`# HELP ${metric} ${help}`, `# TYPE ${metric} counter`, `${metric} ${this[name]}`)
    }
    const h = 'cache_loader_duration_seconds'
    lines.push(`# HELP ${h} Time the read-through's loaders took (getOrLoad, getOrLoadMany, wrap).`, `# TYPE ${h} histogram`)
    BUCKETS.forEach((le, i) => lines.push(`${h}_bucket{le="${le}"} ${this.buckets[i]}`))
    lines.push(`${h}_bucket{le="+Inf"} ${this.durationCount}`, `${h}_sum ${this.durationSum}`, `${h}_count ${this.durationCount}`)
    return lines.join('\n') + '\n'
  }
}

module.exports = { ReadThroughStats }
