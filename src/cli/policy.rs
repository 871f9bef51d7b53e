//! `extsvc-guard policy default`, `extsvc-guard policy check FILE` and
//! `extsvc-guard policy match-conditions [FILE]`.

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

pub fn match_conditions(file: Option<&Path>) -> u8 {
    let (policy, source) = match file {
        Some(file) => match Policy::load(file) {
            Ok(p) => (p, file.display().to_string()),
            Err(e) => {
                eprintln!("extsvc-guard: {e}");
                return exit::USAGE;
            }
        },
        None => (Policy::embedded(), "the embedded default policy".to_owned()),
    };
    print!(
        "{}",
        crate::policy::cel::kustomize_component(&policy, &source)
    );
    exit::OK
}
