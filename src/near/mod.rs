//! The near cache: hot values kept in this process while Redis is healthy, so
//! that a repeated read makes no round trip, kept coherent by Redis client
//! tracking (RESP3 pushes, `BCAST` on the key prefix) on connections of its
//! own: one link per server that takes writes (a lane: the server, the master
//! Sentinel names, or each master of a cluster; see `link`).
//!
//! What it guarantees, and how:
//! - A hit is served only while every lane's link is up, the adapter is in
//!   'redis' mode, and every link's lease is current: a heartbeat (`ROLE`) sent on a link
//!   at `t` and answered renews its lease to `t + LEASE`. Redis writes an
//!   invalidation to the link before the reply of any later command on it, so
//!   an answered heartbeat proves that every write that server ran before it has
//!   been applied here; a write acknowledged after `t` is therefore served
//!   stale for less than `LEASE` (100 ms), even when a link goes silent.
//! - Any lane's link dropping (EOF, `CLIENT KILL`, a heartbeat unanswered, its server no longer master), a new
//!   lane (a master promoted, one added), or the breaker opening empties the
//!   cache; it is bypassed until every lane has tracking on again.
//! - A read fills the cache only if no invalidation of its key (nor a flush)
//!   arrived since it was sent: it leaves a placeholder when sent, and an
//!   invalidation removes it (the classic tracking race).
//! - Values are JSON text: every hit is parsed afresh by the caller, so a
//!   caller mutating what it got changes nothing for the next one.

mod link;

pub(crate) use link::start_tracking;
pub use link::{run_lanes, run_link, Dialer, Heartbeat, LINK_NAME};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind, Value};
use serde_json::{json, Value as Json};
use tokio::sync::Notify;

use crate::config::NearConfig;

/// How long an answered heartbeat of a link vouches for the near cache.
pub const LEASE: Duration = Duration::from_millis(100);
/// Bytes counted per entry besides its key and value (map slot, order queue, Arcs).
const ENTRY_OVERHEAD: usize = 96;
/// The table is split in this many shards, each under its own lock: Node's
/// thread (hits) and the I/O thread (fills, invalidations) then rarely wait
/// for each other, and a wait on a loaded 2-core machine costs a time slice.
const SHARDS: usize = 16;

enum Slot {
  /// A read of this key is on its way to Redis; its reply may fill the slot
  /// if the token is still this one when it arrives.
  Pending(u64),
  Ready {
    token: u64,
    json: Arc<str>,
    expires: Instant,
  },
}

#[derive(Default)]
struct Table {
  map: HashMap<Arc<str>, Slot>,
  /// Ready entries in the order they were filled (oldest first), for
  /// eviction; a record whose token no longer matches is skipped.
  order: VecDeque<(Arc<str>, u64)>,
  ready: usize,
  bytes: usize,
}

impl Table {
  fn remove(&mut self, key: &str) -> bool {
    match self.map.remove(key) {
      Some(Slot::Ready { json, .. }) => {
        self.ready -= 1;
        self.bytes -= entry_bytes(key, &json);
        true
      }
      Some(Slot::Pending(_)) => true,
      None => false,
    }
  }

  fn clear(&mut self) {
    self.map.clear();
    self.order.clear();
    self.ready = 0;
    self.bytes = 0;
  }

  /// Drops the oldest entries until `bounds` hold.
  fn evict(&mut self, max_entries: usize, max_bytes: usize) {
    while self.ready > max_entries || self.bytes > max_bytes {
      let Some((key, token)) = self.order.pop_front() else { return };
      if matches!(self.map.get(&key), Some(Slot::Ready { token: t, .. }) if *t == token) {
        self.remove(&key);
      }
    }
    // Records of entries invalidated since: dropped once they dominate.
    if self.order.len() > 2 * self.ready + 1024 {
      let map = &self.map;
      self.order.retain(|(k, t)| matches!(map.get(k), Some(Slot::Ready { token, .. }) if token == t));
    }
  }
}

fn entry_bytes(key: &str, json: &str) -> usize {
  key.len() + json.len() + ENTRY_OVERHEAD
}

/// A lane as one link task knows it. A lane that leaves the set and comes
/// back (a master that flaps in the slot map) is a new lane: the old task,
/// holding the old epoch, ends instead of fighting the new one over the link.
pub struct LaneId {
  pub name: Arc<str>,
  epoch: u64,
}

