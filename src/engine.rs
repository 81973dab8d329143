//! The cache: routes each batch of operations to Redis or to the memory tier,
//! keeps the memory tier current, journals writes during outages, replays
//! them afterwards, and keeps the counters.
//!
//! Redis is the source of truth while the breaker is closed. Every write that
//! Redis acknowledged is also written through to the memory tier, so that
//! when Redis fails, reads answer with the last value this adapter wrote (or
//! a miss), never an older one. Writes acknowledged while Redis is
//! unavailable live in the memory tier and in the replay journal.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Pipeline, Value};
use serde_json::{json, Value as Json};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::batch::{unwrap_field, Call, Op, Reply};
use crate::breaker::{CircuitBreaker, State};
use crate::codec;
use crate::config::Config;
use crate::domain::{TtlName, TABLE};
use crate::envelope;
use crate::error::{CacheError, ErrorKind};
use crate::flight::{Join, SingleFlight};
use crate::journal::{Journal, Limits};
use crate::keys::glob_escape;
use crate::keys::KeySpace;
use crate::metrics::Metrics;
use crate::near::{self, Near};
use crate::redact::Secrets;
use crate::replay;
use crate::scripts;
use crate::send_order::SendOrder;
use crate::tags::TagIndex;
use crate::tiers;
use crate::tiers::memory::MemoryTier;
use crate::tiers::redis::{Outcome, RedisTier, Span, Unavailable};
use crate::watch::{self, RedisWatch};

/// Where calls are being answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
  Redis = 0,
  Memory = 1,
}

impl Mode {
  pub fn name(self) -> &'static str {
    match self {
      Mode::Redis => "redis",
      Mode::Memory => "memory",
    }
  }
}

/// Told of every change of mode, with the reason.
pub type ModeObserver = Box<dyn Fn(Mode, &str) + Send + Sync>;

type ReadResult = Result<Option<Arc<str>>, ()>;
type LoadResult = Result<Option<Arc<str>>, CacheError>;
type LoadLead = crate::flight::Lead<String, LoadResult>;

#[derive(Clone)]
pub struct Cache {
  inner: Arc<Inner>,
}

struct Inner {
  cfg: Config,
  keys: KeySpace,
  memory: MemoryTier,
  redis: Option<RedisTier>,
  breaker: CircuitBreaker,
  journal: Journal,
  reads: Arc<SingleFlight<String, ReadResult>>,
  loads: Arc<SingleFlight<String, LoadResult>>,
  metrics: Metrics,
  mode: AtomicU8,
  last_error: Mutex<Option<String>>,
  /// Masked in every reason that leaves the core (see [`Inner::reason`]).
  secrets: Secrets,
  observer: ModeObserver,
  /// Shared with the supervisor, which waits on it holding only a `Weak`.
  wake: Arc<Notify>,
  /// Keeps segments' sends in submission order (see `send_order`).
  send_order: SendOrder,
  closed: AtomicBool,
  /// Times the adapter dialled Redis or probed it after an outage (the old
  /// adapter's `connectionAttempts`).
  connection_attempts: AtomicU64,
  runtime: Handle,
  watch: RedisWatch,
  /// Which entries this instance wrote carry which tags (see `tags`).
  tags: TagIndex,
  /// The near cache (option `nearCache`).
  near: Option<Arc<Near>>,
}

impl Drop for Inner {
  /// An adapter dropped without `close()` (garbage-collected) ends its
  /// supervisor now, not after its current wait.
  fn drop(&mut self) {
    self.wake.notify_one();
  }
}

impl Cache {
  /// Starts the cache; with Redis enabled, connects in the background.
  pub fn new(cfg: Config, runtime: Handle, observer: ModeObserver) -> Cache {
    let breaker = (cfg.breaker_failures, cfg.breaker_cooldown);
    let redis =
      cfg.redis.clone().map(|t| RedisTier::new(t, cfg.pool_size, cfg.command_timeout, cfg.connect_timeout, breaker));
    let near = match (&cfg.near, &cfg.redis) {
      (Some(n), Some(_)) => Some(Near::new(n.clone())),
      _ => None,
    };
    let inner = Arc::new(Inner {
      keys: KeySpace::new(&cfg.key_prefix),
      memory: MemoryTier::new(cfg.memory_max_entries, cfg.memory_max_bytes),
      breaker: CircuitBreaker::new(cfg.breaker_failures, cfg.breaker_cooldown),
      journal: {
        let limits = Limits { max_entries: cfg.replay_max_entries, max_bytes: cfg.replay_max_bytes };
        let prefix = cfg.key_prefix.trim_end_matches(':');
        Journal::new(limits, &format!("{prefix}:"), &format!("{}:*", glob_escape(prefix)))
      },
      reads: SingleFlight::new(),
      loads: SingleFlight::new(),
      metrics: Metrics::default(),
      mode: AtomicU8::new(Mode::Memory as u8),
      last_error: Mutex::new(redis.as_ref().map(|_| "connecting".to_string())),
      secrets: cfg.redis.as_ref().map(Secrets::of).unwrap_or_default(),
      observer,
      wake: Arc::new(Notify::new()),
      send_order: SendOrder::default(),
      closed: AtomicBool::new(false),
      connection_attempts: AtomicU64::new(0),
      runtime: runtime.clone(),
      watch: RedisWatch::default(),
      tags: TagIndex::default(),
      near,
      redis,
      cfg,
    });
    if let Some(near) = &inner.near {
      start_near_links(&inner, near, &runtime);
    }
    if inner.redis.is_some() {
      runtime.spawn(supervise(Arc::downgrade(&inner)));
      if inner.cfg.alerts.enabled {
        let every = inner.cfg.alerts.evaluate_every;
        runtime.spawn(watch::run(Arc::downgrade(&inner), every, Inner::watched, Inner::watch_failed));
      }
    }
    Cache { inner }
  }

  pub fn config(&self) -> &Config {
    &self.inner.cfg
  }

  pub fn keys(&self) -> &KeySpace {
    &self.inner.keys
  }

  pub fn runtime(&self) -> &Handle {
    &self.inner.runtime
  }

  pub fn mode(&self) -> Mode {
    self.inner.mode()
  }

