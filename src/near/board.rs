//! The board: memory shared with the near cache's table in JavaScript
//! (`lib/near.js`), so that a hit is served on Node's thread with no native
//! call at all. Measured on this 2-core VM: a hit through a native call cost
//! 2.1 µs of Node's thread (0.4 µs of it the bare N-API crossing), a hit read
//! from this board about 0.2 µs.
//!
//! Rust writes here everything that decides whether a held value is still
//! current; JavaScript only reads it (with `Atomics.load`, never cached by the
//! JIT) and writes its own counters:
//! - one generation per slot of key hashes: every invalidation of a key
//!   bumps its slot's generation, by one for a write Redis announces (a push
//!   on an invalidation link) and by [`LOCAL`] for this adapter's own write,
//!   so that a value this adapter wrote can be kept through exactly one
//!   announcement, its own write's echo (see `Near::mark_written`);
//! - an epoch, bumped whenever the whole cache must go (a link lost, the
//!   breaker open, `FLUSHALL`, a tenant clear);
//! - whether hits may be served at all, and until when (the links' lease), in
//!   the clock of JavaScript's `performance.now()`.
//!
//! A read takes a [`Snapshot`] of its key's slot and the epoch *before* it is
//! sent to Redis. JavaScript keeps the reply with that snapshot and serves it
//! only while both are unchanged: an invalidation that arrives after the read
//! was sent (the classic tracking race) bumps the slot and so retires the
//! value, whenever JavaScript gets to see it. Keys that share a slot retire
//! each other's values: a miss more, never a stale hit.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Number of generation slots (a power of two): 256 KB of board.
pub const SLOTS: usize = 1 << 16;

/// What this adapter's own write adds to its slot's generation. Redis's
/// announcements add one, so a generation that moved by exactly one since a
/// snapshot moved by one announcement and no write of ours (65,536 of our
/// writes to one slot within a kept value's life would be needed to fake it).
pub const LOCAL: u32 = 1 << 16;

/// The board as laid out in memory; JavaScript's views use [`layout`]. All
/// fields are atomics, so all-zero is a valid board.
#[repr(C, align(8))]
pub struct Board {
  /// Int32 cells: `ACTIVE` (1: hits may be served) and `EPOCH`.
  cells: [AtomicU32; 8],
  /// f64 (as bits): `performance.now()` before which a hit may be served.
  lease: AtomicU64,
  _reserved: [u64; 3],
  /// f64 (as bits), written by JavaScript only: hits, misses, entries, bytes.
  counts: [AtomicU64; 4],
  _reserved2: [u64; 4],
  gens: [AtomicU32; SLOTS],
}

const ACTIVE: usize = 0;
const EPOCH: usize = 1;

/// Where JavaScript finds each part (`protocol().near`).
pub fn layout() -> serde_json::Value {
  serde_json::json!({
    "activeCell": ACTIVE,
    "epochCell": EPOCH,
    "leaseOffset": std::mem::offset_of!(Board, lease),
    "countsOffset": std::mem::offset_of!(Board, counts),
    "gensOffset": std::mem::offset_of!(Board, gens),
    "slots": SLOTS,
    "bytes": std::mem::size_of::<Board>(),
  })
}

/// A read's view of its key before it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
  pub slot: u32,
  pub gen: u32,
  pub epoch: u32,
}

/// FNV-1a over the key's bytes: the same slot for the key a write names and
/// the key Redis's push names.
fn slot_of(key: &[u8]) -> usize {
  let mut h: u32 = 0x811c_9dc5;
  for &b in key {
    h = (h ^ b as u32).wrapping_mul(0x0100_0193);
  }
  h as usize & (SLOTS - 1)
}

impl Board {
  pub fn new() -> Arc<Board> {
    // SAFETY: every field is an atomic integer (or plain integers), for which all-zero bits are valid.
    unsafe { Arc::<Board>::new_zeroed().assume_init() }
  }

