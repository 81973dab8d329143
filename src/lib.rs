#![deny(clippy::all)]
//! The napi surface: converts arguments and results, nothing else.
//!
//! JavaScript (`index.js`) collects every call of one tick into a batch and
//! submits it with one native call; the core runs it on tokio and hands all
//! its replies back through one shared threadsafe function. Measured in
//! NOTES.md: this costs the main thread about a third of what one
//! `async fn` per call does.
//!
//! Every entry point runs inside a panic catch ([`contain`], [`contain_async`],
//! and per chunk in `submit`): a panic that unwound into N-API would abort
//! Node, and one on the I/O thread would leave a batch's Promises pending
//! forever. A caught panic is an `ERR_CACHE_INTERNAL` error for its callers.

/// Every batch allocates keys, commands and replies on the I/O thread and
/// frees some on another; glibc's malloc and free were about a quarter of
/// that thread's samples in `perf`, and mimalloc's thread-local free lists
/// cut that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod batch;
pub mod breaker;
pub mod codec;
pub mod config;
pub mod doctor;
pub mod domain;
pub mod engine;
pub mod envelope;
pub mod error;
pub mod flight;
pub mod io_spin;
pub mod journal;
pub mod keys;
pub mod lock;
pub mod metrics;
pub mod near;
pub mod redact;
pub mod replay;
pub mod scripts;
pub mod send_order;
pub mod tags;
pub mod tiers;
pub mod watch;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use napi::bindgen_prelude::*;
use napi::sys;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use crate::batch::Reply;
use crate::engine::{Cache, Mode};
use crate::error::{CacheError, ErrorKind};

/// Replies to a batch's calls `first..first + replies.len()`, as
/// `[batchId, first, ...replies]`, or a change of mode, `[0, mode, reason]`.
pub enum Completion {
  Batch { id: u32, first: u32, replies: Vec<Reply> },
  ModeChange(Mode, String),
}

/// A batch runs as chunks of at most this many calls, each its own pipeline,
/// answered as soon as it is done: JavaScript settles the first chunk while
/// Redis still works on the next, instead of the two taking turns. Measured
/// at 64 in flight, paired runs against 32: W1 1.05x and W2 1.05x on
/// loopback (11 pairs), W2 1.25x at 1 ms RTT (7 pairs), W3 and the near
/// cache's W1 within noise; 8 was no better than 16, and 128 (no chunks at
/// this load) cut W1 to 0.77x.
const CHUNK_CALLS: usize = 16;

type WakeFn = ThreadsafeFunction<(), (), (), Status, false, true>;

/// Where finished batches wait for JavaScript. Only one wake-up is ever
/// queued: JavaScript takes everything ready in one `drain()` call. Node's
/// threadsafe functions run up to 1000 queued calls in one go, which starved
/// the event loop (event-loop delay p99 of 146 ms with 9 KB values) when every
/// batch queued its own call.
struct Outbox {
  ready: Mutex<Vec<Completion>>,
  woken: AtomicBool,
  wake: WakeFn,
}

impl Outbox {
  fn deliver(&self, completion: Completion) {
    let mut ready = self.ready.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    ready.push(completion);
    let already = self.woken.swap(true, Ordering::AcqRel);
    drop(ready);
    if !already {
      self.wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
    }
  }

  fn take(&self) -> Vec<Completion> {
    let mut ready = self.ready.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    self.woken.store(false, Ordering::Release);
    std::mem::take(&mut *ready)
  }
}

/// The native half of `CacheAdapter`; use the class exported by `index.js`.
#[napi]
pub struct NativeCache {
  cache: Cache,
  outbox: Arc<Outbox>,
}

#[napi]
impl NativeCache {
  /// `options_json`: the options object as JSON. `wake` is called (with no
  /// arguments) when completions are ready to `drain()`.
  #[napi(constructor, ts_args_type = "optionsJson: string, wake: () => void")]
  pub fn new(env: Env, options_json: String, wake: Function<(), ()>) -> Result<Self> {
    contain(|| Self::build(&env, options_json, wake))
  }

