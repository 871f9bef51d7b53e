//! `target-disallowed`: a target nobody should reach through a Service — an endpoint
//! address, an EndpointSlice address, an `externalName` host, or a `spec.externalIPs` entry.
//!
//! Denied: anything in the policy's deny list (loopback, link-local and the cloud metadata
//! servers by default) or in the cluster's own Pod/Service ranges (`clusterCIDRs`,
//! CVE-2021-25740); anything outside the allow list when one is set (cluster-wide or for
//! the namespace); and every externalIP outside the externalIPs allow list (CVE-2020-8554).

use crate::object::Object;
use crate::policy::RuleAction;
use crate::rules::externalname_ip::external_name;
use crate::rules::{Context, Draft};
use crate::target::{Cidr, Target, TargetList, host_part, parse_ip, show_address};

pub const ID: &str = "target-disallowed";
pub const SUMMARY: &str = "endpoint address, externalName host or externalIP that the policy does not allow as a target";
pub const DEFAULT: RuleAction = RuleAction::Deny;

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    let mut drafts = Vec::new();
    for_each_target(object, |field, written| {
        // An endpoint address that is no IP is `address-invalid`'s.
        if !matches!(field, TargetField::ExternalName) && parse_ip(written.trim()).is_none() {
            return;
        }
        if let Some(why) = target_denied(written, cx) {
            drafts.push(Draft::violation(field.to_string(), why));
        }
    });
    if let Object::Service(service) = object {
        let external_ips = service.spec.as_ref().and_then(|s| s.external_ips.as_ref());
        for (i, written) in external_ips.into_iter().flatten().enumerate() {
            if let Some(why) = external_ip_denied(written, cx) {
                drafts.push(Draft::violation(format!("spec.externalIPs[{i}]"), why));
            }
        }
    }
    drafts
}

/// Why the target written as `written` is denied here, or `None` when it is allowed.
pub fn target_denied(written: &str, cx: &Context<'_>) -> Option<String> {
    let target = Target::parse(written);
    let shown = || match &target {
        Target::Ip(ip) => show_address(written, *ip),
        Target::Host(host) => host.clone(),
    };
    denied(&target, shown, cx)
}

/// Where a target is written; spelled out only for a finding (an Endpoints may list 100k).
#[derive(Clone, Copy)]
pub enum TargetField {
    ExternalName,
    Address { subset: usize, index: usize },
    NotReadyAddress { subset: usize, index: usize },
    SliceAddress { endpoint: usize, index: usize },
}

impl std::fmt::Display for TargetField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            TargetField::ExternalName => f.write_str("spec.externalName"),
            TargetField::Address { subset, index } => {
                write!(f, "subsets[{subset}].addresses[{index}].ip")
            }
            TargetField::NotReadyAddress { subset, index } => {
                write!(f, "subsets[{subset}].notReadyAddresses[{index}].ip")
            }
            TargetField::SliceAddress { endpoint, index } => {
                write!(f, "endpoints[{endpoint}].addresses[{index}]")
            }
        }
    }
}

/// Calls `visit` with each address or host the object sends traffic to, and its field.
pub fn for_each_target<'o>(object: &'o Object, mut visit: impl FnMut(TargetField, &'o str)) {
    match object {
        Object::Service(service) => {
            if let Some(name) = external_name(service) {
                let host = host_part(name);
                if !host.is_empty() {
                    visit(TargetField::ExternalName, host);
                }
            }
        }
        Object::Endpoints(e) => {
            for (subset, s) in e.subsets.iter().flatten().enumerate() {
                for (index, a) in s.addresses.iter().flatten().enumerate() {
                    visit(TargetField::Address { subset, index }, &a.ip);
                }
                for (index, a) in s.not_ready_addresses.iter().flatten().enumerate() {
                    visit(TargetField::NotReadyAddress { subset, index }, &a.ip);
                }
            }
        }
        Object::EndpointSlice(s) => {
            for (endpoint, e) in s.endpoints.iter().enumerate() {
                for (index, a) in e.addresses.iter().enumerate() {
                    visit(TargetField::SliceAddress { endpoint, index }, a);
                }
            }
        }
    }
}

