//! The wire format of the webhook: an `admission.k8s.io/v1` AdmissionReview read from a
//! request body, and the AdmissionReview that answers it. kube's own admission types do not
//! fit: its request types read objects as `DynamicObject` (read whole, whatever their kind
//! and writer), and its response writes `patch` as an array of numbers (kube-rs issue 1781);
//! here an object is read in the same pass as the request, as the kind the request names, and
//! skipped for writes the webhook leaves alone, and the patch is base64.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::Decision;
use crate::object::{Kind, Object};

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

/// The part of an AdmissionRequest extsvc-guard reads, read in one pass. The API server
/// writes the request's `kind`, `operation` and `userInfo` before its objects, so the objects
/// are read in place as the judged kind, or not at all when the write is one the webhook
/// leaves alone (a control plane's large Endpoints). Sent in another order, an object is
/// kept raw and read by [`super::prepare`] once the rest is known.
#[derive(Debug)]
pub struct Request {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub sub_resource: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    pub object: Option<Body>,
    pub old_object: Option<Body>,
    pub dry_run: Option<bool>,
}

/// A review's object as the reader left it.
#[derive(Debug)]
pub enum Body {
    /// Read as the request's (judged) kind.
    Read(Box<Object>),
    /// Kept as written: its kind came after it, or it could not be read in place.
    Raw(Box<RawValue>),
    /// Not read: a kind the webhook does not judge, or a write it leaves alone.
    Skipped,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    Uid,
    Kind,
    SubResource,
    Name,
    Namespace,
    Operation,
    UserInfo,
    Object,
    OldObject,
    DryRun,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Request, D::Error> {
        deserializer.deserialize_map(RequestVisitor { in_place: true })
    }
}

/// A request whose objects are all kept raw: how a review is read again when an object it
/// carries cannot be read in place, so that [`super::prepare`] answers for it (a DELETE is
/// never blocked by what the webhook cannot read).
struct KeptRaw(Request);

impl<'de> Deserialize<'de> for KeptRaw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KeptRaw, D::Error> {
        deserializer
            .deserialize_map(RequestVisitor { in_place: false })
            .map(KeptRaw)
    }
}

struct RequestVisitor {
    /// Whether objects are read where they are, when the rest of the request allows it.
    in_place: bool,
}

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = Request;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionRequest")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request, A::Error> {
        fn once<T, E: de::Error>(slot: &Option<T>, name: &'static str) -> Result<(), E> {
            match slot {
                Some(_) => Err(E::duplicate_field(name)),
                None => Ok(()),
            }
        }
        let mut uid = None;
        let mut kind: Option<GroupVersionKind> = None;
        let mut sub_resource: Option<Option<String>> = None;
        let mut name = None;
        let mut namespace = None;
        let mut operation = None;
        let mut user_info: Option<UserInfo> = None;
        let mut object: Option<Option<Body>> = None;
        let mut old_object: Option<Option<Body>> = None;
        let mut dry_run = None;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Uid => {
                    once(&uid, "uid")?;
                    uid = Some(map.next_value::<String>()?);
                }
                Field::Kind => {
                    once(&kind, "kind")?;
                    kind = Some(map.next_value()?);
                }
                Field::SubResource => {
                    once(&sub_resource, "subResource")?;
                    sub_resource = Some(map.next_value()?);
                }
                Field::Name => {
                    once(&name, "name")?;
                    name = Some(map.next_value::<Option<String>>()?);
                }
                Field::Namespace => {
                    once(&namespace, "namespace")?;
                    namespace = Some(map.next_value::<Option<String>>()?);
                }
                Field::Operation => {
                    once(&operation, "operation")?;
                    operation = Some(map.next_value::<Operation>()?);
                }
                Field::UserInfo => {
                    once(&user_info, "userInfo")?;
                    user_info = Some(map.next_value()?);
                }
                Field::Object | Field::OldObject => {
                    let (slot, name) = match field {
                        Field::Object => (&mut object, "object"),
                        _ => (&mut old_object, "oldObject"),
                    };
                    once(slot, name)?;
                    let how = ObjectRead::decide(
                        self.in_place,
                        name,
                        kind.as_ref(),
                        operation,
                        sub_resource.as_ref(),
                        user_info.as_ref(),
                    );
                    *slot = Some(map.next_value_seed(how)?);
                }
                Field::DryRun => {
                    once(&dry_run, "dryRun")?;
                    dry_run = Some(map.next_value::<Option<bool>>()?);
                }
                Field::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(Request {
            uid: uid.ok_or_else(|| de::Error::missing_field("uid"))?,
            kind: kind.ok_or_else(|| de::Error::missing_field("kind"))?,
            sub_resource: sub_resource.flatten(),
            name: name.flatten(),
            namespace: namespace.flatten(),
            operation: operation.ok_or_else(|| de::Error::missing_field("operation"))?,
            user_info: user_info.unwrap_or_default(),
            object: object.flatten(),
            old_object: old_object.flatten(),
            dry_run: dry_run.flatten(),
        })
    }
}

