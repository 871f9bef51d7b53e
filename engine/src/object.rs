//! The objects under judgement: typed k8s-openapi Service, Endpoints and discovery/v1
//! EndpointSlice, and the facts about them every rule needs.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that says which controller manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// `managed-by` value of the EndpointSlice controller (slices of Services with a selector).
pub const ENDPOINTSLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
/// `managed-by` value of the mirroring controller (slices copied from hand-written Endpoints).
pub const MIRRORING_CONTROLLER: &str = "endpointslicemirroring-controller.k8s.io";
/// Set by the endpoints controller on every Endpoints object it writes.
const ENDPOINTS_CONTROLLER_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The field manager of kube-controller-manager's writes.
const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// The namespace kubectl uses when a manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Service,
    Endpoints,
    EndpointSlice,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Service, Kind::Endpoints, Kind::EndpointSlice];

    /// The kind named `name` ("Service", "Endpoints", "EndpointSlice").
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which object a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// An object extsvc-guard judges.
// The variants differ in size, but objects are held one per manifest document and their
// contents live on the heap anyway: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Service(Service),
    Endpoints(Endpoints),
    EndpointSlice(EndpointSlice),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
        }
    }

    /// `metadata.namespace`, or `default` when absent, as kubectl does.
    pub fn namespace(&self) -> &str {
        namespace_of(self.metadata())
    }

    /// `metadata.name`, or `generateName` plus `*` for objects named by the server.
    pub fn name(&self) -> String {
        name_of(self.metadata())
    }

    pub fn reference(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind(),
            namespace: self.namespace().to_owned(),
            name: self.name(),
        }
    }

    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata().labels.as_ref()
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels().and_then(|l| l.get(key)).map(String::as_str)
    }

    /// Whether the object *says* a controller of the control plane wrote it: the endpoints
    /// controller's annotation or field manager on Endpoints, a controller's `managed-by`
    /// label with the matching owner reference on an EndpointSlice. Anyone can write these,
    /// so this proves nothing alone: see [`crate::cluster::written_by_controller`].
    pub fn claims_controller(&self) -> bool {
        match self {
            Object::Service(_) => false,
            Object::Endpoints(e) => endpoints_claim_controller(&e.metadata),
            Object::EndpointSlice(s) => slice_claimed_controller(&s.metadata).is_some(),
        }
    }
}

/// Whether two versions of an Endpoints or EndpointSlice send traffic to the same place for
/// the same Service: what kube-proxy reads is unchanged, only other metadata may differ.
pub fn same_endpoints(a: &Object, b: &Object) -> bool {
    match (a, b) {
        (Object::Endpoints(a), Object::Endpoints(b)) => {
            a.metadata.name == b.metadata.name && a.subsets == b.subsets
        }
        (Object::EndpointSlice(a), Object::EndpointSlice(b)) => {
            let labels = |s: &EndpointSlice| {
                [SERVICE_NAME_LABEL, MANAGED_BY_LABEL]
                    .map(|key| s.metadata.labels.as_ref().and_then(|l| l.get(key)).cloned())
            };
            a.address_type == b.address_type
                && a.endpoints == b.endpoints
                && a.ports == b.ports
                && labels(a) == labels(b)
        }
        _ => false,
    }
}

pub fn namespace_of(meta: &ObjectMeta) -> &str {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => DEFAULT_NAMESPACE,
    }
}

pub fn name_of(meta: &ObjectMeta) -> String {
    match (&meta.name, &meta.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(g)) if !g.is_empty() => format!("{g}*"),
        _ => String::new(),
    }
}

/// The endpoints controller marks every Endpoints it writes with its trigger-time
/// annotation, and its writes carry kube-controller-manager as field manager.
pub fn endpoints_claim_controller(meta: &ObjectMeta) -> bool {
    let annotated = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ENDPOINTS_CONTROLLER_ANNOTATION));
    let managed = meta.managed_fields.as_ref().is_some_and(|fields| {
        fields
            .iter()
            .any(|f| f.manager.as_deref() == Some(CONTROLLER_MANAGER))
    });
    annotated || managed
}

/// A controller of the control plane that writes EndpointSlices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceController {
    /// The EndpointSlice controller: slices of a Service with a selector, owned by it.
    EndpointSlice,
    /// The mirroring controller: copies of a selectorless Service's Endpoints, owned by them.
    Mirroring,
}

