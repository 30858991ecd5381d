//! Taking every message that is ready in a partition's queue in one call: librdkafka's
//! `rd_kafka_consume_batch_queue`, which rdkafka does not wrap.
//!
//! rdkafka hands out one message per poll, and each poll costs an event, a deadline with
//! two clock reads, and librdkafka's own poll bookkeeping with a third; a perf profile of
//! the happy path put a quarter of an owner's time there. Only the wait for the first
//! message of a read goes through rdkafka's stream (its wake-up is what lets an owner wait
//! without polling); what is ready behind it is taken here at once. The handle is
//! librdkafka's own second reference to the same queue (`rd_kafka_queue_get_partition`),
//! so both take from one queue, in order.
//!
//! Header names are read here too, as bytes, for these messages and rdkafka's own: rdkafka
//! panics on a name that is not UTF-8 (see [`ClientMessage`]). With fault injection, it also
//! raises librdkafka's fabricated fatal errors ([`raise_fatal_error`]) for tests.

// The one module allowed `unsafe` (see the workspace's lints): FFI calls into librdkafka,
// each with its reason.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Header, Headers, Message, Timestamp};
use rdkafka::types::RDKafkaErrorCode;

use super::ListenerConsumer;
use crate::record::{ClientMessage, HeaderBytes};

/// A reference to one partition's queue in librdkafka, released when dropped (before the
/// consumer closes: it lives beside the partition's stream, which holds the consumer).
pub(crate) struct ReadyQueue(NonNull<rdsys::rd_kafka_queue_t>);

// SAFETY: librdkafka's queues are locked inside; the handle is only a reference count.
unsafe impl Send for ReadyQueue {}
// SAFETY: as above; every call through `&self` takes the queue's own lock.
unsafe impl Sync for ReadyQueue {}

impl ReadyQueue {
    /// A second reference to the queue of `topic` [`partition`] (none if librdkafka has no
    /// such partition).
    pub(crate) fn of(consumer: &ListenerConsumer, topic: &str, partition: i32) -> Option<Self> {
        let topic = CString::new(topic).ok()?;
        // SAFETY: the client pointer is valid while `consumer` lives; the call copies the name.
        let queue = unsafe { rdsys::rd_kafka_queue_get_partition(consumer.client().native_ptr(), topic.as_ptr(), partition) };
        NonNull::new(queue).map(ReadyQueue)
    }

    /// Takes up to `max` messages that are ready, without waiting: the messages into
    /// `messages`, the errors among them (as rdkafka would report them) into `errors`.
    pub(crate) fn take(&self, max: usize, messages: &mut Vec<Taken>, errors: &mut Vec<KafkaError>) {
        // Sized for what is there: a read of a few records (a retry topic's, often) costs no
        // buffer of `max` pointers, which glibc serves outside its per-thread cache.
        // SAFETY: the queue is valid while `self` lives.
        let ready = unsafe { rdsys::rd_kafka_queue_length(self.0.as_ptr()) }.min(max);
        if ready == 0 {
            return;
        }
        let mut taken: Vec<*mut rdsys::rd_kafka_message_t> = Vec::with_capacity(ready);
        // SAFETY: the queue is valid while `self` lives; librdkafka writes at most `ready`
        // message pointers into the buffer and returns how many (or -1).
        let n = unsafe { rdsys::rd_kafka_consume_batch_queue(self.0.as_ptr(), 0, taken.as_mut_ptr(), ready) };
        // SAFETY: the first `n` pointers were written just now.
        unsafe { taken.set_len(usize::try_from(n).unwrap_or(0).min(ready)) };
        messages.reserve(taken.len());
        for message in taken.into_iter().filter_map(NonNull::new).map(Taken) {
            // SAFETY: a message taken from the queue is valid until destroyed (on drop).
            let (err, partition) = unsafe { (message.0.as_ref().err, message.0.as_ref().partition) };
            match err {
                rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => messages.push(message),
                rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => errors.push(KafkaError::PartitionEOF(partition)),
                e => errors.push(KafkaError::MessageConsumption(RDKafkaErrorCode::from(e))),
            }
        }
    }
}

impl Drop for ReadyQueue {
    fn drop(&mut self) {
        // SAFETY: this handle's own reference, released once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

/// A message taken by [`ReadyQueue::take`], destroyed when dropped.
pub(crate) struct Taken(NonNull<rdsys::rd_kafka_message_t>);

impl Taken {
    fn raw(&self) -> &rdsys::rd_kafka_message_t {
        // SAFETY: valid until this value is dropped.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        // SAFETY: this value owns the message; destroyed once.
        unsafe { rdsys::rd_kafka_message_destroy(self.0.as_ptr()) }
    }
}

/// A slice of `len` bytes at `ptr`, none for a null pointer.
///
/// # Safety
/// `ptr` must point at `len` bytes that live as long as `'a`.
unsafe fn bytes<'a>(ptr: *const std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    match ptr.is_null() {
        true => None,
        // SAFETY: as the caller promises.
        false => Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }),
    }
}

impl Message for Taken {
    type Headers = RawHeaders;

    fn key(&self) -> Option<&[u8]> {
        // SAFETY: the key lives as long as the message.
        unsafe { bytes(self.raw().key, self.raw().key_len) }
    }

