'use strict'
/**
 * The near cache (option `nearCache`): repeated reads answered in process,
 * and never stale once another writer's write was acknowledged 100 ms ago.
 *
 * Faults are real: two adapters on one redis-server, writes by `redis-cli`,
 * `CLIENT KILL` of the invalidation link, a SIGSTOPped and a killed Redis.
 * Every loop is bounded in count and in time.
 */
const { test } = require('node:test')
const { performance } = require('node:perf_hooks')
const assert = require('node:assert/strict')
const { startRedis } = require('./helpers/redis')
const { sleep, guard, until } = require('./helpers/wait')
const { STALE_BOUND_MS, nearStats, ready, freshWithinBound, linkIds, rounds: sharedRounds } = require('./helpers/near')
const { startProxy } = require('./helpers/proxy')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')

let seq = 0
const uniquePrefix = () => `near-${process.pid}-${++seq}`

function adapter(server, prefix, near, extra = {}) {
  return new CacheAdapter({ url: `redis://127.0.0.1:${server.port}`, keyPrefix: prefix, nearCache: near, alerts: false, ...extra })
}

/** A redis-server of its own and one adapter on it, ready; both end with the test. */
async function oneAdapter(t, near, extra) {
  const server = await startRedis()
  t.after(() => server.kill())
  const a = adapter(server, uniquePrefix(), near, extra)
  t.after(() => a.close())
  await ready(a, 'adapter')
  return { server, a }
}

/**
 * A redis-server of its own and two adapters on one prefix, ready, `a` with
 * the near cache on and `b` with it on unless `nearB` is false; all end with the test.
 */
async function twoAdapters(t, nearB = true) {
  const server = await startRedis()
  t.after(() => server.kill())
  const prefix = uniquePrefix()
  const a = adapter(server, prefix, true)
  const b = adapter(server, prefix, nearB)
  t.after(() => Promise.all([a.close(), b.close()]))
  await ready(a, 'a')
  await ready(b, 'b')
  return { server, prefix, a, b }
}

/** The shared 50 rounds (helpers/near.js) on one server, each run under a prefix of its own. */
function rounds(server, near, { kill = false } = {}) {
  const prefix = uniquePrefix()
  return sharedRounds({ makeAdapter: (n) => adapter(server, prefix, n), near, kill, servers: () => [server], links: 2 })
}

test('two adapters, 50 rounds: a read is never stale 100 ms after the other\'s acknowledged write', async (t) => {
  const server = await startRedis()
  t.after(() => server.kill())
  for (const near of [true, false]) {
    const { firstReadFresh } = await rounds(server, near)
    t.diagnostic(`near ${near}: first read after the write already fresh in ${firstReadFresh}/50 rounds`)
  }
})

test('CLIENT KILL of the invalidation links mid-run: flushed, bypassed, back, never stale', async (t) => {
  const server = await startRedis()
  t.after(() => server.kill())
  const { stats } = await rounds(server, true, { kill: true })
  assert.ok(stats.flushes >= 1)
  assert.equal(stats.linkUp, true, 'the link came back')
})

test('writes by redis-cli (any client) invalidate', async (t) => {
  const server = await startRedis()
  t.after(() => server.kill())
  const prefix = uniquePrefix()
  const a = adapter(server, prefix, true)
  t.after(() => a.close())
  await ready(a, 'adapter')
  await a.set('k', 'mine')
  assert.equal(await a.get('k'), 'mine')
  const before = await nearStats(a)
  assert.equal(await a.get('k'), 'mine')
  assert.equal((await nearStats(a)).hits, before.hits + 1, 'the second read was a near hit')
  await server.cli('set', `${prefix}:kv:k`, '"from-cli"')
  await freshWithinBound(() => a.get('k'), 'from-cli', 'SET by redis-cli')
  await a.get('k')
  await server.cli('del', `${prefix}:kv:k`)
  await freshWithinBound(() => a.get('k'), null, 'DEL by redis-cli')
  // FLUSHDB sends a null key: everything goes.
  await a.set('k2', 1)
  await a.get('k2')
  await a.get('k2')
  const flushes = (await nearStats(a)).flushes
  await server.cli('flushdb')
  await freshWithinBound(() => a.get('k2'), null, 'FLUSHDB')
  assert.ok((await nearStats(a)).flushes > flushes)
})

