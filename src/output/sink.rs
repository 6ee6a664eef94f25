//! What every output kind implements: one delivery attempt for a set of
//! transitions, with one outcome per transition. Retrying, ordering, backoff
//! and dead-lettering live in the generic delivery task (`task.rs`), so each
//! kind only says what happened.

use std::time::Duration;

use async_trait::async_trait;

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
}

impl Outcome {
    pub(crate) fn retry(error: impl Into<String>) -> Self {
        Outcome::Retry {
            error: error.into(),
            after: None,
        }
    }
}

/// An output kind.
#[async_trait]
pub(crate) trait Sink: Send + Sync {
    /// One attempt at delivering `items`, which all belong to different jobs
    /// (the caller guarantees it), so the sink may send them in any order or
    /// concurrently. Returns exactly one outcome per item, in the same order.
    async fn send(&mut self, items: &[&Item]) -> Vec<Outcome>;
}

/// Splits `items` into chunks of at most `max_entries` entries and
/// `max_bytes` of bodies (the SQS/SNS/EventBridge batch limits). An item
/// larger than `max_bytes` gets a chunk of its own, and the service will say
/// what it thinks of it.
pub(crate) fn chunks<'a>(
    items: &[&'a Item],
    max_entries: usize,
    max_bytes: usize,
) -> Vec<Vec<(usize, &'a Item)>> {
    let mut out: Vec<Vec<(usize, &Item)>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let size = item.body.len();
        if !current.is_empty() && (current.len() == max_entries || bytes + size > max_bytes) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push((i, *item));
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
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

    #[test]
    fn chunks_respect_count_and_size() {
        let items: Vec<Item> = (0..25).map(|i| item(i, 10)).collect();
        let refs: Vec<&Item> = items.iter().collect();
        let c = chunks(&refs, 10, 1000);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
        let c = chunks(&refs, 10, 35);
        assert!(c.iter().all(|c| c.len() == 3 || c.len() == 1));
        let flat: Vec<usize> = c.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(flat, (0..25).collect::<Vec<_>>());
        let big = [item(0, 100), item(1, 1)];
        let refs: Vec<&Item> = big.iter().collect();
        assert_eq!(chunks(&refs, 10, 50).len(), 2);
    }
}
