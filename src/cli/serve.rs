//! `extsvc-guard serve`: the admission webhook.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use tracing_subscriber::fmt::MakeWriter;

use crate::cluster::client::Credentials;
use crate::logging;
use crate::server::{self, ClusterConfig, Config};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTPS admission listener (/validate, /mutate).
    #[arg(long, default_value = "0.0.0.0:8443", value_name = "ADDR")]
    listen: SocketAddr,
    /// Address of the plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    metrics_listen: SocketAddr,
    /// Serving certificate (PEM chain); reloaded when the file changes.
    #[arg(long, default_value = "certs/tls.crt", value_name = "FILE")]
    tls_cert: PathBuf,
    /// Private key of the serving certificate (PEM).
    #[arg(long, default_value = "certs/tls.key", value_name = "FILE")]
    tls_key: PathBuf,
    /// Serve only clients presenting a certificate signed by a CA in this PEM file (the API
    /// server presents one when its AdmissionConfiguration names it); reloaded when it
    /// changes. Without it, any client that reaches the port may call.
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Admission connections open at once, at most; more are closed at once (the API server
    /// keeps a few long-lived HTTP/2 connections per replica).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    max_connections: u32,
    /// Policy file (YAML), reloaded when it changes; the embedded default when absent.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Run without a cluster connection: cross-object rules see only the object under
    /// review and never deny. Also the case when no kubeconfig and no in-cluster service
    /// account are found.
    #[arg(long)]
    no_cluster: bool,
    /// Kubeconfig file (otherwise KUBECONFIG, ~/.kube/config, then the in-cluster service
    /// account).
    #[arg(long, value_name = "FILE", conflicts_with = "no_cluster")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, value_name = "NAME", conflicts_with = "no_cluster")]
    context: Option<String>,
    /// Watch only this namespace (repeat for several); cluster-wide when absent.
    #[arg(long, value_name = "NS", conflicts_with = "no_cluster")]
    watch_namespace: Vec<String>,
    /// A watch failing for longer than this makes cross-object denials warnings.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    max_staleness: Duration,
    /// Longest wait for the API server when a judgement reads from it (confirming a
    /// cross-object denial, namespace labels, a selector change). With --request-timeout it
    /// must stay below --webhook-timeout.
    #[arg(long, default_value = "1500ms", value_parser = parse_duration, value_name = "DURATION")]
    confirm_timeout: Duration,
    /// The name of the ValidatingWebhookConfiguration and MutatingWebhookConfiguration that
    /// call this server: their matchConditions are compared with what the policy needs, and
    /// a difference is logged and shown in extsvc_guard_webhook_conditions_current.
    #[arg(
        long,
        default_value = "extsvc-guard",
        value_name = "NAME",
        conflicts_with = "no_cluster"
    )]
    webhook_configuration: String,
    /// The webhook configurations' timeoutSeconds: how long the API server waits for an
    /// answer. --request-timeout plus --confirm-timeout must stay below it, so the API server
    /// always gets an answer, never a timeout; serve refuses to start otherwise.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    webhook_timeout: Duration,
    /// How often certificate and policy files are checked for changes.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    reload_interval: Duration,
    /// Longest time a request may wait for its body to arrive and, when it is large, for its
    /// turn to be judged (also the TLS handshake's and the headers'). With --confirm-timeout
    /// it must stay below --webhook-timeout.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    request_timeout: Duration,
    /// MiB of large reviews (bodies of 64 KiB and more) read and judged at once; more wait
    /// their turn, up to --request-timeout. A review near the 3 MiB body limit needs about
    /// 50 MiB of memory while it is judged: raise this only with the memory limit.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024), value_name = "MIB")]
    large_review_budget: u32,
    /// Longest time from SIGTERM to exit; in-flight requests finish within it.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    shutdown_grace: Duration,
    /// After SIGTERM, time between /readyz turning 503 and the listener closing, so the
    /// Service stops routing here first (part of the grace period; Ctrl-C skips it).
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    shutdown_delay: Duration,
    /// How often the violation gauges (extsvc_guard_violations: the objects in the watch
    /// cache that violate a rule now) are computed, besides right after the cache lists;
    /// 0 turns them off. Each computation judges every cached object on a thread of its own.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    audit_interval: Duration,
    /// Namespaces with violation series of their own, at most: those with the most objects
    /// in violation; the others are summed as namespace="(other)".
    #[arg(long, default_value_t = 100, value_name = "N")]
    audit_namespaces: u32,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `250ms`, `4s`, `2m`; a bare number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 4s or 1m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Log lines are written by a thread of their own, batched into one write when they come
/// faster than the output takes them ([`logging`]): a decision line per request must not cost
/// every request a `write` to a pipe. Lines are never dropped (a full queue makes callers
/// wait, as a direct write would). The guard writes what is pending when `serve` returns
/// (within 2 s: a stalled stdout must not keep the process from exiting).
fn init_logging(format: LogFormat) -> Option<logging::Flush> {
    match logging::start(std::io::stdout()) {
        Ok((sink, flush)) => {
            if format == LogFormat::Json {
                logging::write_decisions_as_json(sink.clone());
            }
            install_subscriber(format, sink);
            Some(flush)
        }
        // No thread to spare: the lines are written by the threads that log them.
        Err(_) => {
            install_subscriber(format, std::io::stdout);
            None
        }
    }
}

