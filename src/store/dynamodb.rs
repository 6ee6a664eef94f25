//! The DynamoDB store, for fleets of workers that share a stream.
//!
//! Two tables:
//!
//! - The **lease table**, in the exact layout of the KCL 2.x lease table, so
//!   bulkwatch can be pointed at the lease table of an existing Java KCL
//!   application and continue from its checkpoints (see
//!   `docs/kcl-compatibility.md`). Hash key `leaseKey` (S) = shard id;
//!   attributes `leaseOwner` (S), `leaseCounter` (N), `checkpoint` (S: a
//!   sequence number or `TRIM_HORIZON`/`LATEST`/`AT_TIMESTAMP`/`SHARD_END`),
//!   `checkpointSubSequenceNumber` (N), `ownerSwitchesSinceCheckpoint` (N),
//!   `parentShardId` (SS), `childShardIds` (SS), `startingHashKey` and
//!   `endingHashKey` (S). By KCL convention its name is the application
//!   name, and it serves one stream.
//! - The **job table** (`<name>-jobs` by convention): hash key `job_sid`
//!   (S); `state` (S, the JSON of the job state), `version` (N, what the
//!   compare-and-set checks), `status` (S, for people reading the table) and
//!   `expires_at` (N, epoch seconds: the table's TTL attribute).
//!
//! Every write that depends on what was read is a conditional write; a
//! failed condition becomes `Conflict` or `LeaseLost`, never a silent
//! overwrite.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    ReturnValue, ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use time::OffsetDateTime;

use super::held::{HeldLeases, Holding};
use super::{
    Checkpoint, CheckpointStore, HashKeyRange, JobStore, JobUpdate, Lease, LeaseCheckpoint,
    LeaseStore, NewLease, StoreError, Versioned,
};
use crate::track::JobState;

// KCL 2.x lease table attribute names (DynamoDBLeaseSerializer).
const LEASE_KEY: &str = "leaseKey";
const LEASE_OWNER: &str = "leaseOwner";
const LEASE_COUNTER: &str = "leaseCounter";
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
const PARENT_SHARD_ID: &str = "parentShardId";
const CHILD_SHARD_IDS: &str = "childShardIds";
const STARTING_HASH_KEY: &str = "startingHashKey";
const ENDING_HASH_KEY: &str = "endingHashKey";

// Job table attribute names.
const JOB_SID: &str = "job_sid";
const JOB_STATE: &str = "state";
const JOB_VERSION: &str = "version";
const JOB_STATUS: &str = "status";
const JOB_EXPIRES_AT: &str = "expires_at";

/// BatchGetItem takes at most 100 keys.
const BATCH_GET_MAX: usize = 100;
/// How many conditional job writes of one `save_jobs` run at once.
const SAVE_CONCURRENCY: usize = 16;

/// Settings of the DynamoDB store.
#[derive(Debug, Clone)]
pub struct DynamoConfig {
    /// The lease table; KCL names it after the application.
    pub lease_table: String,
    /// The job-state table.
    pub job_table: String,
    /// This worker's name, written as `leaseOwner`. Must be unique in the
    /// fleet (e.g. the ECS task id).
    pub worker_id: String,
    /// Create missing tables (PAY_PER_REQUEST). When false, missing or
    /// wrongly keyed tables are reported and the store does not start.
    pub create_tables: bool,
    /// Bound on one call, retries included. The SDK has no default, and a
    /// renewal that hangs past the failover time is a lease lost.
    pub operation_timeout: Duration,
    /// Bound on one attempt, so a stuck connection is retried in time.
    pub attempt_timeout: Duration,
    /// How long `connect` waits for created tables to become ACTIVE.
    pub table_ready_timeout: Duration,
}

impl DynamoConfig {
    /// The conventional names: the lease table is `application`, the job
    /// table `<application>-jobs`.
    pub fn new(application: &str, worker_id: &str) -> Self {
        DynamoConfig {
            lease_table: application.to_owned(),
            job_table: format!("{application}-jobs"),
            worker_id: worker_id.to_owned(),
            create_tables: true,
            // Well under the 10 s default failover time, so a worker whose
            // renewals time out learns it before its leases are taken.
            operation_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            table_ready_timeout: Duration::from_secs(120),
        }
    }
}

