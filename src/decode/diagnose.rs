//! The slow path: reads the record as a `serde_json::Value` (its depth and
//! size are already bounded) and checks every attribute and field's type
//! itself, so that the reason names the exact path ("wrong type for field
//! `data.result.total_count`: expected 64-bit integer, found string").
//! What passes is rebuilt as a [`WireEnvelope`] and classified by the same
//! code as the fast path.
//!
//! Only records the fast path cannot read come here: bad records, other
//! event types whose `data` has its own shape, and `data` strings that
//! hold something other than a bulk-job object.
//!
//! Check order (keep it in step with `envelope::classify`): attribute
//! types, required attributes present, specversion, then for a bulk-job
//! event `time` (type, value), `dataschema` (type), `data` (type, then
//! each field in schema order); for a sink test, `data` and `data.test_id`.

use std::borrow::Cow;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::envelope::classify;
use super::error::json_type;
use super::event::{BULK_JOB_TYPE, SINK_TEST_TYPE};
use super::limits::{MAX_DEPTH, check_depth};
use super::timestamp::parse_timestamp;
use super::wire::{Text, WireBulkData, WireData, WireEnvelope, WireResult, WireThresholds};
use super::{DecodeError, Decoded};

pub(super) fn decode_slow(json: &str, arrival: Option<OffsetDateTime>) -> Decoded {
    let value: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => {
            // JSON has no byte-order mark, and serde's "expected value at
            // line 1 column 1" does not show the invisible character.
            let why = if json.starts_with('\u{feff}') {
                format!("starts with a byte-order mark (U+FEFF), which JSON does not allow ({e})")
            } else {
                e.to_string()
            };
            return Decoded::Bad(DecodeError::NotJson(why));
        }
    };
    let Value::Object(obj) = &value else {
        return Decoded::Bad(DecodeError::NotObject {
            found: json_type(&value),
        });
    };
    match envelope(obj).map(|env| classify(env, arrival)) {
        Ok(Some(decoded)) => decoded,
        // Everything was checked above; if serde still disagrees, say so
        // rather than guess.
        Ok(None) => Decoded::Bad(DecodeError::Invalid(
            "data could not be read after its fields checked out".to_owned(),
        )),
        Err(e) => Decoded::Bad(e),
    }
}

fn envelope(obj: &Map<String, Value>) -> Result<WireEnvelope<'_>, DecodeError> {
    let mut env = WireEnvelope {
        id: attr_str(obj, "id")?,
        source: attr_str(obj, "source")?,
        specversion: attr_str(obj, "specversion")?,
        ty: attr_str(obj, "type")?,
        ..WireEnvelope::default()
    };
    // Same presence order as `classify`, so that a record with a missing
    // attribute and a bad `data` is blamed for the attribute, as the fast
    // path would.
    for (v, name) in [
        (&env.id, "id"),
        (&env.source, "source"),
        (&env.specversion, "specversion"),
        (&env.ty, "type"),
    ] {
        match v {
            None => return Err(DecodeError::MissingAttribute(name)),
            Some(Text(s)) if s.is_empty() => return Err(DecodeError::EmptyAttribute(name)),
            Some(_) => {}
        }
    }
    let specversion = env
        .specversion
        .as_ref()
        .map(|t| t.0.as_ref())
        .unwrap_or_default();
    if !(specversion == "1.0" || specversion.starts_with("1.")) {
        return Err(DecodeError::UnsupportedSpecVersion(specversion.to_owned()));
    }
    // `time`, `dataschema` and `data` matter only for the types we read.
    match env.ty.as_ref().map(|t| t.0.as_ref()) {
        Some(BULK_JOB_TYPE) => {
            env.time = attr_str(obj, "time")?;
            if let Some(Text(t)) = &env.time {
                if parse_timestamp(t).is_none() {
                    return Err(DecodeError::BadTime(t.to_string()));
                }
            }
            env.dataschema = attr_str(obj, "dataschema")?.map(|Text(s)| s.into_owned());
            // Any shape is tolerated; only a string can be the seed's
            // timestamp (see `envelope::resolve_time`).
            env.datacontenttype = match obj.get("datacontenttype") {
                Some(Value::String(s)) => Some(Text(Cow::Borrowed(s))),
                _ => None,
            };
            env.data = data(obj.get("data"), bulk_fields)?;
        }
        Some(SINK_TEST_TYPE) => {
            env.data = data(obj.get("data"), test_fields)?;
        }
        _ => {}
    }
    Ok(env)
}

