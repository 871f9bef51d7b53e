//! The connection to the API server: credentials, and the direct reads that confirm a
//! denial the cache suggests (`serve`) or read the cluster namespace by namespace (`scan`).

use std::path::PathBuf;
use std::time::Duration;

use futures::future::OptionFuture;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::cluster::FreshScope;
use crate::cluster::cache::{ClusterCache, Entry, WatchId, WatchedKind};
use crate::cluster::consumers::{self, Consumer, ConsumerKind};
use crate::cluster::{ManifestView, PodCount, ServiceInfo};
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
        other => format!("{verb} {resource}: {}", with_causes(other)),
    }
}

/// An error and what caused it, as far down as it goes: a refused connection reads
/// `client error (Connect): tcp connect error: Connection refused (os error 111)`, not only
/// `client error (Connect)`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
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

/// Objects asked for per request when `scan` reads a namespace: it holds one page of
/// whole objects at a time, each kept in the watch cache's compact form as it arrives.
pub const PAGE: u32 = 500;

/// Lists every page of `api`, handing each object to `each`.
async fn list_pages<K>(api: &Api<K>, what: &str, mut each: impl FnMut(K)) -> Result<(), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let list = api
            .list(&params)
            .await
            .map_err(|e| explain("list", what, &e))?;
        list.items.into_iter().for_each(&mut each);
        match list.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(()),
        }
    }
}

/// The namespaces `scan` reads, by name: every namespace, or those of `names` (listed by
/// name rather than read with get: scan needs list permission only; a name that does not
/// exist is `None`, read as a namespace without objects or labels).
pub async fn list_namespaces(
    client: &Client,
    names: &[String],
) -> Result<BTreeMap<String, Option<Namespace>>, String> {
    let api = Api::<Namespace>::all(client.clone());
    let mut found = BTreeMap::new();
    if names.is_empty() {
        list_pages(&api, "namespaces", |ns| {
            found.insert(ns.metadata.name.clone().unwrap_or_default(), Some(ns));
        })
        .await?;
        return Ok(found);
    }
    for name in names {
        let one = ListParams::default().fields(&format!("metadata.name={name}"));
        let listed = api
            .list(&one)
            .await
            .map_err(|e| explain("list", "namespaces", &e))?;
        found.insert(name.clone(), listed.items.into_iter().next());
    }
    Ok(found)
}

/// What [`list_namespace`] read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// Services, Endpoints and EndpointSlices listed.
    pub objects: usize,
    /// Of those, the Endpoints and EndpointSlices the listed Services confirm a controller
    /// maintains: not kept (they are not judged in a set).
    pub maintained: usize,
}

/// Reads the Services, Endpoints and EndpointSlices of `namespace` into `cache` as the
/// watchers fill it: page by page, each object kept compact as it arrives, the Services
/// first so that what they confirm a controller maintains is dropped at once.
pub async fn list_namespace(
    client: &Client,
    namespace: &str,
    cache: &ClusterCache,
) -> Result<Listed, String> {
    let mut listed = Listed::default();
    let what = |r: &str| format!("{r} in namespace {namespace}");
    let now = std::time::Instant::now();
    let id = |kind| WatchId::new(kind, Some(namespace));

    let mut listing = cache.listing();
    let api = Api::<Service>::namespaced(client.clone(), namespace);
    list_pages(&api, &what("services"), |s| {
        listed.objects += 1;
        listing.push(Entry::Object(Object::Service(s)));
    })
    .await?;
    cache.replace_listed(&id(WatchedKind::Services), listing, now);

    let mut listing = cache.listing();
    let api = Api::<Endpoints>::namespaced(client.clone(), namespace);
    list_pages(&api, &what("endpoints"), |e| {
        listed.objects += 1;
        match cache.keeps(Entry::Object(Object::Endpoints(e))) {
            Some(entry) => listing.push(entry),
            None => listed.maintained += 1,
        }
    })
    .await?;
    cache.replace_listed(&id(WatchedKind::Endpoints), listing, now);

    let mut listing = cache.listing();
    let api = Api::<EndpointSlice>::namespaced(client.clone(), namespace);
    list_pages(&api, &what("endpointslices"), |s| {
        listed.objects += 1;
        match cache.keeps(Entry::Object(Object::EndpointSlice(s))) {
            Some(entry) => listing.push(entry),
            None => listed.maintained += 1,
        }
    })
    .await?;
    cache.replace_listed(&id(WatchedKind::EndpointSlices), listing, now);
    Ok(listed)
}

/// The Service `name` of `namespace`, listed by name (list permission only), for a rule
/// that looks across namespaces (an ExternalName aliasing `<name>.<namespace>.svc`).
pub async fn find_service(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<ServiceInfo>, String> {
    let api = Api::<Service>::namespaced(client.clone(), namespace);
    let one = ListParams::default().fields(&format!("metadata.name={name}"));
    let list = api
        .list(&one)
        .await
        .map_err(|e| explain("list", &format!("services in namespace {namespace}"), &e))?;
    Ok(list.items.first().map(ServiceInfo::of))
}
