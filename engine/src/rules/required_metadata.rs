//! `required-metadata`: labels and annotations the policy requires on every Service that
//! leaves the cluster (ExternalName or selectorless) and every hand-written
//! Endpoints/EndpointSlice.
//!
//! What the mutating webhook can supply (a fixed value, or a namespace label that exists)
//! is reported as info — "will add" — and what nothing can supply is a violation. The
//! [`plan`] is shared with the mutating webhook, so `check` and `/mutate` never disagree.

use std::collections::BTreeMap;

use crate::cluster::{ClusterView, written_by_controller};
use crate::finding::{field_key};
use crate::object::{Object, ServiceShape};
use crate::policy::{Policy, RequiredKey, ValueSource, RuleAction};
use crate::rules::{Context, Draft, Mode};

pub const ID: &str = "required-metadata";
pub const SUMMARY: &str = "a label or annotation the policy requires is missing and nothing can supply it";
pub const DEFAULT: RuleAction = RuleAction::Deny;

/// Labels or annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMap {
    Labels,
    Annotations,
}

impl MetadataMap {
    pub fn field(self) -> &'static str {
        match self {
            MetadataMap::Labels => "metadata.labels",
            MetadataMap::Annotations => "metadata.annotations",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            MetadataMap::Labels => "label",
            MetadataMap::Annotations => "annotation",
        }
    }
}

/// What happens to one required key on one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Absent: the webhook adds it with this value.
    Add(String),
    /// Present with another value, and the policy says to overwrite.
    Replace { from: String, to: String },
    /// Absent and copied from a namespace label whose value is not known here.
    FromUnknownNamespace { label: String },
    /// Absent (or wrong) and nothing can supply it.
    Unsatisfiable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub map: MetadataMap,
    pub key: String,
    pub outcome: Outcome,
}

/// Whether the policy's required metadata applies to this object at all: Services that
/// leave the cluster, and endpoints no controller maintains.
pub fn applies_to(object: &Object, view: &dyn ClusterView) -> bool {
    match object {
        Object::Service(s) => ServiceShape::of(s) != ServiceShape::InCluster,
        _ => !written_by_controller(object, view),
    }
}

