#!/usr/bin/env python3
"""Put realistic Twilio Lookup bulk-job events into a Kinesis stream.

Each Kinesis record holds one CloudEvent JSON object, the way a Twilio Event
Streams Kinesis sink writes them (never an array). The events follow the
contract in shared/seeds/000_*.txt (`com.twilio.lookup.bulk.job-status-changed`,
data schema Lookup.BulkEvent/1 and /2) plus the facts in shared/design.md.

Several jobs (JW + 32 hex) run through lifecycles at the same time, so their
events interleave:
  CREATED -> QUEUED -> IN_PROGRESS -> COMPLETED
  CREATED -> FILE_RECEIVED -> QUEUED -> PROCESSING -> COMPLETED
  CREATED -> QUEUED -> PROCESSING -> FAILED          (twilio_error_code 60608)
  CREATED -> QUEUED -> IN_PROGRESS -> STOP_REQUESTED -> STOPPED
  CREATED -> FILE_RECEIVED -> QUEUED -> IN_PROGRESS -> COMPLETED (with errors)
  CREATED -> QUEUED -> CANCELED                      (6th job onwards)
and the stream also carries what a consumer must survive (unless --no-quirks):
  - exact duplicates (same id, same bytes: at-least-once redelivery)
  - a stale event arriving late (a job's earlier status, new id, old time)
  - one event whose `data` is a JSON-encoded string
  - one event shaped like the seed's example: a timestamp in
    `datacontenttype` and no `time`
  - one Event Streams sink test event (source "Sink", data.test_id a UUID)
  - one event of another Twilio type (com.twilio.messaging.message.delivered)
  - one malformed record (truncated JSON)

The partition key of a job's events is its job_sid, so one job stays in one
shard and its events keep their order there.

Runs with the LocalStack venv's python (it has boto3); the endpoint comes from
AWS_ENDPOINT_URL as set by `eval "$(localstack/up)"`:

  .localstack/venv/bin/python localstack/sample-events.py --stream s --create-shards 2
  .localstack/venv/bin/python localstack/sample-events.py --stream s --delay 0.3
  .localstack/venv/bin/python localstack/sample-events.py --print --seed 7   # no AWS

--print writes one JSON object per line instead of calling AWS:
  {"partition_key": ..., "kind": ..., "note": ..., "data": "<the record text>"}
`data` is the exact record payload as a string (the malformed one is not
JSON, hence the wrapper). `kind` is what a decoder should classify it as:
bulk_job, sink_test, other_event or malformed; `note` names the quirk, if any
(duplicate, stale, data_as_string, timestamp_in_datacontenttype).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator

BULK_TYPE = "com.twilio.lookup.bulk.job-status-changed"
SCHEMA = "https://events-schemas.twilio.com/Lookup.BulkEvent/{}"
RESULT_BUCKET = "https://lookup-bulk-service-bucket.s3.amazonaws.com/responses"

# Lifecycles named after Twilio's two status lists (Lookup v2 API spec and the
# event doc); a consumer has to handle the union of both.
LIFECYCLES = [
    ["CREATED", "QUEUED", "IN_PROGRESS", "COMPLETED"],
    ["CREATED", "FILE_RECEIVED", "QUEUED", "PROCESSING", "COMPLETED"],
    ["CREATED", "QUEUED", "PROCESSING", "FAILED"],
    ["CREATED", "QUEUED", "IN_PROGRESS", "STOP_REQUESTED", "STOPPED"],
    ["CREATED", "FILE_RECEIVED", "QUEUED", "IN_PROGRESS", "COMPLETED"],
    ["CREATED", "QUEUED", "CANCELED"],
]
TERMINAL = {"COMPLETED", "FAILED", "STOPPED", "CANCELED"}

JOB_NAMES = [
    ("Premium-accounts {month} {year}",
     "Customer Bulk Lookup {month} {year} - Premium accounts phone numbers"),
    ("Churn-risk re-verification Q{q}",
     "Line type check of churn-risk customers before the retention campaign"),
    ("Spring promo opt-ins",
     "Validate opt-in numbers collected at the spring promotion"),
    ("EU carrier audit {month}",
     "Carrier and line type audit of EU customer numbers"),
    ("New sign-ups fraud screen wk{week}",
     "SIM swap and line type screening of last week's sign-ups"),
    ("CRM cleanup - support contacts",
     "Remove invalid and landline numbers from the support CRM"),
    ("Delivery drivers re-check",
     "Re-validate contact numbers of contracted delivery drivers"),
    ("Dormant accounts {month}",
     "Reachability check before re-activation mails to dormant accounts"),
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December"]


def sid(rng: random.Random, prefix: str) -> str:
    """A Twilio-style SID: two letters + 32 lowercase hex digits."""
    return prefix + f"{rng.getrandbits(128):032x}"


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{t.microsecond // 1000:03d}Z"


@dataclass
class Record:
    partition_key: str
    data: bytes
    kind: str  # bulk_job | sink_test | other_event | malformed
    note: str | None = None
    event: dict | None = field(default=None, repr=False)

    def as_line(self) -> str:
        return json.dumps({"partition_key": self.partition_key, "kind": self.kind,
                           "note": self.note, "data": self.data.decode("utf-8")})


def encode(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


class Job:
    """One bulk job walking through its lifecycle, one event per status."""

    def __init__(self, rng: random.Random, index: int, account: str, source: str,
                 now: dt.datetime):
        self.rng = rng
        self.sid = sid(rng, "JW")
        self.account = account
        self.source = source
        self.statuses = LIFECYCLES[index % len(LIFECYCLES)]
        self.step = 0
        # Mostly v2, every 4th job on the v1 schema (same fields, older label).
        self.schema = SCHEMA.format(1 if index % 4 == 3 else 2)
        name, desc = JOB_NAMES[index % len(JOB_NAMES)]
        fmt = dict(month=MONTHS[now.month - 1], year=now.year,
                   q=(now.month - 1) // 3 + 1, week=now.isocalendar()[1])
        self.friendly_name = name.format(**fmt)
        self.description = desc.format(**fmt)
        # total_count is only known once the file is in for FILE_RECEIVED jobs.
        self.total = rng.choice([100, 250, 1000, 2500, 10000, 48000])
        self.error_threshold = None if index % 7 == 5 else rng.choice([5, 10, 25])
        self.created_at: str | None = None
        self.processed = 0
        self.errors = 0

    @property
    def done(self) -> bool:
        return self.step >= len(self.statuses)

    def _result(self, status: str) -> dict | None:
        total = self.total
        if status == "CREATED" and "FILE_RECEIVED" in self.statuses:
            return None  # the input file is not in yet: nothing to count
        details, file_url = None, None
        if status in ("CREATED", "FILE_RECEIVED", "QUEUED", "CANCELED"):
            self.processed = 0
            if status == "CANCELED":
                details = "The job was canceled before processing started."
        elif status in ("IN_PROGRESS", "PROCESSING", "STOP_REQUESTED"):
            self.processed = max(self.processed,
                                 int(total * self.rng.uniform(0.2, 0.6)))
        elif status == "COMPLETED":
            self.processed = total
            if self.statuses[1] == "FILE_RECEIVED" and self.statuses[-2] == "IN_PROGRESS":
                self.errors = max(1, int(total * 0.02))  # a job with some errors
                details = (f"{self.errors} numbers could not be looked up "
                           f"(invalid format or unknown carrier).")
            file_url = f"{RESULT_BUCKET}/{self.account}/{self.sid}.csv.gz"
        elif status == "FAILED":
            self.processed = int(total * self.rng.uniform(0.05, 0.3))
            self.errors = self.processed
            details = "Lookup provider replied with an error. The job was aborted."
        elif status == "STOPPED":
            details = (f"The job was stopped on request. {total - self.processed} "
                       f"records were not processed.")
        success = self.processed - self.errors
        return {"total_count": total, "processed_count": self.processed,
                "success_count": max(success, 0), "error_count": self.errors,
                "file_url": file_url, "details": details}

    def next_event(self, rng: random.Random, at: dt.datetime) -> dict:
        status = self.statuses[self.step]
        self.step += 1
        if self.created_at is None:
            self.created_at = rfc3339(at)
        data: dict = {
            "job_sid": self.sid,
            "friendly_name": self.friendly_name,
            "description": self.description,
            "created_at": self.created_at,
            "status": status,
            "thresholds": {"error": self.error_threshold},
            "result": self._result(status),
        }
        if status in TERMINAL:
            data["completed_at"] = rfc3339(at)
        elif self.schema.endswith("/2"):
            data["completed_at"] = None  # v2 jobs send null, v1 jobs omit it
        if status == "FAILED":
            data["twilio_error_code"] = 60608
        return {
            "specversion": "1.0",
            "type": BULK_TYPE,
            "source": self.source,
            "id": sid(rng, "NO"),
            "dataschema": self.schema,
            "datacontenttype": "application/json",
            "time": rfc3339(at),
            "data": data,
        }


def generate(seed: int | None, jobs: int, count: int | None, quirks: bool,
             start: dt.datetime) -> Iterator[Record]:
    """Yield records in stream order.

    Without --count: `jobs` jobs, each through its whole lifecycle.
    With --count N: `jobs` jobs in flight at any time, a new one starting when
    one finishes, until N bulk-job events were made (the last few jobs may
    still be in flight: like a real stream cut at some point).
    """
    rng = random.Random(seed)
    account = sid(rng, "AC")
    source = sid(rng, "AB")
    clock = start
    started = 0
    active: list[Job] = []
    made = 0  # bulk-job events (not counting quirks)
    history: list[Record] = []  # recent bulk-job records, for duplicates
    seen_statuses: dict[str, list[dict]] = {}

    def start_job() -> None:
        nonlocal started
        active.append(Job(rng, started, account, source, clock))
        started += 1

    for _ in range(jobs):
        start_job()
    limit = count if count is not None else sum(len(j.statuses) for j in active)

    # Where the quirks go: spread through the first stretch of the stream so
    # that even a small run contains them all.
    plan: dict[int, list[str]] = {}
    if quirks:
        spots = {
            "sink_test": 1, "data_as_string": 3, "other_event": 5,
            "timestamp_in_datacontenttype": 7, "duplicate": 9, "malformed": 11,
            "stale": 13, "duplicate2": 15, "duplicate3": limit - 1,
        }
        for name, at in spots.items():
            plan.setdefault(min(max(at, 0), max(limit - 1, 0)), []).append(name)

    while made < limit and active:
        clock += dt.timedelta(milliseconds=rng.randint(200, 4000))
        job = rng.choice(active)
        event = job.next_event(rng, clock)
        note = None
        if quirks and "data_as_string" in plan.get(made, []):
            event["data"] = json.dumps(event["data"], separators=(",", ":"))
            note = "data_as_string"
        elif quirks and "timestamp_in_datacontenttype" in plan.get(made, []):
            # The seed's example: the timestamp sits in datacontenttype, no time.
            event["datacontenttype"] = event.pop("time")
            note = "timestamp_in_datacontenttype"
        rec = Record(job.sid, encode(event), "bulk_job", note, event)
        seen_statuses.setdefault(job.sid, []).append(event)
        history.append(rec)
        del history[:-50]
        yield rec
        made += 1
        if job.done:
            active.remove(job)
            if count is not None:
                start_job()

        for q in plan.get(made - 1, []) if quirks else []:
            if q.startswith("duplicate"):
                # Redelivery of an earlier record: same bytes, same id.
                old = rng.choice(history)
                yield Record(old.partition_key, old.data, "bulk_job", "duplicate",
                             old.event)
            elif q == "stale":
                # A job's earlier status shows up again after it moved on,
                # with a new id and its original (older) time.
                candidates = [evs for evs in seen_statuses.values() if len(evs) >= 2]
                if candidates:
                    evs = rng.choice(candidates)
                    old = json.loads(json.dumps(evs[-2]))
                    if isinstance(old["data"], str):
                        old["data"] = json.loads(old["data"])
                    old["id"] = sid(rng, "NO")
                    if "time" not in old:  # it was the seed-shaped one
                        old["time"] = old["datacontenttype"]
                    old["datacontenttype"] = "application/json"
                    yield Record(old["data"]["job_sid"], encode(old), "bulk_job",
                                 "stale", old)
            elif q == "sink_test":
                ev = {
                    "specversion": "1.0",
                    "type": "com.twilio.eventstreams.test-event",
                    "source": "Sink",
                    "id": sid(rng, "NO"),
                    "dataschema": "https://events-schemas.twilio.com/EventStreams.TestSink/2",
                    "datacontenttype": "application/json",
                    "time": rfc3339(clock),
                    "data": {"test_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))},
                }
                yield Record(ev["id"], encode(ev), "sink_test", None, ev)
            elif q == "other_event":
                msg = sid(rng, "SM")
                ev = {
                    "specversion": "1.0",
                    "type": "com.twilio.messaging.message.delivered",
                    "source": f"/2010-04-01/Accounts/{account}/Messages/{msg}.json",
                    "id": sid(rng, "NO"),
                    "dataschema": "https://events-schemas.twilio.com/Messaging.MessageStatus/4",
                    "datacontenttype": "application/json",
                    "time": rfc3339(clock),
                    "data": {
                        "accountSid": account,
                        "messageSid": msg,
                        "from": "+15555550100",
                        "to": "+15555550123",
                        "messageStatus": "DELIVERED",
                        "timestamp": rfc3339(clock),
                        "eventName": "com.twilio.messaging.message.delivered",
                    },
                }
                yield Record(msg, encode(ev), "other_event", None, ev)
            elif q == "malformed":
                # A record cut off mid-object: not JSON at all.
                cut = history[-1].data[: len(history[-1].data) // 2]
                yield Record("malformed", cut, "malformed", None, None)


# ---------------------------------------------------------------- AWS side

def kinesis_client():
    import boto3
    from botocore.config import Config

    # boto3 reads AWS_ENDPOINT_URL itself; region: AWS_DEFAULT_REGION, else
    # AWS_REGION (what the Rust SDK reads), else us-east-1 like localstack/up.
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") \
        or "us-east-1"
    return boto3.client("kinesis", region_name=region,
                        config=Config(retries={"max_attempts": 5, "mode": "standard"}))


def ensure_stream(kinesis, name: str, shards: int | None) -> None:
    try:
        desc = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    except kinesis.exceptions.ResourceNotFoundException:
        if shards is None:
            sys.exit(f"sample-events: stream {name!r} does not exist "
                     f"(pass --create-shards N to create it)")
        print(f"sample-events: creating stream {name} with {shards} shard(s)", file=sys.stderr)
        kinesis.create_stream(StreamName=name, ShardCount=shards)
        desc = None
    # Poll ourselves: boto3's waiter sleeps 10 s between checks.
    deadline = time.monotonic() + 60
    while desc is None or desc["StreamStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            sys.exit(f"sample-events: stream {name} not ACTIVE after 60 s")
        time.sleep(0.1)
        desc = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    print(f"sample-events: stream {name} is ACTIVE with "
          f"{desc['OpenShardCount']} open shard(s)", file=sys.stderr)


def put_all(kinesis, stream: str, records: Iterator[Record], delay: float) -> dict:
    shards: dict[str, int] = {}
    total = 0

    def put_batch(batch: list[Record]) -> None:
        nonlocal total
        pending = batch
        for attempt in range(8):
            resp = kinesis.put_records(StreamName=stream, Records=[
                {"Data": r.data, "PartitionKey": r.partition_key} for r in pending])
            retry = []
            for r, res in zip(pending, resp["Records"]):
                if "ErrorCode" in res:
                    retry.append(r)  # e.g. KINESIS_ERROR_PROBABILITY injection
                else:
                    shards[res["ShardId"]] = shards.get(res["ShardId"], 0) + 1
                    total += 1
            if not retry:
                return
            pending = retry
            time.sleep(min(0.05 * 2 ** attempt, 2))
        sys.exit(f"sample-events: {len(pending)} record(s) still failing after retries")

    if delay > 0:
        # One at a time so a watching consumer sees them arrive one by one.
        for r in records:
            put_batch([r])
            ev = r.event or {}
            d = ev.get("data")
            if isinstance(d, str):
                d = json.loads(d)
            status = d.get("status") if isinstance(d, dict) else None
            print(f"sample-events: put {r.kind:<11} {r.partition_key[:34]:<34} "
                  f"{status or '':<14} {r.note or ''}", file=sys.stderr)
            time.sleep(delay)
    else:
        batch: list[Record] = []
        size = 0
        for r in records:
            # PutRecords takes up to 500 records / 5 MiB per call.
            if len(batch) == 500 or size + len(r.data) + len(r.partition_key) > 4_500_000:
                put_batch(batch)
                batch, size = [], 0
            batch.append(r)
            size += len(r.data) + len(r.partition_key)
        if batch:
            put_batch(batch)
    return {"records": total, "per_shard": dict(sorted(shards.items()))}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (head of this file) for the event mix.")
    p.add_argument("--stream", help="Kinesis stream name (required unless --print)")
    p.add_argument("--create-shards", type=int, metavar="N",
                   help="create the stream with N shards if it does not exist, "
                        "and wait until it is ACTIVE")
    p.add_argument("--jobs", type=int, default=5, metavar="N",
                   help="jobs in flight at once (default 5); 0 puts nothing, "
                        "e.g. to only --create-shards")
    p.add_argument("--count", type=int, metavar="N",
                   help="make N bulk-job events in total, starting new jobs as "
                        "others finish (load tests)")
    p.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                   help="pause between puts (default 0 = batched PutRecords; "
                        "the demo uses 0.3 so transitions show as they arrive)")
    p.add_argument("--seed", type=int,
                   help="random seed: same seed, same records (also pins the "
                        "event times to --start unless given)")
    p.add_argument("--start", metavar="RFC3339",
                   help="time of the first event (default: now, or "
                        "2026-01-15T09:00:00Z with --seed)")
    p.add_argument("--no-quirks", action="store_true",
                   help="only clean bulk-job events (no duplicates, stale, "
                        "test, other-type or malformed records)")
    p.add_argument("--print", action="store_true",
                   help="print the records as JSON lines to stdout, no AWS calls")
    a = p.parse_args()

    if not a.print and not a.stream:
        p.error("--stream is required (or use --print)")
    if a.jobs < 0 or (a.count is not None and (a.count < 1 or a.jobs < 1)):
        p.error("--jobs must be >= 0 (>= 1 with --count), --count >= 1")
    if a.create_shards is not None and a.create_shards < 1:
        p.error("--create-shards must be >= 1")

    if a.start:
        start = dt.datetime.fromisoformat(a.start.replace("Z", "+00:00"))
    elif a.seed is not None:
        start = dt.datetime(2026, 1, 15, 9, 0, tzinfo=dt.timezone.utc)
    else:
        start = dt.datetime.now(dt.timezone.utc)
    records = generate(a.seed, a.jobs, a.count, not a.no_quirks, start)

    if a.print:
        try:
            for r in records:
                sys.stdout.write(r.as_line() + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # e.g. `| head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return

    kinesis = kinesis_client()
    ensure_stream(kinesis, a.stream, a.create_shards)
    t = time.monotonic()
    summary = put_all(kinesis, a.stream, records, a.delay)
    print(f"sample-events: put {summary['records']} record(s) into {a.stream} in "
          f"{time.monotonic() - t:.2f}s; per shard: {summary['per_shard']}", file=sys.stderr)


if __name__ == "__main__":
    main()
