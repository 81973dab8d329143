//! The outage journal: what this adapter acknowledged while Redis was
//! unavailable, the latest state per key, waiting for `replay` to write it back.
//!
//! Counters are journaled as summed deltas (replayed with `INCRBY`), other
//! writes as their latest value. The journal is bounded by entries and by
//! bytes; a write it must forget (full, or its value expired) leaves a small
//! tombstone, replayed as a write-time-checked delete, so that Redis's older
//! value cannot come back. When even the tombstones overflow, or too many
//! tenant clears are pending, one write-time-checked sweep of the whole
//! namespace replaces them (sound: a cache may always miss).
//!
//! Tags given with those writes are journaled too (the key and its tags' set
//! keys), and replayed before the values, so that an `invalidateTags` made
//! after the outage, by any instance, finds the key in Redis's tag sets.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::batch::Op;
use crate::tiers::memory::{MemValue, MemoryTier};

/// What the journal remembers for one key (or one field of a hash).
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
  /// Set to this JSON until `expires_at`.
  Set {
    json: Arc<str>,
    expires_at: Instant,
  },
  Delete,
  /// Increments summed since the key's last journaled write: replayed as
  /// `INCRBY delta`, keeping Redis's TTL (`ttl` only when it has none).
  Add {
    delta: i64,
    ttl: Duration,
  },
  /// A write the journal had to forget: replayed as a delete that spares a
  /// value written after it.
  Tombstone,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slot {
  pub key: String,
  /// `Some`: one field of the hash at `key`.
  pub field: Option<String>,
}

impl Slot {
  pub fn whole(key: &str) -> Self {
    Slot { key: key.to_string(), field: None }
  }

  pub fn field(key: &str, field: &str) -> Self {
    Slot { key: key.to_string(), field: Some(field.to_string()) }
  }

  fn bytes(&self) -> usize {
    self.key.len() + self.field.as_ref().map_or(0, |f| f.len())
  }
}

#[derive(Debug, Clone)]
pub struct Entry {
  pub slot: Slot,
  pub pending: Pending,
  /// Wall-clock time of the write (ms since the epoch).
  pub written_ms: u64,
  seq: u64,
  /// Taken by a replay that has not completed yet.
  in_flight: bool,
}

impl Entry {
  fn bytes(&self) -> usize {
    self.slot.bytes()
      + match &self.pending {
        Pending::Set { json, .. } => json.len(),
        _ => 0,
      }
  }

  fn is_tombstone(&self) -> bool {
    self.pending == Pending::Tombstone
  }
}

/// A tenant clear (or the namespace sweep) to replay: deletes the keys under
/// `scope` that were written no later than `written_ms`.
#[derive(Debug, Clone)]
pub struct Clear {
  pub scope: String,
  pub pattern: String,
  pub written_ms: u64,
  /// Where its `SCAN` resumes (0: from the start).
  pub cursor: u64,
}

/// The bounds of the journal.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
  /// Entries holding a value, delta or delete (`replayMaxEntries`).
  pub max_entries: usize,
  /// Their key, field and JSON bytes (`replayMaxBytes`); tombstones' key bytes are bounded by it too.
  pub max_bytes: usize,
}

/// A key written during the outage and the tag sets it must join.
#[derive(Debug, Clone)]
pub struct Tagged {
  pub key: String,
  pub tag_keys: Vec<String>,
  /// The latest expiry of the writes that carried the tags.
  pub expires_at: Instant,
}

impl Tagged {
  /// Adds tags (not twice) and keeps the later expiry.
  fn join(&mut self, tag_keys: impl IntoIterator<Item = String>, expires_at: Instant) {
    for tag in tag_keys {
      if !self.tag_keys.contains(&tag) {
        self.tag_keys.push(tag);
      }
    }
    self.expires_at = self.expires_at.max(expires_at);
  }
}

