//! Redirects a check follows (`follow_redirects`): where a `Location` leads, which method and
//! body go on, and whether the next request is still the service's own origin (only then do
//! its headers, `server_name` and client certificate go with it).

use bytes::Bytes;
use http::Method;
use url::Url;

use super::Reason;
use super::progress::Failure;
use super::request::Hop;
use crate::config::{ProbeKind, Service, Target};

pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Where a redirect leads, owning what its [`Hop`] borrows.
pub struct Redirect {
    target: Target,
    method: Method,
    body: Option<Bytes>,
    url: Url,
    same_origin: bool,
}

impl Redirect {
    /// The request a `status` redirect to `location` asks for, after `previous` (`None`: the
    /// service's own request).
    pub fn to(
        svc: &Service,
        previous: Option<&Redirect>,
        location: &str,
        status: u16,
    ) -> Result<Redirect, Failure> {
        let bad = |why: &str| {
            Failure::new(
                Reason::InvalidResponse,
                format!("redirect with an unusable Location: {why}"),
            )
        };
        let base = match previous {
            Some(p) => p.url.clone(),
            None => Url::parse(&svc.url).map_err(|_| bad("the service URL"))?,
        };
        let mut url = base.join(location).map_err(|_| bad("not a URL"))?;
        let (target, kind) = crate::config::target_of(&url).map_err(|e| bad(&e))?;
        if kind != ProbeKind::Http {
            return Err(bad("not http or https"));
        }
        // Credentials never travel in a followed URL.
        let _ = url.set_password(None);
        let _ = url.set_username("");
        let (method, body, was_same_origin) = match previous {
            Some(p) => (&p.method, p.body.as_ref(), p.same_origin),
            None => (&svc.method, svc.extra.body.as_ref(), true),
        };
        let same_origin = was_same_origin
            && target.tls == svc.target.tls
            && target.host == svc.target.host
            && target.port == svc.target.port;
        // Like browsers and curl: 303 always, and 301/302 after a POST, continue with GET.
        let to_get = status == 303 || (matches!(status, 301 | 302) && *method == Method::POST);
        Ok(Redirect {
            target,
            method: if to_get { Method::GET } else { method.clone() },
            body: if to_get { None } else { body.cloned() },
            url,
            same_origin,
        })
    }

    pub fn hop(&self) -> Hop<'_> {
        Hop {
            target: &self.target,
            method: &self.method,
            body: self.body.as_ref(),
            same_origin: self.same_origin,
        }
    }
}
