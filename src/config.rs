//! Options and environment → one validated [`Config`].
//!
//! Options arrive from JavaScript as one JSON object (so every type error can
//! name the option it is about); environment names fill what is not given.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::domain::TtlName;
use crate::error::{CacheError, ErrorKind};
use crate::redact::Secrets;

/// Where Redis is, and how to talk to it. (Its `Debug`, without the
/// password, is in `redact`.)
#[derive(Clone, PartialEq)]
pub struct RedisTarget {
  pub host: String,
  pub port: u16,
  pub username: Option<String>,
  pub password: Option<String>,
  pub db: i64,
  pub tls: Option<TlsFiles>,
  /// Non-empty: talk to a Redis Cluster through these seeds instead.
  pub cluster_nodes: Vec<String>,
  /// `Some`: find the master through Redis Sentinel instead of `host`/`port`.
  pub sentinel: Option<SentinelTarget>,
}

/// The sentinels to ask, and the name of the master they watch.
#[derive(Debug, Clone, PartialEq)]
pub struct SentinelTarget {
  pub sentinels: Vec<(String, u16)>,
  pub master_name: String,
}

/// PEM files for TLS; all optional (system roots are used when `ca_file` is absent).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsFiles {
  pub ca_file: Option<String>,
  pub cert_file: Option<String>,
  pub key_file: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
  /// `None`: memory tier only, Redis is never contacted.
  pub redis: Option<RedisTarget>,
  pub key_prefix: String,
  pub pool_size: usize,
  /// Seconds per [`TtlName`], indexed by `TtlName as usize`.
  pub ttl_secs: [f64; TtlName::COUNT],
  pub default_ttl_secs: f64,
  pub compression_threshold: usize,
  pub command_timeout: Duration,
  pub connect_timeout: Duration,
  pub breaker_failures: u32,
  pub breaker_cooldown: Duration,
  pub memory_max_entries: u64,
  pub memory_max_bytes: u64,
  pub loader_timeout: Duration,
  /// Bound of the queue of writes acknowledged during an outage, waiting for replay.
  pub replay_max_entries: usize,
  /// Bound of that queue's key and JSON bytes; past it the oldest writes become tombstones.
  pub replay_max_bytes: usize,
  /// Largest value (bytes of its JSON text) a call may store; index.js checks it before queuing.
  pub max_value_bytes: u64,
  pub alerts: AlertsConfig,
  /// The read-through's settings (the policy itself runs in `lib/read-through/`).
  pub read_through: ReadThroughConfig,
  /// The near cache's bounds (option `nearCache`, `CACHE_NEAR_CACHE`); `None`: off.
  pub near: Option<NearConfig>,
}

/// Adapter-wide settings of the read-through (`getOrLoad`, `getOrLoadMany`, `wrap`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadThroughConfig {
  /// After a fail-safe activation, how long callers of that key get the
  /// fallback without the loader being called again.
  pub fail_safe_throttle: Duration,
  /// Whether loads take a per-key Redis lock by default (one loader call across instances).
  pub distributed_lock: bool,
  /// How long a distributed lock lives if its holder never releases it (it died).
  pub lock_ttl: Duration,
  /// How long an instance that did not get the lock waits for the holder's value.
  pub lock_wait: Duration,
}

/// Bounds of the near cache (see `near.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct NearConfig {
  pub max_entries: usize,
  pub max_bytes: usize,
  /// No entry is kept longer than this (nor beyond its key's TTL in Redis).
  pub ttl: Duration,
}

/// Near-cache defaults: 10 000 entries covers the hot leads, orgs and agents
/// of a busy process; 32 MiB holds them even at a few KB each while staying
/// an eighth of the memory tier's default; 60 s bounds how long a value can
/// live in a process that never reads it again.
pub const NEAR_DEFAULTS: (u64, u64, u64) = (10_000, 32 * 1024 * 1024, 60_000);

impl Config {
  pub fn ttl(&self, name: TtlName) -> f64 {
    self.ttl_secs[name as usize]
  }
}

/// Default bound of one value's JSON: 8 MiB. The old adapter had none; the
/// largest realistic value (a 200-message conversation) is about 58 KB, so this
/// leaves over 100x headroom while keeping one value to ~3% of the default
/// memory tier and to tens of ms of `JSON.parse` on Node's thread.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 8 * 1024 * 1024;

/// Redis refuses a bulk string above 512 MB (`proto-max-bulk-len`).
pub const MAX_VALUE_BYTES_LIMIT: u64 = 512 * 1024 * 1024;

