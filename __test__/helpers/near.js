'use strict'
// The near cache's coherence check, shared by the single-server, cluster and
// Sentinel suites: two adapters, 50 rounds of one writing and the other
// reading, never a read staler than STALE_BOUND_MS after the acknowledged
// write; optionally with every invalidation link killed mid-run.
const assert = require('node:assert/strict')
const { performance } = require('node:perf_hooks')
const { sleep, guard, until } = require('./wait')

const LINK_NAME = 'cache-near-invalidation'
/** The guarantee: a read is never staler than this after another instance's acknowledged write. */
const STALE_BOUND_MS = 100

const nearStats = async (adapter) => (await guard(adapter.getStats(), 3000, 'getStats')).cache.near

/** Waits until the adapter's near cache may serve hits (or, near off, until it serves from Redis). */
function ready(a, what, ms = 5000) {
  return until(
    async () => {
      const s = (await guard(a.getStats(), 3000, 'getStats')).cache
      return s.mode === 'redis' && (!s.near.enabled || s.near.active)
    },
    ms,
    `${what} ready`,
  )
}

/**
 * Reads with `read` until it returns `expected` (deep-equal), from right after
 * the write's acknowledgement; fails if that takes STALE_BOUND_MS or more.
 * Returns whether the very first read was already fresh.
 */
async function freshWithinBound(read, expected, what) {
  const acked = performance.now()
  let last
  for (let i = 0; i < 10000; i++) {
    last = await read()
    if (JSON.stringify(last) === JSON.stringify(expected)) return i === 0
    if (performance.now() - acked >= STALE_BOUND_MS) break
    await sleep(1)
  }
  assert.fail(`${what}: still ${JSON.stringify(last)} ${STALE_BOUND_MS} ms after the write of ${JSON.stringify(expected)} was acknowledged`)
}

/** The client ids of the invalidation links on `server` (with `cli`). */
async function linkIds(server) {
  const list = await server.cli('client', 'list')
  return list
    .split('\n')
    .filter((l) => l.includes(` name=${LINK_NAME} `))
    .map((l) => /^id=(\d+)/.exec(l)[1])
}

/** `CLIENT KILL`s every invalidation link on `servers`; returns how many. */
async function killLinks(servers) {
  let killed = 0
  for (const server of servers) {
    const ids = await linkIds(server)
    for (const id of ids) await server.cli('client', 'kill', 'id', id)
    killed += ids.length
  }
  return killed
}

/**
 * 50 rounds: `writer` writes each of `keys` and a domain key, `reader` must
 * read them within the bound, also when the writer overwrites a value the
 * reader has just written itself (which its near cache keeps for a moment). With `kill`, every link on `servers()` is
 * killed at round 25 (`links` of them expected) and a write made while they
 * are down must never be served stale afterwards.
 */
async function rounds({ makeAdapter, near, keys = ['lead'], kill = false, servers, links = 2 }) {
  const writer = makeAdapter(near)
  const reader = makeAdapter(near)
  try {
    await ready(writer, 'writer')
    await ready(reader, 'reader')
    let firstReadFresh = 0
    for (let round = 0; round < 50; round++) {
      // The reader holds the old values (near on: in its near cache).
      for (const key of keys) await reader.get(key)
      for (const key of keys) await reader.get(key)
      await reader.getDynamicLead('L1')
      if (kill && round === 25) {
        const before = await nearStats(reader)
        assert.equal(await killLinks(await servers()), links, 'every adapter has its invalidation links')
        // Written while the reader's links are down: their invalidations are never delivered.
        for (const key of keys) await writer.set(key, { round, during: 'outage' })
        await until(async () => (await nearStats(reader)).flushes > before.flushes, 2000, 'the reader flushes its near cache')
        assert.equal((await nearStats(reader)).entries, 0)
        for (const key of keys) await freshWithinBound(() => reader.get(key), { round, during: 'outage' }, `round ${round}, ${key}, links down`)
        await ready(reader, 'reader after CLIENT KILL')
        for (const key of keys) {
          assert.deepEqual(await reader.get(key), { round, during: 'outage' }, 'a missed invalidation served stale after the links came back')
        }
      }
      for (const key of keys) {
        const value = { round, key, at: Date.now() }
        assert.equal(await writer.set(key, value), true)
        if (await freshWithinBound(() => reader.get(key), value, `round ${round}, ${key}`)) firstReadFresh++
        // The reader's own write, which its near cache keeps for a moment, overwritten by the writer at once.
        const own = { round, key, by: 'reader' }
        assert.equal(await reader.set(key, own), true)
        assert.deepEqual(await reader.get(key), own, 'the reader reads its own write back')
        const over = { round, key, by: 'writer' }
        assert.equal(await writer.set(key, over), true)
        await freshWithinBound(() => reader.get(key), over, `round ${round}, ${key}, over the reader's own write`)
      }
      await writer.setDynamicLead('L1', { name: `lead ${round}` })
      await freshWithinBound(() => reader.getDynamicLead('L1'), { name: `lead ${round}` }, `round ${round}, domain key`)
    }
    const stats = await nearStats(reader)
    if (near) {
      assert.ok(stats.hits > 50, `the near cache answered repeated reads (hits ${stats.hits})`)
      assert.ok(stats.invalidations >= 100, `invalidations arrived (${stats.invalidations})`)
    } else {
      assert.equal(stats.enabled, false)
      assert.equal(stats.hits, 0)
    }
    return { firstReadFresh, stats }
  } finally {
    await writer.close()
    await reader.close()
  }
}

module.exports = { LINK_NAME, STALE_BOUND_MS, nearStats, ready, freshWithinBound, linkIds, killLinks, rounds }
