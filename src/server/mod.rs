//! `serve`: the HTTPS admission webhook (`/validate`, `/mutate`) and the plain-HTTP
//! metrics listener (`/healthz`, `/readyz`, `/metrics`).
//!
//! The server only moves bytes: reviews go to [`admission::decide`] with the current
//! policy and cluster view, and its decision goes back. Certificates and policy reload
//! without a restart ([`reload`]); SIGTERM drains in-flight requests.

pub mod audit;
pub mod conditions;
pub mod connections;
pub mod large;
pub mod reload;
#[cfg(test)]
mod router_tests;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::TokioTimer;

use crate::admission::{self, Decision, Endpoint};
use crate::cluster::FreshScope;
use crate::cluster::cache::{ClusterCache, Kept};
use crate::cluster::client::{self, ConnectError, Credentials};
use crate::cluster::fresh::{FreshReads, Reader};
use crate::cluster::{ClusterView, LabelsOnly, NoClusterView, Overlay, watch};
use crate::finding::Action;
use crate::logging::DecisionLine;
use crate::metrics::Metrics;
use crate::policy::Policy;
use connections::ConnectionLimit;
use large::LargeReviews;
use tls::{CertificateFiles, ClientCa};

/// Largest request body accepted. An UPDATE review carries the object twice; the API server
/// caps objects at about 1.5 MiB.
pub const BODY_LIMIT: usize = 3 * 1024 * 1024;

/// Concurrent requests one HTTP/2 connection may carry (the API server multiplexes, and
/// opens another connection when a replica's are full).
const H2_MAX_STREAMS: u32 = 64;

/// Bytes an HTTP/2 peer may send on one stream before the server reads them: larger than
/// an everyday review, so those arrive in one flight.
const H2_STREAM_WINDOW: u32 = 16 * 1024;

/// Bytes an HTTP/2 peer may send on all streams of a connection before the server reads
/// them: twice what every stream's window allows at once. A large review waits for room
/// before its body is read (`LargeReviews`); were the connection's window smaller than the
/// streams' together (hyper's defaults: 1 MiB for each), the unread bodies of the waiting
/// ones could fill it, and the reviews holding the room would never get the rest of theirs:
/// all of them stuck until the request timeout.
const H2_CONNECTION_WINDOW: u32 = 2 * H2_MAX_STREAMS * H2_STREAM_WINDOW;

/// Largest request head (request line and headers, or an HTTP/2 header list). A review's
/// headers are a few hundred bytes; the body has its own limit.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Streams an HTTP/2 peer may reset before the server has accepted them (h2's default,
/// stated here because the rapid-reset defence rests on it).
const H2_MAX_PENDING_RESETS: usize = 20;

/// Streams the server may reset for a peer's protocol errors on one connection.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Everything `serve` is started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// `--client-ca`: when set, only clients with a certificate it signed are served.
    pub client_ca: Option<PathBuf>,
    /// Admission connections open at once, at most; more are closed at accept.
    pub max_connections: usize,
    /// The embedded default when `None`.
    pub policy: Option<PathBuf>,
    pub reload_interval: Duration,
    pub request_timeout: Duration,
    /// Bytes of large review bodies read and judged at once (`--large-review-budget`).
    pub large_review_budget: usize,
    /// Time from SIGTERM to exit, at most.
    pub shutdown_grace: Duration,
    /// Time between `/readyz` turning 503 and the listener closing on SIGTERM, so that the
    /// Service stops routing here first. Part of the grace period; SIGINT skips it.
    pub shutdown_delay: Duration,
    pub cluster: ClusterConfig,
    /// The violation gauges (with a cluster only).
    pub audit: audit::AuditConfig,
}

/// Whether and how `serve` watches the cluster.
#[derive(Debug, Clone)]
pub enum ClusterConfig {
    /// `--no-cluster`.
    Off,
    /// Credentials from a kubeconfig or the in-cluster service account; without either the
    /// server runs as with `Off`.
    Watch {
        credentials: Credentials,
        /// Empty: cluster-wide.
        namespaces: Vec<String>,
        /// A watch failing for longer than this makes cross-object denials warnings.
        max_staleness: Duration,
        /// Longest wait for the API server when confirming a cross-object denial.
        confirm_timeout: Duration,
        /// The webhook configurations whose matchConditions are compared with the policy.
        webhook_configuration: String,
    },
}

