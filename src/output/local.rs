//! The local outputs: stdout and an appended JSON-lines file (also used by the
//! file dead-letter output).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;
use async_trait::async_trait;
use tokio::{fs, io::AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::sink::{Item, Outcome, SendContext, Sink};

/// `type = "stdout"`: one JSON line per transition, one flush per attempt.
pub(crate) struct StdoutSink {
    out: tokio::io::Stdout,
}

impl StdoutSink {
    /// `stop` is the outputs' stop token. A watcher checks once a second
    /// whether the reader of stdout has gone: on a quiet stream no write
    /// would find out, and `bulkwatch run | head` would never end.
    pub(crate) fn new(stop: &CancellationToken) -> Self {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
                if stdout_hung_up() {
                    stdout_closed(&stop, 0);
                    return;
                }
            }
        });
        Self {
            out: tokio::io::stdout(),
        }
    }
}

/// Whether stdout is a pipe whose reader has closed it (POLLERR/POLLHUP
/// on the write end). A terminal, a file or /dev/null never is.
fn stdout_hung_up() -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let out = std::io::stdout();
    let mut fds = [PollFd::new(&out, PollFlags::OUT)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0)
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}

/// Stops every output, and with them the worker, saying why once.
fn stdout_closed(stop: &CancellationToken, unwritten: usize) {
    if stop.is_cancelled() {
        return;
    }
    tracing::warn!(
        message = "stdout was closed (whoever read the transitions went away); stopping. Nothing is checkpointed past the transitions not written: the next run reads them again.",
        transitions = unwritten,
    );
    stop.cancel();
}

#[async_trait]
impl Sink for StdoutSink {
    async fn send(&mut self, items: &[&Item], ctx: &SendContext) -> Vec<Outcome> {
        let buf = lines(items);
        // Flushing is what makes the lines leave the process.
        let res = async {
            self.out.write_all(&buf).await?;
            self.out.flush().await
        }
        .await;
        let outcome = match res {
            Ok(()) => Outcome::Delivered,
            // A closed pipe (`bulkwatch run | head`) never opens again:
            // retrying would only end in dead-lettering every transition of
            // the stream. Stop instead, as a command-line tool does, with
            // nothing acknowledged past what was written.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                stdout_closed(ctx.stop_token(), items.len());
                Outcome::NotSent
            }
            Err(e) => Outcome::retry(format!("writing to stdout: {e}")),
        };
        vec![outcome; items.len()]
    }
}

/// `type = "file"`.
pub(crate) struct FileSink {
    file: JsonLinesFile,
}

impl FileSink {
    pub(crate) async fn open(path: &Path, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        Ok(Self {
            file: JsonLinesFile::open(path, shutdown).await?,
        })
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn send(&mut self, items: &[&Item], _ctx: &SendContext) -> Vec<Outcome> {
        let outcome = match self.file.append(&lines(items)).await {
            Ok(()) => Outcome::Delivered,
            Err(e) => Outcome::retry(format!("appending to {}: {e:#}", self.file.path.display())),
        };
        vec![outcome; items.len()]
    }
}

fn lines(items: &[&Item]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(items.iter().map(|i| i.body.len() + 1).sum());
    for item in items {
        buf.extend_from_slice(item.body.as_bytes());
        buf.push(b'\n');
    }
    buf
}

/// A file that JSON lines are appended to, fsynced before `append` returns,
/// and reopened by path after SIGHUP (so logrotate's move-then-HUP works) or
/// after a failed write.
pub(crate) struct JsonLinesFile {
    pub(crate) path: PathBuf,
    file: Option<fs::File>,
    hangups: Arc<AtomicU64>,
    seen_hangups: u64,
}

impl JsonLinesFile {
    /// Opens (creating it and its directory) now, so a bad path fails at
    /// start-up rather than on the first transition.
    pub(crate) async fn open(path: &Path, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let mut this = Self {
            path: path.to_owned(),
            file: None,
            hangups: hangup_counter(shutdown)?,
            seen_hangups: 0,
        };
        this.seen_hangups = this.hangups.load(Ordering::Acquire);
        this.file = Some(
            open_append(path)
                .await
                .with_context(|| format!("opening {} for appending", path.display()))?,
        );
        Ok(this)
    }

    /// Appends `buf` (whole lines) and fsyncs. On error the handle is
    /// dropped, so the next call reopens the path.
    pub(crate) async fn append(&mut self, buf: &[u8]) -> anyhow::Result<()> {
        let hangups = self.hangups.load(Ordering::Acquire);
        if hangups != self.seen_hangups {
            self.seen_hangups = hangups;
            if let Some(mut old) = self.file.take() {
                // Whatever was written is already fsynced; this only closes.
                let _ = old.flush().await;
            }
            tracing::info!(message = "Reopening file after SIGHUP.", path = %self.path.display());
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open_append(&self.path).await?),
        };
        let res = async {
            file.write_all(buf).await?;
            // tokio's File hands writes to a blocking thread; flush waits for
            // that write to finish before sync_data makes it durable.
            file.flush().await?;
            file.sync_data().await
        }
        .await;
        if res.is_err() {
            // A half-written line may be on disk; reopening terminates it and
            // starts the retry on a fresh handle.
            self.file = None;
        }
        Ok(res?)
    }
}

async fn open_append(path: &Path) -> std::io::Result<fs::File> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).await?;
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .await?;
    // A crash or failed write may have left a torn last line. Terminating it
    // keeps the next (complete) line from being glued onto it, so readers
    // lose only the torn fragment, whose transition is written again anyway
    // (it was never acknowledged).
    if file.metadata().await?.len() > 0 {
        file.seek(std::io::SeekFrom::End(-1)).await?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last).await?;
        if last[0] != b'\n' {
            file.write_all(b"\n").await?;
            file.flush().await?;
        }
    }
    Ok(file)
}

/// A counter bumped on every SIGHUP, watched by each file. Listening installs
/// a handler, which also stops SIGHUP from killing the process (its default
/// action): that is intended, a worker with a file output treats HUP as
/// "reopen your files".
#[cfg(unix)]
fn hangup_counter(shutdown: &CancellationToken) -> anyhow::Result<Arc<AtomicU64>> {
    use tokio::signal::unix::{SignalKind, signal};
    let counter = Arc::new(AtomicU64::new(0));
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let c = counter.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                got = hup.recv() => match got {
                    Some(()) => { c.fetch_add(1, Ordering::AcqRel); }
                    None => break,
                },
            }
        }
    });
    Ok(counter)
}

#[cfg(not(unix))]
fn hangup_counter(_: &CancellationToken) -> anyhow::Result<Arc<AtomicU64>> {
    Ok(Arc::new(AtomicU64::new(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_torn_last_line_is_terminated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
        let mut f = JsonLinesFile::open(&path, &CancellationToken::new())
            .await
            .unwrap();
        f.append(b"{\"c\":3}\n").await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":\n{\"c\":3}\n"
        );
        // A clean file is left alone.
        drop(f);
        let mut f = JsonLinesFile::open(&path, &CancellationToken::new())
            .await
            .unwrap();
        f.append(b"{}\n").await.unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with("{\"c\":3}\n{}\n")
        );
    }
}
