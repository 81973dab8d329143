//! Busy-polling on the I/O thread, for the calls of a lightly loaded adapter
//! on a nearby Redis.
//!
//! A call makes three thread wake-ups where ioredis makes one: Node's thread
//! wakes the I/O thread, Redis's reply wakes it again, and its completion
//! wakes Node's thread. On this VM each wake of an idle thread costs tens of
//! µs. While a few calls are in flight, and for a short window after the last
//! one finished, the I/O thread therefore keeps polling its sockets (a task
//! that yields, so tokio polls the reactor without blocking) instead of
//! sleeping: the reply, and the next call's submission, find it awake.
//!
//! It never spins where the CPU is worth more than the wake-ups:
//! - with more than [`MAX_CALLS`] calls in flight (under load the thread is
//!   busy anyway, and measured on W2 at 64 in flight, spinning took the
//!   second core from compression and Redis: 0.82x node-redis against 1.01x).
//!   Under load it still spins in the gaps between batches, when the count
//!   dips: measured, that is worth its CPU (see the README's Performance);
//! - when batches take longer than three windows on average: a Redis across
//!   a network, where spinning would burn the whole round trip, or values
//!   large enough that their own work hides the wake-ups; nor past three
//!   windows for any one reply (a Redis that stalls);
//! - with `CACHE_IO_SPIN_US=0`. The window is 100 µs by default.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

use tokio::sync::Notify;

/// Calls in flight above which the thread never spins.
pub const MAX_CALLS: usize = 8;
/// How many windows a batch may take on average and still be spun for (a
/// Redis on the same host or LAN, small values); beyond that the thread
/// sleeps, as it does when a reply is that late (a Redis stalled).
const FAR: u64 = 3;
/// The default window, in µs.
const DEFAULT_WINDOW_US: u64 = 100;
/// The longest window accepted.
const MAX_WINDOW_US: u64 = 10_000;
/// The environment variable that sets the window (µs; 0 turns spinning off).
pub const ENV: &str = "CACHE_IO_SPIN_US";

/// The window `CACHE_IO_SPIN_US` asks for (µs), or why its value is not one.
pub fn window_us(value: Option<&str>) -> Result<u64, String> {
  match value.map(str::trim) {
    None | Some("") => Ok(DEFAULT_WINDOW_US),
    Some(text) => match text.parse::<u64>() {
      Ok(us) if us <= MAX_WINDOW_US => Ok(us),
      _ => Err(format!("{ENV} must be a whole number of microseconds from 0 to {MAX_WINDOW_US}, got {text:?}")),
    },
  }
}

/// The spinning state of the process's one I/O thread.
pub struct IoSpin {
  window_ns: u64,
  calls: AtomicUsize,
  /// When a batch was last submitted or finished (ns since `origin`).
  last_event_ns: AtomicU64,
  /// Moving average of a batch's time from submission to completion (ns).
  batch_ns: AtomicU64,
  wake: Notify,
  origin: Instant,
}

impl IoSpin {
  pub fn new(window_us: u64) -> IoSpin {
    IoSpin {
      window_ns: window_us * 1000,
      calls: AtomicUsize::new(0),
      last_event_ns: AtomicU64::new(0),
      batch_ns: AtomicU64::new(0),
      wake: Notify::new(),
      origin: Instant::now(),
    }
  }

  fn now_ns(&self) -> u64 {
    self.origin.elapsed().as_nanos() as u64
  }

  /// A batch of `calls` is being submitted; it counts as in flight until the guard drops.
  pub fn begin(&'static self, calls: usize) -> InFlight {
    let now = self.now_ns();
    if self.window_ns > 0 {
      let in_flight = self.calls.fetch_add(calls, Relaxed) + calls;
      self.last_event_ns.store(now, Relaxed);
      // Under load the spinner would only find it must not spin: no wake-up for that.
      if in_flight <= MAX_CALLS {
        self.wake.notify_one();
      }
    }
    InFlight { spin: self, calls, started: now }
  }

