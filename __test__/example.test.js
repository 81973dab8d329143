'use strict'
/**
 * The example server (examples/server.js) end to end: its endpoints against a
 * real redis-server, the webhook's hit/miss behaviour, the live dashboard in
 * headless Chromium through a Redis outage and recovery, the server on an
 * unreachable Redis, and graceful shutdown of `node examples/server.js`.
 */
const { describe, test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { startRedis, freePort } = require('./helpers/redis')
require('./helpers/env').isolateFromEnvironment()
const { startServer, WEBHOOK_PATH } = require('../examples/server')
const fakeDb = require('../examples/fake-db')

const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
]
const MODE_SWITCH_TIMEOUT_MS = 15_000 // Redis killed → dashboard shows 'memory' (and back)
// overwritten by each run; DASHBOARD_SCREENSHOT_DIR moves them
const SCREENSHOT_DIR = process.env.DASHBOARD_SCREENSHOT_DIR || path.join(os.tmpdir(), 'native-cache-adapter-dashboard')

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function getJson(base, route) {
  const res = await fetch(base + route)
  const text = await res.text()
  let body
  try {
    body = JSON.parse(text)
  } catch {
    assert.fail(`${route} did not answer JSON (HTTP ${res.status}): ${text.slice(0, 300)}`)
  }
  return { status: res.status, headers: res.headers, body }
}

async function webhook(base, body) {
  const res = await fetch(base + WEBHOOK_PATH, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  const json = await res.json()
  assert.equal(res.status, 200, `webhook answered ${res.status}: ${JSON.stringify(json)}`)
  return { headers: res.headers, body: json }
}

/** Reads SSE events from `route` until `count` events arrived (bounded); returns [{event, data}]. */
async function readEvents(base, route, count, timeoutMs = 5000) {
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), timeoutMs)
  const events = []
  try {
    const res = await fetch(base + route, { signal: ac.signal })
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type'), /^text\/event-stream/)
    const decoder = new TextDecoder()
    let buf = ''
    for await (const chunk of res.body) {
      buf += decoder.decode(chunk, { stream: true })
      let i
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i)
        buf = buf.slice(i + 2)
        const event = /^event: (.*)$/m.exec(block)
        const data = /^data: (.*)$/m.exec(block)
        if (event && data) events.push({ event: event[1], data: JSON.parse(data[1]) })
      }
      if (events.length >= count) break
    }
  } catch (err) {
    if (err.name !== 'AbortError') throw err
  } finally {
    clearTimeout(timer)
    ac.abort()
  }
  return events
}

async function waitFor(what, fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await fn()
    if (value) return value
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(50)
  }
}

let callerSeq = 0
const newCaller = () => `+1 (604) 77${String(process.pid % 1000).padStart(3, '0')}-${String(++callerSeq).padStart(3, '0')}`

function assertCacheStats(stats) {
  assert.equal(typeof stats.redisEnabled, 'boolean')
  assert.equal(typeof stats.ttlConfig, 'object')
  assert.equal(typeof stats.fallbackMaps, 'object')
  const c = stats.cache
  for (const k of ['hits', 'misses', 'hitRate', 'operations', 'errors']) assert.equal(typeof c[k], 'number', `cache.${k}`)
  for (const k of ['meanMs', 'p50Ms', 'p99Ms']) assert.equal(typeof c.latency[k], 'number', `cache.latency.${k}`)
  assert.ok(['redis', 'memory'].includes(c.mode), `cache.mode = ${c.mode}`)
}

