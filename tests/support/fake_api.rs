//! A fake Kubernetes API server for integration tests, speaking enough of the real wire format
//! for the real kube-rs client and its `watcher`.
//!
//! Include it from a test file with
//! `#[path = "support/fake_api.rs"] mod fake_api;` and start it with [`FakeApi::start`].
//!
//! What it serves (plain HTTP on `127.0.0.1`, HTTP/1.1):
//! - core v1 `services`, `endpoints`, `namespaces` (cluster-scoped) and
//!   `discovery.k8s.io/v1` `endpointslices`: cluster-wide and namespaced LIST and WATCH, and
//!   single-object GET (404 with a real `Status` body when missing);
//! - `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`, allowed unless
//!   [`FakeApi::forbid`] forbade that (verb, resource);
//! - `GET /version`, `/healthz`, `/readyz`, `/livez`.
//!
//! LIST honours `limit` and `continue` (pages come from a snapshot taken by the first page, so
//! every page reports the same resourceVersion; [`FakeApi::compact`] expires continue tokens
//! with 410). `resourceVersion`/`resourceVersionMatch` on LIST are ignored: a LIST always
//! answers the current state.
//!
//! WATCH (`watch=true`) streams one JSON event per line. `resourceVersion=N` replays every
//! change after N from the history, then live changes; `resourceVersion` empty or `0` (or
//! `sendInitialEvents=true`) first sends ADDED for every current object, like the real server.
//! A resourceVersion older than the last [`FakeApi::compact`] gets a single 410 `Expired`
//! ERROR event and the stream ends. `timeoutSeconds` ends the stream cleanly after that long.
//! BOOKMARK events are sent only by [`FakeApi::bookmark`] and only to watches that asked for
//! them with `allowWatchBookmarks=true`.
//!
//! Selectors: `labelSelector` supports `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
//! `k notin (a,b)`; `fieldSelector` supports `metadata.name` and `metadata.namespace` with
//! `=`, `==`, `!=` (any other field answers 400, as the real server does for unsupported
//! fields). A watch reports an object that stops matching as DELETED and one that starts
//! matching as ADDED.
//!
//! The `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1` header
//! used by kube's metadata-only APIs is honoured (items and events carry only metadata).
//!
//! Every request is logged ([`FakeApi::requests`]) and counted ([`FakeApi::lists`],
//! [`FakeApi::watches`], [`FakeApi::gets`]) when it arrives, before it is answered — so a request
//! held by [`FakeApi::set_unresponsive`] or answered 403/400 still counts. Odd input never
//! panics the server: it answers a `Status` with 400, 404, 405 or 410.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The user named in 403 messages, as the webhook's service account would be.
pub const FORBIDDEN_USER: &str = "system:serviceaccount:extsvc-guard:extsvc-guard";

/// The bearer token written into [`FakeApi::kubeconfig`] (the fake accepts any token).
pub const FAKE_TOKEN: &str = "fake-token";

/// A resource the fake serves.
#[derive(Debug)]
struct Res {
    plural: &'static str,
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    namespaced: bool,
    /// Served only once [`FakeApi::install_crds`] has run, like a custom resource.
    crd: bool,
}

impl Res {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `services` or `endpointslices.discovery.k8s.io`, as the real server names resources in
    /// messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const RESOURCES: &[Res] = &[
    Res {
        plural: "services",
        kind: "Service",
        group: "",
        version: "v1",
        namespaced: true,
        crd: false,
    },
    Res {
        plural: "endpoints",
        kind: "Endpoints",
        group: "",
        version: "v1",
        namespaced: true,
        crd: false,
    },
    Res {
        plural: "namespaces",
        kind: "Namespace",
        group: "",
        version: "v1",
        namespaced: false,
        crd: false,
    },
    Res {
        plural: "endpointslices",
        kind: "EndpointSlice",
        group: "discovery.k8s.io",
        version: "v1",
        namespaced: true,
        crd: false,
    },
    Res {
        plural: "policyreports",
        kind: "PolicyReport",
        group: "wgpolicyk8s.io",
        version: "v1alpha2",
        namespaced: true,
        crd: true,
    },
];

/// Finds a resource by plural (`services`), kind (`Service`) or lowercase kind (`service`).
fn lookup(name: &str) -> Option<&'static Res> {
    RESOURCES
        .iter()
        .find(|r| r.plural.eq_ignore_ascii_case(name) || r.kind.eq_ignore_ascii_case(name))
}

fn lookup_or_panic(name: &str) -> &'static Res {
    lookup(name).unwrap_or_else(|| {
        let known: Vec<_> = RESOURCES.iter().map(|r| r.plural).collect();
        panic!("FakeApi: unknown resource {name:?} (known: {known:?})")
    })
}

/// A resource name as used in the forbid table: the plural of a served resource, or the
/// lowercased input for anything else.
fn normalize_resource(name: &str) -> String {
    lookup(name).map_or_else(|| name.to_ascii_lowercase(), |r| r.plural.to_owned())
}

/// Where an object lives: (plural, namespace or "" when cluster-scoped, name).
type Key = (&'static str, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    res: &'static Res,
    kind: ChangeKind,
    /// The new state (for a deletion: the last state, carrying the deletion's resourceVersion).
    object: Value,
    /// The state before this change, if the object existed.
    previous: Option<Value>,
}

