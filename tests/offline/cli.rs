//! The command line as a user and a CI system see it: exit codes, the JSON and SARIF
//! contracts, stdin, directories, input errors, policies and the text report. Every test
//! drives the real binary.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tempfile::TempDir;

// ---- running the binary ---------------------------------------------------------------------

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `extsvc-guard args…` in `dir`, feeding `stdin` when given.
fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_extsvc-guard"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("the extsvc-guard binary starts");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes())
            .expect("stdin takes the input");
        // Dropping the pipe closes it: the binary sees end of input.
    }
    let out = child.wait_with_output().expect("extsvc-guard finishes");
    Output {
        code: out.status.code().expect("extsvc-guard exits with a code"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// A temporary directory holding `files` (relative path → text).
fn workspace(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (path, text) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("a parent directory"))
            .expect("the parent directory is created");
        std::fs::write(&full, text).expect("the file is written");
    }
    dir
}

/// The 1-based line of the only line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> u64 {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(hits.len(), 1, "{needle:?} should occur on exactly one line");
    hits[0] as u64
}

/// (rule, action, kind, name, field, file, line) of every finding, sorted.
fn summary(json: &Value) -> Vec<(String, String, String, String, String, String, u64)> {
    let mut out: Vec<_> = json["findings"]
        .as_array()
        .expect("findings is an array")
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().expect("a string").to_owned();
            (
                s("rule"),
                s("action"),
                s("kind"),
                s("name"),
                s("field"),
                s("file"),
                f["line"].as_u64().expect("line is a number"),
            )
        })
        .collect();
    out.sort();
    out
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

// ---- manifests --------------------------------------------------------------------------------

/// Seed 000: orphaned, port-name-mismatched mysql-ep (2 denials) and mysql-svc (1 warning).
const MYSQL_PAIR: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: mysql-svc
spec:
  clusterIP: None
  ports:
    - name: default-ep
      port: 3306
---
apiVersion: v1
kind: Endpoints
metadata:
  name: mysql-ep
subsets:
  - addresses:
      - ip: 114.32.146.154
    ports:
      - name: mysql
        port: 3306
";

/// A selectorless Service and its Endpoints: nothing to report.
const CLEAN_PAIR: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  ports:
    - name: pg
      port: 5432
---
apiVersion: v1
kind: Endpoints
metadata:
  name: db
subsets:
  - addresses:
      - ip: 203.0.113.7
    ports:
      - name: pg
        port: 5432
";

/// An ExternalName alias on port 443: one warning, nothing denied.
const WARN_ONLY: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: api
spec:
  type: ExternalName
  externalName: api.example.com
  ports:
    - port: 443
";

fn externalname_ip(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: ExternalName\n  externalName: {ip}\n"
    )
}

// ---- exit codes ---------------------------------------------------------------------------------

#[test]
fn a_clean_manifest_set_exits_0_and_reports_nothing() {
    let dir = workspace(&[("clean.yaml", CLEAN_PAIR)]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "clean.yaml"],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    let json = out.json();
    assert_eq!(json["findings"], Value::Array(vec![]));
    assert_eq!(json["errors"], Value::Array(vec![]));
    let text = run(dir.path(), &["check", "clean.yaml"], None);
    assert_eq!(text.code, 0);
    assert!(
        text.stdout.contains("2 objects in 1 input: 0 denials"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_denial_exits_1() {
    let dir = workspace(&[("mysql.yaml", MYSQL_PAIR)]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "mysql.yaml"],
        None,
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.json()["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["action"] == "deny")
    );
}

#[test]
fn warnings_alone_exit_0_unless_fail_on_warn_is_given() {
    let dir = workspace(&[("api.yaml", WARN_ONLY)]);
    let out = run(dir.path(), &["check", "--format", "json", "api.yaml"], None);
    let actions: Vec<Value> = out.json()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["action"].clone())
        .collect();
    assert_eq!(actions, vec![Value::from("warn")]);
    assert_eq!(out.code, 0);
    let strict = run(
        dir.path(),
        &["check", "--fail-on", "warn", "--format", "json", "api.yaml"],
        None,
    );
    assert_eq!(strict.code, 1);
}

#[test]
fn an_input_error_exits_2_even_when_something_is_also_denied() {
    let dir = workspace(&[
        ("mysql.yaml", MYSQL_PAIR),
        (
            "broken.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: [oops\n",
        ),
    ]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "mysql.yaml", "broken.yaml"],
        None,
    );
    assert_eq!(out.code, 2);
    let json = out.json();
    assert_eq!(json["errors"].as_array().unwrap().len(), 1, "{json:#}");
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["action"] == "deny")
    );
}

