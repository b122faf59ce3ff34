//! The daemon's configuration: the TOML file, parsed strictly and validated into a [`Config`].
//!
//! Parse, don't validate: a [`Config`] that exists is valid. [`load`] reads a file, rejects unknown
//! keys and wrong types (via serde), then checks every value and collects *all* problems, each
//! with its line and service, so one `healthsweep validate` run lists everything to fix.
//!
//! Services come from the main file and, with `[daemon] services_dir`, from every `*.toml` file
//! of a directory (`files`); header values and URL passwords may come from the environment or
//! from files (`secrets`). All of them are read again at every load.
//!
//! Sharding is applied last: the whole file is validated (so every replica of a sharded fleet
//! rejects the same bad file), then only the services of this replica's [`Shard`](crate::shard::Shard) are kept.

mod access;
mod align;
mod check;
mod daemon;
mod dependencies;
mod discover;
mod dns_check;
mod error;
mod files;
mod maintenance;
mod model;
mod parts;
mod raw;
pub(crate) mod read;
mod reuse;
use reuse::Reuse;
mod secrets;
mod service;
mod template;
mod tls;
mod urls;
mod validator;

use std::collections::HashMap;
use std::path::Path;

pub use access::{Auth, MIN_TOKEN_LEN, Protected, ServerTls, Token};
pub use align::{Alignment, align};
use check::{CheckOptions, TlsSettings};
pub use discover::{
    DEFAULT_DNS_REFRESH, DEFAULT_FILE_REFRESH, DEFAULT_HTTP_REFRESH, Discover, DnsRecord, DnsSpec,
    FilePattern, SourceSpec,
};
pub use dns_check::{AnswerMatch, DnsCheck, DnsTransport, DnsType, RCODES};
use error::LineIndex;
pub use error::{ConfigError, Location, Problem};
pub use files::{SourceFile, Sources};
pub use maintenance::{MAX_WINDOW, Maintenance, Targets};
pub use model::*;
use raw::RawConfig;
use secrets::{Env, process_env};
pub use service::is_label_name;
pub use template::{Discovered, Pattern, Template};
pub use tls::{Fingerprint, HTTP_ALPN, TlsClient, TlsOptions, build as tls_build};
use urls::{basic_auth, has_userinfo, scheme_of};
pub use urls::{redact, target_of};
use validator::{DurationKey, SourceText, Validator};
pub use validator::{MAX_CHECK_DURATION, MAX_INTERVAL, MAX_SERVICE_INTERVAL, MIN_INTERVAL};

/// Reads, parses and validates the config file at `path`.
///
/// A file with nothing in it (only whitespace and comments) is refused, although [`parse`]
/// accepts empty text: an empty config *file* is a file caught between truncate and write (a
/// reload racing an editor or config management), and taking it would silently drop every
/// service. The running config stays instead.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, Overrides::default())
}

/// [`load`], with command-line `overrides` applied.
pub fn load_with(path: &Path, overrides: Overrides) -> Result<Config, ConfigError> {
    load_reusing(path, overrides, None)
}

/// [`load_with`] for a reload: the services of `previous` (the running config) whose text and
/// surroundings did not change are taken as they are instead of being made again (see
/// `reuse` for when they are not).
pub fn load_reusing(
    path: &Path,
    overrides: Overrides,
    previous: Option<&Config>,
) -> Result<Config, ConfigError> {
    let source =
        read::read_text(path, read::Limit::Config).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if is_blank(&source) {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: vec![Problem {
                file: None,
                location: None,
                service: None,
                message: "the file is empty (only whitespace or comments); a file caught \
                          mid-write is not a config"
                    .into(),
            }],
        });
    }
    let reuse = previous.map_or_else(Reuse::default, |p| Reuse::of(&p.services));
    parse_with_reuse(path, &source, overrides, reuse)
}

/// Whether `source` holds no TOML at all.
fn is_blank(source: &str) -> bool {
    source.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

/// Parses and validates `source`; `path` is only used in error messages.
pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
    parse_with(path, source, Overrides::default())
}

/// [`parse`], with command-line `overrides` applied.
pub fn parse_with(path: &Path, source: &str, overrides: Overrides) -> Result<Config, ConfigError> {
    parse_with_reuse(path, source, overrides, Reuse::default())
}

fn parse_with_reuse(
    path: &Path,
    source: &str,
    overrides: Overrides,
    reuse: Reuse,
) -> Result<Config, ConfigError> {
    let mut config = parse_whole_reusing(path, source, &process_env, reuse)?;
    if let Some(shard) = overrides.shard {
        config.daemon.shard = shard;
    }
    let shard = config.daemon.shard;
    config.services.retain(|s| shard.owns(&s.name));
    Ok(config)
}

