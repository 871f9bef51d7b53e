//! Whether the webhook configurations installed in the cluster carry the matchConditions the
//! policy in use needs (`extsvc-guard policy match-conditions`). Conditions generated for
//! another policy may keep from the webhook writes this one judges; `serve` cannot change
//! them (its account only reads), so it says so: a warning in the log when they stop
//! matching, and `extsvc_guard_webhook_conditions_current`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
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
                c.and_then(|c| c.webhooks?.into_iter().next())
                    .map(|w| w.match_conditions.unwrap_or_default())
            });
        let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get_opt(&name)
            .await
            .map(|c| {
                c.and_then(|c| c.webhooks?.into_iter().next())
                    .map(|w| w.match_conditions.unwrap_or_default())
            });
        for (i, (webhook, installed, wanted)) in [
            ("validating", validating, cel::validating(&policy)),
            ("mutating", mutating, cel::mutating(&policy)),
        ]
        .into_iter()
        .enumerate()
        {
            let current = match installed {
                Ok(Some(installed)) => same(&installed, &wanted),
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
                    "the installed matchConditions are not what the policy in use needs: writes it judges may never reach the webhook; generate them with `extsvc-guard policy match-conditions POLICY` and apply them (README, \"The policy\")"
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