enum WatchMsg {
    Line(Bytes),
    Abort,
}

struct WatchReg {
    res: &'static Res,
    filter: Filter,
    /// Only changes after this resourceVersion are sent.
    since: u64,
    bookmarks: bool,
    partial: bool,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

impl WatchReg {
    fn event_for(&self, change: &Change) -> Option<Value> {
        if change.res.plural != self.res.plural || change.rv <= self.since {
            return None;
        }
        let now = self.filter.matches(&change.object);
        let before = change
            .previous
            .as_ref()
            .is_some_and(|p| self.filter.matches(p));
        let ty = match (change.kind, before, now) {
            (ChangeKind::Added, _, true) => "ADDED",
            (ChangeKind::Modified, true, true) => "MODIFIED",
            (ChangeKind::Modified, true, false) => "DELETED",
            (ChangeKind::Modified, false, true) => "ADDED",
            (ChangeKind::Deleted, _, true) => "DELETED",
            _ => return None,
        };
        Some(json!({"type": ty, "object": render(&change.object, self.partial)}))
    }

    fn send(&self, event: &Value) -> bool {
        self.tx.send(WatchMsg::Line(line(event))).is_ok()
    }
}

/// The first page of a LIST, kept so later pages are consistent with it.
struct Snapshot {
    rv: u64,
    partial: bool,
    items: Vec<Value>,
}

#[derive(Default)]
struct Counters {
    lists: HashMap<&'static str, usize>,
    watches: HashMap<&'static str, usize>,
    gets: HashMap<Key, usize>,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Every delivered change with rv > `compacted`.
    history: Vec<Change>,
    compacted: u64,
    /// Changes held back from watches (see `FakeApi::apply_silently`).
    pending: Vec<Change>,
    watches: Vec<WatchReg>,
    snapshots: HashMap<u64, Snapshot>,
    next_snapshot: u64,
    next_uid: u64,
    forbidden: HashSet<(String, String)>,
    crds_installed: bool,
    counters: Counters,
    requests: Vec<String>,
    access_reviews: Vec<(String, String)>,
}

impl Store {
    /// The resourceVersion up to which watches have been told everything.
    fn delivered_rv(&self) -> u64 {
        self.pending.first().map_or(self.rv, |c| c.rv - 1)
    }

    fn record(&mut self, change: Change, silent: bool) {
        if silent || !self.pending.is_empty() {
            self.pending.push(change);
        } else {
            self.publish(change);
        }
    }

    fn publish(&mut self, change: Change) {
        self.watches.retain(|w| match w.event_for(&change) {
            Some(event) => w.send(&event),
            None => !w.tx.is_closed(),
        });
        self.history.push(change);
    }

