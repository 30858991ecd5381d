//! Publishing to retry topics and DLTs: enqueued without waiting, acknowledged later, with
//! publish errors classified as transient (try again) or permanent (never retried).
//!
//! A partition keeps many publishes in flight (see [`owner`](super::owner)); the producer
//! may linger a few milliseconds to batch them, because nothing waits on a single record.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::headers::{self, HeaderFormat, RetryHeaders};
use crate::record::Record;

/// Publishes records with fresh framework headers.
pub(crate) struct Publisher {
    producer: FutureProducer,
    format: HeaderFormat,
}

/// How a publish failed.
#[derive(Debug)]
pub(crate) struct PublishError {
    pub(crate) error: KafkaError,
    /// It can never succeed (too large, invalid topic, not authorized): do not retry.
    pub(crate) permanent: bool,
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.error, if self.permanent { " (permanent)" } else { "" })
    }
}

/// Whether a publish error can never heal by trying again. Unknown topics count as
/// transient: a deleted retry topic or DLT may be created again.
pub(crate) fn is_permanent(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        MessageSizeTooLarge
            | InvalidMessageSize
            | InvalidMessage
            | InvalidTopic
            | TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | MessageBatchTooLarge
            | InvalidRecord
            | InvalidRequiredAcks
            | UnsupportedForMessageFormat
            | PolicyViolation
    )
}

impl Publisher {
    pub(crate) fn new(producer: FutureProducer, format: HeaderFormat) -> Self {
        Publisher { producer, format }
    }

    pub(crate) fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Enqueues `record` for `topic` with its framework headers replaced by `retry`; the
    /// returned future resolves when the broker acknowledged (or refused) it. A full local
    /// queue is waited out here; an immediate refusal (e.g. too large) is returned at once.
    pub(crate) async fn enqueue(&self, topic: &str, record: &Record, retry: &RetryHeaders) -> Result<DeliveryFuture, PublishError> {
        let mut out = OwnedHeaders::new_with_capacity(record.headers().count() + headers::MAX_FRAMEWORK_HEADERS);
        for (key, value) in record.user_headers() {
            out = out.insert(Header { key, value });
        }
        let out = retry.fold_encoded(self.format, out, |out, key, value| out.insert(Header { key, value: Some(value) }));
        let mut message = FutureRecord::<[u8], [u8]>::to(topic).headers(out);
        if let Some(k) = record.key() {
            message = message.key(k);
        }
        if let Some(p) = record.payload() {
            message = message.payload(p);
        }
        loop {
            match self.producer.send_result(message) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    message = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(PublishError { permanent: is_permanent(&error), error }),
            }
        }
    }

    /// Publishes once and awaits the acknowledgement.
    pub(crate) async fn publish(&self, topic: &str, record: &Record, retry: &RetryHeaders) -> Result<(), PublishError> {
        let delivery = self.enqueue(topic, record, retry).await?;
        acknowledged(delivery).await
    }
}

/// Awaits an enqueued publish.
pub(crate) async fn acknowledged(delivery: DeliveryFuture) -> Result<(), PublishError> {
    delivered(delivery).await.map_err(|(error, _)| error)
}

/// Awaits an enqueued publish; a refused one comes with the message the producer gave
/// back (`None`: the producer was dropped before it acknowledged, as at shutdown).
pub(crate) async fn delivered(delivery: DeliveryFuture) -> Result<(), (PublishError, Option<OwnedMessage>)> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, message))) => Err((PublishError { permanent: is_permanent(&error), error }, Some(message))),
        Err(_) => Err((PublishError { error: KafkaError::Canceled, permanent: false }, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let production = |c| KafkaError::MessageProduction(c);
        assert!(is_permanent(&production(RDKafkaErrorCode::MessageSizeTooLarge)));
        assert!(is_permanent(&production(RDKafkaErrorCode::TopicAuthorizationFailed)));
        assert!(is_permanent(&production(RDKafkaErrorCode::InvalidTopic)));
        assert!(!is_permanent(&production(RDKafkaErrorCode::MessageTimedOut)));
        assert!(!is_permanent(&production(RDKafkaErrorCode::UnknownTopicOrPartition)));
        assert!(!is_permanent(&production(RDKafkaErrorCode::NotEnoughReplicas)));
        assert!(!is_permanent(&KafkaError::Canceled));
    }
}
