//! Certificates made by the tests themselves, and a TLS server that records which connection
//! served which request and which client certificate it came with.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

/// A certificate and its key.
pub struct Issued {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Issued {
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

/// A self-signed CA valid from 2020 until `not_after` (year, month, day).
pub fn ca(name: &str, not_after: (i32, u8, u8)) -> Issued {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed CA");
    Issued { cert, key }
}

/// Valid from 2024 to 2036.
pub const VALID: ((i32, u8, u8), (i32, u8, u8)) = ((2024, 1, 1), (2036, 1, 1));

/// A certificate for `names`, valid between the two dates, signed by `issuer`.
pub fn leaf(names: &[&str], valid: ((i32, u8, u8), (i32, u8, u8)), issuer: &Issued) -> Issued {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    params.not_before = rcgen::date_time_ymd(valid.0.0, valid.0.1, valid.0.2);
    params.not_after = rcgen::date_time_ymd(valid.1.0, valid.1.1, valid.1.2);
    let key = KeyPair::generate().expect("key");
    let cert = params
        .signed_by(&key, &issuer.cert, &issuer.key)
        .expect("signed leaf");
    Issued { cert, key }
}

/// Writes `pem` to `dir/name` and returns the path as text, for a config.
pub fn write_pem(dir: &Path, name: &str, pem: String) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    path.display().to_string()
}

/// Whether and how the server asks for a client certificate.
pub enum ClientAuth {
    None,
    /// Asks for one signed by this CA, and serves clients without one too.
    Optional(CertificateDer<'static>),
}

/// One request a [`TlsServer`] served.
#[derive(Debug, Clone)]
pub struct Served {
    /// Which accepted connection it came on (counted from 1).
    pub connection: u64,
    pub path: String,
    /// The SNI name the client sent.
    pub sni: Option<String>,
    /// The client's certificate (DER), when it presented one.
    pub client_cert: Option<Vec<u8>>,
}

pub use super::Answer;

/// A TLS server on loopback (HTTP/1.1) that records every request it serves.
pub struct TlsServer {
    pub addr: SocketAddr,
    served: Arc<Mutex<Vec<Served>>>,
}

impl TlsServer {
    /// Serves `chain` with `key` until `stop`, answering each path with `answer`.
    pub async fn start(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_auth: ClientAuth,
        answer: fn(&str) -> Answer,
        stop: &CancellationToken,
    ) -> TlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca).expect("client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .allow_unauthenticated()
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).expect("server cert");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let served = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicU64::new(0));
        let sink = served.clone();
        let serve = move |s| {
            let (acceptor, sink, connections) =
                (acceptor.clone(), sink.clone(), connections.clone());
            async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let connection = connections.fetch_add(1, Ordering::SeqCst) + 1;
                let session = tls.get_ref().1;
                let sni = session.server_name().map(str::to_string);
                let client_cert = session
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec());
                let svc = service_fn(move |req: Request<Incoming>| {
                    let path = req.uri().path().to_string();
                    sink.lock().expect("lock").push(Served {
                        connection,
                        path: path.clone(),
                        sni: sni.clone(),
                        client_cert: client_cert.clone(),
                    });
                    let (status, headers, body) = answer(&path);
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
                    for (k, v) in headers {
                        r.headers_mut().append(k, v.parse().expect("header value"));
                    }
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            }
        };
        let addr = super::serve_each(super::any_loopback_port(), serve, stop).await;
        TlsServer { addr, served }
    }

    /// Every request served so far, oldest first.
    pub fn served(&self) -> Vec<Served> {
        self.served.lock().expect("lock").clone()
    }
}

/// `200 {"status":"ok"}` for every path.
pub fn ok(_path: &str) -> Answer {
    (200, Vec::new(), r#"{"status":"ok"}"#.to_string())
}
