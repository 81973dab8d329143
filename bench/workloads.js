'use strict'
// Deterministic data for the benchmark: phones, lead ids, org ids, and
// conversations between an AI voice agent of a car/bike dealership and its
// leads. Text comes from a small grammar driven by a seeded PRNG, so it is
// varied like real speech (a single repeated sentence would compress far
// better and flatter the compressed adapter) and identical from run to run.

/** mulberry32: small, fast, seedable PRNG returning floats in [0, 1). */
function prng(seed) {
  let s = seed >>> 0
  return function next() {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const int = (rnd, lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1))
const pick = (rnd, arr) => arr[Math.floor(rnd() * arr.length)]
const money = (n) => n.toLocaleString('en-US')

const V = {
  model: [
    'Honda Civic', 'Toyota RAV4', 'Ford F-150', 'Tesla Model 3', 'Subaru Outback', 'Mazda CX-5',
    'Chevrolet Equinox', 'Hyundai Tucson', 'Kia Telluride', 'Jeep Wrangler', 'Nissan Rogue',
    'Volkswagen Jetta', 'Trek FX 3', 'Specialized Turbo Vado', 'Cannondale Topstone', 'Giant Defy',
    'Yamaha MT-07', 'Kawasaki Ninja 400', 'Harley-Davidson Sportster S', 'Rad Power RadCity',
    'Honda CB500X', 'BMW R 1250 GS', 'Ducati Scrambler', 'Triumph Street Triple', 'Santa Cruz Hightower',
  ],
  trim: ['base', 'Sport', 'EX', 'Limited', 'Touring', 'XLT', 'Premium', 'SE', 'Trail', 'Long Range'],
  color: [
    'midnight blue', 'pearl white', 'graphite gray', 'candy red', 'matte black', 'forest green',
    'silver', 'burnt orange', 'sand beige', 'electric yellow',
  ],
  day: ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'tomorrow', 'this weekend', 'next week'],
  feature: [
    'heated seats', 'adaptive cruise control', 'Apple CarPlay', 'a tow package', 'ABS', 'a quick shifter',
    'hydraulic disc brakes', 'a removable battery', 'all-wheel drive', 'a sunroof', 'lane keep assist',
    'a 360 camera', 'traction control', 'tubeless tires', 'a carbon fork', 'remote start', 'ride modes',
  ],
  usage: [
    'commuting about forty minutes each way', 'weekend trail rides', 'hauling a small camper',
    'getting the kids to school', 'delivery work in the city', 'long highway trips', 'my daughter who just got her license',
    'riding to campus', 'towing a boat in the summer', 'a mix of gravel and pavement',
  ],
  staff: ['Maria', 'Derek', 'Priya', 'Tom', 'Alejandro', 'Keisha', 'Sam', 'Olivia'],
  name: ['Jordan', 'Chris', 'Taylor', 'Morgan', 'Alex', 'Jamie', 'Casey', 'Riley', 'Avery', 'Drew', 'Pat', 'Robin'],
  credit: ['pretty good', 'around 700', 'not great honestly', 'excellent', 'rebuilding after a rough year', 'fair'],
  promo: [
    'we have zero percent financing on select models through the end of the month',
    'there is a free first service with any purchase this week',
    'we are including a helmet and lock with every e-bike',
    'the manufacturer rebate is still active until the fifteenth',
    'we price match any dealer within fifty miles',
    'extended warranties are twenty percent off right now',
  ],
  filler: ['um', 'so', 'okay', 'yeah', 'honestly', 'well', 'right', 'I mean', 'actually', 'alright'],
  town: ['Springfield', 'Riverside', 'Fairview', 'Oak Hill', 'Lakewood', 'Brookside', 'Centerville', 'Maple Grove', 'Westfield', 'Hillcrest'],
  street: ['Main Street', 'Industrial Parkway', 'Cedar Avenue', 'Route 9', 'Harbor Road', 'Elm Street', 'Commerce Drive', 'Old Mill Road'],
  month: ['January', 'March', 'April', 'June', 'August', 'September', 'October', 'December'],
  ack: [
    'Great question!', 'Absolutely.', 'Got it.', 'That makes sense.', 'Happy to help with that.',
    'Thanks for checking.', 'Good news there.', 'Sure thing.', 'I understand.', 'Perfect.',
  ],
}

function time(rnd) {
  const h = int(rnd, 9, 18)
  const m = pick(rnd, ['00', '15', '30', '45'])
  return `${h > 12 ? h - 12 : h}:${m} ${h >= 12 ? 'PM' : 'AM'}`
}