test('a value handed to a caller can be mutated without changing the next read', async (t) => {
  const { a } = await oneAdapter(t, true)
  await a.setConversationContext('org', '+1 555', [{ role: 'user', content: 'hi' }])
  await a.getConversationContext('org', '+1 555')
  const hits = (await nearStats(a)).hits
  const first = await a.getConversationContext('org', '+1 555')
  first[0].content = 'mutated'
  first.push({ role: 'evil' })
  const second = await a.getConversationContext('org', '+1 555')
  assert.deepEqual(second, [{ role: 'user', content: 'hi' }])
  assert.notEqual(first, second)
  assert.equal((await nearStats(a)).hits, hits + 2, 'both reads were near hits')
})

test('deletes, tenant clears, expiry and own writes invalidate', async (t) => {
  const { a, b } = await twoAdapters(t)

  // Own writes: read-your-writes, even in the same tick as the read.
  await a.set('own', 1)
  await a.get('own')
  assert.equal(await a.get('own'), 1)
  const [, sameTick] = await Promise.all([a.set('own', 2), a.get('own')])
  assert.equal(sameTick, 2, 'a read queued after a write in the same tick')
  assert.equal(await a.get('own'), 2)
  // A write submitted (not yet answered), then a read in a later tick.
  await a.get('own')
  const written = a.set('own', 3)
  await new Promise((resolve) => process.nextTick(resolve))
  await new Promise((resolve) => process.nextTick(resolve))
  assert.equal(await a.get('own'), 3, 'a read after a submitted write hit the old value')
  await written
  assert.equal(await a.delete('own'), true)
  assert.equal(await a.get('own'), null, 'own delete')

  // Another instance's delete.
  await a.set('d', 'x')
  await b.get('d')
  await b.get('d')
  await a.delete('d')
  await freshWithinBound(() => b.get('d'), null, 'delete by the other adapter')

  // A tenant clear by the other instance, and by this one.
  await a.setConversationContext('org-1', '+1 1', ['m'])
  await a.setConversationContext('org-2', '+1 1', ['other'])
  for (let i = 0; i < 2; i++) {
    await b.getConversationContext('org-1', '+1 1')
    await b.getConversationContext('org-2', '+1 1')
  }
  assert.equal(await a.clearOrganizationCache('org-1'), 1)
  await freshWithinBound(() => b.getConversationContext('org-1', '+1 1'), null, 'clear by the other adapter')
  assert.deepEqual(await b.getConversationContext('org-2', '+1 1'), ['other'])
  await b.clearOrganizationCache('org-2')
  assert.equal(await b.getConversationContext('org-2', '+1 1'), null, 'own clear')

  // Expiry: never kept beyond the key's own TTL.
  await a.set('short', 'v', 0.3)
  await b.get('short')
  assert.equal(await b.get('short'), 'v')
  await sleep(400)
  assert.equal(await b.get('short'), null, 'a near entry outlived its key\'s TTL')
  // expire() by the other instance shortens it too.
  await a.set('e', 'v', 60)
  await b.get('e')
  await b.get('e')
  assert.equal(await a.expire('e', 0.2), true)
  await sleep(300)
  assert.equal(await b.get('e'), null)
})

