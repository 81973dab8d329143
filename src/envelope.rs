//! The value format of read-through entries that outlive their TTL: the
//! loaded value wrapped with its logical expiry, so that one read tells
//! whether it is fresh, due for an early refresh, or only a fail-safe fallback.
//!
//! ```text
//! {"\u0000rt":<fresh until, ms>,"r":<refresh after, ms; 0: never>,"v":<value>}
//! ```
//! It is plain JSON text, so the memory tier, the journal, the replay and the
//! write-time check (`WRITE_SCRIPT`) store it like any value. A plain `get`
//! (and every read but the read-through's own) answers the bare `<value>`: the
//! check is one prefix comparison. `JSON.stringify` writes a key `\u0000rt`
//! only for an object whose first key is that control character, which no
//! caller's data has by accident.

use std::sync::Arc;

/// What every envelope starts with (the JSON text, escape included).
pub const PREFIX: &str = "{\"\\u0000rt\":";

/// A `Get`'s `unwrap` marker: answer the envelope itself (the read-through reads it).
pub const RAW: &str = "\u{0}envelope";

/// The parts of an envelope: (fresh until ms, refresh after ms, value JSON).
pub fn parts(json: &str) -> Option<(u64, u64, &str)> {
  let rest = json.strip_prefix(PREFIX)?;
  let (fresh, rest) = rest.split_once(",\"r\":")?;
  let (refresh, rest) = rest.split_once(",\"v\":")?;
  let value = rest.strip_suffix('}')?;
  Some((fresh.parse().ok()?, refresh.parse().ok()?, value))
}

/// The bare value of a stored text: the envelope's value, or the text itself.
pub fn value_of(json: Arc<str>) -> Arc<str> {
  if !json.starts_with(PREFIX) {
    return json;
  }
  match parts(&json) {
    Some((_, _, value)) => Arc::from(value),
    None => json,
  }
}

/// The same envelope marked stale (fresh until 0, no early refresh): it still
/// serves as a fail-safe fallback until it expires. `None`: not an envelope.
pub fn staled(json: &str) -> Option<String> {
  let (_, _, value) = parts(json)?;
  Some(format!("{PREFIX}0,\"r\":0,\"v\":{value}}}"))
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn envelopes_unwrap_and_stale() {
    let e = "{\"\\u0000rt\":1700000000000,\"r\":1699999999000,\"v\":{\"a\":[1,\",\\\"v\\\":\"]}}";
    assert_eq!(parts(e), Some((1_700_000_000_000, 1_699_999_999_000, "{\"a\":[1,\",\\\"v\\\":\"]}")));
    assert_eq!(&*value_of(Arc::from(e)), "{\"a\":[1,\",\\\"v\\\":\"]}");
    assert_eq!(&*value_of(Arc::from("{\"a\":1}")), "{\"a\":1}");
    let stale = staled(e).unwrap();
    assert_eq!(parts(&stale).unwrap().0, 0);
    assert_eq!(parts(&stale).unwrap().2, parts(e).unwrap().2);
    assert_eq!(staled("[1]"), None);
    // The text is JSON: JSON.parse and the codec's check accept it.
    assert!(serde_json::from_str::<serde_json::Value>(e).is_ok());
  }
}
