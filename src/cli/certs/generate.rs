//! The certificates themselves: a development CA, a serving certificate it signs, and a check
//! that the serving certificate really verifies against the CA before anything is written.
//!
//! rcgen is built without its `x509-parser` feature, so it cannot read a certificate back
//! (`Issuer::from_ca_cert_pem` does not exist in this build). An existing CA is therefore
//! re-created as an issuer from the same parameters [`ca_params`] wrote it with plus its key
//! ([`Issuer::new`]); [`verify`] then proves with webpki that the result chains to the `ca.crt`
//! on disk, so a CA made by another tool is refused instead of yielding a broken chain.
//! webpki does not check the validity dates of a trust anchor (Go's crypto/x509, which the API
//! server uses, does), so the CA's dates are read by the small DER walk in [`validity_of`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// The subject common name of the development CA. Changing it makes CAs written by older
/// versions unusable for reuse (they are detected and refused, not mis-signed).
pub const CA_COMMON_NAME: &str = "extsvc-guard development CA";

/// Validity of a new CA: ten years (3652 days, leap days included).
pub const CA_VALIDITY_DAYS: u32 = 3652;

/// Certificates start this long before "now", so a verifier whose clock is slightly behind
/// (the API server, a laptop) does not reject a certificate made a moment ago.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The validity window of a certificate, in whole seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

impl Validity {
    /// From `now` (backdated by a few minutes) to `now + days`.
    pub fn days_from(now: SystemTime, days: u32) -> Result<Validity, String> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the system clock is before 1970".to_string())?
            .as_secs();
        Ok(Validity {
            not_before: now.saturating_sub(BACKDATE.as_secs()),
            not_after: now.saturating_add(u64::from(days) * 86_400),
        })
    }

    fn apply(self, params: &mut CertificateParams) {
        params.not_before = (UNIX_EPOCH + Duration::from_secs(self.not_before)).into();
        params.not_after = (UNIX_EPOCH + Duration::from_secs(self.not_after)).into();
    }
}

/// The names a serving certificate is valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sans {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// A certificate and its private key, both PEM (the key PKCS#8).
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The parameters of the development CA. Used both to make a new CA and to re-create the
/// issuer of an existing one: the issuer name written into serving certificates must be
/// byte-for-byte the CA's subject name.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    // Path length 0: this CA signs serving certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A new self-signed CA with a new ECDSA P-256 key.
pub fn new_ca(validity: Validity) -> Result<(Pair, Issuer<'static, KeyPair>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    validity.apply(&mut params);
    let cert = params.self_signed(&key)?;
    let pair = Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    Ok((pair, Issuer::new(params, key)))
}

/// Why an existing CA cannot be reused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a PEM private key (PKCS#8 \"PRIVATE KEY\" expected): {0}")]
    Key(rcgen::Error),
    #[error("the key is not the private key of the CA certificate (the public keys differ)")]
    Mismatch,
}

/// The issuer of an existing CA, from its key and certificate (DER). Checks that the key is
/// the certificate's key; whether the certificate was made by us is checked by [`verify`].
pub fn load_ca(key_pem: &str, ca_der: &[u8]) -> Result<Issuer<'static, KeyPair>, LoadError> {
    let key = KeyPair::from_pem(key_pem).map_err(LoadError::Key)?;
    let spki = key.subject_public_key_info();
    if spki.is_empty() || !ca_der.windows(spki.len()).any(|w| w == spki.as_slice()) {
        return Err(LoadError::Mismatch);
    }
    Ok(Issuer::new(ca_params(), key))
}

/// A new serving certificate with a new ECDSA P-256 key, signed by `issuer`.
pub fn serving(
    issuer: &Issuer<'_, KeyPair>,
    sans: &Sans,
    validity: Validity,
) -> Result<Pair, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // X.509 bounds a common name to 64 characters; the SANs are what clients check anyway.
    let cn = match sans.dns.first() {
        Some(name) if name.len() <= 64 => name.as_str(),
        _ => "extsvc-guard",
    };
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.subject_alt_names = sans
        .dns
        .iter()
        .map(|name| Ok(SanType::DnsName(name.clone().try_into()?)))
        .chain(sans.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity.apply(&mut params);
    let cert = params.signed_by(&key, issuer)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A name of `sans` a TLS client could ask for, to verify the certificate with.
pub fn probe_name(sans: &Sans) -> Option<ServerName<'static>> {
    let from_dns = sans.dns.iter().find_map(|name| {
        // A wildcard covers exactly one label: `*.svc` is checked as `probe.svc`.
        let concrete = match name.strip_prefix("*.") {
            Some(rest) => format!("probe.{rest}"),
            None => name.clone(),
        };
        ServerName::try_from(concrete).ok()
    });
    from_dns.or_else(|| sans.ips.first().map(|ip| ServerName::from(*ip)))
}

