//! The fast path, and the classification both paths share.
//!
//! The fast path reads the record with one `serde_json::from_str` into the
//! borrowed [`WireEnvelope`], with `data` typed as a bulk-job object, and
//! no `serde_json::Value` tree. It succeeds for every well-formed bulk-job
//! event. When serde rejects the record (a wrong type somewhere, or another
//! event type whose `data` has a shape of its own) we fall back to
//! [`super::diagnose`], which is slower but names the problem precisely.

use std::borrow::Cow;

use time::OffsetDateTime;

use super::event::{
    BULK_JOB_TYPE, BulkJobData, BulkJobEvent, JobResult, OtherEvent, SINK_TEST_TYPE, SinkTestEvent,
    Thresholds, TimeSource,
};
use super::limits::{MAX_DEPTH, check_depth};
use super::timestamp::parse_timestamp;
use super::wire::{Text, WireBulkData, WireData, WireEnvelope};
use super::{DecodeError, Decoded};
use crate::track::JobStatus;

/// What the fast path concluded: `None` means serde could not read the
/// record into the typed shape, so diagnose it.
pub(super) type Outcome = Option<Decoded>;

/// Starts with `{` after optional whitespace. serde's derived structs also
/// accept arrays (fields by position), which an envelope must never be.
pub(super) fn looks_like_object(json: &str) -> bool {
    json.trim_ascii_start().starts_with('{')
}

pub(super) fn decode_fast(json: &str, arrival: Option<OffsetDateTime>) -> Outcome {
    if !looks_like_object(json) {
        return None;
    }
    match serde_json::from_str::<WireEnvelope<'_>>(json) {
        Ok(env) => classify(env, arrival),
        Err(_) => None,
    }
}

/// Turns a well-typed envelope into its class. Attribute checks run in a
/// fixed order (id, source, specversion, type, then per type: time, data)
/// so a record with several problems always gets the same reason.
pub(super) fn classify(env: WireEnvelope<'_>, arrival: Option<OffsetDateTime>) -> Outcome {
    match classify_inner(env, arrival) {
        Ok(Some(decoded)) => Some(decoded),
        Ok(None) => None,
        Err(e) => Some(Decoded::Bad(e)),
    }
}

/// `Ok(None)` means "a JSON-encoded `data` string that serde could not
/// read": only the slow path can say why.
fn classify_inner(
    env: WireEnvelope<'_>,
    arrival: Option<OffsetDateTime>,
) -> Result<Option<Decoded>, DecodeError> {
    let id = required(env.id, "id")?;
    let source = required(env.source, "source")?;
    let specversion = required(env.specversion, "specversion")?;
    let ty = required(env.ty, "type")?;
    // CloudEvents minor versions are backward compatible; a new major is not.
    if !(specversion == "1.0" || specversion.starts_with("1.")) {
        return Err(DecodeError::UnsupportedSpecVersion(
            specversion.into_owned(),
        ));
    }
    match ty.as_ref() {
        BULK_JOB_TYPE => {
            let time = match env.time {
                Some(Text(t)) => {
                    Some(parse_timestamp(&t).ok_or_else(|| DecodeError::BadTime(t.into_owned()))?)
                }
                None => None,
            };
            let Some(data) = with_data(env.data, bulk_data)? else {
                return Ok(None);
            };
            let quirk_time = env
                .datacontenttype
                .as_ref()
                .and_then(|Text(t)| parse_timestamp(t));
            let (time, time_source) = resolve_time(time, quirk_time, &data, arrival);
            Ok(Some(Decoded::Job(BulkJobEvent {
                id: id.into_owned(),
                source: source.into_owned(),
                dataschema: env.dataschema,
                time,
                time_source,
                data,
            })))
        }
        SINK_TEST_TYPE => {
            let test_id =
                |w: WireBulkData<'_>| w.test_id.ok_or(DecodeError::MissingField("data.test_id"));
            let Some(test_id) = with_data(env.data, test_id)? else {
                return Ok(None);
            };
            Ok(Some(Decoded::SinkTest(SinkTestEvent {
                id: id.into_owned(),
                source: source.into_owned(),
                test_id,
            })))
        }
        _ => Ok(Some(Decoded::Other(OtherEvent {
            id: id.into_owned(),
            event_type: ty.into_owned(),
        }))),
    }
}

/// A required attribute: present, not null, not empty.
fn required<'a>(v: Option<Text<'a>>, name: &'static str) -> Result<Cow<'a, str>, DecodeError> {
    match v {
        None => Err(DecodeError::MissingAttribute(name)),
        Some(Text(s)) if s.is_empty() => Err(DecodeError::EmptyAttribute(name)),
        Some(Text(s)) => Ok(s),
    }
}

