'use strict'
// Argument checks shared by the public class and the read-through: a bad
// argument is a TypeError or RangeError naming it, before anything is queued.

function describe(v) {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v).slice(0, 40)}`
}

function requireString(name, v) {
  if (typeof v !== 'string') throw new TypeError(`${name} must be a string, got ${describe(v)}`)
  return v
}

/** The largest TTL in seconds, 2^31 - 1 (about 68 years); the core checks the same (src/config.rs). */
const MAX_TTL_SECONDS = 2147483647

/** A TTL in seconds; `undefined`/`null` → NaN, meaning "the default". */
function ttlSeconds(name, v) {
  if (v === undefined || v === null) return NaN
  if (typeof v !== 'number') throw new TypeError(`${name} must be a number of seconds, got ${describe(v)}`)
  if (!(v > 0) || !Number.isFinite(v)) throw new RangeError(`${name} must be a positive finite number of seconds, got ${v}`)
  if (v > MAX_TTL_SECONDS) throw new RangeError(`${name} must be at most ${MAX_TTL_SECONDS} seconds (about 68 years), got ${v}`)
  return v
}

module.exports = { describe, requireString, ttlSeconds, MAX_TTL_SECONDS }
