//! Counters, gauges and histograms per listener: processed, retried, dead-lettered,
//! dropped, queued bytes, handler duration, retry lateness and more.
//!
//! Kept twice over: as atomics for [`MetricsSnapshot`] (in-process checks and the
//! runtime's summary), and through the [`metrics`] facade, labelled by listener, for
//! whichever recorder the program installs — the `prometheus` feature serves them over
//! HTTP (`RuntimeBuilder::prometheus`). Names:
//!
//! | metric | kind |
//! |---|---|
//! | `retryable_topic_processed_total`, `_failed_total`, `_retried_total`, `_dead_lettered_total`, `_dropped_total`, `_malformed_headers_total`, `_stopped_partitions_total`, `_stopped_listeners_total`, `_publish_failed_total`, `_publish_retries_total`, `_consumer_errors_total`, `_commit_failed_total`, `_breaker_opened_total`, `_breaker_probes_total`, `_breaker_closed_total`, `_held_by_breaker_total`, `_hops_total`, `_deferred_total`, `_backpressure_holds_total`, `_handler_timeouts_total`, `_stalled_calls_total`, `_revoked_partitions_total` | counter |
//! | `retryable_topic_handler_seconds` (every call), `_retry_lateness_seconds` (handled minus due, retries), `_recovery_seconds` (first failure to success) | histogram |
//! | `retryable_topic_assigned_partitions`, `_queued_bytes`, `_in_flight_republishes`, `_breaker_open`, `_paused_partitions{reason}`, `_concurrent_calls`, `_waiting_for_key` | gauge |

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live metrics of one listener (cheap atomic increments; facade handles registered once).
#[derive(Debug, Default)]
pub struct Metrics {
    facade: Facade,
    processed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    dropped: AtomicU64,
    malformed_headers: AtomicU64,
    stopped_partitions: AtomicU64,
    stopped_listeners: AtomicU64,
    publish_failed: AtomicU64,
    publish_retries: AtomicU64,
    consumer_errors: AtomicU64,
    commit_failed: AtomicU64,
    breaker_opened: AtomicU64,
    breaker_probes: AtomicU64,
    breaker_closed: AtomicU64,
    held_by_breaker: AtomicU64,
    hops: AtomicU64,
    deferred: AtomicU64,
    backpressure_holds: AtomicU64,
    handler_timeouts: AtomicU64,
    stalled_calls: AtomicU64,
    revoked_partitions: AtomicU64,
    assigned_partitions: AtomicU64,
    queued_bytes: AtomicU64,
    peak_queued_bytes: AtomicU64,
    breaker_open: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Records the handler accepted.
    pub processed: u64,
    /// Handler failures (every failed attempt but those asking for their own delay, which
    /// count as `deferred`).
    pub failed: u64,
    /// Records republished to a retry topic.
    pub retried: u64,
    /// Records published to the DLT.
    pub dead_lettered: u64,
    /// Records given up without a DLT ([`NoDlt`](crate::policy::DltStrategy::NoDlt)).
    pub dropped: u64,
    /// Retry records whose framework headers could not be read.
    pub malformed_headers: u64,
    /// Partitions stopped because a record could go nowhere (its DLT publish failed under
    /// [`FailOnError`](crate::policy::DltStrategy::FailOnError), or cannot ever succeed).
    pub stopped_partitions: u64,
    /// Listeners stopped because the engine's dispatcher panicked (a bug of ours, logged
    /// as one; the listener left its group, so its partitions went to the other members),
    /// or because their consumer hit a fatal error (a fenced static member, say).
    pub stopped_listeners: u64,
    /// Records the retry topic refused for good (e.g. too large once the retry headers are
    /// added); they went to the DLT with reason `publish-failed`, or were dropped.
    pub publish_failed: u64,
    /// Publishes to a retry topic or DLT tried again after a transient error (a broker
    /// away, a topic not there yet…). A publish that keeps failing is also logged at
    /// warning level at its first failure and once a minute after.
    pub publish_retries: u64,
    /// Errors the consumer reported (an unknown or deleted topic, a broker away…); each
    /// is logged at most once per 10 s, and reading goes on without a pause.
    pub consumer_errors: u64,
    /// Offset commits the broker refused or that could not be sent (logged at most once per
    /// 10 s per error): the records since the last commit are read again after a restart
    /// or a rebalance, so more are handled twice than usual.
    pub commit_failed: u64,
    /// Times the circuit breaker opened (an outage was suspected).
    pub breaker_opened: u64,
    /// Probe calls made while the breaker was open.
    pub breaker_probes: u64,
    /// Times the breaker closed after a successful probe.
    pub breaker_closed: u64,
    /// Failed records held in place (not republished, not counted as an attempt) because
    /// the breaker was open.
    pub held_by_breaker: u64,
    /// Records moved from one ladder tier to the next (republished without a handler
    /// call; see [`ladder`](crate::ladder)).
    pub hops: u64,
    /// Failed attempts whose handler asked for its own delay
    /// ([`HandlerError::retry_after`](crate::failure::HandlerError::retry_after)); counted
    /// here instead of in `failed`.
    pub deferred: u64,
    /// Times a partition was paused and sought back because its next record did not fit
    /// in the listener's budget for queued records (it is read again once it fits).
    pub backpressure_holds: u64,
    /// Handler calls given up at the listener's
    /// [`handler_timeout`](crate::ListenerBuilder::handler_timeout) (each also a failed
    /// attempt).
    pub handler_timeouts: u64,
    /// Handler calls that ran longer than the listener's
    /// [`stalled_after`](crate::ListenerBuilder::stalled_after) (60 s by default), each
    /// counted once; each is also logged at warning level then and once a minute while it
    /// lasts.
    pub stalled_calls: u64,
    /// Listeners whose handling is held now by an open breaker or an operator's pause
    /// (gauge: 0 or 1 per listener, summed).
    pub breaker_open: u64,
    /// Partitions (source and retry topics) this listener holds now.
    pub assigned_partitions: u64,
    /// Partitions taken from this listener by rebalances (and at shutdown): all of them at
    /// each rebalance with the default (eager) assignors, only the ones that move with
    /// `cooperative-sticky`.
    pub revoked_partitions: u64,
    /// Bytes of records queued in the listener now (gauge; summed over listeners).
    pub queued_bytes: u64,
    /// The most bytes ever queued at once (never above the listener's budget but for a
    /// single record larger than it; the largest over listeners when added up).
    pub peak_queued_bytes: u64,
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
            stopped_listeners: self.stopped_listeners + o.stopped_listeners,
            publish_failed: self.publish_failed + o.publish_failed,
            publish_retries: self.publish_retries + o.publish_retries,
            consumer_errors: self.consumer_errors + o.consumer_errors,
            commit_failed: self.commit_failed + o.commit_failed,
            breaker_opened: self.breaker_opened + o.breaker_opened,
            breaker_probes: self.breaker_probes + o.breaker_probes,
            breaker_closed: self.breaker_closed + o.breaker_closed,
            held_by_breaker: self.held_by_breaker + o.held_by_breaker,
            hops: self.hops + o.hops,
            deferred: self.deferred + o.deferred,
            backpressure_holds: self.backpressure_holds + o.backpressure_holds,
            handler_timeouts: self.handler_timeouts + o.handler_timeouts,
            stalled_calls: self.stalled_calls + o.stalled_calls,
            breaker_open: self.breaker_open + o.breaker_open,
            assigned_partitions: self.assigned_partitions + o.assigned_partitions,
            revoked_partitions: self.revoked_partitions + o.revoked_partitions,
            queued_bytes: self.queued_bytes + o.queued_bytes,
            peak_queued_bytes: self.peak_queued_bytes.max(o.peak_queued_bytes),
        }
    }
}

