//! The `doctor` command's checks: is this Redis fit for the adapter (reachable,
//! fast, authenticated, evicting, writable, and what a migration left behind)?
//!
//! It takes the adapter's own [`Config`] (options and environment through
//! [`config::resolve`], so the two cannot disagree about where Redis is or how
//! to talk to it), opens a connection of its own with bounded waits, and
//! returns one [`Check`] per line for `bin/doctor.js` to print. The judgements
//! are pure functions, tested below without a server.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, RedisError, Value};
use serde::Serialize;

use crate::codec;
use crate::config::{self, Config, RedisTarget};
use crate::domain;
use crate::keys::glob_escape;
use crate::near::Heartbeat;
use crate::tiers::redis::load_certs;

/// How bad one finding is. `Fail` makes the command exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
  Pass,
  Warn,
  Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
  pub name: &'static str,
  pub status: Status,
  pub detail: String,
}

impl Check {
  fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
    Self { name, status, detail: detail.into() }
  }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
  /// No check failed.
  pub ok: bool,
  /// Where Redis is, as `host:port` (never with credentials).
  pub target: String,
  pub checks: Vec<Check>,
}

impl Report {
  fn new(target: String, checks: Vec<Check>) -> Self {
    Self { ok: checks.iter().all(|c| c.status != Status::Fail), target, checks }
  }
}

/// PINGs for the latency figures: enough for a p99 that means something,
/// few enough to finish in well under a second on a healthy link.
const LATENCY_PINGS: usize = 300;
const LATENCY_BUDGET: Duration = Duration::from_secs(3);
/// The doctor's own commands (INFO, SCAN, CONFIG) may take longer than the
/// adapter's hot-path bound; they get at least this long.
const PROBE_TIMEOUT_FLOOR: Duration = Duration::from_secs(2);
/// Bounds of the scan for the old adapter's keys, over all nodes.
const SCAN_COUNT: u64 = 1000;
const SCAN_MAX_STEPS: usize = 200;
const SCAN_BUDGET: Duration = Duration::from_secs(5);
/// Found old keys whose TTL is looked at.
const TTL_SAMPLE: usize = 20;
/// Redis 6.0 brought `SET … KEEPTTL`, which the increment script uses.
const MIN_VERSION: (u32, u32) = (6, 0);

/// Options (JSON text) and the environment resolved exactly as the adapter
/// resolves them; an error becomes a report with one failed `config` line.
pub fn configure(options_json: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Box<Report>> {
  let options: serde_json::Value = serde_json::from_str(options_json).map_err(|e| {
    Box::new(Report::new(String::new(), vec![Check::new("config", Status::Fail, format!("options are not JSON: {e}"))]))
  })?;
  config::resolve(&options, env)
    .map_err(|e| Box::new(Report::new(String::new(), vec![Check::new("config", Status::Fail, e.message)])))
}

/// Runs every check that applies; stops at the first step that leaves
/// nothing to talk to (no connection, rejected credentials).
pub async fn run(cfg: &Config) -> Report {
  let Some(target) = &cfg.redis else {
    return Report::new(
      "disabled".into(),
      vec![Check::new(
        "redis",
        Status::Warn,
        "disabled (enabled: false, REDIS_ENABLED=false or USE_REDIS=false): the adapter serves from its memory tier \
         only and never contacts Redis; nothing to check",
      )],
    );
  };
  // Behind Sentinel: the master the sentinels name now is the server checked.
  let (found, sentinel_check) = match &target.sentinel {
    Some(sentinel) => match sentinel_master(target, cfg.connect_timeout.max(PROBE_TIMEOUT_FLOOR)).await {
      Ok(master) => {
        let detail = format!(
          "the sentinels ({}) name {master} as master {:?}; that server is checked below",
          sentinel.sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(", "),
          sentinel.master_name
        );
        let mut found = target.clone();
        (found.host, found.port, found.sentinel) = (master.host, master.port, None);
        (Some(found), Some(Check::new("sentinel", Status::Pass, detail)))
      }
      Err(why) => {
        let detail = format!("no master {:?} found through the sentinels: {why}", sentinel.master_name);
        let mut checks = vec![Check::new("sentinel", Status::Fail, detail)];
        if let Some(password) = target.password.as_deref() {
          checks[0].detail = redact(&checks[0].detail, password);
        }
        return Report::new(format!("sentinel {:?}", sentinel.master_name), checks);
      }
    },
    None => (None, None),
  };
  let target = found.as_ref().unwrap_or(target);
  let seeds = addresses(target);
  let shown = seeds.iter().map(Node::to_string).collect::<Vec<_>>().join(", ");
  let mut checks = vec![config_check(cfg, target, &shown)];
  checks.extend(sentinel_check);
  Inspection { cfg, target, probe_timeout: cfg.command_timeout.max(PROBE_TIMEOUT_FLOOR), checks: &mut checks }
    .run(seeds)
    .await;
  // Last line of defence: no detail may carry the password, whatever a
  // server or library put into an error message.
  if let Some(password) = target.password.as_deref() {
    for c in &mut checks {
      c.detail = redact(&c.detail, password);
    }
  }
  Report::new(shown, checks)
}

/// A server, as `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
  host: String,
  port: u16,
}

impl std::fmt::Display for Node {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    if self.host.contains(':') {
      write!(f, "[{}]:{}", self.host, self.port)
    } else {
      write!(f, "{}:{}", self.host, self.port)
    }
  }
}

/// The master the sentinels name (checked by redis-rs to say it is one).
async fn sentinel_master(target: &RedisTarget, budget: Duration) -> Result<Node, String> {
  let ask = async {
    let mut sentinel = crate::tiers::redis::sentinel_client(target)?;
    let client = sentinel.async_get_client().await.map_err(|e| crate::redact::mask_userinfo(&e.to_string()))?;
    match client.get_connection_info().addr() {
      ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
        Ok(Node { host: host.clone(), port: *port })
      }
      other => Err(format!("the sentinels name an address the adapter cannot dial: {other:?}")),
    }
  };
  tokio::time::timeout(budget, ask).await.map_err(|_| format!("no answer within {} ms", budget.as_millis()))?
}

/// The servers the adapter would dial: the cluster seeds, or host:port.
fn addresses(target: &RedisTarget) -> Vec<Node> {
  if target.cluster_nodes.is_empty() {
    return vec![Node { host: target.host.clone(), port: target.port }];
  }
  target
    .cluster_nodes
    .iter()
    .filter_map(|url| match url.as_str().into_connection_info().ok()?.addr() {
      ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
        Some(Node { host: host.clone(), port: *port })
      }
      _ => None,
    })
    .collect()
}

/// Connections per pool above which the config line warns.
const POOL_WARN_ABOVE: usize = 2;