/// Parses and validates every service in `source` and in `services_dir`, whatever the shard;
/// `${NAME}` takes its value from `env`; unchanged services are taken from `reuse`.
fn parse_whole_reusing(
    path: &Path,
    source: &str,
    env: Env<'_>,
    reuse: Reuse,
) -> Result<Config, ConfigError> {
    let mut raw: RawConfig =
        parts::from_str(source).map_err(|e| ConfigError::from_toml(path, source, &e))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    // Every file is read before validation starts, so the validator can point into any of them
    // (a duplicate name names the file and line of its first definition).
    let dir = raw
        .daemon
        .services_dir
        .take()
        .map(|d| files::ServicesDir::read(&d, &base_dir));
    let main = SourceText {
        path: path.to_path_buf(),
        lines: LineIndex::new(source),
    };
    let others = dir.iter().flat_map(|d| d.texts()).map(|(p, t)| SourceText {
        path: p.to_path_buf(),
        lines: LineIndex::new(t),
    });
    let mut v = Validator {
        files: std::iter::once(main).chain(others).collect(),
        current: 0,
        base_dir,
        tls_clients: HashMap::new(),
        service: None,
        problems: Vec::new(),
        env,
        sweep_interval: DEFAULT_INTERVAL,
        reuse,
        context: None,
    };
    let config = v.config(raw, dir.as_ref());
    if v.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: v.problems,
        })
    }
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use std::time::Duration;

    use super::*;
    use crate::config::test_support::*;

    use crate::shard::Shard;

    /// Every file in `testdata/invalid` is one config error. Its header says what must be reported:
    /// `# error:` a substring of the message, `# line:` the line, `# service:` the service named.
    #[test]
    fn every_invalid_fixture_is_rejected_with_its_message_line_and_service() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata/invalid");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("testdata/invalid exists") {
            let path = entry.expect("readable dir entry").path();
            let src = std::fs::read_to_string(&path).expect("fixture readable");
            let header = |key: &str| {
                src.lines()
                    .find_map(|l| l.strip_prefix(&format!("# {key}:")))
                    .map(str::trim)
                    .map(str::to_string)
            };
            let want_error = header("error").expect("fixture has '# error:'");
            let want_line: usize = header("line")
                .expect("fixture has '# line:'")
                .parse()
                .expect("line is a number");
            let want_service = header("service");

            let err =
                parse(&path, &src).expect_err(&format!("{} must be rejected", path.display()));
            let text = err.to_string();
            assert!(
                text.contains(&want_error),
                "{}: error {text:?} does not contain {want_error:?}",
                path.display()
            );
            assert!(
                text.contains(&path.display().to_string()),
                "{}: error does not name the file: {text}",
                path.display()
            );
            match &err {
                ConfigError::Parse { location, .. } => {
                    assert_eq!(
                        location.map(|l| l.line),
                        Some(want_line),
                        "{}: {text}",
                        path.display()
                    );
                }
                ConfigError::Invalid { problems, .. } => {
                    let p = problems
                        .iter()
                        .find(|p| p.to_string().contains(&want_error))
                        .expect("the expected problem");
                    assert_eq!(
                        p.location.map(|l| l.line),
                        Some(want_line),
                        "{}: {text}",
                        path.display()
                    );
                    assert_eq!(p.service, want_service, "{}", path.display());
                }
                ConfigError::Read { .. } => panic!("fixture could not be read"),
            }
            seen += 1;
        }
        assert!(seen >= 20, "expected the fixture table, found {seen} files");
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/healthsweep.toml");
        let config = load(&path).expect("config/healthsweep.toml is valid");
        assert!(!config.services.is_empty());
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let c = parse_str("").expect("empty config is valid");
        assert_eq!(c.daemon, Daemon::default());
        assert_eq!(c.daemon.listen.to_string(), "127.0.0.1:9915");
        assert_eq!(c.daemon.interval, Duration::from_secs(15));
        assert_eq!(c.daemon.deadline, Duration::from_secs(5));
        assert!(!c.daemon.reload_api);
        assert!(c.services.is_empty());
    }

    #[test]
    fn loading_an_empty_file_is_refused_as_a_truncated_write() {
        let dir = std::env::temp_dir().join(format!("healthsweep-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("empty.toml");
        for blank in ["", "\n  \n", "# only a comment\n\n"] {
            std::fs::write(&path, blank).expect("write");
            let err = load(&path).expect_err("an empty file is refused");
            assert!(err.to_string().contains("empty"), "{err}");
        }
        std::fs::write(&path, "[daemon]\n").expect("write");
        assert!(load(&path).is_ok(), "a file with a table is not blank");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let p = problems(
            r#"
            [daemon]
            interval = "nope"
            [[service]]
            name = "a"
            url = "ftp://x"
            [[service]]
            name = "a"
            url = "http://127.0.0.1/"
            labels = { job = "x" }
            "#,
        );
        assert_eq!(p.len(), 4, "{p:#?}");
    }

    #[test]
    fn a_shard_keeps_only_its_services_and_remembers_the_fleet_size() {
        let src = format!("[daemon]\nshard = \"1/3\"\n{}", fleet(60));
        let c = parse_str(&src).expect("valid");
        let shard = Shard::new(1, 3).expect("valid shard");
        assert_eq!(c.daemon.shard, shard);
        assert_eq!(c.fleet_size, 60);
        assert!(!c.services.is_empty() && c.services.len() < 60);
        assert!(c.services.iter().all(|s| shard.owns(&s.name)));
        // File order is kept.
        let order: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        let mut sorted = order.clone();
        sorted.sort_by_key(|n| n[4..].parse::<u32>().expect("numbered"));
        assert_eq!(order, sorted);
    }

    #[test]
    fn the_command_line_shard_wins_over_the_file() {
        let src = format!("[daemon]\nshard = \"1/3\"\n{}", fleet(30));
        let cli = Shard::new(0, 2).expect("valid shard");
        let c =
            parse_with(Path::new("t.toml"), &src, Overrides { shard: Some(cli) }).expect("valid");
        assert_eq!(c.daemon.shard, cli);
        assert!(c.services.iter().all(|s| cli.owns(&s.name)));
        let whole = parse_str(&fleet(30)).expect("valid");
        assert_eq!(whole.daemon.shard, Shard::WHOLE);
        assert_eq!(whole.services.len(), 30);
    }

    /// Every replica must reject the same bad file, so problems in services of other shards count.
    #[test]
    fn every_shard_rejects_a_problem_in_any_service() {
        let src = format!(
            "{}[[service]]\nname = \"svc-3\"\nurl = \"http://127.0.0.1/\"\n[[service]]\nname = \"odd\"\nurl = \"ftp://x/\"\n",
            fleet(10)
        );
        for index in 0..4 {
            let shard = Shard::new(index, 4).expect("valid shard");
            let err = parse_with(Path::new("t.toml"), &src, Overrides { shard: Some(shard) })
                .expect_err("invalid everywhere");
            let text = err.to_string();
            assert!(text.contains("duplicate service name"), "{shard}: {text}");
            assert!(text.contains("scheme \"ftp\""), "{shard}: {text}");
        }
    }

    /// The check digest tells a service checked another way from the same one loaded again:
    /// equal for the same text, different for any change in how it is checked.
    #[test]
    fn the_check_digest_follows_every_part_of_how_a_service_is_checked() {
        let digest = |extra: &str| {
            let src = format!(
                "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:8080/health\"\n{extra}\n"
            );
            parse(Path::new("t.toml"), &src).expect("valid").services[0].check_digest
        };
        let plain = digest("");
        assert_eq!(plain, digest(""), "the same text, the same digest");
        let changes = [
            "timeout = \"2s\"",
            "expect_status = [204]",
            "expect_json = { \"/status\" = \"ok\" }",
            "expect_json = { \"/status\" = \"ok!\" }",
            "expect_body_contains = \"ok\"",
            "headers = { \"X-Probe\" = \"1\" }",
            "failure_threshold = 3",
            "max_latency = \"100ms\"",
        ];
        let digests: Vec<u64> = changes.iter().map(|c| digest(c)).collect();
        for (c, d) in changes.iter().zip(&digests) {
            assert_ne!(*d, plain, "{c}");
            assert_eq!(*d, digest(c), "{c} loaded again");
        }
        let distinct: std::collections::HashSet<_> = digests.iter().collect();
        assert_eq!(distinct.len(), changes.len(), "every change its own digest");
    }

    /// Services that set none of the rare parts share one empty [`Extra`]; one that sets any
    /// has its own.
    #[test]
    fn plain_services_share_one_empty_extra() {
        let src = "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\n\
                   [[service]]\nname = \"b\"\nurl = \"http://127.0.0.1:2/\"\n\
                   [[service]]\nname = \"c\"\nurl = \"http://127.0.0.1:3/\"\ngroup = \"g\"\n";
        let c = parse(Path::new("t.toml"), src).expect("valid");
        let (a, b, g) = (&c.services[0], &c.services[1], &c.services[2]);
        assert!(
            std::sync::Arc::ptr_eq(&a.extra, &b.extra),
            "a and b set nothing rare"
        );
        assert!(!std::sync::Arc::ptr_eq(&a.extra, &g.extra), "c has a group");
        assert_eq!(g.extra.group.as_deref(), Some("g"));
        assert!(a.extra.group.is_none() && a.extra.headers.is_empty());
    }
}
