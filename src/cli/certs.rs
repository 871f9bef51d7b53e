//! `extsvc-guard certs`: a development CA and a serving certificate signed by it.
//!
//! Writes `ca.crt`, `ca.key`, `tls.crt` and `tls.key` into `--out` and prints the `caBundle`
//! a webhook configuration needs. An existing CA is reused, so the serving certificate can be
//! rotated (`--force`) without touching the caBundle; nothing is ever overwritten silently.

mod generate;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{Issuer, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::{self, PemObject};

use self::generate::{CA_COMMON_NAME, CA_VALIDITY_DAYS, LoadError, Pair, Sans, Validity};
use super::exit;

/// Default DNS names: local runs, and the in-cluster Service `extsvc-guard` in namespace
/// `extsvc-guard` under every name the API server may use for it.
const DEFAULT_DNS: &[&str] = &[
    "localhost",
    "extsvc-guard",
    "extsvc-guard.extsvc-guard",
    "extsvc-guard.extsvc-guard.svc",
    "extsvc-guard.extsvc-guard.svc.cluster.local",
];

const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Directory for ca.crt, ca.key, tls.crt and tls.key (created if missing).
    #[arg(long, value_name = "DIR", default_value = "certs")]
    out: PathBuf,
    /// DNS name of the serving certificate; repeat for several. Given names replace the
    /// defaults (localhost and the Service extsvc-guard in namespace extsvc-guard).
    /// A leading `*.` wildcard is allowed.
    #[arg(long = "dns", value_name = "NAME", value_parser = parse_dns_name, default_values = DEFAULT_DNS)]
    dns: Vec<String>,
    /// IP address of the serving certificate; repeat for several. Given addresses replace the
    /// default.
    #[arg(long = "ip", value_name = "IP", value_parser = parse_ip, default_values = ["127.0.0.1"])]
    ip: Vec<IpAddr>,
    /// Replace an existing serving certificate and key (and, with --new-ca, an existing CA).
    #[arg(long)]
    force: bool,
    /// Validity of the serving certificate, in days.
    #[arg(long, value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// Make a new CA even if DIR has one (this changes the caBundle; needs --force to
    /// replace existing CA files).
    #[arg(long)]
    new_ca: bool,
}

pub fn run(args: CertsArgs) -> u8 {
    match make(&args) {
        Ok(summary) => {
            let mut out = io::stdout().lock();
            match out.write_all(summary.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("extsvc-guard: cannot write to standard output: {e}");
                    exit::USAGE
                }
            }
        }
        Err(problems) => {
            for problem in problems {
                eprintln!("extsvc-guard: {problem}");
            }
            exit::USAGE
        }
    }
}

/// What to do with the CA.
enum CaPlan {
    /// Make a new one (none exists, or `--new-ca`).
    New,
    /// Sign with the one in DIR.
    Reuse,
}

