'use strict'
// Per-call read-through options, resolved once into one small Policy whose
// methods answer the policy questions (which timeout applies, is an entry
// fresh, due for an early refresh, what is stored and for how long). The
// handlers ask it; they never re-derive defaults.

const { describe, ttlSeconds, MAX_TTL_SECONDS } = require('../args.js')
const { checkTags } = require('../tags.js')

const KNOWN = new Set(['ttl', 'grace', 'softTimeoutMs', 'hardTimeoutMs', 'eagerRefresh', 'tags', 'distributedLock'])

function milliseconds(name, v, fallback) {
  if (v === undefined || v === null) return fallback
  if (typeof v !== 'number') throw new TypeError(`${name} must be a number of milliseconds, got ${describe(v)}`)
  if (!(v > 0) || !Number.isFinite(v) || v > 86_400_000) throw new RangeError(`${name} must be a positive number of milliseconds, at most 86400000, got ${v}`)
  return v
}

class Policy {
  constructor(fields) {
    Object.assign(this, fields)
    Object.freeze(this)
  }

  /** Only a TTL: the plain read-through (the native single-flight path), stored without an envelope. */
  get plain() {
    return this.grace === 0 && this.eagerRefresh === 0 && this.softTimeoutMs === Infinity && !this.explicitHard && this.tags.length === 0 && !this.distributedLock
  }

  /** Entries that can outlive their TTL carry their logical expiry (see envelope.js). */
  get needsEnvelope() {
    return this.grace > 0 || this.eagerRefresh > 0
  }

  /** Seconds Redis and the memory tier keep the entry: TTL + grace. */
  physicalTtl(ttl) {
    return Math.min(ttl + this.grace, MAX_TTL_SECONDS)
  }

  /** How long a caller waits for the loader: the soft timeout when a fallback exists and it is shorter. */
  timeoutFor(hasFallback) {
    if (hasFallback && this.softTimeoutMs < this.hardTimeoutMs) return { ms: this.softTimeoutMs, soft: true }
    return { ms: this.hardTimeoutMs, soft: false }
  }

  /** When an entry written now with `ttl` stops being fresh, and when a hit starts an early refresh (0: never). */
  expiries(ttl, now) {
    const fresh = now + Math.round(ttl * 1000)
    const refresh = this.eagerRefresh > 0 ? now + Math.round(ttl * 1000 * this.eagerRefresh) : 0
    return { fresh, refresh }
  }
}

/**
 * `ttlOrOptions` (a TTL in seconds, or `{ ttl, grace, softTimeoutMs,
 * hardTimeoutMs, eagerRefresh, tags, distributedLock }`) and the adapter's
 * settings → a Policy. Throws a TypeError/RangeError naming the option.
 */
function resolvePolicy(ttlOrOptions, defaults, name = 'ttl') {
  let o = ttlOrOptions
  if (o === undefined || o === null || typeof o === 'number') o = { ttl: o }
  else if (typeof o !== 'object' || Array.isArray(o)) {
    throw new TypeError(`${name} must be a number of seconds or an options object, got ${describe(o)}`)
  } else {
    for (const k of Object.keys(o)) if (!KNOWN.has(k)) throw new TypeError(`options.${k} is not a read-through option (${[...KNOWN].join(', ')})`)
    name = 'options.ttl'
  }
  const ttl = ttlSeconds(name, o.ttl)
  let grace = 0
  if (o.grace !== undefined && o.grace !== null) {
    if (typeof o.grace !== 'number') throw new TypeError(`options.grace must be a number of seconds, got ${describe(o.grace)}`)
    if (!(o.grace >= 0) || !Number.isFinite(o.grace) || o.grace > MAX_TTL_SECONDS) throw new RangeError(`options.grace must be 0 or a positive finite number of seconds, got ${o.grace}`)
    grace = o.grace
  }
  let eagerRefresh = 0
  if (o.eagerRefresh !== undefined && o.eagerRefresh !== null && o.eagerRefresh !== false) {
    if (typeof o.eagerRefresh !== 'number') throw new TypeError(`options.eagerRefresh must be a fraction of the TTL, got ${describe(o.eagerRefresh)}`)
    if (!(o.eagerRefresh > 0 && o.eagerRefresh < 1)) throw new RangeError(`options.eagerRefresh must be between 0 and 1 (exclusive), got ${o.eagerRefresh}`)
    eagerRefresh = o.eagerRefresh
  }
  const hardTimeoutMs = milliseconds('options.hardTimeoutMs', o.hardTimeoutMs, defaults.loaderTimeoutMs)
  const softTimeoutMs = milliseconds('options.softTimeoutMs', o.softTimeoutMs, Infinity)
  if (o.distributedLock !== undefined && o.distributedLock !== null && typeof o.distributedLock !== 'boolean') {
    throw new TypeError(`options.distributedLock must be a boolean, got ${describe(o.distributedLock)}`)
  }
  return new Policy({
    ttl: Number.isNaN(ttl) ? defaults.defaultTtl : ttl,
    grace,
    eagerRefresh,
    softTimeoutMs,
    hardTimeoutMs,
    explicitHard: o.hardTimeoutMs !== undefined && o.hardTimeoutMs !== null,
    tags: checkTags('options.tags', o.tags),
    distributedLock: o.distributedLock ?? defaults.distributedLock,
  })
}

module.exports = { resolvePolicy, Policy, milliseconds }
