//! The dead-letter output: bad records (from decode) and transitions an output
//! could not deliver. It is the last resort, so it never gives up: a failed
//! write is retried with backoff until it succeeds or the worker shuts down,
//! and whoever waits on it (an output, or the pipeline) waits too, which
//! stops the checkpoint from passing the entry.
//!
//! One task owns the destination; writers hand it entries through a channel
//! and wait for its acknowledgement. The task writes everything that queued
//! up meanwhile in one go (one fsync for many entries).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context;
use async_trait::async_trait;
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    OutputsClosed,
    aws::{is_fifo, sqs_client, sqs_safe},
    config::SqsConfig,
    local::JsonLinesFile,
    stats::{DeadLetterCounters, set_failing},
    task::RetryPolicy,
};
use crate::{source::Origin, track::Transition};

/// One dead-letter entry, as the pipeline hands it over (bad records) and as
/// outputs produce it (undeliverable transitions).
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Why it is here, for a human.
    pub reason: String,
    /// The raw Kinesis record, or for an undeliverable transition the exact
    /// body the output tried to send.
    pub payload: Vec<u8>,
    pub origin: Origin,
    /// The output that could not deliver it; `None` for bad records.
    pub output: Option<String>,
    pub transition: Option<Transition>,
    /// What the destination answered last (e.g. "HTTP 400 Bad Request" and
    /// the start of the body).
    pub response: Option<String>,
}

/// The internal form: outputs do not know a transition's origin (the
/// transition type carries it, but the output stage only relies on the
/// fields it needs), so it is optional here and extracted from the
/// transition's JSON when present.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub reason: String,
    pub payload: Vec<u8>,
    pub origin: Option<Origin>,
    pub output: Option<String>,
    pub transition: Option<serde_json::Value>,
    pub response: Option<String>,
    pub attempts: Option<u32>,
}

impl From<DeadLetter> for Entry {
    fn from(d: DeadLetter) -> Self {
        Entry {
            reason: d.reason,
            payload: d.payload,
            origin: Some(d.origin),
            output: d.output,
            transition: d.transition.and_then(|t| serde_json::to_value(t).ok()),
            response: d.response,
            attempts: None,
        }
    }
}

/// The JSON line written for an entry. Documented in docs/outputs.md: keep
/// it stable, people build tooling on dead-letter files.
#[derive(Serialize)]
struct EntryJson<'a> {
    /// When the entry was written (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    reason: &'a str,
    output: Option<&'a str>,
    stream: Option<&'a str>,
    shard_id: Option<&'a str>,
    sequence_number: Option<&'a str>,
    #[serde(with = "time::serde::rfc3339::option")]
    arrival: Option<OffsetDateTime>,
    attempts: Option<u32>,
    /// "utf8" when the payload is valid UTF-8 (then `payload` is that text),
    /// "base64" otherwise (standard alphabet, padded).
    encoding: &'static str,
    payload: String,
    /// Size of the original payload in bytes.
    payload_size: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    payload_truncated: bool,
    /// Present and true when the transition was left out to fit the
    /// destination (`payload` holds the same JSON, possibly cut).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    transition_omitted: bool,
    transition: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    response_truncated: bool,
    response: Option<&'a str>,
}

