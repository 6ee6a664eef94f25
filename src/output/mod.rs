//! The output stage: delivers transitions and dead letters.
