//! Shutdown: one token every task watches.
//!
//! The first SIGTERM or SIGINT cancels the token: readers stop fetching,
//! in-flight batches finish (deliver, then checkpoint) and the process exits
//! 0. ECS sends SIGTERM and waits `stopTimeout` (30 s by default) before
//! SIGKILL, so the drain has a grace period shorter than that. A second
//! signal (at least [`ECHO_WINDOW`] after the first: one request delivered
//! twice is not a second request) means the operator does not want to
//! wait: exit at once. Nothing is lost either way, because a checkpoint
//! only ever follows delivery.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code for a forced exit on the second signal (128 + SIGINT, the
/// shell convention for "interrupted").
pub const FORCED_EXIT_CODE: i32 = 130;

/// Signals this soon after the first one are taken as echoes of it, not as
/// the second signal that forces an exit.
pub const ECHO_WINDOW: Duration = Duration::from_secs(1);

/// Spawns the signal watcher and returns the token it cancels.
pub fn install() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            message = "Shutdown requested: stopping reads, draining in-flight batches.",
            signal = name
        );
        t.cancel();
        let first = tokio::time::Instant::now();
        let name = loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            // The same request delivered twice is not a second request:
            // GNU `timeout` signals the child and then its process group,
            // and a terminal's Ctrl-C reaches every process of the group.
            // Only a signal after ECHO_WINDOW means "do not wait".
            if first.elapsed() >= ECHO_WINDOW {
                break name;
            }
            tracing::debug!(
                message = "Repeated signal right after the first; still draining.",
                signal = name
            );
        };
        tracing::warn!(
            message = "Second signal: exiting now without draining; records after the last checkpoint will be read again.",
            signal = name
        );
        std::process::exit(FORCED_EXIT_CODE);
    });
    Ok(token)
}

/// Waits for `fut`, but gives up once `grace` has passed after `token` was
/// cancelled. Returns `None` when it gave up.
pub async fn with_grace<F: std::future::Future>(
    token: &CancellationToken,
    grace: Duration,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    tokio::select! {
        out = &mut fut => return Some(out),
        _ = token.cancelled() => {}
    }
    tokio::time::timeout(grace, fut).await.ok()
}
