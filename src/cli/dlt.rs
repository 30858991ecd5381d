//! `retryable-topic dlt inspect|replay`: what is in a dead-letter topic, and sending it
//! back — with the framework's headers reset, its progress committed in a consumer group of
//! its own so that a second run does not replay the same records.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use retry_core::headers::{self, FailureKind, HeaderFormat, RetryHeaders};
use retry_core::time::{format_ms, now_ms};
use retry_core::{ConfigError, Error, KafkaConfig, Record};

use super::Named;

#[derive(Debug, Subcommand)]
pub(super) enum DltCommand {
    /// A table of the dead letters in TOPIC.
    Inspect {
        /// The dead-letter topic.
        topic: String,
        #[command(flatten)]
        filter: Filter,
        /// One JSON object per dead letter instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Republishes dead letters, the framework's headers reset (user headers untouched, an
    /// `rt-replayed` count added), and commits the progress in its own group.
    Replay {
        /// The dead-letter topic.
        topic: String,
        /// `source` (the record's original topic, as a fresh first attempt), `retry` (its
        /// listener's retry topic, as attempt 2 due now) or a topic name.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        filter: Filter,
        /// At most this many records per second.
        #[arg(long)]
        rate: Option<u32>,
        /// Show what would be replayed; publish and commit nothing.
        #[arg(long)]
        dry_run: bool,
        /// The consumer group that remembers what was replayed (default `<topic>-replay`).
        #[arg(long)]
        group: Option<String>,
        /// The listener's retry suffix, for `--to retry`.
        #[arg(long, default_value = "-retries")]
        suffix: String,
        /// Whether the listener's topic names carry its group, for `--to retry`.
        #[arg(long, value_enum, default_value_t = Named::PerGroup)]
        group_naming: Named,
        /// The retry headers' format, for `--to retry`: `per_field` while instances of 0.1
        /// (which read only that) share the listener's group.
        #[arg(long, value_enum, default_value_t = Named::Packed)]
        header_format: Named,
    },
}

/// Which dead letters a command looks at.
#[derive(Debug, Clone, Args)]
pub(super) struct Filter {
    /// Only this failure kind (`exhausted`, `fatal`, `decode`, `timeout`, `malformed-headers`, `publish-failed`).
    #[arg(long)]
    error_kind: Option<String>,
    /// Only those dead-lettered less than this long ago, e.g. `1h`.
    #[arg(long, value_parser = retry_core::duration::parse_duration)]
    since: Option<Duration>,
    /// Only this key.
    #[arg(long)]
    key: Option<String>,
    /// At most this many.
    #[arg(long)]
    limit: Option<usize>,
}

/// Record headers, in order: (name, value).
type HeaderList = Vec<(String, Option<Vec<u8>>)>;

/// One dead letter as read: copied once, by the runtime's reader (header names that are
/// not UTF-8 read lossily), which also decodes its retry headers.
struct DeadLetter {
    record: Record,
    /// Why its retry headers cannot be read, if they cannot.
    unreadable: Option<headers::HeaderError>,
}

impl DeadLetter {
    fn new(record: Record) -> Self {
        // The reader decoded readable retry headers; only a record without them is decoded
        // again, to tell "none" (no error) from "unreadable" (the error, to report).
        let unreadable = match record.retry_headers() {
            Some(_) => None,
            None => RetryHeaders::decode(record.headers()).err(),
        };
        DeadLetter { record, unreadable }
    }

    fn retry(&self) -> Result<Option<&RetryHeaders>, &headers::HeaderError> {
        match &self.unreadable {
            Some(e) => Err(e),
            None => Ok(self.record.retry_headers()),
        }
    }

    fn key_text(&self) -> String {
        self.record.key().map_or_else(|| "-".into(), |k| String::from_utf8_lossy(k).into_owned())
    }

