'use strict'
/**
 * Alerts, each from a real cause: a killed, a paused and a full redis-server,
 * miss-heavy traffic, and a real local HTTP server as the webhook (one that
 * records, one that hangs, a port where nothing listens). Short windows and
 * thresholds come through the options. Every wait is bounded.
 */
const { test, describe, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const http = require('node:http')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { performance } = require('node:perf_hooks')
const { startRedis, freePort } = require('./helpers/redis')
const { sleep, guard, until } = require('./helpers/wait')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')

const EVERY = 100
const FOR = 300
const DISCONNECTED = 500
const TOKEN = `tok-${crypto.randomBytes(12).toString('hex')}` // the webhook URL's secret

let seq = 0
const uniquePrefix = () => `alerts-${process.pid}-${++seq}`

/** Alert settings short enough for a test. */
const shortAlerts = (more = {}) => ({
  evaluateEveryMs: EVERY,
  forMs: FOR,
  windowMs: 2000,
  minSamples: 20,
  ...more,
  thresholds: { disconnectedMs: DISCONNECTED, ...(more.thresholds || {}) },
})

/** A local webhook: `mode` 'ok' records each POST; 'hang' never answers. */
async function startWebhook(mode = 'ok') {
  const received = []
  const hanging = new Set()
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      received.push({ path: req.url, headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) })
      if (mode === 'hang') hanging.add(res)
      else res.end('ok')
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${server.address().port}/services/T000/B000/${TOKEN}`
  const close = () => {
    for (const res of hanging) res.destroy()
    server.closeAllConnections()
    return new Promise((resolve) => server.close(resolve))
  }
  return { url, received, close }
}

const alertNamed = async (cache, name) => (await cache.getAlerts()).find((a) => a.name === name)

/** `n` reads of keys that do not exist, `width` at a time. */
async function misses(cache, n, width = 20) {
  for (let i = 0; i < n; i += width) {
    await Promise.all(Array.from({ length: Math.min(width, n - i) }, (_, j) => cache.get(`missing:${i + j}`)))
  }
}

describe('redis_disconnected', () => {
  test('an idle adapter raises it (critical) when Redis is killed, the webhook gets it, and Redis back resolves it', { timeout: 60_000 }, async () => {
    const redis = await startRedis()
    const hook = await startWebhook()
    const keyPrefix = uniquePrefix()
    const cache = new CacheAdapter({
      url: redis.url,
      keyPrefix,
      commandTimeoutMs: 200,
      connectTimeoutMs: 300,
      breakerCooldownMs: 200,
      alerts: shortAlerts({ webhookUrl: hook.url }),
    })
    const events = []
    cache.on('alert', (e) => events.push(e))
    try {
      await until(async () => (await cache.getStats()).cache.mode === 'redis', 5000, 'connected')
      await until(async () => (await cache.getStats()).cache.redisWatch.lastOkAt, 3000, 'a first watch check')
      assert.equal(await alertNamed(cache, 'redis_disconnected'), undefined)

      // No cache call from here on: the adapter is idle.
      const killedAt = Date.now()
      await redis.kill()
      const alert = await until(() => alertNamed(cache, 'redis_disconnected'), 10_000, 'redis_disconnected raised')
      const tookMs = Date.now() - killedAt
      assert.ok(tookMs <= DISCONNECTED + FOR + 1500, `raised ${tookMs} ms after the kill`)
      assert.ok(tookMs >= FOR, `raised after ${tookMs} ms, before forMs`)
      assert.equal(alert.severity, 'critical')
      assert.ok(alert.value >= DISCONNECTED / 1000, `value ${alert.value} s`)
      assert.equal(alert.threshold, DISCONNECTED / 1000)
      assert.equal(typeof alert.message, 'string')
      assert.ok(!Number.isNaN(Date.parse(alert.since)))
      const health = await cache.healthCheck()
      assert.ok(health.alerts.some((a) => a.name === 'redis_disconnected'))
      assert.match(await cache.metrics(), /^cache_alert_active\{alert="redis_disconnected",severity="critical"\} 1$/m)
      // the idle adapter's breaker opened from the watch alone
      assert.equal((await cache.getStats()).cache.mode, 'memory')

      const raised = await until(() => hook.received.find((r) => r.body.state === 'raised'), 5000, 'the webhook POST')
      assert.equal(raised.body.alert.name, 'redis_disconnected')
      assert.equal(raised.body.service, keyPrefix)
      assert.match(raised.body.text, /redis_disconnected/)
      assert.ok(!Number.isNaN(Date.parse(raised.body.timestamp)))
      assert.match(raised.headers['content-type'], /application\/json/)

      await redis.restart()
      const backAt = Date.now()
      await until(async () => !(await alertNamed(cache, 'redis_disconnected')), 10_000, 'redis_disconnected resolved')
      assert.ok(Date.now() - backAt >= FOR, 'resolved before forMs')
      await until(() => hook.received.find((r) => r.body.state === 'resolved'), 5000, 'the resolve POST')
      assert.deepEqual(events.map((e) => `${e.state} ${e.alert.name}`), ['raised redis_disconnected', 'resolved redis_disconnected'])
      assert.match(await cache.metrics(), /^cache_alert_active\{alert="redis_disconnected",severity="critical"\} 0$/m)
    } finally {
      await cache.close()
      await hook.close()
      await redis.stop()
    }
  })
})

describe('hit_rate_low', () => {
  test('miss-heavy traffic raises it, fewer calls than minSamples do not, and hits clear it', { timeout: 60_000 }, async () => {
    const redis = await startRedis()
    const cache = new CacheAdapter({ url: redis.url, keyPrefix: uniquePrefix(), alerts: shortAlerts({ minSamples: 100 }) })
    try {
      await until(async () => (await cache.getStats()).cache.mode === 'redis', 5000, 'connected')
      await misses(cache, 60)
      await sleep(FOR * 3)
      assert.equal(await alertNamed(cache, 'hit_rate_low'), undefined, '60 misses are fewer than minSamples (100)')

      await misses(cache, 200)
      const alert = await until(() => alertNamed(cache, 'hit_rate_low'), 5000, 'hit_rate_low raised')
      assert.equal(alert.severity, 'critical')
      assert.ok(alert.value < 30, `hit rate ${alert.value}`)
      assert.equal(alert.threshold, 30)

      // Hits only, until the misses have left the 2 s window.
      await cache.set('present', 1)
      const deadline = Date.now() + 15_000
      while (Date.now() < deadline && (await alertNamed(cache, 'hit_rate_low'))) {
        await Promise.all(Array.from({ length: 50 }, () => cache.get('present')))
        await sleep(20)
      }
      assert.equal(await alertNamed(cache, 'hit_rate_low'), undefined, 'still active after 15 s of hits')
    } finally {
      await cache.close()
      await redis.stop()
    }
  })
})

describe('a paused Redis', () => {
  test('raises response_time_high or error_rate_high', { timeout: 60_000 }, async () => {
    const redis = await startRedis()
    const cache = new CacheAdapter({
      url: redis.url,
      keyPrefix: uniquePrefix(),
      commandTimeoutMs: 250,
      breakerFailures: 1_000_000, // every call keeps paying the timeout
      alerts: shortAlerts({ thresholds: { disconnectedMs: 60_000 } }),
    })
    try {
      await until(async () => (await cache.getStats()).cache.mode === 'redis', 5000, 'connected')
      redis.pause()
      let found
      const deadline = Date.now() + 15_000
      while (!found && Date.now() < deadline) {
        await Promise.all(Array.from({ length: 20 }, (_, i) => cache.get(`k${i}`)))
        const alerts = await cache.getAlerts()
        found = alerts.find((a) => a.name === 'response_time_high' || a.name === 'error_rate_high')
      }
      assert.ok(found, 'neither response_time_high nor error_rate_high within 15 s')
      assert.equal(found.severity, 'critical')
      assert.ok(found.value > found.threshold, JSON.stringify(found))
    } finally {
      redis.resume()
      await cache.close()
      await redis.stop()
    }
  })
})

describe('redis_memory_high', () => {
  test('a small maxmemory filled past 80 % raises it, and emptied resolves it', { timeout: 60_000 }, async () => {
    const redis = await startRedis({ args: ['--maxmemory', '8mb', '--maxmemory-policy', 'noeviction'] })
    const cache = new CacheAdapter({ url: redis.url, keyPrefix: uniquePrefix(), compressionThreshold: 1 << 30, alerts: shortAlerts() })
    try {
      await until(async () => (await cache.getStats()).cache.mode === 'redis', 5000, 'connected')
      await until(async () => (await cache.getStats()).cache.redisWatch.maxmemory === 8 * 1024 * 1024, 3000, 'maxmemory read')
      assert.equal(await alertNamed(cache, 'redis_memory_high'), undefined)
      // Incompressible values, until INFO says more than 85 % is used.
      for (let i = 0; i < 100; i++) {
        const w = (await cache.getStats()).cache.redisWatch
        if (w.usedMemory > 0.85 * w.maxmemory) break
        await cache.set(`fill:${i}`, crypto.randomBytes(150_000).toString('base64'))
        await sleep(EVERY)
      }
      const alert = await until(() => alertNamed(cache, 'redis_memory_high'), 5000, 'redis_memory_high raised')
      assert.equal(alert.severity, 'warning')
      assert.ok(alert.value > 80 && alert.threshold === 80, JSON.stringify(alert))
      await redis.cli('flushall')
      await until(async () => !(await alertNamed(cache, 'redis_memory_high')), 5000, 'redis_memory_high resolved')
    } finally {
      await cache.close()
      await redis.stop()
    }
  })
})

describe('journal_filling', () => {
  // Writes made while Redis is killed fill the journal; past 80 % of either bound the alert is raised,
  // and the replay once Redis is back resolves it.
  for (const [bound, options, write] of [
    ['replayMaxEntries', { replayMaxEntries: 20 }, (cache, i) => cache.set(`k${i}`, { i })],
    // 8 KB values: the byte bound (64 KB) is met by 7 of them, far before any entry bound.
    ['replayMaxBytes', { replayMaxBytes: 64 * 1024 }, (cache, i) => cache.set(`k${i}`, { i, pad: 'x'.repeat(8 * 1024) })],
  ]) {
    test(`Redis killed and writes past 80 % of ${bound} raise it; the replay resolves it`, { timeout: 60_000 }, async () => {
      const redis = await startRedis()
      const cache = new CacheAdapter({
        url: redis.url,
        keyPrefix: uniquePrefix(),
        commandTimeoutMs: 200,
        connectTimeoutMs: 300,
        breakerCooldownMs: 200,
        ...options,
        // Only this alert's own cause: no disconnection alert within the test.
        alerts: shortAlerts({ thresholds: { disconnectedMs: 600_000 } }),
      })
      try {
        await until(async () => (await cache.getStats()).cache.mode === 'redis', 5000, 'connected')
        await redis.kill()
        await until(async () => (await cache.getStats()).cache.mode === 'memory', 5000, 'the breaker opens')
        for (let i = 0; i < 6; i++) assert.equal(await write(cache, i), true)
        await sleep(FOR * 3)
        assert.equal(await alertNamed(cache, 'journal_filling'), undefined, 'under 80 % of the bound')

        for (let i = 6; i < 17; i++) assert.equal(await write(cache, i), true)
        const alert = await until(() => alertNamed(cache, 'journal_filling'), 5000, 'journal_filling raised')
        assert.equal(alert.severity, 'warning')
        assert.ok(alert.value > 80, `value ${alert.value}`)
        assert.equal(alert.threshold, 80)
        assert.match(alert.message, bound === 'replayMaxBytes' ? /bytes/ : /writes/)

        await redis.restart()
        await until(async () => (await cache.getStats()).cache.replay.pending === 0, 10_000, 'the journal replays')
        await until(async () => !(await alertNamed(cache, 'journal_filling')), 10_000, 'journal_filling resolved')
      } finally {
        await cache.close()
        await redis.stop()
      }
    })
  }
})

describe('a user an ACL keeps from INFO (an @dangerous command)', () => {
  test('is not a Redis outage: the breaker stays closed, no alert, the memory figures are marked unknown', { timeout: 60_000 }, async () => {
    const redis = await startRedis()
    await redis.cli('acl', 'setuser', 'app', 'on', '>app-secret', '~*', '&*', '+@all', '-@dangerous')
    const cache = new CacheAdapter({
      url: `redis://app:app-secret@127.0.0.1:${redis.port}`,
      keyPrefix: uniquePrefix(),
      breakerCooldownMs: 200,
      alerts: shortAlerts(),
    })
    try {
      await until(async () => (await cache.getStats()).cache.mode === 'redis', 5000, 'connected')
      await until(async () => (await cache.getStats()).cache.redisWatch.checks >= 10, 5000, 'ten watch checks')
      await sleep(DISCONNECTED + FOR)
      const stats = (await cache.getStats()).cache
      assert.equal(stats.mode, 'redis', `the adapter left Redis: ${stats.lastError}`)
      assert.equal(stats.outages, 0)
      assert.equal(stats.redisWatch.failures, 0)
      assert.match(stats.redisWatch.memoryUnknown, /NOPERM/)
      assert.deepEqual(await cache.getAlerts(), [])
      assert.equal(await cache.set('k', 1), true)
      assert.equal(await cache.get('k'), 1)
      assert.equal((await cache.getStats()).cache.servedFromMemory, 0, 'every call went to Redis')
    } finally {
      await cache.close()
      await redis.stop()
    }
  })
})