  /// Runs one batch of calls; one reply per call, in order.
  pub async fn execute(&self, calls: Vec<Call>) -> Vec<Reply> {
    let inner = &self.inner;
    let started = Instant::now();
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(calls.len());
    let mut ops: Vec<(usize, Op)> = Vec::with_capacity(calls.len());
    for (i, call) in calls.into_iter().enumerate() {
      match call {
        Ok(call_ops) => {
          replies.push(None);
          ops.extend(call_ops.into_iter().map(|op| (i, op)));
        }
        Err(e) => replies.push(Some(Reply::Error(e))),
      }
    }
    let results = inner.run_ops(&ops).await;
    // A call's reply is its first operation's, unless one of them failed.
    for ((call, _), result) in ops.iter().zip(results) {
      let slot = &mut replies[*call];
      match (&slot, result) {
        (None, r) => *slot = Some(r),
        (Some(Reply::Error(_)), _) => {}
        (Some(_), Reply::Error(e)) => *slot = Some(Reply::Error(e)),
        (Some(_), _) => {}
      }
    }
    let replies: Vec<Reply> = replies.into_iter().map(|r| r.unwrap_or(Reply::Null)).collect();
    let m = &inner.metrics;
    let errors = replies.iter().filter(|r| matches!(r, Reply::Error(_))).count() as u64;
    m.operations.fetch_add(replies.len() as u64, Relaxed);
    m.errors.fetch_add(errors, Relaxed);
    m.record_latency(started.elapsed(), replies.len() as u64);
    replies
  }

  /// Read-through: the cached value of `key`, or the loader's (then cached for
  /// `ttl`). Concurrent callers of one key share one loader call; a loader
  /// failure reaches all of them and caches nothing. `Ok(None)`: the loader
  /// returned `undefined` (not cached). Called after the caller's own read of
  /// `key` missed (and was counted as a miss): the read repeated here, under
  /// the flight, is not counted again.
  pub async fn get_or_load<F, Fut>(&self, key: String, ttl: Duration, loader: F) -> LoadResult
  where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<String>, String>>,
  {
    // Keyed like the writes, which end a load of their key (see `load_as_leader`).
    let lead = match self.inner.loads.join(&self.inner.keys.generic(&key)) {
      Join::Follower(f) => {
        return f
          .wait()
          .await
          .unwrap_or_else(|| Err(CacheError::new(ErrorKind::Loader, "the loader of this key was abandoned")))
      }
      Join::Leader(lead) => lead,
    };
    let result = self.load_as_leader(key, ttl, loader, &lead).await;
    lead.finish(result.clone());
    result
  }

  async fn load_as_leader<F, Fut>(&self, key: String, ttl: Duration, loader: F, lead: &LoadLead) -> LoadResult
  where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<String>, String>>,
  {
    let generic_key = self.inner.keys.generic(&key);
    let m = &self.inner.metrics;
    match self.execute(vec![Ok(vec![Op::Get { key: generic_key.clone(), unwrap: None }])]).await.pop() {
      Some(Reply::Json(json) | Reply::Filled(json, _)) => {
        m.hits.fetch_sub(1, Relaxed);
        return Ok(Some(json));
      }
      Some(Reply::Error(e)) => return Err(e),
      _ => {
        m.misses.fetch_sub(1, Relaxed);
      }
    }
    self.inner.metrics.loader_calls.fetch_add(1, Relaxed);
    let timeout = self.inner.cfg.loader_timeout;
    let json = match tokio::time::timeout(timeout, loader()).await {
      Err(_) => {
        return Err(CacheError::new(
          ErrorKind::Loader,
          format!("loader for {key:?} did not settle within {} ms", timeout.as_millis()),
        ))
      }
      Ok(Err(message)) => return Err(CacheError::new(ErrorKind::Loader, message)),
      Ok(Ok(None)) => return Ok(None),
      Ok(Ok(Some(json))) => Arc::<str>::from(json),
    };
    // A write of the key made while the loader ran is newer than what the
    // loader read: its callers get the loaded value, but it is not stored
    // over that write.
    if !lead.is_current() {
      return Ok(Some(json));
    }
    let set = Op::Set { key: generic_key, kind: 0, json: json.clone(), ttl };
    match self.execute(vec![Ok(vec![set])]).await.pop() {
      Some(Reply::Error(e)) => Err(e),
      _ => Ok(Some(json)),
    }
  }

  /// The tag membership of this instance's entries.
  pub fn tag_index(&self) -> &TagIndex {
    &self.inner.tags
  }

  pub fn memory(&self) -> &MemoryTier {
    &self.inner.memory
  }

  /// Redis, if it is configured and the breaker lets traffic through now.
  pub fn redis_if_up(&self) -> Option<&RedisTier> {
    let inner = &self.inner;
    inner.redis.as_ref().filter(|_| inner.breaker.allows_traffic() && !inner.closed.load(Ordering::Acquire))
  }

  /// Counts a failed round trip against the breaker (for the maintenance
  /// paths outside a batch: tags, locks).
  pub fn redis_failed(&self, e: Unavailable) {
    self.inner.redis_failed(e)
  }

  /// The distributed lock of generic key `key` (see `lock`): `None` when
  /// Redis is not in use now, so the caller loads on its own.
  pub async fn lock_acquire(&self, key: &str, token: &str, ttl: Duration) -> Option<bool> {
    let redis = self.redis_if_up()?;
    let lock_key = format!("{}:lock:{key}", self.inner.keys.prefix());
    match crate::lock::acquire(redis, &lock_key, token, ttl).await {
      Ok(taken) => Some(taken),
      Err(e) => {
        self.redis_failed(e);
        None
      }
    }
  }

  pub async fn lock_release(&self, key: &str, token: &str) -> bool {
    let Some(redis) = self.redis_if_up() else { return false };
    let lock_key = format!("{}:lock:{key}", self.inner.keys.prefix());
    // A failed release is harmless: the lock expires by itself.
    crate::lock::release(redis, &lock_key, token).await.unwrap_or(false)
  }

  /// Synchronous memory-tier access for the process-local fallback maps.
  pub fn memory_get(&self, key: &str) -> Result<Option<Arc<str>>, CacheError> {
    self.inner.memory.get_json(key)
  }

  pub fn memory_set(&self, key: &str, json: Arc<str>, ttl: Duration) {
    self.inner.memory.set(key, json, ttl, u8::MAX)
  }

  /// Ends the background work; later calls fail with a `Closed` error.
  /// With writes journaled, first makes one attempt to replay them, bounded
  /// by [`Cache::close_budget`]. Returns how many writes it could not replay.
  pub async fn close(&self) -> usize {
    let inner = &self.inner;
    let first = !inner.closed.swap(true, Ordering::AcqRel);
    inner.wake.notify_one();
    if let Some(near) = &inner.near {
      near.close();
    }
    if let (true, Some(redis)) = (first, &inner.redis) {
      if !inner.journal.is_empty() {
        inner.last_replay(redis, Instant::now() + self.close_budget()).await;
      }
      redis.disconnect();
    }
    inner.journal.unreplayed()
  }

