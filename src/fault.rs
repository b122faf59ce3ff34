//! Fault injection for the end-to-end tests: `HEALTHSWEEP_FAULT=<name>` makes the daemon fail
//! at one named place, so a test can prove what the process does then (a panic in any task ends
//! it with a non-zero status that systemd's `Restart=on-failure` acts on).
//!
//! Read once; unset (always, outside those tests) it costs one relaxed load where checked.

use std::sync::OnceLock;

/// The places a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The sweeper panics when a sweep finishes.
    SweepPanic,
    /// A connection task panics while handling `GET /healthz`.
    RequestPanic,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::SweepPanic => "sweep-panic",
            Fault::RequestPanic => "request-panic",
        }
    }
}

/// Whether `fault` was asked for by `HEALTHSWEEP_FAULT`.
pub fn injected(fault: Fault) -> bool {
    static ASKED: OnceLock<Option<String>> = OnceLock::new();
    ASKED
        .get_or_init(|| std::env::var("HEALTHSWEEP_FAULT").ok())
        .as_deref()
        .is_some_and(|asked| asked == fault.name())
}