    fn is_forbidden(&self, verb: &str, res: &Res) -> bool {
        self.forbidden
            .contains(&(verb.to_owned(), res.plural.to_owned()))
    }
}

struct Shared {
    store: Mutex<Store>,
    unresponsive: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn wait_responsive(&self) {
        let mut rx = self.unresponsive.subscribe();
        let _ = rx.wait_for(|unresponsive| !*unresponsive).await;
    }
}

struct Serving {
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

/// A running fake API server. Stops serving (listener and every connection) when dropped.
pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    serving: Mutex<Option<Serving>>,
}

impl FakeApi {
    /// Binds `127.0.0.1:0` and serves an empty cluster at resourceVersion 1 (the first change
    /// is 2: a LIST must never report 0, since a watch from 0 means "send everything as ADDED").
    pub async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeApi: cannot bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("FakeApi: no local address");
        let (unresponsive, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 1,
                ..Store::default()
            }),
            unresponsive,
        });
        let serving = spawn_server(shared.clone(), listener);
        FakeApi {
            shared,
            addr,
            serving: Mutex::new(Some(serving)),
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes `dir/kubeconfig` (cluster `fake` at [`FakeApi::url`], user `fake` with token
    /// [`FAKE_TOKEN`], context `fake` with namespace `default`, current-context `fake`) and
    /// returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let yaml = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: fake\n  user:\n    token: {FAKE_TOKEN}\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n\
             preferences: {{}}\n",
            url = self.url()
        );
        std::fs::write(&path, yaml)
            .unwrap_or_else(|e| panic!("FakeApi: cannot write {}: {e}", path.display()));
        path
    }

    /// A kube client for this server, without a kubeconfig (installs the aws-lc-rs rustls
    /// provider if none is installed). Call inside a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let url = self.url().parse().expect("FakeApi: url is a valid URI");
        kube::Client::try_from(kube::Config::new(url)).expect("FakeApi: cannot build a kube client")
    }

    /// Creates or replaces the object (by kind, namespace, name), bumps the resourceVersion and
    /// emits ADDED or MODIFIED. Fills `apiVersion`, `metadata.namespace` (`default` for a
    /// namespaced kind without one), `uid` and `creationTimestamp` (kept from the previous
    /// state on replace) and sets `metadata.resourceVersion`. Returns the stored object.
    ///
    /// While changes from [`FakeApi::apply_silently`] are held back, this change queues behind
    /// them (watches deliver in resourceVersion order) until [`FakeApi::deliver_pending`].
    ///
    /// Panics on an object the fake cannot store (no or unknown kind, no name).
    pub fn apply(&self, obj: Value) -> Value {
        self.write(obj, false)
    }

    /// Like [`FakeApi::apply`], but watches do not see the change until
    /// [`FakeApi::deliver_pending`]: LIST and GET show it at once, as when the watch lags.
    pub fn apply_silently(&self, obj: Value) -> Value {
        self.write(obj, true)
    }

    /// Deletes the object and emits DELETED with its last state at a new resourceVersion.
    /// `kind` is a kind or plural (`Service`, `services`); `namespace` is ignored for
    /// cluster-scoped kinds. Returns whether the object existed.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.remove(kind, namespace, name, false)
    }

    /// Like [`FakeApi::delete`], but held back from watches until [`FakeApi::deliver_pending`].
    pub fn delete_silently(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.remove(kind, namespace, name, true)
    }

    /// Emits every held-back change to the open watches, in order.
    pub fn deliver_pending(&self) {
        let mut store = self.shared.lock();
        let pending = std::mem::take(&mut store.pending);
        for change in pending {
            store.publish(change);
        }
    }

    /// Sends a BOOKMARK (at the resourceVersion watches have been told everything up to) on
    /// every open watch that asked for bookmarks.
    pub fn bookmark(&self) {
        let mut store = self.shared.lock();
        let delivered = store.delivered_rv();
        store.watches.retain(|w| {
            if !w.bookmarks {
                return !w.tx.is_closed();
            }
            let rv = delivered.max(w.since);
            w.send(&bookmark_event(w.res, rv, w.partial, false))
        });
    }

    /// Ends every open watch abruptly: the connection closes without the final chunk.
    pub fn drop_watches(&self) {
        let mut store = self.shared.lock();
        for w in store.watches.drain(..) {
            let _ = w.tx.send(WatchMsg::Abort);
        }
    }

    /// Forgets the history up to the current resourceVersion: a watch resuming from an older
    /// one gets 410 Expired, and every continue token expires.
    pub fn compact(&self) {
        let mut store = self.shared.lock();
        store.compacted = store.rv;
        store.history.clear();
        store.snapshots.clear();
    }

    /// While true, no request is answered (new ones, and ones not yet answered) and open
    /// watches stay silent and open; turning it off lets everything proceed.
    pub fn set_unresponsive(&self, unresponsive: bool) {
        self.shared.unresponsive.send_replace(unresponsive);
    }

    /// Stops listening and closes every connection: connections are refused afterwards.
    pub async fn stop(&self) {
        let serving = self
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(serving) = serving {
            let _ = serving.shutdown.send(true);
            let _ = serving.accept.await;
        }
    }

    /// Serves the same state again on the same port (stopping first if still serving).
    pub async fn restart(&self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("FakeApi: cannot rebind {}: {e}", self.addr));
        let serving = spawn_server(self.shared.clone(), listener);
        *self.serving.lock().unwrap_or_else(PoisonError::into_inner) = Some(serving);
    }

    /// Makes `verb` ("list", "watch", "get") on `resource` answer 403 Forbidden, and the
    /// SelfSubjectAccessReview for it answer `allowed: false`.
    pub fn forbid(&self, verb: &str, resource: &str) {
        let key = (verb.to_ascii_lowercase(), normalize_resource(resource));
        self.shared.lock().forbidden.insert(key);
    }

    /// Undoes [`FakeApi::forbid`].
    pub fn allow(&self, verb: &str, resource: &str) {
        let key = (verb.to_ascii_lowercase(), normalize_resource(resource));
        self.shared.lock().forbidden.remove(&key);
    }

    /// LIST requests received for `resource` (every page counts).
    pub fn lists(&self, resource: &str) -> usize {
        let res = lookup_or_panic(resource);
        let store = self.shared.lock();
        store.counters.lists.get(res.plural).copied().unwrap_or(0)
    }

    /// WATCH requests received for `resource`.
    pub fn watches(&self, resource: &str) -> usize {
        let res = lookup_or_panic(resource);
        let store = self.shared.lock();
        store.counters.watches.get(res.plural).copied().unwrap_or(0)
    }

    /// Single-object GET requests received for `resource`, any namespace and name.
    pub fn gets(&self, resource: &str) -> usize {
        let res = lookup_or_panic(resource);
        let store = self.shared.lock();
        store
            .counters
            .gets
            .iter()
            .filter(|(key, _)| key.0 == res.plural)
            .map(|(_, n)| n)
            .sum()
    }

    /// Single-object GET requests received for that object (`namespace` "" when
    /// cluster-scoped).
    pub fn gets_of(&self, resource: &str, namespace: &str, name: &str) -> usize {
        let res = lookup_or_panic(resource);
        let key = object_key(res, namespace, name);
        self.shared
            .lock()
            .counters
            .gets
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// Watches of `resource` currently open.
    pub fn open_watches(&self, resource: &str) -> usize {
        let res = lookup_or_panic(resource);
        let store = self.shared.lock();
        store
            .watches
            .iter()
            .filter(|w| w.res.plural == res.plural && !w.tx.is_closed())
            .count()
    }

    /// Waits until at least `count` watches of `resource` are open; false after `within`.
    pub async fn wait_for_open_watches(
        &self,
        resource: &str,
        count: usize,
        within: Duration,
    ) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.open_watches(resource) >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Every request received, as `METHOD /path?query`, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// Every SelfSubjectAccessReview received, as (verb, resource).
    pub fn access_reviews(&self) -> Vec<(String, String)> {
        self.shared.lock().access_reviews.clone()
    }

    /// Zeroes the counters and clears the request log.
    pub fn reset_counters(&self) {
        let mut store = self.shared.lock();
        store.counters = Counters::default();
        store.requests.clear();
        store.access_reviews.clear();
    }

    /// The current (latest) resourceVersion; 1 before the first change.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// The stored object, if any (`namespace` "" when cluster-scoped).
    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = lookup_or_panic(kind);
        let key = object_key(res, namespace, name);
        self.shared.lock().objects.get(&key).cloned()
    }

    fn write(&self, obj: Value, silent: bool) -> Value {
        write_object(&self.shared, obj, silent).0
    }

    /// Serves the custom resources (PolicyReport), as installing their CRDs does; until
    /// then their paths answer 404 like any unknown resource.
    pub fn install_crds(&self) {
        self.shared.lock().crds_installed = true;
    }

    fn remove(&self, kind: &str, namespace: &str, name: &str, silent: bool) -> bool {
        let res = lookup_or_panic(kind);
        remove_object(&mut self.shared.lock(), res, namespace, name, silent).is_some()
    }
}

