//! Key concurrency on a real broker: several records of one partition in the handler at
//! once, never two of one key, each key in offset order, offsets that pass only when
//! everything before them is done, and a call that never returns holding only its key.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::recorder::{hanging, holding, recorded_listener, Calls};
use common::{eventually, Broker, Started};
use retryable_topic::handler;
use retryable_topic::{Backoff, HandlerError, Listener, Record, RetryPolicy};
use tokio::sync::{Barrier, Notify};

const WAIT: Duration = Duration::from_secs(60);
const KEYS: [&str; 4] = ["a", "b", "c", "d"];

/// The listeners' gauges and counters, in Prometheus' text format: a recorder installed
/// for this test binary on first use (listeners started before have no-op handles).
fn rendered_metrics() -> String {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().expect("the only recorder")).render()
}

/// Records of `listener` waiting for their key now, by its gauge (none: never reported).
fn waiting_for_key(listener: &str) -> Option<f64> {
    common::sample(&rendered_metrics(), "retryable_topic_waiting_for_key", &format!("listener=\"{listener}\""))
}

/// What the handler saw: the keys in it now, and each key's payloads in the order called.
#[derive(Default)]
struct Seen {
    in_handler: HashSet<String>,
    overlaps: Vec<String>,
    order: HashMap<String, Vec<(u32, u64)>>,
    most_at_once: usize,
}

/// A listener with `key_concurrency` 4 whose handler records what it sees in `seen`. The
/// records whose payload `gated` picks meet at a barrier of four: they pass only if all
/// four are in the handler at once (otherwise the first waits in vain and fails).
/// `fails(n, attempt)` picks the calls that fail.
fn observed(
    name: &str,
    topic: &str,
    group: &str,
    seen: &Arc<Mutex<Seen>>,
    gated: fn(u64) -> bool,
    fails: fn(u64, u32) -> bool,
) -> Listener {
    let barrier = Arc::new(Barrier::new(KEYS.len()));
    let seen = Arc::clone(seen);
    Listener::builder(name)
        .topics([topic])
        .group(group)
        .policy(RetryPolicy::builder().attempts(3).backoff(Backoff::fixed(Duration::from_millis(10))).build().unwrap())
        .key_concurrency(KEYS.len())
        .handler(handler::record(move |r: Record| {
            let key = r.key_str().unwrap_or_default().to_owned();
            // Partitions run side by side: the retry topic's records may meet the source's.
            let in_partition = format!("{}/{}/{key}", r.topic(), r.partition());
            let n: u64 = std::str::from_utf8(r.payload().unwrap_or_default()).unwrap().parse().unwrap();
            let (seen, barrier) = (Arc::clone(&seen), Arc::clone(&barrier));
            async move {
                {
                    let mut s = seen.lock().unwrap();
                    if !s.in_handler.insert(in_partition.clone()) {
                        s.overlaps.push(format!("{key} #{n}"));
                    }
                    s.most_at_once = s.most_at_once.max(s.in_handler.len());
                    s.order.entry(key.clone()).or_default().push((r.attempt(), n));
                }
                let met = if gated(n) && r.attempt() == 1 {
                    tokio::time::timeout(Duration::from_secs(20), barrier.wait()).await.is_ok()
                } else {
                    // Let the others interleave.
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    true
                };
                seen.lock().unwrap().in_handler.remove(&in_partition);
                match met {
                    false => Err(HandlerError::retryable("the gated records were not in the handler at once")),
                    true if fails(n, r.attempt()) => Err(HandlerError::retryable("fails once")),
                    true => Ok(()),
                }
            }
        }))
        .build()
        .unwrap()
}

/// Produces `(key, n)` in order to `topic`'s one partition, runs `listener` until `n`
/// records were handled, and returns its metrics.
async fn run(broker: &Broker, topic: &str, listener: Listener, records: &[(&str, u64)]) -> retryable_topic::MetricsSnapshot {
    broker.prepare(&listener, 1).await;
    let producer = broker.producer();
    for (key, n) in records {
        broker.produce(&producer, topic, Some(key), Some(n.to_string().as_bytes()), &[]).await;
    }
    let running = broker.start(listener).await;
    let n = records.len() as u64;
    eventually(WAIT, "every record handled", || running.metrics().processed == n).await;
    running.shutdown().await
}

/// A listener with `key_concurrency` calls per partition whose handler records every call
/// in `calls` and holds the records `held` picks until `release` is notified.
fn held_listener(
    name: &str,
    topic: &str,
    group: &str,
    key_concurrency: usize,
    calls: &Calls,
    release: &Arc<Notify>,
    held: fn(&Record) -> bool,
) -> Listener {
    Listener::builder(name)
        .topics([topic])
        .group(group)
        .key_concurrency(key_concurrency)
        .handler(holding(calls, release, held))
        .build()
        .unwrap()
}

