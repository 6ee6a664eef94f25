//! The health and metrics endpoint: a small HTTP/1 server (hyper) on
//! `ops.listen`.
//!
//! | path | answers |
//! |---|---|
//! | `GET /health/live` | 200 while every loop is alive (working, or waiting in a bounded backoff or for another loop), 503 when one is stuck |
//! | `GET /health/ready` | 200 when the stream and the store answer, this worker holds leases (or there are none for it to hold: see [`Health::ready`]) and no output has failed for longer than `ops.ready_window`; 503 otherwise or while draining |
//! | `GET /metrics` | Prometheus text ([`Metrics::encode`]) |
//!
//! Both health answers are a JSON object `{"status": "ok"|"fail", "checks":
//! {...}}` whose checks say why, so `curl` is a diagnosis tool too.
//!
//! # Live versus ready
//!
//! *Live* is what a supervisor should restart on: some loop of the process
//! (a shard's reader and pipeline, an output, the dead-letter task) is
//! wedged, more than `ops.live_stall` past the time it promised to show a
//! sign of life ([`live_check`]). A down or slow output, a long Retry-After,
//! a down dead-letter destination or a throttled stream is not that: those
//! loops wait in backoff with a known end, or for another loop, and
//! restarting would not help (a restarted worker would only hammer the
//! destination again). *Ready* is the broader "is this worker doing its
//! job": it goes false during an AWS outage or while an output has failed
//! for longer than `ops.ready_window`, which is worth an alert, not a
//! restart loop of the whole fleet. That is why `bulkwatch healthcheck`
//! (the ECS container health check) probes live.
//!
//! The leases check uses the lease coordinator's report after each cycle
//! (`bulkwatch_leases_held`), not the running readers: a held lease whose
//! parent shard is unfinished has no reader yet and is still held, and a
//! worker in a fleet larger than the shard count holds nothing and is
//! still ready, as long as nothing is free for it to take.
//!
//! Readiness is mostly passive: the readers' last successful GetRecords and
//! the pipeline's last store call. Only when those are older than
//! `ops.ready_window` (an idle worker with no reader, a store never written)
//! does a probe call ListShards or read the checkpoints, and its answer is
//! cached for a few seconds so a busy scraper cannot turn it into load.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::metrics::{CONTENT_TYPE, Metrics};
use crate::config::OpsConfig;
use crate::source::kinesis::list_shards;
use crate::store::{Checkpoint, CheckpointStore};

/// How long an active readiness probe's answer is reused.
const PROBE_CACHE: Duration = Duration::from_secs(5);
/// The longest a probe's AWS or store call may take before "unreachable".
/// Both run at once, so /health/ready answers within this even when the
/// stream or the store hangs: under `bulkwatch healthcheck`'s default 2 s,
/// so a slow dependency reads as "not ready: stream: no answer within
/// 1.5s" rather than as a probe that timed out without saying why.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the endpoint needs to answer.
pub struct Health {
    pub metrics: Metrics,
    pub kinesis: aws_sdk_kinesis::Client,
    pub stream: Arc<str>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub live_stall: Duration,
    pub ready_window: Duration,
    /// How old the coordinator's last lease report may be before readiness
    /// stops trusting it.
    pub lease_stale: Duration,
    cache: tokio::sync::Mutex<Option<(Instant, Probe)>>,
}

/// What an active probe found out.
#[derive(Clone)]
struct Probe {
    stream: Result<Vec<String>, String>,
    /// Shard id → checkpoint.
    store: Result<HashMap<String, Checkpoint>, String>,
}

/// Binds the endpoint's address; a clear error if it is taken, since a
/// worker whose health check cannot answer would be killed by ECS anyway.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for health and metrics (setting ops.listen, flag --health-listen; `off` disables it)")
    })
}