/// Does everything and returns what to print, or the problems (each a complete sentence
/// naming the file) that stopped it. Nothing is written unless every check passed.
fn make(args: &CertsArgs) -> Result<String, Vec<String>> {
    let dir = args.out.as_path();
    let sans = Sans {
        dns: dedup(&args.dns),
        ips: dedup(&args.ip),
    };
    let path = |name: &str| dir.join(name);

    fs::create_dir_all(dir).map_err(|e| {
        vec![format!(
            "{}: cannot create the directory: {e}",
            dir.display()
        )]
    })?;

    let plan = plan(args, dir)?;

    let now = SystemTime::now();
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| vec!["the system clock is before 1970".to_string()])?
        .as_secs();
    let serving_validity = Validity::days_from(now, args.days).map_err(|e| vec![e])?;

    // Everything is made and checked in memory first; files are written at the end.
    let (new_ca, issuer, ca_pem): (Option<Pair>, Issuer<'static, KeyPair>, Vec<u8>) = match plan {
        CaPlan::New => {
            let validity = Validity::days_from(now, CA_VALIDITY_DAYS).map_err(|e| vec![e])?;
            let (pair, issuer) = generate::new_ca(validity)
                .map_err(|e| vec![format!("cannot make a CA certificate: {e}")])?;
            let pem = pair.cert_pem.clone().into_bytes();
            (Some(pair), issuer, pem)
        }
        CaPlan::Reuse => {
            let (issuer, pem) = load_ca(dir)?;
            (None, issuer, pem)
        }
    };
    let ca_der = CertificateDer::from_pem_slice(&ca_pem)
        .map_err(|e| vec![format!("{}: {}", path(CA_CRT).display(), pem_problem(&e))])?;

    let tls = generate::serving(&issuer, &sans, serving_validity)
        .map_err(|e| vec![format!("cannot make the serving certificate: {e}")])?;
    let leaf_der = CertificateDer::from_pem_slice(tls.cert_pem.as_bytes())
        .map_err(|e| vec![format!("cannot read back the serving certificate: {e}")])?;

    // Prove the chain before writing: with a reused CA this is what catches a ca.crt that
    // was not made by this command (its subject would differ from the issuer we sign with).
    if let Some(name) = generate::probe_name(&sans)
        && let Err(e) = generate::verify(&ca_der, &leaf_der, &name, now_secs)
    {
        return Err(vec![match plan {
            CaPlan::Reuse => format!(
                "{}: a serving certificate signed with {} does not verify against it ({e}); \
                 was it made by `extsvc-guard certs`? Make a new CA with --new-ca --force \
                 (and update the caBundle of the webhook configuration)",
                path(CA_CRT).display(),
                path(CA_KEY).display(),
            ),
            CaPlan::New => format!("the new serving certificate does not verify: {e}"),
        }]);
    }
    // webpki does not check a trust anchor's dates, but the API server does.
    let ca_validity = generate::validity_of(&ca_der);
    let mut warnings = Vec::new();
    if let Some(ca) = ca_validity {
        if ca.not_after <= now_secs {
            return Err(vec![format!(
                "{}: the CA expired on {}; make a new CA with --new-ca --force (and update the \
                 caBundle of the webhook configuration)",
                path(CA_CRT).display(),
                rfc3339(ca.not_after),
            )]);
        }
        if ca.not_after < serving_validity.not_after {
            warnings.push(format!(
                "warning: the CA in {} expires on {}, before the serving certificate ({}); from \
                 then on the API server rejects the serving certificate. Make a new CA with \
                 --new-ca --force before then",
                path(CA_CRT).display(),
                rfc3339(ca.not_after),
                rfc3339(serving_validity.not_after),
            ));
        }
    }

    // Write order. Each file is replaced atomically (temp file + rename), so a reader sees the
    // old or the new file, never a half-written one. The key goes before its certificate: the
    // certificate is the last file to change, so a hot-reloading server that reacts to that
    // change always finds the matching key already in place. In the short window between the
    // two renames it may see the new key with the old certificate; it treats that mismatched
    // pair as a failed reload, keeps serving the old pair, and retries on the certificate's
    // change a moment later. The CA goes first: the server never reads it.
    let mut writes: Vec<(&str, &[u8], bool)> = Vec::new();
    if let Some(ca) = &new_ca {
        writes.push((CA_KEY, ca.key_pem.as_bytes(), true));
        writes.push((CA_CRT, ca.cert_pem.as_bytes(), false));
    }
    writes.push((TLS_KEY, tls.key_pem.as_bytes(), true));
    writes.push((TLS_CRT, tls.cert_pem.as_bytes(), false));
    let mut written: Vec<String> = Vec::new();
    for (name, contents, private) in writes {
        if let Err(e) = write_atomically(dir, name, contents, private) {
            let mut problems = vec![format!("{}: cannot write: {e}", path(name).display())];
            if !written.is_empty() {
                problems.push(format!("already written: {}", written.join(", ")));
            }
            return Err(problems);
        }
        written.push(path(name).display().to_string());
    }
    // Make the renames durable; not every file system can sync a directory, so best effort.
    let _ = File::open(dir).and_then(|d| d.sync_all());

    for warning in &warnings {
        eprintln!("extsvc-guard: {warning}");
    }
    let ca = CaSummary {
        new: new_ca.is_some(),
        not_after: ca_validity.map(|v| v.not_after),
    };
    Ok(summary(args, &sans, serving_validity, ca, &ca_pem))
}

