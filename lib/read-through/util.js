'use strict'
// Small helpers the read-through shares with index.js's argument checks.

function describe(v) {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v).slice(0, 40)}`
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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

module.exports = { describe, ttlSeconds, MAX_TTL_SECONDS, sleep }
