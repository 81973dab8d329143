'use strict'
// The public CacheAdapter: a thin class over the native core (binding.js).
//
// Why a JavaScript layer at all: it is where two measured wins live
// (NOTES.md, "What a call across N-API costs"):
// - every call made in one tick goes to Rust in ONE native call (`submit`),
//   and all of that batch's Promises settle from ONE completion callback
//   (lib/batcher.js; a tick of many near-cache hits may submit more than once);
// - V8 does JSON.stringify/JSON.parse, so values cross N-API as strings.
// Everything else (keys, TTLs, compression, Redis, the memory tier, the
// breaker, single-flight, metrics) happens in Rust.

const { EventEmitter } = require('node:events')
const { NativeCache, domainMethods, protocol, createOrgKey } = require('./binding.js')
const { Alerts } = require('./lib/alerts.js')
const { ReadThrough } = require('./lib/read-through/index.js')
const { Tags, checkTags } = require('./lib/tags.js')
const { Batcher, fromNative, FIRST_REPLY } = require('./lib/batcher.js')
const { NearCache, keepsWritten } = require('./lib/near.js')
const { describe, requireString, ttlSeconds } = require('./lib/args.js')

const OP = protocol()
const ORG_NULL = OP.ORG_NULL
/** Opcodes that only read: every other call writes (and leaves the near cache). */
const READS = new Set([OP.Get, OP.Exists, OP.HGet, OP.HGetAll])
const DOMAIN = domainMethods()

// Reply text settled per macrotask before yielding to the event loop.
const SLICE_BYTES = 256 * 1024
const NONE = Object.freeze([])

/** JSON text → value; a plain string with no escapes skips the parser. */
function parse(v) {
  if (v === null) return null
  const last = v.length - 1
  if (last > 0 && v.charCodeAt(0) === 34 && v.charCodeAt(last) === 34 && v.indexOf('\\') === -1) return v.slice(1, last)
  return JSON.parse(v)
}

/** `set`'s third argument: a TTL in seconds, or `{ ttl, tags }` → the batch's TTL and the tags' JSON (or null). */
function setOptions(ttlOrOptions) {
  if (ttlOrOptions === null || typeof ttlOrOptions !== 'object') return { num: ttlSeconds('ttl', ttlOrOptions), tags: null }
  for (const k of Object.keys(ttlOrOptions)) {
    if (k !== 'ttl' && k !== 'tags') throw new TypeError(`options.${k} is not a set option (ttl, tags)`)
  }
  const tags = checkTags('options.tags', ttlOrOptions.tags)
  return { num: ttlSeconds('options.ttl', ttlOrOptions.ttl), tags: tags.length > 0 ? JSON.stringify(tags) : null }
}

function toJson(name, value) {
  if (value === undefined) throw new TypeError(`${name} must be a JSON value, got undefined`)
  let json
  try {
    json = JSON.stringify(value)
  } catch (e) {
    throw new TypeError(`${name} cannot be stored as JSON: ${e.message}`)
  }
  if (json === undefined) throw new TypeError(`${name} cannot be stored as JSON (got ${typeof value})`)
  return json
}

/**
 * A loader's failure crosses the native single-flight as an Error whose
 * message is this marker and {name, message, code} as JSON, so that every
 * caller sharing the load gets an error of the same class, message and code.
 */
const LOADER_FAILURE = '\u0000loader-failure:'
const ERROR_CLASSES = { Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError }

function loaderFailure(e) {
  const info = { name: 'Error', message: String(e) }
  if (e instanceof Error) Object.assign(info, { name: e.name, message: e.message })
  const code = e !== null && typeof e === 'object' ? e.code : undefined
  if (typeof code === 'string' || typeof code === 'number') info.code = code
  return new Error(LOADER_FAILURE + JSON.stringify(info))
}

