//! The track stage: job state and the decision whether an event is a
//! transition.

/// The durable state kept for one job (fields to be completed by the track
/// stage).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobState {
    pub job_sid: String,
}

// TEMPORARY: replaced by the track stage. The output stage codes against only
// these fields, serde and `is_terminal`, which the real type guarantees.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transition {
    pub transition_id: String,
    pub job_sid: String,
    pub status: String,
    pub friendly_name: Option<String>,
}

// TEMPORARY: replaced by the track stage.
impl Transition {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "COMPLETED" | "FAILED" | "CANCELED" | "STOPPED"
        )
    }
}
