//! The policy parser: bytes (as UTF-8, lossily) → `Policy::from_yaml(text, "fuzz.yaml")`;
//! an error must name the file and say what is wrong.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // each target uses its own part of the oracle
#[path = "../../tests/offline/hostile/oracle.rs"]
mod oracle;

fuzz_target!(|bytes: &[u8]| {
    oracle::check_policy(&String::from_utf8_lossy(bytes));
});