/// The resolved settings; a warning for a pool that costs throughput (each
/// key keeps to one connection, so a batch is split into one pipeline per
/// connection it touches).
fn config_check(cfg: &Config, target: &RedisTarget, shown: &str) -> Check {
  let detail = describe_config(cfg, target, shown);
  if cfg.pool_size <= POOL_WARN_ABOVE {
    return Check::new("config", Status::Pass, detail);
  }
  let why = format!(
    "; poolSize {} (REDIS_POOL_SIZE) splits every batch into up to {} pipelines, one per connection: measured on \
     loopback (W1 at 64 in flight), 10 connections made 0.61x node-redis's calls/s where 1 (the default) made 0.84x",
    cfg.pool_size, cfg.pool_size
  );
  Check::new("config", Status::Warn, detail + &why)
}

fn describe_config(cfg: &Config, target: &RedisTarget, shown: &str) -> String {
  let mode =
    if target.cluster_nodes.is_empty() { format!("{shown} db {}", target.db) } else { format!("cluster via {shown}") };
  format!(
    "{mode}, key prefix {}, TLS {}, password {}, poolSize {}, commandTimeoutMs {}, connectTimeoutMs {} (options and \
     environment, resolved as the adapter resolves them)",
    cfg.key_prefix,
    if target.tls.is_some() { "on" } else { "off" },
    if target.password.is_some() { "set" } else { "not set" },
    cfg.pool_size,
    cfg.command_timeout.as_millis(),
    cfg.connect_timeout.as_millis(),
  )
}

/// One connection: a plain server, or a cluster that routes by key or to a named node.
enum Link {
  Single(MultiplexedConnection),
  Cluster(ClusterConnection),
}

/// Where a command goes on a cluster (a plain server takes them all).
#[derive(Clone, Copy)]
enum Route<'a> {
  /// By the command's key, as the adapter's commands go.
  Key,
  /// To this server.
  Node(&'a Node),
  /// To any one server.
  Any,
}

impl Link {
  /// One command, bounded by `timeout`; a server error is an `Err` with its code.
  async fn query(&mut self, route: Route<'_>, cmd: &Cmd, timeout: Duration) -> Result<Value, String> {
    let work = async {
      match (self, route) {
        (Link::Single(c), _) => cmd.query_async::<Value>(c).await,
        (Link::Cluster(c), Route::Key) => cmd.query_async::<Value>(c).await,
        (Link::Cluster(c), Route::Node(n)) => {
          let to = SingleNodeRoutingInfo::ByAddress { host: n.host.clone(), port: n.port };
          c.route_command(cmd.clone(), RoutingInfo::SingleNode(to)).await
        }
        (Link::Cluster(c), Route::Any) => {
          c.route_command(cmd.clone(), RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)).await
        }
      }
    };
    match tokio::time::timeout(timeout, work).await {
      Err(_) => Err(format!("no reply within {} ms", timeout.as_millis())),
      Ok(answer) => reply(answer),
    }
  }

  async fn text(&mut self, route: Route<'_>, cmd: &Cmd, timeout: Duration) -> Result<String, String> {
    let v = self.query(route, cmd, timeout).await?;
    redis::from_redis_value::<String>(v).map_err(|e| e.to_string())
  }
}

/// One command on a plain connection.
async fn cmd_on(conn: &mut MultiplexedConnection, cmd: &Cmd) -> redis::RedisResult<Value> {
  use redis::aio::ConnectionLike;
  conn.req_packed_command(cmd).await
}

/// A reply, with an error reply (handed over as a value) as an error.
fn reply(r: redis::RedisResult<Value>) -> Result<Value, String> {
  r.map_err(|e| describe_error(&e)).and_then(crate::tiers::redis::outcome)
}

fn describe_error(e: &RedisError) -> String {
  match (e.code(), e.detail()) {
    (Some(code), Some(detail)) if !detail.starts_with(code) => format!("{code} {detail}"),
    (Some(_), Some(detail)) => detail.to_string(),
    _ => e.to_string(),
  }
}

/// What the INFO of one server says, and the CONFIG values INFO lacks
/// (`None` where a managed service refuses CONFIG).
struct ServerFacts {
  node: Node,
  info: HashMap<String, String>,
  save: Option<String>,
  appendfsync: Option<String>,
}

/// The checks of one run, in order.
struct Inspection<'a> {
  cfg: &'a Config,
  target: &'a RedisTarget,
  probe_timeout: Duration,
  checks: &'a mut Vec<Check>,
}

