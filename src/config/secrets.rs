//! Secrets in the config: `${NAME}` in header values and URL passwords, taken from the
//! environment, and header values read from files (`header_files`).
//!
//! Both are resolved at every load, so a reload picks up a rotated file. What they resolve to
//! never reaches an error message, a log line or a `Debug` string: errors name the variable or
//! the file (and the header), never a value, and every header value built here is marked
//! sensitive.
//!
//! `${...}` is expanded in exactly two places, where secrets belong: header values and the
//! password of a service URL. Anywhere else in a URL it is an error (a host or path that
//! silently kept a literal `${HOST}` would be checked as written and fail in a puzzling way);
//! anywhere else in the file it is plain text. `$$` is a literal `$`; a `$` followed by
//! anything else stays as it is, so values written before expansion existed keep working
//! unless they hold `${` or `$$`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use toml::Spanned;
use url::Url;

use super::read::{self, ReadError};
use super::{Validator, access};

/// Where `${NAME}` gets its value: the process environment when the daemon loads its config
/// ([`process_env`]), a fixed map in unit tests (which may not change the real environment:
/// `set_var` is `unsafe` and the crate forbids unsafe code).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process environment, read through the safe `std::env::var_os`.
pub(crate) fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// Largest header file read. Servers limit a request head to 8–16 KiB, so a larger file is a
/// wrong path (a log, a binary), not a credential; reading stops there either way.
pub const MAX_HEADER_FILE_BYTES: u64 = read::Limit::Secret.bytes();

/// Why a `${...}` template could not be expanded. Names the variable, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("environment variable {0} is not set")]
    Unset(String),
    #[error("environment variable {0} is empty")]
    Empty(String),
    #[error("environment variable {0} is not valid UTF-8")]
    NotUtf8(String),
    #[error("\"${{\" is not closed by \"}}\" (write \"$$\" for a literal \"$\")")]
    Unclosed,
    // The text between the braces is not shown: a literal secret that happens to hold "${"
    // would otherwise be echoed.
    #[error(
        "\"${{...}}\" must hold an environment variable name: letters, digits and '_', not starting with a digit (write \"$$\" for a literal \"$\")"
    )]
    BadName,
}

/// Why a `header_files` entry gave no header value. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum HeaderFileError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a regular file (it is {kind})", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{} is empty", path.display())]
    Empty { path: PathBuf },
    #[error("{} is larger than {MAX_HEADER_FILE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error(
        "{} holds characters not valid in an HTTP header value (control characters or non-ASCII; only one trailing newline is removed)",
        path.display()
    )]
    NotAHeaderValue { path: PathBuf },
}

