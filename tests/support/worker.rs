//! The real `bulkwatch` binary as a child process.
//!
//! stdout is read line by line on a background thread (a full pipe would
//! otherwise block the worker), and every line must be a transition: stdout
//! belongs to the product. stderr goes to a file, whose tail is printed
//! (by `Drop`) whenever a test fails, for every worker the test started, so
//! a red test says what each worker was doing; the panic messages
//! themselves therefore stay short.
//!
//! Signals go through the `kill` command, because the crate forbids unsafe
//! code and so cannot call `libc::kill` itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::localstack::aws_env;
use super::transitions::{Key, Seen, keys, listing};

/// Settings every test worker gets unless the test overrides them: poll an
/// idle shard often (tests wait on it) and log JSON (tests read the logs).
const DEFAULT_ENV: &[(&str, &str)] = &[
    ("BULKWATCH_POLL__INTERVAL", "200ms"),
    ("BULKWATCH_POLL__IDLE_INTERVAL", "300ms"),
    // Never dormant: a test that waits a minute must still see events fast.
    ("BULKWATCH_POLL__DORMANT_INTERVAL", "300ms"),
    ("BULKWATCH_SHUTDOWN_GRACE", "10s"),
    ("BULKWATCH_LOG_LEVEL", "info"),
    // The health and metrics endpoint listens on 0.0.0.0:9090 by default;
    // tests run in parallel (and beside other checkouts' tests), so a fixed
    // port would make all but the first worker exit with "address in use".
    // A test that reads /metrics passes its own free port.
    ("BULKWATCH_OPS__LISTEN", "off"),
];

/// The binary under test: the one cargo built for this test run, unless
/// `E2E_BULKWATCH_BIN` names another (a release build, an installed copy,
/// or a private copy when several checkouts share one target directory and
/// rebuild `target/debug/bulkwatch` under each other's feet).
pub fn binary() -> PathBuf {
    match std::env::var_os("E2E_BULKWATCH_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_bulkwatch")),
    }
}

/// `bulkwatch` with a clean environment: the AWS settings for LocalStack,
/// and none of the caller's `BULKWATCH_*` or `RUST_LOG`, which would change
/// what is being tested.
pub fn bulkwatch() -> Command {
    let mut cmd = Command::new(binary());
    for (k, _) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if k_str.starts_with("BULKWATCH_") || k_str == "RUST_LOG" {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(aws_env().vars());
    cmd.stdin(Stdio::null());
    cmd
}

/// Held for reading while a child process is spawned, and for writing by
/// a test that closes an embedded store it will hand to a child. Between
/// fork and exec a child holds a copy of every file this process has open;
/// a store closed in that moment stays locked (by the half-born child) and
/// a worker started on it right after exits with "state dir in use".
static FORKING: RwLock<()> = RwLock::new(());

/// `cmd.spawn()`, never while a store is being closed (`FORKING`).
/// `spawn` returns once the child has exec'd, when its copies are gone.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let _forking = FORKING.read().unwrap_or_else(PoisonError::into_inner);
    cmd.spawn()
}

/// Runs `f`, which opens and closes an embedded store in this process, with
/// no child being spawned meanwhile (see `FORKING`).
pub fn without_forks<T>(f: impl FnOnce() -> T) -> T {
    let _alone = FORKING.write().unwrap_or_else(PoisonError::into_inner);
    f()
}

/// Runs a short command to its end, with a liveness bound.
pub fn run_to_exit(mut cmd: Command, timeout: Duration) -> Output {
    let child =
        spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped())).expect("spawning bulkwatch");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("waiting for bulkwatch"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
    }
}

/// One shard's checkpoint as `bulkwatch checkpoints list` prints it
/// (docs/operations.md): `"checkpoint"` is a sequence number, `"SHARD_END"`
/// or null (a lease with no checkpoint yet; `"start"` says where it starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    Sequence(String),
    ShardEnd,
    /// Leased but not checkpointed yet: the lease's start position
    /// (`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`).
    Unstarted(String),
}

/// `bulkwatch checkpoints list` (the worker must have exited: the store
/// belongs to one process at a time).
pub fn checkpoints(stream: &str, state_dir: &Path) -> BTreeMap<String, Checkpoint> {
    let mut cmd = bulkwatch();
    cmd.args(["checkpoints", "list", "--stream", stream, "--state-dir"])
        .arg(state_dir)
        .args(["--log-format", "json"]);
    let out = run_to_exit(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bulkwatch checkpoints list exited {}.\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("checkpoints list printed a non-JSON line ({e}): {l}"));
            let shard = v["shard_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no shard_id in checkpoints line {l}"))
                .to_owned();
            let cp = match &v["checkpoint"] {
                serde_json::Value::String(s) if s == "SHARD_END" => Checkpoint::ShardEnd,
                serde_json::Value::String(s) => Checkpoint::Sequence(s.clone()),
                serde_json::Value::Null => Checkpoint::Unstarted(
                    v["start"]
                        .as_str()
                        .unwrap_or_else(|| panic!("no checkpoint and no start in {l}"))
                        .to_owned(),
                ),
                other => panic!("checkpoints list printed checkpoint {other} in {l}"),
            };
            (shard, cp)
        })
        .collect()
}

