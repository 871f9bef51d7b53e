//! The serving certificate: PEM files to a rustls configuration (TLS 1.2 and 1.3, ALPN h2
//! and http/1.1).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
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

    /// A rustls configuration serving this pair, asking clients for a certificate signed by
    /// `client_ca` when one is given. Errors name the file at fault.
    pub fn server_config(
        &self,
        cert: &Path,
        key: &Path,
        client_ca: Option<&ClientCa>,
    ) -> Result<Arc<ServerConfig>, String> {
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
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS setup: {e}"))?;
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(Arc::clone(&ca.verifier)),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, private_key).map_err(|e| {
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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// `--client-ca`: only clients presenting a certificate signed by one of these CAs get past
/// the TLS handshake (kube-apiserver presents one when its AdmissionConfiguration names a
/// client certificate for this webhook).
#[derive(Clone)]
pub struct ClientCa {
    /// The PEM file as read, to notice a change.
    pub pem: Vec<u8>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCa").finish_non_exhaustive()
    }
}

impl ClientCa {
    pub fn read(path: &Path) -> Result<ClientCa, String> {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the client CA {}: {e}", path.display()))?;
        ClientCa::from_pem(pem, path)
    }

    /// Errors name `path`.
    pub fn from_pem(pem: Vec<u8>, path: &Path) -> Result<ClientCa, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| format!("{} (--client-ca) is not PEM: {e}", path.display()))?;
            roots.add(cert).map_err(|e| {
                format!(
                    "{} (--client-ca) holds a certificate that cannot be a trust anchor: {e}",
                    path.display()
                )
            })?;
        }
        if roots.is_empty() {
            return Err(format!(
                "{} (--client-ca) holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("{} (--client-ca): {e}", path.display()))?;
        Ok(ClientCa { pem, verifier })
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
            .server_config(Path::new("tls.crt"), Path::new("tls.key"), None)
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
        let e = files.server_config(crt, key, None).unwrap_err();
        assert!(e.contains("c/tls.crt holds no PEM certificate"), "{e}");

        let mut files = pair("localhost");
        files.key = b"garbage".to_vec();
        let e = files.server_config(crt, key, None).unwrap_err();
        assert!(
            e.contains("c/tls.key holds no usable PEM private key"),
            "{e}"
        );

        let mut files = pair("localhost");
        files.key = pair("other").key;
        let e = files.server_config(crt, key, None).unwrap_err();
        assert!(e.contains("cannot be served together"), "{e}");
    }

    #[test]
    fn a_client_ca_file_without_a_certificate_is_refused_naming_the_file() {
        let e = ClientCa::from_pem(b"garbage".to_vec(), Path::new("c/clients.crt")).unwrap_err();
        assert!(
            e.contains("c/clients.crt (--client-ca) holds no PEM certificate"),
            "{e}"
        );
        let ca = pair("clients-ca");
        let e = ClientCa::from_pem(ca.key.clone(), Path::new("c/clients.crt")).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        assert!(ClientCa::from_pem(ca.cert, Path::new("c/clients.crt")).is_ok());
    }
}
