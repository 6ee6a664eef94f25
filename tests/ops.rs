//! Operations tests: the real `bulkwatch` binary against LocalStack (and
//! moto for DynamoDB), judged the way an operator sees it.
//!
//! - `endpoint`: `/metrics` scraped and parsed, its counters checked against
//!   the events put; `/health/live` and `/health/ready` codes and JSON,
//!   including readiness going false when the stream is deleted and while a
//!   SIGTERM drain is under way.
//! - `redaction`: a webhook secret and an AWS secret key, with debug logging
//!   on, never show up on stderr, in `config check` or in the config's
//!   `Debug`.
//! - `shutdown`: SIGTERM under load exits 0 with checkpoints flushed; the
//!   measured time is printed, and only a generous liveness bound (grace
//!   period + 5 s) is asserted.
//! - `jobs`: `bulkwatch jobs list|show` on the embedded store (the state the
//!   shutdown test's worker left) and on DynamoDB.
//!
//! Like `tests/e2e.rs`, every test creates its own stream, state directory
//! and tables (random names), and fails saying how to start LocalStack when
//! it is not there (`eval "$(localstack/up)"`); none skips.
//! `cargo test --test ops -- --nocapture` shows the measured numbers.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::LIVENESS;
use support::events::{self, Event};
use support::kinesis::TestStream;
use support::localstack;
use support::worker::{Worker, bulkwatch, run_to_exit};

fn state_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bulkwatch-ops-state-")
        .tempdir()
        .expect("a temp dir for the state")
}

// ------------------------------------------------------------- the endpoint

/// The endpoint on a port the kernel picks, so parallel tests never
/// collide; the worker logs the bound address.
const LISTEN: (&str, &str) = ("BULKWATCH_OPS__LISTEN", "127.0.0.1:0");

