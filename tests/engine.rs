//! The retry engine on a real broker: non-blocking retries, due times, headers, DLT
//! strategies, topic checks and graceful shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::recorder::{recorded_listener, recording, Calls};
use common::{eventually, now_ms, Broker, Started};
use retryable_topic::headers::{self, names, FailureKind, HeaderFormat};
use retryable_topic::{Backoff, DltStrategy, Error, HandlerError, Listener, RetryPolicy};

const WAIT: Duration = Duration::from_secs(60);

fn policy(attempts: u32, delay_ms: u64) -> retryable_topic::RetryPolicyBuilder {
    RetryPolicy::builder().attempts(attempts).backoff(Backoff::fixed(Duration::from_millis(delay_ms)))
}

fn fail(msg: &str) -> Result<(), HandlerError> {
    Err(HandlerError::retryable(msg.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_record_does_not_delay_the_records_after_it() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("orders"), broker.unique("g"));
    let calls = Calls::default();
    let listener = recorded_listener("orders", &topic, &group, policy(3, 2_000).build().unwrap(), &calls, |r| {
        if r.key_str() == Some("k3") && r.attempt() == 1 {
            fail("store down")
        } else {
            Ok(())
        }
    });
    broker.prepare(&listener, 1).await;
    let retry_topic = listener.topology().sources()[0].retry[0].clone();
    let running = broker.start(listener).await;

    let producer = broker.producer();
    for i in 0..10 {
        broker.produce(&producer, &topic, Some(&format!("k{i}")), Some(b"{}"), &[]).await;
    }
    eventually(WAIT, "k3 handled again on the retry topic", || calls.has("k3", 2)).await;

    // Every later record was handled before k3's retry: the partition moved on.
    let retry_at = calls.position("k3", 2).unwrap();
    for i in 4..10 {
        let at = calls.position(&format!("k{i}"), 1).unwrap();
        assert!(at < retry_at, "k{i} (call {at}) waited for k3's retry (call {retry_at})");
    }
    // The republished record carries its origin.
    let republished = &broker.read(&retry_topic, 1).await[0];
    let h = republished.retry_headers().expect("retry headers");
    assert_eq!((h.attempt, h.original_topic.as_str(), h.original_offset, h.group.as_str()), (2, topic.as_str(), 3, group.as_str()));
    assert_eq!(h.error, "store down");

    let m = running.shutdown().await;
    assert_eq!((m.processed, m.failed, m.retried, m.dead_lettered), (10, 1, 1, 0), "{m}");
    assert_eq!(broker.committed(&group, &topic), [10]);
    assert_eq!(broker.committed(&group, &retry_topic), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_never_handled_before_it_is_due() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("due"), broker.unique("g"));
    let calls = Calls::default();
    let listener = recorded_listener("due", &topic, &group, policy(4, 1_500).build().unwrap(), &calls, |r| {
        if r.attempt() < 4 {
            fail("not yet")
        } else {
            Ok(())
        }
    });
    broker.prepare(&listener, 1).await;
    let running = broker.start(listener).await;
    let producer = broker.producer();
    for k in ["a", "b"] {
        broker.produce(&producer, &topic, Some(k), Some(b"{}"), &[]).await;
    }
    eventually(WAIT, "both records reach attempt 4", || calls.has("a", 4) && calls.has("b", 4)).await;
    let m = running.shutdown().await;

    let mut worst_late = 0;
    for c in calls.all().iter().filter(|c| c.attempt > 1) {
        let due = c.due_at_ms.expect("a retry carries its due time");
        assert!(c.at_ms >= due, "{} attempt {} handled {} ms early", c.key, c.attempt, due - c.at_ms);
        worst_late = worst_late.max(c.at_ms - due);
    }
    // Each hop waited the backoff after the previous failure.
    for k in ["a", "b"] {
        let tries = calls.of(k);
        for w in tries.windows(2) {
            assert!(
                w[1].at_ms - w[0].at_ms >= 1_500,
                "{k}: attempts {} and {} only {} ms apart",
                w[0].attempt,
                w[1].attempt,
                w[1].at_ms - w[0].at_ms
            );
        }
    }
    eprintln!("latest handling after the due time: {worst_late} ms");
    assert!(worst_late < 5_000, "handled {worst_late} ms after due");
    assert_eq!((m.processed, m.retried), (2, 6), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_retry_partition_does_not_hold_up_the_source_topic() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("flow"), broker.unique("g"));
    let calls = Calls::default();
    let listener = recorded_listener("flow", &topic, &group, policy(2, 4_000).build().unwrap(), &calls, |r| {
        if r.key_str() == Some("slow") && r.attempt() == 1 {
            fail("later")
        } else {
            Ok(())
        }
    });
    broker.prepare(&listener, 2).await;
    let running = broker.start(listener).await;
    let producer = broker.producer();
    broker.produce(&producer, &topic, Some("slow"), Some(b"{}"), &[]).await;
    eventually(WAIT, "slow republished", || running.metrics().retried == 1).await;
    // The retry record now sits paused on its partition; fresh records keep flowing.
    for i in 0..5 {
        broker.produce(&producer, &topic, Some(&format!("fresh{i}")), Some(b"{}"), &[]).await;
    }
    eventually(WAIT, "fresh records handled", || (0..5).all(|i| calls.has(&format!("fresh{i}"), 1))).await;
    eventually(WAIT, "slow handled after its delay", || calls.has("slow", 2)).await;
    let slow = &calls.of("slow")[1];
    let due = slow.due_at_ms.unwrap();
    for i in 0..5 {
        let fresh = &calls.of(&format!("fresh{i}"))[0];
        assert!(fresh.at_ms < due, "fresh{i} handled at {} but the paused retry was due at {due}", fresh.at_ms);
    }
    assert!(slow.at_ms >= due);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_headers_are_replaced_so_the_record_never_grows() {
    headers_are_replaced(HeaderFormat::Packed, names::RETRY, 2).await;
}

/// For a rolling upgrade from 0.1: format 1, one header per field, still written on
/// request, read, and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_retry_headers_are_written_on_request_and_replaced_too() {
    headers_are_replaced(HeaderFormat::PerField, names::ATTEMPT, 11).await;
}

/// A record failing 101 times in `format`: every retry is the same size, user headers pass
/// through once, `marker` appears once and the framework's headers number `framework`.
async fn headers_are_replaced(format: HeaderFormat, marker: &str, framework: usize) {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("size"), broker.unique("g"));
    let calls = Calls::default();
    let listener = recorded_listener("size", &topic, &group, policy(101, 1).build().unwrap(), &calls, |_| fail("boom"));
    broker.prepare(&listener, 1).await;
    let dlt = listener.topology().sources()[0].dlt.clone().unwrap();
    let running = broker.runtime().header_format(format).listener(listener).started().await;
    let producer = broker.producer();
    let (_, offset) = broker
        .produce(
            &producer,
            &topic,
            Some("k"),
            Some(br#"{"city":"Oslo"}"#),
            &[("trace-id", Some(b"t-1")), ("retry_topic-attempts", Some(&[0, 0, 0, 1])), ("empty", None)],
        )
        .await;
    eventually(Duration::from_secs(120), "record dead-lettered after 101 attempts", || running.metrics().dead_lettered == 1).await;
    let calls = calls.of("k");
    assert_eq!(calls.len(), 101);
    let size_at_2 = calls[1].size;
    for c in &calls[1..] {
        assert_eq!(c.size, size_at_2, "attempt {} is {} bytes, attempt 2 was {size_at_2}", c.attempt, c.size);
    }
    eprintln!("record size: attempt 1 {} bytes, attempts 2..=101 {size_at_2} bytes", calls[0].size);
    let last = &calls[100].record;
    let user: Vec<_> = last.user_headers().map(|(n, v)| (n.to_owned(), v.map(<[u8]>::to_vec))).collect();
    assert_eq!(
        user,
        [
            ("trace-id".to_owned(), Some(b"t-1".to_vec())),
            ("retry_topic-attempts".to_owned(), Some(vec![0, 0, 0, 1])),
            ("empty".to_owned(), None)
        ]
    );
    assert_eq!(last.headers().filter(|(n, _)| *n == marker).count(), 1);
    assert_eq!(last.headers().filter(|(n, _)| headers::is_framework_header(n)).count(), framework);

    let dead = &broker.read(&dlt, 1).await[0];
    let h = dead.retry_headers().unwrap();
    assert_eq!(
        (h.attempt, h.error_kind, h.original_topic.as_str(), h.original_offset),
        (101, FailureKind::Exhausted, topic.as_str(), offset)
    );
    assert_eq!(h.error, "boom");
    assert_eq!(dead.payload(), Some(&br#"{"city":"Oslo"}"#[..]));
    assert_eq!(dead.user_headers().count(), 3);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_and_undeserializable_records_go_straight_to_the_dlt() {
    #[derive(serde::Deserialize)]
    struct Forecast {
        #[allow(dead_code)]
        city: String,
    }
    let broker = Broker::get();
    let (topic, group) = (broker.unique("fatal"), broker.unique("g"));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s2 = Arc::clone(&seen);
    let listener = Listener::builder("fatal")
        .topics([&topic])
        .group(&group)
        .policy(policy(5, 10).build().unwrap())
        .handler(retryable_topic::handler::json(move |f: Forecast| {
            s2.lock().unwrap().push(f.city.clone());
            async move {
                if f.city == "Atlantis" {
                    Err(HandlerError::fatal("no such city"))
                } else {
                    Ok(())
                }
            }
        }))
        .build()
        .unwrap();
    broker.prepare(&listener, 1).await;
    let dlt = listener.topology().sources()[0].dlt.clone().unwrap();
    let running = broker.start(listener).await;
    let producer = broker.producer();
    broker.produce(&producer, &topic, Some("1"), Some(br#"{"city":"Atlantis"}"#), &[]).await;
    broker.produce(&producer, &topic, Some("2"), Some(b"not json"), &[]).await;
    broker.produce(&producer, &topic, Some("3"), Some(br#"{"town":"Oslo"}"#), &[]).await;
    broker.produce(&producer, &topic, Some("4"), None, &[]).await;
    broker.produce(&producer, &topic, Some("5"), Some(br#"{"city":"Oslo"}"#), &[]).await;
    let dead = broker.read(&dlt, 4).await;
    let kinds: Vec<_> = dead.iter().map(|r| (r.key_str().unwrap().to_owned(), r.retry_headers().unwrap().error_kind)).collect();
    assert_eq!(
        kinds,
        [
            ("1".into(), FailureKind::Fatal),
            ("2".into(), FailureKind::Decode),
            ("3".into(), FailureKind::Decode),
            ("4".into(), FailureKind::Decode)
        ]
    );
    assert!(dead[1].retry_headers().unwrap().error.contains("expected"), "{:?}", dead[1].retry_headers());
    assert!(dead[3].retry_headers().unwrap().error.contains("tombstone"));
    eventually(WAIT, "Oslo handled", || running.metrics().processed == 1).await;
    let m = running.shutdown().await;
    assert_eq!((m.retried, m.dead_lettered), (0, 4), "{m}");
    assert_eq!(*seen.lock().unwrap(), ["Atlantis", "Oslo"]);
    assert_eq!(broker.committed(&group, &topic), [5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_dlt_drops_with_a_counter_and_moves_on() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("nodlt"), broker.unique("g"));
    let calls = Calls::default();
    let listener = recorded_listener("nodlt", &topic, &group, policy(2, 10).dlt(DltStrategy::NoDlt).build().unwrap(), &calls, |r| {
        if r.key_str() == Some("bad") {
            fail("never works")
        } else {
            Ok(())
        }
    });
    assert_eq!(listener.topology().sources()[0].dlt, None);
    broker.prepare(&listener, 1).await;
    let running = broker.start(listener).await;
    let producer = broker.producer();
    broker.produce(&producer, &topic, Some("bad"), Some(b"{}"), &[]).await;
    broker.produce(&producer, &topic, Some("good"), Some(b"{}"), &[]).await;
    eventually(WAIT, "bad dropped", || running.metrics().dropped == 1).await;
    eventually(WAIT, "good handled", || calls.has("good", 1)).await;
    let m = running.shutdown().await;
    assert_eq!((m.processed, m.dropped, m.dead_lettered, m.retried), (1, 1, 0, 1), "{m}");
    assert_eq!(calls.count("bad", 1) + calls.count("bad", 2), 2);
    assert_eq!(broker.committed(&group, &topic), [2]);
}

/// Makes `topic` unwritable (embedded: the mock refuses it; real brokers: deleted), or
/// writable again (recreated).
async fn set_writable(broker: &Broker, topic: &str, writable: bool) {
    match broker.embedded() {
        Some(e) => e.fail_topic(topic, !writable).unwrap(),
        None if writable => broker.create_topic(topic, 1).await,
        None => {
            broker.delete_topic(topic).await;
            let b = broker.bootstrap().to_owned();
            let t = topic.to_owned();
            eventually(WAIT, "topic gone", move || common::partitions_of(&b, &t).is_none()).await;
        }
    }
}

/// Starts `listener` with publishes that give up after 2 s (so a refused one comes back
/// soon) and topics never created by publishing.
async fn start_with_quick_publish_timeouts(broker: &Broker, listener: Listener) -> retryable_topic::RunningRuntime {
    broker
        .runtime()
        .producer_set("message.timeout.ms", "2000")
        .producer_set("allow.auto.create.topics", "false")
        .listener(listener)
        .started()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_retry_on_error_keeps_publishing_to_the_dlt_until_it_works() {
    let broker = Broker::get();
    if !broker.require(common::Capability::DeleteTopic, "always_retry_on_error_keeps_publishing_to_the_dlt_until_it_works") {
        return;
    }
    let (topic, group) = (broker.unique("always"), broker.unique("g"));
    let calls = Calls::default();
    let listener =
        recorded_listener("always", &topic, &group, policy(1, 10).dlt(DltStrategy::AlwaysRetryOnError).build().unwrap(), &calls, |_| {
            fail("poison")
        });
    broker.prepare(&listener, 1).await;
    let dlt = listener.topology().sources()[0].dlt.clone().unwrap();
    let running = start_with_quick_publish_timeouts(&broker, listener).await;
    set_writable(&broker, &dlt, false).await;
    let producer = broker.producer();
    broker.produce(&producer, &topic, Some("p"), Some(b"{}"), &[]).await;
    eventually(WAIT, "handler failed", || calls.has("p", 1)).await;
    // Several publish attempts fail meanwhile (each takes up to message.timeout.ms), each
    // counted as it is tried again.
    eventually(WAIT, "the DLT publish tried again twice", || running.metrics().publish_retries >= 2).await;
    assert_eq!(running.metrics().dead_lettered, 0);
    assert_eq!(broker.committed(&group, &topic), [-1001], "offset must not move before the DLT has the record");
    set_writable(&broker, &dlt, true).await;
    eventually(WAIT, "dead-lettered once the DLT works", || running.metrics().dead_lettered == 1).await;
    assert_eq!(running.metrics().publish_failed, 0, "a transient failure is not a refusal for good");
    assert_eq!(broker.read(&dlt, 1).await[0].key_str(), Some("p"));
    running.shutdown().await;
    assert_eq!(broker.committed(&group, &topic), [1]);
    assert_eq!(calls.count("p", 1), 1, "the handler is not called again while the DLT publish is retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_publish_refused_at_delivery_is_published_again_byte_for_byte() {
    // The producer gives a refused message back; the runtime keeps no copy of a record
    // whose publish is under way, so what it publishes again is what was given back.
    let broker = Broker::get();
    if !broker.require(common::Capability::DeleteTopic, "a_retry_publish_refused_at_delivery_is_published_again_byte_for_byte") {
        return;
    }
    let (topic, group) = (broker.unique("refused"), broker.unique("g"));
    let calls = Calls::default();
    let listener = recorded_listener("refused", &topic, &group, policy(2, 10).build().unwrap(), &calls, |r| {
        if r.attempt() == 1 {
            fail("store down")
        } else {
            Ok(())
        }
    });
    broker.prepare(&listener, 1).await;
    let retry = listener.topology().sources()[0].retry[0].clone();
    let running = start_with_quick_publish_timeouts(&broker, listener).await;
    running.wait_for_assignment(WAIT).await;
    set_writable(&broker, &retry, false).await;
    let payload: Vec<u8> = (0..=255).collect();
    let producer = broker.producer();
    broker.produce(&producer, &topic, Some("p"), Some(&payload), &[("trace", Some(b"t-1".as_slice()))]).await;
    eventually(WAIT, "handler failed", || calls.has("p", 1)).await;
    // At least one publish is refused meanwhile (after message.timeout.ms, 2 s) and tried
    // again.
    eventually(WAIT, "the republish tried again", || running.metrics().publish_retries >= 1).await;
    assert!(!calls.has("p", 2), "retried although the retry topic refuses it");
    assert_eq!(broker.committed(&group, &topic), [-1001], "offset must not move before the retry topic has the record");
    set_writable(&broker, &retry, true).await;
    eventually(WAIT, "retried once the retry topic works", || calls.has("p", 2)).await;
    let again = broker.read(&retry, 1).await.remove(0);
    assert_eq!((again.key_str(), again.payload(), again.header("trace")), (Some("p"), Some(payload.as_slice()), Some(b"t-1".as_slice())));
    assert_eq!(again.retry_headers().map(|h| (h.original_topic.as_str(), h.original_offset)), Some((topic.as_str(), 0)));
    running.shutdown().await;
    assert_eq!(broker.committed(&group, &topic), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_on_error_stops_the_partition_when_the_dlt_publish_fails() {
    // The DLT publish fails on every broker alike: the runtime's producer refuses records
    // over 1000 bytes, and the poison record's DLT copy (its payload plus the retry
    // headers) is larger; the source records themselves are produced by the test.
    let broker = Broker::get();
    let (topic, group) = (broker.unique("failon"), broker.unique("g"));
    let calls = Calls::default();
    let make = |calls: &Calls| {
        recorded_listener("failon", &topic, &group, policy(1, 10).dlt(DltStrategy::FailOnError).build().unwrap(), calls, |r| {
            if r.key_str() == Some("poison") {
                Err(HandlerError::fatal("bad record"))
            } else {
                Ok(())
            }
        })
    };
    let listener = make(&calls);
    broker.prepare(&listener, 1).await;
    let dlt = listener.topology().sources()[0].dlt.clone().unwrap();
    let running = broker.runtime().producer_set("message.max.bytes", "1000").listener(listener).started().await;
    let producer = broker.producer();
    let big = vec![b'x'; 900];
    broker.produce(&producer, &topic, Some("before"), Some(b"{}"), &[]).await;
    let (_, poison_offset) = broker.produce(&producer, &topic, Some("poison"), Some(&big), &[]).await;
    broker.produce(&producer, &topic, Some("after"), Some(b"{}"), &[]).await;
    eventually(WAIT, "partition stopped", || running.metrics().stopped_partitions == 1).await;
    let m = running.shutdown().await;
    assert_eq!((m.processed, m.dead_lettered), (1, 0), "{m}");
    assert!(!calls.has("after", 1), "nothing after the poison record is handled while stopped");
    assert_eq!(broker.committed(&group, &topic), [poison_offset], "the poison record stays uncommitted");

    // After a restart whose DLT publish works, the poison record is dead-lettered and the
    // rest flows.
    let calls2 = Calls::default();
    let running = broker.start(make(&calls2)).await;
    eventually(WAIT, "after handled", || calls2.has("after", 1)).await;
    let m = running.shutdown().await;
    assert_eq!((m.processed, m.dead_lettered), (1, 1), "{m}");
    assert_eq!(broker.read(&dlt, 1).await[0].key_str(), Some("poison"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_are_a_clear_startup_error() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("missing"), broker.unique("g"));
    let make =
        || Listener::builder("missing").topics([&topic]).group(&group).handler(recording(&Calls::default(), |_| Ok(()))).build().unwrap();
    match broker.runtime().listener(make()).build().unwrap().start().await {
        Err(Error::UnknownTopic { topic: t, .. }) => assert_eq!(t, topic),
        other => panic!("expected UnknownTopic, got {other:?}"),
    }
    broker.create_topic(&topic, 1).await;
    match broker.runtime().listener(make()).build().unwrap().start().await {
        Err(e @ Error::MissingTopics { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&format!("{topic}-retries-{group}")) && text.contains(&format!("{topic}-dlt-{group}")), "{text}");
            assert!(text.contains("auto_create_topics"), "{text}");
        }
        other => panic!("expected MissingTopics, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_record_in_hand_and_commits_it() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("shutdown"), broker.unique("g"));
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (e2, r2, d2) = (Arc::clone(&entered), Arc::clone(&release), Arc::clone(&done));
    let listener = Listener::builder("shutdown")
        .topics([&topic])
        .group(&group)
        .handler(retryable_topic::handler::record(move |_r| {
            let (e, r, d) = (Arc::clone(&e2), Arc::clone(&r2), Arc::clone(&d2));
            async move {
                e.notify_one();
                r.acquire().await.unwrap().forget();
                d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        }))
        .build()
        .unwrap();
    broker.prepare(&listener, 1).await;
    let running = broker.start(listener).await;
    let producer = broker.producer();
    broker.produce(&producer, &topic, Some("slow"), Some(b"{}"), &[]).await;
    tokio::time::timeout(WAIT, entered.notified()).await.expect("handler entered");
    let stopping = tokio::spawn(running.shutdown());
    release.add_permits(1);
    let m = tokio::time::timeout(WAIT, stopping).await.expect("shutdown ends").unwrap();
    assert_eq!(m.processed, 1);
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(broker.committed(&group, &topic), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_makes_only_missing_retry_topics_and_never_touches_the_source() {
    use rdkafka::admin::{AdminOptions, ResourceSpecifier};
    let broker = Broker::get();
    if !broker.require(common::Capability::Admin, "auto_create_makes_only_missing_retry_topics_and_never_touches_the_source") {
        return;
    }
    let (topic, group) = (broker.unique("autocreate"), broker.unique("g"));
    broker.create_topic_with(&topic, 3, &[("retention.ms", "123456789")]).await;
    let describe = || async {
        let admin = broker.admin();
        let r = admin.describe_configs([&ResourceSpecifier::Topic(&topic)], &AdminOptions::new()).await.unwrap();
        let mut entries: Vec<(String, Option<String>)> =
            r[0].as_ref().unwrap().entries.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
        entries.sort();
        entries
    };
    let before = describe().await;
    assert!(before.iter().any(|(k, v)| k == "retention.ms" && v.as_deref() == Some("123456789")), "{before:?}");
    let calls = Calls::default();
    let listener = recorded_listener(
        "autocreate",
        &topic,
        &group,
        policy(3, 10).auto_create_topics(retryable_topic::TopicSpec::default()).build().unwrap(),
        &calls,
        |r| if r.attempt() == 1 { fail("once") } else { Ok(()) },
    );
    let retry = listener.topology().sources()[0].retry[0].clone();
    let dlt = listener.topology().sources()[0].dlt.clone().unwrap();
    // An existing retry topic with another partition count is left as it is.
    broker.create_topic(&retry, 1).await;
    let running = broker.start(listener).await;
    assert_eq!(common::partitions_of(broker.bootstrap(), &dlt), Some(3), "DLT created like its source");
    assert_eq!(common::partitions_of(broker.bootstrap(), &retry), Some(1), "existing retry topic not altered");
    assert_eq!(common::partitions_of(broker.bootstrap(), &topic), Some(3), "source not altered");
    assert_eq!(describe().await, before, "source configs not altered");
    // And it works end to end.
    broker.produce(&broker.producer(), &topic, Some("x"), Some(b"{}"), &[]).await;
    eventually(WAIT, "retried and handled", || calls.has("x", 2)).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_while_a_retry_is_paused_neither_loses_it_nor_handles_it_early() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("rebalance"), broker.unique("g"));
    let calls = Calls::default();
    let make = |calls: &Calls| {
        recorded_listener("rebalance", &topic, &group, policy(2, 5_000).build().unwrap(), calls, |r| {
            if r.attempt() == 1 && r.key_str().unwrap().starts_with("r") {
                fail("later")
            } else {
                Ok(())
            }
        })
    };
    let first = make(&calls);
    broker.prepare(&first, 2).await;
    let a = broker.start(first).await;
    let producer = broker.producer();
    for p in 0..2 {
        broker.produce_to(&producer, &topic, Some(p), Some(format!("r{p}").as_bytes()), Some(b"{}"), &[]).await;
    }
    eventually(WAIT, "both republished", || a.metrics().retried == 2).await;
    // A second member joins while the retries wait, then leaves again.
    let b = broker.start(make(&calls)).await;
    for p in 0..2 {
        broker.produce_to(&producer, &topic, Some(p), Some(format!("n{p}").as_bytes()), Some(b"{}"), &[]).await;
    }
    eventually(WAIT, "new records handled during the rebalance", || calls.has("n0", 1) && calls.has("n1", 1)).await;
    b.shutdown().await;
    eventually(WAIT, "both retries handled", || calls.has("r0", 2) && calls.has("r1", 2)).await;
    calls.assert_none_early();
    a.shutdown().await;
    let _ = now_ms();
}
