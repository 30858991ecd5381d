//! One assigned partition's state, kept in one place: why it is paused, which assignment
//! (generation) it belongs to, and the offset stored for it.
//!
//! Every pause, resume and offset store of a partition goes through its [`PartitionSlot`],
//! under one lock, and is refused once the slot is revoked: nothing from an older
//! assignment touches the partition again. A partition is paused when its set of
//! [`PauseReason`]s goes from empty to non-empty and resumed only when it is empty again,
//! so no reason can lift another's pause.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::budget::Budget;
use crate::metrics::Metrics;

/// How long a seek may take.
const SEEK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a partition is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseReason {
    /// The record at the head of a retry partition is not due yet.
    NotDue = 1,
    /// The listener's byte budget for queued records is used up.
    Backpressure = 2,
    /// A record can go nowhere (its DLT publish cannot succeed): nothing after it may be
    /// handled or committed until the partition is reassigned.
    Stopped = 4,
    /// The listener's circuit breaker is open (an outage is suspected) or an operator
    /// paused the listener: nothing is handled until it closes.
    Breaker = 8,
}

impl PauseReason {
    /// Every reason, in the order of [`PAUSE_REASONS`](crate::metrics::PAUSE_REASONS).
    pub(crate) const ALL: [PauseReason; 4] = [PauseReason::NotDue, PauseReason::Backpressure, PauseReason::Stopped, PauseReason::Breaker];
}

/// A set of [`PauseReason`]s; pure, so its transitions are unit-tested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PauseReasons(u8);

/// What the client must do after a change of the reason set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Pause,
    Resume,
    Nothing,
}

impl PauseReasons {
    pub(crate) fn insert(&mut self, reason: PauseReason) -> Transition {
        let was_empty = self.0 == 0;
        self.0 |= reason as u8;
        if was_empty {
            Transition::Pause
        } else {
            Transition::Nothing
        }
    }

    pub(crate) fn remove(&mut self, reason: PauseReason) -> Transition {
        let had = self.0 & reason as u8 != 0;
        self.0 &= !(reason as u8);
        if had && self.0 == 0 {
            Transition::Resume
        } else {
            Transition::Nothing
        }
    }

