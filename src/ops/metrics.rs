//! What the worker did and where it stands: counters, per-shard gauges and
//! latency histograms, published as Prometheus text on `/metrics` (see
//! `ops::health`) and summarised in one log line at exit.
//!
//! # Design
//!
//! [`Metrics`] is one `Arc`, cheap to clone, handed to the pipeline (and,
//! through it, reported to by the shard readers). Stages record facts with
//! one call each (`polled`, `decoded`, `verdict`, `checkpointed`, ...); the
//! values live in plain atomics and small maps, and are turned into
//! Prometheus families only when scraped. That keeps the hot path to an
//! atomic add or a short-held mutex (at most one per batch and shard), and
//! lets values that are really *ages* (checkpoint age, batch in flight) be
//! computed at scrape time instead of by a ticking task.
//!
//! The output stage keeps its own counters ([`OutputCounters`]); a
//! [`Metrics`] reads them through [`Metrics::attach_outputs`] instead of the
//! outputs knowing about metrics.
//!
//! Label cardinality is bounded on purpose: shards (a stream has few), the
//! four record classes, the five verdicts, the job statuses (Twilio's known
//! ones by name, anything else as `UNKNOWN`), and the configured outputs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use crate::decode::RecordClass;
use crate::output::{DeadLetterCounters, OutputCounters, Outputs};
use crate::source::coordinator::LeaseView;
use crate::track::{JobStatus, Verdict};

/// The `Content-Type` of what [`Metrics::encode`] returns (Prometheus text
/// format 0.0.4, which every scraper and `curl | grep` understands).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Milliseconds on a process-wide monotonic clock, never 0 (0 means "never"
/// in the atomics below). Monotonic, so a wall-clock step (NTP) cannot make
/// a heartbeat look fresh or stale.
pub fn monotonic_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_millis() as u64 + 1
}

/// Age of a [`monotonic_ms`] stamp; `None` when it was never set.
pub fn age_of(stamp_ms: u64) -> Option<Duration> {
    (stamp_ms != 0).then(|| Duration::from_millis(monotonic_ms().saturating_sub(stamp_ms)))
}

/// The liveness of one loop (a shard's reader and pipeline, an output's
/// delivery task, the dead-letter task): when it last showed a sign of life,
/// and by when it promised the next one.
///
/// Liveness means "every loop is alive and responsive", not "records are
/// flowing". A loop that waits is still alive, so it says how it waits:
///
/// - [`beat`](Self::beat): working; the next sign is due within `ops.live_stall`.
/// - [`expect`](Self::expect): a wait of known length starts (a backoff, a
///   Retry-After, a request with a timeout); nothing is due before it ends.
/// - [`park`](Self::park): waiting for work, or for another loop that has a
///   heartbeat of its own (an output waiting for the dead-letter task, a
///   pipeline waiting for the outputs). Nothing is due: if the loop it waits
///   for wedges, that loop's heartbeat tells.
///
/// A loop is stalled when it is more than `ops.live_stall` past its due
/// time: a wedged loop (an await that never returns, a blocked thread) stops
/// stamping and is caught, while a loop blocked on a down output is parked
/// and the output, retrying with backoff, keeps promising its next attempt.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// The last sign of life ([`monotonic_ms`]; 0 = never).
    last: AtomicU64,
    /// When the next one is due; 0 = never started, [`PARKED`] = none due.
    due: AtomicU64,
}

const PARKED: u64 = u64::MAX;

impl Heartbeat {
    /// A sign of life; the next one is due within the stall limit.
    pub fn beat(&self) {
        let now = monotonic_ms();
        self.last.store(now, Ordering::Relaxed);
        self.due.store(now, Ordering::Relaxed);
    }

    /// A sign of life, and a wait of at most `within` starts: nothing is due
    /// before it ends. Never shortens an earlier promise (several requests
    /// of one output may be in flight), and leaves a parked loop parked.
    pub fn expect(&self, within: Duration) {
        let now = monotonic_ms();
        self.last.store(now, Ordering::Relaxed);
        let until = now.saturating_add(within.as_millis().min(u64::MAX as u128) as u64);
        self.due.fetch_max(until.min(PARKED - 1), Ordering::Relaxed);
    }

