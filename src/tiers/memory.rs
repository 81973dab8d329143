//! The memory tier: a bounded store with a TTL per entry, on moka.
//!
//! It mirrors the Redis commands the adapter uses (strings, counters, hashes),
//! so every method works the same with or without Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::sync::Cache;
use moka::Expiry;

use crate::error::{CacheError, ErrorKind};

#[derive(Clone, Debug)]
pub enum MemValue {
  /// JSON text (counters are JSON integers).
  Json(Arc<str>),
  /// A hash: field → JSON text.
  Hash(Arc<HashMap<String, Arc<str>>>),
}

#[derive(Clone, Debug)]
pub struct MemEntry {
  pub value: MemValue,
  pub expires_at: Instant,
  /// Which kind of entry (a `domain::Kind` number) for the per-map statistics.
  pub kind: u8,
}

impl MemEntry {
  fn weight(&self, key: &str) -> u64 {
    // Key, value, and about 96 bytes of moka and allocation overhead.
    let value = match &self.value {
      MemValue::Json(s) => s.len(),
      MemValue::Hash(h) => h.iter().map(|(f, v)| f.len() + v.len() + 48).sum(),
    };
    (key.len() + value + 96) as u64
  }

  fn live(&self, now: Instant) -> bool {
    self.expires_at > now
  }
}

struct PerEntryTtl;

impl Expiry<String, MemEntry> for PerEntryTtl {
  fn expire_after_create(&self, _: &String, v: &MemEntry, now: Instant) -> Option<Duration> {
    Some(v.expires_at.saturating_duration_since(now))
  }

  fn expire_after_update(&self, _: &String, v: &MemEntry, now: Instant, _: Option<Duration>) -> Option<Duration> {
    Some(v.expires_at.saturating_duration_since(now))
  }
}

/// Entries held per kind number, kept as entries come and go (moka tells of
/// every removal, replacement, expiry and eviction), so that statistics never
/// walk the whole tier: a walk of 100 000 entries took 60-69 ms of Node's
/// thread on every health probe.
type KindCounts = Arc<[AtomicI64; 256]>;

pub struct MemoryTier {
  cache: Cache<String, MemEntry>,
  max_bytes: u64,
  kinds: KindCounts,
}

impl MemoryTier {
  /// Bounded by both `max_entries` and `max_bytes`: every entry weighs at
  /// least `max_bytes / max_entries`, so the byte bound also bounds the count.
  pub fn new(max_entries: u64, max_bytes: u64) -> Self {
    let floor = (max_bytes / max_entries.max(1)).max(1);
    let kinds: KindCounts = Arc::new(std::array::from_fn(|_| AtomicI64::new(0)));
    let gone = kinds.clone();
    let cache = Cache::builder()
      // LRU, not moka's default TinyLFU: an admission filter would turn away a
      // new entry in favour of an old one, and a write just acknowledged
      // must read back.
      .eviction_policy(moka::policy::EvictionPolicy::lru())
      .max_capacity(max_bytes)
      .weigher(move |k: &String, v: &MemEntry| v.weight(k).max(floor).min(u32::MAX as u64) as u32)
      .expire_after(PerEntryTtl)
      .eviction_listener(move |_, v: MemEntry, _| {
        gone[v.kind as usize].fetch_sub(1, Ordering::Relaxed);
      })
      .build();
    Self { cache, max_bytes, kinds }
  }

  /// Counts an entry about to be stored (its predecessor, if any, is
  /// uncounted by the eviction listener as "replaced").
  fn counted(&self, entry: MemEntry) -> MemEntry {
    self.kinds[entry.kind as usize].fetch_add(1, Ordering::Relaxed);
    entry
  }

  pub fn get(&self, key: &str) -> Option<MemEntry> {
    self.cache.get(key).filter(|e| e.live(Instant::now()))
  }

