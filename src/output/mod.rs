//! The output stage: delivers transitions to every configured output, at
//! least once, and keeps the dead-letter output.
//!
//! # Shape
//!
//! ```text
//!                 ┌─ bounded queue ─▶ task: stdout   ─┐
//! deliver(batch) ─┼─ bounded queue ─▶ task: webhook  ─┼─ acks ─▶ deliver returns
//!                 └─ bounded queue ─▶ task: sqs      ─┘
//!                          (undeliverable) │
//! dead_letter(entry) ──────────────────────┴─▶ task: dead-letter (file | SQS)
//! ```
//!
//! - Each output has its own task ([`task`]) and a queue of at most
//!   `[delivery] queue_capacity` batches. `deliver` puts the batch (one
//!   shared `Arc`) on every queue and resolves when every output has acked
//!   it. A slow output fills its queue; then `deliver` waits, so the pipeline
//!   stops reading (backpressure) while the other outputs keep working
//!   through what they already hold.
//! - An output acks a batch only when each transition in it was delivered
//!   durably, filtered out, or durably written to dead-letter (refused, or
//!   past the retry policy).
//!
//! # Architecture invariants
//! - `deliver` returning `Ok` means durable everywhere: the caller may
//!   checkpoint. `Err(OutputsClosed)` means maybe not: it must not.
//! - Nothing is dropped silently: every transition ends in a counter
//!   ([`OutputCounters`]) and either its destination or dead-letter.
//! - An output never knows about Kinesis; the dead-letter entry's origin
//!   comes from the caller (bad records) or the transition's own JSON.

mod aws;
pub mod config;
mod dead_letter;
mod filter;
mod local;
mod sink;
mod stats;
mod task;
pub mod webhook;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context, bail};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub use self::{
    config::{
        DeadLetterConfig, DeliveryConfig, EventBridgeConfig, FileConfig, FilterConfig,
        OutputConfig, OutputKind, OutputsConfig, Secret, SnsConfig, SqsConfig, StdoutConfig,
        WebhookConfig,
    },
    dead_letter::DeadLetter,
    stats::{DeadLetterCounters, DeadLetterStats, OutputCounters, OutputStats, StatsSnapshot},
};
use self::{
    dead_letter::{DeadLetterQueue, DeadLetterSink, Entry},
    filter::Filter,
    sink::Sink,
    task::{Job, OutputTask, RetryPolicy},
};
use crate::track::Transition;

/// The outputs are shutting down or closed: the batch (or entry) may not be
/// durable, so the caller must not checkpoint past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the outputs are shutting down; the batch was not acknowledged")]
pub struct OutputsClosed;

/// The running outputs. Cheap to clone; every clone feeds the same tasks.
#[derive(Clone)]
pub struct Outputs {
    inner: Arc<Inner>,
}

struct Inner {
    outputs: Vec<OutputHandle>,
    dead_letter: DeadLetterQueue,
    shutdown: CancellationToken,
    closing: CancellationToken,
    tasks: Mutex<Vec<(String, JoinHandle<()>)>>,
    dead_letter_task: Mutex<Option<JoinHandle<()>>>,
}

struct OutputHandle {
    name: String,
    kind: &'static str,
    queue: mpsc::Sender<Job>,
    counters: Arc<OutputCounters>,
}

/// An output ready to run: what `start` builds from the config (and tests
/// build by hand with fake sinks).
pub(crate) struct Built {
    pub name: String,
    pub kind: &'static str,
    pub sink: Box<dyn Sink>,
    pub filter: Filter,
}

