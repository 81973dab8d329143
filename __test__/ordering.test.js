'use strict'
/**
 * Order and age: no late write, late reply or reordered call may leave an
 * older value where a newer one was acknowledged (issue #9). Each test
 * reproduces a case that broke that promise, against a real redis-server,
 * with the fault made real: a paused server, or a proxy that holds bytes.
 */
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { startRedis } = require('./helpers/redis')
const { startProxy } = require('./helpers/proxy')
const { sleep, guard, until } = require('./helpers/wait')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')

let seq = 0
const uniquePrefix = () => `ord-${process.pid}-${++seq}`

async function redisReady(adapter, ms = 10000) {
  return until(async () => (await adapter.getStats()).cache.mode === 'redis', ms, 'adapter serving from Redis')
}

/** The JSON payload Redis holds under a generic key ('(nil)' if none). */
async function payload(server, prefix, key) {
  const script = `local v = redis.call('GET', KEYS[1])
if not v then return '(nil)' end
if string.byte(v, 1) == 254 then return string.sub(v, 11) end
return v`
  return server.cli('eval', script, 1, `${prefix}:kv:${key}`)
}

test('a write that reaches Redis late (held by the path) never overwrites a newer acknowledged write', async (t) => {
  const server = await startRedis()
  const proxy = await startProxy(server.port)
  const prefix = uniquePrefix()
  const common = { keyPrefix: prefix, commandTimeoutMs: 200, connectTimeoutMs: 500, breakerFailures: 1 }
  const a = new CacheAdapter({ ...common, url: proxy.url, poolSize: 1, breakerCooldownMs: 60000 })
  const b = new CacheAdapter({ ...common, url: server.url })
  t.after(async () => {
    await Promise.all([a.close(), b.close()])
    await proxy.stop()
    await server.stop()
  })
  await Promise.all([redisReady(a), redisReady(b)])
  assert.equal(await a.set('k', 'v0'), true)

  assert.ok(proxy.hold() >= 1, 'the adapter has a connection to hold')
  // A's write leaves on the socket and times out: A keeps it in memory and journals it.
  assert.equal(await guard(a.set('k', 'v1'), 3000, 'set v1'), true)
  await sleep(5) // a later wall-clock millisecond
  // Meanwhile another instance writes a newer value, acknowledged by Redis.
  assert.equal(await b.set('k', 'v2'), true)
  assert.equal(await payload(server, prefix, 'k'), '"v2"')

  // The held bytes arrive now: the old SET must not win.
  proxy.release()
  await sleep(300)
  assert.equal(await payload(server, prefix, 'k'), '"v2"', 'Redis still holds the newer write')
  assert.equal(await b.get('k'), 'v2', 'the other instance reads the newer write')
})

test('a late reply never closes the open breaker, and never puts its older value over a newer journaled write', async (t) => {
  const server = await startRedis()
  const prefix = uniquePrefix()
  const a = new CacheAdapter({
    url: server.url,
    keyPrefix: prefix,
    commandTimeoutMs: 600,
    connectTimeoutMs: 500,
    breakerFailures: 1,
    breakerCooldownMs: 2500,
  })
  t.after(async () => {
    server.resume()
    await a.close()
    await server.stop()
  })
  await redisReady(a)
  assert.equal(await a.set('k', 'v0'), true)

  server.pause()
  const failing = a.get('other') // times out: opens the breaker
  await sleep(300)
  const late = a.set('k', 'v1') // in flight when the breaker opens
  assert.equal(await guard(failing, 3000, 'the failing read'), null)
  assert.equal((await a.getStats()).cache.breaker.state, 'open')
  assert.equal(await a.set('k', 'v2'), true, 'acknowledged from memory, journaled')
  server.resume()
  assert.equal(await guard(late, 3000, 'the late set'), true)

  // Only the probe (after the cooldown) may close the breaker.
  const s = (await a.getStats()).cache
  assert.notEqual(s.breaker.state, 'closed', 'a late reply closed the breaker without a probe')
  assert.equal(await a.get('k'), 'v2', 'memory still holds the newer, journaled write')

  await until(async () => {
    const c = (await a.getStats()).cache
    return c.mode === 'redis' && c.replay.pending === 0
  }, 10000, 'probe and replay')
  assert.equal(await payload(server, prefix, 'k'), '"v2"')
  assert.equal(await a.get('k'), 'v2')

  // And in the next outage, memory answers with the newer value too.
  server.pause()
  await a.get('other')
  await until(async () => (await a.getStats()).cache.breaker.state === 'open', 3000, 'breaker open')
  assert.equal(await a.get('k'), 'v2', 'the next outage reads the last acknowledged value')
})

