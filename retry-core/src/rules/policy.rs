//! Retry policy: how often, how long between attempts, where records go, and what happens
//! once attempts run out.
//!
//! | setting | default | builder method |
//! |---|---|---|
//! | attempts (total, the first included) | 3 | [`attempts`](RetryPolicyBuilder::attempts) |
//! | backoff | fixed 1 s | [`backoff`](RetryPolicyBuilder::backoff) |
//! | jitter | 0 (none) | [`jitter`](RetryPolicyBuilder::jitter) |
//! | retry-topic suffix | `-retries` | [`retry_suffix`](RetryPolicyBuilder::retry_suffix) |
//! | DLT suffix | `-dlt` | [`dlt_suffix`](RetryPolicyBuilder::dlt_suffix) |
//! | DLT strategy | [`DltStrategy::AlwaysRetryOnError`] | [`dlt`](RetryPolicyBuilder::dlt) |
//! | topic strategy | [`TopicStrategy::SingleTopic`] | [`topic_strategy`](RetryPolicyBuilder::topic_strategy) |
//! | max retry topics (MultipleTopics) | 8 | [`max_retry_topics`](RetryPolicyBuilder::max_retry_topics) |
//! | ladder tiers (Ladder) | 1s 5s 17s 59s 4m 17m 1h | [`ladder_tiers`](RetryPolicyBuilder::ladder_tiers) |
//! | group in topic names | per group | [`group_naming`](RetryPolicyBuilder::group_naming) |
//! | global timeout | none | [`timeout`](RetryPolicyBuilder::timeout) |
//! | in-memory blocking attempts | 0 | [`blocking_attempts`](RetryPolicyBuilder::blocking_attempts) |
//! | pause between them | 100 ms | [`blocking_delay`](RetryPolicyBuilder::blocking_delay) |
//! | auto-create retry/DLT topics | off | [`auto_create_topics`](RetryPolicyBuilder::auto_create_topics) |

use std::time::Duration;

use crate::backoff::Backoff;
use crate::error::{ConfigError, Result};
use crate::topics::{self, GroupNaming};

/// What happens to a record once it has no attempts left (or fails fatally).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum DltStrategy {
    /// Publish to the DLT; if that publish fails, keep trying it (with backoff) until it
    /// succeeds. Nothing is lost, the partition waits meanwhile.
    #[default]
    AlwaysRetryOnError,
    /// Publish to the DLT; if that publish fails, stop the partition (no commit, a logged
    /// error and [`Metrics::stopped_partitions`](crate::metrics::Metrics)), so an operator
    /// can act. The record is redelivered after a restart.
    FailOnError,
    /// No DLT: the record is dropped with a log line and a counter.
    NoDlt,
}

impl DltStrategy {
    /// Each strategy by the name the macro and the command line use.
    pub const NAMES: [(&'static str, DltStrategy); 3] = [
        ("always_retry_on_error", DltStrategy::AlwaysRetryOnError),
        ("fail_on_error", DltStrategy::FailOnError),
        ("no_dlt", DltStrategy::NoDlt),
    ];
}

/// How retry topics are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum TopicStrategy {
    /// One retry topic for every attempt (Spring's `FixedDelayStrategy.SINGLE_TOPIC`).
    /// Best with a fixed backoff: with growing delays a long-waiting record at the head of
    /// a partition holds back shorter ones behind it (never early, possibly late).
    #[default]
    SingleTopic,
    /// One retry topic per delay level, at most `max_retry_topics`; the last one takes all
    /// later attempts. Each topic holds records of a single delay, so none waits behind a
    /// longer one.
    MultipleTopics,
    /// One retry topic per delay tier ([`ladder_tiers`](RetryPolicyBuilder::ladder_tiers)):
    /// any delay with a fixed number of topics. A record waits on the largest tier not
    /// longer than its remaining delay, then hops down; see [`ladder`](crate::ladder).
    Ladder,
}

