//! Test harness: a real broker for every test.
//!
//! With `KAFKA_BOOTSTRAP_SERVERS` set, tests use that broker (`RT_BROKER` names its kind:
//! `noida`, `tansu`, `kafka`); otherwise each test starts its own embedded MockCluster.
//! Topic and group names are unique per test. Waiting is always for an event with a
//! deadline ([`eventually`]), never a bare sleep.
#![allow(dead_code, missing_docs)]

pub mod recorder;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use retryable_topic::{EmbeddedKafka, Listener, Record, RunningRuntime, RuntimeBuilder};

/// Collects the tracing output written to it (a subscriber's writer), for tests that
/// assert what is logged.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// A subscriber writing everything, at every level, here.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let sink = self.clone();
        tracing_subscriber::fmt().with_writer(move || sink.clone()).with_ansi(false).with_max_level(tracing::Level::TRACE).finish()
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether this run's consumer groups use KIP-848's protocol (`RT_GROUP_PROTOCOL=consumer`)
/// instead of the classic one.
pub fn kip848() -> bool {
    std::env::var("RT_GROUP_PROTOCOL").is_ok_and(|p| p == "consumer")
}

/// Builds and starts a runtime, failing the test with the reason if it cannot.
pub trait Started {
    fn started(self) -> impl std::future::Future<Output = RunningRuntime> + Send;
}

impl Started for RuntimeBuilder {
    async fn started(self) -> RunningRuntime {
        self.build().expect("runtime settings").start().await.expect("runtime started")
    }
}

/// What a broker can do; tests needing more are skipped *by name* on brokers lacking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// CreateTopics/DeleteTopics/DescribeConfigs (the MockCluster has no Admin API).
    Admin,
    /// Making a topic unwritable and writable again: the embedded broker refuses it on
    /// request, noida and Kafka delete and recreate it; tansu recreates a deleted topic on
    /// the next produce, so it cannot.
    DeleteTopic,
    /// Deleting a topic under a consumer, which then reports errors for it (the mock
    /// cluster has no DeleteTopics; on tansu it crashed librdkafka 2.12.1: see `require`).
    DeleteUnderConsumer,
    /// Stopping and restarting the broker process from the test script.
    Restart,
    /// Refusing offset commits on request (the embedded broker's error injection).
    RefuseCommits,
    /// *Not* serving KIP-848's consumer group protocol, so that a member asking for it
    /// never joins (noida and tansu; the MockCluster serves it, and so does Kafka 4).
    WithoutKip848,
    /// Fencing a static member (`group.instance.id`) when another joins with the same id
    /// (noida, Kafka; the MockCluster and tansu let both in).
    FencesStaticMembers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Noida,
    Tansu,
    Kafka,
}

pub struct Broker {
    pub kind: Kind,
    bootstrap: String,
    embedded: Option<EmbeddedKafka>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Logs to the test's captured output (shown only when it fails): warnings, and the
/// runtime's own info lines (assignments, revocations, the breaker's probes), so that a
/// failure says what the partitions and the breaker did.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,retry_core=info".into()))
        .with_test_writer()
        .try_init();
}

impl Broker {
    /// The broker of this run.
    pub fn get() -> Broker {
        init_tracing();
        match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
            Ok(b) if !b.is_empty() => {
                let kind = match std::env::var("RT_BROKER").as_deref() {
                    Ok("noida") => Kind::Noida,
                    Ok("tansu") => Kind::Tansu,
                    _ => Kind::Kafka,
                };
                Broker { kind, bootstrap: b, embedded: None }
            }
            _ => {
                let e = EmbeddedKafka::start().expect("embedded broker");
                Broker { kind: Kind::Embedded, bootstrap: e.bootstrap_servers().to_owned(), embedded: Some(e) }
            }
        }
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn embedded(&self) -> Option<&EmbeddedKafka> {
        self.embedded.as_ref()
    }

    pub fn supports(&self, cap: Capability) -> bool {
        match cap {
            Capability::Admin => self.kind != Kind::Embedded,
            Capability::DeleteTopic => self.kind != Kind::Tansu,
            Capability::DeleteUnderConsumer => matches!(self.kind, Kind::Noida | Kind::Kafka),
            Capability::Restart => self.kind == Kind::Embedded || std::env::var("RT_BROKER_RESTART").is_ok_and(|c| !c.is_empty()),
            Capability::RefuseCommits => self.kind == Kind::Embedded,
            Capability::WithoutKip848 => matches!(self.kind, Kind::Noida | Kind::Tansu),
            Capability::FencesStaticMembers => matches!(self.kind, Kind::Noida | Kind::Kafka),
        }
    }

