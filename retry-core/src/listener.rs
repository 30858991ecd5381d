//! A listener: source topics + consumer group + retry policy + handler.
//!
//! ```no_run
//! use retry_core::{handler, Listener, RetryPolicy};
//! # #[derive(serde::Deserialize)] struct WeatherForecast;
//! # async fn consume(_: WeatherForecast) -> Result<(), std::io::Error> { Ok(()) }
//! let listener = Listener::builder("consume")
//!     .topics(["weather-forecast"])
//!     .group("my-listener-group")
//!     .policy(RetryPolicy::builder().attempts(900).build()?)
//!     .handler(handler::json(consume))
//!     .build()?;
//! # Ok::<(), retry_core::Error>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::breaker::CircuitBreaker;
use crate::error::{ConfigError, Result};
use crate::handler::Handler;
use crate::policy::RetryPolicy;
pub use crate::topology::{Role, SourceTopics, Topology};

struct Inner {
    name: String,
    group: String,
    policy: RetryPolicy,
    handler: Arc<dyn Handler>,
    topology: Topology,
    max_queued_bytes: usize,
    circuit_breaker: Option<CircuitBreaker>,
    key_concurrency: usize,
    handler_timeout: Option<Duration>,
    stalled_after: Duration,
}

/// A validated listener; cheap to clone.
#[derive(Clone)]
pub struct Listener {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.inner.name)
            .field("group", &self.inner.group)
            .field("policy", &self.inner.policy)
            .field("topology", &self.inner.topology)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Starts a listener named `name` (for logs and metrics; unique within a runtime).
    pub fn builder(name: impl Into<String>) -> ListenerBuilder {
        ListenerBuilder {
            name: name.into(),
            topics: Vec::new(),
            group: None,
            policy: None,
            handler: None,
            max_queued_bytes: None,
            circuit_breaker: None,
            key_concurrency: None,
            handler_timeout: None,
            stalled_after: None,
        }
    }
    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// Its consumer group.
    pub fn group(&self) -> &str {
        &self.inner.group
    }
    /// Its policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.inner.policy
    }
    /// Its topics.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }
    pub(crate) fn handler(&self) -> &Arc<dyn Handler> {
        &self.inner.handler
    }
    /// Its budget for queued records, in bytes.
    pub fn max_queued_bytes(&self) -> usize {
        self.inner.max_queued_bytes
    }
    /// Its circuit breaker, if on.
    pub fn circuit_breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.circuit_breaker.as_ref()
    }
    /// How many records of one partition may be in its handler at once (1: one at a time,
    /// in offset order); see [`ListenerBuilder::key_concurrency`].
    pub fn key_concurrency(&self) -> usize {
        self.inner.key_concurrency
    }
    /// How long one handler call may take before it is given up (none: no limit); see
    /// [`ListenerBuilder::handler_timeout`].
    pub fn handler_timeout(&self) -> Option<Duration> {
        self.inner.handler_timeout
    }
    /// When a handler call still running is reported as stalled; see
    /// [`ListenerBuilder::stalled_after`].
    pub fn stalled_after(&self) -> Duration {
        self.inner.stalled_after
    }
    /// A builder for a listener of this listener's DLTs: group `<group>-dlt`, one attempt,
    /// no DLT of its own. Set its handler and build.
    pub fn dead_letter_listener(&self, name: impl Into<String>) -> Result<ListenerBuilder> {
        let dlts: Vec<String> = self.inner.topology.sources().iter().filter_map(|s| s.dlt.clone()).collect();
        if dlts.is_empty() {
            return Err(ConfigError::new("dlt", format!("listener `{}` has no DLT (NoDlt)", self.inner.name)).into());
        }
        let policy = RetryPolicy::builder().attempts(1).dlt(crate::policy::DltStrategy::NoDlt).build()?;
        Ok(Listener::builder(name).topics(dlts).group(format!("{}-dlt", self.inner.group)).policy(policy))
    }
}

