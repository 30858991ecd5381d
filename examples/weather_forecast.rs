//! Weather forecasts with non-blocking retries, dead-letter topics and latest-wins storage.
//!
//! ```text
//! cargo run --example weather_forecast                                         # embedded broker, zero setup
//! KAFKA_BOOTSTRAP_SERVERS=localhost:9092 cargo run --example weather_forecast  # a real Kafka (docker compose up -d)
//! ```
//!
//! A producer sends forecasts for six cities (JSON, keyed by city, with the time they were
//! issued). Two listeners read them, each with its own DLT strategy:
//!
//! * `store_forecast` keeps the newest forecast per city. The forecast store goes down for
//!   1.2 s (an *outage*: every call fails, then it heals by itself). Its circuit breaker
//!   sees most calls failing across many cities, pauses the listener instead of copying
//!   the stream into the retry topic, probes, and resumes in order once the store is back.
//!   A forecast with a missing field is an *outlier* that goes to the DLT at once; one for
//!   "Atlantis" never succeeds and is dead-lettered after its last attempt
//!   (`dlt = always_retry_on_error`) without ever opening the breaker. Because retries
//!   reorder records, the store ignores a forecast older than the one it has (latest wins
//!   by issue time).
//! * `storm_alert` pages someone for storms through a flaky pager, with plain non-blocking
//!   retries (no breaker); an alert that still fails after two attempts is dropped with a
//!   log line (`dlt = no_dlt`).
//!
//! A `#[dlt_handler]` reads the DLT of `store_forecast` and prints each dead record with
//! its reason. The run ends by itself with a summary, in well under a minute.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use retryable_topic::time::{format_ms, now_ms};
use retryable_topic::{dlt_handler, retryable_topic, EmbeddedKafka, HandlerError, Record, Runtime};
use serde::{Deserialize, Serialize};

const TOPIC: &str = "weather-forecast";
const CITIES: [&str; 6] = ["Oslo", "Lima", "Nairobi", "Osaka", "Quito", "Perth"];
const ROUNDS: usize = 8;

/// One forecast, as produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WeatherForecast {
    city: String,
    temperature_c: f64,
    conditions: String,
    /// When the forecast was issued, ms since the epoch: the store keeps the newest.
    issued_at: i64,
}

/// Why the store refused a forecast.
#[derive(Debug, thiserror::Error)]
enum StoreError {
    #[error("forecast store unavailable (connection refused)")]
    Unavailable,
    #[error("no weather station for city {0:?}")]
    UnknownCity(String),
}

/// The newest forecast per city, with an outage window.
struct ForecastStore {
    latest: Mutex<BTreeMap<String, WeatherForecast>>,
    down: Mutex<Option<(Instant, Instant)>>,
    stored: AtomicU64,
    stale: AtomicU64,
    /// Calls refused while the store was down.
    unavailable: AtomicU64,
}

fn store() -> &'static ForecastStore {
    static STORE: OnceLock<ForecastStore> = OnceLock::new();
    STORE.get_or_init(|| ForecastStore {
        latest: Mutex::default(),
        down: Mutex::default(),
        stored: AtomicU64::new(0),
        stale: AtomicU64::new(0),
        unavailable: AtomicU64::new(0),
    })
}

impl ForecastStore {
    fn save(&self, f: WeatherForecast) -> Result<(), StoreError> {
        if let Some((from, to)) = *self.down.lock().unwrap() {
            let now = Instant::now();
            if now >= from && now < to {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Unavailable);
            }
        }
        if !CITIES.contains(&f.city.as_str()) {
            return Err(StoreError::UnknownCity(f.city));
        }
        let mut latest = self.latest.lock().unwrap();
        match latest.get(&f.city) {
            Some(have) if have.issued_at >= f.issued_at => {
                self.stale.fetch_add(1, Ordering::Relaxed);
                println!("  ↺ ignored a stale forecast for {} (issued {} ms before the one stored)", f.city, have.issued_at - f.issued_at);
            }
            _ => {
                self.stored.fetch_add(1, Ordering::Relaxed);
                latest.insert(f.city.clone(), f);
            }
        }
        Ok(())
    }
}

/// Stores each forecast. An outage opens the circuit breaker (most calls failing across at
/// least three cities within 300 ms): the listener pauses and probes instead of
/// republishing. A single failing forecast is retried through the retry topic; one that
/// cannot be read goes to the DLT at once, one that keeps failing after its last attempt.
#[retryable_topic(topics = ["weather-forecast"], group = "my-listener-group",
                  attempts = 4, backoff = "2s", suffix = "-retries",
                  dlt = always_retry_on_error, fixed_delay = single_topic, name = "store-forecast",
                  circuit_breaker(window = "300ms", min_calls = 3, min_keys = 3, probe_delay = "500ms"))]
