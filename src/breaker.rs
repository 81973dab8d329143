//! Circuit breaker: after `failures` consecutive Redis failures, stop sending
//! to Redis for `cooldown`; then let one probe through, whose success closes it.
//! Only the probe closes it: callers' successes only reset the failure count.
//! Round trips that fail together in one stall count as one failure.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
  Closed = 0,
  Open = 1,
  HalfOpen = 2,
}

impl State {
  pub fn name(self) -> &'static str {
    match self {
      State::Closed => "closed",
      State::Open => "open",
      State::HalfOpen => "half-open",
    }
  }
}

pub struct CircuitBreaker {
  state: AtomicU8,
  consecutive_failures: AtomicU32,
  /// When the breaker last opened, in µs since `epoch`.
  opened_at_us: AtomicU64,
  /// When a failure was last counted, in µs since `epoch`.
  failed_at_us: AtomicU64,
  opens: AtomicU64,
  threshold: u32,
  cooldown: Duration,
  epoch: Instant,
}

impl CircuitBreaker {
  /// Starts open: nothing goes to Redis until a probe has reached it.
  pub fn new(threshold: u32, cooldown: Duration) -> Self {
    Self {
      state: AtomicU8::new(State::Open as u8),
      consecutive_failures: AtomicU32::new(0),
      opened_at_us: AtomicU64::new(0),
      failed_at_us: AtomicU64::new(0),
      opens: AtomicU64::new(0),
      threshold: threshold.max(1),
      cooldown,
      epoch: Instant::now(),
    }
  }

  /// Starts closed: for a part of Redis (a cluster node) found while the
  /// whole was reachable.
  pub fn closed(threshold: u32, cooldown: Duration) -> Self {
    let breaker = Self::new(threshold, cooldown);
    breaker.state.store(State::Closed as u8, Ordering::Release);
    breaker
  }

  pub fn state(&self) -> State {
    match self.state.load(Ordering::Acquire) {
      0 => State::Closed,
      1 => State::Open,
      _ => State::HalfOpen,
    }
  }

  /// May a caller's command go to Redis now?
  pub fn allows_traffic(&self) -> bool {
    self.state() == State::Closed
  }

