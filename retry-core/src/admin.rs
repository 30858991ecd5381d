//! Topic checks at startup, and opt-in creation of *missing* retry and DLT topics.
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

/// Checks every listener's topics; creates missing retry/DLT topics where its policy allows.
pub(crate) async fn ensure_topics(config: &KafkaConfig, listeners: &[Listener], timeout: Duration) -> Result<()> {
    let mut existing = topic_partitions(config, timeout)?;
    let mut to_create: Vec<(String, i32, i32)> = Vec::new();
    for l in listeners {
        let mut missing = Vec::new();
        for s in l.topology().sources() {
            let Some(&source_partitions) = existing.get(&s.source) else {
                return Err(Error::UnknownTopic { listener: l.name().to_owned(), topic: s.source.clone() });
            };
            for t in s.derived() {
                if !existing.contains_key(t) && !to_create.iter().any(|(n, _, _)| n == t) {
                    missing.push((t.to_owned(), source_partitions));
                }
            }
        }
        if missing.is_empty() {
            continue;
        }
        match l.policy().auto_create() {
            None => {
                return Err(Error::MissingTopics { listener: l.name().to_owned(), topics: missing.into_iter().map(|(t, _)| t).collect() })
            }
            Some(spec) => to_create.extend(missing.into_iter().map(|(t, n)| {
                let partitions = spec.partitions.unwrap_or(i32::try_from(n).unwrap_or(1).max(1));
                (t, partitions, spec.replication.unwrap_or(-1))
            })),
        }
    }
    if to_create.is_empty() {
        return Ok(());
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
        existing = topic_partitions(config, timeout)?;
        let pending: Vec<&str> = to_create.iter().map(|(n, _, _)| n.as_str()).filter(|n| !existing.contains_key(*n)).collect();
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::TopicCreation { topic: pending.join(", "), reason: "created but not visible in metadata in time".into() });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
