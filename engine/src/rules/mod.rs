//! The engine: every rule of the catalogue, each a pure function from the object under
//! judgement, the cluster view and the policy to findings. Find a rule by its id: the file
//! is named after it (`endpoints-orphaned` → `endpoints_orphaned.rs`).

use std::cell::OnceCell;
use std::collections::BTreeMap;

use crate::cluster::consumers::EXTERNAL_DNS_PREFIX;
use crate::cluster::{ClusterView, EndpointPort, ServiceInfo, written_by_controller};
use crate::finding::{Action, Finding, Severity, field_key};
use crate::object::{Kind, Object, SERVICE_NAME_LABEL};
use crate::policy::{NamespacePolicy, Policy, RuleAction};

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Who is judging: decides which of two paired objects carries a cross-object finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One object under review (admission); its partners are already in the cluster.
    Admission,
    /// A whole set judged at once (`check`, `scan`): each problem is reported once,
    /// on the Endpoints/EndpointSlice side.
    Set,
}

/// What a rule sees besides the object itself.
pub struct Context<'a> {
    pub view: &'a dyn ClusterView,
    pub policy: &'a NamespacePolicy<'a>,
    pub namespace: &'a str,
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    pub mode: Mode,
    derived: Derived<'a>,
}

/// What several endpoints rules derive from the object under judgement, worked out once
/// per judgement instead of once per rule: the Service lookups and the did-you-mean search
/// were most of the cost of judging a denied Endpoints.
struct Derived<'a> {
    object: &'a Object,
    subject: OnceCell<Option<EndpointsSubject>>,
    likely: OnceCell<Vec<ServiceInfo>>,
    paired: OnceCell<Option<PairedService>>,
}

impl<'a> Context<'a> {
    /// The object under judgement seen as endpoints: `None` for a Service.
    pub fn endpoints_subject(&self) -> Option<&EndpointsSubject> {
        self.derived
            .subject
            .get_or_init(|| EndpointsSubject::of(self.derived.object))
            .as_ref()
    }

    /// The Services the subject was likely meant for, by the Service name it gives (see
    /// `endpoints_orphaned::likely_services`); empty for a Service or an unlabeled slice.
    pub fn likely_services(&self) -> &[ServiceInfo] {
        self.derived.likely.get_or_init(|| {
            let Some(subject) = self.endpoints_subject() else {
                return Vec::new();
            };
            match subject.service_name.as_deref() {
                Some(name) => endpoints_orphaned::likely_services(name, &subject.ports, self),
                None => Vec::new(),
            }
        })
    }

    /// The Service whose hand-written endpoints the subject provides, when that Service
    /// takes hand-written endpoints at all (no selector, not ExternalName): its own, or —
    /// when it has none — the Service it was most likely meant for.
    pub fn paired_service(&self) -> Option<&PairedService> {
        self.derived
            .paired
            .get_or_init(|| {
                let name = self.endpoints_subject()?.service_name.as_deref()?;
                match self.view.service(self.namespace, name) {
                    Some(service) => {
                        service
                            .takes_hand_written_endpoints()
                            .then_some(PairedService {
                                service,
                                likely: false,
                            })
                    }
                    None => self.likely_services().first().map(|service| PairedService {
                        service: service.clone(),
                        likely: true,
                    }),
                }
            })
            .as_ref()
    }
}

/// A finding before the policy decides its action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub severity: Severity,
    pub field: String,
    pub message: String,
}

