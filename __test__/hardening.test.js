'use strict'
/**
 * Hardening (issues #8 and #9): bytes under our keys that are not in our
 * format read as a counted miss; a panic in the native core is an error for
 * the caller, never an abort or a hang; TTLs beyond the maximum are a
 * RangeError before anything is queued; a throwing modeChange listener never
 * stops the adapter.
 *
 * Each test owns its adapters (unique keyPrefix) and closes them; the file
 * owns its redis-servers. Every loop is bounded in count and in time.
 */
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { startRedis, redisForFile } = require('./helpers/redis')
const { sleep, guard, until } = require('./helpers/wait')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')
// The test-only hook lives on the native module, not on the public class.
const binding = require('../binding.js')

const server = redisForFile()
let seq = 0


const uniquePrefix = () => `hard-${process.pid}-${++seq}`

async function make(t, opts = {}, redis = server) {
  const keyPrefix = uniquePrefix()
  const adapter = new CacheAdapter({ url: redis.url, ...opts, keyPrefix })
  t.after(() => guard(adapter.close(), 5000, 'close()'))
  await until(
    async () => (await guard(adapter.healthCheck(), 3000, 'healthCheck')).redis.status === 'healthy',
    5000,
    "redis.status 'healthy'",
  )
  return { adapter, keyPrefix, kv: (k) => `${keyPrefix}:kv:${k}` }
}

const stats = async (adapter) => (await guard(adapter.getStats(), 3000, 'getStats')).cache

/** Writes raw bytes under `key` (a Lua script turns hex back into bytes: redis-cli arguments are text). */
async function setRaw(redis, key, bytes, field) {
  const hex = Buffer.from(bytes).toString('hex')
  const script =
    "local v = ARGV[1]:gsub('..', function(h) return string.char(tonumber(h, 16)) end) " +
    (field === undefined ? "return redis.call('SET', KEYS[1], v)" : "return redis.call('HSET', KEYS[1], ARGV[2], v)")
  const out = await redis.cli('eval', script, 1, key, hex, ...(field === undefined ? [] : [field]))
  assert.match(out, /^(OK|0|1)$/, `raw write of ${key}: ${out}`)
}

/** Our header: 0xFE, codec, 8-byte write time (ms, big-endian). */
function header(codec, writtenMs = Date.now()) {
  const b = Buffer.alloc(10)
  b[0] = 0xfe
  b[1] = codec
  b.writeBigUInt64BE(BigInt(writtenMs), 2)
  return b
}

/** Deterministic pseudo-random bytes. */
function randomBytes(n, seed) {
  const out = Buffer.alloc(n)
  let s = seed >>> 0
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = s >>> 24
  }
  return out
}

/** Every kind of bad bytes the issue names (and a few more), by name. */
function corruptValues() {
  const zstdHeader = Buffer.concat([header(0x02), Buffer.from([0, 0, 0, 40])])
  return {
    'not json': Buffer.from('not json'),
    'random bytes': randomBytes(64, 7),
    'random bytes starting with our magic': Buffer.concat([Buffer.from([0xfe]), randomBytes(40, 11)]),
    'a truncated header': header(0x01).subarray(0, 6),
    'compressed:garbage': Buffer.from('compressed:garbage'),
    'a bad zstd frame after our header': Buffer.concat([zstdHeader, randomBytes(30, 3)]),
    'a zstd magic with a broken frame': Buffer.concat([zstdHeader, Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(20, 5)]),
    'our JSON header, then text that is not JSON': Buffer.concat([header(0x01), Buffer.from('{"a":')]),
    'our JSON header, then invalid UTF-8': Buffer.concat([header(0x01), Buffer.from([0x22, 0xc3, 0x28, 0x22])]),
    'an unknown codec': Buffer.concat([header(0x07), Buffer.from('[1]')]),
    'invalid UTF-8 without a header': Buffer.from([0x22, 0xff, 0x22]),
    'JSON with trailing garbage': Buffer.from('{"a":1} x'),
  }
}

// ------------------------------------------------------- corrupt bytes are a miss