/// Finds the bound address in the worker's "listening" log line.
fn endpoint(worker: &Worker) -> SocketAddr {
    let deadline = Instant::now() + LIVENESS;
    loop {
        let found = worker.logs().into_iter().find_map(|l| {
            (l["message"] == "Health and metrics endpoint listening.")
                .then(|| l["address"].as_str().and_then(|a| a.parse().ok()))
                .flatten()
        });
        if let Some(addr) = found {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never logged the health endpoint's address"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET over a plain socket (HTTP/1.0: the server closes after answering).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connecting to the health endpoint {addr}: {e}"));
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
    write!(sock, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("sending a request");
    let mut response = String::new();
    sock.read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("reading the answer to GET {path}: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no header/body split in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status in {head:?}"));
    (status, body.to_owned())
}

/// A health answer: its status code and JSON body, which must have the
/// documented shape whatever the code.
fn health(addr: SocketAddr, which: &str) -> (u16, Value) {
    let (code, body) = get(addr, &format!("/health/{which}"));
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/health/{which} answered {code} with non-JSON ({e}): {body}"));
    let want = if code == 200 { "ok" } else { "fail" };
    assert_eq!(v["status"], want, "/health/{which} answered {code}: {v}");
    assert!(
        v["checks"].is_object(),
        "/health/{which} has no checks: {v}"
    );
    (code, v)
}

/// Polls a health check until it answers `code`.
fn wait_health(addr: SocketAddr, which: &str, code: u16, why: &str) -> Value {
    let deadline = Instant::now() + LIVENESS;
    loop {
        let (c, v) = health(addr, which);
        if c == code {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "/health/{which} still answers {c} after {LIVENESS:?}, expected {code} ({why}): {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed: the samples and each family's declared type.
#[derive(Debug)]
struct Scrape {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
    text: String,
}

impl Scrape {
    fn of(addr: SocketAddr) -> Scrape {
        let (code, text) = get(addr, "/metrics");
        assert_eq!(code, 200, "/metrics answered {code}: {text}");
        Scrape::parse(&text)
    }

    /// A small parser of the Prometheus text format 0.0.4 (where a
    /// counter's TYPE line names it with its `_total` suffix, unlike
    /// OpenMetrics): `# TYPE name type` lines, and
    /// `name{k="v",...} value` samples. Panics on a line it cannot read,
    /// so a malformed exposition fails the test.
    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                    panic!("bad TYPE line {line:?}");
                };
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value in sample line {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                    (name.to_owned(), parse_labels(body, line))
                }
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Scrape {
            samples,
            types,
            text: text.to_owned(),
        }
    }

    /// The samples of `name` whose labels include every pair of `labels`.
    fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The sum of those samples; panics, showing the scrape, if there is
    /// none (a metric that is missing is a failure, not a zero).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let s = self.series(name, labels);
        assert!(
            !s.is_empty(),
            "no sample {name}{labels:?} in the scrape:\n{}",
            self.text
        );
        s.iter().map(|s| s.value).sum()
    }

    fn kind(&self, family: &str) -> &str {
        self.types
            .get(family)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no # TYPE for {family} in:\n{}", self.text))
    }
}

/// `k="v",k2="v2"` with `\"`, `\\` and `\n` escapes.
fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return labels;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} unquoted in {line:?}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("dangling escape in {line:?}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
}

/// Scrapes until `done` holds, returning that scrape.
fn wait_metrics(addr: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + LIVENESS;
    loop {
        let s = Scrape::of(addr);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what} within {LIVENESS:?}:\n{}",
            s.text
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A record that is not a CloudEvent: it must be dead-lettered.
fn bad_record() -> Event {
    Event {
        id: "not-an-event".into(),
        job_sid: format!("JWbad{}", support::random_suffix()),
        status: String::new(),
        payload: b"this is not JSON".to_vec(),
    }
}

mod endpoint {
    use super::*;

    #[test]
    fn metrics_count_what_was_put_and_health_follows_the_stream() {
        let env = localstack::require();
        let stream = TestStream::create(env, "ops-metrics", 2);
        let state = state_dir();
        let mut worker = Worker::start_with(
            "worker",
            &stream.name,
            state.path(),
            // A short window, so a deleted stream shows within seconds.
            &[LISTEN, ("BULKWATCH_OPS__READY_WINDOW", "2s")],
        );
        let addr = endpoint(&worker);

        let ready = wait_health(addr, "ready", 200, "an idle worker holding its leases");
        assert_eq!(ready["checks"]["leases"]["ok"], true, "{ready}");
        assert_eq!(ready["checks"]["stream"]["ok"], true, "{ready}");
        assert_eq!(ready["checks"]["store"]["ok"], true, "{ready}");
        let (live, body) = health(addr, "live");
        assert_eq!(live, 200, "{body}");

        let before = Scrape::of(addr);
        assert_eq!(before.kind("bulkwatch_records_read_total"), "counter");
        assert_eq!(before.kind("bulkwatch_leases_held"), "gauge");
        // Ready means the leases are held. (At start-up, before the first
        // shard listing had created any lease, an empty table once read as
        // "no shard left to read" and made the worker ready too early.)
        assert_eq!(before.sum("bulkwatch_leases_held", &[]), 2.0, "{ready}");
        assert!(
            ready["checks"]["leases"]["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("holding 2 of 2")),
            "{ready}"
        );
        assert_eq!(before.sum("bulkwatch_leases_active", &[]), 2.0);
        assert!(
            before
                .series("bulkwatch_records_read_total", &[])
                .iter()
                .all(|s| s.value == 0.0),
            "records read before any was put:\n{}",
            before.text
        );

        // 12 jobs through their lifecycles, one exact duplicate, one bad
        // record.
        let jobs = events::jobs(12);
        let mut evs = events::all_events(&jobs);
        let want = events::expected(&evs);
        let job_events = evs.len() + 1;
        evs.push(jobs[0].event(0));
        evs.push(bad_record());
        stream.put(&evs);
        let bytes: usize = evs.iter().map(|e| e.payload.len()).sum();
        worker.wait_for_keys(&want, &[], LIVENESS);

        let n = evs.len() as f64;
        let m = wait_metrics(addr, "every record read and checkpointed", |s| {
            s.series("bulkwatch_records_read_total", &[])
                .iter()
                .map(|x| x.value)
                .sum::<f64>()
                == n
                && s.series("bulkwatch_shard_batch_in_flight_seconds", &[])
                    .iter()
                    .all(|x| x.value == 0.0)
        });
        let shards: BTreeSet<&str> = m
            .series("bulkwatch_records_read_total", &[])
            .iter()
            .filter(|s| s.value > 0.0)
            .filter_map(|s| s.labels.get("shard").map(String::as_str))
            .collect();
        assert_eq!(shards.len(), 2, "records read per shard:\n{}", m.text);
        assert_eq!(m.sum("bulkwatch_bytes_read_total", &[]), bytes as f64);
        assert_eq!(
            m.sum("bulkwatch_records_decoded_total", &[("class", "bulk_job")]),
            job_events as f64
        );
        assert_eq!(
            m.sum("bulkwatch_records_decoded_total", &[("class", "bad")]),
            1.0
        );
        assert_eq!(
            m.sum("bulkwatch_events_dropped_total", &[("reason", "duplicate")]),
            1.0
        );
        assert_eq!(
            m.sum("bulkwatch_events_dropped_total", &[("reason", "stale")]),
            0.0
        );
        // Transitions by status, against the model's.
        let mut by_status: BTreeMap<String, f64> = BTreeMap::new();
        for k in &want {
            *by_status.entry(k.status.clone()).or_default() += 1.0;
        }
        for (status, count) in &by_status {
            assert_eq!(
                m.sum("bulkwatch_transitions_total", &[("status", status)]),
                *count,
                "transitions to {status}"
            );
        }
        let delivered = m.sum("bulkwatch_output_delivered_total", &[("kind", "stdout")]);
        assert_eq!(delivered, want.len() as f64);
        assert_eq!(m.kind("bulkwatch_output_delivery_seconds"), "histogram");
        assert!(m.sum("bulkwatch_output_delivery_seconds_count", &[]) >= 1.0);
        assert!(m.sum("bulkwatch_output_attempt_seconds_count", &[]) >= 1.0);
        assert_eq!(m.sum("bulkwatch_output_retries_total", &[]), 0.0);
        assert_eq!(m.sum("bulkwatch_output_failures_total", &[]), 0.0);
        assert_eq!(
            m.sum("bulkwatch_dead_letters_total", &[("reason", "bad_record")]),
            1.0
        );
        assert!(m.sum("bulkwatch_checkpoints_total", &[]) >= 2.0);
        for gauge in [
            "bulkwatch_shard_millis_behind_latest",
            "bulkwatch_shard_iterator_age_seconds",
            "bulkwatch_shard_checkpoint_age_seconds",
        ] {
            assert_eq!(
                m.series(gauge, &[]).len(),
                2,
                "{gauge}: one series per shard:\n{}",
                m.text
            );
        }
        assert_eq!(m.sum("bulkwatch_leases_held", &[]), 2.0);
        assert_eq!(m.sum("bulkwatch_shard_readers", &[]), 2.0);
        assert!(m.sum("bulkwatch_heartbeat_age_seconds", &[]) >= 0.0);
        assert_eq!(m.sum("bulkwatch_shutting_down", &[]), 0.0);

        // The stream goes away: readiness must say so, liveness must not
        // (the readers are retrying, which is progress; a restart would not
        // bring the stream back).
        let name = stream.name.clone();
        drop(stream);
        let not_ready = wait_health(addr, "ready", 503, "the stream was deleted");
        assert_eq!(
            not_ready["checks"]["stream"]["ok"], false,
            "after deleting {name}: {not_ready}"
        );
        let (live, body) = health(addr, "live");
        assert_eq!(live, 200, "liveness after the stream was deleted: {body}");
        eprintln!("ops: readiness with the stream deleted: {not_ready}");

        worker.sigterm();
        let status = worker.wait_exit(LIVENESS);
        // Draining with a deleted stream still exits (0, or 1 if a batch
        // could not finish): what matters is that it exits.
        assert!(status.code().is_some(), "exit: {status}");
    }

    /// A worker whose only output is a webhook on a port nothing listens
    /// on, with `grace` as its shutdown grace, once it has put a few jobs'
    /// events and failed to deliver them: its drain can never finish.
    fn worker_with_a_down_output(
        env: &localstack::AwsEnv,
        label: &str,
        grace: &str,
    ) -> (TestStream, tempfile::TempDir, Worker, SocketAddr) {
        let stream = TestStream::create(env, label, 1);
        let state = state_dir();
        // A port nothing listens on: every delivery attempt fails.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let config = state.path().join("bulkwatch.toml");
        std::fs::write(
            &config,
            format!(
                "[[output]]\ntype = \"webhook\"\nname = \"down\"\nurl = \"http://{closed}/hook\"\n\
                 secret = \"k\"\nconnect_timeout = \"200ms\"\n\
                 [delivery]\nbackoff_min = \"50ms\"\nbackoff_max = \"200ms\"\n"
            ),
        )
        .expect("writing the config");
        let worker = Worker::start_with(
            "worker",
            &stream.name,
            state.path(),
            &[
                LISTEN,
                ("BULKWATCH_CONFIG", config.to_str().expect("utf-8 path")),
                ("BULKWATCH_SHUTDOWN_GRACE", grace),
            ],
        );
        let addr = endpoint(&worker);
        wait_health(addr, "ready", 200, "started");
        stream.put(&events::all_events(&events::jobs(3)));
        wait_metrics(addr, "failed webhook attempts", |s| {
            s.series("bulkwatch_output_retries_total", &[("output", "down")])
                .iter()
                .any(|x| x.value > 0.0)
        });
        (stream, state, worker, addr)
    }

    /// A SIGTERM drain that cannot finish (the only output is down) must
    /// turn readiness false at once while liveness stays true, and the
    /// grace period must bound the exit.
    #[test]
    fn draining_worker_is_live_but_not_ready() {
        let env = localstack::require();
        let grace = Duration::from_secs(5);
        let (_stream, _state, mut worker, addr) = worker_with_a_down_output(env, "ops-drain", "5s");

        worker.sigterm();
        let signalled = Instant::now();
        let not_ready = wait_health(addr, "ready", 503, "draining after SIGTERM");
        let took = signalled.elapsed();
        assert_eq!(not_ready["checks"]["shutdown"]["ok"], false, "{not_ready}");
        let (live, body) = health(addr, "live");
        assert_eq!(live, 200, "liveness while draining: {body}");
        assert_eq!(Scrape::of(addr).sum("bulkwatch_shutting_down", &[]), 1.0);

        let status = worker.wait_exit(LIVENESS);
        let elapsed = signalled.elapsed();
        eprintln!(
            "ops: readiness false {took:?} after SIGTERM; exit {status} after {elapsed:?} (grace {grace:?})"
        );
        // The drain could not finish: exit 1, the undelivered batch is
        // read again on restart.
        assert_eq!(status.code(), Some(1), "exit after the grace ran out");
        assert!(
            elapsed < grace + Duration::from_secs(5),
            "exit took {elapsed:?}, grace is {grace:?}"
        );
        let ran_out = worker
            .logs()
            .iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("grace period ran out"))
            })
            .count();
        assert_eq!(ran_out, 1, "one log line says the grace period ran out");
    }

    /// A drain that cannot finish (its only output is down): a SIGTERM
    /// repeated at once (as GNU `timeout` or a process-group kill sends it)
    /// is the same request and must not force the exit; a second signal a
    /// while later exits at once with 130, well before the grace period.
    #[test]
    fn second_signal_forces_exit_but_an_echo_does_not() {
        let env = localstack::require();
        let grace = Duration::from_secs(60);
        let (_stream, _state, mut worker, addr) =
            worker_with_a_down_output(env, "ops-second-signal", "60s");

        worker.sigterm();
        let signalled = Instant::now();
        worker.sigterm();
        // Past the echo window: still draining (sigterm() panics if the
        // process has exited, which is what an echo forcing the exit does).
        std::thread::sleep(bulkwatch::ops::shutdown::ECHO_WINDOW + Duration::from_millis(500));
        let (live, body) = health(addr, "live");
        assert_eq!(live, 200, "still draining after the echoed SIGTERM: {body}");
        worker.sigterm();
        let status = worker.wait_exit(Duration::from_secs(10));
        let elapsed = signalled.elapsed();
        eprintln!(
            "ops: forced exit {status} {elapsed:?} after the first SIGTERM (grace {grace:?})"
        );
        assert_eq!(
            status.code(),
            Some(bulkwatch::ops::shutdown::FORCED_EXIT_CODE),
            "exit code after the second signal"
        );
        assert!(
            elapsed < grace / 2,
            "the second signal took {elapsed:?} to end the process"
        );
    }
}

