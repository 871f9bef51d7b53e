//! The policy: what the rules do, which targets are allowed, which metadata is required.
//!
//! One YAML document. Keys left out keep their defaults (the embedded
//! [`DEFAULT_POLICY_YAML`]); unknown keys are errors, so a typo never switches a guard off.
//! Every error names the file, the line and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::finding::{Action, RuleId};
use crate::object::Kind;
use crate::target::{Cidr, TargetList};

pub mod cel;
mod file;

pub use file::{label_value_problem, qualified_name_problem, yaml_error_message};

/// The embedded default policy, as `extsvc-guard policy default` prints it.
pub const DEFAULT_POLICY_YAML: &str = include_str!("policy/default.yaml");

/// What the policy makes a rule do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Deny,
    Warn,
    Off,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Deny => "deny",
            RuleAction::Warn => "warn",
            RuleAction::Off => "off",
        }
    }

    pub fn action(self) -> Option<Action> {
        match self {
            RuleAction::Deny => Some(Action::Deny),
            RuleAction::Warn => Some(Action::Warn),
            RuleAction::Off => None,
        }
    }
}

/// An invalid policy: where, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid policy {}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if !self.field.is_empty() {
            write!(f, ": field {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

/// A required label or annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredKey {
    pub key: String,
    pub source: ValueSource,
    /// Replace a value the user set (only meaningful with a source).
    pub overwrite: bool,
    /// The kinds it applies to.
    pub kinds: Vec<Kind>,
}

/// Where the mutating webhook takes a required value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// Nothing: the writer of the object must set it.
    None,
    Fixed(String),
    NamespaceLabel(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredMetadata {
    pub labels: Vec<RequiredKey>,
    pub annotations: Vec<RequiredKey>,
}

/// A label selector over namespace labels, as Kubernetes writes one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<SelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl NamespaceSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// A writer whose writes are never judged or patched, written as an RBAC subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    Group(String),
    ServiceAccount { namespace: String, name: String },
}

impl Subject {
    /// Whether a request by `username`, member of `groups`, is this subject's.
    pub fn matches(&self, username: &str, groups: &[String]) -> bool {
        match self {
            Subject::User(name) => username == name,
            Subject::Group(name) => groups.iter().any(|g| g == name),
            Subject::ServiceAccount { namespace, name } => username
                .strip_prefix("system:serviceaccount:")
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(ns, n)| ns == namespace && n == name),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(name) => write!(f, "User {name}"),
            Subject::Group(name) => write!(f, "Group {name}"),
            Subject::ServiceAccount { namespace, name } => {
                write!(f, "ServiceAccount {namespace}/{name}")
            }
        }
    }
}

/// Overrides for the namespaces it selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceOverride {
    pub names: Vec<String>,
    pub selector: Option<NamespaceSelector>,
    pub rules: BTreeMap<RuleId, RuleAction>,
    pub allow: Option<TargetList>,
    pub exempt_subjects: Vec<Subject>,
}

impl NamespaceOverride {
    /// Selected by name, or by labels when the namespace's labels are known.
    fn selects(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        let by_name = self.names.iter().any(|n| n == namespace);
        let by_labels = match (&self.selector, labels) {
            (Some(sel), Some(labels)) => sel.matches(labels),
            _ => false,
        };
        by_name || by_labels
    }
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: BTreeMap<RuleId, RuleAction>,
    pub exempt_namespaces: Vec<String>,
    /// Writers never judged or patched, in every namespace.
    pub exempt_subjects: Vec<Subject>,
    pub cluster_cidrs: Vec<Cidr>,
    pub deny: TargetList,
    pub allow: TargetList,
    pub external_ips_allow: Vec<Cidr>,
    pub required: RequiredMetadata,
    pub metadata_prefix: String,
    /// Whether `/mutate` sets `<prefix>/shape` and `<prefix>/target` on Services that leave
    /// the cluster.
    pub shape_metadata: bool,
    /// Whether findings that hold for DNS clients only become warnings when the Service has
    /// other consumers (external-dns, Ingresses, Gateway API routes).
    pub consumer_aware: bool,
    pub namespaces: Vec<NamespaceOverride>,
}

/// The policy as it applies in one namespace.
#[derive(Debug, Clone)]
pub struct NamespacePolicy<'a> {
    pub policy: &'a Policy,
    actions: BTreeMap<RuleId, RuleAction>,
    pub allow: &'a TargetList,
    pub exempt: bool,
    /// Writers never judged or patched here: the policy's and the selecting overrides'.
    pub exempt_subjects: Vec<&'a Subject>,
}

impl NamespacePolicy<'_> {
    /// The exempt subject a request by `username`, member of `groups`, is, if any.
    pub fn exempt_writer(&self, username: &str, groups: &[String]) -> Option<&Subject> {
        self.exempt_subjects
            .iter()
            .copied()
            .find(|s| s.matches(username, groups))
    }

    /// The action the policy gives `rule` here; `None` when the rule is off.
    pub fn action(&self, rule: RuleId) -> Option<Action> {
        self.actions
            .get(&rule)
            .copied()
            .map_or(rule.default_action().action(), RuleAction::action)
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::embedded()
    }
}

