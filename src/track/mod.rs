//! The track stage: job state and the decision whether an event is a
//! transition.

/// The durable state kept for one job (fields to be completed by the track
/// stage).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobState {
    pub job_sid: String,
}
