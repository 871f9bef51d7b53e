#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    extsvc_guard::cli::main()
}

// jemalloc instead of glibc's malloc: a review allocates many small strings and maps that
// are freed on another worker thread, and the watch cache is long-lived; the difference in
// throughput and resident memory is measured in docs/performance.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