/// Decides what happens to the CA, refusing every overwrite that was not asked for.
fn plan(args: &CertsArgs, dir: &Path) -> Result<CaPlan, Vec<String>> {
    let check = |name: &str| exists(&dir.join(name));
    let (ca_crt, ca_key, tls_crt, tls_key) =
        match (check(CA_CRT), check(CA_KEY), check(TLS_CRT), check(TLS_KEY)) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
            (a, b, c, d) => {
                return Err([a, b, c, d].into_iter().filter_map(Result::err).collect());
            }
        };
    let show = |name: &str| dir.join(name).display().to_string();
    let listed = |names: &[(&str, bool)]| {
        names
            .iter()
            .filter(|(_, present)| *present)
            .map(|(name, _)| show(name))
            .collect::<Vec<_>>()
    };
    let mut problems = Vec::new();
    let plan = if args.new_ca {
        let existing = listed(&[(CA_CRT, ca_crt), (CA_KEY, ca_key)]);
        if !existing.is_empty() && !args.force {
            problems.push(format!(
                "{} already {}; --new-ca replaces the CA only together with --force (a new CA \
                 changes the caBundle: every webhook configuration that trusts the old CA must be \
                 updated)",
                existing.join(" and "),
                if existing.len() == 1 {
                    "exists"
                } else {
                    "exist"
                },
            ));
        }
        CaPlan::New
    } else {
        match (ca_crt, ca_key) {
            (true, true) => CaPlan::Reuse,
            (false, false) => CaPlan::New,
            (present, _) => {
                let (there, missing) = if present {
                    (CA_CRT, CA_KEY)
                } else {
                    (CA_KEY, CA_CRT)
                };
                problems.push(format!(
                    "{} exists but {} does not: the CA needs both its certificate and its key to \
                     sign a serving certificate that the existing caBundle trusts. Put {missing} \
                     back next to {there}, or make a new CA with --new-ca --force (and update the \
                     caBundle of the webhook configuration)",
                    show(there),
                    show(missing),
                ));
                CaPlan::New
            }
        }
    };
    let existing = listed(&[(TLS_CRT, tls_crt), (TLS_KEY, tls_key)]);
    if !existing.is_empty() && !args.force {
        problems.push(format!(
            "{} already {}; --force replaces the serving certificate and key{}",
            existing.join(" and "),
            if existing.len() == 1 {
                "exists"
            } else {
                "exist"
            },
            if args.new_ca {
                ""
            } else {
                " (an existing CA is kept, so the caBundle does not change)"
            },
        ));
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

/// Reads the CA in `dir`: the issuer to sign with, and the bytes of ca.crt.
fn load_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, Vec<u8>), Vec<String>> {
    let crt_path = dir.join(CA_CRT);
    let key_path = dir.join(CA_KEY);
    let ca_pem = fs::read(&crt_path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", crt_path.display())])?;
    let ca_der = CertificateDer::from_pem_slice(&ca_pem)
        .map_err(|e| vec![format!("{}: {}", crt_path.display(), pem_problem(&e))])?;
    let key_pem = fs::read_to_string(&key_path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", key_path.display())])?;
    let issuer = generate::load_ca(&key_pem, &ca_der).map_err(|e| match e {
        LoadError::Key(_) => vec![format!("{}: {e}", key_path.display())],
        LoadError::Mismatch => vec![format!(
            "{}: {e} in {}; put the matching pair back, or make a new CA with --new-ca --force",
            key_path.display(),
            crt_path.display(),
        )],
    })?;
    Ok((issuer, ca_pem))
}

fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::NoItemsFound => {
            "not a PEM certificate (no \"BEGIN CERTIFICATE\" block)".to_string()
        }
        e => format!("not a valid PEM certificate: {e}"),
    }
}

/// The CA as the summary shows it.
struct CaSummary {
    /// Made by this run (else reused).
    new: bool,
    /// When it expires, if its certificate could be read.
    not_after: Option<u64>,
}

/// What `certs` prints on success.
fn summary(
    args: &CertsArgs,
    sans: &Sans,
    validity: Validity,
    ca: CaSummary,
    ca_pem: &[u8],
) -> String {
    let show = |name: &str| args.out.join(name).display().to_string();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let until = ca
        .not_after
        .map(|t| format!(", valid until {}", rfc3339(t)))
        .unwrap_or_default();
    if ca.new {
        line(format!(
            "wrote {} (CA private key, mode 0600)",
            show(CA_KEY)
        ));
        line(format!(
            "wrote {} (new CA \"{CA_COMMON_NAME}\"{until})",
            show(CA_CRT)
        ));
    } else {
        line(format!(
            "reused the CA in {} and {} (\"{CA_COMMON_NAME}\"{until}): the caBundle is unchanged",
            show(CA_CRT),
            show(CA_KEY)
        ));
    }
    line(format!(
        "wrote {} (serving private key, mode 0600)",
        show(TLS_KEY)
    ));
    line(format!(
        "wrote {} (serving certificate signed by the CA)",
        show(TLS_CRT)
    ));
    line(format!("DNS names: {}", sans.dns.join(", ")));
    let ips: Vec<String> = sans.ips.iter().map(IpAddr::to_string).collect();
    line(format!("IP addresses: {}", ips.join(", ")));
    line(format!(
        "valid: {} to {} ({} days)",
        rfc3339(validity.not_before),
        rfc3339(validity.not_after),
        args.days
    ));
    line(format!("caBundle: {}", STANDARD.encode(ca_pem)));
    line(format!(
        "serve with: extsvc-guard serve --tls-cert {} --tls-key {}",
        show(TLS_CRT),
        show(TLS_KEY)
    ));
    out
}

