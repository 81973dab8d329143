'use strict'
/**
 * The outage journal (issue #9): counters replay as deltas, gaps in the
 * journal leave tombstones so Redis's older value never comes back, the
 * journal is bounded by bytes too, and close() makes one bounded attempt to
 * replay and says what it could not.
 *
 * Real redis-servers; faults by SIGSTOP (the server keeps its data, so an
 * old value could come back), SIGKILL and restart. Every wait is bounded.
 */
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { startRedis } = require('./helpers/redis')
const { sleep, guard, until } = require('./helpers/wait')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')

let seq = 0
const uniquePrefix = () => `jrn-${process.pid}-${++seq}`
const redisKey = (prefix, key) => `${prefix}:kv:${key}`

/** The breaker opens on the first timeout, and probes again soon. */
const FAST = { commandTimeoutMs: 100, connectTimeoutMs: 300, breakerFailures: 1, breakerCooldownMs: 500 }

const cacheStats = async (adapter) => (await guard(adapter.getStats(), 3000, 'getStats')).cache

/** Waits until the adapter serves from Redis and its journal is empty (tombstones too). */
async function waitReplayed(adapter, ms, what) {
  return until(
    async () => {
      const s = await cacheStats(adapter)
      const empty = s.replay.pending === 0 && !s.replay.tombstones
      return s.mode === 'redis' && s.breaker.state === 'closed' && empty ? s : null
    },
    ms,
    `${what}: mode 'redis', breaker closed, nothing left to replay`,
  )
}

async function waitMode(adapter, mode, ms, what) {
  return until(async () => ((await cacheStats(adapter)).mode === mode ? true : null), ms, what)
}

async function closeAll(adapters, servers) {
  for (const a of adapters) await guard(a.close(), 10000, 'adapter.close()').catch(() => {})
  for (const s of servers) {
    s.resume?.()
    await s.stop().catch(() => {})
  }
}

// A value in the adapter's format is 0xFE, a codec byte, 8 bytes of write time, then the payload.
const PAYLOAD = `local v = redis.call('GET', KEYS[1])
if not v then return '(nil)' end
if string.byte(v, 1) == 254 and string.byte(v, 2) == 1 then return string.sub(v, 11) end
return '(other)' .. v`
const payload = (server, prefix, key) => server.cli('eval', PAYLOAD, 1, redisKey(prefix, key))

/**
 * Stalls Redis and opens the adapter's breaker with a read, so that the
 * writes that follow never reach Redis. (A write whose round trip timed out
 * is still applied when a SIGSTOPped Redis resumes: it would blur what the
 * replay did.)
 */
async function stall(server, adapter) {
  server.pause()
  await guard(adapter.get('breaker-opener'), 2000, 'the read that opens the breaker')
  assert.equal((await cacheStats(adapter)).mode, 'memory', 'test setup: the breaker is open')
}

test('an increment during a stall is replayed as a delta: B counted to 100, A added 1, B reads 101', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const a = new CacheAdapter({ url: server.url, keyPrefix, ...FAST })
  const b = new CacheAdapter({ url: server.url, keyPrefix, ...FAST })
  try {
    await waitReplayed(a, 10000, 'A connects')
    await waitReplayed(b, 10000, 'B connects')
    for (let i = 1; i <= 100; i++) assert.equal(await b.increment('hits'), i)
    const ttlBefore = Number(await server.cli('pttl', redisKey(keyPrefix, 'hits')))
    assert.ok(ttlBefore > 0, `the counter has a TTL in Redis (${ttlBefore})`)

    await stall(server, a)
    // A has never seen the counter: memory counts from 0 (documented).
    const during = await guard(a.increment('hits'), 2000, 'A increments during the stall')
    assert.equal(during, 1, "A's caller gets memory's count while Redis is away")
    assert.equal((await cacheStats(a)).mode, 'memory')
    await sleep(1000)
    server.resume()

    await waitReplayed(a, 15000, 'A replays')
    assert.equal(await b.get('hits'), 101, 'the replay added A\'s increment to the shared counter')
    assert.equal(await a.get('hits'), 101)
    const ttlAfter = Number(await server.cli('pttl', redisKey(keyPrefix, 'hits')))
    assert.ok(ttlAfter > 0 && ttlAfter <= ttlBefore, `Redis's TTL is kept (${ttlAfter} <= ${ttlBefore})`)
    assert.equal(await b.increment('hits'), 102)
  } finally {
    await closeAll([a, b], [server])
  }
})