/** The loader failure carried by a native rejection, rebuilt; `undefined` if it carries none. */
function loaderFailureOf(e) {
  const message = e && typeof e.message === 'string' ? e.message : ''
  const at = message.indexOf(LOADER_FAILURE)
  if (at < 0) return undefined
  let info
  try {
    info = JSON.parse(message.slice(at + LOADER_FAILURE.length))
  } catch {
    return undefined
  }
  const Class = Object.hasOwn(ERROR_CLASSES, info.name) ? ERROR_CLASSES[info.name] : Error
  const rebuilt = new Class(info.message)
  if (rebuilt.name !== info.name) rebuilt.name = info.name // a custom class keeps at least its name
  if (info.code !== undefined) rebuilt.code = info.code
  return rebuilt
}

/** A `getOrLoad` read that found nothing stored (a stored `null` is a hit). */
const MISS = Symbol('miss')
const parseOrMiss = (v) => (v === null ? MISS : parse(v))

/** The old adapter's seven in-process maps, reported in `getStats().fallbackMaps`. */
const LEGACY_MAPS = [
  'activeConversations',
  'inflightRequests',
  'humanControlSessions',
  'humanControlQueue',
  'pendingDatabaseWrites',
  'conversationMetadata',
  'activeCallSessions',
]


function entriesOf(name, entries) {
  if (entries instanceof Map || Array.isArray(entries)) return Array.from(entries)
  if (entries !== null && typeof entries === 'object') return Object.entries(entries)
  throw new TypeError(`${name} must be an object, a Map or an array of [key, value] pairs, got ${describe(entries)}`)
}

/**
 * An adapter that is never closed must still be garbage-collected, and its
 * native core (supervisor, connections) with it. The native wake-up holds its
 * callback strongly for the adapter's life, so that callback reaches the
 * adapter only through a WeakRef; the keep-alive timer's callback holds
 * nothing; while calls are in flight the adapter is held here, so it cannot
 * be collected with callers waiting.
 */
const busy = new Set()
const keepAliveOfCollected = new FinalizationRegistry((timer) => clearInterval(timer))
const alertsOfCollected = new FinalizationRegistry((alerts) => alerts.stop())
function noop() {}
function wakeUp(adapter) {
  const ref = new WeakRef(adapter)
  return () => ref.deref()?._wake()
}
/**
 * The adapter's alerts, whose timer (a GC root) reaches the adapter only
 * through a WeakRef. Made here, not in the constructor: a closure there shares
 * the constructor's context, which holds `this` for the other arrow functions.
 */
function alertsOf(adapter) {
  const ref = new WeakRef(adapter)
  return new Alerts(
    adapter._native.alertsConfig(),
    () => ref.deref()?._native.alertInputs() ?? null,
    (e) => ref.deref()?.emit('alert', e),
  )
}

class CacheAdapter extends EventEmitter {
  /**
   * @param {import('./index').CacheAdapterOptions} [options]
   */
  constructor(options = {}) {
    super()
    if (options === null || typeof options !== 'object') {
      // Not describe(options): a string here is likely a Redis URL, password and all.
      throw new TypeError(`options must be an object, got ${options === null ? 'null' : typeof options}`)
    }
    const { onModeChange, ...rest } = options
    if (onModeChange !== undefined && typeof onModeChange !== 'function') {
      throw new TypeError(`options.onModeChange must be a function, got ${describe(onModeChange)}`)
    }
    let json
    try {
      json = JSON.stringify(rest)
    } catch (e) {
      throw new TypeError(`options cannot be read: ${e.message}`)
    }
    // Keeps Node running while calls are in flight, and only then: the
    // completion callback itself is weak, so an idle adapter never holds the process.
    this._keepAlive = setInterval(noop, 1 << 30)
    this._keepAlive.unref()
    this._batch = new Batcher((idle) => {
      if (idle) {
        this._keepAlive.unref()
        busy.delete(this)
      } else {
        this._keepAlive.ref()
        busy.add(this)
      }
    })
    this._leftover = NONE
    this._cursor = FIRST_REPLY
    this._draining = false
    this._drainSoon = () => this._drain()
    this._native = new NativeCache(json, wakeUp(this))
    keepAliveOfCollected.register(this, this._keepAlive)
    this._batch.native = this._native
    // The resolved settings (options, environment, defaults), read once.
    const { config, near } = this._native.stats()
    this._maxValueBytes = config.maxValueBytes
    this._readThrough = new ReadThrough(this, config, parse, OP)
    this._tags = new Tags(this._native, this._readThrough.stats, this._native.redisEnabled())
    // Reads ask the near cache first (on this thread, no native call) when there is one.
    this._near = near.enabled ? new NearCache(this._native, near) : null
    this._batch.near = this._near
    this._onModeChange = onModeChange
    this._inflightRequests = new Map()
    this._humanControl = new Map()
    this._closed = null
    this._alerts = alertsOf(this)
    alertsOfCollected.register(this, this._alerts)
    this._alerts.start()
  }