  pub fn get_json(&self, key: &str) -> Result<Option<Arc<str>>, CacheError> {
    match self.get(key).map(|e| e.value) {
      None => Ok(None),
      Some(MemValue::Json(s)) => Ok(Some(s)),
      Some(MemValue::Hash(_)) => Err(wrong_type()),
    }
  }

  pub fn set(&self, key: &str, json: Arc<str>, ttl: Duration, kind: u8) {
    let entry = MemEntry { value: MemValue::Json(json), expires_at: Instant::now() + ttl, kind };
    self.cache.insert(key.to_string(), self.counted(entry));
  }

  pub fn put(&self, key: &str, entry: MemEntry) {
    if entry.live(Instant::now()) {
      self.cache.insert(key.to_string(), self.counted(entry));
    }
  }

  pub fn delete(&self, key: &str) -> bool {
    self.cache.remove(key).is_some_and(|e| e.live(Instant::now()))
  }

  pub fn exists(&self, key: &str) -> bool {
    self.get(key).is_some()
  }

  pub fn expire(&self, key: &str, ttl: Duration) -> bool {
    let result = self.cache.entry(key.to_string()).and_compute_with(|current| match current {
      Some(e) if e.value().live(Instant::now()) => {
        let mut entry = e.into_value();
        entry.expires_at = Instant::now() + ttl;
        Op::Put(self.counted(entry))
      }
      _ => Op::Nop,
    });
    matches!(result, moka::ops::compute::CompResult::ReplacedWith(_))
  }

  /// Adds `by` to an integer (a missing key counts as 0; a new key gets `ttl`).
  pub fn increment(&self, key: &str, by: i64, ttl: Duration, kind: u8) -> Result<i64, CacheError> {
    let mut outcome = Ok(0);
    self.cache.entry(key.to_string()).and_compute_with(|current| {
      let now = Instant::now();
      let (base, expires_at) = match current.map(|e| e.into_value()).filter(|e| e.live(now)) {
        None => (0, now + ttl),
        Some(MemEntry { value: MemValue::Json(s), expires_at, .. }) => match s.trim().parse::<i64>() {
          Ok(n) => (n, expires_at),
          Err(_) => {
            outcome = Err(not_integer());
            return Op::Nop;
          }
        },
        Some(_) => {
          outcome = Err(wrong_type());
          return Op::Nop;
        }
      };
      match base.checked_add(by) {
        Some(n) => {
          outcome = Ok(n);
          Op::Put(self.counted(MemEntry { value: MemValue::Json(n.to_string().into()), expires_at, kind }))
        }
        None => {
          outcome = Err(CacheError::new(ErrorKind::Command, "increment or decrement would overflow"));
          Op::Nop
        }
      }
    });
    outcome
  }

  pub fn hget(&self, key: &str, field: &str) -> Result<Option<Arc<str>>, CacheError> {
    match self.get(key).map(|e| e.value) {
      None => Ok(None),
      Some(MemValue::Hash(h)) => Ok(h.get(field).cloned()),
      Some(MemValue::Json(_)) => Err(wrong_type()),
    }
  }

  pub fn hgetall(&self, key: &str) -> Result<Vec<(String, Arc<str>)>, CacheError> {
    match self.get(key).map(|e| e.value) {
      None => Ok(Vec::new()),
      Some(MemValue::Hash(h)) => Ok(h.iter().map(|(f, v)| (f.clone(), v.clone())).collect()),
      Some(MemValue::Json(_)) => Err(wrong_type()),
    }
  }

  /// Sets a field and (like the Redis path) refreshes the whole hash's TTL.
  pub fn hset(&self, key: &str, field: &str, json: Arc<str>, ttl: Duration, kind: u8) -> Result<(), CacheError> {
    self
      .modify_hash(
        key,
        |h| {
          h.insert(field.to_string(), json);
          Some(ttl)
        },
        kind,
      )
      .map(|_| ())
  }

