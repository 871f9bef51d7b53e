//! The cluster view: the only way a rule sees objects other than the one it judges.
//!
//! Rules get compact projections of other objects (only what the rules read), never whole
//! objects, so that a watch cache can hold a large cluster in little memory. [`ManifestView`]
//! is the view `check` uses: the other objects of the same manifest set.

pub mod cache;
pub mod consumers;
mod scope;

pub use scope::FreshScope;

use std::collections::{BTreeMap, HashMap};

use consumers::Consumer;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::object::{
    self, MANAGED_BY_LABEL, Object, SERVICE_NAME_LABEL, ServiceShape, SliceController,
    namespace_of, protocol_or_tcp,
};

/// The label every namespace carries with its own name (set by the API server).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A port of an Endpoints subset or an EndpointSlice: kube-proxy pairs it with the Service
/// port of the same (name, protocol).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointPort {
    pub name: String,
    pub protocol: String,
    pub port: i32,
}

impl EndpointPort {
    /// As kube-proxy reads it: no name is the empty name, no protocol is TCP.
    pub fn new(name: Option<&String>, protocol: Option<&String>, port: i32) -> EndpointPort {
        EndpointPort {
            name: name.cloned().unwrap_or_default(),
            protocol: protocol_or_tcp(protocol).to_owned(),
            port,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub name: String,
    pub protocol: String,
    pub port: i32,
    pub target_port: Option<IntOrString>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub shape: ServiceShape,
    pub ports: Vec<ServicePortInfo>,
}

impl ServiceInfo {
    pub fn of(service: &Service) -> ServiceInfo {
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| ServicePortInfo {
                        name: p.name.clone().unwrap_or_default(),
                        protocol: protocol_or_tcp(p.protocol.as_ref()).to_owned(),
                        port: p.port,
                        target_port: p.target_port.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        ServiceInfo {
            namespace: namespace_of(&service.metadata).to_owned(),
            name: service.metadata.name.clone().unwrap_or_default(),
            shape: ServiceShape::of(service),
            ports,
        }
    }

    /// Selectorless and not ExternalName: its backends are hand-written endpoints.
    pub fn takes_hand_written_endpoints(&self) -> bool {
        matches!(
            self.shape,
            ServiceShape::IpMapping | ServiceShape::HeadlessMapping
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointsInfo {
    pub namespace: String,
    pub name: String,
    /// The ports of every subset, deduplicated.
    pub ports: Vec<EndpointPort>,
    /// The addresses of every subset (ready or not), deduplicated.
    pub addresses: Vec<String>,
    /// It says the endpoints controller wrote it (see [`EndpointsInfo::maintained`]).
    pub claims_controller: bool,
}

impl EndpointsInfo {
    pub fn of(endpoints: &Endpoints) -> EndpointsInfo {
        let mut ports: Vec<EndpointPort> = endpoints
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| s.ports.iter().flatten())
            .map(|p| EndpointPort::new(p.name.as_ref(), p.protocol.as_ref(), p.port))
            .collect();
        ports.sort();
        ports.dedup();
        let mut addresses: Vec<String> = endpoints
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| {
                let ready = s.addresses.iter().flatten();
                ready.chain(s.not_ready_addresses.iter().flatten())
            })
            .map(|a| a.ip.clone())
            .collect();
        addresses.sort();
        addresses.dedup();
        EndpointsInfo {
            namespace: namespace_of(&endpoints.metadata).to_owned(),
            name: endpoints.metadata.name.clone().unwrap_or_default(),
            ports,
            addresses,
            claims_controller: object::endpoints_claim_controller(&endpoints.metadata),
        }
    }

    /// Whether the endpoints controller maintains these Endpoints: they say so, and their
    /// Service (`service`: its shape as the judgement sees it) has a selector. Anything
    /// else is hand-written, whatever it says — or frozen: what the controller wrote before
    /// the selector was removed, which kube-proxy still uses.
    pub fn maintained(&self, service: Option<ServiceShape>) -> bool {
        self.claims_controller && service == Some(ServiceShape::InCluster)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceInfo {
    pub namespace: String,
    pub name: String,
    pub service_name: Option<String>,
    pub managed_by: Option<String>,
    pub ports: Vec<EndpointPort>,
    /// The addresses of every endpoint, deduplicated.
    pub addresses: Vec<String>,
    /// The controller it says wrote it (see [`SliceInfo::maintained`]).
    pub controller: Option<SliceController>,
}

impl SliceInfo {
    pub fn of(slice: &EndpointSlice) -> SliceInfo {
        let label = |key: &str| {
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(key))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                // A slice port without a number means "all ports": nothing to pair by number.
                p.port
                    .map(|port| EndpointPort::new(p.name.as_ref(), p.protocol.as_ref(), port))
            })
            .collect();
        let mut addresses: Vec<String> = slice
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        addresses.sort();
        addresses.dedup();
        SliceInfo {
            namespace: namespace_of(&slice.metadata).to_owned(),
            name: object::name_of(&slice.metadata),
            service_name: label(SERVICE_NAME_LABEL),
            managed_by: label(MANAGED_BY_LABEL),
            ports,
            addresses,
            controller: object::slice_claimed_controller(&slice.metadata),
        }
    }

    /// Whether a controller maintains this slice: the EndpointSlice controller's, when its
    /// Service (`service`: its shape as the judgement sees it) has a selector; the mirroring
    /// controller's, when it mirrors an existing Endpoints (`endpoints_exist`) of a
    /// selectorless Service. Anything else is hand-written, whatever it says.
    pub fn maintained(&self, service: Option<ServiceShape>, endpoints_exist: bool) -> bool {
        match self.controller {
            Some(SliceController::EndpointSlice) => service == Some(ServiceShape::InCluster),
            Some(SliceController::Mirroring) => {
                endpoints_exist
                    && matches!(
                        service,
                        Some(ServiceShape::IpMapping | ServiceShape::HeadlessMapping)
                    )
            }
            None => false,
        }
    }
}

/// Whether `view` confirms that a controller of the control plane wrote `object` (see
/// [`EndpointsInfo::maintained`], [`SliceInfo::maintained`]). What an object says about its
/// writer proves nothing alone: anyone can copy a controller's annotation, label, owner
/// reference or field manager. Used where only content is known (`check`, `scan`); in
/// admission the request's user says who writes.
pub fn written_by_controller(object: &Object, view: &dyn ClusterView) -> bool {
    let namespace = object.namespace();
    match object {
        Object::Service(_) => false,
        Object::Endpoints(e) => {
            object::endpoints_claim_controller(&e.metadata)
                && service_shape(view, namespace, &object.name()) == Some(ServiceShape::InCluster)
        }
        Object::EndpointSlice(s) => {
            let Some(service) = object.label(SERVICE_NAME_LABEL) else {
                return false;
            };
            SliceInfo {
                controller: object::slice_claimed_controller(&s.metadata),
                ..SliceInfo::default()
            }
            .maintained(
                service_shape(view, namespace, service),
                view.endpoints(namespace, service).is_some(),
            )
        }
    }
}

/// The shape of the Service `name` in `view`, when it knows it.
pub fn service_shape(view: &dyn ClusterView, namespace: &str, name: &str) -> Option<ServiceShape> {
    view.service(namespace, name).map(|s| s.shape)
}

/// Whether the controller maintains `endpoints`, by their Service in `view`.
pub fn endpoints_maintained(view: &dyn ClusterView, endpoints: &EndpointsInfo) -> bool {
    endpoints.maintained(service_shape(view, &endpoints.namespace, &endpoints.name))
}

/// Whether a controller maintains `slice`, by its Service and Endpoints in `view`.
pub fn slice_maintained(view: &dyn ClusterView, slice: &SliceInfo) -> bool {
    let Some(service) = slice.service_name.as_deref() else {
        return false;
    };
    slice.maintained(
        service_shape(view, &slice.namespace, service),
        view.endpoints(&slice.namespace, service).is_some(),
    )
}

/// How many Pods a selector matches, as counted by a bounded list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodCount {
    Exactly(usize),
    /// The list stopped at its limit.
    AtLeast(usize),
}

/// What the rules may ask about the rest of the cluster. Implemented by the manifest set
/// (`check`), and later by a watch cache (`serve`) and a one-shot list (`scan`).
pub trait ClusterView {
    fn service(&self, namespace: &str, name: &str) -> Option<ServiceInfo>;
    fn services_in(&self, namespace: &str) -> Vec<ServiceInfo>;
    fn endpoints(&self, namespace: &str, name: &str) -> Option<EndpointsInfo>;
    fn endpoints_in(&self, namespace: &str) -> Vec<EndpointsInfo>;
    /// EndpointSlices labelled `kubernetes.io/service-name: <service>`.
    fn slices_for(&self, namespace: &str, service: &str) -> Vec<SliceInfo>;
    fn slices_in(&self, namespace: &str) -> Vec<SliceInfo>;
    /// The namespace's labels, or `None` when the view does not know the namespace.
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
    /// How many Pods in `namespace` `selector` matches, when the view has counted them
    /// (only a live read does; no view keeps Pods).
    fn pods_matching(
        &self,
        _namespace: &str,
        _selector: &BTreeMap<String, String>,
    ) -> Option<PodCount> {
        None
    }
    /// The Ingresses and Gateway API routes that send traffic to the Service `service` of
    /// `namespace`, as far as the view knows them (the watch cache does not keep them: a
    /// live read does).
    fn consumers_of(&self, _namespace: &str, _service: &str) -> Vec<Consumer> {
        Vec::new()
    }
    /// Whether an absent object in `namespace` is really absent. A view that cannot see
    /// that namespace answers every lookup with "nothing", and rules must not conclude from
    /// that.
    fn sees_cluster(&self, _namespace: &str) -> bool {
        true
    }
}

/// The view of a webhook running without a cluster connection: it knows no other object,
/// so rules that pair objects stay silent instead of judging on absence.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoClusterView;

impl ClusterView for NoClusterView {
    fn service(&self, _: &str, _: &str) -> Option<ServiceInfo> {
        None
    }
    fn services_in(&self, _: &str) -> Vec<ServiceInfo> {
        Vec::new()
    }
    fn endpoints(&self, _: &str, _: &str) -> Option<EndpointsInfo> {
        None
    }
    fn endpoints_in(&self, _: &str) -> Vec<EndpointsInfo> {
        Vec::new()
    }
    fn slices_for(&self, _: &str, _: &str) -> Vec<SliceInfo> {
        Vec::new()
    }
    fn slices_in(&self, _: &str) -> Vec<SliceInfo> {
        Vec::new()
    }
    fn namespace_labels(&self, _: &str) -> Option<BTreeMap<String, String>> {
        None
    }
    fn sees_cluster(&self, _namespace: &str) -> bool {
        false
    }
}

/// Another view's namespace labels and nothing else: the object under review judged alone,
/// but under the policy its namespace's labels select.
pub struct LabelsOnly<'a>(pub &'a dyn ClusterView);

impl ClusterView for LabelsOnly<'_> {
    fn service(&self, _: &str, _: &str) -> Option<ServiceInfo> {
        None
    }
    fn services_in(&self, _: &str) -> Vec<ServiceInfo> {
        Vec::new()
    }
    fn endpoints(&self, _: &str, _: &str) -> Option<EndpointsInfo> {
        None
    }
    fn endpoints_in(&self, _: &str) -> Vec<EndpointsInfo> {
        Vec::new()
    }
    fn slices_for(&self, _: &str, _: &str) -> Vec<SliceInfo> {
        Vec::new()
    }
    fn slices_in(&self, _: &str) -> Vec<SliceInfo> {
        Vec::new()
    }
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.0.namespace_labels(namespace)
    }
    fn sees_cluster(&self, _: &str) -> bool {
        false
    }
}

