//! An Endpoints or EndpointSlice as the cache keeps it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort as TypedSlicePort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference,
};

use crate::cluster::{EndpointPort, EndpointsInfo, SliceInfo};
use crate::object::{
    self, MANAGED_BY_LABEL, Object, SERVICE_NAME_LABEL, SliceController, namespace_of,
};
use crate::rules::endpoints_orphaned::LEADER_ANNOTATION;

use super::compact::{Address, Interner, Kept, Meta, Port, address_texts};
use super::service::StoredService;
use super::{Entry, WatchedKind};

/// One subset of an Endpoints, as written.
#[derive(Debug, Clone)]
pub(super) struct StoredSubset {
    pub(super) addresses: Box<[Address]>,
    pub(super) not_ready: Box<[Address]>,
    pub(super) ports: Box<[Port]>,
}

#[derive(Debug, Clone)]
pub(super) struct StoredEndpoints {
    pub(super) subsets: Box<[StoredSubset]>,
    /// It says the endpoints controller wrote it (see `EndpointsInfo::maintained`).
    pub(super) claims_controller: bool,
    /// A leader-election lock (`endpoints-orphaned` leaves it alone).
    pub(super) leader: bool,
    pub(super) meta: Option<Box<Meta>>,
}

/// The field manager of kube-controller-manager's writes: a rebuilt Endpoints claims the
/// endpoints controller by it, as `object::endpoints_claim_controller` reads claims.
pub(super) const CONTROLLER_MANAGER: &str = "kube-controller-manager";

impl StoredEndpoints {
    pub(super) fn new(
        endpoints: Endpoints,
        kept: &Kept,
        strings: &mut Interner,
    ) -> StoredEndpoints {
        let claims_controller = object::endpoints_claim_controller(&endpoints.metadata);
        let Endpoints {
            mut metadata,
            subsets,
        } = endpoints;
        let leader = metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
        let addresses = |list: Option<Vec<EndpointAddress>>| -> Box<[Address]> {
            list.into_iter()
                .flatten()
                .map(|a| Address::new(a.ip))
                .collect()
        };
        let subsets = subsets
            .into_iter()
            .flatten()
            .map(|s| StoredSubset {
                addresses: addresses(s.addresses),
                not_ready: addresses(s.not_ready_addresses),
                ports: s
                    .ports
                    .into_iter()
                    .flatten()
                    .map(|p| Port::new(p.name.as_ref(), p.protocol.as_ref(), Some(p.port), strings))
                    .collect(),
            })
            .collect();
        StoredEndpoints {
            subsets,
            claims_controller,
            leader,
            meta: Meta::new(&mut metadata, kept, |_| false, strings),
        }
    }

    pub(super) fn info(&self, namespace: &str, name: &str) -> EndpointsInfo {
        let mut ports: Vec<EndpointPort> = self
            .subsets
            .iter()
            .flat_map(|s| s.ports.iter().filter_map(Port::projection))
            .collect();
        ports.sort();
        ports.dedup();
        EndpointsInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            ports,
            addresses: address_texts(
                self.subsets
                    .iter()
                    .flat_map(|s| [&*s.addresses, &*s.not_ready]),
            ),
            claims_controller: self.claims_controller,
        }
    }

    /// The Endpoints as the rules judge it in a set.
    pub(super) fn object(&self, namespace: &str, name: &str) -> Endpoints {
        let addresses = |list: &[Address]| {
            (!list.is_empty()).then(|| {
                list.iter()
                    .map(|a| EndpointAddress {
                        ip: a.text(),
                        ..EndpointAddress::default()
                    })
                    .collect()
            })
        };
        let subsets: Vec<EndpointSubset> = self
            .subsets
            .iter()
            .map(|s| EndpointSubset {
                addresses: addresses(&s.addresses),
                not_ready_addresses: addresses(&s.not_ready),
                ports: (!s.ports.is_empty()).then(|| {
                    s.ports
                        .iter()
                        .map(|p| k8s_openapi::api::core::v1::EndpointPort {
                            name: p.name(),
                            protocol: Some(p.protocol.to_string()),
                            port: p.port.unwrap_or_default(),
                            app_protocol: None,
                        })
                        .collect()
                }),
            })
            .collect();
        let leader: &[(&str, &str)] = if self.leader {
            &[(LEADER_ANNOTATION, "")]
        } else {
            &[]
        };
        let mut metadata = Meta::object_meta(self.meta.as_deref(), namespace, name, &[], leader);
        if self.claims_controller {
            metadata.managed_fields = Some(vec![ManagedFieldsEntry {
                manager: Some(CONTROLLER_MANAGER.to_owned()),
                ..ManagedFieldsEntry::default()
            }]);
        }
        Endpoints {
            metadata,
            subsets: (!subsets.is_empty()).then_some(subsets),
        }
    }
}

