//! The command line through the real binary: exit codes and the messages a
//! user reads. None of these needs LocalStack: bad settings are refused
//! before any AWS call, the operator commands read an embedded store the
//! test writes through the library, and the AWS failures come from a tiny
//! fake endpoint on loopback.
//!
//! The conventions under test (src/cli/mod.rs): 2 and one line naming the
//! setting for bad configuration, 1 for a runtime failure, 0 otherwise.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use bulkwatch::store::embedded::EmbeddedStore;
use bulkwatch::store::{CheckpointStore, LeaseCheckpoint, LeaseStore, NewLease};
use support::worker::{Worker, bulkwatch, run_to_exit, spawn, without_forks};

const BOUND: Duration = Duration::from_secs(60);

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `bulkwatch ARGS` to its end.
fn run(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = bulkwatch();
    cmd.args(args).current_dir(dir).envs(env.iter().copied());
    run_to_exit(cmd, BOUND)
}

// ------------------------------------------------------------------------
// Settings: exit 2, one line naming the output (or table) and the key.

/// Each of these passed `config check` and made `run` exit 1 with
/// "starting outputs: …"; now both exit 2 with one line naming it.
#[test]
fn bad_output_settings_exit_2_in_config_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    const HOOK: &str = "[[output]]\ntype = \"webhook\"\nname = \"hook\"\n";
    let cases: &[(String, &[&str])] = &[
        (
            format!("{HOOK}url = \"http://example.com/x\"\nsecret = \"k\""),
            &["\"hook\"", "`url`", "allow_insecure_http"],
        ),
        (
            format!("{HOOK}url = \"https://example.com/x\"\nsecret_env = \"BULKWATCH_CLI_TEST_UNSET\""),
            &["\"hook\"", "`secret_env`", "BULKWATCH_CLI_TEST_UNSET", "not set"],
        ),
        (
            format!("{HOOK}url = \"https://example.com/x\""),
            &["\"hook\"", "secret"],
        ),
        (
            format!("{HOOK}url = \"https://example.com/x\"\nsecret = \"k\"\nsecret_env = \"V\""),
            &["\"hook\"", "`secret`", "`secret_env`"],
        ),
        (
            format!("{HOOK}url = \"https://example.com/x\"\nsecret = \"k\"\nstatuses = []"),
            &["\"hook\"", "statuses"],
        ),
        (
            format!("{HOOK}url = \"https://example.com/x\"\nsecret = \"k\"\nstatuses = [\"COMPLETE\"]"),
            &["\"hook\"", "`statuses`", "COMPLETE\"", "COMPLETED", "STOP_REQUESTED"],
        ),
        (
            format!("{HOOK}url = \"https://example.com/x\"\nsecret = \"k\"\nfriendly_name_pattern = \"([\""),
            &["\"hook\"", "`friendly_name_pattern`"],
        ),
        (
            "[[output]]\ntype = \"stdout\"\nname = \"x\"\n[[output]]\ntype = \"stdout\"\nname = \"x\"".into(),
            &["\"x\"", "unique"],
        ),
        (
            "[delivery]\nbackoff_min = \"1m\"\nbackoff_max = \"30s\"".into(),
            &["`delivery.backoff_min`", "`delivery.backoff_max`"],
        ),
        (
            "[delivery]\nqueue_capacity = 0".into(),
            &["`delivery.queue_capacity`"],
        ),
        (
            "[dead_letter]\ntype = \"sqs\"\nqueue_url = \"nowhere\"".into(),
            &["[dead_letter]", "`queue_url`"],
        ),
    ];
    let config = dir.path().join("bulkwatch.toml");
    let state = dir.path().join("state");
    for (body, needles) in cases {
        std::fs::write(&config, format!("stream = \"cli-test\"\n{body}\n")).unwrap();
        for command in [&["config", "check"][..], &["run"]] {
            let mut args = command.to_vec();
            args.extend(["--config", config.to_str().unwrap()]);
            args.extend(["--state-dir", state.to_str().unwrap()]);
            let out = run(&args, dir.path(), &[("BULKWATCH_OPS__LISTEN", "off")]);
            let lines = stderr_lines(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command:?} with\n{body}\nstderr: {lines:?}"
            );
            assert_eq!(
                lines.len(),
                1,
                "{command:?} with\n{body}\nstderr: {lines:?}"
            );
            for needle in *needles {
                assert!(
                    lines[0].contains(needle),
                    "{command:?} with\n{body}\nwant {needle:?} in {:?}",
                    lines[0]
                );
            }
            assert!(out.stdout.is_empty(), "stdout: {}", stdout(&out));
        }
    }
    assert!(!state.exists(), "a refused run created its state dir");
}

#[test]
fn bad_stream_name_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["config", "check", "--stream", "bad name with spaces!"],
        dir.path(),
        &[],
    );
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("`stream`"), "{lines:?}");
}