/// The state of one lane's invalidation link.
#[derive(Clone, Copy, Default)]
struct Lane {
  /// Set when the lane joins the set, never reused.
  epoch: u64,
  /// The number of its current link (0: none yet); numbers are never reused,
  /// so a late report of an older link is recognised and ignored.
  link: u64,
  /// Tracking is on.
  up: bool,
  /// Nanoseconds since `origin` until which its last answered heartbeat vouches.
  lease_until: u64,
}

/// The near cache of one adapter.
pub struct Near {
  cfg: NearConfig,
  shards: [Mutex<Table>; SHARDS],
  origin: Instant,
  /// Lanes by name (`host:port` on a cluster); written only by link tasks.
  lanes: Mutex<HashMap<Arc<str>, Lane>>,
  next_link: AtomicU64,
  next_epoch: AtomicU64,
  /// What the hit path reads of the lanes (see `settle`): all of them up...
  link_up: AtomicBool,
  /// ...and the earliest of their leases.
  lease_until: AtomicU64,
  /// The adapter is in 'redis' mode (the breaker is closed).
  serving: AtomicBool,
  closed: AtomicBool,
  /// Why a link last failed (cleared when every lane is up): what an
  /// operator needs when `linkUp` stays false (an ACL refusing `CLIENT
  /// TRACKING`, a Redis older than 6 without RESP3...).
  last_error: Mutex<Option<String>>,
  wake: Arc<Notify>,
  hits: AtomicU64,
  misses: AtomicU64,
  invalidations: AtomicU64,
  flushes: AtomicU64,
  next_token: AtomicU64,
}

fn lock(shard: &Mutex<Table>) -> MutexGuard<'_, Table> {
  // A panic while holding the lock leaves plain data behind; keep going.
  shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A read on its way to Redis that may fill the near cache. Dropped without
/// filling (an error, a miss), it removes its placeholder.
pub struct Ticket<'a> {
  near: &'a Near,
  key: Arc<str>,
  token: u64,
}

impl Drop for Ticket<'_> {
  fn drop(&mut self) {
    let mut t = self.near.lock(&self.key);
    if matches!(t.map.get(&*self.key), Some(Slot::Pending(p)) if *p == self.token) {
      t.map.remove(&*self.key);
    }
  }
}

impl Ticket<'_> {
  /// The read's reply arrived: `json` (the value as callers get it) is kept
  /// for at most the configured TTL and at most `pttl_ms` (the key's TTL in
  /// Redis: -1 none, -2 gone), unless an invalidation came first.
  pub fn fill(self, json: &Arc<str>, pttl_ms: i64) {
    let near = self.near;
    let ttl = match pttl_ms {
      -1 => near.cfg.ttl,
      ms if ms > 0 => near.cfg.ttl.min(Duration::from_millis(ms as u64)),
      _ => return,
    };
    let size = entry_bytes(&self.key, json);
    // One value may not take more than a shard's bytes.
    let (max_entries, max_bytes) = near.shard_bounds();
    if size > max_bytes {
      return;
    }
    let mut t = near.lock(&self.key);
    let Some(slot) = t.map.get_mut(&*self.key) else { return };
    if !matches!(slot, Slot::Pending(p) if *p == self.token) {
      return;
    }
    *slot = Slot::Ready { token: self.token, json: json.clone(), expires: Instant::now() + ttl };
    t.ready += 1;
    t.bytes += size;
    t.order.push_back((self.key.clone(), self.token));
    t.evict(max_entries, max_bytes);
  }
}

impl Near {
  pub fn new(cfg: NearConfig) -> Arc<Near> {
    Arc::new(Near {
      cfg,
      shards: Default::default(),
      origin: Instant::now(),
      lanes: Mutex::new(HashMap::new()),
      next_link: AtomicU64::new(0),
      next_epoch: AtomicU64::new(0),
      link_up: AtomicBool::new(false),
      lease_until: AtomicU64::new(0),
      serving: AtomicBool::new(false),
      closed: AtomicBool::new(false),
      last_error: Mutex::new(None),
      wake: Arc::new(Notify::new()),
      hits: AtomicU64::new(0),
      misses: AtomicU64::new(0),
      invalidations: AtomicU64::new(0),
      flushes: AtomicU64::new(0),
      next_token: AtomicU64::new(0),
    })
  }

