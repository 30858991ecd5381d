//! [`Record`]: an owned view of one Kafka record, as handlers see it.

use std::sync::Arc;

use rdkafka::message::{BorrowedHeaders, Headers, Message, OwnedHeaders, OwnedMessage};

use crate::failure::HandlerError;
use crate::headers::{self, RetryHeaders};

/// One record with its coordinates, key, payload and headers.
///
/// Copied once from the consumed message and cheap to clone: clones share it. The records
/// read together from a partition share one allocation for their bytes and one for their
/// coordinates, so keeping a record keeps the others of its read: a record kept for long
/// should be copied out of.
///
/// On a retry topic, [`attempt`](Record::attempt) says which attempt this is and
/// [`original_topic`](Record::original_topic) & co. point at the record as first produced.
#[derive(Clone)]
pub struct Record {
    copies: Arc<Copies>,
    /// Which of `copies.records` this is.
    index: usize,
    attempt: u32,
    retry: Option<Arc<RetryHeaders>>,
}

/// Records copied together: their keys, payloads and header values one after the other in
/// `data`, their header names in `names`.
#[derive(Debug, Clone)]
struct Copies {
    topic: Arc<str>,
    data: Vec<u8>,
    names: String,
    /// (name in `names`, value in `data`) of every record, record after record.
    headers: Vec<(Span, Option<Span>)>,
    records: Vec<Meta>,
}

/// One record's coordinates and where its parts are.
#[derive(Debug, Clone, Copy)]
struct Meta {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Span>,
    payload: Option<Span>,
    /// Its range of `Copies::headers`.
    headers: Span,
    /// Its bytes in `data` and `names`.
    bytes: usize,
}

/// A range of `data`, `names` or `headers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

/// Bytes reserved per record for its header values when nothing is known yet (grown as
/// needed).
const HEADER_BYTES_GUESS: usize = 32;

/// What the headers of a partition's last read took per record, so the next read's copies
/// are sized once: the records of a retry topic carry the retry headers (two, eleven in
/// format 1) and the user's, those of a source topic usually none, and growing the buffers
/// of a whole read record by record costs copies and reallocations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReadShape {
    records: usize,
    /// Header value bytes, in `data`.
    values: usize,
    /// Header name bytes, in `names`.
    names: usize,
    headers: usize,
}

impl ReadShape {
    /// Room for `records` like those of the last read: (value bytes, name bytes, headers).
    fn room_for(&self, records: usize) -> (usize, usize, usize) {
        match self.records {
            0 => (records * HEADER_BYTES_GUESS, 0, 0),
            n => {
                let per = |total: usize| total.div_ceil(n) * records;
                (per(self.values), per(self.names), per(self.headers))
            }
        }
    }
}

/// A client message records are copied from, its header names read as bytes.
///
/// The protocol says header names are UTF-8, but librdkafka writes whatever bytes a
/// producer gives it and brokers pass them on, and rdkafka's [`Headers`] panics on a name
/// that is not UTF-8. A copy reads such a name as Java's client does: each invalid byte
/// sequence becomes U+FFFD, with a warning (see [`Copier`]).
pub(crate) trait ClientMessage: Message {
    /// Each header in order: its name's bytes and its value.
    fn header_bytes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)>;
}

/// rdkafka's own list of headers, its names read as bytes (through librdkafka, in
/// [`engine::batch`](crate::engine)), not through rdkafka's [`Headers`], which panics on a
/// name that is not UTF-8.
pub(crate) trait HeaderBytes {
    /// Each header in order: its name's bytes and its value.
    fn entries(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)>;
}

