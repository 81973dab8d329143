'use strict'
// The performance issue's goals, as data: a sentence and a check over the
// median results of one run. `r(workload, inflight, system)` returns a cell's
// medians (or null when the cell did not run). Thresholds live here only.

const fmt = (x) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a')
const NR = 'node-redis-old'
const IO = 'ioredis-old'
/** The benchmark's loop over an adapter that does nothing (bench/driver.js). */
const LOOP = 'loop-only'

/** One cell compared with one baseline: pass when `ok(native, base)` holds. */
function cellGoal(text, w, n, base, ok, show, system = 'native') {
  return {
    text,
    check: (r) => {
      const a = r(w, n, system)
      const b = r(w, n, base)
      if (!a || !b) return { pass: null, detail: 'cell not measured' }
      return { pass: ok(a, b), detail: show(a, b, r(w, n, LOOP)) }
    },
  }
}

const opsRatio = (min) => (a, b) => a.opsPerSec >= min * b.opsPerSec
const CORES = require('node:os').availableParallelism()

/**
 * What a throughput goal would take at the CPU the system spent per op in
 * this cell: its process and Redis together cannot use more than the
 * machine's cores, nor its main thread more than one. A goal that needs more
 * is out of reach on this machine unless the work per op itself shrinks.
 */
function budget(a, target, loop) {
  const cores = (target * (a.cpuUsPerOp + a.redisCpuUsPerOp)) / 1e6
  const main = (target * a.mainUsPerOp) / 1e6
  // The loop's own main-thread cost is part of every system's, and no client can go below it.
  const floor = loop ? `; the loop alone (${LOOP}) takes ${fmt(loop.mainUsPerOp)} µs of it per op` : ''
  return `; at this cell's CPU per op (${fmt(a.cpuUsPerOp)} µs process, ${fmt(a.redisCpuUsPerOp)} µs Redis, ${fmt(a.mainUsPerOp)} µs main thread), ${Math.round(target)} ops/s would need ${fmt(cores)} of ${CORES} cores and ${fmt(main)} of 1 main thread${floor}`
}
const mainRatio = (max) => (a, b) => a.mainUsPerOp <= max * b.mainUsPerOp
const showOps = (min) => (a, b, loop) =>
  `${fmt(a.opsPerSec / b.opsPerSec)}× (${Math.round(a.opsPerSec)} vs ${Math.round(b.opsPerSec)} ops/s)` +
  (opsRatio(min)(a, b) ? '' : budget(a, min * b.opsPerSec, loop))
/** A throughput goal at 64 in flight against node-redis: at least `min` times its ops/s. */
const opsGoal = (text, w, min, system) => cellGoal(text, w, 64, NR, opsRatio(min), showOps(min), system)
const showMain = (a, b) => `${fmt(a.mainUsPerOp / b.mainUsPerOp)}× (${fmt(a.mainUsPerOp)} vs ${fmt(b.mainUsPerOp)} µs/op)`

const GOALS = [
  opsGoal('W1 at 64 in flight: at least 1.2× node-redis ops/s', 'W1', 1.2),
  cellGoal('W1 at 64 in flight: main-thread CPU per op at most 0.5× node-redis\'s', 'W1', 64, NR, mainRatio(0.5), showMain),
  opsGoal('W2 at 64 in flight: at least 1.3× node-redis ops/s', 'W2', 1.3),
  opsGoal('W3 at 64 in flight: at least 1.0× node-redis ops/s', 'W3', 1.0),
  cellGoal('W3 at 64 in flight: main-thread CPU per op at most 0.8× node-redis\'s', 'W3', 64, NR, mainRatio(0.8), showMain),
  ...['W1', 'W2', 'W3'].map((w) =>
    cellGoal(`${w} at 64 in flight: event-loop delay p99 no higher than node-redis's`, w, 64, NR,
      (a, b) => a.eldP99ms <= b.eldP99ms,
      (a, b) => `${fmt(a.eldP99ms)} vs ${fmt(b.eldP99ms)} ms`),
  ),
  cellGoal('W1 at 1 in flight: p50 latency no worse than ioredis\'s', 'W1', 1, IO,
    (a, b) => a.p50ms <= b.p50ms,
    (a, b) => `${fmt(a.p50ms * 1000)} vs ${fmt(b.p50ms * 1000)} µs`),
  cellGoal('W2: Redis memory per context at most 35% of plain JSON (the old adapter\'s)', 'W2', 1, NR,
    (a, b) => a.bytesPerEntry <= 0.35 * b.bytesPerEntry,
    (a, b) => `${fmt((100 * a.bytesPerEntry) / b.bytesPerEntry)}% (${Math.round(a.bytesPerEntry)} vs ${Math.round(b.bytesPerEntry)} B)`),
  cellGoal('W3: Redis memory per context at most 25% of plain JSON (the old adapter\'s)', 'W3', 1, NR,
    (a, b) => a.bytesPerEntry <= 0.25 * b.bytesPerEntry,
    (a, b) => `${fmt((100 * a.bytesPerEntry) / b.bytesPerEntry)}% (${Math.round(a.bytesPerEntry)} vs ${Math.round(b.bytesPerEntry)} B)`),
  opsGoal('Near cache on: W1 at 64 in flight at least 3× node-redis ops/s', 'W1', 3, 'native-near'),
  cellGoal('Near cache on: W1 at 1 in flight p50 at most half of ioredis\'s', 'W1', 1, IO,
    (a, b) => a.p50ms <= 0.5 * b.p50ms,
    (a, b) => `${fmt(a.p50ms * 1000)} vs ${fmt(b.p50ms * 1000)} µs`, 'native-near'),
  {
    text: 'No errors and no misses in any native cell',
    check: (r, inflights, workloads) => {
      let seen = 0
      const bad = []
      for (const w of workloads) {
        for (const n of inflights) {
          for (const a of [r(w, n, 'native'), r(w, n, 'native-near')]) {
          if (!a) continue
          seen++
          if (a.errors || a.misses) bad.push(`${w}×${n}: ${a.errors} errors, ${a.misses} misses`)
          }
        }
      }
      if (seen === 0) return { pass: null, detail: 'no native cell measured' }
      return { pass: bad.length === 0, detail: bad.length ? bad.join('; ') : `${seen} cells clean` }
    },
  },
]

module.exports = { GOALS }
