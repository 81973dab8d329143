'use strict'
/**
 * Contract tests for CacheAdapter, written from /work/shared/API.md.
 * Each test owns its adapters (unique keyPrefix) and closes them; the file owns its redis-server.
 */
const { describe, test } = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { execFile } = require('node:child_process')
const { redisForFile, freePort } = require('./helpers/redis')
const { sleep, guard, until } = require('./helpers/wait')

require('./helpers/env').isolateFromEnvironment()

const ROOT = path.join(__dirname, '..')
const { CacheAdapter } = require('..')

const DEFAULT_TTLS = {
  conversationContext: 7200,
  conversationSummary: 7200,
  conversationHistory: 120,
  organizationData: 120,
  agentConfig: 3600,
  sseResponse: 10,
  leadData: 300,
  preComputedContext: 120,
}

const server = redisForFile()
let seq = 0


// ---------------------------------------------------------------- helpers


function uniquePrefix() {
  return `test-${process.pid}-${++seq}`
}

async function waitRedisHealthy(adapter) {
  await until(
    async () => {
      const h = await guard(adapter.healthCheck(), 3000, 'healthCheck')
      return h && h.redis && h.redis.status === 'healthy'
    },
    5000,
    "healthCheck().redis.status === 'healthy'",
  )
}

/**
 * A new adapter against the test server with a unique keyPrefix, closed after the test.
 * Waits until Redis is healthy unless `{ wait: false }` or `enabled: false`.
 */
async function make(t, opts = {}, { wait = true } = {}) {
  const keyPrefix = opts.keyPrefix ?? uniquePrefix()
  const adapter = new CacheAdapter({ url: server.url, ...opts, keyPrefix })
  t.after(() => guard(adapter.close(), 5000, 'close()'))
  if (wait && opts.enabled !== false) await waitRedisHealthy(adapter)
  return { adapter, keyPrefix, kv: (k) => `${keyPrefix}:kv:${k}` }
}

async function scan(keyPrefix) {
  const out = await server.cli('--scan', '--pattern', `${keyPrefix}:*`)
  return out ? out.split('\n').filter(Boolean).sort() : []
}

async function pttl(key) {
  return Number(await server.cli('pttl', key))
}

/** Asserts 0 < PTTL(key) <= ttlSeconds*1000 and not far below it. */
async function assertTtl(key, ttlSeconds) {
  const ms = await pttl(key)
  const hi = ttlSeconds * 1000
  const lo = hi - Math.min(5000, hi / 2)
  assert.ok(ms > 0, `PTTL ${key} = ${ms}, expected an expiry`)
  assert.ok(ms <= hi && ms >= lo, `PTTL ${key} = ${ms}, expected within [${lo}, ${hi}]`)
}

/** Both a synchronous throw and a rejection count as a rejection. */
function rejects(fn, errorClass, pattern, message) {
  return assert.rejects(
    async () => fn(),
    (err) => {
      assert.ok(err instanceof errorClass, `${message || ''}: expected ${errorClass.name}, got ${err && err.constructor && err.constructor.name}: ${err && err.message}`)
      if (pattern) assert.match(err.message, pattern, message)
      return true
    },
    message,
  )
}

function isPromise(x) {
  return x !== null && typeof x === 'object' && typeof x.then === 'function'
}

/** About `bytes` of varied JSON (messages with text, numbers, unicode, nesting). */
function bigValue(bytes) {
  const words = ['lorem', 'ipsum', 'café', 'naïve', '東京', 'emoji 🚗', 'quote "x"', 'back\\slash', 'tab\there', 'line\nbreak']
  const out = []
  let size = 2
  let i = 0
  let seed = 12345
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed / 2147483648
  }
  while (size < bytes) {
    const text = Array.from({ length: 5 + Math.floor(rnd() * 40) }, () => words[Math.floor(rnd() * words.length)]).join(' ')
    const msg = {
      id: i,
      role: i % 2 ? 'assistant' : 'user',
      content: `${text} ${rnd().toString(36)}`,
      score: Math.round(rnd() * 1e6) / 1e3,
      flags: [i % 3 === 0, null, -i - 1],
      meta: { ts: 1700000000000 + i * 1000, tags: [`t${i % 7}`, `t${i % 11}`], nested: { deep: { n: i } } },
    }
    out.push(msg)
    size += JSON.stringify(msg).length + 1
    i++
  }
  return out
}

const ROUND_TRIP_VALUES = [
  ['object', { a: 1, b: 'two', c: [3, { d: null }], e: true }],
  ['array', [1, 'x', null, false, { y: [] }]],
  ['string', 'hello world'],
  ['empty string', ''],
  ['unicode string', 'café 東京 🚗 "quoted" \\ \n'],
  ['string that looks like JSON', '{"a":1}'],
  ['string with the old prefix', 'compressed:{"a":1}'],
  ['integer', 42],
  ['zero', 0],
  ['negative float', -3.25],
  ['large number', 1e300],
  ['true', true],
  ['false', false],
  ['empty object', {}],
  ['empty array', []],
]

// ---------------------------------------------------------------- construction / close

describe('construction and close', () => {
  test('construction does not throw and close() is idempotent', async () => {
    const adapter = new CacheAdapter({ url: server.url, keyPrefix: uniquePrefix() })
    await waitRedisHealthy(adapter)
    assert.equal(await adapter.set('k', 1), true)
    await guard(adapter.close(), 5000, 'first close()')
    await guard(adapter.close(), 5000, 'second close()')
    await assert.rejects(adapter.get('k'), /closed/)
  })

  test('close() closes the connections to Redis', async () => {
    const clients = async () => Number(/connected_clients:(\d+)/.exec(await server.cli('info', 'clients'))[1])
    const before = await clients()
    const adapter = new CacheAdapter({ url: server.url, keyPrefix: uniquePrefix(), poolSize: 3 })
    await waitRedisHealthy(adapter)
    assert.ok((await clients()) >= before + 3, 'the pool is open')
    await adapter.close()
    // (each cli call is itself a client, counted in `before` too)
    await until(async () => (await clients()) <= before, 5000, 'the pool closed')
  })

  test('close() on a never-connected (dead port) adapter is idempotent', async () => {
    const port = await freePort()
    const adapter = new CacheAdapter({ url: `redis://127.0.0.1:${port}`, keyPrefix: uniquePrefix() })
    await guard(adapter.close(), 5000, 'first close()')
    await guard(adapter.close(), 5000, 'second close()')
  })

  function runChild(script) {
    return new Promise((resolve) => {
      execFile(process.execPath, ['-e', script], { timeout: 15000, killSignal: 'SIGKILL', cwd: ROOT }, (err, stdout, stderr) => {
        resolve({ code: err ? err.code : 0, signal: err ? err.signal : null, killed: !!(err && err.killed), stdout, stderr })
      })
    })
  }

  const childScript = (opts, waitHealthy) => `
    const { CacheAdapter } = require(${JSON.stringify(ROOT)});
    const a = new CacheAdapter(${JSON.stringify(opts)});
    (async () => {
      const deadline = Date.now() + 5000;
      while (${waitHealthy} && Date.now() < deadline) {
        const h = await a.healthCheck();
        if (h.redis && h.redis.status === 'healthy') break;
        await new Promise((r) => setTimeout(r, 25));
      }
      await a.set('child', { ok: 1 });
      const v = await a.get('child');
      if (!v || v.ok !== 1) { console.error('bad value', v); process.exit(3); }
      console.log('ok');
      // never closed: the adapter alone must not keep the process alive
    })().catch((e) => { console.error(e); process.exit(4); });
  `

  const CHILD_CASES = [
    ['against a live Redis', async () => ({ url: server.url, keyPrefix: uniquePrefix() }), true],
    ['with Redis disabled', async () => ({ url: server.url, keyPrefix: uniquePrefix(), enabled: false }), false],
    ['against a dead port', async () => ({ url: `redis://127.0.0.1:${await freePort()}`, keyPrefix: uniquePrefix() }), false],
  ]

  for (const [name, mkOpts, waitHealthy] of CHILD_CASES) {
    test(`an unclosed adapter ${name} does not keep the process alive`, async () => {
      const r = await runChild(childScript(await mkOpts(), waitHealthy))
      assert.equal(r.killed, false, `child still alive after 15 s; stderr: ${r.stderr}`)
      assert.equal(r.code, 0, `child exit code ${r.code} signal ${r.signal}; stderr: ${r.stderr}`)
      assert.equal(r.stdout.trim(), 'ok')
    })
  }
})

