//! Issue 20 on the real API server: every side of a pair, every write path and every writer
//! is guarded. The real kubectl writes (create, patch, apply of a directory, impersonated
//! operators) to the API server, which calls `serve` registered as deployed; one test per
//! row of the issue's table and per item of its build list.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::apiserver::kubectl_apply::readme_block;
use crate::envtest::{self, ControlPlane};
use crate::support::{BIN, Server};
use crate::{account_with, decisions, eventually, repo, serve, serve_as, texts, wait_ready};

/// The annotation the endpoints controller puts on the Endpoints it writes, as anyone can
/// copy it from `kubectl get -o yaml`.
const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// How kubectl prints the webhook's denial of a patch.
fn denied(message_start: &str) -> String {
    format!(
        "Error from server (Forbidden): admission webhook \"validate.extsvc-guard.io\" denied the request: {message_start}"
    )
}

/// How kubectl prints the webhook's denial of a create from stdin.
fn create_denied(message_start: &str) -> String {
    format!(
        "Error from server (Forbidden): error when creating \"STDIN\": admission webhook \"validate.extsvc-guard.io\" denied the request: {message_start}"
    )
}

/// `kubectl create -f -` of `manifest` plus `extra` arguments: (stdout, stderr).
fn create(cp: &ControlPlane, extra: &[&str], manifest: &Value) -> (String, String) {
    let args = [&["create", "-f", "-"], extra].concat();
    texts(&cp.kubectl(&args, Some(&manifest.to_string())))
}

/// `kubectl patch -n ns what` with `args` (the patch and its type): (stdout, stderr).
fn patch(cp: &ControlPlane, ns: &str, what: &[&str], args: &[&str]) -> (String, String) {
    let args = [&["patch", "-n", ns], what, args].concat();
    texts(&cp.kubectl(&args, None))
}

/// `kubectl get -n ns what -o json`.
fn get(cp: &ControlPlane, ns: &str, what: &str) -> Value {
    serde_json::from_str(&cp.kubectl_ok(&["get", "-n", ns, what, "-o", "json"], None)).unwrap()
}

/// Waits until `kubectl get -n ns what -o json` satisfies `ready`; returns it. Fails
/// with what kubectl printed last.
fn wait_for(cp: &ControlPlane, ns: &str, what: &[&str], ready: impl Fn(&Value) -> bool) -> Value {
    let args = [&["get", "-n", ns, "-o", "json"], what].concat();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = cp.kubectl(&args, None);
        if let Ok(value) = serde_json::from_slice::<Value>(&out.stdout)
            && ready(&value)
        {
            return value;
        }
        let last = texts(&out);
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: kubectl {}\nlast printed: {}{}",
            args.join(" "),
            last.0,
            last.1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Returns once every decision `server` made before this call is in its log: a dry run
/// by the admin in `ns` of an ExternalName Service reaches the validating webhook (the
/// webhook configurations' conditions let it through), and its decision is logged after
/// those of every write that was answered before it.
pub fn settled(cp: &ControlPlane, server: &Server, ns: &str) {
    let name = format!("settle-probe-{}", cp.unique());
    create(
        cp,
        &["--dry-run=server"],
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                "spec": {"type": "ExternalName", "externalName": "settle.example.com"}}),
    );
    eventually(
        Duration::from_secs(10),
        "the admin's probe is logged",
        || {
            decided(server, ns, &name)
                .iter()
                .any(|(path, _, _)| path == "/validate")
                .then_some(())
        },
    );
}

/// The server's decisions about `name` in `ns`: (path, operation, verdict).
fn decided(server: &Server, ns: &str, name: &str) -> Vec<(String, String, String)> {
    decisions(server)
        .into_iter()
        .filter(|d| d["namespace"] == ns && d["name"] == name)
        .map(|d| {
            let field = |k: &str| d[k].as_str().unwrap_or("").to_owned();
            (field("path"), field("operation"), field("verdict"))
        })
        .collect()
}

fn selectorless(ns: &str, name: &str, port_name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
           "spec": {"ports": [{"name": port_name, "port": 3306, "protocol": "TCP", "targetPort": 3306}]}})
}

fn endpoints_at(ns: &str, name: &str, port_name: &str, ips: &[&str]) -> Value {
    let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
           "subsets": [{"addresses": addresses, "ports": [{"name": port_name, "port": 3306, "protocol": "TCP"}]}]})
}

/// `serve` as the admin with `extra` arguments, registered as deployed for `namespaces`.
async fn judged_by_serve<'a>(
    cp: &'a ControlPlane,
    tag: &str,
    namespaces: &[&str],
    extra: &[&str],
) -> (Server, envtest::Webhooks<'a>) {
    let server = serve(cp, extra);
    wait_ready(&server).await;
    let webhooks = cp.register(&server, &format!("extsvc-guard-{tag}"), namespaces);
    (server, webhooks)
}

// ---------------------------------------------------------------------------------------
// Who writes is decided by who writes (row 1, item 1)