describe('the webhook off the cache path', () => {
  /** Median and worst of `n` sequential reads, in ms. */
  async function readTimes(cache, n) {
    const times = []
    for (let i = 0; i < n; i++) {
      const t0 = performance.now()
      await cache.get(`missing:${i % 50}`)
      times.push(performance.now() - t0)
    }
    times.sort((a, b) => a - b)
    return { p50: times[Math.floor(n / 2)], max: times[n - 1] }
  }

  for (const mode of ['hang', 'refuse']) {
    test(`a webhook that ${mode === 'hang' ? 'hangs' : 'refuses'} leaves cache calls as fast as without one`, { timeout: 60_000 }, async () => {
      let hook
      let url
      if (mode === 'hang') {
        hook = await startWebhook('hang')
        url = hook.url
      } else {
        url = `http://127.0.0.1:${await freePort()}/services/${TOKEN}` // nobody listens there
      }
      // Memory only, a low hit rate raises at once: an alert (and so a POST) every few evaluations.
      const alerts = shortAlerts({ forMs: 0, minSamples: 10 })
      const withHook = new CacheAdapter({ enabled: false, keyPrefix: uniquePrefix(), alerts: { ...alerts, webhookUrl: url } })
      const without = new CacheAdapter({ enabled: false, keyPrefix: uniquePrefix(), alerts })
      try {
        await misses(withHook, 40)
        await until(async () => (await withHook.getStats()).alerts.webhookPending > 0, 3000, 'a delivery under way')
        const base = await readTimes(without, 400)
        const timed = await readTimes(withHook, 400)
        assert.ok(timed.p50 <= base.p50 * 3 + 1, `p50 ${timed.p50.toFixed(3)} ms with the webhook, ${base.p50.toFixed(3)} without`)
        assert.ok(timed.max < 200, `a read took ${timed.max.toFixed(1)} ms`)
        const stats = await until(async () => {
          const s = (await withHook.getStats()).alerts
          return s.webhookFailures >= 1 && s
        }, 10_000, 'a counted failure')
        assert.match(stats.webhookLastError, mode === 'hang' ? /timed out/ : /ECONNREFUSED/)
        assert.equal(stats.webhookSent, 0)
        assert.equal(stats.webhookHost, new URL(url).host)
      } finally {
        await withHook.close()
        await without.close()
        if (hook) await hook.close()
      }
    })
  }
})

