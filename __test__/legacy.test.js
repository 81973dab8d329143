'use strict'
/**
 * The old adapter's stats and health fields (API.md, "The old adapter's stats
 * and health fields"), read the way the voice-agent server's consumers read
 * them: its `/api/cache/stats` and `/api/health` handlers and its deployment
 * checks. On Redis, with Redis killed, after Redis comes back, and memory-only.
 */
const { describe, test } = require('node:test')
const assert = require('node:assert/strict')
const { startRedis, redisForFile } = require('./helpers/redis')
const { guard, until, sleep } = require('./helpers/wait')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')

const LEGACY_MAPS = [
  'activeConversations',
  'inflightRequests',
  'humanControlSessions',
  'humanControlQueue',
  'pendingDatabaseWrites',
  'conversationMetadata',
  'activeCallSessions',
]

const server = redisForFile()
let seq = 0


async function make(t, redis, opts = {}) {
  const keyPrefix = `legacy-${process.pid}-${++seq}`
  const adapter = new CacheAdapter({ url: redis.url, keyPrefix, ...opts })
  t.after(() => guard(adapter.close(), 5000, 'close()'))
  if (opts.enabled !== false) {
    await until(async () => (await guard(adapter.healthCheck(), 3000, 'healthCheck')).redis.status === 'healthy', 5000, 'Redis healthy')
  }
  return { adapter, keyPrefix }
}

/** What the old server's `/api/cache/stats` handler did with `getStats()`. */
function cacheStatsRoute(stats) {
  return {
    hitRate: parseFloat(stats.cache.redis.hitRate),
    avgResponseMs: parseFloat(stats.cache.redis.avgResponseTime),
    connected: stats.cache.redis.isConnected === true,
    attempts: stats.cache.redis.connectionAttempts,
    redisErrors: stats.cache.redis.errors,
    fallbackSize: stats.cache.fallback.size,
    fallbackOn: stats.cache.fallback.enabled,
    prefix: stats.cache.config.keyPrefix,
    mapSizes: LEGACY_MAPS.map((name) => stats.fallbackMaps[name]),
  }
}

/** Asserts every old `getStats()` field has the old type and format. */
function assertLegacyStats(stats) {
  for (const name of LEGACY_MAPS) {
    assert.equal(typeof stats.fallbackMaps[name], 'number', `fallbackMaps.${name}`)
    assert.ok(Number.isInteger(stats.fallbackMaps[name]) && stats.fallbackMaps[name] >= 0, `fallbackMaps.${name}`)
  }
  const r = stats.cache.redis
  for (const f of ['hits', 'misses', 'errors', 'connectionAttempts']) {
    assert.ok(Number.isInteger(r[f]) && r[f] >= 0, `cache.redis.${f} = ${r[f]}`)
  }
  assert.match(r.hitRate, /^\d{1,3}\.\d\d%$/, 'cache.redis.hitRate')
  assert.match(r.avgResponseTime, /^\d+\.\d\dms$/, 'cache.redis.avgResponseTime')
  assert.equal(typeof r.isConnected, 'boolean', 'cache.redis.isConnected')
  const total = r.hits + r.misses
  assert.equal(r.hitRate, `${(total === 0 ? 0 : (r.hits / total) * 100).toFixed(2)}%`, 'hitRate from hits and misses')
  assert.deepStrictEqual(Object.keys(stats.cache.fallback).sort(), ['enabled', 'size'])
  assert.ok(Number.isInteger(stats.cache.fallback.size))
  assert.equal(stats.cache.fallback.enabled, true)
  assert.equal(typeof stats.cache.config.keyPrefix, 'string')
  assert.ok(stats.cache.config.keyPrefix.endsWith(':'), `keyPrefix ${stats.cache.config.keyPrefix} ends with ':'`)
  assert.equal(typeof stats.cache.config.defaultTTL, 'number')
  assert.equal(typeof stats.cache.config.compressionThreshold, 'number')
  // The new fields are all still there, with their own types.
  for (const f of ['hits', 'misses', 'hitRate', 'operations', 'errors', 'redisErrors']) assert.equal(typeof stats.cache[f], 'number', `cache.${f}`)
  assert.equal(typeof stats.cache.entriesByKind, 'object')
  assert.equal(typeof stats.fallbackMaps.conversationContexts, 'number', 'per-kind counts stay')
}

