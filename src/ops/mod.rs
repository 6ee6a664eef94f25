//! Operational plumbing: shutdown and logging.

pub mod logging;
pub mod shutdown;
