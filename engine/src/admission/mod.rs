//! The admission front door: an `admission.k8s.io/v1` AdmissionReview in, the engine's
//! findings (or the mutation's patch) out as an AdmissionReview response.
//!
//! Pure translation: no I/O, no clock. The server feeds it request bodies and a cluster
//! view; everything the API server and the person at `kubectl` see is decided here.

mod answer;
mod typed;
mod wire;

use std::collections::BTreeMap;

use crate::cluster::{ClusterView, written_by_controller};
use crate::finding::{Action, Finding, RuleId};
use crate::mutation;
use crate::object::{Kind, Object, same_endpoints};
use crate::policy::Policy;
use crate::rules::{Mode, judge};

pub use answer::{cross_object_findings, downgrade_cross_object};
use answer::{delete_warnings, settle, warning_line};
use wire::UNREADABLE;
pub use wire::{
    API_VERSION, AUDIT_KEY, BadReview, Body, Endpoint, GroupVersionKind, Operation, Request,
    UserInfo, parse,
};

/// Requests no rule judges, whatever their object: a subresource, a control-plane writer,
/// a CONNECT.
fn left_alone(operation: Operation, sub_resource: Option<&str>, username: &str) -> bool {
    sub_resource.is_some_and(|s| !s.is_empty())
        || is_control_plane_user(username)
        || operation == Operation::Connect
}

/// How a request ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Judged and allowed with nothing to say.
    Allowed,
    /// Allowed with warnings.
    Warned,
    /// Allowed with a patch.
    Patched,
    Denied,
    /// Not ours to judge: another kind, a subresource, or a control-plane writer.
    Skipped,
    /// The request could not be read.
    Invalid,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Warned => "warned",
            Verdict::Patched => "patched",
            Verdict::Denied => "denied",
            Verdict::Skipped => "skipped",
            Verdict::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

/// The answer to one review, and what logs and metrics need to know about it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub uid: String,
    pub allowed: bool,
    pub status: Option<Status>,
    pub warnings: Vec<String>,
    pub audit: Option<String>,
    pub patch: json_patch::Patch,
    pub verdict: Verdict,
    /// `Service`, `Endpoints`, `EndpointSlice`, or `other`.
    pub kind: &'static str,
    pub operation: &'static str,
    pub namespace: String,
    pub name: String,
    /// Every finding after the admission adjustments (UPDATE downgrades, CREATE filtering).
    pub findings: Vec<Finding>,
}

impl Decision {
    fn new(request: &Request, kind: &'static str) -> Decision {
        Decision {
            uid: request.uid.clone(),
            allowed: true,
            status: None,
            warnings: Vec::new(),
            audit: None,
            patch: json_patch::Patch::default(),
            verdict: Verdict::Allowed,
            kind,
            operation: request.operation.as_str(),
            namespace: request.namespace.clone().unwrap_or_default(),
            name: request.name.clone().unwrap_or_default(),
            findings: Vec::new(),
        }
    }

    /// The answer to a body that could not be read but carried a uid.
    pub fn unreadable(uid: String, message: String) -> Decision {
        Decision {
            uid,
            allowed: true,
            status: None,
            warnings: Vec::new(),
            audit: None,
            patch: json_patch::Patch::default(),
            verdict: Verdict::Invalid,
            kind: "other",
            operation: "",
            namespace: String::new(),
            name: String::new(),
            findings: Vec::new(),
        }
        .invalid(message)
    }

    /// Refuses the request as unreadable: `allowed: false` with code 400 and the reason.
    fn invalid(mut self, message: String) -> Decision {
        self.allowed = false;
        self.status = Some(Status {
            code: 400,
            reason: "BadRequest",
            message,
        });
        self.verdict = Verdict::Invalid;
        self
    }

    /// Refuses the request because what decides it could not be read: `allowed: false` with
    /// code 503, so that a retry may succeed.
    pub fn undecidable(mut self, message: String) -> Decision {
        self.allowed = false;
        self.status = Some(Status {
            code: 503,
            reason: "ServiceUnavailable",
            message,
        });
        self.verdict = Verdict::Denied;
        self
    }

    fn skipped(mut self) -> Decision {
        self.verdict = Verdict::Skipped;
        self
    }

    /// The rule ids of the findings that denied or warned, for the decision log line.
    pub fn rule_ids(&self) -> Vec<&'static str> {
        let mut ids: Vec<&'static str> = self
            .findings
            .iter()
            .filter(|f| f.action > Action::Info)
            .map(|f| f.rule.as_str())
            .collect();
        ids.dedup();
        ids
    }
}

/// The control plane's own writers of Services, Endpoints and EndpointSlices:
/// kube-controller-manager's controllers (with `--use-service-account-credentials`, each as
/// its own account), kube-controller-manager itself and the API server. Nodes
/// ([`CONTROL_PLANE_USER_PREFIX`]) too.
pub const CONTROL_PLANE_USERS: [&str; 9] = [
    "system:serviceaccount:kube-system:endpoint-controller",
    "system:serviceaccount:kube-system:endpointslice-controller",
    "system:serviceaccount:kube-system:endpointslicemirroring-controller",
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "system:serviceaccount:kube-system:namespace-controller",
    "system:serviceaccount:kube-system:service-controller",
    "system:serviceaccount:kube-system:service-cidrs-controller",
    "system:kube-controller-manager",
    "system:apiserver",
];

