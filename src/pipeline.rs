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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::decode::{Decoded, decode};
use crate::ops::metrics::Metrics;
use crate::output::{DeadLetter, Outputs};
use crate::source::RawRecord;
use crate::source::coordinator::LeaseView;
use crate::source::reader::{BatchSink, ReaderEvent, Stop};
use crate::store::{Checkpoint, CheckpointStore, StoreError};
use crate::track::{Tracker, Transition, Verdict};

pub struct Pipeline {
    pub tracker: Tracker,
    pub outputs: Outputs,
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// Counters, gauges and health stamps (`ops::metrics`); its exit summary
    /// is the log line `pipeline::Stats` used to write.
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

impl Pipeline {
    /// Retries a store call until it answers. Giving up would mean either
    /// skipping records or checkpointing unsafely; waiting is the only
    /// correct choice, and the warning tells on-call why the shard stalls.
    /// After shutdown it stops trying, leaving the checkpoint behind.
    async fn with_store_retry<T, F, Fut>(
        &self,
        what: &'static str,
        at: (&str, &str, &str),
        mut f: F,
    ) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 0u32;
        let shard = at.1;
        loop {
            self.metrics.shard_beat(shard);
            match f().await {
                Ok(v) => {
                    self.metrics.store_ok();
                    return Ok(v);
                }
                Err(StoreError::LeaseLost { shard_id }) => return Err(Stop::LeaseLost(shard_id)),
                Err(e) => {
                    self.metrics.store_failed(what);
                    attempt += 1;
                    let wait = crate::source::kinesis::backoff_delay(
                        attempt,
                        Duration::from_millis(100),
                        Duration::from_secs(10),
                    );
                    let (stream, shard, sequence_number) = at;
                    tracing::warn!(message = "Store call failed; retrying.", operation = what, stream, shard, sequence_number, error = %e, attempt, retry_in_ms = wait.as_millis() as u64);
                    self.metrics.shard_expect(shard, wait);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.cancelled() => return Err(Stop::ShuttingDown),
                    }
                }
            }
        }
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
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(());
        };
        // Every line logged while this batch is processed, by any stage
        // (the tracker's, the store's), names the stream, the shard and the
        // batch's sequence range through this span; lines about one record
        // also carry its own sequence number.
        let span = tracing::info_span!(
            "batch",
            stream = %first.origin.stream,
            shard = %shard_id,
            first_sequence_number = %first.origin.sequence_number,
            last_sequence_number = %last.origin.sequence_number,
        );
        self.process_batch(shard_id, records).instrument(span).await
    }

    async fn shard_ended(&self, shard_id: &Arc<str>) -> Result<(), Stop> {
        self.with_store_retry("checkpoint", ("", shard_id, "SHARD_END"), || {
            self.checkpoints
                .set_checkpoint(shard_id, &Checkpoint::ShardEnd)
        })
        .await?;
        self.metrics.checkpointed(shard_id);
        Ok(())
    }

    fn observe(&self, shard_id: &Arc<str>, event: ReaderEvent) {
        match event {
            ReaderEvent::Started => self.metrics.reader_started(shard_id),
            ReaderEvent::Polled {
                records,
                millis_behind,
            } => self.metrics.polled(shard_id, records, millis_behind),
            ReaderEvent::Failed { operation } => {
                self.metrics.kinesis_error(operation);
                self.metrics.shard_beat(shard_id);
            }
            ReaderEvent::Refused => self.metrics.shard_refused(shard_id),
            ReaderEvent::Pausing { wait } => self.metrics.shard_expect(shard_id, wait),
            ReaderEvent::WaitingForSlot => self.metrics.shard_park(shard_id),
            ReaderEvent::Polling => self.metrics.shard_beat(shard_id),
            ReaderEvent::Stopped => self.metrics.reader_stopped(shard_id),
        }
    }

    fn leases_observed(&self, view: LeaseView) {
        self.metrics.leases_observed(view);
    }
}

