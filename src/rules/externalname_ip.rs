//! `externalname-ip`: an IP address in `spec.externalName`. The API server accepts it (each
//! digit group is a valid DNS label), but cluster DNS answers the Service name with a CNAME
//! to the "name" 192.168.1.10, which does not resolve: clients never connect.

use k8s_openapi::api::core::v1::Service;

use crate::finding::Action;
use crate::object::{Object, SERVICE_NAME_LABEL};
use crate::rules::{Context, Draft};
use crate::target::{host_part, parse_ip};

pub const ID: &str = "externalname-ip";
pub const SUMMARY: &str = "IP address in spec.externalName: cluster DNS cannot CNAME to an IP, the name never resolves";
pub const DEFAULT: Action = Action::Deny;

pub fn check(object: &Object, _cx: &Context<'_>) -> Vec<Draft> {
    let Object::Service(service) = object else {
        return Vec::new();
    };
    let Some(external_name) = external_name(service) else {
        return Vec::new();
    };
    let host = host_part(external_name);
    let Some(ip) = parse_ip(host) else {
        return Vec::new();
    };
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let address_type = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let typed_port = external_name
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<i32>().ok())
        .filter(|_| ip.is_ipv4() || external_name.contains(']'));
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .filter(|p| !p.is_empty())
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    // For a selectorless Service the EndpointSlice port is the target.
                    let target = match &p.target_port {
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) => {
                            *t
                        }
                        _ => p.port,
                    };
                    match &p.name {
                        Some(n) if !n.is_empty() => format!("{{name: {n}, port: {target}}}"),
                        _ => format!("{{port: {target}}}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .or_else(|| typed_port.map(|p| format!("{{port: {p}}}")))
        .unwrap_or_else(|| "{port: <the port you connect to>}".to_owned());
    vec![Draft::violation(
        "spec.externalName",
        format!(
            "{external_name:?} is an IP address: cluster DNS answers a CNAME to it, which no resolver can follow, so {name} never resolves; replace it with a Service without selector (remove type: ExternalName and externalName, keep the ports) plus an EndpointSlice labelled {SERVICE_NAME_LABEL}: {name} with addressType: {address_type}, endpoints: [{{addresses: [\"{ip}\"]}}] and ports: [{ports}]"
        ),
    )]
}

/// `spec.externalName` of an ExternalName Service.
pub fn external_name(service: &Service) -> Option<&str> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("ExternalName") {
        return None;
    }
    spec.external_name.as_deref()
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::testing::*;

    #[test]
    fn an_ip_in_external_name_is_denied_with_the_replacement_spelled_out() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext-ip}\nspec:\n  type: ExternalName\n  externalName: 192.168.1.10\n  ports: [{name: mysql, port: 3306}]\n",
        );
        let f = one(&findings, RuleId::ExternalnameIp, Action::Deny, "ext-ip");
        assert_eq!(f.field, "spec.externalName");
        assert!(
            f.message.contains("Service without selector"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("kubernetes.io/service-name: ext-ip"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("addresses: [\"192.168.1.10\"]"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("ports: [{name: mysql, port: 3306}]"),
            "{}",
            f.message
        );
        none(&findings, RuleId::ExternalnameInvalid);
    }

    #[test]
    fn an_ip_with_a_port_suggests_that_port() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext-ip}\nspec:\n  type: ExternalName\n  externalName: \"192.168.1.10:3306\"\n",
        );
        let f = one(&findings, RuleId::ExternalnameIp, Action::Deny, "ext-ip");
        assert!(f.message.contains("ports: [{port: 3306}]"), "{}", f.message);
    }

    #[test]
    fn ipv6_literals_are_ips_too() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext6}\nspec:\n  type: ExternalName\n  externalName: \"2001:db8::10\"\n",
        );
        let f = one(&findings, RuleId::ExternalnameIp, Action::Deny, "ext6");
        assert!(f.message.contains("addressType: IPv6"), "{}", f.message);
    }

    #[test]
    fn a_dns_name_passes() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: my-service, namespace: prod}\nspec:\n  type: ExternalName\n  externalName: my.database.example.com\n",
        );
        assert!(findings.is_empty(), "{findings:#?}");
    }
}
