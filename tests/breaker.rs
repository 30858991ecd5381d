//! Outage or outlier, on a real broker: the circuit breaker pauses a listener through an
//! outage instead of copying the stream into the retry topic, and lets one bad record
//! take the non-blocking way without ever opening. Also the operator's manual pause.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{eventually, eventually_explained, figure, Broker};
use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use retryable_topic::handler;
use retryable_topic::{Backoff, CircuitBreaker, HandlerError, Listener, MetricsSnapshot, Record, RetryPolicy, RunningRuntime};

const RECORDS: usize = 5_000;
const PARTITIONS: i32 = 4;
const WAIT: Duration = Duration::from_secs(90);

/// One handler call: (partition, offset, key, attempt, ok).
type Call = (i32, i64, String, u32, bool);

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Call>>>);

impl Log {
    fn push(&self, r: &Record, ok: bool) {
        let key = r.key_str().unwrap_or_default().to_owned();
        self.0.lock().unwrap().push((r.partition(), r.offset(), key, r.attempt(), ok));
    }
    fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }
    fn handled_keys(&self) -> HashSet<String> {
        self.all().into_iter().filter(|c| c.4).map(|c| c.2).collect()
    }
}

/// A store that is down for `outage` from the first call on, and rejects `poison` always;
/// records retried every 500 ms, `attempts` in all, `key_concurrency` calls per partition
/// at once.
#[allow(clippy::too_many_arguments)]
fn listener(
    name: &str,
    topic: &str,
    group: &str,
    attempts: u32,
    outage: Duration,
    poison: Option<&'static str>,
    breaker: bool,
    log: &Log,
    key_concurrency: usize,
) -> Listener {
    let log = log.clone();
    let started = Arc::new(OnceLock::<Instant>::new());
    let mut b = Listener::builder(name)
        .key_concurrency(key_concurrency)
        .topics([topic])
        .group(group)
        .policy(RetryPolicy::builder().attempts(attempts).backoff(Backoff::fixed(Duration::from_millis(500))).build().unwrap())
        .handler(handler::record(move |r: Record| {
            let down = started.get_or_init(Instant::now).elapsed() < outage;
            let poisoned = poison.is_some_and(|p| r.key_str() == Some(p));
            let ok = !down && !poisoned;
            log.push(&r, ok);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(HandlerError::retryable(if down { "store unavailable" } else { "cannot store this one" }))
                }
            }
        }));
    if breaker {
        b = b.circuit_breaker(CircuitBreaker::default());
    }
    b.build().unwrap()
}

/// Produces `n` records with keys `k0…` (and `extra` keys), spread over the partitions.
async fn produce(broker: &Broker, topic: &str, n: usize, extra: &[&str]) {
    let producer = broker.client_config().set("linger.ms", "5").create::<rdkafka::producer::FutureProducer>().unwrap();
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).chain(extra.iter().map(|k| (*k).to_owned())).collect();
    for chunk in keys.chunks(1_000) {
        let sends =
            chunk.iter().map(|k| producer.send(FutureRecord::<str, [u8]>::to(topic).key(k).payload(b"{}"), Duration::from_secs(30)));
        for r in join_all(sends).await {
            r.map_err(|(e, _)| e).expect("produce");
        }
    }
}

/// Checks that every partition's first attempts were handled successfully in offset order.
fn assert_in_order(log: &Log) {
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o, _, attempt, ok) in log.all() {
        if ok && attempt == 1 {
            let prev = last.insert(p, o);
            assert!(prev.is_none_or(|prev| prev < o), "partition {p}: offset {o} handled after {prev:?}");
        }
    }
}