/// Reads options (a JSON object, `null` for none) and the environment (through
/// `env`, so tests can pass their own) into a validated [`Config`]. Its errors
/// never carry a password or URL credential.
pub fn resolve(options: &Value, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, CacheError> {
  resolve_unredacted(options, env)
    .map_err(|e| CacheError { message: credentials(options, env).redact(&e.message), ..e })
}

/// Every credential the options and environment hold, whatever else is wrong with them.
fn credentials(options: &Value, env: &dyn Fn(&str) -> Option<String>) -> Secrets {
  let mut secrets = Secrets::default();
  let option = |name: &str| options.get(name).and_then(Value::as_str).map(str::to_string);
  if let Some(p) = option("password").or_else(|| env("REDIS_PASSWORD")) {
    secrets.add(&p);
  }
  for url in [option("url"), env("REDIS_URL")].into_iter().flatten() {
    secrets.add_url(&url);
  }
  if let Some(Value::Array(nodes)) = options.get("clusterNodes") {
    nodes.iter().filter_map(Value::as_str).for_each(|n| secrets.add_url(n));
  }
  if let Some(nodes) = env("REDIS_CLUSTER_NODES") {
    nodes.split(',').for_each(|n| secrets.add_url(n.trim()));
  }
  secrets
}

fn resolve_unredacted(options: &Value, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, CacheError> {
  let empty = Map::new();
  let opts = match options {
    Value::Null => &empty,
    Value::Object(map) => map,
    _ => return Err(type_err("options", "an object")),
  };
  let known = [
    "url",
    "host",
    "port",
    "password",
    "username",
    "db",
    "tls",
    "enabled",
    "clusterNodes",
    "sentinels",
    "sentinelMasterName",
    "keyPrefix",
    "poolSize",
    "ttl",
    "compressionThreshold",
    "commandTimeoutMs",
    "connectTimeoutMs",
    "breakerFailures",
    "breakerCooldownMs",
    "memoryMaxEntries",
    "memoryMaxBytes",
    "loaderTimeoutMs",
    "replayMaxEntries",
    "replayMaxBytes",
    "maxValueBytes",
    "onModeChange",
    "alerts",
    "failSafeThrottleMs",
    "distributedLock",
    "lockTtlMs",
    "lockWaitMs",
    "nearCache",
  ];
  if let Some(unknown) = opts.keys().find(|k| !known.contains(&k.as_str())) {
    return Err(CacheError::new(ErrorKind::Type, format!("options.{unknown} is not a known option")));
  }
  let o = Opts { opts, env };

  let enabled = match o.get("enabled") {
    Some(v) => v.as_bool().ok_or_else(|| type_err("options.enabled", "a boolean"))?,
    None => !["REDIS_ENABLED", "USE_REDIS"]
      .iter()
      .any(|name| env(name).is_some_and(|v| v.trim().eq_ignore_ascii_case("false") || v.trim() == "0")),
  };

  let redis = if enabled { Some(resolve_target(&o)?) } else { None };

  let key_prefix = match o.string("keyPrefix", None)? {
    Some(p) => p,
    None => {
      let namespace = env("CACHE_NAMESPACE").filter(|s| !s.is_empty()).unwrap_or_else(|| "jack".into());
      let stage = if env("NODE_ENV").as_deref() == Some("production") { "prod" } else { "dev" };
      format!("{namespace}:{stage}")
    }
  };

  let mut ttl_secs = TtlName::ALL.map(|t| t.default_secs());
  match opts.get("ttl") {
    None | Some(Value::Null) => {}
    Some(Value::Object(map)) => {
      for (name, v) in map {
        let t = TtlName::from_name(name)
          .ok_or_else(|| CacheError::new(ErrorKind::Type, format!("options.ttl.{name} is not a known TTL name")))?;
        ttl_secs[t as usize] = ttl_value(v, &format!("options.ttl.{name}"))?;
      }
    }
    Some(_) => return Err(type_err("options.ttl", "an object of TTLs in seconds")),
  }

  let default_ttl_secs = match env("CACHE_DEFAULT_TTL") {
    Some(s) => ttl_value(
      &Value::from(s.trim().parse::<f64>().map_err(|_| type_err("CACHE_DEFAULT_TTL", "a number of seconds"))?),
      "CACHE_DEFAULT_TTL",
    )?,
    None => 7200.0,
  };

  let memory_max_bytes = o.int("memoryMaxBytes", None, 1024, u64::MAX >> 1, 256 * 1024 * 1024)?;
  Ok(Config {
    redis,
    key_prefix,
    // One: every other connection splits each batch into one pipeline per
    // connection (README, "poolSize").
    pool_size: o.int("poolSize", Some("REDIS_POOL_SIZE"), 1, 64, 1)? as usize,
    ttl_secs,
    default_ttl_secs,
    compression_threshold: o.int("compressionThreshold", None, 0, u32::MAX as u64, 1024)? as usize,
    command_timeout: Duration::from_millis(o.int("commandTimeoutMs", None, 1, 600_000, 250)?),
    connect_timeout: Duration::from_millis(o.int("connectTimeoutMs", None, 1, 600_000, 1000)?),
    breaker_failures: o.int("breakerFailures", Some("CACHE_CIRCUIT_BREAKER_FAILURES"), 1, 1_000_000, 5)? as u32,
    breaker_cooldown: Duration::from_millis(o.int(
      "breakerCooldownMs",
      Some("CACHE_CIRCUIT_BREAKER_TIMEOUT"),
      1,
      86_400_000,
      5000,
    )?),
    memory_max_entries: o.int("memoryMaxEntries", None, 1, u32::MAX as u64, 100_000)?,
    memory_max_bytes,
    loader_timeout: Duration::from_millis(o.int("loaderTimeoutMs", None, 1, 86_400_000, 10_000)?),
    replay_max_entries: o.int("replayMaxEntries", None, 1, u32::MAX as u64, 100_000)? as usize,
    // Half the memory tier's: the journal shares its values with the memory
    // tier while that holds them, so this is what an outage can add on top.
    replay_max_bytes: o.int("replayMaxBytes", Some("CACHE_REPLAY_MAX_BYTES"), 1, u64::MAX >> 1, memory_max_bytes / 2)?
      as usize,
    max_value_bytes: o.int(
      "maxValueBytes",
      Some("CACHE_MAX_VALUE_BYTES"),
      1,
      MAX_VALUE_BYTES_LIMIT,
      DEFAULT_MAX_VALUE_BYTES,
    )?,
    alerts: resolve_alerts(opts.get("alerts"), env)?,
    read_through: ReadThroughConfig {
      fail_safe_throttle: Duration::from_millis(o.int(
        "failSafeThrottleMs",
        Some("CACHE_FAILSAFE_THROTTLE_MS"),
        0,
        86_400_000,
        5000,
      )?),
      distributed_lock: match o.get("distributedLock") {
        Some(v) => v.as_bool().ok_or_else(|| type_err("options.distributedLock", "a boolean"))?,
        None => env("CACHE_DISTRIBUTED_LOCK").is_some_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1"),
      },
      lock_ttl: Duration::from_millis(o.int("lockTtlMs", Some("CACHE_LOCK_TTL_MS"), 10, 86_400_000, 10_000)?),
      lock_wait: Duration::from_millis(o.int("lockWaitMs", Some("CACHE_LOCK_WAIT_MS"), 0, 86_400_000, 2000)?),
    },
    near: resolve_near(opts.get("nearCache"), env)?,
  })
}

/// `nearCache`: `true`/`false`, or `{maxEntries, maxBytes, ttlMs}` (on);
/// without the option, `CACHE_NEAR_CACHE=true` turns it on with the defaults.
fn resolve_near(
  option: Option<&Value>,
  env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<NearConfig>, CacheError> {
  let empty = Map::new();
  let given = match option {
    None | Some(Value::Null) => match env("CACHE_NEAR_CACHE").map(|v| v.trim().to_ascii_lowercase()) {
      None => None,
      Some(v) if v.is_empty() || v == "false" || v == "0" => None,
      Some(v) if v == "true" || v == "1" => Some(&empty),
      Some(_) => return Err(type_err("CACHE_NEAR_CACHE", "true or false")),
    },
    Some(Value::Bool(false)) => None,
    Some(Value::Bool(true)) => Some(&empty),
    Some(Value::Object(map)) => Some(map),
    Some(_) => return Err(type_err("options.nearCache", "a boolean or {maxEntries, maxBytes, ttlMs}")),
  };
  let Some(map) = given else { return Ok(None) };
  if let Some(unknown) = map.keys().find(|k| !["maxEntries", "maxBytes", "ttlMs"].contains(&k.as_str())) {
    return Err(CacheError::new(ErrorKind::Type, format!("options.nearCache.{unknown} is not a known setting")));
  }
  let o = Opts { opts: map, env: &|_| None };
  let (entries, bytes, ttl_ms) = NEAR_DEFAULTS;
  let int = |name: &str, min: u64, max: u64, default: u64| {
    o.int(name, None, min, max, default)
      .map_err(|e| CacheError { message: e.message.replace("options.", "options.nearCache."), ..e })
  };
  Ok(Some(NearConfig {
    max_entries: int("maxEntries", 1, u32::MAX as u64, entries)? as usize,
    max_bytes: int("maxBytes", 1024, u64::MAX >> 1, bytes)? as usize,
    ttl: Duration::from_millis(int("ttlMs", 1, 86_400_000, ttl_ms)?),
  }))
}

fn resolve_target(o: &Opts) -> Result<RedisTarget, CacheError> {
  let mut target = RedisTarget {
    host: "127.0.0.1".into(),
    port: 6379,
    username: None,
    password: None,
    db: 0,
    tls: None,
    cluster_nodes: Vec::new(),
    sentinel: None,
  };
  // A URL first (option, then REDIS_URL); the piece-by-piece names then override it.
  if let Some(url) = o.string("url", Some("REDIS_URL"))? {
    apply_url(&mut target, &url).map_err(|why| CacheError::new(ErrorKind::Type, format!("options.url {why}")))?;
  }
  if let Some(host) = o.string("host", Some("REDIS_HOST"))? {
    target.host = host;
  }
  if o.has("port", Some("REDIS_PORT")) {
    target.port = o.int("port", Some("REDIS_PORT"), 1, 65535, 6379)? as u16;
  }
  if let Some(u) = o.string("username", None)? {
    target.username = Some(u);
  }
  if let Some(p) = o.string("password", Some("REDIS_PASSWORD"))? {
    target.password = Some(p).filter(|p| !p.is_empty());
  }
  if o.has("db", Some("REDIS_DB")) {
    target.db = o.int("db", Some("REDIS_DB"), 0, 1 << 20, 0)? as i64;
  }
  match o.get("tls") {
    Some(Value::Bool(true)) => target.tls = Some(target.tls.take().unwrap_or_default()),
    Some(Value::Bool(false)) => target.tls = None,
    Some(Value::Object(files)) => {
      let file = |name: &str| -> Result<Option<String>, CacheError> {
        match files.get(name) {
          None | Some(Value::Null) => Ok(None),
          Some(Value::String(s)) => Ok(Some(s.clone())),
          Some(_) => Err(type_err(&format!("options.tls.{name}"), "a file path string")),
        }
      };
      target.tls =
        Some(TlsFiles { ca_file: file("caFile")?, cert_file: file("certFile")?, key_file: file("keyFile")? });
    }
    Some(_) => return Err(type_err("options.tls", "a boolean or {caFile, certFile, keyFile}")),
    None => {
      if let Some(v) = (o.env)("REDIS_TLS") {
        if v.trim().eq_ignore_ascii_case("true") || v.trim() == "1" {
          target.tls = Some(target.tls.take().unwrap_or_default());
        }
      }
    }
  }
  // Seeds of a cluster: the option (an array), or REDIS_CLUSTER_NODES (comma-separated).
  let seeds: Vec<(String, String)> = match o.opts.get("clusterNodes") {
    None | Some(Value::Null) => match (o.env)("REDIS_CLUSTER_NODES").filter(|s| !s.trim().is_empty()) {
      Some(list) => list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| (format!("REDIS_CLUSTER_NODES entry {}", i + 1), s.to_string()))
        .collect(),
      None => Vec::new(),
    },
    Some(Value::Array(nodes)) => nodes
      .iter()
      .enumerate()
      .map(|(i, n)| {
        let name = format!("options.clusterNodes[{i}]");
        n.as_str().map(|s| (name.clone(), s.to_string())).ok_or_else(|| type_err(&name, "a redis:// URL string"))
      })
      .collect::<Result<_, _>>()?,
    Some(_) => return Err(type_err("options.clusterNodes", "an array of redis:// URLs")),
  };
  for (name, s) in seeds {
    let mut probe = target.clone();
    apply_url(&mut probe, &s).map_err(|why| CacheError::new(ErrorKind::Type, format!("{name} {why}")))?;
    target.cluster_nodes.push(s);
  }
  target.sentinel = resolve_sentinel(o)?;
  if target.sentinel.is_some() && !target.cluster_nodes.is_empty() {
    return Err(CacheError::new(
      ErrorKind::Type,
      "options.sentinels and options.clusterNodes (or their environment names) exclude each other: \
       Sentinel watches a single master, a cluster finds its own",
    ));
  }
  Ok(target)
}

/// `sentinels` (`["host:port", ...]`, or `REDIS_SENTINELS` comma-separated)
/// and `sentinelMasterName` (or `REDIS_SENTINEL_MASTER`): both or neither.
fn resolve_sentinel(o: &Opts) -> Result<Option<SentinelTarget>, CacheError> {
  let listed: Vec<(String, String)> = match o.opts.get("sentinels") {
    None | Some(Value::Null) => match (o.env)("REDIS_SENTINELS").filter(|s| !s.trim().is_empty()) {
      Some(list) => list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| (format!("REDIS_SENTINELS entry {}", i + 1), s.to_string()))
        .collect(),
      None => Vec::new(),
    },
    Some(Value::Array(items)) if !items.is_empty() => items
      .iter()
      .enumerate()
      .map(|(i, n)| {
        let name = format!("options.sentinels[{i}]");
        n.as_str().map(|s| (name.clone(), s.to_string())).ok_or_else(|| type_err(&name, "a \"host:port\" string"))
      })
      .collect::<Result<_, _>>()?,
    Some(_) => return Err(type_err("options.sentinels", "a non-empty array of \"host:port\" strings")),
  };
  let master_name = o.string("sentinelMasterName", Some("REDIS_SENTINEL_MASTER"))?.filter(|s| !s.trim().is_empty());
  let mut sentinels = Vec::with_capacity(listed.len());
  for (name, s) in listed {
    let parsed = s.rsplit_once(':').and_then(|(host, port)| {
      let host = host.trim_start_matches('[').trim_end_matches(']');
      let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
      (!host.is_empty()).then(|| (host.to_string(), port))
    });
    sentinels.push(parsed.ok_or_else(|| type_err(&name, "\"host:port\" with a port from 1 to 65535"))?);
  }
  match (sentinels.is_empty(), master_name) {
    (true, None) => Ok(None),
    (false, Some(master_name)) => Ok(Some(SentinelTarget { sentinels, master_name })),
    (false, None) => Err(type_err(
      "options.sentinelMasterName (or REDIS_SENTINEL_MASTER)",
      "the name the sentinels monitor the master under, with options.sentinels",
    )),
    (true, Some(_)) => Err(type_err(
      "options.sentinels (or REDIS_SENTINELS)",
      "given with options.sentinelMasterName: the sentinels' \"host:port\" addresses",
    )),
  }
}

/// `redis://[user:pass@]host:port/db` or `rediss://…` (TLS). Errors quote
/// no part of the URL: a malformed one may hold its password anywhere.
fn apply_url(t: &mut RedisTarget, url: &str) -> Result<(), String> {
  let (scheme, rest) = url.split_once("://").ok_or("must look like redis://host:port")?;
  match scheme {
    "redis" => {}
    "rediss" => t.tls = Some(t.tls.take().unwrap_or_default()),
    _ => return Err("has an unsupported scheme; use redis:// or rediss://".into()),
  }
  let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
  let (userinfo, hostport) = match authority.rsplit_once('@') {
    Some((u, h)) => (Some(u), h),
    None => (None, authority),
  };
  if let Some(u) = userinfo {
    let (user, pass) = u.split_once(':').unwrap_or(("", u));
    t.username = Some(percent_decode(user)).filter(|s| !s.is_empty());
    t.password = Some(percent_decode(pass)).filter(|s| !s.is_empty());
  }
  let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
    let (h, p) = stripped.split_once(']').ok_or("has an unclosed [ in its host")?;
    (h.to_string(), p.strip_prefix(':'))
  } else {
    match hostport.rsplit_once(':') {
      Some((h, p)) => (h.to_string(), Some(p)),
      None => (hostport.to_string(), None),
    }
  };
  if !host.is_empty() {
    t.host = host;
  }
  if let Some(p) = port.filter(|p| !p.is_empty()) {
    t.port = p.parse().map_err(|_| "has an invalid port: it must be a number from 1 to 65535".to_string())?;
  }
  let db = path.split('?').next().unwrap_or("");
  if !db.is_empty() {
    t.db = db
      .parse()
      .map_err(|_| "has an invalid database number: the path must be a whole number, as in /0".to_string())?;
  }
  Ok(())
}

