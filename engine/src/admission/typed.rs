//! Reading the object of a review into the typed objects the rules judge, without what no
//! rule reads: of `metadata.managedFields`, everything but the managers' names (which tell
//! the control plane's writes apart); the field sets (`fieldsV1`, a JSON tree per writer) can
//! be half of a small object and most of the allocations of reading it. Everything else is
//! read as k8s-openapi reads it, with the same types.
//!
//! An Endpoints' address lists and an EndpointSlice's endpoints are grown in a compact form
//! and moved into k8s-openapi's type once their length is known: growing
//! `Vec<EndpointAddress>` (240 bytes an element) by doubling held up to three times the
//! final list at once, 90 MB for a review near the body limit.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CoreEndpointPort, EndpointSubset, Endpoints, ObjectReference,
    Service, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::object::{Kind, Object};

/// Reads `text` as an object of the judged `kind`.
pub(super) fn read(kind: Kind, text: &str) -> Result<Object, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let object = read_from(kind, &mut deserializer)?;
    deserializer.end()?;
    Ok(object)
}

/// Reads the next value of `deserializer` as the judged `kind`: what [`read`] does with a
/// text, done in place while the review around the object is read.
pub(super) fn read_from<'de, D: Deserializer<'de>>(
    kind: Kind,
    deserializer: D,
) -> Result<Object, D::Error> {
    Ok(match kind {
        Kind::Service => {
            let s = ServiceText::deserialize(deserializer)?;
            check_type::<D::Error>(s.api_version, s.kind, "v1", "Service")?;
            Object::Service(Service {
                metadata: object_meta(s.metadata),
                spec: s.spec,
                status: s.status,
            })
        }
        Kind::Endpoints => {
            let e = EndpointsText::deserialize(deserializer)?;
            check_type::<D::Error>(e.api_version, e.kind, "v1", "Endpoints")?;
            Object::Endpoints(Endpoints {
                metadata: object_meta(e.metadata),
                subsets: e.subsets.map(|subsets| {
                    subsets
                        .into_iter()
                        .map(|s| EndpointSubset {
                            addresses: s.addresses.map(|a| a.0),
                            not_ready_addresses: s.not_ready_addresses.map(|a| a.0),
                            ports: s.ports,
                        })
                        .collect()
                }),
            })
        }
        Kind::EndpointSlice => {
            let s = EndpointSliceText::deserialize(deserializer)?;
            check_type::<D::Error>(
                s.api_version,
                s.kind,
                "discovery.k8s.io/v1",
                "EndpointSlice",
            )?;
            Object::EndpointSlice(EndpointSlice {
                address_type: s.address_type.unwrap_or_default(),
                endpoints: s.endpoints.map(|e| e.0).unwrap_or_default(),
                metadata: object_meta(s.metadata),
                ports: s.ports,
            })
        }
    })
}

