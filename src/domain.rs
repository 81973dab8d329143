//! The domain methods as data: one row per kind of entry (key pattern, TTL and
//! value shape). The JavaScript class builds its `getX`/`setX` methods from
//! this table, and the core builds keys and values from it.

use serde::Serialize;

use crate::error::{CacheError, ErrorKind};
use crate::keys::{escape_id, phone_digits, KeySpace};

/// The named default TTLs of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlName {
  ConversationContext,
  ConversationSummary,
  ConversationHistory,
  OrganizationData,
  AgentConfig,
  SseResponse,
  LeadData,
  PreComputedContext,
}

impl TtlName {
  pub const COUNT: usize = 8;
  pub const ALL: [TtlName; Self::COUNT] = [
    TtlName::ConversationContext,
    TtlName::ConversationSummary,
    TtlName::ConversationHistory,
    TtlName::OrganizationData,
    TtlName::AgentConfig,
    TtlName::SseResponse,
    TtlName::LeadData,
    TtlName::PreComputedContext,
  ];

  pub fn name(self) -> &'static str {
    match self {
      TtlName::ConversationContext => "conversationContext",
      TtlName::ConversationSummary => "conversationSummary",
      TtlName::ConversationHistory => "conversationHistory",
      TtlName::OrganizationData => "organizationData",
      TtlName::AgentConfig => "agentConfig",
      TtlName::SseResponse => "sseResponse",
      TtlName::LeadData => "leadData",
      TtlName::PreComputedContext => "preComputedContext",
    }
  }

  pub fn default_secs(self) -> f64 {
    match self {
      TtlName::ConversationContext | TtlName::ConversationSummary => 7200.0,
      TtlName::AgentConfig => 3600.0,
      TtlName::LeadData => 300.0,
      TtlName::SseResponse => 10.0,
      TtlName::ConversationHistory | TtlName::OrganizationData | TtlName::PreComputedContext => 120.0,
    }
  }

  pub fn from_name(name: &str) -> Option<TtlName> {
    Self::ALL.into_iter().find(|t| t.name() == name)
  }
}

/// What an argument of a key is, and so how it enters the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ArgRole {
  /// An organisation id, or null for the global scope; scopes the key.
  Org,
  /// A phone number; only its digits enter the key.
  Phone,
  /// Any other id; escaped.
  Id,
}

/// How a stored value relates to what the caller passes and gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
  /// Stored and returned as given.
  Plain,
  /// Stored as `{<field>: value, timestamp}`; `get` returns the field.
  Field(&'static str),
  /// A two-way mapping: `set(a, b)` also stores `b → a` under the reverse kind.
  Mapping { reverse: Kind },
}

/// Every kind of key: `Generic` for the generic methods, the rest for domain methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
  Generic = 0,
  ConversationContext,
  ConversationSummary,
  ConversationHistory,
  PhoneToLead,
  LeadToPhone,
  DynamicLead,
  OrganizationData,
  AgentConfig,
  SseResponse,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
  pub kind: Kind,
  /// Name used for the `fallbackMaps` statistics.
  pub label: &'static str,
  pub getter: &'static str,
  pub setter: Option<&'static str>,
  /// The key's arguments, in call order, with their names for error messages.
  pub args: &'static [(&'static str, ArgRole)],
  /// Name of the setter's value argument.
  pub value_arg: &'static str,
  /// JSON of the value a setter uses when its value argument is omitted.
  pub value_default: Option<&'static str>,
  pub ttl: TtlName,
  /// Segment naming the kind inside the key.
  pub tag: &'static str,
  pub shape: Shape,
}

const ORG_PHONE: &[(&str, ArgRole)] = &[("orgId", ArgRole::Org), ("phone", ArgRole::Phone)];

