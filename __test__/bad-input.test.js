'use strict'
/**
 * Bad input: each row of the README's "Bad input" table gets what the table
 * says, and a rejected call never writes anything. Also: values above
 * `maxValueBytes`, thousands of loaders that never settle, loader errors that
 * keep their class and code, and a cached null in getOrLoad.
 */
const { describe, test } = require('node:test')
const assert = require('node:assert/strict')
const v8 = require('node:v8')
const vm = require('node:vm')
const { startRedis, redisForFile } = require('./helpers/redis')
const { guard, until, sleep } = require('./helpers/wait')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')

const server = redisForFile()
let seq = 0


async function make(t, opts = {}) {
  const keyPrefix = `bad-${process.pid}-${++seq}`
  const adapter = new CacheAdapter({ url: server.url, keyPrefix, ...opts })
  t.after(() => guard(adapter.close(), 5000, 'close()'))
  await until(async () => (await guard(adapter.healthCheck(), 3000, 'healthCheck')).redis.status === 'healthy', 5000, 'Redis healthy')
  return { adapter, keyPrefix }
}

/** Every key under the adapter's prefix, as Redis has them. */
async function keysOf(keyPrefix) {
  const out = await server.cli('--scan', '--pattern', `${keyPrefix}:*`)
  return out ? out.split('\n').filter(Boolean).sort() : []
}

/** Rejects (or throws) with `Class`, and the message matches `pattern`. */
async function rejectsWith(fn, Class, pattern, what) {
  await assert.rejects(
    async () => fn(),
    (e) => {
      assert.ok(e instanceof Class, `${what}: expected ${Class.name}, got ${e && e.constructor && e.constructor.name}: ${e && e.message}`)
      if (pattern) assert.match(e.message, pattern, what)
      return true
    },
    what,
  )
}

// ---------------------------------------------------------------- maxValueBytes

