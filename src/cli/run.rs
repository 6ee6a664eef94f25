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
use crate::store::LeasedStore;
use crate::store::dynamodb::{DynamoConfig, DynamoStore};
use crate::store::embedded::EmbeddedStore;
use crate::track::Tracker;

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
            );
            tokio::spawn(Arc::new(h).serve(listener));
            tracing::info!(message = "Health and metrics endpoint listening.", address = ?addr);
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
