//! Embedded store. TEMPORARY in-memory stand-in until the redb store lands.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Checkpoint, CheckpointStore, JobStore, JobUpdate, StoreError, Versioned};
use crate::track::JobState;

#[derive(Default)]
pub struct EmbeddedStore {
    cps: Mutex<HashMap<String, Checkpoint>>,
    jobs: Mutex<HashMap<String, Versioned<JobState>>>,
}

impl EmbeddedStore {
    pub fn open(_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        Ok(Self::default())
    }
    pub fn for_stream(self, _s: &str) -> Self {
        self
    }
}

#[async_trait]
impl CheckpointStore for EmbeddedStore {
    async fn checkpoint(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.cps.lock().unwrap().get(shard_id).cloned())
    }
    async fn set_checkpoint(&self, shard_id: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.cps.lock().unwrap().insert(shard_id.into(), checkpoint.clone());
        Ok(())
    }
    async fn list_checkpoints(&self) -> Result<Vec<(String, Checkpoint)>, StoreError> {
        Ok(self.cps.lock().unwrap().iter().map(|(a, b)| (a.clone(), b.clone())).collect())
    }
    async fn delete_checkpoint(&self, shard_id: &str) -> Result<(), StoreError> {
        self.cps.lock().unwrap().remove(shard_id);
        Ok(())
    }
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn load_jobs(&self, job_sids: &[&str]) -> Result<HashMap<String, Versioned<JobState>>, StoreError> {
        let j = self.jobs.lock().unwrap();
        Ok(job_sids.iter().filter_map(|s| j.get(*s).map(|v| (s.to_string(), v.clone()))).collect())
    }
    async fn save_jobs(&self, updates: &[JobUpdate]) -> Result<Vec<String>, StoreError> {
        let mut j = self.jobs.lock().unwrap();
        for u in updates {
            let v = j.get(&u.state.job_sid).map(|v| v.version).unwrap_or(0);
            j.insert(u.state.job_sid.clone(), Versioned { value: u.state.clone(), version: v + 1 });
        }
        Ok(vec![])
    }
    async fn list_jobs(&self) -> Result<Vec<JobState>, StoreError> {
        Ok(self.jobs.lock().unwrap().values().map(|v| v.value.clone()).collect())
    }
}
