//! The TLS handshake of a check: which failure it was (expired, unknown issuer, wrong name,
//! anything else), and what the server's certificate chain says about expiry.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{CertificateError, Error as TlsError};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::Reason;
use super::progress::Failure;
use crate::timestamp::UnixTime;

/// What a TLS handshake showed about the server's certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFacts {
    /// The earliest `notAfter` in the chain the server presented
    /// (`probe_ssl_earliest_cert_expiry`, as in blackbox_exporter). Any X.509 time: a chain
    /// may carry a certificate from before 1970 or one valid until 9999.
    pub earliest_expiry: UnixTime,
    /// The server's own (leaf) certificate's `notAfter`.
    pub leaf_expiry: UnixTime,
}

/// Performs the handshake as `server_name` with `client` and reads the certificates' expiry.
pub async fn handshake(
    client: &Arc<rustls::ClientConfig>,
    server_name: &str,
    tcp: TcpStream,
) -> Result<(TlsStream<TcpStream>, Option<Arc<TlsFacts>>), Failure> {
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| {
        Failure::new(
            Reason::TlsHandshake,
            format!("invalid TLS server name {server_name}: {e}"),
        )
    })?;
    let stream = tokio_rustls::TlsConnector::from(client.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| classify(server_name, &e))?;
    let facts = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(facts)
        .map(Arc::new);
    Ok((stream, facts))
}

/// Whether the server agreed to speak HTTP/2.
pub fn negotiated_h2(stream: &TlsStream<TcpStream>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}

/// A TLS failure surfacing after the handshake (reading the response), if `e` is one. Under
/// TLS 1.3 the client's side of the handshake ends first, so a server that refuses the client
/// (no client certificate, say) answers the request with an alert.
pub fn after_handshake(e: &std::io::Error) -> Option<Failure> {
    e.get_ref()?.downcast_ref::<TlsError>()?;
    let f = classify("the server", e);
    Some(Failure::new(
        f.reason,
        f.message.replacen("handshake", "session", 1),
    ))
}

/// The handshake's failure, by cause. rustls reports through `io::Error`; its own error is the
/// inner one.
fn classify(server_name: &str, e: &std::io::Error) -> Failure {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<TlsError>());
    let (reason, what) = match inner {
        Some(TlsError::InvalidCertificate(c)) => match c {
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => {
                (Reason::TlsCertExpired, format!("certificate {c:?}"))
            }
            CertificateError::UnknownIssuer => (
                Reason::TlsUnknownIssuer,
                "certificate is not signed by a trusted CA".to_string(),
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                (
                    Reason::TlsHostnameMismatch,
                    format!("certificate is not valid for {server_name}"),
                )
            }
            other => (
                Reason::TlsHandshake,
                format!("invalid certificate: {other:?}"),
            ),
        },
        Some(TlsError::AlertReceived(alert)) => (
            Reason::TlsHandshake,
            format!(
                "the server refused the handshake ({alert:?} alert; a client certificate may be required)"
            ),
        ),
        Some(other) => (Reason::TlsHandshake, other.to_string()),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => (
            Reason::TlsHandshake,
            "the server closed the connection during the handshake".to_string(),
        ),
        None => (Reason::TlsHandshake, e.to_string()),
    };
    Failure::new(reason, format!("TLS handshake with {server_name}: {what}"))
}

/// Expiry of the leaf and the earliest in the chain, from the DER certificates. A certificate
/// that does not parse is left out (the handshake verified what it needed to).
pub fn facts(chain: &[rustls::pki_types::CertificateDer<'_>]) -> Option<TlsFacts> {
    let expiries: Vec<UnixTime> = chain.iter().filter_map(|c| not_after(c)).collect();
    Some(TlsFacts {
        leaf_expiry: *expiries.first()?,
        earliest_expiry: *expiries.iter().min()?,
    })
}

/// A certificate's `notAfter`, whatever year it names.
pub fn not_after(der: &[u8]) -> Option<UnixTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(UnixTime::from_secs(cert.validity().not_after.timestamp()))
}
