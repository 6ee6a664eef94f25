//! The decode stage: bytes → CloudEvent envelope → typed bulk-job event.
//!
//! Architecture invariant: decoding never fails the worker. Every record is
//! sorted into exactly one [`Decoded`] class, and a bad record carries a
//! reason that names its problem.
//!
//! # How a record is read
//!
//! 1. Bounds first ([`limits`]): at most 1 MiB, valid UTF-8, not blank, and
//!    at most 32 levels of nesting (a byte scan, before any parsing, so a
//!    hostile input cannot make the parser recurse).
//! 2. The fast path ([`envelope`]): one `serde_json::from_str` into borrowed
//!    typed structs. A well-formed bulk-job event never leaves it.
//! 3. The slow path ([`diagnose`]), only when serde rejects the record: a
//!    `serde_json::Value` is checked field by field to name the problem,
//!    then classified by the same code as the fast path.
//!
//! # Rules
//!
//! - CloudEvents 1.0: `id`, `source`, `specversion` ("1.0", or any 1.x) and
//!   `type` are required non-empty strings.
//! - `datacontenttype` is never a reason to refuse a record, whatever its
//!   shape: the shape of `data` (an object, or a string holding a JSON
//!   object) tells us how to read it. The seed's doc puts the event's
//!   timestamp in it; a string that parses as one is used as the event's
//!   time when `time` is missing.
//! - Bulk-job `data` (Lookup.BulkEvent/1 and /2; other dataschemas are read
//!   the same way): `job_sid` and `status` required; every other field may
//!   be absent or null; unknown fields are ignored; counts are 64-bit
//!   integers; `thresholds.error` is a number; dates are RFC 3339/ISO 8601.
//! - `time` is optional; see [`envelope::resolve_time`] for the fallback
//!   order (event `time` → a timestamp in `datacontenttype` → the job's own
//!   date where it describes the event → arrival → `created_at` → now).
//! - Sink test events need `data.test_id`; other types need only the
//!   required attributes and are passed over.

mod diagnose;
mod envelope;
mod error;
pub mod error_codes;
mod event;
pub mod limits;
mod timestamp;
mod wire;

#[cfg(test)]
pub(crate) mod tests;

use time::OffsetDateTime;

pub use error::DecodeError;
pub use event::{
    BULK_JOB_TYPE, BulkJobData, BulkJobEvent, JobResult, OtherEvent, SINK_TEST_TYPE, SinkTestEvent,
    Thresholds, TimeSource,
};
pub use timestamp::parse_timestamp;

/// One record, classified.
// A job event is far larger than the other variants, but every decoded
// record is moved once, straight into the tracker's batch: boxing it would
// cost an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Job(BulkJobEvent),
    SinkTest(SinkTestEvent),
    Other(OtherEvent),
    Bad(DecodeError),
}

/// The four classes, for counting and for `bulkwatch decode`'s output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordClass {
    Job,
    SinkTest,
    Other,
    Bad,
}

impl RecordClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordClass::Job => "bulk_job",
            RecordClass::SinkTest => "sink_test",
            RecordClass::Other => "other",
            RecordClass::Bad => "bad",
        }
    }
}

impl Decoded {
    pub fn class(&self) -> RecordClass {
        match self {
            Decoded::Job(_) => RecordClass::Job,
            Decoded::SinkTest(_) => RecordClass::SinkTest,
            Decoded::Other(_) => RecordClass::Other,
            Decoded::Bad(_) => RecordClass::Bad,
        }
    }
}

/// Decodes one Kinesis record payload. Never panics; its cost is bounded
/// by [`limits::MAX_RECORD_BYTES`] and [`limits::MAX_DEPTH`].
///
/// `arrival` is the record's ApproximateArrivalTimestamp, the last resort
/// for the event's time.
pub fn decode(data: &[u8], arrival: Option<OffsetDateTime>) -> Decoded {
    if data.len() > limits::MAX_RECORD_BYTES {
        return Decoded::Bad(DecodeError::TooLarge {
            size: data.len(),
            limit: limits::MAX_RECORD_BYTES,
        });
    }
    // Checked up front (fast, and the reason names the byte); serde_json's
    // `from_str` then skips its own UTF-8 validation.
    let json = match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(e) => {
            return Decoded::Bad(DecodeError::NotUtf8 {
                at: e.valid_up_to(),
            });
        }
    };
    if json.trim_ascii().is_empty() {
        return Decoded::Bad(DecodeError::Empty);
    }
    if let Err(e) = limits::check_depth(data, 0, limits::MAX_DEPTH) {
        return Decoded::Bad(e);
    }
    match envelope::decode_fast(json, arrival) {
        Some(decoded) => decoded,
        None => diagnose::decode_slow(json, arrival),
    }
}