// ----------------------------------------------------------------- liveness

mod liveness {
    use super::*;
    use crate::support::webhook_server::WebhookServer;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the webhook receiver")
    }

    fn webhook_config(dir: &Path, url: &str, extra: &str) -> std::path::PathBuf {
        let path = dir.join("bulkwatch.toml");
        std::fs::write(
            &path,
            format!(
                "[[output]]\ntype = \"webhook\"\nname = \"hook\"\nurl = \"{url}\"\nsecret = \"k\"\n{extra}"
            ),
        )
        .expect("writing the config");
        path
    }

    /// A webhook that answers 429 with a Retry-After longer than
    /// `ops.live_stall`: the worker is waiting as asked, which is alive. A
    /// failing liveness would have ECS restart a healthy task, which would
    /// then hit the webhook again at once. Readiness reports the degraded
    /// delivery instead.
    #[test]
    fn retry_after_longer_than_live_stall_stays_live() {
        let env = localstack::require();
        let rt = runtime();
        let server = rt.block_on(WebhookServer::start(
            "k",
            Box::new(|_| (429, "slow down".into())),
        ));
        server.add_header("Retry-After", "8");
        let stream = TestStream::create(env, "ops-retry-after", 1);
        let state = state_dir();
        let config = webhook_config(state.path(), &server.url(), "");
        let mut worker = Worker::start_with(
            "worker",
            &stream.name,
            state.path(),
            &[
                LISTEN,
                ("BULKWATCH_CONFIG", config.to_str().expect("utf-8 path")),
                ("BULKWATCH_OPS__LIVE_STALL", "2s"),
                ("BULKWATCH_OPS__READY_WINDOW", "2s"),
            ],
        );
        let addr = endpoint(&worker);
        wait_health(addr, "ready", 200, "started");
        stream.put(&events::all_events(&events::jobs(2)));
        let deadline = Instant::now() + LIVENESS;
        while server.received().is_empty() {
            assert!(Instant::now() < deadline, "the webhook was never called");
            std::thread::sleep(Duration::from_millis(100));
        }
        let first = Instant::now();
        // Well past live_stall, within the Retry-After.
        while first.elapsed() < Duration::from_secs(6) {
            let (code, body) = health(addr, "live");
            assert_eq!(
                code,
                200,
                "liveness failed {:?} into an 8 s Retry-After (live_stall 2 s): {body}",
                first.elapsed()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        // The Retry-After was honoured: a transition's attempts are 8 s
        // apart (not the 200 ms of the default backoff).
        let mut by_id: BTreeMap<String, Vec<std::time::SystemTime>> = BTreeMap::new();
        for r in server.received() {
            by_id
                .entry(r.headers["idempotency-key"].clone())
                .or_default()
                .push(r.at);
        }
        for (id, times) in &by_id {
            for w in times.windows(2) {
                let gap = w[1].duration_since(w[0]).unwrap_or_default();
                assert!(
                    gap >= Duration::from_secs(7),
                    "{id}: attempts {gap:?} apart, Retry-After is 8 s"
                );
            }
        }
        let not_ready = wait_health(addr, "ready", 503, "an output failing past ready_window");
        assert_eq!(not_ready["checks"]["delivery"]["ok"], false, "{not_ready}");
        let m = Scrape::of(addr);
        assert_eq!(
            m.sum(
                "bulkwatch_heartbeat_overdue_seconds",
                &[("stage", "output"), ("name", "hook")]
            ),
            0.0,
            "{}",
            m.text
        );
        eprintln!("liveness: ready while waiting out a Retry-After: {not_ready}");
        worker.sigterm();
        let status = worker.wait_exit(LIVENESS);
        assert!(status.code().is_some(), "exit: {status}");
    }

    /// After `shutdown_grace` runs out, an output finishes the requests in
    /// flight and starts no new one, and the worker says so once.
    #[test]
    fn slow_webhook_starts_no_request_after_the_grace_ran_out() {
        let env = localstack::require();
        let rt = runtime();
        let server = rt.block_on(WebhookServer::start("k", Box::new(|_| (200, "ok".into()))));
        server.set_delay(Duration::from_millis(800));
        let stream = TestStream::create(env, "ops-slow-drain", 1);
        let state = state_dir();
        let config = webhook_config(state.path(), &server.url(), "concurrency = 4\n");
        let mut worker = Worker::start_with(
            "worker",
            &stream.name,
            state.path(),
            &[
                LISTEN,
                ("BULKWATCH_CONFIG", config.to_str().expect("utf-8 path")),
                ("BULKWATCH_SHUTDOWN_GRACE", "2s"),
            ],
        );
        let addr = endpoint(&worker);
        wait_health(addr, "ready", 200, "started");
        // 60 jobs' first event: one batch of 60 transitions for 60 jobs,
        // one wave of requests, 4 at a time, 0.8 s each: ~12 s of work.
        stream.put(&events::rounds(&events::jobs(60), 0..1));
        let deadline = Instant::now() + LIVENESS;
        while server.received().len() < 4 {
            assert!(Instant::now() < deadline, "the webhook was never called");
            std::thread::sleep(Duration::from_millis(50));
        }
        worker.sigterm();
        let status = worker.wait_exit(LIVENESS);
        assert_eq!(status.code(), Some(1), "the drain could not finish: exit 1");

        let logs = worker.logs();
        let ran_out: Vec<&Value> = logs
            .iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("grace period ran out"))
            })
            .collect();
        assert_eq!(ran_out.len(), 1, "one warning: {ran_out:?}");
        let warned = time::OffsetDateTime::parse(
            ran_out[0]["timestamp"].as_str().expect("a timestamp"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("an RFC 3339 timestamp");
        let warned = std::time::SystemTime::from(warned);
        let got = server.received();
        // Slack for a request already on the wire when the grace ran out.
        let late: Vec<_> = got
            .iter()
            .filter(|r| r.at > warned + Duration::from_millis(300))
            .collect();
        eprintln!(
            "liveness: {} requests in all, {} after the grace ran out",
            got.len(),
            late.len()
        );
        assert!(
            late.is_empty(),
            "{} webhook requests started after the grace ran out (of {})",
            late.len(),
            got.len()
        );
        assert!(got.len() < 60, "the drain was cut short: {}", got.len());
    }
}

