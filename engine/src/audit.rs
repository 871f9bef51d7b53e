//! Judging what a [`ClusterCache`] holds, namespace by namespace: the objects in violation
//! now, as `serve`'s gauges count them from its watch cache, and as `scan` reports them from
//! paged lists kept in the same compact form.
//!
//! The cache keeps only what the rules read; each object is rebuilt from it as a minimal
//! typed object ([`ClusterCache::objects_in`]) and judged as in a manifest set
//! (`Mode::Set`), against the cache itself and the Ingresses and routes listed beside it.
//! The tests below hold that this gives exactly the findings of judging the original objects.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::cluster::FreshScope;
use crate::cluster::cache::{Changes, ClusterCache};
use crate::cluster::consumers::Consumer;
use crate::cluster::{
    ClusterView, EndpointsInfo, ManifestView, Overlay, PodCount, ServiceInfo, SliceInfo,
};
use crate::finding::{Action, Finding};
use crate::object::Object;
use crate::policy::Policy;
use crate::rules::{Mode, RuleId, Unjudged, judge, unjudged};

/// The view the rebuilt objects are judged against: the cache, and the consumers (Ingresses,
/// Gateway API routes) `consumers` holds, which the cache does not keep.
pub fn view<'a>(cache: &'a ClusterCache, consumers: &'a ManifestView) -> Overlay<'a> {
    Overlay {
        fresh: consumers,
        scope: FreshScope {
            consumers: true,
            ..FreshScope::none()
        },
        cache,
        pods: None,
    }
}

/// One namespace judged: its objects (rebuilt), their findings, and what was left unjudged.
pub struct Judged {
    pub objects: Vec<Object>,
    pub findings: Vec<Finding>,
    pub unjudged: BTreeMap<Unjudged, usize>,
}

/// Judges every object `cache` keeps in `namespace`, against `view` (see [`view`]).
pub fn judge_namespace(
    cache: &ClusterCache,
    namespace: &str,
    view: &dyn ClusterView,
    policy: &Policy,
) -> Judged {
    judge_objects(cache.objects_in(namespace), view, policy)
}

/// Judges `objects` (one namespace's, rebuilt) against `view`.
pub fn judge_objects(objects: Vec<Object>, view: &dyn ClusterView, policy: &Policy) -> Judged {
    let mut findings = Vec::new();
    let mut left = BTreeMap::new();
    for object in &objects {
        match unjudged(object, view, policy, Mode::Set) {
            Some(why) => *left.entry(why).or_default() += 1,
            None => findings.extend(judge(object, view, policy, Mode::Set)),
        }
    }
    Judged {
        objects,
        findings,
        unjudged: left,
    }
}

/// One namespace's objects in violation, counted once per object, rule and action however
/// many fields of an object the rule finds at fault. Info findings (what the mutating
/// webhook will add) are no violation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceTally {
    pub violations: BTreeMap<(RuleId, Action), u64>,
    /// Objects judged.
    pub judged: u64,
    /// Objects left unjudged (an exempt namespace; maintained by a controller, as the
    /// cache confirms).
    pub unjudged: u64,
    /// The other namespaces the rules read while judging this one (an ExternalName that
    /// aliases a Service there): when one of them changes, so may these counts.
    pub reads: BTreeSet<String>,
}

impl NamespaceTally {
    fn add(&mut self, judged: &Judged) {
        let left: usize = judged.unjudged.values().sum();
        self.unjudged += left as u64;
        self.judged += judged.objects.len().saturating_sub(left) as u64;
        let mut seen = BTreeSet::new();
        for f in &judged.findings {
            if f.action >= Action::Warn && seen.insert((&f.object, f.rule, f.action)) {
                *self.violations.entry((f.rule, f.action)).or_default() += 1;
            }
        }
    }
}

/// Objects rebuilt and judged at a time: a namespace of many is never rebuilt whole.
pub const CHUNK: usize = 500;

/// Judges every object `cache` keeps in `namespace` against `view`, [`CHUNK`] objects at
/// a time, calling `between` after each chunk; counts the objects in violation. Holds the
/// cache's lock only while a chunk is rebuilt, and for each lookup a rule makes.
pub fn tally_namespace(
    cache: &ClusterCache,
    namespace: &str,
    view: &dyn ClusterView,
    policy: &Policy,
    between: &mut dyn FnMut(),
) -> NamespaceTally {
    let view = Recording {
        inner: view,
        namespace,
        reads: RefCell::new(BTreeSet::new()),
    };
    let mut tally = NamespaceTally::default();
    for chunk in cache.names_in(namespace).chunks(CHUNK) {
        tally.add(&judge_objects(
            cache.objects_of(namespace, chunk),
            &view,
            policy,
        ));
        between();
    }
    tally.reads = view.reads.into_inner();
    tally
}

