//! The AWS outputs: SQS (SendMessageBatch), SNS (PublishBatch) and
//! EventBridge (PutEvents). Each sends up to 10 entries per call and judges
//! every entry on its own, since all three APIs can fail part of a batch.
//!
//! Whole-call failures (network, throttling, a missing queue, denied access)
//! are retried: they are usually fixed by the service or an operator, and the
//! retry policy's `max_attempts` / `max_record_age` bound the wait. An entry
//! the service refuses as the sender's fault (e.g. an invalid message) goes to
//! the dead-letter output, because resending it cannot succeed.

use std::time::Duration;

use async_trait::async_trait;

use super::{
    config::{AwsClientConfig, EventBridgeConfig, SnsConfig, SqsConfig},
    sink::{Item, Outcome, Sink, chunks},
};

/// All three APIs take at most 10 entries per call.
const MAX_ENTRIES: usize = 10;
/// SQS and SNS: 256 KiB for the whole batch; EventBridge: 256 KB per call.
/// A little headroom is left for attributes and the envelope.
const MAX_BATCH_BYTES: usize = 250 * 1024;

macro_rules! sdk_config {
    ($sdk:ident, $aws:expr, $c:expr) => {{
        let c: &AwsClientConfig = $c;
        let mut b = $sdk::config::Builder::from($aws).timeout_config(
            $sdk::config::timeout::TimeoutConfig::builder()
                .operation_timeout(c.timeout)
                .operation_attempt_timeout(c.attempt_timeout)
                .build(),
        );
        if let Some(region) = &c.region {
            b = b.region($sdk::config::Region::new(region.clone()));
        }
        b.build()
    }};
}

pub(crate) fn sqs_client(aws: &aws_config::SdkConfig, c: &AwsClientConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(sdk_config!(aws_sdk_sqs, aws, c))
}

/// SQS refuses message bodies with characters outside XML's set; in JSON
/// text only U+FFFE and U+FFFF can occur (serde_json already escapes control
/// characters), and escaping them keeps the JSON equal.
pub(crate) fn sqs_safe(body: &str) -> std::borrow::Cow<'_, str> {
    if !body.contains(['\u{fffe}', '\u{ffff}']) {
        return body.into();
    }
    body.replace('\u{fffe}', "\\ufffe")
        .replace('\u{ffff}', "\\uffff")
        .into()
}

/// FIFO queues and topics are recognised by name, as AWS requires the suffix.
pub(crate) fn is_fifo(url_or_arn: &str) -> bool {
    url_or_arn.ends_with(".fifo")
}

/// `type = "sqs"`.
pub(crate) struct SqsSink {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    fifo: bool,
}

impl SqsSink {
    pub(crate) fn new(aws: &aws_config::SdkConfig, c: &SqsConfig) -> Self {
        Self {
            client: sqs_client(aws, &c.client_config()),
            queue_url: c.queue_url.clone(),
            fifo: is_fifo(&c.queue_url),
        }
    }
}

fn sqs_attr(value: &str) -> aws_sdk_sqs::types::MessageAttributeValue {
    aws_sdk_sqs::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data_type is set")
}

#[async_trait]
impl Sink for SqsSink {
    async fn send(&mut self, items: &[&Item]) -> Vec<Outcome> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let mut outcomes = vec![Outcome::retry("not sent"); items.len()];
        for chunk in chunks(items, MAX_ENTRIES, MAX_BATCH_BYTES) {
            let mut req = self.client.send_message_batch().queue_url(&self.queue_url);
            for (pos, (_, item)) in chunk.iter().enumerate() {
                let mut e = SendMessageBatchRequestEntry::builder()
                    // Batch entry ids only need to be unique in the call.
                    .id(pos.to_string())
                    .message_body(sqs_safe(&item.body))
                    .message_attributes("job_sid", sqs_attr(&item.job_sid))
                    .message_attributes("status", sqs_attr(&item.status));
                if self.fifo {
                    // One group per job keeps each job's transitions in order
                    // while jobs proceed in parallel; the transition id makes
                    // a redelivery within SQS's 5-minute window a no-op.
                    e = e
                        .message_group_id(&item.job_sid)
                        .message_deduplication_id(&item.transition_id);
                }
                req = req.entries(e.build().expect("id and body are set"));
            }
            match req.send().await {
                Err(e) => {
                    let err = format!(
                        "SQS SendMessageBatch: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(&e)
                    );
                    for (i, _) in &chunk {
                        outcomes[*i] = Outcome::retry(err.clone());
                    }
                }
                Ok(out) => {
                    for ok in out.successful() {
                        if let Some((i, _)) = entry(&chunk, ok.id()) {
                            outcomes[i] = Outcome::Delivered;
                        }
                    }
                    for f in out.failed() {
                        if let Some((i, _)) = entry(&chunk, f.id()) {
                            outcomes[i] =
                                batch_entry_failure("SQS", f.sender_fault(), f.code(), f.message());
                        }
                    }
                }
            }
        }
        outcomes
    }
}