async fn run_outage(broker: &Broker, breaker: bool, key_concurrency: usize) -> (MetricsSnapshot, Log, String, String) {
    let (topic, group) = (broker.unique("outage"), broker.unique("g"));
    let log = Log::default();
    let l = listener("store", &topic, &group, 10, Duration::from_secs(3), None, breaker, &log, key_concurrency);
    broker.prepare(&l, PARTITIONS).await;
    produce(broker, &topic, RECORDS, &[]).await;
    let running = broker.start(l).await;
    eventually(WAIT, "every record handled once the store healed", || log.handled_keys().len() == RECORDS).await;
    let m = running.shutdown().await;
    (m, log, topic, group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_pauses_the_listener_instead_of_flooding_the_retry_topic() {
    let broker = Broker::get();
    let (plain, _, _, _) = run_outage(&broker, false, 1).await;
    let (m, log, topic, group) = run_outage(&broker, true, 1).await;
    figure(&broker, &format!("3 s outage over {RECORDS} records: republished {} with the breaker, {} without", m.retried, plain.retried));
    assert!(m.retried <= (RECORDS / 100) as u64, "with the breaker at most 1% republished: {m}");
    assert!(plain.retried > m.retried * 10, "without the breaker the outage floods the retry topic: {plain}");
    assert!(m.breaker_opened >= 1 && m.breaker_closed >= 1 && m.held_by_breaker >= 1, "{m}");
    assert_eq!(m.breaker_open, 0, "closed at the end: {m}");
    assert_eq!((m.dead_lettered, m.dropped, m.stopped_partitions), (0, 0, 0), "{m}");
    assert_in_order(&log);
    let committed: i64 = broker.committed(&group, &topic).iter().sum();
    assert_eq!(committed, RECORDS as i64, "every source record committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_key_concurrency_the_calls_in_hand_when_the_breaker_opens_are_parked_not_republished() {
    // Eight calls per partition at once: when the breaker opens, the calls that were in
    // the handler come back failed; they keep their place (nothing is committed past
    // them), are not republished, and are called again first once the store heals.
    let broker = Broker::get();
    let (m, log, topic, group) = run_outage(&broker, true, 8).await;
    figure(&broker, &format!("3 s outage over {RECORDS} records, 8 calls per partition at once: republished {}", m.retried));
    assert!(m.retried <= (RECORDS / 100) as u64, "with the breaker at most 1% republished: {m}");
    assert!(m.breaker_opened >= 1 && m.breaker_closed >= 1 && m.held_by_breaker >= 1, "{m}");
    assert_eq!(m.breaker_open, 0, "closed at the end: {m}");
    assert_eq!((m.dead_lettered, m.dropped, m.stopped_partitions), (0, 0, 0), "{m}");
    let handled = log.handled_keys();
    let held_then_handled = log.all().iter().filter(|c| !c.4 && c.3 == 1 && handled.contains(&c.2)).count();
    assert!(held_then_handled >= 1, "some record failed in the outage and was handled after it");
    let committed: i64 = broker.committed(&group, &topic).iter().sum();
    assert_eq!(committed, RECORDS as i64, "every source record committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poison_key_goes_the_non_blocking_way_and_never_opens_the_breaker() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("outlier"), broker.unique("g"));
    let log = Log::default();
    let l = listener("store", &topic, &group, 3, Duration::ZERO, Some("poison"), true, &log, 1);
    broker.prepare(&l, PARTITIONS).await;
    produce(&broker, &topic, RECORDS, &["poison"]).await;
    let running = broker.start(l).await;
    eventually(WAIT, "the healthy records handled and the poison one dead-lettered", || {
        log.handled_keys().len() == RECORDS && running.metrics().dead_lettered == 1
    })
    .await;
    let m = running.shutdown().await;
    assert_eq!((m.breaker_opened, m.held_by_breaker, m.retried, m.failed), (0, 0, 2, 3), "{m}");
    assert_in_order(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_an_outlier_and_a_rebalance_while_open_loses_nothing_and_ends_unpaused() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("both"), broker.unique("g"));
    let log = Log::default();
    let first = listener("store", &topic, &group, 3, Duration::from_secs(4), Some("poison"), true, &log, 1);
    broker.prepare(&first, PARTITIONS).await;
    produce(&broker, &topic, RECORDS, &["poison"]).await;
    let a = broker.start(first).await;
    eventually(WAIT, "the breaker open", || a.metrics().breaker_open == 1).await;
    // A second member joins while the first one's breaker is open: partitions move.
    let second = listener("store", &topic, &group, 3, Duration::from_secs(2), Some("poison"), true, &log, 1);
    let b = broker.start(second).await;
    let both = |a: &RunningRuntime, b: &RunningRuntime| a.metrics() + b.metrics();
    eventually_explained(
        WAIT,
        "every healthy record handled and the poison one dead-lettered",
        || log.handled_keys().len() == RECORDS && both(&a, &b).dead_lettered >= 1,
        || {
            let handled = log.handled_keys();
            let missing: Vec<String> = (0..RECORDS).map(|i| format!("k{i}")).filter(|k| !handled.contains(k)).collect();
            let calls: Vec<Call> = log.all().into_iter().filter(|c| missing.contains(&c.2)).take(20).collect();
            format!(
                "{} of {RECORDS} never handled, e.g. {:?}; their calls (partition, offset, key, attempt, ok): {calls:?}\n\
                 first member: {}\nsecond member: {}\ncommitted: {:?}",
                missing.len(),
                &missing[..missing.len().min(10)],
                a.metrics(),
                b.metrics(),
                broker.committed(&group, &topic),
            )
        },
    )
    .await;
    eventually(WAIT, "no breaker left open", || both(&a, &b).breaker_open == 0).await;
    // Checked while both members run: a member leaving starts a rebalance, during which
    // the other's final commit may be refused (its records would be redelivered).
    let committed = || broker.committed(&group, &topic).iter().sum::<i64>();
    eventually(WAIT, "every source record committed", || committed() == RECORDS as i64 + 1).await;
    let m = a.shutdown().await + b.shutdown().await;
    assert_eq!((m.stopped_partitions, m.dropped), (0, 0), "{m}");
}

/// A partition paused when it is revoked (here its records are held by an operator's pause,
/// before any offset of it was committed) and then assigned to the same member again is
/// read again once the pause is lifted. librdkafka keeps an application's pause across the
/// unassign, and the fenced owners can no longer lift it: without the runtime's resume of
/// each assigned partition, the partition that came back stays paused (102 of 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_revoked_while_paused_is_read_again_when_it_comes_back() {
    const N: usize = 200;
    let broker = Broker::get();
    let (topic, group) = (broker.unique("back"), broker.unique("g"));
    let log = Log::default();
    let first = listener("back", &topic, &group, 3, Duration::ZERO, None, false, &log, 1);
    broker.prepare(&first, 2).await;
    let a = broker.start(first).await;
    a.pause("back").unwrap();
    produce(&broker, &topic, N, &[]).await;
    eventually(WAIT, "records read and held by the first member", || a.metrics().queued_bytes > 0).await;
    // A second member joins: the first one's partitions are revoked while paused, and one of
    // them comes back to it.
    let second = listener("back", &topic, &group, 3, Duration::ZERO, None, false, &log, 1);
    let b = broker.start(second).await;
    b.pause("back").unwrap();
    assert!(b.wait_for_assignment(WAIT).await, "the second member got a partition");
    assert!(a.wait_for_assignment(WAIT).await, "the first member kept a partition");
    a.resume("back").unwrap();
    b.resume("back").unwrap();
    eventually_explained(
        WAIT,
        "every record handled after the pause is lifted",
        || log.handled_keys().len() == N,
        || format!("{} of {N} handled\nfirst member: {}\nsecond member: {}", log.handled_keys().len(), a.metrics(), b.metrics()),
    )
    .await;
    let m = a.shutdown().await + b.shutdown().await;
    assert_eq!((m.failed, m.stopped_partitions), (0, 0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pauses_and_resumes_a_listener() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("manual"), broker.unique("g"));
    let log = Log::default();
    let l = listener("manual", &topic, &group, 3, Duration::ZERO, None, false, &log, 1);
    broker.prepare(&l, 1).await;
    let running = broker.start(l).await;
    assert!(running.pause("no-such-listener").is_err());
    running.pause("manual").unwrap();
    produce(&broker, &topic, 100, &[]).await;
    // The records arrive and are held: read into memory, not handled.
    eventually(WAIT, "records read and held", || running.metrics().queued_bytes > 0).await;
    assert_eq!(running.metrics().breaker_open, 1);
    assert!(log.all().is_empty(), "nothing handled while paused");
    running.resume("manual").unwrap();
    eventually(WAIT, "every record handled after the resume", || log.handled_keys().len() == 100).await;
    let m = running.shutdown().await;
    assert_eq!((m.processed, m.failed, m.retried, m.breaker_open), (100, 0, 0, 0), "{m}");
    assert_in_order(&log);
}

/// librdkafka rewinds a paused partition to the last record it gave the application, and
/// a pause from an owner's task races with the dispatcher's read: a record read just then
/// is fetched a second time after the resume. The owner must hand each offset over once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_and_resuming_over_and_over_hands_every_record_over_once() {
    const N: usize = 50_000;
    let broker = Broker::get();
    let (topic, group) = (broker.unique("flicker"), broker.unique("g"));
    let log = Log::default();
    let l = listener("flicker", &topic, &group, 3, Duration::ZERO, None, false, &log, 1);
    broker.prepare(&l, 8).await;
    produce(&broker, &topic, N, &[]).await;
    let running = Arc::new(broker.start(l).await);
    let flicker = {
        let running = Arc::clone(&running);
        tokio::spawn(async move {
            loop {
                running.pause("flicker").unwrap();
                tokio::task::yield_now().await;
                running.resume("flicker").unwrap();
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    eventually(WAIT, "every record handled", || log.handled_keys().len() == N).await;
    flicker.abort();
    let _ = flicker.await;
    let calls = log.all();
    let mut seen = HashSet::new();
    let twice: Vec<_> = calls.iter().filter(|c| !seen.insert((c.0, c.1))).map(|c| (c.0, c.1)).collect();
    assert!(twice.is_empty(), "{} records handed over twice, e.g. {:?}", twice.len(), &twice[..twice.len().min(5)]);
    assert_eq!(calls.len(), N);
    assert_in_order(&log);
    let m = Arc::into_inner(running).expect("the only handle").shutdown().await;
    assert_eq!((m.processed, m.failed), (N as u64, 0), "{m}");
}
