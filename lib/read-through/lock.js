'use strict'
// The distributed lock of a load (src/lock.rs does the Redis side): the first
// instance takes `SET <prefix>:lock:<key> <token> NX PX lockTtlMs` and loads;
// the others poll the value with backoff for at most lockWaitMs, trying the
// lock again on the way (it is free once its holder released it or died and
// it expired), then load themselves. Nothing waits without a bound.

const { randomUUID } = require('node:crypto')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
/** `tryAcquire`'s answer when another instance holds the lock. */
const BUSY = Symbol('busy')

class DistributedLock {
  constructor(native, stats, { lockTtlMs, lockWaitMs }) {
    this.native = native
    this.stats = stats
    this.ttlMs = lockTtlMs
    this.waitMs = lockWaitMs
  }

  /**
   * Resolves to `{ token }` (ours: load, then `release`), `{ found: entry }`
   * (another instance stored a fresh value meanwhile), or `null` (no Redis
   * now, or we waited long enough: load without the lock).
   * `readFresh(key)` resolves to a fresh entry or null.
   */
  async acquire(key, readFresh) {
    const first = await this.tryAcquire(key)
    return first === BUSY ? this.waitFor(key, readFresh) : first
  }

  /** One attempt: `{ token }`, `BUSY` (another instance holds it), or `null` (no Redis now). */
  async tryAcquire(key) {
    const token = randomUUID()
    const got = await this.native.lockAcquire(key, token, this.ttlMs)
    if (got === false) return BUSY
    if (got) this.stats.lockAcquired++
    return got ? { token } : null
  }

  /** After `BUSY`: polls for the holder's value, retrying the lock; resolves as `acquire` does. */
  async waitFor(key, readFresh) {
    const token = randomUUID()
    this.stats.lockWaits++
    const deadline = Date.now() + this.waitMs
    let delay = 5
    for (let round = 0; round < 10_000; round++) {
      const left = deadline - Date.now()
      if (left <= 0) break
      await sleep(Math.min(delay, left))
      delay = Math.min(delay * 2, 100)
      const found = await readFresh(key)
      if (found) return { found }
      const again = await this.native.lockAcquire(key, token, this.ttlMs)
      if (again === null) return null
      if (again) {
        this.stats.lockAcquired++
        // The holder may have stored its value just before releasing.
        const stored = await readFresh(key)
        if (stored) {
          this.release(key, token)
          return { found: stored }
        }
        return { token }
      }
    }
    return null
  }

  release(key, token) {
    return this.native.lockRelease(key, token).catch(() => false)
  }
}

module.exports = { DistributedLock, BUSY }