  pub fn hdel(&self, key: &str, field: &str) -> Result<bool, CacheError> {
    let mut removed = false;
    self.modify_hash(
      key,
      |h| {
        removed = h.remove(field).is_some();
        None
      },
      0,
    )?;
    Ok(removed)
  }

  /// Applies `f` to a copy of the hash (empty if missing); `f` returns a new TTL
  /// or `None` to keep the old expiry. An emptied hash is removed, as in Redis.
  fn modify_hash(
    &self,
    key: &str,
    f: impl FnOnce(&mut HashMap<String, Arc<str>>) -> Option<Duration>,
    kind: u8,
  ) -> Result<(), CacheError> {
    let mut outcome = Ok(());
    self.cache.entry(key.to_string()).and_compute_with(|current| {
      let now = Instant::now();
      let (mut hash, expires_at, kind) = match current.map(|e| e.into_value()).filter(|e| e.live(now)) {
        None => (HashMap::new(), now, kind),
        Some(MemEntry { value: MemValue::Hash(h), expires_at, kind }) => (Arc::unwrap_or_clone(h), expires_at, kind),
        Some(_) => {
          outcome = Err(wrong_type());
          return Op::Nop;
        }
      };
      let expires_at = f(&mut hash).map_or(expires_at, |ttl| now + ttl);
      if hash.is_empty() {
        Op::Remove
      } else {
        Op::Put(self.counted(MemEntry { value: MemValue::Hash(Arc::new(hash)), expires_at, kind }))
      }
    });
    outcome
  }

  /// Removes every entry whose key starts with `prefix`; returns how many live ones.
  pub fn clear_prefix(&self, prefix: &str) -> u64 {
    let now = Instant::now();
    let doomed: Vec<(Arc<String>, bool)> =
      self.cache.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k, v.live(now))).collect();
    let mut live = 0;
    for (k, is_live) in doomed {
      self.cache.invalidate(k.as_str());
      live += is_live as u64;
    }
    live
  }

  /// Entries per kind number, without walking the tier. Entries that expired
  /// are counted until moka sweeps them (its timer wheel's first level is
  /// about a second wide).
  pub fn count_by_kind(&self) -> HashMap<u8, u64> {
    self
      .kinds
      .iter()
      .enumerate()
      .filter_map(|(kind, n)| Some((kind as u8, n.load(Ordering::Relaxed))).filter(|(_, n)| *n > 0))
      .map(|(kind, n)| (kind, n as u64))
      .collect()
  }

  /// (entries, weighted bytes), after pending evictions have run.
  pub fn usage(&self) -> (u64, u64) {
    self.cache.run_pending_tasks();
    (self.cache.entry_count(), self.cache.weighted_size())
  }

  pub fn max_bytes(&self) -> u64 {
    self.max_bytes
  }
}

fn wrong_type() -> CacheError {
  CacheError::new(ErrorKind::Command, "WRONGTYPE Operation against a key holding the wrong kind of value")
}

fn not_integer() -> CacheError {
  CacheError::new(ErrorKind::Command, "ERR value is not an integer or out of range")
}

#[cfg(test)]
mod tests {
  use super::*;

  const HOUR: Duration = Duration::from_secs(3600);

