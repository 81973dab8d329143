'use strict'
/**
 * The Redis tier's connections: a dropped connection is not an outage, a
 * dead connection is replaced, and writes of one key keep their order.
 *
 * Faults are real: `CLIENT KILL`, a loopback TCP proxy that stops forwarding
 * on its open connections while it still accepts new ones (a NAT or
 * load-balancer timeout, a dead VM), and a failover to another server while
 * the old one turns into a read-only replica. Every loop is bounded in count
 * and in time; each test owns its servers, proxies and adapters.
 */
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const crypto = require('node:crypto')
const { performance } = require('node:perf_hooks')
const { startRedis, HOST } = require('./helpers/redis')
const { sleep, guard, until } = require('./helpers/wait')
const { startProxy } = require('./helpers/proxy')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')

let seq = 0
const uniquePrefix = () => `conn-${process.pid}-${++seq}`
const redisKey = (prefix, key) => `${prefix}:kv:${key}`
const cacheStats = async (adapter) => (await guard(adapter.getStats(), 3000, 'getStats')).cache

/** Waits until the adapter serves from Redis with nothing left to replay. */
function waitConverged(adapter, ms, what) {
  return until(
    async () => {
      const s = await cacheStats(adapter)
      return s.mode === 'redis' && s.breaker.state === 'closed' && s.replay.pending === 0 ? s : null
    },
    ms,
    `${what}: mode 'redis', breaker closed, replay.pending 0`,
  )
}

// The JSON payload of values in the adapter's uncompressed format (0xFE,
// codec 0x01, 8-byte write time, JSON), '(nil)' for a missing key.
const PAYLOAD_SCRIPT = `
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then out[i] = '(nil)'
  elseif string.byte(v, 1) == 254 and string.byte(v, 2) == 1 then out[i] = string.sub(v, 11)
  else out[i] = '(other)' end
end
return out`

/** key → stored JSON payload, straight from Redis (keys of small values only). */
async function redisPayloads(server, prefix, keys) {
  const text = await server.cli('eval', PAYLOAD_SCRIPT, keys.length, ...keys.map((k) => redisKey(prefix, k)))
  const lines = text.split('\n')
  assert.equal(lines.length, keys.length, 'one line of redis-cli output per key')
  return new Map(keys.map((k, i) => [k, lines[i]]))
}

async function closeAll(adapters, closers) {
  for (const a of adapters) await guard(a.close(), 10000, 'adapter.close()').catch(() => {})
  for (const c of closers) await c.stop().catch(() => {})
}

// ---------------------------------------------------------------- tests

test('#8: 30 rounds of CLIENT KILL of every connection: a write through A is read through B at once, breaker closed throughout, nothing journaled', async (t) => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const a = new CacheAdapter({ url: server.url, keyPrefix })
  const b = new CacheAdapter({ url: server.url, keyPrefix })
  try {
    await waitConverged(a, 10000, 'A connects')
    await waitConverged(b, 10000, 'B connects')
    assert.equal(await a.setConversationContext('org-1', '+15550001', [{ round: -1 }]), true)
    assert.deepStrictEqual(await b.getConversationContext('org-1', '+15550001'), [{ round: -1 }])
    const stale = []
    let slowestRead = 0
    for (let round = 0; round < 30; round++) {
      const killed = Number(await server.cli('client', 'kill', 'type', 'normal'))
      assert.ok(killed >= 2, `round ${round}: CLIENT KILL killed the adapters' connections (${killed})`)
      // Some rounds write at once (the connection may still look open to the
      // client), some after the close has reached the client.
      if (round % 3 === 1) await sleep(20)
      if (round % 3 === 2) await sleep(1)
      const messages = [{ round, text: `message of round ${round}` }]
      assert.equal(await guard(a.setConversationContext('org-1', '+15550001', messages), 2000, 'set'), true)
      const acknowledged = performance.now()
      const read = await guard(b.getConversationContext('org-1', '+15550001'), 2000, 'get')
      const readMs = performance.now() - acknowledged
      slowestRead = Math.max(slowestRead, readMs)
      if (JSON.stringify(read) !== JSON.stringify(messages)) stale.push(`round ${round}: B read ${JSON.stringify(read)}`)
      else if (readMs > 100) stale.push(`round ${round}: B's read took ${Math.round(readMs)} ms`)
      for (const [name, adapter] of [['A', a], ['B', b]]) {
        const s = await cacheStats(adapter)
        assert.equal(s.breaker.state, 'closed', `round ${round}: ${name}'s breaker stays closed (${s.lastError})`)
        assert.equal(s.outages, 0, `round ${round}: ${name} had no outage`)
        assert.equal(s.replay.pending, 0, `round ${round}: ${name} journaled nothing`)
        assert.equal(s.mode, 'redis', `round ${round}: ${name} serves from Redis`)
      }
    }
    t.diagnostic(`slowest read after a kill: ${slowestRead.toFixed(1)} ms`)
    assert.deepStrictEqual(stale, [], 'B read every acknowledged write within 100 ms')
  } finally {
    await closeAll([a, b], [server])
  }
})

