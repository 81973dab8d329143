'use strict'
// The read-through handler: getOrLoad, getOrLoadMany and wrap. It reads the
// entry (one batched read, envelope included), asks the Policy what the entry
// is worth (fresh, due for an early refresh, a fallback only), and runs loads
// as flights shared by every concurrent caller of a key in this process
// (and, with distributedLock, across instances). Each concern has its module:
// options.js (the Policy), envelope.js (the stored form), loader-runner.js
// (timeouts, throttle, fail-safe), lock.js (the distributed lock), stats.js.

const { resolvePolicy } = require('./options.js')
const envelope = require('./envelope.js')
const { LoaderRunner } = require('./loader-runner.js')
const { DistributedLock, BUSY } = require('./lock.js')
const { ReadThroughStats } = require('./stats.js')
const { describe } = require('../args.js')
const { checkTags } = require('../tags.js')

const MISS = Symbol('miss')

class ReadThrough {
  /**
   * `adapter`: the CacheAdapter (its `_call`, `_json`, `_plainLoad`);
   * `config`: the core's resolved `stats().config`; `parse`: JSON text → value.
   */
  constructor(adapter, config, parse, OP) {
    this.adapter = adapter
    this.parse = parse
    this.OP = OP
    const rt = config.readThrough
    this.defaults = {
      defaultTtl: config.defaultTTL,
      loaderTimeoutMs: config.loaderTimeoutMs,
      distributedLock: rt.distributedLock,
    }
    this.stats = new ReadThroughStats()
    this.runner = new LoaderRunner(this.stats, rt.failSafeThrottleMs)
    this.lock = new DistributedLock(adapter._native, this.stats, rt)
    /** key → { promise, background }: the load under way in this process. */
    this.flights = new Map()
    this.decode = (text) => (text === null ? MISS : envelope.unwrap(text, parse))
  }

  /** The stored entry, envelope read: one batched read. */
  read(key) {
    // Through the near cache where one is on: a hit makes no round trip.
    return this.adapter._read(this.OP.Get | this.OP.RAW, [key], this.decode)
  }

  /** A fresh entry of `key` or null (the lock's waiters poll with it). */
  readFresh(key) {
    return this.read(key).then((e) => (e !== MISS && Date.now() < e.fresh ? e : null))
  }