/// Verifies `leaf` (DER) for `name` against `ca` (DER) as a TLS client would, at time `at`.
pub fn verify(
    ca: &CertificateDer<'_>,
    leaf: &CertificateDer<'_>,
    name: &ServerName<'_>,
    at: u64,
) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone().into_owned())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    verifier.verify_server_cert(
        leaf,
        &[],
        name,
        &[],
        UnixTime::since_unix_epoch(Duration::from_secs(at)),
    )?;
    Ok(())
}

/// The validity of a certificate (DER), or `None` when it cannot be read. A minimal walk of
/// RFC 5280 `Certificate`: only the tags needed to reach `tbsCertificate.validity`.
pub fn validity_of(der: &[u8]) -> Option<Validity> {
    let (cert, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1; // [0] EXPLICIT version
    }
    let rest = der_element(tbs, 0x02)?.1; // serialNumber
    let rest = der_element(rest, 0x30)?.1; // signature
    let rest = der_element(rest, 0x30)?.1; // issuer
    let (validity, _) = der_element(rest, 0x30)?;
    let (not_before, rest) = der_time(validity)?;
    let (not_after, _) = der_time(rest)?;
    Some(Validity {
        not_before,
        not_after,
    })
}

/// The content of the DER element at the start of `input` if its tag is `tag`, and what
/// follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as seconds since the
/// Unix epoch, and what follows it.
fn der_time(input: &[u8]) -> Option<(u64, &[u8])> {
    let (text, rest, year) = match input.first()? {
        0x17 => {
            let (t, rest) = der_element(input, 0x17)?;
            let yy = digits(t.get(0..2)?)?;
            // RFC 5280: UTCTime years 50-99 are 19xx, 00-49 are 20xx.
            let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
            (t.get(2..)?, rest, year)
        }
        0x18 => {
            let (t, rest) = der_element(input, 0x18)?;
            (t.get(4..)?, rest, digits(t.get(0..4)?)?)
        }
        _ => return None,
    };
    if text.len() != 11 || text.last() != Some(&b'Z') || year < 1970 {
        return None;
    }
    let field = |i: usize| digits(text.get(i..i + 2)?);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let at = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        // A leap second (60) is read as the last second of its minute.
        i8::try_from(second.min(59)).ok()?,
        0,
    )
    .ok()?
    .to_zoned(jiff::tz::TimeZone::UTC)
    .ok()?;
    Some((u64::try_from(at.timestamp().as_second()).ok()?, rest))
}

fn digits(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans() -> Sans {
        Sans {
            dns: vec!["localhost".into(), "*.example.svc".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        }
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn a_reloaded_ca_signs_certificates_the_original_ca_certificate_verifies() {
        let validity = Validity::days_from(SystemTime::now(), 30).unwrap();
        let (ca, _) = new_ca(validity).unwrap();
        let issuer = load_ca(&ca.key_pem, &der(&ca.cert_pem)).unwrap();
        let leaf = serving(&issuer, &sans(), validity).unwrap();
        let now = validity.not_before + 600;
        for name in ["localhost", "a.example.svc"] {
            let name = ServerName::try_from(name).unwrap();
            verify(&der(&ca.cert_pem), &der(&leaf.cert_pem), &name, now).unwrap();
        }
        let other = ServerName::try_from("example.com").unwrap();
        assert!(verify(&der(&ca.cert_pem), &der(&leaf.cert_pem), &other, now).is_err());
    }

    #[test]
    fn the_validity_written_is_the_validity_read_back() {
        // 2049 is written as UTCTime, 2050 on as GeneralizedTime.
        for (not_before, not_after) in [
            (1_700_000_000, 1_700_086_400),
            (2_524_607_999, 2_524_608_000),
        ] {
            let validity = Validity {
                not_before,
                not_after,
            };
            let (ca, _) = new_ca(validity).unwrap();
            assert_eq!(validity_of(&der(&ca.cert_pem)), Some(validity));
        }
        assert_eq!(validity_of(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(validity_of(b""), None);
    }

    #[test]
    fn a_key_of_another_ca_is_refused() {
        let validity = Validity::days_from(SystemTime::now(), 30).unwrap();
        let (ca, _) = new_ca(validity).unwrap();
        let (other, _) = new_ca(validity).unwrap();
        assert!(matches!(
            load_ca(&other.key_pem, &der(&ca.cert_pem)),
            Err(LoadError::Mismatch)
        ));
    }

    #[test]
    fn a_wildcard_is_probed_with_a_concrete_name() {
        let sans = Sans {
            dns: vec!["*.example.svc".into()],
            ips: vec![],
        };
        assert_eq!(
            probe_name(&sans),
            Some(ServerName::try_from("probe.example.svc").unwrap())
        );
    }
}