  /** Rust has completions ready. */
  _wake() {
    // Settle in a macrotask of our own, not inside Node's dispatch of the
    // wake-up, so that timers and I/O get their turn between batches.
    if (!this._draining) {
      this._draining = true
      setImmediate(this._drainSoon)
    }
  }

  /**
   * Settles what Rust finished, about SLICE_BYTES of reply text per
   * macrotask: settling runs the callers' continuations too (their
   * JSON.stringify and JSON.parse), and one long stretch of that is what
   * event-loop delay measures.
   */
  _drain() {
    // A fresh array per drain, never shift() on a long-lived one: left-trimming
    // an old-space array keeps its former slots in the remembered set, and
    // every reply they pointed to then survived scavenges (1.1 MB promoted
    // per scavenge, 3 ms pauses).
    let ready = this._leftover
    let k = 0
    try {
      const fresh = this._native.drain()
      ready = ready.length === 0 ? fresh : ready.concat(fresh)
      let budget = SLICE_BYTES
      while (k < ready.length && budget > 0) {
        const done = ready[k]
        if (done[0] === 0) {
          k++
          this._modeChanged(done[1], done[2])
          continue
        }
        const [next, spent] = this._batch.complete(done, this._cursor, budget)
        budget -= spent
        if (next === done.length) {
          k++
          this._cursor = FIRST_REPLY
        } else this._cursor = next
      }
    } catch (e) {
      // Nothing here may end the drain loop: a throw out of this macrotask
      // would leave `_draining` set, and every later call pending forever.
      process.emitWarning(`cache adapter: settling replies failed: ${e && e.message}`)
    } finally {
      this._leftover = k >= ready.length ? NONE : ready.slice(k)
      if (this._leftover.length > 0) setImmediate(this._drainSoon)
      else this._draining = false
    }
  }

  /** Tells `onModeChange` and every `modeChange` listener; one that throws is a warning, never the adapter's end. */
  _modeChanged(mode, reason) {
    this._tags.modeChanged(mode)
    const event = { mode, reason, at: new Date().toISOString() }
    if (this._onModeChange) {
      try {
        this._onModeChange(event)
      } catch (e) {
        process.emitWarning(`onModeChange threw: ${e && e.message}`)
      }
    }
    // rawListeners: `once` wrappers remove themselves as emit() would.
    for (const listener of this.rawListeners('modeChange')) {
      try {
        listener.call(this, event)
      } catch (e) {
        process.emitWarning(`a modeChange listener threw: ${e && e.message}`)
      }
    }
  }