test('a paused Redis stops near hits within the lease; a killed one flushes; both come back', async (t) => {
  const { server, a } = await oneAdapter(t, true, { commandTimeoutMs: 100, breakerCooldownMs: 200 })
  await a.set('k', 'v')
  await a.get('k')
  assert.equal(await a.get('k'), 'v')

  server.pause()
  try {
    await sleep(STALE_BOUND_MS + 50)
    const hits = (await nearStats(a)).hits
    // Redis cannot answer: the read goes to the memory tier (which holds what this adapter wrote).
    assert.equal(await guard(a.get('k'), 3000, 'get while paused'), 'v')
    assert.equal((await nearStats(a)).hits, hits, 'a near hit was served after the lease ran out')
  } finally {
    server.resume()
  }
  await ready(a, 'adapter after SIGCONT')
  await a.get('k')
  assert.equal(await a.get('k'), 'v')

  const flushes = (await nearStats(a)).flushes
  await server.kill()
  await until(async () => (await nearStats(a)).flushes > flushes, 3000, 'flushed when Redis died')
  const s = await nearStats(a)
  assert.equal(s.linkUp, false)
  assert.equal(s.entries, 0)
  const hits = s.hits
  await guard(a.get('k'), 3000, 'get with Redis down')
  assert.equal((await nearStats(a)).hits, hits, 'bypassed while Redis is down')

  await server.restart()
  await ready(a, 'adapter after restart')
  await a.set('k', 'back')
  await a.get('k')
  assert.equal(await a.get('k'), 'back')
  assert.ok((await nearStats(a)).hits > hits)
})

test('a failover behind a stable address: the link leaves the demoted server, and no read is stale', async (t) => {
  // A managed failover as a hosted Redis does it: the replica is promoted, the old master becomes its
  // replica (still answering, read-only), and the address (here a proxy) leads new connections to the new one.
  const old = await startRedis()
  const promoted = await startRedis()
  const proxy = await startProxy(old.port)
  t.after(async () => {
    await proxy.stop()
    await old.stop()
    await promoted.stop()
  })
  const prefix = uniquePrefix()
  const a = new CacheAdapter({ url: proxy.url, keyPrefix: prefix, nearCache: true, alerts: false })
  t.after(() => a.close())
  await ready(a, 'adapter')
  await a.set('k', 'v1')
  await a.get('k')
  assert.equal(await a.get('k'), 'v1')
  assert.equal((await linkIds(old)).length, 1)

  // Redis 7 waits 5 s before a diskless sync by default, for more replicas to join.
  await old.cli('config', 'set', 'repl-diskless-sync-delay', '0')
  await promoted.cli('replicaof', '127.0.0.1', String(old.port))
  await until(async () => /master_link_status:up/.test(await promoted.cli('info', 'replication')), 10000, 'the replica syncs')
  proxy.retarget(promoted.port)
  await promoted.cli('replicaof', 'no', 'one')
  await old.cli('replicaof', '127.0.0.1', String(promoted.port))

  // The link leaves the demoted server within a heartbeat and comes back on the promoted one.
  await until(async () => (await linkIds(old)).length === 0 && (await linkIds(promoted)).length === 1, 3000, 'the link moves to the promoted server')
  // Another instance writes on the promoted master: never answered stale by the near cache.
  const other = adapter(promoted, prefix, false)
  t.after(() => other.close())
  await ready(other, 'other')
  for (let round = 0; round < 10; round++) {
    await a.get('k')
    assert.equal(await other.set('k', { round }), true)
    await freshWithinBound(() => a.get('k'), { round }, `round ${round} after the failover`)
  }
  await ready(a, 'adapter on the promoted server')
})

test('a user an ACL keeps from ROLE (an @admin command) still gets a coherent near cache', async (t) => {
  const server = await startRedis()
  t.after(() => server.kill())
  await server.cli('acl', 'setuser', 'app', 'on', '>app-secret', '~*', '&*', '+@all', '-@admin')
  assert.match(await server.cli('--user', 'app', '--pass', 'app-secret', '--no-auth-warning', 'role').catch((e) => e.message), /NOPERM|no permissions/i)
  const prefix = uniquePrefix()
  const url = `redis://app:app-secret@127.0.0.1:${server.port}`
  const a = new CacheAdapter({ url, keyPrefix: prefix, nearCache: true, alerts: false })
  const b = new CacheAdapter({ url, keyPrefix: prefix, alerts: false })
  t.after(() => Promise.all([a.close(), b.close()]))
  await ready(a, 'adapter as app')
  await ready(b, 'writer as app')
  for (let round = 0; round < 10; round++) {
    await a.get('k')
    await a.get('k')
    assert.equal(await b.set('k', { round }), true)
    await freshWithinBound(() => a.get('k'), { round }, `round ${round}`)
  }
  assert.ok((await nearStats(a)).hits >= 10, 'the near cache served hits')
})