async fn store_forecast(forecast: WeatherForecast) -> Result<(), StoreError> {
    store().save(forecast)
}

static PAGES: AtomicU64 = AtomicU64::new(0);

/// Pages for storms; the pager fails every other call, and an alert still failing after
/// two attempts is dropped (no DLT).
#[retryable_topic(topics = ["weather-forecast"], group = "severe-weather-alerts",
                  attempts = 2, backoff = "1s", dlt = no_dlt, name = "storm-alert")]
async fn storm_alert(forecast: WeatherForecast) -> Result<(), HandlerError> {
    if forecast.conditions != "storm" {
        return Ok(());
    }
    if PAGES.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
        return Err(HandlerError::retryable("pager gateway timed out"));
    }
    println!("  ⚡ storm alert sent for {} ({} °C)", forecast.city, forecast.temperature_c);
    Ok(())
}

/// Reads the DLT of `store_forecast`.
#[dlt_handler(listener = store_forecast, name = "dead-forecast")]
async fn dead_forecast(record: Record) -> Result<(), HandlerError> {
    let h = record.retry_headers();
    println!(
        "  ☠ dead-lettered {} after {} attempt(s), reason {}: {}",
        record.key_str().unwrap_or("?"),
        h.map_or(0, |h| h.attempt),
        h.map_or("?".into(), |h| h.error_kind.to_string()),
        h.map_or("", |h| &h.error)
    );
    Ok(())
}