/// Removes the object and records DELETED with its last state at a new resourceVersion;
/// returns that state, or `None` when there was no such object.
fn remove_object(
    store: &mut Store,
    res: &'static Res,
    namespace: &str,
    name: &str,
    silent: bool,
) -> Option<Value> {
    let previous = store.objects.remove(&object_key(res, namespace, name))?;
    store.rv += 1;
    let rv = store.rv;
    let mut object = previous.clone();
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    store.record(
        Change {
            rv,
            res,
            kind: ChangeKind::Deleted,
            object: object.clone(),
            previous: Some(previous),
        },
        silent,
    );
    Some(object)
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let serving = self
            .serving
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(serving) = serving {
            let _ = serving.shutdown.send(true);
            serving.accept.abort();
        }
        self.drop_watches();
    }
}

fn object_key(res: &'static Res, namespace: &str, name: &str) -> Key {
    let ns = if res.namespaced { namespace } else { "" };
    (res.plural, ns.to_owned(), name.to_owned())
}

fn spawn_server(shared: Arc<Shared>, listener: TcpListener) -> Serving {
    let (shutdown, mut stopped) = watch::channel(false);
    let router = Router::new().fallback(handle).with_state(shared);
    let accept = tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let mut conn_stopped = stopped.clone();
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                // Dropping the connection closes the socket at once, mid-response if need be.
                tokio::select! {
                    _ = conn => {}
                    _ = conn_stopped.changed() => {}
                }
            });
        }
    });
    Serving { shutdown, accept }
}

// ---------------------------------------------------------------------------------------------
// Request handling

enum Route {
    Collection {
        res: &'static Res,
        namespace: Option<String>,
    },
    Object {
        res: &'static Res,
        namespace: String,
        name: String,
    },
    AccessReview,
    Version,
    Health,
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "readyz" | "livez"] => return Some(Route::Health),
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
        ] => {
            return Some(Route::AccessReview);
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    };
    let valid = |s: &str| !s.is_empty();
    match rest {
        [plural] => Some(Route::Collection {
            res: find(plural)?,
            namespace: None,
        }),
        ["namespaces", name] if valid(name) => Some(Route::Object {
            res: find("namespaces")?,
            namespace: String::new(),
            name: (*name).to_owned(),
        }),
        ["namespaces", ns, plural] if valid(ns) => {
            let res = find(plural).filter(|r| r.namespaced)?;
            Some(Route::Collection {
                res,
                namespace: Some((*ns).to_owned()),
            })
        }
        ["namespaces", ns, plural, name] if valid(ns) && valid(name) => {
            let res = find(plural).filter(|r| r.namespaced)?;
            Some(Route::Object {
                res,
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            })
        }
        _ => None,
    }
}

struct Params(HashMap<String, String>);

