//! TLS settings of checks (`ca_file`, `client_cert` + `client_key`, `insecure_skip_verify`),
//! turned into rustls client configs when the config is loaded, so a certificate that cannot be
//! read, or a key that does not fit its certificate, is a config error with the file's name,
//! not a failed check.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::access::pem_error;

/// ALPN protocols an HTTPS check offers: HTTP/2 when the server supports it.
pub const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How a check's TLS client is set up. Services with the same options share one client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// Trust only the CAs in this PEM file instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Present this certificate chain and key (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Accept any certificate (the chain is still read for its expiry).
    pub insecure_skip_verify: bool,
    /// Offer HTTP/2 by ALPN (HTTPS checks); `tcp://` checks offer nothing.
    pub alpn_http: bool,
}

/// A ready TLS client for checks.
#[derive(Debug)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub insecure_skip_verify: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client for `options`. Errors name the file and the problem, never key material.
pub fn build(options: &TlsOptions) -> Result<TlsClient, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if options.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        let roots = match &options.ca_file {
            Some(path) => ca_roots(path)?,
            None => system_roots(),
        };
        builder.with_root_certificates(roots)
    };
    let mut config = match &options.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client_cert {}: {}", cert.display(), pem_error(&e)))?;
            if chain.is_empty() {
                return Err(format!(
                    "client_cert {}: no certificate found",
                    cert.display()
                ));
            }
            let private = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("client_key {}: {}", key.display(), pem_error(&e)))?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                format!(
                    "client_key {} does not fit client_cert {}: {e}",
                    key.display(),
                    cert.display()
                )
            })?
        }
    };
    if options.alpn_http {
        config.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
    }
    Ok(TlsClient {
        config: Arc::new(config),
        insecure_skip_verify: options.insecure_skip_verify,
    })
}

fn ca_roots(path: &PathBuf) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("ca_file {}: {}", path.display(), pem_error(&e)))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "ca_file {}: no usable CA certificate found (expected PEM)",
            path.display()
        ));
    }
    Ok(roots)
}

/// The system's trust roots (Debian: /etc/ssl/certs).
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!(error = %err, "could not load some system CA certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            ignored,
            "no system CA certificates found; verified https checks will fail"
        );
    }
    roots
}

/// `insecure_skip_verify = true`: any certificate chain and name is accepted. Handshake
/// signatures are still checked, so the peer holds the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