  fn build(env: &Env, options_json: String, wake: Function<(), ()>) -> Result<Self> {
    test_panic_point("constructor");
    let options: serde_json::Value = serde_json::from_str(&options_json)
      .map_err(|e| throw(env, CacheError::new(ErrorKind::Type, format!("options must be JSON-representable: {e}"))))?;
    let cfg = config::resolve(&options, &|name| std::env::var(name).ok()).map_err(|e| throw(env, e))?;
    // Process-wide (the I/O thread is shared), read when the thread starts; checked by every adapter.
    io_spin::window_us(std::env::var(io_spin::ENV).ok().as_deref())
      .map_err(|why| throw(env, CacheError::new(ErrorKind::Type, why)))?;
    // Weak: an adapter that is never closed must not keep Node alive.
    let wake = wake.build_threadsafe_function::<()>().weak::<true>().callee_handled::<false>().build()?;
    let outbox = Arc::new(Outbox { ready: Mutex::new(Vec::new()), woken: AtomicBool::new(false), wake });
    let observer_outbox = outbox.clone();
    let observer = Box::new(move |mode: Mode, reason: &str| {
      observer_outbox.deliver(Completion::ModeChange(mode, reason.to_string()));
    });
    Ok(Self { cache: Cache::new(cfg, cache_runtime(), observer), outbox })
  }

