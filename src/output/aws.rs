//! The AWS outputs: SQS (SendMessageBatch), SNS (PublishBatch) and
//! EventBridge (PutEvents). Each judges every entry on its own, since all
//! three APIs can fail part of a batch.
//!
//! # Request size
//!
//! Each request is bounded by the service's entry count *and* its size
//! limits, with entries measured the way the service measures them
//! ([`sink::plan`]): a request over the limit fails as a whole
//! (`BatchRequestTooLong`), for every entry in it, every time. A transition
//! that could never fit on its own (a ~1 MiB Kinesis record whose
//! friendly_name or description ends up in the transition) is refused up
//! front: it goes to dead-letter at once with its size and the limit,
//! instead of holding the shard for `max_record_age`.
//!
//! # Whole-call failures
//!
//! Network errors, throttling, a missing queue or denied access are
//! retried: they are fixed by the service or an operator, and the retry
//! policy's `max_attempts` / `max_record_age` bound the wait. A call refused
//! as malformed ([`permanent_call_error`]: too long, invalid parameter, ...)
//! would fail the same way forever: its entries are sent again one by one at
//! once, so the entry at fault is refused (dead-lettered) alone and the
//! others go through. An entry the service refuses as the sender's fault
//! (e.g. an invalid message) goes to dead-letter too.

use std::time::Duration;

use async_trait::async_trait;

use super::{
    config::{AwsClientConfig, EventBridgeConfig, SnsConfig, SqsConfig},
    sink::{self, BatchLimits, Item, Outcome, SendContext, Sink},
};

/// SQS SendMessageBatch: 10 entries; a message and the whole batch at most
/// 1 MiB each (raised from 256 KiB in 2025), body and message attributes
/// (name, type and value) counted.
const SQS_LIMITS: BatchLimits = BatchLimits {
    service: "SQS",
    max_entries: 10,
    max_entry_bytes: 1_048_576,
    max_request_bytes: 1_048_576,
};
/// SNS PublishBatch: 10 entries, 256 KiB per message and for all messages
/// together; message attributes are counted like SQS's.
const SNS_LIMITS: BatchLimits = BatchLimits {
    service: "SNS",
    max_entries: 10,
    max_entry_bytes: 262_144,
    max_request_bytes: 262_144,
};
/// EventBridge PutEvents: 10 entries whose total size "must be less than
/// 256KB", an entry being its Source, DetailType, Detail and Resources in
/// UTF-8 bytes (+14 for Time), as AWS documents in "Calculating PutEvents
/// event entry size".
const EVENTBRIDGE_LIMITS: BatchLimits = BatchLimits {
    service: "EventBridge",
    max_entries: 10,
    max_entry_bytes: 262_143,
    max_request_bytes: 262_143,
};

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

/// A whole call that failed, and whether trying it again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallError {
    pub message: String,
    pub permanent: bool,
}

impl CallError {
    fn new(service_call: &str, code: Option<&str>, shown: impl std::fmt::Display) -> Self {
        Self {
            message: format!("{service_call}: {shown}"),
            permanent: permanent_call_error(code),
        }
    }
}

/// Whole-call error codes that say the request itself is malformed, so it
/// fails the same way however often it is sent. Normalised: without an
/// `AWS.SimpleQueueService.` style prefix or an `Exception` suffix.
/// Everything else (throttling, internal errors, timeouts, a missing queue or
/// topic, denied access, KMS trouble) is retried: time or an operator fixes
/// those.
const PERMANENT_CALL_ERRORS: [&str; 11] = [
    "BatchRequestTooLong",
    "TooManyEntriesInBatchRequest",
    "BatchEntryIdsNotDistinct",
    "EmptyBatchRequest",
    "InvalidBatchEntryId",
    "InvalidParameterValue",
    "InvalidParameter",
    "InvalidMessageContents",
    "Validation",
    "ValidationError",
    "UnsupportedOperation",
];

