//! Tracking rules, one test each; the tracker against the memory store
//! (batches, compare-and-set races, expiry, crash replay); and property
//! tests over arbitrary interleavings of one job's events.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use time::OffsetDateTime;
use time::macros::datetime;

use super::apply::{MAX_QUIET_EVENT_IDS, MAX_UNKNOWN_STATUSES};
use super::*;
use crate::decode::{BulkJobData, BulkJobEvent, JobResult, TimeSource};
use crate::source::Origin;
use crate::store::memory::MemoryStore;
use crate::store::{JobStore, JobUpdate, StoreError, Versioned};

const NOW: OffsetDateTime = datetime!(2025-06-01 00:00:00 UTC);
const TTL: Duration = Duration::from_secs(7 * 24 * 3600);

fn ev(job: &str, id: &str, status: &str) -> BulkJobEvent {
    BulkJobEvent {
        id: id.to_owned(),
        source: "AB1".to_owned(),
        dataschema: Some("https://events-schemas.twilio.com/Lookup.BulkEvent/2".to_owned()),
        time: datetime!(2025-01-01 00:00:00 UTC),
        time_source: TimeSource::Event,
        data: BulkJobData {
            job_sid: job.to_owned(),
            status: JobStatus::parse(status),
            friendly_name: Some("January".to_owned()),
            description: None,
            created_at: Some(datetime!(2025-01-01 00:00:00 UTC)),
            completed_at: None,
            thresholds: None,
            result: None,
            twilio_error_code: None,
        },
    }
}

fn org(seq: u64) -> Origin {
    Origin {
        stream: Arc::from("s"),
        shard_id: Arc::from("shardId-000000000000"),
        sequence_number: seq.to_string(),
        arrival: None,
    }
}

/// Folds events through `apply`, one record each (sequence numbers 1, 2…).
fn fold(events: &[BulkJobEvent]) -> (Vec<Verdict>, Option<JobState>) {
    let mut state: Option<JobState> = None;
    let mut verdicts = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let (v, new) = apply(state.as_ref(), e, &org(i as u64 + 1), NOW, TTL);
        if new.is_some() {
            state = new;
        }
        verdicts.push(v);
    }
    (verdicts, state)
}

fn kinds(vs: &[Verdict]) -> Vec<&'static str> {
    vs.iter().map(Verdict::as_str).collect()
}

#[test]
fn the_first_event_of_a_job_is_a_transition_from_nothing() {
    let (vs, state) = fold(&[ev("JW1", "e1", "QUEUED")]);
    let t = vs[0].transition().unwrap();
    assert_eq!(t.previous_status, None);
    assert_eq!(t.status, JobStatus::Queued);
    assert!(t.status_known && !t.terminal && !t.is_terminal());
    assert_eq!(t.transition_id, transition_id("JW1", &JobStatus::Queued));
    assert_eq!(t.origin, org(1));
    let state = state.unwrap();
    assert_eq!(state.status, JobStatus::Queued);
    assert_eq!(state.history.len(), 1);
    assert_eq!(state.expires_at(), None);
}

#[test]
fn higher_ranks_are_transitions_and_steps_may_be_skipped() {
    let (vs, _) = fold(&[ev("JW1", "e1", "CREATED"), ev("JW1", "e2", "COMPLETED")]);
    let t = vs[1].transition().unwrap();
    assert_eq!(t.previous_status, Some(JobStatus::Created));
    assert!(t.terminal);
}

#[test]
fn the_same_event_id_from_another_record_is_a_duplicate() {
    let (vs, _) = fold(&[ev("JW1", "e1", "CREATED"), ev("JW1", "e1", "CREATED")]);
    assert_eq!(kinds(&vs), ["transition", "duplicate"]);
    // Even when it would otherwise be a transition.
    let (vs, _) = fold(&[ev("JW1", "e1", "CREATED"), ev("JW1", "e1", "QUEUED")]);
    assert_eq!(kinds(&vs), ["transition", "duplicate"]);
}

