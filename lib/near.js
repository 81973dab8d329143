'use strict'
// The near cache's table: the values of recent reads, kept on Node's thread
// so that a hit makes no round trip and no native call. Measured (2-core VM):
// a hit through a native call cost 2.1 µs of this thread, one served here
// about 0.2 µs.
//
// Whether a held value may still be served is not decided here: Rust keeps
// the invalidation links and writes the verdict to a board of shared memory
// (src/near/board.rs), read here with Atomics.load:
// - a generation per slot of key hashes, bumped when a key of that slot is
//   written (by this adapter, or by anyone as Redis's tracking reports it);
// - an epoch, bumped when everything must go (a link lost, an outage);
// - whether hits may be served at all, and until when (the links' lease).
// Each value is kept with the slot, generation and epoch Rust read *before*
// its read was sent, and served only while all three still match.
//
// A value this adapter wrote is kept too, for a read of the same key
// (`written`): with the generation Rust read after the write's own bump, and
// served through one more announcement (the write's own echo from Redis), for
// at most the few ms Rust allows counted from the write's submission (see
// `Near::mark_written` in src/near/mod.rs for why both bounds).

const { nearLayout, protocol } = require('../binding.js')

const LAYOUT = nearLayout()
const OP = protocol()
const ACTIVE = LAYOUT.activeCell
const EPOCH = LAYOUT.epochCell
// Bytes counted per entry besides its id and value (the Map slot, the entry object).
const ENTRY_OVERHEAD = 96
/**
 * A written value larger than this (characters of JSON) is not kept. Measured
 * on W3 at 64 in flight (57 KB contexts), paired against the same build not
 * keeping written values: 0.88× to 0.90× the throughput, even with misses
 * down; with this limit 1.01×, while W2's 8 KB contexts keep theirs. The
 * likely cause: keeping one means holding its string until Redis answers the
 * write, tens of ms under load, through collections of V8's young generation,
 * which copy what they find alive.
 */
const WRITTEN_MAX_CHARS = 16 * 1024

/** Whether a write of `json` may leave its value in the near cache (see `written`). */
function keepsWritten(json) {
  return json.length <= WRITTEN_MAX_CHARS
}

class NearCache {
  /**
   * @param native the NativeCache (its `nearBoard()`)
   * @param bounds `{ maxEntries, maxBytes }`
   */
  constructor(native, bounds) {
    const board = native.nearBoard(performance.now())
    this.cells = new Uint32Array(board, 0, 8)
    this.lease = new Float64Array(board, LAYOUT.leaseOffset, 1)
    // Written here, read by Rust for getStats() and the metrics: hits, misses, entries, bytes.
    this.counts = new Float64Array(board, LAYOUT.countsOffset, 4)
    this.gens = new Uint32Array(board, LAYOUT.gensOffset, LAYOUT.slots)
    /** opcode → Map(first string → ... → Map(last string → entry)) */
    this.reads = new Map()
    /** Every entry kept from a read, oldest first (for eviction). */
    this.order = new Set()
    /** Every entry kept from a write, oldest first: evicted before any read one (see `fill`). */
    this.writes = new Set()
    this.bytes = 0
    /** The epoch the entries were kept under (see `sweep`). */
    this.epoch = Atomics.load(this.cells, EPOCH)
    this.maxEntries = bounds.maxEntries
    this.maxBytes = bounds.maxBytes
  }

  /**
   * The JSON text held for the read (`code`, `strs`) if it may be served
   * now, else null (a miss). Reads are found through one Map per string, not
   * by one joined key: the caller's strings keep their hashes, a joined key
   * would be hashed afresh on every read (measured: 430 vs 170 ns).
   */
  get(code, strs) {
    this.sweep()
    const at = this.find(code, strs)
    if (at !== undefined) {
      const now = performance.now()
      const gen = Atomics.load(this.gens, at.slot)
      if (now >= at.expires || (gen !== at.gen && gen !== at.echo)) {
        this.remove(at) // retired for good
      } else if (Atomics.load(this.cells, ACTIVE) === 1 && now < this.lease[0]) {
        this.counts[0]++
        return at.json
      }
      // Otherwise bypassed for now (a lease lapsed): kept, it may be served again.
    }
    this.counts[1]++
    return null
  }