/// A fresh read of part of a namespace over the cache: what a confirmation judges against.
/// The kinds in `scope` come from the read, whose absences are real; the rest from the cache.
pub struct Overlay<'a> {
    pub fresh: &'a ManifestView,
    pub scope: FreshScope,
    pub cache: &'a dyn ClusterView,
    /// The Pods a live read counted for the selector of the Service under review.
    pub pods: Option<PodCount>,
}

impl Overlay<'_> {
    /// The view that answers for a kind: the fresh read when it read that kind.
    fn from(&self, fresh: bool) -> &dyn ClusterView {
        if fresh { self.fresh } else { self.cache }
    }
}

impl ClusterView for Overlay<'_> {
    fn service(&self, namespace: &str, name: &str) -> Option<ServiceInfo> {
        self.from(self.scope.services).service(namespace, name)
    }
    fn services_in(&self, namespace: &str) -> Vec<ServiceInfo> {
        self.from(self.scope.services).services_in(namespace)
    }
    fn endpoints(&self, namespace: &str, name: &str) -> Option<EndpointsInfo> {
        self.from(self.scope.endpoints).endpoints(namespace, name)
    }
    fn endpoints_in(&self, namespace: &str) -> Vec<EndpointsInfo> {
        self.from(self.scope.endpoints).endpoints_in(namespace)
    }
    fn slices_for(&self, namespace: &str, service: &str) -> Vec<SliceInfo> {
        self.from(self.scope.endpoints)
            .slices_for(namespace, service)
    }
    fn slices_in(&self, namespace: &str) -> Vec<SliceInfo> {
        self.from(self.scope.endpoints).slices_in(namespace)
    }
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.from(self.scope.labels).namespace_labels(namespace)
    }
    fn pods_matching(&self, _: &str, _: &BTreeMap<String, String>) -> Option<PodCount> {
        self.pods
    }
    fn consumers_of(&self, namespace: &str, service: &str) -> Vec<Consumer> {
        self.from(self.scope.consumers)
            .consumers_of(namespace, service)
    }
    fn sees_cluster(&self, namespace: &str) -> bool {
        (self.scope.services && self.scope.endpoints) || self.cache.sees_cluster(namespace)
    }
}

