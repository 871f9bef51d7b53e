//! The watch cache: compact projections of the cluster's Services, Endpoints, EndpointSlices
//! and Namespaces, kept current by the watchers in [`super::watch`] and read by the rules
//! through [`ClusterView`]. Only what the rules read is kept, never whole objects.
//!
//! Pure data: no I/O and no clock of its own (the watchers pass the time in), so it is
//! tested like the engine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cluster::{
    ClusterView, EndpointPort, EndpointsInfo, NAMESPACE_NAME_LABEL, ServiceInfo, ServicePortInfo,
    SliceInfo,
};
use crate::object::{ServiceShape, SliceController};

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

/// One object as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Service(ServiceInfo),
    Endpoints(EndpointsInfo),
    Slice(SliceInfo),
    Namespace {
        name: String,
        labels: BTreeMap<String, String>,
    },
}

impl Entry {
    pub fn kind(&self) -> WatchedKind {
        match self {
            Entry::Service(_) => WatchedKind::Services,
            Entry::Endpoints(_) => WatchedKind::Endpoints,
            Entry::Slice(_) => WatchedKind::EndpointSlices,
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

fn addresses(list: Vec<String>) -> Box<[Address]> {
    list.into_iter().map(Address::new).collect()
}

fn address_texts(list: &[Address]) -> Vec<String> {
    list.iter().map(Address::text).collect()
}

#[derive(Debug, Clone)]
struct Port {
    name: Arc<str>,
    protocol: Arc<str>,
    port: i32,
}

fn ports(list: Vec<EndpointPort>, strings: &mut Interner) -> Box<[Port]> {
    list.into_iter()
        .map(|p| Port {
            name: strings.get(&p.name),
            protocol: strings.get(&p.protocol),
            port: p.port,
        })
        .collect()
}

fn endpoint_ports(list: &[Port]) -> Vec<EndpointPort> {
    list.iter()
        .map(|p| EndpointPort {
            name: p.name.to_string(),
            protocol: p.protocol.to_string(),
            port: p.port,
        })
        .collect()
}

#[derive(Debug, Clone)]
struct ServicePort {
    name: Arc<str>,
    protocol: Arc<str>,
    port: i32,
    target_port: Option<IntOrString>,
}

/// The projections as stored: namespace and name are the keys of the maps holding them,
/// strings that repeat across objects are shared, lists are boxed slices, IP addresses are
/// bytes. About a third of the public projections' size; converted back on every read.
#[derive(Debug, Clone)]
struct StoredService {
    shape: ServiceShape,
    ports: Box<[ServicePort]>,
}

impl StoredService {
    fn new(info: ServiceInfo, strings: &mut Interner) -> StoredService {
        StoredService {
            shape: info.shape,
            ports: info
                .ports
                .into_iter()
                .map(|p| ServicePort {
                    name: strings.get(&p.name),
                    protocol: strings.get(&p.protocol),
                    port: p.port,
                    target_port: p.target_port,
                })
                .collect(),
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
}

#[derive(Debug, Clone)]
struct StoredEndpoints {
    ports: Box<[Port]>,
    addresses: Box<[Address]>,
    claims_controller: bool,
}

impl StoredEndpoints {
    fn new(info: EndpointsInfo, strings: &mut Interner) -> StoredEndpoints {
        StoredEndpoints {
            ports: ports(info.ports, strings),
            addresses: addresses(info.addresses),
            claims_controller: info.claims_controller,
        }
    }

    fn info(&self, namespace: &str, name: &str) -> EndpointsInfo {
        EndpointsInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            ports: endpoint_ports(&self.ports),
            addresses: address_texts(&self.addresses),
            claims_controller: self.claims_controller,
        }
    }
}

#[derive(Debug, Clone)]
struct StoredSlice {
    service_name: Option<Box<str>>,
    managed_by: Option<Arc<str>>,
    ports: Box<[Port]>,
    addresses: Box<[Address]>,
    controller: Option<SliceController>,
}

impl StoredSlice {
    fn new(info: SliceInfo, strings: &mut Interner) -> StoredSlice {
        StoredSlice {
            service_name: info.service_name.map(String::into_boxed_str),
            managed_by: info.managed_by.map(|m| strings.get(&m)),
            ports: ports(info.ports, strings),
            addresses: addresses(info.addresses),
            controller: info.controller,
        }
    }

    fn info(&self, namespace: &str, name: &str) -> SliceInfo {
        SliceInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            service_name: self.service_name.as_deref().map(str::to_owned),
            managed_by: self.managed_by.as_deref().map(str::to_owned),
            ports: endpoint_ports(&self.ports),
            addresses: address_texts(&self.addresses),
            controller: self.controller,
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
    fn new(entry: Entry, strings: &mut Interner) -> Stored {
        let keys =
            |namespace: String, name: String| (namespace.into_boxed_str(), name.into_boxed_str());
        match entry {
            Entry::Service(mut s) => {
                let (ns, name) = keys(
                    std::mem::take(&mut s.namespace),
                    std::mem::take(&mut s.name),
                );
                Stored::Service(ns, name, StoredService::new(s, strings))
            }
            Entry::Endpoints(mut e) => {
                let (ns, name) = keys(
                    std::mem::take(&mut e.namespace),
                    std::mem::take(&mut e.name),
                );
                Stored::Endpoints(ns, name, StoredEndpoints::new(e, strings))
            }
            Entry::Slice(mut s) => {
                let (ns, name) = keys(
                    std::mem::take(&mut s.namespace),
                    std::mem::take(&mut s.name),
                );
                Stored::Slice(ns, name, StoredSlice::new(s, strings))
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
}

impl Listing {
    pub fn new() -> Listing {
        Listing::default()
    }

    pub fn push(&mut self, entry: Entry) {
        self.entries.push(Stored::new(entry, &mut self.strings));
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
}

impl Store {
    fn upsert(&mut self, entry: Stored) {
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
        let entry = Stored::new(entry, &mut store.strings);
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
            Entry::Endpoints(e) => e.maintained(shape(&e.namespace, &e.name)),
            Entry::Slice(s) => s.service_name.as_deref().is_some_and(|service| {
                let endpoints_exist = store
                    .endpoints
                    .get(s.namespace.as_str())
                    .is_some_and(|m| m.contains_key(service));
                s.maintained(shape(&s.namespace, service), endpoints_exist)
            }),
            _ => false,
        };
        drop(store);
        (!maintained).then_some(entry)
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
        objects(yaml)
            .0
            .iter()
            .map(|o| match o {
                Object::Service(s) => Entry::Service(ServiceInfo::of(s)),
                Object::Endpoints(e) => Entry::Endpoints(EndpointsInfo::of(e)),
                Object::EndpointSlice(s) => Entry::Slice(SliceInfo::of(s)),
            })
            .collect()
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
        if let Entry::Slice(s) = &mut elsewhere {
            s.namespace = "other".into();
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
            Entry::Service(service),
            Entry::Endpoints(endpoints),
            Entry::Slice(slice),
        ] = &given[..]
        else {
            panic!("three objects: {given:?}");
        };
        for view in [&cache, &other] {
            assert_eq!(view.service("shop", "db").as_ref(), Some(service));
            assert_eq!(view.endpoints("shop", "db").as_ref(), Some(endpoints));
            assert_eq!(view.slices_for("shop", "db"), vec![slice.clone()]);
            assert_eq!(view.slices_in("shop"), vec![slice.clone()]);
        }
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
