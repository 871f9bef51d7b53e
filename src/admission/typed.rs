//! Reading the object of a review into the typed objects the rules judge, without what no
//! rule reads: the field sets of `metadata.managedFields` (`fieldsV1`, a JSON tree per writer
//! that can be half of a small object and most of the allocations of reading it). Everything
//! else is read as k8s-openapi reads it, with the same types; the managers' names stay,
//! since they tell the control plane's writes apart.
//!
//! An Endpoints' address lists are grown in a compact form and moved into k8s-openapi's
//! type once their length is known: growing `Vec<EndpointAddress>` (240 bytes an element)
//! by doubling held up to three times the final list at once, 90 MB for a review near the
//! body limit.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CoreEndpointPort, EndpointSubset, Endpoints, ObjectReference,
    Service, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use serde::de::Error as _;
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::object::Object;

/// Reads `text` as the judged `kind` ("Service", "Endpoints" or "EndpointSlice").
pub(super) fn read(kind: &str, text: &str) -> Result<Object, serde_json::Error> {
    Ok(match kind {
        "Service" => {
            let s: ServiceText = serde_json::from_str(text)?;
            check_type(s.api_version, s.kind, "v1", "Service")?;
            Object::Service(Service {
                metadata: object_meta(s.metadata),
                spec: s.spec,
                status: s.status,
            })
        }
        "Endpoints" => {
            let e: EndpointsText = serde_json::from_str(text)?;
            check_type(e.api_version, e.kind, "v1", "Endpoints")?;
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
        _ => {
            let s: EndpointSliceText = serde_json::from_str(text)?;
            check_type(
                s.api_version,
                s.kind,
                "discovery.k8s.io/v1",
                "EndpointSlice",
            )?;
            Object::EndpointSlice(EndpointSlice {
                address_type: s.address_type.unwrap_or_default(),
                endpoints: s.endpoints.unwrap_or_default(),
                metadata: object_meta(s.metadata),
                ports: s.ports,
            })
        }
    })
}

/// As k8s-openapi: an `apiVersion` or `kind` that is there must be the one read.
fn check_type(
    api_version: Option<String>,
    kind: Option<String>,
    want_version: &'static str,
    want_kind: &'static str,
) -> Result<(), serde_json::Error> {
    for (found, want) in [(api_version, want_version), (kind, want_kind)] {
        if let Some(found) = found
            && found != want
        {
            return Err(serde_json::Error::invalid_value(
                serde::de::Unexpected::Str(&found),
                &want,
            ));
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

/// An address list read as k8s-openapi reads it, element by element.
struct Addresses(Vec<EndpointAddress>);

/// An `EndpointAddress` while its list grows: its strings moved, its rare object reference
/// boxed (80 bytes instead of 240).
struct CompactAddress {
    hostname: Option<String>,
    ip: String,
    node_name: Option<String>,
    target_ref: Option<Box<ObjectReference>>,
}

impl<'de> Deserialize<'de> for Addresses {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Addresses, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Addresses;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Addresses, A::Error> {
                let mut compact = Vec::new();
                while let Some(a) = seq.next_element::<EndpointAddress>()? {
                    compact.push(CompactAddress {
                        hostname: a.hostname,
                        ip: a.ip,
                        node_name: a.node_name,
                        target_ref: a.target_ref.map(Box::new),
                    });
                }
                // Up to half of the compact list is spare room: give it back first.
                compact.shrink_to_fit();
                let mut list = Vec::with_capacity(compact.len());
                list.extend(compact.into_iter().map(|c| EndpointAddress {
                    hostname: c.hostname,
                    ip: c.ip,
                    node_name: c.node_name,
                    target_ref: c.target_ref.map(|r| *r),
                }));
                Ok(Addresses(list))
            }
        }
        deserializer.deserialize_seq(List)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointSliceText {
    api_version: Option<String>,
    kind: Option<String>,
    address_type: Option<String>,
    endpoints: Option<Vec<Endpoint>>,
    #[serde(default)]
    metadata: Option<MetaText>,
    ports: Option<Vec<EndpointPort>>,
}

/// `ObjectMeta` as k8s-openapi reads it, but for the managed fields' field sets.
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

/// A managed-fields entry; `fieldsV1` is skipped unread (serde ignores unknown fields).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManagerText {
    api_version: Option<String>,
    fields_type: Option<String>,
    manager: Option<String>,
    operation: Option<String>,
    subresource: Option<String>,
    time: Option<Time>,
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
                    api_version: e.api_version,
                    fields_type: e.fields_type,
                    fields_v1: None,
                    manager: e.manager,
                    operation: e.operation,
                    subresource: e.subresource,
                    time: e.time,
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

    /// What k8s-openapi reads, with the managed fields' field sets left out.
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
            entry.fields_v1 = None;
        }
        Ok(object)
    }

    #[test]
    fn every_captured_object_reads_as_k8s_openapi_reads_it_but_for_the_field_sets() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/admission");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return; // ../shared is beside the checkout in CI; the docs tests say so if not.
        };
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
                let ours = read(kind, &text).expect("a captured object reads");
                let theirs = as_k8s_openapi_reads(kind, &text).expect("k8s-openapi reads it");
                assert_eq!(ours, theirs, "{} {field}", entry.path().display());
                count += 1;
            }
        }
        assert!(count > 50, "only {count} captured objects read");
    }

    #[test]
    fn managers_are_kept_and_their_field_sets_skipped() {
        let text = r#"{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"db",
            "managedFields":[{"manager":"kube-controller-manager","operation":"Update",
            "fieldsType":"FieldsV1","fieldsV1":{"f:subsets":{}}}]}}"#;
        let Object::Endpoints(e) = read("Endpoints", text).expect("reads") else {
            panic!("not Endpoints");
        };
        let entries = e.metadata.managed_fields.expect("managed fields");
        assert_eq!(
            entries[0].manager.as_deref(),
            Some("kube-controller-manager")
        );
        assert_eq!(entries[0].fields_v1, None);
    }

    #[test]
    fn a_wrong_kind_or_api_version_is_refused_as_k8s_openapi_refuses_it() {
        for text in [
            r#"{"apiVersion":"v1","kind":"Endpoints"}"#,
            r#"{"apiVersion":"v2","kind":"Service"}"#,
        ] {
            let err = read("Service", text).expect_err("refused");
            assert!(as_k8s_openapi_reads("Service", text).is_err());
            assert!(err.to_string().contains("invalid value"), "{err}");
        }
        assert!(read("Service", "{}").is_ok());
        assert!(read("EndpointSlice", r#"{"metadata":null}"#).is_ok());
    }
}
