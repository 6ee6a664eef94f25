//! Configuration of the output stage: the `[[output]]` tables, `[dead_letter]`
//! and `[delivery]`. Every key is documented in `docs/outputs.md`.
//!
//! [`OutputsConfig`] is flattened into the top-level config, so it cannot use
//! `deny_unknown_fields` itself (serde does not support it together with
//! `flatten`); every table below it does, so a typo names the key.

use std::{fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The output stage's part of the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OutputsConfig {
    /// `[[output]]` tables. None configured means one stdout output.
    #[serde(rename = "output", default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputConfig>,
    /// `[dead_letter]`. None means a JSON-lines file `dead-letter.jsonl` in
    /// the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterConfig>,
    /// `[delivery]`: retry policy and queue sizes, shared by all outputs.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// `[delivery]`: how hard each output tries before a transition goes to the
/// dead-letter output, and how much it may buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Attempts per transition and output before it is dead-lettered.
    /// 0 = unlimited (the default; `max_record_age` still applies).
    pub max_attempts: u32,
    /// Once a failed transition is older than this (counted from when it was
    /// handed to the outputs), it is dead-lettered instead of retried.
    /// "0s" = unlimited. Default 6h.
    #[serde(with = "humantime_serde")]
    pub max_record_age: Duration,
    /// First retry delay; it doubles per failed attempt, plus up to 100%
    /// random jitter. Default 200ms.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Cap of the retry delay before jitter. Default 30s.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Batches each output may hold (queued + in progress) before `deliver`
    /// waits, which pauses reading. Default 4.
    pub queue_capacity: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 0,
            max_record_age: Duration::from_secs(6 * 3600),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            queue_capacity: 4,
        }
    }
}

/// One `[[output]]` table: its kind with that kind's keys, plus the keys every
/// output accepts (`name` and the filter keys).
///
/// It is (de)serialized through a JSON map because the common keys sit next
/// to the kind's own keys in the same table: `#[serde(flatten)]` would do
/// that but disables `deny_unknown_fields`, and typo detection matters more.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct OutputConfig {
    /// Shown in logs, metrics and dead-letter entries. Default `<type>-<index>`.
    pub name: Option<String>,
    pub filter: FilterConfig,
    pub kind: OutputKind,
}

impl OutputConfig {
    pub fn new(kind: OutputKind) -> Self {
        Self {
            name: None,
            filter: FilterConfig::default(),
            kind,
        }
    }
}

/// Keys every `[[output]]` table accepts besides its kind's own.
const COMMON_KEYS: [&str; 4] = ["name", "statuses", "terminal_only", "friendly_name_pattern"];

impl TryFrom<Map<String, Value>> for OutputConfig {
    type Error = String;

    fn try_from(mut map: Map<String, Value>) -> Result<Self, String> {
        let kind_name = map
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let context = |e: serde_json::Error| {
            format!(
                "[[output]] type = \"{kind_name}\": {e} (keys every output accepts: {})",
                COMMON_KEYS.join(", ")
            )
        };
        let mut common = Map::new();
        for key in COMMON_KEYS {
            if let Some(v) = map.remove(key) {
                common.insert(key.to_owned(), v);
            }
        }
        let name = match common.remove("name") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            Some(other) => {
                return Err(format!(
                    "[[output]] type = \"{kind_name}\": `name` must be a non-empty string, got {other}"
                ));
            }
        };
        let filter: FilterConfig =
            serde_json::from_value(Value::Object(common)).map_err(context)?;
        let kind: OutputKind = serde_json::from_value(Value::Object(map)).map_err(context)?;
        Ok(Self { name, filter, kind })
    }
}

impl From<OutputConfig> for Map<String, Value> {
    fn from(c: OutputConfig) -> Self {
        // Both halves are plain derive(Serialize) structs, which always
        // serialize to JSON objects.
        let mut map = match serde_json::to_value(&c.kind) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        if let Ok(Value::Object(filter)) = serde_json::to_value(&c.filter) {
            map.extend(filter);
        }
        if let Some(name) = c.name {
            map.insert("name".into(), Value::String(name));
        }
        map
    }
}

/// Which transitions an output takes. All given conditions must hold; with
/// none given, every transition is taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Only these new statuses (case-insensitive, e.g. `["COMPLETED", "FAILED"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<String>>,
    /// Only terminal statuses (COMPLETED, FAILED, CANCELED, STOPPED).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminal_only: bool,
    /// A regular expression (regex-lite syntax, unanchored) that the job's
    /// friendly_name must match; a job without a friendly_name never matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name_pattern: Option<String>,
}

