//! Calls as data: the compact batch JavaScript submits once per tick, decoded
//! into [`Op`]s with their keys built, and the [`Reply`] each call gets.
//!
//! Wire format (one entry per call): `codes[i] = opcode | kind << 8 | flags << 16`,
//! `nums[i]` = TTL in seconds (NaN: the kind's default) or the increment, and
//! the call's strings in order in `strs`: the key arguments (one for generic
//! calls, the table's arguments for domain calls; a null org takes no string
//! and sets `ORG_NULL`), then the hash field, then the value's JSON.
//!
//! Two flags serve the read-through (`lib/read-through/`): `RAW` on a generic
//! `Get` answers a read-through envelope as stored instead of its bare value
//! (see `envelope`), and `TAGGED` on a `Set` (generic or domain) means one more
//! string follows the value: the tags, as a JSON array of strings. Each key
//! the call writes then also gets an [`Op::Tag`], in the same pipeline.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::{check_ttl, ttl_duration, Config};
use crate::domain::{domain_key, ArgRole, Kind, Shape};
use crate::error::{CacheError, ErrorKind};
use crate::keys::KeySpace;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum Opcode {
  Get = 1,
  Set = 2,
  Delete = 3,
  Exists = 4,
  Expire = 5,
  Increment = 6,
  HGet = 7,
  HSet = 8,
  HDel = 9,
  HGetAll = 10,
  ClearOrg = 11,
}

impl Opcode {
  pub const ALL: [Opcode; 11] = [
    Opcode::Get,
    Opcode::Set,
    Opcode::Delete,
    Opcode::Exists,
    Opcode::Expire,
    Opcode::Increment,
    Opcode::HGet,
    Opcode::HSet,
    Opcode::HDel,
    Opcode::HGetAll,
    Opcode::ClearOrg,
  ];

  fn from_u8(n: u8) -> Option<Opcode> {
    Self::ALL.into_iter().find(|o| *o as u8 == n)
  }

  fn takes_field(self) -> bool {
    matches!(self, Opcode::HGet | Opcode::HSet | Opcode::HDel)
  }

  fn takes_value(self) -> bool {
    matches!(self, Opcode::Set | Opcode::HSet)
  }
}

/// Flag: the call's org argument is null (global scope).
pub const ORG_NULL: u32 = 1 << 16;
/// Flag on a `Set`: a JSON array of tags follows the value.
pub const TAGGED: u32 = 1 << 17;
/// Flag on a generic `Get`: answer a read-through envelope as stored.
pub const RAW: u32 = 1 << 18;

/// One storage operation, keys built.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
  Get {
    key: String,
    unwrap: Option<&'static str>,
  },
  Set {
    key: String,
    kind: u8,
    json: Arc<str>,
    ttl: Duration,
  },
  Delete {
    key: String,
  },
  Exists {
    key: String,
  },
  Expire {
    key: String,
    ttl: Duration,
  },
  Increment {
    key: String,
    kind: u8,
    by: i64,
    ttl: Duration,
  },
  HGet {
    key: String,
    field: String,
  },
  HSet {
    key: String,
    kind: u8,
    field: String,
    json: Arc<str>,
    ttl: Duration,
  },
  HDel {
    key: String,
    field: String,
  },
  HGetAll {
    key: String,
  },
  /// Every key starting with `scope` (found with `pattern`).
  ClearOrg {
    scope: String,
    pattern: String,
  },
  /// `key` carries these tags (their sets' Redis keys, see `tags`), for `ttl`.
  Tag {
    key: String,
    tag_keys: Vec<String>,
    ttl: Duration,
  },
}

impl Op {
  pub fn key(&self) -> &str {
    match self {
      Op::Get { key, .. }
      | Op::Set { key, .. }
      | Op::Delete { key }
      | Op::Exists { key }
      | Op::Expire { key, .. }
      | Op::Increment { key, .. }
      | Op::HGet { key, .. }
      | Op::HSet { key, .. }
      | Op::HDel { key, .. }
      | Op::HGetAll { key }
      | Op::Tag { key, .. } => key,
      Op::ClearOrg { scope, .. } => scope,
    }
  }

  /// A write whose JSON is what a read of its key answers, once Redis has
  /// applied it: a `Set` of a kind read as written, and not a read-through
  /// envelope (a plain read answers only the envelope's value).
  pub fn reads_back_as_written(&self) -> bool {
    match self {
      Op::Set { kind, json, .. } => {
        Kind::from_u8(*kind).is_some_and(|k| k.reads_as_written()) && !json.starts_with(crate::envelope::PREFIX)
      }
      _ => false,
    }
  }