#[test]
fn a_usage_error_exits_2() {
    let dir = workspace(&[("clean.yaml", CLEAN_PAIR)]);
    let no_paths = run(dir.path(), &["check"], None);
    assert_eq!(no_paths.code, 2);
    assert!(no_paths.stderr.contains("PATH"), "{}", no_paths.stderr);
    let bad_format = run(
        dir.path(),
        &["check", "--format", "yaml", "clean.yaml"],
        None,
    );
    assert_eq!(bad_format.code, 2);
    assert!(bad_format.stdout.is_empty());
    let bad_flag = run(dir.path(), &["check", "--no-such-flag", "clean.yaml"], None);
    assert_eq!(bad_flag.code, 2);
}

#[test]
fn a_missing_input_path_exits_2_and_names_the_path() {
    let dir = workspace(&[("mysql.yaml", MYSQL_PAIR)]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "missing.yaml", "mysql.yaml"],
        None,
    );
    assert_eq!(out.code, 2);
    let json = out.json();
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json:#}");
    assert_eq!(errors[0]["file"], "missing.yaml");
    assert_eq!(errors[0]["document"], 0, "the whole input is at fault");
    // The inputs that exist are still judged.
    assert_eq!(summary(&json).len(), 3, "{json:#}");
    let text = run(dir.path(), &["check", "missing.yaml"], None);
    assert_eq!(text.code, 2);
    assert!(
        text.stdout.contains("error missing.yaml: "),
        "{}",
        text.stdout
    );
}

// ---- the JSON contract ---------------------------------------------------------------------------

#[test]
fn json_output_has_exactly_findings_and_errors_with_exactly_their_documented_keys() {
    let broken = format!(
        "{}---\napiVersion: v1\nkind: Endpoints\nmetadata: {{\n",
        MYSQL_PAIR
    );
    let dir = workspace(&[("set.yaml", &broken)]);
    let out = run(dir.path(), &["check", "--format", "json", "set.yaml"], None);
    let json = out.json();
    assert_eq!(keys(&json), set(&["findings", "errors"]));

    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 3, "{json:#}");
    let finding_keys = set(&[
        "rule",
        "action",
        "kind",
        "namespace",
        "name",
        "field",
        "file",
        "line",
        "message",
    ]);
    for f in findings {
        assert_eq!(keys(f), finding_keys, "{f}");
        for k in [
            "rule",
            "action",
            "kind",
            "namespace",
            "name",
            "field",
            "file",
            "message",
        ] {
            assert!(f[k].is_string(), "{k} is a string in {f}");
        }
        assert!(f["line"].as_u64().is_some_and(|l| l >= 1), "{f}");
        assert!(
            ["deny", "warn", "info"].contains(&f["action"].as_str().unwrap()),
            "{f}"
        );
        assert_eq!(
            f["namespace"], "default",
            "an object without namespace is in default"
        );
        assert_eq!(f["file"], "set.yaml");
    }

    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json:#}");
    for e in errors {
        assert_eq!(
            keys(e),
            set(&["file", "document", "line", "message"]),
            "{e}"
        );
        assert!(e["file"].is_string() && e["message"].is_string(), "{e}");
        assert!(e["document"].is_u64() && e["line"].is_u64(), "{e}");
    }
}

// ---- SARIF ------------------------------------------------------------------------------------

const ALL_RULE_IDS: &[&str] = extsvc_guard::finding::RuleId::NAMES;

/// A manifest set on which every rule fires (required-metadata with `REQUIRE_POLICY`).
const EVERY_RULE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: mysql-svc
spec:
  clusterIP: None
  ports:
    - name: default-ep
      port: 3306
---
apiVersion: v1
kind: Endpoints
metadata:
  name: mysql-ep
subsets:
  - addresses:
      - ip: 114.32.146.154
    ports:
      - name: mysql
        port: 3306
---
apiVersion: v1
kind: Service
metadata:
  name: alias-ip
spec:
  type: ExternalName
  externalName: 192.168.1.10
---
apiVersion: v1
kind: Service
metadata:
  name: alias-url
spec:
  type: ExternalName
  externalName: https://api.example.com/v1
---
apiVersion: v1
kind: Service
metadata:
  name: alias-web
spec:
  type: ExternalName
  externalName: www.example.com
  ports:
    - port: 443
---
apiVersion: v1
kind: Service
metadata:
  name: headless
spec:
  clusterIP: None
  ports:
    - name: pg
      port: 5432
      targetPort: 5433
