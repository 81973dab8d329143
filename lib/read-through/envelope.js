'use strict'
// The read-through's stored form for entries that outlive their TTL (grace,
// eager refresh): `{"\u0000rt":<fresh until ms>,"r":<refresh after ms>,"v":<value>}`.
// Plain `get` answers the bare value (src/envelope.rs strips it in the core);
// the read-through reads it whole with the batch's RAW flag, so a hit stays
// one batched read and knows its logical expiry without a second round trip.

const PREFIX = '{"\\u0000rt":'

/** The envelope text for a value's JSON. */
function wrap(json, fresh, refresh) {
  return `${PREFIX}${fresh},"r":${refresh},"v":${json}}`
}

/**
 * Stored text → `{ value, fresh, refresh }` (fresh/refresh in ms since the
 * epoch; a value without an envelope is fresh until it expires).
 */
function unwrap(text, parse) {
  if (!text.startsWith(PREFIX)) return { value: parse(text), fresh: Infinity, refresh: 0 }
  const r = text.indexOf(',"r":', PREFIX.length)
  const v = r < 0 ? -1 : text.indexOf(',"v":', r + 5)
  if (v < 0) return { value: parse(text), fresh: Infinity, refresh: 0 }
  return { value: parse(text.slice(v + 5, -1)), fresh: Number(text.slice(PREFIX.length, r)), refresh: Number(text.slice(r + 5, v)) }
}

module.exports = { PREFIX, wrap, unwrap }
