//! The runtime: runs many listeners on one producer, with startup checks and graceful
//! shutdown.
//!
//! | setting | default | builder method |
//! |---|---|---|
//! | bootstrap servers | `$KAFKA_BOOTSTRAP_SERVERS` | [`bootstrap_servers`](RuntimeBuilder::bootstrap_servers) |
//! | client settings, every client | — | [`set`](RuntimeBuilder::set) |
//! | consumer-only / producer-only settings | — | [`consumer_set`](RuntimeBuilder::consumer_set), [`producer_set`](RuntimeBuilder::producer_set) |
//! | startup timeout (metadata, topic creation) | 30 s | [`startup_timeout`](RuntimeBuilder::startup_timeout) |
//! | shutdown grace (records in hand) | 30 s | [`shutdown_grace`](RuntimeBuilder::shutdown_grace) |
//!
//! Consumers run with `enable.auto.offset.store=false` (the framework stores an offset only
//! once its record is handled, retried or dead-lettered), `enable.auto.commit=true` every
//! second, `auto.offset.reset=earliest`; producers with `acks=all`. Your settings override
//! the defaults, except `group.id` (the listener's) and `enable.auto.offset.store`.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::consumer::{self, ListenerConsumer, ListenerContext, Shared, Workers};
use crate::error::{ConfigError, Error, Result};
use crate::listener::Listener;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::publish::Publisher;

/// Turns a client-creation failure into an error naming the offending setting.
pub(crate) fn client_error(what: &str, e: KafkaError) -> Error {
    let (setting, msg) = match &e {
        // Rejected by `rd_kafka_conf_set`: librdkafka names the key.
        KafkaError::ClientConfig(_, desc, key, _value) => (key.clone(), desc.clone()),
        // librdkafka: `No such configuration property: "x"` / `Invalid value "v" for configuration property "x"`.
        KafkaError::ClientCreation(msg) => {
            let setting = msg
                .rsplit_once("property")
                .map(|(_, rest)| rest.trim_start_matches(':').trim().trim_matches('"').to_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| what.to_owned());
            (setting, msg.clone())
        }
        _ => return Error::kafka(format!("creating the {what}"), e),
    };
    // librdkafka may echo the offending value; never show it for a secret.
    let reason = if crate::config::is_secret(&setting) { format!("invalid value for `{setting}` (value redacted)") } else { msg };
    Error::Config(ConfigError::new(setting, reason))
}

/// Builder of [`Runtime`].
#[must_use]
#[derive(Debug, Default)]
pub struct RuntimeBuilder {
    bootstrap: Option<String>,
    common: KafkaConfig,
    consumer: KafkaConfig,
    producer: KafkaConfig,
    listeners: Vec<Listener>,
    errors: Vec<Error>,
    startup_timeout: Option<Duration>,
    shutdown_grace: Option<Duration>,
}