// ---------------------------------------------------------------- redaction

mod redaction {
    use super::*;
    use crate::support::webhook_server::WebhookServer;

    const HOOK_SECRET: &str = "whsec-Zq8pL2vN4xR7tK1m";
    const AWS_SECRET: &str = "awsSecret/Kx93hQ0pLm7Vb2Nc5Rt8Wy1Zs4Df6Gh";

    fn config(dir: &Path, url: &str) -> std::path::PathBuf {
        let path = dir.join("bulkwatch.toml");
        std::fs::write(
            &path,
            format!(
                "[[output]]\ntype = \"stdout\"\n\
                 [[output]]\ntype = \"webhook\"\nname = \"hook\"\nurl = \"{url}\"\nsecret = \"{HOOK_SECRET}\"\n\
                 [[output]]\ntype = \"webhook\"\nname = \"hook-env\"\nurl = \"{url}\"\nsecret_env = \"OPS_TEST_HOOK_KEY\"\n"
            ),
        )
        .expect("writing the config");
        path
    }

    #[test]
    fn no_secret_reaches_stderr_or_config_check() {
        let env = localstack::require();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the webhook receiver");
        let server = rt.block_on(WebhookServer::start(
            HOOK_SECRET,
            Box::new(|_| (200, "ok".into())),
        ));
        let stream = TestStream::create(env, "ops-redact", 1);
        let state = state_dir();
        let config = config(state.path(), &server.url());
        let config_str = config.to_str().expect("utf-8 path");

        // `config check` prints the effective settings: neither secret.
        let mut cmd = bulkwatch();
        cmd.args(["config", "check", "--stream", &stream.name])
            .env("BULKWATCH_CONFIG", config_str)
            .env("OPS_TEST_HOOK_KEY", HOOK_SECRET)
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET);
        let out = run_to_exit(cmd, Duration::from_secs(60));
        let printed = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "config check: {printed}");
        assert!(
            printed.contains("<redacted>") && printed.contains("OPS_TEST_HOOK_KEY"),
            "config check should show the inline secret redacted and the env var's name: {printed}"
        );
        assert!(
            !printed.contains(HOOK_SECRET),
            "config check printed the webhook secret"
        );
        assert!(
            !printed.contains(AWS_SECRET),
            "config check printed the AWS secret"
        );

        // The worker, logging at debug level (AWS SDK and HTTP internals
        // included), signs webhook requests with the secret and AWS calls
        // with the key.
        let mut worker = Worker::start_with(
            "worker",
            &stream.name,
            state.path(),
            &[
                ("BULKWATCH_CONFIG", config_str),
                ("BULKWATCH_LOG_LEVEL", "debug"),
                ("OPS_TEST_HOOK_KEY", HOOK_SECRET),
                ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
            ],
        );
        let jobs = events::jobs(3);
        let mut evs = events::all_events(&jobs);
        let want = events::expected(&evs);
        evs.push(bad_record());
        stream.put(&evs);
        worker.wait_for_keys(&want, &[], LIVENESS);
        let deadline = Instant::now() + LIVENESS;
        while server.received().len() < 2 * want.len() {
            assert!(
                Instant::now() < deadline,
                "the webhook received {} of {} requests",
                server.received().len(),
                2 * want.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            server.received().iter().all(|r| r.signature_ok),
            "the receiver could not verify a signature: the secret was not used"
        );
        worker.sigterm();
        let status = worker.wait_exit(LIVENESS);
        assert_eq!(status.code(), Some(0), "exit: {status}");

        let stderr = worker.stderr();
        let debug_lines = worker
            .logs()
            .iter()
            .filter(|l| l["level"] == "DEBUG")
            .count();
        eprintln!(
            "ops: redaction checked over {} stderr lines ({debug_lines} at DEBUG)",
            stderr.lines().count()
        );
        assert!(
            debug_lines > 0,
            "debug logging was not on: the check proves nothing"
        );
        for (what, secret) in [
            ("webhook secret", HOOK_SECRET),
            ("AWS secret key", AWS_SECRET),
        ] {
            if let Some(line) = stderr.lines().find(|l| l.contains(secret)) {
                panic!("the {what} appears on stderr:\n{line}");
            }
        }
    }
}

