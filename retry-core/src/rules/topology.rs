//! A listener's topics and what each one is to it: source, retry topic of a level, DLT.
//!
//! Pure: derived from the source topics, the group and the [`RetryPolicy`], shared by the
//! runtime and the macro (which checks at compile time that the names are valid).

use crate::error::Result;
use crate::policy::RetryPolicy;

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
