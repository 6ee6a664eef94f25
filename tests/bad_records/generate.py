#!/usr/bin/env python3
"""Writes the record corpus read by tests/bad_records.rs.

    python3 tests/bad_records/generate.py

writes tests/bad_records/NN-name.bin (bad records), tests/odd_records/NN-name.bin
(odd but good records) and an expected.toml in each directory naming the class
and, for bad records, the exact dead-letter reason. The files are committed;
this script is how they were made, so a new case is added here and the script
run again. The reasons are written by hand from the decoder's rules (and
serde_json's messages, with their line and column), never copied from the
decoder's output, so the test can catch a change of behaviour.

Every record is a variation of the contract's example event
(shared/seeds/000_3d6a16c5a6984c9c.txt), serialized compactly, so the records
are seed-sized and also make a good starting corpus for the fuzzer.
"""

import copy
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BAD_DIR = HERE
ODD_DIR = os.path.join(os.path.dirname(HERE), "odd_records")

BULK = "com.twilio.lookup.bulk.job-status-changed"
TEST = "com.twilio.eventstreams.test-event"

# The contract's example event, as documented (including its quirk: a
# timestamp in datacontenttype).
SEED = {
    "specversion": "1.0",
    "type": BULK,
    "source": "AB00000000000000000000000001",
    "id": "NO00000000000000000000000001",
    "dataschema": "https://events-schemas.twilio.com/Lookup.BulkEvent/2",
    "datacontenttype": "2025-10-08T07:17:02.363Z",
    "data": {
        "twilio_error_code": 60608,
        "job_sid": "JW0000000000000000000000000000001",
        "friendly_name": "Premium-accounts January 2025",
        "description": "Customer Bulk Lookup January 2025- Premium accounts phone numbers",
        "created_at": "2025-01-01T00:00:00.000Z",
        "completed_at": "2025-01-01T00:01:00.000Z",
        "status": "CREATED",
        "thresholds": {"error": 10},
        "result": {
            "total_count": 100,
            "processed_count": 100,
            "success_count": 100,
            "error_count": 0,
            "file_url": "https://lookup-bulk-service-bucket.s3.amazonaws.com/responses/AC0000000000000000000000000000001/JW0000000000000000000000000000001.csv.gz",
            "details": "The job did not process all records due to insufficient funds. 25 records were skipped.",
        },
    },
}

DELETE = object()