/// The objects in violation in the whole cache, by namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// (namespace, rule, action) → objects.
    pub violations: BTreeMap<(String, RuleId, Action), u64>,
    /// Objects judged.
    pub judged: u64,
    /// Objects left unjudged.
    pub unjudged: u64,
}

impl Tally {
    /// Adds one namespace's counts.
    pub fn add(&mut self, namespace: &str, tally: &NamespaceTally) {
        self.judged += tally.judged;
        self.unjudged += tally.unjudged;
        for ((rule, action), n) in &tally.violations {
            *self
                .violations
                .entry((namespace.to_owned(), *rule, *action))
                .or_default() += n;
        }
    }
}

/// The namespace label of the series that sums the namespaces [`Tally::series`] does not
/// export one by one. No namespace can be named so (a DNS label has no parentheses).
pub const OTHER_NAMESPACES: &str = "(other)";

impl Tally {
    /// The counts as gauge series, bounded: a namespace has series of its own only when it
    /// holds violations and is among the `top` with the most (objects denied first, then
    /// warned, then by name); the others' counts are summed under [`OTHER_NAMESPACES`]. So at
    /// most (`top` + 1) × rules × 2 series, however many namespaces the cluster has.
    pub fn series(&self, top: usize) -> BTreeMap<(String, RuleId, Action), u64> {
        let mut per_namespace: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for ((namespace, _, action), count) in &self.violations {
            let totals = per_namespace.entry(namespace).or_default();
            match action {
                Action::Deny => totals.0 += count,
                _ => totals.1 += count,
            }
        }
        let mut ranked: Vec<(&str, (u64, u64))> = per_namespace.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let own: BTreeSet<&str> = ranked.iter().take(top).map(|(ns, _)| *ns).collect();
        let mut series = BTreeMap::new();
        for ((namespace, rule, action), count) in &self.violations {
            let label = if own.contains(namespace.as_str()) {
                namespace.clone()
            } else {
                OTHER_NAMESPACES.to_owned()
            };
            *series.entry((label, *rule, *action)).or_default() += count;
        }
        series
    }
}

/// Judges everything `cache` keeps, namespace by namespace, and counts the objects in
/// violation.
pub fn tally(cache: &ClusterCache, consumers: &ManifestView, policy: &Policy) -> Tally {
    let view = view(cache, consumers);
    let mut tally = Tally::default();
    for namespace in cache.namespaces_in_use() {
        let counts = tally_namespace(cache, &namespace, &view, policy, &mut || {});
        tally.add(&namespace, &counts);
    }
    tally
}

/// The Ingresses and routes of a computation, with the Services they name.
pub type Consumers = Vec<(Consumer, Vec<(String, String)>)>;

/// The gauges' counts kept between computations, so that each judges again only the
/// namespaces that may have changed: those whose objects or labels changed, and those whose
/// rules read one of them. Everything is judged again after a complete relist, when the
/// policy or the Ingresses and routes are others, and the first time.
#[derive(Default)]
pub struct Audit {
    seen: Option<(Changes, Arc<Policy>, Consumers)>,
    namespaces: BTreeMap<String, NamespaceTally>,
}

/// What one [`Audit::update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub tally: Tally,
    /// Namespaces judged this time, and how many there are.
    pub judged_namespaces: usize,
    pub namespaces: usize,
}

impl Audit {
    pub fn new() -> Audit {
        Audit::default()
    }

