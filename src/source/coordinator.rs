//! Which shards this worker reads, and from where.
//!
//! Every shard has a lease in the store (KCL 2.x style). The coordinator
//! runs one loop that, every `lease.renew_interval`:
//!
//! 1. renews the leases it holds, and stops the reader of any lease it
//!    lost;
//! 2. lists all leases and notes, on its own clock, when each lease's
//!    counter last moved — a lease whose counter stood still for
//!    `lease.failover_time` belongs to a dead worker;
//! 3. takes unowned or expired leases until it holds its fair share
//!    (active leases ÷ live workers, rounded up), or, when there are none
//!    to take, steals one lease from the most loaded worker (a worker
//!    that loses a race for a free lease tries the next one);
//! 4. starts a reader for each held lease whose parents are finished, from
//!    the lease's checkpoint.
//!
//! A cycle also runs at the moment another worker's lease would expire,
//! so failover takes about `lease.failover_time` after the dead worker's
//! last renewal was seen, not up to one renew interval more.
//!
//! Every `poll.shard_sync_interval` (and at once when a shard ends) it also
//! lists the stream's shards and creates leases for new ones, which is how
//! resharding is followed without a restart. A closed parent is read to
//! SHARD_END before any of its children starts, so a job's transitions stay
//! in order.
//!
//! The embedded store holds the same leases in its file, owned by one fixed
//! worker id, so a single worker runs exactly this code too: on restart it
//! finds its own leases and takes them at once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::kinesis::{ShardInfo, list_shards};
use super::reader::{BatchSink, IteratorStart, ReaderExit, ShardReader};
use crate::config::{LeaseConfig, PollConfig, StartPosition};
use crate::store::{HashKeyRange, Lease, LeaseCheckpoint, LeasedStore, NewLease, StoreError};

pub struct Coordinator {
    pub client: Client,
    pub stream: Arc<str>,
    pub poll: PollConfig,
    pub lease: LeaseConfig,
    pub start_position: StartPosition,
    pub store: Arc<dyn LeasedStore>,
}

/// This worker's standing in the lease table after one coordinator cycle:
/// what `bulkwatch_leases_held` publishes and readiness judges ("leases
/// are held, or there are none to hold").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseView {
    /// Leases this worker holds (the store handle's own record, so a lease
    /// lost on renewal is no longer counted).
    pub held: usize,
    /// Leases of shards not yet read to their end, whoever holds them.
    pub active: usize,
    /// Active leases this worker does not hold but could take now: unowned,
    /// expired, or its own from an earlier run. Non-zero while nothing is
    /// held means the worker should be holding something and is not.
    pub takeable: usize,
}

/// When this worker last saw a lease's counter or owner change.
struct Seen {
    counter: u64,
    owner: Option<String>,
    since: Instant,
}

/// The loop's memory between cycles.
struct State {
    readers: JoinSet<(Arc<str>, ReaderExit)>,
    /// The readers' shared batch slots (`poll.max_batches_in_flight`).
    batch_slots: Arc<Semaphore>,
    task_shard: HashMap<tokio::task::Id, String>,
    /// Shard → the token that stops its reader.
    running: HashMap<String, CancellationToken>,
    seen: HashMap<String, Seen>,
    last_shard_count: Option<usize>,
    /// Whether a shard listing has succeeded (and created the missing
    /// leases). Until then the lease table may be empty only because
    /// nobody has created the leases yet: no view is published, so
    /// readiness does not take it for "no shard left to read".
    listed: bool,
    /// When the next lease held by another worker expires, if it does not
    /// move before then. The loop runs a cycle at that instant rather than
    /// up to one renew interval later, so a dead worker's shards are taken
    /// about `failover_time` after its last renewal was seen.
    next_expiry: Option<Instant>,
}

