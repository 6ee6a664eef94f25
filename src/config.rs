//! Settings: defaults, then a TOML file (`--config`), then `BULKWATCH_*`
//! environment variables, then command-line flags; each layer wins over the
//! one before it.
//!
//! Every setting has a default except the stream name, so the smallest
//! working setup is `BULKWATCH_STREAM=name bulkwatch run`. AWS settings
//! (region, credentials, endpoint) deliberately do not live here: they come
//! from the standard AWS chain, so the worker behaves like every other AWS
//! tool on ECS, on a laptop and against LocalStack.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::output::{DeadLetterConfig, DeliveryConfig, OutputConfig, OutputsConfig};
use time::format_description::well_known::Rfc3339;

/// Where reading starts in a shard that has no checkpoint yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// The oldest record still retained. The default, because job events
    /// are few and each one matters: a worker started after Twilio began
    /// writing should still see the jobs that were already running, and
    /// reading a day of job events costs next to nothing.
    #[default]
    TrimHorizon,
    /// Only records written after the worker first saw the shard.
    Latest,
    /// Records written at or after this instant.
    AtTimestamp(OffsetDateTime),
}

impl FromStr for StartPosition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "trim-horizon" => return Ok(Self::TrimHorizon),
            "latest" => return Ok(Self::Latest),
            _ => {}
        }
        let lower = s.to_ascii_lowercase();
        if let Some(ts) = lower
            .strip_prefix("at-timestamp=")
            .or_else(|| lower.strip_prefix("at_timestamp="))
        {
            // Parse the original text, not the lowercased copy: RFC 3339
            // requires an upper-case `T` and `Z` in some parsers.
            let original = &s[s.len() - ts.len()..];
            return OffsetDateTime::parse(original, &Rfc3339)
                .map(Self::AtTimestamp)
                .map_err(|e| format!("`{original}` is not an RFC 3339 timestamp ({e})"));
        }
        Err(format!(
            "`{s}` is not a start position: use trim-horizon, latest or at-timestamp=<RFC3339>"
        ))
    }
}

impl fmt::Display for StartPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TrimHorizon => f.write_str("trim-horizon"),
            Self::Latest => f.write_str("latest"),
            Self::AtTimestamp(t) => write!(
                f,
                "at-timestamp={}",
                t.format(&Rfc3339).map_err(|_| fmt::Error)?
            ),
        }
    }
}

impl Serialize for StartPosition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StartPosition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How logs are written (always to stderr; stdout belongs to transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal (ECS, CI), text when it is.
    #[default]
    Auto,
    Json,
    Text,
}

/// GetRecords pacing for each shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// Least time between two GetRecords calls on one shard. Kinesis allows
    /// 5 calls/s per shard, shared by every consumer of the stream, so
    /// 200 ms is the floor.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The longest wait between polls of an idle shard. The wait grows from
    /// `interval` towards it while polls come back empty, and drops back
    /// as soon as a record arrives.
    #[serde(with = "humantime_serde")]
    pub idle_interval: Duration,
    /// A shard that has had no record for this long is dormant: it is
    /// polled every `dormant_interval` instead of every `idle_interval`,
    /// until a record arrives. Every empty GetRecords call costs the same
    /// CPU whatever it returns (about 0.5 ms here), so a fleet of quiet
    /// shards at one call a second each costs more than the records do.
    #[serde(with = "humantime_serde")]
    pub dormant_after: Duration,
    /// The wait between polls of a dormant shard. Set it equal to
    /// `idle_interval` to never go dormant.
    #[serde(with = "humantime_serde")]
    pub dormant_interval: Duration,
    /// Records asked for per GetRecords call (Kinesis allows 1..=10000).
    /// Smaller batches bound the memory in flight per shard.
    pub max_records: i32,
    /// GetRecords batches the whole worker fetches and processes at once,
    /// across all its shards. Bounds the data in flight to about this many
    /// times `max_records` records whatever the shard count, and keeps a
    /// slow Kinesis endpoint from being asked for every shard's batch at
    /// the same instant (see ARCHITECTURE.md, "Batches in flight").
    pub max_batches_in_flight: usize,
    /// How often the shard list is refreshed to find new shards.
    #[serde(with = "humantime_serde")]
    pub shard_sync_interval: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            idle_interval: Duration::from_secs(1),
            // A minute without a record is past any burst of one job's
            // events; a job's next status then waits at most 10 s, where
            // its run takes minutes, and 200 such shards cost a fifth of
            // the calls (and leave the 5 reads/s per shard to the stream's
            // other consumers).
            dormant_after: Duration::from_secs(60),
            dormant_interval: Duration::from_secs(10),
            max_records: 1000,
            max_batches_in_flight: 8,
            shard_sync_interval: Duration::from_secs(10),
        }
    }
}

