//! What the mutating webhook changes: the policy's required labels and annotations, and,
//! with `shapeMetadata: true`, the `<prefix>/shape` label and `<prefix>/target` annotation
//! on Services that leave the cluster.
//!
//! Pure: the object, the cluster view and the policy in, JSON Patch operations out. The
//! required keys come from [`required_metadata::plan`], the same plan the
//! `required-metadata` rule reports, so `check` and `/mutate` never disagree.

use std::net::IpAddr;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};

use crate::cluster::ClusterView;
use crate::object::{Object, ServiceShape};
use crate::policy::Policy;
use crate::rules::required_metadata::{self, MetadataMap, Outcome};

/// How many `address:port` pairs `<prefix>/target` lists before it summarises the rest.
const TARGETS_LISTED: usize = 4;

/// The patch for one object, and what could not be done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mutation {
    pub patch: Patch,
    /// Keys skipped, with why (for the `warnings` of the admission response).
    pub warnings: Vec<String>,
}

impl Shape {
    fn of(shape: ServiceShape) -> Option<Shape> {
        match shape {
            ServiceShape::ExternalName => Some(Shape("external-name")),
            ServiceShape::IpMapping => Some(Shape("ip-mapping")),
            ServiceShape::HeadlessMapping => Some(Shape("headless-mapping")),
            ServiceShape::InCluster => None,
        }
    }
}

/// The value of `<prefix>/shape`.
struct Shape(&'static str);

/// The wanted state of one key.
enum Wanted {
    Set(String),
    /// Ours and stale: a Service that stopped leaving the cluster loses its shape label and
    /// target annotation.
    Unset,
}

struct Change {
    map: MetadataMap,
    key: String,
    wanted: Wanted,
}

/// Plans the patch for `object`. Objects in exempt namespaces get none; whether the control
/// plane wrote it is the caller's to decide (see `admission::decide`).
pub fn mutate(object: &Object, view: &dyn ClusterView, policy: &Policy) -> Mutation {
    // The API server names every object before mutating webhooks run; one without a name
    // came without `metadata`, and `/metadata/...` cannot be patched under a missing parent.
    let meta = object.metadata();
    if meta.name.is_none() && meta.generate_name.is_none() {
        return Mutation::default();
    }
    let namespace = object.namespace();
    let namespace_labels = view.namespace_labels(namespace);
    if policy
        .for_namespace(namespace, namespace_labels.as_ref())
        .exempt
    {
        return Mutation::default();
    }
    let mut changes = Vec::new();
    let mut warnings = Vec::new();
    for planned in required_metadata::plan(object, view, policy, namespace_labels.as_ref()) {
        let wanted = match planned.outcome {
            Outcome::Add(value) | Outcome::Replace { to: value, .. } => Wanted::Set(value),
            Outcome::FromUnknownNamespace { label } => {
                warnings.push(format!(
                    "{noun} {key} not added to {object}: it is copied from label {label} of namespace {namespace}, whose labels are not known (no cluster view); set {key} in the manifest",
                    noun = noun(planned.map),
                    key = planned.key,
                    object = object.reference(),
                ));
                continue;
            }
            // Nothing can supply it: the validating webhook denies the object.
            Outcome::Unsatisfiable(_) => continue,
        };
        changes.push(Change {
            map: planned.map,
            key: planned.key,
            wanted,
        });
    }
    if policy.shape_metadata
        && let Object::Service(service) = object
    {
        let shape_key = format!("{}/shape", policy.metadata_prefix);
        let target_key = format!("{}/target", policy.metadata_prefix);
        let shape = ServiceShape::of(service);
        let (shape_wanted, target_wanted) = match Shape::of(shape) {
            Some(label) => {
                let target = match target_summary(object, view) {
                    Some(target) => Some(Wanted::Set(target)),
                    // Known to go nowhere yet, or a host left from when it was an
                    // ExternalName: the old value is wrong. Otherwise it may be right.
                    None if view.sees_cluster(namespace) => Some(Wanted::Unset),
                    None if current_annotation(object, &target_key)
                        .is_some_and(|t| !t.contains(':')) =>
                    {
                        Some(Wanted::Unset)
                    }
                    None => None,
                };
                (Wanted::Set(label.0.to_owned()), target)
            }
            None => (Wanted::Unset, Some(Wanted::Unset)),
        };
        changes.push(Change {
            map: MetadataMap::Labels,
            key: shape_key,
            wanted: shape_wanted,
        });
        if let Some(wanted) = target_wanted {
            changes.push(Change {
                map: MetadataMap::Annotations,
                key: target_key,
                wanted,
            });
        }
    }
    Mutation {
        patch: patch_for(object, &changes),
        warnings,
    }
}

fn current_annotation<'a>(object: &'a Object, key: &str) -> Option<&'a str> {
    object
        .metadata()
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn noun(map: MetadataMap) -> &'static str {
    match map {
        MetadataMap::Labels => "label",
        MetadataMap::Annotations => "annotation",
    }
}

