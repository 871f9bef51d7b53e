//! `extsvc-guard serve` as the API server meets it: the real binary on loopback, with
//! certificates from `extsvc-guard certs`, over verified TLS (the client trusts only the
//! generated CA), with HTTP/1.1 and HTTP/2.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use crate::support::*;
use base64::Engine;
use serde_json::{Value, json};

fn response(answer: &Answer) -> Value {
    assert_eq!(answer.status, 200, "{}", answer.text());
    let json = answer.json();
    assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(json["kind"], "AdmissionReview");
    json["response"].clone()
}

fn decode_patch(response: &Value) -> Option<json_patch::Patch> {
    let patch = response.get("patch")?.as_str()?;
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

fn assert_clean_warnings(response: &Value) {
    for w in response["warnings"].as_array().into_iter().flatten() {
        let w = w.as_str().unwrap();
        assert!(!w.chars().any(char::is_control), "{w:?}");
        assert!(w.chars().count() <= 400, "{w:?}");
    }
}

/// The captured reviews extsvc-guard denies when it has no cluster view: the IP in
/// `externalName`. Everything else is allowed; the control plane's writes unjudged.
const DENIED_WITHOUT_A_CLUSTER: [&str; 2] = ["012-Service-CREATE.json", "056-Service-CREATE.json"];

#[tokio::test(flavor = "multi_thread")]
async fn every_captured_review_is_answered_over_http1_and_http2() {
    let server = Server::start(&[]);
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 58);
    for http in [Http::One, Http::Two] {
        let client = client(&server.ca(), http);
        for name in &names {
            let body = fixture(name);
            let uid = serde_json::from_slice::<Value>(&body).unwrap()["request"]["uid"].clone();
            let path = if name.contains("-mutate") {
                "/mutate"
            } else {
                "/validate"
            };
            let answer = post(&client, &server.url(path), body).await;
            let expected_version = match http {
                Http::One => reqwest::Version::HTTP_11,
                Http::Two => reqwest::Version::HTTP_2,
            };
            assert_eq!(answer.version, expected_version);
            let r = response(&answer);
            assert_eq!(r["uid"], uid, "{name}");
            assert_clean_warnings(&r);
            if DENIED_WITHOUT_A_CLUSTER.contains(&name.as_str()) {
                assert_eq!(r["allowed"], false, "{name}: {r:#}");
                assert_eq!(r["status"]["code"], 403);
                assert_eq!(r["status"]["reason"], "Forbidden");
                let message = r["status"]["message"].as_str().unwrap();
                assert!(
                    message.starts_with(
                        "[externalname-ip] Service default/ext-ip spec.externalName: \"192.168.1.10\" is an IP address"
                    ),
                    "{message}"
                );
                assert!(message.contains("replace it with a Service without selector"));
                assert_eq!(
                    r["auditAnnotations"]["findings"],
                    "externalname-ip=deny@spec.externalName"
                );
            } else {
                assert_eq!(r["allowed"], true, "{name}: {r:#}");
                assert!(r.get("status").is_none(), "{name}: {r:#}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_request_is_judged_like_any_other() {
    let server = Server::start(&[]);
    let mut review: Value = serde_json::from_slice(&fixture("012-Service-CREATE.json")).unwrap();
    review["request"]["dryRun"] = json!(true);
    let client = client(&server.ca(), Http::Two);
    let r = response(
        &post(
            &client,
            &server.url("/validate"),
            serde_json::to_vec(&review).unwrap(),
        )
        .await,
    );
    assert_eq!(r["allowed"], false);
    server.wait_log("\"dry_run\":true");
}

/// The object of a captured review.
fn object_of(name: &str) -> Value {
    serde_json::from_slice::<Value>(&fixture(name)).unwrap()["request"]["object"].clone()
}

/// A server whose policy sets the shape metadata (off by default), so that `/mutate`
/// patches the Services that leave the cluster.
fn start_with_shape_metadata() -> Server {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &[]);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "shapeMetadata: true\n").unwrap();
    let policy = policy.to_str().unwrap().to_owned();
    Server::start_in(dir, &["--policy", &policy])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_captured_mutate_review_gets_a_patch_that_applies_and_the_patched_object_gets_none() {
    let server = start_with_shape_metadata();
    let client = client(&server.ca(), Http::Two);
    let r = response(
        &post(
            &client,
            &server.url("/mutate"),
            fixture("021-Service-CREATE-mutate.json"),
        )
        .await,
    );
    assert_eq!(r["allowed"], true);
    let patch = decode_patch(&r).expect("a patch");
    let mut object = object_of("021-Service-CREATE-mutate.json");
    json_patch::patch(&mut object, &patch).unwrap();
    assert_eq!(
        object["metadata"]["labels"]["extsvc-guard.io/shape"],
        "headless-mapping"
    );
    // What was there is kept.
    let before = object_of("021-Service-CREATE-mutate.json");
    for (k, v) in before["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        assert_eq!(&object["metadata"]["labels"][k], v);
    }
    let again = response(
        &post(
            &client,
            &server.url("/mutate"),
            review("again", "CREATE", &object),
        )
        .await,
    );
    assert_eq!(again["allowed"], true);
    assert!(again.get("patch").is_none(), "{again:#}");
    assert!(again.get("patchType").is_none(), "{again:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutation_adds_required_metadata_from_the_policy_creates_the_maps_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &[]);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "shapeMetadata: true\nrequiredMetadata:\n  labels:\n    - {key: example.com/owner, value: platform}\n  annotations:\n    - {key: example.com/contact, value: \"#platform-oncall\"}\n    - {key: team, fromNamespaceLabel: team}\n",
    )
    .unwrap();
    let server = Server::start_in(dir, &["--policy", policy.to_str().unwrap()]);
    let client = client(&server.ca(), Http::One);
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "payments-db", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "db.payments.example.com", "ports": [{"port": 5432}]}
    });
    let r = response(
        &post(
            &client,
            &server.url("/mutate"),
            review("m-1", "CREATE", &service),
        )
        .await,
    );
    let patch = decode_patch(&r).expect("a patch");
    let ops = serde_json::to_value(&patch).unwrap();
    assert_eq!(
        ops,
        json!([
            {"op": "add", "path": "/metadata/labels", "value": {}},
            {"op": "add", "path": "/metadata/labels/example.com~1owner", "value": "platform"},
            {"op": "add", "path": "/metadata/labels/extsvc-guard.io~1shape", "value": "external-name"},
            {"op": "add", "path": "/metadata/annotations", "value": {}},
            {"op": "add", "path": "/metadata/annotations/example.com~1contact", "value": "#platform-oncall"},
            {"op": "add", "path": "/metadata/annotations/extsvc-guard.io~1target", "value": "db.payments.example.com"},
        ])
    );
    // Without a cluster view the namespace label cannot be copied: said, not guessed.
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r:#}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("annotation team not added to Service shop/payments-db: it is copied from label team of namespace shop"),
        "{warnings:?}"
    );
    let mut patched = service.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let again = response(
        &post(
            &client,
            &server.url("/mutate"),
            review("m-2", "UPDATE", &patched),
        )
        .await,
    );
    assert!(again.get("patch").is_none(), "{again:#}");

    // A value the user set is kept.
    let mut owned = service.clone();
    owned["metadata"]["labels"] = json!({"example.com/owner": "payments"});
    let r = response(
        &post(
            &client,
            &server.url("/mutate"),
            review("m-3", "CREATE", &owned),
        )
        .await,
    );
    let mut patched = owned.clone();
    json_patch::patch(&mut patched, &decode_patch(&r).unwrap()).unwrap();
    assert_eq!(
        patched["metadata"]["labels"]["example.com/owner"],
        "payments"
    );
}

