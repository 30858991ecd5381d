//! The delay ladder on a real broker: any delay through a fixed set of tier topics, never
//! early, hops only downwards, each tier topic in due order.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::recorder::{recorded_listener, Calls};
use common::{eventually, Broker};
use retryable_topic::ladder;
use retryable_topic::{Backoff, HandlerError, RetryPolicy, TopicStrategy};

const WAIT: Duration = Duration::from_secs(60);
const RECORDS: usize = 120;

/// The delay record `i` asks for: 0 to 4.9 s, spread over the tiers.
fn delay_of(i: usize) -> Duration {
    Duration::from_millis((i * 37 % 50) as u64 * 100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ladder_delivers_any_delay_never_early_through_few_topics() {
    let broker = Broker::get();
    let (topic, group) = (broker.unique("ladder"), broker.unique("g"));
    let tiers = [Duration::from_millis(250), Duration::from_secs(1), Duration::from_secs(3)];
    let policy = RetryPolicy::builder()
        .attempts(2)
        .backoff(Backoff::fixed(Duration::from_secs(10)))
        .topic_strategy(TopicStrategy::Ladder)
        .ladder_tiers(tiers)
        .build()
        .unwrap();
    let calls = Calls::default();
    let listener = recorded_listener("ladder", &topic, &group, policy, &calls, |r| {
        let i: usize = r.key_str().unwrap().parse().unwrap();
        match r.attempt() {
            1 => Err(HandlerError::retry_after(format!("come back in {:?}", delay_of(i)), delay_of(i))),
            _ => Ok(()),
        }
    });
    let tier_topics = listener.topology().sources()[0].retry.clone();
    assert_eq!(tier_topics.len(), tiers.len(), "one topic per tier, whatever the delays");
    assert!(tier_topics[2].ends_with("-3s"), "{tier_topics:?}");
    broker.prepare(&listener, 2).await;
    let running = broker.start(listener).await;
    let producer = broker.producer();
    for i in 0..RECORDS {
        broker.produce(&producer, &topic, Some(&i.to_string()), Some(b"{}"), &[]).await;
    }
    eventually(WAIT, "every record handled again after its delay", || calls.all().iter().filter(|c| c.attempt == 2).count() >= RECORDS)
        .await;
    let m = running.shutdown().await;

    let mut lateness = Vec::new();
    let mut hops = 0;
    let mut per_tier = vec![0; tiers.len()];
    for c in calls.all().iter().filter(|c| c.attempt == 2) {
        let h = c.record.retry_headers().expect("retry headers");
        assert!(c.at_ms >= h.due_at_ms, "record {} handled {} ms early", c.key, h.due_at_ms - c.at_ms);
        lateness.push(c.at_ms - h.due_at_ms);
        let path = &h.hop.as_ref().expect("a ladder hop").path;
        let delay = delay_of(c.key.parse().unwrap());
        assert_eq!(usize::from(path[0]), ladder::tier_for(&tiers, delay.as_millis() as i64), "record {}: first tier", c.key);
        assert!(path.windows(2).all(|w| w[1] <= w[0]), "record {}: hops only go down: {path:?}", c.key);
        hops += path.len() - 1;
        for &level in path {
            per_tier[usize::from(level)] += 1;
        }
    }
    lateness.sort_unstable();
    let p99 = lateness[lateness.len() * 99 / 100 - 1];
    let line = format!(
        "ladder (tiers 250ms/1s/3s, delays 0-4.9s): {} records, {hops} hops, lateness p50 {} ms, p99 {p99} ms, max {} ms",
        lateness.len(),
        lateness[lateness.len() / 2],
        lateness[lateness.len() - 1]
    );
    common::figure(&broker, &line);
    assert!(lateness[lateness.len() - 1] < 5_000, "late by {lateness:?}");
    assert_eq!((m.processed, m.deferred, m.retried, m.failed), (RECORDS as u64, RECORDS as u64, RECORDS as u64, 0), "{m}");
    assert_eq!(m.hops, hops as u64, "{m}");

    // Each tier topic is FIFO in leave order: a record never waits behind one that leaves
    // later by more than the smallest tier.
    for (level, tier_topic) in tier_topics.iter().enumerate() {
        let expected = per_tier[level];
        let written = broker.read_until(tier_topic, WAIT, &format!("{expected} records"), |out| out.len() >= expected).await;
        let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for r in &written {
            let leave = r.retry_headers().and_then(|h| h.hop.as_ref()).map(|hop| hop.leave_at_ms).expect("hop header");
            by_partition.entry(r.partition()).or_default().push(leave);
        }
        for (p, leaves) in by_partition {
            for w in leaves.windows(2) {
                assert!(
                    w[1] + 250 >= w[0],
                    "tier {level} partition {p}: a record leaving at {} waits behind one leaving at {}",
                    w[1],
                    w[0]
                );
            }
        }
    }
}
