//! bulkwatch turns Twilio Lookup bulk-job events read from a Kinesis stream
//! into job status transitions and delivers each one, at least once, to the
//! outputs a user configured.
//!
//! # Layout
//!
//! The modules follow the flow of a record, left to right:
//!
//! ```text
//! source ──records──▶ decode ──events──▶ track ──transitions──▶ output
//!   ▲                                                              │
//!   └──────────── checkpoint (store), after every output acked ◀───┘
//! ```
//!
//! - [`source`]: finds the shards of a stream, reads each one with
//!   GetRecords, follows resharding and hands batches of raw records on.
//! - [`decode`]: bytes → CloudEvent envelope → typed bulk-job event. Never
//!   fails the worker: every record is classified.
//! - [`track`]: keeps each job's last known state and decides which events
//!   are transitions. Owns the public transition record.
//! - [`output`]: delivers transitions (and dead letters) to the configured
//!   outputs and acknowledges only once they are durable.
//! - [`store`]: checkpoints, leases and job state behind one interface, with
//!   an embedded default and DynamoDB for fleets.
//! - [`pipeline`]: wires one shard's batches through decode → track →
//!   output → checkpoint; this is where the delivery guarantee is kept.
//! - [`config`], [`cli`], [`ops`]: settings, the command line, and the
//!   operational plumbing (shutdown, logging).
//! - [`aws_error`]: failed AWS calls described with their HTTP status and
//!   classified as transient or permanent.
#![forbid(unsafe_code)]

pub mod aws_error;
pub mod cli;
pub mod config;
pub mod decode;
pub mod ops;
pub mod output;
pub mod pipeline;
pub mod source;
pub mod store;
pub mod track;