/// Timeouts for every AWS call. The SDK sets none by default, so a stalled
/// connection would otherwise hang a shard forever.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsTimeouts {
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// One HTTP attempt.
    #[serde(with = "humantime_serde")]
    pub attempt: Duration,
    /// The whole operation, retries included.
    #[serde(with = "humantime_serde")]
    pub operation: Duration,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            attempt: Duration::from_secs(10),
            operation: Duration::from_secs(30),
        }
    }
}

/// Shard leases: how workers share a stream (KCL-style).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// How often held leases are renewed and the lease table is looked at.
    #[serde(with = "humantime_serde")]
    pub renew_interval: Duration,
    /// A lease whose counter has not moved for this long belongs to a dead
    /// worker and may be taken.
    #[serde(with = "humantime_serde")]
    pub failover_time: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            renew_interval: Duration::from_secs(3),
            failover_time: Duration::from_secs(10),
        }
    }
}

/// Which store keeps checkpoints, leases and job state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreType {
    /// A file in `state_dir`; one worker per stream.
    #[default]
    Embedded,
    /// DynamoDB tables shared by a fleet of workers.
    Dynamodb,
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    #[serde(rename = "type")]
    pub kind: StoreType,
    /// DynamoDB: the lease table, KCL-compatible (KCL names it after the
    /// application). Job state goes to `<table>-jobs` unless `job_table`
    /// is set.
    pub table: String,
    pub job_table: Option<String>,
    /// DynamoDB: create missing tables (PAY_PER_REQUEST). When false, the
    /// worker checks they exist and names what is missing.
    pub create_tables: bool,
    /// This worker's name in the lease table; must be unique in the fleet.
    /// Default: `<hostname>-<pid>-<random>` (the embedded store always
    /// uses its own fixed name).
    pub worker_id: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreType::Embedded,
            table: "bulkwatch".to_owned(),
            job_table: None,
            create_tables: true,
            worker_id: None,
        }
    }
}

/// `[ops]`: the health and metrics endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Address of the HTTP endpoint serving `/health/live`, `/health/ready`
    /// and `/metrics`, or `off`. All interfaces by default, so Prometheus
    /// (and ECS's awsvpc networking) can reach it; it serves no secret.
    pub listen: String,
    /// Liveness fails when a loop (a shard's reader and pipeline, an
    /// output, the dead-letter task) is this far past the time it promised
    /// its next sign of life. Waits of known length (backoff, Retry-After)
    /// and waits for another loop (a down output) do not count, so this
    /// only has to cover a step that promises nothing, such as an AWS call
    /// within its operation timeout (30 s).
    #[serde(with = "humantime_serde")]
    pub live_stall: Duration,
    /// Readiness trusts a Kinesis or store success this recent; older, it
    /// asks again (one ListShards / one checkpoint read).
    #[serde(with = "humantime_serde")]
    pub ready_window: Duration,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".to_owned(),
            live_stall: Duration::from_secs(120),
            ready_window: Duration::from_secs(30),
        }
    }
}

impl OpsConfig {
    /// The address to listen on; `None` when the endpoint is `off`.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let v = self.listen.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        v.parse().map(Some).map_err(|_| {
            ConfigError(format!(
                "`ops.listen` = {v:?} is not an address like 0.0.0.0:9090 (or `off`)"
            ))
        })
    }
}

/// The top-level keys of [`Config`], as written in TOML: the environment
/// variables `BULKWATCH_<KEY>` (and `BULKWATCH_<KEY>__<SUBKEY>`) that are
/// read as settings. A test keeps it equal to the struct.
const SETTING_KEYS: &[&str] = &[
    "stream",
    "start_position",
    "state_dir",
    "terminal_ttl",
    "shutdown_grace",
    "log_format",
    "log_level",
    "poll",
    "lease",
    "store",
    "aws_timeouts",
    "output",
    "dead_letter",
    "delivery",
    "ops",
];

