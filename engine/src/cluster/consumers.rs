//! Who sends traffic to a Service besides in-cluster DNS clients: Ingresses and Gateway API
//! routes name it as a backend, and their controllers proxy to it themselves. Some findings
//! that are right for DNS clients are wrong for these consumers (an ingress controller
//! accepts an IP in `externalName`; a Gateway routes to endpoint ports, not the Service
//! port), so the rules ask who consumes a Service (see `ClusterView::consumers_of`).

use std::fmt;

use serde_json::Value;

/// A kind of object that sends traffic to the Services it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConsumerKind {
    Ingress,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
}

impl ConsumerKind {
    /// Every kind, with its API group, the versions read and its plural resource name.
    pub const ALL: [(
        ConsumerKind,
        &'static str,
        &'static [&'static str],
        &'static str,
    ); 4] = [
        (
            ConsumerKind::Ingress,
            "networking.k8s.io",
            &["v1"],
            "ingresses",
        ),
        (
            ConsumerKind::HttpRoute,
            "gateway.networking.k8s.io",
            &["v1", "v1beta1"],
            "httproutes",
        ),
        (
            ConsumerKind::GrpcRoute,
            "gateway.networking.k8s.io",
            &["v1", "v1alpha2"],
            "grpcroutes",
        ),
        (
            ConsumerKind::TlsRoute,
            "gateway.networking.k8s.io",
            &["v1alpha3", "v1alpha2"],
            "tlsroutes",
        ),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerKind::Ingress => "Ingress",
            ConsumerKind::HttpRoute => "HTTPRoute",
            ConsumerKind::GrpcRoute => "GRPCRoute",
            ConsumerKind::TlsRoute => "TLSRoute",
        }
    }

    /// The kind of an object of `kind` and `api_version`, when it is a consumer.
    pub fn of(kind: &str, api_version: &str) -> Option<ConsumerKind> {
        let (group, version) = api_version.split_once('/')?;
        ConsumerKind::ALL
            .iter()
            .find(|(k, g, versions, _)| {
                k.as_str() == kind && *g == group && versions.contains(&version)
            })
            .map(|(k, ..)| *k)
    }
}

/// One object that sends traffic to a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Consumer {
    pub kind: ConsumerKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// The Services (namespace, name) that `object`, a consumer of `kind`, sends traffic to.
/// Tolerant: a field it cannot read names no backend.
pub fn backends(kind: ConsumerKind, object: &Value) -> Vec<(String, String)> {
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(crate::object::DEFAULT_NAMESPACE);
    let mut found = Vec::new();
    let mut add = |ns: &str, name: Option<&str>| {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            let pair = (ns.to_owned(), name.to_owned());
            if !found.contains(&pair) {
                found.push(pair);
            }
        }
    };
    let rules = object
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    match kind {
        ConsumerKind::Ingress => {
            if let Some(default) = object.pointer("/spec/defaultBackend") {
                add(namespace, ingress_service(default));
            }
            for rule in rules {
                let paths = rule.pointer("/http/paths").and_then(Value::as_array);
                for path in paths.into_iter().flatten() {
                    if let Some(backend) = path.get("backend") {
                        add(namespace, ingress_service(backend));
                    }
                }
            }
        }
        ConsumerKind::HttpRoute | ConsumerKind::GrpcRoute | ConsumerKind::TlsRoute => {
            for rule in rules {
                let refs = rule.get("backendRefs").and_then(Value::as_array);
                for backend in refs.into_iter().flatten() {
                    let group = backend.get("group").and_then(Value::as_str).unwrap_or("");
                    let kind = backend
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("Service");
                    if group.is_empty() && kind == "Service" {
                        let ns = backend
                            .get("namespace")
                            .and_then(Value::as_str)
                            .unwrap_or(namespace);
                        add(ns, backend.get("name").and_then(Value::as_str));
                    }
                }
            }
        }
    }
    found
}

fn ingress_service(backend: &Value) -> Option<&str> {
    backend.pointer("/service/name").and_then(Value::as_str)
}

/// The consumer `object` is, and the Services it sends traffic to; `None` for other kinds.
pub fn consumer_of(object: &Value) -> Option<(Consumer, Vec<(String, String)>)> {
    let kind = ConsumerKind::of(
        object.get("kind")?.as_str()?,
        object.get("apiVersion")?.as_str()?,
    )?;
    let consumer = Consumer {
        kind,
        namespace: object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or(crate::object::DEFAULT_NAMESPACE)
            .to_owned(),
        name: object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    let backends = backends(kind, object);
    Some((consumer, backends))
}

/// Annotations external-dns reads: it publishes the Service under the names they give.
pub const EXTERNAL_DNS_PREFIX: &str = "external-dns.alpha.kubernetes.io/";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_ingress_names_its_default_and_path_backends() {
        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
                "rules": [{"host": "shop.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "legacy-api", "port": {"number": 443}}}},
                    {"path": "/x", "pathType": "Prefix", "backend": {"resource": {"kind": "Bucket", "name": "b"}}}]}}]}});
        let (consumer, backends) = consumer_of(&ingress).unwrap();
        assert_eq!(consumer.to_string(), "Ingress shop/web");
        assert_eq!(
            backends,
            vec![
                ("shop".to_owned(), "fallback".to_owned()),
                ("shop".to_owned(), "legacy-api".to_owned())
            ]
        );
    }

    #[test]
    fn a_route_names_its_service_backends_in_any_namespace() {
        let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "edge"},
            "spec": {"rules": [{"backendRefs": [
                {"name": "nas", "port": 8080},
                {"name": "api", "namespace": "shop", "port": 443},
                {"group": "example.com", "kind": "Bucket", "name": "b"}]}]}});
        let (consumer, backends) = consumer_of(&route).unwrap();
        assert_eq!(consumer.kind, ConsumerKind::HttpRoute);
        assert_eq!(
            backends,
            vec![
                ("edge".to_owned(), "nas".to_owned()),
                ("shop".to_owned(), "api".to_owned())
            ]
        );
        assert!(consumer_of(&json!({"apiVersion": "apps/v1", "kind": "Deployment"})).is_none());
    }
}
