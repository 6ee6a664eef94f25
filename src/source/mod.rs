//! The source stage: Kinesis shards → batches of raw records.
//!
//! Types here are shared with later stages because every record keeps its
//! [`Origin`] (stream, shard, sequence number) all the way to the outputs and
//! the dead-letter entry.

use std::sync::Arc;

use time::OffsetDateTime;

/// Where one record came from. Cheap to clone: the stream and shard names
/// are shared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub stream: Arc<str>,
    pub shard_id: Arc<str>,
    pub sequence_number: String,
    /// Kinesis' ApproximateArrivalTimestamp; the last resort for an event's
    /// time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub arrival: Option<OffsetDateTime>,
}

/// One Kinesis record as read, before decoding.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub data: Vec<u8>,
    pub origin: Origin,
    pub partition_key: String,
}

pub mod coordinator;
pub mod kinesis;
pub mod reader;