/// Replaces the first address of the Endpoints.
const TO_METADATA_SERVER: &str =
    r#"[{"op":"replace","path":"/subsets/0/addresses/0/ip","value":"100.100.100.200"}]"#;

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_carrying_the_controllers_markers_are_judged_when_patched_to_a_forbidden_address()
{
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("guard-markers", &[]);
    let (server, _webhooks) = judged_by_serve(&cp, "guard-markers", &[&ns], &[]).await;
    cp.apply(&selectorless(&ns, "mysql", "mysql").to_string());
    // Clean, with both of the endpoints controller's markers forged: its annotation, and
    // kube-controller-manager as field manager.
    let mut forged = endpoints_at(&ns, "mysql", "mysql", &["203.0.113.10"]);
    forged["metadata"]["annotations"] = json!({TRIGGER_TIME: "2025-03-01T10:00:00Z"});
    assert_eq!(
        create(&cp, &["--field-manager=kube-controller-manager"], &forged),
        ("endpoints/mysql created\n".to_owned(), String::new())
    );
    let stored = get(&cp, &ns, "endpoints/mysql");
    assert!(
        stored["metadata"]["annotations"][TRIGGER_TIME].is_string(),
        "{stored:#}"
    );

    let expected = denied(&format!(
        "[target-disallowed] Endpoints {ns}/mysql subsets[0].addresses[0].ip: 100.100.100.200 is in 100.100.100.200/32 (the Alibaba Cloud metadata server)"
    ));
    for manager in [None, Some("--field-manager=kube-controller-manager")] {
        let mut args = vec!["--type=json", "-p", TO_METADATA_SERVER];
        args.extend(manager);
        let (stdout, stderr) = patch(&cp, &ns, &["endpoints", "mysql"], &args);
        assert_eq!(stdout, "", "{manager:?}: {stderr}");
        assert!(stderr.starts_with(&expected), "{manager:?}: {stderr}");
    }
    let stored = get(&cp, &ns, "endpoints/mysql");
    assert_eq!(
        stored["subsets"][0]["addresses"][0]["ip"], "203.0.113.10",
        "{stored:#}"
    );
    // An EndpointSlice claiming the EndpointSlice controller: its managed-by label and a
    // controller owner reference to the (selectorless) Service, as that controller sets them.
    let uid = get(&cp, &ns, "service/mysql")["metadata"]["uid"].clone();
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "mysql-forged", "namespace": ns,
            "labels": {"kubernetes.io/service-name": "mysql",
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "mysql", "uid": uid,
                                 "controller": true, "blockOwnerDeletion": true}]},
        "addressType": "IPv4", "endpoints": [{"addresses": ["100.100.100.200"]}],
        "ports": [{"name": "mysql", "port": 3306, "protocol": "TCP"}]});
    let (_, stderr) = create(&cp, &["--field-manager=kube-controller-manager"], &slice);
    assert!(
        stderr.contains(&create_denied(&format!(
            "[target-disallowed] EndpointSlice {ns}/mysql-forged"
        ))),
        "{stderr}"
    );
    settled(&cp, &server, &ns);
    let updates: Vec<_> = decided(&server, &ns, "mysql")
        .into_iter()
        .filter(|(path, op, _)| path == "/validate" && op == "UPDATE")
        .collect();
    assert_eq!(
        updates,
        vec![
            (
                "/validate".to_owned(),
                "UPDATE".to_owned(),
                "denied".to_owned()
            );
            2
        ],
        "judged, never skipped"
    );
}

#[test]
fn scan_and_check_judge_endpoints_that_carry_the_controllers_markers_beside_a_selectorless_service()
{
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    // No webhook here: the forged object is stored as written.
    let ns = cp.namespace("guard-markers-scan", &[]);
    cp.apply(&selectorless(&ns, "mysql", "mysql").to_string());
    let mut forged = endpoints_at(&ns, "mysql", "mysql", &["100.100.100.200"]);
    forged["metadata"]["annotations"] = json!({TRIGGER_TIME: "2025-03-01T10:00:00Z"});
    create(&cp, &["--field-manager=kube-controller-manager"], &forged);

    let out = Command::new(BIN)
        .args(["scan", "--kubeconfig"])
        .arg(&cp.kubeconfig)
        .args(["-n", &ns])
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("Endpoints {ns}/mysql (cluster)"))
            && stdout.contains("deny target-disallowed"),
        "{stdout}"
    );
    // Objects read from a cluster have no line to point at.
    assert!(!stdout.contains("line 0"), "{stdout}");

    // `kubectl get -o yaml` of the stored object, markers and managedFields included.
    let yaml = cp.kubectl_ok(
        &[
            "get",
            "-n",
            &ns,
            "service/mysql",
            "endpoints/mysql",
            "-o",
            "yaml",
            "--show-managed-fields",
        ],
        None,
    );
    assert!(
        yaml.contains("manager: kube-controller-manager") && yaml.contains(TRIGGER_TIME),
        "{yaml}"
    );
    let dir = cp.tempdir();
    let file = dir.path().join("exported.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--format", "json"])
        .arg(&file)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "Endpoints" && f["action"] == "deny")
        .map(|f| &f["rule"])
        .collect();
    assert_eq!(rules, [&json!("target-disallowed")], "{report:#}");
    assert_eq!(out.status.code(), Some(1));
}