pub(crate) fn percent_decode(s: &str) -> String {
  let bytes = s.as_bytes();
  let mut out = Vec::with_capacity(bytes.len());
  let mut i = 0;
  while i < bytes.len() {
    if bytes[i] == b'%' && i + 2 < bytes.len() {
      let hex = |b: u8| (b as char).to_digit(16);
      if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
        out.push((h * 16 + l) as u8);
        i += 3;
        continue;
      }
    }
    out.push(bytes[i]);
    i += 1;
  }
  String::from_utf8_lossy(&out).into_owned()
}

/// A TTL in seconds: positive and finite (fractions allowed).
pub fn ttl_value(v: &Value, name: &str) -> Result<f64, CacheError> {
  let secs = v.as_f64().ok_or_else(|| type_err(name, "a number of seconds"))?;
  check_ttl(secs, name)
}

/// The largest TTL, in seconds: 2^31 - 1 (about 68 years). Far beyond any
/// cache lifetime, and every layer holds it exactly: Redis's `PX` in ms, the
/// memory tier's clock arithmetic, a JavaScript timer's seconds. Above it a
/// TTL is a `RangeError` (`index.js` checks the same bound before queueing).
pub const MAX_TTL_SECS: f64 = 2_147_483_647.0;

/// A TTL in seconds: positive, finite, at most [`MAX_TTL_SECS`].
pub fn check_ttl(secs: f64, name: &str) -> Result<f64, CacheError> {
  if secs.is_finite() && secs > 0.0 && secs <= MAX_TTL_SECS {
    Ok(secs)
  } else if secs > MAX_TTL_SECS {
    Err(CacheError::new(
      ErrorKind::Range,
      format!("{name} must be at most {MAX_TTL_SECS} seconds (about 68 years), got {secs}"),
    ))
  } else {
    Err(CacheError::new(ErrorKind::Range, format!("{name} must be a positive finite number of seconds, got {secs}")))
  }
}