// ---------------------------------------------------------------- generic methods

describe('generic methods', () => {
  for (const [name, value] of ROUND_TRIP_VALUES) {
    test(`set/get round trip: ${name}`, async (t) => {
      const { adapter } = await make(t)
      assert.equal(await adapter.set('v', value), true)
      assert.deepStrictEqual(await adapter.get('v'), value)
    })
  }

  test('set stores under `${keyPrefix}:kv:${key}` with the default TTL (7200 s) and an explicit TTL', async (t) => {
    const { adapter, keyPrefix, kv } = await make(t)
    assert.equal(await adapter.set('a', 1), true)
    assert.equal(await adapter.set('b', 2, 60), true)
    assert.equal(await adapter.set('c', 3, undefined), true)
    assert.deepStrictEqual(await scan(keyPrefix), [kv('a'), kv('b'), kv('c')])
    await assertTtl(kv('a'), 7200)
    await assertTtl(kv('b'), 60)
    await assertTtl(kv('c'), 7200)
  })

  test('fractional TTL is honoured', async (t) => {
    const { adapter, kv } = await make(t)
    assert.equal(await adapter.set('f', 'x', 1.5), true)
    const ms = await pttl(kv('f'))
    assert.ok(ms > 0 && ms <= 1500, `PTTL ${ms}`)
  })

  test('nested undefined is dropped like JSON.stringify does', async (t) => {
    const { adapter } = await make(t)
    assert.equal(await adapter.set('u', { a: undefined, b: 1 }), true)
    assert.deepStrictEqual(await adapter.get('u'), { b: 1 })
  })

  test('get of a missing key is null', async (t) => {
    const { adapter } = await make(t)
    assert.equal(await adapter.get('nope'), null)
  })

  test('null can be stored and reads back as null, like a miss', async (t) => {
    const { adapter, kv } = await make(t)
    assert.equal(await adapter.set('n', null), true)
    assert.equal(await adapter.get('n'), null)
    assert.equal(await adapter.get('missing'), null)
    assert.equal(await adapter.exists('n'), true)
    assert.equal(await adapter.exists('missing'), false)
    assert.equal(await server.cli('exists', kv('n')), '1')
    assert.deepStrictEqual(await adapter.getMany(['n', 'missing']), [null, null])
  })

  test('overwrite replaces the value', async (t) => {
    const { adapter } = await make(t)
    await adapter.set('o', { v: 1 })
    await adapter.set('o', [2])
    assert.deepStrictEqual(await adapter.get('o'), [2])
  })

  test('delete returns whether something was removed', async (t) => {
    const { adapter, kv } = await make(t)
    await adapter.set('d', 'x')
    assert.equal(await adapter.delete('d'), true)
    assert.equal(await adapter.get('d'), null)
    assert.equal(await server.cli('exists', kv('d')), '0')
    assert.equal(await adapter.delete('d'), false)
    assert.equal(await adapter.delete('never'), false)
  })

  test('getMany returns values in the order of keys, null for misses', async (t) => {
    const { adapter } = await make(t)
    await adapter.set('a', 1)
    await adapter.set('b', { two: 2 })
    await adapter.set('c', 'three')
    assert.deepStrictEqual(await adapter.getMany(['c', 'missing', 'a', 'b', 'a']), ['three', null, 1, { two: 2 }, 1])
    assert.deepStrictEqual(await adapter.getMany([]), [])
  })

  test('setMany with a plain object', async (t) => {
    const { adapter, kv } = await make(t)
    assert.equal(await adapter.setMany({ x: 1, y: { z: [1] }, w: null }), true)
    assert.deepStrictEqual(await adapter.getMany(['x', 'y', 'w']), [1, { z: [1] }, null])
    await assertTtl(kv('x'), 7200)
  })

  test('setMany with a Map and a TTL', async (t) => {
    const { adapter, kv } = await make(t)
    assert.equal(await adapter.setMany(new Map([['m1', 'one'], ['m2', [2]]]), 45), true)
    assert.deepStrictEqual(await adapter.getMany(['m1', 'm2']), ['one', [2]])
    await assertTtl(kv('m1'), 45)
    await assertTtl(kv('m2'), 45)
  })

  test('setMany with an array of [key, value] pairs', async (t) => {
    const { adapter, kv } = await make(t)
    assert.equal(await adapter.setMany([['p1', true], ['p2', 2.5]], 30), true)
    assert.deepStrictEqual(await adapter.getMany(['p1', 'p2']), [true, 2.5])
    await assertTtl(kv('p2'), 30)
  })

  test('exists returns a boolean', async (t) => {
    const { adapter } = await make(t)
    await adapter.set('e', 0)
    assert.equal(await adapter.exists('e'), true)
    assert.equal(await adapter.exists('nope'), false)
  })

  test('expire returns whether the key existed and sets the TTL', async (t) => {
    const { adapter, kv } = await make(t)
    await adapter.set('e', 'v', 3000)
    assert.equal(await adapter.expire('e', 20), true)
    await assertTtl(kv('e'), 20)
    assert.equal(await adapter.get('e'), 'v')
    assert.equal(await adapter.expire('nope', 20), false)
    assert.equal(await adapter.exists('nope'), false)
  })

  test('increment/decrement return the new integer', async (t) => {
    const { adapter } = await make(t)
    const a = await adapter.increment('n', 5)
    assert.equal(a, 5)
    assert.ok(Number.isInteger(a))
    assert.equal(await adapter.increment('n', 3), 8)
    assert.equal(await adapter.decrement('n', 10), -2)
    assert.equal(await adapter.decrement('m', 4), -4)
    assert.equal(await adapter.get('n'), -2)
  })

  test('increment/decrement without `by` step by 1', async (t) => {
    const { adapter } = await make(t)
    assert.equal(await adapter.increment('c'), 1)
    assert.equal(await adapter.increment('c'), 2)
    assert.equal(await adapter.decrement('c'), 1)
  })

  test('increment on a value set through set()', async (t) => {
    const { adapter } = await make(t)
    await adapter.set('s', 10)
    assert.equal(await adapter.increment('s', 1), 11)
    assert.equal(await adapter.get('s'), 11)
  })

  test('hset/hget/hdel/hgetall round trip', async (t) => {
    const { adapter, kv } = await make(t)
    assert.equal(await adapter.hset('h', 'a', { x: 1 }), true)
    assert.equal(await adapter.hset('h', 'b', [1, 2]), true)
    assert.equal(await adapter.hset('h', 'c', null), true)
    assert.equal(await adapter.hset('h', 'd', 'str'), true)
    assert.deepStrictEqual(await adapter.hget('h', 'a'), { x: 1 })
    assert.deepStrictEqual(await adapter.hget('h', 'b'), [1, 2])
    assert.equal(await adapter.hget('h', 'c'), null)
    assert.equal(await adapter.hget('h', 'nofield'), null)
    assert.equal(await adapter.hget('nohash', 'a'), null)
    assert.deepStrictEqual(await adapter.hgetall('h'), { a: { x: 1 }, b: [1, 2], c: null, d: 'str' })
    assert.equal(await server.cli('type', kv('h')), 'hash')
    assert.equal(await adapter.hdel('h', 'a'), true)
    assert.equal(await adapter.hdel('h', 'a'), false)
    assert.equal(await adapter.hdel('nohash', 'a'), false)
    assert.deepStrictEqual(await adapter.hgetall('h'), { b: [1, 2], c: null, d: 'str' })
  })

  test('hgetall on a missing hash is {}', async (t) => {
    const { adapter } = await make(t)
    assert.deepStrictEqual(await adapter.hgetall('missing-hash'), {})
  })

  test("hset's TTL applies to the whole hash and is refreshed by each write", async (t) => {
    const { adapter, kv } = await make(t)
    await adapter.hset('ht', 'a', 1, 30)
    await assertTtl(kv('ht'), 30)
    await adapter.hset('ht', 'b', 2, 600)
    await assertTtl(kv('ht'), 600)
    await adapter.hset('ht', 'c', 3)
    await assertTtl(kv('ht'), 7200)
  })
})

