//! The runtime: runs many listeners on one producer, with startup checks and graceful
//! shutdown.
//!
//! | setting | default | builder method |
//! |---|---|---|
//! | bootstrap servers | `$KAFKA_BOOTSTRAP_SERVERS` | [`bootstrap_servers`](RuntimeBuilder::bootstrap_servers) |
//! | client settings, every client | — | [`set`](RuntimeBuilder::set) |
//! | consumer-only / producer-only settings | — | [`consumer_set`](RuntimeBuilder::consumer_set), [`producer_set`](RuntimeBuilder::producer_set) |
//! | startup timeout (metadata, topic creation; a listener not in its group by then says so) | 30 s | [`startup_timeout`](RuntimeBuilder::startup_timeout) |
//! | shutdown grace (records in hand) | 30 s | [`shutdown_grace`](RuntimeBuilder::shutdown_grace) |
//! | rebalance grace (records in hand of a revoked partition) | 10 s | [`rebalance_grace`](RuntimeBuilder::rebalance_grace) |
//!
//! Consumers run with `enable.auto.offset.store=false` (the framework stores an offset only
//! once its record is handled, retried or dead-lettered), `enable.auto.commit=true` every
//! 200 ms (`auto.commit.interval.ms`: a process killed repeats what it did since its last
//! commit, and with 1 s a member killed in its first second after an assignment had
//! committed nothing at all), `auto.offset.reset=earliest`, `fetch.queue.backoff.ms=10` (librdkafka's 1 s
//! default stalls a partition whenever its prefetch queue is full),
//! `fetch.wait.max.ms=50` (some brokers, tansu and librdkafka's mock among them, answer a
//! waiting fetch only when this wait expires, not when data arrives: with librdkafka's
//! 500 ms, a retry due sooner was handled up to that late; an idle consumer now asks
//! about 20 times a second; [`EmbeddedKafka::client_config`](crate::EmbeddedKafka::client_config)
//! sets 5 ms for the in-process mock) and `queued.max.messages.kbytes=16384` (librdkafka's prefetch,
//! beside the listener's own budget for queued records; per partition, as the runtime
//! splits each partition's queue off); producers with `acks=all` and `linger.ms=5`
//! (republishes are pipelined, nothing waits on one record). Your settings override the defaults,
//! except `group.id` (the listener's) and `enable.auto.offset.store`.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::producer::Producer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::client_error;
use crate::config::KafkaConfig;
use crate::engine::{self, Budget, Circuit, ConsumerErrors, ListenerConsumer, ListenerContext, Partitions, Publisher, RunningListener};
use crate::error::{ConfigError, Error, Result};
use crate::headers::HeaderFormat;
use crate::listener::Listener;
use crate::metrics::{Metrics, MetricsSnapshot};

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
    rebalance_grace: Option<Duration>,
    header_format: HeaderFormat,
    #[cfg(feature = "prometheus")]
    prometheus: Option<String>,
    /// Fault injection: act as if no partition queue could be split off.
    no_partition_queues: bool,
    /// Fault injection: the engine panics on the record of this key.
    #[cfg(feature = "fault-injection")]
    panic_on_key: Option<Vec<u8>>,
}

impl RuntimeBuilder {
    /// Serves every listener's metrics at `http://<address>/metrics` in Prometheus' text
    /// format, from [`start`](Runtime::start) on (feature `prometheus`). Installs the
    /// process-wide `metrics` recorder, so at most one per process; without this, the
    /// metrics go to whatever recorder the program installed itself.
    #[cfg(feature = "prometheus")]
    pub fn prometheus(mut self, address: impl Into<String>) -> Self {
        self.prometheus = Some(address.into());
        self
    }
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
    /// How retry headers are written (both formats are always read). The default,
    /// [`HeaderFormat::Packed`], is not readable by this crate's 0.1: while instances of
    /// 0.1 share a group with this one, write [`HeaderFormat::PerField`].
    pub fn header_format(mut self, format: HeaderFormat) -> Self {
        self.header_format = format;
        self
    }
    /// How long startup may wait for metadata and topic creation; a listener that has not
    /// joined its group this long after it started says so in a warning (and once a minute
    /// while it still waits).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = Some(timeout);
        self
    }
    /// How long shutdown waits for records in hand.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = Some(grace);
        self
    }

    /// How long a revocation waits for the records in hand of the revoked partitions (and
    /// their republishes) before the partitions move on; their offsets are committed
    /// first, so the next owner does not handle them again.
    pub fn rebalance_grace(mut self, grace: Duration) -> Self {
        self.rebalance_grace = Some(grace);
        self
    }

    /// Fault injection, for tests: acts as if the client could split off no partition's
    /// queue, so the dispatcher reads every partition and hands its records to the owners
    /// (the path a partition whose queue cannot be split off takes).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn without_partition_queues(mut self) -> Self {
        self.no_partition_queues = true;
        self
    }

    /// Fault injection, for tests: the engine itself panics (as a bug of its own would)
    /// when it takes in the record of `key`, outside any handler: the partition's owner,
    /// or the dispatcher for a partition it reads (see `without_partition_queues`).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn panic_in_engine_on_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.panic_on_key = Some(key.into());
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
        #[cfg(feature = "prometheus")]
        let prometheus = match self.prometheus {
            Some(a) => Some(
                a.parse::<std::net::SocketAddr>().map_err(|e| ConfigError::new("prometheus", format!("`{a}` is not an address: {e}")))?,
            ),
            None => None,
        };
        Ok(Runtime {
            #[cfg(feature = "prometheus")]
            prometheus,
            common,
            consumer: self.consumer,
            producer: self.producer,
            listeners: self.listeners,
            startup_timeout,
            shutdown_grace: self.shutdown_grace.unwrap_or(Duration::from_secs(30)),
            rebalance_grace: self.rebalance_grace.unwrap_or(Duration::from_secs(10)),
            header_format: self.header_format,
            split_queues: !self.no_partition_queues,
            #[cfg(feature = "fault-injection")]
            panic_on_key: self.panic_on_key,
        })
    }
}