/// `shown`: the target as a message names it, spelled out only for a denial.
fn denied(target: &Target, shown: impl Fn() -> String, cx: &Context<'_>) -> Option<String> {
    let policy = cx.policy.policy;
    if let Some(hit) = policy.deny.find(target) {
        return Some(format!(
            "{} is in {hit}, which the policy denies as a target; point it at the external service's real address",
            shown()
        ));
    }
    if let Target::Ip(ip) = target
        && let Some(range) = policy.cluster_cidrs.iter().find(|c| c.contains(*ip))
    {
        return Some(format!(
            "{} is inside the cluster's own Pod/Service range {range} (clusterCIDRs): hand-written endpoints there reach in-cluster workloads around NetworkPolicy (CVE-2021-25740); to reach a workload in the cluster use a Service with a selector",
            shown()
        ));
    }
    let allow = cx.policy.allow;
    if !allow.is_empty() && allow.find(target).is_none() {
        return Some(format!(
            "{} is not in the targets allowed in namespace {} ({}); point it at an allowed target, or ask the platform team to add it to the policy's targets.allow",
            shown(),
            cx.namespace,
            describe(allow)
        ));
    }
    None
}

/// Why the externalIP written as `written` is denied here, or `None` when it is allowed.
pub fn external_ip_denied(written: &str, cx: &Context<'_>) -> Option<String> {
    // An externalIP that is no IP is `address-invalid`'s.
    let ip = parse_ip(written.trim())?;
    let shown = show_address(written, ip);
    if let Some(why) = denied(&Target::Ip(ip), || shown.clone(), cx) {
        return Some(why);
    }
    let allow = &cx.policy.policy.external_ips_allow;
    if allow.iter().any(|c| c.contains(ip)) {
        return None;
    }
    let allowed = if allow.is_empty() {
        "the policy allows none".to_owned()
    } else {
        format!(
            "the policy allows only {}",
            allow
                .iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Some(format!(
        "externalIP {shown}: every node captures traffic for an externalIP, which lets a Service intercept any address (CVE-2020-8554), and {allowed}; remove spec.externalIPs (use a LoadBalancer or NodePort Service), or ask the platform team to add it to externalIPs.allow"
    ))
}

fn describe(list: &TargetList) -> String {
    let mut parts = Vec::new();
    if !list.cidrs.is_empty() {
        parts.push(
            list.cidrs
                .iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if !list.hosts.is_empty() {
        parts.push(
            list.hosts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::Mode;
    use crate::rules::testing::*;

    fn endpoints_at(ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: db}}\nspec:\n  ports: [{{port: 5432}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: db}}\nsubsets:\n  - addresses: [{{ip: \"{ip}\"}}]\n    ports: [{{port: 5432}}]\n"
        )
    }

    #[test]
    fn the_cloud_metadata_address_is_denied_and_explained() {
        let findings = judge_set(&endpoints_at("169.254.169.254"));
        let f = one(&findings, RuleId::TargetDisallowed, Action::Deny, "db");
        assert_eq!(f.field, "subsets[0].addresses[0].ip");
        assert!(f.message.contains("169.254.0.0/16"), "{}", f.message);
        assert!(f.message.contains("metadata server"), "{}", f.message);
    }

    #[test]
    fn every_default_deny_range_is_denied() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "::",
            "::1",
            "169.254.1.1",
            "fe80::1",
            "224.0.0.1",
            "ff02::1",
            "100.100.100.200",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
        ] {
            let findings = judge_set(&endpoints_at(ip));
            one(&findings, RuleId::TargetDisallowed, Action::Deny, "db");
        }
    }

    #[test]
    fn an_address_with_leading_zeros_is_judged_as_the_address_kubernetes_reads() {
        // kube-proxy dials 100.100.100.200, the Alibaba Cloud metadata server.
        let findings = judge_set(&endpoints_at("100.100.100.0200"));
        let f = one(&findings, RuleId::TargetDisallowed, Action::Deny, "db");
        assert!(
            f.message.starts_with(
                "\"100.100.100.0200\" (read by Kubernetes as 100.100.100.200) is in 100.100.100.200/32"
            ),
            "{}",
            f.message
        );
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n  externalIPs: [\"169.254.169.0254\"]\n";
        let f = one(&judge_set(svc), RuleId::TargetDisallowed, Action::Deny, "web");
        assert!(f.message.contains("(read by Kubernetes as 169.254.169.254) is in 169.254.0.0/16"), "{}", f.message);
    }

    #[test]
    fn public_and_private_addresses_pass_by_default() {
        for ip in [
            "114.32.146.154",
            "10.0.0.5",
            "192.168.1.10",
            "2001:db8::1",
            "100.100.100.201",
        ] {
            let findings = judge_set(&endpoints_at(ip));
            none(&findings, RuleId::TargetDisallowed);
        }
    }

    #[test]
    fn cluster_cidrs_are_denied_with_the_cve_named() {
        let findings = judge_set_with(
            &endpoints_at("10.96.0.10"),
            Some("clusterCIDRs: [10.96.0.0/12]"),
            Mode::Set,
        );
        let f = one(&findings, RuleId::TargetDisallowed, Action::Deny, "db");
        assert!(f.message.contains("CVE-2021-25740"), "{}", f.message);
    }

    #[test]
    fn metadata_host_names_in_external_name_are_denied() {
        for host in [
            "metadata.google.internal",
            "localhost",
            "foo.localhost",
            "Instance-Data.",
        ] {
            let findings = judge_set(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: ext}}\nspec:\n  type: ExternalName\n  externalName: {host}\n"
            ));
            assert!(
                of_rule(&findings, RuleId::TargetDisallowed).len() == 1,
                "{host}: {findings:#?}"
            );
        }
    }

    #[test]
    fn an_allow_list_denies_everything_outside_it() {
        let policy =
            "targets:\n  allow:\n    cidrs: [203.0.113.0/24]\n    hosts: [\"*.example.com\"]\n";
        let inside = judge_set_with(&endpoints_at("203.0.113.9"), Some(policy), Mode::Set);
        none(&inside, RuleId::TargetDisallowed);
        let outside = judge_set_with(&endpoints_at("198.51.100.9"), Some(policy), Mode::Set);
        let f = one(&outside, RuleId::TargetDisallowed, Action::Deny, "db");
        assert!(
            f.message.contains("203.0.113.0/24; *.example.com"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_namespace_allow_list_replaces_the_cluster_wide_one() {
        let policy = "targets:\n  allow:\n    cidrs: [203.0.113.0/24]\nnamespaces:\n  - names: [default]\n    targets:\n      allow:\n        cidrs: [198.51.100.0/24]\n";
        let findings = judge_set_with(&endpoints_at("198.51.100.9"), Some(policy), Mode::Set);
        none(&findings, RuleId::TargetDisallowed);
    }

    #[test]
    fn the_deny_list_wins_over_the_allow_list() {
        let policy = "targets:\n  allow:\n    cidrs: [0.0.0.0/0]\n";
        let findings = judge_set_with(&endpoints_at("127.0.0.1"), Some(policy), Mode::Set);
        one(&findings, RuleId::TargetDisallowed, Action::Deny, "db");
    }

    #[test]
    fn external_ips_are_denied_unless_allowed() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n  externalIPs: [203.0.113.10]\n";
        let f = one(
            &judge_set(svc),
            RuleId::TargetDisallowed,
            Action::Deny,
            "web",
        );
        assert_eq!(f.field, "spec.externalIPs[0]");
        assert!(f.message.contains("CVE-2020-8554"), "{}", f.message);
        let allowed = judge_set_with(
            svc,
            Some("externalIPs:\n  allow: [203.0.113.0/24]\n"),
            Mode::Set,
        );
        none(&allowed, RuleId::TargetDisallowed);
    }

    #[test]
    fn slice_addresses_are_checked() {
        let findings = judge_set(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: db-1, labels: {kubernetes.io/service-name: db}}\naddressType: IPv4\nendpoints: [{addresses: [203.0.113.7]}, {addresses: [127.0.0.1]}]\nports: [{port: 5432}]\n",
        );
        let f = one(&findings, RuleId::TargetDisallowed, Action::Deny, "db-1");
        assert_eq!(f.field, "endpoints[1].addresses[0]");
    }
}
