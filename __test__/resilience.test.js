'use strict'
/**
 * Resilience: fault injection against this file's own redis-servers
 * (SIGKILL + restart with empty data, SIGSTOP/SIGCONT, nothing listening).
 *
 * Each test owns its servers and adapters (unique keyPrefix) and closes them.
 * Every loop is bounded in count and in time. The only time bounds asserted
 * are the behavioural ones the resilience issue asks for (no call over 1 s).
 */
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { performance } = require('node:perf_hooks')
const { startRedis, freePort } = require('./helpers/redis')
const { sleep, guard, until } = require('./helpers/wait')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')

// ---------------------------------------------------------------- helpers


let seq = 0
const uniquePrefix = () => `res-${process.pid}-${++seq}`

/** Options shared by the adapters that talk to a Redis we break on purpose. */
const FAST = {
  commandTimeoutMs: 100,
  connectTimeoutMs: 300,
  breakerFailures: 3,
  breakerCooldownMs: 500,
}

/** Runs `fn()`, returning `{value, error, ms}`; never throws. */
async function timed(fn) {
  const t0 = performance.now()
  try {
    const value = await fn()
    return { value, ms: performance.now() - t0 }
  } catch (error) {
    return { error, ms: performance.now() - t0 }
  }
}

const cacheStats = async (adapter) => (await guard(adapter.getStats(), 3000, 'getStats')).cache

/** Waits until the adapter serves from Redis with nothing left to replay. */
async function waitConverged(adapter, ms, what = 'convergence') {
  return until(
    async () => {
      const s = await cacheStats(adapter)
      return s.mode === 'redis' && s.breaker.state === 'closed' && s.replay.pending === 0 ? s : null
    },
    ms,
    `${what}: mode 'redis', breaker closed, replay.pending 0`,
  )
}

/** Records every modeChange event with the time it arrived. */
function recordModes(adapter) {
  const events = []
  adapter.on('modeChange', (e) => events.push({ ...e, t: Date.now() }))
  return events
}

const redisKey = (prefix, key) => `${prefix}:kv:${key}`

// Reads, for each key, the JSON payload of a value in the adapter's format
// (0xFE, codec 0x01 = JSON, 8-byte write time, JSON); '(nil)' for a missing
// key, '(other)...' for anything else. One line per key in redis-cli's output.
const PAYLOAD_SCRIPT = `
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then out[i] = '(nil)'
  elseif string.byte(v, 1) == 254 and string.byte(v, 2) == 1 then out[i] = string.sub(v, 11)
  else out[i] = '(other)' .. v end
end
return out`

/** Map of key → stored JSON payload (or a marker), straight from Redis. */
async function redisPayloads(server, prefix, keys) {
  const out = new Map()
  for (let i = 0; i < keys.length; i += 200) {
    const chunk = keys.slice(i, i + 200)
    const text = await server.cli('eval', PAYLOAD_SCRIPT, chunk.length, ...chunk.map((k) => redisKey(prefix, k)))
    const lines = text.split('\n')
    assert.equal(lines.length, chunk.length, `one line of redis-cli output per key (got ${lines.length} for ${chunk.length})`)
    chunk.forEach((k, j) => out.set(k, lines[j]))
  }
  return out
}

async function closeAll(adapters, servers) {
  for (const a of adapters) await guard(a.close(), 10000, 'adapter.close()').catch(() => {})
  for (const s of servers) await s.stop().catch(() => {})
}

/**
 * N concurrent workers. Each owns its keys; each iteration sets every key to
 * {w, k, s} (s = the worker's sequence number) and reads it back, expecting
 * exactly the last value whose set was acknowledged (a miss is a failure too:
 * the worker wrote the key well within its TTL). Bounded by `maxMs` and
 * `maxIterations`; `stop()` ends it and resolves once every worker is done.
 */
