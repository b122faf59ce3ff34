//! TLS settings of checks (`ca_file`, `client_cert` + `client_key`, `insecure_skip_verify`),
//! turned into rustls client configs when the config is loaded, so a certificate that cannot be
//! read, or a key that does not fit its certificate, is a config error with the file's name,
//! not a failed check.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::access::{pem_certificates, pem_private_key};

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
///
/// Two rustls configs with the same trust and ALPN: `config` presents the client certificate
/// (when there is one), `anonymous` never does: a redirect to another origin gets no client
/// identity, as it gets none of the service's headers. Each has a `fingerprint` of everything
/// that shapes a connection made with it (trust roots and their content, verification mode,
/// client identity, ALPN): the connection pool shares a connection only between checks whose
/// fingerprints (and endpoint and server name) are equal, so a connection verified under lax
/// settings never serves a stricter service, and a reload that changes a CA file's content
/// changes the fingerprint.
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub fingerprint: Fingerprint,
    pub anonymous: Arc<ClientConfig>,
    pub anonymous_fingerprint: Fingerprint,
    pub insecure_skip_verify: bool,
}

/// Says what kind of client it is, never what it holds (a client key is in there).
impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field(
                "client_identity",
                &(self.fingerprint != self.anonymous_fingerprint),
            )
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// The config and its fingerprint for a connection to the service's own origin
    /// (`same_origin`), or to another one.
    pub fn for_origin(&self, same_origin: bool) -> (&Arc<ClientConfig>, Fingerprint) {
        if same_origin {
            (&self.config, self.fingerprint)
        } else {
            (&self.anonymous, self.anonymous_fingerprint)
        }
    }
}

/// What a TLS client config is made of, as a SHA-256 digest: collision-resistant, so a crafted
/// CA file cannot pass for another's and share its connections.
pub type Fingerprint = [u8; 32];

fn fingerprint(context: ring::digest::Context) -> Fingerprint {
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client for `options`. Errors name the file and the problem, never key material.
pub fn build(options: &TlsOptions) -> Result<TlsClient, String> {
    let provider = provider();
    let mut trust = ring::digest::Context::new(&ring::digest::SHA256);
    let verifier: Arc<dyn ServerCertVerifier> = if options.insecure_skip_verify {
        trust.update(b"insecure");
        Arc::new(AcceptAnyCertificate(provider.clone()))
    } else {
        let (anchors, source) = match &options.ca_file {
            Some(path) => (pem_certificates("ca_file", path)?, "ca_file"),
            None => (system_certificates(), "system"),
        };
        trust.update(source.as_bytes());
        for a in &anchors {
            trust.update(&(a.len() as u64).to_le_bytes());
            trust.update(a);
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(anchors.iter().cloned());
        match &options.ca_file {
            Some(path) if added == 0 => {
                return Err(format!(
                    "ca_file {}: no usable CA certificate found (expected PEM)",
                    path.display()
                ));
            }
            None if added == 0 => {
                tracing::warn!(
                    ignored,
                    "no system CA certificates found; verified https checks will fail with tls_unknown_issuer"
                );
            }
            _ => {}
        }
        if added == 0 {
            // webpki refuses to build a verifier without anchors; with none, nothing verifies.
            Arc::new(NoTrustAnchors(provider.clone()))
        } else {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("TLS setup: {e}"))?;
            if options.ca_file.is_some() {
                Arc::new(AnchorAsLeaf { webpki, anchors })
            } else {
                webpki
            }
        }
    };
    let alpn: Vec<Vec<u8>> = if options.alpn_http {
        HTTP_ALPN.iter().map(|p| p.to_vec()).collect()
    } else {
        Vec::new()
    };
    for p in &alpn {
        trust.update(b"alpn");
        trust.update(p);
    }
    let anonymous_fingerprint = fingerprint(trust.clone());
    let builder = || {
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(verifier.clone())
            })
            .map_err(|e| format!("TLS setup: {e}"))
    };
    let mut anonymous = builder()?.with_no_client_auth();
    let (mut config, fingerprint) = match &options.client_cert {
        None => (anonymous.clone(), anonymous_fingerprint),
        Some((cert, key)) => {
            let chain = pem_certificates("client_cert", cert)?;
            if chain.is_empty() {
                return Err(format!(
                    "client_cert {}: no certificate found",
                    cert.display()
                ));
            }
            let private = pem_private_key("client_key", key)?;
            let mut identity = trust.clone();
            identity.update(b"identity");
            for c in &chain {
                identity.update(&(c.len() as u64).to_le_bytes());
                identity.update(c);
            }
            identity.update(private.secret_der());
            let config = builder()?
                .with_client_auth_cert(chain, private)
                .map_err(|e| {
                    format!(
                        "client_key {} does not fit client_cert {}: {e}",
                        key.display(),
                        cert.display()
                    )
                })?;
            (config, fingerprint(identity))
        }
    };
    config.alpn_protocols = alpn.clone();
    anonymous.alpn_protocols = alpn;
    Ok(TlsClient {
        config: Arc::new(config),
        fingerprint,
        anonymous: Arc::new(anonymous),
        anonymous_fingerprint,
        insecure_skip_verify: options.insecure_skip_verify,
    })
}

