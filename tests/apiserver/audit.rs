//! Continuous audit on the real API server: `serve`'s violation gauges, computed from its
//! watch cache; the CronJob component's account running `scan --apply` with exactly its
//! RBAC; and how a scheduled scan fails: the CRD missing, the API server gone, two runs at
//! once.

use std::time::{Duration, Instant};

use crate::envtest;
use crate::support::Server;
use crate::{endpoints, metrics, repo, serve, wait_ready};

/// The value of the violation gauge of `rule`, `action` and `namespace`, if exported.
fn violations(text: &str, rule: &str, action: &str, namespace: &str) -> Option<f64> {
    let series = format!(
        "extsvc_guard_violations{{rule=\"{rule}\",action=\"{action}\",namespace=\"{namespace}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
}

/// Every violation series of `namespace` with its value.
fn series_of(text: &str, namespace: &str) -> Vec<(String, f64)> {
    let label = format!("namespace=\"{namespace}\"}} ");
    text.lines()
        .filter(|l| l.starts_with("extsvc_guard_violations{"))
        .filter_map(|l| {
            let (series, value) = l.split_once(&label)?;
            Some((series.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Polls `/metrics` until `condition` holds of it; returns that text.
async fn metrics_until(server: &Server, what: &str, condition: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics(server).await;
        if condition(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never happened: {what}\n{text}\n{:#?}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The seeds' `mysql-svc`/`mysql-ep` pair as published, in `namespace`.
pub fn seed_pair(namespace: &str) -> String {
    std::fs::read_to_string(repo().join("tests/fixtures/seeds/000-mysql-svc-and-mysql-ep.yaml"))
        .unwrap()
        .replace("namespace: default", &format!("namespace: {namespace}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_the_seed_pair_in_violation_and_the_gauge_drops_when_the_pair_is_fixed() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("gauges", &[]);
    cp.apply(&seed_pair(&ns));
    let server = serve(
        &cp,
        &["--audit-interval", "3s", "--audit-namespaces", "1000"],
    );
    wait_ready(&server).await;

    // Computed from the watch cache as soon as it has listed: no review was sent.
    let text = metrics_until(&server, "the pair's violations", |t| {
        violations(t, "endpoints-orphaned", "deny", &ns) == Some(1.0)
    })
    .await;
    assert_eq!(
        violations(&text, "port-name-mismatch", "deny", &ns),
        Some(1.0)
    );
    assert_eq!(
        violations(&text, "service-no-endpoints", "warn", &ns),
        Some(1.0)
    );
    assert_eq!(series_of(&text, &ns).len(), 3, "{text}");
    let computed = |t: &str| {
        crate::metric(
            t,
            "extsvc_guard_violations_last_computed_timestamp_seconds ",
        )
        .expect("the time of the last computation")
    };
    let first = computed(&text);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - first).abs() < 60.0, "{first} vs {now}");

    // Fixed as the seed's comment says: the Endpoints renamed after the Service, its port
    // after the Service's port.
    cp.kubectl_ok(&["delete", "-n", &ns, "endpoints", "mysql-ep"], None);
    cp.apply(&endpoints(&ns, "mysql-svc", "default-ep").to_string());
    let text = metrics_until(&server, "the orphan's gauge at 0", |t| {
        violations(t, "endpoints-orphaned", "deny", &ns) == Some(0.0)
    })
    .await;
    assert!(
        series_of(&text, &ns).iter().all(|(_, v)| *v == 0.0),
        "{text}"
    );
    assert!(computed(&text) > first, "{text}");
    // And one computation later the namespace has no series at all.
    metrics_until(&server, "the namespace's series removed", |t| {
        series_of(t, &ns).is_empty()
    })
    .await;
}