// ---------------------------------------------------------------------------------------
// The Service side of every pair (rows 2 to 5, item 2)

/// Seed 003's pair before the migration: Service `external-service` without its selector,
/// and its hand-written Endpoints (11.11.11.11, 22.22.22.22), in `ns`.
fn seed_003_before_the_selector(ns: &str) -> Value {
    let text = std::fs::read_to_string(
        repo().join("tests/fixtures/seeds/003-selector-added-to-external-service.yaml"),
    )
    .unwrap();
    let mut items: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    for item in &mut items {
        item["metadata"]["namespace"] = json!(ns);
    }
    items[0]["spec"].as_object_mut().unwrap().remove("selector");
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// The README's command for adding the selector.
const ADD_SELECTOR: &str = r#"{"spec":{"selector":{"app":"external"}}}"#;

/// Applies seed 003's pair without its selector in `ns` and waits for the mirrored slice,
/// as on any cluster a moment later; then adds the selector as the README does. What
/// kubectl printed: (stdout, stderr).
fn add_selector_to_seed_003(cp: &ControlPlane, ns: &str) -> (String, String) {
    let out = cp.kubectl(
        &["apply", "-f", "-"],
        Some(&seed_003_before_the_selector(ns).to_string()),
    );
    assert_eq!(
        texts(&out),
        (
            "service/external-service created\nendpoints/external-service created\n".to_owned(),
            String::new()
        )
    );
    wait_for(
        cp,
        ns,
        &[
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=external-service",
        ],
        // One endpoint per address, in no particular order.
        |list| {
            let mut mirrored: Vec<&str> = list["items"][0]["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["addresses"][0].as_str())
                .collect();
            mirrored.sort();
            mirrored == ["11.11.11.11", "22.22.22.22"]
        },
    );
    patch(cp, ns, &["svc", "external-service"], &["-p", ADD_SELECTOR])
}

/// The warning for seed 003's selector, matching no Pod, in namespace `ns`.
fn seed_003_warning(ns: &str) -> String {
    format!(
        "Warning: [selector-change] Service {ns}/external-service spec.selector: selector app=external makes the endpoints controller replace the hand-written Endpoints external-service (11.11.11.11, 22.22.22.22) with the selected Pods, and it matches no Pod now: the Service loses all its backends at once; keep the Service selectorless, or start the Pods first\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_added_over_hand_written_endpoints_matching_no_pod_warns_that_the_service_goes_dark()
 {
    let Some(cp) = envtest::control_plane_with_controllers() else {
        return;
    };
    let ns = cp.namespace("selector-added", &[]);
    let (_server, _webhooks) = judged_by_serve(&cp, "selector-added", &[&ns], &[]).await;
    let (stdout, stderr) = add_selector_to_seed_003(&cp, &ns);
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        (
            "service/external-service patched\n",
            seed_003_warning(&ns).as_str()
        )
    );
    // What the warning says happens: the endpoints controller takes the Endpoints over and
    // empties them.
    wait_for(&cp, &ns, &["endpoints", "external-service"], |e| {
        e["subsets"].as_array().is_none_or(Vec::is_empty)
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_prints_the_readme_selector_change_warning_word_for_word() {
    let Some(cp) = envtest::control_plane_with_controllers() else {
        return;
    };
    // The README runs in namespace default, which another test uses: its namespace here.
    let ns = cp.namespace("selector-readme", &[]);
    let (_server, _webhooks) = judged_by_serve(&cp, "selector-readme", &[&ns], &[]).await;
    let (stdout, stderr) = add_selector_to_seed_003(&cp, &ns);
    let printed = format!("{stderr}{stdout}").replace(&format!(" {ns}/"), " default/");
    let readme = readme_block(&format!(
        "kubectl patch svc external-service -p '{ADD_SELECTOR}'\n```"
    ));
    assert_eq!(printed, readme);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_added_over_hand_written_endpoints_counts_the_pods_it_matches() {
    let Some(cp) = envtest::control_plane_with_controllers() else {
        return;
    };
    let ns = cp.namespace("selector-pods", &[]);
    let (_server, _webhooks) = judged_by_serve(&cp, "selector-pods", &[&ns], &[]).await;
    // The ServiceAccount admission wants the namespace's default account, which the
    // controller manager creates.
    wait_for(&cp, &ns, &["serviceaccount", "default"], |_| true);
    for (name, app) in [("external-0", "external"), ("other-0", "other")] {
        // No scheduler and no kubelet: it stays Pending, and the selector matches it all the same.
        cp.apply(
            &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
            .to_string(),
        );
    }
    let (stdout, stderr) = add_selector_to_seed_003(&cp, &ns);
    assert_eq!(stdout, "service/external-service patched\n", "{stderr}");
    let expected = seed_003_warning(&ns).replace(
        "it matches no Pod now: the Service loses all its backends at once",
        "it matches 1 Pod now",
    );
    assert_eq!(stderr, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_added_over_hand_written_endpoints_with_a_copied_controller_annotation_still_warns()
 {
    let Some(cp) = envtest::control_plane_with_controllers() else {
        return;
    };
    let ns = cp.namespace("selector-added-forged", &[]);
    let (_server, _webhooks) = judged_by_serve(&cp, "selector-added-forged", &[&ns], &[]).await;
    // Seed 003's Endpoints as exported from another cluster with `kubectl get -o yaml`:
    // the endpoints controller's annotation came along.
    let mut pair = seed_003_before_the_selector(&ns);
    pair["items"][1]["metadata"]["annotations"] = json!({TRIGGER_TIME: "2025-03-01T10:00:00Z"});
    let out = cp.kubectl(&["apply", "-f", "-"], Some(&pair.to_string()));
    assert_eq!(
        texts(&out),
        (
            "service/external-service created\nendpoints/external-service created\n".to_owned(),
            String::new()
        )
    );
    let (stdout, stderr) = patch(
        &cp,
        &ns,
        &["svc", "external-service"],
        &["-p", ADD_SELECTOR],
    );
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        (
            "service/external-service patched\n",
            seed_003_warning(&ns).as_str()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_added_over_a_hand_written_endpointslice_is_not_said_to_replace_it() {
    let Some(cp) = envtest::control_plane_with_controllers() else {
        return;
    };
    let ns = cp.namespace("selector-added-slice", &[]);
    let (_server, _webhooks) = judged_by_serve(&cp, "selector-added-slice", &[&ns], &[]).await;
    // Seed 003's Service without its selector, its addresses in a hand-written
    // EndpointSlice (no managed-by label: no controller's) instead of an Endpoints.
    let mut pair = seed_003_before_the_selector(&ns);
    pair["items"][1] = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "external-service-1", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": "external-service"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["11.11.11.11"]}, {"addresses": ["22.22.22.22"]}],
        "ports": [{"port": 80, "protocol": "TCP"}]});
    let out = cp.kubectl(&["apply", "-f", "-"], Some(&pair.to_string()));
    assert_eq!(texts(&out).1, "");
    let (stdout, stderr) = patch(
        &cp,
        &ns,
        &["svc", "external-service"],
        &["-p", ADD_SELECTOR],
    );
    assert_eq!(stdout, "service/external-service patched\n", "{stderr}");
    // The EndpointSlice controller writes a slice of its own for the selector ...
    wait_for(
        &cp,
        &ns,
        &[
            "endpointslices",
            "-l",
            "endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io",
        ],
        |list| {
            list["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        },
    );
    // ... and leaves the hand-written one as it is: kube-proxy keeps sending traffic to
    // 11.11.11.11 and 22.22.22.22 beside the Pods.
    let kept = get(&cp, &ns, "endpointslice/external-service-1");
    let addresses: Vec<&Value> = kept["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["addresses"])
        .collect();
    assert_eq!(
        addresses,
        [&json!(["11.11.11.11"]), &json!(["22.22.22.22"])],
        "{kept:#}"
    );
    assert!(
        !stderr.contains("replace the hand-written EndpointSlice"),
        "the warning says the controller replaces a slice it leaves alone: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_removed_from_a_service_whose_endpoints_the_controllers_wrote_warns_that_they_freeze()
 {
    let Some(cp) = envtest::control_plane_with_controllers() else {
        return;
    };
    let ns = cp.namespace("selector-removed", &[]);
    let (_server, _webhooks) = judged_by_serve(&cp, "selector-removed", &[&ns], &[]).await;
    let web = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
    assert_eq!(cp.apply(&web.to_string()), "service/web created\n");
    // The controllers' Endpoints and EndpointSlice (no Pod: they list nothing).
    wait_for(&cp, &ns, &["endpoints", "web"], |_| true);
    let slices = wait_for(
        &cp,
        &ns,
        &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        |list| {
            list["items"][0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                == "endpointslice-controller.k8s.io"
        },
    );
    let slice = slices["items"][0]["metadata"]["name"].as_str().unwrap();

    let (stdout, stderr) = patch(
        &cp,
        &ns,
        &["svc", "web"],
        &[
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/selector"}]"#,
        ],
    );
    assert_eq!(stdout, "service/web patched\n", "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "Warning: [selector-change] Service {ns}/web spec.selector: without a selector the controllers stop updating Endpoints web and EndpointSlice {slice} (listing no address), which kube-proxy keeps using; replace them with hand-written endpoints listing the addresses to use, or restore the selector\n"
        )
    );
    // Never the old, false "no Endpoints": they are still there.
    assert!(!stderr.contains("no selector and no Endpoints"), "{stderr}");
    get(&cp, &ns, "endpoints/web");

    // scan reports the same from what it lists.
    let out = Command::new(BIN)
        .args(["scan", "--kubeconfig"])
        .arg(&cp.kubeconfig)
        .args(["-n", &ns])
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("Service {ns}/web (cluster)"))
            && stdout.contains("warn selector-change")
            && stdout.contains("without a selector the controllers stop updating Endpoints web"),
        "{stdout}"
    );
    assert!(!stdout.contains("service-no-endpoints"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_port_renamed_or_reprotocolled_under_hand_written_endpoints_is_denied() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("port-renamed", &[]);
    let (_server, _webhooks) = judged_by_serve(&cp, "port-renamed", &[&ns], &[]).await;
    let pair = json!({"apiVersion": "v1", "kind": "List", "items": [
        selectorless(&ns, "mysql", "mysql"),
        endpoints_at(&ns, "mysql", "mysql", &["203.0.113.10"]),
    ]});
    assert_eq!(
        texts(&cp.kubectl(&["apply", "-f", "-"], Some(&pair.to_string()))),
        (
            "service/mysql created\nendpoints/mysql created\n".to_owned(),
            String::new()
        )
    );
    for (op, label) in [
        (
            r#"[{"op":"replace","path":"/spec/ports/0/name","value":"db"}]"#,
            "\"db\"/TCP",
        ),
        (
            r#"[{"op":"replace","path":"/spec/ports/0/protocol","value":"UDP"}]"#,
            "\"mysql\"/UDP",
        ),
    ] {
        let (stdout, stderr) = patch(&cp, &ns, &["svc", "mysql"], &["--type=json", "-p", op]);
        assert_eq!(stdout, "", "{stderr}");
        let expected = denied(&format!(
            "[port-name-mismatch] Service {ns}/mysql spec.ports[0]."
        ));
        assert!(stderr.starts_with(&expected), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "Service port {label} has no endpoint port of that name and protocol; "
            )),
            "{stderr}"
        );
    }
    let stored = get(&cp, &ns, "service/mysql");
    assert_eq!(
        stored["spec"]["ports"][0],
        json!({"name": "mysql", "port": 3306, "protocol": "TCP", "targetPort": 3306})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_whose_pair_was_already_broken_is_warned_not_denied_on_an_unrelated_update() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("port-broken-before", &[]);
    // The broken pair is there before the webhook is.
    let pair = json!({"apiVersion": "v1", "kind": "List", "items": [
        selectorless(&ns, "mysql", "default-ep"),
        endpoints_at(&ns, "mysql", "mysql", &["203.0.113.10"]),
    ]});
    cp.apply(&pair.to_string());
    let (_server, _webhooks) = judged_by_serve(&cp, "port-broken-before", &[&ns], &[]).await;
    let out = cp.kubectl(
        &["annotate", "-n", &ns, "svc", "mysql", "owner=payments"],
        None,
    );
    let (stdout, stderr) = texts(&out);
    assert_eq!(stdout, "service/mysql annotated\n", "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "Warning: [port-name-mismatch] Service {ns}/mysql spec.ports[0].name: already so before this update, so warned, not denied: Service port \"default-ep\"/TCP has no endpoint port of that name and protocol"
        )),
        "{stderr}"
    );
    // Swapping one bad name for another is still denied.
    let (_, stderr) = patch(
        &cp,
        &ns,
        &["svc", "mysql"],
        &[
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/ports/0/name","value":"db"}]"#,
        ],
    );
    assert!(
        stderr.starts_with(&denied(&format!(
            "[port-name-mismatch] Service {ns}/mysql spec.ports[0].name: Service port \"db\"/TCP"
        ))),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_whose_endpoints_sort_first_admits_them_and_denies_the_service_that_does_not_pair()
 {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("apply-dir", &[]);
    let (_server, _webhooks) = judged_by_serve(&cp, "apply-dir", &[&ns], &[]).await;
    let dir = cp.tempdir();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let write = |file: &str, object: Value| {
        std::fs::write(manifests.join(file), object.to_string()).unwrap();
    };
    write(
        "endpoints.yaml",
        endpoints_at(&ns, "mysql", "mysql", &["203.0.113.10"]),
    );
    write("service.yaml", selectorless(&ns, "mysql", "default-ep"));

    let out = cp.kubectl_in(Some(dir.path()), &["apply", "-f", "manifests/"], None);
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success());
    assert_eq!(stdout, "endpoints/mysql created\n", "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "Warning: [endpoints-orphaned] Endpoints {ns}/mysql metadata.name: no Service named \"mysql\" exists in namespace {ns}"
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "Error from server (Forbidden): error when creating \"manifests/service.yaml\": admission webhook \"validate.extsvc-guard.io\" denied the request: [port-name-mismatch] Service {ns}/mysql spec.ports[0].name: Service port \"default-ep\"/TCP has no endpoint port of that name and protocol; its hand-written endpoints have \"mysql\"/TCP"
        )),
        "{stderr}"
    );
    let (_, missing) = texts(&cp.kubectl(&["get", "-n", &ns, "service", "mysql"], None));
    assert_eq!(
        missing,
        "Error from server (NotFound): services \"mysql\" not found\n"
    );
}

// ---------------------------------------------------------------------------------------
// Addresses as Kubernetes reads them (row 6, item 3)

#[tokio::test(flavor = "multi_thread")]
async fn an_address_with_leading_zeros_is_judged_as_the_address_kubernetes_reads() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("leading-zeros", &[]);
    let (_server, _webhooks) = judged_by_serve(&cp, "leading-zeros", &[&ns], &[]).await;
    let pairs = |name: &str, ip: &str| {
        json!({"apiVersion": "v1", "kind": "List", "items": [
            selectorless(&ns, name, "mysql"),
            endpoints_at(&ns, name, "mysql", &[ip]),
        ]})
        .to_string()
    };

    // The metadata server, spelt with a leading zero: denied, both spellings named.
    let out = cp.kubectl(
        &["apply", "-f", "-"],
        Some(&pairs("meta", "100.100.100.0200")),
    );
    let (stdout, stderr) = texts(&out);
    assert_eq!(stdout, "service/meta created\n", "{stderr}");
    assert!(
        stderr.contains(&format!(
            "denied the request: [target-disallowed] Endpoints {ns}/meta subsets[0].addresses[0].ip: "
        )) && stderr.contains(
            "\"100.100.100.0200\" (read by Kubernetes as 100.100.100.200) is in 100.100.100.200/32"
        ),
        "{stderr}"
    );
    // The same in an EndpointSlice.
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "meta-1", "namespace": ns, "labels": {"kubernetes.io/service-name": "meta"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["100.100.100.0200"]}],
        "ports": [{"name": "mysql", "port": 3306, "protocol": "TCP"}]});
    let (_, stderr) = create(&cp, &[], &slice);
    assert!(
        stderr.contains(&format!(
            "denied the request: [target-disallowed] EndpointSlice {ns}/meta-1 endpoints[0].addresses[0]: \"100.100.100.0200\" (read by Kubernetes as 100.100.100.200) is in 100.100.100.200/32"
        )),
        "{stderr}"
    );

    // And in spec.externalIPs.
    let mut captured = selectorless(&ns, "captured", "mysql");
    captured["spec"]["externalIPs"] = json!(["100.100.100.0200"]);
    let (_, stderr) = create(&cp, &[], &captured);
    assert!(
        stderr.contains(&format!(
            "denied the request: [target-disallowed] Service {ns}/captured spec.externalIPs[0]: \"100.100.100.0200\" (read by Kubernetes as 100.100.100.200)"
        )),
        "{stderr}"
    );

    // An allowed address with a leading zero: admitted, the spelling warned about.
    let out = cp.kubectl(
        &["apply", "-f", "-"],
        Some(&pairs("legacy", "203.0.113.010")),
    );
    let (stdout, stderr) = texts(&out);
    assert_eq!(
        stdout, "service/legacy created\nendpoints/legacy created\n",
        "{stderr}"
    );
    assert_eq!(
        stderr,
        format!(
            "Warning: [address-noncanonical] Endpoints {ns}/legacy subsets[0].addresses[0].ip: \"203.0.113.010\" has an IPv4 part with a leading zero: Kubernetes reads it as 203.0.113.10 (decimal), other tools read such parts as octal, and Kubernetes 1.33+ warns that a later release will refuse it; write 203.0.113.10\n"
        )
    );
    // What the message relies on: this API server stores it as written.
    let stored = get(&cp, &ns, "endpoints/legacy");
    assert_eq!(stored["subsets"][0]["addresses"][0]["ip"], "203.0.113.010");
}

// ---------------------------------------------------------------------------------------
// Operators the platform team trusts (item 4)

/// An Endpoints the guard denies when judged: the Alibaba Cloud metadata server.
fn leader(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
           "subsets": [{"addresses": [{"ip": "100.100.100.200"}], "ports": [{"port": 5432}]}]})
}

/// The JSON Patch `extsvc-guard policy match-conditions policy` prints, as JSON.
/// `extsvc-guard policy match-conditions POLICY`: the kustomize Component it prints, as the
/// JSON patch for each webhook configuration kind (lower case, as kubectl names them).
fn match_conditions(policy: &Path) -> Vec<(String, String)> {
    let out = Command::new(BIN)
        .args(["policy", "match-conditions"])
        .arg(policy)
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let component: Value = serde_saphyr::from_str(&stdout).unwrap();
    assert_eq!(component["kind"], "Component", "{stdout}");
    component["patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ops: Vec<Value> = serde_saphyr::from_str(p["patch"].as_str().unwrap()).unwrap();
            (
                p["target"]["kind"].as_str().unwrap().to_lowercase(),
                serde_json::to_string(&ops).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exempt_operators_writes_are_skipped_and_with_the_printed_match_conditions_never_wait_on_the_webhook()
 {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("exempt-operators", &[]);
    let dir = cp.tempdir();
    let policy = dir.path().join("policy.yaml");
    // Every kind of subject, at the top level and in an override naming the namespace.
    std::fs::write(
        &policy,
        format!(
            "exemptSubjects:\n  - {{kind: ServiceAccount, namespace: {ns}, name: patroni}}\n  - {{kind: Group, name: 'platform:mirrors'}}\nnamespaces:\n  - names: [{ns}]\n    exemptSubjects: [{{kind: User, name: failover-bot}}]\n"
        ),
    )
    .unwrap();
    // Operators with the same rights, three of them exempt. The admin writes as each of
    // them (impersonation), authorized by their own roles.
    let rules = json!([{"apiGroups": [""], "resources": ["endpoints"], "verbs": ["create", "get", "patch", "update"]}]);
    for account in ["patroni", "other-operator"] {
        account_with(&cp, &ns, account, rules.clone(), dir.path());
    }
    cp.apply(
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{ns}-mirrors")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{ns}-patroni")},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "platform:mirrors"},
                         {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "failover-bot"}]})
        .to_string(),
    );
    let patroni = format!("--as=system:serviceaccount:{ns}:patroni");
    let exempt: [(&str, Vec<&str>); 3] = [
        ("patroni", vec![&patroni]),
        (
            "mirror",
            vec!["--as=mirror-bot", "--as-group=platform:mirrors"],
        ),
        ("failover", vec!["--as=failover-bot"]),
    ];
    let as_other = format!("--as=system:serviceaccount:{ns}:other-operator");
    let (server, webhooks) = judged_by_serve(
        &cp,
        "exempt-operators",
        &[&ns],
        &["--policy", policy.to_str().unwrap()],
    )
    .await;
    let created = |name: &str| (format!("endpoints/{name} created\n"), String::new());

    for (who, args) in &exempt {
        let name = format!("{who}-1");
        assert_eq!(create(&cp, args, &leader(&ns, &name)), created(&name));
        settled(&cp, &server, &ns);
        // The default conditions send an Endpoints to /validate only (nothing to patch).
        assert_eq!(
            decided(&server, &ns, &name),
            [("/validate".into(), "CREATE".into(), "skipped".into())],
            "{who}"
        );
    }
    let (_, stderr) = create(&cp, &[&as_other], &leader(&ns, "other-1"));
    assert!(
        stderr.contains(&create_denied(&format!(
            "[target-disallowed] Endpoints {ns}/other-1"
        ))),
        "{stderr}"
    );

    // The printed conditions, on both registered configurations: accepted (the CEL
    // compiles). The namespace selection the harness narrowed stays as it is.
    let patches = match_conditions(&policy);
    assert_eq!(patches.len(), 2);
    for (kind, ops) in &patches {
        let out = cp.kubectl_ok(
            &["patch", kind, &webhooks.name, "--type=json", "-p", ops],
            None,
        );
        assert_eq!(
            out,
            format!(
                "{kind}.admissionregistration.k8s.io/{} patched\n",
                webhooks.name
            )
        );
    }
    // The API server picks the change up asynchronously: wait until dry runs by the exempt
    // writers reach neither webhook.
    let mut n = 0;
    eventually(
        Duration::from_secs(30),
        "the exempt writers' writes stop reaching serve",
        || {
            n += 1;
            let probes: Vec<String> = exempt
                .iter()
                .map(|(who, args)| {
                    let name = format!("{who}-probe-{n}");
                    let args = [&["--dry-run=server"][..], args].concat();
                    create(&cp, &args, &leader(&ns, &name));
                    name
                })
                .collect();
            settled(&cp, &server, &ns);
            probes
                .iter()
                .all(|p| decided(&server, &ns, p).is_empty())
                .then_some(())
        },
    );
    for (who, args) in &exempt {
        let name = format!("{who}-2");
        assert_eq!(create(&cp, args, &leader(&ns, &name)), created(&name));
        settled(&cp, &server, &ns);
        assert_eq!(decided(&server, &ns, &name), [], "{who}");
    }
    let (_, stderr) = create(&cp, &[&as_other], &leader(&ns, "other-2"));
    assert!(stderr.contains("denied the request"), "{stderr}");

    // serve is gone: the validating webhook's failurePolicy Fail refuses everyone else's
    // writes; the exempt operators' go through (a failover never waits on the webhook).
    drop(server);
    let (_, stderr) = create(&cp, &[&as_other], &leader(&ns, "other-3"));
    assert!(
        stderr.contains(
            "Internal error occurred: failed calling webhook \"validate.extsvc-guard.io\""
        ),
        "{stderr}"
    );
    for (who, args) in &exempt {
        let name = format!("{who}-3");
        assert_eq!(create(&cp, args, &leader(&ns, &name)), created(&name));
        let patch_args = [
            &[
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/subsets/0/addresses/0/ip","value":"203.0.113.20"}]"#,
            ][..],
            args,
        ]
        .concat();
        assert_eq!(
            patch(&cp, &ns, &["endpoints", &name], &patch_args),
            (format!("endpoints/{name} patched\n"), String::new())
        );
    }
}

// ---------------------------------------------------------------------------------------
// No allow resting on unknown namespace labels (item 5)

/// A policy that denies the Host/SNI mismatch in namespaces labelled tier=restricted.
const RESTRICTED_POLICY: &str = "namespaces:\n  - selector:\n      matchLabels: {tier: restricted}\n    rules:\n      externalname-host-mismatch: deny\n";

/// An ExternalName on port 443: clients send the Service name as Host and SNI.
fn payments(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
           "spec": {"type": "ExternalName", "externalName": "api.payments.example.com",
                    "ports": [{"name": "https", "port": 443}]}})
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_labels_outside_the_watched_namespaces_are_read_live_to_choose_the_policy() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let restricted = cp.namespace("labels-restricted", &[("tier", "restricted")]);
    let plain = cp.namespace("labels-plain", &[]);
    let watched = cp.namespace("labels-watched", &[]);
    let dir = cp.tempdir();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, RESTRICTED_POLICY).unwrap();
    // The cache holds only the watched namespace: the judged namespaces' labels are not in it.
    let (_server, _webhooks) = judged_by_serve(
        &cp,
        "labels-live",
        &[&restricted, &plain],
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--watch-namespace",
            &watched,
        ],
    )
    .await;

    let (_, stderr) = create(&cp, &[], &payments(&restricted, "payments"));
    assert!(
        stderr.starts_with(&create_denied(&format!(
            "[externalname-host-mismatch] Service {restricted}/payments"
        ))),
        "{stderr}"
    );
    let (stdout, stderr) = create(&cp, &[], &payments(&plain, "payments"));
    assert_eq!(stdout, "service/payments created\n", "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "Warning: [externalname-host-mismatch] Service {plain}/payments"
        )),
        "{stderr}"
    );
    // Relabelled: the very next write is judged under the override.
    cp.kubectl_ok(&["label", "namespace", &plain, "tier=restricted"], None);
    let (_, stderr) = create(&cp, &[], &payments(&plain, "payments-2"));
    assert!(
        stderr.starts_with(&create_denied(&format!(
            "[externalname-host-mismatch] Service {plain}/payments-2"
        ))),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_whose_namespace_labels_cannot_be_read_is_refused_not_judged_under_the_default_policy()
 {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let restricted = cp.namespace("labels-unreadable", &[("tier", "restricted")]);
    let watched = cp.namespace("labels-unreadable-watched", &[]);
    let dir = cp.tempdir();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, RESTRICTED_POLICY).unwrap();
    // Allowed to read the watched namespace and nothing else, not even the judged
    // namespace's labels.
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
    let kubeconfig = cp.token_kubeconfig(&watched, name, dir.path());
    let server = serve_as(
        &kubeconfig,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--watch-namespace",
            &watched,
        ],
    );
    wait_ready(&server).await;
    let _webhooks = cp.register(&server, "extsvc-guard-labels-unreadable", &[&restricted]);

    let (stdout, stderr) = create(&cp, &[], &payments(&restricted, "payments"));
    assert_eq!(stdout, "", "{stderr}");
    assert!(
        stderr.contains(&format!(
            "admission webhook \"validate.extsvc-guard.io\" denied the request: extsvc-guard cannot read the labels of namespace {restricted}, which choose the policy that applies there"
        )),
        "{stderr}"
    );
    let (_, missing) = texts(&cp.kubectl(&["get", "-n", &restricted, "service", "payments"], None));
    assert!(missing.contains("NotFound"), "{missing}");
}