/// Whether `rest` (what follows `BULKWATCH_<SECTION>_`) is, or nearly
/// is, a key of that section: BULKWATCH_POLL_INTERVAL is a setting with
/// one underscore too few, BULKWATCH_STORE_SECRET is no setting at all.
/// A section whose default is absent (`dead_letter`) has no known keys
/// here, and any such variable counts.
fn names_a_key_of(section: &str, rest: &str) -> bool {
    static DEFAULTS: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    let defaults = DEFAULTS
        .get_or_init(|| serde_json::to_value(Config::default()).unwrap_or(serde_json::Value::Null));
    match defaults.get(section).and_then(serde_json::Value::as_object) {
        None => true,
        Some(keys) => {
            let rest = rest.to_ascii_lowercase();
            keys.keys()
                .any(|k| *k == rest || strsim::damerau_levenshtein(k, &rest) <= 2)
        }
    }
}

/// Whether `key` (from a variable's name) looks like a misspelling of the
/// setting `setting`: one or two edits away, and long enough that a
/// variable which is no setting at all is not caught by chance.
fn near_miss(setting: &str, key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.len() >= 6 && key != setting && strsim::damerau_levenshtein(setting, &key) <= 2
}

/// The keys of [`SETTING_KEYS`] that are tables (nested with `__`).
const SECTION_KEYS: &[&str] = &[
    "poll",
    "lease",
    "store",
    "aws_timeouts",
    "dead_letter",
    "delivery",
    "ops",
];

/// Every setting of the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Kinesis stream to read (its name).
    pub stream: Option<String>,
    pub start_position: StartPosition,
    /// Where the embedded store keeps checkpoints and job state.
    pub state_dir: PathBuf,
    /// How long the state of a job in a terminal status is kept.
    #[serde(with = "humantime_serde")]
    pub terminal_ttl: Duration,
    /// Time allowed for draining on SIGTERM/SIGINT before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `bulkwatch=debug,aws=warn`.
    pub log_level: String,
    pub poll: PollConfig,
    pub lease: LeaseConfig,
    pub store: StoreConfig,
    pub aws_timeouts: AwsTimeouts,
    /// `[[output]]` tables; none means one stdout output.
    #[serde(rename = "output", skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputConfig>,
    /// `[dead_letter]`; none means `dead-letter.jsonl` in `state_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterConfig>,
    /// `[delivery]`: retry policy and queue sizes of the outputs.
    pub delivery: DeliveryConfig,
    /// `[ops]`: health and metrics endpoint.
    pub ops: OpsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stream: None,
            start_position: StartPosition::default(),
            state_dir: PathBuf::from("bulkwatch-state"),
            terminal_ttl: Duration::from_secs(7 * 24 * 3600),
            shutdown_grace: Duration::from_secs(25),
            log_format: LogFormat::Auto,
            log_level: "info".to_owned(),
            poll: PollConfig::default(),
            lease: LeaseConfig::default(),
            store: StoreConfig::default(),
            aws_timeouts: AwsTimeouts::default(),
            outputs: Vec::new(),
            dead_letter: None,
            delivery: DeliveryConfig::default(),
            ops: OpsConfig::default(),
        }
    }
}

