//! The track stage: job state and the decision whether an event is a
//! transition.

/// The durable state kept for one job (fields to be completed by the track
/// stage).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobState {
    pub job_sid: String,
}

impl JobState {
    /// When the store may forget this state (terminal jobs expire after a
    /// TTL). Placeholder until the track stage defines the TTL rule; the
    /// store only relies on this signature.
    pub fn expires_at(&self) -> Option<time::OffsetDateTime> {
        None
    }
}
