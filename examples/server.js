'use strict'
/**
 * Example server for native-cache-adapter, on node:http only.
 *
 * It simulates the ElevenLabs `conversation_initiation` webhook of the seeds
 * (lead, organisation and conversation context read through the cache in
 * front of a 50-100 ms fake database), serves the monitoring endpoints the
 * operators already use, and a live dashboard at `/`.
 *
 *   npm start                        # memory only unless REDIS_URL / REDIS_HOST say otherwise
 *   REDIS_URL=redis://127.0.0.1:6380 PORT=3000 npm start
 *
 * Routes:
 *   POST|GET /api/webhooks/elevenlabs/conversation-initiation  {caller_id, agent_id?, called_number?}
 *   GET /api/health (alias /api/monitoring/health)             overall status + adapter health
 *   GET /api/monitoring/health/redis                           adapter.healthCheck()
 *   GET /api/cache/stats (alias /api/monitoring/stats/cache)   adapter.getStats()
 *   GET /api/monitoring/metrics                                Prometheus text
 *   GET /api/monitoring/metrics/performance                    hit rate, average response time, ops/s, connection latency
 *   GET /api/monitoring/alerts                                 the active alerts (adapter.getAlerts())
 *   GET /api/monitoring/stream                                 Server-Sent Events, one `stats` event a second
 *   GET /                                                      dashboard.html
 *
 * `startServer({port, host, adapterOptions})` starts it in-process (tests do);
 * it only starts by itself when run as the main module.
 */
const http = require('node:http')
const fs = require('node:fs')
const path = require('node:path')
const { CacheAdapter } = require('..')
const db = require('./fake-db')

const DASHBOARD_FILE = path.join(__dirname, 'dashboard.html')
const WEBHOOK_PATH = '/api/webhooks/elevenlabs/conversation-initiation'
const DEFAULT_CALLED_NUMBER = '+17786528784'
const MAX_BODY_BYTES = 64 * 1024
const SAMPLES_KEPT = 2000 // webhook response times kept for the stream and the metrics window
const STREAM_INTERVAL_MS = 1000
const STREAM_BACKLOG_MS = 5 * 60_000 // history sent to a dashboard when it connects
const SNAPSHOT_MAX_AGE_MS = 500 // SSE clients share one getStats()/healthCheck() per tick
const MODE_LOG_KEPT = 200
const SHUTDOWN_GRACE_MS = 5000
const INITIAL_MODE_WAIT_MS = 2000 // how long startup waits for Redis before logging "memory"
const FALLBACK_TTL = { leadData: 300, organizationData: 120, conversationContext: 7200 }
const HISTOGRAM_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
/**
 * The webhook's read-through (README, Read-through). A looked-up row counts
 * as fresh for at most FRESH_S seconds (or its table TTL, if shorter) and is
 * refreshed in the background from 80% of that; the last loaded value is kept
 * an hour longer as a fallback. A stale row whose reload takes over 20 ms is
 * answered from the fallback while the reload goes on, and a failing database
 * is answered from it too (fail-safe), so three lookups in a row stay well
 * inside the webhook's 100 ms whatever the database does.
 */
const READ_THROUGH = { freshS: 30, grace: 3600, softTimeoutMs: 20, hardTimeoutMs: 3000, eagerRefresh: 0.8 }

const digits = (phone) => String(phone).replace(/\D/g, '')
const round2 = (x) => Math.round(x * 100) / 100

class HttpError extends Error {
  constructor(status, message) {
    super(message)
    this.status = status
  }
}

/** `redis://user:secret@host` → `redis://user:***@host`, for logs. */
function redactUrl(url) {
  return String(url).replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@')
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

function summarize(values) {
  const sorted = [...values].sort((a, b) => a - b)
  const sum = sorted.reduce((s, v) => s + v, 0)
  return {
    count: sorted.length,
    meanMs: sorted.length ? round2(sum / sorted.length) : null,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: sorted.length ? sorted[sorted.length - 1] : null,
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = []
    let size = 0
    req.on('data', (chunk) => {
      size += chunk.length
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, `body larger than ${MAX_BODY_BYTES} bytes`))
        req.destroy()
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
    ...headers,
  })
  res.end(text)
}

