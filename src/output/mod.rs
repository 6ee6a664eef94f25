//! The output stage: delivers transitions and dead letters.
// TEMPORARY stand-in (stdout + dead-letter file) until the full output
// stage lands; the API is the one the pipeline keeps.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::source::Origin;
use crate::track::Transition;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OutputsConfig {}

#[derive(Debug, thiserror::Error)]
#[error("outputs are closed")]
pub struct OutputsClosed;

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub reason: String,
    pub payload: Vec<u8>,
    pub origin: Origin,
    pub output: Option<String>,
    pub transition: Option<Transition>,
    pub response: Option<String>,
}

#[derive(Clone)]
pub struct Outputs {
    dead_letter_path: PathBuf,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Outputs {
    pub async fn start(
        _config: &OutputsConfig,
        _aws: &aws_config::SdkConfig,
        state_dir: &Path,
        _shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Outputs> {
        Ok(Outputs { dead_letter_path: state_dir.join("dead-letter.jsonl"), lock: Default::default() })
    }
    pub async fn deliver(&self, transitions: Arc<[Transition]>) -> Result<(), OutputsClosed> {
        let _g = self.lock.lock().await;
        let mut out = std::io::stdout().lock();
        for t in transitions.iter() {
            serde_json::to_writer(&mut out, t).map_err(|_| OutputsClosed)?;
            out.write_all(b"\n").map_err(|_| OutputsClosed)?;
        }
        out.flush().map_err(|_| OutputsClosed)
    }
    pub async fn dead_letter(&self, entry: DeadLetter) -> Result<(), OutputsClosed> {
        let _g = self.lock.lock().await;
        let line = serde_json::json!({"reason": entry.reason, "payload": String::from_utf8_lossy(&entry.payload), "origin": entry.origin});
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.dead_letter_path).map_err(|_| OutputsClosed)?;
        writeln!(f, "{line}").map_err(|_| OutputsClosed)?;
        f.sync_data().map_err(|_| OutputsClosed)
    }
    pub async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}
