//! A partition's own queue: split off the consumer when the partition is assigned, so its
//! owner reads, builds and budgets its records itself, on whichever worker it runs.
//!
//! The queue is split in the rebalance callback before librdkafka starts fetching the
//! partition, so none of its records reach the consumer's main queue. librdkafka keeps a
//! split partition off the main queue for good, so each later assignment splits it again.
//! Every handle of one partition shares librdkafka's fetch queue and its wake-up callback,
//! and dropping a handle disables that callback: an old handle must be gone before a new
//! one is used. So the handle lives in an [`OwnQueue`] that revocation closes, and an owner
//! holds a clone only while it waits for records (never while it handles one). Should a
//! wake-up still be lost, the owner looks at its queue again after [`RECHECK`].
//!
//! A read waits for its first message through rdkafka's stream (whose wake-up lets the
//! owner wait without polling), then takes what is ready behind it in one call through a
//! second reference to the same queue ([`ReadyQueue`]), which leaves the wake-up alone.
//!
//! The records of one read share one allocation ([`Copier`]), freed when the last of them
//! goes. The listener's budget counts each record's own bytes, so the memory held can
//! exceed it by at most the rest of one read per partition (records cut off at the
//! budget's limit, or finished ahead of the others); a record held for long is copied out
//! on its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::error::KafkaError;

use super::batch::ReadyQueue;
use super::{ListenerConsumer, ListenerContext};
use crate::record::{Copier, ReadShape, Record};

/// The split-off queue of one partition: rdkafka's stream, to wait for its next message,
/// and a [`ReadyQueue`] on the same queue, to take what is ready behind it at once.
pub(crate) struct PartitionQueue {
    // Released before the stream, which holds the consumer.
    ready: ReadyQueue,
    stream: StreamPartitionQueue<ListenerContext>,
}

impl PartitionQueue {
    /// Splits the queue of `topic` [`partition`] off the consumer's main queue (none if
    /// librdkafka has no such partition).
    pub(crate) fn split_off(consumer: &Arc<ListenerConsumer>, topic: &str, partition: i32) -> Option<Self> {
        let stream = consumer.split_partition_queue(topic, partition)?;
        let ready = ReadyQueue::of(consumer, topic, partition)?;
        Some(PartitionQueue { ready, stream })
    }
}

/// Messages taken from a partition's queue at once (without waiting after the first).
const READ_AT_MOST: usize = 1_024;
/// An owner waiting for records looks at its queue at least this often.
const RECHECK: Duration = Duration::from_secs(1);

/// The handle on a partition's queue for one assignment.
pub(crate) struct OwnQueue(Mutex<Option<Arc<PartitionQueue>>>);

impl std::fmt::Debug for OwnQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OwnQueue").field(&self.get().is_some()).finish()
    }
}

impl OwnQueue {
    pub(crate) fn new(queue: PartitionQueue) -> Self {
        OwnQueue(Mutex::new(Some(Arc::new(queue))))
    }

    /// The queue, unless it was closed.
    pub(crate) fn get(&self) -> Option<Arc<PartitionQueue>> {
        self.0.lock().expect("queue lock").clone()
    }

    /// Drops the handle (the partition was revoked, or the listener stops).
    pub(crate) fn close(&self) {
        drop(self.0.lock().expect("queue lock").take());
    }
}

/// What one read of a partition's queue brought.
#[derive(Debug, Default)]
pub(crate) struct Read {
    pub(crate) records: Vec<Record>,
    pub(crate) errors: Vec<KafkaError>,
    /// The headers' share of this read, to size the next one's copies.
    pub(crate) shape: ReadShape,
}

/// Waits for the partition's next message (at most [`RECHECK`]), then takes what else is
/// ready, up to [`READ_AT_MOST`], in one call ([`ReadyQueue::take`]); each message is
/// copied into a [`Record`] once, the records of one read into one shared allocation
/// ([`Copier`]), sized like the last read (`shape`). Cancellation-safe: nothing is taken
/// from the queue before the last `await`.
pub(crate) async fn read(queue: Arc<PartitionQueue>, topic: Arc<str>, shape: ReadShape) -> Read {
    let mut read = Read { shape, ..Read::default() };
    let mut stream = queue.stream.stream();
    let first = match tokio::time::timeout(RECHECK, stream.next()).await {
        Ok(Some(Ok(m))) => m,
        Ok(Some(Err(e))) => {
            read.errors.push(e);
            return read;
        }
        _ => return read,
    };
    // The messages are held until all are taken, so the copies are sized once.
    let mut rest = Vec::new();
    queue.ready.take(READ_AT_MOST - 1, &mut rest, &mut read.errors);
    read.records = Copier::copy_read(topic, std::slice::from_ref(&first), &rest, &mut read.shape);
    read
}
