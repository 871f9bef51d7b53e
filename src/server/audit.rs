//! The violation gauges (`extsvc_guard_violations`): the objects in the watch cache that
//! violate a rule now, judged at a steady interval (`--audit-interval`) and as soon as the
//! cache has listed (again), on a thread of their own that takes at most half a core, so
//! that no admission request waits for them. Each computation judges again only the
//! namespaces that changed since the last (see [`audit::Audit`]). Nothing is written anywhere; the Ingresses and routes the cache does not keep
//! are listed for each computation (a missing permission only makes the judgement as strict
//! as for in-cluster DNS clients, as `scan` does).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::audit;
use crate::cluster::cache::Kept;
use crate::cluster::client;
use crate::server::{Cluster, State};

/// `--audit-interval` and `--audit-namespaces`.
#[derive(Debug, Clone, Copy)]
pub struct AuditConfig {
    /// Zero: no gauges.
    pub interval: Duration,
    /// Namespaces with series of their own, at most.
    pub namespaces: usize,
}

/// How often the loop looks whether a computation is due (the cache synced or relisted).
const POLL: Duration = Duration::from_millis(250);

/// Longest wait for the Ingresses and routes of one computation.
const CONSUMERS_TIMEOUT: Duration = Duration::from_secs(30);

/// Computes the gauges until the task is aborted.
pub async fn run(state: Arc<State>, config: AuditConfig) {
    let Some(cluster) = state.cluster.as_ref() else {
        return;
    };
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_due: Option<Instant> = None;
    let mut lists_seen: Option<u64> = None;
    let mut waiting_for: Option<String> = None;
    let mut consumers_error: Option<String> = None;
    let mut audit = audit::Audit::new();
    loop {
        poll.tick().await;
        let policy = state.policy();
        // The rules read a policy's required labels and annotations: objects kept without
        // them are made whole by a relist.
        if cluster.cache.set_kept(Kept::for_policy(&policy)) {
            tracing::info!(
                "the policy requires labels or annotations the watch cache did not keep: relisting, the violation gauges wait for it"
            );
            cluster.restart_watches();
        }
        let now = Instant::now();
        let why_not = if !cluster.cache.synced() {
            Some("the watch cache has not listed everything yet".to_owned())
        } else if !cluster.cache.kept_complete() {
            Some("the watch cache is relisting".to_owned())
        } else {
            cluster
                .cache
                .staleness(now, cluster.max_staleness)
                .map(|stale| format!("the watch cache is stale ({stale})"))
        };
        if let Some(why) = why_not {
            if waiting_for.as_ref() != Some(&why) && lists_seen.is_some() {
                tracing::warn!(reason = %why, "violation gauges not computed; their timestamp stays");
            }
            waiting_for = Some(why);
            continue;
        }
        waiting_for = None;
        // A complete list (the first, a relist after 410 Gone, a restart) may change much
        // at once: compute right after it, not at the next interval.
        let lists: u64 = cluster
            .cache
            .watch_states()
            .values()
            .map(|w| w.resyncs + 1)
            .sum();
        if lists_seen == Some(lists) && next_due.is_some_and(|due| now < due) {
            continue;
        }
        let consumers = match consumers(cluster).await {
            Ok(listed) => {
                consumers_error = None;
                listed
            }
            Err(e) => {
                if consumers_error.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "cannot list the Ingresses and routes; the violation gauges judge Services as if only in-cluster DNS clients used them");
                }
                consumers_error = Some(e);
                Vec::new()
            }
        };
        let cache = Arc::clone(&cluster.cache);
        let started = Instant::now();
        let mut kept = std::mem::take(&mut audit);
        let judged = tokio::task::spawn_blocking(move || {
            let update = kept.update(&cache, &policy, consumers, &mut pace());
            (kept, update)
        })
        .await;
        let update = match judged {
            Ok((kept, update)) => {
                audit = kept;
                update
            }
            Err(e) => {
                // What was kept is lost with the thread: everything is judged next time.
                tracing::error!(error = %e, "the computation of the violation gauges failed");
                next_due = Some(now + config.interval);
                continue;
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let series = update.tally.series(config.namespaces);
        state
            .metrics
            .record_violations(&series, update.tally.judged, unix, seconds);
        tracing::debug!(
            judged = update.tally.judged,
            namespaces = update.namespaces,
            judged_namespaces = update.judged_namespaces,
            series = series.len(),
            seconds,
            "violation gauges computed"
        );
        lists_seen = Some(lists);
        next_due = Some(now + config.interval);
    }
}

/// Paces a computation: after each chunk judged, sleeps as long as the chunk took, so that
/// the gauges' thread takes at most half a core and leaves the rest to admission (under
/// the Deployment's 1-CPU limit, one core is all the process has).
fn pace() -> impl FnMut() {
    let mut last = Instant::now();
    move || {
        std::thread::sleep(last.elapsed());
        last = Instant::now();
    }
}

/// The Ingresses and Gateway API routes in the watched scope, with the Services they name.
async fn consumers(cluster: &Cluster) -> Result<audit::Consumers, String> {
    let scopes: Vec<Option<&str>> = if cluster.namespaces.is_empty() {
        vec![None]
    } else {
        cluster
            .namespaces
            .iter()
            .map(|n| Some(n.as_str()))
            .collect()
    };
    let mut found = Vec::new();
    for scope in scopes {
        let listed = tokio::time::timeout(
            CONSUMERS_TIMEOUT,
            client::list_consumers(&cluster.client, scope),
        )
        .await
        .map_err(|_| {
            format!(
                "the API server did not answer within {}s",
                CONSUMERS_TIMEOUT.as_secs()
            )
        })??;
        found.extend(listed);
    }
    found.sort();
    Ok(found)
}