test('corrupt bytes under our keys read as a counted miss, never as a string', async (t) => {
  const { adapter, kv } = await make(t)
  const bad = corruptValues()
  const names = Object.keys(bad)
  for (const name of names) await setRaw(server, kv(name), bad[name])
  const before = (await stats(adapter)).corrupt
  assert.equal(before, 0, 'getStats().cache.corrupt starts at 0')

  // One at a time, so that no two reads share a round trip.
  for (const name of names) {
    assert.equal(await guard(adapter.get(name), 3000, `get ${name}`), null, `get of ${name}`)
  }
  const s = await stats(adapter)
  assert.equal(s.corrupt, names.length, 'each corrupt read is counted once')
  assert.match(await adapter.metrics(), new RegExp(`\\ncache_corrupt_values_total ${names.length}\\n`))

  // getMany: the corrupt keys are misses next to a good one.
  await adapter.set('good', { ok: true })
  const many = await guard(adapter.getMany(['good', ...names]), 3000, 'getMany')
  assert.deepEqual(many, [{ ok: true }, ...names.map(() => null)])
  assert.equal((await stats(adapter)).corrupt, 2 * names.length)

  // The corrupt bytes are left as they are (a later write replaces them).
  assert.equal(await server.cli('exists', kv('not json')), '1')
  await adapter.set('not json', 'now a string')
  assert.equal(await adapter.get('not json'), 'now a string')
})

test('hget and hgetall: a corrupt field is a miss, the others still read', async (t) => {
  const { adapter, kv } = await make(t)
  await adapter.hset('h', 'good', [1, 2])
  await setRaw(server, kv('h'), Buffer.from('not json'), 'bad')
  await setRaw(server, kv('h'), Buffer.concat([header(0x02), Buffer.from([0, 0, 0, 9]), randomBytes(12, 1)]), 'zbad')
  assert.equal(await adapter.hget('h', 'bad'), null)
  assert.deepEqual(await adapter.hget('h', 'good'), [1, 2])
  assert.deepEqual(await adapter.hgetall('h'), { good: [1, 2] })
  assert.equal((await stats(adapter)).corrupt, 3, 'hget bad + hgetall bad, zbad')
})

test('domain getters and getOrLoad: corrupt is a miss; getOrLoad then loads and overwrites it', async (t) => {
  const { adapter, keyPrefix } = await make(t)
  await adapter.setConversationContext('org-1', '+1 555 0100', [{ role: 'user', content: 'hi' }])
  await adapter.setOrganizationData('org-1', 'Acme')
  const keys = (await server.cli('--scan', '--pattern', `${keyPrefix}:*`)).split('\n').filter(Boolean)
  assert.equal(keys.length, 2, keys.join())
  for (const key of keys) await setRaw(server, key, Buffer.from('compressed:{not json'))
  assert.equal(await adapter.getConversationContext('org-1', '+15550100'), null)
  assert.equal(await adapter.getOrganizationData('org-1'), null)
  assert.equal((await stats(adapter)).corrupt, 2)

  await setRaw(server, `${keyPrefix}:kv:lead`, randomBytes(100, 42))
  let calls = 0
  const loaded = await guard(adapter.getOrLoad('lead', async () => ++calls && { id: 'L1' }, 60), 3000, 'getOrLoad')
  assert.deepEqual(loaded, { id: 'L1' })
  assert.equal(calls, 1)
  assert.ok((await stats(adapter)).corrupt >= 3)
  assert.deepEqual(await adapter.get('lead'), { id: 'L1' }, 'the loaded value replaced the corrupt bytes')
})

test("the old adapter's values still read back: plain JSON and compressed: + JSON", async (t) => {
  const { adapter, kv } = await make(t)
  const values = { obj: { a: 1, b: ['x', null] }, str: 'plain "quoted"', num: 42.5, nul: null, arr: [1, [2, [3]]] }
  for (const [name, v] of Object.entries(values)) {
    await server.cli('set', kv(`plain-${name}`), JSON.stringify(v))
    await server.cli('set', kv(`legacy-${name}`), `compressed:${JSON.stringify(v)}`)
  }
  await server.cli('hset', kv('legacy-hash'), 'f', 'compressed:{"z":[true]}')
  for (const [name, v] of Object.entries(values)) {
    assert.deepEqual(await adapter.get(`plain-${name}`), v, `plain ${name}`)
    assert.deepEqual(await adapter.get(`legacy-${name}`), v, `compressed: ${name}`)
  }
  assert.deepEqual(await adapter.hgetall('legacy-hash'), { f: { z: [true] } })
  assert.equal((await stats(adapter)).corrupt, 0)
})

// ------------------------------------------------------- panics never cross into Node

