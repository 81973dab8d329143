//! The near cache: hot values kept in this process while Redis is healthy, so
//! that a repeated read makes no round trip, kept coherent by Redis client
//! tracking (RESP3 pushes, `BCAST` on the key prefix) on connections of its
//! own: one link per server that takes writes (a lane: the server, the master
//! Sentinel names, or each master of a cluster; see `link`).
//!
//! The values themselves live in JavaScript (`lib/near.js`), where a hit costs
//! no native call; this module decides, through the shared [`board`], which of
//! them may be served. What it guarantees, and how:
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
//! - A read's value is kept only with the [`Snapshot`] of its key taken before
//!   it was sent, and served only while that snapshot holds: an invalidation
//!   that arrives while the read is on its way retires it (the classic
//!   tracking race).
//! - On a cluster, a read is kept only if the master that answered it has its
//!   link up ([`Near::tracks`]): a redirection can reach a master this
//!   adapter has no link to yet.
//! - A value this adapter wrote may be kept for a read of its key, for at
//!   most [`WRITE_KEEP`] from when it was submitted, through one
//!   announcement of its key (its own write's echo) and no more; see
//!   [`Near::mark_written`] for why that bound is needed and enough.
//! - Values are JSON text: every hit is parsed afresh by the caller, so a
//!   caller mutating what it got changes nothing for the next one.

mod board;
mod link;

pub use board::{layout, Board, Snapshot};
pub(crate) use link::start_tracking;
pub use link::{run_lanes, run_link, Dialer, Heartbeat, LINK_NAME};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind, Value};
use serde_json::{json, Value as Json};
use tokio::sync::Notify;

use crate::batch::{Op, Reply};
use crate::config::NearConfig;
use crate::tiers::redis::Outcome;

/// How long an answered heartbeat of a link vouches for the near cache.
pub const LEASE: Duration = Duration::from_millis(100);

/// How long a value this adapter wrote may be served from the near cache,
/// counted from when JavaScript submitted the write (see `mark_written`):
/// half of the 100 ms within which another instance's acknowledged write
/// must be seen, so that the one case tracking cannot tell apart stays
/// well inside it.
pub const WRITE_KEEP: Duration = Duration::from_millis(50);

/// What JavaScript keeps with a read's reply: the read's snapshot and how
/// long the value may be kept (at most `ttlMs`, at most its TTL in Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
  pub snapshot: Snapshot,
  pub ttl_ms: u32,
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
  board: Arc<Board>,
  origin: Instant,
  /// `performance.now()` at `origin`, in ns (set when JavaScript takes the board).
  js_origin_ns: AtomicI64,
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
  /// One writer of the board's `ACTIVE` and lease at a time, so that an
  /// older state never overwrites a newer one.
  publishing: Mutex<()>,
  /// Why a link last failed (cleared when every lane is up): what an
  /// operator needs when `linkUp` stays false (an ACL refusing `CLIENT
  /// TRACKING`, a Redis older than 6 without RESP3...).
  last_error: Mutex<Option<String>>,
  wake: Arc<Notify>,
  invalidations: AtomicU64,
  flushes: AtomicU64,
  /// JavaScript's hits already added to the adapter's own counters.
  hits_absorbed: AtomicU64,
}

impl Near {
  pub fn new(cfg: NearConfig) -> Arc<Near> {
    Arc::new(Near {
      cfg,
      board: Board::new(),
      origin: Instant::now(),
      js_origin_ns: AtomicI64::new(0),
      lanes: Mutex::new(HashMap::new()),
      next_link: AtomicU64::new(0),
      next_epoch: AtomicU64::new(0),
      link_up: AtomicBool::new(false),
      lease_until: AtomicU64::new(0),
      serving: AtomicBool::new(false),
      closed: AtomicBool::new(false),
      publishing: Mutex::new(()),
      last_error: Mutex::new(None),
      wake: Arc::new(Notify::new()),
      invalidations: AtomicU64::new(0),
      flushes: AtomicU64::new(0),
      hits_absorbed: AtomicU64::new(0),
    })
  }