/// A checked TTL as a `Duration`. Never panics: whatever slips past
/// [`check_ttl`] is clamped to the allowed range instead.
pub fn ttl_duration(secs: f64) -> Duration {
  Duration::try_from_secs_f64(secs.clamp(0.001, MAX_TTL_SECS)).unwrap_or(Duration::from_secs(MAX_TTL_SECS as u64))
}

fn type_err(name: &str, what: &str) -> CacheError {
  CacheError::new(ErrorKind::Type, format!("{name} must be {what}"))
}

/// Option lookup with an environment fallback.
struct Opts<'a> {
  opts: &'a Map<String, Value>,
  env: &'a dyn Fn(&str) -> Option<String>,
}

impl Opts<'_> {
  fn get(&self, name: &str) -> Option<&Value> {
    self.opts.get(name).filter(|v| !v.is_null())
  }

  fn has(&self, name: &str, env: Option<&str>) -> bool {
    self.get(name).is_some() || env.and_then(|e| (self.env)(e)).is_some_and(|s| !s.trim().is_empty())
  }

  fn string(&self, name: &str, env: Option<&str>) -> Result<Option<String>, CacheError> {
    match self.get(name) {
      Some(Value::String(s)) => Ok(Some(s.clone())),
      Some(_) => Err(type_err(&format!("options.{name}"), "a string")),
      None => Ok(env.and_then(|e| (self.env)(e)).filter(|s| !s.is_empty())),
    }
  }

  fn int(&self, name: &str, env: Option<&str>, min: u64, max: u64, default: u64) -> Result<u64, CacheError> {
    let (value, label) = match self.get(name) {
      Some(v) => {
        (v.as_f64().ok_or_else(|| type_err(&format!("options.{name}"), "a number"))?, format!("options.{name}"))
      }
      None => match env.and_then(|e| (self.env)(e).map(|s| (e, s))).filter(|(_, s)| !s.trim().is_empty()) {
        Some((e, s)) => (s.trim().parse::<f64>().map_err(|_| type_err(e, "a number"))?, e.to_string()),
        None => return Ok(default),
      },
    };
    if value.fract() != 0.0 || !value.is_finite() || value < min as f64 || value > max as f64 {
      return Err(CacheError::new(
        ErrorKind::Range,
        format!("{label} must be a whole number from {min} to {max}, got {value}"),
      ));
    }
    Ok(value as u64)
  }
}

