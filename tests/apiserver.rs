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
    pub mod cache;
    pub mod controllers;
    pub mod deploy;
    pub mod drills;
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
