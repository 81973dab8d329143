#!/usr/bin/env node
'use strict'
// `npm run bench:invalidation`: what it costs to tell other processes that a
// key changed, measured two ways next to a baseline with nobody listening.
//
//   none      the writer alone: what a write costs with no invalidation at all
//   tracking  L listeners, each a RESP3 connection with
//             `CLIENT TRACKING ON BCAST PREFIX p:` (what the near cache does);
//             Redis pushes `invalidate` messages, the writer does nothing more
//   pubsub    L subscribers on `p:invalidate`; the writer sends
//             `PUBLISH p:invalidate <key>` next to every `SET` (the alternative)
//
// The writer (this process) is one ioredis client keeping BENCH_INFLIGHT SETs
// of ~50 B values in flight over BENCH_KEYS keys, one loop per in-flight slot.
// The listeners live in a child process (this file forked with `--listeners`),
// so their parsing is not done on the writer's thread. Every 100th write uses
// a key named after its sample number (p:kv:lag:<n>); the writer records when
// that write was acknowledged, each listener when it received the key, both
// on CLOCK_MONOTONIC (process.hrtime), which every process on the machine shares.
//
// Environment:
//   BENCH_SECONDS    measured seconds per mode         (default 3; quick 0.5)
//   BENCH_WARMUP     warm-up seconds per mode          (default 0.5; quick 0.2)
//   BENCH_RUNS       rounds of all modes, the order rotated from round to
//                    round; medians reported            (default 3; quick 1)
//   BENCH_LISTENERS  listeners per mode                (default 4)
//   BENCH_INFLIGHT   writes in flight                  (default 64)
//   BENCH_KEYS       keys written                      (default 1000)
//   BENCH_MODES      comma list from none,tracking,pubsub (default all)
//   BENCH_QUICK=1    smoke-test sizes; writes no file
//   BENCH_OUT        where to write the Markdown report
//                    (default bench/results-invalidation.md, none in quick mode)
//   REDIS_SERVER     redis-server binary (default: redis-server on PATH)

const { fork } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { owned, runMain, sleep, withTimeout, startRedis, stopRedis, machineInfo, machineSection } = require('./harness')

const PREFIX = 'p:'
const CHANNEL = 'p:invalidate'
const LAG_PREFIX = 'p:kv:lag:'
const END_KEY = 'p:kv:end' // written once after each mode: every listener has seen all before it
const SAMPLE_EVERY = 100
const ALL_MODES = ['none', 'tracking', 'pubsub']

const nowMs = () => Number(process.hrtime.bigint()) / 1e6 // CLOCK_MONOTONIC, same in every process


// ---------------------------------------------------------------- RESP3 reader

const TYPE_ERROR = 0x2d // '-'

/** An out-of-band push (`>`), told apart from a reply. */
class Push {
  constructor(items) {
    this.items = items
  }
}

/**
 * Parses one RESP3 value of `buf` at `off`. Returns { v, end } or null when the
 * frame is not complete yet (the caller keeps the bytes and retries with more).
 * Bulk strings become strings, errors { error }, pushes a Push, maps
 * flat arrays; attributes are skipped.
 */
function parseResp(buf, off) {
  if (off >= buf.length) return null
  const type = buf[off]
  const eol = buf.indexOf(13, off + 1) // '\r'
  if (eol < 0 || eol + 1 >= buf.length) return null
  const next = eol + 2
  switch (type) {
    case 0x2b: // + simple string
    case 0x3a: // : integer
    case 0x2c: // , double
    case 0x28: // ( big number
    case 0x23: // # boolean
      return { v: buf.toString('latin1', off + 1, eol), end: next }
    case TYPE_ERROR:
      return { v: { error: buf.toString('latin1', off + 1, eol) }, end: next }
    case 0x5f: // _ null
      return { v: null, end: next }
    case 0x24: // $ bulk string
    case 0x3d: // = verbatim string
    case 0x21: { // ! bulk error
      const n = Number(buf.toString('latin1', off + 1, eol))
      if (n < 0) return { v: null, end: next }
      if (next + n + 2 > buf.length) return null
      const s = buf.toString('utf8', next, next + n)
      return { v: type === 0x21 ? { error: s } : s, end: next + n + 2 }
    }
    case 0x2a: // * array
    case 0x7e: // ~ set
    case 0x3e: // > push
    case 0x25: // % map
    case 0x7c: { // | attribute
      let n = Number(buf.toString('latin1', off + 1, eol))
      if (n < 0) return { v: null, end: next }
      if (type === 0x25 || type === 0x7c) n *= 2
      const items = new Array(n)
      let p = next
      for (let i = 0; i < n; i++) {
        const r = parseResp(buf, p)
        if (!r) return null
        items[i] = r.v
        p = r.end
      }
      if (type === 0x7c) return parseResp(buf, p) // attributes annotate the value that follows
      return { v: type === 0x3e ? new Push(items) : items, end: p }
    }
    default:
      throw new Error(`RESP3: unexpected type byte 0x${type.toString(16)} at offset ${off}`)
  }
}

