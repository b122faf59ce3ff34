//! Config errors: every one names the file, the line and column where there is one, and the
//! service it concerns, so `healthsweep validate` output can be acted on without guessing.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A position in the config file, 1-based, counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The line and column of byte `offset` in `source`.
    pub fn of_offset(source: &str, offset: usize) -> Self {
        let offset = offset.min(source.len());
        // Back off to a char boundary so slicing cannot panic on a span inside a UTF-8 sequence.
        let offset = (0..=offset)
            .rev()
            .find(|&i| source.is_char_boundary(i))
            .unwrap_or(0);
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { line, column }
    }

    /// The location where `span` starts.
    pub fn of_span(source: &str, span: &Range<usize>) -> Self {
        Self::of_offset(source, span.start)
    }
}

/// Line starts of a source text, so locating many spans costs a binary search each instead of a
/// scan from the top (a 100,000-service file has as many spans).
#[derive(Debug)]
pub struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { source, starts }
    }

    /// The text the lines are of.
    pub fn text(&self) -> &'a str {
        self.source
    }

    /// The location of byte `offset`.
    pub fn locate(&self, offset: usize) -> Location {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = (start..=offset)
            .rev()
            .find(|&i| self.source.is_char_boundary(i))
            .map_or(0, |end| self.source[start..end].chars().count());
        Location {
            line,
            column: column + 1,
        }
    }
}

/// One thing wrong with a config that parsed as TOML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file it is in when that is not the main config file: a file of `services_dir`.
    pub file: Option<PathBuf>,
    /// Where in the file, when the value came from the file (defaults have no location).
    pub location: Option<Location>,
    /// The `[[service]]` it is about, by name, or `None` for `[daemon]` / `[defaults]`.
    pub service: Option<String>,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(loc) = self.location {
            write!(f, "line {}, column {}: ", loc.line, loc.column)?;
        }
        if let Some(service) = &self.service {
            write!(f, "service {service:?}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be loaded. The running daemon keeps its previous config on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read config: {}", path.display(), source.reason())]
    Read {
        path: PathBuf,
        #[source]
        source: super::read::ReadError,
    },
    /// The file is not valid TOML, or does not have the expected shape (wrong type, unknown key).
    #[error("{}{}: {message}", path.display(), location.map(|l| format!(":{}:{}", l.line, l.column)).unwrap_or_default())]
    Parse {
        path: PathBuf,
        location: Option<Location>,
        message: String,
    },
    /// The file parsed but its values are not acceptable; every problem found is listed.
    #[error("{}: {} problem{} in config:\n{}", path.display(), problems.len(), if problems.len() == 1 { "" } else { "s" }, list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// Each problem as one line prefixed with its file (the main file unless the problem
    /// names another), for logs, `validate` output and the reload API.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { path, problems } => problems
                .iter()
                .map(|p| match p.file {
                    Some(_) => p.to_string(),
                    None => format!("{}: {p}", path.display()),
                })
                .collect(),
            other => vec![other.to_string()],
        }
    }

    /// Builds a [`ConfigError::Parse`] from a toml error, turning its byte span into a line.
    pub(crate) fn from_toml(path: &Path, source: &str, err: &toml::de::Error) -> Self {
        let location = err.span().map(|span| Location::of_span(source, &span));
        ConfigError::Parse {
            path: path.to_path_buf(),
            location,
            message: toml_message(source, err),
        }
    }
}

/// A parser message for people: the key it is about first (when the value's line names it),
/// and no value it quotes.
pub(crate) fn toml_message(source: &str, err: &toml::de::Error) -> String {
    let message = without_values(err.message().trim());
    match err.span().and_then(|span| key_before(source, span.start)) {
        Some(key) if message.starts_with("invalid") => format!("{key}: {message}"),
        _ => message,
    }
}

/// The key a value at `offset` is assigned to, when the text before it on its line is
/// `key =` (also inside an inline table: `labels = { team = `).
fn key_before(source: &str, offset: usize) -> Option<&str> {
    let before = source.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let assigned = line.trim_end().strip_suffix('=')?;
    let key = assigned
        .rsplit(['{', ','])
        .next()
        .unwrap_or(assigned)
        .trim();
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\''));
    plain.then_some(key)
}

/// A parser message with every value it quotes taken out, keeping the kinds: serde writes
/// `invalid type: string "Authorization: Bearer SECRET", expected a map`, and a value in the
/// wrong place is as likely to be a secret as anything else in the file. Key names stay (they
/// are what to fix).
pub(crate) fn without_values(message: &str) -> String {
    use std::sync::LazyLock;
    // serde's `Unexpected` forms: `string "..."` (Debug-escaped), `integer `1``, etc., and
    // `unknown variant `...``.
    static STRING: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r#"string "(?:[^"\\]|\\.)*""#).expect("a valid pattern")
    });
    static SCALAR: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"(integer|floating point|boolean|character|unknown variant) `[^`]*`")
            .expect("a valid pattern")
    });
    let message = STRING.replace_all(message, "string");
    SCALAR.replace_all(&message, "$1").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_of_a_value_is_found_on_its_line() {
        let src = "[defaults]\nheaders = \"x\"\nlabels = { team = 5 }\n";
        assert_eq!(
            key_before(src, src.find("\"x").expect("value")),
            Some("headers")
        );
        assert_eq!(key_before(src, src.find('5').expect("value")), Some("team"));
        assert_eq!(key_before(src, 0), None);
    }

    #[test]
    fn parser_messages_keep_kinds_and_keys_but_no_values() {
        assert_eq!(
            without_values(
                r#"invalid type: string "Authorization: Bearer SECRET", expected a map"#
            ),
            "invalid type: string, expected a map"
        );
        assert_eq!(
            without_values(r#"invalid type: string "a \"quoted\" SECRET", expected u8"#),
            "invalid type: string, expected u8"
        );
        assert_eq!(
            without_values("invalid type: integer `12345`, expected a string"),
            "invalid type: integer, expected a string"
        );
        assert_eq!(
            without_values("unknown variant `hunter2`, expected `a` or `b`"),
            "unknown variant, expected `a` or `b`"
        );
        assert_eq!(
            without_values("unknown field `hedaers`, expected one of `headers`"),
            "unknown field `hedaers`, expected one of `headers`"
        );
    }

    #[test]
    fn location_counts_lines_and_columns_from_one() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(Location::of_offset(src, 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of_offset(src, 6), Location { line: 2, column: 1 });
        assert_eq!(Location::of_offset(src, 9), Location { line: 2, column: 4 });
    }

    #[test]
    fn the_line_index_agrees_with_a_scan_from_the_top() {
        let src = "a = 1\nbé = 2\n\nc = \"x\"\n";
        let index = LineIndex::new(src);
        for offset in 0..=src.len() + 2 {
            assert_eq!(
                index.locate(offset),
                Location::of_offset(src, offset),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn location_of_an_offset_inside_a_multibyte_char_does_not_panic() {
        let src = "é = 1";
        assert_eq!(Location::of_offset(src, 1), Location { line: 1, column: 1 });
        assert_eq!(Location::of_offset(src, 999).line, 1);
    }
}
