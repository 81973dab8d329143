//! The Redis tier: a pool of multiplexed connections (or one cluster
//! connection), every batch sent as one pipeline, and every wait bounded.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, Value};

use crate::batch::Op;
use crate::codec;
use crate::config::{RedisTarget, TlsFiles};

/// Why a round trip to Redis failed as a whole (the breaker counts these).
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

/// One command's own outcome inside a round trip that reached Redis.
pub type Outcome = Result<Value, String>;

#[derive(Clone)]
enum Conn {
  Single(ConnectionManager),
  Cluster(ClusterConnection),
}

pub struct RedisTier {
  target: RedisTarget,
  pool_size: usize,
  command_timeout: Duration,
  connect_timeout: Duration,
  conns: RwLock<Vec<Conn>>,
  next: AtomicUsize,
  /// Set by `disconnect`: no connection is opened again.
  closed: AtomicBool,
}

impl RedisTier {
  pub fn new(target: RedisTarget, pool_size: usize, command_timeout: Duration, connect_timeout: Duration) -> Self {
    Self {
      target,
      pool_size: pool_size.max(1),
      command_timeout,
      connect_timeout,
      conns: RwLock::new(Vec::new()),
      next: AtomicUsize::new(0),
      closed: AtomicBool::new(false),
    }
  }

  pub fn is_cluster(&self) -> bool {
    !self.target.cluster_nodes.is_empty()
  }

  /// Connections currently open.
  pub fn connections(&self) -> usize {
    self.conns.read().unwrap().len()
  }

  /// Drops the pool: each connection closes once the commands using it finish.
  pub fn disconnect(&self) {
    self.closed.store(true, Ordering::Release);
    self.conns.write().unwrap().clear();
  }

  /// Opens the pool if it is not open yet. Bounded by the connect timeout.
  pub async fn connect(&self) -> Result<(), Unavailable> {
    if self.connections() > 0 {
      return Ok(());
    }
    let budget = self.connect_timeout + self.connect_timeout / 2;
    let opened = tokio::time::timeout(budget, self.open())
      .await
      .map_err(|_| Unavailable(format!("connect timed out after {} ms", budget.as_millis())))??;
    let mut conns = self.conns.write().unwrap();
    if self.closed.load(Ordering::Acquire) {
      return Err(Unavailable("the adapter is closed".into()));
    }
    if conns.is_empty() {
      *conns = opened;
    }
    Ok(())
  }

