//! An in-memory store: for unit tests, and for `bulkwatch decode` without
//! `--state-dir`. Nothing survives the process.
//!
//! It keeps the same promises as the durable stores, so tests of the
//! tracker mean something:
//! - `save_jobs` is a real compare-and-set per job: the write happens only
//!   if the stored version is the expected one (`None`: no live state);
//!   versions only grow.
//! - A job state past its `expires_at` is gone: `load_jobs` and `list_jobs`
//!   skip it, and a write expecting "absent" succeeds over it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{Checkpoint, CheckpointStore, JobStore, JobUpdate, StoreError, Versioned};
use crate::track::JobState;

type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Checkpoints and job states in memory.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    clock: Clock,
}

#[derive(Default)]
struct Inner {
    checkpoints: BTreeMap<String, Checkpoint>,
    jobs: HashMap<String, Versioned<JobState>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::with_clock(Arc::new(OffsetDateTime::now_utc))
    }

    /// A store that reads time from `clock` (for testing expiry).
    pub fn with_clock(clock: Clock) -> MemoryStore {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written map
        // behind (every mutation is a single insert/remove), so a poisoned
        // lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn live(v: &Versioned<JobState>, now: OffsetDateTime) -> bool {
    v.value.expires_at().is_none_or(|t| t > now)
}

