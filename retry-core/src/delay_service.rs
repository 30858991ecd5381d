//! The delay service: a listener that holds each record of a request topic for the delay
//! its headers ask for, on the [ladder], then delivers it to the topic they
//! name; usable from any language (the headers are in [`delay_request`]).
//!
//! It is a listener like any other (same pipeline, same metrics): a request is attempt 1,
//! which asks for its own delay ([`HandlerError::retry_after`]); the ladder holds it; when
//! due, attempt 2 delivers it with payload, key and the sender's headers untouched, plus
//! `RetryCount`, `RetryTime` and `RetryVia`. A delivery that fails for a while is tried again
//! with the policy's backoff; a request the service cannot act on (malformed headers, a
//! topic that cannot be written) goes to the service's dead-letter topic with the reason.
//!
//! A delivery awaits the broker's acknowledgement before its offset may pass, so the
//! service delivers the records of different keys at once
//! ([`key_concurrency`](DelayService::key_concurrency), 64 by default): one at a time, a
//! partition delivered a few hundred records a second (each waits out the producer's
//! linger and a round trip), and records due together were late by the time the ones
//! before them took. Each key's records are still delivered in offset order.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::delay_request::{self, Route};
use crate::error::Result;
use crate::handler::{self, HandlerError};
use crate::ladder;
use crate::listener::Listener;
use crate::policy::{RetryPolicy, TopicSpec, TopicStrategy};
use crate::record::Record;
use crate::time::now_ms;
use crate::{Backoff, KafkaConfig};

/// The default request topic.
pub const DEFAULT_REQUEST_TOPIC: &str = "retry.topic";
/// The default consumer group.
pub const DEFAULT_GROUP: &str = "delay-service";
/// The default longest delay: 7 days.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3_600);
/// The default delivery attempts.
pub const DEFAULT_DELIVERY_ATTEMPTS: u32 = 10;
/// The default number of records of one partition delivered at once (never two of a key).
pub const DEFAULT_KEY_CONCURRENCY: usize = 64;

/// The delay service's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayService {
    request_topic: String,
    group: String,
    tiers: Vec<Duration>,
    max_delay: Duration,
    delivery_attempts: u32,
    key_concurrency: usize,
    create: Option<TopicSpec>,
}

impl Default for DelayService {
    fn default() -> Self {
        DelayService {
            request_topic: DEFAULT_REQUEST_TOPIC.into(),
            group: DEFAULT_GROUP.into(),
            tiers: ladder::DEFAULT_TIERS.to_vec(),
            max_delay: DEFAULT_MAX_DELAY,
            delivery_attempts: DEFAULT_DELIVERY_ATTEMPTS,
            key_concurrency: DEFAULT_KEY_CONCURRENCY,
            create: None,
        }
    }
}

/// Why a delivery attempt failed; its text goes into the logs and the dead letter.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("scheduled: due in {0:?}")]
    Scheduled(Duration),
    #[error("cannot deliver to `{topic}`: {error}")]
    Publish { topic: String, error: KafkaError },
    #[error("RetryCount reached RetryMax ({0}) and the request names no DLQTopic")]
    NoDlq(u32),
}

