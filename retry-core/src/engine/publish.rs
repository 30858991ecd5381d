//! Publishing to retry topics and DLTs: enqueued without waiting, acknowledged later, with
//! publish errors classified as transient (try again) or permanent (never retried).
//!
//! A partition keeps many publishes in flight (see [`owner`](super::owner)); the producer
//! may linger a few milliseconds to batch them, because nothing waits on a single record.
//! The acknowledgement of a republish goes into its owner's [`Acks`], which the owner takes
//! in batches: no future, channel or wake-up per record (rdkafka's `FutureProducer` costs
//! those: a bare pipelined producer wrote about 1.5 times as many records a second without
//! them, at the median, on the embedded broker and noida). A publish someone awaits alone
//! (a DLT publish, a publish tried again, one the producer had no room for) gets its
//! acknowledgement through a oneshot channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientConfig;
use tokio::sync::{oneshot, Notify};

use crate::headers::{self, HeaderFormat, RetryHeaders};
use crate::record::{ReadAt, Record};

/// The longest a publish waiting for room in the producer's queue waits before it tries
/// again without being told: a message's place is freed just after its delivery report,
/// so the publish woken by that report may still find the queue full.
const ROOM_RECHECK: Duration = Duration::from_millis(50);

/// How many producers a publisher goes through at most: its first, and those that take
/// the place of one a fatal error left unable to publish.
const MAX_PRODUCERS: usize = 16;

/// Publishes records with fresh framework headers.
pub(crate) struct Publisher {
    /// Its producers in the order they were made; `current` is the one in use. A fatal
    /// error leaves a producer unable to publish again (librdkafka's contract; an
    /// idempotent producer can get one): the first publish it refuses for that makes the
    /// next one, of `config`. The ones before stay until the publisher goes (dropping a
    /// producer joins its threads, which an async worker must not wait for), and reading
    /// the one in use costs a publish one atomic load.
    producers: [OnceLock<ThreadedProducer<Deliveries>>; MAX_PRODUCERS],
    current: AtomicUsize,
    /// Held while a producer is being replaced.
    replacing: Mutex<()>,
    config: ClientConfig,
    format: HeaderFormat,
}

/// Where a republish goes: a retry topic, or the next ladder tier for a `hop`.
pub(crate) struct RetryTarget {
    pub(crate) topic: String,
    pub(crate) headers: RetryHeaders,
    pub(crate) hop: bool,
    /// The attempt that failed (for a hop, the attempt it is due for).
    pub(crate) failed_attempt: u32,
}

/// A republish in an owner's window, as its acknowledgement brings it back: its place in
/// the window, where its record was read and where it went.
pub(crate) struct Republish {
    pub(crate) seq: u64,
    pub(crate) at: ReadAt,
    pub(crate) target: RetryTarget,
}

/// A republish the producer refused at once: why, and the ticket it came back in.
pub(crate) struct Refused {
    error: PublishError,
    ticket: Box<Ticket>,
}

impl Refused {
    /// Why, and where the refused republish was to go.
    pub(crate) fn into_parts(self) -> (PublishError, RetryTarget) {
        match *self.ticket {
            Ticket::Window(_, republish) => (self.error, republish.target),
            Ticket::Awaited(_) => unreachable!("a republish's ticket is a window's"),
        }
    }
}

/// How a publish ended: acknowledged, or refused with the message the producer gives back.
pub(crate) type Delivered = Result<(), (PublishError, OwnedMessage)>;

/// The acknowledgements of one owner's republishes, put here by the producer's thread and
/// taken by the owner in batches.
#[derive(Default)]
pub(crate) struct Acks {
    done: Mutex<Vec<(Republish, Delivered)>>,
    /// Told when `done` stops being empty.
    ready: Notify,
}

impl Acks {
    fn push(&self, republish: Republish, delivered: Delivered) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.push((republish, delivered));
        if done.len() == 1 {
            self.ready.notify_one();
        }
    }

    /// Moves the acknowledgements that arrived into `into`.
    pub(crate) fn take(&self, into: &mut Vec<(Republish, Delivered)>) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        into.append(&mut done);
    }

    /// Waits until an acknowledgement may have arrived since the last [`take`](Self::take).
    pub(crate) async fn ready(&self) {
        self.ready.notified().await
    }
}

