'use strict'
// Runs loaders: the hard timeout, the loader latency histogram, the fail-safe
// throttle, and a caller's wait on a load (soft timeout, fail-safe fallback),
// with the load going on in the background when a caller stopped waiting.

const { performance } = require('node:perf_hooks')

function loaderTimeout(key, ms) {
  return Object.assign(new Error(`loader for ${JSON.stringify(key)} did not settle within ${ms} ms`), { code: 'ERR_CACHE_LOADER' })
}

class LoaderRunner {
  constructor(stats, throttleMs) {
    this.stats = stats
    this.throttleMs = throttleMs
    /** key → until (ms): a key whose loader just failed is not loaded again before then. */
    this.throttledUntil = new Map()
  }

  throttled(key) {
    const until = this.throttledUntil.get(key)
    if (until === undefined) return false
    if (Date.now() < until) return true
    this.throttledUntil.delete(key)
    return false
  }

  throttle(key) {
    if (this.throttleMs <= 0) return
    if (this.throttledUntil.size > 100_000) {
      const now = Date.now()
      for (const [k, until] of this.throttledUntil) if (until <= now) this.throttledUntil.delete(k)
    }
    this.throttledUntil.set(key, Date.now() + this.throttleMs)
  }

  /**
   * `fn()` bounded by `ms`: its result, or a rejection with
   * `code: 'ERR_CACHE_LOADER'` when it does not settle in time (a result
   * arriving later is dropped). Times the loader into the histogram.
   */
  run(key, ms, fn) {
    this.stats.loaderCalls++
    const started = performance.now()
    return new Promise((resolve, reject) => {
      let timer = null
      const finish = (settle, v) => {
        if (timer === null) return
        clearTimeout(timer)
        timer = null
        this.stats.observe((performance.now() - started) / 1000)
        settle(v)
      }
      timer = setTimeout(() => {
        timer = null
        this.stats.hardTimeouts++
        this.stats.observe(ms / 1000)
        reject(loaderTimeout(key, ms))
      }, ms)
      new Promise((r) => r(fn())).then(
        (v) => finish(resolve, v),
        (e) => {
          this.stats.loaderFailures++
          finish(reject, e)
        },
      )
    })
  }

  /**
   * A caller's wait on `flight` (`{ promise, background }`, the promise
   * resolving to the loaded value). Without a fallback: the load's outcome.
   * With one (`{ value }`): the fallback after `softTimeoutMs` (the load goes
   * on and stores its result), and the fallback instead of an error when the
   * load fails or times out (fail-safe: counted, and the key throttled).
   */
  wait(key, flight, policy, fallback) {
    if (!fallback) return flight.promise
    const { ms, soft } = policy.timeoutFor(true)
    return new Promise((resolve) => {
      let answered = false
      const timer = soft
        ? setTimeout(() => {
            answered = true
            this.stats.softTimeouts++
            this.stats.fallbackServed++
            if (!flight.background) {
              flight.background = true
              this.stats.backgroundRefreshes++
            }
            resolve(fallback.value)
          }, ms)
        : null
      flight.promise.then(
        (value) => {
          if (answered) return
          answered = true
          clearTimeout(timer)
          resolve(value)
        },
        () => {
          if (answered) return
          answered = true
          clearTimeout(timer)
          if (!flight.failedSafe) {
            flight.failedSafe = true
            this.stats.failsafeActivations++
            this.throttle(key)
          }
          this.stats.fallbackServed++
          resolve(fallback.value)
        },
      )
    })
  }
}

module.exports = { LoaderRunner, loaderTimeout }
