//! Reading a large config file's TOML a part at a time.
//!
//! toml parses a whole document into a token array, an event array and a tree of it before
//! anything is deserialized: about 1.4 KB for each `[[service]]` table, some 140 MB for a file
//! of 100,000 services, and during a reload that comes on top of the running config. So a
//! large file is cut into parts of about [`PART_BYTES`], each starting at a `[[service]]`
//! header line; each part is parsed, its spans moved to where it sits in the file, and its
//! tables deserialized before the next part is read.
//!
//! The result is the same as the whole file's (the tests compare the two over every fixture),
//! because a part is taken only when it cannot mean anything else:
//!
//! - a cut is at a line that is `[[service]]` alone, in a file without multi-line strings, so
//!   the line is a header (a line inside a multi-line array or inline table would leave the
//!   part before it unterminated, an error);
//! - every part after the first holds `service` tables and nothing else at its top level, so
//!   it only appends to the array (its `[service.x]` sub-tables belong to a table of its own,
//!   as in the whole file, because it starts with a header).
//!
//! Anything else, and any error at all, takes the whole file's parse instead, so the errors
//! people see are exactly the whole parse's.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::raw::{RawConfig, RawService, RawServicesFile};

/// A file is parsed in parts of about this many bytes (some 3,000 plain `[[service]]` tables);
/// a smaller file is parsed whole.
const PART_BYTES: usize = 256 * 1024;

/// A document whose `[[service]]` tables may be parsed a part at a time.
pub(super) trait WithServices: DeserializeOwned {
    fn services(&mut self) -> &mut Vec<Spanned<RawService>>;
}

impl WithServices for RawConfig {
    fn services(&mut self) -> &mut Vec<Spanned<RawService>> {
        &mut self.services
    }
}

impl WithServices for RawServicesFile {
    fn services(&mut self) -> &mut Vec<Spanned<RawService>> {
        &mut self.services
    }
}

/// `toml::from_str`, a part at a time when `text` is large.
pub(super) fn from_str<T: WithServices>(text: &str) -> Result<T, toml::de::Error> {
    from_str_in_parts(text, PART_BYTES)
}

fn from_str_in_parts<T: WithServices>(text: &str, part_bytes: usize) -> Result<T, toml::de::Error> {
    let cuts = Cuts::of(text, part_bytes);
    if cuts.at.is_empty() {
        return toml::from_str(text);
    }
    match in_parts(text, &cuts) {
        Some(parsed) => Ok(parsed),
        None => toml::from_str(text),
    }
}

/// Where a file is cut into parts.
struct Cuts {
    /// Where parts after the first start: at `[[service]]` lines (not the first one) at least
    /// `part_bytes` after the part before began. None in a file with a multi-line string,
    /// where any line may be inside one.
    at: Vec<usize>,
    /// The `[[service]]` lines: the tables to make room for (those whose header is written
    /// another way are a few more).
    headers: usize,
}

impl Cuts {
    fn of(text: &str, part_bytes: usize) -> Cuts {
        let mut cuts = Cuts {
            at: Vec::new(),
            headers: 0,
        };
        if text.len() <= part_bytes || text.contains("\"\"\"") || text.contains("'''") {
            return cuts;
        }
        let (mut part_start, mut at) = (0, 0);
        for line in text.split_inclusive('\n') {
            if line.trim() == "[[service]]" {
                if cuts.headers > 0 && at - part_start >= part_bytes {
                    cuts.at.push(at);
                    part_start = at;
                }
                cuts.headers += 1;
            }
            at += line.len();
        }
        cuts
    }
}

/// A part after the first: `service` tables and nothing else (any other key is an error, and
/// the whole file is parsed instead).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Part {
    #[serde(rename = "service")]
    services: Vec<Spanned<RawService>>,
}