  /// How long `close` may spend replaying: one connect and four round trips.
  pub fn close_budget(&self) -> Duration {
    self.inner.cfg.connect_timeout + 4 * self.inner.cfg.command_timeout
  }

  pub fn stats(&self) -> Json {
    let inner = &self.inner;
    inner.take_near_hits();
    let m = &inner.metrics;
    let latency = m.latency();
    let (entries, bytes) = inner.memory.usage();
    let counts = inner.memory.count_by_kind();
    let journal = inner.journal.stats();
    let mut maps = serde_json::Map::new();
    for e in TABLE {
      maps.insert(e.label.into(), json!(counts.get(&(e.kind as u8)).copied().unwrap_or(0)));
    }
    maps.insert("generic".into(), json!(counts.get(&0).copied().unwrap_or(0)));
    maps.insert("fallbackMaps".into(), json!(counts.get(&u8::MAX).copied().unwrap_or(0)));
    json!({
      "mode": inner.mode().name(),
      "redisEnabled": inner.redis.is_some(),
      "hits": m.hits.load(Relaxed),
      "misses": m.misses.load(Relaxed),
      "hitRate": m.hit_rate(),
      "operations": m.operations.load(Relaxed),
      "errors": m.errors.load(Relaxed),
      "redisErrors": m.redis_errors.load(Relaxed),
      "servedFromMemory": m.served_from_memory.load(Relaxed),
      "deduplicatedReads": m.deduplicated.load(Relaxed),
      "loaderCalls": m.loader_calls.load(Relaxed),
      "corrupt": m.corrupt.load(Relaxed),
      "latency": { "count": latency.count, "meanMs": latency.mean_ms, "p50Ms": latency.p50_ms, "p99Ms": latency.p99_ms },
      "breaker": {
        "state": if inner.redis.is_some() { inner.breaker.state().name() } else { "disabled" },
        "consecutiveFailures": inner.breaker.consecutive_failures(),
        "threshold": inner.cfg.breaker_failures,
        "cooldownMs": inner.cfg.breaker_cooldown.as_millis() as u64,
      },
      "outages": inner.breaker.opens(),
      "clusterNodesDown": inner.redis.as_ref().filter(|r| r.is_cluster()).map(|r| r.nodes_down()),
      "lastError": *inner.last_error.lock().unwrap(),
      "replay": {
        "pending": journal.pending,
        "tombstones": journal.tombstones,
        "bytes": journal.bytes,
        "maxBytes": inner.cfg.replay_max_bytes,
        "replayed": m.replayed.load(Relaxed),
        "dropped": m.replay_dropped.load(Relaxed) + inner.journal.dropped.load(Relaxed),
        "maxEntries": inner.cfg.replay_max_entries,
      },
      "memory": { "entries": entries, "bytes": bytes, "maxEntries": inner.cfg.memory_max_entries, "maxBytes": inner.memory.max_bytes() },
      "pool": { "size": inner.redis.as_ref().map_or(0, |_| inner.cfg.pool_size), "connections": inner.redis.as_ref().map_or(0, |r| r.connections()) },
      "entriesByKind": maps,
      "inflight": { "reads": inner.reads.in_flight(), "loads": inner.loads.in_flight() },
      "connectionAttempts": inner.connection_attempts.load(Relaxed),
      // The old adapter's `cache.config`, its prefix with the trailing colon it wrote.
      "config": {
        "keyPrefix": legacy_prefix(&inner.cfg.key_prefix),
        "defaultTTL": inner.cfg.default_ttl_secs,
        "compressionThreshold": inner.cfg.compression_threshold,
        "maxValueBytes": inner.cfg.max_value_bytes,
        "loaderTimeoutMs": inner.cfg.loader_timeout.as_millis() as u64,
        "readThrough": {
          "failSafeThrottleMs": inner.cfg.read_through.fail_safe_throttle.as_millis() as u64,
          "distributedLock": inner.cfg.read_through.distributed_lock,
          "lockTtlMs": inner.cfg.read_through.lock_ttl.as_millis() as u64,
          "lockWaitMs": inner.cfg.read_through.lock_wait.as_millis() as u64,
        },
      },
      "taggedSets": inner.tags.len(),
      "redisWatch": inner.redis.as_ref().filter(|_| inner.cfg.alerts.enabled).map(|_| inner.watch.stats()),
      "near": inner.near.as_ref().map_or_else(near::off_stats, |n| {
        let mut stats = n.stats();
        stats["lastError"] = json!(n.last_error().map(|e| inner.secrets.redact(&e)));
        stats
      }),
    })
  }

  /// The board JavaScript's near cache serves hits by (`None`: no near
  /// cache), for a caller whose `performance.now()` reads `js_now_ms`.
  pub fn near_board(&self, js_now_ms: f64) -> Option<Arc<near::Board>> {
    self.inner.near.as_ref().map(|n| n.board_for_js(js_now_ms))
  }

  /// Empties the near cache (a write whose keys could not be told).
  pub fn near_flush(&self) {
    if let Some(near) = &self.inner.near {
      near.flush();
    }
  }

  /// Drops the near cache's copies of what `calls` write, at once, before
  /// they are sent: a read made after a write on this adapter never hits the
  /// value the write replaces.
  pub fn near_forget_writes(&self, calls: &[crate::batch::Call]) {
    if let Some(near) = &self.inner.near {
      calls.iter().flatten().flatten().for_each(|op| forget_write(near, op));
    }
  }

  /// The counters the alert rules sample on every evaluation: atomics and the
  /// journal's figures (one short lock), without the rest of `stats()` (its
  /// memory-tier upkeep, and the JSON an evaluation has no use for).
  pub fn alert_inputs(&self) -> Json {
    let inner = &self.inner;
    inner.take_near_hits();
    let m = &inner.metrics;
    let latency = m.latency();
    let journal = inner.journal.stats();
    json!({
      "redisEnabled": inner.redis.is_some(),
      "hits": m.hits.load(Relaxed),
      "misses": m.misses.load(Relaxed),
      "operations": m.operations.load(Relaxed),
      "errors": m.errors.load(Relaxed),
      "servedFromMemory": m.served_from_memory.load(Relaxed),
      "latencyCount": latency.count,
      "latencySumMs": latency.mean_ms * latency.count as f64,
      // The journal's fill against each of its two bounds (tombstones have their own).
      "replayPending": journal.pending,
      "replayMaxEntries": inner.cfg.replay_max_entries,
      "replayBytes": journal.bytes,
      "replayMaxBytes": inner.cfg.replay_max_bytes,
      "redisWatch": inner.redis.as_ref().filter(|_| inner.cfg.alerts.enabled).map(|_| inner.watch.stats()),
    })
  }

