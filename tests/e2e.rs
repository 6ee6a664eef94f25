//! End-to-end tests: the real `bulkwatch` binary against LocalStack.
//!
//! Each test creates its own Kinesis stream (random name) and state
//! directory, puts realistic bulk-job CloudEvents, runs `bulkwatch run` as
//! a child process and judges it only by what a user sees: transitions on
//! stdout, logs on stderr, the exit code and `bulkwatch checkpoints list`.
//! The tests run in parallel threads; nothing is shared between them but
//! LocalStack.
//!
//! Every test that needs LocalStack checks for it first and fails, saying
//! how to start it, when it is not there (`eval "$(localstack/up)"`, or
//! the README's test command). None skips silently.
//!
//! How the expectations are exact: every job walks a lifecycle whose
//! statuses are distinct and rise in rank, its events share a partition key
//! (the job sid) so they stay in order in one shard, and
//! `support::events::Model` applies the tracking rules to the events in
//! that order. So each test knows exactly which transitions must appear,
//! with which `previous_status`, and can compare sets, not counts.
//!
//! Waits are liveness bounds ([`support::LIVENESS`]), never performance
//! assertions, with one exception: the 5 s SIGTERM deadline in `shutdown`
//! is a product requirement (ECS stops tasks with SIGTERM, then SIGKILL).
//!
//! Run them with `cargo test --test e2e` (LocalStack up). They test the
//! binary cargo built alongside them; `E2E_BULKWATCH_BIN=/path/to/bulkwatch`
//! points them at another one (a release build, an installed copy).
//! `--nocapture` shows what they report but do not assert, such as the
//! number of transitions delivered twice after kill -9.

mod support;

use std::time::Duration;

use support::LIVENESS;

/// How long a worker may take to exit after SIGTERM in the tests that do
/// not measure it: well above the 5 s requirement, so that a slow exit
/// fails `shutdown` with its measured time rather than every other test
/// with a timeout.
const EXIT_BOUND: Duration = Duration::from_secs(30);

fn state_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bulkwatch-e2e-state-")
        .tempdir()
        .expect("a temp dir for the state")
}

// (a) Events in, transitions out: the main job, on a 2-shard stream, with
// the two record shapes Twilio sends (`data` as an object and as a JSON
// string) and an exact duplicate, which at-least-once delivery upstream
// makes routine.
mod transitions_out {
    use super::support::events::{self, Event};
    use super::support::kinesis::TestStream;
    use super::support::localstack;
    use super::support::transitions::{assert_same_keys, keys};
    use super::support::worker::Worker;
    use super::*;

    #[test]
    fn two_shards_give_exactly_the_expected_transitions() {
        let env = localstack::require();
        let stream = TestStream::create(env, "exact", 2);
        let jobs = events::jobs(20);
        let mut evs: Vec<Event> = events::all_events(&jobs);

        // Job 1's second event carries `data` as a JSON string. It sits in
        // the middle of the job's lifecycle, so if it were not decoded the
        // next transition's previous_status would be wrong too.
        let stringly = jobs[1].event(1).id;
        let i = evs
            .iter()
            .position(|e| e.id == stringly)
            .expect("job 1 step 1");
        evs[i] = evs[i].clone().with_data_as_string();

        // Job 0's first event, put twice in a row: same id, same bytes.
        let first = jobs[0].event(0);
        let j = evs
            .iter()
            .position(|e| e.id == first.id)
            .expect("job 0 step 0");
        evs.insert(j + 1, first);

        let want = events::expected(&evs);
        let placed = stream.put(&evs);
        let shards_used: std::collections::BTreeSet<&str> =
            placed.iter().map(|p| p.shard_id.as_str()).collect();
        assert_eq!(
            shards_used.len(),
            2,
            "20 jobs should hash into both shards; they went to {shards_used:?}"
        );

        let state = state_dir();
        let mut worker = Worker::start("worker", &stream.name, state.path());
        worker.wait_for_keys(&want, &[], LIVENESS);
        worker.sigterm();
        let status = worker.wait_exit(EXIT_BOUND);
        assert!(status.success(), "exit after SIGTERM: {status}");

        let seen = worker.transitions();
        assert_same_keys("stdout", &keys(seen), &want);
        // Each exactly once: the duplicate gave nothing, nothing repeated.
        assert_eq!(
            seen.len(),
            want.len(),
            "a clean run must print each transition once; {} lines for {} transitions",
            seen.len(),
            want.len()
        );

        // Nothing bad in the logs: no warning, no error, and the summary
        // at exit counts no bad record.
        let logs = worker.logs();
        let bad: Vec<String> = logs
            .iter()
            .filter(|l| matches!(l["level"].as_str(), Some("WARN" | "ERROR")))
            .map(|l| l.to_string())
            .collect();
        assert!(
            bad.is_empty(),
            "a clean run logged {} warnings/errors:\n{}",
            bad.len(),
            bad.join("\n")
        );
        let summary = logs
            .iter()
            .find(|l| l.get("bad_records").is_some())
            .unwrap_or_else(|| {
                panic!(
                    "no summary log line (with `bad_records`) at exit; stderr:\n{}",
                    worker.stderr()
                )
            });
        assert_eq!(summary["bad_records"], 0, "summary: {summary}");
        if let Some(n) = summary["transitions"].as_u64() {
            assert_eq!(n as usize, want.len(), "summary: {summary}");
        }
    }
}

// (b) A restart resumes from the checkpoints. Phase 2 moves the phase-1 jobs
// on and adds new jobs; the second run must print exactly phase 2's
// transitions, with the phase-1 statuses as their previous_status (so job
// state survived the restart too), and none of phase 1's again.
mod restart {
    use super::support::events::{self, Model};
    use super::support::kinesis::TestStream;
    use super::support::localstack;
    use super::support::transitions::{
        Key, assert_same_keys, cmp_sequence, highest_sequence_per_shard, keys, listing,
    };
    use super::support::worker::{Checkpoint, Worker, checkpoints};
    use super::*;