  /**
   * Queues one call; argument errors become rejections, never throws.
   * `near`: a read whose reply the near cache may keep, or a write (value
   * last in `strs`) whose value is what the read of the same key answers.
   */
  _call(code, num, strs, map, near) {
    if (this._closed) return Promise.reject(Object.assign(new Error('the cache adapter is closed'), { code: 'ERR_CACHE_CLOSED' }))
    if (!READS.has(code & 0xff)) {
      if (this._near !== null) this._nearForget(code, strs)
      // A written value is held until its reply only where the near cache may keep it.
      near = near === true && this._near !== null && keepsWritten(strs[strs.length - 1])
      // A generic key written: a read-through load of it under way must not store its older result.
      if (((code >> 8) & 0xff) === 0 && code & 0xff && (code & 0xff) !== OP.ClearOrg) this._readThrough.keyWritten(strs[0])
    }
    return this._batch.call(code, num, strs, map, near)
  }

  /**
   * A write is being queued: its keys leave the near cache now, so that no
   * read made after it (in this tick or later) hits the value it replaces.
   * A large value is not copied to Rust for this: only a mapping's value
   * (a short id) builds a key.
   */
  _nearForget(code, strs) {
    const op = code & 0xff
    let args = strs
    const last = strs.length - 1
    if ((op === OP.Set || op === OP.HSet) && strs[last].length > 1024) {
      args = strs.slice(0, last)
      args.push('null')
    }
    try {
      this._native.nearForget(code, args)
    } catch {
      // Only a panic gets here, after the core emptied its near cache.
    }
  }

  /**
   * A read: the near cache's value if it holds one (a resolved Promise, no
   * round trip, parsed afresh for each caller), else one call of the batch.
   */
  _read(code, strs, map) {
    if (this._near !== null && !this._closed) {
      const json = this._near.get(code, strs)
      if (json !== null) {
        this._batch.served()
        try {
          return Promise.resolve(map(json))
        } catch (e) {
          return Promise.reject(e)
        }
      }
      return this._call(code, NaN, strs, map, true)
    }
    return this._call(code, NaN, strs, map)
  }