#[test]
fn the_same_record_read_again_replays_the_same_transition() {
    let e1 = ev("JW1", "e1", "CREATED");
    let e2 = ev("JW1", "e2", "QUEUED");
    let (_, s1) = apply(None, &e1, &org(1), NOW, TTL);
    let (v2, s2) = apply(s1.as_ref(), &e2, &org(2), NOW, TTL);
    let s2 = s2.unwrap();
    // Crash before delivery: both records are read again.
    let (r1, unchanged1) = apply(Some(&s2), &e1, &org(1), NOW, TTL);
    let (r2, unchanged2) = apply(Some(&s2), &e2, &org(2), NOW, TTL);
    assert!(
        unchanged1.is_none() && unchanged2.is_none(),
        "a replay writes nothing"
    );
    assert_eq!(r2, Verdict::Replayed(v2.transition().unwrap().clone()));
    let r1 = r1.transition().unwrap();
    assert_eq!(
        r1.previous_status, None,
        "the original previous status, not the current one"
    );
    assert_eq!(r1.transition_id, transition_id("JW1", &JobStatus::Created));
    assert_eq!(r1.origin, org(1));
}

#[test]
fn the_same_status_with_a_new_id_is_a_repeat_that_may_refresh_the_snapshot() {
    let first = ev("JW1", "e1", "PROCESSING");
    let mut newer = ev("JW1", "e2", "PROCESSING");
    newer.time = datetime!(2025-01-01 00:05:00 UTC);
    newer.data.result = Some(JobResult {
        total_count: Some(100),
        processed_count: Some(50),
        success_count: None,
        error_count: None,
        file_url: None,
        details: None,
    });
    let mut older = ev("JW1", "e3", "PROCESSING");
    older.time = datetime!(2024-12-31 00:00:00 UTC);
    older.data.friendly_name = Some("stale name".into());
    let (vs, state) = fold(&[first, newer, older]);
    assert_eq!(kinds(&vs), ["transition", "repeat", "repeat"]);
    let state = state.unwrap();
    assert_eq!(
        state.snapshot.result.as_ref().unwrap().processed_count,
        Some(50),
        "newer repeat refreshed it"
    );
    assert_eq!(
        state.snapshot.friendly_name.as_deref(),
        Some("January"),
        "older repeat did not"
    );
    assert_eq!(state.snapshot_event_id, "e2");
    assert_eq!(state.history.len(), 1, "a repeat is not history");
    assert_eq!(state.status, JobStatus::Processing);
}

#[test]
fn processing_and_in_progress_are_the_same_step() {
    let (vs, _) = fold(&[
        ev("JW1", "e1", "PROCESSING"),
        ev("JW1", "e2", "IN_PROGRESS"),
    ]);
    assert_eq!(kinds(&vs), ["transition", "repeat"]);
}

#[test]
fn a_lower_rank_is_stale() {
    let (vs, state) = fold(&[
        ev("JW1", "e1", "QUEUED"),
        ev("JW1", "e2", "FILE_RECEIVED"),
        ev("JW1", "e3", "CREATED"),
    ]);
    assert_eq!(kinds(&vs), ["transition", "stale", "stale"]);
    assert_eq!(state.unwrap().status, JobStatus::Queued);
}

#[test]
fn a_terminal_status_is_final() {
    let (vs, state) = fold(&[
        ev("JW1", "e1", "COMPLETED"),
        ev("JW1", "e2", "FAILED"),
        ev("JW1", "e3", "PROCESSING"),
        ev("JW1", "e4", "ARCHIVED"),
        ev("JW1", "e5", "COMPLETED"),
    ]);
    assert_eq!(
        kinds(&vs),
        ["transition", "stale", "stale", "stale", "repeat"]
    );
    let state = state.unwrap();
    assert!(state.is_terminal());
    assert_eq!(state.history.len(), 1);
}