function startLoad(adapter, { workers = 64, keysPerWorker = 4, ttl = 600, maxMs = 60000, maxIterations = 100000 } = {}) {
  const s = {
    stopped: false,
    calls: 0,
    sets: 0,
    gets: 0,
    rejections: [],
    wrong: [],
    misses: [],
    slow: [], // calls over 1 s
    maxCallMs: 0,
    acked: new Map(), // key → last acknowledged value
    window: null, // label of the phase whose acknowledged keys we collect
    ackedIn: new Map(), // label → Set of keys acknowledged in it
  }
  const note = (what, key, r) => {
    s.calls++
    if (r.ms > s.maxCallMs) s.maxCallMs = r.ms
    if (r.ms > 1000) s.slow.push({ what, key, ms: Math.round(r.ms), at: Date.now() })
    if (r.error && s.rejections.length < 20) s.rejections.push(`${what} ${key}: ${r.error && r.error.message}`)
    else if (r.error) s.rejections.push('…')
  }
  const worker = async (w) => {
    const started = Date.now()
    let n = 0
    for (let i = 0; i < maxIterations && !s.stopped && Date.now() - started < maxMs; i++) {
      for (let k = 0; k < keysPerWorker && !s.stopped; k++) {
        const key = `w${w}:k${k}`
        const value = { w, k, s: ++n }
        const window = s.window
        const set = await timed(() => adapter.set(key, value, ttl))
        note('set', key, set)
        s.sets++
        if (!set.error) {
          if (set.value !== true) s.wrong.push(`set ${key} resolved to ${JSON.stringify(set.value)}, not true`)
          s.acked.set(key, value)
          if (window !== null && window === s.window) {
            if (!s.ackedIn.has(window)) s.ackedIn.set(window, new Set())
            s.ackedIn.get(window).add(key)
          }
        }
        const expected = s.acked.get(key)
        const get = await timed(() => adapter.get(key))
        note('get', key, get)
        s.gets++
        if (get.error || expected === undefined) continue
        if (get.value === null) {
          if (s.misses.length < 20) s.misses.push(`get ${key}: miss, last acknowledged s=${expected.s}`)
        } else if (get.value.w !== w || get.value.k !== k || get.value.s !== expected.s) {
          if (s.wrong.length < 20) s.wrong.push(`get ${key}: read ${JSON.stringify(get.value)}, last acknowledged s=${expected.s}`)
        }
      }
    }
  }
  const done = Promise.all(Array.from({ length: workers }, (_, w) => worker(w)))
  return {
    state: s,
    async stop() {
      s.stopped = true
      await guard(done, 15000, 'load workers to stop')
    },
  }
}

function assertLoadClean(s, what) {
  assert.ok(s.sets > 0 && s.gets > 0, `${what}: the load made calls`)
  assert.deepStrictEqual(s.rejections, [], `${what}: no call rejected`)
  assert.deepStrictEqual(s.wrong, [], `${what}: no read returned a value other than the last acknowledged one`)
  assert.deepStrictEqual(s.misses, [], `${what}: no read of a key written within its TTL missed`)
}

/** Every key's last acknowledged value reads back through the adapter and is what Redis holds. */
async function assertConvergedValues(adapter, server, prefix, acked, what) {
  const keys = [...acked.keys()]
  assert.ok(keys.length > 0, `${what}: keys were acknowledged`)
  const fromAdapter = await guard(adapter.getMany(keys), 10000, 'getMany')
  const wrongReads = []
  keys.forEach((k, i) => {
    if (JSON.stringify(fromAdapter[i]) !== JSON.stringify(acked.get(k))) {
      wrongReads.push(`${k}: adapter read ${JSON.stringify(fromAdapter[i])}, acknowledged ${JSON.stringify(acked.get(k))}`)
    }
  })
  assert.deepStrictEqual(wrongReads.slice(0, 10), [], `${what}: every acknowledged value reads back through the adapter`)
  assert.equal(
    await server.cli('exists', ...keys.map((k) => redisKey(prefix, k))),
    String(keys.length),
    `${what}: every acknowledged key exists in Redis`,
  )
  const stored = await redisPayloads(server, prefix, keys)
  const wrongStored = []
  for (const k of keys) {
    if (stored.get(k) !== JSON.stringify(acked.get(k))) {
      wrongStored.push(`${k}: Redis holds ${stored.get(k)}, acknowledged ${JSON.stringify(acked.get(k))}`)
    }
  }
  assert.deepStrictEqual(wrongStored.slice(0, 10), [], `${what}: Redis holds every last acknowledged value`)
}

// ---------------------------------------------------------------- tests

