//! The source stage as a library, against LocalStack: the lease coordinator
//! and its shard readers with a recording sink in place of the pipeline.
//!
//! What a user cannot see from the binary's output is asserted here: how
//! many batches the worker holds at once. `poll.max_batches_in_flight` is
//! what bounds the worker's memory whatever the shard count, and it is what
//! keeps a slow Kinesis endpoint from being asked for every shard's batch
//! at the same instant (on LocalStack, 64 shards asked at once made every
//! call outlive its 10 s attempt timeout, again and again).
//!
//! Needs LocalStack (`eval "$(localstack/up)"`); fails saying so without it.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bulkwatch::config::{LeaseConfig, PollConfig, StartPosition};
use bulkwatch::source::RawRecord;
use bulkwatch::source::coordinator::Coordinator;
use bulkwatch::source::reader::{BatchSink, Stop};
use bulkwatch::store::embedded::EmbeddedStore;
use support::LIVENESS;
use support::events;
use support::kinesis::TestStream;
use support::localstack;

/// Counts the batches being processed at once, and the records seen.
#[derive(Default)]
struct Recorder {
    now: AtomicUsize,
    most: AtomicUsize,
    seen: Mutex<HashSet<String>>,
}

#[async_trait]
impl BatchSink for Recorder {
    async fn process(
        &self,
        _shard_id: &Arc<str>,
        records: Vec<RawRecord>,
        _millis_behind: Option<i64>,
    ) -> Result<(), Stop> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        // Long enough that the batches of different shards overlap unless
        // something keeps them apart.
        tokio::time::sleep(Duration::from_millis(300)).await;
        {
            let mut seen = self.seen.lock().unwrap();
            for r in &records {
                seen.insert(r.origin.sequence_number.clone());
            }
        }
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    async fn shard_ended(&self, _shard_id: &Arc<str>) -> Result<(), Stop> {
        Ok(())
    }
}

/// Reads a fresh 6-shard stream with `poll.max_batches_in_flight = slots`
/// (one record per GetRecords call, so every shard has many batches) until
/// every record was seen; returns the most batches processed at once.
fn most_batches_at_once(slots: usize) -> usize {
    let env = localstack::require();
    let stream = TestStream::create(env, "slots", 6);
    let jobs = events::jobs(24);
    let placed = stream.put(&events::all_events(&jobs));
    let shards: HashSet<&str> = placed.iter().map(|p| p.shard_id.as_str()).collect();
    assert!(shards.len() >= 4, "the events landed on only {shards:?}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(env.region.clone()))
            .endpoint_url(&env.endpoint)
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                &env.access_key_id,
                &env.secret_access_key,
                None,
                None,
                "test",
            ))
            .load()
            .await;
        let state = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(state.path())
            .unwrap()
            .for_stream(&stream.name);
        let coordinator = Coordinator {
            client: aws_sdk_kinesis::Client::new(&aws),
            stream: Arc::from(stream.name.as_str()),
            poll: PollConfig {
                max_records: 1,
                max_batches_in_flight: slots,
                ..PollConfig::default()
            },
            lease: LeaseConfig::default(),
            start_position: StartPosition::TrimHorizon,
            store: Arc::new(store),
        };
        let recorder = Arc::new(Recorder::default());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let run = tokio::spawn(coordinator.run(recorder.clone(), shutdown.clone()));
        let deadline = tokio::time::Instant::now() + LIVENESS;
        while recorder.seen.lock().unwrap().len() < placed.len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {} records were read within {LIVENESS:?}",
                recorder.seen.lock().unwrap().len(),
                placed.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shutdown.cancel();
        run.await.unwrap().unwrap();
        let seen = recorder.seen.lock().unwrap();
        for p in &placed {
            assert!(seen.contains(&p.sequence_number), "{p:?} was never read");
        }
        recorder.most.load(Ordering::SeqCst)
    })
}

#[test]
fn batches_in_flight_never_exceed_the_configured_slots() {
    let most = most_batches_at_once(2);
    assert!(
        (1..=2).contains(&most),
        "{most} batches were processed at once with max_batches_in_flight = 2"
    );
}

/// The control: with a slot per shard, the same stream does overlap, so the
/// test above would see it if the bound were not kept.
#[test]
fn without_the_bound_batches_of_different_shards_overlap() {
    let most = most_batches_at_once(6);
    assert!(
        most > 2,
        "only {most} batches were ever processed at once with 6 slots and 6 shards"
    );
}
