//! `extsvc-guard certs` as a user sees it: the files it writes, that a TLS client trusting the
//! printed caBundle accepts the serving certificate for exactly the requested names, and that
//! it never overwrites anything it was not asked to. Every test drives the real binary.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tempfile::TempDir;

const FILES: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `extsvc-guard certs args…` in `dir`.
fn certs(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_extsvc-guard"))
        .arg("certs")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs `certs args…` and insists that it succeeds.
fn certs_ok(dir: &Path, args: &[&str]) -> Output {
    let out = certs(dir, args);
    assert_eq!(
        out.code, 0,
        "certs {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out
}

/// A temporary directory to run in, and the `certs` directory inside it (not yet created).
fn workspace() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("certs");
    (tmp, out)
}

fn snapshot(dir: &Path) -> Vec<Vec<u8>> {
    FILES
        .iter()
        .map(|f| fs::read(dir.join(f)).unwrap())
        .collect()
}

fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Verifies `dir/tls.crt` for `name` as a TLS client trusting only `ca` (a ca.crt file) would.
fn verify_with(ca: &Path, dir: &Path, name: ServerName<'_>) -> Result<(), rustls::Error> {
    install_provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let verifier = WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let leaf = CertificateDer::from_pem_file(dir.join("tls.crt")).unwrap();
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .map(|_| ())
}

fn verify(dir: &Path, name: ServerName<'_>) -> Result<(), rustls::Error> {
    verify_with(&dir.join("ca.crt"), dir, name)
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).unwrap()
}

fn ip(addr: &str) -> ServerName<'static> {
    ServerName::from(addr.parse::<IpAddr>().unwrap())
}

/// A rustls server configuration from `cert` and `key`: fails when the key is not the
/// certificate's key.
fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, rustls::Error> {
    install_provider();
    ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_file(cert).unwrap()],
            PrivateKeyDer::from_pem_file(key).unwrap(),
        )
}

fn printed_ca_bundle(stdout: &str) -> Vec<u8> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("caBundle: "))
        .unwrap_or_else(|| panic!("no caBundle line in:\n{stdout}"));
    STANDARD.decode(line).unwrap()
}

#[test]
fn certs_writes_a_ca_and_a_serving_certificate_the_ca_verifies() {
    let (tmp, out) = workspace();
    certs_ok(tmp.path(), &["--out", "certs"]);
    for f in FILES {
        assert!(out.join(f).is_file(), "{f} was not written");
    }
    for name in [
        dns("localhost"),
        ip("127.0.0.1"),
        dns("extsvc-guard"),
        dns("extsvc-guard.extsvc-guard"),
        dns("extsvc-guard.extsvc-guard.svc"),
        dns("extsvc-guard.extsvc-guard.svc.cluster.local"),
    ] {
        let shown = format!("{name:?}");
        assert_eq!(verify(&out, name), Ok(()), "{shown}");
    }
    assert!(verify(&out, dns("example.com")).is_err());
    assert!(verify(&out, ip("10.0.0.1")).is_err());
    server_config(&out.join("tls.crt"), &out.join("tls.key")).unwrap();
    // The check is real: the CA key is not the serving certificate's key.
    assert!(server_config(&out.join("tls.crt"), &out.join("ca.key")).is_err());
}

#[test]
fn certs_writes_to_a_directory_named_certs_by_default_and_creates_missing_parents() {
    let tmp = tempfile::tempdir().unwrap();
    certs_ok(tmp.path(), &[]);
    assert!(tmp.path().join("certs/tls.crt").is_file());
    certs_ok(tmp.path(), &["--out", "a/b/c"]);
    assert!(tmp.path().join("a/b/c/tls.key").is_file());
}

#[test]
fn key_files_are_readable_and_writable_by_their_owner_only() {
    let (tmp, out) = workspace();
    certs_ok(tmp.path(), &["--out", "certs"]);
    for key in ["ca.key", "tls.key"] {
        let mode = fs::metadata(out.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key} has mode {mode:o}");
    }
    let head = fs::read_to_string(out.join("tls.key")).unwrap();
    assert!(
        head.starts_with("-----BEGIN PRIVATE KEY-----"),
        "not PKCS#8: {head}"
    );
}

