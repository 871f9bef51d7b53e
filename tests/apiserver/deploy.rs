//! `deploy/` as the README installs it (`extsvc-guard certs`, then the self-signed overlay's
//! `render.sh | kubectl apply -f -`), on the real API server: every object accepted; the
//! webhook configurations, with only `clientConfig` pointed at a local `serve`, accepted
//! (their matchConditions compile as CEL) and behaving as in production; and `serve`
//! running with a token of the deployed ServiceAccount, with exactly the deployed RBAC.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::envtest::{self, ControlPlane};
use crate::support::{BIN, Server};
use crate::{
    decisions, endpoints, eventually, metric, metrics, repo, serve_as, service, texts, wait_ready,
};

/// The self-signed overlay rendered as the README says, once per test binary.
struct Rendered {
    objects: Vec<Value>,
    /// `ca.crt`, `tls.crt`, `tls.key` as `extsvc-guard certs` made them for the overlay.
    certs: PathBuf,
}

fn rendered(cp: &ControlPlane) -> &'static Rendered {
    static RENDERED: OnceLock<Rendered> = OnceLock::new();
    RENDERED.get_or_init(|| {
        // A scratch copy of deploy/, as .ci/run makes one: certs/ is written into it.
        let scratch = cp.tempdir().keep();
        let status = Command::new("cp")
            .args(["-R"])
            .arg(repo().join("deploy"))
            .arg(&scratch)
            .status()
            .unwrap();
        assert!(status.success());
        let overlay = scratch.join("deploy/overlays/self-signed");
        let certs = overlay.join("certs");
        let _ = std::fs::remove_dir_all(&certs);
        let out = Command::new(BIN)
            .args(["certs", "--out"])
            .arg(&certs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // render.sh runs the kubectl on PATH: the assets' one.
        let path = format!(
            "{}:{}",
            cp.assets.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(overlay.join("render.sh"))
            .env("PATH", path)
            .env("KUBECACHEDIR", cp.dir.join("kubectl-cache"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "render.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let objects =
            serde_saphyr::from_multiple::<Value>(&String::from_utf8(out.stdout).unwrap()).unwrap();
        Rendered { objects, certs }
    })
}

fn is_webhook_configuration(object: &Value) -> bool {
    matches!(
        object["kind"].as_str(),
        Some("ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration")
    )
}

/// Applies everything the overlay renders but the webhook configurations (whose Service
/// has no Pods here: every call would fail), once; returns kubectl's output of that apply.
pub fn install_rendered(cp: &ControlPlane) -> String {
    static INSTALLED: Mutex<Option<String>> = Mutex::new(None);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    installed
        .get_or_insert_with(|| {
            let objects: Vec<&Value> = rendered(cp)
                .objects
                .iter()
                .filter(|o| !is_webhook_configuration(o))
                .collect();
            cp.apply(&json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string())
        })
        .clone()
}

/// The rendered webhook configurations with `clientConfig.service` swapped for a URL of
/// `server` (the caBundle render.sh filled in stays).
fn configurations_calling(cp: &ControlPlane, server: &Server) -> Vec<Value> {
    rendered(cp)
        .objects
        .iter()
        .filter(|o| is_webhook_configuration(o))
        .cloned()
        .map(|mut configuration| {
            for webhook in configuration["webhooks"].as_array_mut().unwrap() {
                let client = webhook["clientConfig"].as_object_mut().unwrap();
                let service = client.remove("service").expect("clientConfig.service");
                client.insert(
                    "url".to_owned(),
                    json!(format!(
                        "https://127.0.0.1:{}{}",
                        server.addr.port(),
                        service["path"].as_str().unwrap()
                    )),
                );
            }
            configuration
        })
        .collect()
}

/// The cluster-wide configurations, removed when dropped — and only once the API server
/// no longer calls them, so that no later test meets a webhook whose server is gone.
struct ClusterWide<'a> {
    cp: &'a ControlPlane,
    server: &'a Server,
    probe_namespace: String,
}

impl Drop for ClusterWide<'_> {
    fn drop(&mut self) {
        for kind in [
            "validatingwebhookconfiguration",
            "mutatingwebhookconfiguration",
        ] {
            self.cp.kubectl(
                &["delete", kind, "extsvc-guard", "--ignore-not-found"],
                None,
            );
        }
        let probe = ext_ip(&self.probe_namespace, "extsvc-guard-gone-probe");
        let called = || self.server.logs().len();
        eventually(
            Duration::from_secs(30),
            "the API server stops calling the removed webhooks",
            || {
                let before = called();
                let out = self
                    .cp
                    .kubectl(&["create", "--dry-run=server", "-f", "-"], Some(&probe));
                (out.status.success() && called() == before).then_some(())
            },
        );
    }
}

fn ext_ip(namespace: &str, name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
           "spec": {"type": "ExternalName", "externalName": "192.168.1.10"}})
    .to_string()
}

