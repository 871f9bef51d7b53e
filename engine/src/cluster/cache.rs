//! The watch cache: compact forms of the cluster's Services, Endpoints, EndpointSlices and
//! Namespaces, kept current by the watchers in [`super::watch`] and read by the rules
//! through [`ClusterView`]. Only what the rules read is kept, never whole objects: the
//! projections other objects' rules look up, and what the rules read about an object when
//! it is the one judged, so that every kept object can be rebuilt as a minimal typed object
//! and judged again ([`ClusterCache::objects_in`]: the violation gauges, `scan`).
//!
//! Pure data: no I/O and no clock of its own (the watchers pass the time in), so it is
//! tested like the engine.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointSubset, Endpoints, Service, ServicePort as TypedServicePort,
    ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort as TypedSlicePort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cluster::consumers::EXTERNAL_DNS_PREFIX;
use crate::cluster::{
    ClusterView, EndpointPort, EndpointsInfo, NAMESPACE_NAME_LABEL, ServiceInfo, ServicePortInfo,
    SliceInfo,
};
use crate::object::{
    self, Kind, MANAGED_BY_LABEL, Object, SERVICE_NAME_LABEL, ServiceShape, SliceController,
    is_headless, namespace_of, protocol_or_tcp,
};
use crate::policy::Policy;
use crate::rules::endpoints_orphaned::LEADER_ANNOTATION;

/// When each namespace of a cache last changed, as [`ClusterCache::changes`] saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    relists: u64,
    kept_generation: u64,
    changed: HashMap<String, u64>,
}

impl Changes {
    /// The namespaces that changed between `earlier` and `self` (objects, or labels);
    /// `None` when anything may have: a complete relist, or objects kept anew.
    pub fn since(&self, earlier: &Changes) -> Option<BTreeSet<String>> {
        if self.relists != earlier.relists || self.kept_generation != earlier.kept_generation {
            return None;
        }
        Some(
            self.changed
                .iter()
                .filter(|(ns, at)| earlier.changed.get(*ns) != Some(at))
                .map(|(ns, _)| ns.clone())
                .collect(),
        )
    }
}

/// The four kinds the cache watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchedKind {
    Services,
    Endpoints,
    EndpointSlices,
    Namespaces,
}

impl WatchedKind {
    pub const ALL: [WatchedKind; 4] = [
        WatchedKind::Services,
        WatchedKind::Endpoints,
        WatchedKind::EndpointSlices,
        WatchedKind::Namespaces,
    ];

    /// The resource name, as RBAC and the API paths spell it.
    pub fn resource(self) -> &'static str {
        match self {
            WatchedKind::Services => "services",
            WatchedKind::Endpoints => "endpoints",
            WatchedKind::EndpointSlices => "endpointslices",
            WatchedKind::Namespaces => "namespaces",
        }
    }
}

/// One object as a watch delivers it to the cache, which keeps a compact form of it.
// Transient (converted as it arrives, never held in numbers): boxing would only add a copy.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Object(Object),
    Namespace {
        name: String,
        labels: BTreeMap<String, String>,
    },
}

impl Entry {
    pub fn kind(&self) -> WatchedKind {
        match self {
            Entry::Object(Object::Service(_)) => WatchedKind::Services,
            Entry::Object(Object::Endpoints(_)) => WatchedKind::Endpoints,
            Entry::Object(Object::EndpointSlice(_)) => WatchedKind::EndpointSlices,
            Entry::Namespace { .. } => WatchedKind::Namespaces,
        }
    }

    /// A Namespace's labels, with the `kubernetes.io/metadata.name` label the API server sets.
    pub fn namespace(name: String, labels: Option<&BTreeMap<String, String>>) -> Entry {
        let mut labels = labels.cloned().unwrap_or_default();
        labels
            .entry(NAMESPACE_NAME_LABEL.to_owned())
            .or_insert_with(|| name.clone());
        Entry::Namespace { name, labels }
    }
}

/// What the cache keeps of an object's metadata beyond what the rules always read (the
/// controllers' markers, the leader-election annotation, external-dns annotations): the
/// labels and annotations a policy requires, whose values `required-metadata` compares,
/// and the uid, which `scan` names each object by in its reports. Which keys a policy
/// requires is known only with the policy, so the cache is told (see
/// [`ClusterCache::set_kept`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    pub labels: BTreeSet<String>,
    pub annotations: BTreeSet<String>,
    pub uid: bool,
}

impl Kept {
    /// What judging with `policy` reads of an object's labels and annotations.
    pub fn for_policy(policy: &Policy) -> Kept {
        Kept {
            labels: policy
                .required
                .labels
                .iter()
                .map(|r| r.key.clone())
                .collect(),
            annotations: policy
                .required
                .annotations
                .iter()
                .map(|r| r.key.clone())
                .collect(),
            uid: false,
        }
    }

    /// Whether objects kept with `self` hold everything `other` keeps.
    pub fn covers(&self, other: &Kept) -> bool {
        other.labels.is_subset(&self.labels)
            && other.annotations.is_subset(&self.annotations)
            && (self.uid || !other.uid)
    }
}

/// One watch: a kind, cluster-wide or in one namespace (`--watch-namespace`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId {
    pub kind: WatchedKind,
    pub namespace: Option<String>,
}

impl WatchId {
    pub fn new(kind: WatchedKind, namespace: Option<&str>) -> WatchId {
        WatchId {
            kind,
            namespace: namespace.map(str::to_owned),
        }
    }

    /// `services`, or `services in shop`.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} in {ns}", self.kind.resource()),
            None => self.kind.resource().to_owned(),
        }
    }
}

/// How one watch is doing.
#[derive(Debug, Clone, Default)]
pub struct WatchState {
    /// The initial list has been received at least once.
    pub synced: bool,
    pub objects: usize,
    /// The last event, list or successful restart.
    pub last_event: Option<Instant>,
    /// Complete relists after the first (410 Gone, or a restart).
    pub resyncs: u64,
    /// Since when the watch has been failing, and why; `None` while it is healthy.
    pub failing: Option<(Instant, String)>,
    /// The start of the outage, kept across a recovery seen only by a probe (a quiet watch
    /// delivers no event when it reconnects): a watch that fails again right after is
    /// judged by how long it has really been out. Cleared by a delivered event or list.
    outage_since: Option<Instant>,
    /// Which [`Kept`] its last complete list was kept with (the cache's generation of it).
    kept_generation: u64,
}

/// A string many objects share (a protocol, a port name, a managed-by value): kept once.
#[derive(Debug, Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(s) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(s);
        self.0.insert(Arc::clone(&shared));
        shared
    }

    /// Forgets the strings no object uses any more.
    fn prune(&mut self) {
        self.0.retain(|s| Arc::strong_count(s) > 1);
    }
}

/// An endpoint address: an IP literal in 17 bytes when it reads back exactly as written.
#[derive(Debug, Clone)]
enum Address {
    Ip(IpAddr),
    Text(Box<str>),
}

impl Address {
    fn new(text: String) -> Address {
        match text.parse::<IpAddr>() {
            Ok(ip) if ip.to_string() == text => Address::Ip(ip),
            _ => Address::Text(text.into_boxed_str()),
        }
    }

    fn text(&self) -> String {
        match self {
            Address::Ip(ip) => ip.to_string(),
            Address::Text(t) => t.to_string(),
        }
    }
}

/// Every address's text, sorted and without repeats: how the projections list them.
fn address_texts<'a>(lists: impl Iterator<Item = &'a [Address]>) -> Vec<String> {
    let mut texts: Vec<String> = lists.flat_map(|l| l.iter().map(Address::text)).collect();
    texts.sort();
    texts.dedup();
    texts
}