/// Tombstones kept at least (they are a key and a time each) even when `replayMaxEntries` is small.
const MIN_TOMBSTONES: usize = 10_000;
/// Tenant clears pending at most; past it they merge into one namespace sweep.
pub const MAX_CLEARS: usize = 256;

#[derive(Default)]
struct Inner {
  entries: HashMap<Slot, Entry>,
  /// Entries with a value, delta or delete, oldest first, not in flight;
  /// stale (slot, seq) pairs are skipped.
  order: VecDeque<(Slot, u64)>,
  /// Tombstones, oldest first, not in flight; stale pairs are skipped.
  tomb_order: VecDeque<(Slot, u64)>,
  /// Per hash key, how many of its fields are pending.
  pending_fields: HashMap<String, usize>,
  /// At most one per scope, at most `MAX_CLEARS` (+ the sweep).
  clears: Vec<Clear>,
  /// Tag memberships to replay, by entry key (at most `max_entries`).
  tagged: HashMap<String, Tagged>,
  live: usize,
  live_bytes: usize,
  tombstones: usize,
  tomb_bytes: usize,
  next_seq: u64,
}

/// Figures for the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
  /// Values, deltas, deletes and clears waiting.
  pub pending: usize,
  /// Forgotten writes whose keys still get a write-time-checked delete.
  pub tombstones: usize,
  pub bytes: usize,
}

pub struct Journal {
  inner: Mutex<Inner>,
  /// Entries (tombstones included) and clears; read without the lock.
  len: AtomicUsize,
  limits: Limits,
  /// The scope and `SCAN` pattern of the whole namespace, for the sweep.
  sweep: (String, String),
  /// Writes whose value or delta was forgotten (they became tombstones).
  pub dropped: AtomicU64,
}

impl Journal {
  pub fn new(limits: Limits, sweep_scope: &str, sweep_pattern: &str) -> Self {
    let limits = Limits { max_entries: limits.max_entries.max(1), max_bytes: limits.max_bytes.max(1) };
    Self {
      inner: Mutex::new(Inner::default()),
      len: AtomicUsize::new(0),
      limits,
      sweep: (sweep_scope.to_string(), sweep_pattern.to_string()),
      dropped: AtomicU64::new(0),
    }
  }

  /// Entries, tombstones and clears waiting (cheap: no lock).
  pub fn len(&self) -> usize {
    self.len.load(Ordering::Acquire)
  }

  pub fn is_empty(&self) -> bool {
    self.len() == 0
  }

  pub fn stats(&self) -> JournalStats {
    let inner = self.inner.lock().unwrap();
    JournalStats { pending: inner.live + inner.clears.len(), tombstones: inner.tombstones, bytes: inner.live_bytes }
  }

  /// Journals the write `op` made to the memory tier (already applied there)
  /// while Redis was unavailable. `at`: its wall-clock time in ms.
  pub fn record_write(&self, op: &Op, memory: &MemoryTier, at: u64) {
    let now = Instant::now();
    match op {
      Op::Set { key, json, ttl, .. } => {
        self.record(Slot::whole(key), Pending::Set { json: json.clone(), expires_at: now + *ttl }, at)
      }
      Op::Delete { key } => self.record(Slot::whole(key), Pending::Delete, at),
      Op::HSet { key, field, json, ttl, .. } => {
        self.record(Slot::field(key, field), Pending::Set { json: json.clone(), expires_at: now + *ttl }, at)
      }
      Op::HDel { key, field } => self.record(Slot::field(key, field), Pending::Delete, at),
      Op::Increment { key, by, ttl, .. } => {
        let entry = memory.get(key);
        let (count, expires_at) = match &entry {
          Some(e) => match &e.value {
            MemValue::Json(s) => (s.trim().parse::<i64>().unwrap_or(*by), e.expires_at),
            MemValue::Hash(_) => return,
          },
          None => (*by, now + *ttl),
        };
        self.record_increment(key, *by, *ttl, count, expires_at, at)
      }
      Op::Expire { key, .. } => {
        // A pending delta keeps counting on Redis's counter; its TTL stays Redis's.
        if matches!(self.lookup(key), Some(Pending::Add { .. })) {
          return;
        }
        let Some(entry) = memory.get(key) else { return };
        match entry.value {
          MemValue::Json(json) => {
            self.record(Slot::whole(key), Pending::Set { json, expires_at: entry.expires_at }, at)
          }
          MemValue::Hash(fields) => {
            for (field, json) in fields.iter() {
              self.record(
                Slot::field(key, field),
                Pending::Set { json: json.clone(), expires_at: entry.expires_at },
                at,
              );
            }
          }
        }
      }
      Op::Get { .. }
      | Op::Exists { .. }
      | Op::HGet { .. }
      | Op::HGetAll { .. }
      | Op::ClearOrg { .. }
      | Op::Tag { .. } => {}
    }
  }