test('a user an ACL keeps from CLIENT TRACKING: no near cache, reads from Redis, and lastError says why', async (t) => {
  const server = await startRedis()
  t.after(() => server.kill())
  await server.cli('acl', 'setuser', 'app', 'on', '>app-secret', '~*', '&*', '+@all', '-client|tracking')
  const a = new CacheAdapter({ url: `redis://app:app-secret@127.0.0.1:${server.port}`, keyPrefix: uniquePrefix(), nearCache: true, alerts: false })
  t.after(() => a.close())
  await until(async () => (await nearStats(a)).lastError !== null, 5000, 'a link error is reported')
  const s = await nearStats(a)
  assert.equal(s.enabled, true)
  assert.equal(s.active, false)
  assert.match(s.lastError, /NOPERM|permission/i)
  assert.doesNotMatch(s.lastError, /app-secret/)
  assert.equal(await a.set('k', 'v'), true)
  assert.equal(await a.get('k'), 'v')
  assert.equal(await a.get('k'), 'v')
  assert.equal((await nearStats(a)).hits, 0, 'no hit without a link')
  assert.equal((await a.getStats()).cache.mode, 'redis')
})

test('an invalidation that overtakes a read in flight keeps that read\'s reply out of the near cache', async (t) => {
  // The classic tracking race: the read runs in Redis, another client's write
  // follows and its invalidation arrives, then the read's reply. Kept, that
  // reply would be served stale until ttlMs.
  const server = await startRedis()
  t.after(() => server.kill())
  const proxy = await startProxy(server.port)
  t.after(() => proxy.stop())
  const prefix = uniquePrefix()
  const reader = new CacheAdapter({ url: proxy.url, keyPrefix: prefix, nearCache: true, alerts: false, poolSize: 1, commandTimeoutMs: 5000 })
  const writer = adapter(server, prefix, false)
  t.after(() => Promise.all([reader.close(), writer.close()]))
  await ready(reader, 'reader')
  await ready(writer, 'writer')
  assert.equal(await writer.set('k', 'v1'), true)
  const linkPorts = await server.clientPorts((line) => line.includes('name=cache-near-invalidation'))
  assert.equal(linkPorts.length, 1, 'the reader has one invalidation link')

  for (let round = 0; round < 3; round++) {
    const before = (await nearStats(reader)).invalidations
    assert.ok(proxy.hold(Infinity, { repliesOnly: true, except: linkPorts }) >= 1, 'the reader has a data connection to hold')
    const read = reader.get('k') // runs in Redis now; its reply waits in the proxy
    await sleep(50)
    const next = `v${round + 2}`
    assert.equal(await writer.set('k', next), true)
    await until(async () => (await nearStats(reader)).invalidations > before, 2000, 'the invalidation reaches the reader')
    proxy.release()
    assert.equal(await guard(read, 3000, 'the held read'), `v${round + 1}`, 'the read answers what Redis held when it ran')
    const hits = (await nearStats(reader)).hits
    assert.equal(await reader.get('k'), next, `round ${round}: the overtaken reply was kept and served`)
    assert.equal(await reader.get('k'), next)
    assert.equal((await nearStats(reader)).hits, hits + 1, 'the fresh value is kept and served')
  }
})

/**
 * Records every call into `a`'s native object, by the class and by its
 * batcher (which holds its own reference): `calls` lists `[name, calls in
 * the batch]` for `submit`, `[name]` for the rest.
 */