const SILENT = { commandTimeoutMs: 150, connectTimeoutMs: 500, breakerFailures: 3, breakerCooldownMs: 500 }

/** A redis-server, a proxy in front of it, and a connected adapter (pool of two) that talks through the proxy. */
async function behindProxy() {
  const server = await startRedis()
  const proxy = await startProxy(server.port)
  const keyPrefix = uniquePrefix()
  const adapter = new CacheAdapter({ url: proxy.url, keyPrefix, poolSize: 2, ...SILENT })
  try {
    await waitConverged(adapter, 10000, 'initial connect')
  } catch (e) {
    await closeAll([adapter], [proxy, server])
    throw e
  }
  return { server, proxy, keyPrefix, adapter }
}

test('a silent path (connections stop answering, new ones work): the adapter dials new connections within seconds and serves from Redis again', async (t) => {
  const { server, proxy, keyPrefix, adapter } = await behindProxy()
  try {
    assert.equal(await adapter.set('before', 1), true)
    await until(() => proxy.open() >= 2, 3000, 'both pooled connections open')
    const acceptedBefore = proxy.accepted
    assert.equal(proxy.hold(), 2, 'both pooled connections silenced')
    const silencedAt = performance.now()
    // Traffic goes on; the adapter must notice and replace the silent connections.
    const written = new Map()
    let i = 0
    const redialled = await until(
      async () => {
        i++
        assert.equal(await guard(adapter.set(`after:${i}`, { i }), 2000, 'set'), true)
        written.set(`after:${i}`, JSON.stringify({ i }))
        return proxy.accepted >= acceptedBefore + 2
      },
      5000,
      'two new connections through the proxy',
      50,
    ).then(() => performance.now() - silencedAt)
    await waitConverged(adapter, 5000, 'serving from Redis after the silence')
    const convergedMs = performance.now() - silencedAt
    // A write now goes straight to Redis (not to the journal).
    assert.equal(await adapter.set('fresh', { fresh: true }), true)
    assert.equal((await cacheStats(adapter)).replay.pending, 0, 'the fresh write was not journaled')
    written.set('fresh', JSON.stringify({ fresh: true }))
    const stored = await redisPayloads(server, keyPrefix, [...written.keys()])
    for (const [k, v] of written) assert.equal(stored.get(k), v, `${k} reached Redis`)
    t.diagnostic(`both connections replaced after ${Math.round(redialled)} ms, converged after ${Math.round(convergedMs)} ms`)
  } finally {
    await closeAll([adapter], [proxy, server])
  }
})

