//! healthsweep: sweeps every downstream `/health` endpoint concurrently on a fixed interval,
//! under a hard per-sweep deadline, and serves the results as Prometheus metrics and JSON.
//!
//! ```text
//! SIGHUP / POST /-/reload
//!         │
//!         ▼
//!    reload: read + parse + validate ──bad──▶ keep the running config, log, reload metric = 0
//!         │ good
//!         ▼
//!  watch<Loaded> ──────▶ sweep (one task): every interval, check all services
//!                               concurrently (bounded), each under the sweep deadline
//!                                    │
//!                                    ▼
//!                        watch<Arc<Snapshot>>  (immutable, one per sweep, one writer)
//!                              │                      │
//!                              ▼                      ▼
//!                  /metrics (a Collector that    /status (serializes
//!                  renders the snapshot)         the same snapshot)
//! ```
//!
//! Each channel has one writer; readers clone the `Arc` and let go at once, so a reader never
//! blocks the sweep and the sweep never waits on a reader. A failing service is data (an
//! [`probe::Outcome`] with a [`probe::Reason`]); an `Err` means the daemon itself is broken.
//!
//! ARCHITECTURE.md lists the modules, what each owns and which it may use (a test holds the
//! code to it): [`config`] → [`probe`] → [`snapshot`] → [`sweep`] → [`metrics`], [`api`],
//! [`server`] → [`app`]; the commands beside the daemon are [`check`], [`demo`] and
//! [`bench`](mod@bench) (with [`mock`] and [`hostile`]).

pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod body;
pub mod check;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod fault;
pub mod history;
pub mod hostile;
pub mod labels;
pub mod limits;
pub mod maintenance;
pub mod metrics;
pub mod mock;
pub mod notify;
pub mod probe;
pub mod recorder;
pub mod reload;
pub mod server;
pub mod shard;
pub mod signals;
pub mod snapshot;
pub mod store;
pub mod sweep;
pub mod timestamp;
pub mod varint;