/// Encodes one entry as a JSON line (without the newline). With `limit`, an
/// entry too big for the destination is made to fit rather than refused
/// forever (which would stop its shard for good): first the `transition`
/// is left out (an undeliverable transition's `payload` is the same JSON),
/// then the payload is cut at a UTF-8 boundary, then the response. The
/// bool says whether anything was left out or cut.
pub(crate) fn encode(entry: &Entry, time: OffsetDateTime, limit: Option<usize>) -> (Vec<u8>, bool) {
    let text = std::str::from_utf8(&entry.payload).ok();
    let mut keep = entry.payload.len();
    let mut transition = entry.transition.as_ref();
    let mut response = entry.response.as_deref();
    loop {
        let (encoding, payload) = match text {
            Some(t) => ("utf8", t[..keep].to_owned()),
            None => (
                "base64",
                base64::engine::general_purpose::STANDARD.encode(&entry.payload[..keep]),
            ),
        };
        let encoded_len = payload.len();
        let origin = entry.origin.as_ref();
        let json = EntryJson {
            time,
            reason: &entry.reason,
            output: entry.output.as_deref(),
            stream: origin.map(|o| &*o.stream),
            shard_id: origin.map(|o| &*o.shard_id),
            sequence_number: origin.map(|o| o.sequence_number.as_str()),
            arrival: origin.and_then(|o| o.arrival),
            attempts: entry.attempts,
            encoding,
            payload,
            payload_size: entry.payload.len(),
            payload_truncated: keep < entry.payload.len(),
            transition_omitted: transition.is_none() && entry.transition.is_some(),
            transition,
            response_truncated: response.map(str::len) != entry.response.as_deref().map(str::len),
            response,
        };
        // EntryJson holds only strings, numbers and JSON values: cannot fail.
        let line = serde_json::to_vec(&json).expect("a dead-letter entry serializes");
        let cut = json.payload_truncated || json.transition_omitted || json.response_truncated;
        let over = match limit {
            Some(limit) if line.len() > limit => line.len() - limit,
            _ => return (line, cut),
        };
        if transition.is_some() {
            transition = None;
        } else if keep > 0 {
            // Remove as many raw bytes as the overshoot, scaled by how much
            // one raw byte grows when encoded (4/3 for base64, more when
            // escaped), so the cut lands close under the limit; it
            // converges in a few rounds.
            let growth = encoded_len as f64 / keep as f64;
            keep = keep.saturating_sub((over as f64 / growth).ceil() as usize);
            if let Some(t) = text {
                while !t.is_char_boundary(keep) {
                    keep -= 1;
                }
            }
        } else if let Some(r) = response.filter(|r| !r.is_empty()) {
            let mut end = r.len().saturating_sub(over);
            while !r.is_char_boundary(end) {
                end -= 1;
            }
            response = Some(&r[..end]);
        } else {
            // Only the fixed fields are left, a few hundred bytes: no
            // destination's limit is that small.
            return (line, cut);
        }
    }
}

/// Where dead letters are written.
#[async_trait]
pub(crate) trait DeadLetterSink: Send {
    /// Writes `lines` durably, removing each one written. Errors if any is
    /// left, which is then retried.
    async fn write(&mut self, lines: &mut Vec<Vec<u8>>) -> anyhow::Result<()>;
    /// Largest line the destination takes, if it has a limit.
    fn limit(&self) -> Option<usize> {
        None
    }
    fn describe(&self) -> String;
}

pub(crate) struct FileDeadLetter {
    file: JsonLinesFile,
}

impl FileDeadLetter {
    pub(crate) async fn open(
        path: &std::path::Path,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            file: JsonLinesFile::open(path, shutdown)
                .await
                .context("opening the dead-letter file")?,
        })
    }
}

#[async_trait]
impl DeadLetterSink for FileDeadLetter {
    async fn write(&mut self, lines: &mut Vec<Vec<u8>>) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines.iter() {
            buf.extend_from_slice(l);
            buf.push(b'\n');
        }
        self.file.append(&buf).await?;
        lines.clear();
        Ok(())
    }
    fn describe(&self) -> String {
        format!("file {}", self.file.path.display())
    }
}

/// SQS's message size limit (256 KiB), less a margin for attributes.
const SQS_MAX_MESSAGE: usize = 256 * 1024 - 1024;

pub(crate) struct SqsDeadLetter {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    fifo: bool,
}

impl SqsDeadLetter {
    pub(crate) fn new(aws: &aws_config::SdkConfig, c: &SqsConfig) -> Self {
        Self {
            client: sqs_client(aws, &c.client_config()),
            queue_url: c.queue_url.clone(),
            fifo: is_fifo(&c.queue_url),
        }
    }
}

