//! One shard's read loop: GetShardIterator, then GetRecords at a paced rate,
//! handing each batch to a [`BatchSink`] and waiting until it is done.
//!
//! The loop is sequential on purpose: a batch is processed (decoded,
//! tracked, delivered and checkpointed) before the next GetRecords. That
//! keeps each job's transitions in order, makes backpressure automatic (a
//! slow output simply delays the next read) and bounds memory to one batch
//! per shard. Across shards, a batch slot (`poll.max_batches_in_flight`,
//! shared by every reader of the worker) is held from each GetRecords call
//! until its batch is done, so the worker's data in flight does not grow
//! with the number of shards it reads.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorError;
use aws_sdk_kinesis::types::ShardIteratorType;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::kinesis::backoff_delay;
use super::{Origin, RawRecord};
use crate::config::PollConfig;

/// Where an iterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IteratorStart {
    TrimHorizon,
    Latest,
    AtTimestamp(OffsetDateTime),
    AfterSequence(String),
}

/// Why a [`BatchSink`] refused to go on. The reader stops at once, without
/// reading further: nothing after the last checkpoint is lost, it is read
/// again by whoever reads the shard next.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    #[error("shutting down")]
    ShuttingDown,
    #[error("lease for shard {0} lost")]
    LeaseLost(String),
}

/// What the reader hands its batches to.
#[async_trait]
pub trait BatchSink: Send + Sync {
    /// Processes one batch, in order. Returns once its records are done:
    /// their transitions delivered and the shard checkpointed past them.
    async fn process(
        &self,
        shard_id: &Arc<str>,
        records: Vec<RawRecord>,
        millis_behind: Option<i64>,
    ) -> Result<(), Stop>;

    /// The shard was read to SHARD_END; every batch before was processed.
    async fn shard_ended(&self, shard_id: &Arc<str>) -> Result<(), Stop>;

    /// What the reader saw, for metrics and health (`ops`). Called inline:
    /// must not block. The default ignores it.
    fn observe(&self, _shard_id: &Arc<str>, _event: ReaderEvent) {}

    /// What the lease coordinator holds after each of its cycles, for
    /// metrics and readiness (`ops`). Called inline: must not block. The
    /// default ignores it.
    fn leases_observed(&self, _view: super::coordinator::LeaseView) {}
}

/// A fact a reader reports to its sink's [`BatchSink::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderEvent {
    /// The reader runs: this worker reads (holds) the shard.
    Started,
    /// A GetRecords call answered.
    Polled {
        records: usize,
        millis_behind: Option<i64>,
    },
    /// A Kinesis call failed and will be retried.
    Failed { operation: &'static str },
    /// Kinesis keeps refusing to start this shard from its checkpoint (see
    /// the ERROR log); it stays so until a GetRecords call answers.
    Refused,
    /// The reader waits this long before its next call (pacing, an idle
    /// shard, a retry's backoff): it is alive meanwhile (liveness).
    Pausing { wait: Duration },
    /// The reader waits for a batch slot, held by other shards' batches
    /// (`poll.max_batches_in_flight`); those answer for their own liveness.
    WaitingForSlot,
    /// The reader has a slot and calls GetRecords.
    Polling,
    /// The reader returned (or panicked).
    Stopped,
}

/// Reports [`ReaderEvent::Stopped`] however the reader ends.
struct StoppedOnDrop(Arc<dyn BatchSink>, Arc<str>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.observe(&self.1, ReaderEvent::Stopped);
    }
}

/// How a reader finished.
#[derive(Debug)]
pub enum ReaderExit {
    /// The shard is closed and was read to its end.
    ShardEnded,
    /// Shutdown, or the sink refused to go on.
    Stopped(Stop),
}

pub struct ShardReader {
    pub client: Client,
    pub stream: Arc<str>,
    pub shard_id: Arc<str>,
    pub poll: PollConfig,
    /// Shared by every reader of the worker: one permit per GetRecords
    /// batch being fetched or processed (`poll.max_batches_in_flight`).
    pub batch_slots: Arc<Semaphore>,
}