describe('maxValueBytes', () => {
  test('default 8 MiB, from the resolved config; a larger value is a RangeError and nothing is written', async (t) => {
    const { adapter, keyPrefix } = await make(t)
    assert.equal((await adapter.getStats()).cache.config.maxValueBytes, 8 * 1024 * 1024)
    const big = 'x'.repeat(8 * 1024 * 1024) // 2 more bytes of JSON than the limit
    await rejectsWith(() => adapter.set('big', big), RangeError, /value is 8388610 bytes of JSON, above maxValueBytes \(8388608\)/, 'set 8 MiB + 2')
    assert.equal(await adapter.set('fits', big.slice(2)), true, 'exactly 8 MiB of JSON fits')
    assert.deepStrictEqual(await keysOf(keyPrefix), [`${keyPrefix}:kv:fits`])
  })

  test('every value-carrying call checks the bytes of its JSON before anything is queued', async (t) => {
    const { adapter, keyPrefix } = await make(t, { maxValueBytes: 1000 })
    const fits = 'a'.repeat(998) // "…" = 1000 bytes
    const over = 'a'.repeat(999)
    // Multi-byte text: under 1000 UTF-16 units, over 1000 UTF-8 bytes.
    const wide = 'é'.repeat(500) // 1002 bytes
    const wider = '東京'.repeat(200) // 1202 bytes in 400 units
    assert.equal(await adapter.set('k', fits), true)
    assert.equal(await adapter.set('w', 'é'.repeat(499)), true, '998 + 2 bytes fits')
    for (const [value, bytes] of [[over, 1001], [wide, 1002], [wider, 1202]]) {
      await rejectsWith(() => adapter.set('k', value), RangeError, new RegExp(`^value is ${bytes} bytes of JSON, above maxValueBytes \\(1000\\)$`), `set ${bytes}`)
    }
    assert.equal(await adapter.get('k'), fits, 'the stored value is untouched')

    // setMany: one entry too large, nothing of the batch written.
    await rejectsWith(() => adapter.setMany({ m1: 1, m2: over, m3: 3 }), RangeError, /entries\[1\] value .*maxValueBytes \(1000\)/, 'setMany')
    await rejectsWith(() => adapter.setMany([['m1', 1], ['m3', wide]]), RangeError, /entries\[1\] value/, 'setMany pairs')
    await rejectsWith(() => adapter.setMany(new Map([['m1', wider]])), RangeError, /entries\[0\] value/, 'setMany Map')
    assert.deepStrictEqual(await adapter.getMany(['m1', 'm2', 'm3']), [null, null, null])

    await rejectsWith(() => adapter.hset('h', 'f', over), RangeError, /^value is 1001 bytes/, 'hset')
    assert.deepStrictEqual(await adapter.hgetall('h'), {})

    // Domain setters name their own value argument.
    await adapter.setConversationContext('org', '+1555', ['small'])
    await rejectsWith(() => adapter.setConversationContext('org', '+1555', [over]), RangeError, /^messages is \d+ bytes/, 'setConversationContext')
    assert.deepStrictEqual(await adapter.getConversationContext('org', '+1555'), ['small'])
    await rejectsWith(() => adapter.setDynamicLead('lead-1', { notes: over }), RangeError, /^lead is \d+ bytes/, 'setDynamicLead')
    await rejectsWith(() => adapter.setSSEResponseCache('lead-1', '+1555', wide), RangeError, /maxValueBytes/, 'setSSEResponseCache')
    assert.equal(await adapter.getDynamicLead('lead-1'), null)

    // getOrLoad: a loader's result too large reaches every caller as a RangeError; nothing cached.
    let calls = 0
    const loader = async () => {
      calls++
      await new Promise((resolve) => setTimeout(resolve, 20))
      return over
    }
    const settled = await guard(Promise.allSettled([1, 2, 3].map(() => adapter.getOrLoad('gl', loader))), 5000, 'getOrLoad')
    for (const s of settled) {
      assert.equal(s.status, 'rejected')
      assert.ok(s.reason instanceof RangeError, `${s.reason}`)
      assert.match(s.reason.message, /^loader result is 1001 bytes of JSON, above maxValueBytes \(1000\)$/)
    }
    assert.equal(calls, 1)
    assert.equal(await adapter.exists('gl'), false)

    // The process-local fallback maps are checked too (synchronously).
    adapter.setInFallbackMap('legacy', 'k', 'small')
    assert.throws(() => adapter.setInFallbackMap('legacy', 'k', over), RangeError)
    assert.equal(adapter.getFromFallbackMap('legacy', 'k'), 'small')

    assert.deepStrictEqual(await keysOf(keyPrefix), [`${keyPrefix}:kv:k`, `${keyPrefix}:kv:w`, `${keyPrefix}:org:{org}:ctx:1555`].sort())
  })

  test('CACHE_MAX_VALUE_BYTES sets it, the option wins, and bad limits are refused at construction', async (t) => {
    process.env.CACHE_MAX_VALUE_BYTES = '500'
    t.after(() => delete process.env.CACHE_MAX_VALUE_BYTES)
    const fromEnv = new CacheAdapter({ enabled: false })
    t.after(() => fromEnv.close())
    assert.equal((await fromEnv.getStats()).cache.config.maxValueBytes, 500)
    await rejectsWith(() => fromEnv.set('k', 'x'.repeat(600)), RangeError, /maxValueBytes \(500\)/, 'env limit')
    const fromOption = new CacheAdapter({ enabled: false, maxValueBytes: 2000 })
    t.after(() => fromOption.close())
    assert.equal(await fromOption.set('k', 'x'.repeat(600)), true)

    process.env.CACHE_MAX_VALUE_BYTES = 'lots'
    assert.throws(() => new CacheAdapter({ enabled: false }), (e) => e instanceof TypeError && /CACHE_MAX_VALUE_BYTES/.test(e.message))
    delete process.env.CACHE_MAX_VALUE_BYTES
    for (const bad of [0, -1, 1.5, 512 * 1024 * 1024 + 1]) {
      assert.throws(() => new CacheAdapter({ enabled: false, maxValueBytes: bad }), (e) => e instanceof RangeError && /options\.maxValueBytes/.test(e.message), `maxValueBytes ${bad}`)
    }
    assert.throws(() => new CacheAdapter({ enabled: false, maxValueBytes: '1mb' }), TypeError)
  })

  test('CACHE_IO_SPIN_US: a bad window is refused at construction, naming the variable', async (t) => {
    t.after(() => delete process.env.CACHE_IO_SPIN_US)
    for (const bad of ['fast', '-1', '1.5', '10001']) {
      process.env.CACHE_IO_SPIN_US = bad
      assert.throws(() => new CacheAdapter({ enabled: false }), (e) => e instanceof TypeError && /CACHE_IO_SPIN_US/.test(e.message), bad)
    }
    for (const good of ['0', '250', '']) {
      process.env.CACHE_IO_SPIN_US = good
      const adapter = new CacheAdapter({ enabled: false })
      assert.equal(await adapter.set('k', good), true)
      await adapter.close()
    }
  })
})

