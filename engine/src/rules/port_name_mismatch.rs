//! `port-name-mismatch`: Endpoints/EndpointSlice ports whose (name, protocol) matches no
//! port of the Service. kube-proxy pairs endpoint ports with Service ports by name and
//! protocol, so a Service port that no endpoint port matches has no backends.
//!
//! Fires only when some Service port is left without any endpoint port (an extra, unused
//! endpoint port breaks nothing). When the endpoints have no Service of their own name, they
//! are compared with the Service they were likely meant for (see `endpoints-orphaned`), so
//! the user learns both fixes at once.

use std::collections::BTreeSet;

use crate::cluster::{EndpointPort, ServiceInfo, ServicePortInfo};
use crate::object::Object;
use crate::policy::RuleAction;
use crate::rules::{Context, Draft, Mode, either, hand_written_endpoints, port_label};

pub const ID: &str = "port-name-mismatch";
pub const SUMMARY: &str = "Endpoints/EndpointSlice port (name, protocol) that matches no Service port: kube-proxy pairs ports by name";
pub const DEFAULT: RuleAction = RuleAction::Deny;

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    if let Object::Service(service) = object {
        return match cx.mode {
            // In a set each mismatch is reported once, on the endpoints side.
            Mode::Set => Vec::new(),
            Mode::Admission => service_ports_unserved(&ServiceInfo::of(service), cx),
        };
    }
    let Some(subject) = cx.endpoints_subject() else {
        return Vec::new();
    };
    if subject.ports.is_empty() {
        return Vec::new();
    }
    let Some(paired) = cx.paired_service() else {
        return Vec::new();
    };
    let service = &paired.service;

    // Every (name, protocol) some endpoints of this Service serve: the subject's own and, for
    // its real Service, those of its hand-written partners (mirrored slices only copy an
    // Endpoints, possibly an older version of the one under judgement).
    let mut served: BTreeSet<(String, String)> = subject
        .ports
        .iter()
        .map(|p| (p.port.name.clone(), p.port.protocol.clone()))
        .collect();
    if !paired.likely {
        for other in hand_written_endpoints(cx, service) {
            if other.kind == subject.kind && other.name == subject.name {
                continue;
            }
            served.extend(other.ports.into_iter().map(|p| (p.name, p.protocol)));
        }
    }
    let unserved: Vec<&ServicePortInfo> = service
        .ports
        .iter()
        .filter(|sp| !served.contains(&(sp.name.clone(), sp.protocol.clone())))
        .collect();
    if unserved.is_empty() {
        return Vec::new();
    }

    let service_has = either(
        &service
            .ports
            .iter()
            .map(|sp| port_label(&sp.name, &sp.protocol))
            .collect::<Vec<_>>(),
    );
    let context = if paired.likely {
        format!(
            " ({} is the Service these endpoints look meant for)",
            service.name
        )
    } else {
        String::new()
    };
    let mut reported = BTreeSet::new();
    let mut drafts = Vec::new();
    for p in &subject.ports {
        let key = (p.port.name.clone(), p.port.protocol.clone());
        let matched = service
            .ports
            .iter()
            .any(|sp| sp.name == p.port.name && sp.protocol == p.port.protocol);
        if matched || !reported.insert(key) {
            continue;
        }
        let same_name_other_protocol = service.ports.iter().any(|sp| sp.name == p.port.name);
        let what = if same_name_other_protocol {
            "of that name and protocol"
        } else {
            "of that name"
        };
        let fix = rename_suggestion(p.port.port, &p.port.protocol, &unserved)
            .map(|to| {
                if to.is_empty() {
                    "remove this port's name".to_owned()
                } else {
                    format!("rename this port to {to:?}")
                }
            })
            .unwrap_or_else(|| {
                "give this port the name and protocol of the Service port it serves".to_owned()
            });
        drafts.push(Draft::violation(
            format!("{}.name", p.field),
            format!(
                "{} port {} has no Service port {what}; Service {} has {service_has}{context}. kube-proxy pairs ports by name and protocol, so the Service port gets no backends: {fix}",
                subject.kind,
                port_label(&p.port.name, &p.port.protocol),
                service.name,
            ),
        ));
    }
    drafts
}

