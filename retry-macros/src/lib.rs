//! The `#[retryable_topic]` and `#[dlt_handler]` attribute macros of `retryable-topic`.
//!
//! The macros are thin: they parse and check their arguments at compile time and emit calls
//! to retry-core's public builders, so everything they do can be written by hand
//! (see `retry_core::Listener` and `retry_core::RetryPolicy`).
#![deny(missing_docs)]

use proc_macro::TokenStream;

mod attr;
mod check;
mod ctxt;
mod expand;
mod signature;
mod symbol;

/// Declares a Kafka listener with non-blocking retries on an `async fn` handler.
///
/// ```ignore
/// #[retryable_topic(topics = ["weather-forecast"], group = "my-listener-group",
///                   attempts = 900, backoff = "5m", suffix = "-retries",
///                   dlt = no_dlt, fixed_delay = single_topic)]
/// async fn consume(forecast: WeatherForecast) -> Result<(), Error> { /* … */ }
/// ```
///
/// The handler stays an ordinary function (call it in unit tests). It takes one argument:
/// any `serde::Deserialize` type, read from the payload as JSON (a payload that does not
/// read goes straight to the DLT), or a `Record` for the key, headers, coordinates and raw
/// payload. It returns `Result<(), E>` with `E: Into<HandlerError>`: every
/// `std::error::Error` is retryable; return `HandlerError::fatal(..)` for a failure no
/// retry can heal. Its future must be `Send + 'static`.
///
/// # Arguments
///
/// | argument | value | default | meaning |
/// |---|---|---|---|
/// | `topics` | `["a", "b"]` | **required** | source topics |
/// | `group` | `"my-group"` | **required** | consumer group; also part of the retry/DLT topic names |
/// | `attempts` | integer ≥ 1 | `3` | total attempts, the first one included |
/// | `backoff` | duration | `"1s"` | delay before the first retry (`"500ms"`, `"5m"`, `"PT5M"`) |
/// | `multiplier` | float ≥ 1.0 | none (fixed) | exponential backoff: each delay × multiplier |
/// | `linear_step` | duration | none (fixed) | linear backoff: each delay + step |
/// | `max_delay` | duration | `"30s"` (or `backoff` if longer) | cap of a growing backoff |
/// | `jitter` | 0.0 ..= 1.0 | `0.0` | spread each delay by ± this fraction |
/// | `suffix` | string | `"-retries"` | retry-topic suffix |
/// | `dlt_suffix` | string | `"-dlt"` | dead-letter-topic suffix |
/// | `dlt` | `always_retry_on_error` \| `fail_on_error` \| `no_dlt` | `always_retry_on_error` | what happens after the last attempt, and if the DLT publish fails |
/// | `fixed_delay` | `single_topic` \| `multiple_topics` \| `ladder` | `single_topic` | one retry topic for all attempts, one per delay level, or one per delay tier (any delay, few topics) |
/// | `max_retry_topics` | integer ≥ 1 | `8` | bound of `multiple_topics` |
/// | `tiers` | list of durations, growing | `["1s", "5s", "17s", "59s", "4m", "17m", "1h"]` | the tiers of `ladder` |
/// | `group_naming` | `per_group` \| `shared` | `per_group` | whether retry/DLT names carry the group |
/// | `timeout` | duration | none | give up (DLT) once the next attempt would be due this long after the first failure |
/// | `blocking_attempts` | integer | `0` | in-memory retries before the first republish |
/// | `blocking_delay` | duration | `"100ms"` | pause between in-memory retries |
/// | `auto_create_topics` | bool | `false` | create *missing* retry/DLT topics at startup (never alters existing ones) |
/// | `partitions` | integer ≥ 1 | the source's | partitions of created topics |
/// | `replication` | integer ≥ 1 | the broker's default | replication of created topics |
/// | `circuit_breaker` | `true`, or settings: `circuit_breaker(window = "10s", min_calls = 20, failure_rate = 0.5, min_keys = 5, probe_delay = "1s", max_probe_delay = "60s")` | off | tell an outage from an outlier: pause instead of republishing when most calls fail across many keys (`CircuitBreaker`) |
/// | `key_concurrency` | an integer from 1 to 1024 | 1 | up to that many records of a partition in the handler at once, never two of one key; each key in offset order (`ListenerBuilder::key_concurrency`) |
/// | `handler_timeout` | duration, 1ms to 1 day | none | give up a call that has not returned by then: a retryable failed attempt (`ListenerBuilder::handler_timeout`) |
/// | `stalled_after` | duration, at least 1ms | `"60s"` | report a call still running by then: a warning naming the record, again once a minute, one count in `stalled_calls` (`ListenerBuilder::stalled_after`) |
/// | `name` | string | the handler's path | listener name in logs and metrics |
/// | `crate` | string path | `"::retryable_topic"` | where the facade crate is, if renamed |
///
/// Topic names: `weather-forecast` + group `my-listener-group` gives the retry topic
/// `weather-forecast-retries-my-listener-group` (with `multiple_topics`: `…-0`, `…-1`, …)
/// and the DLT `weather-forecast-dlt-my-listener-group`. Every value is checked at compile
/// time, each error pointing at its token, all errors at once.
///
/// # Registration
///
/// Beside the function the macro puts a struct of the same name (in the type namespace,
/// so the function stays callable) with `fn listener() -> Result<Listener>`, and submits
/// it to an `inventory` registry, which the linker gathers across the whole program:
///
/// ```ignore
/// Runtime::builder().registered().build()?.run().await?;          // every annotated handler
/// Runtime::builder().listener(consume::listener()?).build()?;      // just this one
/// ```
#[proc_macro_attribute]
pub fn retryable_topic(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::retryable_topic(args.into(), item.into()).into()
}

/// Declares a handler of the dead-letter topics of a `#[retryable_topic]` listener.
///
/// ```ignore
/// #[dlt_handler(listener = consume)]
/// async fn dead_forecasts(record: Record) -> Result<(), HandlerError> { /* alert, store … */ Ok(()) }
/// ```
///
/// | argument | value | default | meaning |
/// |---|---|---|---|
/// | `listener` | path | **required** | the `#[retryable_topic]` handler whose DLTs to read |
/// | `name` | string | the handler's path | listener name |
/// | `crate` | string path | `"::retryable_topic"` | where the facade crate is |
///
/// It consumes in group `<group>-dlt`, one attempt, no DLT of its own (a failure is logged
/// and counted as dropped). The DLT records carry the retry headers: original topic,
/// partition, offset, attempt count and the last error.
#[proc_macro_attribute]
pub fn dlt_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::dlt_handler(args.into(), item.into()).into()
}
