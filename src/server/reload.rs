//! Hot reload of the serving certificate and the policy.
//!
//! Kubernetes updates a mounted Secret or ConfigMap by swapping a `..data` symlink, which
//! file-event watchers see inconsistently; polling the files and comparing their contents
//! sees every swap, costs a few reads per interval and needs no extra dependency.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use crate::policy::Policy;
use crate::server::State;
use crate::server::tls::CertificateFiles;

pub struct Watched {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub policy: Option<PathBuf>,
}

/// Last contents seen, whether or not they were accepted: a broken file is reported once,
/// not at every poll, and a fixed one is picked up at once.
struct Seen {
    certificate: Option<CertificateFiles>,
    policy: Option<Vec<u8>>,
}

pub async fn run(
    watched: Watched,
    interval: Duration,
    tls: RustlsConfig,
    state: Arc<State>,
    initial_certificate: CertificateFiles,
    initial_policy: Option<Vec<u8>>,
) {
    let mut seen = Seen {
        certificate: Some(initial_certificate),
        policy: initial_policy,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        check_certificate(&watched, &mut seen, &tls, &state);
        check_policy(&watched, &mut seen, &state);
    }
}

fn check_certificate(watched: &Watched, seen: &mut Seen, tls: &RustlsConfig, state: &State) {
    // A Secret being rewritten can be missing for a moment: try again at the next poll.
    let Ok(files) = CertificateFiles::read(&watched.cert, &watched.key) else {
        return;
    };
    if seen.certificate.as_ref() == Some(&files) {
        return;
    }
    match files.server_config(&watched.cert, &watched.key) {
        Ok(config) => {
            tls.reload_from_config(config);
            state.metrics.reloaded("certificate");
            tracing::info!(
                cert = %watched.cert.display(),
                "serving certificate reloaded; new connections get it"
            );
        }
        Err(e) => {
            state.metrics.reload_failed("certificate");
            tracing::error!(
                error = %e,
                "changed certificate refused; the previous certificate stays in use"
            );
        }
    }
    seen.certificate = Some(files);
}

fn check_policy(watched: &Watched, seen: &mut Seen, state: &State) {
    let Some(path) = &watched.policy else {
        return;
    };
    let Ok(bytes) = std::fs::read(path) else {
        return;
    };
    if seen.policy.as_ref() == Some(&bytes) {
        return;
    }
    let text = String::from_utf8_lossy(&bytes);
    match Policy::from_yaml(&text, &path.display().to_string()) {
        Ok(policy) => {
            state.set_policy(policy);
            state.metrics.reloaded("policy");
            tracing::info!(policy = %path.display(), "policy reloaded");
        }
        Err(e) => {
            state.metrics.reload_failed("policy");
            tracing::error!(
                error = %e,
                "changed policy refused; the previous policy stays in use"
            );
        }
    }
    seen.policy = Some(bytes);
}
