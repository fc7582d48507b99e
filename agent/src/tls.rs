//! TLS for both directions: the agent's self-signed server certificate (auto-TLS) and
//! the client configuration used to reach the conductor.
//!
//! Auto-TLS follows ironic-python-agent: at start-up the agent makes a fresh key and a
//! self-signed certificate for the address it advertises, serves its API over HTTPS with
//! it, and hands the PEM to Ironic in the heartbeat (`agent_verify_ca`). Ironic then
//! verifies the agent against exactly that certificate, including the IP address in the
//! subjectAltName, which is why the SAN must be present and is marked critical (the
//! subject carries only a hostname).
//!
//! Only the ring provider is used, so the crypto backend is fixed at build time rather
//! than depending on a process-wide default.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// Where the ramdisk's own CA bundle lives (the ramdisk's file, not the host's).
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Ironic's clock may be behind the agent's: the certificate is valid from an hour ago.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);
/// IPA's auto-TLS certificates last 30 days; an agent never lives that long.
const VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// OID of the subjectAltName extension (2.5.29.17).
const SUBJECT_ALT_NAME_OID: &[u64] = &[2, 5, 29, 17];

/// Why a TLS key, certificate or configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the system clock is before 1970")]
    ClockBeforeEpoch,
    #[error("cannot generate the agent's P-384 key")]
    KeyGeneration(#[source] rcgen::Error),
    #[error("cannot build the agent's self-signed certificate")]
    CertificateGeneration(#[source] rcgen::Error),
    #[error("cannot build the TLS server configuration")]
    ServerConfig(#[source] rustls::Error),
    #[error("cannot build the TLS client configuration")]
    ClientConfig(#[source] rustls::Error),
    #[error("cannot read CA certificates from {}", path.display())]
    ReadCaFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no PEM certificate in {}", path.display())]
    NoCaCertificates { path: PathBuf },
    #[error("unusable CA certificate in {}", path.display())]
    BadCaCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The agent's auto-TLS identity: a self-signed certificate and its private key.
#[derive(Clone)]
pub struct AgentCertificate {
    /// The certificate, PEM; sent to Ironic as `agent_verify_ca`.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    /// PKCS#8 DER of the private key.
    key_der: Vec<u8>,
}

/// Keeps the private key out of logs.
impl std::fmt::Debug for AgentCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCertificate")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Makes a fresh EC P-384 key and a self-signed certificate (ECDSA with SHA-384) for
/// `ip`, with subject CN `hostname`, a critical subjectAltName holding `ip`, no CA
/// rights, valid from an hour ago for 30 days.
pub fn generate_self_signed(ip: IpAddr, hostname: &str) -> Result<AgentCertificate, TlsError> {
    let since_epoch =
        SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| TlsError::ClockBeforeEpoch)?;
    generate_at(ip, hostname, since_epoch)
}

fn generate_at(
    ip: IpAddr,
    hostname: &str,
    since_epoch: Duration,
) -> Result<AgentCertificate, TlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .map_err(TlsError::KeyGeneration)?;

    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, hostname);
    params.distinguished_name = name;
    params.is_ca = rcgen::IsCa::NoCa;
    // rcgen writes its own SAN extension as non-critical, so the list stays empty and the
    // SAN goes in as a custom extension that can carry the critical flag.
    params.subject_alt_names = Vec::new();
    let mut san =
        rcgen::CustomExtension::from_oid_content(SUBJECT_ALT_NAME_OID, general_names_ip(ip));
    san.set_criticality(true);
    params.custom_extensions = vec![san];
    // rcgen takes `time` instants without re-exporting the crate; offsetting its epoch
    // instant by a std Duration avoids a direct dependency on `time`.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch.saturating_sub(CLOCK_SKEW_ALLOWANCE);
    params.not_after = epoch + since_epoch + VALIDITY;

    let cert = params.self_signed(&key).map_err(TlsError::CertificateGeneration)?;
    Ok(AgentCertificate {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
    })
}

/// DER of `GeneralNames ::= SEQUENCE OF GeneralName` holding one
/// `iPAddress [7] IMPLICIT OCTET STRING` (4 or 16 bytes, so short-form lengths suffice).
fn general_names_ip(ip: IpAddr) -> Vec<u8> {
    let octets: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let ip_len = octets.len() as u8;
    let mut der = vec![0x30, ip_len + 2, 0x87, ip_len];
    der.extend(octets);
    der
}

impl AgentCertificate {
    /// The certificate in DER form.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Server configuration for the agent API: this certificate, no client
    /// authentication, TLS 1.2 and 1.3.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(TlsError::ServerConfig)?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .map_err(TlsError::ServerConfig)?;
        Ok(Arc::new(config))
    }
}

