//! The Redis tier: a pool of replaceable multiplexed connections (on a
//! cluster, one per master, found through our own slot map; with Sentinel,
//! dialled to the master the sentinels name). Each operation travels on the
//! connection its key hashes to, every wait is bounded, and a connection
//! that fails is dropped and re-dialled in the background.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
  AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, Value,
};
use tokio::sync::Notify;
use tokio::time::Instant as Deadline;

use crate::batch::Op;
use crate::codec;
use crate::config::{RedisTarget, TlsFiles};
use crate::scripts;
use crate::tiers::cluster::{self, Node, NodeHealth};

/// Why a round trip to Redis failed as a whole (the breaker counts these).
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

/// One command's own outcome inside a round trip that reached Redis.
pub type Outcome = Result<Value, String>;

/// The commands of one operation inside a pipeline, in order: they travel
/// together on the connection `key` hashes to, so that the writes of one key
/// reach Redis in the order they were made, as over a single socket.
#[derive(Debug, Clone, Copy)]
pub struct Span<'a> {
  pub key: &'a str,
  pub commands: usize,
  /// May be sent a second time if its connection broke before the reply:
  /// true for commands that give the same result when run twice (reads,
  /// sets, deletes, write-time-checked replays); false for an increment.
  pub retry: bool,
}

/// The outcome of a routed pipeline: each span's replies, or why the
/// connection that carried it failed (only those spans failed).
pub struct Replies {
  outcomes: Vec<Outcome>,
  /// Per span: its first command and command count.
  ranges: Vec<(usize, usize)>,
  /// Per span: `Some(i)` if it failed with `failures[i]`.
  failed: Vec<Option<usize>>,
  failures: Vec<Unavailable>,
  /// Per span, on a cluster: the master that answered it (after a
  /// redirection, the one it was redirected to).
  answered_by: Vec<Option<Node>>,
}

impl Replies {
  fn new(spans: &[Span]) -> Self {
    let mut first = 0;
    let ranges = spans
      .iter()
      .map(|s| {
        first += s.commands;
        (first - s.commands, s.commands)
      })
      .collect();
    Replies {
      outcomes: vec![Ok(Value::Nil); first],
      ranges,
      failed: vec![None; spans.len()],
      failures: Vec::new(),
      answered_by: vec![None; spans.len()],
    }
  }

  fn all_failed(spans: &[Span], why: Unavailable) -> Self {
    let mut replies = Replies::new(spans);
    replies.fail(0..spans.len(), why);
    replies
  }

  fn fail(&mut self, spans: impl IntoIterator<Item = usize>, why: Unavailable) {
    self.failures.push(why);
    for j in spans {
      self.failed[j] = Some(self.failures.len() - 1);
    }
  }

  /// Span `j`'s outcomes, or why its connection failed.
  pub fn span(&self, j: usize) -> Result<&[Outcome], &Unavailable> {
    match self.failed[j] {
      Some(f) => Err(&self.failures[f]),
      None => {
        let (first, count) = self.ranges[j];
        Ok(&self.outcomes[first..first + count])
      }
    }
  }

  /// The cluster master that answered span `j` (`None` on a single server or behind Sentinel).
  pub fn answered_by(&self, j: usize) -> Option<&Node> {
    self.answered_by[j].as_ref()
  }

  /// The first failure, if any span failed.
  pub fn failure(&self) -> Option<&Unavailable> {
    self.failures.first()
  }

  /// Every command's outcome, or the first failure: for callers that
  /// treat a pipeline as all or nothing (the replay).
  pub fn into_result(self) -> Result<Vec<Outcome>, Unavailable> {
    match self.failures.into_iter().next() {
      Some(why) => Err(why),
      None => Ok(self.outcomes),
    }
  }
}

/// TCP options of every connection, chosen for a server on a LAN or in the
/// same cloud region:
/// - `TCP_NODELAY`: a pipeline is written whole; Nagle would hold a small
///   one back for the previous one's ACK (ioredis and node-redis set it too).
/// - keepalive after 5 s idle, then every 1 s: an idle connection whose path
///   went silent (NAT or load-balancer timeout, dead VM) is found in seconds,
///   not after the kernel's 2 h.
/// - `TCP_USER_TIMEOUT` 5 s: bytes unacknowledged for 5 s close the socket
///   (the kernel default is about 15 min of retransmissions). Many RTOs of a
///   healthy path fit in 5 s; a stalled command is caught sooner anyway, by
///   `commandTimeoutMs`, and its connection dropped.
/// - `SO_LINGER` 0: a connection we drop (timed out, read-only, closed) is
///   reset, so bytes Redis has not read yet are discarded rather than
///   delivered, and run, when a silent path recovers (NOTES.md, "Late bytes
///   after a timeout"); bytes Redis already read cannot be recalled.
fn tcp_settings() -> TcpSettings {
  let keepalive =
    TcpKeepalive::new().with_time(Duration::from_secs(5)).with_interval(Duration::from_secs(1)).with_retries(3);
  TcpSettings::default()
    .set_nodelay(true)
    .set_keepalive(keepalive)
    .set_user_timeout(Duration::from_secs(5))
    .set_linger_time(Duration::ZERO)
}

pub struct RedisTier {
  target: RedisTarget,
  command_timeout: Duration,
  connect_timeout: Duration,
  /// Single-node Redis: the pool.
  pool: Option<Arc<Pool>>,
  /// Redis Cluster: a pool per master, the slot map and a breaker per master.
  cluster: Option<Cluster>,
  /// Set by `disconnect`: no connection is opened again.
  closed: AtomicBool,
}