/** Asserts the old `healthCheck()` fields; returns `cache.redis` for further checks. */
function assertLegacyHealth(h, { redisUp }) {
  assert.ok(Number.isInteger(h.adapter.fallbackMaps) && h.adapter.fallbackMaps >= LEGACY_MAPS.length, `adapter.fallbackMaps = ${h.adapter.fallbackMaps}`)
  const r = h.cache.redis
  if (redisUp) {
    assert.equal(r.status, 'healthy')
    assert.match(r.responseTime, /^\d+ms$/, 'cache.redis.responseTime')
    assert.match(r.memory, /^\d+MB$/, 'cache.redis.memory')
    assert.equal(r.error, undefined)
  } else {
    assert.equal(r.status, 'unhealthy')
    assert.equal(typeof r.error, 'string')
    assert.ok(r.error.length > 0, 'unhealthy says why')
  }
  assert.deepStrictEqual(Object.keys(h.cache.cache).sort(), ['fallbackEnabled', 'fallbackSize', 'status'])
  assert.equal(h.cache.cache.fallbackEnabled, true)
  assert.ok(Number.isInteger(h.cache.cache.fallbackSize) && h.cache.cache.fallbackSize >= 0)
  // The new report stays as it was.
  assert.equal(typeof h.redis.status, 'string')
  assert.equal(typeof h.cache.hits, 'number')
  assert.equal(typeof h.adapter.mode, 'string')
  return r
}

describe("the old adapter's getStats() fields", () => {
  test('on Redis: the seven maps, redis metrics, fallback and config, with their old types and formats', async (t) => {
    const { adapter, keyPrefix } = await make(t, server)
    await adapter.set('a', { v: 1 })
    await adapter.get('a')
    await adapter.get('a')
    await adapter.get('missing')
    await adapter.setConversationContext('org-1', '+15550001', [{ role: 'user', content: 'hi' }])
    let release
    adapter.setInflightRequest('req-1', new Promise((resolve) => (release = resolve)))
    adapter.setHumanControlSession('org-1', '+15550001', { agent: 'sam' })
    adapter.setHumanControlSession(null, '+15550002', { agent: 'kim' })

    const stats = await adapter.getStats()
    assertLegacyStats(stats)
    const route = cacheStatsRoute(stats)
    assert.equal(route.connected, true, 'isConnected on a healthy Redis')
    assert.ok(route.attempts >= 1, 'the first connect counts as an attempt')
    assert.deepStrictEqual(route.mapSizes, [0, 1, 2, 0, 0, 0, 0], 'inflightRequests 1, humanControlSessions 2, the rest kept by no map')
    assert.equal(route.prefix, `${keyPrefix}:`)
    assert.equal(stats.cache.config.defaultTTL, 7200)
    assert.equal(stats.cache.config.compressionThreshold, 1024)
    assert.equal(stats.cache.redis.hits, stats.cache.hits)
    assert.equal(stats.cache.redis.misses, stats.cache.misses)
    assert.ok(stats.cache.redis.hits >= 2 && stats.cache.redis.misses >= 1)
    assert.ok(route.hitRate > 0 && route.hitRate < 100)
    assert.ok(route.avgResponseMs > 0, 'calls were timed')
    assert.equal(route.fallbackSize, stats.cache.memory.entries)
    assert.ok(route.fallbackSize >= 2, 'written through to the memory tier')
    assert.equal(stats.fallbackMaps.conversationContexts, 1)

    release()
    await until(async () => (await adapter.getStats()).fallbackMaps.inflightRequests === 0, 2000, 'a settled request is forgotten')
  })

  test("the default keyPrefix reads as the old one did: 'jack:dev:'", async (t) => {
    const saved = process.env.NODE_ENV
    delete process.env.NODE_ENV
    t.after(() => {
      if (saved !== undefined) process.env.NODE_ENV = saved
    })
    const adapter = new CacheAdapter({ enabled: false })
    t.after(() => adapter.close())
    assert.equal((await adapter.getStats()).cache.config.keyPrefix, 'jack:dev:')
    process.env.NODE_ENV = 'production'
    const prod = new CacheAdapter({ enabled: false })
    t.after(() => prod.close())
    assert.equal((await prod.getStats()).cache.config.keyPrefix, 'jack:prod:')
    const given = new CacheAdapter({ enabled: false, keyPrefix: 'app:' })
    t.after(() => given.close())
    assert.equal((await given.getStats()).cache.config.keyPrefix, 'app:', 'no second colon')
  })
})

