//! The near cache's invalidation links: one RESP3 connection per lane with
//! `CLIENT TRACKING ON BCAST PREFIX <prefix>`, pinged to renew its lease, and
//! dialled again whenever it fails. On a single server or behind Sentinel
//! there is one lane; on a cluster, one per master, following the slot map.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Client, PushInfo, Value};

use super::{LaneId, Near};

/// How often a link is asked for a heartbeat: a few lease renewals fit in one
/// lease, so one slow answer does not stop hits.
const HEARTBEAT: Duration = Duration::from_millis(25);
/// How often a cluster's masters are compared with the lanes.
const LANES_EVERY: Duration = Duration::from_millis(100);
/// The name a link gives itself (`CLIENT LIST` shows it; tests kill it by it).
pub const LINK_NAME: &str = "cache-near-invalidation";

/// Where a lane's link connects, asked again at every dial.
pub enum Dialer {
  /// A fixed address: a single server, or one cluster master.
  Direct(Client),
  /// Whatever master the sentinels name now: after a failover the next dial
  /// tracks the new master (Sentinel ends the old master's client
  /// connections when it demotes it, so the link notices).
  Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl Dialer {
  async fn client(&self) -> Result<Client, String> {
    match self {
      Dialer::Direct(client) => Ok(client.clone()),
      Dialer::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await.map_err(|e| e.to_string()),
    }
  }
}

/// Keeps the cluster's lanes equal to its masters (as `masters` reads them
/// from the slot map, `None` once the adapter is gone), starting a link task
/// for each new one; `client_for` makes a master's RESP3 client.
pub async fn run_lanes<M, C>(near: Weak<Near>, masters: M, client_for: C, prefix: String, connect_timeout: Duration)
where
  M: Fn() -> Option<Vec<Arc<str>>> + Send + 'static,
  C: Fn(&str) -> Result<Client, String> + Send + 'static,
{
  loop {
    let Some(masters) = masters() else { return };
    let (added, wake) = {
      let Some(n) = near.upgrade() else { return };
      if n.closed.load(Relaxed) {
        return;
      }
      (n.set_lanes(&masters), n.wake.clone())
    };
    for lane in added {
      // A master whose address makes no client leaves its lane down, and the
      // near cache bypassed: never a hit that a write there could not undo.
      if let Ok(client) = client_for(&lane.name) {
        let dialer = Arc::new(Dialer::Direct(client));
        tokio::spawn(run_link(near.clone(), lane, dialer, prefix.clone(), connect_timeout));
      }
    }
    let _ = tokio::time::timeout(LANES_EVERY, wake.notified()).await;
  }
}

/// Keeps `lane`'s link up for as long as the lane (this epoch of it) and the near cache live:
/// dials, turns tracking on for `prefix`, pings every [`HEARTBEAT`], and on
/// any failure empties the cache and dials again (with a backoff).
pub async fn run_link(near: Weak<Near>, lane: LaneId, dialer: Arc<Dialer>, prefix: String, connect_timeout: Duration) {
  let mut failures: u32 = 0;
  loop {
    let Some(link) = near.upgrade().and_then(|n| n.dialing(&lane)) else { return };
    match connect(&near, &dialer, link, &prefix, connect_timeout).await {
      Ok((conn, beat)) => {
        failures = 0;
        heartbeat(&near, conn, link, beat, connect_timeout).await;
      }
      Err(why) => {
        failures = failures.saturating_add(1);
        if let Some(n) = near.upgrade() {
          n.link_failed(&lane.name, &why);
        }
      }
    }
    let Some(n) = near.upgrade() else { return };
    n.link_lost(link);
    if n.closed.load(Relaxed) {
      return;
    }
    // At once after a link that worked, then 50 ms doubling up to 1 s.
    let wait = if failures == 0 {
      Duration::from_millis(10)
    } else {
      Duration::from_millis(50 << failures.min(5).saturating_sub(1)).min(Duration::from_secs(1))
    };
    let wake = n.wake.clone();
    drop(n);
    let _ = tokio::time::timeout(wait, wake.notified()).await;
  }
}

/// Dials link `link` and turns tracking on; returns once hits may start.
async fn connect(
  near: &Weak<Near>,
  dialer: &Dialer,
  link: u64,
  prefix: &str,
  connect_timeout: Duration,
) -> Result<(MultiplexedConnection, Heartbeat), String> {
  let pushes = near.clone();
  let config = AsyncConnectionConfig::new()
    .set_connection_timeout(Some(connect_timeout))
    .set_response_timeout(None)
    .set_push_sender(move |push: PushInfo| {
      if let Some(n) = pushes.upgrade() {
        n.on_push(link, push);
      }
      Ok::<(), ()>(())
    });
  let setup = async {
    let client = dialer.client().await?;
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| e.to_string())?;
    // The name is for operators (CLIENT LIST); a server that refuses it is no reason to stop.
    let mut name = redis::cmd("CLIENT");
    name.arg("SETNAME").arg(LINK_NAME);
    conn.req_packed_command(&name).await.map_err(|e| e.to_string())?;
    let asked = near.upgrade().ok_or("closed")?.now_ns();
    let heartbeat = start_tracking(&mut conn, prefix).await?;
    Ok::<_, String>((conn, asked, heartbeat))
  };
  let (conn, asked, heartbeat) = tokio::time::timeout(connect_timeout * 2, setup)
    .await
    .map_err(|_| format!("link setup timed out after {} ms", (connect_timeout * 2).as_millis()))??;
  near.upgrade().ok_or("closed")?.link_ready(link, asked);
  Ok((conn, heartbeat))
}

