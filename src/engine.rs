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
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering, Ordering::Relaxed};
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
use crate::error::{CacheError, ErrorKind};
use crate::flight::{Join, SingleFlight};
use crate::keys::KeySpace;
use crate::metrics::Metrics;
use crate::replay::{self, Clear, Journal, Pending, Slot};
use crate::tiers;
use crate::tiers::memory::{MemValue, MemoryTier};
use crate::tiers::redis::{Outcome, RedisTier, Unavailable};
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
  observer: ModeObserver,
  wake: Notify,
  closed: AtomicBool,
  runtime: Handle,
  watch: RedisWatch,
}

impl Cache {
  /// Starts the cache; with Redis enabled, connects in the background.
  pub fn new(cfg: Config, runtime: Handle, observer: ModeObserver) -> Cache {
    let redis = cfg.redis.clone().map(|t| RedisTier::new(t, cfg.pool_size, cfg.command_timeout, cfg.connect_timeout));
    let inner = Arc::new(Inner {
      keys: KeySpace::new(&cfg.key_prefix),
      memory: MemoryTier::new(cfg.memory_max_entries, cfg.memory_max_bytes),
      breaker: CircuitBreaker::new(cfg.breaker_failures, cfg.breaker_cooldown),
      journal: Journal::new(cfg.replay_max_entries),
      reads: SingleFlight::new(),
      loads: SingleFlight::new(),
      metrics: Metrics::default(),
      mode: AtomicU8::new(Mode::Memory as u8),
      last_error: Mutex::new(redis.as_ref().map(|_| "connecting".to_string())),
      observer,
      wake: Notify::new(),
      closed: AtomicBool::new(false),
      runtime: runtime.clone(),
      watch: RedisWatch::default(),
      redis,
      cfg,
    });
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
  /// returned `undefined` (not cached).
  pub async fn get_or_load<F, Fut>(&self, key: String, ttl: Duration, loader: F) -> LoadResult
  where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<String>, String>>,
  {
    let lead = match self.inner.loads.join(&key) {
      Join::Follower(f) => {
        return f
          .wait()
          .await
          .unwrap_or_else(|| Err(CacheError::new(ErrorKind::Loader, "the loader of this key was abandoned")))
      }
      Join::Leader(lead) => lead,
    };
    let result = self.load_as_leader(key, ttl, loader).await;
    lead.finish(result.clone());
    result
  }

  async fn load_as_leader<F, Fut>(&self, key: String, ttl: Duration, loader: F) -> LoadResult
  where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<String>, String>>,
  {
    let generic_key = self.inner.keys.generic(&key);
    match self.execute(vec![Ok(vec![Op::Get { key: generic_key.clone(), unwrap: None }])]).await.pop() {
      Some(Reply::Json(json)) => return Ok(Some(json)),
      Some(Reply::Error(e)) => return Err(e),
      _ => {}
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
    let set = Op::Set { key: generic_key, kind: 0, json: json.clone(), ttl };
    match self.execute(vec![Ok(vec![set])]).await.pop() {
      Some(Reply::Error(e)) => Err(e),
      _ => Ok(Some(json)),
    }
  }

  /// Synchronous memory-tier access for the process-local fallback maps.
  pub fn memory_get(&self, key: &str) -> Result<Option<Arc<str>>, CacheError> {
    self.inner.memory.get_json(key)
  }

  pub fn memory_set(&self, key: &str, json: Arc<str>, ttl: Duration) {
    self.inner.memory.set(key, json, ttl, u8::MAX)
  }

  /// Ends the background work; later calls fail with a `Closed` error.
  pub fn close(&self) {
    self.inner.closed.store(true, Ordering::Release);
    self.inner.wake.notify_one();
    if let Some(redis) = &self.inner.redis {
      redis.disconnect();
    }
  }

  pub fn stats(&self) -> Json {
    let inner = &self.inner;
    let m = &inner.metrics;
    let latency = m.latency();
    let (entries, bytes) = inner.memory.usage();
    let counts = inner.memory.count_by_kind();
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
      "latency": { "count": latency.count, "meanMs": latency.mean_ms, "p50Ms": latency.p50_ms, "p99Ms": latency.p99_ms },
      "breaker": {
        "state": if inner.redis.is_some() { inner.breaker.state().name() } else { "disabled" },
        "consecutiveFailures": inner.breaker.consecutive_failures(),
        "threshold": inner.cfg.breaker_failures,
        "cooldownMs": inner.cfg.breaker_cooldown.as_millis() as u64,
      },
      "outages": inner.breaker.opens(),
      "lastError": *inner.last_error.lock().unwrap(),
      "replay": {
        "pending": inner.journal.len(),
        "replayed": m.replayed.load(Relaxed),
        "dropped": m.replay_dropped.load(Relaxed) + inner.journal.dropped.load(Relaxed),
        "maxEntries": inner.cfg.replay_max_entries,
      },
      "memory": { "entries": entries, "bytes": bytes, "maxEntries": inner.cfg.memory_max_entries, "maxBytes": inner.memory.max_bytes() },
      "pool": { "size": inner.redis.as_ref().map_or(0, |_| inner.cfg.pool_size), "connections": inner.redis.as_ref().map_or(0, |r| r.connections()) },
      "entriesByKind": maps,
      "redisWatch": inner.redis.as_ref().filter(|_| inner.cfg.alerts.enabled).map(|_| inner.watch.stats()),
    })
  }