    /// Waiting for work or for a loop with a heartbeat of its own: nothing
    /// is due until the next [`beat`](Self::beat).
    pub fn park(&self) {
        self.last.store(monotonic_ms(), Ordering::Relaxed);
        self.due.store(PARKED, Ordering::Relaxed);
    }

    /// How far past its due time the loop is (zero while within it);
    /// `None` while parked or before it started.
    pub fn overdue(&self) -> Option<Duration> {
        match self.due.load(Ordering::Relaxed) {
            0 | PARKED => None,
            due => Some(Duration::from_millis(monotonic_ms().saturating_sub(due))),
        }
    }

    /// Since the last sign of life.
    pub fn age(&self) -> Option<Duration> {
        age_of(self.last.load(Ordering::Relaxed))
    }

    pub fn is_parked(&self) -> bool {
        self.due.load(Ordering::Relaxed) == PARKED
    }
}

/// One loop's liveness as the health endpoint reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopLiveness {
    /// `reader`, `output` or `dead_letter`.
    pub stage: &'static str,
    /// The shard or output name (`dead-letter` for the dead-letter task).
    pub name: String,
    /// Past its due time by this much; `None` while parked.
    pub overdue: Option<Duration>,
    /// Since its last sign of life.
    pub age: Option<Duration>,
}

/// A latency histogram in seconds with fixed buckets from 5 ms to about
/// 80 s: a webhook answers in tens of milliseconds, a retried delivery can
/// take minutes (the last bucket is +Inf).
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self(Histogram::new(exponential_buckets(0.005, 2.0, 15)))
    }
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// The worker's metrics. Cheap to clone; every clone is the same set.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    stream: Mutex<Option<Arc<str>>>,
    shards: Mutex<BTreeMap<Arc<str>, ShardState>>,
    /// Indexed by [`class_index`].
    classes: [AtomicU64; 4],
    /// Indexed by [`verdict_index`].
    verdicts: [AtomicU64; 5],
    /// Emitted transitions (new and replayed) by status.
    transitions: Mutex<BTreeMap<&'static str, u64>>,
    /// Other Twilio event types seen, for the log-once rule and the summary.
    other_types: Mutex<HashMap<String, u64>>,
    kinesis_errors: Mutex<BTreeMap<&'static str, u64>>,
    store_errors: Mutex<BTreeMap<&'static str, u64>>,
    outputs: Mutex<Vec<AttachedOutput>>,
    dead_letter: Mutex<Option<Arc<DeadLetterCounters>>>,
    /// Liveness: the last time any stage showed progress ([`monotonic_ms`]).
    heartbeat: AtomicU64,
    /// Readiness: the last successful Kinesis call.
    stream_ok: AtomicU64,
    /// Readiness: the last store call that succeeded / failed.
    store_ok: AtomicU64,
    store_failed: AtomicU64,
    shutting_down: AtomicBool,
    /// The lease coordinator's last report, and when it came.
    leases: Mutex<Option<(Instant, LeaseView)>>,
}

struct AttachedOutput {
    name: String,
    kind: String,
    counters: Arc<OutputCounters>,
}

/// What is known about one shard. Counters stay when its reader stops
/// (Prometheus counters must not go backwards); gauges are only published
/// while a reader runs, so a finished shard does not look stuck.
#[derive(Default)]
struct ShardState {
    reading: bool,
    /// GetRecords calls answered, empty ones included: an idle shard's
    /// cost is its call rate.
    polls: u64,
    /// Kinesis refuses to start the shard from its checkpoint (readiness),
    /// until a GetRecords call answers.
    refused: bool,
    records: u64,
    bytes: u64,
    checkpoints: u64,
    millis_behind: Option<i64>,
    iterator_age: Option<Duration>,
    reader_started: Option<Instant>,
    last_checkpoint: Option<Instant>,
    batch_started: Option<Instant>,
    /// The reader's and its pipeline's liveness.
    heartbeat: Heartbeat,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves plain numbers behind;
    // keep counting rather than poisoning every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

const CLASSES: [&str; 4] = ["bulk_job", "sink_test", "other", "bad"];
fn class_index(c: RecordClass) -> usize {
    match c {
        RecordClass::Job => 0,
        RecordClass::SinkTest => 1,
        RecordClass::Other => 2,
        RecordClass::Bad => 3,
    }
}

const VERDICTS: [&str; 5] = ["transition", "replayed", "duplicate", "repeat", "stale"];
fn verdict_index(v: &Verdict) -> usize {
    match v {
        Verdict::Transition(_) => 0,
        Verdict::Replayed(_) => 1,
        Verdict::Duplicate => 2,
        Verdict::Repeat => 3,
        Verdict::Stale => 4,
    }
}

/// A status as a label value: Twilio's known names, or `UNKNOWN` for any
/// other string, so an unexpected status cannot grow the series without
/// bound.
fn status_label(s: &JobStatus) -> &'static str {
    JobStatus::known()
        .zip(KNOWN_NAMES)
        .find(|(k, _)| k == s)
        .map(|(_, n)| n)
        .unwrap_or("UNKNOWN")
}
const KNOWN_NAMES: [&str; 10] = [
    "CREATED",
    "FILE_RECEIVED",
    "QUEUED",
    "PROCESSING",
    "IN_PROGRESS",
    "STOP_REQUESTED",
    "COMPLETED",
    "FAILED",
    "CANCELED",
    "STOPPED",
];

