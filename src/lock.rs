//! The distributed lock of a read-through load: `SET <prefix>:lock:<key>
//! <token> NX PX <ms>`, released by a compare-and-delete script, so that N
//! instances call a key's loader once. A holder that dies leaves a lock that
//! expires by itself after its TTL; waiters never wait longer than their own
//! bound (`lib/read-through/lock.js`), so there is no deadlock.

use std::time::Duration;

use redis::Value;

use crate::tiers::redis::{RedisTier, Unavailable};

/// Deletes the lock only if it still holds our token: a lock that expired
/// and was taken by another instance is not ours to release.
const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Takes the lock if it is free; `Ok(false)`: another instance holds it.
pub async fn acquire(redis: &RedisTier, lock_key: &str, token: &str, ttl: Duration) -> Result<bool, Unavailable> {
  let mut set = redis::cmd("SET");
  set.arg(lock_key).arg(token).arg("NX").arg("PX").arg(ttl.as_millis().max(1) as u64);
  Ok(matches!(redis.run_routed(set, lock_key).await?, Value::Okay | Value::SimpleString(_)))
}

/// Releases the lock if it is still ours; `Ok(true)` if it was.
pub async fn release(redis: &RedisTier, lock_key: &str, token: &str) -> Result<bool, Unavailable> {
  let mut eval = redis::cmd("EVAL");
  eval.arg(RELEASE_SCRIPT).arg(1).arg(lock_key).arg(token);
  Ok(matches!(redis.run_routed(eval, lock_key).await?, Value::Int(1)))
}
