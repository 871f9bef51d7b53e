//! The API server going away and coming back, for real: `serve` watches a kube-apiserver of
//! the test's own (on the shared etcd), which is stopped and started again, while the cluster
//! changes through the shared one. Every request of the load carries its own uid.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::envtest;
use crate::support::Server;
use crate::support::load::{Outcome, rules, start_load};
use crate::{
    endpoints, metric, metrics, readyz, serve_as, service, until_verdict, validate, wait_ready,
};

/// Waits until the load has sent `n` requests in `phase` (no fixed sleep: on a busy machine
/// a phase gets as many requests as on an idle one).
async fn sent_in(outcomes: &Mutex<Vec<Outcome>>, phase: u8, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.phase == phase)
        .count()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "the load stalled in phase {phase}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_going_away_under_load_causes_no_false_denial_and_the_cache_recovers() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("drill", &[]);
    cp.apply(&service(&ns, "mysql-svc", "default-ep").to_string());
    let mut api = cp.extra_apiserver();
    let server = serve_as(&api.kubeconfig, &["--confirm-timeout", "300ms"]);
    wait_ready(&server).await;
    let mysql_ep = endpoints(&ns, "mysql-ep", "mysql");
    until_verdict(
        &server,
        &mysql_ep,
        (false, &["endpoints-orphaned", "port-name-mismatch"], &[]),
    )
    .await;

    let ext_ip = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext-ip", "namespace": ns}, "spec": {"type": "ExternalName", "externalName": "192.168.1.10"}});
    let (phase, stop, outcomes) = (
        Arc::new(AtomicU8::new(0)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let load = start_load(
        &server,
        vec![("mysql-ep", mysql_ep.clone()), ("ext-ip", ext_ip)],
        phase.clone(),
        stop.clone(),
        outcomes.clone(),
    );
    sent_in(&outcomes, 0, 50).await;

    // The API server goes away (phase 1 starts once it has exited: until then it still
    // answers), and while it is gone the truth changes (through the other API server): the
    // Service the Endpoints were written for appears. Denying them now would be a false
    // denial.
    api.stop();
    phase.store(1, Ordering::SeqCst);
    cp.apply(&service(&ns, "mysql-ep", "mysql").to_string());
    sent_in(&outcomes, 1, 50).await;
    phase.store(2, Ordering::SeqCst);
    api.restart();
    // The watches come back and the cache learns of the new Service: allowed, no findings.
    until_verdict(&server, &mysql_ep, (true, &[], &[])).await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let mut seen = [0usize; 3];
    for o in &outcomes {
        let (status, response) = o
            .answer
            .as_ref()
            .unwrap_or_else(|e| panic!("transport error: {e} ({o:?})"));
        assert_eq!(*status, 200, "{o:?}");
        let response = &response["response"];
        seen[o.phase as usize] += 1;
        match (o.object, o.phase) {
            // What the object earns alone stays denied throughout.
            ("ext-ip", _) => assert_eq!(rules(response, "denied"), ["externalname-ip"], "{o:?}"),
            // Sent before the API server had gone: denied, or — its confirmation read meeting
            // the outage — allowed with the findings as warnings saying why.
            ("mysql-ep", 0) => assert!(
                response["allowed"] == false
                    || rules(response, "warnings") == ["endpoints-orphaned", "port-name-mismatch"],
                "{o:?}"
            ),
            // Gone or just back: never a denial resting on what the cache cannot confirm.
            ("mysql-ep", _) => assert_eq!(response["allowed"], true, "false denial: {o:?}"),
            _ => unreachable!(),
        }
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "requests in every phase: {seen:?}"
    );
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("cannot confirm a cross-object finding"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_cache_downgrades_without_waiting_for_the_api_server() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("drill-stale", &[]);
    cp.apply(&service(&ns, "mysql-svc", "default-ep").to_string());
    let mut api = cp.extra_apiserver();
    let server = serve_as(&api.kubeconfig, &["--max-staleness", "200ms"]);
    wait_ready(&server).await;
    let ep = endpoints(&ns, "mysql-ep", "mysql");
    let denied = (
        false,
        &["endpoints-orphaned", "port-name-mismatch"][..],
        &[][..],
    );
    until_verdict(&server, &ep, denied).await;
    api.stop();
    // The watches fail from now on; 200 ms later the cache is stale, and the denial is a
    // warning that says so, without waiting for a confirmation read.
    let deadline = Instant::now() + Duration::from_secs(20);
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
    api.restart();
    until_verdict(&server, &ep, denied).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_waits_until_the_api_server_answers_the_initial_lists_of_all_four_kinds() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    // serve starts before its API server does.
    let mut api = cp.extra_apiserver_unstarted();
    let server: Server = serve_as(&api.kubeconfig, &[]);
    // Not ready, saying what it waits for, and soon why the lists fail.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = readyz(&server).await;
        assert_eq!(code, 503, "{body}");
        assert!(
            body.starts_with(
                "waiting for the initial list of services, endpoints, endpointslices and namespaces"
            ),
            "{body}"
        );
        // The endpoints watches start once the Services are listed (so that what a
        // controller maintains is never held): only the first two can be failing yet.
        if ["services", "namespaces"].iter().all(|r| {
            body.contains(&format!(
                "{r}: list {r}: ServiceError: client error (Connect)"
            ))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.restart();
    wait_ready(&server).await;
    let text = metrics(&server).await;
    for resource in ["services", "endpoints", "endpointslices", "namespaces"] {
        let series = format!("extsvc_guard_cache_synced{{resource=\"{resource}\",namespace=\"\"}}");
        assert_eq!(metric(&text, &series), Some(1.0), "{series}\n{text}");
    }
}