#[test]
fn no_temporary_files_are_left_behind() {
    let (tmp, out) = workspace();
    certs_ok(tmp.path(), &["--out", "certs"]);
    certs_ok(tmp.path(), &["--out", "certs", "--force"]);
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, FILES);
}

#[test]
fn a_second_run_without_force_exits_2_and_leaves_every_file_byte_identical() {
    let (tmp, out) = workspace();
    certs_ok(tmp.path(), &["--out", "certs"]);
    let before = snapshot(&out);
    let second = certs(tmp.path(), &["--out", "certs"]);
    assert_eq!(second.code, 2);
    assert!(second.stderr.contains("tls.crt"), "{}", second.stderr);
    assert!(second.stderr.contains("--force"), "{}", second.stderr);
    assert_eq!(snapshot(&out), before);
}

#[test]
fn force_replaces_the_serving_certificate_and_reuses_the_ca() {
    let (tmp, out) = workspace();
    certs_ok(tmp.path(), &["--out", "certs"]);
    let before = snapshot(&out);
    let old_ca = tmp.path().join("old-ca.crt");
    fs::copy(out.join("ca.crt"), &old_ca).unwrap();

    let second = certs_ok(tmp.path(), &["--out", "certs", "--force"]);
    let after = snapshot(&out);
    assert_eq!(after[0], before[0], "ca.crt changed");
    assert_eq!(after[1], before[1], "ca.key changed");
    assert_ne!(after[2], before[2], "tls.crt was not replaced");
    assert_ne!(after[3], before[3], "tls.key was not replaced");
    assert!(second.stdout.contains("reused the CA"), "{}", second.stdout);
    assert!(
        second.stdout.contains("caBundle is unchanged"),
        "{}",
        second.stdout
    );
    assert_eq!(printed_ca_bundle(&second.stdout), before[0]);
    assert_eq!(verify_with(&old_ca, &out, dns("localhost")), Ok(()));
    server_config(&out.join("tls.crt"), &out.join("tls.key")).unwrap();
}

#[test]
fn new_ca_with_force_replaces_the_ca() {
    let (tmp, out) = workspace();
    certs_ok(tmp.path(), &["--out", "certs"]);
    let old_ca = tmp.path().join("old-ca.crt");
    fs::copy(out.join("ca.crt"), &old_ca).unwrap();

    let second = certs_ok(tmp.path(), &["--out", "certs", "--new-ca", "--force"]);
    assert_ne!(
        fs::read(out.join("ca.crt")).unwrap(),
        fs::read(&old_ca).unwrap()
    );
    assert!(second.stdout.contains("new CA"), "{}", second.stdout);
    assert_eq!(verify(&out, dns("localhost")), Ok(()));
    assert!(verify_with(&old_ca, &out, dns("localhost")).is_err());
}

#[test]
fn new_ca_without_force_exits_2_and_keeps_the_existing_ca() {
    let (tmp, out) = workspace();
    certs_ok(tmp.path(), &["--out", "certs"]);
    fs::remove_file(out.join("tls.crt")).unwrap();
    fs::remove_file(out.join("tls.key")).unwrap();
    let ca = fs::read(out.join("ca.crt")).unwrap();
    let second = certs(tmp.path(), &["--out", "certs", "--new-ca"]);
    assert_eq!(second.code, 2);
    assert!(second.stderr.contains("ca.crt"), "{}", second.stderr);
    assert!(second.stderr.contains("--force"), "{}", second.stderr);
    assert_eq!(fs::read(out.join("ca.crt")).unwrap(), ca);
    assert!(!out.join("tls.crt").exists());
}

