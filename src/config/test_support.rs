//! Helpers for the config's unit tests: parsing text as a config file, with a chosen
//! environment for `${NAME}`.

use std::path::{Path, PathBuf};

use super::*;

pub(crate) fn parse_str(src: &str) -> Result<Config, ConfigError> {
    parse(Path::new("test.toml"), src)
}

pub(crate) fn problems(src: &str) -> Vec<Problem> {
    match parse_str(src) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// Parses `src` as `test.toml` with `vars` as the whole environment.
pub(crate) fn parse_env(src: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    parse_at_env(Path::new("test.toml"), src, vars)
}

pub(crate) fn parse_at_env(
    path: &Path,
    src: &str,
    vars: &[(&str, &str)],
) -> Result<Config, ConfigError> {
    let env = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| std::ffi::OsString::from(v))
    };
    parse_whole_reusing(path, src, &env, reuse::Reuse::default())
}

/// Parses `src` as a reload of `previous` would (no environment).
pub(crate) fn parse_reusing(
    path: &Path,
    src: &str,
    previous: &Config,
) -> Result<Config, ConfigError> {
    let reuse = reuse::Reuse::of(&previous.services);
    parse_whole_reusing(path, src, &|_| None, reuse)
}

pub(crate) fn problems_env(src: &str, vars: &[(&str, &str)]) -> Vec<Problem> {
    match parse_env(src, vars) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

pub(crate) fn fleet(n: usize) -> String {
    (0..n)
        .map(|i| format!("[[service]]\nname = \"svc-{i}\"\nurl = \"http://127.0.0.1/\"\n"))
        .collect()
}

/// A config file `healthsweep.toml` in a fresh directory, with `files` beside it.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str, files: &[(&str, &str)]) -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "healthsweep-config-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let s = Scratch(dir);
        for (name, content) in files {
            s.write(name, content);
        }
        s
    }

    pub(crate) fn write(&self, name: &str, content: &str) {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.0.join("healthsweep.toml")
    }

    pub(crate) fn load(&self) -> Result<Config, ConfigError> {
        load(&self.config())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
