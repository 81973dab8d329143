//! Key layout: namespacing, escaping of ids, phone normalisation, hash tags.
//!
//! ```text
//! <prefix>:kv:<key>                       generic get/set/h* keys (taken as given)
//! <prefix>:org:{<org>}:<type>[:<id>...]   everything scoped to one organisation
//! <prefix>:global:<type>[:<id>...]        org-scoped data stored with no org (null)
//! <prefix>:<type>:<id>[:<id>...]          data of no organisation (leads, agents)
//! ```
//! Ids are percent-escaped to `[A-Za-z0-9_.-]` and `%XX`, so an id can hold
//! no separator, glob character or brace: `SCAN MATCH <prefix>:org:{<org>}:*`
//! finds exactly one org's keys, and `{<org>}` is that org's Redis Cluster hash
//! tag, so all of an org's keys live in one slot.

use std::fmt::Write;

/// Percent-escapes every byte outside `[A-Za-z0-9_.-]`.
pub fn escape_id(id: &str) -> String {
  let mut out = String::with_capacity(id.len());
  for b in id.bytes() {
    if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
      out.push(b as char);
    } else {
      let _ = write!(out, "%{b:02X}");
    }
  }
  out
}

/// The digits of a phone number: `+1 (987) 654-321` → `1987654321`.
pub fn phone_digits(phone: &str) -> String {
  phone.chars().filter(char::is_ascii_digit).collect()
}

/// Escapes glob metacharacters for `SCAN MATCH`.
pub fn glob_escape(s: &str) -> String {
  let mut out = String::with_capacity(s.len());
  for c in s.chars() {
    if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
      out.push('\\');
    }
    out.push(c);
  }
  out
}

/// `orgId:digits`, or the digits alone with no org: the readable key the old
/// code used for its in-process maps (not a Redis key).
pub fn org_key(org: Option<&str>, phone: &str) -> String {
  match org {
    Some(org) if !org.is_empty() => format!("{org}:{}", phone_digits(phone)),
    _ => phone_digits(phone),
  }
}

/// Builds the Redis keys of one adapter.
#[derive(Debug, Clone)]
pub struct KeySpace {
  prefix: String,
}

impl KeySpace {
  pub fn new(prefix: &str) -> Self {
    Self { prefix: prefix.trim_end_matches(':').to_string() }
  }

  pub fn prefix(&self) -> &str {
    &self.prefix
  }

  /// A generic key, taken as the caller gave it.
  pub fn generic(&self, key: &str) -> String {
    format!("{}:kv:{key}", self.prefix)
  }

  /// The start every key of one org shares (`None`: the global scope).
  pub fn org_scope(&self, org: Option<&str>) -> String {
    match org {
      Some(org) => format!("{}:org:{{{}}}:", self.prefix, escape_id(org)),
      None => format!("{}:global:", self.prefix),
    }
  }

  /// The `SCAN MATCH` pattern of every key of one org.
  pub fn org_pattern(&self, org: Option<&str>) -> String {
    let scope = self.org_scope(org);
    // The escaped org holds no glob character, but the prefix may.
    format!("{}*", glob_escape(&scope))
  }

  /// A key scoped to `org` (or global): `<scope><type>[:<part>...]`.
  pub fn scoped(&self, org: Option<&str>, type_tag: &str, parts: &[String]) -> String {
    let mut key = self.org_scope(org);
    key.push_str(type_tag);
    for p in parts {
      key.push(':');
      key.push_str(p);
    }
    key
  }

  /// A key of no org: `<prefix>:<type>:<part>[:<part>...]`.
  pub fn unscoped(&self, type_tag: &str, parts: &[String]) -> String {
    let mut key = format!("{}:{type_tag}", self.prefix);
    for p in parts {
      key.push(':');
      key.push_str(p);
    }
    key
  }

  /// Process-local fallback-map entries: never sent to Redis.
  pub fn fallback(&self, map: &str, key: &str) -> String {
    format!("{}:fallback:{}:{key}", self.prefix, escape_id(map))
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn escaping_leaves_no_separator_glob_or_brace() {
    let nasty = "a:b*c?{d}[e]\\f g%";
    let e = escape_id(nasty);
    assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-%".contains(&b)), "{e}");
    assert_eq!(escape_id("org-1_a.b"), "org-1_a.b");
    assert_eq!(escape_id("a:b"), "a%3Ab");
    // Escaping is injective: distinct ids give distinct keys.
    assert_ne!(escape_id("a%3Ab"), escape_id("a:b"));
    assert_eq!(escape_id("é"), "%C3%A9");
  }

  #[test]
  fn phones_normalise_to_digits() {
    assert_eq!(phone_digits("+1 (987) 654-321"), "1987654321");
    assert_eq!(phone_digits("+1987654321"), "1987654321");
    assert_eq!(org_key(Some("org-1"), "+1 (555) 123-4567"), "org-1:15551234567");
    assert_eq!(org_key(None, "+1 (555) 123-4567"), "15551234567");
  }

  #[test]
  fn one_org_pattern_never_matches_another_orgs_keys() {
    let ks = KeySpace::new("app:dev");
    let a = ks.scoped(Some("a"), "ctx", &["1".into()]);
    let star = ks.scoped(Some("*"), "ctx", &["1".into()]);
    assert_eq!(a, "app:dev:org:{a}:ctx:1");
    assert_eq!(ks.org_pattern(Some("*")), "app:dev:org:{%2A}:*");
    assert!(glob_match(&ks.org_pattern(Some("a")), &a));
    assert!(!glob_match(&ks.org_pattern(Some("*")), &a));
    assert!(glob_match(&ks.org_pattern(Some("*")), &star));
    // "a" must not match the org "a:b" or "ab".
    assert!(!glob_match(&ks.org_pattern(Some("a")), &ks.scoped(Some("a:b"), "ctx", &[])));
    assert!(!glob_match(&ks.org_pattern(Some("a")), &ks.scoped(Some("ab"), "ctx", &[])));
    assert!(!glob_match(&ks.org_pattern(Some("a")), &ks.generic("org:{a}:x")));
  }

  #[test]
  fn glob_characters_in_the_prefix_are_escaped() {
    let ks = KeySpace::new("we*ird");
    assert!(glob_match(&ks.org_pattern(Some("a")), &ks.scoped(Some("a"), "x", &[])));
    assert!(!glob_match(&ks.org_pattern(Some("a")), "weXXird:org:{a}:x"));
  }

  /// Redis's glob semantics for the subset used here (`*`, `?`, `\` escapes).
  fn glob_match(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
      match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
        Some('?') => !s.is_empty() && go(&p[1..], &s[1..]),
        Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && go(&p[2..], &s[1..]),
        Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
      }
    }
    go(&pattern.chars().collect::<Vec<_>>(), &s.chars().collect::<Vec<_>>())
  }
}
