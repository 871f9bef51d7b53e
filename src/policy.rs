//! The policy: what the rules do, which targets are allowed, which metadata is required.
//!
//! One YAML document. Keys left out keep their defaults (the embedded
//! [`DEFAULT_POLICY_YAML`]); unknown keys are errors, so a typo never switches a guard off.
//! Every error names the file, the line and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::finding::{Action, RuleId};
use crate::object::Kind;
use crate::target::{Cidr, HostPattern, TargetList};

/// The embedded default policy, as `extsvc-guard policy default` prints it.
pub mod cel;

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
        let mut path = String::new();
        let raw: RawPolicy = if text.trim().is_empty() {
            RawPolicy::default()
        } else {
            serde_saphyr::with_deserializer_from_str(text, |de| {
                serde_path_to_error::deserialize(de).map_err(|e| {
                    path = e.path().to_string();
                    e.into_inner()
                })
            })
            .map_err(|e| {
                let location = e.location();
                PolicyError {
                    file: file.to_owned(),
                    line: location.map(|l| l.line()),
                    column: location.map(|l| l.column()),
                    field: field_name(&path, text, location.map(|l| l.line())),
                    message: crate::manifest::yaml_error_message(&e),
                }
            })?
        };
        raw.validate(file)
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

/// The dotted path of the field at fault. serde cannot name map keys that are not plain
/// strings (`rules.?`): those are read off the offending line instead.
fn field_name(path: &str, text: &str, line: Option<u64>) -> String {
    if path == "." {
        return String::new();
    }
    if !path.contains('?') {
        return path.to_owned();
    }
    let key = line
        .and_then(|l| text.lines().nth(usize::try_from(l).ok()?.checked_sub(1)?))
        .and_then(|l| l.split_once(':'))
        .map(|(k, _)| {
            k.trim()
                .trim_start_matches("- ")
                .trim_matches(['"', '\''])
                .to_owned()
        })
        .filter(|k| !k.is_empty());
    match key {
        Some(k) => path.replacen('?', &k, 1),
        None => path.to_owned(),
    }
}

// ---- the file format, as written ------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct RawPolicy {
    rules: BTreeMap<RuleId, RuleAction>,
    exempt_namespaces: Vec<String>,
    exempt_subjects: Vec<RawSubject>,
    #[serde(rename = "clusterCIDRs")]
    cluster_cidrs: Vec<Spanned<String>>,
    targets: RawTargets,
    #[serde(rename = "externalIPs")]
    external_ips: RawExternalIps,
    required_metadata: RawRequiredMetadata,
    metadata_prefix: Spanned<String>,
    shape_metadata: bool,
    consumer_aware: bool,
    namespaces: Vec<RawNamespaceOverride>,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            rules: BTreeMap::new(),
            exempt_namespaces: vec!["kube-system".to_owned()],
            exempt_subjects: Vec::new(),
            cluster_cidrs: Vec::new(),
            targets: RawTargets::default(),
            external_ips: RawExternalIps::default(),
            required_metadata: RawRequiredMetadata::default(),
            metadata_prefix: unspanned("extsvc-guard.io".to_owned()),
            shape_metadata: true,
            consumer_aware: true,
            namespaces: Vec::new(),
        }
    }
}

fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(
        value,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTargets {
    deny: RawTargetList,
    allow: RawTargetList,
}

impl Default for RawTargets {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| unspanned((*x).to_owned())).collect();
        RawTargets {
            deny: RawTargetList {
                cidrs: s(&[
                    "0.0.0.0/8",
                    "127.0.0.0/8",
                    "::/128",
                    "::1/128",
                    "169.254.0.0/16",
                    "fe80::/10",
                    "224.0.0.0/4",
                    "ff00::/8",
                    "100.100.100.200/32",
                    "fd00:ec2::254/128",
                ]),
                hosts: s(&[
                    "localhost",
                    "*.localhost",
                    "metadata",
                    "metadata.google.internal",
                    "instance-data",
                    "instance-data.ec2.internal",
                ]),
            },
            allow: RawTargetList::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTargetList {
    cidrs: Vec<Spanned<String>>,
    hosts: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawExternalIps {
    allow: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRequiredMetadata {
    labels: Vec<RawRequiredKey>,
    annotations: Vec<RawRequiredKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRequiredKey {
    key: Spanned<String>,
    #[serde(default)]
    value: Option<Spanned<String>>,
    #[serde(default)]
    from_namespace_label: Option<Spanned<String>>,
    #[serde(default)]
    overwrite: bool,
    #[serde(default)]
    kinds: Option<Vec<RawKind>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum RawKind {
    Service,
    Endpoints,
    EndpointSlice,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct RawNamespaceOverride {
    names: Vec<String>,
    selector: Option<RawSelector>,
    rules: BTreeMap<RuleId, RuleAction>,
    targets: Option<RawNamespaceTargets>,
    exempt_subjects: Vec<RawSubject>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    kind: RawSubjectKind,
    name: Spanned<String>,
    #[serde(default)]
    namespace: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum RawSubjectKind {
    User,
    Group,
    ServiceAccount,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawNamespaceTargets {
    allow: RawTargetList,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct RawSelector {
    match_labels: BTreeMap<String, String>,
    match_expressions: Vec<RawRequirement>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    key: String,
    operator: SelectorOperator,
    #[serde(default)]
    values: Vec<String>,
}

/// Builds validation errors that point at a value's line.
struct Validator<'a> {
    file: &'a str,
}

impl Validator<'_> {
    fn error<T>(&self, at: Option<&Spanned<T>>, field: String, message: String) -> PolicyError {
        let location = at.map(|s| s.referenced).filter(|l| l.line() > 0);
        PolicyError {
            file: self.file.to_owned(),
            line: location.map(|l| l.line()),
            column: location.map(|l| l.column()),
            field,
            message,
        }
    }

    fn cidrs(&self, items: &[Spanned<String>], field: &str) -> Result<Vec<Cidr>, PolicyError> {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Cidr::parse(&s.value).map_err(|m| self.error(Some(s), format!("{field}[{i}]"), m))
            })
            .collect()
    }

    fn list(&self, raw: &RawTargetList, field: &str) -> Result<TargetList, PolicyError> {
        Ok(TargetList {
            cidrs: self.cidrs(&raw.cidrs, &format!("{field}.cidrs"))?,
            hosts: raw
                .hosts
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    HostPattern::parse(&s.value)
                        .map_err(|m| self.error(Some(s), format!("{field}.hosts[{i}]"), m))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    fn subjects(&self, raw: &[RawSubject], field: &str) -> Result<Vec<Subject>, PolicyError> {
        raw.iter()
            .enumerate()
            .map(|(i, r)| {
                let here = format!("{field}[{i}]");
                let name = r.name.value.trim();
                if name.is_empty() {
                    return Err(self.error(
                        Some(&r.name),
                        format!("{here}.name"),
                        "an exempt subject needs a name".into(),
                    ));
                }
                match (r.kind, &r.namespace) {
                    (RawSubjectKind::ServiceAccount, Some(ns)) if !ns.value.trim().is_empty() => {
                        Ok(Subject::ServiceAccount {
                            namespace: ns.value.trim().to_owned(),
                            name: name.to_owned(),
                        })
                    }
                    (RawSubjectKind::ServiceAccount, _) => Err(self.error(
                        Some(&r.name),
                        format!("{here}.namespace"),
                        "a ServiceAccount subject needs the namespace of the account".into(),
                    )),
                    (_, Some(ns)) => Err(self.error(
                        Some(ns),
                        format!("{here}.namespace"),
                        "only a ServiceAccount subject has a namespace (a User or Group is cluster-wide)"
                            .into(),
                    )),
                    (RawSubjectKind::User, None) => Ok(Subject::User(name.to_owned())),
                    (RawSubjectKind::Group, None) => Ok(Subject::Group(name.to_owned())),
                }
            })
            .collect()
    }

    fn required(
        &self,
        raw: &[RawRequiredKey],
        field: &str,
        labels: bool,
    ) -> Result<Vec<RequiredKey>, PolicyError> {
        raw.iter()
            .enumerate()
            .map(|(i, r)| {
                let here = format!("{field}[{i}]");
                if let Some(problem) = qualified_name_problem(&r.key.value) {
                    return Err(self.error(Some(&r.key), format!("{here}.key"), problem));
                }
                if let Some(problem) = reserved_prefix_problem(&r.key.value) {
                    return Err(self.error(Some(&r.key), format!("{here}.key"), problem));
                }
                let source = match (&r.value, &r.from_namespace_label) {
                    (Some(v), Some(_)) => {
                        return Err(self.error(
                            Some(v),
                            here,
                            "set either value or fromNamespaceLabel, not both".into(),
                        ));
                    }
                    (Some(v), None) => {
                        if labels && let Some(problem) = label_value_problem(&v.value) {
                            return Err(self.error(Some(v), format!("{here}.value"), problem));
                        }
                        ValueSource::Fixed(v.value.clone())
                    }
                    (None, Some(ns)) => {
                        if let Some(problem) = qualified_name_problem(&ns.value) {
                            return Err(self.error(
                                Some(ns),
                                format!("{here}.fromNamespaceLabel"),
                                problem,
                            ));
                        }
                        ValueSource::NamespaceLabel(ns.value.clone())
                    }
                    (None, None) => ValueSource::None,
                };
                let kinds = match &r.kinds {
                    Some(k) if k.is_empty() => {
                        return Err(self.error(
                            Some(&r.key),
                            format!("{here}.kinds"),
                            "an empty kinds list would require nothing; leave kinds out to mean all kinds".into(),
                        ));
                    }
                    Some(k) => k
                        .iter()
                        .map(|k| match k {
                            RawKind::Service => Kind::Service,
                            RawKind::Endpoints => Kind::Endpoints,
                            RawKind::EndpointSlice => Kind::EndpointSlice,
                        })
                        .collect(),
                    None => vec![Kind::Service, Kind::Endpoints, Kind::EndpointSlice],
                };
                Ok(RequiredKey {
                    key: r.key.value.clone(),
                    source,
                    overwrite: r.overwrite,
                    kinds,
                })
            })
            .collect()
    }
}

/// Keys under `kubernetes.io/` and `k8s.io/` (and their subdomains) belong to Kubernetes, and
/// some steer traffic: `kubernetes.io/service-name` decides which Service an EndpointSlice
/// serves, `endpointslice.kubernetes.io/managed-by` whether a controller owns it. A policy —
/// even a tampered one — must not make the mutating webhook write them.
fn reserved_prefix_problem(key: &str) -> Option<String> {
    let (prefix, _) = key.split_once('/')?;
    let prefix = prefix.to_ascii_lowercase();
    ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|r| prefix == *r || prefix.ends_with(&format!(".{r}")))
        .then(|| {
            format!(
                "the prefix {prefix:?} is reserved for Kubernetes (kubernetes.io, k8s.io and their subdomains); \
                 use your own, e.g. example.com/{}",
                key.split_once('/').map_or("", |(_, n)| n)
            )
        })
}

impl RawPolicy {
    fn validate(self, file: &str) -> Result<Policy, PolicyError> {
        let v = Validator { file };
        let prefix = &self.metadata_prefix;
        if let Some(problem) = dns_prefix_problem(&prefix.value)
            .or_else(|| reserved_prefix_problem(&format!("{}/x", prefix.value)))
        {
            return Err(v.error(Some(prefix), "metadataPrefix".into(), problem));
        }
        let namespaces = self
            .namespaces
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let here = format!("namespaces[{i}]");
                if o.names.is_empty() && o.selector.is_none() {
                    return Err(v.error::<()>(
                        None,
                        here,
                        "an override must select namespaces with names, selector, or both".into(),
                    ));
                }
                Ok(NamespaceOverride {
                    names: o.names.clone(),
                    selector: o.selector.as_ref().map(|s| NamespaceSelector {
                        match_labels: s.match_labels.clone(),
                        match_expressions: s
                            .match_expressions
                            .iter()
                            .map(|r| SelectorRequirement {
                                key: r.key.clone(),
                                operator: r.operator,
                                values: r.values.clone(),
                            })
                            .collect(),
                    }),
                    rules: o.rules.clone(),
                    allow: o
                        .targets
                        .as_ref()
                        .map(|t| v.list(&t.allow, &format!("{here}.targets.allow")))
                        .transpose()?,
                    exempt_subjects: v
                        .subjects(&o.exempt_subjects, &format!("{here}.exemptSubjects"))?,
                })
            })
            .collect::<Result<_, _>>()?;
        let mut rules: BTreeMap<RuleId, RuleAction> = RuleId::ALL
            .iter()
            .map(|&r| (r, r.default_action()))
            .collect();
        rules.extend(self.rules);
        Ok(Policy {
            rules,
            exempt_namespaces: self.exempt_namespaces,
            exempt_subjects: v.subjects(&self.exempt_subjects, "exemptSubjects")?,
            cluster_cidrs: v.cidrs(&self.cluster_cidrs, "clusterCIDRs")?,
            deny: v.list(&self.targets.deny, "targets.deny")?,
            allow: v.list(&self.targets.allow, "targets.allow")?,
            external_ips_allow: v.cidrs(&self.external_ips.allow, "externalIPs.allow")?,
            required: RequiredMetadata {
                labels: v.required(
                    &self.required_metadata.labels,
                    "requiredMetadata.labels",
                    true,
                )?,
                annotations: v.required(
                    &self.required_metadata.annotations,
                    "requiredMetadata.annotations",
                    false,
                )?,
            },
            metadata_prefix: self.metadata_prefix.value,
            shape_metadata: self.shape_metadata,
            consumer_aware: self.consumer_aware,
            namespaces,
        })
    }
}

/// A label or annotation key: `[prefix/]name`, name ≤ 63 characters of [A-Za-z0-9._-]
/// starting and ending alphanumeric, prefix a DNS subdomain.
pub fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && let Some(problem) = dns_prefix_problem(p)
    {
        return Some(format!("{key:?}: prefix {problem}"));
    }
    if name.is_empty() || name.len() > 63 {
        return Some(format!(
            "{key:?}: the name part must be 1 to 63 characters long"
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next())
        || !edge_ok(name.chars().last())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Some(format!(
            "{key:?} is not a valid label/annotation key: the name part may hold letters, digits, '-', '_' and '.', and must start and end with a letter or digit"
        ));
    }
    None
}

/// A label value: empty, or ≤ 63 characters of [A-Za-z0-9._-] starting and ending alphanumeric.
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if value.len() > 63
        || !edge_ok(value.chars().next())
        || !edge_ok(value.chars().last())
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Some(format!(
            "{value:?} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    None
}

fn dns_prefix_problem(prefix: &str) -> Option<String> {
    crate::target::dns_name_problem(prefix)
        .map(|p| {
            format!(
                "{prefix:?} must be a lower-case DNS subdomain: {}",
                p.what()
            )
        })
        .or_else(|| {
            prefix
                .ends_with('.')
                .then(|| format!("{prefix:?} must not end with a dot"))
        })
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
        assert_eq!(listed, catalogue);
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
