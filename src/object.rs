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

    /// True for objects the control plane wrote: Endpoints from the endpoints controller,
    /// EndpointSlices from the EndpointSlice or mirroring controllers. They are never
    /// judged as hand-written.
    pub fn is_control_plane_managed(&self) -> bool {
        match self {
            Object::Service(_) => false,
            Object::Endpoints(e) => endpoints_written_by_controller(&e.metadata),
            Object::EndpointSlice(s) => slice_managed_by_control_plane(&s.metadata),
        }
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
pub fn endpoints_written_by_controller(meta: &ObjectMeta) -> bool {
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

/// Mirrored slices are always the mirroring controller's. A slice that says it belongs to the
/// EndpointSlice controller is the controller's only when a Service owns it as controller:
/// a hand-written slice that merely claims the label is judged (see `endpoints-overwritten`).
pub fn slice_managed_by_control_plane(meta: &ObjectMeta) -> bool {
    let managed_by = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str);
    match managed_by {
        Some(MIRRORING_CONTROLLER) => true,
        Some(ENDPOINTSLICE_CONTROLLER) => meta.owner_references.as_ref().is_some_and(|refs| {
            refs.iter()
                .any(|r| r.kind == "Service" && r.controller == Some(true))
        }),
        _ => false,
    }
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
    fn a_slice_that_only_claims_the_controller_label_is_hand_written() {
        let meta = ObjectMeta {
            labels: Some(
                [(
                    MANAGED_BY_LABEL.to_owned(),
                    ENDPOINTSLICE_CONTROLLER.to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        };
        assert!(!slice_managed_by_control_plane(&meta));
        let mirrored = ObjectMeta {
            labels: Some([(MANAGED_BY_LABEL.to_owned(), MIRRORING_CONTROLLER.to_owned())].into()),
            ..Default::default()
        };
        assert!(slice_managed_by_control_plane(&mirrored));
    }
}