test('one of two pooled connections goes silent: that connection is replaced and writes stop failing', async (t) => {
  const { server, proxy, keyPrefix, adapter } = await behindProxy()
  try {
    await until(() => proxy.open() >= 2, 3000, 'both pooled connections open')
    const acceptedBefore = proxy.accepted
    assert.equal(proxy.hold(1), 1)
    const silencedAt = performance.now()
    // Batches of many keys use both connections.
    let round = 0
    await until(
      async () => {
        round++
        const entries = Array.from({ length: 16 }, (_, k) => [`r${round}:k${k}`, { round, k }])
        assert.equal(await guard(adapter.setMany(entries), 2000, 'setMany'), true)
        return proxy.accepted > acceptedBefore
      },
      5000,
      'the silent connection replaced by a new one',
      50,
    )
    const replacedMs = performance.now() - silencedAt
    await waitConverged(adapter, 5000, 'serving from Redis after the replacement')
    // Now every write reaches Redis on the first try: no more Redis errors.
    const errorsBefore = (await cacheStats(adapter)).redisErrors
    const keys = []
    let slowest = 0
    for (let n = 0; n < 20; n++) {
      const entries = Array.from({ length: 8 }, (_, k) => [`final:${n}:${k}`, { n, k }])
      const t0 = performance.now()
      assert.equal(await adapter.setMany(entries), true)
      slowest = Math.max(slowest, performance.now() - t0)
      keys.push(...entries.map(([k]) => k))
    }
    const after = await cacheStats(adapter)
    assert.equal(after.redisErrors, errorsBefore, 'no Redis error once the silent connection is replaced')
    assert.equal(after.replay.pending, 0)
    const stored = await redisPayloads(server, keyPrefix, keys)
    const missing = keys.filter((k) => stored.get(k) === '(nil)')
    assert.deepStrictEqual(missing, [], 'every write reached Redis')
    t.diagnostic(`replaced after ${Math.round(replacedMs)} ms; slowest setMany afterwards ${slowest.toFixed(1)} ms`)
  } finally {
    await closeAll([adapter], [proxy, server])
  }
})

test('failover: the old primary turns read-only (READONLY on the kept connections): the connections are replaced and the journal drains to the new primary', async (t) => {
  const oldPrimary = await startRedis()
  const newPrimary = await startRedis()
  const proxy = await startProxy(oldPrimary.port)
  const keyPrefix = uniquePrefix()
  const adapter = new CacheAdapter({ url: proxy.url, keyPrefix, ...SILENT })
  try {
    await waitConverged(adapter, 10000, 'initial connect')
    assert.equal(await adapter.set('before', 1), true)
    const acceptedBefore = proxy.accepted
    // The managed failover: the address now leads to the new primary, the old
    // one becomes its replica and answers READONLY on the connections kept.
    proxy.retarget(newPrimary.port)
    assert.equal(await oldPrimary.cli('replicaof', HOST, newPrimary.port), 'OK')
    const writes = new Map()
    for (let i = 0; i < 50; i++) {
      assert.equal(await guard(adapter.set(`w:${i}`, { i }), 2000, 'set'), true)
      writes.set(`w:${i}`, JSON.stringify({ i }))
    }
    const converged = await waitConverged(adapter, 5000, 'journal drained after the failover')
    assert.ok(proxy.accepted > acceptedBefore, 'new connections were dialled')
    const stored = await redisPayloads(newPrimary, keyPrefix, [...writes.keys()])
    const wrong = [...writes].filter(([k, v]) => stored.get(k) !== v).map(([k]) => `${k}: ${stored.get(k)}`)
    assert.deepStrictEqual(wrong, [], 'every write is on the new primary')
    t.diagnostic(`new connections ${proxy.accepted - acceptedBefore}, outages ${converged.outages}, replayed ${converged.replay.replayed}`)
  } finally {
    await closeAll([adapter], [proxy, oldPrimary, newPrimary])
  }
})