function watchNative(a) {
  const native = a._native
  const calls = []
  const watched = new Proxy(native, {
    get(target, name) {
      const v = Reflect.get(target, name)
      if (typeof v !== 'function') return v
      return (...args) => {
        calls.push(name === 'submit' ? [name, args[1].length] : [name])
        return v.apply(target, args)
      }
    },
  })
  a._native = watched
  a._batch.native = watched
  return {
    calls,
    restore() {
      a._native = native
      a._batch.native = native
    },
  }
}

/** How long a value this adapter wrote is kept (`WRITE_KEEP` in src/near/mod.rs). */
const WRITE_KEEP_MS = 50

/** Writes `json` under generic `key` with a write time 1 s ahead of Redis's clock, as a newer writer would. */
function writeNewer(server, prefix, key, json) {
  const script = `local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + 1000
local head = {}
for i = 8, 1, -1 do head[i] = string.char(ms % 256); ms = math.floor(ms / 256) end
return redis.call('SET', KEYS[1], string.char(254, 1) .. table.concat(head) .. ARGV[1], 'EX', 60)`
  return server.cli('eval', script, 1, `${prefix}:kv:${key}`, json)
}

test('a value this adapter wrote is served from the near cache, briefly, and never over a later write', async (t) => {
  const { server, prefix, a, b } = await twoAdapters(t)
  const hits = async () => (await nearStats(a)).hits

  // Read back with no round trip: a generic key and a mapping's forward key.
  await a.set('w', { n: 1 })
  let before = await hits()
  assert.deepEqual(await a.get('w'), { n: 1 })
  await a.setPhoneToLeadMapping('+1 555 0100', 'lead-1')
  assert.equal(await a.getPhoneToLeadMapping('+1 555 0100'), 'lead-1')
  assert.equal(await hits(), before + 2, 'both reads after the writes were near hits')
  assert.equal(await a.getLeadToPhoneMapping('lead-1'), '+1 555 0100')
  assert.equal(await hits(), before + 2, 'the reverse key is not kept from the write')
  // setMany's values too, read back one by one or with getMany.
  assert.equal(await a.setMany([['m1', 1], ['m2', { two: 2 }]]), true)
  before = await hits()
  assert.deepEqual(await a.getMany(['m1', 'm2']), [1, { two: 2 }])
  assert.equal(await hits(), before + 2, 'setMany\'s values were not kept')
  // A written value replaces the one held for the key (the one just written, then one read).
  for (const n of [2, 3]) {
    await a.set('w', { n })
    before = await hits()
    assert.deepEqual(await a.get('w'), { n })
    assert.equal(await hits(), before + 1, `the value written over a held one was not kept (n = ${n})`)
    await sleep(WRITE_KEEP_MS + 20)
    assert.deepEqual(await a.get('w'), { n })
  }

  // Kept for WRITE_KEEP_MS at most: then read from Redis again.
  await a.set('w', { n: 4 })
  await sleep(WRITE_KEEP_MS + 20)
  before = await hits()
  assert.deepEqual(await a.get('w'), { n: 4 })
  assert.equal(await hits(), before, 'a written value was served past WRITE_KEEP_MS')

  // Kept through its own echo from Redis, not through another writer's later write: a
  // round counts when the other write's announcement arrived within WRITE_KEEP_MS of
  // ours (after that the value has expired anyway); bounded at 30 tries.
  let meaningful = 0
  for (let round = 0; round < 30 && meaningful < 3; round++) {
    const submitted = performance.now()
    const invalidations = (await nearStats(a)).invalidations
    await a.set('race', { by: 'a', round })
    // Our own echo first, then b's write, in a later pass of Redis's loop.
    await until(async () => (await nearStats(a)).invalidations >= invalidations + 1, 2000, 'our echo')
    await b.set('race', { by: 'b', round })
    await until(async () => (await nearStats(a)).invalidations >= invalidations + 2, 2000, 'b\'s announcement')
    const got = await a.get('race')
    if (performance.now() - submitted < WRITE_KEEP_MS) meaningful++
    assert.deepEqual(got, { by: 'b', round }, 'our own written value served over a later write by another instance')
  }
  assert.ok(meaningful > 0, 'no round ran within WRITE_KEEP_MS: nothing was tested')

  // A write Redis refused (it holds a newer write of the key) is not kept.
  await writeNewer(server, prefix, 'newer', '{"by":"newer"}')
  assert.equal(await a.set('newer', { by: 'a' }), true)
  assert.deepEqual(await a.get('newer'), { by: 'newer' }, 'a superseded write was kept')

  // A written value never evicts what was read: kept only while there is room.
  const small = adapter(server, prefix, { maxEntries: 3 })
  t.after(() => small.close())
  await ready(small, 'small')
  for (const k of ['r1', 'r2']) {
    await a.set(k, k)
    await sleep(WRITE_KEEP_MS + 20)
    await small.get(k) // a miss that fills
  }
  await small.set('w1', 'w1')
  assert.equal((await nearStats(small)).entries, 3, 'room for one more: the written value is kept')
  await sleep(WRITE_KEEP_MS + 20)
  await small.get('w1') // its expired entry is dropped, and the read refills the third place
  await small.set('w2', 'w2')
  before = (await nearStats(small)).hits
  for (const k of ['r1', 'r2', 'w1']) assert.equal(await small.get(k), k)
  assert.equal((await nearStats(small)).hits, before + 3, 'a written value evicted a value read')
  assert.equal(await small.get('w2'), 'w2')
  assert.equal((await nearStats(small)).hits, before + 3, 'a written value was kept over a full table')

  // A large value is not kept (holding it until its write is answered costs more).
  await a.set('big', 'x'.repeat(20 * 1024))
  before = await hits()
  assert.equal((await a.get('big')).length, 20 * 1024)
  assert.equal(await hits(), before, 'a written value of 20 KB was kept')

  // A tagged write and a read-through envelope are not kept (their reads answer other text).
  await a.set('tagged', 1, { ttl: 60, tags: ['t'] })
  before = await hits()
  assert.equal(await a.get('tagged'), 1)
  assert.equal(await hits(), before)
})

