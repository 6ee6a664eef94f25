//! Timestamp parsing for the envelope's `time` and the job's own dates.
//!
//! CloudEvents says RFC 3339 and Twilio's examples use it
//! (`2025-01-01T00:00:00.000Z`); the event doc says "ISO 8601", so we also
//! take the ISO 8601 forms the `time` crate parses, and an ISO 8601 date-time
//! without an offset is read as UTC. Every result is normalized to UTC so
//! that equal instants serialize equally.

use time::format_description::well_known::{Iso8601, Rfc3339};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Parses a timestamp, or `None` if it is not one we accept.
pub fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    // Rfc3339 first: it is the common case and the cheapest parser.
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.to_offset(UtcOffset::UTC));
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Iso8601::DEFAULT) {
        return Some(t.to_offset(UtcOffset::UTC));
    }
    PrimitiveDateTime::parse(s, &Iso8601::DEFAULT)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn accepts_rfc3339_iso8601_and_offsetless_as_utc() {
        let want = datetime!(2025-01-01 00:01:00 UTC);
        assert_eq!(parse_timestamp("2025-01-01T00:01:00.000Z"), Some(want));
        assert_eq!(parse_timestamp("2025-01-01T01:01:00+01:00"), Some(want));
        assert_eq!(parse_timestamp("2025-01-01T00:01:00"), Some(want));
        assert_eq!(
            parse_timestamp("2025-01-01T01:01:00+01:00")
                .unwrap()
                .offset(),
            UtcOffset::UTC
        );
    }

    #[test]
    fn rejects_non_timestamps() {
        for s in [
            "",
            "yesterday",
            "2025-13-01T00:00:00Z",
            "application/json",
            "2025-01-01",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
    }
}