/// A TOML syntax error used to be squashed into
/// `TOML parse error at line 2, column 6   | 2 | [poll   |      ^ …`.
#[test]
fn toml_syntax_error_is_one_readable_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "stream = \"s\"\n[poll\n").unwrap();
    let out = run(
        &["config", "check", "--config", "bad.toml"],
        dir.path(),
        &[],
    );
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(line.contains("bad.toml"), "{line}");
    assert!(
        line.contains("line 2, column 6: invalid table header"),
        "{line}"
    );
    assert!(!line.contains('|') && !line.contains('^'), "{line}");
}

/// figment's wording was ``expected `one of `stream`, …``` .
#[test]
fn unknown_key_message_has_no_doubled_backticks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), "strem = \"s\"\n").unwrap();
    let out = run(&["config", "check", "--config", "c.toml"], dir.path(), &[]);
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(2), "{lines:?}");
    assert!(
        lines[0].contains("unknown key `strem` (expected one of `stream`, "),
        "{lines:?}"
    );
    assert!(
        !lines[0].contains("``") && !lines[0].contains("`one of"),
        "{lines:?}"
    );
}

// ------------------------------------------------------------------------
// Operator commands on the embedded store.

/// A store as a worker leaves it: two leases on stream `s`, one of them
/// checkpointed.
fn store_with_leases(dir: &Path) {
    without_forks(|| write_leases(dir));
}

fn write_leases(dir: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(dir).unwrap().for_stream("s");
        for id in ["shardId-000000000000", "shardId-000000000001"] {
            store
                .create_lease_if_absent(&NewLease {
                    shard_id: id.into(),
                    parent_shard_ids: vec![],
                    hash_key_range: None,
                    checkpoint: LeaseCheckpoint::TrimHorizon,
                })
                .await
                .unwrap();
        }
        store
            .set_checkpoint(
                "shardId-000000000001",
                &bulkwatch::store::Checkpoint::Sequence("49651".into()),
            )
            .await
            .unwrap();
    });
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A shard leased but not yet checkpointed used to print nothing, and the
/// checkpoint came out as `{"Sequence":"…"}`.
#[test]
fn checkpoints_list_shows_every_lease_in_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    store_with_leases(dir.path());
    let state = dir.path().to_str().unwrap();
    let out = run(
        &["checkpoints", "list", "--stream", "s", "--state-dir", state],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{}", stdout(&out));
    assert_eq!(lines[0]["shard_id"], "shardId-000000000000");
    assert_eq!(lines[0]["checkpoint"], serde_json::Value::Null);
    assert_eq!(lines[0]["start"], "TRIM_HORIZON");
    assert_eq!(lines[1]["shard_id"], "shardId-000000000001");
    assert_eq!(lines[1]["checkpoint"], "49651");
    assert_eq!(lines[1]["start"], serde_json::Value::Null);
}

#[test]
fn checkpoints_reset_of_an_unknown_shard_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    store_with_leases(dir.path());
    let state = dir.path().to_str().unwrap();
    for (stream, shard) in [("nope", "shardId-999"), ("s", "shardId-999")] {
        let out = run(
            &[
                "checkpoints",
                "reset",
                "--stream",
                stream,
                "--shard",
                shard,
                "--state-dir",
                state,
            ],
            dir.path(),
            &[],
        );
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(1), "{stream}/{shard}: {lines:?}");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("no checkpoint or lease"), "{lines:?}");
        assert!(lines[0].contains(shard), "{lines:?}");
    }
    // A real one: reset, then gone.
    let reset = &[
        "checkpoints",
        "reset",
        "--stream",
        "s",
        "--shard",
        "shardId-000000000001",
        "--state-dir",
        state,
    ];
    let out = run(reset, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    let out = run(reset, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{:?}", stderr_lines(&out));
}

/// `checkpoints list --state-dir does-not-exist-dir` used to create the
/// directory, print nothing and exit 0.
#[test]
fn read_only_commands_do_not_create_a_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["checkpoints", "list", "--stream", "s"][..],
        &[
            "checkpoints",
            "reset",
            "--stream",
            "s",
            "--shard",
            "shardId-0",
        ],
        &["jobs", "list"],
        &["jobs", "show", "JW0"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--state-dir", "does-not-exist-dir"]);
        let out = run(&args, dir.path(), &[]);
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(
            lines[0].contains("does-not-exist-dir") && lines[0].contains("does not exist"),
            "{args:?}: {lines:?}"
        );
        assert!(
            !dir.path().join("does-not-exist-dir").exists(),
            "{args:?} created the state dir"
        );
    }
}

/// Without AWS_REGION, `jobs list` on the embedded store printed several
/// long warnings about IMDS: a local command must not load the AWS config.
#[test]
fn local_commands_print_no_aws_warnings() {
    let dir = tempfile::tempdir().unwrap();
    store_with_leases(dir.path());
    let state = dir.path().to_str().unwrap();
    for args in [
        &["jobs", "list", "--state-dir", state][..],
        &["checkpoints", "list", "--stream", "s", "--state-dir", state],
    ] {
        let mut cmd = bulkwatch();
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(&k);
            }
        }
        for k in support::localstack::aws_env().vars().iter().map(|(k, _)| k) {
            cmd.env_remove(k);
        }
        cmd.args(args).args(["--log-format", "text"]);
        let out = run_to_exit(cmd, BOUND);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {:?}",
            stderr_lines(&out)
        );
        assert_eq!(stderr_lines(&out), Vec::<String>::new(), "{args:?}");
    }
}