/// Client configuration for HTTPS calls to the conductor, looking for the ramdisk's CA
/// bundle at [`DEFAULT_CA_BUNDLE`]. See [`client_config_with_bundle`].
pub fn client_config(
    ca_file: Option<&Path>,
    insecure: bool,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    client_config_with_bundle(ca_file, insecure, Path::new(DEFAULT_CA_BUNDLE))
}

/// Client configuration for HTTPS calls to the conductor.
///
/// - `insecure` (`ipa-insecure`): any certificate is accepted, but the handshake
///   signatures are still checked; this wins over `ca_file`, as in IPA.
/// - `ca_file` (`ipa-ca-file`): the server must chain to one of its PEM certificates.
/// - neither: the CA bundle at `bundle`, or `None` when the ramdisk has no bundle (the
///   caller then has no way to verify HTTPS and should only use plain HTTP).
pub fn client_config_with_bundle(
    ca_file: Option<&Path>,
    insecure: bool,
    bundle: &Path,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(TlsError::ClientConfig)?;
    if insecure {
        let verifier = AcceptAnyCertificate { provider: provider() };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        return Ok(Some(Arc::new(config)));
    }
    let roots = match ca_file {
        Some(path) => strict_roots(path)?,
        None => match fs::read(bundle) {
            Ok(pem) => lenient_roots(bundle, &pem)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TlsError::ReadCaFile { path: bundle.to_owned(), source });
            }
        },
    };
    Ok(Some(Arc::new(builder.with_root_certificates(roots).with_no_client_auth())))
}

fn pem_certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut io::BufReader::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ReadCaFile { path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCaCertificates { path: path.to_owned() });
    }
    Ok(certs)
}

/// An operator-supplied CA file: every certificate in it must be usable, since a
/// silently dropped one would surface later as a confusing verification failure.
fn strict_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem =
        fs::read(path).map_err(|source| TlsError::ReadCaFile { path: path.to_owned(), source })?;
    let mut roots = RootCertStore::empty();
    for cert in pem_certificates(path, &pem)? {
        roots
            .add(cert)
            .map_err(|source| TlsError::BadCaCertificate { path: path.to_owned(), source })?;
    }
    Ok(roots)
}

/// A distribution bundle: odd certificates that webpki cannot use are skipped, as
/// long as some remain.
fn lenient_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _skipped) = roots.add_parsable_certificates(pem_certificates(path, pem)?);
    if added == 0 {
        return Err(TlsError::NoCaCertificates { path: path.to_owned() });
    }
    Ok(roots)
}