/// The live cluster behind the cache: what confirms a cross-object denial.
pub struct Cluster {
    pub cache: Arc<ClusterCache>,
    /// Namespace reads shared by the denials waiting for one.
    fresh: FreshReads,
    /// For the reads that are not shared (Pods a selector matches).
    client: kube::Client,
    /// The longest wait for any read a request makes.
    read_timeout: Duration,
    max_staleness: Duration,
    /// The watched namespaces; empty: cluster-wide.
    namespaces: Vec<String>,
    /// The watch tasks, restarted when the cache must relist.
    watches: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Cluster {
    /// Stops the watches and starts them anew: each lists its kind again, which replaces
    /// what the cache holds of it.
    pub fn restart_watches(&self) {
        let mut watches = self
            .watches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for task in watches.drain(..) {
            task.abort();
        }
        *watches = watch::spawn(&self.client, &self.cache, &self.namespaces);
    }
}

/// What every request handler shares.
pub struct State {
    policy: RwLock<Arc<Policy>>,
    view: Arc<dyn ClusterView + Send + Sync>,
    cluster: Option<Cluster>,
    pub metrics: Metrics,
    shutting_down: AtomicBool,
    request_timeout: Duration,
    large_reviews: LargeReviews,
}

impl State {
    pub fn new(
        policy: Policy,
        request_timeout: Duration,
        large_review_budget: usize,
        cluster: Option<Cluster>,
    ) -> State {
        let view: Arc<dyn ClusterView + Send + Sync> = match &cluster {
            Some(c) => Arc::clone(&c.cache) as Arc<dyn ClusterView + Send + Sync>,
            None => Arc::new(NoClusterView),
        };
        State {
            policy: RwLock::new(Arc::new(policy)),
            view,
            cluster,
            metrics: Metrics::new(),
            shutting_down: AtomicBool::new(false),
            request_timeout,
            large_reviews: LargeReviews::new(large_review_budget),
        }
    }

    fn policy(&self) -> Arc<Policy> {
        // A poisoned lock only means a writer panicked mid-swap of an Arc: the value is whole.
        match self.policy.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn set_policy(&self, policy: Policy) {
        let policy = Arc::new(policy);
        match self.policy.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }

    /// Why `/readyz` is not 200, if it is not.
    fn not_ready(&self) -> Option<String> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Some("shutting down".to_owned());
        }
        match &self.cluster {
            Some(c) if !c.cache.synced() => {
                let mut why = "waiting for the initial list of services, endpoints, endpointslices and namespaces".to_owned();
                let failing: Vec<String> = c
                    .cache
                    .watch_states()
                    .into_iter()
                    .filter_map(|(id, w)| Some(format!("{}: {}", id.describe(), w.failing?.1)))
                    .collect();
                if !failing.is_empty() {
                    why.push_str(&format!(" ({})", failing.join("; ")));
                }
                Some(why)
            }
            _ => None,
        }
    }
}

/// Why `serve` could not start; the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// The admission router (`/validate`, `/mutate`), for the TLS listener.
pub fn admission_router(state: Arc<State>) -> Router {
    Router::new()
        .route(
            "/validate",
            post(|s: AxumState<Arc<State>>, r: Request| admit(s, r, Endpoint::Validate)),
        )
        .route(
            "/mutate",
            post(|s: AxumState<Arc<State>>, r: Request| admit(s, r, Endpoint::Mutate)),
        )
        .with_state(state)
}

