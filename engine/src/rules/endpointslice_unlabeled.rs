//! `endpointslice-unlabeled`: an EndpointSlice without the `kubernetes.io/service-name`
//! label. kube-proxy and DNS find a Service's slices only through that label, so an
//! unlabeled slice is never used.

use crate::finding::{field_key};
use crate::object::{Object, SERVICE_NAME_LABEL};
use crate::policy::RuleAction;
use crate::rules::{Context, Draft, endpoints_orphaned};

pub const ID: &str = "endpointslice-unlabeled";
pub const SUMMARY: &str = "EndpointSlice without the kubernetes.io/service-name label: no Service ever uses it";
pub const DEFAULT: RuleAction = RuleAction::Deny;

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    let Object::EndpointSlice(_) = object else {
        return Vec::new();
    };
    let Some(subject) = cx.endpoints_subject() else {
        return Vec::new();
    };
    if subject.service_name.is_some() {
        return Vec::new();
    }
    let hint = endpoints_orphaned::likely_services(&subject.name, &subject.ports, cx)
        .into_iter()
        .next()
        .map(|s| {
            format!(
                " (Service {} looks like the one: {SERVICE_NAME_LABEL}: {})",
                s.name, s.name
            )
        })
        .unwrap_or_default();
    vec![Draft::violation(
        field_key("metadata.labels", SERVICE_NAME_LABEL),
        format!(
            "this EndpointSlice has no {SERVICE_NAME_LABEL} label, so no Service ever uses it; add the label with the name of its Service{hint}"
        ),
    )]
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::testing::*;

    #[test]
    fn a_slice_without_the_service_name_label_is_denied_with_the_likely_service() {
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
metadata: {name: mysql-svc-1}
addressType: IPv4
endpoints: [{addresses: [203.0.113.7]}]
ports: [{name: mysql, port: 3306}]
"#,
        );
        let f = one(
            &findings,
            RuleId::EndpointsliceUnlabeled,
            Action::Deny,
            "mysql-svc-1",
        );
        assert!(
            f.message.contains("kubernetes.io/service-name: mysql-svc"),
            "{}",
            f.message
        );
        none(&findings, RuleId::EndpointsOrphaned);
    }

    #[test]
    fn a_labelled_slice_passes() {
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
  name: mysql-svc-1
  labels: {kubernetes.io/service-name: mysql-svc}
addressType: IPv4
endpoints: [{addresses: [203.0.113.7]}]
ports: [{name: mysql, port: 3306}]
"#,
        );
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn a_mirrored_slice_is_not_judged_when_the_set_confirms_the_mirroring() {
        let findings = judge_set(
            r#"
apiVersion: v1
kind: Service
metadata: {name: ssa-svc}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: ssa-svc}
subsets: [{addresses: [{ip: 203.0.113.7}], ports: [{port: 80}]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ssa-svc-87v2z
  labels:
    endpointslice.kubernetes.io/managed-by: endpointslicemirroring-controller.k8s.io
    kubernetes.io/service-name: ssa-svc
  ownerReferences: [{apiVersion: v1, kind: Endpoints, name: ssa-svc, uid: x, controller: true}]
addressType: IPv4
endpoints: [{addresses: [203.0.113.7]}]
ports: [{port: 80}]
"#,
        );
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn a_slice_that_only_claims_the_mirroring_label_is_judged() {
        let findings = judge_set(
            r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ssa-svc-87v2z
  labels: {endpointslice.kubernetes.io/managed-by: endpointslicemirroring-controller.k8s.io}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
"#,
        );
        one(
            &findings,
            RuleId::EndpointsliceUnlabeled,
            Action::Deny,
            "ssa-svc-87v2z",
        );
    }
}
