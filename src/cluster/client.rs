//! The connection to the API server: credentials, and the direct reads that confirm a
//! denial the cache suggests (`serve`) or list the whole cluster once (`scan`).

use std::path::PathBuf;
use std::time::Duration;

use futures::future::OptionFuture;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::cluster::consumers::{self, Consumer, ConsumerKind};
use crate::cluster::fresh::FreshScope;
use crate::cluster::{ManifestView, PodCount};
use crate::object::Object;

/// Where the credentials come from.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// A kubeconfig file; otherwise `KUBECONFIG`, `~/.kube/config`, then the in-cluster
    /// service account.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// Why there is no client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No kubeconfig and not in a cluster: not an error for `serve`, which then runs
    /// without a cluster view.
    #[error("no cluster configuration: {0}")]
    NotConfigured(String),
    #[error("{0}")]
    Invalid(String),
}

/// A client built from `credentials`.
pub async fn connect(credentials: &Credentials) -> Result<Client, ConnectError> {
    let options = KubeConfigOptions {
        context: credentials.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &credentials.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                ConnectError::Invalid(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| ConnectError::Invalid(format!("kubeconfig {}: {e}", path.display())))?
        }
        None if credentials.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| ConnectError::Invalid(format!("kubeconfig: {e}")))?,
        None => Config::infer()
            .await
            .map_err(|e| ConnectError::NotConfigured(e.to_string()))?,
    };
    let mut config = config;
    // A half-open connection must end a watch (the server closes watches after 290 s) and
    // never freeze a read.
    config.read_timeout = Some(Duration::from_secs(300));
    Client::try_from(config).map_err(|e| ConnectError::Invalid(format!("cluster client: {e}")))
}

/// Says what a failed API call means for the person running the webhook: a missing
/// permission names the verb and resource to grant.
pub fn explain(verb: &str, resource: &str, error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "missing permission: cannot {verb} {resource} ({}); grant it to the account extsvc-guard runs as (serve: the ClusterRole in deploy/base; scan: the permissions the README's scan section lists)",
            status.message
        ),
        kube::Error::Api(status) => format!(
            "{verb} {resource}: {} {} {}",
            status.code, status.reason, status.message
        ),
        other => format!("{verb} {resource}: {other}"),
    }
}

/// Pods read at most to count what a selector matches: enough to tell "none", "a few" and
/// "many" apart without listing a large namespace.
pub const PODS_COUNTED: u32 = 100;

/// Counts the Pods of `namespace` that `selector` matches (metadata only, at most
/// [`PODS_COUNTED`]): what a selector added to a Service hands its traffic to.
pub async fn count_pods(
    client: &Client,
    namespace: &str,
    selector: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<PodCount, String> {
    let labels = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let params = ListParams::default().labels(&labels).limit(PODS_COUNTED);
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    match tokio::time::timeout(timeout, pods.list_metadata(&params)).await {
        Ok(Ok(list)) => {
            let more = list
                .metadata
                .continue_
                .as_deref()
                .is_some_and(|c| !c.is_empty());
            Ok(match more {
                true => PodCount::AtLeast(list.items.len()),
                false => PodCount::Exactly(list.items.len()),
            })
        }
        Ok(Err(e)) => Err(explain("list", "pods", &e)),
        Err(_) => Err(format!(
            "the API server did not answer within {}ms",
            timeout.as_millis()
        )),
    }
}

/// Reads `scope` of one namespace afresh: its Services, its Endpoints and EndpointSlices,
/// its labels. What a confirmation of a cross-object denial judges against (over the cache).
pub async fn namespace_snapshot(
    client: &Client,
    namespace: &str,
    scope: FreshScope,
    timeout: Duration,
) -> Result<ManifestView, String> {
    let read = async {
        let params = ListParams::default();
        let services = Api::<Service>::namespaced(client.clone(), namespace);
        let endpoints = Api::<Endpoints>::namespaced(client.clone(), namespace);
        let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace);
        let namespaces = Api::<Namespace>::all(client.clone());
        let (services, endpoints, slices, ns, consumers) = tokio::join!(
            async { OptionFuture::from(scope.services.then(|| services.list(&params))).await },
            async { OptionFuture::from(scope.endpoints.then(|| endpoints.list(&params))).await },
            async { OptionFuture::from(scope.endpoints.then(|| slices.list(&params))).await },
            async { OptionFuture::from(scope.labels.then(|| namespaces.get_opt(namespace))).await },
            async {
                OptionFuture::from(
                    scope
                        .consumers
                        .then(|| list_consumers(client, Some(namespace))),
                )
                .await
            },
        );
        let mut view = ManifestView::new();
        if let Some(services) = services {
            for s in services.map_err(|e| explain("list", "services", &e))? {
                view.insert(&Object::Service(s));
            }
        }
        // All of them: the rules tell what a controller maintains from the Services.
        if let Some(endpoints) = endpoints {
            for e in endpoints.map_err(|e| explain("list", "endpoints", &e))? {
                view.insert(&Object::Endpoints(e));
            }
        }
        if let Some(slices) = slices {
            for s in slices.map_err(|e| explain("list", "endpointslices", &e))? {
                view.insert(&Object::EndpointSlice(s));
            }
        }
        if let Some(ns) = ns
            && let Some(ns) = ns.map_err(|e| explain("get", "namespaces", &e))?
        {
            view.insert_namespace(&ns);
        }
        // Without them the judgement only stays as strict as for DNS clients: not a failure.
        match consumers {
            Some(Ok(consumers)) => {
                for (consumer, backends) in consumers {
                    view.insert_consumer(&consumer, &backends);
                }
            }
            Some(Err(e)) => {
                tracing::warn!(namespace, error = %e, "cannot read the Ingresses and routes of the namespace")
            }
            None => {}
        }
        Ok(view)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the API server did not answer within {}ms",
            timeout.as_millis()
        )),
    }
}