/// Every object of a seed example, in document order.
fn seed_objects(file: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seeds")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("Service" | "Endpoints" | "EndpointSlice")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_examples_sent_as_reviews_are_judged_on_what_one_object_shows() {
    let server = Server::start(&[]);
    let client = client(&server.ca(), Http::Two);
    // (seed, object name, denying rules, warning rules) — with no cluster view, findings
    // that need another object stay silent.
    let cases: [(&str, &str, &[&str], &[&str]); 8] = [
        ("000-mysql-svc-and-mysql-ep.yaml", "mysql-svc", &[], &[]),
        ("000-mysql-svc-and-mysql-ep.yaml", "mysql-ep", &[], &[]),
        (
            "001-externalname-ip.yaml",
            "mysql",
            &["externalname-ip"],
            &[],
        ),
        ("001-externalname-domain.yaml", "mysql", &[], &[]),
        (
            "001-headless-port-remap-with-target-port.yaml",
            "mysql",
            &["headless-port-remap"],
            &[],
        ),
        (
            "001-ip-port-mapping-with-target-port.yaml",
            "mysql",
            &[],
            &[],
        ),
        (
            "003-externalname-api-somecompany.yaml",
            "external-service",
            &[],
            &["externalname-host-mismatch"],
        ),
        ("003-selector-service-test-svc.yaml", "test-svc", &[], &[]),
    ];
    for (seed, name, denying, warning) in cases {
        let objects = seed_objects(seed);
        // The Service, when a seed has a Service and Endpoints of one name.
        let object = objects
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{seed} has no object {name}"));
        let r = response(
            &post(
                &client,
                &server.url("/validate"),
                review(name, "CREATE", object),
            )
            .await,
        );
        let context = format!("{seed} {name}: {r:#}");
        assert_eq!(r["allowed"], denying.is_empty(), "{context}");
        let message = r["status"]["message"].as_str().unwrap_or("");
        let denied: Vec<&str> = message
            .lines()
            .filter_map(|l| l.strip_prefix('[')?.split(']').next())
            .collect();
        assert_eq!(denied, denying, "{context}");
        let warned: Vec<&str> = r["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str()?.strip_prefix('[')?.split(']').next())
            .collect();
        assert_eq!(warned, warning, "{context}");
        assert_clean_warnings(&r);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_review_for_an_unrelated_kind_is_allowed_with_no_findings() {
    let server = Server::start(&[]);
    let client = client(&server.ca(), Http::One);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}});
    let r = response(
        &post(
            &client,
            &server.url("/validate"),
            review("pod-1", "CREATE", &pod),
        )
        .await,
    );
    assert_eq!(r, json!({"uid": "pod-1", "allowed": true}));
    let r = response(
        &post(
            &client,
            &server.url("/mutate"),
            review("pod-2", "CREATE", &pod),
        )
        .await,
    );
    assert_eq!(r, json!({"uid": "pod-2", "allowed": true}));
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_up_to_3_mib_are_accepted_and_larger_ones_get_413() {
    let server = Server::start(&[]);
    let client = client(&server.ca(), Http::One);
    let mut service = object_of("055-Service-CREATE.json");
    service["metadata"]["annotations"]["padding"] = json!("x".repeat(3 * 1024 * 1024 - 8 * 1024));
    let body = review("big", "CREATE", &service);
    assert!(body.len() < 3 * 1024 * 1024);
    let r = response(&post(&client, &server.url("/validate"), body).await);
    assert_eq!(r["allowed"], true);

    // Over HTTP/2 the client sees the 413 the server answers before the body is read whole.
    service["metadata"]["annotations"]["padding"] = json!("x".repeat(3 * 1024 * 1024 + 1));
    let client = support::client(&server.ca(), Http::Two);
    let answer = post(
        &client,
        &server.url("/validate"),
        review("huge", "CREATE", &service),
    )
    .await;
    assert_eq!(answer.status, 413);
    assert_eq!(
        answer.text(),
        "the request body exceeds the limit of 3 MiB\n"
    );

    // Over HTTP/1.1 a declared length over the limit is refused before any body byte.
    let answer = raw_http1(&server, "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 4194304\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 413 Payload Too Large"),
        "{answer}"
    );
    assert!(
        answer.ends_with("the request body exceeds the limit of 3 MiB\n"),
        "{answer}"
    );
}