/// Whether `path` exists (a dangling symbolic link counts: it would be replaced too).
fn exists(path: &Path) -> Result<bool, String> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!(
            "{}: cannot check whether it exists: {e}",
            path.display()
        )),
    }
}

/// Replaces `dir/name` with `contents` atomically: writes a temporary file in the same
/// directory (mode 0600 for private keys, from creation on), syncs it, and renames it over.
fn write_atomically(dir: &Path, name: &str, contents: &[u8], private: bool) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&tmp)
    };
    let result = (|| {
        let mut file = match create() {
            // Left over from an interrupted run of a process with the same id.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&tmp)?;
                create()?
            }
            other => other?,
        };
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `values` without repeats, in their first order.
fn dedup<T: PartialEq + Clone>(values: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(values.len());
    for v in values {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

/// `--dns`: a DNS-1123 subdomain (lowercase letters, digits, `-`, `.`; labels of 1 to 63
/// characters that start and end with a letter or digit; at most 253 in all), optionally
/// behind a `*.` wildcard. Names ending in a numeric label are refused: clients treat them as
/// IP addresses, which belong in `--ip`.
fn parse_dns_name(value: &str) -> Result<String, String> {
    if value.parse::<IpAddr>().is_ok() {
        return Err("this is an IP address; give it with --ip".to_string());
    }
    let name = value.strip_prefix("*.").unwrap_or(value);
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes.first() != Some(&b'-')
            && bytes.last() != Some(&b'-')
    };
    if name.is_empty() || value.len() > 253 || !name.split('.').all(label_ok) {
        return Err(
            "not a valid DNS name (RFC 1123 subdomain: lowercase letters, digits, '-' and '.', \
             labels of 1 to 63 characters starting and ending with a letter or digit, at most 253 \
             characters; a leading '*.' wildcard is allowed)"
                .to_string(),
        );
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(
            "a DNS name may not end in an all-numeric label (it reads as an IP address); give IP \
             addresses with --ip"
                .to_string(),
        );
    }
    Ok(value.to_string())
}

/// `--ip`: an IPv4 or IPv6 address.
fn parse_ip(value: &str) -> Result<IpAddr, String> {
    value.parse().map_err(|_| {
        "not an IP address (IPv4 like 127.0.0.1 or IPv6 like ::1); give DNS names with --dns"
            .to_string()
    })
}

/// `secs` since the Unix epoch as an RFC 3339 UTC timestamp, e.g. `2026-05-01T12:00:00Z`.
fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| format!("{secs} seconds after 1970"), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_follow_rfc_1123_with_an_optional_leading_wildcard() {
        for ok in [
            "localhost",
            "extsvc-guard.extsvc-guard.svc.cluster.local",
            "*.extsvc-guard.svc",
            "a1",
            "1a.example",
        ] {
            assert_eq!(parse_dns_name(ok).as_deref(), Ok(ok), "{ok}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a".repeat(63).as_str(); 5].join(".");
        for bad in [
            "bad_name!",
            "Upper.example",
            "-lead",
            "trail-",
            "a..b",
            "",
            "*",
            "*.",
            "a.*.b",
            "**.a",
            "trailing.dot.",
            long_label.as_str(),
            long_name.as_str(),
            "127.0.0.1",
            "::1",
            "300.1.1.1",
        ] {
            assert!(parse_dns_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn ip_addresses_parse_as_v4_or_v6() {
        assert!(parse_ip("127.0.0.1").is_ok());
        assert!(parse_ip("::1").is_ok());
        assert!(parse_ip("300.1.1.1").is_err());
        assert!(parse_ip("localhost").is_err());
    }

    #[test]
    fn timestamps_print_as_rfc_3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn repeated_names_are_kept_once_in_their_first_order() {
        assert_eq!(dedup(&["b", "a", "b", "c", "a"]), vec!["b", "a", "c"]);
    }
}