/// The headers of `m`, names as bytes: read as [`HeaderBytes`] when they are rdkafka's own
/// ([`BorrowedHeaders`], [`OwnedHeaders`]); through rdkafka's [`Headers`] for a header type
/// of someone else's (which must read its names as it can).
fn message_headers<M: Message>(m: &M) -> impl Iterator<Item = (&[u8], Option<&[u8]>)>
where
    M::Headers: 'static,
{
    let headers = m.headers();
    let rdkafka_own = headers.and_then(|hs| {
        let any: &dyn std::any::Any = hs;
        any.downcast_ref::<BorrowedHeaders>().or_else(|| any.downcast_ref::<OwnedHeaders>().map(OwnedHeaders::as_borrowed))
    });
    let others = headers.filter(|_| rdkafka_own.is_none());
    rdkafka_own
        .into_iter()
        .flat_map(HeaderBytes::entries)
        .chain(others.into_iter().flat_map(|hs| hs.iter()).map(|h| (h.key.as_bytes(), h.value)))
}

/// A message given back by the producer, or one a caller detached.
impl ClientMessage for OwnedMessage {
    fn header_bytes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        message_headers(self)
    }
}

/// Copies records into one shared allocation, then hands them out.
#[derive(Debug)]
pub(crate) struct Copier {
    copies: Copies,
}

impl Copier {
    /// A copier for records of `topic`, with room for `bytes` of theirs and `records`.
    fn with_capacity(topic: Arc<str>, bytes: usize, records: usize) -> Self {
        Self::with_room(topic, (bytes, 0, 0), records)
    }

    /// A copier with room for `(data bytes, name bytes, headers)` and `records`.
    fn with_room(topic: Arc<str>, (data, names, headers): (usize, usize, usize), records: usize) -> Self {
        let copies = Copies {
            topic,
            data: Vec::with_capacity(data),
            names: String::with_capacity(names),
            headers: Vec::with_capacity(headers),
            records: Vec::with_capacity(records),
        };
        Copier { copies }
    }

    /// Copies client messages of `topic` (key, payload, headers, coordinates) into one
    /// shared allocation, sized once for their keys and payloads and for headers like those
    /// of the partition's last read (`shape`, updated to this one's; librdkafka parses
    /// headers only when asked for); the records in order, attempt 1, headers not decoded.
    pub(crate) fn copy_all<M: ClientMessage>(topic: Arc<str>, messages: &[M], shape: &mut ReadShape) -> Vec<Record> {
        Self::copy_read::<M, M>(topic, messages, &[], shape)
    }

    /// [`copy_all`](Self::copy_all) for a read whose messages came in two kinds: `first`,
    /// then `rest`.
    pub(crate) fn copy_read<M: ClientMessage, N: ClientMessage>(
        topic: Arc<str>,
        first: &[M],
        rest: &[N],
        shape: &mut ReadShape,
    ) -> Vec<Record> {
        let parts_of = |key: Option<&[u8]>, payload: Option<&[u8]>| key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len);
        let parts = first.iter().map(|m| parts_of(m.key(), m.payload())).sum::<usize>()
            + rest.iter().map(|m| parts_of(m.key(), m.payload())).sum::<usize>();
        let records = first.len() + rest.len();
        let (values, names, headers) = shape.room_for(records);
        let mut copier = Self::with_room(topic, (parts + values, names, headers), records);
        for m in first {
            copier.copy(m, m.header_bytes());
        }
        for m in rest {
            copier.copy(m, m.header_bytes());
        }
        let c = &copier.copies;
        *shape = ReadShape { records, values: c.data.len() - parts, names: c.names.len(), headers: c.headers.len() };
        copier.finish()
    }

    /// Copies one client message (key, payload, coordinates) with its `headers`.
    fn copy<'a, M: Message>(&mut self, m: &M, headers: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>) {
        let (meta, unreadable) = self.pack(m.key(), m.payload(), headers);
        if unreadable > 0 {
            tracing::warn!(
                topic = %self.copies.topic,
                partition = m.partition(),
                offset = m.offset(),
                names = unreadable,
                "header name is not UTF-8 as the protocol asks: read with U+FFFD for its invalid bytes (as Java's client reads it)"
            );
        }
        self.copies.records.push(Meta { partition: m.partition(), offset: m.offset(), timestamp_ms: m.timestamp().to_millis(), ..meta });
    }

    /// Packs in one pass over `headers`; the coordinates are left for the caller to set.
    /// Also returns how many header names were not UTF-8 (packed lossily).
    fn pack<'a>(
        &mut self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> (Meta, usize) {
        let c = &mut self.copies;
        let (data_before, names_before, first_header) = (c.data.len(), c.names.len(), c.headers.len());
        let data = &mut c.data;
        let mut push = |bytes: &[u8]| {
            let start = data.len();
            data.extend_from_slice(bytes);
            Span { start, end: data.len() }
        };
        let key = key.map(&mut push);
        let payload = payload.map(&mut push);
        let mut unreadable = 0;
        for (name, value) in headers {
            let start = c.names.len();
            match std::str::from_utf8(name) {
                Ok(name) => c.names.push_str(name),
                Err(_) => {
                    c.names.push_str(&String::from_utf8_lossy(name));
                    unreadable += 1;
                }
            }
            c.headers.push((Span { start, end: c.names.len() }, value.map(&mut push)));
        }
        let meta = Meta {
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key,
            payload,
            headers: Span { start: first_header, end: c.headers.len() },
            bytes: c.data.len() - data_before + c.names.len() - names_before,
        };
        (meta, unreadable)
    }

    /// The records copied, in order (attempt 1, headers not decoded yet).
    fn finish(self) -> Vec<Record> {
        let copies = Arc::new(self.copies);
        (0..copies.records.len()).map(|index| Record { copies: Arc::clone(&copies), index, attempt: 1, retry: None }).collect()
    }

    /// The one record copied.
    fn only(self) -> Record {
        debug_assert_eq!(self.copies.records.len(), 1);
        Record { copies: Arc::new(self.copies), index: 0, attempt: 1, retry: None }
    }
}

