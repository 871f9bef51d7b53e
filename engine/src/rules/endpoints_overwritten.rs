//! `endpoints-overwritten`: hand-written endpoints the control plane will overwrite.
//!
//! An Endpoints named after a Service *with a selector* belongs to the endpoints
//! controller, which replaces its addresses with the selected Pods'. An EndpointSlice
//! that claims `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`
//! beside such a Service is deleted by the EndpointSlice controller. (A slice with a
//! managed-by value of its own beside a selector Service is a supported way to add
//! endpoints, and passes.)

use crate::finding::{field_key};
use crate::object::{ENDPOINTSLICE_CONTROLLER, MANAGED_BY_LABEL, Object, ServiceShape};
use crate::policy::RuleAction;
use crate::rules::{Context, Draft};

pub const ID: &str = "endpoints-overwritten";
pub const SUMMARY: &str = "hand-written Endpoints/EndpointSlice for a Service with a selector: the control plane overwrites them";
pub const DEFAULT: RuleAction = RuleAction::Deny;

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    let Some(subject) = cx.endpoints_subject() else {
        return Vec::new();
    };
    let Some(service_name) = subject.service_name.as_deref() else {
        return Vec::new();
    };
    let Some(service) = cx.view.service(cx.namespace, service_name) else {
        return Vec::new();
    };
    if service.shape != ServiceShape::InCluster {
        return Vec::new();
    }
    match object {
        Object::Endpoints(_) => vec![Draft::violation(
            "metadata.name",
            format!(
                "Service {service_name} has a selector, so the endpoints controller owns Endpoints {service_name:?} and replaces these hand-written addresses with the selected Pods'; remove spec.selector from Service {service_name} to keep hand-written endpoints, or delete this Endpoints and let the selector choose Pods"
            ),
        )],
        Object::EndpointSlice(_)
            if object.label(MANAGED_BY_LABEL) == Some(ENDPOINTSLICE_CONTROLLER) =>
        {
            vec![Draft::violation(
                field_key("metadata.labels", MANAGED_BY_LABEL),
                format!(
                    "this hand-written EndpointSlice claims {MANAGED_BY_LABEL}: {ENDPOINTSLICE_CONTROLLER}, so the EndpointSlice controller of Service {service_name} (which has a selector) will delete or overwrite it; set {MANAGED_BY_LABEL} to a value of your own (for example \"platform-team\") to add endpoints beside the selected Pods"
                ),
            )]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::testing::*;

    const SELECTOR_SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web-svc}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
"#;

    #[test]
    fn hand_written_endpoints_for_a_selector_service_are_denied() {
        let set = format!(
            "{SELECTOR_SERVICE}---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: web-svc}}\nsubsets:\n  - addresses: [{{ip: 203.0.113.7}}]\n    ports: [{{name: http, port: 80}}]\n"
        );
        let findings = judge_set(&set);
        let f = one(
            &findings,
            RuleId::EndpointsOverwritten,
            Action::Deny,
            "web-svc",
        );
        assert!(f.message.contains("remove spec.selector"), "{}", f.message);
    }

    #[test]
    fn endpoints_written_by_the_endpoints_controller_pass() {
        let set = format!(
            "{SELECTOR_SERVICE}---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: web-svc\n  annotations: {{endpoints.kubernetes.io/last-change-trigger-time: \"2026-11-22T02:07:32Z\"}}\nsubsets:\n  - addresses: [{{ip: 10.244.0.7}}]\n    ports: [{{name: http, port: 80}}]\n"
        );
        assert!(judge_set(&set).is_empty());
    }

    #[test]
    fn a_slice_claiming_the_controller_beside_a_selector_service_is_denied() {
        let set = format!(
            "{SELECTOR_SERVICE}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-extra\n  labels: {{kubernetes.io/service-name: web-svc, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}}\naddressType: IPv4\nendpoints: [{{addresses: [203.0.113.7]}}]\nports: [{{name: http, port: 80}}]\n"
        );
        let findings = judge_set(&set);
        one(
            &findings,
            RuleId::EndpointsOverwritten,
            Action::Deny,
            "web-extra",
        );
    }

    #[test]
    fn a_slice_with_its_own_manager_beside_a_selector_service_passes() {
        let set = format!(
            "{SELECTOR_SERVICE}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-extra\n  labels: {{kubernetes.io/service-name: web-svc, endpointslice.kubernetes.io/managed-by: platform-team}}\naddressType: IPv4\nendpoints: [{{addresses: [203.0.113.7]}}]\nports: [{{name: http, port: 80}}]\n"
        );
        assert!(judge_set(&set).is_empty(), "{:#?}", judge_set(&set));
    }

    #[test]
    fn endpoints_for_a_selectorless_service_pass() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  ports: [{port: 5432}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\nsubsets:\n  - addresses: [{ip: 203.0.113.7}]\n    ports: [{port: 5432}]\n",
        );
        none(&findings, RuleId::EndpointsOverwritten);
    }
}
