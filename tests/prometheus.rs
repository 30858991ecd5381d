//! The metrics as a scraper sees them: a run on a real broker with the `prometheus`
//! feature, then `GET /metrics` over HTTP, checked against what happened. Its own test
//! binary, since the exporter is a process-wide recorder.
#![cfg(feature = "prometheus")]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::recorder::{recorded_listener, Calls};
use common::{eventually, Broker};
use retryable_topic::{Backoff, HandlerError, RetryPolicy};

/// The body of `GET /metrics` at `address`.
fn scrape(address: &str) -> String {
    let mut s = std::net::TcpStream::connect(address).expect("the metrics endpoint answers");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// The value of the sample `name{labels}` (labels as the exporter writes them), if any.
fn sample(body: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_shows_what_happened() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("prom"), broker.unique("g"));
    let calls = Calls::default();
    // 10 records: two fail once, one always (three attempts, then the DLT).
    let policy = RetryPolicy::builder().attempts(3).backoff(Backoff::fixed(Duration::from_millis(50))).build().unwrap();
    let listener = recorded_listener("prom", &topic, &group, policy, &calls, |r| match (r.key_str(), r.attempt()) {
        (Some("k1" | "k2"), 1) => Err(HandlerError::retryable("once")),
        (Some("k9"), _) => Err(HandlerError::retryable("always")),
        _ => Ok(()),
    });
    broker.prepare(&listener, 1).await;
    let address = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let running = broker.runtime().prometheus(&address).listener(listener).build().unwrap().start().await.unwrap();
    let producer = broker.producer();
    for i in 0..10 {
        broker.produce(&producer, &topic, Some(&format!("k{i}")), Some(b"{}"), &[]).await;
    }
    eventually(Duration::from_secs(60), "every record handled or dead-lettered", || {
        let m = running.metrics();
        m.processed == 9 && m.dead_lettered == 1
    })
    .await;
    let body = scrape(&address);
    let l = r#"listener="prom""#;
    let counter = |name: &str| sample(&body, name, l).unwrap_or_else(|| panic!("no {name} in:\n{body}"));
    assert_eq!(counter("retryable_topic_processed_total"), 9.0);
    assert_eq!(counter("retryable_topic_failed_total"), 5.0, "k1, k2 once; k9 three times");
    assert_eq!(counter("retryable_topic_retried_total"), 4.0, "k1, k2 once; k9 twice");
    assert_eq!(counter("retryable_topic_dead_lettered_total"), 1.0);
    // Every call timed; every retry's lateness and, for those that succeeded, the time
    // from first failure to success.
    assert_eq!(counter("retryable_topic_handler_seconds_count"), 14.0);
    assert_eq!(counter("retryable_topic_retry_lateness_seconds_count"), 4.0);
    assert_eq!(counter("retryable_topic_recovery_seconds_count"), 2.0);
    assert!(counter("retryable_topic_retry_lateness_seconds_sum") >= 0.0);
    assert_eq!(sample(&body, "retryable_topic_breaker_open", l), Some(0.0));
    assert!(body.contains(r#"retryable_topic_paused_partitions{listener="prom",reason="not_due"}"#), "{body}");
    running.shutdown().await;
}