  /// The shard of `key`, locked.
  fn lock(&self, key: &str) -> MutexGuard<'_, Table> {
    use std::hash::BuildHasher;
    let hash = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key);
    lock(&self.shards[(hash % SHARDS as u64) as usize])
  }

  /// Bounds of one shard.
  fn shard_bounds(&self) -> (usize, usize) {
    (self.cfg.max_entries.div_ceil(SHARDS), self.cfg.max_bytes.div_ceil(SHARDS))
  }

  fn now_ns(&self) -> u64 {
    self.origin.elapsed().as_nanos() as u64
  }

  /// Whether reads may fill the cache now (hits need a current lease too).
  fn filling(&self) -> bool {
    self.link_up.load(Relaxed) && self.serving.load(Relaxed)
  }

  /// Whether a hit may be served now.
  pub fn active(&self) -> bool {
    self.filling() && self.now_ns() < self.lease_until.load(Relaxed)
  }

  /// [`active`](Self::active), counting a miss when not.
  pub fn usable(&self) -> bool {
    let active = self.active();
    if !active {
      self.misses.fetch_add(1, Relaxed);
    }
    active
  }

  /// The value of `key` as a read would answer it, if held and current.
  pub fn get(&self, key: &str) -> Option<Arc<str>> {
    if !self.active() {
      self.misses.fetch_add(1, Relaxed);
      return None;
    }
    let mut t = self.lock(key);
    let found = match t.map.get(key) {
      Some(Slot::Ready { json, expires, .. }) if *expires > Instant::now() => Some(json.clone()),
      Some(Slot::Ready { .. }) => {
        t.remove(key);
        None
      }
      _ => None,
    };
    drop(t);
    match &found {
      Some(_) => self.hits.fetch_add(1, Relaxed),
      None => self.misses.fetch_add(1, Relaxed),
    };
    found
  }

  /// A read of `key` is about to be sent: its ticket, if its reply may fill
  /// the cache (no ticket while the cache is off, or when a current value is
  /// held already).
  pub fn begin(&self, key: &str) -> Option<Ticket<'_>> {
    if !self.filling() {
      return None;
    }
    let mut t = self.lock(key);
    if matches!(t.map.get(key), Some(Slot::Ready { expires, .. }) if *expires > Instant::now()) {
      return None;
    }
    t.remove(key);
    drop(t);
    let token = self.next_token.fetch_add(1, Relaxed) + 1;
    let mut t = self.lock(key);
    let key: Arc<str> = key.into();
    t.map.insert(key.clone(), Slot::Pending(token));
    Some(Ticket { near: self, key, token })
  }

  /// This adapter is writing `key` (or Redis told us another client did).
  pub fn invalidate(&self, key: &str) {
    self.lock(key).remove(key);
  }

  /// A tenant clear: every key starting with `scope`.
  pub fn invalidate_prefix(&self, scope: &str) {
    for shard in &self.shards {
      let mut t = lock(shard);
      let doomed: Vec<Arc<str>> = t.map.keys().filter(|k| k.starts_with(scope)).cloned().collect();
      for k in doomed {
        t.remove(&k);
      }
    }
  }

  /// Empties the cache (counted as a flush).
  pub fn flush(&self) {
    for shard in &self.shards {
      lock(shard).clear();
    }
    self.flushes.fetch_add(1, Relaxed);
  }

  /// The adapter entered or left 'redis' mode; leaving it empties the cache.
  pub fn set_serving(&self, serving: bool) {
    if self.serving.swap(serving, Relaxed) && !serving {
      self.flush();
    }
  }

  /// Pushes from link `link`: invalidations (taken from any link, even an
  /// older one: dropping more than needed is safe), or its disconnection.
  fn on_push(&self, link: u64, push: PushInfo) {
    match push.kind {
      PushKind::Invalidate => match push.data.first() {
        Some(Value::Array(keys)) | Some(Value::Set(keys)) => {
          self.invalidations.fetch_add(keys.len() as u64, Relaxed);
          for k in keys {
            if let Value::BulkString(bytes) = k {
              self.invalidate(&String::from_utf8_lossy(bytes));
            } else if let Value::SimpleString(s) = k {
              self.invalidate(s);
            }
          }
        }
        // A null key: FLUSHALL/FLUSHDB, or Redis's tracking table overflowed.
        _ => {
          self.invalidations.fetch_add(1, Relaxed);
          self.flush();
        }
      },
      PushKind::Disconnection => self.link_lost(link),
      _ => {}
    }
  }

  fn lanes(&self) -> MutexGuard<'_, HashMap<Arc<str>, Lane>> {
    self.lanes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
  }

  /// The lanes that must have a link for hits to be served; returns the ones
  /// new to the set (whose link tasks the caller starts). A lane that leaves
  /// the set ends its task at its next heartbeat.
  pub fn set_lanes(&self, names: &[impl AsRef<str>]) -> Vec<LaneId> {
    let mut lanes = self.lanes();
    lanes.retain(|lane, _| names.iter().any(|n| n.as_ref() == &**lane));
    let mut added = Vec::new();
    for name in names {
      if !lanes.contains_key(name.as_ref()) {
        let lane: Arc<str> = name.as_ref().into();
        let epoch = self.next_epoch.fetch_add(1, Relaxed) + 1;
        lanes.insert(lane.clone(), Lane { epoch, ..Lane::default() });
        added.push(LaneId { name: lane, epoch });
      }
    }
    self.settle(&lanes);
    added
  }

  /// A link of `lane` is about to be dialled: its number (`None` once the
  /// lane has left the set, even if it came back since, or the cache is
  /// closed: the task ends).
  fn dialing(&self, lane: &LaneId) -> Option<u64> {
    if self.closed.load(Relaxed) {
      return None;
    }
    let mut lanes = self.lanes();
    let state = lanes.get_mut(&lane.name).filter(|l| l.epoch == lane.epoch)?;
    let link = self.next_link.fetch_add(1, Relaxed) + 1;
    *state = Lane { link, up: false, lease_until: 0, ..*state };
    self.settle(&lanes);
    Some(link)
  }

  /// Applies `change` to the lane whose current link is `link`, if any.
  fn on_link(&self, link: u64, change: impl FnOnce(&mut Lane)) {
    let mut lanes = self.lanes();
    if let Some(lane) = lanes.values_mut().find(|l| l.link == link) {
      change(lane);
      self.settle(&lanes);
    }
  }

  /// Is `link` its lane's current link, with tracking on?
  fn is_live(&self, link: u64) -> bool {
    !self.closed.load(Relaxed) && self.lanes().values().any(|l| l.link == link && l.up)
  }

  /// Link `link` has tracking on: its lease runs from `asked_ns`.
  fn link_ready(&self, link: u64, asked_ns: u64) {
    let lease = asked_ns + LEASE.as_nanos() as u64;
    self.on_link(link, |l| *l = Lane { up: true, lease_until: lease, ..*l });
  }

  /// A heartbeat sent at `asked_ns` on link `link` was answered.
  fn renew(&self, link: u64, asked_ns: u64) {
    let lease = asked_ns + LEASE.as_nanos() as u64;
    self.on_link(link, |l| l.lease_until = l.lease_until.max(lease));
  }

  /// Link `link` is gone: the cache is emptied and bypassed until its lane has a new one.
  fn link_lost(&self, link: u64) {
    self.on_link(link, |l| *l = Lane { up: false, lease_until: 0, ..*l });
  }

  /// Publishes the lanes to the hit path: hits need every lane up, under the
  /// earliest lease. A cache that stops being covered by every lane is
  /// emptied, since a write on an uncovered server would go unannounced.
  fn settle(&self, lanes: &HashMap<Arc<str>, Lane>) {
    let covered = !lanes.is_empty() && lanes.values().all(|l| l.up);
    if covered {
      *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
      let lease = lanes.values().map(|l| l.lease_until).min().unwrap_or(0);
      self.lease_until.store(lease, Relaxed);
      self.link_up.store(true, Relaxed);
    } else {
      self.lease_until.store(0, Relaxed);
      if self.link_up.swap(false, Relaxed) {
        self.flush();
      }
    }
  }

  /// A link of `lane` failed to come up, or ended, for `why`.
  fn link_failed(&self, lane: &str, why: &str) {
    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{lane}: {why}"));
  }

  /// Why a link last failed, while not every link is up.
  pub fn last_error(&self) -> Option<String> {
    self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
  }

  /// Ends the link tasks.
  pub fn close(&self) {
    self.closed.store(true, Relaxed);
    self.link_up.store(false, Relaxed);
    self.flush();
    self.wake.notify_waiters();
  }

  pub fn stats(&self) -> Json {
    let (entries, bytes) = self.usage();
    json!({
      "enabled": true,
      "linkUp": self.link_up.load(Relaxed),
      "links": self.lanes().len(),
      "active": self.active(),
      "entries": entries,
      "bytes": bytes,
      "maxEntries": self.cfg.max_entries,
      "maxBytes": self.cfg.max_bytes,
      "ttlMs": self.cfg.ttl.as_millis() as u64,
      "hits": self.hits.load(Relaxed),
      "misses": self.misses.load(Relaxed),
      "invalidations": self.invalidations.load(Relaxed),
      "flushes": self.flushes.load(Relaxed),
    })
  }

  /// Ready entries and their bytes.
  pub fn usage(&self) -> (usize, usize) {
    self
      .shards
      .iter()
      .map(|s| {
        let t = lock(s);
        (t.ready, t.bytes)
      })
      .fold((0, 0), |(e, b), (de, db)| (e + de, b + db))
  }

  /// (hits, misses, invalidations, flushes) for the metrics.
  pub fn counters(&self) -> [u64; 4] {
    [&self.hits, &self.misses, &self.invalidations, &self.flushes].map(|c| c.load(Relaxed))
  }
}

