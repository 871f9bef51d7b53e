//! Fault drills under load, bounded to seconds each: SIGTERM while clients keep sending, and
//! the API server going away and coming back. (Certificate rotation under load is
//! `the_certificate_rotates_while_a_client_keeps_sending_with_zero_failures` in
//! tests/serve.rs.) Every request carries its own uid, so a decision the server made and the
//! client never received would be seen.

#[path = "support/fake_api.rs"]
mod fake_api;
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_api::FakeApi;
use serde_json::{Value, json};
use support::*;

/// What one request of the load got.
#[derive(Debug, Clone)]
struct Outcome {
    uid: String,
    /// Phase of the drill when the request was sent.
    phase: u8,
    object: &'static str,
    /// `Err` is a transport error (no HTTP answer).
    answer: Result<(u16, Value), String>,
}

/// Clients sending `objects` round-robin over HTTP/1.1 and HTTP/2 until `stop`, each
/// request with a fresh uid, recording every outcome.
fn start_load(
    server: &Server,
    objects: Vec<(&'static str, Value)>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (worker, http) in [Http::One, Http::Two, Http::One, Http::Two]
        .into_iter()
        .enumerate()
    {
        let (url, ca) = (server.url("/validate"), server.ca());
        let (objects, phase, stop, outcomes) = (
            objects.clone(),
            phase.clone(),
            stop.clone(),
            outcomes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = client(&ca, http);
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let (name, object) = &objects[n % objects.len()];
                let uid = format!("drill-{worker}-{n}");
                let sent_in = phase.load(Ordering::SeqCst);
                let answer = match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(review(&uid, "CREATE", object))
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.bytes().await.map_err(|e| e.to_string());
                        body.map(|b| (status, serde_json::from_slice(&b).unwrap_or(Value::Null)))
                    }
                    Err(e) => Err(format!("{e:?}")),
                };
                outcomes.lock().unwrap().push(Outcome {
                    uid,
                    phase: sent_in,
                    object: name,
                    answer,
                });
                n += 1;
            }
        }));
    }
    tasks
}

fn rules(response: &Value, key: &str) -> Vec<String> {
    let lines: Vec<String> = match key {
        "denied" => response["status"]["message"]
            .as_str()
            .unwrap_or("")
            .lines()
            .map(str::to_owned)
            .collect(),
        _ => response["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(str::to_owned))
            .collect(),
    };
    lines
        .iter()
        .filter_map(|l| Some(l.strip_prefix('[')?.split(']').next()?.to_owned()))
        .collect()
}

/// The uids of the decisions the server logged.
fn decided_uids(server: &Server) -> HashSet<String> {
    server
        .logs()
        .iter()
        .filter(|l| l.contains("\"message\":\"decision\""))
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            Some(v["uid"].as_str()?.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_answers_every_request_it_decided_and_turns_readiness_off_first() {
    let mut server = Server::start(&["--shutdown-grace", "3s", "--shutdown-delay", "500ms"]);
    let ext_ip = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext-ip", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "192.168.1.10"}});
    let fine = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
    let (phase, stop, outcomes) = (
        Arc::new(AtomicU8::new(0)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let load = start_load(
        &server,
        vec![("ext-ip", ext_ip), ("db", fine)],
        phase.clone(),
        stop.clone(),
        outcomes.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    phase.store(1, Ordering::SeqCst);
    server.terminate();
    server.wait_log("shutting down");
    let readyz = reqwest::get(server.metrics_url("/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 503, "readiness is off first");
    let status = server.wait_exit(Duration::from_secs(6));
    let took = signalled.elapsed();
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_secs(3) + Duration::from_millis(1500),
        "exit {took:?} after SIGTERM, grace 3s"
    );

    let outcomes = outcomes.lock().unwrap().clone();
    let decided = decided_uids(&server);
    let answered: HashSet<&str> = outcomes
        .iter()
        .filter(|o| o.answer.is_ok())
        .map(|o| o.uid.as_str())
        .collect();
    let lost: Vec<&String> = decided
        .iter()
        .filter(|u| !answered.contains(u.as_str()))
        .collect();
    assert!(lost.is_empty(), "decided but never answered: {lost:?}");
    let during = outcomes.iter().filter(|o| o.phase == 1).count();
    assert!(
        outcomes
            .iter()
            .filter(|o| o.phase == 1 && o.answer.is_ok())
            .count()
            > 0,
        "requests were answered during the shutdown delay ({during} sent)"
    );
    for o in &outcomes {
        if let Ok((status, response)) = &o.answer {
            assert_eq!(*status, 200, "{o:?}");
            let response = &response["response"];
            assert_eq!(response["uid"], o.uid.as_str(), "{o:?}");
            let expect_denied = o.object == "ext-ip";
            assert_eq!(response["allowed"], !expect_denied, "{o:?}");
        }
    }
    // What a client could not send after the listener closed failed to connect; nothing
    // the server had taken was dropped (checked above by uid).
    assert!(
        answered.len() >= decided.len(),
        "{} answered, {} decided",
        answered.len(),
        decided.len()
    );
}

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

async fn validate(server: &Server, object: &Value) -> Value {
    let client = client(&server.ca(), Http::Two);
    let answer = post(
        &client,
        &server.url("/validate"),
        review("probe", "CREATE", object),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["response"].clone()
}

async fn until(server: &Server, object: &Value, what: &str, ok: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = validate(server, object).await;
        if ok(&r) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {r:#}\n{:#?}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_going_away_under_load_causes_no_false_denial_and_the_cache_recovers() {
    let api = FakeApi::start().await;
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    api.apply(service("mysql-svc", "default-ep"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let server = Server::start(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--confirm-timeout",
        "300ms",
    ]);
    let mysql_ep = endpoints("mysql-ep", "mysql");
    until(&server, &mysql_ep, "the pair denied", |r| {
        rules(r, "denied") == ["endpoints-orphaned", "port-name-mismatch"]
    })
    .await;

    let ext_ip = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext-ip", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "192.168.1.10"}});
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
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The API server goes away, and while it is gone the truth changes: the Service the
    // Endpoints were written for appears. Denying them now would be a false denial.
    phase.store(1, Ordering::SeqCst);
    api.stop().await;
    api.apply(service("mysql-ep", "mysql"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    phase.store(2, Ordering::SeqCst);
    api.restart().await;
    // The watches come back and the cache learns of the new Service: allowed, no findings.
    until(&server, &mysql_ep, "the cache recovered", |r| {
        r["allowed"] == true && rules(r, "warnings").is_empty()
    })
    .await;
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
            // Sent before the stop: denied, or — its confirmation read meeting the outage —
            // allowed with the findings as warnings saying why.
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
        logs.contains("cannot confirm a cross-object denial"),
        "{logs}"
    );
}
