//! The decode stage: bytes → CloudEvent envelope → typed bulk-job event.
//!
//! Architecture invariant: decoding never fails the worker. Every record is
//! sorted into exactly one [`Decoded`] class, and a bad record carries a
//! reason that names its problem.

// TEMPORARY stand-in until the full decode stage lands.
use time::OffsetDateTime;

pub enum Decoded {
    Job(BulkJobEvent),
    SinkTest(SinkTestEvent),
    Other(OtherEvent),
    Bad(DecodeError),
}
pub struct SinkTestEvent {
    pub id: String,
    pub source: String,
    pub test_id: String,
}
pub struct OtherEvent {
    pub id: String,
    pub event_type: String,
}
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);
#[derive(Debug, Clone)]
pub struct BulkJobEvent {
    pub id: String,
    pub job_sid: String,
    pub status: String,
    pub time: Option<OffsetDateTime>,
}
impl BulkJobEvent {
    pub fn job_sid(&self) -> &str {
        &self.job_sid
    }
}
pub fn decode(data: &[u8], _arrival: Option<OffsetDateTime>) -> Decoded {
    let v: serde_json::Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(e) => return Decoded::Bad(DecodeError(format!("not JSON: {e}"))),
    };
    let ty = v["type"].as_str().unwrap_or_default().to_string();
    let id = v["id"].as_str().unwrap_or_default().to_string();
    if ty == "com.twilio.eventstreams.test-event" {
        return Decoded::SinkTest(SinkTestEvent { id, source: v["source"].as_str().unwrap_or_default().into(), test_id: v["data"]["test_id"].as_str().unwrap_or_default().into() });
    }
    if ty != "com.twilio.lookup.bulk.job-status-changed" {
        return Decoded::Other(OtherEvent { id, event_type: ty });
    }
    let data = match &v["data"] {
        serde_json::Value::String(s) => serde_json::from_str(s).unwrap_or_default(),
        d => d.clone(),
    };
    Decoded::Job(BulkJobEvent { id, job_sid: data["job_sid"].as_str().unwrap_or_default().into(), status: data["status"].as_str().unwrap_or_default().into(), time: None })
}