/// `getStats().cache.near` of an adapter without a near cache (not asked
/// for, or Redis disabled).
pub fn off_stats() -> Json {
  json!({
    "enabled": false, "linkUp": false, "links": 0, "active": false, "entries": 0, "bytes": 0,
    "hits": 0, "misses": 0, "invalidations": 0, "flushes": 0, "lastError": null,
  })
}

#[cfg(test)]
mod tests {
  use super::*;

  fn near(max_entries: usize, max_bytes: usize) -> Arc<Near> {
    let n = Near::new(NearConfig { max_entries, max_bytes, ttl: Duration::from_secs(60) });
    n.set_serving(true);
    let a = n.set_lanes(&["a"]).pop().unwrap();
    let link = n.dialing(&a).unwrap();
    assert_eq!(link, 1);
    n.link_ready(link, n.now_ns() + 3_600_000_000_000);
    n
  }

  #[test]
  fn a_filled_read_is_a_hit_until_invalidated() {
    let n = near(10, 1 << 20);
    assert!(n.get("k").is_none());
    n.begin("k").unwrap().fill(&Arc::from("1"), -1);
    assert_eq!(n.get("k").as_deref(), Some("1"));
    n.invalidate("k");
    assert!(n.get("k").is_none());
  }

  #[test]
  fn an_invalidation_during_the_read_stops_the_fill() {
    let n = near(10, 1 << 20);
    let ticket = n.begin("k").unwrap();
    n.on_push(
      1,
      PushInfo { kind: PushKind::Invalidate, data: vec![Value::Array(vec![Value::BulkString(b"k".to_vec())])] },
    );
    ticket.fill(&Arc::from("old"), -1);
    assert!(n.get("k").is_none(), "a read that raced an invalidation filled the cache");
    assert_eq!(n.counters()[2], 1);
    // A flush (null key) during a read stops it too.
    let ticket = n.begin("k").unwrap();
    n.on_push(1, PushInfo { kind: PushKind::Invalidate, data: vec![Value::Nil] });
    ticket.fill(&Arc::from("old"), -1);
    assert!(n.get("k").is_none());
  }

