//! Assignment and revocation: which partitions this member holds, each with its
//! [`PartitionSlot`] of the current generation, its own queue and its owner.
//!
//! A partition's queue is split off the consumer just before it is assigned (see
//! [`queue`](super::queue)), and closed when it is revoked.
//!
//! On revocation the owners of the revoked partitions are told to stop taking records; the
//! callback waits a bounded time for the record in hand (and the republishes in flight) to
//! finish and their offsets to be stored, then fences the slots, so that nothing of the
//! old generation is stored, paused or resumed after the partition moved. An owner still
//! busy after that time is left to finish (its result is discarded); a later owner of the
//! same partition in this process waits for it before starting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::TopicPartitionList;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::errors::ConsumerErrors;
use super::owner::{Finished, OwnerHandle};
use super::partition::PartitionSlot;
use super::queue::{OwnQueue, PartitionQueue};
use super::ListenerConsumer;
use crate::metrics::Metrics;

/// A partition as (topic, partition).
pub(crate) type TopicPartition = (String, i32);

/// One assigned partition.
#[derive(Debug)]
pub(crate) struct Assigned {
    pub(crate) slot: Arc<PartitionSlot>,
    /// The partition's own queue (none if it could not be split off: its records then come
    /// through the dispatcher).
    pub(crate) queue: Option<Arc<OwnQueue>>,
    /// Started by the dispatcher: at the assignment for a partition with its own queue, at
    /// its first batch otherwise.
    pub(crate) owner: Option<OwnerHandle>,
    /// The owner of this partition in an earlier generation, if it may still be running.
    pub(crate) previous: Option<Arc<Finished>>,
}

/// The partitions of one listener, shared by the dispatcher and the rebalance callback.
pub(crate) struct Partitions {
    pub(crate) assigned: Mutex<HashMap<TopicPartition, Assigned>>,
    /// Owners of revoked partitions, possibly still running: joined at shutdown.
    pub(crate) retired: Mutex<Vec<(Arc<Finished>, JoinHandle<()>)>>,
    /// Finish signals of retired owners by partition, so a new owner can wait for the old.
    retired_by_partition: Mutex<HashMap<TopicPartition, Arc<Finished>>>,
    /// Queues split off in the rebalance callback, waiting for their assignment.
    split: Mutex<HashMap<TopicPartition, PartitionQueue>>,
    /// Notified when partitions were assigned (their owners are to be started).
    pub(crate) assigned_now: Notify,
    next_generation: AtomicU64,
    /// How long revocation waits for records in hand.
    revoke_grace: Duration,
    /// Number of partitions assigned.
    pub(crate) count: Arc<AtomicUsize>,
    /// Whether partition queues are split off (always, but for fault injection).
    split_queues: bool,
    /// Whether the group gave this member an assignment yet (an empty one too).
    joined: AtomicBool,
}

impl Partitions {
    pub(crate) fn new(revoke_grace: Duration, count: Arc<AtomicUsize>, split_queues: bool) -> Self {
        Partitions {
            assigned: Mutex::default(),
            retired: Mutex::default(),
            retired_by_partition: Mutex::default(),
            split: Mutex::default(),
            assigned_now: Notify::new(),
            next_generation: AtomicU64::new(1),
            revoke_grace,
            count,
            split_queues,
            joined: AtomicBool::new(false),
        }
    }

