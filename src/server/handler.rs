//! One admission request: its body read within the limits, the review decided (with
//! fresh reads confirming what rests on other objects), logged and answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::large::LargeReviews;
use crate::admission::{self, Decision, Endpoint};
use crate::cluster::FreshScope;
use crate::cluster::client::{self};
use crate::cluster::{ClusterView, LabelsOnly, Overlay};
use crate::finding::Action;
use crate::logging::DecisionLine;
use crate::metrics::Metrics;
use crate::policy::Policy;

use super::{BODY_LIMIT, Cluster, State};

/// Counts a request in flight for as long as it lives.
pub(super) struct InFlight<'a>(&'a Metrics);

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

pub(super) async fn admit(
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
pub(super) async fn room_for(
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
pub(super) async fn with_live_reads(
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

pub(super) fn log_decision(path: &str, d: &Decision, dry_run: bool, elapsed: Duration) {
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

pub(super) fn too_large() -> String {
    format!(
        "the request body exceeds the limit of {} MiB",
        BODY_LIMIT / (1024 * 1024)
    )
}

pub(super) enum BodyError {
    TooLarge,
    Broken(String),
}

pub(super) async fn read_body(body: Body) -> Result<axum::body::Bytes, BodyError> {
    match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Broken(e.to_string())),
    }
}

pub(super) fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub(super) fn is_json(headers: &HeaderMap) -> bool {
    let media_type = content_type(headers).split(';').next().unwrap_or("").trim();
    media_type.eq_ignore_ascii_case("application/json")
}

pub(super) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
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
