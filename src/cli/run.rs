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
use crate::source::kinesis::{list_shards, load_aws_config};
use crate::store::dynamodb::{DynamoConfig, DynamoStore};
use crate::store::embedded::EmbeddedStore;
use crate::store::{JobStore, LeasedStore};
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
    /// List every shard's checkpoint as JSON lines.
    List(RunArgs),
    /// Forget one shard's checkpoint, so it restarts from the start
    /// position. Stop the worker first.
    Reset {
        /// The shard id, e.g. shardId-000000000001.
        #[arg(long, value_name = "SHARD_ID")]
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
        /// e.g. completed). Repeat it for several statuses.
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
        #[arg(value_name = "JOB_SID")]
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

/// Opens the configured store, scoped to the stream.
async fn open_store(
    config: &Config,
    aws: &aws_config::SdkConfig,
) -> anyhow::Result<Arc<dyn LeasedStore>> {
    let stream = config.stream()?;
    Ok(match config.store.kind {
        StoreType::Embedded => {
            let store = EmbeddedStore::open(&config.state_dir)
                .with_context(|| format!("opening the store in {}", config.state_dir.display()))?
                .for_stream(stream);
            Arc::new(store)
        }
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

/// Opens the configured store for reading job state. Job state is global
/// (keyed by job sid), so no stream is needed. Unlike `run`, it creates
/// nothing: a mistyped `--state-dir` or table name is an error, not an
/// empty listing.
async fn open_job_store(
    config: &Config,
    aws: &aws_config::SdkConfig,
) -> anyhow::Result<Arc<dyn JobStore>> {
    Ok(match config.store.kind {
        StoreType::Embedded => {
            let file = config.state_dir.join(crate::store::embedded::FILE_NAME);
            anyhow::ensure!(
                file.exists(),
                "no embedded store in {} (no {}); is --state-dir right?",
                config.state_dir.display(),
                file.display()
            );
            let store = EmbeddedStore::open(&config.state_dir)
                .with_context(|| format!("opening the store in {}", config.state_dir.display()))?;
            Arc::new(store)
        }
        StoreType::Dynamodb => {
            let mut dc = DynamoConfig::new(&config.store.table, "bulkwatch-cli");
            if let Some(t) = &config.store.job_table {
                dc.job_table = t.clone();
            }
            dc.create_tables = false;
            let store = DynamoStore::connect(aws, dc).await.with_context(|| {
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
        let client = aws_sdk_kinesis::Client::new(&aws);

        // Fail fast on a stream that is not there: a typo should be one
        // clear line, not a worker that retries forever.
        let shards = list_shards(&client, &stream).await.with_context(|| {
            format!(
                "cannot read stream {stream} (region {}, endpoint {})",
                aws.region().map(|r| r.to_string()).unwrap_or_else(|| "unset".into()),
                std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "default".into())
            )
        })?;

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
        let aws = load_aws_config(&config.aws_timeouts).await;
        let store = open_store(&config, &aws).await?;
        match cmd {
            CheckpointsCommand::List(_) => {
                for (shard, cp) in store.list_checkpoints().await? {
                    println!(
                        "{}",
                        serde_json::json!({ "shard_id": shard, "checkpoint": cp })
                    );
                }
            }
            CheckpointsCommand::Reset { shard, .. } => {
                store.delete_checkpoint(shard).await?;
                eprintln!("bulkwatch: checkpoint of {shard} reset");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
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
    wanted.is_empty() || wanted.contains(&job.status)
}

/// `bulkwatch jobs list|show`.
pub fn jobs(config: Config, cmd: &JobsCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let aws = load_aws_config(&config.aws_timeouts).await;
        let store = open_job_store(&config, &aws).await?;
        match cmd {
            JobsCommand::List { status, .. } => {
                let wanted: Vec<JobStatus> = status.iter().map(|s| JobStatus::parse(s)).collect();
                let mut jobs = store.list_jobs().await?;
                jobs.retain(|j| status_matches(j, &wanted));
                jobs.sort_by(|a, b| a.job_sid.cmp(&b.job_sid));
                for job in &jobs {
                    println!("{}", job_summary(job));
                }
                Ok(ExitCode::SUCCESS)
            }
            JobsCommand::Show { job_sid, .. } => {
                let mut found = store.load_jobs(&[job_sid.as_str()]).await?;
                match found.remove(job_sid) {
                    Some(v) => {
                        println!("{}", job_detail(&v.value));
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
    use crate::store::JobUpdate;
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
        let config = Config::load(Some(&path), &crate::cli::Overrides::default()).unwrap();
        let debug = format!("{config:?}");
        let json = serde_json::to_string(&config).unwrap();
        assert!(
            debug.contains("Webhook") && debug.contains("<redacted>"),
            "{debug}"
        );
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!json.contains(SECRET), "{json}");
    }

    /// The embedded store end to end through the same functions the
    /// command uses (the CLI test in tests/ops.rs runs the binary).
    #[tokio::test]
    async fn embedded_store_lists_and_shows() {
        let dir = tempfile::tempdir().unwrap();
        let config = {
            let mut c = Config::load(None, &crate::cli::Overrides::default()).unwrap();
            c.state_dir = dir.path().to_owned();
            c
        };
        let aws = aws_config::SdkConfig::builder().build();
        let err = match open_job_store(&config, &aws).await {
            Ok(_) => panic!("an empty state dir must be an error"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("no embedded store"), "{err}");
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
        let store = open_job_store(&config, &aws).await.unwrap();
        let jobs = store.list_jobs().await.unwrap();
        assert_eq!(jobs.len(), 2);
        let got = store.load_jobs(&["JW1"]).await.unwrap();
        assert_eq!(got["JW1"].value.history.len(), 3);
    }
}