  /// Has the open breaker waited out its cooldown? If so, the caller becomes
  /// the one probe (half-open) and must report its result.
  pub fn try_begin_probe(&self) -> bool {
    if self.state() != State::Open {
      return false;
    }
    let elapsed = self.now_us().saturating_sub(self.opened_at_us.load(Ordering::Acquire));
    elapsed >= self.cooldown.as_micros() as u64
      && self
        .state
        .compare_exchange(State::Open as u8, State::HalfOpen as u8, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
  }

  /// Time left before the next probe may start.
  pub fn until_probe(&self) -> Duration {
    let elapsed = self.now_us().saturating_sub(self.opened_at_us.load(Ordering::Acquire));
    self.cooldown.saturating_sub(Duration::from_micros(elapsed))
  }

  /// A caller's command succeeded: the failure count starts again. It never
  /// closes the breaker: a reply to a batch sent before the breaker opened
  /// says nothing about Redis now; only the probe does.
  pub fn record_success(&self) {
    self.consecutive_failures.store(0, Ordering::Release);
  }

  /// The probe reached Redis. Returns true if this closed the breaker.
  pub fn record_probe_success(&self) -> bool {
    self.consecutive_failures.store(0, Ordering::Release);
    self.state.swap(State::Closed as u8, Ordering::AcqRel) != State::Closed as u8
  }

  /// A command failed. Returns true if this opened the breaker.
  pub fn record_failure(&self) -> bool {
    self.failed_at_us.fetch_max(self.now_us(), Ordering::AcqRel);
    self.count_failure()
  }

  /// A round trip that began at `started` failed. If a failure was counted
  /// since it began, both are one stall (say, 32-call chunks in flight
  /// together when Redis stopped): it is not counted again. Returns true if
  /// this opened the breaker.
  pub fn record_failure_of(&self, started: Instant) -> bool {
    let started_us = self.at_us(started);
    let now = self.now_us();
    let mut last = self.failed_at_us.load(Ordering::Acquire);
    loop {
      if last != 0 && started_us <= last {
        return false;
      }
      match self.failed_at_us.compare_exchange_weak(last, now, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => break,
        Err(newer) => last = newer,
      }
    }
    self.count_failure()
  }

  fn count_failure(&self) -> bool {
    let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
    let state = self.state();
    if state == State::HalfOpen || (state == State::Closed && n >= self.threshold) {
      self.opened_at_us.store(self.now_us(), Ordering::Release);
      let was = self.state.swap(State::Open as u8, Ordering::AcqRel);
      if was == State::Closed as u8 {
        self.opens.fetch_add(1, Ordering::Relaxed);
        return true;
      }
    }
    false
  }

  /// How many times the breaker opened (outages).
  pub fn opens(&self) -> u64 {
    self.opens.load(Ordering::Relaxed)
  }

  pub fn consecutive_failures(&self) -> u32 {
    self.consecutive_failures.load(Ordering::Relaxed)
  }

  fn now_us(&self) -> u64 {
    self.at_us(Instant::now())
  }

  fn at_us(&self, t: Instant) -> u64 {
    // + cooldown so that "opened at 0" at construction means "probe at once".
    t.saturating_duration_since(self.epoch).as_micros() as u64 + self.cooldown.as_micros() as u64
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn starts_open_and_probes_at_once() {
    let b = CircuitBreaker::new(3, Duration::from_secs(60));
    assert_eq!(b.state(), State::Open);
    assert!(b.try_begin_probe());
    assert!(!b.try_begin_probe(), "only one probe at a time");
    b.record_success();
    assert!(!b.allows_traffic(), "a caller's late success does not close it");
    assert!(b.record_probe_success());
    assert!(b.allows_traffic());
  }

  #[test]
  fn opens_after_consecutive_failures_only() {
    let b = CircuitBreaker::new(3, Duration::from_secs(60));
    b.try_begin_probe();
    b.record_probe_success();
    b.record_failure();
    b.record_failure();
    b.record_success();
    b.record_failure();
    b.record_failure();
    assert!(b.allows_traffic());
    assert!(b.record_failure());
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.opens(), 1);
    assert!(!b.try_begin_probe(), "cooldown not over");
  }

  #[test]
  fn round_trips_failing_in_one_stall_count_once() {
    let b = CircuitBreaker::new(3, Duration::from_secs(60));
    b.try_begin_probe();
    b.record_probe_success();
    // Ten chunks in flight together, all failing: one failure.
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(2));
    for _ in 0..10 {
      assert!(!b.record_failure_of(started));
    }
    assert_eq!(b.consecutive_failures(), 1);
    // Chunks sent after that failure was counted fail: each is a new failure.
    let second = Instant::now();
    assert!(!b.record_failure_of(second));
    assert!(!b.record_failure_of(second), "the same stall");
    std::thread::sleep(Duration::from_millis(2));
    assert!(b.record_failure_of(Instant::now()), "the third stall opens it");
    assert_eq!(b.state(), State::Open);
  }

  #[test]
  fn a_failed_probe_reopens_for_another_cooldown() {
    let b = CircuitBreaker::new(1, Duration::from_millis(20));
    b.try_begin_probe();
    b.record_probe_success();
    b.record_failure();
    std::thread::sleep(Duration::from_millis(25));
    assert!(b.try_begin_probe());
    assert_eq!(b.state(), State::HalfOpen);
    b.record_failure();
    assert_eq!(b.state(), State::Open);
    assert!(!b.try_begin_probe());
    std::thread::sleep(Duration::from_millis(25));
    assert!(b.try_begin_probe());
  }
}