/// Whom a publish's acknowledgement is for.
#[expect(clippy::large_enum_variant, reason = "a ticket is always boxed, and the large variant is the common one")]
pub(crate) enum Ticket {
    /// An owner's window.
    Window(Arc<Acks>, Republish),
    /// Someone awaiting this publish alone (who needs no message given back).
    Awaited(oneshot::Sender<Result<(), PublishError>>),
}

/// The producer's context: hands each acknowledgement to its [`Ticket`], and tells a
/// publish waiting for room in the producer's queue that a message left it.
#[derive(Default)]
pub(crate) struct Deliveries {
    /// Told once per message that leaves the producer's queue, delivered or not.
    room: Notify,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Box<Ticket>) {
        match *ticket {
            Ticket::Window(acks, republish) => {
                let delivered = result.as_ref().map(|_| ()).map_err(|(e, message)| (PublishError::of(e.clone()), message.detach()));
                acks.push(republish, delivered);
            }
            Ticket::Awaited(tx) => {
                let _ = tx.send(result.as_ref().map(|_| ()).map_err(|(e, _)| PublishError::of(e.clone())));
            }
        }
        // One message leaves the queue (librdkafka frees its place right after this call):
        // room for one waiting publish, if there is one.
        self.room.notify_one();
    }
}

/// How a publish failed.
#[derive(Debug)]
pub(crate) struct PublishError {
    pub(crate) error: KafkaError,
    /// It can never succeed (too large, invalid topic, not authorized): do not retry.
    pub(crate) permanent: bool,
}

impl PublishError {
    /// `error`, classified ([`is_permanent`]).
    fn of(error: KafkaError) -> Self {
        PublishError { permanent: is_permanent(&error), error }
    }