/** Feeds chunks in; calls onValue(value) for every complete top-level value. */
function respReader(onValue) {
  let pending = null
  return function feed(chunk) {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk
    pending = null
    let off = 0
    while (off < buf.length) {
      const r = parseResp(buf, off)
      if (!r) {
        pending = buf.subarray(off)
        break
      }
      off = r.end
      onValue(r.v)
    }
  }
}

/** The reader must give the same values however the bytes are split. */
function selfTestReader() {
  const wire = Buffer.from(
    '%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n' +
      '+OK\r\n' +
      '>2\r\n$10\r\ninvalidate\r\n*2\r\n$6\r\np:kv:1\r\n$9\r\np:kv:lag:\r\n' +
      '>2\r\n$10\r\ninvalidate\r\n_\r\n' +
      '|1\r\n+key\r\n+val\r\n-ERR oops\r\n' +
      '$-1\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$3\r\nxyz\r\n',
    'latin1',
  )
  const collect = (split) => {
    const out = []
    const feed = respReader((v) => out.push(v))
    let prev = 0
    for (const at of [...split, wire.length]) {
      if (at > prev) feed(wire.subarray(prev, at))
      prev = at
    }
    return JSON.stringify(out.map((v) => (v instanceof Push ? { push: v.items } : v)))
  }
  const whole = collect([])
  const expected = JSON.stringify([
    ['server', 'redis', 'proto', '3'],
    'OK',
    { push: ['invalidate', ['p:kv:1', 'p:kv:lag:']] },
    { push: ['invalidate', null] },
    { error: 'ERR oops' },
    null,
    { push: ['message', 'c', 'xyz'] },
  ])
  if (whole !== expected) throw new Error(`RESP3 reader self-test: got ${whole}`)
  for (let a = 1; a < wire.length; a++) {
    if (collect([a]) !== whole) throw new Error(`RESP3 reader self-test: split at ${a} differs`)
    for (let b = a + 1; b < wire.length; b += 7) {
      if (collect([a, b]) !== whole) throw new Error(`RESP3 reader self-test: split at ${a},${b} differs`)
    }
  }
  const bytes = []
  for (let i = 1; i < wire.length; i++) bytes.push(i)
  if (collect(bytes) !== whole) throw new Error('RESP3 reader self-test: one byte at a time differs')
}

function respCommand(...args) {
  let s = `*${args.length}\r\n`
  for (const a of args) s += `$${Buffer.byteLength(a)}\r\n${a}\r\n`
  return s
}

// ---------------------------------------------------------------- listeners (child process)

/** Per-listener tallies; `lag` holds (sample number, receive time) pairs. */
function newTally() {
  return { frames: 0, keys: 0, flushes: 0, endSeen: false, lagIds: [], lagTimes: [] }
}

function noteKey(t, key) {
  if (key === END_KEY) {
    t.endSeen = true
    return
  }
  t.keys++
  if (key.startsWith(LAG_PREFIX)) {
    t.lagIds.push(Number(key.slice(LAG_PREFIX.length)))
    t.lagTimes.push(nowMs())
  }
}

/** One raw RESP3 connection with BCAST tracking of PREFIX; resolves once tracking is on. */
function trackingListener(port, tally) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' })
    sock.setNoDelay(true)
    let replies = 0
    let settled = false
    const fail = (e) => {
      sock.destroy()
      if (!settled) {
        settled = true
        reject(e)
      }
    }
    const feed = respReader((v) => {
      if (v instanceof Push) {
        if (v.items[0] !== 'invalidate') return
        tally.frames++
        const keys = v.items[1]
        if (keys === null) tally.flushes++
        else for (const k of keys) noteKey(tally, k)
        return
      }
      replies++
      if (v && v.error) return fail(new Error(`tracking listener: ${v.error}`))
      if (replies === 2 && !settled) {
        settled = true
        resolve(sock)
      }
    })
    sock.on('data', (chunk) => {
      try {
        feed(chunk)
      } catch (e) {
        fail(e)
      }
    })
    sock.on('error', fail)
    sock.on('close', () => {
      if (!settled) fail(new Error('tracking listener: connection closed during the handshake'))
    })
    sock.on('connect', () => {
      sock.write(respCommand('HELLO', '3') + respCommand('CLIENT', 'TRACKING', 'ON', 'BCAST', 'PREFIX', PREFIX))
    })
  })
}

