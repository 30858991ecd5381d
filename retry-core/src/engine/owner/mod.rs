//! The owner of one assigned partition: one task that handles the partition's records in
//! offset order, keeps their republishes in flight, and stores the partition's offset as a
//! contiguous watermark.
//!
//! The owner reads its partition's own queue (see [`queue`](super::queue)): it copies each
//! message into a [`Record`] once and reserves its bytes in the listener's budget; a record
//! that does not fit pauses the partition (reason backpressure) and seeks it back to that
//! record, read again once the queue has drained. (A partition whose queue could not be
//! split off gets its records from the dispatcher in batches.) For each record the owner
//! asks the [`journey`](crate::journey) what it is (due or not, which attempt) and what
//! follows a failure, and carries that out (the latter in [`failure`]). A failed record's
//! republish is enqueued and the next record handled at once; the acknowledgements are
//! awaited in offset order (a bounded window), and an offset is stored only when every
//! record before it is handled, acknowledged in a retry topic or DLT, or dropped under
//! `NoDlt`.
//!
//! With [`key_concurrency`](crate::ListenerBuilder::key_concurrency) above 1, up to that
//! many handler calls run at once on the owner's task, never two of one key: each record
//! takes its place in the window in offset order as it is taken in; one whose key is busy
//! waits behind its key (in offset order) while the records of other keys go on, and starts
//! when the call before it of its key is over. A call that comes back held by the circuit
//! breaker keeps its place and is parked, to be called again first when the gate opens.
//!
//! A retry record that is not due is held, unhandled, until it is; for a wait of some
//! length the partition is paused meanwhile (reason not-due) and resumed shortly before the
//! record is due, so the records due right after it have been fetched again by then. For a
//! long wait the records queued behind it are dropped and the partition sought back to
//! them, so a not-due backlog costs one record of memory. Every pause, resume and seek of
//! a partition with its own queue happens on its owner's task, the one that reads it (the
//! dispatcher only repeats the resume of a partition with no reason to be paused, in case
//! librdkafka lost it: [`PartitionSlot::reassert_resumed`]).

mod failure;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, OptionFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::circuit::{self, Gate, Pass, Probe};
use super::execute;
use super::partition::{PartitionSlot, PauseReason, ReadPosition};
use super::publish::{Acks, Delivered, Republish, RetryTarget};
use super::queue::{self, OwnQueue, Read};
use super::window::{Released, Window};
use super::RunningListener;
use crate::failure::HandlerError;
use crate::headers::FailureKind;
use crate::journey::{self, Arrival, FailedAttempt, Plan};
use crate::record::{ReadShape, Record};
use crate::time::{format_ms, now_ms};
use crate::topology::SourceTopics;

/// Republishes in flight per partition before the owner waits for acknowledgements.
const MAX_IN_FLIGHT: usize = 1_024;
/// Records waiting for their key (`key_concurrency` above 1) before the owner stops
/// taking more in.
const MAX_WAITING: usize = 1_024;
/// Records finished between two offset stores while the partition stays busy.
const STORE_EVERY: u32 = 512;

/// Records of one partition, in offset order, read under one fetch epoch.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) epoch: u64,
    pub(crate) records: Vec<Record>,
    pub(crate) bytes: usize,
}

/// What an owner asks of the dispatcher (the only task that reads the consumer).
#[derive(Debug)]
pub(crate) enum Request {
    /// Seek the partition back to `offset` and bump its fetch epoch.
    Seek { slot: Arc<PartitionSlot>, offset: i64 },
}

/// Set when an owner has finished (also when its task is aborted or panics).
#[derive(Debug, Default)]
pub(crate) struct Finished {
    done: Mutex<bool>,
    changed: Condvar,
    notify: Notify,
}

impl Finished {
    fn set(&self) {
        *self.done.lock().expect("finished lock") = true;
        self.changed.notify_all();
        self.notify.notify_waiters();
    }

    pub(crate) fn is_set(&self) -> bool {
        *self.done.lock().expect("finished lock")
    }