  /// The JSON a write stores, if it stores one.
  pub fn value(&self) -> Option<&Arc<str>> {
    match self {
      Op::Set { json, .. } | Op::HSet { json, .. } => Some(json),
      _ => None,
    }
  }

  pub fn is_write(&self) -> bool {
    // A tag is bookkeeping next to a write, not a write of its own.
    !matches!(self, Op::Get { .. } | Op::Exists { .. } | Op::HGet { .. } | Op::HGetAll { .. } | Op::Tag { .. })
  }
}

/// What one call resolves to (JSON is parsed by JavaScript).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
  Null,
  Bool(bool),
  Int(i64),
  Json(Arc<str>),
  /// JSON that JavaScript's near cache may keep (see `near::board`).
  Filled(Arc<str>, crate::near::Fill),
  /// `true`: a write Redis applied, whose value JavaScript's near cache may
  /// keep for a read of the same key (see `Near::mark_written`).
  Stored(crate::near::Fill),
  Error(CacheError),
}

/// One call: its operations (a two-way mapping writes two keys) or why it was refused.
pub type Call = Result<Vec<Op>, CacheError>;

/// Decodes a submitted batch into calls.
pub fn decode(codes: &[u32], nums: &[f64], strs: Vec<String>, cfg: &Config, keys: &KeySpace, now_ms: u64) -> Vec<Call> {
  let mut strs = strs.into_iter();
  codes
    .iter()
    .enumerate()
    .map(|(i, &code)| decode_call(code, nums.get(i).copied().unwrap_or(f64::NAN), &mut strs, cfg, keys, now_ms))
    .collect()
}

fn decode_call(
  code: u32,
  num: f64,
  strs: &mut impl Iterator<Item = String>,
  cfg: &Config,
  keys: &KeySpace,
  now_ms: u64,
) -> Call {
  let mut tags = None;
  let mut ops = decode_ops(code, num, strs, cfg, keys, now_ms, &mut tags)?;
  if let Some(tags) = tags {
    let tags: Vec<String> =
      serde_json::from_str(&tags).map_err(|_| CacheError::new(ErrorKind::Type, "tags must be an array of strings"))?;
    let tag_keys: Vec<String> = tags.iter().map(|t| crate::tags::tag_key(keys, t)).collect();
    let tagged: Vec<Op> = ops
      .iter()
      .filter_map(|op| match op {
        Op::Set { key, ttl, .. } => Some(Op::Tag { key: key.clone(), tag_keys: tag_keys.clone(), ttl: *ttl }),
        _ => None,
      })
      .collect();
    ops.extend(tagged);
  }
  Ok(ops)
}

