//! The store: checkpoints, leases and job state behind one interface.
//!
//! Two implementations share these traits: [`embedded`] (the default, a
//! single-file crash-safe database that needs no server) and, for fleets of
//! workers, [`dynamodb`]. Callers never know which one they hold.
//!
//! # Scoping
//!
//! A handle is scoped to one stream and one worker:
//! - the embedded store keys checkpoints and leases by (stream, shard id);
//!   [`embedded::EmbeddedStore::for_stream`] picks the stream and
//!   [`embedded::EmbeddedStore::with_worker_id`] the owner name;
//! - the DynamoDB store follows KCL: one lease table per application (and so
//!   per stream), its hash key the bare shard id; the worker id is set in
//!   [`dynamodb::DynamoConfig`].
//!
//! Job state is global (keyed by job sid) in both: a job's events may arrive
//! on any shard of any stream.
//!
//! # Leases and checkpoints are one record
//!
//! As in KCL, a shard's checkpoint lives in its lease. Writing a checkpoint
//! is a conditional write on the lease (owner and counter), so a worker that
//! lost a shard can never move its checkpoint. The handle remembers the
//! counter of every lease it holds, which is what makes
//! [`CheckpointStore::set_checkpoint`] conditional without the caller
//! passing counters around.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::track::JobState;

pub mod dynamodb;
pub mod embedded;
mod held;
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
    /// Transparent: the inner error already says what failed (and is the
    /// `source` as well), so adding a message of our own and displaying the
    /// inner one would print every sentence of it twice in an anyhow chain
    /// (`{:#}`), as "state dir … is locked" once was.
    #[error(transparent)]
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
///
/// A successful write stores version `expected_version + 1`, or 1 for a new
/// job, so a caller can keep using the state it wrote without reloading it.
/// A state that has expired counts as absent: `expected_version: None`
/// overwrites it.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub state: JobState,
    /// The version read before deciding; `None` means "must not exist yet".
    pub expected_version: Option<u64>,
}

/// Shard id → checkpoint, one namespace (stream) per store handle.
///
/// The checkpoint is the lease's `checkpoint` (see the module doc): a lease
/// whose checkpoint is a start sentinel (`TRIM_HORIZON`, `LATEST`,
/// `AT_TIMESTAMP`) has no [`Checkpoint`] yet and is missing here.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    async fn checkpoint(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError>;
    /// Writes the checkpoint under this handle's lease on the shard, as a
    /// conditional write on its owner and counter (which it bumps, like
    /// KCL). `LeaseLost` if the lease is not, or no longer, this handle's.
    /// The embedded store, being the only process on its file, implicitly
    /// takes a lease it was never given, so a single worker need not manage
    /// leases at all.
    async fn set_checkpoint(
        &self,
        shard_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError>;
    async fn list_checkpoints(&self) -> Result<Vec<(String, Checkpoint)>, StoreError>;
    /// Forgets the shard altogether: deletes its lease (KCL deletes a parent
    /// lease once its children have started).
    async fn delete_checkpoint(&self, shard_id: &str) -> Result<(), StoreError>;
}

/// Job sid → last known state, updated with compare-and-set.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Loads the states of these jobs; absent (or expired) jobs are missing
    /// from the map.
    async fn load_jobs(
        &self,
        job_sids: &[&str],
    ) -> Result<HashMap<String, Versioned<JobState>>, StoreError>;
    /// Writes each update if its job is still at `expected_version`.
    /// Returns the sids whose condition failed (nothing was written for
    /// them); the others were written.
    async fn save_jobs(&self, updates: &[JobUpdate]) -> Result<Vec<String>, StoreError>;
    /// Every live job state, for the operator CLI.
    async fn list_jobs(&self) -> Result<Vec<JobState>, StoreError>;
}

/// Where a lease's shard resumes, in KCL's vocabulary: the lease table's
/// `checkpoint` string attribute (a sentinel or a sequence number) together
/// with `checkpointSubSequenceNumber`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LeaseCheckpoint {
    /// Not started; read from the oldest record (`TRIM_HORIZON`). KCL gives
    /// new child shards this value.
    TrimHorizon,
    /// Not started; read from the tip (`LATEST`).
    Latest,
    /// Not started; read from the application's configured timestamp
    /// (`AT_TIMESTAMP`; KCL keeps the timestamp in its config, not the table).
    AtTimestamp,
    /// The shard was read to its end (`SHARD_END`).
    ShardEnd,
    /// Records up to and including this one are done. A non-zero
    /// `sub_sequence_number` means a KPL-aggregated record was checkpointed
    /// part way (KCL only; bulkwatch always writes 0).
    Sequence {
        sequence_number: String,
        sub_sequence_number: u64,
    },
}