impl ShardReader {
    /// Reads the shard from `start` until SHARD_END, shutdown, or a sink
    /// stop. Transient AWS errors are retried with backoff, forever: a shard
    /// must never be skipped, and on-call sees the warnings.
    pub async fn run(
        self,
        start: IteratorStart,
        sink: Arc<dyn BatchSink>,
        shutdown: CancellationToken,
    ) -> ReaderExit {
        // The last sequence number whose batch the sink finished. An
        // expired iterator resumes after it, never after what was merely
        // fetched.
        let mut last_done: Option<String> = match &start {
            IteratorStart::AfterSequence(s) => Some(s.clone()),
            _ => None,
        };
        let mut iterator: Option<String> = None;
        let mut failures: u32 = 0;
        // Consecutive GetShardIterator calls that Kinesis refused outright.
        let mut refusals: u32 = 0;
        let mut empty_polls: u32 = 0;
        let mut next_call = Instant::now();
        // When a record last arrived (or the reader started): how long the
        // shard has been quiet decides whether it is dormant.
        let mut last_record_at = Instant::now();
        sink.observe(&self.shard_id, ReaderEvent::Started);
        let _stopped = StoppedOnDrop(sink.clone(), self.shard_id.clone());

        loop {
            let wait = next_call.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                sink.observe(&self.shard_id, ReaderEvent::Pausing { wait });
            }
            tokio::select! {
                _ = shutdown.cancelled() => return ReaderExit::Stopped(Stop::ShuttingDown),
                _ = tokio::time::sleep_until(next_call) => {}
            }

            let it = match iterator.take() {
                Some(it) => it,
                None => {
                    let from = match &last_done {
                        Some(seq) => IteratorStart::AfterSequence(seq.clone()),
                        None => start.clone(),
                    };
                    // Abandoned on shutdown: an iterator costs nothing,
                    // and a slow Kinesis must not hold up the drain.
                    let got = tokio::select! {
                        _ = shutdown.cancelled() => return ReaderExit::Stopped(Stop::ShuttingDown),
                        got = self.get_iterator(&from) => got,
                    };
                    match got {
                        Ok(it) => {
                            refusals = 0;
                            it
                        }
                        Err((e, refused)) => {
                            refusals = if refused { refusals + 1 } else { 0 };
                            // Kinesis keeps refusing this shard or this
                            // checkpoint: retrying will not help, and the
                            // warnings below look like a passing outage.
                            // Say once, loudly, what the likely cause is.
                            if refusals >= REFUSALS_BEFORE_HINT {
                                sink.observe(&self.shard_id, ReaderEvent::Refused);
                            }
                            if refusals == REFUSALS_BEFORE_HINT {
                                tracing::error!(
                                    message = %format!(
                                        "Kinesis refuses to read this shard from its checkpoint; it will not be read until that changes. If the stream was deleted and created again under the same name, the store's checkpoints belong to the old stream: stop the workers and run `bulkwatch checkpoints reset --stream {} --shard {}` (and the same for any other shard named so).",
                                        self.stream, self.shard_id
                                    ),
                                    stream = %self.stream,
                                    shard = %self.shard_id,
                                    from = ?from,
                                    error = %format!("{e:#}"),
                                );
                            }
                            sink.observe(
                                &self.shard_id,
                                ReaderEvent::Failed {
                                    operation: "GetShardIterator",
                                },
                            );
                            failures += 1;
                            let wait = backoff_delay(
                                failures,
                                Duration::from_millis(200),
                                Duration::from_secs(10),
                            );
                            tracing::warn!(
                                message = "GetShardIterator failed; retrying.",
                                stream = %self.stream,
                                shard = %self.shard_id,
                                error = %format!("{e:#}"),
                                retry_in_ms = wait.as_millis() as u64
                            );
                            next_call = Instant::now() + wait;
                            continue;
                        }
                    }
                }
            };

            // A batch slot, held from the call until the batch is
            // processed, so the data in flight stays bounded however many
            // shards this worker reads. An empty poll gives it back at once.
            sink.observe(&self.shard_id, ReaderEvent::WaitingForSlot);
            let slot = tokio::select! {
                _ = shutdown.cancelled() => return ReaderExit::Stopped(Stop::ShuttingDown),
                slot = self.batch_slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    // Never closed; if it were, reading unbounded is wrong.
                    Err(_) => return ReaderExit::Stopped(Stop::ShuttingDown),
                },
            };
            sink.observe(&self.shard_id, ReaderEvent::Polling);
            let call_started = Instant::now();
            // A GetRecords call in flight is abandoned on shutdown: its
            // records have not reached the sink, so nothing is checkpointed
            // past them and they are read again after a restart. Waiting for
            // it instead could take the whole operation timeout (30 s) when
            // Kinesis is slow, far past the 5 s an ECS stop allows.
            let call = self
                .client
                .get_records()
                .shard_iterator(&it)
                .limit(self.poll.max_records)
                .send();
            let result = tokio::select! {
                _ = shutdown.cancelled() => return ReaderExit::Stopped(Stop::ShuttingDown),
                result = call => result,
            };
            // Kinesis allows 5 GetRecords calls/s per shard: pace from the
            // start of each call.
            next_call = call_started + self.poll.interval;