    #[test]
    fn resumes_from_checkpoints_without_repeating_transitions() {
        let env = localstack::require();
        let stream = TestStream::create(env, "restart", 2);
        let jobs = events::jobs(15);
        let newcomers = events::jobs(5);
        let phase1 = events::rounds(&jobs, 0..2);
        let mut phase2 = events::rounds(&jobs, 2..5);
        phase2.extend(events::all_events(&newcomers));
        let mut model = Model::default();
        let want1 = model.apply(&phase1);
        let want2 = model.apply(&phase2);

        let state = state_dir();
        stream.put(&phase1);
        let mut first = Worker::start("first run", &stream.name, state.path());
        first.wait_for_keys(&want1, &[], LIVENESS);
        first.sigterm();
        let status = first.wait_exit(EXIT_BOUND);
        assert!(status.success(), "first run's exit after SIGTERM: {status}");
        assert_same_keys("first run", &keys(first.transitions()), &want1);
        // The checkpoints the restart will need, as the operator sees them.
        let cps = checkpoints(&stream.name, state.path());
        for (shard, seq) in highest_sequence_per_shard(first.transitions()) {
            assert!(
                matches!(cps.get(&shard), Some(Checkpoint::Sequence(cp)) if cmp_sequence(cp, &seq).is_ge()),
                "after the first run, shard {shard} (last transition from sequence number {seq}) \
                 has no checkpoint at or past it; checkpoints: {cps:?}"
            );
        }

        // Phase 2's records follow phase 1's in every shard, so by the time
        // all of phase 2's transitions are in, a re-read of phase 1 would
        // already have been printed.
        stream.put(&phase2);
        let mut second = Worker::start("second run", &stream.name, state.path());
        second.wait_for_keys(&want2, &[], LIVENESS);
        second.sigterm();
        let status = second.wait_exit(EXIT_BOUND);
        assert!(
            status.success(),
            "second run's exit after SIGTERM: {status}"
        );

        let again: Vec<&Key> = second
            .transitions()
            .iter()
            .map(|s| &s.key)
            .filter(|k| want1.contains(*k))
            .collect();
        assert!(
            again.is_empty(),
            "after a restart the worker printed phase-1 transitions again: it did not resume \
             from its checkpoints (or lost its job state).\n{}",
            listing("repeated", &again)
        );
        assert_same_keys("second run", &keys(second.transitions()), &want2);
        assert_eq!(
            second.transitions().len(),
            want2.len(),
            "the second run printed a transition twice"
        );
    }
}

// (c) kill -9 mid-run, then a restart: at-least-once. Every transition
// arrives, in one run or the other; duplicates are allowed (records after
// the last checkpoint are read again) but must carry the same
// transition_id, and their number is reported, not asserted.
mod crash {
    use super::support::events;
    use super::support::kinesis::TestStream;
    use super::support::localstack;
    use super::support::transitions::{Seen, assert_same_keys, assert_stable_ids, keys};
    use super::support::worker::Worker;
    use super::*;

    #[test]
    fn kill_9_then_restart_loses_nothing() {
        let env = localstack::require();
        let stream = TestStream::create(env, "crash", 2);
        let jobs = events::jobs(480);
        let evs = events::all_events(&jobs);
        assert!(evs.len() >= 2000, "only {} events", evs.len());
        let want = events::expected(&evs);
        stream.put(&evs);

        // Small batches, so that the kill lands between many checkpoints
        // rather than before the first or after the last.
        let settings = [("BULKWATCH_POLL__MAX_RECORDS", "50")];
        let state = state_dir();
        let mut first = Worker::start_with("first run", &stream.name, state.path(), &settings);
        first.wait_for(want.len() * 2 / 5, LIVENESS);
        let status = first.kill9();
        assert!(!status.success(), "kill -9 should end the worker: {status}");
        let printed_before = first.transitions().len();
        assert!(
            printed_before < want.len(),
            "the first run printed all {} transitions before kill -9; the test did not kill it mid-run",
            want.len()
        );

        let mut second = Worker::start_with("second run", &stream.name, state.path(), &settings);
        second.wait_for_keys(&want, first.transitions(), LIVENESS);
        second.sigterm();
        let status = second.wait_exit(EXIT_BOUND);
        assert!(
            status.success(),
            "second run's exit after SIGTERM: {status}"
        );

        let all: Vec<&Seen> = first
            .transitions()
            .iter()
            .chain(second.transitions())
            .collect();
        assert_same_keys("both runs together", &keys(all.iter().copied()), &want);
        assert_stable_ids(all.iter().copied());
        let duplicates = all.len() - want.len();
        eprintln!(
            "crash: {} events, {} transitions; first run printed {printed_before} before kill -9 \
             (unfinished last line: {}), second run {}; {duplicates} delivered twice",
            evs.len(),
            want.len(),
            first.partial_line().is_some(),
            second.transitions().len(),
        );
    }
}

// (d) Resharding during a run: a shard is split while the worker reads,
// and events for every job keep coming, so some jobs' later events land
// in the children. Nothing may be lost, and since the parent must be read
// to its end before its children start, each job's transitions stay in
// lifecycle order on stdout.
mod resharding {
    use std::collections::BTreeMap;

    use super::support::events::{self, rank};
    use super::support::kinesis::TestStream;
    use super::support::localstack;
    use super::support::transitions::{Seen, assert_same_keys, keys};
    use super::support::worker::{Checkpoint, Worker, checkpoints};
    use super::*;