test('calls keep their order within a tick: a tenant clear followed by a set of that tenant keeps the set', async (t) => {
  const server = await startRedis()
  const prefix = uniquePrefix()
  const a = new CacheAdapter({ url: server.url, keyPrefix: prefix })
  const mem = new CacheAdapter({ enabled: false, keyPrefix: prefix })
  t.after(async () => {
    await Promise.all([a.close(), mem.close()])
    await server.stop()
  })
  await redisReady(a)
  for (const adapter of [a, mem]) {
    await adapter.setConversationContext('org-1', '+1 555 0100', [{ n: 1 }])
    const [cleared, stored] = await Promise.all([
      adapter.clearOrganizationCache('org-1'),
      adapter.setConversationContext('org-1', '+1 555 0101', [{ n: 2 }]),
    ])
    assert.equal(cleared, 1, 'the clear removed what was written before it')
    assert.equal(stored, true)
    assert.deepEqual(await adapter.getConversationContext('org-1', '+1 555 0101'), [{ n: 2 }], 'the later set survives')
    assert.equal(await adapter.getConversationContext('org-1', '+1 555 0100'), null)
  }
})

test('a tenant clear in a tick of over 32 calls clears every call before it and none after it', async (t) => {
  // A batch runs as chunks of 32 calls side by side: unless a batch holding a
  // clear runs whole, the calls after the clear in a later chunk are sent
  // while it scans, and it removes them.
  const server = await startRedis()
  const prefix = uniquePrefix()
  const a = new CacheAdapter({ url: server.url, keyPrefix: prefix })
  t.after(async () => {
    await a.close()
    await server.stop()
  })
  await redisReady(a)
  const phone = (i) => `+1 555 ${1000 + i}`
  const before = Array.from({ length: 20 }, (_, i) => a.setConversationContext('org-1', phone(i), [{ i }]))
  const clear = a.clearOrganizationCache('org-1')
  const after = Array.from({ length: 20 }, (_, i) => a.setConversationContext('org-1', phone(100 + i), [{ i: 100 + i }]))
  const [cleared] = await guard(Promise.all([clear, ...before, ...after]), 5000, 'the tick')
  assert.equal(cleared, 20, 'the clear removed the 20 keys written before it, and only those')
  for (let i = 0; i < 20; i++) {
    assert.equal(await a.getConversationContext('org-1', phone(i)), null, `a set before the clear survived it (${i})`)
    assert.deepEqual(await a.getConversationContext('org-1', phone(100 + i)), [{ i: 100 + i }], `a set after the clear was cleared (${i})`)
  }
})

test('a tenant clear waits for the writes of earlier ticks to land, even when their connection is held', async (t) => {
  // The writes go on both pooled connections; the clear scans on one. Each
  // round holds one connection's commands in the proxy while the clear is
  // made in the next tick: in one of the two rounds the clear's connection
  // is free, and a clear that did not wait would scan before the held
  // writes reach Redis, and leave them.
  const server = await startRedis()
  const proxy = await startProxy(server.port)
  const prefix = uniquePrefix()
  const a = new CacheAdapter({ url: proxy.url, keyPrefix: prefix, poolSize: 2, commandTimeoutMs: 3000 })
  t.after(async () => {
    await a.close()
    await proxy.stop()
    await server.stop()
  })
  await redisReady(a)
  await until(async () => (await a.getStats()).cache.pool.connections >= 2, 5000, 'both pooled connections up')
  const ports = await server.clientPorts((line) => / cmd=(?!client)/.test(line) && !/ name=cache-/.test(line))
  assert.equal(ports.length, 2, `two pooled connections (${ports})`)
  for (let round = 0; round < 2; round++) {
    const org = `org-${round}`
    const phone = (i) => `+1 555 ${2000 + i}`
    assert.equal(proxy.hold(Infinity, { except: [ports[round]] }), 1, 'one connection held')
    const writes = Array.from({ length: 16 }, (_, i) => a.setConversationContext(org, phone(i), [{ i }]))
    await new Promise((resolve) => setImmediate(resolve)) // the writes' tick is submitted
    const clear = a.clearOrganizationCache(org)
    await sleep(150)
    proxy.release()
    const [cleared] = await guard(Promise.all([clear, ...writes]), 5000, `round ${round}`)
    assert.equal(cleared, 16, `round ${round}: the clear removed ${cleared} of the 16 writes made before it`)
    for (let i = 0; i < 16; i++) assert.equal(await a.getConversationContext(org, phone(i)), null, `round ${round}: write ${i} survived`)
  }
})

