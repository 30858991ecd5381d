//! Consumer errors: each is counted, and logged at most once per distinct error in a while
//! (with how often it repeated), whoever reads it: the dispatcher or a partition's owner.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

use crate::metrics::Metrics;

/// At most one log line per distinct consumer error in this time.
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
        let text = e.to_string();
        let now = Instant::now();
        let mut logged = self.logged.lock().expect("consumer errors lock");
        match logged.get_mut(&text) {
            Some((last, suppressed)) if now.duration_since(*last) < LOG_EVERY => *suppressed += 1,
            Some((last, suppressed)) => {
                tracing::warn!(listener, error = %e, repeated = *suppressed, "consumer error; reading on");
                *last = now;
                *suppressed = 0;
            }
            None => {
                tracing::warn!(listener, error = %e, "consumer error; reading on (the client recovers by itself)");
                logged.insert(text, (now, 0));
            }
        }
    }
}
