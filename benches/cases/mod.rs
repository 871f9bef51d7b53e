//! What the engine benches measure, shared by `engine`, `engine_allocs` and `fake_cluster`:
//! the captured reviews in `tests/fixtures/admission/`, the path the server's `/validate`
//! and `/mutate` handlers take through the library ([`review`]), and generated clusters.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use extsvc_guard::admission::{self, Endpoint, Verdict};
use extsvc_guard::cluster::cache::{ClusterCache, Entry, WatchId, WatchedKind};
use extsvc_guard::cluster::{ClusterView, NoClusterView};
use extsvc_guard::object::Object;
use extsvc_guard::policy::Policy;
use serde_json::{Value, json};

/// One review to answer, with the cluster view it is answered against.
pub struct Case {
    pub name: String,
    pub endpoint: Endpoint,
    pub body: Vec<u8>,
    pub view: Arc<dyn ClusterView + Send + Sync>,
}

/// The policy every benchmark judges with: `bench/policy.yaml` (the default with the shape
/// metadata on, so that `/mutate` patches).
pub fn policy() -> Policy {
    match Policy::from_yaml(include_str!("../../bench/policy.yaml"), "bench/policy.yaml") {
        Ok(policy) => policy,
        Err(e) => panic!("{e}"),
    }
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// The object a fixture review carries.
pub fn fixture_object(name: &str) -> Value {
    let review: Value = serde_json::from_slice(&fixture(name)).expect("a fixture is JSON");
    review["request"]["object"].clone()
}

/// What `/validate` and `/mutate` do with a body, minus the HTTP around it and the live
/// confirmation of a cross-object denial (a read from the API server): parse, judge, encode.
pub fn review(body: &[u8], view: &dyn ClusterView, policy: &Policy, endpoint: Endpoint) -> Vec<u8> {
    match admission::parse(body) {
        Ok(request) => admission::decide(&request, view, policy, endpoint)
            .to_json()
            .unwrap_or_default(),
        Err(bad) => bad.message.into_bytes(),
    }
}

/// The verdict a case gets, to print beside its figures.
pub fn verdict(case: &Case, policy: &Policy) -> Verdict {
    match admission::parse(&case.body) {
        Ok(request) => {
            admission::decide(&request, case.view.as_ref(), policy, case.endpoint).verdict
        }
        Err(_) => Verdict::Invalid,
    }
}

/// How the generated cluster's Services get their endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointsMode {
    /// Services only.
    None,
    /// Selectorless Services with hand-written Endpoints and EndpointSlices: every object is kept.
    HandWritten,
    /// Selector Services; the control plane's Endpoints and EndpointSlices (not kept).
    Controller,
}

impl EndpointsMode {
    pub fn parse(s: &str) -> Option<EndpointsMode> {
        match s {
            "none" => Some(EndpointsMode::None),
            "hand-written" => Some(EndpointsMode::HandWritten),
            "controller" => Some(EndpointsMode::Controller),
            _ => None,
        }
    }
}

fn namespace_of(i: usize, namespaces: usize) -> String {
    format!("team-{}", i % namespaces.max(1))
}

fn managed_fields(manager: &str, fields: Value) -> Value {
    json!([{"manager": manager, "operation": "Update", "apiVersion": "v1",
            "time": "2026-11-22T02:07:30Z", "fieldsType": "FieldsV1", "fieldsV1": fields}])
}