/// Runs `f` on `data` as an object, reading a JSON-encoded string if need
/// be. `Ok(None)`: a string whose JSON serde rejects; the slow path says why.
fn with_data<R>(
    data: Option<WireData<'_>>,
    f: impl FnOnce(WireBulkData<'_>) -> Result<R, DecodeError>,
) -> Result<Option<R>, DecodeError> {
    match data {
        None => Err(DecodeError::MissingAttribute("data")),
        Some(WireData::Object(w)) => f(w).map(Some),
        Some(WireData::Text(s)) => {
            // The string sits one level inside the envelope; bound its
            // contents as if they were inline.
            check_depth(s.as_bytes(), 1, MAX_DEPTH)?;
            if !looks_like_object(&s) {
                return Ok(None);
            }
            match serde_json::from_str::<WireBulkData<'_>>(&s) {
                Ok(w) => f(w).map(Some),
                Err(_) => Ok(None),
            }
        }
        Some(WireData::Other(found)) => Err(DecodeError::WrongAttributeType {
            name: "data",
            expected: "object or JSON-encoded object string",
            found,
        }),
    }
}

/// Checks in field order: job_sid, status, created_at, completed_at.
fn bulk_data(w: WireBulkData<'_>) -> Result<BulkJobData, DecodeError> {
    let job_sid = w.job_sid.ok_or(DecodeError::MissingField("data.job_sid"))?;
    if job_sid.is_empty() {
        return Err(DecodeError::EmptyField("data.job_sid"));
    }
    // The sid becomes a store key, a log field and part of the transition
    // id: refuse what no Twilio sid can be rather than store it.
    if job_sid.len() > super::limits::MAX_JOB_SID_BYTES {
        return Err(DecodeError::BadJobSid(format!(
            "{} bytes long, more than {}",
            job_sid.len(),
            super::limits::MAX_JOB_SID_BYTES
        )));
    }
    if let Some(c) = job_sid
        .chars()
        .find(|c| c.is_control() || c.is_whitespace())
    {
        return Err(DecodeError::BadJobSid(format!(
            "contains {c:?}, a control or white-space character"
        )));
    }
    let status = match w.status {
        None => return Err(DecodeError::MissingField("data.status")),
        Some(Text(s)) if s.is_empty() => return Err(DecodeError::EmptyField("data.status")),
        Some(Text(s)) => JobStatus::parse(&s),
    };
    let created_at = timestamp_field(w.created_at, "data.created_at")?;
    let completed_at = timestamp_field(w.completed_at, "data.completed_at")?;
    Ok(BulkJobData {
        job_sid,
        status,
        friendly_name: w.friendly_name,
        description: w.description,
        created_at,
        completed_at,
        thresholds: w.thresholds.map(|t| Thresholds { error: t.error }),
        result: w.result.map(|r| JobResult {
            total_count: r.total_count,
            processed_count: r.processed_count,
            success_count: r.success_count,
            error_count: r.error_count,
            file_url: r.file_url,
            details: r.details,
        }),
        twilio_error_code: w.twilio_error_code,
    })
}

fn timestamp_field(
    v: Option<Text<'_>>,
    field: &'static str,
) -> Result<Option<OffsetDateTime>, DecodeError> {
    match v {
        None => Ok(None),
        Some(Text(s)) => parse_timestamp(&s)
            .map(Some)
            .ok_or_else(|| DecodeError::BadTimestamp {
                field,
                value: s.into_owned(),
            }),
    }
}

/// The event's time, in this order:
/// 1. the envelope's `time`;
/// 2. `datacontenttype`, when it holds a timestamp rather than a media type:
///    the seed's doc puts the event's time there and has no `time`, and an
///    event written from that template says when it happened nowhere else;
/// 3. the job's own timestamp, where it describes this event:
///    `completed_at` for a terminal status (the moment it finished) and
///    `created_at` for CREATED (the moment it was created);
/// 4. the record's ApproximateArrivalTimestamp: for the statuses in between
///    (QUEUED, IN_PROGRESS, ...), the job's timestamps tell when the job
///    started, not when this event happened, and using them would put a
///    later event before an earlier one;
/// 5. the job's `created_at` for any status (no arrival time: `bulkwatch
///    decode`), a lower bound of the event's time;
/// 6. the decoder's clock.
pub(super) fn resolve_time(
    time: Option<OffsetDateTime>,
    quirk_time: Option<OffsetDateTime>,
    data: &BulkJobData,
    arrival: Option<OffsetDateTime>,
) -> (OffsetDateTime, TimeSource) {
    if let Some(t) = time {
        return (t, TimeSource::Event);
    }
    if let Some(t) = quirk_time {
        return (t, TimeSource::DataContentType);
    }
    if data.status.is_terminal() {
        if let Some(t) = data.completed_at {
            return (t, TimeSource::CompletedAt);
        }
    }
    if data.status == crate::track::JobStatus::Created {
        if let Some(t) = data.created_at {
            return (t, TimeSource::CreatedAt);
        }
    }
    if let Some(t) = arrival {
        return (t.to_offset(time::UtcOffset::UTC), TimeSource::Arrival);
    }
    if let Some(t) = data.created_at {
        return (t, TimeSource::CreatedAt);
    }
    (OffsetDateTime::now_utc(), TimeSource::Now)
}