/// An Endpoints of `n` addresses in 10.0.0.0/8 and, last, the cloud metadata address.
fn endpoints_with_addresses(n: usize) -> Value {
    let mut addresses: Vec<Value> = (1..n)
        .map(|i| json!({"ip": format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255)}))
        .collect();
    addresses.push(json!({"ip": "169.254.169.254"}));
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "big", "namespace": "default"},
        "subsets": [{"addresses": addresses, "ports": [{"port": 5432}]}],
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn large_reviews_sent_at_once_are_each_judged_in_full() {
    // Together far more than the room for large reviews judged at once (1 MiB here, two of
    // these at a time): most wait. Over HTTP/2 all ten share one connection, whose flow
    // control the waiting ones' unread bodies must not exhaust. The test build is slow and
    // shares the machine with the other tests: wait as long as it takes.
    let server = Server::start(&[
        "--request-timeout",
        "60s",
        "--webhook-timeout",
        "61s",
        "--large-review-budget",
        "1",
    ]);
    let n = 20_000;
    let body = review("big", "CREATE", &endpoints_with_addresses(n));
    assert!(body.len() > 350 * 1024, "{}", body.len());
    for http in [Http::One, Http::Two] {
        let client = client(&server.ca(), http);
        let url = server.url("/validate");
        let answers =
            futures::future::join_all((0..10).map(|_| post(&client, &url, body.clone()))).await;
        for answer in &answers {
            let r = response(answer);
            assert_eq!(r["allowed"], false, "{r:#}");
            let message = r["status"]["message"].as_str().unwrap();
            let field = format!("subsets[0].addresses[{}].ip", n - 1);
            assert!(
                message.starts_with(&format!(
                    "[target-disallowed] Endpoints default/big {field}: 169.254.169.254"
                )),
                "{message}"
            );
            assert_eq!(message.lines().count(), 1, "{message}");
        }
    }
}

