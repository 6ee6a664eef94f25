//! The track stage: job state and the decision whether an event is a
//! transition.
// TEMPORARY stand-in until the full track stage lands.

use std::sync::Arc;

use crate::decode::BulkJobEvent;
use crate::source::Origin;
use crate::store::{JobStore, JobUpdate, StoreError};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobState {
    pub job_sid: String,
    pub status: String,
}
impl JobState {
    pub fn expires_at(&self) -> Option<time::OffsetDateTime> {
        None
    }
}
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Transition {
    pub transition_id: String,
    pub job_sid: String,
    pub previous_status: Option<String>,
    pub status: String,
    pub friendly_name: Option<String>,
    pub origin: Origin,
}
impl Transition {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "COMPLETED" | "FAILED" | "CANCELED" | "STOPPED")
    }
}
pub enum Verdict {
    Transition(Transition),
    Replayed(Transition),
    Duplicate,
    Repeat,
    Stale,
}
impl Verdict {
    pub fn transition(&self) -> Option<&Transition> {
        match self {
            Verdict::Transition(t) | Verdict::Replayed(t) => Some(t),
            _ => None,
        }
    }
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
pub struct Tracker {
    store: Arc<dyn JobStore>,
}
impl Tracker {
    pub fn new(store: Arc<dyn JobStore>, _ttl: std::time::Duration) -> Self {
        Self { store }
    }
    pub async fn track(&self, events: &[(BulkJobEvent, Origin)]) -> Result<Vec<Verdict>, StoreError> {
        let mut out = Vec::new();
        for (e, o) in events {
            let cur = self.store.load_jobs(&[e.job_sid()]).await?;
            let prev = cur.get(e.job_sid());
            if prev.map(|p| p.value.status == e.status).unwrap_or(false) {
                out.push(Verdict::Repeat);
                continue;
            }
            self.store.save_jobs(&[JobUpdate { state: JobState { job_sid: e.job_sid.clone(), status: e.status.clone() }, expected_version: prev.map(|p| p.version) }]).await?;
            out.push(Verdict::Transition(Transition { transition_id: format!("{}:{}", e.job_sid, e.status), job_sid: e.job_sid.clone(), previous_status: prev.map(|p| p.value.status.clone()), status: e.status.clone(), friendly_name: None, origin: o.clone() }));
        }
        Ok(out)
    }
}