/// A value that must never be printed (a webhook URL carries its token).
#[derive(Clone, PartialEq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.write_str("Secret(<redacted>)")
  }
}

/// The alert rules' settings (option `alerts`, environment `REDIS_ALERT_*`).
/// The rules run in JavaScript (`lib/alerts.js`); the core uses `enabled` and
/// `evaluate_every` for its background watch of Redis.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
  pub enabled: bool,
  /// Slack/Teams incoming-webhook URL: a secret, never shown (only its host).
  pub webhook_url: Option<Secret>,
  pub evaluate_every: Duration,
  /// How long a condition must hold before it is raised, and be gone before it is resolved.
  pub hold: Duration,
  /// The sliding window of the rate alerts.
  pub window: Duration,
  /// Calls a window needs before a rate alert can fire.
  pub min_samples: u64,
  /// Values of [`ALERT_THRESHOLDS`], in its order.
  pub thresholds: [f64; ALERT_THRESHOLDS.len()],
}

/// Each threshold: option name (under `alerts.thresholds`), environment name, default, range.
pub const ALERT_THRESHOLDS: [(&str, &str, f64, f64, f64); 8] = [
  ("hitRateWarnPct", "REDIS_ALERT_HIT_RATE_WARN_PCT", 60.0, 0.0, 100.0),
  ("hitRateCriticalPct", "REDIS_ALERT_HIT_RATE_CRITICAL_PCT", 30.0, 0.0, 100.0),
  ("responseTimeWarnMs", "REDIS_ALERT_RESPONSE_TIME_WARN_MS", 100.0, 0.0, 3_600_000.0),
  ("responseTimeCriticalMs", "REDIS_ALERT_RESPONSE_TIME_CRITICAL_MS", 150.0, 0.0, 3_600_000.0),
  ("errorRatePct", "REDIS_ALERT_ERROR_RATE_PCT", 5.0, 0.0, 100.0),
  ("disconnectedMs", "REDIS_ALERT_DISCONNECTED_MS", 30_000.0, 0.0, 86_400_000.0),
  ("memoryPct", "REDIS_ALERT_MEMORY_PCT", 80.0, 0.0, 100.0),
  ("journalPct", "REDIS_ALERT_JOURNAL_PCT", 80.0, 0.0, 100.0),
];

impl AlertsConfig {
  pub fn threshold(&self, name: &str) -> f64 {
    ALERT_THRESHOLDS.iter().position(|t| t.0 == name).map_or(f64::NAN, |i| self.thresholds[i])
  }

  /// The settings as JavaScript reads them; `webhookUrl` included, so this
  /// object is for the alert rules only, never for any output.
  pub fn to_json(&self) -> Value {
    let thresholds: Map<String, Value> =
      ALERT_THRESHOLDS.iter().zip(self.thresholds).map(|(t, v)| (t.0.to_string(), Value::from(v))).collect();
    serde_json::json!({
      "enabled": self.enabled,
      "webhookUrl": self.webhook_url.as_ref().map(|Secret(url)| url.clone()),
      "webhookHost": self.webhook_host(),
      "evaluateEveryMs": self.evaluate_every.as_millis() as u64,
      "forMs": self.hold.as_millis() as u64,
      "windowMs": self.window.as_millis() as u64,
      "minSamples": self.min_samples,
      "thresholds": thresholds,
    })
  }