// ---------------------------------------------------------------------------------------
// Less noise (item 7)

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoints_used_as_a_leader_election_lock_is_admitted_without_an_orphan_warning() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("leader-lock", &[]);
    let (server, _webhooks) = judged_by_serve(&cp, "leader-lock", &[&ns], &[]).await;
    let lock = |name: &str, annotated: bool| {
        let mut lock = json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": ns}});
        if annotated {
            lock["metadata"]["annotations"] = json!({"control-plane.alpha.kubernetes.io/leader":
                r#"{"holderIdentity":"my-operator-7d9f-x2k4","leaseDurationSeconds":15,"acquireTime":"2025-03-01T10:00:00Z","renewTime":"2025-03-01T10:00:10Z","leaderTransitions":0}"#});
        }
        lock
    };
    assert_eq!(
        create(&cp, &[], &lock("my-operator-lock", true)),
        (
            "endpoints/my-operator-lock created\n".to_owned(),
            String::new()
        )
    );
    settled(&cp, &server, &ns);
    assert_eq!(
        decided(&server, &ns, "my-operator-lock")
            .into_iter()
            .filter(|(path, _, _)| path == "/validate")
            .collect::<Vec<_>>(),
        [("/validate".into(), "CREATE".into(), "allowed".into())]
    );
    // The same Endpoints without the annotation is an orphan.
    let (_, stderr) = create(&cp, &[], &lock("my-operator-unmarked", false));
    assert!(
        stderr.starts_with(&format!(
            "Warning: [endpoints-orphaned] Endpoints {ns}/my-operator-unmarked"
        )),
        "{stderr}"
    );
}