test('SIGKILL under 64 concurrent callers, 2 s outage, restart with empty data: nothing rejected, nothing stale, everything replayed', async (t) => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const adapter = new CacheAdapter({ url: server.url, keyPrefix, ...FAST })
  try {
    await waitConverged(adapter, 10000, 'initial connect')
    const modes = recordModes(adapter)
    const load = startLoad(adapter)
    const s = load.state
    let killedAt = Infinity
    try {
      await sleep(300) // some traffic through Redis first
      assert.ok(s.sets > 0, 'load is running before the kill')

      s.window = 'outage'
      killedAt = Date.now()
      await server.kill('SIGKILL')
      await sleep(2000)
      const outage = await cacheStats(adapter)
      assert.equal(outage.mode, 'memory', 'serving from memory during the outage')
      assert.ok(outage.replay.pending > 0, 'writes acknowledged during the outage wait for replay')
      await server.restart()
      s.window = 'recovery'
      // keep the load going while the adapter notices, probes and replays
      await waitConverged(adapter, 15000, 'recovery under load')
      s.window = null
      await sleep(300) // and a little more traffic through Redis after replay
    } finally {
      await load.stop()
    }
    t.diagnostic(
      `calls ${s.calls}, slowest ${Math.round(s.maxCallMs)} ms, keys acknowledged during the outage ${(s.ackedIn.get('outage') || new Set()).size}`,
    )
    assertLoadClean(s, 'kill/restart under load')

    const after = await waitConverged(adapter, 15000, 'recovery after the load stopped')
    const duringOutage = s.ackedIn.get('outage') || new Set()
    assert.ok(duringOutage.size > 0, 'values were acknowledged during the outage')
    await assertConvergedValues(adapter, server, keyPrefix, s.acked, 'after recovery')

    // mode events and counters
    const toMemory = modes.find((e) => e.mode === 'memory')
    assert.ok(toMemory, `a modeChange to 'memory' was emitted (got ${JSON.stringify(modes)})`)
    assert.equal(typeof toMemory.reason, 'string')
    assert.ok(toMemory.reason.length > 0, 'the memory modeChange says why')
    assert.ok(toMemory.t >= killedAt)
    const backToRedis = modes.filter((e) => e.mode === 'redis' && e.t > toMemory.t)
    assert.ok(backToRedis.length > 0, `a modeChange back to 'redis' followed (got ${JSON.stringify(modes)})`)
    assert.equal(modes[modes.length - 1].mode, 'redis', 'the last modeChange is to redis')
    assert.ok(after.outages >= 1, `stats.outages >= 1 (got ${after.outages})`)
    assert.ok(after.replay.replayed > 0, `stats.replay.replayed > 0 (got ${after.replay.replayed})`)
    assert.equal(after.replay.dropped, 0, 'nothing dropped from the replay queue')
  } finally {
    await closeAll([adapter], [server])
  }
})

test('SIGSTOP for 2 s under 64 concurrent callers: no call over 1 s, none rejected; after SIGCONT everything converges', async (t) => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const adapter = new CacheAdapter({ url: server.url, keyPrefix, ...FAST })
  try {
    await waitConverged(adapter, 10000, 'initial connect')
    const modes = recordModes(adapter)
    const load = startLoad(adapter)
    const s = load.state
    try {
      await sleep(300)
      assert.ok(s.sets > 0, 'load is running before the pause')
      s.window = 'pause'
      server.pause()
      try {
        await sleep(2000)
        assert.equal((await cacheStats(adapter)).mode, 'memory', 'serving from memory while Redis is stopped')
      } finally {
        server.resume()
      }
      s.window = 'recovery'
      await waitConverged(adapter, 15000, 'recovery under load')
      s.window = null
      await sleep(300)
    } finally {
      await load.stop()
    }
    t.diagnostic(
      `calls ${s.calls}, slowest ${Math.round(s.maxCallMs)} ms, keys acknowledged during the pause ${(s.ackedIn.get('pause') || new Set()).size}`,
    )
    assert.deepStrictEqual(s.slow, [], `no call took over 1 s (slowest ${Math.round(s.maxCallMs)} ms)`)
    assertLoadClean(s, 'pause/resume under load')
    assert.ok((s.ackedIn.get('pause') || new Set()).size > 0, 'values were acknowledged during the pause')

    const after = await waitConverged(adapter, 15000, 'recovery after the load stopped')
    await assertConvergedValues(adapter, server, keyPrefix, s.acked, 'after resume')
    assert.ok(modes.some((e) => e.mode === 'memory'), "a modeChange to 'memory' during the pause")
    assert.equal(modes[modes.length - 1].mode, 'redis', "the last modeChange is back to 'redis'")
    assert.ok(after.outages >= 1)
    assert.ok(after.replay.replayed > 0)
  } finally {
    await closeAll([adapter], [server])
  }
})

