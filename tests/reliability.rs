//! Reliability: crashes, broker restarts, rebalances and bad input lose nothing.
//!
//! The crash soak runs consumers as separate processes (this test binary re-run in worker
//! mode) and kills them with SIGKILL at random moments; every record must end up handled
//! or in the DLT. Figures go to `$RT_FIGURES_LOG` for the table of the test command.
//!
//! Soak knobs: `RT_SOAK_RECORDS` (10,000), `RT_SOAK_KILLS` (10), `RT_SOAK_LOG` (the workers'
//! `RUST_LOG`, `warn`), `RT_SOAK_DEBUG` (librdkafka `debug` contexts, e.g. `cgrp`). A failed
//! soak keeps its ledger and the workers' log in the temp dir it prints.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::recorder::{always_ok, fail_first, recorded_listener, recording, Calls};
use common::{eventually, figure, now_ms, Broker, Captured, Started};
use retryable_topic::headers::{names, FailureKind, HeaderFormat, RetryHeaders};
use retryable_topic::{handler, Backoff, EmbeddedKafka, Error, HandlerError, Listener, Record, RetryPolicy, Runtime};

const WAIT: Duration = Duration::from_secs(60);

/// What a soak record does: about 1 % always fail (poison), about 10 % fail once.
fn class(n: u64) -> &'static str {
    if n % 100 == 7 {
        "poison"
    } else if n % 10 == 3 {
        "transient"
    } else {
        "ok"
    }
}

fn soak_listener(topic: &str, group: &str, ledger: Option<std::path::PathBuf>) -> Listener {
    let file = ledger.map(|p| Arc::new(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(p).expect("ledger"))));
    Listener::builder("soak")
        .topics([topic])
        .group(group)
        .policy(RetryPolicy::builder().attempts(3).backoff(Backoff::fixed(Duration::from_millis(200))).build().unwrap())
        .handler(handler::record(move |r: Record| {
            let file = file.clone();
            async move {
                let n: u64 = r
                    .key_str()
                    .and_then(|k| k.strip_prefix('k'))
                    .and_then(|k| k.parse().ok())
                    .ok_or_else(|| HandlerError::fatal("bad key"))?;
                match class(n) {
                    "poison" => return Err(HandlerError::retryable("poison")),
                    "transient" if r.attempt() == 1 => return Err(HandlerError::retryable("transient")),
                    _ => {}
                }
                if let Some(f) = file {
                    // A store that takes a moment, so kills land in the middle of the work.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    // One small O_APPEND write per record: it survives the process being killed.
                    f.lock().unwrap().write_all(format!("k{n}\n").as_bytes()).expect("ledger write");
                }
                Ok::<(), HandlerError>(())
            }
        }))
        .build()
        .unwrap()
}

/// Worker mode of the crash soak: run only when the soak spawns this binary with
/// `RT_SOAK_WORKER` set; runs a consumer until SIGTERM.
#[test]
#[ignore = "spawned by crash_soak_loses_nothing"]
fn soak_worker() {
    let cfg = std::env::var("RT_SOAK_WORKER").expect("spawned by the soak");
    common::init_tracing();
    let [bootstrap, topic, group, ledger, embedded, ready, instance]: [&str; 7] =
        cfg.split('|').collect::<Vec<_>>().try_into().expect("7 fields");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut b = Runtime::builder().bootstrap_servers(bootstrap).listener(soak_listener(topic, group, Some(ledger.into())));
        let settings: Vec<(&str, &str)> = if embedded == "1" {
            EmbeddedKafka::client_config().to_vec()
        } else {
            vec![("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500")]
        };
        // A member killed in the middle of a group join holds the next join for up to
        // `max.poll.interval.ms` (the rebalance timeout, 5 min by default). The runtime polls
        // all the time, whatever its handlers do, so a short one is safe.
        let settings = settings.into_iter().chain([("max.poll.interval.ms", "10000")]);
        let settings = settings.chain((!instance.is_empty()).then_some(("group.instance.id", instance)));
        let debug = std::env::var("RT_SOAK_DEBUG").ok();
        let settings = settings.chain(debug.as_deref().map(|d| ("debug", d)));
        for (k, v) in settings {
            b = b.consumer_set(k, v);
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        let running = b.started().await;
        if running.wait_for_assignment(Duration::from_secs(120)).await {
            // Tells the soak this worker holds its partitions (one line per worker).
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(ready)
                .and_then(|mut f| f.write_all(b"ready\n"))
                .expect("ready file");
        }
        term.recv().await;
        let m = running.shutdown().await;
        eprintln!("soak worker stopped: {m}");
    });
}