/// The system's trust roots (Debian: /etc/ssl/certs), read at every load so a reload picks up
/// an updated CA bundle.
fn system_certificates() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!(error = %err, "could not load some system CA certificates");
    }
    found.certs
}

/// Verification against `ca_file`, also accepting a server whose certificate *is* one of the
/// configured anchors: what `openssl req -x509` makes by default is a self-signed certificate
/// with `CA:TRUE`, which webpki refuses as an end entity (`CaUsedAsEndEntity`) although the
/// operator named exactly that certificate as trusted; OpenSSL and Go accept it. Such a
/// certificate is still checked for its validity period and for the server name.
#[derive(Debug)]
struct AnchorAsLeaf {
    webpki: Arc<WebPkiServerVerifier>,
    anchors: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for AnchorAsLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verdict {
            Err(_)
                if self
                    .anchors
                    .iter()
                    .any(|a| a.as_ref() == end_entity.as_ref()) =>
            {
                anchor_valid_at(end_entity, now)?;
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// An anchor used as the server's certificate must be within its validity period, as any
/// leaf must.
fn anchor_valid_at(der: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    use rustls::CertificateError;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now > validity.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

/// No trust anchors at all (a host without system CA certificates): every certificate is of
/// an unknown issuer, which is what a check then says.
#[derive(Debug)]
struct NoTrustAnchors(Arc<CryptoProvider>);

impl ServerCertVerifier for NoTrustAnchors {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("healthsweep-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn self_signed(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    /// Every input that shapes a connection changes the fingerprint the pool keys on; the same
    /// inputs give the same one (so connections survive a reload that changes nothing).
    #[test]
    fn the_fingerprint_changes_with_every_connection_shaping_input_and_only_then() {
        let dir = scratch("fingerprint");
        let ca = dir.join("ca.pem");
        let (ca_pem, _) = self_signed("ca.test");
        std::fs::write(&ca, &ca_pem).expect("write");
        let (cert_pem, key_pem) = self_signed("client.test");
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert, &cert_pem).expect("write");
        std::fs::write(&key, &key_pem).expect("write");
        let fp = |o: &TlsOptions| build(o).expect("builds").fingerprint;
        let base = TlsOptions {
            ca_file: Some(ca.clone()),
            client_cert: None,
            insecure_skip_verify: false,
            alpn_http: true,
        };
        assert_eq!(fp(&base), fp(&base.clone()), "deterministic");
        let variants = [
            TlsOptions {
                ca_file: None,
                ..base.clone()
            },
            TlsOptions {
                insecure_skip_verify: true,
                ..base.clone()
            },
            TlsOptions {
                alpn_http: false,
                ..base.clone()
            },
            TlsOptions {
                client_cert: Some((cert.clone(), key.clone())),
                ..base.clone()
            },
        ];
        let mut seen = std::collections::HashSet::from([fp(&base)]);
        for v in &variants {
            assert!(seen.insert(fp(v)), "{v:?} has a fingerprint of its own");
        }
        // The same path with other content (a rotated CA file, read again at a reload).
        let before = fp(&base);
        let (other_pem, _) = self_signed("other-ca.test");
        std::fs::write(&ca, other_pem).expect("rewrite");
        assert_ne!(
            fp(&base),
            before,
            "the CA file's content counts, not its name"
        );
        // The identity changes only the identity's fingerprint, never the anonymous one.
        let with = build(&variants[3]).expect("builds");
        let without = build(&TlsOptions {
            client_cert: None,
            ..variants[3].clone()
        })
        .expect("builds");
        assert_eq!(with.anonymous_fingerprint, without.fingerprint);
        assert!(with.config.client_auth_cert_resolver.has_certs());
        assert!(!with.anonymous.client_auth_cert_resolver.has_certs());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_debug_form_never_shows_key_material() {
        let dir = scratch("debug");
        let (cert_pem, key_pem) = self_signed("client.test");
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert, &cert_pem).expect("write");
        std::fs::write(&key, &key_pem).expect("write");
        let client = build(&TlsOptions {
            client_cert: Some((cert, key)),
            ..TlsOptions::default()
        })
        .expect("builds");
        let shown = format!("{client:?}");
        assert!(shown.contains("client_identity: true"), "{shown}");
        let body: String = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(!shown.contains(&body[..20]), "{shown}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
