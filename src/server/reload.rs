//! Hot reload of the serving certificate and the policy.
//!
//! Kubernetes updates a mounted Secret or ConfigMap by swapping a `..data` symlink, which
//! file-event watchers see inconsistently; polling the files and comparing their contents
//! sees every swap, costs a few reads per interval and needs no extra dependency.
//!
//! A change is acted on only when two polls in a row read the same new contents: a file
//! caught half-written, or a certificate read just before its new key, is never loaded nor
//! reported as a failure.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use crate::policy::Policy;
use crate::server::State;
use crate::server::tls::{CertificateFiles, ClientCa};

pub struct Watched {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub policy: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

/// One watched thing: the contents last acted on (accepted or refused — a broken file is
/// reported once, not at every poll) and a change seen once, waiting for a second read.
struct Tracked<T> {
    settled: Option<T>,
    candidate: Option<T>,
}

impl<T: PartialEq> Tracked<T> {
    fn new(settled: Option<T>) -> Tracked<T> {
        Tracked {
            settled,
            candidate: None,
        }
    }

    /// The contents to act on now, if `read` is a change that held for two polls.
    fn settle(&mut self, read: T) -> Option<&T> {
        if self.settled.as_ref() == Some(&read) {
            self.candidate = None;
            return None;
        }
        if self.candidate.as_ref() != Some(&read) {
            self.candidate = Some(read);
            return None;
        }
        self.settled = self.candidate.take();
        self.settled.as_ref()
    }
}

struct Seen {
    certificate: Tracked<CertificateFiles>,
    policy: Tracked<Vec<u8>>,
    client_ca_pem: Tracked<Vec<u8>>,
    /// The client CA in use: a changed certificate is served with it.
    client_ca: Option<ClientCa>,
}

/// What the reloader starts from: what `serve` loaded at start.
pub struct Initial {
    pub certificate: CertificateFiles,
    pub policy: Option<Vec<u8>>,
    pub client_ca: Option<ClientCa>,
}

pub async fn run(
    watched: Watched,
    interval: Duration,
    tls: RustlsConfig,
    state: Arc<State>,
    initial: Initial,
) {
    let mut seen = Seen {
        certificate: Tracked::new(Some(initial.certificate)),
        policy: Tracked::new(initial.policy),
        client_ca_pem: Tracked::new(initial.client_ca.as_ref().map(|ca| ca.pem.clone())),
        client_ca: initial.client_ca,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        check_certificate(&watched, &mut seen, &tls, &state);
        check_client_ca(&watched, &mut seen, &tls, &state);
        check_policy(&watched, &mut seen, &state);
    }
}

fn check_certificate(watched: &Watched, seen: &mut Seen, tls: &RustlsConfig, state: &State) {
    // A Secret being rewritten can be missing for a moment: try again at the next poll.
    let Ok(files) = CertificateFiles::read(&watched.cert, &watched.key) else {
        return;
    };
    let Some(files) = seen.certificate.settle(files) else {
        return;
    };
    match files.server_config(&watched.cert, &watched.key, seen.client_ca.as_ref()) {
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
}

fn check_client_ca(watched: &Watched, seen: &mut Seen, tls: &RustlsConfig, state: &State) {
    let Some(path) = &watched.client_ca else {
        return;
    };
    let Ok(pem) = std::fs::read(path) else {
        return;
    };
    let Some(pem) = seen.client_ca_pem.settle(pem) else {
        return;
    };
    let built = ClientCa::from_pem(pem.clone(), path).and_then(|ca| {
        // The certificate in use: the last one accepted.
        let files = seen
            .certificate
            .settled
            .as_ref()
            .ok_or_else(|| "no serving certificate loaded".to_owned())?;
        let config = files.server_config(&watched.cert, &watched.key, Some(&ca))?;
        Ok((ca, config))
    });
    match built {
        Ok((ca, config)) => {
            seen.client_ca = Some(ca);
            tls.reload_from_config(config);
            state.metrics.reloaded("client-ca");
            tracing::info!(client_ca = %path.display(), "client CA reloaded; new connections are checked against it");
        }
        Err(e) => {
            state.metrics.reload_failed("client-ca");
            tracing::error!(
                error = %e,
                "changed client CA refused; the previous one stays in use"
            );
        }
    }
}

fn check_policy(watched: &Watched, seen: &mut Seen, state: &State) {
    let Some(path) = &watched.policy else {
        return;
    };
    let Ok(bytes) = std::fs::read(path) else {
        return;
    };
    let Some(bytes) = seen.policy.settle(bytes) else {
        return;
    };
    let text = String::from_utf8_lossy(bytes);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_acted_on_once_after_two_identical_reads() {
        let mut t = Tracked::new(Some(1));
        assert_eq!(t.settle(1), None, "unchanged");
        assert_eq!(t.settle(2), None, "first sight of a change waits");
        assert_eq!(t.settle(3), None, "still changing");
        assert_eq!(t.settle(3), Some(&3), "held for two polls");
        assert_eq!(t.settle(3), None, "acted on once");
        assert_eq!(t.settle(1), None);
        assert_eq!(t.settle(3), None, "a blip back is forgotten");
    }
}