    /// `false` (and a line naming the test, also appended to `$RT_SKIP_LOG`) when the broker
    /// lacks `cap`: such a test never passes silently.
    pub fn require(&self, cap: Capability, test: &str) -> bool {
        if self.supports(cap) {
            return true;
        }
        let why = match (cap, self.kind) {
            (Capability::Admin, Kind::Embedded) => "the embedded MockCluster has no Admin API",
            (Capability::DeleteTopic, Kind::Tansu) => "tansu recreates a deleted topic on the next produce",
            (Capability::DeleteUnderConsumer, Kind::Embedded) => "the mock cluster cannot delete a topic",
            // Seen in stop 38: the one test that needs it, run on tansu, crashed three runs of
            // three. gdb: a fetch answer of tansu's names a new leader (KIP-951's
            // CurrentLeader tag) for a topic of zero ID; librdkafka's
            // `rd_kafka_handle_Fetch_metadata_update` passes it on without a name and
            // `rd_kafka_metadata_update_op` looks it up by that null name (SIGSEGV in strcmp).
            (Capability::DeleteUnderConsumer, _) => {
                "a topic deleted under a consumer on tansu crashed librdkafka 2.12.1 (SIGSEGV: a fetch answer's leader \
                 update for a topic of zero ID, looked up by a null name)"
            }
            (Capability::Restart, Kind::Tansu) => "tansu keeps data in memory only: a restart loses every topic",
            (Capability::Restart, _) => "the broker is not restartable from this run (RT_BROKER_RESTART unset)",
            (Capability::RefuseCommits, _) => "only the embedded broker refuses requests on request",
            (Capability::WithoutKip848, Kind::Embedded) => "the embedded MockCluster serves KIP-848's protocol: the join completes",
            (Capability::WithoutKip848, _) => "Kafka 4 serves KIP-848's protocol; whether this Kafka does is not known",
            (Capability::FencesStaticMembers, Kind::Embedded) => "the MockCluster does not fence a static member: both join",
            (Capability::FencesStaticMembers, _) => "tansu does not fence a static member: both members were given every partition",
            _ => "the broker lacks it",
        };
        let line = format!("SKIPPED {test} on {:?}: needs {cap:?}; {why}", self.kind);
        eprintln!("{line}");
        if let Ok(path) = std::env::var("RT_SKIP_LOG") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{line}");
            }
        }
        false
    }

    /// Stops the broker and starts it again, keeping its data: the embedded one goes down
    /// for `down_for`; a real one runs `$RT_BROKER_RESTART` (a clean stop and start).
    pub async fn restart(&self, down_for: Duration) {
        match &self.embedded {
            Some(e) => {
                e.set_broker_up(false).unwrap();
                tokio::time::sleep(down_for).await;
                e.set_broker_up(true).unwrap();
            }
            None => {
                let cmd = std::env::var("RT_BROKER_RESTART").expect("RT_BROKER_RESTART");
                let status = tokio::process::Command::new("bash").arg("-c").arg(&cmd).status().await.expect("restart command runs");
                assert!(status.success(), "`{cmd}` failed");
            }
        }
    }

    /// A name unique to this process and test.
    pub fn unique(&self, base: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{base}-{}-{n}-{}", std::process::id(), rand::random::<u32>())
    }

    /// Client settings for fast group membership on this broker.
    pub fn consumer_settings(&self) -> Vec<(&'static str, &'static str)> {
        match self.kind {
            Kind::Embedded => EmbeddedKafka::client_config().to_vec(),
            _ => vec![("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500")],
        }
    }

    /// A runtime builder pointed at this broker, with fast group settings.
    pub fn runtime(&self) -> RuntimeBuilder {
        let mut b = retryable_topic::Runtime::builder()
            .bootstrap_servers(&self.bootstrap)
            .startup_timeout(Duration::from_secs(20))
            .shutdown_grace(Duration::from_secs(10));
        // With KIP-848's protocol the broker keeps the session: the client may not set it.
        for (k, v) in self.consumer_settings() {
            if !(kip848() && (k == "session.timeout.ms" || k == "heartbeat.interval.ms")) {
                b = b.consumer_set(k, v);
            }
        }
        if kip848() {
            b = b.consumer_set("group.protocol", "consumer");
        }
        // The whole suite can run with another assignor (`RT_ASSIGNOR=cooperative-sticky`).
        if let Ok(assignor) = std::env::var("RT_ASSIGNOR") {
            b = b.consumer_set("partition.assignment.strategy", assignor);
        }
        b
    }

    /// A runtime builder whose members rebalance incrementally: the cooperative assignor, or
    /// KIP-848's protocol if the run uses it (always incremental; it takes no assignor).
    pub fn incremental_runtime(&self) -> RuntimeBuilder {
        if kip848() {
            self.runtime()
        } else {
            self.runtime().consumer_set("partition.assignment.strategy", "cooperative-sticky")
        }
    }

    /// A runtime of this broker's settings for `listener`, started.
    pub async fn start(&self, listener: Listener) -> RunningRuntime {
        self.runtime().listener(listener).started().await
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    pub fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.client_config().create().expect("admin client")
    }

    /// Creates a topic (Admin API on real brokers, the mock's own call on the embedded one)
    /// and waits until the metadata lists it.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        self.create_topic_with(name, partitions, &[]).await;
    }

    pub async fn create_topic_with(&self, name: &str, partitions: i32, config: &[(&str, &str)]) {
        match &self.embedded {
            Some(e) => e.create_topic(name, partitions).expect("create topic"),
            None => {
                let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                for (k, v) in config {
                    t = t.set(k, v);
                }
                let r = self.admin().create_topics([&t], &AdminOptions::new()).await.expect("create_topics");
                for x in r {
                    match x {
                        Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err(e) => panic!("create topic {name}: {e:?}"),
                    }
                }
            }
        }
        let bootstrap = self.bootstrap.clone();
        let name = name.to_owned();
        eventually(Duration::from_secs(20), &format!("topic {name} visible"), || {
            partitions_of(&bootstrap, &name) == Some(partitions as usize)
        })
        .await;
    }

    pub async fn delete_topic(&self, name: &str) {
        let r = self.admin().delete_topics(&[name], &AdminOptions::new()).await.expect("delete_topics");
        for x in r {
            x.expect("topic deleted");
        }
    }

    pub fn producer(&self) -> FutureProducer {
        self.client_config().set("linger.ms", "0").create().expect("producer")
    }

    /// Produces one record and waits for the acknowledgement.
    pub async fn produce(
        &self,
        producer: &FutureProducer,
        topic: &str,
        key: Option<&str>,
        payload: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> (i32, i64) {
        self.produce_to(producer, topic, None, key.map(str::as_bytes), payload, headers).await
    }

    pub async fn produce_to(
        &self,
        producer: &FutureProducer,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> (i32, i64) {
        let mut hs = OwnedHeaders::new();
        for (k, v) in headers {
            hs = hs.insert(Header { key: k, value: *v });
        }
        let mut r = FutureRecord::<[u8], [u8]>::to(topic).headers(hs);
        if let Some(p) = partition {
            r = r.partition(p);
        }
        if let Some(k) = key {
            r = r.key(k);
        }
        if let Some(p) = payload {
            r = r.payload(p);
        }
        let d = producer.send(r, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce");
        (d.partition, d.offset)
    }

    /// Reads `topic` from the beginning until `n` records arrived (panics at the deadline,
    /// showing what did arrive).
    pub async fn read(&self, topic: &str, n: usize) -> Vec<Record> {
        self.read_until(topic, Duration::from_secs(60), &format!("{n} records"), |out| out.len() >= n).await
    }

    /// Reads `topic` from the beginning until `done(records so far)` holds (panics at the
    /// deadline, showing what did arrive).
    pub async fn read_until(&self, topic: &str, within: Duration, what: &str, mut done: impl FnMut(&[Record]) -> bool) -> Vec<Record> {
        let consumer: StreamConsumer =
            self.client_config().set("group.id", self.unique("reader")).set("enable.auto.commit", "false").create().expect("reader");
        let count = partitions_of(&self.bootstrap, topic).unwrap_or_else(|| panic!("topic {topic} does not exist"));
        let mut tpl = TopicPartitionList::new();
        for p in 0..count as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + within;
        while !done(&out) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, consumer.recv()).await {
                Ok(Ok(m)) => out.push(Record::from_consumed(&m)),
                Ok(Err(e)) => eprintln!("reader: {e}"),
                Err(_) => panic!("read {what} from {topic} within {within:?}; got {}: {out:#?}", out.len()),
            }
        }
        out
    }

    /// The committed offsets of `group` on `topic`, per partition (-1001 = none).
    pub fn committed(&self, group: &str, topic: &str) -> Vec<i64> {
        committed_at(&self.bootstrap, group, topic)
    }
}

