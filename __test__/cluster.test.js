'use strict'
// The adapter against a real three-node Redis Cluster (clusterNodes).
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startCluster } = require('./helpers/redis')
require('./helpers/env').isolateFromEnvironment()
const { CacheAdapter } = require('..')

let cluster
let adapter
before(async () => {
  cluster = await startCluster(3)
  adapter = new CacheAdapter({ clusterNodes: cluster.seeds, keyPrefix: 'cl' })
  for (let i = 0; i < 200 && adapter.mode !== 'redis'; i++) await new Promise((r) => setTimeout(r, 50))
})
after(async () => {
  await adapter?.close()
  await cluster?.stop()
})

test('connects to the cluster and reports it healthy', async () => {
  assert.equal(adapter.mode, 'redis')
  const health = await adapter.healthCheck()
  assert.equal(health.redis.status, 'healthy')
  assert.equal(health.redis.cluster, true)
})

test('one batch spanning many slots round-trips every call', async () => {
  const keys = Array.from({ length: 200 }, (_, i) => `key-${i}`)
  assert.equal(await adapter.setMany(keys.map((k, i) => [k, { i }])), true)
  const values = await adapter.getMany(keys)
  assert.deepEqual(values, keys.map((_, i) => ({ i })))
  assert.equal(await adapter.increment('counter', 5), 5)
  assert.equal(await adapter.hset('hash', 'f', [1]), true)
  assert.deepEqual(await adapter.hgetall('hash'), { f: [1] })
  // The keys really are spread over the nodes.
  const perNode = await Promise.all(cluster.nodes.map((n) => n.cli('dbsize')))
  assert.ok(perNode.filter((n) => Number(n) > 0).length >= 2, `keys on several nodes: ${perNode}`)
})

test('an org\'s keys share one hash slot, and clearing the org clears exactly them', async () => {
  for (let i = 0; i < 20; i++) await adapter.setConversationContext('org-a', `+1555000${i}`, [i])
  await adapter.setOrganizationData('org-a', 'Acme')
  await adapter.setConversationContext('org-b', '+15550001', ['b'])
  const slots = new Set()
  for (const node of cluster.nodes) {
    const keys = (await node.cli('--scan', '--pattern', 'cl:org:{org-a}:*')).split('\n').filter(Boolean)
    for (const k of keys) slots.add(await node.cli('cluster', 'keyslot', k))
  }
  assert.equal(slots.size, 1, 'every key of org-a is in one slot')
  assert.equal(await adapter.clearOrganizationCache('org-a'), 21)
  assert.equal(await adapter.getConversationContext('org-a', '+15550001'), null)
  assert.deepEqual(await adapter.getConversationContext('org-b', '+15550001'), ['b'])
})
