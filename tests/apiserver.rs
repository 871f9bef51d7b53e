//! Against a real kube-apiserver (the envtest convention: `KUBEBUILDER_ASSETS` names a
//! directory with kube-apiserver, etcd and kubectl; see `support/envtest.rs` and the
//! README, "Testing"): `kubectl apply` — the real kubectl — to the API server, which calls
//! the real `extsvc-guard serve` registered with `clientConfig.url`; `serve` and `scan`
//! reading the cluster with the permissions deploy/ and the README grant; the API server
//! going away. One test binary for all of them: each binary costs link time, and they share
//! one control plane.
//!
//! Without `KUBEBUILDER_ASSETS` each test says it is skipped and returns.

mod support;

#[path = "support/envtest.rs"]
mod envtest;

mod apiserver {
    pub mod audit;
    pub mod cache;
    pub mod conditions;
    pub mod consumers;
    pub mod controllers;
    pub mod deploy;
    pub mod drills;
    pub mod guard;
    pub mod kubectl_apply;
    pub mod scan;
}

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use envtest::ControlPlane;
use support::Server;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `extsvc-guard serve` watching the cluster as the admin, plus `extra` arguments.
pub fn serve(cp: &ControlPlane, extra: &[&str]) -> Server {
    serve_as(&cp.kubeconfig, extra)
}

/// `extsvc-guard serve` watching the cluster with the credentials of `kubeconfig`.
pub fn serve_as(kubeconfig: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `/readyz` of the server's metrics listener: (status, body).
pub async fn readyz(server: &Server) -> (u16, String) {
    support::install_crypto();
    let r = reqwest::get(server.metrics_url("/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits until `/readyz` answers 200: the watch cache has its initial lists.
pub async fn wait_ready(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(server).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready: {:?}\n{:#?}",
            readyz(server).await,
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn metrics(server: &Server) -> String {
    support::install_crypto();
    reqwest::get(server.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The decisions `server` logged (JSON lines), the registration probes left out.
pub fn decisions(server: &Server) -> Vec<Value> {
    server
        .logs()
        .iter()
        .filter(|l| l.contains("\"message\":\"decision\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["name"] != envtest::PROBE)
        .collect()
}

/// kubectl's stdout and stderr as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `condition` (blocking) until it holds, for at most `limit`; panics with `what`.
pub fn eventually<T>(limit: Duration, what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// Reviews sent straight to `serve`, for what its cache concludes

/// The rule ids of a validation answer: (allowed, denying, warning).
pub fn verdict(r: &Value) -> (bool, Vec<String>, Vec<String>) {
    let ids = |lines: Vec<&str>| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| Some(l.strip_prefix('[')?.split(']').next()?.to_owned()))
            .collect()
    };
    let denied = ids(r["status"]["message"]
        .as_str()
        .unwrap_or("")
        .lines()
        .collect());
    let warned = ids(r["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect());
    (r["allowed"] == true, denied, warned)
}

/// `object`'s CREATE, reviewed by `/validate` directly: the response.
pub async fn validate(server: &Server, object: &Value) -> Value {
    let client = support::client(&server.ca(), support::Http::Two);
    let answer = support::post(
        &client,
        &server.url("/validate"),
        support::review("u", "CREATE", object),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["response"].clone()
}

/// Polls [`validate`] until its verdict is `expected` (allowed, denying, warning rule ids).
pub async fn until_verdict(
    server: &Server,
    object: &Value,
    expected: (bool, &[&str], &[&str]),
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = validate(server, object).await;
        let (allowed, denied, warned) = verdict(&r);
        if allowed == expected.0 && denied == expected.1 && warned == expected.2 {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "expected {expected:?}, still {r:#}\n{:#?}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn service(namespace: &str, name: &str, port_name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": "None", "ports": [{"name": port_name, "port": 3306, "protocol": "TCP", "targetPort": 3306}]}
    })
}

pub fn endpoints(namespace: &str, name: &str, port_name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace},
        "subsets": [{"addresses": [{"ip": "114.32.146.154"}], "ports": [{"name": port_name, "port": 3306, "protocol": "TCP"}]}]
    })
}

/// A ServiceAccount `namespace/name` bound to a ClusterRole of `rules` (made for it), and a
/// kubeconfig with its token in `dir`.
pub fn account_with(
    cp: &ControlPlane,
    namespace: &str,
    name: &str,
    rules: Value,
    dir: &Path,
) -> PathBuf {
    let role = format!("{namespace}-{name}");
    cp.apply(
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": role}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": role},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}
        ]})
        .to_string(),
    );
    cp.token_kubeconfig(namespace, name, dir)
}
