//! Counters per listener: processed, retried, dead-lettered, dropped and more.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of one listener (cheap atomic increments).
#[derive(Debug, Default)]
pub struct Metrics {
    processed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    dropped: AtomicU64,
    malformed_headers: AtomicU64,
    stopped_partitions: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Records the handler accepted.
    pub processed: u64,
    /// Handler failures (every failed attempt).
    pub failed: u64,
    /// Records republished to a retry topic.
    pub retried: u64,
    /// Records published to the DLT.
    pub dead_lettered: u64,
    /// Records given up without a DLT ([`NoDlt`](crate::policy::DltStrategy::NoDlt)).
    pub dropped: u64,
    /// Retry records whose framework headers could not be read.
    pub malformed_headers: u64,
    /// Partitions stopped by [`FailOnError`](crate::policy::DltStrategy::FailOnError).
    pub stopped_partitions: u64,
}

impl std::ops::Add for MetricsSnapshot {
    type Output = MetricsSnapshot;
    fn add(self, o: MetricsSnapshot) -> MetricsSnapshot {
        MetricsSnapshot {
            processed: self.processed + o.processed,
            failed: self.failed + o.failed,
            retried: self.retried + o.retried,
            dead_lettered: self.dead_lettered + o.dead_lettered,
            dropped: self.dropped + o.dropped,
            malformed_headers: self.malformed_headers + o.malformed_headers,
            stopped_partitions: self.stopped_partitions + o.stopped_partitions,
        }
    }
}

impl std::fmt::Display for MetricsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "processed={} failed={} retried={} dead-lettered={} dropped={} malformed-headers={} stopped-partitions={}",
            self.processed, self.failed, self.retried, self.dead_lettered, self.dropped, self.malformed_headers, self.stopped_partitions
        )
    }
}

macro_rules! counters {
    ($($name:ident => $inc:ident),* $(,)?) => {
        impl Metrics {
            $(pub(crate) fn $inc(&self) { self.$name.fetch_add(1, Relaxed); })*

            /// Reads every counter.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Relaxed)),* }
            }
        }
    };
}

counters! {
    processed => inc_processed,
    failed => inc_failed,
    retried => inc_retried,
    dead_lettered => inc_dead_lettered,
    dropped => inc_dropped,
    malformed_headers => inc_malformed_headers,
    stopped_partitions => inc_stopped_partitions,
}