  async fn open(&self) -> Result<Vec<Conn>, Unavailable> {
    let certs = load_certs(self.target.tls.as_ref()).map_err(Unavailable)?;
    if certs.is_some() {
      // Another library in the process may have chosen one already; either is fine.
      let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if self.is_cluster() {
      let mut b = ClusterClientBuilder::new(self.target.cluster_nodes.clone())
        .connection_timeout(self.connect_timeout)
        .response_timeout(self.command_timeout)
        .retries(1);
      if let Some(u) = &self.target.username {
        b = b.username(u);
      }
      if let Some(p) = &self.target.password {
        b = b.password(p);
      }
      if let Some(certs) = certs {
        b = b.tls(redis::cluster::TlsMode::Secure).certs(certs);
      }
      let client = b.build().map_err(unavailable)?;
      let conn = client.get_async_connection().await.map_err(unavailable)?;
      return Ok(vec![Conn::Cluster(conn)]);
    }
    let info = self.connection_info()?;
    let client = match certs {
      Some(certs) => Client::build_with_tls(info, certs),
      None => Client::open(info),
    }
    .map_err(unavailable)?;
    let config = ConnectionManagerConfig::new()
      .set_connection_timeout(Some(self.connect_timeout))
      .set_response_timeout(Some(self.command_timeout))
      // Reconnect quickly and give up quickly: the breaker and the memory
      // tier take over while Redis is away (redis-rs defaults take ~9 s).
      .set_number_of_retries(1)
      .set_min_delay(Duration::from_millis(10))
      .set_max_delay(Duration::from_millis(100));
    let opens = (0..self.pool_size).map(|_| ConnectionManager::new_with_config(client.clone(), config.clone()));
    join_all(opens).await.into_iter().map(|r| r.map(Conn::Single).map_err(unavailable)).collect()
  }

  fn connection_info(&self) -> Result<ConnectionInfo, Unavailable> {
    let t = &self.target;
    let addr = if t.tls.is_some() {
      ConnectionAddr::TcpTls { host: t.host.clone(), port: t.port, insecure: false, tls_params: None }
    } else {
      ConnectionAddr::Tcp(t.host.clone(), t.port)
    };
    let mut redis_info = redis::RedisConnectionInfo::default().set_db(t.db);
    if let Some(u) = &t.username {
      redis_info = redis_info.set_username(u);
    }
    if let Some(p) = &t.password {
      redis_info = redis_info.set_password(p);
    }
    let info = addr.into_connection_info().map_err(unavailable)?;
    Ok(info.set_redis_settings(redis_info))
  }

  fn pick(&self) -> Option<Conn> {
    let conns = self.conns.read().unwrap();
    if conns.is_empty() {
      return None;
    }
    let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
    Some(conns[i].clone())
  }

  /// Sends the pipeline in one round trip (on a cluster, one command per
  /// node, concurrently) and returns each command's outcome.
  pub async fn run(&self, pipe: &Pipeline) -> Result<Vec<Outcome>, Unavailable> {
    let conn = self.pick().ok_or_else(|| Unavailable("not connected".into()))?;
    let work = async move {
      match conn {
        Conn::Single(mut c) => {
          let values: Vec<Value> = c.req_packed_commands(pipe, 0, pipe.len()).await.map_err(unavailable)?;
          Ok(values.into_iter().map(outcome).collect())
        }
        Conn::Cluster(c) => {
          let sends = pipe.cmd_iter().map(|cmd| {
            let mut c = c.clone();
            async move { c.req_packed_command(cmd).await }
          });
          let mut out = Vec::with_capacity(pipe.len());
          for r in join_all(sends).await {
            match r {
              Ok(v) => out.push(outcome(v)),
              Err(e) if is_server_error(&e) => out.push(Err(match (e.code(), e.detail()) {
                (Some(code), Some(detail)) => format!("{code} {detail}"),
                _ => e.to_string(),
              })),
              Err(e) => return Err(unavailable(e)),
            }
          }
          Ok(out)
        }
      }
    };
    let outcomes = tokio::time::timeout(self.command_timeout, work)
      .await
      .map_err(|_| Unavailable(format!("command timed out after {} ms", self.command_timeout.as_millis())))??;
    // A Redis that is loading, out of memory, read-only or without its
    // cluster is unavailable, not refusing this data: the batch goes to memory.
    if let Some(Err(e)) = outcomes.iter().find(|o| matches!(o, Err(e) if is_unavailability(e))) {
      return Err(Unavailable(e.clone()));
    }
    Ok(outcomes)
  }

  /// One command, for the maintenance paths; a server error is an `Err` too.
  pub async fn run_one(&self, cmd: Cmd) -> Result<Value, Unavailable> {
    let mut pipe = Pipeline::with_capacity(1);
    pipe.add_command(cmd);
    let mut out = self.run(&pipe).await?;
    out.pop().unwrap_or_else(|| Err("no reply".into())).map_err(Unavailable)
  }

  /// `SCAN`s for `pattern` and `UNLINK`s what it finds, in batches, each step
  /// bounded by the command timeout. `route_key` is a key in the same hash
  /// slot as every match (on a cluster the scan runs on that slot's node).
  pub async fn scan_unlink(&self, pattern: &str, route_key: &str) -> Result<u64, Unavailable> {
    let mut cursor: u64 = 0;
    let mut removed = 0;
    let started = Instant::now();
    loop {
      let mut scan = redis::cmd("SCAN");
      scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
      let reply = self.run_routed(scan, route_key).await?;
      let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply).map_err(|e| Unavailable(e.to_string()))?;
      if !keys.is_empty() {
        let mut unlink = redis::cmd("UNLINK");
        unlink.arg(&keys);
        let n: u64 =
          redis::from_redis_value(self.run_routed(unlink, route_key).await?).map_err(|e| Unavailable(e.to_string()))?;
        removed += n;
      }
      cursor = next;
      if cursor == 0 {
        return Ok(removed);
      }
      // A bound, not a goal: a keyspace this large would need minutes.
      if started.elapsed() > Duration::from_secs(60) {
        return Err(Unavailable("clear took over 60 s; stopped".into()));
      }
    }
  }

