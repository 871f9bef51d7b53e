//! `externalname-cross-namespace`: an ExternalName that aliases a Service of another
//! namespace (`<service>.<other>.svc`). Clients of this namespace then reach a workload of
//! the other one by a name of their own — the confused-deputy pattern of CVE-2021-25740,
//! where a namespace's Service is a door into another's. A supported and common pattern,
//! so off by default; a policy that keeps namespaces apart turns it on.

use crate::object::Object;
use crate::policy::RuleAction;
use crate::rules::externalname_ip::external_name;
use crate::rules::{Context, Draft};
use crate::target::in_cluster_service;

pub const ID: &str = "externalname-cross-namespace";
pub const SUMMARY: &str = "ExternalName aliasing a Service of another namespace (off by default; CVE-2021-25740's confused deputy)";
pub const DEFAULT: RuleAction = RuleAction::Off;

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
    if namespace == cx.namespace {
        return Vec::new();
    }
    vec![Draft::violation(
        "spec.externalName",
        format!(
            "{target:?} aliases Service {namespace}/{name} of another namespace: clients in {} reach it by a name of their own, a door the policy keeps shut between namespaces (CVE-2021-25740); call {name}.{namespace}.svc directly, or ask the platform team to allow it for this namespace",
            cx.namespace
        ),
    )]
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::Mode;
    use crate::rules::testing::*;

    const ALIAS: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec:\n  type: ExternalName\n  externalName: postgres.data.svc.cluster.local\n---\napiVersion: v1\nkind: Service\nmetadata: {name: postgres, namespace: data}\nspec:\n  selector: {app: postgres}\n  ports: [{port: 5432}]\n";

    #[test]
    fn a_cross_namespace_alias_is_allowed_by_default() {
        none(&judge_set(ALIAS), RuleId::ExternalnameCrossNamespace);
    }

    #[test]
    fn a_policy_can_deny_a_cross_namespace_alias() {
        let findings = judge_set_with(
            ALIAS,
            Some("rules:\n  externalname-cross-namespace: deny\n"),
            Mode::Set,
        );
        let f = one(&findings, RuleId::ExternalnameCrossNamespace, Action::Deny, "db");
        assert!(f.message.contains("CVE-2021-25740"), "{}", f.message);
        // Within the namespace, nothing to say.
        let same = ALIAS.replace("postgres.data.svc", "postgres.shop.svc");
        none(
            &judge_set_with(&same, Some("rules:\n  externalname-cross-namespace: deny\n"), Mode::Set),
            RuleId::ExternalnameCrossNamespace,
        );
    }
}