impl TopicStrategy {
    /// Each layout by the name the macro and the command line use.
    pub const NAMES: [(&'static str, TopicStrategy); 3] = [
        ("single_topic", TopicStrategy::SingleTopic),
        ("multiple_topics", TopicStrategy::MultipleTopics),
        ("ladder", TopicStrategy::Ladder),
    ];
}

/// Partitions and replication of retry and DLT topics created by the framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TopicSpec {
    /// Partition count of each created topic (`None`: the same as its source topic).
    pub partitions: Option<i32>,
    /// Replication factor (`None`: the broker's default).
    pub replication: Option<i32>,
}

/// A validated retry policy. Build one with [`RetryPolicy::builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    attempts: u32,
    backoff: Backoff,
    jitter: f64,
    retry_suffix: String,
    dlt_suffix: String,
    dlt: DltStrategy,
    topic_strategy: TopicStrategy,
    max_retry_topics: usize,
    ladder_tiers: Vec<Duration>,
    group_naming: GroupNaming,
    timeout: Option<Duration>,
    blocking_attempts: u32,
    blocking_delay: Duration,
    auto_create: Option<TopicSpec>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::builder().build().expect("defaults are valid")
    }
}

impl RetryPolicy {
    /// Starts a builder with the defaults of the table above.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder::default()
    }

    /// Total attempts, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
    /// The backoff schedule.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }
    /// Jitter fraction in [0, 1].
    pub fn jitter(&self) -> f64 {
        self.jitter
    }
    /// Retry-topic suffix.
    pub fn retry_suffix(&self) -> &str {
        &self.retry_suffix
    }
    /// DLT suffix.
    pub fn dlt_suffix(&self) -> &str {
        &self.dlt_suffix
    }
    /// DLT strategy.
    pub fn dlt(&self) -> DltStrategy {
        self.dlt
    }
    /// Retry-topic layout.
    pub fn topic_strategy(&self) -> TopicStrategy {
        self.topic_strategy
    }
    /// The ladder's tiers, shortest first (used with [`TopicStrategy::Ladder`]).
    pub fn ladder_tiers(&self) -> &[Duration] {
        &self.ladder_tiers
    }
    /// Whether derived topic names carry the group.
    pub fn group_naming(&self) -> GroupNaming {
        self.group_naming
    }
    /// Global timeout since the first failure, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    /// In-memory attempts before the first republish, and the pause between them.
    pub fn blocking(&self) -> (u32, Duration) {
        (self.blocking_attempts, self.blocking_delay)
    }
    /// Topic creation settings, when creation is enabled.
    pub fn auto_create(&self) -> Option<TopicSpec> {
        self.auto_create
    }

    /// How many retry topics one source topic has (0 when `attempts == 1`).
    pub fn retry_topic_count(&self) -> usize {
        let retries = self.attempts.saturating_sub(1) as usize;
        match self.topic_strategy {
            TopicStrategy::SingleTopic => retries.min(1),
            TopicStrategy::MultipleTopics => retries.min(self.max_retry_topics),
            TopicStrategy::Ladder if retries == 0 => 0,
            TopicStrategy::Ladder => self.ladder_tiers.len(),
        }
    }

    /// The retry-topic level that carries attempt `attempt` (≥ 2).
    pub fn level_for_attempt(&self, attempt: u32) -> usize {
        let count = self.retry_topic_count().max(1);
        (attempt.saturating_sub(2) as usize).min(count - 1)
    }

    /// The names of the retry topics of `source` for `group`, level 0 first.
    pub fn retry_topics(&self, source: &str, group: &str) -> Result<Vec<String>> {
        let naming = self.group_naming;
        Ok(match (self.topic_strategy, self.retry_topic_count()) {
            (_, 0) => Vec::new(),
            (TopicStrategy::SingleTopic, _) => {
                vec![topics::retry_topic(source, &self.retry_suffix, group, naming, None)?]
            }
            (TopicStrategy::MultipleTopics, n) => (0..n)
                .map(|i| topics::retry_topic(source, &self.retry_suffix, group, naming, Some(&i.to_string())))
                .collect::<std::result::Result<_, _>>()?,
            (TopicStrategy::Ladder, _) => self
                .ladder_tiers
                .iter()
                .map(|t| topics::retry_topic(source, &self.retry_suffix, group, naming, Some(&crate::ladder::label(*t))))
                .collect::<std::result::Result<_, _>>()?,
        })
    }

    /// The DLT of `source` for `group` (`None` with [`DltStrategy::NoDlt`]).
    pub fn dlt_topic(&self, source: &str, group: &str) -> Result<Option<String>> {
        if self.dlt == DltStrategy::NoDlt {
            return Ok(None);
        }
        Ok(Some(topics::dlt_topic(source, &self.dlt_suffix, group, self.group_naming)?))
    }

    /// The furthest in the future a retry record may legitimately be due: the longest
    /// delay with its jitter, plus that delay again as slack for clock skew (at least 1 s,
    /// at most 60 s). A claimed due time beyond `now + horizon` is treated as untrusted and
    /// clamped to it.
    pub fn due_horizon(&self) -> Duration {
        let max = self.backoff.max_delay();
        let slack = max.clamp(Duration::from_secs(1), Duration::from_secs(60));
        // Saturating: a huge configured delay must not overflow (`mul_f64` panics).
        let jitter = Duration::try_from_secs_f64(max.as_secs_f64() * self.jitter).unwrap_or(Duration::MAX);
        max.saturating_add(jitter).saturating_add(slack)
    }
}