/** The example application: routes, webhook, monitoring, SSE clients. */
class ExampleApp {
  constructor(adapter, { log, redisLabel, readThrough }) {
    this.adapter = adapter
    this.readThroughSettings = { ...READ_THROUGH, ...readThrough }
    this.log = log
    this.redisLabel = redisLabel
    this.ttl = { ...FALLBACK_TTL }
    this.startedAt = Date.now()
    this.mode = null
    this.modeLog = []
    this.samples = [] // {seq, t, ms, cache}
    this.seq = 0
    this.webhookCounts = { hit: 0, miss: 0, error: 0 }
    this.fallbackResponses = 0 // webhook answers that used at least one fallback value
    this.histogram = { hit: new Array(HISTOGRAM_BUCKETS_S.length).fill(0), miss: new Array(HISTOGRAM_BUCKETS_S.length).fill(0) }
    this.histogramSum = { hit: 0, miss: 0 }
    this.clients = new Set()
    this.snapshot = null // {at, promise}
    this.announced = false // mode changes are logged once the startup line is out
    this.onModeChange = (event) => this.recordMode(event && event.mode, event && event.reason)
    adapter.on('modeChange', this.onModeChange)
  }

  async init() {
    const stats = await this.adapter.getStats()
    if (stats && stats.ttlConfig) Object.assign(this.ttl, stats.ttlConfig)
    if (this.mode === null) this.mode = (stats && stats.cache && stats.cache.mode) || 'memory'
    return stats
  }

  /** Remembers a mode (change) for the log and the dashboards; logs it once startup has been announced. */
  recordMode(mode, reason) {
    if (mode !== 'redis' && mode !== 'memory') return
    if (mode === this.mode && this.modeLog.length) return
    this.mode = mode
    const entry = { time: new Date().toISOString(), mode, reason: String(reason || '') }
    this.modeLog.push(entry)
    if (this.modeLog.length > MODE_LOG_KEPT) this.modeLog.shift()
    if (this.announced) {
      this.log(`cache mode changed: now serving from ${mode === 'redis' ? 'Redis' : 'memory'}${entry.reason ? ` (${entry.reason})` : ''}`)
    }
    for (const client of this.clients) client.send('mode', entry)
  }

  /** Resolves when the adapter reports mode 'redis', or after `waitMs`. */
  async waitForRedis(waitMs) {
    let timer, poll, onChange
    try {
      await new Promise((resolve) => {
        timer = setTimeout(resolve, waitMs)
        onChange = (event) => event && event.mode === 'redis' && resolve()
        this.adapter.on('modeChange', onChange)
        poll = setInterval(() => {
          this.adapter.getStats().then((s) => s.cache && s.cache.mode === 'redis' && resolve(), () => {})
        }, 100)
      })
    } finally {
      clearTimeout(timer)
      clearInterval(poll)
      this.adapter.off('modeChange', onChange)
    }
  }

  /** Waits (bounded) for the background connection, then says where the cache serves from. */
  async describeStartupMode(waitMs) {
    const stats = await this.init()
    if (!stats.redisEnabled) {
      this.recordMode('memory', 'Redis disabled by configuration')
      return 'serving from memory (Redis disabled by configuration)'
    }
    if (this.mode !== 'redis') await this.waitForRedis(waitMs)
    const current = (await this.adapter.getStats()).cache.mode
    if (current === 'redis') {
      this.recordMode('redis', 'startup: connected')
      return `serving from Redis (${this.redisLabel})`
    }
    let reason = 'not answering yet'
    try {
      const health = await this.adapter.healthCheck()
      if (health && health.redis && health.redis.error) reason = health.redis.error
    } catch (err) {
      reason = err.message
    }
    this.recordMode('memory', `startup: Redis unreachable: ${reason}`)
    return `serving from memory: Redis at ${this.redisLabel} unreachable (${reason}); switches to Redis when it answers`
  }