/// No two records of one key at once; each key's first attempts in offset order.
fn assert_keys_in_order(s: &Seen) {
    assert!(s.overlaps.is_empty(), "two records of one key in the handler at once: {:?}", s.overlaps);
    for (key, calls) in &s.order {
        let first: Vec<u64> = calls.iter().filter(|c| c.0 == 1).map(|c| c.1).collect();
        assert!(first.windows(2).all(|w| w[0] < w[1]), "key {key} out of offset order: {first:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_different_keys_run_at_once_and_each_key_in_order() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("keyconc"), broker.unique("g"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    // The first four records, one per key, meet at the barrier; record 9 fails once.
    let listener = observed("keyconc", &topic, &group, &seen, |n| n < 4, |n, attempt| n == 9 && attempt == 1);
    const N: u64 = 200;
    let records: Vec<(&str, u64)> = (0..N).map(|n| (KEYS[n as usize % KEYS.len()], n)).collect();
    let m = run(&broker, &topic, listener, &records).await;
    assert_eq!((m.processed, m.failed, m.retried, m.dead_lettered), (N, 1, 1, 0), "the barrier was met at once: {m}");
    let s = seen.lock().unwrap();
    assert_keys_in_order(&s);
    assert!(s.most_at_once >= KEYS.len(), "{}", s.most_at_once);
    for key in KEYS {
        assert_eq!(s.order[key].iter().filter(|c| c.0 == 1).count() as u64, N / KEYS.len() as u64, "key {key}");
    }
    assert_eq!(s.order["b"].iter().filter(|c| c.0 == 2).map(|c| c.1).collect::<Vec<_>>(), [9], "the failed record retried once");
    assert_eq!(broker.committed(&group, &topic), [N as i64]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_key_does_not_hold_up_the_keys_behind_it() {
    // Offsets 0 and 1 share the key `hot`; 1 waits for 0, but 2, 3 and 4 (other keys) do
    // not wait for 1: 0, 2, 3 and 4 meet at the barrier. Then more hot records among cold
    // ones; the hot key's records never overlap and keep their order.
    let broker = Broker::get();
    let (topic, group) = (broker.unique("hotkey"), broker.unique("g"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = observed("hotkey", &topic, &group, &seen, |n| matches!(n, 0 | 2 | 3 | 4), |_, _| false);
    let mut records = vec![("hot", 0), ("hot", 1), ("a", 2), ("b", 3), ("c", 4)];
    let cold: Vec<String> = (5..100).map(|n| format!("cold{n}")).collect();
    for (i, key) in cold.iter().enumerate() {
        let n = i as u64 + 5;
        records.push(if n.is_multiple_of(3) { ("hot", n) } else { (key.as_str(), n) });
    }
    let m = run(&broker, &topic, listener, &records).await;
    assert_eq!((m.processed, m.failed), (records.len() as u64, 0), "the barrier was met: {m}");
    let s = seen.lock().unwrap();
    assert_keys_in_order(&s);
    assert_eq!(s.order["hot"].len(), records.iter().filter(|r| r.0 == "hot").count());
    assert_eq!(broker.committed(&group, &topic), [records.len() as i64]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_passes_only_when_every_record_before_it_is_done() {
    // The record at offset 0 stays in the handler while the nine behind it (other keys)
    // are done: nothing may be committed; after a shutdown, the next member handles the
    // record at offset 0 again, and the group ends committed past all ten.
    let broker = Broker::get();
    let (topic, group) = (broker.unique("watermark"), broker.unique("g"));
    let (calls, release) = (Calls::default(), Arc::new(Notify::new()));
    let slow = held_listener("watermark", &topic, &group, 4, &calls, &release, |r| r.key_str() == Some("slow"));
    broker.prepare(&slow, 1).await;
    let producer = broker.producer();
    broker.produce(&producer, &topic, Some("slow"), Some(b"{}"), &[]).await;
    for i in 1..10 {
        broker.produce(&producer, &topic, Some(&format!("k{i}")), Some(b"{}"), &[]).await;
    }
    let running = broker.runtime().shutdown_grace(Duration::from_millis(500)).listener(slow).started().await;
    eventually(WAIT, "the nine behind the slow record handled", || running.metrics().processed == 9).await;
    assert!(calls.has("slow", 1));
    tokio::time::timeout(WAIT, running.shutdown()).await.expect("shutdown returns after the grace");
    release.notify_waiters();
    assert!(broker.committed(&group, &topic)[0] <= 0, "committed past a record still in the handler");

    let next = Calls::default();
    let policy = RetryPolicy::builder().build().unwrap();
    let listener = recorded_listener("next", &topic, &group, policy, &next, |_| Ok(()));
    let running = broker.start(listener).await;
    eventually(WAIT, "the next member handles the record from offset 0 on", || next.has("slow", 1) && next.all().len() >= 10).await;
    running.shutdown().await;
    assert_eq!(broker.committed(&group, &topic), [10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_waiting_for_its_key_at_shutdown_is_not_committed_past() {
    // "a" #0 is in the handler, "a" #1 waits for its key, "b" #2 is done. Shutting down
    // gives the waiting record up; when "a" #0 then finishes within the grace, the offset
    // may pass it, but not the record given up: it must come to the next member.
    let broker = Broker::get();
    rendered_metrics();
    let (topic, group) = (broker.unique("waiting-at-stop"), broker.unique("g"));
    let (calls, release) = (Calls::default(), Arc::new(Notify::new()));
    let listener = held_listener("waiting-at-stop", &topic, &group, 2, &calls, &release, |r| r.offset() == 0);
    broker.prepare(&listener, 1).await;
    let producer = broker.producer();
    for key in ["a", "a", "b"] {
        broker.produce(&producer, &topic, Some(key), Some(b"{}"), &[]).await;
    }
    let running = broker.runtime().shutdown_grace(Duration::from_secs(20)).listener(listener).started().await;
    eventually(WAIT, "\"b\" handled while \"a\" #0 is in the handler", || running.metrics().processed == 1 && calls.has("a", 1)).await;
    eventually(WAIT, "\"a\" #1 waiting for its key", || waiting_for_key("waiting-at-stop") == Some(1.0)).await;
    let stopping = tokio::spawn(running.shutdown());
    eventually(WAIT, "the waiting \"a\" #1 given up by the stopping owner", || waiting_for_key("waiting-at-stop") == Some(0.0)).await;
    release.notify_waiters();
    let metrics = tokio::time::timeout(WAIT, stopping).await.expect("shutdown returns").unwrap();
    assert_eq!(metrics.processed, 2, "\"a\" #0 finished within the grace, \"a\" #1 was given up");
    assert_eq!(broker.committed(&group, &topic), [1], "the offset passes the finished \"a\" #0 but not the given-up \"a\" #1");

    let next = Calls::default();
    let policy = RetryPolicy::builder().build().unwrap();
    let listener = recorded_listener("next", &topic, &group, policy, &next, |_| Ok(()));
    let running = broker.start(listener).await;
    eventually(WAIT, "the next member handles \"a\" #1 and \"b\" again", || next.all().len() >= 2).await;
    running.shutdown().await;
    assert_eq!(broker.committed(&group, &topic), [3]);
}

/// Under key concurrency a call that never returns holds only its key, and only until its
/// `handler_timeout`: the other keys' records are handled meanwhile, the next record of
/// its key waits for it, and it is retried like any failed attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_never_returns_holds_only_its_key_until_its_timeout() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("kc-hangs"), broker.unique("g"));
    let calls = Calls::default();
    let listener = Listener::builder("kc-hangs")
        .topics([topic.as_str()])
        .group(&group)
        .policy(RetryPolicy::builder().attempts(3).backoff(Backoff::fixed(Duration::from_millis(10))).build().unwrap())
        .key_concurrency(KEYS.len())
        .handler_timeout(Duration::from_secs(5))
        .handler(hanging(&calls, |r| r.key_str() == Some("hang") && r.payload() == Some(&b"first"[..]) && r.attempt() == 1))
        .build()
        .unwrap();
    broker.prepare(&listener, 1).await;
    let running = broker.start(listener).await;
    let producer = broker.producer();
    broker.produce(&producer, &topic, Some("hang"), Some(b"first"), &[]).await;
    for i in 0..10 {
        broker.produce(&producer, &topic, Some(&format!("k{i}")), Some(b"x"), &[]).await;
    }
    broker.produce(&producer, &topic, Some("hang"), Some(b"second"), &[]).await;
    eventually(WAIT, "the other keys handled while the call hangs", || (0..10).all(|i| calls.has(&format!("k{i}"), 1))).await;
    // The hanging call is still in the handler, so its key's next record waits.
    assert_eq!((running.metrics().handler_timeouts, calls.count("hang", 1)), (0, 1), "{}", running.metrics());
    eventually(WAIT, "the hanging record retried and its key's next record handled", || {
        calls.count("hang", 1) == 2 && calls.has("hang", 2)
    })
    .await;
    let m = running.shutdown().await;
    assert_eq!((m.processed, m.failed, m.retried, m.handler_timeouts), (12, 1, 1, 1), "{m}");
    assert_eq!(broker.committed(&group, &topic), [12]);
}
