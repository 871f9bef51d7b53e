//! `service-no-endpoints`: a Service without selector (and not ExternalName) with no
//! Endpoints or EndpointSlice: it has no backends, and connections to it fail. A warning,
//! since the endpoints may simply not have been applied yet.

use crate::cluster::ServiceInfo;
use crate::object::{Object, SERVICE_NAME_LABEL};
use crate::policy::RuleAction;
use crate::rules::{Context, Draft, endpoints_orphaned};

pub const ID: &str = "service-no-endpoints";
pub const SUMMARY: &str = "Service without selector and without Endpoints/EndpointSlice: it has no backends";
pub const DEFAULT: RuleAction = RuleAction::Warn;

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    let Object::Service(service) = object else {
        return Vec::new();
    };
    let info = ServiceInfo::of(service);
    if !info.takes_hand_written_endpoints() || !cx.view.sees_cluster(cx.namespace) {
        return Vec::new();
    }
    let name = info.name.as_str();
    if cx.view.endpoints(cx.namespace, name).is_some()
        || !cx.view.slices_for(cx.namespace, name).is_empty()
    {
        return Vec::new();
    }
    let hint = orphan_meant_for(name, cx)
        .map(|o| format!("; {o} looks meant for it: rename it to {name:?}"))
        .unwrap_or_default();
    vec![Draft::advisory(
        "metadata.name",
        format!(
            "this Service has no selector and no Endpoints or EndpointSlice, so it has no backends and connections to it fail; create an Endpoints named {name:?} (or an EndpointSlice labelled {SERVICE_NAME_LABEL}: {name}) listing the external addresses{hint}"
        ),
    )]
}

/// An orphaned hand-written Endpoints in the namespace whose likely Service is `service`.
fn orphan_meant_for(service: &str, cx: &Context<'_>) -> Option<String> {
    cx.view
        .endpoints_in(cx.namespace)
        .into_iter()
        .filter(|e| cx.view.service(cx.namespace, &e.name).is_none())
        .find(|e| endpoints_orphaned::name_similarity(&e.name, service) >= 0.85)
        .map(|e| format!("Endpoints {}", e.name))
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::testing::*;

    #[test]
    fn the_seed_service_without_its_endpoints_is_warned_and_told_about_mysql_ep() {
        let findings = judge_set(MYSQL_PAIR);
        let f = one(
            &findings,
            RuleId::ServiceNoEndpoints,
            Action::Warn,
            "mysql-svc",
        );
        assert!(
            f.message.contains("Endpoints mysql-ep looks meant for it"),
            "{}",
            f.message
        );
    }

    #[test]
    fn without_a_view_of_the_cluster_a_missing_endpoints_is_not_reported() {
        none(&judge_alone(MYSQL_PAIR), RuleId::ServiceNoEndpoints);
    }

    #[test]
    fn a_service_with_a_labelled_slice_has_endpoints() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  ports: [{port: 5432}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: db-1\n  labels: {kubernetes.io/service-name: db}\naddressType: IPv4\nendpoints: [{addresses: [203.0.113.7]}]\nports: [{port: 5432}]\n",
        );
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn selector_and_externalname_services_need_no_hand_written_endpoints() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  type: ExternalName\n  externalName: db.example.com\n",
        );
        none(&findings, RuleId::ServiceNoEndpoints);
    }
}
