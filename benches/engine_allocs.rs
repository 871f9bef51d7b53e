//! Heap allocations per answered review, for the same cases as `engine`: a counting global
//! allocator (`stats_alloc`, which keeps its `unsafe` to itself) around parse + judge + encode.
//! `cargo bench --bench engine_allocs` prints a markdown table.

mod cases;

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Reviews per case: the figures are totals divided by this, so one-time work (lazy statics)
/// does not show.
const ROUNDS: usize = 1000;

fn main() {
    let policy = cases::policy();
    println!("| case | verdict | allocations/review | bytes/review | reallocations/review |");
    println!("|---|---|---:|---:|---:|");
    for case in cases::cases() {
        let verdict = cases::verdict(&case, &policy);
        // Warm-up: anything allocated once and kept is not per-review.
        let _ = cases::review(&case.body, case.view.as_ref(), &policy, case.endpoint);
        let region = Region::new(GLOBAL);
        for _ in 0..ROUNDS {
            let answer = cases::review(
                std::hint::black_box(&case.body),
                case.view.as_ref(),
                &policy,
                case.endpoint,
            );
            std::hint::black_box(answer);
        }
        let stats = region.change();
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.1} |",
            case.name,
            verdict.as_str(),
            stats.allocations as f64 / ROUNDS as f64,
            stats.bytes_allocated as f64 / ROUNDS as f64,
            stats.reallocations as f64 / ROUNDS as f64,
        );
    }
}
