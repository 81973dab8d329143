'use strict'
// What a near-cache hit costs Node's thread, beside the floor of one native
// call: `npm run bench:near-hit`. The hit path was placed by this measurement
// (see README, "Near cache"): a hit served through a native call cannot cost
// less than the crossing itself.
//
// One adapter with `nearCache: true` on a redis-server of its own; 1000 W1
// keys (phone → lead) read once to fill the near cache; then, 5 rounds each:
// - `hit`: `getPhoneToLeadMapping(phone)` over the 1000 phones, every one a
//   near hit (Promise included, awaited in batches of 1000);
// - `native call`: the cheapest method of the native object
//   (`redisEnabled()`), the same number of times.
// Prints ns per call (median of the rounds) and their ratio. Bounded: 5
// rounds of 200 000 calls.

const path = require('node:path')
const { runMain, sleep, startRedis, stopRedis } = require('./harness')
const { makeWorkload } = require('./workloads')

const CALLS = 200000
const ROUNDS = 5

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s[s.length >> 1]
}

async function nsPerCall(body) {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < CALLS; i += 1000) await body(i)
  return Number(process.hrtime.bigint() - t0) / CALLS
}

async function main() {
  const { CacheAdapter } = require(path.join(__dirname, '..'))
  const { port, child } = await startRedis(process.env.REDIS_SERVER || 'redis-server', 'cache-adapter-bench-near-')
  const a = new CacheAdapter({ url: `redis://127.0.0.1:${port}`, keyPrefix: 'bench', nearCache: true, alerts: false })
  try {
    const until = Date.now() + 10000
    while (!(await a.getStats()).cache.near.active) {
      if (Date.now() > until) throw new Error('the near cache did not become active within 10 s')
      await sleep(20)
    }
    const w = makeWorkload('W1', 1000)
    for (let k = 0; k < w.keys; k++) await w.set(a, k, k)
    for (let k = 0; k < w.keys; k++) await w.get(a, k)
    const native = a._native
    const hits0 = (await a.getStats()).cache.near.hits
    const hit = []
    const call = []
    for (let r = 0; r < ROUNDS; r++) {
      hit.push(
        await nsPerCall((base) => {
          const pending = new Array(1000)
          for (let j = 0; j < 1000; j++) pending[j] = w.get(a, (base + j) % w.keys)
          return Promise.all(pending)
        }),
      )
      call.push(
        await nsPerCall(() => {
          for (let j = 0; j < 1000; j++) native.redisEnabled()
        }),
      )
    }
    const hits = (await a.getStats()).cache.near.hits - hits0
    if (hits !== ROUNDS * CALLS) throw new Error(`expected ${ROUNDS * CALLS} near hits, counted ${hits}: not every read was a hit`)
    const h = median(hit)
    const c = median(call)
    console.log(`near-cache hit (getPhoneToLeadMapping, Promise included): ${h.toFixed(0)} ns`)
    console.log(`one bare native call (redisEnabled):                     ${c.toFixed(0)} ns`)
    console.log(`hit / native call: ${(h / c).toFixed(2)}× (median of ${ROUNDS} rounds of ${CALLS} calls)`)
    return 0
  } finally {
    await a.close()
    await stopRedis(child)
  }
}

if (require.main === module) runMain(main)