  #[test]
  fn a_lost_link_flushes_and_bypasses() {
    let n = near(10, 1 << 20);
    n.begin("k").unwrap().fill(&Arc::from("1"), -1);
    n.on_push(2, PushInfo { kind: PushKind::Disconnection, data: vec![] });
    assert!(n.get("k").is_some(), "an older link's disconnection is ignored");
    n.on_push(1, PushInfo { kind: PushKind::Disconnection, data: vec![] });
    assert!(n.get("k").is_none());
    assert!(n.begin("k").is_none(), "no fill while the link is down");
    assert_eq!(n.usage(), (0, 0));
  }

  #[test]
  fn leaving_redis_mode_flushes() {
    let n = near(10, 1 << 20);
    n.begin("k").unwrap().fill(&Arc::from("1"), -1);
    n.set_serving(false);
    assert_eq!(n.usage().0, 0);
    n.set_serving(true);
    assert!(n.get("k").is_none());
  }

  #[test]
  fn bounds_evict_oldest_first_and_ttls_cap() {
    // Bounds hold per shard (maxEntries / 16 each): at most 32 entries here.
    let n = near(32, 1 << 20);
    for i in 0..1000 {
      n.begin(&format!("k{i}")).unwrap().fill(&Arc::from("1"), -1);
    }
    assert!(n.usage().0 <= 32 && n.usage().0 >= 16, "{:?}", n.usage());
    assert!(n.get("k0").is_none(), "the oldest entries go first");
    assert!(n.get("k999").is_some());
    n.begin("gone").unwrap().fill(&Arc::from("1"), -2);
    assert!(n.get("gone").is_none(), "a key Redis no longer holds is not kept");
    n.begin("short").unwrap().fill(&Arc::from("1"), 1);
    std::thread::sleep(Duration::from_millis(5));
    assert!(n.get("short").is_none(), "kept beyond its Redis TTL");
    // Byte bound: a value over a shard's bytes (maxBytes / 16) is never kept.
    let n = near(100, 16 * 1024);
    n.begin("big").unwrap().fill(&Arc::from("x".repeat(2000)), -1);
    assert!(n.get("big").is_none());
    assert_eq!(n.usage(), (0, 0));
  }

