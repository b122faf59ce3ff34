//! Reloading the config file without a restart.
//!
//! The [`Reloader`] is the only writer of the config channel. A reload (from SIGHUP or
//! `POST /-/reload`) reads, parses and validates the whole file and publishes it only if all of
//! it is good; otherwise the running config stays and the failure is logged and recorded in
//! [`ReloadStatus`] (`healthsweep_config_last_reload_successful` = 0).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{self, ConfigError, Loaded, Overrides};
use crate::notify::Notifier;

/// How many reload requests may wait. Signals beyond it are dropped, which loses nothing: the
/// reload already waiting will read the file as it is by then.
pub const QUEUE: usize = 8;

/// A request to reload, with where to send the outcome (the HTTP API waits for it).
#[derive(Debug)]
pub struct ReloadRequest {
    pub reply: Option<oneshot::Sender<Result<Reloaded, Arc<ConfigError>>>>,
}

/// A successful reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    pub generation: u64,
    pub services: usize,
}

/// The outcome of the latest load, for `/metrics` and `/status`.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    /// Whether the latest attempt succeeded (the start-up load counts as one).
    pub successful: bool,
    /// When a config was last loaded successfully.
    pub last_success: SystemTime,
    /// Why the latest attempt failed, when it did.
    pub last_error: Option<String>,
}

/// Owns the config file and publishes each good version of it.
pub struct Reloader {
    path: PathBuf,
    /// Applied to every version of the file, as to the first.
    overrides: Overrides,
    notifier: Notifier,
    configs: watch::Sender<Loaded>,
    status: watch::Sender<ReloadStatus>,
}

impl Reloader {
    /// Starts from `initial` (generation 1), already loaded from `path` with `overrides`.
    pub fn new(path: PathBuf, initial: config::Config, overrides: Overrides) -> Self {
        let loaded = Loaded {
            generation: 1,
            config: Arc::new(initial),
        };
        let (configs, _) = watch::channel(loaded);
        let (status, _) = watch::channel(ReloadStatus {
            successful: true,
            last_success: SystemTime::now(),
            last_error: None,
        });
        Reloader {
            path,
            overrides,
            notifier: Notifier::disabled(),
            configs,
            status,
        }
    }

    /// Tells the service manager about each reload (`RELOADING=1`, then `READY=1`).
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// The published config, for the sweeper.
    pub fn configs(&self) -> watch::Receiver<Loaded> {
        self.configs.subscribe()
    }

    /// The outcome of the latest load, for the metrics and the API.
    pub fn status(&self) -> watch::Receiver<ReloadStatus> {
        self.status.subscribe()
    }

    /// Serves reload requests until `shutdown`.
    pub async fn run(
        self,
        mut requests: mpsc::Receiver<ReloadRequest>,
        shutdown: CancellationToken,
    ) {
        loop {
            let request = tokio::select! {
                () = shutdown.cancelled() => return,
                r = requests.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
            };
            // Every request waiting now is answered by this one reload: it reads the file as
            // it is after all of them arrived.
            let mut replies: Vec<_> = request.reply.into_iter().collect();
            while let Ok(more) = requests.try_recv() {
                replies.extend(more.reply);
            }
            self.notifier.reloading();
            let outcome = self.reload().await.map_err(Arc::new);
            self.notifier.reloaded();
            for reply in replies {
                // The requester may have gone away (client disconnected); nothing to do then.
                let _ = reply.send(outcome.clone());
            }
        }
    }

