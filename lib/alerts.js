'use strict'
// Alerts: rules over the native core's counters, evaluated on an unref'd
// timer, with a sliding window for rates, a minimum of calls before a rate
// can fire, and `forMs` of hysteresis both ways; and a webhook (Slack or
// Teams incoming webhook) told of each raise and resolve.
//
// Nothing here runs on a cache call's path: the timer samples cheap atomics
// (`alertInputs()`), the webhook is posted from a queue of its own, and every
// failure is caught and counted. The webhook URL carries a secret token: it
// never leaves this module (stats show its host only), and no error text that
// could hold it is ever kept.

const http = require('node:http')
const https = require('node:https')

/** Each alert and the severities it can have. */
const ALERTS = {
  redis_disconnected: ['critical'],
  hit_rate_low: ['warning', 'critical'],
  response_time_high: ['warning', 'critical'],
  error_rate_high: ['critical'],
  redis_memory_high: ['warning'],
  journal_filling: ['warning'],
}

const WEBHOOK_TIMEOUT_MS = 2000
const WEBHOOK_ATTEMPTS = 3
const WEBHOOK_BACKOFF_MS = [500, 2000] // before the 2nd and 3rd attempts
const WEBHOOK_QUEUE_MAX = 100
const SAMPLES_MAX = 100_000 // bound of the window, whatever windowMs / evaluateEveryMs is

const round2 = (x) => Math.round(x * 100) / 100

// Webhook URLs, out of every object's own properties, so that even
// `console.log(adapter)` cannot print one.
const webhookUrls = new WeakMap()

/** The rules: each returns `null` (clear) or `{severity, value, threshold, message}`. */
const RULES = {
  redis_disconnected(c, w, cfg) {
    if (!c.redisEnabled || !c.redisWatch) return null
    const ms = c.redisWatch.unreachableMs
    const limit = cfg.thresholds.disconnectedMs
    if (!(ms > 0) || ms < limit) return null
    const value = round2(ms / 1000)
    return { severity: 'critical', value, threshold: limit / 1000, message: `Redis has not answered for ${value} s (threshold ${limit / 1000} s)` }
  },
  hit_rate_low(c, w, cfg) {
    const reads = w.hits + w.misses
    if (reads < cfg.minSamples || reads === 0) return null
    const value = round2((100 * w.hits) / reads)
    const { hitRateCriticalPct: critical, hitRateWarnPct: warn } = cfg.thresholds
    const severity = value < critical ? 'critical' : value < warn ? 'warning' : null
    if (!severity) return null
    const threshold = severity === 'critical' ? critical : warn
    return { severity, value, threshold, message: `hit rate ${value} % over the last ${reads} reads (under ${threshold} %)` }
  },
  response_time_high(c, w, cfg) {
    if (w.latencyCount < cfg.minSamples || w.latencyCount === 0) return null
    const value = round2(w.latencySumMs / w.latencyCount)
    const { responseTimeCriticalMs: critical, responseTimeWarnMs: warn } = cfg.thresholds
    const severity = value > critical ? 'critical' : value > warn ? 'warning' : null
    if (!severity) return null
    const threshold = severity === 'critical' ? critical : warn
    return { severity, value, threshold, message: `average response time ${value} ms over the last ${w.latencyCount} calls (over ${threshold} ms)` }
  },
  error_rate_high(c, w, cfg) {
    if (w.operations < cfg.minSamples || w.operations === 0) return null
    // Calls rejected to their caller, or answered from memory because Redis failed them.
    const value = round2(Math.min(100, (100 * (w.errors + w.servedFromMemory)) / w.operations))
    const threshold = cfg.thresholds.errorRatePct
    if (!(value > threshold)) return null
    return { severity: 'critical', value, threshold, message: `${value} % of the last ${w.operations} calls failed on Redis (over ${threshold} %)` }
  },
  redis_memory_high(c, w, cfg) {
    const watch = c.redisWatch
    if (!c.redisEnabled || !watch || !(watch.maxmemory > 0)) return null
    const value = round2((100 * watch.usedMemory) / watch.maxmemory)
    const threshold = cfg.thresholds.memoryPct
    if (!(value > threshold)) return null
    return { severity: 'warning', value, threshold, message: `Redis uses ${value} % of its maxmemory (${watch.usedMemory} of ${watch.maxmemory} bytes; over ${threshold} %)` }
  },
  journal_filling(c, w, cfg) {
    // Whichever bound is nearer: large values fill replayMaxBytes long before replayMaxEntries.
    const byEntries = c.replayMaxEntries > 0 ? (100 * c.replayPending) / c.replayMaxEntries : 0
    const byBytes = c.replayMaxBytes > 0 ? (100 * c.replayBytes) / c.replayMaxBytes : 0
    const value = round2(Math.max(byEntries, byBytes))
    const threshold = cfg.thresholds.journalPct
    if (!(value > threshold)) return null
    const held = byBytes > byEntries ? `${c.replayBytes} of ${c.replayMaxBytes} bytes` : `${c.replayPending} of ${c.replayMaxEntries} writes`
    return {
      severity: 'warning',
      value,
      threshold,
      message: `the outage journal holds ${held} (over ${threshold} %); beyond its bound the oldest writes are dropped`,
    }
  },
}

