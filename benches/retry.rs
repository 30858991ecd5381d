//! Speed, size and precision figures, printed as ratios: `cargo bench --bench retry`.
//!
//! Runs on the embedded broker (librdkafka's MockCluster, in process), so the figures
//! compare the framework with a bare rdkafka consumer on the same broker rather than
//! measuring a network. Targets live here, never in timed tests:
//!
//! * header size at attempt 900 / attempt 2 = 1.00 (replaced, never appended);
//! * framework cost per record on the happy path < 10 µs (≥ 100k records/s for one
//!   listener on this 2-core machine); the ratio to a bare rdkafka consumer, which does
//!   no per-record work at all, is printed for information;
//! * retry path (handle, fail, republish and wait for the ack, handle again) ≥ 5,000
//!   records/s;
//! * no retry handled before its due time; p99 lateness well under the delay.
//!
//! `RT_BENCH_RECORDS` sets the happy-path record count (default 20,000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use retryable_topic::headers::{self, FailureKind, RetryHeaders};
use retryable_topic::{handler, Backoff, EmbeddedKafka, HandlerError, Listener, Record, RetryPolicy, Runtime};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn row(what: &str, value: String, target: &str) {
    println!("{what:<52} {value:>16}   {target}");
}

/// Header bytes of a record after `hops` republishes, replaced (ours) or appended (as
/// Spring does).
fn header_bytes(hops: u32, append: bool) -> usize {
    let user: Vec<(String, Option<Vec<u8>>)> =
        vec![("traceparent".into(), Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec()))];
    let mut hs = user;
    for attempt in 2..=hops + 1 {
        let h = RetryHeaders {
            attempt,
            due_at_ms: now_ms() + 300_000,
            original_topic: "weather-forecast".into(),
            original_partition: 3,
            original_offset: 123_456,
            original_timestamp_ms: Some(now_ms()),
            first_failure_ms: now_ms(),
            group: "my-listener-group".into(),
            error_kind: FailureKind::Retryable,
            error: "forecast store unavailable (connection refused)".into(),
        };
        if append {
            hs.extend(h.encode().into_iter().map(|(n, v)| (n.to_owned(), Some(v))));
        } else {
            let borrowed: Vec<(&str, Option<&[u8]>)> = hs.iter().map(|(n, v)| (n.as_str(), v.as_deref())).collect();
            hs = headers::replace(borrowed, &h);
        }
    }
    hs.iter().map(|(n, v)| n.len() + v.as_ref().map_or(0, Vec::len)).sum()
}

fn hop_cost_ns(iterations: u32) -> f64 {
    let h = RetryHeaders {
        attempt: 2,
        due_at_ms: 1,
        original_topic: "weather-forecast".into(),
        original_partition: 0,
        original_offset: 0,
        original_timestamp_ms: None,
        first_failure_ms: 1,
        group: "g".into(),
        error_kind: FailureKind::Retryable,
        error: "boom".into(),
    };
    let mut hs: Vec<(String, Option<Vec<u8>>)> = headers::replace(std::iter::empty(), &h);
    let started = Instant::now();
    for _ in 0..iterations {
        let borrowed: Vec<(&str, Option<&[u8]>)> = hs.iter().map(|(n, v)| (n.as_str(), v.as_deref())).collect();
        let mut decoded = RetryHeaders::decode(borrowed.iter().copied()).unwrap().unwrap();
        decoded.attempt += 1;
        hs = headers::replace(borrowed, &decoded);
    }
    std::hint::black_box(&hs);
    started.elapsed().as_nanos() as f64 / f64::from(iterations)
}

async fn produce(bootstrap: &str, topic: &str, n: u64) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create().unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(2_000) {
        let sends = chunk.iter().map(|i| {
            let key = format!("k{i}");
            let producer = &producer;
            async move {
                producer.send(FutureRecord::to(topic).key(&key).payload("{}"), Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
            }
        });
        futures::future::join_all(sends).await;
    }
}

