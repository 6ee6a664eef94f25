//! Integration tests of the output stage, driving `Outputs` directly (the
//! end-to-end tests through the binary live elsewhere).
//!
//! - `webhook_*`: an in-process receiver (tests/support/webhook_server.rs)
//!   that checks signatures and answers as scripted.
//! - `file_*`: the file output and SIGHUP reopening.
//! - `sqs_*`, `sns_*`, `eventbridge_*`: against LocalStack. They FAIL (never
//!   skip) when it is not running, saying how to start it.

// Not every helper of the shared receiver is used here.
#[allow(dead_code)]
#[path = "support/webhook_server.rs"]
mod webhook_server;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bulkwatch::{
    output::{Outputs, OutputsConfig},
    track::Transition,
};
use figment::providers::Format;
use tokio_util::sync::CancellationToken;
use webhook_server::WebhookServer;

/// The one place these tests build a transition: adapt it when the track
/// stage's type gains fields.
fn transition(job: &str, status: &str) -> Transition {
    Transition::sample(job, status, Some(&format!("name of {job}")))
}

/// The `transition_id` (and so the webhook's idempotency key) of a sample.
fn id_of(job: &str, status: &str) -> String {
    transition(job, status).transition_id.to_string()
}

fn batch(items: &[(&str, &str)]) -> Arc<[Transition]> {
    items.iter().map(|(j, s)| transition(j, s)).collect()
}

fn config(toml: &str) -> OutputsConfig {
    figment::Figment::from(figment::providers::Toml::string(toml))
        .extract()
        .unwrap_or_else(|e| panic!("config: {e}\n{toml}"))
}

/// Short backoff so retry tests take milliseconds.
const FAST_RETRIES: &str = "[delivery]\nbackoff_min = \"10ms\"\nbackoff_max = \"100ms\"\n";

async fn start(toml: &str, aws: &aws_config::SdkConfig, state_dir: &Path) -> Outputs {
    Outputs::start(&config(toml), aws, state_dir, CancellationToken::new())
        .await
        .unwrap()
}

/// An SdkConfig for tests that do not touch AWS.
fn no_aws() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build()
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{n}", std::process::id())
}

// ---------------------------------------------------------------- webhook