    #[test]
    fn split_during_a_run_loses_nothing_and_keeps_order() {
        let env = localstack::require();
        let stream = TestStream::create(env, "split", 2);
        let originals: Vec<String> = stream.shards().into_iter().map(|s| s.shard_id).collect();
        let parent = originals[0].clone();

        let jobs = events::jobs(60);
        let before = events::rounds(&jobs, 0..3);
        let after = events::rounds(&jobs, 3..5);
        let want = events::expected(before.iter().chain(&after));
        stream.put(&before);

        // Small batches keep the parent's records coming for a while, so
        // the split is likely to land while some are still unread.
        let state = state_dir();
        let mut worker = Worker::start_with(
            "worker",
            &stream.name,
            state.path(),
            &[("BULKWATCH_POLL__MAX_RECORDS", "10")],
        );
        worker.wait_for(5, LIVENESS);
        let children = stream.split(&parent);
        let placed = stream.put(&after);
        let into_children = placed
            .iter()
            .filter(|p| children.contains(&p.shard_id))
            .count();
        assert!(
            into_children > 0,
            "no event after the split landed in {children:?}: the test did not exercise the children"
        );

        worker.wait_for_keys(&want, &[], LIVENESS);
        worker.sigterm();
        let status = worker.wait_exit(EXIT_BOUND);
        assert!(status.success(), "exit after SIGTERM: {status}");

        let seen = worker.transitions();
        assert_same_keys("stdout", &keys(seen), &want);
        assert!(
            seen.iter().any(|s| children.contains(&s.shard_id)),
            "no transition came from the children {children:?}"
        );

        // Per job, in stdout order: strictly rising rank, and each
        // previous_status is the status printed just before.
        let mut by_job: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
        for s in seen {
            by_job.entry(&s.key.job_sid).or_default().push(s);
        }
        for (job, list) in &by_job {
            let mut previous: Option<&str> = None;
            for s in list {
                let ok_rank = previous.is_none_or(|p| rank(&s.key.status) > rank(p));
                let ok_chain = s.key.previous_status.as_deref() == previous;
                assert!(
                    ok_rank && ok_chain,
                    "job {job}'s transitions are out of order on stdout:\n{}",
                    list.iter()
                        .map(|s| format!("  {} (from {} {})", s.key, s.shard_id, s.sequence_number))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                previous = Some(&s.key.status);
            }
        }

        let cps = checkpoints(&stream.name, state.path());
        // Read to its end, the parent is checkpointed at SHARD_END; once
        // its children have started, its lease is cleaned up (as KCL does),
        // so "gone" is the other correct answer. A sequence number is not.
        assert!(
            matches!(cps.get(&parent), None | Some(Checkpoint::ShardEnd)),
            "the split parent {parent} was read to its end, so its checkpoint must be \
             ShardEnd or cleaned up; checkpoints: {cps:?}"
        );
    }
}

// (e) SIGTERM while records are flowing: the worker exits within 5 s (ECS
// sends SIGKILL after its stop timeout), with code 0, and with every shard
// checkpointed at least up to the last record whose transition it printed.
mod shutdown {
    use std::cmp::Ordering;
    use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
    use std::time::Instant;

    use super::support::events;
    use super::support::kinesis::TestStream;
    use super::support::localstack;
    use super::support::transitions::{cmp_sequence, highest_sequence_per_shard};
    use super::support::worker::{Checkpoint, Worker, checkpoints};
    use super::*;

    /// The product requirement.
    const DEADLINE: Duration = Duration::from_secs(5);

    #[test]
    fn sigterm_exits_0_within_5s_with_checkpoints_flushed() {
        let env = localstack::require();
        let stream = TestStream::create(env, "sigterm", 2);
        let jobs = events::jobs(300);
        let evs = events::all_events(&jobs);
        let state = state_dir();
        let mut worker = Worker::start_with(
            "worker",
            &stream.name,
            state.path(),
            &[("BULKWATCH_POLL__MAX_RECORDS", "20")],
        );

        let stop = AtomicBool::new(false);
        let (elapsed, status) = std::thread::scope(|scope| {
            // The feeder keeps records coming in small bursts until the
            // worker has gone, so the signal lands mid-flow.
            let feeder = scope.spawn(|| {
                for chunk in evs.chunks(60) {
                    if stop.load(AtomicOrdering::Relaxed) {
                        break;
                    }
                    stream.put(chunk);
                    std::thread::sleep(Duration::from_millis(150));
                }
            });
            worker.wait_for(100, LIVENESS);
            worker.sigterm();
            let signalled = Instant::now();
            let status = worker.wait_exit(EXIT_BOUND);
            let elapsed = signalled.elapsed();
            stop.store(true, AtomicOrdering::Relaxed);
            feeder.join().expect("the feeder thread");
            (elapsed, status)
        });
        eprintln!(
            "shutdown: exited {status} {elapsed:?} after SIGTERM, having printed {} transitions",
            worker.transitions().len()
        );
        assert!(
            elapsed <= DEADLINE,
            "the worker took {elapsed:?} to exit after SIGTERM; ECS allows {DEADLINE:?}"
        );
        assert_eq!(status.code(), Some(0), "exit code after SIGTERM: {status}");

        let cps = checkpoints(&stream.name, state.path());
        let high = highest_sequence_per_shard(worker.transitions());
        assert!(!high.is_empty(), "no transition printed before SIGTERM");
        for (shard, seq) in &high {
            match cps.get(shard) {
                Some(Checkpoint::Sequence(cp)) if cmp_sequence(cp, seq) != Ordering::Less => {}
                other => panic!(
                    "shard {shard} printed a transition from sequence number {seq}, but its \
                     checkpoint after SIGTERM is {other:?}: the drain did not flush it.\n\
                     All checkpoints: {cps:?}"
                ),
            }
        }
    }
}

// (f) Exits a user or an orchestrator acts on: 2 for bad usage or
// configuration, with one line naming the setting; 1 for a runtime failure
// such as a stream that does not exist, naming the stream.
mod cli {
    use super::support::localstack;
    use super::support::worker::{bulkwatch, run_to_exit};
    use super::*;