/// Service `i`, shaped like what a real API server returns (managedFields, last-applied
/// configuration, dual-stack defaults): about 2 KB of JSON.
pub fn service(i: usize, namespaces: usize, mode: EndpointsMode) -> Value {
    let (ns, name) = (namespace_of(i, namespaces), format!("svc-{i}"));
    let selector = match mode {
        EndpointsMode::HandWritten => Value::Null,
        _ => json!({"app": name}),
    };
    let last_applied = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"annotations": {}, "labels": {"app": name}, "name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}], "selector": selector}})
    .to_string();
    json!({"kind": "Service", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
            "managedFields": managed_fields("kubectl-client-side-apply", json!({
                "f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                               "f:labels": {".": {}, "f:app": {}}},
                "f:spec": {"f:internalTrafficPolicy": {}, "f:ports": {".": {},
                    "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
                    "f:selector": {}, "f:sessionAffinity": {}, "f:type": {}}}))},
        "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
            "selector": selector,
            "clusterIP": format!("10.96.{}.{}", (i / 250) % 250, i % 250 + 1),
            "clusterIPs": [format!("10.96.{}.{}", (i / 250) % 250, i % 250 + 1)],
            "type": "ClusterIP", "sessionAffinity": "None", "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}}})
}

fn addresses(i: usize) -> [String; 2] {
    [
        format!(
            "10.{}.{}.{}",
            100 + (i / 62500) % 100,
            (i / 250) % 250,
            i % 250 + 1
        ),
        format!(
            "10.{}.{}.{}",
            200 + (i / 62500) % 50,
            (i / 250) % 250,
            i % 250 + 1
        ),
    ]
}

/// The Endpoints of Service `i` (none in [`EndpointsMode::None`]).
pub fn endpoints(i: usize, namespaces: usize, mode: EndpointsMode) -> Option<Value> {
    let (ns, name) = (namespace_of(i, namespaces), format!("svc-{i}"));
    let [a, b] = addresses(i);
    let metadata = match mode {
        EndpointsMode::None => return None,
        EndpointsMode::HandWritten => {
            let last_applied = json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"annotations": {}, "name": name, "namespace": ns},
                "subsets": [{"addresses": [{"ip": a}, {"ip": b}], "ports": [{"name": "http", "port": 8080}]}]})
            .to_string();
            json!({"name": name, "namespace": ns,
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
                "managedFields": managed_fields("kubectl-client-side-apply", json!({
                    "f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
                    "f:subsets": {}}))})
        }
        EndpointsMode::Controller => json!({"name": name, "namespace": ns, "labels": {"app": name},
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-11-22T02:07:30Z"},
            "managedFields": managed_fields("kube-controller-manager", json!({
                "f:metadata": {"f:annotations": {".": {}, "f:endpoints.kubernetes.io/last-change-trigger-time": {}},
                               "f:labels": {".": {}, "f:app": {}}},
                "f:subsets": {}}))}),
    };
    Some(
        json!({"kind": "Endpoints", "apiVersion": "v1", "metadata": metadata,
        "subsets": [{"addresses": [{"ip": a, "nodeName": "node-1"}, {"ip": b, "nodeName": "node-2"}],
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]}),
    )
}

/// The EndpointSlice of Service `i` (none in [`EndpointsMode::None`]).
pub fn slice(i: usize, namespaces: usize, mode: EndpointsMode) -> Option<Value> {
    let (ns, service) = (namespace_of(i, namespaces), format!("svc-{i}"));
    let [a, b] = addresses(i);
    let (name, managed_by, owners, manager) = match mode {
        EndpointsMode::None => return None,
        EndpointsMode::HandWritten => (
            format!("{service}-manual"),
            "platform-team",
            json!([]),
            "kubectl-client-side-apply",
        ),
        EndpointsMode::Controller => (
            format!("{service}-{:05x}", i % 0xfffff),
            "endpointslice-controller.k8s.io",
            json!([{"apiVersion": "v1", "kind": "Service", "name": service,
                    "uid": format!("00000000-0000-4000-8000-{i:012x}"),
                    "controller": true, "blockOwnerDeletion": true}]),
            "kube-controller-manager",
        ),
    };
    Some(
        json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns,
            "labels": {"kubernetes.io/service-name": service,
                       "endpointslice.kubernetes.io/managed-by": managed_by},
            "ownerReferences": owners,
            "managedFields": managed_fields(manager, json!({
                "f:addressType": {}, "f:endpoints": {}, "f:ports": {},
                "f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/service-name": {},
                                            "f:endpointslice.kubernetes.io/managed-by": {}}}}))},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "node-1"},
                      {"addresses": [b], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "node-2"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
    )
}

/// A watch cache as `serve`'s watchers fill it from a cluster of `services` Services in
/// `namespaces` namespaces (plus `extra` objects, e.g. a fixture's Service): one list per
/// kind, the Services first, each object kept compact as it arrives, and what the listed
/// Services confirm a controller maintains dropped.
pub fn cache(
    services: usize,
    namespaces: usize,
    mode: EndpointsMode,
    extra: &[Value],
) -> ClusterCache {
    fill(services, namespaces, mode, 0, extra)
}

/// [`cache`] where one Service in `every` has the seed's two mistakes: its Endpoints and
/// EndpointSlice are named (labelled) for another name — an orphan, and a Service without
/// endpoints — and their port is named differently.
pub fn cache_with_mistakes(
    services: usize,
    namespaces: usize,
    mode: EndpointsMode,
    every: usize,
) -> ClusterCache {
    fill(services, namespaces, mode, every, &[])
}