/// How one of a request's objects is read, from what came before it.
#[derive(Clone, Copy)]
enum ObjectRead {
    InPlace(&'static str, Kind),
    Raw,
    Skip,
}

impl ObjectRead {
    fn decide(
        in_place: bool,
        field: &'static str,
        kind: Option<&GroupVersionKind>,
        operation: Option<Operation>,
        sub_resource: Option<&Option<String>>,
        user_info: Option<&UserInfo>,
    ) -> ObjectRead {
        let (true, Some(kind), Some(operation)) = (in_place, kind, operation) else {
            return ObjectRead::Raw;
        };
        let Some(kind) = super::judged_kind(kind) else {
            return ObjectRead::Skip;
        };
        if let Some(user) = user_info
            && super::left_alone(
                operation,
                sub_resource.and_then(Option::as_deref),
                &user.username,
            )
        {
            return ObjectRead::Skip;
        }
        match (field, operation) {
            ("object", Operation::Create | Operation::Update)
            | ("oldObject", Operation::Update | Operation::Delete) => {
                ObjectRead::InPlace(field, kind)
            }
            _ => ObjectRead::Raw,
        }
    }
}

impl<'de> DeserializeSeed<'de> for ObjectRead {
    type Value = Option<Body>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Body>, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ObjectRead {
    type Value = Option<Body>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<Body>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Body>, D::Error> {
        Ok(Some(match self {
            ObjectRead::InPlace(field, kind) => {
                let object = super::typed::read_from(kind, deserializer).map_err(|e| {
                    de::Error::custom(format!("{UNREADABLE}{field} as a {kind}: {e}"))
                })?;
                Body::Read(Box::new(object))
            }
            ObjectRead::Raw => Body::Raw(Deserialize::deserialize(deserializer)?),
            ObjectRead::Skip => {
                de::IgnoredAny::deserialize(deserializer)?;
                Body::Skipped
            }
        }))
    }
}

/// How the message of an object that cannot be read as its kind begins.
pub(super) const UNREADABLE: &str = "extsvc-guard cannot read request.";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review<R> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    // Not `default`: serde's derive would then require `R: Default`.
    #[serde(default = "none")]
    request: Option<R>,
}

fn none<R>() -> Option<R> {
    None
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
    let bad = |e: &dyn fmt::Display| BadReview {
        uid: serde_json::from_slice::<UidOnly>(body)
            .ok()
            .map(|u| u.request.uid),
        message: format!("the request body is not a valid AdmissionReview: {e}"),
    };
    // Checked once as a whole, the text's strings are not checked again one by one.
    let text = std::str::from_utf8(body).map_err(|e| bad(&format!("it is not UTF-8 ({e})")))?;
    match serde_json::from_str::<Review<Request>>(text) {
        Ok(review) => checked(review),
        // An object that is not of its kind: read again with the objects kept raw, so that
        // prepare answers for it as for any object it cannot read.
        Err(e) if e.to_string().starts_with(UNREADABLE) => {
            let review: Review<KeptRaw> = serde_json::from_str(text).map_err(|e| bad(&e))?;
            checked(Review {
                api_version: review.api_version,
                kind: review.kind,
                request: review.request.map(|r| r.0),
            })
        }
        Err(e) => Err(bad(&e)),
    }
}

fn checked(review: Review<Request>) -> Result<Request, BadReview> {
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
