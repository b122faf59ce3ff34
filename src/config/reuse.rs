//! Reusing the running config's services on a reload. A `[[service]]` table whose text is
//! byte for byte what it was, in the same file, with everything else in that file and in the
//! main file (`[daemon]`, `[defaults]`, comments) unchanged too, validates to the same service:
//! the reload takes the running one (the same `Arc`) instead of parsing its URL and building it
//! again. At 100,000 services where one changed, that is most of a reload's work and memory.
//!
//! Only text decides, so a service is never reused when something outside the text can change
//! what it becomes: a `$` in its table (`${NAME}` from the environment), a `file` in it
//! (`header_files`, whose files may have been rotated), a backslash (an escape may spell
//! either), a sub-table of it written after another table (then not in its text), TLS (its client reads certificate files
//! and the system's roots), `depends_on` (it keeps the file and place it was written at, for
//! errors), or `[defaults]` with `$` or a file. Those are validated again at every load, as
//! they always were.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use xxhash_rust::xxh64::Xxh64;

use super::Service;

/// What a service's validation depends on, as a 64-bit digest; 0 is no key. A reused service
/// is taken on its key and its name: two of 100,000 keys collide by chance in fewer than
/// one reload in 10^9, and even then only a service's running version of the same name could
/// stand in for it, which whoever writes its table could have written anyway.
pub(super) type Key = u64;

/// The running config's reusable services, by key.
#[derive(Default)]
pub(super) struct Reuse {
    by_key: HashMap<Key, Arc<Service>, foldhash::fast::RandomState>,
}

impl Reuse {
    /// The services of `previous` that may be reused (those made from a file's text).
    pub(super) fn of(previous: &[Arc<Service>]) -> Reuse {
        let mut by_key = HashMap::with_capacity_and_hasher(previous.len(), Default::default());
        for s in previous.iter().filter(|s| s.reuse_key != 0) {
            by_key.insert(s.reuse_key, s.clone());
        }
        Reuse { by_key }
    }

    /// The running service for `key`, if there is one and it is named `name`.
    pub(super) fn take(&mut self, key: Key, name: &str) -> Option<Arc<Service>> {
        let found = self.by_key.remove(&key)?;
        (*found.name == *name).then_some(found)
    }
}

/// Where each `[[service]]` table of `text` is, from toml's spans of them (`spans`, in file
/// order); `None` when that cannot be told for sure, and nothing in the file is reused.
///
/// toml's span of a `[[service]]` table is its header alone, so a table runs from its header to
/// the line that starts the next top-level table (see [`Line`]). A table that ended early would
/// leave part of a service to the file's context, where the same text after another table
/// would mean something else; one that ended late would take a `[defaults]` out of the
/// context. So a file with a multi-line string (in which any line may look like a header) or a
/// line that may or may not be a header is not reused from. An inline table's span
/// (`service = [{ ... }]`) is the whole table already.
pub(super) fn tables(text: &str, spans: &[Range<usize>]) -> Option<Vec<Range<usize>>> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    let mut out = Vec::with_capacity(spans.len());
    for (i, span) in spans.iter().enumerate() {
        let limit = spans.get(i + 1).map_or(text.len(), |next| next.start);
        let header = text.get(span.clone())?;
        if !header.starts_with("[[") {
            out.push(span.clone());
            continue;
        }
        let mut end = limit;
        let mut at = span.end;
        while let Some(n) = text.get(at..limit)?.find('\n') {
            at += n + 1;
            match Line::of(text.get(at..limit)?) {
                Line::Inside | Line::SubTable => {}
                Line::Header => {
                    end = at;
                    break;
                }
                Line::Unsure => return None,
            }
        }
        out.push(span.start..end);
    }
    // What lies between the tables is the file's context. A `[service.x]` there (written
    // after `[defaults]`, say) still belongs to the last service before it, whose text would
    // then not hold all of it: nothing is reused from such a file.
    let mut at = 0;
    for t in out.iter().chain(std::iter::once(&(text.len()..text.len()))) {
        if !text.get(at..t.start).is_none_or(is_context) {
            return None;
        }
        at = at.max(t.end);
    }
    Some(out)
}

