//! The `retryable-topic` command line, run as a process against the broker of this run:
//! topic plans and creation (the source untouched), a DLT filled by a real listener
//! inspected and replayed (the replayed records handled, a second replay replays nothing),
//! and bad input, each with its message and a non-zero exit code (or, for a foreign
//! record with a header name that is not UTF-8, listed).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use common::recorder::{recorded_listener, Calls};
use common::{eventually, partitions_of, Broker, Capability};
use retryable_topic::headers::names;
use retryable_topic::{DltStrategy, HandlerError, RetryPolicy};

const WAIT: Duration = Duration::from_secs(60);

fn cli(broker: &Broker) -> Command {
    let mut c = Command::cargo_bin("retryable-topic").expect("the binary is built");
    c.env("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap()).args(["--timeout", "15s"]).timeout(Duration::from_secs(120));
    c
}

fn stdout(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn failure(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(!out.status.success(), "{c:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_create_only_the_missing_topics_and_leave_the_source_alone() {
    let broker = Broker::get();
    if !broker.require(Capability::Admin, "plan_and_create_only_the_missing_topics_and_leave_the_source_alone") {
        return;
    }
    let (source, group) = (broker.unique("src"), broker.unique("g"));
    broker.create_topic(&source, 3).await;
    let (retry, dlt) = (format!("{source}-retries-{group}"), format!("{source}-dlt-{group}"));
    let plan = stdout(cli(&broker).args(["topics", "plan", "--topic", &source, "--group", &group]));
    assert!(plan.contains(&retry) && plan.contains(&dlt) && plan.contains("2 of 2 topics missing"), "{plan}");
    let created = stdout(cli(&broker).args(["topics", "create", "--topic", &source, "--group", &group]));
    assert!(created.contains(&format!("created {retry}")) && created.contains("2 created, 0 already there"), "{created}");
    assert_eq!(partitions_of(broker.bootstrap(), &retry), Some(3), "as many partitions as the source");
    assert_eq!(partitions_of(broker.bootstrap(), &source), Some(3), "the source untouched");
    let again = stdout(cli(&broker).args(["topics", "create", "--topic", &source, "--group", &group]));
    assert!(again.contains("0 created, 2 already there"), "{again}");
    let plan = stdout(cli(&broker).args(["topics", "plan", "--topic", &source, "--group", &group]));
    assert!(plan.contains("0 of 2 topics missing"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlt_filled_by_a_listener_is_inspected_and_replayed_once() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("replay"), broker.unique("g"));
    let calls = Calls::default();
    let store_down = Arc::new(AtomicBool::new(true));
    let down = store_down.clone();
    let policy = RetryPolicy::builder().attempts(2).dlt(DltStrategy::AlwaysRetryOnError).build().unwrap();
    let listener = recorded_listener("replay", &topic, &group, policy, &calls, move |r| {
        if r.key_str().is_some_and(|k| k.starts_with("bad")) && down.load(Ordering::SeqCst) {
            Err(HandlerError::fatal("store refused it"))
        } else {
            Ok(())
        }
    });
    broker.prepare(&listener, 1).await;
    let dlt = listener.topology().sources()[0].dlt.clone().unwrap();
    let running = broker.start(listener).await;
    let producer = broker.producer();
    for k in ["good", "bad1", "bad2", "bad3"] {
        broker.produce(&producer, &topic, Some(k), Some(b"{}"), &[("traceparent", Some(b"t-1"))]).await;
    }
    eventually(WAIT, "three dead letters", || running.metrics().dead_lettered == 3).await;

    let json = stdout(cli(&broker).args(["dlt", "inspect", &dlt, "--json"]));
    let lines: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{json}");
    assert!(lines.iter().all(|l| l["error_kind"] == "fatal" && l["original_topic"] == topic.as_str() && l["attempts"] == 1), "{json}");
    let one = stdout(cli(&broker).args(["dlt", "inspect", &dlt, "--key", "bad2"]));
    assert!(one.contains("bad2") && !one.contains("bad1") && one.contains("1 dead letters"), "{one}");
    let none = stdout(cli(&broker).args(["dlt", "inspect", &dlt, "--error-kind", "exhausted"]));
    assert!(none.contains("0 dead letters"), "{none}");

    let dry = stdout(cli(&broker).args(["dlt", "replay", &dlt, "--to", "source", "--dry-run"]));
    assert!(dry.contains("would replay 3"), "{dry}");
    store_down.store(false, Ordering::SeqCst);
    let replay = stdout(cli(&broker).args(["dlt", "replay", &dlt, "--to", "source", "--key", "bad1", "--limit", "5"]));
    assert!(replay.contains("replayed 1 · skipped by filter 2 · failed 0"), "{replay}");
    eventually(WAIT, "the replayed record handled", || calls.count("bad1", 1) == 2).await;
    let replayed = calls.of("bad1").pop().unwrap().record;
    let hs: Vec<(String, Option<Vec<u8>>)> = replayed.headers().map(|(n, v)| (n.to_owned(), v.map(<[u8]>::to_vec))).collect();
    assert_eq!(hs, [("traceparent".to_owned(), Some(b"t-1".to_vec())), ("rt-replayed".to_owned(), Some(b"1".to_vec()))]);
    // The first replay's group committed everything it read: nothing is replayed twice.
    let second = stdout(cli(&broker).args(["dlt", "replay", &dlt, "--to", "source"]));
    assert!(second.contains("replayed 0 · skipped by filter 0 · failed 0 · read 0"), "{second}");
    let other_group = stdout(cli(&broker).args(["dlt", "replay", &dlt, "--to", "source", "--group", "again", "--error-kind", "fatal"]));
    assert!(other_group.contains("replayed 3"), "{other_group}");
    eventually(WAIT, "the others handled", || calls.count("bad2", 1) == 2 && calls.count("bad3", 1) == 2).await;
    // To the listener's retry topic: a retry due now (attempt 2), its origin kept.
    let to_retry = stdout(cli(&broker).args(["dlt", "replay", &dlt, "--to", "retry", "--group", "third", "--key", "bad3"]));
    assert!(to_retry.contains("replayed 1 · skipped by filter 2"), "{to_retry}");
    eventually(WAIT, "the record handled from the retry topic", || calls.count("bad3", 2) == 1).await;
    let h = calls.of("bad3").pop().unwrap().record.retry_headers().cloned().expect("retry headers");
    assert_eq!((h.original_topic.as_str(), h.original_offset), (topic.as_str(), 3));
    let packed = calls.of("bad3").pop().unwrap().record;
    assert!(packed.header(names::RETRY).is_some() && packed.header(names::ATTEMPT).is_none());
    // In format 1 on request, for a group that still has instances of 0.1.
    let args = ["dlt", "replay", &dlt, "--to", "retry", "--group", "fourth", "--key", "bad2", "--header-format", "per_field"];
    let per_field = stdout(cli(&broker).args(args));
    assert!(per_field.contains("replayed 1"), "{per_field}");
    eventually(WAIT, "the format 1 record handled from the retry topic", || calls.count("bad2", 2) == 1).await;
    let r = calls.of("bad2").pop().unwrap().record;
    assert!(r.header(names::ATTEMPT).is_some() && r.header(names::RETRY).is_none());
    assert_eq!(r.retry_headers().map(|h| h.original_topic.as_str()), Some(topic.as_str()));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_message_and_a_non_zero_exit() {
    let broker = Broker::get();
    let missing = broker.unique("missing");
    let e = failure(cli(&broker).args(["dlt", "inspect", &missing]));
    assert!(e.contains(&format!("topic `{missing}` does not exist")), "{e}");
    let e = failure(cli(&broker).args(["topics", "plan", "--topic", &missing, "--group", "g"]));
    assert!(e.contains("source topic") && e.contains("does not exist"), "{e}");
    let e = failure(Command::cargo_bin("retryable-topic").unwrap().args([
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--timeout",
        "2s",
        "dlt",
        "inspect",
        "x",
    ]));
    assert!(e.contains("is the broker reachable?"), "{e}");
    let e = failure(cli(&broker).args(["topics", "plan", "--topic", "a b", "--group", "g"]));
    assert!(e.contains("invalid setting `topics`"), "{e}");
    let e = failure(cli(&broker).args(["dlt", "inspect", "x", "--error-kind", "nonsense"]));
    assert!(e.contains("`nonsense` is not a failure kind"), "{e}");
    let e = failure(cli(&broker).args(["-X", "novalue", "dlt", "inspect", "x"]));
    assert!(e.contains("`novalue` is not key=value"), "{e}");
    // A record in a DLT without retry headers cannot go back to its source: it is named,
    // nothing is committed, and the exit code says so.
    let dlt = broker.unique("plain-dlt");
    broker.create_topic(&dlt, 1).await;
    broker.produce(&broker.producer(), &dlt, Some("orphan"), Some(b"{}"), &[]).await;
    let e = failure(cli(&broker).args(["dlt", "replay", &dlt, "--to", "source"]));
    assert!(e.contains("cannot replay 0@0 (key orphan): no retry headers") && e.contains("progress not committed"), "{e}");
    let inspect = stdout(cli(&broker).args(["dlt", "inspect", &dlt]));
    assert!(inspect.contains("no retry headers") && inspect.contains("1 dead letters"), "{inspect}");
    // A foreign record whose header name is not UTF-8 is listed, not a crash.
    let headers = common::raw_named_headers(&[(b"caf\xe9", b"latin-1")]);
    let record = rdkafka::producer::FutureRecord::<str, [u8]>::to(&dlt).key("foreign").payload(b"{}").headers(headers);
    broker.producer().send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce");
    let inspect = stdout(cli(&broker).args(["dlt", "inspect", &dlt]));
    assert!(inspect.contains("foreign") && inspect.contains("2 dead letters"), "{inspect}");
    // Retry headers that cannot be read are shown as such, with the reason, and such a
    // record is not replayed to a guessed topic.
    broker.produce(&broker.producer(), &dlt, Some("garbled"), Some(b"{}"), &[(names::RETRY, Some(b"garbage".as_slice()))]).await;
    let inspect = stdout(cli(&broker).args(["dlt", "inspect", &dlt, "--json"]));
    assert!(inspect.contains("garbled") && inspect.contains("\"headers_error\":\""), "{inspect}");
    let e = failure(cli(&broker).args(["dlt", "replay", &dlt, "--to", "source"]));
    assert!(e.contains("cannot replay 0@2 (key garbled): unreadable retry headers"), "{e}");
}

/// Without brokers named, `delay-service` runs on an embedded one and stops on Ctrl-C with
/// its summary (broker-independent: run in the embedded pass only).
#[test]
fn the_delay_service_runs_on_an_embedded_broker_and_stops_on_ctrl_c() {
    if std::env::var("KAFKA_BOOTSTRAP_SERVERS").is_ok_and(|b| !b.is_empty()) {
        eprintln!("delay-service on its own embedded broker: run in the embedded pass only");
        return;
    }
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_retryable-topic"))
        .arg("delay-service")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok);
    let started: Vec<String> = lines.by_ref().take_while(|l| !l.contains("Ctrl-C stops it")).collect();
    assert!(started.iter().any(|l| l.contains("embedded broker at")), "{started:?}");
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let rest: Vec<String> = lines.collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}: {rest:?}");
    assert!(rest.iter().any(|l| l.starts_with("delay service stopped: processed=0")), "{rest:?}");
}
