//! The manifest loader: bytes (as UTF-8, lossily, as files are read) → `ManifestSet`, read
//! both as YAML (`fuzz.yaml`) and as JSON (`fuzz.json`); every object loaded is judged and
//! its findings located, and every error must name the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // each target uses its own part of the oracle
#[path = "../../tests/offline/hostile/oracle.rs"]
mod oracle;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes).into_owned();
    oracle::check_manifest("fuzz.yaml", text.clone());
    oracle::check_manifest("fuzz.json", text);
});