/// Expands `${NAME}` and `$$` in `template`. `encode` turns a variable's value into the text
/// that stands for it (identity for headers, percent-encoding for URL passwords).
pub(crate) fn expand(
    template: &str,
    env: Env<'_>,
    encode: impl Fn(&str) -> Cow<'_, str>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(after) = after.strip_prefix('{') {
            let end = after.find('}').ok_or(ExpandError::Unclosed)?;
            let name = &after[..end];
            if !is_env_name(name) {
                return Err(ExpandError::BadName);
            }
            let value = lookup(name, env)?;
            out.push_str(&encode(&value));
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A variable's value as it goes into a header: as it is.
fn verbatim(value: &str) -> Cow<'_, str> {
    Cow::Borrowed(value)
}

/// The value of variable `name`: set, not empty, UTF-8.
fn lookup(name: &str, env: Env<'_>) -> Result<String, ExpandError> {
    let value = env(name).ok_or_else(|| ExpandError::Unset(name.to_string()))?;
    if value.is_empty() {
        return Err(ExpandError::Empty(name.to_string()));
    }
    value
        .into_string()
        .map_err(|_| ExpandError::NotUtf8(name.to_string()))
}

/// POSIX shell variable names: what `export NAME=...` accepts.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `text` asks for expansion at all, so plain values keep their old error messages.
fn has_reference(text: &str) -> bool {
    text.contains("${")
}

/// Characters kept as they are in an expanded password: RFC 3986's unreserved set. Everything
/// else, `%` included, is percent-encoded, so the password sent is exactly the variable's value.
const PASSWORD_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why the `${...}` in a URL could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlSecretError {
    #[error(
        "url: \"${{...}}\" is only expanded in the password (http://user:${{NAME}}@host/...), not in the {0}"
    )]
    Misplaced(&'static str),
    #[error("url password: {0}")]
    Expand(#[from] ExpandError),
}

/// Expands `${NAME}` in the password of `url` and checks that no `${` sits anywhere else.
///
/// The password is taken as `url` holds it, percent-encoded, so percent-encoded characters
/// stay literal; the parser has encoded the braces (`%7B`, `%7D`), which are turned back first.
/// A variable's value is percent-encoded in full before it goes in, so `@`, `:`, `/` or `%` in
/// a password cannot change the URL's structure.
pub(crate) fn expand_url_password(url: &mut Url, env: Env<'_>) -> Result<(), UrlSecretError> {
    let parts = [
        ("user name", url.username()),
        ("host", url.host_str().unwrap_or_default()),
        ("path", url.path()),
        ("query", url.query().unwrap_or_default()),
        ("fragment", url.fragment().unwrap_or_default()),
    ];
    if let Some((part, _)) = parts.iter().find(|(_, text)| has_encoded_reference(text)) {
        return Err(UrlSecretError::Misplaced(part));
    }
    let Some(password) = url.password() else {
        return Ok(());
    };
    let template = password
        .replace("%7B", "{")
        .replace("%7b", "{")
        .replace("%7D", "}")
        .replace("%7d", "}");
    if !template.contains('$') {
        return Ok(());
    }
    let expanded = expand(&template, env, percent_encoded)?;
    // Cannot fail: the URL already carries a password, so it has a host that can hold one.
    let _ = url.set_password(Some(&expanded));
    Ok(())
}

/// A variable's value as it goes into a URL password: every reserved character encoded.
fn percent_encoded(value: &str) -> Cow<'_, str> {
    utf8_percent_encode(value, PASSWORD_VALUE).into()
}

/// `${` in a URL part, as written or as the URL parser encoded it.
fn has_encoded_reference(text: &str) -> bool {
    has_reference(text) || text.contains("$%7B") || text.contains("$%7b")
}

/// The hint added to a URL parse error when the URL holds `${`: a `${PORT}` or `${HOST}`
/// breaks parsing before the misplaced reference can be named.
pub(crate) fn url_parse_hint(raw: &str) -> &'static str {
    if has_reference(raw) {
        " (\"${...}\" is only expanded in the password: http://user:${NAME}@host/...)"
    } else {
        ""
    }
}

