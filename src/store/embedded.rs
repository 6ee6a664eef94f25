//! The embedded store: one crash-safe redb database file in the state dir.
//!
//! # Handles
//!
//! [`EmbeddedStore::open`] opens (or creates) `<dir>/bulkwatch.redb` and
//! returns a handle scoped to the default stream namespace (`""`) and the
//! worker id `"embedded"`. [`EmbeddedStore::for_stream`] and
//! [`EmbeddedStore::with_worker_id`] derive handles that share the open
//! database: a worker opens the file once and takes one handle per stream,
//!
//! ```no_run
//! # fn f(dir: &std::path::Path) -> Result<(), bulkwatch::store::StoreError> {
//! use bulkwatch::store::embedded::EmbeddedStore;
//! let store = EmbeddedStore::open(dir)?.for_stream("twilio-events");
//! # Ok(()) }
//! ```
//!
//! because the file can only be open once (see below). Checkpoints and leases
//! are keyed by (stream, shard id); job states by job sid alone.
//!
//! # One process per state dir
//!
//! redb locks the file for its writer. A second process that opens the same
//! dir fails at once with "state dir X is in use by another bulkwatch
//! process" instead of waiting, so two workers pointed at one dir by mistake
//! cannot both checkpoint. That exclusivity is also what makes the leases
//! here trivial: this process holds every lease of the file.
//!
//! # Durability
//!
//! Every write transaction commits with [`Durability::Immediate`] (redb's
//! default, set explicitly so nobody "optimises" it away): the commit
//! returns only after fsync. A checkpoint that `set_checkpoint` acknowledged
//! therefore survives kill -9 and power loss, and since the pipeline
//! checkpoints only after every output acknowledged, that is what makes "a
//! restart never skips an unacknowledged record" true. The cost is one fsync
//! per GetRecords batch per shard (and one per `save_jobs`), which the
//! worker's batch-sized writes keep small. redb's copy-on-write commit means a
//! crash leaves the last committed state, never a torn one.
//!
//! # Blocking
//!
//! redb is blocking (and fsync can take milliseconds), so every operation
//! runs on tokio's blocking pool via `spawn_blocking`, keeping the runtime's
//! worker threads free for the shard tasks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use time::OffsetDateTime;

use super::held::{HeldLeases, Holding};
use super::{
    Checkpoint, CheckpointStore, JobStore, JobUpdate, Lease, LeaseCheckpoint, LeaseStore, NewLease,
    StoreError, Versioned,
};
use crate::track::JobState;

/// The database file inside the state dir.
pub const FILE_NAME: &str = "bulkwatch.redb";

/// redb's page cache. Its default (1 GiB) lets the cache, and so the
/// worker's RSS, grow with the database: 80 MB after 40,000 events on the
/// benchmark stream. The hot set is small (a batch's jobs and the lease
/// table's few pages) and a miss is a `pread` served by the OS page cache,
/// so a small cache costs little and keeps memory flat. A write
/// transaction larger than half of it spills dirty pages to the file
/// before its commit, which changes nothing about durability.
const CACHE_BYTES: usize = 4 << 20;

/// The owner name of a handle that was not given one.
pub const DEFAULT_WORKER_ID: &str = "embedded";

/// Bumped when the layout of the tables below changes incompatibly.
const FORMAT_VERSION: u64 = 1;

/// "format" → [`FORMAT_VERSION`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (stream, shard id) → JSON of [`Lease`] (which holds the checkpoint).
const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");
/// job sid → [`JobHeader`] then the postcard of [`JobState`].
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// (expires_at in unix seconds, job sid) → (). An index, so that
/// [`EmbeddedStore::purge_expired`] reads only what has expired instead of
/// every job.
const JOB_EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("job_expiry");