function vehicle(rnd, ctx) {
  return `${ctx.year} ${ctx.model}${rnd() < 0.4 ? ' ' + pick(rnd, V.trim) : ''}`
}

// `o(r, 'a|b|c')` picks one alternative: word-level variety, as in speech.
const o = (r, alts) => pick(r, alts.split('|'))

const USER = [
  (r, c) => `${o(r, "I'm looking at|I was checking out|I saw|I'm interested in|I keep coming back to")} the ${vehicle(r, c)} you ${o(r, 'have listed online|posted on Facebook|had on the website|showed on Marketplace')}`,
  (r, c) => `do you ${o(r, 'still have|have any more of')} the ${pick(r, V.color)} ${o(r, 'one|model|version')} ${o(r, 'in stock|on the lot|available')}`,
  (r, c) => `what's the ${o(r, 'best out the door price|lowest price|real number|cash price')} you can do on the ${c.model}`,
  (r, c) => `can I come in ${pick(r, V.day)} ${o(r, 'around|at|maybe|after')} ${time(r)} for a test ${c.bike ? 'ride' : 'drive'}`,
  (r, c) => `I have a ${int(r, 2008, 2021)} ${pick(r, V.model)} with ${o(r, 'about|roughly|just over|under')} ${money(int(r, 12, 160) * 1000)} miles ${o(r, "I'd like to trade in|that I want to get rid of|I could trade|that still runs fine")}`,
  (r, c) => `what would the ${o(r, 'monthly payment|payment|note')} be over ${pick(r, [24, 36, 48, 60, 72, 84])} months ${o(r, 'with nothing down|with some money down|if I finance through you|roughly|')}`,
  (r, c) => `does it ${o(r, 'come with|have|include')} ${pick(r, V.feature)}`,
  (r, c) => `my credit is ${pick(r, V.credit)}`,
  (r, c) => `I ${o(r, 'need|want|am after')} something for ${pick(r, V.usage)}`,
  (r, c) => `how many ${o(r, 'miles|owners|accidents')} ${o(r, 'are on it|has it had|does it have')}`,
  (r, c) => `is there any room on the price if I put ${money(int(r, 5, 60) * 100)} down`,
  (r, c) => `my ${o(r, 'partner|wife|husband|dad|roommate|brother')} wants to ${o(r, 'see it too|look at it|take it for a spin')}, can we ${o(r, 'both|all')} come ${pick(r, V.day)}`,
  (r, c) => `is the ${c.model} still under ${o(r, 'warranty|the factory warranty|any kind of warranty')}`,
  (r, c) => `I saw ${o(r, 'the ad that said|online it was|somebody told me')} ${money(int(r, 80, 450) * 100)} dollars, is that ${o(r, 'right|still good|the real price')}`,
  (r, c) => `can you ${o(r, 'text|email|send')} me the ${o(r, 'address|link|pictures|window sticker|Carfax')}`,
  (r, c) => `what's the difference between the ${pick(r, V.trim)} and the ${pick(r, V.trim)}`,
  (r, c) => `sorry, I'm ${o(r, 'driving|at work|in a meeting|on the bus')}, can you repeat the part about the ${o(r, 'price|financing|appointment|warranty|trade-in|mileage')}`,
  (r, c) => `this is ${c.name} ${o(r, 'by the way|from earlier|again|')}`,
  (r, c) => `${o(r, 'how long|how fast|how far')} ${o(r, 'does the battery last|can it go|does it take to charge')} ${o(r, 'on a full charge|in the cold|with a passenger|')}`,
  (r, c) => `I ${o(r, 'got a quote|was offered|heard')} ${money(int(r, 90, 600) * 100)} from ${o(r, 'another dealer|the place on Route 9|CarMax|a guy on Craigslist|my credit union')}`,
  (r, c) => `${o(r, 'do you guys|can you')} ${o(r, 'deliver|ship it|do home delivery|hold it with a deposit')} ${o(r, 'to|out to|over to')} ${pick(r, V.town)}`,
  (r, c) => `I ${o(r, 'work|get off')} ${o(r, 'until|at')} ${time(r)} ${o(r, 'most days|on weekdays|so evenings are better')}`,
]