  /// One command on the node that owns `route_key`'s slot.
  pub async fn run_routed(&self, cmd: Cmd, route_key: &str) -> Result<Value, Unavailable> {
    match self.pick().ok_or_else(|| Unavailable("not connected".into()))? {
      Conn::Single(_) => self.run_one(cmd).await,
      Conn::Cluster(mut c) => {
        let route =
          RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(route_key, SlotAddr::Master)));
        tokio::time::timeout(self.command_timeout, c.route_command(cmd, route))
          .await
          .map_err(|_| Unavailable("command timed out".into()))?
          .map_err(unavailable)
      }
    }
  }

  /// `PING` round trip time and the server's version.
  pub async fn ping(&self) -> Result<(Duration, Option<String>), Unavailable> {
    let t0 = Instant::now();
    self.run_one(redis::cmd("PING")).await?;
    let latency = t0.elapsed();
    let mut info = redis::cmd("INFO");
    info.arg("server");
    let version = match self.run_one(info).await {
      Ok(v) => redis::from_redis_value::<String>(v)
        .ok()
        .and_then(|text| text.lines().find_map(|l| l.strip_prefix("redis_version:").map(|v| v.trim().to_string()))),
      Err(_) => None,
    };
    Ok((latency, version))
  }
}

fn outcome(v: Value) -> Outcome {
  match v {
    Value::ServerError(e) => Err(match e.details() {
      Some(details) => format!("{} {details}", e.code()),
      None => e.code().to_string(),
    }),
    v => Ok(v),
  }
}