/// The objects of one manifest set, indexed by namespace and name.
#[derive(Debug, Default)]
pub struct ManifestView {
    services: HashMap<String, BTreeMap<String, ServiceInfo>>,
    endpoints: HashMap<String, BTreeMap<String, EndpointsInfo>>,
    slices: HashMap<String, BTreeMap<String, SliceInfo>>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    /// The Pods counted for the selector of the Service under review (a live read).
    pods: Option<PodCount>,
    /// namespace → Service → the consumers that name it as a backend.
    consumers: HashMap<String, HashMap<String, Vec<Consumer>>>,
}

impl ManifestView {
    /// Records the Pods a live read counted for the selector of the Service under review.
    pub fn set_pods(&mut self, pods: Option<PodCount>) {
        self.pods = pods;
    }

    pub fn new() -> ManifestView {
        ManifestView::default()
    }

    /// Adds an object; a later object of the same kind, namespace and name replaces an earlier
    /// one, as a second `kubectl apply` would.
    pub fn insert(&mut self, object: &Object) {
        match object {
            Object::Service(s) => {
                let info = ServiceInfo::of(s);
                self.services
                    .entry(info.namespace.clone())
                    .or_default()
                    .insert(info.name.clone(), info);
            }
            Object::Endpoints(e) => {
                let info = EndpointsInfo::of(e);
                self.endpoints
                    .entry(info.namespace.clone())
                    .or_default()
                    .insert(info.name.clone(), info);
            }
            Object::EndpointSlice(s) => {
                let info = SliceInfo::of(s);
                self.slices
                    .entry(info.namespace.clone())
                    .or_default()
                    .insert(info.name.clone(), info);
            }
        }
    }