/** One ioredis client in subscriber mode on CHANNEL; resolves once subscribed. */
async function pubsubListener(port, tally) {
  const Redis = require('ioredis')
  const sub = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1, lazyConnect: true })
  sub.on('error', () => {})
  sub.on('message', (channel, key) => {
    tally.frames++
    noteKey(tally, key)
  })
  await sub.connect()
  await sub.subscribe(CHANNEL)
  return sub
}

async function listenerMain(cfg) {
  process.on('disconnect', () => process.exit(4)) // the parent went away: do not linger
  const hard = setTimeout(() => {
    process.stderr.write('listeners: hard time limit reached\n')
    process.exit(3)
  }, cfg.timeLimitMs)
  hard.unref()

  const tallies = []
  const conns = []
  const closeAll = () => {
    for (const c of conns) {
      if (typeof c.disconnect === 'function') c.disconnect()
      else c.destroy()
    }
  }
  try {
    for (let i = 0; i < cfg.listeners; i++) {
      const t = newTally()
      tallies.push(t)
      if (cfg.mode === 'tracking') conns.push(await withTimeout(trackingListener(cfg.port, t), 5000, 'tracking handshake'))
      else if (cfg.mode === 'pubsub') conns.push(await withTimeout(pubsubListener(cfg.port, t), 5000, 'subscribe'))
    }
  } catch (e) {
    closeAll()
    process.send({ type: 'error', error: String(e && e.stack ? e.stack : e) }, () => process.exit(1))
    return
  }
  process.send({ type: 'ready' })
  process.on('message', async (m) => {
    if (m.type === 'mark') {
      process.send({ type: 'mark', cpu: process.cpuUsage() })
    } else if (m.type === 'finish') {
      // the parent wrote END_KEY after its last write: wait until every listener has seen it
      const until = Date.now() + 5000
      while (!tallies.every((t) => t.endSeen) && Date.now() < until) await sleep(5)
      closeAll()
      process.send({ type: 'result', tallies }, () => process.exit(0))
    }
  })
}

// ---------------------------------------------------------------- processes


/** Forks this file as the listener process of one mode; resolves once every listener is subscribed. */
function startListeners(cfg, mode, port) {
  const timeLimitMs = Math.ceil((cfg.seconds + cfg.warmupSeconds) * 1000) + 60000
  const child = fork(__filename, ['--listeners', JSON.stringify({ mode, port, listeners: mode === 'none' ? 0 : cfg.listeners, timeLimitMs })],
    { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  owned.add(child)
  const waiters = new Map() // message type -> resolve
  let failure = null
  const failAll = (e) => {
    failure = e
    for (const [, w] of waiters) w.reject(e)
    waiters.clear()
  }
  child.on('message', (m) => {
    if (m.type === 'error') return failAll(new Error(`listener process: ${m.error}`))
    const w = waiters.get(m.type)
    if (w) {
      waiters.delete(m.type)
      w.resolve(m)
    }
  })
  child.on('exit', (code, signal) => {
    owned.delete(child)
    failAll(new Error(`listener process exited (${signal || code})`))
  })
  const expect = (type, ms) => {
    if (failure) return Promise.reject(failure)
    return withTimeout(new Promise((resolve, reject) => waiters.set(type, { resolve, reject })), ms, `listener process '${type}'`)
  }
  const request = (type, ms) => {
    const p = expect(type === 'finish' ? 'result' : type, ms)
    child.send({ type })
    return p
  }
  const stop = () => {
    if (owned.has(child)) {
      try {
        process.kill(child.pid, 'SIGKILL')
      } catch {}
    }
  }
  return expect('ready', 15000).then(() => ({ request, stop }))
}

// ---------------------------------------------------------------- writer

/** The machine's CPU time so far, in ticks: all of it and the part the hypervisor gave to others (steal). */
function machineTicks() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user and nice]
    return { total: f.slice(0, 8).reduce((a, b) => a + b, 0), steal: f[7] || 0 }
  } catch {
    return { total: NaN, steal: NaN }
  }
}

