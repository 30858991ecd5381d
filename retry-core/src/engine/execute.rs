//! Calling the handler: the whole call, its synchronous part included, runs under
//! `catch_unwind`, so a panic is a failed attempt of that record (retryable), never a
//! stopped partition. So does the rendering of a failure's error to text (its `Display`
//! and its `Drop` are the handler's code too). In-memory (blocking) attempts of the policy
//! happen here, and each call is watched: given up at the listener's `handler_timeout`,
//! reported while it runs longer than `stalled_after` (the rules: [`call_time`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::OptionFuture;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::call_time;
use crate::duration::format_duration;
use crate::failure::HandlerError;
use crate::handler::Handler;
use crate::metrics::Metrics;
use crate::record::Record;

/// What watches each handler call of a listener (one per running listener).
#[derive(Debug)]
pub(crate) struct Watch {
    /// A call not done by then is given up (its future dropped): a retryable failure.
    pub(crate) timeout: Option<Duration>,
    /// A call still running by then is reported as stalled (and once a minute after).
    pub(crate) stalled_after: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

impl Watch {
    pub(crate) fn of(listener: &crate::Listener, metrics: Arc<Metrics>) -> Watch {
        Watch { timeout: listener.handler_timeout(), stalled_after: listener.stalled_after(), metrics }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into())
}

/// One call of `handler`, [watched](watched); a panic, in the call or in the future it
/// returns, becomes a retryable error saying so. A failure comes back
/// [rendered](HandlerError::rendered); an error whose rendering panics keeps its kind,
/// with the panic for its text.
pub(crate) async fn call_once(handler: &dyn Handler, record: Record, watch: &Watch) -> Result<(), HandlerError> {
    let (offset, attempt) = (record.offset(), record.attempt());
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(record))) {
        // Awaited inside an `async` block, the handler's future is dropped within the poll
        // that completes it (or gives it up at its timeout), so under the guard too: a
        // future type of the user's whose `Drop` panics fails its record like any other
        // panic of the handler.
        Ok(future) => {
            let dropped_when_done = watched(future, offset, attempt, watch);
            AssertUnwindSafe(dropped_when_done).catch_unwind().await
        }
        Err(panic) => Err(panic),
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let (kind, delay) = (e.kind(), e.requested_delay());
            Err(std::panic::catch_unwind(AssertUnwindSafe(|| e.rendered())).unwrap_or_else(|panic| {
                let text = panic_text(&*panic);
                tracing::error!(panic = %text, "the handler's error panicked when turned into text or dropped; counted as its failure");
                HandlerError::from_text(kind, delay, format!("the handler's error panicked: {text}"))
            }))
        }
        Err(panic) => {
            let text = panic_text(&*panic);
            tracing::error!(panic = %text, "handler panicked; counted as a failed attempt of this record");
            Err(HandlerError::retryable(format!("handler panicked: {text}")))
        }
    }
}

/// Awaits the handler's future `call` for the record at `offset` (`attempt`): given up at
/// the watch's timeout (a retryable failure, counted in `handler_timeouts`); reported as
/// stalled at `stalled_after` and once a minute after while it runs (a warning each time,
/// counted once in `stalled_calls`). A call done at its first poll, as most are, starts no
/// timer.
async fn watched<F>(call: F, offset: i64, attempt: u32, watch: &Watch) -> Result<(), HandlerError>
where
    F: Future<Output = Result<(), HandlerError>>,
{
    let mut call = std::pin::pin!(call);
    if let Poll::Ready(done) = futures::poll!(call.as_mut()) {
        return done;
    }
    // Boxed: its timers would otherwise make every call's future (and the owner's, which
    // holds it) several hundred bytes larger.
    Box::pin(watch_running(call, offset, attempt, watch)).await
}