test('a panic while decoding a batch rejects every call of that tick; later calls work', async (t) => {
  const { adapter } = await make(t)
  await adapter.set('before', 1)
  for (const stage of ['batchDecode', 'batchExecute']) {
    binding.__testPanicOnce(stage)
    const tick = [
      adapter.set('a', 1),
      adapter.get('before'),
      adapter.getMany(['x', 'y']),
      adapter.hset('h', 'f', 2),
      adapter.increment('n'),
      adapter.getConversationContext('o', '1'),
    ]
    const settled = await guard(Promise.allSettled(tick), 3000, `the tick with a ${stage} panic`)
    for (const [i, r] of settled.entries()) {
      assert.equal(r.status, 'rejected', `${stage}: call ${i} rejects`)
      assert.ok(r.reason instanceof Error, `${stage}: call ${i} rejects with an Error`)
      assert.equal(r.reason.code, 'ERR_CACHE_INTERNAL', `${stage}: call ${i}: ${r.reason.message}`)
      assert.match(r.reason.message, /panic/i)
    }
    // Nothing of that tick was written, and the next tick works.
    assert.equal(await guard(adapter.get('a'), 3000, 'get after the panic'), null)
    assert.equal(await guard(adapter.set('a', 2), 3000, 'set after the panic'), true)
    assert.equal(await adapter.get('a'), 2)
    await adapter.delete('a')
  }
  assert.equal(await adapter.get('before'), 1)
})

test('every other native entry point turns a panic into an error and keeps working', async (t) => {
  const { adapter } = await make(t)
  const expectPanicError = async (what, fn) => {
    let error
    try {
      await guard(Promise.resolve().then(fn), 3000, what)
    } catch (e) {
      error = e
    }
    assert.ok(error instanceof Error, `${what}: expected an Error`)
    assert.doesNotMatch(error.message, /did not settle/, what)
    assert.match(error.message, /panic/i, `${what}: ${error.message}`)
  }
  await expectPanicError('getOrLoad', () => {
    binding.__testPanicOnce('getOrLoad')
    return adapter.getOrLoad('gol', () => 1)
  })
  await expectPanicError('getStats', () => {
    binding.__testPanicOnce('stats')
    return adapter.getStats()
  })
  await expectPanicError('healthCheck', () => {
    binding.__testPanicOnce('health')
    return adapter.healthCheck()
  })
  await expectPanicError('metrics', () => {
    binding.__testPanicOnce('metrics')
    return adapter.metrics()
  })
  await expectPanicError('getFromFallbackMap', () => {
    binding.__testPanicOnce('fallback')
    return adapter.getFromFallbackMap('m', 'k')
  })
  await expectPanicError('setInFallbackMap', () => {
    binding.__testPanicOnce('fallback')
    return adapter.setInFallbackMap('m', 'k', 1)
  })
  await expectPanicError('constructor', () => {
    binding.__testPanicOnce('constructor')
    return new CacheAdapter({ enabled: false })
  })
  assert.throws(() => binding.__testPanicOnce('nowhere'), /nowhere/)
  // The adapter still answers on every path.
  assert.equal(await adapter.getOrLoad('gol', () => 7), 7)
  assert.equal(typeof (await adapter.getStats()).cache.hits, 'number')
  assert.equal((await adapter.healthCheck()).redis.status, 'healthy')
  assert.match(await adapter.metrics(), /cache_hits_total/)
  assert.equal(adapter.setInFallbackMap('m', 'k', 3), true)
  assert.equal(adapter.getFromFallbackMap('m', 'k'), 3)
  const other = new CacheAdapter({ enabled: false })
  await other.close()
})

// ------------------------------------------------------- TTL caps

const MAX_TTL = 2147483647