/// Marks, on the line channel, a last line that had no newline.
const PARTIAL: &str = "\u{0}partial\u{0}";

/// A running `bulkwatch run`.
pub struct Worker {
    label: String,
    child: Child,
    exited: Option<ExitStatus>,
    lines: Receiver<String>,
    stdout_closed: bool,
    seen: Vec<Seen>,
    /// A last stdout line without its newline: what a kill -9 in the
    /// middle of a write leaves. Not a transition, and not an error either
    /// (its record was not checkpointed, so it is delivered again).
    partial: Option<String>,
    stderr_path: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl Worker {
    /// `bulkwatch run --stream STREAM --state-dir DIR` with the test
    /// defaults.
    pub fn start(label: &str, stream: &str, state_dir: &Path) -> Worker {
        Worker::start_with(label, stream, state_dir, &[])
    }

    /// The same, with extra (or overriding) `BULKWATCH_*` settings.
    pub fn start_with(label: &str, stream: &str, state_dir: &Path, env: &[(&str, &str)]) -> Worker {
        Worker::start_full(label, stream, state_dir, env, &[])
    }

    /// The same, with extra command-line arguments (such as `--config
    /// FILE`) after `run`'s own.
    pub fn start_full(
        label: &str,
        stream: &str,
        state_dir: &Path,
        env: &[(&str, &str)],
        args: &[&std::ffi::OsStr],
    ) -> Worker {
        let stderr_dir = tempfile::tempdir().expect("a temp dir for stderr");
        let stderr_path = stderr_dir.path().join("stderr.log");
        let stderr = File::create(&stderr_path).expect("a stderr file");
        let mut cmd = bulkwatch();
        cmd.args(["run", "--stream", stream, "--state-dir"])
            .arg(state_dir)
            .args(["--log-format", "json"])
            .args(args)
            .envs(DEFAULT_ENV.iter().copied())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = spawn(&mut cmd).expect("spawning bulkwatch run");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        // A line without its newline is the end of the
                        // pipe: the process died mid-write. Mark it.
                        let complete = buf.ends_with(b"\n");
                        let text = String::from_utf8_lossy(&buf);
                        let text = text.trim_end_matches(['\n', '\r']);
                        let line = if complete {
                            text.to_owned()
                        } else {
                            format!("{PARTIAL}{text}")
                        };
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Worker {
            label: format!("{label} (bulkwatch run, pid {})", child.id()),
            child,
            exited: None,
            lines: rx,
            stdout_closed: false,
            seen: Vec::new(),
            partial: None,
            stderr_path,
            _stderr_dir: stderr_dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every transition received so far, in stdout order.
    pub fn transitions(&self) -> &[Seen] {
        &self.seen
    }

    /// The unfinished last stdout line, if the process died mid-write.
    pub fn partial_line(&self) -> Option<&str> {
        self.partial.as_deref()
    }

    /// Reads what stdout delivered so far, waiting up to `wait` for the
    /// first line: for tests that watch several workers at once.
    pub fn collect(&mut self, wait: Duration) {
        if !self.stdout_closed {
            self.receive(wait);
        }
    }

    /// The process has exited (it is reaped if it has).
    pub fn has_exited(&mut self) -> bool {
        self.reap(Duration::ZERO).is_some()
    }

    /// Takes what stdout delivered, waiting up to `wait` for the first line.
    fn receive(&mut self, wait: Duration) {
        match self.lines.recv_timeout(wait) {
            Ok(line) => self.accept(line),
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => {
                self.stdout_closed = true;
                return;
            }
        }
        while let Ok(line) = self.lines.try_recv() {
            self.accept(line);
        }
    }

    fn accept(&mut self, line: String) {
        if let Some(rest) = line.strip_prefix(PARTIAL) {
            self.partial = Some(rest.to_owned());
            return;
        }
        match Seen::parse(&line) {
            Ok(s) => self.seen.push(s),
            Err(why) => panic!(
                "{}: stdout must hold only transitions, but this line is not one ({why}):\n{line}",
                self.label
            ),
        }
    }

    /// Waits until `progress` says done (Ok), reading stdout meanwhile.
    /// `progress` explains, when not done, how far it got; that goes into
    /// the failure message, with the worker's stderr.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut progress: impl FnMut(&[Seen]) -> Result<(), String>,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let state = progress(&self.seen);
            let Err(how_far) = state else { return };
            if self.stdout_closed {
                let status = self.reap(Duration::from_secs(10));
                panic!(
                    "{} exited ({}) while waiting for {what}.\nProgress: {how_far}",
                    self.label,
                    describe(status)
                );
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what}.\nProgress: {how_far}",
                    self.label
                );
            }
            self.receive((deadline - now).min(Duration::from_millis(100)));
        }
    }

    /// Waits until at least `n` transitions (not necessarily distinct) are in.
    pub fn wait_for(&mut self, n: usize, timeout: Duration) {
        self.wait_until(&format!("{n} transitions"), timeout, |seen| {
            if seen.len() >= n {
                Ok(())
            } else {
                Err(format!("{} of {n} transitions", seen.len()))
            }
        });
    }

    /// Waits until every one of `want` has been printed (by this worker, or
    /// already by `earlier` runs).
    pub fn wait_for_keys(&mut self, want: &BTreeSet<Key>, earlier: &[Seen], timeout: Duration) {
        let what = format!("{} expected transitions", want.len());
        self.wait_until(&what, timeout, |seen| {
            let got = keys(seen.iter().chain(earlier));
            let missing: Vec<&Key> = want.difference(&got).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} arrived ({} lines from this run)\n{}",
                    want.len() - missing.len(),
                    want.len(),
                    seen.len(),
                    listing("missing", &missing)
                ))
            }
        });
    }

    /// SIGTERM, as ECS sends on a task stop.
    pub fn sigterm(&mut self) {
        self.signal("-TERM");
    }

    fn signal(&mut self, sig: &str) {
        // Once reaped, the pid may belong to someone else: never signal it.
        if let Some(status) = self.reap(Duration::ZERO) {
            panic!(
                "cannot send {sig}: {} already exited ({status})",
                self.label
            );
        }
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("running kill");
        if !status.success() {
            panic!(
                "kill {sig} {pid} failed ({status}): {} is not running any more",
                self.label
            );
        }
    }

    /// SIGKILL: no drain, no flush, no goodbye.
    pub fn kill9(&mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL");
        self.wait_exit(Duration::from_secs(30))
    }

    /// Waits for the process to exit, then reads stdout to its end (lines
    /// the worker printed just before exiting are still in the pipe).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let Some(status) = self.reap(timeout) else {
            panic!("{} did not exit within {timeout:?}", self.label);
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stdout_closed && Instant::now() < deadline {
            self.receive(Duration::from_millis(100));
        }
        status
    }

    /// Polls for the exit status for up to `timeout`.
    fn reap(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited {
                return Some(s);
            }
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.exited = Some(s);
                    return Some(s);
                }
                Ok(None) if Instant::now() < deadline => {
                    // Keep the pipe drained meanwhile: a worker blocked on
                    // a full stdout would never exit.
                    self.receive(Duration::from_millis(20));
                }
                Ok(None) => return None,
                Err(e) => panic!("waiting for {}: {e}", self.label),
            }
        }
    }

    /// The process's peak resident set size so far (`VmHWM` in
    /// /proc/PID/status), in bytes. Only while it runs.
    pub fn peak_rss(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM") * 1024
    }

    /// The process's resident set size now (`VmRSS`), in bytes.
    pub fn rss(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS") * 1024
    }

    /// Everything the worker wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The stderr lines that are JSON log records (others, such as a
    /// fatal `bulkwatch: error: …`, are skipped).
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.is_object())
            .collect()
    }

    /// What to print when a test fails: who, how far, and the stderr tail.
    pub fn diagnostics(&self) -> String {
        const TAIL: usize = 40;
        let stderr = self.stderr();
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = &lines[lines.len().saturating_sub(TAIL)..];
        let last: Vec<&str> = self
            .seen
            .iter()
            .rev()
            .take(3)
            .map(|s| s.line.as_str())
            .collect();
        let partial = match &self.partial {
            Some(p) => format!("\n--- unfinished last stdout line: {p}"),
            None => String::new(),
        };
        format!(
            "--- {}: {} transitions received; exit: {}\n--- last transitions (newest first):\n{}{partial}\n--- stderr, last {} of {} lines:\n{}\n---",
            self.label,
            self.seen.len(),
            describe(self.exited),
            last.join("\n"),
            tail.len(),
            lines.len(),
            tail.join("\n"),
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        if std::thread::panicking() {
            eprintln!("\n{}", self.diagnostics());
        }
    }
}

/// One `kB` field of /proc/PID/status (Linux).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path} (this measurement needs Linux): {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} line in {path}:\n{text}"))
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "still running".to_owned(),
    }
}