#[test]
fn the_printed_ca_bundle_decodes_to_the_bytes_of_ca_crt() {
    let (tmp, out) = workspace();
    let run = certs_ok(tmp.path(), &["--out", "certs"]);
    assert_eq!(
        printed_ca_bundle(&run.stdout),
        fs::read(out.join("ca.crt")).unwrap()
    );
    assert!(
        run.stdout.contains(
            "serve with: extsvc-guard serve --tls-cert certs/tls.crt --tls-key certs/tls.key"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn given_dns_names_and_ips_replace_the_defaults() {
    let (tmp, out) = workspace();
    let run = certs_ok(
        tmp.path(),
        &[
            "--out",
            "certs",
            "--dns",
            "webhook.example.svc",
            "--dns",
            "*.guard.example",
            "--ip",
            "10.1.2.3",
            "--ip",
            "::1",
        ],
    );
    assert_eq!(verify(&out, dns("webhook.example.svc")), Ok(()));
    assert_eq!(verify(&out, dns("any.guard.example")), Ok(()));
    assert_eq!(verify(&out, ip("10.1.2.3")), Ok(()));
    assert_eq!(verify(&out, ip("::1")), Ok(()));
    assert!(verify(&out, dns("localhost")).is_err());
    assert!(verify(&out, ip("127.0.0.1")).is_err());
    assert!(verify(&out, dns("extsvc-guard.extsvc-guard.svc")).is_err());
    assert!(
        run.stdout
            .contains("DNS names: webhook.example.svc, *.guard.example"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("IP addresses: 10.1.2.3, ::1"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_invalid_dns_name_exits_2_naming_it_and_writes_nothing() {
    let (tmp, out) = workspace();
    for bad in ["bad_name!", "Upper.Case", "x-", "10.0.0.1"] {
        let run = certs(tmp.path(), &["--out", "certs", "--dns", bad]);
        assert_eq!(run.code, 2, "{bad}");
        assert!(run.stderr.contains(bad), "{bad}: {}", run.stderr);
    }
    assert!(!out.exists());
}

#[test]
fn an_invalid_ip_exits_2_naming_it_and_writes_nothing() {
    let (tmp, out) = workspace();
    for bad in ["300.1.1.1", "localhost"] {
        let run = certs(tmp.path(), &["--out", "certs", "--ip", bad]);
        assert_eq!(run.code, 2, "{bad}");
        assert!(run.stderr.contains(bad), "{bad}: {}", run.stderr);
    }
    assert!(!out.exists());
}

#[test]
fn a_ca_certificate_without_its_key_exits_2_and_explains() {
    let (tmp, out) = workspace();
    certs_ok(tmp.path(), &["--out", "certs"]);
    fs::remove_file(out.join("ca.key")).unwrap();
    fs::remove_file(out.join("tls.crt")).unwrap();
    fs::remove_file(out.join("tls.key")).unwrap();
    let ca = fs::read(out.join("ca.crt")).unwrap();
    let run = certs(tmp.path(), &["--out", "certs"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("ca.crt exists but certs/ca.key does not"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--new-ca"), "{}", run.stderr);
    assert_eq!(fs::read(out.join("ca.crt")).unwrap(), ca);
    assert!(!out.join("tls.crt").exists());
}

#[test]
fn a_ca_key_that_is_not_the_key_of_ca_crt_exits_2_naming_both() {
    let (tmp, out) = workspace();
    certs_ok(tmp.path(), &["--out", "certs"]);
    certs_ok(tmp.path(), &["--out", "other"]);
    fs::copy(tmp.path().join("other/ca.key"), out.join("ca.key")).unwrap();
    let run = certs(tmp.path(), &["--out", "certs", "--force"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("certs/ca.key"), "{}", run.stderr);
    assert!(run.stderr.contains("certs/ca.crt"), "{}", run.stderr);
}

#[test]
fn a_ca_certificate_that_is_not_pem_exits_2_naming_the_file() {
    let (tmp, out) = workspace();
    certs_ok(tmp.path(), &["--out", "certs"]);
    let tls = fs::read(out.join("tls.crt")).unwrap();
    fs::write(out.join("ca.crt"), "not a certificate\n").unwrap();
    let run = certs(tmp.path(), &["--out", "certs", "--force"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("certs/ca.crt"), "{}", run.stderr);
    assert_eq!(fs::read(out.join("tls.crt")).unwrap(), tls);
}

#[test]
fn an_output_path_that_is_a_file_exits_2_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("plain"), "").unwrap();
    let run = certs(tmp.path(), &["--out", "plain"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("plain"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}