/// An EndpointSlice's `addressType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    IPv4,
    IPv6,
    /// `FQDN` (deprecated) or anything else: its text is in the slice's rest.
    Other,
}

/// What the rules read of an EndpointSlice besides its projection, when it has any of it.
#[derive(Debug, Clone, Default)]
pub(super) struct SliceRest {
    /// `addressType` when it is neither IPv4 nor IPv6.
    pub(super) address_type: Option<Box<str>>,
    /// How many addresses each endpoint has, when not exactly one each (the usual case).
    pub(super) endpoint_sizes: Option<Box<[u32]>>,
    pub(super) meta: Option<Box<Meta>>,
}

#[derive(Debug, Clone)]
pub(super) struct StoredSlice {
    pub(super) service_name: Option<Box<str>>,
    pub(super) managed_by: Option<Arc<str>>,
    pub(super) family: Family,
    /// Every port, in order, numbered or not.
    pub(super) ports: Box<[Port]>,
    /// Every endpoint's addresses, in order.
    pub(super) addresses: Box<[Address]>,
    pub(super) controller: Option<SliceController>,
    pub(super) rest: Option<Box<SliceRest>>,
}

impl StoredSlice {
    pub(super) fn new(slice: EndpointSlice, kept: &Kept, strings: &mut Interner) -> StoredSlice {
        let EndpointSlice {
            address_type,
            endpoints,
            mut metadata,
            ports,
        } = slice;
        let controller = object::slice_claimed_controller(&metadata);
        // As `SliceInfo::of` reads them: an empty value is no value.
        let label = |key: &str| {
            metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(key))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let (service_name, managed_by) = (label(SERVICE_NAME_LABEL), label(MANAGED_BY_LABEL));
        let family = match address_type.as_str() {
            "IPv4" => Family::IPv4,
            "IPv6" => Family::IPv6,
            _ => Family::Other,
        };
        let sizes: Vec<u32> = endpoints
            .iter()
            .map(|e| u32::try_from(e.addresses.len()).unwrap_or(u32::MAX))
            .collect();
        let addresses = endpoints
            .into_iter()
            .flat_map(|e| e.addresses)
            .map(Address::new)
            .collect();
        // The two labels the projection holds are kept there; a kept label of the same key
        // is kept again only when the projection leaves it out (an empty value).
        if let Some(labels) = metadata.labels.as_mut() {
            for (key, value) in [
                (SERVICE_NAME_LABEL, &service_name),
                (MANAGED_BY_LABEL, &managed_by),
            ] {
                if value.is_some() {
                    labels.remove(key);
                }
            }
        }
        let rest = SliceRest {
            address_type: (family == Family::Other).then(|| address_type.into_boxed_str()),
            endpoint_sizes: sizes
                .iter()
                .any(|n| *n != 1)
                .then(|| sizes.into_boxed_slice()),
            meta: Meta::new(&mut metadata, kept, |_| false, strings),
        };
        let empty =
            rest.address_type.is_none() && rest.endpoint_sizes.is_none() && rest.meta.is_none();
        StoredSlice {
            service_name: service_name.map(String::into_boxed_str),
            managed_by: managed_by.map(|m| strings.get(&m)),
            family,
            ports: ports
                .into_iter()
                .flatten()
                .map(|p| Port::new(p.name.as_ref(), p.protocol.as_ref(), p.port, strings))
                .collect(),
            addresses,
            controller,
            rest: (!empty).then(|| Box::new(rest)),
        }
    }

