//! A fake Kubernetes API server, kept for what a real one cannot be made to do on demand
//! (the tests against a real kube-apiserver are tests/apiserver.rs): a watch that lags
//! behind what a LIST already shows ([`FakeApi::apply_silently`]), watches dropped and a
//! history compacted so that resuming gets 410 Gone ([`FakeApi::drop_watches`],
//! [`FakeApi::compact`]), a server that stops answering without closing anything
//! ([`FakeApi::set_unresponsive`]), and every request logged ([`FakeApi::requests`]). The
//! benchmarks' fake cluster (benches/fake_cluster.rs) serves 100k-object clusters with it.
//! It speaks enough of the real wire format for the real kube-rs client and its `watcher`.
//!
//! Include it from a test file with
//! `#[path = "support/fake_api.rs"] mod fake_api;` and start it with [`FakeApi::start`].
//!
//! What it serves (plain HTTP on `127.0.0.1`, HTTP/1.1): core v1 `services`, `endpoints`,
//! `namespaces` (cluster-scoped) and `discovery.k8s.io/v1` `endpointslices`: cluster-wide and
//! namespaced LIST and WATCH. Nothing else: no selectors (a request with one answers 400),
//! no writes over HTTP, no single-object GET.
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
//! The `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1` header
//! used by kube's metadata-only APIs is honoured (items and events carry only metadata).
//!
//! Every request is logged ([`FakeApi::requests`]) when it arrives, before it is answered —
//! so a request held by [`FakeApi::set_unresponsive`] or answered 400 still counts. Odd input
//! never panics the server: it answers a `Status` with 400, 404, 405 or 410.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
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
}

impl Res {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
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
    },
    Res {
        plural: "endpoints",
        kind: "Endpoints",
        group: "",
        version: "v1",
        namespaced: true,
    },
    Res {
        plural: "namespaces",
        kind: "Namespace",
        group: "",
        version: "v1",
        namespaced: false,
    },
    Res {
        plural: "endpointslices",
        kind: "EndpointSlice",
        group: "discovery.k8s.io",
        version: "v1",
        namespaced: true,
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

/// Where an object lives: (plural, namespace or "" when cluster-scoped, name).
type Key = (&'static str, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
}

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    res: &'static Res,
    kind: ChangeKind,
    /// The new state.
    object: Value,
}

enum WatchMsg {
    Line(Bytes),
    Abort,
}

struct WatchReg {
    res: &'static Res,
    /// Only this namespace's objects, when set.
    namespace: Option<String>,
    /// Only changes after this resourceVersion are sent.
    since: u64,
    bookmarks: bool,
    partial: bool,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

impl WatchReg {
    fn event_for(&self, change: &Change) -> Option<Value> {
        if change.res.plural != self.res.plural
            || change.rv <= self.since
            || !in_namespace(&self.namespace, &change.object)
        {
            return None;
        }
        let ty = match change.kind {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
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
    requests: Vec<String>,
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
}

/// Whether `obj` is in `namespace` (any, when `None`).
fn in_namespace(namespace: &Option<String>, obj: &Value) -> bool {
    namespace
        .as_deref()
        .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
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
    serving: Option<Serving>,
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
            serving: Some(serving),
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

    fn write(&self, obj: Value, silent: bool) -> Value {
        write_object(&self.shared, obj, silent)
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            let _ = serving.shutdown.send(true);
            serving.accept.abort();
        }
        self.drop_watches();
    }
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
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest) = match segments.as_slice() {
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
        ["namespaces", ns, plural] if valid(ns) => {
            let res = find(plural).filter(|r| r.namespaced)?;
            Some(Route::Collection {
                res,
                namespace: Some((*ns).to_owned()),
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
    shared.lock().requests.push(format!("{method} {target}"));
    shared.wait_responsive().await;

    let params = match Params::parse(&query) {
        Ok(params) => params,
        Err(message) => return bad_request(message),
    };
    let Some(Route::Collection { res, namespace }) = route(&path) else {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
            None,
        );
    };
    if method != Method::GET {
        return status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            None,
        );
    }
    for selector in ["labelSelector", "fieldSelector"] {
        if params.get(selector).is_some_and(|s| !s.is_empty()) {
            return bad_request(format!("the fake supports no {selector}"));
        }
    }
    match params.flag("watch") {
        Ok(true) => start_watch(&shared, res, namespace, &params, partial),
        Ok(false) => list(&shared, res, namespace, &params, partial),
        Err(message) => bad_request(message),
    }
}

/// Stores `obj` as [`FakeApi::apply`] does. Panics on an object the fake cannot store.
fn write_object(shared: &Shared, mut obj: Value, silent: bool) -> Value {
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
    let kind = if previous.is_some() {
        ChangeKind::Modified
    } else {
        ChangeKind::Added
    };
    store.objects.insert(key, obj.clone());
    store.record(
        Change {
            rv,
            res,
            kind,
            object: obj.clone(),
        },
        silent,
    );
    obj
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

fn expired(message: String) -> Value {
    status_json(StatusCode::GONE, "Expired", message, None)
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
    let mut store = shared.lock();
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
    let (tx, rx) = mpsc::unbounded_channel();
    let mut store = shared.lock();
    let mut reg = WatchReg {
        res,
        namespace,
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
                if key.0 == res.plural && in_namespace(&reg.namespace, obj) {
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