/// [`watched`], for a call still running after its first poll; `call` is dropped by the
/// caller, when it returns.
async fn watch_running<F>(mut call: Pin<&mut F>, offset: i64, attempt: u32, watch: &Watch) -> Result<(), HandlerError>
where
    F: Future<Output = Result<(), HandlerError>>,
{
    let started = tokio::time::Instant::now();
    let deadline = watch.timeout.map(|t| (started + t, t));
    let running_for = || format_duration(Duration::from_millis(started.elapsed().as_millis() as u64));
    let mut reports = 0;
    loop {
        // A report too far off for the clock (a `stalled_after` of years) never comes.
        let report_at =
            call_time::next_stall_report(watch.stalled_after, watch.timeout, reports).and_then(|after| started.checked_add(after));
        tokio::select! {
            done = call.as_mut() => {
                if reports > 0 {
                    tracing::warn!(offset, attempt, took = %running_for(), "the stalled handler call returned");
                }
                return done;
            }
            Some(timeout) = OptionFuture::from(deadline.map(|(at, t)| tokio::time::sleep_until(at).map(move |()| t))) => {
                watch.metrics.inc_handler_timeouts();
                tracing::warn!(offset, attempt, timeout = %format_duration(timeout), "handler call given up at its timeout; a failed attempt of this record");
                return Err(HandlerError::retryable(call_time::timed_out_text(timeout)));
            }
            Some(()) = OptionFuture::from(report_at.map(tokio::time::sleep_until)) => {
                if reports == 0 {
                    watch.metrics.inc_stalled_calls();
                }
                reports += 1;
                tracing::warn!(
                    offset,
                    attempt,
                    running_for = %running_for(),
                    "handler call still running (stalled); the partition, or under key_concurrency the record's key, waits for it"
                );
            }
        }
    }
}

/// Reads the clock that times handler calls once: it calibrates itself on its first read
/// (some tenths of a millisecond), which belongs in start-up, not in the first call.
pub(crate) fn calibrate_clock() {
    let _ = quanta::Instant::now();
}

/// [`call_with_retries`], and how long it took (for the `handler_seconds` histogram, on
/// every record's path: `quanta`'s TSC clock, 23 ns for the pair of reads where std's
/// `Instant` took 61).
pub(crate) async fn call(
    handler: &dyn Handler,
    record: &Record,
    blocking: (u32, Duration),
    cancel: &CancellationToken,
    watch: &Watch,
) -> (Result<(), HandlerError>, Duration) {
    let started = quanta::Instant::now();
    let result = call_with_retries(handler, record, blocking, cancel, watch).await;
    (result, started.elapsed())
}