/// Every node's user name starts with this.
pub const CONTROL_PLANE_USER_PREFIX: &str = "system:node:";

/// Requests from the control plane's own writers are allowed unjudged: denying them would
/// fight Kubernetes itself. Other kube-system service accounts (add-ons, installers) are
/// judged like anyone else.
pub fn is_control_plane_user(username: &str) -> bool {
    CONTROL_PLANE_USERS.contains(&username) || username.starts_with(CONTROL_PLANE_USER_PREFIX)
}

/// What extsvc-guard judges: (API group, version, kind, resource). The webhook
/// configurations in `deploy/` must name exactly these resources.
pub const JUDGED: [(&str, &str, Kind, &str); 3] = [
    ("", "v1", Kind::Service, "services"),
    ("", "v1", Kind::Endpoints, "endpoints"),
    (
        "discovery.k8s.io",
        "v1",
        Kind::EndpointSlice,
        "endpointslices",
    ),
];

/// The kind of a request extsvc-guard judges, by the request's `kind`.
fn judged_kind(kind: &GroupVersionKind) -> Option<Kind> {
    JUDGED
        .iter()
        .find(|(g, v, k, _)| kind.group == *g && kind.version == *v && kind.kind == k.as_str())
        .map(|(_, _, k, _)| *k)
}

/// An object of the review: read with it, or read from its raw text here.
enum Held<'r> {
    Borrowed(&'r Object),
    // Boxed: a subject lives across the server's wait for a live read, inside every
    // request's future, which axum moves.
    Owned(Box<Object>),
}

impl std::ops::Deref for Held<'_> {
    type Target = Object;

    fn deref(&self) -> &Object {
        match self {
            Held::Borrowed(object) => object,
            Held::Owned(object) => object,
        }
    }
}

/// The object in `body` as `kind`: as read with the review, or read now from its text.
fn held<'r>(body: &'r Body, kind: Kind) -> Option<Result<Held<'r>, serde_json::Error>> {
    match body {
        Body::Read(object) => Some(Ok(Held::Borrowed(object))),
        Body::Raw(raw) => Some(typed::read(kind, raw.get()).map(|o| Held::Owned(Box::new(o)))),
        Body::Skipped => None,
    }
}

/// Answers one review.
pub fn decide(
    request: &Request,
    view: &dyn ClusterView,
    policy: &Policy,
    endpoint: Endpoint,
) -> Decision {
    match prepare(request, endpoint) {
        Prepared::Judge(subject) => subject.judge(view, policy),
        Prepared::Answered(decision) => *decision,
    }
}

/// A review whose objects are read and that is left to judge: the server judges it against
/// the cache and, for a cross-object denial, again against a fresh read, without parsing
/// the objects each time.
pub struct Subject<'r> {
    request: &'r Request,
    kind: Kind,
    endpoint: Endpoint,
    object: Held<'r>,
    old: Option<Held<'r>>,
}

/// A Service's selector appearing over hand-written endpoints, or going from controller-written
/// ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorChange {
    /// The new selector: the Pods it matches are counted.
    Added(BTreeMap<String, String>),
    Removed,
}

/// What a review needs: judging, or nothing more than the answer already made.
pub enum Prepared<'r> {
    Judge(Subject<'r>),
    /// Not a judged kind, a write the webhook leaves alone, or an object it cannot read.
    Answered(Box<Decision>),
}

/// Reads the review's objects, or answers it at once.
pub fn prepare(request: &Request, endpoint: Endpoint) -> Prepared<'_> {
    let Some(kind) = judged_kind(&request.kind) else {
        return Prepared::Answered(Box::new(Decision::new(request, "other").skipped()));
    };
    let operation = request.operation;
    if left_alone(
        operation,
        request.sub_resource.as_deref(),
        &request.user_info.username,
    ) || (endpoint == Endpoint::Mutate && operation == Operation::Delete)
    {
        return Prepared::Answered(Box::new(Decision::new(request, kind.as_str()).skipped()));
    }
    // The object the operation leaves behind, or the one it removes.
    let (field, raw) = match operation {
        Operation::Delete => ("oldObject", request.old_object.as_ref()),
        _ => ("object", request.object.as_ref()),
    };
    let problem = match raw.and_then(|body| held(body, kind)) {
        Some(Ok(object)) => Ok(object),
        Some(Err(e)) => Err(format!("{UNREADABLE}{field} as a {kind}: {e}")),
        None => Err(format!(
            "extsvc-guard cannot judge this {} of a {kind}: request.{field} is missing",
            operation.as_str()
        )),
    };
    let object = match problem {
        Ok(object) => object,
        // Never block a delete on what the webhook cannot read.
        Err(message) if operation == Operation::Delete => {
            let mut decision = Decision::new(request, kind.as_str());
            decision.warnings = vec![warning_line(&message)];
            decision.verdict = Verdict::Warned;
            return Prepared::Answered(Box::new(decision));
        }
        Err(message) => {
            return Prepared::Answered(Box::new(
                Decision::new(request, kind.as_str()).invalid(message),
            ));
        }
    };
    let old = match (operation, request.old_object.as_ref()) {
        (Operation::Update, Some(body)) => held(body, kind).and_then(Result::ok),
        _ => None,
    };
    Prepared::Judge(Subject {
        request,
        kind,
        endpoint,
        object,
        old,
    })
}

