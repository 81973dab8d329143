//! Single-flight: concurrent callers of one key share one piece of work.
//!
//! The first caller of a key becomes its leader and does the work; the others
//! follow and receive a clone of its result. If the leader is dropped without a
//! result, followers are told so (they get `None`) and decide for themselves.
//! A flight costs one small allocation, and one more per follower: it sits on
//! the path of every Redis read.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Waiters<V> = Arc<Mutex<Vec<oneshot::Sender<V>>>>;

pub struct SingleFlight<K, V> {
  /// Key → (flight id, the followers waiting for it).
  inflight: Mutex<HashMap<K, (u64, Waiters<V>)>>,
  next_id: AtomicU64,
}

pub enum Join<K: Eq + Hash + Clone, V: Clone> {
  Leader(Lead<K, V>),
  Follower(Follow<V>),
}

/// The right (and duty) to produce the key's result.
pub struct Lead<K: Eq + Hash + Clone, V: Clone> {
  flight: Arc<SingleFlight<K, V>>,
  key: K,
  id: u64,
  waiters: Waiters<V>,
}

pub struct Follow<V> {
  rx: oneshot::Receiver<V>,
}

impl<K: Eq + Hash + Clone, V: Clone> Default for SingleFlight<K, V> {
  fn default() -> Self {
    Self { inflight: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) }
  }
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
  pub fn new() -> Arc<Self> {
    Arc::new(Self::default())
  }

  /// Leads the work for `key`, or follows the flight already under way.
  pub fn join(self: &Arc<Self>, key: &K) -> Join<K, V> {
    let mut map = self.inflight.lock().unwrap();
    if let Some((_, waiters)) = map.get(key) {
      let (tx, rx) = oneshot::channel();
      waiters.lock().unwrap().push(tx);
      return Join::Follower(Follow { rx });
    }
    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
    let waiters = Waiters::default();
    map.insert(key.clone(), (id, waiters.clone()));
    Join::Leader(Lead { flight: self.clone(), key: key.clone(), id, waiters })
  }

  /// Stops later callers from joining the flight under way for `key` (a write
  /// to the key makes its result stale for anyone who starts after the write).
  /// Callers already following it still get its result.
  pub fn forget(&self, key: &K) {
    self.inflight.lock().unwrap().remove(key);
  }

  /// [`forget`](Self::forget) for every key starting with `prefix`.
  pub fn forget_prefix(&self, prefix: &str)
  where
    K: AsRef<str>,
  {
    self.inflight.lock().unwrap().retain(|k, _| !k.as_ref().starts_with(prefix));
  }

  /// Flights under way.
  pub fn in_flight(&self) -> usize {
    self.inflight.lock().unwrap().len()
  }

  fn end_flight(&self, key: &K, id: u64) {
    let mut map = self.inflight.lock().unwrap();
    if map.get(key).is_some_and(|(current, _)| *current == id) {
      map.remove(key);
    }
  }
}

impl<K: Eq + Hash + Clone, V: Clone> Lead<K, V> {
  /// Is this still the flight of its key, i.e. was it not [`forget`](SingleFlight::forget)-ten
  /// (a write of the key since it started makes its result older than that write)?
  pub fn is_current(&self) -> bool {
    self.flight.inflight.lock().unwrap().get(&self.key).is_some_and(|(id, _)| *id == self.id)
  }

  /// Hands the result to every follower.
  pub fn finish(self, value: V) {
    self.flight.end_flight(&self.key, self.id);
    let waiters = std::mem::take(&mut *self.waiters.lock().unwrap());
    for tx in waiters {
      let _ = tx.send(value.clone());
    }
  }
}

impl<K: Eq + Hash + Clone, V: Clone> Drop for Lead<K, V> {
  fn drop(&mut self) {
    // After `finish` this finds nothing to end; otherwise followers see their
    // senders dropped and get `None`.
    self.flight.end_flight(&self.key, self.id);
  }
}

impl<V: Clone> Follow<V> {
  /// The leader's result, or `None` if the leader gave up without one.
  pub async fn wait(self) -> Option<V> {
    self.rx.await.ok()
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::sync::atomic::AtomicUsize;

  #[tokio::test]
  async fn concurrent_callers_share_one_execution() {
    let flight = SingleFlight::<String, u32>::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..50 {
      let (flight, calls) = (flight.clone(), calls.clone());
      tasks.push(tokio::spawn(async move {
        match flight.join(&"k".to_string()) {
          Join::Leader(lead) => {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            lead.finish(7);
            7
          }
          Join::Follower(f) => f.wait().await.unwrap(),
        }
      }));
    }
    for t in tasks {
      assert_eq!(t.await.unwrap(), 7);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(flight.in_flight(), 0);
  }

  #[tokio::test]
  async fn a_dropped_leader_releases_followers_and_the_key() {
    let flight = SingleFlight::<u8, u8>::new();
    let Join::Leader(lead) = flight.join(&1) else { panic!() };
    let Join::Follower(f) = flight.join(&1) else { panic!() };
    drop(lead);
    assert_eq!(f.wait().await, None);
    assert!(matches!(flight.join(&1), Join::Leader(_)));
  }

  #[tokio::test]
  async fn forget_makes_later_callers_lead_again() {
    let flight = SingleFlight::<u8, u8>::new();
    let Join::Leader(first) = flight.join(&1) else { panic!() };
    let Join::Follower(early) = flight.join(&1) else { panic!() };
    flight.forget(&1);
    let Join::Leader(second) = flight.join(&1) else { panic!("a caller after forget must not join the old flight") };
    // The old leader finishing must not end the new flight, and still serves its followers.
    first.finish(1);
    assert_eq!(early.wait().await, Some(1));
    assert!(matches!(flight.join(&1), Join::Follower(_)));
    second.finish(2);
  }
}