impl Draft {
    pub fn violation(field: impl Into<String>, message: impl Into<String>) -> Draft {
        Draft {
            severity: Severity::Violation,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn advisory(field: impl Into<String>, message: impl Into<String>) -> Draft {
        Draft {
            severity: Severity::Advisory,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn note(field: impl Into<String>, message: impl Into<String>) -> Draft {
        Draft {
            severity: Severity::Note,
            field: field.into(),
            message: message.into(),
        }
    }
}

type Rule = fn(&Object, &Context<'_>) -> Vec<Draft>;

/// Declares the catalogue from one line per rule: `Variant => module`. Each module declares
/// its `ID`, `SUMMARY`, `DEFAULT` action and `check`; everything else (the [`RuleId`] enum,
/// its string form, the order findings are reported in) follows from this list.
macro_rules! catalogue {
    ($($variant:ident => $module:ident),+ $(,)?) => {
        $(pub mod $module;)+

        /// The stable rule ids of the catalogue. The string form is the contract: it appears
        /// in denials, JSON, SARIF and the policy file.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum RuleId {
            $($variant),+
        }

        impl RuleId {
            /// Every rule, in the order findings are reported.
            pub const ALL: &'static [RuleId] = &[$(RuleId::$variant),+];
            /// Every rule id's string form, in the same order.
            pub const NAMES: &'static [&'static str] = &[$($module::ID),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(RuleId::$variant => $module::ID),+
                }
            }

            /// What a rule does when the policy does not say otherwise.
            pub fn default_action(self) -> RuleAction {
                match self {
                    $(RuleId::$variant => $module::DEFAULT),+
                }
            }

            /// One line on what the rule catches (SARIF rule descriptors, listings).
            pub fn summary(self) -> &'static str {
                match self {
                    $(RuleId::$variant => $module::SUMMARY),+
                }
            }

            fn check(self) -> Rule {
                match self {
                    $(RuleId::$variant => $module::check),+
                }
            }
        }
    };
}

// The catalogue, in the order findings are reported. A new rule is one file in this
// directory (named after its id) and one line here.
catalogue! {
    EndpointsOrphaned => endpoints_orphaned,
    EndpointsliceUnlabeled => endpointslice_unlabeled,
    EndpointsOverwritten => endpoints_overwritten,
    ServiceNoEndpoints => service_no_endpoints,
    PortNameMismatch => port_name_mismatch,
    ExternalnameIp => externalname_ip,
    ExternalnameInvalid => externalname_invalid,
    ExternalnameHostMismatch => externalname_host_mismatch,
    ExternalnameTargetMissing => externalname_target_missing,
    ExternalnameCrossNamespace => externalname_cross_namespace,
    HeadlessPortRemap => headless_port_remap,
    SelectorChange => selector_change,
    AddressInvalid => address_invalid,
    TargetDisallowed => target_disallowed,
    AddressNoncanonical => address_noncanonical,
    RequiredMetadata => required_metadata,
}

impl RuleId {
    /// The rule whose id is `id`.
    pub fn from_id(id: &str) -> Option<RuleId> {
        RuleId::ALL.iter().copied().find(|r| r.as_str() == id)
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for RuleId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for RuleId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RuleId, D::Error> {
        struct Id;
        impl serde::de::Visitor<'_> for Id {
            type Value = RuleId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a rule id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RuleId, E> {
                RuleId::from_id(v).ok_or_else(|| E::unknown_variant(v, RuleId::NAMES))
            }
        }
        deserializer.deserialize_str(Id)
    }
}

/// Why an object is not judged at all, when it is not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unjudged {
    /// In one of the policy's `exemptNamespaces`.
    ExemptNamespace(String),
    /// In a set: a controller maintains it, as the set confirms (see
    /// [`written_by_controller`]).
    MaintainedByController,
}

impl std::fmt::Display for Unjudged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unjudged::ExemptNamespace(ns) => write!(f, "in exempt namespace {ns}"),
            Unjudged::MaintainedByController => {
                f.write_str("maintained by a controller for a Service in the set")
            }
        }
    }
}

/// Whether [`judge`] leaves `object` alone, and why.
pub fn unjudged(
    object: &Object,
    view: &dyn ClusterView,
    policy: &Policy,
    mode: Mode,
) -> Option<Unjudged> {
    let namespace = object.namespace();
    if policy.exempt_namespaces.iter().any(|n| n == namespace) {
        return Some(Unjudged::ExemptNamespace(namespace.to_owned()));
    }
    (mode == Mode::Set && written_by_controller(object, view))
        .then_some(Unjudged::MaintainedByController)
}

/// Judges one object. Objects in exempt namespaces get no findings; rules the policy turns
/// off do not run. In a set, objects the control plane wrote (by their content) get none
/// either; in admission the caller decides that from who is writing, because anyone can
/// put the controllers' markers on a new object.
pub fn judge(object: &Object, view: &dyn ClusterView, policy: &Policy, mode: Mode) -> Vec<Finding> {
    if unjudged(object, view, policy, mode).is_some() {
        return Vec::new();
    }
    let namespace = object.namespace();
    let labels = view.namespace_labels(namespace);
    let ns_policy = policy.for_namespace(namespace, labels.as_ref());
    let cx = Context {
        view,
        policy: &ns_policy,
        namespace,
        namespace_labels: labels.as_ref(),
        mode,
        derived: Derived {
            object,
            subject: OnceCell::new(),
            likely: OnceCell::new(),
            paired: OnceCell::new(),
        },
    };
    let reference = object.reference();
    let mut findings = Vec::new();
    for &rule in RuleId::ALL {
        let Some(policy_action) = ns_policy.action(rule) else {
            continue;
        };
        for draft in rule.check()(object, &cx) {
            let action = match draft.severity {
                Severity::Violation => policy_action,
                Severity::Advisory => policy_action.min(Action::Warn),
                Severity::Note => Action::Info,
            };
            findings.push(Finding {
                rule,
                action,
                object: reference.clone(),
                field: draft.field,
                message: draft.message,
            });
        }
    }
    findings
}

/// One port of the Endpoints/EndpointSlice under judgement, with where it is written.
#[derive(Debug, Clone)]
pub struct SubjectPort {
    pub field: String,
    pub port: EndpointPort,
}

/// An Endpoints or EndpointSlice under judgement, seen the same way by every rule.
#[derive(Debug, Clone)]
pub struct EndpointsSubject {
    pub kind: Kind,
    pub name: String,
    /// The Service it is for: an Endpoints' own name, an EndpointSlice's
    /// `kubernetes.io/service-name` label.
    pub service_name: Option<String>,
    pub ports: Vec<SubjectPort>,
}