/// The Ingresses and Gateway API routes of `namespace` (all namespaces when `None`), with
/// the Services they send traffic to. A kind the cluster does not serve (no Gateway API
/// CRDs) has none; one the account may not list is an error naming the permission.
pub async fn list_consumers(
    client: &Client,
    namespace: Option<&str>,
) -> Result<Vec<(Consumer, Vec<(String, String)>)>, String> {
    let mut found = Vec::new();
    for (kind, group, versions, plural) in ConsumerKind::ALL {
        for version in versions {
            let gvk = GroupVersionKind::gvk(group, version, kind.as_str());
            let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            match api.list(&ListParams::default()).await {
                Ok(list) => {
                    for object in list {
                        let Ok(mut value) = serde_json::to_value(&object) else {
                            continue;
                        };
                        value["apiVersion"] = format!("{group}/{version}").into();
                        value["kind"] = kind.as_str().into();
                        found.extend(consumers::consumer_of(&value));
                    }
                    break;
                }
                // Not served in this version (or at all): try the next one.
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(e) => return Err(explain("list", &format!("{plural}.{group}"), &e)),
            }
        }
    }
    Ok(found)
}

/// Everything `scan` judges: the Services, Endpoints and EndpointSlices of the cluster (or
/// of `namespaces`), and the labels of their namespaces, listed once.
pub struct ClusterSnapshot {
    pub objects: Vec<Object>,
    pub view: ManifestView,
    /// What could not be read but does not stop the scan.
    pub notes: Vec<String>,
}

pub async fn list_cluster(
    client: &Client,
    namespaces: &[String],
) -> Result<ClusterSnapshot, String> {
    let params = ListParams::default();
    let mut objects = Vec::new();
    let mut view = ManifestView::new();
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    for scope in scopes {
        let (services, endpoints, slices): (Api<Service>, Api<Endpoints>, Api<EndpointSlice>) =
            match scope {
                Some(ns) => (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                ),
                None => (
                    Api::all(client.clone()),
                    Api::all(client.clone()),
                    Api::all(client.clone()),
                ),
            };
        let resource = |r: &str| match scope {
            Some(ns) => format!("{r} in namespace {ns}"),
            None => r.to_owned(),
        };
        for s in services
            .list(&params)
            .await
            .map_err(|e| explain("list", &resource("services"), &e))?
        {
            objects.push(Object::Service(s));
        }
        for e in endpoints
            .list(&params)
            .await
            .map_err(|e| explain("list", &resource("endpoints"), &e))?
        {
            objects.push(Object::Endpoints(e));
        }
        for s in slices
            .list(&params)
            .await
            .map_err(|e| explain("list", &resource("endpointslices"), &e))?
        {
            objects.push(Object::EndpointSlice(s));
        }
    }
    let namespace_api = Api::<Namespace>::all(client.clone());
    if namespaces.is_empty() {
        for ns in namespace_api
            .list(&params)
            .await
            .map_err(|e| explain("list", "namespaces", &e))?
        {
            view.insert_namespace(&ns);
        }
    } else {
        // Listed by name rather than read with get: scan needs list permission only.
        for name in namespaces {
            let one = ListParams::default().fields(&format!("metadata.name={name}"));
            for ns in namespace_api
                .list(&one)
                .await
                .map_err(|e| explain("list", "namespaces", &e))?
            {
                view.insert_namespace(&ns);
            }
        }
    }
    for object in &objects {
        view.insert(object);
    }
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut notes = Vec::new();
    for scope in scopes {
        match list_consumers(client, scope).await {
            Ok(consumers) => {
                for (consumer, backends) in consumers {
                    view.insert_consumer(&consumer, &backends);
                }
            }
            // Judged as if only DNS clients used the Services: stricter, never laxer.
            Err(e) => notes.push(format!(
                "{e}; without it, Services are judged as if only in-cluster DNS clients used them"
            )),
        }
    }
    Ok(ClusterSnapshot {
        objects,
        view,
        notes,
    })
}
