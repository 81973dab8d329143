'use strict'
// Operations: the Prometheus exposition, migrateFromMaps, mode-change
// observation and the stats an operator reads.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { redisForFile } = require('./helpers/redis')
const { guard } = require('./helpers/wait')
require('./helpers/env').isolateFromEnvironment()
const { CacheAdapter } = require('..')

const redis = redisForFile()

/**
 * An adapter once its first change to 'redis' has reached JavaScript (not
 * just the native mode: a listener added between the two saw that event).
 */
async function connected(options) {
  const adapter = new CacheAdapter({ url: redis.url, ...options })
  const first = new Promise((resolve) => {
    const on = (e) => {
      if (e.mode !== 'redis') return
      adapter.off('modeChange', on)
      resolve()
    }
    adapter.on('modeChange', on)
  })
  await guard(first, 5000, 'the adapter connects within 5 s')
  return adapter
}

/**
 * A strict reader of the text exposition format 0.0.4: every sample belongs
 * to a family declared by `# HELP` and `# TYPE`, names and labels are well
 * formed, values are numbers, histograms are cumulative and end at +Inf
 * with `_sum` and `_count`.
 */
function parseExposition(text) {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a newline')
  const families = new Map()
  const name = '[a-zA-Z_:][a-zA-Z0-9_:]*'
  const sample = new RegExp(`^(${name})(\\{(${name}="(?:[^"\\\\\\n]|\\\\.)*"(?:,${name}="(?:[^"\\\\\\n]|\\\\.)*")*)?\\})? (\\S+)$`)
  let current = null
  for (const line of text.slice(0, -1).split('\n')) {
    if (line.startsWith('# HELP ')) {
      const [, fam] = line.split(' ', 3).slice(1)
      current = { name: fam, type: null, samples: [] }
      assert.ok(!families.has(fam), `${fam} is declared once`)
      families.set(fam, current)
      continue
    }
    if (line.startsWith('# TYPE ')) {
      const [, fam, type] = line.split(' ').slice(1)
      assert.equal(fam, current?.name, `# TYPE ${fam} follows its # HELP`)
      assert.ok(['counter', 'gauge', 'histogram'].includes(type), `known type ${type}`)
      current.type = type
      continue
    }
    const m = sample.exec(line)
    assert.ok(m, `a well-formed sample line: ${JSON.stringify(line)}`)
    const [, metric, , labels, value] = m
    assert.ok(current && metric.startsWith(current.name), `${metric} belongs to the family above it`)
    const v = value === '+Inf' ? Infinity : Number(value)
    assert.ok(!Number.isNaN(v), `${metric} has a numeric value`)
    current.samples.push({ metric, labels: labels || '', value: v })
  }
  for (const fam of families.values()) {
    assert.ok(fam.type, `${fam.name} has a type`)
    if (fam.type === 'counter') assert.ok(fam.name.endsWith('_total') && fam.samples[0].value >= 0, `${fam.name} is a counter`)
    if (fam.type === 'histogram') {
      const buckets = fam.samples.filter((s) => s.metric === `${fam.name}_bucket`)
      assert.ok(buckets.length > 1)
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value, 'buckets are cumulative')
      assert.equal(buckets.at(-1).labels, 'le="+Inf"')
      const count = fam.samples.find((s) => s.metric === `${fam.name}_count`)
      assert.ok(fam.samples.some((s) => s.metric === `${fam.name}_sum`))
      assert.equal(count.value, buckets.at(-1).value, '_count equals the +Inf bucket')
    }
  }
  return families
}

test('metrics() is valid Prometheus text with the counters, gauges and histogram operators need', async () => {
  const adapter = await connected({ keyPrefix: 'ops-metrics' })
  try {
    await adapter.set('a', 1)
    await adapter.get('a')
    await adapter.get('missing')
    const families = parseExposition(await adapter.metrics())
    const value = (n) => families.get(n)?.samples[0].value
    for (const counter of ['cache_hits_total', 'cache_misses_total', 'cache_errors_total', 'cache_operations_total', 'cache_replays_total', 'cache_outages_total']) {
      assert.equal(families.get(counter)?.type, 'counter', counter)
    }
    for (const gauge of ['cache_mode_redis', 'cache_breaker_state', 'cache_memory_entries', 'cache_memory_bytes', 'cache_pool_connections']) {
      assert.equal(families.get(gauge)?.type, 'gauge', gauge)
    }
    assert.equal(families.get('cache_operation_duration_seconds')?.type, 'histogram')
    assert.ok(value('cache_hits_total') >= 1)
    assert.ok(value('cache_misses_total') >= 1)
    assert.ok(value('cache_operations_total') >= 3)
    assert.equal(value('cache_mode_redis'), 1)
    assert.equal(value('cache_breaker_state'), 0)
    assert.ok(value('cache_pool_connections') >= 1)
    assert.ok(value('cache_memory_entries') >= 1, 'the write went through to the memory tier')
  } finally {
    await adapter.close()
  }
})

