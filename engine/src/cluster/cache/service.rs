//! A Service as the cache keeps it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort as TypedServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cluster::consumers::EXTERNAL_DNS_PREFIX;
use crate::cluster::{ServiceInfo, ServicePortInfo};
use crate::object::{ServiceShape, is_headless, protocol_or_tcp};

use super::compact::{Interner, Kept, Meta};

#[derive(Debug, Clone)]
pub(super) struct ServicePort {
    pub(super) name: Arc<str>,
    pub(super) protocol: Arc<str>,
    pub(super) port: i32,
    pub(super) target_port: Option<IntOrString>,
}

/// What the rules read of a Service besides its projection, when it has any of it.
#[derive(Debug, Clone, Default)]
pub(super) struct ServiceRest {
    /// ExternalName only.
    pub(super) external_name: Option<Box<str>>,
    pub(super) external_ips: Box<[Box<str>]>,
    /// `appProtocol` of each port, by position (ExternalName only: HTTP-like ports).
    pub(super) app_protocols: Box<[Option<Arc<str>>]>,
    pub(super) meta: Option<Box<Meta>>,
}

/// The forms as stored: namespace and name are the keys of the maps holding them, strings
/// that repeat across objects are shared, lists are boxed slices, IP addresses are bytes.
/// About a third of the public projections' size; converted back on every read.
#[derive(Debug, Clone)]
pub(super) struct StoredService {
    pub(super) shape: ServiceShape,
    pub(super) headless: bool,
    pub(super) ports: Box<[ServicePort]>,
    pub(super) rest: Option<Box<ServiceRest>>,
}

/// A stand-in for the selector of a rebuilt Service: in a set, no rule reads a selector's
/// labels (only whether there is one), so they are not kept.
pub(super) const SELECTOR_NOT_KEPT: &str = "extsvc-guard.io/selector-not-kept";

impl StoredService {
    pub(super) fn new(service: Service, kept: &Kept, strings: &mut Interner) -> StoredService {
        let shape = ServiceShape::of(&service);
        let headless = is_headless(&service);
        let Service {
            mut metadata, spec, ..
        } = service;
        let spec = spec.unwrap_or_default();
        let external = shape == ServiceShape::ExternalName;
        let mut app_protocols = Vec::new();
        let ports: Box<[ServicePort]> = spec
            .ports
            .into_iter()
            .flatten()
            .map(|p| {
                app_protocols.push(p.app_protocol.filter(|_| external).map(|a| strings.get(&a)));
                ServicePort {
                    name: strings.get(p.name.as_deref().unwrap_or_default()),
                    protocol: strings.get(protocol_or_tcp(p.protocol.as_ref())),
                    port: p.port,
                    target_port: p.target_port,
                }
            })
            .collect();
        if app_protocols.iter().all(Option::is_none) {
            app_protocols.clear();
        }
        // required-metadata reads the labels and annotations of Services that leave the
        // cluster only; externalname-ip names an external-dns annotation of an ExternalName.
        let meta = match shape {
            ServiceShape::InCluster => Meta::new(
                &mut metadata,
                &Kept {
                    uid: kept.uid,
                    ..Kept::default()
                },
                |_| false,
                strings,
            ),
            _ => Meta::new(
                &mut metadata,
                kept,
                |k| external && k.starts_with(EXTERNAL_DNS_PREFIX),
                strings,
            ),
        };
        let rest = ServiceRest {
            external_name: spec
                .external_name
                .filter(|_| external)
                .map(String::into_boxed_str),
            external_ips: spec
                .external_ips
                .into_iter()
                .flatten()
                .map(String::into_boxed_str)
                .collect(),
            app_protocols: app_protocols.into_boxed_slice(),
            meta,
        };
        let empty = rest.external_name.is_none()
            && rest.external_ips.is_empty()
            && rest.app_protocols.is_empty()
            && rest.meta.is_none();
        StoredService {
            shape,
            headless,
            ports,
            rest: (!empty).then(|| Box::new(rest)),
        }
    }

    pub(super) fn info(&self, namespace: &str, name: &str) -> ServiceInfo {
        ServiceInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            shape: self.shape,
            ports: self
                .ports
                .iter()
                .map(|p| ServicePortInfo {
                    name: p.name.to_string(),
                    protocol: p.protocol.to_string(),
                    port: p.port,
                    target_port: p.target_port.clone(),
                })
                .collect(),
        }
    }

    /// The Service as the rules judge it in a set.
    pub(super) fn object(&self, namespace: &str, name: &str) -> Service {
        let rest = self.rest.as_deref();
        let ports: Vec<TypedServicePort> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| TypedServicePort {
                name: (!p.name.is_empty()).then(|| p.name.to_string()),
                protocol: Some(p.protocol.to_string()),
                port: p.port,
                target_port: p.target_port.clone(),
                app_protocol: rest
                    .and_then(|r| r.app_protocols.get(i).cloned().flatten())
                    .map(|a| a.to_string()),
                ..TypedServicePort::default()
            })
            .collect();
        let spec = ServiceSpec {
            type_: (self.shape == ServiceShape::ExternalName).then(|| "ExternalName".to_owned()),
            external_name: rest
                .and_then(|r| r.external_name.as_deref())
                .map(str::to_owned),
            selector: (self.shape == ServiceShape::InCluster)
                .then(|| BTreeMap::from([(SELECTOR_NOT_KEPT.to_owned(), String::new())])),
            cluster_ip: self.headless.then(|| "None".to_owned()),
            ports: (!ports.is_empty()).then_some(ports),
            external_ips: rest
                .filter(|r| !r.external_ips.is_empty())
                .map(|r| r.external_ips.iter().map(|ip| ip.to_string()).collect()),
            ..ServiceSpec::default()
        };
        Service {
            metadata: Meta::object_meta(
                rest.and_then(|r| r.meta.as_deref()),
                namespace,
                name,
                &[],
                &[],
            ),
            spec: Some(spec),
            status: None,
        }
    }
}