/// Seconds a bare rdkafka consumer (manual offset store, auto commit) takes to read `n`.
async fn bare_consumer_secs(kafka: &EmbeddedKafka, topic: &str, n: u64) -> f64 {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", kafka.bootstrap_servers())
        .set("group.id", format!("bare-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false");
    for (k, v) in EmbeddedKafka::client_config() {
        c.set(k, v);
    }
    let consumer: StreamConsumer = c.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut stream = consumer.stream();
    let first = stream.next().await.unwrap().unwrap();
    consumer.store_offset_from_message(&first).unwrap();
    drop(first);
    let started = Instant::now();
    for _ in 1..n {
        let m = stream.next().await.unwrap().unwrap();
        consumer.store_offset_from_message(&m).unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// Seconds the runtime takes to handle `n` records with `decide`, from its first call.
async fn runtime_secs(
    kafka: &EmbeddedKafka,
    topic: &str,
    n: u64,
    backoff: Duration,
    decide: fn(&Record) -> Result<(), HandlerError>,
) -> (f64, Vec<(i64, i64)>) {
    let handled = Arc::new(AtomicU64::new(0));
    let first_call = Arc::new(Mutex::new(None::<Instant>));
    let lateness = Arc::new(Mutex::new(Vec::new()));
    let (h, f, l) = (handled.clone(), first_call.clone(), lateness.clone());
    let listener = Listener::builder(topic)
        .topics([topic])
        .group(format!("bench-{topic}"))
        .policy(RetryPolicy::builder().attempts(3).backoff(Backoff::fixed(backoff)).build().unwrap())
        .handler(handler::record(move |r: Record| {
            f.lock().unwrap().get_or_insert_with(Instant::now);
            if let Some(rh) = r.retry_headers() {
                l.lock().unwrap().push((rh.due_at_ms, now_ms()));
            }
            let answer = decide(&r);
            if answer.is_ok() {
                h.fetch_add(1, Ordering::Relaxed);
            }
            async move { answer }
        }))
        .build()
        .unwrap();
    for t in listener.topology().sources()[0].derived() {
        kafka.create_topic(t, 4).unwrap();
    }
    let mut b =
        Runtime::builder().bootstrap_servers(kafka.bootstrap_servers()).consumer_set("auto.offset.reset", "earliest").listener(listener);
    for (k, v) in EmbeddedKafka::client_config() {
        b = b.consumer_set(k, v);
    }
    let running = b.build().unwrap().start().await.unwrap();
    while handled.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = first_call.lock().unwrap().unwrap().elapsed().as_secs_f64();
    running.shutdown().await;
    let l = lateness.lock().unwrap().clone();
    (secs, l)
}

fn fail_first(r: &Record) -> Result<(), HandlerError> {
    if r.attempt() == 1 {
        Err(HandlerError::retryable("once"))
    } else {
        Ok(())
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass other flags.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: u64 = std::env::var("RT_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    println!("{:<52} {:>16}   target", "figure", "value");

    let (a2, a900) = (header_bytes(1, false), header_bytes(899, false));
    row("header bytes at attempt 900 / attempt 2 (replaced)", format!("{:.2} ({a900}/{a2})", a900 as f64 / a2 as f64), "= 1.00");
    let appended = header_bytes(899, true);
    row(
        "header bytes at attempt 900, appended as Spring does",
        format!("{appended}"),
        &format!("{:.0}x ours", appended as f64 / a900 as f64),
    );
    row("decode + replace per hop", format!("{:.0} ns", hop_cost_ns(100_000)), "< 10 µs");

    let kafka = EmbeddedKafka::start().unwrap();
    for t in ["bare", "happy", "retry", "delay"] {
        kafka.create_topic(t, 4).unwrap();
    }
    produce(kafka.bootstrap_servers(), "bare", n).await;
    produce(kafka.bootstrap_servers(), "happy", n).await;
    let bare = bare_consumer_secs(&kafka, "bare", n).await;
    let (ours, _) = runtime_secs(&kafka, "happy", n, Duration::from_millis(1), |_| Ok(())).await;
    row("bare rdkafka consumer, records/s", format!("{:.0}", n as f64 / bare), "baseline");
    row("runtime, no-op handler, records/s", format!("{:.0}", n as f64 / ours), "");
    row("framework cost per record, happy path", format!("{:.1} µs", (ours - bare) / n as f64 * 1e6), "< 10 µs");
    row("runtime / bare consumer throughput", format!("{:.2}", bare / ours), "(information)");

    let m = n / 10;
    produce(kafka.bootstrap_servers(), "retry", m).await;
    let (secs, _) = runtime_secs(&kafka, "retry", m, Duration::from_millis(1), fail_first).await;
    row(&format!("{m} records failing once (1 ms backoff), records/s"), format!("{:.0}", m as f64 / secs), ">= 5000");

    produce(kafka.bootstrap_servers(), "delay", 400).await;
    let (_, lateness) = runtime_secs(&kafka, "delay", 400, Duration::from_secs(1), fail_first).await;
    let mut late: Vec<i64> = lateness.iter().map(|(due, at)| at - due).collect();
    late.sort_unstable();
    let early = late.iter().filter(|l| **l < 0).count();
    row("retries handled before their due time", format!("{early} of {}", late.len()), "= 0");
    row(
        "lateness p50 / p99 / max (1 s delay)",
        format!("{} / {} / {} ms", percentile(&late, 0.5), percentile(&late, 0.99), late.last().unwrap()),
        "p99 < 250 ms",
    );
    row("p99 lateness / delay", format!("{:.3}", percentile(&late, 0.99) as f64 / 1000.0), "< 0.25");

    row("peak resident memory (whole bench, broker included)", format!("{} MiB", status_kib("VmHWM:") / 1024), "");
}