  /// Runs one tick's calls (see `batch` for the format); the replies come
  /// back through `drain()` as `[id, first, ...replies]`, chunk by chunk.
  #[napi]
  pub fn submit(&self, id: u32, codes: Vec<u32>, nums: Vec<f64>, strs: Vec<String>) -> Result<()> {
    let (cache, outbox) = (self.cache.clone(), self.outbox.clone());
    contain(|| {
      let in_flight = io_spin::io_spin().begin(codes.len());
      let has_clear = codes.contains(&(batch::Opcode::ClearOrg as u32));
      self.cache.runtime().spawn(async move {
        let _in_flight = in_flight;
        // Decoding is inside a catch too: a panic there still answers every call.
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
          test_panic_point("batchDecode");
          batch::decode(&codes, &nums, strs, cache.config(), cache.keys(), now_ms())
        }));
        let calls = match decoded {
          Ok(calls) => calls,
          Err(panic) => {
            let replies = vec![Reply::Error(panic_error(&panic)); codes.len()];
            outbox.deliver(Completion::Batch { id, first: 0, replies });
            return;
          }
        };
        // Chunks run side by side, so a tenant clear is a barrier only within
        // its chunk: a batch with one runs whole (calls after it survive it).
        let chunk_calls = if has_clear { usize::MAX } else { CHUNK_CALLS };
        let mut chunks = Vec::with_capacity(calls.len().div_ceil(CHUNK_CALLS));
        let mut calls = calls.into_iter();
        let mut first = 0;
        loop {
          let chunk: Vec<_> = calls.by_ref().take(chunk_calls).collect();
          if chunk.is_empty() {
            break;
          }
          let (cache, outbox, len) = (&cache, &outbox, chunk.len());
          chunks.push(async move {
            // Every call gets an answer, even if the core panics: a Promise
            // that never settles is worse than an error.
            let run = async move {
              test_panic_point("batchExecute");
              cache.execute(chunk).await
            };
            let replies = AssertUnwindSafe(run)
              .catch_unwind()
              .await
              .unwrap_or_else(|panic| vec![Reply::Error(panic_error(&panic)); len]);
            outbox.deliver(Completion::Batch { id, first, replies });
          });
          first += len as u32;
        }
        futures::future::join_all(chunks).await;
      });
      Ok(())
    })
  }

  /// The memory shared with `lib/near.js`, whose table serves near-cache
  /// hits on Node's thread with no native call (see `near::board`); `null`
  /// without a near cache. `nowMs`: the caller's `performance.now()`.
  #[napi(ts_return_type = "ArrayBuffer | null")]
  pub fn near_board<'env>(&self, env: &'env Env, now_ms: f64) -> Result<Option<ArrayBuffer<'env>>> {
    contain(|| {
      let Some(board) = self.cache.near_board(now_ms) else { return Ok(None) };
      let data = Arc::as_ptr(&board) as *mut u8;
      // SAFETY: the memory is the board's, kept alive by the Arc the finalizer drops.
      let buffer = unsafe {
        ArrayBuffer::from_external(env, data, std::mem::size_of::<near::Board>(), board, |_, board| drop(board))
      }?;
      // A runtime that forbids external buffers hands back a copy, which Rust would never update.
      if !std::ptr::eq(buffer.as_ptr(), data) {
        return Err(Error::from_reason(
          "ERR_NEAR_CACHE: this runtime copies external ArrayBuffers; the near cache needs shared memory",
        ));
      }
      Ok(Some(buffer))
    })
  }

  /// A write call (`code` and `strs` as in a batch) is being queued: the
  /// near cache drops what it writes now, on Node's thread, so that no read
  /// made after it is answered with the value it replaces. A large value may
  /// be passed as `null` (only a mapping's value builds a key). If the call
  /// cannot be decoded, the whole near cache is emptied instead.
  #[napi]
  pub fn near_forget(&self, code: u32, strs: Vec<String>) -> Result<()> {
    contain(|| {
      let calls = std::panic::catch_unwind(AssertUnwindSafe(|| {
        batch::decode(&[code], &[f64::NAN], strs, self.cache.config(), self.cache.keys(), 0)
      }));
      match calls {
        Ok(calls) if calls.iter().all(|c| c.is_ok()) => self.cache.near_forget_writes(&calls),
        _ => self.cache.near_flush(),
      }
      Ok(())
    })
  }

  /// Every completion ready now, oldest first.
  #[napi(ts_return_type = "any[][]")]
  pub fn drain(&self) -> Result<Vec<Completion>> {
    contain(|| Ok(self.outbox.take()))
  }

  /// Read-through for one generic key (`ttl_seconds` NaN: the default TTL);
  /// `loader` must return a Promise of the value's JSON, or of `null` for
  /// `undefined` (which is not cached).
  #[napi(ts_args_type = "key: string, ttlSeconds: number, loader: (key: string) => Promise<string | null>")]
  pub async fn get_or_load(
    &self,
    key: String,
    ttl_seconds: f64,
    loader: ThreadsafeFunction<String, Promise<Option<String>>, String, Status, false>,
  ) -> Result<Option<String>> {
    contain_async(async move {
      test_panic_point("getOrLoad");
      let secs = if ttl_seconds.is_nan() { self.cache.config().default_ttl_secs } else { ttl_seconds };
      let ttl = config::ttl_duration(config::check_ttl(secs, "ttl").map_err(to_napi)?);
      let call_key = key.clone();
      let load = || async move {
        let promise = loader.call_async_catch(call_key).await.map_err(|e| e.reason.clone())?;
        promise.await.map_err(|e| e.reason.clone())
      };
      match self.cache.get_or_load(key, ttl, load).await {
        Ok(json) => Ok(json.map(|j| j.to_string())),
        Err(e) => Err(to_napi(e)),
      }
    })
    .await
  }

  /// Removes (or, `soft`, marks stale) every entry carrying any of `tags`,
  /// in Redis and in the memory tier; resolves to `{ entries, reachedRedis }`.
  #[napi(ts_return_type = "Promise<{ entries: number; reachedRedis: boolean }>")]
  pub async fn invalidate_tags(&self, tags: Vec<String>, soft: bool) -> Result<serde_json::Value> {
    let cache = self.cache.clone();
    let done = self.cache.runtime().spawn(async move { tags::invalidate(&cache, &tags, soft).await }).await;
    let done = done.map_err(|e| to_napi(CacheError::new(ErrorKind::Internal, e.to_string())))?;
    Ok(serde_json::json!({ "entries": done.entries, "reachedRedis": done.reached_redis }))
  }

  /// Takes the distributed lock of generic key `key` for `ttl_ms`: `true`
  /// taken, `false` held by another instance, `null` Redis not in use now
  /// (disabled, down, or the breaker open).
  #[napi]
  pub async fn lock_acquire(&self, key: String, token: String, ttl_ms: f64) -> Result<Option<bool>> {
    let cache = self.cache.clone();
    let ttl = std::time::Duration::from_millis(ttl_ms.clamp(1.0, 86_400_000.0) as u64);
    let run = async move { cache.lock_acquire(&key, &token, ttl).await };
    self.cache.runtime().spawn(run).await.map_err(|e| to_napi(CacheError::new(ErrorKind::Internal, e.to_string())))
  }

  /// Releases the lock if `token` still holds it; resolves to whether it did.
  #[napi]
  pub async fn lock_release(&self, key: String, token: String) -> Result<bool> {
    let cache = self.cache.clone();
    let run = async move { cache.lock_release(&key, &token).await };
    self.cache.runtime().spawn(run).await.map_err(|e| to_napi(CacheError::new(ErrorKind::Internal, e.to_string())))
  }

  /// The memory tier's value (JSON) of a process-local fallback-map entry.
  #[napi]
  pub fn fallback_get(&self, map: String, key: String) -> Result<Option<String>> {
    contain(|| {
      test_panic_point("fallback");
      let key = self.cache.keys().fallback(&map, &key);
      Ok(self.cache.memory_get(&key).map_err(to_napi)?.map(|j| j.to_string()))
    })
  }

  #[napi]
  pub fn fallback_set(&self, map: String, key: String, json: String) -> Result<()> {
    contain(|| {
      test_panic_point("fallback");
      let key = self.cache.keys().fallback(&map, &key);
      let ttl = config::ttl_duration(self.cache.config().default_ttl_secs);
      self.cache.memory_set(&key, json.into(), ttl);
      Ok(())
    })
  }

  /// Counters, latency, mode, breaker, replay and memory-tier figures.
  #[napi(ts_return_type = "Record<string, any>")]
  pub fn stats(&self) -> Result<serde_json::Value> {
    contain(|| {
      test_panic_point("stats");
      Ok(self.cache.stats())
    })
  }

  /// The alert settings in force, for `lib/alerts.js` (with the webhook URL:
  /// never put this object in any output).
  #[napi(ts_return_type = "Record<string, any>")]
  pub fn alerts_config(&self) -> serde_json::Value {
    let cfg = self.cache.config();
    let mut out = cfg.alerts.to_json();
    out["service"] = cfg.key_prefix.clone().into();
    out["redisEnabled"] = cfg.redis.is_some().into();
    out
  }

  /// The counters the alert rules sample (cheap: no walk of the memory tier).
  #[napi(ts_return_type = "Record<string, any>")]
  pub fn alert_inputs(&self) -> serde_json::Value {
    self.cache.alert_inputs()
  }

  /// The TTLs in force, in seconds, by name.
  #[napi(ts_return_type = "Record<string, number>")]
  pub fn ttl_config(&self) -> Result<serde_json::Value> {
    contain(|| Ok(self.cache.ttl_config()))
  }

  #[napi(ts_return_type = "Promise<Record<string, any>>")]
  pub async fn redis_health(&self) -> Result<serde_json::Value> {
    contain_async(async {
      test_panic_point("health");
      Ok(self.cache.redis_health().await)
    })
    .await
  }

  /// Prometheus text exposition.
  #[napi]
  pub fn metrics(&self) -> Result<String> {
    contain(|| {
      test_panic_point("metrics");
      Ok(self.cache.metrics_text())
    })
  }

  #[napi]
  pub fn mode(&self) -> Result<String> {
    contain(|| Ok(self.cache.mode().name().to_string()))
  }

  #[napi]
  pub fn redis_enabled(&self) -> Result<bool> {
    contain(|| Ok(self.cache.config().redis.is_some()))
  }

  /// Stops background work and drops the connections, after one bounded
  /// attempt to replay writes journaled during an outage; resolves to how
  /// many writes could not be replayed. Idempotent.
  #[napi]
  pub async fn close(&self) -> Result<u32> {
    // On the cache's own runtime, where its connections live.
    let cache = self.cache.clone();
    let unreplayed = self.cache.runtime().spawn(async move { cache.close().await }).await;
    unreplayed
      .map(|n| n.min(u32::MAX as usize) as u32)
      .map_err(|e| to_napi(CacheError::new(ErrorKind::Internal, e.to_string())))
  }
}