    fn stderr_lines(out: &std::process::Output) -> Vec<String> {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn missing_stream_exits_2_naming_stream() {
        let state = state_dir();
        let mut cmd = bulkwatch();
        cmd.args(["run", "--state-dir"]).arg(state.path());
        let out = run_to_exit(cmd, Duration::from_secs(60));
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(2), "stderr: {lines:?}");
        assert_eq!(lines.len(), 1, "want one line on stderr: {lines:?}");
        assert!(
            lines[0].contains("stream"),
            "the line must name `stream`: {lines:?}"
        );
        assert!(
            out.stdout.is_empty(),
            "stdout: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn bad_setting_exits_2_naming_it() {
        let state = state_dir();
        let mut cmd = bulkwatch();
        cmd.args(["run", "--stream", "any-stream", "--state-dir"])
            .arg(state.path())
            .env("BULKWATCH_POLL__MAX_RECORDS", "0");
        let out = run_to_exit(cmd, Duration::from_secs(60));
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(2), "stderr: {lines:?}");
        assert_eq!(lines.len(), 1, "want one line on stderr: {lines:?}");
        assert!(
            lines[0].contains("poll.max_records"),
            "the line must name `poll.max_records`: {lines:?}"
        );
    }

    #[test]
    fn unknown_stream_exits_1_naming_it() {
        localstack::require();
        let name = format!("bulkwatch-e2e-absent-{}", support::random_suffix());
        let state = state_dir();
        let mut cmd = bulkwatch();
        cmd.args(["run", "--stream", &name, "--state-dir"])
            .arg(state.path())
            .args(["--log-format", "json"]);
        let out = run_to_exit(cmd, Duration::from_secs(90));
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(1), "stderr: {lines:?}");
        assert!(
            lines.iter().any(|l| l.contains(&name)),
            "no stderr line names the stream {name}: {lines:?}"
        );
        assert!(
            out.stdout.is_empty(),
            "stdout: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

// ------------------------------------------------------------------------
// Outputs through the binary (issue 4's proofs that need the whole worker:
// Kinesis in, a webhook receiver out, the worker configured by a file).

/// A webhook receiver on loopback for the tests below: the in-process
/// server of `support::webhook_server` on its own runtime (these tests are
/// synchronous; they drive a child process).
mod receiver {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use super::support::transitions::{Key, Seen};
    use super::support::webhook_server::{Received, Script, WebhookServer};

    pub const SECRET: &str = "e2e-webhook-secret";

    /// The liveness bound for delivering a whole stream through a webhook
    /// after an outage or a crash: one request per transition, and a
    /// GetRecords call per batch against a LocalStack that other tests
    /// keep busy. Still a bound on hanging, not a performance claim.
    pub const SLOW_LIVENESS: std::time::Duration = std::time::Duration::from_secs(300);

    pub struct Receiver {
        // Declared first, so it is dropped (and stops listening) before
        // the runtime that runs it.
        server: WebhookServer,
        rt: tokio::runtime::Runtime,
    }

    impl Receiver {
        pub fn start(script: Script) -> Receiver {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the webhook receiver");
            let server = rt.block_on(WebhookServer::start(SECRET, script));
            Receiver { server, rt }
        }

        pub fn url(&self) -> String {
            self.server.url()
        }

        /// Stops listening: connections are refused from now on.
        pub fn stop(&mut self) {
            self.server.stop();
        }

        /// Listens again on the same port.
        pub fn resume(&mut self) {
            self.rt.block_on(self.server.resume());
        }

        pub fn received(&self) -> Vec<Received> {
            self.server.received()
        }

        /// The transitions the receiver accepted (answered 2xx), by
        /// `Idempotency-Key`: deduplicated the way a receiver must.
        /// Panics on an unsigned request or a body that is not a
        /// transition, or when a key's body differs from its first one
        /// in anything but the delivery.
        pub fn accepted(&self) -> BTreeMap<String, Seen> {
            let mut out: BTreeMap<String, Seen> = BTreeMap::new();
            for r in self.received() {
                assert!(
                    r.signature_ok,
                    "the worker sent a request whose signature does not verify: {:?}",
                    r.headers
                );
                if !(200..300).contains(&r.status) {
                    continue;
                }
                let seen = Seen::parse(&r.body).unwrap_or_else(|e| {
                    panic!("the webhook body is not a transition ({e}): {}", r.body)
                });
                let key = r
                    .headers
                    .get("idempotency-key")
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(
                    key, seen.transition_id,
                    "Idempotency-Key must be the transition_id"
                );
                if let Some(first) = out.get(&key) {
                    assert_eq!(
                        first.key, seen.key,
                        "one transition_id was sent for two different transitions"
                    );
                }
                out.entry(key).or_insert(seen);
            }
            out
        }

        /// The distinct transitions accepted.
        pub fn accepted_keys(&self) -> BTreeSet<Key> {
            self.accepted().into_values().map(|s| s.key).collect()
        }

        /// Requests answered 2xx, duplicates included.
        pub fn accepted_requests(&self) -> usize {
            self.received()
                .iter()
                .filter(|r| (200..300).contains(&r.status))
                .count()
        }
    }

    /// Writes the worker's config file: one webhook output to `url`, fast
    /// retries (so the tests do not wait out the 30 s default backoff cap),
    /// plus `extra` TOML. Returns its path inside `dir`.
    pub fn config(dir: &Path, url: &str, extra: &str) -> PathBuf {
        let path = dir.join("bulkwatch.toml");
        let toml = format!(
            "[[output]]\n\
             type = \"webhook\"\n\
             name = \"hook\"\n\
             url = \"{url}\"\n\
             secret = \"{SECRET}\"\n\
             connect_timeout = \"500ms\"\n\
             timeout = \"5s\"\n\
             \n\
             {extra}"
        );
        std::fs::write(&path, toml).expect("writing the config file");
        path
    }

    /// The dead-letter entries in the state dir's default file (none when
    /// the file does not exist).
    pub fn dead_letters(state_dir: &Path) -> Vec<serde_json::Value> {
        let path = state_dir.join("dead-letter.jsonl");
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| {
                        panic!(
                            "{} holds a line that is not JSON ({e}): {l}",
                            path.display()
                        )
                    })
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
    }
}

// The webhook receiver goes away for 30 s in the middle of a 2,000-event
// run. While it is away, reading must pause (the held transitions stay
// within the bound docs/outputs.md states, and the worker's peak memory
// with them); when it is back, every transition arrives.
mod webhook_outage {
    use std::time::Instant;