impl RuntimeBuilder {
    /// Where the brokers are.
    pub fn bootstrap_servers(mut self, servers: impl Into<String>) -> Self {
        self.bootstrap = Some(servers.into());
        self
    }
    /// A librdkafka setting for every client.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.common.set(key, value);
        self
    }
    /// A librdkafka setting for consumers only.
    pub fn consumer_set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.consumer.set(key, value);
        self
    }
    /// A librdkafka setting for the producer only.
    pub fn producer_set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.producer.set(key, value);
        self
    }
    /// Adds a listener.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }
    /// Adds a listener still to be built (its error is reported by [`build`](Self::build)).
    pub fn try_listener(mut self, listener: Result<Listener>) -> Self {
        match listener {
            Ok(l) => self.listeners.push(l),
            Err(e) => self.errors.push(e),
        }
        self
    }
    /// Adds every listener registered with `#[retryable_topic]` in the program
    /// (see [`registry`](crate::registry)).
    pub fn registered(self) -> Self {
        self.registered_where(|_| true)
    }
    /// Adds the registered listeners that `keep` selects.
    pub fn registered_where(mut self, keep: impl Fn(&crate::registry::Registration) -> bool) -> Self {
        for r in crate::registry::registered().filter(|r| keep(r)) {
            match (r.build)() {
                Ok(l) => self.listeners.push(l),
                Err(e) => self.errors.push(e),
            }
        }
        self
    }
    /// How long startup may wait for metadata and topic creation.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = Some(timeout);
        self
    }
    /// How long shutdown waits for records in hand.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = Some(grace);
        self
    }

    /// Checks the settings (the first error is returned; every listener error is logged).
    pub fn build(mut self) -> Result<Runtime> {
        if let Some(first) = self.errors.drain(..).next() {
            return Err(first);
        }
        let bootstrap = match self.bootstrap.or_else(|| std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok()) {
            Some(b) if !b.trim().is_empty() => b,
            _ => {
                return Err(
                    ConfigError::new("bootstrap.servers", "not set: call bootstrap_servers(..) or set KAFKA_BOOTSTRAP_SERVERS").into()
                )
            }
        };
        if self.listeners.is_empty() {
            return Err(ConfigError::new("listeners", "no listener to run").into());
        }
        let mut seen = std::collections::HashSet::new();
        for l in &self.listeners {
            if !seen.insert(l.name().to_owned()) {
                return Err(Error::DuplicateListener(l.name().to_owned()));
            }
        }
        let mut pairs = std::collections::HashSet::new();
        for l in &self.listeners {
            for t in l.topology().subscriptions() {
                if !pairs.insert((l.group().to_owned(), t.to_owned())) {
                    return Err(ConfigError::new(
                        "topics",
                        format!("two listeners consume `{t}` in group `{}`; give one of them another group", l.group()),
                    )
                    .into());
                }
            }
        }
        let mut common = KafkaConfig::new();
        common.set("bootstrap.servers", bootstrap);
        let common = common.merged(&self.common);
        let startup_timeout = self.startup_timeout.unwrap_or(Duration::from_secs(30));
        let duration_ms = |setting: &str, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::new(setting, "must be longer than zero"))
            } else {
                Ok(())
            }
        };
        duration_ms("startup_timeout", startup_timeout)?;
        Ok(Runtime {
            common,
            consumer: self.consumer,
            producer: self.producer,
            listeners: self.listeners,
            startup_timeout,
            shutdown_grace: self.shutdown_grace.unwrap_or(Duration::from_secs(30)),
        })
    }
}

/// Listeners ready to run; see [`Runtime::start`].
#[derive(Debug)]
pub struct Runtime {
    common: KafkaConfig,
    consumer: KafkaConfig,
    producer: KafkaConfig,
    listeners: Vec<Listener>,
    startup_timeout: Duration,
    shutdown_grace: Duration,
}

impl Runtime {
    /// A builder.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The configuration every client starts from (secrets redacted when shown).
    pub fn config(&self) -> &KafkaConfig {
        &self.common
    }

    /// Every retry and DLT topic the listeners need.
    pub fn required_topics(&self) -> Vec<String> {
        self.listeners.iter().flat_map(|l| l.topology().derived().into_iter().map(str::to_owned)).collect()
    }

    fn consumer_config(&self, listener: &Listener) -> KafkaConfig {
        let defaults: KafkaConfig = [
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("allow.auto.create.topics", "false"),
        ]
        .into_iter()
        .collect();
        let forced: KafkaConfig = [("group.id", listener.group()), ("enable.auto.offset.store", "false")].into_iter().collect();
        self.common.merged(&defaults).merged(&self.consumer).merged(&forced)
    }

    fn producer_config(&self) -> KafkaConfig {
        let defaults: KafkaConfig = [("acks", "all"), ("message.timeout.ms", "30000"), ("linger.ms", "0")].into_iter().collect();
        self.common.merged(&defaults).merged(&self.producer)
    }

