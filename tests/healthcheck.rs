//! `bulkwatch healthcheck`, the container health check, run as ECS runs it:
//! the real binary as a child process, judged by its exit code and its one
//! line on stderr.
//!
//! - against a real worker (LocalStack's Kinesis): healthy on live and on
//!   ready, found through `BULKWATCH_OPS__LISTEN` alone as in the task
//!   definition, and unhealthy once the worker has exited;
//! - against nothing listening, a listener that never answers, a 404, and
//!   an endpoint that is off: unhealthy (exit 1, never Docker's reserved 2),
//!   each saying why.
//!
//! The first test needs LocalStack and fails saying how to start it
//! (`eval "$(localstack/up)"`) when it is not there; the others need
//! nothing.

mod support;

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use support::LIVENESS;
use support::kinesis::TestStream;
use support::worker::{Worker, bulkwatch, run_to_exit};

/// A port nothing listens on right now (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binding a free port")
        .local_addr()
        .unwrap()
        .port()
}

fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = bulkwatch();
    cmd.arg("healthcheck").args(args).envs(env.iter().copied());
    run_to_exit(cmd, Duration::from_secs(30))
}

/// The exit code and the single stderr line (asserting there is exactly
/// one, and nothing on stdout, which belongs to transitions).
fn verdict(out: &Output) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "healthcheck must print one line, got:\n{stderr}"
    );
    assert!(out.stdout.is_empty(), "healthcheck printed on stdout");
    (
        out.status.code().expect("exited, not killed"),
        lines[0].to_owned(),
    )
}

/// Probes until healthy (exit 0) or the liveness bound; returns the line.
fn wait_healthy(args: &[&str], env: &[(&str, &str)], worker: &Worker) -> String {
    let started = Instant::now();
    loop {
        let out = healthcheck(args, env);
        let (code, line) = verdict(&out);
        assert!(code == 0 || code == 1, "exit code {code}: {line}");
        if code == 0 {
            println!(
                "healthcheck {args:?}: healthy after {:.1} s: {line}",
                started.elapsed().as_secs_f64()
            );
            return line;
        }
        assert!(
            started.elapsed() < LIVENESS,
            "healthcheck {args:?} still unhealthy after {LIVENESS:?}: {line}\n{}",
            worker.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn healthy_against_a_running_worker_and_unhealthy_once_it_stopped() {
    let env = support::localstack::require();
    let stream = TestStream::create(env, "healthcheck", 1);
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut worker = Worker::start_with(
        "worker",
        &stream.name,
        state.path(),
        &[("BULKWATCH_OPS__LISTEN", listen.as_str())],
    );

    let line = wait_healthy(&["--addr", &listen], &[], &worker);
    assert!(
        line.starts_with("bulkwatch healthcheck: healthy: ")
            && line.contains(&format!("http://{listen}/health/live")),
        "{line}"
    );
    // Readiness: the stream and the store answer, the one shard is read.
    let line = wait_healthy(&["--addr", &listen, "--ready"], &[], &worker);
    assert!(line.contains("/health/ready"), "{line}");
    // As in the task definition: no flags, the port from the worker's own
    // setting (an all-interfaces address is probed on loopback).
    let any = format!("0.0.0.0:{port}");
    let line = wait_healthy(&[], &[("BULKWATCH_OPS__LISTEN", any.as_str())], &worker);
    assert!(
        line.contains(&format!("http://127.0.0.1:{port}/health/live")),
        "{line}"
    );
    // A full URL is used as given; a 404 is unhealthy.
    let out = healthcheck(&["--url", &format!("http://{listen}/no-such-path")], &[]);
    let (code, line) = verdict(&out);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("answered 404"), "{line}");

    worker.sigterm();
    let status = worker.wait_exit(LIVENESS);
    assert!(status.success(), "worker exited {status}");
    let out = healthcheck(&["--addr", &listen], &[]);
    let (code, line) = verdict(&out);
    assert_eq!(code, 1, "a stopped worker is unhealthy: {line}");
    assert!(
        line.starts_with("bulkwatch healthcheck: unhealthy: "),
        "{line}"
    );
}

#[test]
fn nothing_listening_is_unhealthy_with_the_reason() {
    let port = free_port();
    let out = healthcheck(&["--addr", &format!("127.0.0.1:{port}")], &[]);
    let (code, line) = verdict(&out);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.starts_with("bulkwatch healthcheck: unhealthy: "),
        "{line}"
    );
    assert!(line.to_lowercase().contains("refused"), "{line}");
}

#[test]
fn a_listener_that_never_answers_times_out() {
    // Accepts connections (the kernel does, from the backlog) but never
    // reads or answers: a hung worker.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let started = Instant::now();
    let out = healthcheck(&["--addr", &addr, "--timeout", "1s"], &[]);
    let took = started.elapsed();
    let (code, line) = verdict(&out);
    println!("healthcheck against a silent listener: exit {code} after {took:?}: {line}");
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("no answer within 1s"), "{line}");
    // Liveness bound only: the probe must give up by itself.
    assert!(took < Duration::from_secs(25), "took {took:?}");
    drop(listener);
}

#[test]
fn endpoint_off_or_bad_settings_exit_1_not_2() {
    let out = healthcheck(&[], &[("BULKWATCH_OPS__LISTEN", "off")]);
    let (code, line) = verdict(&out);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("off"), "{line}");

    // Docker reserves exit code 2 for health checks: a bad setting is
    // reported as unhealthy (1), naming the setting.
    let out = healthcheck(&[], &[("BULKWATCH_POLL__INTERVAL", "soon")]);
    let (code, line) = verdict(&out);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("poll"), "{line}");
}