fn fill(
    services: usize,
    namespaces: usize,
    mode: EndpointsMode,
    every: usize,
    extra: &[Value],
) -> ClusterCache {
    let cache = ClusterCache::new();
    let now = Instant::now();
    let kinds = [
        ("Service", WatchedKind::Services),
        ("Endpoints", WatchedKind::Endpoints),
        ("EndpointSlice", WatchedKind::EndpointSlices),
    ];
    for (i, (kind, watched)) in kinds.into_iter().enumerate() {
        let generated = (0..services).filter_map(|n| {
            let mut object = match i {
                0 => Some(service(n, namespaces, mode)),
                1 => endpoints(n, namespaces, mode),
                _ => slice(n, namespaces, mode),
            }?;
            if every > 0 && n % every == 0 && i > 0 {
                mistake(&mut object);
            }
            Some(object)
        });
        let mut listing = cache.listing();
        for object in generated.chain(extra.iter().filter(|o| o["kind"] == kind).cloned()) {
            let object = match kind {
                "Service" => Object::Service(serde_json::from_value(object).expect("a Service")),
                "Endpoints" => {
                    Object::Endpoints(serde_json::from_value(object).expect("an Endpoints"))
                }
                _ => {
                    Object::EndpointSlice(serde_json::from_value(object).expect("an EndpointSlice"))
                }
            };
            listing.extend(cache.keeps(Entry::Object(object)));
        }
        cache.replace_listed(&WatchId::new(watched, None), listing, now);
    }
    let mut namespace_list: Vec<Entry> = (0..namespaces.max(1))
        .map(|n| Entry::namespace(format!("team-{n}"), None))
        .collect();
    namespace_list.push(Entry::namespace("default".to_owned(), None));
    cache.replace_all(
        &WatchId::new(WatchedKind::Namespaces, None),
        namespace_list,
        now,
    );
    cache
}

/// The seed's mistakes on an Endpoints or EndpointSlice: named (or labelled) for a Service
/// that does not exist, with a port name its Service does not have.
pub fn mistake(object: &mut Value) {
    let service = |o: &Value| -> String {
        o["metadata"]["labels"]["kubernetes.io/service-name"]
            .as_str()
            .or(o["metadata"]["name"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let wrong = format!("{}-ep", service(object));
    if object["kind"] == "Endpoints" {
        object["metadata"]["name"] = wrong.into();
        object["subsets"][0]["ports"][0]["name"] = "mysql".into();
    } else {
        object["metadata"]["labels"]["kubernetes.io/service-name"] = wrong.into();
        object["ports"][0]["name"] = "mysql".into();
    }
}

/// The cases both engine benches run.
pub fn cases() -> Vec<Case> {
    cases_with(true)
}

/// The cases, without the one against 10k cached Services unless `with_large_cache` (filling
/// that cache is most of the setup, and slow under valgrind).
pub fn cases_with(with_large_cache: bool) -> Vec<Case> {
    let none: Arc<dyn ClusterView + Send + Sync> = Arc::new(NoClusterView);
    let mysql_svc = fixture_object("001-Service-CREATE.json");
    let small: Arc<dyn ClusterView + Send + Sync> = Arc::new(cache(
        0,
        1,
        EndpointsMode::None,
        std::slice::from_ref(&mysql_svc),
    ));
    let large: Arc<dyn ClusterView + Send + Sync> = if with_large_cache {
        Arc::new(cache(
            10_000,
            1_000,
            EndpointsMode::Controller,
            std::slice::from_ref(&mysql_svc),
        ))
    } else {
        Arc::clone(&none)
    };
    let case = |name: &str,
                file: &str,
                endpoint: Endpoint,
                view: &Arc<dyn ClusterView + Send + Sync>| Case {
        name: name.to_owned(),
        endpoint,
        body: fixture(file),
        view: Arc::clone(view),
    };
    use Endpoint::{Mutate, Validate};
    let mut cases = vec![
        case(
            "002-Endpoints-CREATE/no-cluster",
            "002-Endpoints-CREATE.json",
            Validate,
            &none,
        ),
        case(
            "002-Endpoints-CREATE/mysql-svc",
            "002-Endpoints-CREATE.json",
            Validate,
            &small,
        ),
        case(
            "002-Endpoints-CREATE/10k-services",
            "002-Endpoints-CREATE.json",
            Validate,
            &large,
        ),
        case(
            "001-Service-CREATE",
            "001-Service-CREATE.json",
            Validate,
            &none,
        ),
        case(
            "013-EndpointSlice-CREATE",
            "013-EndpointSlice-CREATE.json",
            Validate,
            &none,
        ),
        case(
            "015-EndpointSlice-CREATE/controller",
            "015-EndpointSlice-CREATE.json",
            Validate,
            &none,
        ),
        case(
            "021-Service-CREATE/mutate",
            "021-Service-CREATE-mutate.json",
            Mutate,
            &none,
        ),
        case(
            "004-Endpoints-UPDATE",
            "004-Endpoints-UPDATE.json",
            Validate,
            &none,
        ),
        case(
            "003-Service-UPDATE",
            "003-Service-UPDATE.json",
            Validate,
            &none,
        ),
        case(
            "025-Service-DELETE",
            "025-Service-DELETE.json",
            Validate,
            &none,
        ),
    ];
    if !with_large_cache {
        cases.retain(|c| !c.name.ends_with("/10k-services"));
    }
    cases
}