/// The stream: eight rounds of six cities, with a storm now and then, two forecasts with
/// a missing field and one for a city that does not exist. Returns how many were sent.
async fn produce(producer: &FutureProducer) -> Result<usize, Box<dyn std::error::Error>> {
    let mut sent = 0;
    for round in 0..ROUNDS {
        for (i, city) in CITIES.iter().enumerate() {
            let f = WeatherForecast {
                city: (*city).into(),
                temperature_c: 10.0 + (round * 3 + i * 5) as f64 % 25.0,
                conditions: if (round + i) % 7 == 3 { "storm" } else { "cloudy" }.into(),
                issued_at: now_ms(),
            };
            send(producer, city, &serde_json::to_string(&f)?).await?;
            sent += 1;
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
        match round {
            2 => send(producer, "Oslo", r#"{"city":"Oslo","conditions":"rain"}"#).await?, // no temperature, no issue time
            4 => {
                send(
                    producer,
                    "Atlantis",
                    &serde_json::to_string(&WeatherForecast {
                        city: "Atlantis".into(),
                        temperature_c: 28.0,
                        conditions: "sunny".into(),
                        issued_at: now_ms(),
                    })?,
                )
                .await?
            }
            6 => send(producer, "Lima", "temperature=19").await?, // not JSON at all
            _ => continue,
        }
        sent += 1;
    }
    Ok(sent)
}

async fn send(producer: &FutureProducer, key: &str, json: &str) -> Result<(), Box<dyn std::error::Error>> {
    producer.send(FutureRecord::to(TOPIC).key(key).payload(json), Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
    Ok(())
}

/// Creates the source topic and the retry/DLT topics the listeners need, where missing.
async fn create_topics(bootstrap: &str, embedded: Option<&EmbeddedKafka>, topics: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(e) = embedded {
        for t in topics {
            e.create_topic(t, 3)?;
        }
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let new: Vec<NewTopic<'_>> = topics.iter().map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1))).collect();
    for r in admin.create_topics(&new, &AdminOptions::new()).await? {
        match r {
            Ok(t) => println!("created topic {t}"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(format!("creating {t}: {e}").into()),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_target(false)
        .compact()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,librdkafka=off,rdkafka=warn".into()),
        )
        .init();

    let embedded = match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(b) if !b.is_empty() => {
            println!("using the broker at {b}");
            None
        }
        _ => {
            let e = EmbeddedKafka::start()?;
            println!("using an embedded broker at {} (set KAFKA_BOOTSTRAP_SERVERS for a real one)", e.bootstrap_servers());
            Some(e)
        }
    };
    let bootstrap =
        embedded.as_ref().map_or_else(|| std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap(), |e| e.bootstrap_servers().to_owned());

    let mut runtime = Runtime::builder().bootstrap_servers(&bootstrap).registered();
    if embedded.is_some() {
        for (k, v) in EmbeddedKafka::client_config() {
            runtime = runtime.consumer_set(k, v);
        }
    }
    let runtime = runtime.build()?;
    let mut topics = vec![TOPIC.to_owned()];
    topics.extend(runtime.required_topics());
    topics.dedup();
    create_topics(&bootstrap, embedded.as_ref(), &topics).await?;

    let running = runtime.start().await?;
    if !running.wait_for_assignment(Duration::from_secs(30)).await {
        return Err("the listeners did not join their groups within 30 s".into());
    }
    let started = Instant::now();
    // The store is down from 1.2 s to 2.4 s into the stream: an outage. Forecasts that fail
    // then are retried 2 s later, after newer ones for the same city were stored.
    *store().down.lock().unwrap() = Some((started + Duration::from_millis(1200), started + Duration::from_millis(2400)));

    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create()?;
    // Produce and watch at once, so the outage shows while it happens.
    let produced = std::sync::atomic::AtomicUsize::new(0);
    let (store_name, alert_name) = ("store-forecast", "storm-alert");
    let producing = async {
        let sent = produce(&producer).await?;
        println!("produced {sent} forecasts");
        produced.store(sent, Ordering::Release);
        Ok::<usize, Box<dyn std::error::Error>>(sent)
    };
    let watching = async {
        let deadline = started + Duration::from_secs(55);
        let (mut tick, mut circuit_was_open) = (0u32, false);
        while Instant::now() < deadline {
            let s = running.listener_metrics(store_name).unwrap_or_default();
            let a = running.listener_metrics(alert_name).unwrap_or_default();
            let circuit_open = s.breaker_open > 0;
            if circuit_open != circuit_was_open {
                circuit_was_open = circuit_open;
                let at = started.elapsed().as_secs_f64();
                if circuit_open {
                    println!("[{at:>5.1}s] ⏸ store: outage suspected, circuit open: listener paused, nothing republished");
                } else {
                    println!("[{at:>5.1}s] ▶ store: probe succeeded, circuit closed: resuming in order");
                }
            }
            if tick.is_multiple_of(10) {
                println!(
                    "[{:>5.1}s] store: handled {} · retried {} · dead-lettered {}   alerts: handled {} · retried {} · dropped {}",
                    started.elapsed().as_secs_f64(),
                    s.processed,
                    s.retried,
                    s.dead_lettered,
                    a.processed,
                    a.retried,
                    a.dropped
                );
            }
            tick += 1;
            let sent = produced.load(Ordering::Acquire);
            let accounted = |m: retryable_topic::MetricsSnapshot| (m.processed + m.dead_lettered + m.dropped) as usize;
            // Done when both listeners accounted for every forecast and the DLT handler
            // read every dead letter.
            let dead_read = running.listener_metrics("dead-forecast").unwrap_or_default().processed >= s.dead_lettered;
            if sent > 0 && accounted(s) >= sent && accounted(a) >= sent && dead_read {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let (sent, done) = tokio::join!(producing, watching);
    let sent = sent?;
    let running_metrics: Vec<(&str, retryable_topic::MetricsSnapshot)> =
        [store_name, alert_name, "dead-forecast"].into_iter().map(|n| (n, running.listener_metrics(n).unwrap_or_default())).collect();
    let totals = running.shutdown().await;

    let s = store();
    println!("\n== summary: {sent} forecasts produced");
    for name in [store_name, alert_name, "dead-forecast"] {
        let m = running_metrics.iter().find(|(n, _)| *n == name).map(|(_, m)| *m).unwrap_or_default();
        println!("{name:<15} handled {} · retried {} · dead-lettered {} · dropped {}", m.processed, m.retried, m.dead_lettered, m.dropped);
    }
    println!("all listeners   {totals}");
    let m = running_metrics.iter().find(|(n, _)| *n == store_name).map(|(_, m)| *m).unwrap_or_default();
    let unavailable = s.unavailable.load(Ordering::Relaxed);
    println!(
        "store outage    {unavailable} calls failed while the store was down: {} republished, {} held in place by the circuit breaker (opened {}×, closed {}×)",
        unavailable.saturating_sub(m.held_by_breaker),
        m.held_by_breaker,
        m.breaker_opened,
        m.breaker_closed
    );
    println!("forecast store  {} stored · {} stale ignored", s.stored.load(Ordering::Relaxed), s.stale.load(Ordering::Relaxed));
    println!("final forecasts:");
    for (city, f) in s.latest.lock().unwrap().iter() {
        println!("  {city:<8} {:>5.1} °C  {:<7} issued {}", f.temperature_c, f.conditions, format_ms(f.issued_at));
    }
    println!("elapsed: {:.1}s", started.elapsed().as_secs_f64());
    if !done {
        return Err("not every forecast was accounted for within 55 s".into());
    }
    Ok(())
}