/// `type = "sns"`.
pub(crate) struct SnsSink {
    client: aws_sdk_sns::Client,
    topic_arn: String,
    fifo: bool,
}

impl SnsSink {
    pub(crate) fn new(aws: &aws_config::SdkConfig, c: &SnsConfig) -> Self {
        Self {
            client: aws_sdk_sns::Client::from_conf(sdk_config!(
                aws_sdk_sns,
                aws,
                &c.client_config()
            )),
            topic_arn: c.topic_arn.clone(),
            fifo: is_fifo(&c.topic_arn),
        }
    }
}

fn sns_attr(value: &str) -> aws_sdk_sns::types::MessageAttributeValue {
    aws_sdk_sns::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data_type is set")
}

#[async_trait]
impl Sink for SnsSink {
    async fn send(&mut self, items: &[&Item]) -> Vec<Outcome> {
        use aws_sdk_sns::types::PublishBatchRequestEntry;
        let mut outcomes = vec![Outcome::retry("not sent"); items.len()];
        for chunk in chunks(items, MAX_ENTRIES, MAX_BATCH_BYTES) {
            let mut req = self.client.publish_batch().topic_arn(&self.topic_arn);
            for (pos, (_, item)) in chunk.iter().enumerate() {
                // Message attributes let subscribers filter (SNS filter
                // policies) on status without parsing the body.
                let mut e = PublishBatchRequestEntry::builder()
                    .id(pos.to_string())
                    .message(sqs_safe(&item.body))
                    .message_attributes("job_sid", sns_attr(&item.job_sid))
                    .message_attributes("status", sns_attr(&item.status));
                if self.fifo {
                    e = e
                        .message_group_id(&item.job_sid)
                        .message_deduplication_id(&item.transition_id);
                }
                req = req.publish_batch_request_entries(e.build().expect("id and message are set"));
            }
            match req.send().await {
                Err(e) => {
                    let err = format!(
                        "SNS PublishBatch: {}",
                        aws_sdk_sns::error::DisplayErrorContext(&e)
                    );
                    for (i, _) in &chunk {
                        outcomes[*i] = Outcome::retry(err.clone());
                    }
                }
                Ok(out) => {
                    for ok in out.successful() {
                        if let Some((i, _)) = ok.id().and_then(|id| entry(&chunk, id)) {
                            outcomes[i] = Outcome::Delivered;
                        }
                    }
                    for f in out.failed() {
                        if let Some((i, _)) = entry(&chunk, f.id()) {
                            outcomes[i] =
                                batch_entry_failure("SNS", f.sender_fault(), f.code(), f.message());
                        }
                    }
                }
            }
        }
        outcomes
    }
}

/// `type = "eventbridge"`.
pub(crate) struct EventBridgeSink {
    client: aws_sdk_eventbridge::Client,
    event_bus: String,
    source: String,
    detail_type: String,
}

impl EventBridgeSink {
    pub(crate) fn new(aws: &aws_config::SdkConfig, c: &EventBridgeConfig) -> Self {
        Self {
            client: aws_sdk_eventbridge::Client::from_conf(sdk_config!(
                aws_sdk_eventbridge,
                aws,
                &c.client_config()
            )),
            event_bus: c.event_bus.clone(),
            source: c.source.clone(),
            detail_type: c.detail_type.clone(),
        }
    }
}