    /// Blocks the thread until finished or `timeout`; `true` if finished.
    pub(crate) fn wait_blocking(&self, timeout: Duration) -> bool {
        let done = self.done.lock().expect("finished lock");
        let (done, _) = self.changed.wait_timeout_while(done, timeout, |d| !*d).expect("finished lock");
        *done
    }

    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

struct FinishGuard(Arc<Finished>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// The dispatcher's handle on an owner.
#[derive(Debug)]
pub(crate) struct OwnerHandle {
    pub(crate) inbox: mpsc::UnboundedSender<Batch>,
    pub(crate) cancel: CancellationToken,
    pub(crate) finished: Arc<Finished>,
    pub(crate) join: JoinHandle<()>,
}

/// Starts the owner of `slot`. It waits for `previous` (the owner of the same partition in
/// an earlier assignment) to finish first, so no record is handled by two owners at once.
pub(crate) fn spawn(
    shared: Arc<RunningListener>,
    slot: Arc<PartitionSlot>,
    own: Option<Arc<OwnQueue>>,
    previous: Option<Arc<Finished>>,
    cancel: CancellationToken,
) -> OwnerHandle {
    let (inbox, rx) = mpsc::unbounded_channel();
    let finished = Arc::new(Finished::default());
    let span = tracing::info_span!("partition", listener = %shared.listener.name(), topic = %slot.topic(), partition = slot.partition(), generation = slot.generation());
    let source = shared.listener.topology().role(slot.topic()).map(|r| r.source().clone());
    let gate = shared.circuit.subscribe();
    let concurrency = shared.listener.key_concurrency();
    let owner = Owner {
        concurrency,
        running: FuturesUnordered::new(),
        busy_keys: HashMap::new(),
        waiting: 0,
        ready: VecDeque::new(),
        keys: RandomState::new(),
        parked: VecDeque::new(),
        shared,
        gate,
        breaker_hold: false,
        probe_at: None,
        slot,
        source,
        own,
        held_back: None,
        read_shape: ReadShape::default(),
        inbox: rx,
        cancel: cancel.clone(),
        queue: VecDeque::new(),
        min_epoch: 0,
        read: ReadPosition::default(),
        window: Window::new(),
        acks: Arc::default(),
        acked: Vec::new(),
        released: Vec::new(),
        done_through: None,
        finished_since_store: 0,
        unreleased: 0,
        not_due_until: None,
        resume_at: None,
        held: None,
        stopped: false,
        gave_up: false,
        reported_in_flight: 0,
        reported_calls: (0, 0),
    };
    let guard = FinishGuard(Arc::clone(&finished));
    let join = tokio::spawn(
        async move {
            let _guard = guard;
            if let Some(previous) = previous {
                tracing::debug!("waiting for the previous owner of this partition");
                previous.wait().await;
            }
            tracing::debug!(own_queue = owner.own.is_some(), "owner started");
            let (slot, shared) = (Arc::clone(&owner.slot), Arc::clone(&owner.shared));
            // The owner is dropped with its future, cleaning up (see its `Drop`) before
            // the partition is stopped.
            let ran = AssertUnwindSafe(owner.run()).catch_unwind().await;
            if let Err(panic) = ran {
                shared.metrics.inc_stopped_partitions();
                slot.pause(&*shared.consumer, PauseReason::Stopped);
                tracing::error!(
                    panic = %execute::panic_text(&*panic),
                    "the partition's owner failed (a bug in retryable-topic: please report it); the partition is stopped, \
                     and its records from the last committed offset on are read again by its next owner (after a rebalance \
                     or a restart)"
                );
            }
        }
        .instrument(span),
    );
    OwnerHandle { inbox, cancel, finished, join }
}

/// How a record left the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Handled, acknowledged in a retry topic or DLT, or dropped: its offset may pass.
    Done,
    /// It can go nowhere: the partition stops, the offset stays before it.
    Stop,
    /// Given up half-way by revocation or shutdown: the offset stays before it.
    Abandoned,
}

struct Owner {
    shared: Arc<RunningListener>,
    /// The listener's circuit: held while its breaker is open or an operator paused it.
    gate: watch::Receiver<Gate>,
    /// The head of the queue waits for the gate (the breaker is open).
    breaker_hold: bool,
    /// When the breaker's next probe may go, while held.
    probe_at: Option<i64>,
    slot: Arc<PartitionSlot>,
    source: Option<SourceTopics>,
    /// The partition's own queue (none: records come from the dispatcher's inbox).
    own: Option<Arc<OwnQueue>>,
    /// Not reading: the budget had no room for the record of these bytes (the partition is
    /// paused, reason backpressure).
    held_back: Option<usize>,
    /// The headers' share of the last read from the own queue (sizes the next).
    read_shape: ReadShape,
    inbox: mpsc::UnboundedReceiver<Batch>,
    cancel: CancellationToken,
    queue: VecDeque<Record>,
    /// Batches read under an older fetch epoch are stale (the partition was sought back).
    min_epoch: u64,
    /// The offset after the last record taken in (records before it are re-reads).
    read: ReadPosition,
    window: Window<Outcome>,
    /// Where the producer puts the acknowledgements of this partition's republishes.
    acks: Arc<Acks>,
    /// Scratch space for the acknowledgements taken from `acks`.
    acked: Vec<(Republish, Delivered)>,
    /// Scratch space for what leaves the window.
    released: Vec<Released<Outcome>>,
    /// The last offset finished with every offset before it finished.
    done_through: Option<i64>,
    finished_since_store: u32,
    /// Bytes of finished records not yet given back to the budget (given back in batches).
    unreleased: usize,
    /// The head of the queue is not due before this.
    not_due_until: Option<i64>,
    /// The partition, paused because its head is not due, is resumed at this time (shortly
    /// before the head is due: [`journey::hold`]).
    resume_at: Option<i64>,
    /// The record last held back as not due: (offset, until).
    held: Option<(i64, i64)>,
    stopped: bool,
    /// A record was given up half-way (revocation or shutdown): no offset passes it, even
    /// when records behind it are done.
    gave_up: bool,
    /// This partition's share of the in-flight gauge.
    reported_in_flight: usize,
    /// This partition's share of the concurrent-calls and waiting-for-key gauges.
    reported_calls: (usize, usize),
    /// Handler calls at once (1: inline, one record at a time).
    concurrency: usize,
    /// Handler calls under way (`concurrency` above 1).
    running: FuturesUnordered<BoxFuture<'static, Ran>>,
    /// The keys (hashed) of the records running or parked, each with the records of that
    /// key waiting their turn, in offset order (their places in the window taken).
    busy_keys: HashMap<u64, VecDeque<Parked>>,
    /// Records waiting in `busy_keys`.
    waiting: usize,
    /// Records whose turn has come (the call before them of their key is over).
    ready: VecDeque<Parked>,
    keys: RandomState,
    /// Calls held by the circuit breaker, in window order: called again first.
    parked: VecDeque<Parked>,
}

/// A record on its way through the handler (its attempt and retry headers set on it):
/// what follows the call needs.
struct Call {
    record: Record,
    bytes: usize,
    probe: Option<Probe>,
    /// Its place among the running calls (`concurrency` above 1); inline calls take their
    /// place in the window when done.
    place: Option<Place>,
}

/// Where a call made alongside others stands: its place in the window, taken when it
/// started (or earlier, while it waited), and its key's hash among the busy keys.
#[derive(Clone, Copy)]
struct Place {
    seq: u64,
    key: u64,
}

/// A call made alongside others, back with its outcome.
struct Ran {
    call: Call,
    result: Result<(), HandlerError>,
    took: Duration,
}

/// A failed record (or one given up unhandled) with the journey's plan for it, to be
/// carried out; `bytes` and `seq` as in [`Owner::carry_out`].
struct Failed {
    seq: Option<u64>,
    record: Record,
    bytes: usize,
    plan: Plan,
}

/// A record with its place in the window, not in the handler: parked (it came back held
/// by the circuit breaker) or waiting for its key.
struct Parked {
    record: Record,
    bytes: usize,
    seq: u64,
}

impl Owner {
    async fn run(mut self) {
        let mut inbox_open = true;
        let mut gate_open = true;
        self.apply_gate();
        loop {
            if self.window.in_flight() > 0 {
                self.window.poll_ready();
                self.take_acks();
                self.drain_window();
            }
            let cancelled = self.cancel.is_cancelled();
            if !cancelled
                && !self.stopped
                && !self.breaker_hold
                && self.not_due_until.is_none()
                && self.window.in_flight() < MAX_IN_FLIGHT
                && self.running.len() < self.concurrency
            {
                // A partition whose records are all at hand would otherwise keep its worker
                // thread until the last one: every so many turns (tokio's task budget) it
                // lets the other partitions and tasks run, before it takes a record out.
                tokio::task::coop::consume_budget().await;
                if let Some(p) = self.parked.pop_front().or_else(|| self.ready.pop_front()) {
                    self.handle(p.record, p.bytes, Some(p.seq)).await;
                    continue;
                }
                let record = if self.waiting < MAX_WAITING { self.queue.pop_front() } else { None };
                if let Some(record) = record {
                    self.take(record).await;
                    if self.finished_since_store >= STORE_EVERY {
                        self.store();
                    }
                    continue;
                }
            }
            if cancelled || self.stopped {
                self.abandon_waiting();
            }
            self.store();
            if (cancelled || self.stopped) && self.window.is_empty() {
                break;
            }
            let due = self.resume_at.or(self.not_due_until).map(instant_at);
            let probe_at = self.probe_at.filter(|_| self.breaker_hold);
            // A clone of the queue lives only while waiting here (see `queue`).
            let own_queue = match &self.own {
                Some(own) if !cancelled && !self.stopped && self.held_back.is_none() => own.get(),
                _ => None,
            };
            let next_read = own_queue.map(|q| queue::read(q, Arc::clone(self.slot.topic()), self.read_shape));
            tokio::select! {
                () = self.cancel.cancelled(), if !cancelled => {}
                Some(read) = OptionFuture::from(next_read) => self.take_in(read),
                () = self.shared.budget.drained(), if self.held_back.is_some() => {
                    self.held_back = None;
                    self.slot.resume(&*self.shared.consumer, PauseReason::Backpressure);
                }
                () = self.window.next_settled(), if self.window.in_flight() > 0 => self.drain_window(),
                () = self.acks.ready(), if self.window.acks_expected() > 0 => {
                    self.take_acks();
                    self.drain_window();
                }
                Some(ran) = self.running.next(), if !self.running.is_empty() => {
                    self.called(ran.call, ran.result, ran.took);
                }
                batch = self.inbox.recv(), if inbox_open => match batch {
                    Some(batch) => self.accept(batch),
                    None => inbox_open = false,
                },
                Some(()) = OptionFuture::from(due.map(tokio::time::sleep_until)) => self.wake_up(),
                changed = self.gate.changed(), if gate_open => match changed {
                    Ok(()) => self.apply_gate(),
                    Err(_) => gate_open = false,
                },
                Some(()) = OptionFuture::from(probe_at.map(|at| tokio::time::sleep_until(instant_at(at)))) => {
                    // The probe may go: ask again (one owner gets it, the others wait on).
                    self.breaker_hold = false;
                    self.probe_at = None;
                }
                // Nothing can happen any more (inbox closed, nothing in flight or due).
                else => break,
            }
        }
        tracing::debug!(cancelled = self.cancel.is_cancelled(), stopped = self.stopped, queued = self.queue.len(), "owner ended");
    }
}

/// Whenever an owner goes (it ended, its task was aborted, or it panicked), what it
/// finished is stored and what it held is given back to the budget and the gauges.
impl Drop for Owner {
    fn drop(&mut self) {
        self.store();
        self.release_queue();
        self.shared.budget.release(std::mem::take(&mut self.unreleased));
        if let Some(bytes) = self.held_back {
            // Its record will not be read here again: no room is kept for it any more.
            self.shared.budget.unwant(bytes);
        }
        // Abandoned publishes leave the gauge with the owner.
        self.shared.metrics.add_in_flight(-(self.reported_in_flight as f64));
        let (calls, waiting) = self.reported_calls;
        self.shared.metrics.add_key_concurrency(-(calls as f64), -(waiting as f64));
    }
}

impl Owner {
    /// Follows the listener's gate: held pauses the partition (reason breaker) once it
    /// holds a record (until then it reads on, so that it has a record for the breaker's
    /// probe: a partition paused with nothing in hand could never probe); open resumes it
    /// and lets the held record go.
    fn apply_gate(&mut self) {
        let gate = *self.gate.borrow_and_update();
        tracing::debug!(held = gate.held, probe_at = ?gate.probe_at_ms.map(format_ms), holding = self.breaker_hold, "circuit gate");
        if gate.held {
            if self.breaker_hold {
                self.slot.pause(&*self.shared.consumer, PauseReason::Breaker);
            }
            self.probe_at = gate.probe_at_ms;
        } else {
            self.breaker_hold = false;
            self.probe_at = None;
            self.slot.resume(&*self.shared.consumer, PauseReason::Breaker);
        }
    }

