//! Keeps Redis sends in the order calls were submitted, when work done
//! before a send (compressing large values off the I/O thread) can finish
//! out of order: two writes of one key must reach Redis as they were made.
//! A tenant clear also waits for every earlier segment to finish, replies
//! and all, so that it applies to every call made before it.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Default)]
pub struct SendOrder {
  state: Mutex<State>,
  turn_moved: Notify,
  finished: Notify,
}

#[derive(Default)]
struct State {
  /// The next ticket to hand out.
  next: u64,
  /// The ticket whose turn it is to send.
  turn: u64,
  /// Later tickets that let go before their turn.
  early: BTreeSet<u64>,
  /// Tickets not yet dropped: their segments are still running.
  running: BTreeSet<u64>,
}

/// A place in the send order: take it when the work is submitted, wait for
/// its turn before sending, and let it go once the commands are on their
/// connections. Dropped without that, it lets go of its place at once.
pub struct Ticket<'a> {
  order: &'a SendOrder,
  n: u64,
  released: bool,
}

impl SendOrder {
  pub fn ticket(&self) -> Ticket<'_> {
    let mut state = self.state.lock().unwrap();
    let n = state.next;
    state.next += 1;
    state.running.insert(n);
    Ticket { order: self, n, released: false }
  }
}

impl Ticket<'_> {
  /// Waits until every earlier ticket has sent (or let go).
  pub async fn turn(&self) {
    loop {
      let moved = self.order.turn_moved.notified();
      tokio::pin!(moved);
      moved.as_mut().enable();
      if self.order.state.lock().unwrap().turn >= self.n {
        return;
      }
      moved.await;
    }
  }

  /// Waits until the segment of every earlier ticket has finished (its
  /// ticket dropped): replies received, not only commands sent.
  pub async fn earlier_finished(&self) {
    loop {
      let finished = self.order.finished.notified();
      tokio::pin!(finished);
      finished.as_mut().enable();
      if self.order.state.lock().unwrap().running.range(..self.n).next().is_none() {
        return;
      }
      finished.await;
    }
  }

  /// The commands are sent (or nothing will be): later tickets may go.
  pub fn release(&mut self) {
    self.let_go();
  }

  fn let_go(&mut self) {
    if std::mem::replace(&mut self.released, true) {
      return;
    }
    let mut state = self.order.state.lock().unwrap();
    state.early.insert(self.n);
    loop {
      let turn = state.turn;
      if !state.early.remove(&turn) {
        break;
      }
      state.turn += 1;
    }
    drop(state);
    self.order.turn_moved.notify_waiters();
  }
}

impl Drop for Ticket<'_> {
  fn drop(&mut self) {
    self.let_go();
    self.order.state.lock().unwrap().running.remove(&self.n);
    self.order.finished.notify_waiters();
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::sync::Arc;
  use std::time::Duration;

  #[tokio::test]
  async fn later_tickets_wait_for_earlier_ones_and_dropped_ones_let_go() {
    let order = Arc::new(SendOrder::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut first = order.ticket();
    let skipped = order.ticket();
    let (o, l) = (order.clone(), log.clone());
    let third = tokio::spawn(async move {
      let mut t = o.ticket();
      t.turn().await;
      l.lock().unwrap().push(3);
      t.release();
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(log.lock().unwrap().is_empty(), "the third waits for the first");
    drop(skipped); // done early: does not hold anyone up once the first goes
    first.turn().await;
    log.lock().unwrap().push(1);
    first.release();
    third.await.unwrap();
    assert_eq!(*log.lock().unwrap(), vec![1, 3]);
    let t = order.ticket();
    tokio::time::timeout(Duration::from_millis(100), t.turn()).await.expect("nothing ahead: its turn at once");
  }

  #[tokio::test]
  async fn a_clear_waits_until_every_earlier_segment_has_finished() {
    let order = Arc::new(SendOrder::default());
    let mut earlier = order.ticket();
    let clear = order.ticket();
    let later = order.ticket();
    earlier.turn().await;
    earlier.release(); // sent, but its replies are not in yet
    let wait = tokio::time::timeout(Duration::from_millis(50), clear.earlier_finished()).await;
    assert!(wait.is_err(), "the clear went while an earlier segment was still running");
    drop(earlier);
    tokio::time::timeout(Duration::from_millis(100), clear.earlier_finished())
      .await
      .expect("every earlier segment finished: the clear goes");
    // Later tickets never hold a clear up.
    drop(later);
  }
}
