//! `serve` with a cluster, against faults a real API server cannot be made to show on
//! demand: a watch lagging behind what a read already shows, watches dropped and history
//! compacted (410 Gone), an API server that stops answering without closing anything. The
//! fake API server (tests/support/fake_api.rs) speaks the real wire format to the real
//! kube-rs client through a kubeconfig. Everything else `serve` and `scan` do with a cluster
//! is tested against a real kube-apiserver: tests/apiserver.rs.

use std::time::{Duration, Instant};

use crate::fake_api::FakeApi;
use crate::support::*;
use serde_json::{Value, json};

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

/// LISTs of every Service in the cluster: the watcher's, not a confirmation's (those list
/// one namespace).
fn cluster_wide_service_lists(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/services?") && !r.contains("watch=true"))
        .count()
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