  /// The board, for JavaScript, whose `performance.now()` reads `js_now_ms` now.
  pub fn board_for_js(&self, js_now_ms: f64) -> Arc<Board> {
    let js_origin = js_now_ms * 1e6 - self.now_ns() as f64;
    self.js_origin_ns.store(js_origin as i64, Relaxed);
    self.publish();
    self.board.clone()
  }

  fn now_ns(&self) -> u64 {
    self.origin.elapsed().as_nanos() as u64
  }

  /// Whether reads may fill the cache now (hits need a current lease too).
  fn filling(&self) -> bool {
    self.link_up.load(Relaxed) && self.serving.load(Relaxed) && !self.closed.load(Relaxed)
  }

  /// Whether a hit may be served now.
  pub fn active(&self) -> bool {
    self.filling() && self.now_ns() < self.lease_until.load(Relaxed)
  }

  /// Writes to the board whether hits may be served, and until when.
  fn publish(&self) {
    let _one = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
    let lease = self.lease_until.load(Relaxed);
    // 1 ms off the end: JavaScript's clock and this one are read at slightly different times.
    let lease_js_ms =
      if lease == 0 { f64::NEG_INFINITY } else { (self.js_origin_ns.load(Relaxed) as f64 + lease as f64) / 1e6 - 1.0 };
    self.board.publish(self.filling(), lease_js_ms);
  }

  /// A read of `key` is about to be sent: its snapshot, if its reply may be
  /// kept (none while the cache is bypassed).
  pub fn begin(&self, key: &str) -> Option<Snapshot> {
    self.filling().then(|| self.board.snapshot(key.as_bytes()))
  }

  /// The read under `snapshot` was answered, and Redis gives the key
  /// `pttl_ms` to live (-1: no TTL, -2: gone): what JavaScript may keep.
  fn fill(&self, snapshot: Snapshot, pttl_ms: i64) -> Option<Fill> {
    let ttl = match pttl_ms {
      -1 => self.cfg.ttl,
      ms if ms > 0 => self.cfg.ttl.min(Duration::from_millis(ms as u64)),
      _ => return None,
    };
    Some(Fill { snapshot, ttl_ms: ttl.as_millis().min(u32::MAX as u128) as u32 })
  }

  /// A read's JSON reply, marked as one JavaScript's table may keep (see `fill`).
  pub fn mark_fill(&self, snapshot: Snapshot, pttl_ms: i64, reply: Reply) -> Reply {
    match (self.fill(snapshot, pttl_ms), reply) {
      (Some(fill), Reply::Json(json)) => Reply::Filled(json, fill),
      (_, reply) => reply,
    }
  }

  /// A write is about to be sent, after its own bump: its snapshot, if its
  /// value may be kept once Redis applies it (see `mark_written`). Only the
  /// first write of a call (a mapping's forward key), whose reply is the call's.
  pub fn begin_write(&self, op: &Op, first_of_call: bool) -> Option<Snapshot> {
    (first_of_call && op.reads_back_as_written()).then(|| self.begin(op.key())).flatten()
  }

  /// This adapter's write `op`, sent under `snapshot` (see `begin_write`),
  /// was answered `outcome`: its `reply`, marked so that JavaScript may keep
  /// the written value for a read of its key, if Redis applied it (not
  /// `WRITE_SUPERSEDED`: Redis holds a newer value), for at most
  /// [`WRITE_KEEP`] (and at most the write's TTL).
  ///
  /// Redis announces every write of a tracked key, ours included, so the
  /// value is kept through one announcement after `snapshot` (its own echo)
  /// and retired by a second, or by any write of ours (a bump of `LOCAL`).
  /// Why that is safe (the link carries announcements in the order Redis
  /// ran the writes, and `BCAST` announces the keys of one pass of Redis's
  /// event loop together, each once):
  /// - another client's write that Redis ran before ours is announced before
  ///   our echo or with it: what we keep, ours, is the newer value;
  /// - one it ran after ours, in a later pass, is announced after our echo:
  ///   a second announcement, which retires the value;
  /// - one it ran after ours within the same pass is announced with our echo
  ///   as one key and cannot be told from it: this case alone may serve our
  ///   value over the newer one, until `WRITE_KEEP` after we submitted, and
  ///   so for less than that after the other write was acknowledged.
  pub fn mark_written(&self, snapshot: Snapshot, op: &Op, outcome: &Outcome, reply: Reply) -> Reply {
    let applied = matches!(outcome, Ok(v) if redis::from_redis_value_ref::<i64>(v).is_ok_and(|n| n == 1));
    match op {
      Op::Set { ttl, .. } if applied && reply == Reply::Bool(true) => {
        let keep = WRITE_KEEP.min(*ttl).min(self.cfg.ttl);
        Reply::Stored(Fill { snapshot, ttl_ms: keep.as_millis() as u32 })
      }
      _ => reply,
    }
  }