impl Coordinator {
    /// Runs until shutdown; then waits for every reader to finish its
    /// current batch and releases the leases, so another worker can take
    /// them at once instead of after the failover time.
    pub async fn run(
        self,
        sink: Arc<dyn BatchSink>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut st = State {
            readers: JoinSet::new(),
            batch_slots: Arc::new(Semaphore::new(self.poll.max_batches_in_flight)),
            task_shard: HashMap::new(),
            running: HashMap::new(),
            seen: HashMap::new(),
            last_shard_count: None,
            listed: false,
            next_expiry: None,
        };
        let mut renew = tokio::time::interval(self.lease.renew_interval);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sync = tokio::time::interval(self.poll.shard_sync_interval);
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        // The shard listing runs beside the loop, never inside one of its
        // arms: ListShards may take up to the SDK's operation timeout
        // (30 s), longer than the failover time, and while an arm awaits,
        // neither the renew tick nor the shutdown token is looked at. A
        // slow listing would then let this worker's leases lapse to another
        // worker while its readers still run, and hold SIGTERM up.
        let mut syncing: Option<Pin<Box<dyn Future<Output = bool> + Send + '_>>> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sync.tick(), if syncing.is_none() => {
                    syncing = Some(Box::pin(self.sync_shards()));
                }
                listed = async { syncing.as_mut().expect("guarded").await }, if syncing.is_some() => {
                    syncing = None;
                    st.listed |= listed;
                    self.cycle(&mut st, &sink, &shutdown).await;
                }
                _ = renew.tick() => self.cycle(&mut st, &sink, &shutdown).await,
                _ = sleep_until_some(st.next_expiry), if st.next_expiry.is_some() => {
                    self.cycle(&mut st, &sink, &shutdown).await;
                }
                Some(joined) = st.readers.join_next_with_id(), if !st.readers.is_empty() => {
                    if self.reader_finished(&mut st, joined).await {
                        // Its children can start now: look at once rather
                        // than on the next tick (unless a listing already
                        // runs; the cycle after it finds them).
                        if syncing.is_none() {
                            syncing = Some(Box::pin(self.sync_shards()));
                        }
                        self.cycle(&mut st, &sink, &shutdown).await;
                    }
                }
            }
        }
        drop(syncing);

        // Readers watch child tokens of `shutdown`: each finishes its batch
        // (delivered and checkpointed) and returns. Each shard's lease is
        // released as soon as its own reader is done, so one slow batch
        // does not hold back the handoff of the other shards.
        while let Some(joined) = st.readers.join_next_with_id().await {
            let shard = match &joined {
                Ok((_, (shard, _))) => Some(shard.to_string()),
                Err(e) => st.task_shard.get(&e.id()).cloned(),
            };
            self.reader_finished(&mut st, joined).await;
            if let Some(shard) = shard
                && self.store.held_leases().iter().any(|(s, _)| *s == shard)
            {
                self.release(&shard).await;
            }
        }
        // Leases without a reader (children waiting for their parents).
        for (shard, _) in self.store.held_leases() {
            self.release(&shard).await;
        }
        sink.leases_observed(LeaseView::default());
        Ok(())
    }

    /// The shards whose leases this worker holds, as its store knows them.
    fn held_shards(&self) -> HashSet<String> {
        self.store
            .held_leases()
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    async fn release(&self, shard: &str) {
        match self.store.release_lease(shard).await {
            Ok(()) => {
                tracing::info!(message = "Lease released.", stream = %self.stream, shard = %shard)
            }
            Err(e) => {
                tracing::warn!(message = "Could not release a lease; another worker will take it after the failover time.", stream = %self.stream, shard = %shard, error = %e)
            }
        }
    }

    /// Handles a reader's end. Returns true when its shard reached
    /// SHARD_END.
    async fn reader_finished(
        &self,
        st: &mut State,
        joined: Result<(tokio::task::Id, (Arc<str>, ReaderExit)), tokio::task::JoinError>,
    ) -> bool {
        match joined {
            Ok((id, (shard, exit))) => {
                st.task_shard.remove(&id);
                st.running.remove(shard.as_ref());
                match exit {
                    ReaderExit::ShardEnded => {
                        // The SHARD_END checkpoint is written; nothing more
                        // to do on this lease, so give it up rather than
                        // renew it forever. Cleanup deletes it once the
                        // children have started.
                        if let Err(e) = self.store.release_lease(&shard).await {
                            tracing::debug!(message = "Releasing a finished lease failed.", shard = %shard, error = %e);
                        }
                        true
                    }
                    ReaderExit::Stopped(stop) => {
                        tracing::info!(message = "Shard reader stopped.", stream = %self.stream, shard = %shard, reason = %stop);
                        false
                    }
                }
            }
            Err(e) => {
                // A panic in a reader is a bug. Its shard restarts from the
                // checkpoint on the next cycle, so nothing is skipped.
                let shard = st.task_shard.remove(&e.id()).unwrap_or_default();
                tracing::error!(message = "Shard reader task failed; it will restart from its checkpoint.", stream = %self.stream, shard = %shard, error = %e);
                st.running.remove(&shard);
                false
            }
        }
    }

    /// Creates a lease for every shard that has none (new shards after a
    /// reshard, or every shard on a first start).
    /// Returns whether the shards and leases could be listed.
    async fn sync_shards(&self) -> bool {
        let shards = match list_shards(&self.client, &self.stream).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(message = "Could not list shards; will retry.", stream = %self.stream, error = %format!("{e:#}"));
                return false;
            }
        };
        let leases = match self.store.list_leases().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(message = "Could not list leases; will retry.", stream = %self.stream, error = %e);
                return false;
            }
        };
        for new in leases_to_create(&shards, &leases, self.start_position) {
            match self.store.create_lease_if_absent(&new).await {
                Ok(true) => {
                    tracing::info!(message = "Lease created for a new shard.", stream = %self.stream, shard = %new.shard_id, parents = ?new.parent_shard_ids, checkpoint = new.checkpoint.kcl_checkpoint())
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(message = "Could not create a lease; will retry.", stream = %self.stream, shard = %new.shard_id, error = %e)
                }
            }
        }
        // Record each closed parent's children in its lease, as KCL does.
        for (parent, children) in children_by_parent(&shards) {
            if let Some(l) = leases.iter().find(|l| l.shard_id == parent)
                && l.child_shard_ids.is_empty()
                && let Err(e) = self.store.set_child_shard_ids(&parent, &children).await
            {
                tracing::debug!(message = "Could not record child shards.", shard = %parent, error = %e);
            }
        }
        true
    }

    async fn cycle(&self, st: &mut State, sink: &Arc<dyn BatchSink>, shutdown: &CancellationToken) {
        if shutdown.is_cancelled() {
            return;
        }
        // 1. Renew, all at once: the store batches or overlaps them.
        let held: Vec<String> = self
            .store
            .held_leases()
            .into_iter()
            .map(|(shard, _)| shard)
            .collect();
        let renewed = self.store.renew_leases(&held).await;
        for (shard, result) in held.into_iter().zip(renewed) {
            match result {
                Ok(()) => {}
                Err(StoreError::LeaseLost { .. }) | Err(StoreError::Conflict { .. }) => {
                    tracing::warn!(message = "Lease lost to another worker; stopping its reader.", stream = %self.stream, shard = %shard);
                    if let Some(token) = st.running.remove(&shard) {
                        token.cancel();
                    }
                }
                Err(e) => {
                    tracing::warn!(message = "Could not renew a lease; will retry.", stream = %self.stream, shard = %shard, error = %e)
                }
            }
        }

        // 2. Observe.
        let leases = match self.store.list_leases().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(message = "Could not list leases; will retry.", stream = %self.stream, error = %e);
                return;
            }
        };
        let now = Instant::now();
        observe(&mut st.seen, &leases, now);
        if st.last_shard_count != Some(leases.len()) {
            st.last_shard_count = Some(leases.len());
            tracing::info!(message = "Leases in the table.", stream = %self.stream, leases = leases.len());
        }

        // 3. Take or steal.
        let held = self.held_shards();
        st.next_expiry = next_expiry(
            &leases,
            &held,
            self.store.worker_id(),
            &st.seen,
            now,
            self.lease.failover_time,
        );
        let (candidates, mut wanted) = plan_takes(
            &leases,
            &held,
            self.store.worker_id(),
            &st.seen,
            now,
            self.lease.failover_time,
        );
        // Workers that see the same free leases at the same moment (say,
        // those a SIGTERMed worker released) race for them. One that loses
        // a race goes on to the next candidate instead of waiting a whole
        // renew interval, so every released lease is taken in one cycle.
        for lease in candidates {
            if wanted == 0 {
                break;
            }
            let stolen_from = lease.owner.clone().filter(|o| o != self.store.worker_id());
            match self.store.take_lease(lease).await {
                Ok(_) => {
                    wanted -= 1;
                    tracing::info!(message = "Lease taken.", stream = %self.stream, shard = %lease.shard_id, previous_owner = stolen_from.as_deref().unwrap_or("-"))
                }
                Err(StoreError::Conflict { .. }) => {
                    tracing::debug!(message = "Another worker took the lease first.", shard = %lease.shard_id)
                }
                Err(e) => {
                    tracing::warn!(message = "Could not take a lease.", stream = %self.stream, shard = %lease.shard_id, error = %e)
                }
            }
        }

        // 4. Start readers for held leases whose parents are done.
        // Again: the takes above changed it.
        let held = self.held_shards();
        if st.listed {
            sink.leases_observed(lease_view(
                &leases,
                &held,
                self.store.worker_id(),
                &st.seen,
                now,
                self.lease.failover_time,
            ));
        }
        let by_shard: HashMap<&str, &Lease> =
            leases.iter().map(|l| (l.shard_id.as_str(), l)).collect();
        for shard in &held {
            if st.running.contains_key(shard) {
                continue;
            }
            let Some(lease) = by_shard.get(shard.as_str()) else {
                continue;
            };
            if lease.checkpoint == LeaseCheckpoint::ShardEnd || !parents_done(lease, &by_shard) {
                continue;
            }
            let start = iterator_start(&lease.checkpoint, self.start_position);
            tracing::info!(message = "Starting shard reader.", stream = %self.stream, shard = %shard, start = ?start);
            let token = shutdown.child_token();
            let reader = ShardReader {
                client: self.client.clone(),
                stream: self.stream.clone(),
                shard_id: Arc::from(shard.as_str()),
                poll: self.poll.clone(),
                batch_slots: st.batch_slots.clone(),
            };
            let id = reader.shard_id.clone();
            let (sink, t) = (sink.clone(), token.clone());
            let handle = st
                .readers
                .spawn(async move { (id, reader.run(start, sink, t).await) });
            st.task_shard.insert(handle.id(), shard.clone());
            st.running.insert(shard.clone(), token);
        }

        // 5. Clean up parents whose children have all started.
        for parent in parents_to_delete(&leases) {
            match self.store.delete_lease(&parent).await {
                Ok(()) => {
                    tracing::info!(message = "Finished parent lease deleted.", stream = %self.stream, shard = %parent)
                }
                Err(e) => {
                    tracing::debug!(message = "Could not delete a finished lease.", shard = %parent, error = %e)
                }
            }
        }
    }
}

