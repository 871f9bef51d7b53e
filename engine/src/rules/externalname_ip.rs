//! `externalname-ip`: an IP address in `spec.externalName`. The API server accepts it (each
//! digit group is a valid DNS label), but CoreDNS — the cluster DNS nearly everywhere —
//! serves no record for it: its kubernetes plugin makes a CNAME of an ExternalName only
//! when the value is a name, and for an IP answers NXDOMAIN (plugin/kubernetes, `externalName`
//! records are skipped when `net.ParseIP` reads an IP). In-cluster clients never resolve it.
//!
//! Other consumers read the IP themselves: external-dns publishes such a Service as an A
//! record, and ingress controllers (ingress-nginx, Traefik) proxy to it as an Ingress or
//! HTTPRoute backend. With such a consumer in sight, the finding is a warning that names it
//! and says what still breaks (policy `consumerAware`).

use k8s_openapi::api::core::v1::Service;

use crate::object::{Object, SERVICE_NAME_LABEL};
use crate::policy::RuleAction;
use crate::rules::{Context, Draft, other_consumers};
use crate::target::{host_part, parse_ip};

pub const ID: &str = "externalname-ip";
pub const SUMMARY: &str = "IP address in spec.externalName: cluster DNS cannot CNAME to an IP, the name never resolves";
pub const DEFAULT: RuleAction = RuleAction::Deny;

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
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
    let namespace = cx.namespace;
    let replacement = format!(
        "a Service without selector (remove type: ExternalName and externalName, keep the ports) plus an EndpointSlice labelled {SERVICE_NAME_LABEL}: {name} with addressType: {address_type}, endpoints: [{{addresses: [\"{ip}\"]}}] and ports: [{ports}]"
    );
    let consumers = other_consumers(cx, name, service.metadata.annotations.as_ref());
    if consumers.is_empty() {
        return vec![Draft::violation(
            "spec.externalName",
            format!(
                "{external_name:?} is an IP address: CoreDNS serves no record for an ExternalName that is an IP (it makes CNAMEs of names only), so lookups of {name}.{namespace}.svc fail with NXDOMAIN and in-cluster clients never connect; replace it with {replacement}"
            ),
        )];
    }
    vec![Draft::advisory(
        "spec.externalName",
        format!(
            "{external_name:?} is an IP address, which its other consumers read directly ({}), but CoreDNS serves no record for it, so in-cluster lookups of {name}.{namespace}.svc fail with NXDOMAIN; for in-cluster clients, use a Service without selector and an EndpointSlice with {ip} instead",
            consumers.join(", ")
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
    fn the_message_says_what_coredns_does_with_an_ip_external_name() {
        // CoreDNS's kubernetes plugin serves no record for an ExternalName that parses as
        // an IP (it only makes CNAMEs of names): lookups get NXDOMAIN.
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext-ip, namespace: shop}\nspec:\n  type: ExternalName\n  externalName: 192.168.1.10\n",
        );
        let f = one(&findings, RuleId::ExternalnameIp, Action::Deny, "ext-ip");
        assert!(
            f.message.starts_with("\"192.168.1.10\" is an IP address: CoreDNS serves no record for an ExternalName that is an IP (it makes CNAMEs of names only), so lookups of ext-ip.shop.svc fail with NXDOMAIN"),
            "{}",
            f.message
        );
        assert!(!f.message.contains("CNAME to it"), "{}", f.message);
    }

    const EXTERNAL_DNS: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: nas\n  namespace: home\n  annotations: {external-dns.alpha.kubernetes.io/hostname: nas.example.com}\nspec:\n  type: ExternalName\n  externalName: 192.168.1.5\n";

    #[test]
    fn a_service_external_dns_publishes_is_warned_naming_it_and_what_still_breaks() {
        let findings = judge_set(EXTERNAL_DNS);
        let f = one(&findings, RuleId::ExternalnameIp, Action::Warn, "nas");
        assert!(
            f.message.starts_with("\"192.168.1.5\" is an IP address, which its other consumers read directly (external-dns (annotation external-dns.alpha.kubernetes.io/hostname)), but CoreDNS serves no record for it, so in-cluster lookups of nas.home.svc fail with NXDOMAIN"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_service_an_ingress_or_route_proxies_to_is_warned_naming_it() {
        for consumer in [
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: home}\nspec:\n  rules: [{host: nas.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: nas, port: {number: 5000}}}}]}}]\n",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: edge}\nspec:\n  rules: [{backendRefs: [{name: nas, namespace: home, port: 5000}]}]\n",
        ] {
            let findings = judge_set(&format!(
                "{}---\n{consumer}",
                EXTERNAL_DNS.replace("  annotations: {external-dns.alpha.kubernetes.io/hostname: nas.example.com}\n", "")
            ));
            let f = one(&findings, RuleId::ExternalnameIp, Action::Warn, "nas");
            assert!(
                f.message.contains("Ingress home/web") || f.message.contains("HTTPRoute edge/web"),
                "{}",
                f.message
            );
        }
    }

    #[test]
    fn a_policy_that_is_not_consumer_aware_denies_as_for_dns_clients() {
        let findings = judge_set_with(
            EXTERNAL_DNS,
            Some("consumerAware: false\n"),
            crate::rules::Mode::Set,
        );
        one(&findings, RuleId::ExternalnameIp, Action::Deny, "nas");
    }

    #[test]
    fn a_dns_name_passes() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: my-service, namespace: prod}\nspec:\n  type: ExternalName\n  externalName: my.database.example.com\n",
        );
        assert!(findings.is_empty(), "{findings:#?}");
    }
}
