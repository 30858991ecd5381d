//! Runtime of `retryable-topic`: non-blocking Kafka retries through retry topics and
//! dead-letter topics (DLT), on [`rdkafka`] and [`tokio`].
//!
//! The pure rules (durations, backoff, topic names, the retry-header codec and the retry
//! decisions) are always compiled; the broker-facing runtime is behind the default
//! `runtime` feature, so the proc-macro can share the rules without linking librdkafka.
#![deny(missing_docs)]

pub mod backoff;
pub mod decision;
pub mod duration;
pub mod error;
pub mod headers;
pub mod policy;
pub mod topics;

pub use backoff::Backoff;
pub use error::{ConfigError, Error, Result};
pub use policy::{DltStrategy, RetryPolicy, RetryPolicyBuilder, TopicSpec, TopicStrategy};
pub use topics::GroupNaming;
