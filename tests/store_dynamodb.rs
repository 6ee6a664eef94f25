//! The DynamoDB store against moto's DynamoDB server.
//!
//! The endpoint is `AWS_ENDPOINT_URL_DYNAMODB` (`eval "$(localstack/up)"`
//! sets it), or http://127.0.0.1:4567 when unset. If nothing answers there
//! the tests fail, saying how to start it; they never skip.
//!
//! Every test uses its own randomly named tables, so they run in parallel
//! against one server.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use bulkwatch::store::dynamodb::{DynamoConfig, DynamoStore};
use bulkwatch::store::{
    Checkpoint, CheckpointStore, HashKeyRange, JobStore, JobUpdate, LeaseCheckpoint, LeaseStore,
    NewLease, StoreError,
};
use bulkwatch::track::JobState;

const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4567";

async fn sdk_config() -> aws_config::SdkConfig {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| DEFAULT_ENDPOINT.to_owned());
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "bulkwatch-tests",
        ))
        .endpoint_url(&endpoint)
        .load()
        .await;
    let probe = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    if let Err(e) = Client::from_conf(probe).list_tables().limit(1).send().await {
        panic!(
            "cannot reach DynamoDB (moto) at {endpoint}: {}\n\
             Start it with `eval \"$(localstack/up)\"` (which sets AWS_ENDPOINT_URL_DYNAMODB), then run the tests again.",
            aws_sdk_dynamodb::error::DisplayErrorContext(e)
        );
    }
    sdk
}

fn unique(prefix: &str) -> String {
    format!("bw-test-{prefix}-{:08x}", rand::random::<u32>())
}

async fn store(sdk: &aws_config::SdkConfig, app: &str, worker: &str) -> DynamoStore {
    DynamoStore::connect(sdk, DynamoConfig::new(app, worker))
        .await
        .expect("connect")
}

fn job(sid: &str) -> JobState {
    JobState::sample(sid)
}

fn seq(s: &str) -> Checkpoint {
    Checkpoint::Sequence(s.to_owned())
}

fn lost(r: Result<(), StoreError>) -> bool {
    matches!(r, Err(StoreError::LeaseLost { .. }))
}

async fn drop_tables(store: &DynamoStore) {
    for table in [store.lease_table(), store.job_table()] {
        let _ = store.client().delete_table().table_name(table).send().await;
    }
}

#[tokio::test]
async fn creates_tables_and_reports_missing_or_wrong_ones() {
    let sdk = sdk_config().await;
    let app = unique("create");
    let store = store(&sdk, &app, "w1").await;
    let client = store.client().clone();
    for (table, key) in [
        (app.clone(), "leaseKey"),
        (format!("{app}-jobs"), "job_sid"),
    ] {
        let d = client
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        assert_eq!(d.key_schema()[0].attribute_name(), key);
        assert_eq!(
            d.billing_mode_summary().and_then(|b| b.billing_mode()),
            Some(&BillingMode::PayPerRequest)
        );
    }
    let ttl = client
        .describe_time_to_live()
        .table_name(format!("{app}-jobs"))
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(
        ttl.attribute_name(),
        Some("expires_at"),
        "job table TTL is on expires_at"
    );

    // Existing tables pass the check without the right to create.
    let mut config = DynamoConfig::new(&app, "w2");
    config.create_tables = false;
    DynamoStore::connect(&sdk, config)
        .await
        .expect("existing tables are accepted");

    // Missing, and creation not allowed: the error names the table and key.
    let missing = unique("missing");
    let mut config = DynamoConfig::new(&missing, "w1");
    config.create_tables = false;
    let err = DynamoStore::connect(&sdk, config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("lease table {missing} does not exist")) && err.contains("leaseKey"),
        "{err}"
    );

    // A table with the wrong key is refused even when creation is allowed.
    let wrong = unique("wrong");
    client
        .create_table()
        .table_name(&wrong)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let err = DynamoStore::connect(&sdk, DynamoConfig::new(&wrong, "w1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("lease table {wrong} has key schema [id (HASH)]"))
            && err.contains("`leaseKey`"),
        "{err}"
    );

    drop_tables(&store).await;
    let _ = client.delete_table().table_name(&wrong).send().await;
    let _ = client
        .delete_table()
        .table_name(format!("{wrong}-jobs"))
        .send()
        .await;
}