impl EndpointsSubject {
    pub fn of(object: &Object) -> Option<EndpointsSubject> {
        match object {
            Object::Service(_) => None,
            Object::Endpoints(e) => {
                let mut ports = Vec::new();
                for (i, subset) in e.subsets.iter().flatten().enumerate() {
                    for (j, p) in subset.ports.iter().flatten().enumerate() {
                        ports.push(SubjectPort {
                            field: format!("subsets[{i}].ports[{j}]"),
                            port: EndpointPort::new(p.name.as_ref(), p.protocol.as_ref(), p.port),
                        });
                    }
                }
                let name = e.metadata.name.clone().unwrap_or_default();
                Some(EndpointsSubject {
                    kind: Kind::Endpoints,
                    service_name: Some(name.clone()),
                    name,
                    ports,
                })
            }
            Object::EndpointSlice(s) => {
                let ports = s
                    .ports
                    .iter()
                    .flatten()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        Some(SubjectPort {
                            field: format!("ports[{i}]"),
                            port: EndpointPort::new(p.name.as_ref(), p.protocol.as_ref(), p.port?),
                        })
                    })
                    .collect();
                Some(EndpointsSubject {
                    kind: Kind::EndpointSlice,
                    name: object.name(),
                    service_name: object
                        .label(SERVICE_NAME_LABEL)
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned),
                    ports,
                })
            }
        }
    }

    /// The field that ties it to its Service: what to change to pair it with another one.
    pub fn pairing_field(&self) -> String {
        match self.kind {
            Kind::EndpointSlice => field_key("metadata.labels", SERVICE_NAME_LABEL),
            _ => "metadata.name".to_owned(),
        }
    }

    /// "this Endpoints" / "this EndpointSlice".
    pub fn this(&self) -> String {
        format!("this {}", self.kind)
    }
}

/// The Service an Endpoints/EndpointSlice is compared with: its own, or — when it has
/// none — the Service it was most likely meant for.
pub struct PairedService {
    pub service: ServiceInfo,
    pub likely: bool,
}

/// An Endpoints or EndpointSlice that gives a Service its backends by hand.
#[derive(Debug, Clone)]
pub struct HandWritten {
    pub kind: Kind,
    pub name: String,
    pub ports: Vec<EndpointPort>,
    pub addresses: Vec<String>,
}

impl HandWritten {
    /// "Endpoints db" / "EndpointSlice db-1".
    pub fn describe(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

/// The endpoints that feed `service` (as the judgement sees it: the object under review, or
/// the paired Service of the view) and that no controller maintains: its Endpoints and its
/// EndpointSlices, hand-written or frozen, whatever they say about their writer. A mirrored
/// slice only copies its Endpoints and is left out while they exist.
pub fn hand_written_endpoints(cx: &Context<'_>, service: &ServiceInfo) -> Vec<HandWritten> {
    let shape = Some(service.shape);
    let endpoints = cx.view.endpoints(cx.namespace, &service.name);
    let endpoints_exist = endpoints.is_some();
    let mut found: Vec<HandWritten> = endpoints
        .filter(|e| !e.maintained(shape))
        .map(|e| HandWritten {
            kind: Kind::Endpoints,
            name: e.name,
            ports: e.ports,
            addresses: e.addresses,
        })
        .into_iter()
        .collect();
    found.extend(
        cx.view
            .slices_for(cx.namespace, &service.name)
            .into_iter()
            .filter(|s| !s.maintained(shape, endpoints_exist))
            .map(|s| HandWritten {
                kind: Kind::EndpointSlice,
                name: s.name,
                ports: s.ports,
                addresses: s.addresses,
            }),
    );
    found
}

/// Who besides in-cluster DNS clients sends traffic to the Service `service`, for a
/// message: external-dns, by the Service's own `annotations` (when given), and the
/// Ingresses and Gateway API routes the view knows to name it as a backend. Empty when the
/// policy is not consumer-aware.
pub fn other_consumers(
    cx: &Context<'_>,
    service: &str,
    annotations: Option<&BTreeMap<String, String>>,
) -> Vec<String> {
    if !cx.policy.policy.consumer_aware {
        return Vec::new();
    }
    let mut found = Vec::new();
    if let Some(key) = annotations
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| k.starts_with(EXTERNAL_DNS_PREFIX))
    {
        found.push(format!("external-dns (annotation {key})"));
    }
    found.extend(
        cx.view
            .consumers_of(cx.namespace, service)
            .iter()
            .map(ToString::to_string),
    );
    found
}

/// How a port reads in messages: `"mysql"/TCP`, or `(unnamed)/TCP`.
pub fn port_label(name: &str, protocol: &str) -> String {
    if name.is_empty() {
        format!("(unnamed)/{protocol}")
    } else {
        format!("{name:?}/{protocol}")
    }
}

/// Joins names for a message: `a`, `a or b`, `a, b or c`.
pub fn either(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}
