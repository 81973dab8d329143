#!/usr/bin/env node
'use strict'
// `npm run bench`: side-by-side benchmark of the native adapter and two
// baselines that reproduce the old JavaScript adapter (on ioredis and on
// node-redis). Starts its own redis-server on a free loopback port, runs every
// (workload, in-flight, system) cell in a fresh child process (driver.js),
// BENCH_RUNS times, and reports the median of each metric.
//
// Environment:
//   BENCH_SECONDS   measured seconds per run        (default 3; quick 0.5)
//   BENCH_RUNS      runs per cell, median reported   (default 3; quick 1)
//   BENCH_WARMUP    warm-up seconds per run          (default 0.5; quick 0.2)
//   BENCH_KEYS      keys per workload                (default 1000; quick 200)
//   BENCH_INFLIGHT  comma list of calls in flight    (default 1,64)
//   BENCH_WORKLOADS comma list from W1,W2,W3         (default all)
//   BENCH_SYSTEMS   comma list from native,native-near,ioredis-old,node-redis-old,loop-only
//                   (native-near: this adapter with `nearCache: true`), and
//                   base,base-near with BENCH_BASE
//   BENCH_BASE      a built checkout of an earlier commit (git worktree add
//                   DIR REV, then npm run build there): adds `base` and
//                   `base-near`, that build, to measure a change side by side;
//                   the report adds their ops/s ratios paired by run
//   BENCH_RTT_MS    or `--rtt-ms N`: put a delaying TCP proxy (delay-proxy.js)
//                   between every client and Redis, adding N ms per round
//                   trip (default 0: plain loopback); the report then goes
//                   to bench/results-rtt-<N>ms.md
//   BENCH_QUICK=1   smoke-test sizes (above); does not overwrite results.md
//   BENCH_OUT       where to write the Markdown report (default bench/results.md,
//                   none in quick mode)
//   REDIS_SERVER    redis-server binary (default: redis-server on PATH)

