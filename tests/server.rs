//! `extsvc-guard serve` as the real binary on loopback over real TLS, in one test binary:
//! its answers (HTTP/1.1 and HTTP/2), its connection limits, its drills under load, and the
//! cluster faults only the fake API server can show on demand (the fake itself is tested
//! here too). What needs a real kube-apiserver is in tests/apiserver.rs.

mod support;

#[path = "support/fake_api.rs"]
mod fake_api;

mod server {
    mod cluster;
    mod connections;
    mod drills;
    mod fake_api;
    mod serve;
}