/// `text` parsed a part at a time, parts starting at `cuts`; None when that is not sure to be
/// what the whole file says (or the file is wrong).
fn in_parts<T: WithServices>(text: &str, cuts: &Cuts) -> Option<T> {
    let mut parsed: T = toml::from_str(text.get(..*cuts.at.first()?)?).ok()?;
    // Room for all of them at once: grown by doubling, the array would be the old one and the
    // new one twice its size for a moment (a table is ~370 bytes: 72 MB at 100,000, not 37).
    let services = parsed.services();
    services.reserve(cuts.headers.saturating_sub(services.len()));
    let ends = cuts
        .at
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(text.len()));
    for (start, end) in cuts.at.iter().copied().zip(ends) {
        let table = moved(DeTable::parse(text.get(start..end)?).ok()?, start);
        let table = Spanned::new(table.span(), shifted_table(table.into_inner(), start));
        let part = Part::deserialize(toml::de::Deserializer::from(table)).ok()?;
        parsed.services().extend(part.services);
    }
    Some(parsed)
}

/// `value`, its span `by` bytes later.
fn moved<T>(value: Spanned<T>, by: usize) -> Spanned<T> {
    let span = value.span();
    Spanned::new(span.start + by..span.end + by, value.into_inner())
}

/// `table` with every span in it `by` bytes later.
fn shifted_table(table: DeTable<'_>, by: usize) -> DeTable<'_> {
    table
        .into_iter()
        .map(|(key, value)| (moved(key, by), shifted(value, by)))
        .collect()
}

/// `value` with its span and every span in it `by` bytes later. Nesting is bounded by the
/// parser (it refuses documents nested deeper than 80).
fn shifted(value: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = value.span();
    let inner = match value.into_inner() {
        DeValue::Array(items) => {
            DeValue::Array(items.into_iter().map(|v| shifted(v, by)).collect())
        }
        DeValue::Table(table) => DeValue::Table(shifted_table(table, by)),
        scalar => scalar,
    };
    Spanned::new(span.start + by..span.end + by, inner)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// The whole parse and the parse in parts (cut at every header), as text to compare:
    /// the parsed document with every span, or the error.
    fn both<T: WithServices + std::fmt::Debug>(text: &str) -> (String, String) {
        let show = |r: Result<T, toml::de::Error>| match r {
            Ok(v) => format!("{v:#?}"),
            Err(e) => format!("error: {e}"),
        };
        (
            show(toml::from_str::<T>(text)),
            show(from_str_in_parts::<T>(text, 1)),
        )
    }

    fn assert_same<T: WithServices + std::fmt::Debug>(name: &str, text: &str) {
        let (whole, parts) = both::<T>(text);
        assert_eq!(
            whole, parts,
            "{name}: parsed in parts differs from the whole"
        );
    }

    fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("fixture dir readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                toml_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_fixture_parses_in_parts_exactly_as_whole() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        toml_files(&root.join("src/config/testdata"), &mut files);
        toml_files(&root.join("config"), &mut files);
        assert!(files.len() > 50, "fixtures found: {}", files.len());
        let mut cut = 0;
        for path in &files {
            let text = std::fs::read_to_string(path).expect("fixture readable");
            let name = path.display().to_string();
            assert_same::<RawConfig>(&name, &text);
            assert_same::<RawServicesFile>(&name, &text);
            cut += usize::from(!Cuts::of(&text, 1).at.is_empty());
        }
        assert!(
            cut > 5,
            "only {cut} fixtures have two [[service]] lines to cut at"
        );
    }

    const THREE: &str = "[daemon]\ninterval = \"10s\"\n\n[[service]]\nname = \"a\"\nurl = \"http://a/\"\n\n[[service]]\nname = \"b\"\nurl = \"http://b/\"\n[service.headers]\nx = \"1\"\n\n[[service]]\nname = \"c\"\nurl = \"http://c/\"\n";

    #[test]
    fn parts_are_cut_at_headers_after_the_first_and_keep_every_span() {
        let cuts = Cuts::of(THREE, 1);
        assert_eq!((cuts.at.len(), cuts.headers), (2, 3));
        assert!(
            Cuts::of(THREE, THREE.len()).at.is_empty(),
            "a small file is parsed whole"
        );
        let parsed: RawConfig = from_str_in_parts(THREE, 1).expect("valid");
        let names: Vec<_> = parsed.services.iter().map(|s| &THREE[s.span()]).collect();
        assert_eq!(names, ["[[service]]"; 3]);
        let b = parsed.services[1].get_ref();
        let url = b.url.as_ref().expect("b has a url");
        assert_eq!(&THREE[url.span()], "\"http://b/\"");
        assert_same::<RawConfig>("three", THREE);
    }

    #[test]
    fn what_a_part_could_misread_is_parsed_whole_with_the_whole_files_answer() {
        let cases = [
            // A `[[service]]` line inside a multi-line array: the file is wrong either way.
            "[[service]]\nname = \"a\"\nurl = \"http://a/\"\nexpect_status = [\n[[service]]\n]\n",
            // A table other than `service` after a cut: `[defaults]` twice is an error only
            // the whole file sees.
            "[defaults]\ntimeout = \"1s\"\n[[service]]\nname = \"a\"\nurl = \"http://a/\"\n[[service]]\nname = \"b\"\nurl = \"http://b/\"\n[defaults]\ntimeout = \"2s\"\n",
            // ... and valid, once.
            "[[service]]\nname = \"a\"\nurl = \"http://a/\"\n[[service]]\nname = \"b\"\nurl = \"http://b/\"\n[defaults]\ntimeout = \"2s\"\n",
            // A static array of services before the headers.
            "service = [{ name = \"a\", url = \"http://a/\" }]\n[[service]]\nname = \"b\"\nurl = \"http://b/\"\n[[service]]\nname = \"c\"\nurl = \"http://c/\"\n",
            // `[service]` as a table after a cut.
            "[[service]]\nname = \"a\"\nurl = \"http://a/\"\n[[service]]\nname = \"b\"\nurl = \"http://b/\"\n[service]\nname = \"c\"\n",
            // A multi-line string anywhere: never cut.
            "[[service]]\nname = \"a\"\nurl = \"http://a/\"\nbody = \"\"\"\n[[service]]\n\"\"\"\n[[service]]\nname = \"b\"\nurl = \"http://b/\"\n",
            // CRLF line ends, a header with spaces around it, and a duplicate key in a part.
            "[[service]]\r\nname = \"a\"\r\nurl = \"http://a/\"\r\n  [[service]]  \r\nname = \"b\"\r\nurl = \"http://b/\"\r\n",
            "[[service]]\nname = \"a\"\nurl = \"http://a/\"\n[[service]]\nname = \"b\"\nname = \"b\"\n",
            // An unknown key in a later part: the whole file's message and line.
            "[[service]]\nname = \"a\"\nurl = \"http://a/\"\n[[service]]\nname = \"b\"\nurl = \"http://b/\"\nnope = 1\n",
            // Sub-tables and an array of tables inside a service of a later part.
            "[[service]]\nname = \"a\"\nurl = \"http://a/\"\n[[service]]\nname = \"b\"\nurl = \"http://b/\"\n[service.labels]\nteam = \"x\"\n[service.expect_json]\n\"/a\" = [1, { b = 2 }]\n",
        ];
        for (i, text) in cases.iter().enumerate() {
            assert_same::<RawConfig>(&format!("case {i}"), text);
            assert_same::<RawServicesFile>(&format!("case {i}"), text);
        }
        let (whole, _) = both::<RawConfig>(cases[1]);
        assert!(whole.starts_with("error:"), "{whole}");
        let (whole, _) = both::<RawConfig>(cases[2]);
        assert!(!whole.starts_with("error:"), "{whole}");
    }
}
