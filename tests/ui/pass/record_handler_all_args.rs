use retryable_topic::{retryable_topic, HandlerError, Record, TopicStrategy};
use std::time::Duration;

#[retryable_topic(topics = ["audit", "audit-eu"], group = "auditors", attempts = 6, backoff = "1s",
                  multiplier = 2.0, max_delay = "1m", jitter = 0.1, suffix = "-retry", dlt_suffix = "-dead",
                  dlt = fail_on_error, fixed_delay = multiple_topics, max_retry_topics = 3, group_naming = per_group,
                  timeout = "PT1H", blocking_attempts = 2, blocking_delay = "50ms", auto_create_topics = true,
                  partitions = 3, replication = 1, key_concurrency = 16, handler_timeout = "30s", stalled_after = "10s", name = "audit-listener",
                  crate = "::retryable_topic",
                  circuit_breaker(window = "30s", min_calls = 50, failure_rate = 0.8, min_keys = 10,
                                  probe_delay = "2s", max_probe_delay = "5m"))]
pub async fn audit(record: Record) -> Result<(), HandlerError> {
    match record.payload() {
        Some(_) => Ok(()),
        None => Err(HandlerError::fatal("tombstone")),
    }
}

#[retryable_topic(topics = ["plain"], group = "g", circuit_breaker = true)]
async fn with_default_breaker(record: Record) -> Result<(), std::io::Error> {
    let _ = record;
    Ok(())
}

#[retryable_topic(topics = ["steps"], group = "g", backoff = "1s", linear_step = "2s", max_delay = "9s")]
async fn linear(record: Record) -> Result<(), std::io::Error> {
    let _ = record;
    Ok(())
}

fn main() {
    let l = audit::listener().unwrap();
    assert_eq!(l.name(), "audit-listener");
    assert_eq!(l.handler_timeout(), Some(Duration::from_secs(30)));
    assert_eq!(l.stalled_after(), Duration::from_secs(10));
    let p = l.policy();
    assert_eq!(p.topic_strategy(), TopicStrategy::MultipleTopics);
    assert_eq!(p.backoff().delay(3), Duration::from_secs(4));
    assert_eq!(p.timeout(), Some(Duration::from_secs(3600)));
    assert_eq!(p.blocking(), (2, Duration::from_millis(50)));
    assert_eq!(p.auto_create().unwrap().partitions, Some(3));
    assert_eq!(l.topology().sources()[0].retry, ["audit-retry-auditors-0", "audit-retry-auditors-1", "audit-retry-auditors-2"]);
    assert_eq!(l.topology().sources()[1].dlt.as_deref(), Some("audit-eu-dead-auditors"));
    let lin = linear::listener().unwrap();
    assert_eq!(lin.policy().backoff().delay(3), Duration::from_secs(5));
    assert_eq!(lin.policy().backoff().delay(9), Duration::from_secs(9));
    assert!(lin.circuit_breaker().is_none(), "off unless asked for");
    assert_eq!((l.key_concurrency(), lin.key_concurrency()), (16, 1));
    let breaker = retryable_topic::CircuitBreaker::default()
        .window(Duration::from_secs(30))
        .min_calls(50)
        .failure_rate(0.8)
        .min_keys(10)
        .probe_delay(Duration::from_secs(2))
        .max_probe_delay(Duration::from_secs(300));
    assert_eq!(l.circuit_breaker(), Some(&breaker));
    assert_eq!(with_default_breaker::listener().unwrap().circuit_breaker(), Some(&retryable_topic::CircuitBreaker::default()));
}