            let out = match result {
                Ok(out) => {
                    failures = 0;
                    out
                }
                Err(err) => {
                    let expired = matches!(
                        err.as_service_error(),
                        Some(GetRecordsError::ExpiredIteratorException(_))
                    );
                    if expired {
                        // Iterators live 5 minutes. A long stall (an output
                        // down) outlives one; take a fresh one after the
                        // last record we finished.
                        tracing::info!(
                            message = "Shard iterator expired; resuming after the last processed record.",
                            stream = %self.stream,
                            shard = %self.shard_id,
                            after_sequence_number = last_done.as_deref().unwrap_or("(start position)")
                        );
                        continue;
                    }
                    sink.observe(
                        &self.shard_id,
                        ReaderEvent::Failed {
                            operation: "GetRecords",
                        },
                    );
                    failures += 1;
                    let throttled = matches!(
                        err.as_service_error(),
                        Some(GetRecordsError::ProvisionedThroughputExceededException(_))
                    );
                    let wait = backoff_delay(
                        failures,
                        Duration::from_millis(500),
                        Duration::from_secs(10),
                    );
                    tracing::warn!(
                        message = "GetRecords failed; retrying with the same iterator.",
                        stream = %self.stream,
                        shard = %self.shard_id,
                        throttled,
                        error = %crate::aws_error::describe(&err),
                        retry_in_ms = wait.as_millis() as u64
                    );
                    iterator = Some(it);
                    next_call = Instant::now() + wait;
                    continue;
                }
            };

            let millis_behind = out.millis_behind_latest();
            sink.observe(
                &self.shard_id,
                ReaderEvent::Polled {
                    records: out.records.len(),
                    millis_behind,
                },
            );
            let next_iterator = out.next_shard_iterator().map(str::to_owned);
            let records: Vec<RawRecord> = out
                .records
                .into_iter()
                .map(|r| {
                    let arrival = r
                        .approximate_arrival_timestamp
                        .and_then(|t| OffsetDateTime::from_unix_timestamp_nanos(t.as_nanos()).ok());
                    RawRecord {
                        data: r.data.into_inner(),
                        partition_key: r.partition_key.unwrap_or_default(),
                        origin: Origin {
                            stream: self.stream.clone(),
                            shard_id: self.shard_id.clone(),
                            sequence_number: r.sequence_number,
                            arrival,
                        },
                    }
                })
                .collect();

            if let Some(last) = records.last() {
                let last_seq = last.origin.sequence_number.clone();
                empty_polls = 0;
                last_record_at = Instant::now();
                if let Err(stop) = self.sink_process(&sink, records, millis_behind).await {
                    return ReaderExit::Stopped(stop);
                }
                last_done = Some(last_seq);
            } else {
                empty_polls = empty_polls.saturating_add(1);
            }
            drop(slot);

