//! With kube-controller-manager running: what its controllers write — Endpoints and
//! EndpointSlices for selector Services, EndpointSlices mirrored from hand-written
//! Endpoints — is never judged, whether the webhook configuration's matchConditions keep it
//! from the webhook (as deployed) or the server itself skips it (a configuration without
//! them).

use std::time::Duration;

use serde_json::{Value, json};

use crate::envtest::{self, ControlPlane};
use crate::support::Server;
use crate::{decisions, eventually, serve, texts, wait_ready};

/// Two namespaces judged by `server`: the first as deployed, the second by a configuration
/// without matchConditions, so that the controllers' writes reach the server.
fn register_both<'a>(
    cp: &'a ControlPlane,
    server: &Server,
    tag: &str,
) -> (String, String, [envtest::Webhooks<'a>; 2]) {
    let (deployed, unconditioned) = (
        cp.namespace(&format!("{tag}-deployed"), &[]),
        cp.namespace(&format!("{tag}-unconditioned"), &[]),
    );
    let webhooks = [
        cp.register(
            server,
            &format!("extsvc-guard-{tag}-deployed"),
            &[&deployed],
        ),
        cp.register_edited(
            server,
            &format!("extsvc-guard-{tag}-unconditioned"),
            &[&unconditioned],
            |webhook| {
                webhook.as_object_mut().unwrap().remove("matchConditions");
            },
        ),
    ];
    (deployed, unconditioned, webhooks)
}

/// The server's decisions about objects of `kind` in `namespace`: (path, operation, verdict).
fn decided(server: &Server, namespace: &str, kind: &str) -> Vec<(String, String, String)> {
    decisions(server)
        .into_iter()
        .filter(|d| d["namespace"] == namespace && d["kind"] == kind)
        .map(|d| {
            let field = |k: &str| d[k].as_str().unwrap_or("").to_owned();
            (field("path"), field("operation"), field("verdict"))
        })
        .collect()
}

/// Waits until `kubectl get what -n namespace -o json` satisfies `ready`; returns it.
fn wait_for(
    cp: &ControlPlane,
    namespace: &str,
    what: &[&str],
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let args = [&["get", "-n", namespace, "-o", "json"], what].concat();
    eventually(
        Duration::from_secs(60),
        &format!("kubectl {}", args.join(" ")),
        || {
            let out = cp.kubectl(&args, None);
            let value: Value = serde_json::from_slice(&out.stdout).ok()?;
            ready(&value).then_some(value)
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_endpoints_and_slices_the_controllers_write_for_a_selector_service_are_never_judged() {
    let Some(cp) = envtest::control_plane_with_controllers() else {
        return;
    };
    let server = serve(&cp, &[]);
    wait_ready(&server).await;
    let (deployed, unconditioned, _webhooks) = register_both(&cp, &server, "selector");
    // A ready Pod on a Node (neither has a kubelet: the status is written by hand), so the
    // controllers have an address to write.
    let node = format!("node-{}", cp.unique());
    cp.apply(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}).to_string());
    for (n, ns) in [&deployed, &unconditioned].into_iter().enumerate() {
        // The ServiceAccount admission wants the namespace's default account, which the
        // controller manager creates.
        wait_for(&cp, ns, &["serviceaccount", "default"], |_| true);
        cp.apply(
            &json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-0", "namespace": ns, "labels": {"app": "web"}},
                "spec": {"nodeName": node, "containers": [{"name": "web", "image": "nginx"}]}
            })
            .to_string(),
        );
        let ip = format!("10.244.0.{}", 10 + n);
        cp.kubectl_ok(
            &[
                "patch",
                "-n",
                ns,
                "pod",
                "web-0",
                "--subresource=status",
                "--type=merge",
                "-p",
                &json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                    "conditions": [{"type": "Ready", "status": "True"}]}})
                .to_string(),
            ],
            None,
        );
        let out = cp.kubectl(
            &["apply", "-f", "-"],
            Some(
                &json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "web", "namespace": ns},
                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
                })
                .to_string(),
            ),
        );
        assert_eq!(
            texts(&out),
            ("service/web created\n".to_owned(), String::new())
        );
        wait_for(&cp, ns, &["endpoints", "web"], |e| {
            e["subsets"][0]["addresses"][0]["ip"] == ip.as_str()
        });
        wait_for(
            &cp,
            ns,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
            |list| list["items"][0]["endpoints"][0]["addresses"][0] == ip.as_str(),
        );
    }

    // As deployed: the controllers' writes never reach the webhook.
    for kind in ["Endpoints", "EndpointSlice"] {
        assert_eq!(decided(&server, &deployed, kind), [], "{kind}");
    }
    // Without matchConditions they do, and the server skips them unjudged.
    for kind in ["Endpoints", "EndpointSlice"] {
        let seen = decided(&server, &unconditioned, kind);
        assert!(
            !seen.is_empty(),
            "{kind}: the controller's writes reach the server"
        );
        assert!(
            seen.iter().all(|(_, _, verdict)| verdict == "skipped"),
            "{kind}: {seen:?}"
        );
    }
    // The Service itself, written by the admin, was judged in both.
    for ns in [&deployed, &unconditioned] {
        assert!(
            decided(&server, ns, "Service").contains(&(
                "/validate".to_owned(),
                "CREATE".to_owned(),
                "allowed".to_owned()
            )),
            "{ns}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_written_endpoints_get_a_mirrored_slice_that_nothing_denies() {
    let Some(cp) = envtest::control_plane_with_controllers() else {
        return;
    };
    let server = serve(&cp, &[]);
    wait_ready(&server).await;
    let (deployed, unconditioned, _webhooks) = register_both(&cp, &server, "mirroring");
    for ns in [&deployed, &unconditioned] {
        let pair = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mysql", "namespace": ns},
             "spec": {"ports": [{"name": "mysql", "port": 3306, "targetPort": 3306}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "mysql", "namespace": ns},
             "subsets": [{"addresses": [{"ip": "114.32.146.154"}], "ports": [{"name": "mysql", "port": 3306}]}]}
        ]});
        let out = cp.kubectl(&["apply", "-f", "-"], Some(&pair.to_string()));
        assert_eq!(
            texts(&out),
            (
                "service/mysql created\nendpoints/mysql created\n".to_owned(),
                String::new()
            )
        );
        let slices = wait_for(
            &cp,
            ns,
            &["endpointslices", "-l", "kubernetes.io/service-name=mysql"],
            |list| list["items"][0]["endpoints"][0]["addresses"][0] == "114.32.146.154",
        );
        assert_eq!(
            slices["items"][0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslicemirroring-controller.k8s.io"
        );
        // With the mirrored slice beside them, the pair is still judged clean: a change to
        // the Endpoints and to the Service, each judged against it.
        for what in ["endpoints/mysql", "service/mysql"] {
            let out = cp.kubectl(&["annotate", "-n", ns, what, "note=checked"], None);
            let (stdout, stderr) = texts(&out);
            assert_eq!(stderr, "", "{what} in {ns}");
            assert!(stdout.ends_with("annotated\n"), "{stdout}");
        }
        // And updated by the mirroring controller after the change.
        let mut moved = pair.clone();
        moved["items"][1]["subsets"][0]["addresses"][0]["ip"] = json!("114.32.146.155");
        let out = cp.kubectl(&["apply", "-f", "-"], Some(&moved.to_string()));
        assert_eq!(texts(&out).1, "", "{ns}");
        wait_for(
            &cp,
            ns,
            &["endpointslices", "-l", "kubernetes.io/service-name=mysql"],
            |list| list["items"][0]["endpoints"][0]["addresses"][0] == "114.32.146.155",
        );
    }
    assert_eq!(decided(&server, &deployed, "EndpointSlice"), []);
    let seen = decided(&server, &unconditioned, "EndpointSlice");
    assert!(
        !seen.is_empty(),
        "the mirroring controller's writes reach the server"
    );
    assert!(seen.iter().all(|(_, _, v)| v == "skipped"), "{seen:?}");
    for ns in [&deployed, &unconditioned] {
        let judged: Vec<_> = decided(&server, ns, "Endpoints")
            .into_iter()
            .chain(decided(&server, ns, "Service"))
            .filter(|(path, _, _)| path == "/validate")
            .collect();
        assert!(
            judged.len() >= 5 && judged.iter().all(|(_, _, v)| v == "allowed"),
            "{ns}: {judged:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_written_addresses_applied_over_the_controllers_endpoints_are_denied_as_overwritten() {
    let Some(cp) = envtest::control_plane_with_controllers() else {
        return;
    };
    let ns = cp.namespace("overwritten", &[]);
    let server = serve(&cp, &[]);
    wait_ready(&server).await;
    let _webhooks = cp.register(&server, "extsvc-guard-overwritten", &[&ns]);
    // docs/examples/endpoints-overwritten.yaml, in this namespace: a selector Service and
    // hand-written Endpoints for it. On a cluster the endpoints controller writes the
    // Service's Endpoints a moment after the Service is created, so kubectl apply usually
    // finds them and patches them: the Service first, then the file, makes that certain.
    let example =
        std::fs::read_to_string(crate::repo().join("docs/examples/endpoints-overwritten.yaml"))
            .unwrap()
            .replace("namespace: default", &format!("namespace: {ns}"));
    let service = example.split("\n---\n").next().unwrap();
    assert!(service.contains("kind: Service"), "{service}");
    assert_eq!(cp.apply(service), "service/web created\n");
    wait_for(&cp, &ns, &["endpoints", "web"], |e| {
        e["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"].is_string()
    });
    let out = cp.kubectl(&["apply", "-f", "-"], Some(&example));
    let (stdout, stderr) = texts(&out);
    assert_eq!(stdout, "service/web unchanged\n", "{stderr}");
    assert!(
        stderr.contains(&format!(
            "admission webhook \"validate.extsvc-guard.io\" denied the request: [endpoints-overwritten] Endpoints {ns}/web"
        )),
        "{stdout}{stderr}"
    );
}