/// Whether `gap`, text between `[[service]]` tables that starts a line, holds only other
/// tables: no sub-table of a service and no line that may or may not be a header.
fn is_context(gap: &str) -> bool {
    let starts = std::iter::once(0).chain(gap.match_indices('\n').map(|(i, _)| i + 1));
    starts
        .filter_map(|start| gap.get(start..))
        .all(|line| matches!(Line::of(line), Line::Inside | Line::Header))
}

/// What a line of a file of services is, as far as where tables end goes.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Part of the table: a key, a comment, a value going on.
    Inside,
    /// A sub-table of the last service (`[service.labels]`): part of the table when it
    /// follows one; after another table, still part of the last service.
    SubTable,
    /// The header of another top-level table: the service ends before it.
    Header,
    /// `[` then a quote: a quoted table name, or a string in an array going on.
    Unsure,
}

impl Line {
    fn of(rest_of_text: &str) -> Line {
        let line = rest_of_text.trim_start_matches([' ', '\t']);
        let Some(inner) = line.strip_prefix('[') else {
            return Line::Inside;
        };
        let inner = inner
            .strip_prefix('[')
            .unwrap_or(inner)
            .trim_start_matches([' ', '\t']);
        let word_end = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(inner.len());
        let (word, after) = inner.split_at(word_end);
        let after = after.trim_start_matches([' ', '\t']);
        match word {
            // A sub-table of the last service, or the next service.
            "service" if after.starts_with('.') => Line::SubTable,
            "service" | "daemon" | "defaults" | "discover" | "maintenance"
                if after.starts_with(['.', ']']) =>
            {
                Line::Header
            }
            // A bare word that is no value: a header of a table the config does not have
            // (refused by validation anyway).
            w if !w.is_empty()
                && !matches!(w, "true" | "false" | "inf" | "nan")
                && !w.starts_with(|c: char| c.is_ascii_digit() || c == '-') =>
            {
                Line::Header
            }
            _ if after.starts_with(['"', '\'']) || inner.starts_with(['"', '\'']) => Line::Unsure,
            // A number, an array or table, a boolean: an array's value going on.
            _ => Line::Inside,
        }
    }
}

/// The digest of a file's text outside its `[[service]]` tables (`tables`, in file order),
/// seeded with `parent`'s (the main file's, for a file of `services_dir`).
pub(super) fn context(text: &str, tables: &[Range<usize>], parent: Key) -> Key {
    let mut d = Xxh64::new(0);
    d.update(&parent.to_le_bytes());
    let mut at = 0;
    for t in tables {
        // A span out of order or out of the text (never from toml) only hashes less.
        // The gaps hold only the text before the first table and other top-level tables,
        // which mean the same wherever they stand: services may come and go between them.
        if let Some(gap) = text.get(at..t.start) {
            d.update(gap.as_bytes());
        }
        at = at.max(t.end);
    }
    if let Some(rest) = text.get(at..) {
        d.update(rest.as_bytes());
    }
    d.digest()
}

/// Whether text of the config can make a service depend on more than the text itself. A
/// backslash counts: an escape can spell `$` (`\u0024`) or a key (`"header_\u0066iles"`)
/// the text does not show.
pub(super) fn reads_outside(text: &str) -> bool {
    text.contains('$') || text.contains("file") || text.contains('\\')
}

