//! Continuous audit on the real API server: `serve`'s violation gauges, computed from its
//! watch cache; the CronJob component's account running `scan --apply` with exactly its
//! RBAC; and how a scheduled scan fails: the CRD missing, the API server gone, two runs at
//! once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::envtest::{self, ControlPlane};
use crate::support::{BIN, Server};
use crate::{endpoints, eventually, metrics, repo, serve, wait_ready};

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

// ---------------------------------------------------------------------------------------
// The scheduled scan: deploy/components/audit on the real API server

/// The self-signed overlay with the audit component, rendered as the README says (the
/// `components:` lines in the overlay, then render.sh), once per test binary.
struct Component {
    objects: Vec<Value>,
    /// The CronJob's container arguments, as the Pod would run them.
    args: Vec<String>,
    /// The policy the CronJob mounts (the ConfigMap's file).
    policy: String,
}

fn component(cp: &ControlPlane) -> &'static Component {
    static RENDERED: OnceLock<Component> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let scratch = cp.tempdir().keep();
        let copied = Command::new("cp")
            .arg("-R")
            .arg(repo().join("deploy"))
            .arg(&scratch)
            .status()
            .unwrap();
        assert!(copied.success());
        let overlay = scratch.join("deploy/overlays/self-signed");
        let file = overlay.join("kustomization.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(
            &file,
            format!("{text}components:\n  - ../../components/audit\n"),
        )
        .unwrap();
        let certs = overlay.join("certs");
        let _ = std::fs::remove_dir_all(&certs);
        let out = Command::new(BIN)
            .args(["certs", "--out"])
            .arg(&certs)
            .output()
            .unwrap();
        assert!(out.status.success());
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
        let cronjob = objects
            .iter()
            .find(|o| o["kind"] == "CronJob")
            .expect("the component's CronJob");
        let container =
            &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        let args = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let policy = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "extsvc-guard-policy")
            .expect("the policy ConfigMap")["data"]["policy.yaml"]
            .as_str()
            .unwrap()
            .to_owned();
        Component {
            objects,
            args,
            policy,
        }
    })
}

/// Applies what the overlay with the component renders, but the webhook configurations
/// (no webhook Pod runs here); returns kubectl's output.
fn install_component(cp: &ControlPlane) -> String {
    let objects: Vec<&Value> = component(cp)
        .objects
        .iter()
        .filter(|o| {
            !o["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        })
        .collect();
    cp.apply(&json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string())
}

const CRD: &str = "crd/policyreports.wgpolicyk8s.io";

fn crd_installed(cp: &ControlPlane) -> bool {
    cp.kubectl(&["get", CRD], None).status.success()
}

fn install_crd(cp: &ControlPlane) {
    let crd = std::fs::read_to_string(
        repo().join("tests/fixtures/crds/wgpolicyk8s.io_policyreports.yaml"),
    )
    .unwrap();
    cp.apply(&crd);
    cp.kubectl_ok(
        &["wait", "--for=condition=Established", CRD, "--timeout=60s"],
        None,
    );
}

fn remove_crd(cp: &ControlPlane) {
    cp.kubectl_ok(&["delete", CRD, "--ignore-not-found", "--wait=true"], None);
    eventually(Duration::from_secs(60), "the PolicyReport API gone", || {
        (!cp.kubectl(&["get", "policyreports", "-A"], None)
            .status
            .success())
        .then_some(())
    });
}

/// The PolicyReport CRD as a test needs it, put back as found when dropped: tests/apiserver/
/// scan.rs expects to find it missing when it starts, and these tests run alone
/// (`control_plane_alone`), so no other test sees it change.
struct CrdAsFound<'a> {
    cp: &'a ControlPlane,
    was: bool,
}

impl<'a> CrdAsFound<'a> {
    fn new(cp: &'a ControlPlane) -> CrdAsFound<'a> {
        CrdAsFound {
            cp,
            was: crd_installed(cp),
        }
    }
}

impl Drop for CrdAsFound<'_> {
    fn drop(&mut self) {
        match (self.was, crd_installed(self.cp)) {
            (true, false) => install_crd(self.cp),
            (false, true) => remove_crd(self.cp),
            _ => {}
        }
    }
}

/// Runs the CronJob's command with `kubeconfig` (a token of its ServiceAccount), the
/// mounted policy file written to `dir`: (exit code, stdout, stderr).
fn scheduled_scan(
    cp: &ControlPlane,
    kubeconfig: &Path,
    dir: &Path,
) -> (Option<i32>, String, String) {
    let component = component(cp);
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, &component.policy).unwrap();
    let args: Vec<String> = component.args[..]
        .iter()
        .map(|a| match a.strip_prefix("--policy=") {
            Some(_) => format!("--policy={}", policy.display()),
            None => a.clone(),
        })
        .collect();
    assert_eq!(args[0], "scan");
    let out = Command::new(BIN)
        .args(&args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Our PolicyReports in `namespace`, by name.
fn reports_in(cp: &ControlPlane, namespace: &str) -> BTreeMap<String, Value> {
    let out = cp.kubectl_ok(
        &[
            "get",
            "policyreports",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/managed-by=extsvc-guard",
            "-o",
            "json",
        ],
        None,
    );
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metadata"]["name"].as_str().unwrap().to_owned(),
                r.clone(),
            )
        })
        .collect()
}