  /** One call on generic key `key` (argument `name`); `near` as in `_call`. */
  _generic(op, name, key, num, extra, map, near) {
    try {
      requireString(name, key)
      return this._call(op, num, extra ? [key, ...extra] : [key], map, near)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * A value's JSON text, checked against `maxValueBytes` before anything is
   * queued. UTF-8 takes 1 to 3 bytes per UTF-16 unit, so only text between
   * max/3 and max units long needs its bytes counted.
   */
  _json(name, value) {
    const json = toJson(name, value)
    const max = this._maxValueBytes
    if (json.length * 3 > max && (json.length > max || Buffer.byteLength(json, 'utf8') > max)) {
      throw new RangeError(`${name} is ${Buffer.byteLength(json, 'utf8')} bytes of JSON, above maxValueBytes (${max})`)
    }
    return json
  }

  // Generic methods ------------------------------------------------------

  get(key) {
    if (typeof key !== 'string') return this._generic(OP.Get, 'key', key, NaN, null, parse)
    return this._read(OP.Get, [key], parse)
  }

  /** `ttlOrOptions`: a TTL in seconds, or `{ ttl, tags }`. */
  set(key, value, ttlOrOptions) {
    try {
      const { num, tags } = setOptions(ttlOrOptions)
      const json = this._json('value', value)
      // An untagged value is what `get(key)` answers: the near cache may keep it.
      if (tags === null) return this._generic(OP.Set, 'key', key, num, [json], null, true)
      return this._generic(OP.Set | OP.TAGGED, 'key', key, num, [json, tags], null)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  delete(key) {
    return this._generic(OP.Delete, 'key', key, NaN, null, null)
  }

  exists(key) {
    return this._generic(OP.Exists, 'key', key, NaN, null, null)
  }

  expire(key, ttl) {
    try {
      return this._generic(OP.Expire, 'key', key, ttlSeconds('ttl', ttl), null, null)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  increment(key, by = 1) {
    if (typeof by !== 'number') return Promise.reject(new TypeError(`by must be a number, got ${describe(by)}`))
    if (!Number.isSafeInteger(by)) return Promise.reject(new RangeError(`by must be a safe integer, got ${by}`))
    return this._generic(OP.Increment, 'key', key, by, null, null)
  }

  decrement(key, by = 1) {
    if (typeof by !== 'number') return Promise.reject(new TypeError(`by must be a number, got ${describe(by)}`))
    return this.increment(key, -by)
  }

  getMany(keys) {
    if (!Array.isArray(keys)) return Promise.reject(new TypeError(`keys must be an array of strings, got ${describe(keys)}`))
    try {
      keys.forEach((k, i) => requireString(`keys[${i}]`, k))
    } catch (e) {
      return Promise.reject(e)
    }
    return Promise.all(keys.map((k) => this._read(OP.Get, [k], parse)))
  }

  setMany(entries, ttl) {
    let calls
    try {
      const num = ttlSeconds('ttl', ttl)
      // Every entry is checked before any is written.
      calls = entriesOf('entries', entries).map((pair, i) => {
        if (!Array.isArray(pair)) throw new TypeError(`entries[${i}] must be a [key, value] pair`)
        return [requireString(`entries[${i}] key`, pair[0]), this._json(`entries[${i}] value`, pair[1]), num]
      })
    } catch (e) {
      return Promise.reject(e)
    }
    // Like `set`: each value is what `get` answers, so the near cache may keep it.
    return Promise.all(calls.map(([k, json, num]) => this._call(OP.Set, num, [k, json], null, true))).then(() => true)
  }

  hget(hash, field) {
    try {
      return this._generic(OP.HGet, 'hash', hash, NaN, [requireString('field', field)], parse)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  hset(hash, field, value, ttl) {
    try {
      const extra = [requireString('field', field), this._json('value', value)]
      return this._generic(OP.HSet, 'hash', hash, ttlSeconds('ttl', ttl), extra, null)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  hdel(hash, field) {
    try {
      return this._generic(OP.HDel, 'hash', hash, NaN, [requireString('field', field)], null)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  hgetall(hash) {
    return this._generic(OP.HGetAll, 'hash', hash, NaN, null, JSON.parse)
  }

  /**
   * Read-through: the cached value, or `loader(key, ctx)`'s (cached for the
   * TTL). The third argument is a TTL in seconds or the read-through options
   * (see lib/read-through/ and README, Read-through).
   */
  getOrLoad(key, loader, ttlOrOptions) {
    return this._readThrough.getOrLoad(key, loader, ttlOrOptions)
  }

  /** The hits in one batched read, the misses loaded by one `loadMany(missingKeys)` call; an array in key order. */
  getOrLoadMany(keys, loadMany, options) {
    return this._readThrough.getOrLoadMany(keys, loadMany, options)
  }

  /** A memoised async `fn`, cached under `key(...args)` with the read-through's options. */
  wrap(fn, options) {
    return this._readThrough.wrap(fn, options)
  }

  /** Removes (or, with `{ soft: true }`, marks stale) every entry carrying any of the tags; resolves to how many. */
  invalidateTags(tags, options) {
    if (this._closed) return Promise.reject(Object.assign(new Error('the cache adapter is closed'), { code: 'ERR_CACHE_CLOSED' }))
    try {
      // A load under way may be of a key these tags remove: it must not store its result afterwards.
      this._readThrough.allWritten()
      return this._tags.invalidate(tags, options)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * getOrLoad with a TTL only: the native single-flight path. A loader that
   * changes `ctx.ttl` or `ctx.tags` has its value stored again with them,
   * after the native store (so the later write wins).
   */
  _plainGetOrLoad(key, loader, num) {
    const ctx = { key, ttl: Number.isNaN(num) ? this._readThrough.defaults.defaultTtl : num, tags: [], hasFallback: false }
    const initialTtl = ctx.ttl
    let ran = false
    let loaded
    const load = (k) =>
      new Promise((resolve) => resolve(loader(k, ctx))).then((v) => {
        ran = true
        loaded = v
        return v
      })
    // A hit, a stored null included (a remembered "not found"), costs one
    // batched read; only a miss takes the native single-flight path, which
    // reads again under its lock (without counting a second miss).
    return this._call(OP.Get, NaN, [key], parseOrMiss)
      .then((hit) => (hit !== MISS ? hit : this._load(key, load, num)))
      .then((v) => {
        if (!ran || loaded === undefined || (ctx.ttl === initialTtl && (!Array.isArray(ctx.tags) || ctx.tags.length === 0))) return v
        return this.set(key, loaded, { ttl: ctx.ttl, tags: ctx.tags }).then(() => v)
      })
  }

  _load(key, loader, num) {
    if (this._closed) return Promise.reject(Object.assign(new Error('the cache adapter is closed'), { code: 'ERR_CACHE_CLOSED' }))
    // The caller whose loader ran gets what it threw, as thrown; the callers
    // that shared its load get an error of the same class, message and code.
    let thrown
    let threw = false
    const load = (k) =>
      new Promise((resolve) => resolve(loader(k)))
        .then((v) => (v === undefined ? null : this._json('loader result', v)))
        .catch((e) => {
          threw = true
          thrown = e
          throw loaderFailure(e)
        })
    return this._native.getOrLoad(key, num, load).then(
      (json) => (json === null || json === undefined ? undefined : JSON.parse(json)),
      (e) => {
        const failure = loaderFailureOf(e)
        if (failure === undefined) return Promise.reject(fromNative(e))
        return Promise.reject(threw ? thrown : failure)
      },
    )
  }

  // Tenants --------------------------------------------------------------

  /** Removes every entry of one org, in Redis (SCAN + UNLINK) and in memory. */
  clearOrganizationCache(orgId) {
    try {
      requireString('orgId', orgId)
    } catch (e) {
      return Promise.reject(e)
    }
    for (const [key, session] of this._humanControl) {
      if (session.orgId === orgId) this._humanControl.delete(key)
    }
    return this._call(OP.ClearOrg, NaN, [orgId], null)
  }

  createOrgKey(orgId, phone) {
    if (orgId !== null && orgId !== undefined) requireString('orgId', orgId)
    requireString('phone', phone)
    return createOrgKey(orgId ?? null, phone)
  }

  // Process-local state (never in Redis) ----------------------------------

  getInflightRequest(key) {
    return this._inflightRequests.get(key) ?? null
  }

  /** Remembers a pending request; it forgets it by itself once it settles. */
  setInflightRequest(key, promise) {
    this._inflightRequests.set(key, promise)
    const forget = () => {
      if (this._inflightRequests.get(key) === promise) this._inflightRequests.delete(key)
    }
    if (promise && typeof promise.then === 'function') promise.then(forget, forget)
    return true
  }

  deleteInflightRequest(key) {
    return this._inflightRequests.delete(key)
  }

  getHumanControlSession(orgId, phone) {
    return this._humanControl.get(this.createOrgKey(orgId, phone))?.data ?? null
  }

  setHumanControlSession(orgId, phone, data) {
    this._humanControl.set(this.createOrgKey(orgId, phone), { orgId: orgId ?? null, data })
    return true
  }

  deleteHumanControlSession(orgId, phone) {
    return this._humanControl.delete(this.createOrgKey(orgId, phone))
  }

  /** The memory tier's entry of a legacy fallback map (a stub in the old adapter). */
  getFromFallbackMap(name, key) {
    requireString('name', name)
    requireString('key', key)
    return parse(this._native.fallbackGet(name, key))
  }

  setInFallbackMap(name, key, value) {
    requireString('name', name)
    requireString('key', key)
    this._native.fallbackSet(name, key, this._json('value', value))
    return true
  }

  // Migration ------------------------------------------------------------

  /**
   * Moves a running server's legacy Maps (keyed `orgId:phone` or `phone`)
   * into the cache. Resolves to how many entries of each map were moved.
   */
  async migrateFromMaps({ conversationContexts, conversationSummaries, phoneToLeadMapping } = {}) {
    const split = (key) => {
      const at = String(key).lastIndexOf(':')
      return at < 0 ? [null, String(key)] : [key.slice(0, at), key.slice(at + 1)]
    }
    const moved = { conversationContexts: 0, conversationSummaries: 0, phoneToLeadMapping: 0, failed: 0 }
    const jobs = []
    const each = (name, map, write) => {
      if (map === undefined || map === null) return
      for (const [key, value] of entriesOf(name, map)) {
        jobs.push(write(key, value).then(() => moved[name]++, () => moved.failed++))
      }
    }
    each('conversationContexts', conversationContexts, (k, v) => this.setConversationContext(...split(k), v))
    each('conversationSummaries', conversationSummaries, (k, v) => this.setConversationSummary(...split(k), v))
    each('phoneToLeadMapping', phoneToLeadMapping, (k, v) => this.setPhoneToLeadMapping(k, v))
    await Promise.all(jobs)
    return moved
  }

  // Observability --------------------------------------------------------

  /**
   * Entries per memory-tier kind, and the old adapter's seven map names:
   * the two this adapter keeps (process-local) with their sizes, 0 for the
   * five it has no such map for.
   */
  _fallbackMaps(stats) {
    const maps = { ...stats.entriesByKind }
    for (const name of LEGACY_MAPS) maps[name] = 0
    maps.inflightRequests = this._inflightRequests.size
    maps.humanControlSessions = this._humanControl.size
    return maps
  }

  async getStats() {
    this._near?.sweep()
    const stats = this._native.stats()
    const cache = {
      ...stats,
      readThrough: this._readThrough.stats.toJSON(),
      // The old adapter's fields, next to the new ones (`config` comes from Rust).
      redis: {
        hits: stats.hits,
        misses: stats.misses,
        errors: stats.redisErrors,
        hitRate: `${(stats.hitRate * 100).toFixed(2)}%`,
        avgResponseTime: `${stats.latency.meanMs.toFixed(2)}ms`,
        isConnected: stats.redisEnabled && stats.mode === 'redis' && stats.pool.connections > 0,
        connectionAttempts: stats.connectionAttempts,
      },
      fallback: { size: stats.memory.entries, enabled: true },
    }
    return {
      redisEnabled: stats.redisEnabled,
      ttlConfig: this._native.ttlConfig(),
      fallbackMaps: this._fallbackMaps(stats),
      cache,
      alerts: this._alerts.stats(),
    }
  }

  /** The active alerts (see README, Alerts). */
  async getAlerts() {
    return this._alerts.active()
  }

  async healthCheck() {
    const redis = this._closed ? { status: 'unhealthy', error: 'adapter closed' } : await this._native.redisHealth()
    this._near?.sweep()
    const stats = this._native.stats()
    const redisEnabled = stats.redisEnabled
    const mode = stats.mode
    const status = !redisEnabled || (redis.status === 'healthy' && mode === 'redis') ? 'healthy' : 'degraded'
    // The old adapter's `cache.redis`: a PING's time and INFO memory's used_memory.
    const legacyRedis =
      redis.status === 'healthy'
        ? { status: 'healthy', responseTime: `${Math.round(redis.latencyMs)}ms` }
        : { status: 'unhealthy', error: redis.error ?? (redis.status === 'disabled' ? 'Redis is disabled' : 'unavailable') }
    if (redis.status === 'healthy' && typeof redis.usedMemoryBytes === 'number') {
      legacyRedis.memory = `${Math.round(redis.usedMemoryBytes / 1024 / 1024)}MB`
    }
    return {
      status,
      timestamp: new Date().toISOString(),
      adapter: { status, redisEnabled, mode, fallbackMaps: Object.keys(this._fallbackMaps(stats)).length },
      redis,
      cache: {
        ...stats,
        fallback: { size: stats.memory.entries, enabled: true },
        redis: legacyRedis,
        // The old cache layer's own health: it answers (from Redis or memory) until closed.
        cache: { status: this._closed ? 'unhealthy' : 'healthy', fallbackEnabled: true, fallbackSize: stats.memory.entries },
      },
      alerts: this._alerts.active(),
    }
  }

  /** Prometheus text exposition of the counters, gauges and latency histogram. */
  async metrics() {
    this._near?.sweep()
    return this._native.metrics() + this._alerts.metricsText() + this._readThrough.stats.metricsText()
  }

  get mode() {
    return this._native.mode()
  }

  /**
   * Waits for calls in flight (bounded), then stops the native core, which
   * first makes one bounded attempt to replay writes journaled during an
   * outage. Resolves to `{ unreplayed }`, and warns when it is not 0. Idempotent.
   */
  close() {
    if (this._closed) return this._closed
    this._closed = (async () => {
      this._alerts.stop()
      this._near?.clear()
      this._batch.flush()
      const deadline = Date.now() + 5000
      while (this._batch.pending > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      this._keepAlive.ref() // the replay attempt is worth waiting for
      let unreplayed
      try {
        unreplayed = await this._native.close()
      } finally {
        clearInterval(this._keepAlive)
      }
      if (unreplayed > 0) {
        process.emitWarning(
          `CacheAdapter.close(): ${unreplayed} writes made while Redis was unavailable could not be replayed to Redis and are lost`,
          { code: 'CACHE_UNREPLAYED_WRITES' },
        )
      }
      return { unreplayed }
    })()
    return this._closed
  }
}

// The domain methods: one generic getter and setter per row of the Rust table.
for (const spec of DOMAIN) {
  const names = spec.args.map(([name]) => name)
  const orgAt = spec.args.findIndex(([, role]) => role === 'org')
  const arity = names.length
  const getCode = OP.Get | (spec.kind << 8)
  const setCode = OP.Set | (spec.kind << 8)
  const fallback = spec.valueDefault === null ? undefined : JSON.parse(spec.valueDefault)
  /** The key strings of a call, and the org-null flag. */
  const keyStrings = (a, b, strs) => {
    let flags = 0
    for (let i = 0; i < arity; i++) {
      const v = i === 0 ? a : b
      if (i === orgAt && (v === null || v === undefined)) flags = ORG_NULL
      else strs.push(requireString(names[i], v))
    }
    return flags
  }
  CacheAdapter.prototype[spec.getter] = function (a, b) {
    try {
      const strs = []
      const flags = keyStrings(a, b, strs)
      return this._read(getCode | flags, strs, parse)
    } catch (e) {
      return Promise.reject(e)
    }
  }
  if (spec.setter) {
    CacheAdapter.prototype[spec.setter] = function (a, b, c, d) {
      try {
        const strs = []
        const flags = keyStrings(a, b, strs)
        let value = arity === 1 ? b : c
        if (value === undefined) value = fallback
        strs.push(this._json(spec.valueArg, value))
        // An optional last argument `{ tags }` tags the entry (both keys of a mapping).
        const options = arity === 1 ? c : d
        let tagged = 0
        if (options !== undefined && options !== null) {
          if (typeof options !== 'object') throw new TypeError(`options must be an object, got ${describe(options)}`)
          for (const k of Object.keys(options)) if (k !== 'tags') throw new TypeError(`options.${k} is not an option of ${spec.setter} (tags)`)
          const tags = checkTags('options.tags', options.tags)
          if (tags.length > 0) {
            strs.push(JSON.stringify(tags))
            tagged = OP.TAGGED
          }
        }
        // The value is what the getter answers: the near cache may keep it (see lib/near.js).
        return this._call(setCode | flags | tagged, NaN, strs, null, tagged === 0)
      } catch (e) {
        return Promise.reject(e)
      }
    }
  }
}

exports.CacheAdapter = CacheAdapter
exports.default = CacheAdapter