impl std::fmt::Display for MetricsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "processed={} failed={} retried={} dead-lettered={} dropped={} malformed-headers={} stopped-partitions={} stopped-listeners={} publish-failed={} publish-retries={} commit-failed={} breaker-opened={} held-by-breaker={} hops={} deferred={} backpressure-holds={} handler-timeouts={} stalled-calls={} revoked-partitions={} peak-queued-bytes={}",
            self.processed,
            self.failed,
            self.retried,
            self.dead_lettered,
            self.dropped,
            self.malformed_headers,
            self.stopped_partitions,
            self.stopped_listeners,
            self.publish_failed,
            self.publish_retries,
            self.commit_failed,
            self.breaker_opened,
            self.held_by_breaker,
            self.hops,
            self.deferred,
            self.backpressure_holds,
            self.handler_timeouts,
            self.stalled_calls,
            self.revoked_partitions,
            self.peak_queued_bytes
        )
    }
}

/// The facade's handles for one listener (no-ops until a recorder is installed).
#[derive(Debug)]
struct Handles {
    handler_seconds: metrics::Histogram,
    retry_lateness_seconds: metrics::Histogram,
    recovery_seconds: metrics::Histogram,
    assigned_partitions: metrics::Gauge,
    revoked_partitions: metrics::Counter,
    queued_bytes: metrics::Gauge,
    in_flight_republishes: metrics::Gauge,
    breaker_open: metrics::Gauge,
    paused_partitions: [metrics::Gauge; 4],
    concurrent_calls: metrics::Gauge,
    waiting_for_key: metrics::Gauge,
}