/// Calls `handler`, with up to `extra` in-memory attempts `delay` apart for retryable
/// failures (the policy's blocking attempts, first attempt only); stops early on `cancel`,
/// and at once for a failure that asked for its own delay (`retry_after`: not sooner).
async fn call_with_retries(
    handler: &dyn Handler,
    record: &Record,
    (extra, delay): (u32, Duration),
    cancel: &CancellationToken,
    watch: &Watch,
) -> Result<(), HandlerError> {
    let mut tries = 0;
    loop {
        match call_once(handler, record.clone(), watch).await {
            Err(e) if e.is_retryable() && e.requested_delay().is_none() && tries < extra && !cancel.is_cancelled() => {
                tries += 1;
                tracing::debug!(error = %e, tries, "blocking retry in memory");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return Err(e),
                }
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;

    fn unwatched() -> Watch {
        Watch { timeout: None, stalled_after: call_time::DEFAULT_STALLED_AFTER, metrics: Arc::default() }
    }

    /// A handler whose call never returns, or returns after `after`.
    fn hangs(after: Option<Duration>) -> impl Handler {
        crate::handler::record(move |_: Record| async move {
            match after {
                Some(after) => tokio::time::sleep(after).await,
                None => futures::future::pending::<()>().await,
            }
            Ok::<(), std::io::Error>(())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_timeout_is_given_up_as_a_retryable_failure_reported_as_stalled_before() {
        let watch = Watch { timeout: Some(Duration::from_secs(150)), stalled_after: Duration::from_secs(60), ..unwatched() };
        let started = tokio::time::Instant::now();
        let e = call_once(&hangs(None), Record::new("t", 0, 0), &watch).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(150));
        assert!(e.is_retryable() && e.to_string().contains("timeout of 2m 30s"), "{e}");
        let m = watch.metrics.snapshot();
        assert_eq!((m.handler_timeouts, m.stalled_calls), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_call_without_a_timeout_is_reported_once_and_goes_on_to_its_end() {
        let watch = Watch { stalled_after: Duration::from_millis(200), ..unwatched() };
        let started = tokio::time::Instant::now();
        call_once(&hangs(Some(Duration::from_secs(200))), Record::new("t", 0, 0), &watch).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(200));
        let m = watch.metrics.snapshot();
        assert_eq!((m.handler_timeouts, m.stalled_calls), (0, 1));
        // A call done in time is neither.
        call_once(&hangs(Some(Duration::from_millis(100))), Record::new("t", 0, 0), &watch).await.unwrap();
        assert_eq!(watch.metrics.snapshot(), m);
        // Nor is one whose report is beyond the clock's reach; it is not a failure either.
        let never = Watch { stalled_after: Duration::MAX, ..unwatched() };
        call_once(&hangs(Some(Duration::from_secs(1))), Record::new("t", 0, 0), &never).await.unwrap();
        assert_eq!(never.metrics.snapshot().stalled_calls, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_that_panics_when_given_up_is_a_failed_attempt_too() {
        let watch = Watch { timeout: Some(Duration::from_secs(1)), ..unwatched() };
        let e = call_once(&DropPanic { done: false }, Record::new("t", 0, 0), &watch).await.unwrap_err();
        assert!(e.is_retryable() && e.to_string().contains("dropping the future"), "{e}");
    }

    struct SyncPanic;
    impl Handler for SyncPanic {
        fn handle(&self, _: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
            panic!("before the future")
        }
    }

    #[tokio::test]
    async fn panics_in_either_part_are_failed_attempts() {
        let e = call_once(&SyncPanic, Record::new("t", 0, 0), &unwatched()).await.unwrap_err();
        assert!(e.is_retryable() && e.to_string().contains("before the future"), "{e}");
        let in_future = crate::handler::record(|r: Record| async move {
            if r.offset() == 0 {
                panic!("inside the future");
            }
            Ok::<(), std::io::Error>(())
        });
        let e = call_once(&in_future, Record::new("t", 0, 0), &unwatched()).await.unwrap_err();
        assert!(e.to_string().contains("inside the future"), "{e}");
    }

    /// A handler's own future type, panicking when dropped: done at once, or never.
    struct PanicsWhenDropped {
        done: bool,
    }
    impl std::future::Future for PanicsWhenDropped {
        type Output = Result<(), HandlerError>;
        fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
            match self.done {
                true => std::task::Poll::Ready(Ok(())),
                false => std::task::Poll::Pending,
            }
        }
    }
    impl Drop for PanicsWhenDropped {
        fn drop(&mut self) {
            panic!("dropping the future")
        }
    }
    struct DropPanic {
        done: bool,
    }
    impl Handler for DropPanic {
        fn handle(&self, _: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
            Box::pin(PanicsWhenDropped { done: self.done })
        }
    }

    #[tokio::test]
    async fn a_future_whose_drop_panics_is_a_failed_attempt() {
        let e = call_once(&DropPanic { done: true }, Record::new("t", 0, 0), &unwatched()).await.unwrap_err();
        assert!(e.is_retryable() && e.to_string().contains("dropping the future"), "{e}");
    }

    #[derive(Debug)]
    struct UnprintableError;
    impl std::fmt::Display for UnprintableError {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("cannot print")
        }
    }
    impl std::error::Error for UnprintableError {}

    #[tokio::test]
    async fn a_failure_comes_back_as_text_and_one_that_cannot_be_printed_keeps_its_kind() {
        let failing = |fatal: bool| {
            crate::handler::record(move |_: Record| async move {
                Err::<(), _>(match fatal {
                    true => HandlerError::fatal(UnprintableError),
                    false => HandlerError::retry_after("rate limited", Duration::from_secs(5)),
                })
            })
        };
        let e = call_once(&failing(false), Record::new("t", 0, 0), &unwatched()).await.unwrap_err();
        assert_eq!((e.to_string().as_str(), e.requested_delay()), ("rate limited", Some(Duration::from_secs(5))));
        let e = call_once(&failing(true), Record::new("t", 0, 0), &unwatched()).await.unwrap_err();
        assert_eq!((e.kind(), e.to_string().as_str()), (crate::headers::FailureKind::Fatal, "the handler's error panicked: cannot print"));
    }

    #[tokio::test]
    async fn blocking_attempts_retry_in_memory_but_never_sooner_than_asked() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = |later: bool| {
            let calls = std::sync::Arc::clone(&calls);
            crate::handler::record(move |_: Record| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    Err::<(), _>(match later {
                        true => HandlerError::retry_after("rate limited", Duration::from_secs(60)),
                        false => HandlerError::retryable("down"),
                    })
                }
            })
        };
        let cancel = CancellationToken::new();
        let e = call(&counted(false), &Record::new("t", 0, 0), (2, Duration::from_millis(1)), &cancel, &unwatched()).await.0.unwrap_err();
        assert_eq!((calls.swap(0, std::sync::atomic::Ordering::Relaxed), e.requested_delay()), (3, None));
        let e = call(&counted(true), &Record::new("t", 0, 0), (2, Duration::from_millis(1)), &cancel, &unwatched()).await.0.unwrap_err();
        assert_eq!((calls.load(std::sync::atomic::Ordering::Relaxed), e.requested_delay()), (1, Some(Duration::from_secs(60))));
    }
}
