//! The policy as CEL for the webhook configurations' `matchConditions`: the writes the API
//! server can tell, without calling the webhook, that the webhook would allow untouched —
//! no denial, no warning, no patch. Each skipped call saves a round trip on the write path;
//! the conditions call the webhook for everything else, so skipping never changes an answer
//! (tests/offline/admission_fixtures.rs (`match_conditions`) evaluates them on every captured review).
//!
//! A webhook is called when *all* its conditions are true, so each condition here says
//! "this write may need the webhook".

use crate::admission::{CONTROL_PLANE_USER_PREFIX, CONTROL_PLANE_USERS, JUDGED};
use crate::object::Kind;
use crate::policy::{Policy, RequiredKey, Subject, ValueSource};

/// One entry of a webhook's `matchConditions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub name: &'static str,
    pub expression: String,
}

/// The conditions of the validating webhook (`/validate`) for `policy`.
pub fn validating(policy: &Policy) -> Vec<Condition> {
    let mut conditions = common(policy);
    conditions.push(Condition {
        name: "may-be-judged",
        expression: may_be_judged(),
    });
    conditions
}

/// The conditions of the mutating webhook (`/mutate`) for `policy`.
pub fn mutating(policy: &Policy) -> Vec<Condition> {
    let mut conditions = common(policy);
    conditions.push(Condition {
        name: "may-be-patched",
        expression: may_be_patched(policy),
    });
    conditions
}

/// A resource the webhooks may be registered for: an entry of [`JUDGED`] (API group,
/// version, kind, resource).
pub type Resource = (&'static str, &'static str, Kind, &'static str);

/// The resources the mutating webhook is registered for: those `policy` may patch.
/// Services when it sets the shape metadata or requires metadata it can supply of them;
/// Endpoints and EndpointSlices when it requires such metadata of them. Every webhook
/// registered for a write costs the API server the evaluation of its conditions, even when
/// they keep the write from the webhook (docs/performance.md, section 8), so the mutating
/// webhook is not registered for what it never patches.
pub fn mutated_resources(policy: &Policy) -> Vec<&'static Resource> {
    JUDGED
        .iter()
        .filter(|(_, _, kind, _)| {
            (*kind == Kind::Service && policy.shape_metadata)
                || supplied(policy, *kind).next().is_some()
        })
        .collect()
}

/// The required keys of `kind` the mutating webhook can supply (a fixed value, a namespace
/// label), with the map they belong in. A key with no value to supply is the validating
/// webhook's to deny, never patched.
fn supplied(policy: &Policy, kind: Kind) -> impl Iterator<Item = (&'static str, &RequiredKey)> {
    [
        ("labels", &policy.required.labels),
        ("annotations", &policy.required.annotations),
    ]
    .into_iter()
    .flat_map(|(map, keys)| keys.iter().map(move |key| (map, key)))
    .filter(move |(_, key)| key.kinds.contains(&kind) && key.source != ValueSource::None)
}

/// `resources` as the YAML flow list of a webhook's `rules` for `operations`, one rule per
/// API group.
pub fn rules_yaml(resources: &[&Resource], operations: &[&str]) -> String {
    let mut groups: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for (group, version, _, resource) in resources {
        match groups
            .iter_mut()
            .find(|(g, v, _)| g == group && v == version)
        {
            Some((_, _, names)) => names.push(resource),
            None => groups.push((group, version, vec![resource])),
        }
    }
    let rules: Vec<String> = groups
        .iter()
        .map(|(group, version, names)| {
            format!(
                "{{apiGroups: [\"{group}\"], apiVersions: [{version}], resources: [{}], operations: [{}], scope: \"*\"}}",
                names.join(", "),
                operations.join(", ")
            )
        })
        .collect();
    format!("[{}]", rules.join(", "))
}

/// The operations the mutating webhook is registered for.
pub const MUTATED_OPERATIONS: [&str; 2] = ["CREATE", "UPDATE"];

/// What both webhooks leave alone: the control plane's writers, the policy's exempt
/// subjects and exempt namespaces.
fn common(policy: &Policy) -> Vec<Condition> {
    let users = CONTROL_PLANE_USERS
        .iter()
        .map(|u| format!("    {}", quoted(u)))
        .collect::<Vec<_>>()
        .join(",\n");
    let mut conditions = vec![Condition {
        name: "not-the-control-plane",
        expression: format!(
            "!(request.userInfo.username in [\n{users}]\n  || request.userInfo.username.startsWith({}))",
            quoted(CONTROL_PLANE_USER_PREFIX)
        ),
    }];
    if let Some(expression) = exempt_subjects_condition(policy) {
        conditions.push(Condition {
            name: EXEMPT_SUBJECTS_CONDITION,
            expression,
        });
    }
    if !policy.exempt_namespaces.is_empty() {
        conditions.push(Condition {
            name: "not-an-exempt-namespace",
            expression: format!(
                "!(request.namespace in [{}])",
                list(&policy.exempt_namespaces)
            ),
        });
    }
    conditions
}

