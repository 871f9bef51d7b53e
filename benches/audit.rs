//! What a computation of `serve`'s violation gauges costs: `cargo bench --bench audit [-- N]`
//! (default 100 000 Services in 1 000 namespaces). The watch cache is filled as the
//! watchers fill it from objects shaped like a real API server's, then judged whole five
//! times (`audit::Audit::update` on a fresh `Audit`: the first computation, or one after a
//! relist or a policy change), unpaced: the CPU time of each, and the memory it takes
//! beyond the cache (peak resident during the computation, from `VmHWM` after resetting it
//! through `/proc/self/clear_refs`, minus resident before). Then the steady state: one
//! Service changed, and the update that follows (`AUDIT_BENCH_MISTAKES_EVERY=N`: one Service
//! in N with the seed's mistakes, default 10; 0 for none).
//!
//! Two clusters, as `cache_memory`: selector Services (their controller Endpoints and
//! EndpointSlices are not kept: 100k objects judged), and the worst case, selectorless
//! Services with hand-written Endpoints and EndpointSlices (300k judged); each with one
//! Service in ten wrong (an orphaned Endpoints, a port renamed), so that findings are made.

mod cases;

use std::time::Instant;

use std::sync::Arc;

use cases::EndpointsMode;
use extsvc_guard::audit;
use extsvc_guard::cluster::cache::{Entry, WatchId, WatchedKind};
use extsvc_guard::object::Object;
use extsvc_guard::policy::Policy;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces), counted from state (3rd).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name; 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let policy = Policy::embedded();
    for (label, mode) in [
        (
            "selector Services, controller Endpoints/EndpointSlices",
            EndpointsMode::Controller,
        ),
        (
            "selectorless Services, hand-written Endpoints/EndpointSlices",
            EndpointsMode::HandWritten,
        ),
    ] {
        let every: usize = std::env::var("AUDIT_BENCH_MISTAKES_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        let cache = cases::cache_with_mistakes(n, 1000, mode, every);
        let policy = Arc::new(policy.clone());
        let mut cpu = Vec::new();
        let mut wall = Vec::new();
        let mut extra = Vec::new();
        let mut update = None;
        for _ in 0..5 {
            let before = status_kib("VmRSS");
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            let (started, cpu_started) = (Instant::now(), cpu_seconds());
            update = Some(audit::Audit::new().update(&cache, &policy, Vec::new(), &mut || {}));
            wall.push(started.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - cpu_started);
            extra.push(status_kib("VmHWM").saturating_sub(before));
        }
        let tally = update.map(|u| u.tally).unwrap_or_default();
        // The steady state: a computation after one Service changed.
        let mut steady = audit::Audit::new();
        steady.update(&cache, &policy, Vec::new(), &mut || {});
        let mut one = Vec::new();
        for i in 0..5 {
            let service = cases::service(i * 7, 1000, mode);
            let service = serde_json::from_value(service).expect("a Service");
            cache.apply(
                &WatchId::new(WatchedKind::Services, None),
                Entry::Object(Object::Service(service)),
                Instant::now(),
            );
            let started = Instant::now();
            let u = steady.update(&cache, &policy, Vec::new(), &mut || {});
            assert_eq!(u.judged_namespaces, 1);
            one.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        extra.sort_unstable();
        let violations: u64 = tally.violations.values().sum();
        println!(
            "{n} Services, {label}: {} objects judged, {violations} in violation, {} series; \
             everything: median {:.2} s wall, {:.2} s CPU ({:.1} µs per object), memory beyond the cache {:.1} MiB at most; \
             after one Service changed: median {:.2} ms",
            tally.judged,
            tally.series(100).len(),
            median(&mut wall),
            median(&mut cpu),
            median(&mut cpu.clone()) * 1e6 / tally.judged.max(1) as f64,
            extra.last().copied().unwrap_or(0) as f64 / 1024.0,
            median(&mut one),
        );
    }
}