impl Params {
    fn parse(query: &str) -> Result<Params, String> {
        let mut map = HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k)?, percent_decode(v)?);
        }
        Ok(Params(map))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Go's strconv.ParseBool, as the real server parses boolean parameters.
    fn flag(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None | Some("") => Ok(false),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(other) => Err(format!("invalid boolean value {other:?} for {key}")),
        }
    }

    fn number(&self, key: &str) -> Result<Option<u64>, String> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("invalid value {v:?} for {key}: not a non-negative integer")),
        }
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("invalid percent-encoding in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query parameter {s:?} is not UTF-8"))
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let partial = wants_partial(req.headers());
    let params = Params::parse(&query);
    let route = route(&path);
    {
        let mut store = shared.lock();
        store.requests.push(format!("{method} {target}"));
        if method == Method::GET
            && let Ok(params) = &params
        {
            let watch = params.flag("watch").unwrap_or(false);
            match &route {
                Some(Route::Collection { res, .. }) if watch => {
                    *store.counters.watches.entry(res.plural).or_default() += 1;
                }
                Some(Route::Collection { res, .. }) => {
                    *store.counters.lists.entry(res.plural).or_default() += 1;
                }
                Some(Route::Object {
                    res,
                    namespace,
                    name,
                }) => {
                    let key = object_key(res, namespace, name);
                    *store.counters.gets.entry(key).or_default() += 1;
                }
                _ => {}
            }
        }
    }
    shared.wait_responsive().await;

    let params = match params {
        Ok(params) => params,
        Err(message) => return bad_request(message),
    };
    let Some(route) = route else {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
            None,
        );
    };
    let custom = match &route {
        Route::Collection { res, .. } | Route::Object { res, .. } => res.crd,
        _ => false,
    };
    if custom && !shared.lock().crds_installed {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
            None,
        );
    }
    match (route, &method) {
        (Route::AccessReview, &Method::POST) => access_review(&shared, req).await,
        (
            Route::Object {
                res,
                namespace,
                name,
            },
            &Method::PATCH,
        ) => apply_patch(&shared, res, &namespace, &name, &params, req).await,
        (Route::Version, &Method::GET) => json_response(StatusCode::OK, &version_info()),
        (Route::Health, &Method::GET) => (StatusCode::OK, "ok").into_response(),
        (Route::Collection { res, namespace }, &Method::GET) => match params.flag("watch") {
            Ok(true) => start_watch(&shared, res, namespace, &params, partial),
            Ok(false) => list(&shared, res, namespace, &params, partial),
            Err(message) => bad_request(message),
        },
        (
            Route::Object {
                res,
                namespace,
                name,
            },
            &Method::GET,
        ) => get(&shared, res, &namespace, &name, partial),
        (
            Route::Object {
                res,
                namespace,
                name,
            },
            &Method::DELETE,
        ) => delete(&shared, res, &namespace, &name),
        _ => status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            None,
        ),
    }
}

/// Stores `obj` as [`FakeApi::apply`] does; also whether it was created. Panics on an object
/// the fake cannot store.
fn write_object(shared: &Shared, mut obj: Value, silent: bool) -> (Value, bool) {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("FakeApi::apply: object has no kind: {obj}"))
        .to_owned();
    let res = RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .unwrap_or_else(|| panic!("FakeApi::apply: kind {kind:?} is not served"));
    if let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str) {
        assert_eq!(
            api_version,
            res.api_version(),
            "FakeApi::apply: wrong apiVersion for {kind}"
        );
    }
    obj["apiVersion"] = json!(res.api_version());
    if obj.get("metadata").is_none_or(Value::is_null) {
        obj["metadata"] = json!({});
    }
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        panic!("FakeApi::apply: metadata is not an object");
    };
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| panic!("FakeApi::apply: {kind} has no metadata.name"))
        .to_owned();
    let namespace = if res.namespaced {
        let ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_owned();
        meta.insert("namespace".into(), json!(ns));
        ns
    } else {
        meta.remove("namespace");
        String::new()
    };
    let key: Key = (res.plural, namespace, name);

    let mut store = shared.lock();
    store.rv += 1;
    let rv = store.rv;
    let previous = store.objects.get(&key).cloned();
    for field in ["uid", "creationTimestamp"] {
        let missing = meta.get(field).is_none_or(Value::is_null);
        if missing {
            let value = match previous.as_ref().and_then(|p| p["metadata"].get(field)) {
                Some(old) => old.clone(),
                None if field == "uid" => {
                    store.next_uid += 1;
                    json!(format!("00000000-0000-4000-8000-{:012x}", store.next_uid))
                }
                None => json!(now_rfc3339()),
            };
            meta.insert(field.into(), value);
        }
    }
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    store.objects.insert(key, obj.clone());
    let created = previous.is_none();
    let kind = if previous.is_some() {
        ChangeKind::Modified
    } else {
        ChangeKind::Added
    };
    store.record(
        Change {
            rv,
            res,
            kind,
            object: obj.clone(),
            previous,
        },
        silent,
    );
    (obj, created)
}

/// Server-side apply (`PATCH` as `application/apply-patch+yaml`) by a single field manager:
/// the object becomes what was applied plus what the server sets. Other patch types are 415.
async fn apply_patch(
    shared: &Shared,
    res: &'static Res,
    namespace: &str,
    name: &str,
    params: &Params,
    req: Request,
) -> Response {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type != "application/apply-patch+yaml" {
        return status_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the fake serves only server-side apply, not {content_type:?}"),
            None,
        );
    }
    if params.get("fieldManager").is_none_or(str::is_empty) {
        return status_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests"
                .into(),
            None,
        );
    }
    if shared.lock().is_forbidden("patch", res) {
        return forbidden(
            res,
            "patch",
            res.namespaced.then_some(namespace),
            Some(name),
        );
    }
    let body = match axum::body::to_bytes(req.into_body(), 16 << 20).await {
        Ok(body) => body,
        Err(e) => return bad_request(format!("cannot read the body: {e}")),
    };
    // kube sends the applied configuration as JSON, which is YAML too.
    let mut obj: Value = match serde_json::from_slice(&body) {
        Ok(obj) => obj,
        Err(e) => return bad_request(format!("the fake reads apply patches as JSON only: {e}")),
    };
    if obj["kind"] != res.kind || obj["apiVersion"] != res.api_version().as_str() {
        return bad_request(format!(
            "the object is a {} {}, not a {} {}",
            obj["apiVersion"],
            obj["kind"],
            res.api_version(),
            res.kind
        ));
    }
    if obj["metadata"]["name"] != name {
        return bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            obj["metadata"]["name"]
        ));
    }
    if res.namespaced {
        if obj["metadata"]["namespace"]
            .as_str()
            .is_some_and(|n| n != namespace)
        {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .into(),
            );
        }
        obj["metadata"]["namespace"] = json!(namespace);
    }
    let (stored, created) = write_object(shared, obj, false);
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(code, &stored)
}

