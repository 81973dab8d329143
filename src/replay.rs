//! The replay: writes the outage journal (see `journal`) back to Redis when
//! it answers again. Last-writer-wins on the write time in the value header
//! (see `codec`), decided on the server by Lua, so a value another instance
//! wrote to Redis after ours is never overwritten; counters get their deltas.

use std::time::Instant;

use redis::Pipeline;

use crate::batch::Op;
use crate::codec;
use crate::journal::{Clear, Entry, Journal, Pending};
use crate::scripts::{self, CLEAR_SCRIPT};
use crate::tiers::redis::{push_op, RedisTier, Span, Unavailable};

/// How many journal entries one replay round trip carries.
const REPLAY_BATCH: usize = 256;

/// What one write-back did.
pub struct WriteBack {
  pub replayed: u64,
  /// Entries Redis refused for good (e.g. a type clash); counted, then forgotten.
  pub refused: u64,
  /// `Err`: Redis became unavailable; the rest stays journaled.
  pub outcome: Result<(), Unavailable>,
}

/// Writes the journal back to Redis, clears first (each a bounded number of
/// `SCAN` steps per call, resumed by the next), then the oldest entries,
/// while `keep_going` says so; stops at the first failure. Every round trip
/// is bounded by the command timeout.
pub async fn write_back(
  journal: &Journal,
  redis: &RedisTier,
  threshold: usize,
  keep_going: impl Fn() -> bool,
) -> WriteBack {
  let mut done = WriteBack { replayed: 0, refused: 0, outcome: Ok(()) };
  // Clears run before every entry: the writes that followed a clear must not be deleted by it.
  while let Some(clear) = journal.next_clear() {
    match write_back_clear(journal, redis, &clear, &keep_going).await {
      Ok(true) => done.replayed += 1,
      Ok(false) => return done,
      Err(e) => {
        done.outcome = Err(e);
        return done;
      }
    }
  }
  // Tag memberships before the values: a member whose value is not there
  // yet is harmless, a value whose membership is missing is not.
  if let Err(e) = write_back_tags(journal, redis).await {
    done.outcome = Err(e);
    return done;
  }
  // Entries whose part of Redis failed (one cluster master, one pooled
  // connection) wait here while the others go on; put back at the end.
  let mut deferred: Vec<Entry> = Vec::new();
  let mut failure = None;
  while !journal.is_empty() && keep_going() {
    let entries = journal.take_batch(REPLAY_BATCH);
    if entries.is_empty() {
      break; // the rest is being written back by another replay
    }
    let now = Instant::now();
    let mut pipe = Pipeline::with_capacity(entries.len());
    let mut sent = Vec::with_capacity(entries.len());
    for e in &entries {
      let field = e.slot.field.as_deref();
      let delete = if field.is_some() { "hdel" } else { "del" };
      let (op, ttl_ms, value) = match &e.pending {
        // Expired meanwhile: a tombstone, so that Redis's older value does not come back.
        Pending::Set { expires_at, .. } if *expires_at <= now => (delete, 0, Vec::new()),
        Pending::Set { json, expires_at } => (
          if field.is_some() { "hset" } else { "set" },
          expires_at.duration_since(now).as_millis().max(1) as u64,
          codec::encode(json, threshold, e.written_ms),
        ),
        Pending::Delete | Pending::Tombstone => (delete, 0, Vec::new()),
        Pending::Add { delta: 0, .. } => {
          journal.complete(e);
          continue;
        }
        // INCRBY through the adapter's own increment script: it keeps the
        // header (with this write time) and Redis's TTL, and sets `ttl` only
        // when the counter has none. Deltas add up whatever Redis holds.
        Pending::Add { delta, ttl } => {
          let op = Op::Increment { key: e.slot.key.clone(), kind: 0, by: *delta, ttl: *ttl };
          push_op(&op, &mut pipe, None, threshold, e.written_ms);
          sent.push(e);
          continue;
        }
      };
      pipe.cmd("EVALSHA").arg(scripts::write_sha()).arg(1).arg(&e.slot.key);
      pipe.arg(op).arg(e.written_ms).arg(ttl_ms).arg(value).arg(field.unwrap_or("")).arg("replace");
      sent.push(e);
    }
    if sent.is_empty() {
      continue;
    }
    // Write-time-checked scripts give the same result when run twice; a
    // delta does not, so it is never re-sent.
    let spans: Vec<Span> = sent
      .iter()
      .map(|e| Span { key: &e.slot.key, commands: 1, retry: !matches!(e.pending, Pending::Add { .. }) })
      .collect();
    let replies = redis.run(&pipe, &spans).await;
    // Each connection's (or master's) share succeeds or fails alone: what
    // Redis answered is done (restoring it would replay a delta twice); the
    // rest stays journaled.
    let mut answered = false;
    for (j, e) in sent.into_iter().enumerate() {
      match replies.span(j) {
        Ok(outcomes) => {
          answered = true;
          match outcomes.first() {
            Some(Ok(_)) => done.replayed += 1,
            _ => done.refused += 1,
          }
          journal.complete(e);
        }
        Err(_) => deferred.push(e.clone()),
      }
    }
    if let Some(e) = replies.failure() {
      // A round trip that timed out may still have been applied: the
      // values and deletes replay the same again; a delta may count twice.
      failure = Some(e.clone());
      // Nothing answered: Redis is down, not a part of it; stop here.
      if !answered {
        break;
      }
    }
  }
  journal.restore(&deferred);
  if let Some(e) = failure {
    done.outcome = Err(e);
  }
  done
}

