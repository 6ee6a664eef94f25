//! The command line: parses arguments, loads settings and runs a command.
//!
//! Exit codes: 0 success (including a drained shutdown), 1 a runtime
//! failure, 2 bad usage or configuration, 130 a forced exit on a second
//! signal. `healthcheck` exits only 0 (healthy) or 1 (anything else),
//! because Docker reserves 2 for health checks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, LogFormat, StartPosition};

pub mod decode;
pub mod healthcheck;
mod run;

const AFTER_HELP: &str = "\
Settings are read, each layer winning over the one before, from: built-in
defaults, the TOML file given by --config (or BULKWATCH_CONFIG), environment
variables BULKWATCH_<KEY> (nested keys joined by a double underscore, e.g.
BULKWATCH_POLL__INTERVAL=500ms), and the command-line flags.

AWS settings (region, credentials, endpoint) come from the standard AWS
chain: AWS_REGION, AWS_PROFILE, the ECS task role, AWS_ENDPOINT_URL (and
AWS_ENDPOINT_URL_<SERVICE>, e.g. for LocalStack).

Transitions are written to stdout as JSON lines; logs go to stderr.";

/// bulkwatch: Twilio Lookup bulk-job status transitions from a Kinesis
/// stream, delivered at least once.
#[derive(Debug, Parser)]
#[command(name = "bulkwatch", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// TOML config file.
    #[arg(long, global = true, env = "BULKWATCH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on stderr: auto picks json when stderr is not a terminal
    /// (ECS, CI) and text when it is. [setting: log_format]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. info, debug, or bulkwatch=debug,aws=warn. RUST_LOG
    /// overrides it. [setting: log_level, default: info]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read the stream, emit transitions, checkpoint; runs until SIGTERM or
    /// SIGINT, then drains in-flight batches and exits 0.
    Run(run::RunArgs),
    /// Inspect or reset checkpoints in the store.
    #[command(subcommand)]
    Checkpoints(run::CheckpointsCommand),
    /// List current job states (filter by status) or show one job's
    /// history of transitions, as JSON lines.
    #[command(subcommand)]
    Jobs(run::JobsCommand),
    /// Decode record payloads from stdin (one per line) or files, through
    /// exactly the worker's decode and track code, and print one JSON line
    /// per record: its class, the reason if bad, and its transitions.
    Decode(decode::DecodeArgs),
    /// Settings tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Probe a running worker's health endpoint (for container health
    /// checks): exit 0 if healthy, 1 if not, with one line on stderr.
    Healthcheck(healthcheck::HealthcheckArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the settings, print them as JSON, and exit 0 (or
    /// 2 naming the bad setting).
    Check(run::RunArgs),
}

/// Flags that override settings, serialised only when given so that
/// unset flags do not shadow the file or the environment.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_position: Option<StartPosition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<OpsOverrides>,
}

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct OpsOverrides {
    pub listen: String,
}

/// Runs the binary and returns its exit code.
/// Writes one line of an operator command's output. Unlike `println!`, a
/// closed stdout is an error the caller returns (see [`main`]), not a panic.
pub(crate) fn print_line(line: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}")
        .map_err(|e| anyhow::Error::new(e).context("writing to stdout"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // The reader of stdout went away (`bulkwatch jobs list | head
            // -1`): what it wanted was printed. Stop quietly, as Unix
            // tools do, rather than report an error (or, with println!,
            // panic).
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            if let Some(ce) = e.downcast_ref::<ConfigError>() {
                eprintln!("bulkwatch: {ce}");
                return ExitCode::from(2);
            }
            eprintln!("bulkwatch: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let load = |args: &run::RunArgs| -> Result<Config, ConfigError> {
        let o = Overrides {
            stream: args.stream.clone(),
            start_position: args.start_position,
            state_dir: args.state_dir.clone(),
            log_format: cli.log_format,
            log_level: cli.log_level.clone(),
            ops: args
                .health_listen
                .clone()
                .map(|listen| OpsOverrides { listen }),
        };
        Config::load(cli.config.as_deref(), &o)
    };
    match &cli.command {
        Command::Run(args) => {
            let config = load(args)?;
            config.stream()?;
            config.check_environment()?;
            crate::ops::logging::init(config.log_format, &config.log_level);
            run::run(config)
        }
        Command::Checkpoints(cmd) => {
            let config = load(cmd.args())?;
            config.stream()?;
            crate::ops::logging::init(config.log_format, &config.log_level);
            run::checkpoints(config, cmd)
        }
        Command::Jobs(cmd) => {
            // Job state is not per stream: no --stream needed.
            let config = load(cmd.args())?;
            crate::ops::logging::init(config.log_format, &config.log_level);
            run::jobs(config, cmd)
        }
        Command::Decode(args) => {
            crate::ops::logging::init(
                cli.log_format.unwrap_or_default(),
                cli.log_level.as_deref().unwrap_or("warn"),
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(decode::run(args.clone()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck(args) => Ok(healthcheck::run(args, || {
            Config::load(cli.config.as_deref(), &Overrides::default())
        })),
        Command::Config(ConfigCommand::Check(args)) => {
            // The same checks as `run`, so that a passing check means `run`
            // gets past its settings.
            let config = load(args)?;
            config.stream()?;
            config.check_environment()?;
            print_line(
                serde_json::to_string_pretty(&config)
                    .map_err(|e| anyhow::anyhow!("printing settings: {e}"))?,
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