fn wants_partial(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=PartialObjectMetadata"))
}

fn render(obj: &Value, partial: bool) -> Value {
    if partial {
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })
    } else {
        obj.clone()
    }
}

fn line(event: &Value) -> Bytes {
    let mut bytes = event.to_string().into_bytes();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn bookmark_event(res: &Res, rv: u64, partial: bool, initial_events_end: bool) -> Value {
    let (kind, api_version) = if partial {
        (
            "PartialObjectMetadata".to_owned(),
            "meta.k8s.io/v1".to_owned(),
        )
    } else {
        (res.kind.to_owned(), res.api_version())
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": metadata}})
}

fn status_json(code: StatusCode, reason: &str, message: String, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

fn status_response(
    code: StatusCode,
    reason: &str,
    message: String,
    details: Option<Value>,
) -> Response {
    json_response(code, &status_json(code, reason, message, details))
}

fn bad_request(message: String) -> Response {
    status_response(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn details(res: &Res, name: Option<&str>) -> Value {
    let mut details = json!({"kind": res.plural});
    if let Some(name) = name {
        details["name"] = json!(name);
    }
    if !res.group.is_empty() {
        details["group"] = json!(res.group);
    }
    details
}

fn forbidden(res: &Res, verb: &str, namespace: Option<&str>, name: Option<&str>) -> Response {
    let subject = match name {
        Some(name) => format!("{} {name:?}", res.qualified()),
        None => res.qualified(),
    };
    let scope = match namespace {
        Some(ns) if !ns.is_empty() => format!("in the namespace {ns:?}"),
        _ => "at the cluster scope".to_owned(),
    };
    let message = format!(
        "{subject} is forbidden: User {FORBIDDEN_USER:?} cannot {verb} resource {:?} in API group {:?} {scope}",
        res.plural, res.group
    );
    status_response(
        StatusCode::FORBIDDEN,
        "Forbidden",
        message,
        Some(details(res, name)),
    )
}

fn expired(message: String) -> Value {
    status_json(StatusCode::GONE, "Expired", message, None)
}

/// The real server's 404 for a named object that does not exist.
fn not_found(res: &'static Res, name: &str) -> Response {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} {name:?} not found", res.qualified()),
        Some(details(res, Some(name))),
    )
}

/// DELETE of one object: the real server answers 200 with the object's last state (no
/// finalizers here, so it is gone at once).
fn delete(shared: &Shared, res: &'static Res, namespace: &str, name: &str) -> Response {
    let mut store = shared.lock();
    if store.is_forbidden("delete", res) {
        let ns = res.namespaced.then_some(namespace);
        return forbidden(res, "delete", ns, Some(name));
    }
    match remove_object(&mut store, res, namespace, name, false) {
        Some(object) => json_response(StatusCode::OK, &object),
        None => not_found(res, name),
    }
}

fn get(shared: &Shared, res: &'static Res, namespace: &str, name: &str, partial: bool) -> Response {
    let store = shared.lock();
    if store.is_forbidden("get", res) {
        let ns = res.namespaced.then_some(namespace);
        return forbidden(res, "get", ns, Some(name));
    }
    match store.objects.get(&object_key(res, namespace, name)) {
        Some(obj) => json_response(StatusCode::OK, &render(obj, partial)),
        None => not_found(res, name),
    }
}

/// Label and field selectors plus the namespace of the request.
#[derive(Default)]
struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<(FieldName, bool, String)>,
}

enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Copy)]
enum FieldName {
    Name,
    Namespace,
}

impl Filter {
    fn new(namespace: Option<String>, params: &Params) -> Result<Filter, String> {
        let labels = match params.get("labelSelector") {
            Some(selector) => parse_label_selector(selector)?,
            None => Vec::new(),
        };
        let fields = match params.get("fieldSelector") {
            Some(selector) => parse_field_selector(selector)?,
            None => Vec::new(),
        };
        Ok(Filter {
            namespace,
            labels,
            fields,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or("");
        if let Some(want) = &self.namespace
            && want != ns
        {
            return false;
        }
        let name = meta["name"].as_str().unwrap_or("");
        let fields_ok = self.fields.iter().all(|(field, equal, value)| {
            let actual = match field {
                FieldName::Name => name,
                FieldName::Namespace => ns,
            };
            (actual == value) == *equal
        });
        let label = |key: &str| meta["labels"][key].as_str();
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        fields_ok && labels_ok
    }
}

/// Splits on commas outside parentheses.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelReq>, String> {
    let bad = || format!("unable to parse requirement: invalid label selector {selector:?}");
    let key = |k: &str| {
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            Err(bad())
        } else {
            Ok(k.to_owned())
        }
    };
    let set = |s: &str| -> Result<Vec<String>, String> {
        let inner = s
            .trim()
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(bad)?;
        Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
    };
    split_terms(selector)
        .into_iter()
        .map(|term| {
            if let Some(k) = term.strip_prefix('!') {
                Ok(LabelReq::NotExists(key(k)?))
            } else if let Some((k, vs)) = term.split_once(" notin ") {
                Ok(LabelReq::NotIn(key(k)?, set(vs)?))
            } else if let Some((k, vs)) = term.split_once(" in ") {
                Ok(LabelReq::In(key(k)?, set(vs)?))
            } else if let Some((k, v)) = term.split_once("!=") {
                Ok(LabelReq::NotEq(key(k)?, v.trim().to_owned()))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Ok(LabelReq::Eq(key(k)?, v.trim().to_owned()))
            } else {
                Ok(LabelReq::Exists(key(term)?))
            }
        })
        .collect()
}

fn parse_field_selector(selector: &str) -> Result<Vec<(FieldName, bool, String)>, String> {
    split_terms(selector)
        .into_iter()
        .map(|term| {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            let field = match field.trim() {
                "metadata.name" => FieldName::Name,
                "metadata.namespace" => FieldName::Namespace,
                other => return Err(format!("field label not supported: {other}")),
            };
            Ok((field, equal, value.trim().to_owned()))
        })
        .collect()
}

fn list(
    shared: &Shared,
    res: &'static Res,
    namespace: Option<String>,
    params: &Params,
    partial: bool,
) -> Response {
    let limit = match params.number("limit") {
        Ok(limit) => limit.filter(|&l| l > 0),
        Err(message) => return bad_request(message),
    };
    let filter = match Filter::new(namespace.clone(), params) {
        Ok(filter) => filter,
        Err(message) => return bad_request(message),
    };
    let mut store = shared.lock();
    if store.is_forbidden("list", res) {
        return forbidden(res, "list", namespace.as_deref(), None);
    }
    let (id, offset) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let parsed = token
                .split_once('-')
                .and_then(|(id, off)| Some((id.parse::<u64>().ok()?, off.parse::<usize>().ok()?)));
            let Some((id, offset)) = parsed else {
                return bad_request(format!("invalid continue token {token:?}"));
            };
            if !store.snapshots.contains_key(&id) {
                return json_response(
                    StatusCode::GONE,
                    &expired(
                        "The provided continue parameter is too old to display a consistent list \
                         result. You can start a new list without the continue parameter."
                            .into(),
                    ),
                );
            }
            (id, offset)
        }
        None => {
            // Keys sort by (resource, namespace, name): read only the range asked for, so a
            // namespaced LIST in a 100k-object store costs what the namespace holds.
            let from: Key = (
                res.plural,
                namespace.clone().unwrap_or_default(),
                String::new(),
            );
            let items = store
                .objects
                .range(from..)
                .take_while(|(key, _)| {
                    key.0 == res.plural && namespace.as_ref().is_none_or(|ns| &key.1 == ns)
                })
                .filter(|(_, obj)| filter.matches(obj))
                .map(|(_, obj)| render(obj, partial))
                .collect();
            store.next_snapshot += 1;
            let id = store.next_snapshot;
            let rv = store.rv;
            store.snapshots.insert(id, Snapshot { rv, partial, items });
            (id, 0)
        }
    };
    let Some(snapshot) = store.snapshots.get(&id) else {
        return bad_request("continue token vanished".into());
    };
    let total = snapshot.items.len();
    let start = offset.min(total);
    let end = limit.map_or(total, |l| {
        start
            .saturating_add(usize::try_from(l).unwrap_or(usize::MAX))
            .min(total)
    });
    let items: Vec<Value> = snapshot.items[start..end].to_vec();
    let mut metadata = json!({"resourceVersion": snapshot.rv.to_string()});
    if end < total {
        metadata["continue"] = json!(format!("{id}-{end}"));
        metadata["remainingItemCount"] = json!(total - end);
    }
    let (kind, api_version) = if snapshot.partial {
        (
            "PartialObjectMetadataList".to_owned(),
            "meta.k8s.io/v1".to_owned(),
        )
    } else {
        (format!("{}List", res.kind), res.api_version())
    };
    if end >= total {
        store.snapshots.remove(&id);
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": items}),
    )
}

