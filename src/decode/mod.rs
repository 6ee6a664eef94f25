//! The decode stage: bytes → CloudEvent envelope → typed bulk-job event.
//!
//! Architecture invariant: decoding never fails the worker. Every record is
//! sorted into exactly one [`Decoded`] class, and a bad record carries a
//! reason that names its problem.
