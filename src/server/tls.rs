//! TLS for our own server: a rustls `ServerConfig` whose certificate follows the running
//! config, so a reload that reads a renewed certificate rotates it without a restart.
//!
//! The certificate is looked up per handshake from the latest snapshot's config (a cheap `Arc`
//! clone); connections already open keep the certificate they were made with.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerTls;
use crate::snapshot::Snapshot;

/// Builds the acceptor for a server started with `initial`.
pub fn acceptor(initial: &ServerTls, snapshots: watch::Receiver<Arc<Snapshot>>) -> TlsAcceptor {
    let resolver = CurrentCert {
        snapshots,
        initial: initial.key.clone(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // Our server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Resolves to the certificate of the config in force.
#[derive(Debug)]
struct CurrentCert {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Used if a reload removed `[daemon.tls]`: turning TLS off needs a restart, and until then
    /// the server keeps the certificate it has.
    initial: Arc<CertifiedKey>,
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.snapshots.borrow().clone();
        Some(
            snapshot
                .config
                .daemon
                .tls
                .as_ref()
                .map_or_else(|| self.initial.clone(), |t| t.key.clone()),
        )
    }
}