/// Where [`test_panic_once`] can arm a deliberate panic: one per kind of entry point.
const PANIC_POINTS: [&str; 8] =
  ["constructor", "batchDecode", "batchExecute", "getOrLoad", "stats", "health", "metrics", "fallback"];

/// 0: nothing armed; i + 1: a panic armed at `PANIC_POINTS[i]`.
static ARMED_PANIC: AtomicUsize = AtomicUsize::new(0);

/// TEST ONLY: makes the next pass through one entry point panic, once, so a
/// test can prove the panic reaches the caller as an error (not an abort or
/// a hang) and that the adapter works afterwards. `at` is one of
/// `constructor`, `batchDecode`, `batchExecute`, `getOrLoad`, `stats`,
/// `health`, `metrics`, `fallback`. Not part of the `CacheAdapter` API.
///
/// Why this shape: the shipped (release) binary is the one that must catch
/// panics, so the hook is compiled into every build rather than under
/// `cfg(debug_assertions)`; and it is reachable only by code that calls this
/// function by name, never through data (a key or value) or the environment,
/// so neither callers' input nor an operator's settings can trip it.
#[napi(js_name = "__testPanicOnce")]
pub fn test_panic_once(at: String) -> Result<()> {
  let i = PANIC_POINTS.iter().position(|p| *p == at).ok_or_else(|| {
    Error::new(Status::InvalidArg, format!("__testPanicOnce: {at:?} is not one of {}", PANIC_POINTS.join(", ")))
  })?;
  ARMED_PANIC.store(i + 1, Ordering::Release);
  Ok(())
}

