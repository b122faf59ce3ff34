//! A file_sd source: every file matching the source's patterns, watched (a create, a rename
//! over, an in-place write, a delete) and read again every `refresh` besides. A file that does
//! not parse (half-written, broken) keeps its last good targets; a file that is gone takes its
//! targets with it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Reporter;
use super::groups::{self, Format, TargetGroup};
use crate::config::{Discover, FilePattern, SourceSpec};

/// After a change is seen, how long to wait for more before reading: an editor or config
/// management writes a file in several steps.
const SETTLE: Duration = Duration::from_millis(100);

/// Each file's last good groups.
pub(super) type Files = HashMap<PathBuf, Arc<Vec<TargetGroup>>>;

pub(super) async fn run(d: &Discover, to: &Reporter, stop: &CancellationToken) {
    let SourceSpec::File(patterns) = &d.spec else {
        return;
    };
    let (changed_tx, mut changed) = tokio::sync::mpsc::channel::<()>(1);
    // The watcher lives as long as this task; its callback runs on notify's own thread.
    let _watcher = watch(patterns, changed_tx);
    let mut files = Files::new();
    loop {
        let (groups, error) = read_all(patterns, &mut files);
        to.send(d, groups, error).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(d.refresh) => {}
            Some(()) = changed.recv() => {
                tokio::time::sleep(SETTLE).await;
                while changed.try_recv().is_ok() {}
            }
        }
    }
}

/// Watches the directories of `patterns` (a rename over a file, as config management does,
/// is an event on the directory, not on the file). A directory that cannot be watched (not
/// there yet) is read every refresh all the same.
fn watch(
    patterns: &[FilePattern],
    changed: tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    use notify::event::{EventKind, ModifyKind};
    let wanted = patterns.to_vec();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(e) = event else { return };
        // Contents and names only: reading a file changes its access time, and counting that
        // as a change would read it again and again.
        let content = matches!(
            e.kind,
            EventKind::Create(_)
                | EventKind::Remove(_)
                | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
        );
        let ours = e.paths.iter().any(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                wanted
                    .iter()
                    .any(|w| p.parent() == Some(&w.dir) && w.matches(n))
            })
        });
        if content && ours {
            // A full channel already holds a change to read.
            let _ = changed.try_send(());
        }
    })
    .map_err(|e| debug!(error = %e, "cannot watch files; reading them every refresh"))
    .ok()?;
    for p in patterns {
        if let Err(e) = watcher.watch(&p.dir, notify::RecursiveMode::NonRecursive) {
            debug!(dir = %p.dir.display(), error = %e, "cannot watch the directory; reading it every refresh");
        }
    }
    Some(watcher)
}

/// Reads every file the patterns match now. Files that parse replace their last good groups
/// in `files`; files that do not keep them (and are named in the error); files that are gone
/// leave `files`. Returns every file's groups, in path order, and what went wrong.
pub(super) fn read_all(
    patterns: &[FilePattern],
    files: &mut Files,
) -> (Option<Arc<Vec<TargetGroup>>>, Option<String>) {
    let mut errors = Vec::new();
    let mut present = Vec::new();
    for p in patterns {
        match std::fs::read_dir(&p.dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if name.to_str().is_some_and(|n| p.matches(n)) {
                        present.push(entry.path());
                    }
                }
            }
            Err(e) => errors.push(format!("{}: cannot list: {e}", p.dir.display())),
        }
    }
    present.sort();
    present.dedup();
    files.retain(|path, _| present.contains(path));
    for path in &present {
        let Some(format) = Format::of_path(path) else {
            continue;
        };
        match crate::config::read::read(path, crate::config::read::Limit::Targets)
            .map_err(|e| e.to_string())
            .and_then(|text| groups::parse(&text, format))
        {
            Ok(g) => {
                files.insert(path.clone(), Arc::new(g));
            }
            Err(e) => {
                let kept = if files.contains_key(path) {
                    "; keeping its last good targets"
                } else {
                    ""
                };
                errors.push(format!("{}: {e}{kept}", path.display()));
            }
        }
    }
    let mut read: Vec<&Arc<Vec<TargetGroup>>> =
        present.iter().filter_map(|p| files.get(p)).collect();
    // One file (the usual case, and the 100,000-target one): its groups as they are, uncopied.
    let groups = if read.len() == 1 {
        read.pop().cloned().unwrap_or_default()
    } else {
        Arc::new(read.iter().flat_map(|g| g.iter().cloned()).collect())
    };
    let error = (!errors.is_empty()).then(|| errors.join("; "));
    (Some(groups), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("healthsweep-file-sd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn pattern(dir: &std::path::Path, glob: &str) -> FilePattern {
        FilePattern {
            written: format!("{}/{glob}", dir.display()),
            dir: dir.to_path_buf(),
            pattern: glob::Pattern::new(glob).expect("glob"),
        }
    }

    #[test]
    fn a_fifo_a_directory_or_a_huge_file_in_the_glob_fails_alone_and_blocks_nothing() {
        let dir = scratch("hostile");
        std::fs::write(dir.join("a.json"), r#"[{"targets": ["a:1"]}]"#).expect("write");
        nix::unistd::mkfifo(&dir.join("b.json"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        std::fs::create_dir(dir.join("c.json")).expect("dir");
        let huge = std::fs::File::create(dir.join("d.json")).expect("create");
        huge.set_len(crate::config::read::Limit::Targets.bytes() + 1)
            .expect("a sparse file past the cap");
        std::fs::write(dir.join(".e.json"), "not read: hidden").expect("write");
        let mut files = Files::new();
        let (groups, error) = read_all(&[pattern(&dir, "*.json")], &mut files);
        let groups = groups.expect("the readable file's groups");
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].targets, ["a:1"]);
        let error = error.expect("the others are errors");
        for name in ["b.json", "c.json", "d.json"] {
            assert!(error.contains(name), "{name} not named: {error}");
        }
        assert!(!error.contains(".e.json"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_groups_and_a_deleted_one_loses_them() {
        let dir = scratch("last-good");
        let p = [pattern(&dir, "*.yml")];
        std::fs::write(dir.join("a.yml"), "- targets: ['a:1']\n").expect("write");
        std::fs::write(dir.join("b.yml"), "- targets: ['b:1']\n").expect("write");
        let mut files = Files::new();
        let (first, error) = read_all(&p, &mut files);
        assert!(error.is_none());
        assert_eq!(first.expect("groups").len(), 2);
        std::fs::write(dir.join("a.yml"), "- targets: ['a:1'\n").expect("half-written");
        std::fs::remove_file(dir.join("b.yml")).expect("delete");
        let (groups, error) = read_all(&p, &mut files);
        let groups = groups.expect("groups");
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].targets, ["a:1"], "a.yml's last good targets");
        assert!(
            error
                .expect("an error")
                .contains("keeping its last good targets")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