impl Subject<'_> {
    pub fn uid(&self) -> &str {
        &self.request.uid
    }

    /// Which webhook asks.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The namespace whose objects the judgement reads.
    pub fn namespace(&self) -> &str {
        self.request.namespace.as_deref().unwrap_or("default")
    }

    /// What a Service write does to the writer of its endpoints, when judging it needs a
    /// live read (see `selector-change`): a selector removed leaves the controllers'
    /// endpoints frozen, which the cache does not keep; a selector that takes hand-written
    /// endpoints over (`decision` found them) needs the Pods it matches counted.
    pub fn selector_change(&self, decision: &Decision) -> Option<SelectorChange> {
        if self.endpoint != Endpoint::Validate {
            return None;
        }
        let selector = |o: &Object| match o {
            Object::Service(s) => s
                .spec
                .as_ref()
                .and_then(|spec| spec.selector.clone())
                .filter(|sel| !sel.is_empty()),
            _ => None,
        };
        let now = selector(&self.object);
        let before = self.old.as_deref().and_then(selector);
        match now {
            Some(sel)
                if decision
                    .findings
                    .iter()
                    .any(|f| f.rule == RuleId::SelectorChange) =>
            {
                Some(SelectorChange::Added(sel))
            }
            None if before.is_some() => Some(SelectorChange::Removed),
            _ => None,
        }
    }

    /// Whether `decision` has a finding that the Service's consumers would soften (see
    /// `consumerAware`): the Ingresses and routes that name it must then be read, since the
    /// cache does not keep them.
    pub fn needs_consumers(&self, decision: &Decision, policy: &Policy) -> bool {
        policy.consumer_aware
            && self.endpoint == Endpoint::Validate
            && decision.findings.iter().any(|f| match f.rule {
                RuleId::ExternalnameIp | RuleId::HeadlessPortRemap => f.action == Action::Deny,
                RuleId::ExternalnameHostMismatch => true,
                _ => false,
            })
    }

    /// The answer, judged against `view`.
    pub fn judge(&self, view: &dyn ClusterView, policy: &Policy) -> Decision {
        let decision = Decision::new(self.request, self.kind.as_str());
        let user = &self.request.user_info;
        if !policy.exempt_subjects.is_empty()
            || policy
                .namespaces
                .iter()
                .any(|o| !o.exempt_subjects.is_empty())
        {
            let namespace = self.namespace();
            let here = policy.for_namespace(namespace, view.namespace_labels(namespace).as_ref());
            if here.exempt_writer(&user.username, &user.groups).is_some() {
                return decision.skipped();
            }
        }
        match self.endpoint {
            Endpoint::Validate => validate(
                decision,
                self.request.operation,
                &self.object,
                self.old.as_deref(),
                view,
                policy,
            ),
            Endpoint::Mutate => {
                let m = mutation::mutate(&self.object, view, policy);
                let mut decision = decision;
                decision.warnings = m.warnings.iter().map(|w| warning_line(w)).collect();
                decision.patch = m.patch;
                decision.verdict = if !decision.patch.0.is_empty() {
                    Verdict::Patched
                } else if !decision.warnings.is_empty() {
                    Verdict::Warned
                } else {
                    Verdict::Allowed
                };
                decision
            }
        }
    }
}