/// A port of an Endpoints subset or an EndpointSlice, as kube-proxy reads it (no name is
/// the empty name, no protocol TCP); `None`: a slice port without a number ("all ports").
#[derive(Debug, Clone)]
struct Port {
    name: Arc<str>,
    protocol: Arc<str>,
    port: Option<i32>,
}

impl Port {
    fn new(
        name: Option<&String>,
        protocol: Option<&String>,
        port: Option<i32>,
        strings: &mut Interner,
    ) -> Port {
        Port {
            name: strings.get(name.map_or("", String::as_str)),
            protocol: strings.get(protocol_or_tcp(protocol)),
            port,
        }
    }

    fn projection(&self) -> Option<EndpointPort> {
        Some(EndpointPort {
            name: self.name.to_string(),
            protocol: self.protocol.to_string(),
            port: self.port?,
        })
    }

    fn name(&self) -> Option<String> {
        (!self.name.is_empty()).then(|| self.name.to_string())
    }
}

/// The labels and annotations kept of one object ([`Kept`]), and its uid when kept.
#[derive(Debug, Clone, Default)]
struct Meta {
    labels: Box<[(Arc<str>, Box<str>)]>,
    annotations: Box<[(Arc<str>, Box<str>)]>,
    uid: Option<Box<str>>,
}

/// The entries of `map` whose keys are in `keys` or selected by `also`.
fn pick(
    map: Option<BTreeMap<String, String>>,
    keys: &BTreeSet<String>,
    also: &dyn Fn(&str) -> bool,
    strings: &mut Interner,
) -> Box<[(Arc<str>, Box<str>)]> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| keys.contains(k) || also(k))
        .map(|(k, v)| (strings.get(&k), v.into_boxed_str()))
        .collect()
}

impl Meta {
    /// What `kept` keeps of `meta`, plus the annotations `also` selects; `None` when nothing.
    fn new(
        meta: &mut ObjectMeta,
        kept: &Kept,
        also: impl Fn(&str) -> bool,
        strings: &mut Interner,
    ) -> Option<Box<Meta>> {
        let labels = pick(meta.labels.take(), &kept.labels, &|_| false, strings);
        let annotations = pick(meta.annotations.take(), &kept.annotations, &also, strings);
        let uid = meta
            .uid
            .take()
            .filter(|_| kept.uid)
            .map(String::into_boxed_str);
        (!labels.is_empty() || !annotations.is_empty() || uid.is_some()).then(|| {
            Box::new(Meta {
                labels,
                annotations,
                uid,
            })
        })
    }

    /// `metadata` of a rebuilt object: its name, namespace and what was kept, with `labels`
    /// and `annotations` added where the kept ones do not already say them.
    fn object_meta(
        meta: Option<&Meta>,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> ObjectMeta {
        let map = |kept: Option<&[(Arc<str>, Box<str>)]>, added: &[(&str, &str)]| {
            let mut map: BTreeMap<String, String> = kept
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            for (k, v) in added {
                map.entry((*k).to_owned())
                    .or_insert_with(|| (*v).to_owned());
            }
            (!map.is_empty()).then_some(map)
        };
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: map(meta.map(|m| &*m.labels), labels),
            annotations: map(meta.map(|m| &*m.annotations), annotations),
            uid: meta.and_then(|m| m.uid.as_deref()).map(str::to_owned),
            ..ObjectMeta::default()
        }
    }
}

#[derive(Debug, Clone)]
struct ServicePort {
    name: Arc<str>,
    protocol: Arc<str>,
    port: i32,
    target_port: Option<IntOrString>,
}

/// What the rules read of a Service besides its projection, when it has any of it.
#[derive(Debug, Clone, Default)]
struct ServiceRest {
    /// ExternalName only.
    external_name: Option<Box<str>>,
    external_ips: Box<[Box<str>]>,
    /// `appProtocol` of each port, by position (ExternalName only: HTTP-like ports).
    app_protocols: Box<[Option<Arc<str>>]>,
    meta: Option<Box<Meta>>,
}

/// The forms as stored: namespace and name are the keys of the maps holding them, strings
/// that repeat across objects are shared, lists are boxed slices, IP addresses are bytes.
/// About a third of the public projections' size; converted back on every read.
#[derive(Debug, Clone)]
struct StoredService {
    shape: ServiceShape,
    headless: bool,
    ports: Box<[ServicePort]>,
    rest: Option<Box<ServiceRest>>,
}

/// A stand-in for the selector of a rebuilt Service: in a set, no rule reads a selector's
/// labels (only whether there is one), so they are not kept.
const SELECTOR_NOT_KEPT: &str = "extsvc-guard.io/selector-not-kept";

impl StoredService {
    fn new(service: Service, kept: &Kept, strings: &mut Interner) -> StoredService {
        let shape = ServiceShape::of(&service);
        let headless = is_headless(&service);
        let Service {
            mut metadata, spec, ..
        } = service;
        let spec = spec.unwrap_or_default();
        let external = shape == ServiceShape::ExternalName;
        let mut app_protocols = Vec::new();
        let ports: Box<[ServicePort]> = spec
            .ports
            .into_iter()
            .flatten()
            .map(|p| {
                app_protocols.push(p.app_protocol.filter(|_| external).map(|a| strings.get(&a)));
                ServicePort {
                    name: strings.get(p.name.as_deref().unwrap_or_default()),
                    protocol: strings.get(protocol_or_tcp(p.protocol.as_ref())),
                    port: p.port,
                    target_port: p.target_port,
                }
            })
            .collect();
        if app_protocols.iter().all(Option::is_none) {
            app_protocols.clear();
        }
        // required-metadata reads the labels and annotations of Services that leave the
        // cluster only; externalname-ip names an external-dns annotation of an ExternalName.
        let meta = match shape {
            ServiceShape::InCluster => Meta::new(
                &mut metadata,
                &Kept {
                    uid: kept.uid,
                    ..Kept::default()
                },
                |_| false,
                strings,
            ),
            _ => Meta::new(
                &mut metadata,
                kept,
                |k| external && k.starts_with(EXTERNAL_DNS_PREFIX),
                strings,
            ),
        };
        let rest = ServiceRest {
            external_name: spec
                .external_name
                .filter(|_| external)
                .map(String::into_boxed_str),
            external_ips: spec
                .external_ips
                .into_iter()
                .flatten()
                .map(String::into_boxed_str)
                .collect(),
            app_protocols: app_protocols.into_boxed_slice(),
            meta,
        };
        let empty = rest.external_name.is_none()
            && rest.external_ips.is_empty()
            && rest.app_protocols.is_empty()
            && rest.meta.is_none();
        StoredService {
            shape,
            headless,
            ports,
            rest: (!empty).then(|| Box::new(rest)),
        }
    }