impl Inspection<'_> {
  fn push(&mut self, name: &'static str, status: Status, detail: impl Into<String>) {
    self.checks.push(Check::new(name, status, detail));
  }

  async fn run(mut self, seeds: Vec<Node>) {
    if seeds.is_empty() {
      self.push("reachability", Status::Fail, "no usable host:port in clusterNodes");
      return;
    }
    let Some(tcp) = self.reachability(&seeds).await else { return };
    let Some(mut link) = self.connect(&tcp).await else { return };
    let nodes = self.nodes(&mut link, &seeds).await;
    if !self.auth(&mut link, &nodes).await {
      return;
    }
    self.latency(&mut link, &nodes).await;
    let facts = self.server_facts(&mut link, &nodes).await;
    if facts.is_empty() {
      return;
    }
    self.cluster(&mut link, &facts).await;
    self.judge_each("maxmemory", &facts, |f| judge_maxmemory(&f.info));
    self.judge_each("maxmemory-policy", &facts, |f| judge_policy(&f.info));
    self.judge_each("persistence", &facts, |f| judge_persistence(&f.info, f.save.as_deref(), f.appendfsync.as_deref()));
    self.round_trip(&mut link).await;
    self.old_layout(&mut link, &nodes).await;
    if self.cfg.near.is_some() {
      self.near_cache(&nodes).await;
    }
  }

  /// With `nearCache` on: on each master, what the near cache's link does
  /// (RESP3, `CLIENT TRACKING ON BCAST PREFIX`, `ROLE`), on a connection of
  /// its own that ends at once. A refusal leaves the near cache bypassed:
  /// the adapter works, without it, hence a warning.
  async fn near_cache(&mut self, nodes: &[Node]) {
    let prefix = format!("{}:", self.cfg.key_prefix.trim_end_matches(':'));
    let timeout = self.probe_timeout;
    let mut problems = Vec::new();
    let mut heartbeats = Vec::new();
    for node in nodes {
      let mut target = self.target.clone();
      (target.host, target.port) = (node.host.clone(), node.port);
      if !self.target.cluster_nodes.is_empty() {
        target.db = 0;
      }
      let tried = async {
        let client = crate::tiers::redis::push_client_for(&target)?;
        let config =
          AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
        let mut conn =
          client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| describe_error(&e))?;
        // What the link itself does, then undone (the connection ends here anyway).
        let beat = crate::near::start_tracking(&mut conn, &prefix).await?;
        let mut off = redis::cmd("CLIENT");
        off.arg("TRACKING").arg("OFF");
        let _ = cmd_on(&mut conn, &off).await;
        Ok::<_, String>(beat)
      };
      match tokio::time::timeout(timeout * 3, tried).await {
        Ok(Ok(beat)) => heartbeats.push(beat),
        Ok(Err(why)) => problems.push(format!("{node}: {why}")),
        Err(_) => problems.push(format!("{node}: no answer within {} ms", (timeout * 3).as_millis())),
      }
    }
    if problems.is_empty() {
      let beat = if heartbeats.iter().all(|b| *b == Heartbeat::Role) { "ROLE" } else { "PING where ROLE is refused" };
      let detail = format!(
        "client tracking of {prefix} allowed on {} master(s); the link's heartbeat is {beat}",
        heartbeats.len()
      );
      self.push("near-cache", Status::Pass, detail);
    } else {
      let detail =
        format!("the near cache would stay bypassed (the adapter works without it): {}", problems.join("; "));
      self.push("near-cache", Status::Warn, detail);
    }
  }

  /// TCP connects to every seed, concurrently, each bounded by connectTimeoutMs.
  /// Returns the line's detail so far, or `None` (and a failed line) when nothing answers.
  async fn reachability(&mut self, seeds: &[Node]) -> Option<String> {
    let connect_timeout = self.cfg.connect_timeout;
    let dials = seeds.iter().map(|n| async move {
      let t0 = Instant::now();
      match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect((n.host.as_str(), n.port))).await {
        Ok(Ok(_)) => Ok(t0.elapsed()),
        Ok(Err(e)) => Err(format!("{n}: {e}")),
        Err(_) => Err(format!("{n}: no TCP connection within connectTimeoutMs {}", connect_timeout.as_millis())),
      }
    });
    let results = futures::future::join_all(dials).await;
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if failed.len() == results.len() {
      let failed: Vec<&str> = failed.iter().map(|s| s.as_str()).collect();
      self.push("reachability", Status::Fail, failed.join("; "));
      return None;
    }
    let fastest = results.iter().filter_map(|r| r.as_ref().ok()).min().copied().unwrap_or_default();
    let mut detail = format!("TCP connect in {}", ms(fastest));
    if !failed.is_empty() {
      let failed: Vec<&str> = failed.iter().map(|s| s.as_str()).collect();
      detail.push_str(&format!("; unreachable seeds: {}", failed.join("; ")));
    }
    Some(detail)
  }

  /// The adapter's handshake: TLS, AUTH, SELECT (or the cluster's slot map).
  /// Its failure is told apart as TLS, credentials or not-a-Redis.
  async fn connect(&mut self, tcp: &str) -> Option<Link> {
    let t0 = Instant::now();
    let budget = self.cfg.connect_timeout + self.probe_timeout;
    let result =
      match tokio::time::timeout(budget, open(self.target, self.cfg.connect_timeout, self.probe_timeout)).await {
        Ok(r) => r,
        Err(_) => Err(Opened::Other(format!("no Redis handshake within {} ms", budget.as_millis()))),
      };
    let partial_seeds = tcp.contains("unreachable seeds");
    match result {
      Ok(link) => {
        let status = if partial_seeds { Status::Warn } else { Status::Pass };
        self.push("reachability", status, format!("{tcp}; Redis handshake in {}", ms(t0.elapsed())));
        self.push("tls", self.tls_status(), self.tls_detail());
        Some(link)
      }
      Err(Opened::Auth(why)) => {
        self.push("reachability", Status::Pass, tcp.to_string());
        self.push("tls", self.tls_status(), self.tls_detail());
        self.push("auth", Status::Fail, format!("the server rejected the configured credentials: {why}"));
        None
      }
      Err(Opened::Other(why)) if self.target.tls.is_some() => {
        self.push("reachability", Status::Pass, tcp.to_string());
        self.push("tls", Status::Fail, format!("TLS connection failed: {why}"));
        None
      }
      Err(Opened::Other(why)) => {
        self.push(
          "reachability",
          Status::Fail,
          format!(
            "{tcp}, but no Redis answered: {why} (a TLS-only server? then use a rediss:// URL or REDIS_TLS=true)"
          ),
        );
        None
      }
    }
  }

  fn tls_status(&self) -> Status {
    if self.target.tls.is_some() || self.seeds_are_loopback() {
      Status::Pass
    } else {
      Status::Warn
    }
  }

  fn tls_detail(&self) -> String {
    match &self.target.tls {
      Some(files) => format!(
        "in use; the handshake succeeded (server verified against {}{})",
        if files.ca_file.is_some() { "caFile" } else { "the system's roots" },
        if files.cert_file.is_some() { ", client certificate sent" } else { "" },
      ),
      None if self.seeds_are_loopback() => "not in use (loopback only)".into(),
      None => "not in use: the password and every value cross the network in clear text (use rediss:// or \
               REDIS_TLS=true)"
        .into(),
    }
  }

  fn seeds_are_loopback(&self) -> bool {
    addresses(self.target).iter().all(|n| is_loopback(&n.host))
  }

  /// The servers to inspect one by one: on a cluster its primaries (from
  /// CLUSTER NODES), else the one server.
  async fn nodes(&mut self, link: &mut Link, seeds: &[Node]) -> Vec<Node> {
    if !matches!(link, Link::Cluster(_)) {
      return seeds.to_vec();
    }
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("NODES");
    match link.text(Route::Any, &cmd, self.probe_timeout).await.map(|text| parse_cluster_primaries(&text)) {
      Ok(primaries) if !primaries.is_empty() => primaries,
      _ => seeds.to_vec(),
    }
  }

  /// AUTH already ran in the handshake; a PING tells whether the server
  /// wanted a password that was not given (NOAUTH) or lets this user in.
  async fn auth(&mut self, link: &mut Link, nodes: &[Node]) -> bool {
    let result = link.query(Route::Node(&nodes[0]), &redis::cmd("PING"), self.probe_timeout).await;
    let user = if self.target.username.is_some() { "an ACL user and password" } else { "a password" };
    match (result, self.target.password.is_some()) {
      (Ok(_), true) => {
        self.push("auth", Status::Pass, format!("authenticated with {user}"));
        true
      }
      (Ok(_), false) if self.seeds_are_loopback() => {
        self.push("auth", Status::Pass, "no password configured, and the server requires none");
        true
      }
      (Ok(_), false) => {
        self.push("auth", Status::Warn, "the server accepts commands without a password from this network");
        true
      }
      (Err(e), _) if e.starts_with("NOAUTH") || e.starts_with("WRONGPASS") || e.starts_with("NOPERM") => {
        self.push(
          "auth",
          Status::Fail,
          format!("{e} (set REDIS_PASSWORD, the password option or the URL's credentials)"),
        );
        false
      }
      (Err(e), _) => {
        self.push("auth", Status::Fail, format!("PING failed after connecting: {e}"));
        false
      }
    }
  }

  /// p50/p99 of sequential PINGs, spread over the nodes.
  async fn latency(&mut self, link: &mut Link, nodes: &[Node]) {
    let started = Instant::now();
    let mut samples = Vec::with_capacity(LATENCY_PINGS);
    let mut failures = 0usize;
    let mut last_error = String::new();
    let ping = redis::cmd("PING");
    for i in 0..LATENCY_PINGS {
      if started.elapsed() > LATENCY_BUDGET {
        break;
      }
      let node = &nodes[i % nodes.len()];
      let t0 = Instant::now();
      match link.query(Route::Node(node), &ping, self.cfg.command_timeout).await {
        Ok(_) => samples.push(t0.elapsed()),
        Err(e) => {
          failures += 1;
          last_error = e;
        }
      }
    }
    let (status, mut detail) = judge_latency(&mut samples, failures, self.cfg.command_timeout);
    if failures > 0 {
      detail.push_str(&format!(" (last error: {last_error})"));
    }
    self.push("latency", status, detail);
  }

  /// INFO (and the CONFIG values it lacks) of every server; the `server`
  /// line fails here when none answers.
  async fn server_facts(&mut self, link: &mut Link, nodes: &[Node]) -> Vec<ServerFacts> {
    let mut facts = Vec::with_capacity(nodes.len());
    let mut errors = Vec::new();
    for node in nodes {
      match link.text(Route::Node(node), &redis::cmd("INFO"), self.probe_timeout).await {
        Ok(text) => {
          let save = self.config_get(link, node, "save").await;
          let appendfsync = self.config_get(link, node, "appendfsync").await;
          facts.push(ServerFacts { node: node.clone(), info: parse_info(&text), save, appendfsync });
        }
        Err(e) => errors.push(format!("{node}: INFO failed: {e}")),
      }
    }
    if facts.is_empty() {
      self.push("server", Status::Fail, errors.join("; "));
    } else {
      self.judge_each("server", &facts, |f| judge_server(&f.info));
      if let (false, Some(line)) = (errors.is_empty(), self.checks.last_mut()) {
        line.status = line.status.max(Status::Warn);
        line.detail.push_str(&format!("; {}", errors.join("; ")));
      }
    }
    facts
  }

  async fn config_get(&mut self, link: &mut Link, node: &Node, name: &str) -> Option<String> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg(name);
    let value = link.query(Route::Node(node), &cmd, self.probe_timeout).await.ok()?;
    // RESP2 answers [name, value]; RESP3 a map.
    let pairs: Vec<String> = match value {
      Value::Map(m) => {
        m.into_iter().flat_map(|(k, v)| [k, v]).filter_map(|v| redis::from_redis_value(v).ok()).collect()
      }
      v => redis::from_redis_value(v).ok()?,
    };
    pairs.get(1).cloned()
  }

  /// One line from per-server judgements: the worst one, named by its server
  /// when there are several.
  fn judge_each(
    &mut self,
    name: &'static str,
    facts: &[ServerFacts],
    judge: impl Fn(&ServerFacts) -> (Status, String),
  ) {
    let judged: Vec<(String, Status, String)> = facts
      .iter()
      .map(|f| {
        let (s, d) = judge(f);
        (f.node.to_string(), s, d)
      })
      .collect();
    let (status, detail) = combine(&judged);
    self.push(name, status, detail);
  }

  /// On a cluster: its state and slot coverage. On one server: that it is not
  /// a cluster node (the adapter would then need clusterNodes).
  async fn cluster(&mut self, link: &mut Link, facts: &[ServerFacts]) {
    if matches!(link, Link::Single(_)) {
      let enabled = facts.iter().any(|f| f.info.get("cluster_enabled").map(String::as_str) == Some("1"));
      if enabled {
        self.push(
          "cluster",
          Status::Fail,
          "the server is a cluster node but clusterNodes is not set: keys of other nodes' slots would get MOVED",
        );
      } else {
        self.push("cluster", Status::Pass, "standalone server (no clusterNodes), not a cluster node");
      }
      return;
    }
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("INFO");
    match link.text(Route::Any, &cmd, self.probe_timeout).await {
      Ok(text) => {
        let (status, detail) = judge_cluster(&parse_info(&text), facts.len());
        self.push("cluster", status, detail);
      }
      Err(e) => self.push("cluster", Status::Fail, format!("CLUSTER INFO failed: {e}")),
    }
  }

  /// SET, GET, EVAL (the adapter's scripts) and UNLINK of one key under the
  /// prefix, as the adapter writes it (value in its format, with a TTL).
  async fn round_trip(&mut self, link: &mut Link) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let key = format!("{}:doctor:{}-{}", self.cfg.key_prefix.trim_end_matches(':'), std::process::id(), now.as_nanos());
    let value = codec::encode(r#"{"doctor":true}"#, self.cfg.compression_threshold, now.as_millis() as u64);
    let t = self.cfg.command_timeout.max(PROBE_TIMEOUT_FLOOR);
    let t0 = Instant::now();
    let step = async {
      let mut set = redis::cmd("SET");
      set.arg(&key).arg(&value).arg("PX").arg(60_000);
      link.query(Route::Key, &set, t).await.map_err(|e| format!("SET refused: {e}"))?;
      let mut get = redis::cmd("GET");
      get.arg(&key);
      let read: Option<Vec<u8>> =
        redis::from_redis_value(link.query(Route::Key, &get, t).await.map_err(|e| format!("GET failed: {e}"))?)
          .map_err(|e| format!("GET answered something else: {e}"))?;
      if read.as_deref() != Some(value.as_slice()) {
        return Err("GET did not return the value just written".to_string());
      }
      let mut eval = redis::cmd("EVAL");
      eval.arg("return redis.call('PTTL', KEYS[1])").arg(1).arg(&key);
      let pttl: i64 = redis::from_redis_value(
        link
          .query(Route::Key, &eval, t)
          .await
          .map_err(|e| format!("EVAL failed (increment and replay need scripts): {e}"))?,
      )
      .map_err(|e| format!("EVAL answered something else: {e}"))?;
      if pttl <= 0 {
        return Err(format!("the key lost its TTL (PTTL {pttl})"));
      }
      let mut unlink = redis::cmd("UNLINK");
      unlink.arg(&key);
      link.query(Route::Key, &unlink, t).await.map_err(|e| format!("UNLINK failed: {e}"))?;
      let mut exists = redis::cmd("EXISTS");
      exists.arg(&key);
      let left: i64 =
        redis::from_redis_value(link.query(Route::Key, &exists, t).await.map_err(|e| format!("EXISTS failed: {e}"))?)
          .map_err(|e| format!("EXISTS answered something else: {e}"))?;
      if left != 0 {
        return Err("the key still exists after UNLINK".to_string());
      }
      Ok(())
    };
    match step.await {
      Ok(()) => {
        self.push("round-trip", Status::Pass, format!("SET, GET, EVAL and UNLINK of {key} in {}", ms(t0.elapsed())))
      }
      Err(e) => self.push("round-trip", Status::Fail, format!("{e} (key {key})")),
    }
  }

  /// SCANs (never KEYS) every server for keys under the prefix that are not
  /// in this adapter's layout: what the old adapter left behind.
  async fn old_layout(&mut self, link: &mut Link, nodes: &[Node]) {
    let prefix = self.cfg.key_prefix.trim_end_matches(':').to_string();
    let pattern = format!("{}:*", glob_escape(&prefix));
    let started = Instant::now();
    let mut examined = 0u64;
    let mut complete = true;
    let mut found: BTreeMap<String, u64> = BTreeMap::new();
    // (server, key): a key's TTL is asked of the server it was found on, so
    // a cluster's redirects and CLUSTERDOWN retries never slow this down.
    let mut sample: Vec<(Node, String)> = Vec::new();
    'nodes: for node in nodes {
      let mut cursor = 0u64;
      for step in 0.. {
        if step >= SCAN_MAX_STEPS || started.elapsed() > SCAN_BUDGET {
          complete = false;
          break 'nodes;
        }
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT);
        let reply = match link.query(Route::Node(node), &scan, self.probe_timeout).await {
          Ok(v) => v,
          Err(e) => {
            self.push("old-layout", Status::Warn, format!("SCAN on {node} failed: {e}"));
            return;
          }
        };
        let (next, keys): (u64, Vec<Vec<u8>>) = match redis::from_redis_value(reply) {
          Ok(v) => v,
          Err(e) => {
            self.push("old-layout", Status::Warn, format!("SCAN on {node} answered something else: {e}"));
            return;
          }
        };
        examined += keys.len() as u64;
        for key in keys {
          let key = String::from_utf8_lossy(&key).into_owned();
          if let Some(segment) = foreign_segment(&prefix, &key) {
            *found.entry(segment.to_string()).or_default() += 1;
            if sample.len() < TTL_SAMPLE {
              sample.push((node.clone(), key));
            }
          }
        }
        cursor = next;
        if cursor == 0 {
          break;
        }
      }
    }
    let (mut checked, mut without_ttl) = (0, 0);
    for (node, key) in &sample {
      if started.elapsed() > SCAN_BUDGET + self.probe_timeout {
        break;
      }
      let mut ttl = redis::cmd("TTL");
      ttl.arg(key);
      match link.query(Route::Node(node), &ttl, self.probe_timeout).await {
        Ok(Value::Int(-1)) => (checked, without_ttl) = (checked + 1, without_ttl + 1),
        Ok(Value::Int(_)) => checked += 1,
        _ => {}
      }
    }
    let (status, detail) = judge_old_layout(&prefix, &found, examined, complete, without_ttl, checked);
    self.push("old-layout", status, detail);
  }
}

