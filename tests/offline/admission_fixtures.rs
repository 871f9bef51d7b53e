//! The engine against the objects real kube-apiserver 1.32 requests carry
//! (`tests/fixtures/admission/`): managedFields, last-applied annotations, dual-stack
//! defaults and the control plane's own writes.

use std::path::PathBuf;

use extsvc_guard::cluster::ManifestView;
use extsvc_guard::finding::{Action, Finding, RuleId};
use extsvc_guard::object::Object;
use extsvc_guard::policy::Policy;
use extsvc_guard::rules::{Mode, judge};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission")
}

fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The object of a review (the old object for a DELETE).
fn object_of(review: &Value) -> Object {
    let request = &review["request"];
    let object = if request["object"].is_null() {
        request["oldObject"].clone()
    } else {
        request["object"].clone()
    };
    match object["kind"].as_str().unwrap() {
        "Service" => Object::Service(serde_json::from_value(object).unwrap()),
        "Endpoints" => Object::Endpoints(serde_json::from_value(object).unwrap()),
        "EndpointSlice" => Object::EndpointSlice(serde_json::from_value(object).unwrap()),
        other => panic!("unexpected kind {other}"),
    }
}

/// Judges the object of `subject` with the objects of `others` in the cluster view.
fn judge_with(subject: &str, others: &[&str]) -> Vec<Finding> {
    let mut view = ManifestView::new();
    for name in others {
        view.insert(&object_of(&fixture(name)));
    }
    let object = object_of(&fixture(subject));
    view.insert(&object);
    judge(&object, &view, &Policy::embedded(), Mode::Admission)
}

fn rules(findings: &[Finding]) -> Vec<(RuleId, Action)> {
    findings.iter().map(|f| (f.rule, f.action)).collect()
}

#[test]
fn every_fixture_object_deserialises_into_its_typed_kind() {
    let mut count = 0;
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let review: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let _ = object_of(&review);
        count += 1;
    }
    assert_eq!(count, 58);
}

#[test]
fn the_real_mysql_ep_request_is_denied_as_orphaned_with_the_port_mismatch() {
    let findings = judge_with("002-Endpoints-CREATE.json", &["001-Service-CREATE.json"]);
    assert_eq!(
        rules(&findings),
        vec![
            (RuleId::EndpointsOrphaned, Action::Deny),
            (RuleId::PortNameMismatch, Action::Deny)
        ],
        "{findings:#?}"
    );
    assert!(
        findings[0]
            .message
            .contains("did you mean Service mysql-svc?")
    );
}

/// As `check` and `scan` see them: an object is the control plane's only when what it says
/// about its writer is confirmed by the set (its Service has a selector; a mirrored slice's
/// Endpoints and selectorless Service exist). In admission the requester decides
/// (tests/server/serve.rs), because anyone can copy these markers onto an object.
#[test]
fn objects_written_by_the_control_plane_are_recognised_when_the_set_confirms_them() {
    for (name, confirming) in [
        (
            "007-EndpointSlice-CREATE.json",
            &["005-Service-CREATE.json", "006-Endpoints-CREATE.json"][..],
        ),
        (
            "010-EndpointSlice-UPDATE.json",
            &["005-Service-CREATE.json", "006-Endpoints-CREATE.json"],
        ),
        (
            "015-EndpointSlice-CREATE.json",
            &["014-Service-CREATE.json"],
        ),
        ("016-Endpoints-CREATE.json", &["014-Service-CREATE.json"]),
        (
            "028-EndpointSlice-DELETE.json",
            &["005-Service-CREATE.json", "006-Endpoints-CREATE.json"],
        ),
        (
            "032-EndpointSlice-DELETE.json",
            &["014-Service-CREATE.json"],
        ),
    ] {
        let object = object_of(&fixture(name));
        let mut view = ManifestView::new();
        view.insert(&object);
        for other in confirming {
            view.insert(&object_of(&fixture(other)));
        }
        let findings = judge(&object, &view, &Policy::embedded(), Mode::Set);
        assert!(findings.is_empty(), "{name}: {findings:#?}");

        // Alone, nothing confirms the markers: judged as hand-written (here: no Service).
        let mut alone = ManifestView::new();
        alone.insert(&object);
        let findings = judge(&object, &alone, &Policy::embedded(), Mode::Set);
        assert_eq!(
            rules(&findings),
            vec![(RuleId::EndpointsOrphaned, Action::Warn)],
            "{name}: {findings:#?}"
        );
    }
}