  /// The host of the webhook URL, the only part of it that may be shown.
  pub fn webhook_host(&self) -> Option<String> {
    self.webhook_url.as_ref().and_then(|Secret(url)| url_host(url)).map(str::to_string)
  }
}

/// `http(s)://[user@]host[:port]/...` → `host[:port]`.
fn url_host(url: &str) -> Option<&str> {
  let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
  let authority = rest.split(['/', '?', '#']).next()?;
  let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
  Some(host).filter(|h| !h.is_empty() && !h.starts_with(':'))
}

fn resolve_alerts(option: Option<&Value>, env: &dyn Fn(&str) -> Option<String>) -> Result<AlertsConfig, CacheError> {
  let empty = Map::new();
  let (enabled, opts) = match option {
    None => {
      let off =
        env("REDIS_MONITORING_ENABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("false") || v.trim() == "0");
      (!off, &empty)
    }
    Some(Value::Bool(on)) => (*on, &empty),
    Some(Value::Object(map)) => (true, map),
    Some(_) => return Err(type_err("options.alerts", "false, true or an object of alert settings")),
  };
  const KNOWN: [&str; 6] = ["webhookUrl", "evaluateEveryMs", "forMs", "windowMs", "minSamples", "thresholds"];
  if let Some(unknown) = opts.keys().find(|k| !KNOWN.contains(&k.as_str())) {
    return Err(CacheError::new(ErrorKind::Type, format!("options.alerts.{unknown} is not a known alert setting")));
  }
  // A number from `map[name]` (labelled `label`), else the environment, else the default.
  let number = |map: &Map<String, Value>, label: &str, name: &str, env_name: &str, default: f64, min: f64, max: f64| {
    let (value, label) = match map.get(name).filter(|v| !v.is_null()) {
      Some(v) => {
        (v.as_f64().ok_or_else(|| type_err(&format!("{label}.{name}"), "a number"))?, format!("{label}.{name}"))
      }
      None => match env(env_name).filter(|s| !s.trim().is_empty()) {
        Some(s) => (s.trim().parse::<f64>().map_err(|_| type_err(env_name, "a number"))?, env_name.to_string()),
        None => return Ok(default),
      },
    };
    if !value.is_finite() || value < min || value > max {
      return Err(CacheError::new(ErrorKind::Range, format!("{label} must be from {min} to {max}, got {value}")));
    }
    Ok(value)
  };
  let whole = |name: &str, env_name: &str, default: f64, min: f64, max: f64| -> Result<u64, CacheError> {
    let v = number(opts, "options.alerts", name, env_name, default, min, max)?;
    if v.fract() != 0.0 {
      return Err(CacheError::new(ErrorKind::Range, format!("options.alerts.{name} must be a whole number, got {v}")));
    }
    Ok(v as u64)
  };

  let webhook_url = match opts.get("webhookUrl").filter(|v| !v.is_null()) {
    Some(Value::String(s)) => Some(s.clone()),
    Some(_) => return Err(type_err("options.alerts.webhookUrl", "an http(s) URL string")),
    None => env("REDIS_ALERT_WEBHOOK_URL").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
  };
  // The message never repeats the URL: it carries a secret token.
  if let Some(url) = &webhook_url {
    if url_host(url).is_none() {
      return Err(type_err("options.alerts.webhookUrl (or REDIS_ALERT_WEBHOOK_URL)", "an http:// or https:// URL"));
    }
  }

  let empty_thresholds = Map::new();
  let given = match opts.get("thresholds") {
    None | Some(Value::Null) => &empty_thresholds,
    Some(Value::Object(map)) => map,
    Some(_) => return Err(type_err("options.alerts.thresholds", "an object of thresholds")),
  };
  if let Some(unknown) = given.keys().find(|k| !ALERT_THRESHOLDS.iter().any(|t| t.0 == k.as_str())) {
    return Err(CacheError::new(
      ErrorKind::Type,
      format!("options.alerts.thresholds.{unknown} is not a known threshold"),
    ));
  }
  let mut thresholds = [0.0; ALERT_THRESHOLDS.len()];
  for (slot, (name, env_name, default, min, max)) in thresholds.iter_mut().zip(ALERT_THRESHOLDS) {
    *slot = number(given, "options.alerts.thresholds", name, env_name, default, min, max)?;
  }
  let config = AlertsConfig {
    enabled,
    webhook_url: webhook_url.map(Secret),
    evaluate_every: Duration::from_millis(whole(
      "evaluateEveryMs",
      "REDIS_ALERT_EVALUATE_EVERY_MS",
      5000.0,
      10.0,
      3_600_000.0,
    )?),
    hold: Duration::from_millis(whole("forMs", "REDIS_ALERT_FOR_MS", 30_000.0, 0.0, 86_400_000.0)?),
    window: Duration::from_millis(whole("windowMs", "REDIS_ALERT_WINDOW_MS", 60_000.0, 100.0, 86_400_000.0)?),
    min_samples: whole("minSamples", "REDIS_ALERT_MIN_SAMPLES", 100.0, 1.0, 1e9)?,
    thresholds,
  };
  // A warning must come before its critical level, or the critical one could never show.
  let pairs = [("hitRateCriticalPct", "hitRateWarnPct"), ("responseTimeWarnMs", "responseTimeCriticalMs")];
  for (low, high) in pairs {
    if config.threshold(low) > config.threshold(high) {
      return Err(CacheError::new(
        ErrorKind::Range,
        format!(
          "options.alerts.thresholds.{low} ({}) must not exceed {high} ({})",
          config.threshold(low),
          config.threshold(high)
        ),
      ));
    }
  }
  Ok(config)
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  #[test]
  fn ttls_are_capped_and_never_panic_as_durations() {
    assert_eq!(check_ttl(MAX_TTL_SECS, "ttl"), Ok(MAX_TTL_SECS));
    assert_eq!(check_ttl(0.5, "ttl"), Ok(0.5));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_TTL_SECS + 1.0, 9.3e18, 1e20, f64::MAX] {
      let e = check_ttl(bad, "ttl").unwrap_err();
      assert_eq!(e.kind, ErrorKind::Range, "{bad}");
      assert!(e.message.starts_with("ttl must be"), "{}", e.message);
    }
    for any in [f64::MAX, f64::NAN, f64::INFINITY, -1.0, 0.0, 1e20, 7200.0] {
      assert!(ttl_duration(any) <= Duration::from_secs(MAX_TTL_SECS as u64), "{any}");
    }
    assert_eq!(ttl_duration(7200.0), Duration::from_secs(7200));
  }

  fn no_env(_: &str) -> Option<String> {
    None
  }

  #[test]
  fn defaults_follow_the_contract() {
    let c = resolve(&Value::Null, &no_env).unwrap();
    assert_eq!(c.command_timeout, Duration::from_millis(250));
    assert_eq!(c.connect_timeout, Duration::from_millis(1000));
    assert_eq!(c.breaker_failures, 5);
    assert_eq!(c.compression_threshold, 1024);
    assert_eq!(c.memory_max_entries, 100_000);
    assert_eq!(c.replay_max_bytes, 128 * 1024 * 1024);
    assert_eq!(c.key_prefix, "jack:dev");
    assert_eq!(c.ttl(TtlName::SseResponse), 10.0);
    assert_eq!(c.redis.unwrap().port, 6379);
    assert_eq!(c.max_value_bytes, DEFAULT_MAX_VALUE_BYTES);
  }

  #[test]
  fn max_value_bytes_from_option_or_environment_within_redis_limit() {
    let env = |k: &str| (k == "CACHE_MAX_VALUE_BYTES").then(|| "4096".to_string());
    assert_eq!(resolve(&Value::Null, &env).unwrap().max_value_bytes, 4096);
    assert_eq!(resolve(&json!({"maxValueBytes": 100}), &env).unwrap().max_value_bytes, 100);
    for bad in [json!(0), json!(MAX_VALUE_BYTES_LIMIT + 1), json!(1.5)] {
      let e = resolve(&json!({ "maxValueBytes": bad }), &no_env).unwrap_err();
      assert_eq!(e.kind, ErrorKind::Range, "{bad}");
      assert!(e.message.contains("options.maxValueBytes"), "{}", e.message);
    }
    let env = |k: &str| (k == "CACHE_MAX_VALUE_BYTES").then(|| "lots".to_string());
    assert!(resolve(&Value::Null, &env).unwrap_err().message.contains("CACHE_MAX_VALUE_BYTES"));
  }

  #[test]
  fn url_and_env_and_options_combine_with_options_winning() {
    let env = |k: &str| match k {
      "REDIS_URL" => Some("rediss://bob:s%40cret@cache.local:6380/2".to_string()),
      "REDIS_PORT" => Some("7000".to_string()),
      "NODE_ENV" => Some("production".to_string()),
      _ => None,
    };
    let c = resolve(&json!({ "port": 7001 }), &env).unwrap();
    let t = c.redis.unwrap();
    assert_eq!((t.host.as_str(), t.port, t.db), ("cache.local", 7001, 2));
    assert_eq!(t.username.as_deref(), Some("bob"));
    assert_eq!(t.password.as_deref(), Some("s@cret"));
    assert!(t.tls.is_some());
    assert_eq!(c.key_prefix, "jack:prod");
  }

  #[test]
  fn redis_enabled_false_disables_redis() {
    let env = |k: &str| (k == "REDIS_ENABLED").then(|| "false".to_string());
    assert!(resolve(&Value::Null, &env).unwrap().redis.is_none());
    assert!(resolve(&json!({"enabled": false}), &no_env).unwrap().redis.is_none());
  }

  #[test]
  fn bad_options_name_the_option() {
    let e = resolve(&json!({"port": "x"}), &no_env).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Type);
    assert!(e.message.contains("options.port"), "{}", e.message);
    let e = resolve(&json!({"ttl": {"leadData": -1}}), &no_env).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Range);
    assert!(e.message.contains("options.ttl.leadData"));
    let e = resolve(&json!({"ttl": {"leadData": f64::MAX}}), &no_env).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Range);
    assert!(e.message.contains("options.ttl.leadData"));
    let huge = |k: &str| (k == "CACHE_DEFAULT_TTL").then(|| "1e20".to_string());
    let e = resolve(&Value::Null, &huge).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Range);
    assert!(e.message.contains("CACHE_DEFAULT_TTL"), "{}", e.message);
    let e = resolve(&json!({"poolSize": 0}), &no_env).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Range);
    assert!(resolve(&json!({"nope": 1}), &no_env).unwrap_err().message.contains("options.nope"));
    assert!(resolve(&json!({"url": "http://x"}), &no_env).unwrap_err().message.contains("options.url"));
  }

  #[test]
  fn errors_never_carry_a_password() {
    let urls = [
      "redis://:S3cr-et@h:notaport",
      "redis://u:S3cr-et@h:1/notadb",
      "redis://:S3cr-et",
      "S3cr-et://h",
      "redis://u:S3cr/et@h:1",
      "redis://u:S3cr:et@[::1",
    ];
    for url in urls {
      let e = resolve(&json!({ "url": url }), &no_env).unwrap_err();
      assert!(e.message.starts_with("options.url "), "{url}: {}", e.message);
      assert!(!e.message.contains("S3cr") && !e.message.contains("et"), "{url}: {}", e.message);
    }
    let env = |k: &str| (k == "REDIS_PASSWORD").then(|| "S3cr-et".to_string());
    // A message that does echo something (an unknown option's name) is redacted.
    let e = resolve(&json!({ "S3cr-et": 1 }), &env).unwrap_err();
    assert_eq!(e.message, "options.*** is not a known option");
    let e = resolve(&json!({ "url": "redis://:p%40ss@h", "ttl": { "p@ss": 1 } }), &no_env).unwrap_err();
    assert_eq!(e.message, "options.ttl.*** is not a known TTL name");
  }

  #[test]
  fn alerts_default_to_the_seeds_and_read_the_environment() {
    let c = resolve(&Value::Null, &no_env).unwrap().alerts;
    assert!(c.enabled);
    assert_eq!((c.hold, c.window, c.min_samples), (Duration::from_secs(30), Duration::from_secs(60), 100));
    assert_eq!(c.threshold("hitRateCriticalPct"), 30.0);
    assert_eq!(c.threshold("responseTimeCriticalMs"), 150.0);
    assert_eq!(c.threshold("disconnectedMs"), 30_000.0);
    let env = |k: &str| match k {
      "REDIS_ALERT_WEBHOOK_URL" => Some("https://hooks.example.com/services/T0/B0/tok3n".to_string()),
      "REDIS_ALERT_MEMORY_PCT" => Some("90".to_string()),
      _ => None,
    };
    let c = resolve(&json!({"alerts": {"forMs": 300, "thresholds": {"errorRatePct": 2.5}}}), &env).unwrap().alerts;
    assert_eq!(c.hold, Duration::from_millis(300));
    assert_eq!((c.threshold("errorRatePct"), c.threshold("memoryPct")), (2.5, 90.0));
    assert_eq!(c.webhook_host().as_deref(), Some("hooks.example.com"));
    assert!(!format!("{c:?}").contains("tok3n"), "Debug must not show the webhook URL");
    let off = |k: &str| (k == "REDIS_MONITORING_ENABLED").then(|| "false".to_string());
    assert!(!resolve(&Value::Null, &off).unwrap().alerts.enabled);
    assert!(!resolve(&json!({"alerts": false}), &no_env).unwrap().alerts.enabled);
  }

  #[test]
  fn bad_alert_settings_name_the_setting_and_never_echo_the_url() {
    let e = resolve(&json!({"alerts": {"thresholds": {"memoryPct": 120}}}), &no_env).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Range);
    assert!(e.message.contains("options.alerts.thresholds.memoryPct"), "{}", e.message);
    let e = resolve(&json!({"alerts": {"webhookUrl": "ftp://x/s3cret"}}), &no_env).unwrap_err();
    assert!(e.message.contains("webhookUrl") && !e.message.contains("s3cret"), "{}", e.message);
    let e = resolve(&json!({"alerts": {"thresholds": {"hitRateWarnPct": 20}}}), &no_env).unwrap_err();
    assert!(e.message.contains("hitRateCriticalPct"), "{}", e.message);
    assert!(resolve(&json!({"alerts": {"nope": 1}}), &no_env).unwrap_err().message.contains("options.alerts.nope"));
    assert!(resolve(&json!({"alerts": {"forMs": 1.5}}), &no_env).unwrap_err().message.contains("options.alerts.forMs"));
    assert_eq!(resolve(&json!({"alerts": "on"}), &no_env).unwrap_err().kind, ErrorKind::Type);
  }

  #[test]
  fn cluster_seeds_and_sentinels_come_from_options_or_environment() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
      move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    };
    let seeds = env(&[("REDIS_CLUSTER_NODES", "redis://a:7000, redis://:pw@b:7001")]);
    let t = resolve(&json!({}), &seeds).unwrap().redis.unwrap();
    assert_eq!(t.cluster_nodes, vec!["redis://a:7000", "redis://:pw@b:7001"]);
    // The option wins over the environment.
    let t = resolve(&json!({"clusterNodes": ["redis://c:7002"]}), &seeds).unwrap().redis.unwrap();
    assert_eq!(t.cluster_nodes, vec!["redis://c:7002"]);
    let bad = env(&[("REDIS_CLUSTER_NODES", "redis://a:7000,http://b:1")]);
    let e = resolve(&json!({}), &bad).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Type);
    assert!(e.message.contains("REDIS_CLUSTER_NODES entry 2"), "{}", e.message);

    let sentinels = env(&[("REDIS_SENTINELS", "10.0.0.1:26379,s2:26380"), ("REDIS_SENTINEL_MASTER", "mymaster")]);
    let t = resolve(&json!({}), &sentinels).unwrap().redis.unwrap();
    let s = t.sentinel.unwrap();
    assert_eq!(s.sentinels, vec![("10.0.0.1".to_string(), 26379), ("s2".to_string(), 26380)]);
    assert_eq!(s.master_name, "mymaster");
    let t = resolve(&json!({"sentinels": ["h:1"], "sentinelMasterName": "m"}), &|_| None).unwrap().redis.unwrap();
    assert_eq!(t.sentinel.unwrap().sentinels, vec![("h".to_string(), 1)]);

    let no_env = |_: &str| None;
    for (options, names) in [
      (json!({"sentinels": ["h:1"]}), "options.sentinelMasterName"),
      (json!({"sentinelMasterName": "m"}), "options.sentinels"),
      (json!({"sentinels": ["h"], "sentinelMasterName": "m"}), "options.sentinels[0]"),
      (json!({"sentinels": ["h:0"], "sentinelMasterName": "m"}), "options.sentinels[0]"),
      (json!({"sentinels": [1], "sentinelMasterName": "m"}), "options.sentinels[0]"),
      (json!({"sentinels": "h:1", "sentinelMasterName": "m"}), "options.sentinels"),
      (json!({"sentinels": ["h:1"], "sentinelMasterName": "m", "clusterNodes": ["redis://a:1"]}), "exclude"),
    ] {
      let e = resolve(&options, &no_env).unwrap_err();
      assert_eq!(e.kind, ErrorKind::Type, "{options}");
      assert!(e.message.contains(names), "{options}: {}", e.message);
    }
  }
}