/// How a connection attempt failed.
enum Opened {
  /// The server refused the credentials.
  Auth(String),
  Other(String),
}

/// Opens a connection the way `tiers::redis` opens the adapter's (its own
/// client builder; the same cluster settings), with bounded waits.
async fn open(target: &RedisTarget, connect_timeout: Duration, response_timeout: Duration) -> Result<Link, Opened> {
  let certs = load_certs(target.tls.as_ref()).map_err(Opened::Other)?;
  if certs.is_some() {
    let _ = rustls::crypto::ring::default_provider().install_default();
  }
  let classify = |e: RedisError| {
    let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
      || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
      || ["WRONGPASS", "NOAUTH"].iter().any(|code| e.to_string().contains(code));
    if auth {
      Opened::Auth(describe_error(&e))
    } else {
      Opened::Other(describe_error(&e))
    }
  };
  if !target.cluster_nodes.is_empty() {
    let mut b = ClusterClientBuilder::new(target.cluster_nodes.clone())
      .connection_timeout(connect_timeout)
      .response_timeout(response_timeout)
      .retries(1);
    if let Some(u) = &target.username {
      b = b.username(u);
    }
    if let Some(p) = &target.password {
      b = b.password(p);
    }
    if let Some(certs) = certs {
      b = b.tls(redis::cluster::TlsMode::Secure).certs(certs);
    }
    let client = b.build().map_err(classify)?;
    return client.get_async_connection().await.map(Link::Cluster).map_err(classify);
  }
  // The adapter's own client (same address, TLS, credentials, database and TCP settings).
  let client = crate::tiers::redis::client(target).map_err(Opened::Other)?;
  let config = AsyncConnectionConfig::new()
    .set_connection_timeout(Some(connect_timeout))
    .set_response_timeout(Some(response_timeout));
  client.get_multiplexed_async_connection_with_config(&config).await.map(Link::Single).map_err(classify)
}

