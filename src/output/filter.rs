//! Per-output filters: which transitions an output takes.

use std::collections::HashSet;

use anyhow::Context;

use super::config::FilterConfig;
use crate::track::Transition;

/// A compiled [`FilterConfig`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    statuses: Option<HashSet<String>>,
    terminal_only: bool,
    // regex-lite rather than regex: it is already in the dependency tree (the
    // AWS SDK uses it), is kept by the regex maintainers, and a filter on a
    // short name needs none of regex's Unicode tables or speed.
    friendly_name: Option<regex_lite::Regex>,
}

impl Filter {
    pub(crate) fn new(config: &FilterConfig) -> anyhow::Result<Self> {
        // The rules live with the settings (config validation refuses a bad
        // filter before anything starts); checked again here for callers
        // that build a filter without going through it.
        config.validate().map_err(anyhow::Error::msg)?;
        let statuses = config
            .statuses
            .as_ref()
            .map(|list| list.iter().map(|s| s.trim().to_ascii_uppercase()).collect());
        let friendly_name = config
            .friendly_name_pattern
            .as_deref()
            .map(|p| {
                regex_lite::Regex::new(p).with_context(|| {
                    format!("`friendly_name_pattern = {p:?}` is not a valid regular expression")
                })
            })
            .transpose()?;
        Ok(Self {
            statuses,
            terminal_only: config.terminal_only,
            friendly_name,
        })
    }

    /// True when the output takes this transition.
    pub(crate) fn accepts(&self, t: &Transition) -> bool {
        if self.terminal_only && !t.is_terminal() {
            return false;
        }
        if let Some(statuses) = &self.statuses
            && !statuses.contains(&status_str(t))
        {
            return false;
        }
        if let Some(re) = &self.friendly_name {
            return t
                .job
                .friendly_name
                .as_deref()
                .is_some_and(|n| re.is_match(n));
        }
        true
    }
}

/// The transition's status as Twilio spells it ("COMPLETED"), taken from its
/// serde form so this works whatever Rust type the track stage uses for it.
pub(crate) fn status_str(t: &Transition) -> String {
    match serde_json::to_value(&t.status) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(status: &str, name: Option<&str>) -> Transition {
        super::super::tests::transition("JS1", status, name)
    }

    fn filter(statuses: Option<&[&str]>, terminal_only: bool, pattern: Option<&str>) -> Filter {
        Filter::new(&FilterConfig {
            statuses: statuses.map(|s| s.iter().map(|x| x.to_string()).collect()),
            terminal_only,
            friendly_name_pattern: pattern.map(str::to_owned),
        })
        .unwrap()
    }

    #[test]
    fn no_conditions_accept_everything() {
        let f = filter(None, false, None);
        assert!(f.accepts(&t("QUEUED", None)));
        assert!(f.accepts(&t("SOMETHING_NEW", Some("x"))));
    }

    #[test]
    fn statuses_are_case_insensitive_and_exact() {
        let f = filter(Some(&["completed", " FAILED "]), false, None);
        assert!(f.accepts(&t("COMPLETED", None)));
        assert!(f.accepts(&t("FAILED", None)));
        assert!(!f.accepts(&t("QUEUED", None)));
        assert!(!f.accepts(&t("COMPLETED_X", None)));
    }

    #[test]
    fn terminal_only() {
        let f = filter(None, true, None);
        for s in ["COMPLETED", "FAILED", "CANCELED", "STOPPED"] {
            assert!(f.accepts(&t(s, None)), "{s}");
        }
        for s in [
            "CREATED",
            "QUEUED",
            "IN_PROGRESS",
            "STOP_REQUESTED",
            "NEW_ONE",
        ] {
            assert!(!f.accepts(&t(s, None)), "{s}");
        }
    }

    #[test]
    fn friendly_name_pattern_is_an_unanchored_regex() {
        let f = filter(None, false, Some("^nightly-"));
        assert!(f.accepts(&t("QUEUED", Some("nightly-2024-01-01"))));
        assert!(!f.accepts(&t("QUEUED", Some("adhoc nightly-x"))));
        assert!(
            !f.accepts(&t("QUEUED", None)),
            "no friendly_name never matches"
        );
        let f = filter(None, false, Some("prod"));
        assert!(f.accepts(&t("QUEUED", Some("eu-prod-run"))));
    }

    #[test]
    fn all_conditions_must_hold() {
        let f = filter(Some(&["COMPLETED", "QUEUED"]), true, Some("^a"));
        assert!(f.accepts(&t("COMPLETED", Some("abc"))));
        assert!(!f.accepts(&t("QUEUED", Some("abc"))), "not terminal");
        assert!(!f.accepts(&t("FAILED", Some("abc"))), "not in statuses");
        assert!(!f.accepts(&t("COMPLETED", Some("bcd"))), "name");
    }

    #[test]
    fn bad_filters_are_refused() {
        let empty = FilterConfig {
            statuses: Some(vec![]),
            ..Default::default()
        };
        assert!(Filter::new(&empty).is_err());
        let bad = FilterConfig {
            friendly_name_pattern: Some("(".into()),
            ..Default::default()
        };
        let err = format!("{:#}", Filter::new(&bad).unwrap_err());
        assert!(err.contains("friendly_name_pattern"), "{err}");
    }

    /// A typo such as COMPLETE used to be accepted, and the output then
    /// silently received nothing.
    #[test]
    fn unknown_statuses_are_refused_listing_the_valid_ones() {
        let typo = FilterConfig {
            statuses: Some(vec!["COMPLETE".into()]),
            ..Default::default()
        };
        let err = format!("{:#}", Filter::new(&typo).unwrap_err());
        assert!(err.contains("\"COMPLETE\""), "{err}");
        for valid in [
            "CREATED",
            "FILE_RECEIVED",
            "QUEUED",
            "PROCESSING",
            "IN_PROGRESS",
            "STOP_REQUESTED",
            "COMPLETED",
            "FAILED",
            "CANCELED",
            "STOPPED",
        ] {
            assert!(err.contains(valid), "{valid} missing: {err}");
        }
        // Every known status, in any case and with spaces, is fine.
        let all = FilterConfig {
            statuses: Some(vec![" in_progress ".into(), "Stop_Requested".into()]),
            ..Default::default()
        };
        assert!(Filter::new(&all).is_ok());
    }

    #[test]
    fn terminal_only_with_no_terminal_status_is_refused() {
        let nothing = FilterConfig {
            statuses: Some(vec!["QUEUED".into()]),
            terminal_only: true,
            ..Default::default()
        };
        let err = format!("{:#}", Filter::new(&nothing).unwrap_err());
        assert!(err.contains("terminal_only"), "{err}");
    }
}
