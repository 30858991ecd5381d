//! Runtime of `retryable-topic`: non-blocking Kafka retries through retry topics and
//! dead-letter topics (DLT), on [`rdkafka`] and [`tokio`].
//!
//! A failed record is republished to a retry topic with a due time and its source offset
//! committed once the broker acknowledged; the retry topic is consumed without handling any
//! record before it is due; after the last attempt the record goes to the DLT, or not, by
//! the listener's [`DltStrategy`].
//!
//! The layout shows the architecture:
//!
//! * `rules/`: pure rules, no I/O, always compiled ([`duration`], [`backoff`], [`breaker`], [`concurrency`], [`call_time`], [`topics`],
//!   [`topology`], [`headers`], [`policy`], [`decision`], [`journey`], [`ladder`], [`delay_request`]); the proc-macro
//!   shares them without linking librdkafka;
//! * `engine/`: the consumer core, which carries the rules' plans out against the broker
//!   (dispatch, partition state, rebalance, handler execution, pipelined publishing);
//! * beside them, the runtime's public pieces ([`runtime`], [`listener`], [`handler`],
//!   [`record`], [`admin`], [`embedded`], [`metrics`], [`delay_service`]), behind the default `runtime`
//!   feature.
#![deny(missing_docs)]

/// Pure rules: no I/O, decided from their inputs and `now`.
mod rules {
    pub mod backoff;
    pub mod breaker;
    pub mod call_time;
    pub mod concurrency;
    pub mod decision;
    pub mod delay_request;
    pub mod duration;
    pub mod headers;
    pub mod journey;
    pub mod ladder;
    pub mod policy;
    pub mod topics;
    pub mod topology;
}
pub use rules::{
    backoff, breaker, call_time, concurrency, decision, delay_request, duration, headers, journey, ladder, policy, topics, topology,
};

pub mod error;

#[cfg(feature = "runtime")]
pub mod admin;
#[cfg(feature = "runtime")]
pub mod config;
#[cfg(feature = "runtime")]
pub mod delay_service;
#[cfg(feature = "runtime")]
pub mod embedded;
#[cfg(feature = "runtime")]
mod engine;
#[cfg(feature = "runtime")]
pub mod failure;
#[cfg(feature = "runtime")]
pub mod handler;
#[cfg(feature = "runtime")]
pub mod listener;
#[cfg(feature = "runtime")]
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod record;
#[cfg(feature = "runtime")]
pub mod registry;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod time;

pub use backoff::Backoff;
pub use breaker::CircuitBreaker;
pub use error::{ConfigError, Error, Result};
pub use headers::HeaderFormat;
pub use policy::{DltStrategy, RetryPolicy, RetryPolicyBuilder, TopicSpec, TopicStrategy};
pub use topics::GroupNaming;

#[cfg(feature = "runtime")]
pub use {
    config::KafkaConfig,
    embedded::EmbeddedKafka,
    handler::{Handler, HandlerError},
    listener::{Listener, ListenerBuilder},
    metrics::MetricsSnapshot,
    record::Record,
    runtime::{RunningRuntime, Runtime, RuntimeBuilder},
};

/// What `#[retryable_topic]` expands to; not a public API.
#[cfg(feature = "runtime")]
#[doc(hidden)]
pub mod __private {
    pub use crate::backoff::Backoff;
    pub use crate::breaker::CircuitBreaker;
    pub use crate::duration::parse_duration;
    pub use crate::handler::{json, record, HandlerError};
    pub use crate::listener::Listener;
    pub use crate::policy::{DltStrategy, RetryPolicy, TopicSpec, TopicStrategy};
    pub use crate::registry::Registration;
    pub use crate::topics::GroupNaming;
    pub use crate::Result;
    pub use inventory;
    pub use serde::de::DeserializeOwned;
    pub use std::time::Duration;
}
