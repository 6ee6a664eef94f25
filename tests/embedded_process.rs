//! The embedded store across processes: a second process on a state dir
//! fails at once, and kill -9 in the middle of checkpointing loses no
//! acknowledged checkpoint. Both re-run this test binary as a child (see
//! `child_process_helper`), because a lock held and a kill -9 are only real
//! across processes.
//!
//! They live in their own test binary, away from the unit tests, because a
//! child is forked before it execs: for that moment it holds a copy of
//! every file its parent has open, store locks included. A unit test that
//! closes a store and opens it again while a sibling test spawns could find
//! its own state dir "in use". Here the two tests take turns (`ONE_AT_A_TIME`)
//! for the same reason.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bulkwatch::store::embedded::EmbeddedStore;
use bulkwatch::store::{Checkpoint, CheckpointStore, JobStore, JobUpdate};
use bulkwatch::track::JobState;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    // A failed sibling poisons the lock; this test still runs.
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn job(sid: &str) -> JobState {
    JobState::sample(sid)
}

fn seq(s: &str) -> Checkpoint {
    Checkpoint::Sequence(s.to_owned())
}

const CHILD_ENV: &str = "BULKWATCH_EMBEDDED_TEST_CHILD";
const CHILD_DIR_ENV: &str = "BULKWATCH_EMBEDDED_TEST_DIR";

fn child(mode: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_process_helper",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, mode)
    .env(CHILD_DIR_ENV, dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    cmd
}

/// Not a test of its own: the body of the child processes. Passes at once
/// unless the parent test set `BULKWATCH_EMBEDDED_TEST_CHILD`.
#[test]
fn child_process_helper() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(CHILD_DIR_ENV).unwrap());
    let mut out = std::io::stdout().lock();
    match mode.as_str() {
        "open" => match EmbeddedStore::open(&dir) {
            Ok(_) => writeln!(out, "OPEN_OK").unwrap(),
            Err(e) => writeln!(out, "OPEN_ERR {e}").unwrap(),
        },
        "checkpoint-forever" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store = EmbeddedStore::open(&dir).unwrap().for_stream("s");
                let mut n = match store.checkpoint("shardId-0").await.unwrap() {
                    Some(Checkpoint::Sequence(s)) => s.parse::<u64>().unwrap(),
                    _ => 0,
                };
                // The previous child may have died between its job write
                // and its checkpoint, so the job can be one version ahead.
                let mut version = store
                    .load_jobs(&["JS-crash"])
                    .await
                    .unwrap()
                    .get("JS-crash")
                    .map(|v| v.version);
                loop {
                    n += 1;
                    // A job write and a checkpoint per "batch", like the worker.
                    let expected = version;
                    version = Some(version.map_or(1, |v| v + 1));
                    let conflicted = store
                        .save_jobs(&[JobUpdate {
                            state: job("JS-crash"),
                            expected_version: expected,
                        }])
                        .await
                        .unwrap();
                    assert!(conflicted.is_empty());
                    store
                        .set_checkpoint("shardId-0", &seq(&format!("{n:020}")))
                        .await
                        .unwrap();
                    // Only now is n acknowledged; the line reaches the
                    // parent before the next commit starts.
                    writeln!(out, "COMMITTED {n}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn second_process_on_the_same_dir_fails_at_once() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let _held = EmbeddedStore::open(dir.path()).unwrap();
    let started = Instant::now();
    let mut proc = child("open", dir.path()).spawn().unwrap();
    let status = loop {
        if let Some(status) = proc.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            proc.kill().unwrap();
            panic!("the second process hung on the locked state dir");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut stdout = String::new();
    std::io::Read::read_to_string(proc.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let expected = format!(
        "state dir {} is in use by another bulkwatch process",
        dir.path().display()
    );
    assert!(
        stdout.contains("OPEN_ERR") && stdout.contains(&expected),
        "child said: {stdout}"
    );
}

#[test]
fn kill_9_keeps_every_acknowledged_checkpoint() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut last_acked = 0u64;
    // Several rounds: each child resumes from the checkpoint the previous
    // one left, so recovery after a crash is itself crashed into.
    for round in 0..3u64 {
        let mut proc = child("checkpoint-forever", dir.path()).spawn().unwrap();
        let stdout = proc.stdout.take().unwrap();
        // Kill at a different point each round.
        let kill_after = last_acked + 40 + round * 37;
        let mut lines = BufReader::new(stdout).lines();
        let mut acked = last_acked;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("COMMITTED ") {
                acked = n.parse().unwrap();
                if acked >= kill_after {
                    break;
                }
            }
        }
        proc.kill().unwrap(); // SIGKILL on Unix
        proc.wait().unwrap();
        // Lines the child managed to write before it died count too.
        for line in lines {
            if let Some(n) = line.unwrap().strip_prefix("COMMITTED ") {
                acked = n.parse().unwrap();
            }
        }
        assert!(acked >= kill_after, "child died early (round {round})");

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (checkpoint, version) = rt.block_on(async {
            let store = EmbeddedStore::open(dir.path()).unwrap().for_stream("s");
            let cp = match store.checkpoint("shardId-0").await.unwrap() {
                Some(Checkpoint::Sequence(s)) => s.parse::<u64>().unwrap(),
                other => panic!("unexpected checkpoint {other:?}"),
            };
            let jobs = store.load_jobs(&["JS-crash"]).await.unwrap();
            (cp, jobs["JS-crash"].version)
        });
        // The store may be one commit ahead of the last line read (killed
        // between commit and print), never behind.
        assert!(
            checkpoint == acked || checkpoint == acked + 1,
            "round {round}: checkpoint {checkpoint}, last acknowledged {acked}"
        );
        assert!(
            version >= checkpoint,
            "job state written before its checkpoint survives with it"
        );
        last_acked = checkpoint;
    }
}