    fn info(&self, namespace: &str, name: &str) -> ServiceInfo {
        ServiceInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            shape: self.shape,
            ports: self
                .ports
                .iter()
                .map(|p| ServicePortInfo {
                    name: p.name.to_string(),
                    protocol: p.protocol.to_string(),
                    port: p.port,
                    target_port: p.target_port.clone(),
                })
                .collect(),
        }
    }

    /// The Service as the rules judge it in a set.
    fn object(&self, namespace: &str, name: &str) -> Service {
        let rest = self.rest.as_deref();
        let ports: Vec<TypedServicePort> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| TypedServicePort {
                name: (!p.name.is_empty()).then(|| p.name.to_string()),
                protocol: Some(p.protocol.to_string()),
                port: p.port,
                target_port: p.target_port.clone(),
                app_protocol: rest
                    .and_then(|r| r.app_protocols.get(i).cloned().flatten())
                    .map(|a| a.to_string()),
                ..TypedServicePort::default()
            })
            .collect();
        let spec = ServiceSpec {
            type_: (self.shape == ServiceShape::ExternalName).then(|| "ExternalName".to_owned()),
            external_name: rest
                .and_then(|r| r.external_name.as_deref())
                .map(str::to_owned),
            selector: (self.shape == ServiceShape::InCluster)
                .then(|| BTreeMap::from([(SELECTOR_NOT_KEPT.to_owned(), String::new())])),
            cluster_ip: self.headless.then(|| "None".to_owned()),
            ports: (!ports.is_empty()).then_some(ports),
            external_ips: rest
                .filter(|r| !r.external_ips.is_empty())
                .map(|r| r.external_ips.iter().map(|ip| ip.to_string()).collect()),
            ..ServiceSpec::default()
        };
        Service {
            metadata: Meta::object_meta(
                rest.and_then(|r| r.meta.as_deref()),
                namespace,
                name,
                &[],
                &[],
            ),
            spec: Some(spec),
            status: None,
        }
    }
}

/// One subset of an Endpoints, as written.
#[derive(Debug, Clone)]
struct StoredSubset {
    addresses: Box<[Address]>,
    not_ready: Box<[Address]>,
    ports: Box<[Port]>,
}

#[derive(Debug, Clone)]
struct StoredEndpoints {
    subsets: Box<[StoredSubset]>,
    /// It says the endpoints controller wrote it (see `EndpointsInfo::maintained`).
    claims_controller: bool,
    /// A leader-election lock (`endpoints-orphaned` leaves it alone).
    leader: bool,
    meta: Option<Box<Meta>>,
}

/// The field manager of kube-controller-manager's writes: a rebuilt Endpoints claims the
/// endpoints controller by it, as `object::endpoints_claim_controller` reads claims.
const CONTROLLER_MANAGER: &str = "kube-controller-manager";

impl StoredEndpoints {
    fn new(endpoints: Endpoints, kept: &Kept, strings: &mut Interner) -> StoredEndpoints {
        let claims_controller = object::endpoints_claim_controller(&endpoints.metadata);
        let Endpoints {
            mut metadata,
            subsets,
        } = endpoints;
        let leader = metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
        let addresses = |list: Option<Vec<EndpointAddress>>| -> Box<[Address]> {
            list.into_iter()
                .flatten()
                .map(|a| Address::new(a.ip))
                .collect()
        };
        let subsets = subsets
            .into_iter()
            .flatten()
            .map(|s| StoredSubset {
                addresses: addresses(s.addresses),
                not_ready: addresses(s.not_ready_addresses),
                ports: s
                    .ports
                    .into_iter()
                    .flatten()
                    .map(|p| Port::new(p.name.as_ref(), p.protocol.as_ref(), Some(p.port), strings))
                    .collect(),
            })
            .collect();
        StoredEndpoints {
            subsets,
            claims_controller,
            leader,
            meta: Meta::new(&mut metadata, kept, |_| false, strings),
        }
    }

    fn info(&self, namespace: &str, name: &str) -> EndpointsInfo {
        let mut ports: Vec<EndpointPort> = self
            .subsets
            .iter()
            .flat_map(|s| s.ports.iter().filter_map(Port::projection))
            .collect();
        ports.sort();
        ports.dedup();
        EndpointsInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            ports,
            addresses: address_texts(
                self.subsets
                    .iter()
                    .flat_map(|s| [&*s.addresses, &*s.not_ready]),
            ),
            claims_controller: self.claims_controller,
        }
    }

    /// The Endpoints as the rules judge it in a set.
    fn object(&self, namespace: &str, name: &str) -> Endpoints {
        let addresses = |list: &[Address]| {
            (!list.is_empty()).then(|| {
                list.iter()
                    .map(|a| EndpointAddress {
                        ip: a.text(),
                        ..EndpointAddress::default()
                    })
                    .collect()
            })
        };
        let subsets: Vec<EndpointSubset> = self
            .subsets
            .iter()
            .map(|s| EndpointSubset {
                addresses: addresses(&s.addresses),
                not_ready_addresses: addresses(&s.not_ready),
                ports: (!s.ports.is_empty()).then(|| {
                    s.ports
                        .iter()
                        .map(|p| k8s_openapi::api::core::v1::EndpointPort {
                            name: p.name(),
                            protocol: Some(p.protocol.to_string()),
                            port: p.port.unwrap_or_default(),
                            app_protocol: None,
                        })
                        .collect()
                }),
            })
            .collect();
        let leader: &[(&str, &str)] = if self.leader {
            &[(LEADER_ANNOTATION, "")]
        } else {
            &[]
        };
        let mut metadata = Meta::object_meta(self.meta.as_deref(), namespace, name, &[], leader);
        if self.claims_controller {
            metadata.managed_fields = Some(vec![ManagedFieldsEntry {
                manager: Some(CONTROLLER_MANAGER.to_owned()),
                ..ManagedFieldsEntry::default()
            }]);
        }
        Endpoints {
            metadata,
            subsets: (!subsets.is_empty()).then_some(subsets),
        }
    }
}

/// An EndpointSlice's `addressType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    IPv4,
    IPv6,
    /// `FQDN` (deprecated) or anything else: its text is in the slice's rest.
    Other,
}

/// What the rules read of an EndpointSlice besides its projection, when it has any of it.
#[derive(Debug, Clone, Default)]
struct SliceRest {
    /// `addressType` when it is neither IPv4 nor IPv6.
    address_type: Option<Box<str>>,
    /// How many addresses each endpoint has, when not exactly one each (the usual case).
    endpoint_sizes: Option<Box<[u32]>>,
    meta: Option<Box<Meta>>,
}

#[derive(Debug, Clone)]
struct StoredSlice {
    service_name: Option<Box<str>>,
    managed_by: Option<Arc<str>>,
    family: Family,
    /// Every port, in order, numbered or not.
    ports: Box<[Port]>,
    /// Every endpoint's addresses, in order.
    addresses: Box<[Address]>,
    controller: Option<SliceController>,
    rest: Option<Box<SliceRest>>,
}

impl StoredSlice {
    fn new(slice: EndpointSlice, kept: &Kept, strings: &mut Interner) -> StoredSlice {
        let EndpointSlice {
            address_type,
            endpoints,
            mut metadata,
            ports,
        } = slice;
        let controller = object::slice_claimed_controller(&metadata);
        // As `SliceInfo::of` reads them: an empty value is no value.
        let label = |key: &str| {
            metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(key))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let (service_name, managed_by) = (label(SERVICE_NAME_LABEL), label(MANAGED_BY_LABEL));
        let family = match address_type.as_str() {
            "IPv4" => Family::IPv4,
            "IPv6" => Family::IPv6,
            _ => Family::Other,
        };
        let sizes: Vec<u32> = endpoints
            .iter()
            .map(|e| u32::try_from(e.addresses.len()).unwrap_or(u32::MAX))
            .collect();
        let addresses = endpoints
            .into_iter()
            .flat_map(|e| e.addresses)
            .map(Address::new)
            .collect();
        // The two labels the projection holds are kept there; a kept label of the same key
        // is kept again only when the projection leaves it out (an empty value).
        if let Some(labels) = metadata.labels.as_mut() {
            for (key, value) in [
                (SERVICE_NAME_LABEL, &service_name),
                (MANAGED_BY_LABEL, &managed_by),
            ] {
                if value.is_some() {
                    labels.remove(key);
                }
            }
        }
        let rest = SliceRest {
            address_type: (family == Family::Other).then(|| address_type.into_boxed_str()),
            endpoint_sizes: sizes
                .iter()
                .any(|n| *n != 1)
                .then(|| sizes.into_boxed_slice()),
            meta: Meta::new(&mut metadata, kept, |_| false, strings),
        };
        let empty =
            rest.address_type.is_none() && rest.endpoint_sizes.is_none() && rest.meta.is_none();
        StoredSlice {
            service_name: service_name.map(String::into_boxed_str),
            managed_by: managed_by.map(|m| strings.get(&m)),
            family,
            ports: ports
                .into_iter()
                .flatten()
                .map(|p| Port::new(p.name.as_ref(), p.protocol.as_ref(), p.port, strings))
                .collect(),
            addresses,
            controller,
            rest: (!empty).then(|| Box::new(rest)),
        }
    }

