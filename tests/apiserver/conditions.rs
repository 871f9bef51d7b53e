//! `serve` compares the matchConditions of the webhook configurations installed in the
//! cluster (and the mutating webhook's rules) with what its policy needs, and says when they
//! differ.

use std::time::Duration;

use crate::envtest;
use crate::{metric, metrics, serve};

#[tokio::test(flavor = "multi_thread")]
async fn serve_says_when_the_installed_match_conditions_are_not_what_its_policy_needs() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("conditions", &[]);
    let name = "extsvc-guard-conditions";
    // Installed as deploy/ has them: the default policy's conditions.
    let answering = serve(&cp, &[]);
    let _webhooks = cp.register(&answering, name, &[&ns]);
    let current = |text: &str, webhook: &str| {
        metric(
            text,
            &format!("extsvc_guard_webhook_conditions_current{{webhook=\"{webhook}\"}}"),
        )
    };

    let default_policy = serve(&cp, &["--webhook-configuration", name]);
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics(&default_policy).await;
        if current(&text, "validating").is_some() && current(&text, "mutating").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(current(&text, "validating"), Some(1.0), "{text}");
    assert_eq!(current(&text, "mutating"), Some(1.0), "{text}");

    // A policy that exempts an operator needs a condition the installed ones lack.
    let dir = cp.tempdir();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "exemptSubjects: [{kind: ServiceAccount, namespace: databases, name: patroni}]\n",
    )
    .unwrap();
    let other_policy = serve(
        &cp,
        &[
            "--webhook-configuration",
            name,
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    let line =
        other_policy.wait_log("are not what the policy in use needs: writes it judges or patches");
    assert!(
        line.contains("generate them with `extsvc-guard policy match-conditions POLICY`"),
        "{line}"
    );
    let text = metrics(&other_policy).await;
    assert_eq!(current(&text, "validating"), Some(0.0), "{text}");
    assert_eq!(current(&text, "mutating"), Some(0.0), "{text}");
}