---
apiVersion: v1
kind: Endpoints
metadata:
  name: headless
subsets:
  - addresses:
      - ip: 203.0.113.9
      - ip: 203.0.113.010
    ports:
      - name: pg
        port: 5432
---
apiVersion: v1
kind: Service
metadata:
  name: metadata-server
spec:
  ports:
    - port: 80
---
apiVersion: v1
kind: Endpoints
metadata:
  name: metadata-server
subsets:
  - addresses:
      - ip: 169.254.169.254
    ports:
      - port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: loose-slice
addressType: IPv4
endpoints:
  - addresses: ["203.0.113.20"]
ports:
  - port: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
    - port: 80
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
subsets:
  - addresses:
      - ip: 203.0.113.30
    ports:
      - port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: unselected
spec:
  ports:
    - name: web
      port: 80
---
apiVersion: v1
kind: Endpoints
metadata:
  name: unselected
  annotations:
    endpoints.kubernetes.io/last-change-trigger-time: "2026-12-06T22:00:03Z"
subsets:
  - addresses:
      - ip: 198.51.100.20
      - ip: ${WEB_IP}
    ports:
      - name: web
        port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: alias-internal
spec:
  type: ExternalName
  externalName: postgres.data.svc.cluster.local
"#;

/// Requires a label the webhook can add (info) and one nothing can supply (deny).
const REQUIRE_POLICY: &str = "\
requiredMetadata:
  labels:
    - key: owner
      value: platform
    - key: cost-center
rules:
  externalname-cross-namespace: warn
";

fn level_of(action: &str) -> &'static str {
    match action {
        "deny" => "error",
        "warn" => "warning",
        "info" => "note",
        other => panic!("unknown action {other}"),
    }
}

#[test]
fn sarif_output_is_valid_sarif_2_1_0_with_one_descriptor_per_rule_and_results_that_point_at_them() {
    let dir = workspace(&[("every.yaml", EVERY_RULE), ("policy.yaml", REQUIRE_POLICY)]);
    let out = run(
        dir.path(),
        &[
            "check",
            "--policy",
            "policy.yaml",
            "--format",
            "sarif",
            "every.yaml",
        ],
        None,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let sarif = out.json();
    assert_eq!(sarif["version"], "2.1.0");
    assert!(
        sarif["$schema"]
            .as_str()
            .is_some_and(|s| s.contains("sarif")),
        "{}",
        sarif["$schema"]
    );
    let runs = sarif["runs"].as_array().expect("runs is an array");
    assert_eq!(runs.len(), 1);
    let driver = &runs[0]["tool"]["driver"];
    assert_eq!(driver["name"], "extsvc-guard");

    let rules = driver["rules"]
        .as_array()
        .expect("driver.rules is an array");
    let ids: Vec<&str> = rules
        .iter()
        .map(|r| r["id"].as_str().expect("a rule has an id"))
        .collect();
    assert_eq!(
        ids.len(),
        ALL_RULE_IDS.len(),
        "one descriptor per rule: {ids:?}"
    );
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        ALL_RULE_IDS.iter().copied().collect::<BTreeSet<_>>()
    );

    let results = runs[0]["results"].as_array().expect("results is an array");
    let mut fired = BTreeSet::new();
    let mut levels = BTreeSet::new();
    let mut sarif_view = Vec::new();
    for r in results {
        let rule_id = r["ruleId"].as_str().expect("a result has a ruleId");
        assert!(ids.contains(&rule_id), "undeclared rule {rule_id}");
        let index = r["ruleIndex"].as_u64().expect("a result has a ruleIndex") as usize;
        assert_eq!(rules[index]["id"], rule_id, "ruleIndex points at its rule");
        let level = r["level"].as_str().expect("a result has a level");
        assert!(["error", "warning", "note"].contains(&level), "{r}");
        let location = &r["locations"][0]["physicalLocation"];
        let uri = location["artifactLocation"]["uri"]
            .as_str()
            .expect("a result has an artifact uri");
        let line = location["region"]["startLine"]
            .as_u64()
            .expect("a result has a start line");
        assert!(line >= 1, "{r}");
        assert!(
            r["message"]["text"].as_str().is_some_and(|t| !t.is_empty()),
            "{r}"
        );
        fired.insert(rule_id.to_owned());
        levels.insert(level.to_owned());
        sarif_view.push((rule_id.to_owned(), level.to_owned(), uri.to_owned(), line));
    }
    assert_eq!(
        fired,
        ALL_RULE_IDS.iter().map(|s| (*s).to_owned()).collect(),
        "this manifest set makes every rule fire"
    );
    assert_eq!(levels, set(&["error", "warning", "note"]));

    // The results are the JSON findings, one for one.
    let json = run(
        dir.path(),
        &[
            "check",
            "--policy",
            "policy.yaml",
            "--format",
            "json",
            "every.yaml",
        ],
        None,
    )
    .json();
    let mut json_view: Vec<_> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_owned(),
                level_of(f["action"].as_str().unwrap()).to_owned(),
                f["file"].as_str().unwrap().to_owned(),
                f["line"].as_u64().unwrap(),
            )
        })
        .collect();
    sarif_view.sort();
    json_view.sort();
    assert_eq!(sarif_view, json_view);
    assert!(sarif_view.iter().all(|(_, _, uri, _)| uri == "every.yaml"));
}