/// Notes when each lease's counter or owner last changed, on our clock.
fn observe(seen: &mut HashMap<String, Seen>, leases: &[Lease], now: Instant) {
    let present: HashSet<&str> = leases.iter().map(|l| l.shard_id.as_str()).collect();
    seen.retain(|k, _| present.contains(k.as_str()));
    for l in leases {
        let changed = match seen.get(&l.shard_id) {
            Some(s) => s.counter != l.counter || s.owner != l.owner,
            None => true,
        };
        if changed {
            seen.insert(
                l.shard_id.clone(),
                Seen {
                    counter: l.counter,
                    owner: l.owner.clone(),
                    since: now,
                },
            );
        }
    }
}

/// Sleeps until `at`; never returns when there is no instant (the select
/// branch is disabled then anyway).
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The first future instant at which a lease of another worker, not
/// moving meanwhile, becomes expired.
fn next_expiry(
    leases: &[Lease],
    held: &HashSet<String>,
    me: &str,
    seen: &HashMap<String, Seen>,
    now: Instant,
    failover: Duration,
) -> Option<Instant> {
    leases
        .iter()
        .filter(|l| l.checkpoint != LeaseCheckpoint::ShardEnd && !held.contains(&l.shard_id))
        .filter(|l| l.owner.as_deref().is_some_and(|o| o != me))
        .filter_map(|l| seen.get(&l.shard_id))
        .map(|s| s.since + failover)
        .filter(|at| *at > now)
        .min()
}