/// The Service under review (created after its endpoints, or with a port renamed or its
/// protocol changed) has ports that none of its hand-written endpoints serve.
fn service_ports_unserved(service: &ServiceInfo, cx: &Context<'_>) -> Vec<Draft> {
    if !service.takes_hand_written_endpoints() {
        return Vec::new();
    }
    let endpoints = hand_written_endpoints(cx, service);
    let mut served: Vec<(EndpointPort, String)> = Vec::new();
    for e in &endpoints {
        for p in &e.ports {
            match served.iter_mut().find(|(q, _)| q.name == p.name && q.protocol == p.protocol) {
                Some((_, owners)) => owners.push_str(&format!(", {}", e.describe())),
                None => served.push((p.clone(), e.describe())),
            }
        }
    }
    if served.is_empty() {
        return Vec::new();
    }
    let endpoints_have = served
        .iter()
        .map(|(p, owners)| format!("{} ({owners})", port_label(&p.name, &p.protocol)))
        .collect::<Vec<_>>();
    // Endpoint ports no Service port pairs with: what a renamed Service port most likely was.
    let unpaired: Vec<&EndpointPort> = served
        .iter()
        .map(|(p, _)| p)
        .filter(|p| {
            !service
                .ports
                .iter()
                .any(|sp| sp.name == p.name && sp.protocol == p.protocol)
        })
        .collect();
    let mut drafts = Vec::new();
    for (i, sp) in service.ports.iter().enumerate() {
        if served
            .iter()
            .any(|(p, _)| p.name == sp.name && p.protocol == sp.protocol)
        {
            continue;
        }
        let same_protocol: Vec<&&EndpointPort> =
            unpaired.iter().filter(|p| p.protocol == sp.protocol).collect();
        let candidate = match same_protocol.as_slice() {
            [only] => Some(**only),
            many => many.iter().find(|p| p.port == sp.port).map(|p| **p),
        };
        let fix = match candidate {
            Some(p) if p.name.is_empty() => {
                "remove this port's name, or name the endpoints' port the same".to_owned()
            }
            Some(p) => format!(
                "rename this port to {:?}, or rename the endpoints' port to {:?}",
                p.name, sp.name
            ),
            None => "give the endpoints a port of this name and protocol".to_owned(),
        };
        drafts.push(Draft::violation(
            format!("spec.ports[{i}].name"),
            format!(
                "Service port {} has no endpoint port of that name and protocol; its hand-written endpoints have {}. kube-proxy pairs ports by name and protocol, so this port gets no backends: {fix}",
                port_label(&sp.name, &sp.protocol),
                either(&endpoints_have),
            ),
        ));
    }
    drafts
}