  // ---- webhook ---------------------------------------------------------------

  /** getOrLoad options for one lookup: fresh for at most READ_THROUGH.freshS, a fallback for an hour, tagged. */
  readThrough(ttl, tags) {
    const { freshS, ...rest } = this.readThroughSettings
    return { ...rest, ttl: Math.min(ttl, freshS), tags }
  }

  /** phone → lead through the mapping; else the org-scoped lookup, then remember the mapping. */
  async lookupLead(org, callerId, orgKey, load) {
    const { adapter, ttl } = this
    const mappedId = await adapter.getPhoneToLeadMapping(callerId)
    if (mappedId) {
      const lead = await adapter.getOrLoad(`lead:id:${mappedId}`, load(() => db.getLeadById(mappedId)), this.readThrough(ttl.leadData, [`lead:${mappedId}`]))
      if (lead && lead.organizationId === org.id) return { lead, writes: [] }
    }
    const lead = await adapter.getOrLoad(`lead:phone:${orgKey}`, load(() => db.findOrCreateLead(org.id, callerId)), this.readThrough(ttl.leadData, []))
    // the next call finds the lead through the mapping and its id; a lead update clears both (tag lead:<id>)
    const tags = [`lead:${lead.id}`]
    const writes = [adapter.setPhoneToLeadMapping(callerId, lead.id, { tags }), adapter.set(`lead:id:${lead.id}`, lead, { ttl: ttl.leadData, tags })]
    return { lead, writes }
  }

  async conversationInitiation(input) {
    const { adapter, ttl } = this
    const callerId = input.caller_id
    if (typeof callerId !== 'string' || digits(callerId).length === 0) {
      throw new HttpError(400, 'caller_id (the caller\'s phone number) is required')
    }
    const calledNumber = typeof input.called_number === 'string' && digits(input.called_number) ? input.called_number : DEFAULT_CALLED_NUMBER
    const agentId = typeof input.agent_id === 'string' ? input.agent_id : null

    let dbQueries = 0
    // A load still running (past the soft timeout) or failed when its
    // getOrLoad answered means the answer was a fallback value.
    const loads = []
    const load = (query) => () => {
      dbQueries++
      const outcome = { done: false, failed: false }
      loads.push(outcome)
      const p = query()
      p.then(() => (outcome.done = true), () => Object.assign(outcome, { done: true, failed: true }))
      return p
    }

    const org = await adapter.getOrLoad(`org:phone:${digits(calledNumber)}`, load(() => db.findOrganizationByPhone(calledNumber)), this.readThrough(ttl.organizationData, []))
    const orgKey = adapter.createOrgKey(org.id, callerId)
    const { lead, writes } = await this.lookupLead(org, callerId, orgKey, load)
    const [context] = await Promise.all([
      adapter.getOrLoad(`context:${orgKey}`, load(() => db.getConversationContext(org.id, lead.id)), this.readThrough(ttl.conversationContext, [`lead:${lead.id}`])),
      ...writes,
    ])
    const fallback = loads.some((o) => !o.done || o.failed)

    const messages = (context && context.messages) || []
    return {
      cache: dbQueries === 0 || fallback ? 'hit' : 'miss',
      dbQueries,
      fallback,
      body: {
        type: 'conversation_initiation_client_data',
        dynamic_variables: {
          customer_name: lead.customerName,
          lead_id: lead.id,
          lead_status: lead.status,
          caller_phone: callerId,
          organization_id: org.id,
          organization_name: org.name,
          agent_id: agentId,
          bike_type: lead.bikeInterest ? lead.bikeInterest.type : null,
          bike_budget: lead.bikeInterest ? lead.bikeInterest.budget : null,
          has_history: messages.length > 0,
          previous_summary: (context && context.summary) || '',
          conversation_context: messages.map((m) => `${m.role}: ${m.content}`).join('\n'),
          current_time: new Date().toLocaleString('en-CA', { timeZone: org.timezone || 'UTC' }),
        },
      },
    }
  }

