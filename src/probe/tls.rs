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
            CertificateError::Other(o) if is_ca_as_leaf(o) => (
                Reason::TlsUnknownIssuer,
                "the server's certificate is a CA certificate (CA:TRUE) not named in ca_file; \
                 name it there to trust it"
                    .to_string(),
            ),
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

/// Whether webpki refused the server's certificate for being a CA's (what `openssl req -x509`
/// makes), which is a question of trust: an anchor named in `ca_file` is accepted as a leaf.
fn is_ca_as_leaf(e: &rustls::OtherError) -> bool {
    matches!(
        e.0.downcast_ref::<webpki::Error>(),
        Some(webpki::Error::CaUsedAsEndEntity)
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn certificate(not_after: (i32, u8, u8)) -> rustls::pki_types::CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["x.test".to_string()]).expect("params");
        params.not_before = rcgen::date_time_ymd(1950, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any notAfter X.509 can hold (UTCTime 1950-2049, GeneralizedTime up to 9999) is read
        /// and rendered, before 1970 included.
        #[test]
        fn any_certificate_date_is_read_and_rendered(
            year in 1950i32..=9999,
            month in 1u8..=12,
            day in 1u8..=28,
        ) {
            let der = certificate((year, month, day));
            let f = facts(&[der]).expect("facts");
            let text = f.leaf_expiry.rfc3339().to_string();
            prop_assert!(
                text.starts_with(&format!("{year:04}-{month:02}-{day:02}T")),
                "{text}"
            );
            let _ = f.leaf_expiry.days_after(UnixTime::from_secs(0));
            let _ = f.earliest_expiry.as_f64();
        }

        /// Bytes that are not a certificate are left out, never a panic.
        #[test]
        fn bytes_that_are_not_a_certificate_are_skipped(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let der = rustls::pki_types::CertificateDer::from(bytes);
            prop_assert!(facts(&[der]).is_none());
        }
    }
}
