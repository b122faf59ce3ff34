//! The gRPC probe (`grpc://host:port`, `grpcs://` over TLS): the standard health check,
//! `grpc.health.v1.Health/Check` for `grpc_service` (`""`: the server as a whole), with the
//! check's time limit as the gRPC deadline and the service's headers as metadata. Up only when
//! the answer is `SERVING`; as blackbox_exporter, Gatus and Kubernetes check gRPC.
//!
//! The two messages are one field each (`string service = 1`, `enum status = 1`), encoded and
//! decoded here in a few lines rather than by generated code: no protobuf toolchain at build
//! time, and nothing of tonic's channel, whose own connection handling would sit beside the
//! pool rules every other check follows. The requests go over [`super::h2conn`]'s shared
//! connections.

use std::sync::{Arc, Mutex};

use bytes::{BufMut as _, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue, TE, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use tokio::time::Instant;

use super::progress::{Clock, Failure, Phase, Progress};
use super::{GrpcFacts, Outcome, Prober, Reason};
use crate::config::Service;

/// The health check's path.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// Requests a check sends at most, one per connection, when connections fail under it.
const MAX_ATTEMPTS: u32 = 4;

/// Bytes of a response body read at most: the answer is a few bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// gRPC status codes (grpc/doc/statuscodes.md) the verdicts name.
const OK: u32 = 0;
const NOT_FOUND: u32 = 5;
const UNIMPLEMENTED: u32 = 12;

/// `ServingStatus` of grpc/health/v1/health.proto.
pub use crate::labels::SERVING_STATUSES;

/// Checks `svc` once; over by `sweep_deadline` or by its own timeout, whichever is first.
pub(super) async fn check(prober: &Prober, svc: &Service, sweep_deadline: Instant) -> Outcome {
    let progress = Progress::default();
    let clock = Clock::start(svc, sweep_deadline);
    let facts = Mutex::new(None);
    let cutoff = clock.cutoff();
    let result = clock
        .bound(attempt(prober, svc, &progress, &facts, cutoff))
        .await;
    let mut outcome = clock.outcome(svc, &progress, result);
    outcome.grpc = facts.into_inner().unwrap_or_else(|e| e.into_inner());
    outcome
}

async fn attempt(
    prober: &Prober,
    svc: &Service,
    progress: &Progress,
    facts: &Mutex<Option<Arc<GrpcFacts>>>,
    cutoff: Instant,
) -> Result<(), Failure> {
    let client = if svc.target.tls {
        Some(prober.tls(svc).await?)
    } else {
        None
    };
    let body = request_body(svc.extra.grpc_service.as_deref().unwrap_or(""));
    let mut failed: Option<super::h2conn::Shared> = None;
    let mut attempts = 1;
    let response = loop {
        let (mut shared, reused) = prober
            .h2
            .get(prober, svc, client.as_deref(), progress, failed.as_ref())
            .await?;
        progress.reused(reused);
        progress.tls(shared.tls.clone());
        progress.enter(Phase::Request);
        let request = build_request(svc, body.clone(), cutoff)?;
        let pending = shared.pending();
        let sent = async {
            shared.sender.ready().await.map_err(|e| (e, true))?;
            shared
                .sender
                .send_request(request)
                .await
                .map_err(|e| (e, false))
        };
        let sent = sent.await;
        pending.answered();
        match sent {
            Ok(r) => break r,
            // The connection went away before the request was taken (a GOAWAY, a reset, the
            // server's refusal of the stream), or a kept connection failed before any answer
            // (dropped on the way while idle): again, on a new connection. The health check
            // changes nothing, so sending it twice is harmless. A few times: the connection
            // that replaces the failed one may be refusing too (a server draining every
            // connection as it restarts); the check's time limit bounds it all.
            Err((e, not_sent))
                if attempts < MAX_ATTEMPTS
                    && (not_sent || reused || super::h2conn::refused(&e)) =>
            {
                attempts += 1;
                failed = Some(shared);
            }
            Err((e, _)) => {
                return Err(Failure::new(
                    Reason::ConnectionClosed,
                    format!("gRPC request: {e}"),
                ));
            }
        }
    };
    progress.response(response.status().as_u16(), super::HttpVersion::Http2);
    let (head, body) = response.into_parts();
    if head.status != StatusCode::OK {
        return Err(Failure::new(
            Reason::GrpcStatus,
            format!(
                "HTTP status {} (a gRPC server answers 200)",
                head.status.as_u16()
            ),
        ));
    }
    progress.enter(Phase::Body);
    let collected = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Failure::new(
                    Reason::BodyTooLarge,
                    format!("the answer is longer than {MAX_RESPONSE_BYTES} bytes"),
                )
            } else {
                Failure::new(Reason::ConnectionClosed, format!("reading the answer: {e}"))
            }
        })?;
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    // A trailers-only answer (an error) carries grpc-status in the headers.
    let field = |name: &str| {
        trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| head.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Some(code) = field("grpc-status").and_then(|c| c.trim().parse::<u32>().ok()) else {
        return Err(Failure::new(
            Reason::InvalidResponse,
            "the answer has no grpc-status",
        ));
    };
    let message = field("grpc-message").map(|m| percent_decode(&m));
    let serving = if code == OK {
        Some(decode_status(&bytes)?)
    } else {
        None
    };
    *facts.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(GrpcFacts {
        status_code: code,
        serving_status: serving,
        message: message.clone().map(String::into_boxed_str),
    }));
    let said = message
        .filter(|m| !m.is_empty())
        .map(|m| format!(": {}", cut(&m)))
        .unwrap_or_default();
    match (code, serving) {
        (OK, Some(1)) => Ok(()),
        (OK, Some(s)) => Err(Failure::new(
            Reason::GrpcNotServing,
            format!(
                "serving status {}",
                SERVING_STATUSES
                    .get(s as usize)
                    .copied()
                    .unwrap_or("UNKNOWN")
            ),
        )),
        (NOT_FOUND, _) => Err(Failure::new(
            Reason::GrpcServiceUnknown,
            format!(
                "the server does not know service {:?} (NOT_FOUND){said}",
                svc.extra.grpc_service.as_deref().unwrap_or("")
            ),
        )),
        (UNIMPLEMENTED, _) => Err(Failure::new(
            Reason::GrpcUnimplemented,
            format!("the server has no health service (UNIMPLEMENTED){said}"),
        )),
        (code, _) => Err(Failure::new(
            Reason::GrpcStatus,
            format!("gRPC status {code} ({}){said}", code_name(code)),
        )),
    }
}