            match next_iterator {
                Some(next) => {
                    iterator = Some(next);
                    // Caught up and nothing came: wait longer, up to the
                    // idle interval, so idle shards cost almost nothing.
                    // Behind: poll again as soon as the rate limit allows.
                    if empty_polls > 0 && millis_behind.unwrap_or(0) == 0 {
                        let quiet = call_started.saturating_duration_since(last_record_at);
                        next_call = call_started + idle_wait(&self.poll, empty_polls, quiet);
                    }
                }
                None => {
                    // SHARD_END: the shard was split or merged and every
                    // record has been read.
                    tracing::info!(
                        message = "Shard read to its end.",
                        stream = %self.stream,
                        shard = %self.shard_id
                    );
                    return match sink.shard_ended(&self.shard_id).await {
                        Ok(()) => ReaderExit::ShardEnded,
                        Err(stop) => ReaderExit::Stopped(stop),
                    };
                }
            }
        }
    }

    async fn sink_process(
        &self,
        sink: &Arc<dyn BatchSink>,
        records: Vec<RawRecord>,
        millis_behind: Option<i64>,
    ) -> Result<(), Stop> {
        sink.process(&self.shard_id, records, millis_behind).await
    }

    /// A new iterator. The error says whether Kinesis refused the shard or
    /// position itself (the shard is unknown, or the sequence number is
    /// not in it), as opposed to failing to answer.
    async fn get_iterator(&self, from: &IteratorStart) -> Result<String, (anyhow::Error, bool)> {
        let mut req = self
            .client
            .get_shard_iterator()
            .stream_name(self.stream.as_ref())
            .shard_id(self.shard_id.as_ref());
        req = match from {
            IteratorStart::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            IteratorStart::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
            IteratorStart::AtTimestamp(t) => req
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(
                    aws_sdk_kinesis::primitives::DateTime::from_nanos(t.unix_timestamp_nanos())
                        .map_err(|e| (anyhow::anyhow!(e), false))?,
                ),
            IteratorStart::AfterSequence(s) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(s),
        };
        let out = req.send().await.map_err(|e| {
            let refused = matches!(
                e.as_service_error(),
                Some(
                    GetShardIteratorError::ResourceNotFoundException(_)
                        | GetShardIteratorError::InvalidArgumentException(_)
                )
            );
            (anyhow::anyhow!(crate::aws_error::describe(&e)), refused)
        })?;
        out.shard_iterator().map(str::to_owned).ok_or_else(|| {
            (
                anyhow::anyhow!("GetShardIterator returned no iterator"),
                false,
            )
        })
    }
}

/// Refused GetShardIterator calls in a row before the reader says, once,
/// that the checkpoint does not fit the stream. A shard that was just
/// created can be refused briefly; five tries with backoff take ~6 s.
const REFUSALS_BEFORE_HINT: u32 = 5;

/// The wait after `empty` consecutive empty polls of a caught-up shard that
/// has had no record for `quiet`: the base interval for the first second or
/// so (a job's next event often follows quickly), then doubling up to the
/// idle interval; once the shard has been quiet for `dormant_after`, the
/// dormant interval.
fn idle_wait(poll: &PollConfig, empty: u32, quiet: Duration) -> Duration {
    if quiet >= poll.dormant_after {
        return poll.dormant_interval;
    }
    let grace_polls = 5;
    if empty <= grace_polls {
        return poll.interval;
    }
    poll.interval
        .saturating_mul(1u32 << (empty - grace_polls).min(10))
        .min(poll.idle_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_idle_shard_backs_off_to_the_idle_interval() {
        let poll = PollConfig::default();
        let waits: Vec<_> = (1..=9).map(|n| idle_wait(&poll, n, 3 * MS)).collect();
        assert_eq!(
            waits,
            [200, 200, 200, 200, 200, 400, 800, 1000, 1000].map(|ms| ms * MS)
        );
    }

    #[test]
    fn a_shard_quiet_for_dormant_after_is_polled_at_the_dormant_interval() {
        let poll = PollConfig::default();
        let just_before = poll.dormant_after - MS;
        assert_eq!(idle_wait(&poll, 300, just_before), poll.idle_interval);
        assert_eq!(
            idle_wait(&poll, 300, poll.dormant_after),
            poll.dormant_interval
        );
        assert_eq!(poll.dormant_interval, Duration::from_secs(10));
    }

    #[test]
    fn dormancy_is_off_when_its_interval_is_the_idle_interval() {
        let poll = PollConfig {
            dormant_interval: Duration::from_secs(1),
            ..PollConfig::default()
        };
        assert_eq!(
            idle_wait(&poll, 1_000, Duration::from_secs(3600)),
            Duration::from_secs(1)
        );
    }
}