/// The controller an EndpointSlice says wrote it: its `managed-by` label names the
/// controller, and its controller owner reference is what that controller sets (its Service
/// for the EndpointSlice controller, the Endpoints it mirrors for the mirroring
/// controller), named after the slice's Service.
pub fn slice_claimed_controller(meta: &ObjectMeta) -> Option<SliceController> {
    let labels = meta.labels.as_ref()?;
    let (controller, owner_kind) = match labels.get(MANAGED_BY_LABEL).map(String::as_str) {
        Some(ENDPOINTSLICE_CONTROLLER) => (SliceController::EndpointSlice, "Service"),
        Some(MIRRORING_CONTROLLER) => (SliceController::Mirroring, "Endpoints"),
        _ => return None,
    };
    let service = labels.get(SERVICE_NAME_LABEL)?;
    let owned = meta
        .owner_references
        .as_ref()?
        .iter()
        .any(|r| r.kind == owner_kind && r.controller == Some(true) && &r.name == service);
    owned.then_some(controller)
}

/// How a Service reaches its backends — what decides which rules apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceShape {
    /// `type: ExternalName`: a DNS alias.
    ExternalName,
    /// No selector, a cluster IP: kube-proxy forwards to hand-written endpoints.
    IpMapping,
    /// No selector, `clusterIP: None`: DNS returns the hand-written endpoint IPs.
    HeadlessMapping,
    /// A selector: the control plane picks Pods. Not a Service that leaves the cluster.
    InCluster,
}

impl ServiceShape {
    pub fn of(service: &Service) -> ServiceShape {
        let Some(spec) = service.spec.as_ref() else {
            return ServiceShape::IpMapping;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            ServiceShape::ExternalName
        } else if spec.selector.as_ref().is_some_and(|s| !s.is_empty()) {
            ServiceShape::InCluster
        } else if is_headless(service) {
            ServiceShape::HeadlessMapping
        } else {
            ServiceShape::IpMapping
        }
    }
}

/// `clusterIP: None` (or the same in `clusterIPs`).
pub fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|spec| {
        spec.cluster_ip.as_deref() == Some("None")
            || spec
                .cluster_ips
                .as_ref()
                .is_some_and(|ips| ips.first().map(String::as_str) == Some("None"))
    })
}

/// A port protocol as kube-proxy sees it: absent means TCP.
pub fn protocol_or_tcp(protocol: Option<&String>) -> &str {
    match protocol {
        Some(p) if !p.is_empty() => p.as_str(),
        _ => "TCP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn service(spec: ServiceSpec) -> Service {
        Service {
            spec: Some(spec),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_namespace_means_default() {
        let svc = Object::Service(Service::default());
        assert_eq!(svc.namespace(), "default");
    }

    #[test]
    fn shapes_follow_type_selector_and_cluster_ip() {
        let ext = service(ServiceSpec {
            type_: Some("ExternalName".into()),
            ..Default::default()
        });
        assert_eq!(ServiceShape::of(&ext), ServiceShape::ExternalName);
        let headless = service(ServiceSpec {
            cluster_ip: Some("None".into()),
            ..Default::default()
        });
        assert_eq!(ServiceShape::of(&headless), ServiceShape::HeadlessMapping);
        let mapped = service(ServiceSpec::default());
        assert_eq!(ServiceShape::of(&mapped), ServiceShape::IpMapping);
        let selected = service(ServiceSpec {
            selector: Some([("app".to_owned(), "web".to_owned())].into()),
            ..Default::default()
        });
        assert_eq!(ServiceShape::of(&selected), ServiceShape::InCluster);
        let empty_selector = service(ServiceSpec {
            selector: Some(BTreeMap::new()),
            ..Default::default()
        });
        assert_eq!(ServiceShape::of(&empty_selector), ServiceShape::IpMapping);
    }

    #[test]
    fn a_slice_claims_a_controller_only_with_its_label_and_the_matching_owner() {
        let meta = |managed_by: &str, owner_kind: &str, owner: &str| ObjectMeta {
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_owned(), managed_by.to_owned()),
                    (SERVICE_NAME_LABEL.to_owned(), "db".to_owned()),
                ]
                .into(),
            ),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    kind: owner_kind.to_owned(),
                    name: owner.to_owned(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        assert_eq!(
            slice_claimed_controller(&meta(ENDPOINTSLICE_CONTROLLER, "Service", "db")),
            Some(SliceController::EndpointSlice)
        );
        assert_eq!(
            slice_claimed_controller(&meta(MIRRORING_CONTROLLER, "Endpoints", "db")),
            Some(SliceController::Mirroring)
        );
        // The label alone, the wrong owner kind, or an owner of another name: no claim.
        let mut label_only = meta(ENDPOINTSLICE_CONTROLLER, "Service", "db");
        label_only.owner_references = None;
        assert_eq!(slice_claimed_controller(&label_only), None);
        assert_eq!(
            slice_claimed_controller(&meta(MIRRORING_CONTROLLER, "Service", "db")),
            None
        );
        assert_eq!(
            slice_claimed_controller(&meta(ENDPOINTSLICE_CONTROLLER, "Service", "web")),
            None
        );
    }
}