/// A handle on the DynamoDB store, scoped to one lease table (so one stream)
/// and one worker id. Cheap to clone; clones share the lease bookkeeping.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    lease_table: Arc<str>,
    job_table: Arc<str>,
    worker_id: Arc<str>,
    held: Arc<HeldLeases>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("lease_table", &self.lease_table)
            .field("job_table", &self.job_table)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

fn backend(context: String, e: impl Describe) -> StoreError {
    StoreError::Backend(anyhow!("{context}: {}", e.describe()))
}

/// An error's whole source chain on one line: an SdkError's own Display is
/// just "service error".
trait Describe {
    fn describe(&self) -> String;
}

/// With the HTTP status, when there was a response (a wrong endpoint's
/// empty 404 says nothing else).
impl<E: std::error::Error + 'static> Describe
    for SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>
{
    fn describe(&self) -> String {
        crate::aws_error::describe(self)
    }
}

impl Describe for aws_sdk_dynamodb::error::BuildError {
    fn describe(&self) -> String {
        DisplayErrorContext(self).to_string()
    }
}

fn is_condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DynamoStore {
    /// Builds the client from `sdk` (with timeouts added), then makes sure
    /// both tables exist with the right keys, creating them if allowed.
    pub async fn connect(
        sdk: &aws_config::SdkConfig,
        config: DynamoConfig,
    ) -> Result<DynamoStore, StoreError> {
        let timeouts = TimeoutConfig::builder()
            .operation_timeout(config.operation_timeout)
            .operation_attempt_timeout(config.attempt_timeout)
            .connect_timeout(config.attempt_timeout)
            .build();
        let client_config = aws_sdk_dynamodb::config::Builder::from(sdk)
            .timeout_config(timeouts)
            .build();
        let client = Client::from_conf(client_config);
        let store = DynamoStore {
            client,
            lease_table: Arc::from(config.lease_table.as_str()),
            job_table: Arc::from(config.job_table.as_str()),
            worker_id: Arc::from(config.worker_id.as_str()),
            held: Arc::default(),
        };
        store
            .ensure_table("lease", &config.lease_table, LEASE_KEY, None, &config)
            .await?;
        store
            .ensure_table(
                "job",
                &config.job_table,
                JOB_SID,
                Some(JOB_EXPIRES_AT),
                &config,
            )
            .await?;
        store.check_ttl(&config.job_table).await;
        Ok(store)
    }

    /// A handle on the same tables that writes `worker_id` as the lease
    /// owner. It starts holding no leases. (Tests use it to play two
    /// workers.)
    pub fn with_worker_id(&self, worker_id: &str) -> DynamoStore {
        DynamoStore {
            worker_id: Arc::from(worker_id),
            held: Arc::default(),
            ..self.clone()
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn lease_table(&self) -> &str {
        &self.lease_table
    }

    pub fn job_table(&self) -> &str {
        &self.job_table
    }

    async fn ensure_table(
        &self,
        role: &str,
        table: &str,
        hash_key: &str,
        ttl_attribute: Option<&str>,
        config: &DynamoConfig,
    ) -> Result<(), StoreError> {
        let described = self.client.describe_table().table_name(table).send().await;
        let description = match described {
            Ok(out) => out.table,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                if !config.create_tables {
                    return Err(anyhow!(
                        "DynamoDB {role} table {table} does not exist; create it with hash key `{hash_key}` \
                         (type S) and no sort key, or let bulkwatch create its tables"
                    )
                    .into());
                }
                self.create_table(role, table, hash_key, ttl_attribute)
                    .await?;
                None
            }
            Err(e) => {
                return Err(backend(
                    format!("DynamoDB DescribeTable of {role} table {table}"),
                    e,
                ));
            }
        };
        let description = match description {
            Some(d) if d.table_status() == Some(&TableStatus::Active) => d,
            _ => {
                self.wait_active(role, table, config.table_ready_timeout)
                    .await?
            }
        };
        check_key_schema(role, table, hash_key, &description)
    }

    async fn create_table(
        &self,
        role: &str,
        table: &str,
        hash_key: &str,
        ttl_attribute: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = KeySchemaElement::builder()
            .attribute_name(hash_key)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| backend("key schema".into(), e))?;
        let attribute = AttributeDefinition::builder()
            .attribute_name(hash_key)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| backend("attribute definition".into(), e))?;
        let created = self
            .client
            .create_table()
            .table_name(table)
            .key_schema(key)
            .attribute_definitions(attribute)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!(message = "Created DynamoDB table.", role, table),
            // Another worker of the fleet created it first: fine.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => {
                return Err(backend(
                    format!("DynamoDB CreateTable of {role} table {table}"),
                    e,
                ));
            }
        }
        if let Some(attribute) = ttl_attribute {
            // TTL can only be enabled once the table is ACTIVE.
            self.wait_active(role, table, Duration::from_secs(120))
                .await?;
            let spec = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(attribute)
                .build()
                .map_err(|e| backend("TTL specification".into(), e))?;
            // Not fatal: without TTL, expired states are still ignored on
            // read; they merely stay in the table.
            if let Err(e) = self
                .client
                .update_time_to_live()
                .table_name(table)
                .time_to_live_specification(spec)
                .send()
                .await
            {
                tracing::warn!(
                    message = "Could not enable TTL on the job table; expired states will stay in it.",
                    table,
                    error = %DisplayErrorContext(e)
                );
            }
        }
        Ok(())
    }

    /// Warns when the job table's TTL is not on `expires_at`: nothing
    /// breaks (expired states are ignored on read), but the table grows.
    async fn check_ttl(&self, table: &str) {
        let described = self
            .client
            .describe_time_to_live()
            .table_name(table)
            .send()
            .await;
        let enabled = described
            .as_ref()
            .ok()
            .and_then(|d| d.time_to_live_description())
            .is_some_and(|d| {
                d.attribute_name() == Some(JOB_EXPIRES_AT)
                    && matches!(
                        d.time_to_live_status(),
                        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                    )
            });
        if !enabled {
            tracing::warn!(
                message = "TTL is not enabled on the job table's `expires_at` attribute; expired job states will \
                           be ignored but not deleted.",
                table
            );
        }
    }

    async fn wait_active(
        &self,
        role: &str,
        table: &str,
        limit: Duration,
    ) -> Result<TableDescription, StoreError> {
        let started = std::time::Instant::now();
        loop {
            let out = self
                .client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| {
                    backend(format!("DynamoDB DescribeTable of {role} table {table}"), e)
                })?;
            if let Some(d) = out.table {
                match d.table_status() {
                    Some(TableStatus::Active | TableStatus::Updating) => return Ok(d),
                    Some(TableStatus::Deleting) => {
                        return Err(
                            anyhow!("DynamoDB {role} table {table} is being deleted").into()
                        );
                    }
                    _ => {}
                }
            }
            if started.elapsed() > limit {
                return Err(anyhow!(
                    "DynamoDB {role} table {table} did not become ACTIVE within {limit:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn lease_key(shard_id: &str) -> (String, AttributeValue) {
        (LEASE_KEY.to_owned(), s(shard_id))
    }

    /// A conditional UpdateItem on a lease this handle holds: `update` is
    /// applied only if the lease's counter is still the one this handle
    /// wrote last and its owner is this worker; the counter is bumped in the
    /// same write. `LeaseLost` (and the lease marked lost) otherwise.
    async fn update_held(
        &self,
        shard_id: &str,
        set: &str,
        remove: &[&str],
        values: Vec<(&str, AttributeValue)>,
        release: bool,
    ) -> Result<(), StoreError> {
        let _gate = self.held.gate(shard_id).await;
        let holding = self.held.get(shard_id);
        if release {
            // Forget it whatever happens: a released lease is not ours.
            self.held.set(shard_id, Holding::Lost);
        }
        let Some(Holding::Held(counter)) = holding else {
            return Err(lease_lost(shard_id));
        };
        let mut expression = format!(
            "SET #counter = :next{}{set}",
            if set.is_empty() { "" } else { ", " }
        );
        if !remove.is_empty() {
            expression.push_str(" REMOVE ");
            expression.push_str(&remove.join(", "));
        }
        let mut request = self
            .client
            .update_item()
            .table_name(&*self.lease_table)
            .key(LEASE_KEY, s(shard_id))
            .update_expression(expression)
            .condition_expression("#counter = :counter AND #owner = :me")
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_values(":counter", n(counter))
            .expression_attribute_values(":next", n(counter + 1))
            .expression_attribute_values(":me", s(&*self.worker_id));
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        for (placeholder, attribute) in LEASE_NAMES {
            if remove.contains(placeholder) || set.contains(placeholder) {
                request = request.expression_attribute_names(*placeholder, *attribute);
            }
        }
        match request.send().await {
            Ok(_) => {
                if !release {
                    self.held.set(shard_id, Holding::Held(counter + 1));
                }
                Ok(())
            }
            Err(e) if is_condition_failed(&e) => {
                self.held.set(shard_id, Holding::Lost);
                Err(lease_lost(shard_id))
            }
            // Unknown outcome (e.g. a timeout): the write may or may not
            // have happened, so the counter is unknown too. Keep the old
            // one: if the write happened, the next write fails as lost,
            // which is safe; the lease is then taken again.
            Err(e) => Err(backend(
                format!(
                    "DynamoDB UpdateItem of lease {shard_id} in {}",
                    self.lease_table
                ),
                e,
            )),
        }
    }

    async fn scan_all(
        &self,
        table: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend(format!("DynamoDB Scan of {table}"), e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}

/// Placeholders for the lease attributes an update may name.
const LEASE_NAMES: &[(&str, &str)] = &[
    ("#checkpoint", CHECKPOINT),
    ("#sub", CHECKPOINT_SUB),
    ("#switches", OWNER_SWITCHES),
    ("#pending", "pendingCheckpoint"),
    ("#pendingSub", "pendingCheckpointSubSequenceNumber"),
    ("#pendingState", "pendingCheckpointState"),
];

fn check_key_schema(
    role: &str,
    table: &str,
    hash_key: &str,
    d: &TableDescription,
) -> Result<(), StoreError> {
    let keys: Vec<String> = d
        .key_schema()
        .iter()
        .map(|k| format!("{} ({})", k.attribute_name(), k.key_type().as_str()))
        .collect();
    let hash_ok = d.key_schema().len() == 1
        && d.key_schema()[0].attribute_name() == hash_key
        && d.key_schema()[0].key_type() == &KeyType::Hash;
    if !hash_ok {
        return Err(anyhow!(
            "DynamoDB {role} table {table} has key schema [{}]; bulkwatch needs exactly one hash key `{hash_key}` \
             of type S and no sort key{}",
            keys.join(", "),
            if role == "lease" { " (the KCL 2.x lease table layout)" } else { "" }
        )
        .into());
    }
    let key_type = d
        .attribute_definitions()
        .iter()
        .find(|a| a.attribute_name() == hash_key)
        .map(|a| a.attribute_type().clone());
    if key_type != Some(ScalarAttributeType::S) {
        return Err(anyhow!(
            "DynamoDB {role} table {table}: hash key `{hash_key}` has type {}, bulkwatch needs S (string)",
            key_type.map_or("unknown".to_owned(), |t| t.as_str().to_owned())
        )
        .into());
    }
    Ok(())
}

fn lease_lost(shard_id: &str) -> StoreError {
    StoreError::LeaseLost {
        shard_id: shard_id.to_owned(),
    }
}

fn bad_item(table: &str, what: String) -> StoreError {
    StoreError::Backend(anyhow!("DynamoDB table {table}: {what}"))
}

fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(
    table: &str,
    item: &HashMap<String, AttributeValue>,
    name: &str,
) -> Result<Option<u64>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| {
            bad_item(
                table,
                format!("attribute {name} = {v} is not a non-negative integer"),
            )
        }),
        Some(other) => Err(bad_item(
            table,
            format!("attribute {name} is {other:?}, expected a number"),
        )),
    }
}

/// A string set, as KCL writes `parentShardId` and `childShardIds`; a plain
/// string or a list of strings is accepted too.
fn get_ss(item: &HashMap<String, AttributeValue>, name: &str) -> Vec<String> {
    let mut ids = match item.get(name) {
        Some(AttributeValue::Ss(ids)) => ids.clone(),
        Some(AttributeValue::S(id)) => vec![id.clone()],
        Some(AttributeValue::L(list)) => {
            list.iter().filter_map(|v| v.as_s().ok().cloned()).collect()
        }
        _ => Vec::new(),
    };
    ids.sort();
    ids.dedup();
    ids
}

fn lease_from_item(
    table: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<Lease, StoreError> {
    let shard_id = get_s(item, LEASE_KEY)
        .ok_or_else(|| bad_item(table, format!("an item has no string {LEASE_KEY}")))?;
    let sub = get_n(table, item, CHECKPOINT_SUB)?.unwrap_or(0);
    // KCL always writes a checkpoint; an item without one has not started.
    let checkpoint = get_s(item, CHECKPOINT).map_or(LeaseCheckpoint::TrimHorizon, |c| {
        LeaseCheckpoint::from_kcl(c, sub)
    });
    let hash_key_range = match (get_s(item, STARTING_HASH_KEY), get_s(item, ENDING_HASH_KEY)) {
        (Some(start), Some(end)) => Some(HashKeyRange {
            starting_hash_key: start.to_owned(),
            ending_hash_key: end.to_owned(),
        }),
        _ => None,
    };
    Ok(Lease {
        shard_id: shard_id.to_owned(),
        owner: get_s(item, LEASE_OWNER).map(str::to_owned),
        counter: get_n(table, item, LEASE_COUNTER)?.unwrap_or(0),
        checkpoint,
        owner_switches_since_checkpoint: get_n(table, item, OWNER_SWITCHES)?.unwrap_or(0),
        parent_shard_ids: get_ss(item, PARENT_SHARD_ID),
        child_shard_ids: get_ss(item, CHILD_SHARD_IDS),
        hash_key_range,
    })
}

/// KCL 3.5's "single table format" keeps worker-metrics and coordinator
/// items in the lease table, marked with an `entityType` attribute. They
/// are not leases; skip them rather than mistake them for unstarted shards.
fn is_lease_item(item: &HashMap<String, AttributeValue>) -> bool {
    get_s(item, "entityType").is_none_or(|t| t.eq_ignore_ascii_case("lease"))
}

fn sorted_set(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    ids
}

#[async_trait]
impl LeaseStore for DynamoStore {
    fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn held_leases(&self) -> Vec<(String, u64)> {
        self.held.held()
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, StoreError> {
        let items = self.scan_all(&self.lease_table).await?;
        let mut leases = items
            .iter()
            .filter(|item| is_lease_item(item))
            .map(|item| lease_from_item(&self.lease_table, item))
            .collect::<Result<Vec<_>, _>>()?;
        leases.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(leases)
    }

    async fn get_lease(&self, shard_id: &str) -> Result<Option<Lease>, StoreError> {
        let (k, v) = Self::lease_key(shard_id);
        let out = self
            .client
            .get_item()
            .table_name(&*self.lease_table)
            .key(k, v)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                backend(
                    format!(
                        "DynamoDB GetItem of lease {shard_id} in {}",
                        self.lease_table
                    ),
                    e,
                )
            })?;
        out.item
            .map(|item| lease_from_item(&self.lease_table, &item))
            .transpose()
    }

    async fn create_lease_if_absent(&self, lease: &NewLease) -> Result<bool, StoreError> {
        // The item KCL's createLeaseIfNotExists writes: unowned, counter 0.
        let mut request = self
            .client
            .put_item()
            .table_name(&*self.lease_table)
            .item(LEASE_KEY, s(&lease.shard_id))
            .item(LEASE_COUNTER, n(0))
            .item(OWNER_SWITCHES, n(0))
            .item(CHECKPOINT, s(lease.checkpoint.kcl_checkpoint()))
            .item(
                CHECKPOINT_SUB,
                n(lease.checkpoint.kcl_sub_sequence_number()),
            )
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", LEASE_KEY);
        // DynamoDB refuses empty sets: leave the attribute out, as KCL does.
        let parents = sorted_set(&lease.parent_shard_ids);
        if !parents.is_empty() {
            request = request.item(PARENT_SHARD_ID, AttributeValue::Ss(parents));
        }
        if let Some(range) = &lease.hash_key_range {
            request = request
                .item(STARTING_HASH_KEY, s(&range.starting_hash_key))
                .item(ENDING_HASH_KEY, s(&range.ending_hash_key));
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(backend(
                format!(
                    "DynamoDB PutItem of lease {} in {}",
                    lease.shard_id, self.lease_table
                ),
                e,
            )),
        }
    }

    async fn take_lease(&self, observed: &Lease) -> Result<Lease, StoreError> {
        let shard_id = observed.shard_id.as_str();
        let _gate = self.held.gate(shard_id).await;
        let owner_changes = observed
            .owner
            .as_deref()
            .is_some_and(|o| o != &*self.worker_id);
        // KCL's takeLease: conditional on the counter alone, which moves on
        // every write, so an unchanged counter means an unchanged owner.
        // (The condition also fails if the item is gone.)
        let expression = if owner_changes {
            "SET #owner = :me, #counter = :next ADD #switches :one"
        } else {
            "SET #owner = :me, #counter = :next"
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&*self.lease_table)
            .key(LEASE_KEY, s(shard_id))
            .update_expression(expression)
            .condition_expression("#counter = :counter")
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_values(":me", s(&*self.worker_id))
            .expression_attribute_values(":counter", n(observed.counter))
            .expression_attribute_values(":next", n(observed.counter + 1))
            .return_values(ReturnValue::AllNew);
        if owner_changes {
            request = request
                .expression_attribute_names("#switches", OWNER_SWITCHES)
                .expression_attribute_values(":one", n(1));
        }
        match request.send().await {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                let lease = lease_from_item(&self.lease_table, &item)?;
                self.held.set(shard_id, Holding::Held(lease.counter));
                Ok(lease)
            }
            Err(e) if is_condition_failed(&e) => Err(StoreError::Conflict {
                key: shard_id.to_owned(),
            }),
            Err(e) => Err(backend(
                format!(
                    "DynamoDB UpdateItem (take) of lease {shard_id} in {}",
                    self.lease_table
                ),
                e,
            )),
        }
    }

    async fn renew_lease(&self, shard_id: &str) -> Result<(), StoreError> {
        self.update_held(shard_id, "", &[], Vec::new(), false).await
    }

    async fn release_lease(&self, shard_id: &str) -> Result<(), StoreError> {
        // The counter still moves, so takers see the change at once.
        self.update_held(shard_id, "", &["#owner"], Vec::new(), true)
            .await
    }

    async fn set_child_shard_ids(
        &self,
        shard_id: &str,
        child_shard_ids: &[String],
    ) -> Result<(), StoreError> {
        let children = sorted_set(child_shard_ids);
        let mut request = self
            .client
            .update_item()
            .table_name(&*self.lease_table)
            .key(LEASE_KEY, s(shard_id))
            .condition_expression("attribute_exists(#key)")
            .expression_attribute_names("#key", LEASE_KEY)
            .expression_attribute_names("#children", CHILD_SHARD_IDS);
        request = if children.is_empty() {
            request.update_expression("REMOVE #children")
        } else {
            request
                .update_expression("SET #children = :children")
                .expression_attribute_values(":children", AttributeValue::Ss(children))
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::Conflict {
                key: shard_id.to_owned(),
            }),
            Err(e) => Err(backend(
                format!(
                    "DynamoDB UpdateItem of lease {shard_id} in {}",
                    self.lease_table
                ),
                e,
            )),
        }
    }

    async fn delete_lease(&self, shard_id: &str) -> Result<(), StoreError> {
        let _gate = self.held.gate(shard_id).await;
        self.client
            .delete_item()
            .table_name(&*self.lease_table)
            .key(LEASE_KEY, s(shard_id))
            .send()
            .await
            .map_err(|e| {
                backend(
                    format!(
                        "DynamoDB DeleteItem of lease {shard_id} in {}",
                        self.lease_table
                    ),
                    e,
                )
            })?;
        self.held.forget(shard_id);
        Ok(())
    }
}

