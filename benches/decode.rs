//! Micro-benchmarks of the per-record CPU path: decode, decode + track, and
//! the serialization of a transition (what every output does per
//! transition). Results and the machine are in BENCHMARKS.md, "Micro-
//! benchmarks (criterion)".
//!
//! ```sh
//! cargo bench --bench decode -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! The events are the contract's example event (tests/odd_records/
//! 001-seed-as-documented.bin, 862 bytes), each with its own event id and,
//! where said, its own job sid, so that tracking does real work (a new
//! job, a state written) rather than finding a duplicate.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use bulkwatch::decode::{Decoded, decode};
use bulkwatch::source::Origin;
use bulkwatch::store::embedded::EmbeddedStore;
use bulkwatch::store::memory::MemoryStore;
use bulkwatch::track::{DEFAULT_TERMINAL_TTL, Tracker, Verdict};

const SEED: &[u8] = include_bytes!("../tests/odd_records/001-seed-as-documented.bin");
const SEED_JOB_SID: &str = "JW0000000000000000000000000000001";
const SEED_EVENT_ID: &str = "NO00000000000000000000000001";

/// How many records a batch holds: a typical GetRecords page is hundreds
/// to 1,000 records, and the worker decodes a page and tracks it as one
/// batch.
const BATCH: usize = 1000;

/// The seed with another event id, job sid and status, same size class.
fn event(n: usize, job: usize, status: &str) -> Vec<u8> {
    let s = std::str::from_utf8(SEED).unwrap();
    s.replace(SEED_EVENT_ID, &format!("NO{n:026}"))
        .replace(SEED_JOB_SID, &format!("JW{job:031}"))
        .replace("\"CREATED\"", &format!("\"{status}\""))
        .into_bytes()
}

fn origin(n: usize) -> Origin {
    Origin {
        stream: Arc::from("bench"),
        shard_id: Arc::from("shardId-000000000000"),
        sequence_number: format!("{:056}", n),
        arrival: None,
    }
}

/// `BATCH` records: each a job's first event (a new job per record).
fn new_jobs() -> Vec<Vec<u8>> {
    (0..BATCH).map(|n| event(n, n, "CREATED")).collect()
}

/// `BATCH` records: `BATCH / 4` jobs, each walking CREATED → QUEUED →
/// PROCESSING → COMPLETED, interleaved across jobs as shards deliver them.
fn lifecycles() -> Vec<Vec<u8>> {
    lifecycles_from(0)
}

/// [`lifecycles`] with event ids and job sids numbered from `first`, so
/// that successive batches are new events of new jobs.
fn lifecycles_from(first: usize) -> Vec<Vec<u8>> {
    let statuses = ["CREATED", "QUEUED", "PROCESSING", "COMPLETED"];
    let jobs = BATCH / statuses.len();
    let mut out = Vec::with_capacity(BATCH);
    for (step, status) in statuses.iter().enumerate() {
        for job in 0..jobs {
            out.push(event(first + step * jobs + job, first + job, status));
        }
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
}

/// Decodes and tracks one batch as the pipeline does, on a fresh
/// in-memory store; returns the number of transitions.
fn decode_and_track(rt: &tokio::runtime::Runtime, tracker: &Tracker, records: &[Vec<u8>]) -> usize {
    let mut events = Vec::with_capacity(records.len());
    for (n, r) in records.iter().enumerate() {
        if let Decoded::Job(ev) = decode(r, None) {
            events.push((ev, origin(n)));
        }
    }
    let verdicts = rt.block_on(tracker.track(&events)).expect("tracked");
    verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Transition(_)))
        .count()
}

fn fresh_tracker() -> Tracker {
    Tracker::new(Arc::new(MemoryStore::new()), DEFAULT_TERMINAL_TTL)
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seed", |b| {
        b.iter(|| decode(black_box(SEED), None));
    });
    // `data` as a JSON-encoded string: a second parse.
    let as_string = {
        let mut v: serde_json::Value = serde_json::from_slice(SEED).unwrap();
        v["data"] = serde_json::Value::String(v["data"].to_string());
        serde_json::to_vec(&v).unwrap()
    };
    assert!(matches!(decode(&as_string, None), Decoded::Job(_)));
    g.bench_function("seed_data_as_string", |b| {
        b.iter(|| decode(black_box(&as_string), None));
    });
    // A bad record takes the slow, diagnosing path.
    let bad = std::str::from_utf8(SEED)
        .unwrap()
        .replace("\"total_count\":100", "\"total_count\":\"100\"");
    assert!(matches!(decode(bad.as_bytes(), None), Decoded::Bad(_)));
    g.bench_function("seed_bad_field_slow_path", |b| {
        b.iter(|| decode(black_box(bad.as_bytes()), None));
    });
    g.finish();
}

