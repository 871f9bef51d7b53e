//! What the person at the terminal sees: the real kubectl applying manifests to the real
//! API server, which calls `serve` (watching the cluster as the admin) for validation and
//! mutation.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::envtest::{self, ControlPlane};
use crate::support::BIN;
use crate::{decisions, repo, serve, texts, wait_ready};

/// The text block that follows `after` in the README.
pub fn readme_block(after: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let rest = &readme[readme
        .find(after)
        .unwrap_or_else(|| panic!("README lacks {after:?}"))..];
    let start = rest.find("```text\n").unwrap() + "```text\n".len();
    let end = start + rest[start..].find("```").unwrap();
    rest[start..end].to_owned()
}

/// How kubectl prints a webhook's denial of a create from `file`.
fn denial_line(file: &str, message: &str) -> String {
    format!(
        "Error from server (Forbidden): error when creating \"{file}\": admission webhook \"validate.extsvc-guard.io\" denied the request: {message}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_prints_the_readme_denials_word_for_word() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let server = serve(&cp, &[]);
    wait_ready(&server).await;
    // The README's commands run in namespace default: this test alone uses it.
    let _webhooks = cp.register(&server, "extsvc-guard-readme", &["default"]);
    let kubectl = |args: &[&str]| cp.kubectl_in(Some(&repo()), args, None);

    let out = kubectl(&["apply", "-f", "docs/examples/mysql-pair.yaml"]);
    let (stdout, stderr) = texts(&out);
    let expected = readme_block("kubectl apply -f docs/examples/mysql-pair.yaml\n```");
    assert_eq!(format!("{stdout}{stderr}"), expected);
    assert!(!out.status.success());
    // The Service was admitted.
    let (listed, _) = texts(&kubectl(&["get", "svc", "mysql-svc"]));
    let line = listed
        .lines()
        .find(|l| l.starts_with("mysql-svc "))
        .unwrap_or_else(|| panic!("{listed}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words[..5],
        ["mysql-svc", "ClusterIP", "None", "<none>", "3306/TCP"],
        "{listed}"
    );
    let (stdout, stderr) = texts(&kubectl(&[
        "delete",
        "-f",
        "docs/examples/mysql-pair.yaml",
        "--ignore-not-found",
    ]));
    assert_eq!(stdout, "service \"mysql-svc\" deleted\n", "{stderr}");

    let out = kubectl(&["apply", "-f", "docs/examples/externalname-ip.yaml"]);
    let (stdout, stderr) = texts(&out);
    let expected = readme_block("kubectl apply -f docs/examples/externalname-ip.yaml\n```");
    assert_eq!(format!("{stdout}{stderr}"), expected);
    let (_, stderr) = texts(&kubectl(&["get", "svc", "ext-ip"]));
    assert_eq!(
        stderr,
        "Error from server (NotFound): services \"ext-ip\" not found\n"
    );
}

// ---------------------------------------------------------------------------------------
// The seeds and the examples, object by object

/// Files whose outcome depends on kube-controller-manager's timing, left out here: a
/// selector Service and hand-written Endpoints for it. When the endpoints controller runs
/// (another test may have started it) it writes the Service's Endpoints before kubectl
/// applies the file's, which are then a patch of the controller's; that case is
/// `hand_written_addresses_applied_over_the_controllers_endpoints_are_denied_as_overwritten`.
const RACING_THE_CONTROLLERS: [&str; 2] = [
    "docs/examples/endpoints-overwritten.yaml",
    "tests/fixtures/seeds/003-selector-added-to-external-service.yaml",
];

/// The kinds the webhook judges: the only documents applied.
const JUDGED: [&str; 3] = ["Service", "Endpoints", "EndpointSlice"];

/// What kubectl calls an object in its output.
fn resource(kind: &str) -> &'static str {
    match kind {
        "Service" => "service",
        "Endpoints" => "endpoints",
        "EndpointSlice" => "endpointslice.discovery.k8s.io",
        _ => unreachable!("{kind}"),
    }
}

/// A warning as the webhook sends it (one of a few): cut to 600 characters.
pub fn warning_line(text: &str) -> String {
    if text.chars().count() <= 600 {
        return text.to_owned();
    }
    let mut line: String = text.chars().take(599).collect();
    line.push('…');
    line
}

/// A manifest's judged documents, each moved into namespace `{tag}-{its namespace}`.
fn judged_documents(path: &Path, tag: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|d| JUDGED.contains(&d["kind"].as_str().unwrap_or("")))
        .map(|mut d| {
            let namespace = d["metadata"]["namespace"].as_str().unwrap_or("default");
            d["metadata"]["namespace"] = json!(format!("{tag}-{namespace}"));
            d
        })
        .collect()
}