impl LeaseCheckpoint {
    /// Parses the `checkpoint` attribute as KCL writes it.
    pub fn from_kcl(checkpoint: &str, sub_sequence_number: u64) -> Self {
        match checkpoint {
            "TRIM_HORIZON" => Self::TrimHorizon,
            "LATEST" => Self::Latest,
            "AT_TIMESTAMP" => Self::AtTimestamp,
            "SHARD_END" => Self::ShardEnd,
            seq => Self::Sequence {
                sequence_number: seq.to_owned(),
                sub_sequence_number,
            },
        }
    }

    /// The `checkpoint` attribute value.
    pub fn kcl_checkpoint(&self) -> &str {
        match self {
            Self::TrimHorizon => "TRIM_HORIZON",
            Self::Latest => "LATEST",
            Self::AtTimestamp => "AT_TIMESTAMP",
            Self::ShardEnd => "SHARD_END",
            Self::Sequence {
                sequence_number, ..
            } => sequence_number,
        }
    }

    /// The `checkpointSubSequenceNumber` attribute value.
    pub fn kcl_sub_sequence_number(&self) -> u64 {
        match self {
            Self::Sequence {
                sub_sequence_number,
                ..
            } => *sub_sequence_number,
            _ => 0,
        }
    }

    /// The [`Checkpoint`] a reader resumes from, or `None` when the shard has
    /// not been started (the sentinels say where to start instead).
    pub fn to_checkpoint(&self) -> Option<Checkpoint> {
        match self {
            Self::Sequence {
                sequence_number, ..
            } => Some(Checkpoint::Sequence(sequence_number.clone())),
            Self::ShardEnd => Some(Checkpoint::ShardEnd),
            Self::TrimHorizon | Self::Latest | Self::AtTimestamp => None,
        }
    }
}

impl From<&Checkpoint> for LeaseCheckpoint {
    fn from(checkpoint: &Checkpoint) -> Self {
        match checkpoint {
            Checkpoint::Sequence(seq) => Self::Sequence {
                sequence_number: seq.clone(),
                sub_sequence_number: 0,
            },
            Checkpoint::ShardEnd => Self::ShardEnd,
        }
    }
}

/// A shard's hash key range, as decimal strings (KCL's `startingHashKey`
/// and `endingHashKey`; the values are 128-bit).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HashKeyRange {
    pub starting_hash_key: String,
    pub ending_hash_key: String,
}

/// One shard's lease: who processes it, and where it stands. The fields are
/// those of a KCL 2.x lease table item (attribute names in brackets).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The shard id (`leaseKey`).
    pub shard_id: String,
    /// The worker holding it, if any (`leaseOwner`).
    pub owner: Option<String>,
    /// Bumped by every renewal, take, release and checkpoint
    /// (`leaseCounter`). Other workers judge a lease expired when its
    /// counter has not moved for the failover time, measured on their own
    /// clocks, so no clock is shared.
    pub counter: u64,
    /// (`checkpoint`, `checkpointSubSequenceNumber`)
    pub checkpoint: LeaseCheckpoint,
    /// Times the lease changed hands since its last checkpoint
    /// (`ownerSwitchesSinceCheckpoint`); a shard that keeps changing hands
    /// without progress is a poison-record signal.
    pub owner_switches_since_checkpoint: u64,
    /// (`parentShardId`, a string set despite its singular name)
    pub parent_shard_ids: Vec<String>,
    /// (`childShardIds`, a string set)
    pub child_shard_ids: Vec<String>,
    /// (`startingHashKey`, `endingHashKey`)
    pub hash_key_range: Option<HashKeyRange>,
}

/// A lease to create for a newly discovered shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLease {
    pub shard_id: String,
    pub parent_shard_ids: Vec<String>,
    pub hash_key_range: Option<HashKeyRange>,
    /// Where an unstarted shard begins: the configured position for shards
    /// without parents, [`LeaseCheckpoint::TrimHorizon`] for children.
    pub checkpoint: LeaseCheckpoint,
}

