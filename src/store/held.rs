//! What one store handle knows about the leases it holds.
//!
//! Both stores keep this the same way: the counter this handle last wrote on
//! each lease it holds, so that every write it makes under a lease can be
//! conditional on that counter (and its owner name), and a per-lease gate so
//! the handle's own writes to one lease run one after another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// This handle's standing on one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holding {
    /// Held, with the counter this handle last wrote.
    Held(u64),
    /// Released, or found taken by another worker. Checkpoints for the shard
    /// fail with `LeaseLost` until the lease is taken again: a worker that
    /// lost a shard must never move its checkpoint, even if a late batch of
    /// that shard finishes after the loss was noticed.
    Lost,
}

#[derive(Debug, Default)]
pub(crate) struct HeldLeases {
    standing: Mutex<HashMap<String, Holding>>,
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

// The maps are only touched by short, panic-free critical sections, so a
// poisoned lock still holds consistent data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HeldLeases {
    /// Waits until no other write of this handle to the lease is in flight.
    ///
    /// Why: the renewer task and the shard's checkpointing task both write
    /// under the counter they remember. Were they to run together, both
    /// would send "counter = N"; the first would make it N+1 and the second
    /// would fail as if another worker had taken the lease. KCL avoids the
    /// same race by synchronising on the lease object.
    pub(crate) async fn gate(&self, shard_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let gate = lock(&self.gates)
            .entry(shard_id.to_owned())
            .or_default()
            .clone();
        gate.lock_owned().await
    }

    pub(crate) fn get(&self, shard_id: &str) -> Option<Holding> {
        lock(&self.standing).get(shard_id).copied()
    }

    pub(crate) fn set(&self, shard_id: &str, holding: Holding) {
        lock(&self.standing).insert(shard_id.to_owned(), holding);
    }

    /// Forgets the shard entirely (its lease was deleted).
    pub(crate) fn forget(&self, shard_id: &str) {
        lock(&self.standing).remove(shard_id);
    }

    pub(crate) fn held(&self) -> Vec<(String, u64)> {
        let mut held: Vec<(String, u64)> = lock(&self.standing)
            .iter()
            .filter_map(|(shard, holding)| match holding {
                Holding::Held(counter) => Some((shard.clone(), *counter)),
                Holding::Lost => None,
            })
            .collect();
        held.sort();
        held
    }
}