fn build_request(
    svc: &Service,
    body: Bytes,
    cutoff: Instant,
) -> Result<Request<Full<Bytes>>, Failure> {
    let bad = |e: http::Error| {
        Failure::new(
            Reason::InvalidResponse,
            format!("building the request: {e}"),
        )
    };
    // From parts: the path is static and the authority already checked, so nothing is
    // formatted and parsed again per check.
    let uri = http::Uri::builder()
        .scheme(if svc.target.tls {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        })
        .authority(svc.target.authority.as_bytes())
        .path_and_query(http::uri::PathAndQuery::from_static(CHECK_PATH))
        .build()
        .map_err(bad)?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.reserve(4 + svc.extra.headers.len());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(super::request::USER_AGENT_VALUE),
    );
    // The check's time left, as the server's deadline (at least 1 ms). Different in every
    // request, so marked never-indexed: HPACK then neither stores it in the connection's
    // table nor evicts the headers that repeat to make room for it.
    let left = cutoff
        .saturating_duration_since(Instant::now())
        .as_millis()
        .clamp(1, 99_999_999);
    let mut timeout = itoa_ms(left as u32);
    timeout.set_sensitive(true);
    headers.insert(&GRPC_TIMEOUT, timeout);
    for (name, value) in svc.extra.headers.iter() {
        // gRPC metadata is lower-case HTTP/2 headers; the protocol's own stay ours.
        if name == CONTENT_TYPE || name == TE || name == http::header::HOST {
            continue;
        }
        headers.insert(name.clone(), value.clone());
    }
    Ok(request)
}