/// Server error codes that say Redis cannot serve now, whatever the command.
fn is_unavailability(error: &str) -> bool {
  const CODES: [&str; 9] =
    ["LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "OOM", "NOREPLICAS", "MISCONF"];
  let code = error.split_whitespace().next().unwrap_or("");
  CODES.contains(&code)
}

fn is_server_error(e: &RedisError) -> bool {
  !(e.is_io_error()
    || e.is_timeout()
    || e.is_connection_dropped()
    || e.is_connection_refusal()
    || e.is_unrecoverable_error())
    && e.kind() != redis::ErrorKind::Client
}

/// A redis-rs error as a reason; URL credentials masked at once, in case
/// the error quotes a connection address.
fn unavailable(e: RedisError) -> Unavailable {
  Unavailable(crate::redact::mask_userinfo(&e.to_string()))
}

pub fn load_certs(tls: Option<&TlsFiles>) -> Result<Option<redis::TlsCertificates>, String> {
  let Some(files) = tls else { return Ok(None) };
  let read = |path: &Option<String>| -> Result<Option<Vec<u8>>, String> {
    path.as_ref().map(|p| std::fs::read(p).map_err(|e| format!("cannot read TLS file {p}: {e}"))).transpose()
  };
  let client_tls = match (read(&files.cert_file)?, read(&files.key_file)?) {
    (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig { client_cert, client_key }),
    (None, None) => None,
    _ => return Err("TLS certFile and keyFile go together".into()),
  };
  Ok(Some(redis::TlsCertificates { client_tls, root_cert: read(&files.ca_file)? }))
}

/// `INCRBY` for values in our format: the counter keeps a header (and so a
/// write time for replays), its TTL, or gets `ARGV[3]` ms when it had none.
/// Plain digits (the old adapter's, or anyone's) count too.
const INCREMENT_SCRIPT: &str = r#"
local v = redis.call('GET', KEYS[1])
local n = 0
if v then
  if string.byte(v, 1) == 254 then
    if string.byte(v, 2) ~= 1 then return redis.error_reply('ERR value is not an integer or out of range') end
    v = string.sub(v, 11)
  end
  n = tonumber(v)
  if n == nil or n ~= math.floor(n) or string.find(v, '[^-0-9 ]') then
    return redis.error_reply('ERR value is not an integer or out of range')
  end
end
n = n + tonumber(ARGV[1])
if math.abs(n) > 9007199254740991 then return redis.error_reply('ERR increment or decrement would overflow') end
redis.call('SET', KEYS[1], ARGV[2] .. string.format('%d', n), 'KEEPTTL')
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return n
"#;

/// What [`WRITE_SCRIPT`] answers when Redis holds a newer write of the key.
pub const WRITE_SUPERSEDED: i64 = -1;

/// Every write carries its write time and is applied only if Redis holds no
/// newer write of the key (or hash field). A command whose connection timed
/// out may still reach Redis later (bytes in a kernel buffer or a middlebox
/// outlive the connection that sent them); with this check such a late write
/// can never overwrite a newer one, whenever it lands. `GETRANGE 0 9` reads
/// only the header, so the check does not copy large values. A write time
/// more than 2 s ahead of Redis's own clock is not trusted (a host with a
/// clock far ahead would otherwise block every other writer of that key).
/// KEYS[1]: key; ARGV: op (set, del, hset, hdel), write time (ms), TTL (ms),
/// encoded value, field. Answers -1 (superseded), or the command's own reply.
pub const WRITE_SCRIPT: &str = r#"
local function ts(v)
  if type(v) ~= 'string' or #v < 10 or string.byte(v, 1) ~= 254 then return 0 end
  local t = 0
  for i = 3, 10 do t = t * 256 + string.byte(v, i) end
  return t
end
local op, mine, key = ARGV[1], tonumber(ARGV[2]), KEYS[1]
local clock = redis.call('TIME')
local trusted = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + 2000
local function newer(v)
  local t = ts(v)
  return t > mine and t <= trusted
end
if op == 'set' or op == 'del' then
  local ok, head = pcall(redis.call, 'GETRANGE', key, 0, 9)
  if ok and newer(head) then return -1 end
  if op == 'del' then return redis.call('UNLINK', key) end
  redis.call('SET', key, ARGV[4], 'PX', ARGV[3])
  return 1
end
local ok, current = pcall(redis.call, 'HGET', key, ARGV[5])
if ok and newer(current) then return -1 end
if op == 'hdel' then return redis.call('HDEL', key, ARGV[5]) end
local n = redis.call('HSET', key, ARGV[5], ARGV[4])
redis.call('PEXPIRE', key, ARGV[3])
return n
"#;

fn push_write(pipe: &mut Pipeline, op: &str, key: &str, now_ms: u64, ttl_ms: u64, value: &[u8], field: &str) {
  pipe.cmd("EVAL").arg(WRITE_SCRIPT).arg(1).arg(key).arg(op).arg(now_ms).arg(ttl_ms).arg(value).arg(field);
}

/// Appends the Redis commands of one operation to a batch's pipeline;
/// `encoded` is its value already encoded, if it was (off this thread).
pub fn push_op(op: &Op, pipe: &mut Pipeline, encoded: Option<Vec<u8>>, threshold: usize, now_ms: u64) {
  let mut encoded = encoded;
  let mut encode = |json: &str| encoded.take().unwrap_or_else(|| codec::encode(json, threshold, now_ms));
  let px = |ttl: &Duration| ttl.as_millis().max(1) as u64;
  match op {
    Op::Get { key, .. } => {
      pipe.cmd("GET").arg(key);
    }
    Op::Set { key, json, ttl, .. } => {
      push_write(pipe, "set", key, now_ms, px(ttl), &encode(json), "");
    }
    Op::Delete { key } => {
      push_write(pipe, "del", key, now_ms, 0, &[], "");
    }
    Op::Exists { key } => {
      pipe.cmd("EXISTS").arg(key);
    }
    Op::Expire { key, ttl } => {
      pipe.cmd("PEXPIRE").arg(key).arg(px(ttl));
    }
    Op::Increment { key, by, ttl, .. } => {
      let header = codec::header(now_ms);
      pipe.cmd("EVAL").arg(INCREMENT_SCRIPT).arg(1).arg(key).arg(*by).arg(header).arg(px(ttl));
    }
    Op::HGet { key, field } => {
      pipe.cmd("HGET").arg(key).arg(field);
    }
    Op::HSet { key, field, json, ttl, .. } => {
      push_write(pipe, "hset", key, now_ms, px(ttl), &encode(json), field);
    }
    Op::HDel { key, field } => {
      push_write(pipe, "hdel", key, now_ms, 0, &[], field);
    }
    Op::HGetAll { key } => {
      pipe.cmd("HGETALL").arg(key);
    }
    Op::ClearOrg { .. } => {}
    Op::Tag { key, tag_keys, ttl } => {
      for tag in tag_keys {
        pipe.cmd("EVAL").arg(crate::tags::TAG_SCRIPT).arg(1).arg(tag).arg(key).arg(px(ttl));
      }
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn unavailability_is_told_from_data_errors() {
    assert!(is_unavailability("LOADING Redis is loading the dataset in memory"));
    assert!(is_unavailability("OOM command not allowed when used memory > 'maxmemory'."));
    assert!(is_unavailability("READONLY You can't write against a read only replica."));
    assert!(!is_unavailability("WRONGTYPE Operation against a key holding the wrong kind of value"));
    assert!(!is_unavailability("ERR value is not an integer or out of range"));
  }
}