/// The probes and metrics router, for the plain-HTTP listener.
pub fn metrics_router(state: Arc<State>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|AxumState(state): AxumState<Arc<State>>| async move {
                match state.not_ready() {
                    None => (StatusCode::OK, "ready\n".to_owned()),
                    Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                }
            }),
        )
        .route(
            "/metrics",
            get(|AxumState(state): AxumState<Arc<State>>| async move {
                if let Some(cluster) = &state.cluster {
                    state
                        .metrics
                        .record_cache(&cluster.cache.watch_states(), Instant::now());
                }
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    state.metrics.encode(),
                )
            }),
        )
        .with_state(state)
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a Metrics) -> InFlight<'a> {
        metrics.in_flight().inc();
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight().dec();
    }
}

async fn admit(
    AxumState(state): AxumState<Arc<State>>,
    request: Request,
    endpoint: Endpoint,
) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::enter(&state.metrics);
    let path = endpoint.path();
    let refuse = |code: StatusCode, message: String| {
        state
            .metrics
            .record_refused(path, code.as_u16(), started.elapsed().as_secs_f64());
        tracing::warn!(path, code = code.as_u16(), %message, "request refused");
        (code, format!("{message}\n")).into_response()
    };
    let (parts, body) = request.into_parts();
    if !is_json(&parts.headers) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type must be application/json, got {:?}",
                content_type(&parts.headers)
            ),
        );
    }
    let declared = declared_length(&parts.headers);
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large());
    }
    // Waiting for room and reading the body count against one deadline.
    let deadline = tokio::time::Instant::from_std(started + state.request_timeout);
    let no_room = |len: u64| {
        format!(
            "this {} KiB review did not get its turn within the request timeout ({:?}): at most {} MiB of large reviews are read and judged at once, to stay within the memory limit; retry, and if it persists run more replicas or raise --large-review-budget together with the memory limit",
            len / 1024,
            state.request_timeout,
            state.large_reviews.budget_bytes() / (1024 * 1024),
        )
    };
    // Room is taken before the body is read when its length is declared (the API server's
    // client declares it): sixteen near-limit bodies read at once are 45 MiB by themselves.
    let mut room = None;
    if let Some(len) = declared {
        match room_for(&state, len, deadline).await {
            Ok(permit) => room = permit,
            Err(_) => return refuse(StatusCode::SERVICE_UNAVAILABLE, no_room(len)),
        }
    }
    let body = match tokio::time::timeout_at(deadline, read_body(body)).await {
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?}",
                    state.request_timeout
                ),
            );
        }
        Ok(Err(BodyError::TooLarge)) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large()),
        Ok(Err(BodyError::Broken(e))) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {e}"),
            );
        }
        Ok(Ok(body)) => body,
    };
    // A body sent without a declared length is counted once it is here.
    if declared.is_none() {
        let len = body.len() as u64;
        match room_for(&state, len, deadline).await {
            Ok(permit) => room = permit,
            Err(_) => return refuse(StatusCode::SERVICE_UNAVAILABLE, no_room(len)),
        }
    }
    let (decision, dry_run) = match admission::parse(&body) {
        Ok(request) => {
            let dry_run = request.dry_run.unwrap_or(false);
            let decision = match admission::prepare(&request, endpoint) {
                admission::Prepared::Answered(decision) => *decision,
                admission::Prepared::Judge(subject) => {
                    let policy = state.policy();
                    let decision = subject.judge(state.view.as_ref(), &policy);
                    match &state.cluster {
                        // Boxed: held inline, its state would be a large part of every
                        // request's future, which axum copies as it moves it, though few
                        // requests read from the API server.
                        Some(cluster) => {
                            Box::pin(with_live_reads(
                                cluster,
                                &state.metrics,
                                &subject,
                                &policy,
                                decision,
                            ))
                            .await
                        }
                        None => decision,
                    }
                }
            };
            (decision, dry_run)
        }
        Err(bad) => match bad.uid {
            // The API server shows an AdmissionReview's message to the user; a bare 400
            // would only say the webhook failed.
            Some(uid) => (Decision::unreadable(uid, bad.message), false),
            None => return refuse(StatusCode::BAD_REQUEST, bad.message),
        },
    };
    let answer = match decision.to_json() {
        Ok(answer) => answer,
        Err(message) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, message),
    };
    drop(body);
    drop(room);
    // The time logged and observed includes encoding the answer: all of the server's own work.
    let elapsed = started.elapsed();
    log_decision(path, &decision, dry_run, elapsed);
    state
        .metrics
        .record_decision(path, &decision, elapsed.as_secs_f64());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer,
    )
        .into_response()
}

