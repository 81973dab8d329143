//! The replay journal: writes acknowledged while Redis was unavailable, the
//! latest per key, waiting to be written back when Redis returns.
//!
//! Bounded: past `max` entries the oldest is dropped (and counted). Replay is
//! last-writer-wins on the write time in the value header (see `codec`), so a
//! value another instance wrote to Redis after ours is never overwritten.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the journal remembers for one key (or one field of a hash).
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
  /// Set to this JSON until `expires_at`.
  Set {
    json: Arc<str>,
    expires_at: Instant,
  },
  Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slot {
  pub key: String,
  /// `Some`: one field of the hash at `key`.
  pub field: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Entry {
  pub slot: Slot,
  pub pending: Pending,
  /// Wall-clock time of the write (ms since the epoch).
  pub written_ms: u64,
  seq: u64,
}

impl Slot {
  pub fn whole(key: &str) -> Self {
    Slot { key: key.to_string(), field: None }
  }

  pub fn field(key: &str, field: &str) -> Self {
    Slot { key: key.to_string(), field: Some(field.to_string()) }
  }
}

/// A tenant clear done while Redis was unavailable.
#[derive(Debug, Clone)]
pub struct Clear {
  pub pattern: String,
  pub route_key: String,
  pub written_ms: u64,
}

#[derive(Default)]
struct Inner {
  entries: HashMap<Slot, Entry>,
  /// Insertion order for dropping the oldest; stale (slot, seq) pairs are skipped.
  order: VecDeque<(Slot, u64)>,
  /// Per hash key, how many of its fields are pending.
  pending_fields: HashMap<String, usize>,
  clears: Vec<Clear>,
  next_seq: u64,
}

pub struct Journal {
  inner: Mutex<Inner>,
  len: AtomicUsize,
  max: usize,
  pub dropped: AtomicU64,
}

impl Journal {
  pub fn new(max: usize) -> Self {
    Self { inner: Mutex::new(Inner::default()), len: AtomicUsize::new(0), max: max.max(1), dropped: AtomicU64::new(0) }
  }

  /// Entries and clears waiting (cheap: no lock).
  pub fn len(&self) -> usize {
    self.len.load(Ordering::Acquire)
  }

  pub fn is_empty(&self) -> bool {
    self.len() == 0
  }

  pub fn record(&self, slot: Slot, pending: Pending, written_ms: u64) {
    let mut inner = self.inner.lock().unwrap();
    // A whole-key write supersedes every pending field of that key.
    if slot.field.is_none() && inner.pending_fields.contains_key(&slot.key) {
      let key = slot.key.clone();
      inner.entries.retain(|s, _| s.key != key || s.field.is_none());
      inner.pending_fields.remove(&key);
    }
    inner.next_seq += 1;
    let seq = inner.next_seq;
    let is_field = slot.field.is_some();
    let previous = inner.entries.insert(slot.clone(), Entry { slot: slot.clone(), pending, written_ms, seq });
    if previous.is_none() && is_field {
      *inner.pending_fields.entry(slot.key.clone()).or_insert(0) += 1;
    }
    inner.order.push_back((slot, seq));
    while inner.entries.len() > self.max {
      let Some((oldest, seq)) = inner.order.pop_front() else {
        break;
      };
      if inner.entries.get(&oldest).is_some_and(|e| e.seq == seq) {
        Self::remove_locked(&mut inner, &oldest);
        self.dropped.fetch_add(1, Ordering::Relaxed);
      }
    }
    // Keep the order queue from growing with stale pairs.
    if inner.order.len() > 2 * self.max + 64 {
      let live: VecDeque<_> = {
        let entries = &inner.entries;
        inner.order.iter().filter(|(s, q)| entries.get(s).is_some_and(|e| e.seq == *q)).cloned().collect()
      };
      inner.order = live;
    }
    self.update_len(&inner);
  }

  /// Records a tenant clear to replay; pending writes under `scope` are void.
  pub fn record_clear(&self, scope: &str, clear: Clear) {
    self.void_scope(scope);
    let mut inner = self.inner.lock().unwrap();
    inner.clears.push(clear);
    self.update_len(&inner);
  }

  /// Forgets pending writes under `scope` (a tenant clear made them void).
  pub fn void_scope(&self, scope: &str) {
    if self.is_empty() {
      return;
    }
    let mut inner = self.inner.lock().unwrap();
    let doomed: Vec<Slot> = inner.entries.keys().filter(|s| s.key.starts_with(scope)).cloned().collect();
    for slot in doomed {
      Self::remove_locked(&mut inner, &slot);
    }
    self.update_len(&inner);
  }

  /// The pending state of a key (whole-key entries only).
  pub fn lookup(&self, key: &str) -> Option<Pending> {
    if self.is_empty() {
      return None;
    }
    let inner = self.inner.lock().unwrap();
    inner.entries.get(&Slot::whole(key)).map(|e| e.pending.clone())
  }

  /// Is anything pending for this key or any field of it?
  pub fn touches(&self, key: &str) -> bool {
    if self.is_empty() {
      return false;
    }
    let inner = self.inner.lock().unwrap();
    inner.pending_fields.contains_key(key) || inner.entries.contains_key(&Slot::whole(key))
  }

  /// Clears first (they must run before the writes that followed them), then
  /// up to `n` entries, oldest first.
  pub fn take_batch(&self, n: usize) -> (Vec<Clear>, Vec<Entry>) {
    let mut inner = self.inner.lock().unwrap();
    let clears = std::mem::take(&mut inner.clears);
    let mut batch = Vec::with_capacity(n.min(inner.entries.len()));
    for (slot, seq) in inner.order.iter() {
      if batch.len() >= n {
        break;
      }
      if let Some(e) = inner.entries.get(slot).filter(|e| e.seq == *seq) {
        batch.push(e.clone());
      }
    }
    self.update_len(&inner);
    (clears, batch)
  }

  /// Puts clears back at the front after a failed replay.
  pub fn restore_clears(&self, mut clears: Vec<Clear>) {
    let mut inner = self.inner.lock().unwrap();
    clears.append(&mut inner.clears);
    inner.clears = clears;
    self.update_len(&inner);
  }

  /// The entry was written back: forget it, unless a newer write replaced it meanwhile.
  pub fn complete(&self, entry: &Entry) {
    let mut inner = self.inner.lock().unwrap();
    if inner.entries.get(&entry.slot).is_some_and(|e| e.seq == entry.seq) {
      Self::remove_locked(&mut inner, &entry.slot);
    }
    if inner.entries.is_empty() {
      inner.order.clear();
    }
    self.update_len(&inner);
  }

  fn remove_locked(inner: &mut Inner, slot: &Slot) {
    if inner.entries.remove(slot).is_some() && slot.field.is_some() {
      if let Some(n) = inner.pending_fields.get_mut(&slot.key) {
        *n -= 1;
        if *n == 0 {
          inner.pending_fields.remove(&slot.key);
        }
      }
    }
  }

  fn update_len(&self, inner: &Inner) {
    self.len.store(inner.entries.len() + inner.clears.len(), Ordering::Release);
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn set(v: &str) -> Pending {
    static AT: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    Pending::Set { json: v.into(), expires_at: *AT.get_or_init(Instant::now) }
  }

  fn key(k: &str) -> Slot {
    Slot::whole(k)
  }

  #[test]
  fn keeps_the_latest_write_per_key() {
    let j = Journal::new(10);
    j.record(key("a"), set("1"), 1);
    j.record(key("a"), set("2"), 2);
    j.record(key("b"), Pending::Delete, 3);
    assert_eq!(j.len(), 2);
    assert_eq!(j.lookup("a"), Some(set("2")));
    let (_, batch) = j.take_batch(10);
    assert_eq!(batch.len(), 2);
    for e in &batch {
      j.complete(e);
    }
    assert!(j.is_empty());
  }

  #[test]
  fn a_write_during_replay_is_not_forgotten() {
    let j = Journal::new(10);
    j.record(key("a"), set("1"), 1);
    let (_, batch) = j.take_batch(10);
    j.record(key("a"), set("2"), 2);
    j.complete(&batch[0]);
    assert_eq!(j.lookup("a"), Some(set("2")));
  }

  #[test]
  fn drops_the_oldest_past_its_bound_and_counts_it() {
    let j = Journal::new(3);
    for i in 0..5 {
      j.record(key(&format!("k{i}")), set("1"), i);
    }
    assert_eq!(j.len(), 3);
    assert_eq!(j.dropped.load(Ordering::Relaxed), 2);
    assert!(j.lookup("k0").is_none());
    assert!(j.lookup("k4").is_some());
  }

  #[test]
  fn a_clear_voids_the_writes_before_it_in_its_scope() {
    let j = Journal::new(10);
    j.record(key("p:org:{a}:x"), set("1"), 1);
    j.record(Slot::field("p:org:{a}:h", "f"), set("1"), 1);
    j.record(key("p:org:{b}:x"), set("1"), 1);
    j.record_clear(
      "p:org:{a}:",
      Clear { pattern: "p:org:{a}:*".into(), route_key: "p:org:{a}:".into(), written_ms: 2 },
    );
    assert!(!j.touches("p:org:{a}:x"));
    assert!(!j.touches("p:org:{a}:h"));
    assert!(j.touches("p:org:{b}:x"));
    let (clears, batch) = j.take_batch(10);
    assert_eq!((clears.len(), batch.len()), (1, 1));
  }
}
