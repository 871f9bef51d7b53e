//! `selector-change`: a Service's selector changed under its endpoints, which changes who
//! writes them.
//!
//! - **Added** over hand-written endpoints: the endpoints controller takes the Service's
//!   Endpoints over at once and replaces their addresses with the selected Pods' (with
//!   nothing, when no Pod matches), the mirroring controller deletes the mirrored
//!   EndpointSlices, and the EndpointSlice controller writes its own. The Service's
//!   traffic moves to the Pods in that instant.
//! - **Removed** from a Service whose endpoints the controllers wrote: they stay as they
//!   were, no longer updated as Pods come and go (the controllers skip Services without a
//!   selector), and kube-proxy keeps sending traffic to them.
//!
//! Admission only for the first (in a set, the hand-written endpoints beside a selector
//! Service are `endpoints-overwritten`'s); both in admission and in a set for the second.

use std::collections::BTreeMap;

use crate::cluster::{PodCount, ServiceInfo, service_shape};
use crate::object::{Kind, Object, ServiceShape};
use crate::policy::RuleAction;
use crate::rules::{Context, Draft, Mode};

pub const ID: &str = "selector-change";
pub const SUMMARY: &str = "a selector added over hand-written endpoints (the controller replaces them) or removed from controller-written ones (they freeze)";
pub const DEFAULT: RuleAction = RuleAction::Warn;

/// Addresses shown at most per message.
const ADDRESSES_SHOWN: usize = 5;

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    let Object::Service(service) = object else {
        return Vec::new();
    };
    let info = ServiceInfo::of(service);
    match info.shape {
        ServiceShape::InCluster if cx.mode == Mode::Admission => {
            let selector = service
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            selector_added(&info, &selector, cx)
        }
        ServiceShape::IpMapping | ServiceShape::HeadlessMapping => selector_removed(&info, cx),
        _ => Vec::new(),
    }
}

/// Hand-written Endpoints beside a Service that now has a selector: the endpoints
/// controller replaces them. Hand-written EndpointSlices it leaves alone (the EndpointSlice
/// controller manages only slices labelled as its own), and kube-proxy keeps using them
/// beside the Pods', so they alone are no finding.
fn selector_added(
    service: &ServiceInfo,
    selector: &BTreeMap<String, String>,
    cx: &Context<'_>,
) -> Vec<Draft> {
    // The Service as the cluster has it before this write: Endpoints of a Service that had
    // no selector are hand-written, whatever they say about their writer.
    let before = service_shape(cx.view, cx.namespace, &service.name);
    let Some(endpoints) = cx
        .view
        .endpoints(cx.namespace, &service.name)
        .filter(|e| !e.maintained(before))
    else {
        return Vec::new();
    };
    let kept: Vec<String> = cx
        .view
        .slices_for(cx.namespace, &service.name)
        .into_iter()
        .filter(|s| s.controller.is_none())
        .map(|s| format!("EndpointSlice {}", s.name))
        .collect();
    let selector_text = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = match cx.view.pods_matching(cx.namespace, selector) {
        Some(PodCount::Exactly(0)) if kept.is_empty() => {
            "it matches no Pod now: the Service loses all its backends at once".to_owned()
        }
        Some(PodCount::Exactly(0)) => "it matches no Pod now".to_owned(),
        Some(PodCount::Exactly(1)) => "it matches 1 Pod now".to_owned(),
        Some(PodCount::Exactly(n)) => format!("it matches {n} Pods now"),
        Some(PodCount::AtLeast(n)) => format!("it matches over {n} Pods now"),
        None => "the Pods it matches could not be counted".to_owned(),
    };
    let kept = if kept.is_empty() {
        String::new()
    } else {
        format!(" ({} keeps its addresses)", all_of(&kept))
    };
    vec![Draft::violation(
        "spec.selector",
        format!(
            "selector {selector_text} makes the endpoints controller replace the hand-written Endpoints {} ({}) with the selected Pods, and {pods}{kept}; keep the Service selectorless, or start the Pods first",
            endpoints.name,
            shown(&endpoints.addresses),
        ),
    )]
}