    use super::receiver::{self, Receiver, SLOW_LIVENESS};
    use super::support::events;
    use super::support::kinesis::TestStream;
    use super::support::localstack;
    use super::support::metrics::{self, free_addr};
    use super::support::transitions::assert_same_keys;
    use super::support::worker::Worker;
    use super::*;

    const OUTAGE: Duration = Duration::from_secs(30);
    // Small batches and queues, so that the bound (400 transitions) is far
    // below the stream: a worker that kept reading would overshoot it five
    // times over. Not smaller: each batch is a GetRecords call, and a
    // LocalStack shared by parallel tests answers those slowly.
    const MAX_RECORDS: u64 = 100;
    const QUEUE_CAPACITY: u64 = 1;
    const SHARDS: u64 = 2;
    const OUTPUTS: u64 = 1;

    #[test]
    fn receiver_down_for_30s_then_everything_arrives_within_the_memory_bound() {
        let env = localstack::require();
        let stream = TestStream::create(env, "outage", SHARDS as i32);
        let jobs = events::jobs(480);
        let evs = events::all_events(&jobs);
        assert!(evs.len() >= 2000, "only {} events", evs.len());
        let want = events::expected(&evs);
        // Every event here is a transition: records read and transitions
        // made are the same count, which the bound below relies on.
        assert_eq!(want.len(), evs.len());
        stream.put(&evs);

        let mut hook = Receiver::start(Box::new(|_| (200, "stored".into())));
        let dir = tempfile::tempdir().expect("a temp dir for the config");
        let config = receiver::config(
            dir.path(),
            &hook.url(),
            &format!(
                "[delivery]\nbackoff_min = \"50ms\"\nbackoff_max = \"1s\"\n\
                 queue_capacity = {QUEUE_CAPACITY}\n\n[poll]\nmax_records = {MAX_RECORDS}\n"
            ),
        );
        let addr = free_addr();
        let listen = addr.to_string();
        let state = state_dir();
        let mut worker = Worker::start_full(
            "worker",
            &stream.name,
            state.path(),
            &[("BULKWATCH_OPS__LISTEN", &listen)],
            &["--config".as_ref(), config.as_os_str()],
        );

        // Warm up: connections, TLS-free HTTP client, the store, the
        // allocator's arenas. The peak so far is the baseline.
        worker.wait_until("200 deliveries before the outage", LIVENESS, |_| {
            let n = hook.accepted().len();
            if n >= 200 {
                Ok(())
            } else {
                Err(format!("{n} of 200 accepted"))
            }
        });
        let baseline = worker.peak_rss();

        // The outage. Every half second, how many transitions the worker
        // holds: records read minus transitions delivered, both from its
        // own counters in one scrape.
        hook.stop();
        let stopped = Instant::now();
        let mut max_held = 0u64;
        let mut last = (0u64, 0u64);
        let mut retries = 0.0;
        while stopped.elapsed() < OUTAGE {
            std::thread::sleep(Duration::from_millis(500));
            let m = metrics::scrape(addr).unwrap_or_else(|e| {
                panic!("the worker's /metrics at {addr} did not answer during the outage: {e}")
            });
            let read = metrics::get(&m, "bulkwatch_records_read_total") as u64;
            let delivered = metrics::get(&m, "bulkwatch_output_delivered_total") as u64;
            retries = metrics::get(&m, "bulkwatch_output_retries_total");
            max_held = max_held.max(read.saturating_sub(delivered));
            last = (read, delivered);
        }
        let peak_in_outage = worker.peak_rss();
        let (read, delivered) = last;
        assert!(
            delivered >= 200,
            "the worker's bulkwatch_output_delivered_total is {delivered}, but the receiver \
             accepted at least 200 before the outage: the counters cannot be trusted"
        );
        assert!(
            retries > 0.0,
            "no failed attempt counted during a 30 s outage (bulkwatch_output_retries_total)"
        );
        assert!(
            read < evs.len() as u64,
            "the worker read all {read} records while the receiver was down: reading did not pause"
        );
        // docs/outputs.md: (queue_capacity + 1 + P) batches of B records
        // are held at most (P = shards with a deliver in flight).
        let bound = (QUEUE_CAPACITY + 1 + SHARDS) * MAX_RECORDS;
        assert!(
            max_held <= bound,
            "during the outage the worker held {max_held} transitions read but not delivered; \
             docs/outputs.md bounds it at (queue_capacity + 1 + shards) × max_records = {bound}"
        );

        hook.resume();
        worker.wait_until("every transition at the receiver", SLOW_LIVENESS, |_| {
            let got = hook.accepted_keys();
            if want.is_subset(&got) {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} distinct transitions accepted",
                    want.intersection(&got).count(),
                    want.len()
                ))
            }
        });
        let peak = worker.peak_rss();
        worker.sigterm();
        let status = worker.wait_exit(EXIT_BOUND);
        assert!(status.success(), "exit after SIGTERM: {status}");

        assert_same_keys("webhook receiver", &hook.accepted_keys(), &want);
        let dead = receiver::dead_letters(state.path());
        assert!(
            dead.is_empty(),
            "an outage within the retry policy must dead-letter nothing; got {} entries, first: {}",
            dead.len(),
            dead[0]
        );

