//! The watchers that keep the [`ClusterCache`] current: one kube-rs watcher per kind (and per
//! namespace with `--watch-namespace`). Endpoints and EndpointSlices the controllers maintain
//! for selector Services — most of them in a real cluster — matter to no rule and are not
//! kept: the endpoints watches start once the Services are listed, so that what the
//! Services confirm as maintained is dropped as it arrives. kube-rs resumes dropped watches
//! from the last
//! resourceVersion, relists after 410 Gone, and backs off on errors; here each event becomes
//! a cache change, and every complete list replaces what it covers at once.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::cluster::cache::{ClusterCache, Entry, WatchId, WatchedKind};
use crate::cluster::client::explain;
use crate::object::Object;

/// Starts the watches: cluster-wide, or for each of `namespaces` when given.
pub fn spawn(
    client: &Client,
    cache: &Arc<ClusterCache>,
    namespaces: &[String],
) -> Vec<JoinHandle<()>> {
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    // Registered before any watch can list, so the cache is never "synced" with one missing.
    cache.register(scopes.iter().flat_map(|scope| {
        WatchedKind::ALL
            .iter()
            .map(move |kind| WatchId::new(*kind, *scope))
    }));
    let mut tasks = Vec::new();
    for scope in scopes {
        for kind in WatchedKind::ALL {
            let id = WatchId::new(kind, scope);
            let cache = Arc::clone(cache);
            let client = client.clone();
            tasks.push(match kind {
                WatchedKind::Services => tokio::spawn(run::<Service>(
                    api(client, scope),
                    watcher::Config::default(),
                    id,
                    cache,
                    |s, _| Some(Entry::Object(Object::Service(s))),
                )),
                WatchedKind::Endpoints => tokio::spawn(run::<Endpoints>(
                    api(client, scope),
                    watcher::Config::default(),
                    id,
                    cache,
                    |e, cache| cache.keeps(Entry::Object(Object::Endpoints(e))),
                )),
                WatchedKind::EndpointSlices => tokio::spawn(run::<EndpointSlice>(
                    api(client, scope),
                    watcher::Config::default(),
                    id,
                    cache,
                    |s, cache| cache.keeps(Entry::Object(Object::EndpointSlice(s))),
                )),
                WatchedKind::Namespaces => {
                    // Namespaces are cluster-scoped: with --watch-namespace, watch just that one.
                    let config = match scope {
                        Some(ns) => {
                            watcher::Config::default().fields(&format!("metadata.name={ns}"))
                        }
                        None => watcher::Config::default(),
                    };
                    tokio::spawn(run::<Namespace>(
                        Api::all(client),
                        config,
                        id,
                        cache,
                        |n, _| Some(Entry::namespace(n.name_any(), n.metadata.labels.as_ref())),
                    ))
                }
            });
        }
    }
    tasks
}

fn api<K>(client: Client, scope: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// How often a failing watch's resource is probed: a watch that reconnects on a quiet
/// cluster delivers no event, so only a probe can tell that the outage is over.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Feeds one watch into the cache until the task is aborted.
async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    id: WatchId,
    cache: Arc<ClusterCache>,
    project: fn(K, &ClusterCache) -> Option<Entry>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    if matches!(
        id.kind,
        WatchedKind::Endpoints | WatchedKind::EndpointSlices
    ) {
        let services = WatchId::new(WatchedKind::Services, id.namespace.as_deref());
        while !cache.listed(&services) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let probe_api = api.clone();
    let mut stream = watcher(api, config).default_backoff().boxed();
    // Kept compact as it arrives: a large list never exists twice in full.
    let mut listing = cache.listing();
    let mut failing = false;
    let mut probe = tokio::time::interval(PROBE_INTERVAL);
    // Ticks missed while healthy are not owed: one probe per interval while failing.
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = stream.next() => match event {
                Some(event) => event,
                None => {
                    // kube's watcher never ends; if it does, say so rather than look healthy.
                    tracing::error!(watch = %id.describe(), "watch stream ended");
                    cache.failed(&id, "the watch stream ended".to_owned(), Instant::now());
                    break;
                }
            },
            _ = probe.tick(), if failing => {
                let params = ListParams::default().limit(1);
                let answered =
                    tokio::time::timeout(PROBE_INTERVAL * 2, probe_api.list_metadata(&params)).await;
                if matches!(answered, Ok(Ok(_))) {
                    cache.recovered(&id);
                    failing = false;
                    tracing::info!(watch = %id.describe(), "the API server answers again; the watch resumes");
                }
                continue;
            }
        };
        let now = Instant::now();
        match event {
            Ok(watcher::Event::Init) => listing = cache.listing(),
            Ok(watcher::Event::InitApply(object)) => listing.extend(project(object, &cache)),
            Ok(watcher::Event::InitDone) => {
                let count = listing.len();
                cache.replace_listed(&id, std::mem::take(&mut listing), now);
                tracing::info!(watch = %id.describe(), objects = count, "listed");
                failing = false;
            }
            Ok(watcher::Event::Apply(object)) => {
                let namespace = object.meta().namespace.clone().unwrap_or_default();
                let name = object.name_any();
                match project(object, &cache) {
                    Some(entry) => cache.apply(&id, entry, now),
                    // Now maintained by a controller: no longer kept.
                    None => cache.delete(&id, &namespace, &name, now),
                }
                failing = false;
            }
            Ok(watcher::Event::Delete(object)) => {
                let namespace = object.meta().namespace.clone().unwrap_or_default();
                cache.delete(&id, &namespace, &object.name_any(), now);
                failing = false;
            }
            Err(error) => {
                let message = describe(&id, &error);
                // Once per outage in the log; the back-off keeps retrying.
                if !failing {
                    tracing::warn!(watch = %id.describe(), error = %message, "watch failing; retrying with back-off");
                }
                failing = true;
                cache.failed(&id, message, now);
            }
        }
    }
}

fn describe(id: &WatchId, error: &watcher::Error) -> String {
    let resource = id.describe();
    match error {
        watcher::Error::InitialListFailed(e) => explain("list", &resource, e),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            explain("watch", &resource, e)
        }
        watcher::Error::WatchError(status) if status.code == 403 => format!(
            "missing permission: cannot watch {resource} ({}); grant get, list and watch on it to the webhook's service account",
            status.message
        ),
        other => format!("{resource}: {other}"),
    }
}