impl Policy {
    /// The embedded default policy.
    pub fn embedded() -> Policy {
        match Policy::from_yaml(DEFAULT_POLICY_YAML, "<embedded default policy>") {
            Ok(policy) => policy,
            // The embedded file is part of the build and tested; this cannot be reached
            // unless the binary was built from a broken tree.
            Err(e) => panic!("the embedded default policy is invalid: {e}"),
        }
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: file.clone(),
            line: None,
            column: None,
            field: String::new(),
            message: format!("cannot read it: {e}"),
        })?;
        Policy::from_yaml(&text, &file)
    }

    /// Parses and validates policy text; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Policy, PolicyError> {
        file::read(text, file)
    }

    /// Whether which policy applies in a namespace, or what is written into objects there,
    /// depends on the namespace's labels.
    pub fn selects_namespaces_by_label(&self) -> bool {
        self.namespaces.iter().any(|o| o.selector.is_some())
            || self
                .required
                .labels
                .iter()
                .chain(&self.required.annotations)
                .any(|k| matches!(k.source, ValueSource::NamespaceLabel(_)))
    }

    /// The policy as it applies in `namespace`, whose labels the caller knows or not.
    pub fn for_namespace<'a>(
        &'a self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> NamespacePolicy<'a> {
        let mut actions = self.rules.clone();
        let mut allow = &self.allow;
        let mut exempt_subjects: Vec<&Subject> = self.exempt_subjects.iter().collect();
        for o in self
            .namespaces
            .iter()
            .filter(|o| o.selects(namespace, labels))
        {
            actions.extend(o.rules.iter().map(|(k, v)| (*k, *v)));
            if let Some(a) = &o.allow {
                allow = a;
            }
            exempt_subjects.extend(&o.exempt_subjects);
        }
        NamespacePolicy {
            policy: self,
            actions,
            allow,
            exempt: self.exempt_namespaces.iter().any(|n| n == namespace),
            exempt_subjects,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_parses_and_equals_an_empty_policy() {
        let embedded = Policy::from_yaml(DEFAULT_POLICY_YAML, "default.yaml").unwrap();
        let empty = Policy::from_yaml("", "empty.yaml").unwrap();
        assert_eq!(embedded, empty);
        let every_rule_listed: Vec<RuleId> = embedded.rules.keys().copied().collect();
        assert_eq!(every_rule_listed, RuleId::ALL.to_vec());
        for (rule, action) in &embedded.rules {
            assert_eq!(*action, rule.default_action(), "{rule}");
        }
    }

    #[test]
    fn the_default_policy_text_lists_every_rule_of_the_catalogue_with_its_default_action() {
        let listed: Vec<(String, String)> = DEFAULT_POLICY_YAML
            .lines()
            .skip_while(|l| *l != "rules:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| {
                let (id, rest) = l.trim().split_once(':')?;
                let action = rest.split('#').next()?.trim();
                Some((id.to_owned(), action.to_owned()))
            })
            .collect();
        let catalogue: Vec<(String, String)> = RuleId::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str().to_owned(),
                    r.default_action().as_str().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            listed, catalogue,
            "engine/src/policy/default.yaml must list every rule of the catalogue under `rules:`, \
             in catalogue order, as `  <id>: <default action>` (then copy the file to \
             deploy/base/policy.yaml and the README's default policy block)"
        );
    }

    #[test]
    fn exempt_subjects_are_read_as_rbac_subjects_and_mistakes_name_line_and_field() {
        let p = Policy::from_yaml(
            "exemptSubjects:\n  - {kind: ServiceAccount, namespace: databases, name: patroni}\n  - {kind: User, name: ci}\n",
            "p.yaml",
        )
        .unwrap();
        assert_eq!(
            p.exempt_subjects,
            vec![
                Subject::ServiceAccount {
                    namespace: "databases".into(),
                    name: "patroni".into()
                },
                Subject::User("ci".into())
            ]
        );
        for (text, line, field, says) in [
            (
                "exemptSubjects:\n  - {kind: ServiceAccount, name: patroni}\n",
                2,
                "exemptSubjects[0].namespace",
                "needs the namespace",
            ),
            (
                "exemptSubjects:\n  - {kind: User, name: bob, namespace: x}\n",
                2,
                "exemptSubjects[0].namespace",
                "only a ServiceAccount",
            ),
            (
                "exemptSubjects:\n  - {kind: Robot, name: r2}\n",
                2,
                "exemptSubjects[0].kind",
                "unknown variant",
            ),
            (
                "namespaces:\n  - names: [a]\n    exemptSubjects:\n      - {kind: Group, name: ''}\n",
                4,
                "namespaces[0].exemptSubjects[0].name",
                "needs a name",
            ),
        ] {
            let err = Policy::from_yaml(text, "p.yaml").unwrap_err();
            assert_eq!(err.line, Some(line), "{err}");
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn left_out_keys_keep_their_defaults() {
        let p = Policy::from_yaml("clusterCIDRs: [10.96.0.0/12]\n", "p.yaml").unwrap();
        assert_eq!(p.deny, Policy::embedded().deny);
        assert_eq!(p.cluster_cidrs.len(), 1);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_line_and_field() {
        let err = Policy::from_yaml(
            "rules:\n  port-name-mismatch: warn\ntargets:\n  denny: {}\n",
            "p.yaml",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.message.contains("denny"), "{err}");
        assert_eq!(err.field, "targets.denny", "{err}");
    }

    #[test]
    fn an_unknown_rule_id_is_an_error() {
        let err = Policy::from_yaml("rules:\n  endpoint-orphaned: warn\n", "p.yaml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("endpoint-orphaned"), "{err}");
    }

    #[test]
    fn an_unknown_action_is_an_error() {
        let err = Policy::from_yaml("rules:\n  port-name-mismatch: block\n", "p.yaml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert_eq!(err.field, "rules.port-name-mismatch", "{err}");
    }

    #[test]
    fn a_bad_cidr_names_its_field_and_line() {
        let err = Policy::from_yaml(
            "clusterCIDRs:\n  - 10.0.0.0/8\n  - 10.96.0.1/12\n",
            "p.yaml",
        )
        .unwrap_err();
        assert_eq!(err.field, "clusterCIDRs[1]");
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("10.96.0.0/12"), "{err}");
        let text = err.to_string();
        assert!(text.starts_with("invalid policy p.yaml:3:"), "{text}");
    }

    #[test]
    fn kubernetes_reserved_keys_cannot_be_required_nor_used_as_the_prefix() {
        let err = Policy::from_yaml(
            "requiredMetadata:\n  labels:\n    - key: kubernetes.io/service-name\n      value: payments\n      overwrite: true\n",
            "p.yaml",
        )
        .unwrap_err();
        assert_eq!(err.field, "requiredMetadata.labels[0].key", "{err}");
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("reserved for Kubernetes"), "{err}");
        let err = Policy::from_yaml(
            "requiredMetadata:\n  annotations:\n    - key: endpointslice.Kubernetes.io/managed-by\n      value: me\n",
            "p.yaml",
        )
        .unwrap_err();
        assert_eq!(err.field, "requiredMetadata.annotations[0].key", "{err}");
        let err = Policy::from_yaml("metadataPrefix: service.k8s.io\n", "p.yaml").unwrap_err();
        assert_eq!(err.field, "metadataPrefix", "{err}");
        assert!(
            Policy::from_yaml(
                "requiredMetadata:\n  labels:\n    - key: notkubernetes.io/team\n      value: a\n",
                "p.yaml"
            )
            .is_ok(),
            "only the domain and its subdomains are reserved"
        );
    }

    #[test]
    fn a_required_key_with_both_sources_is_refused() {
        let err = Policy::from_yaml(
            "requiredMetadata:\n  labels:\n    - key: team\n      value: a\n      fromNamespaceLabel: team\n",
            "p.yaml",
        )
        .unwrap_err();
        assert_eq!(err.field, "requiredMetadata.labels[0]");
        assert_eq!(err.line, Some(4));
    }

    #[test]
    fn namespace_overrides_apply_in_order_by_name_and_labels() {
        let p = Policy::from_yaml(
            "namespaces:\n  - names: [legacy]\n    rules: {port-name-mismatch: warn}\n  - selector: {matchLabels: {tier: lax}}\n    rules: {port-name-mismatch: off}\n",
            "p.yaml",
        )
        .unwrap();
        assert_eq!(
            p.for_namespace("legacy", None)
                .action(RuleId::PortNameMismatch),
            Some(Action::Warn)
        );
        let lax: BTreeMap<String, String> = [("tier".to_owned(), "lax".to_owned())].into();
        assert_eq!(
            p.for_namespace("legacy", Some(&lax))
                .action(RuleId::PortNameMismatch),
            None
        );
        assert_eq!(
            p.for_namespace("other", None)
                .action(RuleId::PortNameMismatch),
            Some(Action::Deny)
        );
    }

    #[test]
    fn selector_expressions_follow_kubernetes_semantics() {
        let sel = NamespaceSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![
                SelectorRequirement {
                    key: "env".into(),
                    operator: SelectorOperator::In,
                    values: vec!["prod".into()],
                },
                SelectorRequirement {
                    key: "legacy".into(),
                    operator: SelectorOperator::DoesNotExist,
                    values: vec![],
                },
            ],
        };
        let mut labels: BTreeMap<String, String> = [("env".to_owned(), "prod".to_owned())].into();
        assert!(sel.matches(&labels));
        labels.insert("legacy".into(), "yes".into());
        assert!(!sel.matches(&labels));
    }

    #[test]
    fn qualified_names_are_checked() {
        assert!(qualified_name_problem("team").is_none());
        assert!(qualified_name_problem("example.com/team").is_none());
        assert!(qualified_name_problem("Example.com/team").is_some());
        assert!(qualified_name_problem("-team").is_some());
        assert!(qualified_name_problem("").is_some());
    }
}
