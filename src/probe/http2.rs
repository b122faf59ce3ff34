//! HTTP/2, for HTTPS checks whose server chose `h2` by ALPN: a request over hyper's HTTP/2
//! client on a connection shared by the checks of its shape ([`super::h2conn`]), as gRPC checks
//! share theirs (HTTP/1.1, the common case for health endpoints, goes through
//! [`super::http1`] and the pool).

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONNECTION, HOST, HeaderValue, USER_AGENT};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::Reason;
use super::h2conn::Shared;
use super::progress::Failure;
use super::request::Hop;
use crate::config::Service;

/// A response, with its connection kept alive (and its descriptor counted) until dropped.
pub struct H2Response {
    response: Response<Incoming>,
    _connection: Shared,
}

/// Why a request on an HTTP/2 connection failed, and whether it may go again on another
/// connection (the server refused the stream, or the connection went before it was taken).
pub struct SendError {
    pub failure: Failure,
    pub retry: bool,
}

/// Sends `hop` on `connection` (shared with other checks, or new).
pub async fn send(
    connection: Shared,
    svc: &Service,
    hop: Hop<'_>,
) -> Result<H2Response, SendError> {
    let mut sender = connection.sender.clone();
    let authority = hop.target.authority.to_str().unwrap_or_default();
    let uri = format!("https://{authority}{}", hop.target.path_and_query);
    let mut request = Request::builder()
        .method(hop.method.clone())
        .uri(uri)
        .body(Full::new(hop.body.cloned().unwrap_or_default()))
        .map_err(|e| SendError {
            failure: Failure::new(
                Reason::InvalidResponse,
                format!("building the request: {e}"),
            ),
            retry: false,
        })?;
    let headers = request.headers_mut();
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(super::request::USER_AGENT_VALUE),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    // The service's configured headers go to its own origin only: any may be a secret.
    let configured = if hop.same_origin {
        &svc.extra.headers[..]
    } else {
        &[]
    };
    for (name, value) in configured {
        // HTTP/2 carries the host in :authority and has no connection-level headers.
        if name == HOST || name == CONNECTION {
            continue;
        }
        headers.insert(name.clone(), value.clone());
    }
    // A request that fails before its response may go again on another connection when
    // sending it twice is harmless (GET, HEAD, ...); a POST only when it was never taken.
    let idempotent = hop.method.is_idempotent();
    let pending = connection.pending();
    let sent = match sender.ready().await {
        Ok(()) => sender
            .send_request(request)
            .await
            .map_err(|e| (e, idempotent)),
        Err(e) => Err((e, true)),
    };
    pending.answered();
    let response = sent.map_err(|(e, retry)| SendError {
        failure: classify(&e),
        retry,
    })?;
    Ok(H2Response {
        response,
        _connection: connection,
    })
}

impl H2Response {
    pub fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// Every value of header `name`, in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The whole body, never more than `cap` bytes.
    pub async fn read_body(&mut self, cap: usize) -> Result<Bytes, Failure> {
        let too_large = || {
            Failure::new(
                Reason::BodyTooLarge,
                format!("body is larger than max_body_bytes ({cap} bytes)"),
            )
        };
        let declared = self
            .response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > cap as u64) {
            return Err(too_large());
        }
        let mut buf = BytesMut::new();
        while let Some(frame) = self.response.body_mut().frame().await {
            let frame = frame.map_err(|e| classify(&e))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > cap {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    }
}

fn classify(e: &hyper::Error) -> Failure {
    let reason = if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        Reason::InvalidResponse
    } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        Reason::ConnectionClosed
    } else {
        Reason::InvalidResponse
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    Failure::new(reason, message)
}
