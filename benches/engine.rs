//! Time to answer one captured AdmissionReview: parse + judge + encode, through the same
//! library calls the server's `/validate` and `/mutate` handlers make (`admission::parse`,
//! `admission::decide`, `Decision::to_json`), without HTTP and TLS. `cargo bench --bench engine`.
//!
//! Cases: see `cases::cases` — each fixture against no cluster, and 002 (mysql-ep) against a
//! watch cache holding only the mysql-svc it should have been named after, and one holding
//! 10 000 Services in 1 000 namespaces besides.

mod cases;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn engine(c: &mut Criterion) {
    let policy = cases::policy();
    let mut group = c.benchmark_group("review");
    for case in cases::cases() {
        eprintln!(
            "{}: {} ({} bytes in, {} bytes out)",
            case.name,
            cases::verdict(&case, &policy).as_str(),
            case.body.len(),
            cases::review(&case.body, case.view.as_ref(), &policy, case.endpoint).len()
        );
        group.throughput(Throughput::Elements(1));
        group.bench_function(&case.name, |b| {
            b.iter(|| {
                cases::review(
                    black_box(&case.body),
                    case.view.as_ref(),
                    &policy,
                    case.endpoint,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
