//! [`Record`]: an owned view of one Kafka record, as handlers see it.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use rdkafka::message::{Headers, Message};

use crate::failure::HandlerError;
use crate::headers::{self, RetryHeaders};

/// One record with its coordinates, key, payload and headers.
///
/// Built once per consumed message and cheap to clone: clones share it. Key, payload and
/// header values sit in one buffer, which the records read together from a partition share
/// (one allocation per read, not per record): keeping a record keeps that buffer, so a
/// record kept for long should be copied out of.
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
    /// Key, payload and header values, one after the other: one allocation.
    data: Bytes,
    /// Header names, one after the other.
    names: String,
    key: Option<Span>,
    payload: Option<Span>,
    /// (name in `names`, value in `data`).
    headers: Vec<(Span, Option<Span>)>,
    attempt: u32,
    retry: Option<RetryHeaders>,
}

/// A range of `data` or `names`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

/// Key, payload and headers packed into [`Inner`]'s buffers.
struct Packed {
    data: Bytes,
    names: String,
    key: Option<Span>,
    payload: Option<Span>,
    headers: Vec<(Span, Option<Span>)>,
}

/// Packs in one pass over `headers` (`count` of them), at the end of `buf`, which is left
/// empty with its spare room (for the next record of the same read).
fn pack<'a>(
    buf: &mut BytesMut,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    count: usize,
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Packed {
    // Room for header values of a usual size; larger ones grow the buffer once or so.
    buf.reserve(key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len) + count * VALUE_BYTES_GUESS);
    let mut push = |bytes: &[u8]| {
        let start = buf.len();
        buf.put_slice(bytes);
        Span { start, end: buf.len() }
    };
    let key = key.map(&mut push);
    let payload = payload.map(&mut push);
    let mut names = String::with_capacity(count * NAME_BYTES_GUESS);
    let mut spans = Vec::with_capacity(count);
    for (name, value) in headers {
        let start = names.len();
        names.push_str(name);
        spans.push((Span { start, end: names.len() }, value.map(&mut push)));
    }
    Packed { data: buf.split().freeze(), names, key, payload, headers: spans }
}

/// Bytes reserved per header value and name before packing (the retry headers' average).
const VALUE_BYTES_GUESS: usize = 24;
const NAME_BYTES_GUESS: usize = 16;

/// What a queued record is taken to cost besides its bytes (bookkeeping, allocations).
const OVERHEAD_BYTES: usize = 160;

impl Record {
    fn from_parts(topic: Arc<str>, partition: i32, offset: i64, timestamp_ms: Option<i64>, packed: Packed) -> Self {
        Record {
            inner: Arc::new(Inner {
                topic,
                partition,
                offset,
                timestamp_ms,
                data: packed.data,
                names: packed.names,
                key: packed.key,
                payload: packed.payload,
                headers: packed.headers,
                attempt: 1,
                retry: None,
            }),
        }
    }

