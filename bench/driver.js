'use strict'
// One benchmark cell in its own process: (system, workload, in-flight count).
// run.js forks this file with the cell as JSON in argv[2]; the result goes back
// over IPC. Own process per cell, so the main thread's CPU time and the event
// loop's delay belong to one system only.
//
// Steps: FLUSHALL, open the system, pre-populate every key through the system's
// own setters, check a read-back, measure Redis bytes per entry, warm up, then
// a closed loop: `inflight` workers each awaiting one op at a time for a fixed
// time, latencies in a preallocated array. Every loop is bounded in count and
// in time.

const fs = require('node:fs')
const path = require('node:path')
const { performance, monitorEventLoopDelay } = require('node:perf_hooks')
const Redis = require('ioredis')
const { makeWorkload, prng } = require('./workloads')
const { sleep, withTimeout } = require('./harness')

/**
 * This adapter (or, for the `base` systems, the build in `baseDir`: a
 * checkout of an earlier commit, to measure a change side by side), once it
 * reports Redis healthy (it serves from memory until then) and, with
 * `nearCache`, its near cache active: otherwise we would measure the memory tier.
 */
async function openAdapter(dir, url, near) {
  const { CacheAdapter } = require(dir)
  const a = new CacheAdapter({ url, keyPrefix: 'bench', ...(near ? { nearCache: true } : {}) })
  const until = Date.now() + 10000
  for (let i = 0; i < 200 && Date.now() < until; i++) {
    const s = (await a.getStats()).cache
    if (s.mode === 'redis' && (!near || s.near.active)) return a
    await sleep(50)
  }
  await a.close()
  throw new Error(`the adapter in ${dir} did not report Redis healthy${near ? ' and its near cache active' : ''} within 10 s`)
}

/**
 * An adapter that does nothing: values in a Map, Promises already settled.
 * Run through the same loop, it shows what the loop itself costs and how
 * far any client could go in it on this machine.
 */
class NothingAdapter {
  constructor() {
    this.leads = new Map()
    this.contexts = new Map()
  }
  getPhoneToLeadMapping(phone) {
    return Promise.resolve(this.leads.get(phone) ?? null)
  }
  setPhoneToLeadMapping(phone, lead) {
    this.leads.set(phone, lead)
    return Promise.resolve()
  }
  getConversationContext(org, phone) {
    return Promise.resolve(this.contexts.get(phone) ?? null)
  }
  setConversationContext(org, phone, context) {
    this.contexts.set(phone, context)
    return Promise.resolve()
  }
  async close() {}
}

const HERE = path.join(__dirname, '..')
const SYSTEMS = {
  'loop-only': { open: async () => new NothingAdapter(), noRedis: true },
  native: { open: (url) => openAdapter(HERE, url, false) },
  'native-near': { open: (url) => openAdapter(HERE, url, true) },
  base: { open: (url, cell) => openAdapter(cell.baseDir, url, false) },
  'base-near': { open: (url, cell) => openAdapter(cell.baseDir, url, true) },
  'ioredis-old': {
    async open(url) {
      const { IoredisOldAdapter } = require('./baselines/ioredis-adapter')
      const a = new IoredisOldAdapter({ url, keyPrefix: 'bench' })
      await a.ready()
      return a
    },
  },
  'node-redis-old': {
    async open(url) {
      const { NodeRedisOldAdapter } = require('./baselines/node-redis-adapter')
      const a = new NodeRedisOldAdapter({ url, keyPrefix: 'bench' })
      await a.ready()
      return a
    },
  },
}



/**
 * ns on CPU per kind of thread of this process (first field of each
 * thread's schedstat): Node's main thread (tid == pid), this adapter's I/O
 * thread (`cache-io`), tokio's blocking pool (large values' compression),
 * and the rest (V8's GC helpers, libuv's pool). A thread that ended between
 * two readings takes its time with it: these are for threads that live
 * through the run, as all of these do.
 */
