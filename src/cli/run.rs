//! `bulkwatch run` and the store commands that share its settings.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::config::StoreType;
use crate::config::{Config, StartPosition};
use crate::ops::health::{self, Health};
use crate::ops::metrics::Metrics;
use crate::ops::shutdown;
use crate::output::Outputs;
use crate::pipeline::Pipeline;
use crate::source::coordinator::Coordinator;
use crate::source::kinesis::{list_shards_at_startup, load_aws_config};
use crate::store::dynamodb::{DynamoConfig, DynamoStore};
use crate::store::embedded::EmbeddedStore;
use crate::store::{Lease, LeaseCheckpoint, LeasedStore};
use crate::track::{JobState, JobStatus, Tracker};

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Kinesis stream name. [setting: stream, env: BULKWATCH_STREAM]
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,

    /// Where a shard with no checkpoint starts: trim-horizon (the oldest
    /// retained record, the default: job events are few and every one
    /// matters, so a new worker should see jobs already under way), latest
    /// (only records written after the worker first sees the shard), or
    /// at-timestamp=<RFC3339>. A shard with a checkpoint always resumes
    /// after it. [setting: start_position, env: BULKWATCH_START_POSITION]
    #[arg(long, value_name = "POSITION")]
    pub start_position: Option<StartPosition>,

    /// Directory of the embedded store (checkpoints and job state) and of
    /// the default dead-letter file. [setting: state_dir, env:
    /// BULKWATCH_STATE_DIR, default: ./bulkwatch-state]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Address of the health and metrics endpoint (/health/live,
    /// /health/ready, /metrics), or `off`. [setting: ops.listen, env:
    /// BULKWATCH_OPS__LISTEN, default: 0.0.0.0:9090]
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// List every leased shard of the stream with its checkpoint, one JSON
    /// line each: {"shard_id", "checkpoint": sequence number, "SHARD_END" or
    /// null (none yet), "start", "owner", "lease_counter",
    /// "parent_shard_ids", "child_shard_ids"} (docs/operations.md). Creates
    /// nothing: a state dir that does not exist is an error (exit 1).
    List(RunArgs),
    /// Forget one shard's checkpoint (delete its lease), so it restarts
    /// from the start position. Stop the worker first. Exits 1 when the
    /// shard has no lease or checkpoint.
    Reset {
        /// The shard id, e.g. shardId-000000000001.
        #[arg(long, value_name = "SHARD_ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
        shard: String,
        #[command(flatten)]
        args: RunArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List the current state of every job the store remembers, as JSON
    /// lines sorted by job sid. Terminal jobs are forgotten `terminal_ttl`
    /// after they finish. On DynamoDB this scans the whole job table
    /// (paginated), so mind its read cost on a large table.
    List {
        /// Only jobs whose current status is this one (case-insensitive,
        /// e.g. completed). Repeat it for several statuses. A value that is
        /// none of Twilio's statuses and matches no job is named on stderr.
        #[arg(long, value_name = "STATUS")]
        status: Vec<String>,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Show one job: its current state and snapshot, and its history of
    /// transitions (oldest first), as one JSON object. Exits 1 when the
    /// store has no state for it.
    Show {
        /// The job's sid, e.g. JW0123456789abcdef0123456789abcdef.
        #[arg(value_name = "JOB_SID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
        job_sid: String,
        #[command(flatten)]
        args: RunArgs,
    },
}

impl JobsCommand {
    pub fn args(&self) -> &RunArgs {
        match self {
            Self::List { args, .. } | Self::Show { args, .. } => args,
        }
    }
}

impl CheckpointsCommand {
    pub fn args(&self) -> &RunArgs {
        match self {
            Self::List(a) => a,
            Self::Reset { args, .. } => args,
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Opens the worker's store, scoped to the stream, creating what is
/// missing (the state dir and database, or the DynamoDB tables when
/// `create_tables`).
async fn open_store(
    config: &Config,
    aws: &aws_config::SdkConfig,
) -> anyhow::Result<Arc<dyn LeasedStore>> {
    let stream = config.stream()?;
    Ok(match config.store.kind {
        // No context added: every error of `open` names the state dir, and
        // a second copy of the path made the "in use" error hard to read.
        StoreType::Embedded => Arc::new(EmbeddedStore::open(&config.state_dir)?.for_stream(stream)),
        StoreType::Dynamodb => {
            let worker_id = config
                .store
                .worker_id
                .clone()
                .unwrap_or_else(default_worker_id);
            let mut dc = DynamoConfig::new(&config.store.table, &worker_id);
            if let Some(t) = &config.store.job_table {
                dc.job_table = t.clone();
            }
            dc.create_tables = config.store.create_tables;
            let store = DynamoStore::connect(aws, dc).await.with_context(|| {
                format!("opening the DynamoDB store (table {})", config.store.table)
            })?;
            Arc::new(store)
        }
    })
}

/// Opens the store for an operator command (`checkpoints`, `jobs`). Unlike
/// `run`, it creates nothing: a mistyped `--state-dir` or table name is an
/// error, not a new empty store that lists nothing. Checkpoints and leases
/// are those of `stream`; job state is global, so `jobs` passes none.
///
/// The AWS config is loaded only for DynamoDB: the embedded store is a
/// local file, and loading the chain without AWS_REGION made the SDK
/// print several long warnings about IMDS (the EC2 metadata service) before
/// a purely local listing.
async fn open_operator_store(
    config: &Config,
    stream: Option<&str>,
) -> anyhow::Result<Arc<dyn LeasedStore>> {
    Ok(match config.store.kind {
        StoreType::Embedded => {
            let store = EmbeddedStore::open_existing(&config.state_dir)?;
            match stream {
                Some(s) => Arc::new(store.for_stream(s)),
                None => Arc::new(store),
            }
        }
        StoreType::Dynamodb => {
            let aws = load_aws_config(&config.aws_timeouts).await;
            let mut dc = DynamoConfig::new(&config.store.table, "bulkwatch-cli");
            if let Some(t) = &config.store.job_table {
                dc.job_table = t.clone();
            }
            dc.create_tables = false;
            let store = DynamoStore::connect(&aws, dc).await.with_context(|| {
                format!("opening the DynamoDB store (table {})", config.store.table)
            })?;
            Arc::new(store)
        }
    })
}

/// A name unique in the fleet: on ECS the hostname is the task's, and the
/// pid and a random suffix keep two workers on one host apart.
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bulkwatch".to_owned());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// The worker: runs until a signal, then drains and exits 0.
pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let shutdown = shutdown::install().context("installing signal handlers")?;
        let stream: Arc<str> = Arc::from(config.stream()?);
        let aws = load_aws_config(&config.aws_timeouts).await;
        // Without a region every call fails with the SDK's "missing signing
        // region" deep in a dispatch error; name the setting instead.
        if aws.region().is_none() {
            return Err(crate::config::ConfigError(
                "no AWS region: set AWS_REGION (or a `region` in the AWS profile); on ECS and EC2 it is found by itself"
                    .into(),
            )
            .into());
        }
        let client = aws_sdk_kinesis::Client::new(&aws);

        // Fail fast on a stream that is not there: a typo should be one
        // clear line, not a worker that retries forever. A transient
        // failure (timeout, throttling, 5xx) is retried, as it is later on.
        let shards = list_shards_at_startup(&client, &stream, &shutdown)
            .await
            .with_context(|| {
                format!(
                    "cannot read stream {stream} (region {}, endpoint {})",
                    aws.region().map(|r| r.to_string()).unwrap_or_else(|| "unset".into()),
                    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "default".into())
                )
            })?;
        let Some(shards) = shards else {
            // Nothing was read, so there is nothing to drain.
            tracing::info!(message = "Shutdown requested during start-up; exiting.", stream = %stream);
            return Ok(ExitCode::SUCCESS);
        };

        let metrics = Metrics::new();
        metrics.set_stream(&stream);
        metrics.stream_ok();
        // Bound before anything slow, so a taken port is one clear error.
        let listener = match config.ops.listen_addr()? {
            Some(addr) => Some(health::bind(addr).await?),
            None => None,
        };

        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
        let store = open_store(&config, &aws).await?;
        // The outputs get their own token, cancelled only when the grace
        // period runs out: on SIGTERM, batches already read must still be
        // delivered (and then checkpointed), so outputs keep working while
        // the readers stop.
        let outputs_stop = tokio_util::sync::CancellationToken::new();
        let outputs = Outputs::start(&config.outputs_config(), &aws, &config.state_dir, outputs_stop.clone())
            .await
            .context("starting outputs")?;
        metrics.attach_outputs(&outputs);
        {
            // An output that can never deliver again (stdout closed) stops
            // the outputs; the worker then stops too, with nothing past
            // them checkpointed.
            let (stop, outputs_stopped) = (shutdown.clone(), outputs_stop.clone());
            tokio::spawn(async move {
                outputs_stopped.cancelled().await;
                stop.cancel();
            });
        }
        if let Some(listener) = listener {
            let addr = listener.local_addr().ok();
            let h = Health::new(
                metrics.clone(),
                client.clone(),
                stream.clone(),
                store.clone() as Arc<dyn crate::store::CheckpointStore>,
                &config.ops,
                config.lease.renew_interval,
            );
            tokio::spawn(Arc::new(h).serve(listener));
            // The bound address (not the configured one): with port 0 the
            // kernel picks it, and this line is how tools find it.
            let address = addr.map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(message = "Health and metrics endpoint listening.", address = %address);
        }
        {
            // Readiness turns false the moment draining starts.
            let (m, t) = (metrics.clone(), shutdown.clone());
            tokio::spawn(async move {
                t.cancelled().await;
                m.set_shutting_down();
            });
        }
        tracing::info!(
            message = "bulkwatch started.",
            stream = %stream,
            shards = shards.len(),
            start_position = %config.start_position,
            state_dir = %config.state_dir.display()
        );

        let pipeline = Arc::new(Pipeline {
            tracker: Tracker::new(store.clone(), config.terminal_ttl),
            outputs: outputs.clone(),
            checkpoints: store.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        });
        let coordinator = Coordinator {
            client,
            stream: stream.clone(),
            poll: config.poll.clone(),
            start_position: config.start_position,
            lease: config.lease.clone(),
            store: store.clone(),
        };

        let drained = shutdown::with_grace(
            &shutdown,
            config.shutdown_grace,
            coordinator.run(pipeline, shutdown.clone()),
        )
        .await;
        let code = match drained {
            Some(Ok(())) => ExitCode::SUCCESS,
            Some(Err(e)) => {
                tracing::error!(message = "Worker failed.", error = %format!("{e:#}"));
                ExitCode::from(1)
            }
            None => {
                outputs_stop.cancel();
                tracing::warn!(
                    message = "Shutdown grace period ran out before every batch drained; undrained records will be read again on restart.",
                    grace = %humantime::format_duration(config.shutdown_grace)
                );
                ExitCode::from(1)
            }
        };
        if let Err(e) = outputs.close().await {
            tracing::warn!(message = "Closing outputs failed.", error = %format!("{e:#}"));
        }
        metrics.log_summary();
        Ok(code)
    })
}