    /// The producer's local queue is full: room comes as acknowledgements arrive.
    pub(crate) fn is_queue_full(&self) -> bool {
        matches!(self.error, KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
    }
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
    /// A publisher with its own producer, of `config`.
    pub(crate) fn new(config: &ClientConfig, format: HeaderFormat) -> KafkaResult<Self> {
        let producers: [OnceLock<ThreadedProducer<Deliveries>>; MAX_PRODUCERS] = std::array::from_fn(|_| OnceLock::new());
        let _ = producers[0].set(config.create_with_context(Deliveries::default())?);
        Ok(Publisher { producers, current: AtomicUsize::new(0), replacing: Mutex::new(()), config: config.clone(), format })
    }

    /// The producer in use.
    pub(crate) fn producer(&self) -> &ThreadedProducer<Deliveries> {
        self.producers[self.current.load(Ordering::Acquire)].get().expect("a producer is set before it is in use")
    }

    /// Puts a new producer in the place of `dead`, which refused a publish for a fatal
    /// error, unless another publish did so first. What `dead` still held comes back to
    /// its publishers as failed (librdkafka fails a producer's queue at a fatal error) and
    /// is published again, through the new one.
    fn replace(&self, dead: &ThreadedProducer<Deliveries>) {
        let _one_at_a_time = self.replacing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load(Ordering::Acquire);
        if !self.producers[current].get().is_some_and(|in_use| std::ptr::eq(in_use, dead)) {
            return;
        }
        let reason = dead.client().fatal_error().map(|(code, reason)| format!("{code:?}: {reason}")).unwrap_or_default();
        if current + 1 == MAX_PRODUCERS {
            tracing::error!(
                %reason,
                made = MAX_PRODUCERS,
                "the producer hit a fatal error, and no more producers are made after this many: its publishes are \
                 tried again, and fail; restart the process"
            );
            return;
        }
        match self.config.create_with_context(Deliveries::default()) {
            Ok(new) => {
                let _ = self.producers[current + 1].set(new);
                self.current.store(current + 1, Ordering::Release);
                tracing::error!(
                    %reason,
                    "the producer hit a fatal error and can publish nothing more: a new producer takes its place, \
                     and what the old one held is published again"
                );
            }
            Err(e) => tracing::error!(
                %reason,
                error = %e,
                "the producer hit a fatal error and a new one could not be made; its publishes are tried again"
            ),
        }
    }

    /// The headers `record` is published with: its own, its framework headers replaced by
    /// `retry`.
    fn headers(&self, record: &Record, retry: &RetryHeaders) -> OwnedHeaders {
        let mut out = OwnedHeaders::new_with_capacity(record.headers().count() + headers::MAX_FRAMEWORK_HEADERS);
        for (key, value) in record.user_headers() {
            out = out.insert(Header { key, value });
        }
        retry.fold_encoded(self.format, out, |out, key, value| out.insert(Header { key, value: Some(value) }))
    }

    /// Enqueues `record` for `topic` with `headers` if the producer's queue has room; the
    /// acknowledgement goes to `ticket`. A refusal (a full queue included) comes back at
    /// once, with the ticket and the headers.
    fn try_enqueue(
        &self,
        topic: &str,
        record: &Record,
        headers: OwnedHeaders,
        ticket: Box<Ticket>,
    ) -> Result<(), (PublishError, Box<Ticket>, OwnedHeaders)> {
        let mut message = BaseRecord::<[u8], [u8], Box<Ticket>>::with_opaque_to(topic, ticket).headers(headers);
        message.key = record.key();
        message.payload = record.payload();
        let producer = self.producer();
        producer.send(message).map_err(|(error, back)| {
            if let KafkaError::MessageProduction(RDKafkaErrorCode::Fatal) = error {
                // The caller tries again, through the new producer.
                self.replace(producer);
            }
            (PublishError::of(error), back.delivery_opaque, back.headers.unwrap_or_default())
        })
    }

    /// [`try_enqueue`](Self::try_enqueue), with a full local queue waited out: woken when a
    /// message leaves the queue (one waiting publish per message, first come first
    /// served), or after [`ROOM_RECHECK`] at the latest. (It looked every 5 ms before: a
    /// thousand publishes waiting out a full queue took a sixth of a core doing that.)
    async fn enqueue(
        &self,
        topic: &str,
        record: &Record,
        mut headers: OwnedHeaders,
        mut ticket: Box<Ticket>,
    ) -> Result<(), (PublishError, Box<Ticket>)> {
        loop {
            let producer = self.producer();
            // Waiting from before the try, so room made between the try and the wait is
            // not missed; if this one was told but is not waiting any more, tokio tells the
            // next waiter instead.
            let told = producer.context().room.notified();
            tokio::pin!(told);
            told.as_mut().enable();
            match self.try_enqueue(topic, record, headers, ticket) {
                Ok(()) => return Ok(()),
                Err((e, back, hs)) if e.is_queue_full() => {
                    (ticket, headers) = (back, hs);
                    tokio::select! {
                        () = told => {}
                        () = tokio::time::sleep(ROOM_RECHECK) => {}
                    }
                }
                Err((e, back, _)) => return Err((e, back)),
            }
        }
    }

    /// Enqueues the republish of `record` in an owner's window: its acknowledgement goes
    /// into `acks`. Refused at once (a full local queue included: the owner does not wait
    /// for room), it comes back with the error.
    pub(crate) fn republish(&self, record: &Record, acks: &Arc<Acks>, republish: Republish) -> Result<(), Refused> {
        let headers = self.headers(record, &republish.target.headers);
        // The ticket owns the target; the producer is given the topic's name alone.
        let topic = republish.target.topic.clone();
        self.try_enqueue(&topic, record, headers, Box::new(Ticket::Window(Arc::clone(acks), republish)))
            .map_err(|(error, ticket, _)| Refused { error, ticket })
    }

    /// Publishes once and awaits the acknowledgement.
    pub(crate) async fn publish(&self, topic: &str, record: &Record, retry: &RetryHeaders) -> Result<(), PublishError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(topic, record, self.headers(record, retry), Box::new(Ticket::Awaited(tx))).await.map_err(|(e, _)| e)?;
        match rx.await {
            Ok(delivered) => delivered,
            // The ticket was dropped unanswered: the producer went away without reporting
            // this message (when dropped, it reports what it still holds as purged).
            Err(_) => Err(PublishError::of(KafkaError::Canceled)),
        }
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