test('a memory-only adapter reports the breaker as disabled, not open', async () => {
  const adapter = new CacheAdapter({ enabled: false })
  try {
    const families = parseExposition(await adapter.metrics())
    assert.equal(families.get('cache_breaker_state').samples[0].value, -1)
    assert.equal(families.get('cache_mode_redis').samples[0].value, 0)
    assert.equal((await adapter.getStats()).cache.breaker.state, 'disabled')
  } finally {
    await adapter.close()
  }
})

test('migrateFromMaps moves legacy Maps and objects into the cache, keyed as the old code keyed them', async () => {
  const adapter = await connected({ keyPrefix: 'ops-migrate' })
  try {
    const conversationContexts = new Map([
      ['org-1:15551230001', [{ role: 'user', content: 'hi' }]],
      ['15551230002', [{ role: 'assistant', content: 'global scope' }]],
    ])
    const conversationSummaries = { 'org-1:15551230001': { summary: 'wants a test ride' } }
    const phoneToLeadMapping = new Map([['+1 (555) 123-0003', 'lead-3']])
    const moved = await adapter.migrateFromMaps({ conversationContexts, conversationSummaries, phoneToLeadMapping })
    assert.deepEqual(moved, { conversationContexts: 2, conversationSummaries: 1, phoneToLeadMapping: 1, failed: 0 })

    assert.deepEqual(await adapter.getConversationContext('org-1', '+1 555 123 0001'), [{ role: 'user', content: 'hi' }])
    assert.deepEqual(await adapter.getConversationContext(null, '15551230002'), [{ role: 'assistant', content: 'global scope' }])
    assert.deepEqual(await adapter.getConversationSummary('org-1', '15551230001'), { summary: 'wants a test ride' })
    assert.equal(await adapter.getPhoneToLeadMapping('+15551230003'), 'lead-3')
    assert.equal(await adapter.getLeadToPhoneMapping('lead-3'), '+1 (555) 123-0003')
    // In Redis itself, not only in memory.
    const keys = (await redis.cli('--scan', '--pattern', 'ops-migrate:*')).split('\n').filter(Boolean)
    assert.ok(keys.length >= 5, `migrated keys are in Redis: ${keys.join(' ')}`)
    // Clearing the tenant finds the migrated entries.
    assert.equal(await adapter.clearOrganizationCache('org-1'), 2)
    assert.equal(await adapter.getConversationContext('org-1', '15551230001'), null)
  } finally {
    await adapter.close()
  }
})

test('migrateFromMaps counts entries it cannot move instead of failing the whole migration', async () => {
  const adapter = new CacheAdapter({ enabled: false })
  try {
    const circular = {}
    circular.self = circular
    const moved = await adapter.migrateFromMaps({
      conversationContexts: new Map([['org-1:1555', [1]], ['org-1:1556', circular]]),
      phoneToLeadMapping: { '1557': 42 },
    })
    assert.deepEqual(moved, { conversationContexts: 1, conversationSummaries: 0, phoneToLeadMapping: 0, failed: 2 })
    await assert.rejects(adapter.migrateFromMaps({ conversationContexts: 'nope' }), TypeError)
  } finally {
    await adapter.close()
  }
})

test('onModeChange and the modeChange event see a Redis outage and the recovery', async () => {
  const seen = []
  const events = []
  const adapter = await connected({
    keyPrefix: 'ops-mode',
    commandTimeoutMs: 100,
    breakerFailures: 1,
    breakerCooldownMs: 200,
    connectTimeoutMs: 300,
    onModeChange: (e) => seen.push(e),
  })
  adapter.on('modeChange', (e) => events.push(e))
  try {
    await redis.kill()
    for (let i = 0; i < 100 && adapter.mode !== 'memory'; i++) {
      await adapter.set('k', i)
      await new Promise((r) => setTimeout(r, 20))
    }
    assert.equal(adapter.mode, 'memory')
    await redis.restart()
    for (let i = 0; i < 200 && adapter.mode !== 'redis'; i++) await new Promise((r) => setTimeout(r, 25))
    assert.equal(adapter.mode, 'redis')
    await new Promise((r) => setTimeout(r, 50))
    // The callback also saw the first connection (memory → redis) at start.
    assert.deepEqual(seen.map((e) => e.mode), ['redis', 'memory', 'redis'])
    assert.deepEqual(events.map((e) => e.mode), ['memory', 'redis'])
    assert.ok(seen[1].reason.length > 0 && !Number.isNaN(Date.parse(seen[1].at)))
    const stats = (await adapter.getStats()).cache
    assert.ok(stats.outages >= 1)
    assert.equal(stats.breaker.state, 'closed')
  } finally {
    await adapter.close()
  }
})

test('a throwing onModeChange does not break the adapter', async () => {
  let calls = 0
  const adapter = await connected({
    keyPrefix: 'ops-throw',
    onModeChange: () => {
      calls++
      throw new Error('observer bug')
    },
  })
  try {
    assert.equal(calls, 1)
    assert.equal(await adapter.set('k', 1), true)
    assert.equal(await adapter.get('k'), 1)
    assert.throws(() => new CacheAdapter({ onModeChange: 'no' }), TypeError)
  } finally {
    await adapter.close()
  }
})