  recordSample(ms, cache) {
    const sample = { seq: ++this.seq, t: Date.now(), ms, cache }
    this.samples.push(sample)
    if (this.samples.length > SAMPLES_KEPT) this.samples.splice(0, this.samples.length - SAMPLES_KEPT)
    this.webhookCounts[cache]++
    if (cache === 'hit' || cache === 'miss') {
      const seconds = ms / 1000
      this.histogramSum[cache] += seconds
      HISTOGRAM_BUCKETS_S.forEach((le, i) => {
        if (seconds <= le) this.histogram[cache][i]++
      })
    }
  }

  async handleWebhook(req, res, url, startedNs) {
    let input
    if (req.method === 'GET') {
      input = Object.fromEntries(url.searchParams)
    } else {
      const text = await readBody(req)
      try {
        input = text ? JSON.parse(text) : {}
      } catch {
        throw new HttpError(400, 'body is not valid JSON')
      }
      if (!input || typeof input !== 'object' || Array.isArray(input)) throw new HttpError(400, 'body must be a JSON object')
    }
    let result
    try {
      result = await this.conversationInitiation(input)
    } catch (err) {
      if (!(err instanceof HttpError)) this.recordSample(round2(Number(process.hrtime.bigint() - startedNs) / 1e6), 'error')
      throw err
    }
    const responseTimeMs = round2(Number(process.hrtime.bigint() - startedNs) / 1e6)
    this.recordSample(responseTimeMs, result.cache)
    if (result.fallback) this.fallbackResponses++
    sendJson(res, 200, { ...result.body, responseTimeMs, cache: result.cache, dbQueries: result.dbQueries, fallback: result.fallback }, {
      'X-Response-Time': `${responseTimeMs}ms`,
      'X-Cache': result.cache,
    })
  }

  // ---- monitoring ----------------------------------------------------------------

  webhookWindow(sinceMs) {
    const from = Date.now() - sinceMs
    return summarize(this.samples.filter((s) => s.t >= from && s.cache !== 'error').map((s) => s.ms))
  }

  /** One getStats() + healthCheck() shared by every SSE client of the same tick. */
  takeSnapshot() {
    const now = Date.now()
    if (this.snapshot && now - this.snapshot.at < SNAPSHOT_MAX_AGE_MS) return this.snapshot.promise
    const promise = Promise.all([this.adapter.getStats(), this.adapter.healthCheck()]).then(([stats, health]) => {
      const mode = (stats.cache && stats.cache.mode) || this.mode
      if (mode !== this.mode) this.recordMode(mode, 'observed in getStats()')
      return {
        time: new Date().toISOString(),
        mode,
        stats,
        health: {
          status: health.status,
          redis: health.redis,
          adapter: health.adapter,
        },
        alerts: health.alerts || [],
        webhook: { window10s: this.webhookWindow(10_000), counts: { ...this.webhookCounts }, fallbackResponses: this.fallbackResponses },
        db: db.stats(),
      }
    })
    this.snapshot = { at: now, promise }
    promise.catch(() => {
      if (this.snapshot && this.snapshot.promise === promise) this.snapshot = null
    })
    return promise
  }