/// Reads a header value from `path`: the content with one trailing newline (`\n` or `\r\n`)
/// removed, as written by `echo`, editors and secret stores.
pub fn read_header_file(path: &Path) -> Result<HeaderValue, HeaderFileError> {
    let content = read::read(path, read::Limit::Secret).map_err(|e| match e {
        ReadError::Io(source) => HeaderFileError::Read {
            path: path.to_path_buf(),
            source,
        },
        ReadError::NotRegular(kind) => HeaderFileError::NotAFile {
            path: path.to_path_buf(),
            kind,
        },
        ReadError::TooLarge(_) => HeaderFileError::TooLarge {
            path: path.to_path_buf(),
        },
    })?;
    let mut value = content.as_slice();
    if let Some(v) = value.strip_suffix(b"\n") {
        value = v.strip_suffix(b"\r").unwrap_or(v);
    }
    if value.is_empty() {
        return Err(HeaderFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut header = std::str::from_utf8(value)
        .ok()
        .and_then(|s| HeaderValue::from_str(s).ok())
        .ok_or_else(|| HeaderFileError::NotAHeaderValue {
            path: path.to_path_buf(),
        })?;
    header.set_sensitive(true);
    Ok(header)
}

impl Validator<'_> {
    /// A header value from the config: `${NAME}` expanded, checked, marked sensitive. Reports a
    /// problem (naming the header and the variable, never the value) and gives `None` when bad.
    pub(super) fn header_value(
        &mut self,
        name: &str,
        value: &str,
        span: &Range<usize>,
    ) -> Option<HeaderValue> {
        let expanded = if value.contains('$') {
            match expand(value, self.env, verbatim) {
                Ok(v) => Cow::Owned(v),
                Err(e) => {
                    self.report(Some(span), format!("header {name:?}: {e}"));
                    return None;
                }
            }
        } else {
            Cow::Borrowed(value)
        };
        match HeaderValue::from_str(&expanded) {
            Ok(mut v) => {
                v.set_sensitive(true);
                Some(v)
            }
            // The value may be a secret: name the header, never echo the value.
            Err(_) if has_reference(value) => {
                self.report(
                    Some(span),
                    format!("header {name:?}: the value, once its ${{...}} are expanded, is not valid in HTTP (control characters or non-ASCII)"),
                );
                None
            }
            Err(_) => {
                self.report(
                    Some(span),
                    format!("header {name:?} has a value that is not valid in HTTP (control characters or non-ASCII)"),
                );
                None
            }
        }
    }

    /// `header_files`: each header's value read from its file (relative to the file being
    /// validated), into `headers`. The same header in `headers` of the same table is a problem:
    /// which one wins would be a guess.
    pub(super) fn header_files(
        &mut self,
        files: &Spanned<BTreeMap<String, String>>,
        inline: Option<&Spanned<BTreeMap<String, String>>>,
        headers: &mut HeaderMap,
    ) {
        let span = files.span();
        for (name, file) in files.get_ref() {
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                self.report(
                    Some(&span),
                    format!("header_files: header name {name:?} is not a valid HTTP header name"),
                );
                continue;
            };
            let twice = inline.is_some_and(|h| {
                h.get_ref()
                    .keys()
                    .any(|n| HeaderName::from_bytes(n.as_bytes()).is_ok_and(|n| n == header))
            });
            if twice {
                self.report(
                    Some(&span),
                    format!("header {name:?} is set in both headers and header_files; keep one"),
                );
                continue;
            }
            let path = access::resolve(&self.base_dir, file);
            match read_header_file(&path) {
                Ok(value) => {
                    headers.insert(header, value);
                }
                Err(e) => self.report(Some(&span), format!("header_files {name:?}: {e}")),
            }
        }
    }

    /// The URL's `${...}`: expanded in the password, reported anywhere else.
    pub(super) fn url_secrets(&mut self, url: &mut Url, span: &Range<usize>) -> bool {
        match expand_url_password(url, self.env) {
            Ok(()) => true,
            Err(e) => {
                self.report(Some(span), e.to_string());
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::config::ConfigError;
    use crate::config::test_support::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn plain(template: &str, vars: &[(&str, &str)]) -> Result<String, ExpandError> {
        expand(template, &env_of(vars), verbatim)
    }

    #[test]
    fn a_reference_is_replaced_by_the_variable_value() {
        let vars = [("TOKEN", "abc"), ("_X1", "y")];
        assert_eq!(plain("Bearer ${TOKEN}", &vars).as_deref(), Ok("Bearer abc"));
        assert_eq!(plain("${TOKEN}${_X1}", &vars).as_deref(), Ok("abcy"));
        assert_eq!(
            plain("no references", &vars).as_deref(),
            Ok("no references")
        );
    }

    #[test]
    fn a_double_dollar_is_a_literal_dollar_and_a_lone_dollar_stays() {
        let vars = [("A", "v")];
        assert_eq!(plain("$${A}", &vars).as_deref(), Ok("${A}"));
        assert_eq!(plain("$$$${A}", &vars).as_deref(), Ok("$${A}"));
        assert_eq!(plain("$$${A}", &vars).as_deref(), Ok("$v"));
        assert_eq!(plain("pa$word $", &vars).as_deref(), Ok("pa$word $"));
    }

    #[test]
    fn a_missing_or_empty_variable_is_an_error_naming_it() {
        assert_eq!(
            plain("x ${NOPE} y", &[]),
            Err(ExpandError::Unset("NOPE".into()))
        );
        assert_eq!(
            plain("${BLANK}", &[("BLANK", "")]),
            Err(ExpandError::Empty("BLANK".into()))
        );
        assert!(
            ExpandError::Unset("NOPE".into())
                .to_string()
                .contains("NOPE")
        );
    }

    #[test]
    fn a_variable_that_is_not_utf8_is_an_error_naming_it() {
        use std::os::unix::ffi::OsStringExt as _;
        let env = |_: &str| Some(OsString::from_vec(vec![0xff, 0xfe]));
        assert_eq!(
            expand("${BIN}", &env, verbatim),
            Err(ExpandError::NotUtf8("BIN".into()))
        );
    }

    #[test]
    fn an_unclosed_or_malformed_reference_is_an_error_that_does_not_echo_it() {
        assert_eq!(plain("${TOKEN", &[]), Err(ExpandError::Unclosed));
        for bad in ["${}", "${1X}", "${A-B}", "${ A}", "${secret value}"] {
            let err = plain(bad, &[]).expect_err(bad);
            assert_eq!(err, ExpandError::BadName, "{bad}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn expansion_does_not_recurse_into_values() {
        let vars = [("A", "${B}"), ("B", "no")];
        assert_eq!(plain("${A}", &vars).as_deref(), Ok("${B}"));
    }

    fn url_with(raw: &str, vars: &[(&str, &str)]) -> Result<Url, UrlSecretError> {
        let mut url = Url::parse(raw).expect("parses");
        expand_url_password(&mut url, &env_of(vars)).map(|()| url)
    }

    fn decoded_password(url: &Url) -> String {
        percent_encoding::percent_decode_str(url.password().expect("has a password"))
            .decode_utf8()
            .expect("utf-8")
            .into_owned()
    }

    #[test]
    fn a_url_password_reference_is_expanded_and_its_value_encoded() {
        let url = url_with(
            "http://probe:${PW}@127.0.0.1:8000/health",
            &[("PW", "p@ss:w/rd%41 {x}")],
        )
        .expect("expands");
        assert_eq!(decoded_password(&url), "p@ss:w/rd%41 {x}");
        assert_eq!(url.username(), "probe");
        assert_eq!(url.host_str(), Some("127.0.0.1"));
        assert_eq!(url.port(), Some(8000));
        assert_eq!(url.path(), "/health");
    }

    #[test]
    fn url_password_text_around_a_reference_keeps_its_meaning() {
        let url = url_with("http://u:a%40b-${PW}-$$@h/", &[("PW", "v")]).expect("expands");
        assert_eq!(decoded_password(&url), "a@b-v-$");
        // A literal password with a lone '$' is unchanged.
        let url = url_with("http://u:pa$word@h/", &[]).expect("no references");
        assert_eq!(decoded_password(&url), "pa$word");
    }

    #[test]
    fn a_reference_anywhere_else_in_a_url_is_an_error_that_says_so() {
        let vars = [("X", "v")];
        for (raw, part) in [
            ("http://${X}:pw@h/", "user name"),
            ("http://h/${X}/health", "path"),
            ("http://h/health?token=${X}", "query"),
            ("http://h/health#${X}", "fragment"),
            ("http://${X}/health", "host"),
        ] {
            let err = url_with(raw, &vars).expect_err(raw);
            assert_eq!(err, UrlSecretError::Misplaced(part), "{raw}");
            assert!(err.to_string().contains("only expanded in the password"));
        }
    }

    #[test]
    fn a_missing_url_password_variable_is_an_error_naming_it() {
        let err = url_with("http://u:${PROBE_PASSWORD}@h/", &[]).expect_err("unset");
        assert_eq!(
            err.to_string(),
            "url password: environment variable PROBE_PASSWORD is not set"
        );
    }

    #[test]
    fn a_url_parse_error_hints_at_references_only_when_there_are_some() {
        assert!(url_parse_hint("http://h:${PORT}/").contains("only expanded in the password"));
        assert_eq!(url_parse_hint("http://h:x/"), "");
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("healthsweep-secrets-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_header_file_loses_one_trailing_newline_and_is_sensitive() {
        let dir = scratch("trim");
        for (content, want) in [
            ("Bearer abc\n", "Bearer abc"),
            ("Bearer abc\r\n", "Bearer abc"),
            ("Bearer abc", "Bearer abc"),
            ("  spaced  \n", "  spaced  "),
        ] {
            let path = dir.join("h");
            std::fs::write(&path, content).expect("write");
            let v = read_header_file(&path).expect(content);
            assert_eq!(v, want, "{content:?}");
            assert!(v.is_sensitive());
            assert_eq!(format!("{v:?}"), "Sensitive");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn header_file_errors_name_the_file_and_never_the_content() {
        let dir = scratch("errors");
        let missing = dir.join("missing");
        let err = read_header_file(&missing).expect_err("missing");
        assert!(matches!(err, HeaderFileError::Read { .. }), "{err}");
        assert!(err.to_string().contains(&missing.display().to_string()));

        // (file name, content, whether the error is an `Empty`, not a `NotAHeaderValue`)
        let cases: [(&str, &[u8], bool); 5] = [
            ("empty", b"", true),
            ("newline-only", b"\n", true),
            ("crlf-only", b"\r\n", true),
            ("two-lines", b"CANARY-one\nCANARY-two\n", false),
            ("control", b"CANARY\x01\n", false),
        ];
        for (name, content, empty) in cases {
            let path = dir.join(name);
            std::fs::write(&path, content).expect("write");
            let err = read_header_file(&path).expect_err(name);
            if empty {
                assert!(
                    matches!(err, HeaderFileError::Empty { .. }),
                    "{name}: {err:?}"
                );
            } else {
                assert!(
                    matches!(err, HeaderFileError::NotAHeaderValue { .. }),
                    "{name}: {err:?}"
                );
            }
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(!text.contains("CANARY"), "{text}");
        }

        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; MAX_HEADER_FILE_BYTES as usize + 1]).expect("write");
        assert!(matches!(
            read_header_file(&big),
            Err(HeaderFileError::TooLarge { .. })
        ));
        std::fs::write(&big, vec![b'a'; MAX_HEADER_FILE_BYTES as usize]).expect("write");
        assert!(read_header_file(&big).is_ok(), "exactly the limit is fine");

        let err = read_header_file(&dir).expect_err("a directory");
        assert!(matches!(err, HeaderFileError::NotAFile { .. }), "{err:?}");
        // Opening a FIFO would block until a writer comes: it is refused unopened.
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        let err = read_header_file(&fifo).expect_err("a FIFO");
        assert!(matches!(err, HeaderFileError::NotAFile { .. }), "{err:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Through the whole config.

    #[test]
    fn header_values_and_url_passwords_take_variables_from_the_environment() {
        let c = parse_env(
            r#"
            [defaults]
            headers = { "X-Team" = "team-${TEAM}", "X-Literal" = "cost: $$5 or $5" }
            [[service]]
            name = "a"
            url = "http://probe:${PROBE_PASSWORD}@127.0.0.1:8000/health"
            headers = { Authorization = "Bearer ${API_TOKEN}" }
            "#,
            &[
                ("TEAM", "blue"),
                ("API_TOKEN", "tok-123"),
                ("PROBE_PASSWORD", "p@ss:word/%"),
            ],
        )
        .expect("valid");
        let s = &c.services[0];
        assert_eq!(s.header("x-team").expect("set"), "team-blue");
        assert_eq!(s.header("x-literal").expect("set"), "cost: $5 or $5");
        let auth = s.header("authorization").expect("set");
        assert_eq!(auth, "Bearer tok-123", "a header wins over URL credentials");
        assert!(auth.is_sensitive());
        assert!(s.header("x-team").expect("set").is_sensitive());
        assert_eq!(s.redacted_url(), "http://REDACTED@127.0.0.1:8000/health");
        assert!(!format!("{:?}", s.extra.headers).contains("tok-123"));

        let c = parse_env(
            "[[service]]\nname = \"a\"\nurl = \"http://probe:${PROBE_PASSWORD}@127.0.0.1:8000/health\"\n",
            &[("PROBE_PASSWORD", "p@ss:word/%")],
        )
        .expect("valid");
        let s = &c.services[0];
        let basic = base64::engine::general_purpose::STANDARD.encode("probe:p@ss:word/%");
        let auth = s.header("authorization").expect("basic auth");
        assert_eq!(auth, format!("Basic {basic}").as_str());
        assert!(auth.is_sensitive());
        assert_eq!(s.redacted_url(), "http://REDACTED@127.0.0.1:8000/health");
        assert_eq!(s.target.port, 8000);
        assert_eq!(s.target.path_and_query, "/health");
    }

    #[test]
    fn a_missing_variable_is_a_problem_naming_it_the_service_and_the_line() {
        let p = problems_env(
            "[defaults]\nheaders = { \"X-Team\" = \"${TEAM}\" }\n\n[[service]]\nname = \"a\"\nurl = \"http://u:${PROBE_PASSWORD}@127.0.0.1/\"\n[[service]]\nname = \"b\"\nurl = \"http://127.0.0.1/\"\nheaders = { Authorization = \"Bearer ${API_TOKEN}\" }\n",
            &[("API_TOKEN", "")],
        );
        assert_eq!(p.len(), 3, "{p:#?}");
        assert_eq!(p[0].service, None);
        assert_eq!(p[0].location.map(|l| l.line), Some(2));
        assert_eq!(
            p[0].message,
            "header \"X-Team\": environment variable TEAM is not set"
        );
        assert_eq!(p[1].service.as_deref(), Some("a"));
        assert_eq!(p[1].location.map(|l| l.line), Some(6));
        assert_eq!(
            p[1].message,
            "url password: environment variable PROBE_PASSWORD is not set"
        );
        assert_eq!(p[2].service.as_deref(), Some("b"));
        assert_eq!(p[2].location.map(|l| l.line), Some(10));
        assert_eq!(
            p[2].message,
            "header \"Authorization\": environment variable API_TOKEN is empty"
        );
    }

    #[test]
    fn a_reference_outside_header_values_and_url_passwords_is_an_error_or_plain_text() {
        let p = problems_env(
            "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/${HEALTH_PATH}\"\n[[service]]\nname = \"b\"\nurl = \"http://127.0.0.1:${PORT}/\"\n",
            &[("HEALTH_PATH", "health"), ("PORT", "80")],
        );
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(
            p[0].message.contains("only expanded in the password") && p[0].message.contains("path"),
            "{}",
            p[0].message
        );
        assert!(
            p[1].message.starts_with("url is not a valid URL")
                && p[1].message.contains("only expanded in the password"),
            "{}",
            p[1].message
        );
        // Elsewhere in the file `${...}` is just text.
        let c = parse_env(
            "[[service]]\nname = \"a-${X}\"\nurl = \"http://127.0.0.1/\"\nexpect_body_contains = \"${X}\"\n",
            &[("X", "v")],
        )
        .expect("valid");
        assert_eq!(c.services[0].name, "a-${X}");
        assert_eq!(c.services[0].expect.body_contains.as_deref(), Some("${X}"));
    }

    #[test]
    fn an_expanded_value_that_is_not_valid_in_a_header_is_reported_without_it() {
        let p = problems_env(
            "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\nheaders = { \"X-Key\" = \"${KEY}\" }\n",
            &[("KEY", "CANARY\r\nInjected: yes")],
        );
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].message.contains("\"X-Key\""), "{}", p[0].message);
        assert!(!p[0].message.contains("CANARY"), "{}", p[0].message);
    }

    #[test]
    fn header_files_are_read_relative_to_the_config_and_merged_like_headers() {
        let s = Scratch::new(
            "header-files",
            &[
                (
                    "healthsweep.toml",
                    r#"
                    [defaults]
                    headers = { "X-Probe" = "healthsweep" }
                    header_files = { Authorization = "secrets/default-token", "X-Key" = "/ABS/key" }
                    [[service]]
                    name = "defaults-only"
                    url = "http://127.0.0.1/"
                    [[service]]
                    name = "own-file"
                    url = "http://127.0.0.1/"
                    header_files = { Authorization = "secrets/own-token" }
                    [[service]]
                    name = "own-inline"
                    url = "http://127.0.0.1/"
                    headers = { Authorization = "Bearer inline", "X-Probe" = "own" }
                    "#,
                ),
                ("secrets/default-token", "Bearer default\n"),
                ("secrets/own-token", "Bearer own\r\n"),
                ("abs/key", "key-1"),
            ],
        );
        let abs = s.0.join("abs/key");
        let config = std::fs::read_to_string(s.config())
            .expect("read")
            .replace("/ABS/key", abs.to_str().expect("utf-8 path"));
        s.write("healthsweep.toml", &config);
        let c = s.load().expect("valid");
        let [a, b, d] = &c.services[..] else {
            panic!("three services")
        };
        assert_eq!(a.header("authorization").expect("set"), "Bearer default");
        assert_eq!(a.header("x-key").expect("set"), "key-1");
        assert_eq!(a.header("x-probe").expect("set"), "healthsweep");
        assert!(a.header("authorization").expect("set").is_sensitive());
        assert_eq!(b.header("authorization").expect("set"), "Bearer own");
        assert!(b.header("authorization").expect("set").is_sensitive());
        assert_eq!(d.header("authorization").expect("set"), "Bearer inline");
        assert_eq!(d.header("x-probe").expect("set"), "own");
        assert_eq!(d.header("x-key").expect("set"), "key-1");

        // A reload reads the file again.
        s.write("secrets/default-token", "Bearer rotated\n");
        let c = s.load().expect("valid");
        assert_eq!(
            c.services[0].header("authorization").expect("set"),
            "Bearer rotated"
        );
    }

    #[test]
    fn header_file_problems_name_the_header_and_file_never_the_content() {
        let s = Scratch::new(
            "header-file-errors",
            &[
                (
                    "healthsweep.toml",
                    "[defaults]\nheader_files = { \"X-Empty\" = \"empty\" }\n\n[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\nheader_files = { \"X-Bad\" = \"bad\", \"X-Gone\" = \"gone\" }\n[[service]]\nname = \"b\"\nurl = \"http://127.0.0.1/\"\nheaders = { authorization = \"x\" }\nheader_files = { Authorization = \"bad\" }\n",
                ),
                ("empty", "\n"),
                ("bad", "CANARY-secret\u{1}\n"),
            ],
        );
        let err = s.load().expect_err("invalid");
        let ConfigError::Invalid { problems: p, .. } = &err else {
            panic!("validation problems: {err}")
        };
        assert_eq!(p.len(), 4, "{p:#?}");
        let dir = s.0.display().to_string();
        assert_eq!(p[0].service, None);
        assert_eq!(p[0].location.map(|l| l.line), Some(2));
        assert_eq!(
            p[0].message,
            format!("header_files \"X-Empty\": {dir}/empty is empty")
        );
        assert_eq!(p[1].service.as_deref(), Some("a"));
        assert!(
            p[1].message.starts_with(&format!(
                "header_files \"X-Bad\": {dir}/bad holds characters not valid"
            )),
            "{}",
            p[1].message
        );
        assert!(
            p[2].message
                .starts_with(&format!("header_files \"X-Gone\": {dir}/gone: cannot read")),
            "{}",
            p[2].message
        );
        assert_eq!(p[3].service.as_deref(), Some("b"));
        assert_eq!(p[3].location.map(|l| l.line), Some(12));
        assert_eq!(
            p[3].message,
            "header \"Authorization\" is set in both headers and header_files; keep one"
        );
        assert!(!err.to_string().contains("CANARY"), "{err}");
    }
}