// ----------------------------------------------------------------- shutdown

mod shutdown {
    use std::cmp::Ordering;

    use super::support::transitions::{Seen, cmp_sequence, highest_sequence_per_shard};
    use super::support::worker::{Checkpoint, checkpoints};
    use super::*;

    #[test]
    fn sigterm_under_load_exits_0_with_checkpoints_flushed_then_jobs_cli() {
        let env = localstack::require();
        let stream = TestStream::create(env, "ops-load", 2);
        // ~3,000 records, all in the stream before the worker starts, read
        // 100 per GetRecords: the signal lands with a backlog on both
        // shards.
        let jobs = events::jobs(650);
        let evs = events::all_events(&jobs);
        stream.put(&evs);
        let state = state_dir();
        let grace = Duration::from_secs(10);
        let mut worker = Worker::start_with(
            "worker",
            &stream.name,
            state.path(),
            &[
                ("BULKWATCH_POLL__MAX_RECORDS", "100"),
                ("BULKWATCH_SHUTDOWN_GRACE", "10s"),
            ],
        );
        worker.wait_for(400, LIVENESS);
        worker.sigterm();
        let signalled = Instant::now();
        let status = worker.wait_exit(LIVENESS);
        let elapsed = signalled.elapsed();
        eprintln!(
            "ops: {} records put; exit {status} {elapsed:?} after SIGTERM (grace {grace:?}), {} transitions printed",
            evs.len(),
            worker.transitions().len()
        );
        assert_eq!(status.code(), Some(0), "exit code after SIGTERM: {status}");
        assert!(
            elapsed < grace + Duration::from_secs(5),
            "exit took {elapsed:?} after SIGTERM (grace {grace:?})"
        );
        assert!(
            worker.transitions().len() < want_all(&evs),
            "the worker finished the whole backlog before the signal; the test did not test a drain"
        );

        let cps = checkpoints(&stream.name, state.path());
        let high = highest_sequence_per_shard(worker.transitions());
        assert_eq!(high.len(), 2, "transitions from both shards: {high:?}");
        for (shard, seq) in &high {
            match cps.get(shard) {
                Some(Checkpoint::Sequence(cp)) if cmp_sequence(cp, seq) != Ordering::Less => {}
                other => panic!(
                    "shard {shard} printed a transition from {seq}, but its checkpoint after \
                     SIGTERM is {other:?}: not flushed. All: {cps:?}"
                ),
            }
        }

        jobs_cli(state.path(), worker.transitions());
    }