impl DelayService {
    /// The defaults: request topic `retry.topic`, group `delay-service`, the default
    /// tiers, delays capped at 7 days, 10 delivery attempts, 64 deliveries of a partition
    /// at once, no topic creation.
    pub fn new() -> Self {
        Self::default()
    }
    /// The topic requests are read from.
    pub fn request_topic(mut self, topic: impl Into<String>) -> Self {
        self.request_topic = topic.into();
        self
    }
    /// The consumer group (and part of the tier and dead-letter topic names).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }
    /// The ladder's tiers; none leaves the default ones.
    pub fn tiers(mut self, tiers: impl IntoIterator<Item = Duration>) -> Self {
        let tiers: Vec<Duration> = tiers.into_iter().collect();
        if !tiers.is_empty() {
            self.tiers = tiers;
        }
        self
    }
    /// The longest delay served; a request asking for more is delivered after this long.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }
    /// How often delivering a due record is tried before it goes to the dead-letter topic.
    pub fn delivery_attempts(mut self, attempts: u32) -> Self {
        self.delivery_attempts = attempts;
        self
    }
    /// How many records of one partition are delivered at once, never two of one key
    /// (records without a key count as one key); 1 delivers one at a time, in offset order.
    /// See [`ListenerBuilder::key_concurrency`](crate::ListenerBuilder::key_concurrency).
    pub fn key_concurrency(mut self, n: usize) -> Self {
        self.key_concurrency = n;
        self
    }
    /// Creates the missing tier and dead-letter topics at start.
    pub fn create_topics(mut self, spec: TopicSpec) -> Self {
        self.create = Some(spec);
        self
    }

    /// The policy: one attempt for the request, then `delivery_attempts`, on the ladder;
    /// deliveries that fail are tried again after 1 s, doubling.
    pub fn policy(&self) -> Result<RetryPolicy> {
        if self.delivery_attempts < 1 {
            return Err(crate::ConfigError::new("delivery_attempts", "must be at least 1 (a due record is delivered at least once)").into());
        }
        let mut b = RetryPolicy::builder()
            .attempts(self.delivery_attempts.saturating_add(1))
            .backoff(Backoff::exponential(Duration::from_secs(1), 2.0, self.max_delay.max(Duration::from_secs(1))))
            .topic_strategy(TopicStrategy::Ladder)
            .ladder_tiers(self.tiers.iter().copied());
        if let Some(spec) = self.create {
            b = b.auto_create_topics(spec);
        }
        b.build()
    }

    /// The service's listener; deliveries go through a producer made from `config`.
    pub fn listener(&self, config: &KafkaConfig) -> Result<Listener> {
        let policy = self.policy()?;
        let mut client = config.to_client_config();
        for (k, v) in [("acks", "all"), ("linger.ms", "5"), ("message.timeout.ms", "30000")] {
            if config.get(k).is_none() {
                client.set(k, v);
            }
        }
        let producer: FutureProducer = client.create().map_err(|e| crate::config::client_error("delivery producer", e))?;
        let deliver = Arc::new(Delivery {
            producer,
            source: self.request_topic.clone(),
            tiers: self.tiers.clone(),
            max_delay: self.max_delay,
            known: std::sync::Mutex::new(std::collections::HashSet::new()),
        });
        Listener::builder(format!("delay-service {}", self.request_topic))
            .topics([self.request_topic.clone()])
            .group(&self.group)
            .policy(policy)
            .key_concurrency(self.key_concurrency)
            .handler(handler::record(move |r: Record| {
                let deliver = Arc::clone(&deliver);
                async move { deliver.handle(r).await }
            }))
            .build()
    }
}

