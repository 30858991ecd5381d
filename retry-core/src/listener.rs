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

use crate::error::{ConfigError, Error, Result};
use crate::handler::Handler;
use crate::policy::RetryPolicy;
use crate::topics::validate_topic_name;

/// The topics derived for one source topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTopics {
    /// The source topic.
    pub source: String,
    /// Retry topics, level 0 first (empty when attempts = 1).
    pub retry: Vec<String>,
    /// The DLT (`None` with `NoDlt`).
    pub dlt: Option<String>,
}

impl SourceTopics {
    /// Retry topics, then the DLT.
    pub fn derived(&self) -> impl Iterator<Item = &str> {
        self.retry.iter().map(String::as_str).chain(self.dlt.as_deref())
    }
}

/// What a topic is to a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<'a> {
    /// A source topic: first attempts.
    Source(&'a SourceTopics),
    /// A retry topic of the given level.
    Retry(&'a SourceTopics, usize),
}

/// Every topic of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    sources: Vec<SourceTopics>,
}

impl Topology {
    /// Derives the topics of `sources` for `group` under `policy`.
    pub fn new(sources: &[String], group: &str, policy: &RetryPolicy) -> Result<Self> {
        let sources = sources
            .iter()
            .map(|s| Ok(SourceTopics { source: s.clone(), retry: policy.retry_topics(s, group)?, dlt: policy.dlt_topic(s, group)? }))
            .collect::<Result<Vec<_>>>()?;
        Ok(Topology { sources })
    }

    /// Per source topic.
    pub fn sources(&self) -> &[SourceTopics] {
        &self.sources
    }

    /// The topics the listener consumes: sources and retry topics.
    pub fn subscriptions(&self) -> Vec<&str> {
        self.sources.iter().flat_map(|s| std::iter::once(s.source.as_str()).chain(s.retry.iter().map(String::as_str))).collect()
    }

    /// Retry and DLT topics, which must exist (or be created) before start.
    pub fn derived(&self) -> Vec<&str> {
        self.sources.iter().flat_map(SourceTopics::derived).collect()
    }

    /// The role of `topic`.
    pub fn role(&self, topic: &str) -> Option<Role<'_>> {
        self.sources.iter().find_map(|s| {
            if s.source == topic {
                Some(Role::Source(s))
            } else {
                s.retry.iter().position(|r| r == topic).map(|level| Role::Retry(s, level))
            }
        })
    }
}

struct Inner {
    name: String,
    group: String,
    policy: RetryPolicy,
    handler: Arc<dyn Handler>,
    topology: Topology,
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
        ListenerBuilder { name: name.into(), topics: Vec::new(), group: None, policy: None, handler: None }
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
    /// A builder for a listener of this listener's DLTs: group `<group>-dlt`, one attempt,
    /// no DLT of its own. Set its handler and build.
    pub fn dead_letter_listener(&self, name: impl Into<String>) -> Result<ListenerBuilder> {
        let dlts: Vec<String> = self.inner.topology.sources.iter().filter_map(|s| s.dlt.clone()).collect();
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
    /// Checks everything and derives the topic names.
    pub fn build(self) -> Result<Listener> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty").into());
        }
        if self.topics.is_empty() {
            return Err(ConfigError::new("topics", "at least one source topic is required").into());
        }
        for t in &self.topics {
            validate_topic_name(t).map_err(|e| ConfigError::new("topics", e.to_string()))?;
        }
        let group = self.group.filter(|g| !g.is_empty()).ok_or_else(|| ConfigError::new("group", "a consumer group is required"))?;
        let handler = self.handler.ok_or_else(|| ConfigError::new("handler", "a handler is required"))?;
        let policy = self.policy.unwrap_or_default();
        let topology = Topology::new(&self.topics, &group, &policy)?;
        let mut all: Vec<&str> = topology.subscriptions();
        all.extend(topology.sources.iter().filter_map(|s| s.dlt.as_deref()));
        let mut sorted = all.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Config(ConfigError::new(
                "topics",
                format!("topic `{}` would be both a source and a retry/DLT topic (or is listed twice)", w[0]),
            )));
        }
        Ok(Listener { inner: Arc::new(Inner { name: self.name, group, policy, handler, topology }) })
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
