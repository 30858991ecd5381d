//! The delay service as its users run it: the `retryable-topic delay-service` binary, fed
//! with header-only requests, stopped with SIGINT and SIGKILL several times while records
//! flow and started again. Every request arrives (at least once, duplicates counted),
//! none before its due time, with payload, key and headers untouched; malformed requests
//! land in the service's dead-letter topic with the reason.
//!
//! `RT_DELAY_RECORDS`, `RT_DELAY_MAX_SECS` and `RT_DELAY_RESTARTS` make it longer
//! (`scripts/delay-soak.sh`); `RT_SERVICE_LOG` sets the service's `RUST_LOG`.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{now_ms, Broker};
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use retryable_topic::delay_request::{self, names};
use retryable_topic::delay_service::DelayService;
use retryable_topic::headers::names as rt;
use retryable_topic::KafkaConfig;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One request as sent: where it must arrive and not before when.
#[derive(Debug, Clone)]
struct Sent {
    topic: String,
    delay: Duration,
    not_before_ms: i64,
    count: u32,
}

/// One running service process (killed if the test fails while it runs).
struct Service {
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Service {
    /// Starts a service and waits until partitions were assigned to it (its log says so).
    async fn ready(broker: &Broker, request: &str, group: &str) -> Service {
        let (service, assigned) = Service::spawn(broker, request, group);
        let waited = tokio::task::spawn_blocking(move || assigned.recv_timeout(Duration::from_secs(60))).await.unwrap();
        assert!(waited.is_ok(), "the delay service got no partitions within 60 s");
        service
    }

    fn start(broker: &Broker, request: &str, group: &str) -> Service {
        Service::spawn(broker, request, group).0
    }

    /// Spawns the binary; its log goes on to stderr, and the receiver hears of its first
    /// partition assignment.
    fn spawn(broker: &Broker, request: &str, group: &str) -> (Service, std::sync::mpsc::Receiver<()>) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_retryable-topic"));
        cmd.args(["delay-service", "--request-topic", request, "--group", group])
            .env("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())
            .env("RUST_LOG", std::env::var("RT_SERVICE_LOG").unwrap_or_else(|_| "warn,retry_core::engine::rebalance=info".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in broker.consumer_settings() {
            cmd.arg("--consumer").arg(format!("{k}={v}"));
        }
        // A member killed with SIGKILL never says goodbye: a short rebalance timeout lets
        // the group go on without it.
        cmd.args(["--consumer", "max.poll.interval.ms=10000"]);
        // noida 0.2.3 never evicts a member that dies without leaving (see the crash soak):
        // there the service runs with static membership, as a StatefulSet would.
        if broker.kind == common::Kind::Noida || std::env::var("RT_DELAY_STATIC").is_ok() {
            cmd.arg("--consumer").arg(format!("group.instance.id={group}-0"));
        }
        let mut child = cmd.spawn().expect("start the delay service");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
                if line.contains("partitions assigned") {
                    let _ = tx.send(());
                }
                eprintln!("[service] {line}");
            }
        });
        (Service { child }, rx)
    }

