//! The delivery task each output runs: takes batches from its bounded queue
//! one at a time, in order, and acknowledges a batch once every transition in
//! it is delivered, filtered out, or durably dead-lettered.
//!
//! Ordering: within a batch, a job's transitions are sent in "waves": wave k
//! holds the k-th pending transition of each job, and a job whose transition
//! failed in this round sits out the later waves. So one job's transitions
//! never overtake each other, yet transitions of different jobs go together
//! (one SQS batch call, concurrent webhook requests). The next batch starts
//! only after this one is done.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    OutputsClosed,
    config::DeliveryConfig,
    dead_letter::{DeadLetterQueue, Entry, origin_of},
    filter::{Filter, status_str},
    sink::{Item, Outcome, SendContext, Sink},
    stats::{OutputCounters, set_failing},
};
use crate::track::Transition;

/// One batch on its way through one output's queue.
pub(crate) struct Job {
    pub batch: Arc<[Transition]>,
    /// When `deliver` took it: the start of `max_record_age`.
    pub enqueued: Instant,
    /// Dropped unacknowledged when the task stops: `deliver` then returns
    /// `OutputsClosed`.
    pub ack: oneshot::Sender<()>,
}

/// `[delivery]`'s retry half, validated.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    max_attempts: u32,
    max_record_age: Duration,
    backoff: ExponentialBuilder,
}

impl RetryPolicy {
    pub(crate) fn new(c: &DeliveryConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            c.backoff_min > Duration::ZERO && c.backoff_min <= c.backoff_max,
            "[delivery] needs 0 < backoff_min <= backoff_max (got {:?} and {:?})",
            c.backoff_min,
            c.backoff_max
        );
        Ok(Self {
            max_attempts: c.max_attempts,
            max_record_age: c.max_record_age,
            backoff: ExponentialBuilder::default()
                .with_min_delay(c.backoff_min)
                .with_max_delay(c.backoff_max)
                .with_factor(2.0)
                // Full jitter on top of the delay ([d, 2d)): many workers
                // that lost the same webhook must not retry in lockstep.
                .with_jitter()
                .without_max_times(),
        })
    }

    /// A fresh sequence of delays (never ends: the policy decides when to
    /// stop, per transition).
    pub(crate) fn backoff(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        self.backoff.build()
    }

    /// Why a transition that failed `attempts` times and was taken `age` ago
    /// must not be retried any more, if so.
    pub(crate) fn exhausted(&self, attempts: u32, age: Duration) -> Option<String> {
        if self.max_attempts > 0 && attempts >= self.max_attempts {
            return Some(format!("gave up after {attempts} attempts (max_attempts)"));
        }
        if !self.max_record_age.is_zero() && age >= self.max_record_age {
            return Some(format!(
                "gave up after {attempts} attempts: older than max_record_age ({})",
                humantime::format_duration(self.max_record_age)
            ));
        }
        None
    }
}

pub(crate) struct OutputTask {
    pub name: String,
    pub sink: Box<dyn Sink>,
    pub filter: Filter,
    pub policy: RetryPolicy,
    pub dead_letter: DeadLetterQueue,
    pub counters: Arc<OutputCounters>,
    pub shutdown: CancellationToken,
    /// Set by `Outputs::close`: finish what is queued, then stop.
    pub closing: CancellationToken,
}