/// Turns wanted keys into operations against the object as it is: nothing for a key that
/// already has its value, the map itself first when the object has none.
fn patch_for(object: &Object, changes: &[Change]) -> Patch {
    let meta = object.metadata();
    let mut ops = Vec::new();
    for map in [MetadataMap::Labels, MetadataMap::Annotations] {
        let (current, name) = match map {
            MetadataMap::Labels => (meta.labels.as_ref(), "labels"),
            MetadataMap::Annotations => (meta.annotations.as_ref(), "annotations"),
        };
        let map_path = PointerBuf::from_tokens(["metadata", name]);
        let mut created = current.is_some();
        for change in changes.iter().filter(|c| c.map == map) {
            let path = PointerBuf::from_tokens(["metadata", name, change.key.as_str()]);
            let present = current.and_then(|m| m.get(&change.key));
            match (&change.wanted, present) {
                (Wanted::Set(value), Some(v)) if v == value => {}
                (Wanted::Set(value), Some(_)) => {
                    ops.push(PatchOperation::Replace(ReplaceOperation {
                        path,
                        value: value.clone().into(),
                    }))
                }
                (Wanted::Set(value), None) => {
                    if !created {
                        ops.push(PatchOperation::Add(AddOperation {
                            path: map_path.clone(),
                            value: serde_json::Value::Object(serde_json::Map::new()),
                        }));
                        created = true;
                    }
                    ops.push(PatchOperation::Add(AddOperation {
                        path,
                        value: value.clone().into(),
                    }));
                }
                (Wanted::Unset, Some(_)) => {
                    ops.push(PatchOperation::Remove(RemoveOperation { path }))
                }
                (Wanted::Unset, None) => {}
            }
        }
    }
    Patch(ops)
}

/// Where a Service really goes: its externalName host, or the addresses and ports of its
/// hand-written endpoints when the cluster view knows them.
fn target_summary(object: &Object, view: &dyn ClusterView) -> Option<String> {
    let Object::Service(service) = object else {
        return None;
    };
    let spec = service.spec.as_ref();
    if ServiceShape::of(service) == ServiceShape::ExternalName {
        let host = spec?.external_name.as_deref()?.trim();
        let host = host.strip_suffix('.').unwrap_or(host);
        return (!host.is_empty()).then(|| host.to_owned());
    }
    let namespace = object.namespace();
    let name = object.name();
    let mut pairs: Vec<String> = Vec::new();
    let shape = Some(ServiceShape::of(service));
    let endpoints = view.endpoints(namespace, &name);
    let endpoints_exist = endpoints.is_some();
    if let Some(endpoints) = endpoints.filter(|e| !e.maintained(shape)) {
        pairs.extend(address_ports(&endpoints.addresses, &endpoints.ports));
    }
    for slice in view.slices_for(namespace, &name) {
        if !slice.maintained(shape, endpoints_exist) {
            pairs.extend(address_ports(&slice.addresses, &slice.ports));
        }
    }
    pairs.sort();
    pairs.dedup();
    if pairs.is_empty() {
        return None;
    }
    let more = pairs.len().saturating_sub(TARGETS_LISTED);
    pairs.truncate(TARGETS_LISTED);
    let mut summary = pairs.join(",");
    if more > 0 {
        summary.push_str(&format!(",+{more} more"));
    }
    Some(summary)
}