test('Redis down from the start: memory serves, health degraded; when Redis starts the adapter switches by itself and replays', async () => {
  const port = await freePort()
  const keyPrefix = uniquePrefix()
  const servers = []
  const adapter = new CacheAdapter({ url: `redis://127.0.0.1:${port}`, keyPrefix, ...FAST, breakerCooldownMs: 300 })
  try {
    const modes = recordModes(adapter)
    const written = new Map()
    for (let i = 0; i < 50; i++) {
      const value = { early: i, text: `value ${i}` }
      assert.equal(await guard(adapter.set(`early:${i}`, value, 600), 2000, 'set'), true)
      written.set(`early:${i}`, value)
    }
    assert.equal(await guard(adapter.delete('early:49'), 2000, 'delete'), true)
    written.delete('early:49')
    assert.deepStrictEqual(await adapter.get('early:7'), { early: 7, text: 'value 7' })

    const stats = await cacheStats(adapter)
    assert.equal(stats.mode, 'memory')
    assert.equal(stats.redisEnabled, true)
    assert.ok(stats.replay.pending >= 50, `writes are journaled (pending ${stats.replay.pending})`)
    const h = await until(
      async () => {
        const r = await guard(adapter.healthCheck(), 3000, 'healthCheck')
        return r.redis.status === 'unhealthy' ? r : null
      },
      5000,
      "redis.status 'unhealthy'",
    )
    assert.equal(h.status, 'degraded')
    assert.equal(h.adapter.status, 'degraded')
    assert.equal(h.adapter.mode, 'memory')
    assert.equal(typeof h.redis.error, 'string')
    assert.ok(h.redis.error.length > 0, 'health says why Redis is unhealthy')
    assert.deepStrictEqual(await adapter.get('early:3'), { early: 3, text: 'value 3' }, 'still working')
    assert.ok(!modes.some((e) => e.mode === 'redis'), 'no switch to redis while nothing listens')

    const server = await startRedis({ port })
    servers.push(server)
    const event = await until(() => modes.find((e) => e.mode === 'redis'), 10000, "modeChange to 'redis'")
    assert.equal(typeof event.reason, 'string')
    assert.equal(adapter.mode, 'redis')
    const after = await waitConverged(adapter, 15000, 'replay after Redis started')
    assert.ok(after.replay.replayed >= 50, `replayed ${after.replay.replayed}`)
    await assertConvergedValues(adapter, server, keyPrefix, written, 'after Redis started')
    assert.equal(await server.cli('exists', redisKey(keyPrefix, 'early:49')), '0', 'the delete was replayed too')
    const healthy = await guard(adapter.healthCheck(), 3000, 'healthCheck')
    assert.equal(healthy.status, 'healthy')
    assert.equal(healthy.redis.status, 'healthy')
  } finally {
    await closeAll([adapter], servers)
  }
})

test('the memory tier stays under memoryMaxBytes with far more keys than fit; recent keys stay readable', async () => {
  const maxBytes = 1 << 20
  const adapter = new CacheAdapter({ enabled: false, keyPrefix: uniquePrefix(), memoryMaxBytes: maxBytes, memoryMaxEntries: 1e6 })
  try {
    const N = 20000
    const pad = 'x'.repeat(1000)
    for (let i = 0; i < N; i += 500) {
      const batch = []
      for (let j = i; j < i + 500; j++) batch.push(adapter.set(`big:${j}`, { i: j, pad }, 600))
      assert.ok((await guard(Promise.all(batch), 10000, 'a batch of sets')).every((r) => r === true))
    }
    const { memory } = await cacheStats(adapter)
    assert.equal(memory.maxBytes, maxBytes)
    assert.ok(memory.bytes <= maxBytes, `memory.bytes ${memory.bytes} <= maxBytes ${maxBytes}`)
    assert.ok(memory.entries > 0 && memory.entries < N, `entries ${memory.entries} < ${N}`)
    const recent = []
    for (let j = N - 10; j < N; j++) recent.push(`big:${j}`)
    const values = await adapter.getMany(recent)
    const missing = recent.filter((k, i) => values[i] === null || values[i].i !== N - 10 + i)
    assert.deepStrictEqual(missing, [], 'the 10 most recent keys are still readable')
  } finally {
    await closeAll([adapter], [])
  }
})