    fn info(&self, namespace: &str, name: &str) -> SliceInfo {
        SliceInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            service_name: self.service_name.as_deref().map(str::to_owned),
            managed_by: self.managed_by.as_deref().map(str::to_owned),
            ports: self.ports.iter().filter_map(Port::projection).collect(),
            addresses: address_texts(std::iter::once(&*self.addresses)),
            controller: self.controller,
        }
    }

    /// The EndpointSlice as the rules judge it in a set.
    fn object(&self, namespace: &str, name: &str) -> EndpointSlice {
        let rest = self.rest.as_deref();
        let address_type = match self.family {
            Family::IPv4 => "IPv4".to_owned(),
            Family::IPv6 => "IPv6".to_owned(),
            Family::Other => rest
                .and_then(|r| r.address_type.as_deref())
                .unwrap_or("FQDN")
                .to_owned(),
        };
        let mut texts = self.addresses.iter().map(Address::text);
        let endpoints = match rest.and_then(|r| r.endpoint_sizes.as_deref()) {
            None => texts
                .map(|a| Endpoint {
                    addresses: vec![a],
                    ..Endpoint::default()
                })
                .collect(),
            Some(sizes) => sizes
                .iter()
                .map(|n| Endpoint {
                    addresses: texts.by_ref().take(*n as usize).collect(),
                    ..Endpoint::default()
                })
                .collect(),
        };
        let mut labels = Vec::new();
        if let Some(service) = &self.service_name {
            labels.push((SERVICE_NAME_LABEL, &**service));
        }
        if let Some(managed_by) = &self.managed_by {
            labels.push((MANAGED_BY_LABEL, &**managed_by));
        }
        let mut metadata = Meta::object_meta(
            rest.and_then(|r| r.meta.as_deref()),
            namespace,
            name,
            &labels,
            &[],
        );
        // The owner the controller it claims sets: its Service, or the Endpoints it mirrors.
        if let (Some(controller), Some(service)) = (self.controller, &self.service_name) {
            let kind = match controller {
                SliceController::EndpointSlice => "Service",
                SliceController::Mirroring => "Endpoints",
            };
            metadata.owner_references = Some(vec![OwnerReference {
                api_version: "v1".to_owned(),
                kind: kind.to_owned(),
                name: service.to_string(),
                controller: Some(true),
                ..OwnerReference::default()
            }]);
        }
        EndpointSlice {
            address_type,
            endpoints,
            metadata,
            ports: (!self.ports.is_empty()).then(|| {
                self.ports
                    .iter()
                    .map(|p| TypedSlicePort {
                        name: p.name(),
                        protocol: Some(p.protocol.to_string()),
                        port: p.port,
                        app_protocol: None,
                    })
                    .collect()
            }),
        }
    }
}

/// An entry as stored, made as it arrives.
#[derive(Debug, Clone)]
enum Stored {
    Service(Box<str>, Box<str>, StoredService),
    Endpoints(Box<str>, Box<str>, StoredEndpoints),
    Slice(Box<str>, Box<str>, StoredSlice),
    Namespace(String, BTreeMap<String, String>),
}

impl Stored {
    fn new(entry: Entry, kept: &Kept, strings: &mut Interner) -> Stored {
        let keys = |meta: &ObjectMeta| -> (Box<str>, Box<str>) {
            (
                namespace_of(meta).into(),
                object::name_of(meta).into_boxed_str(),
            )
        };
        match entry {
            Entry::Object(Object::Service(s)) => {
                let (ns, name) = keys(&s.metadata);
                Stored::Service(ns, name, StoredService::new(s, kept, strings))
            }
            Entry::Object(Object::Endpoints(e)) => {
                let (ns, name) = keys(&e.metadata);
                Stored::Endpoints(ns, name, StoredEndpoints::new(e, kept, strings))
            }
            Entry::Object(Object::EndpointSlice(s)) => {
                let (ns, name) = keys(&s.metadata);
                Stored::Slice(ns, name, StoredSlice::new(s, kept, strings))
            }
            Entry::Namespace { name, labels } => Stored::Namespace(name, labels),
        }
    }

    fn kind(&self) -> WatchedKind {
        match self {
            Stored::Service(..) => WatchedKind::Services,
            Stored::Endpoints(..) => WatchedKind::Endpoints,
            Stored::Slice(..) => WatchedKind::EndpointSlices,
            Stored::Namespace(..) => WatchedKind::Namespaces,
        }
    }
}

/// A complete list as a watch receives it, kept compact from the first object on, so that a
/// large cluster's list never exists in full twice: collect it, then hand it to
/// [`ClusterCache::replace_listed`].
#[derive(Debug, Default)]
pub struct Listing {
    entries: Vec<Stored>,
    strings: Interner,
    kept: Arc<Kept>,
    kept_generation: u64,
}

impl Listing {
    /// A listing that keeps what the rules always read (as [`ClusterCache::listing`] does
    /// for a cache that was told nothing more).
    pub fn new() -> Listing {
        Listing::default()
    }