/// The leases to try to take this cycle, in order, and how many of them to
/// take: unowned or expired ones up to our fair share, else one stolen from
/// the most loaded worker.
fn plan_takes<'a>(
    leases: &'a [Lease],
    held: &HashSet<String>,
    me: &str,
    seen: &HashMap<String, Seen>,
    now: Instant,
    failover: Duration,
) -> (Vec<&'a Lease>, usize) {
    let active: Vec<&Lease> = leases
        .iter()
        .filter(|l| l.checkpoint != LeaseCheckpoint::ShardEnd)
        .collect();
    if active.is_empty() {
        return (Vec::new(), 0);
    }
    let available = |l: &Lease| takeable(l, held, me, seen, now, failover);
    let mut load: HashMap<&str, usize> = HashMap::new();
    load.insert(me, 0);
    for l in &active {
        if held.contains(&l.shard_id) {
            *load.entry(me).or_default() += 1;
        } else if !available(l)
            && let Some(o) = l.owner.as_deref()
        {
            *load.entry(o).or_default() += 1;
        }
    }
    let target = active.len().div_ceil(load.len());
    let mine = load[me];
    if mine >= target {
        return (Vec::new(), 0);
    }
    let mut free: Vec<&Lease> = active.iter().copied().filter(|l| available(l)).collect();
    // Parents first: their children cannot start before them anyway. Else
    // in random order, as KCL shuffles expired leases: workers racing for
    // the same free leases then mostly go for different ones.
    free.sort_by_cached_key(|l| (!l.parent_shard_ids.is_empty(), rand::random::<u32>()));
    if !free.is_empty() {
        return (free, target - mine);
    }
    // Nothing free: steal one lease from the most loaded worker, if it holds
    // more than its share. One at a time, so the fleet converges without
    // leases bouncing between workers.
    let Some((&busiest, &most)) = load
        .iter()
        .filter(|(o, _)| **o != me)
        .max_by_key(|(o, n)| (**n, *o))
    else {
        return (Vec::new(), 0);
    };
    if most <= target {
        return (Vec::new(), 0);
    }
    let steal: Vec<&Lease> = active
        .iter()
        .copied()
        .filter(|l| l.owner.as_deref() == Some(busiest))
        .min_by_key(|l| l.shard_id.clone())
        .into_iter()
        .collect();
    (steal, 1)
}