#[test]
fn stop_requested_precedes_stopped() {
    let (vs, _) = fold(&[
        ev("JW1", "e1", "IN_PROGRESS"),
        ev("JW1", "e2", "STOP_REQUESTED"),
        ev("JW1", "e3", "STOPPED"),
    ]);
    assert_eq!(kinds(&vs), ["transition", "transition", "transition"]);
    assert_eq!(
        vs[2].transition().unwrap().previous_status,
        Some(JobStatus::StopRequested)
    );
}

#[test]
fn unknown_statuses_are_emitted_flagged_and_do_not_change_the_rank() {
    let (vs, state) = fold(&[
        ev("JW1", "e1", "QUEUED"),
        ev("JW1", "e2", "PAUSED"),
        ev("JW1", "e3", "QUEUED"),
        ev("JW1", "e4", "CREATED"),
        ev("JW1", "e5", "PAUSED"),
        ev("JW1", "e6", "PROCESSING"),
    ]);
    assert_eq!(
        kinds(&vs),
        [
            "transition",
            "transition",
            "repeat",
            "stale",
            "repeat",
            "transition"
        ]
    );
    let paused = vs[1].transition().unwrap();
    assert!(!paused.status_known && !paused.terminal);
    assert_eq!(paused.status, JobStatus::Unknown("PAUSED".into()));
    assert_eq!(paused.previous_status, Some(JobStatus::Queued));
    assert_eq!(
        vs[5].transition().unwrap().previous_status,
        Some(JobStatus::Unknown("PAUSED".into()))
    );
    assert_eq!(state.unwrap().known_status, Some(JobStatus::Processing));
}

#[test]
fn a_job_may_start_with_an_unknown_status() {
    let (vs, _) = fold(&[ev("JW1", "e1", "DRAFT"), ev("JW1", "e2", "CREATED")]);
    assert_eq!(kinds(&vs), ["transition", "transition"]);
    assert_eq!(
        vs[1].transition().unwrap().previous_status,
        Some(JobStatus::Unknown("DRAFT".into()))
    );
}

#[test]
fn unknown_statuses_per_job_are_capped() {
    let events: Vec<_> = (0..=MAX_UNKNOWN_STATUSES)
        .map(|i| ev("JW1", &format!("e{i}"), &format!("NEW_{i}")))
        .collect();
    let (vs, state) = fold(&events);
    assert!(
        vs[..MAX_UNKNOWN_STATUSES]
            .iter()
            .all(|v| v.transition().is_some())
    );
    assert_eq!(vs[MAX_UNKNOWN_STATUSES], Verdict::Stale);
    assert_eq!(state.unwrap().history.len(), MAX_UNKNOWN_STATUSES);
}

#[test]
fn quiet_events_seen_again_are_duplicates_and_their_memory_is_bounded() {
    let mut events = vec![
        ev("JW1", "e0", "QUEUED"),
        ev("JW1", "s1", "CREATED"),
        ev("JW1", "s1", "CREATED"),
    ];
    let (vs, _) = fold(&events);
    assert_eq!(kinds(&vs), ["transition", "stale", "duplicate"]);
    events.truncate(1);
    events.extend((0..MAX_QUIET_EVENT_IDS + 5).map(|i| ev("JW1", &format!("r{i}"), "QUEUED")));
    let (_, state) = fold(&events);
    let state = state.unwrap();
    assert_eq!(state.quiet_event_ids.len(), MAX_QUIET_EVENT_IDS);
    assert_eq!(
        state.quiet_event_ids.back().map(String::as_str),
        Some(&*format!("r{}", MAX_QUIET_EVENT_IDS + 4))
    );
}

