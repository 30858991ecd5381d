//! Errors of the framework and the [`Result`] alias.

use crate::duration::DurationError;
use crate::topics::TopicNameError;

/// A setting with an invalid value; the message names the setting.
///
/// `setting` is the builder method that set it (`attempts`, `retry_suffix`, …), dotted for
/// a part of one (`backoff.multiplier`, `auto_create_topics.partitions`), or the
/// client-config key; the macro maps it back to the argument that set it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{setting}`: {reason}")]
pub struct ConfigError {
    /// The setting, as named in the builder (or the client-config key).
    pub setting: String,
    /// For a list setting (`topics`), the index of the element at fault.
    pub item: Option<usize>,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// A new error about `setting`.
    pub fn new(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { setting: setting.into(), item: None, reason: reason.into() }
    }

    /// The same error, about element `index` of a list setting.
    #[must_use]
    pub fn at(mut self, index: usize) -> Self {
        self.item = Some(index);
        self
    }
}

/// Everything that can go wrong in the framework.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A topic name or suffix breaks Kafka's rules.
    #[error(transparent)]
    TopicName(#[from] TopicNameError),
    /// A duration string could not be read.
    #[error(transparent)]
    Duration(#[from] DurationError),
    /// A source topic does not exist. The framework never creates source topics.
    #[error("listener `{listener}`: source topic `{topic}` does not exist (the framework never creates or alters source topics)")]
    UnknownTopic {
        /// The listener.
        listener: String,
        /// The missing topic.
        topic: String,
    },
    /// Retry or DLT topics are missing and creation is off.
    #[error("listener `{listener}`: missing retry/DLT topics {topics:?}; create them, or enable `auto_create_topics` to let the framework create missing retry/DLT topics")]
    MissingTopics {
        /// The listener.
        listener: String,
        /// The missing topics.
        topics: Vec<String>,
    },
    /// Creating a retry or DLT topic failed.
    #[error("could not create topic `{topic}`: {reason}")]
    TopicCreation {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// Two listeners share a name, or two listeners would consume the same topic in one group.
    #[error("listener `{0}` is registered twice")]
    DuplicateListener(String),
    /// A Kafka client call failed.
    #[cfg(feature = "runtime")]
    #[error("{context}: {source}")]
    Kafka {
        /// What the framework was doing.
        context: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The embedded broker could not be started or used.
    #[error("embedded broker: {0}")]
    Embedded(String),
}

impl Error {
    /// Wraps a client error with what the framework was doing.
    #[cfg(feature = "runtime")]
    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka { context: context.into(), source }
    }
}

/// The framework's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