  /// Whether cluster master `node` has a lane whose link is up: only a read
  /// it answered may be kept. A read redirected to a master this adapter
  /// does not track yet (one just added to the cluster, which the slot map
  /// learns of later) would otherwise be served with no link to announce
  /// that master's next write. A lane added since the read began flushed
  /// the cache, so the read's snapshot no longer holds anyway.
  pub fn tracks(&self, node: &str) -> bool {
    self.lanes().get(node).is_some_and(|lane| lane.up)
  }

  /// Redis announced a write of `key` (by anyone, this adapter included).
  fn invalidate(&self, key: &[u8]) {
    self.board.bump(key);
  }

  /// This adapter is writing `key`: what was read or written of it before is retired.
  pub fn forget(&self, key: &[u8]) {
    self.board.bump_local(key);
  }

  /// A tenant clear: the board has no index by prefix, so everything goes.
  pub fn invalidate_prefix(&self, _scope: &str) {
    self.flush();
  }

  /// Empties the cache (counted as a flush).
  pub fn flush(&self) {
    self.board.bump_epoch();
    self.flushes.fetch_add(1, Relaxed);
  }

  /// The adapter entered or left 'redis' mode; leaving it empties the cache.
  pub fn set_serving(&self, serving: bool) {
    if self.serving.swap(serving, Relaxed) && !serving {
      self.flush();
    }
    self.publish();
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
              self.invalidate(bytes);
            } else if let Value::SimpleString(s) = k {
              self.invalidate(s.as_bytes());
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
    self.publish();
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
    self.publish();
    self.wake.notify_waiters();
  }

