//! `headless-port-remap`: a headless Service (`clusterIP: None`) whose port is remapped.
//! DNS answers the Service name with the endpoint IPs and clients dial them on the
//! *Service* port: no kube-proxy sits in between to remap it. So `targetPort ≠ port`
//! (reported on the Service), and an endpoint port number different from the headless
//! Service's port of the same name (reported on the object that carries the other number:
//! the Endpoints/EndpointSlice in a manifest set, the object under review in admission),
//! both break silently.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cluster::ServiceInfo;
use crate::object::{Object, ServiceShape, is_headless};
use crate::cluster::EndpointPort;
use crate::policy::RuleAction;
use crate::rules::{Context, Draft, Mode, hand_written_endpoints, other_consumers, port_label};

pub const ID: &str = "headless-port-remap";
pub const SUMMARY: &str = "headless Service whose ports are remapped: clients dial the endpoint IPs on the Service port, nothing remaps it";
pub const DEFAULT: RuleAction = RuleAction::Deny;

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    match object {
        Object::Service(service) => {
            let info = ServiceInfo::of(service);
            if info.shape == ServiceShape::ExternalName || !is_headless(service) {
                return Vec::new();
            }
            let mut drafts = target_port_remaps(&info);
            if cx.mode == Mode::Admission && info.shape == ServiceShape::HeadlessMapping {
                drafts.extend(endpoints_on_other_ports(&info, cx));
            }
            drafts
        }
        _ => endpoint_port_remaps(cx),
    }
}

fn target_port_remaps(service: &ServiceInfo) -> Vec<Draft> {
    service
        .ports
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p.target_port {
            Some(IntOrString::Int(target)) if target != p.port => Some(Draft::violation(
                format!("spec.ports[{i}].targetPort"),
                format!(
                    "targetPort {target} differs from port {} on a headless Service: DNS returns the endpoint IPs and clients dial them on port {} directly, nothing remaps it; set targetPort to {} (or leave it out) and serve the endpoints on that port, or give the Service a cluster IP (remove clusterIP: None, which means recreating it) so kube-proxy maps {} → {target}",
                    p.port, p.port, p.port, p.port
                ),
            )),
            _ => None,
        })
        .collect()
}

/// The Service under review changed its port away from what its endpoints serve.
fn endpoints_on_other_ports(service: &ServiceInfo, cx: &Context<'_>) -> Vec<Draft> {
    let endpoint_ports: Vec<(String, EndpointPort)> = hand_written_endpoints(cx, service)
        .into_iter()
        .flat_map(|e| {
            let owner = e.describe();
            e.ports.into_iter().map(move |p| (owner.clone(), p))
        })
        .collect();
    let consumers = other_consumers(cx, &service.name, None);
    let mut drafts = Vec::new();
    for (i, sp) in service.ports.iter().enumerate() {
        if let Some((owner, ep)) = endpoint_ports
            .iter()
            .find(|(_, ep)| ep.name == sp.name && ep.protocol == sp.protocol && ep.port != sp.port)
        {
            let field = format!("spec.ports[{i}].port");
            let fix = format!("keep port {} or change the endpoints to {}", ep.port, sp.port);
            drafts.push(remap(
                field,
                format!(
                    "port {} differs from port {} of {owner} for {}",
                    sp.port,
                    ep.port,
                    port_label(&sp.name, &sp.protocol)
                ),
                (sp.port, ep.port),
                &consumers,
                &fix,
            ));
        }
    }
    drafts
}

/// A port remap under a headless Service: a violation for DNS clients, which dial the
/// Service port on the endpoint IPs; a warning when other consumers show (ingress
/// controllers and Gateway API implementations send traffic to the endpoint port itself).
fn remap(
    field: String,
    what: String,
    (service_port, endpoint_port): (i32, i32),
    consumers: &[String],
    fix: &str,
) -> Draft {
    if consumers.is_empty() {
        return Draft::violation(
            field,
            format!(
                "{what}: on a headless Service clients resolve its name to the endpoint IPs and dial port {service_port}, and nothing remaps it; {fix}"
            ),
        );
    }
    Draft::advisory(
        field,
        format!(
            "{what}: {} send traffic to the endpoint port {endpoint_port} itself, which works, but in-cluster clients resolving the headless Service dial port {service_port} on the endpoint IPs and nothing remaps it; if they use it too, {fix}",
            consumers.join(", ")
        ),
    )
}