#[test]
fn sarif_reports_input_errors_as_failed_execution_notifications() {
    let dir = workspace(&[(
        "broken.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: [oops\n",
    )]);
    let out = run(
        dir.path(),
        &["check", "--format", "sarif", "broken.yaml"],
        None,
    );
    assert_eq!(out.code, 2);
    let sarif = out.json();
    let invocation = &sarif["runs"][0]["invocations"][0];
    assert_eq!(invocation["executionSuccessful"], false);
    let notes = invocation["toolExecutionNotifications"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{sarif:#}");
    assert_eq!(notes[0]["level"], "error");
    let location = &notes[0]["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], "broken.yaml");
    assert_eq!(location["region"]["startLine"], 3);
}

// ---- stdin ------------------------------------------------------------------------------------

#[test]
fn yaml_on_stdin_is_read_with_a_dash_and_reported_as_stdin() {
    let dir = workspace(&[]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "-"],
        Some(MYSQL_PAIR),
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let json = out.json();
    let found = summary(&json);
    let line = |needle| line_of(MYSQL_PAIR, needle);
    let stdin = "<stdin>".to_owned();
    assert_eq!(
        found,
        vec![
            (
                "endpoints-orphaned".into(),
                "deny".into(),
                "Endpoints".into(),
                "mysql-ep".into(),
                "metadata.name".into(),
                stdin.clone(),
                line("name: mysql-ep"),
            ),
            (
                "port-name-mismatch".into(),
                "deny".into(),
                "Endpoints".into(),
                "mysql-ep".into(),
                "subsets[0].ports[0].name".into(),
                stdin.clone(),
                line("- name: mysql"),
            ),
            (
                "service-no-endpoints".into(),
                "warn".into(),
                "Service".into(),
                "mysql-svc".into(),
                "metadata.name".into(),
                stdin,
                line("name: mysql-svc"),
            ),
        ]
    );
}

#[test]
fn json_on_stdin_is_read_with_a_dash_and_its_lines_are_located() {
    let manifest = r#"{
  "apiVersion": "v1",
  "kind": "Service",
  "metadata": {"name": "alias", "namespace": "prod"},
  "spec": {
    "type": "ExternalName",
    "externalName": "192.168.1.10"
  }
}
"#;
    let dir = workspace(&[]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "-"],
        Some(manifest),
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["errors"], Value::Array(vec![]));
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{json:#}");
    let f = &findings[0];
    assert_eq!(f["rule"], "externalname-ip");
    assert_eq!(f["namespace"], "prod");
    assert_eq!(f["name"], "alias");
    assert_eq!(f["field"], "spec.externalName");
    assert_eq!(f["file"], "<stdin>");
    assert_eq!(f["line"], line_of(manifest, "\"externalName\""));
}

#[test]
fn flow_style_yaml_on_stdin_is_read_as_yaml() {
    let manifest = "{apiVersion: v1, kind: Service, metadata: {name: x}, spec: {type: ExternalName, externalName: 1.2.3.4}}\n";
    let dir = workspace(&[]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "-"],
        Some(manifest),
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["errors"], Value::Array(vec![]));
    assert_eq!(json["findings"][0]["rule"], "externalname-ip");
}

#[test]
fn stdin_and_files_form_one_manifest_set() {
    // The Service comes from a file, its Endpoints from stdin: together they are clean.
    let (service, endpoints) = CLEAN_PAIR.split_once("---\n").unwrap();
    let dir = workspace(&[("service.yaml", service)]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "service.yaml", "-"],
        Some(endpoints),
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.json()["findings"], Value::Array(vec![]));
    // Alone, the Service has no endpoints: the pairing above is what made it clean.
    let alone = run(
        dir.path(),
        &["check", "--format", "json", "service.yaml"],
        None,
    );
    let rules: Vec<Value> = alone.json()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].clone())
        .collect();
    assert_eq!(rules, vec![Value::from("service-no-endpoints")]);
}