  getOrLoad(key, loader, ttlOrOptions) {
    try {
      if (typeof key !== 'string') throw new TypeError(`key must be a string, got ${describe(key)}`)
      if (typeof loader !== 'function') throw new TypeError(`loader must be a function, got ${describe(loader)}`)
      const policy = resolvePolicy(ttlOrOptions, this.defaults)
      if (policy.plain && typeof ttlOrOptions !== 'object') return this.adapter._plainGetOrLoad(key, loader, ttlOrOptions ?? NaN)
      return this.read(key).then((entry) => this.serve(key, entry, loader, policy))
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /** What a read found is worth under `policy`: the value, or a load (with the entry as fallback if it is one). */
  serve(key, entry, loader, policy) {
    const now = Date.now()
    if (entry !== MISS && now < entry.fresh) {
      if (entry.refresh > 0 && now >= entry.refresh) this.refreshInBackground(key, (f) => this.loadOne(key, loader, policy, true, f))
      return entry.value
    }
    const fallback = entry === MISS ? null : entry
    if (fallback && this.runner.throttled(key)) {
      this.stats.throttledLoads++
      this.stats.fallbackServed++
      return fallback.value
    }
    const flight = this.flight(key, fallback !== null, (f) => this.loadOne(key, loader, policy, fallback !== null, f))
    return this.runner.wait(key, flight, policy, fallback)
  }

  /** The flight of `key` under way, or a new one running `load()`. */
  flight(key, hasFallback, load) {
    let flight = this.flights.get(key)
    if (flight) return flight
    flight = { promise: null, background: false, failedSafe: false, overtaken: false }
    flight.promise = load(flight)
    this.flights.set(key, flight)
    const done = () => {
      if (this.flights.get(key) === flight) this.flights.delete(key)
    }
    flight.promise.then(done, (e) => {
      done()
      // A load that failed with nobody waiting (past a soft timeout, or an
      // eager refresh) still throttles the key: the database is down.
      if (hasFallback && flight.background && !flight.failedSafe) {
        flight.failedSafe = true
        this.stats.failsafeActivations++
        this.runner.throttle(key)
      }
      return e
    })
    return flight
  }

  /**
   * A write of `key` was queued: a load under way read what is now older than
   * that write. Its callers (who asked before the write) still get its value,
   * but nobody joins it from now on, and it does not store its result.
   */
  keyWritten(key) {
    const flight = this.flights.get(key)
    if (flight === undefined) return
    flight.overtaken = true
    this.flights.delete(key)
  }

  /**
   * Entries are being removed by tag, keys unknown here: every load under
   * way is treated as overtaken (see `keyWritten`). Sound, at the price of
   * not storing those loads' results.
   */
  allWritten() {
    for (const key of [...this.flights.keys()]) this.keyWritten(key)
  }

  /** Starts one background load of `key` unless one is under way or the key is throttled. */
  refreshInBackground(key, load) {
    if (this.flights.has(key) || this.runner.throttled(key)) return
    const flight = this.flight(key, true, load)
    flight.background = true
    this.stats.backgroundRefreshes++
    flight.promise.catch(() => {})
  }

  /** One key's load: the lock (if asked for), the loader with its context, bounded by the hard timeout, then the store. */
  async loadOne(key, loader, policy, hasFallback, flight) {
    let held = null
    if (policy.distributedLock) {
      held = await this.lock.acquire(key, (k) => this.readFresh(k))
      if (held && held.found) return held.found.value
    }
    try {
      const ctx = { key, ttl: policy.ttl, tags: policy.tags.slice(), hasFallback }
      const value = await this.runner.run(key, policy.hardTimeoutMs, () => loader(key, ctx))
      if (value === undefined) return undefined
      if (!flight?.overtaken) await this.store(key, value, policy, ctx)
      return value
    } finally {
      if (held && held.token) this.lock.release(key, held.token)
    }
  }

  /** Stores a loaded value with the TTL and tags its loader's context holds. */
  store(key, value, policy, ctx) {
    const ttl = resolvePolicy(ctx.ttl, this.defaults, 'ctx.ttl').ttl
    const tags = checkTags('ctx.tags', ctx.tags)
    const json = this.adapter._json('loader result', value)
    let text = json
    if (policy.needsEnvelope) {
      const { fresh, refresh } = policy.expiries(ttl, Date.now())
      text = envelope.wrap(json, fresh, refresh)
    }
    const OP = this.OP
    const strs = tags.length > 0 ? [key, text, JSON.stringify(tags)] : [key, text]
    return this.adapter._call(OP.Set | (tags.length > 0 ? OP.TAGGED : 0), policy.physicalTtl(ttl), strs, null)
  }

  /**
   * Many keys: the hits in one batched read, every missing key loaded by one
   * `loadMany(missing)` call (keys another caller is loading already are
   * joined, not loaded again), the results stored in one batch.
   */
  getOrLoadMany(keys, loadMany, options) {
    try {
      if (!Array.isArray(keys)) throw new TypeError(`keys must be an array of strings, got ${describe(keys)}`)
      keys.forEach((k, i) => {
        if (typeof k !== 'string') throw new TypeError(`keys[${i}] must be a string, got ${describe(k)}`)
      })
      if (typeof loadMany !== 'function') throw new TypeError(`loadMany must be a function, got ${describe(loadMany)}`)
      const policy = resolvePolicy(options, this.defaults, 'options')
      const unique = [...new Set(keys)]
      return Promise.all(unique.map((k) => this.read(k))).then((entries) => this.serveMany(unique, entries, keys, loadMany, policy))
    } catch (e) {
      return Promise.reject(e)
    }
  }

  serveMany(unique, entries, keys, loadMany, policy) {
    const now = Date.now()
    const answers = new Map()
    const waits = []
    const missing = []
    const loadOneOf = (k) => (f) => this.loadBatch([k], loadMany, policy, new Map([[k, f]])).then((m) => m.get(k))
    unique.forEach((k, i) => {
      const entry = entries[i]
      if (entry !== MISS && now < entry.fresh) {
        if (entry.refresh > 0 && now >= entry.refresh) this.refreshInBackground(k, loadOneOf(k))
        answers.set(k, entry.value)
        return
      }
      const fallback = entry === MISS ? null : entry
      if (fallback && this.runner.throttled(k)) {
        this.stats.throttledLoads++
        this.stats.fallbackServed++
        answers.set(k, fallback.value)
      } else if (this.flights.has(k)) waits.push([k, this.flights.get(k), fallback])
      else missing.push([k, fallback])
    })
    if (missing.length > 0) {
      const flights = new Map()
      const load = policy.distributedLock ? this.loadBatchLocked : this.loadBatch
      const batch = load.call(
        this,
        missing.map(([k]) => k),
        loadMany,
        policy,
        flights,
      )
      batch.catch(() => {})
      for (const [k, fallback] of missing) {
        const flight = this.flight(k, fallback !== null, () => batch.then((m) => m.get(k)))
        flights.set(k, flight)
        waits.push([k, flight, fallback])
      }
    }
    return Promise.all(waits.map(([k, flight, fallback]) => this.runner.wait(k, flight, policy, fallback).then((v) => answers.set(k, v)))).then(() =>
      keys.map((k) => answers.get(k)),
    )
  }

  /** One `loadMany(keys)` call, bounded by the hard timeout; its values stored (one batch). Resolves to a Map. */
  async loadBatch(keys, loadMany, policy, flights) {
    const ctx = { keys, ttl: policy.ttl, tags: policy.tags.slice() }
    const result = await this.runner.run(keys.join(','), policy.hardTimeoutMs, () => loadMany(keys.slice(), ctx))
    let map
    if (result instanceof Map) map = result
    else if (result !== null && typeof result === 'object' && !Array.isArray(result)) map = new Map(Object.entries(result))
    else throw new TypeError(`loadMany must resolve to a Map or an object keyed by key, got ${describe(result)}`)
    const wanted = new Map()
    const stores = []
    for (const k of keys) {
      if (!map.has(k) || map.get(k) === undefined) continue
      wanted.set(k, map.get(k))
      // A key written while `loadMany` ran keeps that newer write.
      if (!flights.get(k)?.overtaken) stores.push(this.store(k, map.get(k), policy, ctx))
    }
    await Promise.all(stores)
    return wanted
  }

  /**
   * `loadBatch` under each key's distributed lock: the keys whose lock is
   * free (or that have no Redis now) are loaded at once in one call; the
   * others wait for their holders' values, and those still missing when the
   * wait ends are loaded in a second call. At most two `loadMany` calls.
   */
  async loadBatchLocked(keys, loadMany, policy, flights) {
    const tokens = new Map()
    const release = (ks) => ks.forEach((k) => tokens.has(k) && this.lock.release(k, tokens.get(k)))
    const loadHeld = (ks) => (ks.length === 0 ? new Map() : this.loadBatch(ks, loadMany, policy, flights).finally(() => release(ks)))
    const firsts = await Promise.all(keys.map((k) => this.lock.tryAcquire(k)))
    const free = []
    const busy = []
    keys.forEach((k, i) => {
      if (firsts[i] === BUSY) return busy.push(k)
      free.push(k)
      if (firsts[i]) tokens.set(k, firsts[i].token)
    })
    const waited = async () => {
      const out = new Map()
      const still = []
      const answers = await Promise.all(busy.map((k) => this.lock.waitFor(k, (key) => this.readFresh(key))))
      busy.forEach((k, i) => {
        const answer = answers[i]
        if (answer && answer.found) return out.set(k, answer.found.value)
        still.push(k)
        if (answer && answer.token) tokens.set(k, answer.token)
      })
      for (const [k, v] of await loadHeld(still)) out.set(k, v)
      return out
    }
    const [now, later] = await Promise.all([loadHeld(free), busy.length > 0 ? waited() : new Map()])
    return new Map([...now, ...later])
  }

  /** A memoised async `fn`: results cached under `key(...args)` with the read-through's options. */
  wrap(fn, options = {}) {
    if (typeof fn !== 'function') throw new TypeError(`fn must be a function, got ${describe(fn)}`)
    if (options === null || typeof options !== 'object') throw new TypeError(`options must be an object, got ${describe(options)}`)
    const { key, ...rest } = options
    let keyOf
    if (typeof key === 'function') keyOf = key
    else if (typeof key === 'string') keyOf = (...args) => (args.length === 0 ? key : `${key}:${JSON.stringify(args)}`)
    else if (key === undefined) {
      const name = fn.name || 'wrapped'
      keyOf = (...args) => `${name}:${JSON.stringify(args)}`
    } else throw new TypeError(`options.key must be a function or a string, got ${describe(key)}`)
    resolvePolicy(rest, this.defaults) // bad options throw now, not at the first call
    const policy = Object.keys(rest).length > 0 ? rest : undefined
    const self = this
    return function cached(...args) {
      let k
      try {
        k = keyOf(...args)
      } catch (e) {
        return Promise.reject(e)
      }
      return self.getOrLoad(k, () => fn.apply(this, args), policy === undefined ? { ttl: undefined } : policy)
    }
  }
}

module.exports = { ReadThrough, MISS }