test('a value this adapter wrote is not served after its own next write, even before Redis announced the first', async (t) => {
  // Redis's announcement of our first write (its echo) is held in a proxy, so
  // that our second write is the only thing that moved the key's generation:
  // the table must tell our own write from the one announcement it accepts.
  const server = await startRedis()
  t.after(() => server.kill())
  const proxy = await startProxy(server.port)
  t.after(() => proxy.stop())
  const a = new CacheAdapter({ url: proxy.url, keyPrefix: uniquePrefix(), nearCache: true, alerts: false, poolSize: 1 })
  t.after(() => a.close())
  let meaningful = 0
  // Bounded: a round counts only if the first read was a near hit (the link's 100 ms lease still ran).
  for (let round = 0; round < 10 && meaningful < 3; round++) {
    await ready(a, 'adapter')
    const dataPorts = await server.clientPorts((line) => !line.includes('name=cache-near-invalidation') && !line.includes('cmd=client'))
    assert.ok(proxy.hold(Infinity, { except: dataPorts }) >= 1, 'the invalidation link is held')
    try {
      assert.equal(await a.set('own', round * 2 + 1), true)
      const hits = (await nearStats(a)).hits
      assert.equal(await a.get('own'), round * 2 + 1)
      if ((await nearStats(a)).hits === hits + 1) meaningful++
      const second = a.set('own', round * 2 + 2)
      await new Promise((resolve) => process.nextTick(resolve))
      assert.equal(await a.get('own'), round * 2 + 2, 'our first written value was served after our second write was queued')
      await second
    } finally {
      proxy.release()
    }
  }
  assert.ok(meaningful > 0, 'no round read the written value back from the near cache: nothing was tested')
})