#[async_trait]
impl CheckpointStore for DynamoStore {
    async fn checkpoint(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self
            .get_lease(shard_id)
            .await?
            .and_then(|l| l.checkpoint.to_checkpoint()))
    }

    async fn set_checkpoint(
        &self,
        shard_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError> {
        let checkpoint = LeaseCheckpoint::from(checkpoint);
        // As KCL's checkpoint: the position, sub-sequence 0, the switch
        // count reset, and any two-phase "pending" checkpoint dropped.
        self.update_held(
            shard_id,
            "#checkpoint = :cp, #sub = :zero, #switches = :zero",
            &["#pending", "#pendingSub", "#pendingState"],
            vec![(":cp", s(checkpoint.kcl_checkpoint())), (":zero", n(0))],
            false,
        )
        .await
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, Checkpoint)>, StoreError> {
        Ok(self
            .list_leases()
            .await?
            .into_iter()
            .filter_map(|l| l.checkpoint.to_checkpoint().map(|c| (l.shard_id, c)))
            .collect())
    }

    async fn delete_checkpoint(&self, shard_id: &str) -> Result<(), StoreError> {
        self.delete_lease(shard_id).await
    }
}

/// What a job item says, if it is live.
fn job_from_item(
    table: &str,
    item: &HashMap<String, AttributeValue>,
    now: i64,
) -> Result<Option<Versioned<JobState>>, StoreError> {
    let sid = get_s(item, JOB_SID).unwrap_or("?");
    if let Some(at) = get_n(table, item, JOB_EXPIRES_AT)? {
        if i64::try_from(at).unwrap_or(i64::MAX) <= now {
            return Ok(None);
        }
    }
    let json = get_s(item, JOB_STATE)
        .ok_or_else(|| bad_item(table, format!("job {sid} has no string `state`")))?;
    let state = serde_json::from_str(json)
        .map_err(|e| bad_item(table, format!("cannot decode the state of job {sid}: {e}")))?;
    let version = get_n(table, item, JOB_VERSION)?
        .ok_or_else(|| bad_item(table, format!("job {sid} has no `version`")))?;
    Ok(Some(Versioned {
        value: state,
        version,
    }))
}