fn address_ports<'a>(
    addresses: &'a [String],
    ports: &'a [crate::cluster::EndpointPort],
) -> impl Iterator<Item = String> + 'a {
    addresses.iter().flat_map(move |address| {
        let host = match address.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{address}]"),
            _ => address.clone(),
        };
        let with_ports: Vec<String> = if ports.is_empty() {
            vec![host.clone()]
        } else {
            ports.iter().map(|p| format!("{host}:{}", p.port)).collect()
        };
        with_ports
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ManifestView, NoClusterView};
    use crate::rules::testing::objects;

    fn policy(yaml: &str) -> Policy {
        Policy::from_yaml(yaml, "test-policy.yaml").unwrap()
    }

    /// The default policy with the shape metadata switched on (off by default).
    fn shape() -> Policy {
        policy("shapeMetadata: true\n")
    }

    fn first(yaml: &str) -> (Object, ManifestView) {
        let (objects, view) = objects(yaml);
        (objects.into_iter().next().unwrap(), view)
    }

    fn ops_json(m: &Mutation) -> serde_json::Value {
        serde_json::to_value(&m.patch).unwrap()
    }

    const EXTERNAL_NAME: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec: {type: ExternalName, externalName: db.example.com., ports: [{port: 5432}]}\n";

    #[test]
    fn an_external_name_service_gets_its_shape_label_and_target_annotation_with_both_maps_created()
    {
        let (object, _) = first(EXTERNAL_NAME);
        let m = mutate(&object, &NoClusterView, &shape());
        assert_eq!(
            ops_json(&m),
            serde_json::json!([
                {"op": "add", "path": "/metadata/labels", "value": {}},
                {"op": "add", "path": "/metadata/labels/extsvc-guard.io~1shape", "value": "external-name"},
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/extsvc-guard.io~1target", "value": "db.example.com"},
            ])
        );
        assert!(m.warnings.is_empty());
    }

    #[test]
    fn a_selectorless_service_is_annotated_with_the_addresses_of_its_endpoints_when_known() {
        let (objects, view) = objects(crate::rules::testing::MYSQL_PAIR);
        let mut view = view;
        // Pair the Endpoints with the Service, as the fixed manifest would.
        let yaml = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: mysql-svc}\nsubsets: [{addresses: [{ip: 114.32.146.154}], ports: [{name: default-ep, port: 3306}]}]\n";
        let (fixed, _) = first(yaml);
        view.insert(&fixed);
        let m = mutate(&objects[0], &view, &shape());
        let ops = ops_json(&m);
        let has = |path: &str, value: &str| {
            ops.as_array()
                .unwrap()
                .contains(&serde_json::json!({"op": "add", "path": path, "value": value}))
        };
        assert!(
            has(
                "/metadata/annotations/extsvc-guard.io~1target",
                "114.32.146.154:3306"
            ),
            "{ops:#}"
        );
        assert!(
            has(
                "/metadata/labels/extsvc-guard.io~1shape",
                "headless-mapping"
            ),
            "{ops:#}"
        );
    }

    #[test]
    fn many_targets_are_summarised_after_four_and_ipv6_is_bracketed() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\nsubsets: [{addresses: [{ip: 10.0.0.1}, {ip: 10.0.0.2}, {ip: 10.0.0.3}, {ip: 10.0.0.4}, {ip: 10.0.0.5}, {ip: '2001:db8::1'}], ports: [{port: 80}]}]\n";
        let (object, view) = first(yaml);
        assert_eq!(
            target_summary(&object, &view).unwrap(),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80,10.0.0.4:80,+2 more"
        );
        let ports = [crate::cluster::EndpointPort::new(None, None, 80)];
        let v6: Vec<String> = address_ports(&["2001:db8::1".to_owned()], &ports).collect();
        assert_eq!(v6, vec!["[2001:db8::1]:80"]);
    }

    #[test]
    fn required_keys_are_added_with_json_pointer_escaping_and_user_values_are_kept() {
        let p = policy(
            "requiredMetadata:\n  labels:\n    - {key: example.com/owner, value: platform}\n    - {key: team, value: core}\n  annotations:\n    - {key: example.com/note, value: x}\nshapeMetadata: false\n",
        );
        let (object, _) = first(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db, labels: {team: payments}}\nspec: {ports: [{port: 5432}]}\n",
        );
        let m = mutate(&object, &NoClusterView, &p);
        assert_eq!(
            ops_json(&m),
            serde_json::json!([
                {"op": "add", "path": "/metadata/labels/example.com~1owner", "value": "platform"},
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/example.com~1note", "value": "x"},
            ])
        );
    }

    #[test]
    fn json_pointer_escaping_writes_tilde_before_slash() {
        let pointer = PointerBuf::from_tokens(["metadata", "labels", "a~b/c~1"]);
        assert_eq!(pointer.as_str(), "/metadata/labels/a~0b~1c~01");
    }

    #[test]
    fn overwrite_replaces_a_user_value_only_when_the_policy_says_so() {
        let p = policy(
            "requiredMetadata:\n  labels:\n    - {key: team, value: core, overwrite: true}\nshapeMetadata: false\n",
        );
        let (object, _) = first(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db, labels: {team: payments}}\nspec: {ports: [{port: 5432}]}\n",
        );
        let m = mutate(&object, &NoClusterView, &p);
        assert_eq!(
            ops_json(&m),
            serde_json::json!([{"op": "replace", "path": "/metadata/labels/team", "value": "core"}])
        );
    }

    #[test]
    fn a_namespace_label_is_copied_when_known_and_skipped_with_a_warning_when_not() {
        let p = policy(
            "requiredMetadata:\n  labels:\n    - {key: team, fromNamespaceLabel: team}\nshapeMetadata: false\n",
        );
        let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: checkout}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop, labels: {}}\nspec: {ports: [{port: 5432}]}\n";
        let (object, view) = first(yaml);
        let known = mutate(&object, &view, &p);
        assert_eq!(
            ops_json(&known),
            serde_json::json!([{"op": "add", "path": "/metadata/labels/team", "value": "checkout"}])
        );
        let unknown = mutate(&object, &NoClusterView, &p);
        assert!(unknown.patch.is_empty());
        assert_eq!(unknown.warnings.len(), 1);
        assert!(
            unknown.warnings[0].contains("from label team of namespace shop"),
            "{:?}",
            unknown.warnings
        );
    }

    #[test]
    fn a_service_that_gained_a_selector_loses_its_stale_shape_label_and_target() {
        let (object, _) = first(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {extsvc-guard.io/shape: ip-mapping}, annotations: {extsvc-guard.io/target: '10.0.0.1:80'}}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
        );
        let m = mutate(&object, &NoClusterView, &shape());
        assert_eq!(
            ops_json(&m),
            serde_json::json!([
                {"op": "remove", "path": "/metadata/labels/extsvc-guard.io~1shape"},
                {"op": "remove", "path": "/metadata/annotations/extsvc-guard.io~1target"},
            ])
        );
    }

    #[test]
    fn an_external_name_turned_selectorless_drops_the_old_host_target() {
        let (object, _) = first(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db, labels: {extsvc-guard.io/shape: external-name}, annotations: {extsvc-guard.io/target: db.example.com}}\nspec: {ports: [{port: 5432}]}\n",
        );
        let m = mutate(&object, &NoClusterView, &shape());
        assert_eq!(
            ops_json(&m),
            serde_json::json!([
                {"op": "replace", "path": "/metadata/labels/extsvc-guard.io~1shape", "value": "ip-mapping"},
                {"op": "remove", "path": "/metadata/annotations/extsvc-guard.io~1target"},
            ])
        );
        // An address target may still be right: without a cluster view it is kept.
        let (object, _) = first(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db, labels: {extsvc-guard.io/shape: ip-mapping}, annotations: {extsvc-guard.io/target: '203.0.113.7:5432'}}\nspec: {ports: [{port: 5432}]}\n",
        );
        assert!(mutate(&object, &NoClusterView, &shape()).patch.is_empty());
    }

    #[test]
    fn the_default_policy_patches_nothing() {
        let (object, _) = first(EXTERNAL_NAME);
        assert_eq!(
            mutate(&object, &NoClusterView, &Policy::embedded()),
            Mutation::default()
        );
        // Our keys left from when the shape metadata was on stay as they are, even on a
        // Service that no longer leaves the cluster.
        let (object, _) = first(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db, labels: {extsvc-guard.io/shape: external-name}, annotations: {extsvc-guard.io/target: db.example.com}}\nspec: {selector: {app: db}, ports: [{port: 5432}]}\n",
        );
        assert_eq!(
            mutate(&object, &NoClusterView, &Policy::embedded()),
            Mutation::default()
        );
    }

    #[test]
    fn selector_services_and_exempt_namespaces_get_no_patch() {
        for yaml in [
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: kube-system}\nspec: {type: ExternalName, externalName: a.example.com}\n",
        ] {
            let (object, _) = first(yaml);
            assert_eq!(
                mutate(&object, &NoClusterView, &shape()),
                Mutation::default(),
                "{yaml}"
            );
        }
    }
}