fn validate(
    mut decision: Decision,
    operation: Operation,
    object: &Object,
    old: Option<&Object>,
    view: &dyn ClusterView,
    policy: &Policy,
) -> Decision {
    let mut findings = match operation {
        Operation::Delete => {
            decision.warnings = delete_warnings(object, view, policy);
            decision.verdict = if decision.warnings.is_empty() {
                Verdict::Allowed
            } else {
                Verdict::Warned
            };
            return decision;
        }
        Operation::Create | Operation::Update | Operation::Connect => {
            judge(object, view, policy, Mode::Admission)
        }
    };
    // A person's write over what a controller maintains: a label or annotation changes
    // nothing the controller wrote, and is left alone; new addresses are theirs, and judged
    // as hand-written, with nothing of the controller's counted as an old mistake.
    let old = match old {
        Some(old) if written_by_controller(old, view) => {
            if same_endpoints(object, old) {
                decision.verdict = Verdict::Skipped;
                return decision;
            }
            None
        }
        other => other,
    };
    if operation == Operation::Create {
        // `kubectl apply` of a Service and its Endpoints sends the Service first: its
        // endpoints are milliseconds away, not missing.
        findings.retain(|f| f.rule != RuleId::ServiceNoEndpoints);
    }
    // A selector takes hand-written endpoints over on the write that adds it; a Service that
    // had one already changes nothing of that (and the webhook configurations' conditions do
    // not send it here).
    if old.is_some_and(has_selector) && has_selector(object) {
        findings.retain(|f| f.rule != RuleId::SelectorChange);
    }
    if let Some(old) = old {
        let before = judge(old, view, policy, Mode::Admission);
        for f in findings.iter_mut().filter(|f| f.action == Action::Deny) {
            // The same problem: same rule, same words (which name the offending value), wherever
            // it sits in the object.
            if before
                .iter()
                .any(|b| b.rule == f.rule && b.message == f.message)
            {
                f.action = Action::Warn;
                // First, so that a cut warning still says why it is not a denial.
                f.message
                    .insert_str(0, "already so before this update, so warned, not denied: ");
            }
        }
    }
    settle(decision, findings)
}