  /// Redis's own health (a `PING` when the breaker lets traffic through).
  pub async fn redis_health(&self) -> Json {
    let inner = &self.inner;
    let Some(redis) = &inner.redis else {
      return json!({ "status": "disabled", "enabled": false });
    };
    if !inner.breaker.allows_traffic() {
      let error = inner.last_error.lock().unwrap().clone().unwrap_or_else(|| "circuit breaker open".into());
      return json!({ "status": "unhealthy", "enabled": true, "connected": false, "error": error, "breaker": inner.breaker.state().name() });
    }
    match redis.ping().await {
      Ok((latency, version)) => json!({
        "status": "healthy",
        "enabled": true,
        "connected": true,
        "latencyMs": latency.as_secs_f64() * 1000.0,
        "version": version,
        "cluster": redis.is_cluster(),
        "usedMemoryBytes": used_memory(redis).await,
      }),
      Err(e) => json!({ "status": "unhealthy", "enabled": true, "connected": false, "error": inner.reason(e) }),
    }
  }

  /// Prometheus text exposition.
  pub fn metrics_text(&self) -> String {
    self.inner.take_near_hits();
    let inner = &self.inner;
    let (entries, bytes) = inner.memory.usage();
    let breaker_state = if inner.redis.is_some() { inner.breaker.state() as u8 as f64 } else { -1.0 };
    let gauges = [
      (
        "cache_mode_redis",
        "1 while serving from Redis, 0 while serving from memory.",
        (inner.mode() == Mode::Redis) as u8 as f64,
      ),
      ("cache_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open, -1 Redis disabled.", breaker_state),
      ("cache_memory_entries", "Entries in the memory tier.", entries as f64),
      ("cache_memory_bytes", "Approximate bytes held by the memory tier.", bytes as f64),
      ("cache_pool_connections", "Open Redis connections.", inner.redis.as_ref().map_or(0, |r| r.connections()) as f64),
      ("cache_replay_pending", "Writes waiting to be replayed to Redis.", inner.journal.len() as f64),
      ("cache_near_entries", "Entries in the near cache.", inner.near.as_ref().map_or(0, |n| n.usage().0) as f64),
    ];
    let [near_hits, near_misses, invalidations, flushes] = inner.near.as_ref().map_or([0; 4], |n| n.counters());
    let counters = [
      ("cache_outages_total", "Times the circuit breaker opened.", inner.breaker.opens()),
      ("cache_near_hits_total", "Reads answered by the near cache, with no round trip.", near_hits),
      ("cache_near_misses_total", "Reads the near cache could not answer.", near_misses),
      ("cache_near_invalidations_total", "Keys invalidated by Redis's tracking pushes.", invalidations),
      ("cache_near_flushes_total", "Times the near cache was emptied (link lost, breaker open, FLUSHALL).", flushes),
    ];
    inner.metrics.prometheus(&counters, &gauges)
  }

  /// Names and seconds of the TTL table in force.
  pub fn ttl_config(&self) -> Json {
    let mut map = serde_json::Map::new();
    for t in TtlName::ALL {
      map.insert(t.name().into(), json!(self.inner.cfg.ttl(t)));
    }
    Json::Object(map)
  }
}

impl Inner {
  /// Adds the hits JavaScript's near cache served since the last call to the
  /// adapter's hits and operations, before anything reads them.
  fn take_near_hits(&self) {
    if let Some(near) = &self.near {
      let hits = near.take_new_hits();
      self.metrics.hits.fetch_add(hits, Relaxed);
      self.metrics.operations.fetch_add(hits, Relaxed);
    }
  }

  fn mode(&self) -> Mode {
    if self.mode.load(Relaxed) == Mode::Redis as u8 {
      Mode::Redis
    } else {
      Mode::Memory
    }
  }

  fn set_mode(&self, mode: Mode, reason: &str) {
    if let Some(near) = &self.near {
      near.set_serving(mode == Mode::Redis);
    }
    if self.mode.swap(mode as u8, Relaxed) != mode as u8 {
      (self.observer)(mode, reason);
    }
  }

  /// Why Redis is unavailable, as `lastError`, health and `modeChange` may
  /// tell it: Redis and TLS errors can quote connection details.
  fn reason(&self, Unavailable(error): Unavailable) -> String {
    self.secrets.redact(&error)
  }

  fn redis_failed(&self, e: Unavailable) {
    let error = self.reason(e);
    self.metrics.redis_errors.fetch_add(1, Relaxed);
    *self.last_error.lock().unwrap() = Some(error.clone());
    if self.breaker.record_failure() {
      self.set_mode(Mode::Memory, &error);
      self.wake.notify_one();
    }
  }

  /// A round trip begun at `started` failed; round trips failing in one
  /// stall count once against the breaker.
  fn redis_stalled(&self, Unavailable(error): &Unavailable, started: Instant) {
    self.metrics.redis_errors.fetch_add(1, Relaxed);
    *self.last_error.lock().unwrap() = Some(error.clone());
    if self.breaker.record_failure_of(started) {
      self.set_mode(Mode::Memory, error);
      self.wake.notify_one();
    }
  }

  /// A cluster master failed while others serve: counted and reported, but
  /// the adapter's breaker (all of Redis) stays as it is.
  fn node_failed(&self, Unavailable(error): &Unavailable) {
    self.metrics.redis_errors.fetch_add(1, Relaxed);
    *self.last_error.lock().unwrap() = Some(self.secrets.redact(error));
  }

  /// What the background watch of Redis needs; `None` once closed.
  fn watched(&self) -> Option<(&RedisTier, &RedisWatch)> {
    if self.closed.load(Ordering::Acquire) {
      return None;
    }
    Some((self.redis.as_ref()?, &self.watch))
  }

  /// A failed watch check counts toward the breaker while it is closed: an
  /// idle adapter then switches to memory before a caller pays a timeout.
  /// While it is open, the supervisor's probes alone decide.
  fn watch_failed(&self, e: Unavailable) {
    if self.breaker.allows_traffic() {
      self.redis_failed(e);
    }
  }

