'use strict'
// Tags in JavaScript: argument checks, and `invalidateTags`. The bookkeeping
// itself is in the core (src/tags.rs): a Redis set per tag, written in the
// same pipeline as the tagged value, and an index of this instance's entries
// for the memory tier.

const { describe } = require('./args.js')

const MAX_TAGS = 64

/** A tags argument → an array of non-empty strings (`undefined`/`null` → []). */
function checkTags(name, tags) {
  if (tags === undefined || tags === null) return []
  if (!Array.isArray(tags)) throw new TypeError(`${name} must be an array of strings, got ${describe(tags)}`)
  if (tags.length > MAX_TAGS) throw new RangeError(`${name} may hold at most ${MAX_TAGS} tags, got ${tags.length}`)
  tags.forEach((t, i) => {
    if (typeof t !== 'string') throw new TypeError(`${name}[${i}] must be a string, got ${describe(t)}`)
    if (t.length === 0) throw new RangeError(`${name}[${i}] must not be empty`)
  })
  return [...new Set(tags)]
}

class Tags {
  /** `native`: the NativeCache; `stats`: the read-through's counters. */
  constructor(native, stats, redisEnabled) {
    this.native = native
    this.stats = stats
    this.redisEnabled = redisEnabled
    // Invalidations that could not reach Redis (it was down): redone once the
    // adapter serves from Redis again, so other instances' entries go too.
    this.owed = new Map()
  }

  /** Removes (or, `soft`, marks stale) every entry carrying any of `tags`; resolves to how many. */
  async invalidate(tags, options) {
    const list = checkTags('tags', typeof tags === 'string' ? [tags] : tags)
    let soft = false
    if (options !== undefined && options !== null) {
      if (typeof options !== 'object') throw new TypeError(`options must be an object, got ${describe(options)}`)
      if (options.soft !== undefined && typeof options.soft !== 'boolean') throw new TypeError(`options.soft must be a boolean, got ${describe(options.soft)}`)
      soft = options.soft === true
    }
    if (list.length === 0) return 0
    const done = await this.native.invalidateTags(list, soft)
    this.stats.tagInvalidations += list.length
    this.stats.tagInvalidatedEntries += done.entries
    if (!done.reachedRedis && this.redisEnabled) {
      for (const t of list) this.owed.set(t, (this.owed.get(t) ?? true) && soft)
    }
    return done.entries
  }

  /** The adapter serves from Redis again: redo the invalidations it owes Redis. */
  modeChanged(mode) {
    if (mode !== 'redis' || this.owed.size === 0) return
    const owed = this.owed
    this.owed = new Map()
    const hard = [...owed].filter(([, soft]) => !soft).map(([t]) => t)
    const soft = [...owed].filter(([, s]) => s).map(([t]) => t)
    const redo = (list, s) =>
      list.length === 0
        ? null
        : this.native.invalidateTags(list, s).then(
            (done) => {
              if (!done.reachedRedis) for (const t of list) this.owed.set(t, s)
            },
            () => {},
          )
    redo(hard, false)
    redo(soft, true)
  }
}

module.exports = { checkTags, Tags }