/// A bad setting: its one-line message names the setting and where it came
/// from.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads the layers: defaults, the TOML file, `BULKWATCH_*`, then the
    /// given command-line overrides (only flags the user actually passed).
    pub fn load(file: Option<&Path>, overrides: &impl Serialize) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist or is not a file",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        // `__` separates nesting, e.g. BULKWATCH_POLL__INTERVAL=500ms.
        // Only variables naming a setting are read: the prefix is shared
        // with variables that are not settings (BULKWATCH_CONFIG names the
        // file itself; a webhook's `secret_env` may well be
        // BULKWATCH_WEBHOOK_SECRET), and those must not make the settings
        // invalid. Below a known section, unknown keys are still errors
        // (BULKWATCH_POLL__INTERVL is a typo worth stopping for), and so
        // is a section joined with one underscore instead of two
        // (BULKWATCH_POLL_INTERVAL would otherwise be silently ignored).
        // A near miss of a setting (BULKWATCH_STATE_DIRR) is read too, so
        // that it fails as an unknown key instead of silently leaving the
        // state in the default directory.
        let env = Env::prefixed("BULKWATCH_").split("__").filter(|k| {
            let top = k.as_str().split('.').next().unwrap_or_default();
            SETTING_KEYS.iter().any(|s| {
                s.eq_ignore_ascii_case(top)
                    || (SECTION_KEYS.contains(s)
                        && top.len() > s.len()
                        && top[..s.len()].eq_ignore_ascii_case(s)
                        && top.as_bytes()[s.len()] == b'_'
                        && names_a_key_of(s, &top[s.len() + 1..]))
                    || near_miss(s, top)
            })
        });
        fig = fig.merge(env).merge(Serialized::defaults(overrides));
        let config: Config = fig.extract().map_err(|e| ConfigError(one_line(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The output stage's part of the settings. (Kept as separate fields
    /// here rather than a flattened struct, because serde cannot reject
    /// unknown keys of a struct that flattens another.)
    pub fn outputs_config(&self) -> OutputsConfig {
        OutputsConfig {
            outputs: self.outputs.clone(),
            dead_letter: self.dead_letter.clone(),
            delivery: self.delivery.clone(),
        }
    }

    /// The stream name, which has no default.
    pub fn stream(&self) -> Result<&str, ConfigError> {
        self.stream.as_deref().ok_or_else(|| {
            ConfigError(
                "`stream` is not set: pass --stream, set BULKWATCH_STREAM, or put `stream = \"...\"` in the config file"
                    .to_owned(),
            )
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(s) = &self.stream {
            check_stream_name(s)?;
        }
        if !(1..=10_000).contains(&self.poll.max_records) {
            return Err(ConfigError(format!(
                "`poll.max_records` is {}, but Kinesis allows 1 to 10000",
                self.poll.max_records
            )));
        }
        if self.poll.max_batches_in_flight == 0 {
            return Err(ConfigError(
                "`poll.max_batches_in_flight` must be at least 1".into(),
            ));
        }
        if self.poll.interval < Duration::from_millis(200) {
            return Err(ConfigError(format!(
                "`poll.interval` is {}, below Kinesis' limit of 5 GetRecords calls/s per shard (200ms)",
                humantime::format_duration(self.poll.interval)
            )));
        }
        if self.poll.idle_interval < self.poll.interval {
            return Err(ConfigError(
                "`poll.idle_interval` must not be shorter than `poll.interval`".into(),
            ));
        }
        if self.poll.dormant_interval < self.poll.idle_interval {
            return Err(ConfigError(
                "`poll.dormant_interval` must not be shorter than `poll.idle_interval` (set them equal to never go dormant)".into(),
            ));
        }
        // An iterator lives 5 minutes; a dormant shard must call before its
        // iterator dies, or every poll would first need a new one.
        if self.poll.dormant_interval > Duration::from_secs(240) {
            return Err(ConfigError(format!(
                "`poll.dormant_interval` is {}; at most 4m, so a shard's iterator (valid 5 minutes) does not expire between polls",
                humantime::format_duration(self.poll.dormant_interval)
            )));
        }
        // Zero would make a timer panic or every AWS call time out at once;
        // neither is a setting anyone means.
        for (key, d) in [
            ("poll.shard_sync_interval", self.poll.shard_sync_interval),
            ("lease.renew_interval", self.lease.renew_interval),
            ("aws_timeouts.connect", self.aws_timeouts.connect),
            ("aws_timeouts.operation", self.aws_timeouts.operation),
            ("aws_timeouts.attempt", self.aws_timeouts.attempt),
        ] {
            if d.is_zero() {
                return Err(ConfigError(format!("`{key}` must be more than 0")));
            }
        }
        if self.lease.renew_interval >= self.lease.failover_time {
            return Err(ConfigError(
                "`lease.renew_interval` must be shorter than `lease.failover_time`, or live workers lose their leases".into(),
            ));
        }
        if self.store.table.is_empty() {
            return Err(ConfigError("`store.table` must not be empty".into()));
        }
        if self.aws_timeouts.attempt > self.aws_timeouts.operation {
            return Err(ConfigError(
                "`aws_timeouts.attempt` must not exceed `aws_timeouts.operation`".into(),
            ));
        }
        self.ops.listen_addr()?;
        if self.shutdown_grace.is_zero() {
            return Err(ConfigError(
                "`shutdown_grace` must be more than 0 (ECS waits stopTimeout, 30 s by default, before SIGKILL)".into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| {
            ConfigError(format!(
                "`log_level` = {:?} is not a valid filter: {e}",
                self.log_level
            ))
        })?;
        // `[[output]]`, `[dead_letter]` and `[delivery]`: every check that
        // needs no network, so `config check` refuses what `run` would.
        self.outputs_config().validate().map_err(ConfigError)?;
        Ok(())
    }

    /// The checks that read the environment beyond `BULKWATCH_*`: every
    /// webhook's `secret_env` variable is set. `run` and `config check`
    /// make them (exit 2 like any bad setting); the operator commands do
    /// not, since they deliver nothing and may run where the secrets are not.
    pub fn check_environment(&self) -> Result<(), ConfigError> {
        self.outputs_config().check_secrets().map_err(ConfigError)
    }
}

/// Kinesis' rule for a stream name: 1 to 128 characters of
/// `[a-zA-Z0-9_.-]`. Checked here so that a typo is a clear exit 2 instead of
/// a ValidationException from the first AWS call.
fn check_stream_name(s: &str) -> Result<(), ConfigError> {
    if s.is_empty() || s.len() > 128 {
        return Err(ConfigError(format!(
            "`stream` = {s:?} must be 1 to 128 characters long (it has {})",
            s.chars().count()
        )));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ConfigError(format!(
            "`stream` = {s:?} is not a Kinesis stream name: {c:?} is not allowed (only letters, digits, `_`, `.` and `-`)"
        )));
    }
    Ok(())
}

/// figment's errors can span lines and list several problems; an operator
/// wants one line naming the key and where its value came from.
fn one_line(e: &figment::Error) -> String {
    use figment::error::{Kind, OneOf};
    let mut parts: Vec<String> = Vec::new();
    for err in e.clone() {
        let key = err.path.join(".");
        let mut s = match &err.kind {
            // figment's own wording wraps the list in a second pair of
            // backticks (``expected `one of `a`, `b``'); its path already
            // ends with the unknown key.
            Kind::UnknownField(field, expected) => {
                let key = if key.is_empty() { field.clone() } else { key };
                format!("unknown key `{key}` (expected {})", OneOf(expected))
            }
            Kind::UnknownVariant(value, expected) => {
                format!(
                    "`{key}`: unknown value `{value}` (expected {})",
                    OneOf(expected)
                )
            }
            Kind::Message(msg) => with_key(&key, compact(msg)),
            other => with_key(&key, other.to_string()),
        };
        if let Some(md) = &err.metadata {
            match &md.source {
                Some(src) => s.push_str(&format!(" (from {} {src})", md.name)),
                None => s.push_str(&format!(" (from {})", md.name)),
            }
        }
        parts.push(s);
    }
    parts.join("; ")
}

fn with_key(key: &str, msg: String) -> String {
    if key.is_empty() {
        msg
    } else {
        format!("`{key}`: {msg}")
    }
}

/// One line from a message that may span several. The TOML parser's errors
/// do: a first line naming line and column, a source excerpt with a caret,
/// then the problem. Squashed as they were, the excerpt turned into
/// `  | 2 | [poll   |      ^`; it is left out, and the rest joined:
/// `TOML parse error at line 2, column 6: invalid table header; expected ...`.
fn compact(msg: &str) -> String {
    let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(first) = lines.next() else {
        return String::new();
    };
    let rest: Vec<&str> = lines.filter(|l| !is_excerpt(l)).collect();
    if rest.is_empty() {
        first.to_owned()
    } else {
        format!("{first}: {}", rest.join("; "))
    }
}

/// An excerpt line of a TOML parse error: `|`, `2 | [poll`, `|    ^`.
fn is_excerpt(line: &str) -> bool {
    line.trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start()
        .starts_with('|')
}

#[cfg(test)]
// figment's Jail API returns its own large error type; that is its design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse_and_print_back() {
        for s in [
            "trim-horizon",
            "latest",
            "at-timestamp=2025-01-01T00:00:00Z",
        ] {
            let p: StartPosition = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert_eq!(
            "TRIM_HORIZON".parse::<StartPosition>().unwrap(),
            StartPosition::TrimHorizon
        );
        let err = "yesterday".parse::<StartPosition>().unwrap_err();
        assert!(err.contains("trim-horizon"), "{err}");
        let err = "at-timestamp=soon".parse::<StartPosition>().unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn dormant_pacing_is_checked() {
        let mut c = Config::default();
        assert!(c.validate().is_ok(), "the defaults are valid");
        c.poll.dormant_interval = Duration::from_millis(500);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("poll.dormant_interval"), "{err}");
        c.poll.dormant_interval = Duration::from_secs(300);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("5m") || err.contains("4m"), "{err}");
        // Equal to the idle interval: never dormant, and valid.
        c.poll.dormant_interval = c.poll.idle_interval;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn zero_intervals_and_timeouts_are_refused() {
        // Each used to pass `config check` and then panic (a zero tokio
        // interval) or time every AWS call out in `run`.
        type Set = fn(&mut Config);
        let cases: [(&str, Set); 5] = [
            ("poll.shard_sync_interval", |c| {
                c.poll.shard_sync_interval = Duration::ZERO
            }),
            ("lease.renew_interval", |c| {
                c.lease.renew_interval = Duration::ZERO
            }),
            ("aws_timeouts.connect", |c| {
                c.aws_timeouts.connect = Duration::ZERO
            }),
            ("aws_timeouts.attempt", |c| {
                c.aws_timeouts.attempt = Duration::ZERO
            }),
            ("aws_timeouts.operation", |c| {
                c.aws_timeouts.operation = Duration::ZERO;
                c.aws_timeouts.attempt = Duration::ZERO;
            }),
        ];
        for (key, set) in cases {
            let mut c = Config::default();
            set(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[derive(Serialize)]
    struct NoOverrides {}

    #[test]
    fn setting_keys_are_the_config_fields() {
        let mut c = Config::default();
        c.outputs.push(toml::from_str("type = \"stdout\"").unwrap());
        c.dead_letter = Some(toml::from_str("type = \"file\"\npath = \"dl.jsonl\"").unwrap());
        let serde_json::Value::Object(fields) = serde_json::to_value(&c).unwrap() else {
            panic!("a config serializes to an object")
        };
        let mut fields: Vec<&str> = fields.keys().map(String::as_str).collect();
        let mut keys = SETTING_KEYS.to_vec();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(fields, keys);
    }

    #[test]
    fn other_bulkwatch_variables_are_not_settings() {
        figment::Jail::expect_with(|jail| {
            // The docs' own example of a webhook secret's variable, and a
            // build knob: neither is a setting, neither may break loading.
            jail.set_env("BULKWATCH_WEBHOOK_SECRET", "abc");
            jail.set_env("BULKWATCH_NICE", "10");
            jail.set_env("BULKWATCH_STREAM", "s");
            let c = Config::load(None, &NoOverrides {}).map_err(|e| e.to_string())?;
            assert_eq!(c.stream.as_deref(), Some("s"));
            // Below a known section a typo is still an error.
            jail.set_env("BULKWATCH_POLL__INTERVL", "1s");
            let err = Config::load(None, &NoOverrides {}).unwrap_err().to_string();
            assert!(err.contains("intervl"), "{err}");
            // So is a section joined with a single underscore.
            jail.clear_env();
            jail.set_env("BULKWATCH_STREAM", "s");
            jail.set_env("BULKWATCH_POLL_INTERVAL", "1s");
            let err = Config::load(None, &NoOverrides {}).unwrap_err().to_string();
            assert!(err.contains("poll_interval"), "{err}");
            // A variable that starts like a section but names none of
            // its keys is not a setting, and is left alone.
            jail.clear_env();
            jail.set_env("BULKWATCH_STREAM", "s");
            jail.set_env("BULKWATCH_STORE_SECRET", "abc");
            jail.set_env("BULKWATCH_OPS_TOKEN", "abc");
            let c = Config::load(None, &NoOverrides {}).map_err(|e| e.to_string())?;
            assert_eq!(c.stream.as_deref(), Some("s"));
            // A near miss of a top-level setting is an error too.
            jail.clear_env();
            jail.set_env("BULKWATCH_STATE_DIRR", "/x");
            let err = Config::load(None, &NoOverrides {}).unwrap_err().to_string();
            assert!(err.contains("state_dirr"), "{err}");
            jail.clear_env();
            jail.set_env("BULKWATCH_LOG_LEVL", "debug");
            let err = Config::load(None, &NoOverrides {}).unwrap_err().to_string();
            assert!(err.contains("log_levl"), "{err}");
            Ok(())
        });
    }

    // figment::Jail serialises access to the process environment, so these
    // tests may set variables without racing each other.
    #[test]
    fn env_wins_over_file_and_flags_win_over_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "b.toml",
                "stream = \"from-file\"\nstate_dir = \"file-dir\"\n[poll]\ninterval = \"300ms\"\n",
            )?;
            jail.set_env("BULKWATCH_STREAM", "from-env");
            jail.set_env("BULKWATCH_POLL__IDLE_INTERVAL", "2s");
            #[derive(Serialize)]
            struct Flags {
                state_dir: &'static str,
            }
            let c = Config::load(
                Some(Path::new("b.toml")),
                &Flags {
                    state_dir: "flag-dir",
                },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(c.stream.as_deref(), Some("from-env"));
            assert_eq!(c.state_dir, PathBuf::from("flag-dir"));
            assert_eq!(c.poll.interval, Duration::from_millis(300));
            assert_eq!(c.poll.idle_interval, Duration::from_secs(2));
            Ok(())
        });
    }

    #[test]
    fn bad_settings_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("b.toml", "[poll]\nmax_records = \"many\"\n")?;
            let e = Config::load(Some(Path::new("b.toml")), &NoOverrides {}).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("poll.max_records"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");

            jail.create_file("c.toml", "strem = \"typo\"\n")?;
            let msg = Config::load(Some(Path::new("c.toml")), &NoOverrides {})
                .unwrap_err()
                .to_string();
            assert!(msg.contains("strem"), "{msg}");

            jail.set_env("BULKWATCH_POLL__MAX_RECORDS", "20000");
            let msg = Config::load(None, &NoOverrides {}).unwrap_err().to_string();
            assert!(msg.contains("poll.max_records"), "{msg}");
            Ok(())
        });
    }

    /// Loads `contents` as the config file and returns the error message.
    fn error_of(contents: &str) -> String {
        let mut msg = String::new();
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", contents)?;
            msg = Config::load(Some(Path::new("c.toml")), &NoOverrides {})
                .expect_err(contents)
                .to_string();
            Ok(())
        });
        msg
    }

    #[test]
    fn toml_syntax_errors_are_one_readable_line() {
        let msg = error_of("stream = \"s\"\n[poll\n");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.contains("TOML parse error at line 2, column 6: invalid table header"),
            "{msg}"
        );
        assert!(msg.contains("c.toml"), "{msg}");
        // Not the squashed excerpt `| 2 | [poll   |      ^`.
        assert!(!msg.contains('|') && !msg.contains('^'), "{msg}");
    }

    #[test]
    fn unknown_keys_are_named_without_doubled_backticks() {
        let msg = error_of("strem = \"s\"\n");
        assert!(
            msg.contains("unknown key `strem` (expected one of `stream`, `start_position`"),
            "{msg}"
        );
        assert!(!msg.contains("`one of"), "{msg}");
        assert!(!msg.contains("``"), "{msg}");
        let msg = error_of("stream = \"s\"\n[poll]\nintervl = \"1s\"\n");
        assert!(
            msg.contains("unknown key `poll.intervl` (expected one of `interval`"),
            "{msg}"
        );
        let msg = error_of("stream = \"s\"\nlog_format = \"xml\"\n");
        assert!(
            msg.contains(
                "`log_format`: unknown value `xml` (expected one of `auto`, `json`, `text`)"
            ),
            "{msg}"
        );
    }

    #[test]
    fn stream_names_follow_kinesis_rules() {
        for bad in ["bad name with spaces!", "a/b", "ström", &"x".repeat(129)] {
            let msg = error_of(&format!("stream = {bad:?}\n"));
            assert!(msg.contains("`stream`"), "{bad}: {msg}");
        }
        for good in ["a", "Twilio_events.prod-1", &"x".repeat(128)] {
            figment::Jail::expect_with(|jail| {
                jail.create_file("c.toml", &format!("stream = {good:?}\n"))?;
                Config::load(Some(Path::new("c.toml")), &NoOverrides {})
                    .map_err(|e| e.to_string())?;
                Ok(())
            });
        }
    }

    /// Every static check of `[[output]]`, `[dead_letter]` and `[delivery]`
    /// fails loading the settings (so `config check` too), naming the
    /// output and the key; they used to pass here and fail `run` later at
    /// "starting outputs" with exit 1.
    #[test]
    fn bad_output_settings_fail_validation_naming_output_and_key() {
        const HOOK: &str = "[[output]]\ntype = \"webhook\"\nname = \"hook\"\n";
        for (body, needles) in [
            (
                format!("{HOOK}url = \"http://example.com/x\"\nsecret = \"k\""),
                &["\"hook\"", "`url`", "allow_insecure_http"][..],
            ),
            (
                format!("{HOOK}url = \"https://example.com/x\""),
                &["\"hook\"", "secret_env"],
            ),
            (
                format!("{HOOK}url = \"https://example.com/x\"\nsecret = \"k\"\nsecret_env = \"V\""),
                &["\"hook\"", "`secret`", "`secret_env`"],
            ),
            (
                format!("{HOOK}url = \"https://example.com/x\"\nsecret = \"k\"\nstatuses = []"),
                &["\"hook\"", "`statuses = []`"],
            ),
            (
                format!("{HOOK}url = \"https://example.com/x\"\nsecret = \"k\"\nstatuses = [\"COMPLETE\"]"),
                &["\"hook\"", "`statuses`", "\"COMPLETE\"", "COMPLETED, FAILED"],
            ),
            (
                format!("{HOOK}url = \"https://example.com/x\"\nsecret = \"k\"\nfriendly_name_pattern = \"([\""),
                &["\"hook\"", "`friendly_name_pattern`"],
            ),
            (
                format!("{HOOK}url = \"https://example.com/x\"\nsecret = \"k\"\nconcurrency = 0"),
                &["\"hook\"", "`concurrency`"],
            ),
            (
                "[[output]]\ntype = \"stdout\"\nname = \"a\"\n[[output]]\ntype = \"file\"\nname = \"a\"\npath = \"x\"".into(),
                &["\"a\"", "unique"],
            ),
            (
                // The default names (`<type>-<index>`) count too.
                "[[output]]\ntype = \"stdout\"\n[[output]]\ntype = \"stdout\"\nname = \"stdout-0\"".into(),
                &["\"stdout-0\"", "unique"],
            ),
            (
                "[[output]]\ntype = \"sqs\"\nqueue_url = \"not a url\"".into(),
                &["\"sqs-0\"", "`queue_url`"],
            ),
            (
                "[[output]]\ntype = \"sqs\"\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/1/q\"\nattempt_timeout = \"20s\"".into(),
                &["\"sqs-0\"", "`attempt_timeout`"],
            ),
            (
                "[[output]]\ntype = \"sns\"\ntopic_arn = \"jobs\"".into(),
                &["\"sns-0\"", "`topic_arn`"],
            ),
            (
                "[[output]]\ntype = \"eventbridge\"\nsource = \"\"".into(),
                &["\"eventbridge-0\"", "`source`"],
            ),
            (
                "[dead_letter]\ntype = \"sqs\"\nqueue_url = \"\"".into(),
                &["[dead_letter]", "`queue_url`"],
            ),
            (
                "[delivery]\nbackoff_min = \"1m\"\nbackoff_max = \"30s\"".into(),
                &["`delivery.backoff_min`", "`delivery.backoff_max`"],
            ),
            (
                "[delivery]\nbackoff_min = \"0s\"".into(),
                &["`delivery.backoff_min`"],
            ),
            (
                "[delivery]\nqueue_capacity = 0".into(),
                &["`delivery.queue_capacity`"],
            ),
        ] {
            let msg = error_of(&format!("stream = \"s\"\n{body}\n"));
            assert!(!msg.contains('\n'), "{body}: {msg}");
            for needle in needles {
                assert!(msg.contains(needle), "{body}: want {needle:?} in: {msg}");
            }
        }
    }

    /// `secret_env` naming an unset variable fails `check_environment` (run
    /// and config check), not loading, so that `jobs` and `checkpoints`
    /// work where the secret is not.
    #[test]
    fn unset_secret_env_fails_the_environment_check() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "stream = \"s\"\n[[output]]\ntype = \"webhook\"\nname = \"hook\"\nurl = \"https://example.com/x\"\nsecret_env = \"HOOK_SECRET_FOR_TEST\"\n",
            )?;
            let c = Config::load(Some(Path::new("c.toml")), &NoOverrides {})
                .map_err(|e| e.to_string())?;
            let msg = c.check_environment().unwrap_err().to_string();
            assert!(msg.contains("\"hook\""), "{msg}");
            assert!(msg.contains("`secret_env`"), "{msg}");
            assert!(msg.contains("HOOK_SECRET_FOR_TEST"), "{msg}");
            assert!(msg.contains("not set"), "{msg}");
            jail.set_env("HOOK_SECRET_FOR_TEST", "");
            let msg = c.check_environment().unwrap_err().to_string();
            assert!(msg.contains("empty"), "{msg}");
            jail.set_env("HOOK_SECRET_FOR_TEST", "k");
            c.check_environment().map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn bulkwatch_config_names_the_file_and_is_not_a_setting() {
        // The variable clap reads for --config shares the settings'
        // prefix; it must not reach the (unknown-key-rejecting) settings.
        figment::Jail::expect_with(|jail| {
            jail.create_file("w.toml", "stream = \"s\"\n")?;
            jail.set_env("BULKWATCH_CONFIG", "w.toml");
            let c = Config::load(Some(Path::new("w.toml")), &NoOverrides {})
                .map_err(|e| e.to_string())?;
            assert_eq!(c.stream.as_deref(), Some("s"));
            Ok(())
        });
    }

    #[test]
    fn missing_stream_says_how_to_set_it() {
        let c = Config::default();
        let msg = c.stream().unwrap_err().to_string();
        assert!(msg.contains("BULKWATCH_STREAM"), "{msg}");
    }
}
