//! Tests of the embedded store within one process. The lock and kill -9
//! tests, which need child processes, live in `tests/embedded_process.rs`:
//! a child forked here would inherit every store file this binary has open
//! and keep its lock until it execs, so a test that closes and reopens a
//! store could find it "in use" by a sibling test's child.

use std::time::{Duration, Instant};

use super::*;

fn job(sid: &str) -> JobState {
    JobState::sample(sid)
}

fn seq(s: &str) -> Checkpoint {
    Checkpoint::Sequence(s.to_owned())
}

fn create(sid: &str) -> JobUpdate {
    JobUpdate {
        state: job(sid),
        expected_version: None,
    }
}

fn update(sid: &str, expected: u64) -> JobUpdate {
    JobUpdate {
        state: job(sid),
        expected_version: Some(expected),
    }
}

#[tokio::test]
async fn checkpoints_round_trip_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let root = EmbeddedStore::open(dir.path()).unwrap();
    let a = root.for_stream("stream-a");
    let b = root.for_stream("stream-b");

    assert_eq!(a.checkpoint("shardId-0").await.unwrap(), None);
    a.set_checkpoint("shardId-0", &seq("100")).await.unwrap();
    a.set_checkpoint("shardId-0", &seq("200")).await.unwrap();
    a.set_checkpoint("shardId-1", &Checkpoint::ShardEnd)
        .await
        .unwrap();
    b.set_checkpoint("shardId-0", &seq("900")).await.unwrap();

    assert_eq!(a.checkpoint("shardId-0").await.unwrap(), Some(seq("200")));
    assert_eq!(b.checkpoint("shardId-0").await.unwrap(), Some(seq("900")));
    assert_eq!(
        a.list_checkpoints().await.unwrap(),
        vec![
            ("shardId-0".to_owned(), seq("200")),
            ("shardId-1".to_owned(), Checkpoint::ShardEnd)
        ]
    );
    // A stream whose name is a prefix of another must not see its leases.
    assert!(
        root.for_stream("stream")
            .list_checkpoints()
            .await
            .unwrap()
            .is_empty()
    );

    a.delete_checkpoint("shardId-1").await.unwrap();
    assert_eq!(a.checkpoint("shardId-1").await.unwrap(), None);
    assert_eq!(a.list_checkpoints().await.unwrap().len(), 1);
    assert_eq!(b.list_checkpoints().await.unwrap().len(), 1);
}

#[tokio::test]
async fn reopen_after_drop_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap().for_stream("s");
        store.set_checkpoint("shardId-0", &seq("42")).await.unwrap();
        assert!(store.save_jobs(&[create("JS1")]).await.unwrap().is_empty());
    }
    let store = EmbeddedStore::open(dir.path()).unwrap().for_stream("s");
    assert_eq!(
        store.checkpoint("shardId-0").await.unwrap(),
        Some(seq("42"))
    );
    let jobs = store.load_jobs(&["JS1"]).await.unwrap();
    assert_eq!(
        jobs["JS1"],
        Versioned {
            value: job("JS1"),
            version: 1
        }
    );
    // Job state is global: another stream's handle sees it.
    assert!(
        store
            .for_stream("other")
            .load_jobs(&["JS1"])
            .await
            .unwrap()
            .contains_key("JS1")
    );
}

#[tokio::test]
async fn save_jobs_is_compare_and_set_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();

    assert!(
        store
            .save_jobs(&[create("JS1"), create("JS2")])
            .await
            .unwrap()
            .is_empty()
    );
    // Creating again conflicts; so does a wrong version; the good update in
    // the same batch is still written.
    let conflicted = store
        .save_jobs(&[create("JS1"), update("JS2", 7), update("JS1", 1)])
        .await
        .unwrap();
    assert_eq!(conflicted, vec!["JS1".to_owned(), "JS2".to_owned()]);
    let jobs = store.load_jobs(&["JS1", "JS2", "JS3"]).await.unwrap();
    assert_eq!(jobs["JS1"].version, 2, "the CAS that matched was written");
    assert_eq!(
        jobs["JS2"].version, 1,
        "the conflicted write left the job alone"
    );
    assert!(!jobs.contains_key("JS3"));

    // Two updates of one job in one batch: the second read the same
    // version as the first, so it must lose.
    let conflicted = store
        .save_jobs(&[update("JS2", 1), update("JS2", 1)])
        .await
        .unwrap();
    assert_eq!(conflicted, vec!["JS2".to_owned()]);
    assert_eq!(store.load_jobs(&["JS2"]).await.unwrap()["JS2"].version, 2);

    // An update of a job that does not exist conflicts.
    assert_eq!(
        store.save_jobs(&[update("JS9", 1)]).await.unwrap(),
        vec!["JS9".to_owned()]
    );
    assert_eq!(store.list_jobs().await.unwrap().len(), 2);
}

