//! Unix signals, translated into the daemon's own messages: SIGHUP asks for a reload,
//! SIGTERM and SIGINT cancel the shutdown token.

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::reload::ReloadRequest;

/// Registers the handlers now (so no signal sent after this returns is missed) and returns the
/// task that forwards them until shutdown.
pub fn forward(
    reloads: mpsc::Sender<ReloadRequest>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    Ok(tokio::spawn(run(signals, reloads, shutdown)))
}

async fn run(
    mut signals: Signals,
    reloads: mpsc::Sender<ReloadRequest>,
    shutdown: CancellationToken,
) {
    let handle = signals.handle();
    loop {
        let signal = tokio::select! {
            () = shutdown.cancelled() => break,
            s = signals.next() => match s {
                Some(s) => s,
                None => break,
            },
        };
        match signal {
            SIGHUP => {
                // A full queue already holds a reload that will read the newest file.
                if reloads.try_send(ReloadRequest { reply: None }).is_err() {
                    debug!("reload already pending; SIGHUP coalesced");
                }
            }
            _ => {
                info!(signal, "shutting down");
                shutdown.cancel();
            }
        }
    }
    handle.close();
}
