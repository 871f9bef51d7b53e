//! `endpoints-orphaned`: an Endpoints, or an EndpointSlice through its
//! `kubernetes.io/service-name` label, with no Service of that name in its namespace.
//!
//! Such endpoints are never used. When a Service they were likely meant for exists
//! (selectorless, not ExternalName, with no endpoints of its own, a similar name or shared
//! ports) the rule denies and names it; otherwise it only warns, because objects applied
//! together may arrive in any order.

use crate::cluster::ServiceInfo;
use crate::object::{Kind, Object, SERVICE_NAME_LABEL};
use crate::policy::RuleAction;
use crate::rules::{Context, Draft, SubjectPort, either};

pub const ID: &str = "endpoints-orphaned";
pub const SUMMARY: &str = "Endpoints or EndpointSlice with no Service of that name in its namespace: it is never used";
pub const DEFAULT: RuleAction = RuleAction::Deny;

/// Leader election writes its lock into this annotation of an Endpoints (client-go's
/// `endpoints` and `endpointsleases` locks): such an Endpoints needs no Service.
pub const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    let Some(subject) = cx.endpoints_subject() else {
        return Vec::new();
    };
    if subject.kind == Kind::Endpoints
        && object
            .metadata()
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LEADER_ANNOTATION))
    {
        return Vec::new();
    }
    // An unlabeled slice is `endpointslice-unlabeled`'s to report.
    let Some(service_name) = subject.service_name.as_deref() else {
        return Vec::new();
    };
    if service_name.is_empty()
        || !cx.view.sees_cluster(cx.namespace)
        || cx.view.service(cx.namespace, service_name).is_some()
    {
        return Vec::new();
    }
    let field = subject.pairing_field();
    let missing = match subject.kind {
        Kind::EndpointSlice => format!(
            "label {SERVICE_NAME_LABEL} names Service {service_name:?}, which does not exist in namespace {}, so {} is never used",
            cx.namespace,
            subject.this()
        ),
        _ => format!(
            "no Service named {service_name:?} exists in namespace {}, so {} is never used (an Endpoints serves only the Service of exactly its name)",
            cx.namespace,
            subject.this()
        ),
    };
    let likely = cx.likely_services();
    if likely.is_empty() {
        let fix = match subject.kind {
            Kind::EndpointSlice => format!(
                "create a Service without selector named {service_name:?}, or set the label to the name of the Service it is for"
            ),
            _ => format!(
                "create a Service without selector named {service_name:?}, or rename {} after the Service it is for",
                subject.this()
            ),
        };
        return vec![Draft::advisory(field, format!("{missing}; {fix}"))];
    }
    let names: Vec<String> = likely.iter().map(|s| s.name.clone()).collect();
    let did_you_mean = either(
        &names
            .iter()
            .map(|n| format!("Service {n}"))
            .collect::<Vec<_>>(),
    );
    let target = either(&names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>());
    let fix = match subject.kind {
        Kind::EndpointSlice => format!("set label {SERVICE_NAME_LABEL} to {target}"),
        _ => format!("rename {} to {target}", subject.this()),
    };
    vec![Draft::violation(
        field,
        format!(
            "{missing}: did you mean {did_you_mean}? {}",
            capitalize(&fix)
        ),
    )]
}

