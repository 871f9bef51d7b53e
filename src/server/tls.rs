//! The serving certificate: PEM files to a rustls configuration (TLS 1.2 and 1.3, ALPN h2
//! and http/1.1).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM contents of a certificate chain and its key, as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl CertificateFiles {
    pub fn read(cert: &Path, key: &Path) -> Result<CertificateFiles, String> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path)
                .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
        };
        Ok(CertificateFiles {
            cert: read(cert, "certificate")?,
            key: read(key, "private key")?,
        })
    }

    /// A rustls configuration serving this pair. Errors name the file at fault.
    pub fn server_config(&self, cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{} is not a PEM certificate: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                cert.display()
            ));
        }
        let private_key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| format!("{} holds no usable PEM private key: {e}", key.display()))?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| format!("TLS setup: {e}"))?
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
                .map_err(|e| {
                    format!(
                        "the certificate {} and the key {} cannot be served together: {e}",
                        cert.display(),
                        key.display()
                    )
                })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> CertificateFiles {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        CertificateFiles {
            cert: c.cert.pem().into_bytes(),
            key: c.signing_key.serialize_pem().into_bytes(),
        }
    }

    #[test]
    fn a_matching_pair_is_served_with_h2_and_http1_offered() {
        let config = pair("localhost")
            .server_config(Path::new("tls.crt"), Path::new("tls.key"))
            .unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn broken_files_are_refused_naming_the_file() {
        let (crt, key) = (Path::new("c/tls.crt"), Path::new("c/tls.key"));
        let mut files = pair("localhost");
        files.cert = b"garbage".to_vec();
        let e = files.server_config(crt, key).unwrap_err();
        assert!(e.contains("c/tls.crt holds no PEM certificate"), "{e}");

        let mut files = pair("localhost");
        files.key = b"garbage".to_vec();
        let e = files.server_config(crt, key).unwrap_err();
        assert!(
            e.contains("c/tls.key holds no usable PEM private key"),
            "{e}"
        );

        let mut files = pair("localhost");
        files.key = pair("other").key;
        let e = files.server_config(crt, key).unwrap_err();
        assert!(e.contains("cannot be served together"), "{e}");
    }
}
