//! Operational plumbing: shutdown, logging.
