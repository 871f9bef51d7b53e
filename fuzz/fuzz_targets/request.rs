//! The request path: body bytes → `admission::parse` → `admission::decide` (validating and
//! mutating, under the embedded policy, a required-metadata one, and that one with the shape
//! metadata on) → `Decision::to_json`, with every answer checked by the same oracle the
//! property tests use (tests/offline/hostile/oracle.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // each target uses its own part of the oracle
#[path = "../../tests/offline/hostile/oracle.rs"]
mod oracle;

fuzz_target!(|body: &[u8]| {
    oracle::check_body(body);
});