    /// Keeps `record` at the head of the queue, unhandled and uncommitted, until the gate
    /// opens (or the probe at `until_ms` may go); the partition is paused meanwhile.
    fn hold_for_breaker(&mut self, record: Record, until_ms: Option<i64>) {
        tracing::debug!(offset = record.offset(), probe_at = ?until_ms.map(format_ms), "held for the circuit breaker");
        // Held for as long as the outage lasts: it keeps no other record's bytes alive.
        self.queue.push_front(record.unshared());
        self.breaker_hold = true;
        if until_ms.is_some() {
            self.probe_at = until_ms;
        }
        self.slot.pause(&*self.shared.consumer, PauseReason::Breaker);
    }

    /// Parks a call that came back held by the breaker (its key stays busy, its place in
    /// the window stays open): called again first when the gate opens.
    fn park(&mut self, parked: Parked, until_ms: Option<i64>) {
        tracing::debug!(offset = parked.record.offset(), probe_at = ?until_ms.map(format_ms), "held for the circuit breaker (parked)");
        let parked = Parked { record: parked.record.unshared(), ..parked };
        let at = self.parked.partition_point(|p| p.seq < parked.seq);
        self.parked.insert(at, parked);
        self.breaker_hold = true;
        if until_ms.is_some() {
            self.probe_at = until_ms;
        }
        self.slot.pause(&*self.shared.consumer, PauseReason::Breaker);
    }