/// Shard leases, after KCL 2.x: every write is conditional on the lease's
/// counter (and, for the holder's own writes, its owner), so that two
/// workers never both believe they hold a shard for longer than one write.
///
/// The handle knows its worker id and remembers the counter of each lease it
/// holds. Deciding *which* leases to take (expired ones, unowned ones, or one
/// stolen from the most loaded worker) and *when* a lease has expired is the
/// caller's job: it watches counters across [`LeaseStore::list_leases`]
/// calls, as KCL's lease taker does.
///
/// Failures the caller branches on: [`StoreError::Conflict`] when a take or
/// create lost a race, [`StoreError::LeaseLost`] when a lease this handle held
/// is no longer its own (it is then forgotten, and further checkpoints for
/// that shard fail until it is taken again).
/// Renewals the default [`LeaseStore::renew_leases`] keeps in flight. A
/// DynamoDB UpdateItem takes some 5–20 ms; one at a time, a worker holding
/// 200 leases would spend most of a 3 s renew interval renewing, and the
/// last lease of the round would come close to looking expired.
pub const RENEWALS_IN_FLIGHT: usize = 16;

#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// The owner name this handle writes into `leaseOwner`.
    fn worker_id(&self) -> &str;
    /// The leases this handle holds, with the counter it last wrote.
    fn held_leases(&self) -> Vec<(String, u64)>;
    /// Every lease (of this handle's stream), read consistently.
    async fn list_leases(&self) -> Result<Vec<Lease>, StoreError>;
    async fn get_lease(&self, shard_id: &str) -> Result<Option<Lease>, StoreError>;
    /// Creates an unowned lease with counter 0 unless one exists already.
    /// Returns whether it created it.
    async fn create_lease_if_absent(&self, lease: &NewLease) -> Result<bool, StoreError>;
    /// Takes the lease for this worker if its counter is still
    /// `observed.counter`: claims an unowned lease, one whose owner stopped
    /// renewing, or steals a live one. Increments `ownerSwitchesSinceCheckpoint`
    /// when the owner changes. `Conflict` if another write came first.
    async fn take_lease(&self, observed: &Lease) -> Result<Lease, StoreError>;
    /// Renews a held lease (counter + 1, conditional on counter and owner).
    async fn renew_lease(&self, shard_id: &str) -> Result<(), StoreError>;
    /// Renews several held leases: one result per shard, in the order
    /// given, each as [`renew_lease`](Self::renew_lease) would return it.
    /// The worker renews everything it holds every renew interval, so this
    /// is the lease work that grows with the shard count: the default
    /// renews a few at a time, and a store that can commit many renewals in
    /// one write overrides it.
    async fn renew_leases(&self, shard_ids: &[String]) -> Vec<Result<(), StoreError>> {
        use futures_util::StreamExt;
        // Built up front (a future does nothing until polled); mapping
        // inside the stream trips the compiler's lifetime inference for
        // `Send` futures.
        let renewals: Vec<_> = shard_ids.iter().map(|s| self.renew_lease(s)).collect();
        futures_util::stream::iter(renewals)
            .buffered(RENEWALS_IN_FLIGHT)
            .collect()
            .await
    }
    /// Gives a held lease up so another worker can take it at once (KCL's
    /// evictLease: owner removed, counter + 1, conditional on counter and
    /// owner). The lease is forgotten locally whatever the outcome.
    async fn release_lease(&self, shard_id: &str) -> Result<(), StoreError>;
    /// Records a closed shard's children (needs only that the lease exists,
    /// like KCL's update of `childShardIds`).
    async fn set_child_shard_ids(
        &self,
        shard_id: &str,
        child_shard_ids: &[String],
    ) -> Result<(), StoreError>;
    /// Deletes a lease: cleanup of a parent once its children have started.
    async fn delete_lease(&self, shard_id: &str) -> Result<(), StoreError>;
}

/// Everything a worker needs from its store.
pub trait Store: CheckpointStore + JobStore {}
impl<T: CheckpointStore + JobStore> Store for T {}

/// A store that also shares shards between workers; both implementations
/// are one.
pub trait LeasedStore: Store + LeaseStore {}
impl<T: Store + LeaseStore> LeasedStore for T {}