impl Outputs {
    /// Builds every configured output and spawns its delivery task.
    ///
    /// The settings are validated by the config stage before this runs
    /// ([`OutputsConfig::validate`], [`OutputsConfig::check_secrets`]: a bad
    /// URL, a missing secret, an unknown status); they are checked again
    /// here for callers that build an `OutputsConfig` themselves. What only
    /// start-up can find out fails here: a file that cannot be opened, a
    /// client that cannot be built.
    ///
    /// `shutdown`: once cancelled, outputs finish the attempt in flight but
    /// start no new one, and every waiting `deliver` returns
    /// [`OutputsClosed`]. Pass a token that is cancelled when in-flight
    /// batches should be abandoned (after a drain deadline), not necessarily
    /// the moment SIGTERM arrives.
    pub async fn start(
        config: &OutputsConfig,
        aws: &aws_config::SdkConfig,
        state_dir: &Path,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Outputs> {
        // Validate everything before opening files or spawning anything.
        config.validate().map_err(anyhow::Error::msg)?;
        config.check_secrets().map_err(anyhow::Error::msg)?;
        RetryPolicy::new(&config.delivery)?;
        let dead_letter: Box<dyn DeadLetterSink> = match &config.dead_letter {
            None => Box::new(
                dead_letter::FileDeadLetter::open(&state_dir.join("dead-letter.jsonl"), &shutdown)
                    .await?,
            ),
            Some(DeadLetterConfig::File(f)) => {
                Box::new(dead_letter::FileDeadLetter::open(&f.path, &shutdown).await?)
            }
            Some(DeadLetterConfig::Sqs(s)) => Box::new(dead_letter::SqsDeadLetter::new(aws, s)),
        };

        // With nothing configured, transitions go to stdout: a first run
        // shows what bulkwatch does without any output set up.
        let default = [OutputConfig::new(OutputKind::Stdout(StdoutConfig {}))];
        let configs = if config.outputs.is_empty() {
            &default[..]
        } else {
            &config.outputs
        };
        let mut built = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let kind = c.kind.type_name();
            // Unique: `validate` checked it.
            let name = c.name_or_default(i);
            let filter = Filter::new(&c.filter).with_context(|| format!("output {name:?}"))?;
            let sink: Box<dyn Sink> = match &c.kind {
                OutputKind::Stdout(_) => Box::new(local::StdoutSink::new(&shutdown)),
                OutputKind::File(f) => Box::new(
                    local::FileSink::open(&f.path, &shutdown)
                        .await
                        .with_context(|| format!("output {name:?}"))?,
                ),
                OutputKind::Webhook(w) => Box::new(
                    webhook::WebhookSink::new(w).with_context(|| format!("output {name:?}"))?,
                ),
                OutputKind::Sqs(s) => Box::new(aws::SqsSink::new(aws, s)),
                OutputKind::Sns(s) => Box::new(aws::SnsSink::new(aws, s)),
                OutputKind::EventBridge(e) => Box::new(aws::EventBridgeSink::new(aws, e)),
            };
            built.push(Built {
                name,
                kind,
                sink,
                filter,
            });
        }
        let outputs = Self::from_parts(built, dead_letter, &config.delivery, shutdown)?;
        for o in &outputs.inner.outputs {
            tracing::info!(message = "Output started.", output = %o.name, kind = o.kind);
        }
        Ok(outputs)
    }