/// PutEvents error codes that say the entry itself is wrong. Everything else
/// (InternalFailure, ThrottlingException, ...) is retried.
const EVENTBRIDGE_PERMANENT: [&str; 3] =
    ["MalformedDetail", "InvalidArgument", "ValidationException"];

#[async_trait]
impl Sink for EventBridgeSink {
    async fn send(&mut self, items: &[&Item]) -> Vec<Outcome> {
        use aws_sdk_eventbridge::types::PutEventsRequestEntry;
        let mut outcomes = vec![Outcome::retry("not sent"); items.len()];
        for chunk in chunks(items, MAX_ENTRIES, MAX_BATCH_BYTES) {
            let mut req = self.client.put_events();
            for (_, item) in &chunk {
                req = req.entries(
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.event_bus)
                        .source(&self.source)
                        .detail_type(&self.detail_type)
                        .detail(&item.body)
                        .build(),
                );
            }
            match req.send().await {
                Err(e) => {
                    let err = format!(
                        "EventBridge PutEvents: {}",
                        aws_sdk_eventbridge::error::DisplayErrorContext(&e)
                    );
                    for (i, _) in &chunk {
                        outcomes[*i] = Outcome::retry(err.clone());
                    }
                }
                Ok(out) => {
                    // PutEvents answers positionally: result entry n is
                    // request entry n, with an event id or an error code.
                    for (pos, (i, _)) in chunk.iter().enumerate() {
                        outcomes[*i] = match out.entries().get(pos) {
                            None => Outcome::retry("EventBridge returned no result for the entry"),
                            Some(r) => match r.error_code() {
                                None if r.event_id().is_some() => Outcome::Delivered,
                                None => Outcome::retry(
                                    "EventBridge returned neither an event id nor an error",
                                ),
                                Some(code) => {
                                    let msg = format!(
                                        "EventBridge PutEvents entry failed: {code}: {}",
                                        r.error_message().unwrap_or("")
                                    );
                                    if EVENTBRIDGE_PERMANENT.contains(&code) {
                                        Outcome::Reject {
                                            error: msg.clone(),
                                            response: Some(msg),
                                        }
                                    } else {
                                        Outcome::retry(msg)
                                    }
                                }
                            },
                        };
                    }
                }
            }
        }
        outcomes
    }
}

fn entry<'a>(chunk: &[(usize, &'a Item)], id: &str) -> Option<(usize, &'a Item)> {
    let pos: usize = id.parse().ok()?;
    chunk.get(pos).copied()
}

fn batch_entry_failure(
    service: &str,
    sender_fault: bool,
    code: &str,
    message: Option<&str>,
) -> Outcome {
    let msg = format!(
        "{service} batch entry failed: {code}: {}",
        message.unwrap_or("")
    );
    if sender_fault {
        Outcome::Reject {
            error: msg.clone(),
            response: Some(msg),
        }
    } else {
        Outcome::Retry {
            error: msg,
            after: None::<Duration>,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_entry_failures_retry_unless_sender_fault() {
        assert!(matches!(
            batch_entry_failure("SQS", false, "InternalError", None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            batch_entry_failure("SQS", true, "InvalidMessageContents", Some("bad")),
            Outcome::Reject { response: Some(r), .. } if r.contains("InvalidMessageContents")
        ));
    }

    #[test]
    fn sqs_safe_escapes_noncharacters() {
        let body = serde_json::to_string(&serde_json::json!({"n": "a\u{ffff}b"})).unwrap();
        let safe = sqs_safe(&body);
        assert!(!safe.contains('\u{ffff}'));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["n"], "a\u{ffff}b");
    }

    #[test]
    fn fifo_by_suffix() {
        assert!(is_fifo(
            "http://127.0.0.1:4566/queue/us-east-1/000000000000/q.fifo"
        ));
        assert!(is_fifo("arn:aws:sns:us-east-1:000000000000:t.fifo"));
        assert!(!is_fifo("arn:aws:sns:us-east-1:000000000000:t"));
    }
}