#[test]
fn terminal_states_expire_after_the_ttl() {
    let (_, s) = apply(None, &ev("JW1", "e1", "PROCESSING"), &org(1), NOW, TTL);
    assert_eq!(s.as_ref().unwrap().expires_at(), None);
    let (_, s) = apply(s.as_ref(), &ev("JW1", "e2", "FAILED"), &org(2), NOW, TTL);
    assert_eq!(s.unwrap().expires_at(), Some(NOW + time::Duration::days(7)));
    // An absurd TTL saturates instead of panicking.
    let (_, s) = apply(
        None,
        &ev("JW1", "e1", "FAILED"),
        &org(1),
        NOW,
        Duration::MAX,
    );
    assert!(s.unwrap().expires_at().is_some());
}

#[test]
fn the_transition_record_has_its_documented_fields() {
    let mut e = ev("JW1", "e1", "FAILED");
    e.data.twilio_error_code = Some(60608);
    let (v, _) = apply(None, &e, &org(7), NOW, TTL);
    let t = v.transition().unwrap();
    let json = serde_json::to_value(t).unwrap();
    let keys: HashSet<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let want: HashSet<&str> = [
        "transition_id",
        "job_sid",
        "previous_status",
        "status",
        "status_known",
        "terminal",
        "event_id",
        "event_source",
        "event_time",
        "event_time_source",
        "dataschema",
        "job",
        "origin",
    ]
    .into();
    assert_eq!(keys, want);
    let job_keys: HashSet<&str> = json["job"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let want_job: HashSet<&str> = [
        "friendly_name",
        "description",
        "created_at",
        "completed_at",
        "thresholds",
        "result",
        "twilio_error_code",
        "twilio_error_message",
    ]
    .into();
    assert_eq!(job_keys, want_job);
    assert_eq!(json["status"], "FAILED");
    assert_eq!(json["previous_status"], serde_json::Value::Null);
    assert_eq!(json["event_time"], "2025-01-01T00:00:00Z");
    assert_eq!(json["event_time_source"], "event");
    assert_eq!(json["job"]["twilio_error_code"], 60608);
    assert_eq!(
        json["job"]["twilio_error_message"],
        "Lookup provider replied with an error"
    );
    assert_eq!(json["origin"]["shard_id"], "shardId-000000000000");
    assert_eq!(json["origin"]["sequence_number"], "7");
    let back: Transition = serde_json::from_value(json).unwrap();
    assert_eq!(&back, t);
}

#[test]
fn unknown_error_codes_pass_through_without_meaning() {
    let mut e = ev("JW1", "e1", "FAILED");
    e.data.twilio_error_code = Some(12345);
    let (v, _) = apply(None, &e, &org(1), NOW, TTL);
    let job = &v.transition().unwrap().job;
    assert_eq!(
        (job.twilio_error_code, job.twilio_error_message.as_deref()),
        (Some(12345), None)
    );
}

#[test]
fn job_state_round_trips_through_serde() {
    let (_, state) = fold(&[
        ev("JW1", "e1", "CREATED"),
        ev("JW1", "e2", "WEIRD"),
        ev("JW1", "e3", "CREATED"),
        ev("JW1", "e4", "COMPLETED"),
    ]);
    let state = state.unwrap();
    let back: JobState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(back, state);
    // The embedded store keeps job state in postcard, a format that is not
    // self-describing: every serde impl on the way must not need one.
    let bytes = postcard::to_stdvec(&state).unwrap();
    let back: JobState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, state);
}

// ---- the tracker ----

fn tracker(store: Arc<dyn JobStore>) -> Tracker {
    Tracker::new(store, TTL)
}