/// Sends `head` on a fresh TLS connection and reads until the server closes it.
async fn raw_http1(server: &Server, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = raw_tls(server).await;
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn raw_tls(server: &Server) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_tls(
        &server.ca(),
        &[b"http/1.1"],
    )));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_does_not_arrive_within_the_request_timeout_gets_408() {
    // The timeout also bounds the TLS handshake: long enough for one on a busy CI machine.
    let server = Server::start(&["--request-timeout", "1500ms"]);
    let answer = raw_http1(
        &server,
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout"),
        "{answer}"
    );
    assert!(
        answer.ends_with("the request body did not arrive within 1.5s\n"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_not_json_by_content_type_gets_415() {
    let server = Server::start(&[]);
    for http in [Http::One, Http::Two] {
        let client = client(&server.ca(), http);
        let answer = post_with(
            &client,
            &server.url("/validate"),
            fixture("001-Service-CREATE.json"),
            "text/plain",
        )
        .await;
        assert_eq!(answer.status, 415);
        assert_eq!(
            answer.text(),
            "Content-Type must be application/json, got \"text/plain\"\n"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_reviews_get_400_or_an_answer_carrying_the_error() {
    let server = Server::start(&[]);
    let client = client(&server.ca(), Http::Two);
    let answer = post(
        &client,
        &server.url("/validate"),
        b"{\"apiVersion\": ".to_vec(),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert!(
        answer
            .text()
            .starts_with("the request body is not a valid AdmissionReview: EOF while parsing"),
        "{}",
        answer.text()
    );

    let answer = post(
        &client,
        &server.url("/validate"),
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
    )
    .await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (400, "the AdmissionReview has no request\n")
    );

    // With a uid the API server gets an AdmissionReview whose message it can show.
    let mut review: Value = serde_json::from_slice(&fixture("001-Service-CREATE.json")).unwrap();
    review["request"]["object"]["spec"]["ports"] = json!("3306");
    let r = response(
        &post(
            &client,
            &server.url("/validate"),
            serde_json::to_vec(&review).unwrap(),
        )
        .await,
    );
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 400);
    assert_eq!(r["status"]["reason"], "BadRequest");
    assert!(
        r["status"]["message"].as_str().unwrap().starts_with(
            "extsvc-guard cannot read request.object as a Service: invalid type: string \"3306\""
        ),
        "{r:#}"
    );
}

/// The value of one series; panics when the series is absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

/// Replaces a file as a Secret or ConfigMap update does: write aside, then rename.
fn replace_file(path: &std::path::Path, contents: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_listener_serves_probes_and_counts_requests_findings_and_latency() {
    let server = start_with_shape_metadata();
    let client = client(&server.ca(), Http::One);
    post(
        &client,
        &server.url("/validate"),
        fixture("012-Service-CREATE.json"),
    )
    .await;
    post(
        &client,
        &server.url("/mutate"),
        fixture("021-Service-CREATE-mutate.json"),
    )
    .await;
    post_with(
        &client,
        &server.url("/validate"),
        b"x".to_vec(),
        "text/plain",
    )
    .await;

    let plain = reqwest::Client::new();
    let healthz = plain
        .get(server.metrics_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = plain
        .get(server.metrics_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    let text = plain
        .get(server.metrics_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (series, value) in [
        (
            "extsvc_guard_admission_requests_total{path=\"/validate\",kind=\"Service\",operation=\"CREATE\",verdict=\"denied\"}",
            1.0,
        ),
        (
            "extsvc_guard_admission_requests_total{path=\"/mutate\",kind=\"Service\",operation=\"CREATE\",verdict=\"patched\"}",
            1.0,
        ),
        (
            "extsvc_guard_findings_total{rule=\"externalname-ip\",action=\"deny\"}",
            1.0,
        ),
        (
            "extsvc_guard_admission_refused_total{path=\"/validate\",code=\"415\"}",
            1.0,
        ),
        (
            "extsvc_guard_admission_duration_seconds_count{path=\"/validate\"}",
            2.0,
        ),
        ("extsvc_guard_admission_in_flight", 0.0),
        ("extsvc_guard_reloads_total{what=\"certificate\"}", 0.0),
    ] {
        assert_eq!(metric(&text, series), value, "{series}\n{text}");
    }
    // The admission port serves no probes, the metrics port no admission.
    let answer = plain
        .post(server.metrics_url("/validate"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_certificate_rotates_while_a_client_keeps_sending_with_zero_failures() {
    let server = Server::start(&[]);
    let before = served_certificate(&server).await;
    let url = server.url("/validate");
    let ca = server.ca();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for http in [Http::One, Http::Two] {
        let (url, ca, stop) = (url.clone(), ca.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // A new client now and then: new handshakes during the swap too.
                let client = client(&ca, http);
                for _ in 0..20 {
                    let answer = post(&client, &url, fixture("002-Endpoints-CREATE.json")).await;
                    assert_eq!(answer.status, 200, "{}", answer.text());
                    sent += 1;
                }
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The same CA signs the new certificate, so clients keep trusting it.
    make_certs(server.dir.path(), &["--force"]);
    server.wait_log("serving certificate reloaded");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in senders {
        assert!(s.await.unwrap() > 0);
    }
    let after = served_certificate(&server).await;
    assert_ne!(before, after, "new connections get the new certificate");
    assert_eq!(
        after,
        pem_der(&server.dir.path().join("tls.crt")),
        "the certificate served is the one on disk"
    );
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_certificate_at_reload_keeps_the_old_one_and_counts_a_failure() {
    let server = Server::start(&[]);
    let before = served_certificate(&server).await;
    std::fs::write(
        server.dir.path().join("tls.crt"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .unwrap();
    let line = server.wait_log("changed certificate refused");
    assert!(line.contains("tls.crt"), "{line}");
    assert_eq!(served_certificate(&server).await, before);
    let text = reqwest::get(server.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &text,
            "extsvc_guard_reload_failures_total{what=\"certificate\"}"
        ),
        1.0,
        "{text}"
    );
    let client = client(&server.ca(), Http::Two);
    let r = response(
        &post(
            &client,
            &server.url("/validate"),
            fixture("001-Service-CREATE.json"),
        )
        .await,
    );
    assert_eq!(r["allowed"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_policy_takes_effect_and_a_broken_one_keeps_the_previous() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &[]);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules:\n  externalname-ip: deny\n").unwrap();
    let server = Server::start_in(dir, &["--policy", policy.to_str().unwrap()]);
    let client = client(&server.ca(), Http::One);
    let url = server.url("/validate");
    let ask = || post(&client, &url, fixture("012-Service-CREATE.json"));
    assert_eq!(response(&ask().await)["allowed"], false);

    replace_file(&policy, "rules:\n  externalname-ip: sometimes\n");
    let line = server.wait_log("changed policy refused");
    assert!(line.contains("policy.yaml:2:20"), "{line}");
    assert_eq!(
        response(&ask().await)["allowed"],
        false,
        "the previous policy stays"
    );

    replace_file(&policy, "rules:\n  externalname-ip: warn\n");
    server.wait_log("policy reloaded");
    let r = response(&ask().await);
    assert_eq!(r["allowed"], true);
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("[externalname-ip] Service default/ext-ip spec.externalName: ")
    );
    let text = reqwest::get(server.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&text, "extsvc_guard_reload_failures_total{what=\"policy\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "extsvc_guard_reloads_total{what=\"policy\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_turns_readiness_off_and_answers_the_requests_in_flight_before_exiting() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A delay long enough that a new connection is surely made within it on a busy machine,
    // and bodies that may take longer than that.
    let mut server = Server::start(&[
        "--shutdown-grace",
        "8s",
        "--shutdown-delay",
        "2s",
        "--request-timeout",
        "6s",
        "--webhook-timeout",
        "10s",
    ]);
    let body = fixture("012-Service-CREATE.json");
    // Requests in flight: headers and half the body sent, the rest after SIGTERM.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut tls = raw_tls(&server).await;
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(&body[..body.len() / 2]).await.unwrap();
        tls.flush().await.unwrap();
        streams.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.terminate();
    server.wait_log("shutting down");
    let readyz = reqwest::get(server.metrics_url("/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 503, "readiness is off at once");
    // During the shutdown delay new requests are still answered.
    let client = client(&server.ca(), Http::Two);
    let r = response(
        &post(
            &client,
            &server.url("/validate"),
            fixture("001-Service-CREATE.json"),
        )
        .await,
    );
    assert_eq!(r["allowed"], true);
    for mut tls in streams {
        tls.write_all(&body[body.len() / 2..]).await.unwrap();
        tls.flush().await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
            .await
            .expect("the in-flight request is answered")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("\"allowed\":false"), "{answer}");
    }
    let status = server.wait_exit(Duration::from_secs(9));
    assert!(status.success(), "{status}");
    server.wait_log("\"message\":\"stopped\"");
}

#[test]
fn without_a_certificate_serve_exits_2_and_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no certificate at"), "{stderr}");
    assert!(stderr.contains("`extsvc-guard certs`"), "{stderr}");
}

#[test]
fn a_worker_thread_count_that_is_not_a_positive_number_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &[]);
    for value in ["abc", "0", "-1"] {
        let out = serve_refused(dir.path(), &[], &[("TOKIO_WORKER_THREADS", value)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(
            stderr.contains(&format!("TOKIO_WORKER_THREADS is \"{value}\"")),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn timeouts_that_do_not_fit_the_webhook_timeout_exit_2_naming_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &[]);
    let out = serve_refused(dir.path(), &["--request-timeout", "6s"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--request-timeout (6s) is not below --webhook-timeout (5s)"),
        "{stderr}"
    );
}

#[test]
fn a_broken_policy_at_start_exits_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &[]);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules:\n  no-such-rule: deny\n").unwrap();
    let out = std::process::Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("policy.yaml:2:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_shows_what_the_webhook_answers_for_the_docs_reviews() {
    let server = start_with_shape_metadata();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/reviews");
    let client = client(&server.ca(), Http::One);

    let body = std::fs::read(docs.join("externalname-ip-create.json")).unwrap();
    let r = response(&post(&client, &server.url("/validate"), body).await);
    let message = serde_json::to_string(&r["status"]["message"]).unwrap();
    assert!(
        readme.contains(&format!("\"message\":{message}")),
        "README lacks {message}"
    );
    assert!(readme.contains(r#""code":403,"reason":"Forbidden""#));
    let audit = serde_json::to_string(&r["auditAnnotations"]).unwrap();
    assert!(readme.contains(&audit), "README lacks {audit}");

    let body = std::fs::read(docs.join("externalname-mutate.json")).unwrap();
    let r = response(&post(&client, &server.url("/mutate"), body).await);
    let ops = serde_json::to_value(decode_patch(&r).unwrap()).unwrap();
    for op in ops.as_array().unwrap() {
        let op = serde_json::to_string(op).unwrap();
        assert!(readme.contains(&op), "README lacks {op}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_planes_writes_are_skipped_but_its_markers_on_a_users_object_are_not() {
    let server = Server::start(&[]);
    let client = client(&server.ca(), Http::One);
    for name in [
        "007-EndpointSlice-CREATE.json",
        "015-EndpointSlice-CREATE.json",
        "016-Endpoints-CREATE.json",
        "029-EndpointSlice-DELETE.json",
    ] {
        let r = response(&post(&client, &server.url("/validate"), fixture(name)).await);
        assert_eq!(r["allowed"], true, "{name}");
    }
    // A user's Endpoints at the Alibaba metadata address, dressed as the endpoints
    // controller's: denied all the same.
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "cloud",
            "namespace": "default",
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"},
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1"}]
        },
        "subsets": [{"addresses": [{"ip": "100.100.100.200"}], "ports": [{"port": 80}]}]
    });
    let r = response(
        &post(
            &client,
            &server.url("/validate"),
            review("dressed", "CREATE", &endpoints),
        )
        .await,
    );
    assert_eq!(r["allowed"], false, "{r:#}");
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("[target-disallowed] Endpoints default/cloud subsets[0].addresses[0].ip: 100.100.100.200"),
        "{r:#}"
    );
    let text = reqwest::get(server.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &text,
            "extsvc_guard_admission_requests_total{path=\"/validate\",kind=\"EndpointSlice\",operation=\"CREATE\",verdict=\"skipped\"}"
        ),
        2.0
    );
}