/// Room to read and judge a body of `len` bytes, waiting until `deadline` at most. Small
/// bodies get none at once, without arming a timer on the request path.
async fn room_for(
    state: &State,
    len: u64,
    deadline: tokio::time::Instant,
) -> Result<Option<tokio::sync::SemaphorePermit<'_>>, tokio::time::error::Elapsed> {
    if !LargeReviews::is_large(len) {
        return Ok(None);
    }
    tokio::time::timeout_at(deadline, state.large_reviews.admit(len)).await
}

/// What the cache alone cannot decide is read from the API server, and the request judged
/// again over what was read:
/// - a denial that rests on other objects is only as good as the cache's knowledge of them,
///   so it is confirmed by a fresh read (when that is impossible, the cross-object denials
///   become warnings that say why: never a false deny from a stale cache);
/// - namespace labels the cache does not know, when the policy selects namespaces by label
///   (no answer rests on unknown labels: when they cannot be read, the request is refused
///   for now);
/// - a Service whose selector appears or goes: the endpoints the controllers wrote, and the
///   Pods the new selector matches (`selector-change`);
/// - the Ingresses and routes that name a Service, when a finding holds for DNS clients only
///   (`consumerAware`).
///
/// The common request needs none of these and reads nothing.
async fn with_live_reads(
    cluster: &Cluster,
    metrics: &Metrics,
    subject: &admission::Subject<'_>,
    policy: &Policy,
    decision: Decision,
) -> Decision {
    let namespace = subject.namespace().to_owned();
    let labels_matter = policy.selects_namespaces_by_label();
    let labels_unknown = labels_matter && cluster.cache.namespace_labels(&namespace).is_none();
    // Findings that rest on other objects are confirmed by a fresh read, warnings too: a
    // cache a few milliseconds behind `kubectl apply` must not warn that the Service created
    // just before its Endpoints does not exist. Judged alone only when there is a finding.
    let alone = decision
        .findings
        .iter()
        .any(|f| f.action > Action::Info)
        .then(|| subject.judge(&LabelsOnly(cluster.cache.as_ref()), policy));
    let cross_object = alone
        .as_ref()
        .is_some_and(|alone| admission::cross_object_findings(&decision, alone) > 0);
    let selector_change = subject.selector_change(&decision);
    let consumers = subject.needs_consumers(&decision, policy);
    if !cross_object && !labels_unknown && selector_change.is_none() && !consumers {
        return decision;
    }
    let stale = cluster
        .cache
        .staleness(Instant::now(), cluster.max_staleness);
    // A stale cache downgrades its cross-object denials at once, without waiting for the
    // API server; what else is needed is still read.
    let confirm = cross_object && stale.is_none();
    let mut scope = FreshScope::none();
    if confirm {
        scope = FreshScope::for_denials_of(subject.kind());
    }
    if selector_change.is_some() {
        scope.endpoints = true;
    }
    scope.consumers = consumers;
    // Whenever the namespace is read, its labels are read too when the policy selects by
    // them: labels the cache does have may be older than the request.
    scope.labels = labels_matter && (labels_unknown || scope != FreshScope::none());
    let decision = match (&stale, &alone) {
        (Some(stale), Some(alone)) if cross_object => {
            metrics.confirmation("stale");
            let reason = format!("the cluster view is stale: {stale}");
            admission::downgrade_cross_object(decision, alone, &reason)
        }
        _ => decision,
    };
    if scope == FreshScope::none() {
        return decision;
    }
    let pods = async {
        match &selector_change {
            Some(admission::SelectorChange::Added(selector)) => {
                match client::count_pods(
                    &cluster.client,
                    &namespace,
                    selector,
                    cluster.read_timeout,
                )
                .await
                {
                    Ok(count) => Some(count),
                    Err(e) => {
                        tracing::warn!(uid = %subject.uid(), error = %e, "cannot count the Pods a selector matches");
                        None
                    }
                }
            }
            _ => None,
        }
    };
    let (read, pods) = tokio::join!(cluster.fresh.read(&namespace, scope), pods);
    match read.as_ref() {
        Ok(fresh) => {
            let view = Overlay {
                fresh,
                scope,
                cache: cluster.cache.as_ref(),
                pods,
            };
            let judged = subject.judge(&view, policy);
            if confirm {
                let outcome = if judged.verdict == decision.verdict {
                    "confirmed"
                } else {
                    "overturned"
                };
                metrics.confirmation(outcome);
                tracing::debug!(uid = %subject.uid(), outcome, "cross-object finding checked against the API server");
            }
            judged
        }
        // Mutation never refuses a write: without the labels it adds what it can and says so.
        Err(e) if labels_unknown && subject.endpoint() == admission::Endpoint::Validate => {
            tracing::warn!(uid = %subject.uid(), error = %e, "cannot read the labels of namespace {namespace}");
            decision.undecidable(format!(
                "extsvc-guard cannot read the labels of namespace {namespace}, which choose the policy that applies there ({e}); try again in a moment"
            ))
        }
        Err(e) => {
            if let (true, Some(alone)) = (confirm, &alone) {
                metrics.confirmation("unreachable");
                tracing::warn!(uid = %subject.uid(), error = %e, "cannot confirm a cross-object finding");
                let reason = format!("the API server could not confirm it ({e})");
                admission::downgrade_cross_object(decision, alone, &reason)
            } else {
                tracing::warn!(uid = %subject.uid(), error = %e, "cannot read what the judgement needs from the namespace");
                decision
            }
        }
    }
}