    pub(crate) fn contains(self, reason: PauseReason) -> bool {
        self.0 & reason as u8 != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// How far an owner has read its partition: the offset after the last record it took in.
///
/// librdkafka rewinds a paused partition to the last record it gave the application, and
/// a pause from an owner's task races with the dispatcher's read of a partition without
/// its own queue: a record read just then can be fetched again after the resume (see
/// confluentinc/librdkafka#2593). Such re-reads are dropped here, so each offset is taken
/// in once per assignment. Pure, so it is unit-tested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReadPosition(Option<i64>);

impl ReadPosition {
    /// Keeps the records after the position and moves it past them; returns the number
    /// and queued bytes of those dropped as read before.
    pub(crate) fn keep_new(&mut self, records: &mut Vec<crate::record::Record>) -> (usize, usize) {
        let (before, mut bytes) = (records.len(), 0);
        if let Some(next) = self.0 {
            records.retain(|r| {
                let new = r.offset() >= next;
                if !new {
                    bytes += r.queued_bytes();
                }
                new
            });
        }
        if let Some(last) = records.last() {
            self.0 = Some(last.offset() + 1);
        }
        (before - records.len(), bytes)
    }

    /// The owner had the partition sought back to `next`: what follows is read again.
    pub(crate) fn rewind_to(&mut self, next: i64) {
        self.0 = Some(next);
    }
}

#[derive(Debug, Default)]
struct State {
    reasons: PauseReasons,
    /// The next offset to consume, as last stored (-1: nothing stored yet).
    stored: i64,
}

/// The state of one partition for one assignment.
#[derive(Debug)]
pub(crate) struct PartitionSlot {
    topic: Arc<str>,
    partition: i32,
    generation: u64,
    state: Mutex<State>,
    /// Set under `state`'s lock (so a pause, resume or store holding the lock sees it),
    /// read without it by the dispatcher's per-record check.
    revoked: AtomicBool,
    /// Bumped by the dispatcher each time it seeks the partition back for a not-due record;
    /// batches carry the value they were read under, so the owner can drop records that
    /// were read before the seek and will be read again.
    pub(crate) fetch_epoch: AtomicU64,
}

impl PartitionSlot {
    pub(crate) fn new(topic: &str, partition: i32, generation: u64) -> Self {
        PartitionSlot {
            topic: Arc::from(topic),
            partition,
            generation,
            state: Mutex::new(State { stored: -1, ..State::default() }),
            revoked: AtomicBool::new(false),
            fetch_epoch: AtomicU64::new(0),
        }
    }

    pub(crate) fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Why the partition is paused now (empty: it is not).
    pub(crate) fn pause_reasons(&self) -> PauseReasons {
        self.state.lock().expect("partition lock").reasons
    }

    fn list(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::with_capacity(1);
        list.add_partition(&self.topic, self.partition);
        list
    }

    /// Fences the slot: from now on it pauses, resumes and stores nothing.
    pub(crate) fn revoke(&self) {
        let _state = self.state.lock().expect("partition lock");
        self.revoked.store(true, Ordering::Release);
    }

    /// Adds `reason`; pauses the partition if it was running. `false` if revoked.
    pub(crate) fn pause<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(&self, consumer: &C, reason: PauseReason) -> bool {
        let mut state = self.state.lock().expect("partition lock");
        if self.is_revoked() {
            return false;
        }
        if state.reasons.insert(reason) == Transition::Pause {
            tracing::debug!(topic = %self.topic, partition = self.partition, ?reason, "pausing");
            if let Err(e) = consumer.pause(&self.list()) {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "pause failed");
            }
        }
        true
    }

    /// Removes `reason`; resumes the partition when no reason is left.
    pub(crate) fn resume<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(&self, consumer: &C, reason: PauseReason) {
        let mut state = self.state.lock().expect("partition lock");
        if self.is_revoked() {
            return;
        }
        if state.reasons.remove(reason) == Transition::Resume {
            tracing::debug!(topic = %self.topic, partition = self.partition, ?reason, "resuming");
            if let Err(e) = consumer.resume(&self.list()) {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "resume failed");
            }
        }
    }

    /// Resumes the partition in the client again if it has no reason to be paused: a resume
    /// can be lost inside librdkafka, which then keeps the partition paused for good while
    /// reporting success. librdkafka drops a pause or resume whose version barrier was
    /// overtaken by another one (confluentinc/librdkafka#5591), as when the resume of a
    /// partition that comes back paused from an earlier assignment races with librdkafka
    /// starting to fetch it. For a partition the client does not hold paused this is a
    /// no-op inside librdkafka (no barrier, no message dropped); it costs about half a
    /// microsecond.
    pub(crate) fn reassert_resumed<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(&self, consumer: &C) {
        let state = self.state.lock().expect("partition lock");
        if self.is_revoked() || !state.reasons.is_empty() {
            return;
        }
        if let Err(e) = consumer.resume(&self.list()) {
            tracing::debug!(topic = %self.topic, partition = self.partition, error = %e, "resume failed");
        }
    }