/// An Endpoints, or an EndpointSlice, pointing at Alibaba Cloud's metadata server: denied
/// on its own (target-disallowed), and an address the API server's validation accepts.
fn metadata_target(kind: &str, namespace: &str, name: &str) -> String {
    match kind {
        "Endpoints" => json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": namespace},
            "subsets": [{"addresses": [{"ip": "100.100.100.200"}], "ports": [{"port": 80}]}]}),
        _ => json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["100.100.100.200"]}], "ports": [{"port": 80}]}),
    }
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rendered_webhooks_are_accepted_and_never_called_for_kube_system_the_webhooks_namespace_or_the_control_plane()
 {
    // Cluster-wide, as deployed: no other test may run meanwhile.
    let Some(cp) = envtest::control_plane_alone() else {
        return;
    };
    let installed = install_rendered(&cp);
    assert!(installed.contains("namespace/extsvc-guard "), "{installed}");
    let rendered = rendered(&cp);
    // serve with the overlay's certificates and the deployed policy (the ConfigMap's file).
    let dir = cp.tempdir();
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::copy(rendered.certs.join(file), dir.path().join(file)).unwrap();
    }
    let policy = rendered
        .objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "extsvc-guard-policy")
        .expect("the policy ConfigMap");
    let policy_file = dir.path().join("deployed-policy.yaml");
    std::fs::write(
        &policy_file,
        policy["data"]["policy.yaml"].as_str().unwrap(),
    )
    .unwrap();
    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_owned();
    let policy_file = policy_file.to_str().unwrap().to_owned();
    let server = Server::start_in(
        dir,
        &["--kubeconfig", &kubeconfig, "--policy", &policy_file],
    );
    wait_ready(&server).await;

    let configurations = configurations_calling(&cp, &server);
    assert_eq!(configurations.len(), 2);
    let judged = cp.namespace("deployed-judged", &[]);
    let _cluster_wide = ClusterWide {
        cp: &cp,
        server: &server,
        probe_namespace: judged.clone(),
    };
    // Accepted as they are: matchConditions compiled, namespaceSelector and rules valid.
    let applied =
        cp.apply(&json!({"apiVersion": "v1", "kind": "List", "items": configurations}).to_string());
    assert_eq!(
        applied,
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/extsvc-guard created\nvalidatingwebhookconfiguration.admissionregistration.k8s.io/extsvc-guard created\n"
    );
    // The deployed (default) policy patches nothing: the mutating webhook is registered
    // for nothing, and only /validate is called.
    cp.wait_called(&server, &judged, false);

    let create = |args: &[&str], manifest: &str| {
        let args = [&["create", "-f", "-"], args].concat();
        texts(&cp.kubectl(&args, Some(manifest)))
    };
    // Judged: a namespace of its own.
    let (_, stderr) = create(&[], &ext_ip(&judged, "ext-ip"));
    assert!(
        stderr.contains("denied the request: [externalname-ip]"),
        "{stderr}"
    );
    // Never sent: kube-system and the webhook's own namespace.
    for ns in ["kube-system", "extsvc-guard"] {
        assert_eq!(
            create(&[], &ext_ip(ns, "deployed-ext-ip")),
            (
                "service/deployed-ext-ip created\n".to_owned(),
                String::new()
            ),
            "{ns}"
        );
        let stored: Value = serde_json::from_str(&cp.kubectl_ok(
            &["get", "-n", ns, "service/deployed-ext-ip", "-o", "json"],
            None,
        ))
        .unwrap();
        assert!(
            stored["metadata"]["labels"].is_null(),
            "not mutated either: {stored:#}"
        );
    }
    // Never sent: the control plane's writers (the admin may impersonate them); the same
    // objects written by the admin are denied.
    for (user, kind) in [
        (
            "system:serviceaccount:kube-system:endpoint-controller",
            "Endpoints",
        ),
        (
            "system:serviceaccount:kube-system:endpointslice-controller",
            "EndpointSlice",
        ),
    ] {
        let name = format!("by-controller-{}", kind.to_lowercase());
        let (stdout, stderr) = create(
            &[&format!("--as={user}")],
            &metadata_target(kind, &judged, &name),
        );
        assert!(
            stdout.ends_with(&format!("/{name} created\n")),
            "{user}: {stdout}{stderr}"
        );
        let (_, stderr) = create(
            &[],
            &metadata_target(kind, &judged, &format!("by-admin-{}", kind.to_lowercase())),
        );
        assert!(
            stderr.contains("denied the request: [target-disallowed]"),
            "{stderr}"
        );
    }

    let seen = decisions(&server);
    let places: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|d| {
            (
                d["namespace"].as_str().unwrap_or(""),
                d["name"].as_str().unwrap_or(""),
                d["path"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        !places.iter().any(|(ns, name, _)| *ns == "kube-system"
            || *ns == "extsvc-guard"
            || name.starts_with("by-controller")),
        "{places:#?}"
    );
    // A person's writes in a judged namespace are judged; the default policy patches
    // nothing, so none of them reaches /mutate.
    for (name, paths) in [
        ("ext-ip", &["/validate"][..]),
        ("by-admin-endpoints", &["/validate"]),
        ("by-admin-endpointslice", &["/validate"]),
    ] {
        for path in ["/mutate", "/validate"] {
            assert_eq!(
                places.contains(&(judged.as_str(), name, path)),
                paths.contains(&path),
                "{name} {path}: {places:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_with_a_token_of_the_deployed_service_account_syncs_and_confirms_a_denial() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    install_rendered(&cp);
    let dir = cp.tempdir();
    // What `kubectl create token` gives: the account the Deployment runs as, with the
    // rendered ClusterRole and nothing else.
    let kubeconfig = cp.token_kubeconfig("extsvc-guard", "extsvc-guard", dir.path());
    let server = serve_as(&kubeconfig, &[]);
    wait_ready(&server).await;
    let ns = cp.namespace("deployed-rbac", &[]);
    let _webhooks = cp.register(&server, "extsvc-guard-deployed-rbac", &[&ns]);

    let pair = json!({"apiVersion": "v1", "kind": "List", "items": [
        service(&ns, "mysql-svc", "default-ep"),
        endpoints(&ns, "mysql-ep", "mysql"),
    ]});
    let out = cp.kubectl(&["apply", "-f", "-"], Some(&pair.to_string()));
    let (stdout, stderr) = texts(&out);
    assert_eq!(stdout, "service/mysql-svc created\n", "{stderr}");
    assert!(
        stderr.contains(&format!(
            "denied the request: [endpoints-orphaned] Endpoints {ns}/mysql-ep"
        )) && stderr.contains(&format!("\n[port-name-mismatch] Endpoints {ns}/mysql-ep")),
        "{stderr}"
    );
    // The denial rested on Service mysql-svc: it was confirmed by a read with the token.
    let text = metrics(&server).await;
    assert!(
        metric(
            &text,
            "extsvc_guard_confirmations_total{outcome=\"confirmed\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(
        !server
            .logs()
            .iter()
            .any(|l| l.contains("missing permission")),
        "{:#?}",
        server.logs()
    );
}
