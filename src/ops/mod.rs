//! Operational plumbing: shutdown, logging, metrics, and the health and
//! metrics endpoint.

pub mod health;
pub mod logging;
pub mod metrics;
pub mod shutdown;