const AGENT = [
  (r, c) => `The ${vehicle(r, c)} in ${pick(r, V.color)} is ${o(r, 'listed at|priced at|on sale for')} $${money(c.price)}, and it has ${money(c.miles)} miles on it.`,
  (r, c) => `We can do financing over ${pick(r, [36, 48, 60, 72])} months at ${o(r, 'around|about|as low as')} ${(int(r, 29, 119) / 10).toFixed(1)}% APR with approved credit, which ${o(r, 'comes out to|works out to|would be')} roughly $${money(int(r, 89, 780))} a month.`,
  (r, c) => `For your trade-in, our ${o(r, 'appraisal team|used car manager|service department')} would need to see it in person, but similar ones have been ${o(r, 'going for|bringing|trading at')} around $${money(int(r, 15, 190) * 100)}.`,
  (r, c) => `I can ${o(r, 'book you in|set you up|put you down')} with ${pick(r, V.staff)} ${pick(r, V.day)} at ${time(r)}${o(r, '.|, and I will send a reminder.|; it takes about half an hour.')}`,
  (r, c) => `That ${o(r, 'one|trim|model')} comes with ${pick(r, V.feature)} and ${pick(r, V.feature)}${o(r, '.|, which customers really like.|, plus a full tank or charge on delivery.')}`,
  (r, c) => `Just so you know, ${pick(r, V.promo)}.`,
  (r, c) => `It's a ${o(r, 'great|solid|popular')} ${o(r, 'fit|choice|pick')} for ${pick(r, V.usage)}, and ${o(r, 'a lot of our customers use it exactly that way|our reviews on it are strong|it holds its value well')}.`,
  (r, c) => `We also have a ${int(r, 2019, 2025)} ${pick(r, V.model)} that might suit you, at $${money(int(r, 9, 60) * 1000 + int(r, 0, 9) * 100)}, stock number ${int(r, 1000, 9999)}${o(r, 'A|B|C|X|')}.`,
  (r, c) => `The factory warranty runs until ${pick(r, V.month)} ${int(r, 2025, 2029)}, and we can extend it ${o(r, 'for another three years|to 100,000 miles|at a discount this month')}.`,
  (r, c) => `I've noted that your credit is ${pick(r, V.credit)}; our finance manager ${o(r, 'works with all kinds of situations|can pre-qualify you with a soft pull|will go over options with you')}.`,
  (r, c) => `Our ${o(r, 'showroom|store|service center')} is at ${int(r, 100, 9800)} ${pick(r, V.street)} in ${pick(r, V.town)}, and ${o(r, 'there is free parking out front|we are open until seven|the entrance is next to the bike racks')}.`,
  (r, c) => `${o(r, 'The battery|Range|The motor')} ${o(r, 'is rated at|gets about|should give you')} ${int(r, 25, 320)} ${o(r, 'miles|kilometers')} ${o(r, 'per charge|in mixed riding|on the highway')}, ${o(r, 'a bit less in winter|depending on how you ride|with a full charge taking about five hours')}.`,
  (r, c) => `It ${o(r, 'had one previous owner|is a clean title|came in on trade last week|just passed our 150 point inspection')} and ${o(r, 'the service records are on file|the tires are nearly new|it has no accident history|we replaced the brakes')}.`,
  (r, c) => `If the ${money(int(r, 90, 600) * 100)} quote is ${o(r, 'in writing|for the same trim|out the door')}, ${o(r, 'we will match it|I can ask my manager to beat it|send it over and we will take a look')}.`,
]

const CLOSERS = [
  (r, c) => `Would ${pick(r, V.day)} at ${time(r)} work for you?`,
  (r, c) => `Is there anything else you'd like to know about the ${c.model}?`,
  (r, c) => `Should I ${o(r, 'text|email')} you the details ${o(r, 'at this number|right now|after our call')}?`,
  (r, c) => `Would you like me to hold it for you until ${pick(r, V.day)}?`,
  (r, c) => `Do you want me to have ${pick(r, V.staff)} call you back with ${o(r, 'numbers|a quote|the trade value')}?`,
  (r, c) => `${o(r, 'What|Which')} ${o(r, 'time|day')} is ${o(r, 'best|easiest')} for you?`,
  (r, c) => '',
]

const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1)

function userMessage(r, c) {
  const parts = []
  if (r() < 0.35) parts.push(cap(pick(r, V.filler)) + ',')
  const n = int(r, 1, 3) + (r() < 0.3 ? 1 : 0)
  for (let i = 0; i < n; i++) {
    const s = pick(r, USER)(r, c)
    parts.push((parts.length === 0 ? cap(s) : s).trim() + (r() < 0.3 ? '?' : '.'))
  }
  return parts.join(' ')
}

function agentMessage(r, c) {
  const parts = []
  if (r() < 0.6) parts.push(pick(r, V.ack))
  if (r() < 0.3) parts.push(`Thanks, ${c.name}.`)
  const n = int(r, 1, 4) + (r() < 0.4 ? 1 : 0)
  for (let i = 0; i < n; i++) parts.push(pick(r, AGENT)(r, c))
  const close = pick(r, CLOSERS)(r, c)
  if (close) parts.push(close)
  return parts.join(' ')
}