    fn want_all(evs: &[Event]) -> usize {
        events::expected(evs).len()
    }

    /// `bulkwatch jobs` on the store the worker left: exactly the jobs it
    /// printed transitions for, each at its last printed status, with the
    /// printed transitions as its history.
    fn jobs_cli(state: &Path, seen: &[Seen]) {
        let mut printed: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
        for s in seen {
            printed.entry(s.key.job_sid.as_str()).or_default().push(s);
        }

        let lines = run_jobs(state, &["list"]);
        let listed: BTreeMap<String, Value> = lines
            .into_iter()
            .map(|v| (v["job_sid"].as_str().expect("job_sid").to_owned(), v))
            .collect();
        let want: BTreeSet<&str> = printed.keys().copied().collect();
        let got: BTreeSet<&str> = listed.keys().map(String::as_str).collect();
        assert_eq!(
            got, want,
            "jobs list vs. the jobs transitions were printed for"
        );
        for (sid, v) in &listed {
            let last = printed[sid.as_str()].last().expect("one transition");
            assert_eq!(v["status"], last.key.status.as_str(), "{sid}: {v}");
        }

        // --status, case-insensitive and repeatable.
        let completed: BTreeSet<String> = run_jobs(
            state,
            &["list", "--status", "completed", "--status", "FAILED"],
        )
        .iter()
        .map(|v| v["job_sid"].as_str().expect("job_sid").to_owned())
        .collect();
        let want: BTreeSet<String> = listed
            .iter()
            .filter(|(_, v)| v["status"] == "COMPLETED" || v["status"] == "FAILED")
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(
            completed, want,
            "jobs list --status completed --status FAILED"
        );

        // show: the history is the printed transitions, in order, same ids.
        let (sid, transitions) = printed
            .iter()
            .max_by_key(|(_, t)| t.len())
            .expect("some job");
        let shown = run_jobs(state, &["show", sid]);
        assert_eq!(shown.len(), 1, "jobs show prints one object");
        let history = shown[0]["history"].as_array().expect("history array");
        let ids: Vec<&str> = history
            .iter()
            .map(|h| h["transition_id"].as_str().expect("transition_id"))
            .collect();
        let want_ids: Vec<&str> = transitions
            .iter()
            .map(|t| t.transition_id.as_str())
            .collect();
        assert_eq!(ids, want_ids, "history of {sid}");
        assert!(
            history
                .iter()
                .all(|h| h["sequence_number"].is_string() && h["shard_id"].is_string()),
            "history entries name shard and sequence number: {history:?}"
        );

        let mut cmd = bulkwatch();
        cmd.args(["jobs", "show", "JWnosuchjob", "--state-dir"])
            .arg(state);
        let out = run_to_exit(cmd, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "jobs show of an unknown job");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("JWnosuchjob"),
            "the error names the job"
        );
    }

    fn run_jobs(state: &Path, args: &[&str]) -> Vec<Value> {
        let mut cmd = bulkwatch();
        cmd.arg("jobs")
            .args(args)
            .arg("--state-dir")
            .arg(state)
            .args(["--log-format", "json"]);
        parse_lines(run_to_exit(cmd, Duration::from_secs(60)), args)
    }
}

