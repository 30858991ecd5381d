//! # retryable-topic
//!
//! Non-blocking retries for Kafka consumers in Rust, with retry topics and dead-letter
//! topics, declared with one attribute macro: what Spring Kafka's `@RetryableTopic` is for
//! Java.
//!
//! ```ignore
//! use retryable_topic::{retryable_topic, HandlerError};
//!
//! #[retryable_topic(topics = ["weather-forecast"], group = "my-listener-group",
//!                   attempts = 900, backoff = "5m", suffix = "-retries",
//!                   dlt = no_dlt, fixed_delay = single_topic)]
//! async fn consume(forecast: WeatherForecast) -> Result<(), HandlerError> { /* … */ Ok(()) }
//!
//! retryable_topic::Runtime::builder().registered().build()?.run().await?;
//! ```
//!
//! This crate re-exports [`retry_core`] (the runtime, usable by hand through its builders)
//! and the macros of `retry-macros`. See the README for the walkthrough.
#![deny(missing_docs)]

pub use retry_core::*;

#[cfg(feature = "cli")]
pub mod cli;
pub use retry_macros::{dlt_handler, retryable_topic};
