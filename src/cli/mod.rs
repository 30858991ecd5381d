//! The `retryable-topic` command line: topic plans, the dead-letter topic looked into and
//! replayed, and the delay service. `src/bin/retryable-topic.rs` is a shell over [`main`].

mod delay;
mod dlt;
mod topics;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use retry_core::{ConfigError, DltStrategy, GroupNaming, KafkaConfig, RetryPolicy, TopicStrategy};

/// Operations on retryable-topic's retry and dead-letter topics.
#[derive(Debug, Parser)]
#[command(name = "retryable-topic", version, about)]
pub struct Cli {
    /// Where the brokers are [default: localhost:9092; the delay service runs on an
    /// embedded broker without it].
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", global = true)]
    bootstrap_servers: Option<String>,
    /// A librdkafka setting for every client, `key=value` (repeatable; secrets are never printed).
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true)]
    settings: Vec<String>,
    /// How long to wait for the cluster, e.g. `10s`.
    #[arg(long, global = true, default_value = "10s", value_parser = retry_core::duration::parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Retry and DLT topics of a listener.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// The dead-letter topic.
    #[command(subcommand)]
    Dlt(dlt::DltCommand),
    /// The delay service: holds each record of a request topic for the delay its headers
    /// ask for (`RetryDelay`, `RetryType`, `RetryMax`, `RetryTopic`, `DLQTopic`), then
    /// delivers it; runs until Ctrl-C or SIGTERM.
    DelayService(delay::DelayArgs),
}

/// The policy flags that decide a listener's topic names (as the macro arguments do).
#[derive(Debug, Clone, Args)]
struct PolicyArgs {
    /// The source topic (repeatable).
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
    /// The listener's consumer group.
    #[arg(long)]
    group: String,
    /// Total attempts, the first included.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Retry-topic suffix.
    #[arg(long, default_value = "-retries")]
    suffix: String,
    /// DLT suffix.
    #[arg(long, default_value = "-dlt")]
    dlt_suffix: String,
    /// DLT strategy.
    #[arg(long, value_enum, default_value_t = Named::AlwaysRetryOnError)]
    dlt: Named,
    /// Retry-topic layout.
    #[arg(long, value_enum, default_value_t = Named::SingleTopic)]
    fixed_delay: Named,
    /// Bound of `multiple_topics`.
    #[arg(long, default_value_t = 8)]
    max_retry_topics: usize,
    /// The tiers of `ladder`, shortest first, comma-separated [default: 1s,5s,17s,59s,4m,17m,1h].
    #[arg(long, value_delimiter = ',', value_parser = retry_core::duration::parse_duration)]
    tiers: Vec<Duration>,
    /// Whether the names carry the group.
    #[arg(long, value_enum, default_value_t = Named::PerGroup)]
    group_naming: Named,
}

/// Every named value of the policy, as the macro writes it (retry-core's `NAMES` tables
/// decide which flag takes which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Named {
    AlwaysRetryOnError,
    FailOnError,
    NoDlt,
    SingleTopic,
    MultipleTopics,
    Ladder,
    PerGroup,
    Shared,
    Packed,
    PerField,
}

impl Named {
    fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
    }

    /// The value of retry-core's table `names` with this name.
    fn pick<T: Copy>(self, flag: &str, names: &[(&str, T)]) -> Result<T, ConfigError> {
        let name = self.name();
        names.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| {
            let valid: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            ConfigError::new(flag, format!("`{name}` is not one of: {}", valid.join(", ")))
        })
    }
}

impl PolicyArgs {
    fn policy(&self) -> retry_core::Result<RetryPolicy> {
        RetryPolicy::builder()
            .attempts(self.attempts)
            .retry_suffix(&self.suffix)
            .dlt_suffix(&self.dlt_suffix)
            .dlt(self.dlt.pick::<DltStrategy>("--dlt", &DltStrategy::NAMES)?)
            .topic_strategy(self.fixed_delay.pick::<TopicStrategy>("--fixed-delay", &TopicStrategy::NAMES)?)
            .max_retry_topics(self.max_retry_topics)
            .ladder_tiers(if self.tiers.is_empty() { retry_core::ladder::DEFAULT_TIERS.to_vec() } else { self.tiers.clone() })
            .group_naming(self.group_naming.pick::<GroupNaming>("--group-naming", &GroupNaming::NAMES)?)
            .build()
    }
}

impl Cli {
    fn config(&self) -> retry_core::Result<KafkaConfig> {
        let mut c = KafkaConfig::new();
        c.set("bootstrap.servers", self.bootstrap_servers.as_deref().unwrap_or("localhost:9092"));
        for kv in &self.settings {
            let (k, v) = key_value("-X", kv)?;
            c.set(k, v);
        }
        Ok(c)
    }
}

/// `key=value` of the flag `flag`, trimmed.
fn key_value<'a>(flag: &str, kv: &'a str) -> Result<(&'a str, &'a str), ConfigError> {
    let (k, v) = kv.split_once('=').ok_or_else(|| ConfigError::new(flag, format!("`{kv}` is not key=value")))?;
    Ok((k.trim(), v.trim()))
}

/// Runs the command line: parses the arguments, runs the command, and maps errors to a
/// message on stderr and a non-zero exit code (2 for bad arguments, as clap does; 1 for
/// anything else).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,librdkafka=off,rdkafka=off".into()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> retry_core::Result<()> {
    let config = cli.config()?;
    match &cli.command {
        Command::Topics(c) => topics::run(c, &config, cli.timeout).await,
        Command::Dlt(c) => dlt::run(c, &config, cli.timeout).await,
        Command::DelayService(c) => delay::run(c, cli.bootstrap_servers.as_deref(), &config, cli.timeout).await,
    }
}
