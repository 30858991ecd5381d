//! An annotated handler, end to end on the broker: registered by the macro, picked up by
//! the runtime, retried, dead-lettered, and its DLT read by a `#[dlt_handler]`.

mod common;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{eventually, Broker, Started};
use retryable_topic::headers::FailureKind;
use retryable_topic::{dlt_handler, retryable_topic, HandlerError, Record};

#[derive(Debug, serde::Deserialize)]
struct Forecast {
    city: String,
    run: String,
}

fn calls() -> &'static Mutex<HashMap<String, u32>> {
    static CALLS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    CALLS.get_or_init(Default::default)
}

fn dead() -> &'static Mutex<Vec<Record>> {
    static DEAD: OnceLock<Mutex<Vec<Record>>> = OnceLock::new();
    DEAD.get_or_init(Default::default)
}

fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| format!("{}-{}", std::process::id(), rand::random::<u32>()))
}

#[retryable_topic(topics = ["macro-e2e-forecasts"], group = "macro-e2e", attempts = 3, backoff = "300ms",
                  suffix = "-retries", dlt = always_retry_on_error, fixed_delay = single_topic)]
async fn consume(f: Forecast) -> Result<(), HandlerError> {
    if f.run != run_id() {
        return Ok(()); // a record of an earlier run on a long-lived broker
    }
    let n = {
        let mut c = calls().lock().unwrap();
        let n = c.entry(f.city.clone()).or_default();
        *n += 1;
        *n
    };
    match f.city.as_str() {
        "Flaky" if n == 1 => Err(HandlerError::retryable("forecast store unavailable")),
        "Nowhere" => Err(HandlerError::fatal("unknown city")),
        "Stubborn" => Err(HandlerError::retryable("still down")),
        _ => Ok(()),
    }
}

#[dlt_handler(listener = consume)]
async fn dead_forecasts(record: Record) -> Result<(), HandlerError> {
    if record.payload().is_some_and(|p| String::from_utf8_lossy(p).contains(run_id())) {
        dead().lock().unwrap().push(record);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_handlers_run_end_to_end() {
    let broker = Broker::get();
    broker.prepare(&consume::listener().unwrap(), 1).await;
    let mine = |r: &retryable_topic::registry::Registration| r.name.starts_with(module_path!());
    let running = broker.runtime().registered_where(mine).started().await;
    let producer = broker.producer();
    let run = run_id();
    for city in ["Oslo", "Flaky", "Nowhere", "Stubborn", "Lima"] {
        let json = format!(r#"{{"city":"{city}","run":"{run}"}}"#);
        broker.produce(&producer, "macro-e2e-forecasts", Some(city), Some(json.as_bytes()), &[]).await;
    }
    let garbage = format!("not json {run}");
    broker.produce(&producer, "macro-e2e-forecasts", Some("garbage"), Some(garbage.as_bytes()), &[]).await;

    eventually(Duration::from_secs(60), "three records dead-lettered and read by the DLT handler", || dead().lock().unwrap().len() == 3)
        .await;
    let m = running.shutdown().await;
    let c = calls().lock().unwrap().clone();
    assert_eq!((c["Oslo"], c["Lima"], c["Flaky"], c["Nowhere"], c["Stubborn"]), (1, 1, 2, 1, 3), "{c:?}");
    let mut reasons: Vec<(String, FailureKind, u32)> = dead()
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            let h = r.retry_headers().expect("DLT records carry retry headers");
            (r.key_str().unwrap().to_owned(), h.error_kind, h.attempt)
        })
        .collect();
    reasons.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        reasons,
        [
            ("Nowhere".into(), FailureKind::Fatal, 1),
            ("Stubborn".into(), FailureKind::Exhausted, 3),
            ("garbage".into(), FailureKind::Decode, 1)
        ]
    );
    assert!(m.processed >= 3 + 3, "{m}");
}