fn write_documents(path: &Path, documents: &[Value]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // A YAML stream of JSON documents (a leading `{` would make kubectl read it all as JSON).
    let text: String = documents.iter().map(|d| format!("---\n{d}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Objects the API server's own validation refuses before any validating webhook is
/// called (DESIGN.md, "Admission facts"): (file, kind/name, what its error says). `check`
/// reports them, since a manifest may never meet an API server.
const REFUSED_BY_THE_API_SERVER: [(&str, &str, &str); 3] = [
    (
        "docs/examples/address-invalid.yaml",
        "Endpoints/nas",
        "subsets[0].addresses[0].ip: Invalid value: \"nas.home.lan\": must be a valid IP address",
    ),
    (
        "docs/examples/externalname-invalid.yaml",
        "Service/payments-api",
        "spec.externalName: Invalid value: \"https://api.payments.example.com:8443\": a lowercase RFC 1123 subdomain",
    ),
    (
        "docs/examples/target-disallowed.yaml",
        "Endpoints/metadata-proxy",
        "subsets[0].addresses[0].ip: Invalid value: \"169.254.169.254\": may not be in the link-local range",
    ),
];

/// What kubectl prints for one manifest: stdout, the warnings (printed as they come), then
/// the errors (printed at the end): each exactly, or, for an object the API server refuses
/// itself, a line that contains the given text.
#[derive(Debug, Default)]
struct Expected {
    stdout: String,
    warnings: Vec<String>,
    errors: Vec<Result<String, String>>,
    denials: usize,
}

impl Expected {
    fn matches(&self, stdout: &str, stderr: &str) -> bool {
        let lines: Vec<&str> = stderr.lines().collect();
        let (warnings, errors) = lines.split_at(self.warnings.len().min(lines.len()));
        let errors = errors.join("\n");
        let expected_errors: Vec<&Result<String, String>> = self.errors.iter().collect();
        stdout == self.stdout
            && warnings == self.warnings.iter().map(String::as_str).collect::<Vec<_>>()
            && split_errors(&errors).len() == expected_errors.len()
            && split_errors(&errors)
                .iter()
                .zip(expected_errors)
                .all(|(got, expected)| match expected {
                    Ok(exact) => got == exact,
                    Err(part) => got.contains(part),
                })
    }
}

/// kubectl's error output, one entry per error (a denial spans several lines).
fn split_errors(text: &str) -> Vec<String> {
    let mut errors: Vec<String> = Vec::new();
    for line in text.lines() {
        match errors.last_mut() {
            Some(last) if !line.starts_with("Error from server") && !line.starts_with("The ") => {
                last.push('\n');
                last.push_str(line);
            }
            _ => errors.push(line.to_owned()),
        }
    }
    errors
}

/// What kubectl must print for applying `documents` from `file` (relative to `dir`), one
/// after the other, each judged with the objects admitted before it: the findings
/// `extsvc-guard check` reports for it in that same set, less `service-no-endpoints` on a
/// Service's CREATE (its Endpoints come next), worded as the webhook words them.
fn expected_apply(dir: &Path, file: &str, documents: &[Value]) -> Expected {
    let mut admitted: Vec<Value> = Vec::new();
    let mut expected = Expected::default();
    for document in documents {
        let (kind, namespace, name) = (
            document["kind"].as_str().unwrap(),
            document["metadata"]["namespace"].as_str().unwrap(),
            document["metadata"]["name"].as_str().unwrap(),
        );
        if let Some((_, _, error)) = REFUSED_BY_THE_API_SERVER
            .iter()
            .find(|(f, object, _)| *f == file && *object == format!("{kind}/{name}"))
        {
            expected.errors.push(Err((*error).to_owned()));
            continue;
        }
        let mut set = admitted.clone();
        set.push(document.clone());
        let scratch = dir.join("expected.yaml");
        write_documents(&scratch, &set);
        let out = Command::new(BIN)
            .args(["check", "--format", "json"])
            .arg(&scratch)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let line = |f: &Value| {
            format!(
                "[{}] {kind} {namespace}/{name} {}: {}",
                f["rule"].as_str().unwrap(),
                f["field"].as_str().unwrap(),
                f["message"].as_str().unwrap()
            )
        };
        let mine: Vec<&Value> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == kind && f["namespace"] == namespace && f["name"] == name)
            .filter(|f| !(kind == "Service" && f["rule"] == "service-no-endpoints"))
            .collect();
        let denied: Vec<String> = mine
            .iter()
            .filter(|f| f["action"] == "deny")
            .map(|f| line(f))
            .collect();
        for f in mine.iter().filter(|f| f["action"] == "warn") {
            expected
                .warnings
                .push(format!("Warning: {}", warning_line(&line(f))));
        }
        if denied.is_empty() {
            expected
                .stdout
                .push_str(&format!("{}/{name} created\n", resource(kind)));
            admitted.push(document.clone());
        } else {
            expected
                .errors
                .push(Ok(denial_line(file, &denied.join("\n"))));
            expected.denials += 1;
        }
    }
    expected
}

#[tokio::test(flavor = "multi_thread")]
async fn every_seed_and_example_applied_with_kubectl_gets_the_verdicts_check_gives_for_it() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let mut files: Vec<String> = Vec::new();
    for dir in ["tests/fixtures/seeds", "docs/examples"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let file = format!("{dir}/{name}");
            if name.ends_with(".yaml") && !RACING_THE_CONTROLLERS.contains(&file.as_str()) {
                files.push(file);
            }
        }
    }
    files.sort();
    // Each file in namespaces of its own (`s<n>-<its namespace>`).
    let cases: Vec<(String, Vec<Value>)> = files
        .iter()
        .enumerate()
        .map(|(n, file)| {
            (
                file.clone(),
                judged_documents(&repo().join(file), &format!("s{n}")),
            )
        })
        .filter(|(_, documents)| !documents.is_empty())
        .collect();
    let mut namespaces: Vec<String> = cases
        .iter()
        .flat_map(|(_, documents)| documents.iter())
        .map(|d| d["metadata"]["namespace"].as_str().unwrap().to_owned())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for namespace in &namespaces {
        cp.namespace(namespace, &[]);
    }
    let server = serve(&cp, &[]);
    wait_ready(&server).await;
    let names: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let _webhooks = cp.register(&server, "extsvc-guard-seeds", &names);

    let scratch = cp.tempdir();
    let (mut failures, mut denials, mut warnings) = (Vec::new(), 0, 0);
    for (file, documents) in &cases {
        // Written under the same relative path, so kubectl names the file as in the repo.
        let dir = scratch.path().join(file.replace('/', "_"));
        write_documents(&dir.join(file), documents);
        let expected = expected_apply(&dir, file, documents);
        denials += expected.denials;
        warnings += expected.warnings.len();
        let out = cp.kubectl_in(Some(&dir), &["apply", "-f", file], None);
        let (stdout, stderr) = texts(&out);
        if !expected.matches(&stdout, &stderr) {
            failures.push(format!(
                "{file}:\n  expected {expected:#?}\n  got stdout {stdout:?}\n  got stderr {stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        denials >= 5 && warnings >= 3,
        "the seeds and examples show denials ({denials}) and warnings ({warnings})"
    );
}

// ---------------------------------------------------------------------------------------
// A correct pair, created again and again

fn selectorless_service(namespace: &str, name: &str, port_name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"name": port_name, "port": 3306, "protocol": "TCP", "targetPort": 3306}]}
    })
}