function threadCpuNs() {
  const out = { main: NaN, io: 0, pool: 0, other: 0 }
  let tids
  try {
    tids = fs.readdirSync('/proc/self/task')
  } catch {
    return out
  }
  for (const tid of tids) {
    try {
      const ns = Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0])
      const name = fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim()
      if (Number(tid) === process.pid) out.main = ns
      else if (name === 'cache-io') out.io += ns
      else if (name.startsWith('tokio')) out.pool += ns
      else out.other += ns
    } catch {
      // The thread ended while being read.
    }
  }
  return out
}

function parseInfo(text) {
  const out = {}
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':')
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1)
  }
  return out
}

async function serverCounters(admin) {
  const i = parseInfo(await admin.info())
  return {
    cpuSec: Number(i.used_cpu_sys) + Number(i.used_cpu_user),
    commands: Number(i.total_commands_processed),
    usedMemory: Number(i.used_memory),
  }
}

/** Sum of MEMORY USAGE (all samples) over every key in the DB, and the key count. */
async function redisBytes(admin) {
  let cursor = '0'
  let bytes = 0
  let nkeys = 0
  for (let iter = 0; iter < 100000; iter++) {
    const [next, batch] = await admin.scan(cursor, 'COUNT', 1000)
    if (batch.length) {
      const p = admin.pipeline()
      for (const k of batch) p.memory('USAGE', k, 'SAMPLES', 0)
      for (const [err, n] of await p.exec()) if (!err && n) bytes += Number(n)
      nkeys += batch.length
    }
    cursor = next
    if (cursor === '0') break
  }
  return { bytes, nkeys }
}

/** Write every key once through the system itself, a few at a time. */
async function populate(a, w, deadlineMs) {
  let next = 0
  const deadline = performance.now() + deadlineMs
  async function worker() {
    while (next < w.keys && performance.now() < deadline) {
      const k = next++
      await w.set(a, k, k)
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  if (next < w.keys) throw new Error(`populate wrote ${next}/${w.keys} keys before its deadline`)
}

/**
 * Closed loop: `inflight` workers, each awaiting one op at a time, until
 * `ms` elapses or `lat` is full. Returns counts; latencies (ms) go to `lat`.
 */
async function closedLoop(a, w, inflight, ms, lat, seed) {
  const cap = lat.length
  const deadline = performance.now() + ms
  let n = 0
  let errors = 0
  let misses = 0
  let lastError = null
  async function worker(id) {
    const r = prng(seed * 1000 + id)
    while (n < cap) {
      const t0 = performance.now()
      if (t0 >= deadline) break
      const k = (r() * w.keys) | 0
      try {
        if (r() < w.getShare) {
          if ((await w.get(a, k)) === null) misses++
        } else {
          await w.set(a, k, (r() * w.poolSize) | 0)
        }
      } catch (e) {
        errors++
        lastError = String(e && e.message ? e.message : e)
      }
      if (n < cap) lat[n++] = performance.now() - t0
    }
  }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: inflight }, (_, i) => worker(i)))
  return { ops: n, elapsedMs: performance.now() - t0, errors, misses, lastError }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

/** The near cache's hit and miss counters (zero for a system without one). */
async function nearCounts(a) {
  const near = typeof a.getStats === 'function' ? (await a.getStats()).cache?.near : undefined
  return { hits: near?.hits ?? 0, misses: near?.misses ?? 0 }
}

