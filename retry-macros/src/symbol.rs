//! The macros' argument names, each written once (serde_derive's `symbol.rs`), and the
//! retry-core setting each one sets.

use std::fmt::{self, Display};

use syn::Path;

/// An argument name.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Symbol(&'static str);

pub(crate) const TOPICS: Symbol = Symbol("topics");
pub(crate) const GROUP: Symbol = Symbol("group");
pub(crate) const ATTEMPTS: Symbol = Symbol("attempts");
pub(crate) const BACKOFF: Symbol = Symbol("backoff");
pub(crate) const MULTIPLIER: Symbol = Symbol("multiplier");
pub(crate) const MAX_DELAY: Symbol = Symbol("max_delay");
pub(crate) const LINEAR_STEP: Symbol = Symbol("linear_step");
pub(crate) const JITTER: Symbol = Symbol("jitter");
pub(crate) const SUFFIX: Symbol = Symbol("suffix");
pub(crate) const DLT_SUFFIX: Symbol = Symbol("dlt_suffix");
pub(crate) const DLT: Symbol = Symbol("dlt");
pub(crate) const FIXED_DELAY: Symbol = Symbol("fixed_delay");
pub(crate) const MAX_RETRY_TOPICS: Symbol = Symbol("max_retry_topics");
pub(crate) const TIERS: Symbol = Symbol("tiers");
pub(crate) const GROUP_NAMING: Symbol = Symbol("group_naming");
pub(crate) const TIMEOUT: Symbol = Symbol("timeout");
pub(crate) const BLOCKING_ATTEMPTS: Symbol = Symbol("blocking_attempts");
pub(crate) const BLOCKING_DELAY: Symbol = Symbol("blocking_delay");
pub(crate) const AUTO_CREATE_TOPICS: Symbol = Symbol("auto_create_topics");
pub(crate) const PARTITIONS: Symbol = Symbol("partitions");
pub(crate) const REPLICATION: Symbol = Symbol("replication");
pub(crate) const CIRCUIT_BREAKER: Symbol = Symbol("circuit_breaker");
pub(crate) const KEY_CONCURRENCY: Symbol = Symbol("key_concurrency");
pub(crate) const HANDLER_TIMEOUT: Symbol = Symbol("handler_timeout");
pub(crate) const STALLED_AFTER: Symbol = Symbol("stalled_after");
pub(crate) const NAME: Symbol = Symbol("name");
pub(crate) const CRATE: Symbol = Symbol("crate");
pub(crate) const LISTENER: Symbol = Symbol("listener");
pub(crate) const WINDOW: Symbol = Symbol("window");
pub(crate) const MIN_CALLS: Symbol = Symbol("min_calls");
pub(crate) const FAILURE_RATE: Symbol = Symbol("failure_rate");
pub(crate) const MIN_KEYS: Symbol = Symbol("min_keys");
pub(crate) const PROBE_DELAY: Symbol = Symbol("probe_delay");
pub(crate) const MAX_PROBE_DELAY: Symbol = Symbol("max_probe_delay");

/// Every argument of `#[retryable_topic]`, in documentation order.
pub(crate) const RETRYABLE_TOPIC: &[Symbol] = &[
    TOPICS,
    GROUP,
    ATTEMPTS,
    BACKOFF,
    MULTIPLIER,
    LINEAR_STEP,
    MAX_DELAY,
    JITTER,
    SUFFIX,
    DLT_SUFFIX,
    DLT,
    FIXED_DELAY,
    MAX_RETRY_TOPICS,
    TIERS,
    GROUP_NAMING,
    TIMEOUT,
    BLOCKING_ATTEMPTS,
    BLOCKING_DELAY,
    AUTO_CREATE_TOPICS,
    PARTITIONS,
    REPLICATION,
    CIRCUIT_BREAKER,
    KEY_CONCURRENCY,
    HANDLER_TIMEOUT,
    STALLED_AFTER,
    NAME,
    CRATE,
];

/// Every setting inside `circuit_breaker(...)`.
pub(crate) const CIRCUIT_BREAKER_ARGS: &[Symbol] = &[WINDOW, MIN_CALLS, FAILURE_RATE, MIN_KEYS, PROBE_DELAY, MAX_PROBE_DELAY];

/// Every argument of `#[dlt_handler]`.
pub(crate) const DLT_HANDLER: &[Symbol] = &[LISTENER, NAME, CRATE];

/// The argument that sets each retry-core setting, by the name a `ConfigError` carries
/// (the builder method, dotted for a part of one).
pub(crate) const SETTINGS: &[(&str, Symbol)] = &[
    ("topics", TOPICS),
    ("group", GROUP),
    ("attempts", ATTEMPTS),
    ("backoff.delay", BACKOFF),
    ("backoff.multiplier", MULTIPLIER),
    ("backoff.max_delay", MAX_DELAY),
    ("backoff.linear_step", LINEAR_STEP),
    ("jitter", JITTER),
    ("retry_suffix", SUFFIX),
    ("dlt_suffix", DLT_SUFFIX),
    ("dlt", DLT),
    ("topic_strategy", FIXED_DELAY),
    ("max_retry_topics", MAX_RETRY_TOPICS),
    ("ladder_tiers", TIERS),
    ("group_naming", GROUP_NAMING),
    ("timeout", TIMEOUT),
    ("blocking_attempts", BLOCKING_ATTEMPTS),
    ("blocking_delay", BLOCKING_DELAY),
    ("auto_create_topics.partitions", PARTITIONS),
    ("auto_create_topics.replication", REPLICATION),
    ("key_concurrency", KEY_CONCURRENCY),
    ("handler_timeout", HANDLER_TIMEOUT),
    ("stalled_after", STALLED_AFTER),
    ("circuit_breaker.window", WINDOW),
    ("circuit_breaker.min_calls", MIN_CALLS),
    ("circuit_breaker.failure_rate", FAILURE_RATE),
    ("circuit_breaker.min_keys", MIN_KEYS),
    ("circuit_breaker.probe_delay", PROBE_DELAY),
    ("circuit_breaker.max_probe_delay", MAX_PROBE_DELAY),
];

impl Symbol {
    /// The argument that sets retry-core's `setting`.
    pub(crate) fn of_setting(setting: &str) -> Option<Symbol> {
        SETTINGS.iter().find(|(s, _)| *s == setting).map(|(_, sym)| *sym)
    }

    /// The name as written.
    pub(crate) fn name(self) -> &'static str {
        self.0
    }
}

impl PartialEq<Symbol> for Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_maps_to_a_retryable_topic_argument_once() {
        for (setting, sym) in SETTINGS {
            assert!(RETRYABLE_TOPIC.contains(sym) || CIRCUIT_BREAKER_ARGS.contains(sym), "{setting} maps to {sym}, not an argument");
            assert_eq!(SETTINGS.iter().filter(|(s, _)| s == setting).count(), 1, "{setting} listed twice");
        }
    }

    #[test]
    fn the_documentation_tables_list_every_argument() {
        let docs = include_str!("lib.rs");
        let (retryable, dlt) = docs.split_once("pub fn retryable_topic").expect("two macros");
        for (args, table) in [(RETRYABLE_TOPIC, retryable), (DLT_HANDLER, dlt)] {
            let rows: Vec<&str> = table.lines().filter_map(|l| l.strip_prefix("/// | `")?.split('`').next()).collect();
            let names: Vec<&str> = args.iter().map(|s| s.name()).collect();
            assert_eq!(rows, names, "the argument table in lib.rs differs from symbol.rs");
        }
    }
}
