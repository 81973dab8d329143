'use strict'
// The adapter behind Redis Sentinel (one master, one replica, three
// sentinels, all on loopback): it finds the master through the sentinels and
// follows a failover under load without rejecting a call or losing a write.
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startSentinel } = require('./helpers/redis')
const { sleep, guard, until } = require('./helpers/wait')
const near = require('./helpers/near')
require('./helpers/env').isolateFromEnvironment()
const { CacheAdapter } = require('..')

let setup
before(async () => {
  setup = await startSentinel()
})
after(async () => {
  await setup?.stop()
})

async function connected(adapter) {
  await until(() => adapter.mode === 'redis', 10000, 'the adapter connects through the sentinels')
}

test('bad sentinel options are TypeErrors naming the option', () => {
  assert.throws(() => new CacheAdapter({ sentinels: ['127.0.0.1:1'] }), { name: 'TypeError', message: /sentinelMasterName/ })
  assert.throws(() => new CacheAdapter({ sentinels: ['nohost'], sentinelMasterName: 'm' }), {
    name: 'TypeError',
    message: /options\.sentinels\[0\]/,
  })
  assert.throws(() => new CacheAdapter({ sentinels: '127.0.0.1:1', sentinelMasterName: 'm' }), { name: 'TypeError' })
})

test('finds the master through the sentinels (options and environment)', async () => {
  const adapter = new CacheAdapter({ sentinels: setup.sentinelAddrs, sentinelMasterName: setup.name, keyPrefix: 'st' })
  process.env.REDIS_SENTINELS = setup.sentinelAddrs.join(',')
  process.env.REDIS_SENTINEL_MASTER = setup.name
  const fromEnv = new CacheAdapter({ keyPrefix: 'st' })
  delete process.env.REDIS_SENTINELS
  delete process.env.REDIS_SENTINEL_MASTER
  try {
    await connected(adapter)
    await connected(fromEnv)
    assert.equal(await adapter.set('hello', { from: 'sentinel' }), true)
    assert.deepEqual(await fromEnv.get('hello'), { from: 'sentinel' })
    // It is on the master the sentinels name.
    assert.match(await setup.master.cli('get', 'st:kv:hello'), /sentinel/)
  } finally {
    await adapter.close()
    await fromEnv.close()
  }
})

test('the doctor checks the master the sentinels name', async () => {
  const { execFile } = require('node:child_process')
  const path = require('node:path')
  const bin = path.join(__dirname, '..', 'bin', 'doctor.js')
  const env = { ...process.env, REDIS_SENTINELS: setup.sentinelAddrs.join(','), REDIS_SENTINEL_MASTER: setup.name }
  const run = (extra) =>
    new Promise((resolve) => {
      execFile(process.execPath, [bin, 'doctor'], { env: { ...env, ...extra }, timeout: 30000 }, (err, stdout) =>
        resolve({ code: err ? err.code : 0, stdout: String(stdout) }),
      )
    })
  const good = await run({})
  assert.match(good.stdout, new RegExp(`PASS  sentinel +.*127\\.0\\.0\\.1:${setup.master.port}`), good.stdout)
  const bad = await run({ REDIS_SENTINEL_MASTER: 'nosuchmaster' })
  assert.notEqual(bad.code, 0)
  assert.match(bad.stdout, /FAIL  sentinel +no master "nosuchmaster"/, bad.stdout)
})

const viaSentinels = (options = {}) =>
  new CacheAdapter({ sentinels: setup.sentinelAddrs, sentinelMasterName: setup.name, alerts: false, ...options })

/** The server the sentinels name master now. */
async function masterNow() {
  const port = await setup.currentMaster()
  return [setup.master, ...setup.replicas].find((s) => s.port === port)
}

test('near cache behind Sentinel: 50 rounds of one instance writes, another reads within 100 ms; links killed at round 25', async () => {
  for (const [nearCache, kill] of [[true, false], [false, false], [true, true]]) {
    const { stats } = await near.rounds({
      makeAdapter: (n) => viaSentinels({ keyPrefix: `stn-${nearCache}-${kill}`, nearCache: n }),
      near: nearCache,
      kill,
      servers: async () => [await masterNow()],
      links: 2,
    })
    if (kill) assert.equal(stats.linkUp, true, 'the link came back')
  }
})