// ---------------------------------------------------------------- loaders

describe('getOrLoad under bad loaders', () => {
  test('2000 loaders that never settle: every caller rejects after about loaderTimeoutMs and the single-flight maps empty', async (t) => {
    const { adapter, keyPrefix } = await make(t, { loaderTimeoutMs: 300 })
    let releaseRequest
    adapter.setInflightRequest('unrelated', new Promise((resolve) => (releaseRequest = resolve)))
    const N = 2000
    let calls = 0
    const never = () => {
      calls++
      return new Promise(() => {})
    }
    const started = Date.now()
    const all = Promise.allSettled(Array.from({ length: N }, (_, i) => adapter.getOrLoad(`stuck-${i}`, never)))
    const during = await until(async () => {
      const s = (await adapter.getStats()).cache
      return s.inflight.loads > 0 ? s : null
    }, 5000, 'loads in flight')
    assert.ok(during.inflight.loads <= N)
    const settled = await guard(all, 20000, `${N} stuck loaders`)
    const elapsed = Date.now() - started
    assert.equal(calls, N, 'one loader call per key')
    for (const s of settled) {
      assert.equal(s.status, 'rejected')
      assert.equal(s.reason.code, 'ERR_CACHE_LOADER')
      assert.match(s.reason.message, /did not settle within 300 ms/)
    }
    assert.ok(elapsed >= 290, `callers waited for the loader timeout (${elapsed} ms)`)
    assert.ok(elapsed < 10000, `and not much longer (${elapsed} ms for ${N})`)

    const stats = await adapter.getStats()
    assert.deepStrictEqual(stats.cache.inflight, { reads: 0, loads: 0 })
    assert.equal(stats.fallbackMaps.inflightRequests, 1, "the caller's own in-flight requests are not touched")
    assert.deepStrictEqual(await keysOf(keyPrefix), [], 'nothing cached')
    assert.equal(await adapter.getOrLoad('stuck-7', () => 'fine'), 'fine', 'the key loads again')
    releaseRequest()
  })

  test('a loader error keeps its class, message and code for every caller sharing the load', async (t) => {
    const { adapter } = await make(t)
    class NotFoundError extends Error {
      constructor(message) {
        super(message)
        this.name = 'NotFoundError'
        this.code = 'E_NOT_FOUND'
      }
    }
    const failures = [
      ['TypeError', () => Object.assign(new TypeError('lead id is not a uuid'), { code: 'E_UUID' }), TypeError],
      ['RangeError', () => new RangeError('page out of range'), RangeError],
      ['Error with code', () => Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:5432'), { code: 'ECONNREFUSED' }), Error],
      ['custom class', () => new NotFoundError('no such lead'), Error],
    ]
    for (const [label, make, Class] of failures) {
      for (const sync of [false, true]) {
        const key = `${label}-${sync}`
        let calls = 0
        let original
        const loader = sync
          ? () => {
              calls++
              throw (original = make())
            }
          : async () => {
              calls++
              await new Promise((resolve) => setTimeout(resolve, 30))
              throw (original = make())
            }
        const settled = await guard(Promise.allSettled([1, 2, 3, 4].map(() => adapter.getOrLoad(key, loader))), 5000, key)
        // A sync loader may fail before every caller has joined its flight.
        if (sync) assert.ok(calls >= 1, key)
        else assert.equal(calls, 1, key)
        for (const s of settled) {
          assert.equal(s.status, 'rejected', key)
          const e = s.reason
          assert.ok(e instanceof Class, `${key}: ${e && e.constructor.name}`)
          // A class of the caller's own cannot cross to the other callers: they get an Error of that name.
          const expected = original instanceof NotFoundError && e !== original ? Error : original.constructor
          assert.equal(e.constructor, expected, key)
          assert.equal(e.name, original.name, key)
          assert.equal(e.message, original.message, key)
          assert.equal(e.code, original.code, key)
        }
        if (!sync) assert.ok(settled.some((s) => s.reason === original), `${key}: the caller whose loader ran gets the very error`)
        assert.equal(await adapter.exists(key), false, `${key}: nothing cached`)
      }
    }
    // Not an Error at all: the caller whose loader ran gets the thrown value.
    const thrown = await adapter.getOrLoad('str', () => Promise.reject('plain string')).catch((e) => e)
    assert.equal(thrown, 'plain string')
  })

  test("a cached null is a hit: the loader is not called again and no second miss is counted", async (t) => {
    const { adapter } = await make(t)
    let calls = 0
    const notFound = async () => {
      calls++
      return null
    }
    const s0 = (await adapter.getStats()).cache
    assert.equal(await adapter.getOrLoad('nf', notFound), null)
    const s1 = (await adapter.getStats()).cache
    assert.equal(s1.misses - s0.misses, 1, 'one miss for one missing key')
    assert.equal(s1.hits - s0.hits, 0)
    assert.equal(await adapter.getOrLoad('nf', notFound), null)
    const s2 = (await adapter.getStats()).cache
    assert.equal(calls, 1, 'the remembered "not found" answers')
    assert.equal(s2.hits - s1.hits, 1, 'one hit')
    assert.equal(s2.misses - s1.misses, 0, 'no miss')
    assert.equal(s2.loaderCalls - s1.loaderCalls, 0)
    // A value stored by set(…, null) counts the same way.
    await adapter.set('stored-null', null)
    assert.equal(await adapter.getOrLoad('stored-null', () => (calls++, 'loaded')), null)
    assert.equal(calls, 1)
  })
})

// ---------------------------------------------------------------- the README table

describe("the README's bad-input table", () => {
  test('each kind of bad input gets what the table says, and writes nothing', async (t) => {
    const { adapter, keyPrefix } = await make(t, { maxValueBytes: 4096 })
    const circular = {}
    circular.self = circular
    const rows = [
      ['a key, hash, field or id that is not a string', () => adapter.set(42, 1), TypeError, /^key must be a string/],
      ['… in a domain method', () => adapter.setDynamicLead({ id: 1 }, {}), TypeError, /^leadId must be a string/],
      ['an orgId that is not a string, null or undefined', () => adapter.setConversationContext(7, '+1', []), TypeError, /^orgId must be a string/],
      ['a value JSON cannot represent: undefined', () => adapter.set('k', undefined), TypeError, /^value must be a JSON value/],
      ['… a function', () => adapter.set('k', () => 1), TypeError, /^value cannot be stored as JSON/],
      ['… a BigInt', () => adapter.set('k', 10n), TypeError, /^value cannot be stored as JSON/],
      ['… a circular object', () => adapter.set('k', circular), TypeError, /^value cannot be stored as JSON/],
      ['a value above maxValueBytes', () => adapter.set('k', 'x'.repeat(5000)), RangeError, /^value is 5002 bytes of JSON, above maxValueBytes \(4096\)$/],
      ['a TTL that is not a number', () => adapter.set('k', 1, '60'), TypeError, /^ttl must be a number of seconds/],
      ['a TTL that is 0, negative, NaN or infinite', () => adapter.set('k', 1, -5), RangeError, /^ttl must be a positive finite number/],
      ['… expire', () => adapter.expire('k', 0), RangeError, /^ttl must be a positive/],
      ['increment by a non-number', () => adapter.increment('n', '1'), TypeError, /^by must be a number/],
      ['increment by a fraction or beyond 2^53', () => adapter.increment('n', 0.5), RangeError, /^by must be a safe integer/],
      ['getMany without an array', () => adapter.getMany('k'), TypeError, /^keys must be an array/],
      ['setMany with neither object, Map nor pairs', () => adapter.setMany(5), TypeError, /^entries must be/],
      ['… an entry that is not a pair', () => adapter.setMany([['ok', 1], 'x']), TypeError, /^entries\[1\] must be a \[key, value\] pair/],
      ['a loader that is not a function', () => adapter.getOrLoad('k', 'db'), TypeError, /^loader must be a function/],
    ]
    for (const [what, call, Class, pattern] of rows) await rejectsWith(call, Class, pattern, what)
    assert.deepStrictEqual(await keysOf(keyPrefix), [], 'no rejected call wrote anything')

    // Synchronous, process-local methods throw instead of rejecting.
    assert.throws(() => adapter.createOrgKey('org', 5), TypeError)
    assert.throws(() => adapter.setInFallbackMap('m', 'k', 1n), TypeError)

    // Redis refuses the data: an Error with a code, the value untouched.
    await adapter.set('text', 'not a number')
    const e = await adapter.increment('text').catch((err) => err)
    assert.ok(e instanceof Error && e.code === 'ERR_CACHE_COMMAND', `${e && e.message}`)
    assert.equal(await adapter.get('text'), 'not a number')

    // Options: unknown, wrong type, out of range: thrown by the constructor.
    assert.throws(() => new CacheAdapter({ enabled: false, ttlSeconds: 5 }), (err) => err instanceof TypeError && /options\.ttlSeconds is not a known option/.test(err.message))
    assert.throws(() => new CacheAdapter({ url: server.url, port: 'x' }), (err) => err instanceof TypeError && /options\.port/.test(err.message))
    assert.throws(() => new CacheAdapter({ enabled: false, poolSize: 0 }), (err) => err instanceof RangeError && /options\.poolSize/.test(err.message))

    // After close(): every call rejects with ERR_CACHE_CLOSED.
    const closed = new CacheAdapter({ enabled: false })
    await closed.close()
    const c = await closed.set('k', 1).catch((err) => err)
    assert.equal(c.code, 'ERR_CACHE_CLOSED')
  })
})

// ---------------------------------------------------------------- forgetting close()

describe('an adapter that is never closed', () => {
  test('is garbage-collected, and its connections close at once, even while its breaker waits out a long cooldown', async (t) => {
    v8.setFlagsFromString('--expose-gc')
    const gc = vm.runInNewContext('gc')
    const own = await startRedis()
    t.after(() => own.stop())
    const clients = async () => (await own.cli('client', 'list')).split('\n').filter(Boolean).length - 1 // not redis-cli's own

    // Connected, then a stall opens the breaker for a minute: the pool stays open, no probe runs.
    const strand = async () => {
      const adapter = new CacheAdapter({ url: own.url, poolSize: 2, commandTimeoutMs: 100, breakerFailures: 1, breakerCooldownMs: 60000 })
      await until(async () => (await guard(adapter.healthCheck(), 3000, 'healthCheck')).redis.status === 'healthy', 5000, 'Redis healthy')
      own.pause()
      try {
        assert.equal(await guard(adapter.set('k', 1), 5000, 'set during the stall'), true)
        await until(async () => (await adapter.getStats()).cache.breaker.state === 'open', 5000, 'breaker open')
      } finally {
        own.resume()
      }
      assert.equal((await adapter.getStats()).cache.breaker.state, 'open')
    }
    await strand()
    assert.ok((await clients()) >= 2, "the stranded adapter's connections are open")

    let open = await clients()
    for (let i = 0; i < 100 && open > 0; i++) {
      gc()
      await sleep(50)
      open = await clients()
    }
    assert.equal(open, 0, 'the adapter, its supervisor and its connections are gone (the cooldown had 55 s left)')
  })
})