#[tokio::test]
async fn webhook_signed_retried_and_refusals_dead_lettered() {
    let mut first_failures = 3;
    let server = WebhookServer::start(
        "s3cret",
        Box::new(move |r| {
            if r.json()["job_sid"] == "JBAD" {
                return (400, "job JBAD is unknown here".into());
            }
            if first_failures > 0 {
                first_failures -= 1;
                return (500, "try later".into());
            }
            (200, "ok".into())
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let outputs = start(
        &format!(
            "[[output]]\ntype = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\nsecret = \"s3cret\"\nconcurrency = 1\n{FAST_RETRIES}",
            server.url()
        ),
        &no_aws(),
        dir.path(),
    )
    .await;

    outputs
        .deliver(batch(&[
            ("J1", "QUEUED"),
            ("J2", "QUEUED"),
            ("JBAD", "QUEUED"),
            ("J1", "COMPLETED"),
        ]))
        .await
        .unwrap();

    let got = server.received();
    assert!(
        got.iter().all(|r| r.signature_ok),
        "every request is signed"
    );
    let delivered: Vec<String> = got
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    // Each accepted once, J1's in order; the body is the transition JSON.
    let set: HashSet<&String> = delivered.iter().collect();
    assert_eq!(set.len(), 3, "{delivered:?}");
    for (job, status) in [("J1", "QUEUED"), ("J2", "QUEUED"), ("J1", "COMPLETED")] {
        let id = id_of(job, status);
        assert!(set.contains(&id), "{job} {status} missing: {delivered:?}");
    }
    let pos = |job: &str, status: &str| {
        let id = id_of(job, status);
        delivered.iter().position(|d| *d == id).unwrap()
    };
    assert!(pos("J1", "QUEUED") < pos("J1", "COMPLETED"));
    assert_eq!(got.iter().filter(|r| r.status == 500).count(), 3);
    let ok = got.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(ok.headers["content-type"], "application/json");
    assert_eq!(
        ok.json()["transition_id"],
        ok.headers["idempotency-key"].as_str()
    );
    assert_eq!(
        got.iter().filter(|r| r.status == 400).count(),
        1,
        "a 400 is not retried"
    );

    let dead = read_jsonl(&dir.path().join("dead-letter.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["output"], "hook");
    assert_eq!(dead[0]["transition"]["job_sid"], "JBAD");
    assert_eq!(dead[0]["encoding"], "utf8");
    let response = dead[0]["response"].as_str().unwrap();
    assert!(
        response.contains("400") && response.contains("job JBAD is unknown here"),
        "{response}"
    );

    let stats = outputs.stats();
    let s = &stats.outputs[0];
    assert_eq!(
        (s.delivered, s.rejected, s.failed_attempts),
        (3, 1, 3),
        "{s:?}"
    );
    assert_eq!(stats.dead_letter.undeliverable, 1);
    outputs.close().await.unwrap();
}

#[tokio::test]
async fn webhook_down_for_a_while_then_everything_arrives() {
    let mut server = WebhookServer::start("k", Box::new(|_| (200, String::new()))).await;
    let dir = tempfile::tempdir().unwrap();
    let capacity = 4;
    let outputs = start(
        &format!(
            "[[output]]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"k\"\nconnect_timeout = \"200ms\"\n\
             [delivery]\nbackoff_min = \"20ms\"\nbackoff_max = \"300ms\"\nqueue_capacity = {capacity}\n",
            server.url()
        ),
        &no_aws(),
        dir.path(),
    )
    .await;

    // 2,000 transitions: 4 "shards" each delivering 50 batches of 10, one
    // batch at a time like a pipeline; the receiver is down from the start
    // for 3 s.
    server.stop();
    let t0 = Instant::now();
    let mut shards = tokio::task::JoinSet::new();
    for shard in 0..4 {
        let o = outputs.clone();
        shards.spawn(async move {
            for b in 0..50 {
                let items: Vec<Transition> = (0..10)
                    .map(|i| transition(&format!("S{shard}B{b}J{i}"), "COMPLETED"))
                    .collect();
                o.deliver(items.into()).await.unwrap();
            }
        });
    }
    let mut max_queued = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        max_queued = max_queued.max(outputs.stats().outputs[0].queued_batches);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.received().is_empty());
    assert!(max_queued <= capacity, "queue is bounded: {max_queued}");
    assert!(outputs.stats().outputs[0].failed_attempts > 0);
    server.resume().await;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = shards.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("everything is delivered after the receiver returns");

    let ids: HashSet<String> = server
        .received()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(ids.len(), 2000);
    assert!(read_jsonl(&dir.path().join("dead-letter.jsonl")).is_empty());
    assert_eq!(outputs.stats().outputs[0].delivered, 2000);
    outputs.close().await.unwrap();
}

/// Once the outputs' shutdown token is cancelled (the worker's grace ran
/// out), the webhook finishes the requests in flight but starts none of
/// those still waiting for a `concurrency` slot.
#[tokio::test]
async fn webhook_starts_no_request_after_shutdown() {
    let server = WebhookServer::start("k", Box::new(|_| (200, "ok".into()))).await;
    server.set_delay(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let outputs = Outputs::start(
        &config(&format!(
            "[[output]]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"k\"\nconcurrency = 2\n{FAST_RETRIES}",
            server.url()
        )),
        &no_aws(),
        dir.path(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    // 40 jobs: one wave of 40 requests, 2 at a time.
    let items: Vec<(String, &str)> = (0..40).map(|i| (format!("J{i}"), "QUEUED")).collect();
    let items: Vec<(&str, &str)> = items.iter().map(|(j, s)| (j.as_str(), *s)).collect();
    let o = outputs.clone();
    let sent = batch(&items);
    let call = tokio::spawn(async move { o.deliver(sent).await });
    let t0 = Instant::now();
    while server.received().len() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no request arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let cancelled = std::time::SystemTime::now();
    let r = tokio::time::timeout(Duration::from_secs(3), call)
        .await
        .expect("deliver returns once the requests in flight finish")
        .unwrap();
    assert_eq!(r, Err(bulkwatch::output::OutputsClosed));
    // Anything that would still start would have by now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got = server.received();
    let late = got.iter().filter(|r| r.at > cancelled).count();
    assert_eq!(
        late,
        0,
        "{late} requests started after the cancel ({} in all)",
        got.len()
    );
    assert!(got.len() <= 2, "only the 2 in flight: {}", got.len());
    let s = &outputs.stats().outputs[0];
    assert_eq!(
        s.failed_attempts, 0,
        "requests not started are no failed attempts"
    );
    assert!(read_jsonl(&dir.path().join("dead-letter.jsonl")).is_empty());
}

#[tokio::test]
async fn webhook_config_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, needle) in [
        (
            "[[output]]\ntype = \"webhook\"\nurl = \"http://example.com/x\"\nsecret = \"k\"",
            "allow_insecure_http",
        ),
        (
            "[[output]]\ntype = \"webhook\"\nurl = \"https://example.com/x\"\nsecret_env = \"BULKWATCH_NO_SUCH_VAR\"",
            "BULKWATCH_NO_SUCH_VAR",
        ),
        (
            "[[output]]\ntype = \"webhook\"\nurl = \"https://example.com/x\"",
            "secret",
        ),
        (
            "[[output]]\ntype = \"stdout\"\nname = \"a\"\n[[output]]\ntype = \"stdout\"\nname = \"a\"",
            "unique",
        ),
    ] {
        let err = match Outputs::start(
            &config(toml),
            &no_aws(),
            dir.path(),
            CancellationToken::new(),
        )
        .await
        {
            Ok(_) => panic!("accepted: {toml}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(needle), "{toml}: {err}");
    }
}

// ------------------------------------------------------------------- file

#[tokio::test]
async fn file_output_appends_and_reopens_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/transitions.jsonl");
    let outputs = start(
        &format!(
            "[[output]]\ntype = \"file\"\npath = \"{}\"\n",
            path.display()
        ),
        &no_aws(),
        dir.path(),
    )
    .await;
    outputs
        .deliver(batch(&[("J1", "QUEUED"), ("J1", "COMPLETED")]))
        .await
        .unwrap();
    let lines = read_jsonl(&path);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["status"], "COMPLETED");

    // logrotate: move the file away, then HUP.
    let rotated = dir.path().join("out/transitions.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The signal is handled asynchronously; deliver until the new file shows up.
    let t0 = Instant::now();
    let mut n = 0;
    while !path.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "file not reopened after SIGHUP"
        );
        n += 1;
        outputs
            .deliver(batch(&[(&format!("K{n}"), "QUEUED")]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read_jsonl(&rotated).len() + read_jsonl(&path).len(), 2 + n);
    outputs.close().await.unwrap();
}

// -------------------------------------------------------------- LocalStack

const LOCALSTACK: &str = "http://127.0.0.1:4566";

/// The SDK config for LocalStack; panics (fails the test) with how to start
/// it when it does not answer.
async fn localstack() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| LOCALSTACK.into());
    let health = format!("{endpoint}/_localstack/health");
    let up = reqwest::Client::new()
        .get(&health)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(
        up,
        "LocalStack is not answering at {endpoint}. Start it from the repository root with:\n\n    \
         eval \"$(localstack/up)\"\n\nand run the tests again."
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> (String, String) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let mut req = sqs.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        req = req.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let url = req.send().await.unwrap().queue_url.unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    (url, arn)
}

/// A received message: body and system attributes (MessageGroupId, ...).
struct Msg {
    body: String,
    attrs: HashMap<String, String>,
}

/// Receives until `n` messages arrived (or 20 s passed), deleting them.
async fn receive(sqs: &aws_sdk_sqs::Client, url: &str, n: usize) -> Vec<Msg> {
    receive_within(sqs, url, n, Duration::from_secs(20)).await
}

async fn receive_within(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    n: usize,
    within: Duration,
) -> Vec<Msg> {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let mut out = Vec::new();
    let t0 = Instant::now();
    while out.len() < n && t0.elapsed() < within {
        let r = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        for m in r.messages.unwrap_or_default() {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .send()
                .await
                .unwrap();
            out.push(Msg {
                body: m.body.unwrap_or_default(),
                attrs: m
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect(),
            });
        }
    }
    out
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// 25 transitions (more than one SendMessageBatch), jobs with several each.
fn many() -> Arc<[Transition]> {
    let mut v = Vec::new();
    for status in ["QUEUED", "IN_PROGRESS", "COMPLETED"] {
        for j in 0..8 {
            v.push(transition(&format!("JQ{j}"), status));
        }
    }
    v.push(transition("JX", "FAILED"));
    v.into()
}

#[tokio::test]
async fn sqs_standard_and_fifo() {
    let aws = localstack().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let (std_url, _) = create_queue(&sqs, &unique("bw-std")).await;
    let (fifo_url, _) = create_queue(&sqs, &format!("{}.fifo", unique("bw"))).await;
    let dir = tempfile::tempdir().unwrap();
    let outputs = start(
        &format!(
            "[[output]]\ntype = \"sqs\"\nqueue_url = \"{std_url}\"\n\
             [[output]]\ntype = \"sqs\"\nqueue_url = \"{fifo_url}\"\n{FAST_RETRIES}"
        ),
        &aws,
        dir.path(),
    )
    .await;
    let sent = many();
    outputs.deliver(sent.clone()).await.unwrap();

    let got = receive(&sqs, &std_url, sent.len()).await;
    let ids: HashSet<String> = got
        .iter()
        .map(|m| json(&m.body)["transition_id"].as_str().unwrap().into())
        .collect();
    assert_eq!(ids.len(), sent.len());

    let got = receive(&sqs, &fifo_url, sent.len()).await;
    assert_eq!(got.len(), sent.len());
    let mut per_job: HashMap<String, Vec<String>> = HashMap::new();
    for m in &got {
        let t = json(&m.body);
        assert_eq!(m.attrs["MessageGroupId"], t["job_sid"].as_str().unwrap());
        assert_eq!(
            m.attrs["MessageDeduplicationId"],
            t["transition_id"].as_str().unwrap()
        );
        per_job
            .entry(t["job_sid"].as_str().unwrap().into())
            .or_default()
            .push(t["status"].as_str().unwrap().into());
    }
    assert_eq!(
        per_job["JQ3"],
        ["QUEUED", "IN_PROGRESS", "COMPLETED"],
        "FIFO keeps a job's order"
    );

    // A redelivery (same transition ids) is deduplicated by the FIFO queue.
    outputs.deliver(sent.clone()).await.unwrap();
    let again = receive_within(&sqs, &fifo_url, 1, Duration::from_secs(3)).await;
    assert!(again.is_empty(), "FIFO dedup by transition_id");
    assert_eq!(outputs.stats().outputs[1].delivered, 2 * sent.len() as u64);
    outputs.close().await.unwrap();
}

#[tokio::test]
async fn sns_standard_and_fifo_through_sqs_subscriptions() {
    let aws = localstack().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let sns = aws_sdk_sns::Client::new(&aws);
    let mut cfg = String::from(FAST_RETRIES);
    let mut queues = Vec::new();
    for fifo in [false, true] {
        let suffix = if fifo { ".fifo" } else { "" };
        let mut topic = sns
            .create_topic()
            .name(format!("{}{suffix}", unique("bw-topic")));
        if fifo {
            topic = topic.attributes("FifoTopic", "true");
        }
        let topic_arn = topic.send().await.unwrap().topic_arn.unwrap();
        let (url, arn) = create_queue(&sqs, &format!("{}{suffix}", unique("bw-sub"))).await;
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(arn)
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .unwrap();
        cfg.push_str(&format!(
            "[[output]]\ntype = \"sns\"\ntopic_arn = \"{topic_arn}\"\n"
        ));
        queues.push(url);
    }
    let dir = tempfile::tempdir().unwrap();
    let outputs = start(&cfg, &aws, dir.path()).await;
    let sent = many();
    outputs.deliver(sent.clone()).await.unwrap();

    for (k, url) in queues.iter().enumerate() {
        let got = receive(&sqs, url, sent.len()).await;
        let ids: HashSet<String> = got
            .iter()
            .map(|m| json(&m.body)["transition_id"].as_str().unwrap().into())
            .collect();
        assert_eq!(ids.len(), sent.len(), "queue {k}");
        if k == 1 {
            for m in &got {
                let t = json(&m.body);
                assert_eq!(m.attrs["MessageGroupId"], t["job_sid"].as_str().unwrap());
            }
        }
    }
    outputs.close().await.unwrap();
}

#[tokio::test]
async fn eventbridge_through_a_rule_with_an_sqs_target() {
    let aws = localstack().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let events = aws_sdk_eventbridge::Client::new(&aws);
    let bus = unique("bw-bus");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let source = unique("bulkwatch.test");
    let rule = unique("bw-rule");
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(serde_json::json!({"source": [source]}).to_string())
        .send()
        .await
        .unwrap();
    let (url, arn) = create_queue(&sqs, &unique("bw-eb")).await;
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outputs = start(
        &format!(
            "[[output]]\ntype = \"eventbridge\"\nevent_bus = \"{bus}\"\nsource = \"{source}\"\n\
             detail_type = \"Job Changed\"\n{FAST_RETRIES}"
        ),
        &aws,
        dir.path(),
    )
    .await;
    let sent = many();
    outputs.deliver(sent.clone()).await.unwrap();
    let got = receive(&sqs, &url, sent.len()).await;
    assert_eq!(got.len(), sent.len());
    for m in &got {
        let e = json(&m.body);
        assert_eq!(e["source"], source.as_str());
        assert_eq!(e["detail-type"], "Job Changed");
        assert!(e["detail"]["transition_id"].is_string(), "{e}");
    }
    outputs.close().await.unwrap();
}

#[tokio::test]
async fn sqs_dead_letter_keeps_bad_records_and_refusals() {
    let aws = localstack().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let (dlq, _) = create_queue(&sqs, &unique("bw-dlq")).await;
    let server = WebhookServer::start("k", Box::new(|_| (422, "nope".into()))).await;
    let dir = tempfile::tempdir().unwrap();
    let outputs = start(
        &format!(
            "[[output]]\ntype = \"webhook\"\nname = \"w\"\nurl = \"{}\"\nsecret = \"k\"\n\
             [dead_letter]\ntype = \"sqs\"\nqueue_url = \"{dlq}\"\n{FAST_RETRIES}",
            server.url()
        ),
        &aws,
        dir.path(),
    )
    .await;
    outputs.deliver(batch(&[("J1", "FAILED")])).await.unwrap();
    outputs
        .dead_letter(bulkwatch::output::DeadLetter {
            reason: "not a CloudEvent".into(),
            payload: vec![0x80, 0x81, b'{'],
            origin: bulkwatch::source::Origin {
                stream: "events".into(),
                shard_id: "shardId-000000000000".into(),
                sequence_number: "495".into(),
                arrival: None,
            },
            output: None,
            transition: None,
            response: None,
        })
        .await
        .unwrap();
    let got = receive(&sqs, &dlq, 2).await;
    assert_eq!(got.len(), 2);
    let entries: Vec<serde_json::Value> = got.iter().map(|m| json(&m.body)).collect();
    let refused = entries
        .iter()
        .find(|e| e["output"] == "w")
        .expect("refusal entry");
    assert!(refused["response"].as_str().unwrap().contains("422"));
    assert_eq!(refused["transition"]["job_sid"], "J1");
    let bad = entries
        .iter()
        .find(|e| e["output"].is_null())
        .expect("bad record entry");
    assert_eq!(bad["encoding"], "base64");
    assert_eq!(bad["payload"], "gIF7");
    assert_eq!(bad["shard_id"], "shardId-000000000000");
    assert_eq!(bad["sequence_number"], "495");
    let s = outputs.stats().dead_letter;
    assert_eq!((s.written, s.bad_records, s.undeliverable), (2, 1, 1));
    outputs.close().await.unwrap();
}

/// A transition over SQS's 1 MiB message limit (a ~1 MiB Kinesis record's
/// friendly_name) can never be sent: it goes to dead-letter at once, saying
/// its size and the limit, and the rest of the batch is delivered. Before,
/// it failed the whole SendMessageBatch (BatchRequestTooLong) and was
/// retried for `max_record_age` while the shard stalled. Two transitions
/// that fit alone but not together go in separate calls.
#[tokio::test]
async fn sqs_oversized_transition_is_dead_lettered_and_the_rest_delivered() {
    let aws = localstack().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let (url, _) = create_queue(&sqs, &unique("bw-big")).await;
    let dir = tempfile::tempdir().unwrap();
    let outputs = start(
        &format!("[[output]]\ntype = \"sqs\"\nname = \"q\"\nqueue_url = \"{url}\"\n{FAST_RETRIES}"),
        &aws,
        dir.path(),
    )
    .await;
    let mut sent: Vec<Transition> = vec![transition("J1", "QUEUED")];
    sent.push(Transition::sample(
        "JBIG",
        "COMPLETED",
        Some(&"n".repeat(1024 * 1024)),
    ));
    let mut half = Transition::sample("JHALF1", "QUEUED", None);
    half.job.description = Some("d".repeat(600 * 1024));
    sent.push(half);
    let mut half = Transition::sample("JHALF2", "QUEUED", None);
    half.job.description = Some("d".repeat(600 * 1024));
    sent.push(half);
    sent.push(transition("J2", "FAILED"));
    let sent: Arc<[Transition]> = sent.into();
    tokio::time::timeout(Duration::from_secs(60), outputs.deliver(sent.clone()))
        .await
        .expect("an oversized transition must not hold the batch")
        .unwrap();

    let got = receive(&sqs, &url, 4).await;
    let jobs: HashSet<String> = got
        .iter()
        .map(|m| json(&m.body)["job_sid"].as_str().unwrap().into())
        .collect();
    let want: HashSet<String> = ["J1", "JHALF1", "JHALF2", "J2"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(jobs, want);

    let dead = read_jsonl(&dir.path().join("dead-letter.jsonl"));
    assert_eq!(dead.len(), 1, "{}", dead.len());
    assert_eq!(dead[0]["output"], "q");
    assert_eq!(dead[0]["transition"]["job_sid"], "JBIG");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("1048576") && reason.contains("SQS"),
        "the reason names the size and the limit: {reason}"
    );
    assert_eq!(dead[0]["attempts"], 1);
    let s = &outputs.stats().outputs[0];
    assert_eq!(
        (s.delivered, s.rejected, s.failed_attempts),
        (4, 1, 0),
        "{s:?}"
    );
    outputs.close().await.unwrap();
}
