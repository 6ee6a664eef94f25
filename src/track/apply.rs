//! The decision: is this event a transition? A pure function of the stored
//! state and the event, so every worker reaches the same verdict.
//!
//! # Rules, in the order they are checked
//!
//! 1. **Same event id** as an emitted transition: if it also comes from
//!    the same record (shard id and sequence number), it is that record read
//!    again after a crash between tracking and delivery → [`Verdict::Replayed`]
//!    with the very same transition (same `transition_id`, same
//!    `previous_status`), so it is delivered again. From another record it
//!    is a Twilio duplicate → [`Verdict::Duplicate`]. An id that emitted
//!    nothing (a repeat or stale event) seen again is also a duplicate.
//! 2. **Known statuses** are ordered by rank (see `track::status`):
//!    - no state yet, or only unknown statuses so far → transition;
//!    - the job is terminal: the same status → repeat, any other → stale;
//!    - higher rank → transition (skipping steps is fine);
//!    - same rank (the same status, or PROCESSING vs IN_PROGRESS, which
//!      name the same step) → [`Verdict::Repeat`];
//!    - lower rank → [`Verdict::Stale`].
//! 3. **Unknown statuses** have no rank and do not change the job's rank:
//!    the next known status is compared with the last known one. Each
//!    unknown status string is emitted at most once per job (again →
//!    repeat), never after a terminal status (→ stale), and at most
//!    [`MAX_UNKNOWN_STATUSES`] per job (more → stale) so the state stays
//!    bounded.
//!
//! A repeat emits nothing, but refreshes the stored snapshot when its event
//! time is not older than the snapshot's: a later PROCESSING event may carry
//! newer counts. The job's status and history do not change.
//!
//! A terminal state gets `expires_at = now + terminal TTL`. After expiry the
//! job is forgotten, and a late event for it would start it afresh.

use std::time::Duration;

use time::OffsetDateTime;

use super::state::{HistoryEntry, JobState};
use super::transition::{JobSnapshot, Transition};
use crate::decode::BulkJobEvent;
use crate::source::Origin;

/// Distinct unknown statuses emitted per job, at most.
pub const MAX_UNKNOWN_STATUSES: usize = 8;
/// Ids of quiet events (repeat, stale) remembered per job.
pub const MAX_QUIET_EVENT_IDS: usize = 32;

/// What one event amounted to.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A new transition: deliver it.
    Transition(Transition),
    /// The same record read again after a crash: deliver this (identical)
    /// transition again.
    Replayed(Transition),
    /// Twilio sent this event id before.
    Duplicate,
    /// The job is already at this status.
    Repeat,
    /// The event would move the job backwards, or past a terminal status.
    Stale,
}

impl Verdict {
    /// The transition to deliver, if any.
    pub fn transition(&self) -> Option<&Transition> {
        match self {
            Verdict::Transition(t) | Verdict::Replayed(t) => Some(t),
            _ => None,
        }
    }

    pub fn into_transition(self) -> Option<Transition> {
        match self {
            Verdict::Transition(t) | Verdict::Replayed(t) => Some(t),
            _ => None,
        }
    }

    /// A stable label for metrics and `bulkwatch decode`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Transition(_) => "transition",
            Verdict::Replayed(_) => "replayed",
            Verdict::Duplicate => "duplicate",
            Verdict::Repeat => "repeat",
            Verdict::Stale => "stale",
        }
    }
}

/// The pure form: the verdict, and the new state if it changed.
pub fn apply(
    state: Option<&JobState>,
    event: &BulkJobEvent,
    origin: &Origin,
    now: OffsetDateTime,
    terminal_ttl: Duration,
) -> (Verdict, Option<JobState>) {
    let mut state = state.cloned();
    let (verdict, changed) = step(&mut state, event, origin, now, terminal_ttl);
    (verdict, if changed { state } else { None })
}

