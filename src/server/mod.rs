//! `serve`: the HTTPS admission webhook (`/validate`, `/mutate`) and the plain-HTTP
//! metrics listener (`/healthz`, `/readyz`, `/metrics`).
//!
//! The server only moves bytes: reviews go to [`admission::decide`] with the current
//! policy and cluster view, and its decision goes back. Certificates and policy reload
//! without a restart ([`reload`]); SIGTERM drains in-flight requests.

pub mod audit;
pub mod conditions;
pub mod connections;
mod handler;
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
use axum::extract::{Request, State as AxumState};
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::TokioTimer;

use crate::admission::Endpoint;
use crate::cluster::FreshScope;
use crate::cluster::cache::{ClusterCache, Kept};
use crate::cluster::client::{self, ConnectError, Credentials};
use crate::cluster::fresh::{FreshReads, Reader};
use crate::cluster::{ClusterView, NoClusterView, watch};
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
            post(|s: AxumState<Arc<State>>, r: Request| handler::admit(s, r, Endpoint::Validate)),
        )
        .route(
            "/mutate",
            post(|s: AxumState<Arc<State>>, r: Request| handler::admit(s, r, Endpoint::Mutate)),
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
