//! Decode rules, one test each, plus property tests: decoding never
//! panics, and the fast and slow paths never disagree.

use proptest::prelude::*;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use super::envelope::decode_fast;
use super::*;
use crate::track::JobStatus;

/// The seed's example, verbatim (with its `datacontenttype` quirk).
pub(crate) const SEED: &str = r#"{
  "specversion" : "1.0",
  "type" : "com.twilio.lookup.bulk.job-status-changed",
  "source" : "AB00000000000000000000000001",
  "id" : "NO00000000000000000000000001",
  "dataschema" : "https://events-schemas.twilio.com/Lookup.BulkEvent/2",
  "datacontenttype" : "2025-10-08T07:17:02.363Z",
  "data" : {
    "twilio_error_code" : 60608,
    "job_sid" : "JW0000000000000000000000000000001",
    "friendly_name" : "Premium-accounts January 2025",
    "description" : "Customer Bulk Lookup January 2025- Premium accounts phone numbers",
    "created_at" : "2025-01-01T00:00:00.000Z",
    "completed_at" : "2025-01-01T00:01:00.000Z",
    "status" : "CREATED",
    "thresholds" : {
      "error" : 10
    },
    "result" : {
      "total_count" : 100,
      "processed_count" : 100,
      "success_count" : 100,
      "error_count" : 0,
      "file_url" : "https://lookup-bulk-service-bucket.s3.amazonaws.com/responses/AC0000000000000000000000000000001/JW0000000000000000000000000000001.csv.gz",
      "details" : "The job did not process all records due to insufficient funds. 25 records were skipped."
    }
  }
}"#;

const ARRIVAL: OffsetDateTime = datetime!(2025-06-01 12:00:00 UTC);

fn seed() -> Value {
    serde_json::from_str(SEED).unwrap()
}

fn job(v: &Value) -> BulkJobEvent {
    match decode(v.to_string().as_bytes(), Some(ARRIVAL)) {
        Decoded::Job(e) => e,
        other => panic!("expected a job event, got {other:?}"),
    }
}