#[async_trait]
impl DeadLetterSink for SqsDeadLetter {
    async fn write(&mut self, lines: &mut Vec<Vec<u8>>) -> anyhow::Result<()> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let mut failed: Vec<Vec<u8>> = Vec::new();
        let mut last_error = None;
        let all = std::mem::take(lines);
        // Batches of ≤10 entries and ≤256 KiB in total.
        let mut rest = &all[..];
        while !rest.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len() && n < 10 && (n == 0 || bytes + rest[n].len() <= SQS_MAX_MESSAGE) {
                bytes += rest[n].len();
                n += 1;
            }
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut req = self.client.send_message_batch().queue_url(&self.queue_url);
            for (pos, line) in chunk.iter().enumerate() {
                let text = String::from_utf8_lossy(line);
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(pos.to_string())
                    .message_body(sqs_safe(&text));
                if self.fifo {
                    // One group: dead letters are rare and their order helps
                    // whoever reads them. Content hash as dedup id, so a
                    // retried write is not stored twice.
                    e = e
                        .message_group_id("bulkwatch-dead-letter")
                        .message_deduplication_id(hex::encode(Sha256::digest(line)));
                }
                req = req.entries(e.build().expect("id and body are set"));
            }
            match req.send().await {
                Err(e) => {
                    last_error = Some(format!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e)));
                    failed.extend(chunk.iter().cloned());
                }
                Ok(out) => {
                    for f in out.failed() {
                        last_error = Some(format!("{}: {}", f.code(), f.message().unwrap_or("")));
                        if let Some(line) = f.id().parse::<usize>().ok().and_then(|i| chunk.get(i))
                        {
                            failed.push(line.clone());
                        }
                    }
                }
            }
        }
        *lines = failed;
        match last_error {
            Some(e) if !lines.is_empty() => {
                anyhow::bail!("SQS SendMessageBatch to {}: {e}", self.queue_url)
            }
            _ => Ok(()),
        }
    }
    fn limit(&self) -> Option<usize> {
        Some(SQS_MAX_MESSAGE)
    }
    fn describe(&self) -> String {
        format!("SQS queue {}", self.queue_url)
    }
}

struct Request {
    entry: Entry,
    ack: oneshot::Sender<()>,
}

/// A handle on the dead-letter task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct DeadLetterQueue {
    tx: mpsc::Sender<Request>,
    closing: CancellationToken,
    pub(crate) counters: Arc<DeadLetterCounters>,
}

/// Entries written per write at most (the rest wait for the next one).
const GROUP: usize = 64;

impl DeadLetterQueue {
    /// Spawns the task that owns `sink`.
    pub(crate) fn spawn(
        sink: Box<dyn DeadLetterSink>,
        policy: RetryPolicy,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        // Small: every writer waits for its entry to be durable anyway, so
        // the entries in memory are bounded by the number of writers (the
        // outputs and the shard pipelines); a record can be 1 MiB.
        let (tx, rx) = mpsc::channel(GROUP);
        let counters = Arc::new(DeadLetterCounters::default());
        let closing = CancellationToken::new();
        let task = tokio::spawn(run(
            sink,
            rx,
            policy,
            counters.clone(),
            shutdown,
            closing.clone(),
        ));
        (
            Self {
                tx,
                closing,
                counters,
            },
            task,
        )
    }

    /// Queues `entry`; the returned receiver resolves once it is durable
    /// (and errors if the task stopped first).
    pub(crate) async fn submit(
        &self,
        entry: Entry,
    ) -> Result<oneshot::Receiver<()>, OutputsClosed> {
        if self.closing.is_cancelled() {
            return Err(OutputsClosed);
        }
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Request { entry, ack })
            .await
            .map_err(|_| OutputsClosed)?;
        Ok(rx)
    }

    /// Writes `entry` and waits until it is durable.
    pub(crate) async fn write(&self, entry: Entry) -> Result<(), OutputsClosed> {
        self.submit(entry).await?.await.map_err(|_| OutputsClosed)
    }

    /// Lets the task finish what is queued and stop.
    pub(crate) fn close(&self) {
        self.closing.cancel();
    }
}