/// Adds the keys written during the outage to their tags' sets (the same
/// `SADD` a tagged write sends), for what remains of their TTL; all of them
/// stay journaled if any part fails (`SADD` twice is harmless).
async fn write_back_tags(journal: &Journal, redis: &RedisTier) -> Result<(), Unavailable> {
  let tagged = journal.take_tags();
  let now = Instant::now();
  let mut pipe = Pipeline::new();
  let mut spans = Vec::new();
  for t in tagged.iter().filter(|t| t.expires_at > now) {
    let ttl_ms = t.expires_at.duration_since(now).as_millis().max(1) as u64;
    for tag in &t.tag_keys {
      crate::tags::push_join(&mut pipe, tag, &t.key, ttl_ms);
      // Routed by the tag set's key: on a cluster, the set lives on its own slot.
      spans.push(Span { key: tag, commands: 1, retry: true });
    }
  }
  if spans.is_empty() {
    return Ok(());
  }
  let replies = redis.run(&pipe, &spans).await;
  match replies.failure() {
    None => Ok(()),
    Some(e) => {
      let e = e.clone();
      journal.restore_tags(tagged);
      Err(e)
    }
  }
}

/// `SCAN` steps (of up to 1000 keys each) one call replays of a clear
/// before it lets the caller check on its bounds.
const CLEAR_STEPS: usize = 64;

/// Replays (part of) one clear: deletes the keys under its scope not written
/// since. `Ok(true)`: finished; `Ok(false)`: its cursor is saved for later.
async fn write_back_clear(
  journal: &Journal,
  redis: &RedisTier,
  clear: &Clear,
  keep_going: &impl Fn() -> bool,
) -> Result<bool, Unavailable> {
  let mut cursor = clear.cursor;
  for _ in 0..CLEAR_STEPS {
    if !keep_going() {
      break;
    }
    match clear_step(redis, clear, cursor).await {
      Ok(0) => {
        journal.advance_clear(clear, 0, true);
        return Ok(true);
      }
      Ok(next) => cursor = next,
      Err(e) => {
        // A cursor may mean nothing to a Redis that restarted: start over (deletes are idempotent).
        journal.advance_clear(clear, 0, false);
        return Err(e);
      }
    }
  }
  journal.advance_clear(clear, cursor, false);
  Ok(false)
}

/// One `SCAN` step of a clear and the write-time-checked `UNLINK` of what it found.
async fn clear_step(redis: &RedisTier, clear: &Clear, cursor: u64) -> Result<u64, Unavailable> {
  let mut scan = redis::cmd("SCAN");
  scan.arg(cursor).arg("MATCH").arg(&clear.pattern).arg("COUNT").arg(1000);
  let (next, keys): (u64, Vec<String>) =
    redis::from_redis_value(redis.run_routed(scan, &clear.scope).await?).map_err(|e| Unavailable(e.to_string()))?;
  if !keys.is_empty() {
    let mut eval = redis::cmd("EVAL");
    eval.arg(CLEAR_SCRIPT).arg(keys.len()).arg(&keys).arg(clear.written_ms);
    redis.run_routed(eval, &clear.scope).await?;
  }
  Ok(next)
}