  /// An increment of `by`; `count` and `expires_at` are the memory tier's after it.
  fn record_increment(&self, key: &str, by: i64, ttl: Duration, count: i64, expires_at: Instant, at: u64) {
    let now = Instant::now();
    let pending = {
      let inner = self.inner.lock().unwrap();
      match inner.entries.get(&Slot::whole(key)) {
        // Deltas sum; one a replay is writing back already is not summed again.
        Some(Entry { pending: Pending::Add { delta, .. }, in_flight: false, .. }) => {
          Pending::Add { delta: delta.saturating_add(by), ttl }
        }
        Some(Entry { pending: Pending::Add { .. }, in_flight: true, .. }) | None => Pending::Add { delta: by, ttl },
        // After a set, the journaled value counts on (it stays a set).
        Some(Entry { pending: Pending::Set { json, expires_at: until }, .. }) if *until > now => {
          let n = json.trim().parse::<i64>().map_or(count, |n| n.saturating_add(by));
          Pending::Set { json: n.to_string().into(), expires_at: *until }
        }
        // After a delete (or a forgotten write), memory's count is the value.
        Some(_) => Pending::Set { json: count.to_string().into(), expires_at },
      }
    };
    self.record(Slot::whole(key), pending, at);
  }

  pub fn record(&self, slot: Slot, pending: Pending, written_ms: u64) {
    let mut inner = self.inner.lock().unwrap();
    // A whole-key write supersedes every pending field of that key.
    if slot.field.is_none() && inner.pending_fields.contains_key(&slot.key) {
      let doomed: Vec<Slot> =
        inner.entries.keys().filter(|s| s.key == slot.key && s.field.is_some()).cloned().collect();
      for s in doomed {
        Self::remove_locked(&mut inner, &s);
      }
    }
    Self::remove_locked(&mut inner, &slot);
    inner.next_seq += 1;
    let entry = Entry { slot: slot.clone(), pending, written_ms, seq: inner.next_seq, in_flight: false };
    Self::insert_locked(&mut inner, entry);
    self.enforce_bounds(&mut inner);
    self.update_len(&inner);
  }

  /// Records a tenant clear to replay; pending writes under `scope` are void.
  pub fn record_clear(&self, scope: &str, pattern: &str, written_ms: u64) {
    self.void_scope(scope);
    let mut inner = self.inner.lock().unwrap();
    // One clear per scope: the later one deletes all the earlier one would.
    inner.clears.retain(|c| c.scope != scope);
    inner.clears.push(Clear { scope: scope.to_string(), pattern: pattern.to_string(), written_ms, cursor: 0 });
    if inner.clears.len() > MAX_CLEARS {
      let latest = inner.clears.iter().map(|c| c.written_ms).max().unwrap_or(written_ms);
      self.sweep_locked(&mut inner, latest);
    }
    self.update_len(&inner);
  }

