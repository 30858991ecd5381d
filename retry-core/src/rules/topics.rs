//! Topic names: Kafka's naming rules and the names of retry and dead-letter topics.
//!
//! The rules live here once; the proc-macro calls the same functions at compile time.
//!
//! | topic | name |
//! |---|---|
//! | source | `weather-forecast` |
//! | retry, [`SingleTopic`](crate::policy::TopicStrategy::SingleTopic) | `weather-forecast-retries-my-group` |
//! | retry, [`MultipleTopics`](crate::policy::TopicStrategy::MultipleTopics), level *i* | `weather-forecast-retries-my-group-i` (i = 0, 1, …) |
//! | retry, [`Ladder`](crate::policy::TopicStrategy::Ladder), one per tier | `weather-forecast-retries-my-group-5s` (1s, 5s, 17s, …) |
//! | dead letter | `weather-forecast-dlt-my-group` |
//!
//! With per-group naming off the `-my-group` part is left out.

/// Kafka's longest legal topic name.
pub const MAX_TOPIC_LEN: usize = 249;

/// Why a topic name or suffix was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicNameError {
    /// The name is empty.
    #[error("topic name is empty")]
    Empty,
    /// The name is `.` or `..`.
    #[error("topic name `{0}` is not allowed (`.` and `..` are reserved)")]
    Reserved(String),
    /// The name is longer than [`MAX_TOPIC_LEN`].
    #[error("topic name `{name}` is {len} characters long; Kafka allows at most 249")]
    TooLong {
        /// The name.
        name: String,
        /// Its length.
        len: usize,
    },
    /// The name has a character outside `[a-zA-Z0-9._-]`.
    #[error("topic name `{name}` contains {ch:?}; Kafka allows only ASCII letters, digits, '.', '_' and '-'")]
    BadChar {
        /// The name.
        name: String,
        /// The first offending character.
        ch: char,
    },
    /// A suffix is empty.
    #[error("suffix is empty; a retry or dead-letter suffix needs at least one character")]
    EmptySuffix,
    /// A suffix has an illegal character.
    #[error("suffix `{suffix}` contains {ch:?}; only ASCII letters, digits, '.', '_' and '-' are allowed")]
    BadSuffixChar {
        /// The suffix.
        suffix: String,
        /// The first offending character.
        ch: char,
    },
}

fn legal(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-')
}

/// Checks a topic name against Kafka's rules.
///
/// ```
/// use retry_core::topics::validate_topic_name;
/// assert!(validate_topic_name("weather-forecast").is_ok());
/// assert!(validate_topic_name("weather forecast").is_err());
/// ```
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Reserved(name.to_owned()));
    }
    let len = name.chars().count();
    if len > MAX_TOPIC_LEN {
        return Err(TopicNameError::TooLong { name: name.to_owned(), len });
    }
    match name.chars().find(|c| !legal(*c)) {
        Some(ch) => Err(TopicNameError::BadChar { name: name.to_owned(), ch }),
        None => Ok(()),
    }
}

/// Checks a retry or dead-letter suffix (same alphabet as topic names, not empty).
pub fn validate_suffix(suffix: &str) -> Result<(), TopicNameError> {
    if suffix.is_empty() {
        return Err(TopicNameError::EmptySuffix);
    }
    match suffix.chars().find(|c| !legal(*c)) {
        Some(ch) => Err(TopicNameError::BadSuffixChar { suffix: suffix.to_owned(), ch }),
        None => Ok(()),
    }
}

/// Whether derived names carry the consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupNaming {
    /// `source + suffix + "-" + group` (default): two groups on one source never share retries.
    #[default]
    PerGroup,
    /// `source + suffix`: for setups where a single group owns the source.
    Shared,
}

impl GroupNaming {
    /// Each naming by the name the macro and the command line use.
    pub const NAMES: [(&'static str, GroupNaming); 2] = [("per_group", GroupNaming::PerGroup), ("shared", GroupNaming::Shared)];
}

fn derived(source: &str, suffix: &str, group: &str, naming: GroupNaming) -> String {
    match naming {
        GroupNaming::PerGroup => format!("{source}{suffix}-{group}"),
        GroupNaming::Shared => format!("{source}{suffix}"),
    }
}

/// The retry topic of `source` for `group`; `level` names one of several retry topics:
/// `Some("2")` for the third level ([`MultipleTopics`](crate::policy::TopicStrategy::MultipleTopics)),
/// `Some("17s")` for a tier ([`Ladder`](crate::policy::TopicStrategy::Ladder)).
/// The result is validated, so an illegal group id is reported here and not by the broker.
pub fn retry_topic(source: &str, suffix: &str, group: &str, naming: GroupNaming, level: Option<&str>) -> Result<String, TopicNameError> {
    let mut name = derived(source, suffix, group, naming);
    if let Some(level) = level {
        name.push('-');
        name.push_str(level);
    }
    validate_topic_name(&name)?;
    Ok(name)
}

/// The dead-letter topic of `source` for `group`.
pub fn dlt_topic(source: &str, suffix: &str, group: &str, naming: GroupNaming) -> Result<String, TopicNameError> {
    let name = derived(source, suffix, group, naming);
    validate_topic_name(&name)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_rules() {
        assert!(validate_topic_name("a.b_c-D9").is_ok());
        assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
        assert!(matches!(validate_topic_name(".."), Err(TopicNameError::Reserved(_))));
        assert!(matches!(validate_topic_name("a b"), Err(TopicNameError::BadChar { ch: ' ', .. })));
        assert!(matches!(validate_topic_name("é"), Err(TopicNameError::BadChar { ch: 'é', .. })));
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        assert!(matches!(validate_topic_name(&"x".repeat(250)), Err(TopicNameError::TooLong { len: 250, .. })));
    }

    #[test]
    fn suffix_rules() {
        assert!(validate_suffix("-retries").is_ok());
        assert_eq!(validate_suffix(""), Err(TopicNameError::EmptySuffix));
        assert!(matches!(validate_suffix("-re tries"), Err(TopicNameError::BadSuffixChar { .. })));
    }

    #[test]
    fn names_per_group_and_shared() {
        let g = GroupNaming::PerGroup;
        assert_eq!(
            retry_topic("weather-forecast", "-retries", "my-listener-group", g, None).unwrap(),
            "weather-forecast-retries-my-listener-group"
        );
        assert_eq!(retry_topic("t", "-retry", "g", g, Some("2")).unwrap(), "t-retry-g-2");
        assert_eq!(dlt_topic("t", "-dlt", "g", g).unwrap(), "t-dlt-g");
        assert_eq!(retry_topic("t", "-retry", "g", GroupNaming::Shared, None).unwrap(), "t-retry");
        assert_eq!(dlt_topic("t", "-dlt", "g", GroupNaming::Shared).unwrap(), "t-dlt");
    }

    #[test]
    fn an_illegal_group_id_is_caught_in_the_derived_name() {
        let err = retry_topic("t", "-retries", "my group", GroupNaming::PerGroup, None).unwrap_err();
        assert!(err.to_string().contains("t-retries-my group"), "{err}");
        let long = "g".repeat(240);
        assert!(dlt_topic("topic", "-dlt", &long, GroupNaming::PerGroup).is_err());
    }

    #[test]
    fn derived_names_are_distinct() {
        let g = GroupNaming::PerGroup;
        let mut names = vec![dlt_topic("t", "-dlt", "g", g).unwrap()];
        names.extend((0..5).map(|i| retry_topic("t", "-retries", "g", g, Some(&i.to_string())).unwrap()));
        names.push(retry_topic("t", "-retries", "g", g, None).unwrap());
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }
}