/// The log filter when `RUST_LOG` is unset. rustls warns on every connection from a client
/// that sends an IP address as TLS server name (curl or a load tool pointed at 127.0.0.1;
/// the API server sends the Service's DNS name), and the connection goes on: a line per
/// connection that asks nothing of the operator.
const DEFAULT_LOG_FILTER: &str = "info,rustls=error";

fn install_subscriber<W>(format: LogFormat, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The runtime's worker threads: `TOKIO_WORKER_THREADS` when it is set, read here because
/// tokio panics on a value it cannot use; otherwise tokio's default, one per CPU the process
/// may use (its CPU quota counts: one worker under the Deployment's 1-CPU limit).
fn worker_threads() -> Result<Option<usize>, String> {
    const VAR: &str = "TOKIO_WORKER_THREADS";
    match std::env::var(VAR) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!(
                "{VAR} is {value:?}: it must be a whole number of threads, 1 or more (or unset, for one per CPU the process may use)"
            )),
        },
        Err(std::env::VarError::NotUnicode(value)) => Err(format!(
            "{VAR} is {value:?}, not text: it must be a whole number of threads, 1 or more (or unset, for one per CPU the process may use)"
        )),
    }
}

/// Why the request and read timeouts cannot fit in the API server's wait, if they cannot:
/// a request may take `request_timeout` to arrive and then wait `confirm_timeout` for a read.
fn time_budget_problem(args: &ServeArgs) -> Option<String> {
    let reads = if args.no_cluster {
        Duration::ZERO
    } else {
        args.confirm_timeout
    };
    let worst = args.request_timeout + reads;
    (worst >= args.webhook_timeout).then(|| {
        let sum = if args.no_cluster {
            format!("--request-timeout ({:?})", args.request_timeout)
        } else {
            format!(
                "--request-timeout ({:?}) plus --confirm-timeout ({:?}) is {worst:?}, which",
                args.request_timeout, args.confirm_timeout
            )
        };
        format!(
            "{sum} is not below --webhook-timeout ({:?}), the webhook configurations' timeoutSeconds: the API server would give up on a request before it is answered; lower the timeouts, or raise timeoutSeconds and --webhook-timeout together",
            args.webhook_timeout
        )
    })
}

pub fn run(args: ServeArgs) -> u8 {
    if let Some(problem) = time_budget_problem(&args) {
        eprintln!("error: {problem}");
        return super::exit::USAGE;
    }
    let _log_flush = init_logging(args.log_format);
    // One crypto provider, installed before any TLS object exists.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cluster = if args.no_cluster {
        ClusterConfig::Off
    } else {
        ClusterConfig::Watch {
            credentials: Credentials {
                kubeconfig: args.kubeconfig,
                context: args.context,
            },
            namespaces: args.watch_namespace,
            max_staleness: args.max_staleness,
            confirm_timeout: args.confirm_timeout,
            webhook_configuration: args.webhook_configuration,
        }
    };
    let config = Config {
        cluster,
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        client_ca: args.client_ca,
        max_connections: args.max_connections as usize,
        policy: args.policy,
        reload_interval: args.reload_interval.max(Duration::from_millis(50)),
        request_timeout: args.request_timeout,
        large_review_budget: args.large_review_budget as usize * 1024 * 1024,
        shutdown_grace: args.shutdown_grace,
        shutdown_delay: args.shutdown_delay,
        audit: server::audit::AuditConfig {
            interval: args.audit_interval,
            namespaces: args.audit_namespaces as usize,
        },
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    match worker_threads() {
        Ok(Some(n)) => {
            runtime.worker_threads(n);
        }
        Ok(None) => {}
        Err(message) => {
            eprintln!("error: {message}");
            return super::exit::USAGE;
        }
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return super::exit::USAGE;
        }
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => super::exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            super::exit::USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_units_or_as_seconds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("4s"), Ok(Duration::from_secs(4)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn args(flags: &[&str]) -> ServeArgs {
        use clap::Parser;
        Serve::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn the_defaults_fit_the_api_servers_wait_with_margin() {
        assert_eq!(time_budget_problem(&args(&[])), None);
        let defaults = args(&[]);
        assert!(
            defaults.request_timeout + defaults.confirm_timeout + Duration::from_secs(1)
                <= defaults.webhook_timeout
        );
    }

    #[test]
    fn timeouts_that_cannot_fit_the_api_servers_wait_are_refused_naming_the_flags() {
        let problem = time_budget_problem(&args(&["--request-timeout", "4s"])).unwrap();
        assert!(
            problem.starts_with("--request-timeout (4s) plus --confirm-timeout (1.5s) is 5.5s, which is not below --webhook-timeout (5s)"),
            "{problem}"
        );
        // Without a cluster nothing is read: only the request's own time counts.
        assert_eq!(
            time_budget_problem(&args(&["--request-timeout", "4s", "--no-cluster"])),
            None
        );
        assert!(time_budget_problem(&args(&["--request-timeout", "5s", "--no-cluster"])).is_some());
        // Raised together with timeoutSeconds, it fits.
        assert_eq!(
            time_budget_problem(&args(&[
                "--request-timeout",
                "4s",
                "--webhook-timeout",
                "10s"
            ])),
            None
        );
    }
}
