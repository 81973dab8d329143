//! Redis Cluster health node by node: which master serves each hash slot (as
//! `CLUSTER SLOTS` last said), and a circuit breaker per master, so that a
//! failing node sends only its own slots to the memory tier while the other
//! masters keep serving theirs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::Value;

use crate::breaker::{CircuitBreaker, State};

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The hash slot of a key, as Redis computes it: CRC16 (XMODEM) of its hash
/// tag (the text between the first `{` and the next `}`, if not empty), or
/// of the whole key.
pub fn slot_of(key: &[u8]) -> u16 {
  let tag = key.iter().position(|&b| b == b'{').and_then(|open| {
    let rest = &key[open + 1..];
    rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
  });
  crc16(tag.unwrap_or(key)) % SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
  let mut crc: u16 = 0;
  for &b in bytes {
    crc ^= (b as u16) << 8;
    for _ in 0..8 {
      crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
    }
  }
  crc
}

/// A master's address, `host:port`, as the cluster names it.
pub type Node = Arc<str>;

/// The slot map and the per-master breakers of one cluster connection.
pub struct NodeHealth {
  /// (first slot, last slot, master), sorted by first slot.
  map: RwLock<Vec<(u16, u16, Node)>>,
  breakers: Mutex<HashMap<Node, Arc<CircuitBreaker>>>,
  threshold: u32,
  cooldown: Duration,
  /// When a refresh of the map was last started, in ms since `epoch` (+1,
  /// so that 0 means never).
  refreshed_ms: AtomicU64,
  /// A command was redirected or failed: the map may be out of date.
  stale: AtomicBool,
  epoch: Instant,
}

impl NodeHealth {
  pub fn new(threshold: u32, cooldown: Duration) -> Self {
    NodeHealth {
      map: RwLock::new(Vec::new()),
      breakers: Mutex::new(HashMap::new()),
      threshold,
      cooldown,
      refreshed_ms: AtomicU64::new(0),
      stale: AtomicBool::new(false),
      epoch: Instant::now(),
    }
  }

  /// The master that serves `key`'s slot, as last seen (`None` before the
  /// first map, or for a slot no master serves).
  pub fn node_of(&self, key: &str) -> Option<Node> {
    let slot = slot_of(key.as_bytes());
    let map = self.map.read().unwrap_or_else(|p| p.into_inner());
    let i = map.partition_point(|(first, _, _)| *first <= slot);
    let (first, last, node) = map.get(i.checked_sub(1)?)?;
    (*first <= slot && slot <= *last).then(|| node.clone())
  }

  /// The breaker of `node` (a new one starts closed).
  pub fn breaker(&self, node: &Node) -> Arc<CircuitBreaker> {
    let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
    breakers
      .entry(node.clone())
      .or_insert_with(|| Arc::new(CircuitBreaker::closed(self.threshold, self.cooldown)))
      .clone()
  }

  /// May commands for `node`'s slots go to Redis now?
  pub fn allows(&self, node: &Node) -> bool {
    let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
    breakers.get(node).is_none_or(|b| b.allows_traffic())
  }

  /// Masters whose breaker is not closed, with their breakers.
  pub fn down(&self) -> Vec<(Node, Arc<CircuitBreaker>)> {
    let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
    let mut down: Vec<_> =
      breakers.iter().filter(|(_, b)| b.state() != State::Closed).map(|(n, b)| (n.clone(), b.clone())).collect();
    down.sort_by(|a, b| a.0.cmp(&b.0));
    down
  }

  /// The masters of the map.
  pub fn masters(&self) -> Vec<Node> {
    let map = self.map.read().unwrap_or_else(|p| p.into_inner());
    let mut masters: Vec<Node> = map.iter().map(|(_, _, n)| n.clone()).collect();
    masters.sort();
    masters.dedup();
    masters
  }

  pub fn has_map(&self) -> bool {
    !self.map.read().unwrap_or_else(|p| p.into_inner()).is_empty()
  }

  /// Is every master of the map down? (Then the cluster as a whole is.)
  pub fn all_down(&self) -> bool {
    let map = self.map.read().unwrap_or_else(|p| p.into_inner());
    !map.is_empty() && map.iter().all(|(_, _, node)| !self.allows(node))
  }

  /// Installs a new map. A master that serves no slot any more (a replica
  /// took over its slots) loses its breaker: no command goes to it, and if
  /// it serves slots again one day it starts afresh.
  pub fn set_map(&self, mut ranges: Vec<(u16, u16, Node)>) {
    ranges.sort_by_key(|(first, _, _)| *first);
    let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
    breakers.retain(|node, _| ranges.iter().any(|(_, _, n)| n == node));
    *self.map.write().unwrap_or_else(|p| p.into_inner()) = ranges;
  }

  pub fn mark_stale(&self) {
    self.stale.store(true, Ordering::Release);
  }

  /// Was the map marked out of date since the last call?
  pub fn take_stale(&self) -> bool {
    self.stale.swap(false, Ordering::AcqRel)
  }