/// Panics if a test armed a panic at `point` (one relaxed load otherwise).
fn test_panic_point(point: &str) {
  let armed = ARMED_PANIC.load(Ordering::Relaxed);
  if armed != 0
    && PANIC_POINTS[armed - 1] == point
    && ARMED_PANIC.compare_exchange(armed, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
  {
    panic!("deliberate test panic at {point} (armed by __testPanicOnce)");
  }
}

/// Runs an entry point's body; a panic becomes an error for the caller,
/// since unwinding into N-API would abort Node.
fn contain<T>(body: impl FnOnce() -> Result<T>) -> Result<T> {
  std::panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| Err(to_napi(panic_error(&panic))))
}

/// [`contain`] for an async entry point.
async fn contain_async<T>(body: impl Future<Output = Result<T>>) -> Result<T> {
  AssertUnwindSafe(body).catch_unwind().await.unwrap_or_else(|panic| Err(to_napi(panic_error(&panic))))
}

fn panic_error(panic: &Box<dyn std::any::Any + Send>) -> CacheError {
  CacheError::new(ErrorKind::Internal, format!("the cache core panicked: {}", panic_message(panic)))
}

/// The domain table: the JavaScript class builds its methods from it.
#[napi(ts_return_type = "Array<Record<string, any>>")]
pub fn domain_methods() -> Result<serde_json::Value> {
  contain(|| serde_json::to_value(domain::method_specs()).map_err(|e| Error::from_reason(e.to_string())))
}

