//! Counters for the output stage: plain atomics, read by [`Outputs::stats`]
//! (`super::Outputs::stats`) so a metrics exporter can publish them without
//! this module knowing about it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ops::metrics::{Heartbeat, LatencyHistogram, monotonic_ms};

/// Per-output counters. Every transition handed to an output ends in exactly
/// one of `delivered`, `filtered`, `rejected` or `exhausted` (the last two
/// are dead-lettered), unless the worker stops first.
#[derive(Debug, Default)]
pub struct OutputCounters {
    pub delivered: AtomicU64,
    pub filtered: AtomicU64,
    /// Failed attempts that will be retried (one per transition and attempt).
    pub failed_attempts: AtomicU64,
    /// Refused by the destination (e.g. HTTP 400) and dead-lettered.
    pub rejected: AtomicU64,
    /// Past `max_attempts` / `max_record_age` and dead-lettered.
    pub exhausted: AtomicU64,
    /// Seconds per attempt (one call to the destination).
    pub attempt_latency: LatencyHistogram,
    /// Seconds from `deliver` to this output's ack of the batch.
    pub batch_latency: LatencyHistogram,
    /// The delivery task's liveness: it beats as it works, promises its
    /// next attempt when it backs off (Retry-After included), and parks
    /// while it waits for batches or for the dead-letter task. An output
    /// retrying a down destination is alive; one stuck in an attempt past
    /// its timeout is not.
    pub heartbeat: Heartbeat,
    /// Since when (`ops::metrics::monotonic_ms`) every attempt has failed;
    /// 0 while the last one succeeded (readiness: delivery is degraded).
    pub failing_since: AtomicU64,
}

/// Dead-letter counters.
#[derive(Debug, Default)]
pub struct DeadLetterCounters {
    /// Entries written durably.
    pub written: AtomicU64,
    /// Of those, bad records handed over by the pipeline.
    pub bad_records: AtomicU64,
    /// Of those, transitions an output could not deliver.
    pub undeliverable: AtomicU64,
    /// Failed write attempts (each retried).
    pub write_failures: AtomicU64,
    /// Entries whose payload was cut to fit the destination (SQS: 256 KiB).
    pub payload_truncated: AtomicU64,
    /// The dead-letter task's liveness (see [`OutputCounters::heartbeat`]).
    pub heartbeat: Heartbeat,
    /// Since when writes have failed; 0 while the last one succeeded.
    pub failing_since: AtomicU64,
}

/// A point-in-time copy of every counter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub outputs: Vec<OutputStats>,
    pub dead_letter: DeadLetterStats,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutputStats {
    pub name: String,
    /// The `type`: "stdout", "webhook", ...
    pub kind: String,
    pub delivered: u64,
    pub filtered: u64,
    pub failed_attempts: u64,
    pub rejected: u64,
    pub exhausted: u64,
    /// Batches waiting in this output's queue now (not counting the one
    /// being delivered).
    pub queued_batches: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterStats {
    pub written: u64,
    pub bad_records: u64,
    pub undeliverable: u64,
    pub write_failures: u64,
    pub payload_truncated: u64,
}

impl OutputCounters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// One attempt at the destination finished, after `took`.
    pub(crate) fn attempted(&self, took: Duration) {
        self.attempt_latency.observe(took);
    }
}

/// Marks a destination failing (keeping the first failure's time) or not.
pub(crate) fn set_failing(since: &AtomicU64, failing: bool) {
    if failing {
        let _ = since.compare_exchange(0, monotonic_ms(), Ordering::Relaxed, Ordering::Relaxed);
    } else {
        since.store(0, Ordering::Relaxed);
    }
}

impl DeadLetterCounters {
    pub(crate) fn snapshot(&self) -> DeadLetterStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DeadLetterStats {
            written: r(&self.written),
            bad_records: r(&self.bad_records),
            undeliverable: r(&self.undeliverable),
            write_failures: r(&self.write_failures),
            payload_truncated: r(&self.payload_truncated),
        }
    }
}