/// The job's status, for the `status` attribute, if its JSON has one.
fn status_of(state_json: &serde_json::Value) -> Option<&str> {
    state_json.get("status").and_then(serde_json::Value::as_str)
}

fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl DynamoStore {
    /// One job's conditional write. `Ok(false)` when the condition failed.
    async fn save_job(&self, update: JobUpdate, now: i64) -> Result<bool, StoreError> {
        let sid = update.state.job_sid.clone();
        let json = serde_json::to_value(&update.state).map_err(|e| {
            StoreError::Backend(anyhow!("cannot encode the state of job {sid}: {e}"))
        })?;
        let mut request = self
            .client
            .put_item()
            .table_name(&*self.job_table)
            .item(JOB_SID, s(&sid))
            .item(JOB_STATE, s(json.to_string()))
            .item(JOB_VERSION, n(update.expected_version.map_or(1, |v| v + 1)))
            .expression_attribute_names("#exp", JOB_EXPIRES_AT)
            .expression_attribute_values(":now", n(now));
        if let Some(status) = status_of(&json) {
            request = request.item(JOB_STATUS, s(status));
        }
        if let Some(at) = update.state.expires_at() {
            request = request.item(JOB_EXPIRES_AT, n(at.unix_timestamp()));
        }
        // An expired state (DynamoDB's TTL deletes lazily, up to days
        // late) counts as absent, as it does on read.
        request = match update.expected_version {
            None => request
                .condition_expression("attribute_not_exists(#sid) OR #exp <= :now")
                .expression_attribute_names("#sid", JOB_SID),
            Some(version) => request
                .condition_expression("#ver = :ver AND (attribute_not_exists(#exp) OR #exp > :now)")
                .expression_attribute_names("#ver", JOB_VERSION)
                .expression_attribute_values(":ver", n(version)),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(backend(
                format!("DynamoDB PutItem of job {sid} in {}", self.job_table),
                e,
            )),
        }
    }
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn load_jobs(
        &self,
        job_sids: &[&str],
    ) -> Result<HashMap<String, Versioned<JobState>>, StoreError> {
        let now = unix_now();
        // BatchGetItem rejects a request that names a key twice.
        let mut sids: Vec<&str> = job_sids.to_vec();
        sids.sort_unstable();
        sids.dedup();
        let mut found = HashMap::with_capacity(sids.len());
        for chunk in sids.chunks(BATCH_GET_MAX) {
            let keys = chunk
                .iter()
                .map(|sid| HashMap::from([(JOB_SID.to_owned(), s(*sid))]))
                .collect();
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| backend("BatchGetItem keys".into(), e))?,
            );
            let mut attempt = 0u32;
            while let Some(request) = pending.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&*self.job_table, request)
                    .send()
                    .await
                    .map_err(|e| {
                        backend(format!("DynamoDB BatchGetItem on {}", self.job_table), e)
                    })?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&*self.job_table)
                    .unwrap_or_default()
                {
                    if let Some(v) = job_from_item(&self.job_table, &item, now)? {
                        found.insert(get_s(&item, JOB_SID).unwrap_or_default().to_owned(), v);
                    }
                }
                // Keys DynamoDB did not get to (throttling, 16 MB limit)
                // come back to be asked again, with a little backoff.
                pending = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&*self.job_table));
                if pending.as_ref().is_some_and(|p| !p.keys().is_empty()) {
                    attempt += 1;
                    if attempt > 8 {
                        return Err(anyhow!(
                            "DynamoDB kept {} job keys unprocessed",
                            self.job_table
                        )
                        .into());
                    }
                    tokio::time::sleep(Duration::from_millis(25 << attempt.min(6))).await;
                } else {
                    pending = None;
                }
            }
        }
        Ok(found)
    }

    async fn save_jobs(&self, updates: &[JobUpdate]) -> Result<Vec<String>, StoreError> {
        let now = unix_now();
        let mut conflicted = Vec::new();
        // Each job is its own conditional write (a transaction would fail
        // every job for one conflict, and is limited to 100 items). Writes
        // of one job must keep their order, so a batch naming a job twice
        // runs in rounds, one write of each job per round.
        let mut rounds: Vec<Vec<(usize, JobUpdate)>> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (index, update) in updates.iter().enumerate() {
            let round = seen.entry(update.state.job_sid.as_str()).or_insert(0);
            if rounds.len() <= *round {
                rounds.push(Vec::new());
            }
            rounds[*round].push((index, update.clone()));
            *round += 1;
        }
        let mut failed: Vec<usize> = Vec::new();
        for round in rounds {
            for chunk in round.chunks(SAVE_CONCURRENCY) {
                let mut tasks = tokio::task::JoinSet::new();
                for (index, update) in chunk.iter().cloned() {
                    let store = self.clone();
                    tasks.spawn(async move { (index, store.save_job(update, now).await) });
                }
                while let Some(joined) = tasks.join_next().await {
                    let (index, written) = joined
                        .map_err(|e| StoreError::Backend(anyhow!("job write task failed: {e}")))?;
                    if !written? {
                        failed.push(index);
                    }
                }
            }
        }
        failed.sort_unstable();
        conflicted.extend(failed.into_iter().map(|i| updates[i].state.job_sid.clone()));
        Ok(conflicted)
    }

    async fn list_jobs(&self) -> Result<Vec<JobState>, StoreError> {
        let now = unix_now();
        let mut jobs = Vec::new();
        for item in self.scan_all(&self.job_table).await? {
            if let Some(v) = job_from_item(&self.job_table, &item, now)? {
                jobs.push(v.value);
            }
        }
        Ok(jobs)
    }
}