/// An attribute that must be a string when present and not null.
fn attr_str<'a>(
    obj: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<Text<'a>>, DecodeError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(Text(Cow::Borrowed(s)))),
        Some(other) => Err(DecodeError::WrongAttributeType {
            name,
            expected: "string",
            found: json_type(other),
        }),
    }
}

type Fields = fn(&Map<String, Value>) -> Result<WireBulkData<'static>, DecodeError>;

fn data(v: Option<&Value>, fields: Fields) -> Result<Option<WireData<'static>>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => fields(m).map(|w| Some(WireData::Object(w))),
        Some(Value::String(s)) => {
            check_depth(s.as_bytes(), 1, MAX_DEPTH)?;
            let inner: Value = serde_json::from_str(s)
                .map_err(|e| DecodeError::DataStringNotJson(e.to_string()))?;
            match &inner {
                Value::Object(m) => fields(m).map(|w| Some(WireData::Object(w))),
                other => Err(DecodeError::WrongAttributeType {
                    name: "data",
                    expected: "a JSON object inside the string",
                    found: json_type(other),
                }),
            }
        }
        Some(other) => Ok(Some(WireData::Other(json_type(other)))),
    }
}

/// The bulk-job fields, in schema order. Unknown fields are ignored.
fn bulk_fields(m: &Map<String, Value>) -> Result<WireBulkData<'static>, DecodeError> {
    let text = |s: Option<String>| s.map(|s| Text(Cow::Owned(s)));
    Ok(WireBulkData {
        job_sid: string(m, "job_sid", "data.job_sid")?,
        status: text(string(m, "status", "data.status")?),
        friendly_name: string(m, "friendly_name", "data.friendly_name")?,
        description: string(m, "description", "data.description")?,
        created_at: text(string(m, "created_at", "data.created_at")?),
        completed_at: text(string(m, "completed_at", "data.completed_at")?),
        thresholds: match object(m, "thresholds", "data.thresholds")? {
            None => None,
            Some(t) => Some(WireThresholds {
                error: number(t, "error", "data.thresholds.error")?,
            }),
        },
        result: match object(m, "result", "data.result")? {
            None => None,
            Some(r) => Some(WireResult {
                total_count: integer(r, "total_count", "data.result.total_count")?,
                processed_count: integer(r, "processed_count", "data.result.processed_count")?,
                success_count: integer(r, "success_count", "data.result.success_count")?,
                error_count: integer(r, "error_count", "data.result.error_count")?,
                file_url: string(r, "file_url", "data.result.file_url")?,
                details: string(r, "details", "data.result.details")?,
            }),
        },
        twilio_error_code: integer(m, "twilio_error_code", "data.twilio_error_code")?,
        test_id: None,
    })
}

fn test_fields(m: &Map<String, Value>) -> Result<WireBulkData<'static>, DecodeError> {
    Ok(WireBulkData {
        test_id: string(m, "test_id", "data.test_id")?,
        ..WireBulkData::default()
    })
}

fn wrong(field: &'static str, expected: &'static str, v: &Value) -> DecodeError {
    DecodeError::WrongFieldType {
        field,
        expected,
        found: json_type(v),
    }
}

fn string(
    m: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(wrong(field, "string", v)),
    }
}

fn integer(
    m: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<i64>, DecodeError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(Value::Number(n)) if n.is_u64() => Err(DecodeError::WrongFieldType {
            field,
            expected: "64-bit integer",
            found: "integer out of range",
        }),
        Some(v) => Err(wrong(field, "64-bit integer", v)),
    }
}

fn number(
    m: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<f64>, DecodeError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(v) => Err(wrong(field, "number", v)),
    }
}

fn object<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<&'a Map<String, Value>>, DecodeError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(v) => Err(wrong(field, "object", v)),
    }
}