test('a hit makes no native call; bounds hold and evict the oldest first', async (t) => {
  const { server, a } = await oneAdapter(t, { maxEntries: 8, maxBytes: 1 << 20 })
  for (let k = 0; k < 8; k++) {
    await a.set(`k${k}`, { k })
    await a.get(`k${k}`)
  }
  const watch = watchNative(a)
  let got
  try {
    for (let i = 0; i < 200; i++) got = await a.get(`k${i % 8}`)
  } finally {
    watch.restore()
  }
  assert.deepEqual(got, { k: 7 })
  assert.deepEqual(watch.calls, [], 'hits crossed into native code')
  let s = await nearStats(a)
  assert.equal(s.entries, 8)
  assert.ok(s.hits >= 200, `hits counted (${s.hits})`)
  // A ninth value: the oldest (k0) goes.
  await a.set('k8', { k: 8 })
  await a.get('k8')
  s = await nearStats(a)
  assert.equal(s.entries, 8)
  const hits = s.hits
  await a.get('k0')
  assert.equal((await nearStats(a)).hits, hits, 'the oldest entry was still served')
  await a.get('k8')
  assert.equal((await nearStats(a)).hits, hits + 1)

  // Bytes: values of about 1 KB under a 4 KB bound.
  const small = adapter(server, uniquePrefix(), { maxEntries: 100, maxBytes: 4096 })
  t.after(() => small.close())
  await ready(small, 'small')
  for (let k = 0; k < 10; k++) {
    await small.set(`b${k}`, 'x'.repeat(1000))
    await small.get(`b${k}`)
  }
  s = await nearStats(small)
  assert.ok(s.entries >= 2 && s.entries <= 3 && s.bytes <= 4096, `bounded by maxBytes (${s.entries} entries, ${s.bytes} B)`)
})


