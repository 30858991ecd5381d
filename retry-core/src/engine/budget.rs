//! The listener's memory budget for queued records, counted in bytes.
//!
//! A record's bytes are reserved when it is read (by its partition's owner, or by the
//! dispatcher for a partition without its own queue); the owner releases them when the
//! record is finished or dropped. A record that does not fit is not queued: its partition
//! is paused (reason backpressure) and sought back to it, and resumes once the queue has
//! drained to half the budget. The budget is
//! never exceeded, except by a single record larger than the whole budget, which is let
//! through alone so that it cannot wedge its partition.
//!
//! A record larger than half the budget may not fit even then. So it is *wanted*: the
//! room it needs is kept free of other records (they are held back instead), and the held
//! partitions resume only once it fits. Without this its partition would go round pause,
//! seek, resume and read again for as long as the others kept the queue between half the
//! budget and the room it needs, and could be starved by them for good. One record is
//! wanted at a time (the largest); the want ends when a record of its size is taken in,
//! when its partition's owner ends (or the dispatcher finds the partition revoked), or
//! when the queue is empty.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Default budget: 64 MiB.
pub(crate) const DEFAULT_BUDGET_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    queued: AtomicUsize,
    /// The bytes of the record wanted (0: none), see the module's doc.
    wanted: AtomicUsize,
    drained: Notify,
    metrics: Arc<Metrics>,
}

impl Budget {
    pub(crate) fn new(limit: usize, metrics: Arc<Metrics>) -> Self {
        Budget { limit: limit.max(1), queued: AtomicUsize::new(0), wanted: AtomicUsize::new(0), drained: Notify::new(), metrics }
    }

    /// Reserves `bytes`; `false` (nothing reserved) if they do not fit. Owners reserve
    /// concurrently: the check and the add are one atomic step. The room of a wanted
    /// record is kept for a record of its size.
    pub(crate) fn try_reserve(&self, bytes: usize) -> bool {
        let wanted = self.wanted.load(Ordering::Acquire);
        let kept = if bytes == wanted { 0 } else { wanted };
        let fits = |queued: usize| (queued == 0 || queued + bytes + kept <= self.limit).then_some(queued + bytes);
        match self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, fits) {
            Ok(before) => {
                if kept == 0 && wanted != 0 {
                    // Taken in: the want is over (unless another took its place meanwhile).
                    let _ = self.wanted.compare_exchange(wanted, 0, Ordering::AcqRel, Ordering::Acquire);
                }
                self.metrics.observe_queued_peak(before + bytes);
                true
            }
            Err(_) => false,
        }
    }

    /// A record of `bytes` did not fit: if it may not fit even once the queue drained to
    /// half the budget, its room is kept from now on (the largest such record wins).
    pub(crate) fn want(&self, bytes: usize) {
        if bytes > self.limit - self.limit / 2 {
            self.wanted.fetch_max(bytes, Ordering::AcqRel);
        }
    }

    /// The owner of a partition held back for a record of `bytes` ends: the room kept for
    /// it (if it is the one wanted) is free again.
    pub(crate) fn unwant(&self, bytes: usize) {
        if bytes > 0 && self.wanted.compare_exchange(bytes, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.drained.notify_waiters();
        }
    }

    /// Gives `bytes` back; wakes everyone held back when the queue drained far enough
    /// (see [`has_room`](Self::has_room)).
    pub(crate) fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let before = self.queued.fetch_sub(bytes, Ordering::AcqRel);
        let after = before - bytes;
        self.metrics.set_queued_bytes(after);
        let wanted = self.wanted.load(Ordering::Acquire);
        if after == 0 && wanted != 0 {
            // Nothing queued: a wanted record fits whatever its size; a want whose partition
            // went away without reading it again ends here.
            self.wanted.store(0, Ordering::Release);
        }
        // Those held back waited for the room the want left (were woken at its end).
        let room_at = self.room_at(wanted);
        if before > room_at && after <= room_at {
            self.drained.notify_waiters();
        }
    }

    /// The queued bytes at or below which partitions held back resume: half the budget, or
    /// less while a record is wanted, so that it fits (nothing queued, for one larger
    /// than the budget).
    fn room_at(&self, wanted: usize) -> usize {
        (self.limit / 2).min(self.limit.saturating_sub(wanted))
    }

    /// Whether paused partitions may resume.
    pub(crate) fn has_room(&self) -> bool {
        self.queued.load(Ordering::Acquire) <= self.room_at(self.wanted.load(Ordering::Acquire))
    }

    /// Resolves when the queue drained to half the budget (or was already there).
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.has_room() {
                return;
            }
            notified.await;
        }
    }

    /// Publishes the bytes queued now as a gauge (once per batch, not per record).
    pub(crate) fn report(&self) {
        self.metrics.set_queued_bytes(self.queued());
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_exceeded_but_one_huge_record_passes_alone() {
        let metrics = Arc::new(Metrics::default());
        let b = Budget::new(1_000, Arc::clone(&metrics));
        assert!(b.try_reserve(600));
        assert!(b.try_reserve(400));
        assert!(!b.try_reserve(1));
        assert_eq!(metrics.snapshot().peak_queued_bytes, 1_000);
        b.release(1_000);
        assert!(b.try_reserve(5_000), "alone, a record larger than the budget must pass");
        assert!(!b.try_reserve(1));
        b.release(5_000);
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn a_record_larger_than_half_the_budget_gets_its_room() {
        let b = Budget::new(1_000, Arc::default());
        assert!(b.try_reserve(400), "another partition's records");
        assert!(!b.try_reserve(700), "does not fit now");
        b.want(700);
        assert!(!b.has_room(), "would not fit at 400 either: no resuming to read it again");
        assert!(!b.try_reserve(100), "its room is kept from the others");
        b.release(100);
        assert!(b.has_room(), "it fits now");
        assert!(b.try_reserve(700), "and is taken in");
        assert_eq!(b.wanted.load(Ordering::Acquire), 0, "the want ended with it");
        b.release(1_000);
        assert!(b.has_room());
    }

    #[test]
    fn a_want_ends_with_its_owner_or_an_empty_queue() {
        let b = Budget::new(1_000, Arc::default());
        assert!(b.try_reserve(400));
        b.want(600);
        b.want(300);
        assert!(!b.try_reserve(1), "the larger want stays");
        b.unwant(600);
        assert!(b.try_reserve(1));
        b.want(700);
        b.release(401);
        assert!(b.has_room() && b.try_reserve(400), "an empty queue ends it");
        b.release(400);
        b.want(5_000);
        assert!(b.has_room(), "larger than the budget: it waits for an empty queue, here now");
        assert!(b.try_reserve(5_000), "and passes alone");
    }

    #[test]
    fn room_again_at_half() {
        let b = Budget::new(1_000, Arc::default());
        assert!(b.try_reserve(900));
        assert!(!b.has_room());
        b.release(399);
        assert!(!b.has_room());
        b.release(1);
        assert!(b.has_room());
    }
}
