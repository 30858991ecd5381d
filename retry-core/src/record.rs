//! [`Record`]: an owned view of one Kafka record, as handlers see it.

use rdkafka::message::{Headers, Message};

use crate::handler::HandlerError;
use crate::headers::{self, RetryHeaders};

/// One record with its coordinates, key, payload and headers.
///
/// On a retry topic, [`attempt`](Record::attempt) says which attempt this is and
/// [`original_topic`](Record::original_topic) & co. point at the record as first produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    attempt: u32,
    retry: Option<RetryHeaders>,
}

impl Record {
    /// A record for unit tests of handlers (attempt 1, no headers).
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        Record {
            topic: topic.into(),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            payload: None,
            headers: Vec::new(),
            attempt: 1,
            retry: None,
        }
    }

    /// Sets the payload.
    #[must_use]
    pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value));
        self
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn with_timestamp_ms(mut self, ts: i64) -> Self {
        self.timestamp_ms = Some(ts);
        self
    }

    /// Copies a client message (key, payload, headers, coordinates); readable retry
    /// headers set [`attempt`](Record::attempt) and [`retry_headers`](Record::retry_headers).
    pub fn from_message<M: Message>(m: &M) -> Self {
        Self::from_message_checked(m).0
    }

    /// [`from_message`](Record::from_message), also returning what reading the retry
    /// headers gave (they are decoded once), so that the runtime can act on an error.
    pub(crate) fn from_message_checked<M: Message>(m: &M) -> (Self, Result<Option<RetryHeaders>, headers::HeaderError>) {
        let headers: Vec<(String, Option<Vec<u8>>)> =
            m.headers().map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect()).unwrap_or_default();
        let mut record = Record {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
            attempt: 1,
            retry: None,
        };
        let decoded = RetryHeaders::decode(record.headers());
        let retry = decoded.as_ref().ok().cloned().flatten();
        record.set_retry(retry.as_ref().map_or(1, |h| h.attempt), retry);
        (record, decoded)
    }

    pub(crate) fn set_retry(&mut self, attempt: u32, retry: Option<RetryHeaders>) {
        self.attempt = attempt;
        self.retry = retry;
    }

    /// On a source topic every record is a first attempt, whatever headers it carries
    /// (e.g. a record replayed from a DLT); the headers stay readable.
    pub(crate) fn set_first_attempt(&mut self) {
        self.attempt = 1;
    }

    /// The topic the record was read from (a retry topic for retries).
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// Its partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }
    /// Its offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }
    /// Its timestamp, ms since the epoch.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
    /// The key.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    /// The key as UTF-8 text, if it is.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }
    /// The payload (`None` for a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }
    /// All headers, framework headers included, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
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
        self.attempt
    }
    /// The decoded retry headers, on a retry or DLT record.
    pub fn retry_headers(&self) -> Option<&RetryHeaders> {
        self.retry.as_ref()
    }
    /// The topic the record was first produced to.
    pub fn original_topic(&self) -> &str {
        self.retry.as_ref().map_or(&self.topic, |r| &r.original_topic)
    }
    /// The timestamp of the record as first produced: use it for latest-wins updates, as
    /// retries reorder records.
    pub fn original_timestamp_ms(&self) -> Option<i64> {
        match &self.retry {
            Some(r) => r.original_timestamp_ms,
            None => self.timestamp_ms,
        }
    }

    /// Deserializes the payload as JSON; a tombstone or bad JSON is a
    /// [`decode`](HandlerError::decode) error, which goes straight to the DLT.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        let payload = self.payload().ok_or_else(|| HandlerError::decode("record has no payload (tombstone)"))?;
        serde_json::from_slice(payload).map_err(|e| HandlerError::decode(format!("payload is not the expected JSON: {e}")))
    }
}