/// The committed offsets of `group` on `topic` at `bootstrap`, per partition (-1001 = none).
pub fn committed_at(bootstrap: &str, group: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().expect("consumer");
    let count = partitions_of(bootstrap, topic).expect("topic exists");
    let mut tpl = TopicPartitionList::new();
    for p in 0..count as i32 {
        tpl.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    let v = got.elements().iter().map(|e| e.offset().to_raw().unwrap_or(-1001)).collect();
    drop(got);
    v
}

/// Partition count of `topic`, if it exists.
pub fn partitions_of(bootstrap: &str, topic: &str) -> Option<usize> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("allow.auto.create.topics", "false").create().ok()?;
    let md = c.fetch_metadata(None, Duration::from_secs(10)).ok()?;
    md.topics().iter().find(|t| t.name() == topic && t.error().is_none()).map(|t| t.partitions().len())
}

/// Waits until `cond` holds, checking every 50 ms; panics with `what` at the deadline.
pub async fn eventually(within: Duration, what: &str, cond: impl FnMut() -> bool) {
    eventually_explained(within, what, cond, String::new).await;
}

/// [`eventually`], with `explain()` (what the test knows at the deadline, if anything)
/// after `what` in the panic.
pub async fn eventually_explained(within: Duration, what: &str, mut cond: impl FnMut() -> bool, explain: impl FnOnce() -> String) {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() > deadline {
            let explained = explain();
            let sep = if explained.is_empty() { "" } else { "\n" };
            panic!("timed out after {within:?} waiting for: {what}{sep}{explained}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Records a figure of the reliability run: printed, and appended to `$RT_FIGURES_LOG`
/// for the table that the test command prints at the end.
pub fn figure(broker: &Broker, line: &str) {
    let line = format!("{:?} {line}", broker.kind).to_lowercase();
    eprintln!("FIGURE {line}");
    if let Ok(path) = std::env::var("RT_FIGURES_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

pub use retryable_topic::time::now_ms;

/// The value of the Prometheus sample `name{labels}` (labels as the exporter writes them), if any.
pub fn sample(body: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// Headers with names as raw bytes. The Kafka protocol says header names are UTF-8 and
/// rdkafka's `Header` takes a `&str`, but librdkafka itself (and so any client on it)
/// writes whatever bytes it is given, and brokers pass them on.
#[allow(unsafe_code, reason = "librdkafka's own header call, to write a name that is not UTF-8")]
pub fn raw_named_headers(headers: &[(&[u8], &[u8])]) -> rdkafka::message::OwnedHeaders {
    let hs = rdkafka::message::OwnedHeaders::new();
    // rdkafka's `BorrowedHeaders` is a stand-in whose address is librdkafka's headers.
    let raw = (hs.as_borrowed() as *const rdkafka::message::BorrowedHeaders).cast_mut().cast::<rdkafka::bindings::rd_kafka_headers_t>();
    for (name, value) in headers {
        // SAFETY: `raw` is the live headers of `hs`; librdkafka copies name and value.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                raw,
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            )
        };
        assert_eq!(err, rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    hs
}

/// Total size of a record as stored: key, payload, header names and values.
pub fn record_size(r: &Record) -> usize {
    r.key().map_or(0, <[u8]>::len)
        + r.payload().map_or(0, <[u8]>::len)
        + r.headers().map(|(n, v)| n.len() + v.map_or(0, <[u8]>::len)).sum::<usize>()
}

impl Broker {
    /// Creates the source topics of `listener` and its retry/DLT topics, all with
    /// `partitions` partitions.
    pub async fn prepare(&self, listener: &retryable_topic::Listener, partitions: i32) {
        for s in listener.topology().sources() {
            self.create_topic(&s.source, partitions).await;
            for t in s.derived() {
                self.create_topic(t, partitions).await;
            }
        }
    }
}
