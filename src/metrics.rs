//! Counters and a latency histogram, cheap enough for every call (atomics
//! only), and their Prometheus text exposition.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bucket upper bounds in µs: ×1.5 steps from 10 µs to about 17 s.
const BUCKETS: usize = 36;

fn bucket_bounds() -> [u64; BUCKETS] {
  let mut b = [0u64; BUCKETS];
  let mut v = 10.0f64;
  for slot in b.iter_mut() {
    *slot = v.round() as u64;
    v *= 1.5;
  }
  b
}

pub struct Metrics {
  pub hits: AtomicU64,
  pub misses: AtomicU64,
  pub operations: AtomicU64,
  /// Calls that failed (rejected to the caller).
  pub errors: AtomicU64,
  /// Redis commands or batches that failed (timeouts, refused, broken).
  pub redis_errors: AtomicU64,
  /// Calls answered by the memory tier because Redis was off or failing.
  pub served_from_memory: AtomicU64,
  /// Reads that joined another read of the same key instead of going to Redis.
  pub deduplicated: AtomicU64,
  /// Writes replayed to Redis after an outage.
  pub replayed: AtomicU64,
  /// Writes that fell out of the bounded replay queue.
  pub replay_dropped: AtomicU64,
  pub loader_calls: AtomicU64,
  /// Stored values that were neither our format nor the old adapter's JSON (read as misses).
  pub corrupt: AtomicU64,
  latency_count: AtomicU64,
  latency_sum_us: AtomicU64,
  latency_buckets: [AtomicU64; BUCKETS],
}

impl Default for Metrics {
  fn default() -> Self {
    let zero = AtomicU64::default;
    Self {
      hits: zero(),
      misses: zero(),
      operations: zero(),
      errors: zero(),
      redis_errors: zero(),
      served_from_memory: zero(),
      deduplicated: zero(),
      replayed: zero(),
      replay_dropped: zero(),
      loader_calls: zero(),
      corrupt: zero(),
      latency_count: zero(),
      latency_sum_us: zero(),
      latency_buckets: std::array::from_fn(|_| zero()),
    }
  }
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct LatencySummary {
  pub count: u64,
  pub mean_ms: f64,
  pub p50_ms: f64,
  pub p99_ms: f64,
}

impl Metrics {
  /// Records `n` calls that took `elapsed` (a batch's calls share its time).
  pub fn record_latency(&self, elapsed: Duration, n: u64) {
    let us = elapsed.as_micros() as u64;
    let bounds = bucket_bounds();
    let i = bounds.iter().position(|&b| us <= b).unwrap_or(BUCKETS - 1);
    self.latency_buckets[i].fetch_add(n, Relaxed);
    self.latency_count.fetch_add(n, Relaxed);
    self.latency_sum_us.fetch_add(us * n, Relaxed);
  }

  pub fn latency(&self) -> LatencySummary {
    let counts: Vec<u64> = self.latency_buckets.iter().map(|c| c.load(Relaxed)).collect();
    let count: u64 = counts.iter().sum();
    if count == 0 {
      return LatencySummary::default();
    }
    let bounds = bucket_bounds();
    let quantile = |q: f64| {
      let rank = (q * count as f64).ceil().max(1.0) as u64;
      let mut seen = 0;
      for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
          return bounds[i] as f64 / 1000.0;
        }
      }
      bounds[BUCKETS - 1] as f64 / 1000.0
    };
    LatencySummary {
      count,
      mean_ms: self.latency_sum_us.load(Relaxed) as f64 / count as f64 / 1000.0,
      p50_ms: quantile(0.5),
      p99_ms: quantile(0.99),
    }
  }

  pub fn hit_rate(&self) -> f64 {
    let (h, m) = (self.hits.load(Relaxed), self.misses.load(Relaxed));
    if h + m == 0 {
      0.0
    } else {
      h as f64 / (h + m) as f64
    }
  }

  /// Prometheus text exposition (version 0.0.4) of the counters, the given
  /// counters kept elsewhere and gauges, and the latency histogram.
  pub fn prometheus(&self, more_counters: &[(&str, &str, u64)], gauges: &[(&str, &str, f64)]) -> String {
    let mut out = String::with_capacity(4096);
    let counters: [(&str, &str, &AtomicU64); 10] = [
      ("cache_hits_total", "Reads that found a value.", &self.hits),
      ("cache_misses_total", "Reads that found nothing.", &self.misses),
      ("cache_operations_total", "Calls completed.", &self.operations),
      ("cache_errors_total", "Calls that failed.", &self.errors),
      ("cache_redis_errors_total", "Redis commands that failed or timed out.", &self.redis_errors),
      ("cache_memory_served_total", "Calls answered by the memory tier instead of Redis.", &self.served_from_memory),
      ("cache_deduplicated_reads_total", "Reads that shared another read of the same key.", &self.deduplicated),
      ("cache_replays_total", "Writes replayed to Redis after an outage.", &self.replayed),
      ("cache_replay_dropped_total", "Writes dropped from the full replay queue.", &self.replay_dropped),
      ("cache_corrupt_values_total", "Stored values that could not be decoded, read as misses.", &self.corrupt),
    ];
    let counters = counters.iter().map(|(name, help, c)| (*name, *help, c.load(Relaxed)));
    for (name, help, value) in counters.chain(more_counters.iter().copied()) {
      let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    for (name, help, v) in gauges {
      let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let name = "cache_operation_duration_seconds";
    let _ = writeln!(out, "# HELP {name} Time from a call reaching the core to its answer.\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, c) in bucket_bounds().iter().zip(&self.latency_buckets) {
      cumulative += c.load(Relaxed);
      let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
    }
    let count = self.latency_count.load(Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", self.latency_sum_us.load(Relaxed) as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {count}");
    out
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn quantiles_come_from_the_histogram() {
    let m = Metrics::default();
    for _ in 0..98 {
      m.record_latency(Duration::from_micros(100), 1);
    }
    m.record_latency(Duration::from_millis(50), 2);
    let l = m.latency();
    assert_eq!(l.count, 100);
    assert!(l.p50_ms >= 0.1 && l.p50_ms < 0.16, "{l:?}");
    assert!(l.p99_ms >= 50.0 && l.p99_ms < 76.0, "{l:?}");
    assert!((l.mean_ms - (98.0 * 0.1 + 100.0) / 100.0).abs() < 1e-9);
  }

  #[test]
  fn prometheus_text_is_well_formed() {
    let m = Metrics::default();
    m.hits.fetch_add(3, Relaxed);
    m.corrupt.fetch_add(1, Relaxed);
    m.record_latency(Duration::from_micros(300), 4);
    let text =
      m.prometheus(&[("cache_outages_total", "Outages.", 2)], &[("cache_mode", "1 when serving from Redis.", 1.0)]);
    assert!(text.contains("# TYPE cache_outages_total counter\ncache_outages_total 2\n"));
    assert!(text.contains("cache_hits_total 3\n"));
    assert!(text.contains("# TYPE cache_corrupt_values_total counter\ncache_corrupt_values_total 1\n"));
    assert!(text.contains("# TYPE cache_mode gauge\ncache_mode 1\n"));
    assert!(text.contains("cache_operation_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
    assert!(text.contains("cache_operation_duration_seconds_count 4\n"));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
      let (name, value) = line.rsplit_once(' ').unwrap();
      assert!(!name.is_empty());
      value.parse::<f64>().unwrap();
    }
  }
}