fn start_watch(
    shared: &Arc<Shared>,
    res: &'static Res,
    namespace: Option<String>,
    params: &Params,
    partial: bool,
) -> Response {
    let timeout = match params.number("timeoutSeconds") {
        Ok(t) => t,
        Err(message) => return bad_request(message),
    };
    let flags = (
        params.flag("allowWatchBookmarks"),
        params.flag("sendInitialEvents"),
    );
    let (bookmarks, initial_events) = match flags {
        (Ok(b), Ok(i)) => (b, i),
        (Err(message), _) | (_, Err(message)) => return bad_request(message),
    };
    let requested = match params.get("resourceVersion").unwrap_or("") {
        "" | "0" => None,
        rv => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return bad_request(format!("invalid resourceVersion {rv:?}: not a number"));
            }
        },
    };
    let filter = match Filter::new(namespace.clone(), params) {
        Ok(filter) => filter,
        Err(message) => return bad_request(message),
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let mut store = shared.lock();
    if store.is_forbidden("watch", res) {
        return forbidden(res, "watch", namespace.as_deref(), None);
    }
    let mut reg = WatchReg {
        res,
        filter,
        since: 0,
        bookmarks,
        partial,
        tx,
    };
    match requested {
        Some(rv) if !initial_events && rv < store.compacted => {
            let message = format!("too old resource version: {rv} ({})", store.compacted);
            let event = json!({"type": "ERROR", "object": expired(message)});
            let _ = reg.send(&event);
            drop(store);
            // The sender is dropped with `reg`: the stream ends after the ERROR event.
            return watch_response(shared, rx, None);
        }
        Some(rv) if !initial_events => {
            reg.since = rv;
            for change in &store.history {
                if let Some(event) = reg.event_for(change) {
                    let _ = reg.send(&event);
                }
            }
        }
        _ => {
            // "Start at any" / streaming list: the current state as ADDED events.
            let now = store.rv;
            for (key, obj) in &store.objects {
                if key.0 == res.plural && reg.filter.matches(obj) {
                    let _ = reg.send(&json!({"type": "ADDED", "object": render(obj, partial)}));
                }
            }
            if initial_events {
                let _ = reg.send(&bookmark_event(res, now, partial, true));
            }
            reg.since = now;
        }
    }
    store.watches.push(reg);
    drop(store);
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs(t));
    watch_response(shared, rx, deadline)
}