/// Endpoints the controllers wrote for a selector this Service no longer has.
fn selector_removed(service: &ServiceInfo, cx: &Context<'_>) -> Vec<Draft> {
    let mut frozen = Vec::new();
    let mut addresses = Vec::new();
    if let Some(e) = cx.view.endpoints(cx.namespace, &service.name)
        && e.claims_controller
    {
        frozen.push(format!("{} {}", Kind::Endpoints, e.name));
        addresses.extend(e.addresses);
    }
    for s in cx.view.slices_for(cx.namespace, &service.name) {
        if s.controller == Some(crate::object::SliceController::EndpointSlice) {
            frozen.push(format!("{} {}", Kind::EndpointSlice, s.name));
            addresses.extend(s.addresses);
        }
    }
    if frozen.is_empty() {
        return Vec::new();
    }
    vec![Draft::violation(
        "spec.selector",
        format!(
            "without a selector the controllers stop updating {} (listing {}), which kube-proxy keeps using; replace {} with hand-written endpoints listing the addresses to use, or restore the selector",
            all_of(&frozen),
            shown(&addresses),
            if frozen.len() == 1 { "it" } else { "them" },
        ),
    )]
}

/// `a`, `a and b`, `a, b and c`.
fn all_of(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// `11.11.11.11, 22.22.22.22` or `… and 7 more`, deduplicated.
fn shown(addresses: &[String]) -> String {
    let mut unique: Vec<&String> = addresses.iter().collect();
    unique.sort();
    unique.dedup();
    if unique.is_empty() {
        return "no address".to_owned();
    }
    let mut text = unique
        .iter()
        .take(ADDRESSES_SHOWN)
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if unique.len() > ADDRESSES_SHOWN {
        text.push_str(&format!(" and {} more", unique.len() - ADDRESSES_SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use crate::cluster::{ManifestView, PodCount};
    use crate::finding::{Action, Finding, RuleId};
    use crate::policy::Policy;
    use crate::rules::testing::*;
    use crate::rules::{Mode, judge};

    const HAND_WRITTEN: &str = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: external-service}\nsubsets:\n  - addresses: [{ip: 11.11.11.11}, {ip: 22.22.22.22}]\n    ports: [{name: web, port: 80}]\n";
    const WITH_SELECTOR: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: external-service}\nspec:\n  selector: {app: external}\n  ports: [{name: web, port: 80}]\n";

    fn admit(service: &str, existing: &str, pods: Option<PodCount>) -> Vec<Finding> {
        let (objects, _) = objects(service);
        let (_, mut view) = objects_view(existing);
        view.set_pods(pods);
        judge(&objects[0], &view, &Policy::embedded(), Mode::Admission)
    }

    fn objects_view(yaml: &str) -> (Vec<crate::object::Object>, ManifestView) {
        objects(yaml)
    }

    #[test]
    fn a_selector_added_over_hand_written_endpoints_that_matches_no_pod_warns_of_the_outage() {
        let findings = admit(WITH_SELECTOR, HAND_WRITTEN, Some(PodCount::Exactly(0)));
        let f = one(&findings, RuleId::SelectorChange, Action::Warn, "external-service");
        assert_eq!(f.field, "spec.selector");
        assert!(
            f.message.starts_with("selector app=external makes the endpoints controller replace the hand-written Endpoints external-service (11.11.11.11, 22.22.22.22) with the selected Pods, and it matches no Pod now: the Service loses all its backends at once"),
            "{}",
            f.message
        );
    }

    #[test]
    fn the_pods_a_selector_matches_are_counted_in_the_message() {
        let many = admit(WITH_SELECTOR, HAND_WRITTEN, Some(PodCount::AtLeast(100)));
        let f = one(&many, RuleId::SelectorChange, Action::Warn, "external-service");
        assert!(f.message.contains("it matches over 100 Pods now"), "{}", f.message);
        let unknown = admit(WITH_SELECTOR, HAND_WRITTEN, None);
        let f = one(&unknown, RuleId::SelectorChange, Action::Warn, "external-service");
        assert!(f.message.contains("could not be counted"), "{}", f.message);
    }

    #[test]
    fn a_policy_can_make_the_selector_change_a_denial() {
        let (objects, _) = objects(WITH_SELECTOR);
        let (_, view) = objects_view(HAND_WRITTEN);
        let policy = Policy::from_yaml("rules:\n  selector-change: deny\n", "p.yaml").unwrap();
        let findings = judge(&objects[0], &view, &policy, Mode::Admission);
        one(&findings, RuleId::SelectorChange, Action::Deny, "external-service");
    }

    #[test]
    fn endpoints_with_a_copied_controller_annotation_of_a_selectorless_service_are_hand_written() {
        let existing = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: external-service}}\nspec:\n  ports: [{{name: web, port: 80}}]\n---\n{}",
            HAND_WRITTEN.replace(
                "metadata: {name: external-service}",
                "metadata: {name: external-service, annotations: {endpoints.kubernetes.io/last-change-trigger-time: \"2025-03-01T10:00:00Z\"}}"
            )
        );
        let findings = admit(WITH_SELECTOR, &existing, Some(PodCount::Exactly(0)));
        one(&findings, RuleId::SelectorChange, Action::Warn, "external-service");
    }

    #[test]
    fn a_hand_written_slice_the_selector_leaves_in_place_is_named_as_kept() {
        let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: external-service-1, labels: {kubernetes.io/service-name: external-service}}\naddressType: IPv4\nendpoints: [{addresses: [33.33.33.33]}]\nports: [{name: web, port: 80}]\n";
        let findings = admit(
            WITH_SELECTOR,
            &format!("{HAND_WRITTEN}---\n{slice}"),
            Some(PodCount::Exactly(0)),
        );
        let f = one(&findings, RuleId::SelectorChange, Action::Warn, "external-service");
        assert!(
            f.message.contains("it matches no Pod now (EndpointSlice external-service-1 keeps its addresses)"),
            "{}",
            f.message
        );
        assert!(!f.message.contains("loses all"), "{}", f.message);
        // A hand-written slice alone is a supported way to add endpoints: nothing to say.
        none(
            &admit(WITH_SELECTOR, slice, Some(PodCount::Exactly(0))),
            RuleId::SelectorChange,
        );
    }

    #[test]
    fn a_selector_service_with_only_controller_endpoints_passes() {
        // The Service already had the selector: its Endpoints are the controller's.
        let findings = admit(
            WITH_SELECTOR,
            &format!(
                "{WITH_SELECTOR}---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: external-service, annotations: {{endpoints.kubernetes.io/last-change-trigger-time: \"2026-12-06T22:00:03Z\"}}}}\n"
            ),
            Some(PodCount::Exactly(2)),
        );
        none(&findings, RuleId::SelectorChange);
    }

    #[test]
    fn a_selector_removed_from_controller_endpoints_says_they_freeze_and_what_they_list() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: sel}\nspec:\n  ports: [{name: web, port: 80}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: sel, annotations: {endpoints.kubernetes.io/last-change-trigger-time: \"2026-12-06T22:00:03Z\"}}\nsubsets:\n  - addresses: [{ip: 10.244.1.7}]\n    ports: [{name: web, port: 8080}]\n",
        );
        let f = one(&findings, RuleId::SelectorChange, Action::Warn, "sel");
        assert!(
            f.message.starts_with("without a selector the controllers stop updating Endpoints sel (listing 10.244.1.7), which kube-proxy keeps using"),
            "{}",
            f.message
        );
        none(&findings, RuleId::ServiceNoEndpoints);
    }
}