impl Health {
    pub fn new(
        metrics: Metrics,
        kinesis: aws_sdk_kinesis::Client,
        stream: Arc<str>,
        checkpoints: Arc<dyn CheckpointStore>,
        ops: &OpsConfig,
        lease_renew_interval: Duration,
    ) -> Health {
        Health {
            metrics,
            kinesis,
            stream,
            checkpoints,
            live_stall: ops.live_stall,
            ready_window: ops.ready_window,
            // A few missed cycles are a slow store, not a lost one.
            lease_stale: ops.ready_window.max(lease_renew_interval * 3),
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Serves until the process exits. Deliberately not stopped on
    /// SIGTERM: during the drain, liveness must keep answering (ECS is
    /// already stopping the task) and readiness says "draining".
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(message = "Health endpoint accept failed.", error = %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let health = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let health = health.clone();
                    async move { Ok::<_, Infallible>(health.route(req).await) }
                });
                // Bounded: a client that connects and says nothing is
                // dropped instead of holding a task forever.
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
            });
        }
    }

    async fn route(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match req.uri().path() {
            "/health/live" | "/health/live/" => {
                let (ok, body) = self.live();
                health_json(ok, body)
            }
            "/health/ready" | "/health/ready/" => {
                let (ok, body) = self.ready().await;
                health_json(ok, body)
            }
            "/metrics" => Response::builder()
                .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(Full::new(Bytes::from(self.metrics.encode())))
                .unwrap_or_default(),
            "/" => text(
                StatusCode::OK,
                "bulkwatch: /health/live /health/ready /metrics\n",
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Liveness: every loop of the process is alive and responsive
    /// ([`live_check`]).
    pub fn live(&self) -> (bool, Value) {
        live_check(&self.metrics, self.live_stall)
    }

    /// Readiness: stream reachable, store reachable, shards held (or none
    /// to hold), and not draining.
    pub async fn ready(&self) -> (bool, Value) {
        if self.metrics.is_shutting_down() {
            return (
                false,
                json!({"shutdown": {"ok": false, "detail": "draining after SIGTERM/SIGINT"}}),
            );
        }
        let window = self.ready_window;
        let recent = |a: Option<Duration>| a.is_some_and(|a| a <= window);
        let readers = self.metrics.readers_running();
        let stream_recent = recent(self.metrics.stream_ok_age());
        let (store_ok_age, store_failed_age) = self.metrics.store_ages();
        // The last store call failed (and was not followed by a success):
        // the pipeline is retrying it right now.
        let store_failing = match (store_ok_age, store_failed_age) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(ok), Some(failed)) => failed < ok,
        };
        let store_recent = recent(store_ok_age) && !store_failing;

        // Readers running means GetRecords and checkpoints are being
        // called: their stamps say enough without an extra probe.
        let probe = if stream_recent && store_recent && readers > 0 {
            None
        } else {
            Some(self.probe().await)
        };

        let refused = self.metrics.refused_shards();
        let stream = match (&probe, stream_recent) {
            // Kinesis answers, but will not let these shards be read from
            // their checkpoints: nothing of theirs flows until an operator
            // acts (the reader logged the way out at ERROR).
            _ if !refused.is_empty() => (
                false,
                format!(
                    "Kinesis refuses to read {} from its checkpoint (stream recreated? see the ERROR log)",
                    refused.join(", ")
                ),
            ),
            (_, true) => (true, "GetRecords answered recently".to_owned()),
            (Some(p), false) => match &p.stream {
                Ok(s) => (true, format!("ListShards answered ({} shards)", s.len())),
                Err(e) => (false, format!("ListShards failed: {e}")),
            },
            (None, false) => (false, "no recent Kinesis answer".to_owned()),
        };
        let store = match (&probe, store_recent) {
            (_, true) => (true, "last store call succeeded".to_owned()),
            (Some(p), false) => match &p.store {
                Ok(_) if store_failing => (
                    false,
                    "the pipeline's last store call failed (being retried)".to_owned(),
                ),
                Ok(c) => (true, format!("checkpoints readable ({} shards)", c.len())),
                Err(e) => (false, format!("reading checkpoints failed: {e}")),
            },
            (None, false) => (false, "no recent store answer".to_owned()),
        };
        let leases = self.leases_check(readers);
        let delivery = delivery_check(&self.metrics, window);
        let ok = stream.0 && store.0 && leases.0 && delivery.0;
        (
            ok,
            json!({
                "stream": {"ok": stream.0, "detail": stream.1},
                "store": {"ok": store.0, "detail": store.1},
                "leases": {"ok": leases.0, "detail": leases.1},
                "delivery": {"ok": delivery.0, "detail": delivery.1},
            }),
        )
    }

    /// "Leases are held, or there are none to hold", from the lease
    /// coordinator's last cycle. A worker in a fleet with more workers than
    /// shards legitimately holds nothing: it is ready as long as nothing is
    /// free for it to take.
    fn leases_check(&self, readers: usize) -> (bool, String) {
        let Some((age, v)) = self.metrics.leases() else {
            return (
                false,
                "the lease coordinator has not finished a cycle yet (starting up)".to_owned(),
            );
        };
        if age > self.lease_stale {
            return (
                false,
                format!(
                    "the lease coordinator's last cycle finished {} ago (lease table unreachable?)",
                    fmt_age(age)
                ),
            );
        }
        if v.held > 0 {
            (
                true,
                format!(
                    "holding {} of {} active lease(s), {readers} shard reader(s) running",
                    v.held, v.active
                ),
            )
        } else if v.active == 0 {
            (true, "no shard left to read".to_owned())
        } else if v.takeable == 0 {
            (
                true,
                format!(
                    "none to hold: all {} active lease(s) are held by other workers",
                    v.active
                ),
            )
        } else {
            (
                false,
                format!(
                    "{} lease(s) free to take but none held (starting up, or taking fails)",
                    v.takeable
                ),
            )
        }
    }

    /// One ListShards and one checkpoint listing, cached for
    /// [`PROBE_CACHE`].
    async fn probe(&self) -> Probe {
        let mut cache = self.cache.lock().await;
        if let Some((at, p)) = cache.as_ref()
            && at.elapsed() < PROBE_CACHE
        {
            return p.clone();
        }
        let (stream, store) = tokio::join!(
            tokio::time::timeout(PROBE_TIMEOUT, list_shards(&self.kinesis, &self.stream)),
            tokio::time::timeout(PROBE_TIMEOUT, self.checkpoints.list_checkpoints()),
        );
        let stream = match stream {
            Ok(Ok(shards)) => {
                self.metrics.stream_ok();
                Ok(shards.into_iter().map(|s| s.shard_id).collect())
            }
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        let store = match store {
            Ok(Ok(c)) => Ok(c.into_iter().collect()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        let p = Probe { stream, store };
        *cache = Some((Instant::now(), p.clone()));
        p
    }
}

/// Liveness: no loop (a shard's reader and pipeline, an output's delivery
/// task, the dead-letter task) is more than `stall` past the time it
/// promised its next sign of life (`ops::metrics::Heartbeat`).
///
/// Records need not flow: a loop waiting in a backoff or a Retry-After has
/// promised its next attempt for when the wait ends, and one waiting for
/// another loop (a pipeline for a down output, an output for a down
/// dead-letter destination, a reader for a batch slot) is parked, since the
/// loop it waits for answers for itself. What fails is a loop that stopped
/// stamping: an await that never returns, a blocked runtime thread. A
/// restart helps there, and only there.
pub fn live_check(metrics: &Metrics, stall: Duration) -> (bool, Value) {
    let loops = metrics.loops();
    let stalled: Vec<_> = loops
        .iter()
        .filter(|l| l.overdue.is_some_and(|o| o > stall))
        .collect();
    let ok = stalled.is_empty();
    let age = metrics.heartbeat_age();
    let detail = if ok {
        let waiting = loops.iter().filter(|l| l.overdue.is_none()).count();
        format!(
            "{} loop(s) responsive ({waiting} waiting for work or for another loop); last sign of life {} ago",
            loops.len(),
            age.map_or_else(|| "never".to_owned(), fmt_age)
        )
    } else {
        stalled
            .iter()
            .map(|l| {
                format!(
                    "{} {} is stuck: {} past its due time (last sign of life {} ago)",
                    l.stage,
                    l.name,
                    fmt_age(l.overdue.unwrap_or_default()),
                    l.age.map_or_else(|| "never".to_owned(), fmt_age)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    (
        ok,
        json!({
            "heartbeat": {"ok": ok, "detail": detail,
                          "age_seconds": age.map(|a| a.as_secs_f64()),
                          "limit_seconds": stall.as_secs_f64(),
                          "stalled": stalled.iter().map(|l| format!("{} {}", l.stage, l.name)).collect::<Vec<_>>()},
        }),
    )
}

/// Readiness' view of delivery: degraded when an output (or the dead-letter
/// output) has failed every attempt for longer than `window`. Reading has
/// stopped behind it, nothing is lost, and a restart would not help: worth
/// an alert, which is what readiness is for (liveness stays true).
fn delivery_check(metrics: &Metrics, window: Duration) -> (bool, String) {
    let failing: Vec<String> = metrics
        .failing_outputs()
        .into_iter()
        .filter(|(_, d)| *d > window)
        .map(|(name, d)| format!("{name} failing for {}", fmt_age(d)))
        .collect();
    if failing.is_empty() {
        (
            true,
            "every output delivers (or has nothing to do)".to_owned(),
        )
    } else {
        (
            false,
            format!("{} (retrying; reading waits for it)", failing.join(", ")),
        )
    }
}

fn fmt_age(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_default()
}

fn health_json(ok: bool, checks: Value) -> Response<Full<Bytes>> {
    let body = json!({"status": if ok { "ok" } else { "fail" }, "checks": checks});
    Response::builder()
        .status(if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        })
        .header(hyper::header::CONTENT_TYPE, "application/json")
        // Health answers must never be served from a cache.
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(format!("{body}\n"))))
        .unwrap_or_default()
}