  /**
   * Keeps the reply of the read (`code`, `strs`), sent under (`slot`, `gen`,
   * `epoch`), for at most `ttlMs`. `echo`: also served once the slot has
   * moved by exactly one announcement (a written value, see `written`).
   */
  fill(code, strs, json, slot, gen, epoch, ttlMs, echo = false) {
    let size = json.length + ENTRY_OVERHEAD
    for (let i = 0; i < strs.length; i++) size += strs[i].length
    if (size > this.maxBytes || strs.length === 0) return
    // Retired before it arrived (an invalidation or a flush while the read was on its way).
    this.sweep()
    const echoGen = echo ? (gen + 1) >>> 0 : gen
    const current = Atomics.load(this.gens, slot)
    if (epoch !== this.epoch || (current !== gen && current !== echoGen)) return
    // Removed first: removing drops the Maps it leaves empty, which may be on the path below.
    const old = this.find(code, strs)
    if (old !== undefined) this.remove(old)
    // A written value lives a few ms: it is kept only where it evicts no value read
    // (likely to be read again), and goes first when room is needed. Measured (W3 at 64
    // in flight, 57 KB values over maxBytes): kept like read ones, written values raised
    // its misses from 60% to 69% of reads.
    if (echo && (this.size() >= this.maxEntries || this.bytes + size > this.maxBytes)) return
    let at = this.reads.get(code)
    if (at === undefined) this.reads.set(code, (at = new Map()))
    const last = strs.length - 1
    for (let i = 0; i < last; i++) {
      let next = at.get(strs[i])
      if (next === undefined) at.set(strs[i], (next = new Map()))
      at = next
    }
    const entry = { json, slot, gen, echo: echoGen, expires: performance.now() + ttlMs, size, code, strs }
    at.set(strs[last], entry)
    ;(echo ? this.writes : this.order).add(entry)
    this.bytes += size
    // Written ones first, then the oldest read: a Set iterates in insertion order.
    while (this.size() > this.maxEntries || this.bytes > this.maxBytes) {
      this.remove((this.writes.size > 0 ? this.writes : this.order).values().next().value)
    }
    this.counted()
  }

  /**
   * Keeps the value of a write Redis applied (`code`, `strs`: a `set`,
   * `setMany` or domain setter, its value's JSON last) for a read of the same key, under
   * the snapshot Rust took after the write's own bump, until `ttlMs` after
   * `submittedAt` (the write's submission, `performance.now()`).
   */
  written(code, strs, slot, gen, epoch, ttlMs, submittedAt) {
    const left = submittedAt + ttlMs - performance.now()
    if (left <= 0) return
    const last = strs.length - 1
    this.fill(code - OP.Set + OP.Get, strs.slice(0, last), strs[last], slot, gen, epoch, left, true)
  }

  /** Entries held. */
  size() {
    return this.order.size + this.writes.size
  }

  /** The entry held for the read (`code`, `strs`), if any. */
  find(code, strs) {
    let at = this.reads.get(code)
    for (let i = 0; at !== undefined && i < strs.length; i++) at = at.get(strs[i])
    return at
  }

  remove(entry) {
    const { code, strs } = entry
    const path = [this.reads.get(code)]
    for (let i = 0; i < strs.length - 1; i++) path.push(path[i].get(strs[i]))
    // Drops the entry, then every Map it leaves empty.
    for (let i = strs.length - 1; i >= 0; i--) {
      path[i].delete(strs[i])
      if (path[i].size > 0) break
      if (i === 0) this.reads.delete(code)
    }
    if (!this.order.delete(entry)) this.writes.delete(entry)
    this.bytes -= entry.size
    this.counted()
  }

  /** Publishes the table's size to the board (getStats() and the metrics read it there). */
  counted() {
    this.counts[2] = this.size()
    this.counts[3] = this.bytes
  }

  /** After a flush (the epoch moved on), drops every entry at once rather than one by one as read. */
  sweep() {
    const epoch = Atomics.load(this.cells, EPOCH)
    if (epoch !== this.epoch) {
      this.epoch = epoch
      if (this.size() > 0) this.clear()
    }
  }

  clear() {
    this.reads.clear()
    this.order.clear()
    this.writes.clear()
    this.bytes = 0
    this.counted()
  }
}

module.exports = { NearCache, keepsWritten }