  /// Runs the batch's operations in call order: a tenant clear is a barrier,
  /// so what came before it is cleared and what came after it survives.
  async fn run_ops(&self, ops: &[(usize, Op)]) -> Vec<Reply> {
    let mut out = Vec::with_capacity(ops.len());
    let mut start = 0;
    while start < ops.len() {
      let end =
        ops[start..].iter().position(|(_, op)| matches!(op, Op::ClearOrg { .. })).map_or(ops.len(), |i| start + i);
      if end > start {
        out.extend(self.run_segment(&ops[start..end]).await);
      }
      if end < ops.len() {
        out.extend(self.run_segment(&ops[end..end + 1]).await);
      }
      start = end + 1;
    }
    out
  }

  /// Runs operations of which at most one, alone, is a tenant clear.
  async fn run_segment(&self, ops: &[(usize, Op)]) -> Vec<Reply> {
    // Taken before anything can wait, so sends keep the submission order.
    let mut ticket = self.send_order.ticket();
    if self.closed.load(Ordering::Acquire) {
      return ops
        .iter()
        .map(|_| Reply::Error(CacheError::new(ErrorKind::Closed, "the cache adapter is closed")))
        .collect();
    }
    let Some(redis) = self.redis.as_ref() else {
      return ops.iter().map(|(_, op)| self.in_memory(op, false)).collect();
    };
    if !self.breaker.allows_traffic() {
      self.metrics.served_from_memory.fetch_add(ops.len() as u64, Relaxed);
      return ops.iter().map(|(_, op)| self.in_memory(op, true)).collect();
    }

    let mut out: Vec<Option<Reply>> = vec![None; ops.len()];
    let mut cmds = Pipeline::with_capacity(ops.len());
    // (op index, read lead if any), one per span
    let mut sent = Vec::with_capacity(ops.len());
    let mut spans = Vec::with_capacity(ops.len());
    let mut followers = Vec::new();
    let mut clears = Vec::new();
    let now_ms = now_ms();
    let mut encoded = encode_values(ops, self.cfg.compression_threshold, now_ms).await.into_iter();
    ticket.turn().await;
    for (i, (call, op)) in ops.iter().enumerate() {
      let encoded = encoded.next().flatten();
      let mut written = None;
      if let (Some(near), true) = (&self.near, op.is_write()) {
        forget_write(near, op);
        // Taken after the write's own bump; a call's first write is the one its reply stands for.
        written = near.begin_write(op, i == 0 || ops[i - 1].0 != *call);
      }
      if matches!(op, Op::ClearOrg { .. }) {
        clears.push(i);
        continue;
      }
      // Keys with writes waiting for replay are answered (and written) from
      // memory until the replay has written them back, in order.
      if self.journal.touches(op.key()) {
        out[i] = Some(self.in_memory(op, true));
        continue;
      }
      let lead = match op {
        Op::Get { key, .. } => match self.reads.join(key) {
          Join::Leader(lead) => Some(lead),
          Join::Follower(f) => {
            self.metrics.deduplicated.fetch_add(1, Relaxed);
            followers.push((i, f));
            continue;
          }
        },
        _ => {
          if op.is_write() {
            self.key_written(op.key());
          }
          None
        }
      };
      let first = cmds.len();
      tiers::redis::push_op(op, &mut cmds, encoded, self.cfg.compression_threshold, now_ms);
      // A read that may fill the near cache asks for the key's TTL too.
      let fill = if lead.is_some() { self.near.as_ref().and_then(|n| n.begin(op.key())) } else { None };
      if fill.is_some() {
        cmds.cmd("PTTL").arg(op.key());
      }
      // An increment run twice counts twice: never re-sent.
      spans.push(Span { key: op.key(), commands: cmds.len() - first, retry: !matches!(op, Op::Increment { .. }) });
      sent.push((i, lead, fill, written));
    }

    if cmds.is_empty() {
      ticket.release();
    } else {
      // Each connection's share succeeds or fails alone: only the operations
      // of a failed connection go to memory (and the journal).
      let started = Instant::now();
      let run = redis.run(&cmds, &spans);
      tokio::pin!(run);
      // The first poll puts the commands on their connections; from then on
      // a later segment may send.
      let polled = futures::poll!(run.as_mut());
      ticket.release();
      let replies = match polled {
        std::task::Poll::Ready(replies) => replies,
        std::task::Poll::Pending => run.await,
      };
      match replies.failure() {
        None => self.breaker.record_success(),
        // On a cluster with masters up, the failing master's breaker counted it.
        Some(e) if redis.isolates_failures() => self.node_failed(e),
        Some(e) => self.redis_stalled(e, started),
      }
      for (j, (i, lead, fill, written)) in sent.into_iter().enumerate() {
        let op = &ops[i].1;
        match replies.span(j) {
          Ok(outcomes) => {
            let (mut reply, read) = self.apply(op, outcomes);
            // JavaScript's near cache keeps the reply as its caller got it (or a write's
            // value), with the snapshot, if the server that answered announces its writes to us.
            let tracked = || self.near.as_ref().filter(|n| replies.answered_by(j).is_none_or(|node| n.tracks(node)));
            if let (Some(snapshot), Ok(Some(_)), Some(Ok(pttl))) = (fill, &read, outcomes.get(1)) {
              if let Some(near) = tracked() {
                reply = near.mark_fill(snapshot, redis::from_redis_value_ref::<i64>(pttl).unwrap_or(-2), reply);
              }
            }
            if let (Some(snapshot), Some(near)) = (written, tracked()) {
              reply = near.mark_written(snapshot, op, &outcomes[0], reply);
            }
            if let Some(lead) = lead {
              lead.finish(read);
            }
            out[i] = Some(reply);
          }
          Err(_) => {
            drop(lead);
            self.metrics.served_from_memory.fetch_add(1, Relaxed);
            out[i] = Some(self.in_memory(op, true));
          }
        }
      }
    }
    for (i, follow) in followers {
      out[i] = Some(match (&ops[i].1, follow.wait().await) {
        (Op::Get { unwrap, .. }, Some(Ok(json))) => self.read_reply(json, *unwrap),
        (op, _) => self.in_memory(op, true),
      });
    }
    if !clears.is_empty() {
      // A clear applies to every call made before it: their writes must have
      // landed before its SCAN looks (a later segment may already be sending).
      ticket.earlier_finished().await;
    }
    for i in clears {
      out[i] = Some(self.clear_org(redis, &ops[i].1).await);
    }
    out.into_iter().map(|r| r.unwrap_or(Reply::Null)).collect()
  }