#[test]
fn the_server_side_applied_pair_with_matching_names_passes() {
    let findings = judge_with("006-Endpoints-CREATE.json", &["005-Service-CREATE.json"]);
    assert!(findings.is_empty(), "{findings:#?}");
    let findings = judge_with("005-Service-CREATE.json", &["006-Endpoints-CREATE.json"]);
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn a_hand_written_slice_with_the_service_port_name_pairs_cleanly() {
    let findings = judge_with(
        "013-EndpointSlice-CREATE.json",
        &["001-Service-CREATE.json"],
    );
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn the_real_externalname_ip_request_is_denied_and_the_dns_alias_passes() {
    let findings = judge_with("012-Service-CREATE.json", &[]);
    assert_eq!(
        rules(&findings),
        vec![(RuleId::ExternalnameIp, Action::Deny)],
        "{findings:#?}"
    );
    let clean = judge_with("055-Service-CREATE.json", &[]);
    assert!(clean.is_empty(), "{clean:#?}");
}

#[test]
fn a_selector_service_from_a_real_request_passes() {
    let findings = judge_with(
        "014-Service-CREATE.json",
        &["015-EndpointSlice-CREATE.json", "016-Endpoints-CREATE.json"],
    );
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn a_selectorless_service_without_endpoints_is_only_warned() {
    let findings = judge_with("003-Service-UPDATE.json", &[]);
    assert_eq!(
        rules(&findings),
        vec![(RuleId::ServiceNoEndpoints, Action::Warn)],
        "{findings:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// The webhook configurations' matchConditions (extsvc_guard::policy::cel): wherever they
// keep a write from the webhook, the webhook would have allowed it untouched.

mod match_conditions {
    use cel_interpreter::{Context, Program};
    use extsvc_guard::admission::{Endpoint, decide, parse};
    use extsvc_guard::cluster::{ClusterView, ManifestView, NoClusterView};
    use extsvc_guard::policy::{Policy, cel};
    use serde_json::{Value, json};

    use super::{fixture, fixtures_dir, object_of};

    /// The conditions compiled, with their names.
    fn compile(conditions: &[cel::Condition]) -> Vec<(&'static str, Program)> {
        conditions
            .iter()
            .map(|c| {
                let program = Program::compile(&c.expression)
                    .unwrap_or_else(|e| panic!("{} does not compile: {e}", c.name));
                (c.name, program)
            })
            .collect()
    }

    /// Whether the API server calls the webhook for `review`: every condition is true. An
    /// expression that fails to evaluate is an error (the API server would refuse the
    /// write, or call the webhook, depending on failurePolicy).
    fn called(conditions: &[(&str, Program)], review: &Value) -> Result<bool, String> {
        let request = &review["request"];
        let mut context = Context::default();
        for (name, value) in [
            ("request", request),
            ("object", &request["object"]),
            ("oldObject", &request["oldObject"]),
        ] {
            context
                .add_variable(name, value.clone())
                .map_err(|e| format!("{name}: {e}"))?;
        }
        for (name, program) in conditions {
            match program.execute(&context) {
                Ok(cel_interpreter::Value::Bool(true)) => {}
                Ok(cel_interpreter::Value::Bool(false)) => return Ok(false),
                other => return Err(format!("{name}: {other:?}")),
            }
        }
        Ok(true)
    }

    /// A review of `object` (and `old`) by `user` in `namespace`.
    fn review(operation: &str, user: &str, object: &Value, old: &Value) -> Value {
        let subject = if object.is_null() { old } else { object };
        let kind = subject["kind"].as_str().unwrap();
        let (group, resource) = match kind {
            "Service" => ("", "services"),
            "Endpoints" => ("", "endpoints"),
            _ => ("discovery.k8s.io", "endpointslices"),
        };
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-1",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "name": subject["metadata"]["name"],
            "namespace": subject["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old,
        }})
    }

    /// Services of every shape that matters to a rule or to mutation.
    fn services() -> Vec<Value> {
        let mut all = Vec::new();
        let selectors = [json!(null), json!({"app": "web"})];
        let types = [
            json!({"type": "ClusterIP"}),
            json!({"type": "ClusterIP", "clusterIP": "None"}),
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({"type": "ExternalName", "externalName": "192.168.1.10"}),
        ];
        let ports = [
            json!([{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]),
            json!([{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]),
            json!([{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]),
        ];
        let external_ips = [json!(null), json!(["203.0.113.5"])];
        let metadata = [
            json!({}),
            json!({"labels": {"extsvc-guard.io/shape": "external-name"}, "annotations": {"extsvc-guard.io/target": "db.example.com"}}),
            json!({"labels": {"extsvc-guard.io/shape": "ip-mapping", "owner": "platform"}}),
            json!({"labels": {"team": "not-the-namespaces", "owner": "platform"}}),
        ];
        for (i, selector) in selectors.iter().enumerate() {
            for (j, t) in types.iter().enumerate() {
                for (k, p) in ports.iter().enumerate() {
                    for (l, ips) in external_ips.iter().enumerate() {
                        for (m, meta) in metadata.iter().enumerate() {
                            let mut spec = t.clone();
                            spec["ports"] = p.clone();
                            if !selector.is_null() {
                                spec["selector"] = selector.clone();
                            }
                            if !ips.is_null() {
                                spec["externalIPs"] = ips.clone();
                            }
                            let mut metadata = meta.clone();
                            metadata["name"] = json!(format!("svc-{i}{j}{k}{l}{m}"));
                            metadata["namespace"] = json!("default");
                            all.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}));
                        }
                    }
                }
            }
        }
        all
    }

    /// Every review to try: the captured ones, and Services of every shape created,
    /// updated from every other selector state and deleted, by a person, a controller and
    /// an exempt operator, in a judged and an exempt namespace.
    fn reviews() -> Vec<Value> {
        let mut all: Vec<Value> = std::fs::read_dir(fixtures_dir())
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.ends_with(".json").then(|| fixture(&name))
            })
            .collect();
        let services = services();
        // The controllers' writes are among the captured reviews.
        for user in ["alice", "system:serviceaccount:databases:patroni"] {
            for (i, service) in services.iter().enumerate() {
                for namespace in ["default", "kube-system"] {
                    let mut object = service.clone();
                    object["metadata"]["namespace"] = json!(namespace);
                    all.push(review("CREATE", user, &object, &Value::Null));
                    all.push(review("DELETE", user, &Value::Null, &object));
                    // Updated from the shape of another Service (with or without a selector).
                    for other in [
                        &services[(i + 7) % services.len()],
                        &services[(i + 101) % services.len()],
                    ] {
                        let mut old = other.clone();
                        old["metadata"] = object["metadata"].clone();
                        all.push(review("UPDATE", user, &object, &old));
                    }
                }
            }
        }
        all
    }

    /// A cluster where Services of the generated names have hand-written endpoints, and
    /// namespace default is labelled team=payments.
    fn cluster() -> ManifestView {
        let mut view = ManifestView::new();
        view.insert_namespace(
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "default", "labels": {"team": "payments"}}}))
            .unwrap(),
        );
        for service in services() {
            let name = service["metadata"]["name"].clone();
            let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": "default"},
                "subsets": [{"addresses": [{"ip": "203.0.113.9"}], "ports": [{"name": "http", "port": 80}]}]});
            view.insert(&object_of(&json!({"request": {"object": endpoints}})));
        }
        view
    }

    fn policies() -> Vec<Policy> {
        [
            "",
            "shapeMetadata: true\n",
            "shapeMetadata: true\nexemptSubjects: [{kind: ServiceAccount, namespace: databases, name: patroni}]\n",
            "shapeMetadata: true\nrequiredMetadata:\n  labels: [{key: owner, value: platform}, {key: team, fromNamespaceLabel: team, kinds: [Service]}]\n  annotations: [{key: contact, kinds: [Endpoints, EndpointSlice]}]\n",
            "requiredMetadata:\n  labels: [{key: owner, value: platform, overwrite: true}, {key: team, fromNamespaceLabel: team, overwrite: true}]\n",
            "rules: {externalname-ip: warn}\n",
        ]
        .iter()
        .map(|text| Policy::from_yaml(text, "policy.yaml").unwrap())
        .collect()
    }

    #[test]
    fn a_write_the_conditions_keep_from_the_webhook_is_one_it_would_allow_untouched() {
        let reviews = reviews();
        let views: [(&str, &dyn ClusterView); 2] = [
            ("no cluster", &NoClusterView),
            ("hand-written endpoints", &cluster()),
        ];
        // Writes the webhooks are registered for, and those of them the conditions keep away.
        let (mut by_conditions, mut registered_total) = (0, 0);
        for policy in policies() {
            let mutated = cel::mutated_resources(&policy);
            for (endpoint, conditions) in [
                (Endpoint::Validate, compile(&cel::validating(&policy))),
                (Endpoint::Mutate, compile(&cel::mutating(&policy))),
            ] {
                for review in &reviews {
                    // The mutating webhook is registered for CREATE and UPDATE of the
                    // resources the policy may patch only: the others never reach it, and
                    // must be writes it would leave untouched.
                    let operation = review["request"]["operation"].as_str().unwrap();
                    if endpoint == Endpoint::Mutate && operation == "DELETE" {
                        continue;
                    }
                    let resource = review["request"]["resource"]["resource"].as_str().unwrap();
                    let registered = endpoint == Endpoint::Validate
                        || mutated.iter().any(|(_, _, _, r)| *r == resource);
                    if registered {
                        registered_total += 1;
                        if called(&conditions, review)
                            .unwrap_or_else(|e| panic!("{e}\nin {review:#}"))
                        {
                            continue;
                        }
                        by_conditions += 1;
                    }
                    let body = serde_json::to_vec(review).unwrap();
                    let request = parse(&body).unwrap();
                    for (name, view) in views {
                        let d = decide(&request, view, &policy, endpoint);
                        assert!(
                            d.allowed && d.warnings.is_empty() && d.patch.is_empty(),
                            "{endpoint:?} with {name}: kept from the webhook, which would answer {d:#?}\nfor {review:#}"
                        );
                    }
                }
            }
        }
        // Not vacuous: the conditions keep a good share of the writes the webhooks are
        // registered for from them.
        assert!(
            by_conditions * 4 > registered_total,
            "{by_conditions} of {registered_total} kept from the webhook by the conditions"
        );
    }
}
