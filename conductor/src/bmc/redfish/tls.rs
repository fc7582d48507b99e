//! TLS client configuration for `redfish_verify_ca`.
//!
//! BMCs commonly present a self-signed certificate that also says `CA:TRUE`. webpki
//! refuses such a certificate as a server's own (a CA is not an end entity), so giving
//! that very certificate as the CA file would never work with a plain root store. The
//! verifier here therefore accepts a server certificate that is byte-for-byte one of
//! the certificates in the operator's file (the operator pinned it deliberately), and
//! otherwise verifies the chain against those certificates as roots. Either way the
//! server must prove it holds the certificate's key (the handshake signature is checked).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::settings::VerifyCa;

/// Where Debian-family systems keep the system CA bundle.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why the TLS configuration for a BMC could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RedfishTlsError {
    #[error("cannot read the CA file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no PEM certificate in {}", path.display())]
    NoCertificates { path: PathBuf },
    #[error("cannot build the TLS client configuration")]
    Config(#[source] rustls::Error),
    #[error("cannot build a certificate verifier from {}", path.display())]
    Verifier {
        path: PathBuf,
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn pem_file_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RedfishTlsError> {
    let pem =
        fs::read(path).map_err(|source| RedfishTlsError::Read { path: path.to_owned(), source })?;
    rustls_pemfile::certs(&mut io::BufReader::new(pem.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| RedfishTlsError::Read { path: path.to_owned(), source })
}

/// The certificates of a file, or of every `*.pem`/`*.crt` file of a directory.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RedfishTlsError> {
    let mut certs = Vec::new();
    if path.is_dir() {
        let entries = fs::read_dir(path)
            .map_err(|source| RedfishTlsError::Read { path: path.to_owned(), source })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file() && p.extension().is_some_and(|e| e == "pem" || e == "crt" || e == "cer")
            })
            .collect();
        files.sort();
        for file in files {
            certs.extend(pem_file_certs(&file)?);
        }
    } else {
        certs = pem_file_certs(path)?;
    }
    if certs.is_empty() {
        return Err(RedfishTlsError::NoCertificates { path: path.to_owned() });
    }
    Ok(certs)
}

/// The client configuration `verify_ca` asks for.
pub fn client_config(verify_ca: &VerifyCa) -> Result<ClientConfig, RedfishTlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(RedfishTlsError::Config)?;
    let config = match verify_ca {
        VerifyCa::System => {
            let mut roots = RootCertStore::empty();
            // No bundle (a minimal container) leaves the store empty: HTTPS then fails
            // verification rather than trusting anything.
            if let Ok(certs) = pem_file_certs(Path::new(SYSTEM_CA_BUNDLE)) {
                roots.add_parsable_certificates(certs);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        VerifyCa::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider: provider() }))
            .with_no_client_auth(),
        VerifyCa::Path(path) => {
            let certs = load_certs(path)?;
            let mut roots = RootCertStore::empty();
            // A pinned certificate webpki cannot use as a root still pins.
            roots.add_parsable_certificates(certs.iter().cloned());
            let webpki = if roots.is_empty() {
                None
            } else {
                Some(
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|source| RedfishTlsError::Verifier {
                            path: path.clone(),
                            source,
                        })?,
                )
            };
            let verifier = PinnedOrChained { pinned: certs, webpki, provider: provider() };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

fn verify_tls12(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// `redfish_verify_ca = false`: any certificate, but the server must hold its key.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `redfish_verify_ca = <path>`: the server's certificate is one of the file's
/// certificates exactly, or chains to one of them.
#[derive(Debug)]
struct PinnedOrChained {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedOrChained {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pinned.iter().any(|pin| pin.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty.pem");
        fs::write(&file, "not a certificate\n").unwrap();
        let err = client_config(&VerifyCa::Path(file.clone())).unwrap_err();
        assert!(matches!(err, RedfishTlsError::NoCertificates { ref path } if *path == file));
        let err = client_config(&VerifyCa::Path(dir.path().join("missing.pem"))).unwrap_err();
        assert!(matches!(err, RedfishTlsError::Read { .. }), "{err:?}");
        // A directory with no certificate files.
        let err = client_config(&VerifyCa::Path(dir.path().to_owned())).unwrap_err();
        assert!(matches!(err, RedfishTlsError::NoCertificates { .. }), "{err:?}");
    }

    #[test]
    fn system_and_insecure_configs_build() {
        client_config(&VerifyCa::System).unwrap();
        client_config(&VerifyCa::Insecure).unwrap();
    }
}