/// The kind of an output, chosen by its `type` key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputKind {
    Stdout(StdoutConfig),
    File(FileConfig),
    Webhook(WebhookConfig),
    Sqs(SqsConfig),
    Sns(SnsConfig),
    #[serde(rename = "eventbridge")]
    EventBridge(EventBridgeConfig),
}

impl OutputKind {
    /// The `type` string, used for default names.
    pub fn type_name(&self) -> &'static str {
        match self {
            OutputKind::Stdout(_) => "stdout",
            OutputKind::File(_) => "file",
            OutputKind::Webhook(_) => "webhook",
            OutputKind::Sqs(_) => "sqs",
            OutputKind::Sns(_) => "sns",
            OutputKind::EventBridge(_) => "eventbridge",
        }
    }
}

/// `type = "stdout"`: JSON lines on standard output. No keys of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {}

/// `type = "file"` (also a `[dead_letter]` kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Appended to; created (with its directory) when missing.
    pub path: PathBuf,
}

/// `type = "webhook"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The HMAC key, inline. Prefer `secret_env`. Exactly one is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// The name of an environment variable holding the HMAC key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Default 5s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whole request, connect to last body byte. Default 10s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Allow http:// to a host that is not loopback. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
    /// Requests in flight at once (transitions of different jobs only; one
    /// job's transitions are always sent one after the other). Default 8.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

/// `type = "sqs"` (also a `[dead_letter]` kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// A URL ending in `.fifo` is a FIFO queue.
    pub queue_url: String,
    /// Overrides the region of the standard chain (e.g. for a topic in
    /// another region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The whole operation, SDK retries included. Default 15s.
    #[serde(default = "default_operation_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// One HTTP attempt. Default 5s.
    #[serde(default = "default_attempt_timeout", with = "humantime_serde")]
    pub attempt_timeout: Duration,
}

/// `type = "sns"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsConfig {
    /// An ARN ending in `.fifo` is a FIFO topic.
    pub topic_arn: String,
    /// Overrides the region of the standard chain (e.g. for a topic in
    /// another region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The whole operation, SDK retries included. Default 15s.
    #[serde(default = "default_operation_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// One HTTP attempt. Default 5s.
    #[serde(default = "default_attempt_timeout", with = "humantime_serde")]
    pub attempt_timeout: Duration,
}

/// `type = "eventbridge"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBridgeConfig {
    /// Bus name or ARN. Default "default".
    #[serde(default = "default_event_bus")]
    pub event_bus: String,
    /// The event's `source`. Default "bulkwatch".
    #[serde(default = "default_source")]
    pub source: String,
    /// The event's `detail-type`. Default "Lookup Bulk Job Status Change".
    #[serde(default = "default_detail_type")]
    pub detail_type: String,
    /// Overrides the region of the standard chain (e.g. for a topic in
    /// another region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The whole operation, SDK retries included. Default 15s.
    #[serde(default = "default_operation_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// One HTTP attempt. Default 5s.
    #[serde(default = "default_attempt_timeout", with = "humantime_serde")]
    pub attempt_timeout: Duration,
}

/// Client settings shared by the AWS outputs. Each AWS kind repeats these
/// keys (`region`, `timeout`, `attempt_timeout`) instead of flattening this
/// struct, because serde's `flatten` disables `deny_unknown_fields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsClientConfig {
    pub region: Option<String>,
    pub timeout: Duration,
    pub attempt_timeout: Duration,
}

macro_rules! aws_client_config {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn client_config(&self) -> AwsClientConfig {
                AwsClientConfig {
                    region: self.region.clone(),
                    timeout: self.timeout,
                    attempt_timeout: self.attempt_timeout,
                }
            }
        }
    )*};
}
aws_client_config!(SqsConfig, SnsConfig, EventBridgeConfig);

/// `[dead_letter]`: where bad records and undeliverable transitions go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum DeadLetterConfig {
    File(FileConfig),
    Sqs(SqsConfig),
}

/// A secret string: redacted in `Debug` and when serialized, so neither a log
/// line nor a dump of the effective config shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_concurrency() -> usize {
    8
}
fn default_operation_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_attempt_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_event_bus() -> String {
    "default".into()
}
fn default_source() -> String {
    "bulkwatch".into()
}
fn default_detail_type() -> String {
    "Lookup Bulk Job Status Change".into()
}