  /// `key`, written during the outage, carries these tags (their sets'
  /// keys) for `ttl`. Past the bound, the key's write becomes a tombstone
  /// instead: deleted at the replay, it leaves nothing for an invalidation
  /// to miss.
  pub fn record_tags(&self, key: &str, tag_keys: &[String], ttl: Duration, written_ms: u64) {
    let mut inner = self.inner.lock().unwrap();
    if !inner.tagged.contains_key(key) && inner.tagged.len() >= self.limits.max_entries {
      self.tombstone_locked(&mut inner, Slot::whole(key), written_ms);
      self.enforce_bounds(&mut inner);
    } else {
      let expires_at = Instant::now() + ttl;
      let tagged = inner.tagged.entry(key.to_string()).or_insert_with(|| Tagged {
        key: key.to_string(),
        tag_keys: Vec::new(),
        expires_at,
      });
      tagged.join(tag_keys.iter().cloned(), expires_at);
    }
    self.update_len(&inner);
  }

  /// Every tag membership waiting, handed to the replay (`restore_tags` if it fails).
  pub fn take_tags(&self) -> Vec<Tagged> {
    let mut inner = self.inner.lock().unwrap();
    let tagged = inner.tagged.drain().map(|(_, t)| t).collect();
    self.update_len(&inner);
    tagged
  }

  /// Puts back memberships a failed replay did not write (merged with any recorded since).
  pub fn restore_tags(&self, tagged: Vec<Tagged>) {
    let mut inner = self.inner.lock().unwrap();
    for t in tagged {
      match inner.tagged.get_mut(&t.key) {
        Some(now) => now.join(t.tag_keys, t.expires_at),
        None => {
          inner.tagged.insert(t.key.clone(), t);
        }
      }
    }
    self.update_len(&inner);
  }