impl RedisTier {
  /// `breaker`: the failure threshold and cooldown of each cluster node's
  /// breaker (the adapter's own breaker settings).
  pub fn new(
    target: RedisTarget,
    pool_size: usize,
    command_timeout: Duration,
    connect_timeout: Duration,
    breaker: (u32, Duration),
  ) -> Self {
    let pool = target.cluster_nodes.is_empty().then(|| {
      let dialer = match &target.sentinel {
        Some(_) => sentinel_client(&target).map(|c| Dialer::Sentinel(tokio::sync::Mutex::new(c))),
        None => client(&target).map(Dialer::Direct),
      };
      let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        // Our own deadline bounds each round trip (see `run`).
        .set_response_timeout(None);
      Arc::new(Pool::new(dialer, config, pool_size.max(1), command_timeout, connect_timeout))
    });
    let cluster = pool.is_none().then(|| Cluster {
      nodes: NodeHealth::new(breaker.0, breaker.1),
      pools: Mutex::new(HashMap::new()),
      pool_size: pool_size.max(1),
    });
    Self { target, command_timeout, connect_timeout, pool, cluster, closed: AtomicBool::new(false) }
  }

  pub fn is_cluster(&self) -> bool {
    self.pool.is_none()
  }

  /// Connections currently open.
  pub fn connections(&self) -> usize {
    match &self.pool {
      Some(pool) => pool.live(),
      None => self.cluster.as_ref().map_or(0, |c| lock(&c.pools).values().map(|p| p.live()).sum()),
    }
  }

  /// Drops the pool: each connection closes once the commands using it finish.
  pub fn disconnect(&self) {
    self.closed.store(true, Ordering::Release);
    if let Some(pool) = &self.pool {
      pool.close();
    }
    if let Some(cluster) = &self.cluster {
      for pool in lock(&cluster.pools).drain().map(|(_, p)| p) {
        pool.close();
      }
    }
  }

  /// The breaker's probe: dials a fresh connection (never one of the pool's,
  /// which may be dead) and `PING`s it, each step bounded. On success it
  /// becomes the pool's first connection and the others are replaced too
  /// (waited for, up to the connect timeout, so that traffic finds them open).
  pub async fn probe(&self) -> Result<(), Unavailable> {
    if self.closed.load(Ordering::Acquire) {
      return Err(Unavailable("the adapter is closed".into()));
    }
    let Some(pool) = &self.pool else { return self.probe_cluster().await };
    let mut conn = pool.dial().await?;
    let pong = tokio::time::timeout(self.command_timeout, conn.req_packed_command(&redis::cmd("PING")))
      .await
      .map_err(|_| Unavailable(format!("PING timed out after {} ms", self.command_timeout.as_millis())))?
      .map_err(unavailable)?;
    // A server error (NOAUTH, say) is a failed probe too.
    outcome(pong).map_err(Unavailable)?;
    pool.renew(conn);
    pool.fill(Deadline::now() + self.connect_timeout).await;
    Ok(())
  }

  /// Some node (a known master, else a seed) answers with the slot map: the
  /// cluster is reachable (a master that is down is its own breaker's business).
  async fn probe_cluster(&self) -> Result<(), Unavailable> {
    self.refresh_slots().await
  }

  /// Reads the slot map (`CLUSTER SLOTS`) from the first node that answers:
  /// known masters whose breaker is closed, then the seeds, each bounded by
  /// the command timeout. Pools of nodes that left the map are closed.
  async fn refresh_slots(&self) -> Result<(), Unavailable> {
    let Some(cluster) = &self.cluster else { return Err(Unavailable("not a cluster".into())) };
    let mut candidates: Vec<Node> = cluster.nodes.masters().into_iter().filter(|n| cluster.nodes.allows(n)).collect();
    for seed in &self.target.cluster_nodes {
      if let Some(node) = seed_address(seed).filter(|n| !candidates.contains(n)) {
        candidates.push(node);
      }
    }
    let mut last = Unavailable("no cluster node to ask".into());
    for node in candidates.into_iter().take(8) {
      let mut pipe = Pipeline::with_capacity(1);
      pipe.cmd("CLUSTER").arg("SLOTS");
      let pool = self.pool_for(&node);
      let reply = self.run_pool(&pool, &pipe, &[Span { key: "", commands: 1, retry: true }]).await.into_result();
      let host = node.rsplit_once(':').map_or("", |(h, _)| h).trim_matches(['[', ']']).to_string();
      match reply.map(|mut r| r.pop()) {
        Ok(Some(Ok(value))) => match cluster::parse_slots(&value, &host) {
          Ok(map) if !map.is_empty() => {
            cluster.nodes.set_map(map);
            let masters = cluster.nodes.masters();
            let mut pools = lock(&cluster.pools);
            let gone: Vec<Node> = pools.keys().filter(|n| !masters.contains(n)).cloned().collect();
            for node in gone {
              if let Some(pool) = pools.remove(&node) {
                pool.close();
              }
            }
            return Ok(());
          }
          Ok(_) => last = Unavailable(format!("{node}: CLUSTER SLOTS: no slot is served")),
          Err(e) => last = Unavailable(format!("{node}: {e}")),
        },
        Ok(Some(Err(e))) => last = Unavailable(format!("{node}: {e}")),
        Ok(None) => last = Unavailable(format!("{node}: no reply")),
        Err(e) => last = Unavailable(format!("{node}: {}", e.0)),
      }
    }
    Err(last)
  }

  /// The pool of one cluster node (made on first use).
  fn pool_for(&self, node: &Node) -> Arc<Pool> {
    let cluster = self.cluster.as_ref().expect("cluster pools are asked for on a cluster only");
    let mut pools = lock(&cluster.pools);
    let pool = pools.entry(node.clone()).or_insert_with(|| {
      let client = self.node_target(node).and_then(|target| client(&target));
      let config =
        AsyncConnectionConfig::new().set_connection_timeout(Some(self.connect_timeout)).set_response_timeout(None);
      Arc::new(Pool::new(
        client.map(Dialer::Direct),
        config,
        cluster.pool_size,
        self.command_timeout,
        self.connect_timeout,
      ))
    });
    if self.closed.load(Ordering::Acquire) {
      pool.close();
    }
    Arc::clone(pool)
  }

