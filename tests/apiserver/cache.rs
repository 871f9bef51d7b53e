//! `serve`'s view of the cluster, fed by the real API server's lists and watches: changes
//! reach the rules, namespace labels reach the mutation, `--watch-namespace` watches only
//! what it is given, and a missing permission is named. Verdicts are read by sending
//! reviews straight to `serve`; the cluster is changed with kubectl.

use serde_json::{Value, json};

use crate::envtest;
use crate::{
    account_with, endpoints, metric, metrics, readyz, serve, serve_as, service, until_verdict,
    validate, verdict, wait_ready,
};

/// Polls until a review of `object` needs no confirmation read that overturns the cache:
/// the cache itself has caught up. A dead watch never gets there.
async fn cache_follows(server: &crate::support::Server, object: &Value) {
    let overturned = |text: &str| {
        metric(
            text,
            "extsvc_guard_confirmations_total{outcome=\"overturned\"}",
        )
        .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let before = overturned(&metrics(server).await);
        validate(server, object).await;
        if overturned(&metrics(server).await) == before {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cache never caught up: {:#?}",
            server.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn services_added_changed_and_deleted_in_the_cluster_reach_the_rules() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("cache-changes", &[]);
    let server = serve(&cp, &[]);
    wait_ready(&server).await;
    let ep = endpoints(&ns, "mysql-svc", "mysql");
    // No Service at all: orphaned, but with no likely Service only a warning.
    until_verdict(&server, &ep, (true, &[], &["endpoints-orphaned"])).await;

    cp.apply(&service(&ns, "mysql-svc", "default-ep").to_string());
    let r = until_verdict(&server, &ep, (false, &["port-name-mismatch"], &[])).await;
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("Service mysql-svc has \"default-ep\"/TCP"),
        "{r:#}"
    );

    cp.apply(&service(&ns, "mysql-svc", "mysql").to_string());
    until_verdict(&server, &ep, (true, &[], &[])).await;
    cache_follows(&server, &ep).await;

    cp.kubectl_ok(&["delete", "-n", &ns, "service", "mysql-svc"], None);
    until_verdict(&server, &ep, (true, &[], &["endpoints-orphaned"])).await;
    let text = metrics(&server).await;
    assert!(
        metric(
            &text,
            "extsvc_guard_confirmations_total{outcome=\"confirmed\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "the port-name-mismatch denial was confirmed by a read: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_label_is_copied_onto_what_kubectl_applies_and_follows_a_relabel() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("cache-labels", &[("team", "payments")]);
    let dir = cp.tempdir();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "requiredMetadata:\n  labels:\n    - {key: team, fromNamespaceLabel: team}\nshapeMetadata: false\n",
    )
    .unwrap();
    let server = serve(&cp, &["--policy", policy.to_str().unwrap()]);
    wait_ready(&server).await;
    let _webhooks = cp.register_for_policy(&server, "extsvc-guard-cache-labels", &[&ns], &policy);

    let db = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
               "spec": {"type": "ExternalName", "externalName": "db.example.com"}})
        .to_string()
    };
    assert_eq!(cp.apply(&db("db")), "service/db created\n");
    let stored: Value =
        serde_json::from_str(&cp.kubectl_ok(&["get", "-n", &ns, "service/db", "-o", "json"], None))
            .unwrap();
    assert_eq!(stored["metadata"]["labels"], json!({"team": "payments"}));

    // The namespace is relabelled: what is created next carries the new value.
    cp.kubectl_ok(
        &["label", "namespace", &ns, "team=billing", "--overwrite"],
        None,
    );
    crate::eventually(
        std::time::Duration::from_secs(20),
        "a dry run gets the new label",
        || {
            let out = cp.kubectl(
                &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                Some(&db("db2")),
            );
            let created: Value = serde_json::from_slice(&out.stdout).ok()?;
            (created["metadata"]["labels"]["team"] == "billing").then_some(())
        },
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_watch_namespace_serve_needs_and_reads_only_that_namespace() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let (watched, elsewhere) = (
        cp.namespace("cache-watched", &[]),
        cp.namespace("cache-elsewhere", &[]),
    );
    // Permissions in the watched namespace only, and on that one Namespace (a list or
    // watch with fieldSelector metadata.name is authorized by resourceNames): any
    // cluster-wide list or watch would be refused, and /readyz would stay 503.
    let dir = cp.tempdir();
    let kubeconfig = {
        let name = "watch-one";
        cp.apply(
            &json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": watched}},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, "namespace": watched},
                 "rules": [
                    {"apiGroups": [""], "resources": ["services", "endpoints"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name, "namespace": watched},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                 "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": watched}]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": format!("{watched}-{name}")},
                 "rules": [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [watched], "verbs": ["get", "list", "watch"]}]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": format!("{watched}-{name}")},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{watched}-{name}")},
                 "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": watched}]}
            ]})
            .to_string(),
        );
        cp.token_kubeconfig(&watched, name, dir.path())
    };
    let server = serve_as(&kubeconfig, &["--watch-namespace", &watched]);
    wait_ready(&server).await;
    assert!(
        !server
            .logs()
            .iter()
            .any(|l| l.contains("missing permission")),
        "{:#?}",
        server.logs()
    );
    // In the watched namespace a missing Service is known to be missing.
    until_verdict(
        &server,
        &endpoints(&watched, "mysql-svc", "mysql"),
        (true, &[], &["endpoints-orphaned"]),
    )
    .await;
    // Elsewhere the cache knows nothing and concludes nothing.
    let r = validate(&server, &endpoints(&elsewhere, "mysql-svc", "mysql")).await;
    assert_eq!(verdict(&r), (true, vec![], vec![]), "{r:#}");
    // A cross-object denial in the watched namespace is confirmed with these permissions.
    cp.apply(&service(&watched, "mysql-svc", "default-ep").to_string());
    until_verdict(
        &server,
        &endpoints(&watched, "mysql-svc", "mysql"),
        (false, &["port-name-mismatch"], &[]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_permission_is_reported_naming_the_verb_and_the_resource() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("cache-forbidden", &[]);
    let dir = cp.tempdir();
    // The deployed ClusterRole, less `list` on endpointslices.
    let kubeconfig = account_with(
        &cp,
        &ns,
        "no-list",
        json!([
            {"apiGroups": [""], "resources": ["services", "endpoints", "namespaces"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "watch"]}
        ]),
        dir.path(),
    );
    let server = serve_as(&kubeconfig, &[]);
    let line = server.wait_log("missing permission: cannot list endpointslices");
    assert!(
        line.contains(
            "grant it to the account extsvc-guard runs as (serve: the ClusterRole in deploy/base"
        ),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "User \\\"system:serviceaccount:{ns}:no-list\\\" cannot list resource \\\"endpointslices\\\""
        )),
        "the API server's own words: {line}"
    );
    let (code, body) = readyz(&server).await;
    assert_eq!(code, 503, "{body}");
    // Everything else is listed; endpointslices never.
    let synced = |text: &str, resource: &str| {
        metric(
            text,
            &format!("extsvc_guard_cache_synced{{resource=\"{resource}\",namespace=\"\"}}"),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = metrics(&server).await;
        assert_eq!(synced(&text, "endpointslices"), Some(0.0), "{text}");
        if ["services", "endpoints", "namespaces"]
            .iter()
            .all(|r| synced(&text, r) == Some(1.0))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(readyz(&server).await.0, 503);
}
