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

/** CPU time (ms) the `cache-io` thread of this process has used so far. */
function ioThreadCpuMs() {
  const fs = require('node:fs')
  for (const tid of fs.readdirSync('/proc/self/task')) {
    let comm = ''
    try {
      comm = fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim()
    } catch {
      continue
    }
    if (comm !== 'cache-io') continue
    // Fields after the parenthesised name: utime and stime are the 12th and 13th, in clock ticks (10 ms).
    const fields = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(fields[11]) + Number(fields[12])) * 10
  }
  throw new Error('no cache-io thread in this process')
}

async function cpuDuring(ms) {
  const before = ioThreadCpuMs()
  await new Promise((resolve) => setTimeout(resolve, ms))
  return ioThreadCpuMs() - before
}

test('the I/O thread busy-polls only around calls: asleep when idle, and not for a reply that is late', { skip: process.platform !== 'linux' }, async (t) => {
  const server = await startRedis()
  const cache = new CacheAdapter({ url: server.url, keyPrefix: `spin-${process.pid}`, alerts: false })
  t.after(async () => {
    await cache.close()
    await server.stop()
  })
  await until(async () => (await cache.getStats()).cache.mode === 'redis', 10000, 'serving from Redis')
  // One call at a time: the pattern busy-polling is for.
  for (let i = 0; i < 200; i++) assert.equal(await cache.set(`k${i % 10}`, i), true)

  const idle = await cpuDuring(600)
  assert.ok(idle <= 150, `an idle adapter's I/O thread used ${idle} ms of CPU in 600 ms`)

  // A paused Redis: the call waits up to commandTimeoutMs (250 ms) for a reply that does not come.
  await server.pause()
  t.after(() => server.resume())
  const late = cache.get('k1')
  const waiting = await cpuDuring(200)
  await late
  assert.ok(waiting <= 100, `the I/O thread used ${waiting} ms of CPU in 200 ms waiting for a late reply`)
})