#[tokio::test]
async fn expired_job_states_are_absent_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let now = 1_700_000_000;
    let updates = vec![
        (create("JS-old"), Some(now - 10)),
        (create("JS-edge"), Some(now)),
        (create("JS-young"), Some(now + 3600)),
        (create("JS-forever"), None),
    ];
    assert!(
        store
            .save_jobs_at(updates, now - 100)
            .await
            .unwrap()
            .is_empty()
    );

    let live = store
        .load_jobs_at(&["JS-old", "JS-edge", "JS-young", "JS-forever"], now)
        .await
        .unwrap();
    let mut sids: Vec<_> = live.keys().cloned().collect();
    sids.sort();
    assert_eq!(
        sids,
        ["JS-forever", "JS-young"],
        "expires_at <= now means expired"
    );
    assert_eq!(store.list_jobs_at(now).await.unwrap().len(), 2);

    // An expired state counts as absent for compare-and-set too: a create
    // succeeds (and starts again at version 1), an update of it conflicts.
    assert_eq!(
        store
            .save_jobs_at(vec![(update("JS-old", 1), None)], now)
            .await
            .unwrap(),
        ["JS-old"]
    );
    assert!(
        store
            .save_jobs_at(vec![(create("JS-old"), None)], now)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.load_jobs_at(&["JS-old"], now).await.unwrap()["JS-old"].version,
        1
    );

    // JS-old was rewritten without expiry, so only JS-edge is due; its
    // index entry and its state both go.
    let t = OffsetDateTime::from_unix_timestamp(now).unwrap();
    assert_eq!(store.purge_expired(t).await.unwrap(), 1);
    assert_eq!(store.purge_expired(t).await.unwrap(), 0);
    let later = OffsetDateTime::from_unix_timestamp(now + 7200).unwrap();
    assert_eq!(
        store.purge_expired(later).await.unwrap(),
        1,
        "JS-young expires later"
    );
    let mut left: Vec<_> = store
        .list_jobs_at(0)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.job_sid)
        .collect();
    left.sort();
    assert_eq!(left, ["JS-forever", "JS-old"]);
}

#[tokio::test]
async fn second_open_in_process_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open(dir.path()).unwrap();
    let started = Instant::now();
    let err = EmbeddedStore::open(dir.path()).unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "must fail at once, not wait"
    );
    let expected = format!(
        "state dir {} is in use by another bulkwatch process",
        dir.path().display()
    );
    assert!(err.contains(&expected), "unexpected error: {err}");
}