#[tokio::test]
async fn job_state_is_compare_and_set() {
    let sdk = sdk_config().await;
    let a = store(&sdk, &unique("jobs"), "w1").await;
    let b = a.with_worker_id("w2");

    let create = |sid: &str| JobUpdate {
        state: job(sid),
        expected_version: None,
    };
    let update = |sid: &str, v| JobUpdate {
        state: job(sid),
        expected_version: Some(v),
    };

    assert!(
        a.save_jobs(&[create("JS1"), create("JS2")])
            .await
            .unwrap()
            .is_empty()
    );
    // Two workers both saw version 1 of JS1: only the first write wins.
    assert!(a.save_jobs(&[update("JS1", 1)]).await.unwrap().is_empty());
    assert_eq!(b.save_jobs(&[update("JS1", 1)]).await.unwrap(), ["JS1"]);
    // Mixed batch: conflicts reported in input order, the rest written.
    let conflicted = b
        .save_jobs(&[
            create("JS2"),
            update("JS2", 1),
            update("JS3", 1),
            create("JS4"),
        ])
        .await
        .unwrap();
    assert_eq!(conflicted, ["JS2", "JS3"]);
    // The same job twice in one batch: applied in order, the stale one loses.
    let conflicted = a
        .save_jobs(&[update("JS4", 1), update("JS4", 2), update("JS4", 2)])
        .await
        .unwrap();
    assert_eq!(conflicted, ["JS4"]);

    let jobs = b
        .load_jobs(&["JS1", "JS2", "JS3", "JS4", "JS1"])
        .await
        .unwrap();
    let versions: HashMap<_, _> = jobs.iter().map(|(k, v)| (k.as_str(), v.version)).collect();
    assert_eq!(
        versions,
        HashMap::from([("JS1", 2), ("JS2", 2), ("JS4", 3)])
    );
    assert_eq!(jobs["JS1"].value, job("JS1"));

    // More sids than one BatchGetItem takes.
    let many: Vec<String> = (0..150).map(|i| format!("JSmany{i:03}")).collect();
    let updates: Vec<_> = many.iter().map(|sid| create(sid)).collect();
    assert!(a.save_jobs(&updates).await.unwrap().is_empty());
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(a.load_jobs(&refs).await.unwrap().len(), 150);
    assert_eq!(a.list_jobs().await.unwrap().len(), 153);

    // The item layout others (and DynamoDB TTL) rely on.
    let item = a
        .client()
        .get_item()
        .table_name(a.job_table())
        .key("job_sid", AttributeValue::S("JS1".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["version"], AttributeValue::N("2".into()));
    let state: serde_json::Value = serde_json::from_str(item["state"].as_s().unwrap()).unwrap();
    assert_eq!(state["job_sid"], "JS1");
    drop_tables(&a).await;
}

#[tokio::test]
async fn leases_take_renew_steal_release() {
    let sdk = sdk_config().await;
    let a = store(&sdk, &unique("leases"), "worker-a").await;
    let b = a.with_worker_id("worker-b");
    let shard = "shardId-000000000003";

    let new = NewLease {
        shard_id: shard.into(),
        parent_shard_ids: vec!["shardId-000000000001".into(), "shardId-000000000000".into()],
        hash_key_range: Some(HashKeyRange {
            starting_hash_key: "0".into(),
            ending_hash_key: "1000".into(),
        }),
        checkpoint: LeaseCheckpoint::TrimHorizon,
    };
    assert!(a.create_lease_if_absent(&new).await.unwrap());
    assert!(
        !b.create_lease_if_absent(&new).await.unwrap(),
        "second create is a no-op"
    );
    let fresh = b.get_lease(shard).await.unwrap().unwrap();
    assert_eq!((fresh.owner.as_deref(), fresh.counter), (None, 0));
    assert_eq!(
        fresh.parent_shard_ids,
        ["shardId-000000000000", "shardId-000000000001"]
    );
    assert_eq!(
        a.checkpoint(shard).await.unwrap(),
        None,
        "TRIM_HORIZON is no checkpoint yet"
    );

    // Both try to claim the unowned lease from the same observation.
    let taken = a.take_lease(&fresh).await.unwrap();
    assert_eq!(
        (
            taken.owner.as_deref(),
            taken.counter,
            taken.owner_switches_since_checkpoint
        ),
        (Some("worker-a"), 1, 0)
    );
    assert!(matches!(
        b.take_lease(&fresh).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(lost(b.renew_lease(shard).await), "b never held it");
    assert!(
        lost(b.set_checkpoint(shard, &seq("1")).await),
        "b may not checkpoint a lease it does not hold"
    );

    a.renew_lease(shard).await.unwrap();
    a.set_checkpoint(
        shard,
        &seq("49590338271490256608559692538361571095921575989136588800"),
    )
    .await
    .unwrap();
    assert_eq!(a.held_leases(), [(shard.to_owned(), 3)]);

    // b steals it (say a stopped renewing). a learns on its next write.
    let observed = b.get_lease(shard).await.unwrap().unwrap();
    let stolen = b.take_lease(&observed).await.unwrap();
    assert_eq!(
        (stolen.counter, stolen.owner_switches_since_checkpoint),
        (4, 1)
    );
    assert!(lost(a.renew_lease(shard).await));
    assert!(lost(
        a.set_checkpoint(
            shard,
            &seq("49590338271490256608559692538361571095921575989136588801")
        )
        .await
    ));
    assert!(a.held_leases().is_empty());
    assert_eq!(
        b.checkpoint(shard).await.unwrap(),
        Some(seq(
            "49590338271490256608559692538361571095921575989136588800"
        )),
        "a's late checkpoint was refused"
    );

    // The lost worker, even taking the lease again from a stale view, fails.
    assert!(matches!(
        a.take_lease(&observed).await,
        Err(StoreError::Conflict { .. })
    ));

    b.set_checkpoint(shard, &Checkpoint::ShardEnd)
        .await
        .unwrap();
    b.set_child_shard_ids(
        shard,
        &["shardId-000000000005".into(), "shardId-000000000004".into()],
    )
    .await
    .unwrap();
    let lease = b.get_lease(shard).await.unwrap().unwrap();
    assert_eq!(lease.checkpoint, LeaseCheckpoint::ShardEnd);
    assert_eq!(lease.owner_switches_since_checkpoint, 0);
    assert_eq!(
        lease.child_shard_ids,
        ["shardId-000000000004", "shardId-000000000005"]
    );

    // Release: owner removed, counter bumped, b writes no more.
    b.release_lease(shard).await.unwrap();
    assert!(lost(b.renew_lease(shard).await));
    assert!(lost(b.release_lease(shard).await));
    let released = a.get_lease(shard).await.unwrap().unwrap();
    assert_eq!((released.owner.as_deref(), released.counter), (None, 6));
    // An unowned lease is claimed without counting an owner switch.
    let retaken = a.take_lease(&released).await.unwrap();
    assert_eq!(
        (retaken.counter, retaken.owner_switches_since_checkpoint),
        (7, 0)
    );

    assert_eq!(
        a.list_checkpoints().await.unwrap(),
        [(shard.to_owned(), Checkpoint::ShardEnd)]
    );
    a.delete_lease(shard).await.unwrap();
    assert!(a.list_leases().await.unwrap().is_empty());
    assert!(a.held_leases().is_empty());
    assert!(matches!(
        a.set_child_shard_ids(shard, &["x".into()]).await,
        Err(StoreError::Conflict { .. })
    ));
    drop_tables(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewer_and_checkpointer_of_one_worker_do_not_collide() {
    let sdk = sdk_config().await;
    let a = store(&sdk, &unique("gate"), "worker-a").await;
    let shard = "shardId-000000000000";
    a.create_lease_if_absent(&NewLease {
        shard_id: shard.into(),
        parent_shard_ids: vec![],
        hash_key_range: None,
        checkpoint: LeaseCheckpoint::TrimHorizon,
    })
    .await
    .unwrap();
    let observed = a.get_lease(shard).await.unwrap().unwrap();
    a.take_lease(&observed).await.unwrap();
    let renewer = {
        let a = a.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                a.renew_lease(shard).await.unwrap();
            }
        })
    };
    for i in 0..20 {
        a.set_checkpoint(shard, &seq(&format!("{i}")))
            .await
            .unwrap();
    }
    renewer.await.unwrap();
    assert_eq!(a.get_lease(shard).await.unwrap().unwrap().counter, 41);
    drop_tables(&a).await;
}

/// A round of renewals (several in flight at once) gives each lease the
/// outcome renewing it alone would, in the order asked.
#[tokio::test]
async fn renewing_many_leases_is_renewing_each() {
    let sdk = sdk_config().await;
    let a = store(&sdk, &unique("round"), "worker-a").await;
    let b = a.with_worker_id("worker-b");
    let shards: Vec<String> = (0..20).map(|i| format!("shardId-{i:012}")).collect();
    for shard in &shards {
        a.create_lease_if_absent(&NewLease {
            shard_id: shard.clone(),
            parent_shard_ids: vec![],
            hash_key_range: None,
            checkpoint: LeaseCheckpoint::TrimHorizon,
        })
        .await
        .unwrap();
        let observed = a.get_lease(shard).await.unwrap().unwrap();
        a.take_lease(&observed).await.unwrap();
    }
    let stolen = [&shards[3], &shards[17]];
    for shard in stolen {
        let observed = b.get_lease(shard).await.unwrap().unwrap();
        b.take_lease(&observed).await.unwrap();
    }
    let results = a.renew_leases(&shards).await;
    assert_eq!(results.len(), shards.len());
    for (shard, result) in shards.iter().zip(results) {
        if stolen.contains(&shard) {
            assert!(lost(result), "{shard} was stolen");
        } else {
            result.unwrap_or_else(|e| panic!("{shard}: {e}"));
            assert_eq!(a.get_lease(shard).await.unwrap().unwrap().counter, 2);
        }
    }
    assert_eq!(a.held_leases().len(), 18);
    assert!(a.held_leases().iter().all(|(_, counter)| *counter == 2));
    drop_tables(&a).await;
}

/// A lease table as a Java KCL 2.x application leaves it, written with raw
/// PutItem: bulkwatch reads it, takes over and continues from its
/// checkpoints, and what it writes back keeps the KCL layout.
#[tokio::test]
async fn kcl_2x_lease_table_is_read_and_continued() {
    let sdk = sdk_config().await;
    let app = unique("kcl");
    // Create only the lease table the way KCL does (hash key leaseKey, S);
    // bulkwatch creates its job table itself.
    let raw = Client::new(&sdk);
    raw.create_table()
        .table_name(&app)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("leaseKey")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: &str| AttributeValue::N(v.into());
    let ss = |v: &[&str]| AttributeValue::Ss(v.iter().map(|x| x.to_string()).collect());
    let parent_seq = "49590338271490256608559692538361571095921575989136588898";
    let child_seq = "49590338271490256608559692540000000000000000000000000002";
    let items: Vec<HashMap<String, AttributeValue>> = vec![
        // A closed parent, read to its end.
        HashMap::from([
            ("leaseKey".into(), s("shardId-000000000000")),
            ("leaseOwner".into(), s("kcl-worker-1")),
            ("leaseCounter".into(), n("1207")),
            ("checkpoint".into(), s("SHARD_END")),
            ("checkpointSubSequenceNumber".into(), n("0")),
            ("ownerSwitchesSinceCheckpoint".into(), n("0")),
            (
                "childShardIds".into(),
                ss(&["shardId-000000000001", "shardId-000000000002"]),
            ),
            ("startingHashKey".into(), s("0")),
            (
                "endingHashKey".into(),
                s("340282366920938463463374607431768211455"),
            ),
        ]),
        // A child in progress, with a sequence-number checkpoint.
        HashMap::from([
            ("leaseKey".into(), s("shardId-000000000001")),
            ("leaseOwner".into(), s("kcl-worker-1")),
            ("leaseCounter".into(), n("42")),
            ("checkpoint".into(), s(parent_seq)),
            ("checkpointSubSequenceNumber".into(), n("0")),
            ("ownerSwitchesSinceCheckpoint".into(), n("2")),
            ("parentShardId".into(), ss(&["shardId-000000000000"])),
            ("startingHashKey".into(), s("0")),
            (
                "endingHashKey".into(),
                s("170141183460469231731687303715884105727"),
            ),
        ]),
        // A child not started yet, unowned.
        HashMap::from([
            ("leaseKey".into(), s("shardId-000000000002")),
            ("leaseCounter".into(), n("0")),
            ("checkpoint".into(), s("TRIM_HORIZON")),
            ("checkpointSubSequenceNumber".into(), n("0")),
            ("ownerSwitchesSinceCheckpoint".into(), n("0")),
            ("parentShardId".into(), ss(&["shardId-000000000000"])),
            (
                "startingHashKey".into(),
                s("170141183460469231731687303715884105728"),
            ),
            (
                "endingHashKey".into(),
                s("340282366920938463463374607431768211455"),
            ),
        ]),
        // A KCL 3.5 single-table-format worker-metrics item: not a lease.
        HashMap::from([
            ("leaseKey".into(), s("kcl-worker-1")),
            ("entityType".into(), s("WORKER_METRICS")),
        ]),
    ];
    for item in items {
        raw.put_item()
            .table_name(&app)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }

    let mut config = DynamoConfig::new(&app, "bulkwatch-1");
    config.job_table = format!("{app}-jobs");
    let store = DynamoStore::connect(&sdk, config).await.unwrap();

    // Read: every KCL attribute maps.
    let leases = store.list_leases().await.unwrap();
    assert_eq!(leases.len(), 3);
    assert_eq!(leases[0].checkpoint, LeaseCheckpoint::ShardEnd);
    assert_eq!(
        leases[0].child_shard_ids,
        ["shardId-000000000001", "shardId-000000000002"]
    );
    let child = &leases[1];
    assert_eq!(child.owner.as_deref(), Some("kcl-worker-1"));
    assert_eq!(
        (child.counter, child.owner_switches_since_checkpoint),
        (42, 2)
    );
    assert_eq!(child.parent_shard_ids, ["shardId-000000000000"]);
    assert_eq!(
        child.hash_key_range,
        Some(HashKeyRange {
            starting_hash_key: "0".into(),
            ending_hash_key: "170141183460469231731687303715884105727".into()
        })
    );
    assert_eq!(
        store.list_checkpoints().await.unwrap(),
        [
            ("shardId-000000000000".to_owned(), Checkpoint::ShardEnd),
            ("shardId-000000000001".to_owned(), seq(parent_seq))
        ]
    );
    assert_eq!(leases[2].checkpoint, LeaseCheckpoint::TrimHorizon);

    // Continue: take the KCL worker's lease (its owner is gone), resume
    // after its checkpoint, checkpoint further.
    let taken = store.take_lease(child).await.unwrap();
    assert_eq!(
        (taken.counter, taken.owner_switches_since_checkpoint),
        (43, 3)
    );
    assert_eq!(
        store.checkpoint("shardId-000000000001").await.unwrap(),
        Some(seq(parent_seq))
    );
    store
        .set_checkpoint("shardId-000000000001", &seq(child_seq))
        .await
        .unwrap();
    store.renew_lease("shardId-000000000001").await.unwrap();

    // What it wrote back is still a KCL 2.x item.
    let item = raw
        .get_item()
        .table_name(&app)
        .key("leaseKey", s("shardId-000000000001"))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["leaseOwner"], s("bulkwatch-1"));
    assert_eq!(item["leaseCounter"], n("45"));
    assert_eq!(item["checkpoint"], s(child_seq));
    assert_eq!(item["checkpointSubSequenceNumber"], n("0"));
    assert_eq!(item["ownerSwitchesSinceCheckpoint"], n("0"));
    assert_eq!(item["parentShardId"], ss(&["shardId-000000000000"]));
    assert_eq!(item["startingHashKey"], s("0"));
    assert_eq!(
        item["endingHashKey"],
        s("170141183460469231731687303715884105727")
    );
    assert_eq!(item.len(), 9, "no attributes KCL does not know: {item:?}");

    // The parent is done; once the children run it can be cleaned up.
    store
        .delete_checkpoint("shardId-000000000000")
        .await
        .unwrap();
    assert_eq!(store.list_leases().await.unwrap().len(), 2);
    drop_tables(&store).await;
}
