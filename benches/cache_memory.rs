//! Resident memory of the watch cache, as the watchers fill it: `cargo bench --bench
//! cache_memory [-- N]` (default 100 000 objects of each kind, in 1 000 namespaces).
//!
//! Two clusters: the usual one (selector Services; their Endpoints and EndpointSlices come
//! from the control plane, which the listed Services confirm, and are not kept), and the worst case (every Service selectorless,
//! every Endpoints and EndpointSlice hand-written, all kept).

use std::time::Instant;

use extsvc_guard::cluster::cache::{ClusterCache, Entry, WatchId, WatchedKind};
use extsvc_guard::object::Object;
use serde_json::json;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn fill(n: usize, hand_written: bool) -> ClusterCache {
    let cache = ClusterCache::new();
    let ids = [
        WatchId::new(WatchedKind::Services, None),
        WatchId::new(WatchedKind::Endpoints, None),
        WatchId::new(WatchedKind::EndpointSlices, None),
    ];
    let now = Instant::now();
    // As the watchers do: one list per kind, each object kept compact as it arrives, then
    // replace.
    let mut services = cache.listing();
    for i in 0..n {
        let (ns, name) = (format!("team-{}", i % 1000), format!("service-{i}"));
        let selector = if hand_written {
            json!(null)
        } else {
            json!({"app": name})
        };
        let svc = serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}], "selector": selector}}))
        .expect("a valid Service");
        services.push(Entry::Object(Object::Service(svc)));
    }
    cache.replace_listed(&ids[0], services, now);
    let mut endpoints = cache.listing();
    for i in 0..n {
        let (ns, name) = (format!("team-{}", i % 1000), format!("service-{i}"));
        let annotations = if hand_written {
            json!({})
        } else {
            json!({"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"})
        };
        let ep = serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "subsets": [{"addresses": [{"ip": "10.1.2.3"}, {"ip": "10.1.2.4"}], "ports": [{"name": "http", "port": 8080}]}]}))
        .expect("a valid Endpoints");
        // As the watchers do: what the listed Services confirm as maintained is not kept.
        endpoints.extend(cache.keeps(Entry::Object(Object::Endpoints(ep))));
    }
    cache.replace_listed(&ids[1], endpoints, now);
    let mut slices = cache.listing();
    for i in 0..n {
        let (ns, name) = (format!("team-{}", i % 1000), format!("service-{i}"));
        let owners = if hand_written {
            json!([])
        } else {
            json!([{"apiVersion": "v1", "kind": "Service", "name": name, "uid": "u", "controller": true}])
        };
        let managed_by = if hand_written {
            "platform"
        } else {
            "endpointslice-controller.k8s.io"
        };
        let slice = serde_json::from_value(json!({"metadata": {"name": format!("{name}-abcde"), "namespace": ns,
            "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": managed_by},
            "ownerReferences": owners},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.2.3"]}, {"addresses": ["10.1.2.4"]}],
            "ports": [{"name": "http", "port": 8080}]}))
        .expect("a valid EndpointSlice");
        slices.extend(cache.keeps(Entry::Object(Object::EndpointSlice(slice))));
    }
    cache.replace_listed(&ids[2], slices, now);
    cache
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    for (label, hand_written) in [
        (
            "selector Services, controller Endpoints/EndpointSlices",
            false,
        ),
        (
            "selectorless Services, hand-written Endpoints/EndpointSlices",
            true,
        ),
    ] {
        let before = rss_kib();
        let cache = fill(n, hand_written);
        let after = rss_kib();
        let kept: usize = cache.watch_states().values().map(|w| w.objects).sum();
        println!(
            "{n} of each kind, {label}: {kept} kept, cache resident {:.1} MiB",
            after.saturating_sub(before) as f64 / 1024.0
        );
        drop(cache);
    }
}
