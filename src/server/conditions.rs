//! Whether the webhook configurations installed in the cluster carry the matchConditions the
//! policy in use needs, and the mutating webhook the rules (`extsvc-guard policy
//! match-conditions`). Conditions or rules generated for another policy may keep from the
//! webhook writes this one judges or patches; `serve` cannot change them (its account only
//! reads), so it says so: a warning in the log when they stop matching, and
//! `extsvc_guard_webhook_conditions_current`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhookConfiguration, RuleWithOperations,
    ValidatingWebhookConfiguration,
};
use kube::{Api, Client};

use crate::policy::cel;
use crate::server::State;

/// How often the installed configurations are read: a policy reload or an edit of the
/// configurations shows within this.
const INTERVAL: Duration = Duration::from_secs(60);

/// Compares the configurations named `name` with what the policy needs, now and every
/// [`INTERVAL`], until the task is aborted.
pub async fn watch(client: Client, name: String, state: Arc<State>) {
    let mut last: [Option<bool>; 2] = [None, None];
    let mut interval = tokio::time::interval(INTERVAL);
    loop {
        interval.tick().await;
        let policy = state.policy();
        let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .get_opt(&name)
            .await
            .map(|c| {
                c.and_then(|c| c.webhooks?.into_iter().next()).map(|w| {
                    same(
                        &w.match_conditions.unwrap_or_default(),
                        &cel::validating(&policy),
                    )
                })
            });
        let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get_opt(&name)
            .await
            .map(|c| {
                c.and_then(|c| c.webhooks?.into_iter().next()).map(|w| {
                    same(
                        &w.match_conditions.unwrap_or_default(),
                        &cel::mutating(&policy),
                    ) && same_resources(
                        &w.rules.unwrap_or_default(),
                        &cel::mutated_resources(&policy),
                    )
                })
            });
        for (i, (webhook, installed)) in [("validating", validating), ("mutating", mutating)]
            .into_iter()
            .enumerate()
        {
            let current = match installed {
                Ok(Some(current)) => current,
                // Not installed (yet), or installed without conditions under another name.
                Ok(None) => {
                    last[i] = None;
                    continue;
                }
                Err(e) => {
                    if last[i].is_some() {
                        tracing::info!(webhook, error = %e, "cannot read the installed webhook configuration {name}; its matchConditions are not compared with the policy");
                    }
                    last[i] = None;
                    continue;
                }
            };
            state.metrics.webhook_conditions(webhook, current);
            if !current && last[i] != Some(false) {
                tracing::warn!(
                    webhook,
                    configuration = %name,
                    "the installed matchConditions (or the mutating webhook's rules) are not what the policy in use needs: writes it judges or patches may never reach the webhook, or reach it for nothing; generate them with `extsvc-guard policy match-conditions POLICY` and apply them (README, \"The policy\")"
                );
            }
            last[i] = Some(current);
        }
    }
}

/// Whether `installed` are exactly `wanted`, in order.
pub fn same(installed: &[MatchCondition], wanted: &[cel::Condition]) -> bool {
    installed.len() == wanted.len()
        && installed
            .iter()
            .zip(wanted)
            .all(|(i, w)| i.name == w.name && i.expression == w.expression)
}

/// Whether `installed` rules name exactly the resources in `wanted`, for exactly the
/// operations the mutating webhook is registered for, in namespaces (the three kinds are
/// namespaced: a rule of scope `Cluster` matches none of their writes).
pub fn same_resources(installed: &[RuleWithOperations], wanted: &[&cel::Resource]) -> bool {
    let mut named = BTreeSet::new();
    for rule in installed {
        if !matches!(rule.scope.as_deref(), None | Some("*" | "Namespaced")) {
            return false;
        }
        let mut operations = rule.operations.clone().unwrap_or_default();
        operations.sort();
        let mut expected = cel::MUTATED_OPERATIONS.map(str::to_owned).to_vec();
        expected.sort();
        if operations != expected {
            return false;
        }
        for group in rule.api_groups.iter().flatten() {
            for version in rule.api_versions.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    named.insert((group.clone(), version.clone(), resource.clone()));
                }
            }
        }
    }
    let wanted: BTreeSet<(String, String, String)> = wanted
        .iter()
        .map(|(group, version, _, resource)| {
            (
                (*group).to_owned(),
                (*version).to_owned(),
                (*resource).to_owned(),
            )
        })
        .collect();
    named == wanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn rule(group: &str, resources: &[&str], operations: &[&str]) -> RuleWithOperations {
        RuleWithOperations {
            api_groups: Some(vec![group.to_owned()]),
            api_versions: Some(vec!["v1".to_owned()]),
            resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
            operations: Some(operations.iter().map(|o| (*o).to_owned()).collect()),
            scope: Some("*".to_owned()),
        }
    }

    #[test]
    fn the_mutating_rules_are_current_only_when_they_name_what_the_policy_patches() {
        let shape = Policy::from_yaml("shapeMetadata: true\n", "p.yaml").unwrap();
        let wanted = cel::mutated_resources(&shape);
        let services = rule("", &["services"], &["UPDATE", "CREATE"]);
        assert!(same_resources(std::slice::from_ref(&services), &wanted));
        // Registered for more: the API server evaluates conditions for nothing.
        let more = rule("", &["services", "endpoints"], &["CREATE", "UPDATE"]);
        assert!(!same_resources(&[more], &wanted));
        // Registered for less: patches the policy asks for never happen.
        assert!(!same_resources(&[], &wanted));
        assert!(!same_resources(
            &[rule("", &["services"], &["CREATE"])],
            &wanted
        ));
        let mut cluster_scoped = rule("", &["services"], &["CREATE", "UPDATE"]);
        cluster_scoped.scope = Some("Cluster".to_owned());
        assert!(!same_resources(&[cluster_scoped], &wanted));
        let none = Policy::from_yaml("shapeMetadata: false\n", "p.yaml").unwrap();
        assert!(same_resources(&[], &cel::mutated_resources(&none)));
    }
}