test('a call made among near-cache hits goes to Redis after 32 hits, not at the end of the tick', async (t) => {
  const { a } = await oneAdapter(t, true)
  await a.set('hot', { hot: 1 })
  await a.set('cold', { cold: 1 })
  await a.set('warm', { warm: 1 })
  // Past how long a written value is kept (WRITE_KEEP_MS): 'cold' and 'warm' miss, and 'hot' is kept as read.
  await sleep(WRITE_KEEP_MS + 20)
  await a.get('hot')
  const hits = (await nearStats(a)).hits
  const watch = watchNative(a)
  try {
    // Fewer hits than that: the call waits for the tick's one submit.
    const few = [a.get('cold'), ...Array.from({ length: 31 }, () => a.get('hot'))]
    assert.deepEqual(watch.calls, [], 'submitted before 32 hits')
    // 32 hits: the waiting call goes now, while this tick runs on.
    const many = [a.get('warm'), ...Array.from({ length: 32 }, () => a.get('hot'))]
    assert.deepEqual(watch.calls, [['submit', 2]], 'the calls that waited behind 32 hits went at once, together')
    const late = a.get('cold')
    assert.deepEqual(watch.calls, [['submit', 2]])
    assert.deepEqual(await guard(Promise.all([...few, ...many, late]), 5000, 'the reads'), [
      { cold: 1 }, ...Array(31).fill({ hot: 1 }), { warm: 1 }, ...Array(32).fill({ hot: 1 }), { cold: 1 },
    ])
    const submits = watch.calls.filter(([name]) => name === 'submit')
    assert.deepEqual(submits, [['submit', 2], ['submit', 1]], 'the rest of the tick went in its own submit')

    // A tenant clear is a barrier within its batch: it empties the near
    // cache as it is called, so no hit splits it off from the calls after it.
    watch.calls.length = 0
    const clear = a.clearOrganizationCache('org-1')
    const between = Array.from({ length: 40 }, () => a.get('hot'))
    const set = a.setConversationContext('org-1', '+1 555 0100', [{ n: 1 }])
    assert.deepEqual(watch.calls.filter(([name]) => name === 'submit'), [], 'a batch holding a tenant clear was split by hits')
    assert.deepEqual(await guard(Promise.all(between), 5000, 'the reads'), Array(40).fill({ hot: 1 }))
    await guard(Promise.all([clear, set]), 5000, 'the clear and the set')
    assert.deepEqual(watch.calls.filter(([name]) => name === 'submit'), [['submit', 42]], 'one batch')
  } finally {
    watch.restore()
  }
  assert.equal((await nearStats(a)).hits, hits + 63, 'no read after the clear was a hit')
  assert.deepEqual(await a.getConversationContext('org-1', '+1 555 0100'), [{ n: 1 }], 'the set after the clear survived it')
})
test('stats, metrics and options', async (t) => {
  const { server, a } = await oneAdapter(t, { maxEntries: 16, maxBytes: 65536, ttlMs: 5000 })
  for (let k = 0; k < 40; k++) {
    await a.set(`k${k}`, k)
    await a.get(`k${k}`)
  }
  const s = await nearStats(a)
  assert.ok(s.entries > 0 && s.entries <= 16, `bounded by maxEntries (${s.entries})`)
  assert.equal(s.maxBytes, 65536)
  assert.equal(s.ttlMs, 5000)
  for (const key of ['enabled', 'linkUp', 'entries', 'bytes', 'hits', 'misses', 'invalidations', 'flushes']) {
    assert.ok(key in s, key)
  }
  const text = await a.metrics()
  for (const name of ['cache_near_hits_total', 'cache_near_misses_total', 'cache_near_invalidations_total', 'cache_near_flushes_total', 'cache_near_entries']) {
    assert.match(text, new RegExp(`^${name} \\d+`, 'm'), name)
  }

  const off = new CacheAdapter({ enabled: false, nearCache: true })
  assert.equal((await off.getStats()).cache.near.enabled, false, 'no near cache without Redis')
  await off.close()

  assert.throws(() => new CacheAdapter({ nearCache: 'yes' }), TypeError)
  assert.throws(() => new CacheAdapter({ nearCache: { maxEntries: 0 } }), { name: 'RangeError', message: /options\.nearCache\.maxEntries/ })
  assert.throws(() => new CacheAdapter({ nearCache: { size: 1 } }), { name: 'TypeError', message: /options\.nearCache\.size/ })
  process.env.CACHE_NEAR_CACHE = 'maybe'
  try {
    assert.throws(() => new CacheAdapter({ enabled: false }), { name: 'TypeError', message: /CACHE_NEAR_CACHE/ })
    process.env.CACHE_NEAR_CACHE = 'true'
    const fromEnv = adapter(server, uniquePrefix(), undefined)
    await ready(fromEnv, 'adapter from CACHE_NEAR_CACHE')
    assert.equal((await nearStats(fromEnv)).enabled, true)
    await fromEnv.close()
  } finally {
    delete process.env.CACHE_NEAR_CACHE
  }
})

test('read-through hits come from the near cache too, envelope and all, and stay coherent', async (t) => {
  const { a, b } = await twoAdapters(t, false)
  let loads = 0
  const options = { ttl: 60, grace: 600 }
  assert.deepEqual(await a.getOrLoad('lead', async () => ({ v: ++loads }), options), { v: 1 })
  await a.getOrLoad('lead', async () => ({ v: ++loads }), options) // fills the near cache
  const hits = (await nearStats(a)).hits
  assert.deepEqual(await a.getOrLoad('lead', async () => ({ v: ++loads }), options), { v: 1 })
  assert.equal((await nearStats(a)).hits, hits + 1, 'a read-through hit made no round trip')
  assert.deepEqual(await a.get('lead'), { v: 1 }, 'a plain read of the same key gets the bare value, not the envelope')
  assert.equal(loads, 1)
  // Another instance's write reaches A's read-through within the bound.
  await b.set('lead', { v: 'from B' })
  await freshWithinBound(() => a.getOrLoad('lead', async () => ({ v: ++loads }), options), { v: 'from B' }, 'read-through after B wrote')
  assert.equal(loads, 1, 'a value written by another instance is a hit, not a load')
})