async function serverCounters(admin) {
  const info = await admin.info()
  const num = (name) => {
    const m = info.match(new RegExp(`^${name}:([0-9.]+)`, 'm'))
    return m ? Number(m[1]) : NaN
  }
  return { cpuSec: num('used_cpu_sys') + num('used_cpu_user'), commands: num('total_commands_processed'),
    reads: num('total_reads_processed') }
}

const VALUE = JSON.stringify({ leadId: 'lead-4f2a91c0', orgId: 'org-17', at: 1700000000 }) // 59 B, like W1's

/**
 * Starts cfg.inflight loops on client `w`, each awaiting one write at a time
 * (SET, and PUBLISH too if `publish`) until `stopAt` (which the caller may move)
 * or a hard cap on the count. Every SAMPLE_EVERY-th write goes to a key named
 * after its sample number, whose acknowledgement time lands in `ackAt`.
 */
function startWriter(w, cfg, publish, ms) {
  const { prng } = require('./workloads')
  const cap = Math.ceil((ms / 1000) * 1e6) // far above what one client can do
  const st = { stopAt: nowMs() + ms, issued: 0, acked: 0, errors: 0, lastError: null,
    ackAt: new Float64Array(Math.ceil(cap / SAMPLE_EVERY) + 1), done: null } // sample number -> ack time (ms)
  async function slot(id) {
    const r = prng(1000 + id)
    while (st.issued < cap && nowMs() < st.stopAt) {
      const seq = st.issued++
      const sample = seq % SAMPLE_EVERY === 0 ? seq / SAMPLE_EVERY : -1
      const key = sample >= 0 ? LAG_PREFIX + sample : `p:kv:${(r() * cfg.keys) | 0}`
      try {
        if (publish) await Promise.all([w.set(key, VALUE), w.publish(CHANNEL, key)])
        else await w.set(key, VALUE)
        if (sample >= 0) st.ackAt[sample] = nowMs()
        st.acked++
      } catch (e) {
        st.errors++
        st.lastError = String(e && e.message ? e.message : e)
      }
    }
  }
  st.done = Promise.all(Array.from({ length: cfg.inflight }, (_, i) => slot(i)))
  return st
}

/**
 * Runs both shapes of write once, unmeasured, before the first mode: otherwise
 * the first mode would pay for compiling the writer's code and look slower.
 */
async function warmWriter(cfg, port) {
  const Redis = require('ioredis')
  const w = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1, lazyConnect: true })
  w.on('error', () => {})
  try {
    await w.connect()
    for (const publish of [false, true]) {
      const ms = Math.max(200, cfg.warmupSeconds * 2000)
      await withTimeout(startWriter(w, cfg, publish, ms).done, ms + 30000, 'writer warm-up')
    }
  } finally {
    w.disconnect()
  }
}

