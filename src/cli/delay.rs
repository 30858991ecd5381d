//! `retryable-topic delay-service`: the header-driven delay service for any language, run
//! until Ctrl-C or SIGTERM. The service itself is `retry_core::delay_service`.

use std::time::Duration;

use clap::Args;

use retry_core::admin::{self, TopicPlan};
use retry_core::delay_service::{self as service, DelayService};
use retry_core::{EmbeddedKafka, KafkaConfig, Runtime, TopicSpec};

#[derive(Debug, Args)]
pub(super) struct DelayArgs {
    /// The topic requests are read from.
    #[arg(long, default_value = service::DEFAULT_REQUEST_TOPIC)]
    request_topic: String,
    /// The consumer group; tier topics are `<request-topic>-retries-<group>-<tier>`, the
    /// dead-letter topic `<request-topic>-dlt-<group>`.
    #[arg(long, default_value = service::DEFAULT_GROUP)]
    group: String,
    /// The ladder's tiers, shortest first, comma-separated [default: 1s,5s,17s,59s,4m,17m,1h].
    #[arg(long, value_delimiter = ',', value_parser = retry_core::duration::parse_duration)]
    tiers: Vec<Duration>,
    /// The longest delay served (a longer request is delivered after this long) [default: 7 days].
    #[arg(long, value_parser = retry_core::duration::parse_duration)]
    max_delay: Option<Duration>,
    /// Delivery attempts of a due record before it goes to the dead-letter topic.
    #[arg(long, default_value_t = service::DEFAULT_DELIVERY_ATTEMPTS)]
    delivery_attempts: u32,
    /// Records of one partition delivered at once, never two of one key (1: one at a
    /// time, in offset order).
    #[arg(long, default_value_t = service::DEFAULT_KEY_CONCURRENCY)]
    key_concurrency: usize,
    /// Create the request topic and the missing tier and dead-letter topics (never alters
    /// an existing topic). On the embedded broker they are always created.
    #[arg(long)]
    create_topics: bool,
    /// Partitions of created topics.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// A librdkafka setting for the consumer only, `key=value` (repeatable), e.g.
    /// `session.timeout.ms=6000`.
    #[arg(short = 'C', long = "consumer", value_name = "KEY=VALUE")]
    consumer: Vec<String>,
}

pub(super) async fn run(args: &DelayArgs, bootstrap: Option<&str>, config: &KafkaConfig, timeout: Duration) -> retry_core::Result<()> {
    // Listen for Ctrl-C and SIGTERM before anything else, so one arriving during startup
    // stops the service cleanly too.
    let stop = stop_signal()?;
    let mut service = DelayService::new()
        .request_topic(&args.request_topic)
        .group(&args.group)
        .tiers(args.tiers.iter().copied())
        .max_delay(args.max_delay.unwrap_or(service::DEFAULT_MAX_DELAY))
        .delivery_attempts(args.delivery_attempts)
        .key_concurrency(args.key_concurrency);
    let spec = TopicSpec { partitions: Some(args.partitions), replication: None };
    // Without brokers named, the service runs on an in-process one (a demo: it lives as
    // long as the process).
    let embedded = match bootstrap {
        Some(_) => None,
        None => Some(EmbeddedKafka::start()?),
    };
    let mut config = config.clone();
    if let Some(e) = &embedded {
        config.set("bootstrap.servers", e.bootstrap_servers());
        for (k, v) in EmbeddedKafka::client_config() {
            config.set(k, v);
        }
    } else if args.create_topics {
        service = service.create_topics(spec);
    }
    let listener = service.listener(&config)?;
    if let Some(e) = &embedded {
        let topology = listener.topology();
        let dlt = topology.sources().iter().flat_map(|s| s.dlt.as_deref());
        for topic in topology.subscriptions().into_iter().chain(dlt) {
            e.create_topic(topic, args.partitions)?;
        }
        eprintln!("embedded broker at {} (set KAFKA_BOOTSTRAP_SERVERS to use your own)", e.bootstrap_servers());
    } else if args.create_topics {
        let existing = admin::topic_partitions(&config, timeout)?;
        if !existing.contains_key(&args.request_topic) {
            let request = TopicPlan {
                topic: args.request_topic.clone(),
                role: "request".into(),
                source: args.request_topic.clone(),
                partitions: None,
                create: Some((args.partitions, -1)),
            };
            admin::create_missing(&config, &[request], timeout).await?;
        }
    }
    let s = &listener.topology().sources()[0];
    eprintln!(
        "delay service: requests on `{}`, {} tiers ({} … {}), dead letters to `{}`; Ctrl-C stops it",
        args.request_topic,
        s.retry.len(),
        s.retry.first().map_or("", String::as_str),
        s.retry.last().map_or("", String::as_str),
        s.dlt.as_deref().unwrap_or("-"),
    );
    let mut runtime = Runtime::builder();
    for (k, v) in config.iter() {
        runtime = match k {
            "bootstrap.servers" => runtime.bootstrap_servers(v),
            _ => runtime.set(k, v),
        };
    }
    for kv in &args.consumer {
        let (k, v) = super::key_value("--consumer", kv)?;
        runtime = runtime.consumer_set(k, v);
    }
    let metrics = runtime.listener(listener).build()?.run_until(stop).await?;
    eprintln!("delay service stopped: {metrics}");
    Ok(())
}

/// Ctrl-C or SIGTERM, listened for from now on.
#[cfg(unix)]
fn stop_signal() -> retry_core::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind| signal(kind).map_err(|e| retry_core::Error::Config(retry_core::ConfigError::new("signals", e.to_string())));
    let (mut int, mut term) = (listen(SignalKind::interrupt())?, listen(SignalKind::terminate())?);
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// Ctrl-C.
#[cfg(not(unix))]
fn stop_signal() -> retry_core::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
