//! `extsvc-guard scan` and `scan --apply` against the real API server, run as accounts with
//! exactly the permissions the README ("extsvc-guard scan") tells users to grant, writing
//! into the PolicyReport CRD (tests/fixtures/crds/).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::envtest::{self, ControlPlane};
use crate::support::BIN;
use crate::{account_with, endpoints, eventually, repo, service};

/// What the README says `scan` needs, word for word; the roles below are written from it.
const README_PERMISSIONS: &str = "it needs list on services, endpoints, endpointslices and namespaces (and patch, create, list and delete on policyreports for `--apply`, with the PolicyReport CRD installed: server-side apply that creates an object is authorized as create)";
/// And what lets it see a Service's consumers, which it does without.
const README_CONSUMER_PERMISSIONS: &str = "List on `ingresses.networking.k8s.io` and on `httproutes`, `grpcroutes` and `tlsroutes` of `gateway.networking.k8s.io` lets it see which Services an ingress controller or Gateway consumes";

/// The README's words as RBAC rules: list on the four kinds, and `report_verbs` on
/// policyreports; with `consumers`, list on Ingresses and Gateway API routes too.
fn readme_rules_with(report_verbs: &[&str], consumers: bool) -> Value {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let words = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    for said in [README_PERMISSIONS, README_CONSUMER_PERMISSIONS] {
        assert!(words.contains(said), "the README no longer says: {said}");
    }
    let mut rules = vec![
        json!({"apiGroups": [""], "resources": ["services", "endpoints", "namespaces"], "verbs": ["list"]}),
        json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}),
    ];
    if consumers {
        rules.push(json!({"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["list"]}));
        rules.push(json!({"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes", "grpcroutes", "tlsroutes"], "verbs": ["list"]}));
    }
    if !report_verbs.is_empty() {
        rules.push(json!({"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"], "verbs": report_verbs}));
    }
    json!(rules)
}

/// Exactly the permissions the README names for `scan`.
fn exactly_readme_rules(report_verbs: &[&str]) -> Value {
    readme_rules_with(report_verbs, true)
}

/// Runs `scan` with `kubeconfig`: (exit code, stdout, stderr).
fn scan(kubeconfig: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("scan")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The seeds' mistake, created as the admin in `ns` (no webhook judges it there).
fn mysql_pair(cp: &ControlPlane, ns: &str) {
    cp.apply(
        &json!({"apiVersion": "v1", "kind": "List", "items": [
            service(ns, "mysql-svc", "default-ep"),
            endpoints(ns, "mysql-ep", "mysql"),
        ]})
        .to_string(),
    );
}

#[test]
fn scan_of_one_namespace_needs_only_the_permissions_the_readme_names() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("scan-readme", &[]);
    mysql_pair(&cp, &ns);
    let dir = cp.tempdir();
    let scanner = account_with(&cp, &ns, "scanner", exactly_readme_rules(&[]), dir.path());
    let (code, stdout, stderr) = scan(&scanner, &["-n", &ns]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("deny endpoints-orphaned"), "{stdout}");
}

#[test]
fn scan_without_list_on_ingresses_and_routes_says_so_and_judges_as_for_dns_clients() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("scan-no-consumers", &[]);
    mysql_pair(&cp, &ns);
    let dir = cp.tempdir();
    let scanner = account_with(
        &cp,
        &ns,
        "scanner",
        readme_rules_with(&[], false),
        dir.path(),
    );
    let (code, stdout, stderr) = scan(&scanner, &["-n", &ns]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("deny endpoints-orphaned"), "{stdout}");
    assert!(
        stderr.contains(
            "extsvc-guard: note: missing permission: cannot list ingresses.networking.k8s.io"
        ) && stderr.contains("judged as if only in-cluster DNS clients used them"),
        "{stderr}"
    );
}