/// The "state dir … is locked" error repeated its sentence twice.
#[test]
fn locked_state_dir_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    store_with_leases(dir.path());
    let _held = EmbeddedStore::open(dir.path()).unwrap();
    let state = dir.path().to_str().unwrap();
    let out = run(
        &["checkpoints", "list", "--stream", "s", "--state-dir", state],
        dir.path(),
        &[],
    );
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0].matches("in use by another").count(),
        1,
        "{lines:?}"
    );
}

// ------------------------------------------------------------------------
// `run` against a fake AWS endpoint.

/// An HTTP endpoint on loopback that answers every request with `status`
/// and an empty body, like a wrong endpoint or a failing load balancer.
fn fake_endpoint(status: u16) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// A wrong endpoint answering an empty 404 read `response error:
/// unhandled error: Error`; the status is now in the message, and it is
/// permanent: exit 1 at once.
#[test]
fn wrong_endpoint_error_names_the_http_status() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = fake_endpoint(404);
    let state = dir.path().join("state");
    let out = run(
        &[
            "run",
            "--stream",
            "s",
            "--state-dir",
            state.to_str().unwrap(),
            "--health-listen",
            "off",
            "--log-format",
            "json",
        ],
        dir.path(),
        &[("AWS_ENDPOINT_URL", &endpoint)],
    );
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("HTTP 404 Not Found")),
        "{lines:?}"
    );
}

/// The first ListShards failing with a transient error (here 503) used to
/// exit 1; it is retried with backoff and logged, and SIGTERM still ends
/// the process (exit 0: nothing was read, so nothing to drain).
#[test]
fn transient_startup_failures_are_retried_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = fake_endpoint(503);
    let mut worker = Worker::start_with(
        "startup-retry",
        "s",
        &dir.path().join("state"),
        &[("AWS_ENDPOINT_URL", &endpoint)],
    );
    let retries = |w: &Worker| {
        w.logs()
            .iter()
            .filter(|l| {
                l["message"].as_str().is_some_and(|m| {
                    m.starts_with("Could not list the stream's shards at start-up")
                })
            })
            .inspect(|l| {
                let error = l["error"].as_str().unwrap_or_default();
                assert!(error.contains("HTTP 503"), "{l}");
            })
            .count()
    };
    let deadline = Instant::now() + BOUND;
    while retries(&worker) < 2 {
        assert!(
            !worker.has_exited(),
            "exited instead of retrying:\n{}",
            worker.stderr()
        );
        assert!(
            Instant::now() < deadline,
            "no retries:\n{}",
            worker.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    worker.sigterm();
    let status = worker.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", worker.stderr());
}

/// `bulkwatch … | head -1`: once the reader has gone, an operator command
/// stops quietly with 0, as Unix tools do, instead of panicking (exit 101)
/// or printing "Broken pipe" as an error.
#[test]
fn a_closed_stdout_ends_an_operator_command_quietly() {
    let mut child = spawn(
        bulkwatch()
            .args(["config", "check", "--stream", "s"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )
    .expect("spawning bulkwatch config check");
    // Close the read end before the command prints its settings.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("its exit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(!stderr.contains("Broken pipe"), "stderr: {stderr}");
}

/// `jobs show ""` used to look the empty sid up and answer "no state for
/// job  (…)"; an empty sid is a usage error.
#[test]
fn an_empty_job_sid_or_shard_id_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    store_with_leases(dir.path());
    let state = dir.path().to_str().unwrap();
    let out = run(&["jobs", "show", "", "--state-dir", state], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{:?}", stderr_lines(&out));
    let text = stderr_lines(&out).join("\n");
    assert!(text.contains("JOB_SID"), "{text}");
    // So is an empty shard id for `checkpoints reset`.
    let out = run(
        &[
            "checkpoints",
            "reset",
            "--stream",
            "s",
            "--shard",
            "",
            "--state-dir",
            state,
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{:?}", stderr_lines(&out));
    let text = stderr_lines(&out).join("\n");
    assert!(text.contains("SHARD_ID"), "{text}");
}

/// Without a region every AWS call failed with the SDK's "dispatch
/// failure: missing signing region"; the setting is now named, as a
/// configuration error (exit 2).
#[test]
fn a_missing_aws_region_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = bulkwatch();
    cmd.args(["run", "--stream", "s", "--state-dir"])
        .arg(dir.path().join("state"))
        .current_dir(dir.path())
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", dir.path().join("no-such-config"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let out = run_to_exit(cmd, BOUND);
    let text = stderr_lines(&out).join("\n");
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("no AWS region"), "{text}");
    assert!(text.contains("AWS_REGION"), "{text}");
}