describe('the webhook URL is a secret', () => {
  test('its token is in no stats, health, metrics, alert, event, error, warning or output of a process', { timeout: 60_000 }, async () => {
    const hook = await startWebhook()
    const child = spawn(process.execPath, ['-e', CHILD], {
      env: { ...process.env, REDIS_ALERT_WEBHOOK_URL: hook.url, ALERTS_DIR: path.join(__dirname, '..') },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const exit = await guard(new Promise((resolve) => child.once('exit', resolve)), 30_000, 'the child process')
    try {
      assert.equal(exit, 0, `child failed:\n${out}\n${err}`)
      const report = JSON.parse(out.trim().split('\n').pop())
      assert.ok(report.events.length >= 1, 'no alert event')
      assert.ok(report.alerts.length >= 1, 'no active alert')
      assert.match(report.metrics, /cache_alert_active\{alert="hit_rate_low",severity="critical"\} 1/)
      assert.equal(report.stats.alerts.webhookHost, new URL(hook.url).host)
      assert.ok(report.errors.length >= 2 && report.errors.every((e) => /webhookUrl/.test(e)), JSON.stringify(report.errors))
      assert.ok(report.warnings.length >= 1, 'the throwing listener should warn')
      // The webhook did get the alert, with its token in the path and nowhere in the body.
      await until(() => hook.received.length >= 1, 5000, 'the POST')
      assert.ok(hook.received[0].path.endsWith(TOKEN))
      assert.ok(!JSON.stringify(hook.received[0].body).includes(TOKEN))
      for (const [where, text] of [['stdout', out], ['stderr', err]]) {
        assert.ok(!text.includes(TOKEN), `the token is in the child's ${where}`)
        assert.ok(!text.includes('/services/T000'), `the URL's path is in the child's ${where}`)
      }
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL')
      await hook.close()
    }
  })
})

// Runs in a child process: raises an alert, then prints every output it can get.
const CHILD = `
const { CacheAdapter } = require(process.env.ALERTS_DIR)
const url = process.env.REDIS_ALERT_WEBHOOK_URL
const warnings = []
process.on('warning', (w) => warnings.push(String(w.message)))
;(async () => {
  const errors = []
  for (const webhookUrl of [url.replace('http:', 'ftp:'), url.replace('http://', 'http:///')]) {
    try { new CacheAdapter({ enabled: false, alerts: { webhookUrl } }) } catch (e) { errors.push(String(e.stack)) }
  }
  const cache = new CacheAdapter({ enabled: false, alerts: { evaluateEveryMs: 50, forMs: 0, minSamples: 10 } })
  const events = []
  cache.on('alert', (e) => events.push(e))
  cache.on('alert', () => { throw new Error('a listener that throws') })
  for (let i = 0; i < 30; i++) await cache.get('missing:' + i)
  for (let i = 0; i < 100 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 20))
  await new Promise((r) => setTimeout(r, 500))
  const report = {
    events, errors, warnings,
    alerts: await cache.getAlerts(),
    stats: await cache.getStats(),
    health: await cache.healthCheck(),
    metrics: await cache.metrics(),
  }
  console.log(require('node:util').inspect(cache, { depth: 10, showHidden: true }))
  console.error('stats', JSON.stringify(report.stats), JSON.stringify(report.health))
  await cache.close()
  console.log(JSON.stringify(report))
})().catch((e) => { console.error(e); process.exit(1) })
`

describe('settings', () => {
  test('alerts: false turns them off; bad settings are TypeError/RangeError naming the setting', async () => {
    const off = new CacheAdapter({ enabled: false, alerts: false })
    try {
      await misses(off, 50)
      assert.deepEqual(await off.getAlerts(), [])
      assert.equal((await off.getStats()).alerts.enabled, false)
      assert.doesNotMatch(await off.metrics(), /cache_alert_active/)
      assert.deepEqual((await off.healthCheck()).alerts, [])
    } finally {
      await off.close()
    }
    assert.throws(() => new CacheAdapter({ alerts: { forMs: -1 } }), (e) => e instanceof RangeError && /options\.alerts\.forMs/.test(e.message))
    assert.throws(() => new CacheAdapter({ alerts: { thresholds: { memoryPct: 'high' } } }), (e) => e instanceof TypeError && /memoryPct/.test(e.message))
    assert.throws(() => new CacheAdapter({ alerts: { thresholds: { nope: 1 } } }), (e) => e instanceof TypeError && /thresholds\.nope/.test(e.message))
    assert.throws(() => new CacheAdapter({ alerts: 'yes' }), TypeError)
  })

  test('REDIS_MONITORING_ENABLED=false turns them off; REDIS_ALERT_* set the thresholds', async () => {
    process.env.REDIS_MONITORING_ENABLED = 'false'
    try {
      const off = new CacheAdapter({ enabled: false })
      assert.equal((await off.getStats()).alerts.enabled, false)
      await off.close()
    } finally {
      delete process.env.REDIS_MONITORING_ENABLED
    }
    process.env.REDIS_ALERT_MIN_SAMPLES = '5'
    process.env.REDIS_ALERT_FOR_MS = '0'
    process.env.REDIS_ALERT_EVALUATE_EVERY_MS = '50'
    process.env.REDIS_ALERT_HIT_RATE_CRITICAL_PCT = '10'
    try {
      const cache = new CacheAdapter({ enabled: false })
      try {
        await misses(cache, 10)
        const alert = await until(() => alertNamed(cache, 'hit_rate_low'), 3000, 'hit_rate_low from the environment')
        assert.deepEqual([alert.severity, alert.threshold], ['critical', 10])
      } finally {
        await cache.close()
      }
    } finally {
      for (const k of ['REDIS_ALERT_MIN_SAMPLES', 'REDIS_ALERT_FOR_MS', 'REDIS_ALERT_EVALUATE_EVERY_MS', 'REDIS_ALERT_HIT_RATE_CRITICAL_PCT']) delete process.env[k]
    }
  })
})

describe('the example server', () => {
  const { startServer } = require('../examples/server.js')
  let srv
  after(async () => srv && srv.close())

  test('GET /api/monitoring/alerts and /api/monitoring/metrics/performance answer', { timeout: 30_000 }, async () => {
    srv = await startServer({
      port: 0,
      adapterOptions: { enabled: false, alerts: { evaluateEveryMs: 50, forMs: 0, minSamples: 10 } },
      log: () => {},
    })
    await misses(srv.adapter, 30)
    const body = await until(async () => {
      const res = await fetch(srv.url + '/api/monitoring/alerts')
      assert.equal(res.status, 200)
      const b = await res.json()
      return b.alerts.length > 0 && b
    }, 5000, 'an alert on /api/monitoring/alerts')
    assert.equal(body.alerts[0].name, 'hit_rate_low')
    assert.equal(typeof body.timestamp, 'string')
    const perf = await (await fetch(srv.url + '/api/monitoring/metrics/performance')).json()
    for (const k of ['hitRatePct', 'averageResponseTimeMs', 'operationsPerSecond']) assert.equal(typeof perf[k], 'number', k)
    assert.ok('connectionLatencyMs' in perf)
  })
})
