//! `externalname-host-mismatch`: an ExternalName Service on HTTP(S)-like ports. Clients
//! connect to the Service name, so HTTP `Host` and TLS SNI carry `my-svc`, not the external
//! host: virtual-hosted servers answer 404 and certificate checks fail unless clients set
//! them to the external name.

use crate::finding::Action;
use crate::object::Object;
use crate::rules::externalname_ip::external_name;
use crate::rules::{Context, Draft};
use crate::target::{dns_name_problem, host_part, parse_ip};

pub const ID: &str = "externalname-host-mismatch";
pub const SUMMARY: &str = "ExternalName Service on HTTP(S) ports: clients send the Service name as Host/SNI, not the external host";
pub const DEFAULT: Action = Action::Warn;

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

pub fn check(object: &Object, _cx: &Context<'_>) -> Vec<Draft> {
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
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let looks_http = |p: &k8s_openapi::api::core::v1::ServicePort| {
        HTTP_PORTS.contains(&p.port)
            || p.name
                .as_deref()
                .is_some_and(|n| HTTP_NAMES.contains(&n.to_ascii_lowercase().as_str()))
            || p.app_protocol
                .as_deref()
                .is_some_and(|a| HTTP_NAMES.contains(&a.to_ascii_lowercase().as_str()))
    };
    let Some((i, port)) = ports.iter().enumerate().find(|(_, p)| looks_http(p)) else {
        return Vec::new();
    };
    let target = target.trim_end_matches('.');
    vec![Draft::violation(
        format!("spec.ports[{i}]"),
        format!(
            "port {} looks like HTTP(S): clients that connect to {name} send Host: {name} and TLS SNI {name}, not {target:?}, so a virtual-hosted server answers the wrong site and certificate checks fail; have clients send Host/SNI {target}, or alias a proxy that rewrites them",
            port.port
        ),
    )]
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
    fn an_alias_on_a_database_port_or_without_ports_passes() {
        for ports in ["  ports: [{name: mysql, port: 3306}]\n", ""] {
            let findings = judge_set(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: db}}\nspec:\n  type: ExternalName\n  externalName: db.example.com\n{ports}"
            ));
            assert!(findings.is_empty(), "{findings:#?}");
        }
    }
}
