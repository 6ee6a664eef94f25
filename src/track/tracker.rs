//! Applies a batch of events to the job store with compare-and-set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::apply::{Verdict, step};
use crate::decode::BulkJobEvent;
use crate::source::Origin;
use crate::store::{JobStore, JobUpdate, StoreError};

/// How many times a batch's lost compare-and-set writes are recomputed
/// before giving up with [`StoreError::Conflict`]. Conflicts only happen
/// when two workers hold events of the same job at once (different shards),
/// so a few rounds settle them.
pub const MAX_ATTEMPTS: u32 = 5;

/// Default for how long a terminal job's state is kept.
pub const DEFAULT_TERMINAL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Decides which events are transitions, keeping job state in a
/// [`JobStore`].
#[derive(Clone)]
pub struct Tracker {
    store: Arc<dyn JobStore>,
    terminal_ttl: Duration,
}

impl Tracker {
    pub fn new(store: Arc<dyn JobStore>, terminal_ttl: Duration) -> Tracker {
        Tracker {
            store,
            terminal_ttl,
        }
    }

    /// Returns exactly one verdict per event, in the same order.
    ///
    /// Events are grouped by job, keeping their order; each job's state is
    /// loaded once, its events folded in order, and the result written
    /// only if it changed, conditional on the version loaded. Jobs whose
    /// write lost are reloaded and only their verdicts recomputed. The
    /// state is written before the caller delivers anything: if the
    /// process dies in between, the same records read again get
    /// [`Verdict::Replayed`].
    pub async fn track(
        &self,
        events: &[(BulkJobEvent, Origin)],
    ) -> Result<Vec<Verdict>, StoreError> {
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut pending: Vec<&str> = Vec::new();
        for (i, (event, _)) in events.iter().enumerate() {
            let sid = event.job_sid();
            groups
                .entry(sid)
                .or_insert_with(|| {
                    pending.push(sid);
                    Vec::new()
                })
                .push(i);
        }
        let mut verdicts: Vec<Option<Verdict>> = (0..events.len()).map(|_| None).collect();

        let mut attempt = 1;
        while !pending.is_empty() {
            let now = OffsetDateTime::now_utc();
            let mut loaded = self.store.load_jobs(&pending).await?;
            let mut updates = Vec::new();
            for sid in &pending {
                let (mut state, expected_version) = match loaded.remove(*sid) {
                    Some(v) => (Some(v.value), Some(v.version)),
                    None => (None, None),
                };
                let mut changed = false;
                for &i in &groups[sid] {
                    let (event, origin) = &events[i];
                    let (verdict, c) = step(&mut state, event, origin, now, self.terminal_ttl);
                    verdicts[i] = Some(verdict);
                    changed |= c;
                }
                if let (true, Some(state)) = (changed, state) {
                    updates.push(JobUpdate {
                        state,
                        expected_version,
                    });
                }
            }
            let conflicts = if updates.is_empty() {
                Vec::new()
            } else {
                self.store.save_jobs(&updates).await?
            };
            if conflicts.is_empty() {
                break;
            }
            if attempt >= MAX_ATTEMPTS {
                return Err(StoreError::Conflict {
                    key: conflicts.join(","),
                });
            }
            tracing::debug!(
                jobs = conflicts.len(),
                attempt,
                "job state changed under us; recomputing"
            );
            pending.retain(|sid| conflicts.iter().any(|c| c == sid));
            attempt += 1;
            // A little spacing so two workers racing on one job do not
            // collide again in lockstep.
            tokio::time::sleep(Duration::from_millis(2 * u64::from(attempt))).await;
        }

        let verdicts: Vec<Verdict> = verdicts.into_iter().flatten().collect();
        // Every index belongs to exactly one group and every group was
        // computed at least once.
        assert_eq!(verdicts.len(), events.len(), "one verdict per event");
        Ok(verdicts)
    }
}