  openStream(req, res) {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    })
    res.write('retry: 2000\n\n')
    const client = {
      lastSeq: this.seq,
      busy: false,
      timer: null,
      send: (event, data) => {
        if (!res.writableEnded) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
      },
      close: () => {
        clearInterval(client.timer)
        this.clients.delete(client)
        if (!res.writableEnded) res.end()
      },
    }
    const backlogFrom = Date.now() - STREAM_BACKLOG_MS
    client.send('hello', {
      startedAt: new Date(this.startedAt).toISOString(),
      mode: this.mode,
      modeLog: this.modeLog,
      samples: this.samples.filter((s) => s.t >= backlogFrom),
      intervalMs: STREAM_INTERVAL_MS,
    })
    const tick = async () => {
      if (client.busy) return
      client.busy = true
      try {
        const snap = await this.takeSnapshot()
        const fresh = this.samples.filter((s) => s.seq > client.lastSeq)
        client.lastSeq = this.seq
        client.send('stats', { ...snap, samples: fresh })
      } catch (err) {
        client.send('problem', { time: new Date().toISOString(), message: err.message })
      } finally {
        client.busy = false
      }
    }
    client.timer = setInterval(tick, STREAM_INTERVAL_MS)
    this.clients.add(client)
    tick()
    req.on('close', client.close)
    res.on('error', client.close)
  }

  async metricsText() {
    let text = String(await this.adapter.metrics())
    if (text && !text.endsWith('\n')) text += '\n'
    const lines = [
      '# HELP example_webhook_requests_total conversation_initiation webhook calls, by cache outcome',
      '# TYPE example_webhook_requests_total counter',
    ]
    for (const [cache, n] of Object.entries(this.webhookCounts)) lines.push(`example_webhook_requests_total{cache="${cache}"} ${n}`)
    lines.push(
      '# HELP example_webhook_duration_seconds conversation_initiation webhook response time, by cache outcome',
      '# TYPE example_webhook_duration_seconds histogram',
    )
    for (const cache of ['hit', 'miss']) {
      HISTOGRAM_BUCKETS_S.forEach((le, i) => lines.push(`example_webhook_duration_seconds_bucket{cache="${cache}",le="${le}"} ${this.histogram[cache][i]}`))
      lines.push(`example_webhook_duration_seconds_bucket{cache="${cache}",le="+Inf"} ${this.webhookCounts[cache]}`)
      lines.push(`example_webhook_duration_seconds_sum{cache="${cache}"} ${this.histogramSum[cache]}`)
      lines.push(`example_webhook_duration_seconds_count{cache="${cache}"} ${this.webhookCounts[cache]}`)
    }
    lines.push(
      '# HELP example_fake_db_queries_total queries that reached the fake database',
      '# TYPE example_fake_db_queries_total counter',
      `example_fake_db_queries_total ${db.stats().queries}`,
    )
    return text + lines.join('\n') + '\n'
  }

  /** The seeds' key metrics: hit rate, average response time, operations per second, connection latency. */
  async performance() {
    const [stats, health] = await Promise.all([this.adapter.getStats(), this.adapter.healthCheck()])
    const c = stats.cache
    const now = Date.now()
    const last = this.perfBaseline || { at: this.startedAt, operations: 0 }
    this.perfBaseline = { at: now, operations: c.operations }
    const seconds = Math.max(0.001, (now - last.at) / 1000)
    return {
      timestamp: new Date(now).toISOString(),
      mode: c.mode,
      hitRatePct: round2(c.hitRate * 100),
      averageResponseTimeMs: round2(c.latency.meanMs),
      p99ResponseTimeMs: c.latency.p99Ms,
      // since the previous request of this endpoint (or since startup)
      operationsPerSecond: round2((c.operations - last.operations) / seconds),
      connectionLatencyMs: health.redis && typeof health.redis.latencyMs === 'number' ? round2(health.redis.latencyMs) : null,
      redisMemory: c.redisWatch ? { usedBytes: c.redisWatch.usedMemory, maxBytes: c.redisWatch.maxmemory } : null,
      webhook: this.webhookWindow(60_000),
      activeAlerts: health.alerts.length,
    }
  }

  async overallHealth() {
    const health = await this.adapter.healthCheck()
    return {
      // 'degraded' still serves (from memory), so the HTTP status stays 200
      status: health.status,
      service: 'native-cache-adapter example',
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      mode: (health.adapter && health.adapter.mode) || this.mode,
      timestamp: new Date().toISOString(),
      webhook: this.webhookWindow(60_000),
      adapter: health,
    }
  }

  // ---- routing -------------------------------------------------------------------

  async handle(req, res) {
    const startedNs = process.hrtime.bigint()
    const url = new URL(req.url, 'http://localhost')
    const route = url.pathname.replace(/\/+$/, '') || '/'
    const isGet = req.method === 'GET' || req.method === 'HEAD'

    if (route === WEBHOOK_PATH) {
      if (req.method !== 'POST' && req.method !== 'GET') throw new HttpError(405, 'use POST (or GET)')
      return this.handleWebhook(req, res, url, startedNs)
    }
    if (route === '/api/fake-db/mode') {
      // POST ?mode=normal|slow|down (the dashboard's database buttons); GET reads it.
      if (req.method === 'POST') {
        try {
          db.setMode(url.searchParams.get('mode'))
        } catch (err) {
          throw new HttpError(400, err.message)
        }
        this.log(`fake database now ${db.stats().mode}`)
      } else if (!isGet) throw new HttpError(405, 'use GET or POST')
      return sendJson(res, 200, db.stats())
    }
    if (route === '/api/leads/updated') {
      // POST ?id=lead-000001: a lead changed in the database; every cache entry about it goes (tag lead:<id>).
      if (req.method !== 'POST') throw new HttpError(405, 'use POST')
      const id = url.searchParams.get('id')
      if (!id) throw new HttpError(400, 'id (a lead id) is required')
      return sendJson(res, 200, { invalidated: await this.adapter.invalidateTags([`lead:${id}`]) })
    }
    if (!isGet) throw new HttpError(405, 'use GET')

    switch (route) {
      case '/':
      case '/dashboard': {
        const html = await fs.promises.readFile(DASHBOARD_FILE)
        res.writeHead(200, {
          'Content-Type': 'text/html; charset=utf-8',
          'Content-Length': html.length,
          'Cache-Control': 'no-store',
          // everything is inline; nothing may come from elsewhere
          'Content-Security-Policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        })
        return res.end(req.method === 'HEAD' ? undefined : html)
      }
      case '/api/health':
      case '/api/monitoring/health':
        return sendJson(res, 200, await this.overallHealth())
      case '/api/monitoring/health/redis': {
        const health = await this.adapter.healthCheck()
        const redisStatus = health && health.redis && health.redis.status
        return sendJson(res, redisStatus === 'unhealthy' ? 503 : 200, health)
      }
      case '/api/cache/stats':
      case '/api/monitoring/stats/cache':
        return sendJson(res, 200, await this.adapter.getStats())
      case '/api/monitoring/metrics': {
        const text = await this.metricsText()
        res.writeHead(200, {
          'Content-Type': 'text/plain; version=0.0.4; charset=utf-8',
          'Content-Length': Buffer.byteLength(text),
          'Cache-Control': 'no-store',
        })
        return res.end(req.method === 'HEAD' ? undefined : text)
      }
      case '/api/monitoring/stream':
        return this.openStream(req, res)
      case '/api/monitoring/alerts': {
        const alerts = await this.adapter.getAlerts()
        const { alerts: counts } = await this.adapter.getStats()
        return sendJson(res, 200, { timestamp: new Date().toISOString(), enabled: counts.enabled, alerts, webhook: counts })
      }
      case '/api/monitoring/metrics/performance':
        return sendJson(res, 200, await this.performance())
      default:
        throw new HttpError(404, `no route for ${url.pathname}`)
    }
  }

  closeStreams() {
    for (const client of [...this.clients]) client.close()
  }

  dispose() {
    this.closeStreams()
    this.adapter.off('modeChange', this.onModeChange)
  }
}

/**
 * Start the example server.
 * @param {object} [opts]
 * @param {number} [opts.port=3000]  0 picks a free port
 * @param {string} [opts.host='127.0.0.1']
 * @param {object} [opts.adapterOptions]  passed to `new CacheAdapter()`; omitted: configured from the environment
 * @param {(line: string) => void} [opts.log=console.log]
 * @param {number} [opts.initialModeWaitMs=2000]  bound on waiting for Redis before the startup line
 * @param {object} [opts.readThrough]  overrides of READ_THROUGH (e.g. `{ freshS: 0.5 }` in tests)
 * @returns {Promise<{server: http.Server, adapter: CacheAdapter, url: string, app: ExampleApp, close: () => Promise<void>}>}
 */
async function startServer(opts = {}) {
  const port = opts.port === undefined ? 3000 : Number(opts.port)
  const host = opts.host || '127.0.0.1'
  const log = opts.log || ((line) => console.log(`[example] ${new Date().toISOString()} ${line}`))
  const adapterOptions = opts.adapterOptions
  const adapter = adapterOptions === undefined ? new CacheAdapter() : new CacheAdapter(adapterOptions)
  const o = adapterOptions || {}
  const redisLabel = Array.isArray(o.clusterNodes) && o.clusterNodes.length
    ? `cluster ${o.clusterNodes.map(redactUrl).join(', ')}`
    : redactUrl(o.url || process.env.REDIS_URL || `redis://${o.host || process.env.REDIS_HOST || '127.0.0.1'}:${o.port || process.env.REDIS_PORT || 6379}`)
  const app = new ExampleApp(adapter, { log, redisLabel, readThrough: opts.readThrough })

  const server = http.createServer((req, res) => {
    app.handle(req, res).catch((err) => {
      const status = err instanceof HttpError ? err.status : 500
      if (status === 500) log(`error on ${req.method} ${req.url}: ${err.stack || err.message}`)
      if (res.headersSent) {
        res.destroy()
        return
      }
      sendJson(res, status, { error: err.message })
    })
  })
  server.keepAliveTimeout = 5000

  let url
  try {
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    const address = server.address()
    url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
    const where = await app.describeStartupMode(opts.initialModeWaitMs === undefined ? INITIAL_MODE_WAIT_MS : opts.initialModeWaitMs)
    log(`listening on ${url}; ${where}`)
    app.announced = true
  } catch (err) {
    app.dispose()
    if (server.listening) await new Promise((resolve) => server.close(resolve))
    await adapter.close()
    throw err
  }

  let closing = null
  const close = () => {
    if (closing) return closing
    closing = (async () => {
      app.dispose()
      await new Promise((resolve) => {
        const force = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS)
        force.unref()
        server.close(() => {
          clearTimeout(force)
          resolve()
        })
        server.closeIdleConnections()
      })
      await adapter.close()
    })()
    return closing
  }

  return { server, adapter, url, app, close }
}

