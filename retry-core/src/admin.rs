//! Topic checks at startup, and opt-in creation of *missing* retry and DLT topics; the
//! same [`plan`] and [`create_missing`] serve the `retryable-topic topics` command.
//!
//! Only `CreateTopics` is ever sent, and only for retry/DLT names that the metadata does not
//! list. No `CreatePartitions`, no `AlterConfigs`, no call of any kind on a source topic.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::listener::Listener;
use crate::policy::TopicSpec;

/// Partition count of every topic the cluster lists, without asking for auto-creation.
pub fn topic_partitions(config: &KafkaConfig, timeout: Duration) -> Result<HashMap<String, usize>> {
    let consumer: BaseConsumer = config
        .to_client_config()
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| crate::config::client_error("metadata client", e))?;
    let md = consumer.fetch_metadata(None, timeout).map_err(|e| {
        Error::kafka(format!("fetching metadata from `{}` (is the broker reachable?)", config.get("bootstrap.servers").unwrap_or("?")), e)
    })?;
    Ok(md.topics().iter().filter(|t| t.error().is_none()).map(|t| (t.name().to_owned(), t.partitions().len())).collect())
}

/// What a retry or DLT topic of a listener needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlan {
    /// The topic.
    pub topic: String,
    /// `retry`, `retry level N`, `retry tier 5s` or `dlt`.
    pub role: String,
    /// Its source topic.
    pub source: String,
    /// Partitions it has (`Some`) or would be created with (`None` while missing).
    pub partitions: Option<usize>,
    /// Partitions and replication it would be created with, if missing.
    pub create: Option<(i32, i32)>,
}

impl TopicPlan {
    /// Whether it exists.
    pub fn exists(&self) -> bool {
        self.create.is_none()
    }
}

/// The retry and DLT topics `listener` needs, whether each exists, and how a missing one
/// would be created (partitions from `spec`, else its source's; replication from `spec`,
/// else the broker's default). Errs if a source topic does not exist.
pub fn plan(config: &KafkaConfig, listener: &Listener, spec: TopicSpec, timeout: Duration) -> Result<Vec<TopicPlan>> {
    plan_with(&topic_partitions(config, timeout)?, listener, spec)
}

fn plan_with(existing: &HashMap<String, usize>, l: &Listener, spec: TopicSpec) -> Result<Vec<TopicPlan>> {
    let mut out = Vec::new();
    for s in l.topology().sources() {
        let Some(&source_partitions) = existing.get(&s.source) else {
            return Err(Error::UnknownTopic { listener: l.name().to_owned(), topic: s.source.clone() });
        };
        let roles = s
            .retry
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let role = match (l.policy().topic_strategy(), l.policy().ladder_tiers().get(i)) {
                    (crate::TopicStrategy::Ladder, Some(tier)) => format!("retry tier {}", crate::ladder::label(*tier)),
                    _ if s.retry.len() == 1 => "retry".to_owned(),
                    _ => format!("retry level {i}"),
                };
                (t, role)
            })
            .chain(s.dlt.iter().map(|t| (t, "dlt".to_owned())));
        for (t, role) in roles {
            let partitions = existing.get(t).copied();
            let create = partitions
                .is_none()
                .then(|| (spec.partitions.unwrap_or(i32::try_from(source_partitions).unwrap_or(1).max(1)), spec.replication.unwrap_or(-1)));
            out.push(TopicPlan { topic: t.clone(), role, source: s.source.clone(), partitions, create });
        }
    }
    Ok(out)
}

/// Creates the missing topics of `plan` (only `CreateTopics`; existing topics are never
/// touched) and waits until the metadata lists them. Returns the topics created.
pub async fn create_missing(config: &KafkaConfig, plan: &[TopicPlan], timeout: Duration) -> Result<Vec<String>> {
    let mut to_create: Vec<(&str, i32, i32)> = Vec::new();
    for p in plan {
        if let Some((partitions, replication)) = p.create {
            if !to_create.iter().any(|(n, _, _)| *n == p.topic) {
                to_create.push((&p.topic, partitions, replication));
            }
        }
    }
    if to_create.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<DefaultClientContext> =
        config.to_client_config().create().map_err(|e| crate::config::client_error("admin client", e))?;
    let new: Vec<NewTopic<'_>> = to_create
        .iter()
        .map(|(name, partitions, replication)| NewTopic::new(name, *partitions, TopicReplication::Fixed(*replication)))
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout)))
        .await
        .map_err(|e| Error::kafka("CreateTopics", e))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, "created missing retry/DLT topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => tracing::debug!(topic = %name, "topic appeared meanwhile"),
            Err((name, code)) => return Err(Error::TopicCreation { topic: name, reason: code.to_string() }),
        }
    }
    // Wait until the metadata lists them, so consumers subscribe to topics that exist.
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let existing = topic_partitions(config, timeout)?;
        let pending: Vec<&str> = to_create.iter().map(|(n, _, _)| *n).filter(|n| !existing.contains_key(*n)).collect();
        if pending.is_empty() {
            return Ok(to_create.iter().map(|(n, _, _)| (*n).to_owned()).collect());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::TopicCreation { topic: pending.join(", "), reason: "created but not visible in metadata in time".into() });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks every listener's topics; creates missing retry/DLT topics where its policy allows.
pub(crate) async fn ensure_topics(config: &KafkaConfig, listeners: &[Listener], timeout: Duration) -> Result<()> {
    let existing = topic_partitions(config, timeout)?;
    let mut all = Vec::new();
    for l in listeners {
        let plan = plan_with(&existing, l, l.policy().auto_create().unwrap_or_default())?;
        let missing: Vec<String> = plan.iter().filter(|p| !p.exists()).map(|p| p.topic.clone()).collect();
        if !missing.is_empty() && l.policy().auto_create().is_none() {
            return Err(Error::MissingTopics { listener: l.name().to_owned(), topics: missing });
        }
        all.extend(plan);
    }
    create_missing(config, &all, timeout).await.map(|_| ())
}