/// Builder of [`RetryPolicy`]; every setter is checked in [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
}

impl Default for RetryPolicyBuilder {
    fn default() -> Self {
        RetryPolicyBuilder {
            policy: RetryPolicy {
                attempts: 3,
                backoff: Backoff::default(),
                jitter: 0.0,
                retry_suffix: "-retries".into(),
                dlt_suffix: "-dlt".into(),
                dlt: DltStrategy::default(),
                topic_strategy: TopicStrategy::default(),
                max_retry_topics: 8,
                ladder_tiers: crate::ladder::DEFAULT_TIERS.to_vec(),
                group_naming: GroupNaming::default(),
                timeout: None,
                blocking_attempts: 0,
                blocking_delay: Duration::from_millis(100),
                auto_create: None,
            },
        }
    }
}

impl RetryPolicyBuilder {
    /// Total attempts including the first (≥ 1; 1 means no retry at all).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.policy.attempts = attempts;
        self
    }
    /// The backoff schedule.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.policy.backoff = backoff;
        self
    }
    /// Spreads each delay by ± `fraction` (0 to 1) at random, so retries of many records
    /// failing together do not arrive together.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.policy.jitter = fraction;
        self
    }
    /// Retry-topic suffix.
    pub fn retry_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.policy.retry_suffix = suffix.into();
        self
    }
    /// DLT suffix.
    pub fn dlt_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.policy.dlt_suffix = suffix.into();
        self
    }
    /// DLT strategy.
    pub fn dlt(mut self, strategy: DltStrategy) -> Self {
        self.policy.dlt = strategy;
        self
    }
    /// Retry-topic layout.
    pub fn topic_strategy(mut self, strategy: TopicStrategy) -> Self {
        self.policy.topic_strategy = strategy;
        self
    }
    /// Upper bound of retry topics per source with [`TopicStrategy::MultipleTopics`] (≥ 1).
    pub fn max_retry_topics(mut self, count: usize) -> Self {
        self.policy.max_retry_topics = count;
        self
    }
    /// The tiers of [`TopicStrategy::Ladder`], shortest first, strictly growing, at most
    /// [`MAX_TIERS`](crate::ladder::MAX_TIERS).
    pub fn ladder_tiers(mut self, tiers: impl IntoIterator<Item = Duration>) -> Self {
        self.policy.ladder_tiers = tiers.into_iter().collect();
        self
    }
    /// Whether derived topic names carry the consumer group.
    pub fn group_naming(mut self, naming: GroupNaming) -> Self {
        self.policy.group_naming = naming;
        self
    }
    /// Gives up (to the DLT) when the next attempt would be due later than `timeout` after
    /// the first failure.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.policy.timeout = Some(timeout);
        self
    }
    /// Tries `attempts` more times in memory, [`blocking_delay`](Self::blocking_delay)
    /// apart, before the first republish (for blips shorter than a round trip through the
    /// retry topic). These do not count toward [`attempts`](Self::attempts).
    pub fn blocking_attempts(mut self, attempts: u32) -> Self {
        self.policy.blocking_attempts = attempts;
        self
    }
    /// The pause between in-memory attempts.
    pub fn blocking_delay(mut self, delay: Duration) -> Self {
        self.policy.blocking_delay = delay;
        self
    }
    /// Lets the runtime create *missing* retry and DLT topics at startup. Existing topics,
    /// the source above all, are never altered.
    pub fn auto_create_topics(mut self, spec: TopicSpec) -> Self {
        self.policy.auto_create = Some(spec);
        self
    }

    /// Checks every setting; the error names the (first) setting at fault.
    pub fn build(self) -> Result<RetryPolicy> {
        self.check().map_err(|mut errors| errors.swap_remove(0).into())
    }

    /// Checks every setting and reports every problem, each naming its setting (the
    /// builder method that set it), so a caller can point at each one: the macro does so
    /// at compile time.
    pub fn check(self) -> std::result::Result<RetryPolicy, Vec<ConfigError>> {
        let p = self.policy;
        let mut errors = Vec::new();
        if p.attempts < 1 {
            errors.push(ConfigError::new("attempts", "must be at least 1 (the first attempt counts)"));
        }
        if let Err(backoff) = p.backoff.validate() {
            errors.extend(backoff);
        }
        if !(0.0..=1.0).contains(&p.jitter) {
            errors.push(ConfigError::new("jitter", format!("must be within 0.0..=1.0, got {}", p.jitter)));
        }
        let retry_suffix = topics::validate_suffix(&p.retry_suffix).map_err(|e| ConfigError::new("retry_suffix", e.to_string()));
        let dlt_suffix = topics::validate_suffix(&p.dlt_suffix).map_err(|e| ConfigError::new("dlt_suffix", e.to_string()));
        errors.extend(retry_suffix.err());
        errors.extend(dlt_suffix.err());
        if p.retry_suffix == p.dlt_suffix {
            errors.push(ConfigError::new(
                "dlt_suffix",
                format!("must differ from the retry suffix (both are `{}`): retry and dead-letter topics would share names", p.dlt_suffix),
            ));
        }
        if p.max_retry_topics < 1 {
            errors.push(ConfigError::new("max_retry_topics", "must be at least 1"));
        }
        if p.topic_strategy == TopicStrategy::Ladder {
            if let Err(ladder) = crate::ladder::check(&p.ladder_tiers) {
                errors.extend(ladder);
            }
        }
        if let Some(spec) = p.auto_create {
            if spec.partitions.is_some_and(|n| n < 1) {
                errors.push(ConfigError::new("auto_create_topics.partitions", "must be at least 1"));
            }
            if spec.replication.is_some_and(|n| n < 1) {
                errors.push(ConfigError::new("auto_create_topics.replication", "must be at least 1"));
            }
        }
        if errors.is_empty() {
            Ok(p)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_due_horizon_never_overflows() {
        // A huge delay with full jitter used to panic in `Duration` arithmetic.
        let p = RetryPolicy::builder().backoff(Backoff::fixed(Duration::MAX)).jitter(1.0).build().unwrap();
        assert_eq!(p.due_horizon(), Duration::MAX);
        let p = RetryPolicy::builder().backoff(Backoff::fixed(Duration::from_secs(10))).jitter(0.5).build().unwrap();
        assert_eq!(p.due_horizon(), Duration::from_secs(10 + 5 + 10));
    }

    #[test]
    fn defaults_match_the_table() {
        let p = RetryPolicy::default();
        assert_eq!(p.attempts(), 3);
        assert_eq!(p.retry_suffix(), "-retries");
        assert_eq!(p.dlt_suffix(), "-dlt");
        assert_eq!(p.dlt(), DltStrategy::AlwaysRetryOnError);
        assert_eq!(p.topic_strategy(), TopicStrategy::SingleTopic);
        assert_eq!(p.retry_topics("t", "g").unwrap(), ["t-retries-g"]);
        assert_eq!(p.dlt_topic("t", "g").unwrap().as_deref(), Some("t-dlt-g"));
    }

    #[test]
    fn multiple_topics_are_bounded_and_levels_saturate() {
        let p = RetryPolicy::builder().attempts(900).topic_strategy(TopicStrategy::MultipleTopics).max_retry_topics(4).build().unwrap();
        assert_eq!(p.retry_topics("t", "g").unwrap(), ["t-retries-g-0", "t-retries-g-1", "t-retries-g-2", "t-retries-g-3"]);
        let levels: Vec<_> = (2..=7).map(|a| p.level_for_attempt(a)).collect();
        assert_eq!(levels, [0, 1, 2, 3, 3, 3]);
        let few = RetryPolicy::builder().attempts(3).topic_strategy(TopicStrategy::MultipleTopics).build().unwrap();
        assert_eq!(few.retry_topic_count(), 2);
        let none = RetryPolicy::builder().attempts(1).build().unwrap();
        assert!(none.retry_topics("t", "g").unwrap().is_empty());
    }

    #[test]
    fn due_horizon_is_the_longest_delay_plus_bounded_slack() {
        let h = |b: Backoff, j: f64| RetryPolicy::builder().backoff(b).jitter(j).build().unwrap().due_horizon();
        let s = Duration::from_secs;
        assert_eq!(h(Backoff::fixed(Duration::from_millis(10)), 0.0), Duration::from_millis(1010));
        assert_eq!(h(Backoff::fixed(s(5)), 0.0), s(10));
        assert_eq!(h(Backoff::fixed(s(5)), 0.5), Duration::from_millis(12_500));
        assert_eq!(h(Backoff::fixed(s(300)), 0.0), s(360));
        assert_eq!(h(Backoff::exponential(s(1), 2.0, s(30)), 0.0), s(60));
    }

    #[test]
    fn check_reports_every_problem() {
        let errors = RetryPolicy::builder()
            .attempts(0)
            .jitter(2.0)
            .retry_suffix("-x")
            .dlt_suffix("-x")
            .backoff(Backoff::exponential(Duration::from_secs(1), 0.5, Duration::from_secs(9)))
            .check()
            .unwrap_err();
        let settings: Vec<&str> = errors.iter().map(|e| e.setting.as_str()).collect();
        assert_eq!(settings, ["attempts", "backoff.multiplier", "jitter", "dlt_suffix"]);
    }

    #[test]
    fn no_dlt_has_no_dlt_topic() {
        let p = RetryPolicy::builder().dlt(DltStrategy::NoDlt).build().unwrap();
        assert_eq!(p.dlt_topic("t", "g").unwrap(), None);
    }

    #[test]
    fn invalid_settings_are_named() {
        let cases: Vec<(RetryPolicyBuilder, &str)> = vec![
            (RetryPolicy::builder().attempts(0), "attempts"),
            (RetryPolicy::builder().jitter(1.5), "jitter"),
            (RetryPolicy::builder().retry_suffix("a b"), "retry_suffix"),
            (RetryPolicy::builder().dlt_suffix(""), "dlt_suffix"),
            (RetryPolicy::builder().dlt_suffix("-retries"), "dlt_suffix"),
            (RetryPolicy::builder().max_retry_topics(0), "max_retry_topics"),
            (RetryPolicy::builder().backoff(Backoff::exponential(Duration::from_secs(1), 0.1, Duration::from_secs(2))), "backoff"),
            (RetryPolicy::builder().auto_create_topics(TopicSpec { partitions: Some(0), replication: None }), "partitions"),
        ];
        for (builder, setting) in cases {
            let err = builder.build().unwrap_err().to_string();
            assert!(err.contains(setting), "{err} should name {setting}");
        }
    }
}
