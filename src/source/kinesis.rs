//! The Kinesis client and shard listing.

use std::time::Duration;

use anyhow::Context;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::Shard;

use tokio_util::sync::CancellationToken;

use crate::aws_error::AwsError;
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
        // AwsError (not the SdkError itself): it carries the HTTP status
        // into the message and says whether a retry can help, which the
        // start-up retry below reads back with `downcast_ref`.
        let out = req
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(&e))
            .with_context(|| format!("ListShards on stream {stream}"))?;
        shards.extend(out.shards().iter().map(ShardInfo::from));
        match out.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_owned()),
            _ => break,
        }
    }
    Ok(shards)
}

/// The first ListShards of `run`: retries what may pass (timeouts,
/// throttling, 5xx, connection errors: an endpoint that is briefly away
/// must not crash-loop the task, and later ListShards failures are retried
/// too), logging each attempt, and returns at once what will not (a stream
/// that does not exist, access denied, bad credentials), so that a typo is
/// one clear exit 1. `Ok(None)`: shutdown was requested while retrying.
pub async fn list_shards_at_startup(
    client: &Client,
    stream: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Vec<ShardInfo>>> {
    list_with_retry(
        || list_shards(client, stream),
        stream,
        shutdown,
        Duration::from_millis(500),
        Duration::from_secs(30),
    )
    .await
}

async fn list_with_retry<F, Fut>(
    mut list: F,
    stream: &str,
    shutdown: &CancellationToken,
    base: Duration,
    max: Duration,
) -> anyhow::Result<Option<Vec<ShardInfo>>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<ShardInfo>>>,
{
    let mut failures: u32 = 0;
    loop {
        let result = tokio::select! {
            // An AWS call can take up to its operation timeout (30 s):
            // SIGTERM must not wait for it.
            _ = shutdown.cancelled() => return Ok(None),
            r = list() => r,
        };
        let e = match result {
            Ok(shards) => return Ok(Some(shards)),
            Err(e) => e,
        };
        // Only an AWS error the classifier calls transient is retried;
        // anything else (permanent, or not even an AWS error) is final.
        if !e
            .downcast_ref::<AwsError>()
            .is_some_and(AwsError::is_transient)
        {
            return Err(e);
        }
        failures += 1;
        let wait = backoff_delay(failures, base, max);
        tracing::warn!(
            message = "Could not list the stream's shards at start-up; retrying.",
            stream = %stream,
            attempt = failures,
            error = %format!("{e:#}"),
            retry_in_ms = wait.as_millis() as u64
        );
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Exponential backoff with full jitter for retries the SDK handed back.
pub(crate) fn backoff_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let cap = exp.min(max);
    // Full jitter spreads many shards' retries apart after a shared outage.
    let millis = rand::random_range(cap.as_millis() as u64 / 2..=cap.as_millis() as u64);
    Duration::from_millis(millis)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use aws_sdk_kinesis::config::http::HttpResponse;
    use aws_sdk_kinesis::error::SdkError;
    use aws_sdk_kinesis::operation::list_shards::ListShardsError;

    fn failure(timeout: bool) -> anyhow::Error {
        let e: SdkError<ListShardsError, HttpResponse> = if timeout {
            SdkError::timeout_error("operation timed out")
        } else {
            SdkError::construction_failure("no credentials")
        };
        anyhow::Error::new(AwsError::from_sdk(&e)).context("ListShards on stream s")
    }

    fn shard() -> ShardInfo {
        ShardInfo {
            shard_id: "shardId-000000000000".into(),
            parents: vec![],
            closed: false,
            starting_hash_key: "0".into(),
            ending_hash_key: "1".into(),
        }
    }

    /// The first ListShards timing out used to exit 1; it is retried.
    #[tokio::test]
    async fn startup_retries_transient_failures() {
        let calls = &AtomicU32::new(0);
        let got = list_with_retry(
            move || async move {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(failure(true)),
                    _ => Ok(vec![shard()]),
                }
            },
            "s",
            &CancellationToken::new(),
            Duration::from_millis(1),
            Duration::from_millis(2),
        )
        .await
        .unwrap();
        assert_eq!(got, Some(vec![shard()]));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn startup_gives_up_at_once_on_permanent_failures() {
        let calls = &AtomicU32::new(0);
        let err = list_with_retry(
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(failure(false))
            },
            "s",
            &CancellationToken::new(),
            Duration::from_millis(1),
            Duration::from_millis(2),
        )
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(format!("{err:#}").contains("no credentials"), "{err:#}");
    }

    #[tokio::test]
    async fn shutdown_ends_the_startup_retry() {
        let shutdown = &CancellationToken::new();
        let calls = &AtomicU32::new(0);
        let retrying = list_with_retry(
            move || async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                    shutdown.cancel();
                }
                Err(failure(true))
            },
            "s",
            shutdown,
            Duration::from_millis(1),
            Duration::from_millis(2),
        );
        let got = tokio::time::timeout(Duration::from_secs(5), retrying)
            .await
            .expect("the retry stops on shutdown")
            .unwrap();
        assert_eq!(got, None);
        // A call that hangs is abandoned too.
        let stopped = CancellationToken::new();
        stopped.cancel();
        let got = list_with_retry(
            std::future::pending,
            "s",
            &stopped,
            Duration::from_millis(1),
            Duration::from_millis(2),
        )
        .await
        .unwrap();
        assert_eq!(got, None);
    }
}
