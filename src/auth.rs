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
    match bearer(headers) {
        Some(presented) if auth.token.matches(presented) => None,
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

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(rest.trim_ascii())
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
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_not_tokens() {
        assert_eq!(bearer(&headers("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bear")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
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