test('a TTL above the maximum is a RangeError naming it, and nothing is stored', async (t) => {
  const { adapter, keyPrefix } = await make(t)
  const rangeError = (what) => (e) => {
    assert.ok(e instanceof RangeError, `${what}: ${e && e.constructor.name}: ${e && e.message}`)
    assert.match(e.message, /\bttl\b/, what)
    return true
  }
  for (const ttl of [Number.MAX_VALUE, 1e20, 9.3e18, MAX_TTL + 1]) {
    await assert.rejects(guard(adapter.set('k', 1, ttl), 3000, 'set'), rangeError(`set ${ttl}`))
    await assert.rejects(guard(adapter.setMany({ m: 1 }, ttl), 3000, 'setMany'), rangeError(`setMany ${ttl}`))
    await assert.rejects(guard(adapter.hset('h', 'f', 1, ttl), 3000, 'hset'), rangeError(`hset ${ttl}`))
    await assert.rejects(guard(adapter.expire('k', ttl), 3000, 'expire'), rangeError(`expire ${ttl}`))
    await assert.rejects(guard(adapter.getOrLoad('g', () => 1, ttl), 3000, 'getOrLoad'), rangeError(`getOrLoad ${ttl}`))
  }
  await sleep(50)
  assert.equal(await server.cli('--scan', '--pattern', `${keyPrefix}:*`), '', 'nothing reached Redis')
  // The maximum itself is accepted and reaches Redis as it is.
  assert.equal(await adapter.set('max', 1, MAX_TTL), true)
  const pttl = Number(await server.cli('pttl', `${keyPrefix}:kv:max`))
  assert.ok(pttl > (MAX_TTL - 60) * 1000 && pttl <= MAX_TTL * 1000, `PTTL ${pttl}`)
  assert.deepEqual(await adapter.get('max'), 1)
})

test('a huge CACHE_DEFAULT_TTL or options.ttl is an error at construction', async (t) => {
  process.env.CACHE_DEFAULT_TTL = '1e20'
  try {
    assert.throws(
      () => new CacheAdapter({ url: server.url }),
      (e) => (e instanceof RangeError || e instanceof TypeError) && /CACHE_DEFAULT_TTL/.test(e.message),
    )
  } finally {
    delete process.env.CACHE_DEFAULT_TTL
  }
  assert.throws(
    () => new CacheAdapter({ url: server.url, ttl: { leadData: Number.MAX_VALUE } }),
    (e) => e instanceof RangeError && /options\.ttl\.leadData/.test(e.message),
  )
  // At the maximum, the default TTL applies to set and to a new counter.
  process.env.CACHE_DEFAULT_TTL = String(MAX_TTL)
  let made
  try {
    made = await make(t)
  } finally {
    delete process.env.CACHE_DEFAULT_TTL
  }
  const { adapter, kv } = made
  assert.equal(await adapter.increment('n', 2), 2)
  assert.equal(await adapter.set('s', 'v'), true)
  for (const k of ['n', 's']) {
    const pttl = Number(await server.cli('pttl', kv(k)))
    assert.ok(pttl > (MAX_TTL - 60) * 1000, `PTTL of ${k}: ${pttl}`)
  }
})

// ------------------------------------------------------- listeners

test('a throwing modeChange listener never stops the adapter; the throw becomes a warning', async (t) => {
  const redis = await startRedis()
  t.after(() => redis.stop())
  const warnings = []
  const onWarning = (w) => warnings.push(w.message)
  process.on('warning', onWarning)
  t.after(() => process.off('warning', onWarning))
  const modes = []
  const { adapter } = await make(
    t,
    {
      commandTimeoutMs: 100,
      connectTimeoutMs: 300,
      breakerFailures: 2,
      breakerCooldownMs: 300,
      onModeChange: () => {
        throw new Error('onModeChange boom')
      },
    },
    redis,
  )
  adapter.on('modeChange', () => {
    throw new Error('listener boom')
  })
  adapter.on('modeChange', (e) => modes.push(e.mode))

  await adapter.set('k', 1)
  await redis.kill()
  // Bounded: drive calls until the breaker opens and the mode change is delivered.
  await until(
    async () => {
      await guard(adapter.get('k'), 3000, 'get while Redis is down')
      return modes.includes('memory')
    },
    10000,
    "mode 'memory'",
    50,
  )
  // Every later call still settles.
  for (let i = 0; i < 20; i++) {
    assert.equal(await guard(adapter.set(`k${i}`, i), 3000, `set ${i} after the throwing listener`), true)
    assert.equal(await guard(adapter.get(`k${i}`), 3000, `get ${i}`), i)
  }
  await redis.restart()
  await until(
    async () => {
      await guard(adapter.get('k'), 3000, 'get after the restart')
      return modes.includes('redis')
    },
    15000,
    "mode 'redis' again",
    50,
  )
  assert.equal(await guard(adapter.get('k19'), 3000, 'get after recovery'), 19)
  assert.ok(warnings.some((m) => /listener boom/.test(m)), warnings.join(' | '))
  assert.ok(warnings.some((m) => /onModeChange boom/.test(m)), warnings.join(' | '))
})
