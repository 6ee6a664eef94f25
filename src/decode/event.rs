//! The typed results of decoding.

use time::OffsetDateTime;

use crate::track::JobStatus;

/// The CloudEvent type of a Lookup bulk-job status change.
pub const BULK_JOB_TYPE: &str = "com.twilio.lookup.bulk.job-status-changed";
/// The CloudEvent type Event Streams sends to test a sink.
pub const SINK_TEST_TYPE: &str = "com.twilio.eventstreams.test-event";

/// A Lookup bulk-job "job status changed" event.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkJobEvent {
    /// The CloudEvent `id`: Twilio's deduplication key.
    pub id: String,
    /// The CloudEvent `source`.
    pub source: String,
    /// `https://events-schemas.twilio.com/Lookup.BulkEvent/1` or `/2`
    /// (others are accepted too: the fields are the same and unknown ones
    /// are ignored).
    pub dataschema: Option<String>,
    /// When the change happened, in UTC; see [`TimeSource`].
    pub time: OffsetDateTime,
    pub time_source: TimeSource,
    pub data: BulkJobData,
}

impl BulkJobEvent {
    pub fn job_sid(&self) -> &str {
        &self.data.job_sid
    }

    pub fn status(&self) -> &JobStatus {
        &self.data.status
    }
}

/// Where [`BulkJobEvent::time`] came from, in fallback order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// The envelope's `time` attribute.
    Event,
    /// `data.completed_at`, used only for a terminal status.
    CompletedAt,
    /// `data.created_at`.
    CreatedAt,
    /// The Kinesis record's ApproximateArrivalTimestamp.
    Arrival,
    /// The decoder's clock: nothing else was available.
    Now,
    /// A timestamp found in `datacontenttype` (the seed doc's quirk).
    #[serde(rename = "datacontenttype")]
    DataContentType,
}

impl TimeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeSource::Event => "event",
            TimeSource::CompletedAt => "completed_at",
            TimeSource::CreatedAt => "created_at",
            TimeSource::Arrival => "arrival",
            TimeSource::Now => "now",
            TimeSource::DataContentType => "datacontenttype",
        }
    }
}

/// The `data` of a bulk-job event (Lookup.BulkEvent/1 and /2 are the same).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BulkJobData {
    pub job_sid: String,
    /// Optional in Twilio's schema, but an event without it carries no
    /// status change, so the decoder requires it.
    pub status: JobStatus,
    pub friendly_name: Option<String>,
    pub description: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    pub thresholds: Option<Thresholds>,
    pub result: Option<JobResult>,
    pub twilio_error_code: Option<i64>,
}

/// `data.thresholds`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Thresholds {
    /// A number (not necessarily whole), or null.
    pub error: Option<f64>,
}

/// `data.result`. Every field may be absent or null; counts are 64-bit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobResult {
    pub total_count: Option<i64>,
    pub processed_count: Option<i64>,
    pub success_count: Option<i64>,
    pub error_count: Option<i64>,
    pub file_url: Option<String>,
    pub details: Option<String>,
}

/// An Event Streams sink test event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkTestEvent {
    pub id: String,
    pub source: String,
    pub test_id: String,
}

/// Any other Twilio event type sharing the stream: counted per type and
/// passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherEvent {
    pub id: String,
    pub event_type: String,
}