/// The pause reasons as the `reason` label writes them, in `paused_partitions` order.
pub(crate) const PAUSE_REASONS: [&str; 4] = ["not_due", "backpressure", "stopped", "breaker"];

impl Default for Handles {
    fn default() -> Self {
        Handles {
            handler_seconds: metrics::Histogram::noop(),
            retry_lateness_seconds: metrics::Histogram::noop(),
            recovery_seconds: metrics::Histogram::noop(),
            assigned_partitions: metrics::Gauge::noop(),
            revoked_partitions: metrics::Counter::noop(),
            queued_bytes: metrics::Gauge::noop(),
            in_flight_republishes: metrics::Gauge::noop(),
            breaker_open: metrics::Gauge::noop(),
            paused_partitions: std::array::from_fn(|_| metrics::Gauge::noop()),
            concurrent_calls: metrics::Gauge::noop(),
            waiting_for_key: metrics::Gauge::noop(),
        }
    }
}

impl Handles {
    fn new(listener: &str) -> Self {
        let l = listener.to_owned();
        Handles {
            handler_seconds: metrics::histogram!("retryable_topic_handler_seconds", "listener" => l.clone()),
            retry_lateness_seconds: metrics::histogram!("retryable_topic_retry_lateness_seconds", "listener" => l.clone()),
            recovery_seconds: metrics::histogram!("retryable_topic_recovery_seconds", "listener" => l.clone()),
            assigned_partitions: metrics::gauge!("retryable_topic_assigned_partitions", "listener" => l.clone()),
            revoked_partitions: metrics::counter!("retryable_topic_revoked_partitions_total", "listener" => l.clone()),
            queued_bytes: metrics::gauge!("retryable_topic_queued_bytes", "listener" => l.clone()),
            in_flight_republishes: metrics::gauge!("retryable_topic_in_flight_republishes", "listener" => l.clone()),
            breaker_open: metrics::gauge!("retryable_topic_breaker_open", "listener" => l.clone()),
            paused_partitions: PAUSE_REASONS
                .map(|reason| metrics::gauge!("retryable_topic_paused_partitions", "listener" => l.clone(), "reason" => reason)),
            concurrent_calls: metrics::gauge!("retryable_topic_concurrent_calls", "listener" => l.clone()),
            waiting_for_key: metrics::gauge!("retryable_topic_waiting_for_key", "listener" => l.clone()),
        }
    }
}

impl Metrics {
    /// Metrics of the listener `listener`, registered with the installed recorder (if any).
    pub fn new(listener: &str) -> Self {
        Metrics { facade: Facade::new(listener), ..Metrics::default() }
    }

    /// A handler call took `took`.
    pub(crate) fn observe_handler(&self, took: Duration) {
        self.facade.handles.handler_seconds.record(took.as_secs_f64());
    }

    /// A retry was handled `late_ms` after its due time.
    pub(crate) fn observe_lateness(&self, late_ms: i64) {
        self.facade.handles.retry_lateness_seconds.record(late_ms.max(0) as f64 / 1000.0);
    }

    /// A record succeeded `ms` after its first failure.
    pub(crate) fn observe_recovery(&self, ms: i64) {
        self.facade.handles.recovery_seconds.record(ms.max(0) as f64 / 1000.0);
    }