    pub fn push(&mut self, entry: Entry) {
        self.entries
            .push(Stored::new(entry, &self.kept, &mut self.strings));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Extend<Entry> for Listing {
    fn extend<I: IntoIterator<Item = Entry>>(&mut self, entries: I) {
        for entry in entries {
            self.push(entry);
        }
    }
}

type ByNamespace<T> = HashMap<Box<str>, HashMap<Box<str>, T>>;

#[derive(Debug, Default)]
struct Store {
    /// namespace → name → projection: O(1) lookups by namespace and name.
    services: ByNamespace<StoredService>,
    endpoints: ByNamespace<StoredEndpoints>,
    slices: ByNamespace<StoredSlice>,
    /// namespace → `kubernetes.io/service-name` → slice names, sorted.
    slices_by_service: ByNamespace<Vec<Box<str>>>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    strings: Interner,
    watches: BTreeMap<WatchId, WatchState>,
    /// What is kept of each object's metadata, and how many times that has grown.
    kept: Arc<Kept>,
    kept_generation: u64,
    /// Changes so far, and the count at each namespace's last change (objects or labels):
    /// what the violation gauges use to judge again only what changed.
    changes: u64,
    changed: HashMap<Box<str>, u64>,
    /// Complete relists so far (any namespace may have changed).
    relists: u64,
}

impl Store {
    fn changed(&mut self, namespace: &str) {
        self.changes += 1;
        let changes = self.changes;
        match self.changed.get_mut(namespace) {
            Some(at) => *at = changes,
            None => {
                self.changed.insert(namespace.into(), changes);
            }
        }
    }

    fn upsert(&mut self, entry: Stored) {
        match &entry {
            Stored::Service(ns, ..) | Stored::Endpoints(ns, ..) | Stored::Slice(ns, ..) => {
                self.changed(ns)
            }
            Stored::Namespace(name, _) => self.changed(name),
        }
        match entry {
            Stored::Service(ns, name, s) => {
                self.services
                    .entry(ns.clone())
                    .or_default()
                    .insert(name.clone(), s);
                self.forget_maintained(&ns, &name);
            }
            Stored::Endpoints(ns, name, e) => {
                self.endpoints
                    .entry(ns.clone())
                    .or_default()
                    .insert(name.clone(), e);
                self.forget_maintained(&ns, &name);
            }
            Stored::Slice(ns, name, s) => {
                self.remove_slice(&ns, &name);
                let service_name = s.service_name.clone();
                if let Some(service) = &s.service_name {
                    let names = self
                        .slices_by_service
                        .entry(ns.clone())
                        .or_default()
                        .entry(service.clone())
                        .or_default();
                    if let Err(at) = names.binary_search(&name) {
                        names.insert(at, name.clone());
                    }
                }
                self.slices.entry(ns.clone()).or_default().insert(name, s);
                if let Some(service) = service_name {
                    self.forget_maintained(&ns, &service);
                }
            }
            Stored::Namespace(name, labels) => {
                self.namespaces.insert(name, labels);
            }
        }
    }

    /// Forgets the Endpoints and EndpointSlices a controller maintains for the Service
    /// `service`: no rule judges them, and in a large cluster they would be most of the
    /// cache. What the cache cannot confirm as maintained (see `EndpointsInfo::maintained`)
    /// stays, since what an object says about its writer proves nothing; it is forgotten
    /// once its Service arrives, whichever of the two the watches deliver first.
    fn forget_maintained(&mut self, namespace: &str, service: &str) {
        let shape = self
            .services
            .get(namespace)
            .and_then(|m| m.get(service))
            .map(|s| s.shape);
        if shape == Some(ServiceShape::InCluster)
            && self
                .endpoints
                .get(namespace)
                .and_then(|m| m.get(service))
                .is_some_and(|e| e.claims_controller)
        {
            remove_from(&mut self.endpoints, namespace, service);
        }
        let endpoints_exist = self
            .endpoints
            .get(namespace)
            .is_some_and(|m| m.contains_key(service));
        let maintained: Vec<Box<str>> = self
            .slices_by_service
            .get(namespace)
            .and_then(|m| m.get(service))
            .into_iter()
            .flatten()
            .filter(|name| {
                self.slices
                    .get(namespace)
                    .and_then(|m| m.get(&***name))
                    .is_some_and(|s| {
                        SliceInfo {
                            controller: s.controller,
                            ..SliceInfo::default()
                        }
                        .maintained(shape, endpoints_exist)
                    })
            })
            .cloned()
            .collect();
        for name in maintained {
            self.remove_slice(namespace, &name);
        }
    }

    fn remove(&mut self, kind: WatchedKind, namespace: &str, name: &str) {
        match kind {
            WatchedKind::Namespaces => self.changed(name),
            _ => self.changed(namespace),
        }
        match kind {
            WatchedKind::Services => remove_from(&mut self.services, namespace, name),
            WatchedKind::Endpoints => remove_from(&mut self.endpoints, namespace, name),
            WatchedKind::EndpointSlices => self.remove_slice(namespace, name),
            WatchedKind::Namespaces => {
                self.namespaces.remove(name);
            }
        }
    }

    fn remove_slice(&mut self, namespace: &str, name: &str) {
        let Some(old) = self.slices.get_mut(namespace).and_then(|m| m.remove(name)) else {
            return;
        };
        if self.slices.get(namespace).is_some_and(HashMap::is_empty) {
            self.slices.remove(namespace);
        }
        let Some(service) = old.service_name else {
            return;
        };
        let Some(by_service) = self.slices_by_service.get_mut(namespace) else {
            return;
        };
        if let Some(names) = by_service.get_mut(&service) {
            names.retain(|n| &**n != name);
            if names.is_empty() {
                by_service.remove(&service);
            }
        }
        if by_service.is_empty() {
            self.slices_by_service.remove(namespace);
        }
    }

    /// Forgets what one watch delivered: a kind, in one namespace or everywhere.
    fn clear(&mut self, id: &WatchId) {
        self.relists += 1;
        self.changed.clear();
        match (&id.kind, &id.namespace) {
            (WatchedKind::Services, None) => self.services = HashMap::new(),
            (WatchedKind::Services, Some(ns)) => {
                self.services.remove(ns.as_str());
            }
            (WatchedKind::Endpoints, None) => self.endpoints = HashMap::new(),
            (WatchedKind::Endpoints, Some(ns)) => {
                self.endpoints.remove(ns.as_str());
            }
            (WatchedKind::EndpointSlices, None) => {
                self.slices = HashMap::new();
                self.slices_by_service = HashMap::new();
            }
            (WatchedKind::EndpointSlices, Some(ns)) => {
                self.slices.remove(ns.as_str());
                self.slices_by_service.remove(ns.as_str());
            }
            (WatchedKind::Namespaces, None) => self.namespaces.clear(),
            (WatchedKind::Namespaces, Some(ns)) => {
                self.namespaces.remove(ns);
            }
        }
    }

    fn count(&self, id: &WatchId) -> usize {
        fn in_scope<T>(map: &ByNamespace<T>, ns: &Option<String>) -> usize {
            match ns {
                Some(ns) => map.get(ns.as_str()).map_or(0, HashMap::len),
                None => map.values().map(HashMap::len).sum(),
            }
        }
        match id.kind {
            WatchedKind::Services => in_scope(&self.services, &id.namespace),
            WatchedKind::Endpoints => in_scope(&self.endpoints, &id.namespace),
            WatchedKind::EndpointSlices => in_scope(&self.slices, &id.namespace),
            WatchedKind::Namespaces => match &id.namespace {
                Some(ns) => usize::from(self.namespaces.contains_key(ns)),
                None => self.namespaces.len(),
            },
        }
    }

    fn touch(&mut self, id: &WatchId, now: Instant) {
        let objects = self.count(id);
        let watch = self.watches.entry(id.clone()).or_default();
        watch.last_event = Some(now);
        watch.failing = None;
        watch.outage_since = None;
        watch.objects = objects;
    }
}

fn remove_from<T>(map: &mut ByNamespace<T>, namespace: &str, name: &str) {
    if let Some(inner) = map.get_mut(namespace) {
        inner.remove(name);
        if inner.is_empty() {
            map.remove(namespace);
        }
    }
}

/// The cache, shared by the watchers (writers) and every request (readers).
#[derive(Debug, Default)]
pub struct ClusterCache {
    store: RwLock<Store>,
    /// The watched namespaces (`--watch-namespace`); empty for the whole cluster. Outside
    /// them the cache knows nothing, and says so through `sees_cluster`.
    scope: Vec<String>,
}

impl ClusterCache {
    pub fn new() -> ClusterCache {
        ClusterCache::default()
    }

    /// A cache that watches only `namespaces` (all when empty).
    pub fn scoped(namespaces: &[String]) -> ClusterCache {
        ClusterCache {
            store: RwLock::default(),
            scope: namespaces.to_vec(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        // A writer that panicked left a whole map behind (every change is one insert or
        // remove): keep serving from it.
        self.store
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Declares the watches that will feed the cache: it is synced when each has listed once.
    pub fn register(&self, ids: impl IntoIterator<Item = WatchId>) {
        let mut store = self.write();
        for id in ids {
            store.watches.entry(id).or_default();
        }
    }

    /// An added or modified object, delivered by watch `id`.
    pub fn apply(&self, id: &WatchId, entry: Entry, now: Instant) {
        let mut store = self.write();
        let kept = Arc::clone(&store.kept);
        let entry = Stored::new(entry, &kept, &mut store.strings);
        store.upsert(entry);
        store.touch(id, now);
    }

    pub fn delete(&self, id: &WatchId, namespace: &str, name: &str, now: Instant) {
        let mut store = self.write();
        store.remove(id.kind, namespace, name);
        store.touch(id, now);
    }

    /// A complete (re)list by watch `id`: what it covers becomes exactly `entries`.
    pub fn replace_all(&self, id: &WatchId, entries: Vec<Entry>, now: Instant) {
        let mut listing = Listing::new();
        listing.extend(entries);
        self.replace_listed(id, listing, now);
    }

    /// [`ClusterCache::replace_all`] with a list collected compactly.
    pub fn replace_listed(&self, id: &WatchId, listing: Listing, now: Instant) {
        let mut store = self.write();
        store.clear(id);
        for entry in listing.entries.into_iter().filter(|e| e.kind() == id.kind) {
            store.upsert(entry);
        }
        store.strings.prune();
        let watch = store.watches.entry(id.clone()).or_default();
        if watch.synced {
            watch.resyncs += 1;
        }
        watch.synced = true;
        watch.kept_generation = listing.kept_generation;
        store.touch(id, now);
    }

    /// Watch `id` failed; it keeps retrying with back-off.
    pub fn failed(&self, id: &WatchId, error: String, now: Instant) {
        let mut store = self.write();
        let watch = store.watches.entry(id.clone()).or_default();
        let since = *watch.outage_since.get_or_insert(now);
        match &mut watch.failing {
            Some((_, last)) => *last = error,
            None => watch.failing = Some((since, error)),
        }
    }

    /// The API server answers watch `id`'s resource again (a probe succeeded); the watch
    /// reconnects by itself.
    pub fn recovered(&self, id: &WatchId) {
        let mut store = self.write();
        if let Some(watch) = store.watches.get_mut(id) {
            watch.failing = None;
        }
    }

    /// Whether watch `id` has listed at least once.
    pub fn listed(&self, id: &WatchId) -> bool {
        self.read().watches.get(id).is_some_and(|w| w.synced)
    }

    /// `entry`, unless it is an Endpoints or EndpointSlice the cache already knows a
    /// controller maintains (see `Store::forget_maintained`): what the watchers keep.
    pub fn keeps(&self, entry: Entry) -> Option<Entry> {
        let store = self.read();
        let shape = |namespace: &str, service: &str| {
            store
                .services
                .get(namespace)
                .and_then(|m| m.get(service))
                .map(|s| s.shape)
        };
        let maintained = match &entry {
            Entry::Object(Object::Endpoints(e)) => {
                object::endpoints_claim_controller(&e.metadata)
                    && shape(namespace_of(&e.metadata), &object::name_of(&e.metadata))
                        == Some(ServiceShape::InCluster)
            }
            Entry::Object(Object::EndpointSlice(s)) => {
                let namespace = namespace_of(&s.metadata);
                let service = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .filter(|v| !v.is_empty());
                service.is_some_and(|service| {
                    let endpoints_exist = store
                        .endpoints
                        .get(namespace)
                        .is_some_and(|m| m.contains_key(service.as_str()));
                    SliceInfo {
                        controller: object::slice_claimed_controller(&s.metadata),
                        ..SliceInfo::default()
                    }
                    .maintained(shape(namespace, service), endpoints_exist)
                })
            }
            _ => false,
        };
        drop(store);
        (!maintained).then_some(entry)
    }

    /// A listing that keeps what the cache keeps now: what a watch collects a list into.
    pub fn listing(&self) -> Listing {
        let store = self.read();
        Listing {
            kept: Arc::clone(&store.kept),
            kept_generation: store.kept_generation,
            ..Listing::default()
        }
    }

    /// Keeps `kept` of the objects that arrive from now on. Returns whether it holds
    /// something the objects already here were kept without (then only a complete relist
    /// of every watch makes them whole: [`ClusterCache::kept_complete`] says when).
    pub fn set_kept(&self, kept: Kept) -> bool {
        // Called at every turn of the gauges' loop: a write lock only for a change.
        if *self.read().kept == kept {
            return false;
        }
        let mut store = self.write();
        let grows = !store.kept.covers(&kept);
        if grows {
            store.kept_generation += 1;
        }
        store.kept = Arc::new(kept);
        grows
    }

    /// Whether every object here holds what [`ClusterCache::set_kept`] last asked for:
    /// each watch has listed since it last grew.
    pub fn kept_complete(&self) -> bool {
        let store = self.read();
        store
            .watches
            .values()
            .all(|w| w.kept_generation == store.kept_generation)
    }

    /// What has changed since: [`Changes::since`] tells which namespaces.
    pub fn changes(&self) -> Changes {
        let store = self.read();
        Changes {
            relists: store.relists,
            kept_generation: store.kept_generation,
            changed: store
                .changed
                .iter()
                .map(|(ns, at)| (ns.to_string(), *at))
                .collect(),
        }
    }

    /// The namespaces holding Services, Endpoints or EndpointSlices, sorted.
    pub fn namespaces_in_use(&self) -> Vec<String> {
        let store = self.read();
        let names: BTreeSet<&str> = store
            .services
            .keys()
            .chain(store.endpoints.keys())
            .chain(store.slices.keys())
            .map(|n| &**n)
            .collect();
        names.into_iter().map(str::to_owned).collect()
    }

    /// The objects of `namespace` the cache keeps, by kind and name: Services first, then
    /// Endpoints, then EndpointSlices, each by name. Rebuild them with
    /// [`ClusterCache::objects_of`], a part at a time when there are many.
    pub fn names_in(&self, namespace: &str) -> Vec<(Kind, String)> {
        fn sorted<T>(kind: Kind, map: Option<&HashMap<Box<str>, T>>) -> Vec<(Kind, String)> {
            let mut names: Vec<(Kind, String)> = map
                .into_iter()
                .flatten()
                .map(|(name, _)| (kind, name.to_string()))
                .collect();
            names.sort();
            names
        }
        let store = self.read();
        let mut names = sorted(Kind::Service, store.services.get(namespace));
        names.extend(sorted(Kind::Endpoints, store.endpoints.get(namespace)));
        names.extend(sorted(Kind::EndpointSlice, store.slices.get(namespace)));
        names
    }

    /// The objects `names` of `namespace`, rebuilt as the rules judge them in a set
    /// (`Mode::Set`): what the rules read of each is as it was delivered; what no rule reads
    /// there is left out or a stand-in (a selector's labels, managedFields, status). Names
    /// the cache no longer holds are skipped.
    pub fn objects_of(&self, namespace: &str, names: &[(Kind, String)]) -> Vec<Object> {
        let store = self.read();
        names
            .iter()
            .filter_map(|(kind, name)| {
                let name = name.as_str();
                Some(match kind {
                    Kind::Service => Object::Service(
                        store
                            .services
                            .get(namespace)?
                            .get(name)?
                            .object(namespace, name),
                    ),
                    Kind::Endpoints => Object::Endpoints(
                        store
                            .endpoints
                            .get(namespace)?
                            .get(name)?
                            .object(namespace, name),
                    ),
                    Kind::EndpointSlice => Object::EndpointSlice(
                        store
                            .slices
                            .get(namespace)?
                            .get(name)?
                            .object(namespace, name),
                    ),
                })
            })
            .collect()
    }

    /// Every object of `namespace` the cache keeps, rebuilt (see
    /// [`ClusterCache::objects_of`]), in the order of [`ClusterCache::names_in`].
    pub fn objects_in(&self, namespace: &str) -> Vec<Object> {
        self.objects_of(namespace, &self.names_in(namespace))
    }

    /// Whether watch `id` is failing now.
    pub fn is_failing(&self, id: &WatchId) -> bool {
        self.read()
            .watches
            .get(id)
            .is_some_and(|w| w.failing.is_some())
    }

    /// Every registered watch has listed once.
    pub fn synced(&self) -> bool {
        let store = self.read();
        !store.watches.is_empty() && store.watches.values().all(|w| w.synced)
    }

    pub fn watch_states(&self) -> BTreeMap<WatchId, WatchState> {
        self.read().watches.clone()
    }

    /// Why the cache cannot be trusted to be current at `now`: a watch that never listed, or
    /// one failing for longer than `max_staleness`.
    pub fn staleness(&self, now: Instant, max_staleness: Duration) -> Option<String> {
        let store = self.read();
        if store.watches.is_empty() {
            return Some("no watch registered".to_owned());
        }
        for (id, watch) in &store.watches {
            if !watch.synced {
                return Some(format!("{} not listed yet", id.describe()));
            }
            if let Some((since, error)) = &watch.failing {
                let failing = now.saturating_duration_since(*since);
                if failing > max_staleness {
                    return Some(format!(
                        "the {} watch has been failing for {}s ({error})",
                        id.describe(),
                        failing.as_secs()
                    ));
                }
            }
        }
        None
    }
}

impl ClusterView for ClusterCache {
    fn service(&self, namespace: &str, name: &str) -> Option<ServiceInfo> {
        let store = self.read();
        let (name, s) = store.services.get(namespace)?.get_key_value(name)?;
        Some(s.info(namespace, name))
    }

    fn services_in(&self, namespace: &str) -> Vec<ServiceInfo> {
        let mut services: Vec<ServiceInfo> = self
            .read()
            .services
            .get(namespace)
            .map(|m| m.iter().map(|(name, s)| s.info(namespace, name)).collect())
            .unwrap_or_default();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        services
    }

    fn endpoints(&self, namespace: &str, name: &str) -> Option<EndpointsInfo> {
        let store = self.read();
        let (name, e) = store.endpoints.get(namespace)?.get_key_value(name)?;
        Some(e.info(namespace, name))
    }

    fn endpoints_in(&self, namespace: &str) -> Vec<EndpointsInfo> {
        let mut endpoints: Vec<EndpointsInfo> = self
            .read()
            .endpoints
            .get(namespace)
            .map(|m| m.iter().map(|(name, e)| e.info(namespace, name)).collect())
            .unwrap_or_default();
        endpoints.sort_by(|a, b| a.name.cmp(&b.name));
        endpoints
    }

    fn slices_for(&self, namespace: &str, service: &str) -> Vec<SliceInfo> {
        let store = self.read();
        let Some(names) = store
            .slices_by_service
            .get(namespace)
            .and_then(|m| m.get(service))
        else {
            return Vec::new();
        };
        let Some(slices) = store.slices.get(namespace) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|n| Some(slices.get(n)?.info(namespace, n)))
            .collect()
    }

    fn slices_in(&self, namespace: &str) -> Vec<SliceInfo> {
        let mut slices: Vec<SliceInfo> = self
            .read()
            .slices
            .get(namespace)
            .map(|m| m.iter().map(|(name, s)| s.info(namespace, name)).collect())
            .unwrap_or_default();
        slices.sort_by(|a, b| a.name.cmp(&b.name));
        slices
    }

    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.read().namespaces.get(namespace).cloned()
    }

    fn sees_cluster(&self, namespace: &str) -> bool {
        self.scope.is_empty() || self.scope.iter().any(|n| n == namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Object;
    use crate::rules::testing::objects;

    fn entries(yaml: &str) -> Vec<Entry> {
        objects(yaml).0.into_iter().map(Entry::Object).collect()
    }

    fn slice(name: &str, service: &str) -> Entry {
        entries(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: shop, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nendpoints: []\n"
        ))
        .remove(0)
    }

    fn all() -> Vec<WatchId> {
        WatchedKind::ALL
            .iter()
            .map(|k| WatchId::new(*k, None))
            .collect()
    }

    fn id(kind: WatchedKind) -> WatchId {
        WatchId::new(kind, None)
    }

    #[test]
    fn slices_are_found_by_their_service_and_follow_a_relabel_and_a_delete() {
        let cache = ClusterCache::new();
        let now = Instant::now();
        let slices = id(WatchedKind::EndpointSlices);
        cache.apply(&slices, slice("db-1", "db"), now);
        cache.apply(&slices, slice("db-2", "db"), now);
        let names = |s: Vec<SliceInfo>| s.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(cache.slices_for("shop", "db")), vec!["db-1", "db-2"]);
        cache.apply(&slices, slice("db-2", "cache"), now);
        assert_eq!(names(cache.slices_for("shop", "db")), vec!["db-1"]);
        assert_eq!(names(cache.slices_for("shop", "cache")), vec!["db-2"]);
        cache.delete(&slices, "shop", "db-1", now);
        assert!(cache.slices_for("shop", "db").is_empty());
        assert_eq!(cache.watch_states()[&slices].objects, 1);
    }

    const CONTROLLER_PAIR: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
  namespace: shop
  annotations: {endpoints.kubernetes.io/last-change-trigger-time: "2026-12-06T22:00:03Z"}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  namespace: shop
  labels:
    kubernetes.io/service-name: web
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
  ownerReferences: [{apiVersion: v1, kind: Service, name: web, uid: x, controller: true}]
addressType: IPv4
endpoints: []
"#;

    #[test]
    fn what_the_controllers_maintain_is_forgotten_whichever_arrives_first() {
        let now = Instant::now();
        let pair = entries(CONTROLLER_PAIR);
        for order in [[0, 1, 2], [1, 2, 0], [2, 0, 1]] {
            let cache = ClusterCache::new();
            for i in order {
                cache.apply(&id(pair[i].kind()), pair[i].clone(), now);
            }
            assert!(cache.service("shop", "web").is_some(), "{order:?}");
            assert!(cache.endpoints("shop", "web").is_none(), "{order:?}");
            assert!(cache.slices_for("shop", "web").is_empty(), "{order:?}");
        }
    }

    #[test]
    fn endpoints_that_only_claim_the_controller_are_kept() {
        // The same markers beside a selectorless Service prove nothing: kept and judged.
        let now = Instant::now();
        let cache = ClusterCache::new();
        let yaml = CONTROLLER_PAIR.replace("spec: {selector: {app: web}, ports", "spec: {ports");
        for entry in entries(&yaml) {
            cache.apply(&id(entry.kind()), entry, now);
        }
        let endpoints = cache.endpoints("shop", "web").expect("kept");
        assert!(endpoints.claims_controller);
        assert_eq!(cache.slices_for("shop", "web").len(), 1);
    }

    #[test]
    fn a_relist_replaces_a_kind_wholly_and_counts_as_a_resync() {
        let cache = ClusterCache::new();
        let now = Instant::now();
        let pair = entries(crate::rules::testing::MYSQL_PAIR);
        let (services, endpoints) = (id(WatchedKind::Services), id(WatchedKind::Endpoints));
        cache.replace_all(&services, pair.clone(), now);
        cache.replace_all(&endpoints, pair.clone(), now);
        assert!(cache.service("default", "mysql-svc").is_some());
        assert!(cache.endpoints("default", "mysql-ep").is_some());
        cache.replace_all(&services, Vec::new(), now);
        assert!(cache.service("default", "mysql-svc").is_none());
        assert!(
            cache.endpoints("default", "mysql-ep").is_some(),
            "other kinds untouched"
        );
        let states = cache.watch_states();
        assert_eq!(states[&services].resyncs, 1);
        assert_eq!(states[&endpoints].resyncs, 0);
    }

    #[test]
    fn a_namespaced_relist_leaves_other_namespaces_alone() {
        let cache = ClusterCache::new();
        let now = Instant::now();
        let shop = WatchId::new(WatchedKind::EndpointSlices, Some("shop"));
        let other = WatchId::new(WatchedKind::EndpointSlices, Some("other"));
        cache.apply(&shop, slice("db-1", "db"), now);
        let mut elsewhere = slice("db-1", "db");
        if let Entry::Object(Object::EndpointSlice(s)) = &mut elsewhere {
            s.metadata.namespace = Some("other".into());
        }
        cache.apply(&other, elsewhere, now);
        cache.replace_all(&shop, Vec::new(), now);
        assert!(cache.slices_for("shop", "db").is_empty());
        assert_eq!(cache.slices_for("other", "db").len(), 1);
    }

    #[test]
    fn the_cache_is_synced_once_every_kind_was_listed() {
        let cache = ClusterCache::new();
        let now = Instant::now();
        assert!(!cache.synced(), "nothing registered is not synced");
        cache.register(all());
        for watch in all() {
            assert!(!cache.synced());
            cache.replace_all(&watch, Vec::new(), now);
        }
        assert!(cache.synced());
    }

    #[test]
    fn a_watch_failing_longer_than_the_limit_makes_the_cache_stale_until_it_recovers() {
        let cache = ClusterCache::new();
        let start = Instant::now();
        cache.register(all());
        assert_eq!(
            cache.staleness(start, Duration::from_secs(30)).as_deref(),
            Some("services not listed yet")
        );
        for watch in all() {
            cache.replace_all(&watch, Vec::new(), start);
        }
        let endpoints = id(WatchedKind::Endpoints);
        cache.failed(&endpoints, "connection refused".into(), start);
        let limit = Duration::from_secs(30);
        assert_eq!(
            cache.staleness(start + Duration::from_secs(10), limit),
            None
        );
        assert_eq!(
            cache
                .staleness(start + Duration::from_secs(31), limit)
                .as_deref(),
            Some("the endpoints watch has been failing for 31s (connection refused)")
        );
        cache.replace_all(&endpoints, Vec::new(), start + Duration::from_secs(40));
        assert_eq!(
            cache.staleness(start + Duration::from_secs(41), limit),
            None
        );
    }

    #[test]
    fn a_probe_recovery_clears_the_failure_but_a_relapse_counts_from_the_first_outage() {
        let cache = ClusterCache::new();
        let start = Instant::now();
        let limit = Duration::from_secs(30);
        cache.register(all());
        for watch in all() {
            cache.replace_all(&watch, Vec::new(), start);
        }
        let services = id(WatchedKind::Services);
        cache.failed(&services, "refused".into(), start);
        cache.recovered(&services);
        assert!(!cache.is_failing(&services));
        assert_eq!(
            cache.staleness(start + Duration::from_secs(40), limit),
            None
        );
        cache.failed(&services, "refused".into(), start + Duration::from_secs(40));
        assert!(
            cache
                .staleness(start + Duration::from_secs(41), limit)
                .is_some(),
            "out since the first failure"
        );
        cache.apply(
            &services,
            entries(crate::rules::testing::MYSQL_PAIR).remove(0),
            start + Duration::from_secs(42),
        );
        cache.failed(&services, "refused".into(), start + Duration::from_secs(50));
        assert_eq!(
            cache.staleness(start + Duration::from_secs(51), limit),
            None
        );
    }

    #[test]
    fn what_is_stored_compactly_reads_back_exactly_as_given() {
        let given = entries(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\n\
             spec: {clusterIP: None, ports: [{name: sql, port: 3306, targetPort: mysql}, {port: 53, protocol: UDP, targetPort: 5353}]}\n\
             ---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: db, namespace: shop}\n\
             subsets: [{addresses: [{ip: 10.0.0.1}, {ip: '2001:DB8::1'}, {ip: '2001:db8::2'}], ports: [{name: sql, port: 3307}]}]\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db, endpointslice.kubernetes.io/managed-by: me}}\n\
             addressType: IPv6\nendpoints: [{addresses: ['2001:0db8::3', 'fd00::4']}]\nports: [{name: sql, port: 3307, protocol: TCP}]\n",
        );
        let cache = ClusterCache::new();
        for entry in &given {
            cache.apply(&id(entry.kind()), entry.clone(), Instant::now());
        }
        let other = ClusterCache::new();
        for kind in [
            WatchedKind::Services,
            WatchedKind::Endpoints,
            WatchedKind::EndpointSlices,
        ] {
            let mut listing = Listing::new();
            listing.extend(given.iter().filter(|e| e.kind() == kind).cloned());
            assert_eq!(listing.len(), 1);
            other.replace_listed(&id(kind), listing, Instant::now());
        }
        let [
            Entry::Object(Object::Service(service)),
            Entry::Object(Object::Endpoints(endpoints)),
            Entry::Object(Object::EndpointSlice(slice)),
        ] = &given[..]
        else {
            panic!("three objects: {given:?}");
        };
        let (service, endpoints, slice) = (
            ServiceInfo::of(service),
            EndpointsInfo::of(endpoints),
            SliceInfo::of(slice),
        );
        for view in [&cache, &other] {
            assert_eq!(view.service("shop", "db").as_ref(), Some(&service));
            assert_eq!(view.endpoints("shop", "db").as_ref(), Some(&endpoints));
            assert_eq!(view.slices_for("shop", "db"), vec![slice.clone()]);
            assert_eq!(view.slices_in("shop"), vec![slice.clone()]);
        }
    }