    async fn reload(&self) -> Result<Reloaded, ConfigError> {
        let path = self.path.clone();
        let overrides = self.overrides;
        // The services that did not change are taken from the running config as they are.
        let running = self.configs.borrow().config.clone();
        // Parsing a large fleet takes a while; keep it off the async worker threads.
        let loaded = tokio::task::spawn_blocking(move || {
            config::load_reusing(&path, overrides, Some(&running))
        })
        .await
        .unwrap_or_else(|e| {
            Err(ConfigError::Read {
                path: self.path.clone(),
                source: config::read::ReadError::Io(std::io::Error::other(e)),
            })
        });
        match loaded {
            Ok(config) => Ok(self.publish(config)),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "config reload failed; keeping the running config");
                self.status.send_modify(|s| {
                    s.successful = false;
                    s.last_error = Some(e.to_string());
                });
                Err(e)
            }
        }
    }

    fn publish(&self, config: config::Config) -> Reloaded {
        let current = self.configs.borrow().clone();
        if config.daemon.listen != current.config.daemon.listen {
            warn!(
                running = %current.config.daemon.listen,
                configured = %config.daemon.listen,
                "listen address changed; it takes effect after a restart"
            );
        }
        if config.daemon.tls.is_some() != current.config.daemon.tls.is_some() {
            warn!(
                tls = config.daemon.tls.is_some(),
                "[daemon.tls] added or removed; serving with or without TLS changes after a restart"
            );
        }
        let reloaded = Reloaded {
            generation: current.generation + 1,
            services: config.services.len(),
        };
        self.configs.send_replace(Loaded {
            generation: reloaded.generation,
            config: Arc::new(config),
        });
        self.status.send_replace(ReloadStatus {
            successful: true,
            last_success: SystemTime::now(),
            last_error: None,
        });
        info!(
            path = %self.path.display(),
            generation = reloaded.generation,
            services = reloaded.services,
            "config reloaded"
        );
        reloaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\n";

    fn scratch(tag: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("healthsweep-reload-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("healthsweep.toml");
        std::fs::write(&path, text).expect("write");
        path
    }

    fn reloader(path: &std::path::Path) -> Reloader {
        let config = config::load(path).expect("a good first config");
        Reloader::new(path.to_path_buf(), config, Overrides::default())
    }

    async fn ask(
        tx: &mpsc::Sender<ReloadRequest>,
    ) -> oneshot::Receiver<Result<Reloaded, Arc<ConfigError>>> {
        let (reply, answer) = oneshot::channel();
        tx.send(ReloadRequest { reply: Some(reply) })
            .await
            .expect("queued");
        answer
    }

    #[tokio::test]
    async fn a_good_file_is_published_and_a_bad_one_keeps_the_running_config() {
        let path = scratch("good-bad", GOOD);
        let r = reloader(&path);
        let (configs, status) = (r.configs(), r.status());
        let (tx, rx) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let task = tokio::spawn(r.run(rx, stop.clone()));

        std::fs::write(
            &path,
            format!("{GOOD}[[service]]\nname = \"b\"\nurl = \"http://127.0.0.1:2/\"\n"),
        )
        .expect("write");
        let done = ask(&tx).await.await.expect("answered").expect("good");
        assert_eq!((done.generation, done.services), (2, 2));
        assert_eq!(configs.borrow().generation, 2);
        assert!(status.borrow().successful);

        std::fs::write(&path, "[daemon]\ninterval = \"soon\"\n").expect("write");
        let refused = ask(&tx).await.await.expect("answered").expect_err("bad");
        assert!(refused.to_string().contains("interval"), "{refused}");
        assert_eq!(configs.borrow().generation, 2, "the running config stays");
        assert_eq!(configs.borrow().config.services.len(), 2);
        let s = status.borrow().clone();
        assert!(!s.successful && s.last_error.is_some_and(|e| e.contains("interval")));
        stop.cancel();
        task.await.expect("ends");
    }

    #[tokio::test]
    async fn requests_waiting_together_are_answered_by_one_reload() {
        let path = scratch("coalesce", GOOD);
        let r = reloader(&path);
        let configs = r.configs();
        let (tx, rx) = mpsc::channel(QUEUE);
        // Queued before the reloader runs: all of them wait together.
        let answers = [ask(&tx).await, ask(&tx).await, ask(&tx).await];
        let stop = CancellationToken::new();
        let task = tokio::spawn(r.run(rx, stop.clone()));
        for a in answers {
            assert_eq!(a.await.expect("answered").expect("good").generation, 2);
        }
        assert_eq!(
            configs.borrow().generation,
            2,
            "one reload for three requests"
        );
        stop.cancel();
        task.await.expect("ends");
    }
}