/// A Service with a selector, neither ExternalName nor with externalIPs, and not a headless
/// one whose targetPort differs from its port, that already had a selector before this
/// UPDATE: no rule finds anything in it (its endpoints are the controllers'; a selector
/// added over hand-written endpoints is judged on the write that adds it, and a CREATE may
/// be that write). A DELETE is only ever answered with a warning for a selectorless Service
/// that is not an ExternalName, which leaves hand-written EndpointSlices behind.
fn may_be_judged() -> String {
    format!(
        "request.operation == 'DELETE'\n  ? request.resource.resource == 'services' && !({})\n    && (!has(oldObject.spec.type) || oldObject.spec.type != 'ExternalName')\n  : !(request.resource.resource == 'services' && request.operation == 'UPDATE'\n      && {} && {}\n      && (!has(object.spec.type) || object.spec.type != 'ExternalName')\n      && (!has(object.spec.externalIPs) || size(object.spec.externalIPs) == 0)\n      && (!has(object.spec.clusterIP) || object.spec.clusterIP != 'None' || !has(object.spec.ports)\n          || object.spec.ports.all(p, !has(p.targetPort) || p.targetPort == p.port)))",
        selector("oldObject"),
        selector("object"),
        selector("oldObject"),
    )
}

/// `<of>` has a non-empty selector.
fn selector(of: &str) -> String {
    format!("(has({of}.spec.selector) && size({of}.spec.selector) > 0)")
}

/// Writes the mutating webhook may patch: with the shape metadata, the Services that leave
/// the cluster (or carry extsvc-guard's own keys to remove), unless everything it would set
/// is already set; the Services that leave it and Endpoints/EndpointSlices lacking required
/// metadata the policy can supply of them; with neither, none (`false`).
fn may_be_patched(policy: &Policy) -> String {
    let shape_key = format!("{}/shape", policy.metadata_prefix);
    let target_key = format!("{}/target", policy.metadata_prefix);
    // For each key the webhook supplies: the object already has it (with the value, when
    // the policy overwrites). A value copied from a namespace label and overwritten is never
    // known to be right: the conditions do not see namespace labels.
    let required = |kind: Kind| -> Vec<String> {
        supplied(policy, kind)
            .map(|(map, key)| {
                let has = format!(
                    "(has(object.metadata.{map}) && {} in object.metadata.{map})",
                    quoted(&key.key)
                );
                match (&key.source, key.overwrite) {
                    (ValueSource::Fixed(value), true) => format!(
                        "({has} && object.metadata.{map}[{}] == {})",
                        quoted(&key.key),
                        quoted(value)
                    ),
                    (ValueSource::NamespaceLabel(_), true) => "false".to_owned(),
                    _ => has,
                }
            })
            .collect()
    };
    let mut clauses = vec![];
    // Leaving the cluster: ExternalName, or no selector.
    let leaves = format!(
        "((has(object.spec.type) && object.spec.type == 'ExternalName') || !{})",
        selector("object")
    );
    let service_required = required(Kind::Service);
    if policy.shape_metadata {
        let carries_ours = format!(
            "(has(object.metadata.labels) && {shape} in object.metadata.labels) || (has(object.metadata.annotations) && {target} in object.metadata.annotations)",
            shape = quoted(&shape_key),
            target = quoted(&target_key)
        );
        // ExternalName with the shape label and the target annotation already right; any
        // other Service that leaves the cluster may need its target recomputed from its
        // endpoints.
        let mut settled = vec![format!(
            "has(object.spec.type) && object.spec.type == 'ExternalName' && has(object.spec.externalName)\n      && has(object.metadata.labels) && {shape} in object.metadata.labels && object.metadata.labels[{shape}] == 'external-name'\n      && has(object.metadata.annotations) && {target} in object.metadata.annotations\n      && (object.metadata.annotations[{target}] == object.spec.externalName || object.metadata.annotations[{target}] + '.' == object.spec.externalName)",
            shape = quoted(&shape_key),
            target = quoted(&target_key)
        )];
        settled.extend(service_required);
        // A Service that no longer leaves the cluster loses our keys.
        clauses.push(format!(
            "request.resource.resource == 'services'\n  && ({leaves} && !({})\n      || !{leaves} && ({carries_ours}))",
            settled.join("\n      && ")
        ));
    } else if !service_required.is_empty() {
        clauses.push(format!(
            "request.resource.resource == 'services'\n  && {leaves} && !({})",
            service_required.join("\n      && ")
        ));
    }
    for (kind, resource) in [
        (Kind::Endpoints, "endpoints"),
        (Kind::EndpointSlice, "endpointslices"),
    ] {
        let needed = required(kind);
        if !needed.is_empty() {
            clauses.push(format!(
                "request.resource.resource == '{resource}' && !({})",
                needed.join(" && ")
            ));
        }
    }
    if clauses.is_empty() {
        // Nothing to patch; the webhook's rules register it for nothing either.
        return "false".to_owned();
    }
    clauses.join("\n  || ")
}