/// Clears a shard's "batch in flight" when the batch finishes, however it
/// finishes (delivered and checkpointed, shutdown, or a panic).
#[must_use = "the batch counts as in flight until this is dropped"]
pub struct BatchInFlight {
    metrics: Metrics,
    shard: Arc<str>,
}

impl Drop for BatchInFlight {
    fn drop(&mut self) {
        if let Some(s) = lock(&self.metrics.inner.shards).get_mut(&self.shard) {
            s.batch_started = None;
            // Back in the reader's loop.
            s.heartbeat.beat();
        }
        self.metrics.touch();
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// The stream read, for `bulkwatch_info`.
    pub fn set_stream(&self, stream: &str) {
        *lock(&self.inner.stream) = Some(Arc::from(stream));
    }

    /// Publishes the outputs' own counters (and their dead-letter) too.
    pub fn attach_outputs(&self, outputs: &Outputs) {
        let stats = outputs.stats();
        let mut attached = lock(&self.inner.outputs);
        attached.clear();
        for ((name, counters), s) in outputs.counters().into_iter().zip(stats.outputs) {
            attached.push(AttachedOutput {
                name,
                kind: s.kind,
                counters,
            });
        }
        *lock(&self.inner.dead_letter) = Some(outputs.dead_letter_counters());
    }

    // ------------------------------------------------------------ heartbeat

    /// Records progress: liveness fails when nothing touches this for
    /// `ops.live_stall` while readers run.
    pub fn touch(&self) {
        self.inner
            .heartbeat
            .store(monotonic_ms(), Ordering::Relaxed);
    }

    /// Since the last sign of life anywhere: a reader's poll, a pipeline
    /// step, an output's or the dead-letter's attempt or wait (the
    /// `stage="any"` gauge; liveness judges each loop on its own, see
    /// [`Metrics::loops`]).
    pub fn heartbeat_age(&self) -> Option<Duration> {
        let mut ages = vec![age_of(get(&self.inner.heartbeat))];
        ages.extend(self.loops().into_iter().map(|l| l.age));
        ages.into_iter().flatten().min()
    }

    /// Every loop whose liveness counts: the shards being read, the
    /// outputs and the dead-letter task.
    pub fn loops(&self) -> Vec<LoopLiveness> {
        let mut out: Vec<LoopLiveness> = lock(&self.inner.shards)
            .iter()
            .filter(|(_, s)| s.reading)
            .map(|(k, s)| LoopLiveness {
                stage: "reader",
                name: k.to_string(),
                overdue: s.heartbeat.overdue(),
                age: s.heartbeat.age(),
            })
            .collect();
        for o in lock(&self.inner.outputs).iter() {
            out.push(LoopLiveness {
                stage: "output",
                name: o.name.clone(),
                overdue: o.counters.heartbeat.overdue(),
                age: o.counters.heartbeat.age(),
            });
        }
        if let Some(dl) = lock(&self.inner.dead_letter).as_ref() {
            out.push(LoopLiveness {
                stage: "dead_letter",
                name: "dead-letter".to_owned(),
                overdue: dl.heartbeat.overdue(),
                age: dl.heartbeat.age(),
            });
        }
        out
    }

    /// Outputs (and the dead-letter output) whose attempts have all been
    /// failing, and for how long (readiness: degraded delivery).
    pub fn failing_outputs(&self) -> Vec<(String, Duration)> {
        let mut out: Vec<(String, Duration)> = lock(&self.inner.outputs)
            .iter()
            .filter_map(|o| Some((o.name.clone(), age_of(get(&o.counters.failing_since))?)))
            .collect();
        if let Some(dl) = lock(&self.inner.dead_letter).as_ref()
            && let Some(age) = age_of(get(&dl.failing_since))
        {
            out.push(("dead-letter".to_owned(), age));
        }
        out
    }

    fn with_shard_heartbeat(&self, shard: &str, f: impl FnOnce(&Heartbeat)) {
        if let Some(s) = lock(&self.inner.shards).get(shard) {
            f(&s.heartbeat);
        }
        self.touch();
    }

    /// The shard's reader or pipeline is working.
    pub fn shard_beat(&self, shard: &str) {
        self.with_shard_heartbeat(shard, Heartbeat::beat);
    }

    /// The shard's reader or pipeline waits at most `d` (a pause between
    /// polls, a store retry's backoff).
    pub fn shard_expect(&self, shard: &str, d: Duration) {
        self.with_shard_heartbeat(shard, |h| h.expect(d));
    }

    /// The shard's reader or pipeline waits for other loops that answer
    /// for themselves: the outputs (delivery, backpressure), the
    /// dead-letter task, or a batch slot held by other shards' pipelines.
    pub fn shard_park(&self, shard: &str) {
        self.with_shard_heartbeat(shard, Heartbeat::park);
    }

    pub fn set_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    // --------------------------------------------------------------- source

    /// The lease coordinator finished a cycle holding this much.
    pub fn leases_observed(&self, view: LeaseView) {
        *lock(&self.inner.leases) = Some((Instant::now(), view));
    }

    /// The coordinator's last report and its age; `None` before its first
    /// cycle.
    pub fn leases(&self) -> Option<(Duration, LeaseView)> {
        lock(&self.inner.leases).map(|(at, v)| (at.elapsed(), v))
    }

    /// A shard reader started. Its lease was held before; a held lease
    /// whose parents are unfinished has no reader yet.
    pub fn reader_started(&self, shard: &Arc<str>) {
        let mut shards = lock(&self.inner.shards);
        let s = shards.entry(shard.clone()).or_default();
        s.reading = true;
        s.reader_started = Some(Instant::now());
        s.millis_behind = None;
        s.iterator_age = None;
        s.heartbeat.beat();
        drop(shards);
        self.touch();
    }

    pub fn reader_stopped(&self, shard: &Arc<str>) {
        if let Some(s) = lock(&self.inner.shards).get_mut(shard) {
            s.reading = false;
            s.batch_started = None;
        }
    }

    /// Shards a reader runs on now.
    /// Kinesis refuses to start this shard from its checkpoint.
    pub fn shard_refused(&self, shard: &Arc<str>) {
        let mut shards = lock(&self.inner.shards);
        shards.entry(shard.clone()).or_default().refused = true;
    }

    /// Shards being read that Kinesis refuses to start from their
    /// checkpoints (readiness names them).
    pub fn refused_shards(&self) -> Vec<Arc<str>> {
        lock(&self.inner.shards)
            .iter()
            .filter(|(_, s)| s.reading && s.refused)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn readers_running(&self) -> usize {
        lock(&self.inner.shards)
            .values()
            .filter(|s| s.reading)
            .count()
    }

    /// A GetRecords call answered. An empty answer at the tip means the
    /// shard is caught up: its iterator age drops to 0.
    pub fn polled(&self, shard: &Arc<str>, records: usize, millis_behind: Option<i64>) {
        self.stream_ok();
        let mut shards = lock(&self.inner.shards);
        let s = shards.entry(shard.clone()).or_default();
        s.polls += 1;
        s.refused = false;
        s.millis_behind = millis_behind;
        s.heartbeat.beat();
        if records == 0 && millis_behind.unwrap_or(0) == 0 {
            s.iterator_age = Some(Duration::ZERO);
        }
    }

    /// A Kinesis call failed (and will be retried by its caller).
    pub fn kinesis_error(&self, operation: &'static str) {
        *lock(&self.inner.kinesis_errors)
            .entry(operation)
            .or_insert(0) += 1;
        self.touch();
    }

    /// A Kinesis call succeeded (readiness: the stream is reachable).
    pub fn stream_ok(&self) {
        self.inner
            .stream_ok
            .store(monotonic_ms(), Ordering::Relaxed);
        self.touch();
    }

    pub fn stream_ok_age(&self) -> Option<Duration> {
        age_of(get(&self.inner.stream_ok))
    }

    // ------------------------------------------------------------- pipeline

    /// A batch was read and handed to the pipeline. The returned guard marks
    /// it in flight until it is dropped.
    pub fn batch_started(
        &self,
        shard: &Arc<str>,
        records: usize,
        bytes: usize,
        last_arrival: Option<OffsetDateTime>,
    ) -> BatchInFlight {
        let mut shards = lock(&self.inner.shards);
        let s = shards.entry(shard.clone()).or_default();
        s.records += records as u64;
        s.bytes += bytes as u64;
        s.batch_started = Some(Instant::now());
        s.heartbeat.beat();
        // Iterator age, as CloudWatch's GetRecords.IteratorAgeMilliseconds:
        // how old the newest record just read is.
        if let Some(arrival) = last_arrival {
            let age = OffsetDateTime::now_utc() - arrival;
            s.iterator_age = Some(age.try_into().unwrap_or(Duration::ZERO));
        }
        drop(shards);
        self.touch();
        BatchInFlight {
            metrics: self.clone(),
            shard: shard.clone(),
        }
    }

    pub fn decoded(&self, class: RecordClass) {
        add(&self.inner.classes[class_index(class)], 1);
    }

    /// Counts an event of another Twilio type; true the first time this type
    /// is seen (the pipeline logs it once).
    pub fn other_type_seen(&self, event_type: &str) -> bool {
        let mut m = lock(&self.inner.other_types);
        let n = m.entry(event_type.to_owned()).or_insert(0);
        *n += 1;
        *n == 1
    }

    pub fn verdict(&self, v: &Verdict) {
        add(&self.inner.verdicts[verdict_index(v)], 1);
        if let Verdict::Transition(t) | Verdict::Replayed(t) = v {
            *lock(&self.inner.transitions)
                .entry(status_label(&t.status))
                .or_insert(0) += 1;
        }
    }

    pub fn checkpointed(&self, shard: &Arc<str>) {
        let mut shards = lock(&self.inner.shards);
        let s = shards.entry(shard.clone()).or_default();
        s.checkpoints += 1;
        s.last_checkpoint = Some(Instant::now());
        drop(shards);
        self.store_ok();
    }

    /// A store call succeeded (readiness: the store is reachable).
    pub fn store_ok(&self) {
        self.inner.store_ok.store(monotonic_ms(), Ordering::Relaxed);
        self.touch();
    }

    /// A store call failed and will be retried.
    pub fn store_failed(&self, operation: &'static str) {
        *lock(&self.inner.store_errors).entry(operation).or_insert(0) += 1;
        self.inner
            .store_failed
            .store(monotonic_ms(), Ordering::Relaxed);
        self.touch();
    }

    /// (age of the last success, age of the last failure) of store calls.
    pub fn store_ages(&self) -> (Option<Duration>, Option<Duration>) {
        (
            age_of(get(&self.inner.store_ok)),
            age_of(get(&self.inner.store_failed)),
        )
    }

    // -------------------------------------------------------------- summary

    /// One log line an operator can read at exit (the same fields as
    /// before metrics existed, so log queries keep working).
    pub fn log_summary(&self) {
        let i = &self.inner;
        let (records, bytes, checkpoints) = lock(&i.shards).values().fold((0, 0, 0), |a, s| {
            (a.0 + s.records, a.1 + s.bytes, a.2 + s.checkpoints)
        });
        let c = |k: usize| get(&i.classes[k]);
        let v = |k: usize| get(&i.verdicts[k]);
        tracing::info!(
            message = "Worker summary.",
            records,
            bytes,
            bulk_job_events = c(0),
            sink_tests = c(1),
            other_events = c(2),
            bad_records = c(3),
            transitions = v(0),
            replayed = v(1),
            duplicates = v(2),
            repeats = v(3),
            stale = v(4),
            checkpoints,
        );
    }

    /// Totals for tests and the summary: (records, bytes, checkpoints).
    pub fn totals(&self) -> (u64, u64, u64) {
        lock(&self.inner.shards).values().fold((0, 0, 0), |a, s| {
            (a.0 + s.records, a.1 + s.bytes, a.2 + s.checkpoints)
        })
    }

    // ----------------------------------------------------------- exposition

    /// Every metric in Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(self.inner.clone())));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// Reads [`Inner`] at scrape time.
struct Scrape(Arc<Inner>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, f64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histograms<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, Histogram)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        h.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let i = &self.0;
        let now = Instant::now();
        let secs = |t: Option<Instant>| t.map(|t| now.duration_since(t).as_secs_f64());

        let stream = lock(&i.stream).clone().unwrap_or_else(|| Arc::from(""));
        gauges(
            &mut enc,
            "bulkwatch_info",
            "Always 1; labels name the version and the stream read.",
            [(
                [
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("stream", stream.as_ref()),
                ],
                1.0,
            )],
        )?;

        {
            let shards = lock(&i.shards);
            let per = |f: &dyn Fn(&ShardState) -> u64| {
                shards
                    .iter()
                    .map(|(k, s)| ([("shard", k.to_string())], f(s)))
                    .collect::<Vec<_>>()
            };
            counters(
                &mut enc,
                "bulkwatch_get_records_calls",
                "GetRecords calls answered, per shard, empty ones included (the idle cost, and this worker's share of the 5 reads/s per shard).",
                per(&|s| s.polls),
            )?;
            counters(
                &mut enc,
                "bulkwatch_records_read",
                "Kinesis records read, per shard.",
                per(&|s| s.records),
            )?;
            counters(
                &mut enc,
                "bulkwatch_bytes_read",
                "Bytes of record data read, per shard.",
                per(&|s| s.bytes),
            )?;
            counters(
                &mut enc,
                "bulkwatch_checkpoints",
                "Checkpoints written, per shard.",
                per(&|s| s.checkpoints),
            )?;
            let reading: Vec<(&Arc<str>, &ShardState)> =
                shards.iter().filter(|(_, s)| s.reading).collect();
            let gauge = |f: &dyn Fn(&ShardState) -> Option<f64>| {
                reading
                    .iter()
                    .filter_map(|(k, s)| f(s).map(|v| ([("shard", k.to_string())], v)))
                    .collect::<Vec<_>>()
            };
            gauges(
                &mut enc,
                "bulkwatch_shard_millis_behind_latest",
                "MillisBehindLatest of the shard's last GetRecords answer (0: at the tip).",
                gauge(&|s| s.millis_behind.map(|m| m as f64)),
            )?;
            gauges(
                &mut enc,
                "bulkwatch_shard_iterator_age_seconds",
                "Age of the newest record read from the shard (0 once caught up and idle).",
                gauge(&|s| s.iterator_age.map(|d| d.as_secs_f64())),
            )?;
            gauges(
                &mut enc,
                "bulkwatch_shard_checkpoint_age_seconds",
                "Seconds since the shard's last checkpoint (or since its reader started). Grows on an idle shard: alert on batch_in_flight instead.",
                gauge(&|s| secs(s.last_checkpoint.or(s.reader_started))),
            )?;
            gauges(
                &mut enc,
                "bulkwatch_shard_batch_in_flight_seconds",
                "Seconds the shard's current batch has been waiting for delivery and checkpoint (0: none). The checkpoint lag that matters.",
                gauge(&|s| Some(secs(s.batch_started).unwrap_or(0.0))),
            )?;
            gauges(
                &mut enc,
                "bulkwatch_shard_readers",
                "Shard readers running now (held leases whose parents are finished).",
                [([("stream", stream.as_ref())], reading.len() as f64)],
            )?;
        }
        {
            // Before the coordinator's first cycle nothing is held yet: 0,
            // not absent, so a dashboard shows a start rather than a gap.
            let view = lock(&i.leases).map(|(_, v)| v).unwrap_or_default();
            gauges(
                &mut enc,
                "bulkwatch_leases_held",
                "Shard leases this worker holds, as of the lease coordinator's last cycle.",
                [([("stream", stream.as_ref())], view.held as f64)],
            )?;
            gauges(
                &mut enc,
                "bulkwatch_leases_active",
                "Leases of shards not yet read to their end, held by any worker, as of the last cycle.",
                [([("stream", stream.as_ref())], view.active as f64)],
            )?;
        }

        counters(
            &mut enc,
            "bulkwatch_records_decoded",
            "Records by decode class: bulk_job, sink_test, other (another Twilio event type), bad (dead-lettered).",
            CLASSES
                .iter()
                .zip(&i.classes)
                .map(|(c, n)| ([("class", *c)], get(n))),
        )?;
        counters(
            &mut enc,
            "bulkwatch_verdicts",
            "Bulk-job events by the tracker's verdict; duplicate, repeat and stale are dropped.",
            VERDICTS
                .iter()
                .zip(&i.verdicts)
                .map(|(v, n)| ([("verdict", *v)], get(n))),
        )?;
        counters(
            &mut enc,
            "bulkwatch_events_dropped",
            "Bulk-job events dropped: duplicate (same event id), repeat (same status), stale (would move a job backwards).",
            VERDICTS[2..]
                .iter()
                .zip(&i.verdicts[2..])
                .map(|(v, n)| ([("reason", *v)], get(n))),
        )?;
        counters(
            &mut enc,
            "bulkwatch_transitions",
            "Transitions emitted (new and replayed), by new status.",
            lock(&i.transitions)
                .iter()
                .map(|(s, n)| ([("status", *s)], *n))
                .collect::<Vec<_>>(),
        )?;
        counters(
            &mut enc,
            "bulkwatch_kinesis_errors",
            "Failed Kinesis calls (each retried), by operation.",
            lock(&i.kinesis_errors)
                .iter()
                .map(|(o, n)| ([("operation", *o)], *n))
                .collect::<Vec<_>>(),
        )?;
        counters(
            &mut enc,
            "bulkwatch_store_errors",
            "Failed store calls (each retried), by operation.",
            lock(&i.store_errors)
                .iter()
                .map(|(o, n)| ([("operation", *o)], *n))
                .collect::<Vec<_>>(),
        )?;

        let outputs = lock(&i.outputs);
        let each = |f: &dyn Fn(&OutputCounters) -> u64| {
            outputs
                .iter()
                .map(|o| {
                    (
                        [("output", o.name.as_str()), ("kind", o.kind.as_str())],
                        f(&o.counters),
                    )
                })
                .collect::<Vec<_>>()
        };
        counters(
            &mut enc,
            "bulkwatch_output_delivered",
            "Transitions an output delivered durably.",
            each(&|c| get(&c.delivered)),
        )?;
        counters(
            &mut enc,
            "bulkwatch_output_filtered",
            "Transitions an output's filter passed over.",
            each(&|c| get(&c.filtered)),
        )?;
        counters(
            &mut enc,
            "bulkwatch_output_retries",
            "Failed delivery attempts that were retried (one per transition and attempt).",
            each(&|c| get(&c.failed_attempts)),
        )?;
        counters(
            &mut enc,
            "bulkwatch_output_failures",
            "Transitions an output could not deliver and sent to dead-letter: refused by the destination, or past the retry policy.",
            outputs.iter().flat_map(|o| {
                [
                    ("rejected", &o.counters.rejected),
                    ("exhausted", &o.counters.exhausted),
                ]
                .map(|(reason, c)| {
                    (
                        [
                            ("output", o.name.clone()),
                            ("kind", o.kind.clone()),
                            ("reason", reason.to_owned()),
                        ],
                        get(c),
                    )
                })
            }),
        )?;
        histograms(
            &mut enc,
            "bulkwatch_output_attempt_seconds",
            "Duration of one delivery attempt (one call to the destination).",
            outputs.iter().map(|o| {
                (
                    [("output", o.name.as_str())],
                    o.counters.attempt_latency.0.clone(),
                )
            }),
        )?;
        histograms(
            &mut enc,
            "bulkwatch_output_delivery_seconds",
            "Time from handing a batch to an output until it acknowledged it: queueing, attempts and retries included.",
            outputs.iter().map(|o| {
                (
                    [("output", o.name.as_str())],
                    o.counters.batch_latency.0.clone(),
                )
            }),
        )?;
        drop(outputs);

        if let Some(dl) = lock(&i.dead_letter).clone() {
            counters(
                &mut enc,
                "bulkwatch_dead_letters",
                "Dead-letter entries written durably: bad_record (undecodable records) or undeliverable (transitions an output gave up on).",
                [
                    ([("reason", "bad_record")], get(&dl.bad_records)),
                    ([("reason", "undeliverable")], get(&dl.undeliverable)),
                ],
            )?;
            let mut m = enc.encode_descriptor(
                "bulkwatch_dead_letter_write_failures",
                "Failed dead-letter write attempts (each retried).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(get(&dl.write_failures))
                .encode(m.encode_family(&[("reason", "write")])?)?;
        }

        let metrics = Metrics { inner: i.clone() };
        gauges(
            &mut enc,
            "bulkwatch_heartbeat_age_seconds",
            "Seconds since any loop last showed a sign of life.",
            metrics
                .heartbeat_age()
                .map(|d| ([("stage", "any")], d.as_secs_f64())),
        )?;
        gauges(
            &mut enc,
            "bulkwatch_heartbeat_overdue_seconds",
            "Seconds a loop is past the time it promised its next sign of life (0 while within it or waiting on another loop); liveness fails past ops.live_stall.",
            metrics.loops().into_iter().map(|l| {
                (
                    [("stage", l.stage.to_owned()), ("name", l.name)],
                    l.overdue.unwrap_or_default().as_secs_f64(),
                )
            }),
        )?;
        gauges(
            &mut enc,
            "bulkwatch_shutting_down",
            "1 once SIGTERM or SIGINT was received and the worker is draining.",
            [(
                [("stream", stream.as_ref())],
                if i.shutting_down.load(Ordering::Relaxed) {
                    1.0
                } else {
                    0.0
                },
            )],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_exposition() {
        let m = Metrics::new();
        m.set_stream("s1");
        let shard: Arc<str> = Arc::from("shardId-000000000000");
        m.reader_started(&shard);
        m.polled(&shard, 2, Some(1500));
        {
            let _b = m.batch_started(&shard, 2, 300, Some(OffsetDateTime::now_utc()));
            m.decoded(RecordClass::Job);
            m.decoded(RecordClass::Bad);
            m.verdict(&Verdict::Stale);
            m.checkpointed(&shard);
        }
        let text = m.encode();
        for want in [
            "bulkwatch_records_read_total{shard=\"shardId-000000000000\"} 2",
            "bulkwatch_get_records_calls_total{shard=\"shardId-000000000000\"} 1",
            "bulkwatch_bytes_read_total{shard=\"shardId-000000000000\"} 300",
            "bulkwatch_records_decoded_total{class=\"bad\"} 1",
            "bulkwatch_events_dropped_total{reason=\"stale\"} 1",
            "bulkwatch_shard_millis_behind_latest{shard=\"shardId-000000000000\"} 1500",
            "bulkwatch_shard_batch_in_flight_seconds{shard=\"shardId-000000000000\"} 0",
            "bulkwatch_shard_readers{stream=\"s1\"} 1",
            "bulkwatch_leases_held{stream=\"s1\"} 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert_eq!(m.totals(), (2, 300, 1));
        m.leases_observed(LeaseView {
            held: 2,
            active: 3,
            takeable: 0,
        });
        let text = m.encode();
        assert!(
            text.contains("bulkwatch_leases_held{stream=\"s1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("bulkwatch_leases_active{stream=\"s1\"} 3"),
            "{text}"
        );
        m.reader_stopped(&shard);
        assert_eq!(m.readers_running(), 0);
        assert!(!m.encode().contains("bulkwatch_shard_millis_behind_latest{"));
    }

    #[test]
    fn unknown_statuses_share_one_label() {
        assert_eq!(status_label(&JobStatus::parse("completed")), "COMPLETED");
        assert_eq!(status_label(&JobStatus::parse("WEIRD-1")), "UNKNOWN");
        for s in JobStatus::known() {
            assert_eq!(status_label(&s), s.as_str());
        }
    }
}