test('increments, then a set, then increments during an outage replay as one set; delete then increment too', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const a = new CacheAdapter({ url: server.url, keyPrefix, ...FAST })
  try {
    await waitReplayed(a, 10000, 'connect')
    assert.equal(await a.increment('n', 40), 40)
    assert.equal(await a.increment('gone', 7), 7)
    await stall(server, a)
    assert.equal(await a.increment('n', 5), 45)
    assert.equal(await a.set('n', 10), true)
    assert.equal(await a.increment('n', 2), 12)
    assert.equal(await a.delete('gone'), true)
    assert.equal(await a.increment('gone', 3), 3)
    server.resume()
    await waitReplayed(a, 15000, 'replay')
    assert.equal(await payload(server, keyPrefix, 'n'), '12', 'the set superseded the deltas; later increments added to it')
    assert.equal(await payload(server, keyPrefix, 'gone'), '3', 'a delete then an increment counts from 0')
  } finally {
    await closeAll([a], [server])
  }
})

test('replayMaxEntries: 1 — the journal drops k, yet after recovery k never reads its pre-outage value', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const a = new CacheAdapter({ url: server.url, keyPrefix, ...FAST, replayMaxEntries: 1 })
  try {
    await waitReplayed(a, 10000, 'connect')
    assert.equal(await a.set('k', 'v1', 600), true)
    assert.equal(await payload(server, keyPrefix, 'k'), '"v1"', 'Redis has v1')

    await stall(server, a)
    assert.equal(await a.set('k', 'v2', 600), true)
    assert.equal(await a.set('k2', 'w2', 600), true)
    assert.equal(await a.get('k'), 'v2', 'memory still answers the newest value during the outage')
    const s = await cacheStats(a)
    assert.ok(s.replay.dropped >= 1, `k's entry was dropped and counted (${s.replay.dropped})`)
    server.resume()

    await waitReplayed(a, 15000, 'replay')
    assert.notEqual(await a.get('k'), 'v1', 'the pre-outage value did not come back')
    assert.notEqual(await payload(server, keyPrefix, 'k'), '"v1"', 'Redis no longer holds v1')
    assert.equal(await a.get('k2'), 'w2')
  } finally {
    await closeAll([a], [server])
  }
})

test('a value that expired during the outage does not bring back Redis\'s older value', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const a = new CacheAdapter({ url: server.url, keyPrefix, ...FAST })
  try {
    await waitReplayed(a, 10000, 'connect')
    assert.equal(await a.set('e', 'v1', 600), true)
    await stall(server, a)
    assert.equal(await a.set('e', 'v2', 0.5), true)
    await sleep(1000)
    assert.equal(await a.get('e'), null, 'expired in memory')
    server.resume()
    await waitReplayed(a, 15000, 'replay')
    assert.equal(await a.get('e'), null, 'still a miss after recovery, not v1')
    assert.equal(await payload(server, keyPrefix, 'e'), '(nil)')
  } finally {
    await closeAll([a], [server])
  }
})

test('replayMaxBytes bounds the journal by its JSON bytes; the oldest become tombstones', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const maxBytes = 50_000
  // Uncompressed, so that the test can read the payloads in Redis.
  const a = new CacheAdapter({ url: server.url, keyPrefix, ...FAST, replayMaxBytes: maxBytes, compressionThreshold: 1 << 20 })
  try {
    await waitReplayed(a, 10000, 'connect')
    for (let i = 0; i < 20; i++) assert.equal(await a.set(`b:${i}`, 'old', 600), true)
    await stall(server, a)
    const big = 'x'.repeat(10_000)
    for (let i = 0; i < 20; i++) assert.equal(await guard(a.set(`b:${i}`, `${i}${big}`, 600), 2000, `set b:${i}`), true)
    const s = await cacheStats(a)
    assert.equal(s.replay.maxBytes, maxBytes)
    assert.ok(s.replay.bytes <= maxBytes, `journal bytes ${s.replay.bytes} <= ${maxBytes}`)
    assert.ok(s.replay.pending >= 3 && s.replay.pending <= 5, `3 to 5 values of 10 KB fit (pending ${s.replay.pending})`)
    assert.equal(s.replay.pending + s.replay.dropped, 20, 'every write is pending or counted as dropped')
    server.resume()

    await waitReplayed(a, 15000, 'replay')
    for (let i = 0; i < 20; i++) {
      const p = await payload(server, keyPrefix, `b:${i}`)
      assert.notEqual(p, '"old"', `b:${i} does not read its pre-outage value`)
      if (i >= 20 - s.replay.pending) assert.ok(p === JSON.stringify(`${i}${big}`), `b:${i}, kept, was replayed (${p.slice(0, 20)})`)
    }
  } finally {
    await closeAll([a], [server])
  }
})

