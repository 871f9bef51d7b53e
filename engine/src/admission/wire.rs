//! The wire format of the webhook: an `admission.k8s.io/v1` AdmissionReview read from a
//! request body, and the AdmissionReview that answers it. kube's own admission types do not
//! fit: its request types read objects as `DynamicObject` (read whole, whatever their kind
//! and writer), and its response writes `patch` as an array of numbers (kube-rs issue 1781);
//! here objects stay raw until the decision knows it will read them, and the patch is base64.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Decision;

pub const API_VERSION: &str = "admission.k8s.io/v1";

/// The audit annotation key; the API server records it as `<webhook name>/findings`.
pub const AUDIT_KEY: &str = "findings";

/// Which webhook is being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Validate => "/validate",
            Endpoint::Mutate => "/mutate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The part of an AdmissionRequest extsvc-guard reads. The objects stay raw JSON until
/// [`prepare`] knows from the rest of the request whether and as what to read them: a
/// control plane's large Endpoints is never read at all.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default)]
    pub object: Option<Box<RawValue>>,
    #[serde(default)]
    pub old_object: Option<Box<RawValue>>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    request: Option<Request>,
}

/// Just enough of a review to answer it: its uid.
#[derive(Deserialize)]
struct UidOnly {
    request: UidOnlyRequest,
}

#[derive(Deserialize)]
struct UidOnlyRequest {
    uid: String,
}

/// A body that is no AdmissionReview extsvc-guard can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReview {
    /// The request's uid, when the body had one: the answer is then an AdmissionReview
    /// carrying the error, which the API server shows; otherwise a plain HTTP 400.
    pub uid: Option<String>,
    pub message: String,
}

/// Reads a request body.
pub fn parse(body: &[u8]) -> Result<Request, BadReview> {
    let review: Review = serde_json::from_slice(body).map_err(|e| BadReview {
        uid: serde_json::from_slice::<UidOnly>(body)
            .ok()
            .map(|u| u.request.uid),
        message: format!("the request body is not a valid AdmissionReview: {e}"),
    })?;
    checked(review)
}

fn checked(review: Review) -> Result<Request, BadReview> {
    if review.kind.as_deref() != Some("AdmissionReview")
        || review.api_version.as_deref() != Some(API_VERSION)
    {
        return Err(BadReview {
            uid: review.request.map(|r| r.uid),
            message: format!(
                "expected kind AdmissionReview with apiVersion {API_VERSION} (set admissionReviewVersions: [v1] in the webhook configuration), got kind {:?} apiVersion {:?}",
                review.kind.unwrap_or_default(),
                review.api_version.unwrap_or_default()
            ),
        });
    }
    review.request.ok_or_else(|| BadReview {
        uid: None,
        message: "the AdmissionReview has no request".to_owned(),
    })
}

impl Decision {
    /// The AdmissionReview answering this decision, or why it cannot be written.
    pub fn to_json(&self) -> Result<Vec<u8>, String> {
        let patch = if self.patch.0.is_empty() {
            None
        } else {
            let json = serde_json::to_vec(&self.patch)
                .map_err(|e| format!("the patch cannot be encoded: {e}"))?;
            Some(base64::engine::general_purpose::STANDARD.encode(json))
        };
        let review = ReviewOut {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response: ResponseOut {
                uid: &self.uid,
                allowed: self.allowed,
                status: self.status.as_ref().map(|s| StatusOut {
                    metadata: EmptyObject {},
                    status: "Failure",
                    code: s.code,
                    reason: s.reason,
                    message: &s.message,
                }),
                warnings: &self.warnings,
                audit_annotations: self.audit.as_ref().map(|a| {
                    let mut m = BTreeMap::new();
                    m.insert(AUDIT_KEY, a.as_str());
                    m
                }),
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
            },
        };
        serde_json::to_vec(&review).map_err(|e| format!("the answer cannot be encoded: {e}"))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_annotations: Option<BTreeMap<&'static str, &'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

#[derive(Serialize)]
struct StatusOut<'a> {
    metadata: EmptyObject,
    status: &'static str,
    code: u16,
    reason: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct EmptyObject {}
