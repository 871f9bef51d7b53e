//! The engine against the objects real kube-apiserver 1.32 requests carry
//! (`../shared/fixtures/admission/`): managedFields, last-applied annotations, dual-stack
//! defaults and the control plane's own writes.

use std::path::PathBuf;

use extsvc_guard::cluster::ManifestView;
use extsvc_guard::finding::{Action, Finding, RuleId};
use extsvc_guard::object::Object;
use extsvc_guard::policy::Policy;
use extsvc_guard::rules::{Mode, judge};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/admission")
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
/// (tests/serve.rs), because anyone can copy these markers onto an object.
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