/// The Service port name an endpoint port most likely should carry: the only unserved
/// Service port of its protocol, or the unserved one with the same number.
fn rename_suggestion<'a>(
    port: i32,
    protocol: &str,
    unserved: &[&'a ServicePortInfo],
) -> Option<&'a str> {
    let same_protocol: Vec<&&ServicePortInfo> = unserved
        .iter()
        .filter(|sp| sp.protocol == protocol)
        .collect();
    match same_protocol.as_slice() {
        [only] => Some(only.name.as_str()),
        many => many
            .iter()
            .find(|sp| sp.port == port)
            .map(|sp| sp.name.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::testing::*;

    #[test]
    fn the_seed_pair_lists_both_sides_of_the_mismatch() {
        let findings = judge_set(MYSQL_PAIR);
        let f = one(
            &findings,
            RuleId::PortNameMismatch,
            Action::Deny,
            "mysql-ep",
        );
        assert_eq!(f.field, "subsets[0].ports[0].name");
        assert!(
            f.message.starts_with(
                "Endpoints port \"mysql\"/TCP has no Service port of that name; Service mysql-svc has \"default-ep\"/TCP"
            ),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("rename this port to \"default-ep\""),
            "{}",
            f.message
        );
    }

    /// Judges `service` as admission would, with `existing` already in the cluster.
    fn admit_service(service: &str, existing: &str) -> Vec<crate::finding::Finding> {
        let (objects, _) = crate::rules::testing::objects(service);
        let (_, view) = crate::rules::testing::objects(existing);
        crate::rules::judge(
            &objects[0],
            &view,
            &crate::policy::Policy::embedded(),
            crate::rules::Mode::Admission,
        )
    }

    const EXTERNAL_SERVICE: &str = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: external-service}\nsubsets:\n  - addresses: [{ip: 11.11.11.11}, {ip: 22.22.22.22}]\n    ports: [{name: mysql, port: 3306}]\n";

    #[test]
    fn a_service_port_renamed_away_from_its_hand_written_endpoints_is_denied() {
        let findings = admit_service(
            "apiVersion: v1\nkind: Service\nmetadata: {name: external-service}\nspec:\n  ports: [{name: db, port: 3306}]\n",
            EXTERNAL_SERVICE,
        );
        let f = one(
            &findings,
            RuleId::PortNameMismatch,
            Action::Deny,
            "external-service",
        );
        assert_eq!(f.field, "spec.ports[0].name");
        assert!(
            f.message.starts_with("Service port \"db\"/TCP has no endpoint port of that name and protocol; its hand-written endpoints have \"mysql\"/TCP (Endpoints external-service)"),
            "{}",
            f.message
        );
        assert!(
            f.message.ends_with("rename this port to \"mysql\", or rename the endpoints' port to \"db\""),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_service_whose_protocol_changed_under_its_endpoints_is_denied() {
        let findings = admit_service(
            "apiVersion: v1\nkind: Service\nmetadata: {name: external-service}\nspec:\n  ports: [{name: mysql, port: 3306, protocol: UDP}]\n",
            EXTERNAL_SERVICE,
        );
        one(&findings, RuleId::PortNameMismatch, Action::Deny, "external-service");
    }

    #[test]
    fn a_service_that_pairs_with_its_endpoints_or_has_none_passes() {
        let pairs = admit_service(
            "apiVersion: v1\nkind: Service\nmetadata: {name: external-service}\nspec:\n  ports: [{name: mysql, port: 3306}]\n",
            EXTERNAL_SERVICE,
        );
        none(&pairs, RuleId::PortNameMismatch);
        let alone = admit_service(
            "apiVersion: v1\nkind: Service\nmetadata: {name: other}\nspec:\n  ports: [{name: db, port: 3306}]\n",
            EXTERNAL_SERVICE,
        );
        none(&alone, RuleId::PortNameMismatch);
    }

    #[test]
    fn in_a_set_the_mismatch_is_reported_once_on_the_endpoints() {
        let findings = judge_set(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: external-service}}\nspec:\n  ports: [{{name: db, port: 3306}}]\n---\n{EXTERNAL_SERVICE}"
        ));
        let f = one(
            &findings,
            RuleId::PortNameMismatch,
            Action::Deny,
            "external-service",
        );
        assert_eq!(f.object.kind, crate::object::Kind::Endpoints);
    }

    #[test]
    fn matching_names_pass_even_when_port_numbers_differ() {
        // IP + port mapping: Service 3306, endpoints 3307 — valid for a ClusterIP Service.
        let findings = judge_set(
            r#"
apiVersion: v1
kind: Service
metadata: {name: mysql}
spec:
  ports: [{name: mysql, port: 3306, targetPort: 3307}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: mysql}
subsets:
  - addresses: [{ip: 192.168.1.10}]
    ports: [{name: mysql, port: 3307}]
"#,
        );
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn unnamed_ports_on_both_sides_match() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  ports: [{port: 5432}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\nsubsets:\n  - addresses: [{ip: 203.0.113.7}]\n    ports: [{port: 5432}]\n",
        );
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn a_named_endpoint_port_for_an_unnamed_service_port_is_told_to_drop_its_name() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  ports: [{port: 5432}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\nsubsets:\n  - addresses: [{ip: 203.0.113.7}]\n    ports: [{name: postgres, port: 5432}]\n",
        );
        let f = one(&findings, RuleId::PortNameMismatch, Action::Deny, "db");
        assert!(
            f.message.contains("Service db has (unnamed)/TCP"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("remove this port's name"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_protocol_mismatch_is_named_as_such() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: dns}\nspec:\n  ports: [{name: dns, port: 53, protocol: UDP}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: dns}\nsubsets:\n  - addresses: [{ip: 203.0.113.53}]\n    ports: [{name: dns, port: 53}]\n",
        );
        let f = one(&findings, RuleId::PortNameMismatch, Action::Deny, "dns");
        assert!(
            f.message
                .contains("\"dns\"/TCP has no Service port of that name and protocol"),
            "{}",
            f.message
        );
    }

    #[test]
    fn an_extra_endpoint_port_breaks_nothing_and_passes() {
        let findings = judge_set(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  ports: [{name: pg, port: 5432}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\nsubsets:\n  - addresses: [{ip: 203.0.113.7}]\n    ports: [{name: pg, port: 5432}, {name: metrics, port: 9187}]\n",
        );
        none(&findings, RuleId::PortNameMismatch);
    }

    #[test]
    fn ports_served_by_another_slice_of_the_same_service_count() {
        let findings = judge_set(
            r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 80}, {name: https, port: 443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-http, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [203.0.113.7]}]
ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-https, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [203.0.113.7]}]
ports: [{name: https, port: 443}]
"#,
        );
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn a_slice_port_name_mismatch_is_reported_on_the_slice_port() {
        let findings = judge_set(
            r#"
apiVersion: v1
kind: Service
metadata: {name: mysql-svc}
spec:
  ports: [{name: default-ep, port: 3306}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: mysql-svc-manual, labels: {kubernetes.io/service-name: mysql-svc}}
addressType: IPv4
endpoints: [{addresses: [114.32.146.154]}]
ports: [{name: mysql, port: 3306, protocol: TCP}]
"#,
        );
        let f = one(
            &findings,
            RuleId::PortNameMismatch,
            Action::Deny,
            "mysql-svc-manual",
        );
        assert_eq!(f.field, "ports[0].name");
        assert!(
            f.message.starts_with("EndpointSlice port \"mysql\"/TCP"),
            "{}",
            f.message
        );
    }
}