/// `ipa-insecure`: trusts whatever certificate the server shows, but still requires
/// the server to prove it holds that certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use x509_parser::prelude::*;

    const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
    const OID_SECP384R1: &str = "1.3.132.0.34";
    const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

    fn now_secs() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    #[test]
    fn certificate_has_the_shape_ironic_expects() {
        for ip in [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), "fd00::a".parse().unwrap()] {
            let before = now_secs();
            let cert = generate_self_signed(ip, "agent-host").unwrap();
            let after = now_secs();
            assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));

            let (_, pem) = parse_x509_pem(cert.cert_pem.as_bytes()).unwrap();
            assert_eq!(pem.label, "CERTIFICATE");
            let x509 = pem.parse_x509().unwrap();
            assert_eq!(pem.contents, cert.cert_der().as_ref());

            let spki = x509.public_key();
            assert_eq!(spki.algorithm.algorithm.to_id_string(), OID_EC_PUBLIC_KEY);
            let curve = spki.algorithm.parameters.as_ref().unwrap().as_oid().unwrap();
            assert_eq!(curve.to_id_string(), OID_SECP384R1);
            assert_eq!(x509.signature_algorithm.algorithm.to_id_string(), OID_ECDSA_SHA384);

            let cn: Vec<&str> =
                x509.subject().iter_common_name().map(|a| a.as_str().unwrap()).collect();
            assert_eq!(cn, ["agent-host"]);
            assert_eq!(x509.subject(), x509.issuer());

            let san = x509.subject_alternative_name().unwrap().unwrap();
            assert!(san.critical, "SAN must be critical");
            let want: Vec<u8> = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            assert_eq!(san.value.general_names, [GeneralName::IPAddress(&want)]);

            match x509.basic_constraints().unwrap() {
                None => {}
                Some(bc) => assert!(!bc.value.ca, "must not be a CA"),
            }

            let validity = x509.validity();
            let nb = validity.not_before.timestamp();
            let na = validity.not_after.timestamp();
            assert!((before - 3600..=after - 3600).contains(&nb), "not_before {nb}");
            let month = 30 * 24 * 3600;
            assert!((before + month..=after + month).contains(&na), "not_after {na}");
        }
    }

    #[test]
    fn each_call_makes_a_new_key() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let a = generate_self_signed(ip, "h").unwrap();
        let b = generate_self_signed(ip, "h").unwrap();
        assert_ne!(a.key_pem, b.key_pem);
        assert!(!format!("{a:?}").contains(&a.key_pem));
    }

    /// Serves one TLS connection on 127.0.0.1 that answers "pong" to "ping", and
    /// returns what the client got (or the handshake error).
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: IpAddr,
    ) -> Result<Vec<u8>, io::Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let mut buf = [0u8; 4];
                if tls.read_exact(&mut buf).await.is_ok() && &buf == b"ping" {
                    let _ = tls.write_all(b"pong").await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        let connector = tokio_rustls::TlsConnector::from(client);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let result = async {
            let mut tls = connector.connect(ServerName::from(name), tcp).await?;
            tls.write_all(b"ping").await?;
            let mut reply = Vec::new();
            tls.read_to_end(&mut reply).await?;
            Ok(reply)
        }
        .await;
        server_task.await.unwrap();
        result
    }

    fn trusting(cert: &AgentCertificate) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(cert.cert_der().clone()).unwrap();
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    #[tokio::test]
    async fn client_trusting_the_cert_verifies_the_ip_san() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let cert = generate_self_signed(ip, "agent").unwrap();
        let server = cert.server_config().unwrap();

        let ok = handshake(server.clone(), trusting(&cert), ip).await.unwrap();
        assert_eq!(ok, b"pong");

        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let err = handshake(server, trusting(&cert), other).await.unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }

    #[tokio::test]
    async fn server_speaks_tls12_and_tls13() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let cert = generate_self_signed(ip, "agent").unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.cert_der().clone()).unwrap();
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let client = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            let reply = handshake(cert.server_config().unwrap(), Arc::new(client), ip).await;
            assert_eq!(reply.unwrap(), b"pong", "{version:?}");
        }
    }

    #[tokio::test]
    async fn client_config_trusts_the_ca_file_or_anything_when_insecure() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let cert = generate_self_signed(ip, "agent").unwrap();
        let stranger = generate_self_signed(ip, "stranger").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        fs::write(&ca, &cert.cert_pem).unwrap();
        let no_bundle = dir.path().join("no-bundle.crt");

        let with_ca = client_config_with_bundle(Some(&ca), false, &no_bundle).unwrap().unwrap();
        let reply = handshake(cert.server_config().unwrap(), with_ca.clone(), ip).await;
        assert_eq!(reply.unwrap(), b"pong");
        let refused = handshake(stranger.server_config().unwrap(), with_ca, ip).await;
        assert!(refused.is_err());

        let insecure = client_config_with_bundle(Some(&ca), true, &no_bundle).unwrap().unwrap();
        let reply = handshake(stranger.server_config().unwrap(), insecure.clone(), ip).await;
        assert_eq!(reply.unwrap(), b"pong");
        // Even when insecure, the name is not what makes it pass or fail.
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let reply = handshake(stranger.server_config().unwrap(), insecure, v6).await;
        assert_eq!(reply.unwrap(), b"pong");
    }

    #[tokio::test]
    async fn client_config_falls_back_to_the_bundle() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let cert = generate_self_signed(ip, "agent").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("ca-certificates.crt");

        assert!(client_config_with_bundle(None, false, &bundle).unwrap().is_none());

        fs::write(&bundle, format!("# comment\n{}", cert.cert_pem)).unwrap();
        let config = client_config_with_bundle(None, false, &bundle).unwrap().unwrap();
        let reply = handshake(cert.server_config().unwrap(), config, ip).await;
        assert_eq!(reply.unwrap(), b"pong");
    }

    #[test]
    fn bad_ca_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let bundle = dir.path().join("bundle.crt");
        let err = client_config_with_bundle(Some(&missing), false, &bundle).unwrap_err();
        assert!(matches!(err, TlsError::ReadCaFile { ref path, .. } if *path == missing));

        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config_with_bundle(Some(&empty), false, &bundle).unwrap_err();
        assert!(matches!(err, TlsError::NoCaCertificates { ref path } if *path == empty));

        let garbage = dir.path().join("garbage.pem");
        fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap();
        let err = client_config_with_bundle(Some(&garbage), false, &bundle).unwrap_err();
        assert!(matches!(err, TlsError::BadCaCertificate { .. }), "{err:?}");

        fs::write(&bundle, "junk").unwrap();
        let err = client_config_with_bundle(None, false, &bundle).unwrap_err();
        assert!(matches!(err, TlsError::NoCaCertificates { .. }), "{err:?}");
    }

    #[test]
    fn general_names_encoding() {
        assert_eq!(
            general_names_ip(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
            [0x30, 6, 0x87, 4, 10, 1, 2, 3]
        );
        let v6 = general_names_ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(&v6[..4], [0x30, 18, 0x87, 16]);
        assert_eq!(v6.len(), 20);
    }
}