/// What the required-metadata policy asks of `object`; keys already satisfied are left out.
pub fn plan(
    object: &Object,
    view: &dyn ClusterView,
    policy: &Policy,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Vec<Planned> {
    if !applies_to(object, view) {
        return Vec::new();
    }
    let meta = object.metadata();
    let mut out = Vec::new();
    let maps = [
        (
            MetadataMap::Labels,
            &policy.required.labels,
            meta.labels.as_ref(),
        ),
        (
            MetadataMap::Annotations,
            &policy.required.annotations,
            meta.annotations.as_ref(),
        ),
    ];
    for (map, required, current) in maps {
        for req in required.iter().filter(|r| r.kinds.contains(&object.kind())) {
            let current = current.and_then(|m| m.get(&req.key));
            if let Some(outcome) = outcome(map, req, current, object.namespace(), namespace_labels)
            {
                out.push(Planned {
                    map,
                    key: req.key.clone(),
                    outcome,
                });
            }
        }
    }
    out
}

fn outcome(
    map: MetadataMap,
    req: &RequiredKey,
    current: Option<&String>,
    namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Option<Outcome> {
    let noun = map.noun();
    let key = &req.key;
    let wanted = match &req.source {
        ValueSource::None => {
            return current.is_none().then(|| {
                Outcome::Unsatisfiable(format!(
                    "{noun} {key} is required and nothing can supply it; add it under {} (ask the platform team which value applies)",
                    map.field()
                ))
            });
        }
        ValueSource::Fixed(v) => v.clone(),
        ValueSource::NamespaceLabel(label) => {
            if current.is_some() && !req.overwrite {
                return None;
            }
            match namespace_labels {
                None => {
                    return current.is_none().then(|| Outcome::FromUnknownNamespace {
                        label: label.clone(),
                    });
                }
                Some(labels) => match labels.get(label) {
                    Some(v) => v.clone(),
                    None if current.is_some() => return None,
                    None => {
                        return Some(Outcome::Unsatisfiable(format!(
                            "{noun} {key} is required and is copied from namespace label {label}, but namespace {namespace} has no label {label}; set {key} on this object, or label the namespace: kubectl label namespace {namespace} {label}=<value>"
                        )));
                    }
                },
            }
        }
    };
    match current {
        None => Some(Outcome::Add(wanted)),
        Some(v) if *v == wanted => None,
        Some(v) if req.overwrite => Some(Outcome::Replace {
            from: v.clone(),
            to: wanted,
        }),
        Some(v) => Some(Outcome::Unsatisfiable(format!(
            "{noun} {key} is {v:?} but the policy requires {wanted:?}; set it to {wanted:?}"
        ))),
    }
}

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    plan(object, cx.view, cx.policy.policy, cx.namespace_labels)
        .into_iter()
        .map(|p| {
            let field = field_key(p.map.field(), &p.key);
            let noun = p.map.noun();
            let key = &p.key;
            match p.outcome {
                Outcome::Add(value) => Draft::note(
                    field,
                    format!("the mutating webhook will add {noun} {key}: {value:?}"),
                ),
                Outcome::Replace { from, to } => Draft::note(
                    field,
                    format!("the mutating webhook will set {noun} {key} to {to:?} (was {from:?})"),
                ),
                Outcome::FromUnknownNamespace { label } => {
                    let message = format!(
                        "the mutating webhook will copy {noun} {key} from label {label} of namespace {} (its labels are not known here, so this is not verified)",
                        cx.namespace
                    );
                    match cx.mode {
                        Mode::Set => Draft::note(field, message),
                        Mode::Admission => Draft::advisory(field, message),
                    }
                }
                Outcome::Unsatisfiable(message) => Draft::violation(field, message),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::Mode;
    use crate::rules::testing::*;

    const POLICY: &str = r#"
requiredMetadata:
  labels:
    - key: owner
      value: platform
    - key: team
      fromNamespaceLabel: team
  annotations:
    - key: example.com/ticket
"#;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\n  namespace: payments\n  annotations: {example.com/ticket: OPS-1}\nspec:\n  type: ExternalName\n  externalName: db.example.com\n";

    #[test]
    fn what_mutation_can_supply_is_reported_as_info() {
        let set = format!(
            "{SERVICE}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: payments\n  labels: {{team: payments}}\n"
        );
        let findings = judge_set_with(&set, Some(POLICY), Mode::Set);
        let rm = of_rule(&findings, RuleId::RequiredMetadata);
        assert_eq!(rm.len(), 2, "{rm:#?}");
        assert!(rm.iter().all(|f| f.action == Action::Info), "{rm:#?}");
        assert!(
            rm[0].message.contains("will add label owner: \"platform\""),
            "{rm:#?}"
        );
        assert!(
            rm[1].message.contains("will add label team: \"payments\""),
            "{rm:#?}"
        );
    }

    #[test]
    fn what_nothing_can_supply_is_denied() {
        let set = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\n  namespace: payments\n  labels: {owner: platform}\nspec:\n  type: ExternalName\n  externalName: db.example.com\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: payments}\n";
        let findings = judge_set_with(set, Some(POLICY), Mode::Set);
        let denied: Vec<_> = of_rule(&findings, RuleId::RequiredMetadata)
            .into_iter()
            .filter(|f| f.action == Action::Deny)
            .collect();
        assert_eq!(denied.len(), 2, "{findings:#?}");
        assert!(
            denied[0]
                .message
                .contains("kubectl label namespace payments team=<value>"),
            "{denied:#?}"
        );
        assert_eq!(
            denied[1].field,
            "metadata.annotations[\"example.com/ticket\"]"
        );
    }

    #[test]
    fn a_namespace_missing_from_the_manifests_is_not_verified() {
        let findings = judge_set_with(SERVICE, Some(POLICY), Mode::Set);
        let team: Vec<_> = of_rule(&findings, RuleId::RequiredMetadata)
            .into_iter()
            .filter(|f| f.field == "metadata.labels.team")
            .collect();
        assert_eq!(team.len(), 1);
        assert_eq!(team[0].action, Action::Info);
        assert!(team[0].message.contains("not verified"));
    }

    #[test]
    fn a_wrong_fixed_value_is_denied_unless_overwrite_is_set() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\n  labels: {owner: someone}\nspec:\n  type: ExternalName\n  externalName: db.example.com\n";
        let strict = "requiredMetadata:\n  labels:\n    - {key: owner, value: platform}\n";
        let f = one(
            &judge_set_with(svc, Some(strict), Mode::Set),
            RuleId::RequiredMetadata,
            Action::Deny,
            "ext",
        );
        assert!(
            f.message.contains("set it to \"platform\""),
            "{}",
            f.message
        );
        let overwrite =
            "requiredMetadata:\n  labels:\n    - {key: owner, value: platform, overwrite: true}\n";
        one(
            &judge_set_with(svc, Some(overwrite), Mode::Set),
            RuleId::RequiredMetadata,
            Action::Info,
            "ext",
        );
    }

    #[test]
    fn in_cluster_services_are_not_asked_for_metadata() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n";
        let findings = judge_set_with(svc, Some(POLICY), Mode::Set);
        none(&findings, RuleId::RequiredMetadata);
    }

    #[test]
    fn present_metadata_passes() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\n  labels: {owner: platform, team: x}\n  annotations: {example.com/ticket: OPS-1}\nspec:\n  type: ExternalName\n  externalName: db.example.com\n";
        let findings = judge_set_with(svc, Some(POLICY), Mode::Set);
        assert!(findings.is_empty(), "{findings:#?}");
    }
}