/// Whether this worker may take the lease without stealing it: not held
/// by it, and unowned, expired, or its own from an earlier run.
fn takeable(
    l: &Lease,
    held: &HashSet<String>,
    me: &str,
    seen: &HashMap<String, Seen>,
    now: Instant,
    failover: Duration,
) -> bool {
    if held.contains(&l.shard_id) {
        return false;
    }
    match l.owner.as_deref() {
        None => true,
        // Our own name but not held by this process: an earlier run of
        // this worker (the embedded store's fixed id, or a configured
        // one). Nobody else can be renewing it.
        Some(o) if o == me => true,
        Some(_) => seen
            .get(&l.shard_id)
            .is_some_and(|s| now.duration_since(s.since) >= failover),
    }
}

/// What this worker holds, against the leases seen this cycle.
fn lease_view(
    leases: &[Lease],
    held: &HashSet<String>,
    me: &str,
    seen: &HashMap<String, Seen>,
    now: Instant,
    failover: Duration,
) -> LeaseView {
    let active: Vec<&Lease> = leases
        .iter()
        .filter(|l| l.checkpoint != LeaseCheckpoint::ShardEnd)
        .collect();
    LeaseView {
        held: held.len(),
        active: active.len(),
        takeable: active
            .iter()
            .filter(|l| takeable(l, held, me, seen, now, failover))
            .count(),
    }
}

/// A lease may be read once every parent lease is at SHARD_END or gone
/// (deleted by cleanup after its children started, or never leased
/// because it had expired out of the stream).
fn parents_done(lease: &Lease, by_shard: &HashMap<&str, &Lease>) -> bool {
    lease.parent_shard_ids.iter().all(|p| {
        by_shard
            .get(p.as_str())
            .is_none_or(|pl| pl.checkpoint == LeaseCheckpoint::ShardEnd)
    })
}