/// Listeners ready to run; see [`Runtime::start`].
#[derive(Debug)]
pub struct Runtime {
    #[cfg(feature = "prometheus")]
    prometheus: Option<std::net::SocketAddr>,
    common: KafkaConfig,
    consumer: KafkaConfig,
    producer: KafkaConfig,
    listeners: Vec<Listener>,
    startup_timeout: Duration,
    shutdown_grace: Duration,
    rebalance_grace: Duration,
    header_format: HeaderFormat,
    split_queues: bool,
    #[cfg(feature = "fault-injection")]
    panic_on_key: Option<Vec<u8>>,
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
            ("auto.commit.interval.ms", "200"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("allow.auto.create.topics", "false"),
            ("fetch.queue.backoff.ms", "10"),
            ("fetch.wait.max.ms", "50"),
            ("queued.max.messages.kbytes", "16384"),
        ]
        .into_iter()
        .collect();
        let forced: KafkaConfig = [("group.id", listener.group()), ("enable.auto.offset.store", "false")].into_iter().collect();
        defaults.merged(&self.common).merged(&self.consumer).merged(&forced)
    }

    fn producer_config(&self) -> KafkaConfig {
        let defaults: KafkaConfig = [("acks", "all"), ("message.timeout.ms", "30000"), ("linger.ms", "5")].into_iter().collect();
        defaults.merged(&self.common).merged(&self.producer)
    }

    /// Checks the topics (creating missing retry/DLT topics where a policy allows), then
    /// starts every listener.
    ///
    /// Errors: a missing source topic, missing retry/DLT topics with creation off, an
    /// unreachable broker, or an invalid setting (named).
    pub async fn start(self) -> Result<RunningRuntime> {
        tracing::info!(config = %self.common, listeners = self.listeners.len(), "starting");
        crate::engine::calibrate_clock();
        let publisher = Arc::new(
            Publisher::new(&self.producer_config().to_client_config(), self.header_format).map_err(|e| client_error("producer", e))?,
        );
        // Validate every consumer configuration before touching the cluster.
        let mut consumers = Vec::new();
        for l in &self.listeners {
            let assigned = Arc::new(AtomicUsize::new(0));
            let partitions = Arc::new(Partitions::new(self.rebalance_grace, Arc::clone(&assigned), self.split_queues));
            let errors = Arc::new(ConsumerErrors::default());
            let ctx = ListenerContext::new(l.name(), Arc::clone(&partitions), Arc::clone(&errors));
            let config = self.consumer_config(l);
            let c: Arc<ListenerConsumer> =
                Arc::new(config.to_client_config().create_with_context(ctx).map_err(|e| client_error("consumer", e))?);
            let _ = c.context().consumer.set(Arc::downgrade(&c));
            let join =
                engine::JoinWatch { within: self.startup_timeout, protocol: config.get("group.protocol").unwrap_or("classic").to_owned() };
            consumers.push((l.clone(), c, partitions, assigned, errors, join));
        }
        crate::admin::ensure_topics(&self.common, &self.listeners, self.startup_timeout).await?;
        #[cfg(feature = "prometheus")]
        if let Some(address) = self.prometheus {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(address)
                .install()
                .map_err(|e| ConfigError::new("prometheus", format!("cannot serve metrics at {address}: {e}")))?;
            tracing::info!(%address, "serving metrics at http://{address}/metrics");
        }

        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut metrics = Vec::new();
        let mut assignments = Vec::new();
        let mut circuits = Vec::new();
        #[cfg(feature = "fault-injection")]
        let mut clients = Vec::new();
        for (listener, consumer, partitions, assigned, errors, join) in consumers {
            assignments.push(assigned);
            #[cfg(feature = "fault-injection")]
            clients.push((listener.name().to_owned(), Arc::downgrade(&consumer)));
            // Made once the Prometheus recorder is installed: the facade's handles are
            // bound to the recorder there is when they are made.
            let m = Arc::new(Metrics::new(listener.name()));
            let _ = consumer.context().metrics.set(Arc::clone(&m));
            let topics = listener.topology().subscriptions();
            consumer
                .subscribe(&topics)
                .map_err(|e| Error::kafka(format!("listener `{}`: subscribing to {topics:?}", listener.name()), e))?;
            tracing::info!(listener = %listener.name(), group = %listener.group(), ?topics, "listening");
            metrics.push((listener.name().to_owned(), Arc::clone(&m)));
            let (requests, requests_rx) = tokio::sync::mpsc::unbounded_channel();
            let budget = Budget::new(listener.max_queued_bytes(), Arc::clone(&m));
            let circuit = Arc::new(Circuit::new(listener.name(), listener.circuit_breaker().copied(), Arc::clone(&m)));
            circuits.push((listener.name().to_owned(), Arc::clone(&circuit)));
            let watch = engine::Watch::of(&listener, Arc::clone(&m));
            let shared = Arc::new(RunningListener {
                listener,
                watch,
                publisher: Arc::clone(&publisher),
                metrics: m,
                consumer,
                budget,
                circuit,
                requests,
                errors,
                #[cfg(feature = "fault-injection")]
                panic_on_key: self.panic_on_key.clone(),
            });
            let grace = self.shutdown_grace;
            let token = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                engine::run(Arc::clone(&shared), partitions, requests_rx, token, grace, join).await;
                // Closing the consumer leaves the group; it blocks, so off the async threads.
                let _ = tokio::task::spawn_blocking(move || drop(shared)).await;
            }));
        }
        Ok(RunningRuntime {
            shutdown,
            tasks,
            metrics,
            publisher,
            assignments,
            circuits,
            #[cfg(feature = "fault-injection")]
            clients,
        })
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
    circuits: Vec<(String, Arc<Circuit>)>,
    /// The listeners' consumers, for fault injection (weak: closing them stays the
    /// listeners' task).
    #[cfg(feature = "fault-injection")]
    clients: Vec<(String, std::sync::Weak<engine::ListenerConsumer>)>,
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
    /// Pauses a listener by hand (say, a dependency is known to be down): nothing more is
    /// handled, every partition of it is paused in place, nothing is republished or
    /// skipped, until [`resume`](Self::resume). Works with or without a circuit breaker.
    /// Errs for an unknown listener name.
    pub fn pause(&self, listener: &str) -> Result<()> {
        self.circuit(listener).map(|c| c.pause())
    }

    /// Ends a pause by hand, and closes the listener's circuit breaker if it was open:
    /// its partitions resume where they stopped, in order.
    pub fn resume(&self, listener: &str) -> Result<()> {
        self.circuit(listener).map(|c| c.resume())
    }

    /// Fault injection, for tests: pauses `partition` of `topic` in the Kafka client of
    /// `listener`, behind the runtime's back, as librdkafka itself leaves a partition when
    /// it loses a resume (confluentinc/librdkafka#5591). The runtime must notice and read
    /// the partition again. Errs for an unknown listener or partition, or a stopped one.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn pause_in_client(&self, listener: &str, topic: &str, partition: i32) -> Result<()> {
        let consumer = self
            .clients
            .iter()
            .find(|(n, _)| n == listener)
            .and_then(|(_, c)| c.upgrade())
            .ok_or_else(|| ConfigError::new("listener", format!("no running listener named `{listener}` in this runtime")))?;
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition(topic, partition);
        let failed = |e| Error::kafka(format!("pausing {topic} [{partition}]"), e);
        consumer.pause(&list).map_err(failed)?;
        // librdkafka answers per partition, in the list.
        list.elements()[0].error().map_err(failed)
    }

    /// Fault injection, for tests: the runtime's producer gets a fatal error, as an
    /// idempotent producer does for a broken sequence (librdkafka's test hook; the producer
    /// must be idempotent: `producer_set("enable.idempotence", "true")`). Nothing can be
    /// published through it again. `false` if librdkafka refused.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn fail_producer_fatally(&self) -> bool {
        engine::raise_fatal_error(self.publisher.producer().client(), "fault injection: a fatal producer error")
    }

    fn circuit(&self, listener: &str) -> Result<&Circuit> {
        self.circuits
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, c)| &**c)
            .ok_or_else(|| ConfigError::new("listener", format!("no listener named `{listener}` in this runtime")).into())
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