    /// Whether the group gave this member an assignment yet (an empty one too: a member
    /// beyond the number of partitions has joined).
    pub(crate) fn joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    pub(crate) fn assign(&self, topic: &str, partition: i32) {
        let key = (topic.to_owned(), partition);
        // An assignment without a revocation before it (the client lost the old one):
        // fence the old generation first, so one partition never has two owners.
        if self.assigned.lock().expect("partitions lock").contains_key(&key) {
            tracing::warn!(topic, partition, "partition assigned again without a revocation; fencing the old assignment");
            self.revoke(std::slice::from_ref(&key));
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let previous = self.retired_by_partition.lock().expect("partitions lock").remove(&key).filter(|f| !f.is_set());
        let slot = Arc::new(PartitionSlot::new(topic, partition, generation));
        let queue = self.split.lock().expect("partitions lock").remove(&key).map(|q| Arc::new(OwnQueue::new(q)));
        self.assigned.lock().expect("partitions lock").insert(key, Assigned { slot, queue, owner: None, previous });
    }

    /// Splits off the queues of partitions about to be assigned (before librdkafka fetches
    /// them, so none of their records reach the main queue).
    fn split_off(&self, consumer: &Arc<ListenerConsumer>, partitions: &[TopicPartition]) {
        let mut split = self.split.lock().expect("partitions lock");
        for (topic, partition) in partitions {
            let queue = if self.split_queues { PartitionQueue::split_off(consumer, topic, *partition) } else { None };
            match queue {
                Some(q) => {
                    split.insert((topic.clone(), *partition), q);
                }
                None => tracing::warn!(topic, partition, "could not split off the partition's queue; the dispatcher reads it"),
            }
        }
    }

    /// Stops the owners of `revoked`, waits up to the grace for them, then fences them.
    fn revoke(&self, revoked: &[TopicPartition]) {
        let mut taken = Vec::new();
        {
            let mut assigned = self.assigned.lock().expect("partitions lock");
            for key in revoked {
                if let Some(a) = assigned.remove(key) {
                    taken.push((key.clone(), a));
                }
            }
        }
        for (_, a) in &taken {
            if let Some(owner) = &a.owner {
                owner.cancel.cancel();
            }
        }
        let waiting: Vec<Arc<Finished>> = taken.iter().filter_map(|(_, a)| a.owner.as_ref().map(|o| Arc::clone(&o.finished))).collect();
        let waited = waiting.is_empty() || wait_for_owners(&waiting, self.revoke_grace);
        if !waited && waiting.iter().any(|f| !f.is_set()) && !CANNOT_WAIT_TOLD.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "partitions revoked on a current-thread tokio runtime: the rebalance cannot wait there for their records \
                 in hand (nothing else runs while it waits), so a record being handled as its partition moves is handled \
                 again by the next owner; on a multi-thread runtime revocations wait for them (rebalance_grace). Said once"
            );
        }
        for (key, a) in taken {
            if let Some(q) = &a.queue {
                q.close();
            }
            a.slot.revoke();
            if let Some(owner) = a.owner {
                if !owner.finished.is_set() {
                    if waited {
                        tracing::warn!(topic = %key.0, partition = key.1, grace = ?self.revoke_grace,
                        "revoked partition's record in hand did not finish within the grace; its result is discarded and the record will be redelivered");
                    }
                    self.retired_by_partition.lock().expect("partitions lock").insert(key, Arc::clone(&owner.finished));
                }
                self.retired.lock().expect("partitions lock").push((owner.finished, owner.join));
            }
        }
    }

    /// Every owner, active or retired, for shutdown: cancelled, their queues closed.
    pub(crate) fn drain(&self) -> Vec<(Arc<Finished>, JoinHandle<()>)> {
        self.split.lock().expect("partitions lock").clear();
        let mut all: Vec<_> = self
            .assigned
            .lock()
            .expect("partitions lock")
            .drain()
            .filter_map(|(_, a)| {
                if let Some(q) = &a.queue {
                    q.close();
                }
                a.owner.map(|o| {
                    o.cancel.cancel();
                    (o.finished, o.join)
                })
            })
            .collect();
        all.append(&mut self.retired.lock().expect("partitions lock"));
        all
    }
}

/// Whether the warning that a current-thread runtime cannot wait for revoked partitions
/// was given (once per process).
static CANNOT_WAIT_TOLD: AtomicBool = AtomicBool::new(false);

