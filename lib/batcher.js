'use strict'
// The batcher: every call made in one tick goes to Rust in ONE native call
// (`submit`), and each reply settles its caller's Promise. Measured in
// NOTES.md ("What a call across N-API costs"): this costs the main thread
// about a third of what one native call per operation does. One exception:
// with the near cache on, calls that waited while 32 hits were served go at
// once (`served`), in order, so a tick of many hits may submit more than once.

/** Native errors carry their kind as a `CODE: ` prefix (see src/lib.rs). */
function fromNative(e) {
  const m = /^(ERR_[A-Z_]+): ([\s\S]*)$/.exec(e && e.message)
  if (!m) return e
  const Class = m[1] === 'ERR_INVALID_ARG_TYPE' ? TypeError : m[1] === 'ERR_OUT_OF_RANGE' ? RangeError : Error
  return Object.assign(new Class(m[2]), { code: m[1] })
}

/** Where a completion's replies start: `[id, first, fills, ...replies]`. */
const FIRST_REPLY = 3
/** `settle` holds resolve, reject, map, the strings of a call the near cache may keep, and the opcode per call. */
const STRIDE = 5
/**
 * Near-cache hits served while calls of this tick wait for its flush, after
 * which they are submitted at once. Without it, under load, a call made early
 * in a tick waited until every other caller had run its hits, so the calls
 * that need Redis reached it in lockstep, one batch per tick. Measured (W1 at
 * 64 in flight, near cache on, 1 ms RTT, paired runs against the build
 * before): 16 hits 1.09×, 32 hits 1.23×, 64 hits 1.22×, 128 hits 1.03×; on
 * loopback 1.05×. Flushing at the next microtask instead split the batches of
 * callers without hits too (W1 at 64 in flight, near cache off: 0.84×).
 */
const HITS_BEFORE_FLUSH = 32

/** Collects one tick's calls and submits them as one batch. */
class Batcher {
  constructor(onIdleChange) {
    this.native = null
    /** The near cache (lib/near.js) that keeps the replies Rust marks as fills, or null. */
    this.near = null
    this.onIdleChange = onIdleChange
    this.nextId = 1
    this.inflight = new Map()
    this.reset()
  }

  reset() {
    /** Near-cache hits served since this batch's first call. */
    this.hitsWaiting = 0
    this.codes = []
    this.nums = []
    this.strs = []
    this.settle = []
  }

  /**
   * Queues one call; `strs` are its strings in wire order, `map` turns the
   * reply into the result; `near`: a read whose reply, or a write whose
   * value, the near cache may keep.
   */
  call(code, num, strs, map, near) {
    return new Promise((resolve, reject) => {
      if (this.codes.length === 0) process.nextTick(() => this.flush())
      this.codes.push(code)
      this.nums.push(num)
      for (let i = 0; i < strs.length; i++) this.strs.push(strs[i])
      this.settle.push(resolve, reject, map, near ? strs : undefined, code)
    })
  }

  /**
   * A near-cache hit was served: calls waiting for this tick's flush go now
   * if enough hits went before them. A tenant clear is never split off from
   * the calls made after it in its tick, where it is their barrier: it
   * empties the near cache as it is called, so no hit follows it.
   */
  served() {
    if (this.codes.length > 0 && ++this.hitsWaiting >= HITS_BEFORE_FLUSH) this.flush()
  }

  flush() {
    if (this.codes.length === 0) return
    const id = this.nextId
    this.nextId = id >= 0xfffffffe ? 1 : id + 1
    const { codes, nums, strs, settle } = this
    this.reset()
    if (this.inflight.size === 0) this.onIdleChange(false)
    this.inflight.set(id, { settle, remaining: codes.length, submittedAt: this.near === null ? 0 : performance.now() })
    try {
      this.native.submit(id, codes, nums, strs)
    } catch (e) {
      this.complete([id, 0, null, ...codes.map(() => e)], FIRST_REPLY, Infinity)
    }
  }

  /**
   * Settles Promises from `done` (`[id, first, fills, ...replies]` from Rust:
   * the replies to calls `first`, `first + 1`, ... of batch `id`, and the
   * near-cache fills among them), from index `from` on, until `budget`
   * characters of reply text are spent. Returns where it stopped
   * (`done.length`: all of `done` is settled) and what it spent.
   */
  complete(done, from, budget) {
    const batch = this.inflight.get(done[0])
    if (batch === undefined) return [done.length, 0]
    const { settle } = batch
    if (from === FIRST_REPLY && done[2] !== null && this.near !== null) this.keep(done, batch)
    let i = from
    let spent = 0
    for (let j = (done[1] + i - FIRST_REPLY) * STRIDE; i < done.length && spent < budget; i++, j += STRIDE) {
      const v = done[i]
      if (v instanceof Error) settle[j + 1](fromNative(v))
      else {
        if (typeof v === 'string') spent += v.length
        const map = settle[j + 2]
        if (map === null) settle[j](v)
        else {
          try {
            settle[j](map(v))
          } catch (e) {
            settle[j + 1](e)
          }
        }
      }
    }
    batch.remaining -= i - from
    if (batch.remaining === 0) {
      batch.settle = null
      this.inflight.delete(done[0])
      if (this.inflight.size === 0) this.onIdleChange(true)
    }
    return [i, spent]
  }

  /**
   * Hands the near cache the replies Rust marked as fills (`[call, slot,
   * gen, epoch, ttlMs, ...]`): a read's JSON, or `true` for a write whose
   * value may be kept.
   */
  keep(done, batch) {
    const { settle } = batch
    const fills = done[2]
    for (let k = 0; k + 4 < fills.length; k += 5) {
      const call = fills[k]
      const strs = settle[call * STRIDE + 3]
      if (strs === undefined) continue
      const reply = done[FIRST_REPLY + call - done[1]]
      const code = settle[call * STRIDE + 4]
      if (typeof reply === 'string') this.near.fill(code, strs, reply, fills[k + 1], fills[k + 2], fills[k + 3], fills[k + 4])
      else if (reply === true) this.near.written(code, strs, fills[k + 1], fills[k + 2], fills[k + 3], fills[k + 4], batch.submittedAt)
    }
  }

  get pending() {
    return this.inflight.size + (this.codes.length > 0 ? 1 : 0)
  }
}

module.exports = { Batcher, fromNative, FIRST_REPLY }