/// Opcode numbers and flags of the batch format.
#[napi(ts_return_type = "Record<string, number>")]
pub fn protocol() -> Result<serde_json::Value> {
  contain(|| Ok(protocol_table()))
}

fn protocol_table() -> serde_json::Value {
  let mut map = serde_json::Map::new();
  for op in batch::Opcode::ALL {
    let name = serde_json::to_value(op).expect("opcodes serialise");
    map.insert(name.as_str().unwrap_or_default().to_string(), serde_json::json!(op as u8));
  }
  map.insert("ORG_NULL".into(), serde_json::json!(batch::ORG_NULL));
  map.insert("TAGGED".into(), serde_json::json!(batch::TAGGED));
  map.insert("RAW".into(), serde_json::json!(batch::RAW));
  serde_json::Value::Object(map)
}

/// Where `lib/near.js` finds each part of the near-cache board.
#[napi(
  ts_return_type = "{ activeCell: number; epochCell: number; leaseOffset: number; countsOffset: number; gensOffset: number; slots: number; bytes: number }"
)]
pub fn near_layout() -> Result<serde_json::Value> {
  contain(|| Ok(near::layout()))
}

/// `npx native-cache-adapter doctor`: resolves the options (JSON) and the
/// environment as the adapter does, checks the Redis they point at, and
/// resolves to the report (a bad option is a failed `config` line).
#[napi(
  ts_return_type = "Promise<{ ok: boolean; target: string; checks: Array<{ name: string; status: 'pass' | 'warn' | 'fail'; detail: string }> }>"
)]
pub async fn doctor(options_json: String) -> Result<serde_json::Value> {
  contain_async(async {
    let report = match doctor::configure(&options_json, &|name| std::env::var(name).ok()) {
      Ok(cfg) => doctor::run(&cfg).await,
      Err(report) => *report,
    };
    serde_json::to_value(report).map_err(|e| Error::from_reason(e.to_string()))
  })
  .await
}

/// `orgId:digits`, or the digits alone with no org.
#[napi]
pub fn create_org_key(org_id: Option<String>, phone: String) -> Result<String> {
  contain(|| Ok(keys::org_key(org_id.as_deref(), &phone)))
}