        // Memory: the transitions held are bounded (above); the process's
        // peak must not have grown by more than what the stated bound
        // allows in bytes, with T the largest transition actually sent,
        // plus ALLOWANCE for what is not transitions (allocator arenas
        // of the threads that wake up, reqwest's retry state, log
        // buffers), measured at a few MiB on this code.
        const ALLOWANCE: u64 = 16 << 20;
        let t = hook
            .received()
            .iter()
            .map(|r| r.body.len() as u64)
            .max()
            .unwrap_or(0);
        let bound_bytes = (QUEUE_CAPACITY + 1 + SHARDS + OUTPUTS) * MAX_RECORDS * t;
        let everything =
            evs.iter().map(|e| e.payload.len() as u64).sum::<u64>() + want.len() as u64 * t;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        eprintln!(
            "webhook_outage: {} events; during the {OUTAGE:?} outage read {read}, delivered \
             {delivered}, held at most {max_held} (bound {bound}); VmHWM baseline {:.1} MiB, \
             end of outage {:.1} MiB, end {:.1} MiB; bound in bytes {:.2} MiB (T = {t} B), \
             the whole stream held would be {:.1} MiB; {} requests accepted for {} transitions",
            evs.len(),
            mib(baseline),
            mib(peak_in_outage),
            mib(peak),
            mib(bound_bytes),
            mib(everything),
            hook.accepted_requests(),
            want.len(),
        );
        assert!(
            peak_in_outage <= baseline + bound_bytes + ALLOWANCE,
            "the worker's peak RSS grew from {:.1} MiB to {:.1} MiB during the outage, more than \
             the stated bound ({:.2} MiB) plus {:.0} MiB of allowance",
            mib(baseline),
            mib(peak_in_outage),
            mib(bound_bytes),
            mib(ALLOWANCE)
        );
    }
}

// kill -9 while the only output is failing, then a restart with the output
// healthy: every transition reaches the receiver at least once, with the
// same transition_id each time.
mod crash_while_failing {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::receiver::{self, Receiver, SLOW_LIVENESS};
    use super::support::events;
    use super::support::kinesis::TestStream;
    use super::support::localstack;
    use super::support::transitions::assert_same_keys;
    use super::support::worker::Worker;
    use super::*;

    #[test]
    fn kill_9_while_the_webhook_fails_then_restart_delivers_everything() {
        let env = localstack::require();
        let stream = TestStream::create(env, "crashfail", 2);
        let jobs = events::jobs(150);
        let evs = events::all_events(&jobs);
        let want = events::expected(&evs);
        stream.put(&evs);

        let failing = Arc::new(AtomicBool::new(false));
        let flag = failing.clone();
        let hook = Receiver::start(Box::new(move |_| {
            if flag.load(Ordering::SeqCst) {
                (503, "down for maintenance".into())
            } else {
                (200, "stored".into())
            }
        }));
        let dir = tempfile::tempdir().expect("a temp dir for the config");
        let config = receiver::config(
            dir.path(),
            &hook.url(),
            "[delivery]\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n\n\
             [poll]\nmax_records = 50\n",
        );
        let args = ["--config".as_ref(), config.as_os_str()];
        let state = state_dir();

        let mut first = Worker::start_full("first run", &stream.name, state.path(), &[], &args);
        first.wait_until("100 deliveries", LIVENESS, |_| {
            let n = hook.accepted().len();
            if n >= 100 {
                Ok(())
            } else {
                Err(format!("{n} of 100 accepted"))
            }
        });
        failing.store(true, Ordering::SeqCst);
        let refused = |h: &Receiver| h.received().iter().filter(|r| r.status == 503).count();
        first.wait_until("20 refused attempts", LIVENESS, |_| {
            let n = refused(&hook);
            if n >= 20 {
                Ok(())
            } else {
                Err(format!("{n} of 20 answered 503"))
            }
        });
        let status = first.kill9();
        assert!(!status.success(), "kill -9 should end the worker: {status}");
        let before = hook.accepted_keys();
        assert!(
            before.len() < want.len(),
            "all {} transitions were accepted before kill -9; the output was not failing",
            want.len()
        );

        failing.store(false, Ordering::SeqCst);
        let mut second = Worker::start_full("second run", &stream.name, state.path(), &[], &args);
        second.wait_until("every transition at the receiver", SLOW_LIVENESS, |_| {
            let got = hook.accepted_keys();
            if want.is_subset(&got) {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} distinct transitions accepted",
                    want.intersection(&got).count(),
                    want.len()
                ))
            }
        });
        second.sigterm();
        let status = second.wait_exit(EXIT_BOUND);
        assert!(
            status.success(),
            "second run's exit after SIGTERM: {status}"
        );

        // `accepted` checks that each transition_id always names the same
        // transition; here, that each transition kept its transition_id.
        let accepted = hook.accepted();
        let mut ids: std::collections::BTreeMap<_, &str> = Default::default();
        for (id, seen) in &accepted {
            if let Some(other) = ids.insert(&seen.key, id) {
                panic!(
                    "transition {} reached the receiver with two transition_ids, {other} and {id}",
                    seen.key
                );
            }
        }
        assert_same_keys("webhook receiver", &hook.accepted_keys(), &want);
        let dead = receiver::dead_letters(state.path());
        assert!(
            dead.is_empty(),
            "failures within the retry policy must dead-letter nothing; got {}",
            dead.len()
        );
        eprintln!(
            "crash_while_failing: {} transitions; {} accepted before kill -9 (after {} refusals), \
             {} requests accepted in all ({} duplicates)",
            want.len(),
            before.len(),
            refused(&hook),
            hook.accepted_requests(),
            hook.accepted_requests() - want.len(),
        );
    }
}

// Bad records among good ones: the worker does not stall on them, each one
// lands in the dead-letter file with its reason, its raw payload (base64
// when not UTF-8), and its stream, shard and sequence number, and the good
// records around them still give every transition.
mod bad_records {
    use base64::Engine;