  fn index_tags(&self, key: &str, tag_keys: &[String]) {
    let bound = self.cfg.memory_max_entries as usize;
    self.tags.add(key, tag_keys, bound, |k| self.memory.exists(k));
  }

  /// A write of `key` was sent or acknowledged: a read or a load of it that
  /// started before may return its older value to those who asked before,
  /// but nobody joins it from now on, and a load does not store its result.
  fn key_written(&self, key: &str) {
    let key = key.to_string();
    self.reads.forget(&key);
    self.loads.forget(&key);
  }

  fn read_reply(&self, json: Option<Arc<str>>, unwrap: Option<&'static str>) -> Reply {
    match json {
      Some(json) => {
        self.metrics.hits.fetch_add(1, Relaxed);
        Reply::Json(shape_read(json, unwrap))
      }
      None => {
        self.metrics.misses.fetch_add(1, Relaxed);
        Reply::Null
      }
    }
  }

  /// A stored value (or nil) as JSON text; bytes that do not decode (neither
  /// our format nor the old adapter's JSON) are counted and read as a miss.
  fn stored_value(&self, value: &Value) -> Result<Option<Arc<str>>, CacheError> {
    let bytes = match value {
      Value::Nil => return Ok(None),
      Value::BulkString(bytes) => bytes.as_slice(),
      Value::SimpleString(s) => s.as_bytes(),
      other => return Err(CacheError::new(ErrorKind::Internal, format!("unexpected reply {other:?}"))),
    };
    match codec::decode(bytes) {
      Ok(json) => Ok(Some(json)),
      Err(_) => {
        self.metrics.corrupt.fetch_add(1, Relaxed);
        Ok(None)
      }
    }
  }

  /// Turns Redis's answers to one operation into its reply, writing the
  /// acknowledged change through to the memory tier. Also returns a read's
  /// decoded value for the callers that shared it.
  fn apply(&self, op: &Op, outcomes: &[Outcome]) -> (Reply, ReadResult) {
    let value = match &outcomes[0] {
      Ok(v) => v,
      Err(e) => return (Reply::Error(CacheError::new(ErrorKind::Command, e.clone())), Err(())),
    };
    let int = |v: &Value| redis::from_redis_value_ref::<i64>(v).unwrap_or(0);
    let m = &self.memory;
    if op.is_write() {
      // Acknowledged: a read that starts from now on must not join one that
      // Redis may have run before this write.
      self.key_written(op.key());
    }
    // The memory tier follows Redis, except where it must not: a write
    // journaled since this one was sent is newer and stays; a write Redis
    // refused as older than what it holds (`WRITE_SUPERSEDED`) leaves
    // nothing in memory rather than our older value.
    let follow = !(op.is_write() && self.journal.touches(op.key()));
    let superseded = int(value) == scripts::WRITE_SUPERSEDED;
    let reply = match op {
      Op::Get { unwrap, .. } => {
        let json = match self.stored_value(value) {
          Ok(json) => json,
          Err(e) => return (Reply::Error(e), Err(())),
        };
        return (self.read_reply(json.clone(), *unwrap), Ok(json));
      }
      Op::Set { key, kind, json, ttl } => {
        if follow && superseded {
          m.delete(key);
        } else if follow {
          m.set(key, json.clone(), *ttl, *kind);
        }
        Reply::Bool(true)
      }
      Op::Delete { key } => {
        if follow {
          m.delete(key);
        }
        Reply::Bool(int(value) > 0)
      }
      Op::Exists { .. } => Reply::Bool(int(value) > 0),
      Op::Expire { key, ttl } => {
        let found = int(value) > 0;
        if follow && found {
          m.expire(key, *ttl);
        } else if follow {
          m.delete(key);
        }
        Reply::Bool(found)
      }
      Op::Increment { key, kind, ttl, .. } => {
        let n = int(value);
        if follow {
          m.set(key, n.to_string().into(), *ttl, *kind);
        }
        Reply::Int(n)
      }
      Op::HGet { .. } => match self.stored_value(value) {
        Ok(json) => self.read_reply(json, None),
        Err(e) => Reply::Error(e),
      },
      Op::HSet { key, kind, field, json, ttl } => {
        if follow && superseded {
          let _ = m.hdel(key, field);
        } else if follow {
          let _ = m.hset(key, field, json.clone(), *ttl, *kind);
        }
        Reply::Bool(true)
      }
      Op::HDel { key, field } => {
        if follow {
          let _ = m.hdel(key, field);
        }
        Reply::Bool(int(value) > 0)
      }
      Op::HGetAll { .. } => match redis::from_redis_value_ref::<Vec<(Vec<u8>, Vec<u8>)>>(value) {
        Ok(pairs) => {
          let mut fields = Vec::with_capacity(pairs.len());
          for (f, v) in pairs {
            // A corrupt field is left out, as a miss of that field.
            match codec::decode(&v) {
              Ok(json) => fields.push((String::from_utf8_lossy(&f).into_owned(), json)),
              Err(_) => {
                self.metrics.corrupt.fetch_add(1, Relaxed);
              }
            }
          }
          Reply::Json(object_json(&fields))
        }
        Err(e) => Reply::Error(CacheError::new(ErrorKind::Internal, e.to_string())),
      },
      Op::ClearOrg { .. } => unreachable!("clears do not go through the pipeline"),
      Op::Tag { key, tag_keys, .. } => {
        self.index_tags(key, tag_keys);
        Reply::Bool(true)
      }
    };
    // Secondary commands (the expiry of a hash or counter) must not fail silently.
    if let Some(Err(e)) = outcomes.get(1) {
      return (Reply::Error(CacheError::new(ErrorKind::Command, e.clone())), Err(()));
    }
    (reply, Err(()))
  }