#[test]
fn scan_with_the_permissions_the_readme_names_reports_what_would_be_denied_today() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let (ns, empty) = (
        cp.namespace("scan-report", &[]),
        cp.namespace("scan-empty", &[]),
    );
    mysql_pair(&cp, &ns);
    let dir = cp.tempdir();
    let scanner = account_with(&cp, &ns, "scanner", exactly_readme_rules(&[]), dir.path());

    let (code, stdout, stderr) = scan(&scanner, &["-n", &ns]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("Endpoints {ns}/mysql-ep (cluster)")),
        "{stdout}"
    );
    assert!(stdout.contains("deny endpoints-orphaned"), "{stdout}");
    assert!(stdout.contains("deny port-name-mismatch"), "{stdout}");

    let (_, stdout, stderr) = scan(&scanner, &["-n", &ns, "--format", "policyreport"]);
    let list: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(list["kind"], "List");
    let report = &list["items"][0];
    assert_eq!(report["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(report["kind"], "PolicyReport");
    assert_eq!(report["metadata"]["namespace"], ns.as_str());
    assert_eq!(report["summary"]["fail"], 2, "{report:#}");
    assert_eq!(report["summary"]["warn"], 1, "{report:#}");

    let (code, _, stderr) = scan(&scanner, &["-n", &empty]);
    assert_eq!(code, Some(0), "{stderr}");

    // The whole cluster, as the README's accounts may read it.
    let (code, stdout, stderr) = scan(&scanner, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stdout.contains(&format!("Endpoints {ns}/mysql-ep (cluster)")),
        "{stdout}"
    );

    // One permission fewer: which one is missing, in the API server's words too.
    let mut rules = exactly_readme_rules(&[]);
    rules[0]["resources"] = json!(["endpoints", "namespaces"]);
    let blind = account_with(&cp, &ns, "scanner-no-services", rules, dir.path());
    let (code, _, stderr) = scan(&blind, &["-n", &ns]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "missing permission: cannot list services in namespace {ns}"
        )) && stderr.contains("cannot list resource \"services\""),
        "{stderr}"
    );
}

/// A PolicyReport as another tool (or an earlier scan) left it.
fn report(namespace: &str, name: &str, managed_by: &str) -> String {
    json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": managed_by}},
        "results": [],
    })
    .to_string()
}

