//! A background watch of Redis, independent of callers: a `PING` and an
//! `INFO memory` every period, so that an idle adapter knows when Redis stopped
//! answering (and since when) and how full its memory is. The alert rules read it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value as Json};

use crate::tiers::redis::{RedisTier, Unavailable};

/// What the last checks found; atomics, read by `stats()` at any time.
pub struct RedisWatch {
  started_ms: u64,
  /// Wall-clock ms of the last check Redis answered (0: never).
  last_ok_ms: AtomicU64,
  last_check_ms: AtomicU64,
  /// Round trip of the last answered `PING`, in µs.
  ping_us: AtomicU64,
  used_memory: AtomicU64,
  /// Redis's `maxmemory` (0: no limit).
  maxmemory: AtomicU64,
  checks: AtomicU64,
  failures: AtomicU64,
  last_failure: Mutex<Option<String>>,
  /// Why `INFO memory` gave no figures though Redis answered (an ACL
  /// without `@dangerous`, a managed service that renamed `INFO`).
  memory_unknown: Mutex<Option<String>>,
}

impl Default for RedisWatch {
  fn default() -> Self {
    Self {
      started_ms: now_ms(),
      last_ok_ms: AtomicU64::new(0),
      last_check_ms: AtomicU64::new(0),
      ping_us: AtomicU64::new(0),
      used_memory: AtomicU64::new(0),
      maxmemory: AtomicU64::new(0),
      checks: AtomicU64::new(0),
      failures: AtomicU64::new(0),
      last_failure: Mutex::new(None),
      memory_unknown: Mutex::new(None),
    }
  }
}

impl RedisWatch {
  /// One check: `PING`, then `INFO memory`. Each is bounded by the tier's
  /// command timeout. Only Redis not answering fails it: `INFO` refused (by
  /// an ACL: it is an `@dangerous` command) leaves the memory figures
  /// unknown, never a healthy Redis reported down (and its breaker opened).
  pub async fn check(&self, redis: &RedisTier) -> Result<(), Unavailable> {
    self.checks.fetch_add(1, Relaxed);
    let result = async {
      let t0 = Instant::now();
      redis.run_one(redis::cmd("PING")).await?;
      let ping = t0.elapsed();
      let mut info = redis::cmd("INFO");
      info.arg("memory");
      let text = match redis.run_one_answer(info).await? {
        Ok(v) => redis::from_redis_value::<String>(v).map_err(|e| e.to_string()),
        Err(refused) => Err(refused),
      };
      Ok::<_, Unavailable>((ping, text))
    }
    .await;
    self.last_check_ms.store(now_ms(), Relaxed);
    match result {
      Ok((ping, text)) => {
        self.ping_us.store(ping.as_micros() as u64, Relaxed);
        let ((used, max), unknown) = match text {
          Ok(text) => (memory_figures(&text), None),
          Err(why) => ((0, 0), Some(format!("INFO memory: {why}"))),
        };
        self.used_memory.store(used, Relaxed);
        self.maxmemory.store(max, Relaxed);
        *self.memory_unknown.lock().unwrap_or_else(|p| p.into_inner()) = unknown;
        self.last_ok_ms.store(now_ms(), Relaxed);
        Ok(())
      }
      Err(e) => {
        self.failures.fetch_add(1, Relaxed);
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.0.clone());
        Err(e)
      }
    }
  }

  /// Milliseconds since Redis last answered a check (or since the watch
  /// started, if it never did); 0 while the last check was answered.
  pub fn unreachable_ms(&self) -> u64 {
    let (ok, checked) = (self.last_ok_ms.load(Relaxed), self.last_check_ms.load(Relaxed));
    if checked == 0 || ok >= checked {
      return 0;
    }
    now_ms().saturating_sub(if ok == 0 { self.started_ms } else { ok })
  }

  pub fn stats(&self) -> Json {
    let ms = |v: u64| if v == 0 { Json::Null } else { json!(v) };
    json!({
      "checks": self.checks.load(Relaxed),
      "failures": self.failures.load(Relaxed),
      "lastCheckAt": ms(self.last_check_ms.load(Relaxed)),
      "lastOkAt": ms(self.last_ok_ms.load(Relaxed)),
      "unreachableMs": self.unreachable_ms(),
      "lastFailure": *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()),
      "pingMs": self.ping_us.load(Relaxed) as f64 / 1000.0,
      "usedMemory": self.used_memory.load(Relaxed),
      "maxmemory": self.maxmemory.load(Relaxed),
      "memoryUnknown": *self.memory_unknown.lock().unwrap_or_else(|p| p.into_inner()),
    })
  }
}

/// Checks Redis every `every` for as long as the owner lives. `parts` gives
/// the tier and the watch (`None` once the owner is closed); `failed` is told
/// of each failed check.
pub async fn run<T: Send + Sync + 'static>(
  owner: Weak<T>,
  every: Duration,
  parts: fn(&T) -> Option<(&RedisTier, &RedisWatch)>,
  failed: fn(&T, Unavailable),
) {
  loop {
    tokio::time::sleep(every).await;
    let Some(owner) = owner.upgrade() else { return };
    let Some((redis, watch)) = parts(&owner) else { return };
    if let Err(e) = watch.check(redis).await {
      failed(&owner, e);
    }
  }
}

/// `used_memory` and `maxmemory` from `INFO memory` text (0 where absent).
fn memory_figures(info: &str) -> (u64, u64) {
  let field = |name: &str| {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<u64>().ok()).unwrap_or(0)
  };
  (field("used_memory"), field("maxmemory"))
}

fn now_ms() -> u64 {
  SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn memory_figures_come_from_info_text() {
    let info =
      "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:2097152\r\nmaxmemory_human:2.00M\r\n";
    assert_eq!(memory_figures(info), (1_048_576, 2_097_152));
    assert_eq!(memory_figures("# Memory\r\n"), (0, 0));
  }

  #[test]
  fn unreachable_counts_from_the_last_answer() {
    let w = RedisWatch::default();
    assert_eq!(w.unreachable_ms(), 0, "no check yet");
    let now = now_ms();
    w.last_ok_ms.store(now - 5000, Relaxed);
    w.last_check_ms.store(now, Relaxed);
    assert!((5000..6000).contains(&w.unreachable_ms()));
    w.last_ok_ms.store(now, Relaxed);
    assert_eq!(w.unreachable_ms(), 0);
  }
}
