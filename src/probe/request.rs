//! One request of a check, as the HTTP/1.1 and HTTP/2 clients send it: where it goes and what
//! it carries. Both clients use it, so neither depends on the other or on the check that drives
//! them.

use bytes::Bytes;
use http::Method;

use crate::config::Target;

/// The `User-Agent` of every check.
pub const USER_AGENT_VALUE: &str = concat!("healthsweep/", env!("CARGO_PKG_VERSION"));

/// One request of a check: where it goes and what it sends. Borrowed (from the service, or a
/// redirect's target): cheap to hold in every check's future.
#[derive(Clone, Copy)]
pub struct Hop<'a> {
    pub target: &'a Target,
    pub method: &'a Method,
    pub body: Option<&'a Bytes>,
    /// Still the service's own origin: only then are its configured headers (any may be a
    /// secret) and its `server_name` used.
    pub same_origin: bool,
}
