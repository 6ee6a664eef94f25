//! The store: checkpoints, leases and job state behind one interface.
//!
//! Two implementations share these traits: [`embedded`] (the default, a
//! single-file crash-safe database that needs no server) and, for fleets of
//! workers, DynamoDB. Callers never know which one they hold.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::track::JobState;

pub mod embedded;
pub mod memory;

/// Errors a caller branches on. Anything else is `Backend`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost: someone else changed the item first.
    #[error("conditional write lost for {key}")]
    Conflict { key: String },
    /// The lease this worker wrote under is no longer its own.
    #[error("lease for shard {shard_id} is no longer held by this worker")]
    LeaseLost { shard_id: String },
    #[error("store backend error: {0}")]
    Backend(#[from] anyhow::Error),
}

/// A shard's checkpoint: the position after which reading resumes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Checkpoint {
    /// Every record up to and including this sequence number is done.
    Sequence(String),
    /// The shard was closed and read to its end; its children may start.
    ShardEnd,
}

/// A value together with the version its conditional writes check.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// A compare-and-set write of one job's state.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub state: JobState,
    /// The version read before deciding; `None` means "must not exist yet".
    pub expected_version: Option<u64>,
}

/// Shard id → checkpoint, one namespace (stream) per store handle.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    async fn checkpoint(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError>;
    async fn set_checkpoint(&self, shard_id: &str, checkpoint: &Checkpoint) -> Result<(), StoreError>;
    async fn list_checkpoints(&self) -> Result<Vec<(String, Checkpoint)>, StoreError>;
    async fn delete_checkpoint(&self, shard_id: &str) -> Result<(), StoreError>;
}

/// Job sid → last known state, updated with compare-and-set.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Loads the states of these jobs; absent (or expired) jobs are missing
    /// from the map.
    async fn load_jobs(&self, job_sids: &[&str]) -> Result<HashMap<String, Versioned<JobState>>, StoreError>;
    /// Writes each update if its job is still at `expected_version`.
    /// Returns the sids whose condition failed (nothing was written for
    /// them); the others were written.
    async fn save_jobs(&self, updates: &[JobUpdate]) -> Result<Vec<String>, StoreError>;
    /// Every live job state, for the operator CLI.
    async fn list_jobs(&self) -> Result<Vec<JobState>, StoreError>;
}

/// Everything a worker needs from its store.
pub trait Store: CheckpointStore + JobStore {}
impl<T: CheckpointStore + JobStore> Store for T {}