static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// `{ms}m`, the gRPC timeout form, without a heap string in between (at most 8 digits).
fn itoa_ms(mut ms: u32) -> HeaderValue {
    let mut buf = [0u8; 9];
    let mut i = buf.len() - 1;
    buf[i] = b'm';
    loop {
        i -= 1;
        buf[i] = b'0' + (ms % 10) as u8;
        ms /= 10;
        if ms == 0 || i == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[i..]).unwrap_or(HeaderValue::from_static("1m"))
}

/// A length-prefixed gRPC message holding `HealthCheckRequest { service }`.
fn request_body(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        crate::varint::put(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0); // not compressed
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

/// The `status` of a length-prefixed `HealthCheckResponse` (0, UNKNOWN, when absent).
fn decode_status(body: &[u8]) -> Result<u64, Failure> {
    let bad = |why: &str| Failure::new(Reason::InvalidResponse, format!("the health answer {why}"));
    if body.len() < 5 {
        return Err(bad("is shorter than a gRPC message frame"));
    }
    if body[0] != 0 {
        return Err(bad("is compressed, which was not asked for"));
    }
    let len = usize::try_from(u32::from_be_bytes([body[1], body[2], body[3], body[4]]))
        .map_err(|_| bad("is longer than this machine can hold"))?;
    let message = body
        .get(5..)
        .and_then(|m| m.get(..len))
        .ok_or_else(|| bad("is cut short"))?;
    let mut status = 0;
    let mut rest = message;
    while !rest.is_empty() {
        let (key, after) =
            crate::varint::read(rest).ok_or_else(|| bad("is not a protobuf message"))?;
        rest = after;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let (v, after) =
                    crate::varint::read(rest).ok_or_else(|| bad("is not a protobuf message"))?;
                if field == 1 {
                    status = v;
                }
                rest = after;
            }
            1 => rest = rest.get(8..).ok_or_else(|| bad("is cut short"))?,
            2 => {
                let (n, after) =
                    crate::varint::read(rest).ok_or_else(|| bad("is not a protobuf message"))?;
                let n = usize::try_from(n).map_err(|_| bad("is cut short"))?;
                rest = after.get(n..).ok_or_else(|| bad("is cut short"))?;
            }
            5 => rest = rest.get(4..).ok_or_else(|| bad("is cut short"))?,
            _ => return Err(bad("is not a protobuf message")),
        }
    }
    Ok(status)
}

fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("unknown code")
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `grpc-message` shown in an error: its first 200 bytes at most.
fn cut(s: &str) -> &str {
    &s[..super::prefix_len(s, 200)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_framed_health_check_request() {
        assert_eq!(&request_body("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &request_body("ledger.v1.Ledger")[..],
            [&[0u8, 0, 0, 0, 18, 0x0a, 16][..], b"ledger.v1.Ledger"].concat()
        );
    }

    #[test]
    fn answers_decode_and_garbage_is_an_error_not_a_panic() {
        assert_eq!(decode_status(&[0, 0, 0, 0, 2, 0x08, 1]).ok(), Some(1));
        assert_eq!(
            decode_status(&[0, 0, 0, 0, 0]).ok(),
            Some(0),
            "UNKNOWN by default"
        );
        // Unknown fields are skipped.
        assert_eq!(
            decode_status(&[0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 2]).ok(),
            Some(2)
        );
        for garbage in [
            &[][..],
            &[0, 0, 0, 0, 9, 0x08][..],
            &[1, 0, 0, 0, 2, 0x08, 1][..],
            &[0, 0, 0, 0, 2, 0x08, 0xff][..],
            &[0, 0xff, 0xff, 0xff, 0xff][..],
            &[0, 0, 0, 0, 2, 0x0f, 1][..],
        ] {
            assert!(decode_status(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn the_timeout_is_written_in_milliseconds() {
        assert_eq!(itoa_ms(1), "1m");
        assert_eq!(itoa_ms(1500), "1500m");
        assert_eq!(itoa_ms(99_999_999), "99999999m");
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode("not%20found%3A x"), "not found: x");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