fn reason(bytes: &[u8]) -> String {
    match decode(bytes, Some(ARRIVAL)) {
        Decoded::Bad(e) => e.to_string(),
        other => panic!(
            "expected bad, got {other:?} for {}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn reason_of(v: &Value) -> String {
    reason(v.to_string().as_bytes())
}

/// `v` with the JSON pointer `path` set to `value` (`None` removes it).
fn with(mut v: Value, path: &str, value: Option<Value>) -> Value {
    let (parent, key) = path.rsplit_once('/').unwrap();
    let obj = v.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    match value {
        Some(x) => obj.insert(key.to_owned(), x),
        None => obj.remove(key),
    };
    v
}

#[test]
fn the_seed_decodes_as_a_bulk_job_event() {
    let e = match decode(SEED.as_bytes(), Some(ARRIVAL)) {
        Decoded::Job(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(e.id, "NO00000000000000000000000001");
    assert_eq!(e.source, "AB00000000000000000000000001");
    assert_eq!(e.job_sid(), "JW0000000000000000000000000000001");
    assert_eq!(e.data.status, JobStatus::Created);
    assert_eq!(
        e.dataschema.as_deref(),
        Some("https://events-schemas.twilio.com/Lookup.BulkEvent/2")
    );
    assert_eq!(e.data.twilio_error_code, Some(60608));
    assert_eq!(e.data.thresholds, Some(Thresholds { error: Some(10.0) }));
    let r = e.data.result.as_ref().unwrap();
    assert_eq!(
        (
            r.total_count,
            r.processed_count,
            r.success_count,
            r.error_count
        ),
        (Some(100), Some(100), Some(100), Some(0))
    );
    assert!(r.file_url.as_deref().unwrap().ends_with(".csv.gz"));
    assert_eq!(e.data.created_at, Some(datetime!(2025-01-01 00:00:00 UTC)));
    assert_eq!(
        e.data.completed_at,
        Some(datetime!(2025-01-01 00:01:00 UTC))
    );
    // No `time`: the timestamp the doc's template put in `datacontenttype`.
    assert_eq!(
        (e.time, e.time_source),
        (
            datetime!(2025-10-08 07:17:02.363 UTC),
            TimeSource::DataContentType
        )
    );
    assert_eq!(decode(SEED.as_bytes(), None).class(), RecordClass::Job);
}

#[test]
fn data_may_be_a_json_encoded_string() {
    let v = seed();
    let inner = v["data"].to_string();
    let as_string = with(v.clone(), "/data", Some(Value::String(inner)));
    assert_eq!(job(&as_string), job(&v));
}

#[test]
fn envelope_time_wins_and_is_normalized_to_utc() {
    let v = with(seed(), "/time", Some(json!("2025-01-01T02:00:30.5+02:00")));
    let e = job(&v);
    assert_eq!(
        (e.time, e.time_source),
        (datetime!(2025-01-01 00:00:30.5 UTC), TimeSource::Event)
    );
}

#[test]
fn time_fallback_order() {
    // A media type in `datacontenttype`, as real events carry: not a time.
    let seed = || {
        with(
            super::tests::seed(),
            "/datacontenttype",
            Some(json!("application/json")),
        )
    };
    // CREATED: created_at, the moment it happened.
    assert_eq!(job(&seed()).time_source, TimeSource::CreatedAt);
    // In between: created_at says when the job began, not this event, so the
    // arrival time comes first; without one, created_at is the lower bound.
    let v = with(seed(), "/data/status", Some(json!("IN_PROGRESS")));
    assert_eq!(
        (job(&v).time, job(&v).time_source),
        (ARRIVAL, TimeSource::Arrival)
    );
    let Decoded::Job(e) = decode(v.to_string().as_bytes(), None) else {
        panic!()
    };
    assert_eq!(
        (e.time, e.time_source),
        (datetime!(2025-01-01 00:00:00 UTC), TimeSource::CreatedAt)
    );
    // A non-timestamp `datacontenttype` is never a time, whatever its shape.
    for dct in [
        json!("text/plain"),
        json!(5),
        json!({"t": "2025-01-01T00:00:00Z"}),
    ] {
        let v = with(v.clone(), "/datacontenttype", Some(dct));
        assert_eq!(job(&v).time_source, TimeSource::Arrival);
    }
    // Terminal: completed_at.
    let v = with(seed(), "/data/status", Some(json!("COMPLETED")));
    assert_eq!(job(&v).time_source, TimeSource::CompletedAt);
    assert_eq!(job(&v).time, datetime!(2025-01-01 00:01:00 UTC));
    // Terminal without completed_at: created_at does not describe it either,
    // so the arrival time, and created_at only without one.
    let v = with(v, "/data/completed_at", Some(Value::Null));
    assert_eq!(job(&v).time_source, TimeSource::Arrival);
    let Decoded::Job(e) = decode(v.to_string().as_bytes(), None) else {
        panic!()
    };
    assert_eq!(e.time_source, TimeSource::CreatedAt);
    // No job dates: the arrival timestamp.
    let v = with(v, "/data/created_at", None);
    assert_eq!(
        (job(&v).time, job(&v).time_source),
        (ARRIVAL, TimeSource::Arrival)
    );
    // Nothing at all: now.
    let before = OffsetDateTime::now_utc();
    let Decoded::Job(e) = decode(v.to_string().as_bytes(), None) else {
        panic!()
    };
    assert_eq!(e.time_source, TimeSource::Now);
    assert!(e.time >= before);
}

#[test]
fn a_non_terminal_event_never_takes_completed_at() {
    let v = with(seed(), "/datacontenttype", None);
    let v = with(v, "/data/status", Some(json!("PROCESSING")));
    let v = with(v, "/data/created_at", None);
    assert_eq!(job(&v).time_source, TimeSource::Arrival);
}

#[test]
fn both_schema_versions_and_unknown_fields_are_accepted() {
    let v1 = with(
        seed(),
        "/dataschema",
        Some(json!(
            "https://events-schemas.twilio.com/Lookup.BulkEvent/1"
        )),
    );
    assert_eq!(job(&v1).data, job(&seed()).data);
    let extra = with(
        seed(),
        "/extension",
        Some(json!({"deep": [1, 2, {"x": null}]})),
    );
    let extra = with(extra, "/data/new_field", Some(json!(["anything"])));
    let extra = with(extra, "/data/result/new_count", Some(json!("x")));
    assert_eq!(job(&extra).data, job(&seed()).data);
    let no_schema = with(seed(), "/dataschema", None);
    assert_eq!(job(&no_schema).dataschema, None);
}

#[test]
fn datacontenttype_of_any_shape_is_tolerated() {
    for dct in [
        json!("application/json"),
        json!("2025-10-08T07:17:02.363Z"),
        json!(5),
        json!(null),
        json!({"a": 1}),
    ] {
        assert_eq!(
            job(&with(seed(), "/datacontenttype", Some(dct))).id,
            "NO00000000000000000000000001"
        );
    }
}

#[test]
fn counts_are_64_bit() {
    let v = with(
        seed(),
        "/data/result/total_count",
        Some(json!(5_000_000_000_i64)),
    );
    let v = with(v, "/data/result/error_count", Some(json!(-1)));
    let r = job(&v).data.result.unwrap();
    assert_eq!(r.total_count, Some(5_000_000_000));
    assert_eq!(r.error_count, Some(-1));
    assert_eq!(
        reason_of(&with(
            seed(),
            "/data/result/total_count",
            Some(json!(u64::MAX))
        )),
        "wrong type for field `data.result.total_count`: expected 64-bit integer, found integer out of range"
    );
}

#[test]
fn thresholds_error_is_a_number_or_null() {
    let get = |x: Value| {
        job(&with(seed(), "/data/thresholds/error", Some(x)))
            .data
            .thresholds
    };
    assert_eq!(get(json!(2.5)), Some(Thresholds { error: Some(2.5) }));
    assert_eq!(get(json!(null)), Some(Thresholds { error: None }));
    assert_eq!(
        job(&with(seed(), "/data/thresholds", Some(json!(null))))
            .data
            .thresholds,
        None
    );
    assert_eq!(
        job(&with(seed(), "/data/thresholds/error", None))
            .data
            .thresholds,
        Some(Thresholds { error: None })
    );
}

#[test]
fn optional_fields_may_be_absent_or_null() {
    let minimal = json!({
        "specversion": "1.0", "type": BULK_JOB_TYPE, "source": "s", "id": "e1",
        "data": {"job_sid": "JW1", "status": "QUEUED"}
    });
    let e = job(&minimal);
    assert_eq!(e.data.friendly_name, None);
    assert_eq!(e.data.result, None);
    let nulls = json!({
        "specversion": "1.0", "type": BULK_JOB_TYPE, "source": "s", "id": "e1", "time": null, "dataschema": null,
        "data": {"job_sid": "JW1", "status": "QUEUED", "friendly_name": null, "description": null, "created_at": null,
                 "completed_at": null, "thresholds": null, "result": {"total_count": null, "file_url": null}, "twilio_error_code": null}
    });
    let n = job(&nulls);
    assert_eq!(n.data.twilio_error_code, None);
    assert_eq!(n.data.result.unwrap().file_url, None);
    assert_eq!(n.time_source, TimeSource::Arrival);
}

#[test]
fn unknown_statuses_decode() {
    let e = job(&with(seed(), "/data/status", Some(json!("ARCHIVED"))));
    assert_eq!(e.data.status, JobStatus::Unknown("ARCHIVED".into()));
}

#[test]
fn escaped_strings_are_read_on_the_fast_path() {
    let v = with(seed(), "/id", Some(json!("NO\u{e9}\"1")));
    let v = with(v, "/type", Some(json!(BULK_JOB_TYPE)));
    let s = v.to_string().replace("bulk.job", "bulk\\u002ejob");
    let Some(Decoded::Job(e)) = decode_fast(&s, Some(ARRIVAL)) else {
        panic!("fast path gave up")
    };
    assert_eq!(e.id, "NO\u{e9}\"1");
}

#[test]
fn the_seed_never_leaves_the_fast_path() {
    assert!(matches!(
        decode_fast(SEED, Some(ARRIVAL)),
        Some(Decoded::Job(_))
    ));
    let stringly = with(
        seed(),
        "/data",
        Some(Value::String(seed()["data"].to_string())),
    );
    assert!(matches!(
        decode_fast(&stringly.to_string(), Some(ARRIVAL)),
        Some(Decoded::Job(_))
    ));
}

#[test]
fn sink_test_events_are_their_own_class() {
    let v = json!({"specversion": "1.0", "type": SINK_TEST_TYPE, "source": "Sink", "id": "t1",
                   "data": {"test_id": "0b9d1c6e-1111-4a4a-9b9b-000000000001"}});
    match decode(v.to_string().as_bytes(), None) {
        Decoded::SinkTest(t) => {
            assert_eq!(t.test_id, "0b9d1c6e-1111-4a4a-9b9b-000000000001");
            assert_eq!(t.source, "Sink");
            assert_eq!(t.id, "t1");
        }
        other => panic!("{other:?}"),
    }
    let stringly = with(v.clone(), "/data", Some(json!("{\"test_id\":\"x\"}")));
    assert_eq!(
        decode(stringly.to_string().as_bytes(), None).class(),
        RecordClass::SinkTest
    );
    assert_eq!(
        reason_of(&with(v.clone(), "/data/test_id", None)),
        "missing field `data.test_id`"
    );
    assert_eq!(
        reason_of(&with(v, "/data", None)),
        "missing attribute `data`"
    );
}

#[test]
fn other_event_types_are_passed_over_whatever_their_data() {
    for data in [
        json!({"status": 5, "job_sid": []}),
        json!([1, 2]),
        json!("not json"),
        json!(null),
    ] {
        let v = json!({"specversion": "1.0", "type": "com.twilio.messaging.message.delivered", "source": "x", "id": "o1",
                       "time": 17, "data": data});
        assert_eq!(
            decode(v.to_string().as_bytes(), None),
            Decoded::Other(OtherEvent {
                id: "o1".into(),
                event_type: "com.twilio.messaging.message.delivered".into()
            })
        );
    }
}

#[test]
fn classes_have_stable_names() {
    assert_eq!(
        [
            RecordClass::Job,
            RecordClass::SinkTest,
            RecordClass::Other,
            RecordClass::Bad
        ]
        .map(|c| c.as_str()),
        ["bulk_job", "sink_test", "other", "bad"]
    );
}

#[test]
fn bad_records_name_their_problem() {
    let s = seed();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty record"),
        (b" \r\n\t".to_vec(), "empty record"),
        (vec![b'{'; MAX + 1], "too large: 1048577 bytes > 1048576"),
        (b"{\"id\":\"a\xffb\"}".to_vec(), "not UTF-8 at byte 8"),
        (
            format!("{}{}", "[".repeat(33), "]".repeat(33)).into_bytes(),
            "nested too deeply (>32)",
        ),
        (
            b"hello".to_vec(),
            "not JSON: expected value at line 1 column 1",
        ),
        (
            b"{\"id\": }".to_vec(),
            "not JSON: expected value at line 1 column 8",
        ),
        (
            b"{} {}".to_vec(),
            "not JSON: trailing characters at line 1 column 4",
        ),
        (
            b"\xef\xbb\xbf{}".to_vec(),
            "not JSON: starts with a byte-order mark (U+FEFF), which JSON does not allow (expected value at line 1 column 1)",
        ),
        (b"[1,2]".to_vec(), "not an object: found array"),
        (b"\"x\"".to_vec(), "not an object: found string"),
        (b"42".to_vec(), "not an object: found integer"),
        (b"null".to_vec(), "not an object: found null"),
        (b"{}".to_vec(), "missing attribute `id`"),
    ];
    for (input, want) in cases {
        assert_eq!(reason(&input), want);
    }
    let json_cases: Vec<(Value, &str)> = vec![
        (with(s.clone(), "/id", None), "missing attribute `id`"),
        (
            with(s.clone(), "/id", Some(json!(null))),
            "missing attribute `id`",
        ),
        (
            with(s.clone(), "/id", Some(json!(7))),
            "wrong type for attribute `id`: expected string, found integer",
        ),
        (
            with(s.clone(), "/id", Some(json!(""))),
            "empty attribute `id`",
        ),
        (
            with(s.clone(), "/source", None),
            "missing attribute `source`",
        ),
        (
            with(s.clone(), "/source", Some(json!(["a"]))),
            "wrong type for attribute `source`: expected string, found array",
        ),
        (
            with(s.clone(), "/specversion", None),
            "missing attribute `specversion`",
        ),
        (
            with(s.clone(), "/specversion", Some(json!(1.0))),
            "wrong type for attribute `specversion`: expected string, found number",
        ),
        (
            with(s.clone(), "/specversion", Some(json!("0.3"))),
            "unsupported specversion \"0.3\": expected \"1.0\"",
        ),
        (with(s.clone(), "/type", None), "missing attribute `type`"),
        (
            with(s.clone(), "/type", Some(json!(true))),
            "wrong type for attribute `type`: expected string, found boolean",
        ),
        (
            with(s.clone(), "/time", Some(json!("yesterday"))),
            "invalid timestamp in attribute `time`: \"yesterday\"",
        ),
        (
            with(s.clone(), "/time", Some(json!(1700000000))),
            "wrong type for attribute `time`: expected string, found integer",
        ),
        (
            with(s.clone(), "/dataschema", Some(json!(2))),
            "wrong type for attribute `dataschema`: expected string, found integer",
        ),
        (with(s.clone(), "/data", None), "missing attribute `data`"),
        (
            with(s.clone(), "/data", Some(json!(null))),
            "missing attribute `data`",
        ),
        (
            with(s.clone(), "/data", Some(json!([1]))),
            "wrong type for attribute `data`: expected object or JSON-encoded object string, found array",
        ),
        (
            with(s.clone(), "/data", Some(json!(3.5))),
            "wrong type for attribute `data`: expected object or JSON-encoded object string, found number",
        ),
        (
            with(s.clone(), "/data", Some(json!("{oops"))),
            "attribute `data` is a string but not JSON: key must be a string at line 1 column 2",
        ),
        (
            with(s.clone(), "/data", Some(json!("[1]"))),
            "wrong type for attribute `data`: expected a JSON object inside the string, found array",
        ),
        (
            with(s.clone(), "/data/job_sid", None),
            "missing field `data.job_sid`",
        ),
        (
            with(s.clone(), "/data/job_sid", Some(json!(12))),
            "wrong type for field `data.job_sid`: expected string, found integer",
        ),
        (
            with(s.clone(), "/data/job_sid", Some(json!(""))),
            "empty field `data.job_sid`",
        ),
        (
            with(s.clone(), "/data/status", None),
            "missing field `data.status`",
        ),
        (
            with(s.clone(), "/data/status", Some(json!(""))),
            "empty field `data.status`",
        ),
        (
            with(s.clone(), "/data/status", Some(json!({"a": 1}))),
            "wrong type for field `data.status`: expected string, found object",
        ),
        (
            with(s.clone(), "/data/friendly_name", Some(json!(1))),
            "wrong type for field `data.friendly_name`: expected string, found integer",
        ),
        (
            with(s.clone(), "/data/created_at", Some(json!("soon"))),
            "invalid timestamp in field `data.created_at`: \"soon\"",
        ),
        (
            with(
                s.clone(),
                "/data/completed_at",
                Some(json!("2025-02-30T00:00:00Z")),
            ),
            "invalid timestamp in field `data.completed_at`: \"2025-02-30T00:00:00Z\"",
        ),
        (
            with(s.clone(), "/data/thresholds", Some(json!([10]))),
            "wrong type for field `data.thresholds`: expected object, found array",
        ),
        (
            with(s.clone(), "/data/thresholds/error", Some(json!("10"))),
            "wrong type for field `data.thresholds.error`: expected number, found string",
        ),
        (
            with(s.clone(), "/data/result", Some(json!("done"))),
            "wrong type for field `data.result`: expected object, found string",
        ),
        (
            with(s.clone(), "/data/result/total_count", Some(json!("100"))),
            "wrong type for field `data.result.total_count`: expected 64-bit integer, found string",
        ),
        (
            with(s.clone(), "/data/result/processed_count", Some(json!(99.5))),
            "wrong type for field `data.result.processed_count`: expected 64-bit integer, found number",
        ),
        (
            with(s.clone(), "/data/result/file_url", Some(json!(false))),
            "wrong type for field `data.result.file_url`: expected string, found boolean",
        ),
        (
            with(s.clone(), "/data/twilio_error_code", Some(json!("60608"))),
            "wrong type for field `data.twilio_error_code`: expected 64-bit integer, found string",
        ),
    ];
    for (v, want) in json_cases {
        assert_eq!(reason_of(&v), want, "{v}");
    }
}

const MAX: usize = limits::MAX_RECORD_BYTES;

#[test]
fn a_string_data_is_depth_bounded_as_if_inline() {
    let deep = format!(
        "{{\"job_sid\":\"JW1\",\"status\":\"QUEUED\",\"x\":{}1{}}}",
        "[".repeat(31),
        "]".repeat(31)
    );
    // 1 (envelope) + 1 (data) + 31 = 33 levels.
    assert_eq!(
        reason_of(&with(seed(), "/data", Some(Value::String(deep)))),
        "nested too deeply (>32)"
    );
    let ok = format!(
        "{{\"job_sid\":\"JW1\",\"status\":\"QUEUED\",\"x\":{}1{}}}",
        "[".repeat(30),
        "]".repeat(30)
    );
    assert_eq!(
        job(&with(seed(), "/data", Some(Value::String(ok)))).job_sid(),
        "JW1"
    );
}

#[test]
fn a_record_at_the_size_limit_is_read() {
    let mut v = seed();
    let pad = MAX - v.to_string().len() - r#","pad":"""#.len();
    v["pad"] = Value::String("x".repeat(pad));
    let s = v.to_string();
    assert_eq!(s.len(), MAX);
    assert_eq!(decode(s.as_bytes(), None).class(), RecordClass::Job);
}

#[test]
fn error_kinds_are_stable_labels() {
    assert_eq!(DecodeError::TooDeep { limit: 32 }.kind(), "too_deep");
    assert_eq!(
        DecodeError::MissingAttribute("id").kind(),
        "missing_attribute"
    );
}

// ---- property tests ----

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        (-1e9f64..1e9).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        Just(json!("2025-01-01T00:00:00Z")),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Either a plausible value or anything at all.
fn or_any(good: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        3 => good.prop_map(Some),
        1 => arb_json().prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

fn arb_data() -> impl Strategy<Value = Value> {
    let status = prop_oneof![
        Just(json!("CREATED")),
        Just(json!("COMPLETED")),
        Just(json!("processing")),
        Just(json!("ARCHIVED")),
        Just(json!(""))
    ];
    let ts = prop_oneof![
        Just(json!("2025-01-01T00:00:00.000Z")),
        Just(json!("later")),
        Just(json!(null))
    ];
    let count = prop_oneof![
        any::<i64>().prop_map(Value::from),
        Just(json!(1.5)),
        Just(json!(null))
    ];
    (
        or_any(prop_oneof![Just(json!("JW1")), Just(json!(""))]),
        or_any(status),
        or_any(ts.clone()),
        or_any(ts),
        or_any(prop_oneof![
            Just(json!({"error": 10})),
            Just(json!({"error": null})),
            Just(json!(null))
        ]),
        or_any(
            (count.clone(), count, "[a-z]{0,5}")
                .prop_map(|(a, b, u)| json!({"total_count": a, "error_count": b, "file_url": u})),
        ),
        or_any(prop_oneof![
            Just(json!(60608)),
            Just(json!(1)),
            Just(json!(null))
        ]),
        or_any(Just(json!("t-1"))),
    )
        .prop_map(
            |(sid, status, created, completed, thresholds, result, code, test_id)| {
                let mut m = serde_json::Map::new();
                for (k, v) in [
                    ("job_sid", sid),
                    ("status", status),
                    ("created_at", created),
                    ("completed_at", completed),
                    ("thresholds", thresholds),
                    ("result", result),
                    ("twilio_error_code", code),
                    ("test_id", test_id),
                ] {
                    if let Some(v) = v {
                        m.insert(k.to_owned(), v);
                    }
                }
                Value::Object(m)
            },
        )
}

fn arb_envelope() -> impl Strategy<Value = Value> {
    let ty = prop_oneof![
        Just(json!(BULK_JOB_TYPE)),
        Just(json!(SINK_TEST_TYPE)),
        Just(json!("com.other")),
        Just(json!(""))
    ];
    let data = prop_oneof![
        3 => arb_data(),
        1 => arb_data().prop_map(|d| Value::String(d.to_string())),
        1 => arb_json(),
    ];
    (
        or_any(Just(json!("NO1"))),
        or_any(Just(json!("AB1"))),
        or_any(prop_oneof![
            Just(json!("1.0")),
            Just(json!("1.1")),
            Just(json!("0.3"))
        ]),
        or_any(ty),
        or_any(prop_oneof![
            Just(json!("2025-01-02T00:00:00Z")),
            Just(json!("x"))
        ]),
        or_any(Just(json!(
            "https://events-schemas.twilio.com/Lookup.BulkEvent/1"
        ))),
        or_any(data),
    )
        .prop_map(|(id, source, sv, ty, time, schema, data)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [
                ("id", id),
                ("source", source),
                ("specversion", sv),
                ("type", ty),
                ("time", time),
                ("dataschema", schema),
                ("data", data),
            ] {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, None).class();
    }

    #[test]
    fn never_panics_on_mutated_seeds(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8)) {
        let mut bytes = SEED.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len().max(1));
            match op {
                0 if !bytes.is_empty() => {
                    let last = bytes.len() - 1;
                    bytes[i.min(last)] = byte;
                }
                1 => bytes.insert(i.min(bytes.len()), byte),
                _ if !bytes.is_empty() => {
                    let last = bytes.len() - 1;
                    bytes.remove(i.min(last));
                }
                _ => {}
            }
        }
        let _ = decode(&bytes, Some(ARRIVAL));
    }

    #[test]
    fn never_panics_on_arbitrary_json(v in arb_json()) {
        let d = decode(v.to_string().as_bytes(), Some(ARRIVAL));
        prop_assert!(!matches!(d, Decoded::Bad(DecodeError::Invalid(_))), "{:?}", d);
    }

    /// The fast path and the slow path agree whenever the fast path
    /// decides, and the slow path never falls through to "invalid".
    #[test]
    fn fast_and_slow_paths_agree(v in arb_envelope()) {
        let s = v.to_string();
        let slow = super::diagnose::decode_slow(&s, Some(ARRIVAL));
        prop_assert!(!matches!(slow, Decoded::Bad(DecodeError::Invalid(_))), "{:?} for {}", slow, s);
        if let Some(fast) = decode_fast(&s, Some(ARRIVAL)) {
            prop_assert_eq!(fast, slow, "{}", s);
        }
    }

    #[test]
    fn depth_is_bounded_whatever_the_nesting(depth in 1usize..300, obj in any::<bool>()) {
        let (open, close) = if obj { ("{\"a\":", "}") } else { ("[", "]") };
        let s = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let d = decode(s.as_bytes(), None);
        if depth > limits::MAX_DEPTH {
            prop_assert_eq!(d, Decoded::Bad(DecodeError::TooDeep { limit: limits::MAX_DEPTH }));
        } else {
            prop_assert_eq!(d.class(), RecordClass::Bad);
            let too_deep = matches!(d, Decoded::Bad(DecodeError::TooDeep { .. }));
            prop_assert!(!too_deep);
        }
    }
}
