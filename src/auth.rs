//! Bearer-token auth for the daemon's own endpoints (`[daemon.auth]`).
//!
//! The token comes from a file named in the config (re-read at every reload) and is compared
//! in constant time. A failure is a [`Refusal`], which the API renders as a JSON 401 with
//! `WWW-Authenticate: Bearer`; it says nothing about what was presented, and the presented
//! value is never logged.

use http::header::{AUTHORIZATION, HeaderMap};
use tracing::debug;

use crate::config::{Auth, Protected};

/// A request refused for want of the token: what the 401 says. The API renders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Whether a token was presented (a wrong one), or none at all.
    pub presented: bool,
}

impl Refusal {
    /// The error message of the 401.
    pub fn message(self) -> &'static str {
        if self.presented {
            "the bearer token is not valid"
        } else {
            "this endpoint needs a bearer token: send Authorization: Bearer <token>"
        }
    }

    /// The challenge that makes a browser ask for a user name and password (RFC 7617): any
    /// user name, the token as the password.
    pub fn basic_challenge(self) -> &'static str {
        "Basic realm=\"healthsweep\", charset=\"UTF-8\""
    }

    /// The `WWW-Authenticate` challenge (RFC 6750).
    pub fn challenge(self) -> &'static str {
        if self.presented {
            "Bearer realm=\"healthsweep\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"healthsweep\""
        }
    }
}

/// Why the request must be refused, if `what` is protected and the request lacks the token;
/// `None` lets the request through.
pub fn refusal(auth: Option<&Auth>, what: Protected, headers: &HeaderMap) -> Option<Refusal> {
    let auth = auth.filter(|a| a.protects(what))?;
    match presented(headers) {
        Some(presented) if auth.token.matches(&presented) => None,
        presented => {
            debug!(
                endpoint = what.as_str(),
                token_presented = presented.is_some(),
                "request refused: missing or wrong bearer token"
            );
            Some(Refusal {
                presented: presented.is_some(),
            })
        }
    }
}

/// The token presented: `Authorization: Bearer <token>`, or `Basic` with the token as the
/// password and any user name (what a browser sends). Schemes are case-insensitive (RFC 7235).
fn presented(headers: &HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(6)?;
    if scheme.eq_ignore_ascii_case(b"bearer") && rest.first() == Some(&b' ') {
        return Some(rest.trim_ascii().to_vec());
    }
    let (scheme, rest) = value.split_at_checked(5)?;
    if scheme.eq_ignore_ascii_case(b"basic") && rest.first() == Some(&b' ') {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim_ascii())
            .ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            http::HeaderValue::from_str(auth).expect("valid"),
        );
        h
    }

    #[test]
    fn bearer_and_basic_present_the_token_and_other_schemes_do_not() {
        let p = |v: &str| presented(&headers(v));
        assert_eq!(p("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(p("bearer  abc "), Some(b"abc".to_vec()));
        // base64("anyone:s3cret:with:colons")
        assert_eq!(
            p("Basic YW55b25lOnMzY3JldDp3aXRoOmNvbG9ucw=="),
            Some(b"s3cret:with:colons".to_vec()),
            "the password is everything after the first colon"
        );
        assert_eq!(
            p("basic Og=="),
            Some(Vec::new()),
            "base64(\":\"): an empty password"
        );
        assert_eq!(p("Basic not base64!"), None);
        assert_eq!(p("Basic YWJj"), None, "no colon");
        assert_eq!(p("Digest abc"), None);
        assert_eq!(p("Bearerabc"), None);
        assert_eq!(p("Bear"), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }

    #[test]
    fn a_refusal_challenges_with_bearer_and_says_whether_a_token_came() {
        for presented in [false, true] {
            let r = Refusal { presented };
            assert!(r.challenge().starts_with("Bearer realm="));
            assert_eq!(r.challenge().contains("invalid_token"), presented);
        }
    }
}
