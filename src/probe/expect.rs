//! The response conditions of an HTTP check: `expect_header` over every value of a header,
//! and the body conditions (`expect_body_contains`, `expect_body_regex`, `expect_json`), each
//! failure a [`Reason`] with a message that never shows a credential-like header's value.

use super::Reason;
use super::progress::Failure;
use crate::config::Expect;

/// The first `expect_header` entry the response does not satisfy, as a failure.
pub fn header_failure(expect: &Expect, headers: impl Fn(&str) -> Vec<String>) -> Option<Failure> {
    for (name, want) in &expect.headers {
        let values = headers(name.as_str());
        if want.holds(&values) {
            continue;
        }
        let message = match values.as_slice() {
            [] => format!("response has no {name} header, expected {want}"),
            [one] => format!("header {name} is {}, expected {want}", shown(name, one)),
            [first, ..] => format!(
                "header {name} has {} values (first {}), expected {want}{}",
                values.len(),
                shown(name, first),
                if want.all { "" } else { " in one of them" }
            ),
        };
        return Some(Failure::new(Reason::HeaderMismatch, message));
    }
    None
}

/// A response header's value as a failure message may show it: headers that carry
/// credentials or sessions (`Set-Cookie`, `WWW-Authenticate`, anything named like a token or
/// key) are shown by length only, since `/status` and the logs may be read by more people than
/// the service's own clients.
fn shown(name: &http::HeaderName, value: &str) -> String {
    const SECRET_HEADERS: [&str; 6] = [
        "set-cookie",
        "cookie",
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
    ];
    let n = name.as_str();
    let secret = SECRET_HEADERS.contains(&n)
        || ["token", "secret", "key", "session", "auth", "password"]
            .iter()
            .any(|w| n.contains(w));
    if secret {
        format!("({} bytes, not shown)", value.len())
    } else {
        format!("{:?}", shorten(value))
    }
}

pub fn check_body(expect: &Expect, body: &[u8]) -> Result<(), Failure> {
    if let Some(needle) = &expect.body_contains {
        // Two-way/SIMD search, linear in the body: a `windows()` scan is quadratic in the worst
        // case, and a hostile body of max_body_bytes would burn an async worker.
        if memchr::memmem::find(body, needle.as_bytes()).is_none() {
            return Err(Failure::new(
                Reason::BodyMismatch,
                format!("body does not contain {:?}", shorten(needle)),
            ));
        }
    }
    if let Some(re) = &expect.body_regex
        && !re.is_match(body)
    {
        return Err(Failure::new(
            Reason::BodyMismatch,
            format!("body does not match /{}/", shorten(re.as_str())),
        ));
    }
    if expect.json.is_empty() {
        return Ok(());
    }
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Failure::new(Reason::BodyMismatch, format!("body is not JSON: {e}")))?;
    for (pointer, want) in &expect.json {
        match doc.pointer(pointer) {
            None => {
                return Err(Failure::new(
                    Reason::BodyMismatch,
                    format!("JSON body has nothing at {pointer:?}"),
                ));
            }
            Some(got) if !json_eq(got, want) => {
                return Err(Failure::new(
                    Reason::BodyMismatch,
                    format!(
                        "JSON {pointer:?} is {}, expected {}",
                        shorten(&got.to_string()),
                        shorten(&want.to_string())
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// JSON equality where numbers compare by value: `1` in the config matches `1.0` in a body.
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

pub fn expected(expect: &Expect) -> String {
    expect
        .status
        .iter()
        .map(|m| match m {
            crate::config::StatusMatcher::Code(c) => c.to_string(),
            crate::config::StatusMatcher::Class(c) => format!("{c}xx"),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect_json(pairs: &[(&str, serde_json::Value)]) -> Expect {
        Expect {
            json: pairs
                .iter()
                .map(|(p, v)| (p.to_string(), v.clone()))
                .collect(),
            ..Expect::default()
        }
    }

    #[test]
    fn json_expectations_all_must_hold() {
        let e = expect_json(&[("/status", json!("ok")), ("/db/up", json!(true))]);
        assert!(check_body(&e, br#"{"status":"ok","db":{"up":true}}"#).is_ok());
        let f = check_body(&e, br#"{"status":"ok","db":{"up":false}}"#).expect_err("mismatch");
        assert_eq!(f.reason, Reason::BodyMismatch);
        assert!(f.message.contains("/db/up"), "{}", f.message);
    }

    #[test]
    fn a_missing_pointer_or_non_json_body_is_a_mismatch() {
        let e = expect_json(&[("/status", json!("ok"))]);
        let f = check_body(&e, br#"{"state":"ok"}"#).expect_err("missing");
        assert!(f.message.contains("nothing at"), "{}", f.message);
        let f = check_body(&e, b"<html>").expect_err("not json");
        assert!(f.message.contains("not JSON"), "{}", f.message);
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_eq(&json!(1.0), &json!(1)));
        assert!(json_eq(&json!({"a": [1]}), &json!({"a": [1.0]})));
        assert!(!json_eq(&json!(1), &json!("1")));
    }

    #[test]
    fn body_contains_is_a_substring_search() {
        let e = Expect {
            body_contains: Some("ok".into()),
            ..Expect::default()
        };
        assert!(check_body(&e, b"all ok here").is_ok());
        assert_eq!(
            check_body(&e, b"degraded").expect_err("absent").reason,
            Reason::BodyMismatch
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn json_text() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_string()),
                Just("true".to_string()),
                "-?[0-9]{1,20}(\\.[0-9]{1,5})?(e[+-]?[0-9]{1,4})?",
                "\"[ -~]{0,10}\"",
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4)
                        .prop_map(|v| format!("[{}]", v.join(","))),
                    proptest::collection::vec(("[a-z~/0-9]{0,4}", inner), 0..4).prop_map(|v| {
                        let fields: Vec<String> =
                            v.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                        format!("{{{}}}", fields.join(","))
                    }),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// JSON pointers of any shape (`~0`, `~1`, indices, empty segments) against bodies
            /// of any shape, valid JSON or not: a verdict, and every failure a body mismatch.
            #[test]
            fn json_expectations_give_a_verdict_for_any_body_and_pointer(
                body in prop_oneof![json_text(), "[ -~]{0,40}"],
                pointer in "(/[a-z~01/0-9]{0,4}){0,4}",
                want in json_text(),
            ) {
                let Ok(want) = serde_json::from_str::<serde_json::Value>(&want) else {
                    return Ok(());
                };
                let e = Expect {
                    json: vec![(pointer, want)],
                    body_contains: Some("a".into()),
                    ..Expect::default()
                };
                if let Err(f) = check_body(&e, body.as_bytes()) {
                    prop_assert_eq!(f.reason, Reason::BodyMismatch);
                }
            }
        }
    }
}