test('a refused connection (nothing listening) never stalls callers: every call completes within 1 s', async () => {
  const port = await freePort()
  // default command/connect timeouts; a short cooldown so probes interleave with the calls
  const adapter = new CacheAdapter({ url: `redis://127.0.0.1:${port}`, keyPrefix: uniquePrefix(), breakerCooldownMs: 200 })
  try {
    const durations = []
    const rejections = []
    const call = async (what, fn) => {
      const r = await timed(fn)
      durations.push({ what, ms: r.ms })
      if (r.error) rejections.push(`${what}: ${r.error.message}`)
      return r.value
    }
    const started = Date.now()
    for (let round = 0; round < 30 && Date.now() - started < 10000; round++) {
      await Promise.all([
        call('set', () => adapter.set(`r:${round}`, { round }, 600)),
        call('get', () => adapter.get(`r:${round}`)),
        call('getMany', () => adapter.getMany([`r:${round}`, 'r:none'])),
        call('exists', () => adapter.exists(`r:${round}`)),
        call('hset', () => adapter.hset('rh', `f${round}`, round, 600)),
        call('increment', () => adapter.increment('rc')),
        call('getOrLoad', () => adapter.getOrLoad(`rl:${round}`, () => round, 600)),
        call('setConversationContext', () => adapter.setConversationContext('org', '+15550001', [round])),
        call('healthCheck', () => adapter.healthCheck()),
        call('getStats', () => adapter.getStats()),
      ])
      assert.deepStrictEqual(await call('get', () => adapter.get(`r:${round}`)), { round })
      await call('delete', () => adapter.delete(`r:${round}`))
      await sleep(50) // spread the rounds over the breaker's probes
    }
    assert.deepStrictEqual(rejections, [], 'no call rejected')
    const slow = durations.filter((d) => d.ms > 1000).map((d) => `${d.what} ${Math.round(d.ms)} ms`)
    assert.deepStrictEqual(slow, [], 'no call took over 1 s')
    assert.equal(await adapter.increment('rc'), 31)
    assert.equal((await cacheStats(adapter)).mode, 'memory')
  } finally {
    await closeAll([adapter], [])
  }
})

test('outage: health is unhealthy with the reason, the adapter still works, and deletes made during it are replayed as deletes', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const adapter = new CacheAdapter({ url: server.url, keyPrefix, ...FAST })
  const victims = [0, 1, 2, 3, 4].map((i) => `victim:${i}`)
  const victimKeys = victims.map((k) => redisKey(keyPrefix, k))
  try {
    await waitConverged(adapter, 10000, 'initial connect')
    for (const [i, k] of victims.entries()) assert.equal(await adapter.set(k, { v: i }, 600), true)
    assert.equal(await adapter.set('survivor', { v: 'old' }, 600), true)
    assert.equal(await server.cli('exists', ...victimKeys), '5', 'the victims exist in Redis before the outage')
    const modes = recordModes(adapter)

    // SIGSTOP keeps Redis's data, so the deletes have something to remove after the outage
    server.pause()
    try {
      // a little traffic so the breaker notices
      const toMemory = await until(
        async () => {
          await guard(adapter.get('survivor'), 2000, 'get during the outage')
          return modes.find((e) => e.mode === 'memory')
        },
        5000,
        "modeChange to 'memory'",
      )
      assert.ok(typeof toMemory.reason === 'string' && toMemory.reason.length > 0, 'the event says why')

      const h = await guard(adapter.healthCheck(), 3000, 'healthCheck')
      assert.equal(h.redis.status, 'unhealthy')
      assert.equal(typeof h.redis.error, 'string')
      assert.ok(h.redis.error.length > 0, 'health gives the reason')
      assert.equal(h.status, 'degraded')
      assert.equal(h.adapter.mode, 'memory')

      // the adapter still works; the breaker is open, so these go to memory and the journal only
      assert.equal((await cacheStats(adapter)).breaker.state === 'closed', false)
      for (const k of victims) assert.equal(await adapter.delete(k), true, `delete ${k} during the outage`)
      assert.equal(await adapter.get('victim:0'), null)
      assert.equal(await adapter.exists('victim:1'), false)
      assert.equal(await adapter.set('survivor', { v: 'new' }, 600), true)
      assert.deepStrictEqual(await adapter.get('survivor'), { v: 'new' })
      assert.ok((await cacheStats(adapter)).replay.pending >= 6)
    } finally {
      server.resume()
    }

    const after = await waitConverged(adapter, 15000, 'recovery')
    assert.equal(await server.cli('exists', ...victimKeys), '0', 'keys deleted during the outage are gone from Redis after replay')
    const stored = await redisPayloads(server, keyPrefix, ['survivor'])
    assert.equal(stored.get('survivor'), JSON.stringify({ v: 'new' }))
    assert.equal(await adapter.get('victim:2'), null)
    assert.deepStrictEqual(await adapter.get('survivor'), { v: 'new' })
    assert.equal(modes[modes.length - 1].mode, 'redis')
    assert.ok(after.outages >= 1)
    assert.ok(after.replay.replayed >= 6, `replayed ${after.replay.replayed}`)
    assert.equal((await guard(adapter.healthCheck(), 3000, 'healthCheck')).redis.status, 'healthy')
  } finally {
    await closeAll([adapter], [server])
  }
})