fn endpoints(namespace: &str, name: &str, port_name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace},
        "subsets": [{"addresses": [{"ip": "114.32.146.154"}], "ports": [{"name": port_name, "port": 3306, "protocol": "TCP"}]}]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_correct_pair_applied_from_one_file_is_never_denied_however_often_it_is_created() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("correct-pair", &[]);
    // A selectorless Service without endpoints, named like the pair: until the watch
    // delivers the new Service mysql-svc, the cache alone calls the new Endpoints orphaned
    // and meant for this one, a denial only the confirming read turns down.
    cp.apply(&selectorless_service(&ns, "mysql", "mysql").to_string());
    let server = serve(&cp, &[]);
    wait_ready(&server).await;
    let _webhooks = cp.register(&server, "extsvc-guard-correct-pair", &[&ns]);

    let dir = cp.tempdir();
    write_documents(
        &dir.path().join("pair.yaml"),
        &[
            selectorless_service(&ns, "mysql-svc", "mysql"),
            endpoints(&ns, "mysql-svc", "mysql"),
        ],
    );
    let kubectl = |args: &[&str]| texts(&cp.kubectl_in(Some(dir.path()), args, None));
    for round in 0..5 {
        for (n, outcome) in ["created", "unchanged"].iter().enumerate() {
            let (stdout, stderr) = kubectl(&["apply", "-f", "pair.yaml"]);
            assert_eq!(
                (stdout.as_str(), stderr.as_str()),
                (
                    format!("service/mysql-svc {outcome}\nendpoints/mysql-svc {outcome}\n")
                        .as_str(),
                    ""
                ),
                "round {round}, apply {n}"
            );
        }
        let (_, stderr) = kubectl(&["delete", "-f", "pair.yaml", "--ignore-not-found"]);
        assert_eq!(stderr, "", "round {round}: delete");
    }
    let judged: Vec<Value> = decisions(&server)
        .into_iter()
        .filter(|d| d["path"] == "/validate" && d["name"] == "mysql-svc")
        .collect();
    assert!(
        judged.iter().all(|d| d["verdict"] == "allowed"),
        "{judged:#?}"
    );
    // Each create judged. (Deleting the Service deletes its Endpoints too, so kubectl's
    // own delete of them may find nothing to delete.)
    let creates = judged.iter().filter(|d| d["operation"] == "CREATE").count();
    assert_eq!(creates, 10, "{judged:#?}");

    // What a cache that has not seen Service mysql-svc yet would conclude: a denial.
    let (_, stderr) = texts(&cp.kubectl(
        &["create", "-f", "-"],
        Some(&endpoints(&ns, "mysql-svc", "mysql").to_string()),
    ));
    assert!(
        stderr.contains("denied the request: [endpoints-orphaned]")
            && stderr.contains("did you mean Service mysql?"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// Mutation

/// A policy file in `dir` that switches the shape metadata on.
fn shape_policy(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let policy = dir.path().join("shape-policy.yaml");
    std::fs::write(&policy, "shapeMetadata: true\n").unwrap();
    policy
}

/// `kubectl get -o json` of an object.
fn get(cp: &ControlPlane, namespace: &str, what: &str) -> Value {
    serde_json::from_str(&cp.kubectl_ok(&["get", "-n", namespace, what, "-o", "json"], None))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shape_label_and_target_annotation_are_stored_and_a_second_apply_changes_nothing() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("mutation", &[]);
    let dir = cp.tempdir();
    // The shape metadata is off by default; a platform team switches it on in its policy
    // and applies the conditions and rules generated for it.
    let policy = shape_policy(&dir);
    let server = serve(&cp, &["--policy", policy.to_str().unwrap()]);
    wait_ready(&server).await;
    let _webhooks = cp.register_for_policy(&server, "extsvc-guard-mutation", &[&ns], &policy);

    let orders = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "orders", "namespace": ns},
        "spec": {"type": "ExternalName", "externalName": "orders.db.example.com"}
    });
    write_documents(
        &dir.path().join("services.yaml"),
        &[
            orders,
            selectorless_service(&ns, "mysql", "mysql"),
            endpoints(&ns, "mysql", "mysql"),
        ],
    );
    let kubectl = |args: &[&str]| texts(&cp.kubectl_in(Some(dir.path()), args, None));
    assert_eq!(
        kubectl(&["apply", "-f", "services.yaml"]),
        (
            "service/orders created\nservice/mysql created\nendpoints/mysql created\n".to_owned(),
            String::new()
        )
    );
    let stored = get(&cp, &ns, "service/orders");
    assert_eq!(
        stored["metadata"]["labels"]["extsvc-guard.io/shape"], "external-name",
        "{stored:#}"
    );
    assert_eq!(
        stored["metadata"]["annotations"]["extsvc-guard.io/target"], "orders.db.example.com",
        "{stored:#}"
    );
    let mysql = get(&cp, &ns, "service/mysql");
    assert_eq!(
        mysql["metadata"]["labels"]["extsvc-guard.io/shape"], "ip-mapping",
        "{mysql:#}"
    );
    let (listed, _) = kubectl(&[
        "get",
        "svc",
        "-n",
        &ns,
        "-l",
        "extsvc-guard.io/shape",
        "-o",
        "name",
    ]);
    assert_eq!(listed, "service/mysql\nservice/orders\n");

    // The same apply again: nothing to change, nothing written.
    let versions = |cp: &ControlPlane| {
        ["service/orders", "service/mysql", "endpoints/mysql"]
            .map(|what| get(cp, &ns, what)["metadata"]["resourceVersion"].clone())
    };
    let before = versions(&cp);
    assert_eq!(
        kubectl(&["apply", "-f", "services.yaml"]),
        (
            "service/orders unchanged\nservice/mysql unchanged\nendpoints/mysql unchanged\n"
                .to_owned(),
            String::new()
        )
    );
    assert_eq!(versions(&cp), before);

    // An unrelated change to a Service whose shape label and target are right: the
    // mutating webhook's conditions keep it from the webhook (nothing to patch), and the
    // validating webhook still judges it.
    let (stdout, stderr) = kubectl(&["annotate", "-n", &ns, "service/orders", "owner=payments"]);
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("service/orders annotated\n", "")
    );
    crate::apiserver::guard::settled(&cp, &server, &ns);
    let updates = |path: &str| {
        decisions(&server)
            .into_iter()
            .filter(|d| d["path"] == path && d["name"] == "orders" && d["operation"] == "UPDATE")
            .count()
    };
    assert_eq!(updates("/mutate"), 0, "{:#?}", decisions(&server));
    assert_eq!(updates("/validate"), 1, "{:#?}", decisions(&server));
    let stored = get(&cp, &ns, "service/orders");
    assert_eq!(
        stored["metadata"]["labels"]["extsvc-guard.io/shape"],
        "external-name"
    );
}

