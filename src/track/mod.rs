//! The track stage: job state and the decision whether an event is a
//! transition.
//!
//! - [`status`]: the statuses and their lifecycle rank.
//! - [`apply`]: the pure decision (duplicate, repeat, stale, transition,
//!   replayed) and its rules.
//! - [`state`]: what is stored per job.
//! - [`transition`]: the public transition record.
//! - [`tracker`]: batches, the store and compare-and-set retries.

pub mod apply;
pub mod state;
pub mod status;
pub mod tracker;
pub mod transition;

#[cfg(test)]
mod tests;

pub use apply::{Verdict, apply};
pub use state::{HistoryEntry, JobState};
pub use status::JobStatus;
pub use tracker::{DEFAULT_TERMINAL_TTL, Tracker};
pub use transition::{JobSnapshot, Transition, transition_id};
