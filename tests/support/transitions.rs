//! What the worker printed: one transition per stdout line, and the ways
//! the tests compare it with what they expected.
//!
//! Only the fields the contract promises from the first version on are
//! read (`transition_id`, `job_sid`, `previous_status`, `status`, and
//! `origin.{shard_id, sequence_number}`); anything else the line carries is
//! kept as text for messages and otherwise ignored.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A transition as the tests identify it: which job moved from what to
/// what. Two deliveries of the same transition have the same key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub job_sid: String,
    pub previous_status: Option<String>,
    pub status: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} -> {}",
            self.job_sid,
            self.previous_status.as_deref().unwrap_or("(first)"),
            self.status
        )
    }
}

/// One stdout line of the worker, parsed.
#[derive(Debug, Clone)]
pub struct Seen {
    pub key: Key,
    pub transition_id: String,
    pub shard_id: String,
    pub sequence_number: String,
    /// The line as printed.
    pub line: String,
}

impl Seen {
    pub fn parse(line: &str) -> Result<Seen, String> {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
        let text = |path: &[&str]| -> Result<String, String> {
            let mut cur = &v;
            for p in path {
                cur = &cur[*p];
            }
            cur.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("`{}` is not a string", path.join(".")))
        };
        let previous_status = match v.get("previous_status") {
            None => {
                return Err(
                    "`previous_status` is missing (it must be null for a first transition)".into(),
                );
            }
            Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(format!(
                    "`previous_status` is {other}, not a string or null"
                ));
            }
        };
        Ok(Seen {
            key: Key {
                job_sid: text(&["job_sid"])?,
                previous_status,
                status: text(&["status"])?,
            },
            transition_id: text(&["transition_id"])?,
            shard_id: text(&["origin", "shard_id"])?,
            sequence_number: text(&["origin", "sequence_number"])?,
            line: line.to_owned(),
        })
    }
}

/// The distinct keys among these transitions.
pub fn keys<'a>(seen: impl IntoIterator<Item = &'a Seen>) -> BTreeSet<Key> {
    seen.into_iter().map(|s| s.key.clone()).collect()
}

/// Compares two Kinesis sequence numbers: decimal integers of up to 128
/// bits, too long for u128 in general, sent as strings. A longer one is
/// larger (they have no leading zeros); equal lengths compare as text.
pub fn cmp_sequence(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Panics unless `got` is exactly `want`, listing what is missing and what
/// is unexpected (the first few of each; these sets can be thousands).
pub fn assert_same_keys(what: &str, got: &BTreeSet<Key>, want: &BTreeSet<Key>) {
    let missing: Vec<&Key> = want.difference(got).collect();
    let extra: Vec<&Key> = got.difference(want).collect();
    if missing.is_empty() && extra.is_empty() {
        return;
    }
    panic!(
        "{what}: expected {} distinct transitions, got {}.\n{}{}",
        want.len(),
        got.len(),
        listing("missing", &missing),
        listing("unexpected", &extra),
    );
}

/// A short listing for an assertion message.
pub fn listing(label: &str, keys: &[&Key]) -> String {
    if keys.is_empty() {
        return String::new();
    }
    const SHOWN: usize = 15;
    let mut s = format!("  {} {label}:\n", keys.len());
    for k in keys.iter().take(SHOWN) {
        s.push_str(&format!("    {k}\n"));
    }
    if keys.len() > SHOWN {
        s.push_str(&format!("    ... and {} more\n", keys.len() - SHOWN));
    }
    s
}

/// Redelivery must carry the same `transition_id` (consumers deduplicate on
/// it): panics if one key was printed with two different ids.
pub fn assert_stable_ids<'a>(seen: impl IntoIterator<Item = &'a Seen>) {
    let mut ids: BTreeMap<&Key, &str> = BTreeMap::new();
    for s in seen {
        match ids.get(&s.key) {
            Some(id) if *id != s.transition_id => panic!(
                "transition {} was delivered with two different transition_ids, {id} and {}",
                s.key, s.transition_id
            ),
            Some(_) => {}
            None => {
                ids.insert(&s.key, &s.transition_id);
            }
        }
    }
}

/// The highest sequence number each shard emitted a transition from.
pub fn highest_sequence_per_shard<'a>(
    seen: impl IntoIterator<Item = &'a Seen>,
) -> BTreeMap<String, String> {
    let mut high: BTreeMap<String, String> = BTreeMap::new();
    for s in seen {
        let entry = high
            .entry(s.shard_id.clone())
            .or_insert_with(|| s.sequence_number.clone());
        if cmp_sequence(&s.sequence_number, entry) == Ordering::Greater {
            *entry = s.sequence_number.clone();
        }
    }
    high
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_big_integers() {
        assert_eq!(cmp_sequence("9", "10"), Ordering::Less);
        assert_eq!(
            cmp_sequence(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692540925702759324208523137515618"
            ),
            Ordering::Less
        );
        assert_eq!(cmp_sequence("123", "123"), Ordering::Equal);
    }

    #[test]
    fn a_line_parses_into_its_key() {
        let s = Seen::parse(
            r#"{"transition_id":"t1","job_sid":"JW1","previous_status":null,"status":"CREATED",
                "origin":{"stream":"s","shard_id":"shardId-000000000000","sequence_number":"42","arrival":null}}"#,
        )
        .unwrap();
        assert_eq!(s.key.previous_status, None);
        assert_eq!(s.key.status, "CREATED");
        assert!(Seen::parse(r#"{"job_sid":"JW1","status":"CREATED"}"#).is_err());
    }
}