#[tokio::test]
async fn track_returns_one_verdict_per_event_in_order_across_jobs() {
    let store = Arc::new(MemoryStore::new());
    let t = tracker(store.clone());
    let batch = vec![
        (ev("JW1", "a1", "CREATED"), org(1)),
        (ev("JW2", "b1", "QUEUED"), org(2)),
        (ev("JW1", "a2", "QUEUED"), org(3)),
        (ev("JW2", "b2", "CREATED"), org(4)),
        (ev("JW1", "a1", "CREATED"), org(5)),
    ];
    let vs = t.track(&batch).await.unwrap();
    assert_eq!(
        kinds(&vs),
        [
            "transition",
            "transition",
            "transition",
            "stale",
            "duplicate"
        ]
    );
    assert_eq!(
        vs[2].transition().unwrap().previous_status,
        Some(JobStatus::Created)
    );
    assert_eq!(store.list_jobs().await.unwrap().len(), 2);
    assert!(t.track(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn track_after_a_crash_re_emits_the_same_transitions() {
    let store = Arc::new(MemoryStore::new());
    let batch = vec![
        (ev("JW1", "a1", "CREATED"), org(1)),
        (ev("JW1", "a2", "COMPLETED"), org(2)),
        (ev("JW1", "a1", "CREATED"), org(3)),
    ];
    let first = tracker(store.clone()).track(&batch).await.unwrap();
    // The process dies before delivering; a new one reads the same records.
    let again = tracker(store.clone()).track(&batch).await.unwrap();
    assert_eq!(kinds(&again), ["replayed", "replayed", "duplicate"]);
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a.transition(), b.transition());
    }
}

#[tokio::test]
async fn state_is_durable_across_trackers_sharing_a_store() {
    let store = Arc::new(MemoryStore::new());
    tracker(store.clone())
        .track(&[(ev("JW1", "a1", "QUEUED"), org(1))])
        .await
        .unwrap();
    let vs = tracker(store.clone())
        .track(&[(ev("JW1", "a0", "CREATED"), org(2))])
        .await
        .unwrap();
    assert_eq!(vs, [Verdict::Stale]);
}

/// A store where another worker writes just before our first save.
struct RacingStore {
    inner: MemoryStore,
    rival: Mutex<Option<BulkJobEvent>>,
    saves: Mutex<u32>,
}

#[async_trait]
impl JobStore for RacingStore {
    async fn load_jobs(
        &self,
        sids: &[&str],
    ) -> Result<HashMap<String, Versioned<JobState>>, StoreError> {
        self.inner.load_jobs(sids).await
    }
    async fn save_jobs(&self, updates: &[JobUpdate]) -> Result<Vec<String>, StoreError> {
        *self.saves.lock().unwrap() += 1;
        let rival = self.rival.lock().unwrap().take();
        if let Some(e) = rival {
            let current = self
                .inner
                .load_jobs(&[e.job_sid()])
                .await?
                .remove(e.job_sid());
            // Real time: the store's clock decides expiry.
            let now = OffsetDateTime::now_utc();
            let (_, new) = apply(current.as_ref().map(|v| &v.value), &e, &org(999), now, TTL);
            let update = JobUpdate {
                state: new.unwrap(),
                expected_version: current.map(|v| v.version),
            };
            assert!(self.inner.save_jobs(&[update]).await?.is_empty());
        }
        self.inner.save_jobs(updates).await
    }
    async fn list_jobs(&self) -> Result<Vec<JobState>, StoreError> {
        self.inner.list_jobs().await
    }
}

#[tokio::test]
async fn a_lost_compare_and_set_is_recomputed_against_the_winner() {
    let store = Arc::new(RacingStore {
        inner: MemoryStore::new(),
        rival: Mutex::new(Some(ev("JW1", "r1", "COMPLETED"))),
        saves: Mutex::new(0),
    });
    let t = tracker(store.clone());
    // Our worker thinks JW1 is new and QUEUED; the rival finished it first.
    let vs = t
        .track(&[
            (ev("JW1", "a1", "QUEUED"), org(1)),
            (ev("JW2", "b1", "CREATED"), org(2)),
        ])
        .await
        .unwrap();
    assert_eq!(vs[0], Verdict::Stale, "recomputed against COMPLETED");
    assert!(
        vs[1].transition().is_some(),
        "the other job's write went through the first time"
    );
    assert_eq!(*store.saves.lock().unwrap(), 2);
    let jobs = store.list_jobs().await.unwrap();
    assert_eq!(
        jobs.iter().find(|j| j.job_sid == "JW1").unwrap().status,
        JobStatus::Completed
    );
}

struct AlwaysConflicts;

#[async_trait]
impl JobStore for AlwaysConflicts {
    async fn load_jobs(
        &self,
        _: &[&str],
    ) -> Result<HashMap<String, Versioned<JobState>>, StoreError> {
        Ok(HashMap::new())
    }
    async fn save_jobs(&self, updates: &[JobUpdate]) -> Result<Vec<String>, StoreError> {
        Ok(updates.iter().map(|u| u.state.job_sid.clone()).collect())
    }
    async fn list_jobs(&self) -> Result<Vec<JobState>, StoreError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn endless_conflicts_end_in_a_conflict_error() {
    let err = tracker(Arc::new(AlwaysConflicts))
        .track(&[(ev("JW1", "a1", "QUEUED"), org(1))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref key } if key == "JW1"),
        "{err}"
    );
}

#[tokio::test]
async fn an_expired_terminal_job_is_forgotten() {
    let clock = Arc::new(Mutex::new(OffsetDateTime::now_utc()));
    let c = clock.clone();
    let store = Arc::new(MemoryStore::with_clock(Arc::new(move || {
        *c.lock().unwrap()
    })));
    let t = Tracker::new(store.clone(), Duration::from_secs(60));
    t.track(&[(ev("JW1", "a1", "COMPLETED"), org(1))])
        .await
        .unwrap();
    assert_eq!(
        t.track(&[(ev("JW1", "a2", "QUEUED"), org(2))])
            .await
            .unwrap(),
        [Verdict::Stale]
    );
    *clock.lock().unwrap() += time::Duration::minutes(2);
    assert!(store.list_jobs().await.unwrap().is_empty());
    let vs = t
        .track(&[(ev("JW1", "a3", "QUEUED"), org(3))])
        .await
        .unwrap();
    assert_eq!(vs[0].transition().unwrap().previous_status, None);
}

// ---- properties ----

const POOL: [&str; 12] = [
    "CREATED",
    "FILE_RECEIVED",
    "QUEUED",
    "PROCESSING",
    "IN_PROGRESS",
    "STOP_REQUESTED",
    "COMPLETED",
    "FAILED",
    "CANCELED",
    "STOPPED",
    "PAUSED",
    "ARCHIVED",
];

/// Twilio's distinct events for one job (id, status), and the deliveries:
/// indices into them, so events may be duplicated and come in any order,
/// cut into batches of random sizes.
fn arb_deliveries() -> impl Strategy<Value = (Vec<(String, &'static str)>, Vec<usize>, Vec<usize>)>
{
    prop::collection::vec(prop::sample::select(&POOL[..]), 1..10).prop_flat_map(|statuses| {
        let n = statuses.len();
        let events: Vec<(String, &'static str)> = statuses
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("NO{i}"), s))
            .collect();
        (
            Just(events),
            prop::collection::vec(0..n, 1..25),
            prop::collection::vec(1usize..6, 1..25),
        )
    })
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

/// Tracks the deliveries in batches; returns every batch with its verdicts.
async fn deliver(
    t: &Tracker,
    events: &[(String, &str)],
    order: &[usize],
    sizes: &[usize],
) -> Vec<Vec<((BulkJobEvent, Origin), Verdict)>> {
    let records: Vec<(BulkJobEvent, Origin)> = order
        .iter()
        .enumerate()
        .map(|(pos, &i)| (ev("JW1", &events[i].0, events[i].1), org(pos as u64 + 1)))
        .collect();
    let mut out = Vec::new();
    let mut rest = &records[..];
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).min(rest.len());
        let (batch, tail) = rest.split_at(n);
        let vs = t.track(batch).await.unwrap();
        out.push(batch.iter().cloned().zip(vs).collect());
        rest = tail;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn emitted_statuses_only_move_forward((events, order, sizes) in arb_deliveries()) {
        let batches = run(async {
            deliver(&tracker(Arc::new(MemoryStore::new())), &events, &order, &sizes).await
        });
        let emitted: Vec<Transition> = batches.into_iter().flatten().filter_map(|(_, v)| match v {
            Verdict::Transition(t) => Some(t),
            Verdict::Replayed(_) => panic!("no record was read twice"),
            _ => None,
        }).collect();
        prop_assert!(!emitted.is_empty(), "the first delivery is always a transition");
        let ranks: Vec<u8> = emitted.iter().filter_map(|t| t.status.rank()).collect();
        prop_assert!(ranks.windows(2).all(|w| w[0] < w[1]), "ranks {:?}", ranks);
        prop_assert!(emitted.iter().filter(|t| t.terminal).count() <= 1);
        if let Some(end) = emitted.iter().position(|t| t.terminal) {
            prop_assert_eq!(end, emitted.len() - 1, "nothing after a terminal status");
        }
        let mut seen = HashSet::new();
        for t in &emitted {
            prop_assert!(seen.insert(t.status.clone()), "{} twice", t.status);
            prop_assert_eq!(t.transition_id, transition_id("JW1", &t.status));
        }
        // Each transition starts where the previous one ended.
        let mut previous = None;
        for t in &emitted {
            prop_assert_eq!(&t.previous_status, &previous);
            previous = Some(t.status.clone());
        }
    }

    #[test]
    fn replaying_uncheckpointed_batches_re_emits_the_same_transitions(
        (events, order, sizes) in arb_deliveries(),
        checkpoint in any::<prop::sample::Index>(),
    ) {
        run(async {
            let store = Arc::new(MemoryStore::new());
            let batches = deliver(&tracker(store.clone()), &events, &order, &sizes).await;
            // The worker crashed after tracking everything but had
            // checkpointed only the first `c` batches.
            let c = checkpoint.index(batches.len());
            let restarted = tracker(store.clone());
            for batch in &batches[c..] {
                let records: Vec<(BulkJobEvent, Origin)> = batch.iter().map(|(r, _)| r.clone()).collect();
                let again = restarted.track(&records).await.unwrap();
                for ((_, before), after) in batch.iter().zip(&again) {
                    match before {
                        Verdict::Transition(t) => assert_eq!(after, &Verdict::Replayed(t.clone())),
                        _ => assert_eq!(after.transition(), None, "nothing new after a replay: {:?}", after),
                    }
                }
            }
        });
    }
}

/// The example in docs/transition-record.md is real output.
#[test]
fn the_documented_example_is_what_bulkwatch_emits() {
    let doc = include_str!("../../docs/transition-record.md");
    let start = doc.find("```json").unwrap() + "```json".len();
    let end = start + doc[start..].find("```").unwrap();
    let documented: serde_json::Value = serde_json::from_str(&doc[start..end]).unwrap();

    // As real events carry it: a media type in `datacontenttype`.
    let completed = crate::decode::tests::SEED
        .replace("\"CREATED\"", "\"COMPLETED\"")
        .replace("\"2025-10-08T07:17:02.363Z\"", "\"application/json\"");
    let arrival = datetime!(2025-01-01 00:01:02.5 UTC);
    let crate::decode::Decoded::Job(event) =
        crate::decode::decode(completed.as_bytes(), Some(arrival))
    else {
        panic!("the seed decodes")
    };
    let origin = Origin {
        stream: Arc::from("twilio-events"),
        shard_id: Arc::from("shardId-000000000000"),
        sequence_number: "49654998521983938718209726584624123421318342870151929858".into(),
        arrival: Some(arrival),
    };
    let mut processing = ev(event.job_sid(), "NO-earlier", "PROCESSING");
    processing.time = datetime!(2025-01-01 00:00:30 UTC);
    let (_, state) = apply(None, &processing, &org(1), NOW, TTL);
    let (v, _) = apply(state.as_ref(), &event, &origin, NOW, TTL);
    assert_eq!(
        serde_json::to_value(v.transition().unwrap()).unwrap(),
        documented
    );
}
