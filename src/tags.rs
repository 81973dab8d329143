//! Tags: which entries carry which tag, in Redis and in the memory tier, and
//! their invalidation.
//!
//! In Redis, one set per tag, `<prefix>:tag:<escaped tag>`, gets the entry's
//! key (`SADD`, by [`TAG_SCRIPT`]) in the same pipeline as the tagged write;
//! the set lives as long as its longest-lived member. The memory tier keeps
//! the same membership in a [`TagIndex`], so tags work with Redis down or
//! disabled. Invalidation reads the members (`SSCAN`, never `KEYS`) and
//! deletes each key through the ordinary write path (routed per key, so it
//! is cluster-safe, write-time checked, written through to memory, and
//! journaled for replay during an outage); soft invalidation rewrites each
//! read-through entry as stale ([`crate::envelope::staled`]) with its
//! remaining TTL, so it still serves as a fail-safe fallback.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Value;

use crate::batch::{Op, Reply};
use crate::codec;
use crate::engine::Cache;
use crate::envelope;
use crate::keys::{escape_id, KeySpace};
use crate::tiers::redis::{Span, Unavailable};

/// `SADD` of the entry key to the tag's set; the set's TTL grows to the
/// entry's (`PEXPIRE … GT` needs Redis 7, the adapter supports 6).
/// KEYS[1]: the tag's set; ARGV: entry key, TTL (ms).
pub const TAG_SCRIPT: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"#;

/// Adds `key` to the tag set `tag_key` (a tagged write, or its replay after
/// an outage), the set living at least `ttl_ms`.
pub fn push_join(pipe: &mut redis::Pipeline, tag_key: &str, key: &str, ttl_ms: u64) {
  pipe.cmd("EVAL").arg(TAG_SCRIPT).arg(1).arg(tag_key).arg(key).arg(ttl_ms);
}

/// The Redis key of a tag's set of entry keys.
pub fn tag_key(keys: &KeySpace, tag: &str) -> String {
  format!("{}:tag:{}", keys.prefix(), escape_id(tag))
}

/// Tag set → entry keys, for the entries this instance wrote (the memory
/// tier holds exactly those).
#[derive(Default)]
pub struct TagIndex {
  sets: Mutex<HashMap<String, HashSet<String>>>,
}

impl TagIndex {
  /// Records that `key` carries the tags; `bound` caps one tag's set (past
  /// it, `keep` decides which members stay: those the memory tier still holds).
  pub fn add(&self, key: &str, tag_keys: &[String], bound: usize, keep: impl Fn(&str) -> bool) {
    let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
    for tag in tag_keys {
      let set = sets.entry(tag.clone()).or_default();
      set.insert(key.to_string());
      if set.len() > bound {
        set.retain(|k| keep(k));
      }
    }
  }

  /// The members of a tag; `take` also forgets the tag.
  fn members(&self, tag_key: &str, take: bool) -> Vec<String> {
    let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
    let found = if take { sets.remove(tag_key) } else { sets.get(tag_key).cloned() };
    found.map(|s| s.into_iter().collect()).unwrap_or_default()
  }

  /// Tags indexed.
  pub fn len(&self) -> usize {
    self.sets.lock().unwrap_or_else(|p| p.into_inner()).len()
  }

  pub fn is_empty(&self) -> bool {
    self.len() == 0
  }
}

/// What an invalidation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalidated {
  /// Entries removed (or, soft, marked stale).
  pub entries: u64,
  /// Whether Redis's tag sets were read: `false` when Redis is down (only
  /// this instance's entries were reached; the caller may retry later).
  pub reached_redis: bool,
}

/// Bound on the Redis side of one invalidation (scans of the tag sets).
const SCAN_BUDGET: Duration = Duration::from_secs(10);
/// Keys deleted (or rewritten) per batch.
const CHUNK: usize = 256;