    /// Brings the counts up to what `cache` holds now under `policy`, with `consumers`
    /// (see [`view`]); calls `between` after each chunk judged.
    pub fn update(
        &mut self,
        cache: &ClusterCache,
        policy: &Arc<Policy>,
        consumers: Consumers,
        between: &mut dyn FnMut(),
    ) -> Update {
        // Taken before judging: what changes meanwhile is judged next time.
        let changes = cache.changes();
        let changed = match &self.seen {
            Some((seen, seen_policy, seen_consumers))
                if Arc::ptr_eq(seen_policy, policy) && *seen_consumers == consumers =>
            {
                changes.since(seen)
            }
            _ => None,
        };
        let in_use = cache.namespaces_in_use();
        let to_judge: Vec<&String> = match &changed {
            None => in_use.iter().collect(),
            Some(changed) => in_use
                .iter()
                .filter(|ns| match self.namespaces.get(*ns) {
                    None => true,
                    Some(tally) => {
                        changed.contains(*ns) || tally.reads.iter().any(|r| changed.contains(r))
                    }
                })
                .collect(),
        };
        let mut view_consumers = ManifestView::new();
        for (consumer, backends) in &consumers {
            view_consumers.insert_consumer(consumer, backends);
        }
        let view = view(cache, &view_consumers);
        let mut namespaces = std::mem::take(&mut self.namespaces);
        let keep: BTreeSet<&str> = in_use.iter().map(String::as_str).collect();
        namespaces.retain(|ns, _| keep.contains(ns.as_str()));
        for namespace in &to_judge {
            let counts = tally_namespace(cache, namespace, &view, policy, between);
            namespaces.insert((*namespace).clone(), counts);
        }
        let mut tally = Tally::default();
        for (namespace, counts) in &namespaces {
            tally.add(namespace, counts);
        }
        let update = Update {
            tally,
            judged_namespaces: to_judge.len(),
            namespaces: namespaces.len(),
        };
        self.namespaces = namespaces;
        self.seen = Some((changes, Arc::clone(policy), consumers));
        update
    }
}

/// A view that notes which other namespaces the rules read.
struct Recording<'a> {
    inner: &'a dyn ClusterView,
    namespace: &'a str,
    reads: RefCell<BTreeSet<String>>,
}

impl Recording<'_> {
    fn note(&self, namespace: &str) {
        if namespace != self.namespace {
            self.reads.borrow_mut().insert(namespace.to_owned());
        }
    }
}

