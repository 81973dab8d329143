'use strict'
/**
 * Read-through (issue #11): fail-safe, soft and hard timeouts, throttling,
 * eager refresh, tags across instances, the distributed lock, getOrLoadMany
 * and wrap, each against a real Redis and again with Redis down (a port with
 * nothing listening: the adapter serves from memory) or disabled.
 *
 * Every loop is bounded in count and time; timing assertions have wide
 * margins (two shared cores).
 */
const { describe, test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { performance } = require('node:perf_hooks')
const { startRedis, freePort } = require('./helpers/redis')
const { sleep, guard, until } = require('./helpers/wait')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')

let seq = 0
const uniquePrefix = () => `rt-${process.pid}-${++seq}`
const FAST = { commandTimeoutMs: 200, connectTimeoutMs: 300, breakerFailures: 3, breakerCooldownMs: 500, alerts: false }

let redis
let deadUrl
before(async () => {
  redis = await startRedis()
  deadUrl = `redis://127.0.0.1:${await freePort()}`
})
after(async () => {
  await redis?.stop()
})

/** The three ways to run a scenario: a real Redis, Redis configured but down, Redis disabled. */
const MODES = {
  redis: () => ({ url: redis.url }),
  down: () => ({ url: deadUrl }),
  disabled: () => ({ enabled: false }),
}

function open(t, mode, extra = {}) {
  const adapter = new CacheAdapter({ ...FAST, keyPrefix: extra.keyPrefix ?? uniquePrefix(), ...MODES[mode](), ...extra })
  t.after(() => guard(adapter.close(), 10000, 'close'))
  return adapter
}

/** Waits until the adapters serve from Redis (a fresh adapter serves from memory until it has connected). */
const ready = (...adapters) =>
  Promise.all(adapters.map((a) => until(async () => (await a.getStats()).cache.mode === 'redis', 5000, 'connected to Redis')))

const rt = async (adapter) => (await adapter.getStats()).cache.readThrough

async function timed(fn) {
  const t0 = performance.now()
  try {
    return { value: await fn(), ms: performance.now() - t0 }
  } catch (error) {
    return { error, ms: performance.now() - t0 }
  }
}

const never = () => new Promise(() => {})

for (const mode of ['redis', 'down', 'disabled']) {
  describe(`read-through, Redis ${mode}`, () => {
    test('fail-safe: a throwing loader gets the last value within grace; without one, the error; then the key is throttled', async (t) => {
      const a = open(t, mode, { failSafeThrottleMs: 400 })
      const opts = { ttl: 0.3, grace: 30 }
      assert.deepStrictEqual(await a.getOrLoad('lead', async () => ({ v: 1 }), opts), { v: 1 })
      await sleep(400) // logically expired, physically kept for the grace
      assert.deepStrictEqual(await a.get('lead'), { v: 1 }, 'plain get reads the bare value of an envelope')
      const boom = Object.assign(new Error('db down'), { code: 'ECONNREFUSED' })
      let calls = 0
      const failing = async () => {
        calls++
        throw boom
      }
      const served = await guard(Promise.all(Array.from({ length: 10 }, () => a.getOrLoad('lead', failing, opts))), 5000, 'fail-safe')
      served.forEach((v) => assert.deepStrictEqual(v, { v: 1 }))
      assert.equal(calls, 1, 'concurrent callers share one loader call')
      let s = await rt(a)
      assert.equal(s.failsafeActivations, 1)
      assert.ok(s.fallbackServed >= 10, `fallbackServed ${s.fallbackServed}`)

      // Throttled: within failSafeThrottleMs the loader is not called again.
      let later = 0
      const working = async () => ({ v: 2, n: ++later })
      assert.deepStrictEqual(await a.getOrLoad('lead', working, opts), { v: 1 })
      assert.equal(later, 0, 'throttled: the loader was not called')
      s = await rt(a)
      assert.equal(s.throttledLoads, 1)
      await sleep(450)
      assert.deepStrictEqual(await a.getOrLoad('lead', working, opts), { v: 2, n: 1 }, 'after the throttle window the loader runs')

      // No fallback: the caller gets the loader's error, as thrown.
      await assert.rejects(a.getOrLoad('no-fallback', failing, opts), (e) => e === boom)
    })

    test('fail-safe: a hanging loader is cut at hardTimeoutMs; with a fallback the caller gets it, without one ERR_CACHE_LOADER', async (t) => {
      const a = open(t, mode, { failSafeThrottleMs: 100 })
      const opts = { ttl: 0.2, grace: 30, hardTimeoutMs: 300 }
      await a.getOrLoad('k', () => 'old', opts)
      await sleep(300)
      const r = await timed(() => guard(a.getOrLoad('k', never, opts), 5000, 'hanging loader'))
      assert.equal(r.value, 'old')
      assert.ok(r.ms >= 250 && r.ms < 2000, `answered after ${r.ms} ms`)
      const s = await rt(a)
      assert.equal(s.hardTimeouts, 1)
      assert.equal(s.failsafeActivations, 1)
      const miss = await timed(() => guard(a.getOrLoad('other', never, opts), 5000, 'hanging loader, no fallback'))
      assert.equal(miss.error?.code, 'ERR_CACHE_LOADER')
      assert.match(miss.error.message, /did not settle within 300 ms/)
      await sleep(150)
      assert.equal(await a.getOrLoad('other', () => 'fine', opts), 'fine', 'the key loads again after a hard timeout')
    })

    test('soft timeout: the fallback at once, then the background result lands in the cache', async (t) => {
      const a = open(t, mode)
      const opts = { ttl: 0.2, grace: 60, softTimeoutMs: 50, hardTimeoutMs: 5000 }
      await a.getOrLoad('ctx', () => 'v1', opts)
      await sleep(300)
      let calls = 0
      const slow = () => new Promise((resolve) => setTimeout(() => resolve(`v2-${++calls}`), 400))
      const r = await timed(() => a.getOrLoad('ctx', slow, opts))
      assert.equal(r.value, 'v1')
      assert.ok(r.ms < 350, `the fallback came after ${r.ms} ms, not at the soft timeout`)
      await until(async () => (await a.get('ctx')) === 'v2-1', 5000, 'the background result lands')
      assert.equal(await a.getOrLoad('ctx', slow, opts), 'v2-1', 'now fresh: no load')
      assert.equal(calls, 1)
      const s = await rt(a)
      assert.equal(s.softTimeouts, 1)
      assert.equal(s.backgroundRefreshes, 1)
      assert.equal(s.fallbackServed, 1)
      // Without a fallback the soft timeout does not apply: the caller waits for the value.
      const fresh = await timed(() => a.getOrLoad('cold', slow, opts))
      assert.equal(fresh.value, 'v2-2')
      assert.ok(fresh.ms >= 350, `${fresh.ms}`)
    })

    test('eager refresh: 50 concurrent callers past the refresh point get the cached value and start one loader call', async (t) => {
      const a = open(t, mode)
      const opts = { ttl: 1, grace: 10, eagerRefresh: 0.5 }
      await a.getOrLoad('hot', () => 'v1', opts)
      await sleep(600)
      let calls = 0
      const loader = () => new Promise((resolve) => setTimeout(() => resolve(`v2-${++calls}`), 1000))
      const r = await timed(() => Promise.all(Array.from({ length: 50 }, () => a.getOrLoad('hot', loader, opts))))
      r.value.forEach((v) => assert.equal(v, 'v1'))
      assert.ok(r.ms < 900, `hits waited for the 1 s refresh (${r.ms} ms)`)
      await until(async () => (await a.get('hot')) === 'v2-1', 5000, 'the refreshed value lands')
      assert.equal(calls, 1, 'one loader call for 50 callers')
      assert.equal((await rt(a)).backgroundRefreshes, 1)
      assert.equal(await a.getOrLoad('hot', loader, opts), 'v2-1', 'fresh again: no refresh')
      await sleep(50)
      assert.equal(calls, 1)
    })

    test('getOrLoadMany: 50 overlapping concurrent callers, each missing key loaded once, hits read in one batch', async (t) => {
      const a = open(t, mode)
      const batches = []
      const loadMany = async (keys) => {
        batches.push(keys)
        await sleep(50)
        return new Map(keys.map((k) => [k, { id: k }]))
      }
      const wants = Array.from({ length: 50 }, (_, i) => Array.from({ length: 10 }, (_, j) => `k${i + j}`))
      const results = await guard(Promise.all(wants.map((keys) => a.getOrLoadMany(keys, loadMany, { ttl: 60 }))), 10000, 'getOrLoadMany x50')
      results.forEach((values, i) => assert.deepStrictEqual(values, wants[i].map((k) => ({ id: k }))))
      const loaded = batches.flat()
      assert.equal(new Set(loaded).size, loaded.length, 'no key loaded twice')
      assert.equal(loaded.length, 59, 'every distinct key loaded')
      assert.ok(batches.length <= 50 && batches.every((b) => b.length > 0), `${batches.length} loadMany calls`)
      assert.equal(batches[0].length, 10, 'the first caller loads all its missing keys in one call')
      // All hits now: no loadMany call.
      const before = batches.length
      assert.deepStrictEqual(await a.getOrLoadMany(['k0', 'k58', 'k0'], loadMany, { ttl: 60 }), [{ id: 'k0' }, { id: 'k58' }, { id: 'k0' }])
      assert.equal(batches.length, before)
      // Missing keys: one call with exactly those; a key loadMany leaves out is undefined and not cached.
      const partial = await a.getOrLoadMany(['k0', 'n1', 'n2'], async (keys) => (batches.push(keys), { n1: 'one' }), { ttl: 60 })
      assert.deepStrictEqual(partial, [{ id: 'k0' }, 'one', undefined])
      assert.deepStrictEqual(batches.at(-1), ['n1', 'n2'])
      assert.equal(await a.get('n2'), null)
      // Fail-safe per key.
      await a.getOrLoadMany(['g1'], async () => ({ g1: 'old' }), { ttl: 0.2, grace: 30 })
      await sleep(300)
      const safe = await a.getOrLoadMany(['g1', 'g2'], async () => Promise.reject(new Error('down')), { ttl: 0.2, grace: 30 }).catch((e) => e)
      assert.ok(safe instanceof Error, 'g2 has no fallback: the call rejects')
      assert.deepStrictEqual(await a.getOrLoadMany(['g1'], async () => Promise.reject(new Error('down')), { ttl: 0.2, grace: 30 }), ['old'])
    })

    test('wrap: a memoised async function with the read-through options', async (t) => {
      const a = open(t, mode)
      let calls = 0
      const findLead = async (org, phone) => ({ org, phone, n: ++calls })
      const cached = a.wrap(findLead, { key: (org, phone) => `lead:${org}:${phone}`, ttl: 60, grace: 60, tags: ['leads'] })
      const [x, y] = await Promise.all([cached('o1', '+1'), cached('o1', '+1')])
      assert.deepStrictEqual(x, { org: 'o1', phone: '+1', n: 1 })
      assert.deepStrictEqual(y, x)
      assert.deepStrictEqual(await cached('o1', '+1'), x)
      assert.deepStrictEqual(await a.get('lead:o1:+1'), x)
      assert.equal(calls, 1)
      assert.equal(await a.invalidateTags(['leads']), 1)
      assert.equal((await cached('o1', '+1')).n, 2)
      assert.throws(() => a.wrap('nope'), TypeError)
      assert.throws(() => a.wrap(findLead, { grace: -1 }), /options.grace/)
    })

    test('tags: set, domain setters and getOrLoad tag entries; invalidateTags removes them, soft keeps them as fallbacks', async (t) => {
      const a = open(t, mode)
      await a.set('plain', 1, { ttl: 60, tags: ['lead:7'] })
      await a.setDynamicLead('7', { name: 'Ann' }, { tags: ['lead:7'] })
      await a.setPhoneToLeadMapping('+15550007', '7', { tags: ['lead:7'] })
      await a.getOrLoad('summary:7', (key, ctx) => {
        ctx.tags.push('lead:7') // the loader tags what it returns
        ctx.ttl = 120
        return 'sum'
      }, { ttl: 60, grace: 10 })
      await a.set('other', 2, { ttl: 60, tags: ['lead:8'] })
      assert.equal(await a.invalidateTags(['lead:7', 'nothing']), 5, 'plain, lead, both mapping keys, summary')
      assert.equal(await a.get('plain'), null)
      assert.equal(await a.getDynamicLead('7'), null)
      assert.equal(await a.getPhoneToLeadMapping('+15550007'), null)
      assert.equal(await a.get('summary:7'), null)
      assert.equal(await a.get('other'), 2, 'other tags are untouched')
      assert.equal(await a.invalidateTags('lead:7'), 0)

      // Soft: still readable and still a fail-safe fallback, but stale (the next getOrLoad loads).
      const opts = { ttl: 60, grace: 60, tags: ['org:1'] }
      await a.getOrLoad('cfg', () => 'v1', opts)
      assert.equal(await a.invalidateTags(['org:1'], { soft: true }), 1)
      assert.equal(await a.get('cfg'), 'v1')
      assert.equal(await a.getOrLoad('cfg', () => Promise.reject(new Error('down')), opts), 'v1', 'fail-safe on the stale value')
      const s = await rt(a)
      assert.equal(s.tagInvalidations, 4, 'tags invalidated: 2 + 1 + 1')
      assert.equal(s.tagInvalidatedEntries, 6)

      await assert.rejects(a.invalidateTags([1]), TypeError)
      await assert.rejects(a.invalidateTags(['x'], { soft: 'yes' }), /options.soft/)
      await assert.rejects(a.set('k', 1, { ttl: 60, tags: 'x' }), /options.tags must be an array/)
      await assert.rejects(a.set('k', 1, { ttl: 60, nope: 1 }), /options.nope/)
    })

    test('bad options: a TypeError or RangeError naming the option, nothing loaded', async (t) => {
      const a = open(t, mode)
      let calls = 0
      const loader = () => ++calls
      const cases = [
        [{ ttl: 60, grace: 'x' }, TypeError, /options.grace/],
        [{ ttl: 60, grace: -1 }, RangeError, /options.grace/],
        [{ ttl: 60, softTimeoutMs: 0 }, RangeError, /options.softTimeoutMs/],
        [{ ttl: 60, hardTimeoutMs: 'x' }, TypeError, /options.hardTimeoutMs/],
        [{ ttl: 60, eagerRefresh: 1.5 }, RangeError, /options.eagerRefresh/],
        [{ ttl: 60, tags: [1] }, TypeError, /options.tags\[0\]/],
        [{ ttl: 0 }, RangeError, /options.ttl/],
        [{ ttl: 60, nope: 1 }, TypeError, /options.nope/],
        ['60', TypeError, /ttl/],
      ]
      for (const [opts, Class, message] of cases) {
        await assert.rejects(a.getOrLoad('k', loader, opts), (e) => e instanceof Class && message.test(e.message), JSON.stringify(opts))
      }
      await assert.rejects(a.getOrLoadMany('k', loader), /keys must be an array/)
      await assert.rejects(a.getOrLoadMany(['k'], 'f'), /loadMany must be a function/)
      assert.equal(calls, 0)
    })
  })
}

describe('read-through across instances (real Redis)', () => {
  test('tags: an invalidation on one instance removes the entries another wrote, in Redis and in its memory tier', async (t) => {
    const keyPrefix = uniquePrefix()
    const a = open(t, 'redis', { keyPrefix })
    const b = open(t, 'redis', { keyPrefix })
    await ready(a, b)
    await b.getOrLoad('lead:9:summary', () => 'sum', { ttl: 60, grace: 60, tags: ['lead:9'] })
    await b.setConversationContext('org', '+1555', [{ m: 1 }], { tags: ['lead:9'] })
    await a.set('lead:9:note', 'n', { ttl: 60, tags: ['lead:9'] })
    assert.ok((await redis.cli('SMEMBERS', `${keyPrefix}:tag:lead%3A9`)).includes(`${keyPrefix}:kv:lead:9:summary`))
    assert.equal(await a.invalidateTags(['lead:9']), 3)
    assert.equal(await b.get('lead:9:summary'), null)
    assert.equal(await b.getConversationContext('org', '+1555'), null)
    assert.equal(await redis.cli('EXISTS', `${keyPrefix}:tag:lead%3A9`), '0', 'the tag set is gone too')
    // B's memory tier lost them as well: B in memory mode would not serve them (it has the tag in its index,
    // and A's deletes went through Redis; B deletes on its own invalidation).
    assert.equal(await b.invalidateTags(['lead:9']), 0)

    // Soft, across instances: B's entry is stale for A's read-through, still a fallback.
    await b.getOrLoad('cfg', () => 'v1', { ttl: 60, grace: 60, tags: ['t'] })
    assert.equal(await a.invalidateTags(['t'], { soft: true }), 1)
    let calls = 0
    assert.equal(await a.getOrLoad('cfg', () => `v2-${++calls}`, { ttl: 60, grace: 60 }), 'v2-1', 'stale: loaded again')
    await b.getOrLoad('cfg2', () => 'w1', { ttl: 60, grace: 60, tags: ['t'] })
    await a.invalidateTags(['t'], { soft: true })
    assert.equal(await b.getOrLoad('cfg2', () => Promise.reject(new Error('down')), { ttl: 60, grace: 60 }), 'w1')
  })

  test('distributed lock: three instances, one loader call; the others wait for its value', async (t) => {
    const keyPrefix = uniquePrefix()
    const adapters = [0, 1, 2].map(() => open(t, 'redis', { keyPrefix, distributedLock: true }))
    await ready(...adapters)
    let calls = 0
    const loader = () => new Promise((resolve) => setTimeout(() => resolve({ lead: 1, call: ++calls }), 300))
    const values = await guard(
      Promise.all(adapters.flatMap((a) => [a.getOrLoad('lead', loader, { ttl: 60 }), a.getOrLoad('lead', loader, { ttl: 60 })])),
      10000,
      'three instances',
    )
    values.forEach((v) => assert.deepStrictEqual(v, { lead: 1, call: 1 }))
    assert.equal(calls, 1, 'one loader call across three instances')
    let waits = 0
    for (const a of adapters) waits += (await rt(a)).lockWaits
    assert.equal(waits, 2)
    assert.equal(await redis.cli('EXISTS', `${keyPrefix}:lock:lead`), '0', 'the lock was released')
  })

  test('distributed lock with getOrLoadMany: three instances, overlapping keys, each key loaded once across them', async (t) => {
    const keyPrefix = uniquePrefix()
    const adapters = [0, 1, 2].map(() => open(t, 'redis', { keyPrefix, distributedLock: true }))
    await ready(...adapters)
    const loaded = []
    const loadMany = (keys) =>
      new Promise((resolve) => {
        loaded.push(...keys)
        setTimeout(() => resolve(new Map(keys.map((k) => [k, { k }]))), 300)
      })
    // Instance i asks for keys i..i+3 of k0..k5: every key but the ends is asked by two or three instances.
    const asks = adapters.map((a, i) => ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'].slice(i, i + 4))
    const values = await guard(Promise.all(adapters.map((a, i) => a.getOrLoadMany(asks[i], loadMany, { ttl: 60 }))), 10000, 'three instances')
    values.forEach((vs, i) => assert.deepStrictEqual(vs, asks[i].map((k) => ({ k })), `instance ${i}`))
    assert.deepStrictEqual(loaded.sort(), ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'], 'each key loaded once across the instances')
    let waits = 0
    for (const a of adapters) waits += (await rt(a)).lockWaits
    assert.ok(waits >= 4, `the others waited for the holders' values (${waits} waits)`)
    assert.equal(await redis.cli('KEYS', `${keyPrefix}:lock:*`), '', 'every lock was released')
  })

  test('distributed lock: a dead holder blocks nobody past its lock TTL; one of the survivors loads', async (t) => {
    const keyPrefix = uniquePrefix()
    const holder = new CacheAdapter({ ...FAST, url: redis.url, keyPrefix, distributedLock: true, lockTtlMs: 600 })
    await ready(holder)
    const held = holder.getOrLoad('k', never, { ttl: 60, hardTimeoutMs: 1500 }).catch((e) => e)
    await until(async () => (await redis.cli('EXISTS', `${keyPrefix}:lock:k`)) === '1', 3000, 'the holder takes the lock')
    await guard(holder.close(), 10000, 'close the holder') // it dies holding the lock
    const survivors = [0, 1].map(() => open(t, 'redis', { keyPrefix, distributedLock: true, lockTtlMs: 600, lockWaitMs: 4000 }))
    await ready(...survivors)
    let calls = 0
    const loader = () => new Promise((resolve) => setTimeout(() => resolve(`v-${++calls}`), 100))
    const r = await timed(() => guard(Promise.all(survivors.map((a) => a.getOrLoad('k', loader, { ttl: 60 }))), 10000, 'survivors'))
    assert.deepStrictEqual(r.value, ['v-1', 'v-1'])
    assert.equal(calls, 1)
    assert.ok(r.ms < 3000, `${r.ms} ms`)
    assert.equal((await held).code, 'ERR_CACHE_LOADER')
  })

  for (const mode of ['down', 'disabled']) {
    test(`distributed lock with Redis ${mode}: each instance loads once on its own, nobody waits`, async (t) => {
      const keyPrefix = uniquePrefix()
      const adapters = [0, 1, 2].map(() => open(t, mode, { keyPrefix, distributedLock: true }))
      let calls = 0
      const loader = async () => `v-${++calls}`
      const r = await timed(() => guard(Promise.all(adapters.flatMap((a) => [a.getOrLoad('k', loader, { ttl: 60 }), a.getOrLoad('k', loader, { ttl: 60 })])), 5000, 'no Redis'))
      assert.equal(calls, 3, 'one call per instance')
      assert.ok(r.ms < 2000, `${r.ms} ms`)
    })
  }

  test('a value refreshed during an outage is journaled and replayed; plain get reads its bare value', async (t) => {
    const server = await startRedis()
    t.after(() => server.stop())
    const keyPrefix = uniquePrefix()
    const a = new CacheAdapter({ ...FAST, url: server.url, keyPrefix })
    t.after(() => guard(a.close(), 10000, 'close'))
    const opts = { ttl: 0.3, grace: 600 }
    await a.getOrLoad('k', () => 'v1', opts)
    await server.kill()
    await sleep(400)
    assert.equal(await a.getOrLoad('k', () => 'v2', opts), 'v2', 'refreshed from memory during the outage')
    await server.restart()
    await until(async () => {
      const s = (await a.getStats()).cache
      return s.mode === 'redis' && s.replay.pending === 0
    }, 15000, 'replay')
    const b = new CacheAdapter({ ...FAST, url: server.url, keyPrefix })
    t.after(() => guard(b.close(), 10000, 'close b'))
    await until(async () => (await b.get('k')) === 'v2', 5000, 'the replayed value in Redis')
    const raw = await server.cli('GET', `${keyPrefix}:kv:k`)
    assert.match(raw, /u0000rt/, 'stored as an envelope')
  })
  test('a tagged write made during an outage is replayed with its tags: invalidateTags afterwards finds it', async (t) => {
    const server = await startRedis()
    t.after(() => server.stop())
    const keyPrefix = uniquePrefix()
    const a = new CacheAdapter({ ...FAST, url: server.url, keyPrefix })
    t.after(() => guard(a.close(), 10000, 'close'))
    await until(async () => (await a.getStats()).cache.mode === 'redis', 5000, 'connected')
    await server.kill()
    assert.equal(await a.set('lead:5:note', 'n', { ttl: 60, tags: ['lead:5'] }), true)
    assert.equal(await a.getOrLoad('lead:5:summary', () => 'sum', { ttl: 60, grace: 60, tags: ['lead:5'] }), 'sum')
    await server.restart()
    await until(async () => {
      const s = (await a.getStats()).cache
      return s.mode === 'redis' && s.replay.pending === 0
    }, 15000, 'replay')
    assert.equal(await server.cli('EXISTS', `${keyPrefix}:kv:lead:5:note`), '1', 'the value was replayed')

    // Another instance (which never saw those writes) invalidates the tag: both go, from Redis.
    const b = new CacheAdapter({ ...FAST, url: server.url, keyPrefix })
    t.after(() => guard(b.close(), 10000, 'close b'))
    await until(async () => (await b.getStats()).cache.mode === 'redis', 5000, 'b connected')
    assert.equal(await b.invalidateTags(['lead:5']), 2)
    assert.equal(await server.cli('EXISTS', `${keyPrefix}:kv:lead:5:note`, `${keyPrefix}:kv:lead:5:summary`), '0')
    assert.equal(await a.get('lead:5:note'), null)
  })
})

describe('metrics', () => {
  test('getStats().cache.readThrough and the Prometheus names', async (t) => {
    const a = open(t, 'disabled')
    await a.getOrLoad('m', () => 1, { ttl: 60, grace: 1 })
    const text = await a.metrics()
    for (const name of [
      'cache_failsafe_activations_total',
      'cache_fallback_served_total',
      'cache_soft_timeouts_total',
      'cache_hard_timeouts_total',
      'cache_background_refreshes_total',
      'cache_throttled_loads_total',
      'cache_lock_waits_total',
      'cache_tag_invalidations_total',
      'cache_loader_duration_seconds_bucket',
      'cache_loader_duration_seconds_count 1',
    ]) {
      assert.ok(text.includes(name), name)
    }
    assert.equal((await rt(a)).loaderCalls, 1)
  })
})
