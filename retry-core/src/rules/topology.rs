//! A listener's topics and what each one is to it: source, retry topic of a level, DLT.
//!
//! Pure: derived from the source topics, the group and the [`RetryPolicy`], shared by the
//! runtime and the macro (which checks at compile time that the names are valid).

use crate::error::{ConfigError, Result};
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

impl<'a> Role<'a> {
    /// The source topic's family the topic belongs to.
    pub fn source(self) -> &'a SourceTopics {
        match self {
            Role::Source(s) | Role::Retry(s, _) => s,
        }
    }
}

/// Every topic of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    sources: Vec<SourceTopics>,
}

impl Topology {
    /// Derives the topics of `sources` for `group` under `policy`; the error names the
    /// (first) setting at fault.
    pub fn new(sources: &[String], group: &str, policy: &RetryPolicy) -> Result<Self> {
        Self::check(sources, group, policy).map_err(|mut errors| errors.swap_remove(0).into())
    }

    /// Derives the topics and checks every rule, reporting every problem: at least one
    /// source; each a legal name (`topics`, with its index); a group (`group`); legal
    /// derived names (`group`, with the index of the source); no topic listed twice or
    /// both a source and a retry/DLT topic (`topics`, with its index).
    pub fn check(sources: &[String], group: &str, policy: &RetryPolicy) -> std::result::Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if sources.is_empty() {
            errors.push(ConfigError::new("topics", "at least one source topic is required"));
        }
        for (i, s) in sources.iter().enumerate() {
            if let Err(e) = validate_topic_name(s) {
                errors.push(ConfigError::new("topics", e.to_string()).at(i));
            }
        }
        if group.is_empty() {
            errors.push(ConfigError::new("group", "a consumer group is required"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut derived = Vec::with_capacity(sources.len());
        for (i, s) in sources.iter().enumerate() {
            match (policy.retry_topics(s, group), policy.dlt_topic(s, group)) {
                (Ok(retry), Ok(dlt)) => derived.push(SourceTopics { source: s.clone(), retry, dlt }),
                (Err(e), _) | (_, Err(e)) => errors.push(
                    ConfigError::new("group", format!("the retry/DLT topic names derived from `{s}` and group `{group}` are invalid: {e}"))
                        .at(i),
                ),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let topology = Topology { sources: derived };
        let mut seen = std::collections::HashSet::new();
        for (i, s) in topology.sources.iter().enumerate() {
            let clash = std::iter::once(s.source.as_str()).chain(s.derived()).find(|t| !seen.insert(*t));
            if let Some(t) = clash {
                errors.push(
                    ConfigError::new("topics", format!("topic `{t}` would be both a source and a retry/DLT topic (or is listed twice)"))
                        .at(i),
                );
            }
        }
        if errors.is_empty() {
            Ok(topology)
        } else {
            Err(errors)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sources: &[&str], group: &str) -> std::result::Result<Topology, Vec<(String, Option<usize>)>> {
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        Topology::check(&sources, group, &RetryPolicy::default()).map_err(|es| es.into_iter().map(|e| (e.setting, e.item)).collect())
    }

    #[test]
    fn every_problem_is_reported_with_its_setting_and_index() {
        let e = |s: &str, i: Option<usize>| (s.to_owned(), i);
        assert_eq!(check(&[], "").unwrap_err(), [e("topics", None), e("group", None)]);
        assert_eq!(check(&["ok", "a b", ".."], "g").unwrap_err(), [e("topics", Some(1)), e("topics", Some(2))]);
        assert_eq!(check(&["a", "b"], "my group").unwrap_err(), [e("group", Some(0)), e("group", Some(1))]);
        assert_eq!(check(&["a", "a"], "g").unwrap_err(), [e("topics", Some(1))]);
        assert_eq!(check(&["a", "a-retries-g"], "g").unwrap_err(), [e("topics", Some(1))]);
        assert_eq!(check(&["a-dlt-g", "a"], "g").unwrap_err(), [e("topics", Some(1))]);
        assert!(check(&["a", "b"], "g").is_ok());
    }
}