  /// Answers one operation from the memory tier; with `journal`, records
  /// writes for replay (Redis is configured but unavailable).
  fn in_memory(&self, op: &Op, journal: bool) -> Reply {
    if op.is_write() {
      self.key_written(op.key());
    }
    let m = &self.memory;
    let at = now_ms();
    let result: Result<Reply, CacheError> = (|| {
      Ok(match op {
        Op::Get { key, unwrap } => {
          let json = match self.journal.read(key) {
            Some(journaled) => journaled,
            None => m.get_json(key)?,
          };
          self.read_reply(json, *unwrap)
        }
        Op::Set { key, kind, json, ttl } => {
          m.set(key, json.clone(), *ttl, *kind);
          Reply::Bool(true)
        }
        Op::Delete { key } => Reply::Bool(m.delete(key)),
        Op::Exists { key } => Reply::Bool(m.exists(key)),
        Op::Expire { key, ttl } => Reply::Bool(m.expire(key, *ttl)),
        Op::Increment { key, kind, by, ttl } => Reply::Int(m.increment(key, *by, *ttl, *kind)?),
        Op::HGet { key, field } => self.read_reply(m.hget(key, field)?, None),
        Op::HSet { key, kind, field, json, ttl } => {
          m.hset(key, field, json.clone(), *ttl, *kind)?;
          Reply::Bool(true)
        }
        Op::HDel { key, field } => Reply::Bool(m.hdel(key, field)?),
        Op::HGetAll { key } => Reply::Json(object_json(&m.hgetall(key)?)),
        Op::ClearOrg { scope, pattern } => {
          let n = m.clear_prefix(scope);
          self.reads.forget_prefix(scope);
          self.loads.forget_prefix(scope);
          self.loads.forget_prefix(scope);
          if journal {
            self.journal.record_clear(scope, pattern, at);
          }
          Reply::Int(n as i64)
        }
        Op::Tag { key, tag_keys, ttl } => {
          self.index_tags(key, tag_keys);
          if journal {
            self.journal.record_tags(key, tag_keys, *ttl, at);
          }
          Reply::Bool(true)
        }
      })
    })();
    // The journal keeps what the memory tier now holds, for the replay
    // (an expire only when the key was there).
    if journal
      && op.is_write()
      && matches!(&result, Ok(r) if !matches!(op, Op::Expire { .. }) || *r == Reply::Bool(true))
    {
      self.journal.record_write(op, m, at);
    }
    result.unwrap_or_else(Reply::Error)
  }

  /// Writes the journal back to Redis; a failure counts against the breaker.
  /// Returns false if Redis failed it (the rest stays journaled).
  async fn replay(&self, redis: &RedisTier) -> bool {
    let keep_going = || self.breaker.allows_traffic() && !self.closed.load(Ordering::Acquire);
    match self.write_back(redis, keep_going).await {
      Ok(()) => true,
      Err(e) if redis.isolates_failures() => {
        self.node_failed(&e);
        false
      }
      Err(e) => {
        self.redis_failed(e);
        false
      }
    }
  }

  async fn write_back(&self, redis: &RedisTier, keep_going: impl Fn() -> bool) -> Result<(), Unavailable> {
    let written = replay::write_back(&self.journal, redis, self.cfg.compression_threshold, keep_going).await;
    self.metrics.replayed.fetch_add(written.replayed, Relaxed);
    self.metrics.replay_dropped.fetch_add(written.refused, Relaxed);
    written.outcome
  }

  /// `close`'s one attempt: probes Redis if the breaker is not closed, then
  /// replays until `deadline` (each round trip bounded by the command timeout).
  async fn last_replay(&self, redis: &RedisTier, deadline: Instant) {
    if !self.breaker.allows_traffic() {
      let left = deadline.saturating_duration_since(Instant::now());
      if !matches!(tokio::time::timeout(left, probe(redis)).await, Ok(Ok(()))) {
        return;
      }
    }
    // Bounded in count too: a round that replays nothing (another replay
    // holds the entries) waits a little rather than spinning.
    for _ in 0..10_000 {
      if self.journal.is_empty() || Instant::now() >= deadline {
        return;
      }
      let before = self.journal.len();
      if self.write_back(redis, || Instant::now() < deadline).await.is_err() {
        return;
      }
      if self.journal.len() >= before {
        tokio::time::sleep(Duration::from_millis(5)).await;
      }
    }
  }

  async fn clear_org(&self, redis: &RedisTier, op: &Op) -> Reply {
    let Op::ClearOrg { scope, pattern } = op else { unreachable!() };
    if !self.breaker.allows_traffic() {
      self.metrics.served_from_memory.fetch_add(1, Relaxed);
      return self.in_memory(op, true);
    }
    match redis.scan_unlink(pattern, scope).await {
      Ok(n) => {
        self.memory.clear_prefix(scope);
        self.reads.forget_prefix(scope);
        self.loads.forget_prefix(scope);
        self.journal.void_scope(scope);
        Reply::Int(n as i64)
      }
      // The memory path clears memory too, and journals the clear for replay.
      Err(e) => {
        self.redis_failed(e);
        self.in_memory(op, true)
      }
    }
  }
}

/// Starts the near cache's invalidation links, each its own RESP3 connection
/// (never one of the pool's): one to the server or to the master Sentinel
/// names, or one per master of a cluster, following its slot map. A target
/// that makes no client leaves the near cache bypassed.
fn start_near_links(inner: &Arc<Inner>, near: &Arc<Near>, runtime: &Handle) {
  let Some(target) = inner.cfg.redis.as_ref() else { return };
  let (prefix, timeout) = (format!("{}:", inner.keys.prefix()), inner.cfg.connect_timeout);
  match tiers::redis::push_dialer(target) {
    Some(Ok(dialer)) => {
      let lane = near.set_lanes(&["redis"]).pop().expect("a new near cache has no lane yet");
      runtime.spawn(near::run_link(Arc::downgrade(near), lane, Arc::new(dialer), prefix, timeout));
    }
    Some(Err(_)) => {}
    None => {
      let (masters_of, client_of) = (Arc::downgrade(inner), Arc::downgrade(inner));
      let masters = move || masters_of.upgrade().and_then(|i| i.redis.as_ref().map(|r| r.masters()));
      let client_for = move |node: &str| {
        let inner = client_of.upgrade().ok_or("the adapter is gone")?;
        inner.redis.as_ref().ok_or("Redis is disabled")?.node_push_client(node)
      };
      runtime.spawn(near::run_lanes(Arc::downgrade(near), masters, client_for, prefix, timeout));
    }
  }
}

/// Drops the near cache's copy of what `op` writes (a clear: every key of its scope).
fn forget_write(near: &Near, op: &Op) {
  match op {
    Op::ClearOrg { scope, .. } => near.invalidate_prefix(scope),
    op if op.is_write() => near.forget(op.key().as_bytes()),
    _ => {}
  }
}