fn stored(cp: &ControlPlane, namespace: &str) -> Option<Value> {
    let out = cp.kubectl(
        &[
            "get",
            "policyreport",
            "extsvc-guard",
            "-n",
            namespace,
            "-o",
            "json",
            "--show-managed-fields",
        ],
        None,
    );
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn present(cp: &ControlPlane, namespace: &str, name: &str) -> bool {
    cp.kubectl(&["get", "policyreport", name, "-n", namespace], None)
        .status
        .success()
}

#[test]
fn scan_apply_writes_policy_reports_into_the_crd_and_removes_its_stale_ones_within_its_scope() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("scan-apply", &[]);
    mysql_pair(&cp, &ns);
    let dir = cp.tempdir();
    let account = |name: &str, verbs: &[&str]| -> PathBuf {
        account_with(&cp, &ns, name, exactly_readme_rules(verbs), dir.path())
    };
    let reporter = account("reporter", &["patch", "create", "list", "delete"]);
    let apply = |kubeconfig: &Path, scope: &[&str]| {
        let namespaces: Vec<&str> = scope.iter().flat_map(|n| ["-n", n]).collect();
        scan(
            kubeconfig,
            &[&["--format", "policyreport", "--apply"], &namespaces[..]].concat(),
        )
    };

    // Without the CRD: a clear error and nothing written. (This test alone installs it.)
    let (code, _, stderr) = apply(&reporter, &[&ns]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("is the PolicyReport CRD wgpolicyk8s.io/v1alpha2 installed?"),
        "{stderr}"
    );
    let crd = std::fs::read_to_string(
        repo().join("tests/fixtures/crds/wgpolicyk8s.io_policyreports.yaml"),
    )
    .unwrap();
    cp.apply(&crd);
    cp.kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "crd/policyreports.wgpolicyk8s.io",
            "--timeout=60s",
        ],
        None,
    );

    let (code, stdout, stderr) = apply(&reporter, &[&ns]);
    assert_eq!(
        code,
        Some(1),
        "the denials still set the exit code: {stderr}"
    );
    assert!(
        stderr.contains("applied 1 PolicyReport(s) named extsvc-guard"),
        "{stderr}"
    );
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    let first = stored(&cp, &ns).expect("the report is stored");
    // Stored as printed: nothing pruned by the CRD's schema.
    assert_eq!(first["results"], printed["items"][0]["results"]);
    assert_eq!(first["summary"], printed["items"][0]["summary"]);
    assert_eq!(first["summary"]["fail"], 2);
    assert_eq!(
        first["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "extsvc-guard"
    );
    let managers: Vec<&str> = first["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["extsvc-guard"], "server-side applied");

    // Fixed: the next apply replaces the report, it does not add one.
    cp.kubectl_ok(&["delete", "-n", &ns, "endpoints", "mysql-ep"], None);
    cp.apply(&endpoints(&ns, "mysql-svc", "default-ep").to_string());
    let (code, _, stderr) = apply(&reporter, &[&ns]);
    assert_eq!(code, Some(0), "{stderr}");
    let second = stored(&cp, &ns).unwrap();
    assert_ne!(
        second["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    assert_eq!(second["summary"]["fail"], 0, "{second:#}");
    assert!(
        second["summary"]["pass"].as_u64().unwrap() > 0,
        "{second:#}"
    );
    let listed = cp.kubectl_ok(&["get", "policyreports", "-n", &ns, "-o", "name"], None);
    assert_eq!(listed, "policyreport.wgpolicyk8s.io/extsvc-guard\n");

    // Patch without create updates an existing report, but cannot create one: server-side
    // apply that creates is authorized as create, as the README says.
    let no_create = account("reporter-no-create", &["patch", "list", "delete"]);
    let (code, _, stderr) = apply(&no_create, &[&ns]);
    assert_eq!(code, Some(0), "{stderr}");
    let fresh = cp.namespace("scan-apply-fresh", &[]);
    mysql_pair(&cp, &fresh);
    let (code, _, stderr) = apply(&no_create, &[&fresh]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "missing permission: cannot apply policyreports in namespace {fresh}"
        )) && stderr
            .contains("grant patch, create, list and delete on policyreports.wgpolicyk8s.io"),
        "{stderr}"
    );
    // Without patch, not even the existing one.
    let no_patch = account("reporter-no-patch", &["create", "list", "delete"]);
    let (code, _, stderr) = apply(&no_patch, &[&ns]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "missing permission: cannot apply policyreports in namespace {ns}"
        )),
        "{stderr}"
    );

    // Left by an earlier scan in a namespace whose objects have gone since, and two that
    // are not ours: another tool's, and one that only shares the name.
    let (old, other) = (
        cp.namespace("scan-old", &[]),
        cp.namespace("scan-other", &[]),
    );
    cp.apply(&report(&old, "extsvc-guard", "extsvc-guard"));
    cp.apply(&report(&old, "kyverno-polr", "kyverno"));
    cp.apply(&report(&other, "extsvc-guard", "someone-else"));

    // Scanning ns only: the report in old is outside the scan and stays.
    let (code, _, stderr) = apply(&reporter, &[&ns]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("deleted"), "{stderr}");
    assert!(present(&cp, &old, "extsvc-guard"));

    // ns's Service and Endpoints are deleted: its report goes with them (once the
    // slice the mirroring controller may have made is gone too).
    cp.kubectl_ok(&["delete", "-n", &ns, "service", "mysql-svc"], None);
    cp.kubectl_ok(
        &[
            "delete",
            "-n",
            &ns,
            "endpoints",
            "mysql-svc",
            "--ignore-not-found",
        ],
        None,
    );
    eventually(Duration::from_secs(60), "no EndpointSlice left", || {
        cp.kubectl_ok(&["get", "endpointslices", "-n", &ns, "-o", "name"], None)
            .is_empty()
            .then_some(())
    });
    let (code, _, stderr) = apply(&reporter, &[&ns]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "applied 0 PolicyReport(s) named extsvc-guard\ndeleted the PolicyReport named extsvc-guard in {ns}, where nothing is judged any more\n"
        )
    );
    assert!(stored(&cp, &ns).is_none());
    assert!(present(&cp, &old, "extsvc-guard"));

    // Without the permission to delete: which permission is missing, and nothing deleted.
    let no_delete = account("reporter-no-delete", &["patch", "create", "list"]);
    let (code, _, stderr) = apply(&no_delete, &[&old]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "missing permission: cannot delete the stale policyreport in namespace {old}"
        )) && stderr
            .contains("grant patch, create, list and delete on policyreports.wgpolicyk8s.io"),
        "{stderr}"
    );
    assert!(present(&cp, &old, "extsvc-guard"));

    // Both namespaces: the stale one in old goes; what is not ours stays.
    let (code, _, stderr) = apply(&reporter, &[&old, &other]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "deleted the PolicyReport named extsvc-guard in {old},"
        )),
        "{stderr}"
    );
    assert!(!present(&cp, &old, "extsvc-guard"));
    assert!(present(&cp, &old, "kyverno-polr") && present(&cp, &other, "extsvc-guard"));
}
