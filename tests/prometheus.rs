//! The metrics as a scraper sees them: a run on a real broker with the `prometheus`
//! feature, then `GET /metrics` over HTTP, checked against what happened. Its own test
//! binary, since the exporter is a process-wide recorder.
#![cfg(feature = "prometheus")]

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use common::recorder::{recorded_listener, Calls};
use common::{eventually, sample, Broker, Started};
use retryable_topic::{handler, Backoff, HandlerError, Listener, Record, RetryPolicy};
use tokio::sync::Semaphore;

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
    // A second listener, 4 calls per partition at once: three records of one hot key, held
    // in the handler until released, then one other key.
    let hot_topic = broker.unique("prom-hot");
    let release = Arc::new(Semaphore::new(0));
    let gate = Arc::clone(&release);
    let hot = Listener::builder("hot")
        .topics([hot_topic.as_str()])
        .group(broker.unique("g-hot"))
        .key_concurrency(4)
        .handler(handler::record(move |_: Record| {
            let gate = Arc::clone(&gate);
            async move {
                gate.acquire().await.expect("open").forget();
                Ok::<(), HandlerError>(())
            }
        }))
        .build()
        .unwrap();
    broker.prepare(&hot, 1).await;
    let address = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let running = broker.runtime().prometheus(&address).listener(listener).listener(hot).started().await;
    let producer = broker.producer();
    for key in ["hot", "hot", "hot", "cold"] {
        broker.produce(&producer, &hot_topic, Some(key), Some(b"{}"), &[]).await;
    }
    let h = r#"listener="hot""#;
    eventually(Duration::from_secs(60), "two calls under way and two hot records waiting for their key", || {
        let body = scrape(&address);
        sample(&body, "retryable_topic_concurrent_calls", h) == Some(2.0)
            && sample(&body, "retryable_topic_waiting_for_key", h) == Some(2.0)
    })
    .await;
    release.add_permits(4);
    eventually(Duration::from_secs(60), "the hot listener done, its gauges back to 0", || {
        let body = scrape(&address);
        running.listener_metrics("hot").is_some_and(|m| m.processed == 4)
            && sample(&body, "retryable_topic_concurrent_calls", h) == Some(0.0)
            && sample(&body, "retryable_topic_waiting_for_key", h) == Some(0.0)
    })
    .await;
    for i in 0..10 {
        broker.produce(&producer, &topic, Some(&format!("k{i}")), Some(b"{}"), &[]).await;
    }
    eventually(Duration::from_secs(60), "every record handled or dead-lettered", || {
        let m = running.listener_metrics("prom").expect("the listener");
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
    assert_eq!(sample(&body, "retryable_topic_assigned_partitions", l), Some(2.0), "its source and retry partition");
    assert!(body.contains(r#"retryable_topic_paused_partitions{listener="prom",reason="not_due"}"#), "{body}");
    running.shutdown().await;
}
