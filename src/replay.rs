//! The replay journal: writes acknowledged while Redis was unavailable, the
//! latest per key, waiting to be written back when Redis returns.
//!
//! Bounded: past `max` entries the oldest is dropped (and counted). Replay is
//! last-writer-wins on the write time in the value header (see `codec`),
//! decided on the server by a Lua script, so a value another instance wrote
//! to Redis after ours is never overwritten.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use redis::Pipeline;

use crate::codec;
use crate::tiers::redis::{RedisTier, Span, Unavailable};

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

/// How many journal entries one replay round trip carries.
const REPLAY_BATCH: usize = 256;

/// Lua: `ts(value)` is the write time in a value's header (0xFE, codec,
/// u64 BE ms); a value without one (the old adapter's) counts as older
/// than anything.
macro_rules! lua_write_time {
  () => {
    r#"
local function ts(v)
  if type(v) ~= 'string' or #v < 10 or string.byte(v, 1) ~= 254 then return 0 end
  local t = 0
  for i = 3, 10 do t = t * 256 + string.byte(v, i) end
  return t
end
"#
  };
}

/// Last-writer-wins replay of one journal entry.
const REPLAY_SCRIPT: &str = concat!(
  lua_write_time!(),
  r#"
local op, mine, key = ARGV[1], tonumber(ARGV[2]), KEYS[1]
if op == 'set' or op == 'del' then
  if redis.call('TYPE', key).ok == 'string' and ts(redis.call('GET', key)) > mine then return 0 end
  if op == 'set' then redis.call('SET', key, ARGV[4], 'PX', ARGV[3]) else redis.call('DEL', key) end
  return 1
end
if redis.call('TYPE', key).ok ~= 'hash' and redis.call('EXISTS', key) == 1 then redis.call('DEL', key) end
if ts(redis.call('HGET', key, ARGV[5])) > mine then return 0 end
if op == 'hset' then
  redis.call('HSET', key, ARGV[5], ARGV[4])
  redis.call('PEXPIRE', key, ARGV[3])
else
  redis.call('HDEL', key, ARGV[5])
end
return 1
"#
);

/// Deletes the given keys of one tenant unless they were written after the clear.
const CLEAR_SCRIPT: &str = concat!(
  lua_write_time!(),
  r#"
local n, at = 0, tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok ~= 'string' or ts(redis.call('GET', key)) <= at then
    n = n + redis.call('UNLINK', key)
  end
end
return n
"#
);

/// What one write-back did.
pub struct WriteBack {
  pub replayed: u64,
  /// Entries Redis refused for good (e.g. a type clash); counted, then forgotten.
  pub refused: u64,
  /// `Err`: Redis became unavailable; the rest stays journaled.
  pub outcome: Result<(), Unavailable>,
}

/// Writes the journal back to Redis, clears first, then the oldest entries,
/// while `keep_going` says so; stops at the first failure.
pub async fn write_back(
  journal: &Journal,
  redis: &RedisTier,
  threshold: usize,
  keep_going: impl Fn() -> bool,
) -> WriteBack {
  let mut done = WriteBack { replayed: 0, refused: 0, outcome: Ok(()) };
  while !journal.is_empty() && keep_going() {
    let (clears, entries) = journal.take_batch(REPLAY_BATCH);
    for (i, clear) in clears.iter().enumerate() {
      if let Err(e) = write_back_clear(redis, clear).await {
        journal.restore_clears(clears[i..].to_vec());
        done.outcome = Err(e);
        return done;
      }
    }
    let now = Instant::now();
    let mut pipe = Pipeline::with_capacity(entries.len());
    let mut sent = Vec::with_capacity(entries.len());
    for e in &entries {
      let field = e.slot.field.as_deref();
      let (op, ttl_ms, value) = match &e.pending {
        // Expired meanwhile: nothing to write back.
        Pending::Set { expires_at, .. } if *expires_at <= now => {
          journal.complete(e);
          continue;
        }
        Pending::Set { json, expires_at } => (
          if field.is_some() { "hset" } else { "set" },
          expires_at.duration_since(now).as_millis().max(1) as u64,
          codec::encode(json, threshold, e.written_ms),
        ),
        Pending::Delete => (if field.is_some() { "hdel" } else { "del" }, 0, Vec::new()),
      };
      pipe.cmd("EVAL").arg(REPLAY_SCRIPT).arg(1).arg(&e.slot.key);
      pipe.arg(op).arg(e.written_ms).arg(ttl_ms).arg(value).arg(field.unwrap_or(""));
      sent.push(e);
    }
    if sent.is_empty() {
      continue;
    }
    // Write-time-checked scripts: harmless if run twice, so may be re-sent.
    let spans: Vec<Span> = sent.iter().map(|e| Span { key: &e.slot.key, commands: 1, retry: true }).collect();
    match redis.run(&pipe, &spans).await.into_result() {
      Ok(outcomes) => {
        for (e, outcome) in sent.into_iter().zip(outcomes) {
          match outcome {
            Ok(_) => done.replayed += 1,
            Err(_) => done.refused += 1,
          }
          journal.complete(e);
        }
      }
      Err(e) => {
        done.outcome = Err(e);
        return done;
      }
    }
  }
  done
}

/// Replays one tenant clear: deletes that tenant's keys not written since.
async fn write_back_clear(redis: &RedisTier, clear: &Clear) -> Result<(), Unavailable> {
  let mut cursor: u64 = 0;
  for _ in 0..100_000 {
    let mut scan = redis::cmd("SCAN");
    scan.arg(cursor).arg("MATCH").arg(&clear.pattern).arg("COUNT").arg(1000);
    let (next, keys): (u64, Vec<String>) = redis::from_redis_value(redis.run_routed(scan, &clear.route_key).await?)
      .map_err(|e| Unavailable(e.to_string()))?;
    if !keys.is_empty() {
      let mut eval = redis::cmd("EVAL");
      eval.arg(CLEAR_SCRIPT).arg(keys.len()).arg(&keys).arg(clear.written_ms);
      redis.run_routed(eval, &clear.route_key).await?;
    }
    cursor = next;
    if cursor == 0 {
      break;
    }
  }
  Ok(())
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