impl Pipeline {
    async fn process_batch(
        &self,
        shard_id: &Arc<str>,
        records: Vec<RawRecord>,
    ) -> Result<(), Stop> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let last_seq = last.origin.sequence_number.clone();
        let stream = last.origin.stream.clone();
        let bytes = records.iter().map(|r| r.data.len()).sum();
        // Marks the batch in flight (checkpoint lag) until this returns.
        let _in_flight =
            self.metrics
                .batch_started(shard_id, records.len(), bytes, last.origin.arrival);

        let mut events = Vec::with_capacity(records.len());
        for rec in records {
            let decoded = decode(&rec.data, rec.origin.arrival);
            self.metrics.decoded(decoded.class());
            match decoded {
                Decoded::Job(ev) => events.push((ev, rec.origin)),
                Decoded::SinkTest(t) => {
                    tracing::info!(message = "Sink test event received.", test_id = %t.test_id, source = %t.source, event_id = %t.id, stream = %rec.origin.stream, shard = %rec.origin.shard_id, sequence_number = %rec.origin.sequence_number);
                }
                Decoded::Other(o) => {
                    // Other Twilio types may share the stream; one line
                    // per type is enough, the counter tells the rest.
                    if self.metrics.other_type_seen(&o.event_type) {
                        tracing::info!(message = "Passing over events of another type (logged once per type).", event_type = %o.event_type, stream = %rec.origin.stream, shard = %rec.origin.shard_id, sequence_number = %rec.origin.sequence_number);
                    }
                }
                Decoded::Bad(err) => {
                    let reason = err.to_string();
                    tracing::warn!(message = "Bad record; writing it to dead-letter.", reason = %reason, stream = %rec.origin.stream, shard = %rec.origin.shard_id, sequence_number = %rec.origin.sequence_number);
                    let entry = DeadLetter {
                        reason,
                        payload: rec.data,
                        origin: rec.origin,
                        output: None,
                        transition: None,
                        response: None,
                    };
                    // Waiting on the dead-letter task, which answers for its
                    // own liveness (it may be retrying a down destination).
                    self.metrics.shard_park(shard_id);
                    let written = self.outputs.dead_letter(entry).await;
                    self.metrics.shard_beat(shard_id);
                    written.map_err(|_| Stop::ShuttingDown)?;
                }
            }
        }

        let at = (&*stream, &**shard_id, last_seq.as_str());
        if !events.is_empty() {
            let verdicts = self
                .with_store_retry("track", at, || self.tracker.track(&events))
                .await?;
            let mut transitions: Vec<Transition> = Vec::new();
            // The tracker returns one verdict per event, in order.
            for (v, (ev, origin)) in verdicts.into_iter().zip(&events) {
                self.metrics.verdict(&v);
                match v {
                    Verdict::Transition(t) | Verdict::Replayed(t) => transitions.push(t),
                    dropped => {
                        let why = match dropped {
                            Verdict::Duplicate => "duplicate",
                            Verdict::Repeat => "repeat",
                            _ => "stale",
                        };
                        tracing::debug!(message = "Job event dropped.", reason = why, job_sid = %ev.data.job_sid, event_id = %ev.id, status = %ev.data.status, stream = %origin.stream, shard = %origin.shard_id, sequence_number = %origin.sequence_number);
                    }
                }
            }
            if !transitions.is_empty() {
                // Waiting on the outputs (a slow or down one, backpressure):
                // each output task answers for its own liveness, so this
                // pipeline is not stalled however long it waits.
                self.metrics.shard_park(shard_id);
                let delivered = self.outputs.deliver(transitions.into()).await;
                self.metrics.shard_beat(shard_id);
                delivered.map_err(|_| Stop::ShuttingDown)?;
            }
        }

        let cp = Checkpoint::Sequence(last_seq.clone());
        self.with_store_retry("checkpoint", at, || {
            self.checkpoints.set_checkpoint(shard_id, &cp)
        })
        .await?;
        self.metrics.checkpointed(shard_id);
        Ok(())
    }
}