/// Whether a whole-call error with this code can never succeed.
pub(crate) fn permanent_call_error(code: Option<&str>) -> bool {
    let Some(code) = code else {
        // No code: a timeout, a connection error, a response that did not
        // parse. Transient.
        return false;
    };
    let code = code.rsplit('.').next().unwrap_or(code);
    let code = code.strip_suffix("Exception").unwrap_or(code);
    PERMANENT_CALL_ERRORS.contains(&code)
}

/// One batch API: its limits, how it sizes an entry, and one call.
#[async_trait]
trait BatchApi: Send + Sync {
    fn limits(&self) -> &'static BatchLimits;
    /// The entry's size as the service counts it against its limits.
    fn entry_size(&self, item: &Item) -> usize;
    /// The longest one call can take (the operation timeout).
    fn call_timeout(&self) -> Duration;
    /// One call with `entries`; on success, one outcome per entry, in order.
    async fn call(&self, entries: &[&Item]) -> Result<Vec<Outcome>, CallError>;
}

/// One attempt through a batch API: plan the requests, refuse what can
/// never fit, make the calls (none once shutdown's grace ran out), and
/// resend entry by entry a request refused as a whole for good.
async fn send_batches(api: &dyn BatchApi, items: &[&Item], ctx: &SendContext) -> Vec<Outcome> {
    let mut outcomes = vec![Outcome::NotSent; items.len()];
    let limits = api.limits();
    let plan = sink::plan(items, limits, |i| api.entry_size(i));
    for (i, size) in plan.too_big {
        let error = limits.refusal(size).unwrap_or_default();
        outcomes[i] = Outcome::Reject {
            error,
            response: None,
        };
    }
    for request in plan.requests {
        let entries: Vec<&Item> = request.iter().map(|(_, item)| *item).collect();
        match call(api, &entries, ctx).await {
            Some(Ok(results)) => {
                for ((i, _), outcome) in request.iter().zip(results) {
                    outcomes[*i] = outcome;
                }
            }
            Some(Err(e)) if e.permanent && request.len() > 1 => {
                // Which entry is at fault is not said: find out by sending
                // each alone, so one bad entry does not sink the others.
                // (The delivery task logs the refusal of the entry at fault,
                // with its record.)
                tracing::debug!(
                    message = "Batch call refused as a whole; sending its entries one by one.",
                    entries = request.len(),
                    error = %e.message,
                );
                for (i, item) in &request {
                    outcomes[*i] = match call(api, &[*item], ctx).await {
                        None => Outcome::NotSent,
                        Some(Ok(mut r)) => r.pop().unwrap_or_else(|| {
                            Outcome::retry(format!("{} returned no result", limits.service))
                        }),
                        Some(Err(e)) => call_failure(e),
                    };
                }
            }
            Some(Err(e)) => {
                let outcome = call_failure(e);
                for (i, _) in &request {
                    outcomes[*i] = outcome.clone();
                }
            }
            None => break,
        }
    }
    outcomes
}

/// One call, unless shutdown's grace ran out (`None`: not sent).
async fn call(
    api: &dyn BatchApi,
    entries: &[&Item],
    ctx: &SendContext,
) -> Option<Result<Vec<Outcome>, CallError>> {
    if ctx.stopping() {
        return None;
    }
    ctx.request_started(api.call_timeout());
    let result = api.call(entries).await;
    ctx.request_finished();
    Some(result.map(|mut r| {
        // One outcome per entry, whatever the service answered.
        r.resize(
            entries.len(),
            Outcome::retry("the service returned no result for the entry"),
        );
        r
    }))
}

fn call_failure(e: CallError) -> Outcome {
    if e.permanent {
        Outcome::Reject {
            error: e.message.clone(),
            response: Some(e.message),
        }
    } else {
        Outcome::retry(e.message)
    }
}