    /// Revoked or stopped: the parked calls and the records waiting for their key or their
    /// turn are not called (their offsets stay before them). Calls under way end as they do.
    fn abandon_waiting(&mut self) {
        if self.parked.is_empty() && self.ready.is_empty() && self.waiting == 0 {
            return;
        }
        let waiting = self.busy_keys.values_mut().flat_map(std::mem::take);
        for p in self.parked.drain(..).chain(self.ready.drain(..)).chain(waiting) {
            self.window.settle(p.seq, Outcome::Abandoned);
        }
        self.waiting = 0;
        self.drain_window();
    }

    /// The call of a record of `key` is over: the next record of that key, if one waits,
    /// may start (the key stays busy); otherwise the key is free.
    fn key_done(&mut self, key: u64) {
        match self.busy_keys.get_mut(&key).and_then(VecDeque::pop_front) {
            Some(next) => {
                self.waiting -= 1;
                self.ready.push_back(next);
            }
            None => {
                self.busy_keys.remove(&key);
            }
        }
    }

    /// The hash a record's key is known by among the busy keys.
    fn busy_key_of(&self, record: &Record) -> u64 {
        self.keys.hash_one(record.key())
    }

    fn accept(&mut self, batch: Batch) {
        if batch.epoch < self.min_epoch || self.stopped {
            // Read before the partition was sought back: it will be read again.
            self.shared.budget.release(batch.bytes);
            return;
        }
        let mut records = batch.records;
        let again = self.drop_read_again(&mut records);
        self.shared.budget.release(again);
        self.queue.extend(records);
    }