  /// The batch of `calls` begun at `started` has finished.
  fn end(&self, calls: usize, started: u64) {
    if self.window_ns == 0 {
      return;
    }
    let now = self.now_ns();
    let took = now.saturating_sub(started);
    let avg = self.batch_ns.load(Relaxed);
    // An average over about the last 8 batches.
    self.batch_ns.store(if avg == 0 { took } else { avg - avg / 8 + took / 8 }, Relaxed);
    self.last_event_ns.store(now, Relaxed);
    if self.calls.fetch_sub(calls, Relaxed) - calls <= MAX_CALLS {
      self.wake.notify_one();
    }
  }

  /// Whether the I/O thread should keep polling rather than sleep now: for
  /// up to `FAR` windows while a few calls wait for a Redis whose batches
  /// usually come back within that, and for one window after the last
  /// submission or reply, when the next call is likely to follow at once.
  fn should_spin(&self) -> bool {
    self.should_spin_at(self.now_ns())
  }

  fn should_spin_at(&self, now: u64) -> bool {
    let calls = self.calls.load(Relaxed);
    let far = FAR * self.window_ns;
    if calls > MAX_CALLS || self.batch_ns.load(Relaxed) >= far {
      return false;
    }
    let quiet = now.saturating_sub(self.last_event_ns.load(Relaxed));
    quiet < if calls > 0 { far } else { self.window_ns }
  }

  /// Runs on the I/O thread for the life of the process.
  pub async fn run(&'static self) {
    if self.window_ns == 0 {
      return;
    }
    loop {
      self.wake.notified().await;
      while self.should_spin() {
        tokio::task::yield_now().await;
      }
    }
  }
}

/// A batch in flight: finished when dropped, however its task ends.
pub struct InFlight {
  spin: &'static IoSpin,
  calls: usize,
  started: u64,
}

impl Drop for InFlight {
  fn drop(&mut self) {
    self.spin.end(self.calls, self.started);
  }
}

/// The process's one [`IoSpin`], its window read from the environment once.
pub fn io_spin() -> &'static IoSpin {
  static SPIN: OnceLock<IoSpin> = OnceLock::new();
  SPIN.get_or_init(|| IoSpin::new(window_us(std::env::var(ENV).ok().as_deref()).unwrap_or(DEFAULT_WINDOW_US)))
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn the_window_comes_from_the_environment_or_a_clear_error() {
    assert_eq!(window_us(None), Ok(DEFAULT_WINDOW_US));
    assert_eq!(window_us(Some(" 0 ")), Ok(0));
    assert_eq!(window_us(Some("250")), Ok(250));
    assert!(window_us(Some("-1")).unwrap_err().contains(ENV));
    assert!(window_us(Some("fast")).is_err());
    assert!(window_us(Some("10001")).is_err());
  }

  #[test]
  fn spins_only_for_a_few_calls_on_a_fast_redis_and_briefly() {
    // 100 ms windows, so that the test's own pace does not matter.
    let s: &'static IoSpin = Box::leak(Box::new(IoSpin::new(100_000)));
    let one = s.begin(1);
    assert!(s.should_spin(), "one call in flight");
    let many = s.begin(MAX_CALLS);
    assert!(!s.should_spin(), "under load");
    drop(many);
    drop(one);
    assert_eq!(s.calls.load(Relaxed), 0);
    assert!(s.should_spin(), "just after the last call: the next one may come at once");
    // Quiet for more than a window: asleep when idle, still spinning for a call in flight...
    let last = s.last_event_ns.load(Relaxed);
    assert!(!s.should_spin_at(last + 2 * s.window_ns), "idle for longer than the window");
    s.calls.store(1, Relaxed);
    assert!(s.should_spin_at(last + 2 * s.window_ns), "a reply not yet due");
    // ...until FAR windows have passed without its reply (a stalled Redis).
    assert!(!s.should_spin_at(last + FAR * s.window_ns), "a reply FAR windows late");
    s.batch_ns.store(s.window_ns * FAR, Relaxed);
    assert!(!s.should_spin_at(last), "batches slower than FAR windows (a Redis across a network)");
    s.calls.store(0, Relaxed);
    let off: &'static IoSpin = Box::leak(Box::new(IoSpin::new(0)));
    let _call = off.begin(1);
    assert!(!off.should_spin(), "CACHE_IO_SPIN_US=0");
  }
}