/// The outcome for a batch result entry: `(position, outcome)` pairs by the
/// entry ids (positions) we gave.
fn by_id(n: usize, ids: impl IntoIterator<Item = (Option<String>, Outcome)>) -> Vec<Outcome> {
    let mut out = vec![Outcome::retry("the service returned no result for the entry"); n];
    for (id, outcome) in ids {
        if let Some(pos) = id.and_then(|id| id.parse::<usize>().ok())
            && pos < n
        {
            out[pos] = outcome;
        }
    }
    out
}

/// SQS and SNS count a message attribute as its name, type and value.
fn attributes_size(item: &Item) -> usize {
    ("job_sid".len() + "String".len() + item.job_sid.len())
        + ("status".len() + "String".len() + item.status.len())
}

/// `type = "sqs"`.
pub(crate) struct SqsSink {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    fifo: bool,
    timeout: Duration,
}

impl SqsSink {
    pub(crate) fn new(aws: &aws_config::SdkConfig, c: &SqsConfig) -> Self {
        let cc = c.client_config();
        Self {
            client: sqs_client(aws, &cc),
            queue_url: c.queue_url.clone(),
            fifo: is_fifo(&c.queue_url),
            timeout: cc.timeout,
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
impl BatchApi for SqsSink {
    fn limits(&self) -> &'static BatchLimits {
        &SQS_LIMITS
    }
    fn entry_size(&self, item: &Item) -> usize {
        sqs_safe(&item.body).len() + attributes_size(item)
    }
    fn call_timeout(&self) -> Duration {
        self.timeout
    }
    async fn call(&self, entries: &[&Item]) -> Result<Vec<Outcome>, CallError> {
        use aws_sdk_sqs::{error::ProvideErrorMetadata, types::SendMessageBatchRequestEntry};
        let mut req = self.client.send_message_batch().queue_url(&self.queue_url);
        for (pos, item) in entries.iter().enumerate() {
            let mut e = SendMessageBatchRequestEntry::builder()
                // Batch entry ids only need to be unique in the call.
                .id(pos.to_string())
                .message_body(sqs_safe(&item.body))
                .message_attributes("job_sid", sqs_attr(&item.job_sid))
                .message_attributes("status", sqs_attr(&item.status));
            if self.fifo {
                // One group per job keeps each job's transitions in order
                // while jobs proceed in parallel; the transition id makes a
                // redelivery within SQS's 5-minute window a no-op.
                e = e
                    .message_group_id(&item.job_sid)
                    .message_deduplication_id(&item.transition_id);
            }
            req = req.entries(e.build().expect("id and body are set"));
        }
        let out = req.send().await.map_err(|e| {
            CallError::new(
                "SQS SendMessageBatch",
                e.code(),
                aws_sdk_sqs::error::DisplayErrorContext(&e),
            )
        })?;
        let ok = out
            .successful()
            .iter()
            .map(|s| (Some(s.id().to_owned()), Outcome::Delivered));
        let failed = out.failed().iter().map(|f| {
            (
                Some(f.id().to_owned()),
                batch_entry_failure("SQS", f.sender_fault(), f.code(), f.message()),
            )
        });
        Ok(by_id(entries.len(), ok.chain(failed)))
    }
}

#[async_trait]
impl Sink for SqsSink {
    async fn send(&mut self, items: &[&Item], ctx: &SendContext) -> Vec<Outcome> {
        send_batches(self, items, ctx).await
    }
}

/// `type = "sns"`.
pub(crate) struct SnsSink {
    client: aws_sdk_sns::Client,
    topic_arn: String,
    fifo: bool,
    timeout: Duration,
}

impl SnsSink {
    pub(crate) fn new(aws: &aws_config::SdkConfig, c: &SnsConfig) -> Self {
        let cc = c.client_config();
        Self {
            client: aws_sdk_sns::Client::from_conf(sdk_config!(aws_sdk_sns, aws, &cc)),
            topic_arn: c.topic_arn.clone(),
            fifo: is_fifo(&c.topic_arn),
            timeout: cc.timeout,
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
impl BatchApi for SnsSink {
    fn limits(&self) -> &'static BatchLimits {
        &SNS_LIMITS
    }
    fn entry_size(&self, item: &Item) -> usize {
        sqs_safe(&item.body).len() + attributes_size(item)
    }
    fn call_timeout(&self) -> Duration {
        self.timeout
    }
    async fn call(&self, entries: &[&Item]) -> Result<Vec<Outcome>, CallError> {
        use aws_sdk_sns::{error::ProvideErrorMetadata, types::PublishBatchRequestEntry};
        let mut req = self.client.publish_batch().topic_arn(&self.topic_arn);
        for (pos, item) in entries.iter().enumerate() {
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
        let out = req.send().await.map_err(|e| {
            CallError::new(
                "SNS PublishBatch",
                e.code(),
                aws_sdk_sns::error::DisplayErrorContext(&e),
            )
        })?;
        let ok = out
            .successful()
            .iter()
            .map(|s| (s.id().map(str::to_owned), Outcome::Delivered));
        let failed = out.failed().iter().map(|f| {
            (
                Some(f.id().to_owned()),
                batch_entry_failure("SNS", f.sender_fault(), f.code(), f.message()),
            )
        });
        Ok(by_id(entries.len(), ok.chain(failed)))
    }
}

#[async_trait]
impl Sink for SnsSink {
    async fn send(&mut self, items: &[&Item], ctx: &SendContext) -> Vec<Outcome> {
        send_batches(self, items, ctx).await
    }
}

/// `type = "eventbridge"`.
pub(crate) struct EventBridgeSink {
    client: aws_sdk_eventbridge::Client,
    event_bus: String,
    source: String,
    detail_type: String,
    timeout: Duration,
}

impl EventBridgeSink {
    pub(crate) fn new(aws: &aws_config::SdkConfig, c: &EventBridgeConfig) -> Self {
        let cc = c.client_config();
        Self {
            client: aws_sdk_eventbridge::Client::from_conf(sdk_config!(
                aws_sdk_eventbridge,
                aws,
                &cc
            )),
            event_bus: c.event_bus.clone(),
            source: c.source.clone(),
            detail_type: c.detail_type.clone(),
            timeout: cc.timeout,
        }
    }
}

/// PutEvents error codes that say the entry itself is wrong. Everything else
/// (InternalFailure, ThrottlingException, ...) is retried.
const EVENTBRIDGE_PERMANENT: [&str; 3] =
    ["MalformedDetail", "InvalidArgument", "ValidationException"];

/// An EventBridge entry's size as AWS counts it: Source, DetailType and
/// Detail in UTF-8 bytes (no Time, no Resources are sent). The event bus
/// name does not count.
pub(crate) fn eventbridge_entry_size(source: &str, detail_type: &str, detail: &str) -> usize {
    source.len() + detail_type.len() + detail.len()
}

#[async_trait]
impl BatchApi for EventBridgeSink {
    fn limits(&self) -> &'static BatchLimits {
        &EVENTBRIDGE_LIMITS
    }
    fn entry_size(&self, item: &Item) -> usize {
        eventbridge_entry_size(&self.source, &self.detail_type, &item.body)
    }
    fn call_timeout(&self) -> Duration {
        self.timeout
    }
    async fn call(&self, entries: &[&Item]) -> Result<Vec<Outcome>, CallError> {
        use aws_sdk_eventbridge::{error::ProvideErrorMetadata, types::PutEventsRequestEntry};
        let mut req = self.client.put_events();
        for item in entries {
            req = req.entries(
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.event_bus)
                    .source(&self.source)
                    .detail_type(&self.detail_type)
                    .detail(&item.body)
                    .build(),
            );
        }
        let out = req.send().await.map_err(|e| {
            CallError::new(
                "EventBridge PutEvents",
                e.code(),
                aws_sdk_eventbridge::error::DisplayErrorContext(&e),
            )
        })?;
        // PutEvents answers positionally: result entry n is request entry
        // n, with an event id or an error code.
        Ok((0..entries.len())
            .map(|pos| match out.entries().get(pos) {
                None => Outcome::retry("EventBridge returned no result for the entry"),
                Some(r) => match r.error_code() {
                    None if r.event_id().is_some() => Outcome::Delivered,
                    None => Outcome::retry("EventBridge returned neither an event id nor an error"),
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
            })
            .collect())
    }
}

#[async_trait]
impl Sink for EventBridgeSink {
    async fn send(&mut self, items: &[&Item], ctx: &SendContext) -> Vec<Outcome> {
        send_batches(self, items, ctx).await
    }
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
    fn whole_call_errors_are_classified() {
        for code in [
            "BatchRequestTooLong",
            "AWS.SimpleQueueService.BatchRequestTooLong",
            "InvalidParameterValue",
            "InvalidParameterValueException",
            "InvalidParameter",
            "TooManyEntriesInBatchRequest",
            "ValidationException",
            "InvalidMessageContents",
        ] {
            assert!(permanent_call_error(Some(code)), "{code} is permanent");
        }
        for code in [
            None,
            Some("ThrottlingException"),
            Some("RequestThrottled"),
            Some("InternalError"),
            Some("ServiceUnavailable"),
            Some("AWS.SimpleQueueService.NonExistentQueue"),
            Some("QueueDoesNotExist"),
            Some("AccessDenied"),
            Some("AccessDeniedException"),
            Some("KmsThrottled"),
            Some("NotFound"),
        ] {
            assert!(!permanent_call_error(code), "{code:?} is transient");
        }
    }

    #[test]
    fn entry_sizes_are_counted_as_aws_documents() {
        let item = Item {
            job_sid: "JS1".into(),
            transition_id: "T".into(),
            status: "QUEUED".into(),
            body: "{\"a\":\"\u{ffff}\"}".into(),
            attempts: 0,
        };
        // Body after escaping U+FFFF (6 bytes instead of 3), plus each
        // attribute's name, type and value.
        let body = sqs_safe(&item.body).len();
        assert_eq!(body, item.body.len() + 3);
        assert_eq!(
            attributes_size(&item),
            (7 + 6 + 3) + (6 + 6 + 6),
            "job_sid/String/JS1 and status/String/QUEUED"
        );
        assert_eq!(eventbridge_entry_size("bulkwatch", "Job", "{}"), 9 + 3 + 2);
        assert_eq!(eventbridge_entry_size("é", "", ""), 2, "UTF-8 bytes");
        assert_eq!(SQS_LIMITS.max_request_bytes, 1_048_576);
        assert_eq!(SNS_LIMITS.max_request_bytes, 262_144);
        const {
            assert!(
                EVENTBRIDGE_LIMITS.max_request_bytes < 262_144,
                "less than 256 KB"
            )
        };
    }

    /// A batch API that enforces its limits like the real service: a
    /// request over them fails as a whole with BatchRequestTooLong.
    struct FakeApi {
        limits: &'static BatchLimits,
        calls: std::sync::Mutex<Vec<Vec<String>>>,
        /// Refuses (as a whole call) any request holding this job.
        poison: Option<&'static str>,
        stop_after_first_call: Option<tokio_util::sync::CancellationToken>,
    }

    impl FakeApi {
        fn new(limits: &'static BatchLimits) -> Self {
            Self {
                limits,
                calls: Default::default(),
                poison: None,
                stop_after_first_call: None,
            }
        }
        fn calls(&self) -> Vec<Vec<String>> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl BatchApi for FakeApi {
        fn limits(&self) -> &'static BatchLimits {
            self.limits
        }
        fn entry_size(&self, item: &Item) -> usize {
            item.body.len()
        }
        fn call_timeout(&self) -> Duration {
            Duration::from_secs(1)
        }
        async fn call(&self, entries: &[&Item]) -> Result<Vec<Outcome>, CallError> {
            self.calls
                .lock()
                .unwrap()
                .push(entries.iter().map(|i| i.job_sid.clone()).collect());
            if let Some(t) = &self.stop_after_first_call {
                t.cancel();
            }
            let total: usize = entries.iter().map(|i| i.body.len()).sum();
            if entries.len() > self.limits.max_entries || total > self.limits.max_request_bytes {
                return Err(CallError::new(
                    "Fake",
                    Some("BatchRequestTooLong"),
                    "too long",
                ));
            }
            if let Some(p) = self.poison
                && entries.iter().any(|i| i.job_sid == p)
            {
                return Err(CallError::new(
                    "Fake",
                    Some("InvalidParameterValue"),
                    "invalid",
                ));
            }
            Ok(vec![Outcome::Delivered; entries.len()])
        }
    }

    fn item(job: &str, size: usize) -> Item {
        Item {
            job_sid: job.into(),
            transition_id: format!("T-{job}"),
            status: "QUEUED".into(),
            body: "x".repeat(size),
            attempts: 0,
        }
    }

    fn ctx() -> (SendContext, tokio_util::sync::CancellationToken) {
        let stop = tokio_util::sync::CancellationToken::new();
        (SendContext::new(stop.clone(), Default::default()), stop)
    }

    #[tokio::test]
    async fn an_oversized_transition_is_refused_and_the_rest_delivered() {
        let api = FakeApi::new(&SQS_LIMITS);
        let items = [
            item("J1", 100),
            item("BIG", 1_048_577),
            item("J2", 600_000),
            item("J3", 600_000),
        ];
        let refs: Vec<&Item> = items.iter().collect();
        let (ctx, _) = ctx();
        let out = send_batches(&api, &refs, &ctx).await;
        assert_eq!(out[0], Outcome::Delivered);
        assert_eq!(out[2], Outcome::Delivered);
        assert_eq!(out[3], Outcome::Delivered);
        match &out[1] {
            Outcome::Reject { error, .. } => {
                assert!(
                    error.contains("1048577") && error.contains("1048576") && error.contains("SQS"),
                    "{error}"
                );
            }
            other => panic!("the oversized entry must be refused, got {other:?}"),
        }
        // Never sent, and no request went over the limits.
        let calls = api.calls();
        assert!(calls.iter().flatten().all(|j| j != "BIG"), "{calls:?}");
        assert_eq!(calls, [vec!["J1", "J2"], vec!["J3"]]);
    }

    #[tokio::test]
    async fn a_permanently_refused_call_is_split_to_find_the_bad_entry() {
        let mut api = FakeApi::new(&SNS_LIMITS);
        api.poison = Some("BAD");
        let items = [item("J1", 10), item("BAD", 10), item("J2", 10)];
        let refs: Vec<&Item> = items.iter().collect();
        let (ctx, _) = ctx();
        let out = send_batches(&api, &refs, &ctx).await;
        assert_eq!(out[0], Outcome::Delivered);
        assert!(matches!(&out[1], Outcome::Reject { error, .. } if error.contains("invalid")));
        assert_eq!(out[2], Outcome::Delivered);
        assert_eq!(api.calls().len(), 4, "one batch, then each entry alone");
    }

    #[tokio::test]
    async fn no_call_starts_once_stopping() {
        let mut api = FakeApi::new(&EVENTBRIDGE_LIMITS);
        let (ctx, stop) = ctx();
        api.stop_after_first_call = Some(stop);
        // 25 entries: three requests; the token is cancelled during the first.
        let items: Vec<Item> = (0..25).map(|i| item(&format!("J{i}"), 10)).collect();
        let refs: Vec<&Item> = items.iter().collect();
        let out = send_batches(&api, &refs, &ctx).await;
        assert_eq!(
            api.calls().len(),
            1,
            "the call in flight finishes, no new one"
        );
        assert!(out[..10].iter().all(|o| *o == Outcome::Delivered));
        assert!(out[10..].iter().all(|o| *o == Outcome::NotSent), "{out:?}");
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