    /// Adds a consumer and the Services it sends traffic to.
    pub fn insert_consumer(&mut self, consumer: &Consumer, backends: &[(String, String)]) {
        for (namespace, service) in backends {
            let list = self
                .consumers
                .entry(namespace.clone())
                .or_default()
                .entry(service.clone())
                .or_default();
            if !list.contains(consumer) {
                list.push(consumer.clone());
                list.sort();
            }
        }
    }

    pub fn insert_namespace(&mut self, namespace: &Namespace) {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        let mut labels = namespace.metadata.labels.clone().unwrap_or_default();
        labels
            .entry(NAMESPACE_NAME_LABEL.to_owned())
            .or_insert_with(|| name.clone());
        self.namespaces.insert(name, labels);
    }
}

impl ClusterView for ManifestView {
    fn service(&self, namespace: &str, name: &str) -> Option<ServiceInfo> {
        self.services.get(namespace)?.get(name).cloned()
    }

    fn services_in(&self, namespace: &str) -> Vec<ServiceInfo> {
        self.services
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn endpoints(&self, namespace: &str, name: &str) -> Option<EndpointsInfo> {
        self.endpoints.get(namespace)?.get(name).cloned()
    }

    fn endpoints_in(&self, namespace: &str) -> Vec<EndpointsInfo> {
        self.endpoints
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn slices_for(&self, namespace: &str, service: &str) -> Vec<SliceInfo> {
        self.slices
            .get(namespace)
            .map(|m| {
                m.values()
                    .filter(|s| s.service_name.as_deref() == Some(service))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn slices_in(&self, namespace: &str) -> Vec<SliceInfo> {
        self.slices
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get(namespace).cloned()
    }

    fn pods_matching(&self, _: &str, _: &BTreeMap<String, String>) -> Option<PodCount> {
        self.pods
    }

    fn consumers_of(&self, namespace: &str, service: &str) -> Vec<Consumer> {
        self.consumers
            .get(namespace)
            .and_then(|m| m.get(service))
            .cloned()
            .unwrap_or_default()
    }
}