/// The runtime every adapter's I/O runs on: one thread, current-thread
/// scheduler. Measured against a multi-thread runtime: fewer wake-ups and
/// steals per round trip, so less CPU per call (see README, Performance).
fn cache_runtime() -> tokio::runtime::Handle {
  static RUNTIME: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
  RUNTIME
    .get_or_init(|| {
      let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("the cache runtime starts");
      let handle = runtime.handle().clone();
      handle.spawn(io_spin::io_spin().run());
      std::thread::Builder::new()
        .name("cache-io".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .expect("the cache I/O thread starts");
      handle
    })
    .clone()
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
  panic
    .downcast_ref::<&str>()
    .map(|s| s.to_string())
    .or_else(|| panic.downcast_ref::<String>().cloned())
    .unwrap_or_else(|| "panic".into())
}

fn now_ms() -> u64 {
  SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn code_of(kind: ErrorKind) -> &'static str {
  match kind {
    ErrorKind::Type => "ERR_INVALID_ARG_TYPE",
    ErrorKind::Range => "ERR_OUT_OF_RANGE",
    ErrorKind::Command => "ERR_CACHE_COMMAND",
    ErrorKind::Loader => "ERR_CACHE_LOADER",
    ErrorKind::Closed => "ERR_CACHE_CLOSED",
    ErrorKind::Internal => "ERR_CACHE_INTERNAL",
  }
}

/// A core error as a napi error (the JavaScript side maps the code to a class).
fn to_napi(e: CacheError) -> Error {
  Error::new(Status::GenericFailure, format!("{}: {}", code_of(e.kind), e.message))
}

/// Throws a core error as the right JavaScript class, now.
fn throw(env: &Env, e: CacheError) -> Error {
  let code = Some(code_of(e.kind));
  let _ = match e.kind {
    ErrorKind::Type => env.throw_type_error(&e.message, code),
    ErrorKind::Range => env.throw_range_error(&e.message, code),
    _ => env.throw_error(&e.message, code),
  };
  Error::new(Status::PendingException, e.message)
}

/// Builds a JavaScript error of the class the kind calls for, with a `code`.
unsafe fn js_error(env: sys::napi_env, e: &CacheError) -> Result<sys::napi_value> {
  let msg = unsafe { String::to_napi_value(env, e.message.clone())? };
  let code = unsafe { String::to_napi_value(env, code_of(e.kind).to_string())? };
  let mut out = ptr::null_mut();
  let status = unsafe {
    match e.kind {
      ErrorKind::Type => sys::napi_create_type_error(env, code, msg, &mut out),
      ErrorKind::Range => sys::napi_create_range_error(env, code, msg, &mut out),
      _ => sys::napi_create_error(env, code, msg, &mut out),
    }
  };
  if status != sys::Status::napi_ok {
    return Err(Error::from_status(Status::from(status)));
  }
  Ok(out)
}

unsafe fn reply_to_js(env: sys::napi_env, reply: Reply) -> Result<sys::napi_value> {
  unsafe {
    match reply {
      Reply::Null => Null::to_napi_value(env, Null),
      Reply::Bool(b) => bool::to_napi_value(env, b),
      Reply::Stored(_) => bool::to_napi_value(env, true),
      Reply::Int(n) => f64::to_napi_value(env, n as f64),
      Reply::Json(s) | Reply::Filled(s, _) => <&str>::to_napi_value(env, &s),
      Reply::Error(e) => js_error(env, &e),
    }
  }
}

/// The near-cache fills of a chunk, as `[call, slot, gen, epoch, ttlMs, ...]`
/// (`call` counted from the batch's start), or `null` when there are none.
unsafe fn fills_to_js(env: sys::napi_env, first: u32, replies: &[Reply]) -> Result<sys::napi_value> {
  let fills: Vec<u32> = replies
    .iter()
    .enumerate()
    .filter_map(|(i, r)| match r {
      Reply::Filled(_, f) | Reply::Stored(f) => {
        Some([first + i as u32, f.snapshot.slot, f.snapshot.gen, f.snapshot.epoch, f.ttl_ms])
      }
      _ => None,
    })
    .flatten()
    .collect();
  unsafe {
    if fills.is_empty() {
      Null::to_napi_value(env, Null)
    } else {
      Vec::<u32>::to_napi_value(env, fills)
    }
  }
}

impl ToNapiValue for Completion {
  unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
    unsafe {
      let items = match val {
        Completion::Batch { id, first, replies } => {
          let mut items = Vec::with_capacity(replies.len() + 3);
          items.push(u32::to_napi_value(env, id)?);
          items.push(u32::to_napi_value(env, first)?);
          items.push(fills_to_js(env, first, &replies)?);
          for r in replies {
            items.push(reply_to_js(env, r)?);
          }
          items
        }
        Completion::ModeChange(mode, reason) => vec![
          u32::to_napi_value(env, 0)?,
          <&str>::to_napi_value(env, mode.name())?,
          String::to_napi_value(env, reason)?,
        ],
      };
      let mut array = ptr::null_mut();
      check_status!(sys::napi_create_array_with_length(env, items.len(), &mut array))?;
      for (i, item) in items.into_iter().enumerate() {
        check_status!(sys::napi_set_element(env, array, i as u32, item))?;
      }
      Ok(array)
    }
  }
}