/// A Service with a non-empty selector.
fn has_selector(object: &Object) -> bool {
    matches!(object, Object::Service(s) if s.spec.as_ref().and_then(|spec| spec.selector.as_ref()).is_some_and(|sel| !sel.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ManifestView, NoClusterView};
    use crate::rules::testing::objects;
    use base64::Engine;

    fn review(kind: (&str, &str), operation: &str, object: &str, old: Option<&str>) -> Vec<u8> {
        let old = old.unwrap_or("null");
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u-1","kind":{{"group":"{}","version":"v1","kind":"{}"}},"resource":{{"group":"","version":"v1","resource":"x"}},"namespace":"default","operation":"{operation}","userInfo":{{"username":"alice"}},"object":{object},"oldObject":{old}}}}}"#,
            kind.0, kind.1
        )
        .into_bytes()
    }

    const SERVICE: (&str, &str) = ("", "Service");
    const ENDPOINTS: (&str, &str) = ("", "Endpoints");

    const EXTERNAL_IP: &str = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"ext-ip","namespace":"default"},"spec":{"type":"ExternalName","externalName":"192.168.1.10"}}"#;
    const MYSQL_EP: &str = r#"{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"mysql-ep","namespace":"default"},"subsets":[{"addresses":[{"ip":"114.32.146.154"}],"ports":[{"name":"mysql","port":3306}]}]}"#;

    fn answer(decision: &Decision) -> serde_json::Value {
        serde_json::from_slice(&decision.to_json().unwrap()).unwrap()
    }

    #[test]
    fn the_kind_may_come_after_the_object_and_a_controllers_object_is_never_read() {
        let late_kind = String::from_utf8(review(SERVICE, "CREATE", EXTERNAL_IP, None))
            .unwrap()
            .replace(
                r#""kind":{"group":"","version":"v1","kind":"Service"},"#,
                "",
            )
            .replace(
                r#""oldObject":null"#,
                r#""oldObject":null,"kind":{"group":"","version":"v1","kind":"Service"}"#,
            );
        let request = parse(late_kind.as_bytes()).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!(d.verdict, Verdict::Denied);
        // An object that is no Endpoints at all: a controller's write is skipped unread.
        let controller = String::from_utf8(review(ENDPOINTS, "UPDATE", "[1,2]", Some("[3]")))
            .unwrap()
            .replace(
                "alice",
                "system:serviceaccount:kube-system:endpoint-controller",
            );
        let request = parse(controller.as_bytes()).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!(d.verdict, Verdict::Skipped);
    }

    #[test]
    fn a_review_with_a_field_twice_is_refused_as_before() {
        let body = String::from_utf8(review(SERVICE, "CREATE", EXTERNAL_IP, None))
            .unwrap()
            .replace(
                r#""oldObject":null"#,
                &format!(r#""oldObject":null,"object":{EXTERNAL_IP}"#),
            );
        let e = parse(body.as_bytes()).unwrap_err();
        assert_eq!(e.uid.as_deref(), Some("u-1"));
        assert!(
            e.message.contains("duplicate field `object`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_denial_echoes_the_uid_with_403_forbidden_and_one_line_per_denying_finding() {
        let request = parse(&review(SERVICE, "CREATE", EXTERNAL_IP, None)).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        let json = answer(&d);
        let response = &json["response"];
        assert_eq!(response["uid"], "u-1");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        assert_eq!(response["status"]["reason"], "Forbidden");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "[externalname-ip] Service default/ext-ip spec.externalName: \"192.168.1.10\" is an IP address"
            ),
            "{message}"
        );
        assert_eq!(message.lines().count(), 1);
        assert_eq!(
            response["auditAnnotations"]["findings"],
            "externalname-ip=deny@spec.externalName"
        );
        assert_eq!(json["apiVersion"], API_VERSION);
        assert_eq!(json["kind"], "AdmissionReview");
    }

    #[test]
    fn without_a_cluster_view_the_orphaned_endpoints_is_allowed() {
        let request = parse(&review(ENDPOINTS, "CREATE", MYSQL_EP, None)).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert!(d.allowed, "{d:#?}");
    }

    #[test]
    fn with_the_service_in_view_the_mysql_ep_is_denied_for_both_rules() {
        let (_, view) = objects(crate::rules::testing::MYSQL_PAIR);
        let request = parse(&review(ENDPOINTS, "CREATE", MYSQL_EP, None)).unwrap();
        let d = decide(&request, &view, &Policy::embedded(), Endpoint::Validate);
        assert_eq!(d.verdict, Verdict::Denied);
        assert_eq!(
            d.rule_ids(),
            vec!["endpoints-orphaned", "port-name-mismatch"]
        );
        let message = d.status.unwrap().message;
        assert_eq!(message.lines().count(), 2, "{message}");
    }

    #[test]
    fn an_update_that_keeps_an_existing_problem_is_warned_not_denied() {
        let changed = EXTERNAL_IP.replace(
            r#""name":"ext-ip","#,
            r#""name":"ext-ip","labels":{"a":"b"},"#,
        );
        let request = parse(&review(SERVICE, "UPDATE", &changed, Some(EXTERNAL_IP))).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert!(d.allowed, "{d:#?}");
        assert_eq!(d.verdict, Verdict::Warned);
        assert_eq!(d.warnings.len(), 1);
        assert!(
            d.warnings[0].starts_with(
                "[externalname-ip] Service default/ext-ip spec.externalName: already so before this update, so warned, not denied: \"192.168.1.10\" is an IP address"
            ),
            "{}",
            d.warnings[0]
        );
    }

    #[test]
    fn an_update_that_swaps_one_bad_value_for_another_is_denied() {
        let other = EXTERNAL_IP.replace("192.168.1.10", "10.9.9.9");
        let request = parse(&review(SERVICE, "UPDATE", &other, Some(EXTERNAL_IP))).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!(d.verdict, Verdict::Denied, "{d:#?}");
    }

    const METADATA_EP: &str = r#"{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"cloud","namespace":"default","annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"2026-01-01T00:00:00Z"}},"subsets":[{"addresses":[{"ip":"100.100.100.200"}],"ports":[{"port":80}]}]}"#;

    #[test]
    fn the_controllers_markers_on_a_new_object_do_not_exempt_it() {
        let request = parse(&review(ENDPOINTS, "CREATE", METADATA_EP, None)).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!(d.verdict, Verdict::Denied, "{d:#?}");
        assert_eq!(d.rule_ids(), vec!["target-disallowed"]);
    }

    /// `review` with another user: `username` and `groups` (JSON array text).
    fn review_by(username: &str, groups: &str, object: &str) -> Vec<u8> {
        String::from_utf8(review(ENDPOINTS, "CREATE", object, None))
            .unwrap()
            .replace(
                r#""userInfo":{"username":"alice"}"#,
                &format!(r#""userInfo":{{"username":"{username}","groups":{groups}}}"#),
            )
            .into_bytes()
    }

    #[test]
    fn writes_by_an_exempt_subject_are_neither_judged_nor_patched() {
        let policy = Policy::from_yaml(
            "exemptSubjects:\n  - {kind: ServiceAccount, namespace: databases, name: patroni}\n  - {kind: Group, name: 'platform:mirrors'}\nrequiredMetadata:\n  labels: [{key: owner, value: platform}]\n",
            "p.yaml",
        )
        .unwrap();
        for (user, groups) in [
            ("system:serviceaccount:databases:patroni", "[]"),
            (
                "mirror-bot",
                r#"["system:authenticated","platform:mirrors"]"#,
            ),
        ] {
            let request = parse(&review_by(user, groups, METADATA_EP)).unwrap();
            for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
                let d = decide(&request, &NoClusterView, &policy, endpoint);
                assert_eq!((d.allowed, d.verdict), (true, Verdict::Skipped), "{user}");
                assert!(d.patch.0.is_empty());
            }
        }
        // The same write by anyone else is judged; an account of the same name elsewhere too.
        for user in ["alice", "system:serviceaccount:default:patroni"] {
            let request = parse(&review_by(user, "[]", METADATA_EP)).unwrap();
            let d = decide(&request, &NoClusterView, &policy, Endpoint::Validate);
            assert_eq!(d.verdict, Verdict::Denied, "{user}");
        }
    }

    #[test]
    fn an_override_exempts_a_subject_only_in_the_namespaces_it_selects() {
        let policy = Policy::from_yaml(
            "namespaces:\n  - names: [databases]\n    exemptSubjects: [{kind: User, name: bob}]\n",
            "p.yaml",
        )
        .unwrap();
        let in_default = parse(&review_by("bob", "[]", METADATA_EP)).unwrap();
        let d = decide(&in_default, &NoClusterView, &policy, Endpoint::Validate);
        assert_eq!(d.verdict, Verdict::Denied);
        let elsewhere = String::from_utf8(review_by(
            "bob",
            "[]",
            &METADATA_EP.replace("\"default\"", "\"databases\""),
        ))
        .unwrap()
        .replace(r#""namespace":"default""#, r#""namespace":"databases""#);
        let in_databases = parse(elsewhere.as_bytes()).unwrap();
        let d = decide(&in_databases, &NoClusterView, &policy, Endpoint::Validate);
        assert_eq!(d.verdict, Verdict::Skipped);
    }

    #[test]
    fn a_persons_update_of_the_controllers_endpoints_is_judged_only_when_it_changes_addresses() {
        let (_, view) = objects(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
        );
        let controllers = r#"{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"web","namespace":"default","annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"2026-01-01T00:00:00Z"}},"subsets":[{"addresses":[{"ip":"10.244.0.7"}],"ports":[{"port":80}]}]}"#;
        // `kubectl annotate`: the controller's addresses stay, nothing to judge.
        let annotated =
            controllers.replace(r#""annotations":{"#, r#""annotations":{"team":"web","#);
        let request = parse(&review(ENDPOINTS, "UPDATE", &annotated, Some(controllers))).unwrap();
        let d = decide(&request, &view, &Policy::embedded(), Endpoint::Validate);
        assert_eq!((d.allowed, d.verdict), (true, Verdict::Skipped), "{d:#?}");
        // `kubectl apply` of hand-written addresses over them: denied, not excused as old.
        let replaced = controllers.replace("10.244.0.7", "203.0.113.9");
        let request = parse(&review(ENDPOINTS, "UPDATE", &replaced, Some(controllers))).unwrap();
        let d = decide(&request, &view, &Policy::embedded(), Endpoint::Validate);
        assert_eq!(d.verdict, Verdict::Denied, "{d:#?}");
        assert_eq!(d.rule_ids(), vec!["endpoints-overwritten"]);
    }

    #[test]
    fn an_update_that_keeps_the_controllers_markers_is_judged_like_any_other() {
        // Created clean with a copied controller annotation, then patched to the metadata
        // server: only the request's user could say the control plane writes.
        let clean = METADATA_EP.replace("100.100.100.200", "11.11.11.11");
        let request = parse(&review(ENDPOINTS, "UPDATE", METADATA_EP, Some(&clean))).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!(d.verdict, Verdict::Denied, "{d:#?}");
        assert_eq!(d.rule_ids(), vec!["target-disallowed"]);
    }

    #[test]
    fn only_the_controller_accounts_of_kube_system_are_trusted() {
        for (user, trusted) in [
            (
                "system:serviceaccount:kube-system:endpoint-controller",
                true,
            ),
            (
                "system:serviceaccount:kube-system:endpointslicemirroring-controller",
                true,
            ),
            (
                "system:serviceaccount:kube-system:generic-garbage-collector",
                true,
            ),
            ("system:kube-controller-manager", true),
            ("system:node:worker-1", true),
            (
                "system:serviceaccount:kube-system:helm-install-traefik",
                false,
            ),
            ("system:serviceaccount:default:endpoint-controller", false),
            ("system:admin", false),
            ("alice", false),
        ] {
            assert_eq!(is_control_plane_user(user), trusted, "{user}");
        }
    }

    #[test]
    fn a_subresource_and_a_mutating_delete_are_skipped() {
        let body = String::from_utf8(review(SERVICE, "UPDATE", EXTERNAL_IP, Some(EXTERNAL_IP)))
            .unwrap()
            .replace(
                r#""namespace":"default","#,
                r#""namespace":"default","subResource":"status","#,
            );
        let d = decide(
            &parse(body.as_bytes()).unwrap(),
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!(d.verdict, Verdict::Skipped);
        let body = review(SERVICE, "DELETE", "null", None);
        let d = decide(
            &parse(&body).unwrap(),
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Mutate,
        );
        assert_eq!((d.allowed, d.verdict), (true, Verdict::Skipped));
    }

    #[test]
    fn a_delete_without_its_old_object_is_allowed_with_a_warning() {
        let body = review(SERVICE, "DELETE", "null", None);
        let d = decide(
            &parse(&body).unwrap(),
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert!(d.allowed);
        assert_eq!(
            d.warnings,
            vec![
                "extsvc-guard cannot judge this DELETE of a Service: request.oldObject is missing"
            ]
        );
    }

    #[test]
    fn unconfirmed_cross_object_denials_become_warnings_and_single_object_ones_stay() {
        let (_, view) = objects(
            "apiVersion: v1\nkind: Service\nmetadata: {name: mysql-svc}\nspec: {clusterIP: None, ports: [{name: default-ep, port: 3306}]}\n",
        );
        let endpoints = MYSQL_EP.replace("114.32.146.154", "169.254.169.254");
        let request = parse(&review(ENDPOINTS, "CREATE", &endpoints, None)).unwrap();
        let policy = Policy::embedded();
        let d = decide(&request, &view, &policy, Endpoint::Validate);
        let alone = decide(&request, &NoClusterView, &policy, Endpoint::Validate);
        assert_eq!(
            d.rule_ids(),
            vec![
                "endpoints-orphaned",
                "port-name-mismatch",
                "target-disallowed"
            ]
        );
        assert_eq!(cross_object_findings(&d, &alone), 2);
        let d = downgrade_cross_object(d, &alone, "the API server did not answer");
        assert_eq!(
            d.verdict,
            Verdict::Denied,
            "the metadata address is denied alone"
        );
        let message = d.status.clone().unwrap().message;
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.starts_with("[target-disallowed]"), "{message}");
        assert_eq!(d.warnings.len(), 2);
        assert!(
            d.warnings[0].starts_with(
                "[endpoints-orphaned] Endpoints default/mysql-ep metadata.name: not denied because the API server did not answer: no Service named"
            ),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn a_denial_with_thousands_of_findings_shows_twenty_lines_and_counts_the_rest() {
        let addresses: Vec<String> = (0..3000)
            .map(|i| format!(r#"{{"ip":"169.254.{}.{}"}}"#, i / 250, i % 250 + 1))
            .collect();
        let endpoints = MYSQL_EP.replace(
            r#"[{"ip":"114.32.146.154"}]"#,
            &format!("[{}]", addresses.join(",")),
        );
        let request = parse(&review(ENDPOINTS, "CREATE", &endpoints, None)).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!(
            d.findings.len(),
            3000,
            "every finding is kept for the metrics"
        );
        let message = d.status.clone().unwrap().message;
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines.len(), 21, "{message}");
        assert!(
            lines[0].starts_with(
                "[target-disallowed] Endpoints default/mysql-ep subsets[0].addresses[0].ip"
            ),
            "{}",
            lines[0]
        );
        assert_eq!(
            lines[20],
            "… and 2980 more denials (target-disallowed ×2980)"
        );
        let audit = d.audit.clone().unwrap();
        assert_eq!(audit.split("; ").count(), 51, "{audit}");
        assert!(audit.ends_with("; +2950 more"), "{audit}");
        assert!(
            d.to_json().unwrap().len() < 16 * 1024,
            "the answer stays small"
        );
    }

    #[test]
    fn an_update_that_introduces_a_problem_is_denied() {
        let good = EXTERNAL_IP.replace("192.168.1.10", "db.example.com");
        let request = parse(&review(SERVICE, "UPDATE", EXTERNAL_IP, Some(&good))).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!(d.verdict, Verdict::Denied);
    }

    #[test]
    fn deleting_a_selectorless_service_warns_about_the_hand_written_slices_left_behind() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{port: 5432}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: db-1, labels: {kubernetes.io/service-name: db}}\naddressType: IPv4\nendpoints: [{addresses: [203.0.113.7]}]\nports: [{port: 5432}]\n";
        let (_, view) = objects(yaml);
        let service = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"db","namespace":"default"},"spec":{"ports":[{"port":5432}]}}"#;
        let body = review(SERVICE, "DELETE", "null", Some(service));
        let d = decide(
            &parse(&body).unwrap(),
            &view,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert!(d.allowed);
        assert_eq!(
            d.warnings,
            vec![
                "Service default/db is deleted but its hand-written EndpointSlice db-1 stays behind, unused; delete it: kubectl delete endpointslice -n default db-1"
            ]
        );
    }

    #[test]
    fn control_plane_writers_and_other_kinds_are_skipped_unjudged() {
        let body = String::from_utf8(review(SERVICE, "CREATE", EXTERNAL_IP, None))
            .unwrap()
            .replace(
                "alice",
                "system:serviceaccount:kube-system:endpoint-controller",
            );
        let d = decide(
            &parse(body.as_bytes()).unwrap(),
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!((d.allowed, d.verdict), (true, Verdict::Skipped));
        let pod = review(("", "Pod"), "CREATE", r#"{"kind":"Pod"}"#, None);
        let d = decide(
            &parse(&pod).unwrap(),
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!(
            (d.allowed, d.verdict, d.kind),
            (true, Verdict::Skipped, "other")
        );
    }

    #[test]
    fn an_object_that_does_not_match_its_kind_is_answered_with_a_400_naming_the_field() {
        let bad = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"},"spec":{"ports":"3306"}}"#;
        let expected =
            "extsvc-guard cannot read request.object as a Service: invalid type: string \"3306\"";
        // Read in place, as the API server orders a review, or (below) after the review.
        let d = decide(
            &parse(&review(SERVICE, "CREATE", bad, None)).unwrap(),
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        let status = d.status.clone().unwrap();
        assert_eq!((d.allowed, status.code), (false, 400));
        assert!(status.message.starts_with(expected), "{}", status.message);
        let late_kind = String::from_utf8(review(SERVICE, "CREATE", bad, None))
            .unwrap()
            .replace(
                r#""kind":{"group":"","version":"v1","kind":"Service"},"#,
                "",
            )
            .replace(
                r#""oldObject":null"#,
                r#""oldObject":null,"kind":{"group":"","version":"v1","kind":"Service"}"#,
            );
        let d = decide(
            &parse(late_kind.as_bytes()).unwrap(),
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        let status = d.status.clone().unwrap();
        assert_eq!((d.allowed, status.code), (false, 400));
        assert!(status.message.starts_with(expected), "{}", status.message);
    }

    #[test]
    fn a_delete_whose_old_object_cannot_be_read_is_allowed_with_a_warning() {
        let bad = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"},"spec":{"ports":"3306"}}"#;
        let d = decide(
            &parse(&review(SERVICE, "DELETE", "null", Some(bad))).unwrap(),
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!((d.allowed, d.verdict), (true, Verdict::Warned));
        assert!(
            d.warnings[0].contains("cannot read request.oldObject as a Service"),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn malformed_bodies_are_refused_with_the_uid_when_one_can_be_found() {
        let e = parse(b"{not json").unwrap_err();
        assert_eq!(e.uid, None);
        assert!(
            e.message.contains("not a valid AdmissionReview"),
            "{}",
            e.message
        );
        let e = parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-9","operation":"SMASH"}}"#).unwrap_err();
        assert_eq!(e.uid.as_deref(), Some("u-9"));
        let e = parse(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u-2","kind":{},"operation":"CREATE"}}"#).unwrap_err();
        assert!(
            e.message.contains("admissionReviewVersions: [v1]"),
            "{}",
            e.message
        );
        let e =
            parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).unwrap_err();
        assert_eq!(e.message, "the AdmissionReview has no request");
    }

    #[test]
    fn the_mutate_answer_carries_a_base64_json_patch() {
        let request = parse(&review(
            SERVICE,
            "CREATE",
            EXTERNAL_IP
                .replace("192.168.1.10", "db.example.com")
                .as_str(),
            None,
        ))
        .unwrap();
        let shape = Policy::from_yaml("shapeMetadata: true\n", "policy.yaml").unwrap();
        let d = decide(&request, &NoClusterView, &shape, Endpoint::Mutate);
        let json = answer(&d);
        assert_eq!(json["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(json["response"]["patch"].as_str().unwrap())
            .unwrap();
        let ops: serde_json::Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(ops[1]["path"], "/metadata/labels/extsvc-guard.io~1shape");
        assert_eq!(d.verdict, Verdict::Patched);
    }

    #[test]
    fn warnings_have_no_control_characters_and_are_cut_at_600_characters() {
        let line = warning_line(&format!("a\nb\t{}", "x".repeat(1000)));
        assert!(!line.chars().any(char::is_control));
        assert_eq!(line.chars().count(), 600);
        assert!(line.starts_with("a b "));
        assert!(line.ends_with('…'));
    }

    #[test]
    fn many_long_warnings_are_cut_short_here_before_the_api_server_would() {
        // Sixteen addresses with leading zeros: 16 warnings of ~290 characters each.
        let addresses: Vec<String> = (1..=16)
            .map(|i| format!(r#"{{"ip":"203.0.113.0{i:02}"}}"#))
            .collect();
        let endpoints = format!(
            r#"{{"apiVersion":"v1","kind":"Endpoints","metadata":{{"name":"db","namespace":"default"}},"subsets":[{{"addresses":[{}],"ports":[{{"port":80}}]}}]}}"#,
            addresses.join(",")
        );
        let request = parse(&review(ENDPOINTS, "CREATE", &endpoints, None)).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!(d.warnings.len(), 16, "{d:#?}");
        assert!(
            d.warnings.iter().all(|w| w.chars().count() <= 250),
            "{d:#?}"
        );
        assert!(d.warnings.iter().all(|w| w.ends_with('…')), "{d:#?}");
        // One warning alone is whole.
        let one = endpoints
            .replace(&addresses[1..].join(",").to_string(), "")
            .replace(",]", "]");
        let request = parse(&review(ENDPOINTS, "CREATE", &one, None)).unwrap();
        let d = decide(
            &request,
            &NoClusterView,
            &Policy::embedded(),
            Endpoint::Validate,
        );
        assert_eq!(d.warnings.len(), 1, "{d:#?}");
        assert!(!d.warnings[0].ends_with('…'), "{d:#?}");
    }

    #[test]
    fn a_view_with_the_namespace_is_used_for_namespace_policy() {
        let mut view = ManifestView::new();
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_str(r#"{"metadata":{"name":"default","labels":{"team":"a"}}}"#)
                .unwrap();
        view.insert_namespace(&ns);
        let request = parse(&review(SERVICE, "CREATE", EXTERNAL_IP, None)).unwrap();
        let policy = Policy::from_yaml(
            "namespaces:\n  - selector: {matchLabels: {team: a}}\n    rules: {externalname-ip: warn}\n",
            "p.yaml",
        )
        .unwrap();
        let d = decide(&request, &view, &policy, Endpoint::Validate);
        assert_eq!(d.verdict, Verdict::Warned);
    }
}
