//! `externalname-host-mismatch`: an ExternalName Service on HTTP(S)-like ports. Clients
//! connect to the Service name, so HTTP `Host` and TLS SNI carry `my-svc`, not the external
//! host: virtual-hosted servers answer 404 and certificate checks fail unless clients set
//! them to the external name.

use crate::object::Object;
use crate::policy::RuleAction;
use crate::rules::externalname_ip::external_name;
use crate::rules::{Context, Draft, other_consumers};
use crate::target::{dns_name_problem, host_part, normalize_host, parse_ip};
use k8s_openapi::api::core::v1::ServicePort;

pub const ID: &str = "externalname-host-mismatch";
pub const SUMMARY: &str = "ExternalName Service on HTTP(S) ports: clients send the Service name as Host/SNI, not the external host";
pub const DEFAULT: RuleAction = RuleAction::Warn;

const HTTP_PORTS: [i32; 4] = [80, 443, 8080, 8443];
const HTTP_NAMES: [&str; 9] = [
    "http",
    "https",
    "http2",
    "h2",
    "h2c",
    "grpc",
    "kubernetes.io/h2c",
    "kubernetes.io/ws",
    "kubernetes.io/wss",
];
/// Protocols a port name (`tcp-proxy`, as Istio names ports) or `appProtocol` may declare
/// that no HTTP client speaks: such a port carries no Host header, whatever its number.
const NOT_HTTP: [&str; 10] = [
    "tcp", "udp", "sctp", "mysql", "postgres", "postgresql", "redis", "mongo", "amqp", "kafka",
];

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    let Object::Service(service) = object else {
        return Vec::new();
    };
    let Some(target) = external_name(service) else {
        return Vec::new();
    };
    if dns_name_problem(target).is_some() || parse_ip(host_part(target)).is_some() {
        return Vec::new();
    }
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let target = normalize_host(target);
    // `unifi` → `unifi.`: clients send the name they use, which is the target.
    if target == name {
        return Vec::new();
    }
    // An ingress controller or Gateway sends the public Host (or sets one by annotation),
    // not the Service name.
    if !other_consumers(cx, name, None).is_empty() {
        return Vec::new();
    }
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some((i, port)) = ports.iter().enumerate().find(|(_, p)| looks_http(p)) else {
        return Vec::new();
    };
    vec![Draft::violation(
        format!("spec.ports[{i}]"),
        format!(
            "port {} looks like HTTP(S): clients that connect to {name} send Host: {name} and TLS SNI {name}, not {target:?}, so a virtual-hosted server answers the wrong site and certificate checks fail; have clients send Host/SNI {target}, or alias a proxy that rewrites them",
            port.port
        ),
    )]
}

/// A port an HTTP(S) client plausibly uses: named or `appProtocol`-marked as HTTP, or on a
/// usual HTTP port number unless its name or `appProtocol` says another protocol.
fn looks_http(port: &ServicePort) -> bool {
    let protocol_of = |text: &str| {
        let lower = text.to_ascii_lowercase();
        lower.split(['-', '_']).next().unwrap_or_default().to_owned()
    };
    let declared: Vec<&str> = [port.name.as_deref(), port.app_protocol.as_deref()]
        .into_iter()
        .flatten()
        .filter(|t| !t.is_empty())
        .collect();
    let named_http = declared.iter().any(|t| {
        HTTP_NAMES.contains(&t.to_ascii_lowercase().as_str())
            || HTTP_NAMES.contains(&protocol_of(t).as_str())
    });
    let named_other = declared
        .iter()
        .any(|t| NOT_HTTP.contains(&protocol_of(t).as_str()));
    named_http || (HTTP_PORTS.contains(&port.port) && !named_other)
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::testing::*;

    #[test]
    fn an_alias_on_port_443_is_warned_about_host_and_sni() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec:\n  type: ExternalName\n  externalName: api.somecompany.com\n  ports: [{port: 443}]\n",
        );
        let f = one(
            &findings,
            RuleId::ExternalnameHostMismatch,
            Action::Warn,
            "api",
        );
        assert_eq!(f.field, "spec.ports[0]");
        assert!(f.message.contains("Host: api"), "{}", f.message);
    }

    #[test]
    fn ports_named_for_another_protocol_or_route_only_backends_are_not_warned() {
        for (ports, extra) in [
            ("[{name: tcp-443, port: 443}]", ""),
            ("[{port: 443, appProtocol: tcp}]", ""),
            (
                "[{port: 443}]",
                "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: api}\nspec:\n  rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 443}}}}]}}]\n",
            ),
        ] {
            let findings = judge_set(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: api}}\nspec:\n  type: ExternalName\n  externalName: api.somecompany.com\n  ports: {ports}\n{extra}"
            ));
            none(&findings, RuleId::ExternalnameHostMismatch);
        }
    }

    #[test]
    fn an_alias_to_its_own_name_with_a_trailing_dot_is_not_a_mismatch() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: unifi}\nspec:\n  type: ExternalName\n  externalName: unifi.\n  ports: [{port: 443}]\n",
        );
        none(&findings, RuleId::ExternalnameHostMismatch);
    }

    #[test]
    fn a_port_named_http_is_warned_whatever_its_number() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec:\n  type: ExternalName\n  externalName: api.somecompany.com\n  ports: [{name: http-api, port: 9000}]\n",
        );
        one(&findings, RuleId::ExternalnameHostMismatch, Action::Warn, "api");
    }

    #[test]
    fn an_alias_on_a_database_port_or_without_ports_passes() {
        for ports in ["  ports: [{name: mysql, port: 3306}]\n", ""] {
            let findings = judge_set(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: db}}\nspec:\n  type: ExternalName\n  externalName: db.example.com\n{ports}"
            ));
            assert!(findings.is_empty(), "{findings:#?}");
        }
    }
}