pub const TABLE: &[Entry] = &[
  Entry {
    kind: Kind::ConversationContext,
    label: "conversationContexts",
    getter: "getConversationContext",
    setter: Some("setConversationContext"),
    args: ORG_PHONE,
    value_arg: "messages",
    value_default: None,
    ttl: TtlName::ConversationContext,
    tag: "ctx",
    shape: Shape::Plain,
  },
  Entry {
    kind: Kind::ConversationSummary,
    label: "conversationSummaries",
    getter: "getConversationSummary",
    setter: Some("setConversationSummary"),
    args: ORG_PHONE,
    value_arg: "summary",
    value_default: None,
    ttl: TtlName::ConversationSummary,
    tag: "summary",
    shape: Shape::Plain,
  },
  Entry {
    kind: Kind::ConversationHistory,
    label: "conversationHistory",
    getter: "getConversationHistoryCache",
    setter: Some("setConversationHistoryCache"),
    args: ORG_PHONE,
    value_arg: "messages",
    value_default: None,
    ttl: TtlName::ConversationHistory,
    tag: "history",
    shape: Shape::Plain,
  },
  Entry {
    kind: Kind::PhoneToLead,
    label: "phoneToLeadMapping",
    getter: "getPhoneToLeadMapping",
    setter: Some("setPhoneToLeadMapping"),
    args: &[("phone", ArgRole::Phone)],
    value_arg: "leadId",
    value_default: None,
    ttl: TtlName::LeadData,
    tag: "phone2lead",
    shape: Shape::Mapping { reverse: Kind::LeadToPhone },
  },
  Entry {
    kind: Kind::LeadToPhone,
    label: "leadToPhoneMapping",
    getter: "getLeadToPhoneMapping",
    setter: None,
    args: &[("leadId", ArgRole::Id)],
    value_arg: "phone",
    value_default: None,
    ttl: TtlName::LeadData,
    tag: "lead2phone",
    shape: Shape::Plain,
  },
  Entry {
    kind: Kind::DynamicLead,
    label: "dynamicLeads",
    getter: "getDynamicLead",
    setter: Some("setDynamicLead"),
    args: &[("leadId", ArgRole::Id)],
    value_arg: "lead",
    value_default: None,
    ttl: TtlName::LeadData,
    tag: "lead",
    shape: Shape::Plain,
  },
  Entry {
    kind: Kind::OrganizationData,
    label: "organizationData",
    getter: "getOrganizationData",
    setter: Some("setOrganizationData"),
    args: &[("orgId", ArgRole::Org)],
    value_arg: "name",
    value_default: None,
    ttl: TtlName::OrganizationData,
    tag: "orgdata",
    shape: Shape::Field("name"),
  },
  Entry {
    kind: Kind::AgentConfig,
    label: "agentConfigs",
    getter: "getAgentConfig",
    setter: Some("setAgentConfig"),
    args: &[("agentId", ArgRole::Id), ("agentPhone", ArgRole::Phone)],
    value_arg: "configured",
    value_default: Some("true"),
    ttl: TtlName::AgentConfig,
    tag: "agent",
    shape: Shape::Field("configured"),
  },
  Entry {
    kind: Kind::SseResponse,
    label: "sseResponses",
    getter: "getSSEResponseCache",
    setter: Some("setSSEResponseCache"),
    args: &[("leadId", ArgRole::Id), ("phone", ArgRole::Phone)],
    value_arg: "data",
    value_default: None,
    ttl: TtlName::SseResponse,
    tag: "sse",
    shape: Shape::Plain,
  },
];

impl Kind {
  pub fn from_u8(n: u8) -> Option<Kind> {
    if n == 0 {
      return Some(Kind::Generic);
    }
    TABLE.iter().map(|e| e.kind).find(|k| *k as u8 == n)
  }