fn log_decision(path: &str, d: &Decision, dry_run: bool, elapsed: Duration) {
    DecisionLine {
        path,
        uid: &d.uid,
        kind: d.kind,
        namespace: &d.namespace,
        name: &d.name,
        operation: d.operation,
        dry_run,
        verdict: d.verdict.as_str(),
        rules: &d.rule_ids(),
        patch_ops: d.patch.0.len(),
        latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        denial: d.status.as_ref().map(|s| s.message.as_str()).unwrap_or(""),
    }
    .log();
}

fn too_large() -> String {
    format!(
        "the request body exceeds the limit of {} MiB",
        BODY_LIMIT / (1024 * 1024)
    )
}

enum BodyError {
    TooLarge,
    Broken(String),
}

async fn read_body(body: Body) -> Result<axum::body::Bytes, BodyError> {
    match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Broken(e.to_string())),
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn is_json(headers: &HeaderMap) -> bool {
    let media_type = content_type(headers).split(';').next().unwrap_or("").trim();
    media_type.eq_ignore_ascii_case("application/json")
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Runs the webhook until SIGTERM or SIGINT, then drains and returns.
pub async fn run(config: Config) -> Result<(), StartError> {
    let (policy, policy_bytes) = match &config.policy {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                StartError(format!("cannot read the policy {}: {e}", path.display()))
            })?;
            let text = String::from_utf8_lossy(&bytes);
            let policy = Policy::from_yaml(&text, &path.display().to_string())
                .map_err(|e| StartError(e.to_string()))?;
            (policy, Some(bytes))
        }
        None => (Policy::embedded(), None),
    };
    if !config.tls_cert.exists() {
        return Err(StartError(format!(
            "no certificate at {}: make a development CA and certificate with `extsvc-guard certs` \
             (writes certs/ca.crt, certs/tls.crt and certs/tls.key), or point --tls-cert and --tls-key at yours",
            config.tls_cert.display()
        )));
    }
    let certificate =
        CertificateFiles::read(&config.tls_cert, &config.tls_key).map_err(StartError)?;
    let client_ca = match &config.client_ca {
        Some(path) => Some(ClientCa::read(path).map_err(StartError)?),
        None => None,
    };
    let tls = RustlsConfig::from_config(
        certificate
            .server_config(&config.tls_cert, &config.tls_key, client_ca.as_ref())
            .map_err(StartError)?,
    );

    let audit = config.audit.interval > Duration::ZERO;
    // What the gauges' judgement reads of the objects is kept from the first list on.
    let kept = audit.then(|| Kept::for_policy(&policy));
    let (cluster, cluster_note) = start_cluster(&config.cluster, kept).await?;
    let conditions = match (&cluster, &config.cluster) {
        (
            Some(cluster),
            ClusterConfig::Watch {
                webhook_configuration,
                ..
            },
        ) => Some((cluster.client.clone(), webhook_configuration.clone())),
        _ => None,
    };
    let state = Arc::new(State::new(
        policy,
        config.request_timeout,
        config.large_review_budget,
        cluster,
    ));
    // Runs for the life of the process.
    let _conditions_task = conditions
        .map(|(client, name)| tokio::spawn(conditions::watch(client, name, Arc::clone(&state))));
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| {
            StartError(format!(
                "cannot listen on {} (--metrics-listen): {e}",
                config.metrics_listen
            ))
        })?;
    let metrics_addr = metrics_listener
        .local_addr()
        .map_err(|e| StartError(format!("metrics listener: {e}")))?;

    let handle = axum_server::Handle::new();
    // The cap applies before the handshake, so a flood of connections costs no TLS work;
    // a client that stalls its handshake is dropped after --request-timeout.
    let acceptor = RustlsAcceptor::new(tls.clone())
        .handshake_timeout(config.request_timeout)
        .acceptor(ConnectionLimit::new(
            config.max_connections,
            Arc::clone(&state),
        ));
    let mut server = axum_server::bind(config.listen)
        .acceptor(acceptor)
        .handle(handle.clone());
    // A client that never finishes its headers, or an HTTP/2 peer that stopped answering,
    // must not hold a connection (and a shutdown) forever. In hyper >= 1.5 the HTTP/1 header
    // read timeout also runs while a keep-alive connection waits for its next request, so it
    // is the idle timeout too.
    let http = server.http_builder();
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.request_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    // HTTP/2: at most H2_MAX_STREAMS requests at once per connection; a peer resetting
    // streams faster than they are accepted (the "rapid reset" attack) or making the
    // server reset them for protocol errors gets a GOAWAY (ENHANCE_YOUR_CALM).
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(Some(H2_MAX_STREAMS))
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_pending_accept_reset_streams(Some(H2_MAX_PENDING_RESETS))
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS))
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let app = admission_router(Arc::clone(&state));
    let mut admission_task =
        tokio::spawn(async move { server.serve(app.into_make_service()).await });
    let Some(addr) = handle.listening().await else {
        let cause = match (&mut admission_task).await {
            Ok(Err(e)) => e.to_string(),
            _ => "unknown error".to_owned(),
        };
        return Err(StartError(format!(
            "cannot listen on {} (--listen): {cause}",
            config.listen
        )));
    };

    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_app = metrics_router(Arc::clone(&state));
    let metrics_task = tokio::spawn(async move {
        axum::serve(metrics_listener, metrics_app)
            .with_graceful_shutdown(async {
                let _ = metrics_stopped.await;
            })
            .await
    });
    let reloader = tokio::spawn(reload::run(
        reload::Watched {
            cert: config.tls_cert.clone(),
            key: config.tls_key.clone(),
            policy: config.policy.clone(),
            client_ca: config.client_ca.clone(),
        },
        config.reload_interval,
        tls,
        Arc::clone(&state),
        reload::Initial {
            certificate,
            policy: policy_bytes,
            client_ca,
        },
    ));
    let auditor = (audit && state.cluster.is_some())
        .then(|| tokio::spawn(audit::run(Arc::clone(&state), config.audit)));
    tracing::info!(
        %addr,
        metrics_addr = %metrics_addr,
        policy = %config.policy.as_ref().map_or("embedded default".to_owned(), |p| p.display().to_string()),
        cluster = %cluster_note,
        client_auth = %config.client_ca.as_ref().map_or("none (any client may call)".to_owned(), |p| format!("certificate signed by {}", p.display())),
        max_connections = config.max_connections,
        large_review_budget_mib = config.large_review_budget / (1024 * 1024),
        "admission webhook listening"
    );

    let signal = shutdown_signal().await;
    let started = Instant::now();
    state.shutting_down.store(true, Ordering::SeqCst);
    tracing::info!(
        signal,
        grace = ?config.shutdown_grace,
        "shutting down: /readyz answers 503, in-flight requests finish"
    );
    let delay = match signal {
        "SIGTERM" => config.shutdown_delay.min(config.shutdown_grace),
        _ => Duration::ZERO,
    };
    tokio::time::sleep(delay).await;
    handle.graceful_shutdown(Some(config.shutdown_grace.saturating_sub(delay)));
    let remaining =
        config.shutdown_grace.saturating_sub(started.elapsed()) + Duration::from_millis(250);
    if tokio::time::timeout(remaining, &mut admission_task)
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing the remaining connections");
        admission_task.abort();
    }
    reloader.abort();
    if let Some(auditor) = auditor {
        auditor.abort();
    }
    let _ = stop_metrics.send(());
    let _ = tokio::time::timeout(Duration::from_secs(1), metrics_task).await;
    tracing::info!(elapsed = ?started.elapsed(), "stopped");
    Ok(())
}