async function runMode(cfg, mode, port, admin) {
  const Redis = require('ioredis')
  await admin.flushall()
  const w = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1, lazyConnect: true })
  w.on('error', () => {})
  let listeners = null
  try {
    await w.connect()
    // every key exists before measuring, so each SET overwrites
    for (let k = 0; k < cfg.keys; k += 500) {
      const p = w.pipeline()
      for (let j = k; j < Math.min(cfg.keys, k + 500); j++) p.set(`p:kv:${j}`, VALUE)
      await p.exec()
    }
    listeners = await startListeners(cfg, mode, port)

    const publish = mode === 'pubsub'
    const wr = startWriter(w, cfg, publish, (cfg.warmupSeconds + cfg.seconds) * 1000)
    const { ackAt } = wr

    // the measured window: after the warm-up, cfg.seconds long
    await sleep(cfg.warmupSeconds * 1000)
    const srv0 = await serverCounters(admin)
    const ticks0 = machineTicks()
    const cpu0 = process.cpuUsage()
    const acked0 = wr.acked
    const t0 = nowMs()
    wr.stopAt = t0 + cfg.seconds * 1000 // the loops end when the window does
    const lis0 = (await listeners.request('mark', 5000)).cpu
    await withTimeout(wr.done, cfg.seconds * 1000 + 30000, `${mode} writer loops`)
    const t1 = nowMs()
    const acked1 = wr.acked
    const acked = wr.acked
    const cpu = process.cpuUsage(cpu0)
    const ticks1 = machineTicks()
    const srv1 = await serverCounters(admin)
    const lis1 = (await listeners.request('mark', 5000)).cpu

    // the end marker: once every listener has seen it, it has seen everything before it
    await w.set(END_KEY, VALUE)
    if (publish) await w.publish(CHANNEL, END_KEY)
    const { tallies } = await listeners.request('finish', 15000)
    listeners = null

    const writes = acked1 - acked0
    const seconds = (t1 - t0) / 1000
    const lags = []
    let samplesInWindow = 0
    for (let s = 0; s < ackAt.length; s++) if (ackAt[s] >= t0 && ackAt[s] <= t1) samplesInWindow++
    let samplesMissed = 0
    for (const t of tallies) {
      const seen = new Set()
      for (let i = 0; i < t.lagIds.length; i++) {
        const a = ackAt[t.lagIds[i]]
        seen.add(t.lagIds[i])
        if (a >= t0 && a <= t1) lags.push(t.lagTimes[i] - a)
      }
      for (let s = 0; s < ackAt.length; s++) if (ackAt[s] >= t0 && ackAt[s] <= t1 && !seen.has(s)) samplesMissed++
    }
    lags.sort((a, b) => a - b)
    const pct = (p) => (lags.length ? lags[Math.min(lags.length - 1, Math.floor((p / 100) * lags.length))] : NaN)
    const n = tallies.length
    const sum = (f) => tallies.reduce((s, t) => s + f(t), 0)
    return {
      mode,
      listeners: n,
      writes,
      seconds,
      writesPerSec: writes / seconds,
      writerCpuUsPerWrite: (cpu.user + cpu.system) / Math.max(1, writes),
      writerSysUsPerWrite: cpu.system / Math.max(1, writes),
      redisCpuUsPerWrite: ((srv1.cpuSec - srv0.cpuSec) * 1e6) / Math.max(1, writes),
      redisCmdsPerWrite: (srv1.commands - srv0.commands - 1) / Math.max(1, writes), // minus our own INFO
      redisReadsPerWrite: (srv1.reads - srv0.reads) / Math.max(1, writes),
      redisBusy: (srv1.cpuSec - srv0.cpuSec) / seconds,
      stealShare: (ticks1.steal - ticks0.steal) / (ticks1.total - ticks0.total),
      listenerCpuUsPerWrite: n ? (lis1.user + lis1.system - lis0.user - lis0.system) / Math.max(1, writes) : NaN,
      // over the whole run (warm-up included): every write is either delivered or not, whenever it was made
      totalWrites: acked,
      framesPerListenerPerWrite: n ? sum((t) => t.frames) / n / acked : NaN,
      keysPerListenerPerWrite: n ? sum((t) => t.keys) / n / acked : NaN,
      flushes: sum((t) => t.flushes),
      endSeen: tallies.every((t) => t.endSeen),
      lagP50: pct(50),
      lagP99: pct(99),
      lagMax: lags.length ? lags[lags.length - 1] : NaN,
      lagSamples: lags.length,
      samplesInWindow,
      samplesMissed,
      errors: wr.errors,
      lastError: wr.lastError,
    }
  } finally {
    if (listeners) listeners.stop()
    w.disconnect()
  }
}

// ---------------------------------------------------------------- reporting