// ---------------------------------------------------------------- old encodings, large values

describe('values', () => {
  test('values written by the old adapter (plain JSON and compressed: + JSON) read back', async (t) => {
    const { adapter, kv } = await make(t)
    await server.cli('set', kv('legacy1'), '{"a":1}')
    await server.cli('set', kv('legacy2'), 'compressed:{"b":[1,2]}')
    await server.cli('set', kv('legacy3'), '"just a string"')
    await server.cli('set', kv('legacy4'), '12.5')
    const big = bigValue(4000)
    await server.cli('set', kv('legacy5'), 'compressed:' + JSON.stringify(big))
    assert.deepStrictEqual(await adapter.get('legacy1'), { a: 1 })
    assert.deepStrictEqual(await adapter.get('legacy2'), { b: [1, 2] })
    assert.equal(await adapter.get('legacy3'), 'just a string')
    assert.equal(await adapter.get('legacy4'), 12.5)
    assert.deepStrictEqual(await adapter.get('legacy5'), big)
    assert.deepStrictEqual(await adapter.getMany(['legacy1', 'legacy2']), [{ a: 1 }, { b: [1, 2] }])
  })

  test('hash fields written by the old adapter read back', async (t) => {
    const { adapter, kv } = await make(t)
    await server.cli('hset', kv('lh'), 'f1', '{"x":1}', 'f2', 'compressed:[1,2,3]')
    assert.deepStrictEqual(await adapter.hget('lh', 'f1'), { x: 1 })
    assert.deepStrictEqual(await adapter.hgetall('lh'), { f1: { x: 1 }, f2: [1, 2, 3] })
  })

  test('a large (200 KB) varied JSON value round trips through set/get, getMany, hset/hget and a domain setter', async (t) => {
    const { adapter } = await make(t)
    const value = bigValue(200 * 1024)
    assert.ok(JSON.stringify(value).length >= 200 * 1024)
    assert.equal(await adapter.set('big', value), true)
    assert.deepStrictEqual(await adapter.get('big'), value)
    assert.deepStrictEqual(await adapter.getMany(['big']), [value])
    assert.equal(await adapter.hset('bh', 'f', value), true)
    assert.deepStrictEqual(await adapter.hget('bh', 'f'), value)
    assert.equal(await adapter.setConversationContext('org-big', '+15550001111', value), true)
    assert.deepStrictEqual(await adapter.getConversationContext('org-big', '+15550001111'), value)
  })

  test('values above compressionThreshold are stored compressed in Redis', async (t) => {
    const { adapter, kv } = await make(t)
    const value = 'conversation text '.repeat(6000) // ~108 KB, very compressible
    await adapter.set('z', value)
    const stored = Number(await server.cli('strlen', kv('z')))
    assert.ok(stored > 0 && stored < value.length / 2, `stored ${stored} bytes for a ${value.length}-byte value`)
    assert.equal(await adapter.get('z'), value)
  })
})

// ---------------------------------------------------------------- argument validation