    /// Ctrl-C: it must stop by itself, cleanly.
    fn interrupt(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the service exited with {status} after SIGINT");
                return;
            }
            assert!(Instant::now() < deadline, "the service did not stop within 60 s of SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no goodbye.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn request_headers(delay: &str, kind: &str, max: u32, to: &str, dlq: &str, count: Option<u32>, n: usize) -> OwnedHeaders {
    let mut h = OwnedHeaders::new()
        .insert(Header { key: "trace", value: Some(format!("t-{n}").as_bytes()) })
        .insert(Header { key: names::RETRY_DELAY, value: Some(delay.as_bytes()) })
        .insert(Header { key: names::RETRY_TYPE, value: Some(kind.as_bytes()) })
        .insert(Header { key: names::RETRY_MAX, value: Some(max.to_string().as_bytes()) })
        .insert(Header { key: names::RETRY_TOPIC, value: Some(to.as_bytes()) })
        .insert(Header { key: names::DLQ_TOPIC, value: Some(dlq.as_bytes()) });
    if let Some(c) = count {
        h = h.insert(Header { key: names::RETRY_COUNT, value: Some(c.to_string().as_bytes()) });
    }
    h
}

fn header<'a>(m: &'a impl Message, name: &str) -> Option<&'a str> {
    let h = m.headers()?;
    h.iter().filter(|x| x.key == name).last().and_then(|x| x.value).and_then(|v| std::str::from_utf8(v).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_records_survive_sigint_and_sigkill_and_are_never_early() {
    let broker = Broker::get();
    let records = env_or("RT_DELAY_RECORDS", 1_000) as usize;
    let max_secs = env_or("RT_DELAY_MAX_SECS", 20);
    let (request, group) = (broker.unique("retry.topic"), broker.unique("delay"));
    let (linear_to, exponential_to, dlq) = (broker.unique("dest-linear"), broker.unique("dest-exp"), broker.unique("dest-dlq"));

    // The service's own topics, named as it names them.
    let mut config = KafkaConfig::new();
    config.set("bootstrap.servers", broker.bootstrap());
    let topology = DelayService::new().request_topic(&request).group(&group).listener(&config).unwrap().topology().clone();
    let service_dlt = topology.sources()[0].dlt.clone().unwrap();
    for t in topology.subscriptions().into_iter().chain([service_dlt.as_str()]) {
        broker.create_topic(t, 3).await;
    }
    for t in [&linear_to, &exponential_to, &dlq] {
        broker.create_topic(t, 3).await;
    }

    // Requests: random delays up to `max_secs`, both types, some already counted, one in
    // ten at its last count (to the DLQ at once).
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut plan = Vec::with_capacity(records);
    for n in 0..records {
        let exponential = n % 2 == 1;
        let count_in: Option<u32> = match n % 10 {
            0 => Some(4),
            1..=3 => Some(rng.gen_range(0..2)),
            _ => None,
        };
        let count = count_in.map_or(0, |c| c + 1);
        let factor = if exponential { 1u64 << count } else { u64::from(count) + 1 };
        let delay_ms = rng.gen_range(0..=max_secs * 1_000) / factor;
        let to = if exponential { &exponential_to } else { &linear_to };
        let exhausted = count >= 5;
        let sent = Sent {
            topic: if exhausted { dlq.clone() } else { to.clone() },
            delay: Duration::from_millis(if exhausted { 0 } else { delay_ms * factor }),
            not_before_ms: 0,
            count,
        };
        let iso = format!("PT{}.{:03}S", delay_ms / 1_000, delay_ms % 1_000);
        plan.push((sent, request_headers(&iso, if exponential { "Exponential" } else { "Linear" }, 5, to, &dlq, count_in, n)));
    }

    let producer: FutureProducer = broker.client_config().set("linger.ms", "5").create().unwrap();
    let mut sent: Vec<Sent> = Vec::with_capacity(records);
    let mut service = Service::ready(&broker, &request, &group).await;
    // Restarts while records flow: after Ctrl-C and SIGKILL in turn (`RT_DELAY_RESTARTS`,
    // default 4; 0 measures lateness without them).
    let restarts = env_or("RT_DELAY_RESTARTS", 4) as usize;
    let stops: Vec<usize> = (1..=restarts).map(|i| i * records / (restarts + 1)).collect();
    let pace = Duration::from_millis(12_000 / records as u64);
    for (n, (mut s, headers)) in plan.into_iter().enumerate() {
        if let Some(i) = stops.iter().position(|&at| at == n) {
            if i % 2 == 0 {
                service.interrupt();
            } else {
                service.kill();
            }
            service = Service::start(&broker, &request, &group);
        }
        let payload = format!("Test Message {n}");
        let key = format!("k{n}");
        s.not_before_ms = now_ms() + i64::try_from(s.delay.as_millis()).unwrap();
        producer
            .send(FutureRecord::to(&request).key(&key).payload(&payload).headers(headers), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("request produced");
        sent.push(s);
        tokio::time::sleep(pace).await;
    }
    // Malformed requests: each lands in the service's dead-letter topic, named.
    let malformed: [(&str, &[(&str, &str)]); 4] = [
        ("no RetryTopic", &[(names::RETRY_DELAY, "PT1S")]),
        ("bad RetryDelay", &[(names::RETRY_DELAY, "soon"), (names::RETRY_TOPIC, "x")]),
        ("bad RetryType", &[(names::RETRY_DELAY, "PT1S"), (names::RETRY_TOPIC, "x"), (names::RETRY_TYPE, "Cubic")]),
        ("loops", &[(names::RETRY_DELAY, "PT1S"), (names::RETRY_TOPIC, request.as_str())]),
    ];
    for (what, headers) in malformed {
        let h = headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(v.as_bytes()) }));
        producer
            .send(FutureRecord::to(&request).key(what).payload(what).headers(h), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    // Read the destinations until every request arrived.
    let reader: StreamConsumer =
        broker.client_config().set("group.id", broker.unique("reader")).set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in [&linear_to, &exponential_to, &dlq, &service_dlt] {
        for p in 0..3 {
            tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
        }
    }
    reader.assign(&tpl).unwrap();
    let mut seen: BTreeMap<usize, Vec<(String, i64, i64, String)>> = BTreeMap::new();
    let mut dead: BTreeMap<String, String> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(max_secs + 150);
    while seen.len() < records || dead.len() < malformed.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, reader.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                eprintln!("reader: {e}");
                continue;
            }
            Err(_) => {
                let missing: Vec<usize> = (0..records).filter(|n| !seen.contains_key(n)).take(20).collect();
                panic!("{} of {records} arrived, {} of 4 dead letters; missing e.g. {missing:?}", seen.len(), dead.len());
            }
        };
        // When the service produced it (its producer's clock); the reader's clock if the
        // broker rewrote the time.
        let received = match m.timestamp() {
            rdkafka::Timestamp::CreateTime(t) => t,
            _ => now_ms(),
        };
        let payload = std::str::from_utf8(m.payload().unwrap_or_default()).unwrap().to_owned();
        if m.topic() == service_dlt {
            dead.insert(payload, header(&m, rt::ERROR).unwrap_or_default().to_owned());
            continue;
        }
        let n: usize = payload.strip_prefix("Test Message ").unwrap().parse().unwrap();
        assert_eq!(m.key(), Some(format!("k{n}").as_bytes()), "key untouched");
        assert_eq!(header(&m, "trace"), Some(format!("t-{n}").as_str()), "the sender's headers untouched");
        assert!(m.headers().unwrap().iter().all(|h| !h.key.starts_with(retryable_topic::headers::PREFIX)), "no framework header delivered");
        assert_eq!(header(&m, names::RETRY_COUNT), Some(sent[n].count.to_string().as_str()));
        let retry_time = delay_request::parse_time(header(&m, names::RETRY_TIME).expect("RetryTime")).unwrap();
        let via = header(&m, names::RETRY_VIA).unwrap_or("-").to_owned();
        seen.entry(n).or_default().push((m.topic().to_owned(), received, retry_time, via));
    }
    let interrupted = Instant::now();
    service.interrupt();
    eprintln!("final SIGINT: stopped in {:?}", interrupted.elapsed());

    let mut lateness = Vec::new();
    let mut duplicates = 0;
    for (n, arrivals) in &seen {
        let s = &sent[*n];
        duplicates += arrivals.len() - 1;
        for (topic, received, retry_time, _) in arrivals {
            assert_eq!(topic, &s.topic, "Test Message {n} went to the wrong topic");
            assert!(*received >= s.not_before_ms, "Test Message {n} arrived {} ms early", s.not_before_ms - received);
            assert!(*retry_time >= s.not_before_ms - 1_000, "Test Message {n}: RetryTime long before it was sent plus its delay");
        }
        lateness.push(arrivals[0].1 - s.not_before_ms);
    }
    lateness.sort_unstable();
    let pct = |p: usize| lateness[(lateness.len() * p / 100).min(lateness.len() - 1)];
    let line = format!(
        "delay service: {} of {records} arrived through {restarts} restarts, {duplicates} duplicates (at least once); lateness ms p50 {} p90 {} p99 {} max {}",
        seen.len(),
        pct(50),
        pct(90),
        pct(99),
        lateness[lateness.len() - 1]
    );
    common::figure(&broker, &line);
    for n in [0, 1, 2, 3, records - 2, records - 1] {
        let (topic, received, _, via) = &seen[&n][0];
        let s = &sent[n];
        eprintln!(
            "Test Message {n} delivered after PT{}.{:03}S, {} ms late, via {via} (to {topic})",
            s.delay.as_secs(),
            s.delay.subsec_millis(),
            received - s.not_before_ms
        );
    }
    for (what, reason) in &dead {
        eprintln!("dead letter `{what}`: {reason}");
    }
    assert!(dead["no RetryTopic"].contains("RetryTopic"), "{dead:?}");
    assert!(dead["bad RetryDelay"].contains("RetryDelay"), "{dead:?}");
    assert!(dead["bad RetryType"].contains("RetryType"), "{dead:?}");
    assert!(dead["loops"].contains("loop"), "{dead:?}");
}
