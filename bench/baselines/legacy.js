'use strict'
// What the old JavaScript adapter did with a value and a key, shared by both
// baselines so that they differ only in the Redis client underneath.

const TTL = { conversationContext: 7200, leadData: 300 }

/** JSON-encode; over 1 KB, prefix `compressed:` (the old adapter did not compress). */
function encode(value) {
  const json = JSON.stringify(value)
  return json.length > 1024 ? 'compressed:' + json : json
}

function decode(raw) {
  if (raw === null || raw === undefined) return null
  return JSON.parse(raw.startsWith('compressed:') ? raw.slice(11) : raw)
}

const digits = (phone) => String(phone).replace(/\D/g, '')

/** The old createOrgKey: `orgId:digits`, or the digits alone without an org. */
const orgKey = (orgId, phone) => (orgId ? `${orgId}:${digits(phone)}` : digits(phone))

/** Key names of the old layout under `prefix`. */
function keys(prefix) {
  const p = prefix ? prefix + ':' : ''
  return {
    contexts: `${p}conversationContexts`, // one hash, field = orgKey
    phoneToLead: (phone) => `${p}phoneToLead:${digits(phone)}`,
    leadToPhone: (lead) => `${p}leadToPhone:${lead}`,
  }
}

module.exports = { TTL, encode, decode, orgKey, keys }