fn endpoint_port_remaps(cx: &Context<'_>) -> Vec<Draft> {
    let Some(subject) = cx.endpoints_subject() else {
        return Vec::new();
    };
    let Some(paired) = cx.paired_service() else {
        return Vec::new();
    };
    let service = &paired.service;
    if service.shape != ServiceShape::HeadlessMapping {
        return Vec::new();
    }
    let consumers = other_consumers(cx, &service.name, None);
    subject
        .ports
        .iter()
        .filter_map(|p| {
            let sp = service
                .ports
                .iter()
                .find(|sp| sp.name == p.port.name && sp.protocol == p.port.protocol)?;
            (sp.port != p.port.port).then(|| {
                remap(
                    format!("{}.port", p.field),
                    format!(
                        "port {} differs from port {} of headless Service {}",
                        p.port.port, sp.port, service.name
                    ),
                    (sp.port, p.port.port),
                    &consumers,
                    &format!(
                        "set this port to {}, or recreate Service {} with a cluster IP (without clusterIP: None) so kube-proxy maps {} → {}",
                        sp.port, service.name, sp.port, p.port.port
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::Mode;
    use crate::rules::testing::*;

    const HEADLESS_3306_TO_3307: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: mysql}
spec:
  clusterIP: None
  ports: [{name: mysql, port: 3306}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: mysql}
subsets:
  - addresses: [{ip: 192.168.1.10}]
    ports: [{name: mysql, port: 3307}]
"#;

    #[test]
    fn a_headless_service_a_gateway_route_sends_to_is_warned_naming_the_route() {
        // Gateway API implementations route to the EndpointSlice port, not the Service port.
        let findings = judge_set(&format!(
            "{HEADLESS_3306_TO_3307}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: db-admin}}\nspec:\n  rules: [{{backendRefs: [{{name: mysql, port: 3306}}]}}]\n"
        ));
        let f = one(&findings, RuleId::HeadlessPortRemap, Action::Warn, "mysql");
        assert!(
            f.message.contains("HTTPRoute default/db-admin send traffic to the endpoint port 3307 itself, which works, but in-cluster clients resolving the headless Service dial port 3306"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_headless_service_with_endpoints_on_another_port_is_denied_on_the_endpoints() {
        let findings = judge_set(HEADLESS_3306_TO_3307);
        let f = one(&findings, RuleId::HeadlessPortRemap, Action::Deny, "mysql");
        assert_eq!(f.object.kind, crate::object::Kind::Endpoints);
        assert_eq!(f.field, "subsets[0].ports[0].port");
        assert!(f.message.contains("set this port to 3306"), "{}", f.message);
    }

    #[test]
    fn in_admission_a_service_under_review_carries_the_finding() {
        let findings = judge_set_with(HEADLESS_3306_TO_3307, None, Mode::Admission);
        let on_service: Vec<_> = of_rule(&findings, RuleId::HeadlessPortRemap)
            .into_iter()
            .filter(|f| f.object.kind == crate::object::Kind::Service)
            .collect();
        assert_eq!(on_service.len(), 1, "{findings:#?}");
        assert_eq!(on_service[0].field, "spec.ports[0].port");
    }

    #[test]
    fn target_port_different_from_port_on_a_headless_service_is_denied() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: mysql}\nspec:\n  clusterIP: None\n  ports: [{name: mysql, port: 3306, targetPort: 3307}]\n",
        );
        let f = one(&findings, RuleId::HeadlessPortRemap, Action::Deny, "mysql");
        assert_eq!(f.field, "spec.ports[0].targetPort");
    }

    #[test]
    fn a_headless_mapping_on_the_same_port_passes() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: mysql}\nspec:\n  clusterIP: None\n  ports: [{name: mysql, port: 3306, targetPort: 3306}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: mysql}\nsubsets:\n  - addresses: [{ip: 192.168.1.10}]\n    ports: [{name: mysql, port: 3306}]\n",
        );
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn a_cluster_ip_service_may_map_ports() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: mysql}\nspec:\n  ports: [{name: mysql, port: 3306, targetPort: 3307}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: mysql}\nsubsets:\n  - addresses: [{ip: 192.168.1.10}]\n    ports: [{name: mysql, port: 3307}]\n",
        );
        none(&findings, RuleId::HeadlessPortRemap);
    }
}