    use super::receiver;
    use super::support::events::{self, Event};
    use super::support::kinesis::TestStream;
    use super::support::localstack;
    use super::support::transitions::{assert_same_keys, keys};
    use super::support::worker::Worker;
    use super::*;

    fn bad(tag: &str, payload: Vec<u8>) -> Event {
        Event {
            id: format!("bad-{tag}-{}", support::random_suffix()),
            // The partition key: random, so the bad records spread over
            // the shards like any others.
            job_sid: format!("bad-{tag}-{}", support::random_suffix()),
            status: String::new(),
            payload,
        }
    }

    #[test]
    fn bad_records_are_dead_lettered_and_the_good_ones_still_flow() {
        let env = localstack::require();
        let stream = TestStream::create(env, "badrec", 2);
        let jobs = events::jobs(30);
        let good = events::all_events(&jobs);
        let want = events::expected(&good);

        let not_json = bad(
            "notjson",
            br#"{"specversion": "1.0", "type": "com.twi"#.to_vec(),
        );
        // A bulk-job event without its `id` attribute.
        let mut v: serde_json::Value =
            serde_json::from_slice(&events::jobs(1)[0].event(0).payload).expect("our JSON");
        v.as_object_mut().expect("an object").remove("id");
        let no_id = bad("noid", serde_json::to_vec(&v).expect("JSON"));
        let not_utf8 = bad(
            "notutf8",
            b"{\"id\": \"\xff\xfe\x80 Latin-1 \xe9t\xe9\"}".to_vec(),
        );
        let bads = [
            (not_json.clone(), "not JSON"),
            (no_id.clone(), "missing attribute `id`"),
            (not_utf8.clone(), "not UTF-8"),
        ];
        // Spread among the good ones: early, middle, late.
        let mut evs = good.clone();
        evs.insert(good.len() * 3 / 4, not_utf8.clone());
        evs.insert(good.len() / 2, no_id.clone());
        evs.insert(good.len() / 5, not_json.clone());
        let placed = stream.put(&evs);

        let state = state_dir();
        let mut worker = Worker::start("worker", &stream.name, state.path());
        worker.wait_for_keys(&want, &[], LIVENESS);
        worker.sigterm();
        let status = worker.wait_exit(EXIT_BOUND);
        assert!(status.success(), "exit after SIGTERM: {status}");
        assert_same_keys("stdout", &keys(worker.transitions()), &want);
        assert_eq!(
            worker.transitions().len(),
            want.len(),
            "each transition once"
        );

        let dead = receiver::dead_letters(state.path());
        assert_eq!(
            dead.len(),
            bads.len(),
            "want one dead-letter entry per bad record: {dead:#?}"
        );
        for (event, reason) in &bads {
            let at = placed
                .iter()
                .find(|p| p.event_id == event.id)
                .expect("the bad record was put");
            let entry = dead
                .iter()
                .find(|d| d["sequence_number"] == at.sequence_number.as_str())
                .unwrap_or_else(|| {
                    panic!(
                        "no dead-letter entry for the {reason:?} record at {} {}: {dead:#?}",
                        at.shard_id, at.sequence_number
                    )
                });
            let field = |k: &str| entry[k].as_str().unwrap_or_default().to_owned();
            assert!(field("reason").contains(reason), "reason: {entry}");
            assert_eq!(field("stream"), stream.name, "{entry}");
            assert_eq!(field("shard_id"), at.shard_id, "{entry}");
            assert!(
                entry["output"].is_null(),
                "a bad record has no output: {entry}"
            );
            assert_eq!(entry["payload_size"], event.payload.len(), "{entry}");
            match std::str::from_utf8(&event.payload) {
                Ok(text) => {
                    assert_eq!(field("encoding"), "utf8", "{entry}");
                    assert_eq!(field("payload"), text, "{entry}");
                }
                Err(_) => {
                    assert_eq!(field("encoding"), "base64", "{entry}");
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(field("payload"))
                        .unwrap_or_else(|e| panic!("payload is not base64 ({e}): {entry}"));
                    assert_eq!(raw, event.payload, "the raw bytes, exactly: {entry}");
                }
            }
        }

        // The summary at exit counts them.
        let logs = worker.logs();
        let summary = logs
            .iter()
            .find(|l| l.get("bad_records").is_some())
            .unwrap_or_else(|| panic!("no summary log line with `bad_records` at exit"));
        assert_eq!(summary["bad_records"], bads.len(), "summary: {summary}");
    }
}

// (k) A stream deleted and created again under the same name: the store's
// checkpoints name sequence numbers of the old stream, which Kinesis
// refuses. The worker must say so once, plainly, with the way out (it
// used to retry with warnings that looked like a passing outage), and the
// way out must work.
mod recreated_stream {
    use super::support::events;
    use super::support::kinesis::TestStream;
    use super::support::localstack;
    use super::support::worker::{Worker, bulkwatch, run_to_exit};
    use super::*;

    const HINT: &str = "Kinesis refuses to read this shard from its checkpoint";

