//! The listener's circuit breaker, shared by its partition owners: the pure
//! [`Breaker`](crate::breaker::Breaker) behind a lock, an operator's manual switch, and a
//! watch channel that tells every owner when to pause and when to go on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::breaker::{Admission, Breaker, CircuitBreaker, Phase};
use crate::metrics::Metrics;
use crate::time::now_ms;

/// What the owners see: whether handling is held, and until when (the next probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Gate {
    /// Nothing may be handled now but a probe.
    pub(crate) held: bool,
    /// When the next probe may go (`None`: wait for a change).
    pub(crate) probe_at_ms: Option<i64>,
}

/// One listener's circuit. Its log lines come from the owners' tasks, whose span names
/// the listener and partition; the operator's pause and resume name the listener.
pub(crate) struct Circuit {
    listener: String,
    breaker: Option<Mutex<Breaker>>,
    /// The breaker's phase is closed, as last published: admitting a record then takes
    /// neither the lock nor the clock. (A record admitted just as the breaker opens counts
    /// as admitted a moment earlier; its outcome finds the breaker open.)
    closed: AtomicBool,
    manual: AtomicBool,
    gate: watch::Sender<Gate>,
    metrics: Arc<Metrics>,
}

/// The one probe call; reports itself abandoned if dropped without an outcome.
pub(crate) struct Probe {
    circuit: Arc<Circuit>,
    reported: bool,
}

impl Probe {
    /// The probe's outcome: `ok` unless the handler failed in a retryable way.
    pub(crate) fn report(mut self, ok: bool) {
        self.reported = true;
        self.circuit.probe_result(ok);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if !self.reported {
            let mut b = self.circuit.lock();
            if let Some(b) = b.as_mut() {
                b.probe_abandoned(now_ms());
            }
            drop(b);
            self.circuit.publish();
        }
    }
}

/// Whether a record may be handled now.
pub(crate) enum Pass {
    /// Go; report the outcome with [`Circuit::record`].
    Go,
    /// Go as the probe; report through it.
    Probe(Probe),
    /// Hold the record; wait for the gate (until `Some(ms)` at the latest).
    Wait(Option<i64>),
}

impl Circuit {
    pub(crate) fn new(listener: &str, settings: Option<CircuitBreaker>, metrics: Arc<Metrics>) -> Self {
        metrics.set_breaker_open(false);
        Circuit {
            listener: listener.to_owned(),
            breaker: settings.map(|s| Mutex::new(Breaker::new(s))),
            closed: AtomicBool::new(true),
            manual: AtomicBool::new(false),
            gate: watch::Sender::new(Gate::default()),
            metrics,
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Breaker>> {
        self.breaker.as_ref().map(|b| b.lock().expect("breaker lock"))
    }

    /// The gate, to be watched by an owner.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Gate> {
        self.gate.subscribe()
    }

    /// Tells the owners where things stand now.
    fn publish(&self) {
        let manual = self.manual.load(Ordering::Acquire);
        // Under the lock, so that two publishes racing cannot leave an older phase last.
        let breaker = self.lock();
        let phase = breaker.as_ref().map_or(Phase::Closed, |b| b.phase());
        self.closed.store(phase == Phase::Closed, Ordering::Release);
        let gate = match phase {
            _ if manual => Gate { held: true, probe_at_ms: None },
            Phase::Closed => Gate { held: false, probe_at_ms: None },
            Phase::Open { until_ms } => Gate { held: true, probe_at_ms: Some(until_ms) },
            Phase::HalfOpen => Gate { held: true, probe_at_ms: None },
        };
        self.metrics.set_breaker_open(gate.held);
        self.gate.send_replace(gate);
        drop(breaker);
    }

    /// Asks to handle a record now.
    pub(crate) fn admit(self: &Arc<Self>) -> Pass {
        if self.manual.load(Ordering::Acquire) {
            return Pass::Wait(None);
        }
        if self.closed.load(Ordering::Acquire) {
            return Pass::Go;
        }
        let Some(mut b) = self.lock() else { return Pass::Go };
        match b.admit(now_ms()) {
            Admission::Go => Pass::Go,
            Admission::Probe => {
                drop(b);
                self.metrics.inc_breaker_probes();
                tracing::info!("circuit half-open: trying one record");
                self.publish();
                Pass::Probe(Probe { circuit: Arc::clone(self), reported: false })
            }
            Admission::Wait(until) => Pass::Wait(until),
        }
    }

    /// The outcome of a call that went with [`Pass::Go`] (`key`: the record's, see
    /// [`key_of`], computed only when a breaker counts); `true` when handling is held now
    /// (this outcome opened the breaker, another did meanwhile, or an operator paused).
    pub(crate) fn record(&self, failed: bool, key: impl FnOnce() -> u64) -> bool {
        if self.manual.load(Ordering::Acquire) {
            return true;
        }
        let Some(mut b) = self.lock() else { return false };
        let tripped = b.record(now_ms(), failed, key());
        let held = b.phase() != Phase::Closed;
        drop(b);
        if let Some(t) = tripped {
            self.metrics.inc_breaker_opened();
            tracing::warn!("{t}");
            self.publish();
        }
        held
    }

    fn probe_result(&self, ok: bool) {
        let phase = match self.lock() {
            Some(mut b) => b.probe_result(now_ms(), ok),
            None => return,
        };
        match phase {
            Phase::Closed => {
                self.metrics.inc_breaker_closed();
                tracing::info!("circuit closed: the probe succeeded; resuming every partition in order");
            }
            Phase::Open { until_ms } => {
                let wait = until_ms - now_ms();
                tracing::warn!(next_probe_in_ms = wait, "circuit still open: the probe failed");
            }
            Phase::HalfOpen => {}
        }
        self.publish();
    }

    /// An operator's pause: nothing is handled until [`resume`](Self::resume).
    pub(crate) fn pause(&self) {
        self.manual.store(true, Ordering::Release);
        tracing::warn!(listener = %self.listener, "paused by the operator");
        self.publish();
    }

    /// Ends an operator's pause, and closes the breaker if it was open.
    pub(crate) fn resume(&self) {
        self.manual.store(false, Ordering::Release);
        if let Some(mut b) = self.lock() {
            b.close();
        }
        tracing::info!(listener = %self.listener, "resumed by the operator");
        self.publish();
    }
}

/// The key of a record as the breaker counts it: its key's hash, or a value of its own
/// when it has none (keyless records are all distinct).
pub(crate) fn key_of(record: &crate::record::Record) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match record.key() {
        Some(k) => k.hash(&mut h),
        None => (record.topic(), record.partition(), record.offset()).hash(&mut h),
    }
    h.finish()
}