describe('argument validation', () => {
  test('non-string key, hash, field → TypeError naming the argument', async (t) => {
    const { adapter } = await make(t)
    await rejects(() => adapter.get(123), TypeError, /key/, 'get(123)')
    await rejects(() => adapter.get(undefined), TypeError, /key/, 'get(undefined)')
    await rejects(() => adapter.set(null, 1), TypeError, /key/, 'set(null)')
    await rejects(() => adapter.delete({}), TypeError, /key/, 'delete({})')
    await rejects(() => adapter.exists(1), TypeError, /key/, 'exists(1)')
    await rejects(() => adapter.expire(1, 10), TypeError, /key/, 'expire(1)')
    await rejects(() => adapter.increment(1, 1), TypeError, /key/, 'increment(1)')
    await rejects(() => adapter.decrement([], 1), TypeError, /key/, 'decrement([])')
    await rejects(() => adapter.getMany(['a', 2]), TypeError, /key/, "getMany(['a', 2])")
    await rejects(() => adapter.setMany([[3, 'v']]), TypeError, /key/, 'setMany([[3, v]])')
    await rejects(() => adapter.getOrLoad(5, () => 1), TypeError, /key/, 'getOrLoad(5)')
    await rejects(() => adapter.hget(1, 'f'), TypeError, /hash/, 'hget(1, f)')
    await rejects(() => adapter.hget('h', 2), TypeError, /field/, 'hget(h, 2)')
    await rejects(() => adapter.hset('h', 2, 'v'), TypeError, /field/, 'hset(h, 2)')
    await rejects(() => adapter.hdel('h', null), TypeError, /field/, 'hdel(h, null)')
    await rejects(() => adapter.hgetall(7), TypeError, /hash/, 'hgetall(7)')
  })

  test('domain methods: non-string org, phone, lead, agent id → TypeError naming it', async (t) => {
    const { adapter } = await make(t)
    await rejects(() => adapter.getConversationContext('org', 15551234567), TypeError, /phone/i, 'phone number')
    await rejects(() => adapter.setConversationContext('org', null, []), TypeError, /phone/i, 'phone null')
    await rejects(() => adapter.getConversationSummary(42, '+1555'), TypeError, /org/i, 'orgId 42')
    await rejects(() => adapter.setPhoneToLeadMapping('+15551234567', 42), TypeError, /lead/i, 'leadId 42')
    await rejects(() => adapter.getLeadToPhoneMapping({}), TypeError, /lead/i, 'leadId {}')
    await rejects(() => adapter.getDynamicLead(5), TypeError, /lead/i, 'getDynamicLead(5)')
    await rejects(() => adapter.getAgentConfig(1, '+1555'), TypeError, /agent/i, 'agentId 1')
    await rejects(() => adapter.getSSEResponseCache('lead', 5), TypeError, /phone/i, 'sse phone 5')
    await rejects(() => adapter.clearOrganizationCache(5), TypeError, /org/i, 'clearOrganizationCache(5)')
  })

  test('non-function loader → TypeError naming loader', async (t) => {
    const { adapter } = await make(t)
    await rejects(() => adapter.getOrLoad('k', 'not a function'), TypeError, /loader/, 'string loader')
    await rejects(() => adapter.getOrLoad('k', null), TypeError, /loader/, 'null loader')
    await rejects(() => adapter.getOrLoad('k', { then() {} }), TypeError, /loader/, 'object loader')
    assert.equal(await adapter.exists('k'), false)
  })

  test('values JSON cannot represent → TypeError, stored value unchanged', async (t) => {
    const { adapter } = await make(t)
    const circular = { a: 1 }
    circular.self = circular
    const bad = [
      ['circular', circular],
      ['BigInt', 10n],
      ['nested BigInt', { n: 1n }],
      ['function', () => 1],
      ['undefined', undefined],
    ]
    await adapter.set('keep', { original: true })
    await adapter.hset('hkeep', 'f', 'original')
    for (const [name, value] of bad) {
      await rejects(() => adapter.set('keep', value), TypeError, null, `set ${name}`)
      assert.deepStrictEqual(await adapter.get('keep'), { original: true }, `after set ${name}`)
      await rejects(() => adapter.hset('hkeep', 'f', value), TypeError, null, `hset ${name}`)
      assert.equal(await adapter.hget('hkeep', 'f'), 'original', `after hset ${name}`)
      await rejects(() => adapter.setMany({ keep: 'new', other: value }), TypeError, null, `setMany ${name}`)
      assert.deepStrictEqual(await adapter.get('keep'), { original: true }, `after setMany ${name}`)
      assert.equal(await adapter.exists('other'), false, `setMany ${name} wrote nothing`)
    }
    await adapter.setDynamicLead('lead-keep', { name: 'kept' })
    await rejects(() => adapter.setDynamicLead('lead-keep', 5n), TypeError, null, 'setDynamicLead BigInt')
    await rejects(() => adapter.setConversationContext('org', '+1555', circular), TypeError, null, 'setConversationContext circular')
    assert.deepStrictEqual(await adapter.getDynamicLead('lead-keep'), { name: 'kept' })
    assert.equal(await adapter.getConversationContext('org', '+1555'), null)
  })

  test('TTL zero, negative, NaN, ±Infinity → RangeError, stored value unchanged', async (t) => {
    const { adapter, kv } = await make(t)
    await adapter.set('keep', 'v', 100)
    await adapter.hset('hk', 'f', 'v', 100)
    for (const ttl of [0, -1, -0.5, NaN, Infinity, -Infinity]) {
      const label = `ttl ${ttl}`
      await rejects(() => adapter.set('keep', 'changed', ttl), RangeError, null, `set ${label}`)
      await rejects(() => adapter.set('fresh', 'x', ttl), RangeError, null, `set fresh ${label}`)
      await rejects(() => adapter.setMany({ keep: 'changed' }, ttl), RangeError, null, `setMany ${label}`)
      await rejects(() => adapter.hset('hk', 'f', 'changed', ttl), RangeError, null, `hset ${label}`)
      await rejects(() => adapter.expire('keep', ttl), RangeError, null, `expire ${label}`)
      let called = 0
      await rejects(() => adapter.getOrLoad('gl', () => ++called, ttl), RangeError, null, `getOrLoad ${label}`)
      assert.equal(called, 0, `loader not called for ${label}`)
    }
    assert.equal(await adapter.get('keep'), 'v')
    assert.equal(await adapter.exists('fresh'), false)
    assert.equal(await adapter.hget('hk', 'f'), 'v')
    assert.equal(await adapter.exists('gl'), false)
    await assertTtl(kv('keep'), 100)
    await assertTtl(kv('hk'), 100)
  })
})

// ---------------------------------------------------------------- getOrLoad

describe('getOrLoad', () => {
  test('50 concurrent callers: the loader runs once, everyone gets the value, it is cached', async (t) => {
    const { adapter, kv } = await make(t)
    let calls = 0
    const loader = async () => {
      calls++
      await sleep(100)
      return { loaded: true, n: 7 }
    }
    const results = await guard(Promise.all(Array.from({ length: 50 }, () => adapter.getOrLoad('hot', loader, 60))), 10000, 'getOrLoad x50')
    assert.equal(calls, 1)
    for (const r of results) assert.deepStrictEqual(r, { loaded: true, n: 7 })
    assert.deepStrictEqual(await adapter.get('hot'), { loaded: true, n: 7 })
    await assertTtl(kv('hot'), 60)
    assert.deepStrictEqual(await adapter.getOrLoad('hot', loader, 60), { loaded: true, n: 7 })
    assert.equal(calls, 1)
  })

  test('different keys load independently', async (t) => {
    const { adapter } = await make(t)
    const calls = []
    const loader = async () => {
      const n = calls.push(1)
      await sleep(20)
      return `v-${n}`
    }
    const [a, b] = await Promise.all([adapter.getOrLoad('ka', loader), adapter.getOrLoad('kb', loader)])
    assert.equal(calls.length, 2)
    assert.notEqual(a, b)
    assert.deepStrictEqual(await adapter.getMany(['ka', 'kb']), [a, b])
  })

  test('a stored value is returned without calling the loader', async (t) => {
    const { adapter } = await make(t)
    await adapter.set('pre', [1, 2])
    let calls = 0
    assert.deepStrictEqual(await adapter.getOrLoad('pre', () => ++calls), [1, 2])
    assert.equal(calls, 0)
  })

  test('a synchronous loader works', async (t) => {
    const { adapter } = await make(t)
    assert.deepStrictEqual(await adapter.getOrLoad('sync', () => ({ s: 1 })), { s: 1 })
    assert.deepStrictEqual(await adapter.get('sync'), { s: 1 })
  })

  test('a loader that rejects: every waiting caller rejects, nothing cached, next call loads again', async (t) => {
    const { adapter } = await make(t)
    let calls = 0
    const failing = async () => {
      calls++
      await sleep(50)
      throw new Error('boom-async')
    }
    const settled = await guard(Promise.allSettled(Array.from({ length: 10 }, () => adapter.getOrLoad('rej', failing))), 10000, 'rejecting loader')
    assert.equal(calls, 1)
    for (const s of settled) {
      assert.equal(s.status, 'rejected')
      assert.match(String(s.reason && s.reason.message), /boom-async/)
    }
    assert.equal(await adapter.exists('rej'), false)
    assert.equal(await adapter.get('rej'), null)
    assert.equal(await adapter.getOrLoad('rej', () => ++calls), 2)
    assert.equal(calls, 2)
  })

  test('a loader that throws synchronously: every waiting caller rejects, nothing cached, next call loads again', async (t) => {
    const { adapter } = await make(t)
    let calls = 0
    const throwing = () => {
      calls++
      throw new Error('boom-sync')
    }
    const settled = await guard(Promise.allSettled(Array.from({ length: 5 }, () => adapter.getOrLoad('thr', throwing))), 10000, 'throwing loader')
    assert.ok(calls >= 1)
    for (const s of settled) {
      assert.equal(s.status, 'rejected')
      assert.match(String(s.reason && s.reason.message), /boom-sync/)
    }
    assert.equal(await adapter.exists('thr'), false)
    const before = calls
    assert.equal(await adapter.getOrLoad('thr', () => (calls++, 'ok')), 'ok')
    assert.equal(calls, before + 1)
  })

  test("a loader's null is cached; undefined is not", async (t) => {
    const { adapter } = await make(t)
    let nullCalls = 0
    const nullLoader = async () => {
      nullCalls++
      return null
    }
    assert.equal(await adapter.getOrLoad('nf', nullLoader), null)
    assert.equal(await adapter.getOrLoad('nf', nullLoader), null)
    assert.equal(nullCalls, 1)
    assert.equal(await adapter.exists('nf'), true)

    let undefCalls = 0
    const undefLoader = async () => {
      undefCalls++
      return undefined
    }
    assert.equal((await adapter.getOrLoad('ud', undefLoader)) ?? null, null)
    assert.equal((await adapter.getOrLoad('ud', undefLoader)) ?? null, null)
    assert.equal(undefCalls, 2)
    assert.equal(await adapter.exists('ud'), false)
  })

  test('loaderTimeoutMs: a loader that never settles makes its callers reject', async (t) => {
    const { adapter } = await make(t, { loaderTimeoutMs: 200 })
    let calls = 0
    const never = () => {
      calls++
      return new Promise(() => {})
    }
    const settled = await guard(Promise.allSettled([1, 2, 3].map(() => adapter.getOrLoad('stuck', never))), 5000, 'stuck loader')
    for (const s of settled) assert.equal(s.status, 'rejected')
    assert.equal(calls, 1)
    assert.equal(await adapter.exists('stuck'), false)
    assert.equal(await adapter.getOrLoad('stuck', () => 'fine'), 'fine')
  })
})

