//! The DynamoDB lease table, as the tests see it: raw items read with
//! Scan, so what is checked is what is in the table (the KCL 2.x
//! attributes), not what bulkwatch's own store code makes of it.
//!
//! Each test uses its own randomly named table; [`LeaseTable`] deletes it
//! (and bulkwatch's `<table>-jobs`) when dropped.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};

use super::localstack::AwsEnv;

/// One lease item, the attributes the tests look at.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseItem {
    pub shard_id: String,
    pub owner: Option<String>,
    pub counter: u64,
    pub checkpoint: Option<String>,
    pub parents: Vec<String>,
    /// Every attribute as stored, for messages and type checks.
    pub raw: HashMap<String, AttributeValue>,
}

pub struct LeaseTable {
    pub name: String,
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl LeaseTable {
    /// A handle on `bw-fleet-<tag>-<random>`; the table itself is created
    /// by the first worker (or by [`LeaseTable::create_kcl_table`]).
    /// Fails, saying how to start it, when moto's DynamoDB does not answer.
    pub fn new(env: &AwsEnv, tag: &str) -> LeaseTable {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the test's DynamoDB client");
        let timeouts = aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_timeout(Duration::from_secs(20))
            .build();
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(env.region.clone()))
            .credentials_provider(Credentials::new(
                &env.access_key_id,
                &env.secret_access_key,
                None,
                None,
                "bulkwatch-fleet",
            ))
            .endpoint_url(&env.endpoint_dynamodb)
            .timeout_config(timeouts)
            .build();
        let client = Client::from_conf(config);
        if let Err(e) = rt.block_on(client.list_tables().limit(1).send()) {
            panic!(
                "\n\nDynamoDB (moto) at {} is needed by this test and does not answer: {}\n\
                 Start it from the repository root with:\n\n    eval \"$(localstack/up)\"\n\n\
                 (Endpoint from AWS_ENDPOINT_URL_DYNAMODB, default http://127.0.0.1:4567.)\n",
                env.endpoint_dynamodb,
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            );
        }
        let name = format!("bw-fleet-{tag}-{}", super::random_suffix());
        LeaseTable { name, client, rt }
    }

    /// Creates the table the way the Java KCL 2.x does: hash key
    /// `leaseKey` (S), no sort key, on-demand billing.
    pub fn create_kcl_table(&self) {
        let key = KeySchemaElement::builder()
            .attribute_name("leaseKey")
            .key_type(KeyType::Hash)
            .build()
            .expect("a key schema");
        let attr = AttributeDefinition::builder()
            .attribute_name("leaseKey")
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("an attribute definition");
        self.rt
            .block_on(
                self.client
                    .create_table()
                    .table_name(&self.name)
                    .key_schema(key)
                    .attribute_definitions(attr)
                    .billing_mode(BillingMode::PayPerRequest)
                    .send(),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "CreateTable {}: {}",
                    self.name,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            });
    }

    /// PutItem of one raw item.
    pub fn put(&self, item: HashMap<String, AttributeValue>) {
        self.rt
            .block_on(
                self.client
                    .put_item()
                    .table_name(&self.name)
                    .set_item(Some(item))
                    .send(),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "PutItem into {}: {}",
                    self.name,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            });
    }

    /// Every lease item by shard id; empty while the table does not exist
    /// yet (the workers create it).
    pub fn leases(&self) -> BTreeMap<String, LeaseItem> {
        let mut out = BTreeMap::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let res = self.rt.block_on(
                self.client
                    .scan()
                    .table_name(&self.name)
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send(),
            );
            let page = match res {
                Ok(p) => p,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    return out;
                }
                Err(e) => panic!(
                    "Scan of {}: {}",
                    self.name,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                ),
            };
            for item in page.items() {
                let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
                let Some(shard_id) = s("leaseKey") else {
                    continue;
                };
                let parents = match item.get("parentShardId") {
                    Some(AttributeValue::Ss(v)) => v.clone(),
                    Some(AttributeValue::S(v)) => vec![v.clone()],
                    _ => Vec::new(),
                };
                out.insert(
                    shard_id.clone(),
                    LeaseItem {
                        shard_id,
                        owner: s("leaseOwner"),
                        counter: item
                            .get("leaseCounter")
                            .and_then(|v| v.as_n().ok())
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0),
                        checkpoint: s("checkpoint"),
                        parents,
                        raw: item.clone(),
                    },
                );
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return out,
            }
        }
    }

    /// Owner → how many of the given leases it holds (unowned ones under
    /// `None`).
    pub fn load(leases: &BTreeMap<String, LeaseItem>) -> BTreeMap<Option<String>, usize> {
        let mut load = BTreeMap::new();
        for l in leases.values() {
            *load.entry(l.owner.clone()).or_default() += 1;
        }
        load
    }
}

impl Drop for LeaseTable {
    fn drop(&mut self) {
        for t in [self.name.clone(), format!("{}-jobs", self.name)] {
            let _ = self
                .rt
                .block_on(self.client.delete_table().table_name(t).send());
        }
    }
}
