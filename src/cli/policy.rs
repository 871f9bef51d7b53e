//! `extsvc-guard policy default` and `extsvc-guard policy check FILE`.

use std::io::Write;
use std::path::Path;

use crate::cli::exit;
use crate::policy::{DEFAULT_POLICY_YAML, Policy};

pub fn print_default() -> u8 {
    let mut out = std::io::stdout().lock();
    match out.write_all(DEFAULT_POLICY_YAML.as_bytes()) {
        Ok(()) => exit::OK,
        Err(_) => exit::USAGE,
    }
}

pub fn check(file: &Path) -> u8 {
    match Policy::load(file) {
        Ok(_) => {
            println!("{}: valid policy", file.display());
            exit::OK
        }
        Err(e) => {
            eprintln!("extsvc-guard: {e}");
            exit::USAGE
        }
    }
}
