#!/usr/bin/env python3
"""A Kinesis consumer in plain boto3, the way a Python team would write one.

The benchmark's Python peer. Twilio's own Event Streams Kinesis sample for
Python reads the stream through Amazon's KCL (amazon_kclpy), which needs Java
and the KCL jars downloaded at install time, neither of which this network
allows; this consumer does what that sample does for its user with boto3
alone, in the shape of the common boto3 tutorials:

  - ListShards, then one thread per shard;
  - GetShardIterator (TRIM_HORIZON, or AFTER_SEQUENCE_NUMBER when a checkpoint
    exists), then GetRecords in a loop, at most one call per shard every
    200 ms (Kinesis allows 5 calls/s per shard) and no other sleep;
  - json.loads of every record, pulling out the job sid and status;
  - after each non-empty batch, the shard's last sequence number is written to
    a local JSON checkpoint file (all shards in one file, rewritten atomically
    with a temp file + rename, under a lock).

GetRecords asks for Kinesis' default batch (no Limit, up to 10,000 records)
unless --limit is given: what a sample that does not tune it would do.

It exits 0 when --expect N records were read, or, without --expect, when every
shard has answered an empty batch with MillisBehindLatest 0 (unless --follow:
then it reads until killed). It prints one JSON
summary line to stderr. With --emit it prints each record's event id on stdout
as it is decoded (the latency run uses that).

Runs with the LocalStack venv's python (boto3 pinned in
localstack/requirements.txt); the endpoint comes from AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import boto3
from botocore.config import Config


class Checkpoints:
    """shard id -> last processed sequence number, in one local JSON file."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()
        try:
            with open(path) as f:
                self.data: dict[str, str] = json.load(f)
        except FileNotFoundError:
            self.data = {}

    def get(self, shard_id: str) -> str | None:
        with self.lock:
            return self.data.get(shard_id)

    def set(self, shard_id: str, sequence_number: str) -> None:
        with self.lock:
            self.data[shard_id] = sequence_number
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.data, f)
            os.replace(tmp, self.path)


class Consumer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
        self.kinesis = boto3.client(
            "kinesis", region_name=region,
            config=Config(max_pool_connections=64,
                          retries={"max_attempts": 5, "mode": "standard"}))
        self.checkpoints = Checkpoints(args.checkpoint_file)
        self.lock = threading.Lock()
        self.records = 0
        self.undecodable = 0
        self.calls = 0
        self.caught_up: set[str] = set()
        self.done = threading.Event()
        self.started = time.monotonic()

    def shards(self) -> list[str]:
        out, token = [], None
        while True:
            resp = (self.kinesis.list_shards(NextToken=token) if token
                    else self.kinesis.list_shards(StreamName=self.args.stream))
            out += [s["ShardId"] for s in resp["Shards"]]
            token = resp.get("NextToken")
            if not token:
                return out

    def iterator(self, shard_id: str) -> str:
        seq = self.checkpoints.get(shard_id)
        kw = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": seq}
              if seq else {"ShardIteratorType": "TRIM_HORIZON"})
        return self.kinesis.get_shard_iterator(
            StreamName=self.args.stream, ShardId=shard_id, **kw)["ShardIterator"]

    def process(self, records: list[dict]) -> int:
        """Decode each record; returns how many did not decode."""
        bad = 0
        emit = self.args.emit
        for r in records:
            try:
                event = json.loads(r["Data"])
                data = event["data"]
                if isinstance(data, str):  # Twilio sometimes sends data as a JSON string
                    data = json.loads(data)
                _job, _status = data["job_sid"], data.get("status")
                if emit:
                    sys.stdout.write(event["id"] + "\n")
            except (ValueError, KeyError, TypeError):
                bad += 1
        if emit:
            sys.stdout.flush()
        return bad

    def read_shard(self, shard_id: str, n_shards: int) -> None:
        interval = self.args.interval
        it = self.iterator(shard_id)
        next_call = time.monotonic()
        while not self.done.is_set():
            delay = next_call - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_call = time.monotonic() + interval
            kw = {"ShardIterator": it}
            if self.args.limit:
                kw["Limit"] = self.args.limit
            try:
                resp = self.kinesis.get_records(**kw)
            except self.kinesis.exceptions.ExpiredIteratorException:
                it = self.iterator(shard_id)
                continue
            except self.kinesis.exceptions.ProvisionedThroughputExceededException:
                next_call += 1.0
                continue
            records = resp["Records"]
            bad = self.process(records) if records else 0
            if records:
                self.checkpoints.set(shard_id, records[-1]["SequenceNumber"])
            with self.lock:
                self.calls += 1
                self.records += len(records)
                self.undecodable += bad
                total = self.records
                if (not records and resp.get("MillisBehindLatest") == 0
                        and self.args.expect is None and not self.args.follow):
                    self.caught_up.add(shard_id)
                    if len(self.caught_up) == n_shards:
                        self.done.set()
            if self.args.expect is not None and total >= self.args.expect:
                self.done.set()
            it = resp.get("NextShardIterator")
            if it is None:  # SHARD_END
                return

    def run(self) -> None:
        shards = self.shards()
        for shard_id in shards:
            threading.Thread(target=self.read_shard, args=(shard_id, len(shards)),
                             name=shard_id, daemon=True).start()
        self.done.wait()
        with self.lock:
            print(json.dumps({
                "peer": "python", "shards": len(shards), "records": self.records,
                "undecodable": self.undecodable, "get_records_calls": self.calls,
                "elapsed_s": round(time.monotonic() - self.started, 3),
                "boto3": boto3.__version__,
            }), file=sys.stderr, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stream", required=True)
    p.add_argument("--checkpoint-file", required=True)
    p.add_argument("--expect", type=int, help="exit after reading this many records")
    p.add_argument("--limit", type=int, default=None,
                   help="GetRecords Limit (default: none, i.e. Kinesis' 10,000)")
    p.add_argument("--interval", type=float, default=0.2,
                   help="least seconds between GetRecords calls on one shard (default 0.2)")
    p.add_argument("--emit", action="store_true", help="print each event id on stdout")
    p.add_argument("--follow", action="store_true",
                   help="keep reading when caught up (until killed), for the latency run")
    Consumer(p.parse_args()).run()
    os._exit(0)  # daemon threads may sit in a GetRecords call


if __name__ == "__main__":
    main()