#[tokio::test]
async fn embedded_leases_follow_kcl_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap().for_stream("s");
    let a = store.with_worker_id("worker-a");
    let b = store.with_worker_id("worker-b");

    let new = NewLease {
        shard_id: "shardId-2".into(),
        parent_shard_ids: vec!["shardId-1".into(), "shardId-0".into()],
        hash_key_range: None,
        checkpoint: LeaseCheckpoint::TrimHorizon,
    };
    assert!(a.create_lease_if_absent(&new).await.unwrap());
    assert!(!b.create_lease_if_absent(&new).await.unwrap());
    let observed = a.get_lease("shardId-2").await.unwrap().unwrap();
    assert_eq!((observed.owner.as_deref(), observed.counter), (None, 0));
    assert_eq!(observed.parent_shard_ids, ["shardId-0", "shardId-1"]);
    assert_eq!(
        a.checkpoint("shardId-2").await.unwrap(),
        None,
        "TRIM_HORIZON is no checkpoint yet"
    );

    let taken = a.take_lease(&observed).await.unwrap();
    assert_eq!(
        (taken.owner.as_deref(), taken.counter),
        (Some("worker-a"), 1)
    );
    assert!(
        matches!(
            b.take_lease(&observed).await,
            Err(StoreError::Conflict { .. })
        ),
        "stale counter"
    );
    a.renew_lease("shardId-2").await.unwrap();
    a.set_checkpoint("shardId-2", &seq("5")).await.unwrap();
    assert_eq!(a.held_leases(), [("shardId-2".to_owned(), 3)]);

    // b steals it; a finds out on its next write and never checkpoints again.
    let observed = b.get_lease("shardId-2").await.unwrap().unwrap();
    let stolen = b.take_lease(&observed).await.unwrap();
    assert_eq!(stolen.owner_switches_since_checkpoint, 1);
    assert!(matches!(
        a.renew_lease("shardId-2").await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        a.set_checkpoint("shardId-2", &seq("6")).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(a.held_leases().is_empty());
    b.set_checkpoint("shardId-2", &seq("7")).await.unwrap();
    let lease = b.get_lease("shardId-2").await.unwrap().unwrap();
    assert_eq!(
        lease.owner_switches_since_checkpoint, 0,
        "a checkpoint resets the switch count"
    );
    assert_eq!(lease.checkpoint.to_checkpoint(), Some(seq("7")));

    // Release: owner gone, counter bumped, and no more checkpoints from b.
    b.release_lease("shardId-2").await.unwrap();
    let released = b.get_lease("shardId-2").await.unwrap().unwrap();
    assert_eq!(released.owner, None);
    assert!(matches!(
        b.set_checkpoint("shardId-2", &seq("8")).await,
        Err(StoreError::LeaseLost { .. })
    ));
    b.set_child_shard_ids("shardId-2", &["shardId-4".into(), "shardId-3".into()])
        .await
        .unwrap();
    assert_eq!(
        b.get_lease("shardId-2")
            .await
            .unwrap()
            .unwrap()
            .child_shard_ids,
        ["shardId-3", "shardId-4"]
    );
    b.delete_lease("shardId-2").await.unwrap();
    assert!(b.list_leases().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewals_and_checkpoints_of_one_handle_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap().for_stream("s");
    store.set_checkpoint("shardId-0", &seq("0")).await.unwrap();
    let renewer = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                store.renew_lease("shardId-0").await.unwrap();
            }
        })
    };
    for i in 1..=50 {
        store
            .set_checkpoint("shardId-0", &seq(&i.to_string()))
            .await
            .unwrap();
    }
    renewer.await.unwrap();
    assert_eq!(
        store.get_lease("shardId-0").await.unwrap().unwrap().counter,
        101
    );
}

/// Renewing a round of leases in one write gives each lease the outcome
/// renewing it alone would: the stolen one is lost (and stays lost), the
/// rest move on, and a shard named twice is renewed twice.
#[tokio::test]
async fn renewing_leases_together_is_renewing_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap().for_stream("s");
    let a = store.with_worker_id("worker-a");
    let b = store.with_worker_id("worker-b");
    let shards: Vec<String> = (0..3).map(|i| format!("shardId-{i}")).collect();
    for shard in &shards {
        let new = NewLease {
            shard_id: shard.clone(),
            parent_shard_ids: vec![],
            hash_key_range: None,
            checkpoint: LeaseCheckpoint::TrimHorizon,
        };
        assert!(a.create_lease_if_absent(&new).await.unwrap());
        let observed = a.get_lease(shard).await.unwrap().unwrap();
        a.take_lease(&observed).await.unwrap();
    }
    let observed = b.get_lease("shardId-1").await.unwrap().unwrap();
    b.take_lease(&observed).await.unwrap();

    let round = [
        "shardId-0",
        "shardId-1",
        "shardId-2",
        "shardId-0",
        "shardId-9",
    ]
    .map(String::from);
    let results = a.renew_leases(&round).await;
    let outcome: Vec<&str> = results
        .iter()
        .map(|r| match r {
            Ok(()) => "renewed",
            Err(StoreError::LeaseLost { .. }) => "lost",
            Err(_) => "error",
        })
        .collect();
    assert_eq!(outcome, ["renewed", "lost", "renewed", "renewed", "lost"]);
    assert_eq!(
        a.held_leases(),
        [("shardId-0".to_owned(), 3), ("shardId-2".to_owned(), 2)]
    );
    let counter = |shard: &'static str| {
        let b = b.clone();
        async move { b.get_lease(shard).await.unwrap().unwrap().counter }
    };
    assert_eq!(counter("shardId-0").await, 3);
    assert_eq!(counter("shardId-1").await, 2, "b's lease is left alone");
    assert_eq!(counter("shardId-2").await, 2);
    // What a remembers is what is stored: its next writes succeed.
    a.set_checkpoint("shardId-0", &seq("1")).await.unwrap();
    assert!(matches!(
        a.set_checkpoint("shardId-1", &seq("1")).await,
        Err(StoreError::LeaseLost { .. })
    ));
    let again = a.renew_leases(&["shardId-2".to_owned()]).await;
    assert!(again[0].is_ok());
}