describe('example server with Redis', () => {
  let redis
  let srv
  const logs = []

  before(async () => {
    redis = await startRedis()
    srv = await startServer({ port: 0, adapterOptions: { url: redis.url, enabled: true }, log: (line) => logs.push(line) })
  })

  after(async () => {
    if (srv) await srv.close()
    if (redis) await redis.stop()
  })

  test('binds 127.0.0.1 and logs one line saying it serves from Redis', () => {
    assert.match(srv.url, /^http:\/\/127\.0\.0\.1:\d+$/)
    const startup = logs.filter((l) => /listening on/.test(l))
    assert.equal(startup.length, 1, logs.join('\n'))
    assert.match(startup[0], /serving from Redis/)
    assert.ok(startup[0].includes(redis.url), startup[0])
  })

  test('GET /api/health', async () => {
    const { status, body } = await getJson(srv.url, '/api/health')
    assert.equal(status, 200)
    assert.equal(body.status, 'healthy')
    assert.equal(body.mode, 'redis')
    assert.equal(body.adapter.redis.status, 'healthy')
    assert.equal(body.adapter.adapter.mode, 'redis')
    const alias = await getJson(srv.url, '/api/monitoring/health')
    assert.equal(alias.status, 200)
    assert.equal(alias.body.status, 'healthy')
  })

  test('GET /api/monitoring/health/redis is healthCheck()', async () => {
    const { status, body } = await getJson(srv.url, '/api/monitoring/health/redis')
    assert.equal(status, 200)
    assert.equal(body.status, 'healthy')
    assert.equal(body.redis.status, 'healthy')
    assert.equal(typeof body.redis.latencyMs, 'number')
    assert.equal(body.adapter.redisEnabled, true)
    assert.equal(body.adapter.mode, 'redis')
    assert.equal(typeof body.cache, 'object')
  })

  test('GET /api/cache/stats is getStats()', async () => {
    const { status, body } = await getJson(srv.url, '/api/cache/stats')
    assert.equal(status, 200)
    assertCacheStats(body)
    assert.equal(body.redisEnabled, true)
    assert.equal(body.cache.mode, 'redis')
  })

  test('webhook: a miss reads the 50-100 ms DB, the same call again is a fast hit served by Redis', async () => {
    const caller = newCaller()
    const call = { caller_id: caller, agent_id: 'agent_test', called_number: '+1 778 652 8784' }
    const first = await webhook(srv.url, call)
    assert.equal(first.body.cache, 'miss')
    assert.ok(first.body.dbQueries >= 1)
    assert.ok(first.body.responseTimeMs >= fakeDb.MIN_LATENCY_MS, `miss took ${first.body.responseTimeMs} ms`)
    assert.equal(first.headers.get('x-response-time'), `${first.body.responseTimeMs}ms`)
    assert.equal(first.headers.get('x-cache'), 'miss')
    assert.equal(first.body.type, 'conversation_initiation_client_data')
    const vars = first.body.dynamic_variables
    assert.equal(vars.caller_phone, caller)
    assert.equal(vars.organization_name, 'BICI Bike Store')
    assert.match(vars.lead_id, /^lead-/)
    assert.equal(typeof vars.customer_name, 'string')
    assert.equal(typeof vars.conversation_context, 'string')

    const second = await webhook(srv.url, call)
    assert.equal(second.body.cache, 'hit')
    assert.equal(second.body.dbQueries, 0)
    assert.deepEqual(
      { ...second.body.dynamic_variables, current_time: null },
      { ...vars, current_time: null },
    )
    assert.ok(
      second.body.responseTimeMs < fakeDb.MIN_LATENCY_MS / 2,
      `hit took ${second.body.responseTimeMs} ms; one DB query takes >= ${fakeDb.MIN_LATENCY_MS} ms`,
    )
    assert.match(second.headers.get('x-response-time'), /^\d+(\.\d+)?ms$/)

    // the entries are in Redis, not only in the memory tier
    assert.ok(Number(await redis.cli('dbsize')) >= 3, 'expected the cached lookups in Redis')
  })

  test('webhook: GET works too, a missing caller_id is a 400', async () => {
    const res = await fetch(`${srv.url}${WEBHOOK_PATH}?caller_id=${encodeURIComponent(newCaller())}`)
    assert.equal(res.status, 200)
    assert.equal((await res.json()).type, 'conversation_initiation_client_data')
    const bad = await fetch(srv.url + WEBHOOK_PATH, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    assert.equal(bad.status, 400)
    assert.match((await bad.json()).error, /caller_id/)
    const notJson = await fetch(srv.url + WEBHOOK_PATH, { method: 'POST', body: '{nope' })
    assert.equal(notJson.status, 400)
  })

  test('GET /api/monitoring/metrics is Prometheus text', async () => {
    const res = await fetch(srv.url + '/api/monitoring/metrics')
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
    const text = await res.text()
    assert.match(text, /^# TYPE \S+ (counter|gauge|histogram|summary|untyped)$/m)
    assert.match(text, /^example_webhook_requests_total\{cache="hit"\} [1-9]\d*$/m)
    // the adapter's own series come first, and are more than the example's
    const types = text.split('\n').filter((l) => l.startsWith('# TYPE ') && !l.startsWith('# TYPE example_'))
    assert.ok(types.length >= 1, 'no # TYPE line from adapter.metrics()')
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue
      assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? -?[0-9.e+-]+|NaN|[+-]Inf$/, `bad sample line: ${line}`)
    }
  })

  test('GET /api/monitoring/stream sends stats every second and forgets a client that leaves', async () => {
    const events = await readEvents(srv.url, '/api/monitoring/stream', 3, 6000)
    assert.equal(events[0].event, 'hello')
    assert.ok(Array.isArray(events[0].data.modeLog))
    const stats = events.filter((e) => e.event === 'stats')
    assert.ok(stats.length >= 2, `got ${events.map((e) => e.event)}`)
    const snap = stats[stats.length - 1].data
    assert.equal(snap.mode, 'redis')
    assertCacheStats(snap.stats)
    assert.ok(Array.isArray(snap.samples))
    assert.equal(typeof snap.webhook.window10s.count, 'number')
    const gap = Date.parse(stats[1].data.time) - Date.parse(stats[0].data.time)
    assert.ok(gap >= 500 && gap <= 2500, `events ${gap} ms apart`)
    await waitFor('the stream client to be cleaned up', () => srv.app.clients.size === 0, 3000)
  })

  test('unknown routes are 404 JSON', async () => {
    const { status, body } = await getJson(srv.url, '/nope')
    assert.equal(status, 404)
    assert.match(body.error, /no route/)
  })

  test('dashboard in headless Chromium follows a Redis outage and the recovery', {
    skip: fs.existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent: browser part skipped (apt-get install -y chromium)`,
    timeout: 120_000,
  }, async (t) => {
    const { chromium } = require('playwright-core')
    fs.mkdirSync(SCREENSHOT_DIR, { recursive: true })
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 })
    t.after(() => browser.close())
    const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } })
    const pageErrors = []
    const foreign = []
    page.on('pageerror', (err) => pageErrors.push(err.message))
    page.on('console', (msg) => msg.type() === 'error' && pageErrors.push(msg.text()))
    page.on('request', (req) => {
      const u = new URL(req.url())
      if (u.hostname !== '127.0.0.1') foreign.push(req.url())
    })

    await page.goto(srv.url + '/', { waitUntil: 'load', timeout: 15_000 })
    await page.waitForSelector('#mode-badge[data-mode="redis"]', { timeout: 10_000 })
    assert.equal((await page.textContent('#mode-text')).trim(), 'REDIS')

    // make the graphs move
    await page.check('#simulate')
    await page.waitForFunction(() => /\(hit\)|\(miss\)/.test(document.getElementById('last-call').textContent), null, { timeout: 10_000 })
    await sleep(4000)
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, 'dashboard-redis.png') })

    // outage
    const killedAt = Date.now()
    await redis.kill()
    await page.waitForSelector('#mode-badge[data-mode="memory"]', { timeout: MODE_SWITCH_TIMEOUT_MS })
    const toMemoryMs = Date.now() - killedAt
    assert.equal((await page.textContent('#mode-text')).trim(), 'MEMORY')
    assert.ok(await page.isVisible('#banner'), 'outage banner hidden')
    assert.match(await page.textContent('#mode-log'), /MEMORY/)
    // the webhook keeps answering from memory during the outage
    const during = await webhook(srv.url, { caller_id: newCaller() })
    assert.equal(typeof during.body.responseTimeMs, 'number')
    const health = await getJson(srv.url, '/api/health')
    assert.equal(health.status, 200)
    assert.equal(health.body.status, 'degraded')
    const redisHealth = await getJson(srv.url, '/api/monitoring/health/redis')
    assert.equal(redisHealth.status, 503)
    assert.equal(redisHealth.body.redis.status, 'unhealthy')
    assert.equal(typeof redisHealth.body.redis.error, 'string')
    await sleep(4000)
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, 'dashboard-memory.png') })

    // recovery
    const restartedAt = Date.now()
    await redis.restart()
    await page.waitForSelector('#mode-badge[data-mode="redis"]', { timeout: MODE_SWITCH_TIMEOUT_MS })
    const toRedisMs = Date.now() - restartedAt
    assert.ok(!(await page.isVisible('#banner')), 'outage banner still shown')
    const log = await page.$$eval('#mode-log li', (lis) => lis.map((li) => li.textContent))
    assert.ok(log.length >= 3, `mode log: ${JSON.stringify(log)}`)
    assert.match(log[0], /REDIS/)
    assert.match(log[1], /MEMORY/)
    await sleep(5000)
    await page.uncheck('#simulate')
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, 'dashboard.png'), fullPage: true })

    assert.deepEqual(foreign, [], 'the dashboard must not load anything from elsewhere')
    assert.deepEqual(pageErrors.filter((e) => !/EventSource|ERR_/.test(e)), [], 'errors on the page')
    const modeLines = logs.filter((l) => /cache mode changed/.test(l))
    assert.ok(modeLines.some((l) => /memory/.test(l)) && modeLines.some((l) => /Redis/.test(l)), logs.join('\n'))
    t.diagnostic(`memory badge ${toMemoryMs} ms after the kill, redis badge ${toRedisMs} ms after the restart`)
    t.diagnostic(`screenshots: ${SCREENSHOT_DIR}/dashboard{,-redis,-memory}.png`)
  })
})

describe('example server: the webhook on a slow or down database (read-through)', () => {
  let redis
  let srv
  before(async () => {
    redis = await startRedis()
    // Rows count as fresh for 0.3 s here (30 s in the example), so a test sees them go stale quickly.
    srv = await startServer({ port: 0, adapterOptions: { url: redis.url, alerts: false }, log: () => {}, readThrough: { freshS: 0.3 } })
  })
  after(async () => {
    fakeDb.setMode('normal')
    if (srv) await srv.close()
    if (redis) await redis.stop()
  })

  test('with a warm cache the webhook answers within 100 ms from fallback values, the database slow or down', async () => {
    const caller = { caller_id: '+16045559876', called_number: '+17786528784' }
    await webhook(srv.url, caller) // miss: loads and stores
    await webhook(srv.url, caller) // warm: the mapping path too
    for (const mode of ['slow', 'down']) {
      const set = await fetch(`${srv.url}/api/fake-db/mode?mode=${mode}`, { method: 'POST' })
      assert.equal((await set.json()).mode, mode)
      await sleep(400) // every looked-up row is now stale: only a fallback
      const answers = []
      for (let i = 0; i < 5; i++) answers.push((await webhook(srv.url, caller)).body)
      for (const a of answers) {
        assert.ok(a.responseTimeMs < 100, `database ${mode}: answered in ${a.responseTimeMs} ms`)
        assert.equal(a.dynamic_variables.caller_phone, caller.caller_id)
      }
      assert.ok(answers[0].fallback, `database ${mode}: the first answer came from fallback values`)
    }
    const stats = (await getJson(srv.url, '/api/cache/stats')).body.cache.readThrough
    assert.ok(stats.fallbackServed >= 2, JSON.stringify(stats))
    assert.ok(stats.softTimeouts >= 1, 'the slow database hit the soft timeout')
    assert.ok(stats.failsafeActivations >= 1, 'the down database activated the fail-safe')
    const bad = await fetch(`${srv.url}/api/fake-db/mode?mode=sideways`, { method: 'POST' })
    assert.equal(bad.status, 400)
    const back = await fetch(`${srv.url}/api/fake-db/mode?mode=normal`, { method: 'POST' })
    assert.equal((await back.json()).mode, 'normal')
  })

  test('the dashboard switches the database and shows fallback values served', {
    skip: fs.existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent: browser part skipped (apt-get install -y chromium)`,
    timeout: 60_000,
  }, async (t) => {
    const { chromium } = require('playwright-core')
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 })
    t.after(() => browser.close())
    const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } })
    await page.goto(srv.url + '/', { waitUntil: 'load', timeout: 15_000 })
    const served = () => page.evaluate(() => Number(document.getElementById('t-fallback').textContent.replace(/,/g, '')))
    await page.waitForFunction(() => /\d/.test(document.getElementById('t-fallback').textContent), null, { timeout: 10_000 })
    await page.check('#simulate') // warms the regular callers' entries
    await sleep(3000)
    const before = await served()
    await page.click('[data-db="down"]')
    await page.waitForFunction(() => document.getElementById('db-mode').textContent === 'down', null, { timeout: 10_000 })
    await page.waitForFunction((n) => Number(document.getElementById('t-fallback').textContent.replace(/,/g, '')) > n, before, { timeout: 20_000 })
    await page.uncheck('#simulate')
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, 'dashboard-db-down.png') })
    await page.click('[data-db="normal"]')
    await page.waitForFunction(() => document.getElementById('db-mode').textContent === 'normal', null, { timeout: 10_000 })
  })
})