  /// Claims a refresh of the map if none started within `gap`.
  pub fn claim_refresh(&self, gap: Duration) -> bool {
    let now = self.epoch.elapsed().as_millis() as u64 + 1;
    let last = self.refreshed_ms.load(Ordering::Acquire);
    (last == 0 || now.saturating_sub(last) >= gap.as_millis() as u64)
      && self.refreshed_ms.compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire).is_ok()
  }
}

/// Slot ranges and their masters from a `CLUSTER SLOTS` reply; an empty
/// host (the node's own, unnamed) becomes `default_host`.
pub fn parse_slots(reply: &Value, default_host: &str) -> Result<Vec<(u16, u16, Node)>, String> {
  let bad = || format!("unexpected CLUSTER SLOTS reply: {reply:?}");
  let Value::Array(entries) = reply else { return Err(bad()) };
  let int = |v: &Value| match v {
    Value::Int(n) => u16::try_from(*n).ok().filter(|n| *n < SLOTS),
    _ => None,
  };
  let text = |v: &Value| match v {
    Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
    Value::SimpleString(s) => Some(s.clone()),
    _ => None,
  };
  let mut ranges = Vec::with_capacity(entries.len());
  for entry in entries {
    let Value::Array(fields) = entry else { return Err(bad()) };
    let (Some(first), Some(last)) = (fields.first().and_then(int), fields.get(1).and_then(int)) else {
      return Err(bad());
    };
    let Some(Value::Array(master)) = fields.get(2) else { return Err(bad()) };
    let host = master.first().and_then(text).filter(|h| !h.is_empty() && h != "?");
    let port = match master.get(1) {
      Some(Value::Int(p)) => u16::try_from(*p).map_err(|_| bad())?,
      _ => return Err(bad()),
    };
    ranges.push((first, last, Node::from(format!("{}:{port}", host.as_deref().unwrap_or(default_host)))));
  }
  Ok(ranges)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn slots_are_redis_own() {
    // Values from `CLUSTER KEYSLOT`.
    assert_eq!(slot_of(b"foo"), 12182);
    assert_eq!(slot_of(b"123456789"), 0x31C3 % SLOTS);
    assert_eq!(slot_of(b"cf:kv:{mig}-1"), slot_of(b"mig"));
    assert_eq!(slot_of(b"a{}b"), slot_of(b"a{}b"), "an empty tag hashes the whole key");
    assert_ne!(slot_of(b"a{}b"), slot_of(b""));
    assert_eq!(slot_of(b"x{user1000}.following"), slot_of(b"y{user1000}.followers"));
  }

  fn ranges() -> Value {
    let node = |host: &str, port| Value::Array(vec![Value::BulkString(host.into()), Value::Int(port)]);
    Value::Array(vec![
      Value::Array(vec![Value::Int(5461), Value::Int(10922), node("", 7001), node("10.0.0.2", 7004)]),
      Value::Array(vec![Value::Int(0), Value::Int(5460), node("10.0.0.1", 7000)]),
      Value::Array(vec![Value::Int(10923), Value::Int(16383), node("10.0.0.3", 7002)]),
    ])
  }

  #[test]
  fn keys_find_their_master_and_its_breaker() {
    let health = NodeHealth::new(2, Duration::from_secs(60));
    assert_eq!(health.node_of("foo"), None, "no map yet");
    health.set_map(parse_slots(&ranges(), "10.0.0.9").unwrap());
    assert_eq!(health.node_of("foo").as_deref(), Some("10.0.0.3:7002"));
    let middle = (0..).map(|i| format!("k{i}")).find(|k| (5461..=10922).contains(&slot_of(k.as_bytes()))).unwrap();
    assert_eq!(health.node_of(&middle).as_deref(), Some("10.0.0.9:7001"), "the unnamed host");
    assert_eq!(health.masters().len(), 3);
    let node = health.node_of("foo").unwrap();
    assert!(health.allows(&node));
    health.breaker(&node).record_failure();
    health.breaker(&node).record_failure();
    assert!(!health.allows(&node));
    assert!(!health.all_down());
    assert_eq!(health.down().len(), 1);
    // A replica took over: the old master's breaker goes with it.
    let moved = parse_slots(&ranges(), "10.0.0.9")
      .unwrap()
      .into_iter()
      .map(|(a, b, n)| (a, b, if &*n == "10.0.0.3:7002" { Node::from("10.0.0.4:7005") } else { n }));
    health.set_map(moved.collect());
    assert_eq!(health.node_of("foo").as_deref(), Some("10.0.0.4:7005"));
    assert!(health.down().is_empty());
  }

  #[test]
  fn refreshes_are_throttled() {
    let health = NodeHealth::new(2, Duration::from_secs(60));
    assert!(health.claim_refresh(Duration::from_secs(5)));
    assert!(!health.claim_refresh(Duration::from_secs(5)));
    assert!(health.claim_refresh(Duration::ZERO));
  }

  #[test]
  fn a_malformed_reply_is_an_error() {
    assert!(parse_slots(&Value::Int(1), "h").is_err());
    assert!(parse_slots(&Value::Array(vec![Value::Array(vec![Value::Int(0)])]), "h").is_err());
  }
}