impl ClusterView for Recording<'_> {
    fn service(&self, namespace: &str, name: &str) -> Option<ServiceInfo> {
        self.note(namespace);
        self.inner.service(namespace, name)
    }
    fn services_in(&self, namespace: &str) -> Vec<ServiceInfo> {
        self.note(namespace);
        self.inner.services_in(namespace)
    }
    fn endpoints(&self, namespace: &str, name: &str) -> Option<EndpointsInfo> {
        self.note(namespace);
        self.inner.endpoints(namespace, name)
    }
    fn endpoints_in(&self, namespace: &str) -> Vec<EndpointsInfo> {
        self.note(namespace);
        self.inner.endpoints_in(namespace)
    }
    fn slices_for(&self, namespace: &str, service: &str) -> Vec<SliceInfo> {
        self.note(namespace);
        self.inner.slices_for(namespace, service)
    }
    fn slices_in(&self, namespace: &str) -> Vec<SliceInfo> {
        self.note(namespace);
        self.inner.slices_in(namespace)
    }
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.note(namespace);
        self.inner.namespace_labels(namespace)
    }
    fn pods_matching(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Option<PodCount> {
        self.note(namespace);
        self.inner.pods_matching(namespace, selector)
    }
    fn consumers_of(&self, namespace: &str, service: &str) -> Vec<Consumer> {
        self.note(namespace);
        self.inner.consumers_of(namespace, service)
    }
    fn sees_cluster(&self, namespace: &str) -> bool {
        self.note(namespace);
        self.inner.sees_cluster(namespace)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use k8s_openapi::api::core::v1::Namespace;

    use super::*;
    use crate::cluster::cache::{Entry, Kept, WatchId, WatchedKind};
    use crate::cluster::consumers::Consumer;
    use crate::object::Kind;
    use crate::rules::testing;

    /// The repository: the engine's crate is one level down.
    fn repo() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    }

    /// A set of objects as a cluster would hold them.
    struct Set {
        name: String,
        objects: Vec<Object>,
        namespaces: Vec<Namespace>,
        consumers: Vec<(Consumer, Vec<(String, String)>)>,
    }

    fn load(name: String, paths: &[PathBuf]) -> Set {
        let text: Vec<String> = paths
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let set = testing::Set::read(&text.join("\n---\n"));
        Set {
            name,
            objects: set.objects,
            namespaces: set.namespaces,
            consumers: set.consumers,
        }
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            })
            .collect();
        files.sort();
        files
    }

    /// The objects of a captured AdmissionReview: `object` and `oldObject`.
    fn review_objects(path: &Path) -> Vec<Object> {
        let review: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let request = &review["request"];
        ["object", "oldObject"]
            .into_iter()
            .filter(|k| request[k].is_object())
            .map(|k| {
                let object = request[k].clone();
                match request["kind"]["kind"].as_str().unwrap() {
                    "Service" => Object::Service(serde_json::from_value(object).unwrap()),
                    "Endpoints" => Object::Endpoints(serde_json::from_value(object).unwrap()),
                    "EndpointSlice" => {
                        Object::EndpointSlice(serde_json::from_value(object).unwrap())
                    }
                    other => panic!("{}: kind {other}", path.display()),
                }
            })
            .collect()
    }

    /// Every example, every seed and every captured review: alone, and all of a kind
    /// together (so that objects meet their partners and the likely Services of others).
    fn sets() -> Vec<Set> {
        let mut sets = Vec::new();
        for dir in ["docs/examples", "tests/fixtures/seeds"] {
            let all = files(&repo().join(dir));
            for file in &all {
                sets.push(load(file.display().to_string(), std::slice::from_ref(file)));
            }
            sets.push(load(format!("{dir} together"), &all));
        }
        let reviews = files(&repo().join("tests/fixtures/admission"));
        assert!(reviews.len() > 50, "the captured reviews are there");
        let mut together = Vec::new();
        for file in &reviews {
            for (i, object) in review_objects(file).into_iter().enumerate() {
                together.push(object.clone());
                sets.push(Set {
                    name: format!("{} ({})", file.display(), ["object", "oldObject"][i]),
                    objects: vec![object],
                    namespaces: Vec::new(),
                    consumers: Vec::new(),
                });
            }
        }
        sets.push(Set {
            name: "every captured review's objects together".to_owned(),
            objects: together,
            namespaces: Vec::new(),
            consumers: Vec::new(),
        });
        let corners = testing::Set::read(CORNERS);
        sets.push(Set {
            name: "corners".to_owned(),
            objects: corners.objects,
            namespaces: corners.namespaces,
            consumers: corners.consumers,
        });
        sets
    }

    /// What the rules read that the fixtures above do not show: a leader-election lock,
    /// external-dns and appProtocol on an ExternalName, externalIPs, not-ready addresses and
    /// several subsets, slices with several addresses per endpoint, a port without a number,
    /// an FQDN slice, an empty service-name label, a controller's claims on hand-written
    /// objects, a headless Service with a selector, and required metadata present and wrong.
    const CORNERS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: corners, labels: {team: blue}}
---
apiVersion: v1
kind: Endpoints
metadata:
  name: operator-lock
  namespace: corners
  annotations: {control-plane.alpha.kubernetes.io/leader: '{"holderIdentity":"a"}'}
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: corners
  labels: {app: api, owner: someone}
  annotations: {external-dns.alpha.kubernetes.io/hostname: api.example.com, example.com/ticket: OPS-1}
spec:
  type: ExternalName
  externalName: 192.0.2.10
  ports: [{name: web, port: 9000, appProtocol: http}, {port: 5432, appProtocol: tcp}]
---
apiVersion: v1
kind: Service
metadata: {name: site, namespace: corners}
spec:
  type: ExternalName
  externalName: site.example.com
  ports: [{name: admin, port: 9000, appProtocol: kubernetes.io/h2c}]