// ---------------------------------------------------------------------------------------
// Server-side apply

/// The denial messages in kubectl's error output, with namespace `ns` written as NS.
fn denials(stderr: &str, ns: &str) -> Vec<String> {
    split_errors(stderr)
        .iter()
        .filter_map(|e| Some(e.split_once("denied the request: ")?.1.replace(ns, "NS")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_is_judged_like_client_side_apply() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let (client_side, server_side) = (cp.namespace("csa", &[]), cp.namespace("ssa", &[]));
    let dir = cp.tempdir();
    let policy = shape_policy(&dir);
    let server = serve(&cp, &["--policy", policy.to_str().unwrap()]);
    wait_ready(&server).await;
    let _webhooks = cp.register_for_policy(
        &server,
        "extsvc-guard-ssa",
        &[&client_side, &server_side],
        &policy,
    );

    let apply = |ns: &str, extra: &[&str]| {
        let file = format!("{ns}.yaml");
        write_documents(
            &dir.path().join(&file),
            &judged_documents(&repo().join("docs/examples/mysql-pair.yaml"), ns)
                .into_iter()
                .map(|mut d| {
                    d["metadata"]["namespace"] = json!(ns);
                    d
                })
                .collect::<Vec<_>>(),
        );
        let args = [&["apply", "-f", file.as_str()], extra].concat();
        texts(&cp.kubectl_in(Some(dir.path()), &args, None))
    };
    let (csa_out, csa_err) = apply(&client_side, &[]);
    let (ssa_out, ssa_err) = apply(&server_side, &["--server-side"]);
    assert_eq!(csa_out, "service/mysql-svc created\n");
    assert_eq!(ssa_out, "service/mysql-svc serverside-applied\n");
    let expected = denials(&csa_err, &client_side);
    assert_eq!(expected.len(), 1, "{csa_err}");
    assert!(
        expected[0].starts_with("[endpoints-orphaned] Endpoints NS/mysql-ep"),
        "{csa_err}"
    );
    assert_eq!(denials(&ssa_err, &server_side), expected, "{ssa_err}");
    // Server-side apply reaches the webhook as CREATE, not as PATCH.
    let operations: Vec<Value> = decisions(&server)
        .into_iter()
        .filter(|d| d["namespace"] == server_side.as_str() && d["path"] == "/validate")
        .map(|d| d["operation"].clone())
        .collect();
    assert_eq!(operations, [json!("CREATE"), json!("CREATE")]);

    // An update by server-side apply is judged too; applying it again writes nothing.
    let orders = |external_name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "orders", "namespace": server_side},
            "spec": {"type": "ExternalName", "externalName": external_name}
        })
        .to_string()
    };
    let ssa = |manifest: &str| {
        texts(&cp.kubectl_in(
            Some(dir.path()),
            &["apply", "--server-side", "-f", "-"],
            Some(manifest),
        ))
    };
    assert_eq!(
        ssa(&orders("orders.db.example.com")).0,
        "service/orders serverside-applied\n"
    );
    let before = get(&cp, &server_side, "service/orders");
    assert_eq!(
        before["metadata"]["labels"]["extsvc-guard.io/shape"],
        "external-name"
    );
    let (stdout, stderr) = ssa(&orders("orders.db.example.com"));
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("service/orders serverside-applied\n", "")
    );
    let after = get(&cp, &server_side, "service/orders");
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "{after:#}"
    );
    assert_eq!(
        after["metadata"]["labels"]["extsvc-guard.io/shape"], "external-name",
        "{after:#}"
    );
    let (_, stderr) = ssa(&orders("192.168.1.10"));
    assert!(
        stderr.contains("admission webhook \"validate.extsvc-guard.io\" denied the request: [externalname-ip] Service ssa/orders spec.externalName"),
        "{stderr}"
    );
}
