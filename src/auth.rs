//! Bearer-token auth for the daemon's own endpoints (`[daemon.auth]`).
//!
//! The token comes from a file named in the config (re-read at every reload) and is compared
//! in constant time. A failure is a JSON 401 with `WWW-Authenticate: Bearer`, and says nothing
//! about what was presented; the presented value is never logged.

use http::StatusCode;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use tracing::debug;

use crate::api::{HttpResponse, error};
use crate::config::{Auth, Protected};

/// The 401 to answer with, if `what` is protected and the request lacks the token; `None`
/// lets the request through.
pub fn refusal(auth: Option<&Auth>, what: Protected, headers: &HeaderMap) -> Option<HttpResponse> {
    let auth = auth.filter(|a| a.protects(what))?;
    match bearer(headers) {
        Some(presented) if auth.token.matches(presented) => None,
        presented => {
            debug!(
                endpoint = what.as_str(),
                token_presented = presented.is_some(),
                "request refused: missing or wrong bearer token"
            );
            Some(unauthorized(presented.is_some()))
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

fn unauthorized(presented: bool) -> HttpResponse {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        if presented {
            "the bearer token is not valid"
        } else {
            "this endpoint needs a bearer token: send Authorization: Bearer <token>"
        },
    );
    let challenge = if presented {
        "Bearer realm=\"healthsweep\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"healthsweep\""
    };
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).expect("valid"));
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
    fn a_refusal_is_a_401_with_a_bearer_challenge() {
        let r = unauthorized(false);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            r.headers()[WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .starts_with("Bearer")
        );
    }
}
