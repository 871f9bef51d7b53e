#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    extsvc_guard::cli::main()
}