---
apiVersion: v1
kind: Service
metadata: {name: capture, namespace: corners}
spec:
  selector: {app: capture}
  clusterIP: None
  externalIPs: [203.0.113.9, 169.254.169.254, not-an-ip, 010.1.1.1]
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: corners}
spec:
  clusterIP: None
  ports: [{name: sql, port: 3306}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Endpoints
metadata:
  name: db
  namespace: corners
  annotations: {endpoints.kubernetes.io/last-change-trigger-time: "2026-01-01T00:00:00Z"}
subsets:
  - addresses: [{ip: 10.0.0.2}, {ip: 010.0.0.1}, {ip: 10.0.0.2}]
    notReadyAddresses: [{ip: 127.0.0.1}, {ip: db.example.com}]
    ports: [{name: sql, port: 3307}]
  - addresses: [{ip: "2001:DB8::1"}]
    ports: [{name: dns, port: 53, protocol: UDP}, {port: 9}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-extra
  namespace: corners
  labels: {kubernetes.io/service-name: db, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io, app: db}
  ownerReferences: [{apiVersion: v1, kind: Service, name: db, uid: x, controller: true}]
addressType: IPv4
endpoints: [{addresses: [10.0.1.1, 10.0.1.2]}, {addresses: []}, {addresses: [169.254.169.254]}]
ports: [{name: sql, port: 3306}, {name: all}, {name: dns, port: 5353, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-mirror
  namespace: corners
  labels: {kubernetes.io/service-name: db, endpointslice.kubernetes.io/managed-by: endpointslicemirroring-controller.k8s.io}
  ownerReferences: [{apiVersion: v1, kind: Endpoints, name: db, uid: "y", controller: true}]
addressType: IPv4
endpoints: [{addresses: [10.0.0.2]}]
ports: [{name: sql, port: 3307}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: names
  namespace: corners
  labels: {kubernetes.io/service-name: site}
addressType: FQDN
endpoints: [{addresses: [site.example.com]}]
ports: [{port: 443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-unlabeled
  namespace: corners
  labels: {kubernetes.io/service-name: "", app: db}
addressType: IPv6
endpoints: [{addresses: ["fd00::1", 10.0.0.9]}]
ports: [{name: sql, port: 3306}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site, namespace: corners}
spec:
  rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: db, port: {number: 3306}}}}]}}]
