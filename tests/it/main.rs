//! The end-to-end tests, one binary: each module starts the real `healthsweep` binary (or the
//! library's server) against real servers on loopback, and the tools it is used with
//! (promtool, Prometheus, systemd-analyze, kubernetes-validate, openssl) where a test says so.
//!
//! `cargo test` runs every test; those that need a tool outside Rust say so and pass without it
//! unless `HEALTHSWEEP_TEST_TOOLS=require` is set (as `scripts/test` and CI do), when a missing
//! tool fails the test. See `docs/testing.md`.

mod common;

mod alerting;
mod architecture;
mod cli;
mod daemon;
mod discovery;
mod dns_probe;
mod faults;
mod fuzz;
mod grpc;
mod history;
mod hostile;
mod intervals;
mod kubernetes;
mod page;
mod probes;
mod prometheus;
mod scale;
mod secrets;
mod security;
mod server;
mod service_files;
mod shard;
mod soak;
mod systemd;
mod verdicts;
