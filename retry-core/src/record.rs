//! [`Record`]: an owned view of one Kafka record, as handlers see it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rdkafka::message::{Headers, Message};

use crate::failure::HandlerError;
use crate::headers::{self, RetryHeaders};

/// One record with its coordinates, key, payload and headers.
///
/// Built once per consumed message (key and payload share one buffer) and cheap to clone:
/// clones share the bytes.
///
/// On a retry topic, [`attempt`](Record::attempt) says which attempt this is and
/// [`original_topic`](Record::original_topic) & co. point at the record as first produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone, PartialEq)]
struct Inner {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Bytes>,
    payload: Option<Bytes>,
    headers: Vec<(String, Option<Bytes>)>,
    attempt: u32,
    retry: Option<RetryHeaders>,
}

/// What a queued record is taken to cost besides its bytes (bookkeeping, allocations).
const OVERHEAD_BYTES: usize = 160;

impl Record {
    /// A record for unit tests of handlers (attempt 1, no headers).
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        let topic: String = topic.into();
        Record {
            inner: Arc::new(Inner {
                topic: topic.into(),
                partition,
                offset,
                timestamp_ms: None,
                key: None,
                payload: None,
                headers: Vec::new(),
                attempt: 1,
                retry: None,
            }),
        }
    }

    fn edit(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// Sets the payload.
    #[must_use]
    pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.edit().payload = Some(Bytes::from(payload.into()));
        self
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.edit().key = Some(Bytes::from(key.into()));
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        self.edit().headers.push((name.into(), value.map(Bytes::from)));
        self
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn with_timestamp_ms(mut self, ts: i64) -> Self {
        self.edit().timestamp_ms = Some(ts);
        self
    }

    /// Copies a client message (key, payload, headers, coordinates); readable retry
    /// headers set [`attempt`](Record::attempt) and [`retry_headers`](Record::retry_headers).
    pub fn from_message<M: Message>(m: &M) -> Self {
        let mut record = Self::copy_of(m, Arc::from(m.topic()));
        let decoded = record.decode_retry_headers();
        let retry = decoded.ok().flatten();
        record.set_attempt(retry.as_ref().map_or(1, |h| h.attempt), retry);
        record
    }

    /// The one copy of a client message: key and payload in one buffer, headers beside;
    /// `topic` is shared with the other records of the partition. Attempt 1, headers not
    /// decoded yet.
    pub(crate) fn copy_of<M: Message>(m: &M, topic: Arc<str>) -> Self {
        let (key, payload) = (m.key(), m.payload());
        let key_len = key.map_or(0, <[u8]>::len);
        let mut buffer = BytesMut::with_capacity(key_len + payload.map_or(0, <[u8]>::len));
        buffer.extend_from_slice(key.unwrap_or_default());
        buffer.extend_from_slice(payload.unwrap_or_default());
        let mut payload_bytes = buffer.freeze();
        let key_bytes = payload_bytes.split_to(key_len);
        let headers =
            m.headers().map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(Bytes::copy_from_slice))).collect()).unwrap_or_default();
        Record {
            inner: Arc::new(Inner {
                topic,
                partition: m.partition(),
                offset: m.offset(),
                timestamp_ms: m.timestamp().to_millis(),
                key: key.map(|_| key_bytes),
                payload: payload.map(|_| payload_bytes),
                headers,
                attempt: 1,
                retry: None,
            }),
        }
    }

    /// Reads the framework headers (`Ok(None)`: there are none).
    pub(crate) fn decode_retry_headers(&self) -> Result<Option<RetryHeaders>, headers::HeaderError> {
        if !self.inner.headers.iter().any(|(n, _)| headers::is_framework_header(n)) {
            return Ok(None);
        }
        RetryHeaders::decode(self.headers())
    }

    /// Sets which attempt this is and the retry headers the handler sees.
    pub(crate) fn set_attempt(&mut self, attempt: u32, retry: Option<RetryHeaders>) {
        let inner = self.edit();
        inner.attempt = attempt;
        inner.retry = retry;
    }

    /// What the record costs while queued: its bytes plus bookkeeping.
    pub(crate) fn queued_bytes(&self) -> usize {
        let i = &self.inner;
        OVERHEAD_BYTES
            + i.key.as_ref().map_or(0, Bytes::len)
            + i.payload.as_ref().map_or(0, Bytes::len)
            + i.headers.iter().map(|(n, v)| n.len() + v.as_ref().map_or(0, Bytes::len) + 32).sum::<usize>()
    }

    /// The topic the record was read from (a retry topic for retries).
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }
    /// Its partition.
    pub fn partition(&self) -> i32 {
        self.inner.partition
    }
    /// Its offset.
    pub fn offset(&self) -> i64 {
        self.inner.offset
    }
    /// Its timestamp, ms since the epoch.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.inner.timestamp_ms
    }
    /// The key.
    pub fn key(&self) -> Option<&[u8]> {
        self.inner.key.as_deref()
    }
    /// The key as UTF-8 text, if it is.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }
    /// The payload (`None` for a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        self.inner.payload.as_deref()
    }
    /// All headers, framework headers included, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.inner.headers.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }
    /// The headers the producer set (framework headers left out).
    pub fn user_headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.headers().filter(|(n, _)| !headers::is_framework_header(n))
    }
    /// The last value of header `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().filter(|(n, _)| *n == name).last().and_then(|(_, v)| v)
    }
    /// Which attempt this is: 1 on the source topic, 2 for the first retry, …
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }
    /// The decoded retry headers, on a retry or DLT record.
    pub fn retry_headers(&self) -> Option<&RetryHeaders> {
        self.inner.retry.as_ref()
    }
    /// The topic the record was first produced to.
    pub fn original_topic(&self) -> &str {
        self.inner.retry.as_ref().map_or(&self.inner.topic, |r| &r.original_topic)
    }
    /// The timestamp of the record as first produced: use it for latest-wins updates, as
    /// retries reorder records.
    pub fn original_timestamp_ms(&self) -> Option<i64> {
        match &self.inner.retry {
            Some(r) => r.original_timestamp_ms,
            None => self.inner.timestamp_ms,
        }
    }

    /// Deserializes the payload as JSON; a tombstone or bad JSON is a
    /// [`decode`](HandlerError::decode) error, which goes straight to the DLT.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        let payload = self.payload().ok_or_else(|| HandlerError::decode("record has no payload (tombstone)"))?;
        serde_json::from_slice(payload).map_err(|e| HandlerError::decode(format!("payload is not the expected JSON: {e}")))
    }
}