class Alerts {
  /**
   * @param {object} config  `alertsConfig()` of the native core (holds the webhook URL)
   * @param {() => object} sample  the native `alertInputs()`
   * @param {(event: {state: 'raised' | 'resolved', alert: object}) => void} notify
   */
  constructor(config, sample, notify) {
    const { webhookUrl, ...cfg } = config
    this.enabled = Boolean(cfg.enabled)
    this.cfg = cfg
    this.sample = sample
    this.notify = notify
    // The counters start at zero with the adapter: that is the first baseline.
    const zero = { hits: 0, misses: 0, operations: 0, errors: 0, servedFromMemory: 0, latencyCount: 0, latencySumMs: 0 }
    this.samples = [{ t: Date.now(), ...zero }]
    this.states = new Map(Object.keys(ALERTS).map((name) => [name, { active: null, candidate: null, candidateSince: 0 }]))
    this.timer = null
    this.counts = { evaluations: 0, evaluationFailures: 0, raised: 0, resolved: 0 }
    if (webhookUrl) webhookUrls.set(this, new URL(webhookUrl))
    this.webhook = {
      queue: [],
      busy: false,
      sent: 0,
      failures: 0,
      dropped: 0,
      lastError: null,
    }
  }

  start() {
    if (!this.enabled || this.timer) return
    this.timer = setInterval(() => this.evaluate(), this.cfg.evaluateEveryMs)
    this.timer.unref()
  }

  stop() {
    clearInterval(this.timer)
    this.timer = null
  }

  /** Samples the counters, updates the window and every alert's state. Never throws. */
  evaluate(now = Date.now()) {
    try {
      const c = this.sample()
      // The adapter is gone (collected without close()): nothing left to watch.
      if (c === null) return this.stop()
      const w = this.window(c, now)
      this.counts.evaluations++
      for (const [name, rule] of Object.entries(RULES)) this.step(name, rule(c, w, this.cfg), now)
    } catch (e) {
      this.counts.evaluationFailures++
      process.emitWarning(`cache alerts: an evaluation failed: ${e && e.message}`)
    }
  }

  /** Deltas of the counters over the last `windowMs`. */
  window(c, now) {
    const s = this.samples
    s.push({
      t: now,
      hits: c.hits,
      misses: c.misses,
      operations: c.operations,
      errors: c.errors,
      servedFromMemory: c.servedFromMemory,
      latencyCount: c.latencyCount,
      latencySumMs: c.latencySumMs,
    })
    // Keep one sample at or before the window's start, as its baseline.
    const start = now - this.cfg.windowMs
    let drop = 0
    while (drop + 1 < s.length && s[drop + 1].t <= start) drop++
    if (s.length - drop > SAMPLES_MAX) drop = s.length - SAMPLES_MAX
    if (drop > 0) s.splice(0, drop)
    const first = s[0]
    const last = s[s.length - 1]
    const out = {}
    for (const k of Object.keys(last)) out[k] = Math.max(0, last[k] - first[k])
    return out
  }

  /** `forMs` of hysteresis: a severity (or the clear state) must hold that long to take effect. */
  step(name, found, now) {
    const st = this.states.get(name)
    const severity = found ? found.severity : null
    if (severity !== st.candidate) {
      st.candidate = severity
      st.candidateSince = now
    }
    const current = st.active ? st.active.severity : null
    if (st.active && found && severity === current) {
      Object.assign(st.active, { value: found.value, threshold: found.threshold, message: found.message })
    }
    if (severity === current || now - st.candidateSince < this.cfg.forMs) return
    if (severity === null) {
      const alert = { ...st.active }
      st.active = null
      this.counts.resolved++
      this.announce('resolved', alert)
    } else {
      const since = new Date(st.candidateSince).toISOString()
      st.active = { name, severity, since, value: found.value, threshold: found.threshold, message: found.message }
      this.counts.raised++
      this.announce('raised', { ...st.active })
    }
  }

