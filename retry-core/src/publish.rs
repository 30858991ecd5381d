//! Republishing: records to retry topics and DLTs, acknowledged before the source offset
//! is stored.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// One record to publish.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Vec<u8>>)],
}

/// Publishes and awaits the broker's acknowledgement.
pub(crate) struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    pub(crate) fn new(producer: FutureProducer) -> Self {
        Publisher { producer }
    }

    pub(crate) fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Publishes once; `Ok` only after the broker acknowledged.
    pub(crate) async fn publish(&self, out: Outgoing<'_>) -> Result<(i32, i64), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
        for (key, value) in out.headers {
            headers = headers.insert(Header { key, value: value.as_deref() });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(out.topic).headers(headers);
        if let Some(k) = out.key {
            record = record.key(k);
        }
        if let Some(p) = out.payload {
            record = record.payload(p);
        }
        match self.producer.send(record, Duration::from_secs(5)).await {
            Ok(d) => Ok((d.partition, d.offset)),
            Err((e, _)) => Err(e),
        }
    }

    /// Publishes until acknowledged (backoff 100 ms doubling to 5 s), logging each failure.
    /// `None` when `cancel` fires first: nothing was acknowledged, the caller must not
    /// store the source offset.
    pub(crate) async fn publish_until_acked(&self, out: Outgoing<'_>, cancel: &CancellationToken) -> Option<(i32, i64)> {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.publish(out).await {
                Ok(at) => return Some(at),
                Err(e) => {
                    tracing::warn!(topic = out.topic, error = %e, retry_in = ?pause, "publish failed; trying again");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => return None,
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}