  /// Cluster upkeep, run by the supervisor while the adapter's breaker is
  /// closed (about every 500 ms): the slot map is refreshed when a master is
  /// down (so that a promoted replica is found at once) or a command was
  /// redirected or failed, and every 5 s otherwise; and
  /// each down master whose cooldown is over gets a `PING` on a fresh
  /// connection, whose answer closes its breaker.
  pub async fn tend(&self) {
    let Some(Cluster { nodes, .. }) = &self.cluster else { return };
    if self.closed.load(Ordering::Acquire) {
      return;
    }
    let urgent = nodes.take_stale() || !nodes.down().is_empty();
    let gap = if urgent { Duration::from_millis(100) } else { Duration::from_secs(5) };
    if nodes.claim_refresh(gap) {
      let _ = self.refresh_slots().await;
    }
    for (node, breaker) in nodes.down() {
      if breaker.try_begin_probe() {
        match self.ping_node(&node).await {
          Ok(()) => {
            breaker.record_probe_success();
          }
          Err(_) => {
            breaker.record_failure();
          }
        }
      }
    }
  }

  /// A `PING` to one cluster node on a fresh connection, each step bounded.
  async fn ping_node(&self, node: &str) -> Result<(), Unavailable> {
    let client = self.node_target(node).and_then(|target| client(&target)).map_err(Unavailable)?;
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(self.connect_timeout));
    let mut conn =
      tokio::time::timeout(self.connect_timeout, client.get_multiplexed_async_connection_with_config(&config))
        .await
        .map_err(|_| Unavailable(format!("{node}: connect timed out")))?
        .map_err(unavailable)?;
    let pong = tokio::time::timeout(self.command_timeout, conn.req_packed_command(&redis::cmd("PING")))
      .await
      .map_err(|_| Unavailable(format!("{node}: PING timed out")))?
      .map_err(unavailable)?;
    outcome(pong).map(|_| ()).map_err(Unavailable)
  }

  /// The target of one cluster node (`host:port`): the seeds' credentials
  /// and TLS, at that address, database 0 (the only one a cluster has).
  fn node_target(&self, node: &str) -> Result<RedisTarget, String> {
    let bad = || format!("bad node address {node}");
    let (host, port) = node.rsplit_once(':').ok_or_else(bad)?;
    let mut target = self.target.clone();
    target.host = host.trim_matches(['[', ']']).to_string();
    target.port = port.parse().map_err(|_| bad())?;
    target.db = 0;
    Ok(target)
  }

  /// The cluster's masters as the slot map has them (empty before the first
  /// map, and on a single server).
  pub fn masters(&self) -> Vec<Node> {
    self.cluster.as_ref().map_or_else(Vec::new, |c| c.nodes.masters())
  }

  /// A RESP3 client of one cluster node, for a connection that receives
  /// pushes (the near cache's link to that master).
  pub fn node_push_client(&self, node: &str) -> Result<Client, String> {
    push_client_for(&self.node_target(node)?)
  }

  /// On a cluster: may a failure be left to the failing node's breaker?
  /// Yes while the slot map is known and some master is up; no when the
  /// cluster as a whole is unreachable (then the adapter's breaker decides).
  pub fn isolates_failures(&self) -> bool {
    self.cluster.as_ref().is_some_and(|c| c.nodes.has_map() && !c.nodes.all_down())
  }

  /// Cluster masters whose breaker is open or half-open (empty otherwise).
  pub fn nodes_down(&self) -> Vec<String> {
    self
      .cluster
      .as_ref()
      .map_or_else(Vec::new, |c| c.nodes.down().into_iter().map(|(node, _)| node.to_string()).collect())
  }

  /// Sends the pipeline, each span on the connection its key hashes to: one
  /// round trip per connection, concurrently, all within one command timeout.
  /// A span whose connection broke before it answered is re-sent once (if it
  /// may be) on a fresh connection, within the same budget; a span whose
  /// connection timed out, or failed again, is reported failed, alone with
  /// the other spans of that connection. (On a cluster: each master's spans
  /// on that master's own pool, the same way; see `run_cluster`.)
  pub async fn run(&self, pipe: &Pipeline, spans: &[Span<'_>]) -> Replies {
    debug_assert_eq!(spans.iter().map(|s| s.commands).sum::<usize>(), pipe.len());
    match &self.pool {
      Some(pool) => self.run_pool(pool, pipe, spans).await,
      None => self.run_cluster(pipe, spans).await,
    }
  }

  /// [`run`](Self::run) on one pool (the single node's, or a cluster master's).
  async fn run_pool(&self, pool: &Arc<Pool>, pipe: &Pipeline, spans: &[Span<'_>]) -> Replies {
    let deadline = Deadline::now() + self.command_timeout;
    let mut replies = Replies::new(spans);
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); pool.slots.len()];
    for (j, span) in spans.iter().enumerate() {
      groups[pool.slot_of(span.key)].push(j);
    }
    let commands: Vec<&Cmd> = pipe.cmd_iter().collect();
    let ranges = &replies.ranges;
    let sends = groups.iter().enumerate().filter(|(_, members)| !members.is_empty()).map(|(slot, members)| {
      let sub = if members.len() == spans.len() {
        Cow::Borrowed(pipe)
      } else {
        Cow::Owned(sub_pipeline(&commands, ranges, members))
      };
      self.send_group(pool, slot, sub, &commands, ranges, spans, members, deadline)
    });
    for sent in join_all(sends).await.into_iter().flatten() {
      match sent {
        (members, Ok(values)) => {
          let mut values = values.into_iter();
          for j in members {
            let (first, count) = replies.ranges[j];
            for (slot, value) in replies.outcomes[first..first + count].iter_mut().zip(values.by_ref()) {
              *slot = outcome(value);
            }
          }
        }
        (members, Err(why)) => replies.fail(members, why),
      }
    }
    replies
  }

  /// One connection's share of a pipeline; see [`run`](Self::run). Returns
  /// the spans sent with their values or failure (two groups at most: the
  /// spans re-sent after a broken connection, and those that could not be).
  #[allow(clippy::too_many_arguments)]
  async fn send_group(
    &self,
    pool: &Arc<Pool>,
    slot: usize,
    sub: Cow<'_, Pipeline>,
    commands: &[&Cmd],
    ranges: &[(usize, usize)],
    spans: &[Span<'_>],
    members: &[usize],
    deadline: Deadline,
  ) -> Vec<(Vec<usize>, Result<Vec<Value>, Unavailable>)> {
    let timeout_ms = self.command_timeout.as_millis();
    let why = match pool.send(slot, &sub, deadline, timeout_ms).await {
      Sent::Replied(values) => return vec![(members.to_vec(), self.check_available(values))],
      Sent::Failed(why) => return vec![(members.to_vec(), Err(why))],
      Sent::Broken(why) => why,
    };
    let (again, not_again): (Vec<usize>, Vec<usize>) = members.iter().partition(|&&j| spans[j].retry);
    let mut out = Vec::with_capacity(2);
    if !not_again.is_empty() {
      out.push((not_again, Err(why.clone())));
    }
    if !again.is_empty() {
      let sub = if again.len() == members.len() { sub } else { Cow::Owned(sub_pipeline(commands, ranges, &again)) };
      let result = match pool.send(slot, &sub, deadline, timeout_ms).await {
        Sent::Replied(values) => self.check_available(values),
        Sent::Failed(again_why) | Sent::Broken(again_why) => {
          Err(Unavailable(format!("{} (after a first attempt: {})", again_why.0, why.0)))
        }
      };
      out.push((again, result));
    }
    out
  }

  /// A Redis that is loading, out of memory, read-only or without its
  /// cluster is unavailable, not refusing this data: the spans go to memory.
  /// (A redirection is left to `run_cluster`, which follows it.)
  fn check_available(&self, values: Vec<Value>) -> Result<Vec<Value>, Unavailable> {
    match values.iter().find_map(server_error_code).filter(|e| is_unavailability(e) && !is_redirection(e)) {
      Some(e) => Err(Unavailable(e)),
      None => Ok(values),
    }
  }

  /// A cluster's share of `run`: each master's spans go to that master's
  /// pool (as `run_pool` sends them), all masters concurrently. A span fails
  /// alone: at once when its master's breaker is open, else when its master
  /// fails, which counts against that master's breaker only. A `MOVED` or
  /// `ASK` is followed once (to the node it names, `ASK` with `ASKING`); a
  /// `MOVED` also refreshes the slot map.
  async fn run_cluster(&self, pipe: &Pipeline, spans: &[Span<'_>]) -> Replies {
    let Some(cluster) = &self.cluster else { return Replies::all_failed(spans, Unavailable("not a cluster".into())) };
    let nodes = &cluster.nodes;
    let started = Instant::now();
    let mut replies = Replies::new(spans);
    let commands: Vec<&Cmd> = pipe.cmd_iter().collect();
    let mut groups: HashMap<Node, Vec<usize>> = HashMap::new();
    let mut refresh = false;
    for (j, span) in spans.iter().enumerate() {
      match nodes.node_of(span.key) {
        Some(node) if nodes.allows(&node) => groups.entry(node).or_default().push(j),
        Some(node) => replies.fail([j], Unavailable(format!("node {node} is down (its circuit breaker is open)"))),
        None => {
          refresh = true;
          replies.fail([j], Unavailable("no node serves this slot (slot map not known yet)".into()));
        }
      }
    }
    let sends = groups.into_iter().map(|(node, members)| {
      let sub = sub_pipeline(&commands, &replies.ranges, &members);
      let sub_spans: Vec<Span> = members.iter().map(|&j| spans[j]).collect();
      async move {
        let pool = self.pool_for(&node);
        let result = self.run_pool(&pool, &sub, &sub_spans).await;
        (node, members, result)
      }
    });
    let mut redirects = Vec::new();
    for (node, members, result) in join_all(sends).await {
      let breaker = nodes.breaker(&node);
      let mut node_failed = false;
      for (k, &j) in members.iter().enumerate() {
        match result.span(k) {
          Ok(outcomes) => {
            if let Some(to) = outcomes.iter().find_map(|o| o.as_ref().err().and_then(|e| redirection(e, &node))) {
              redirects.push((j, to));
              continue;
            }
            let (first, count) = replies.ranges[j];
            replies.outcomes[first..first + count].clone_from_slice(outcomes);
            replies.answered_by[j] = Some(node.clone());
          }
          Err(why) => {
            node_failed = true;
            replies.fail([j], Unavailable(format!("node {node}: {}", why.0)));
          }
        }
      }
      if node_failed {
        breaker.record_failure_of(started);
        refresh = true;
      } else {
        breaker.record_success();
      }
    }
    // Redirections: one more attempt each, on the node named.
    let follow = redirects.into_iter().map(|(j, (to, ask))| {
      let (first, count) = replies.ranges[j];
      let mut sub = Pipeline::with_capacity(count + 1);
      if ask {
        sub.cmd("ASKING");
      }
      for cmd in &commands[first..first + count] {
        sub.add_command((*cmd).clone());
      }
      let span = Span { commands: count + ask as usize, ..spans[j] };
      async move {
        let pool = self.pool_for(&to);
        let result = self.run_pool(&pool, &sub, &[span]).await;
        (j, to, ask, result)
      }
    });
    for (j, to, ask, result) in join_all(follow).await {
      refresh |= !ask;
      match result.span(0) {
        Ok(outcomes) => {
          let outcomes = &outcomes[ask as usize..];
          match outcomes.iter().find_map(|o| o.as_ref().err().filter(|e| is_redirection(e))) {
            // Redirected again (the slot moved on): to memory, replayed later.
            Some(e) => replies.fail([j], Unavailable(format!("node {to}: {e}"))),
            None => {
              let (first, count) = replies.ranges[j];
              replies.outcomes[first..first + count].clone_from_slice(outcomes);
              replies.answered_by[j] = Some(to.clone());
            }
          }
        }
        Err(why) => replies.fail([j], Unavailable(format!("node {to}: {}", why.0))),
      }
    }
    if refresh {
      // Refreshed by the supervisor (`tend`), not on the callers' time.
      nodes.mark_stale();
    }
    replies
  }

  /// One command, for the maintenance paths; a server error is an `Err` too.
  pub async fn run_one(&self, cmd: Cmd) -> Result<Value, Unavailable> {
    self.run_keyed(cmd, "").await
  }

  /// One command: `Err` only when Redis could not be reached; its answer,
  /// error replies included (a refusal by an ACL is an answer), otherwise.
  pub async fn run_one_answer(&self, cmd: Cmd) -> Result<Outcome, Unavailable> {
    self.run_keyed_answer(cmd, "").await
  }

  async fn run_keyed(&self, cmd: Cmd, key: &str) -> Result<Value, Unavailable> {
    self.run_keyed_answer(cmd, key).await?.map_err(Unavailable)
  }

  async fn run_keyed_answer(&self, cmd: Cmd, key: &str) -> Result<Outcome, Unavailable> {
    let mut pipe = Pipeline::with_capacity(1);
    pipe.add_command(cmd);
    // Maintenance commands (PING, INFO, SCAN, UNLINK, write-time-checked
    // scripts) give the same result when run twice.
    let mut out = self.run(&pipe, &[Span { key, commands: 1, retry: true }]).await.into_result()?;
    Ok(out.pop().unwrap_or_else(|| Err("no reply".into())))
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

  /// One command on the node that owns `route_key`'s slot (on a single
  /// node: on the connection `route_key` hashes to).
  pub async fn run_routed(&self, cmd: Cmd, route_key: &str) -> Result<Value, Unavailable> {
    self.run_keyed(cmd, route_key).await
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

/// The client of a single-node target (TLS files are read here), or why
/// there is none; every dial reports that reason.
pub(crate) fn client(target: &RedisTarget) -> Result<Client, String> {
  client_speaking(target, redis::ProtocolVersion::RESP2)
}

/// A RESP3 client of a single-node target, for a connection that receives
/// pushes (a near-cache link, and the doctor's check of one).
pub(crate) fn push_client_for(target: &RedisTarget) -> Result<Client, String> {
  client_speaking(target, redis::ProtocolVersion::RESP3)
}

/// How the near cache's link reaches a single server or the master Sentinel
/// names, speaking RESP3 (it receives pushes); `None` on a cluster, where
/// each master has a link of its own (`node_push_client`).
pub fn push_dialer(target: &RedisTarget) -> Option<Result<crate::near::Dialer, String>> {
  use crate::near::Dialer;
  if !target.cluster_nodes.is_empty() {
    return None;
  }
  Some(match target.sentinel {
    Some(_) => sentinel_client_speaking(target, redis::ProtocolVersion::RESP3)
      .map(|c| Dialer::Sentinel(tokio::sync::Mutex::new(c))),
    None => push_client_for(target).map(Dialer::Direct),
  })
}

fn client_speaking(target: &RedisTarget, protocol: redis::ProtocolVersion) -> Result<Client, String> {
  let certs = load_certs(target.tls.as_ref())?;
  if certs.is_some() {
    // Another library in the process may have chosen one already; either is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
  }
  let addr = if target.tls.is_some() {
    ConnectionAddr::TcpTls { host: target.host.clone(), port: target.port, insecure: false, tls_params: None }
  } else {
    ConnectionAddr::Tcp(target.host.clone(), target.port)
  };
  let mut redis_info = redis::RedisConnectionInfo::default().set_db(target.db).set_protocol(protocol);
  if let Some(u) = &target.username {
    redis_info = redis_info.set_username(u);
  }
  if let Some(p) = &target.password {
    redis_info = redis_info.set_password(p);
  }
  let info: ConnectionInfo = addr
    .into_connection_info()
    .map_err(|e| e.to_string())?
    .set_redis_settings(redis_info)
    .set_tcp_settings(tcp_settings());
  match certs {
    Some(certs) => Client::build_with_tls(info, certs),
    None => Client::open(info),
  }
  .map_err(|e| e.to_string())
}

/// The sentinel client of a Sentinel target: it asks the sentinels for the
/// master (and checks that the node it names says it is one) at every dial.
pub(crate) fn sentinel_client(target: &RedisTarget) -> Result<SentinelClient, String> {
  sentinel_client_speaking(target, redis::ProtocolVersion::RESP2)
}

fn sentinel_client_speaking(target: &RedisTarget, protocol: redis::ProtocolVersion) -> Result<SentinelClient, String> {
  let sentinel = target.sentinel.as_ref().ok_or("no sentinels configured")?;
  let addrs = sentinel.sentinels.iter().map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
  let mut b = SentinelClientBuilder::new(addrs, &sentinel.master_name, SentinelServerType::Master)
    .map_err(|e| e.to_string())?
    .set_client_to_redis_db(target.db)
    .set_client_to_redis_protocol(protocol)
    .set_client_to_redis_tcp_settings(tcp_settings())
    .set_client_to_sentinel_tcp_settings(tcp_settings());
  if let Some(u) = &target.username {
    b = b.set_client_to_redis_username(u);
  }
  if let Some(p) = &target.password {
    b = b.set_client_to_redis_password(p);
  }
  if target.tls.is_some() {
    // Another library in the process may have chosen one already; either is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
    if let Some(certs) = load_certs(target.tls.as_ref())? {
      b = b.set_client_to_redis_certificates(certs);
    }
  }
  b.build().map_err(|e| crate::redact::mask_userinfo(&e.to_string()))
}

/// A Redis Cluster as the tier sees it.
struct Cluster {
  nodes: NodeHealth,
  /// A pool per node (masters, and the seeds asked for the slot map).
  pools: Mutex<HashMap<Node, Arc<Pool>>>,
  pool_size: usize,
}

/// `host:port` of a seed URL.
fn seed_address(url: &str) -> Option<Node> {
  let authority = url.split_once("://")?.1.split('/').next()?;
  let hostport = authority.rsplit('@').next()?;
  let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "6379"));
  Some(Node::from(format!("{}:{port}", host.trim_matches(['[', ']']))))
}

/// Where a `MOVED`/`ASK` reply sends a command: (`host:port`, is `ASK`).
/// An empty host is the host of `from`, the node that answered.
fn redirection(error: &str, from: &str) -> Option<(Node, bool)> {
  let mut words = error.split_whitespace();
  let ask = match words.next()? {
    "MOVED" => false,
    "ASK" => true,
    _ => return None,
  };
  let addr = words.nth(1)?;
  let (host, port) = addr.rsplit_once(':')?;
  let host = if host.is_empty() { from.rsplit_once(':').map_or("", |(h, _)| h) } else { host };
  Some((Node::from(format!("{host}:{port}")), ask))
}

/// How the pool reaches its server.
enum Dialer {
  Direct(Client),
  /// Through Redis Sentinel: each dial asks for the current master, so a
  /// connection replaced after a failover reaches the new one.
  Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// A pipeline of the commands of `members` (span indexes), in order.
fn sub_pipeline(commands: &[&Cmd], ranges: &[(usize, usize)], members: &[usize]) -> Pipeline {
  let mut pipe = Pipeline::with_capacity(members.iter().map(|&j| ranges[j].1).sum());
  for &j in members {
    let (first, count) = ranges[j];
    for cmd in &commands[first..first + count] {
      pipe.add_command((*cmd).clone());
    }
  }
  pipe
}

/// How one attempt on a pooled connection ended.
enum Sent {
  Replied(Vec<Value>),
  /// The connection broke, or its server stepped down or is loading (the
  /// commands did not run there): sending again on a new one may succeed.
  Broken(Unavailable),
  /// Timed out, or no connection within the budget: not worth a second try.
  Failed(Unavailable),
}

/// Server errors after which a connection is dropped and re-dialled: the
/// server it reaches is no longer the writable primary, or not ready; after
/// a failover a new connection reaches the new primary. `NOSCRIPT`: the
/// server forgot the scripts (a restart, `SCRIPT FLUSH`); a new connection
/// loads them again.
const REPLACE_ON: [&str; 4] = ["READONLY", "LOADING", "MASTERDOWN", "NOSCRIPT"];

/// The pooled connections of a single-node Redis, each in a slot of its own.
struct Pool {
  dialer: Result<Dialer, String>,
  config: AsyncConnectionConfig,
  command_timeout: Duration,
  connect_timeout: Duration,
  slots: Vec<Slot>,
  closed: AtomicBool,
  /// A check of the other connections after a timeout is under way.
  checking: AtomicBool,
}

/// A slot holds at most one live connection; a failed one is dropped and a
/// new one dialled in the background, one dial at a time, with a backoff
/// that grows while dials fail or new connections fail at once.
#[derive(Default)]
struct Slot {
  state: Mutex<SlotState>,
  /// Woken when a dial ends, with or without a connection.
  dialled: Notify,
  /// Wakes a dial waiting out its backoff (the probe found Redis back).
  hurry: Notify,
  /// Drops and failed dials since this slot last answered.
  strikes: AtomicU32,
}

#[derive(Default)]
struct SlotState {
  conn: Option<MultiplexedConnection>,
  /// Counts the connections installed, so that a failure seen on an old
  /// connection never drops its replacement.
  generation: u64,
  dialing: bool,
  /// Earliest start of the next dial.
  dial_due: Option<Deadline>,
  last_error: Option<String>,
}

/// Wait before re-dialling a slot after `strikes` drops or failed dials in a
/// row: at once after the first, then 25 ms doubling up to 1 s.
fn backoff(strikes: u32) -> Duration {
  match strikes {
    0 | 1 => Duration::ZERO,
    n => Duration::from_millis(25u64 << (n - 2).min(6)).min(Duration::from_secs(1)),
  }
}

impl Pool {
  fn new(
    dialer: Result<Dialer, String>,
    config: AsyncConnectionConfig,
    size: usize,
    command_timeout: Duration,
    connect_timeout: Duration,
  ) -> Self {
    Pool {
      dialer,
      config,
      command_timeout,
      connect_timeout,
      slots: (0..size).map(|_| Slot::default()).collect(),
      closed: AtomicBool::new(false),
      checking: AtomicBool::new(false),
    }
  }

  /// The slot of a key: fixed for the life of the pool.
  fn slot_of(&self, key: &str) -> usize {
    let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key);
    (hash % self.slots.len() as u64) as usize
  }

  fn live(&self) -> usize {
    self.slots.iter().filter(|s| lock(&s.state).conn.is_some()).count()
  }

  fn close(&self) {
    self.closed.store(true, Ordering::Release);
    for slot in &self.slots {
      lock(&slot.state).conn = None;
      slot.dialled.notify_waiters();
    }
  }

  /// One new connection, bounded by the connect timeout.
  async fn dial(&self) -> Result<MultiplexedConnection, Unavailable> {
    let dialer = self.dialer.as_ref().map_err(|e| Unavailable(e.clone()))?;
    let connect = async {
      let mut conn = match dialer {
        Dialer::Direct(client) => client.get_multiplexed_async_connection_with_config(&self.config).await?,
        Dialer::Sentinel(sentinel) => {
          let master = sentinel.lock().await.async_get_client().await?;
          master.get_multiplexed_async_connection_with_config(&self.config).await?
        }
      };
      // Writes name their scripts by SHA1 (EVALSHA): load them on every new
      // connection, since a restarted or promoted server has none. A refusal
      // is not fatal here: EVALSHA's NOSCRIPT then replaces the connection.
      let mut load = Pipeline::with_capacity(scripts::CACHED.len());
      for (code, _) in scripts::CACHED.iter() {
        load.cmd("SCRIPT").arg("LOAD").arg(*code);
      }
      let _ = conn.req_packed_commands(&load, 0, load.len()).await;
      Ok::<_, RedisError>(conn)
    };
    match tokio::time::timeout(self.connect_timeout, connect).await {
      Ok(Ok(conn)) => Ok(conn),
      Ok(Err(e)) => Err(unavailable(e)),
      Err(_) => Err(Unavailable(format!("connect timed out after {} ms", self.connect_timeout.as_millis()))),
    }
  }

  /// One attempt to send `pipe` on slot `i` and read its replies by `deadline`.
  async fn send(self: &Arc<Self>, i: usize, pipe: &Pipeline, deadline: Deadline, timeout_ms: u128) -> Sent {
    let (mut conn, generation) = match self.acquire(i, deadline).await {
      Ok(live) => live,
      Err(why) => return Sent::Failed(why),
    };
    match tokio::time::timeout_at(deadline, conn.req_packed_commands(pipe, 0, pipe.len())).await {
      Err(_) => {
        // A silent path, or a server that stopped: this connection may never
        // answer again, so a new one replaces it.
        self.drop_conn(i, generation, "timed out");
        tokio::spawn(Arc::clone(self).check_others(i));
        Sent::Failed(Unavailable(format!("connection {i}: command timed out after {timeout_ms} ms")))
      }
      Ok(Ok(values)) if values.len() != pipe.len() => {
        self.drop_conn(i, generation, "wrong number of replies");
        Sent::Failed(Unavailable(format!("connection {i}: {} replies to {} commands", values.len(), pipe.len())))
      }
      Ok(Ok(values)) => match values.iter().find_map(server_error_code).filter(|e| REPLACE_ON.contains(&code_of(e))) {
        Some(e) => {
          self.drop_conn(i, generation, &e);
          Sent::Broken(Unavailable(e))
        }
        None => {
          self.answered(i);
          Sent::Replied(values)
        }
      },
      Ok(Err(e)) => {
        self.drop_conn(i, generation, &e.to_string());
        let why = Unavailable(format!("connection {i}: {e}"));
        if e.is_io_error() && !e.is_timeout() {
          Sent::Broken(why)
        } else {
          Sent::Failed(why)
        }
      }
    }
  }

  /// After a timeout on slot `skip`: a path that went silent for one
  /// connection has likely gone silent for all, so each other connection
  /// gets a `PING`, and one that does not answer in time is replaced now,
  /// rather than when a caller's command waits out its timeout on it.
  async fn check_others(self: Arc<Self>, skip: usize) {
    if self.checking.swap(true, Ordering::AcqRel) {
      return;
    }
    let ping = redis::cmd("PING");
    let checks = (0..self.slots.len()).filter(|&i| i != skip).map(|i| {
      let live = {
        let s = lock(&self.slots[i].state);
        s.conn.clone().map(|c| (c, s.generation))
      };
      let (this, ping) = (&self, &ping);
      async move {
        let Some((mut conn, generation)) = live else { return };
        match tokio::time::timeout(this.command_timeout, conn.req_packed_command(ping)).await {
          Ok(Ok(_)) => {}
          Ok(Err(e)) => this.drop_conn(i, generation, &e.to_string()),
          Err(_) => this.drop_conn(i, generation, "did not answer a PING after another connection timed out"),
        }
      }
    });
    join_all(checks).await;
    self.checking.store(false, Ordering::Release);
  }

  /// Slot `i`'s live connection and its generation; without one, starts
  /// a dial (if none is under way) and waits for it until `deadline`.
  async fn acquire(
    self: &Arc<Self>,
    i: usize,
    deadline: Deadline,
  ) -> Result<(MultiplexedConnection, u64), Unavailable> {
    let slot = &self.slots[i];
    let mut waited = false;
    loop {
      let dialled = slot.dialled.notified();
      {
        let mut s = lock(&slot.state);
        if let Some(conn) = &s.conn {
          return Ok((conn.clone(), s.generation));
        }
        if self.closed.load(Ordering::Acquire) {
          return Err(Unavailable("the adapter is closed".into()));
        }
        // The dial waited for failed (say, refused): fail now rather than
        // spend the rest of the budget on more dials.
        if waited && !s.dialing {
          let why = s.last_error.as_deref().unwrap_or("not connected");
          return Err(Unavailable(format!("connection {i}: {why}")));
        }
        if self.schedule_dial(i, &mut s) > deadline {
          let why = s.last_error.as_deref().unwrap_or("not connected");
          return Err(Unavailable(format!("connection {i} is being re-dialled ({why})")));
        }
      }
      if tokio::time::timeout_at(deadline, dialled).await.is_err() {
        let why = lock(&slot.state).last_error.clone().unwrap_or_else(|| "connecting".into());
        return Err(Unavailable(format!("connection {i}: no connection in time ({why})")));
      }
      waited = true;
    }
  }

  /// Starts a background dial of slot `i` unless one is under way; returns
  /// when it starts (now, or once the backoff is over).
  fn schedule_dial(self: &Arc<Self>, i: usize, s: &mut SlotState) -> Deadline {
    let now = Deadline::now();
    let due = s.dial_due.map_or(now, |due| due.max(now));
    if !s.dialing {
      s.dialing = true;
      s.dial_due = Some(due);
      tokio::spawn(Arc::clone(self).dial_slot(i));
    }
    due
  }

  async fn dial_slot(self: Arc<Self>, i: usize) {
    let slot = &self.slots[i];
    loop {
      let hurried = slot.hurry.notified();
      let due = lock(&slot.state).dial_due.unwrap_or_else(Deadline::now);
      if due <= Deadline::now() {
        break;
      }
      tokio::select! {
        _ = tokio::time::sleep_until(due) => {}
        _ = hurried => {}
      }
    }
    let result = if self.closed.load(Ordering::Acquire) {
      Err(Unavailable("the adapter is closed".into()))
    } else {
      self.dial().await
    };
    {
      let mut s = lock(&slot.state);
      s.dialing = false;
      match result {
        Ok(conn) => {
          // The probe may have filled the slot meanwhile; keep that one.
          if s.conn.is_none() && !self.closed.load(Ordering::Acquire) {
            s.conn = Some(conn);
            s.generation += 1;
          }
          s.last_error = None;
        }
        Err(Unavailable(why)) => {
          let strikes = slot.strikes.fetch_add(1, Ordering::AcqRel) + 1;
          s.dial_due = Some(Deadline::now() + backoff(strikes));
          s.last_error = Some(why);
        }
      }
    }
    slot.dialled.notify_waiters();
  }

  /// Drops slot `i`'s connection (if it is still the one of `generation`)
  /// and starts dialling its replacement. In-flight commands on it end with
  /// their own timeout or error; the socket closes when the last one ends.
  fn drop_conn(self: &Arc<Self>, i: usize, generation: u64, why: &str) {
    let slot = &self.slots[i];
    let mut s = lock(&slot.state);
    if s.generation != generation || s.conn.is_none() {
      return;
    }
    s.conn = None;
    s.last_error = Some(why.to_string());
    let strikes = slot.strikes.fetch_add(1, Ordering::AcqRel) + 1;
    s.dial_due = Some(Deadline::now() + backoff(strikes));
    if !self.closed.load(Ordering::Acquire) {
      self.schedule_dial(i, &mut s);
    }
  }

  /// Slot `i` answered: its backoff starts over.
  fn answered(&self, i: usize) {
    let slot = &self.slots[i];
    if slot.strikes.load(Ordering::Relaxed) != 0 {
      slot.strikes.store(0, Ordering::Release);
    }
  }

  /// After a successful probe: the pool's connections lived through an
  /// outage and may be dead without knowing it (a silent path, a restarted
  /// or demoted server), so all are replaced: the probe's connection takes
  /// the first slot, the others are dialled at once, backoffs start over.
  fn renew(self: &Arc<Self>, conn: MultiplexedConnection) {
    let mut conn = Some(conn);
    for (i, slot) in self.slots.iter().enumerate() {
      slot.strikes.store(0, Ordering::Release);
      let mut s = lock(&slot.state);
      if self.closed.load(Ordering::Acquire) {
        return;
      }
      s.conn = conn.take();
      s.generation += 1;
      s.dial_due = None;
      s.last_error = None;
      if s.conn.is_none() {
        self.schedule_dial(i, &mut s);
      }
      drop(s);
      slot.dialled.notify_waiters();
      slot.hurry.notify_waiters();
    }
  }

  /// Dials every empty slot and waits for them until `deadline` (best effort).
  async fn fill(self: &Arc<Self>, deadline: Deadline) {
    join_all((0..self.slots.len()).map(|i| self.acquire(i, deadline))).await;
  }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
  // A panic while holding the lock leaves plain data behind; keep going.
  m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A reply as an outcome: an error reply (which redis-rs hands over as a value) is an `Err`.
pub(crate) fn outcome(v: Value) -> Outcome {
  match v {
    Value::ServerError(e) => Err(match e.details() {
      Some(details) => format!("{} {details}", e.code()),
      None => e.code().to_string(),
    }),
    v => Ok(v),
  }
}

/// A server error reply as `CODE detail`.
fn server_error_code(v: &Value) -> Option<String> {
  match v {
    Value::ServerError(_) => outcome(v.clone()).err(),
    _ => None,
  }
}

fn code_of(error: &str) -> &str {
  error.split_whitespace().next().unwrap_or("")
}

/// Server error codes that say Redis cannot serve now, whatever the command.
fn is_unavailability(error: &str) -> bool {
  const CODES: [&str; 12] = [
    "NOSCRIPT",
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "READONLY",
    "OOM",
    "NOREPLICAS",
    "MISCONF",
    "MOVED",
    "ASK",
  ];
  CODES.contains(&code_of(error))
}

/// A cluster redirection (`MOVED`/`ASK`): the key is served elsewhere now.
fn is_redirection(error: &str) -> bool {
  matches!(code_of(error), "MOVED" | "ASK")
}

#[cfg(test)]
mod pool_tests {
  use super::*;

  #[test]
  fn a_key_always_takes_the_same_connection_and_keys_spread() {
    let pool =
      Pool::new(Err("none".into()), AsyncConnectionConfig::new(), 4, Duration::from_secs(1), Duration::from_secs(1));
    let mut used = [0; 4];
    for k in 0..1000 {
      let key = format!("p:kv:key-{k}");
      let slot = pool.slot_of(&key);
      assert_eq!(slot, pool.slot_of(&key));
      used[slot] += 1;
    }
    assert!(used.iter().all(|&n| n > 150), "keys spread over the slots: {used:?}");
  }

  #[test]
  fn backoff_starts_at_once_and_is_capped() {
    assert_eq!(backoff(1), Duration::ZERO);
    assert_eq!(backoff(2), Duration::from_millis(25));
    assert_eq!(backoff(3), Duration::from_millis(50));
    assert_eq!(backoff(40), Duration::from_secs(1));
  }

  #[test]
  fn replies_report_failures_per_span() {
    let spans = [
      Span { key: "a", commands: 1, retry: true },
      Span { key: "b", commands: 2, retry: true },
      Span { key: "c", commands: 1, retry: false },
    ];
    let mut r = Replies::new(&spans);
    r.outcomes[1] = Ok(Value::Int(1));
    r.fail([2], Unavailable("gone".into()));
    assert_eq!(r.span(1).map(|o| o.len()).ok(), Some(2));
    assert!(matches!(r.span(1).unwrap()[0], Ok(Value::Int(1))));
    assert_eq!(r.span(2).err().map(|e| e.0.as_str()), Some("gone"));
    assert_eq!(r.failure().map(|e| e.0.as_str()), Some("gone"));
    assert!(r.into_result().is_err());
  }

  #[tokio::test]
  async fn a_dead_port_fails_within_the_budget_and_backs_off() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap();
    let target = RedisTarget {
      host: "127.0.0.1".into(),
      port,
      username: None,
      password: None,
      db: 0,
      tls: None,
      cluster_nodes: Vec::new(),
      sentinel: None,
    };
    let tier = RedisTier::new(target, 2, Duration::from_millis(100), Duration::from_millis(200), (5, Duration::ZERO));
    let mut pipe = Pipeline::new();
    pipe.cmd("GET").arg("k");
    let t0 = Instant::now();
    let replies = tier.run(&pipe, &[Span { key: "k", commands: 1, retry: true }]).await;
    assert!(replies.span(0).is_err());
    // Bounded by the command timeout (with room for a busy machine).
    assert!(t0.elapsed() < Duration::from_millis(600), "bounded: {:?}", t0.elapsed());
    assert!(tier.probe().await.is_err());
    assert_eq!(tier.connections(), 0);
  }
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

fn push_write(pipe: &mut Pipeline, op: &str, key: &str, now_ms: u64, ttl_ms: u64, value: &[u8], field: &str) {
  pipe.cmd("EVALSHA").arg(scripts::write_sha()).arg(1).arg(key).arg(op).arg(now_ms).arg(ttl_ms).arg(value).arg(field);
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
      pipe.cmd("EVALSHA").arg(scripts::increment_sha()).arg(1).arg(key).arg(*by).arg(header).arg(px(ttl));
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
        crate::tags::push_join(pipe, tag, key, px(ttl));
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