    /// A rebalance took `revoked` partitions from this listener (none when it gave some);
    /// it holds `now` partitions after it.
    pub(crate) fn rebalanced(&self, revoked: usize, now: usize) {
        let (revoked, now) = (revoked as u64, now as u64);
        self.revoked_partitions.fetch_add(revoked, Relaxed);
        self.facade.handles.revoked_partitions.increment(revoked);
        self.assigned_partitions.store(now, Relaxed);
        self.facade.handles.assigned_partitions.set(now as f64);
    }

    /// Republishes in flight changed by `delta`.
    pub(crate) fn add_in_flight(&self, delta: f64) {
        self.facade.handles.in_flight_republishes.increment(delta);
    }

    /// Under key concurrency: handler calls running alongside others changed by `calls`,
    /// records waiting for their key by `waiting`.
    pub(crate) fn add_key_concurrency(&self, calls: f64, waiting: f64) {
        self.facade.handles.concurrent_calls.increment(calls);
        self.facade.handles.waiting_for_key.increment(waiting);
    }

    /// Partitions paused for reason number `reason` (see [`PAUSE_REASONS`]) now.
    pub(crate) fn set_paused(&self, counts: [usize; 4]) {
        for (gauge, n) in self.facade.handles.paused_partitions.iter().zip(counts) {
            gauge.set(n as f64);
        }
    }
}

macro_rules! counters {
    ($($name:ident => $inc:ident),* $(,)?) => {
        /// The facade's side of [`Metrics`].
        #[derive(Debug)]
        struct Facade {
            handles: Handles,
            $($name: metrics::Counter,)*
        }

        impl Default for Facade {
            fn default() -> Self {
                Facade { handles: Handles::default(), $($name: metrics::Counter::noop(),)* }
            }
        }

        impl Facade {
            fn new(listener: &str) -> Self {
                Facade {
                    handles: Handles::new(listener),
                    $($name: metrics::counter!(concat!("retryable_topic_", stringify!($name), "_total"), "listener" => listener.to_owned()),)*
                }
            }
        }

        impl Metrics {
            $(pub(crate) fn $inc(&self) {
                self.$name.fetch_add(1, Relaxed);
                self.facade.$name.increment(1);
            })*

            /// Reads every counter.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot {
                    $($name: self.$name.load(Relaxed),)*
                    queued_bytes: self.queued_bytes.load(Relaxed),
                    breaker_open: self.breaker_open.load(Relaxed),
                    assigned_partitions: self.assigned_partitions.load(Relaxed),
                    revoked_partitions: self.revoked_partitions.load(Relaxed),
                    peak_queued_bytes: self.peak_queued_bytes.load(Relaxed),
                }
            }

            /// Raises the peak of queued bytes to `bytes` if higher (a plain load first: the
            /// read-modify-write happens only when the peak moves).
            pub(crate) fn observe_queued_peak(&self, bytes: usize) {
                let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
                if bytes > self.peak_queued_bytes.load(Relaxed) {
                    self.peak_queued_bytes.fetch_max(bytes, Relaxed);
                }
            }

            /// Records whether handling is held by the breaker or an operator now.
            pub(crate) fn set_breaker_open(&self, open: bool) {
                self.breaker_open.store(u64::from(open), Relaxed);
                self.facade.handles.breaker_open.set(f64::from(u8::from(open)));
            }

            /// Records the bytes queued now.
            pub(crate) fn set_queued_bytes(&self, bytes: usize) {
                let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
                self.queued_bytes.store(bytes, Relaxed);
                self.peak_queued_bytes.fetch_max(bytes, Relaxed);
                self.facade.handles.queued_bytes.set(bytes as f64);
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
    stopped_listeners => inc_stopped_listeners,
    publish_failed => inc_publish_failed,
    publish_retries => inc_publish_retries,
    consumer_errors => inc_consumer_errors,
    commit_failed => inc_commit_failed,
    breaker_opened => inc_breaker_opened,
    breaker_probes => inc_breaker_probes,
    breaker_closed => inc_breaker_closed,
    held_by_breaker => inc_held_by_breaker,
    hops => inc_hops,
    deferred => inc_deferred,
    backpressure_holds => inc_backpressure_holds,
    handler_timeouts => inc_handler_timeouts,
    stalled_calls => inc_stalled_calls,
}
