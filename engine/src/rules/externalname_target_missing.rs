//! `externalname-target-missing`: an ExternalName that aliases a cluster-internal name,
//! `<service>.<namespace>.svc[.cluster.local]`, whose Service does not exist. CoreDNS
//! answers the alias with a CNAME to that name, and the name itself with NXDOMAIN: the
//! alias leads nowhere. A warning by default, since the Service may be applied next; in
//! another namespace at most a warning, since only the request's namespace is read afresh.

use crate::object::Object;
use crate::policy::RuleAction;
use crate::rules::externalname_ip::external_name;
use crate::rules::{Context, Draft};
use crate::target::in_cluster_service;

pub const ID: &str = "externalname-target-missing";
pub const SUMMARY: &str = "ExternalName aliasing <service>.<namespace>.svc when that Service does not exist: the alias leads nowhere";
pub const DEFAULT: RuleAction = RuleAction::Warn;

pub fn check(object: &Object, cx: &Context<'_>) -> Vec<Draft> {
    let Object::Service(service) = object else {
        return Vec::new();
    };
    let Some(target) = external_name(service) else {
        return Vec::new();
    };
    let Some((name, namespace)) = in_cluster_service(target) else {
        return Vec::new();
    };
    if !cx.view.sees_cluster(&namespace) || cx.view.service(&namespace, &name).is_some() {
        return Vec::new();
    }
    let message = format!(
        "{target:?} is the in-cluster name of Service {namespace}/{name}, which does not exist: cluster DNS answers the alias with a CNAME to it and the name with NXDOMAIN, so clients never connect; create Service {name} in namespace {namespace}, or correct the name"
    );
    if namespace == cx.namespace {
        vec![Draft::violation("spec.externalName", message)]
    } else {
        vec![Draft::advisory("spec.externalName", message)]
    }
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::testing::*;

    fn alias_to(target: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: shop}}\nspec:\n  type: ExternalName\n  externalName: {target}\n"
        )
    }

    #[test]
    fn an_alias_to_a_missing_in_cluster_service_is_warned() {
        let findings = judge_set(&alias_to("postgres.shop.svc.cluster.local"));
        let f = one(&findings, RuleId::ExternalnameTargetMissing, Action::Warn, "db");
        assert!(
            f.message.starts_with("\"postgres.shop.svc.cluster.local\" is the in-cluster name of Service shop/postgres, which does not exist"),
            "{}",
            f.message
        );
    }

    #[test]
    fn an_alias_to_an_existing_service_or_an_external_name_passes() {
        let findings = judge_set(&format!(
            "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: postgres, namespace: shop}}\nspec:\n  selector: {{app: postgres}}\n  ports: [{{port: 5432}}]\n",
            alias_to("postgres.shop.svc")
        ));
        none(&findings, RuleId::ExternalnameTargetMissing);
        none(
            &judge_set(&alias_to("db.example.com")),
            RuleId::ExternalnameTargetMissing,
        );
    }

    #[test]
    fn a_policy_may_deny_a_missing_target_in_the_same_namespace_only() {
        let policy = Some("rules:\n  externalname-target-missing: deny\n");
        let same = judge_set_with(&alias_to("postgres.shop.svc"), policy, crate::rules::Mode::Set);
        one(&same, RuleId::ExternalnameTargetMissing, Action::Deny, "db");
        let other = judge_set_with(&alias_to("postgres.data.svc"), policy, crate::rules::Mode::Set);
        one(&other, RuleId::ExternalnameTargetMissing, Action::Warn, "db");
    }
}
