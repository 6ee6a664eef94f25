//! Shared helpers for the end-to-end tests in `tests/e2e.rs`.
//!
//! Every test drives the real `bulkwatch` binary as a child process against
//! LocalStack's Kinesis, the way a user runs it, and judges it only by what
//! a user can see: the JSON lines on stdout, the logs on stderr, the exit
//! code, and `bulkwatch checkpoints list`.
//!
//! - [`localstack`]: the AWS settings for LocalStack, and the check that it
//!   answers (a test without it fails with a message saying how to start
//!   it; it never skips silently).
//! - [`kinesis`]: a throw-away stream per test (random name, deleted at the
//!   end), PutRecords that keeps each job's events in order, SplitShard.
//! - [`events`]: realistic bulk-job CloudEvents for N jobs through their
//!   lifecycles, and a small model of the tracking rules that says exactly
//!   which transitions they must produce.
//! - [`transitions`]: what the worker printed, parsed, and how to compare
//!   it with what was expected.
//! - [`webhook_server`]: a loopback HTTP receiver that verifies the
//!   webhook signature and answers as the test says (also used by
//!   tests/outputs.rs).
//! - [`metrics`]: one scrape of the worker's `/metrics`, and free ports.
//! - [`worker`]: the running binary: its stdout collected on a thread, its
//!   stderr kept in a file and printed when a test fails, signals, exits.

// Each helper is used by some test, but not every test uses every helper;
// the test binary is compiled as one crate, so unused ones would warn as
// tests come and go.
#![allow(dead_code)]

pub mod events;
pub mod kinesis;
pub mod leases;
pub mod localstack;
pub mod metrics;
pub mod transitions;
pub mod webhook_server;
pub mod worker;

use std::time::Duration;

/// Liveness bounds, not performance assertions: generous enough for a slow
/// CI machine running tests in parallel against one LocalStack, short
/// enough that a hung worker fails the test instead of the CI job.
pub const LIVENESS: Duration = Duration::from_secs(120);

/// A short random hex suffix for names that must not collide between
/// tests running in parallel, or with streams left over from earlier runs.
pub fn random_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}
