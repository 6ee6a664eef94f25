//! The durable state kept for one job.

use std::collections::VecDeque;

use time::OffsetDateTime;
use uuid::Uuid;

use super::JobStatus;
use super::transition::{JobSnapshot, Transition};
use crate::decode::TimeSource;

/// What bulkwatch remembers about one job, stored under its `job_sid` and
/// updated with compare-and-set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobState {
    pub job_sid: String,
    /// The status of the last transition emitted (known or not): the next
    /// transition's `previous_status`.
    pub status: JobStatus,
    /// The last known status emitted: the job's lifecycle rank. An unknown
    /// status never changes it. `None` while only unknown statuses were seen.
    pub known_status: Option<JobStatus>,
    /// The newest job snapshot: from the last transition, or from a later
    /// repeat of the same status (see `track::apply`).
    pub snapshot: JobSnapshot,
    pub snapshot_event_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub snapshot_event_time: OffsetDateTime,
    /// Every transition emitted for this job, oldest first. Bounded: each
    /// known rank appears at most once and unknown statuses are capped
    /// (`apply::MAX_UNKNOWN_STATUSES`).
    pub history: Vec<HistoryEntry>,
    /// Ids of recent events that emitted nothing (repeats, stale), so that
    /// their Twilio duplicates count as duplicates. Bounded, oldest dropped.
    pub quiet_event_ids: VecDeque<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Set when the job becomes terminal (now + terminal TTL); stores drop
    /// the state after it.
    #[serde(with = "rfc3339_option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// One emitted transition, with the record that caused it. Enough to
/// re-emit the same transition if that record is read again after a crash
/// (see `track::apply`), and for `bulkwatch jobs --history`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryEntry {
    pub transition_id: Uuid,
    pub event_id: String,
    pub previous_status: Option<JobStatus>,
    pub status: JobStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub event_time: OffsetDateTime,
    pub event_time_source: TimeSource,
    pub shard_id: String,
    pub sequence_number: String,
    /// When bulkwatch decided it.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

impl HistoryEntry {
    pub(crate) fn of(t: &Transition, now: OffsetDateTime) -> HistoryEntry {
        HistoryEntry {
            transition_id: t.transition_id,
            event_id: t.event_id.clone(),
            previous_status: t.previous_status.clone(),
            status: t.status.clone(),
            event_time: t.event_time,
            event_time_source: t.event_time_source,
            shard_id: t.origin.shard_id.to_string(),
            sequence_number: t.origin.sequence_number.clone(),
            recorded_at: now,
        }
    }
}

impl JobState {
    /// A job first seen at CREATED with an empty snapshot and no history:
    /// for tests of code that stores job states without reading them.
    pub fn sample(job_sid: &str) -> JobState {
        JobState {
            job_sid: job_sid.to_owned(),
            status: JobStatus::Created,
            known_status: Some(JobStatus::Created),
            snapshot: JobSnapshot::default(),
            snapshot_event_id: String::new(),
            snapshot_event_time: OffsetDateTime::UNIX_EPOCH,
            history: Vec::new(),
            quiet_event_ids: VecDeque::new(),
            updated_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: None,
        }
    }

    /// When the store may forget this job (`None`: keep it).
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.expires_at
    }

    /// Whether the job reached a terminal status.
    pub fn is_terminal(&self) -> bool {
        self.known_status
            .as_ref()
            .is_some_and(JobStatus::is_terminal)
    }

    /// The lifecycle rank of the job (`None`: only unknown statuses so far).
    pub fn rank(&self) -> Option<u8> {
        self.known_status.as_ref().and_then(JobStatus::rank)
    }
}

/// `Option<OffsetDateTime>` as an RFC 3339 string or null, like
/// `time::serde::rfc3339::option`, but read without `deserialize_any`
/// (which `time`'s own reader uses): the embedded store keeps job state in
/// postcard, which is not self-describing and cannot serve it.
pub(crate) mod rfc3339_option {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    #[derive(Deserialize)]
    struct Rfc3339(#[serde(with = "time::serde::rfc3339")] OffsetDateTime);

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::option::serialize(value, serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        Ok(Option::<Rfc3339>::deserialize(deserializer)?.map(|t| t.0))
    }
}
