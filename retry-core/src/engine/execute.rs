//! Calling the handler: the whole call, its synchronous part included, runs under
//! `catch_unwind`, so a panic is a failed attempt of that record (retryable), never a
//! stopped partition. So does the rendering of a failure's error to text (its `Display`
//! and its `Drop` are the handler's code too). In-memory (blocking) attempts of the policy
//! happen here.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::failure::HandlerError;
use crate::handler::Handler;
use crate::record::Record;

/// The text of a panic payload.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into())
}

/// One call of `handler`; a panic, in the call or in the future it returns, becomes a
/// retryable error saying so. A failure comes back [rendered](HandlerError::rendered); an
/// error whose rendering panics keeps its kind, with the panic for its text.
pub(crate) async fn call_once(handler: &dyn Handler, record: Record) -> Result<(), HandlerError> {
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(record))) {
        // Awaited inside an `async` block, the handler's future is dropped within the poll
        // that completes it, so under the guard too: a future type of the user's whose
        // `Drop` panics fails its record like any other panic of the handler.
        Ok(future) => {
            #[allow(clippy::redundant_async_block, reason = "the block is what drops the future under the guard")]
            let dropped_when_done = async move { future.await };
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
) -> (Result<(), HandlerError>, Duration) {
    let started = quanta::Instant::now();
    let result = call_with_retries(handler, record, blocking, cancel).await;
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
) -> Result<(), HandlerError> {
    let mut tries = 0;
    loop {
        match call_once(handler, record.clone()).await {
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

    struct SyncPanic;
    impl Handler for SyncPanic {
        fn handle(&self, _: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
            panic!("before the future")
        }
    }

    #[tokio::test]
    async fn panics_in_either_part_are_failed_attempts() {
        let e = call_once(&SyncPanic, Record::new("t", 0, 0)).await.unwrap_err();
        assert!(e.is_retryable() && e.to_string().contains("before the future"), "{e}");
        let in_future = crate::handler::record(|r: Record| async move {
            if r.offset() == 0 {
                panic!("inside the future");
            }
            Ok::<(), std::io::Error>(())
        });
        let e = call_once(&in_future, Record::new("t", 0, 0)).await.unwrap_err();
        assert!(e.to_string().contains("inside the future"), "{e}");
    }

    /// A handler's own future type: done at once, panicking when dropped.
    struct PanicsWhenDropped;
    impl std::future::Future for PanicsWhenDropped {
        type Output = Result<(), HandlerError>;
        fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
            std::task::Poll::Ready(Ok(()))
        }
    }
    impl Drop for PanicsWhenDropped {
        fn drop(&mut self) {
            panic!("dropping the future")
        }
    }
    struct DropPanic;
    impl Handler for DropPanic {
        fn handle(&self, _: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
            Box::pin(PanicsWhenDropped)
        }
    }

    #[tokio::test]
    async fn a_future_whose_drop_panics_is_a_failed_attempt() {
        let e = call_once(&DropPanic, Record::new("t", 0, 0)).await.unwrap_err();
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
        let e = call_once(&failing(false), Record::new("t", 0, 0)).await.unwrap_err();
        assert_eq!((e.to_string().as_str(), e.requested_delay()), ("rate limited", Some(Duration::from_secs(5))));
        let e = call_once(&failing(true), Record::new("t", 0, 0)).await.unwrap_err();
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
        let e = call(&counted(false), &Record::new("t", 0, 0), (2, Duration::from_millis(1)), &cancel).await.0.unwrap_err();
        assert_eq!((calls.swap(0, std::sync::atomic::Ordering::Relaxed), e.requested_delay()), (3, None));
        let e = call(&counted(true), &Record::new("t", 0, 0), (2, Duration::from_millis(1)), &cancel).await.0.unwrap_err();
        assert_eq!((calls.load(std::sync::atomic::Ordering::Relaxed), e.requested_delay()), (1, Some(Duration::from_secs(60))));
    }
}