  /// The table row of a domain kind (`None` for `Generic`).
  pub fn entry(self) -> Option<&'static Entry> {
    TABLE.iter().find(|e| e.kind == self)
  }

  /// A read of this kind answers the JSON its setter was given, as given
  /// (not a field of a wrapper): a generic key, a plain or a mapping kind.
  pub fn reads_as_written(self) -> bool {
    self.entry().is_none_or(|e| !matches!(e.shape, Shape::Field(_)))
  }

  /// How many string arguments make the key.
  pub fn arity(self) -> usize {
    self.entry().map_or(1, |e| e.args.len())
  }
}

/// Builds the Redis key of a domain entry from its arguments (`None` = a null org).
pub fn domain_key(keys: &KeySpace, entry: &Entry, args: &[Option<&str>]) -> Result<String, CacheError> {
  if args.len() != entry.args.len() {
    return Err(CacheError::new(
      ErrorKind::Internal,
      format!("{} takes {} key arguments", entry.getter, entry.args.len()),
    ));
  }
  let mut org: Option<Option<&str>> = None;
  let mut parts = Vec::with_capacity(args.len());
  for ((name, role), value) in entry.args.iter().zip(args) {
    match (role, value) {
      (ArgRole::Org, v) => org = Some(*v),
      (ArgRole::Phone, Some(phone)) => {
        let digits = phone_digits(phone);
        if digits.is_empty() {
          return Err(CacheError::new(
            ErrorKind::Type,
            format!("{name} must contain at least one digit, got {phone:?}"),
          ));
        }
        parts.push(digits);
      }
      (ArgRole::Id, Some(id)) => parts.push(escape_id(id)),
      (_, None) => return Err(CacheError::new(ErrorKind::Type, format!("{name} must be a string"))),
    }
  }
  Ok(match org {
    Some(org) => keys.scoped(org, entry.tag, &parts),
    None => keys.unscoped(entry.tag, &parts),
  })
}

/// The table as JavaScript sees it (to build the methods).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodSpec {
  pub kind: u8,
  pub getter: &'static str,
  pub setter: Option<&'static str>,
  pub args: Vec<(&'static str, ArgRole)>,
  pub value_arg: &'static str,
  pub value_default: Option<&'static str>,
  pub label: &'static str,
}

pub fn method_specs() -> Vec<MethodSpec> {
  TABLE
    .iter()
    .map(|e| MethodSpec {
      kind: e.kind as u8,
      getter: e.getter,
      setter: e.setter,
      args: e.args.to_vec(),
      value_arg: e.value_arg,
      value_default: e.value_default,
      label: e.label,
    })
    .collect()
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn kinds_round_trip_through_their_number() {
    for e in TABLE {
      assert_eq!(Kind::from_u8(e.kind as u8), Some(e.kind));
      assert!(TtlName::from_name(e.ttl.name()).is_some());
    }
    assert_eq!(Kind::from_u8(200), None);
  }

  #[test]
  fn keys_follow_the_layout() {
    let ks = KeySpace::new("p");
    let ctx = Kind::ConversationContext.entry().unwrap();
    assert_eq!(
      domain_key(&ks, ctx, &[Some("org 1"), Some("+1 (987) 654-321")]).unwrap(),
      "p:org:{org%201}:ctx:1987654321"
    );
    assert_eq!(domain_key(&ks, ctx, &[None, Some("+1987654321")]).unwrap(), "p:global:ctx:1987654321");
    let sse = Kind::SseResponse.entry().unwrap();
    assert_eq!(domain_key(&ks, sse, &[Some("l:1"), Some("555")]).unwrap(), "p:sse:l%3A1:555");
    let org = Kind::OrganizationData.entry().unwrap();
    assert_eq!(domain_key(&ks, org, &[Some("o")]).unwrap(), "p:org:{o}:orgdata");
    let e = domain_key(&ks, ctx, &[Some("o"), Some("no digits")]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Type);
    assert!(e.message.contains("phone"));
  }

  #[test]
  fn every_method_name_is_unique() {
    let mut names: Vec<_> = TABLE.iter().flat_map(|e| [Some(e.getter), e.setter]).flatten().collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(n, names.len());
  }
}
