//! The kept objects by kind, namespace and name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crate::cluster::SliceInfo;
use crate::object::ServiceShape;

use super::compact::{Interner, Kept};
use super::endpoints::{Stored, StoredEndpoints, StoredSlice};
use super::service::StoredService;
use super::{WatchId, WatchState, WatchedKind};

pub(super) type ByNamespace<T> = HashMap<Box<str>, HashMap<Box<str>, T>>;

#[derive(Debug, Default)]
pub(super) struct Store {
    /// namespace → name → projection: O(1) lookups by namespace and name.
    pub(super) services: ByNamespace<StoredService>,
    pub(super) endpoints: ByNamespace<StoredEndpoints>,
    pub(super) slices: ByNamespace<StoredSlice>,
    /// namespace → `kubernetes.io/service-name` → slice names, sorted.
    pub(super) slices_by_service: ByNamespace<Vec<Box<str>>>,
    pub(super) namespaces: HashMap<String, BTreeMap<String, String>>,
    pub(super) strings: Interner,
    pub(super) watches: BTreeMap<WatchId, WatchState>,
    /// What is kept of each object's metadata, and how many times that has grown.
    pub(super) kept: Arc<Kept>,
    pub(super) kept_generation: u64,
    /// Changes so far, and the count at each namespace's last change (objects or labels):
    /// what the violation gauges use to judge again only what changed.
    pub(super) changes: u64,
    pub(super) changed: HashMap<Box<str>, u64>,
    /// Complete relists so far (any namespace may have changed).
    pub(super) relists: u64,
}

impl Store {
    pub(super) fn changed(&mut self, namespace: &str) {
        self.changes += 1;
        let changes = self.changes;
        match self.changed.get_mut(namespace) {
            Some(at) => *at = changes,
            None => {
                self.changed.insert(namespace.into(), changes);
            }
        }
    }

    pub(super) fn upsert(&mut self, entry: Stored) {
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
    pub(super) fn forget_maintained(&mut self, namespace: &str, service: &str) {
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

    pub(super) fn remove(&mut self, kind: WatchedKind, namespace: &str, name: &str) {
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

    pub(super) fn remove_slice(&mut self, namespace: &str, name: &str) {
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
    pub(super) fn clear(&mut self, id: &WatchId) {
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

    pub(super) fn count(&self, id: &WatchId) -> usize {
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

    pub(super) fn touch(&mut self, id: &WatchId, now: Instant) {
        let objects = self.count(id);
        let watch = self.watches.entry(id.clone()).or_default();
        watch.last_event = Some(now);
        watch.failing = None;
        watch.outage_since = None;
        watch.objects = objects;
    }
}

pub(super) fn remove_from<T>(map: &mut ByNamespace<T>, namespace: &str, name: &str) {
    if let Some(inner) = map.get_mut(namespace) {
        inner.remove(name);
        if inner.is_empty() {
            map.remove(namespace);
        }
    }
}
