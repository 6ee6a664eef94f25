//! The transition record: the public contract every output receives.
//! Documented field by field in `docs/transition-record.md`; the JSON field
//! names are stable.

use time::OffsetDateTime;
use uuid::Uuid;

use super::JobStatus;
use super::state::HistoryEntry;
use crate::decode::error_codes;
use crate::decode::{BulkJobData, BulkJobEvent, JobResult, Thresholds, TimeSource};
use crate::source::Origin;

/// The UUIDv5 namespace of bulkwatch transition ids. Fixed forever: changing
/// it would change every id and break consumers' deduplication.
pub const TRANSITION_NAMESPACE: Uuid = Uuid::from_u128(0xebb7_2394_089d_4f4a_9b17_4745_f400_9fd9);

/// The deterministic id of "job `job_sid` reached `status`".
///
/// A job reaches each status at most once, so this names the transition
/// itself: a redelivery, a replay after a crash, or another worker deciding
/// the same thing all produce the same id.
pub fn transition_id(job_sid: &str, status: &JobStatus) -> Uuid {
    // Length-prefixed so that no (sid, status) pair can collide with another
    // by moving a separator character between the two.
    let name = format!("{}:{}:{}", job_sid.len(), job_sid, status.as_str());
    Uuid::new_v5(&TRANSITION_NAMESPACE, name.as_bytes())
}

/// One job status transition.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transition {
    /// UUIDv5 of job_sid + status; see [`transition_id`].
    pub transition_id: Uuid,
    pub job_sid: String,
    /// The status of the previous transition of this job; null the first
    /// time bulkwatch sees the job.
    pub previous_status: Option<JobStatus>,
    pub status: JobStatus,
    /// False for a status in neither of Twilio's lists.
    pub status_known: bool,
    /// COMPLETED, FAILED, CANCELED or STOPPED.
    pub terminal: bool,
    /// The CloudEvent id of the event that caused this transition.
    pub event_id: String,
    /// The CloudEvent source.
    pub event_source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub event_time: OffsetDateTime,
    pub event_time_source: TimeSource,
    pub dataschema: Option<String>,
    pub job: JobSnapshot,
    /// The Kinesis record that carried the event.
    pub origin: Origin,
}

impl Transition {
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// A minimal transition with a real id and an empty snapshot, for tests
    /// and examples of code that consumes transitions (outputs, receivers).
    pub fn sample(job_sid: &str, status: &str, friendly_name: Option<&str>) -> Transition {
        let status = JobStatus::parse(status);
        Transition {
            transition_id: transition_id(job_sid, &status),
            job_sid: job_sid.to_owned(),
            previous_status: None,
            status_known: status.is_known(),
            terminal: status.is_terminal(),
            status,
            event_id: format!("NO-sample-{job_sid}"),
            event_source: "sample".to_owned(),
            event_time: OffsetDateTime::UNIX_EPOCH,
            event_time_source: TimeSource::Event,
            dataschema: None,
            job: JobSnapshot {
                friendly_name: friendly_name.map(str::to_owned),
                description: None,
                created_at: None,
                completed_at: None,
                thresholds: None,
                result: None,
                twilio_error_code: None,
                twilio_error_message: None,
            },
            origin: Origin {
                stream: "sample".into(),
                shard_id: "shardId-000000000000".into(),
                sequence_number: "1".to_owned(),
                arrival: None,
            },
        }
    }

    /// The transition `event` causes when the job was last at `previous`.
    pub(crate) fn new(
        event: &BulkJobEvent,
        origin: &Origin,
        previous_status: Option<JobStatus>,
    ) -> Transition {
        Transition::build(
            event,
            origin,
            previous_status,
            event.time,
            event.time_source,
        )
    }

    /// The very transition recorded in `entry`, rebuilt from the same record
    /// read again. The record's bytes are the same, so its snapshot is too;
    /// the id, the previous status and the time come from the entry (the
    /// time in case it had fallen back to the clock).
    pub(crate) fn replay(
        entry: &HistoryEntry,
        event: &BulkJobEvent,
        origin: &Origin,
    ) -> Transition {
        let mut t = Transition::build(
            event,
            origin,
            entry.previous_status.clone(),
            entry.event_time,
            entry.event_time_source,
        );
        t.transition_id = entry.transition_id;
        t
    }

    fn build(
        event: &BulkJobEvent,
        origin: &Origin,
        previous_status: Option<JobStatus>,
        event_time: OffsetDateTime,
        event_time_source: TimeSource,
    ) -> Transition {
        let status = event.data.status.clone();
        Transition {
            transition_id: transition_id(&event.data.job_sid, &status),
            job_sid: event.data.job_sid.clone(),
            previous_status,
            status_known: status.is_known(),
            terminal: status.is_terminal(),
            status,
            event_id: event.id.clone(),
            event_source: event.source.clone(),
            event_time,
            event_time_source,
            dataschema: event.dataschema.clone(),
            job: JobSnapshot::from_data(&event.data),
            origin: origin.clone(),
        }
    }
}

/// The job as the event described it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobSnapshot {
    pub friendly_name: Option<String>,
    pub description: Option<String>,
    #[serde(with = "super::state::rfc3339_option")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(with = "super::state::rfc3339_option")]
    pub completed_at: Option<OffsetDateTime>,
    pub thresholds: Option<Thresholds>,
    pub result: Option<JobResult>,
    pub twilio_error_code: Option<i64>,
    /// Twilio's meaning of `twilio_error_code`, when bulkwatch knows it.
    pub twilio_error_message: Option<String>,
}

impl JobSnapshot {
    pub fn from_data(data: &BulkJobData) -> JobSnapshot {
        JobSnapshot {
            friendly_name: data.friendly_name.clone(),
            description: data.description.clone(),
            created_at: data.created_at,
            completed_at: data.completed_at,
            thresholds: data.thresholds.clone(),
            result: data.result.clone(),
            twilio_error_code: data.twilio_error_code,
            twilio_error_message: data
                .twilio_error_code
                .and_then(error_codes::meaning)
                .map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_id_is_deterministic_and_distinct() {
        let a = transition_id("JW1", &JobStatus::Queued);
        assert_eq!(a, transition_id("JW1", &JobStatus::Queued));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, transition_id("JW1", &JobStatus::Completed));
        assert_ne!(a, transition_id("JW2", &JobStatus::Queued));
        // No separator games.
        assert_ne!(
            transition_id("A:B", &JobStatus::Unknown("C".into())),
            transition_id("A", &JobStatus::Unknown("B:C".into()))
        );
    }

    #[test]
    fn transition_id_is_pinned() {
        // Consumers deduplicate on this id across bulkwatch versions: it must
        // never change. If this fails, the namespace or the name changed.
        assert_eq!(
            transition_id("JW0000000000000000000000000000001", &JobStatus::Completed).to_string(),
            PINNED_COMPLETED_ID
        );
    }

    const PINNED_COMPLETED_ID: &str = "6834a8c1-7ed0-5ed7-acce-7a6683d1e229";
}
