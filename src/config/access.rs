//! Who may reach the daemon's own endpoints and how: `[daemon.auth]` (a bearer token read from
//! a file) and `[daemon.tls]` (a certificate and key for our server).
//!
//! Both read files named in the config, at every load, so a reload rotates the token and the
//! certificate without a restart. Nothing read from those files ever reaches an error message,
//! a log line or a `Debug` string.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use subtle::ConstantTimeEq;

use super::read;

/// Shortest token accepted: anything shorter can be guessed, or is a placeholder left in.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted; it travels in a header that hyper limits anyway.
pub const MAX_TOKEN_LEN: usize = 4096;

/// `[daemon.auth]`: a bearer token and the endpoints it guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Where the token was read from (resolved against the config file's directory).
    pub token_file: PathBuf,
    pub token: Token,
    /// The endpoint groups that need the token. Never empty.
    pub protect: BTreeSet<Protected>,
}

impl Auth {
    /// Whether `what` needs the token.
    pub fn protects(&self, what: Protected) -> bool {
        self.protect.contains(&what)
    }
}

/// An endpoint group that `protect` can name. `/healthz` and `/readyz` are never protected:
/// orchestrators probe them without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protected {
    /// `POST /-/reload`.
    Reload,
    /// `/status` and `/status/{name}`.
    Status,
    /// `/metrics`.
    Metrics,
}

impl Protected {
    pub const ALL: [Protected; 3] = [Protected::Reload, Protected::Status, Protected::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Protected::Reload => "reload",
            Protected::Status => "status",
            Protected::Metrics => "metrics",
        }
    }

    pub fn parse(s: &str) -> Option<Protected> {
        Protected::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A secret token. Its `Debug` never shows it, and comparing it takes the same time whatever
/// the presented value holds (for a given length).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<[u8]>);

impl Token {
    /// Whether `presented` is the token, compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        // `ct_eq` on slices of different lengths returns false at once: only the length can
        // leak, and tokens have no secret length worth hiding.
        bool::from(self.0.as_ref().ct_eq(presented))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(REDACTED)")
    }
}

/// `[daemon.tls]`: our server's certificate chain and key, loaded and checked to match.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub key: Arc<CertifiedKey>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// Two TLS settings are the same when they name the same files holding the same certificates.
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.cert_file == other.cert_file
            && self.key_file == other.key_file
            && self.key.cert == other.key.cert
    }
}

impl Eq for ServerTls {}

/// `path` as written in the config, resolved against the config file's directory.
pub(super) fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Reads a token file: one token, surrounding whitespace (a trailing newline) ignored.
/// Errors name the file and what is wrong, never the content.
pub(super) fn read_token(path: &Path) -> Result<Token, String> {
    let bytes = read::read(path, read::Limit::Secret)
        .map_err(|e| format!("token_file {}: {e}", path.display()))?;
    let token = bytes.trim_ascii();
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "token_file {}: the token must be at least {MIN_TOKEN_LEN} characters",
            path.display()
        ));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "token_file {}: the token must be at most {MAX_TOKEN_LEN} characters",
            path.display()
        ));
    }
    // It travels as `Authorization: Bearer <token>`: visible ASCII only.
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "token_file {}: the token must be printable ASCII without spaces",
            path.display()
        ));
    }
    Ok(Token(Arc::from(token)))
}

/// Reads a PEM certificate chain and private key and checks that they belong together.
pub(super) fn read_server_tls(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let certs = pem_certificates("cert_file", cert_file)?;
    if certs.is_empty() {
        return Err(format!(
            "cert_file {}: no certificate found (expected PEM)",
            cert_file.display()
        ));
    }
    // The key's bytes never appear in an error: only the file and the kind of problem.
    let key = pem_private_key("key_file", key_file)?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        format!(
            "key_file {} does not fit cert_file {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })
}

/// The certificates of the PEM file at `path`, named `key` in errors.
pub(super) fn pem_certificates(
    key: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        read::read(path, read::Limit::Pem).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} {}: {}", path.display(), pem_error(&e)))
}

/// The private key of the PEM file at `path`, named `key` in errors (never its bytes).
pub(super) fn pem_private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem =
        read::read(path, read::Limit::Pem).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{key} {}: {}", path.display(), pem_error(&e)))
}

/// A PEM error as an operator can act on it, never with the file's bytes (possibly a key).
pub(super) fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => format!("cannot read: {io}"),
        E::NoItemsFound => "no PEM item of the expected kind found".into(),
        // Other variants describe malformed PEM; some carry bytes of the file, so they are
        // summarised rather than shown.
        _ => "not valid PEM".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_only_itself_and_never_shows_in_debug() {
        let t = Token(Arc::from(&b"correct-horse-battery"[..]));
        assert!(t.matches(b"correct-horse-battery"));
        assert!(!t.matches(b"correct-horse-batterx"));
        assert!(!t.matches(b"correct-horse"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "Token(REDACTED)");
    }

    #[test]
    fn protect_names_round_trip() {
        for p in Protected::ALL {
            assert_eq!(Protected::parse(p.as_str()), Some(p));
        }
        assert_eq!(Protected::parse("healthz"), None);
    }
}