test('replayMaxBytes: default half of memoryMaxBytes, environment name, bad values rejected by name', async () => {
  const s1 = await new CacheAdapter({ enabled: false, memoryMaxBytes: 1 << 20 }).getStats()
  assert.equal(s1.cache.replay.maxBytes, 1 << 19)
  assert.throws(() => new CacheAdapter({ enabled: false, replayMaxBytes: 0 }), (e) => e instanceof RangeError && /replayMaxBytes/.test(e.message))
  assert.throws(() => new CacheAdapter({ enabled: false, replayMaxBytes: 'x' }), (e) => e instanceof TypeError && /replayMaxBytes/.test(e.message))
  process.env.CACHE_REPLAY_MAX_BYTES = '123456'
  try {
    const s2 = await new CacheAdapter({ enabled: false }).getStats()
    assert.equal(s2.cache.replay.maxBytes, 123456)
  } finally {
    delete process.env.CACHE_REPLAY_MAX_BYTES
  }
})

test('close() with Redis back but not yet replayed: one bounded attempt writes the journal back', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  // A long cooldown: the supervisor would not probe for a minute.
  const a = new CacheAdapter({ url: server.url, keyPrefix, ...FAST, breakerCooldownMs: 60000 })
  try {
    await waitReplayed(a, 10000, 'connect')
    assert.equal(await a.set('gone', 'old', 600), true)
    assert.equal(await a.increment('count', 10), 10)
    await stall(server, a)
    for (let i = 0; i < 10; i++) assert.equal(await a.set(`c:${i}`, i, 600), true)
    assert.equal(await a.delete('gone'), true)
    assert.equal(await a.increment('count', 5), 15)
    assert.equal((await cacheStats(a)).replay.pending, 12)
    server.resume()
    await sleep(200)
    assert.equal((await cacheStats(a)).mode, 'memory', 'test setup: the breaker is still open')

    const result = await guard(a.close(), 5000, 'close()')
    assert.deepStrictEqual(result, { unreplayed: 0 })
    for (let i = 0; i < 10; i++) assert.equal(await payload(server, keyPrefix, `c:${i}`), String(i), `c:${i} in Redis after close()`)
    assert.equal(await payload(server, keyPrefix, 'gone'), '(nil)', 'the delete was replayed')
    assert.equal(await payload(server, keyPrefix, 'count'), '15', 'the increment was replayed as a delta')
  } finally {
    await closeAll([a], [server])
  }
})

test('close() with Redis still down: bounded, resolves to the count of writes not replayed, and warns', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const a = new CacheAdapter({ url: server.url, keyPrefix, ...FAST })
  const warnings = []
  const onWarning = (w) => warnings.push(w)
  process.on('warning', onWarning)
  try {
    await waitReplayed(a, 10000, 'connect')
    await server.kill('SIGKILL')
    for (let i = 0; i < 7; i++) assert.equal(await guard(a.set(`d:${i}`, i, 600), 2000, `set d:${i}`), true)
    const t0 = Date.now()
    const result = await guard(a.close(), 10000, 'close()')
    const ms = Date.now() - t0
    assert.deepStrictEqual(result, { unreplayed: 7 })
    assert.ok(ms < 4000, `close() is bounded (${ms} ms)`)
    await until(() => warnings.find((w) => /7 writes/.test(w.message)), 2000, 'a warning naming the count')
    const w = warnings.find((w) => /7 writes/.test(w.message))
    assert.equal(w.code, 'CACHE_UNREPLAYED_WRITES')
    assert.ok(!/d:\d/.test(w.message), 'the warning names no key or value')
    assert.deepStrictEqual(await a.close(), { unreplayed: 7 }, 'close() is idempotent')
  } finally {
    process.off('warning', onWarning)
    await closeAll([a], [server])
  }
})

test('close() against a stalled Redis (SIGSTOP) is bounded too', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const a = new CacheAdapter({ url: server.url, keyPrefix, ...FAST, breakerCooldownMs: 60000 })
  const onWarning = () => {}
  process.on('warning', onWarning)
  try {
    await waitReplayed(a, 10000, 'connect')
    server.pause()
    for (let i = 0; i < 3; i++) assert.equal(await guard(a.set(`s:${i}`, i, 600), 2000, `set s:${i}`), true)
    const t0 = Date.now()
    const result = await guard(a.close(), 10000, 'close()')
    const ms = Date.now() - t0
    assert.deepStrictEqual(result, { unreplayed: 3 })
    assert.ok(ms < 4000, `close() is bounded (${ms} ms)`)
  } finally {
    process.off('warning', onWarning)
    await closeAll([a], [server])
  }
})