test('a tenant clear made during an outage is replayed: that org\'s older keys go, later writes and other orgs stay', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const adapter = new CacheAdapter({ url: server.url, keyPrefix, ...FAST })
  const orgKeys = async (org) => (await server.cli('--scan', '--pattern', `${keyPrefix}:org:{${org}}:*`)).split('\n').filter(Boolean)
  try {
    await waitConverged(adapter, 10000, 'initial connect')
    for (let i = 0; i < 5; i++) await adapter.setConversationContext('org-a', `+1555000${i}`, [i])
    await adapter.setConversationContext('org-b', '+15550000', ['b'])
    assert.equal((await orgKeys('org-a')).length, 5)
    const modes = recordModes(adapter)

    server.pause()
    try {
      await until(
        async () => {
          await guard(adapter.get('probe'), 2000, 'get during the outage')
          return modes.find((e) => e.mode === 'memory')
        },
        5000,
        "modeChange to 'memory'",
      )
      assert.equal(await adapter.clearOrganizationCache('org-a'), 5, 'the memory tier held the five entries')
      assert.equal(await adapter.getConversationContext('org-a', '+15550001'), null)
      // written after the clear: must survive its replay
      await sleep(5)
      assert.equal(await adapter.setConversationContext('org-a', '+15550009', ['after']), true)
    } finally {
      server.resume()
    }

    await waitConverged(adapter, 15000, 'recovery')
    const left = await orgKeys('org-a')
    assert.equal(left.length, 1, `only the write after the clear is left: ${left.join(' ')}`)
    assert.deepStrictEqual(await adapter.getConversationContext('org-a', '+15550009'), ['after'])
    assert.equal(await adapter.getConversationContext('org-a', '+15550002'), null)
    assert.deepStrictEqual(await adapter.getConversationContext('org-b', '+15550000'), ['b'])
    assert.equal((await orgKeys('org-b')).length, 1)
  } finally {
    await closeAll([adapter], [server])
  }
})

test('a Redis out of memory (maxmemory, noeviction) is unavailable, not a caller error: writes are kept and replayed', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const adapter = new CacheAdapter({ url: server.url, keyPrefix, ...FAST })
  try {
    await waitConverged(adapter, 10000, 'initial connect')
    await server.cli('config', 'set', 'maxmemory-policy', 'noeviction')
    await server.cli('config', 'set', 'maxmemory', '1')
    for (let i = 0; i < 10; i++) assert.equal(await adapter.set(`oom:${i}`, { i }, 600), true, `set ${i} while Redis is out of memory`)
    for (let i = 0; i < 10; i++) assert.deepStrictEqual(await adapter.get(`oom:${i}`), { i })
    assert.equal(await server.cli('exists', redisKey(keyPrefix, 'oom:0')), '0', 'Redis refused it')
    assert.ok((await cacheStats(adapter)).replay.pending >= 10)

    await server.cli('config', 'set', 'maxmemory', '0')
    await waitConverged(adapter, 15000, 'replay after memory is back')
    const keys = Array.from({ length: 10 }, (_, i) => redisKey(keyPrefix, `oom:${i}`))
    assert.equal(await server.cli('exists', ...keys), '10', 'every write acknowledged meanwhile is in Redis')
    assert.deepStrictEqual(await adapter.get('oom:9'), { i: 9 })
  } finally {
    await closeAll([adapter], [server])
  }
})