/// The Services in the namespace that endpoints named `name` with these `ports` were most
/// likely written for, best first: selectorless, not ExternalName, without endpoints of
/// their own, and close in name (ignoring suffixes like `-ep`, `-svc`) or sharing ports.
/// Several are returned only when they tie.
pub fn likely_services(name: &str, ports: &[SubjectPort], cx: &Context<'_>) -> Vec<ServiceInfo> {
    let mut scored: Vec<(f64, ServiceInfo)> = cx
        .view
        .services_in(cx.namespace)
        .into_iter()
        .filter(|s| s.name != name && s.takes_hand_written_endpoints())
        .filter(|s| {
            cx.view.endpoints(cx.namespace, &s.name).is_none()
                && cx.view.slices_for(cx.namespace, &s.name).is_empty()
        })
        .filter_map(|s| {
            let names = name_similarity(name, &s.name);
            let shared = shared_port_fraction(ports, &s);
            let qualifies = names >= 0.85 || (names >= 0.6 && shared > 0.0);
            qualifies.then_some((names + 0.5 * shared, s))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let Some(best) = scored.first().map(|(score, _)| *score) else {
        return Vec::new();
    };
    scored
        .into_iter()
        .take_while(|(score, _)| (best - score).abs() < 1e-9)
        .map(|(_, s)| s)
        .collect()
}

/// Words people add to tell the two objects apart, which say nothing about which Service
/// is meant: `mysql-ep` and `mysql-svc` are both "mysql".
const NOISE_WORDS: [&str; 8] = [
    "ep",
    "eps",
    "endpoint",
    "endpoints",
    "endpointslice",
    "slice",
    "svc",
    "service",
];

fn stem(name: &str) -> String {
    let words: Vec<&str> = name
        .split(['-', '.', '_'])
        .filter(|w| !w.is_empty() && !NOISE_WORDS.contains(w))
        .collect();
    if words.is_empty() {
        name.to_owned()
    } else {
        words.join("-")
    }
}

/// 1.0 for names that differ only in noise words, otherwise Jaro-Winkler similarity.
pub fn name_similarity(a: &str, b: &str) -> f64 {
    let (sa, sb) = (stem(a), stem(b));
    if sa == sb {
        return 1.0;
    }
    strsim::jaro_winkler(&sa, &sb).max(strsim::jaro_winkler(a, b) * 0.95)
}

/// Share of the endpoint ports that a Service port matches by number (its port or a
/// numeric targetPort) or by name.
fn shared_port_fraction(ports: &[SubjectPort], service: &ServiceInfo) -> f64 {
    if ports.is_empty() {
        return 0.0;
    }
    let shared = ports
        .iter()
        .filter(|p| {
            service.ports.iter().any(|sp| {
                sp.port == p.port.port
                    || matches!(sp.target_port, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) if t == p.port.port)
                    || (!p.port.name.is_empty() && sp.name == p.port.name)
            })
        })
        .count();
    shared as f64 / ports.len() as f64
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{Action, RuleId};
    use crate::rules::testing::*;

    #[test]
    fn an_endpoints_used_as_a_leader_election_lock_needs_no_service() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: my-operator-lock\n  annotations:\n    control-plane.alpha.kubernetes.io/leader: '{\"holderIdentity\":\"pod-1\",\"leaseDurationSeconds\":15}'\n",
        );
        none(&findings, RuleId::EndpointsOrphaned);
    }

    #[test]
    fn without_a_view_of_the_cluster_an_absent_service_is_not_concluded() {
        let findings = judge_alone(MYSQL_PAIR);
        none(&findings, RuleId::EndpointsOrphaned);
        assert!(
            findings.iter().all(|f| f.action != Action::Deny),
            "{findings:#?}"
        );
    }

    #[test]
    fn the_seed_pair_is_denied_naming_the_intended_service() {
        let findings = judge_set(MYSQL_PAIR);
        let f = one(
            &findings,
            RuleId::EndpointsOrphaned,
            Action::Deny,
            "mysql-ep",
        );
        assert_eq!(f.field, "metadata.name");
        assert!(
            f.message.contains("did you mean Service mysql-svc?"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("Rename this Endpoints to \"mysql-svc\""),
            "{}",
            f.message
        );
    }

    #[test]
    fn endpoints_named_like_their_service_are_not_orphaned() {
        let findings = judge_set(
            r#"
apiVersion: v1
kind: Service
metadata: {name: external-service}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: external-service}
subsets:
  - addresses: [{ip: 11.11.11.11}, {ip: 22.22.22.22}]
    ports: [{port: 80}]
"#,
        );
        none(&findings, RuleId::EndpointsOrphaned);
    }

    #[test]
    fn endpoints_without_any_likely_service_only_warn() {
        let findings = judge_set(
            r#"
apiVersion: v1
kind: Endpoints
metadata: {name: billing-db}
subsets:
  - addresses: [{ip: 203.0.113.7}]
    ports: [{port: 5432}]
"#,
        );
        let f = one(
            &findings,
            RuleId::EndpointsOrphaned,
            Action::Warn,
            "billing-db",
        );
        assert!(
            f.message
                .contains("create a Service without selector named \"billing-db\""),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_service_with_a_selector_is_never_the_likely_one() {
        let findings = judge_set(
            r#"
apiVersion: v1
kind: Service
metadata: {name: mysql-svc}
spec:
  selector: {app: mysql}
  ports: [{name: mysql, port: 3306}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: mysql-ep}
subsets:
  - addresses: [{ip: 203.0.113.7}]
    ports: [{name: mysql, port: 3306}]
"#,
        );
        one(
            &findings,
            RuleId::EndpointsOrphaned,
            Action::Warn,
            "mysql-ep",
        );
    }

    #[test]
    fn a_service_that_already_has_endpoints_is_never_the_likely_one() {
        let findings = judge_set(
            r#"
apiVersion: v1
kind: Service
metadata: {name: mysql-svc}
spec:
  ports: [{name: mysql, port: 3306}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: mysql-svc}
subsets:
  - addresses: [{ip: 203.0.113.7}]
    ports: [{name: mysql, port: 3306}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: mysql-ep}
subsets:
  - addresses: [{ip: 203.0.113.8}]
    ports: [{name: mysql, port: 3306}]
"#,
        );
        one(
            &findings,
            RuleId::EndpointsOrphaned,
            Action::Warn,
            "mysql-ep",
        );
    }

    #[test]
    fn an_endpointslice_labelled_for_a_missing_service_is_told_which_label_to_set() {
        let findings = judge_set(
            r#"
apiVersion: v1
kind: Service
metadata: {name: mysql-svc}
spec:
  ports: [{name: mysql, port: 3306}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: mysql-1
  labels: {kubernetes.io/service-name: mysql}
addressType: IPv4
endpoints: [{addresses: [203.0.113.7]}]
ports: [{name: mysql, port: 3306, protocol: TCP}]
"#,
        );
        let f = one(
            &findings,
            RuleId::EndpointsOrphaned,
            Action::Deny,
            "mysql-1",
        );
        assert_eq!(f.field, "metadata.labels[\"kubernetes.io/service-name\"]");
        assert!(
            f.message
                .contains("Set label kubernetes.io/service-name to \"mysql-svc\""),
            "{}",
            f.message
        );
    }

    #[test]
    fn services_in_other_namespaces_are_never_suggested() {
        let findings = judge_set(
            r#"
apiVersion: v1
kind: Service
metadata: {name: mysql-svc, namespace: prod}
spec:
  ports: [{name: mysql, port: 3306}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: mysql-ep, namespace: staging}
subsets:
  - addresses: [{ip: 203.0.113.7}]
    ports: [{name: mysql, port: 3306}]
"#,
        );
        one(
            &findings,
            RuleId::EndpointsOrphaned,
            Action::Warn,
            "mysql-ep",
        );
    }

    #[test]
    fn names_that_differ_only_in_noise_words_are_the_same() {
        assert_eq!(name_similarity("mysql-ep", "mysql-svc"), 1.0);
        assert_eq!(name_similarity("mysql-endpoints", "mysql"), 1.0);
        assert!(name_similarity("billing-db", "mysql-svc") < 0.6);
    }
}
