//! The watch cache: compact forms of the cluster's Services, Endpoints, EndpointSlices and
//! Namespaces, kept current by the watchers in [`super::watch`] and read by the rules
//! through [`ClusterView`]. Only what the rules read is kept, never whole objects: the
//! projections other objects' rules look up, and what the rules read about an object when
//! it is the one judged, so that every kept object can be rebuilt as a minimal typed object
//! and judged again ([`ClusterCache::objects_in`]: the violation gauges, `scan`).
//!
//! Pure data: no I/O and no clock of its own (the watchers pass the time in), so it is
//! tested like the engine.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::cluster::{NAMESPACE_NAME_LABEL, SliceInfo};
use crate::object::{self, Kind, Object, SERVICE_NAME_LABEL, ServiceShape, namespace_of};

mod compact;
mod endpoints;
mod service;
mod store;
mod view;

use compact::Interner;
pub use compact::Kept;
use endpoints::Stored;
use store::Store;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterView, EndpointsInfo, ServiceInfo};
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