// ---------------------------------------------------------------- synchronous, process-local methods

describe('synchronous methods', () => {
  test('createOrgKey', async (t) => {
    const { adapter } = await make(t, {}, { wait: false })
    assert.equal(adapter.createOrgKey('org-1', '+1 (555) 123-4567'), 'org-1:15551234567')
    assert.equal(adapter.createOrgKey(null, '+1 (555) 123-4567'), '15551234567')
    assert.equal(adapter.createOrgKey(undefined, '+1 (555) 123-4567'), '15551234567')
    assert.equal(adapter.createOrgKey('org-1', '+15551234567'), 'org-1:15551234567')
  })

  test('inflight requests: set/get/delete are synchronous and keep the promise identity', async (t) => {
    const { adapter, keyPrefix } = await make(t)
    const p = new Promise((resolve) => setTimeout(() => resolve('done'), 10))
    const r = adapter.setInflightRequest('req-1', p)
    assert.ok(!isPromise(r), 'setInflightRequest is synchronous')
    assert.strictEqual(adapter.getInflightRequest('req-1'), p)
    assert.equal(adapter.getInflightRequest('req-2') ?? null, null)
    adapter.deleteInflightRequest('req-1')
    assert.equal(adapter.getInflightRequest('req-1') ?? null, null)
    assert.equal(await p, 'done')
    assert.deepStrictEqual(await scan(keyPrefix), [])
  })

  test('human-control sessions: synchronous, phone-normalised, org-scoped, never in Redis', async (t) => {
    const { adapter, keyPrefix } = await make(t)
    const data = { agent: 'alice', since: 123 }
    const r = adapter.setHumanControlSession('org-h', '+1 (987) 654-321', data)
    assert.ok(!isPromise(r), 'setHumanControlSession is synchronous')
    const got = adapter.getHumanControlSession('org-h', '+1987654321')
    assert.ok(!isPromise(got), 'getHumanControlSession is synchronous')
    assert.deepStrictEqual(got, data)
    assert.equal(adapter.getHumanControlSession('org-other', '+1987654321') ?? null, null)
    adapter.deleteHumanControlSession('org-h', '+1987654321')
    assert.equal(adapter.getHumanControlSession('org-h', '+1 (987) 654-321') ?? null, null)
    assert.deepStrictEqual(await scan(keyPrefix), [])
  })

  test('fallback maps read and write the real memory tier', async (t) => {
    const { adapter } = await make(t)
    const r = adapter.setInFallbackMap('conversationContexts', 'org-1:1555', [{ m: 1 }])
    assert.ok(!isPromise(r), 'setInFallbackMap is synchronous')
    assert.equal(r, true)
    const got = adapter.getFromFallbackMap('conversationContexts', 'org-1:1555')
    assert.ok(!isPromise(got), 'getFromFallbackMap is synchronous')
    assert.deepStrictEqual(got, [{ m: 1 }])
    assert.equal(adapter.getFromFallbackMap('conversationContexts', 'missing'), null)
    assert.equal(adapter.getFromFallbackMap('otherMap', 'org-1:1555'), null)
  })
})

// ---------------------------------------------------------------- domain methods