/// `bulkwatch checkpoints list|reset`.
pub fn checkpoints(config: Config, cmd: &CheckpointsCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let stream = config.stream()?;
        let store = open_operator_store(&config, Some(stream)).await?;
        match cmd {
            CheckpointsCommand::List(_) => {
                // Every lease, not only those with a checkpoint: a shard a
                // worker has leased but not yet checkpointed is worth
                // seeing (it will start at its start position).
                let leases = store.list_leases().await?;
                if leases.is_empty() {
                    eprintln!(
                        "bulkwatch: no leases or checkpoints for stream {stream} in {}",
                        store_location(&config)
                    );
                }
                for lease in &leases {
                    let line = serde_json::to_string(&checkpoint_line(lease))
                        .context("printing a checkpoint")?;
                    super::print_line(line)?;
                }
                Ok(ExitCode::SUCCESS)
            }
            CheckpointsCommand::Reset { shard, .. } => {
                // Say so when there was nothing to forget: a mistyped shard
                // id or stream must not look like a successful reset.
                let Some(lease) = store.get_lease(shard).await? else {
                    eprintln!(
                        "bulkwatch: no checkpoint or lease for shard {shard} of stream {stream} in {}; nothing reset (see `bulkwatch checkpoints list --stream {stream}`)",
                        store_location(&config)
                    );
                    return Ok(ExitCode::from(1));
                };
                store.delete_checkpoint(shard).await?;
                let was = match lease.checkpoint.to_checkpoint() {
                    Some(_) => format!("checkpoint {}", lease.checkpoint.kcl_checkpoint()),
                    None => "no checkpoint yet".to_owned(),
                };
                eprintln!(
                    "bulkwatch: lease of shard {shard} of stream {stream} deleted (it had {was}); the shard restarts from the start position on the next run"
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Where the operator commands looked, for their messages.
fn store_location(config: &Config) -> String {
    match config.store.kind {
        StoreType::Embedded => format!("state dir {}", config.state_dir.display()),
        StoreType::Dynamodb => format!("DynamoDB table {}", config.store.table),
    }
}

/// One line of `bulkwatch checkpoints list`. A stable shape, documented in
/// docs/operations.md; it is built by hand rather than by serialising the
/// store's types, so a change to those cannot change the output.
fn checkpoint_line(lease: &Lease) -> CheckpointLine<'_> {
    // The sequence number after which reading resumes, SHARD_END, or null
    // when the shard has no checkpoint yet; then `start` says where it
    // begins (the lease's KCL sentinel).
    let (checkpoint, start) = match &lease.checkpoint {
        LeaseCheckpoint::Sequence {
            sequence_number, ..
        } => (Some(sequence_number.as_str()), None),
        LeaseCheckpoint::ShardEnd => (Some("SHARD_END"), None),
        unstarted => (None, Some(unstarted.kcl_checkpoint())),
    };
    CheckpointLine {
        shard_id: &lease.shard_id,
        checkpoint,
        start,
        owner: lease.owner.as_deref(),
        lease_counter: lease.counter,
        parent_shard_ids: &lease.parent_shard_ids,
        child_shard_ids: &lease.child_shard_ids,
    }
}

/// The fields of a `checkpoints list` line, in this order.
#[derive(serde::Serialize)]
struct CheckpointLine<'a> {
    shard_id: &'a str,
    checkpoint: Option<&'a str>,
    start: Option<&'a str>,
    owner: Option<&'a str>,
    lease_counter: u64,
    parent_shard_ids: &'a [String],
    child_shard_ids: &'a [String],
}

/// One line of `bulkwatch jobs list`: the current state, without the
/// history (`jobs show` has it).
fn job_summary(job: &JobState) -> serde_json::Value {
    let last = job.history.last();
    serde_json::json!({
        "job_sid": job.job_sid,
        "status": job.status,
        "terminal": job.is_terminal(),
        "friendly_name": job.snapshot.friendly_name,
        "transitions": job.history.len(),
        "last_transition_id": last.map(|h| h.transition_id),
        "last_event_time": last.map(|h| rfc3339(h.event_time)),
        "updated_at": rfc3339(job.updated_at),
        "expires_at": job.expires_at.map(rfc3339),
    })
}

/// One job in full for `bulkwatch jobs show`. The ids of quiet events
/// (kept only to recognise duplicates) are left out.
fn job_detail(job: &JobState) -> serde_json::Value {
    serde_json::json!({
        "job_sid": job.job_sid,
        "status": job.status,
        "known_status": job.known_status,
        "terminal": job.is_terminal(),
        "snapshot": job.snapshot,
        "snapshot_event_id": job.snapshot_event_id,
        "snapshot_event_time": rfc3339(job.snapshot_event_time),
        "updated_at": rfc3339(job.updated_at),
        "expires_at": job.expires_at.map(rfc3339),
        "history": job.history,
    })
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Whether a job's current status is one of `wanted` (empty: any).
fn status_matches(job: &JobState, wanted: &[JobStatus]) -> bool {
    wanted.is_empty() || wanted.iter().any(|w| same_status(w, &job.status))
}

/// Case-insensitive for every status, unknown ones too (they are stored as
/// received, so `--status archived` must still find "ARCHIVED").
fn same_status(a: &JobStatus, b: &JobStatus) -> bool {
    a.as_str().eq_ignore_ascii_case(b.as_str())
}

/// The `--status` values that are none of Twilio's statuses and that no
/// listed job has: most likely typos, which would otherwise just list
/// nothing. A status Twilio added later is kept as received, so one that
/// some job has is listed without a word.
fn unmatched_unknown_statuses<'a>(wanted: &'a [JobStatus], listed: &[JobState]) -> Vec<&'a str> {
    wanted
        .iter()
        .filter(|w| !w.is_known() && !listed.iter().any(|j| same_status(w, &j.status)))
        .map(JobStatus::as_str)
        .collect()
}

/// `bulkwatch jobs list|show`.
pub fn jobs(config: Config, cmd: &JobsCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let store = open_operator_store(&config, None).await?;
        match cmd {
            JobsCommand::List { status, .. } => {
                let wanted: Vec<JobStatus> = status.iter().map(|s| JobStatus::parse(s)).collect();
                let mut jobs = store.list_jobs().await?;
                jobs.retain(|j| status_matches(j, &wanted));
                for typo in unmatched_unknown_statuses(&wanted, &jobs) {
                    eprintln!(
                        "bulkwatch: no job has status {typo:?}, which is not one of Twilio's ({}); is it mistyped?",
                        JobStatus::known()
                            .map(|s| s.as_str().to_owned())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                jobs.sort_by(|a, b| a.job_sid.cmp(&b.job_sid));
                for job in &jobs {
                    super::print_line(job_summary(job))?;
                }
                Ok(ExitCode::SUCCESS)
            }
            JobsCommand::Show { job_sid, .. } => {
                let mut found = store.load_jobs(&[job_sid.as_str()]).await?;
                match found.remove(job_sid) {
                    Some(v) => {
                        super::print_line(job_detail(&v.value))?;
                        Ok(ExitCode::SUCCESS)
                    }
                    None => {
                        eprintln!(
                            "bulkwatch: no state for job {job_sid} (never seen, or forgotten terminal_ttl after it finished)"
                        );
                        Ok(ExitCode::from(1))
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JobStore, JobUpdate};
    use crate::track::HistoryEntry;

    fn job(sid: &str, status: JobStatus, history: usize) -> JobState {
        let mut j = JobState::sample(sid);
        j.status = status.clone();
        j.known_status = Some(status.clone());
        for n in 0..history {
            j.history.push(HistoryEntry {
                transition_id: uuid::Uuid::from_u128(n as u128 + 1),
                event_id: format!("EV{n}"),
                previous_status: None,
                status: status.clone(),
                event_time: time::OffsetDateTime::UNIX_EPOCH,
                event_time_source: crate::decode::TimeSource::Event,
                shard_id: "shardId-000000000000".into(),
                sequence_number: format!("{n}"),
                recorded_at: time::OffsetDateTime::UNIX_EPOCH,
            });
        }
        j
    }

    #[test]
    fn status_filter_is_case_insensitive_and_repeatable() {
        let done = job("JW1", JobStatus::Completed, 1);
        let queued = job("JW2", JobStatus::Queued, 1);
        let want: Vec<JobStatus> = ["completed", "FAILED"].map(JobStatus::parse).into();
        assert!(status_matches(&done, &want));
        assert!(!status_matches(&queued, &want));
        assert!(status_matches(&queued, &[]));
    }

    #[test]
    fn only_unmatched_unknown_statuses_are_called_typos() {
        let done = job("JW1", JobStatus::Completed, 1);
        let novel = job("JW2", JobStatus::parse("ARCHIVED"), 1);
        let want: Vec<JobStatus> = ["COMPLETD", "archived", "completed", "FAILED"]
            .map(JobStatus::parse)
            .into();
        let listed = [done, novel];
        assert!(status_matches(&listed[1], &want), "case-insensitive");
        assert_eq!(unmatched_unknown_statuses(&want, &listed), ["COMPLETD"]);
        assert!(unmatched_unknown_statuses(&[], &listed).is_empty());
    }

    #[test]
    fn summary_and_detail_carry_the_history() {
        let j = job("JW1", JobStatus::Completed, 2);
        let s = job_summary(&j);
        assert_eq!(s["status"], "COMPLETED");
        assert_eq!(s["transitions"], 2);
        assert_eq!(s["terminal"], true);
        assert!(s.get("history").is_none());
        let d = job_detail(&j);
        assert_eq!(d["history"].as_array().map(Vec::len), Some(2));
        assert_eq!(d["history"][1]["sequence_number"], "1");
        assert!(d.get("quiet_event_ids").is_none());
    }

    /// A webhook secret given inline never shows in the config's `Debug`
    /// (what a `?config` log field would print) or its JSON (`config
    /// check`); one given by `secret_env` is not even read into it.
    #[test]
    fn config_debug_and_json_redact_the_webhook_secret() {
        const SECRET: &str = "whsec-unit-9s8d7f6g";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                "stream = \"s\"\n[[output]]\ntype = \"webhook\"\nurl = \"https://example.com/h\"\nsecret = \"{SECRET}\"\n"
            ),
        )
        .unwrap();
        let config = load_isolated(Some(&path));
        let debug = format!("{config:?}");
        let json = serde_json::to_string(&config).unwrap();
        assert!(
            debug.contains("Webhook") && debug.contains("<redacted>"),
            "{debug}"
        );
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!json.contains(SECRET), "{json}");
    }

    /// `Config::load` reads the process's `BULKWATCH_*` variables, which
    /// the config tests set (a typo such as `BULKWATCH_POLL__INTERVL`) while
    /// other tests run beside them. They set them inside `figment::Jail`,
    /// which takes a process-wide lock; loading inside one too means never
    /// seeing them.
    #[allow(clippy::result_large_err)] // figment's Jail error type; its design.
    fn load_isolated(path: Option<&std::path::Path>) -> Config {
        let mut loaded = None;
        figment::Jail::expect_with(|_| {
            let config =
                Config::load(path, &crate::cli::Overrides::default()).map_err(|e| e.to_string())?;
            loaded = Some(config);
            Ok(())
        });
        loaded.expect("loaded inside the jail")
    }

    fn config_in(dir: &std::path::Path) -> Config {
        let mut c = load_isolated(None);
        c.state_dir = dir.to_owned();
        c.stream = Some("s".into());
        c
    }

    /// The embedded store end to end through the same functions the
    /// command uses (the CLI test in tests/ops.rs runs the binary).
    #[tokio::test]
    async fn embedded_store_lists_and_shows() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let err = match open_operator_store(&config, None).await {
            Ok(_) => panic!("an empty state dir must be an error"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("holds no bulkwatch store"), "{err}");
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let updates: Vec<JobUpdate> = [
                job("JW2", JobStatus::Queued, 1),
                job("JW1", JobStatus::Completed, 3),
            ]
            .into_iter()
            .map(|state| JobUpdate {
                state,
                expected_version: None,
            })
            .collect();
            assert!(store.save_jobs(&updates).await.unwrap().is_empty());
        }
        let store = open_operator_store(&config, None).await.unwrap();
        let jobs = store.list_jobs().await.unwrap();
        assert_eq!(jobs.len(), 2);
        let got = store.load_jobs(&["JW1"]).await.unwrap();
        assert_eq!(got["JW1"].value.history.len(), 3);
    }

    /// `checkpoints list --state-dir does-not-exist-dir` used to create the
    /// directory and print nothing.
    #[test]
    fn operator_commands_do_not_create_a_state_dir() {
        let parent = tempfile::tempdir().unwrap();
        let missing = parent.path().join("does-not-exist-dir");
        let config = config_in(&missing);
        let rt = runtime().unwrap();
        for stream in [Some("s"), None] {
            let err = match rt.block_on(open_operator_store(&config, stream)) {
                Ok(_) => panic!("a missing state dir must be an error"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains("does not exist"), "{err}");
            assert!(err.contains("does-not-exist-dir"), "{err}");
        }
        assert!(!missing.exists(), "the state dir was created");
        // Through the command: exit 1 (an error), nothing created.
        let err = checkpoints(config, &CheckpointsCommand::List(args()))
            .map(|_| ())
            .unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        assert!(!missing.exists(), "the state dir was created");

        // A file where the directory should be is named as such.
        let file = parent.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let err = match rt.block_on(open_operator_store(&config_in(&file), Some("s"))) {
            Ok(_) => panic!("a file as state dir must be an error"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("is not a directory"), "{err}");
    }

    fn args() -> RunArgs {
        RunArgs {
            stream: None,
            start_position: None,
            state_dir: None,
            health_listen: None,
        }
    }

    /// A lease with no checkpoint yet is listed too, and the shape is the
    /// documented one, not the store's Rust enums.
    #[tokio::test]
    async fn checkpoint_lines_have_the_documented_shape() {
        use crate::store::{CheckpointStore, LeaseStore, NewLease};
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap().for_stream("s");
            for id in [
                "shardId-000000000000",
                "shardId-000000000001",
                "shardId-000000000002",
            ] {
                store
                    .create_lease_if_absent(&NewLease {
                        shard_id: id.into(),
                        parent_shard_ids: vec![],
                        hash_key_range: None,
                        checkpoint: LeaseCheckpoint::TrimHorizon,
                    })
                    .await
                    .unwrap();
            }
            store
                .set_checkpoint(
                    "shardId-000000000001",
                    &crate::store::Checkpoint::Sequence("4965".into()),
                )
                .await
                .unwrap();
            store
                .set_checkpoint("shardId-000000000002", &crate::store::Checkpoint::ShardEnd)
                .await
                .unwrap();
        }
        let store = open_operator_store(&config_in(dir.path()), Some("s"))
            .await
            .unwrap();
        let lines: Vec<serde_json::Value> = store
            .list_leases()
            .await
            .unwrap()
            .iter()
            .map(|l| serde_json::to_value(checkpoint_line(l)).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["shard_id"], "shardId-000000000000");
        assert_eq!(lines[0]["checkpoint"], serde_json::Value::Null);
        assert_eq!(lines[0]["start"], "TRIM_HORIZON");
        assert_eq!(lines[1]["checkpoint"], "4965");
        assert_eq!(lines[1]["start"], serde_json::Value::Null);
        assert_eq!(lines[1]["owner"], "embedded");
        assert!(lines[1]["lease_counter"].is_u64());
        assert_eq!(lines[2]["checkpoint"], "SHARD_END");
        for l in &lines {
            let mut keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(
                keys,
                [
                    "checkpoint",
                    "child_shard_ids",
                    "lease_counter",
                    "owner",
                    "parent_shard_ids",
                    "shard_id",
                    "start"
                ]
            );
        }
    }

    /// `checkpoints reset` of a shard with no lease used to say "reset" and
    /// exit 0.
    #[test]
    fn resetting_an_unknown_shard_exits_1() {
        let dir = tempfile::tempdir().unwrap();
        drop(EmbeddedStore::open(dir.path()).unwrap());
        let reset = |shard: &str| {
            checkpoints(
                config_in(dir.path()),
                &CheckpointsCommand::Reset {
                    shard: shard.into(),
                    args: args(),
                },
            )
            .unwrap()
        };
        assert_eq!(reset("shardId-999"), ExitCode::from(1));
        {
            let rt = runtime().unwrap();
            rt.block_on(async {
                use crate::store::{LeaseStore, NewLease};
                let store = EmbeddedStore::open(dir.path()).unwrap().for_stream("s");
                store
                    .create_lease_if_absent(&NewLease {
                        shard_id: "shardId-000000000000".into(),
                        parent_shard_ids: vec![],
                        hash_key_range: None,
                        checkpoint: LeaseCheckpoint::TrimHorizon,
                    })
                    .await
                    .unwrap();
            });
        }
        assert_eq!(reset("shardId-000000000000"), ExitCode::SUCCESS);
        // Gone now: a second reset has nothing to forget.
        assert_eq!(reset("shardId-000000000000"), ExitCode::from(1));
    }

    /// The "in use" error used to print its sentence twice (an error that
    /// both displayed and returned as `source` its inner error).
    #[test]
    fn locked_state_dir_error_says_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let _held = EmbeddedStore::open(dir.path()).unwrap();
        let rt = runtime().unwrap();
        let err = rt
            .block_on(open_operator_store(&config_in(dir.path()), Some("s")))
            .map(|_| ())
            .unwrap_err();
        let text = format!("{err:#}");
        assert_eq!(text.matches("in use by another").count(), 1, "{text}");
        assert_eq!(
            text.matches(&*dir.path().to_string_lossy()).count(),
            2,
            "{text}"
        );
    }
}