describe("the old adapter's healthCheck() fields", () => {
  test('on Redis: responseTime from a PING, memory from INFO memory', async (t) => {
    const { adapter } = await make(t, server)
    await adapter.set('x', 'y')
    const h = await adapter.healthCheck()
    const r = assertLegacyHealth(h, { redisUp: true })
    assert.equal(h.cache.cache.status, 'healthy')
    assert.ok(h.cache.cache.fallbackSize >= 1)
    // The server's own figure, read the way the old adapter read it.
    const info = await server.cli('info', 'memory')
    const used = Number(/used_memory:(\d+)/.exec(info)[1])
    assert.ok(Math.abs(parseInt(r.memory, 10) - Math.round(used / 1024 / 1024)) <= 1, `${r.memory} vs used_memory ${used}`)
    assert.ok(parseInt(r.responseTime, 10) < 1000)
    // The old suite's and the old deployment check's reads.
    assert.equal(h.redis.status, 'healthy')
    assert.ok(h.cache.redis.status === 'healthy' && h.cache.cache.status === 'healthy', 'deployment check passes')
  })
})

describe('with Redis down, and back', () => {
  test('killed: unhealthy with the reason, not connected, still serving from memory; restarted: healthy again', async (t) => {
    const own = await startRedis()
    t.after(() => own.stop())
    const { adapter } = await make(t, own, { commandTimeoutMs: 100, connectTimeoutMs: 200, breakerFailures: 1, breakerCooldownMs: 200 })
    assert.equal(await adapter.set('before', 1), true)
    const up = await adapter.getStats()
    assert.equal(up.cache.redis.isConnected, true)

    await own.kill()
    // Calls keep answering (from memory) while the breaker finds out.
    assert.equal(await guard(adapter.set('during', { v: 2 }), 5000, 'set with Redis down'), true)
    const h = await until(
      async () => {
        const r = await guard(adapter.healthCheck(), 5000, 'healthCheck')
        return r.redis.status === 'unhealthy' ? r : null
      },
      8000,
      "redis.status 'unhealthy'",
    )
    const r = assertLegacyHealth(h, { redisUp: false })
    assert.equal(r.responseTime, undefined, 'no PING time without a PING')
    assert.equal(r.memory, undefined, 'no INFO without Redis')
    assert.equal(h.cache.cache.status, 'healthy', 'the cache layer still answers, from memory')
    assert.ok(h.cache.cache.fallbackSize >= 1)
    assert.equal(h.status, 'degraded')

    const down = await adapter.getStats()
    assertLegacyStats(down)
    assert.equal(down.cache.redis.isConnected, false)
    assert.ok(down.cache.redis.errors > up.cache.redis.errors, 'failed round trips counted')
    // The supervisor keeps probing after each cooldown: each probe is an attempt.
    await until(async () => (await adapter.getStats()).cache.redis.connectionAttempts >= down.cache.redis.connectionAttempts + 2, 5000, 'probes counted')
    assert.deepStrictEqual(await adapter.get('during'), { v: 2 })

    await own.restart()
    await until(async () => (await guard(adapter.healthCheck(), 5000, 'healthCheck')).cache.redis.status === 'healthy', 8000, 'healthy again')
    const back = await adapter.healthCheck()
    assertLegacyHealth(back, { redisUp: true })
    assert.equal((await adapter.getStats()).cache.redis.isConnected, true)
  })

  test('memory-only (enabled: false): Redis unhealthy because disabled, the cache layer healthy', async (t) => {
    const { adapter } = await make(t, server, { enabled: false })
    await adapter.set('m', 1)
    const h = await adapter.healthCheck()
    assertLegacyHealth(h, { redisUp: false })
    assert.match(h.cache.redis.error, /disabled/)
    assert.equal(h.cache.cache.status, 'healthy')
    const stats = await adapter.getStats()
    assertLegacyStats(stats)
    assert.equal(stats.cache.redis.isConnected, false)
    assert.equal(stats.cache.redis.connectionAttempts, 0)
  })

  test('closed: the cache layer reports unhealthy', async (t) => {
    const adapter = new CacheAdapter({ enabled: false })
    await adapter.close()
    const h = await adapter.healthCheck()
    assert.equal(h.cache.cache.status, 'unhealthy')
    assert.equal(h.cache.redis.status, 'unhealthy')
    await sleep(0)
  })
})