async function runCell(cell) {
  // Straight to Redis, never through the delay proxy: FLUSHALL, INFO, MEMORY USAGE.
  const admin = new Redis(cell.adminUrl || cell.url, { maxRetriesPerRequest: 1 })
  let a = null
  try {
    await admin.flushall()
    const w = makeWorkload(cell.workload, cell.keys)
    a = await withTimeout(SYSTEMS[cell.system].open(cell.url, cell), 15000, 'open')

    const mem0 = await serverCounters(admin)
    await withTimeout(populate(a, w, 30000), 35000, 'populate')
    // read-back check: what we wrote is what we get
    for (const k of [0, w.keys >> 1, w.keys - 1]) {
      const got = await w.get(a, k)
      if (JSON.stringify(got) !== JSON.stringify(w.value(k))) {
        throw new Error(`read-back of key ${k} differs from what was written (got ${JSON.stringify(got).slice(0, 80)})`)
      }
    }
    const { bytes, nkeys } = await redisBytes(admin)
    if (nkeys === 0 && !SYSTEMS[cell.system].noRedis) throw new Error('nothing reached Redis after populate')
    const mem1 = await serverCounters(admin)

    const lat = new Float64Array(Math.min(4e6, Math.max(1e5, Math.ceil(cell.seconds * 400000))))
    if (cell.warmupSeconds > 0) await closedLoop(a, w, cell.inflight, cell.warmupSeconds * 1000, lat, cell.seed + 7)

    const eld = monitorEventLoopDelay({ resolution: 1 })
    const near0 = await nearCounts(a)
    const srv0 = await serverCounters(admin)
    eld.enable()
    const cpu0 = process.cpuUsage()
    const threads0 = threadCpuNs()
    const run = await closedLoop(a, w, cell.inflight, cell.seconds * 1000, lat, cell.seed)
    const threads1 = threadCpuNs()
    const cpu = process.cpuUsage(cpu0)
    eld.disable()
    const srv1 = await serverCounters(admin)
    const near1 = await nearCounts(a)
    const nearReads = near1.hits - near0.hits + near1.misses - near0.misses

    const sorted = lat.subarray(0, run.ops).sort()
    const ops = Math.max(1, run.ops)
    return {
      ok: true,
      ops: run.ops,
      seconds: run.elapsedMs / 1000,
      opsPerSec: run.ops / (run.elapsedMs / 1000),
      p50ms: percentile(sorted, 50),
      p99ms: percentile(sorted, 99),
      eldP99ms: eld.percentile(99) / 1e6,
      cpuUsPerOp: (cpu.user + cpu.system) / ops,
      mainUsPerOp: (threads1.main - threads0.main) / 1000 / ops,
      ioUsPerOp: (threads1.io - threads0.io) / 1000 / ops,
      poolUsPerOp: (threads1.pool - threads0.pool) / 1000 / ops,
      otherUsPerOp: (threads1.other - threads0.other) / 1000 / ops,
      bytesPerEntry: bytes / w.keys,
      redisKeys: nkeys,
      usedMemoryPerEntry: (mem1.usedMemory - mem0.usedMemory) / w.keys,
      redisCmdsPerOp: (srv1.commands - srv0.commands - 1) / ops, // minus our own INFO
      redisCpuUsPerOp: ((srv1.cpuSec - srv0.cpuSec) * 1e6) / ops,
      errors: run.errors,
      misses: run.misses,
      // Reads the near cache could not answer, as a share of the reads it was asked.
      nearMissPct: nearReads > 0 ? (100 * (near1.misses - near0.misses)) / nearReads : NaN,
      lastError: run.lastError,
    }
  } finally {
    if (a) await withTimeout(a.close(), 5000, 'close').catch(() => {})
    admin.disconnect()
  }
}

if (require.main === module) {
  const cell = JSON.parse(process.argv[2])
  const hard = setTimeout(() => {
    process.stderr.write('driver: hard time limit reached\n')
    process.exit(3)
  }, cell.timeLimitMs)
  hard.unref()
  process.on('disconnect', () => process.exit(4)) // run.js went away: do not linger
  runCell(cell)
    .catch((e) => ({ ok: false, error: String(e && e.stack ? e.stack : e) }))
    .then((res) => {
      if (process.send) process.send(res, () => process.exit(0))
      else {
        console.log(JSON.stringify(res, null, 2))
        process.exit(0)
      }
    })
}

module.exports = { runCell, SYSTEMS }