// ---------------------------------------------------------------- validation
//
// Everything about the output settings that can be judged without the
// network lives here, so that `bulkwatch config check` and `bulkwatch run`
// refuse a bad setting the same way (exit 2, one line naming the output and
// the key) before anything starts. Only what needs the network (building
// the AWS and HTTP clients) or the filesystem (opening files) is left to
// `Outputs::start`.

impl OutputConfig {
    /// The name used in logs, counters and dead-letter entries: `name`, or
    /// `<type>-<index>` for the output at `index` of `[[output]]`.
    pub fn name_or_default(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{index}", self.kind.type_name()))
    }
}

impl OutputsConfig {
    /// Checks every `[[output]]`, `[dead_letter]` and `[delivery]` key that
    /// needs neither the network nor the environment. The message names the
    /// output (or table) and the key, on one line.
    pub fn validate(&self) -> Result<(), String> {
        self.delivery.validate()?;
        let mut names: Vec<String> = Vec::with_capacity(self.outputs.len());
        for (i, output) in self.outputs.iter().enumerate() {
            let name = output.name_or_default(i);
            if names.contains(&name) {
                return Err(format!(
                    "two outputs are named {name:?}; output names must be unique (set `name` on one of them)"
                ));
            }
            output
                .validate()
                .map_err(|e| format!("output {name:?} (type {}): {e}", output.kind.type_name()))?;
            names.push(name);
        }
        match &self.dead_letter {
            None => Ok(()),
            Some(DeadLetterConfig::File(f)) => check_path(&f.path),
            Some(DeadLetterConfig::Sqs(s)) => s.validate(),
        }
        .map_err(|e| format!("[dead_letter]: {e}"))?;
        Ok(())
    }

    /// Checks what the settings take from the rest of the environment: that
    /// every webhook's `secret_env` names a variable that is set and not
    /// empty. Separate from [`OutputsConfig::validate`] because only the
    /// commands that deliver (`run`, and `config check`, which vouches for
    /// `run`) need the secrets; the operator commands (`jobs`,
    /// `checkpoints`) load the same file on a machine that may not have
    /// them.
    pub fn check_secrets(&self) -> Result<(), String> {
        for (i, output) in self.outputs.iter().enumerate() {
            if let OutputKind::Webhook(WebhookConfig {
                secret_env: Some(var),
                ..
            }) = &output.kind
            {
                let problem = match std::env::var_os(var) {
                    None => "is not set",
                    Some(v) if v.is_empty() => "is empty",
                    Some(_) => continue,
                };
                return Err(format!(
                    "output {:?} (type webhook): `secret_env` names the environment variable {var}, which {problem}",
                    output.name_or_default(i)
                ));
            }
        }
        Ok(())
    }
}

impl DeliveryConfig {
    /// The retry policy and queue size must make sense on their own.
    pub fn validate(&self) -> Result<(), String> {
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if self.backoff_min.is_zero() {
            return Err("`delivery.backoff_min` must be more than 0".into());
        }
        if self.backoff_min > self.backoff_max {
            return Err(format!(
                "`delivery.backoff_min` ({}) must not exceed `delivery.backoff_max` ({})",
                fmt(self.backoff_min),
                fmt(self.backoff_max)
            ));
        }
        if self.queue_capacity == 0 {
            // A queue of 0 batches would block every delivery for ever.
            return Err("`delivery.queue_capacity` must be at least 1".into());
        }
        Ok(())
    }
}

impl FilterConfig {
    /// A filter that can never accept anything, or that names a status
    /// Twilio does not have, is a mistake: the output would silently get
    /// nothing.
    pub fn validate(&self) -> Result<(), String> {
        use crate::track::JobStatus;
        if let Some(statuses) = &self.statuses {
            if statuses.is_empty() {
                return Err(
                    "`statuses = []` would accept nothing; remove the key to accept every status"
                        .into(),
                );
            }
            for s in statuses {
                if !JobStatus::parse(s.trim()).is_known() {
                    let valid: Vec<String> = JobStatus::known().map(|s| s.to_string()).collect();
                    return Err(format!(
                        "`statuses` has {s:?}, which is not a Twilio job status; valid statuses (case-insensitive): {}",
                        valid.join(", ")
                    ));
                }
            }
            if self.terminal_only
                && !statuses
                    .iter()
                    .any(|s| JobStatus::parse(s.trim()).is_terminal())
            {
                return Err(
                    "`terminal_only = true` with `statuses` that holds no terminal status (COMPLETED, FAILED, CANCELED, STOPPED) would accept nothing"
                        .into(),
                );
            }
        }
        if let Some(p) = &self.friendly_name_pattern
            && let Err(e) = regex_lite::Regex::new(p)
        {
            return Err(format!(
                "`friendly_name_pattern` = {p:?} is not a valid regular expression: {}",
                one_line(&e.to_string())
            ));
        }
        Ok(())
    }
}

