//! The cache as the rules see it.

use std::collections::BTreeMap;

use crate::cluster::{ClusterView, EndpointsInfo, ServiceInfo, SliceInfo};

use super::ClusterCache;

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