    /// Backpressure: the record at `offset`, of `bytes`, does not fit in `budget`. Pauses
    /// the partition (reason backpressure) and seeks it back to that record, read again
    /// once the budget has room for it ([`Budget::want`]); `first`: the first hold of a
    /// spell (logged). `false` if revoked.
    pub(crate) fn hold_back<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &C,
        (offset, bytes): (i64, usize),
        budget: &Budget,
        first: bool,
        metrics: &Metrics,
    ) -> bool {
        if !self.pause(consumer, PauseReason::Backpressure) {
            return false;
        }
        budget.want(bytes);
        metrics.inc_backpressure_holds();
        if first {
            tracing::debug!(topic = %self.topic, partition = self.partition, offset, queued = budget.queued(), budget = budget.limit(),
                "budget for queued records used up: pausing the partition");
        }
        self.seek(consumer, offset, metrics);
        true
    }

    /// Seeks the partition back to `offset`, so it is read again from there. `false` if it
    /// could not: then, unless revoked, the partition is stopped (reason stopped), since
    /// the records after `offset` were let go and would otherwise be skipped; nothing after
    /// them is committed, so they are read again after a rebalance or restart.
    pub(crate) fn seek<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(&self, consumer: &C, offset: i64, metrics: &Metrics) -> bool {
        match consumer.seek(&self.topic, self.partition, Offset::Offset(offset), SEEK_TIMEOUT) {
            Ok(()) => true,
            Err(e) if self.is_revoked() => {
                tracing::debug!(topic = %self.topic, partition = self.partition, error = %e, "seek of a revoked partition");
                false
            }
            Err(e) => {
                tracing::error!(topic = %self.topic, partition = self.partition, offset, error = %e,
                    "could not seek the partition back; stopping it so that nothing is skipped");
                if self.pause(consumer, PauseReason::Stopped) {
                    metrics.inc_stopped_partitions();
                }
                false
            }
        }
    }

    /// Stores `next` (the offset after the last finished record) for the next commit.
    /// Never stores an older offset than before, never after revocation.
    pub(crate) fn store<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(&self, consumer: &C, next: i64) -> bool {
        let mut state = self.state.lock().expect("partition lock");
        if self.is_revoked() || next <= state.stored {
            return false;
        }
        let mut list = TopicPartitionList::with_capacity(1);
        if list.add_partition_offset(&self.topic, self.partition, Offset::Offset(next)).is_err() {
            return false;
        }
        match consumer.store_offsets(&list) {
            Ok(()) => {
                state.stored = next;
                true
            }
            Err(e) => {
                tracing::debug!(topic = %self.topic, partition = self.partition, next, error = %e, "offset not stored");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PauseReason::*;

    #[test]
    fn pause_once_resume_when_no_reason_is_left() {
        let mut r = PauseReasons::default();
        assert_eq!(r.insert(NotDue), Transition::Pause);
        assert_eq!(r.insert(Backpressure), Transition::Nothing);
        assert_eq!(r.insert(NotDue), Transition::Nothing);
        // Lifting backpressure must not resume a partition whose head is not due.
        assert_eq!(r.remove(Backpressure), Transition::Nothing);
        assert!(r.contains(NotDue));
        assert_eq!(r.remove(NotDue), Transition::Resume);
        assert!(r.is_empty());
        // Removing what is not there never resumes.
        assert_eq!(r.remove(Stopped), Transition::Nothing);
        assert_eq!(r.insert(Stopped), Transition::Pause);
        assert_eq!(r.remove(NotDue), Transition::Nothing);
    }

    #[test]
    fn a_record_read_again_is_dropped_until_the_owner_rewinds() {
        let batch = |offsets: &[i64]| offsets.iter().map(|&o| crate::record::Record::new("t", 0, o)).collect::<Vec<_>>();
        let offsets = |records: &[crate::record::Record]| records.iter().map(|r| r.offset()).collect::<Vec<_>>();
        let mut at = ReadPosition::default();
        let mut first = batch(&[500, 501]);
        assert_eq!(at.keep_new(&mut first).0, 0);
        // The rewind after a pause hands 501 over again, with what follows it.
        let mut again = batch(&[501, 502, 503]);
        assert_eq!(at.keep_new(&mut again).0, 1);
        assert_eq!(offsets(&again), [502, 503]);
        // Gaps (compaction, transaction markers) are fine; nothing old comes through.
        let mut gap = batch(&[490, 507]);
        assert_eq!(at.keep_new(&mut gap).0, 1);
        assert_eq!(offsets(&gap), [507]);
        let mut empty = Vec::new();
        assert_eq!(at.keep_new(&mut empty), (0, 0));
        assert_eq!(at, ReadPosition(Some(508)));
        // The owner sought back past a held record: what follows it is new again.
        at.rewind_to(502);
        let mut reread = batch(&[502, 503]);
        assert_eq!(at.keep_new(&mut reread).0, 0);
    }
}