  /// Forgets pending writes and clears under `scope` (a tenant clear, done
  /// on Redis or journaled, made them void).
  pub fn void_scope(&self, scope: &str) {
    if self.is_empty() {
      return;
    }
    let mut inner = self.inner.lock().unwrap();
    let doomed: Vec<Slot> = inner.entries.keys().filter(|s| s.key.starts_with(scope)).cloned().collect();
    for slot in doomed {
      Self::remove_locked(&mut inner, &slot);
    }
    inner.clears.retain(|c| !c.scope.starts_with(scope));
    inner.tagged.retain(|key, _| !key.starts_with(scope));
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

  /// What a read of `key` answers while the journal decides it: `Some(value
  /// or None)`; `None` when the memory tier knows best (nothing journaled, a
  /// delta, or a forgotten write).
  pub fn read(&self, key: &str) -> Option<Option<Arc<str>>> {
    match self.lookup(key)? {
      Pending::Set { json, expires_at } => Some(Some(json).filter(|_| expires_at > Instant::now())),
      Pending::Delete => Some(None),
      Pending::Add { .. } | Pending::Tombstone => None,
    }
  }

  /// Is anything pending for this key, any field of it, or a clear over it?
  pub fn touches(&self, key: &str) -> bool {
    if self.is_empty() {
      return false;
    }
    let inner = self.inner.lock().unwrap();
    inner.pending_fields.contains_key(key)
      || inner.entries.contains_key(&Slot::whole(key))
      || inner.clears.iter().any(|c| key.starts_with(&c.scope))
  }

  /// The first clear waiting, if any (clears run before every entry).
  pub fn next_clear(&self) -> Option<Clear> {
    self.inner.lock().unwrap().clears.first().cloned()
  }

  /// Records where `clear`'s scan has got to; a cursor of 0 after a step
  /// that started elsewhere means it finished, and it is forgotten (unless
  /// a later clear of the scope replaced it meanwhile).
  pub fn advance_clear(&self, clear: &Clear, cursor: u64, finished: bool) {
    let mut inner = self.inner.lock().unwrap();
    let same = |c: &Clear| c.scope == clear.scope && c.written_ms == clear.written_ms;
    if finished {
      inner.clears.retain(|c| !same(c));
    } else if let Some(c) = inner.clears.iter_mut().find(|c| same(c)) {
      c.cursor = cursor;
    }
    self.update_len(&inner);
  }

  /// Up to `n` entries, oldest first, marked in flight until `complete` or
  /// `restore`. Each entry is visited once per replay: O(entries) overall.
  pub fn take_batch(&self, n: usize) -> Vec<Entry> {
    let mut inner = self.inner.lock().unwrap();
    let mut batch = Vec::with_capacity(n.min(inner.entries.len()));
    while batch.len() < n {
      let Some((slot, seq)) = inner.order.pop_front().or_else(|| inner.tomb_order.pop_front()) else {
        break;
      };
      if let Some(e) = inner.entries.get_mut(&slot).filter(|e| e.seq == seq && !e.in_flight) {
        e.in_flight = true;
        batch.push(e.clone());
      }
    }
    batch
  }

  /// The entry was written back (or refused for good): forget it, unless a
  /// newer write replaced it meanwhile.
  pub fn complete(&self, entry: &Entry) {
    let mut inner = self.inner.lock().unwrap();
    if inner.entries.get(&entry.slot).is_some_and(|e| e.seq == entry.seq) {
      Self::remove_locked(&mut inner, &entry.slot);
    }
    if inner.entries.is_empty() {
      inner.order.clear();
      inner.tomb_order.clear();
    }
    self.update_len(&inner);
  }

  /// Puts entries of a failed replay back at the front, oldest first. A
  /// delta replaced meanwhile by a newer delta is folded into it (the newer
  /// one started from zero).
  pub fn restore(&self, entries: &[Entry]) {
    let mut inner = self.inner.lock().unwrap();
    for entry in entries.iter().rev() {
      let Some(current) = inner.entries.get_mut(&entry.slot) else { continue };
      if current.seq != entry.seq {
        if let (Pending::Add { delta: mine, .. }, Pending::Add { delta, .. }) = (&entry.pending, &mut current.pending) {
          *delta = delta.saturating_add(*mine);
        }
        continue;
      }
      current.in_flight = false;
      let pair = (entry.slot.clone(), entry.seq);
      if entry.is_tombstone() {
        inner.tomb_order.push_front(pair);
      } else {
        inner.order.push_front(pair);
      }
    }
  }

  /// Writes not replayed: values, deltas and deletes, tombstones and clears.
  pub fn unreplayed(&self) -> usize {
    self.len()
  }

  fn insert_locked(inner: &mut Inner, entry: Entry) {
    let pair = (entry.slot.clone(), entry.seq);
    if entry.is_tombstone() {
      inner.tombstones += 1;
      inner.tomb_bytes += entry.bytes();
      inner.tomb_order.push_back(pair);
    } else {
      inner.live += 1;
      inner.live_bytes += entry.bytes();
      inner.order.push_back(pair);
    }
    if entry.slot.field.is_some() {
      *inner.pending_fields.entry(entry.slot.key.clone()).or_insert(0) += 1;
    }
    inner.entries.insert(entry.slot.clone(), entry);
  }

  fn remove_locked(inner: &mut Inner, slot: &Slot) -> Option<Entry> {
    let entry = inner.entries.remove(slot)?;
    if entry.is_tombstone() {
      inner.tombstones -= 1;
      inner.tomb_bytes -= entry.bytes();
    } else {
      inner.live -= 1;
      inner.live_bytes -= entry.bytes();
    }
    if slot.field.is_some() {
      if let Some(n) = inner.pending_fields.get_mut(&slot.key) {
        *n -= 1;
        if *n == 0 {
          inner.pending_fields.remove(&slot.key);
        }
      }
    }
    Some(entry)
  }

  /// Replaces `slot`'s pending write (if any) by a tombstone written at
  /// `written_ms`; a forgotten value or delta counts as dropped.
  fn tombstone_locked(&self, inner: &mut Inner, slot: Slot, written_ms: u64) {
    // A delete loses nothing by becoming a tombstone: it replays the same way.
    if Self::remove_locked(inner, &slot).is_some_and(|old| old.pending != Pending::Delete) {
      self.dropped.fetch_add(1, Ordering::Relaxed);
    }
    inner.next_seq += 1;
    let seq = inner.next_seq;
    Self::insert_locked(inner, Entry { slot, pending: Pending::Tombstone, written_ms, seq, in_flight: false });
  }

  /// Past a bound, the oldest entries become tombstones; past the
  /// tombstones' bound, the oldest tombstones become the namespace sweep.
  fn enforce_bounds(&self, inner: &mut Inner) {
    let Limits { max_entries, max_bytes } = self.limits;
    while inner.live > max_entries || inner.live_bytes > max_bytes {
      let Some((slot, seq)) = inner.order.pop_front() else { break };
      if !inner.entries.get(&slot).is_some_and(|e| e.seq == seq && !e.in_flight) {
        continue;
      }
      let written_ms = inner.entries[&slot].written_ms;
      self.tombstone_locked(inner, slot, written_ms);
    }
    let mut swept_at = None;
    while inner.tombstones > max_entries.max(MIN_TOMBSTONES) || inner.tomb_bytes > max_bytes {
      let Some((slot, seq)) = inner.tomb_order.pop_front() else { break };
      if !inner.entries.get(&slot).is_some_and(|e| e.seq == seq && !e.in_flight) {
        continue;
      }
      if let Some(old) = Self::remove_locked(inner, &slot) {
        swept_at = swept_at.max(Some(old.written_ms));
      }
    }
    if let Some(at) = swept_at {
      self.sweep_locked(inner, at);
    }
    // Keep the order queues from growing with stale pairs.
    if inner.order.len() + inner.tomb_order.len() > 2 * inner.entries.len() + 64 {
      let entries = &inner.entries;
      let live = |q: &VecDeque<(Slot, u64)>| -> VecDeque<(Slot, u64)> {
        q.iter().filter(|(s, n)| entries.get(s).is_some_and(|e| e.seq == *n && !e.in_flight)).cloned().collect()
      };
      let (order, tomb_order) = (live(&inner.order), live(&inner.tomb_order));
      inner.order = order;
      inner.tomb_order = tomb_order;
    }
  }

  /// Replaces the tenant clears with one sweep of the namespace that deletes
  /// every value written no later than `at` (or a later sweep time).
  fn sweep_locked(&self, inner: &mut Inner, at: u64) {
    let (scope, pattern) = &self.sweep;
    let at = inner.clears.iter().map(|c| c.written_ms).fold(at, u64::max);
    inner.clears.clear();
    inner.clears.push(Clear { scope: scope.clone(), pattern: pattern.clone(), written_ms: at, cursor: 0 });
  }

  fn update_len(&self, inner: &Inner) {
    self.len.store(inner.entries.len() + inner.clears.len() + inner.tagged.len(), Ordering::Release);
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn set(v: &str) -> Pending {
    static AT: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    Pending::Set { json: v.into(), expires_at: *AT.get_or_init(|| Instant::now() + Duration::from_secs(600)) }
  }

  fn key(k: &str) -> Slot {
    Slot::whole(k)
  }

  fn journal(max_entries: usize, max_bytes: usize) -> Journal {
    Journal::new(Limits { max_entries, max_bytes }, "p:", "p:*")
  }

  fn incr(j: &Journal, memory: &MemoryTier, k: &str, by: i64) -> i64 {
    let n = memory.increment(k, by, Duration::from_secs(60), 0).unwrap();
    j.record_write(&Op::Increment { key: k.into(), kind: 0, by, ttl: Duration::from_secs(60) }, memory, 1);
    n
  }

  #[test]
  fn keeps_the_latest_write_per_key() {
    let j = journal(10, 1 << 20);
    j.record(key("a"), set("1"), 1);
    j.record(key("a"), set("2"), 2);
    j.record(key("b"), Pending::Delete, 3);
    assert_eq!(j.len(), 2);
    assert_eq!(j.lookup("a"), Some(set("2")));
    let batch = j.take_batch(10);
    assert_eq!(batch.len(), 2);
    for e in &batch {
      j.complete(e);
    }
    assert!(j.is_empty());
  }

  #[test]
  fn a_write_during_replay_is_not_forgotten() {
    let j = journal(10, 1 << 20);
    j.record(key("a"), set("1"), 1);
    let batch = j.take_batch(10);
    j.record(key("a"), set("2"), 2);
    j.complete(&batch[0]);
    assert_eq!(j.lookup("a"), Some(set("2")));
  }

  #[test]
  fn past_its_bound_the_oldest_becomes_a_counted_tombstone() {
    let j = journal(3, 1 << 20);
    for i in 0..5 {
      j.record(key(&format!("k{i}")), set("1"), i);
    }
    assert_eq!(j.stats(), JournalStats { pending: 3, tombstones: 2, bytes: 3 * 3 });
    assert_eq!(j.dropped.load(Ordering::Relaxed), 2);
    assert_eq!(j.lookup("k0"), Some(Pending::Tombstone));
    assert_eq!(j.read("k0"), None, "a forgotten write reads from memory");
    assert!(j.touches("k0"), "its key waits for the tombstone's replay");
    let batch = j.take_batch(10);
    assert_eq!(
      batch.iter().filter(|e| e.pending == Pending::Tombstone).map(|e| e.written_ms).collect::<Vec<_>>(),
      [0, 1]
    );
  }

  #[test]
  fn the_byte_bound_counts_json_and_keys() {
    let j = journal(100, 100);
    let big: String = "x".repeat(40);
    for i in 0..5 {
      j.record(key(&format!("k{i}")), set(&big), i);
    }
    let s = j.stats();
    assert!(s.bytes <= 100, "{s:?}");
    assert_eq!((s.pending, s.tombstones), (2, 3));
    assert_eq!(j.lookup("k4"), Some(set(&big)));
  }

  #[test]
  fn overflowing_tombstones_become_one_sweep_of_the_namespace() {
    // 10 bytes: one key of 2 bytes as a live entry, tombstones' keys beyond 10 bytes overflow.
    let j = journal(1, 10);
    for i in 0..20 {
      j.record(key(&format!("k{i:02}")), Pending::Delete, 100 + i);
    }
    let s = j.stats();
    assert!(s.tombstones <= 3, "{s:?}");
    let sweep = j.next_clear().expect("a sweep is pending");
    assert_eq!((sweep.scope.as_str(), sweep.pattern.as_str()), ("p:", "p:*"));
    assert!(sweep.written_ms >= 100 + 15, "the sweep covers the newest forgotten write ({})", sweep.written_ms);
    assert!(j.touches("p:anything"), "keys under a pending sweep wait for it");
  }

  #[test]
  fn increments_journal_a_summed_delta_a_set_supersedes_it_and_counts_on() {
    let memory = MemoryTier::new(1000, 1 << 20);
    let j = journal(10, 1 << 20);
    assert_eq!(incr(&j, &memory, "c", 2), 2);
    incr(&j, &memory, "c", 3);
    assert!(matches!(j.lookup("c"), Some(Pending::Add { delta: 5, .. })));
    assert_eq!(j.read("c"), None, "memory answers a counter's reads");

    memory.set("c", "10".into(), Duration::from_secs(60), 0);
    j.record(key("c"), set("10"), 2);
    incr(&j, &memory, "c", 4);
    assert!(matches!(j.lookup("c"), Some(Pending::Set { ref json, .. }) if &**json == "14"));

    // A delete then an increment: the count starts again from 0, as an absolute value.
    memory.delete("d");
    j.record(key("d"), Pending::Delete, 3);
    incr(&j, &memory, "d", 7);
    assert!(matches!(j.lookup("d"), Some(Pending::Set { ref json, .. }) if &**json == "7"));
  }

  #[test]
  fn a_delta_in_flight_is_not_summed_twice_and_a_failed_one_folds_back() {
    let memory = MemoryTier::new(1000, 1 << 20);
    let j = journal(10, 1 << 20);
    incr(&j, &memory, "c", 5);
    let batch = j.take_batch(10);
    incr(&j, &memory, "c", 1);
    assert!(matches!(j.lookup("c"), Some(Pending::Add { delta: 1, .. })), "the new delta starts from zero");
    j.restore(&batch);
    assert!(matches!(j.lookup("c"), Some(Pending::Add { delta: 6, .. })), "the failed replay's delta is not lost");
  }

  #[test]
  fn a_failed_batch_is_taken_again_and_each_entry_is_visited_once() {
    let j = journal(100_000, usize::MAX);
    for i in 0..50_000 {
      j.record(key(&format!("k{}", i % 1000)), set("1"), i);
    }
    let first = j.take_batch(256);
    assert_eq!(first.len(), 256);
    j.restore(&first);
    let mut seen = 0;
    for _ in 0..100 {
      let batch = j.take_batch(256);
      if batch.is_empty() {
        break;
      }
      seen += batch.len();
      batch.iter().for_each(|e| j.complete(e));
    }
    assert_eq!(seen, 1000);
    assert!(j.is_empty());
    assert!(j.inner.lock().unwrap().order.is_empty());
  }

  #[test]
  fn a_clear_voids_the_writes_before_it_in_its_scope_and_clears_are_bounded() {
    let j = journal(10, 1 << 20);
    j.record(key("p:org:{a}:x"), set("1"), 1);
    j.record(Slot::field("p:org:{a}:h", "f"), set("1"), 1);
    j.record(key("p:org:{b}:x"), set("1"), 1);
    j.record_clear("p:org:{a}:", "p:org:{a}:*", 2);
    assert!(j.touches("p:org:{a}:x"), "a key under a pending clear waits for it");
    assert!(j.lookup("p:org:{a}:x").is_none());
    assert!(j.touches("p:org:{b}:x"));
    assert_eq!(j.stats().pending, 2);
    j.record_clear("p:org:{a}:", "p:org:{a}:*", 3);
    assert_eq!(j.stats().pending, 2, "one clear per scope");
    // a's clear and MAX_CLEARS more: one too many.
    for i in 0..MAX_CLEARS {
      j.record_clear(&format!("p:org:{{t{i}}}:"), "x", 10 + i as u64);
    }
    let sweep = j.next_clear().unwrap();
    assert_eq!(j.stats().pending, 2, "the clears merged into one sweep (+ b's write)");
    assert_eq!((sweep.scope.as_str(), sweep.written_ms), ("p:", 10 + MAX_CLEARS as u64 - 1));
  }

  #[test]
  fn tags_are_journaled_merged_bounded_and_voided_by_a_clear() {
    let j = journal(2, 1 << 20);
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    j.record_tags("p:a", &tags(&["t1"]), Duration::from_secs(60), 1);
    j.record_tags("p:a", &tags(&["t1", "t2"]), Duration::from_secs(120), 2);
    j.record_tags("p:b", &tags(&["t1"]), Duration::from_secs(60), 3);
    assert_eq!(j.len(), 2);
    // Past the bound, the key is deleted at the replay instead.
    j.record(key("p:c"), set("c"), 4);
    j.record_tags("p:c", &tags(&["t1"]), Duration::from_secs(60), 4);
    assert_eq!(j.lookup("p:c"), Some(Pending::Tombstone));
    let mut taken = j.take_tags();
    taken.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(
      taken.iter().map(|t| (t.key.as_str(), t.tag_keys.clone())).collect::<Vec<_>>(),
      vec![("p:a", tags(&["t1", "t2"])), ("p:b", tags(&["t1"]))]
    );
    j.restore_tags(taken);
    j.void_scope("p:a");
    assert_eq!(j.take_tags().len(), 1, "a tenant clear voids the memberships under it");
  }
}