function config() {
  const env = process.env
  const quick = env.BENCH_QUICK === '1' || env.BENCH_QUICK === 'true'
  const num = (name, dflt, quickDflt = dflt) => {
    const v = env[name] !== undefined && env[name] !== '' ? Number(env[name]) : quick ? quickDflt : dflt
    if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a non-negative number`)
    return v
  }
  const cfg = {
    quick,
    seconds: num('BENCH_SECONDS', 3, 0.5),
    warmupSeconds: num('BENCH_WARMUP', 0.5, 0.2),
    runs: Math.max(1, Math.round(num('BENCH_RUNS', 3, 1))),
    listeners: Math.round(num('BENCH_LISTENERS', 4)),
    inflight: Math.round(num('BENCH_INFLIGHT', 64)),
    keys: Math.round(num('BENCH_KEYS', 1000)),
    modes: env.BENCH_MODES ? env.BENCH_MODES.split(',').map((s) => s.trim()).filter(Boolean) : ALL_MODES,
    out: env.BENCH_OUT || (quick ? null : path.join(__dirname, 'results-invalidation.md')),
    redisServer: env.REDIS_SERVER || 'redis-server',
  }
  if (cfg.seconds <= 0 || cfg.seconds > 600) throw new Error('BENCH_SECONDS must be above 0 and at most 600')
  if (cfg.runs > 50) throw new Error('BENCH_RUNS must be at most 50')
  if (cfg.warmupSeconds > 60) throw new Error('BENCH_WARMUP must be at most 60')
  if (cfg.listeners < 1 || cfg.listeners > 256) throw new Error('BENCH_LISTENERS must be from 1 to 256')
  if (cfg.inflight < 1 || cfg.inflight > 4096) throw new Error('BENCH_INFLIGHT must be from 1 to 4096')
  if (cfg.keys < 1 || cfg.keys > 1e6) throw new Error('BENCH_KEYS must be from 1 to 1000000')
  for (const m of cfg.modes) if (!ALL_MODES.includes(m)) throw new Error(`unknown mode ${m} (BENCH_MODES: ${ALL_MODES.join(',')})`)
  return cfg
}


const f0 = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–')
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : '–')
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : '–')
const f3 = (x) => (Number.isFinite(x) ? x.toFixed(3) : '–')
const pc = (x) => (Number.isFinite(x) ? (x * 100).toFixed(0) + '%' : '–')
const fx = (x) => (Number.isFinite(x) ? x.toFixed(2) + '×' : '–')

function markdownTable(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const line = (cells) => '| ' + cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ') + ' |'
  return [line(header), '| ' + widths.map((w) => '-'.repeat(w)).join(' | ') + ' |', ...rows.map(line)].join('\n')
}

const median = (xs) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b)
  if (!s.length) return NaN
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** Median of every figure over the rounds; `vs none` = median of each round's ratio to that round's `none`. */
function aggregate(mode, rounds, noneRounds) {
  const good = rounds.filter((r) => r.ok)
  if (!good.length) return { ok: false, mode, error: rounds[0] && rounds[0].error }
  const out = { ok: true, mode, runs: good.length }
  for (const k of Object.keys(good[0])) if (typeof good[0][k] === 'number') out[k] = median(good.map((r) => r[k]))
  const rates = good.map((r) => r.writesPerSec)
  out.writesPerSecMin = Math.min(...rates)
  out.writesPerSecMax = Math.max(...rates)
  out.lagSamples = good.reduce((s, r) => s + r.lagSamples, 0)
  const ratios = good.map((r) => {
    const base = (noneRounds || []).find((b) => b.ok && b.round === r.round)
    return base ? r.writesPerSec / base.writesPerSec : NaN
  })
  out.vsNone = median(ratios)
  return out
}

function resultTable(results) {
  const header = ['mode', 'listeners', 'writes/s', 'writes/s range', 'vs none', 'writer CPU µs/write', 'Redis CPU µs/write',
    'Redis cmds/write', 'Redis reads/write', 'listeners CPU µs/write', 'msgs/listener/write', 'keys/listener/write',
    'lag p50 ms', 'lag p99 ms', 'lag samples']
  const rows = results.map((r) => {
    if (!r.ok) return [r.mode, '', 'error', '', '', '', '', '', '', '', '', '', '', '', '']
    const l = r.listeners
    return [r.mode, l, f0(r.writesPerSec), `${f0(r.writesPerSecMin)}–${f0(r.writesPerSecMax)}`, fx(r.vsNone),
      f1(r.writerCpuUsPerWrite), f2(r.redisCpuUsPerWrite), f2(r.redisCmdsPerWrite), f2(r.redisReadsPerWrite),
      l ? f1(r.listenerCpuUsPerWrite) : '–',
      l ? f3(r.framesPerListenerPerWrite) : '–', l ? f3(r.keysPerListenerPerWrite) : '–',
      l ? f3(r.lagP50) : '–', l ? f3(r.lagP99) : '–', l ? f0(r.lagSamples) : '–']
  })
  return markdownTable(header, rows)
}

function roundTable(runs) {
  const header = ['round', 'mode', 'writes/s', 'writer CPU µs/write', 'of which sys', 'Redis CPU µs/write', 'Redis reads/write',
    'lag p50 ms', 'lag p99 ms', 'steal']
  const all = [].concat(...runs.values()).sort((a, b) => a.round - b.round)
  const rows = all.map((r) => (r.ok
    ? [r.round + 1, r.mode, f0(r.writesPerSec), f1(r.writerCpuUsPerWrite), f1(r.writerSysUsPerWrite), f2(r.redisCpuUsPerWrite),
        f2(r.redisReadsPerWrite),
        r.listeners ? f3(r.lagP50) : '–', r.listeners ? f3(r.lagP99) : '–', pc(r.stealShare)]
    : [r.round + 1, r.mode, 'error', '', '', '', '', '', '', '']))
  return markdownTable(header, rows)
}

function anomalies(results) {
  const out = []
  for (const mode of ALL_MODES) {
    const rates = results.filter((r) => r.ok && r.mode === mode).map((r) => r.writesPerSec)
    if (rates.length > 1 && Math.max(...rates) > 1.5 * Math.min(...rates)) {
      out.push(`${mode}: writes/s varied ${(Math.max(...rates) / Math.min(...rates)).toFixed(1)}× between rounds ` +
        '(see "Each round"): its throughput and "vs none" say little on their own; the CPU per write varies less')
    }
  }
  for (const r of results) {
    if (!r.ok) {
      out.push(`${r.mode} (round ${r.round + 1}): FAILED: ${String(r.error).split('\n')[0]}`)
      continue
    }
    if (r.errors) out.push(`${r.mode} (round ${r.round + 1}): ${r.errors} write errors (last: ${r.lastError})`)
    if (r.mode === 'none') continue
    if (!r.endSeen) out.push(`${r.mode} (round ${r.round + 1}): not every listener received the end marker within 5 s`)
    if (r.samplesMissed) out.push(`${r.mode} (round ${r.round + 1}): ${r.samplesMissed} of ${r.samplesInWindow * r.listeners} (sample, listener) pairs never arrived`)
    if (r.flushes) out.push(`${r.mode} (round ${r.round + 1}): ${r.flushes} flush (null key) invalidations received`)
  }
  return out
}

// ---------------------------------------------------------------- main

async function main() {
  selfTestReader()
  const cfg = config()
  const machine = machineInfo(cfg.redisServer)
  const started = new Date()
  const load0 = os.loadavg()
  const Redis = require('ioredis')

  const { port, child: redis } = await startRedis(cfg.redisServer, 'cache-adapter-bench-inval-')
  console.log(`redis-server ${machine.redis} on 127.0.0.1:${port}; ${cfg.runs} round(s) of ${cfg.seconds}s (after ${cfg.warmupSeconds}s warm-up) per mode, ` +
    `${cfg.inflight} SETs in flight over ${cfg.keys} keys, ${cfg.listeners} listeners${cfg.quick ? ' (quick mode)' : ''}`)
  const runs = new Map(cfg.modes.map((m) => [m, []])) // mode -> result of each round
  const admin = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1 })
  admin.on('error', () => {})
  try {
    await warmWriter(cfg, port)
    const limit = Math.ceil((cfg.seconds + cfg.warmupSeconds) * 1000) + 90000
    for (let round = 0; round < cfg.runs; round++) {
      // rotate the order of the modes from round to round, so that none is always first
      const order = cfg.modes.map((_, i) => cfg.modes[(i + round) % cfg.modes.length])
      for (const mode of order) {
        let res
        try {
          res = { ok: true, round, ...(await withTimeout(runMode(cfg, mode, port, admin), limit, `mode ${mode}`)) }
        } catch (e) {
          res = { ok: false, round, mode, error: String(e && e.stack ? e.stack : e) }
        }
        runs.get(mode).push(res)
        const msg = res.ok
          ? `${f0(res.writesPerSec)} writes/s, Redis ${f2(res.redisCpuUsPerWrite)} µs/write (${(res.redisBusy * 100).toFixed(0)}% busy), ` +
            `writer ${f1(res.writerCpuUsPerWrite)} µs/write` +
            (mode === 'none' ? '' : `, ${f3(res.keysPerListenerPerWrite)} keys/listener/write, lag p50 ${f3(res.lagP50)} p99 ${f3(res.lagP99)} ms`)
          : `FAILED: ${String(res.error).split('\n')[0]}`
        process.stderr.write(`[round ${round + 1}/${cfg.runs}] ${mode.padEnd(9)} ${msg}\n`)
      }
    }
  } finally {
    admin.disconnect()
    await stopRedis(redis)
  }
  const load1 = os.loadavg()

  const results = cfg.modes.map((m) => aggregate(m, runs.get(m), runs.get('none')))
  const table = resultTable(results)
  const notes = anomalies([].concat(...runs.values()))
  console.log('\n' + table + '\n')
  if (notes.length) console.log('Notes:\n' + notes.map((n) => '  ' + n).join('\n') + '\n')

  if (cfg.out) {
    const busy = results.filter((r) => r.ok).map((r) => `${r.mode} ${(r.redisBusy * 100).toFixed(0)}%`).join(', ')
    const md = [
      '# Invalidation benchmark: client tracking vs pub/sub',
      '',
      `Produced by \`npm run bench:invalidation\` (\`node bench/invalidation.js\`) on ${started.toISOString()}.`,
      '',
      ...machineSection(machine),
      `- load average (1 min) ${load0[0].toFixed(2)} at start, ${load1[0].toFixed(2)} at end; Redis, the writer and the ` +
        'listener process share these cores, so listeners that cost CPU also slow the writer down',
      '',
      '## Settings',
      '',
      `- ${cfg.runs} round(s) of ${cfg.modes.join(', ')}, the order rotated from round to round; in each, ${cfg.seconds} s measured ` +
        `after ${cfg.warmupSeconds} s warm-up, FLUSHALL and ${cfg.keys} keys written before; each figure is the median of the rounds`,
      '- before the first round, the writer runs both shapes of write (SET; SET + PUBLISH) unmeasured, so that no mode pays for compiling it',
      `- writer: one ioredis client (this process), ${cfg.inflight} loops each awaiting one write at a time; a write is ` +
        `\`SET p:kv:<random of ${cfg.keys}> <${Buffer.byteLength(VALUE)} B>\`; in \`pubsub\` mode also ` +
        '`PUBLISH p:invalidate <key>`, sent at the same time (two commands in flight per write, the write is done when both are answered)',
      `- listeners: ${cfg.listeners} per mode, all in one child process. \`tracking\`: a raw socket, \`HELLO 3\` then ` +
        '`CLIENT TRACKING ON BCAST PREFIX p:`, counting `invalidate` pushes and their keys. `pubsub`: ioredis in subscriber ' +
        'mode, `SUBSCRIBE p:invalidate`. `none`: no listener',
      `- every ${SAMPLE_EVERY}th write goes to \`p:kv:lag:<n>\`: lag = a listener's receipt of that key minus the writer's ` +
        'acknowledgement of the write (CLOCK_MONOTONIC in both processes), all listeners\' samples pooled; negative when the ' +
        'listener got it before the writer read its reply',
      '',
      '## Results',
      '',
      table,
      '',
      'writes/s, CPU, Redis commands and lag are over the measured window; msgs and keys per listener per write are over ' +
        'the whole run (warm-up included), counted after every listener has received an end marker written last. ' +
        'writer CPU = this process (`process.cpuUsage`); Redis CPU = Δ(`used_cpu_sys` + `used_cpu_user`) of `INFO`; ' +
        'listeners CPU = the listener process, all listeners together. msgs = `invalidate` pushes (tracking) or pub/sub ' +
        `messages; one push carries every key of the prefix changed in one pass of Redis's event loop. ` +
        'Redis reads/write = Δ`total_reads_processed` per write: the fewer, the more commands Redis got per read, and the ' +
        'less each costs it, on both sides; a writer slowed down by a busy core sends bigger batches. ' +
        `Redis CPU busy (median): ${busy}. "vs none" is the median of each round's ratio to that round's \`none\`.`,
      '',
      '### Each round',
      '',
      roundTable(runs),
      '',
      'of which sys = the writer\'s kernel time per write (`process.cpuUsage().system`). steal = the share of the ' +
        'machine\'s CPU time (both cores) that the hypervisor gave to other guests during the window (`/proc/stat`).',
      '',
      notes.length ? '## Notes\n\n' + notes.map((n) => '- ' + n).join('\n') + '\n' : null,
    ].filter((l) => l !== null)
    fs.writeFileSync(cfg.out, md.join('\n'))
    console.log(`wrote ${path.relative(process.cwd(), cfg.out) || cfg.out}`)
  }
  return [].concat(...runs.values()).every((r) => r.ok) ? 0 : 1
}

if (process.argv[2] === '--listeners') {
  listenerMain(JSON.parse(process.argv[3])).catch((e) => {
    process.stderr.write(String(e && e.stack ? e.stack : e) + '\n')
    process.exit(1)
  })
} else {
  runMain(main)
}
