//! Consumer errors and failed offset commits: each is counted, and logged at most once per
//! distinct error in a while (with how often it repeated), whoever reads it: the
//! dispatcher, a partition's owner, or the consumer's commit callback.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::metrics::Metrics;

/// At most one log line per distinct error in this time.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct ConsumerErrors {
    /// Per error text: when it was last logged, and how often it came since.
    logged: Mutex<HashMap<String, (Instant, u64)>>,
}

impl ConsumerErrors {
    /// Counts `e` and logs it unless it was logged a moment ago. Reading goes on: the
    /// client recovers by itself, and the healthy partitions are never slowed down.
    pub(crate) fn report(&self, listener: &str, metrics: &Metrics, e: &KafkaError) {
        metrics.inc_consumer_errors();
        if let Some(repeated) = self.due_for_log(e) {
            tracing::warn!(listener, error = %e, repeated, "consumer error; reading on (the client recovers by itself)");
        }
    }

    /// Counts a failed offset commit and logs it unless it was logged a moment ago. The
    /// offsets stay stored and go with the next commit; until one succeeds, a restart or
    /// a rebalance reads the records since the last commit again. "Nothing to commit" is
    /// not a failure.
    pub(crate) fn report_commit(&self, listener: &str, metrics: &Metrics, e: &KafkaError) {
        if matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
            return;
        }
        metrics.inc_commit_failed();
        if let Some(repeated) = self.due_for_log(e) {
            tracing::warn!(
                listener,
                error = %e,
                repeated,
                "offset commit failed; the next commit tries again (until one succeeds, a restart reads these records again)"
            );
        }
    }

    /// Whether `e` is to be logged now, and if so how often it came unlogged since its
    /// last log line.
    fn due_for_log(&self, e: &KafkaError) -> Option<u64> {
        let text = e.to_string();
        let now = Instant::now();
        let mut logged = self.logged.lock().expect("consumer errors lock");
        match logged.get_mut(&text) {
            Some((last, suppressed)) if now.duration_since(*last) < LOG_EVERY => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                logged.insert(text, (now, 0));
                Some(0)
            }
        }
    }
}
