//! Keeps credentials out of every string that leaves the core: unavailability
//! reasons (`lastError`, health `error`, `modeChange` reasons), option errors,
//! and `Debug` of the Redis target.

use std::fmt;

use crate::config::{percent_decode, RedisTarget};

/// What a masked credential reads as.
pub const MASK: &str = "***";

/// The credentials of one configuration, masked wherever they appear.
#[derive(Clone, Default)]
pub struct Secrets {
  /// Each secret in every form it may be written in, longest first (so that
  /// a secret containing another is masked whole).
  forms: Vec<String>,
}

impl Secrets {
  /// The password of `target`, and the credentials of its cluster seed URLs.
  pub fn of(target: &RedisTarget) -> Self {
    let mut secrets = Secrets::default();
    if let Some(password) = &target.password {
      secrets.add(password);
    }
    for node in &target.cluster_nodes {
      secrets.add_url(node);
    }
    secrets
  }

  /// A secret: masked as given and in the percent-encoded forms a URL may carry.
  pub fn add(&mut self, secret: &str) {
    if secret.is_empty() {
      return;
    }
    let forms = [
      secret.to_string(),
      percent_encode(secret, b"-._~", false),
      percent_encode(secret, b"-._~", true),
      // encodeURIComponent's (JavaScript's) unreserved set
      percent_encode(secret, b"-._~!*'()", false),
      percent_encode(secret, b"-._~!*'()", true),
    ];
    for form in forms {
      if !self.forms.contains(&form) {
        self.forms.push(form);
      }
    }
    self.forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
  }

  /// The password of a `scheme://[user]:pass@host` URL, as written and decoded.
  pub fn add_url(&mut self, url: &str) {
    let Some((_, rest)) = url.split_once("://") else { return };
    let Some((userinfo, _)) = rest.rsplit_once('@') else { return };
    let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    self.add(password);
    self.add(&percent_decode(password));
  }

  /// `text` with every URL credential and every known secret masked.
  pub fn redact(&self, text: &str) -> String {
    let mut out = mask_userinfo(text);
    for form in &self.forms {
      if out.contains(form.as_str()) {
        out = out.replace(form.as_str(), MASK);
      }
    }
    out
  }
}

/// Masks the `user:pass` of every `scheme://user:pass@host` in `text`. A URL
/// runs to the next whitespace or quote; its credentials end at its last `@`
/// (a password written unencoded may hold `/`, `?`, `#` or `@` itself).
pub fn mask_userinfo(text: &str) -> String {
  let mut out = String::with_capacity(text.len());
  let mut rest = text;
  while let Some(i) = rest.find("://") {
    let start = i + 3;
    out.push_str(&rest[..start]);
    let after = &rest[start..];
    let end =
      after.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>')).unwrap_or(after.len());
    match after[..end].rfind('@') {
      Some(at) => {
        out.push_str(MASK);
        rest = &after[at..];
      }
      None => rest = after,
    }
  }
  out.push_str(rest);
  out
}

fn percent_encode(s: &str, unreserved: &[u8], lower: bool) -> String {
  let mut out = String::with_capacity(s.len() * 3);
  for &b in s.as_bytes() {
    if b.is_ascii_alphanumeric() || unreserved.contains(&b) {
      out.push(b as char);
    } else if lower {
      out.push_str(&format!("%{b:02x}"));
    } else {
      out.push_str(&format!("%{b:02X}"));
    }
  }
  out
}

/// Without the password, and with seed URLs' credentials masked: a target
/// may end up in a log through `{:?}`.
impl fmt::Debug for RedisTarget {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let seeds: Vec<String> = self.cluster_nodes.iter().map(|n| mask_userinfo(n)).collect();
    f.debug_struct("RedisTarget")
      .field("host", &self.host)
      .field("port", &self.port)
      .field("username", &self.username)
      .field("password", &self.password.as_ref().map(|_| MASK))
      .field("db", &self.db)
      .field("tls", &self.tls)
      .field("cluster_nodes", &seeds)
      .finish()
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  const PASSWORD: &str = "Al1ce@p:ss/w%rd#tok?&x y";

  fn secrets() -> Secrets {
    let mut s = Secrets::default();
    s.add(PASSWORD);
    s
  }

  #[test]
  fn masks_url_credentials_whatever_their_encoding() {
    let text = "failed to connect to redis://alice:p%40ss@10.0.0.1:6380/0 (and rediss://:x@h, redis://h:1)";
    assert_eq!(
      mask_userinfo(text),
      "failed to connect to redis://***@10.0.0.1:6380/0 (and rediss://***@h, redis://h:1)"
    );
    // An unencoded password with '/', '?', '@' in it is masked up to the last '@'.
    // (A space ends the URL: such a password is masked as a known secret instead.)
    let raw = format!("bad url \"redis://alice:{}@host:1\" here", PASSWORD.replace(' ', ""));
    assert_eq!(mask_userinfo(&raw), "bad url \"redis://***@host:1\" here");
    assert_eq!(mask_userinfo("no url, user@example.com"), "no url, user@example.com");
    assert_eq!(mask_userinfo("ends with redis://"), "ends with redis://");
  }

  #[test]
  fn masks_a_secret_raw_and_percent_encoded() {
    let s = secrets();
    let encoded = "Al1ce%40p%3Ass%2Fw%25rd%23tok%3F%26x%20y";
    let lower = "Al1ce%40p%3ass%2fw%25rd%23tok%3f%26x%20y";
    for text in [format!("WRONGPASS for {PASSWORD}"), format!("auth {encoded} failed"), format!("auth {lower} failed")]
    {
      let out = s.redact(&text);
      assert!(!out.contains("tok"), "{out}");
      assert!(out.contains(MASK), "{out}");
    }
    assert_eq!(s.redact("WRONGPASS invalid username-password pair"), "WRONGPASS invalid username-password pair");
  }

  #[test]
  fn url_passwords_are_secrets_as_written_and_decoded() {
    let mut s = Secrets::default();
    s.add_url("redis://bob:s%40cret-1@host:6379");
    assert_eq!(s.redact("pw s@cret-1 or s%40cret-1"), "pw *** or ***");
    s.add_url("no url at all");
    s.add_url("redis://host-without-credentials:1");
  }

  #[test]
  fn debug_of_a_target_hides_the_password() {
    let target = RedisTarget {
      host: "h".into(),
      port: 1,
      username: Some("alice".into()),
      password: Some(PASSWORD.into()),
      db: 0,
      tls: None,
      cluster_nodes: vec!["redis://:seedpass@n1:7000".into()],
      sentinel: None,
    };
    let shown = format!("{target:?} {:#?}", Some(&target));
    assert!(!shown.contains("tok") && !shown.contains("seedpass"), "{shown}");
    assert!(shown.contains("alice") && shown.contains(MASK));
    assert!(!Secrets::of(&target).redact(&format!("{PASSWORD} seedpass")).contains("seedpass"));
  }
}
