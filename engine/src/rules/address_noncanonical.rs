//! `address-noncanonical`: an endpoint address or externalIP written with leading zeros in an
//! IPv4 part (`010.1.1.1`). kube-apiserver 1.32 accepts and stores it as written; it and
//! kube-proxy read the parts as decimal (Go's `ParseIPSloppy`), so traffic goes to 10.1.1.1,
//! while other tools read `010` as octal 8. Kubernetes 1.33+ warns that a later release will
//! refuse such addresses. Whether the meant address is allowed is `target-disallowed`'s
//! question: this rule only speaks when it is.

use crate::object::Object;
use crate::policy::RuleAction;
use crate::rules::target_disallowed::{
    TargetField, external_ip_denied, for_each_target, target_denied,
};
use crate::rules::{Context, Draft};
use crate::target::leading_zero_ip;

pub const ID: &str = "address-noncanonical";
pub const SUMMARY: &str = "IPv4 address written with leading zeros: Kubernetes reads the parts as decimal, other tools as octal";
pub const DEFAULT: RuleAction = RuleAction::Warn;

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    let mut drafts = Vec::new();
    // `denied` and `field` are asked only of an address with a leading zero.
    let mut judge = |field: &dyn Fn() -> String,
                     written: &str,
                     denied: &dyn Fn() -> Option<String>| {
        if let Some(ip) = leading_zero_ip(written.trim())
            && denied().is_none()
        {
            drafts.push(Draft::violation(
                field(),
                format!(
                    "{:?} has an IPv4 part with a leading zero: Kubernetes reads it as {ip} (decimal), other tools read such parts as octal, and Kubernetes 1.33+ warns that a later release will refuse it; write {ip}",
                    written.trim()
                ),
            ));
        }
    };
    for_each_target(object, |field, written| {
        // An IP in externalName is denied by externalname-ip whatever its spelling.
        if !matches!(field, TargetField::ExternalName) {
            judge(&|| field.to_string(), written, &|| target_denied(written, cx));
        }
    });
    if let Object::Service(service) = object {
        let external_ips = service.spec.as_ref().and_then(|s| s.external_ips.as_ref());
        for (i, written) in external_ips.into_iter().flatten().enumerate() {
            judge(
                &|| format!("spec.externalIPs[{i}]"),
                written,
                &|| external_ip_denied(written, cx),
            );
        }
    }
    drafts
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::Mode;
    use crate::rules::testing::*;

    const ZEROS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  ports: [{port: 5432}]
  externalIPs: ["203.0.113.010"]
---
apiVersion: v1
kind: Endpoints
metadata: {name: db}
subsets:
  - addresses: [{ip: "010.1.1.1"}, {ip: 10.1.1.2}]
    ports: [{port: 5432}]
"#;

    #[test]
    fn an_endpoint_address_with_a_leading_zero_is_warned_with_what_kubernetes_reads() {
        let findings = judge_set(ZEROS);
        let f = one(&findings, RuleId::AddressNoncanonical, Action::Warn, "db");
        assert_eq!(f.field, "subsets[0].addresses[0].ip");
        assert!(
            f.message.starts_with("\"010.1.1.1\" has an IPv4 part with a leading zero: Kubernetes reads it as 10.1.1.1"),
            "{}",
            f.message
        );
        assert!(f.message.ends_with("write 10.1.1.1"), "{}", f.message);
    }

    #[test]
    fn an_external_ip_with_a_leading_zero_is_warned_when_its_meaning_is_allowed() {
        let findings = judge_set_with(
            ZEROS,
            Some("externalIPs:\n  allow: [203.0.113.0/24]\n"),
            Mode::Set,
        );
        let on_service: Vec<_> = of_rule(&findings, RuleId::AddressNoncanonical)
            .into_iter()
            .filter(|f| f.field == "spec.externalIPs[0]")
            .collect();
        assert_eq!(on_service.len(), 1, "{findings:#?}");
        assert!(on_service[0].message.contains("reads it as 203.0.113.10"));
        none(&findings, RuleId::TargetDisallowed);
    }

    #[test]
    fn a_leading_zero_address_whose_meaning_is_denied_is_only_denied() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\nsubsets:\n  - addresses: [{ip: 100.100.100.0200}]\n",
        );
        none(&findings, RuleId::AddressNoncanonical);
        one(&findings, RuleId::TargetDisallowed, Action::Deny, "db");
    }

    #[test]
    fn canonical_addresses_pass() {
        none(
            &judge_set("apiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\nsubsets:\n  - addresses: [{ip: 10.1.1.1}, {ip: \"fd00::10\"}]\n"),
            RuleId::AddressNoncanonical,
        );
    }
}