/// Connects to the cluster and starts the watches, or says why the server runs without.
async fn start_cluster(
    config: &ClusterConfig,
    kept: Option<Kept>,
) -> Result<(Option<Cluster>, String), StartError> {
    let without = "none: cross-object rules see only the object under review and do not deny";
    let ClusterConfig::Watch {
        credentials,
        namespaces,
        max_staleness,
        confirm_timeout,
        ..
    } = config
    else {
        return Ok((None, format!("{without} (--no-cluster)")));
    };
    let client = match client::connect(credentials).await {
        Ok(client) => client,
        Err(ConnectError::NotConfigured(why)) => {
            return Ok((None, format!("{without} ({why})")));
        }
        Err(ConnectError::Invalid(why)) => return Err(StartError(why)),
    };
    let cache = Arc::new(ClusterCache::scoped(namespaces));
    if let Some(kept) = kept {
        cache.set_kept(kept);
    }
    // The watch tasks run for the life of the process (restarted for a relist).
    let tasks = watch::spawn(&client, &cache, namespaces);
    let scope = if namespaces.is_empty() {
        "cluster-wide".to_owned()
    } else {
        format!("namespaces {}", namespaces.join(", "))
    };
    Ok((
        Some(Cluster {
            cache,
            fresh: FreshReads::new(
                namespace_reader(client.clone(), *confirm_timeout),
                *confirm_timeout,
            ),
            client,
            read_timeout: *confirm_timeout,
            max_staleness: *max_staleness,
            namespaces: namespaces.clone(),
            watches: std::sync::Mutex::new(tasks),
        }),
        format!("watching {scope}; ready after the initial lists"),
    ))
}

/// Reads a namespace from the API server for [`FreshReads`].
fn namespace_reader(client: kube::Client, timeout: Duration) -> Reader {
    Arc::new(move |namespace: String, scope: FreshScope| {
        let client = client.clone();
        Box::pin(
            async move { client::namespace_snapshot(&client, &namespace, scope, timeout).await },
        )
    })
}

/// Waits for SIGTERM (Kubernetes stopping the Pod) or SIGINT (Ctrl-C).
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            // Without signal handlers the process still stops on the default action.
            std::future::pending::<()>().await;
            "none"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_with_parameters_and_any_case() {
        let mut h = HeaderMap::new();
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("text/plain", false),
            ("application/jsonp", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&h), ok, "{value}");
        }
        h.remove(header::CONTENT_TYPE);
        assert!(!is_json(&h));
    }
}
