//! The Kinesis client and shard listing.

use std::time::Duration;

use anyhow::Context;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::Shard;

use crate::config::AwsTimeouts;

/// Loads the standard AWS chain (env, profile, ECS task role, IMDS) with
/// the configured timeouts. The SDK has no timeouts by default; without
/// them a half-open connection would stall a shard forever.
pub async fn load_aws_config(timeouts: &AwsTimeouts) -> aws_config::SdkConfig {
    let timeout_config = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(timeouts.connect)
        .operation_attempt_timeout(timeouts.attempt)
        .operation_timeout(timeouts.operation)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeout_config)
        // The SDK's standard mode retries throttling and transient errors
        // (3 attempts). Anything it hands back is the reader's to handle.
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

/// One shard as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard_id: String,
    pub parents: Vec<String>,
    /// A closed shard has an ending sequence number; it will reach
    /// SHARD_END once read.
    pub closed: bool,
    pub starting_hash_key: String,
    pub ending_hash_key: String,
}

impl From<&Shard> for ShardInfo {
    fn from(s: &Shard) -> Self {
        let parents = [s.parent_shard_id(), s.adjacent_parent_shard_id()]
            .into_iter()
            .flatten()
            .map(str::to_owned)
            .collect();
        let closed = s
            .sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .is_some();
        let (start, end) = s
            .hash_key_range()
            .map(|r| {
                (
                    r.starting_hash_key().to_owned(),
                    r.ending_hash_key().to_owned(),
                )
            })
            .unwrap_or_default();
        ShardInfo {
            shard_id: s.shard_id().to_owned(),
            parents,
            closed,
            starting_hash_key: start,
            ending_hash_key: end,
        }
    }
}

/// Lists every shard of the stream, following NextToken pages (ListShards
/// returns at most 1000 shards a page).
pub async fn list_shards(client: &Client, stream: &str) -> anyhow::Result<Vec<ShardInfo>> {
    let mut shards = Vec::new();
    let mut next: Option<String> = None;
    loop {
        // With a NextToken, Kinesis rejects the stream name: the token
        // already encodes it.
        let req = match &next {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let out = req
            .send()
            .await
            .with_context(|| format!("ListShards on stream {stream}"))?;
        shards.extend(out.shards().iter().map(ShardInfo::from));
        match out.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_owned()),
            _ => break,
        }
    }
    Ok(shards)
}

/// Exponential backoff with full jitter for retries the SDK handed back.
pub(crate) fn backoff_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let cap = exp.min(max);
    // Full jitter spreads many shards' retries apart after a shared outage.
    let millis = rand::random_range(cap.as_millis() as u64 / 2..=cap.as_millis() as u64);
    Duration::from_millis(millis)
}