impl OutputTask {
    pub(crate) async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        loop {
            // Waiting for work is alive, however long it lasts (liveness).
            self.counters.heartbeat.park();
            let job = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                job = queue.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                // Reached only with an empty queue, thanks to `biased`.
                _ = self.closing.cancelled() => break,
            };
            self.counters.heartbeat.beat();
            match self.deliver(&job).await {
                Ok(()) => {
                    self.counters.batch_latency.observe(job.enqueued.elapsed());
                    // The receiver may be gone (caller dropped `deliver`);
                    // the batch was delivered all the same.
                    let _ = job.ack.send(());
                }
                // Shutting down: drop the ack (and the queued jobs with
                // `queue`), so every waiting `deliver` gets OutputsClosed.
                Err(OutputsClosed) => break,
            }
        }
        // A stopped task is not a stuck one (liveness).
        self.counters.heartbeat.park();
        tracing::debug!(message = "Output task stopped.", output = %self.name);
    }

    async fn deliver(&mut self, job: &Job) -> Result<(), OutputsClosed> {
        let mut pending = Vec::new();
        let mut dead = Vec::new();
        for t in job.batch.iter() {
            if !self.filter.accepts(t) {
                OutputCounters::add(&self.counters.filtered, 1);
                continue;
            }
            match serde_json::to_string(t) {
                Ok(body) => pending.push(Item {
                    job_sid: t.job_sid.clone(),
                    transition_id: t.transition_id.to_string(),
                    status: status_str(t),
                    body,
                    attempts: 0,
                }),
                // Cannot happen with the derive'd Serialize; if it ever does,
                // the transition is kept in dead-letter, not lost.
                Err(e) => {
                    OutputCounters::add(&self.counters.rejected, 1);
                    dead.push(Entry {
                        reason: format!(
                            "output {}: the transition could not be serialized: {e}",
                            self.name
                        ),
                        payload: Vec::new(),
                        origin: None,
                        output: Some(self.name.clone()),
                        transition: None,
                        response: None,
                        attempts: Some(0),
                    });
                }
            }
        }
        self.dead_letter_all(dead).await?;

        let mut backoff = self.policy.backoff();
        while !pending.is_empty() {
            let results = self.round(&pending).await;
            let mut next = Vec::with_capacity(pending.len());
            let mut dead = Vec::new();
            let mut retry_after: Option<Duration> = None;
            let mut last_error = None;
            let mut failed = 0usize;
            let mut answered = false;
            for (mut item, result) in pending.into_iter().zip(results) {
                match result {
                    // Held back behind an earlier transition of its job, or
                    // not sent because shutdown's grace ran out: no attempt
                    // was made, so none is counted.
                    None | Some(Outcome::NotSent) => next.push(item),
                    Some(Outcome::Delivered) => {
                        answered = true;
                        OutputCounters::add(&self.counters.delivered, 1)
                    }
                    Some(Outcome::Reject { error, response }) => {
                        answered = true;
                        OutputCounters::add(&self.counters.rejected, 1);
                        item.attempts += 1;
                        let entry =
                            self.entry(&item, format!("output {}: {error}", self.name), response);
                        let (stream, shard, seq) = origin_fields(&entry);
                        tracing::warn!(
                            message = "Output refused a transition; sending it to dead-letter.",
                            output = %self.name,
                            transition_id = %item.transition_id,
                            job_sid = %item.job_sid,
                            stream, shard, sequence_number = seq,
                            %error,
                        );
                        dead.push(entry);
                    }
                    Some(Outcome::Retry { error, after }) => {
                        OutputCounters::add(&self.counters.failed_attempts, 1);
                        failed += 1;
                        item.attempts += 1;
                        retry_after = retry_after.max(after);
                        match self.policy.exhausted(item.attempts, job.enqueued.elapsed()) {
                            Some(why) => {
                                OutputCounters::add(&self.counters.exhausted, 1);
                                let reason =
                                    format!("output {}: {why}; last error: {error}", self.name);
                                let entry = self.entry(&item, reason, Some(error.clone()));
                                let (stream, shard, seq) = origin_fields(&entry);
                                tracing::error!(
                                    message = "Output could not deliver a transition; sending it to dead-letter.",
                                    output = %self.name,
                                    transition_id = %item.transition_id,
                                    job_sid = %item.job_sid,
                                    stream, shard, sequence_number = seq,
                                    reason = %why,
                                    %error,
                                );
                                dead.push(entry);
                            }
                            None => {
                                last_error = Some(error);
                                next.push(item);
                            }
                        }
                    }
                }
            }
            // Degraded delivery, for readiness: every attempt of this round
            // failed (a round that delivered or refused something shows the
            // destination answers).
            set_failing(&self.counters.failing_since, failed > 0 && !answered);
            self.dead_letter_all(dead).await?;
            pending = next;
            if pending.is_empty() {
                break;
            }
            if self.shutdown.is_cancelled() {
                return Err(OutputsClosed);
            }
            // Only held-back items left (their predecessor was just
            // dead-lettered or delivered): go again at once.
            if failed == 0 {
                continue;
            }
            let delay = backoff
                .next()
                .unwrap_or(Duration::from_secs(30))
                .max(retry_after.unwrap_or_default());
            // Name the oldest pending transition and its record, so the
            // line leads to a stream, shard and sequence number like every
            // other line about records.
            let first = pending.first();
            let origin = first
                .and_then(|i| serde_json::from_str::<serde_json::Value>(&i.body).ok())
                .as_ref()
                .and_then(origin_of);
            tracing::warn!(
                message = "Output delivery failed; retrying.",
                output = %self.name,
                transition_id = first.map_or("", |i| i.transition_id.as_str()),
                job_sid = first.map_or("", |i| i.job_sid.as_str()),
                stream = origin.as_ref().map_or("", |o| &*o.stream),
                shard = origin.as_ref().map_or("", |o| &*o.shard_id),
                sequence_number = origin.as_ref().map_or("", |o| o.sequence_number.as_str()),
                failed,
                pending = pending.len(),
                attempts = pending.iter().map(|i| i.attempts).max().unwrap_or(0),
                error = last_error.as_deref().unwrap_or(""),
                retry_in = ?delay,
            );
            // A wait of known length, Retry-After included (up to 5 min,
            // longer than `ops.live_stall`): the output is alive until it
            // ends, so liveness does not restart a worker for honouring it.
            self.counters.heartbeat.expect(delay);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.cancelled() => return Err(OutputsClosed),
            }
            self.counters.heartbeat.beat();
        }
        Ok(())
    }

    /// One attempt for every pending item that is not held back; `None` for
    /// the held-back ones.
    async fn round(&mut self, pending: &[Item]) -> Vec<Option<Outcome>> {
        let mut results: Vec<Option<Outcome>> = vec![None; pending.len()];
        let mut blocked: HashSet<&str> = HashSet::new();
        let ctx = SendContext::new(self.shutdown.clone(), self.counters.clone());
        for wave in waves(pending) {
            // An attempt in flight is finished on shutdown, a new one is not
            // started (the rest stay pending and are not acknowledged). The
            // sink checks again before each request of the wave.
            if self.shutdown.is_cancelled() {
                break;
            }
            let sendable: Vec<usize> = wave
                .into_iter()
                .filter(|&i| !blocked.contains(pending[i].job_sid.as_str()))
                .collect();
            if sendable.is_empty() {
                continue;
            }
            let items: Vec<&Item> = sendable.iter().map(|&i| &pending[i]).collect();
            self.counters.heartbeat.beat();
            let attempt = Instant::now();
            let outcomes = self.sink.send(&items, &ctx).await;
            self.counters.attempted(attempt.elapsed());
            self.counters.heartbeat.beat();
            for (k, &i) in sendable.iter().enumerate() {
                let outcome = outcomes
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| Outcome::retry("the output returned no outcome"));
                // A job whose transition is still pending sits out the
                // later waves: its next one must not overtake it.
                if matches!(outcome, Outcome::Retry { .. } | Outcome::NotSent) {
                    blocked.insert(pending[i].job_sid.as_str());
                }
                results[i] = Some(outcome);
            }
        }
        results
    }

    fn entry(&self, item: &Item, reason: String, response: Option<String>) -> Entry {
        let transition = serde_json::from_str::<serde_json::Value>(&item.body).ok();
        Entry {
            reason,
            payload: item.body.as_bytes().to_vec(),
            origin: transition.as_ref().and_then(origin_of),
            output: Some(self.name.clone()),
            transition,
            response,
            attempts: Some(item.attempts),
        }
    }

    /// Writes all entries (the dead-letter task groups them into one write)
    /// and waits until they are durable.
    async fn dead_letter_all(&self, entries: Vec<Entry>) -> Result<(), OutputsClosed> {
        if entries.is_empty() {
            return Ok(());
        }
        // Waiting for the dead-letter task, which has a heartbeat of its
        // own: while it retries a down destination, this output is alive.
        self.counters.heartbeat.park();
        let written = self.dead_letter_entries(entries).await;
        self.counters.heartbeat.beat();
        written
    }

    async fn dead_letter_entries(&self, entries: Vec<Entry>) -> Result<(), OutputsClosed> {
        let n = entries.len() as u64;
        let mut acks = Vec::with_capacity(entries.len());
        for e in entries {
            acks.push(self.dead_letter.submit(e).await?);
        }
        for ack in acks {
            ack.await.map_err(|_| OutputsClosed)?;
        }
        OutputCounters::add(&self.dead_letter.counters.undeliverable, n);
        Ok(())
    }
}