  pub fn snapshot(&self, key: &[u8]) -> Snapshot {
    let slot = slot_of(key);
    // Acquire pairs with the bumps' release; the order of the two loads does
    // not matter, since each only ever moves forward.
    Snapshot {
      slot: slot as u32,
      gen: self.gens[slot].load(Ordering::Acquire),
      epoch: self.cells[EPOCH].load(Ordering::Acquire),
    }
  }

  /// Redis announced a write of `key`: values read before now are retired.
  pub fn bump(&self, key: &[u8]) {
    self.gens[slot_of(key)].fetch_add(1, Ordering::AcqRel);
  }

  /// This adapter is writing `key`: values read before now are retired.
  pub fn bump_local(&self, key: &[u8]) {
    self.gens[slot_of(key)].fetch_add(LOCAL, Ordering::AcqRel);
  }

  /// Everything held is retired.
  pub fn bump_epoch(&self) {
    self.cells[EPOCH].fetch_add(1, Ordering::AcqRel);
  }

  /// Whether hits may be served, and until when (`performance.now()` ms).
  pub fn publish(&self, active: bool, lease_js_ms: f64) {
    self.lease.store(lease_js_ms.to_bits(), Ordering::Release);
    self.cells[ACTIVE].store(active as u32, Ordering::Release);
  }

  /// JavaScript's counters: hits, misses, entries, bytes.
  pub fn counts(&self) -> [u64; 4] {
    self.counts.each_ref().map(|c| {
      let v = f64::from_bits(c.load(Ordering::Relaxed));
      if v.is_finite() && v > 0.0 {
        v as u64
      } else {
        0
      }
    })
  }

  /// Whether a value read under `s` would still be served (what `lib/near.js` checks, for tests).
  #[cfg(test)]
  pub fn current(&self, s: Snapshot) -> bool {
    self.cells[ACTIVE].load(Ordering::Acquire) == 1 && self.snapshot_of_slot(s.slot as usize) == s
  }

  #[cfg(test)]
  fn snapshot_of_slot(&self, slot: usize) -> Snapshot {
    Snapshot {
      slot: slot as u32,
      gen: self.gens[slot].load(Ordering::Acquire),
      epoch: self.cells[EPOCH].load(Ordering::Acquire),
    }
  }

  #[cfg(test)]
  pub fn set_counts(&self, counts: [f64; 4]) {
    for (c, v) in self.counts.iter().zip(counts) {
      c.store(v.to_bits(), Ordering::Relaxed);
    }
  }

  #[cfg(test)]
  pub fn lease(&self) -> f64 {
    f64::from_bits(self.lease.load(Ordering::Acquire))
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn a_bump_or_an_epoch_retires_a_snapshot() {
    let b = Board::new();
    b.publish(true, f64::INFINITY);
    let s = b.snapshot(b"p:lead:1");
    assert!(b.current(s));
    b.bump(b"p:lead:2");
    assert_eq!(b.current(s), slot_of(b"p:lead:2") != s.slot as usize, "another key's bump retires only a shared slot");
    b.bump(b"p:lead:1");
    assert!(!b.current(s));
    let s = b.snapshot(b"p:lead:1");
    b.bump_local(b"p:lead:1");
    assert!(!b.current(s));
    assert_eq!(b.snapshot(b"p:lead:1").gen.wrapping_sub(s.gen), LOCAL, "our own write moves the slot by LOCAL");
    let s = b.snapshot(b"p:lead:1");
    b.bump_epoch();
    assert!(!b.current(s));
    let s = b.snapshot(b"p:lead:1");
    b.publish(false, f64::INFINITY);
    assert!(!b.current(s), "nothing is served while inactive");
  }

  #[test]
  fn the_layout_matches_the_struct() {
    let l = layout();
    assert_eq!(l["leaseOffset"], 32);
    assert_eq!(l["countsOffset"], 64);
    assert_eq!(l["gensOffset"], 128);
    assert_eq!(l["bytes"], 128 + 4 * SLOTS);
    let b = Board::new();
    b.set_counts([3.0, 2.0, f64::NAN, -1.0]);
    assert_eq!(b.counts(), [3, 2, 0, 0]);
  }
}