const { fork, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { performance } = require('node:perf_hooks')
const { GOALS } = require('./goals')
const { owned, runMain, startRedis, stopRedis, machineInfo, machineSection } = require('./harness')
const { payloadStats } = require('./workloads')

const ROOT = path.join(__dirname, '..')
const ALL_SYSTEMS = ['native', 'native-near', 'ioredis-old', 'node-redis-old', 'loop-only']
/** The same adapter built from BENCH_BASE. */
const BASE_SYSTEMS = ['base', 'base-near']
const WORKLOAD_DESC = {
  W1: 'phone→lead, 90% get / 10% set, ~50 B',
  W2: '30-message context (~9 KB JSON), 80% get / 20% set',
  W3: '200-message context (~58 KB JSON), 50% get / 50% set',
}

function config() {
  const env = process.env
  const quick = env.BENCH_QUICK === '1' || env.BENCH_QUICK === 'true'
  const num = (name, dflt, quickDflt) => {
    const v = env[name] !== undefined && env[name] !== '' ? Number(env[name]) : quick ? quickDflt : dflt
    if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a non-negative number`)
    return v
  }
  const argAt = process.argv.indexOf('--rtt-ms')
  const rttText = argAt > 0 ? process.argv[argAt + 1] : env.BENCH_RTT_MS
  const rttMs = rttText === undefined || rttText === '' ? 0 : Number(rttText)
  if (!Number.isInteger(rttMs) || rttMs < 0 || rttMs > 1000) throw new Error('--rtt-ms (BENCH_RTT_MS) must be a whole number of ms from 0 to 1000')
  const list = (name, dflt) => (env[name] ? env[name].split(',').map((s) => s.trim()).filter(Boolean) : dflt)
  const cfg = {
    quick,
    seconds: num('BENCH_SECONDS', 3, 0.5),
    runs: Math.max(1, Math.round(num('BENCH_RUNS', 3, 1))),
    warmupSeconds: num('BENCH_WARMUP', 0.5, 0.2),
    keys: Math.max(8, Math.round(num('BENCH_KEYS', 1000, 200))),
    inflight: list('BENCH_INFLIGHT', ['1', '64']).map(Number),
    workloads: list('BENCH_WORKLOADS', ['W1', 'W2', 'W3']),
    base: env.BENCH_BASE ? path.resolve(env.BENCH_BASE) : null,
    systems: list('BENCH_SYSTEMS', env.BENCH_BASE ? [...ALL_SYSTEMS, ...BASE_SYSTEMS] : ALL_SYSTEMS),
    rttMs,
    out: env.BENCH_OUT || (quick ? null : path.join(__dirname, rttMs ? `results-rtt-${rttMs}ms.md` : 'results.md')),
    redisServer: env.REDIS_SERVER || 'redis-server',
  }
  for (const n of cfg.inflight) if (!Number.isInteger(n) || n < 1 || n > 4096) throw new Error(`bad BENCH_INFLIGHT entry ${n}`)
  for (const w of cfg.workloads) if (!WORKLOAD_DESC[w]) throw new Error(`unknown workload ${w}`)
  for (const s of cfg.systems) {
    if (BASE_SYSTEMS.includes(s) && !cfg.base) throw new Error(`system ${s} needs BENCH_BASE (a built checkout to compare with)`)
    if (!ALL_SYSTEMS.includes(s) && !BASE_SYSTEMS.includes(s)) throw new Error(`unknown system ${s}`)
  }
  return cfg
}

// ---------------------------------------------------------------- processes


/** Starts delay-proxy.js in a child process; resolves to its port. */
function startProxy(targetPort, rttMs) {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(__dirname, 'delay-proxy.js'), [String(targetPort), String(rttMs)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
    owned.add(child)
    child.on('exit', () => owned.delete(child))
    const timer = setTimeout(() => reject(new Error('delay proxy did not start within 5 s')), 5000)
    child.once('message', (m) => {
      clearTimeout(timer)
      resolve({ port: m.port, child })
    })
  })
}

/** p50 in ms of `n` PING round trips, one at a time, on one connection to `port`. */
function pingP50(port, n = 200) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' })
    s.setNoDelay(true)
    const times = []
    let t0 = 0
    let buf = ''
    const next = () => {
      if (times.length >= n) {
        s.destroy()
        return resolve(median(times))
      }
      t0 = performance.now()
      s.write('PING\r\n')
    }
    s.setTimeout(10000, () => {
      s.destroy()
      reject(new Error('PING through the proxy timed out'))
    })
    s.on('error', reject)
    s.on('connect', next)
    s.on('data', (d) => {
      buf += d
      while (buf.includes('\r\n')) {
        buf = buf.slice(buf.indexOf('\r\n') + 2)
        times.push(performance.now() - t0)
        next()
      }
    })
  })
}

/** Whether `require('..')` loads, without loading it into this process. */
function probeNative() {
  const r = spawnSync(process.execPath, ['-e', 'const m = require(process.argv[1]); if (typeof m.CacheAdapter !== "function") throw new Error("no CacheAdapter export")', ROOT],
    { encoding: 'utf8', timeout: 20000 })
  if (r.status === 0) return null
  const msg = (r.stderr || String(r.error || 'unknown error')).split('\n').find((l) => /Error|error/.test(l)) || 'failed'
  return msg.trim()
}

/** Run one cell in a fresh child; resolves with its result object. */
function runCell(cell) {
  return new Promise((resolve) => {
    const timeLimitMs = Math.ceil((cell.seconds + cell.warmupSeconds) * 1000) + 90000
    const child = fork(path.join(__dirname, 'driver.js'), [JSON.stringify({ ...cell, timeLimitMs })],
      { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] })
    owned.add(child)
    let stderr = ''
    let result = null
    child.stderr.on('data', (d) => {
      if (stderr.length < 20000) stderr += d
    })
    child.on('message', (m) => {
      result = m
    })
    const killer = setTimeout(() => {
      try {
        process.kill(child.pid, 'SIGKILL')
      } catch {}
    }, timeLimitMs + 10000)
    child.on('exit', (code, signal) => {
      clearTimeout(killer)
      owned.delete(child)
      resolve(result || { ok: false, error: `driver exited (${signal || code}) without a result: ${stderr.trim().slice(-400)}` })
    })
  })
}

// ---------------------------------------------------------------- reporting

const median = (xs) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b)
  if (!s.length) return NaN
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

function aggregate(runs) {
  const good = runs.filter((r) => r.ok)
  if (!good.length) return { ok: false, error: runs[0] && runs[0].error }
  const out = { ok: true, runs: good.length, failedRuns: runs.length - good.length }
  for (const k of Object.keys(good[0])) if (typeof good[0][k] === 'number') out[k] = median(good.map((r) => r[k]))
  out.errors = good.reduce((s, r) => s + r.errors, 0)
  out.misses = good.reduce((s, r) => s + r.misses, 0)
  out.lastError = good.map((r) => r.lastError).filter(Boolean).pop() || null
  return out
}

const f0 = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–')
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : '–')
const f3 = (x) => (Number.isFinite(x) ? x.toFixed(3) : '–')
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : '–')
const fx = (x) => (Number.isFinite(x) ? x.toFixed(2) + '×' : '–')

function markdownTable(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const line = (cells) => '| ' + cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ') + ' |'
  return [line(header), '| ' + widths.map((w) => '-'.repeat(w)).join(' | ') + ' |', ...rows.map(line)].join('\n')
}

function mainTable(cfg, get) {
  const header = ['workload', 'inflight', 'system', 'ops/s', 'p50 ms', 'p99 ms', 'ELD p99 ms', 'CPU µs/op', 'main µs/op',
    'bytes/entry', 'ops/s vs io', 'main vs io', 'ops/s vs nr', 'main vs nr']
  const rows = []
  for (const w of cfg.workloads) {
    for (const n of cfg.inflight) {
      const io = get(w, n, 'ioredis-old')
      const nr = get(w, n, 'node-redis-old')
      for (const s of cfg.systems) {
        const c = get(w, n, s)
        if (!c) {
          rows.push([w, n, s, 'error', '', '', '', '', '', '', '', '', '', ''])
          continue
        }
        const ratio = (base, key) => (base && base !== c ? fx(c[key] / base[key]) : '')
        rows.push([w, n, s, f0(c.opsPerSec), f3(c.p50ms), f3(c.p99ms), f3(c.eldP99ms), f1(c.cpuUsPerOp), f1(c.mainUsPerOp),
          f0(c.bytesPerEntry), ratio(io, 'opsPerSec'), ratio(io, 'mainUsPerOp'), ratio(nr, 'opsPerSec'), ratio(nr, 'mainUsPerOp')])
      }
    }
  }
  return markdownTable(header, rows)
}

function serverTable(cfg, get) {
  const header = ['workload', 'inflight', 'system', 'redis cmds/op', 'redis-server CPU µs/op', 'used_memory Δ/entry', 'keys in Redis', 'errors', 'misses', 'near-cache misses % of reads']
  const rows = []
  for (const w of cfg.workloads) {
    for (const n of cfg.inflight) {
      for (const s of cfg.systems) {
        const c = get(w, n, s)
        if (c) rows.push([w, n, s, f1(c.redisCmdsPerOp), f1(c.redisCpuUsPerOp), f0(c.usedMemoryPerEntry), f0(c.redisKeys), c.errors, c.misses, f1(c.nearMissPct)])
      }
    }
  }
  return markdownTable(header, rows)
}

/**
 * Where each cell's CPU went, per op, and how much of the machine it used:
 * a cell using every core is bound by CPU (less work per op is the only way
 * up); one using less waits on something (a round trip, a thread handing
 * work to another).
 */
function cpuTable(cfg, get) {
  const header = ['workload', 'inflight', 'system', 'main', 'I/O thread', 'compression pool', 'other threads', 'Redis', 'total µs/op', `cores used (of ${os.availableParallelism()})`]
  const rows = []
  for (const w of cfg.workloads) {
    for (const n of cfg.inflight) {
      for (const s of cfg.systems) {
        const c = get(w, n, s)
        if (!c) continue
        const total = c.cpuUsPerOp + c.redisCpuUsPerOp
        const native = s === 'native' || s === 'native-near' || s.startsWith('base')
        rows.push([w, n, s, f1(c.mainUsPerOp), native ? f1(c.ioUsPerOp) : '', native ? f1(c.poolUsPerOp) : '', f1(c.otherUsPerOp),
          f1(c.redisCpuUsPerOp), f1(total), f2((total * c.opsPerSec) / 1e6)])
      }
    }
  }
  return markdownTable(header, rows)
}

function goalLines(cfg, get) {
  return GOALS.map((g, i) => {
    const { pass, detail } = g.check(get, cfg.inflight, cfg.workloads)
    const mark = pass === null ? 'N/A ' : pass ? 'PASS' : 'FAIL'
    return `${i + 1}. [${mark}] ${g.text} — ${detail}`
  })
}

/**
 * With BENCH_BASE: the change's ops/s over the base's, run by run (within
 * one round of runs, minutes apart at most), and the median of those ratios. On a
 * machine whose speed swings within minutes, this says more than the ratio
 * of two medians.
 */
function pairedLines(cfg, results, key) {
  if (!cfg.base) return []
  const lines = []
  for (const w of cfg.workloads) {
    for (const n of cfg.inflight) {
      for (const [mine, base] of [['native', 'base'], ['native-near', 'base-near']]) {
        const a = results.get(key(w, n, mine))
        const b = results.get(key(w, n, base))
        if (!a || !b) continue
        const ratios = a
          .map((r, i) => (r.ok && b[i] && b[i].ok ? r.opsPerSec / b[i].opsPerSec : NaN))
          .filter(Number.isFinite)
          .sort((x, y) => x - y)
        if (!ratios.length) continue
        lines.push(`- ${w} ×${n} ${mine} / ${base}: ${fx(median(ratios))}, the median of ${ratios.length} runs ` +
          `(from ${fx(ratios[0])} to ${fx(ratios[ratios.length - 1])})`)
      }
    }
  }
  return lines
}

/** The checkout in `dir`, by its commit where git can tell. */
function baseDescription(dir) {
  try {
    const rev = require('node:child_process').execFileSync('git', ['-C', dir, 'log', '-1', '--format=%h %s'], { encoding: 'utf8', timeout: 5000 }).trim()
    return `\`${dir}\` (commit ${rev})`
  } catch {
    return `\`${dir}\``
  }
}

// ---------------------------------------------------------------- main

async function main() {
  const cfg = config()
  const machine = machineInfo(cfg.redisServer)
  const started = new Date()
  const load0 = os.loadavg()

  const nativeError = cfg.systems.includes('native') ? probeNative() : null
  if (nativeError) {
    console.log(`native: SKIPPED, require('..') failed: ${nativeError}`)
    console.log('        (build the addon with `npm run build`; the baselines run regardless)\n')
    cfg.systems = cfg.systems.filter((s) => s !== 'native')
  }

  const { port, child: redis } = await startRedis(cfg.redisServer)
  const adminUrl = `redis://127.0.0.1:${port}`
  let url = adminUrl
  const rtt = { direct: await pingP50(port), proxied: null }
  if (cfg.rttMs > 0) {
    const proxy = await startProxy(port, cfg.rttMs)
    url = `redis://127.0.0.1:${proxy.port}`
    rtt.proxied = await pingP50(proxy.port)
  }
  const rttText = `PING p50 ${f3(rtt.direct)} ms on loopback` + (cfg.rttMs ? `, ${f3(rtt.proxied)} ms through the ${cfg.rttMs} ms delay proxy` : '')
  console.log(`redis-server ${machine.redis} on ${adminUrl}${cfg.rttMs ? ` behind a ${cfg.rttMs} ms RTT proxy at ${url}` : ''}; ` +
    `${cfg.seconds}s × ${cfg.runs} run(s) per cell, ` +
    `${cfg.keys} keys, in flight ${cfg.inflight.join('/')}${cfg.quick ? ' (quick mode)' : ''}; ${rttText}`)

  const results = new Map() // "W1|64|native" -> [run results]
  const key = (w, n, s) => `${w}|${n}|${s}`
  const total = cfg.workloads.length * cfg.inflight.length * cfg.runs * cfg.systems.length
  let done = 0
  try {
    for (const w of cfg.workloads) {
      for (const n of cfg.inflight) {
        for (let run = 0; run < cfg.runs; run++) {
          // rotate the order of systems from run to run, so that no system is always first
          const order = cfg.systems.map((_, i) => cfg.systems[(i + run) % cfg.systems.length])
          for (const s of order) {
            const res = await runCell({ system: s, workload: w, inflight: n, keys: cfg.keys, seconds: cfg.seconds,
              warmupSeconds: cfg.warmupSeconds, seed: 1 + run, url, adminUrl, baseDir: cfg.base })
            if (!results.has(key(w, n, s))) results.set(key(w, n, s), [])
            results.get(key(w, n, s)).push(res)
            done++
            const msg = res.ok
              ? `${f0(res.opsPerSec)} ops/s, p99 ${f3(res.p99ms)} ms, main ${f1(res.mainUsPerOp)} µs/op` +
                (Number.isFinite(res.nearMissPct) ? `, near misses ${f1(res.nearMissPct)}% of reads` : '') +
                (res.errors || res.misses ? `, ${res.errors} errors, ${res.misses} misses${res.lastError ? ` (${res.lastError})` : ''}` : '')
              : `FAILED: ${String(res.error).split('\n')[0]}`
            process.stderr.write(`[${done}/${total}] ${w} ×${n} ${s.padEnd(14)} run ${run + 1}: ${msg}\n`)
          }
        }
      }
    }
  } finally {
    await stopRedis(redis)
  }

  const load1 = os.loadavg()
  const agg = new Map([...results].map(([k, v]) => [k, aggregate(v)]))
  const get = (w, n, s) => {
    const c = agg.get(key(w, n, s))
    return c && c.ok ? c : null
  }
  const failures = [...agg].filter(([, v]) => !v.ok).map(([k, v]) => `${k.replace(/\|/g, ' ×')}: ${String(v.error).split('\n')[0]}`)

  const table = mainTable(cfg, get)
  const goals = goalLines(cfg, get)
  console.log('\n' + table + '\n')
  console.log('io = ioredis-old, nr = node-redis-old; "ops/s vs" > 1 and "main vs" < 1 favour the row\'s system.')
  console.log('CPU = whole process (process.cpuUsage); main = Node\'s main thread (/proc schedstat); medians of runs.\n')
  if (failures.length) console.log('Failed cells:\n' + failures.map((f) => '  ' + f).join('\n') + '\n')
  const paired = pairedLines(cfg, results, key)
  if (paired.length) console.log('Side by side, ops/s paired by run:\n' + paired.map((l) => '  ' + l.slice(2)).join('\n') + '\n')
  console.log('Goals' + (nativeError ? ' (native adapter not built: nothing to check)' : '') + ':')
  for (const g of goals) console.log('  ' + g)

  if (cfg.out) {
    const payloads = cfg.workloads.map((w) => {
      const p = payloadStats(w)
      return `- ${w}: ${WORKLOAD_DESC[w]}; mean value ${f0(p.meanJsonBytes)} B of JSON, gzip -1 ratio ${p.gzip1Ratio.toFixed(2)}`
    })
    const md = [
      '# Benchmark results',
      '',
      `Produced by \`npm run bench\` (\`node bench/run.js\`) on ${started.toISOString()}.`,
      '',
      ...machineSection(machine),
      cfg.rttMs
        ? `- every client reaches Redis through bench/delay-proxy.js, which adds ${cfg.rttMs} ms per round trip ` +
          `(whole ms per direction: ${Math.ceil(cfg.rttMs / 2)} ms in, ${Math.floor(cfg.rttMs / 2)} ms out); ${rttText}`
        : `- plain loopback; ${rttText}`,
      `- load average (1 min) ${load0[0].toFixed(2)} at start, ${load1[0].toFixed(2)} at end: anything else running ` +
        'on these cores shows up as noise in every figure',
      '',
      '## Settings',
      '',
      `- ${cfg.seconds} s measured (after ${cfg.warmupSeconds} s warm-up) × ${cfg.runs} run(s) per cell; each figure is the median of the runs`,
      `- ${cfg.keys} keys per workload, all pre-populated before measuring; closed loop with ${cfg.inflight.join(' and ')} calls in flight`,
      '- each cell runs in a fresh Node process; FLUSHALL before each cell',
      ...payloads,
      '- systems: `native` = this adapter (`new CacheAdapter({ url, keyPrefix: \'bench\' })`); `native-near` = the same ' +
        'with `nearCache: true`; `ioredis-old` and ' +
        '`node-redis-old` = the old adapter\'s behaviour (JSON values, one hash of contexts with HSET then EXPIRE, ' +
        'two SETEX for phone↔lead, `compressed:` prefix without compression) on ioredis 5 and node-redis 5; ' +
        '`loop-only` = the same loop over an adapter that does nothing (a Map, Promises already settled): ' +
        'what the loop itself costs, a ceiling no client passes',
      cfg.base ? `- \`base\` and \`base-near\` = the same two built from ${baseDescription(cfg.base)}` : null,
      nativeError ? `- native adapter NOT measured: \`require('..')\` failed: ${nativeError}` : null,
      '',
      '## Results',
      '',
      table,
      '',
      'io = ioredis-old, nr = node-redis-old. "ops/s vs" above 1 and "main vs" below 1 favour the row\'s system. ' +
        'ELD = event-loop delay (`monitorEventLoopDelay`, 1 ms resolution). CPU µs/op = whole process ' +
        '(`process.cpuUsage`); main µs/op = Node\'s main thread only (`/proc/self/task/<pid>/schedstat`). ' +
        'bytes/entry = sum of `MEMORY USAGE key SAMPLES 0` over all keys after pre-population, divided by the ' +
        'number of entries (W1: one entry = the phone→lead and lead→phone keys).',
      '',
      ...(paired.length ? ['## Side by side, paired by run', '', ...paired, ''] : []),
      '## Goals',
      '',
      ...goals.map((g) => g.replace(/^\d+\. /, '- ')),
      '',
      '## Server side',
      '',
      serverTable(cfg, get),
      '',
      '## Where the CPU went',
      '',
      cpuTable(cfg, get),
      '',
      'µs of CPU per op, by thread, medians of runs: Node\'s main thread (it also runs the benchmark\'s own loop); ' +
        'the adapter\'s I/O thread (`cache-io`); tokio\'s blocking pool, where large values are compressed; ' +
        'the process\'s other threads (V8\'s GC helpers, libuv\'s pool); and redis-server. Cores used = total × ops/s: ' +
        'a cell below the machine\'s cores waits on something other than CPU.',
      '',
      failures.length ? '## Failed cells\n\n' + failures.map((f) => '- ' + f).join('\n') + '\n' : null,
    ].filter((l) => l !== null)
    fs.writeFileSync(cfg.out, md.join('\n'))
    console.log(`\nwrote ${path.relative(process.cwd(), cfg.out) || cfg.out}`)
  }
  return failures.length ? 1 : 0
}

runMain(main)
