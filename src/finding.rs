//! What the engine says about an object: findings, their rule ids and actions.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::object::ObjectRef;

/// The stable rule ids of the catalogue (DESIGN.md). The string form is the contract:
/// it appears in denials, JSON, SARIF and the policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleId {
    EndpointsOrphaned,
    EndpointsliceUnlabeled,
    EndpointsOverwritten,
    ServiceNoEndpoints,
    PortNameMismatch,
    ExternalnameIp,
    ExternalnameInvalid,
    ExternalnameHostMismatch,
    HeadlessPortRemap,
    TargetDisallowed,
    RequiredMetadata,
}

impl RuleId {
    pub const ALL: [RuleId; 11] = [
        RuleId::EndpointsOrphaned,
        RuleId::EndpointsliceUnlabeled,
        RuleId::EndpointsOverwritten,
        RuleId::ServiceNoEndpoints,
        RuleId::PortNameMismatch,
        RuleId::ExternalnameIp,
        RuleId::ExternalnameInvalid,
        RuleId::ExternalnameHostMismatch,
        RuleId::HeadlessPortRemap,
        RuleId::TargetDisallowed,
        RuleId::RequiredMetadata,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::EndpointsOrphaned => "endpoints-orphaned",
            RuleId::EndpointsliceUnlabeled => "endpointslice-unlabeled",
            RuleId::EndpointsOverwritten => "endpoints-overwritten",
            RuleId::ServiceNoEndpoints => "service-no-endpoints",
            RuleId::PortNameMismatch => "port-name-mismatch",
            RuleId::ExternalnameIp => "externalname-ip",
            RuleId::ExternalnameInvalid => "externalname-invalid",
            RuleId::ExternalnameHostMismatch => "externalname-host-mismatch",
            RuleId::HeadlessPortRemap => "headless-port-remap",
            RuleId::TargetDisallowed => "target-disallowed",
            RuleId::RequiredMetadata => "required-metadata",
        }
    }

    /// The action a rule takes when the policy does not say otherwise.
    pub fn default_action(self) -> Action {
        match self {
            RuleId::ServiceNoEndpoints | RuleId::ExternalnameHostMismatch => Action::Warn,
            _ => Action::Deny,
        }
    }

    /// One line on what the rule catches: used in SARIF rule descriptors and `--help`-like listings.
    pub fn summary(self) -> &'static str {
        match self {
            RuleId::EndpointsOrphaned => {
                "Endpoints or EndpointSlice with no Service of that name in its namespace: it is never used"
            }
            RuleId::EndpointsliceUnlabeled => {
                "EndpointSlice without the kubernetes.io/service-name label: no Service ever uses it"
            }
            RuleId::EndpointsOverwritten => {
                "hand-written Endpoints/EndpointSlice for a Service with a selector: the control plane overwrites them"
            }
            RuleId::ServiceNoEndpoints => {
                "Service without selector and without Endpoints/EndpointSlice: it has no backends"
            }
            RuleId::PortNameMismatch => {
                "Endpoints/EndpointSlice port (name, protocol) that matches no Service port: kube-proxy pairs ports by name"
            }
            RuleId::ExternalnameIp => {
                "IP address in spec.externalName: cluster DNS cannot CNAME to an IP, the name never resolves"
            }
            RuleId::ExternalnameInvalid => {
                "spec.externalName that is not a DNS name (scheme, port, path, upper case, underscore, empty)"
            }
            RuleId::ExternalnameHostMismatch => {
                "ExternalName Service on HTTP(S) ports: clients send the Service name as Host/SNI, not the external host"
            }
            RuleId::HeadlessPortRemap => {
                "headless Service whose ports are remapped: clients dial the endpoint IPs on the Service port, nothing remaps it"
            }
            RuleId::TargetDisallowed => {
                "endpoint address, externalName host or externalIP that the policy does not allow as a target"
            }
            RuleId::RequiredMetadata => {
                "a label or annotation the policy requires is missing and nothing can supply it"
            }
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