fn bench_decode_track(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("decode_track");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, records, transitions) in [
        ("new_jobs_1000", new_jobs(), BATCH),
        ("lifecycles_1000", lifecycles(), BATCH),
    ] {
        assert_eq!(
            decode_and_track(&rt, &fresh_tracker(), &records),
            transitions,
            "{name}: every record is a transition"
        );
        g.bench_function(name, |b| {
            b.iter_batched(
                fresh_tracker,
                |tracker| decode_and_track(&rt, &tracker, black_box(&records)),
                BatchSize::SmallInput,
            );
        });
    }
    // One record per batch: the fixed per-batch cost spread over nothing.
    let one = vec![event(0, 0, "CREATED")];
    g.throughput(Throughput::Elements(1));
    g.bench_function("single_record_batch", |b| {
        b.iter_batched(
            fresh_tracker,
            |tracker| decode_and_track(&rt, &tracker, black_box(&one)),
            BatchSize::SmallInput,
        );
    });
    g.finish();

    // Tracking alone (the events already decoded), to split the cost.
    let mut g = c.benchmark_group("track");
    g.throughput(Throughput::Elements(BATCH as u64));
    let events: Vec<_> = new_jobs()
        .iter()
        .enumerate()
        .map(|(n, r)| match decode(r, None) {
            Decoded::Job(ev) => (ev, origin(n)),
            other => panic!("{other:?}"),
        })
        .collect();
    g.bench_function("new_jobs_1000", |b| {
        b.iter_batched(
            fresh_tracker,
            |tracker| rt.block_on(tracker.track(black_box(&events))).unwrap(),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn bench_serialize(c: &mut Criterion) {
    let rt = runtime();
    let Decoded::Job(ev) = decode(SEED, None) else {
        panic!("the seed is a job event")
    };
    let verdicts = rt
        .block_on(fresh_tracker().track(&[(ev, origin(0))]))
        .unwrap();
    let transition = verdicts[0].transition().expect("a transition").clone();
    let mut g = c.benchmark_group("transition");
    g.throughput(Throughput::Elements(1));
    // The same call the outputs make for each transition.
    g.bench_function("to_json", |b| {
        b.iter(|| serde_json::to_string(black_box(&transition)).unwrap());
    });
    g.finish();
}

/// The whole per-record path of the worker minus Kinesis: decode, track
/// against the embedded (redb) store as `bulkwatch run` uses it by default,
/// and serialize each transition as the stdout output does. Every
/// iteration is a new batch of [`BATCH`] records (`BATCH / 4` new jobs, each
/// through four statuses), so the store grows as it does on a long stream
/// and every batch commits real writes.
fn bench_embedded_pipeline(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("an embedded store"));
    let tracker = Tracker::new(store, DEFAULT_TERMINAL_TTL);
    let mut next_batch = 0usize;
    let mut g = c.benchmark_group("embedded_pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("lifecycles_1000", |b| {
        b.iter_custom(|iters| {
            let mut spent = std::time::Duration::ZERO;
            for _ in 0..iters {
                let records = lifecycles_from(next_batch * BATCH);
                next_batch += 1;
                let t = std::time::Instant::now();
                let mut out = Vec::with_capacity(BATCH * 1024);
                let mut events = Vec::with_capacity(records.len());
                for (n, r) in records.iter().enumerate() {
                    if let Decoded::Job(ev) = decode(black_box(r), None) {
                        events.push((ev, origin(n)));
                    }
                }
                let verdicts = rt.block_on(tracker.track(&events)).expect("tracked");
                for v in &verdicts {
                    if let Some(t) = v.transition() {
                        serde_json::to_writer(&mut out, t).unwrap();
                        out.push(b'\n');
                    }
                }
                spent += t.elapsed();
                assert_eq!(verdicts.len(), BATCH);
                black_box(out);
            }
            spent
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_decode,
    bench_decode_track,
    bench_serialize,
    bench_embedded_pipeline
);
criterion_main!(benches);