/// Stream, shard and sequence number of the record behind an entry, for
/// log lines (every line about a record names them).
fn origin_fields(e: &Entry) -> (&str, &str, &str) {
    e.origin.as_ref().map_or(("", "", ""), |o| {
        (&*o.stream, &*o.shard_id, o.sequence_number.as_str())
    })
}

/// Indices of `pending`, grouped so that wave k holds each job's k-th item.
fn waves(pending: &[Item]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for (i, item) in pending.iter().enumerate() {
        let k = seen.entry(item.job_sid.as_str()).or_insert(0);
        if waves.len() <= *k {
            waves.push(Vec::new());
        }
        waves[*k].push(i);
        *k += 1;
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(job: &str) -> Item {
        Item {
            job_sid: job.into(),
            transition_id: String::new(),
            status: String::new(),
            body: String::new(),
            attempts: 0,
        }
    }

    #[test]
    fn waves_keep_each_jobs_order() {
        let pending: Vec<Item> = ["A", "B", "A", "C", "A", "B"]
            .iter()
            .map(|j| item(j))
            .collect();
        assert_eq!(waves(&pending), vec![vec![0, 1, 3], vec![2, 5], vec![4]]);
    }

    #[test]
    fn policy_limits() {
        let mut c = DeliveryConfig::default();
        let p = RetryPolicy::new(&c).unwrap();
        assert!(
            p.exhausted(1_000_000, Duration::from_secs(3600)).is_none(),
            "attempts unlimited by default"
        );
        assert!(
            p.exhausted(1, Duration::from_secs(6 * 3600)).is_some(),
            "6h age by default"
        );
        c.max_attempts = 3;
        c.max_record_age = Duration::ZERO;
        let p = RetryPolicy::new(&c).unwrap();
        assert!(
            p.exhausted(2, Duration::from_secs(1 << 30)).is_none(),
            "age 0 = unlimited"
        );
        assert!(
            p.exhausted(3, Duration::ZERO)
                .unwrap()
                .contains("max_attempts")
        );
        c.backoff_min = Duration::from_secs(10);
        c.backoff_max = Duration::from_secs(1);
        assert!(RetryPolicy::new(&c).is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let c = DeliveryConfig {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..Default::default()
        };
        let delays: Vec<Duration> = RetryPolicy::new(&c).unwrap().backoff().take(10).collect();
        assert_eq!(delays.len(), 10, "never runs out");
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] < Duration::from_millis(200));
        assert!(delays[9] >= Duration::from_secs(1) && delays[9] < Duration::from_secs(2));
    }
}