/// The name of the exempt-subjects condition.
pub const EXEMPT_SUBJECTS_CONDITION: &str = "not-an-exempt-subject";

/// A CEL expression true for requests that are not by an exempt subject of `policy`, or
/// `None` when it exempts nobody. Exemptions of overrides that select namespaces by name
/// apply in those namespaces; those selected only by labels cannot be written in CEL (a
/// webhook's conditions do not see namespace labels) and stay the server's to apply.
pub fn exempt_subjects_condition(policy: &Policy) -> Option<String> {
    let mut exempt: Vec<String> = policy.exempt_subjects.iter().map(subject).collect();
    for o in &policy.namespaces {
        if o.exempt_subjects.is_empty() || o.names.is_empty() {
            continue;
        }
        let subjects = o
            .exempt_subjects
            .iter()
            .map(subject)
            .collect::<Vec<_>>()
            .join(" || ");
        exempt.push(format!(
            "(request.namespace in [{}] && ({subjects}))",
            list(&o.names)
        ));
    }
    (!exempt.is_empty()).then(|| format!("!({})", exempt.join(" || ")))
}

/// Whether some override exempts subjects in namespaces it selects by labels only, which
/// the conditions cannot express.
pub fn label_selected_exemptions(policy: &Policy) -> bool {
    policy
        .namespaces
        .iter()
        .any(|o| !o.exempt_subjects.is_empty() && o.names.is_empty())
}

fn subject(subject: &Subject) -> String {
    match subject {
        Subject::User(name) => format!("request.userInfo.username == {}", quoted(name)),
        Subject::Group(name) => format!(
            "(has(request.userInfo.groups) && {} in request.userInfo.groups)",
            quoted(name)
        ),
        Subject::ServiceAccount { namespace, name } => format!(
            "request.userInfo.username == {}",
            quoted(&format!("system:serviceaccount:{namespace}:{name}"))
        ),
    }
}