#[async_trait]
impl CheckpointStore for MemoryStore {
    async fn checkpoint(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.lock().checkpoints.get(shard_id).cloned())
    }

    async fn set_checkpoint(
        &self,
        shard_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError> {
        self.lock()
            .checkpoints
            .insert(shard_id.to_owned(), checkpoint.clone());
        Ok(())
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, Checkpoint)>, StoreError> {
        Ok(self
            .lock()
            .checkpoints
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn delete_checkpoint(&self, shard_id: &str) -> Result<(), StoreError> {
        self.lock().checkpoints.remove(shard_id);
        Ok(())
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn load_jobs(
        &self,
        job_sids: &[&str],
    ) -> Result<HashMap<String, Versioned<JobState>>, StoreError> {
        let now = (self.clock)();
        let inner = self.lock();
        Ok(job_sids
            .iter()
            .filter_map(|sid| {
                inner
                    .jobs
                    .get(*sid)
                    .filter(|v| live(v, now))
                    .map(|v| ((*sid).to_owned(), v.clone()))
            })
            .collect())
    }

    async fn save_jobs(&self, updates: &[JobUpdate]) -> Result<Vec<String>, StoreError> {
        let now = (self.clock)();
        let mut inner = self.lock();
        let mut conflicts = Vec::new();
        for update in updates {
            let sid = &update.state.job_sid;
            let stored = inner.jobs.get(sid);
            let current = stored.filter(|v| live(v, now)).map(|v| v.version);
            if current != update.expected_version {
                conflicts.push(sid.clone());
                continue;
            }
            // Versions keep growing across expiry, so a stale writer holding
            // the expired version can never match the new state.
            let version = stored.map_or(1, |v| v.version + 1);
            inner.jobs.insert(
                sid.clone(),
                Versioned {
                    value: update.state.clone(),
                    version,
                },
            );
        }
        Ok(conflicts)
    }

    async fn list_jobs(&self) -> Result<Vec<JobState>, StoreError> {
        let now = (self.clock)();
        let inner = self.lock();
        let mut jobs: Vec<JobState> = inner
            .jobs
            .values()
            .filter(|v| live(v, now))
            .map(|v| v.value.clone())
            .collect();
        jobs.sort_by(|a, b| a.job_sid.cmp(&b.job_sid));
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{BulkJobData, BulkJobEvent, TimeSource};
    use crate::source::Origin;
    use crate::track::{JobStatus, apply};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2025-06-01 00:00:00 UTC);

    fn state(sid: &str, status: &str, now: OffsetDateTime, ttl_secs: u64) -> JobState {
        let event = BulkJobEvent {
            id: format!("{sid}-{status}"),
            source: "AB1".into(),
            dataschema: None,
            time: now,
            time_source: TimeSource::Event,
            data: BulkJobData {
                job_sid: sid.into(),
                status: JobStatus::parse(status),
                friendly_name: None,
                description: None,
                created_at: None,
                completed_at: None,
                thresholds: None,
                result: None,
                twilio_error_code: None,
            },
        };
        let origin = Origin {
            stream: "s".into(),
            shard_id: "sh".into(),
            sequence_number: "1".into(),
            arrival: None,
        };
        apply(
            None,
            &event,
            &origin,
            now,
            std::time::Duration::from_secs(ttl_secs),
        )
        .1
        .unwrap()
    }

    fn upd(state: JobState, expected_version: Option<u64>) -> JobUpdate {
        JobUpdate {
            state,
            expected_version,
        }
    }

    fn fixed_clock(at: Arc<Mutex<OffsetDateTime>>) -> MemoryStore {
        MemoryStore::with_clock(Arc::new(move || *at.lock().unwrap()))
    }

    #[tokio::test]
    async fn save_is_compare_and_set() {
        let store = MemoryStore::new();
        let now = OffsetDateTime::now_utc();
        assert!(
            store
                .save_jobs(&[upd(state("JW1", "CREATED", now, 60), None)])
                .await
                .unwrap()
                .is_empty()
        );
        // "Must not exist" fails once it exists.
        assert_eq!(
            store
                .save_jobs(&[upd(state("JW1", "QUEUED", now, 60), None)])
                .await
                .unwrap(),
            ["JW1"]
        );
        // A wrong version fails and writes nothing; the right one wins.
        assert_eq!(
            store
                .save_jobs(&[upd(state("JW1", "QUEUED", now, 60), Some(7))])
                .await
                .unwrap(),
            ["JW1"]
        );
        let loaded = store.load_jobs(&["JW1", "JW2"]).await.unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded["JW1"].version, 1);
        assert_eq!(loaded["JW1"].value.status, JobStatus::Created);
        // One batch: one write wins, one loses, independently.
        let conflicts = store
            .save_jobs(&[
                upd(state("JW1", "QUEUED", now, 60), Some(1)),
                upd(state("JW2", "QUEUED", now, 60), Some(1)),
            ])
            .await
            .unwrap();
        assert_eq!(conflicts, ["JW2"]);
        let loaded = store.load_jobs(&["JW1"]).await.unwrap();
        assert_eq!(
            (loaded["JW1"].version, &loaded["JW1"].value.status),
            (2, &JobStatus::Queued)
        );
    }

    #[tokio::test]
    async fn expired_states_are_gone_but_versions_keep_growing() {
        let clock = Arc::new(Mutex::new(T0));
        let store = fixed_clock(clock.clone());
        let done = state("JW1", "COMPLETED", T0, 60);
        assert_eq!(done.expires_at(), Some(T0 + time::Duration::seconds(60)));
        store.save_jobs(&[upd(done, None)]).await.unwrap();
        store
            .save_jobs(&[upd(state("JW2", "QUEUED", T0, 60), None)])
            .await
            .unwrap();
        assert_eq!(store.load_jobs(&["JW1"]).await.unwrap().len(), 1);

        *clock.lock().unwrap() = T0 + time::Duration::seconds(60);
        assert!(
            store.load_jobs(&["JW1"]).await.unwrap().is_empty(),
            "expired at its instant"
        );
        let live: Vec<String> = store
            .list_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.job_sid)
            .collect();
        assert_eq!(live, ["JW2"], "non-terminal states never expire");
        // The old version no longer matches; "absent" does.
        assert_eq!(
            store
                .save_jobs(&[upd(state("JW1", "CREATED", T0, 60), Some(1))])
                .await
                .unwrap(),
            ["JW1"]
        );
        assert!(
            store
                .save_jobs(&[upd(state("JW1", "CREATED", T0, 60), None)])
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.load_jobs(&["JW1"]).await.unwrap()["JW1"].version, 2);
    }

    #[tokio::test]
    async fn checkpoints_are_kept_per_shard() {
        let store = MemoryStore::default();
        assert_eq!(store.checkpoint("a").await.unwrap(), None);
        store
            .set_checkpoint("b", &Checkpoint::ShardEnd)
            .await
            .unwrap();
        store
            .set_checkpoint("a", &Checkpoint::Sequence("1".into()))
            .await
            .unwrap();
        store
            .set_checkpoint("a", &Checkpoint::Sequence("2".into()))
            .await
            .unwrap();
        assert_eq!(
            store.checkpoint("a").await.unwrap(),
            Some(Checkpoint::Sequence("2".into()))
        );
        assert_eq!(
            store.list_checkpoints().await.unwrap(),
            [
                ("a".to_owned(), Checkpoint::Sequence("2".into())),
                ("b".to_owned(), Checkpoint::ShardEnd)
            ]
        );
        store.delete_checkpoint("a").await.unwrap();
        assert_eq!(store.checkpoint("a").await.unwrap(), None);
    }
}