    pub(super) fn info(&self, namespace: &str, name: &str) -> SliceInfo {
        SliceInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            service_name: self.service_name.as_deref().map(str::to_owned),
            managed_by: self.managed_by.as_deref().map(str::to_owned),
            ports: self.ports.iter().filter_map(Port::projection).collect(),
            addresses: address_texts(std::iter::once(&*self.addresses)),
            controller: self.controller,
        }
    }

    /// The EndpointSlice as the rules judge it in a set.
    pub(super) fn object(&self, namespace: &str, name: &str) -> EndpointSlice {
        let rest = self.rest.as_deref();
        let address_type = match self.family {
            Family::IPv4 => "IPv4".to_owned(),
            Family::IPv6 => "IPv6".to_owned(),
            Family::Other => rest
                .and_then(|r| r.address_type.as_deref())
                .unwrap_or("FQDN")
                .to_owned(),
        };
        let mut texts = self.addresses.iter().map(Address::text);
        let endpoints = match rest.and_then(|r| r.endpoint_sizes.as_deref()) {
            None => texts
                .map(|a| Endpoint {
                    addresses: vec![a],
                    ..Endpoint::default()
                })
                .collect(),
            Some(sizes) => sizes
                .iter()
                .map(|n| Endpoint {
                    addresses: texts.by_ref().take(*n as usize).collect(),
                    ..Endpoint::default()
                })
                .collect(),
        };
        let mut labels = Vec::new();
        if let Some(service) = &self.service_name {
            labels.push((SERVICE_NAME_LABEL, &**service));
        }
        if let Some(managed_by) = &self.managed_by {
            labels.push((MANAGED_BY_LABEL, &**managed_by));
        }
        let mut metadata = Meta::object_meta(
            rest.and_then(|r| r.meta.as_deref()),
            namespace,
            name,
            &labels,
            &[],
        );
        // The owner the controller it claims sets: its Service, or the Endpoints it mirrors.
        if let (Some(controller), Some(service)) = (self.controller, &self.service_name) {
            let kind = match controller {
                SliceController::EndpointSlice => "Service",
                SliceController::Mirroring => "Endpoints",
            };
            metadata.owner_references = Some(vec![OwnerReference {
                api_version: "v1".to_owned(),
                kind: kind.to_owned(),
                name: service.to_string(),
                controller: Some(true),
                ..OwnerReference::default()
            }]);
        }
        EndpointSlice {
            address_type,
            endpoints,
            metadata,
            ports: (!self.ports.is_empty()).then(|| {
                self.ports
                    .iter()
                    .map(|p| TypedSlicePort {
                        name: p.name(),
                        protocol: Some(p.protocol.to_string()),
                        port: p.port,
                        app_protocol: None,
                    })
                    .collect()
            }),
        }
    }
}

/// An entry as stored, made as it arrives.
#[derive(Debug, Clone)]
pub(super) enum Stored {
    Service(Box<str>, Box<str>, StoredService),
    Endpoints(Box<str>, Box<str>, StoredEndpoints),
    Slice(Box<str>, Box<str>, StoredSlice),
    Namespace(String, BTreeMap<String, String>),
}

impl Stored {
    pub(super) fn new(entry: Entry, kept: &Kept, strings: &mut Interner) -> Stored {
        let keys = |meta: &ObjectMeta| -> (Box<str>, Box<str>) {
            (
                namespace_of(meta).into(),
                object::name_of(meta).into_boxed_str(),
            )
        };
        match entry {
            Entry::Object(Object::Service(s)) => {
                let (ns, name) = keys(&s.metadata);
                Stored::Service(ns, name, StoredService::new(s, kept, strings))
            }
            Entry::Object(Object::Endpoints(e)) => {
                let (ns, name) = keys(&e.metadata);
                Stored::Endpoints(ns, name, StoredEndpoints::new(e, kept, strings))
            }
            Entry::Object(Object::EndpointSlice(s)) => {
                let (ns, name) = keys(&s.metadata);
                Stored::Slice(ns, name, StoredSlice::new(s, kept, strings))
            }
            Entry::Namespace { name, labels } => Stored::Namespace(name, labels),
        }
    }

    pub(super) fn kind(&self) -> WatchedKind {
        match self {
            Stored::Service(..) => WatchedKind::Services,
            Stored::Endpoints(..) => WatchedKind::Endpoints,
            Stored::Slice(..) => WatchedKind::EndpointSlices,
            Stored::Namespace(..) => WatchedKind::Namespaces,
        }
    }
}