/// A successful command's stdout as JSON lines.
fn parse_lines(out: std::process::Output, args: &[&str]) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bulkwatch jobs {args:?} exited {}.\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("bulkwatch jobs {args:?} printed non-JSON ({e}): {l}"))
        })
        .collect()
}

// --------------------------------------------------------- jobs on DynamoDB

mod jobs_dynamodb {
    use bulkwatch::decode::TimeSource;
    use bulkwatch::store::dynamodb::{DynamoConfig, DynamoStore};
    use bulkwatch::store::{JobStore, JobUpdate};
    use bulkwatch::track::{HistoryEntry, JobState, JobStatus};

    use super::*;

    fn job(sid: &str, statuses: &[&str]) -> JobState {
        let mut j = JobState::sample(sid);
        let mut previous = None;
        for (n, s) in statuses.iter().enumerate() {
            let status = JobStatus::parse(s);
            j.history.push(HistoryEntry {
                transition_id: uuid::Uuid::from_u128(rand::random()),
                event_id: format!("EV{n}"),
                previous_status: previous.clone(),
                status: status.clone(),
                event_time: time::OffsetDateTime::now_utc(),
                event_time_source: TimeSource::Event,
                shard_id: "shardId-000000000000".into(),
                sequence_number: format!("{}", 1000 + n),
                recorded_at: time::OffsetDateTime::now_utc(),
            });
            previous = Some(status.clone());
            j.known_status = Some(status.clone());
            j.status = status;
        }
        j
    }