/// The part of a stored job that the compare-and-set needs: the first
/// [`JobHeader::LEN`] bytes of its value, readable without decoding the
/// state behind them.
///
/// A job value is `version` (u64, little-endian), `expires_at` (unix
/// seconds, i64 little-endian, [`i64::MIN`] for "never"), then the
/// [`JobState`] in postcard. Why not JSON, as for leases: job state is
/// rewritten on every transition and read back on every event, so it is
/// the store's hot path. Measured on the 4-shard × 40,000-event benchmark
/// stream, the JSON encoding was about a third of the worker's CPU
/// (encode, decode, and redb copying values of ~2.7 KB); postcard values
/// are less than half that size, and the header lets a compare-and-set
/// decide without decoding the state at all.
#[derive(Debug, Clone, Copy, PartialEq)]
struct JobHeader {
    version: u64,
    /// Unix seconds, the unit DynamoDB's TTL uses too.
    expires_at: Option<i64>,
}

impl JobHeader {
    const LEN: usize = 16;

    fn is_live(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    fn read(sid: &str, bytes: &[u8]) -> Result<JobHeader, StoreError> {
        let (Some(version), Some(expires_at)) = (
            bytes.get(0..8).and_then(|b| b.try_into().ok()),
            bytes.get(8..16).and_then(|b| b.try_into().ok()),
        ) else {
            return Err(StoreError::Backend(anyhow!(
                "embedded store: state of job {sid} is truncated ({} bytes)",
                bytes.len()
            )));
        };
        let expires_at = i64::from_le_bytes(expires_at);
        Ok(JobHeader {
            version: u64::from_le_bytes(version),
            expires_at: (expires_at != i64::MIN).then_some(expires_at),
        })
    }
}

fn encode_job(header: JobHeader, state: &JobState) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(1024);
    bytes.extend_from_slice(&header.version.to_le_bytes());
    bytes.extend_from_slice(&header.expires_at.unwrap_or(i64::MIN).to_le_bytes());
    postcard::to_extend(state, bytes).map_err(|e| {
        StoreError::Backend(anyhow::Error::new(e).context(format!(
            "embedded store: cannot encode job {}",
            state.job_sid
        )))
    })
}

fn decode_job(sid: &str, bytes: &[u8]) -> Result<(JobHeader, JobState), StoreError> {
    let header = JobHeader::read(sid, bytes)?;
    let state = postcard::from_bytes(&bytes[JobHeader::LEN..]).map_err(|e| {
        StoreError::Backend(
            anyhow::Error::new(e)
                .context(format!("embedded store: cannot decode state of job {sid}")),
        )
    })?;
    Ok((header, state))
}

/// Turns any redb error into a `Backend` error.
trait DbResult<T> {
    fn db(self) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> DbResult<T> for Result<T, E> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| {
            StoreError::Backend(anyhow::Error::new(e.into()).context("embedded store"))
        })
    }
}

fn json_err(e: serde_json::Error, what: &str) -> StoreError {
    StoreError::Backend(
        anyhow::Error::new(e).context(format!("embedded store: cannot decode {what}")),
    )
}