/**
 * The demo serves from memory unless Redis is asked for (REDIS_URL, REDIS_HOST,
 * REDIS_PORT or REDIS_ENABLED=true): a fresh machine may have no Redis, or
 * somebody else's on 6379.
 */
function demoAdapterOptions(env = process.env) {
  const asked = ['REDIS_URL', 'REDIS_HOST', 'REDIS_PORT'].some((name) => env[name]) || /^(true|1)$/i.test(env.REDIS_ENABLED || '')
  return asked ? undefined : { enabled: false }
}

async function main() {
  const port = process.env.PORT === undefined || process.env.PORT === '' ? 3000 : Number(process.env.PORT)
  const host = process.env.HOST || '127.0.0.1'
  let running
  try {
    running = await startServer({ port, host, adapterOptions: demoAdapterOptions() })
  } catch (err) {
    console.error(`[example] failed to start: ${err.message}`)
    process.exit(1)
  }
  console.log(`[example] dashboard: ${running.url}/   webhook: POST ${running.url}${WEBHOOK_PATH}`)
  let stopping = false
  const shutdown = (signal) => {
    if (stopping) {
      console.log(`[example] ${signal} again: exiting now`)
      process.exit(1)
    }
    stopping = true
    console.log(`[example] ${signal}: closing the server and the adapter`)
    setTimeout(() => {
      console.error('[example] shutdown took too long; exiting')
      process.exit(1)
    }, SHUTDOWN_GRACE_MS * 2).unref()
    running.close().then(
      () => {
        console.log('[example] closed')
        process.exitCode = 0
      },
      (err) => {
        console.error(`[example] error while closing: ${err.message}`)
        process.exitCode = 1
      },
    )
  }
  process.on('SIGINT', () => shutdown('SIGINT'))
  process.on('SIGTERM', () => shutdown('SIGTERM'))
}

if (require.main === module) main()

module.exports = { startServer, demoAdapterOptions, WEBHOOK_PATH }