fn ms(d: Duration) -> String {
  format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn is_loopback(host: &str) -> bool {
  host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Replaces every occurrence of `secret` (non-empty) with `***`.
pub fn redact(text: &str, secret: &str) -> String {
  if secret.is_empty() {
    text.to_string()
  } else {
    text.replace(secret, "***")
  }
}

/// `INFO` text → its `field:value` pairs (section headers and blanks skipped).
pub fn parse_info(text: &str) -> HashMap<String, String> {
  text
    .lines()
    .filter(|l| !l.starts_with('#'))
    .filter_map(|l| l.split_once(':'))
    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
    .collect()
}

/// The primaries of `CLUSTER NODES` that are connected and not failing.
fn parse_cluster_primaries(text: &str) -> Vec<Node> {
  text
    .lines()
    .filter_map(|line| {
      let fields: Vec<&str> = line.split_whitespace().collect();
      let (addr, flags) = (fields.get(1)?, fields.get(2)?);
      let flags: Vec<&str> = flags.split(',').collect();
      if !flags.contains(&"master") || flags.iter().any(|f| matches!(*f, "fail" | "noaddr" | "handshake")) {
        return None;
      }
      // ip:port@cport[,hostname]
      let hostport = addr.split(['@', ',']).next()?;
      let (host, port) = hostport.rsplit_once(':')?;
      let host = host.trim_start_matches('[').trim_end_matches(']');
      Some(Node { host: host.to_string(), port: port.parse().ok()? })
    })
    .collect()
}

/// `7.0.15` → (7, 0).
fn major_minor(version: &str) -> Option<(u32, u32)> {
  let mut parts = version.split('.');
  Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn judge_server(info: &HashMap<String, String>) -> (Status, String) {
  let Some(version) = info.get("redis_version") else {
    return (Status::Warn, "INFO carries no redis_version".into());
  };
  let product = match info.get("valkey_version") {
    Some(v) => format!("Valkey {v}"),
    None => format!("Redis {version}"),
  };
  let mode = info.get("redis_mode").map(String::as_str).unwrap_or("standalone");
  let role = info.get("role").map(String::as_str).unwrap_or("master");
  let detail = format!("{product}, {mode}, role {role}");
  match major_minor(version) {
    None => (Status::Warn, format!("{detail}: version not understood")),
    Some(v) if v < MIN_VERSION => (
      Status::Fail,
      format!("{detail}: the adapter needs Redis {}.{} or later (SET … KEEPTTL)", MIN_VERSION.0, MIN_VERSION.1),
    ),
    Some(_) if role == "slave" => (
      Status::Warn,
      format!(
        "{detail}: a replica of {}:{}; point the adapter at the primary",
        info.get("master_host").map(String::as_str).unwrap_or("?"),
        info.get("master_port").map(String::as_str).unwrap_or("?")
      ),
    ),
    Some(_) => (Status::Pass, detail),
  }
}

fn mib(bytes: u64) -> String {
  format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A cache needs a limit, or Redis grows until the machine runs out.
pub fn judge_maxmemory(info: &HashMap<String, String>) -> (Status, String) {
  let num = |k: &str| info.get(k).and_then(|v| v.parse::<u64>().ok());
  let used = num("used_memory").unwrap_or(0);
  match num("maxmemory") {
    None => (Status::Warn, "INFO memory carries no maxmemory".into()),
    Some(0) => (
      Status::Warn,
      format!("no limit ({} used): Redis grows until the host runs out of memory; set maxmemory", mib(used)),
    ),
    Some(limit) => {
      let share = used as f64 / limit as f64 * 100.0;
      let detail = format!("{} limit, {} used ({share:.0}%)", mib(limit), mib(used));
      if share >= 90.0 {
        (Status::Warn, format!("{detail}: nearly full"))
      } else {
        (Status::Pass, detail)
      }
    }
  }
}

/// A cache wants LRU or LFU eviction. `volatile-*` is enough for this
/// adapter's own keys, which all carry a TTL.
pub fn judge_policy(info: &HashMap<String, String>) -> (Status, String) {
  let limited = info.get("maxmemory").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) > 0;
  let Some(policy) = info.get("maxmemory_policy") else {
    return (Status::Warn, "INFO memory carries no maxmemory_policy".into());
  };
  match policy.as_str() {
    "allkeys-lru" | "allkeys-lfu" => (Status::Pass, policy.clone()),
    "volatile-lru" | "volatile-lfu" => {
      (Status::Pass, format!("{policy} (every key this adapter writes has a TTL, so all of them can be evicted)"))
    }
    "noeviction" if limited => (
      Status::Warn,
      "noeviction with a maxmemory limit: once full, every write fails with OOM and the adapter falls back to memory; \
       a cache wants allkeys-lru or allkeys-lfu"
        .into(),
    ),
    "noeviction" => (
      Status::Warn,
      "noeviction: nothing is ever evicted; a cache wants allkeys-lru or allkeys-lfu (with a maxmemory limit)".into(),
    ),
    other => (Status::Warn, format!("{other}: evicts without regard to use; a cache wants allkeys-lru or allkeys-lfu")),
  }
}

/// Persistence is reported, not required: every entry is a copy with a TTL of
/// data the server can load again, so a cold restart costs misses, not data.
/// What is judged is what hurts a cache: a failing save (MISCONF stops
/// writes) and an fsync on every write.
pub fn judge_persistence(
  info: &HashMap<String, String>,
  save: Option<&str>,
  appendfsync: Option<&str>,
) -> (Status, String) {
  let get = |k: &str| info.get(k).map(String::as_str);
  let aof = get("aof_enabled") == Some("1");
  let rdb = match save {
    Some("") => "RDB snapshots off".to_string(),
    Some(s) => format!("RDB snapshots (save {s})"),
    None => "RDB schedule unknown (CONFIG GET refused)".to_string(),
  };
  let aof_text = match (aof, appendfsync) {
    (false, _) => "AOF off".to_string(),
    (true, Some(f)) => format!("AOF on (appendfsync {f})"),
    (true, None) => "AOF on".to_string(),
  };
  let detail = format!("{rdb}, {aof_text}");
  if get("rdb_last_bgsave_status") == Some("err") {
    return (Status::Warn, format!("{detail}: the last RDB save failed, and Redis refuses writes (MISCONF) until one succeeds when stop-writes-on-bgsave-error is on"));
  }
  if aof && get("aof_last_write_status") == Some("err") {
    return (Status::Warn, format!("{detail}: the last AOF write failed"));
  }
  if aof && appendfsync == Some("always") {
    return (Status::Warn, format!("{detail}: every write waits for a disk sync; everysec suits a cache"));
  }
  if save == Some("") && !aof {
    return (Status::Pass, format!("{detail}: a restart starts the cache cold, which a cache allows"));
  }
  (Status::Pass, detail)
}

fn judge_cluster(info: &HashMap<String, String>, primaries: usize) -> (Status, String) {
  let get = |k: &str| info.get(k).map(String::as_str).unwrap_or("?");
  let num = |k: &str| info.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
  let detail = format!(
    "cluster_state {}, {}/16384 slots assigned, {} ok, {} pfail, {} fail; {primaries} primaries, {} known nodes",
    get("cluster_state"),
    num("cluster_slots_assigned"),
    num("cluster_slots_ok"),
    num("cluster_slots_pfail"),
    num("cluster_slots_fail"),
    get("cluster_known_nodes"),
  );
  if get("cluster_state") != "ok" || num("cluster_slots_assigned") < 16384 || num("cluster_slots_fail") > 0 {
    (Status::Fail, detail)
  } else if num("cluster_slots_pfail") > 0 || num("cluster_slots_ok") < 16384 {
    (Status::Warn, detail)
  } else {
    (Status::Pass, detail)
  }
}

/// p50/p99 of the PINGs; warn when the tail eats half the command budget
/// (ordinary jitter would then time calls out and open the breaker) or a
/// PING failed.
fn judge_latency(samples: &mut [Duration], failures: usize, budget: Duration) -> (Status, String) {
  if samples.is_empty() {
    return (Status::Fail, format!("none of {failures} PINGs answered within commandTimeoutMs {}", budget.as_millis()));
  }
  samples.sort();
  let p = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
  let (p50, p99) = (p(0.50), p(0.99));
  let detail = format!(
    "p50 {}, p99 {} over {} PINGs (commandTimeoutMs {})",
    ms(p50),
    ms(p99),
    samples.len() + failures,
    budget.as_millis()
  );
  if failures > 0 {
    (Status::Warn, format!("{detail}; {failures} failed or timed out"))
  } else if p99 * 2 > budget {
    (Status::Warn, format!("{detail}: the p99 is over half of commandTimeoutMs"))
  } else {
    (Status::Pass, detail)
  }
}

/// The first segment after `<prefix>:` of a key that is not in this
/// adapter's layout (`None` for the adapter's own keys and keys of another
/// prefix).
pub fn foreign_segment<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
  let rest = key.strip_prefix(prefix)?.strip_prefix(':')?;
  let segment = rest.split(':').next().unwrap_or(rest);
  let ours =
    // `tag` and `lock`: the read-through's tag sets and distributed locks.
    ["kv", "org", "global", "doctor", "fallback", "tag", "lock"].contains(&segment)
      || domain::TABLE.iter().any(|e| e.tag == segment);
  (!ours).then_some(segment)
}

fn judge_old_layout(
  prefix: &str,
  found: &BTreeMap<String, u64>,
  examined: u64,
  complete: bool,
  without_ttl: usize,
  sampled: usize,
) -> (Status, String) {
  let scope = if complete {
    format!("scanned {examined} keys under {prefix}:")
  } else {
    format!("scan stopped after {examined} keys under {prefix}: (bounded), so this is a lower bound")
  };
  let total: u64 = found.values().sum();
  if total == 0 {
    return (Status::Pass, format!("no keys of the old adapter's layout ({scope})"));
  }
  let mut kinds: Vec<(&String, &u64)> = found.iter().collect();
  kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
  let listed: Vec<String> = kinds.iter().take(8).map(|(k, n)| format!("{k} {n}")).collect();
  let ttl = if sampled == 0 {
    "; their TTLs could not be read".to_string()
  } else if without_ttl > 0 {
    format!("; {without_ttl} of {sampled} sampled have no TTL and stay until deleted")
  } else {
    format!("; all {sampled} sampled expire by TTL")
  };
  (
    Status::Warn,
    format!(
      "{total} keys not in this adapter's layout, as the old adapter left them ({}{}){ttl} ({scope})",
      listed.join(", "),
      if kinds.len() > 8 { ", …" } else { "" },
    ),
  )
}

/// One status and detail from several servers' judgements.
fn combine(judged: &[(String, Status, String)]) -> (Status, String) {
  if judged.len() == 1 {
    return (judged[0].1, judged[0].2.clone());
  }
  let worst = judged.iter().map(|j| j.1).max().unwrap_or(Status::Pass);
  let first = &judged[0].2;
  if judged.iter().all(|j| j.1 == worst && &j.2 == first) {
    return (worst, format!("{first} (all {} servers)", judged.len()));
  }
  let parts: Vec<String> = judged.iter().filter(|j| j.1 == worst).map(|(n, _, d)| format!("{n}: {d}")).collect();
  (worst, parts.join("; "))
}

#[cfg(test)]
mod tests {
  use super::*;

  fn info(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
  }

  #[test]
  fn info_text_parses_into_fields() {
    let text = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\r\n# Memory\r\nmaxmemory:67108864\r\n";
    let parsed = parse_info(text);
    assert_eq!(parsed.get("redis_version").map(String::as_str), Some("7.0.15"));
    assert_eq!(parsed.get("maxmemory").map(String::as_str), Some("67108864"));
    assert_eq!(parsed.len(), 3);
  }

  #[test]
  fn noeviction_with_a_limit_warns_and_lru_passes() {
    let limited = |policy| info(&[("maxmemory", "67108864"), ("maxmemory_policy", policy)]);
    assert_eq!(judge_policy(&limited("allkeys-lru")).0, Status::Pass);
    assert_eq!(judge_policy(&limited("allkeys-lfu")).0, Status::Pass);
    assert_eq!(judge_policy(&limited("volatile-lfu")).0, Status::Pass);
    let (status, detail) = judge_policy(&limited("noeviction"));
    assert_eq!(status, Status::Warn);
    assert!(detail.contains("OOM"), "{detail}");
    assert_eq!(judge_policy(&limited("allkeys-random")).0, Status::Warn);
    assert_eq!(judge_policy(&info(&[("maxmemory", "0"), ("maxmemory_policy", "noeviction")])).0, Status::Warn);
  }

  #[test]
  fn maxmemory_warns_without_a_limit_or_when_nearly_full() {
    assert_eq!(judge_maxmemory(&info(&[("maxmemory", "0"), ("used_memory", "1000")])).0, Status::Warn);
    let (status, detail) = judge_maxmemory(&info(&[("maxmemory", "67108864"), ("used_memory", "1048576")]));
    assert_eq!(status, Status::Pass);
    assert_eq!(detail, "64.0 MiB limit, 1.0 MiB used (2%)");
    assert_eq!(judge_maxmemory(&info(&[("maxmemory", "100"), ("used_memory", "95")])).0, Status::Warn);
  }

  #[test]
  fn persistence_off_passes_and_failing_saves_warn() {
    let (status, detail) = judge_persistence(&info(&[("aof_enabled", "0")]), Some(""), Some("everysec"));
    assert_eq!(status, Status::Pass);
    assert!(detail.starts_with("RDB snapshots off, AOF off"), "{detail}");
    let failing = info(&[("aof_enabled", "0"), ("rdb_last_bgsave_status", "err")]);
    assert_eq!(judge_persistence(&failing, Some("3600 1"), None).0, Status::Warn);
    let always = info(&[("aof_enabled", "1"), ("aof_last_write_status", "ok")]);
    assert_eq!(judge_persistence(&always, Some(""), Some("always")).0, Status::Warn);
    assert_eq!(judge_persistence(&always, Some(""), Some("everysec")).0, Status::Pass);
    assert_eq!(judge_persistence(&info(&[]), None, None).0, Status::Pass);
  }

  #[test]
  fn old_redis_fails_and_replicas_warn() {
    assert_eq!(judge_server(&info(&[("redis_version", "7.0.15")])).0, Status::Pass);
    assert_eq!(judge_server(&info(&[("redis_version", "5.0.7")])).0, Status::Fail);
    assert_eq!(judge_server(&info(&[("redis_version", "6.0.0")])).0, Status::Pass);
    let replica = info(&[("redis_version", "7.2.4"), ("role", "slave"), ("master_host", "10.0.0.1")]);
    assert_eq!(judge_server(&replica).0, Status::Warn);
    assert_eq!(judge_server(&info(&[("redis_version", "x")])).0, Status::Warn);
  }

  #[test]
  fn cluster_state_and_slot_coverage_are_judged() {
    let ok = info(&[
      ("cluster_state", "ok"),
      ("cluster_slots_assigned", "16384"),
      ("cluster_slots_ok", "16384"),
      ("cluster_slots_pfail", "0"),
      ("cluster_slots_fail", "0"),
    ]);
    assert_eq!(judge_cluster(&ok, 3).0, Status::Pass);
    let mut pfail = ok.clone();
    pfail.insert("cluster_slots_pfail".into(), "10".into());
    pfail.insert("cluster_slots_ok".into(), "16374".into());
    assert_eq!(judge_cluster(&pfail, 3).0, Status::Warn);
    let mut down = ok.clone();
    down.insert("cluster_state".into(), "fail".into());
    assert_eq!(judge_cluster(&down, 3).0, Status::Fail);
    let mut partial = ok;
    partial.insert("cluster_slots_assigned".into(), "10000".into());
    assert_eq!(judge_cluster(&partial, 3).0, Status::Fail);
  }

  #[test]
  fn cluster_nodes_gives_the_live_primaries() {
    let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
aaaa 127.0.0.1:30009@31009 master,fail - 0 0 1 disconnected
";
    let primaries = parse_cluster_primaries(text);
    let shown: Vec<String> = primaries.iter().map(Node::to_string).collect();
    assert_eq!(shown, ["127.0.0.1:30002", "127.0.0.1:30003", "127.0.0.1:30001"]);
  }

  #[test]
  fn old_layout_keys_are_told_from_this_adapters() {
    let p = "jack:dev";
    // The old adapter's keys (prefix with a trailing colon, camelCase kinds).
    assert_eq!(foreign_segment(p, "jack:dev:conversationContexts"), Some("conversationContexts"));
    assert_eq!(foreign_segment(p, "jack:dev:phoneToLead:15551234567"), Some("phoneToLead"));
    assert_eq!(foreign_segment(p, "jack:dev:leadToPhone:lead-1"), Some("leadToPhone"));
    assert_eq!(foreign_segment(p, "jack:dev:organization:org-456"), Some("organization"));
    // This adapter's own layout.
    let ks = crate::keys::KeySpace::new(p);
    assert_eq!(foreign_segment(p, &ks.generic("phoneToLead:1")), None);
    assert_eq!(foreign_segment(p, &ks.scoped(Some("org-1"), "ctx", &["1".into()])), None);
    assert_eq!(foreign_segment(p, &ks.scoped(None, "ctx", &["1".into()])), None);
    assert_eq!(foreign_segment(p, &ks.unscoped("phone2lead", &["1".into()])), None);
    assert_eq!(foreign_segment(p, "jack:dev:doctor:1-2"), None);
    // Another namespace is not ours to judge.
    assert_eq!(foreign_segment(p, "jack:prod:phoneToLead:1"), None);
    assert_eq!(foreign_segment(p, "jack:devx:phoneToLead:1"), None);
  }

  #[test]
  fn old_layout_findings_warn_with_counts() {
    let mut found = BTreeMap::new();
    assert_eq!(judge_old_layout("jack:dev", &found, 10, true, 0, 0).0, Status::Pass);
    found.insert("phoneToLead".to_string(), 12);
    found.insert("conversationContexts".to_string(), 1);
    let (status, detail) = judge_old_layout("jack:dev", &found, 20, true, 1, 13);
    assert_eq!(status, Status::Warn);
    assert!(detail.starts_with("13 keys not in this adapter's layout"), "{detail}");
    assert!(detail.contains("phoneToLead 12, conversationContexts 1"), "{detail}");
    assert!(detail.contains("1 of 13 sampled have no TTL"), "{detail}");
  }

  #[test]
  fn latency_percentiles_and_budget() {
    let mut samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
    let (status, detail) = judge_latency(&mut samples, 0, Duration::from_millis(250));
    assert_eq!(status, Status::Pass);
    assert!(detail.starts_with("p50 0.05 ms, p99 0.10 ms over 100 PINGs"), "{detail}");
    let mut slow = vec![Duration::from_millis(200); 10];
    assert_eq!(judge_latency(&mut slow, 0, Duration::from_millis(250)).0, Status::Warn);
    assert_eq!(judge_latency(&mut [], 5, Duration::from_millis(250)).0, Status::Fail);
  }

  #[test]
  fn redaction_and_combination() {
    assert_eq!(redact("AUTH s3cret failed", "s3cret"), "AUTH *** failed");
    assert_eq!(redact("nothing", ""), "nothing");
    let same = [("a:1".to_string(), Status::Pass, "x".to_string()), ("b:2".to_string(), Status::Pass, "x".to_string())];
    assert_eq!(combine(&same), (Status::Pass, "x (all 2 servers)".to_string()));
    let mixed =
      [("a:1".to_string(), Status::Pass, "x".to_string()), ("b:2".to_string(), Status::Warn, "y".to_string())];
    assert_eq!(combine(&mixed), (Status::Warn, "b:2: y".to_string()));
  }

  #[test]
  fn bad_options_become_a_failed_config_line() {
    let report = configure(r#"{"port": "x"}"#, &|_| None).unwrap_err();
    assert!(!report.ok);
    assert_eq!(report.checks[0].name, "config");
    assert!(report.checks[0].detail.contains("options.port"), "{}", report.checks[0].detail);
  }

  #[tokio::test]
  async fn disabled_redis_is_a_warning_not_a_failure() {
    let env = |k: &str| (k == "REDIS_ENABLED").then(|| "false".to_string());
    let cfg = configure("{}", &env).unwrap();
    let report = run(&cfg).await;
    assert!(report.ok);
    assert_eq!(report.checks.len(), 1);
    assert_eq!(report.checks[0].status, Status::Warn);
  }

  #[test]
  fn a_pool_of_more_than_two_connections_is_a_warning() {
    let env = |k: &str| (k == "REDIS_POOL_SIZE").then(|| "10".to_string());
    let cfg = configure(r#"{"url": "redis://127.0.0.1:6390"}"#, &env).unwrap();
    let target = cfg.redis.as_ref().unwrap();
    let check = config_check(&cfg, target, "127.0.0.1:6390");
    assert_eq!(check.status, Status::Warn);
    assert!(check.detail.contains("poolSize 10 (REDIS_POOL_SIZE)"), "{}", check.detail);
    let default = configure(r#"{"url": "redis://127.0.0.1:6390"}"#, &|_| None).unwrap();
    let check = config_check(&default, default.redis.as_ref().unwrap(), "127.0.0.1:6390");
    assert_eq!(check.status, Status::Pass);
    assert!(check.detail.contains("poolSize 1,"), "{}", check.detail);
  }

  #[tokio::test]
  async fn nothing_listening_fails_reachability_quickly() {
    // A port that was free a moment ago: bind, read it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = configure(&format!(r#"{{"url": "redis://:pw-never-shown@127.0.0.1:{port}"}}"#), &|_| None).unwrap();
    let t0 = Instant::now();
    let report = run(&cfg).await;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(!report.ok);
    let reach = report.checks.iter().find(|c| c.name == "reachability").unwrap();
    assert_eq!(reach.status, Status::Fail);
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("pw-never-shown"), "{text}");
  }
}
