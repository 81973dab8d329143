'use strict'
// The adapter behind Redis Sentinel (one master, one replica, three
// sentinels, all on loopback): it finds the master through the sentinels and
// follows a failover under load without rejecting a call or losing a write.
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startSentinel } = require('./helpers/redis')
const { sleep, guard, until } = require('./helpers/wait')
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

test('the master killed under 64-way load: no call rejects, no acknowledged write is lost', async () => {
  const adapter = new CacheAdapter({
    sentinels: setup.sentinelAddrs,
    sentinelMasterName: setup.name,
    keyPrefix: 'st',
    breakerCooldownMs: 300,
  })
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
    const oldPort = setup.master.port
    await setup.master.kill()
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
      const newMaster = setup.replicas.find((r) => r.port === newPort)
      assert.ok(Number(await newMaster.cli('dbsize')) >= keys.length, 'the writes are on the promoted replica')
    } finally {
      await fresh.close()
    }
    console.log(`sentinel failover: replica promoted ${failoverMs} ms after the kill; ${ops} calls, none rejected`)
  } finally {
    await adapter.close()
  }
})