  /// The counters the alert rules sample on every evaluation: atomics only,
  /// unlike `stats()`, which walks the memory tier.
  pub fn alert_inputs(&self) -> Json {
    let inner = &self.inner;
    let m = &inner.metrics;
    let latency = m.latency();
    json!({
      "redisEnabled": inner.redis.is_some(),
      "hits": m.hits.load(Relaxed),
      "misses": m.misses.load(Relaxed),
      "operations": m.operations.load(Relaxed),
      "errors": m.errors.load(Relaxed),
      "servedFromMemory": m.served_from_memory.load(Relaxed),
      "latencyCount": latency.count,
      "latencySumMs": latency.mean_ms * latency.count as f64,
      "replayPending": inner.journal.len(),
      "replayMaxEntries": inner.cfg.replay_max_entries,
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
      }),
      Err(Unavailable(error)) => json!({ "status": "unhealthy", "enabled": true, "connected": false, "error": error }),
    }
  }

  /// Prometheus text exposition.
  pub fn metrics_text(&self) -> String {
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
    ];
    let counters = [("cache_outages_total", "Times the circuit breaker opened.", inner.breaker.opens())];
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
  fn mode(&self) -> Mode {
    if self.mode.load(Relaxed) == Mode::Redis as u8 {
      Mode::Redis
    } else {
      Mode::Memory
    }
  }

  fn set_mode(&self, mode: Mode, reason: &str) {
    if self.mode.swap(mode as u8, Relaxed) != mode as u8 {
      (self.observer)(mode, reason);
    }
  }

  fn redis_failed(&self, Unavailable(error): Unavailable) {
    self.metrics.redis_errors.fetch_add(1, Relaxed);
    *self.last_error.lock().unwrap() = Some(error.clone());
    if self.breaker.record_failure() {
      self.set_mode(Mode::Memory, &error);
      self.wake.notify_one();
    }
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

  async fn run_ops(&self, ops: &[(usize, Op)]) -> Vec<Reply> {
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
    // (op index, first command, command count, read lead if any)
    let mut sent = Vec::with_capacity(ops.len());
    let mut followers = Vec::new();
    let mut clears = Vec::new();
    let now_ms = now_ms();
    for (i, (_, op)) in ops.iter().enumerate() {
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
            self.reads.forget(&op.key().to_string());
          }
          None
        }
      };
      let first = cmds.len();
      tiers::redis::push_op(op, &mut cmds, self.cfg.compression_threshold, now_ms);
      sent.push((i, first, cmds.len() - first, lead));
    }

    if !cmds.is_empty() {
      match redis.run(&cmds).await {
        Ok(outcomes) => {
          if self.breaker.record_success() {
            self.set_mode(Mode::Redis, "redis answered");
          }
          for (i, first, count, lead) in sent {
            let op = &ops[i].1;
            let (reply, read) = self.apply(op, &outcomes[first..first + count]);
            if let Some(lead) = lead {
              lead.finish(read);
            }
            out[i] = Some(reply);
          }
        }
        Err(e) => {
          self.redis_failed(e);
          self.metrics.served_from_memory.fetch_add(sent.len() as u64, Relaxed);
          for (i, _, _, lead) in sent {
            drop(lead);
            out[i] = Some(self.in_memory(&ops[i].1, true));
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
    for i in clears {
      out[i] = Some(self.clear_org(redis, &ops[i].1).await);
    }
    out.into_iter().map(|r| r.unwrap_or(Reply::Null)).collect()
  }

  fn read_reply(&self, json: Option<Arc<str>>, unwrap: Option<&'static str>) -> Reply {
    match json {
      Some(json) => {
        self.metrics.hits.fetch_add(1, Relaxed);
        Reply::Json(match unwrap {
          Some(field) => unwrap_field(&json, field),
          None => json,
        })
      }
      None => {
        self.metrics.misses.fetch_add(1, Relaxed);
        Reply::Null
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
    let reply = match op {
      Op::Get { unwrap, .. } => {
        let json = match decode_value(value) {
          Ok(json) => json,
          Err(e) => return (Reply::Error(e), Err(())),
        };
        return (self.read_reply(json.clone(), *unwrap), Ok(json));
      }
      Op::Set { key, kind, json, ttl } => {
        m.set(key, json.clone(), *ttl, *kind);
        Reply::Bool(true)
      }
      Op::Delete { key } => {
        m.delete(key);
        Reply::Bool(int(value) > 0)
      }
      Op::Exists { .. } => Reply::Bool(int(value) > 0),
      Op::Expire { key, ttl } => {
        let found = int(value) > 0;
        if found {
          m.expire(key, *ttl);
        } else {
          m.delete(key);
        }
        Reply::Bool(found)
      }
      Op::Increment { key, kind, ttl, .. } => {
        let n = int(value);
        m.set(key, n.to_string().into(), *ttl, *kind);
        Reply::Int(n)
      }
      Op::HGet { .. } => match decode_value(value) {
        Ok(json) => self.read_reply(json, None),
        Err(e) => Reply::Error(e),
      },
      Op::HSet { key, kind, field, json, ttl } => {
        let _ = m.hset(key, field, json.clone(), *ttl, *kind);
        Reply::Bool(true)
      }
      Op::HDel { key, field } => {
        let _ = m.hdel(key, field);
        Reply::Bool(int(value) > 0)
      }
      Op::HGetAll { .. } => match redis::from_redis_value_ref::<Vec<(Vec<u8>, Vec<u8>)>>(value) {
        Ok(pairs) => {
          let mut fields = Vec::with_capacity(pairs.len());
          for (f, v) in pairs {
            match codec::decode(&v) {
              Ok(json) => fields.push((String::from_utf8_lossy(&f).into_owned(), json)),
              Err(e) => return (Reply::Error(e), Err(())),
            }
          }
          Reply::Json(object_json(&fields))
        }
        Err(e) => Reply::Error(CacheError::new(ErrorKind::Internal, e.to_string())),
      },
      Op::ClearOrg { .. } => unreachable!("clears do not go through the pipeline"),
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
    let m = &self.memory;
    let now = Instant::now();
    let at = now_ms();
    let record = |slot: Slot, pending: Pending| {
      if journal {
        self.journal.record(slot, pending, at);
      }
    };
    let result: Result<Reply, CacheError> = (|| {
      Ok(match op {
        Op::Get { key, unwrap } => {
          let json = match self.journal.lookup(key) {
            Some(Pending::Set { json, expires_at, .. }) => Some(json).filter(|_| expires_at > now),
            Some(Pending::Delete) => None,
            None => m.get_json(key)?,
          };
          self.read_reply(json, *unwrap)
        }
        Op::Set { key, kind, json, ttl } => {
          m.set(key, json.clone(), *ttl, *kind);
          record(Slot::whole(key), Pending::Set { json: json.clone(), expires_at: now + *ttl });
          Reply::Bool(true)
        }
        Op::Delete { key } => {
          let existed = m.delete(key);
          record(Slot::whole(key), Pending::Delete);
          Reply::Bool(existed)
        }
        Op::Exists { key } => Reply::Bool(m.exists(key)),
        Op::Expire { key, ttl } => {
          let found = m.expire(key, *ttl);
          if let Some(entry) = m.get(key).filter(|_| found) {
            match entry.value {
              MemValue::Json(json) => record(Slot::whole(key), Pending::Set { json, expires_at: entry.expires_at }),
              MemValue::Hash(fields) => {
                for (field, json) in fields.iter() {
                  record(Slot::field(key, field), Pending::Set { json: json.clone(), expires_at: entry.expires_at });
                }
              }
            }
          }
          Reply::Bool(found)
        }
        Op::Increment { key, kind, by, ttl } => {
          let n = m.increment(key, *by, *ttl, *kind)?;
          let expires_at = m.get(key).map_or(now + *ttl, |e| e.expires_at);
          record(Slot::whole(key), Pending::Set { json: n.to_string().into(), expires_at });
          Reply::Int(n)
        }
        Op::HGet { key, field } => self.read_reply(m.hget(key, field)?, None),
        Op::HSet { key, kind, field, json, ttl } => {
          m.hset(key, field, json.clone(), *ttl, *kind)?;
          record(Slot::field(key, field), Pending::Set { json: json.clone(), expires_at: now + *ttl });
          Reply::Bool(true)
        }
        Op::HDel { key, field } => {
          let removed = m.hdel(key, field)?;
          record(Slot::field(key, field), Pending::Delete);
          Reply::Bool(removed)
        }
        Op::HGetAll { key } => Reply::Json(object_json(&m.hgetall(key)?)),
        Op::ClearOrg { scope, pattern } => {
          let n = m.clear_prefix(scope);
          self.reads.forget_prefix(scope);
          if journal {
            self
              .journal
              .record_clear(scope, Clear { pattern: pattern.clone(), route_key: scope.clone(), written_ms: at });
          }
          Reply::Int(n as i64)
        }
      })
    })();
    result.unwrap_or_else(Reply::Error)
  }

  /// Writes the journal back to Redis; a failure counts against the breaker.
  /// Returns false if Redis failed it (the rest stays journaled).
  async fn replay(&self, redis: &RedisTier) -> bool {
    let keep_going = || self.breaker.allows_traffic() && !self.closed.load(Ordering::Acquire);
    let written = replay::write_back(&self.journal, redis, self.cfg.compression_threshold, keep_going).await;
    self.metrics.replayed.fetch_add(written.replayed, Relaxed);
    self.metrics.replay_dropped.fetch_add(written.refused, Relaxed);
    match written.outcome {
      Ok(()) => true,
      Err(e) => {
        self.redis_failed(e);
        false
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

/// A stored value (or nil) as JSON text.
fn decode_value(value: &Value) -> Result<Option<Arc<str>>, CacheError> {
  match value {
    Value::Nil => Ok(None),
    Value::BulkString(bytes) => codec::decode(bytes).map(Some),
    Value::SimpleString(s) => codec::decode(s.as_bytes()).map(Some),
    other => Err(CacheError::new(ErrorKind::Internal, format!("unexpected reply {other:?}"))),
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

fn now_ms() -> u64 {
  SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Background work while Redis is enabled: connect, probe after each cooldown
/// of the breaker, and replay the journal once Redis answers.
async fn supervise(weak: Weak<Inner>) {
  loop {
    let Some(inner) = weak.upgrade() else { return };
    if inner.closed.load(Ordering::Acquire) {
      return;
    }
    let redis = inner.redis.as_ref().expect("supervised caches have Redis");
    match inner.breaker.state() {
      State::Closed => {
        let pause = if inner.journal.is_empty() {
          Duration::from_millis(500)
        } else if inner.replay(redis).await {
          continue;
        } else {
          // Redis answers but refuses the writes (out of memory, loading...):
          // try again later rather than in a tight loop.
          inner.cfg.breaker_cooldown.min(Duration::from_secs(1))
        };
        let _ = tokio::time::timeout(pause, inner.wake.notified()).await;
      }
      State::Open | State::HalfOpen => {
        if inner.breaker.try_begin_probe() {
          match probe(redis).await {
            Ok(()) => {
              inner.breaker.record_success();
              *inner.last_error.lock().unwrap() = None;
              inner.set_mode(Mode::Redis, "redis answered the probe");
            }
            Err(Unavailable(error)) => {
              inner.breaker.record_failure();
              *inner.last_error.lock().unwrap() = Some(error);
            }
          }
          continue;
        }
        let wait = inner.breaker.until_probe().max(Duration::from_millis(5));
        let _ = tokio::time::timeout(wait, inner.wake.notified()).await;
      }
    }
  }
}

/// [`try_probe`], with a panic (say, in a TLS library) counted as a failed
/// probe rather than ending the supervision for good.
async fn probe(redis: &RedisTier) -> Result<(), Unavailable> {
  use futures::FutureExt;
  std::panic::AssertUnwindSafe(try_probe(redis)).catch_unwind().await.unwrap_or_else(|panic| {
    let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
    Err(Unavailable(format!("connecting panicked: {}", why.unwrap_or_else(|| "unknown panic".into()))))
  })
}

/// Connects if needed and `PING`s; a connection that survived a restart of
/// Redis fails its first command, so a second attempt follows a failed one.
async fn try_probe(redis: &RedisTier) -> Result<(), Unavailable> {
  redis.connect().await?;
  let mut last = Unavailable("no attempt".into());
  for attempt in 0..3 {
    if attempt > 0 {
      tokio::time::sleep(Duration::from_millis(25)).await;
    }
    match redis.run_one(redis::cmd("PING")).await {
      Ok(_) => return Ok(()),
      Err(e) => last = e,
    }
  }
  Err(last)
}
