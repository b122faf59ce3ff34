//! Service files: `[daemon] services_dir`, a directory whose `*.toml` files each add
//! `[[service]]` tables to the main file's (config management drops one file per team).
//!
//! The directory is listed and every file read before validation starts, at every load, so a
//! reload sees files added, removed and changed since. A services file holds only
//! `[[service]]` tables; `[defaults]` of the main file apply to them. Every problem names the
//! file it is in ([`super::Problem::file`]); one bad file rejects the whole load.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use super::raw::{RawService, RawServicesFile};
use super::{CheckOptions, Service, Validator, access, is_blank, read};

/// Where a config's services came from, for `healthsweep validate` and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// `[daemon] services_dir`, resolved against the main file's directory, when set.
    pub services_dir: Option<PathBuf>,
    /// Every file read and how many services it lists (across all shards): the main file
    /// first, then the files of `services_dir` in name order.
    pub files: Vec<SourceFile>,
}

/// One file that lists services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub services: usize,
}

/// `services_dir` as found on disk.
#[derive(Debug)]
pub(super) struct ServicesDir {
    /// Where `services_dir` is written in the main file, for errors about the directory.
    span: Range<usize>,
    path: PathBuf,
    /// The `*.toml` files in name order, or why the directory could not be listed.
    listing: Result<Vec<ServicesFile>, std::io::Error>,
}

/// One `*.toml` file of the directory and its text, or why it could not be read.
#[derive(Debug)]
pub(super) struct ServicesFile {
    path: PathBuf,
    text: Result<String, read::ReadError>,
}

impl ServicesDir {
    /// Lists `services_dir` (relative to `base_dir`, the main file's directory) and reads its
    /// files. Errors are kept, not returned: they become problems once validation starts.
    pub(super) fn read(services_dir: &Spanned<String>, base_dir: &Path) -> ServicesDir {
        let path = access::resolve(base_dir, services_dir.get_ref());
        let listing = list(&path).map(|paths| {
            paths
                .into_iter()
                .map(|path| ServicesFile {
                    text: read::read_text(&path, read::Limit::Config),
                    path,
                })
                .collect()
        });
        ServicesDir {
            span: services_dir.span(),
            path,
            listing,
        }
    }

    /// Each file's path and text (empty when unreadable), in order: what the validator
    /// indexes for lines.
    pub(super) fn texts(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.listing
            .iter()
            .flatten()
            .map(|f| (f.path.as_path(), f.text.as_deref().unwrap_or_default()))
    }
}

/// The `*.toml` files directly in `dir`, sorted by name: what the shell glob `dir/*.toml`
/// matches, so hidden files (editor and rsync temporaries) and subdirectories are left out.
fn list(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let path = entry.path();
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let hidden = name.as_encoded_bytes().starts_with(b".");
        // `metadata` follows symlinks (Kubernetes mounts ConfigMap keys as links). Regular
        // files only: opening a FIFO would block the reload. A broken link is kept, so that
        // reading it reports the file.
        let regular = std::fs::metadata(&path).map_or(true, |m| m.is_file());
        if is_toml && !hidden && regular {
            names.push(path);
        }
    }
    names.sort();
    Ok(names)
}

/// Service name -> (index of the file in the validator, byte offset of its first table).
/// Hashed with foldhash: SipHash on 100,000 names was 2.5 % of a load; the names are the
/// config author's, and a flood of colliding names would only slow their own load.
pub(super) type Seen = HashMap<String, (usize, usize), foldhash::fast::RandomState>;