struct Delivery {
    producer: FutureProducer,
    source: String,
    tiers: Vec<Duration>,
    max_delay: Duration,
    /// Topics the cluster was seen to have: a producer holds records for a topic it does
    /// not know (waiting for it to appear), so a destination is looked up first, once.
    known: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Delivery {
    async fn handle(&self, r: Record) -> std::result::Result<(), HandlerError> {
        let request = delay_request::read(r.user_headers(), &self.source).map_err(HandlerError::fatal)?;
        let (topic, retry_time_ms, via) = match request.route() {
            Route::Exhausted(Some(dlq)) => (dlq, now_ms(), None),
            Route::Exhausted(None) => return Err(HandlerError::fatal(DeliveryError::NoDlq(request.max))),
            Route::Deliver => {
                let backoff = request.backoff(self.max_delay);
                match r.retry_headers() {
                    None if r.attempt() == 1 && !backoff.is_zero() => {
                        return Err(HandlerError::retry_after(DeliveryError::Scheduled(backoff), backoff));
                    }
                    None => (request.retry_topic, now_ms(), None),
                    // Due when it was first scheduled plus its delay, however often the
                    // delivery was tried since.
                    Some(h) => {
                        let via = h.hop.as_ref().map(|hop| ladder::describe_path(&self.tiers, &hop.path));
                        let ms = i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX);
                        (request.retry_topic, h.first_failure_ms.saturating_add(ms), via)
                    }
                }
            }
        };
        self.check_exists(&topic).await?;
        let mut headers = OwnedHeaders::new();
        for (name, value) in delay_request::delivered_headers(r.user_headers(), request.count, retry_time_ms, via.as_deref()) {
            headers = headers.insert(Header { key: &name, value: value.as_deref() });
        }
        let mut out = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
        if let Some(key) = r.key() {
            out = out.key(key);
        }
        if let Some(payload) = r.payload() {
            out = out.payload(payload);
        }
        match self.producer.send(out, Duration::from_secs(30)).await {
            Ok(_) => {
                tracing::debug!(to = %topic, count = request.count, key = ?r.key_str(), "delivered");
                Ok(())
            }
            Err((error, _)) => {
                // The sender named the topic: one that does not exist or refuses the record
                // is a bad request, not an outage.
                let unknown = matches!(
                    error,
                    KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition)
                );
                let failure = DeliveryError::Publish { topic, error };
                Err(if unknown || matches!(&failure, DeliveryError::Publish { error, .. } if crate::engine::is_permanent(error)) {
                    HandlerError::fatal(failure)
                } else {
                    HandlerError::retryable(failure)
                })
            }
        }
    }
}

impl Delivery {
    /// Whether `topic` exists, asked of the cluster the first time: a missing one is a bad
    /// request (fatal); a lookup that fails is an outage (retryable).
    async fn check_exists(&self, topic: &str) -> std::result::Result<(), HandlerError> {
        if self.known.lock().expect("known topics").contains(topic) {
            return Ok(());
        }
        let (producer, name) = (self.producer.clone(), topic.to_owned());
        // A blocking call: off the async threads (whatever the runtime's flavour).
        let md = tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&name), Duration::from_secs(10)))
            .await
            .map_err(|e| HandlerError::retryable(format!("metadata lookup of `{topic}` did not finish: {e}")))?
            .map_err(|e| HandlerError::retryable(DeliveryError::Publish { topic: topic.to_owned(), error: e }))?;
        match md.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                self.known.lock().expect("known topics").insert(topic.to_owned());
                Ok(())
            }
            _ => Err(HandlerError::fatal(DeliveryError::Publish {
                topic: topic.to_owned(),
                error: KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_a_ladder_listener_with_a_dead_letter_topic() {
        let svc = DelayService::new().tiers([Duration::from_secs(1), Duration::from_secs(10)]);
        let policy = svc.policy().unwrap();
        assert_eq!((policy.topic_strategy(), policy.attempts()), (TopicStrategy::Ladder, 11));
        assert_eq!(policy.backoff().max_delay(), Duration::from_secs(7 * 24 * 3_600));
        let bad = DelayService::new().tiers([Duration::from_secs(2), Duration::from_secs(1)]).policy().unwrap_err();
        assert!(bad.to_string().contains("ladder_tiers"), "{bad}");
        let never = DelayService::new().delivery_attempts(0).policy().unwrap_err();
        assert!(never.to_string().contains("delivery_attempts"), "{never}");
    }

    #[test]
    fn the_service_delivers_records_of_different_keys_at_once() {
        let config: KafkaConfig = [("bootstrap.servers", "localhost:9092")].into_iter().collect();
        let listener = DelayService::new().listener(&config).unwrap();
        assert_eq!(listener.key_concurrency(), 64);
        assert_eq!(DelayService::new().key_concurrency(1).listener(&config).unwrap().key_concurrency(), 1);
        let bad = DelayService::new().key_concurrency(0).listener(&config).unwrap_err();
        assert!(bad.to_string().contains("key_concurrency"), "{bad}");
    }
}