  #[test]
  fn values_expire_with_their_own_ttl() {
    let m = MemoryTier::new(1000, 1 << 20);
    m.set("short", "1".into(), Duration::from_millis(30), 0);
    m.set("long", "2".into(), HOUR, 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(m.get_json("short").unwrap(), None);
    assert_eq!(m.get_json("long").unwrap().as_deref(), Some("2"));
  }

  #[test]
  fn counters_and_hashes_behave_like_redis() {
    let m = MemoryTier::new(1000, 1 << 20);
    assert_eq!(m.increment("c", 5, HOUR, 0).unwrap(), 5);
    assert_eq!(m.increment("c", -7, HOUR, 0).unwrap(), -2);
    m.set("s", "\"x\"".into(), HOUR, 0);
    assert_eq!(m.increment("s", 1, HOUR, 0).unwrap_err().kind, ErrorKind::Command);
    m.hset("h", "a", "1".into(), HOUR, 0).unwrap();
    m.hset("h", "b", "2".into(), HOUR, 0).unwrap();
    assert_eq!(m.hget("h", "a").unwrap().as_deref(), Some("1"));
    assert_eq!(m.hgetall("h").unwrap().len(), 2);
    assert!(m.hdel("h", "a").unwrap());
    assert!(!m.hdel("h", "a").unwrap());
    assert!(m.hdel("h", "b").unwrap());
    assert!(!m.exists("h"), "an emptied hash is gone");
    assert!(m.hget("s", "a").is_err());
    assert!(m.expire("s", Duration::from_millis(1)));
    assert!(!m.expire("missing", HOUR));
  }

  #[test]
  fn counts_by_kind_follow_every_change_without_a_walk() {
    let m = MemoryTier::new(100, 1 << 20);
    let walk = |m: &MemoryTier| {
      m.cache.run_pending_tasks();
      let mut counts = HashMap::new();
      for (_, v) in m.cache.iter() {
        *counts.entry(v.kind).or_insert(0u64) += 1;
      }
      counts
    };
    m.set("a", "1".into(), HOUR, 1);
    m.set("a", "2".into(), HOUR, 2); // replaced, with another kind
    m.set("b", "1".into(), HOUR, 1);
    m.increment("c", 1, HOUR, 3).unwrap();
    m.increment("c", 1, HOUR, 3).unwrap();
    m.hset("h", "f", "1".into(), HOUR, 4).unwrap();
    m.hset("h", "g", "1".into(), HOUR, 4).unwrap();
    m.expire("b", HOUR);
    m.delete("missing");
    assert!(m.hdel("h", "f").unwrap());
    std::thread::sleep(Duration::from_millis(5));
    m.cache.run_pending_tasks();
    assert_eq!(m.count_by_kind(), walk(&m));
    assert!(m.hdel("h", "g").unwrap()); // the emptied hash goes
    assert!(m.delete("a"));
    m.clear_prefix("b");
    m.cache.run_pending_tasks();
    assert_eq!(m.count_by_kind(), walk(&m));
    for i in 0..500 {
      m.set(&format!("k{i}"), "1".into(), HOUR, 6); // most are evicted
    }
    m.cache.run_pending_tasks();
    assert_eq!(m.count_by_kind(), walk(&m));
  }

  #[test]
  fn clear_prefix_removes_only_that_prefix() {
    let m = MemoryTier::new(1000, 1 << 20);
    m.set("p:org:{a}:x", "1".into(), HOUR, 1);
    m.set("p:org:{a}:y", "1".into(), HOUR, 1);
    m.set("p:org:{ab}:x", "1".into(), HOUR, 1);
    assert_eq!(m.clear_prefix("p:org:{a}:"), 2);
    assert!(m.exists("p:org:{ab}:x"));
  }

  #[test]
  fn stays_within_its_byte_and_entry_bounds() {
    let m = MemoryTier::new(100, 64 * 1024);
    let value: Arc<str> = "x".repeat(1000).into();
    for i in 0..2000 {
      m.set(&format!("k{i}"), value.clone(), HOUR, 0);
    }
    let (entries, bytes) = m.usage();
    assert!(bytes <= 64 * 1024, "{bytes}");
    assert!(entries <= 100 && entries > 0, "{entries}");
    assert!(m.exists("k1999"), "the newest entry is kept, the oldest evicted");
    assert!(!m.exists("k0"));
    let m = MemoryTier::new(10, 1 << 30);
    for i in 0..500 {
      m.set(&format!("k{i}"), "1".into(), HOUR, 0);
    }
    assert!(m.usage().0 <= 10);
  }
}
