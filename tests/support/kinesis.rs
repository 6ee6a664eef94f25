//! A throw-away Kinesis stream on LocalStack, driven synchronously.
//!
//! Each test creates its own stream with a random name, so tests can run in
//! parallel threads and a crashed run leaves nothing that collides with the
//! next. The stream is deleted when the [`TestStream`] is dropped (best
//! effort: LocalStack forgets everything on restart anyway).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};

use super::events::Event;
use super::localstack::AwsEnv;

/// PutRecords takes at most 500 records a call.
const PUT_BATCH: usize = 500;

/// A shard as ListShards describes it.
#[derive(Debug, Clone)]
pub struct ShardInfo {
    pub shard_id: String,
    pub parent: Option<String>,
    /// The second parent of a merged shard.
    pub adjacent_parent: Option<String>,
    pub starting_hash_key: u128,
    pub ending_hash_key: u128,
    /// A closed shard (split or merged) has an ending sequence number.
    pub closed: bool,
}

/// Where PutRecords put one event.
#[derive(Debug, Clone)]
pub struct Placed {
    pub event_id: String,
    pub job_sid: String,
    pub shard_id: String,
    pub sequence_number: String,
}

pub struct TestStream {
    pub name: String,
    client: Client,
    // Declared last so it is dropped after the client.
    rt: tokio::runtime::Runtime,
}