/// Waits, blocking this thread, until every owner finished or `grace` passed. Blocking is
/// what librdkafka's rebalance callback asks for; on a multi-threaded runtime the owners
/// keep running on the other threads meanwhile. On a current-thread runtime nothing else
/// can run, so it does not wait (the fence alone keeps the partition safe) and returns
/// `false`.
fn wait_for_owners(owners: &[Arc<Finished>], grace: Duration) -> bool {
    let multi_thread =
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread).unwrap_or(false);
    if !multi_thread {
        return false;
    }
    let deadline = std::time::Instant::now() + grace;
    tokio::task::block_in_place(|| {
        for f in owners {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            f.wait_blocking(left);
        }
    });
    true
}

/// The consumer's context: quiet transport errors, partitions assigned and revoked,
/// failed commits reported.
pub(crate) struct ListenerContext {
    pub(crate) listener: String,
    pub(crate) partitions: Arc<Partitions>,
    /// The listener's metrics (set once they exist, before the consumer subscribes).
    pub(crate) metrics: OnceLock<Arc<Metrics>>,
    errors: Arc<ConsumerErrors>,
    /// The consumer itself, to split partition queues off it (set once it exists).
    pub(crate) consumer: OnceLock<Weak<ListenerConsumer>>,
}

impl ListenerContext {
    pub(crate) fn new(listener: &str, partitions: Arc<Partitions>, errors: Arc<ConsumerErrors>) -> Self {
        ListenerContext { listener: listener.to_owned(), partitions, metrics: OnceLock::new(), errors, consumer: OnceLock::new() }
    }
}

impl ClientContext for ListenerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let fatal = self.consumer.get().and_then(Weak::upgrade).is_some_and(|c| c.client().fatal_error().is_some());
        if fatal {
            // The dispatcher stops the listener when the consumer hands it this error.
            tracing::error!(listener = %self.listener, %error, reason, "fatal kafka client error: the consumer cannot go on");
        } else {
            tracing::warn!(listener = %self.listener, %error, reason, "kafka client error (the client reconnects by itself)");
        }
    }
}

impl ConsumerContext for ListenerContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let (Err(e), Some(metrics)) = (result, self.metrics.get()) {
            self.errors.report_commit(&self.listener, metrics, &e);
        }
    }

    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                if let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) {
                    self.partitions.split_off(&consumer, &partitions_of(list));
                }
            }
            Rebalance::Revoke(list) => {
                self.partitions.revoke(&partitions_of(list));
                let n = list.count();
                let before = self.partitions.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| Some(a.saturating_sub(n)));
                if let Some(metrics) = self.metrics.get() {
                    metrics.rebalanced(n, before.unwrap_or(0).saturating_sub(n));
                }
                if n > 0 {
                    tracing::info!(listener = %self.listener, partitions = n, "partitions revoked");
                    tracing::debug!(listener = %self.listener, partitions = ?partitions_of(list), "revoked");
                }
            }
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                for e in list.elements() {
                    self.partitions.assign(e.topic(), e.partition());
                }
                let n = list.count();
                self.partitions.joined.store(true, Ordering::Release);
                let now = self.partitions.count.fetch_add(n, Ordering::AcqRel) + n;
                if let Some(metrics) = self.metrics.get() {
                    metrics.rebalanced(0, now);
                }
                self.partitions.assigned_now.notify_one();
                // An incremental (cooperative) rebalance that moves nothing here assigns none.
                if n > 0 {
                    tracing::info!(listener = %self.listener, partitions = n, "partitions assigned");
                    tracing::debug!(listener = %self.listener, partitions = ?partitions_of(list), "assigned");
                }
                // A partition comes back unpaused, whatever an earlier generation did to it.
                // librdkafka may lose this resume (confluentinc/librdkafka#5591); the
                // dispatcher resumes each unpaused partition again every second.
                if let Err(e) = consumer.resume(list) {
                    tracing::warn!(listener = %self.listener, error = %e, "could not clear pause state of assigned partitions");
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(listener = %self.listener, error = %e, "rebalance error"),
        }
    }
}

/// The partitions of a rebalance's list.
fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
}