/** Successive writes of one key, each tick with a large write of another key, checked with MONITOR. */
async function perKeyOrder(t, noiseBytes) {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const writer = new CacheAdapter({ url: server.url, keyPrefix, poolSize: 2, commandTimeoutMs: 5000 })
  let monitor
  try {
    await waitConverged(writer, 10000, 'writer connects')
    // MONITOR lists the commands in the order Redis runs them.
    monitor = spawn('redis-cli', ['-h', HOST, '-p', String(server.port), 'monitor'], { stdio: ['ignore', 'pipe', 'ignore'] })
    const orderKey = redisKey(keyPrefix, 'ordered')
    const ran = []
    let started = false
    let buffered = ''
    // A write is `SET key value ...`, or `EVAL <script> 1 key set <ms> <ttl> value ...`.
    const setOf = new RegExp(`(?:"SET" "${orderKey}"|"${orderKey}" "set") .*\\{\\\\"i\\\\":(\\d+)\\}"`)
    monitor.stdout.on('data', (chunk) => {
      buffered += chunk
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        if (line === 'OK') started = true
        // (a script's own commands are listed too, as from "lua": not a write of ours)
        const m = !line.includes(' lua] ') && setOf.exec(line)
        if (m) ran.push(Number(m[1]))
      }
    })
    await until(() => started, 5000, 'MONITOR started')
    // Random text hardly compresses: a large write of another key takes many
    // socket reads on the server, a small one on the other connection one.
    const big = crypto.randomBytes(noiseBytes).toString('base64')
    const writes = 200
    const pending = []
    for (let i = 0; i < writes; i++) {
      if (i % 2 === 0) pending.push(writer.set(`noise:${i}`, { big }))
      pending.push(writer.set('ordered', { i }))
      // each tick's calls are one batch; the next batch follows at once
      await new Promise((resolve) => setImmediate(resolve))
    }
    const acks = await guard(Promise.all(pending), 30000, 'every write acknowledged')
    assert.ok(acks.every((r) => r === true))
    assert.equal((await cacheStats(writer)).replay.pending, 0, 'every write went to Redis')
    await until(() => ran.length >= writes, 10000, `MONITOR showed all ${writes} writes`)
    const inversions = ran.filter((i, j) => j > 0 && i < ran[j - 1]).length
    t.diagnostic(`writes run out of order: ${inversions} of ${ran.length}`)
    assert.equal(inversions, 0, `Redis ran the writes of one key in the order they were made (first: ${ran.slice(0, 12)})`)
    assert.deepStrictEqual(await writer.get('ordered'), { i: writes - 1 }, 'the last write wins')
  } finally {
    monitor?.kill('SIGKILL')
    await closeAll([writer], [server])
  }
}

test('per-key order: successive writes of one key from one instance, on a pool of two, run in Redis in the order they were made', (t) =>
  perKeyOrder(t, 32 * 1024))

test('per-key order holds when large values are compressed off the I/O thread (a later small batch must not overtake)', (t) =>
  perKeyOrder(t, 64 * 1024))


test('SCRIPT FLUSH (or a restart that forgot the scripts): writes go on, on connections that load them again', async (t) => {
  const server = await startRedis()
  const keyPrefix = uniquePrefix()
  const adapter = new CacheAdapter({ url: server.url, keyPrefix, poolSize: 2 })
  try {
    await waitConverged(adapter, 10000, 'adapter connects')
    assert.equal(await adapter.set('k', 1), true)
    await server.cli('script', 'flush')
    for (let i = 0; i < 20; i++) assert.equal(await adapter.set(`k${i}`, i), true)
    await adapter.increment('n', 2)
    const s = await cacheStats(adapter)
    assert.equal(s.replay.pending, 0, 'nothing went to the journal: each write was sent again on a new connection')
    assert.equal(s.breaker.state, 'closed')
    assert.equal(await server.cli('get', redisKey(keyPrefix, 'k19')).then((v) => v.length > 0), true, 'the writes are in Redis')
  } finally {
    await closeAll([adapter], [server])
  }
})
