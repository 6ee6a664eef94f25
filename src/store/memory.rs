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

    async fn set_checkpoint(&self, shard_id: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.lock().checkpoints.insert(shard_id.to_owned(), checkpoint.clone());
        Ok(())
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, Checkpoint)>, StoreError> {
        Ok(self.lock().checkpoints.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    async fn delete_checkpoint(&self, shard_id: &str) -> Result<(), StoreError> {
        self.lock().checkpoints.remove(shard_id);
        Ok(())
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn load_jobs(&self, job_sids: &[&str]) -> Result<HashMap<String, Versioned<JobState>>, StoreError> {
        let now = (self.clock)();
        let inner = self.lock();
        Ok(job_sids
            .iter()
            .filter_map(|sid| inner.jobs.get(*sid).filter(|v| live(v, now)).map(|v| ((*sid).to_owned(), v.clone())))
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
        let mut jobs: Vec<JobState> = inner.jobs.values().filter(|v| live(v, now)).map(|v| v.value.clone()).collect();
        jobs.sort_by(|a, b| a.job_sid.cmp(&b.job_sid));
        Ok(jobs)
    }
}
