//! Fault drills under load, bounded to seconds each: SIGTERM while clients keep sending.
//! (The API server going away and coming back is drilled against a real one in
//! tests/apiserver/drills.rs; certificate rotation under load is
//! `the_certificate_rotates_while_a_client_keeps_sending_with_zero_failures` in
//! tests/server/serve.rs.) Every request carries its own uid, so a decision the server made and the
//! client never received would be seen.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::load::*;
use crate::support::*;
use serde_json::json;

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