  #[test]
  fn a_dropped_ticket_leaves_no_placeholder_and_prefix_clears() {
    let n = near(10, 1 << 20);
    drop(n.begin("k"));
    assert!(n.lock("k").map.is_empty());
    n.begin("p:org:{a}:x").unwrap().fill(&Arc::from("1"), -1);
    n.begin("p:org:{b}:x").unwrap().fill(&Arc::from("1"), -1);
    n.invalidate_prefix("p:org:{a}:");
    assert!(n.get("p:org:{a}:x").is_none());
    assert!(n.get("p:org:{b}:x").is_some());
  }

  #[test]
  fn an_expired_lease_bypasses_without_flushing() {
    let n = near(10, 1 << 20);
    n.begin("k").unwrap().fill(&Arc::from("1"), -1);
    n.lease_until.store(0, Relaxed);
    assert!(n.get("k").is_none());
    n.renew(1, n.now_ns());
    assert!(n.get("k").is_some());
  }

  #[test]
  fn every_lane_must_be_up_and_a_new_one_bypasses_until_ready() {
    let n = near(10, 1 << 20);
    let far = n.now_ns() + 3_600_000_000_000;
    n.begin("k").unwrap().fill(&Arc::from("1"), -1);
    // A second master appears (a replica promoted): not covered yet, so emptied and bypassed.
    let lane_b = n.set_lanes(&["a", "b"]).pop().unwrap();
    assert!(n.get("k").is_none() && n.begin("k").is_none());
    assert_eq!(n.usage(), (0, 0));
    let b = n.dialing(&lane_b).unwrap();
    n.link_ready(b, far);
    n.begin("k").unwrap().fill(&Arc::from("2"), -1);
    assert_eq!(n.get("k").as_deref(), Some("2"));
    // One lane's link lost: the whole cache, since its keys may be anywhere.
    n.on_push(b, PushInfo { kind: PushKind::Disconnection, data: vec![] });
    assert!(n.get("k").is_none());
    assert_eq!(n.usage(), (0, 0));
    // A lane that leaves the set (its master gone from the map) no longer counts.
    assert!(n.set_lanes(&["a"]).is_empty());
    n.begin("k").unwrap().fill(&Arc::from("3"), -1);
    assert_eq!(n.get("k").as_deref(), Some("3"));
    assert!(n.dialing(&lane_b).is_none(), "a lane gone ends its task");
    // It comes back (a master that flapped): a new lane; the old task still ends.
    let again = n.set_lanes(&["a", "b"]).pop().unwrap();
    assert!(n.dialing(&lane_b).is_none(), "the old task does not take the new lane");
    assert!(n.dialing(&again).is_some());
    // No lanes at all (a cluster before its first slot map): never a hit.
    n.set_lanes(&[] as &[&str]);
    assert!(!n.active());
  }

  #[test]
  fn the_earliest_lease_rules() {
    let n = near(10, 1 << 20);
    let lane_b = n.set_lanes(&["a", "b"]).pop().unwrap();
    let b = n.dialing(&lane_b).unwrap();
    n.link_ready(b, n.now_ns());
    std::thread::sleep(LEASE + Duration::from_millis(10));
    assert!(!n.active(), "lane b's lease ran out, though lane a's has not");
    n.renew(b, n.now_ns());
    assert!(n.active());
  }
}
