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