/** One conversation of `count` messages, alternating user and assistant. */
function conversation(seed, count) {
  const r = prng(seed)
  const model = pick(r, V.model)
  const ctx = {
    model,
    bike: /Trek|Specialized|Cannondale|Giant|Yamaha|Kawasaki|Harley|Rad|CB500|BMW|Ducati|Triumph|Santa/.test(model),
    year: int(r, 2016, 2025),
    price: int(r, 9, 72) * 1000 + int(r, 0, 9) * 100 + 99,
    miles: int(r, 0, 90) * 1000 + int(r, 0, 999),
    name: pick(r, V.name),
  }
  let t = Date.UTC(2025, int(r, 0, 11), int(r, 1, 28), int(r, 8, 20), int(r, 0, 59), int(r, 0, 59))
  const out = new Array(count)
  for (let i = 0; i < count; i++) {
    const user = i % 2 === 0
    t += int(r, 2000, 45000) + int(r, 0, 999)
    out[i] = {
      role: user ? 'user' : 'assistant',
      content: user ? userMessage(r, ctx) : agentMessage(r, ctx),
      timestamp: new Date(t).toISOString(),
    }
  }
  return out
}

function phoneOf(i) {
  // +1 NXX NXX XXXX, deterministic and unique per i
  const area = 201 + (i % 700)
  const rest = String(2000000 + ((i * 7919) % 7999999)).padStart(7, '0')
  return `+1${area}${rest}`
}

function leadOf(i) {
  // ~44 chars, so the stored JSON string is about 50 bytes with its framing
  const r = prng(0x1ead + i)
  const hex = (n) => Array.from({ length: n }, () => Math.floor(r() * 16).toString(16)).join('')
  return `lead_${hex(8)}-${hex(4)}-${hex(4)}-${hex(4)}-${hex(12)}`
}

const ORGS = ['org-bici-main', 'org-bici-north', 'org-jack-auto', 'org-valley-motors', 'org-coastal-cycles', null]

/**
 * The three workloads. Each has `keys` slots (phone / org+phone), a pool of
 * values to write, a get share, and `get`/`set` that call the adapter's domain
 * methods, so one driver serves the new adapter and both baselines.
 */
function makeWorkload(name, keys) {
  const phones = Array.from({ length: keys }, (_, i) => phoneOf(i))
  const orgs = Array.from({ length: keys }, (_, i) => ORGS[i % ORGS.length])
  switch (name) {
    case 'W1': {
      const leads = Array.from({ length: keys }, (_, i) => leadOf(i))
      return {
        name, keys, getShare: 0.9, desc: 'phone→lead, 90% get / 10% set, ~50 B',
        poolSize: keys,
        value: (v) => leads[v],
        get: (a, k) => a.getPhoneToLeadMapping(phones[k]),
        set: (a, k, v) => a.setPhoneToLeadMapping(phones[k], leads[v]),
      }
    }
    case 'W2':
    case 'W3': {
      const count = name === 'W2' ? 30 : 200
      // distinct conversations, reused across keys (Redis does not dedupe values)
      const poolSize = Math.min(keys, name === 'W2' ? 256 : 96)
      const pool = Array.from({ length: poolSize }, (_, i) => conversation((name === 'W2' ? 0x2000 : 0x3000) + i, count))
      return {
        name, keys, getShare: name === 'W2' ? 0.8 : 0.5,
        desc: `${count}-message context, ${name === 'W2' ? '80% get / 20% set' : '50% get / 50% set'}`,
        poolSize,
        value: (v) => pool[v % poolSize],
        get: (a, k) => a.getConversationContext(orgs[k], phones[k]),
        set: (a, k, v) => a.setConversationContext(orgs[k], phones[k], pool[v % poolSize]),
      }
    }
    default:
      throw new Error(`unknown workload ${name}`)
  }
}

/** Sizes of a workload's values: mean JSON bytes and gzip -1 ratio (for the report). */
function payloadStats(name) {
  const zlib = require('node:zlib')
  const w = makeWorkload(name, 64)
  let json = 0
  let gz = 0
  const n = Math.min(w.poolSize, 32)
  for (let i = 0; i < n; i++) {
    const s = JSON.stringify(w.value(i))
    json += Buffer.byteLength(s)
    gz += zlib.gzipSync(s, { level: 1 }).length
  }
  return { meanJsonBytes: Math.round(json / n), gzip1Ratio: json / gz }
}

module.exports = { prng, conversation, phoneOf, leadOf, makeWorkload, payloadStats }
