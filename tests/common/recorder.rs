//! Handlers that record every call, for assertions.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use retryable_topic::handler::{self, Handler};
use retryable_topic::{HandlerError, Record};

use super::{now_ms, record_size};

#[derive(Debug, Clone)]
pub struct Call {
    pub key: String,
    pub attempt: u32,
    pub at_ms: i64,
    pub due_at_ms: Option<i64>,
    pub size: usize,
    pub record: Record,
}

/// Every handler call, in order.
#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    pub fn push(&self, r: &Record) {
        let call = Call {
            key: r.key_str().unwrap_or_default().to_owned(),
            attempt: r.attempt(),
            at_ms: now_ms(),
            due_at_ms: r.retry_headers().map(|h| h.due_at_ms),
            size: record_size(r),
            record: r.clone(),
        };
        self.0.lock().unwrap().push(call);
    }
    pub fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }
    pub fn of(&self, key: &str) -> Vec<Call> {
        self.all().into_iter().filter(|c| c.key == key).collect()
    }
    pub fn count(&self, key: &str, attempt: u32) -> usize {
        self.all().iter().filter(|c| c.key == key && c.attempt == attempt).count()
    }
    pub fn has(&self, key: &str, attempt: u32) -> bool {
        self.count(key, attempt) > 0
    }
    pub fn position(&self, key: &str, attempt: u32) -> Option<usize> {
        self.all().iter().position(|c| c.key == key && c.attempt == attempt)
    }
    /// Asserts that no retry (attempt 2 on) was handled before its due time.
    pub fn assert_none_early(&self) {
        for c in self.all().iter().filter(|c| c.attempt > 1) {
            let due = c.due_at_ms.expect("a retry carries its due time");
            assert!(c.at_ms >= due, "{} attempt {} handled {} ms early", c.key, c.attempt, due - c.at_ms);
        }
    }
}

/// A `decide` for [`recording`]: every record fails its first attempt (retryable) and
/// succeeds on its retry.
pub fn fail_first(r: &Record) -> Result<(), HandlerError> {
    if r.attempt() == 1 {
        Err(HandlerError::retryable("once"))
    } else {
        Ok(())
    }
}

/// A `decide` for [`recording`]: every call succeeds.
pub fn always_ok(_: &Record) -> Result<(), HandlerError> {
    Ok(())
}

/// A record handler that records the call, then answers with `decide`.
pub fn recording(calls: &Calls, decide: impl Fn(&Record) -> Result<(), HandlerError> + Send + Sync + 'static) -> impl Handler {
    let calls = calls.clone();
    let decide = Arc::new(decide);
    handler::record(move |r: Record| {
        calls.push(&r);
        let answer = decide(&r);
        async move { answer }
    })
}

/// A handler that records every call in `calls` and holds the calls `held` picks until
/// `release` is notified (one call a notification); the others succeed at once.
pub fn holding(calls: &Calls, release: &Arc<Notify>, held: impl Fn(&Record) -> bool + Send + Sync + 'static) -> impl Handler {
    let (calls, release) = (calls.clone(), Arc::clone(release));
    handler::record(move |r: Record| {
        calls.push(&r);
        let wait = held(&r).then(|| Arc::clone(&release));
        async move {
            if let Some(release) = wait {
                release.notified().await;
            }
            Ok::<(), HandlerError>(())
        }
    })
}

/// A handler that records every call in `calls` and never returns from the calls `hangs`
/// picks (as a remote call with no timeout of its own: held for a release nobody gives);
/// the others succeed.
pub fn hanging(calls: &Calls, hangs: impl Fn(&Record) -> bool + Send + Sync + 'static) -> impl Handler {
    holding(calls, &Arc::new(Notify::new()), hangs)
}

/// A listener named `name` on `topic` for `group` with `policy`, whose handler records
/// every call in `calls` and answers with `decide`.
pub fn recorded_listener(
    name: &str,
    topic: &str,
    group: &str,
    policy: retryable_topic::RetryPolicy,
    calls: &Calls,
    decide: impl Fn(&Record) -> Result<(), HandlerError> + Send + Sync + 'static,
) -> retryable_topic::Listener {
    retryable_topic::Listener::builder(name).topics([topic]).group(group).policy(policy).handler(recording(calls, decide)).build().unwrap()
}
