//! What every answer to hostile input must be, shared by the property tests
//! (`tests/offline/hostile.rs`) and the coverage-guided fuzz targets (`fuzz/fuzz_targets/`), so both
//! hold the code to the same standard.
//!
//! Each `check_*` function feeds one input to one entry point and panics when the answer is
//! not what it must be: for the fuzzers a panic is a crash, for the tests a failure.

use std::sync::OnceLock;

use base64::Engine;
use extsvc_guard::admission::{self, Decision, Endpoint, Request};
use extsvc_guard::cluster::NoClusterView;
use extsvc_guard::manifest::ManifestSet;
use extsvc_guard::policy::Policy;
use extsvc_guard::rules::{Mode, judge};
use serde_json::{Value, json};

/// The policies the request path is judged under: the embedded default (which patches
/// nothing), one that requires metadata, and that one with the shape metadata on (so the
/// mutating side patches labels, annotations and its own keys).
pub fn request_policies() -> &'static [Policy] {
    static POLICIES: OnceLock<Vec<Policy>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let required = include_str!("../../../docs/policies/required-metadata.yaml");
        vec![
            Policy::embedded(),
            Policy::from_yaml(required, "required-metadata.yaml").unwrap(),
            Policy::from_yaml(
                &format!("{required}\nshapeMetadata: true\n"),
                "required-metadata-and-shape.yaml",
            )
            .unwrap(),
        ]
    })
}

/// Feeds one body through the request path under every policy and both webhooks, and checks
/// every answer. Returns the request when the body was read.
pub fn check_body(body: &[u8]) -> Option<Request> {
    match admission::parse(body) {
        Err(e) => {
            assert!(
                !e.message.trim().is_empty(),
                "a refused body gets an empty message"
            );
            if let Some(uid) = e.uid {
                // The server answers an AdmissionReview carrying the error (a 400 inside).
                let answer = Decision::unreadable(uid.clone(), e.message)
                    .to_json()
                    .unwrap();
                let json = check_answer(&answer, &uid);
                assert_eq!(json["response"]["allowed"], false);
                assert_eq!(json["response"]["status"]["code"], 400);
            }
            None
        }
        Ok(request) => {
            for policy in request_policies() {
                for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
                    let decision = admission::decide(&request, &NoClusterView, policy, endpoint);
                    check_decision(body, &request, &decision, endpoint);
                }
            }
            Some(request)
        }
    }
}

/// The object of a review, as raw JSON: read as a `Value` by itself, it has the whole of
/// serde_json's nesting limit.
#[derive(serde::Deserialize)]
struct ObjectOnly {
    request: ObjectOnlyRequest,
}

#[derive(serde::Deserialize)]
struct ObjectOnlyRequest {
    object: Box<serde_json::value::RawValue>,
}

/// Checks the answer to a request that was read from `body`: well-formed, and a patch
/// (mutating side only) that applies to the request's object.
pub fn check_decision(body: &[u8], request: &Request, decision: &Decision, endpoint: Endpoint) {
    let json = check_answer(&decision.to_json().unwrap(), &request.uid);
    let response = &json["response"];
    if endpoint == Endpoint::Validate {
        assert!(
            response.get("patch").is_none(),
            "the validating webhook answered with a patch: {response}"
        );
    }
    let Some(patch) = response.get("patch") else {
        return;
    };
    let ops = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().expect("the patch is a string"))
        .expect("the patch is base64");
    let ops: Value = serde_json::from_slice(&ops).expect("the patch is JSON");
    assert!(
        ops.as_array().is_some_and(|a| !a.is_empty()),
        "the patch is a non-empty array: {ops}"
    );
    let patch: json_patch::Patch = serde_json::from_value(ops.clone())
        .unwrap_or_else(|e| panic!("the patch is not RFC 6902 ({e}): {ops}"));
    assert!(
        request.object.is_some(),
        "a patch is only made for a request with an object"
    );
    // An object nested deeper than serde_json's 128 levels (in a field the object's type
    // skips) cannot be rebuilt here; the API server never sends one (it refuses
    // 10,000-deep JSON itself), so the patch is only checked to be well-formed.
    let Ok(raw) = serde_json::from_slice::<ObjectOnly>(body) else {
        return;
    };
    let Ok(mut object) = serde_json::from_str::<Value>(raw.request.object.get()) else {
        return;
    };
    if let Err(e) = json_patch::patch(&mut object, &patch) {
        panic!("the patch does not apply to the request's object ({e}): {ops}");
    }
}

/// Checks one answer is a well-formed AdmissionReview for `uid`, and returns it.
pub fn check_answer(answer: &[u8], uid: &str) -> Value {
    let json: Value = serde_json::from_slice(answer).unwrap_or_else(|e| {
        panic!(
            "the answer is not JSON ({e}): {}",
            String::from_utf8_lossy(answer)
        )
    });
    assert_eq!(json["apiVersion"], "admission.k8s.io/v1", "{json}");
    assert_eq!(json["kind"], "AdmissionReview", "{json}");
    let response = &json["response"];
    assert_eq!(response["uid"].as_str(), Some(uid), "the uid is not echoed");
    let allowed = response["allowed"]
        .as_bool()
        .expect("response.allowed is a boolean");
    match response.get("status") {
        Some(status) => {
            assert!(!allowed, "a status on an allowed answer: {json}");
            let code = status["code"].as_u64().expect("status.code is a number");
            assert!((400..500).contains(&code), "status code {code}");
            let message = status["message"].as_str().unwrap_or_default();
            assert!(!message.trim().is_empty(), "a refusal without a message");
        }
        None => assert!(allowed, "a refusal without a status: {json}"),
    }
    if let Some(warnings) = response.get("warnings") {
        for w in warnings.as_array().expect("warnings is an array") {
            let w = w.as_str().expect("a warning is a string");
            assert!(
                !w.chars().any(char::is_control),
                "a warning with a control character: {w:?}"
            );
            assert!(w.chars().count() <= 600, "a warning over 600 characters");
        }
    }
    assert_eq!(
        response.get("patch").is_some(),
        response.get("patchType") == Some(&json!("JSONPatch")),
        "patch and patchType go together: {json}"
    );
    json
}

/// Loads one manifest text under `name` and checks the set: errors name the file, and the
/// objects can be judged and their findings located.
pub fn check_manifest(name: &str, text: String) -> ManifestSet {
    let mut set = ManifestSet::default();
    set.add_source(name.to_owned(), text);
    for e in &set.errors {
        assert_eq!(e.file, name, "an error names another file: {e:?}");
        assert!(!e.message.trim().is_empty(), "an error without a message");
    }
    let view = set.view();
    let policy = &request_policies()[0];
    let mut locator = set.locator();
    for loaded in &set.objects {
        for finding in judge(&loaded.object, &view, policy, Mode::Set) {
            let (file, line) = locator.locate(loaded, &finding.field);
            assert_eq!(file, name);
            assert!(line >= 1, "a finding at line 0");
        }
    }
    set
}

/// Parses one policy text and checks that an error names the file.
pub fn check_policy(text: &str) {
    if let Err(e) = Policy::from_yaml(text, "fuzz.yaml") {
        assert_eq!(e.file, "fuzz.yaml");
        assert!(
            !e.message.trim().is_empty(),
            "a policy error without a message"
        );
        assert!(e.to_string().starts_with("invalid policy fuzz.yaml"));
    }
}