// ---- directories ------------------------------------------------------------------------------

#[test]
fn a_directory_is_searched_recursively_for_yaml_yml_and_json_and_other_files_are_ignored() {
    let (service, endpoints) = CLEAN_PAIR.split_once("---\n").unwrap();
    let json_alias = r#"{
  "apiVersion": "v1",
  "kind": "Service",
  "metadata": {"name": "deep"},
  "spec": {"type": "ExternalName", "externalName": "10.1.2.3"}
}
"#;
    let dir = workspace(&[
        ("manifests/top.yaml", &externalname_ip("top", "10.0.0.1")),
        ("manifests/db-service.yaml", service),
        ("manifests/nested/db-endpoints.yml", endpoints),
        (
            "manifests/nested/mid.yml",
            &externalname_ip("mid", "10.0.0.2"),
        ),
        ("manifests/nested/deeper/deep.json", json_alias),
        (
            "manifests/nested/notes.txt",
            &externalname_ip("ignored", "10.0.0.3"),
        ),
        (
            "manifests/nested/README",
            &externalname_ip("readme", "10.0.0.4"),
        ),
    ]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "manifests"],
        None,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["errors"], Value::Array(vec![]));
    let found: Vec<(String, String)> = summary(&json)
        .into_iter()
        .map(|(rule, _, _, name, _, file, _)| (format!("{rule} {name}"), file))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "externalname-ip deep".to_owned(),
                "manifests/nested/deeper/deep.json".to_owned()
            ),
            (
                "externalname-ip mid".to_owned(),
                "manifests/nested/mid.yml".to_owned()
            ),
            (
                "externalname-ip top".to_owned(),
                "manifests/top.yaml".to_owned()
            ),
        ],
        "the db Service and its Endpoints pair across directories; .txt and README are ignored"
    );
    let text = run(dir.path(), &["check", "manifests"], None);
    assert!(
        text.stdout.contains("5 objects in 5 inputs:"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_file_named_explicitly_is_read_whatever_its_extension() {
    let dir = workspace(&[("notes.txt", &externalname_ip("named", "10.0.0.5"))]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "notes.txt"],
        None,
    );
    assert_eq!(out.code, 1);
    assert_eq!(out.json()["findings"][0]["name"], "named");
}

// ---- input errors -----------------------------------------------------------------------------

#[test]
fn a_broken_document_among_good_ones_exits_2_and_still_reports_the_rest() {
    let text = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: [unclosed\n---\n{}",
        externalname_ip("first", "10.0.0.1"),
        externalname_ip("third", "10.0.0.3"),
    );
    let dir = workspace(&[("mixed.yaml", &text)]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "mixed.yaml"],
        None,
    );
    assert_eq!(out.code, 2);
    let json = out.json();
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json:#}");
    assert_eq!(errors[0]["file"], "mixed.yaml");
    assert_eq!(errors[0]["document"], 2);
    assert_eq!(errors[0]["line"], line_of(&text, "metadata: [unclosed"));
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("not valid YAML"),
        "{}",
        errors[0]["message"]
    );
    let names: Vec<(String, u64)> = summary(&json)
        .into_iter()
        .map(|(_, _, _, name, _, _, line)| (name, line))
        .collect();
    let external_name_lines: Vec<u64> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("externalName:"))
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert_eq!(
        names,
        vec![
            ("first".to_owned(), external_name_lines[0]),
            ("third".to_owned(), external_name_lines[1]),
        ]
    );
    let human = run(dir.path(), &["check", "mixed.yaml"], None);
    assert!(
        human.stdout.contains(&format!(
            "error mixed.yaml:{}: document 2",
            line_of(&text, "metadata: [unclosed")
        )),
        "{}",
        human.stdout
    );
}

#[test]
fn a_service_that_breaks_its_schema_is_reported_with_its_document_field_and_line() {
    let text = format!(
        "# a leading comment\n{CLEAN_PAIR}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n    - name: http\n      port: \"eighty\"\n"
    );
    let dir = workspace(&[("schema.yaml", &text)]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "schema.yaml"],
        None,
    );
    assert_eq!(out.code, 2);
    let json = out.json();
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json:#}");
    assert_eq!(errors[0]["document"], 3);
    assert_eq!(errors[0]["line"], line_of(&text, "port: \"eighty\""));
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("spec.ports[0].port"), "{message}");
    assert!(message.contains("eighty"), "{message}");
    // The Service is not judged, and the valid pair before it is clean.
    assert_eq!(json["findings"], Value::Array(vec![]));
}

