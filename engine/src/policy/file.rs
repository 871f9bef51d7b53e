//! The policy file as written: its YAML read into raw types (serde, every key optional,
//! unknown keys refused), then validated into a [`Policy`], each error naming the file, the
//! line and the field.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{
    NamespaceOverride, NamespaceSelector, Policy, PolicyError, RequiredKey, RequiredMetadata,
    RuleAction, SelectorOperator, SelectorRequirement, Subject, ValueSource,
};
use crate::finding::RuleId;
use crate::object::Kind;
use crate::target::{Cidr, HostPattern, TargetList};

/// Reads and validates policy text; `file` names it in errors.
pub(super) fn read(text: &str, file: &str) -> Result<Policy, PolicyError> {
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
                message: yaml_error_message(&e),
            }
        })?
    };
    raw.validate(file)
}

/// The message of a YAML/serde error without serde-saphyr's " at line L column C" suffix:
/// callers report the location themselves (manifests and policy files alike).
pub fn yaml_error_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
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
            shape_metadata: false,
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