/// Where a [`Record`] was read (see [`Record::read_at`]).
#[derive(Debug, Clone)]
pub(crate) struct ReadAt {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
}

/// What a queued record is taken to cost besides its bytes (bookkeeping, allocations).
const OVERHEAD_BYTES: usize = 160;

impl Record {
    fn meta(&self) -> &Meta {
        &self.copies.records[self.index]
    }

    /// A record for unit tests of handlers (attempt 1, no headers).
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        let topic: String = topic.into();
        let mut copier = Copier::with_capacity(topic.into(), 0, 1);
        let (meta, _) = copier.pack(None, None, std::iter::empty());
        copier.copies.records.push(Meta { partition, offset, ..meta });
        copier.only()
    }

    /// This record alone, packed again with the key, payload and headers given
    /// (coordinates, attempt and retry headers kept).
    fn repack(&self, key: Option<&[u8]>, payload: Option<&[u8]>, extra: Option<(&str, Option<&[u8]>)>) -> Self {
        let old = *self.meta();
        // What goes into `data`: the new key and payload, and every header's value.
        let values: usize = self.headers().chain(extra).map(|(_, v)| v.map_or(0, <[u8]>::len)).sum();
        let bytes = key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len) + values;
        let mut copier = Copier::with_capacity(Arc::clone(&self.copies.topic), bytes, 1);
        let (meta, _) = copier.pack(key, payload, self.headers().chain(extra).map(|(n, v)| (n.as_bytes(), v)));
        copier.copies.records.push(Meta { partition: old.partition, offset: old.offset, timestamp_ms: old.timestamp_ms, ..meta });
        Record { attempt: self.attempt, retry: self.retry.clone(), ..copier.only() }
    }

    /// Sets the payload.
    #[must_use]
    pub fn with_payload(self, payload: impl Into<Vec<u8>>) -> Self {
        self.repack(self.key(), Some(&payload.into()), None)
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(self, key: impl Into<Vec<u8>>) -> Self {
        self.repack(Some(&key.into()), self.payload(), None)
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(self, name: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        self.repack(self.key(), self.payload(), Some((&name.into(), value.as_deref())))
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn with_timestamp_ms(self, ts: i64) -> Self {
        let mut record = self.unshared();
        Arc::make_mut(&mut record.copies).records[0].timestamp_ms = Some(ts);
        record
    }

    /// Copies a client message (key, payload, headers, coordinates); readable retry
    /// headers set [`attempt`](Record::attempt) and [`retry_headers`](Record::retry_headers).
    ///
    /// A header name that is not UTF-8 (the protocol asks for UTF-8; librdkafka passes on
    /// any bytes) is read as Java's client reads it, U+FFFD for its invalid bytes, with a
    /// warning, for rdkafka's own messages (`BorrowedMessage`, `OwnedMessage`); a `Message`
    /// type of your own has its headers read through rdkafka's `Headers` trait, as it
    /// implements it.
    pub fn from_message<M: Message>(m: &M) -> Self
    where
        M::Headers: 'static,
    {
        let mut copier =
            Copier::with_capacity(Arc::from(m.topic()), m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len), 1);
        copier.copy(m, message_headers(m));
        copier.only().with_retry_headers_read()
    }

    /// Copies a message an rdkafka consumer read: [`from_message`](Self::from_message) for
    /// rdkafka's `BorrowedMessage`.
    pub fn from_consumed(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        Self::from_message(m)
    }

    /// This record with its attempt and retry headers set from its headers, if readable.
    fn with_retry_headers_read(mut self) -> Self {
        let retry = self.decode_retry_headers().ok().flatten();
        self.set_attempt(retry.as_ref().map_or(1, |h| h.attempt), retry.map(Arc::new));
        self
    }

    /// Copies a client message alone (attempt 1, headers not decoded yet); `topic` is shared
    /// with the other records of the partition.
    pub(crate) fn copy_alone<M: ClientMessage>(m: &M, topic: Arc<str>) -> Self {
        let mut records = Copier::copy_all(topic, std::slice::from_ref(m), &mut ReadShape::default());
        records.pop().expect("one message, one record")
    }

    /// The record copied alone, so keeping it keeps no other record's bytes (for a record
    /// held for long).
    pub(crate) fn unshared(self) -> Self {
        match self.copies.records.len() {
            1 => self,
            _ => self.repack(self.key(), self.payload(), None),
        }
    }

    /// Where the record was read: all a publish keeps of it once the producer holds its
    /// own copy.
    pub(crate) fn read_at(&self) -> ReadAt {
        let m = self.meta();
        ReadAt { topic: Arc::clone(&self.copies.topic), partition: m.partition, offset: m.offset, timestamp_ms: m.timestamp_ms }
    }

    /// The record read at `at`, with the key, payload and headers of `m`: a message the
    /// producer gave back with a refused publish (headers not decoded: attempt 1).
    pub(crate) fn given_back<M: ClientMessage>(at: ReadAt, m: &M) -> Self {
        let mut record = Self::copy_alone(m, at.topic);
        let meta = &mut Arc::make_mut(&mut record.copies).records[0];
        (meta.partition, meta.offset, meta.timestamp_ms) = (at.partition, at.offset, at.timestamp_ms);
        record
    }

    /// Reads the framework headers (`Ok(None)`: there are none).
    pub(crate) fn decode_retry_headers(&self) -> Result<Option<RetryHeaders>, headers::HeaderError> {
        if !self.headers().any(|(n, _)| headers::is_framework_header(n)) {
            return Ok(None);
        }
        RetryHeaders::decode(self.headers())
    }

    /// Sets which attempt this is and the retry headers the handler sees.
    pub(crate) fn set_attempt(&mut self, attempt: u32, retry: Option<Arc<RetryHeaders>>) {
        self.attempt = attempt;
        self.retry = retry;
    }

    /// What the record costs while queued: its bytes plus bookkeeping.
    pub(crate) fn queued_bytes(&self) -> usize {
        let m = self.meta();
        OVERHEAD_BYTES + m.bytes + (m.headers.end - m.headers.start) * std::mem::size_of::<(Span, Option<Span>)>()
    }

    /// The topic the record was read from (a retry topic for retries).
    pub fn topic(&self) -> &str {
        &self.copies.topic
    }
    /// Its partition.
    pub fn partition(&self) -> i32 {
        self.meta().partition
    }
    /// Its offset.
    pub fn offset(&self) -> i64 {
        self.meta().offset
    }
    /// Its timestamp, ms since the epoch.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.meta().timestamp_ms
    }
    /// The key.
    pub fn key(&self) -> Option<&[u8]> {
        self.meta().key.map(|s| &self.copies.data[s.start..s.end])
    }
    /// The key as UTF-8 text, if it is.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }
    /// The payload (`None` for a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        self.meta().payload.map(|s| &self.copies.data[s.start..s.end])
    }
    /// All headers, framework headers included, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        let (c, range) = (&*self.copies, self.meta().headers);
        c.headers[range.start..range.end].iter().map(move |(n, v)| (&c.names[n.start..n.end], v.map(|v| &c.data[v.start..v.end])))
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
        self.retry.as_deref()
    }
    /// The topic the record was first produced to.
    pub fn original_topic(&self) -> &str {
        self.retry.as_deref().map_or(self.topic(), |r| r.original_topic.as_str())
    }
    /// The timestamp of the record as first produced: use it for latest-wins updates, as
    /// retries reorder records.
    pub fn original_timestamp_ms(&self) -> Option<i64> {
        match self.retry.as_deref() {
            Some(r) => r.original_timestamp_ms,
            None => self.meta().timestamp_ms,
        }
    }

    /// Deserializes the payload as JSON; a tombstone or bad JSON is a
    /// [`decode`](HandlerError::decode) error, which goes straight to the DLT.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        let payload = self.payload().ok_or_else(|| HandlerError::decode("record has no payload (tombstone)"))?;
        serde_json::from_slice(payload).map_err(|e| HandlerError::decode(format!("payload is not the expected JSON: {e}")))
    }
}