#[test]
fn a_kind_list_is_unpacked_and_its_items_are_located() {
    let list = "\
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: app
  - apiVersion: v1
    kind: Service
    metadata:
      name: meta
    spec:
      ports:
        - port: 80
  - apiVersion: v1
    kind: Endpoints
    metadata:
      name: meta
    subsets:
      - addresses:
          - ip: 169.254.169.254
        ports:
          - port: 80
";
    let dir = workspace(&[("list.yaml", list)]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "list.yaml"],
        None,
    );
    assert_eq!(out.code, 1);
    let json = out.json();
    assert_eq!(json["errors"], Value::Array(vec![]));
    assert_eq!(
        summary(&json),
        vec![(
            "target-disallowed".to_owned(),
            "deny".to_owned(),
            "Endpoints".to_owned(),
            "meta".to_owned(),
            "subsets[0].addresses[0].ip".to_owned(),
            "list.yaml".to_owned(),
            line_of(list, "169.254.169.254"),
        )],
        "the Service and Endpoints items pair up (no orphan, no missing endpoints)"
    );
    let text = run(dir.path(), &["check", "list.yaml"], None);
    assert!(
        text.stdout.contains("2 objects in 1 input:"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_json_stream_of_concatenated_objects_is_read_like_kubectl_reads_it() {
    // What `kubectl get -o json` of single objects, concatenated, looks like: one object
    // pretty-printed, the next on one line, the last right behind it (kubectl's decoder
    // reads JSON values one after the other, whatever separates them).
    let stream = r#"{
  "apiVersion": "v1",
  "kind": "Service",
  "metadata": {"name": "meta"},
  "spec": {"ports": [{"port": 80}]}
}
{"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "meta"}, "subsets": [{"addresses": [{"ip": "169.254.169.254"}], "ports": [{"port": 80}]}]}{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "192.168.1.10"}}
"#;
    let dir = workspace(&[("stream.json", stream)]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "stream.json"],
        None,
    );
    let json = out.json();
    assert_eq!(json["errors"], Value::Array(vec![]), "{}", out.stderr);
    assert_eq!(out.code, 1);
    let found: Vec<(String, String, String)> = summary(&json)
        .into_iter()
        .map(|(rule, action, _, name, _, _, line)| (rule, action, format!("{name}:{line}")))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "externalname-ip".to_owned(),
                "deny".to_owned(),
                format!("ext:{}", line_of(stream, "192.168.1.10"))
            ),
            (
                "target-disallowed".to_owned(),
                "deny".to_owned(),
                format!("meta:{}", line_of(stream, "169.254.169.254"))
            ),
        ],
        "the Service and Endpoints pair up (no orphan), and the third object is read too"
    );
    let text = run(dir.path(), &["check", "stream.json"], None);
    assert!(
        text.stdout.contains("3 objects in 1 input:"),
        "{}",
        text.stdout
    );
}

#[test]
fn an_object_defined_in_two_files_is_reported_with_both_places() {
    let dir = workspace(&[
        (
            "a.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {type: ExternalName, externalName: 192.168.1.10}\n",
        ),
        (
            "b.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {type: ExternalName, externalName: db.example.com}\n",
        ),
    ]);
    let out = run(dir.path(), &["check", "a.yaml", "b.yaml"], None);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("a.yaml") && said.contains("b.yaml"),
        "Service default/ext is in both files: {said}"
    );
}