    /// Checks the topics (creating missing retry/DLT topics where a policy allows), then
    /// starts every listener.
    ///
    /// Errors: a missing source topic, missing retry/DLT topics with creation off, an
    /// unreachable broker, or an invalid setting (named).
    pub async fn start(self) -> Result<RunningRuntime> {
        tracing::info!(config = %self.common, listeners = self.listeners.len(), "starting");
        let producer: FutureProducer = self.producer_config().to_client_config().create().map_err(|e| client_error("producer", e))?;
        // Validate every consumer configuration before touching the cluster.
        let mut consumers = Vec::new();
        for l in &self.listeners {
            let workers = Arc::new(Workers::default());
            let assigned = Arc::new(AtomicUsize::new(0));
            let ctx = ListenerContext { workers: Arc::clone(&workers), listener: l.name().to_owned(), assigned: Arc::clone(&assigned) };
            let c: ListenerConsumer =
                self.consumer_config(l).to_client_config().create_with_context(ctx).map_err(|e| client_error("consumer", e))?;
            consumers.push((l.clone(), Arc::new(c), workers, assigned));
        }
        crate::admin::ensure_topics(&self.common, &self.listeners, self.startup_timeout).await?;

        let publisher = Arc::new(Publisher::new(producer));
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut metrics = Vec::new();
        let mut assignments = Vec::new();
        for (listener, consumer, workers, assigned) in consumers {
            assignments.push(assigned);
            let topics = listener.topology().subscriptions();
            consumer
                .subscribe(&topics)
                .map_err(|e| Error::kafka(format!("listener `{}`: subscribing to {topics:?}", listener.name()), e))?;
            tracing::info!(listener = %listener.name(), group = %listener.group(), ?topics, "listening");
            let m = Arc::new(Metrics::default());
            metrics.push((listener.name().to_owned(), Arc::clone(&m)));
            let shared = Arc::new(Shared { listener, publisher: Arc::clone(&publisher), metrics: m, consumer, workers });
            let grace = self.shutdown_grace;
            let token = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                consumer::run(Arc::clone(&shared), token, grace).await;
                // Closing the consumer leaves the group; it blocks, so off the async threads.
                let _ = tokio::task::spawn_blocking(move || drop(shared)).await;
            }));
        }
        Ok(RunningRuntime { shutdown, tasks, metrics, publisher, assignments })
    }

    /// Starts, runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<MetricsSnapshot> {
        let running = self.start().await?;
        signal.await;
        Ok(running.shutdown().await)
    }

    /// Starts and runs until Ctrl-C.
    pub async fn run(self) -> Result<MetricsSnapshot> {
        self.run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    }
}

/// Listeners at work.
pub struct RunningRuntime {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    metrics: Vec<(String, Arc<Metrics>)>,
    publisher: Arc<Publisher>,
    assignments: Vec<Arc<AtomicUsize>>,
}

impl std::fmt::Debug for RunningRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningRuntime").field("metrics", &self.metrics()).finish_non_exhaustive()
    }
}

impl RunningRuntime {
    /// The counters of all listeners added up.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.iter().map(|(_, m)| m.snapshot()).fold(MetricsSnapshot::default(), |a, b| a + b)
    }
    /// The counters of one listener.
    pub fn listener_metrics(&self, name: &str) -> Option<MetricsSnapshot> {
        self.metrics.iter().find(|(n, _)| n == name).map(|(_, m)| m.snapshot())
    }
    /// Waits until every listener has joined its group and holds at least one partition;
    /// `false` if that takes longer than `timeout`. Handy before producing in demos and
    /// tests (records produced earlier are not lost either way).
    pub async fn wait_for_assignment(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.assignments.iter().all(|a| a.load(Ordering::Acquire) > 0) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops: records in hand are finished (within the grace period), offsets committed,
    /// the group left, the producer flushed. Returns the final counters.
    pub async fn shutdown(self) -> MetricsSnapshot {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let publisher = Arc::clone(&self.publisher);
        let _ = tokio::task::spawn_blocking(move || publisher.producer().flush(Duration::from_secs(10))).await;
        self.metrics.iter().map(|(_, m)| m.snapshot()).fold(MetricsSnapshot::default(), |a, b| a + b)
    }
}