fn iterator_start(checkpoint: &LeaseCheckpoint, configured: StartPosition) -> IteratorStart {
    match checkpoint {
        LeaseCheckpoint::Sequence {
            sequence_number, ..
        } => IteratorStart::AfterSequence(sequence_number.clone()),
        LeaseCheckpoint::TrimHorizon => IteratorStart::TrimHorizon,
        LeaseCheckpoint::Latest => IteratorStart::Latest,
        // KCL keeps AT_TIMESTAMP's instant in its config, not the table; so
        // do we. A lease table written with AT_TIMESTAMP but read by a
        // worker configured otherwise falls back to the oldest record,
        // which re-reads rather than skips.
        LeaseCheckpoint::AtTimestamp => match configured {
            StartPosition::AtTimestamp(t) => IteratorStart::AtTimestamp(t),
            _ => IteratorStart::TrimHorizon,
        },
        // Never started (filtered out by the caller); reading from the start
        // would re-deliver, never skip.
        LeaseCheckpoint::ShardEnd => IteratorStart::TrimHorizon,
    }
}

/// Leases for shards that have none. A closed shard any of whose
/// descendants already has a lease was finished and cleaned up: it gets
/// none. (Descendants, not only children: after a split and then a merge of
/// the split's children, cleanup deletes the children's leases too, and the
/// grandparent, still listed, must not get a new lease and be read again
/// from the start.) A child
/// of a shard in the stream starts at TRIM_HORIZON (its records continue
/// its parent's); any other shard at the configured position.
fn leases_to_create(shards: &[ShardInfo], leases: &[Lease], start: StartPosition) -> Vec<NewLease> {
    let leased: HashSet<&str> = leases.iter().map(|l| l.shard_id.as_str()).collect();
    let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    let children = children_by_parent(shards);
    shards
        .iter()
        .filter(|s| !leased.contains(s.shard_id.as_str()))
        .filter(|s| !(s.closed && has_leased_descendant(&s.shard_id, &children, &leased)))
        .map(|s| {
            let has_parent = s
                .parents
                .iter()
                .any(|p| listed.contains(p.as_str()) || leased.contains(p.as_str()));
            let checkpoint = if has_parent {
                LeaseCheckpoint::TrimHorizon
            } else {
                match start {
                    StartPosition::TrimHorizon => LeaseCheckpoint::TrimHorizon,
                    StartPosition::Latest => LeaseCheckpoint::Latest,
                    StartPosition::AtTimestamp(_) => LeaseCheckpoint::AtTimestamp,
                }
            };
            NewLease {
                shard_id: s.shard_id.clone(),
                parent_shard_ids: s.parents.clone(),
                hash_key_range: (!s.starting_hash_key.is_empty()).then(|| HashKeyRange {
                    starting_hash_key: s.starting_hash_key.clone(),
                    ending_hash_key: s.ending_hash_key.clone(),
                }),
                checkpoint,
            }
        })
        .collect()
}

/// Whether any shard descending from `shard` (children, their children, and
/// so on) has a lease.
fn has_leased_descendant(
    shard: &str,
    children: &HashMap<String, Vec<String>>,
    leased: &HashSet<&str>,
) -> bool {
    let mut todo: Vec<&str> = vec![shard];
    let mut visited: HashSet<&str> = HashSet::new();
    while let Some(s) = todo.pop() {
        if !visited.insert(s) {
            continue;
        }
        for c in children.get(s).into_iter().flatten() {
            if leased.contains(c.as_str()) {
                return true;
            }
            todo.push(c);
        }
    }
    false
}

fn children_by_parent(shards: &[ShardInfo]) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for s in shards {
        for p in &s.parents {
            m.entry(p.clone()).or_default().push(s.shard_id.clone());
        }
    }
    m
}

