//! What every output kind implements: one delivery attempt for a set of
//! transitions, with one outcome per transition. Retrying, ordering, backoff
//! and dead-lettering live in the generic delivery task (`task.rs`), so each
//! kind only says what happened.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::stats::OutputCounters;

/// One transition as an output sends it: serialized once per output, then
/// reused by every attempt.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub job_sid: String,
    pub transition_id: String,
    pub status: String,
    /// The transition record as JSON: the body, message or event detail.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// What one attempt did with one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Durably accepted by the destination.
    Delivered,
    /// Failed in a way that may pass later (5xx, throttling, network).
    /// `after` is a delay the destination asked for (Retry-After).
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Refused in a way retrying cannot fix (e.g. HTTP 400): goes to the
    /// dead-letter output at once, with the destination's response.
    Reject {
        error: String,
        response: Option<String>,
    },
    /// Not attempted: the worker's shutdown token was cancelled before its
    /// request started. It stays pending and counts no failed attempt (so
    /// it can never be dead-lettered for it); the batch is not acknowledged
    /// and is read again after the restart.
    NotSent,
}

impl Outcome {
    pub(crate) fn retry(error: impl Into<String>) -> Self {
        Outcome::Retry {
            error: error.into(),
            after: None,
        }
    }
}

/// What a sink needs besides the items: whether it may still start
/// requests, and the output's heartbeat to show it is alive while they run.
#[derive(Clone)]
pub(crate) struct SendContext {
    stop: CancellationToken,
    counters: Arc<OutputCounters>,
}

impl SendContext {
    pub(crate) fn new(stop: CancellationToken, counters: Arc<OutputCounters>) -> Self {
        Self { stop, counters }
    }

    /// The worker's shutdown grace ran out: a request in flight finishes,
    /// but no new one may start (docs/outputs.md, Shutdown). Checked right
    /// before each request, so items queued behind a concurrency limit or
    /// in later chunks of the same attempt are not sent either.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The outputs' stop token. An output that can never deliver again
    /// (its stdout was closed) cancels it: every output stops, and the
    /// worker with them (`cli::run` watches for it). Nothing pending is
    /// acknowledged, so nothing is checkpointed past it.
    pub(crate) fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// A request that lasts at most `timeout` starts: the output is alive
    /// until then even if nothing else happens (liveness).
    pub(crate) fn request_started(&self, timeout: Duration) {
        self.counters.heartbeat.expect(timeout);
    }

    /// A request finished: a sign of life (without shortening what other
    /// requests in flight promised).
    pub(crate) fn request_finished(&self) {
        self.counters.heartbeat.expect(Duration::ZERO);
    }
}

/// An output kind.
#[async_trait]
pub(crate) trait Sink: Send + Sync {
    /// One attempt at delivering `items`, which all belong to different jobs
    /// (the caller guarantees it), so the sink may send them in any order or
    /// concurrently. Returns exactly one outcome per item, in the same order.
    /// Before each request it checks [`SendContext::stopping`] and answers
    /// [`Outcome::NotSent`] for what it did not send.
    async fn send(&mut self, items: &[&Item], ctx: &SendContext) -> Vec<Outcome>;
}

/// The size limits of a batch API (SQS SendMessageBatch, SNS PublishBatch,
/// EventBridge PutEvents), in the service's own way of counting an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimits {
    /// For messages: "SQS", "SNS", "EventBridge".
    pub service: &'static str,
    /// Entries per request.
    pub max_entries: usize,
    /// One entry, at most (inclusive).
    pub max_entry_bytes: usize,
    /// All entries of one request together, at most (inclusive).
    pub max_request_bytes: usize,
}

impl BatchLimits {
    /// Why an entry of `size` bytes can never be sent, if so.
    pub(crate) fn refusal(&self, size: usize) -> Option<String> {
        (size > self.max_entry_bytes).then(|| {
            format!(
                "the transition is {size} bytes as {} counts it, over its limit of {} bytes per entry; it was not sent, as it can never be accepted",
                self.service, self.max_entry_bytes
            )
        })
    }
}

/// How one attempt's items go out: the requests to make, and the items too
/// big to ever fit (index in `items`, size).
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    pub requests: Vec<Vec<(usize, &'a Item)>>,
    pub too_big: Vec<(usize, usize)>,
}

