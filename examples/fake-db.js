'use strict'
/**
 * A stand-in for the primary database (Supabase in the seeds) behind the
 * example server. Every query answers after a random 50 to 100 ms, like a
 * round trip to a hosted Postgres, so the difference between a cache hit and
 * a miss is visible. Data lives in process memory; `stats()` counts queries.
 *
 * `setMode('slow')` makes every query take 300 ms, `setMode('down')` makes
 * every query fail at once (as a refused connection does): the dashboard's
 * database buttons, to show the read-through's fail-safe and soft timeouts.
 */

const MIN_LATENCY_MS = 50
const MAX_LATENCY_MS = 100

const DEFAULT_ORG_ID = 'b0c1b1c1-0000-0000-0000-000000000001'

/** agent phone number (the number the customer called) → organisation */
const organizationsByPhone = new Map([
  ['17786528784', { id: DEFAULT_ORG_ID, name: 'BICI Bike Store', timezone: 'America/Vancouver' }],
  ['16045550100', { id: 'b0c1b1c1-0000-0000-0000-000000000002', name: 'Granville Cycles', timezone: 'America/Vancouver' }],
])
const defaultOrganization = organizationsByPhone.get('17786528784')

/** `${orgId}:${digits}` → lead */
const leads = new Map()
/** lead id → lead */
const leadsById = new Map()
/** lead id → messages */
const conversations = new Map()

let queries = 0
let failures = 0
let nextLead = 1

const MODES = ['normal', 'slow', 'down']
const SLOW_LATENCY_MS = 300
let mode = 'normal'

/** 'normal' (50-100 ms), 'slow' (300 ms) or 'down' (every query fails). */
function setMode(next) {
  if (!MODES.includes(next)) throw new TypeError(`mode must be one of ${MODES.join(', ')}, got ${String(next).slice(0, 40)}`)
  mode = next
  return mode
}

const FIRST_NAMES = ['Alex', 'Sam', 'Jordan', 'Taylor', 'Morgan', 'Casey', 'Riley', 'Jamie', 'Avery', 'Quinn']
const TOPICS = ['e-bike test ride', 'brake service', 'tune-up booking', 'road bike sizing', 'warranty claim', 'kids bikes']

const digits = (phone) => String(phone).replace(/\D/g, '')

function query(fn) {
  queries++
  if (mode === 'down') {
    failures++
    return new Promise((_, reject) => {
      setTimeout(() => reject(Object.assign(new Error('fake database is down (connection refused)'), { code: 'ECONNREFUSED' })), 2)
    })
  }
  const delay = mode === 'slow' ? SLOW_LATENCY_MS : MIN_LATENCY_MS + Math.random() * (MAX_LATENCY_MS - MIN_LATENCY_MS)
  return new Promise((resolve, reject) => {
    setTimeout(() => {
      try {
        resolve(fn())
      } catch (err) {
        reject(err)
      }
    }, delay)
  })
}

function seedConversation(lead) {
  const topic = TOPICS[lead.seq % TOPICS.length]
  const t = Date.now() - 86_400_000
  return [
    { role: 'user', content: `Hi, I'm asking about a ${topic}.`, timestamp: new Date(t).toISOString() },
    { role: 'assistant', content: `Happy to help with your ${topic}. When suits you?`, timestamp: new Date(t + 30_000).toISOString() },
    { role: 'user', content: 'Saturday morning would be great.', timestamp: new Date(t + 60_000).toISOString() },
  ]
}

/** The organisation that owns the called number (exact digits, else the default), as in lead.service.ts. */
function findOrganizationByPhone(calledNumber) {
  return query(() => organizationsByPhone.get(digits(calledNumber || '')) || defaultOrganization)
}

/** The lead for this caller in this organisation, created on first contact. */
function findOrCreateLead(orgId, phone) {
  return query(() => {
    const key = `${orgId}:${digits(phone)}`
    let lead = leads.get(key)
    if (!lead) {
      const seq = nextLead++
      lead = {
        id: `lead-${String(seq).padStart(6, '0')}`,
        seq,
        organizationId: orgId,
        phone,
        customerName: FIRST_NAMES[seq % FIRST_NAMES.length],
        status: seq % 3 === 0 ? 'qualified' : 'new',
        bikeInterest: { type: seq % 2 ? 'e-bike' : 'road', budget: 1500 + (seq % 5) * 500 },
        createdAt: new Date().toISOString(),
      }
      leads.set(key, lead)
      leadsById.set(lead.id, lead)
      conversations.set(lead.id, seedConversation(lead))
    }
    return lead
  })
}

function getLeadById(leadId) {
  return query(() => leadsById.get(leadId) || null)
}

/** The recent messages and a one-line summary of the lead's previous conversations. */
function getConversationContext(orgId, leadId) {
  return query(() => {
    const messages = conversations.get(leadId) || []
    const lastUser = [...messages].reverse().find((m) => m.role === 'user')
    return {
      organizationId: orgId,
      leadId,
      messages: messages.slice(-10),
      summary: messages.length ? `Returning customer; last asked: "${lastUser ? lastUser.content : ''}"` : 'First contact',
    }
  })
}

function stats() {
  return { queries, failures, mode, leads: leads.size, minLatencyMs: MIN_LATENCY_MS, maxLatencyMs: MAX_LATENCY_MS }
}

module.exports = {
  DEFAULT_ORG_ID,
  MIN_LATENCY_MS,
  MAX_LATENCY_MS,
  findOrganizationByPhone,
  findOrCreateLead,
  getLeadById,
  getConversationContext,
  stats,
  setMode,
  MODES,
  SLOW_LATENCY_MS,
}