async fn run(
    mut sink: Box<dyn DeadLetterSink>,
    mut rx: mpsc::Receiver<Request>,
    policy: RetryPolicy,
    counters: Arc<DeadLetterCounters>,
    shutdown: CancellationToken,
    closing: CancellationToken,
) {
    loop {
        // Idle is alive (liveness).
        counters.heartbeat.park();
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = rx.recv() => match r {
                Some(r) => r,
                None => break,
            },
            // Only reached with nothing queued (biased select).
            _ = closing.cancelled() => break,
        };
        let mut requests = vec![first];
        while requests.len() < GROUP {
            match rx.try_recv() {
                Ok(r) => requests.push(r),
                Err(_) => break,
            }
        }
        let now = OffsetDateTime::now_utc();
        let mut lines = Vec::with_capacity(requests.len());
        for r in &requests {
            let (line, truncated) = encode(&r.entry, now, sink.limit());
            if truncated {
                counters.payload_truncated.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    message = "Dead-letter entry cut to fit the destination (see payload_truncated, transition_omitted).",
                    size = r.entry.payload.len(),
                    destination = %sink.describe(),
                    stream = r.entry.origin.as_ref().map_or("", |o| &*o.stream),
                    shard = r.entry.origin.as_ref().map_or("", |o| &*o.shard_id),
                    sequence_number = r.entry.origin.as_ref().map_or("", |o| o.sequence_number.as_str()),
                );
            }
            lines.push(line);
        }
        let mut backoff = policy.backoff();
        loop {
            counters.heartbeat.beat();
            match sink.write(&mut lines).await {
                Ok(()) => {
                    set_failing(&counters.failing_since, false);
                    break;
                }
                Err(error) => {
                    counters.write_failures.fetch_add(1, Ordering::Relaxed);
                    set_failing(&counters.failing_since, true);
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    // Retrying a down destination is alive: nothing is due
                    // before the next write (liveness), and the outputs and
                    // pipelines waiting for this entry are parked on it.
                    counters.heartbeat.expect(delay);
                    // The first entry's record stands for the write.
                    let origin = requests.first().and_then(|r| r.entry.origin.as_ref());
                    tracing::error!(
                        message = "Dead-letter write failed; retrying.",
                        destination = %sink.describe(),
                        entries = lines.len(),
                        stream = origin.map_or("", |o| &*o.stream),
                        shard = origin.map_or("", |o| &*o.shard_id),
                        sequence_number = origin.map_or("", |o| o.sequence_number.as_str()),
                        error = format!("{error:#}"),
                        retry_in = ?delay,
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // The acks are dropped with `requests`: the writers
                        // see OutputsClosed and nothing is checkpointed.
                        _ = shutdown.cancelled() => {
                            counters.heartbeat.park();
                            return;
                        }
                    }
                }
            }
        }
        counters
            .written
            .fetch_add(requests.len() as u64, Ordering::Relaxed);
        for r in requests {
            let _ = r.ack.send(());
        }
    }
    // A stopped task is not a stuck one (liveness).
    counters.heartbeat.park();
}