    /// Drops the records read again (offsets already taken in; see [`ReadPosition`]);
    /// returns their bytes.
    fn drop_read_again(&mut self, records: &mut Vec<Record>) -> usize {
        let (again, bytes) = self.read.keep_new(records);
        if again > 0 {
            tracing::debug!(records = again, "records read again; dropped (each offset is taken in once)");
        }
        bytes
    }

    /// Takes in what was read from the partition's own queue: each record's bytes are
    /// reserved in order; at the first that does not fit, the partition is paused and
    /// sought back to it (it and what follows are read again once the budget has room).
    fn take_in(&mut self, read: Read) {
        for e in &read.errors {
            self.shared.errors.report(self.shared.listener.name(), &self.shared.metrics, e);
        }
        self.read_shape = read.shape;
        let mut records = read.records;
        tracing::trace!(records = records.len(), first = ?records.first().map(Record::offset), "read");
        if self.stopped || records.is_empty() {
            return;
        }
        // Not reserved yet: nothing to give back.
        self.drop_read_again(&mut records);
        let budget = &self.shared.budget;
        if let Some(i) = records.iter().position(|r| !budget.try_reserve(r.queued_bytes())) {
            let record = (records[i].offset(), records[i].queued_bytes());
            records.truncate(i);
            self.hold_back(record);
        }
        self.queue.extend(records);
        self.shared.budget.report();
    }