/// The key of the service made from `table` (its text) in the file at `path` with `context`;
/// `None` when the table reads outside its text.
pub(super) fn key(context: Key, path: &Path, table: &str) -> Option<Key> {
    if reads_outside(table) {
        return None;
    }
    let mut d = Xxh64::new(0);
    d.update(&context.to_le_bytes());
    d.update(path.as_os_str().as_encoded_bytes());
    d.update(b"\0");
    d.update(table.as_bytes());
    Some(d.digest().max(1))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::test_support::*;
    use crate::config::*;

    const HEAD: &str = "[daemon]\ninterval = \"10s\"\n\n[defaults]\ntimeout = \"2s\"\n\n";

    fn reload(before: &str, after: &str) -> (Config, Config) {
        let first = parse_str(before).expect("valid before");
        let second = parse_reusing(Path::new("test.toml"), after, &first).expect("valid after");
        (first, second)
    }

    fn same(a: &Config, b: &Config, name: &str) -> bool {
        let find = |c: &Config| {
            c.services
                .iter()
                .find(|s| &*s.name == name)
                .unwrap_or_else(|| panic!("no {name}"))
                .clone()
        };
        Arc::ptr_eq(&find(a), &find(b))
    }

    #[test]
    fn unchanged_services_are_the_running_ones_and_a_changed_one_is_new() {
        let before = format!("{HEAD}{}", fleet(3));
        let after = before.replacen(
            "name = \"svc-1\"\nurl = \"http://127.0.0.1/\"",
            "name = \"svc-1\"\nurl = \"http://127.0.0.1/changed\"",
            1,
        );
        let (a, b) = reload(&before, &after);
        assert!(same(&a, &b, "svc-0") && same(&a, &b, "svc-2"));
        assert!(!same(&a, &b, "svc-1"));
        let changed = b
            .services
            .iter()
            .find(|s| &*s.name == "svc-1")
            .expect("svc-1");
        assert_eq!(&*changed.url, "http://127.0.0.1/changed");
        // And a reload of that reuses the new one in turn.
        let c = parse_reusing(Path::new("test.toml"), &after, &b).expect("valid");
        assert!(same(&b, &c, "svc-1"));
    }

    #[test]
    fn a_service_moved_down_the_file_is_still_reused() {
        let before = format!("{HEAD}{}", fleet(2));
        let after = before.replacen(
            "[[service]]",
            "[[service]]\nname = \"new\"\nurl = \"http://127.0.0.1/new\"\n\n[[service]]",
            1,
        );
        let (a, b) = reload(&before, &after);
        assert!(same(&a, &b, "svc-0") && same(&a, &b, "svc-1"));
        assert_eq!(b.services.len(), 3);
    }

    #[test]
    fn a_change_outside_the_tables_reuses_nothing() {
        let before = format!("{HEAD}{}", fleet(2));
        for after in [
            before.replace("timeout = \"2s\"", "timeout = \"3s\""),
            before.replace("interval = \"10s\"", "interval = \"20s\""),
            format!("# a comment\n{before}"),
        ] {
            let (a, b) = reload(&before, &after);
            assert!(!same(&a, &b, "svc-0") && !same(&a, &b, "svc-1"), "{after}");
        }
        let (_, b) = reload(
            &before,
            &before.replace("timeout = \"2s\"", "timeout = \"3s\""),
        );
        assert!(
            b.services
                .iter()
                .all(|s| s.timeout == Duration::from_secs(3))
        );
    }

    #[test]
    fn services_reading_the_environment_files_or_tls_are_made_again() {
        let before = format!(
            "{HEAD}{}\
             [[service]]\nname = \"env\"\nurl = \"http://u:${{PW}}@127.0.0.1/\"\n\
             [[service]]\nname = \"tls\"\nurl = \"https://127.0.0.1/\"\n\
             [[service]]\nname = \"dep\"\nurl = \"http://127.0.0.1/d\"\ndepends_on = [\"svc-0\"]\n",
            fleet(1)
        );
        let first = parse_env(&before, &[("PW", "one")]).expect("valid");
        let env = |name: &str| (name == "PW").then(|| std::ffi::OsString::from("two"));
        let reuse = Reuse::of(&first.services);
        let second =
            parse_whole_reusing(Path::new("test.toml"), &before, &env, reuse).expect("valid");
        assert!(same(&first, &second, "svc-0"));
        for made_again in ["env", "tls", "dep"] {
            assert!(!same(&first, &second, made_again), "{made_again}");
        }
        let env_service = second
            .services
            .iter()
            .find(|s| &*s.name == "env")
            .expect("env");
        assert_eq!(
            env_service.header("authorization").expect("basic auth"),
            "Basic dTp0d28=",
            "the new value of PW"
        );
    }

    #[test]
    fn defaults_that_read_outside_the_text_reuse_nothing() {
        let before = format!(
            "[defaults]\nheaders = {{ x-token = \"${{TOKEN}}\" }}\n\n{}",
            fleet(2)
        );
        let first = parse_env(&before, &[("TOKEN", "t")]).expect("valid");
        let env = |name: &str| (name == "TOKEN").then(|| std::ffi::OsString::from("u"));
        let reuse = Reuse::of(&first.services);
        let second =
            parse_whole_reusing(Path::new("test.toml"), &before, &env, reuse).expect("valid");
        assert!(!same(&first, &second, "svc-0"));
        assert_eq!(second.services[0].header("x-token").expect("header"), "u");
    }

    #[test]
    fn services_dir_files_are_reused_from_file_by_file() {
        let main = "[daemon]\nservices_dir = \"services.d\"\n";
        let one = "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/a\"\n";
        let two = "[[service]]\nname = \"b\"\nurl = \"http://127.0.0.1/b\"\n";
        let dir = Scratch::new(
            "reuse",
            &[
                ("healthsweep.toml", main),
                ("services.d/one.toml", one),
                ("services.d/two.toml", two),
            ],
        );
        let first = dir.load().expect("valid");
        dir.write("services.d/two.toml", &two.replace("/b", "/b2"));
        let second = reload_dir(&dir, &first);
        assert!(same(&first, &second, "a"), "its file did not change");
        assert!(!same(&first, &second, "b"));
        // The same table moved to another file is made again: keys are per file, as relative
        // paths in a file are relative to it.
        std::fs::remove_file(dir.0.join("services.d/one.toml")).expect("rm");
        dir.write("services.d/three.toml", one);
        let third = reload_dir(&dir, &second);
        assert!(!same(&second, &third, "a") && same(&second, &third, "b"));
        // A change in the main file reaches the files of services_dir.
        dir.write(
            "healthsweep.toml",
            &format!("{main}[defaults]\ntimeout = \"1s\"\n"),
        );
        let fourth = reload_dir(&dir, &third);
        assert!(!same(&third, &fourth, "a") && !same(&third, &fourth, "b"));
    }

    #[test]
    fn a_key_is_taken_only_for_the_same_name_and_only_once() {
        let c = parse_str(&fleet(1)).expect("valid");
        let key = c.services[0].reuse_key;
        assert_ne!(key, 0, "reusable");
        let mut reuse = Reuse::of(&c.services);
        assert!(reuse.take(key, "other").is_none());
        let mut reuse_again = Reuse::of(&c.services);
        assert!(reuse_again.take(key, "svc-0").is_some());
        assert!(reuse_again.take(key, "svc-0").is_none());
    }

    #[test]
    fn a_table_runs_to_the_next_table_header_sub_tables_included() {
        let text = "[daemon]\ninterval = \"5s\"\n[[service]]\nname = \"a\"\n[service.labels]\nteam = \"x\"\n\n[[service]]\nname = \"b\"\n[defaults]\ntimeout = \"1s\"\n";
        let raw: crate::config::raw::RawConfig = toml::from_str(text).expect("toml");
        let spans: Vec<_> = raw.services.iter().map(toml::Spanned::span).collect();
        let t = tables(text, &spans).expect("told for sure");
        assert_eq!(
            &text[t[0].clone()],
            "[[service]]\nname = \"a\"\n[service.labels]\nteam = \"x\"\n\n"
        );
        assert_eq!(
            &text[t[1].clone()],
            "[[service]]\nname = \"b\"\n",
            "[defaults] is not b's"
        );
        let inline = "service = [{ name = \"a\", url = \"http://h/\" }]\n";
        let raw: crate::config::raw::RawConfig = toml::from_str(inline).expect("toml");
        let spans: Vec<_> = raw.services.iter().map(toml::Spanned::span).collect();
        assert_eq!(tables(inline, &spans), Some(spans));
        // Multi-line strings, or a line that may be a quoted header: nothing is reused.
        for unsure in [
            "[[service]]\nname = \"a\"\nbody = \"\"\"\n[daemon]\n\"\"\"\n",
            "[[service]]\nname = \"a\"\n[\"defaults\"]\ntimeout = \"1s\"\n",
        ] {
            let raw: crate::config::raw::RawConfig = toml::from_str(unsure).expect("toml");
            let spans: Vec<_> = raw.services.iter().map(toml::Spanned::span).collect();
            assert_eq!(tables(unsure, &spans), None, "{unsure}");
        }
    }

    #[test]
    fn lines_are_told_apart() {
        use super::Line::*;
        for (line, kind) in [
            ("[daemon]", Header),
            ("  [ defaults ]  # c", Header),
            ("[[discover]]", Header),
            ("[daemon.auth]", Header),
            ("[[service]]", Header),
            ("[ [service]]", Inside),
            ("[service.labels]", SubTable),
            ("[[service.x]]", SubTable),
            ("[ service . labels ]", SubTable),
            ("[200, 204],", Inside),
            ("[true]", Inside),
            ("[1.5, 2]", Inside),
            ("[-1, 2]", Inside),
            ("[-inf]", Inside),
            ("[1979-05-27]", Inside),
            ("[[1], [2]]", Inside),
            ("[\"defaults\"]", Unsure),
            ("['a', 'b'],", Unsure),
            ("[ \"x\" ]", Unsure),
            ("[other]", Header),
            ("name = \"[daemon]\"", Inside),
        ] {
            assert_eq!(super::Line::of(line), kind, "{line}");
        }
    }

    #[test]
    fn defaults_written_after_the_services_are_context_too() {
        let before = format!("{}[defaults]\ntimeout = \"2s\"\n", fleet(2));
        let after = before.replace("\"2s\"", "\"3s\"");
        let (a, b) = reload(&before, &after);
        assert!(!same(&a, &b, "svc-0") && !same(&a, &b, "svc-1"));
        assert!(
            b.services
                .iter()
                .all(|s| s.timeout == Duration::from_secs(3))
        );
    }

    #[test]
    fn the_context_follows_every_byte_outside_the_tables() {
        let text = "a\n[[service]]\nx\n[[service]]\ny\nb";
        let tables = [2..16, 16..30];
        let base = context(text, &tables, 0);
        assert_eq!(
            base,
            context("a\n[[service]]\nx\nb", std::slice::from_ref(&(2..16)), 0),
            "services come and go between the same other text"
        );
        assert_ne!(base, context(text, &tables, 1), "the parent's digest");
        assert_ne!(base, context(&text.replace('a', "c"), &tables, 0));
        assert_ne!(base, context(&text.replace('b', "c"), &tables, 0));
        assert_eq!(
            base,
            context(&text.replace('x', "z"), &tables, 0),
            "inside a table: the table's own key"
        );
    }

    /// The config of `dir` loaded again as a reload after `previous` would.
    fn reload_dir(dir: &Scratch, previous: &Config) -> Config {
        load_reusing(&dir.config(), Overrides::default(), Some(previous)).expect("valid")
    }

    fn token(s: &Service) -> Option<&str> {
        s.header("x-token").and_then(|v| v.to_str().ok())
    }

    /// A `[service.x]` after another table belongs to the last service, yet is not in its
    /// text: a file with one is not reused from, or a rotated header file would not be read.
    #[test]
    fn a_service_sub_table_after_another_table_reuses_nothing() {
        let dir = Scratch::new("reuse-sub", &[("token", "one")]);
        let main = format!(
            "{}[defaults]\ntimeout = \"2s\"\n\n[service.header_files]\nx-token = \"token\"\n",
            fleet(2)
        );
        dir.write("healthsweep.toml", &main);
        let first = dir.load().expect("valid");
        assert_eq!(token(&first.services[1]), Some("one"));
        dir.write("token", "two");
        let second = reload_dir(&dir, &first);
        assert_eq!(token(&second.services[1]), Some("two"));
        assert!(!same(&first, &second, "svc-0") && !same(&first, &second, "svc-1"));
        // A service inserted above [defaults] now owns the sub-table: the labels move with it.
        let labelled = format!(
            "{}[defaults]\ntimeout = \"2s\"\n\n[service.labels]\nteam = \"x\"\n",
            fleet(2)
        );
        let inserted = labelled.replacen(
            "[defaults]",
            "[[service]]\nname = \"new\"\nurl = \"http://127.0.0.1/new\"\n\n[defaults]",
            1,
        );
        let (a, b) = reload(&labelled, &inserted);
        let team = |c: &Config, name: &str| {
            let s = c.services.iter().find(|s| &*s.name == name).expect(name);
            s.labels.get("team").is_some_and(|t| t == "x")
        };
        assert!(team(&a, "svc-1") && !team(&b, "svc-1") && team(&b, "new"));
        // toml's span of a `[[service]]` table: its header.
        const HEADER: Range<usize> = 0..11;
        let gaps = [
            "[[service]]\nname = \"a\"\n[daemon]\n[service.labels]\nt = \"x\"\n",
            "[[service]]\nname = \"a\"\n[daemon]\n[[service.x]]\n",
            "[[service]]\nname = \"a\"\n[daemon]\nk = [\n  [\"a\"],\n]\n",
        ];
        for text in gaps {
            assert_eq!(tables(text, &[HEADER]), None, "{text}");
        }
        let fine = "[[service]]\nname = \"a\"\n[daemon]\nk = [\n  [1],\n]\n";
        let extents = tables(fine, &[HEADER]).expect("told for sure");
        assert_eq!(extents.first(), Some(&(0..23)), "up to [daemon]");
    }

    /// An escape can spell `$` or a key the text does not show: a table with a backslash is
    /// made again at every load.
    #[test]
    fn escapes_cannot_hide_the_environment_or_a_file() {
        let dir = Scratch::new("reuse-escape", &[("token", "one")]);
        let main = format!(
            "{HEAD}{}[[service]]\nname = \"files\"\nurl = \"http://127.0.0.1/f\"\n\
             \"header_\\u0066iles\" = {{ x-token = \"token\" }}\n",
            fleet(1)
        );
        dir.write("healthsweep.toml", &main);
        let first = dir.load().expect("valid");
        dir.write("token", "two");
        let second = reload_dir(&dir, &first);
        let files = second.services.iter().find(|s| &*s.name == "files");
        assert_eq!(files.and_then(|s| token(s)), Some("two"));
        assert!(same(&first, &second, "svc-0"));

        let env = format!(
            "{HEAD}[[service]]\nname = \"env\"\nurl = \"http://127.0.0.1/\"\n\
             headers = {{ x-token = \"\\u0024{{TOKEN}}\" }}\n"
        );
        let first = parse_env(&env, &[("TOKEN", "one")]).expect("valid");
        assert_eq!(token(&first.services[0]), Some("one"));
        let vars = |name: &str| (name == "TOKEN").then(|| std::ffi::OsString::from("two"));
        let reuse = Reuse::of(&first.services);
        let second = parse_whole_reusing(Path::new("test.toml"), &env, &vars, reuse).expect("ok");
        assert_eq!(token(&second.services[0]), Some("two"));
        assert!(reads_outside("a = \"\\x\""));
    }

    /// The `file` exclusions bite: a header file rewritten between loads is read again,
    /// whether the service or `[defaults]` names it.
    #[test]
    fn header_files_rewritten_between_loads_are_read_again() {
        for (defaults, service) in [
            ("", "header_files = { x-token = \"token\" }\n"),
            ("[defaults]\nheader_files = { x-token = \"token\" }\n\n", ""),
        ] {
            let dir = Scratch::new("reuse-files", &[("token", "one")]);
            let main = format!(
                "{defaults}[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\n{service}{}",
                fleet(1)
            );
            dir.write("healthsweep.toml", &main);
            let first = dir.load().expect("valid");
            assert_eq!(token(&first.services[0]), Some("one"));
            dir.write("token", "two");
            let second = reload_dir(&dir, &first);
            assert_eq!(token(&second.services[0]), Some("two"), "{main}");
            assert_eq!(
                same(&first, &second, "svc-0"),
                defaults.is_empty(),
                "only [defaults] reading a file stops every service's reuse: {main}"
            );
        }
    }
}
