//! Unit tests of the delivery machinery with fake outputs: backpressure,
//! retries, the retry policy, ordering, dead-letter and shutdown.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    Built, DeliveryConfig, Outputs, OutputsClosed,
    dead_letter::DeadLetterSink,
    filter::Filter,
    sink::{Item, Outcome, SendContext, Sink},
};
use crate::track::Transition;

/// The one place unit tests build a transition: adapt it when the track
/// stage's type gains fields.
pub(crate) fn transition(job: &str, status: &str, friendly_name: Option<&str>) -> Transition {
    Transition::sample(job, status, friendly_name)
}

/// A readable name for an item in assertions: "<job>-<status>".
fn label(i: &Item) -> String {
    format!("{}-{}", i.job_sid, i.status)
}

type Decide = Box<dyn FnMut(&Item) -> Outcome + Send + Sync>;

/// An output that records every call (transition ids per call) and answers
/// with `decide`; while its gate is closed, every call waits.
struct FakeSink {
    calls: Arc<Mutex<Vec<Vec<String>>>>,
    decide: Decide,
    gate: watch::Receiver<bool>,
}

#[async_trait]
impl Sink for FakeSink {
    async fn send(&mut self, items: &[&Item], _ctx: &SendContext) -> Vec<Outcome> {
        let _ = self.gate.wait_for(|open| *open).await;
        self.calls
            .lock()
            .unwrap()
            .push(items.iter().map(|i| label(i)).collect());
        items.iter().map(|i| (self.decide)(i)).collect()
    }
}

struct Fake {
    calls: Arc<Mutex<Vec<Vec<String>>>>,
    gate: watch::Sender<bool>,
}