/// [`apply`] in place, for folding a batch without cloning the state per
/// event. Returns whether the state changed (and so must be written).
pub(crate) fn step(
    state: &mut Option<JobState>,
    event: &BulkJobEvent,
    origin: &Origin,
    now: OffsetDateTime,
    terminal_ttl: Duration,
) -> (Verdict, bool) {
    let Some(st) = state else {
        let t = Transition::new(event, origin, None);
        *state = Some(first_state(&t, event, now, terminal_ttl));
        return (Verdict::Transition(t), true);
    };

    if let Some(entry) = st.history.iter().find(|h| h.event_id == event.id) {
        let same_record =
            entry.shard_id == *origin.shard_id && entry.sequence_number == origin.sequence_number;
        return if same_record {
            (
                Verdict::Replayed(Transition::replay(entry, event, origin)),
                false,
            )
        } else {
            (Verdict::Duplicate, false)
        };
    }
    if st.quiet_event_ids.iter().any(|id| *id == event.id) {
        return (Verdict::Duplicate, false);
    }

    match decide(st, event) {
        Decision::Emit => {
            let t = Transition::new(event, origin, Some(st.status.clone()));
            record(st, &t, event, now, terminal_ttl);
            (Verdict::Transition(t), true)
        }
        Decision::Repeat => {
            if event.time >= st.snapshot_event_time {
                st.snapshot = JobSnapshot::from_data(&event.data);
                st.snapshot_event_id.clone_from(&event.id);
                st.snapshot_event_time = event.time;
            }
            remember_quiet(st, event, now);
            (Verdict::Repeat, true)
        }
        Decision::Stale => {
            tracing::debug!(job_sid = %event.data.job_sid, event_id = %event.id, status = %event.data.status, stored = %st.status, stream = %origin.stream, shard = %origin.shard_id, sequence_number = %origin.sequence_number, "stale job event dropped");
            remember_quiet(st, event, now);
            (Verdict::Stale, true)
        }
    }
}

enum Decision {
    Emit,
    Repeat,
    Stale,
}

fn decide(st: &JobState, event: &BulkJobEvent) -> Decision {
    let status = &event.data.status;
    let Some(rank) = status.rank() else {
        // Unknown status.
        if st.is_terminal() {
            return Decision::Stale;
        }
        if st.history.iter().any(|h| h.status == *status) {
            return Decision::Repeat;
        }
        let unknown = st.history.iter().filter(|h| !h.status.is_known()).count();
        return if unknown >= MAX_UNKNOWN_STATUSES {
            Decision::Stale
        } else {
            Decision::Emit
        };
    };
    let Some(current) = st.rank() else {
        return Decision::Emit;
    };
    if st.is_terminal() {
        return if st.known_status.as_ref() == Some(status) {
            Decision::Repeat
        } else {
            Decision::Stale
        };
    }
    match rank.cmp(&current) {
        std::cmp::Ordering::Greater => Decision::Emit,
        std::cmp::Ordering::Equal => Decision::Repeat,
        std::cmp::Ordering::Less => Decision::Stale,
    }
}

fn first_state(
    t: &Transition,
    event: &BulkJobEvent,
    now: OffsetDateTime,
    terminal_ttl: Duration,
) -> JobState {
    let mut st = JobState {
        job_sid: t.job_sid.clone(),
        status: t.status.clone(),
        known_status: None,
        snapshot: t.job.clone(),
        snapshot_event_id: event.id.clone(),
        snapshot_event_time: event.time,
        history: Vec::new(),
        quiet_event_ids: Default::default(),
        updated_at: now,
        expires_at: None,
    };
    record(&mut st, t, event, now, terminal_ttl);
    st
}

fn record(
    st: &mut JobState,
    t: &Transition,
    event: &BulkJobEvent,
    now: OffsetDateTime,
    terminal_ttl: Duration,
) {
    st.history.push(HistoryEntry::of(t, now));
    st.status = t.status.clone();
    if t.status_known {
        st.known_status = Some(t.status.clone());
    }
    // An emitted status is the newest lifecycle step: its snapshot wins
    // whatever the event times say.
    st.snapshot = t.job.clone();
    st.snapshot_event_id.clone_from(&event.id);
    st.snapshot_event_time = event.time;
    st.updated_at = now;
    if t.terminal {
        st.expires_at =
            Some(now.saturating_add(
                time::Duration::try_from(terminal_ttl).unwrap_or(time::Duration::MAX),
            ));
    }
}

fn remember_quiet(st: &mut JobState, event: &BulkJobEvent, now: OffsetDateTime) {
    st.quiet_event_ids.push_back(event.id.clone());
    while st.quiet_event_ids.len() > MAX_QUIET_EVENT_IDS {
        st.quiet_event_ids.pop_front();
    }
    st.updated_at = now;
}