  announce(state, alert) {
    try {
      this.notify({ state, alert })
    } catch (e) {
      process.emitWarning(`cache alerts: an 'alert' listener threw: ${e && e.message}`)
    }
    if (webhookUrls.has(this)) this.post({ state, alert })
  }

  /** The active alerts, most severe first. */
  active() {
    const out = []
    for (const st of this.states.values()) if (st.active) out.push({ ...st.active })
    return out.sort((a, b) => (a.severity === b.severity ? 0 : a.severity === 'critical' ? -1 : 1))
  }

  stats() {
    const h = this.webhook
    return {
      enabled: this.enabled,
      active: this.active().length,
      ...this.counts,
      webhookHost: this.cfg.webhookHost || null,
      webhookSent: h.sent,
      webhookFailures: h.failures,
      webhookDropped: h.dropped,
      webhookPending: h.queue.length + (h.busy ? 1 : 0),
      webhookLastError: h.lastError,
    }
  }

  /** `cache_alert_active{alert,severity}` lines (exposition format 0.0.4). */
  metricsText() {
    if (!this.enabled) return ''
    const lines = ['# HELP cache_alert_active 1 while the alert is active at that severity, else 0.', '# TYPE cache_alert_active gauge']
    for (const [name, severities] of Object.entries(ALERTS)) {
      const active = this.states.get(name).active
      for (const severity of severities) {
        lines.push(`cache_alert_active{alert="${name}",severity="${severity}"} ${active && active.severity === severity ? 1 : 0}`)
      }
    }
    return lines.join('\n') + '\n'
  }

  // The webhook ------------------------------------------------------------

  post(event) {
    const h = this.webhook
    const { alert, state } = event
    const mark = state === 'resolved' ? 'RESOLVED' : alert.severity.toUpperCase()
    const body = JSON.stringify({
      text: `[${mark}] ${this.cfg.service}: ${alert.name} ${state}: ${alert.message}`,
      state,
      alert,
      service: this.cfg.service,
      timestamp: new Date().toISOString(),
    })
    h.queue.push(body)
    if (h.queue.length > WEBHOOK_QUEUE_MAX) {
      h.queue.shift()
      h.dropped++
    }
    if (!h.busy) this.deliverNext()
  }

  /** Sends the queue in order, one delivery at a time, each with retries. */
  async deliverNext() {
    const h = this.webhook
    h.busy = true
    try {
      while (h.queue.length > 0) {
        const body = h.queue.shift()
        let delivered = false
        for (let attempt = 0; attempt < WEBHOOK_ATTEMPTS && !delivered; attempt++) {
          if (attempt > 0) await pause(WEBHOOK_BACKOFF_MS[attempt - 1])
          const problem = await send(webhookUrls.get(this), body)
          if (problem === null) delivered = true
          else {
            h.failures++
            h.lastError = problem
          }
        }
        if (delivered) h.sent++
        else h.dropped++
      }
    } catch (e) {
      h.lastError = 'internal error'
    } finally {
      h.busy = false
    }
  }
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms).unref())

/**
 * One POST. Resolves to `null` on a 2xx answer, else to a short reason that
 * never contains the URL (an error code, or the HTTP status). Never rejects,
 * and never keeps Node alive: its socket and timer are unref'd.
 */
function send(url, body) {
  return new Promise((resolve) => {
    let done = false
    const finish = (problem) => {
      if (done) return
      done = true
      clearTimeout(timer)
      resolve(problem)
    }
    const timer = setTimeout(() => {
      finish(`timed out after ${WEBHOOK_TIMEOUT_MS} ms`)
      req.destroy()
    }, WEBHOOK_TIMEOUT_MS)
    timer.unref()
    let req
    try {
      req = (url.protocol === 'https:' ? https : http).request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        agent: false,
      })
    } catch (e) {
      finish((e && e.code) || 'request failed')
      return
    }
    req.on('socket', (socket) => socket.unref())
    req.on('error', (e) => finish((e && e.code) || 'request failed'))
    req.on('response', (res) => {
      res.resume()
      finish(res.statusCode >= 200 && res.statusCode < 300 ? null : `HTTP ${res.statusCode}`)
    })
    req.end(body)
  })
}

module.exports = { Alerts, ALERTS }