"#;

    fn policies() -> Vec<(String, Policy)> {
        let mut policies = vec![("embedded default".to_owned(), Policy::embedded())];
        for file in files(&repo().join("docs/policies")) {
            policies.push((file.display().to_string(), Policy::load(&file).unwrap()));
        }
        // Every rule on (two are off or warn by default), and metadata required: its values
        // are compared.
        let strict = "rules:\n  externalname-cross-namespace: deny\n  selector-change: deny\n\
                      requiredMetadata:\n  labels:\n    - key: app\n    - {key: owner, value: platform}\n\
                      \x20 annotations:\n    - key: example.com/ticket\n";
        policies.push((
            "every rule on, metadata required".to_owned(),
            Policy::from_yaml(strict, "strict.yaml").unwrap(),
        ));
        policies
    }

    /// What a cluster holds of `objects`: one object of each kind, namespace and name (the
    /// last), named (the API server names every object).
    fn as_stored(objects: &[Object]) -> Vec<Object> {
        let mut seen = BTreeSet::new();
        let mut kept: Vec<Object> = objects
            .iter()
            .rev()
            .filter(|o| o.metadata().name.as_deref().is_some_and(|n| !n.is_empty()))
            .filter(|o| seen.insert(o.reference()))
            .cloned()
            .collect();
        kept.reverse();
        kept
    }

    /// A cache filled as the watchers fill it: the Services listed first, then what of the
    /// Endpoints and EndpointSlices they do not confirm as maintained, then the Namespaces.
    fn cache_of(set: &[Object], namespaces: &[Namespace], kept: Kept) -> ClusterCache {
        let cache = ClusterCache::new();
        cache.set_kept(kept);
        let now = Instant::now();
        for kind in [Kind::Service, Kind::Endpoints, Kind::EndpointSlice] {
            let watched = match kind {
                Kind::Service => WatchedKind::Services,
                Kind::Endpoints => WatchedKind::Endpoints,
                Kind::EndpointSlice => WatchedKind::EndpointSlices,
            };
            let mut listing = cache.listing();
            for o in set.iter().filter(|o| o.kind() == kind) {
                listing.extend(cache.keeps(Entry::Object(o.clone())));
            }
            cache.replace_listed(&WatchId::new(watched, None), listing, now);
        }
        let entries = namespaces
            .iter()
            .map(|n| Entry::namespace(n.metadata.name.clone().unwrap(), n.metadata.labels.as_ref()))
            .collect();
        cache.replace_all(&WatchId::new(WatchedKind::Namespaces, None), entries, now);
        cache
    }

    fn sorted(mut findings: Vec<Finding>) -> Vec<Finding> {
        findings.sort_by(|a, b| {
            (&a.object, a.rule, &a.field, &a.message)
                .cmp(&(&b.object, b.rule, &b.field, &b.message))
        });
        findings
    }

    #[test]
    fn a_rebuilt_object_is_judged_exactly_as_the_original_over_every_example_seed_and_captured_review()
     {
        let (mut compared, mut with_findings) = (0, 0);
        for set in sets() {
            let stored = as_stored(&set.objects);
            for (policy_name, policy) in policies() {
                let cache = cache_of(&stored, &set.namespaces, Kept::for_policy(&policy));
                let mut consumers = ManifestView::new();
                for (consumer, backends) in &set.consumers {
                    consumers.insert_consumer(consumer, backends);
                }
                let view = view(&cache, &consumers);
                let rebuilt: BTreeMap<_, Object> = cache
                    .namespaces_in_use()
                    .iter()
                    .flat_map(|ns| cache.objects_in(ns))
                    .map(|o| (o.reference(), o))
                    .collect();
                for original in &stored {
                    let context =
                        format!("{} under {policy_name}: {}", set.name, original.reference());
                    let Some(copy) = rebuilt.get(&original.reference()) else {
                        // Not kept: the cache confirmed a controller maintains it, which
                        // leaves it unjudged in a set.
                        assert_eq!(
                            unjudged(original, &view, &policy, Mode::Set),
                            Some(Unjudged::MaintainedByController),
                            "{context}: dropped by the cache but judged"
                        );
                        continue;
                    };
                    assert_eq!(
                        copy.claims_controller(),
                        original.claims_controller(),
                        "{context}"
                    );
                    let want = sorted(judge(original, &view, &policy, Mode::Set));
                    let got = sorted(judge(copy, &view, &policy, Mode::Set));
                    assert_eq!(got, want, "{context}\nrebuilt: {copy:#?}");
                    compared += 1;
                    with_findings += usize::from(!want.is_empty());
                }
            }
        }
        // The fixtures hold about 190 objects, most of them at fault.
        assert!(
            compared > 500 && with_findings > 300,
            "{compared} / {with_findings}"
        );
    }

    #[test]
    fn the_audit_of_a_cache_finds_what_check_finds_in_the_same_objects() {
        for set in sets() {
            let stored = as_stored(&set.objects);
            let policy = Policy::embedded();
            // check: the objects themselves, judged over the set.
            let mut manifest = ManifestView::new();
            for o in &stored {
                manifest.insert(o);
            }
            for ns in &set.namespaces {
                manifest.insert_namespace(ns);
            }
            for (consumer, backends) in &set.consumers {
                manifest.insert_consumer(consumer, backends);
            }
            let want: Vec<Finding> = stored
                .iter()
                .flat_map(|o| judge(o, &manifest, &policy, Mode::Set))
                .collect();
            // The audit: what the cache keeps, rebuilt, over the cache.
            let cache = cache_of(&stored, &set.namespaces, Kept::for_policy(&policy));
            let mut consumers = ManifestView::new();
            for (consumer, backends) in &set.consumers {
                consumers.insert_consumer(consumer, backends);
            }
            let view = view(&cache, &consumers);
            let got: Vec<Finding> = cache
                .namespaces_in_use()
                .iter()
                .flat_map(|ns| judge_namespace(&cache, ns, &view, &policy).findings)
                .collect();
            assert_eq!(sorted(got), sorted(want), "{}", set.name);
        }
    }

    #[test]
    fn namespaces_beyond_the_top_are_summed_under_other() {
        let mut tally = Tally::default();
        let mut add = |ns: &str, rule, action, n| {
            tally.violations.insert((ns.to_owned(), rule, action), n);
        };
        add("a", RuleId::ExternalnameIp, Action::Deny, 1);
        add("b", RuleId::EndpointsOrphaned, Action::Warn, 5);
        add("c", RuleId::EndpointsOrphaned, Action::Deny, 2);
        add("d", RuleId::EndpointsOrphaned, Action::Deny, 2);
        add("d", RuleId::ServiceNoEndpoints, Action::Warn, 1);
        let series = tally.series(2);
        let get = |ns: &str, rule, action| series.get(&(ns.to_owned(), rule, action)).copied();
        // d and c deny the most (d warns more); a and b are folded.
        assert_eq!(get("d", RuleId::EndpointsOrphaned, Action::Deny), Some(2));
        assert_eq!(get("d", RuleId::ServiceNoEndpoints, Action::Warn), Some(1));
        assert_eq!(get("c", RuleId::EndpointsOrphaned, Action::Deny), Some(2));
        assert_eq!(
            get(OTHER_NAMESPACES, RuleId::ExternalnameIp, Action::Deny),
            Some(1)
        );
        assert_eq!(
            get(OTHER_NAMESPACES, RuleId::EndpointsOrphaned, Action::Warn),
            Some(5)
        );
        assert_eq!(series.len(), 5, "{series:?}");
        assert_eq!(
            tally
                .series(0)
                .keys()
                .filter(|k| k.0 != OTHER_NAMESPACES)
                .count(),
            0
        );
        assert_eq!(tally.series(10).len(), 5);
    }

    fn entry(yaml: &str) -> Entry {
        Entry::Object(testing::Set::read(yaml).objects.remove(0))
    }

    #[test]
    fn each_update_judges_again_only_the_namespaces_that_changed_and_those_whose_rules_read_them() {
        let seed = std::fs::read_to_string(
            repo().join("tests/fixtures/seeds/000-mysql-svc-and-mysql-ep.yaml"),
        )
        .unwrap()
        .replace("namespace: default", "namespace: a");
        let mut objects = load_text(&seed);
        objects.push(entry(
            "apiVersion: v1\nkind: Service\nmetadata: {name: alias, namespace: b}\nspec: {type: ExternalName, externalName: db.c.svc.cluster.local}\n",
        ));
        let cache = cache_of(&objects_of(objects), &[], Kept::default());
        let policy = Arc::new(Policy::embedded());
        let mut audit = Audit::new();
        let update = |audit: &mut Audit, policy: &Arc<Policy>| {
            audit.update(&cache, policy, Vec::new(), &mut || {})
        };
        let first = update(&mut audit, &policy);
        assert_eq!((first.judged_namespaces, first.namespaces), (2, 2));
        let missing = (
            "b".to_owned(),
            RuleId::ExternalnameTargetMissing,
            Action::Warn,
        );
        assert_eq!(first.tally.violations.get(&missing), Some(&1));
        let again = update(&mut audit, &policy);
        assert_eq!(again.judged_namespaces, 0, "nothing changed");
        assert_eq!(again.tally, first.tally);

        // The alias's target appears in c: c is judged, and b, whose rule read c; a is not.
        cache.apply(
            &WatchId::new(WatchedKind::Services, None),
            entry("apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: c}\nspec: {selector: {app: db}, ports: [{port: 5432}]}\n"),
            Instant::now(),
        );
        let third = update(&mut audit, &policy);
        assert_eq!((third.judged_namespaces, third.namespaces), (2, 3));
        assert_eq!(third.tally.violations.get(&missing), None);
        assert_eq!(third.tally.violations.len(), 3, "a's three, as before");

        // Another policy, or a relist: everything again.
        let other = Arc::new(Policy::embedded());
        assert_eq!(update(&mut audit, &other).judged_namespaces, 3);
        cache.replace_listed(
            &WatchId::new(WatchedKind::Namespaces, None),
            cache.listing(),
            Instant::now(),
        );
        assert_eq!(update(&mut audit, &other).judged_namespaces, 3);
        assert_eq!(update(&mut audit, &other).judged_namespaces, 0);
    }

    fn load_text(yaml: &str) -> Vec<Entry> {
        testing::Set::read(yaml)
            .objects
            .into_iter()
            .map(Entry::Object)
            .collect()
    }

    fn objects_of(entries: Vec<Entry>) -> Vec<Object> {
        entries
            .into_iter()
            .filter_map(|e| match e {
                Entry::Object(o) => Some(o),
                Entry::Namespace { .. } => None,
            })
            .collect()
    }

    #[test]
    fn the_seed_pair_counts_once_per_object_rule_and_action() {
        let set = load(
            "seed".into(),
            &[repo().join("tests/fixtures/seeds/000-mysql-svc-and-mysql-ep.yaml")],
        );
        let cache = cache_of(&as_stored(&set.objects), &[], Kept::default());
        let tally = tally(&cache, &ManifestView::new(), &Policy::embedded());
        let count = |rule, action| {
            tally
                .violations
                .get(&("default".to_owned(), rule, action))
                .copied()
        };
        assert_eq!(count(RuleId::EndpointsOrphaned, Action::Deny), Some(1));
        assert_eq!(count(RuleId::PortNameMismatch, Action::Deny), Some(1));
        assert_eq!(count(RuleId::ServiceNoEndpoints, Action::Warn), Some(1));
        assert_eq!(tally.violations.len(), 3, "{tally:?}");
        assert_eq!((tally.judged, tally.unjudged), (2, 0));
    }
}
