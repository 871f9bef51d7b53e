//! What the engine says about an object: findings, their rule ids and actions.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::object::ObjectRef;

pub use crate::rules::RuleId;

/// What happens to a finding. `Info` is not a violation: it tells what the mutating webhook
/// will add, so `check` can show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Info,
    Warn,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Info => "info",
            Action::Warn => "warn",
            Action::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How strongly a rule means a finding, before the policy has its say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A violation: takes the action the policy gives the rule (deny by default).
    Violation,
    /// Advice the rule cannot confirm (say, a partner object that may arrive later):
    /// at most a warning, whatever the policy says.
    Advisory,
    /// Not a problem: what the mutating webhook will do. Shown as info unless the rule is off.
    Note,
}

/// One thing the engine found about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: RuleId,
    pub action: Action,
    pub object: ObjectRef,
    /// Path of the field at fault, in the object's own terms: `subsets[0].ports[0].name`.
    pub field: String,
    /// One line: what is wrong and how to fix it.
    pub message: String,
}

/// Appends a map key to a field path the way findings and the manifest line index both
/// write it: `metadata.labels` + `team` → `metadata.labels.team`, but keys that are not plain
/// identifiers are quoted: `metadata.labels["kubernetes.io/service-name"]`.
pub fn field_key(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key:?}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_quote_keys_that_are_not_identifiers() {
        assert_eq!(field_key("", "metadata"), "metadata");
        assert_eq!(field_key("metadata", "labels"), "metadata.labels");
        assert_eq!(
            field_key("metadata.labels", "kubernetes.io/service-name"),
            "metadata.labels[\"kubernetes.io/service-name\"]"
        );
    }

    #[test]
    fn rule_ids_serialise_as_their_stable_strings() {
        for rule in RuleId::ALL {
            let json = serde_json::to_string(&rule).unwrap();
            assert_eq!(json, format!("{:?}", rule.as_str()));
        }
    }
}