/// A worker process, killed if the soak ends (or fails) with it still running.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a soak worker; its log goes to `log` (kept when the soak fails).
fn spawn_worker(cfg: &str, log: &std::path::Path) -> Worker {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("worker log");
    Command::new(std::env::current_exe().unwrap())
        .args(["soak_worker", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("RT_SOAK_WORKER", cfg)
        .env("RUST_LOG", std::env::var("RT_SOAK_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(log.try_clone().expect("worker log"))
        .stderr(log)
        .spawn()
        .map(Worker)
        .expect("worker starts")
}

fn ledger_keys(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_soak_loses_nothing() {
    let broker = Broker::get();
    let records: u64 = std::env::var("RT_SOAK_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let kills: u32 = std::env::var("RT_SOAK_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let (topic, group) = (broker.unique("soak"), broker.unique("g"));
    let listener = soak_listener(&topic, &group, None);
    broker.prepare(&listener, 4).await;
    let dlt = listener.topology().sources()[0].dlt.clone().unwrap();
    let dir = std::env::temp_dir().join(broker.unique("soak-ledger"));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = dir.join("ledger.txt");
    let worker_log = dir.join("workers.log");
    eprintln!("soak: ledger and worker log in {}", dir.display());
    let embedded = if broker.embedded().is_some() { "1" } else { "0" };
    let ready = dir.join("ready.txt");
    // noida 0.2.3 never evicts a member that dies without leaving: it keeps it, as group
    // leader even, and the group stays in rebalance for good. There the workers use static
    // membership (`group.instance.id`, as a StatefulSet would), so a restarted worker takes
    // the dead one's place.
    let instance = if broker.kind == common::Kind::Noida { broker.unique("soak-worker") } else { String::new() };
    if !instance.is_empty() {
        eprintln!("soak: on noida, workers use static membership (noida never evicts a dead member)");
    }
    let cfg = format!("{}|{topic}|{group}|{}|{embedded}|{}|{instance}", broker.bootstrap(), ledger.display(), ready.display());
    let ready_count = {
        let ready = ready.clone();
        move || std::fs::read_to_string(&ready).unwrap_or_default().lines().count()
    };

    // Each worker's life starts with a fresh batch of records, so kills land mid-stream.
    let producer = broker.producer();
    let produce_batch = |k: u64| {
        let (producer, t) = (producer.clone(), topic.clone());
        async move {
            let sends = (k * records / u64::from(kills)..(k + 1) * records / u64::from(kills)).map(|n| {
                let (producer, t) = (&producer, &t);
                async move {
                    let key = format!("k{n}");
                    producer
                        .send(rdkafka::producer::FutureRecord::to(t).key(&key).payload("{}"), Duration::from_secs(30))
                        .await
                        .map_err(|(e, _)| e)
                        .expect("produce");
                }
            });
            futures::future::join_all(sends).await;
        }
    };

    let started = Instant::now();
    // Even kills land at a random moment after the start (often in the middle of the group
    // join); odd ones at a random moment once the worker holds its partitions and is
    // handling records.
    let (mut kills_holding, mut kills_handling) = (0, 0);
    for k in 0..kills {
        let before = ready_count();
        let handled_before = ledger_keys(&ledger).len();
        let mut worker = spawn_worker(&cfg, &worker_log);
        produce_batch(u64::from(k)).await;
        let uptime = if k % 2 == 0 {
            Duration::from_millis(300 + u64::from(rand::random::<u16>() % 3_000))
        } else {
            let (rc, l) = (ready_count.clone(), ledger.clone());
            let busy = move || rc() > before && ledger_keys(&l).len() > handled_before;
            eventually(Duration::from_secs(120), "the worker holds its partitions and handles records", busy).await;
            Duration::from_millis(u64::from(rand::random::<u16>() % 300))
        };
        tokio::time::sleep(uptime).await; // a random moment to kill it: not an assertion
        worker.0.kill().expect("SIGKILL");
        worker.0.wait().unwrap();
        kills_holding += usize::from(ready_count() > before);
        kills_handling += usize::from(ledger_keys(&ledger).len() > handled_before);
    }

    // A last worker finishes the job; it is stopped cleanly once everything is accounted.
    let mut last = spawn_worker(&cfg, &worker_log);
    let expected_ok: HashSet<String> = (0..records).filter(|n| class(*n) != "poison").map(|n| format!("k{n}")).collect();
    let poison: HashSet<String> = (0..records).filter(|n| class(*n) == "poison").map(|n| format!("k{n}")).collect();
    let l2 = ledger.clone();
    let e2 = expected_ok.clone();
    let mut last_report = Instant::now();
    eventually(Duration::from_secs(300), "every non-poison record handled", move || {
        let seen: HashSet<String> = ledger_keys(&l2).into_iter().collect();
        if last_report.elapsed() > Duration::from_secs(15) {
            last_report = Instant::now();
            eprintln!("soak: {} of {} non-poison records handled", e2.intersection(&seen).count(), e2.len());
        }
        e2.is_subset(&seen)
    })
    .await;
    let p2 = poison.clone();
    let dead = broker
        .read_until(&dlt, Duration::from_secs(120), "every poison record", |out| {
            let keys: HashSet<String> = out.iter().filter_map(|r| r.key_str().map(str::to_owned)).collect();
            p2.is_subset(&keys)
        })
        .await;
    Command::new("kill").args(["-TERM", &last.0.id().to_string()]).status().unwrap();
    let stopped = tokio::task::spawn_blocking(move || last.0.wait()).await.unwrap().unwrap();
    assert!(stopped.success(), "the last worker stops cleanly on SIGTERM: {stopped:?}");

    let handled = ledger_keys(&ledger);
    let handled_set: HashSet<&String> = handled.iter().collect();
    let dead_keys: Vec<String> = dead.iter().map(|r| r.key_str().unwrap().to_owned()).collect();
    let dead_set: HashSet<&String> = dead_keys.iter().collect();
    let lost: Vec<String> = (0..records).map(|n| format!("k{n}")).filter(|k| !handled_set.contains(k) && !dead_set.contains(k)).collect();
    assert!(lost.is_empty(), "lost {} records: {:?}", lost.len(), &lost[..lost.len().min(20)]);
    assert!(dead_set.iter().all(|k| poison.contains(*k)), "only poison records reach the DLT");
    assert!(handled_set.iter().all(|k| expected_ok.contains(*k)), "no poison record is reported handled");
    for r in &dead {
        let h = r.retry_headers().expect("DLT headers");
        assert_eq!((h.error_kind, h.attempt), (FailureKind::Exhausted, 3));
    }
    let duplicates = handled.len() - handled_set.len() + dead_keys.len() - dead_set.len();
    figure(
        &broker,
        &format!(
            "soak records={records} handled={} dead-lettered={} lost=0 duplicates={duplicates} kills={kills} kills-holding-partitions={kills_holding} kills-while-handling={kills_handling} restarts=0 secs={}",
            handled_set.len(),
            dead_set.len(),
            started.elapsed().as_secs()
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_never_strand_a_paused_partition() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("churn"), broker.unique("g"));
    let calls = Calls::default();
    let make = |calls: &Calls| {
        recorded_listener(
            "churn",
            &topic,
            &group,
            RetryPolicy::builder().attempts(2).backoff(Backoff::fixed(Duration::from_secs(4))).build().unwrap(),
            calls,
            |r| if r.attempt() == 1 { Err(HandlerError::retryable("later")) } else { Ok(()) },
        )
    };
    let l = make(&calls);
    broker.prepare(&l, 3).await;
    let a = broker.start(l).await;
    let producer = broker.producer();
    for n in 0..30 {
        broker.produce_to(&producer, &topic, Some(n % 3), Some(format!("r{n}").as_bytes()), Some(b"{}"), &[]).await;
    }
    eventually(WAIT, "all republished", || a.metrics().retried == 30).await;
    for _ in 0..2 {
        let b = broker.start(make(&calls)).await;
        assert!(b.wait_for_assignment(WAIT).await, "the second member got partitions");
        b.shutdown().await;
    }
    eventually(WAIT, "every retry handled", || (0..30).all(|n| calls.has(&format!("r{n}"), 2))).await;
    calls.assert_none_early();
    a.shutdown().await;
    figure(&broker, "case rebalance-churn ok");
}

/// Runs one listener whose handler records calls and fails attempt 1 of every key in
/// `fail_first`, returning the broker, calls, topology and the running runtime.
struct Bench {
    broker: Broker,
    topic: String,
    retry: String,
    dlt: String,
    calls: Calls,
    running: retryable_topic::RunningRuntime,
}

async fn bench(partitions: i32, retry_partitions: i32, backoff_ms: u64, decide: fn(&Record) -> Result<(), HandlerError>) -> Bench {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("bad"), broker.unique("g"));
    let calls = Calls::default();
    let listener = recorded_listener(
        "bad",
        &topic,
        &group,
        RetryPolicy::builder().attempts(3).backoff(Backoff::fixed(Duration::from_millis(backoff_ms))).build().unwrap(),
        &calls,
        decide,
    );
    let s = &listener.topology().sources()[0];
    let (retry, dlt) = (s.retry[0].clone(), s.dlt.clone().unwrap());
    broker.create_topic(&topic, partitions).await;
    broker.create_topic(&retry, retry_partitions).await;
    broker.create_topic(&dlt, partitions).await;
    let running = broker.start(listener).await;
    Bench { broker, topic, retry, dlt, calls, running }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_reach_the_dlt_with_a_clear_reason() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Forecast {
        city: String,
    }
    let broker = Broker::get();
    let (topic, group) = (broker.unique("payloads"), broker.unique("g"));
    let listener = Listener::builder("payloads")
        .topics([&topic])
        .group(&group)
        .handler(handler::json(|_f: Forecast| async { Ok::<(), HandlerError>(()) }))
        .build()
        .unwrap();
    broker.prepare(&listener, 1).await;
    let dlt = listener.topology().sources()[0].dlt.clone().unwrap();
    let running = broker.start(listener).await;
    let producer = broker.producer();
    let cases: [(&str, Option<&[u8]>, &str); 5] = [
        ("non-json", Some(b"<forecast/>"), "expected value"),
        ("wrong-shape", Some(br#"{"town":"Oslo"}"#), "missing field `city`"),
        ("empty", Some(b""), "EOF while parsing"),
        ("tombstone", None, "tombstone"),
        ("array", Some(b"[1,2,3]"), "invalid type"),
    ];
    for (key, payload, _) in cases {
        broker.produce(&producer, &topic, Some(key), payload, &[]).await;
    }
    let dead = broker.read(&dlt, cases.len()).await;
    for ((key, payload, reason), r) in cases.iter().zip(&dead) {
        let h = r.retry_headers().unwrap();
        assert_eq!((r.key_str(), h.error_kind), (Some(*key), FailureKind::Decode));
        assert!(h.error.contains(reason), "{key}: {}", h.error);
        assert_eq!(r.payload(), *payload, "{key}: the payload reaches the DLT unchanged");
        figure(&broker, &format!("case payload-{key} ok"));
    }
    let m = running.shutdown().await;
    assert_eq!((m.dead_lettered, m.retried), (5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_payloads_and_binary_keys_survive_retries_byte_for_byte() {
    let b = bench(1, 1, 100, fail_first).await;
    let producer = b.broker.producer();
    let huge: Vec<u8> = (0..600_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let key: &[u8] = &[0xff, 0xfe, 0x00, 0x80];
    b.broker.produce_to(&producer, &b.topic, None, Some(key), Some(&huge), &[]).await;
    eventually(WAIT, "retried and handled", || b.calls.all().iter().any(|c| c.attempt == 2)).await;
    let calls = b.calls.all();
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(c.record.key(), Some(key), "attempt {}: key bytes kept", c.attempt);
        assert_eq!(c.record.key_str(), None);
        assert_eq!(c.record.payload().map(<[u8]>::len), Some(huge.len()));
        assert!(c.record.payload() == Some(&huge[..]), "attempt {}: payload kept", c.attempt);
    }
    b.running.shutdown().await;
    figure(&b.broker, "case huge-payload ok");
    figure(&b.broker, "case non-utf8-key ok");
}

/// Format 1 retry headers (one per field, so one field at a time can be garbled) with
/// `attempt` and `due` as given.
fn forged(attempt: &[u8], due: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut h = RetryHeaders {
        attempt: 2,
        due_at_ms: 0,
        original_topic: "t".into(),
        original_partition: 0,
        original_offset: 0,
        original_timestamp_ms: None,
        first_failure_ms: now_ms(),
        group: "g".into(),
        error_kind: FailureKind::Retryable,
        error: "forged".into(),
        hop: None,
    }
    .encode_as(HeaderFormat::PerField)
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect::<Vec<_>>();
    for (n, v) in &mut h {
        if n == names::ATTEMPT {
            *v = attempt.to_vec();
        }
        if n == names::DUE_AT {
            *v = due.to_vec();
        }
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_retry_headers_get_a_defined_outcome() {
    let b = bench(1, 1, 1_000, always_ok).await;
    let producer = b.broker.producer();
    let now = now_ms();
    let two = 2u32.to_be_bytes();
    // (key, forged headers)
    type Headers = Vec<(String, Vec<u8>)>;
    let cases: Vec<(&str, Headers)> = vec![
        ("garbage-attempt", forged(b"xyz", &now.to_be_bytes())),
        ("garbage-due", forged(&two, b"soon")),
        ("missing-due", forged(&two, &now.to_be_bytes()).into_iter().filter(|(n, _)| n != names::DUE_AT).collect()),
        ("negative-due", forged(&two, &(-5i64).to_be_bytes())),
        ("overflowing-due", forged(&two, &i64::MAX.to_be_bytes())),
        ("years-away", forged(&two, &(now + 3 * 365 * 24 * 3_600_000).to_be_bytes())),
        ("no-headers", vec![]),
        ("garbled-packed", vec![(names::RETRY.to_owned(), vec![2, 0, 0]), (names::ERROR.to_owned(), b"forged".to_vec())]),
        ("duplicated-attempt", {
            let mut h = forged(&two, &now.to_be_bytes());
            h.insert(0, (names::ATTEMPT.to_owned(), 9u32.to_be_bytes().to_vec()));
            h
        }),
    ];
    let sent_at = now_ms();
    for (key, headers) in &cases {
        let hs: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|(n, v)| (n.as_str(), Some(v.as_slice()))).collect();
        b.broker.produce(&producer, &b.retry, Some(key), Some(b"{}"), &hs).await;
    }
    let dead = b.broker.read(&b.dlt, 4).await;
    let mut malformed: Vec<&str> = dead.iter().map(|r| r.key_str().unwrap()).collect();
    malformed.sort();
    assert_eq!(malformed, ["garbage-attempt", "garbage-due", "garbled-packed", "missing-due"], "unreadable headers go to the DLT");
    for r in &dead {
        let h = r.retry_headers().unwrap();
        assert_eq!(h.error_kind, FailureKind::MalformedHeaders);
        assert!(h.error.contains("rt-"), "the DLT record names the header: {}", h.error);
    }
    let handled = ["negative-due", "overflowing-due", "years-away", "no-headers", "duplicated-attempt"];
    eventually(WAIT, "the rest handled", || handled.iter().all(|k| !b.calls.of(k).is_empty())).await;
    for k in ["garbage-attempt", "garbage-due", "garbled-packed", "missing-due"] {
        assert!(b.calls.of(k).is_empty(), "{k}: the handler is not called with untrusted headers");
    }
    // Far-future due times are clamped to the policy's horizon (1 s delay → 2 s).
    for k in ["overflowing-due", "years-away"] {
        let c = &b.calls.of(k)[0];
        assert!(c.at_ms - sent_at < 30_000, "{k} waited {} ms", c.at_ms - sent_at);
    }
    assert_eq!(b.calls.of("duplicated-attempt")[0].attempt, 2, "the last of repeated headers wins");
    assert_eq!(b.calls.of("no-headers")[0].attempt, 2, "a bare record in a retry topic is attempt 2");
    let m = b.running.shutdown().await;
    assert_eq!((m.malformed_headers, m.dead_lettered), (4, 4), "{m}");
    for (k, _) in &cases {
        figure(&b.broker, &format!("case retry-header-{k} ok"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_framework_headers_pass_through_untouched() {
    let b = bench(1, 1, 50, fail_first).await;
    let producer = b.broker.producer();
    let spring: &[(&str, Option<&[u8]>)] = &[
        ("retry_topic-attempts", Some(&[0, 0, 0, 3])),
        ("retry_topic-attempts", Some(&[0, 0, 0, 4])),
        ("kafka_dlt-exception-message", Some(b"boom")),
        ("kafka_dlt-exception-message", Some(b"boom again")),
        ("traceparent", Some(b"00-abc-def-01")),
    ];
    b.broker.produce(&producer, &b.topic, Some("spring"), Some(b"{}"), spring).await;
    eventually(WAIT, "retried once", || b.calls.has("spring", 2)).await;
    let retried = &b.calls.of("spring")[1].record;
    let user: Vec<(&str, Option<&[u8]>)> = retried.user_headers().collect();
    assert_eq!(user, spring, "foreign headers kept as they came, in order, each once");
    assert_eq!(retried.headers().filter(|(n, _)| n.starts_with("rt-")).count(), 2);
    b.running.shutdown().await;
    figure(&b.broker, "case foreign-headers ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_is_read_lossily_and_the_partition_flows_on() {
    let b = bench(1, 1, 50, fail_first).await;
    let producer = b.broker.producer();
    let headers = common::raw_named_headers(&[(b"caf\xe9", b"latin-1"), (b"ok", b"1")]);
    let record = rdkafka::producer::FutureRecord::<str, [u8]>::to(&b.topic).key("bad-name").payload(b"{}").headers(headers);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce");
    for n in 0..3 {
        b.broker.produce(&producer, &b.topic, Some(&format!("after-{n}")), Some(b"{}"), &[]).await;
    }
    eventually(WAIT, "every record retried and handled", || {
        b.calls.has("bad-name", 2) && (0..3).all(|n| b.calls.has(&format!("after-{n}"), 2))
    })
    .await;
    // As Java's consumer reads such a name: the bytes that are not UTF-8 become U+FFFD.
    let lossy: &[(&str, Option<&[u8]>)] = &[("caf\u{FFFD}", Some(b"latin-1")), ("ok", Some(b"1"))];
    for call in b.calls.of("bad-name") {
        let user: Vec<(&str, Option<&[u8]>)> = call.record.user_headers().collect();
        assert_eq!(user, lossy, "attempt {}", call.attempt);
    }
    b.running.shutdown().await;
    figure(&b.broker, "case header-name-not-utf8 ok");
}

#[test]
fn a_detached_message_with_a_header_name_that_is_not_utf8_is_copied_lossily() {
    use rdkafka::message::{Headers, Message, OwnedMessage, Timestamp};
    // `Record::from_message` on rdkafka's own messages reads header names as bytes, as the
    // engine does; it panicked in rdkafka on such a name before.
    let headers = common::raw_named_headers(&[(b"a", b"1"), (b"caf\xe9", b"2")]);
    let m = OwnedMessage::new(Some(b"p".to_vec()), Some(b"k".to_vec()), "t".into(), Timestamp::CreateTime(7), 3, 4, Some(headers));
    let r = Record::from_message(&m);
    let copied: Vec<(&str, Option<&[u8]>)> = r.headers().collect();
    assert_eq!(copied, [("a", Some(&b"1"[..])), ("caf\u{FFFD}", Some(&b"2"[..]))]);
    assert_eq!((r.key(), r.payload(), r.offset()), (Some(&b"k"[..]), Some(&b"p"[..]), 4));
    // The same list read as rdkafka reads it (its first name is UTF-8): the names are read
    // as bytes where rdkafka reads them.
    let theirs = m.headers().expect("headers").get(0);
    assert_eq!(r.headers().next(), Some((theirs.key, theirs.value)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_topic_with_another_partition_count_works() {
    let b = bench(3, 1, 100, fail_first).await;
    let producer = b.broker.producer();
    for n in 0..12 {
        b.broker.produce(&producer, &b.topic, Some(&format!("k{n}")), Some(b"{}"), &[]).await;
    }
    eventually(WAIT, "all retried and handled", || (0..12).all(|n| b.calls.has(&format!("k{n}"), 2))).await;
    assert_eq!(common::partitions_of(b.broker.bootstrap(), &b.retry), Some(1));
    assert_eq!(common::partitions_of(b.broker.bootstrap(), &b.topic), Some(3));
    b.running.shutdown().await;
    figure(&b.broker, "case retry-topic-partition-mismatch ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_clear_startup_error() {
    let broker = Broker::get();
    let listener = Listener::builder("nowhere").topics(["t"]).group("g").handler(recording(&Calls::default(), always_ok)).build().unwrap();
    let started = Instant::now();
    let err = Runtime::builder()
        .bootstrap_servers("127.0.0.1:1")
        .startup_timeout(Duration::from_secs(3))
        .listener(listener)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Kafka { .. }), "{err:?}");
    assert!(text.contains("127.0.0.1:1") && text.contains("reachable"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(30));
    figure(&broker, "case broker-unreachable ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_name_the_setting_and_hide_secrets() {
    let broker = Broker::get();
    let listener = || Listener::builder("cfg").topics(["t"]).group("g").handler(recording(&Calls::default(), always_ok)).build().unwrap();
    let start = |b: retryable_topic::RuntimeBuilder| async move { b.listener(listener()).build()?.start().await };
    let cases: [(&str, &str, &str); 3] = [
        ("session.timeout.ms", "soon", "session.timeout.ms"),
        ("no.such.setting", "1", "no.such.setting"),
        ("security.protocol", "carrier-pigeon", "security.protocol"),
    ];
    for (key, value, named) in cases {
        match start(broker.runtime().consumer_set(key, value)).await {
            Err(Error::Config(c)) => assert_eq!(c.setting, named, "{c}"),
            other => panic!("{key}={value}: expected a config error, got {other:?}"),
        }
    }
    match start(broker.runtime().set("ssl.key.password", "hunter2").set("ssl.key.location", "/nonexistent/key.pem")).await {
        Err(e) => assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}"),
        Ok(r) => {
            r.shutdown().await;
        }
    }
    let err = Runtime::builder().listener(listener()).bootstrap_servers(" ").build().unwrap_err();
    assert!(err.to_string().contains("bootstrap.servers"), "{err}");
    let err = RetryPolicy::builder().attempts(0).build().unwrap_err();
    assert!(err.to_string().contains("`attempts`"), "{err}");
    figure(&broker, "case invalid-config ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_for_every_client_overrides_the_framework_defaults() {
    // `set` (every client) must win over the runtime's consumer defaults, as `consumer_set`
    // does: here `auto.offset.reset=latest` against the default `earliest`.
    let broker = Broker::get();
    let (topic, group) = (broker.unique("latest"), broker.unique("g"));
    let calls = Calls::default();
    let policy = RetryPolicy::builder().attempts(2).backoff(Backoff::fixed(Duration::from_millis(10))).build().unwrap();
    let listener = recorded_listener("latest", &topic, &group, policy, &calls, |_| Ok(()));
    broker.prepare(&listener, 1).await;
    let producer = broker.producer();
    broker.produce(&producer, &topic, Some("before"), Some(b"{}"), &[]).await;
    let running = broker.runtime().set("auto.offset.reset", "latest").listener(listener).started().await;
    // Produced until one is handled: the consumer takes its position at the end of the
    // partition once assigned, so the first few may come too early to be read.
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    while !(0..sent).any(|i| calls.has(&format!("after{i}"), 1)) {
        assert!(Instant::now() < deadline, "no record produced after the start was handled");
        broker.produce(&producer, &topic, Some(&format!("after{sent}")), Some(b"{}"), &[]).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.shutdown().await;
    assert!(!calls.has("before", 1), "read from the earliest offset: the framework's default won over `set`");
}

#[test]
fn secrets_never_reach_the_logs() {
    let captured = Captured::default();
    let broker = tracing::subscriber::with_default(captured.subscriber(), Broker::get);
    tracing::subscriber::with_default(captured.subscriber(), || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let runtime = broker
                .runtime()
                .set("sasl.username", "alice")
                .set("sasl.password", "hunter2")
                .set("sasl.jaas.config", "password=\"hunter2\"")
                .listener(
                    Listener::builder("secret")
                        .topics(["missing-topic-for-secrets"])
                        .group("g")
                        .handler(recording(&Calls::default(), always_ok))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap();
            let shown = format!("{runtime:?} {}", runtime.config());
            assert!(!shown.contains("hunter2") && shown.contains("[redacted]") && shown.contains("alice"), "{shown}");
            let _ = runtime.start().await; // logs its configuration, then fails on the missing topic
        });
    });
    let logs = captured.text();
    assert!(logs.contains("starting") && logs.contains("[redacted]"), "the configuration was logged:\n{logs}");
    assert!(!logs.contains("hunter2"), "a secret reached the logs:\n{logs}");
    figure(&broker, "case secrets-redacted ok");
}

/// A static member fenced by another joining with the same `group.instance.id` gets a
/// fatal error: its consumer can neither read nor commit again. Its listener stops, loudly,
/// instead of reading on as if it still held its partitions, and the member that stays
/// handles the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_static_member_stops_its_listener() {
    let broker = Broker::get();
    if !broker.require(common::Capability::FencesStaticMembers, "a_fenced_static_member_stops_its_listener") {
        return;
    }
    let (topic, group, instance) = (broker.unique("fenced"), broker.unique("g"), broker.unique("instance"));
    let (first_calls, second_calls) = (Calls::default(), Calls::default());
    let first = recorded_listener("first", &topic, &group, RetryPolicy::default(), &first_calls, always_ok);
    let second = recorded_listener("second", &topic, &group, RetryPolicy::default(), &second_calls, always_ok);
    broker.prepare(&first, 1).await;
    let a = broker.runtime().consumer_set("group.instance.id", &instance).listener(first).started().await;
    assert!(a.wait_for_assignment(WAIT).await);
    let b = broker.runtime().consumer_set("group.instance.id", &instance).listener(second).started().await;
    eventually(WAIT, "the fenced member's listener stopped", || a.metrics().stopped_listeners == 1).await;
    let producer = broker.producer();
    for i in 0..20 {
        broker.produce(&producer, &topic, Some(&format!("k{i}")), Some(b"{}"), &[]).await;
    }
    eventually(WAIT, "every record handled by the member that stayed", || (0..20).all(|i| second_calls.has(&format!("k{i}"), 1))).await;
    assert!(first_calls.all().is_empty(), "the fenced member handled records: {:?}", first_calls.all());
    let m = b.shutdown().await;
    assert_eq!(m.stopped_listeners, 0, "{m}");
    a.shutdown().await;
    figure(&broker, "case fenced-static-member ok");
}

/// A listener asking for a group protocol its broker does not serve (KIP-848's, here) never
/// joins: librdkafka retries for good without a word. The listener says so once its
/// startup timeout has passed.
#[test]
fn a_listener_that_cannot_join_its_group_says_so() {
    let broker = Broker::get();
    if !broker.require(common::Capability::WithoutKip848, "a_listener_that_cannot_join_its_group_says_so") {
        return;
    }
    let captured = Captured::default();
    tracing::subscriber::with_default(captured.subscriber(), || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (topic, group) = (broker.unique("no-join"), broker.unique("g"));
            let calls = Calls::default();
            let listener = recorded_listener("no-join", &topic, &group, RetryPolicy::default(), &calls, always_ok);
            broker.prepare(&listener, 1).await;
            // Not the test runtime's settings: KIP-848's protocol refuses session settings.
            let running = Runtime::builder()
                .bootstrap_servers(broker.bootstrap())
                .consumer_set("group.protocol", "consumer")
                .startup_timeout(Duration::from_secs(2))
                .listener(listener)
                .started()
                .await;
            eventually(WAIT, "a warning that the listener has not joined its group", || {
                captured.text().contains("the listener has not joined its consumer group")
            })
            .await;
            let m = running.shutdown().await;
            assert_eq!((m.assigned_partitions, m.processed), (0, 0), "{m}");
        });
    });
    let logs = captured.text();
    let line = logs.lines().find(|l| l.contains("has not joined")).expect("the warning");
    assert!(line.contains("WARN") && line.contains("listener=no-join") && line.contains("group_protocol=consumer"), "{line}");
    figure(&broker, "case join-never-completes ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dlt_topic_is_named_at_startup_before_any_record_is_taken() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("nodlt"), broker.unique("g"));
    let calls = Calls::default();
    let listener = Listener::builder("nodlt").topics([&topic]).group(&group).handler(recording(&calls, always_ok)).build().unwrap();
    let s = &listener.topology().sources()[0];
    let (retry, dlt) = (s.retry[0].clone(), s.dlt.clone().unwrap());
    broker.create_topic(&topic, 1).await;
    broker.create_topic(&retry, 1).await;
    let producer = broker.producer();
    broker.produce(&producer, &topic, Some("waiting"), Some(b"{}"), &[]).await;
    match broker.runtime().listener(listener).build().unwrap().start().await {
        Err(Error::MissingTopics { topics, .. }) => assert_eq!(topics, [dlt], "names only the DLT"),
        other => panic!("expected MissingTopics, got {other:?}"),
    }
    assert!(calls.all().is_empty(), "no record is taken while a topic is missing");
    assert_eq!(broker.committed(&group, &topic), [-1001], "nothing committed: the record waits");
    figure(&broker, "case dlt-topic-missing ok");
}