    /// Where it was read: `partition@offset`.
    fn at(&self) -> String {
        format!("{}@{}", self.record.partition(), self.record.offset())
    }
}

impl Filter {
    fn keeps(&self, d: &DeadLetter) -> bool {
        let h = d.retry().ok().flatten();
        self.error_kind.as_deref().is_none_or(|k| h.is_some_and(|h| h.error_kind.as_str() == k))
            && self.key.as_deref().is_none_or(|k| d.record.key() == Some(k.as_bytes()))
            && self
                .since
                .is_none_or(|s| d.record.timestamp_ms().is_some_and(|t| now_ms() - t <= i64::try_from(s.as_millis()).unwrap_or(i64::MAX)))
    }

    fn check(&self) -> retry_core::Result<()> {
        if let Some(k) = &self.error_kind {
            if FailureKind::parse(k).is_none() {
                return Err(ConfigError::new("--error-kind", format!("`{k}` is not a failure kind")).into());
            }
        }
        Ok(())
    }
}

fn kafka(context: &str, e: rdkafka::error::KafkaError) -> Error {
    Error::Config(ConfigError::new(context, e.to_string()))
}

/// A consumer of `topic` in `group`, positioned at the group's committed offsets (the
/// beginning where none), and about how many records each partition has left.
fn open(config: &KafkaConfig, topic: &str, group: &str, timeout: Duration) -> retry_core::Result<(BaseConsumer, HashMap<i32, i64>)> {
    let partitions = retry_core::admin::topic_partitions(config, timeout)?;
    let Some(&count) = partitions.get(topic) else {
        return Err(Error::Config(ConfigError::new("topic", format!("topic `{topic}` does not exist"))));
    };
    let mut c = config.to_client_config();
    // The end of a partition is where the broker says it is when reading (partition EOF),
    // not the watermark asked for up front: tansu answers ListOffsets with the end of the
    // first batch.
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = c.create().map_err(|e| kafka("consumer", e))?;
    let mut wanted = TopicPartitionList::new();
    for p in 0..i32::try_from(count).unwrap_or(i32::MAX) {
        wanted.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(wanted, timeout).map_err(|e| kafka("committed offsets", e))?;
    let mut start = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(topic, e.partition(), timeout).map_err(|e| kafka("watermarks", e))?;
        let from = match e.offset() {
            Offset::Offset(o) if o >= low => o,
            _ => low,
        };
        // Every partition is read to its end (partition EOF); the watermark only sizes
        // the progress bar.
        start.add_partition_offset(topic, e.partition(), Offset::Offset(from)).map_err(|e| kafka("assign", e))?;
        ends.insert(e.partition(), (high - from).max(0));
    }
    consumer.assign(&start).map_err(|e| kafka("assign", e))?;
    Ok((consumer, ends))
}

/// Reads every partition of `partitions` to its end, calling `each` in partition order
/// until it says stop.
fn read_all(
    consumer: &BaseConsumer,
    partitions: &HashMap<i32, i64>,
    timeout: Duration,
    mut each: impl FnMut(DeadLetter) -> bool,
) -> retry_core::Result<()> {
    let mut left: HashMap<i32, i64> = partitions.clone();
    let mut idle_since = Instant::now();
    while !left.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {
                if idle_since.elapsed() > timeout {
                    return Err(Error::Config(ConfigError::new(
                        "topic",
                        "no records arrived within the timeout; is the broker reachable?",
                    )));
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                left.remove(&p);
            }
            Some(Err(e)) => return Err(kafka("reading", e)),
            Some(Ok(m)) => {
                idle_since = Instant::now();
                if !left.contains_key(&m.partition()) {
                    continue;
                }
                // The runtime's reader: a header name that is not UTF-8 (a foreign
                // producer's) shows lossily instead of panicking in rdkafka.
                if !each(DeadLetter::new(Record::from_consumed(&m))) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

fn json(d: &DeadLetter) -> serde_json::Value {
    let h = d.retry().ok().flatten();
    serde_json::json!({
        "partition": d.record.partition(),
        "offset": d.record.offset(),
        "key": d.record.key().map(String::from_utf8_lossy),
        "original_topic": h.map(|h| &h.original_topic),
        "original_partition": h.map(|h| h.original_partition),
        "original_offset": h.map(|h| h.original_offset),
        "attempts": h.map(|h| h.attempt),
        "error_kind": h.map(|h| h.error_kind.as_str()),
        "error": h.map(|h| &h.error),
        "dead_lettered_at": d.record.timestamp_ms().map(format_ms),
        "headers_error": d.retry().err().map(ToString::to_string),
    })
}

fn age(d: &DeadLetter) -> String {
    d.record.timestamp_ms().map_or_else(
        || "-".into(),
        |t| humantime::format_duration(Duration::from_secs(u64::try_from((now_ms() - t) / 1000).unwrap_or(0))).to_string(),
    )
}

fn row(d: &DeadLetter) -> Vec<String> {
    let (origin, attempts, kind, error) = match d.retry() {
        Ok(Some(h)) => (
            format!("{}/{}@{}", h.original_topic, h.original_partition, h.original_offset),
            h.attempt.to_string(),
            h.error_kind.to_string(),
            headers::truncate_utf8(&h.error, 60).to_owned(),
        ),
        Ok(None) => ("-".into(), "-".into(), "-".into(), "no retry headers".into()),
        Err(e) => ("-".into(), "-".into(), "-".into(), format!("unreadable retry headers: {e}")),
    };
    vec![d.at(), d.key_text(), origin, attempts, kind, error, age(d)]
}

/// The topic and headers a dead letter is replayed with.
fn destination(
    d: &DeadLetter,
    to: &str,
    suffix: &str,
    naming: retry_core::GroupNaming,
    format: HeaderFormat,
) -> Result<(String, HeaderList), String> {
    let user = || d.record.headers();
    let h = match d.retry() {
        Ok(Some(h)) => Some(h),
        Ok(None) => None,
        Err(e) => return Err(format!("unreadable retry headers: {e}")),
    };
    match to {
        "source" => {
            let h = h.ok_or("no retry headers: the original topic is unknown")?;
            Ok((h.original_topic.clone(), headers::for_replay(user(), None)))
        }
        "retry" => {
            let h = h.ok_or("no retry headers: the original topic and group are unknown")?;
            let topic = retry_core::topics::retry_topic(&h.original_topic, suffix, &h.group, naming, None).map_err(|e| e.to_string())?;
            let fresh = RetryHeaders {
                attempt: 2,
                due_at_ms: now_ms(),
                first_failure_ms: now_ms(),
                error_kind: FailureKind::Retryable,
                error: format!("replayed from the DLT after: {}", h.error),
                hop: None,
                ..h.clone()
            };
            let fresh = RetryHeaders { error: headers::truncate_utf8(&fresh.error, headers::MAX_ERROR_BYTES).to_owned(), ..fresh };
            Ok((topic, headers::for_replay(user(), Some((&fresh, format)))))
        }
        topic => Ok((topic.to_owned(), headers::for_replay(user(), None))),
    }
}

pub(super) async fn run(command: &DltCommand, config: &KafkaConfig, timeout: Duration) -> retry_core::Result<()> {
    match command {
        DltCommand::Inspect { topic, filter, json: as_json } => {
            filter.check()?;
            // A group of its own that never commits: inspecting changes nothing.
            let (consumer, ends) = open(config, topic, &format!("retryable-topic-inspect-{}", std::process::id()), timeout)?;
            let mut shown = Vec::new();
            read_all(&consumer, &ends, timeout, |d| {
                if filter.keeps(&d) {
                    shown.push(d);
                }
                filter.limit.is_none_or(|l| shown.len() < l)
            })?;
            if *as_json {
                for d in &shown {
                    println!("{}", json(d));
                }
            } else {
                let mut t = Table::new();
                t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
                t.set_header(["partition@offset", "key", "original topic/partition@offset", "attempts", "error kind", "error", "age"]);
                for d in &shown {
                    t.add_row(row(d));
                }
                println!("{t}");
                println!("{} dead letters", shown.len());
            }
        }
        DltCommand::Replay { topic, to, filter, rate, dry_run, group, suffix, group_naming, header_format } => {
            filter.check()?;
            let naming = group_naming.pick("--group-naming", &retry_core::GroupNaming::NAMES)?;
            let format = header_format.pick("--header-format", &HeaderFormat::NAMES)?;
            let group = group.clone().unwrap_or_else(|| format!("{topic}-replay"));
            let (consumer, ends) = open(config, topic, &group, timeout)?;
            let producer: FutureProducer = config.to_client_config().create().map_err(|e| kafka("producer", e))?;
            let total: i64 = ends.values().sum();
            let bar = ProgressBar::new(u64::try_from(total).unwrap_or(0));
            bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} read {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
            let (mut replayed, mut skipped, mut failed, mut read) = (0u64, 0u64, 0u64, 0usize);
            let mut positions: HashMap<i32, i64> = HashMap::new();
            let mut pending = Vec::new();
            read_all(&consumer, &ends, timeout, |d| {
                read += 1;
                bar.inc(1);
                positions.insert(d.record.partition(), d.record.offset() + 1);
                if !filter.keeps(&d) || filter.limit.is_some_and(|l| pending.len() >= l) {
                    skipped += 1;
                } else {
                    pending.push(d);
                }
                true
            })?;
            let started = Instant::now();
            for (i, d) in pending.iter().enumerate() {
                match destination(d, to, suffix, naming, format) {
                    Err(why) => {
                        failed += 1;
                        eprintln!("cannot replay {} (key {}): {why}", d.at(), d.key_text());
                    }
                    Ok((target, hs)) if *dry_run => {
                        replayed += 1;
                        println!("would replay {} (key {}) to {target} with {} headers", d.at(), d.key_text(), hs.len());
                    }
                    Ok((target, hs)) => {
                        if let Some(r) = rate {
                            let due = started + Duration::from_secs_f64(i as f64 / f64::from((*r).max(1)));
                            tokio::time::sleep_until(due.into()).await;
                        }
                        let mut oh = OwnedHeaders::new();
                        for (n, v) in &hs {
                            oh = oh.insert(rdkafka::message::Header { key: n, value: v.as_deref() });
                        }
                        let mut rec = FutureRecord::<[u8], [u8]>::to(&target).headers(oh);
                        if let Some(k) = d.record.key() {
                            rec = rec.key(k);
                        }
                        if let Some(p) = d.record.payload() {
                            rec = rec.payload(p);
                        }
                        match producer.send(rec, timeout).await {
                            Ok(_) => replayed += 1,
                            Err((e, _)) => {
                                failed += 1;
                                eprintln!("cannot replay {} (key {}) to {target}: {e}", d.at(), d.key_text());
                            }
                        }
                    }
                }
            }
            bar.finish_and_clear();
            if !*dry_run && failed == 0 {
                let mut done = TopicPartitionList::new();
                for (p, o) in &positions {
                    done.add_partition_offset(topic, *p, Offset::Offset(*o)).map_err(|e| kafka("commit", e))?;
                }
                if done.count() > 0 {
                    consumer.commit(&done, CommitMode::Sync).map_err(|e| kafka("commit", e))?;
                }
            }
            let verb = if *dry_run { "would replay" } else { "replayed" };
            println!("{verb} {replayed} · skipped by filter {skipped} · failed {failed} · read {read} (group {group})");
            if failed > 0 {
                return Err(Error::Config(ConfigError::new(
                    "replay",
                    format!("{failed} dead letters could not be replayed; progress not committed, a second run tries again"),
                )));
            }
        }
    }
    Ok(())
}