/// `'a', 'b'`.
fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| quoted(i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A CEL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `conditions` as the YAML of a `matchConditions` list, indented by `indent` spaces, each
/// expression a literal block.
pub fn conditions_yaml(conditions: &[Condition], indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    for c in conditions {
        out.push_str(&format!("{pad}- name: {}\n{pad}  expression: |-\n", c.name));
        for line in c.expression.lines() {
            out.push_str(&format!("{pad}    {line}\n"));
        }
    }
    out
}

/// A kustomize Component that puts the conditions `policy` needs into both webhook
/// configurations of `deploy/`, and registers the mutating webhook for what `policy` may
/// patch: save it as `<dir>/kustomization.yaml` and list `<dir>` under `components:` in
/// your overlay.
pub fn kustomize_component(policy: &Policy, source: &str) -> String {
    let mut out = format!(
        "# matchConditions for {source}, generated by `extsvc-guard policy match-conditions`:\n\
         # the API server calls the webhooks only for the writes this policy may deny, warn about\n\
         # or patch, and the mutating webhook only for the resources it may patch.\n\
         # Generate it again whenever the policy changes.\n"
    );
    if label_selected_exemptions(policy) {
        out.push_str(
            "# Exempt subjects of overrides that select namespaces only by labels are not here (a\n\
             # webhook's conditions do not see namespace labels): the server still exempts their\n\
             # writes, but they wait on it.\n",
        );
    }
    out.push_str("apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\npatches:\n");
    for (kind, conditions) in [
        ("ValidatingWebhookConfiguration", validating(policy)),
        ("MutatingWebhookConfiguration", mutating(policy)),
    ] {
        out.push_str(&format!(
            "  - target:\n      kind: {kind}\n      name: extsvc-guard\n    patch: |-\n      - op: replace\n        path: /webhooks/0/matchConditions\n        value:\n"
        ));
        out.push_str(&conditions_yaml(&conditions, 10));
        if kind == "MutatingWebhookConfiguration" {
            // `add` sets the member whether or not it is there: the API server leaves an
            // empty `rules` out of what it stores, so a configuration read back has none.
            out.push_str(&format!(
                "      - op: add\n        path: /webhooks/0/rules\n        value: {}\n",
                rules_yaml(&mutated_resources(policy), &MUTATED_OPERATIONS)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        Policy::from_yaml(yaml, "p.yaml").unwrap()
    }

    #[test]
    fn exempt_subjects_become_one_condition_on_the_requests_user() {
        let p = policy(
            "exemptSubjects:\n  - {kind: ServiceAccount, namespace: databases, name: patroni}\n  - {kind: Group, name: 'platform:mirrors'}\n  - {kind: User, name: ci-deployer}\n",
        );
        assert_eq!(
            exempt_subjects_condition(&p).unwrap(),
            "!(request.userInfo.username == 'system:serviceaccount:databases:patroni' || (has(request.userInfo.groups) && 'platform:mirrors' in request.userInfo.groups) || request.userInfo.username == 'ci-deployer')"
        );
        let names: Vec<&str> = validating(&p).iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "not-the-control-plane",
                "not-an-exempt-subject",
                "not-an-exempt-namespace",
                "may-be-judged"
            ]
        );
    }

    #[test]
    fn an_override_exempts_only_in_the_namespaces_it_names() {
        let p = policy(
            "namespaces:\n  - names: [legacy, old]\n    exemptSubjects: [{kind: User, name: bob}]\n  - selector: {matchLabels: {tier: db}}\n    exemptSubjects: [{kind: User, name: carol}]\n",
        );
        assert_eq!(
            exempt_subjects_condition(&p).unwrap(),
            "!((request.namespace in ['legacy', 'old'] && (request.userInfo.username == 'bob')))"
        );
        assert!(label_selected_exemptions(&p));
        let component = kustomize_component(&p, "p.yaml");
        assert!(
            component.contains("select namespaces only by labels"),
            "{component}"
        );
    }

    #[test]
    fn without_exemptions_there_is_no_exempt_subjects_condition() {
        assert_eq!(exempt_subjects_condition(&Policy::embedded()), None);
        assert!(
            validating(&Policy::embedded())
                .iter()
                .all(|c| c.name != EXEMPT_SUBJECTS_CONDITION)
        );
    }

    #[test]
    fn required_metadata_of_endpoints_brings_them_to_the_mutating_webhook() {
        let none = may_be_patched(&policy("shapeMetadata: true\n"));
        assert!(!none.contains("'endpoints'"), "{none}");
        let p = policy(
            "requiredMetadata:\n  labels: [{key: owner, value: platform, kinds: [Endpoints]}]\n",
        );
        let some = may_be_patched(&p);
        assert!(
            some.contains("request.resource.resource == 'endpoints' && !((has(object.metadata.labels) && 'owner' in object.metadata.labels))"),
            "{some}"
        );
        assert!(!some.contains("'endpointslices'"), "{some}");
    }

    #[test]
    fn the_mutating_webhook_is_registered_only_for_what_the_policy_may_patch() {
        let resources =
            |p: &Policy| -> Vec<&str> { mutated_resources(p).iter().map(|r| r.3).collect() };
        assert_eq!(
            resources(&policy("shapeMetadata: false\n")),
            Vec::<&str>::new()
        );
        assert_eq!(resources(&policy("shapeMetadata: true\n")), ["services"]);
        // A required key nothing can supply is the validating webhook's to deny.
        let p = policy(
            "shapeMetadata: false\nrequiredMetadata:\n  labels: [{key: owner, kinds: [Service]}, {key: team, value: core, kinds: [EndpointSlice]}]\n",
        );
        assert_eq!(resources(&p), ["endpointslices"]);
        assert_eq!(
            rules_yaml(
                &mutated_resources(&policy(
                    "requiredMetadata:\n  annotations: [{key: a, value: b}]\n"
                )),
                &MUTATED_OPERATIONS
            ),
            "[{apiGroups: [\"\"], apiVersions: [v1], resources: [services, endpoints], operations: [CREATE, UPDATE], scope: \"*\"}, {apiGroups: [\"discovery.k8s.io\"], apiVersions: [v1], resources: [endpointslices], operations: [CREATE, UPDATE], scope: \"*\"}]"
        );
        assert_eq!(rules_yaml(&[], &MUTATED_OPERATIONS), "[]");
    }

    #[test]
    fn a_namespace_label_copied_over_what_the_object_has_always_reaches_the_webhook() {
        // The conditions cannot tell whether the value the object has is the label's.
        let p = policy(
            "requiredMetadata:\n  labels: [{key: team, fromNamespaceLabel: team, overwrite: true, kinds: [Endpoints]}]\n",
        );
        let condition = may_be_patched(&p);
        assert_eq!(
            condition,
            "request.resource.resource == 'endpoints' && !(false)"
        );
    }

    #[test]
    fn quotes_in_names_are_escaped() {
        assert_eq!(quoted(r"a'b\c"), r"'a\'b\\c'");
    }
}