/// Finished leases whose every child lease has started (checkpointed past
/// its start), so nothing will ever need the parent again.
fn parents_to_delete(leases: &[Lease]) -> Vec<String> {
    let started = |l: &Lease| {
        matches!(
            l.checkpoint,
            LeaseCheckpoint::Sequence { .. } | LeaseCheckpoint::ShardEnd
        )
    };
    leases
        .iter()
        .filter(|p| p.checkpoint == LeaseCheckpoint::ShardEnd)
        .filter(|p| {
            let children: Vec<&Lease> = leases
                .iter()
                .filter(|c| c.parent_shard_ids.contains(&p.shard_id))
                .collect();
            !children.is_empty() && children.iter().all(|c| started(c))
        })
        .map(|p| p.shard_id.clone())
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
            starting_hash_key: "0".into(),
            ending_hash_key: "9".into(),
        }
    }

    fn lease(id: &str, owner: Option<&str>, counter: u64, cp: LeaseCheckpoint) -> Lease {
        Lease {
            shard_id: id.into(),
            owner: owner.map(str::to_owned),
            counter,
            checkpoint: cp,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: Vec::new(),
            child_shard_ids: Vec::new(),
            hash_key_range: None,
        }
    }

    fn seq(s: &str) -> LeaseCheckpoint {
        LeaseCheckpoint::Sequence {
            sequence_number: s.into(),
            sub_sequence_number: 0,
        }
    }

    fn ids(v: Vec<&Lease>) -> Vec<String> {
        v.into_iter().map(|l| l.shard_id.clone()).collect()
    }

    const FAILOVER: Duration = Duration::from_secs(10);

    #[test]
    fn new_shards_get_leases_children_at_trim_horizon() {
        let shards = vec![
            shard("s0", &[], true),
            shard("s1", &["s0"], false),
            shard("s2", &["s0"], false),
        ];
        let new = leases_to_create(&shards, &[], StartPosition::Latest);
        let cps: Vec<(&str, &str)> = new
            .iter()
            .map(|n| (n.shard_id.as_str(), n.checkpoint.kcl_checkpoint()))
            .collect();
        assert_eq!(
            cps,
            [
                ("s0", "LATEST"),
                ("s1", "TRIM_HORIZON"),
                ("s2", "TRIM_HORIZON")
            ]
        );
    }

    #[test]
    fn a_finished_and_deleted_parent_gets_no_new_lease() {
        let shards = vec![shard("s0", &[], true), shard("s1", &["s0"], false)];
        let leases = vec![lease("s1", Some("w"), 3, seq("5"))];
        assert!(leases_to_create(&shards, &leases, StartPosition::TrimHorizon).is_empty());
    }

    #[test]
    fn a_grandparent_gets_no_new_lease_once_its_children_are_cleaned_up() {
        // s0 split into s1 and s2, which were merged into s3. Once s3
        // started, s1 and s2 were deleted like s0 before them.
        let shards = vec![
            shard("s0", &[], true),
            shard("s1", &["s0"], true),
            shard("s2", &["s0"], true),
            shard("s3", &["s1", "s2"], false),
        ];
        let leases = vec![lease("s3", Some("w"), 3, seq("5"))];
        assert!(leases_to_create(&shards, &leases, StartPosition::TrimHorizon).is_empty());
    }

    #[test]
    fn children_wait_for_every_parent() {
        let mut child = lease("s3", Some("me"), 1, LeaseCheckpoint::TrimHorizon);
        child.parent_shard_ids = vec!["s0".into(), "s1".into()];
        let p0 = lease("s0", None, 5, LeaseCheckpoint::ShardEnd);
        let p1 = lease("s1", Some("other"), 5, seq("9"));
        let by: HashMap<&str, &Lease> = [("s0", &p0), ("s1", &p1), ("s3", &child)].into();
        assert!(!parents_done(&child, &by));
        let p1_done = lease("s1", None, 6, LeaseCheckpoint::ShardEnd);
        let by: HashMap<&str, &Lease> = [("s0", &p0), ("s1", &p1_done)].into();
        assert!(parents_done(&child, &by));
        // A parent whose lease was cleaned up is done too.
        let by: HashMap<&str, &Lease> = [("s0", &p0)].into();
        assert!(parents_done(&child, &by));
    }

    #[test]
    fn takes_free_leases_up_to_a_fair_share() {
        let leases: Vec<Lease> = (0..8)
            .map(|i| lease(&format!("s{i}"), None, 0, LeaseCheckpoint::TrimHorizon))
            .collect();
        let mut seen = HashMap::new();
        let now = Instant::now();
        observe(&mut seen, &leases, now);
        // Alone: take all 8.
        let (t, n) = plan_takes(&leases, &HashSet::new(), "a", &seen, now, FAILOVER);
        assert_eq!((t.len(), n), (8, 8));
    }

    #[test]
    fn expired_leases_are_taken_only_after_the_failover_time() {
        let leases = vec![
            lease("s0", Some("dead"), 4, seq("1")),
            lease("s1", Some("dead"), 4, seq("1")),
        ];
        let mut seen = HashMap::new();
        let t0 = Instant::now();
        observe(&mut seen, &leases, t0);
        let none = HashSet::new();
        // Within the failover time the owner counts as live: its 2 leases
        // are its fair share of 2 workers (1 each)... so we steal nothing
        // yet either, as it holds 2 > 1: one steal.
        let (t, n) = plan_takes(
            &leases,
            &none,
            "me",
            &seen,
            t0 + Duration::from_secs(5),
            FAILOVER,
        );
        assert_eq!(
            (ids(t), n),
            (vec!["s0".to_string()], 1),
            "one steal from the busier worker"
        );
        // The loop wakes up when they expire, not a renew interval later.
        assert_eq!(
            next_expiry(
                &leases,
                &none,
                "me",
                &seen,
                t0 + Duration::from_secs(5),
                FAILOVER
            ),
            Some(t0 + FAILOVER)
        );
        // After the failover time both are free: take both.
        observe(&mut seen, &leases, t0 + FAILOVER);
        let (t, n) = plan_takes(&leases, &none, "me", &seen, t0 + FAILOVER, FAILOVER);
        assert_eq!((t.len(), n), (2, 2));
        assert_eq!(
            next_expiry(&leases, &none, "me", &seen, t0 + FAILOVER, FAILOVER),
            None
        );
    }

    #[test]
    fn balances_by_stealing_one_lease_from_the_busiest() {
        // 8 leases: a holds 3, b holds 3, c holds 2; d is new.
        let owners = ["a", "a", "a", "b", "b", "b", "c", "c"];
        let leases: Vec<Lease> = owners
            .iter()
            .enumerate()
            .map(|(i, o)| lease(&format!("s{i}"), Some(o), 1, seq("1")))
            .collect();
        let mut seen = HashMap::new();
        let now = Instant::now();
        observe(&mut seen, &leases, now);
        let (t, n) = plan_takes(&leases, &HashSet::new(), "d", &seen, now, FAILOVER);
        assert_eq!((t.len(), n), (1, 1));
        assert!(["a", "b"].contains(&t[0].owner.as_deref().unwrap()));
        // c, at 2 = its share, steals nothing.
        let held: HashSet<String> = ["s6".to_string(), "s7".to_string()].into();
        let (t, n) = plan_takes(&leases, &held, "c", &seen, now, FAILOVER);
        assert!(t.is_empty() && n == 0);
    }

    #[test]
    fn own_leases_from_an_earlier_run_are_taken_at_once() {
        let leases = vec![lease("s0", Some("embedded"), 9, seq("1"))];
        let mut seen = HashMap::new();
        let now = Instant::now();
        observe(&mut seen, &leases, now);
        let (t, n) = plan_takes(&leases, &HashSet::new(), "embedded", &seen, now, FAILOVER);
        assert_eq!((ids(t), n), (vec!["s0".to_string()], 1));
    }

    #[test]
    fn finished_parents_are_deleted_once_children_started() {
        let parent = lease("p", None, 3, LeaseCheckpoint::ShardEnd);
        let mut c1 = lease("c1", Some("a"), 1, seq("5"));
        c1.parent_shard_ids = vec!["p".into()];
        let mut c2 = lease("c2", Some("a"), 1, LeaseCheckpoint::TrimHorizon);
        c2.parent_shard_ids = vec!["p".into()];
        let leases = vec![parent.clone(), c1.clone(), c2.clone()];
        assert!(parents_to_delete(&leases).is_empty(), "c2 not started");
        c2.checkpoint = seq("7");
        assert_eq!(parents_to_delete(&[parent, c1, c2]), ["p"]);
    }
}