/// Values whose JSON adds up to more than this in one segment are encoded
/// (compressed) on tokio's blocking pool. On the I/O thread, which also reads
/// the sockets and runs the timers, a burst of large values made replies that
/// had arrived wait behind the compression until their commands timed out
/// while Redis was healthy. At the 168-247 MB/s measured for zstd level 1 on
/// the benchmark's conversations, 64 KB is at most about 0.3 ms of the I/O
/// thread per segment; a hand-off to the pool and back costs tens of µs, too
/// much for the small values of most calls.
const OFFLOAD_BYTES: usize = 64 * 1024;

/// The encoded value of each write in `ops` (in order; `None` for other ops,
/// and for all of them when the segment is small: then `push_op` encodes).
async fn encode_values(ops: &[(usize, Op)], threshold: usize, now_ms: u64) -> Vec<Option<Vec<u8>>> {
  let total: usize = ops.iter().filter_map(|(_, op)| op.value()).map(|json| json.len()).sum();
  if total <= OFFLOAD_BYTES {
    return Vec::new();
  }
  let values: Vec<Option<Arc<str>>> = ops.iter().map(|(_, op)| op.value().cloned()).collect();
  let encode = move || values.iter().map(|v| v.as_ref().map(|json| codec::encode(json, threshold, now_ms))).collect();
  // A failed hand-off (the runtime shutting down) falls back to encoding in place.
  tokio::task::spawn_blocking(encode).await.unwrap_or_default()
}

/// What a read returns of a stored value: the read-through reads its
/// envelope as stored; a domain getter, its field; every other read, the bare value.
pub fn shape_read(json: Arc<str>, unwrap: Option<&'static str>) -> Arc<str> {
  match unwrap {
    Some(envelope::RAW) => json,
    Some(field) => unwrap_field(&json, field),
    None => envelope::value_of(json),
  }
}

/// `{"field": <json>, ...}` from fields whose values are JSON text already.
fn object_json(fields: &[(String, Arc<str>)]) -> Arc<str> {
  let mut out = String::from("{");
  for (i, (f, v)) in fields.iter().enumerate() {
    if i > 0 {
      out.push(',');
    }
    out.push_str(&serde_json::to_string(f).expect("a string always serialises"));
    out.push(':');
    out.push_str(v);
  }
  out.push('}');
  out.into()
}

/// `keyPrefix` as the old adapter wrote it, ending in `:` (`jack:dev:`).
fn legacy_prefix(prefix: &str) -> String {
  if prefix.ends_with(':') {
    prefix.to_string()
  } else {
    format!("{prefix}:")
  }
}

/// `used_memory` from `INFO memory` (the old adapter's health `memory`), if Redis says.
async fn used_memory(redis: &RedisTier) -> Option<u64> {
  let mut info = redis::cmd("INFO");
  info.arg("memory");
  let text = redis::from_redis_value::<String>(redis.run_one(info).await.ok()?).ok()?;
  text.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok())
}

fn now_ms() -> u64 {
  SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Background work while Redis is enabled: connect, probe after each cooldown
/// of the breaker, and replay the journal once Redis answers. It holds the
/// cache only while it works, never while it waits, so a cache dropped without
/// `close()` is freed at once and its supervisor ends.
async fn supervise(weak: Weak<Inner>) {
  loop {
    let Some(inner) = weak.upgrade() else { return };
    if inner.closed.load(Ordering::Acquire) {
      return;
    }
    let redis = inner.redis.as_ref().expect("supervised caches have Redis");
    let wait = match inner.breaker.state() {
      State::Closed => {
        redis.tend().await;
        if inner.journal.is_empty() {
          Duration::from_millis(500)
        } else if inner.replay(redis).await {
          continue;
        } else {
          // Redis answers but refuses the writes (out of memory, loading...):
          // try again later rather than in a tight loop.
          inner.cfg.breaker_cooldown.min(Duration::from_secs(1))
        }
      }
      State::Open | State::HalfOpen => {
        if inner.breaker.try_begin_probe() {
          inner.connection_attempts.fetch_add(1, Relaxed);
          match probe(redis).await {
            Ok(()) => {
              inner.breaker.record_probe_success();
              *inner.last_error.lock().unwrap() = None;
              inner.set_mode(Mode::Redis, "redis answered the probe");
            }
            Err(e) => {
              inner.breaker.record_failure();
              *inner.last_error.lock().unwrap() = Some(inner.reason(e));
            }
          }
          continue;
        }
        inner.breaker.until_probe().max(Duration::from_millis(5))
      }
    };
    let wake = inner.wake.clone();
    drop(inner);
    let _ = tokio::time::timeout(wait, wake.notified()).await;
  }
}

/// [`RedisTier::probe`] (a fresh connection's `PING`), with a panic (say, in
/// a TLS library) counted as a failed probe rather than ending the
/// supervision for good.
async fn probe(redis: &RedisTier) -> Result<(), Unavailable> {
  use futures::FutureExt;
  std::panic::AssertUnwindSafe(redis.probe()).catch_unwind().await.unwrap_or_else(|panic| {
    let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
    Err(Unavailable(format!("connecting panicked: {}", why.unwrap_or_else(|| "unknown panic".into()))))
  })
}

#[cfg(test)]
mod tests {
  use super::*;

  /// A cache dropped without `close()` (what a garbage-collected adapter is)
  /// while its breaker waits out a long cooldown is freed at once, and its
  /// supervisor ends, instead of both living on until the cooldown is over.
  #[tokio::test]
  async fn a_dropped_cache_is_freed_while_its_supervisor_waits() {
    // Nothing listens on port 1: the first probe fails and the breaker stays open for a minute.
    let options = json!({ "url": "redis://127.0.0.1:1", "breakerCooldownMs": 60_000, "connectTimeoutMs": 100 });
    let cfg = crate::config::resolve(&options, &|_| None).expect("valid options");
    let cache = Cache::new(cfg, Handle::current(), Box::new(|_, _| {}));
    let failed = |c: &Cache| c.inner.last_error.lock().unwrap().as_deref().is_some_and(|e| e != "connecting");
    for _ in 0..200 {
      if failed(&cache) && cache.inner.breaker.state() == State::Open {
        break;
      }
      tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(failed(&cache), "the first probe of a dead port fails within 5 s");
    assert_eq!(cache.inner.connection_attempts.load(Relaxed), 1);

    let inner = Arc::downgrade(&cache.inner);
    let wake = cache.inner.wake.clone();
    drop(cache);
    for _ in 0..40 {
      if Arc::strong_count(&wake) == 1 {
        break;
      }
      tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(inner.upgrade().is_none(), "the supervisor kept the dropped cache alive");
    assert_eq!(Arc::strong_count(&wake), 1, "the supervisor is still waiting");
  }
}