#[test]
fn kinds_other_than_services_and_endpoints_are_skipped_without_errors() {
    let manifests = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: \"three\"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  externalName: 192.168.1.10
";
    let dir = workspace(&[("other.yaml", manifests)]);
    let out = run(
        dir.path(),
        &["check", "--format", "json", "other.yaml"],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    let json = out.json();
    assert_eq!(json["findings"], Value::Array(vec![]));
    assert_eq!(json["errors"], Value::Array(vec![]));
    let text = run(dir.path(), &["check", "other.yaml"], None);
    assert!(
        text.stdout.contains("0 objects in 1 input:"),
        "{}",
        text.stdout
    );
}

// ---- policies ---------------------------------------------------------------------------------

#[test]
fn an_unknown_policy_key_exits_2_naming_the_file_line_and_field() {
    let policy =
        "rules:\n  port-name-mismatch: warn\ntargets:\n  denny:\n    cidrs: [10.0.0.0/8]\n";
    let dir = workspace(&[("policy.yaml", policy), ("mysql.yaml", MYSQL_PAIR)]);
    let out = run(
        dir.path(),
        &[
            "check",
            "--policy",
            "policy.yaml",
            "--format",
            "json",
            "mysql.yaml",
        ],
        None,
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stdout.is_empty(),
        "no report on a bad policy: {}",
        out.stdout
    );
    let at = format!("policy.yaml:{}", line_of(policy, "denny:"));
    assert!(out.stderr.contains(&at), "{at} in {}", out.stderr);
    assert!(out.stderr.contains("targets.denny"), "{}", out.stderr);
}

#[test]
fn a_bad_cidr_in_a_policy_exits_2_naming_the_file_line_and_list_index() {
    let policy = "clusterCIDRs:\n  - 10.244.0.0/16\n  - 10.96.0.0/33\n";
    let dir = workspace(&[("cidrs.yaml", policy), ("mysql.yaml", MYSQL_PAIR)]);
    let out = run(
        dir.path(),
        &["check", "--policy", "cidrs.yaml", "mysql.yaml"],
        None,
    );
    assert_eq!(out.code, 2);
    let at = format!("cidrs.yaml:{}", line_of(policy, "10.96.0.0/33"));
    assert!(out.stderr.contains(&at), "{at} in {}", out.stderr);
    assert!(out.stderr.contains("clusterCIDRs[1]"), "{}", out.stderr);
    assert!(out.stderr.contains("10.96.0.0/33"), "{}", out.stderr);
}

#[test]
fn a_valid_policy_changes_what_is_reported() {
    let policy = "rules:\n  service-no-endpoints: off\n  port-name-mismatch: warn\n";
    let dir = workspace(&[("policy.yaml", policy), ("mysql.yaml", MYSQL_PAIR)]);
    let out = run(
        dir.path(),
        &[
            "check",
            "--policy",
            "policy.yaml",
            "--format",
            "json",
            "mysql.yaml",
        ],
        None,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rules: Vec<(String, String)> = summary(&out.json())
        .into_iter()
        .map(|(rule, action, ..)| (rule, action))
        .collect();
    assert_eq!(
        rules,
        vec![
            ("endpoints-orphaned".to_owned(), "deny".to_owned()),
            ("port-name-mismatch".to_owned(), "warn".to_owned()),
        ]
    );
}

#[test]
fn the_printed_default_policy_passes_policy_check_and_judges_like_no_policy() {
    let dir = workspace(&[("mysql.yaml", MYSQL_PAIR)]);
    let printed = run(dir.path(), &["policy", "default"], None);
    assert_eq!(printed.code, 0);
    assert!(printed.stdout.contains("rules:"), "{}", printed.stdout);
    let path: PathBuf = dir.path().join("default-policy.yaml");
    std::fs::write(&path, &printed.stdout).unwrap();

    let checked = run(
        dir.path(),
        &["policy", "check", "default-policy.yaml"],
        None,
    );
    assert_eq!(checked.code, 0, "{}", checked.stderr);
    assert!(
        checked.stdout.contains("default-policy.yaml: valid policy"),
        "{}",
        checked.stdout
    );

    let with = run(
        dir.path(),
        &[
            "check",
            "--policy",
            "default-policy.yaml",
            "--format",
            "json",
            "mysql.yaml",
        ],
        None,
    );
    let without = run(
        dir.path(),
        &["check", "--format", "json", "mysql.yaml"],
        None,
    );
    assert_eq!(with.code, without.code);
    assert_eq!(summary(&with.json()), summary(&without.json()));
    assert_eq!(summary(&without.json()).len(), 3);
}

#[test]
fn policy_check_on_a_bad_file_exits_2_naming_file_line_and_field() {
    let policy = "rules:\n  port-name-mismatch: maybe\n";
    let dir = workspace(&[("bad-policy.yaml", policy)]);
    let out = run(dir.path(), &["policy", "check", "bad-policy.yaml"], None);
    assert_eq!(out.code, 2);
    assert!(!out.stdout.contains("valid policy"), "{}", out.stdout);
    let at = format!("bad-policy.yaml:{}", line_of(policy, "maybe"));
    assert!(out.stderr.contains(&at), "{at} in {}", out.stderr);
    assert!(
        out.stderr.contains("rules.port-name-mismatch"),
        "{}",
        out.stderr
    );
}

#[test]
fn policy_check_on_a_missing_file_exits_2_naming_it() {
    let dir = workspace(&[]);
    let out = run(
        dir.path(),
        &["policy", "check", "no-such-policy.yaml"],
        None,
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no-such-policy.yaml"), "{}", out.stderr);
}

// ---- the text report --------------------------------------------------------------------------

#[test]
fn text_output_has_no_ansi_escapes_when_stdout_is_not_a_terminal() {
    let dir = workspace(&[("mysql.yaml", MYSQL_PAIR)]);
    let plain = run(dir.path(), &["check", "mysql.yaml"], None);
    assert_eq!(plain.code, 1);
    assert!(plain.stdout.contains("deny"), "{}", plain.stdout);
    assert!(!plain.stdout.contains('\x1b'), "{:?}", plain.stdout);
    // The same report does carry colour when asked for: the check above is not vacuous.
    let coloured = run(
        dir.path(),
        &["check", "--color", "always", "mysql.yaml"],
        None,
    );
    assert!(coloured.stdout.contains('\x1b'), "{:?}", coloured.stdout);
}

#[test]
fn an_object_defined_in_two_files_is_judged_once_and_both_places_are_named() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: ext-ip}\nspec:\n  type: ExternalName\n  externalName: 192.168.1.10\n";
    let dir = workspace(&[("a.yaml", svc), ("b.yaml", &format!("# again\n{svc}"))]);
    let out = run(dir.path(), &["check", "a.yaml", "b.yaml"], None);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(
        out.stdout.matches("deny externalname-ip").count(),
        1,
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("note Service default/ext-ip is defined 2 times (a.yaml:3, b.yaml:4); the last, at b.yaml:4, was judged"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_json_stream_is_checked_like_kubectl_reads_it() {
    let dir = workspace(&[(
        "stream.json",
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"ext-ip\"},\"spec\":{\"type\":\"ExternalName\",\"externalName\":\"192.168.1.10\"}}\n{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"db\"},\"spec\":{\"type\":\"ExternalName\",\"externalName\":\"db.example.com\"}}\n",
    )]);
    let out = run(dir.path(), &["check", "stream.json"], None);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("2 objects in 1 input: 1 denial"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_says_how_many_objects_it_left_unjudged_and_why() {
    let dir = workspace(&[(
        "dump.yaml",
        r#"
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec: {clusterIP: None, ports: [{name: dns, port: 53, targetPort: 5353}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
  annotations: {endpoints.kubernetes.io/last-change-trigger-time: "2026-12-06T22:00:03Z"}
subsets: [{addresses: [{ip: 10.244.0.7}], ports: [{port: 80}]}]
"#,
    )]);
    let out = run(dir.path(), &["check", "dump.yaml"], None);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "2 objects not judged: 1 in exempt namespace kube-system, 1 maintained by a controller for a Service in the set"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn text_output_groups_findings_under_their_object() {
    let dir = workspace(&[("mysql.yaml", MYSQL_PAIR)]);
    let out = run(
        dir.path(),
        &["check", "--format", "text", "mysql.yaml"],
        None,
    );
    assert_eq!(out.code, 1);
    // Blocks are separated by blank lines; an object block starts with its header.
    let blocks: Vec<Vec<&str>> = out
        .stdout
        .split("\n\n")
        .map(|b| b.lines().collect::<Vec<_>>())
        .filter(|b| !b.is_empty())
        .collect();
    let block = |header: &str| -> Vec<&str> {
        let matching: Vec<&Vec<&str>> = blocks.iter().filter(|b| b[0] == header).collect();
        assert_eq!(
            matching.len(),
            1,
            "one block for {header:?} in:\n{}",
            out.stdout
        );
        matching[0].clone()
    };
    let rules_in = |b: &[&str]| -> Vec<String> {
        b[1..]
            .iter()
            .filter(|l| l.starts_with("  ") && l.contains("(line "))
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    let endpoints = block("Endpoints default/mysql-ep (mysql.yaml)");
    assert_eq!(
        rules_in(&endpoints),
        vec!["deny endpoints-orphaned", "deny port-name-mismatch"],
        "{}",
        out.stdout
    );
    assert!(
        endpoints.iter().any(|l| l.contains(&format!(
            "subsets[0].ports[0].name (line {})",
            line_of(MYSQL_PAIR, "- name: mysql")
        ))),
        "{}",
        out.stdout
    );
    let service = block("Service default/mysql-svc (mysql.yaml)");
    assert_eq!(
        rules_in(&service),
        vec!["warn service-no-endpoints"],
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .trim_end()
            .ends_with("2 objects in 1 input: 2 denials, 1 warning, 0 notes"),
        "{}",
        out.stdout
    );
}
