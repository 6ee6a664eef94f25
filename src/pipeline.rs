//! One shard's batches through decode → track → output → checkpoint.
//!
//! This is where the delivery guarantee is kept. For every batch, in this
//! order:
//!
//! 1. every record is decoded into exactly one class; bad records go to the
//!    dead-letter output (durably) before anything else happens;
//! 2. the tracker decides the transitions and compare-and-sets job state;
//! 3. every output acknowledges every transition;
//! 4. only then the shard's checkpoint moves past the batch.
//!
//! A crash anywhere before step 4 means the batch is read again. Step 2 is
//! then answered from the job's recorded history with the very same
//! transitions (same `transition_id`), so they are delivered again rather
//! than lost. Nothing here ever skips a record: a failing store is retried
//! until it answers or the worker shuts down, and then the checkpoint stays
//! where it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::decode::{Decoded, decode};
use crate::output::{DeadLetter, Outputs};
use crate::source::RawRecord;
use crate::source::reader::{BatchSink, Stop};
use crate::store::{Checkpoint, CheckpointStore, StoreError};
use crate::track::{Tracker, Transition, Verdict};

/// Counters of what the worker did, summarised at exit.
#[derive(Debug, Default)]
pub struct Stats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub jobs_events: AtomicU64,
    pub sink_tests: AtomicU64,
    pub bad_records: AtomicU64,
    pub transitions: AtomicU64,
    pub replayed: AtomicU64,
    pub duplicates: AtomicU64,
    pub repeats: AtomicU64,
    pub stale: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Other Twilio event types, counted per type.
    pub other_types: Mutex<HashMap<String, u64>>,
}

impl Stats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// One log line an operator can read at exit.
    pub fn log_summary(&self) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let other: u64 = self
            .other_types
            .lock()
            .map(|m| m.values().sum())
            .unwrap_or(0);
        tracing::info!(
            message = "Worker summary.",
            records = g(&self.records),
            bytes = g(&self.bytes),
            bulk_job_events = g(&self.jobs_events),
            sink_tests = g(&self.sink_tests),
            other_events = other,
            bad_records = g(&self.bad_records),
            transitions = g(&self.transitions),
            replayed = g(&self.replayed),
            duplicates = g(&self.duplicates),
            repeats = g(&self.repeats),
            stale = g(&self.stale),
            checkpoints = g(&self.checkpoints),
        );
    }
}

pub struct Pipeline {
    pub tracker: Tracker,
    pub outputs: Outputs,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
}

impl Pipeline {
    /// Retries a store call until it answers. Giving up would mean either
    /// skipping records or checkpointing unsafely; waiting is the only
    /// correct choice, and the warning tells on-call why the shard stalls.
    /// After shutdown it stops trying, leaving the checkpoint behind.
    async fn with_store_retry<T, F, Fut>(
        &self,
        what: &str,
        shard: &str,
        mut f: F,
    ) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 0u32;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(StoreError::LeaseLost { shard_id }) => return Err(Stop::LeaseLost(shard_id)),
                Err(e) => {
                    attempt += 1;
                    let wait = crate::source::kinesis::backoff_delay(
                        attempt,
                        Duration::from_millis(100),
                        Duration::from_secs(10),
                    );
                    tracing::warn!(message = "Store call failed; retrying.", operation = what, shard = shard, error = %e, attempt, retry_in_ms = wait.as_millis() as u64);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.cancelled() => return Err(Stop::ShuttingDown),
                    }
                }
            }
        }
    }

    fn count_other(&self, event_type: &str) -> bool {
        let mut m = match self.stats.other_types.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let n = m.entry(event_type.to_owned()).or_insert(0);
        *n += 1;
        *n == 1
    }
}

#[async_trait]
impl BatchSink for Pipeline {
    async fn process(
        &self,
        shard_id: &Arc<str>,
        records: Vec<RawRecord>,
        _millis_behind: Option<i64>,
    ) -> Result<(), Stop> {
        let Some(last_seq) = records.last().map(|r| r.origin.sequence_number.clone()) else {
            return Ok(());
        };
        Stats::add(&self.stats.records, records.len() as u64);

        let mut events = Vec::with_capacity(records.len());
        for rec in records {
            Stats::add(&self.stats.bytes, rec.data.len() as u64);
            match decode(&rec.data, rec.origin.arrival) {
                Decoded::Job(ev) => {
                    Stats::add(&self.stats.jobs_events, 1);
                    events.push((ev, rec.origin));
                }
                Decoded::SinkTest(t) => {
                    Stats::add(&self.stats.sink_tests, 1);
                    tracing::info!(message = "Sink test event received.", test_id = %t.test_id, source = %t.source, event_id = %t.id, stream = %rec.origin.stream, shard = %rec.origin.shard_id, sequence_number = %rec.origin.sequence_number);
                }
                Decoded::Other(o) => {
                    // Other Twilio types may share the stream; one line
                    // per type is enough, the counter tells the rest.
                    if self.count_other(&o.event_type) {
                        tracing::info!(message = "Passing over events of another type (logged once per type).", event_type = %o.event_type, stream = %rec.origin.stream, shard = %rec.origin.shard_id, sequence_number = %rec.origin.sequence_number);
                    }
                }
                Decoded::Bad(err) => {
                    Stats::add(&self.stats.bad_records, 1);
                    let reason = err.to_string();
                    tracing::warn!(message = "Bad record sent to dead-letter.", reason = %reason, stream = %rec.origin.stream, shard = %rec.origin.shard_id, sequence_number = %rec.origin.sequence_number);
                    let entry = DeadLetter {
                        reason,
                        payload: rec.data,
                        origin: rec.origin,
                        output: None,
                        transition: None,
                        response: None,
                    };
                    self.outputs
                        .dead_letter(entry)
                        .await
                        .map_err(|_| Stop::ShuttingDown)?;
                }
            }
        }

        if !events.is_empty() {
            let verdicts = self
                .with_store_retry("track", shard_id, || self.tracker.track(&events))
                .await?;
            let mut transitions: Vec<Transition> = Vec::new();
            for v in verdicts {
                let counter = match &v {
                    Verdict::Transition(_) => &self.stats.transitions,
                    Verdict::Replayed(_) => &self.stats.replayed,
                    Verdict::Duplicate => &self.stats.duplicates,
                    Verdict::Repeat => &self.stats.repeats,
                    Verdict::Stale => &self.stats.stale,
                };
                Stats::add(counter, 1);
                match v {
                    Verdict::Transition(t) | Verdict::Replayed(t) => transitions.push(t),
                    _ => {}
                }
            }
            if !transitions.is_empty() {
                self.outputs
                    .deliver(transitions.into())
                    .await
                    .map_err(|_| Stop::ShuttingDown)?;
            }
        }

        let cp = Checkpoint::Sequence(last_seq);
        self.with_store_retry("checkpoint", shard_id, || {
            self.checkpoints.set_checkpoint(shard_id, &cp)
        })
        .await?;
        Stats::add(&self.stats.checkpoints, 1);
        Ok(())
    }

    async fn shard_ended(&self, shard_id: &Arc<str>) -> Result<(), Stop> {
        self.with_store_retry("checkpoint", shard_id, || {
            self.checkpoints
                .set_checkpoint(shard_id, &Checkpoint::ShardEnd)
        })
        .await?;
        Stats::add(&self.stats.checkpoints, 1);
        Ok(())
    }
}