  pub fn stats(&self) -> Json {
    let [hits, misses, entries, bytes] = self.board.counts();
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
      "hits": hits,
      "misses": misses,
      "invalidations": self.invalidations.load(Relaxed),
      "flushes": self.flushes.load(Relaxed),
    })
  }

  /// Entries held by JavaScript's table, and their bytes.
  pub fn usage(&self) -> (u64, u64) {
    let [_, _, entries, bytes] = self.board.counts();
    (entries, bytes)
  }

  /// (hits, misses, invalidations, flushes) for the metrics.
  pub fn counters(&self) -> [u64; 4] {
    let [hits, misses, _, _] = self.board.counts();
    [hits, misses, self.invalidations.load(Relaxed), self.flushes.load(Relaxed)]
  }

  /// JavaScript's hits since the last call: the adapter adds them to its own
  /// hits and operations, as reads answered without a round trip.
  pub fn take_new_hits(&self) -> u64 {
    let hits = self.board.counts()[0];
    hits.saturating_sub(self.hits_absorbed.fetch_max(hits, Relaxed))
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

  fn near() -> Arc<Near> {
    let n = Near::new(NearConfig { max_entries: 10, max_bytes: 1 << 20, ttl: Duration::from_secs(60) });
    n.set_serving(true);
    let a = n.set_lanes(&["a"]).pop().unwrap();
    let link = n.dialing(&a).unwrap();
    assert_eq!(link, 1);
    n.link_ready(link, n.now_ns() + 3_600_000_000_000);
    n
  }

  /// Whether JavaScript would serve a value read under `s` now.
  fn served(n: &Near, s: Snapshot) -> bool {
    n.active() && n.board.current(s)
  }

  fn push(n: &Near, link: u64, data: Vec<Value>) {
    n.on_push(link, PushInfo { kind: PushKind::Invalidate, data });
  }

  #[test]
  fn a_read_is_served_until_its_key_is_invalidated() {
    let n = near();
    let s = n.begin("k").unwrap();
    assert!(served(&n, s));
    n.invalidate(b"k");
    assert!(!served(&n, s));
    assert!(served(&n, n.begin("k").unwrap()), "a read after the write is served again");
  }

  #[test]
  fn an_invalidation_during_the_read_retires_it() {
    let n = near();
    let s = n.begin("k").unwrap();
    push(&n, 1, vec![Value::Array(vec![Value::BulkString(b"k".to_vec())])]);
    assert!(!served(&n, s), "a read that raced an invalidation would be served");
    assert_eq!(n.counters()[2], 1);
    // A flush (null key) during a read retires it too.
    let s = n.begin("k").unwrap();
    push(&n, 1, vec![Value::Nil]);
    assert!(!served(&n, s));
    assert_eq!(n.counters()[3], 1);
  }

  #[test]
  fn a_lost_link_flushes_and_bypasses() {
    let n = near();
    let s = n.begin("k").unwrap();
    n.on_push(2, PushInfo { kind: PushKind::Disconnection, data: vec![] });
    assert!(served(&n, s), "an older link's disconnection is ignored");
    n.on_push(1, PushInfo { kind: PushKind::Disconnection, data: vec![] });
    assert!(!served(&n, s));
    assert!(n.begin("k").is_none(), "nothing is kept while the link is down");
  }

  #[test]
  fn leaving_redis_mode_flushes() {
    let n = near();
    let s = n.begin("k").unwrap();
    n.set_serving(false);
    assert!(n.begin("k").is_none());
    n.set_serving(true);
    assert!(!served(&n, s), "a value from before the outage came back");
  }

  #[test]
  fn only_a_json_reply_is_marked_and_only_while_the_key_lives() {
    let n = near();
    let s = n.begin("k").unwrap();
    assert!(matches!(n.mark_fill(s, -1, Reply::Json("1".into())), Reply::Filled(_, f) if f.snapshot == s));
    assert_eq!(n.mark_fill(s, -2, Reply::Json("1".into())), Reply::Json("1".into()), "a key gone is not kept");
    assert_eq!(n.mark_fill(s, -1, Reply::Null), Reply::Null);
  }

  #[test]
  fn a_written_value_is_kept_briefly_and_only_by_its_own_bumps() {
    let n = near();
    let set_kind = |kind, json: &str, ttl| Op::Set { key: "k".into(), kind, json: json.into(), ttl };
    let set = |json: &str, ttl| set_kind(0, json, ttl);
    let op = set("1", Duration::from_secs(3600));
    n.forget(b"k");
    let s = n.begin_write(&op, true).unwrap();
    assert!(n.begin_write(&op, false).is_none(), "a mapping's reverse key: the call's reply is the forward key's");
    let applied: Outcome = Ok(Value::Int(1));
    let write = |op: &Op, outcome: &Outcome| n.mark_written(s, op, outcome, Reply::Bool(true));
    let kept = |reply| match reply {
      Reply::Stored(f) if f.snapshot == s => f.ttl_ms,
      other => panic!("not marked: {other:?}"),
    };
    assert_eq!(kept(write(&op, &applied)), WRITE_KEEP.as_millis() as u32);
    assert_eq!(kept(write(&set("1", Duration::from_millis(20)), &applied)), 20, "kept beyond the write's TTL");
    let superseded: Outcome = Ok(Value::Int(crate::scripts::WRITE_SUPERSEDED));
    assert_eq!(write(&op, &superseded), Reply::Bool(true), "Redis holds a newer value");
    assert_eq!(write(&op, &Err("timeout".into())), Reply::Bool(true));
    let envelope = set(&format!("{}1,\"r\":0,\"v\":1}}", crate::envelope::PREFIX), Duration::from_secs(60));
    assert!(n.begin_write(&envelope, true).is_none(), "a plain read answers only an envelope's value");
    let field = set_kind(crate::domain::Kind::AgentConfig as u8, "true", Duration::from_secs(60));
    assert!(n.begin_write(&field, true).is_none(), "its getter answers one field of what is stored");
    // Our own write moves the slot by LOCAL, an announcement by one: JavaScript keeps a
    // written value through exactly one announcement, so the two must never look alike.
    n.forget(b"k");
    assert_eq!(n.begin("k").unwrap().gen.wrapping_sub(s.gen), board::LOCAL);
    push(&n, 1, vec![Value::Array(vec![Value::BulkString(b"k".to_vec())])]);
    assert_eq!(n.begin("k").unwrap().gen.wrapping_sub(s.gen), board::LOCAL + 1);
  }

  #[test]
  fn ttls_cap_what_is_kept_and_a_tenant_clear_flushes() {
    let n = near();
    let s = n.begin("k").unwrap();
    assert_eq!(n.fill(s, -1).unwrap().ttl_ms, 60_000);
    assert_eq!(n.fill(s, 1500).unwrap().ttl_ms, 1500, "kept beyond its Redis TTL");
    assert!(n.fill(s, -2).is_none(), "a key Redis no longer holds is not kept");
    n.invalidate_prefix("p:org:{a}:");
    assert!(!served(&n, s));
  }

  #[test]
  fn an_expired_lease_bypasses_without_flushing() {
    let n = near();
    n.board_for_js(5_000.0);
    let s = n.begin("k").unwrap();
    let lease = n.board.lease();
    // The link was leased an hour and LEASE from its start, a moment before the board was taken at 5 s.
    assert!((3_604_000.0..3_605_100.0).contains(&lease), "lease {lease} not in JavaScript's clock");
    n.lease_until.store(0, Relaxed);
    assert!(!served(&n, s));
    n.renew(1, n.now_ns());
    assert!(served(&n, s));
  }

  #[test]
  fn every_lane_must_be_up_and_a_new_one_bypasses_until_ready() {
    let n = near();
    let far = n.now_ns() + 3_600_000_000_000;
    let s = n.begin("k").unwrap();
    // A second master appears (a replica promoted): not covered yet, so emptied and bypassed.
    let lane_b = n.set_lanes(&["a", "b"]).pop().unwrap();
    assert!(!served(&n, s) && n.begin("k").is_none());
    let b = n.dialing(&lane_b).unwrap();
    n.link_ready(b, far);
    let s = n.begin("k").unwrap();
    assert!(served(&n, s));
    // One lane's link lost: the whole cache, since its keys may be anywhere.
    n.on_push(b, PushInfo { kind: PushKind::Disconnection, data: vec![] });
    assert!(!served(&n, s));
    // A lane that leaves the set (its master gone from the map) no longer counts.
    assert!(n.set_lanes(&["a"]).is_empty());
    assert!(served(&n, n.begin("k").unwrap()));
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
  fn only_a_master_whose_link_is_up_is_tracked() {
    let n = near();
    assert!(n.tracks("a"));
    assert!(!n.tracks("c"), "a master with no lane (added to the cluster, not yet in our slot map)");
    let lane_c = n.set_lanes(&["a", "c"]).pop().unwrap();
    let c = n.dialing(&lane_c).unwrap();
    assert!(!n.tracks("c"), "a lane whose link is still dialling");
    n.link_ready(c, n.now_ns() + 3_600_000_000_000);
    assert!(n.tracks("c"));
  }

  #[test]
  fn the_earliest_lease_rules() {
    let n = near();
    let lane_b = n.set_lanes(&["a", "b"]).pop().unwrap();
    let b = n.dialing(&lane_b).unwrap();
    n.link_ready(b, n.now_ns());
    std::thread::sleep(LEASE + Duration::from_millis(10));
    assert!(!n.active(), "lane b's lease ran out, though lane a's has not");
    n.renew(b, n.now_ns());
    assert!(n.active());
  }

  #[test]
  fn javascript_hits_are_taken_once() {
    let n = near();
    n.board.set_counts([5.0, 1.0, 2.0, 200.0]);
    assert_eq!(n.take_new_hits(), 5);
    assert_eq!(n.take_new_hits(), 0);
    n.board.set_counts([7.0, 1.0, 2.0, 200.0]);
    assert_eq!(n.take_new_hits(), 2);
    assert_eq!(n.usage(), (2, 200));
  }
}