describe('domain methods', () => {
  const PHONE = '+1 (987) 654-321'
  const PHONE_PLAIN = '+1987654321'

  test('every getter misses with null before anything is stored', async (t) => {
    const { adapter } = await make(t)
    assert.equal(await adapter.getConversationContext('org', PHONE), null)
    assert.equal(await adapter.getConversationSummary('org', PHONE), null)
    assert.equal(await adapter.getConversationHistoryCache('org', PHONE), null)
    assert.equal(await adapter.getPhoneToLeadMapping(PHONE), null)
    assert.equal(await adapter.getLeadToPhoneMapping('lead-x'), null)
    assert.equal(await adapter.getDynamicLead('lead-x'), null)
    assert.equal(await adapter.getOrganizationData('org'), null)
    assert.equal(await adapter.getAgentConfig('agent-1', '+15550000000'), null)
    assert.equal(await adapter.getSSEResponseCache('lead-x', PHONE), null)
  })

  test('conversation context, summary and history round trip (setters return true)', async (t) => {
    const { adapter } = await make(t)
    const messages = [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello 🚗' }]
    const summary = { text: 'asked about bikes', topics: ['bikes'], count: 2 }
    const history = [{ role: 'user', content: 'recent' }]
    assert.equal(await adapter.setConversationContext('org-1', PHONE, messages), true)
    assert.equal(await adapter.setConversationSummary('org-1', PHONE, summary), true)
    assert.equal(await adapter.setConversationHistoryCache('org-1', PHONE, history), true)
    assert.deepStrictEqual(await adapter.getConversationContext('org-1', PHONE), messages)
    assert.deepStrictEqual(await adapter.getConversationSummary('org-1', PHONE), summary)
    assert.deepStrictEqual(await adapter.getConversationHistoryCache('org-1', PHONE), history)
  })

  test('org id may be null/undefined (global scope)', async (t) => {
    const { adapter } = await make(t)
    assert.equal(await adapter.setConversationContext(null, PHONE, ['global']), true)
    assert.deepStrictEqual(await adapter.getConversationContext(null, PHONE_PLAIN), ['global'])
    assert.deepStrictEqual(await adapter.getConversationContext(undefined, PHONE), ['global'])
    assert.equal(await adapter.getConversationContext('org-1', PHONE), null)
  })

  test('phone normalisation: formatted and plain phones find the same entry; keys use the digits', async (t) => {
    const { adapter, keyPrefix } = await make(t)
    await adapter.setConversationContext('org-n', PHONE, ['a'])
    assert.deepStrictEqual(await adapter.getConversationContext('org-n', PHONE_PLAIN), ['a'])
    await adapter.setConversationSummary('org-n', PHONE_PLAIN, { s: 1 })
    assert.deepStrictEqual(await adapter.getConversationSummary('org-n', PHONE), { s: 1 })
    await adapter.setConversationHistoryCache('org-n', '1-987-654-321', ['h'])
    assert.deepStrictEqual(await adapter.getConversationHistoryCache('org-n', PHONE), ['h'])
    // one entry was overwritten, not duplicated
    await adapter.setConversationContext('org-n', PHONE_PLAIN, ['b'])
    assert.deepStrictEqual(await adapter.getConversationContext('org-n', PHONE), ['b'])
    const keys = await scan(keyPrefix)
    assert.ok(keys.length >= 3)
    for (const k of keys) assert.ok(!k.includes('(') && !k.includes(' ') && !k.includes('+'), `raw phone in key ${k}`)
    assert.ok(keys.some((k) => k.includes('1987654321')), `no key with the phone digits: ${keys}`)
  })

  test('phone ↔ lead mapping: both directions, normalised lookup, reverse returns the phone as given', async (t) => {
    const { adapter } = await make(t)
    assert.equal(await adapter.setPhoneToLeadMapping(PHONE, 'lead-42'), true)
    assert.equal(await adapter.getPhoneToLeadMapping(PHONE), 'lead-42')
    assert.equal(await adapter.getPhoneToLeadMapping(PHONE_PLAIN), 'lead-42')
    assert.equal(await adapter.getLeadToPhoneMapping('lead-42'), PHONE)
    assert.equal(await adapter.setPhoneToLeadMapping(PHONE_PLAIN, 'lead-43'), true)
    assert.equal(await adapter.getLeadToPhoneMapping('lead-43'), PHONE_PLAIN)
    assert.equal(await adapter.getPhoneToLeadMapping(PHONE), 'lead-43')
  })

  test('dynamic lead and SSE response cache round trip', async (t) => {
    const { adapter } = await make(t)
    const lead = { id: 'lead-7', name: 'Ana', tags: ['vip'], score: 0.9 }
    assert.equal(await adapter.setDynamicLead('lead-7', lead), true)
    assert.deepStrictEqual(await adapter.getDynamicLead('lead-7'), lead)
    const sse = { chunks: ['a', 'b'], done: true }
    assert.equal(await adapter.setSSEResponseCache('lead-7', PHONE, sse), true)
    assert.deepStrictEqual(await adapter.getSSEResponseCache('lead-7', PHONE), sse)
    assert.equal(await adapter.getSSEResponseCache('lead-8', PHONE), null)
  })

  test('getOrganizationData returns the name string', async (t) => {
    const { adapter } = await make(t)
    assert.equal(await adapter.setOrganizationData('org-9', 'Acme Bikes'), true)
    const name = await adapter.getOrganizationData('org-9')
    assert.equal(typeof name, 'string')
    assert.equal(name, 'Acme Bikes')
    assert.equal(await adapter.getOrganizationData('org-10'), null)
  })

  test('getAgentConfig returns `configured` (default true)', async (t) => {
    const { adapter } = await make(t)
    assert.equal(await adapter.setAgentConfig('agent-1', '+15550001111'), true)
    assert.equal(await adapter.getAgentConfig('agent-1', '+15550001111'), true)
    assert.equal(await adapter.setAgentConfig('agent-2', '+15550002222', false), true)
    assert.equal(await adapter.getAgentConfig('agent-2', '+15550002222'), false)
    assert.equal(await adapter.getAgentConfig('agent-3', '+15550001111'), null)
  })

  const SETTERS = [
    ['setConversationContext', (a) => a.setConversationContext('org-t', PHONE, [{ m: 1 }]), DEFAULT_TTLS.conversationContext, 1],
    ['setConversationSummary', (a) => a.setConversationSummary('org-t', PHONE, { s: 1 }), DEFAULT_TTLS.conversationSummary, 1],
    ['setConversationHistoryCache', (a) => a.setConversationHistoryCache('org-t', PHONE, [1]), DEFAULT_TTLS.conversationHistory, 1],
    ['setPhoneToLeadMapping', (a) => a.setPhoneToLeadMapping(PHONE, 'lead-t'), DEFAULT_TTLS.leadData, 2],
    ['setDynamicLead', (a) => a.setDynamicLead('lead-t', { x: 1 }), DEFAULT_TTLS.leadData, 1],
    ['setOrganizationData', (a) => a.setOrganizationData('org-t', 'Org T'), DEFAULT_TTLS.organizationData, 1],
    ['setAgentConfig', (a) => a.setAgentConfig('agent-t', '+15550003333', true), DEFAULT_TTLS.agentConfig, 1],
    ['setSSEResponseCache', (a) => a.setSSEResponseCache('lead-t', PHONE, { d: 1 }), DEFAULT_TTLS.sseResponse, 1],
  ]

  for (const [name, call, ttl, expectedKeys] of SETTERS) {
    test(`${name} writes ${expectedKeys} key(s) under keyPrefix with TTL ~${ttl} s`, async (t) => {
      const { adapter, keyPrefix } = await make(t)
      assert.equal(await call(adapter), true)
      const keys = await scan(keyPrefix)
      assert.ok(keys.length >= expectedKeys, `expected ${expectedKeys} keys, found ${JSON.stringify(keys)}`)
      const ttls = await Promise.all(keys.map(pttl))
      keys.forEach((k, i) => assert.ok(ttls[i] > 0, `key ${k} has no expiry (PTTL ${ttls[i]})`))
      const hi = ttl * 1000
      const lo = hi - Math.min(5000, hi / 2)
      const inWindow = ttls.filter((ms) => ms >= lo && ms <= hi).length
      assert.ok(inWindow >= expectedKeys, `expected ${expectedKeys} keys with PTTL in [${lo}, ${hi}], got ${JSON.stringify(keys.map((k, i) => [k, ttls[i]]))}`)
    })
  }

  test('the ttl option overrides default TTLs', async (t) => {
    const { adapter, keyPrefix } = await make(t, { ttl: { sseResponse: 60, leadData: 30 } })
    const stats = await adapter.getStats()
    assert.equal(stats.ttlConfig.sseResponse, 60)
    assert.equal(stats.ttlConfig.leadData, 30)
    assert.equal(stats.ttlConfig.conversationContext, 7200)
    await adapter.setSSEResponseCache('lead-o', PHONE, { d: 1 })
    let keys = await scan(keyPrefix)
    assert.equal(keys.length >= 1, true)
    for (const k of keys) await assertTtl(k, 60)
    await server.cli('del', ...keys)
    await adapter.setPhoneToLeadMapping(PHONE, 'lead-o')
    keys = await scan(keyPrefix)
    assert.ok(keys.length >= 2)
    for (const k of keys) await assertTtl(k, 30)
  })
})

// ---------------------------------------------------------------- tenant isolation and clearing

describe('tenant isolation', () => {
  const PHONE = '+15551234567'

  async function populate(adapter, org, tag) {
    await adapter.setConversationContext(org, PHONE, [`ctx-${tag}`])
    await adapter.setConversationSummary(org, PHONE, { s: tag })
    await adapter.setConversationHistoryCache(org, PHONE, [`hist-${tag}`])
  }

  async function assertPopulated(adapter, org, tag) {
    assert.deepStrictEqual(await adapter.getConversationContext(org, PHONE), [`ctx-${tag}`], `context of ${JSON.stringify(org)}`)
    assert.deepStrictEqual(await adapter.getConversationSummary(org, PHONE), { s: tag }, `summary of ${JSON.stringify(org)}`)
    assert.deepStrictEqual(await adapter.getConversationHistoryCache(org, PHONE), [`hist-${tag}`], `history of ${JSON.stringify(org)}`)
  }

  async function assertEmpty(adapter, org) {
    assert.equal(await adapter.getConversationContext(org, PHONE), null, `context of ${JSON.stringify(org)}`)
    assert.equal(await adapter.getConversationSummary(org, PHONE), null, `summary of ${JSON.stringify(org)}`)
    assert.equal(await adapter.getConversationHistoryCache(org, PHONE), null, `history of ${JSON.stringify(org)}`)
  }

  test('two orgs never see each other', async (t) => {
    const { adapter } = await make(t)
    await populate(adapter, 'org-a', 'A')
    await populate(adapter, 'org-b', 'B')
    await adapter.setOrganizationData('org-a', 'Org A')
    await adapter.setOrganizationData('org-b', 'Org B')
    await assertPopulated(adapter, 'org-a', 'A')
    await assertPopulated(adapter, 'org-b', 'B')
    assert.equal(await adapter.getOrganizationData('org-a'), 'Org A')
    assert.equal(await adapter.getOrganizationData('org-b'), 'Org B')
    await assertEmpty(adapter, 'org-c')
    await assertEmpty(adapter, null)
  })

  test('org id containing ":" cannot collide with another org + phone', async (t) => {
    const { adapter } = await make(t)
    // createOrgKey would give 'org-1:15551234567' for both; Redis keys must not.
    await adapter.setConversationContext('org-1', '+15551234567', ['real'])
    assert.equal(await adapter.getConversationContext('org-1:1555', '1234567'), null)
    await adapter.setConversationContext('org-1:1555', '1234567', ['attacker'])
    assert.deepStrictEqual(await adapter.getConversationContext('org-1', '+15551234567'), ['real'])
  })

  const VICTIMS = ['acme', 'acme2', 'acmex', 'ac', 'bcme', 'a', 'acme:1', 'x']
  const ATTACKERS = ['*', 'acme*', 'a*', 'ac?e', 'acm?', '?', 'acme:', ':', 'a:', '{acme}', '{', '}', 'acme}', '{acme', '[ab]cme', '[', '\\', 'acme\\*']

  for (const attacker of ATTACKERS) {
    test(`org ${JSON.stringify(attacker)} can neither read nor clear other orgs`, async (t) => {
      const { adapter, keyPrefix } = await make(t)
      for (const v of VICTIMS) {
        await populate(adapter, v, v)
        await adapter.setOrganizationData(v, `name-${v}`)
      }
      await assertEmpty(adapter, attacker)
      assert.equal(await adapter.getOrganizationData(attacker), null)

      await populate(adapter, attacker, 'attacker')
      const before = (await scan(keyPrefix)).length
      const removed = await adapter.clearOrganizationCache(attacker)
      assert.equal(removed, 3, `clearOrganizationCache(${JSON.stringify(attacker)}) removed ${removed}`)
      assert.equal((await scan(keyPrefix)).length, before - 3)
      await assertEmpty(adapter, attacker)
      for (const v of VICTIMS) {
        await assertPopulated(adapter, v, v)
        assert.equal(await adapter.getOrganizationData(v), `name-${v}`)
      }
    })
  }

  test('clearOrganizationCache of the empty-string org does not clear other orgs', async (t) => {
    const { adapter } = await make(t)
    for (const v of VICTIMS) await populate(adapter, v, v)
    await adapter.clearOrganizationCache('')
    for (const v of VICTIMS) await assertPopulated(adapter, v, v)
  })

  test('clearOrganizationCache returns the count removed and really removes, in Redis and in memory', async (t) => {
    const { adapter, keyPrefix } = await make(t)
    await populate(adapter, 'org-clear', 'c')
    await adapter.setConversationContext('org-clear', '+15550000001', ['second phone'])
    await populate(adapter, 'org-keep', 'k')
    const keysBefore = await scan(keyPrefix)
    assert.equal(await adapter.clearOrganizationCache('org-clear'), 4)
    const keysAfter = await scan(keyPrefix)
    assert.equal(keysAfter.length, keysBefore.length - 4)
    await assertEmpty(adapter, 'org-clear')
    assert.equal(await adapter.getConversationContext('org-clear', '+15550000001'), null)
    await assertPopulated(adapter, 'org-keep', 'k')
    assert.equal(await adapter.clearOrganizationCache('org-clear'), 0)
    assert.equal(await adapter.clearOrganizationCache('org-never-seen'), 0)
  })

  test('clearOrganizationCache removes many entries (more than one SCAN batch)', async (t) => {
    const { adapter, keyPrefix } = await make(t)
    const N = 1500
    const phones = Array.from({ length: N }, (_, i) => `+1555${String(i).padStart(7, '0')}`)
    await guard(Promise.all(phones.map((p) => adapter.setConversationContext('org-many', p, [p]))), 20000, 'populate org-many')
    await populate(adapter, 'org-few', 'f')
    assert.equal((await scan(keyPrefix)).length, N + 3)
    assert.equal(await guard(adapter.clearOrganizationCache('org-many'), 20000, 'clear org-many'), N)
    assert.equal((await scan(keyPrefix)).length, 3)
    assert.equal(await adapter.getConversationContext('org-many', phones[0]), null)
    assert.equal(await adapter.getConversationContext('org-many', phones[N - 1]), null)
    await assertPopulated(adapter, 'org-few', 'f')
  })

  test("clearOrganizationCache drops that org's human-control sessions only", async (t) => {
    const { adapter } = await make(t)
    adapter.setHumanControlSession('org-h1', PHONE, { agent: 'a' })
    adapter.setHumanControlSession('org-h2', PHONE, { agent: 'b' })
    await adapter.clearOrganizationCache('org-h1')
    assert.equal(adapter.getHumanControlSession('org-h1', PHONE) ?? null, null)
    assert.deepStrictEqual(adapter.getHumanControlSession('org-h2', PHONE), { agent: 'b' })
  })
})

// ---------------------------------------------------------------- stats and health

describe('stats and health', () => {
  test('getStats shape with Redis connected', async (t) => {
    const { adapter } = await make(t)
    const s0 = await adapter.getStats()
    await adapter.get('miss-1')
    await adapter.set('hit-1', 1)
    await adapter.get('hit-1')
    const stats = await adapter.getStats()
    assert.equal(stats.redisEnabled, true)
    assert.deepStrictEqual(Object.keys(stats.ttlConfig).sort(), Object.keys(DEFAULT_TTLS).sort())
    assert.deepStrictEqual({ ...stats.ttlConfig }, DEFAULT_TTLS)
    assert.equal(typeof stats.fallbackMaps, 'object')
    assert.ok(stats.fallbackMaps !== null && !Array.isArray(stats.fallbackMaps))
    for (const [name, size] of Object.entries(stats.fallbackMaps)) assert.equal(typeof size, 'number', `fallbackMaps.${name}`)
    for (const f of ['hits', 'misses', 'hitRate', 'operations', 'errors']) {
      assert.equal(typeof stats.cache[f], 'number', `cache.${f}`)
      assert.ok(Number.isFinite(stats.cache[f]) && stats.cache[f] >= 0, `cache.${f} = ${stats.cache[f]}`)
    }
    assert.equal(stats.cache.mode, 'redis')
    assert.ok(stats.cache.hits > s0.cache.hits, 'hits counted')
    assert.ok(stats.cache.misses > s0.cache.misses, 'misses counted')
    assert.ok(stats.cache.operations >= s0.cache.operations + 3, 'operations counted')
  })

  test('healthCheck shape with Redis connected', async (t) => {
    const { adapter } = await make(t)
    const h = await adapter.healthCheck()
    assert.equal(h.status, 'healthy')
    assert.equal(h.redis.status, 'healthy')
    assert.equal(typeof h.redis.latencyMs, 'number')
    assert.ok(h.redis.latencyMs >= 0)
    assert.equal(typeof h.redis.version, 'string')
    assert.match(h.redis.version, /^\d+\.\d+/)
    assert.equal(typeof h.adapter.status, 'string')
    assert.equal(h.adapter.redisEnabled, true)
    assert.equal(h.adapter.mode, 'redis')
    for (const f of ['hits', 'misses', 'hitRate', 'operations', 'errors']) assert.equal(typeof h.cache[f], 'number', `cache.${f}`)
  })
})

// ---------------------------------------------------------------- memory-only and degraded

describe('without Redis', () => {
  test('enabled:false works from memory and never touches Redis', async (t) => {
    const { adapter, keyPrefix } = await make(t, { enabled: false })
    assert.equal(await adapter.set('a', { m: 1 }), true)
    assert.deepStrictEqual(await adapter.get('a'), { m: 1 })
    assert.equal(await adapter.set('short', 'x', 0.2), true)
    assert.equal(await adapter.get('short'), 'x')
    await until(async () => (await adapter.get('short')) === null, 3000, '0.2 s TTL entry expires')
    assert.equal(await adapter.exists('short'), false)
    assert.deepStrictEqual(await adapter.get('a'), { m: 1 })
    await adapter.hset('h', 'f', 1)
    assert.deepStrictEqual(await adapter.hgetall('h'), { f: 1 })
    assert.equal(await adapter.increment('c', 2), 2)
    await adapter.setConversationContext('org', '+1 (555) 000-1111', ['m'])
    assert.deepStrictEqual(await adapter.getConversationContext('org', '+15550001111'), ['m'])
    await adapter.setPhoneToLeadMapping('+15550001111', 'lead-1')
    assert.equal(await adapter.getLeadToPhoneMapping('lead-1'), '+15550001111')
    assert.equal(await adapter.clearOrganizationCache('org'), 1)
    assert.equal(await adapter.getConversationContext('org', '+15550001111'), null)
    assert.equal(await adapter.getOrLoad('gl', () => 5), 5)

    const h = await adapter.healthCheck()
    assert.equal(h.status, 'healthy')
    assert.equal(h.redis.status, 'disabled')
    assert.equal(h.adapter.redisEnabled, false)
    assert.equal(h.adapter.mode, 'memory')
    const stats = await adapter.getStats()
    assert.equal(stats.redisEnabled, false)
    assert.equal(stats.cache.mode, 'memory')
    assert.deepStrictEqual(await scan(keyPrefix), [])
  })

  test('an adapter pointed at a dead port: construction does not throw, memory serves, health is degraded', async (t) => {
    const port = await freePort()
    const { adapter } = await make(t, { url: `redis://127.0.0.1:${port}`, connectTimeoutMs: 300 }, { wait: false })
    assert.equal(await guard(adapter.set('k', { v: 1 }), 5000, 'set'), true)
    assert.deepStrictEqual(await guard(adapter.get('k'), 5000, 'get'), { v: 1 })
    assert.equal(await guard(adapter.getOrLoad('g', () => 'loaded'), 5000, 'getOrLoad'), 'loaded')
    const h = await until(
      async () => {
        const r = await guard(adapter.healthCheck(), 5000, 'healthCheck')
        return r.redis.status === 'unhealthy' ? r : null
      },
      8000,
      "redis.status === 'unhealthy'",
    )
    assert.equal(h.status, 'degraded')
    assert.equal(typeof h.redis.error, 'string')
    assert.ok(h.redis.error.length > 0)
    assert.equal(h.adapter.redisEnabled, true)
    assert.equal(h.adapter.mode, 'memory')
    const stats = await adapter.getStats()
    assert.equal(stats.cache.mode, 'memory')
  })
})

// ---------------------------------------------------------------- environment

describe('environment', () => {
  async function withEnv(vars, fn) {
    const saved = {}
    for (const k of Object.keys(vars)) {
      saved[k] = process.env[k]
      process.env[k] = vars[k]
    }
    try {
      return await fn()
    } finally {
      for (const k of Object.keys(vars)) {
        if (saved[k] === undefined) delete process.env[k]
        else process.env[k] = saved[k]
      }
    }
  }

  test('CACHE_DEFAULT_TTL sets the generic default TTL', async (t) => {
    const { adapter, kv } = await withEnv({ CACHE_DEFAULT_TTL: '60' }, () => make(t))
    await adapter.set('d', 1)
    await assertTtl(kv('d'), 60)
  })

  test('REDIS_ENABLED=false and USE_REDIS=false disable Redis; the enabled option wins', async (t) => {
    for (const name of ['REDIS_ENABLED', 'USE_REDIS']) {
      const { adapter } = await withEnv({ [name]: 'false' }, () => make(t, {}, { wait: false }))
      assert.equal((await adapter.getStats()).redisEnabled, false, name)
      assert.equal((await adapter.healthCheck()).redis.status, 'disabled', name)
    }
    const { adapter } = await withEnv({ REDIS_ENABLED: 'false' }, () => make(t, { enabled: true }))
    assert.equal((await adapter.getStats()).redisEnabled, true)
  })

  test('REDIS_URL is used when no url option is given', async (t) => {
    const keyPrefix = uniquePrefix()
    const adapter = await withEnv({ REDIS_URL: server.url }, async () => new CacheAdapter({ keyPrefix }))
    t.after(() => guard(adapter.close(), 5000, 'close()'))
    await waitRedisHealthy(adapter)
    await adapter.set('e', 1)
    assert.equal(await server.cli('exists', `${keyPrefix}:kv:e`), '1')
  })
})