describe('example server with an unreachable Redis', () => {
  let srv
  const logs = []

  before(async () => {
    const deadPort = await freePort() // nobody listens there
    srv = await startServer({
      port: 0,
      adapterOptions: { url: `redis://127.0.0.1:${deadPort}`, enabled: true },
      initialModeWaitMs: 1000,
      log: (line) => logs.push(line),
    })
  })

  after(async () => {
    if (srv) await srv.close()
  })

  test('starts, says it serves from memory, and serves the webhook from memory', async () => {
    const startup = logs.filter((l) => /listening on/.test(l))
    assert.equal(startup.length, 1, logs.join('\n'))
    assert.match(startup[0], /serving from memory/)

    const call = { caller_id: newCaller() }
    const first = await webhook(srv.url, call)
    assert.equal(first.body.cache, 'miss')
    const second = await webhook(srv.url, call)
    assert.equal(second.body.cache, 'hit')
    assert.equal(second.body.dbQueries, 0)
    assert.ok(
      second.body.responseTimeMs < fakeDb.MIN_LATENCY_MS,
      `hit from memory took ${second.body.responseTimeMs} ms`,
    )

    const stats = await getJson(srv.url, '/api/cache/stats')
    assertCacheStats(stats.body)
    assert.equal(stats.body.cache.mode, 'memory')
    const health = await getJson(srv.url, '/api/health')
    assert.equal(health.status, 200)
    assert.equal(health.body.status, 'degraded')
    assert.equal(health.body.mode, 'memory')
    const redisHealth = await getJson(srv.url, '/api/monitoring/health/redis')
    assert.equal(redisHealth.status, 503)
    assert.equal(redisHealth.body.redis.status, 'unhealthy')
    assert.equal(redisHealth.body.adapter.mode, 'memory')
    const [hello] = await readEvents(srv.url, '/api/monitoring/stream', 1)
    assert.equal(hello.data.mode, 'memory')
  })
})

describe('node examples/server.js', () => {
  test('starts from the environment and shuts down cleanly on SIGTERM', { timeout: 30_000 }, async () => {
    const env = { ...process.env, PORT: '0', HOST: '127.0.0.1', REDIS_ENABLED: 'false' }
    delete env.REDIS_URL
    const child = spawn(process.execPath, [path.join(__dirname, '..', 'examples', 'server.js')], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
    try {
      const url = await waitFor('the startup line', () => (/listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out) || [])[1], 10_000)
      assert.match(out, /serving from memory \(Redis disabled/)
      const { body } = await webhook(url, { caller_id: newCaller() })
      assert.equal(body.cache, 'miss')
      // an open SSE client must not hold the shutdown up
      const ac = new AbortController()
      const stream = await fetch(url + '/api/monitoring/stream', { signal: ac.signal })
      assert.equal(stream.status, 200)
      child.kill('SIGTERM')
      const result = await Promise.race([exited, sleep(10_000).then(() => null)])
      ac.abort()
      assert.ok(result, `still running 10 s after SIGTERM:\n${out}`)
      assert.deepEqual(result, { code: 0, signal: null }, out)
      assert.match(out, /closed/)
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
  })
})