fn watch_response(
    shared: &Arc<Shared>,
    rx: mpsc::UnboundedReceiver<WatchMsg>,
    deadline: Option<Instant>,
) -> Response {
    let (out, body_rx) = mpsc::unbounded_channel();
    tokio::spawn(pump(shared.clone(), rx, out, deadline));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::new(WatchBody(body_rx)),
    )
        .into_response()
}

/// Moves a watch's events to its response body, holding them while the server is
/// unresponsive; ends the body cleanly at the deadline (once responsive again) or when every
/// sender is gone, and abruptly on `WatchMsg::Abort` (at once, even while unresponsive).
async fn pump(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<WatchMsg>,
    out: mpsc::UnboundedSender<io::Result<Bytes>>,
    deadline: Option<Instant>,
) {
    let mut held = VecDeque::new();
    let mut senders_gone = false;
    loop {
        let responsive = !*shared.unresponsive.borrow();
        if responsive {
            while let Some(bytes) = held.pop_front() {
                if out.send(Ok(bytes)).is_err() {
                    return;
                }
            }
            if senders_gone {
                return;
            }
        }
        let mut unresponsive = shared.unresponsive.subscribe();
        tokio::select! {
            biased;
            () = out.closed() => return,
            msg = rx.recv(), if !senders_gone => match msg {
                Some(WatchMsg::Line(bytes)) => held.push_back(bytes),
                Some(WatchMsg::Abort) => {
                    let _ = out.send(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "watch dropped by FakeApi::drop_watches",
                    )));
                    return;
                }
                // Only the 410 stream has no registered sender: it ends once drained.
                None => senders_gone = true,
            },
            _ = unresponsive.wait_for(|u| !*u), if !responsive => {}
            () = sleep_until(deadline), if responsive => return,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `http_body::Frame<Bytes>`, named through `http_body_util` because `http-body` is not a
/// direct dependency.
type DataFrame = <<http_body_util::combinators::Frame<'static, http_body_util::Full<Bytes>> as Future>::Output as OptionOfResult>::Ok;

trait OptionOfResult {
    type Ok;
}

impl<T, E> OptionOfResult for Option<Result<T, E>> {
    type Ok = T;
}

/// A streaming (chunked) response body fed by `pump`; an error closes the connection without
/// the final chunk.
struct WatchBody(mpsc::UnboundedReceiver<io::Result<Bytes>>);

impl HttpBody for WatchBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<DataFrame, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|result| result.map(<DataFrame>::data)))
    }
}

async fn access_review(shared: &Shared, req: Request) -> Response {
    let body = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(body) => body,
        Err(e) => return bad_request(format!("cannot read body: {e}")),
    };
    let review: Value = match serde_json::from_slice(&body) {
        Ok(review @ Value::Object(_)) => review,
        Ok(_) => return bad_request("SelfSubjectAccessReview must be a JSON object".into()),
        Err(e) => return bad_request(format!("invalid SelfSubjectAccessReview: {e}")),
    };
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let attrs = &spec["resourceAttributes"];
    let verb = attrs["verb"].as_str().unwrap_or("").to_ascii_lowercase();
    let resource = normalize_resource(attrs["resource"].as_str().unwrap_or(""));
    let allowed = {
        let mut store = shared.lock();
        store.access_reviews.push((verb.clone(), resource.clone()));
        !store.forbidden.contains(&(verb, resource))
    };
    let mut status = json!({"allowed": allowed});
    if !allowed {
        status["reason"] = json!("forbidden by FakeApi::forbid");
    }
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        }),
    )
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