def dumps(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def seed_with(path, value):
    """The seed with the value at a slash path replaced (or DELETE-d)."""
    v = copy.deepcopy(SEED)
    keys = path.strip("/").split("/")
    node = v
    for k in keys[:-1]:
        node = node[k]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return dumps(v).encode()


def seed_bytes():
    return dumps(SEED).encode()


def sink_test(data):
    v = {
        "specversion": "1.0",
        "type": TEST,
        "source": "DG00000000000000000000000000000001",
        "id": "e1a6b7c8-0000-4000-8000-000000000001",
        "time": "2025-10-08T07:17:02.363Z",
    }
    if data is not DELETE:
        v["data"] = data
    return dumps(v).encode()


def wrong_attr(name, found):
    return f"wrong type for attribute `{name}`: expected string, found {found}"


def wrong_field(field, expected, found):
    return f"wrong type for field `{field}`: expected {expected}, found {found}"


DATA_EXPECTED = "object or JSON-encoded object string"
INT = "64-bit integer"

bad = []  # (name, bytes, reason)


def add(name, data, reason):
    bad.append((name, data, reason))


# --- bounds and encoding -------------------------------------------------
add("empty", b"", "empty record")
add("whitespace", b" \t\r\n  \n", "empty record")
add("not-utf8-first-byte", b"\xff" + seed_bytes(), "not UTF-8 at byte 0")
# A Latin-1 'e acute' inside a string value.
latin1 = seed_bytes().replace(b"Premium-accounts", b"Premi\xe9re-accounts", 1)
at = latin1.index(b"\xe9")
add("not-utf8-latin1-in-string", latin1, f"not UTF-8 at byte {at}")
# An overlong encoding of '/', which UTF-8 forbids.
overlong = seed_bytes().replace(b"responses/", b"responses\xc0\xaf", 1)
at = overlong.index(b"\xc0")
add("not-utf8-overlong", overlong, f"not UTF-8 at byte {at}")
# A UTF-16 surrogate encoded as UTF-8 (CESU-8), which UTF-8 forbids.
cesu = seed_bytes().replace(b"January 2025\"", b"January 2025\xed\xa0\x80\"", 1)
at = cesu.index(b"\xed")
add("not-utf8-encoded-surrogate", cesu, f"not UTF-8 at byte {at}")
# A multi-byte sequence cut off by the end of the record.
add("not-utf8-truncated-at-end", seed_bytes() + b"\xe2\x82", f"not UTF-8 at byte {len(seed_bytes())}")
add("utf16le-with-bom", b"\xff\xfe" + dumps(SEED).encode("utf-16-le"), "not UTF-8 at byte 0")
# Without a BOM, UTF-16 of ASCII text is valid UTF-8 (with NUL bytes), but
# not JSON.
add("utf16le-without-bom", dumps(SEED).encode("utf-16-le"), "not JSON: key must be a string at line 1 column 2")
# Too large: made by the test itself (1 MiB + 1 bytes), not stored.
add("nested-too-deeply-arrays", b"[" * 33 + b"]" * 33, "nested too deeply (>32)")
add("nested-too-deeply-unbalanced", b"{" * 10_000, "nested too deeply (>32)")
deep = {"a": None}
node = deep
for _ in range(40):
    node["a"] = {"a": None}
    node = node["a"]
add("nested-too-deeply-in-unknown-field", seed_with("/data/extra", deep), "nested too deeply (>32)")
# The data string's contents count as one level inside the envelope.
add(
    "nested-too-deeply-in-data-string",
    seed_with("/data", "[" * 32 + "]" * 32),
    "nested too deeply (>32)",
)

# --- not JSON ---------------------------------------------------------------
add("plain-text", b"hello, bulkwatch", "not JSON: expected value at line 1 column 1")
add("utf8-bom", b"\xef\xbb\xbf" + seed_bytes(), "not JSON: starts with a byte-order mark (U+FEFF), which JSON does not allow (expected value at line 1 column 1)")
truncated = seed_bytes()[:100]  # cut inside the "dataschema" string
add("truncated", truncated, "not JSON: EOF while parsing a string at line 1 column 100")
add("trailing-comma", b'{"id":"a",}', "not JSON: trailing comma at line 1 column 11")
add("two-events-in-one-record", seed_bytes() + b"\n" + seed_bytes(), "not JSON: trailing characters at line 2 column 1")
add("single-quoted", b"{'id':'a'}", "not JSON: key must be a string at line 1 column 2")
add("comment", b'{/* a comment */"id":"a"}', "not JSON: key must be a string at line 1 column 2")
add("nan-literal", b'{"id":NaN}', "not JSON: expected value at line 1 column 7")
add("bare-key", b"{id:1}", "not JSON: key must be a string at line 1 column 2")
add("missing-colon", b'{"id" "a"}', "not JSON: expected `:` at line 1 column 7")
add("unterminated-string", b'{"id":"abc', "not JSON: EOF while parsing a string at line 1 column 10")
add(
    "control-character-in-string",
    b'{"id":"a\tb"}',
    "not JSON: control character (\\u0000-\\u001F) found while parsing a string at line 1 column 9",
)
add("invalid-escape", b'{"id":"a\\qb"}', "not JSON: invalid escape at line 1 column 10")
# serde_json's own wording for the two halves of a surrogate pair alone: a
# high surrogate must be followed by a \u escape, and a low one cannot
# come first.
add(
    "lone-high-surrogate-escape",
    b'{"id":"\\ud800"}',
    "not JSON: unexpected end of hex escape at line 1 column 14",
)
add(
    "lone-low-surrogate-escape",
    b'{"id":"\\udc00"}',
    "not JSON: lone leading surrogate in hex escape at line 1 column 13",
)
# A number beyond f64 in a field the decoder reads (in an unknown field it
# is skipped unread: see the odd records). The column is the number's last
# digit.
huge = seed_bytes().replace(b'"error":10', b'"error":1e400', 1)
col = huge.index(b"1e400") + 5
add("number-out-of-range", huge, f"not JSON: number out of range at line 1 column {col}")
add("leading-zero", b'{"n":01}', "not JSON: invalid number at line 1 column 7")

# --- not an object -----------------------------------------------------------
add("top-level-array-of-event", b"[" + seed_bytes() + b"]", "not an object: found array")
add("top-level-empty-array", b"[]", "not an object: found array")
add("top-level-string", b'"com.twilio.lookup.bulk.job-status-changed"', "not an object: found string")
add("top-level-integer", b"60608", "not an object: found integer")
add("top-level-float", b"-1.5e3", "not an object: found number")
add("top-level-boolean", b"true", "not an object: found boolean")
add("top-level-null", b"null", "not an object: found null")
# The whole event JSON-encoded once more: a string.
add("top-level-json-string-of-event", json.dumps(dumps(SEED)).encode(), "not an object: found string")

# --- required attributes -----------------------------------------------------
add("empty-object", b"{}", "missing attribute `id`")
for name, wrong_value, found in [
    ("id", 1, "integer"),
    ("source", ["AB1"], "array"),
    ("specversion", 1.0, "number"),
    ("type", {"name": BULK}, "object"),
]:
    add(f"{name}-missing", seed_with(f"/{name}", DELETE), f"missing attribute `{name}`")
    add(f"{name}-null", seed_with(f"/{name}", None), f"missing attribute `{name}`")
    add(f"{name}-wrong-type", seed_with(f"/{name}", wrong_value), wrong_attr(name, found))
    add(f"{name}-empty", seed_with(f"/{name}", ""), f"empty attribute `{name}`")
add("id-boolean", seed_with("/id", False), wrong_attr("id", "boolean"))
add("specversion-0.3", seed_with("/specversion", "0.3"), 'unsupported specversion "0.3": expected "1.0"')
add("specversion-2.0", seed_with("/specversion", "2.0"), 'unsupported specversion "2.0": expected "1.0"')
add("specversion-bare-1", seed_with("/specversion", "1"), 'unsupported specversion "1": expected "1.0"')
# Several problems: the attributes are judged in a fixed order.
add(
    "several-problems-reports-the-first",
    seed_with("/source", DELETE).replace(b'"id":"NO00000000000000000000000001"', b'"id":""'),
    "empty attribute `id`",
)

# --- optional attributes of a bulk-job event ---------------------------------
add("time-not-a-timestamp", seed_with("/time", "yesterday"), 'invalid timestamp in attribute `time`: "yesterday"')
add("time-date-only", seed_with("/time", "2025-01-01"), 'invalid timestamp in attribute `time`: "2025-01-01"')
add(
    "time-month-13",
    seed_with("/time", "2025-13-01T00:00:00Z"),
    'invalid timestamp in attribute `time`: "2025-13-01T00:00:00Z"',
)
add("time-epoch-number", seed_with("/time", 1735689600), wrong_attr("time", "integer"))
add("dataschema-wrong-type", seed_with("/dataschema", 2), wrong_attr("dataschema", "integer"))

# --- data -------------------------------------------------------------------
add("data-missing", seed_with("/data", DELETE), "missing attribute `data`")
add("data-null", seed_with("/data", None), "missing attribute `data`")
add(
    "data-array",
    seed_with("/data", [SEED["data"]]),
    f"wrong type for attribute `data`: expected {DATA_EXPECTED}, found array",
)
add("data-number", seed_with("/data", 7), f"wrong type for attribute `data`: expected {DATA_EXPECTED}, found integer")
add("data-boolean", seed_with("/data", True), f"wrong type for attribute `data`: expected {DATA_EXPECTED}, found boolean")
add(
    "data-string-not-json",
    seed_with("/data", "job_sid=JW1&status=CREATED"),
    "attribute `data` is a string but not JSON: expected value at line 1 column 1",
)
add(
    "data-string-empty",
    seed_with("/data", ""),
    "attribute `data` is a string but not JSON: EOF while parsing a value at line 1 column 0",
)
add(
    "data-string-truncated-object",
    seed_with("/data", '{"job_sid":"JW1"'),
    "attribute `data` is a string but not JSON: EOF while parsing an object at line 1 column 16",
)
add(
    "data-string-of-array",
    seed_with("/data", "[]"),
    "wrong type for attribute `data`: expected a JSON object inside the string, found array",
)
add(
    "data-string-of-number",
    seed_with("/data", "60608"),
    "wrong type for attribute `data`: expected a JSON object inside the string, found integer",
)
# A data string holding an object is read by the same field rules.
inner = copy.deepcopy(SEED["data"])
inner["result"]["total_count"] = "100"
add(
    "data-string-with-bad-field",
    seed_with("/data", dumps(inner)),
    wrong_field("data.result.total_count", INT, "string"),
)

# --- bulk-job fields ----------------------------------------------------------
add("job-sid-missing", seed_with("/data/job_sid", DELETE), "missing field `data.job_sid`")
add("job-sid-null", seed_with("/data/job_sid", None), "missing field `data.job_sid`")
add("job-sid-integer", seed_with("/data/job_sid", 1), wrong_field("data.job_sid", "string", "integer"))
add("job-sid-empty", seed_with("/data/job_sid", ""), "empty field `data.job_sid`")
add("status-missing", seed_with("/data/status", DELETE), "missing field `data.status`")
add("status-null", seed_with("/data/status", None), "missing field `data.status`")
add("status-empty", seed_with("/data/status", ""), "empty field `data.status`")
add("status-number", seed_with("/data/status", 3), wrong_field("data.status", "string", "integer"))
add("status-object", seed_with("/data/status", {"name": "CREATED"}), wrong_field("data.status", "string", "object"))
add("status-array", seed_with("/data/status", ["CREATED"]), wrong_field("data.status", "string", "array"))
add("friendly-name-integer", seed_with("/data/friendly_name", 2025), wrong_field("data.friendly_name", "string", "integer"))
add("description-array", seed_with("/data/description", ["a"]), wrong_field("data.description", "string", "array"))
add(
    "created-at-not-a-timestamp",
    seed_with("/data/created_at", "soon"),
    'invalid timestamp in field `data.created_at`: "soon"',
)
add(
    "created-at-epoch-number",
    seed_with("/data/created_at", 1735689600),
    wrong_field("data.created_at", "string", "integer"),
)
add(
    "completed-at-february-30",
    seed_with("/data/completed_at", "2025-02-30T00:00:00Z"),
    'invalid timestamp in field `data.completed_at`: "2025-02-30T00:00:00Z"',
)
add(
    "completed-at-hour-24",
    seed_with("/data/completed_at", "2025-01-01T24:00:00Z"),
    'invalid timestamp in field `data.completed_at`: "2025-01-01T24:00:00Z"',
)
add("thresholds-array", seed_with("/data/thresholds", [10]), wrong_field("data.thresholds", "object", "array"))
add("thresholds-number", seed_with("/data/thresholds", 10), wrong_field("data.thresholds", "object", "integer"))
add("thresholds-error-string", seed_with("/data/thresholds/error", "10"), wrong_field("data.thresholds.error", "number", "string"))
add("thresholds-error-boolean", seed_with("/data/thresholds/error", True), wrong_field("data.thresholds.error", "number", "boolean"))
add("thresholds-error-object", seed_with("/data/thresholds/error", {"max": 10}), wrong_field("data.thresholds.error", "number", "object"))
add("result-string", seed_with("/data/result", "done"), wrong_field("data.result", "object", "string"))
add("result-array", seed_with("/data/result", [100, 100]), wrong_field("data.result", "object", "array"))
add("total-count-string", seed_with("/data/result/total_count", "100"), wrong_field("data.result.total_count", INT, "string"))
add("processed-count-float", seed_with("/data/result/processed_count", 99.5), wrong_field("data.result.processed_count", INT, "number"))
# 1e2 is a whole number in exponent form; JSON reads it as a float.
add("success-count-exponent", b'{"specversion":"1.0","type":"' + BULK.encode() + b'","source":"AB1","id":"NO1","data":{"job_sid":"JW1","status":"COMPLETED","result":{"success_count":1e2}}}', wrong_field("data.result.success_count", INT, "number"))
add("error-count-boolean", seed_with("/data/result/error_count", False), wrong_field("data.result.error_count", INT, "boolean"))
# 2^63: an integer, but beyond i64.
add(
    "total-count-above-i64",
    seed_with("/data/result/total_count", 2**63),
    wrong_field("data.result.total_count", INT, "integer out of range"),
)
# 2^64: beyond u64 too, so JSON reads it as a float.
add(
    "processed-count-above-u64",
    seed_with("/data/result/processed_count", 2**64),
    wrong_field("data.result.processed_count", INT, "number"),
)
# -2^63 - 1: below i64, read as a float.
add(
    "error-count-below-i64",
    seed_with("/data/result/error_count", -(2**63) - 1),
    wrong_field("data.result.error_count", INT, "number"),
)
add("file-url-boolean", seed_with("/data/result/file_url", True), wrong_field("data.result.file_url", "string", "boolean"))
add("details-number", seed_with("/data/result/details", 25), wrong_field("data.result.details", "string", "integer"))
add("error-code-string", seed_with("/data/twilio_error_code", "60608"), wrong_field("data.twilio_error_code", INT, "string"))
add("error-code-float", seed_with("/data/twilio_error_code", 60608.5), wrong_field("data.twilio_error_code", INT, "number"))
add(
    "error-code-above-i64",
    seed_with("/data/twilio_error_code", 2**63 + 5),
    wrong_field("data.twilio_error_code", INT, "integer out of range"),
)

# --- sink test events ---------------------------------------------------------
add("sink-test-data-missing", sink_test(DELETE), "missing attribute `data`")
add("sink-test-id-missing", sink_test({}), "missing field `data.test_id`")
add("sink-test-id-integer", sink_test({"test_id": 42}), wrong_field("data.test_id", "string", "integer"))
add(
    "sink-test-data-array",
    sink_test([]),
    f"wrong type for attribute `data`: expected {DATA_EXPECTED}, found array",
)

add("job-sid-too-long", seed_with("/data/job_sid", "JW" + "0" * 200), "invalid field `data.job_sid`: 202 bytes long, more than 128")
add("job-sid-nul", seed_with("/data/job_sid", "JWnul\u0000x"), "invalid field `data.job_sid`: contains '\\0', a control or white-space character")
add("job-sid-space", seed_with("/data/job_sid", "JW 1"), "invalid field `data.job_sid`: contains ' ', a control or white-space character")

# --- odd but good ---------------------------------------------------------------
odd = []  # (name, bytes, class)


def odd_add(name, data, cls):
    odd.append((name, data, cls))


def job(sid, status, **extra):
    """A seed-shaped event of its own job, so tracking never interferes."""
    v = copy.deepcopy(SEED)
    v["id"] = "NO" + sid
    v["data"]["job_sid"] = sid
    v["data"]["status"] = status
    for path, value in extra.items():
        node = v
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return dumps(v).encode()


odd_add("seed-as-documented", seed_bytes(), "bulk_job")
odd_add("schema-v1", job("JW01", "QUEUED", dataschema="https://events-schemas.twilio.com/Lookup.BulkEvent/1"), "bulk_job")
odd_add("schema-unknown-version", job("JW02", "QUEUED", dataschema="https://events-schemas.twilio.com/Lookup.BulkEvent/3"), "bulk_job")
odd_add("no-dataschema", job("JW03", "QUEUED", dataschema=DELETE), "bulk_job")
v = copy.deepcopy(SEED)
v["id"], v["data"]["job_sid"] = "NOJW04", "JW04"
v["data"] = dumps(v["data"])
odd_add("data-as-json-string", dumps(v).encode(), "bulk_job")
odd_add("datacontenttype-media-type", job("JW05", "CREATED", datacontenttype="application/json; charset=utf-8"), "bulk_job")
odd_add("datacontenttype-number", job("JW06", "CREATED", datacontenttype=42), "bulk_job")
odd_add("datacontenttype-object", job("JW07", "CREATED", datacontenttype={"a": 1}), "bulk_job")
odd_add("status-unknown", job("JW08", "PAUSED"), "bulk_job")
odd_add("status-lower-case", job("JW09", "completed"), "bulk_job")
odd_add("status-from-api-spec", job("JW10", "STOP_REQUESTED"), "bulk_job")
odd_add("counts-negative", job("JW11", "COMPLETED", data__result__error_count=-1), "bulk_job")
odd_add("counts-i64-max", job("JW12", "COMPLETED", data__result__total_count=2**63 - 1), "bulk_job")
odd_add("thresholds-error-null", job("JW13", "QUEUED", data__thresholds__error=None), "bulk_job")
odd_add("thresholds-error-fraction", job("JW14", "QUEUED", data__thresholds__error=0.25), "bulk_job")
odd_add("optional-fields-null", job("JW15", "FAILED", data__result=None, data__thresholds=None, data__friendly_name=None, data__twilio_error_code=None), "bulk_job")
odd_add("minimal", b'{"specversion":"1.0","type":"' + BULK.encode() + b'","source":"s","id":"i","data":{"job_sid":"JW16","status":"CREATED"}}', "bulk_job")
odd_add("specversion-1.1", job("JW17", "CREATED", specversion="1.1"), "bulk_job")
odd_add("unknown-fields-everywhere", job("JW18", "CREATED", traceparent="00-abc-01", data__new_field={"x": [1, 2]}, data__result__new_count=5), "bulk_job")
odd_add("huge-number-in-unknown-field", seed_bytes().replace(b'"error":10}', b'"error":10,"x":1e400}', 1).replace(b"JW0000000000000000000000000000001", b"JW23"), "bulk_job")
# Duplicate names: JSON leaves their meaning open; the decoder takes the
# last one, as most JSON readers do.
odd_add("duplicate-attribute-last-wins", job("JW24", "CREATED").replace(b'"id":"NOJW24"', b'"id":"first","id":"NOJW24"', 1), "bulk_job")
odd_add("duplicate-field-last-wins", job("JW25", "CREATED").replace(b'"status":"CREATED"', b'"status":"QUEUED","status":"CREATED"', 1), "bulk_job")
odd_add("time-with-offset", job("JW19", "CREATED", time="2025-01-01T02:00:00+02:00"), "bulk_job")
odd_add("escaped-strings", job("JW20", "CREATED", data__friendly_name="Caf\u00e9 \"quoted\" \\ tab\t"), "bulk_job")
odd_add("surrounding-whitespace", b"\n  " + job("JW21", "CREATED") + b"  \r\n", "bulk_job")
odd_add("sink-test", sink_test({"test_id": "c3f5e6a0-0000-4000-8000-000000000002"}), "sink_test")
odd_add("sink-test-data-string", sink_test(dumps({"test_id": "t-2"})), "sink_test")
odd_add(
    "other-type-messaging",
    b'{"specversion":"1.0","type":"com.twilio.messaging.message.sent","source":"/2010-04-01/Accounts/AC1/Messages/SM1.json","id":"EZ1","data":{"messageSid":"SM1","to":"+15550000000"}}',
    "other",
)
odd_add("other-type-data-array", b'{"specversion":"1.0","type":"com.example.thing","source":"x","id":"1","data":[1,2,3]}', "other")
odd_add("other-type-no-data", b'{"specversion":"1.0","type":"com.example.thing","source":"x","id":"2"}', "other")
# The type is the bulk-job type only when exactly equal.
odd_add("other-type-bulk-type-upper-case", job("JW22", "CREATED", type=BULK.upper()), "other")


def write(directory, rows, key):
    os.makedirs(directory, exist_ok=True)
    for f in os.listdir(directory):
        if f.endswith(".bin"):
            os.remove(os.path.join(directory, f))
    names = set()
    lines = [
        "# Written by tests/bad_records/generate.py; edit that script, not this file.",
        "# One table per record file: its class and, for a bad record, the exact",
        "# dead-letter reason.",
        "",
    ]
    for i, (name, data, expected) in enumerate(rows, 1):
        fname = f"{i:03d}-{name}.bin"
        assert fname not in names, fname
        names.add(fname)
        with open(os.path.join(directory, fname), "wb") as f:
            f.write(data)
        lines.append(f'["{fname}"]')
        if key == "reason":
            lines.append('class = "bad"')
            lines.append(f"reason = {json.dumps(expected, ensure_ascii=False)}")
        else:
            lines.append(f'class = "{expected}"')
        lines.append("")
    with open(os.path.join(directory, "expected.toml"), "w") as f:
        f.write("\n".join(lines))


write(BAD_DIR, bad, "reason")
write(ODD_DIR, odd, "class")
print(f"{len(bad)} bad records, {len(odd)} odd but good records", file=sys.stderr)
