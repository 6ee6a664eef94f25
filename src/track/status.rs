//! Job statuses and their lifecycle rank.
//!
//! Twilio documents two lists that overlap: the event doc (CREATED, QUEUED,
//! PROCESSING, COMPLETED, FAILED, CANCELED) and the Lookup v2 API spec
//! (CREATED, FILE_RECEIVED, QUEUED, IN_PROGRESS, STOP_REQUESTED, COMPLETED,
//! FAILED, STOPPED). We handle their union and rank it:
//!
//! | rank | statuses                                  |
//! |------|-------------------------------------------|
//! | 0    | CREATED                                   |
//! | 1    | FILE_RECEIVED                             |
//! | 2    | QUEUED                                    |
//! | 3    | PROCESSING, IN_PROGRESS (the same step)   |
//! | 4    | STOP_REQUESTED                            |
//! | 5    | COMPLETED, FAILED, CANCELED, STOPPED (terminal, final) |
//!
//! A status in neither list is kept verbatim as [`JobStatus::Unknown`]; it
//! has no rank (see `track::apply` for how it is ordered).

use std::fmt;

/// A bulk job's status, parsed at the boundary.
///
/// Serializes as Twilio's string. Parsing is ASCII case-insensitive for the
/// known names (normalized to upper case) because a casing change on
/// Twilio's side must not turn COMPLETED into an "unknown" status that can
/// never finish a job. Unknown strings are kept exactly as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Created,
    FileReceived,
    Queued,
    Processing,
    InProgress,
    StopRequested,
    Completed,
    Failed,
    Canceled,
    Stopped,
    /// A status in neither of Twilio's lists, as received.
    Unknown(String),
}

/// The rank of terminal statuses.
pub const TERMINAL_RANK: u8 = 5;

const KNOWN: [(&str, JobStatus); 10] = [
    ("CREATED", JobStatus::Created),
    ("FILE_RECEIVED", JobStatus::FileReceived),
    ("QUEUED", JobStatus::Queued),
    ("PROCESSING", JobStatus::Processing),
    ("IN_PROGRESS", JobStatus::InProgress),
    ("STOP_REQUESTED", JobStatus::StopRequested),
    ("COMPLETED", JobStatus::Completed),
    ("FAILED", JobStatus::Failed),
    ("CANCELED", JobStatus::Canceled),
    ("STOPPED", JobStatus::Stopped),
];

impl JobStatus {
    /// Every known status, in rank order.
    pub fn known() -> impl Iterator<Item = JobStatus> {
        KNOWN.iter().map(|(_, s)| s.clone())
    }

    /// Parses Twilio's string; never fails (unknown strings are kept).
    pub fn parse(s: &str) -> JobStatus {
        KNOWN
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, status)| status.clone())
            .unwrap_or_else(|| JobStatus::Unknown(s.to_owned()))
    }

    /// Twilio's string for this status.
    pub fn as_str(&self) -> &str {
        match self {
            JobStatus::Created => "CREATED",
            JobStatus::FileReceived => "FILE_RECEIVED",
            JobStatus::Queued => "QUEUED",
            JobStatus::Processing => "PROCESSING",
            JobStatus::InProgress => "IN_PROGRESS",
            JobStatus::StopRequested => "STOP_REQUESTED",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
            JobStatus::Canceled => "CANCELED",
            JobStatus::Stopped => "STOPPED",
            JobStatus::Unknown(s) => s,
        }
    }

    /// The lifecycle rank; `None` for an unknown status.
    pub fn rank(&self) -> Option<u8> {
        Some(match self {
            JobStatus::Created => 0,
            JobStatus::FileReceived => 1,
            JobStatus::Queued => 2,
            JobStatus::Processing | JobStatus::InProgress => 3,
            JobStatus::StopRequested => 4,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled | JobStatus::Stopped => {
                TERMINAL_RANK
            }
            JobStatus::Unknown(_) => return None,
        })
    }

    pub fn is_known(&self) -> bool {
        !matches!(self, JobStatus::Unknown(_))
    }

    /// COMPLETED, FAILED, CANCELED or STOPPED: nothing follows them.
    pub fn is_terminal(&self) -> bool {
        self.rank() == Some(TERMINAL_RANK)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for JobStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for JobStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = JobStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a job status string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<JobStatus, E> {
                Ok(JobStatus::parse(v))
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_the_documented_lifecycle() {
        let order = [
            JobStatus::Created,
            JobStatus::FileReceived,
            JobStatus::Queued,
            JobStatus::Processing,
            JobStatus::StopRequested,
            JobStatus::Completed,
        ];
        for pair in order.windows(2) {
            assert!(pair[0].rank() < pair[1].rank(), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(JobStatus::Processing.rank(), JobStatus::InProgress.rank());
        for t in [
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Canceled,
            JobStatus::Stopped,
        ] {
            assert!(t.is_terminal());
            assert_eq!(t.rank(), Some(TERMINAL_RANK));
        }
        assert!(!JobStatus::StopRequested.is_terminal());
    }

    #[test]
    fn parse_round_trips_every_known_status() {
        for s in JobStatus::known() {
            assert_eq!(JobStatus::parse(s.as_str()), s);
            assert!(s.is_known());
        }
        assert_eq!(JobStatus::known().count(), 10);
    }

    #[test]
    fn parse_is_case_insensitive_for_known_names_only() {
        assert_eq!(JobStatus::parse("completed"), JobStatus::Completed);
        assert_eq!(JobStatus::parse("In_Progress"), JobStatus::InProgress);
        let u = JobStatus::parse("Paused");
        assert_eq!(u, JobStatus::Unknown("Paused".into()));
        assert_eq!(u.as_str(), "Paused");
        assert_eq!(u.rank(), None);
        assert!(!u.is_terminal());
    }

    #[test]
    fn serde_uses_twilio_strings() {
        assert_eq!(
            serde_json::to_string(&JobStatus::FileReceived).unwrap(),
            "\"FILE_RECEIVED\""
        );
        let back: JobStatus = serde_json::from_str("\"ARCHIVED\"").unwrap();
        assert_eq!(back, JobStatus::Unknown("ARCHIVED".into()));
        let back: JobStatus = serde_json::from_str("\"STOP_REQUESTED\"").unwrap();
        assert_eq!(back, JobStatus::StopRequested);
    }
}