test('a managed failover (SENTINEL FAILOVER): the near cache follows the new master and is never stale', async () => {
  const reader = viaSentinels({ keyPrefix: 'stm', nearCache: true, breakerCooldownMs: 300 })
  const writer = viaSentinels({ keyPrefix: 'stm', breakerCooldownMs: 300 })
  try {
    await near.ready(reader, 'reader')
    await near.ready(writer, 'writer')
    assert.equal(await writer.set('k', { v: 'before' }), true)
    await near.freshWithinBound(() => reader.get('k'), { v: 'before' }, 'before the failover')
    const hitsBefore = (await near.nearStats(reader)).hits
    await reader.get('k')
    assert.ok((await near.nearStats(reader)).hits > hitsBefore, 'the reader holds k in its near cache')

    const oldMaster = await masterNow()
    await setup.sentinels[0].cli('sentinel', 'failover', setup.name)
    const promoted = await until(
      async () => {
        const now = await masterNow()
        return now && now !== oldMaster && /role:master/.test(await now.cli('info', 'replication')) && now
      },
      20000,
      'the sentinels switch masters',
      100,
    )
    // The old master is a replica now: once the writer has followed the switch, its write lands on the new one.
    await until(async () => (await writer.set('k', { v: 'after' })) && /"after"/.test(await promoted.cli('get', 'stm:kv:k')), 15000, 'a write reaches the new master', 100)
    await near.freshWithinBound(() => reader.get('k'), { v: 'after' }, 'after the failover')
    await near.ready(reader, 'the reader after the failover', 10000)
    assert.equal(await near.killLinks([oldMaster]), 0, 'no link is left on the demoted master')
    for (let round = 0; round < 20; round++) {
      await reader.get('k')
      assert.equal(await writer.set('k', { round }), true)
      await near.freshWithinBound(() => reader.get('k'), { round }, `round ${round} after the failover`)
    }
    assert.equal((await reader.getStats()).cache.near.links, 1)
  } finally {
    await reader.close()
    await writer.close()
  }
})

test('the master killed under 64-way load: no call rejects, no acknowledged write is lost', async () => {
  // The near cache is on: a read after an acknowledged write must not be answered by it stale.
  const adapter = viaSentinels({ keyPrefix: 'st', breakerCooldownMs: 300, nearCache: true })
  try {
    await connected(adapter)
    const acked = new Map()
    const rejected = []
    let ops = 0
    let stopAt = Infinity
    const deadline = Date.now() + 40000
    const loops = Array.from({ length: 64 }, async (_, w) => {
      for (let n = 0; n < 100000 && Date.now() < Math.min(stopAt, deadline); n++) {
        const key = `load-${w}-${n % 8}`
        try {
          if (n % 3 === 2) {
            const got = await adapter.get(key)
            if (acked.has(key)) assert.deepEqual(got, acked.get(key), `read of ${key} after its acknowledged write`)
          } else {
            const value = { w, n }
            assert.equal(await adapter.set(key, value), true)
            acked.set(key, value)
          }
          ops++
        } catch (err) {
          rejected.push(`${key}: ${err.message}`)
        }
        if (n % 16 === 15) await sleep(1)
      }
    })
    await sleep(500)
    const oldMaster = await masterNow()
    const oldPort = oldMaster.port
    await oldMaster.kill()
    const killedAt = Date.now()
    const newPort = await until(
      async () => {
        const port = await setup.currentMaster()
        return port && port !== oldPort && port
      },
      20000,
      'the sentinels promote the replica',
      100,
    )
    const failoverMs = Date.now() - killedAt
    // The load goes on until the adapter is back on Redis (the new master) with its journal replayed.
    await until(
      async () => {
        const s = (await adapter.getStats()).cache
        return s.mode === 'redis' && s.replay.pending === 0
      },
      15000,
      'the adapter is back on Redis, journal replayed',
      100,
    )
    stopAt = Date.now() + 1000
    await guard(Promise.all(loops), 45000, 'the load')
    assert.deepEqual(rejected.slice(0, 5), [], `${rejected.length} of ${ops} calls rejected`)
    assert.ok(ops > 500, `load ran: ${ops} calls`)
    await until(async () => (await adapter.getStats()).cache.replay.pending === 0, 15000, 'the journal replays', 100)

    // Every acknowledged write is on the new master, read by a fresh adapter through the sentinels.
    const fresh = new CacheAdapter({ sentinels: setup.sentinelAddrs, sentinelMasterName: setup.name, keyPrefix: 'st' })
    try {
      await connected(fresh)
      const keys = [...acked.keys()]
      const values = await fresh.getMany(keys)
      const lost = keys.filter((k, i) => JSON.stringify(values[i]) !== JSON.stringify(acked.get(k)))
      assert.deepEqual(lost.slice(0, 10), [], `${lost.length} of ${keys.length} acknowledged writes lost`)
      assert.equal((await fresh.getStats()).cache.servedFromMemory, 0)
      const newMaster = [setup.master, ...setup.replicas].find((r) => r.port === newPort)
      assert.ok(Number(await newMaster.cli('dbsize')) >= keys.length, 'the writes are on the promoted replica')
    } finally {
      await fresh.close()
    }
    await near.ready(adapter, 'the near cache on the new master', 10000)
    console.log(`sentinel failover: replica promoted ${failoverMs} ms after the kill; ${ops} calls, none rejected`)
  } finally {
    await adapter.close()
  }
})
