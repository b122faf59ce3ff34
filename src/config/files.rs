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
pub(super) type Seen = HashMap<String, (usize, usize)>;

impl Validator<'_> {
    /// Validates the services of every file of `dir` (the validator indexes them as files
    /// `1..`), appending to `services` and `sources`.
    pub(super) fn services_dir(
        &mut self,
        dir: &ServicesDir,
        defaults: &CheckOptions,
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
            let count = self.services_file(file, defaults, seen, services);
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
        let raw: RawServicesFile = match toml::from_str(text) {
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
        for table in raw.services {
            if let Some(service) = self.service_table(table, defaults, seen) {
                services.push(Arc::new(service));
            }
        }
        count
    }

    /// Validates one `[[service]]` table of the file being validated, checking its name is
    /// not taken by a table of any file read before.
    pub(super) fn service_table(
        &mut self,
        table: Spanned<RawService>,
        defaults: &CheckOptions,
        seen: &mut Seen,
    ) -> Option<Service> {
        let table_span = table.span();
        let (identity, check) = table.into_inner().into_parts();
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
        self.keys_for_kind(&identity, &check, &table_span);
        let options = self.check_options(check, defaults);
        let service = self.service(identity, options);
        self.service = None;
        service
    }
}