/// A handle on the embedded store, scoped to one stream and one worker id.
/// Cheap to clone; clones share the database and the lease bookkeeping.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    dir: Arc<PathBuf>,
    stream: Arc<str>,
    worker_id: Arc<str>,
    held: Arc<HeldLeases>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .field("stream", &self.stream)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store in `dir`, creating the dir and the database file if
    /// needed. Blocking (it may repair the file after a crash): call it at
    /// start-up, before the shard tasks run.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state dir {}", dir.display()))?;
        Self::open_db(dir, true)
    }

    /// Opens the store in `dir` only if a worker has created it there, and
    /// creates nothing: for the operator commands, which only read (or
    /// forget a checkpoint), so that a mistyped `--state-dir` is an error
    /// instead of a new, empty store that lists nothing.
    pub fn open_existing(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        if !dir.is_dir() {
            let what = if dir.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(anyhow!(
                "state dir {} {what} (is --state-dir, `state_dir` or BULKWATCH_STATE_DIR right?)",
                dir.display()
            )
            .into());
        }
        if !dir.join(FILE_NAME).is_file() {
            return Err(anyhow!(
                "state dir {} holds no bulkwatch store (no {FILE_NAME}): no worker has run with it (is --state-dir right?)",
                dir.display()
            )
            .into());
        }
        Self::open_db(dir, false)
    }

    fn open_db(dir: &Path, create: bool) -> Result<EmbeddedStore, StoreError> {
        let path = dir.join(FILE_NAME);
        let builder = {
            let mut b = Database::builder();
            b.set_cache_size(CACHE_BYTES);
            b
        };
        let opened = if create {
            builder.create(&path)
        } else {
            builder.open(&path)
        };
        let db = match opened {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(anyhow!(
                    "state dir {} is in use by another bulkwatch process (its database {} is locked): \
                     stop that worker first for an operator command, or give each worker its own --state-dir",
                    dir.display(),
                    path.display()
                )
                .into());
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot open state database {}", path.display()))
                    .into());
            }
        };
        init_tables(&db).map_err(|e| match e {
            StoreError::Backend(e) => {
                StoreError::Backend(e.context(format!("state database {}", path.display())))
            }
            other => other,
        })?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            dir: Arc::new(dir.to_owned()),
            stream: Arc::from(""),
            worker_id: Arc::from(DEFAULT_WORKER_ID),
            held: Arc::default(),
        })
    }

    /// A handle on the same database whose checkpoints and leases are those
    /// of `stream`. It starts holding no leases.
    pub fn for_stream(&self, stream: &str) -> EmbeddedStore {
        EmbeddedStore {
            stream: Arc::from(stream),
            held: Arc::default(),
            ..self.clone()
        }
    }

    /// A handle on the same database and stream that writes `worker_id` as
    /// the lease owner. It starts holding no leases.
    pub fn with_worker_id(&self, worker_id: &str) -> EmbeddedStore {
        EmbeddedStore {
            worker_id: Arc::from(worker_id),
            held: Arc::default(),
            ..self.clone()
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Deletes job states whose `expires_at` is at or before `now`, and
    /// returns how many. Cheap: it reads only the expired entries of the
    /// expiry index. Run it now and then (e.g. hourly); until then expired
    /// states are merely invisible.
    pub async fn purge_expired(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let now = now.unix_timestamp();
        self.run(move |db| {
            let txn = begin_write(db)?;
            let purged;
            {
                let mut expiry = txn.open_table(JOB_EXPIRY).db()?;
                let mut jobs = txn.open_table(JOBS).db()?;
                let mut due = Vec::new();
                for entry in expiry.range(..(now.saturating_add(1), "")).db()? {
                    let (key, _) = entry.db()?;
                    let (at, sid) = key.value();
                    due.push((at, sid.to_owned()));
                }
                for (at, sid) in &due {
                    expiry.remove((*at, sid.as_str())).db()?;
                    jobs.remove(sid.as_str()).db()?;
                }
                purged = due.len();
            }
            txn.commit().db()?;
            Ok(purged)
        })
        .await
    }

    /// Runs a blocking database operation on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend(anyhow!("embedded store task failed: {e}")))?
    }

    /// Reads the lease of `shard_id`, lets `decide` compute the new one
    /// (or `None` to leave it), and writes it, all in one write transaction
    /// so the decision is made on what is committed. Returns what was
    /// written.
    async fn update_lease<F>(&self, shard_id: &str, decide: F) -> Result<Option<Lease>, StoreError>
    where
        F: FnOnce(Option<Lease>) -> Result<Option<Lease>, StoreError> + Send + 'static,
    {
        let stream = Arc::clone(&self.stream);
        let shard_id = shard_id.to_owned();
        self.run(move |db| {
            let txn = begin_write(db)?;
            let written;
            {
                let mut table = txn.open_table(LEASES).db()?;
                let current = match table.get((&*stream, shard_id.as_str())).db()? {
                    Some(bytes) => Some(decode_lease(bytes.value())?),
                    None => None,
                };
                written = decide(current)?;
                if let Some(lease) = &written {
                    let bytes = serde_json::to_vec(lease).context("encode lease")?;
                    table
                        .insert((&*stream, shard_id.as_str()), bytes.as_slice())
                        .db()?;
                }
            }
            if written.is_some() {
                txn.commit().db()?;
            } else {
                txn.abort().db()?;
            }
            Ok(written)
        })
        .await
    }

    async fn read_leases(&self) -> Result<Vec<Lease>, StoreError> {
        let stream = Arc::clone(&self.stream);
        self.run(move |db| {
            let txn = db.begin_read().db()?;
            let table = txn.open_table(LEASES).db()?;
            let mut leases = Vec::new();
            // Keys sort by stream, then shard id: this range is exactly
            // this stream's leases.
            for entry in table.range((&*stream, "")..).db()? {
                let (key, value) = entry.db()?;
                if key.value().0 != &*stream {
                    break;
                }
                leases.push(decode_lease(value.value())?);
            }
            Ok(leases)
        })
        .await
    }

    async fn load_jobs_at(
        &self,
        job_sids: &[&str],
        now: i64,
    ) -> Result<HashMap<String, Versioned<JobState>>, StoreError> {
        let sids: Vec<String> = job_sids.iter().map(|s| (*s).to_owned()).collect();
        self.run(move |db| {
            let txn = db.begin_read().db()?;
            let table = txn.open_table(JOBS).db()?;
            let mut found = HashMap::with_capacity(sids.len());
            for sid in sids {
                if let Some(bytes) = table.get(sid.as_str()).db()? {
                    let bytes = bytes.value();
                    // Expired states count as absent: skip their decoding.
                    if JobHeader::read(&sid, bytes)?.is_live(now) {
                        let (header, state) = decode_job(&sid, bytes)?;
                        found.insert(
                            sid,
                            Versioned {
                                value: state,
                                version: header.version,
                            },
                        );
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    /// `save_jobs` with the expiry of each state given, and the clock.
    async fn save_jobs_at(
        &self,
        updates: Vec<(JobUpdate, Option<i64>)>,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.run(move |db| {
            // One transaction (one fsync) for the whole batch; each job's
            // compare-and-set is decided inside it, on committed data.
            let txn = begin_write(db)?;
            let mut conflicted = Vec::new();
            {
                let mut jobs = txn.open_table(JOBS).db()?;
                let mut expiry = txn.open_table(JOB_EXPIRY).db()?;
                for (update, expires_at) in updates {
                    let sid = update.state.job_sid.clone();
                    // Only the header: the CAS never needs the old state.
                    let current = match jobs.get(sid.as_str()).db()? {
                        Some(bytes) => Some(JobHeader::read(&sid, bytes.value())?),
                        None => None,
                    };
                    let live_version = current
                        .as_ref()
                        .filter(|c| c.is_live(now))
                        .map(|c| c.version);
                    if live_version != update.expected_version {
                        conflicted.push(sid);
                        continue;
                    }
                    if let Some(old_at) = current.as_ref().and_then(|c| c.expires_at) {
                        expiry.remove((old_at, sid.as_str())).db()?;
                    }
                    let header = JobHeader {
                        version: update.expected_version.map_or(1, |v| v + 1),
                        expires_at,
                    };
                    let bytes = encode_job(header, &update.state)?;
                    jobs.insert(sid.as_str(), bytes.as_slice()).db()?;
                    if let Some(at) = expires_at {
                        expiry.insert((at, sid.as_str()), ()).db()?;
                    }
                }
            }
            txn.commit().db()?;
            Ok(conflicted)
        })
        .await
    }

    async fn list_jobs_at(&self, now: i64) -> Result<Vec<JobState>, StoreError> {
        self.run(move |db| {
            let txn = db.begin_read().db()?;
            let table = txn.open_table(JOBS).db()?;
            let mut jobs = Vec::new();
            for entry in table.iter().db()? {
                let (key, value) = entry.db()?;
                let (header, state) = decode_job(key.value(), value.value())?;
                if header.is_live(now) {
                    jobs.push(state);
                }
            }
            Ok(jobs)
        })
        .await
    }
}

fn begin_write(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write().db()?;
    // Immediate: the commit returns after fsync. See the module doc.
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Backend(anyhow!("embedded store: cannot set durability: {e}")))?;
    Ok(txn)
}

fn init_tables(db: &Database) -> Result<(), StoreError> {
    let txn = begin_write(db)?;
    {
        let mut meta = txn.open_table(META).db()?;
        let format = meta.get("format").db()?.map(|v| v.value());
        match format {
            None => {
                meta.insert("format", FORMAT_VERSION).db()?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(anyhow!(
                    "it has format {other}, this bulkwatch reads format {FORMAT_VERSION} (written by another version?)"
                )
                .into());
            }
        }
        txn.open_table(LEASES).db()?;
        txn.open_table(JOBS).db()?;
        txn.open_table(JOB_EXPIRY).db()?;
    }
    txn.commit().db()
}

fn decode_lease(bytes: &[u8]) -> Result<Lease, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| json_err(e, "lease"))
}

fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn lease_lost(shard_id: &str) -> StoreError {
    StoreError::LeaseLost {
        shard_id: shard_id.to_owned(),
    }
}

#[async_trait]
impl CheckpointStore for EmbeddedStore {
    async fn checkpoint(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self
            .get_lease(shard_id)
            .await?
            .and_then(|l| l.checkpoint.to_checkpoint()))
    }

    async fn set_checkpoint(
        &self,
        shard_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError> {
        let _gate = self.held.gate(shard_id).await;
        let holding = self.held.get(shard_id);
        if holding == Some(Holding::Lost) {
            return Err(lease_lost(shard_id));
        }
        let me = Arc::clone(&self.worker_id);
        let checkpoint = LeaseCheckpoint::from(checkpoint);
        let shard = shard_id.to_owned();
        let result = self
            .update_lease(shard_id, move |current| {
                let mut lease = match (holding, current) {
                    (Some(Holding::Held(counter)), Some(lease))
                        if lease.counter == counter && lease.owner.as_deref() == Some(&*me) =>
                    {
                        lease
                    }
                    (Some(_), _) => return Err(lease_lost(&shard)),
                    // Never taken by this handle: this process is the only
                    // one on the file, so it may take the lease implicitly.
                    (None, Some(lease)) => lease,
                    (None, None) => new_lease(&shard),
                };
                lease.owner = Some(me.to_string());
                lease.counter += 1;
                lease.checkpoint = checkpoint;
                lease.owner_switches_since_checkpoint = 0;
                Ok(Some(lease))
            })
            .await;
        self.record_outcome(shard_id, &result);
        result.map(|_| ())
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, Checkpoint)>, StoreError> {
        Ok(self
            .read_leases()
            .await?
            .into_iter()
            .filter_map(|l| l.checkpoint.to_checkpoint().map(|c| (l.shard_id, c)))
            .collect())
    }

    async fn delete_checkpoint(&self, shard_id: &str) -> Result<(), StoreError> {
        self.delete_lease(shard_id).await
    }
}

fn new_lease(shard_id: &str) -> Lease {
    Lease {
        shard_id: shard_id.to_owned(),
        owner: None,
        counter: 0,
        checkpoint: LeaseCheckpoint::TrimHorizon,
        owner_switches_since_checkpoint: 0,
        parent_shard_ids: Vec::new(),
        child_shard_ids: Vec::new(),
        hash_key_range: None,
    }
}

fn sorted_set(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    ids
}

impl EmbeddedStore {
    /// Updates the bookkeeping after a write under a lease: the new counter
    /// on success, `Lost` on `LeaseLost`, nothing on other errors (the write
    /// may not have happened; the next one will tell).
    fn record_outcome(&self, shard_id: &str, result: &Result<Option<Lease>, StoreError>) {
        match result {
            Ok(Some(lease)) => self.held.set(shard_id, Holding::Held(lease.counter)),
            Ok(None) => {}
            Err(StoreError::LeaseLost { .. }) => self.held.set(shard_id, Holding::Lost),
            Err(_) => {}
        }
    }
}

#[async_trait]
impl LeaseStore for EmbeddedStore {
    fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn held_leases(&self) -> Vec<(String, u64)> {
        self.held.held()
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.read_leases().await
    }

    async fn get_lease(&self, shard_id: &str) -> Result<Option<Lease>, StoreError> {
        let key = (Arc::clone(&self.stream), shard_id.to_owned());
        self.run(move |db| {
            let txn = db.begin_read().db()?;
            let table = txn.open_table(LEASES).db()?;
            match table.get((&*key.0, key.1.as_str())).db()? {
                Some(bytes) => Ok(Some(decode_lease(bytes.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn create_lease_if_absent(&self, lease: &NewLease) -> Result<bool, StoreError> {
        let new = Lease {
            shard_id: lease.shard_id.clone(),
            owner: None,
            counter: 0,
            checkpoint: lease.checkpoint.clone(),
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: sorted_set(&lease.parent_shard_ids),
            child_shard_ids: Vec::new(),
            hash_key_range: lease.hash_key_range.clone(),
        };
        let written = self
            .update_lease(&lease.shard_id, move |current| {
                Ok(if current.is_some() { None } else { Some(new) })
            })
            .await?;
        Ok(written.is_some())
    }

    async fn take_lease(&self, observed: &Lease) -> Result<Lease, StoreError> {
        let shard_id = observed.shard_id.as_str();
        let _gate = self.held.gate(shard_id).await;
        let me = Arc::clone(&self.worker_id);
        let expected = observed.counter;
        let shard = shard_id.to_owned();
        let result = self
            .update_lease(shard_id, move |current| match current {
                Some(mut lease) if lease.counter == expected => {
                    if lease.owner.as_deref().is_some_and(|o| o != &*me) {
                        lease.owner_switches_since_checkpoint += 1;
                    }
                    lease.owner = Some(me.to_string());
                    lease.counter += 1;
                    Ok(Some(lease))
                }
                _ => Err(StoreError::Conflict { key: shard }),
            })
            .await;
        self.record_outcome(shard_id, &result);
        result?
            .ok_or_else(|| StoreError::Backend(anyhow!("take of lease {shard_id} wrote nothing")))
    }

    async fn renew_lease(&self, shard_id: &str) -> Result<(), StoreError> {
        let _gate = self.held.gate(shard_id).await;
        let Some(Holding::Held(counter)) = self.held.get(shard_id) else {
            return Err(lease_lost(shard_id));
        };
        let me = Arc::clone(&self.worker_id);
        let shard = shard_id.to_owned();
        let result = self
            .update_lease(shard_id, move |current| match current {
                Some(mut lease)
                    if lease.counter == counter && lease.owner.as_deref() == Some(&*me) =>
                {
                    lease.counter += 1;
                    Ok(Some(lease))
                }
                _ => Err(lease_lost(&shard)),
            })
            .await;
        self.record_outcome(shard_id, &result);
        result.map(|_| ())
    }

    /// All in one write transaction: one fsync a round instead of one per
    /// lease. An idle worker on 200 shards spent most of its CPU committing
    /// 200 renewals every 3 s, each with its own fsync.
    async fn renew_leases(&self, shard_ids: &[String]) -> Vec<Result<(), StoreError>> {
        // Each lease's gate, as renew_lease takes it, so no checkpoint of
        // this handle writes a lease between our read and our write. Gates
        // are taken one at a time and no other write holds two, so this
        // cannot deadlock; a shard named twice is gated once.
        let mut gates = HashMap::with_capacity(shard_ids.len());
        for shard in shard_ids {
            if !gates.contains_key(shard.as_str()) {
                gates.insert(shard.as_str(), self.held.gate(shard).await);
            }
        }
        let work: Vec<(String, Option<u64>)> = shard_ids
            .iter()
            .map(|shard| {
                let counter = match self.held.get(shard) {
                    Some(Holding::Held(counter)) => Some(counter),
                    _ => None,
                };
                (shard.clone(), counter)
            })
            .collect();
        let me = Arc::clone(&self.worker_id);
        let stream = Arc::clone(&self.stream);
        let committed = self
            .run(move |db| {
                let txn = begin_write(db)?;
                let mut results = Vec::with_capacity(work.len());
                // Counters written earlier in this transaction, for a
                // shard named twice.
                let mut renewed: HashMap<&str, u64> = HashMap::new();
                {
                    let mut table = txn.open_table(LEASES).db()?;
                    for (shard, held) in &work {
                        let Some(expected) = renewed.get(shard.as_str()).copied().or(*held) else {
                            results.push(Err(lease_lost(shard)));
                            continue;
                        };
                        let current = match table.get((&*stream, shard.as_str())).db()? {
                            Some(bytes) => decode_lease(bytes.value()).map(Some),
                            None => Ok(None),
                        };
                        let mut lease = match current {
                            Ok(Some(lease))
                                if lease.counter == expected
                                    && lease.owner.as_deref() == Some(&*me) =>
                            {
                                lease
                            }
                            Ok(_) => {
                                results.push(Err(lease_lost(shard)));
                                continue;
                            }
                            Err(e) => {
                                results.push(Err(e));
                                continue;
                            }
                        };
                        lease.counter += 1;
                        let bytes = serde_json::to_vec(&lease).context("encode lease")?;
                        table
                            .insert((&*stream, shard.as_str()), bytes.as_slice())
                            .db()?;
                        renewed.insert(shard, lease.counter);
                        results.push(Ok(Some(lease)));
                    }
                }
                if renewed.is_empty() {
                    txn.abort().db()?;
                } else {
                    txn.commit().db()?;
                }
                Ok(results)
            })
            .await;
        match committed {
            Ok(results) => shard_ids
                .iter()
                .zip(results)
                .map(|(shard, result)| {
                    self.record_outcome(shard, &result);
                    result.map(|_| ())
                })
                .collect(),
            // Nothing was written: every renewal failed the same way, and
            // each lease keeps the counter this handle had.
            Err(e) => {
                let e = format!("{e:#}");
                shard_ids
                    .iter()
                    .map(|_| Err(StoreError::Backend(anyhow!("{e}"))))
                    .collect()
            }
        }
    }

    async fn release_lease(&self, shard_id: &str) -> Result<(), StoreError> {
        let _gate = self.held.gate(shard_id).await;
        let holding = self.held.get(shard_id);
        self.held.set(shard_id, Holding::Lost);
        let Some(Holding::Held(counter)) = holding else {
            return Err(lease_lost(shard_id));
        };
        let me = Arc::clone(&self.worker_id);
        let shard = shard_id.to_owned();
        self.update_lease(shard_id, move |current| match current {
            Some(mut lease) if lease.counter == counter && lease.owner.as_deref() == Some(&*me) => {
                lease.owner = None;
                lease.counter += 1;
                Ok(Some(lease))
            }
            _ => Err(lease_lost(&shard)),
        })
        .await
        .map(|_| ())
    }

    async fn set_child_shard_ids(
        &self,
        shard_id: &str,
        child_shard_ids: &[String],
    ) -> Result<(), StoreError> {
        let children = sorted_set(child_shard_ids);
        let shard = shard_id.to_owned();
        self.update_lease(shard_id, move |current| match current {
            Some(mut lease) => {
                lease.child_shard_ids = children;
                Ok(Some(lease))
            }
            None => Err(StoreError::Conflict { key: shard }),
        })
        .await
        .map(|_| ())
    }

    async fn delete_lease(&self, shard_id: &str) -> Result<(), StoreError> {
        let _gate = self.held.gate(shard_id).await;
        let key = (Arc::clone(&self.stream), shard_id.to_owned());
        self.run(move |db| {
            let txn = begin_write(db)?;
            txn.open_table(LEASES)
                .db()?
                .remove((&*key.0, key.1.as_str()))
                .db()?;
            txn.commit().db()
        })
        .await?;
        self.held.forget(shard_id);
        Ok(())
    }
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn load_jobs(
        &self,
        job_sids: &[&str],
    ) -> Result<HashMap<String, Versioned<JobState>>, StoreError> {
        self.load_jobs_at(job_sids, unix_now()).await
    }

    async fn save_jobs(&self, updates: &[JobUpdate]) -> Result<Vec<String>, StoreError> {
        let updates = updates
            .iter()
            .map(|u| {
                (
                    u.clone(),
                    u.state.expires_at().map(OffsetDateTime::unix_timestamp),
                )
            })
            .collect();
        self.save_jobs_at(updates, unix_now()).await
    }

    async fn list_jobs(&self) -> Result<Vec<JobState>, StoreError> {
        self.list_jobs_at(unix_now()).await
    }
}

#[cfg(test)]
mod tests;
