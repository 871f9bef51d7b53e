//! The policy as CEL for the webhook configurations' `matchConditions`: what the API server
//! can decide without calling the webhook. Writes by the policy's exempt subjects are never
//! judged, so with these conditions they never wait on the webhook — not even when every
//! replica is down.

use crate::policy::{Policy, Subject};

/// The name of the condition [`exempt_subjects_condition`] builds.
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
        let names = o
            .names
            .iter()
            .map(|n| quoted(n))
            .collect::<Vec<_>>()
            .join(", ");
        let subjects = o
            .exempt_subjects
            .iter()
            .map(subject)
            .collect::<Vec<_>>()
            .join(" || ");
        exempt.push(format!("(request.namespace in [{names}] && ({subjects}))"));
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

/// A CEL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A kustomize patch (RFC 6902 operations, as YAML) adding the exempt-subjects condition to
/// a webhook configuration whose first webhook already has `matchConditions` (both of
/// `deploy/`'s do): apply it to the ValidatingWebhookConfiguration and the
/// MutatingWebhookConfiguration alike.
pub fn exempt_subjects_patch(policy: &Policy, source: &str) -> Option<String> {
    let expression = exempt_subjects_condition(policy)?;
    let mut out = format!(
        "# matchConditions for the exemptSubjects of {source}: the API server never calls the\n\
         # webhook for their writes. Regenerate with `extsvc-guard policy match-conditions` when\n\
         # the policy's exemptSubjects change.\n"
    );
    if label_selected_exemptions(policy) {
        out.push_str(
            "# Overrides that select namespaces only by labels are not here (a webhook's conditions\n\
             # do not see namespace labels): the server still exempts those writes, but they wait on it.\n",
        );
    }
    out.push_str(&format!(
        "- op: add\n  path: /webhooks/0/matchConditions/-\n  value:\n    name: {EXEMPT_SUBJECTS_CONDITION}\n    expression: {}\n",
        serde_json::Value::String(expression)
    ));
    Some(out)
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
        let patch = exempt_subjects_patch(&p, "p.yaml").unwrap();
        assert!(
            patch.contains("select namespaces only by labels"),
            "{patch}"
        );
    }

    #[test]
    fn no_exemption_no_condition() {
        assert_eq!(exempt_subjects_condition(&Policy::embedded()), None);
        assert_eq!(exempt_subjects_patch(&Policy::embedded(), "default"), None);
    }

    #[test]
    fn quotes_in_names_are_escaped() {
        assert_eq!(quoted(r"a'b\c"), r"'a\'b\\c'");
    }
}