impl Fake {
    fn delivered_ids(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

fn fake(name: &str, open: bool, decide: Decide) -> (Built, Fake) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (gate, rx) = watch::channel(open);
    let built = Built {
        name: name.into(),
        kind: "fake",
        sink: Box::new(FakeSink {
            calls: calls.clone(),
            decide,
            gate: rx,
        }),
        filter: Filter::default(),
    };
    (built, Fake { calls, gate })
}

fn ok() -> Decide {
    Box::new(|_| Outcome::Delivered)
}

/// Dead letters kept in memory, as parsed JSON lines.
#[derive(Clone, Default)]
struct MemDeadLetter(Arc<Mutex<Vec<serde_json::Value>>>);

#[async_trait]
impl DeadLetterSink for MemDeadLetter {
    async fn write(&mut self, lines: &mut Vec<Vec<u8>>) -> anyhow::Result<()> {
        let mut v = self.0.lock().unwrap();
        for l in lines.drain(..) {
            v.push(serde_json::from_slice(&l)?);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

fn fast_retries() -> DeliveryConfig {
    DeliveryConfig {
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        ..Default::default()
    }
}

fn start(
    built: Vec<Built>,
    delivery: DeliveryConfig,
) -> (Outputs, MemDeadLetter, CancellationToken) {
    let dl = MemDeadLetter::default();
    let shutdown = CancellationToken::new();
    let outputs =
        Outputs::from_parts(built, Box::new(dl.clone()), &delivery, shutdown.clone()).unwrap();
    (outputs, dl, shutdown)
}

fn batch(items: &[(&str, &str)]) -> Arc<[Transition]> {
    items.iter().map(|(j, s)| transition(j, s, None)).collect()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn slow_output_applies_backpressure_while_the_other_progresses() {
    let (slow_b, slow) = fake("slow", false, ok());
    let (fast_b, fast) = fake("fast", true, ok());
    let delivery = DeliveryConfig {
        queue_capacity: 2,
        ..fast_retries()
    };
    // "slow" is first, so a deliver call waiting for room in its queue has
    // not reached "fast" yet: fast can only hold what slow accepted.
    let (outputs, _, _) = start(vec![slow_b, fast_b], delivery);

    // Ten shards delivering at once.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..10 {
        let o = outputs.clone();
        calls.spawn(async move { o.deliver(batch(&[(&format!("J{i}"), "QUEUED")])).await });
    }
    // Slow holds 1 in progress + 2 queued; fast delivers those 3 and waits.
    eventually("fast delivers what slow accepted", || {
        fast.delivered_ids().len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        fast.delivered_ids().len(),
        3,
        "fast must not get batches slow has no room for"
    );
    assert!(slow.delivered_ids().is_empty());
    let stats = outputs.stats();
    assert_eq!(stats.outputs[0].queued_batches, 2, "slow's queue is full");
    assert_eq!(stats.outputs[1].queued_batches, 0);
    assert!(
        calls.try_join_next().is_none(),
        "no deliver may finish before slow acks"
    );

    slow.gate.send(true).unwrap();
    let mut n = 0;
    while let Some(r) = tokio::time::timeout(Duration::from_secs(5), calls.join_next())
        .await
        .expect("deliver calls finish once slow recovers")
    {
        r.unwrap().unwrap();
        n += 1;
    }
    assert_eq!(n, 10);
    assert_eq!(slow.delivered_ids().len(), 10);
    assert_eq!(fast.delivered_ids().len(), 10);
    outputs.close().await.unwrap();
}

#[tokio::test]
async fn retries_until_delivered() {
    let mut failures = 3;
    let (b, f) = fake(
        "flaky",
        true,
        Box::new(move |_| {
            if failures > 0 {
                failures -= 1;
                Outcome::retry("HTTP 500")
            } else {
                Outcome::Delivered
            }
        }),
    );
    let (outputs, dl, _) = start(vec![b], fast_retries());
    outputs.deliver(batch(&[("J1", "QUEUED")])).await.unwrap();
    assert_eq!(f.calls().len(), 4);
    let s = &outputs.stats().outputs[0];
    assert_eq!((s.delivered, s.failed_attempts, s.exhausted), (1, 3, 0));
    assert!(dl.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn max_attempts_sends_to_dead_letter() {
    let (b, f) = fake("down", true, Box::new(|_| Outcome::retry("HTTP 503")));
    let delivery = DeliveryConfig {
        max_attempts: 3,
        ..fast_retries()
    };
    let (outputs, dl, _) = start(vec![b], delivery);
    outputs
        .deliver(batch(&[("J1", "COMPLETED")]))
        .await
        .unwrap();
    assert_eq!(f.calls().len(), 3);
    let dl = dl.0.lock().unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["output"], "down");
    assert_eq!(dl[0]["attempts"], 3);
    assert!(
        dl[0]["reason"].as_str().unwrap().contains("max_attempts"),
        "{}",
        dl[0]
    );
    assert_eq!(dl[0]["transition"]["job_sid"], "J1");
    assert_eq!(dl[0]["response"], "HTTP 503");
    let s = outputs.stats();
    assert_eq!((s.outputs[0].exhausted, s.outputs[0].delivered), (1, 0));
    assert_eq!((s.dead_letter.written, s.dead_letter.undeliverable), (1, 1));
}

#[tokio::test]
async fn max_record_age_sends_to_dead_letter() {
    let (b, _) = fake("down", true, Box::new(|_| Outcome::retry("timeout")));
    let delivery = DeliveryConfig {
        max_record_age: Duration::from_millis(50),
        ..fast_retries()
    };
    let (outputs, dl, _) = start(vec![b], delivery);
    tokio::time::timeout(
        Duration::from_secs(5),
        outputs.deliver(batch(&[("J1", "QUEUED")])),
    )
    .await
    .expect("gives up after max_record_age")
    .unwrap();
    let dl = dl.0.lock().unwrap();
    assert!(
        dl[0]["reason"].as_str().unwrap().contains("max_record_age"),
        "{}",
        dl[0]
    );
}

#[tokio::test]
async fn refused_transition_goes_to_dead_letter_at_once() {
    let (b, f) = fake(
        "hook",
        true,
        Box::new(|i| {
            if i.job_sid == "BAD" {
                Outcome::Reject {
                    error: "HTTP 400".into(),
                    response: Some("HTTP 400 Bad Request\n\nno".into()),
                }
            } else {
                Outcome::Delivered
            }
        }),
    );
    let (outputs, dl, _) = start(vec![b], fast_retries());
    outputs
        .deliver(batch(&[("BAD", "QUEUED"), ("J2", "QUEUED")]))
        .await
        .unwrap();
    assert_eq!(f.calls().len(), 1, "a refusal is not retried");
    let dl = dl.0.lock().unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["response"], "HTTP 400 Bad Request\n\nno");
    assert_eq!(dl[0]["transition"]["job_sid"], "BAD");
    assert_eq!(dl[0]["encoding"], "utf8");
    let s = &outputs.stats().outputs[0];
    assert_eq!((s.delivered, s.rejected), (1, 1));
}

#[tokio::test]
async fn a_jobs_transitions_never_overtake_each_other() {
    let mut first = true;
    let (b, f) = fake(
        "o",
        true,
        Box::new(move |i| {
            if label(i) == "A-QUEUED" && first {
                first = false;
                Outcome::retry("once")
            } else {
                Outcome::Delivered
            }
        }),
    );
    let (outputs, _, _) = start(vec![b], fast_retries());
    outputs
        .deliver(batch(&[
            ("A", "QUEUED"),
            ("B", "QUEUED"),
            ("A", "COMPLETED"),
            ("B", "COMPLETED"),
        ]))
        .await
        .unwrap();
    assert_eq!(
        f.calls(),
        vec![
            vec!["A-QUEUED".to_string(), "B-QUEUED".into()],
            // A-COMPLETED is held back behind the failed A-QUEUED.
            vec!["B-COMPLETED".into()],
            vec!["A-QUEUED".into()],
            vec!["A-COMPLETED".into()],
        ]
    );
}

#[tokio::test]
async fn shutdown_stops_retrying_and_deliver_reports_closed() {
    let (b, _) = fake("down", true, Box::new(|_| Outcome::retry("HTTP 500")));
    let (outputs, dl, shutdown) = start(vec![b], fast_retries());
    let o = outputs.clone();
    let call = tokio::spawn(async move { o.deliver(batch(&[("J1", "QUEUED")])).await });
    eventually("a few failed attempts", || {
        outputs.stats().outputs[0].failed_attempts >= 3
    })
    .await;
    shutdown.cancel();
    let r = tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .expect("deliver returns promptly on shutdown")
        .unwrap();
    assert_eq!(r, Err(OutputsClosed));
    assert!(
        dl.0.lock().unwrap().is_empty(),
        "shutdown is not a reason to dead-letter"
    );
    assert_eq!(
        outputs.deliver(batch(&[("J2", "QUEUED")])).await,
        Err(OutputsClosed)
    );
}

/// The sink answers NotSent once the token is cancelled (what the real
/// sinks do before each request); such items count no failed attempt, so
/// even a batch past `max_record_age` is not dead-lettered for them.
#[tokio::test]
async fn not_sent_on_shutdown_is_no_attempt_and_no_dead_letter() {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let (b, f) = fake(
        "o",
        true,
        Box::new(move |i| {
            if i.job_sid == "J0" {
                // The grace runs out while the first request is in flight.
                stop.cancel();
                Outcome::Delivered
            } else {
                Outcome::NotSent
            }
        }),
    );
    let dl = MemDeadLetter::default();
    let delivery = DeliveryConfig {
        max_record_age: Duration::from_nanos(1),
        ..fast_retries()
    };
    let outputs =
        Outputs::from_parts(vec![b], Box::new(dl.clone()), &delivery, shutdown.clone()).unwrap();
    let r = outputs
        .deliver(batch(&[
            ("J0", "QUEUED"),
            ("J1", "QUEUED"),
            ("J2", "QUEUED"),
        ]))
        .await;
    assert_eq!(r, Err(OutputsClosed));
    assert_eq!(f.calls().len(), 1, "no new attempt after the cancel");
    let s = &outputs.stats().outputs[0];
    assert_eq!((s.delivered, s.failed_attempts, s.exhausted), (1, 0, 0));
    assert!(dl.0.lock().unwrap().is_empty());
}

// ------------------------------------------------------------- liveness

mod liveness {
    use super::*;
    use crate::ops::{health::live_check, metrics::Metrics};

    /// Far below the waits below: without a promise of its next attempt, an
    /// output waiting that long would fail liveness.
    const STALL: Duration = Duration::from_millis(100);

    fn metrics_for(outputs: &Outputs) -> Metrics {
        let m = Metrics::new();
        m.attach_outputs(outputs);
        m
    }

    async fn stays_live_for(m: &Metrics, d: Duration) {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < d {
            let (ok, v) = live_check(m, STALL);
            assert!(ok, "liveness failed while the worker waits healthily: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_retry_after_longer_than_live_stall_stays_live() {
        // A webhook answering 429 with Retry-After: the output honours it
        // (up to 5 min, more than ops.live_stall's 2 min by default).
        let (b, f) = fake(
            "hook",
            true,
            Box::new(|_| Outcome::Retry {
                error: "HTTP 429".into(),
                after: Some(Duration::from_secs(30)),
            }),
        );
        let (outputs, _, shutdown) = start(vec![b], fast_retries());
        let m = metrics_for(&outputs);
        let o = outputs.clone();
        let call = tokio::spawn(async move { o.deliver(batch(&[("J1", "QUEUED")])).await });
        eventually("the first attempt", || f.calls().len() == 1).await;
        stays_live_for(&m, STALL * 6).await;
        assert_eq!(f.calls().len(), 1, "still waiting out the Retry-After");
        let loops = m.loops();
        assert_eq!(loops.len(), 2, "the output and the dead-letter: {loops:?}");
        shutdown.cancel();
        assert_eq!(call.await.unwrap(), Err(OutputsClosed));
    }

    /// A dead-letter destination that refuses every write.
    struct DownDeadLetter;

    #[async_trait]
    impl DeadLetterSink for DownDeadLetter {
        async fn write(&mut self, _lines: &mut Vec<Vec<u8>>) -> anyhow::Result<()> {
            anyhow::bail!("QueueDoesNotExist")
        }
        fn describe(&self) -> String {
            "down".into()
        }
    }

    #[tokio::test]
    async fn a_down_dead_letter_output_stays_live() {
        let (b, f) = fake(
            "hook",
            true,
            Box::new(|_| Outcome::Reject {
                error: "HTTP 400".into(),
                response: None,
            }),
        );
        let shutdown = CancellationToken::new();
        // Backoff above the stall limit: the dead-letter task waits longer
        // than live_stall between its write attempts.
        let delivery = DeliveryConfig {
            backoff_min: STALL * 3,
            backoff_max: STALL * 3,
            ..Default::default()
        };
        let outputs = Outputs::from_parts(
            vec![b],
            Box::new(DownDeadLetter),
            &delivery,
            shutdown.clone(),
        )
        .unwrap();
        let m = metrics_for(&outputs);
        let o = outputs.clone();
        let call = tokio::spawn(async move { o.deliver(batch(&[("J1", "QUEUED")])).await });
        eventually("a failed dead-letter write", || {
            outputs.stats().dead_letter.write_failures >= 1
        })
        .await;
        assert_eq!(f.calls().len(), 1);
        stays_live_for(&m, STALL * 8).await;
        assert!(outputs.stats().dead_letter.write_failures >= 2);
        shutdown.cancel();
        assert_eq!(call.await.unwrap(), Err(OutputsClosed));
    }

    #[tokio::test]
    async fn a_wedged_output_fails_liveness() {
        // An attempt that never returns (the gate stays closed).
        let (b, _f) = fake("stuck", false, ok());
        let (outputs, _, shutdown) = start(vec![b], fast_retries());
        let m = metrics_for(&outputs);
        let o = outputs.clone();
        let call = tokio::spawn(async move { o.deliver(batch(&[("J1", "QUEUED")])).await });
        tokio::time::sleep(STALL * 3).await;
        let (ok, v) = live_check(&m, STALL);
        assert!(!ok, "a wedged output must fail liveness: {v}");
        let detail = v["heartbeat"]["detail"].as_str().unwrap();
        assert!(detail.contains("output stuck"), "{detail}");
        assert_eq!(v["heartbeat"]["stalled"][0], "output stuck");
        shutdown.cancel();
        call.abort();
    }

    #[test]
    fn heartbeat_states() {
        use crate::ops::metrics::Heartbeat;
        let h = Heartbeat::default();
        assert_eq!(h.overdue(), None, "not started");
        h.beat();
        assert!(h.overdue().unwrap() < Duration::from_secs(1));
        h.expect(Duration::from_secs(3600));
        assert_eq!(h.overdue(), Some(Duration::ZERO), "within its promise");
        // A shorter promise (another request) does not shorten it.
        h.expect(Duration::ZERO);
        assert_eq!(h.overdue(), Some(Duration::ZERO));
        h.park();
        assert_eq!(h.overdue(), None);
        assert!(h.is_parked());
        h.expect(Duration::from_secs(1));
        assert!(h.is_parked(), "only a beat unparks");
        h.beat();
        assert!(!h.is_parked());
    }

    #[test]
    fn a_shard_waiting_on_outputs_is_parked_and_a_stuck_one_is_not() {
        let m = Metrics::new();
        let (a, b): (Arc<str>, Arc<str>) = ("shardId-a".into(), "shardId-b".into());
        m.reader_started(&a);
        m.reader_started(&b);
        m.shard_park(&a);
        m.shard_expect(&b, Duration::from_secs(3600));
        std::thread::sleep(STALL * 2);
        assert!(
            live_check(&m, STALL).0,
            "parked and promised shards are live"
        );
        m.shard_beat(&b);
        std::thread::sleep(STALL * 2);
        let (ok, v) = live_check(&m, STALL);
        assert!(!ok);
        assert_eq!(
            v["heartbeat"]["stalled"],
            serde_json::json!(["reader shardId-b"])
        );
        m.reader_stopped(&b);
        assert!(live_check(&m, STALL).0, "a stopped reader does not count");
    }
}

#[tokio::test]
async fn close_then_deliver_is_refused() {
    let (b, f) = fake("o", true, ok());
    let (outputs, _, _) = start(vec![b], fast_retries());
    outputs.deliver(batch(&[("J1", "QUEUED")])).await.unwrap();
    let other = outputs.clone();
    outputs.close().await.unwrap();
    assert_eq!(
        other.deliver(batch(&[("J2", "QUEUED")])).await,
        Err(OutputsClosed)
    );
    assert_eq!(f.delivered_ids(), ["J1-QUEUED"]);
}

#[tokio::test]
async fn filtered_transitions_are_counted_and_acked() {
    let (mut b, f) = fake("terminal", true, ok());
    b.filter = Filter::new(&super::FilterConfig {
        terminal_only: true,
        ..Default::default()
    })
    .unwrap();
    let (outputs, _, _) = start(vec![b], fast_retries());
    outputs
        .deliver(batch(&[("J1", "QUEUED"), ("J1", "COMPLETED")]))
        .await
        .unwrap();
    assert_eq!(f.delivered_ids(), ["J1-COMPLETED"]);
    let s = &outputs.stats().outputs[0];
    assert_eq!((s.delivered, s.filtered), (1, 1));
}

#[tokio::test]
async fn bad_records_are_written_and_counted() {
    let (outputs, dl, _) = start(vec![], fast_retries());
    outputs
        .dead_letter(super::DeadLetter {
            reason: "not a CloudEvent".into(),
            payload: vec![0xff, 0xfe],
            origin: crate::source::Origin {
                stream: "s".into(),
                shard_id: "shardId-1".into(),
                sequence_number: "42".into(),
                arrival: None,
            },
            output: None,
            transition: None,
            response: None,
        })
        .await
        .unwrap();
    let v = dl.0.lock().unwrap()[0].clone();
    assert_eq!(v["encoding"], "base64");
    assert_eq!(v["payload"], "//4=");
    assert_eq!(v["sequence_number"], "42");
    let s = outputs.stats().dead_letter;
    assert_eq!((s.written, s.bad_records), (1, 1));
}

#[test]
fn config_parses_every_kind_and_names_typos() {
    use super::config::*;
    let toml = r#"
        [[output]]
        type = "stdout"

        [[output]]
        type = "webhook"
        name = "chat"
        url = "https://hooks.example.com/x"
        secret_env = "HOOK_SECRET"
        terminal_only = true
        timeout = "3s"

        [[output]]
        type = "sqs"
        queue_url = "https://sqs.us-east-1.amazonaws.com/1/q.fifo"
        statuses = ["COMPLETED"]
        attempt_timeout = "2s"

        [[output]]
        type = "sns"
        topic_arn = "arn:aws:sns:us-east-1:1:t"
        friendly_name_pattern = "^prod-"

        [[output]]
        type = "eventbridge"
        event_bus = "jobs"

        [[output]]
        type = "file"
        path = "/tmp/x.jsonl"

        [dead_letter]
        type = "sqs"
        queue_url = "https://sqs.us-east-1.amazonaws.com/1/dlq"

        [delivery]
        max_attempts = 10
        max_record_age = "1h"
        queue_capacity = 8
    "#;
    let c: OutputsConfig = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::string(toml),
    )
    .extract()
    .unwrap();
    assert_eq!(c.outputs.len(), 6);
    assert_eq!(c.outputs[1].name.as_deref(), Some("chat"));
    assert!(c.outputs[1].filter.terminal_only);
    match &c.outputs[1].kind {
        OutputKind::Webhook(w) => {
            assert_eq!(w.timeout, Duration::from_secs(3));
            assert_eq!(w.connect_timeout, Duration::from_secs(5));
        }
        k => panic!("{k:?}"),
    }
    match &c.outputs[4].kind {
        OutputKind::EventBridge(e) => {
            assert_eq!(e.event_bus, "jobs");
            assert_eq!(e.source, "bulkwatch");
            assert_eq!(e.timeout, Duration::from_secs(15));
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(c.delivery.max_record_age, Duration::from_secs(3600));
    assert_eq!(
        c.delivery.backoff_max,
        Duration::from_secs(30),
        "default kept"
    );
    assert!(matches!(c.dead_letter, Some(DeadLetterConfig::Sqs(_))));

    // Round trip through Serialize (the secret excepted, see below).
    let back: OutputsConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
    assert_eq!(back.outputs.len(), 6);
    assert_eq!(
        back.outputs[2].filter.statuses,
        Some(vec!["COMPLETED".to_string()])
    );

    for (bad, needle) in [
        ("[[output]]\ntype = \"sqs\"\nqeue_url = \"x\"", "qeue_url"),
        (
            "[[output]]\ntype = \"sqs\"\nqueue_url = \"x\"\nregion = \"eu-west-1\"\ntimout = \"1s\"",
            "timout",
        ),
        ("[[output]]\ntype = \"stdout\"\npath = \"x\"", "path"),
        ("[[output]]\ntype = \"carrier-pigeon\"", "carrier-pigeon"),
        ("[[output]]\nurl = \"https://x\"", "type"),
        (
            "[[output]]\ntype = \"stdout\"\nterminal_only = \"yes\"",
            "terminal_only",
        ),
        ("[delivery]\nmax_atempts = 3", "max_atempts"),
        ("[delivery]\nmax_record_age = \"soon\"", "max_record_age"),
        ("[dead_letter]\ntype = \"file\"\npth = \"x\"", "pth"),
    ] {
        let err = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(bad),
        )
        .extract::<OutputsConfig>()
        .unwrap_err()
        .to_string();
        assert!(err.contains(needle), "{bad:?}: {err}");
    }
}

#[test]
fn secrets_are_redacted_in_debug_and_serialize() {
    let toml = "[[output]]\ntype = \"webhook\"\nurl = \"https://x\"\nsecret = \"hunter2\"";
    let c: super::OutputsConfig = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::string(toml),
    )
    .extract()
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
}

#[test]
fn config_works_flattened_into_the_top_level() {
    // How the lead's config embeds it: `#[serde(flatten)]` next to other keys.
    #[derive(serde::Deserialize)]
    struct Top {
        stream: String,
        #[serde(flatten)]
        outputs: super::OutputsConfig,
    }
    let toml = r#"
        stream = "events"
        [[output]]
        type = "sqs"
        queue_url = "https://sqs/q"
        timeout = "2s"
        [delivery]
        queue_capacity = 2
        max_record_age = "0s"
    "#;
    let top: Top = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::string(toml),
    )
    .extract()
    .unwrap();
    assert_eq!(top.stream, "events");
    assert_eq!(top.outputs.outputs.len(), 1);
    assert_eq!(top.outputs.delivery.queue_capacity, 2);
    assert!(top.outputs.delivery.max_record_age.is_zero());
    let empty: Top = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::string("stream = \"s\""),
    )
    .extract()
    .unwrap();
    assert!(empty.outputs.outputs.is_empty() && empty.outputs.dead_letter.is_none());
    assert_eq!(empty.outputs.delivery, super::DeliveryConfig::default());
}