/// The origin of an undeliverable transition, when its JSON carries one:
/// either an `origin` object or top-level `stream`/`shard_id`/
/// `sequence_number` fields.
pub(crate) fn origin_of(transition: &serde_json::Value) -> Option<Origin> {
    let from = |v: &serde_json::Value| -> Option<Origin> {
        let s = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
        Some(Origin {
            stream: s("stream")?.into(),
            shard_id: s("shard_id")?.into(),
            sequence_number: s("sequence_number")?.to_owned(),
            arrival: s("arrival").and_then(|a| {
                OffsetDateTime::parse(a, &time::format_description::well_known::Rfc3339).ok()
            }),
        })
    };
    transition
        .get("origin")
        .and_then(from)
        .or_else(|| from(transition))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            stream: "events".into(),
            shard_id: "shardId-000000000001".into(),
            sequence_number: "4959".into(),
            arrival: None,
        }
    }

    fn entry(payload: &[u8]) -> Entry {
        Entry::from(DeadLetter {
            reason: "not JSON".into(),
            payload: payload.to_vec(),
            origin: origin(),
            output: None,
            transition: None,
            response: None,
        })
    }

    fn decode(line: &[u8]) -> serde_json::Value {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn utf8_payload_is_kept_as_text() {
        let (line, truncated) = encode(
            &entry("héllo {".as_bytes()),
            OffsetDateTime::UNIX_EPOCH,
            None,
        );
        assert!(!truncated);
        let v = decode(&line);
        assert_eq!(v["encoding"], "utf8");
        assert_eq!(v["payload"], "héllo {");
        assert_eq!(v["payload_size"], 8);
        assert_eq!(v["reason"], "not JSON");
        assert_eq!(v["stream"], "events");
        assert_eq!(v["shard_id"], "shardId-000000000001");
        assert_eq!(v["sequence_number"], "4959");
        assert_eq!(v["output"], serde_json::Value::Null);
        assert_eq!(v["time"], "1970-01-01T00:00:00Z");
        assert!(v.get("payload_truncated").is_none());
    }

    #[test]
    fn binary_payload_is_base64() {
        let raw = [0xff, 0x00, 0xfe, b'a'];
        let (line, _) = encode(&entry(&raw), OffsetDateTime::UNIX_EPOCH, None);
        let v = decode(&line);
        assert_eq!(v["encoding"], "base64");
        let back = base64::engine::general_purpose::STANDARD
            .decode(v["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(back, raw);
    }

    #[test]
    fn oversized_payload_is_truncated_to_the_limit() {
        for payload in ["é".repeat(200_000).into_bytes(), vec![0xffu8; 300_000]] {
            let (line, truncated) = encode(
                &entry(&payload),
                OffsetDateTime::UNIX_EPOCH,
                Some(SQS_MAX_MESSAGE),
            );
            assert!(truncated);
            assert!(line.len() <= SQS_MAX_MESSAGE, "{}", line.len());
            let v = decode(&line);
            assert_eq!(v["payload_truncated"], true);
            assert_eq!(v["payload_size"], payload.len());
            // Not cut needlessly short either.
            assert!(line.len() > SQS_MAX_MESSAGE - 1024, "{}", line.len());
        }
    }

    #[test]
    fn an_oversized_undeliverable_transition_fits_by_leaving_out_its_copy() {
        // The case that stalled a shard: an undeliverable transition whose
        // body (the payload) and `transition` are each over the limit.
        let name = "n".repeat(300_000);
        let t = serde_json::json!({"transition_id": "t1", "job_sid": "JS1", "friendly_name": name});
        let body = serde_json::to_vec(&t).unwrap();
        let mut e = entry(&body);
        e.output = Some("queue".into());
        e.transition = Some(t);
        e.response = Some("r".repeat(400_000));
        let (line, cut) = encode(&e, OffsetDateTime::UNIX_EPOCH, Some(SQS_MAX_MESSAGE));
        assert!(cut);
        assert!(line.len() <= SQS_MAX_MESSAGE, "{}", line.len());
        let v = decode(&line);
        assert_eq!(v["transition_omitted"], true);
        assert!(v["transition"].is_null());
        assert_eq!(v["payload_truncated"], true);
        assert_eq!(v["response_truncated"], true);
        assert_eq!(v["output"], "queue");

        // Small enough: nothing is left out, and the flags are absent.
        let mut small = entry(b"{}");
        small.transition = Some(serde_json::json!({"transition_id": "t2"}));
        let (line, cut) = encode(&small, OffsetDateTime::UNIX_EPOCH, Some(SQS_MAX_MESSAGE));
        assert!(!cut);
        let v = decode(&line);
        assert_eq!(v["transition"]["transition_id"], "t2");
        assert!(v.get("transition_omitted").is_none());
        assert!(v.get("response_truncated").is_none());
    }

    #[test]
    fn origin_is_found_in_transition_json() {
        let nested = serde_json::json!({"origin": {"stream": "s", "shard_id": "sh", "sequence_number": "1"}});
        assert_eq!(&*origin_of(&nested).unwrap().shard_id, "sh");
        let flat = serde_json::json!({"stream": "s", "shard_id": "sh2", "sequence_number": "1"});
        assert_eq!(&*origin_of(&flat).unwrap().shard_id, "sh2");
        assert!(origin_of(&serde_json::json!({"job_sid": "x"})).is_none());
    }
}