    /// Holds the partition back ([`PartitionSlot::hold_back`]) from the record at `offset`
    /// of `bytes`, which is taken in again once the budget has room for it.
    fn hold_back(&mut self, (offset, bytes): (i64, usize)) {
        let shared = &self.shared;
        if self.slot.hold_back(&*shared.consumer, (offset, bytes), &shared.budget, self.held_back.is_none(), &shared.metrics) {
            self.held_back = Some(bytes);
            self.read.rewind_to(offset);
        }
    }

    fn release_queue(&mut self) {
        let bytes: usize = self.queue.drain(..).map(|r| r.queued_bytes()).sum();
        self.shared.budget.release(bytes);
    }

    /// The partition may be read again (shortly before its head is due), or the not-due
    /// wait is over (the wall clock is checked again: never early). The not-due pause is
    /// only ever taken together with `resume_at`, so lifting it there is the one resume.
    fn wake_up(&mut self) {
        let now = now_ms();
        if self.resume_at.is_some_and(|at| now >= at) {
            self.resume_at = None;
            self.slot.resume(&*self.shared.consumer, PauseReason::NotDue);
        }
        if self.not_due_until.is_some_and(|until| now >= until) {
            self.not_due_until = None;
        }
    }

    /// Brings the listener's in-flight gauge (and under key concurrency, its calls and
    /// waiting gauges) up to date with this partition.
    fn report_in_flight(&mut self) {
        let now = self.window.in_flight();
        if now != self.reported_in_flight {
            self.shared.metrics.add_in_flight(now as f64 - self.reported_in_flight as f64);
            self.reported_in_flight = now;
        }
        let calls = (self.running.len(), self.waiting);
        if calls != self.reported_calls {
            let (was_calls, was_waiting) = self.reported_calls;
            self.shared.metrics.add_key_concurrency(calls.0 as f64 - was_calls as f64, calls.1 as f64 - was_waiting as f64);
            self.reported_calls = calls;
        }
    }

    fn store(&mut self) {
        self.report_in_flight();
        if let Some(last) = self.done_through {
            self.slot.store(&*self.shared.consumer, last + 1);
        }
        self.finished_since_store = 0;
        self.shared.budget.release(std::mem::take(&mut self.unreleased));
    }

    fn drain_window(&mut self) {
        let mut released = std::mem::take(&mut self.released);
        self.window.release(&mut released);
        for r in released.drain(..) {
            self.complete(r);
        }
        self.released = released;
    }

    /// A record left the partition in offset order.
    fn complete(&mut self, c: Released<Outcome>) {
        self.unreleased += c.bytes;
        match c.outcome {
            Outcome::Done if !self.stopped && !self.gave_up => {
                self.done_through = Some(c.offset);
                self.finished_since_store += 1;
            }
            Outcome::Done => {}
            Outcome::Abandoned => self.gave_up = true,
            Outcome::Stop => self.stop(),
        }
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.shared.metrics.inc_stopped_partitions();
        self.slot.pause(&*self.shared.consumer, PauseReason::Stopped);
        self.release_queue();
    }

    /// Finishes a record at once (handled or dropped): in order behind those in flight.
    fn finish(&mut self, offset: i64, bytes: usize) {
        if let Some(r) = self.window.finished(offset, bytes, Outcome::Done) {
            self.complete(r);
        }
    }

    /// Finishes a record at its place in the window (see [`Place`]; none: a new one).
    fn finish_at(&mut self, seq: Option<u64>, offset: i64, bytes: usize) {
        match seq {
            None => self.finish(offset, bytes),
            Some(seq) => {
                self.window.settle(seq, Outcome::Done);
                self.drain_window();
            }
        }
    }

    /// Puts the publish of the record at `offset` in the window.
    fn push_publish(&mut self, seq: Option<u64>, offset: i64, bytes: usize, publish: BoxFuture<'static, Outcome>) {
        match seq {
            None => self.window.publishing(offset, bytes, publish),
            Some(seq) => self.window.publishing_at(seq, publish),
        }
    }

