//! A broker restart in the middle of a run loses nothing: the runtime rides it out by
//! itself. Its own test binary, so that no other test shares the broker while it restarts.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::recorder::{recorded_listener, Calls};
use common::{eventually_explained, figure, Broker, Capability};
use retryable_topic::{Backoff, HandlerError, RetryPolicy};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_loses_nothing() {
    let broker = Broker::get();
    if !broker.require(Capability::Restart, "a_broker_restart_mid_run_loses_nothing") {
        return;
    }
    let (topic, group) = (broker.unique("restart"), broker.unique("g"));
    let calls = Calls::default();
    let listener = recorded_listener(
        "restart",
        &topic,
        &group,
        RetryPolicy::builder().attempts(3).backoff(Backoff::fixed(Duration::from_millis(300))).build().unwrap(),
        &calls,
        |r| {
            let n: u64 = r.key_str().unwrap()[1..].parse().unwrap();
            if n % 10 == 3 && r.attempt() == 1 {
                Err(HandlerError::retryable("transient"))
            } else {
                Ok(())
            }
        },
    );
    broker.prepare(&listener, 2).await;
    let running = broker.start(listener).await;
    let producer = broker.producer();
    let total = 1_000u64;
    for n in 0..total / 2 {
        broker.produce(&producer, &topic, Some(&format!("k{n}")), Some(b"{}"), &[]).await;
    }
    eventually_explained(
        WAIT,
        "the first half handled",
        || calls.all().len() >= (total / 2) as usize,
        || format!("{} calls; runtime counted: {:?}", calls.all().len(), running.metrics()),
    )
    .await;
    broker.restart(Duration::from_secs(3)).await;
    let producer = broker.producer();
    for n in total / 2..total {
        broker.produce(&producer, &topic, Some(&format!("k{n}")), Some(b"{}"), &[]).await;
    }
    let done = || -> HashSet<String> {
        calls.all().into_iter().filter(|c| c.key[1..].parse::<u64>().unwrap() % 10 != 3 || c.attempt == 2).map(|c| c.key).collect()
    };
    // Should it time out, which records are missing and what the runtime counted say where
    // they were lost (a main-topic record, or a retry).
    let explain = || {
        let done = done();
        let missing: Vec<String> = (0..total).map(|n| format!("k{n}")).filter(|k| !done.contains(k)).collect();
        let first_tries: HashSet<String> = calls.all().into_iter().filter(|c| c.attempt == 1).map(|c| c.key).collect();
        let never_called: Vec<&String> = missing.iter().filter(|k| !first_tries.contains(*k)).collect();
        format!(
            "{} missing (first 20: {:?}); of them never called at all: {} (first 20: {:?}); runtime counted: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)],
            never_called.len(),
            &never_called[..never_called.len().min(20)],
            running.metrics()
        )
    };
    eventually_explained(Duration::from_secs(120), "every record handled after the restart", || done().len() == total as usize, explain)
        .await;
    let m = running.shutdown().await;
    let ok_calls = m.processed as usize;
    figure(&broker, &format!("restart records={total} lost=0 duplicates={} kills=0 restarts=1", ok_calls - total as usize));
}
