//! The listener's memory budget for queued records, counted in bytes.
//!
//! A record's bytes are reserved when it is read (by its partition's owner, or by the
//! dispatcher for a partition without its own queue); the owner releases them when the
//! record is finished or dropped. A record that does not fit is not queued: its partition
//! is paused (reason backpressure) and sought back to it, and resumes once the queue has
//! drained to half the budget. The budget is
//! never exceeded, except by a single record larger than the whole budget, which is let
//! through alone so that it cannot wedge its partition.

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
    drained: Notify,
    metrics: Arc<Metrics>,
}

impl Budget {
    pub(crate) fn new(limit: usize, metrics: Arc<Metrics>) -> Self {
        Budget { limit: limit.max(1), queued: AtomicUsize::new(0), drained: Notify::new(), metrics }
    }

    /// Reserves `bytes`; `false` (nothing reserved) if they do not fit. Owners reserve
    /// concurrently: the check and the add are one atomic step.
    pub(crate) fn try_reserve(&self, bytes: usize) -> bool {
        let fits = |queued: usize| (queued == 0 || queued + bytes <= self.limit).then_some(queued + bytes);
        match self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, fits) {
            Ok(before) => {
                self.metrics.observe_queued_peak(before + bytes);
                true
            }
            Err(_) => false,
        }
    }

    /// Gives `bytes` back; wakes everyone held back when the queue drained to half the
    /// budget.
    pub(crate) fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let before = self.queued.fetch_sub(bytes, Ordering::AcqRel);
        self.metrics.set_queued_bytes(before - bytes);
        let half = self.limit / 2;
        if before > half && before - bytes <= half {
            self.drained.notify_waiters();
        }
    }

    /// Whether paused partitions may resume.
    pub(crate) fn has_room(&self) -> bool {
        self.queued.load(Ordering::Acquire) <= self.limit / 2
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