impl PartialEq for Record {
    /// Records are equal when everything a handler can see of them is.
    fn eq(&self, other: &Self) -> bool {
        self.topic() == other.topic()
            && (self.partition(), self.offset(), self.timestamp_ms(), self.attempt)
                == (other.partition(), other.offset(), other.timestamp_ms(), other.attempt)
            && (self.key(), self.payload()) == (other.key(), other.payload())
            && self.headers().eq(other.headers())
            && self.retry == other.retry
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("timestamp_ms", &self.timestamp_ms())
            .field("key", &self.key().map(String::from_utf8_lossy))
            .field("payload_bytes", &self.payload().map(<[u8]>::len))
            .field("headers", &self.headers().map(|(n, _)| n).collect::<Vec<_>>())
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
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

    fn two(second_header: Option<(&str, &[u8])>, second_payload: &[u8]) -> (Record, Record) {
        let messages = [message(1, b"ka", b"pa", Some(("h", b"va"))), message(2, b"kb", second_payload, second_header)];
        let mut records = Copier::copy_all(Arc::from("t"), &messages, &mut ReadShape::default()).into_iter();
        (records.next().unwrap(), records.next().unwrap())
    }

    #[test]
    fn records_copied_together_keep_their_own_parts() {
        let (a, b) = two(None, &[b'x'; 100]);
        assert_eq!((a.offset(), a.key(), a.payload(), a.header("h")), (1, Some(&b"ka"[..]), Some(&b"pa"[..]), Some(&b"va"[..])));
        assert_eq!((b.offset(), b.key(), b.payload().map(<[u8]>::len), b.headers().count()), (2, Some(&b"kb"[..]), Some(100), 0));
        assert_eq!((a.partition(), a.timestamp_ms(), a.topic()), (3, Some(7), "t"));
        let header_entry = std::mem::size_of::<(Span, Option<Span>)>();
        assert_eq!((a.queued_bytes(), b.queued_bytes()), (OVERHEAD_BYTES + 2 + 2 + 1 + 2 + header_entry, OVERHEAD_BYTES + 2 + 100));
        let alone = a.clone().unshared();
        assert_eq!(alone, a);
        assert_eq!(alone.copies.records.len(), 1, "copied out of the shared read");
        assert_eq!(alone.copies.data.capacity(), 2 + 2 + 2, "sized for its own key, payload and header value");
        drop((a, b));
        assert_eq!(alone.payload(), Some(&b"pa"[..]));
    }

    #[test]
    fn a_message_given_back_is_the_record_where_it_was_read() {
        let (a, _) = two(None, b"pb");
        // The producer gives back what it was asked to publish, addressed to the retry topic.
        let back = OwnedMessage::new(
            Some(b"pa".to_vec()),
            Some(b"ka".to_vec()),
            "t-retry".into(),
            Timestamp::NotAvailable,
            0,
            -1,
            Some(OwnedHeaders::new().insert(Header { key: "h", value: Some(b"va") })),
        );
        let again = Record::given_back(a.read_at(), &back);
        assert_eq!(again, a);
        assert_eq!((again.topic(), again.partition(), again.offset(), again.timestamp_ms()), ("t", 3, 1, Some(7)));
    }

    #[test]
    fn a_header_name_that_is_not_utf8_is_copied_lossily_beside_the_others() {
        let mut copier = Copier::with_capacity(Arc::from("t"), 0, 1);
        let headers: [(&[u8], Option<&[u8]>); 3] = [(b"a", Some(b"1")), (b"caf\xe9", Some(b"2")), (b"b\xff\xfez", None)];
        copier.copy(&message(4, b"k", b"p", None), headers.into_iter());
        let r = copier.only();
        let copied: Vec<(&str, Option<&[u8]>)> = r.headers().collect();
        assert_eq!(copied, [("a", Some(&b"1"[..])), ("caf\u{FFFD}", Some(&b"2"[..])), ("b\u{FFFD}\u{FFFD}z", None)]);
        assert_eq!((r.offset(), r.key(), r.payload()), (4, Some(&b"k"[..]), Some(&b"p"[..])));
    }

    #[test]
    fn a_read_is_sized_like_the_last_one() {
        let read = |header: Option<(&str, &[u8])>| (1..=4).map(|o| message(o, b"k", b"p", header)).collect::<Vec<_>>();
        let mut shape = ReadShape::default();
        Copier::copy_all(Arc::from("t"), &read(Some(("rt-attempt", b"1234"))), &mut shape);
        assert_eq!(shape, ReadShape { records: 4, values: 16, names: 40, headers: 4 });
        let records = Copier::copy_all(Arc::from("t"), &read(Some(("rt-attempt", b"5678"))), &mut shape);
        let c = &records[0].copies;
        assert_eq!((c.data.capacity(), c.names.capacity(), c.headers.capacity()), (4 * (1 + 1 + 4), 40, 4), "sized once, exactly");
        Copier::copy_all(Arc::from("t"), &read(None), &mut shape);
        assert_eq!(shape, ReadShape { records: 4, values: 0, names: 0, headers: 0 });
    }

    #[test]
    fn builders_change_one_record_only() {
        let (a, b) = two(Some(("h", b"vb")), b"pb");
        let a2 = a.clone().with_payload("new").with_header("h2", None).with_timestamp_ms(9);
        assert_eq!((a2.offset(), a2.key(), a2.payload(), a2.timestamp_ms()), (1, Some(&b"ka"[..]), Some(&b"new"[..]), Some(9)));
        assert_eq!(a2.headers().map(|(n, _)| n).collect::<Vec<_>>(), ["h", "h2"]);
        assert_eq!(
            (a.payload(), a.timestamp_ms(), b.payload(), b.header("h")),
            (Some(&b"pa"[..]), Some(7), Some(&b"pb"[..]), Some(&b"vb"[..]))
        );
        let r = Record::new("x", 4, 5).with_key("k");
        assert_eq!((r.topic(), r.partition(), r.offset(), r.key(), r.payload()), ("x", 4, 5, Some(&b"k"[..]), None));
    }
}