impl OutputConfig {
    fn validate(&self) -> Result<(), String> {
        self.filter.validate()?;
        match &self.kind {
            OutputKind::Stdout(_) => Ok(()),
            OutputKind::File(f) => check_path(&f.path),
            OutputKind::Webhook(w) => w.validate(),
            OutputKind::Sqs(s) => s.validate(),
            OutputKind::Sns(s) => s.validate(),
            OutputKind::EventBridge(e) => e.validate(),
        }
    }
}

impl WebhookConfig {
    fn validate(&self) -> Result<(), String> {
        // The same rule the webhook output applies when it starts (one
        // function, so the two can never disagree).
        super::webhook::check_url(&self.url, self.allow_insecure_http)
            .map_err(|e| format!("`url`: {}", one_line(&format!("{e:#}"))))?;
        match (&self.secret, &self.secret_env) {
            (Some(_), Some(_)) => {
                return Err(
                    "`secret` and `secret_env` are both set; set only one (`secret_env` preferred)"
                        .into(),
                );
            }
            (None, None) => {
                return Err(
                    "a signing secret is required: set `secret_env = \"VAR\"` (preferred) or `secret`"
                        .into(),
                );
            }
            (Some(s), None) if s.expose().is_empty() => {
                return Err("`secret` is empty".into());
            }
            (None, Some(var)) if var.trim().is_empty() => {
                return Err("`secret_env` is empty; name an environment variable".into());
            }
            _ => {}
        }
        positive("connect_timeout", self.connect_timeout)?;
        positive("timeout", self.timeout)?;
        if self.concurrency == 0 {
            return Err("`concurrency` must be at least 1".into());
        }
        Ok(())
    }
}

impl SqsConfig {
    fn validate(&self) -> Result<(), String> {
        match reqwest::Url::parse(&self.queue_url) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some() => {}
            _ => {
                return Err(format!(
                    "`queue_url` = {:?} is not a queue URL like https://sqs.<region>.amazonaws.com/<account>/<queue>",
                    self.queue_url
                ));
            }
        }
        self.client_config().validate()
    }
}

impl SnsConfig {
    fn validate(&self) -> Result<(), String> {
        // arn:<partition>:sns:<region>:<account>:<topic>
        let parts: Vec<&str> = self.topic_arn.split(':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[2] == "sns"
            && parts.iter().all(|p| !p.is_empty());
        if !ok {
            return Err(format!(
                "`topic_arn` = {:?} is not an SNS topic ARN like arn:aws:sns:<region>:<account>:<topic>",
                self.topic_arn
            ));
        }
        self.client_config().validate()
    }
}

impl EventBridgeConfig {
    fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("event_bus", &self.event_bus),
            ("source", &self.source),
            ("detail_type", &self.detail_type),
        ] {
            if value.trim().is_empty() {
                return Err(format!("`{key}` must not be empty"));
            }
        }
        self.client_config().validate()
    }
}

impl AwsClientConfig {
    fn validate(&self) -> Result<(), String> {
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err("`region` is empty; remove it to use the standard AWS chain".into());
        }
        positive("timeout", self.timeout)?;
        positive("attempt_timeout", self.attempt_timeout)?;
        if self.attempt_timeout > self.timeout {
            return Err(format!(
                "`attempt_timeout` ({}) must not exceed `timeout` ({}), which bounds every attempt together",
                humantime::format_duration(self.attempt_timeout),
                humantime::format_duration(self.timeout)
            ));
        }
        Ok(())
    }
}

fn check_path(path: &std::path::Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("`path` must not be empty".into());
    }
    Ok(())
}

fn positive(key: &str, d: Duration) -> Result<(), String> {
    if d.is_zero() {
        return Err(format!("`{key}` must be more than 0"));
    }
    Ok(())
}

/// Messages of other crates may span lines; a config error is one line.
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