/// Removes (or, `soft`, marks stale) every entry carrying any of `tags`.
pub async fn invalidate(cache: &Cache, tags: &[String], soft: bool) -> Invalidated {
  let tag_keys: Vec<String> = tags.iter().map(|t| tag_key(cache.keys(), t)).collect();
  let mut members = BTreeSet::new();
  for tk in &tag_keys {
    members.extend(cache.tag_index().members(tk, !soft));
  }
  let mut reached_redis = false;
  if let Some(redis) = cache.redis_if_up() {
    match scan_members(redis, &tag_keys).await {
      Ok(found) => {
        members.extend(found);
        reached_redis = true;
      }
      Err(e) => cache.redis_failed(e),
    }
  }
  let members: Vec<String> = members.into_iter().collect();
  let mut entries = 0;
  for chunk in members.chunks(CHUNK) {
    let ops =
      if soft { stale_ops(cache, chunk).await } else { chunk.iter().map(|k| Op::Delete { key: k.clone() }).collect() };
    let calls = ops.into_iter().map(|op| Ok(vec![op])).collect();
    entries +=
      cache.execute(calls).await.iter().filter(|r| matches!(r, Reply::Bool(true) | Reply::Stored(_))).count() as u64;
  }
  if reached_redis && !soft {
    if let Some(redis) = cache.redis_if_up() {
      for tk in &tag_keys {
        let mut unlink = redis::cmd("UNLINK");
        unlink.arg(tk);
        // A set left behind only names keys that are gone; it expires by itself.
        let _ = redis.run_routed(unlink, tk).await;
      }
    }
  }
  Invalidated { entries, reached_redis }
}

/// Every member of the tag sets, by `SSCAN` on each set's node.
async fn scan_members(redis: &crate::tiers::redis::RedisTier, tag_keys: &[String]) -> Result<Vec<String>, Unavailable> {
  let started = Instant::now();
  let mut out = Vec::new();
  for tk in tag_keys {
    let mut cursor: u64 = 0;
    loop {
      let mut sscan = redis::cmd("SSCAN");
      sscan.arg(tk).arg(cursor).arg("COUNT").arg(1000);
      let reply = redis.run_routed(sscan, tk).await?;
      let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply).map_err(|e| Unavailable(e.to_string()))?;
      out.extend(keys);
      cursor = next;
      if cursor == 0 {
        break;
      }
      if started.elapsed() > SCAN_BUDGET {
        return Err(Unavailable("tag scan took over 10 s; stopped".into()));
      }
    }
  }
  Ok(out)
}

/// For each key: a rewrite of its read-through entry as stale, with its
/// remaining TTL; a delete for any other value (it has no fallback life).
async fn stale_ops(cache: &Cache, keys: &[String]) -> Vec<Op> {
  let mut current: Vec<Option<(String, Duration)>> = vec![None; keys.len()];
  let mut from_memory = true;
  if let Some(redis) = cache.redis_if_up() {
    let mut pipe = redis::Pipeline::with_capacity(keys.len() * 2);
    let mut spans = Vec::with_capacity(keys.len());
    for k in keys {
      pipe.cmd("GET").arg(k);
      pipe.cmd("PTTL").arg(k);
      spans.push(Span { key: k, commands: 2, retry: true });
    }
    match redis.run(&pipe, &spans).await.into_result() {
      Ok(outcomes) => {
        from_memory = false;
        for (i, pair) in outcomes.chunks(2).enumerate() {
          if let [Ok(Value::BulkString(bytes)), Ok(Value::Int(pttl))] = pair {
            if let (Ok(json), true) = (codec::decode(bytes), *pttl > 0) {
              current[i] = Some((json.to_string(), Duration::from_millis(*pttl as u64)));
            }
          }
        }
      }
      Err(e) => cache.redis_failed(e),
    }
  }
  if from_memory {
    let now = Instant::now();
    for (i, k) in keys.iter().enumerate() {
      if let Some(entry) = cache.memory().get(k) {
        if let crate::tiers::memory::MemValue::Json(json) = entry.value {
          current[i] = Some((json.to_string(), entry.expires_at.saturating_duration_since(now)));
        }
      }
    }
  }
  keys
    .iter()
    .zip(current)
    .map(|(key, found)| match found.and_then(|(json, ttl)| Some((envelope::staled(&json)?, ttl))) {
      Some((stale, ttl)) if !ttl.is_zero() => Op::Set { key: key.clone(), kind: 0, json: stale.into(), ttl },
      _ => Op::Delete { key: key.clone() },
    })
    .collect()
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn the_index_follows_tags_and_stays_bounded() {
    let index = TagIndex::default();
    let tags = vec!["p:tag:a".to_string(), "p:tag:b".to_string()];
    index.add("k1", &tags, 2, |_| true);
    index.add("k2", &tags[..1], 2, |_| true);
    assert_eq!(index.members("p:tag:b", false), vec!["k1".to_string()]);
    // Past the bound, only members the memory tier holds stay.
    index.add("k3", &tags[..1], 2, |k| k != "k1");
    let mut a = index.members("p:tag:a", true);
    a.sort();
    assert_eq!(a, vec!["k2".to_string(), "k3".to_string()]);
    assert!(index.members("p:tag:a", false).is_empty());
    assert_eq!(tag_key(&KeySpace::new("p"), "lead:1 x"), "p:tag:lead%3A1%20x");
  }
}