test("replay never overwrites a value another instance wrote to Redis after the outage began", async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const a = new CacheAdapter({ url: server.url, keyPrefix, ...FAST, breakerFailures: 1, breakerCooldownMs: 3000 })
  const adapters = [a]
  try {
    await waitConverged(a, 10000, 'A connects')
    // two keys: the literal integers, and object values
    assert.equal(await a.set('k', 1, 600), true)
    assert.equal(await a.set('ko', { v: 1 }, 600), true)

    await server.kill('SIGKILL')
    const aModes = recordModes(a)
    assert.equal(await guard(a.set('k', 2, 600), 2000, 'A set k=2'), true)
    assert.equal(await guard(a.set('ko', { v: 2 }, 600), 2000, 'A set ko=2'), true)
    const aWroteAt = Date.now()
    assert.equal(await a.get('k'), 2)
    assert.deepStrictEqual(await a.get('ko'), { v: 2 })
    assert.equal((await cacheStats(a)).mode, 'memory')

    await server.restart()
    const b = new CacheAdapter({ url: server.url, keyPrefix, ...FAST })
    adapters.push(b)
    await waitConverged(b, 5000, 'B connects')
    await sleep(Math.max(0, aWroteAt + 20 - Date.now())) // B's write time is strictly later than A's
    assert.equal(await b.set('k', 3, 600), true)
    assert.equal(await b.set('ko', { v: 3 }, 600), true)
    const aState = await cacheStats(a)
    assert.equal(aState.mode, 'memory', "test setup: A's breaker has not probed yet when B writes")
    assert.ok(aState.replay.pending >= 2, "test setup: A's writes are still pending")

    await until(() => aModes.find((e) => e.mode === 'redis'), 15000, "A's modeChange to 'redis'")
    const aAfter = await waitConverged(a, 15000, 'A replays')
    assert.ok(aAfter.replay.replayed + aAfter.replay.dropped >= 2)
    const viaB = { k: await b.get('k'), ko: await b.get('ko') }
    const viaA = { k: await a.get('k'), ko: await a.get('ko') }
    assert.deepStrictEqual(viaB, { k: 3, ko: { v: 3 } }, "B reads its own later writes after A's replay")
    assert.deepStrictEqual(viaA, { k: 3, ko: { v: 3 } }, "A reads B's later writes after its replay")
  } finally {
    await closeAll(adapters, [server])
  }
})

test('the replay queue is bounded by replayMaxEntries and drops are counted, never silent', async () => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const adapter = new CacheAdapter({ url: server.url, keyPrefix, ...FAST, replayMaxEntries: 10 })
  try {
    await waitConverged(adapter, 10000, 'initial connect')
    await server.kill('SIGKILL')
    for (let i = 0; i < 50; i++) {
      assert.equal(await guard(adapter.set(`q:${i}`, { q: i }, 600), 2000, `set q:${i}`), true)
    }
    const s = await cacheStats(adapter)
    assert.equal(s.replay.maxEntries, 10)
    assert.ok(s.replay.pending <= 10, `pending ${s.replay.pending} <= 10`)
    assert.ok(s.replay.dropped >= 40, `dropped ${s.replay.dropped} >= 40`)
    assert.equal(s.replay.pending + s.replay.dropped, 50, 'every write is either pending or counted as dropped')

    await server.restart()
    const after = await waitConverged(adapter, 15000, 'recovery')
    assert.ok(after.replay.dropped >= 40)
    const newest = []
    for (let i = 40; i < 50; i++) newest.push(`q:${i}`)
    assert.equal(
      await server.cli('exists', ...newest.map((k) => redisKey(keyPrefix, k))),
      '10',
      'the newest 10 writes (the ones kept) were replayed',
    )
  } finally {
    await closeAll([adapter], [server])
  }
})
