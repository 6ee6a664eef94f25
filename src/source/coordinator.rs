//! Which shards run, and from where: discovers the stream's shards,
//! starts one reader per shard, and keeps resharding in order (a closed
//! parent is read to SHARD_END before its children start).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aws_sdk_kinesis::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::kinesis::{ShardInfo, list_shards};
use super::reader::{BatchSink, IteratorStart, ReaderExit, ShardReader};
use crate::config::{PollConfig, StartPosition};
use crate::store::{Checkpoint, CheckpointStore};

pub struct Coordinator {
    pub client: Client,
    pub stream: Arc<str>,
    pub poll: PollConfig,
    pub start_position: StartPosition,
    pub checkpoints: Arc<dyn CheckpointStore>,
}

impl Coordinator {
    /// Runs until shutdown, then waits for every reader to finish its
    /// current batch.
    pub async fn run(
        self,
        sink: Arc<dyn BatchSink>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut readers: JoinSet<(Arc<str>, ReaderExit)> = JoinSet::new();
        let mut running: HashSet<String> = HashSet::new();
        // Task id → shard, so a reader that panicked can be named and
        // restarted from its checkpoint.
        let mut task_shard: HashMap<tokio::task::Id, String> = HashMap::new();
        // Shards this worker saw reach SHARD_END, so their children may
        // start before the store round-trip confirms it.
        let mut ended: HashSet<String> = HashSet::new();
        let mut ticker = tokio::time::interval(self.poll.shard_sync_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_count = usize::MAX;

        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
                Some(joined) = readers.join_next_with_id(), if !readers.is_empty() => {
                    match joined {
                        Ok((id, (shard, ReaderExit::ShardEnded))) => {
                            task_shard.remove(&id);
                            running.remove(shard.as_ref());
                            ended.insert(shard.to_string());
                            // Its children can start now: look at once
                            // rather than on the next tick.
                            ticker.reset_immediately();
                        }
                        Ok((id, (shard, ReaderExit::Stopped(stop)))) => {
                            task_shard.remove(&id);
                            running.remove(shard.as_ref());
                            tracing::info!(message = "Shard reader stopped.", stream = %self.stream, shard = %shard, reason = %stop);
                        }
                        Err(e) => {
                            // A panic in a reader is a bug; the shard is
                            // restarted from its checkpoint on the next
                            // sync, so nothing is skipped.
                            let shard = task_shard.remove(&e.id()).unwrap_or_default();
                            tracing::error!(message = "Shard reader task failed; it will be restarted from its checkpoint.", stream = %self.stream, shard = %shard, error = %e);
                            running.remove(&shard);
                        }
                    }
                    continue;
                }
            }

            let shards = match list_shards(&self.client, &self.stream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(message = "Could not list shards; will retry.", stream = %self.stream, error = %format!("{e:#}"));
                    continue;
                }
            };
            if shards.len() != last_count {
                tracing::info!(message = "Shards discovered.", stream = %self.stream, shards = shards.len());
                last_count = shards.len();
            }
            let checkpoints: HashMap<String, Checkpoint> = match self
                .checkpoints
                .list_checkpoints()
                .await
            {
                Ok(c) => c.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(message = "Could not read checkpoints; will retry.", stream = %self.stream, error = %e);
                    continue;
                }
            };

            for shard in plan(&shards, &checkpoints, &ended, &running) {
                let start = match self.start_for(&shard, &checkpoints).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(message = "Could not record a shard's start position; will retry.", stream = %self.stream, shard = %shard.shard_id, error = %e);
                        continue;
                    }
                };
                tracing::info!(message = "Starting shard reader.", stream = %self.stream, shard = %shard.shard_id, start = ?start);
                let reader = ShardReader {
                    client: self.client.clone(),
                    stream: self.stream.clone(),
                    shard_id: Arc::from(shard.shard_id.as_str()),
                    poll: self.poll.clone(),
                };
                let id = reader.shard_id.clone();
                let (sink, token) = (sink.clone(), shutdown.clone());
                running.insert(shard.shard_id.clone());
                let handle =
                    readers.spawn(async move { (id, reader.run(start, sink, token).await) });
                task_shard.insert(handle.id(), shard.shard_id.clone());
            }
        }

        // Readers see the same token; each finishes its batch and returns.
        while readers.join_next().await.is_some() {}
        Ok(())
    }

    /// Where a shard without a running reader starts.
    async fn start_for(
        &self,
        shard: &ShardInfo,
        checkpoints: &HashMap<String, Checkpoint>,
    ) -> Result<IteratorStart, crate::store::StoreError> {
        Ok(match checkpoints.get(&shard.shard_id) {
            Some(Checkpoint::Sequence(s)) => IteratorStart::AfterSequence(s.clone()),
            Some(Checkpoint::ShardEnd) => unreachable_start(),
            None if !shard.parents.is_empty()
                && shard.parents.iter().any(|p| checkpoints.contains_key(p)) =>
            {
                // A child of a shard we read: its records continue the
                // parent's, so all of them are wanted.
                IteratorStart::TrimHorizon
            }
            None => match self.start_position {
                StartPosition::TrimHorizon => IteratorStart::TrimHorizon,
                StartPosition::AtTimestamp(t) => IteratorStart::AtTimestamp(t),
                // As in KCL, LATEST is resolved again at each start until the
                // shard has a checkpoint: records that arrive on a shard
                // before its first record is processed and while no worker
                // runs are not read. trim-horizon (the default) has no such
                // gap.
                StartPosition::Latest => IteratorStart::Latest,
            },
        })
    }
}

