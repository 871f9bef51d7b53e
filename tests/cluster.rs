//! `serve` with a cluster and `scan`, against a fake API server started on loopback that
//! speaks the real wire format (list with resourceVersion, streaming watch, BOOKMARK, 410
//! Gone, dropped connections), reached by the real kube-rs client through a kubeconfig.

#[path = "support/fake_api.rs"]
mod fake_api;
mod support;

use std::time::{Duration, Instant};

use fake_api::FakeApi;
use serde_json::{Value, json};
use support::*;

fn service(name: &str, port_name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": "None", "ports": [{"name": port_name, "port": 3306, "protocol": "TCP", "targetPort": 3306}]}
    })
}

fn endpoints(name: &str, port_name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "114.32.146.154"}], "ports": [{"name": port_name, "port": 3306, "protocol": "TCP"}]}]
    })
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"team": "payments"}}})
}

/// A fake API server with the default namespace, and `serve` watching it.
async fn start(extra: &[&str]) -> (FakeApi, Server, tempfile::TempDir) {
    let api = FakeApi::start().await;
    api.apply(namespace("default"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let mut args = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    (api, server, dir)
}

async fn readyz(server: &Server) -> (u16, String) {
    install_crypto();
    let r = reqwest::get(server.metrics_url("/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn wait_ready(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(15);
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

async fn metrics(server: &Server) -> String {
    install_crypto();
    reqwest::get(server.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The rule ids of a validation answer, denying and warning.
fn verdict(r: &Value) -> (bool, Vec<String>, Vec<String>) {
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

async fn validate(server: &Server, object: &Value) -> Value {
    let client = client(&server.ca(), Http::Two);
    let answer = post(
        &client,
        &server.url("/validate"),
        review("u", "CREATE", object),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["response"].clone()
}

fn overturned(metrics: &str) -> f64 {
    metric(
        metrics,
        "extsvc_guard_confirmations_total{outcome=\"overturned\"}",
    )
    .unwrap_or(0.0)
}

/// Waits until the cache itself gives the answer for `object`: a validation that needs no
/// confirmation read to overturn a stale denial. A dead watch never gets there.
async fn cache_follows(server: &Server, object: &Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = overturned(&metrics(server).await);
        validate(server, object).await;
        if overturned(&metrics(server).await) == before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cache never caught up: {:#?}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `validate` until its verdict is `expected`.
async fn until_verdict(
    server: &Server,
    object: &Value,
    expected: (bool, &[&str], &[&str]),
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
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

#[tokio::test(flavor = "multi_thread")]
async fn readiness_waits_for_the_initial_lists_of_all_four_kinds() {
    let api = FakeApi::start().await;
    api.set_unresponsive(true);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let server = Server::start(&["--kubeconfig", kubeconfig.to_str().unwrap()]);
    let (code, body) = readyz(&server).await;
    assert_eq!(code, 503);
    assert_eq!(
        body,
        "waiting for the initial list of services, endpoints, endpointslices and namespaces\n"
    );
    api.set_unresponsive(false);
    wait_ready(&server).await;
    for resource in ["services", "endpoints", "endpointslices", "namespaces"] {
        assert!(
            api.lists(resource) >= 1,
            "{resource}: {:#?}",
            api.requests()
        );
    }
    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "extsvc_guard_cache_synced{resource=\"services\",namespace=\"\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

/// LISTs of every Service in the cluster: the watcher's, not a confirmation's (those list
/// one namespace).
fn cluster_wide_service_lists(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/services?") && !r.contains("watch=true"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn added_modified_and_deleted_services_reach_the_rules() {
    let (api, server, _dir) = start(&[]).await;
    wait_ready(&server).await;
    let ep = endpoints("mysql-svc", "mysql");
    // No Service at all: orphaned, but with no likely Service only a warning.
    until_verdict(&server, &ep, (true, &[], &["endpoints-orphaned"])).await;

    api.apply(service("mysql-svc", "default-ep"));
    let r = until_verdict(&server, &ep, (false, &["port-name-mismatch"], &[])).await;
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("Service mysql-svc has \"default-ep\"/TCP"),
        "{r:#}"
    );

    api.apply(service("mysql-svc", "mysql"));
    until_verdict(&server, &ep, (true, &[], &[])).await;
    cache_follows(&server, &ep).await;

    api.delete("Service", "default", "mysql-svc");
    until_verdict(&server, &ep, (true, &[], &["endpoints-orphaned"])).await;
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
    assert_eq!(
        metric(
            &text,
            "extsvc_guard_cache_objects{resource=\"services\",namespace=\"\"}"
        ),
        Some(0.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_arriving_after_its_endpoints_in_the_watch_is_found_by_the_confirmation_read() {
    let (api, server, _dir) = start(&[]).await;
    wait_ready(&server).await;
    // An older Service the new Endpoints looks meant for, already in the cache.
    api.apply(service("mysql", "mysql"));
    let ep = endpoints("mysql-svc", "mysql");
    until_verdict(&server, &ep, (false, &["endpoints-orphaned"], &[])).await;
    // kubectl apply sends Service mysql-svc, then its Endpoints; the watch lags behind.
    api.apply_silently(service("mysql-svc", "mysql"));
    let r = validate(&server, &ep).await;
    assert_eq!(verdict(&r), (true, vec![], vec![]), "{r:#}");
    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "extsvc_guard_confirmations_total{outcome=\"overturned\"}"
        ),
        Some(1.0),
        "{text}"
    );
    api.deliver_pending();
}

/// What of the default namespace these requests read directly (not watches): "namespace"
/// for its labels, or the resources listed in it; sorted.
fn namespace_reads(requests: &[String]) -> Vec<String> {
    let mut reads: Vec<String> = requests
        .iter()
        .filter(|r| r.starts_with("GET ") && !r.contains("watch=true"))
        .filter_map(|r| {
            let path = r["GET ".len()..].split('?').next()?;
            let rest = path
                .strip_prefix("/api/v1/namespaces/default")
                .or_else(|| path.strip_prefix("/apis/discovery.k8s.io/v1/namespaces/default"))?;
            Some(match rest.strip_prefix('/') {
                Some(resource) => resource.to_owned(),
                None => "namespace".to_owned(),
            })
        })
        .collect();
    reads.sort();
    reads
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confirmation_reads_only_the_kinds_the_denial_rests_on() {
    let (api, server, _dir) = start(&[]).await;
    wait_ready(&server).await;
    // A stray mysql-ep is denied while mysql-svc, its likely target, has no endpoints...
    api.apply(service("mysql-svc", "mysql"));
    let stray = endpoints("mysql-ep", "mysql");
    until_verdict(&server, &stray, (false, &["endpoints-orphaned"], &[])).await;
    // ...but mysql-svc's own Endpoints were created a moment ago (the watch lags): mysql-svc
    // is no longer a likely target, and the stray is only warned about. So an Endpoints'
    // denial is confirmed by reading the namespace's Services and their endpoints.
    let own = endpoints("mysql-svc", "mysql");
    api.apply_silently(own.clone());
    let before = api.requests().len();
    let r = validate(&server, &stray).await;
    assert_eq!(
        verdict(&r),
        (true, vec![], vec!["endpoints-orphaned".to_owned()]),
        "{r:#}"
    );
    assert_eq!(
        namespace_reads(&api.requests()[before..]),
        ["endpoints", "endpointslices", "services"],
        "no Namespace read: the default policy does not select namespaces by label"
    );
    api.deliver_pending();

    // A headless Service's port remap rests on its Endpoints and EndpointSlices only.
    let mut remapped = own.clone();
    remapped["subsets"][0]["ports"][0]["port"] = json!(3307);
    api.apply(remapped);
    let svc = service("mysql-svc", "mysql");
    until_verdict(&server, &svc, (false, &["headless-port-remap"], &[])).await;
    // The Endpoints are fixed a moment before the Service is applied again.
    api.apply_silently(own);
    let before = api.requests().len();
    let r = validate(&server, &svc).await;
    assert_eq!(verdict(&r), (true, vec![], vec![]), "{r:#}");
    assert_eq!(
        namespace_reads(&api.requests()[before..]),
        ["endpoints", "endpointslices"]
    );
    api.deliver_pending();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_watch_resumes_without_a_relist_and_410_gone_relists() {
    let (api, server, _dir) = start(&[]).await;
    wait_ready(&server).await;
    let ep = endpoints("mysql-svc", "mysql");
    api.apply(service("mysql-svc", "default-ep"));
    until_verdict(&server, &ep, (false, &["port-name-mismatch"], &[])).await;

    let lists = cluster_wide_service_lists(&api);
    api.bookmark();
    api.drop_watches();
    api.apply(service("mysql-svc", "mysql"));
    until_verdict(&server, &ep, (true, &[], &[])).await;
    cache_follows(&server, &ep).await;
    assert_eq!(
        cluster_wide_service_lists(&api),
        lists,
        "resumed from its resourceVersion: {:#?}",
        api.requests()
    );

    // A change the watch has not seen, then the history is compacted past it: resuming
    // gets 410 Gone, and only a relist brings the change.
    api.apply_silently(service("mysql-svc", "default-ep"));
    api.compact();
    api.drop_watches();
    until_verdict(&server, &ep, (false, &["port-name-mismatch"], &[])).await;
    assert!(
        cluster_wide_service_lists(&api) > lists,
        "410 Gone made it relist"
    );
    let text = metrics(&server).await;
    assert!(
        metric(
            &text,
            "extsvc_guard_cache_resyncs{resource=\"services\",namespace=\"\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    api.deliver_pending();
}

/// A Service in the cache that makes `mysql-ep` a denial (orphaned, and meant for it).
async fn with_the_mysql_pair_denied(api: &FakeApi, server: &Server) -> Value {
    api.apply(service("mysql-svc", "default-ep"));
    let ep = endpoints("mysql-ep", "mysql");
    until_verdict(
        server,
        &ep,
        (false, &["endpoints-orphaned", "port-name-mismatch"], &[]),
    )
    .await;
    ep
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_server_that_stops_answering_turns_cross_object_denials_into_warnings() {
    let (api, server, _dir) = start(&["--confirm-timeout", "300ms"]).await;
    wait_ready(&server).await;
    let ep = with_the_mysql_pair_denied(&api, &server).await;
    api.set_unresponsive(true);
    let r = validate(&server, &ep).await;
    assert_eq!(
        verdict(&r),
        (
            true,
            vec![],
            vec![
                "endpoints-orphaned".to_owned(),
                "port-name-mismatch".to_owned()
            ]
        ),
        "{r:#}"
    );
    let warning = r["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("not denied because the API server could not confirm it (the API server did not answer within 300ms)"),
        "{warning}"
    );
    // What the object earns alone is still denied.
    let ext_ip = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext-ip", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "192.168.1.10"}});
    let r = validate(&server, &ext_ip).await;
    assert_eq!(verdict(&r).1, vec!["externalname-ip"]);
    api.set_unresponsive(false);
    until_verdict(
        &server,
        &ep,
        (false, &["endpoints-orphaned", "port-name-mismatch"], &[]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_cache_downgrades_without_waiting_for_the_api_server() {
    let (api, server, _dir) = start(&["--max-staleness", "200ms"]).await;
    wait_ready(&server).await;
    let ep = with_the_mysql_pair_denied(&api, &server).await;
    api.stop().await;
    // The watches fail from now on; 200 ms later the cache is stale.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = validate(&server, &ep).await;
        let warning = r["warnings"][0].as_str().unwrap_or("").to_owned();
        if warning.contains("not denied because the cluster view is stale") {
            assert!(r["allowed"] == true, "{r:#}");
            break;
        }
        assert!(
            r["allowed"] == true || r["status"]["message"].as_str().is_some(),
            "{r:#}"
        );
        assert!(Instant::now() < deadline, "{r:#}\n{:#?}", server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.restart().await;
    until_verdict(
        &server,
        &ep,
        (false, &["endpoints-orphaned", "port-name-mismatch"], &[]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_permission_is_reported_naming_the_verb_and_the_resource() {
    let api = FakeApi::start().await;
    api.forbid("list", "endpointslices");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let server = Server::start(&["--kubeconfig", kubeconfig.to_str().unwrap()]);
    let line = server.wait_log("missing permission: cannot list endpointslices");
    assert!(line.contains("grant get, list and watch"), "{line}");
    assert_eq!(readyz(&server).await.0, 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_labels_from_the_cluster_feed_the_mutation() {
    let api = FakeApi::start().await;
    api.apply(namespace("default"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "requiredMetadata:\n  labels:\n    - {key: team, fromNamespaceLabel: team}\nshapeMetadata: false\n",
    )
    .unwrap();
    let server = Server::start(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    wait_ready(&server).await;
    let client = client(&server.ca(), Http::One);
    let answer = post(
        &client,
        &server.url("/mutate"),
        review("m", "CREATE", &service("db", "sql")),
    )
    .await;
    let r = &answer.json()["response"];
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().expect("a patch"))
        .unwrap();
    let ops: Value = serde_json::from_slice(&patch).unwrap();
    assert_eq!(
        ops,
        json!([{"op": "add", "path": "/metadata/labels", "value": {}}, {"op": "add", "path": "/metadata/labels/team", "value": "payments"}])
    );
}

/// A fake cluster holding the mysql-svc / mysql-ep mistake, for `scan` to read.
struct ScanCluster {
    // Dropped in this order: the fake before the runtime that serves it.
    api: FakeApi,
    _runtime: tokio::runtime::Runtime,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ScanCluster {
    fn start() -> ScanCluster {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let api = runtime.block_on(FakeApi::start());
        api.apply(namespace("default"));
        api.apply(service("mysql-svc", "default-ep"));
        api.apply(endpoints("mysql-ep", "mysql"));
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.kubeconfig(dir.path());
        ScanCluster {
            api,
            _runtime: runtime,
            kubeconfig,
            _dir: dir,
        }
    }

    fn scan(&self, extra: &[&str]) -> std::process::Output {
        std::process::Command::new(BIN)
            .args(["scan", "--kubeconfig", self.kubeconfig.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    }
}

#[test]
fn scan_reports_what_would_be_denied_today_as_text_and_as_policy_reports() {
    let cluster = ScanCluster::start();
    let api = &cluster.api;
    let scan = |extra: &[&str]| cluster.scan(extra);
    let out = scan(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Endpoints default/mysql-ep (cluster)"),
        "{stdout}"
    );
    assert!(stdout.contains("deny endpoints-orphaned"), "{stdout}");
    assert!(stdout.contains("deny port-name-mismatch"), "{stdout}");

    let out = scan(&["--format", "policyreport"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    let report = &list["items"][0];
    assert_eq!(report["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(report["kind"], "PolicyReport");
    assert_eq!(report["metadata"]["namespace"], "default");
    assert_eq!(report["summary"]["fail"], 2);
    assert_eq!(report["summary"]["warn"], 1);

    let out = scan(&["--namespace", "elsewhere"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    api.forbid("list", "services");
    let out = scan(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("missing permission: cannot list services"),
        "{stderr}"
    );
}

#[test]
fn scan_apply_writes_one_policy_report_per_namespace_by_server_side_apply() {
    let cluster = ScanCluster::start();
    let api = &cluster.api;
    let scan_apply = || {
        let out = cluster.scan(&["--format", "policyreport", "--apply"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), out.stdout, stderr)
    };
    let report_path = "/apis/wgpolicyk8s.io/v1alpha2/namespaces/default/policyreports/extsvc-guard";

    // Without the CRD: a clear error and nothing written.
    let (code, _, stderr) = scan_apply();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("is the PolicyReport CRD wgpolicyk8s.io/v1alpha2 installed?"),
        "{stderr}"
    );

    api.install_crds();
    let (code, stdout, stderr) = scan_apply();
    assert_eq!(
        code,
        Some(1),
        "the denials still set the exit code: {stderr}"
    );
    assert!(
        stderr.contains("applied 1 PolicyReport(s) named extsvc-guard"),
        "{stderr}"
    );
    let printed: Value = serde_json::from_slice(&stdout).unwrap();
    let stored = api
        .object("PolicyReport", "default", "extsvc-guard")
        .unwrap();
    assert_eq!(stored["results"], printed["items"][0]["results"]);
    assert_eq!(stored["summary"]["fail"], 2);
    assert_eq!(
        stored["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "extsvc-guard"
    );
    let patches: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH "))
        .collect();
    // The one refused for want of the CRD, then the one applied.
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(
        patches[1].starts_with(&format!("PATCH {report_path}?"))
            && patches[1].contains("fieldManager=extsvc-guard")
            && patches[1].contains("force=true"),
        "{patches:?}"
    );

    // Fixed: the next apply replaces the report, it does not add one.
    let first_version = stored["metadata"]["resourceVersion"].clone();
    api.delete("Endpoints", "default", "mysql-ep");
    api.apply(endpoints("mysql-svc", "default-ep"));
    let (code, _, stderr) = scan_apply();
    assert_eq!(code, Some(0), "{stderr}");
    let stored = api
        .object("PolicyReport", "default", "extsvc-guard")
        .unwrap();
    assert_ne!(stored["metadata"]["resourceVersion"], first_version);
    assert_eq!(stored["summary"]["fail"], 0, "{stored:#}");
    assert!(
        stored["summary"]["pass"].as_u64().unwrap() > 0,
        "{stored:#}"
    );

    // Without the permission to write it: which permission is missing.
    api.forbid("patch", "policyreports");
    let (code, _, stderr) = scan_apply();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("missing permission: cannot apply policyreports in namespace default")
            && stderr
                .contains("grant patch, create, list and delete on policyreports.wgpolicyk8s.io"),
        "{stderr}"
    );
}

#[test]
fn scan_apply_deletes_its_report_where_nothing_is_left_to_judge_within_its_scope_only() {
    let cluster = ScanCluster::start();
    let api = &cluster.api;
    api.install_crds();
    let report = |namespace: &str, name: &str, managed_by: &str| {
        json!({
            "apiVersion": "wgpolicyk8s.io/v1alpha2",
            "kind": "PolicyReport",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": managed_by},
            },
            "results": [],
        })
    };
    // Left by an earlier scan in a namespace whose objects have gone since, and two that
    // are not ours: another tool's, and one that only shares the name.
    api.apply(report("old", "extsvc-guard", "extsvc-guard"));
    api.apply(report("old", "kyverno-polr", "kyverno"));
    api.apply(report("other", "extsvc-guard", "someone-else"));
    let scan_apply = |extra: &[&str]| {
        let out = cluster.scan(&[&["--format", "policyreport", "--apply"], extra].concat());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    let present =
        |namespace: &str, name: &str| api.object("PolicyReport", namespace, name).is_some();

    // Scanning default only: the report in old is outside the scan and stays.
    let (code, stderr) = scan_apply(&["-n", "default"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(present("default", "extsvc-guard") && present("old", "extsvc-guard"));
    assert!(!stderr.contains("deleted"), "{stderr}");

    // default's Service and Endpoints are deleted: its report goes with them.
    api.delete("Service", "default", "mysql-svc");
    api.delete("Endpoints", "default", "mysql-ep");
    let (code, stderr) = scan_apply(&["-n", "default"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!present("default", "extsvc-guard"));
    assert!(
        stderr.contains("applied 0 PolicyReport(s) named extsvc-guard\ndeleted the PolicyReport named extsvc-guard in default, where nothing is judged any more"),
        "{stderr}"
    );
    assert!(present("old", "extsvc-guard"));

    // Without the permission to delete: which permission is missing, and nothing deleted.
    api.forbid("delete", "policyreports");
    let (code, stderr) = scan_apply(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr
            .contains("missing permission: cannot delete the stale policyreport in namespace old")
            && stderr
                .contains("grant patch, create, list and delete on policyreports.wgpolicyk8s.io"),
        "{stderr}"
    );
    assert!(present("old", "extsvc-guard"));
    api.allow("delete", "policyreports");

    // The whole cluster: the stale one in old goes; what is not ours stays.
    let (code, stderr) = scan_apply(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("deleted the PolicyReport named extsvc-guard in old,"),
        "{stderr}"
    );
    assert!(!present("old", "extsvc-guard"));
    assert!(present("old", "kyverno-polr") && present("other", "extsvc-guard"));
    let deletes: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("DELETE "))
        .collect();
    assert_eq!(
        deletes.len(),
        3,
        "default, the refused one, old: {deletes:?}"
    );
}

/// The objects of a manifest under docs/examples, as JSON.
fn example(name: &str) -> Vec<Value> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs/examples")
        .join(name);
    serde_saphyr::from_multiple::<Value>(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_shows_the_denial_kubectl_prints_for_the_seeds_mysql_pair() {
    let (api, server, _dir) = start(&[]).await;
    wait_ready(&server).await;
    let objects = example("mysql-pair.yaml");
    // kubectl apply creates the Service first, then the Endpoints.
    api.apply(objects[0].clone());
    let r = until_verdict(
        &server,
        &objects[1],
        (false, &["endpoints-orphaned", "port-name-mismatch"], &[]),
    )
    .await;
    let message = r["status"]["message"].as_str().unwrap();
    let printed = format!(
        "Error from server (Forbidden): error when creating \"docs/examples/mysql-pair.yaml\": admission webhook \"validate.extsvc-guard.io\" denied the request: {message}"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains(&printed), "README lacks:\n{printed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_watch_namespace_only_those_namespaces_are_watched_and_judged_on_absence() {
    let (api, server, _dir) = start(&["--watch-namespace", "default"]).await;
    wait_ready(&server).await;
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/default/services?")),
        "{:#?}",
        api.requests()
    );
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/services?")),
        "no cluster-wide watch: {:#?}",
        api.requests()
    );
    // In the watched namespace a missing Service is known to be missing.
    until_verdict(
        &server,
        &endpoints("mysql-svc", "mysql"),
        (true, &[], &["endpoints-orphaned"]),
    )
    .await;
    // Elsewhere the cache knows nothing and concludes nothing.
    let mut elsewhere = endpoints("mysql-svc", "mysql");
    elsewhere["metadata"]["namespace"] = json!("elsewhere");
    let r = validate(&server, &elsewhere).await;
    assert_eq!(verdict(&r), (true, vec![], vec![]), "{r:#}");
}
