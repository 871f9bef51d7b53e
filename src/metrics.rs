//! Prometheus metrics of the webhook, served as text on the metrics listener.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::Decision;
use crate::finding::Action;
use crate::rules::RuleId;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub path: &'static str,
    pub kind: &'static str,
    pub operation: &'static str,
    pub verdict: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub rule: &'static str,
    pub action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `validating` or `mutating`.
    pub webhook: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `certificate`, `policy` or `client-ca`.
    pub what: &'static str,
}

/// Latency buckets in seconds: the webhook answers in 5 to 30 microseconds, depending on
/// the node; the API server gives up after its timeout (seconds).
const LATENCY_BUCKETS: [f64; 15] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1, 0.5, 1.0, 5.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<PathLabels, Histogram, fn() -> Histogram>,
    findings: Family<FindingLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    reload_failures: Family<ReloadLabels, Counter>,
    in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Requests refused before a decision (413, 415, 400, 408), by status code.
    refused: Family<StatusLabels, Counter<u64, AtomicU64>>,
    cache_objects: Family<WatchLabels, Gauge>,
    cache_synced: Family<WatchLabels, Gauge>,
    cache_resyncs: Family<WatchLabels, Gauge>,
    cache_event_age: Family<WatchLabels, Gauge<f64, AtomicU64>>,
    confirmations: Family<OutcomeLabels, Counter>,
    connections_open: Gauge<i64, std::sync::atomic::AtomicI64>,
    webhook_conditions: Family<WebhookLabels, Gauge>,
    connections_refused: Counter,
    violations: Family<ViolationLabels, Gauge>,
    violations_computed: Gauge<f64, AtomicU64>,
    violations_duration: Gauge<f64, AtomicU64>,
    violations_judged: Gauge,
    /// The violation series exported by the last computation, and whether each is a zero
    /// kept one computation longer.
    violation_series: Mutex<BTreeMap<ViolationLabels, bool>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ViolationLabels {
    pub rule: &'static str,
    pub action: &'static str,
    /// A namespace, or `(other)` for the namespaces summed together.
    pub namespace: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub resource: &'static str,
    /// Empty for a cluster-wide watch.
    pub namespace: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub path: &'static str,
    pub code: u16,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("extsvc_guard");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<PathLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let findings = Family::<FindingLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let reload_failures = Family::<ReloadLabels, Counter>::default();
        let in_flight = Gauge::default();
        let refused = Family::<StatusLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by path, kind, operation and verdict",
            requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time from the request's arrival to its answer, by path",
            latency.clone(),
        );
        registry.register(
            "findings",
            "Findings in answered reviews, by rule and action",
            findings.clone(),
        );
        registry.register(
            "reloads",
            "Certificate or policy files reloaded after a change",
            reloads.clone(),
        );
        registry.register(
            "reload_failures",
            "Changed certificate or policy files that were refused (the previous one stays in use)",
            reload_failures.clone(),
        );
        registry.register(
            "admission_in_flight",
            "Admission requests being handled",
            in_flight.clone(),
        );
        registry.register(
            "admission_refused",
            "Requests refused before a decision (body too large, wrong content type, unreadable, too slow), by status code",
            refused.clone(),
        );
        let cache_objects = Family::<WatchLabels, Gauge>::default();
        let cache_synced = Family::<WatchLabels, Gauge>::default();
        let cache_resyncs = Family::<WatchLabels, Gauge>::default();
        let cache_event_age = Family::<WatchLabels, Gauge<f64, AtomicU64>>::default();
        let confirmations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cache_objects",
            "Objects in the watch cache, by resource and watched namespace",
            cache_objects.clone(),
        );
        registry.register(
            "cache_synced",
            "1 once the watch has delivered its initial list",
            cache_synced.clone(),
        );
        registry.register(
            "cache_resyncs",
            "Complete relists since start (410 Gone, restarts), by watch",
            cache_resyncs.clone(),
        );
        registry.register(
            "cache_last_event_age_seconds",
            "Seconds since the watch last delivered an event or a list",
            cache_event_age.clone(),
        );
        registry.register(
            "confirmations",
            "Cross-object denials and warnings checked against the API server: confirmed, overturned, unreachable, stale",
            confirmations.clone(),
        );
        let connections_open = Gauge::default();
        let connections_refused = Counter::default();
        registry.register(
            "connections_open",
            "Admission (TLS) connections open",
            connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Admission connections closed at once because --max-connections were open",
            connections_refused.clone(),
        );
        let webhook_conditions = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "webhook_conditions_current",
            "1 when the installed webhook configuration's matchConditions (and the mutating webhook's rules) are what the policy needs, 0 when they differ (generate them with extsvc-guard policy match-conditions)",
            webhook_conditions.clone(),
        );
        let violations = Family::<ViolationLabels, Gauge>::default();
        let violations_computed = Gauge::<f64, AtomicU64>::default();
        let violations_duration = Gauge::<f64, AtomicU64>::default();
        let violations_judged = Gauge::default();
        registry.register(
            "violations",
            "Objects in the watch cache in violation now, by rule, action and namespace (the namespaces with the most, see --audit-namespaces; the rest summed as namespace=\"(other)\")",
            violations.clone(),
        );
        registry.register(
            "violations_last_computed_timestamp_seconds",
            "When the violation gauges were last computed (Unix time)",
            violations_computed.clone(),
        );
        registry.register(
            "violations_computation_seconds",
            "How long the last computation of the violation gauges took",
            violations_duration.clone(),
        );
        registry.register(
            "violations_judged_objects",
            "Objects judged by the last computation of the violation gauges",
            violations_judged.clone(),
        );
        // Reload series exist from the start, so an alert on failures sees 0, not nothing.
        for what in ["certificate", "policy", "client-ca"] {
            let _ = reloads.get_or_create(&ReloadLabels { what });
            let _ = reload_failures.get_or_create(&ReloadLabels { what });
        }
        Metrics {
            registry,
            requests,
            latency,
            findings,
            reloads,
            reload_failures,
            in_flight,
            refused,
            cache_objects,
            cache_synced,
            cache_resyncs,
            cache_event_age,
            confirmations,
            connections_open,
            connections_refused,
            webhook_conditions,
            violations,
            violations_computed,
            violations_duration,
            violations_judged,
            violation_series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether the `webhook` configuration's installed matchConditions are current.
    pub fn webhook_conditions(&self, webhook: &'static str, current: bool) {
        self.webhook_conditions
            .get_or_create(&WebhookLabels { webhook })
            .set(i64::from(current));
    }

    /// Sets the violation gauges to a computation's `series` (see `audit::Tally::series`),
    /// made at `unix_seconds` in `seconds`, over `judged` objects. A series that is gone
    /// since the last computation reads 0 until the next one, so that a scrape sees the
    /// count drop; then it is removed, so that namespaces that come and go add no series.
    pub fn record_violations(
        &self,
        series: &BTreeMap<(String, RuleId, Action), u64>,
        judged: u64,
        unix_seconds: f64,
        seconds: f64,
    ) {
        let mut exported = self
            .violation_series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = BTreeMap::new();
        for ((namespace, rule, action), count) in series {
            let labels = ViolationLabels {
                rule: rule.as_str(),
                action: action.as_str(),
                namespace: namespace.clone(),
            };
            self.violations
                .get_or_create(&labels)
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
            next.insert(labels, false);
        }
        for (labels, zeroed) in std::mem::take(&mut *exported) {
            if next.contains_key(&labels) {
                continue;
            }
            if zeroed {
                self.violations.remove(&labels);
            } else {
                self.violations.get_or_create(&labels).set(0);
                next.insert(labels, true);
            }
        }
        *exported = next;
        self.violations_judged
            .set(i64::try_from(judged).unwrap_or(i64::MAX));
        self.violations_duration.set(seconds);
        self.violations_computed.set(unix_seconds);
    }

    pub fn record_decision(&self, path: &'static str, decision: &Decision, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                path,
                kind: decision.kind,
                operation: decision.operation,
                verdict: decision.verdict.as_str(),
            })
            .inc();
        self.observe_latency(path, seconds);
        for f in &decision.findings {
            self.findings
                .get_or_create(&FindingLabels {
                    rule: f.rule.as_str(),
                    action: f.action.as_str(),
                })
                .inc();
        }
    }

    pub fn record_refused(&self, path: &'static str, code: u16, seconds: f64) {
        self.refused
            .get_or_create(&StatusLabels { path, code })
            .inc();
        self.observe_latency(path, seconds);
    }

    fn observe_latency(&self, path: &'static str, seconds: f64) {
        self.latency
            .get_or_create(&PathLabels { path })
            .observe(seconds);
    }

    pub fn reloaded(&self, what: &'static str) {
        self.reloads.get_or_create(&ReloadLabels { what }).inc();
    }

    pub fn reload_failed(&self, what: &'static str) {
        self.reload_failures
            .get_or_create(&ReloadLabels { what })
            .inc();
    }

    pub fn confirmation(&self, outcome: &'static str) {
        self.confirmations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Copies the watch states into their gauges (at scrape time).
    pub fn record_cache(
        &self,
        watches: &std::collections::BTreeMap<
            crate::cluster::cache::WatchId,
            crate::cluster::cache::WatchState,
        >,
        now: std::time::Instant,
    ) {
        for (id, state) in watches {
            let labels = WatchLabels {
                resource: id.kind.resource(),
                namespace: id.namespace.clone().unwrap_or_default(),
            };
            self.cache_objects
                .get_or_create(&labels)
                .set(i64::try_from(state.objects).unwrap_or(i64::MAX));
            self.cache_synced
                .get_or_create(&labels)
                .set(i64::from(state.synced));
            self.cache_resyncs
                .get_or_create(&labels)
                .set(i64::try_from(state.resyncs).unwrap_or(i64::MAX));
            if let Some(last) = state.last_event {
                self.cache_event_age
                    .get_or_create(&labels)
                    .set(now.saturating_duration_since(last).as_secs_f64());
            }
        }
    }

    pub fn connections_open(&self) -> &Gauge<i64, std::sync::atomic::AtomicI64> {
        &self.connections_open
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn in_flight(&self) -> &Gauge<i64, std::sync::atomic::AtomicI64> {
        &self.in_flight
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_violation_gone_reads_zero_for_one_computation_then_its_series_goes() {
        let m = Metrics::new();
        let series = |n: &[(&str, u64)]| -> BTreeMap<(String, RuleId, Action), u64> {
            n.iter()
                .map(|(ns, c)| {
                    (
                        ((*ns).to_owned(), RuleId::EndpointsOrphaned, Action::Deny),
                        *c,
                    )
                })
                .collect()
        };
        let line = |text: &str, ns: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("extsvc_guard_violations{")
                        && l.contains(&format!("namespace=\"{ns}\""))
                })
                .map(str::to_owned)
        };
        m.record_violations(&series(&[("shop", 2), ("db", 1)]), 10, 1_700_000_000.0, 0.5);
        let text = m.encode();
        assert_eq!(
            line(&text, "shop").as_deref(),
            Some(
                "extsvc_guard_violations{rule=\"endpoints-orphaned\",action=\"deny\",namespace=\"shop\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("extsvc_guard_violations_last_computed_timestamp_seconds 1700000000.0"),
            "{text}"
        );
        assert!(
            text.contains("extsvc_guard_violations_judged_objects 10"),
            "{text}"
        );
        m.record_violations(&series(&[("shop", 2)]), 9, 1_700_000_060.0, 0.5);
        let text = m.encode();
        assert!(
            line(&text, "db").is_some_and(|l| l.ends_with(" 0")),
            "{text}"
        );
        m.record_violations(&series(&[("shop", 1)]), 9, 1_700_000_120.0, 0.5);
        let text = m.encode();
        assert_eq!(line(&text, "db"), None, "{text}");
        assert!(
            line(&text, "shop").is_some_and(|l| l.ends_with(" 1")),
            "{text}"
        );
    }

    #[test]
    fn reloads_and_failures_are_counted_by_what() {
        let m = Metrics::new();
        m.reloaded("certificate");
        m.reload_failed("policy");
        let text = m.encode();
        assert!(
            text.contains("extsvc_guard_reloads_total{what=\"certificate\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("extsvc_guard_reload_failures_total{what=\"policy\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("extsvc_guard_admission_in_flight 0"),
            "{text}"
        );
    }

    #[test]
    fn a_review_answered_in_a_few_microseconds_is_told_apart_from_one_taking_twenty() {
        let m = Metrics::new();
        m.record_refused("/validate", 400, 0.000_004);
        m.record_refused("/validate", 400, 0.000_020);
        let text = m.encode();
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("extsvc_guard_admission_duration_seconds_bucket")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(bucket("0.00001").as_deref(), Some("1"), "{text}");
        assert_eq!(bucket("0.000025").as_deref(), Some("2"), "{text}");
    }
}