/// As k8s-openapi: an `apiVersion` or `kind` that is there must be the one read.
fn check_type<E: serde::de::Error>(
    api_version: Option<String>,
    kind: Option<String>,
    want_version: &'static str,
    want_kind: &'static str,
) -> Result<(), E> {
    for (found, want) in [(api_version, want_version), (kind, want_kind)] {
        if let Some(found) = found
            && found != want
        {
            return Err(E::invalid_value(serde::de::Unexpected::Str(&found), &want));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceText {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<MetaText>,
    spec: Option<ServiceSpec>,
    status: Option<ServiceStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointsText {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<MetaText>,
    subsets: Option<Vec<SubsetText>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubsetText {
    addresses: Option<Addresses>,
    not_ready_addresses: Option<Addresses>,
    ports: Option<Vec<CoreEndpointPort>>,
}

/// A list read element by element as k8s-openapi reads it, grown in the compact form `C`
/// and moved into `Vec<T>` once its length is known.
struct Grown<T, C>(Vec<T>, PhantomData<C>);

/// Lists up to this long are grown in their own type: the compact form only pays off for
/// long ones, and costs two more allocations.
const SHORT_LIST: usize = 64;

type Addresses = Grown<EndpointAddress, CompactAddress>;
type SliceEndpoints = Grown<Endpoint, CompactEndpoint>;

impl<'de, T, C> Deserialize<'de> for Grown<T, C>
where
    T: Deserialize<'de> + From<C>,
    C: From<T>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct List<T, C>(PhantomData<(T, C)>);
        impl<'de, T, C> Visitor<'de> for List<T, C>
        where
            T: Deserialize<'de> + From<C>,
            C: From<T>,
        {
            type Value = Grown<T, C>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Short lists, the everyday ones, are read straight into their type.
                let mut short = Vec::new();
                while short.len() < SHORT_LIST {
                    match seq.next_element::<T>()? {
                        Some(element) => short.push(element),
                        None => return Ok(Grown(short, PhantomData)),
                    }
                }
                let mut compact: Vec<C> = short.into_iter().map(C::from).collect();
                while let Some(element) = seq.next_element::<T>()? {
                    compact.push(C::from(element));
                }
                // Up to half of the compact list is spare room: give it back first.
                compact.shrink_to_fit();
                let mut list = Vec::with_capacity(compact.len());
                list.extend(compact.into_iter().map(T::from));
                Ok(Grown(list, PhantomData))
            }
        }
        deserializer.deserialize_seq(List(PhantomData))
    }
}

/// An `EndpointAddress` while its list grows: its rare object reference boxed (80 bytes
/// instead of 240 with k8s-openapi 0.29).
struct CompactAddress {
    hostname: Option<String>,
    ip: String,
    node_name: Option<String>,
    target_ref: Option<Box<ObjectReference>>,
}

impl From<EndpointAddress> for CompactAddress {
    fn from(a: EndpointAddress) -> CompactAddress {
        CompactAddress {
            hostname: a.hostname,
            ip: a.ip,
            node_name: a.node_name,
            target_ref: a.target_ref.map(Box::new),
        }
    }
}

impl From<CompactAddress> for EndpointAddress {
    fn from(c: CompactAddress) -> EndpointAddress {
        EndpointAddress {
            hostname: c.hostname,
            ip: c.ip,
            node_name: c.node_name,
            target_ref: c.target_ref.map(|r| *r),
        }
    }
}

/// An EndpointSlice's `Endpoint` while the list grows: what most endpoints leave out
/// boxed together (112 bytes instead of 352 with k8s-openapi 0.29).
struct CompactEndpoint {
    addresses: Vec<String>,
    conditions: Option<EndpointConditions>,
    hostname: Option<String>,
    node_name: Option<String>,
    zone: Option<String>,
    rare: Option<Box<RareEndpointFields>>,
}

struct RareEndpointFields {
    deprecated_topology: Option<BTreeMap<String, String>>,
    hints: Option<EndpointHints>,
    target_ref: Option<ObjectReference>,
}

impl From<Endpoint> for CompactEndpoint {
    fn from(e: Endpoint) -> CompactEndpoint {
        let rare = (e.deprecated_topology.is_some() || e.hints.is_some() || e.target_ref.is_some())
            .then(|| {
                Box::new(RareEndpointFields {
                    deprecated_topology: e.deprecated_topology,
                    hints: e.hints,
                    target_ref: e.target_ref,
                })
            });
        CompactEndpoint {
            addresses: e.addresses,
            conditions: e.conditions,
            hostname: e.hostname,
            node_name: e.node_name,
            zone: e.zone,
            rare,
        }
    }
}

impl From<CompactEndpoint> for Endpoint {
    fn from(c: CompactEndpoint) -> Endpoint {
        let rare = c.rare.map(|r| *r);
        let (deprecated_topology, hints, target_ref) = match rare {
            Some(r) => (r.deprecated_topology, r.hints, r.target_ref),
            None => (None, None, None),
        };
        Endpoint {
            addresses: c.addresses,
            conditions: c.conditions,
            deprecated_topology,
            hints,
            hostname: c.hostname,
            node_name: c.node_name,
            target_ref,
            zone: c.zone,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointSliceText {
    api_version: Option<String>,
    kind: Option<String>,
    address_type: Option<String>,
    endpoints: Option<SliceEndpoints>,
    #[serde(default)]
    metadata: Option<MetaText>,
    ports: Option<Vec<EndpointPort>>,
}

/// `ObjectMeta` as k8s-openapi reads it, but for the managed fields' entries.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaText {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    managed_fields: Option<Vec<ManagerText>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

/// Of a field manager's entry, only its name is read: it tells the control plane's writes
/// apart; the rest (a time to parse, the field sets) no rule reads. Unknown fields are
/// skipped unread.
#[derive(Deserialize)]
struct ManagerText {
    manager: Option<String>,
}

/// The metadata read, as k8s-openapi's type (empty when the object has none).
fn object_meta(meta: Option<MetaText>) -> ObjectMeta {
    let Some(m) = meta else {
        return ObjectMeta::default();
    };
    ObjectMeta {
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        deletion_timestamp: m.deletion_timestamp,
        finalizers: m.finalizers,
        generate_name: m.generate_name,
        generation: m.generation,
        labels: m.labels,
        managed_fields: m.managed_fields.map(|entries| {
            entries
                .into_iter()
                .map(|e| ManagedFieldsEntry {
                    manager: e.manager,
                    ..ManagedFieldsEntry::default()
                })
                .collect()
        }),
        name: m.name,
        namespace: m.namespace,
        owner_references: m.owner_references,
        resource_version: m.resource_version,
        self_link: m.self_link,
        uid: m.uid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What k8s-openapi reads, with the managed fields' entries reduced to their manager.
    fn as_k8s_openapi_reads(kind: &str, text: &str) -> Result<Object, serde_json::Error> {
        let mut object = match kind {
            "Service" => Object::Service(serde_json::from_str(text)?),
            "Endpoints" => Object::Endpoints(serde_json::from_str(text)?),
            _ => Object::EndpointSlice(serde_json::from_str(text)?),
        };
        let meta = match &mut object {
            Object::Service(s) => &mut s.metadata,
            Object::Endpoints(e) => &mut e.metadata,
            Object::EndpointSlice(s) => &mut s.metadata,
        };
        for entry in meta.managed_fields.iter_mut().flatten() {
            *entry = ManagedFieldsEntry {
                manager: entry.manager.take(),
                ..ManagedFieldsEntry::default()
            };
        }
        Ok(object)
    }

    #[test]
    fn every_captured_object_reads_as_k8s_openapi_reads_it_but_for_the_managed_fields() {
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/admission"
        ));
        let entries = std::fs::read_dir(dir).unwrap();
        let mut count = 0;
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let Ok(review) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let kind = review["request"]["kind"]["kind"].as_str().unwrap_or("");
            if !["Service", "Endpoints", "EndpointSlice"].contains(&kind) {
                continue;
            }
            for field in ["object", "oldObject"] {
                let object = &review["request"][field];
                if object.is_null() {
                    continue;
                }
                let text = object.to_string();
                let ours =
                    read(Kind::from_name(kind).unwrap(), &text).expect("a captured object reads");
                let theirs = as_k8s_openapi_reads(kind, &text).expect("k8s-openapi reads it");
                assert_eq!(ours, theirs, "{} {field}", entry.path().display());
                count += 1;
            }
        }
        assert!(count > 50, "only {count} captured objects read");
    }

    #[test]
    fn long_lists_with_every_field_read_as_k8s_openapi_reads_them() {
        let address = r#"{"ip":"10.0.0.1","hostname":"h","nodeName":"n","targetRef":{"kind":"Pod","name":"p"}}"#;
        let addresses = [address, r#"{"ip":"10.0.0.2"}"#, r#"{"nodeName":"no-ip"}"#].repeat(700);
        let endpoints = format!(
            r#"{{"apiVersion":"v1","kind":"Endpoints","metadata":{{"name":"db"}},"subsets":[{{"addresses":[{a}],"notReadyAddresses":[{a}],"ports":[{{"port":5432}}]}},{{"addresses":null}}]}}"#,
            a = addresses.join(",")
        );
        let endpoint = r#"{"addresses":["10.0.0.1"],"conditions":{"ready":true},"deprecatedTopology":{"a":"b"},"hints":{"forZones":[{"name":"z"}]},"hostname":"h","nodeName":"n","targetRef":{"kind":"Pod","name":"p"},"zone":"z"}"#;
        let slice_endpoints = [endpoint, r#"{"addresses":["10.0.0.2"]}"#].repeat(1000);
        let slice = format!(
            r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","addressType":"IPv4","metadata":{{"name":"db-1"}},"endpoints":[{}]}}"#,
            slice_endpoints.join(",")
        );
        for (kind, text) in [("Endpoints", endpoints), ("EndpointSlice", slice)] {
            assert_eq!(
                read(Kind::from_name(kind).unwrap(), &text).expect("reads"),
                as_k8s_openapi_reads(kind, &text).expect("k8s-openapi reads"),
                "{kind}"
            );
        }
        // A wrong element, in a short list or past its end, is refused as k8s-openapi
        // refuses it.
        for before in [1, SHORT_LIST, 100] {
            let text = format!(
                r#"{{"subsets":[{{"addresses":[{}{{"ip":7}}]}}]}}"#,
                r#"{"ip":"10.0.0.1"},"#.repeat(before)
            );
            assert_eq!(
                read(Kind::Endpoints, &text).map_err(|e| e.to_string()),
                as_k8s_openapi_reads("Endpoints", &text).map_err(|e| e.to_string()),
                "{before}"
            );
        }
    }

    #[test]
    fn the_compact_forms_take_less_than_half_the_room() {
        use std::mem::size_of;
        assert!(size_of::<CompactAddress>() * 2 < size_of::<EndpointAddress>());
        assert!(size_of::<CompactEndpoint>() * 2 < size_of::<Endpoint>());
    }

    #[test]
    fn managers_are_kept_and_their_field_sets_skipped() {
        let text = r#"{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"db",
            "managedFields":[{"manager":"kube-controller-manager","operation":"Update",
            "fieldsType":"FieldsV1","fieldsV1":{"f:subsets":{}}}]}}"#;
        let Object::Endpoints(e) = read(Kind::Endpoints, text).expect("reads") else {
            panic!("not Endpoints");
        };
        let entries = e.metadata.managed_fields.expect("managed fields");
        assert_eq!(
            entries[0].manager.as_deref(),
            Some("kube-controller-manager")
        );
        assert_eq!(entries[0].fields_v1, None);
    }

    /// The API server validates managed fields on every write; what it stores is never
    /// malformed, and the webhook no longer reads what no rule needs to find out.
    #[test]
    fn of_a_managers_entry_only_the_name_is_read_and_the_rest_may_be_anything() {
        let text = r#"{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"db",
            "managedFields":[{"manager":"kubectl","operation":5,"time":"not a time",
            "apiVersion":[],"subresource":{}}]}}"#;
        let Object::Endpoints(e) = read(Kind::Endpoints, text).expect("reads") else {
            panic!("not Endpoints");
        };
        let entries = e.metadata.managed_fields.expect("managed fields");
        assert_eq!(
            entries[0],
            ManagedFieldsEntry {
                manager: Some("kubectl".to_owned()),
                ..ManagedFieldsEntry::default()
            }
        );
        let wrong_manager = text.replace(r#""kubectl""#, "7");
        assert!(read(Kind::Endpoints, &wrong_manager).is_err());
    }

    #[test]
    fn a_wrong_kind_or_api_version_is_refused_as_k8s_openapi_refuses_it() {
        for text in [
            r#"{"apiVersion":"v1","kind":"Endpoints"}"#,
            r#"{"apiVersion":"v2","kind":"Service"}"#,
        ] {
            let err = read(Kind::Service, text).expect_err("refused");
            assert!(as_k8s_openapi_reads("Service", text).is_err());
            assert!(err.to_string().contains("invalid value"), "{err}");
        }
        assert!(read(Kind::Service, "{}").is_ok());
        assert!(read(Kind::EndpointSlice, r#"{"metadata":null}"#).is_ok());
    }
}