    #[test]
    fn jobs_list_and_show_read_the_dynamodb_job_table() {
        let env = localstack::aws_env();
        let app = format!("bw-test-ops-jobs-{}", support::random_suffix());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let sdk = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_sdk_dynamodb::config::Region::new(env.region.clone()))
                .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                    &env.access_key_id,
                    &env.secret_access_key,
                    None,
                    None,
                    "bulkwatch-tests",
                ))
                .endpoint_url(&env.endpoint_dynamodb)
                .load(),
        );
        let store = rt
            .block_on(DynamoStore::connect(
                &sdk,
                DynamoConfig::new(&app, "test-writer"),
            ))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot use DynamoDB (moto) at {}: {e}\n\
                     Start it with `eval \"$(localstack/up)\"`, then run the tests again.",
                    env.endpoint_dynamodb
                )
            });
        // 40 jobs, every fourth completed.
        let states: Vec<JobState> = (0..40)
            .map(|i| {
                let sid = format!("JW{i:032x}");
                if i % 4 == 0 {
                    job(&sid, &["CREATED", "QUEUED", "COMPLETED"])
                } else {
                    job(&sid, &["CREATED", "QUEUED"])
                }
            })
            .collect();
        let updates: Vec<JobUpdate> = states
            .iter()
            .cloned()
            .map(|state| JobUpdate {
                state,
                expected_version: None,
            })
            .collect();
        let conflicts = rt.block_on(store.save_jobs(&updates)).expect("saving jobs");
        assert!(conflicts.is_empty(), "{conflicts:?}");

        let run = |args: &[&str]| {
            let mut cmd = bulkwatch();
            cmd.arg("jobs")
                .args(args)
                .args(["--log-format", "json"])
                .env("BULKWATCH_STORE__TYPE", "dynamodb")
                .env("BULKWATCH_STORE__TABLE", &app);
            parse_lines(run_to_exit(cmd, Duration::from_secs(60)), args)
        };
        let all = run(&["list"]);
        assert_eq!(all.len(), 40, "jobs list on DynamoDB: {all:?}");
        let sids: Vec<&str> = all
            .iter()
            .map(|v| v["job_sid"].as_str().unwrap_or(""))
            .collect();
        let mut sorted = sids.clone();
        sorted.sort();
        assert_eq!(sids, sorted, "jobs list is sorted by job sid");
        let done = run(&["list", "--status", "COMPLETED"]);
        assert_eq!(done.len(), 10);
        assert!(
            done.iter()
                .all(|v| v["status"] == "COMPLETED" && v["terminal"] == true)
        );

        let shown = run(&["show", &states[4].job_sid]);
        let history = shown[0]["history"].as_array().expect("history");
        let statuses: Vec<&str> = history
            .iter()
            .map(|h| h["status"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(statuses, ["CREATED", "QUEUED", "COMPLETED"]);
        assert_eq!(history[2]["previous_status"], "QUEUED");
        assert_eq!(
            history[0]["transition_id"],
            states[4].history[0].transition_id.to_string()
        );

        // A table that is not there is an error naming it, not an empty
        // list (the CLI never creates tables).
        let mut cmd = bulkwatch();
        cmd.args(["jobs", "list"])
            .env("BULKWATCH_STORE__TYPE", "dynamodb")
            .env("BULKWATCH_STORE__TABLE", format!("{app}-absent"));
        let out = run_to_exit(cmd, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("absent"),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