/// Builder of [`Listener`].
#[must_use]
pub struct ListenerBuilder {
    name: String,
    topics: Vec<String>,
    group: Option<String>,
    policy: Option<RetryPolicy>,
    handler: Option<Arc<dyn Handler>>,
    max_queued_bytes: Option<usize>,
    circuit_breaker: Option<CircuitBreaker>,
    key_concurrency: Option<usize>,
    handler_timeout: Option<Duration>,
    stalled_after: Option<Duration>,
}

impl ListenerBuilder {
    /// Source topics (at least one).
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics.extend(topics.into_iter().map(Into::into));
        self
    }
    /// Consumer group (required).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
    /// Retry policy (default: [`RetryPolicy::default`]).
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = Some(policy);
        self
    }
    /// The handler (required); see [`handler::json`](crate::handler::json) and
    /// [`handler::record`](crate::handler::record).
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }
    /// The memory budget for records read but not finished yet (queued, in the handler, or
    /// being republished), in bytes; default 64 MiB. When it is used up, the partitions
    /// that deliver more are paused until half of it is free again. A single record larger
    /// than the budget still passes, alone.
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = Some(bytes);
        self
    }
    /// Turns the circuit breaker on (off by default): when failures look like an outage
    /// (many calls, most failing, across many keys) the listener stops republishing,
    /// holds the failing record and pauses every partition until a probe succeeds; one
    /// bad record among good ones still goes the non-blocking way. See
    /// [`CircuitBreaker`].
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.circuit_breaker = Some(breaker);
        self
    }
    /// Lets up to `n` records of each partition be in the handler at once, never two with
    /// the same key: the records of one key are handled one after the other, in offset
    /// order (records without a key count as one key). Default 1: a partition's records
    /// one at a time, in offset order. For a handler that waits (a database, a remote
    /// call) this multiplies what a partition can do by up to `n`.
    ///
    /// A record whose key is still in the handler waits for it; the records of other keys
    /// behind it go on. Offsets are stored as a contiguous watermark: a record's
    /// offset passes only when every record before it is done, so a crash handles again
    /// at most what was in flight, as always. At most
    /// [`MAX_KEY_CONCURRENCY`](crate::concurrency::MAX_KEY_CONCURRENCY).
    pub fn key_concurrency(mut self, n: usize) -> Self {
        self.key_concurrency = Some(n);
        self
    }
    /// Gives up a handler call that has not returned after `timeout` (none by default):
    /// its future is dropped and the call fails as a retryable attempt of its record
    /// (counted in `handler_timeouts`), which then goes the way of any other failure. A
    /// call that never returns would otherwise hold its partition (or its key) for good.
    /// From 1 ms to a day ([`MAX_HANDLER_TIMEOUT`](crate::call_time::MAX_HANDLER_TIMEOUT));
    /// each in-memory (blocking) attempt has its own. It is counted from the call's first
    /// wait (its first poll that is not done) and acts at its awaits: a handler that
    /// blocks its thread cannot be given up.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = Some(timeout);
        self
    }
    /// Reports a handler call still running after `after` as stalled (default 60 s): a
    /// warning naming the record, again once a minute while the call lasts, and one count
    /// in `stalled_calls`. The call itself goes on (see
    /// [`handler_timeout`](Self::handler_timeout) to give it up).
    pub fn stalled_after(mut self, after: Duration) -> Self {
        self.stalled_after = Some(after);
        self
    }
    /// Checks everything and derives the topic names.
    pub fn build(self) -> Result<Listener> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty").into());
        }
        let group = self.group.unwrap_or_default();
        let policy = self.policy.unwrap_or_default();
        let topology = Topology::new(&self.topics, &group, &policy)?;
        let handler = self.handler.ok_or_else(|| ConfigError::new("handler", "a handler is required"))?;
        let max_queued_bytes = match self.max_queued_bytes {
            Some(0) => return Err(ConfigError::new("max_queued_bytes", "must be at least 1 byte").into()),
            Some(b) => b,
            None => crate::engine::DEFAULT_BUDGET_BYTES,
        };
        if let Some(Err(mut errors)) = self.circuit_breaker.as_ref().map(CircuitBreaker::check) {
            return Err(errors.swap_remove(0).into());
        }
        let key_concurrency = crate::concurrency::check_key_concurrency(self.key_concurrency.unwrap_or(1))?;
        let handler_timeout = self.handler_timeout.map(crate::call_time::check_handler_timeout).transpose()?;
        let stalled_after = crate::call_time::check_stalled_after(self.stalled_after.unwrap_or(crate::call_time::DEFAULT_STALLED_AFTER))?;
        let circuit_breaker = self.circuit_breaker;
        let inner = Inner {
            name: self.name,
            group,
            policy,
            handler,
            topology,
            max_queued_bytes,
            circuit_breaker,
            key_concurrency,
            handler_timeout,
            stalled_after,
        };
        Ok(Listener { inner: Arc::new(inner) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler;

    fn noop() -> impl Handler {
        handler::record(|_r| async { Ok::<(), std::io::Error>(()) })
    }

    #[test]
    fn topology_and_roles() {
        let l = Listener::builder("l").topics(["a", "b"]).group("g").handler(noop()).build().unwrap();
        let t = l.topology();
        assert_eq!(t.subscriptions(), ["a", "a-retries-g", "b", "b-retries-g"]);
        assert_eq!(t.derived(), ["a-retries-g", "a-dlt-g", "b-retries-g", "b-dlt-g"]);
        assert!(matches!(t.role("a"), Some(Role::Source(s)) if s.source == "a"));
        assert!(matches!(t.role("b-retries-g"), Some(Role::Retry(s, 0)) if s.source == "b"));
        assert_eq!(t.role("a-dlt-g"), None);
    }

    #[test]
    fn missing_parts_are_named() {
        let err = |b: ListenerBuilder| b.build().unwrap_err().to_string();
        assert!(err(Listener::builder("l").group("g").handler(noop())).contains("`topics`"));
        assert!(err(Listener::builder("l").topics(["a"]).handler(noop())).contains("`group`"));
        assert!(err(Listener::builder("l").topics(["a"]).group("g")).contains("`handler`"));
        assert!(err(Listener::builder("l").topics(["a b"]).group("g").handler(noop())).contains("a b"));
        assert!(err(Listener::builder("l").topics(["a", "a-retries-g"]).group("g").handler(noop())).contains("a-retries-g"));
        let concurrency = |n| Listener::builder("l").topics(["a"]).group("g").handler(noop()).key_concurrency(n);
        assert!(err(concurrency(0)).contains("`key_concurrency`"));
        assert!(err(concurrency(crate::concurrency::MAX_KEY_CONCURRENCY + 1)).contains("1025"));
        assert_eq!(concurrency(8).build().unwrap().key_concurrency(), 8);
        let timed = |t| Listener::builder("l").topics(["a"]).group("g").handler(noop()).handler_timeout(t);
        assert!(err(timed(Duration::ZERO)).contains("`handler_timeout`"));
        assert_eq!(timed(Duration::from_secs(5)).build().unwrap().handler_timeout(), Some(Duration::from_secs(5)));
        let stalled = Listener::builder("l").topics(["a"]).group("g").handler(noop()).stalled_after(Duration::ZERO);
        assert!(err(stalled).contains("`stalled_after`"));
        let defaults = Listener::builder("l").topics(["a"]).group("g").handler(noop()).build().unwrap();
        assert_eq!((defaults.handler_timeout(), defaults.stalled_after()), (None, Duration::from_secs(60)));
    }

    #[test]
    fn dead_letter_listener_reads_the_dlts() {
        let l = Listener::builder("l").topics(["a"]).group("g").handler(noop()).build().unwrap();
        let d = l.dead_letter_listener("l-dlt").unwrap().handler(noop()).build().unwrap();
        assert_eq!(d.topology().subscriptions(), ["a-dlt-g"]);
        assert_eq!(d.group(), "g-dlt");
        assert!(d.topology().derived().is_empty());
    }
}