test('a load that was under way when a write of its key was acknowledged never stores its older result over that write', async (t) => {
  const server = await startRedis()
  const prefix = uniquePrefix()
  const onRedis = new CacheAdapter({ url: server.url, keyPrefix: prefix })
  const inMemory = new CacheAdapter({ enabled: false, keyPrefix: prefix })
  t.after(async () => {
    await Promise.all([onRedis.close(), inMemory.close()])
    await server.stop()
  })
  await redisReady(onRedis)
  const shapes = [
    ['a TTL (the native single-flight)', 60],
    ['read-through options', { ttl: 60, grace: 60 }],
  ]
  for (const adapter of [onRedis, inMemory]) {
    for (const [what, third] of shapes) {
      const key = `raced:${seq++}`
      let finishLoad
      const load = new Promise((resolve) => (finishLoad = resolve))
      const loading = adapter.getOrLoad(key, () => load, third)
      await sleep(20) // the loader is running: it read the database before the write below
      assert.equal(await adapter.set(key, 'written'), true)
      finishLoad('loaded before the write')
      assert.equal(await guard(loading, 3000, 'the load'), 'loaded before the write', `${what}: its caller asked before the write`)
      assert.equal(await adapter.get(key), 'written', `${what}: the acknowledged write stays`)
      assert.equal(await adapter.getOrLoad(key, async () => 'a new load', third), 'written', `${what}: and is what later loads find`)
    }
  }
  // invalidateTags while a tagged load is under way: the load's result is not stored afterwards.
  {
    let finish
    const slow = new Promise((resolve) => (finish = resolve))
    const reload = onRedis.getOrLoad('tagged-2', () => slow, { ttl: 60, grace: 60, tags: ['lead:2'] })
    await sleep(20)
    await onRedis.invalidateTags(['lead:2'])
    finish('loaded before the invalidation')
    assert.equal(await guard(reload, 3000, 'the tagged load'), 'loaded before the invalidation')
    assert.equal(await onRedis.get('tagged-2'), null, 'what the invalidation removed stays removed')
  }
  // getOrLoadMany: a key written while loadMany runs keeps that write.
  let finishMany
  const many = new Promise((resolve) => (finishMany = resolve))
  const loadingMany = onRedis.getOrLoadMany(['m1', 'm2'], () => many, { ttl: 60 })
  await sleep(20)
  await onRedis.set('m1', 'written')
  finishMany({ m1: 'loaded', m2: 'loaded' })
  await guard(loadingMany, 3000, 'getOrLoadMany')
  assert.equal(await onRedis.get('m1'), 'written')
  assert.equal(await onRedis.get('m2'), 'loaded')
})

test('a read made after an acknowledged write never shares a read that was sent before it', async (t) => {
  // Two connections, one of them held: a read of `k` is stuck on it. A write of `k` is then made and
  // acknowledged; a read made after that acknowledgement must see the write, not share the stuck read
  // (which Redis would answer with the older value once the path delivers it).
  const server = await startRedis()
  const proxy = await startProxy(server.port)
  const prefix = uniquePrefix()
  const a = new CacheAdapter({ keyPrefix: prefix, url: proxy.url, poolSize: 2, commandTimeoutMs: 5000, alerts: false })
  t.after(async () => {
    await a.close()
    await proxy.stop()
    await server.stop()
  })
  await redisReady(a)
  await until(async () => (await a.getStats()).cache.pool.connections === 2, 5000, 'both connections open')
  const keys = Array.from({ length: 16 }, (_, i) => `k${i}`)
  assert.equal(await a.setMany(keys.map((k) => [k, 'v1'])), true)

  // Its commands reach Redis and run; only the replies are held (a reply late on the path).
  assert.equal(proxy.hold(1, { repliesOnly: true }), 1, 'one connection held')
  // One read per tick: a tick's calls are answered together, so they would all wait for the held part.
  const stuck = new Map()
  for (const k of keys) {
    stuck.set(k, a.get(k))
    await new Promise((resolve) => setImmediate(resolve))
  }
  const settled = new Set()
  for (const [k, p] of stuck) p.then(() => settled.add(k))
  await sleep(200)
  const held = keys.filter((k) => !settled.has(k))
  assert.ok(held.length > 0 && held.length < keys.length, `reads spread over both connections: ${held.length} held`)

  // Deliver what was held in a moment, so that the stuck reads (and whatever shared them) settle.
  const releasing = sleep(300).then(() => proxy.release())
  const results = []
  // Also one write per tick, so that without routing by key some would go out on the other connection.
  const tick = () => new Promise((resolve) => setImmediate(resolve))
  await guard(
    Promise.all(
      held.map(async (k, i) => {
        for (let n = 0; n < i; n++) await tick()
        assert.equal(await a.set(k, 'v2'), true)
        results.push([k, await a.get(k)])
      }),
    ),
    6000,
    'the writes and the reads after them',
  )
  await releasing
  for (const p of stuck.values()) await guard(p, 6000, 'a held read')
  const stale = results.filter(([, v]) => v !== 'v2')
  assert.deepEqual(stale, [], 'a read after the acknowledged write returned the older value')
  for (const k of held) assert.equal(await a.get(k), 'v2')
})