fn decode_ops(
  code: u32,
  num: f64,
  strs: &mut impl Iterator<Item = String>,
  cfg: &Config,
  keys: &KeySpace,
  now_ms: u64,
  tags: &mut Option<String>,
) -> Call {
  let malformed = || CacheError::new(ErrorKind::Internal, format!("malformed call code {code:#x}"));
  let opcode = Opcode::from_u8(code as u8).ok_or_else(malformed)?;
  let kind = Kind::from_u8((code >> 8) as u8).ok_or_else(malformed)?;
  let org_null = code & ORG_NULL != 0;
  let mut next = || strs.next().ok_or_else(malformed);

  // Every string of the call is taken before any check can fail, so that a
  // refused call never shifts the strings of the calls after it.
  let entry = kind.entry();
  let mut args: Vec<Option<String>> = Vec::new();
  match entry {
    None if opcode == Opcode::ClearOrg => args.push(if org_null { None } else { Some(next()?) }),
    None => args.push(Some(next()?)),
    Some(e) => {
      for (_, role) in e.args {
        args.push(if *role == ArgRole::Org && org_null { None } else { Some(next()?) });
      }
    }
  }
  let field = if opcode.takes_field() { Some(next()?) } else { None };
  let value = if opcode.takes_value() { Some(next()?) } else { None };
  if opcode == Opcode::Set && code & TAGGED != 0 {
    *tags = Some(next()?);
  }

  let ttl_secs = |default: f64| -> Result<Duration, CacheError> {
    let secs = if num.is_nan() { default } else { check_ttl(num, "ttl")? };
    Ok(ttl_duration(secs))
  };

  let Some(entry) = entry else {
    // Generic calls.
    let key = match opcode {
      Opcode::ClearOrg => {
        let org = args.pop().flatten();
        return Ok(vec![Op::ClearOrg {
          scope: keys.org_scope(org.as_deref()),
          pattern: keys.org_pattern(org.as_deref()),
        }]);
      }
      _ => keys.generic(args[0].as_deref().unwrap_or_default()),
    };
    let default = cfg.default_ttl_secs;
    return Ok(vec![match opcode {
      Opcode::Get => Op::Get { key, unwrap: (code & RAW != 0).then_some(crate::envelope::RAW) },
      Opcode::Set => Op::Set { key, kind: 0, json: value.unwrap().into(), ttl: ttl_secs(default)? },
      Opcode::Delete => Op::Delete { key },
      Opcode::Exists => Op::Exists { key },
      Opcode::Expire => Op::Expire { key, ttl: ttl_secs(default)? },
      Opcode::Increment => {
        if !(num.is_finite() && num.fract() == 0.0 && num.abs() <= 9.007_199_254_740_991e15) {
          return Err(CacheError::new(ErrorKind::Range, format!("by must be a safe integer, got {num}")));
        }
        Op::Increment { key, kind: 0, by: num as i64, ttl: ttl_duration(default) }
      }
      Opcode::HGet => Op::HGet { key, field: field.unwrap() },
      Opcode::HSet => {
        Op::HSet { key, kind: 0, field: field.unwrap(), json: value.unwrap().into(), ttl: ttl_secs(default)? }
      }
      Opcode::HDel => Op::HDel { key, field: field.unwrap() },
      Opcode::HGetAll => Op::HGetAll { key },
      Opcode::ClearOrg => unreachable!(),
    }]);
  };

  // Domain calls: only get and set, with the table's key, TTL and shape.
  let arg_refs: Vec<Option<&str>> = args.iter().map(|a| a.as_deref()).collect();
  let key = domain_key(keys, entry, &arg_refs)?;
  match opcode {
    Opcode::Get => Ok(vec![Op::Get {
      key,
      unwrap: match entry.shape {
        Shape::Field(f) => Some(f),
        _ => None,
      },
    }]),
    Opcode::Set if entry.setter.is_some() => {
      let json = value.unwrap();
      let ttl = ttl_duration(cfg.ttl(entry.ttl));
      let kind = kind as u8;
      match entry.shape {
        Shape::Plain => Ok(vec![Op::Set { key, kind, json: json.into(), ttl }]),
        Shape::Field(f) => {
          let wrapped = format!("{{\"{f}\":{json},\"timestamp\":{now_ms}}}");
          Ok(vec![Op::Set { key, kind, json: wrapped.into(), ttl }])
        }
        Shape::Mapping { reverse } => {
          let target: String = serde_json::from_str(&json)
            .map_err(|_| CacheError::new(ErrorKind::Type, format!("{} must be a string", entry.value_arg)))?;
          let reverse_entry = reverse.entry().expect("mapping kinds are in the table");
          let reverse_key = domain_key(keys, reverse_entry, &[Some(&target)])?;
          let given = args[0].as_deref().unwrap_or_default();
          let reverse_json = serde_json::to_string(given).expect("a string always serialises");
          Ok(vec![
            Op::Set { key, kind, json: json.into(), ttl },
            Op::Set { key: reverse_key, kind: reverse as u8, json: reverse_json.into(), ttl },
          ])
        }
      }
    }
    _ => Err(malformed()),
  }
}