impl TestStream {
    /// Creates `stream-<tag>-<random>` with `shards` shards and waits until
    /// it is ACTIVE.
    pub fn create(env: &AwsEnv, tag: &str, shards: i32) -> TestStream {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the test's Kinesis client");
        let client = client(env);
        let name = format!("bulkwatch-e2e-{tag}-{}", super::random_suffix());
        // LocalStack enforces the account's shard limit (100), shared by
        // every test and tool using it: wait for room (streams of finished
        // tests are being deleted) rather than fail at once.
        let deadline = Instant::now() + super::LIVENESS;
        loop {
            let created = rt.block_on(
                client
                    .create_stream()
                    .stream_name(&name)
                    .shard_count(shards)
                    .send(),
            );
            match created {
                Ok(_) => break,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_limit_exceeded_exception())
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_secs(2));
                }
                Err(e) => panic!("CreateStream {name}: {}", chain(&e)),
            }
        }
        let stream = TestStream { name, client, rt };
        stream.wait_active();
        stream
    }

    /// Deletes the stream and creates it again under the same name with
    /// `shards` shards, as an operator might: same name, new shards whose
    /// sequence numbers have nothing to do with the old ones.
    pub fn recreate(&self, shards: i32) {
        self.rt
            .block_on(self.client.delete_stream().stream_name(&self.name).send())
            .unwrap_or_else(|e| panic!("DeleteStream {}: {}", self.name, chain(&e)));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if matches!(self.status(), Ok(None)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "stream {} still there 60 s after DeleteStream",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.rt
            .block_on(
                self.client
                    .create_stream()
                    .stream_name(&self.name)
                    .shard_count(shards)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("CreateStream {} again: {}", self.name, chain(&e)));
        self.wait_active();
    }

    /// The stream's status; `Ok(None)` when it does not exist.
    fn status(&self) -> Result<Option<StreamStatus>, String> {
        let answer = self.rt.block_on(
            self.client
                .describe_stream_summary()
                .stream_name(&self.name)
                .send(),
        );
        match answer {
            Ok(o) => Ok(o
                .stream_description_summary()
                .map(|s| s.stream_status().clone())),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(chain(&e)),
        }
    }

    /// Polls DescribeStreamSummary until the stream is ACTIVE (after a
    /// create or a split).
    pub fn wait_active(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.status() {
                Ok(Some(StreamStatus::Active)) => return,
                other if Instant::now() > deadline => {
                    panic!("stream {} is not ACTIVE after 60 s: {other:?}", self.name)
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Puts the events in order and returns where each one landed.
    ///
    /// The partition key is the job sid, so a job's events all go to one
    /// shard (the hash-key range of the key) and keep their order there.
    /// Retrying the failed entries of a PutRecords call could reorder a
    /// job's events if two of them were in that call, so a call never holds
    /// two events of the same job: its retries then cannot overtake anything
    /// of the same job, and the next call starts only once every entry of
    /// this one is in.
    pub fn put(&self, events: &[Event]) -> Vec<Placed> {
        let mut placed = Vec::with_capacity(events.len());
        let mut batch: Vec<&Event> = Vec::new();
        let mut keys: HashSet<&str> = HashSet::new();
        for e in events {
            if batch.len() == PUT_BATCH || keys.contains(e.job_sid.as_str()) {
                placed.extend(self.put_batch(&batch));
                batch.clear();
                keys.clear();
            }
            keys.insert(&e.job_sid);
            batch.push(e);
        }
        if !batch.is_empty() {
            placed.extend(self.put_batch(&batch));
        }
        placed
    }

    /// One PutRecords call, retrying failed entries until all are in.
    fn put_batch(&self, batch: &[&Event]) -> Vec<Placed> {
        let mut result: Vec<Option<Placed>> = vec![None; batch.len()];
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            let entries: Vec<PutRecordsRequestEntry> = pending
                .iter()
                .map(|&i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(&batch[i].job_sid)
                        .data(Blob::new(batch[i].payload.clone()))
                        .build()
                        .expect("a complete PutRecords entry")
                })
                .collect();
            let sent = self.rt.block_on(
                self.client
                    .put_records()
                    .stream_name(&self.name)
                    .set_records(Some(entries))
                    .send(),
            );
            let why = match sent {
                Ok(out) => {
                    let mut failed = Vec::new();
                    let mut why = String::new();
                    for (&i, r) in pending.iter().zip(out.records()) {
                        match (r.error_code(), r.shard_id(), r.sequence_number()) {
                            (None, Some(shard), Some(seq)) => {
                                result[i] = Some(Placed {
                                    event_id: batch[i].id.clone(),
                                    job_sid: batch[i].job_sid.clone(),
                                    shard_id: shard.to_owned(),
                                    sequence_number: seq.to_owned(),
                                });
                            }
                            (code, _, _) => {
                                why = format!("{code:?}: {:?}", r.error_message());
                                failed.push(i);
                            }
                        }
                    }
                    pending = failed;
                    why
                }
                // The whole call failed (or timed out, perhaps after being
                // applied): send it all again. A record put twice is an
                // exact duplicate event, which the worker must drop anyway.
                Err(e) => chain(&e),
            };
            if pending.is_empty() {
                break;
            }
            assert!(
                attempt < 30,
                "PutRecords into {} still failing after {attempt} attempts: {why}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100 * u64::from(attempt.min(10))));
        }
        result
            .into_iter()
            .map(|p| p.expect("every entry placed"))
            .collect()
    }

    /// Every shard of the stream, open and closed.
    pub fn shards(&self) -> Vec<ShardInfo> {
        let mut shards = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let req = match &next {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(&self.name),
            };
            let out = self
                .rt
                .block_on(req.send())
                .unwrap_or_else(|e| panic!("ListShards {}: {}", self.name, chain(&e)));
            for s in out.shards() {
                let range = s.hash_key_range().expect("a hash key range");
                shards.push(ShardInfo {
                    shard_id: s.shard_id().to_owned(),
                    parent: s.parent_shard_id().map(str::to_owned),
                    adjacent_parent: s.adjacent_parent_shard_id().map(str::to_owned),
                    starting_hash_key: range.starting_hash_key().parse().expect("a u128"),
                    ending_hash_key: range.ending_hash_key().parse().expect("a u128"),
                    closed: s
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_some(),
                });
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => return shards,
            }
        }
    }

    /// Splits `shard_id` at the middle of its hash-key range, waits until
    /// the stream is ACTIVE again, and returns the two children's ids.
    pub fn split(&self, shard_id: &str) -> Vec<String> {
        let shard = self
            .shards()
            .into_iter()
            .find(|s| s.shard_id == shard_id)
            .unwrap_or_else(|| panic!("no shard {shard_id} in {}", self.name));
        // Hash keys span 0..=2^128-1: u128 holds them, but start + end can
        // overflow, so take half the width. The new starting key must lie
        // strictly inside the range (the first child gets start..new-1).
        let (start, end) = (shard.starting_hash_key, shard.ending_hash_key);
        let middle = start + (end - start) / 2 + 1;
        self.rt
            .block_on(
                self.client
                    .split_shard()
                    .stream_name(&self.name)
                    .shard_to_split(shard_id)
                    .new_starting_hash_key(middle.to_string())
                    .send(),
            )
            .unwrap_or_else(|e| panic!("SplitShard {shard_id} of {}: {}", self.name, chain(&e)));
        self.wait_active();
        let children: Vec<String> = self
            .shards()
            .into_iter()
            .filter(|s| s.parent.as_deref() == Some(shard_id))
            .map(|s| s.shard_id)
            .collect();
        assert_eq!(
            children.len(),
            2,
            "after SplitShard {shard_id}, ListShards of {} shows children {children:?}",
            self.name
        );
        children
    }

    /// Merges two adjacent open shards, waits until the stream is ACTIVE
    /// again, and returns the merged child's id.
    pub fn merge(&self, shard_id: &str, adjacent: &str) -> String {
        self.rt
            .block_on(
                self.client
                    .merge_shards()
                    .stream_name(&self.name)
                    .shard_to_merge(shard_id)
                    .adjacent_shard_to_merge(adjacent)
                    .send(),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "MergeShards {shard_id} + {adjacent} of {}: {}",
                    self.name,
                    chain(&e)
                )
            });
        self.wait_active();
        let children: Vec<String> = self
            .shards()
            .into_iter()
            .filter(|s| {
                s.adjacent_parent.is_some()
                    && [&s.parent, &s.adjacent_parent]
                        .iter()
                        .any(|p| p.as_deref() == Some(shard_id))
            })
            .map(|s| s.shard_id)
            .collect();
        assert_eq!(
            children.len(),
            1,
            "after MergeShards {shard_id} + {adjacent}, ListShards of {} shows children {children:?}",
            self.name
        );
        children.into_iter().next().unwrap_or_default()
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let _ = self.rt.block_on(
            self.client
                .delete_stream()
                .stream_name(&self.name)
                .enforce_consumer_deletion(true)
                .send(),
        );
    }
}

/// A Kinesis client for LocalStack with explicit settings (not the
/// environment: the test process may not have the variables).
fn client(env: &AwsEnv) -> Client {
    let timeouts = aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(20))
        .operation_timeout(Duration::from_secs(60))
        .build();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(env.region.clone()))
        .credentials_provider(Credentials::new(
            &env.access_key_id,
            &env.secret_access_key,
            None,
            None,
            "bulkwatch-e2e",
        ))
        .endpoint_url(&env.endpoint)
        .timeout_config(timeouts)
        .build();
    Client::from_conf(config)
}

/// The SDK's Display of an error is only "service error"; the chain says
/// what happened.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}
