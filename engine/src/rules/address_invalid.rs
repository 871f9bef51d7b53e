//! `address-invalid`: an endpoint address or externalIP that is no IP address — a host
//! name, a placeholder, an unrendered template variable, nothing at all (a key written
//! `IP:` is ignored, leaving `ip` empty), or, in an EndpointSlice, an address of the other
//! family than its `addressType`. The API server refuses all of these ("must be a valid IP
//! address", "Required value"); `check` catches them before it does, and says what was
//! meant. (In `spec.externalName`, where a name belongs, `externalname-invalid` judges.)

use crate::object::Object;
use crate::policy::RuleAction;
use crate::rules::target_disallowed::{TargetField, for_each_target};
use crate::rules::{Context, Draft};
use crate::target::{AddressProblem, address_problem};

pub const ID: &str = "address-invalid";
pub const SUMMARY: &str = "endpoint address or externalIP that is no IP address (host name, placeholder, template variable, missing): the API server refuses it";
pub const DEFAULT: RuleAction = RuleAction::Deny;

pub fn check(object: &Object, _cx: &Context<'_>) -> Vec<Draft> {
    let mut drafts = Vec::new();
    let family = match object {
        Object::EndpointSlice(s) => match s.address_type.as_str() {
            "IPv4" => Some("IPv4"),
            "IPv6" => Some("IPv6"),
            // FQDN slices (deprecated) hold names, which no proxy reads.
            _ => return Vec::new(),
        },
        _ => None,
    };
    for_each_target(object, |field, written| {
        if matches!(field, TargetField::ExternalName) {
            return;
        }
        if let Some(problem) = address_problem(written, family) {
            drafts.push(Draft::violation(
                field.to_string(),
                explain(written, &problem, "Endpoints and EndpointSlices"),
            ));
        }
    });
    if let Object::Service(service) = object {
        let external_ips = service.spec.as_ref().and_then(|s| s.external_ips.as_ref());
        for (i, written) in external_ips.into_iter().flatten().enumerate() {
            if let Some(problem) = address_problem(written, None) {
                drafts.push(Draft::violation(
                    format!("spec.externalIPs[{i}]"),
                    explain(written, &problem, "spec.externalIPs"),
                ));
            }
        }
    }
    drafts
}

fn explain(written: &str, problem: &AddressProblem, takes: &str) -> String {
    let refused = "the API server refuses it (must be a valid IP address)";
    match problem {
        AddressProblem::Missing => "no IP address here: an address is written `- ip: 192.0.2.10`; a key in another case, such as `IP:`, is an unknown field (kubectl apply refuses it, tools that ignore it leave no address), and the API server refuses an address without ip (Required value)".to_owned(),
        AddressProblem::TemplateVariable(variable) => format!(
            "{written:?} is the unrendered template variable {variable}: render the manifest before applying it (helm template, envsubst, kustomize replacements); {refused}"
        ),
        AddressProblem::Placeholder => format!(
            "{written:?} is a placeholder, not an address: write the external service's IP address; {refused}"
        ),
        AddressProblem::HostName => format!(
            "{written:?} is a host name, not an IP address: {takes} take IP addresses only and {refused}; to point a Service at a name, use type: ExternalName with externalName: {}",
            written.trim()
        ),
        AddressProblem::WrongFamily { expected } => {
            let other = if *expected == "IPv4" { "IPv6" } else { "IPv4" };
            format!(
                "{written:?} is not an {expected} address, but this EndpointSlice has addressType: {expected}, and the API server refuses it (must be a valid {expected} address); put it in a slice of addressType: {other}"
            )
        }
        AddressProblem::NotAnAddress => format!("{written:?} is not an IP address; {refused}"),
    }
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::testing::*;

    #[test]
    fn each_kind_of_non_address_is_denied_with_what_was_meant() {
        let findings = judge_set(
            r#"
apiVersion: v1
kind: Service
metadata: {name: nas}
spec:
  ports: [{name: smb, port: 445}]
  externalIPs: [nas.home.lan]
---
apiVersion: v1
kind: Endpoints
metadata: {name: nas}
subsets:
  - addresses: [{IP: 192.168.1.5}, {ip: nas.home.lan}, {ip: IP}, {ip: "${NAS_IP}"}, {ip: 192.168.1.6}]
    ports: [{name: smb, port: 445}]
"#,
        );
        let found: Vec<(String, String)> = of_rule(&findings, RuleId::AddressInvalid)
            .into_iter()
            .map(|f| {
                assert_eq!(f.action, Action::Deny);
                (f.field, f.message)
            })
            .collect();
        let says = |field: &str, text: &str| {
            assert!(
                found.iter().any(|(f, m)| f == field && m.contains(text)),
                "{field}: {text:?} in {found:#?}"
            );
        };
        says("spec.externalIPs[0]", "is a host name, not an IP address: spec.externalIPs take IP addresses only");
        says("subsets[0].addresses[0].ip", "such as `IP:`, is an unknown field");
        says("subsets[0].addresses[1].ip", "use type: ExternalName with externalName: nas.home.lan");
        says("subsets[0].addresses[2].ip", "is a placeholder");
        says("subsets[0].addresses[3].ip", "the unrendered template variable ${NAS_IP}");
        assert_eq!(found.len(), 5, "{found:#?}");
        // What is no IP is not judged as a target as well.
        none(&findings, RuleId::TargetDisallowed);
    }

    #[test]
    fn a_slice_address_of_the_other_family_or_a_name_is_denied() {
        let findings = judge_set(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: nas-1, labels: {kubernetes.io/service-name: nas}}\naddressType: IPv4\nendpoints: [{addresses: [nas.home.lan]}, {addresses: [\"fd00::5\"]}, {addresses: [192.168.1.5]}]\n",
        );
        let found = of_rule(&findings, RuleId::AddressInvalid);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].field, "endpoints[0].addresses[0]");
        assert!(found[1].message.contains("put it in a slice of addressType: IPv6"), "{}", found[1].message);
    }
}