    /// A record for unit tests of handlers (attempt 1, no headers).
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        let topic: String = topic.into();
        Self::from_parts(topic.into(), partition, offset, None, pack(&mut BytesMut::new(), None, None, 0, std::iter::empty()))
    }

    /// Packs key, payload and headers again after one of them changed.
    fn repack(mut self, key: Option<&[u8]>, payload: Option<&[u8]>, extra: Option<(&str, Option<&[u8]>)>) -> Self {
        let packed = pack(&mut BytesMut::new(), key, payload, self.inner.headers.len() + 1, self.headers().chain(extra));
        let inner = Arc::make_mut(&mut self.inner);
        inner.data = packed.data;
        inner.names = packed.names;
        inner.key = packed.key;
        inner.payload = packed.payload;
        inner.headers = packed.headers;
        self
    }

    fn edit(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// Sets the payload.
    #[must_use]
    pub fn with_payload(self, payload: impl Into<Vec<u8>>) -> Self {
        let (payload, key) = (payload.into(), self.key().map(<[u8]>::to_vec));
        self.repack(key.as_deref(), Some(&payload), None)
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(self, key: impl Into<Vec<u8>>) -> Self {
        let (key, payload) = (key.into(), self.payload().map(<[u8]>::to_vec));
        self.repack(Some(&key), payload.as_deref(), None)
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(self, name: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        let (name, key, payload) = (name.into(), self.key().map(<[u8]>::to_vec), self.payload().map(<[u8]>::to_vec));
        self.repack(key.as_deref(), payload.as_deref(), Some((&name, value.as_deref())))
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
        let mut record = Self::copy_of(m, Arc::from(m.topic()), &mut BytesMut::new());
        let decoded = record.decode_retry_headers();
        let retry = decoded.ok().flatten();
        record.set_attempt(retry.as_ref().map_or(1, |h| h.attempt), retry);
        record
    }

    /// The one copy of a client message: key, payload and header values at the end of
    /// `buf` (shared with the other records of the read it was copied into), header names
    /// apart; `topic` is shared with the other records of the partition. Attempt 1, headers
    /// not decoded yet.
    pub(crate) fn copy_of<M: Message>(m: &M, topic: Arc<str>, buf: &mut BytesMut) -> Self {
        let packed = match m.headers() {
            Some(hs) => pack(buf, m.key(), m.payload(), hs.count(), hs.iter().map(|h| (h.key, h.value))),
            None => pack(buf, m.key(), m.payload(), 0, std::iter::empty()),
        };
        Self::from_parts(topic, m.partition(), m.offset(), m.timestamp().to_millis(), packed)
    }

    /// The record with its bytes in a buffer of its own, so keeping it keeps no other
    /// record's bytes (for a record held for long).
    pub(crate) fn unshared(mut self) -> Self {
        let inner = self.edit();
        inner.data = Bytes::copy_from_slice(&inner.data);
        self
    }

    /// Reads the framework headers (`Ok(None)`: there are none).
    pub(crate) fn decode_retry_headers(&self) -> Result<Option<RetryHeaders>, headers::HeaderError> {
        if !self.headers().any(|(n, _)| headers::is_framework_header(n)) {
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
        OVERHEAD_BYTES + i.data.len() + i.names.len() + i.headers.len() * std::mem::size_of::<(Span, Option<Span>)>()
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
        self.inner.key.map(|s| &self.inner.data[s.start..s.end])
    }
    /// The key as UTF-8 text, if it is.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }
    /// The payload (`None` for a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        self.inner.payload.map(|s| &self.inner.data[s.start..s.end])
    }
    /// All headers, framework headers included, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        let i = &*self.inner;
        i.headers.iter().map(move |(n, v)| (&i.names[n.start..n.end], v.map(|v| &i.data[v.start..v.end])))
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
        self.inner.retry.as_ref().map_or(&*self.inner.topic, |r| r.original_topic.as_str())
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

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    use super::*;

    fn message(offset: i64, key: &[u8], payload: &[u8], header: Option<(&str, &[u8])>) -> OwnedMessage {
        let headers = header.map(|(key, value)| OwnedHeaders::new().insert(Header { key, value: Some(value) }));
        OwnedMessage::new(Some(payload.to_vec()), Some(key.to_vec()), "t".into(), Timestamp::CreateTime(7), 3, offset, headers)
    }

    #[test]
    fn records_copied_into_one_chunk_keep_their_own_bytes() {
        let topic: Arc<str> = Arc::from("t");
        let mut chunk = BytesMut::with_capacity(64);
        let a = Record::copy_of(&message(1, b"ka", b"pa", Some(("h", b"va"))), Arc::clone(&topic), &mut chunk);
        let b = Record::copy_of(&message(2, b"kb", &[b'x'; 100], None), Arc::clone(&topic), &mut chunk);
        assert!(chunk.is_empty(), "the chunk keeps only its spare room");
        assert_eq!((a.offset(), a.key(), a.payload(), a.header("h")), (1, Some(&b"ka"[..]), Some(&b"pa"[..]), Some(&b"va"[..])));
        assert_eq!((b.offset(), b.key(), b.payload().map(<[u8]>::len), b.headers().count()), (2, Some(&b"kb"[..]), Some(100), 0));
        assert_eq!((a.partition(), a.timestamp_ms(), a.topic()), (3, Some(7), "t"));
        let alone = a.clone().unshared();
        assert_eq!(alone, a);
        drop(b);
        assert_eq!(alone.payload(), Some(&b"pa"[..]));
    }
}