    #[test]
    fn old_checkpoints_are_named_and_reset_recovers() {
        let env = localstack::require();
        let stream = TestStream::create(env, "recreated", 1);
        let state = state_dir();

        // A checkpoint in the old stream.
        let first = events::all_events(&events::jobs(3));
        stream.put(&first);
        let mut worker = Worker::start("before", &stream.name, state.path());
        worker.wait_for_keys(&events::expected(&first), &[], LIVENESS);
        worker.sigterm();
        assert!(worker.wait_exit(EXIT_BOUND).success());

        stream.recreate(1);
        let second = events::all_events(&events::jobs(4)[3..]);
        stream.put(&second);

        let mut worker = Worker::start_with(
            "after",
            &stream.name,
            state.path(),
            &[("BULKWATCH_OPS__LISTEN", "127.0.0.1:0")],
        );
        let deadline = std::time::Instant::now() + LIVENESS;
        let hint = loop {
            worker.collect(Duration::from_millis(200));
            if let Some(l) = worker
                .logs()
                .into_iter()
                .find(|l| l["message"].as_str().is_some_and(|m| m.contains(HINT)))
            {
                break l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line saying the checkpoint does not fit the stream; stderr:\n{}",
                worker.stderr()
            );
        };
        assert_eq!(hint["level"], "ERROR", "{hint}");
        assert_eq!(hint["shard"], "shardId-000000000000", "{hint}");
        assert!(
            hint["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!(
                    "bulkwatch checkpoints reset --stream {} --shard shardId-000000000000",
                    stream.name
                ))),
            "{hint}"
        );
        // Once, not per retry: wait through a few more refusals.
        worker.collect(Duration::from_secs(5));
        let times = worker
            .logs()
            .iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(HINT)))
            .count();
        assert_eq!(times, 1, "the hint must be logged once");
        assert!(!worker.has_exited(), "the worker keeps running");
        // And it is not ready: nothing of that shard flows until someone
        // acts, which is what readiness is for.
        let addr = worker
            .logs()
            .into_iter()
            .find(|l| l["message"] == "Health and metrics endpoint listening.")
            .and_then(|l| l["address"].as_str().map(str::to_owned))
            .expect("the health endpoint's address in the logs");
        let mut probe = bulkwatch();
        probe.args(["healthcheck", "--ready", "--addr", &addr]);
        let out = run_to_exit(probe, LIVENESS);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "healthcheck --ready: {said}");
        assert!(said.contains("Kinesis refuses to read"), "{said}");
        worker.sigterm();
        worker.wait_exit(EXIT_BOUND);

        // The way out the hint gives.
        let mut reset = bulkwatch();
        reset.args([
            "checkpoints",
            "reset",
            "--stream",
            &stream.name,
            "--shard",
            "shardId-000000000000",
            "--state-dir",
        ]);
        reset.arg(state.path());
        let out = run_to_exit(reset, LIVENESS);
        assert!(
            out.status.success(),
            "checkpoints reset: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut worker = Worker::start("reset", &stream.name, state.path());
        worker.wait_for_keys(&events::expected(&second), &[], LIVENESS);
        worker.sigterm();
        assert!(worker.wait_exit(EXIT_BOUND).success());
    }
}

// (l) `bulkwatch run | head`: the reader of stdout goes away. The worker
// used to retry the closed pipe until `delivery.max_record_age` and then
// dead-letter every transition of the stream; it now stops at once, exit 0
// like a command-line tool on a closed pipe, with nothing checkpointed
// past what it could not write, so the next run prints it.
mod stdout_closed {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Instant;

    use super::support::events;
    use super::support::kinesis::TestStream;
    use super::support::localstack;
    use super::support::transitions::{Seen, keys};
    use super::support::worker::{Worker, bulkwatch, spawn};
    use super::*;

    /// On a quiet stream no write finds the closed pipe: the worker must
    /// notice by itself (it used to run until the next transition came).
    #[test]
    fn a_closed_stdout_stops_the_worker_on_a_quiet_stream_too() {
        let env = localstack::require();
        let stream = TestStream::create(env, "stdout-quiet", 1);
        let state = state_dir();
        let stderr_path = state.path().join("stderr");
        let mut cmd = bulkwatch();
        cmd.args(["run", "--stream", &stream.name, "--state-dir"])
            .arg(state.path().join("state"))
            .args(["--health-listen", "off", "--log-format", "json"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let mut child = spawn(&mut cmd).expect("starting bulkwatch run");
        drop(child.stdout.take());
        let deadline = Instant::now() + LIVENESS;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "bulkwatch still runs {LIVENESS:?} after its stdout was closed on a quiet stream:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "{stderr}");
        assert_eq!(stderr.matches("stdout was closed").count(), 1, "{stderr}");
    }

    #[test]
    fn a_closed_stdout_stops_the_worker_and_loses_nothing() {
        let env = localstack::require();
        let stream = TestStream::create(env, "stdout-closed", 1);
        // Well over a pipe's 64 KiB of transitions, so the worker cannot
        // write them all before the reader hangs up.
        let evs = events::all_events(&events::jobs(60));
        let want = events::expected(&evs);
        assert!(want.len() > 200, "{} transitions", want.len());
        stream.put(&evs);
        let state = state_dir();

        let stderr_path = state.path().join("first-run.stderr");
        let mut cmd = bulkwatch();
        cmd.args(["run", "--stream", &stream.name, "--state-dir"])
            .arg(state.path().join("state"))
            .args(["--health-listen", "off", "--log-format", "json"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let mut child = spawn(&mut cmd).expect("starting bulkwatch run");
        // Read one transition, then hang up, as `head -n 1` does.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let first = Seen::parse(first.trim_end()).expect("a transition line");

        let deadline = Instant::now() + LIVENESS;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "bulkwatch still runs {LIVENESS:?} after its stdout was closed:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        assert_eq!(
            status.code(),
            Some(0),
            "exit after stdout closed:\n{stderr}"
        );
        assert_eq!(
            stderr.matches("stdout was closed").count(),
            1,
            "one line says why it stopped:\n{stderr}"
        );
        assert!(
            !stderr.contains("dead-letter") && !stderr.contains("Dead-letter"),
            "nothing may be dead-lettered for a closed stdout:\n{stderr}"
        );

        // The next run prints everything the first could not.
        let mut worker = Worker::start("second", &stream.name, &state.path().join("state"));
        let rest: std::collections::BTreeSet<_> =
            want.iter().filter(|k| **k != first.key).cloned().collect();
        worker.wait_for_keys(&rest, &[], LIVENESS);
        worker.sigterm();
        assert!(worker.wait_exit(EXIT_BOUND).success());
        let mut all = keys(worker.transitions());
        all.insert(first.key);
        assert_eq!(all, want);
    }
}
