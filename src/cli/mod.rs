//! The command line: `serve` (the admission webhook), `certs` (development certificates),
//! `check` (manifests in CI) and `policy` (print or validate a policy).

mod certs;
mod check;
mod policy;
mod scan;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes shared by every command.
pub mod exit {
    /// Nothing denied.
    pub const OK: u8 = 0;
    /// Something denied (or warned, with `--fail-on warn`).
    pub const DENIED: u8 = 1;
    /// Usage or input errors.
    pub const USAGE: u8 = 2;
}

#[derive(Debug, Parser)]
#[command(
    name = "extsvc-guard",
    version,
    about = "Guard for Kubernetes Services that point outside the cluster",
    long_about = "Judges Services, Endpoints and EndpointSlices against rules for the mistakes that silently break \
                  external services (orphaned Endpoints, port-name mismatches, IPs in externalName, headless port \
                  remaps, metadata-server targets …) and explains every finding with its fix."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the validating and mutating admission webhook over HTTPS.
    Serve(Box<serve::ServeArgs>),
    /// Make a development CA and a serving certificate signed by it.
    Certs(certs::CertsArgs),
    /// Judge the live cluster once: what would be denied today.
    ///
    /// Exit code: 0 nothing denied, 1 something denied, 2 usage or cluster errors.
    Scan(scan::ScanArgs),
    /// Check manifest files, directories or stdin (`-`) as one manifest set.
    ///
    /// Exit code: 0 nothing denied, 1 something denied, 2 usage or input errors.
    Check(CheckArgs),
    /// Print the default policy, or validate a policy file.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Policy file (YAML); the embedded default policy when absent.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Lowest action that makes the exit code 1.
    #[arg(long, value_enum, default_value_t = FailOn::Deny, value_name = "ACTION")]
    fail_on: FailOn,
    /// Colour in text output: auto (only on a terminal, not with NO_COLOR), always, never.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
    /// Files, directories (searched for .yaml, .yml, .json) or `-` for stdin.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FailOn {
    Deny,
    Warn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print the embedded default policy as commented YAML, to start your own from.
    Default,
    /// Validate a policy file: exit 0 when valid, 2 with file, line and field when not.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print, as a kustomize Component for both webhook configurations of deploy/, the
    /// matchConditions that call the webhooks only for writes the policy may deny, warn
    /// about or patch (and never for its exemptSubjects), and the mutating webhook's rules
    /// (only the kinds the policy may patch).
    MatchConditions {
        /// Policy file; the embedded default policy when absent.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let code = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Certs(args) => certs::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Check(args) => check::run(args),
        Command::Policy(PolicyCommand::Default) => policy::print_default(),
        Command::Policy(PolicyCommand::Check { file }) => policy::check(&file),
        Command::Policy(PolicyCommand::MatchConditions { file }) => {
            policy::match_conditions(file.as_deref())
        }
    };
    ExitCode::from(code)
}
