'use strict'
/**
 * A burst of large values must not make a healthy Redis look down (issue #9):
 * compressing them on the thread that reads the sockets and runs the timers
 * left replies unread until their commands timed out and the breaker opened.
 */
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { startRedis } = require('./helpers/redis')
const { guard, until } = require('./helpers/wait')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')

/** About 57 KB of JSON: 200 messages of varied text, as the benchmark's W3. */
function conversation(seed) {
  const words = ['order', 'delivery', 'tomorrow', 'account', 'refund', 'please', 'agent', 'thanks', 'address', 'number']
  return Array.from({ length: 200 }, (_, i) => ({
    role: i % 2 ? 'assistant' : 'user',
    content: Array.from({ length: 40 }, (_, j) => words[(seed * 31 + i * 7 + j * 3) % words.length] + ((seed + i + j) % 97)).join(' '),
    at: 1700000000000 + i,
  }))
}

test('a burst of 57 KB contexts on a healthy Redis: no command times out, the breaker stays closed', async (t) => {
  const server = await startRedis()
  const cache = new CacheAdapter({ url: server.url, keyPrefix: `io-${process.pid}`, breakerFailures: 3 })
  t.after(async () => {
    await cache.close()
    await server.stop()
  })
  await until(async () => (await cache.getStats()).cache.mode === 'redis', 10000, 'serving from Redis')
  const values = Array.from({ length: 20 }, (_, i) => conversation(i))
  assert.ok(JSON.stringify(values[0]).length > 50000)
  for (let round = 0; round < 3; round++) {
    const writes = Array.from({ length: 600 }, (_, i) => cache.setConversationContext('org-1', `+1555${round}${i}`, values[i % 20]))
    assert.ok((await guard(Promise.all(writes), 30000, 'the burst')).every((ok) => ok === true))
  }
  const s = (await cache.getStats()).cache
  assert.equal(s.redisErrors, 0, `no Redis command failed (last error: ${s.lastError})`)
  assert.equal(s.outages, 0, 'the breaker never opened')
  assert.equal(s.replay.pending, 0, 'nothing was journaled')
})