fn unreachable_start() -> IteratorStart {
    // `plan` never schedules a shard whose checkpoint is SHARD_END; should
    // that invariant break, reading from the start re-delivers (with the
    // same transition ids) rather than skipping anything.
    IteratorStart::TrimHorizon
}

/// The shards that should start now: not running, not finished, and every
/// parent finished (or gone from the stream, past its retention).
pub fn plan(
    shards: &[ShardInfo],
    checkpoints: &HashMap<String, Checkpoint>,
    ended: &HashSet<String>,
    running: &HashSet<String>,
) -> Vec<ShardInfo> {
    let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    let done =
        |id: &str| ended.contains(id) || matches!(checkpoints.get(id), Some(Checkpoint::ShardEnd));
    shards
        .iter()
        .filter(|s| !running.contains(&s.shard_id) && !done(&s.shard_id))
        .filter(|s| {
            s.parents
                .iter()
                .all(|p| !listed.contains(p.as_str()) || done(p))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str], closed: bool) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            closed,
            starting_hash_key: String::new(),
            ending_hash_key: String::new(),
        }
    }

    fn ids(v: Vec<ShardInfo>) -> Vec<String> {
        v.into_iter().map(|s| s.shard_id).collect()
    }

    #[test]
    fn children_wait_for_every_parent() {
        // 0 and 1 merged into 3; 2 split into 4 and 5.
        let shards = vec![
            shard("s0", &[], true),
            shard("s1", &[], true),
            shard("s2", &[], true),
            shard("s3", &["s0", "s1"], false),
            shard("s4", &["s2"], false),
            shard("s5", &["s2"], false),
        ];
        let none = HashSet::new();
        let mut cps = HashMap::new();
        assert_eq!(ids(plan(&shards, &cps, &none, &none)), ["s0", "s1", "s2"]);

        cps.insert("s0".to_string(), Checkpoint::ShardEnd);
        cps.insert("s2".to_string(), Checkpoint::ShardEnd);
        let running: HashSet<String> = ["s1".to_string()].into();
        // s3 still waits for s1; s2's children may go.
        assert_eq!(ids(plan(&shards, &cps, &none, &running)), ["s4", "s5"]);

        let ended: HashSet<String> = ["s1".to_string()].into();
        let running: HashSet<String> = ["s4".to_string(), "s5".to_string()].into();
        assert_eq!(ids(plan(&shards, &cps, &ended, &running)), ["s3"]);
    }

    #[test]
    fn a_parent_gone_past_retention_does_not_block() {
        let shards = vec![shard("s9", &["s-expired"], false)];
        let none = HashSet::new();
        assert_eq!(ids(plan(&shards, &HashMap::new(), &none, &none)), ["s9"]);
    }
}