    async fn take(&mut self, mut record: Record) {
        #[cfg(feature = "fault-injection")]
        self.shared.inject_panic("engine", record.key());
        let shared = Arc::clone(&self.shared);
        let listener = &shared.listener;
        let (offset, bytes) = (record.offset(), record.queued_bytes());
        let decoded = record.decode_retry_headers();
        let held_until = self.held.filter(|(o, _)| *o == offset).map(|(_, until)| until);
        let arrival = journey::on_arrival(listener.topology().role(record.topic()), &decoded, now_ms, listener.policy(), held_until);
        match arrival {
            Arrival::Foreign => {
                tracing::error!(offset, "record from a topic this listener does not own; skipping it");
                self.finish(offset, bytes);
            }
            Arrival::Untrusted(e) => {
                shared.metrics.inc_malformed_headers();
                tracing::warn!(offset, error = %e, "retry headers cannot be trusted; giving the record up without calling the handler");
                let text = e.to_string();
                let failed = self.failed_attempt(&record, None, 0, FailureKind::MalformedHeaders, &text, now_ms());
                let plan = journey::give_up(listener.policy(), self.source(), &failed, FailureKind::MalformedHeaders);
                self.carry_out(Failed { seq: None, record, bytes, plan });
            }
            Arrival::NotDue { until_ms, clamped_from } => {
                if let Some(claimed_ms) = clamped_from {
                    tracing::warn!(offset, claimed_ms, until_ms, "retry record claims a due time beyond the policy's horizon; clamped");
                }
                tracing::debug!(offset, due_at = %format_ms(until_ms), "not due: holding the partition");
                self.not_due_until = Some(until_ms);
                self.held = Some((offset, until_ms));
                let hold = journey::hold(now_ms(), until_ms);
                if let Some(resume_at) = hold.resume_at_ms {
                    if self.slot.pause(&*self.shared.consumer, PauseReason::NotDue) {
                        self.resume_at = Some(resume_at);
                        if hold.drop_queue {
                            self.drop_queue_behind(offset);
                            // Held for long: it keeps no other record's bytes alive meanwhile.
                            return self.queue.push_front(record.unshared());
                        }
                    }
                }
                self.queue.push_front(record);
            }
            Arrival::Hop { topic, headers } => {
                tracing::debug!(offset, to = %topic, due_at = %format_ms(headers.due_at_ms), "hopping down the ladder");
                let failed_attempt = headers.attempt;
                self.publish_retry(None, record, bytes, RetryTarget { topic, headers, hop: true, failed_attempt });
            }
            Arrival::Handle { attempt, headerless_retry } => {
                if headerless_retry {
                    tracing::warn!(
                        offset,
                        "record in a retry topic has no retry headers (produced by someone else?); handling it now as attempt 2"
                    );
                }
                record.set_attempt(attempt, decoded.ok().flatten().map(Arc::new));
                self.handle(record, bytes, None).await;
            }
        }
    }

    /// Calls the handler for `record` (its attempt and retry headers set) once the circuit
    /// lets it: inline (`concurrency` 1), or among the running calls with its place in the
    /// window taken now (`seq`: the place it kept while parked).
    async fn handle(&mut self, record: Record, bytes: usize, seq: Option<u64>) {
        let shared = Arc::clone(&self.shared);
        let listener = &shared.listener;
        let key = (self.concurrency > 1).then(|| self.busy_key_of(&record));
        if let (Some(key), None) = (key, seq) {
            if let Some(waiting) = self.busy_keys.get_mut(&key) {
                // Its key is in the handler: it waits its turn, with its place taken now.
                let seq = self.window.reserve(record.offset(), bytes);
                waiting.push_back(Parked { record, bytes, seq });
                self.waiting += 1;
                return;
            }
        }
        let probe = match shared.circuit.admit() {
            Pass::Go => None,
            Pass::Probe(probe) => Some(probe),
            Pass::Wait(until) => {
                return match seq {
                    Some(seq) => self.park(Parked { record, bytes, seq }, until),
                    None => self.hold_for_breaker(record, until),
                }
            }
        };
        let blocking = if record.attempt() == 1 { listener.policy().blocking() } else { (0, Duration::ZERO) };
        if let Some(r) = record.retry_headers() {
            shared.metrics.observe_lateness(now_ms() - r.due_at_ms);
        }
        let Some(key) = key else {
            let (result, took) = execute::call(listener.handler().as_ref(), &record, blocking, &self.cancel, &shared.watch).await;
            self.called(Call { record, bytes, probe, place: None }, result, took);
            return;
        };
        let seq = seq.unwrap_or_else(|| self.window.reserve(record.offset(), bytes));
        self.busy_keys.entry(key).or_default();
        let cancel = self.cancel.clone();
        let call = Call { record, bytes, probe, place: Some(Place { seq, key }) };
        self.running.push(
            async move {
                let (result, took) =
                    execute::call(shared.listener.handler().as_ref(), &call.record, blocking, &cancel, &shared.watch).await;
                Ran { call, result, took }
            }
            .boxed(),
        );
    }