impl Validator<'_> {
    /// Validates the services of every file of `dir` (the validator indexes them as files
    /// `1..`), appending to `services` and `sources`.
    pub(super) fn services_dir(
        &mut self,
        dir: &ServicesDir,
        defaults: &CheckOptions,
        main_context: Option<super::reuse::Key>,
        seen: &mut Seen,
        services: &mut Vec<Arc<Service>>,
        sources: &mut Sources,
    ) {
        sources.services_dir = Some(dir.path.clone());
        let files = match &dir.listing {
            Ok(files) => files,
            Err(e) => {
                self.report(
                    Some(&dir.span),
                    format!("services_dir {}: cannot read: {e}", dir.path.display()),
                );
                return;
            }
        };
        // Relative `header_files` in a services file are relative to that file, as those of
        // the main file are to it.
        let main_dir = std::mem::replace(&mut self.base_dir, dir.path.clone());
        for (i, file) in files.iter().enumerate() {
            self.current = i + 1;
            let count = self.services_file(file, defaults, main_context, seen, services);
            sources.files.push(SourceFile {
                path: file.path.clone(),
                services: count,
            });
        }
        self.current = 0;
        self.base_dir = main_dir;
    }

    /// One services file; returns how many `[[service]]` tables it has.
    fn services_file(
        &mut self,
        file: &ServicesFile,
        defaults: &CheckOptions,
        main_context: Option<super::reuse::Key>,
        seen: &mut Seen,
        services: &mut Vec<Arc<Service>>,
    ) -> usize {
        let text = match &file.text {
            Ok(text) => text,
            Err(e) => {
                self.report(None, e.to_string());
                return 0;
            }
        };
        // As for the main file: an empty file is one caught mid-write, and taking it would
        // silently drop that file's services.
        if is_blank(text) {
            self.report(
                None,
                "the file is empty (only whitespace or comments); a file caught mid-write is not \
                 a config: remove the file to list no services from it",
            );
            return 0;
        }
        let raw: RawServicesFile = match super::parts::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                // serde names what is allowed ("expected `service`"); say why.
                let hint = if e.message().contains("expected `service`") {
                    " (a file in services_dir holds only [[service]] tables)"
                } else {
                    ""
                };
                let message = super::error::toml_message(text, &e);
                self.report(e.span().as_ref(), format!("{message}{hint}"));
                return 0;
            }
        };
        let count = raw.services.len();
        let spans: Vec<_> = raw.services.iter().map(Spanned::span).collect();
        let tables = super::reuse::tables(text, &spans);
        self.context = main_context
            .zip(tables.as_ref())
            .map(|(main, t)| super::reuse::context(text, t, main));
        let tables = tables.unwrap_or(spans);
        for (table, extent) in raw.services.into_iter().zip(tables) {
            if let Some(service) = self.service_table(table, extent, defaults, seen) {
                services.push(service);
            }
        }
        self.context = None;
        count
    }

    /// Validates one `[[service]]` table of the file being validated, checking its name is
    /// not taken by a table of any file read before.
    pub(super) fn service_table(
        &mut self,
        table: Spanned<RawService>,
        extent: Range<usize>,
        defaults: &CheckOptions,
        seen: &mut Seen,
    ) -> Option<Arc<Service>> {
        let table_span = table.span();
        let reuse_key = self.context.and_then(|context| {
            let file = &self.files[self.current];
            let text = file.lines.text().get(extent)?;
            // The main file is the one every load reads, whatever its path; a file of
            // services_dir is told apart by its path (a service shows the file it came from).
            let path = if self.current == 0 {
                Path::new("")
            } else {
                &file.path
            };
            super::reuse::key(context, path, text)
        });
        let (naming, check) = table.into_inner().into_parts();
        let identity = match naming.complete() {
            Ok(identity) => identity,
            Err(key) => {
                self.report(Some(&table_span), format!("missing field `{key}`"));
                return None;
            }
        };
        let name_span = identity.name.span();
        let name = identity.name.get_ref().clone();
        self.service = Some(name.clone());
        if let Some(&(file, offset)) = seen.get(&name) {
            let first = &self.files[file];
            let line = first.lines.locate(offset).line;
            let place = if file == self.current {
                format!("at line {line}")
            } else {
                format!("in {} at line {line}", first.path.display())
            };
            self.report(
                Some(&name_span),
                format!("duplicate service name (first defined {place})"),
            );
        } else {
            seen.insert(name, (self.current, table_span.start));
        }
        if let Some(key) = reuse_key
            && let Some(running) = self.reuse.take(key, identity.name.get_ref())
        {
            self.service = None;
            return Some(running);
        }
        self.keys_for_kind(&identity, &check, &table_span);
        let options = self.check_options(check, defaults);
        let service = self.service(identity, options);
        self.service = None;
        service.map(|mut s| {
            // TLS clients read certificate files and the system's roots: made again each load.
            // `depends_on` keeps where it was written (file index and span) for its errors,
            // which another file's coming or going moves.
            if let Some(key) = reuse_key
                && s.tls.is_none()
                && s.extra.depends_on.is_none()
            {
                s.reuse_key = key;
            }
            Arc::new(s)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use std::time::Duration;

    use super::*;
    use crate::config::test_support::*;
    use crate::config::*;
    use crate::shard::Shard;

    fn services_dir_testdata() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata/services_dir")
    }

    /// Every directory in `testdata/services_dir/invalid` is one error of a services directory. The
    /// header of its `healthsweep.toml` says what must be reported: `# error:` a substring of the
    /// message (`{dir}` stands for the case's directory), `# file:` the file the problem is in
    /// relative to it (none: the main file), `# line:` and `# service:`.
    #[test]
    fn every_invalid_services_dir_fixture_is_rejected_naming_its_file_line_and_service() {
        let root = services_dir_testdata().join("invalid");
        let mut seen = 0;
        for entry in std::fs::read_dir(&root).expect("testdata/services_dir/invalid exists") {
            let dir = entry.expect("readable dir entry").path();
            let main = dir.join("healthsweep.toml");
            let src = std::fs::read_to_string(&main).expect("fixture readable");
            let header = |key: &str| {
                src.lines()
                    .find_map(|l| l.strip_prefix(&format!("# {key}:")))
                    .map(str::trim)
                    .map(|v| v.replace("{dir}", &dir.display().to_string()))
            };
            let want_error = header("error").expect("fixture has '# error:'");
            let want_file = header("file").map(|f| dir.join(f));
            let want_line = header("line").map(|l| l.parse::<usize>().expect("line is a number"));
            let want_service = header("service");
            let case = dir.display();

            let err = load(&main).expect_err(&format!("{case} must be rejected"));
            let ConfigError::Invalid { problems, path } = &err else {
                panic!("{case}: expected validation problems, got {err}")
            };
            assert_eq!(path, &main);
            assert_eq!(problems.len(), 1, "{case}: {problems:#?}");
            let p = &problems[0];
            assert!(
                p.message.contains(&want_error),
                "{case}: {:?} does not contain {want_error:?}",
                p.message
            );
            assert_eq!(p.file, want_file, "{case}");
            assert_eq!(p.location.map(|l| l.line), want_line, "{case}");
            if want_line.is_some() {
                assert!(p.location.is_some_and(|l| l.column >= 1), "{case}");
            }
            assert_eq!(p.service, want_service, "{case}");
            // Every way the error is shown names the file it is in.
            let shown = want_file.as_deref().unwrap_or(&main).display().to_string();
            let line = &err.lines()[0];
            assert!(line.starts_with(&format!("{shown}: ")), "{case}: {line}");
            assert!(err.to_string().contains(&shown), "{case}: {err}");
            seen += 1;
        }
        assert!(seen >= 10, "expected the fixture table, found {seen} cases");
    }

    #[test]
    fn services_come_from_the_main_file_and_every_toml_file_of_services_dir_in_name_order() {
        let root = services_dir_testdata().join("valid");
        let c = load(&root.join("healthsweep.toml")).expect("valid");
        let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["main-1", "orders-1", "search-1", "search-2"]);
        assert_eq!(c.fleet_size, 4);
        let dir = root.join("services.d");
        assert_eq!(c.sources.services_dir.as_deref(), Some(dir.as_path()));
        assert_eq!(
            c.sources.files,
            vec![
                SourceFile {
                    path: root.join("healthsweep.toml"),
                    services: 1
                },
                SourceFile {
                    path: dir.join("a-orders.toml"),
                    services: 1
                },
                SourceFile {
                    path: dir.join("b-search.toml"),
                    services: 2
                },
            ]
        );
        // [defaults] of the main file apply to services of the directory.
        let search_1 = &c.services[2];
        assert_eq!(search_1.timeout, Duration::from_secs(1));
        assert_eq!(c.services[1].timeout, Duration::from_secs(2));
        assert_eq!(search_1.header("x-probe").expect("default"), "healthsweep");
        assert_eq!(
            search_1.header("x-token").expect("default"),
            "a-long-enough-test-token-0123456789"
        );
        // A services file's relative header_files are relative to it.
        assert_eq!(
            c.services[3].header("x-token").expect("own"),
            "search-team-token"
        );
    }

    #[test]
    fn an_empty_services_dir_adds_no_services() {
        let s = Scratch::new(
            "empty-dir",
            &[(
                "healthsweep.toml",
                "[daemon]\nservices_dir = \"services.d\"\n[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\n",
            )],
        );
        std::fs::create_dir_all(s.0.join("services.d")).expect("mkdir");
        // Not a regular file: skipped rather than opened (opening a FIFO blocks).
        let made = std::process::Command::new("mkfifo")
            .arg(s.0.join("services.d/fifo.toml"))
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        let c = s.load().expect("valid");
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.sources.files.len(), 1);
        assert_eq!(c.sources.services_dir, Some(s.0.join("services.d")));
    }

    #[test]
    fn problems_in_several_services_files_are_all_reported_each_with_its_file() {
        let s = Scratch::new(
            "several",
            &[
                (
                    "healthsweep.toml",
                    "[daemon]\ninterval = \"nope\"\nservices_dir = \"d\"\n",
                ),
                (
                    "d/a.toml",
                    "[[service]]\nname = \"a\"\nurl = \"ftp://x/\"\n",
                ),
                ("d/b.toml", "[[service]\n"),
                (
                    "d/c.toml",
                    "[[service]]\nname = \"c\"\nurl = \"http://127.0.0.1/\"\ntimeout = \"0s\"\n",
                ),
            ],
        );
        let err = s.load().expect_err("invalid");
        let lines = err.lines();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        let main = s.config().display().to_string();
        let d = s.0.join("d").display().to_string();
        assert!(
            lines[0].starts_with(&format!("{main}: line 2, column 12: interval")),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with(&format!(
                "{d}/a.toml: line 3, column 7: service \"a\": url scheme"
            )),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            format!("{d}/b.toml: line 1, column 11: unclosed array table, expected `]`")
        );
        assert!(
            lines[3].starts_with(&format!(
                "{d}/c.toml: line 4, column 11: service \"c\": timeout"
            )),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn a_shard_counts_and_splits_the_services_of_every_file() {
        let s = Scratch::new(
            "shard",
            &[
                (
                    "healthsweep.toml",
                    &format!(
                        "[daemon]\nshard = \"1/3\"\nservices_dir = \"d\"\n{}",
                        fleet(20)
                    ),
                ),
                (
                    "d/more.toml",
                    &(20..60)
                        .map(|i| {
                            format!(
                                "[[service]]\nname = \"svc-{i}\"\nurl = \"http://127.0.0.1/\"\n"
                            )
                        })
                        .collect::<String>(),
                ),
            ],
        );
        let c = s.load().expect("valid");
        let shard = Shard::new(1, 3).expect("valid shard");
        assert_eq!(c.fleet_size, 60);
        let whole = parse_str(&fleet(60)).expect("valid");
        let want: Vec<&str> = whole
            .services
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| shard.owns(n))
            .collect();
        let got: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(got, want, "the same services as from one file");
        assert!(
            got.iter()
                .any(|n| n[4..].parse::<u32>().expect("numbered") >= 20)
        );
    }

    #[test]
    fn a_reload_sees_services_files_added_changed_and_removed() {
        let s = Scratch::new(
            "reread",
            &[
                ("healthsweep.toml", "[daemon]\nservices_dir = \"d\"\n"),
                (
                    "d/a.toml",
                    "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\n",
                ),
            ],
        );
        let names = |c: &Config| {
            c.services
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&s.load().expect("valid")), ["a"]);
        s.write(
            "d/b.toml",
            "[[service]]\nname = \"b\"\nurl = \"http://127.0.0.1/\"\n",
        );
        s.write(
            "d/a.toml",
            "[[service]]\nname = \"a2\"\nurl = \"http://127.0.0.1/\"\n",
        );
        assert_eq!(names(&s.load().expect("valid")), ["a2", "b"]);
        std::fs::remove_file(s.0.join("d/a.toml")).expect("remove");
        assert_eq!(names(&s.load().expect("valid")), ["b"]);
    }

    #[test]
    fn a_problem_in_a_services_file_is_shown_with_that_file() {
        let err = ConfigError::Invalid {
            path: PathBuf::from("/etc/hs.toml"),
            problems: vec![
                Problem {
                    file: None,
                    location: Some(Location { line: 2, column: 1 }),
                    service: None,
                    message: "main".into(),
                },
                Problem {
                    file: Some(PathBuf::from("/etc/d/a.toml")),
                    location: Some(Location { line: 3, column: 5 }),
                    service: Some("x".into()),
                    message: "other".into(),
                },
            ],
        };
        assert_eq!(
            err.lines(),
            [
                "/etc/hs.toml: line 2, column 1: main",
                "/etc/d/a.toml: line 3, column 5: service \"x\": other"
            ]
        );
        let text = err.to_string();
        assert!(text.contains("  - line 2, column 1: main"), "{text}");
        assert!(
            text.contains("  - /etc/d/a.toml: line 3, column 5: service \"x\": other"),
            "{text}"
        );
    }
}