fn summary(report: &Value) -> (u64, u64, u64) {
    let n = |k: &str| report["summary"][k].as_u64().unwrap_or(0);
    (n("fail"), n("warn"), n("pass"))
}

/// `kubectl auth can-i` as `kubeconfig`'s account.
fn can_i(cp: &ControlPlane, kubeconfig: &Path, verb: &str, resource: &str) -> bool {
    cp.kubectl(
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "auth",
            "can-i",
            verb,
            resource,
            "-A",
        ],
        None,
    )
    .status
    .success()
}

#[test]
fn the_component_applied_runs_scan_apply_as_its_own_account_and_reports_come_and_go_with_the_mistakes()
 {
    // The scheduled scan reads the whole cluster, and the CRD changes: alone.
    let Some(cp) = envtest::control_plane_alone() else {
        return;
    };
    let _crd = CrdAsFound::new(&cp);
    let installed = install_component(&cp);
    for line in [
        "serviceaccount/extsvc-guard-audit ",
        "clusterrole.rbac.authorization.k8s.io/extsvc-guard-audit ",
        "clusterrolebinding.rbac.authorization.k8s.io/extsvc-guard-audit ",
        "cronjob.batch/extsvc-guard-audit ",
    ] {
        assert!(installed.contains(line), "{installed}");
    }
    let stored: Value = serde_json::from_str(&cp.kubectl_ok(
        &[
            "get",
            "cronjob",
            "-n",
            "extsvc-guard",
            "extsvc-guard-audit",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    assert_eq!(stored["spec"]["concurrencyPolicy"], "Forbid");
    if !crd_installed(&cp) {
        install_crd(&cp);
    }

    let (seed, fixed) = (
        cp.namespace("audit-seed", &[]),
        cp.namespace("audit-gone", &[]),
    );
    cp.apply(&seed_pair(&seed));
    cp.apply(&seed_pair(&fixed));
    let dir = cp.tempdir();
    let token = cp.token_kubeconfig("extsvc-guard", "extsvc-guard-audit", dir.path());
    // Exactly its role: what scan --apply needs, nothing of the webhook's or more.
    for (verb, resource, allowed) in [
        ("list", "services", true),
        ("list", "endpointslices.discovery.k8s.io", true),
        ("list", "ingresses.networking.k8s.io", true),
        ("patch", "policyreports.wgpolicyk8s.io", true),
        ("delete", "policyreports.wgpolicyk8s.io", true),
        ("watch", "services", false),
        ("get", "services", false),
        ("create", "services", false),
        ("list", "pods", false),
        ("list", "secrets", false),
    ] {
        assert_eq!(
            can_i(&cp, &token, verb, resource),
            allowed,
            "{verb} {resource}"
        );
    }
    let webhook = cp.token_kubeconfig("extsvc-guard", "extsvc-guard", dir.path());
    assert!(!can_i(
        &cp,
        &webhook,
        "patch",
        "policyreports.wgpolicyk8s.io"
    ));

    let (code, stdout, stderr) = scheduled_scan(&cp, &token, dir.path());
    assert_eq!(
        code,
        Some(0),
        "findings do not fail the job: {stdout}{stderr}"
    );
    assert!(
        stdout.contains(" objects in ") && stdout.contains(" denials, "),
        "one line of counts: {stdout}"
    );
    assert!(
        stderr.contains("applied ") && stderr.contains("PolicyReport(s) named extsvc-guard"),
        "{stderr}"
    );
    assert!(!stderr.contains("missing permission"), "{stderr}");
    for ns in [&seed, &fixed] {
        let reports = reports_in(&cp, ns);
        assert_eq!(reports.len(), 1, "{ns}: {reports:#?}");
        assert_eq!(summary(&reports["extsvc-guard"]), (2, 1, 0), "{ns}");
    }

    // Fixed in one namespace, emptied in the other: the failures leave the first report,
    // the second report goes.
    cp.kubectl_ok(&["delete", "-n", &seed, "endpoints", "mysql-ep"], None);
    cp.apply(&endpoints(&seed, "mysql-svc", "default-ep").to_string());
    cp.kubectl_ok(
        &["delete", "-n", &fixed, "service,endpoints", "--all"],
        None,
    );
    let (code, _, stderr) = scheduled_scan(&cp, &token, dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    let reports = reports_in(&cp, &seed);
    let (fail, warn, pass) = summary(&reports["extsvc-guard"]);
    assert_eq!((fail, warn), (0, 0), "{reports:#?}");
    assert!(pass >= 2, "{reports:#?}");
    assert!(reports_in(&cp, &fixed).is_empty(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "deleted the PolicyReport named extsvc-guard in {fixed}"
        )) || stderr.contains(&format!(", {fixed}")),
        "{stderr}"
    );
}

/// The bytes of a failed container's log the kubelet keeps as its termination message
/// with `terminationMessagePolicy: FallbackToLogsOnError`: the last 80 lines, at most
/// 2048 bytes.
fn termination_message(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    tail[tail.ceil_char_boundary(start)..].to_owned()
}

#[test]
fn without_the_crd_the_scheduled_scan_fails_saying_so_in_the_tail_its_pod_status_keeps() {
    let Some(cp) = envtest::control_plane_alone() else {
        return;
    };
    let _crd = CrdAsFound::new(&cp);
    install_component(&cp);
    remove_crd(&cp);
    let ns = cp.namespace("audit-no-crd", &[]);
    cp.apply(&seed_pair(&ns));
    let dir = cp.tempdir();
    let token = cp.token_kubeconfig("extsvc-guard", "extsvc-guard-audit", dir.path());
    let (code, stdout, stderr) = scheduled_scan(&cp, &token, dir.path());
    assert_eq!(code, Some(2), "the job fails: {stdout}{stderr}");
    // What scan printed before (stdout and stderr go to the same log), its last line the
    // reason, well within what the kubelet copies into the Pod's status.
    let message = termination_message(&format!("{stdout}{stderr}"));
    let last = message.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("extsvc-guard: apply policyreports in namespace ")
            && last.ends_with("(is the PolicyReport CRD wgpolicyk8s.io/v1alpha2 installed?)"),
        "{message}"
    );
    assert!(message.len() < 2048, "{message}");
    // The next run, once the CRD is there, writes the reports.
    install_crd(&cp);
    let (code, _, stderr) = scheduled_scan(&cp, &token, dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(summary(&reports_in(&cp, &ns)["extsvc-guard"]), (2, 1, 0));
}

/// `kubeconfig` pointed at `url` instead (the same CA and token).
fn pointed_at(kubeconfig: &Path, url: &str, dir: &Path) -> std::path::PathBuf {
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    config["clusters"][0]["cluster"]["server"] = json!(url);
    let path = dir.join("elsewhere.kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[test]
fn with_the_api_server_gone_the_scheduled_scan_fails_at_once_naming_the_read_and_deletes_nothing() {
    let Some(cp) = envtest::control_plane_alone() else {
        return;
    };
    let _crd = CrdAsFound::new(&cp);
    install_component(&cp);
    if !crd_installed(&cp) {
        install_crd(&cp);
    }
    let ns = cp.namespace("audit-gone-api", &[]);
    cp.apply(&seed_pair(&ns));
    let dir = cp.tempdir();
    let mut api = cp.extra_apiserver();
    let token = cp.token_kubeconfig("extsvc-guard", "extsvc-guard-audit", dir.path());
    let token = pointed_at(&token, &api.url, dir.path());
    let (code, _, stderr) = scheduled_scan(&cp, &token, dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    let before = reports_in(&cp, &ns);
    assert_eq!(summary(&before["extsvc-guard"]), (2, 1, 0));

    api.stop();
    // Meanwhile the namespace empties: a run that could list it would delete its report.
    cp.kubectl_ok(&["delete", "-n", &ns, "service,endpoints", "--all"], None);
    let started = Instant::now();
    let (code, stdout, stderr) = scheduled_scan(&cp, &token, dir.path());
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused connections end the run at once, not at the Job's deadline"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("extsvc-guard: list namespaces: ") && last.contains("onnect"),
        "{stderr}"
    );
    assert_eq!(
        reports_in(&cp, &ns)["extsvc-guard"]["metadata"]["resourceVersion"],
        before["extsvc-guard"]["metadata"]["resourceVersion"],
        "a failed run changes and deletes nothing"
    );
    // Back: the next run catches up.
    api.restart();
    let (code, _, stderr) = scheduled_scan(&cp, &token, dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(reports_in(&cp, &ns).is_empty(), "{stderr}");
}

#[test]
fn two_scheduled_scans_at_once_both_complete_and_leave_one_complete_report_per_namespace() {
    let Some(cp) = envtest::control_plane_alone() else {
        return;
    };
    let _crd = CrdAsFound::new(&cp);
    install_component(&cp);
    if !crd_installed(&cp) {
        install_crd(&cp);
    }
    let (seed, big) = (
        cp.namespace("audit-overlap", &[]),
        cp.namespace("audit-big", &[]),
    );
    cp.apply(&seed_pair(&seed));
    // More results than one report holds: several reports, written by both runs.
    let items: Vec<Value> = (0..600)
        .flat_map(|i| {
            let name = format!("db-{i}");
            [
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": big},
                       "spec": {"ports": [{"name": "sql", "port": 5432}]}}),
                json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": big},
                       "subsets": [{"addresses": [{"ip": "203.0.113.7"}], "ports": [{"name": "sql", "port": 5432}]}]}),
            ]
        })
        .collect();
    cp.apply(&json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string());
    let dir = cp.tempdir();
    let token = cp.token_kubeconfig("extsvc-guard", "extsvc-guard-audit", dir.path());
    let runs: Vec<_> = (0..2)
        .map(|i| {
            let run = dir.path().join(format!("run-{i}"));
            std::fs::create_dir_all(&run).unwrap();
            let component = component(&cp);
            let (args, policy, token) = (
                component.args.clone(),
                component.policy.clone(),
                token.clone(),
            );
            std::thread::spawn(move || {
                let file = run.join("policy.yaml");
                std::fs::write(&file, policy).unwrap();
                let args: Vec<String> = args
                    .iter()
                    .map(|a| match a.strip_prefix("--policy=") {
                        Some(_) => format!("--policy={}", file.display()),
                        None => a.clone(),
                    })
                    .collect();
                Command::new(BIN)
                    .args(&args)
                    .arg("--kubeconfig")
                    .arg(&token)
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for run in runs {
        let out = run.join().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(summary(&reports_in(&cp, &seed)["extsvc-guard"]), (2, 1, 0));
    let reports = reports_in(&cp, &big);
    let names: Vec<&str> = reports.keys().map(String::as_str).collect();
    assert_eq!(names, ["extsvc-guard", "extsvc-guard-2", "extsvc-guard-3"]);
    let passes: u64 = reports.values().map(|r| summary(r).2).sum();
    assert_eq!(passes, 1200, "every object once: {reports:#?}");
    let mut resources: Vec<String> = reports
        .values()
        .flat_map(|r| r["results"].as_array().unwrap().clone())
        .map(|r| {
            format!(
                "{}/{}",
                r["resources"][0]["kind"], r["resources"][0]["name"]
            )
        })
        .collect();
    resources.sort();
    resources.dedup();
    assert_eq!(resources.len(), 1200, "no object twice, none missing");
}
