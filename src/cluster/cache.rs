//! The watch cache: compact projections of the cluster's Services, Endpoints, EndpointSlices
//! and Namespaces, kept current by the watchers in [`super::watch`] and read by the rules
//! through [`ClusterView`]. Only what the rules read is kept, never whole objects.
//!
//! Pure data: no I/O and no clock of its own (the watchers pass the time in), so it is
//! tested like the engine.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::cluster::{ClusterView, EndpointsInfo, NAMESPACE_NAME_LABEL, ServiceInfo, SliceInfo};

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

#[derive(Debug, Default)]
struct Store {
    /// namespace → name → projection: O(1) lookups by namespace and name.
    services: HashMap<String, HashMap<String, ServiceInfo>>,
    endpoints: HashMap<String, HashMap<String, EndpointsInfo>>,
    slices: HashMap<String, HashMap<String, SliceInfo>>,
    /// (namespace, `kubernetes.io/service-name`) → slice names.
    slices_by_service: HashMap<(String, String), BTreeSet<String>>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    watches: BTreeMap<WatchId, WatchState>,
}

impl Store {
    fn upsert(&mut self, entry: Entry) {
        match entry {
            Entry::Service(s) => {
                self.services
                    .entry(s.namespace.clone())
                    .or_default()
                    .insert(s.name.clone(), s);
            }
            Entry::Endpoints(e) => {
                self.endpoints
                    .entry(e.namespace.clone())
                    .or_default()
                    .insert(e.name.clone(), e);
            }
            Entry::Slice(s) => {
                let namespace = s.namespace.clone();
                let name = s.name.clone();
                self.remove_slice(&namespace, &name);
                if let Some(service) = &s.service_name {
                    self.slices_by_service
                        .entry((namespace.clone(), service.clone()))
                        .or_default()
                        .insert(name.clone());
                }
                self.slices.entry(namespace).or_default().insert(name, s);
            }
            Entry::Namespace { name, labels } => {
                self.namespaces.insert(name, labels);
            }
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
        if let Some(service) = old.service_name {
            let key = (namespace.to_owned(), service);
            if let Some(names) = self.slices_by_service.get_mut(&key) {
                names.remove(name);
                if names.is_empty() {
                    self.slices_by_service.remove(&key);
                }
            }
        }
    }

    /// Forgets what one watch delivered: a kind, in one namespace or everywhere.
    fn clear(&mut self, id: &WatchId) {
        match (&id.kind, &id.namespace) {
            (WatchedKind::Services, None) => self.services.clear(),
            (WatchedKind::Services, Some(ns)) => {
                self.services.remove(ns);
            }
            (WatchedKind::Endpoints, None) => self.endpoints.clear(),
            (WatchedKind::Endpoints, Some(ns)) => {
                self.endpoints.remove(ns);
            }
            (WatchedKind::EndpointSlices, None) => {
                self.slices.clear();
                self.slices_by_service.clear();
            }
            (WatchedKind::EndpointSlices, Some(ns)) => {
                self.slices.remove(ns);
                self.slices_by_service.retain(|(n, _), _| n != ns);
            }
            (WatchedKind::Namespaces, None) => self.namespaces.clear(),
            (WatchedKind::Namespaces, Some(ns)) => {
                self.namespaces.remove(ns);
            }
        }
    }

    fn count(&self, id: &WatchId) -> usize {
        fn in_scope<T>(map: &HashMap<String, HashMap<String, T>>, ns: &Option<String>) -> usize {
            match ns {
                Some(ns) => map.get(ns).map_or(0, HashMap::len),
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

fn remove_from<T>(map: &mut HashMap<String, HashMap<String, T>>, namespace: &str, name: &str) {
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
        let mut store = self.write();
        store.clear(id);
        for entry in entries.into_iter().filter(|e| e.kind() == id.kind) {
            store.upsert(entry);
        }
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
        self.read().services.get(namespace)?.get(name).cloned()
    }

    fn services_in(&self, namespace: &str) -> Vec<ServiceInfo> {
        let mut services: Vec<ServiceInfo> = self
            .read()
            .services
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        services
    }

    fn endpoints(&self, namespace: &str, name: &str) -> Option<EndpointsInfo> {
        self.read().endpoints.get(namespace)?.get(name).cloned()
    }

    fn endpoints_in(&self, namespace: &str) -> Vec<EndpointsInfo> {
        let mut endpoints: Vec<EndpointsInfo> = self
            .read()
            .endpoints
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        endpoints.sort_by(|a, b| a.name.cmp(&b.name));
        endpoints
    }

    fn slices_for(&self, namespace: &str, service: &str) -> Vec<SliceInfo> {
        let store = self.read();
        let Some(names) = store
            .slices_by_service
            .get(&(namespace.to_owned(), service.to_owned()))
        else {
            return Vec::new();
        };
        let Some(slices) = store.slices.get(namespace) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|n| slices.get(n).cloned())
            .collect()
    }

    fn slices_in(&self, namespace: &str) -> Vec<SliceInfo> {
        let mut slices: Vec<SliceInfo> = self
            .read()
            .slices
            .get(namespace)
            .map(|m| m.values().cloned().collect())
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