    fn payload(&self) -> Option<&[u8]> {
        // SAFETY: the payload lives as long as the message.
        unsafe { bytes(self.raw().payload, self.raw().len) }
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        let (ptr, len) = (self.raw().payload, self.raw().len);
        // SAFETY: the caller takes on rdkafka's contract for this method.
        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) })
    }

    fn topic(&self) -> &str {
        // SAFETY: the topic handle and its name live as long as the message.
        unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(self.raw().rkt)) }.to_str().expect("topic names are ASCII")
    }

    fn partition(&self) -> i32 {
        self.raw().partition
    }

    fn offset(&self) -> i64 {
        self.raw().offset
    }

    fn timestamp(&self) -> Timestamp {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is valid; librdkafka writes the kind.
        let ms = unsafe { rdsys::rd_kafka_message_timestamp(self.0.as_ptr(), &mut kind) };
        match kind {
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(ms),
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => Timestamp::LogAppendTime(ms),
            _ => Timestamp::NotAvailable,
        }
    }

    fn headers(&self) -> Option<&RawHeaders> {
        // SAFETY: the message lives as long as `self`.
        unsafe { RawHeaders::of(self.0.as_ptr()) }
    }
}

impl ClientMessage for Taken {
    fn header_bytes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.headers().into_iter().flat_map(RawHeaders::entries)
    }
}

impl ClientMessage for BorrowedMessage<'_> {
    fn header_bytes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        // SAFETY: the message lives as long as `self`.
        unsafe { RawHeaders::of(self.ptr()) }.into_iter().flat_map(RawHeaders::entries)
    }
}

/// The headers of a librdkafka message, read directly (a stand-in: its address is
/// librdkafka's headers).
pub(crate) struct RawHeaders;

impl RawHeaders {
    /// The headers of `message`, none if it has none.
    ///
    /// # Safety
    /// `message` must be a valid message that lives as long as `'a`.
    unsafe fn of<'a>(message: *mut rdsys::rd_kafka_message_t) -> Option<&'a RawHeaders> {
        let mut headers = std::ptr::null_mut();
        // SAFETY: librdkafka parses the headers on first access and keeps them with the
        // message; the pointer stays valid as long as the message (as the caller promises).
        let err = unsafe { rdsys::rd_kafka_message_headers(message, &mut headers) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return None;
        }
        // SAFETY: `RawHeaders` is a zero-sized stand-in for librdkafka's opaque headers,
        // as rdkafka's `BorrowedHeaders` is; only its address is used.
        Some(unsafe { &*headers.cast::<RawHeaders>() })
    }

    /// rdkafka's own view of a message's headers, read directly.
    fn of_borrowed(headers: &BorrowedHeaders) -> &RawHeaders {
        // SAFETY: rdkafka's `BorrowedHeaders` is, as `RawHeaders` is, a zero-sized stand-in
        // whose address is librdkafka's headers (rdkafka's own `as_native_ptr` casts its
        // address so); only the address is used, for as long as `headers` lives. The
        // reliability suite's `a_detached_message_with_a_header_name_that_is_not_utf8_is_copied_lossily`
        // reads rdkafka's headers both ways.
        unsafe { &*(headers as *const BorrowedHeaders).cast::<RawHeaders>() }
    }

    fn raw(&self) -> *const rdsys::rd_kafka_headers_t {
        (self as *const Self).cast()
    }

    /// Header `idx`: its name's bytes and its value.
    fn entry(&self, idx: usize) -> Option<(&[u8], Option<&[u8]>)> {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
        // SAFETY: valid as long as its message; librdkafka writes the three out-pointers.
        let err = unsafe { rdsys::rd_kafka_header_get_all(self.raw(), idx, &mut name, &mut value, &mut size) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        // SAFETY: the name is a NUL-terminated string of the message's headers; the value
        // `size` bytes of them (or null).
        Some((unsafe { CStr::from_ptr(name) }.to_bytes(), unsafe { bytes(value, size) }))
    }

    /// Every header in order: its name's bytes and its value.
    fn entries(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        (0..self.count()).map_while(|idx| self.entry(idx))
    }
}

impl HeaderBytes for BorrowedHeaders {
    fn entries(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        RawHeaders::of_borrowed(self).entries()
    }
}

/// rdkafka's view, for the `Message` trait: names must be UTF-8 here, as rdkafka's own
/// `BorrowedHeaders` assumes; the engine reads [`RawHeaders::entries`] instead.
impl Headers for RawHeaders {
    fn count(&self) -> usize {
        // SAFETY: valid as long as its message.
        unsafe { rdsys::rd_kafka_header_cnt(self.raw()) }
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        let (name, value) = self.entry(idx)?;
        let key = std::str::from_utf8(name).expect("header names are UTF-8 (as rdkafka assumes)");
        Some(Header { key, value })
    }
}

/// Fault injection: raises a fabricated fatal error in `client` (librdkafka's test hook, as
/// an idempotent producer gets one for a broken sequence); `false` if librdkafka refused
/// (the producer is not idempotent).
#[cfg(feature = "fault-injection")]
pub(crate) fn raise_fatal_error<C: rdkafka::ClientContext>(client: &rdkafka::client::Client<C>, reason: &str) -> bool {
    let reason = CString::new(reason).unwrap_or_default();
    // SAFETY: the client's handle is live while `client` is borrowed; librdkafka copies the
    // reason before it returns.
    let err = unsafe {
        rdsys::rd_kafka_test_fatal_error(
            client.native_ptr(),
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        )
    };
    err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
}
