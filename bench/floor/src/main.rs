//! bench-floor: the cost of reading a Kinesis stream at all.
//!
//! One task per shard loops GetShardIterator(TRIM_HORIZON) then GetRecords,
//! paced like bulkwatch (at most one call per shard every `--interval-ms`,
//! default 200 ms = Kinesis' 5 calls/s), and deserialises each record's JSON
//! into a small struct with serde. No checkpoint, no output, no dedup, no
//! state: whatever bulkwatch spends above this is its own work.
//!
//! It exits 0 when `--expect N` records were read, or (without --expect) when
//! every shard has returned an empty batch with MillisBehindLatest 0, or on
//! SIGTERM (the idle measurement polls empty shards until stopped). It
//! prints one JSON summary line to stderr.
//!
//!     bench-floor --stream NAME [--expect N] [--max-records 1000] [--interval-ms 200]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;
use serde::Deserialize;

/// The fields a status tracker would need; serde skips the rest.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Event<'a> {
    #[serde(borrow)]
    id: &'a str,
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    time: Option<&'a str>,
    data: Data<'a>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Data<'a> {
    #[serde(borrow)]
    job_sid: &'a str,
    #[serde(borrow)]
    status: &'a str,
}

struct Args {
    stream: String,
    expect: Option<u64>,
    max_records: i32,
    interval: Duration,
}

fn parse_args() -> Args {
    let mut a = Args { stream: String::new(), expect: None, max_records: 1000, interval: Duration::from_millis(200) };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--stream" => a.stream = val(),
            "--expect" => a.expect = Some(val().parse().unwrap_or_else(|_| usage("bad --expect"))),
            "--max-records" => a.max_records = val().parse().unwrap_or_else(|_| usage("bad --max-records")),
            "--interval-ms" => {
                a.interval = Duration::from_millis(val().parse().unwrap_or_else(|_| usage("bad --interval-ms")))
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if a.stream.is_empty() {
        usage("--stream is required");
    }
    a
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("bench-floor: {msg}");
    }
    eprintln!("usage: bench-floor --stream NAME [--expect N] [--max-records N] [--interval-ms MS]");
    std::process::exit(2)
}

struct Shared {
    records: AtomicU64,
    bad: AtomicU64,
    calls: AtomicU64,
    caught_up: AtomicUsize,
    expect: Option<u64>,
    done: tokio::sync::Notify,
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let started = Instant::now();
    let aws = aws_config::load_from_env().await;
    let client = Client::new(&aws);

    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(&args.stream),
        };
        let out = req.send().await.unwrap_or_else(|e| {
            eprintln!("bench-floor: ListShards failed: {:?}", aws_sdk_kinesis::error::DisplayErrorContext(&e));
            std::process::exit(1)
        });
        shards.extend(out.shards().iter().map(|s| s.shard_id().to_owned()));
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }

    let shared = Arc::new(Shared {
        records: AtomicU64::new(0),
        bad: AtomicU64::new(0),
        calls: AtomicU64::new(0),
        caught_up: AtomicUsize::new(0),
        expect: args.expect,
        done: tokio::sync::Notify::new(),
    });
    let n_shards = shards.len();
    for shard in shards {
        let (client, stream, shared) = (client.clone(), args.stream.clone(), shared.clone());
        let (limit, interval) = (args.max_records, args.interval);
        tokio::spawn(async move { read_shard(client, stream, shard, limit, interval, n_shards, shared).await });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = shared.done.notified() => {}
        _ = term.recv() => {}
    }
    eprintln!(
        "{{\"peer\":\"floor\",\"shards\":{},\"records\":{},\"undecodable\":{},\"get_records_calls\":{},\"elapsed_s\":{:.3}}}",
        n_shards,
        shared.records.load(Ordering::Relaxed),
        shared.bad.load(Ordering::Relaxed),
        shared.calls.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    std::process::exit(0);
}

async fn read_shard(
    client: Client,
    stream: String,
    shard: String,
    limit: i32,
    interval: Duration,
    n_shards: usize,
    shared: Arc<Shared>,
) {
    let mut iterator = loop {
        match client
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(&shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
        {
            Ok(out) => break out.shard_iterator.expect("GetShardIterator returned no iterator"),
            Err(e) => {
                eprintln!("bench-floor: {shard}: GetShardIterator: {}", aws_sdk_kinesis::error::DisplayErrorContext(&e));
                tokio::time::sleep(interval).await;
            }
        }
    };
    let mut counted_caught_up = false;
    let mut next_call = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(next_call).await;
        next_call = tokio::time::Instant::now() + interval;
        shared.calls.fetch_add(1, Ordering::Relaxed);
        let out = match client.get_records().shard_iterator(&iterator).limit(limit).send().await {
            Ok(out) => out,
            Err(e) => {
                eprintln!("bench-floor: {shard}: GetRecords: {}", aws_sdk_kinesis::error::DisplayErrorContext(&e));
                continue;
            }
        };
        let n = out.records().len() as u64;
        for r in out.records() {
            if serde_json::from_slice::<Event<'_>>(r.data().as_ref()).is_err() {
                shared.bad.fetch_add(1, Ordering::Relaxed);
            }
        }
        let total = shared.records.fetch_add(n, Ordering::Relaxed) + n;
        if shared.expect.is_some_and(|e| total >= e) {
            shared.done.notify_one();
            return;
        }
        if n == 0 && out.millis_behind_latest() == Some(0) && shared.expect.is_none() && !counted_caught_up {
            counted_caught_up = true;
            if shared.caught_up.fetch_add(1, Ordering::Relaxed) + 1 == n_shards {
                shared.done.notify_one();
                return;
            }
        }
        match out.next_shard_iterator {
            Some(it) => iterator = it,
            None => return, // SHARD_END
        }
    }
}