    /// What follows a handler call that took `took`: the breaker learns its outcome; the
    /// record is done, held for the breaker, or failed: then the journey's plan for it is
    /// carried out.
    fn called(&mut self, call: Call, result: Result<(), HandlerError>, took: Duration) {
        let Call { record, bytes, probe, place } = call;
        let seq = place.map(|p| p.seq);
        let shared = Arc::clone(&self.shared);
        shared.metrics.observe_handler(took);
        let listener = &shared.listener;
        let offset = record.offset();
        // Only a retryable failure may be an outage; a fatal one says the record is bad,
        // and one asking for its own delay knows what it is doing.
        let outage_like = matches!(&result, Err(e) if e.is_retryable() && e.requested_delay().is_none());
        let held = match probe {
            Some(probe) => {
                probe.report(!outage_like);
                outage_like
            }
            None => shared.circuit.record(outage_like, || circuit::key_of(&record)) && outage_like,
        };
        // The next record of its key may go, unless this one is parked (it goes first).
        if let Some(place) = place.filter(|_| !(held && result.is_err())) {
            self.key_done(place.key);
        }
        if let Some(seq) = seq.filter(|_| self.stopped) {
            // The partition stopped while this call ran: its offset stays before it.
            self.window.settle(seq, Outcome::Abandoned);
            self.drain_window();
            return;
        }
        match result {
            Ok(()) => {
                shared.metrics.inc_processed();
                if let Some(r) = record.retry_headers() {
                    shared.metrics.observe_recovery(now_ms() - r.first_failure_ms);
                }
                self.finish_at(seq, offset, bytes);
            }
            Err(error) if held => {
                // An outage is suspected: no republish, no attempt burnt; the record
                // waits here for the breaker to close.
                shared.metrics.inc_failed();
                shared.metrics.inc_held_by_breaker();
                tracing::debug!(offset, attempt = record.attempt(), error = %error, "failed while the circuit is open; held in place");
                match seq {
                    Some(seq) => self.park(Parked { record, bytes, seq }, None),
                    None => self.hold_for_breaker(record, None),
                }
            }
            Err(error) => {
                match error.requested_delay() {
                    Some(_) => shared.metrics.inc_deferred(),
                    None => shared.metrics.inc_failed(),
                }
                let text = error.text();
                let failed = FailedAttempt {
                    requested_delay: error.requested_delay(),
                    ..self.failed_attempt(&record, record.retry_headers(), record.attempt(), error.kind(), &text, now_ms())
                };
                let plan = journey::after_failure(listener.policy(), self.source(), &failed, rand::random::<f64>());
                self.carry_out(Failed { seq, record, bytes, plan });
            }
        }
    }

    /// For a long not-due wait of the record at `offset` (the partition is paused): drops
    /// what is queued behind it and has the partition sought back to `offset + 1`, so those
    /// are read again when it is due. Batches read before the seek are dropped on arrival.
    fn drop_queue_behind(&mut self, offset: i64) {
        self.release_queue();
        self.read.rewind_to(offset + 1);
        if self.own.is_some() {
            // This task reads the partition: the seek cannot race with a read.
            self.slot.seek(&*self.shared.consumer, offset + 1, &self.shared.metrics);
            return;
        }
        self.min_epoch = self.slot.fetch_epoch.load(std::sync::atomic::Ordering::Acquire) + 1;
        let _ = self.shared.requests.send(Request::Seek { slot: Arc::clone(&self.slot), offset: offset + 1 });
    }

    fn source(&self) -> &SourceTopics {
        self.source.as_ref().expect("an owner exists only for the listener's own topics")
    }
}

/// The tokio instant of a wall-clock time (ms since the epoch); now if it is past.
fn instant_at(at_ms: i64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_ms())).unwrap_or(0))
}