    /// Spawns the tasks for already-built outputs.
    pub(crate) fn from_parts(
        built: Vec<Built>,
        dead_letter: Box<dyn DeadLetterSink>,
        delivery: &DeliveryConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Outputs> {
        let policy = RetryPolicy::new(delivery)?;
        if delivery.queue_capacity == 0 {
            bail!("[delivery] queue_capacity must be at least 1");
        }
        let (dead_letter, dead_letter_task) =
            DeadLetterQueue::spawn(dead_letter, policy.clone(), shutdown.clone());
        let closing = CancellationToken::new();
        let mut outputs = Vec::with_capacity(built.len());
        let mut tasks = Vec::with_capacity(built.len());
        for b in built {
            let (tx, rx) = mpsc::channel(delivery.queue_capacity);
            let counters = Arc::new(OutputCounters::default());
            let task = OutputTask {
                name: b.name.clone(),
                sink: b.sink,
                filter: b.filter,
                policy: policy.clone(),
                dead_letter: dead_letter.clone(),
                counters: counters.clone(),
                shutdown: shutdown.clone(),
                closing: closing.clone(),
            };
            tasks.push((b.name.clone(), tokio::spawn(task.run(rx))));
            outputs.push(OutputHandle {
                name: b.name,
                kind: b.kind,
                queue: tx,
                counters,
            });
        }
        Ok(Outputs {
            inner: Arc::new(Inner {
                outputs,
                dead_letter,
                shutdown,
                closing,
                tasks: Mutex::new(tasks),
                dead_letter_task: Mutex::new(Some(dead_letter_task)),
            }),
        })
    }

    /// Delivers one batch (in order) to every output; resolves once every
    /// output has durably delivered, filtered or dead-lettered each
    /// transition. Waits while an output's queue is full (backpressure).
    /// Errors only when the outputs are shutting down or closed: then the
    /// caller must NOT checkpoint.
    ///
    /// Concurrent calls are fine (one per shard); each output keeps the order
    /// in which their batches reached its queue.
    pub async fn deliver(&self, transitions: Arc<[Transition]>) -> Result<(), OutputsClosed> {
        let inner = &self.inner;
        if inner.closing.is_cancelled() || inner.shutdown.is_cancelled() {
            return Err(OutputsClosed);
        }
        if transitions.is_empty() {
            return Ok(());
        }
        let enqueued = Instant::now();
        let mut acks = Vec::with_capacity(inner.outputs.len());
        // Queued one output after the other: while a full queue holds us
        // here, the outputs already served (and those after) keep working
        // through their queues.
        for out in &inner.outputs {
            let (ack, acked) = oneshot::channel();
            let job = Job {
                batch: transitions.clone(),
                enqueued,
                ack,
            };
            tokio::select! {
                biased;
                _ = inner.shutdown.cancelled() => return Err(OutputsClosed),
                sent = out.queue.send(job) => sent.map_err(|_| OutputsClosed)?,
            }
            acks.push(acked);
        }
        for acked in acks {
            // A task that stops (shutdown) drops its unacked jobs.
            acked.await.map_err(|_| OutputsClosed)?;
        }
        Ok(())
    }

    /// Durably writes one dead-letter entry (a bad record, typically).
    /// Errors only when shutting down; then the caller must not checkpoint
    /// past the record.
    pub async fn dead_letter(&self, entry: DeadLetter) -> Result<(), OutputsClosed> {
        if self.inner.shutdown.is_cancelled() {
            return Err(OutputsClosed);
        }
        let had_output = entry.output.is_some();
        self.inner.dead_letter.write(Entry::from(entry)).await?;
        let c = &self.inner.dead_letter.counters;
        OutputCounters::add(
            if had_output {
                &c.undeliverable
            } else {
                &c.bad_records
            },
            1,
        );
        Ok(())
    }

    /// Lets every output finish its queue (empty, if called after the last
    /// `deliver` returned), then stops the tasks and the dead-letter output.
    /// If an output is still retrying, this waits for it, or for `shutdown`.
    pub async fn close(self) -> anyhow::Result<()> {
        let inner = &self.inner;
        inner.closing.cancel();
        let tasks = std::mem::take(&mut *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut failed = Vec::new();
        for (name, task) in tasks {
            if let Err(e) = task.await {
                failed.push(format!("output {name}: {e}"));
            }
        }
        // Outputs may dead-letter while draining, so this goes last.
        inner.dead_letter.close();
        let dl = inner
            .dead_letter_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = dl
            && let Err(e) = task.await
        {
            failed.push(format!("dead-letter: {e}"));
        }
        if !failed.is_empty() {
            bail!("output tasks failed: {}", failed.join("; "));
        }
        Ok(())
    }

    /// Every counter, now.
    pub fn stats(&self) -> StatsSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        StatsSnapshot {
            outputs: self
                .inner
                .outputs
                .iter()
                .map(|o| OutputStats {
                    name: o.name.clone(),
                    kind: o.kind.to_owned(),
                    delivered: o.counters.delivered.load(Relaxed),
                    filtered: o.counters.filtered.load(Relaxed),
                    failed_attempts: o.counters.failed_attempts.load(Relaxed),
                    rejected: o.counters.rejected.load(Relaxed),
                    exhausted: o.counters.exhausted.load(Relaxed),
                    queued_batches: o.queue.max_capacity() - o.queue.capacity(),
                })
                .collect(),
            dead_letter: self.inner.dead_letter.counters.snapshot(),
        }
    }

    /// The live counters of each output, by name, for a metrics exporter
    /// that wants to read them itself.
    pub fn counters(&self) -> Vec<(String, Arc<OutputCounters>)> {
        self.inner
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.counters.clone()))
            .collect()
    }

    /// The live dead-letter counters.
    pub fn dead_letter_counters(&self) -> Arc<DeadLetterCounters> {
        self.inner.dead_letter.counters.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests;