/// Turns tracking of `prefix` on for `conn` and says which heartbeat its
/// server allows: what a link does before it is ready, and what the doctor
/// tries on each master.
pub(crate) async fn start_tracking(conn: &mut MultiplexedConnection, prefix: &str) -> Result<Heartbeat, String> {
  let mut tracking = redis::cmd("CLIENT");
  tracking.arg("TRACKING").arg("ON").arg("BCAST").arg("PREFIX").arg(prefix);
  // An error reply arrives as a value: without this check a refused
  // TRACKING (an ACL, an old Redis) would leave a link that hears nothing.
  answered(conn.req_packed_command(&tracking).await).map_err(|e| format!("CLIENT TRACKING refused: {e}"))?;
  // Writes go to a master only: a link on anything else would hear none of them.
  match Heartbeat::Role.check(&conn.req_packed_command(&redis::cmd("ROLE")).await) {
    Ok(()) => Ok(Heartbeat::Role),
    // ROLE is an @admin command: a user an ACL keeps from it gets PING (role unknown).
    Err(Refusal::Denied) => Ok(Heartbeat::Ping),
    Err(Refusal::NotMaster) => Err("the server is not a master".to_string()),
    Err(Refusal::Failed(e)) => Err(e),
  }
}

/// What a link's heartbeat asks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
  /// `ROLE`, which must answer `master`.
  Role,
  /// `PING`, where the user may not run `ROLE`.
  Ping,
}

/// Why a heartbeat's answer does not renew the lease.
enum Refusal {
  /// The server refused the command itself (an ACL, a renamed command).
  Denied,
  NotMaster,
  Failed(String),
}

impl Heartbeat {
  fn cmd(self) -> redis::Cmd {
    redis::cmd(match self {
      Heartbeat::Role => "ROLE",
      Heartbeat::Ping => "PING",
    })
  }

  fn check(self, answer: &redis::RedisResult<Value>) -> Result<(), Refusal> {
    match answer {
      Ok(Value::ServerError(_)) => Err(Refusal::Denied),
      Err(e) if e.code().is_some() && !e.is_io_error() => Err(Refusal::Denied),
      Err(e) => Err(Refusal::Failed(e.to_string())),
      Ok(reply) => match self {
        Heartbeat::Role if !is_master(reply) => Err(Refusal::NotMaster),
        _ => Ok(()),
      },
    }
  }
}

/// Asks link `link` for its server's `ROLE` (or a `PING`) every
/// [`HEARTBEAT`]; each answer renews its lease. Ends when it fails, its
/// server is no longer a master (a failover behind a stable address, a
/// `REPLICAOF` made by hand, a demotion Sentinel did not disconnect), it is
/// replaced or its lane leaves the set, or the near cache is closed or dropped.
async fn heartbeat(near: &Weak<Near>, mut conn: MultiplexedConnection, link: u64, beat: Heartbeat, timeout: Duration) {
  let ping = beat.cmd();
  loop {
    let asked = {
      let Some(n) = near.upgrade() else { return };
      if !n.is_live(link) {
        return;
      }
      let wake = n.wake.clone();
      drop(n);
      let _ = tokio::time::timeout(HEARTBEAT, wake.notified()).await;
      let Some(n) = near.upgrade() else { return };
      n.now_ns()
    };
    match tokio::time::timeout(timeout, conn.req_packed_command(&ping)).await {
      Ok(answer) if beat.check(&answer).is_ok() => match near.upgrade() {
        Some(n) => n.renew(link, asked),
        None => return,
      },
      _ => return,
    }
  }
}

/// A reply, with an error reply (which redis-rs hands over as a value) as an error.
fn answered(reply: redis::RedisResult<Value>) -> Result<Value, String> {
  reply.map_err(|e| e.to_string()).and_then(crate::tiers::redis::outcome)
}

/// A `ROLE` answer that starts with `master`.
fn is_master(reply: &Value) -> bool {
  match reply {
    Value::Array(items) => match items.first() {
      Some(Value::BulkString(role)) => role.as_slice() == b"master",
      Some(Value::SimpleString(role)) => role == "master",
      _ => false,
    },
    _ => false,
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn a_link_on_a_replica_ends() {
    let role = |r: &str| Value::Array(vec![Value::BulkString(r.as_bytes().to_vec()), Value::Int(0)]);
    assert!(is_master(&role("master")));
    assert!(!is_master(&role("slave")));
    assert!(!is_master(&Value::SimpleString("PONG".into())));
    assert!(!is_master(&Value::Nil));
  }
}