/// Splits `items` into requests of at most `max_entries` entries and
/// `max_request_bytes` in all, each entry measured by `size`. An entry over
/// `max_entry_bytes` is left out (`too_big`): sending it would fail the
/// whole request, every time.
pub(crate) fn plan<'a>(
    items: &[&'a Item],
    limits: &BatchLimits,
    size: impl Fn(&Item) -> usize,
) -> Plan<'a> {
    let mut requests: Vec<Vec<(usize, &Item)>> = Vec::new();
    let mut too_big = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if limits.refusal(n).is_some() {
            too_big.push((i, n));
            continue;
        }
        if !current.is_empty()
            && (current.len() == limits.max_entries || bytes + n > limits.max_request_bytes)
        {
            requests.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += n;
        current.push((i, *item));
    }
    if !current.is_empty() {
        requests.push(current);
    }
    Plan { requests, too_big }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: usize, size: usize) -> Item {
        Item {
            job_sid: format!("J{i}"),
            transition_id: format!("T{i}"),
            status: "QUEUED".into(),
            body: "x".repeat(size),
            attempts: 0,
        }
    }

    fn limits(entries: usize, entry: usize, request: usize) -> BatchLimits {
        BatchLimits {
            service: "Test",
            max_entries: entries,
            max_entry_bytes: entry,
            max_request_bytes: request,
        }
    }

    fn body_len(i: &Item) -> usize {
        i.body.len()
    }

    #[test]
    fn requests_respect_count_and_size() {
        let items: Vec<Item> = (0..25).map(|i| item(i, 10)).collect();
        let refs: Vec<&Item> = items.iter().collect();
        let p = plan(&refs, &limits(10, 1000, 1000), body_len);
        assert_eq!(
            p.requests.iter().map(Vec::len).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        assert!(p.too_big.is_empty());
        let p = plan(&refs, &limits(10, 35, 35), body_len);
        assert!(p.requests.iter().all(|c| c.len() == 3 || c.len() == 1));
        let flat: Vec<usize> = p.requests.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(flat, (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn request_size_is_inclusive_and_counted_the_services_way() {
        // Two entries of exactly half the limit share a request; one byte
        // more and they do not.
        let items = [item(0, 50), item(1, 50), item(2, 51), item(3, 50)];
        let refs: Vec<&Item> = items.iter().collect();
        let p = plan(&refs, &limits(10, 100, 100), body_len);
        let shape: Vec<Vec<usize>> = p
            .requests
            .iter()
            .map(|r| r.iter().map(|(i, _)| *i).collect())
            .collect();
        assert_eq!(shape, [vec![0, 1], vec![2], vec![3]]);
        // The size function decides (e.g. message attributes count).
        let p = plan(&refs, &limits(10, 100, 100), |i| i.body.len() + 10);
        assert!(p.requests.iter().all(|r| r.len() == 1), "{:?}", p.requests);
    }

    #[test]
    fn an_entry_over_the_limit_is_refused_not_sent() {
        // The bug this guards against: a 1 MiB+ transition was sent alone,
        // failed the whole SendMessageBatch call (BatchRequestTooLong), and
        // was retried for max_record_age while the shard stalled.
        let sqs = limits(10, 1_048_576, 1_048_576);
        let items = [item(0, 100), item(1, 1_048_577), item(2, 100)];
        let refs: Vec<&Item> = items.iter().collect();
        let p = plan(&refs, &sqs, body_len);
        assert_eq!(p.too_big, [(1, 1_048_577)]);
        let sent: Vec<usize> = p.requests.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(sent, [0, 2]);
        let why = sqs.refusal(1_048_577).unwrap();
        assert!(why.contains("1048577") && why.contains("1048576"), "{why}");
        assert!(sqs.refusal(1_048_576).is_none(), "the limit itself fits");
        // Several that fit alone but not together go in separate requests.
        let items = [item(0, 600_000), item(1, 600_000)];
        let refs: Vec<&Item> = items.iter().collect();
        let p = plan(&refs, &sqs, body_len);
        assert_eq!(p.requests.len(), 2);
        assert!(p.too_big.is_empty());
    }
}