/// Takes one field out of a stored `{field: value, timestamp}` object.
pub fn unwrap_field(json: &str, field: &str) -> Arc<str> {
  match serde_json::from_str::<serde_json::Value>(json) {
    Ok(serde_json::Value::Object(mut map)) => match map.remove(field) {
      Some(v) => v.to_string().into(),
      None => "null".into(),
    },
    // Not an object (written by something else): return it as it is.
    _ => json.into(),
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn cfg() -> Config {
    crate::config::resolve(&serde_json::Value::Null, &|_| None).unwrap()
  }

  fn code(op: Opcode, kind: Kind) -> u32 {
    op as u32 | (kind as u32) << 8
  }

  #[test]
  fn decodes_generic_and_domain_calls_in_order() {
    let (cfg, keys) = (cfg(), KeySpace::new("p"));
    let codes = [
      code(Opcode::Set, Kind::Generic),
      code(Opcode::Get, Kind::ConversationContext) | ORG_NULL,
      code(Opcode::HSet, Kind::Generic),
      code(Opcode::Set, Kind::PhoneToLead),
    ];
    let strs = ["k", "[1]", "+1 555", "h", "f", "2", "+1 (555) 1", "\"lead-1\""].map(String::from).to_vec();
    let calls = decode(&codes, &[10.0, f64::NAN, f64::NAN, f64::NAN], strs, &cfg, &keys, 5);
    assert_eq!(
      calls[0],
      Ok(vec![Op::Set { key: "p:kv:k".into(), kind: 0, json: "[1]".into(), ttl: Duration::from_secs(10) }])
    );
    assert_eq!(calls[1], Ok(vec![Op::Get { key: "p:global:ctx:1555".into(), unwrap: None }]));
    assert!(
      matches!(&calls[2], Ok(ops) if ops[0] == Op::HSet { key: "p:kv:h".into(), kind: 0, field: "f".into(), json: "2".into(), ttl: Duration::from_secs(7200) })
    );
    let mapping = calls[3].as_ref().unwrap();
    assert_eq!(mapping.len(), 2);
    assert_eq!(mapping[1].key(), "p:lead2phone:lead-1");
    assert!(matches!(&mapping[1], Op::Set { json, .. } if &**json == "\"+1 (555) 1\""));
  }

  #[test]
  fn a_refused_call_does_not_shift_the_next() {
    let (cfg, keys) = (cfg(), KeySpace::new("p"));
    let codes = [code(Opcode::Set, Kind::Generic), code(Opcode::Get, Kind::Generic)];
    let calls = decode(&codes, &[-1.0, f64::NAN], ["a", "1", "b"].map(String::from).to_vec(), &cfg, &keys, 0);
    assert_eq!(calls[0].as_ref().unwrap_err().kind, ErrorKind::Range);
    assert_eq!(calls[1], Ok(vec![Op::Get { key: "p:kv:b".into(), unwrap: None }]));
    // A TTL too large for any tier is refused, not a panic of the whole batch.
    for ttl in [f64::MAX, 1e20, 9.3e18] {
      let calls = decode(&codes, &[ttl, f64::NAN], ["a", "1", "b"].map(String::from).to_vec(), &cfg, &keys, 0);
      assert_eq!(calls[0].as_ref().unwrap_err().kind, ErrorKind::Range, "{ttl}");
      assert!(calls[1].is_ok());
    }
  }

  #[test]
  fn field_shapes_wrap_and_unwrap() {
    let (cfg, keys) = (cfg(), KeySpace::new("p"));
    let calls = decode(
      &[code(Opcode::Set, Kind::OrganizationData)],
      &[f64::NAN],
      ["o", "\"Acme\""].map(String::from).to_vec(),
      &cfg,
      &keys,
      42,
    );
    let Ok(ops) = &calls[0] else { panic!() };
    let Op::Set { json, ttl, .. } = &ops[0] else { panic!() };
    assert_eq!(&**json, "{\"name\":\"Acme\",\"timestamp\":42}");
    assert_eq!(*ttl, Duration::from_secs(120));
    assert_eq!(&*unwrap_field(json, "name"), "\"Acme\"");
    assert_eq!(&*unwrap_field("\"legacy\"", "name"), "\"legacy\"");
  }

  #[test]
  fn tagged_sets_tag_every_key_they_write_and_raw_gets_keep_the_envelope() {
    let (cfg, keys) = (cfg(), KeySpace::new("p"));
    let codes = [
      code(Opcode::Set, Kind::Generic) | TAGGED,
      code(Opcode::Set, Kind::PhoneToLead) | TAGGED,
      code(Opcode::Get, Kind::Generic) | RAW,
      code(Opcode::Set, Kind::Generic) | TAGGED,
      code(Opcode::Get, Kind::Generic),
    ];
    let strs = ["k", "1", "[\"a\",\"b c\"]", "+1 555", "\"L\"", "[\"lead:L\"]", "k", "x", "2", "not json", "k"];
    let calls =
      decode(&codes, &[60.0, f64::NAN, f64::NAN, 60.0, f64::NAN], strs.map(String::from).to_vec(), &cfg, &keys, 0);
    let ops = calls[0].as_ref().unwrap();
    assert_eq!(ops.len(), 2);
    assert_eq!(
      ops[1],
      Op::Tag {
        key: "p:kv:k".into(),
        tag_keys: vec!["p:tag:a".into(), "p:tag:b%20c".into()],
        ttl: Duration::from_secs(60)
      }
    );
    let mapping = calls[1].as_ref().unwrap();
    assert_eq!(mapping.iter().filter(|op| matches!(op, Op::Tag { .. })).count(), 2, "both keys of a mapping");
    assert_eq!(calls[2], Ok(vec![Op::Get { key: "p:kv:k".into(), unwrap: Some(crate::envelope::RAW) }]));
    assert_eq!(calls[3].as_ref().unwrap_err().kind, ErrorKind::Type, "tags that are not JSON");
    assert_eq!(calls[4], Ok(vec![Op::Get { key: "p:kv:k".into(), unwrap: None }]), "the next call is not shifted");
  }

  #[test]
  fn truncated_batches_are_errors_not_panics() {
    let (cfg, keys) = (cfg(), KeySpace::new("p"));
    let calls = decode(&[code(Opcode::Set, Kind::Generic), 0xFF], &[], vec!["only-key".into()], &cfg, &keys, 0);
    assert!(calls.iter().all(|c| c.is_err()));
  }
}