    #[test]
    fn changes_name_the_namespaces_written_since_and_a_relist_names_none() {
        let cache = ClusterCache::new();
        let now = Instant::now();
        let slices = id(WatchedKind::EndpointSlices);
        cache.apply(&slices, slice("db-1", "db"), now);
        let start = cache.changes();
        assert_eq!(cache.changes().since(&start), Some(BTreeSet::new()));
        cache.apply(&slices, slice("db-2", "db"), now);
        cache.apply(
            &id(WatchedKind::Namespaces),
            Entry::namespace("labels".into(), None),
            now,
        );
        let after = cache.changes();
        assert_eq!(
            after.since(&start),
            Some(BTreeSet::from(["labels".to_owned(), "shop".to_owned()]))
        );
        cache.delete(&slices, "shop", "db-1", now);
        assert_eq!(
            cache.changes().since(&after),
            Some(BTreeSet::from(["shop".to_owned()]))
        );
        cache.replace_all(&slices, Vec::new(), now);
        assert_eq!(cache.changes().since(&after), None);
    }

    #[test]
    fn a_scoped_cache_sees_only_its_namespaces() {
        let cache = ClusterCache::scoped(&["shop".to_owned()]);
        assert!(cache.sees_cluster("shop"));
        assert!(!cache.sees_cluster("elsewhere"));
        assert!(ClusterCache::new().sees_cluster("elsewhere"));
    }

    #[test]
    fn namespaces_carry_their_name_label() {
        let cache = ClusterCache::new();
        cache.apply(
            &id(WatchedKind::Namespaces),
            Entry::namespace("shop".into(), None),
            Instant::now(),
        );
        assert_eq!(
            cache.namespace_labels("shop").unwrap()[NAMESPACE_NAME_LABEL],
            "shop"
        );
    }
}
