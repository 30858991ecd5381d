//! Parsing of the macro arguments: syntax only.
//!
//! Each argument is read with `syn::meta::parser` into an [`Attr`] (set once, its tokens
//! kept for error spans); literal kinds, duration strings and choice names are read here,
//! with retry-core's own parsers and name tables. Whether the values make a valid listener
//! is not decided here but in the check pass (`check.rs`), by retry-core itself. Every
//! error is collected; parsing goes on after an unknown or malformed argument.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Expr, ExprArray, ExprLit, Lit, LitStr, Path};

use retry_core::duration::parse_duration;
use retry_core::{DltStrategy, GroupNaming, TopicStrategy};

use crate::ctxt::Ctxt;
use crate::symbol::*;

/// A value with the tokens that set it.
pub(crate) struct Spanned<T> {
    pub value: T,
    pub tokens: TokenStream,
}

/// An argument that may be set once; a second setting is an error at its token
/// (serde_derive's `Attr<T>`).
pub(crate) struct Attr<'c, T> {
    cx: &'c Ctxt,
    name: Symbol,
    seen: bool,
    value: Option<Spanned<T>>,
}

impl<'c, T> Attr<'c, T> {
    pub(crate) fn none(cx: &'c Ctxt, name: Symbol) -> Self {
        Attr { cx, name, seen: false, value: None }
    }

    /// Sets the value `at` its tokens; `None` when it did not read (its error is reported).
    pub(crate) fn set_opt<A: ToTokens>(&mut self, at: A, value: Option<T>) {
        let tokens = at.into_token_stream();
        if self.seen {
            self.cx.error_spanned_by(tokens, format!("duplicate argument `{}`", self.name));
            return;
        }
        self.seen = true;
        self.value = value.map(|value| Spanned { value, tokens });
    }

    /// Whether the argument was written, valid or not.
    pub(crate) fn seen(&self) -> bool {
        self.seen
    }

    pub(crate) fn get(self) -> Option<Spanned<T>> {
        self.value
    }
}

/// The arguments of `#[retryable_topic]`, as written (read, not yet checked).
pub(crate) struct RetryableArgs {
    /// `None` only when missing or unreadable, which is reported.
    pub topics: Option<Spanned<Vec<LitStr>>>,
    /// `None` only when missing or unreadable, which is reported.
    pub group: Option<Spanned<LitStr>>,
    pub attempts: Option<Spanned<u32>>,
    pub backoff: Option<Spanned<Duration>>,
    pub multiplier: Option<Spanned<f64>>,
    pub max_delay: Option<Spanned<Duration>>,
    pub linear_step: Option<Spanned<Duration>>,
    pub jitter: Option<Spanned<f64>>,
    pub suffix: Option<Spanned<String>>,
    pub dlt_suffix: Option<Spanned<String>>,
    pub dlt: Option<Spanned<DltStrategy>>,
    pub fixed_delay: Option<Spanned<TopicStrategy>>,
    pub max_retry_topics: Option<Spanned<usize>>,
    /// Each tier as written and read.
    pub tiers: Option<Spanned<Vec<(LitStr, Duration)>>>,
    pub group_naming: Option<Spanned<GroupNaming>>,
    pub timeout: Option<Spanned<Duration>>,
    pub blocking_attempts: Option<Spanned<u32>>,
    pub blocking_delay: Option<Spanned<Duration>>,
    pub auto_create_topics: Option<Spanned<bool>>,
    pub partitions: Option<Spanned<i32>>,
    pub replication: Option<Spanned<i32>>,
    /// `circuit_breaker = true`, or `circuit_breaker(window = "10s", …)`.
    pub circuit_breaker: Option<Spanned<BreakerArgs>>,
    pub key_concurrency: Option<Spanned<usize>>,
    pub handler_timeout: Option<Spanned<Duration>>,
    pub stalled_after: Option<Spanned<Duration>>,
    pub name: Option<Spanned<String>>,
    pub krate: Option<Spanned<Path>>,
}

impl RetryableArgs {
    /// The tokens that set `arg`, if it was set (and read).
    pub(crate) fn tokens_of(&self, arg: Symbol) -> Option<&TokenStream> {
        fn t<T>(a: &Option<Spanned<T>>) -> Option<&TokenStream> {
            a.as_ref().map(|s| &s.tokens)
        }
        match arg {
            TOPICS => t(&self.topics),
            GROUP => t(&self.group),
            ATTEMPTS => t(&self.attempts),
            BACKOFF => t(&self.backoff),
            MULTIPLIER => t(&self.multiplier),
            MAX_DELAY => t(&self.max_delay),
            LINEAR_STEP => t(&self.linear_step),
            JITTER => t(&self.jitter),
            SUFFIX => t(&self.suffix),
            DLT_SUFFIX => t(&self.dlt_suffix),
            DLT => t(&self.dlt),
            FIXED_DELAY => t(&self.fixed_delay),
            MAX_RETRY_TOPICS => t(&self.max_retry_topics),
            TIERS => t(&self.tiers),
            GROUP_NAMING => t(&self.group_naming),
            TIMEOUT => t(&self.timeout),
            BLOCKING_ATTEMPTS => t(&self.blocking_attempts),
            BLOCKING_DELAY => t(&self.blocking_delay),
            AUTO_CREATE_TOPICS => t(&self.auto_create_topics),
            PARTITIONS => t(&self.partitions),
            REPLICATION => t(&self.replication),
            CIRCUIT_BREAKER => t(&self.circuit_breaker),
            KEY_CONCURRENCY => t(&self.key_concurrency),
            HANDLER_TIMEOUT => t(&self.handler_timeout),
            STALLED_AFTER => t(&self.stalled_after),
            WINDOW | MIN_CALLS | FAILURE_RATE | MIN_KEYS | PROBE_DELAY | MAX_PROBE_DELAY => {
                let b = &self.circuit_breaker.as_ref()?.value;
                match arg {
                    WINDOW => t(&b.window),
                    MIN_CALLS => t(&b.min_calls),
                    FAILURE_RATE => t(&b.failure_rate),
                    MIN_KEYS => t(&b.min_keys),
                    PROBE_DELAY => t(&b.probe_delay),
                    _ => t(&b.max_probe_delay),
                }
            }
            NAME => t(&self.name),
            CRATE => t(&self.krate),
            _ => None,
        }
    }
}

/// The settings inside `circuit_breaker(...)` (all unset for `circuit_breaker = true`).
#[derive(Default)]
pub(crate) struct BreakerArgs {
    pub window: Option<Spanned<Duration>>,
    pub min_calls: Option<Spanned<u32>>,
    pub failure_rate: Option<Spanned<f64>>,
    pub min_keys: Option<Spanned<u32>>,
    pub probe_delay: Option<Spanned<Duration>>,
    pub max_probe_delay: Option<Spanned<Duration>>,
}

/// The arguments of `#[dlt_handler]`.
pub(crate) struct DltArgs {
    pub listener: Spanned<Path>,
    pub name: Option<Spanned<String>>,
    pub krate: Option<Spanned<Path>>,
}

/// Reports an unknown argument, listing the valid ones, and skips its value so parsing
/// goes on.
fn unknown(cx: &Ctxt, meta: &ParseNestedMeta<'_>, valid: &[Symbol]) -> syn::Result<()> {
    let got = meta.path.to_token_stream().to_string().replace(' ', "");
    let names: Vec<&str> = valid.iter().map(|s| s.name()).collect();
    cx.error_spanned_by(&meta.path, format!("unknown argument `{got}`; expected one of: {}", names.join(", ")));
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

fn lit_str(cx: &Ctxt, e: &Expr, key: Symbol) -> Option<LitStr> {
    match e {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s.clone()),
        other => {
            cx.error_spanned_by(other, format!("`{key}` takes a string literal, e.g. {key} = \"...\""));
            None
        }
    }
}

fn lit_int<N>(cx: &Ctxt, e: &Expr, key: Symbol) -> Option<N>
where
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    match e {
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => {
            i.base10_parse::<N>().map_err(|err| cx.error_spanned_by(i, format!("`{key}`: {err}"))).ok()
        }
        other => {
            cx.error_spanned_by(other, format!("`{key}` takes an integer literal, e.g. {key} = 3"));
            None
        }
    }
}

fn lit_float(cx: &Ctxt, e: &Expr, key: Symbol) -> Option<f64> {
    match e {
        Expr::Lit(ExprLit { lit: Lit::Float(f), .. }) => f.base10_parse().map_err(|err| cx.error_spanned_by(f, err)).ok(),
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => {
            i.base10_parse::<u32>().map(f64::from).map_err(|err| cx.error_spanned_by(i, err)).ok()
        }
        other => {
            cx.error_spanned_by(other, format!("`{key}` takes a number, e.g. {key} = 2.0"));
            None
        }
    }
}

fn lit_bool(cx: &Ctxt, e: &Expr, key: Symbol) -> Option<bool> {
    match e {
        Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) => Some(b.value),
        other => {
            cx.error_spanned_by(other, format!("`{key}` takes `true` or `false`"));
            None
        }
    }
}

fn duration(cx: &Ctxt, e: &Expr, key: Symbol) -> Option<Duration> {
    let s = lit_str(cx, e, key)?;
    parse_duration(&s.value()).map_err(|err| cx.error_spanned_by(&s, format!("`{key}`: {err}"))).ok()
}

/// One of retry-core's named values (`DltStrategy::NAMES`, …), written as a bare name.
fn choice<T: Copy>(cx: &Ctxt, e: &Expr, key: Symbol, names: &[(&str, T)]) -> Option<T> {
    let listed: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
    let expected = format!("`{key}` takes one of: {}", listed.join(", "));
    let Expr::Path(p) = e else {
        cx.error_spanned_by(e, expected);
        return None;
    };
    let Some(id) = p.path.get_ident() else {
        cx.error_spanned_by(p, expected);
        return None;
    };
    let found = names.iter().find(|(n, _)| id == n).map(|(_, v)| *v);
    if found.is_none() {
        cx.error_spanned_by(id, format!("unknown `{key}` value `{id}`; {expected}"));
    }
    found
}

fn string_list(cx: &Ctxt, e: &Expr, key: Symbol) -> Option<Vec<LitStr>> {
    let items: Vec<&Expr> = match e {
        Expr::Array(ExprArray { elems, .. }) => elems.iter().collect(),
        Expr::Lit(ExprLit { lit: Lit::Str(_), .. }) => vec![e],
        other => {
            cx.error_spanned_by(other, format!("`{key}` takes a list of string literals, e.g. {key} = [\"orders\"]"));
            return None;
        }
    };
    let read: Vec<Option<LitStr>> = items.into_iter().map(|item| lit_str(cx, item, key)).collect();
    read.into_iter().collect()
}

/// A list of duration strings, each kept with its literal (for errors about one tier).
fn duration_list(cx: &Ctxt, e: &Expr, key: Symbol) -> Option<Vec<(LitStr, Duration)>> {
    let read: Vec<Option<(LitStr, Duration)>> = string_list(cx, e, key)?
        .into_iter()
        .map(|s| match parse_duration(&s.value()) {
            Ok(d) => Some((s, d)),
            Err(err) => {
                cx.error_spanned_by(&s, format!("`{key}`: {err}"));
                None
            }
        })
        .collect();
    read.into_iter().collect()
}

fn path_in_str(cx: &Ctxt, e: &Expr, key: Symbol) -> Option<Path> {
    let s = lit_str(cx, e, key)?;
    s.parse::<Path>().map_err(|_| cx.error_spanned_by(&s, format!("`{key}` takes a path, e.g. {key} = \"::retryable_topic\""))).ok()
}

fn path(cx: &Ctxt, e: &Expr, key: Symbol) -> Option<Path> {
    match e {
        Expr::Path(p) if p.qself.is_none() => Some(p.path.clone()),
        other => {
            cx.error_spanned_by(other, format!("`{key}` takes a path, e.g. {key} = consume"));
            None
        }
    }
}

/// Reads `#[retryable_topic(...)]`'s arguments; errors go to `cx`. `None` when they do
/// not parse at all.
pub(crate) fn parse_retryable(cx: &Ctxt, args: TokenStream) -> Option<RetryableArgs> {
    let mut topics = Attr::none(cx, TOPICS);
    let mut group = Attr::none(cx, GROUP);
    let mut attempts = Attr::none(cx, ATTEMPTS);
    let mut backoff = Attr::none(cx, BACKOFF);
    let mut multiplier = Attr::none(cx, MULTIPLIER);
    let mut max_delay = Attr::none(cx, MAX_DELAY);
    let mut linear_step = Attr::none(cx, LINEAR_STEP);
    let mut jitter = Attr::none(cx, JITTER);
    let mut suffix = Attr::none(cx, SUFFIX);
    let mut dlt_suffix = Attr::none(cx, DLT_SUFFIX);
    let mut dlt = Attr::none(cx, DLT);
    let mut fixed_delay = Attr::none(cx, FIXED_DELAY);
    let mut max_retry_topics = Attr::none(cx, MAX_RETRY_TOPICS);
    let mut tiers = Attr::none(cx, TIERS);
    let mut group_naming = Attr::none(cx, GROUP_NAMING);
    let mut timeout = Attr::none(cx, TIMEOUT);
    let mut blocking_attempts = Attr::none(cx, BLOCKING_ATTEMPTS);
    let mut blocking_delay = Attr::none(cx, BLOCKING_DELAY);
    let mut auto_create_topics = Attr::none(cx, AUTO_CREATE_TOPICS);
    let mut partitions = Attr::none(cx, PARTITIONS);
    let mut replication = Attr::none(cx, REPLICATION);
    let mut circuit_breaker = Attr::none(cx, CIRCUIT_BREAKER);
    let mut key_concurrency = Attr::none(cx, KEY_CONCURRENCY);
    let mut handler_timeout = Attr::none(cx, HANDLER_TIMEOUT);
    let mut stalled_after = Attr::none(cx, STALLED_AFTER);
    let mut name = Attr::none(cx, NAME);
    let mut krate = Attr::none(cx, CRATE);

    let parser = syn::meta::parser(|meta| {
        let Some(&key) = RETRYABLE_TOPIC.iter().find(|s| meta.path == **s) else {
            return unknown(cx, &meta, RETRYABLE_TOPIC);
        };
        if key == CIRCUIT_BREAKER && meta.input.peek(syn::token::Paren) {
            let tokens = meta.input.fork().parse::<proc_macro2::Group>()?;
            let settings = breaker_settings(cx, &meta)?;
            circuit_breaker.set_opt(tokens, Some(settings));
            return Ok(());
        }
        let v: Expr = meta.value()?.parse()?;
        match key {
            TOPICS => topics.set_opt(&v, string_list(cx, &v, key)),
            GROUP => group.set_opt(&v, lit_str(cx, &v, key)),
            ATTEMPTS => attempts.set_opt(&v, lit_int(cx, &v, key)),
            BACKOFF => backoff.set_opt(&v, duration(cx, &v, key)),
            MULTIPLIER => multiplier.set_opt(&v, lit_float(cx, &v, key)),
            MAX_DELAY => max_delay.set_opt(&v, duration(cx, &v, key)),
            LINEAR_STEP => linear_step.set_opt(&v, duration(cx, &v, key)),
            JITTER => jitter.set_opt(&v, lit_float(cx, &v, key)),
            SUFFIX => suffix.set_opt(&v, lit_str(cx, &v, key).map(|s| s.value())),
            DLT_SUFFIX => dlt_suffix.set_opt(&v, lit_str(cx, &v, key).map(|s| s.value())),
            DLT => dlt.set_opt(&v, choice(cx, &v, key, &DltStrategy::NAMES)),
            FIXED_DELAY => fixed_delay.set_opt(&v, choice(cx, &v, key, &TopicStrategy::NAMES)),
            MAX_RETRY_TOPICS => max_retry_topics.set_opt(&v, lit_int(cx, &v, key)),
            TIERS => tiers.set_opt(&v, duration_list(cx, &v, key)),
            GROUP_NAMING => group_naming.set_opt(&v, choice(cx, &v, key, &GroupNaming::NAMES)),
            TIMEOUT => timeout.set_opt(&v, duration(cx, &v, key)),
            BLOCKING_ATTEMPTS => blocking_attempts.set_opt(&v, lit_int(cx, &v, key)),
            BLOCKING_DELAY => blocking_delay.set_opt(&v, duration(cx, &v, key)),
            AUTO_CREATE_TOPICS => auto_create_topics.set_opt(&v, lit_bool(cx, &v, key)),
            PARTITIONS => partitions.set_opt(&v, lit_int(cx, &v, key)),
            REPLICATION => replication.set_opt(&v, lit_int(cx, &v, key)),
            CIRCUIT_BREAKER => match lit_bool(cx, &v, key) {
                // `false` is the default: nothing to set.
                Some(false) => {}
                on => circuit_breaker.set_opt(&v, on.map(|_| BreakerArgs::default())),
            },
            KEY_CONCURRENCY => key_concurrency.set_opt(&v, lit_int(cx, &v, key)),
            HANDLER_TIMEOUT => handler_timeout.set_opt(&v, duration(cx, &v, key)),
            STALLED_AFTER => stalled_after.set_opt(&v, duration(cx, &v, key)),
            NAME => name.set_opt(&v, lit_str(cx, &v, key).map(|s| s.value())),
            CRATE => krate.set_opt(&v, path_in_str(cx, &v, key)),
            _ => unreachable!("`{key}` is listed in RETRYABLE_TOPIC but not read"),
        }
        Ok(())
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(e);
        return None;
    }
    for (seen, example) in [(topics.seen(), "topics = [\"orders\"]"), (group.seen(), "group = \"my-group\"")] {
        if !seen {
            let arg = example.split(' ').next().unwrap_or_default();
            cx.syn_error(syn::Error::new(Span::call_site(), format!("missing argument `{arg}`, e.g. {example}")));
        }
    }
    Some(RetryableArgs {
        topics: topics.get(),
        group: group.get(),
        attempts: attempts.get(),
        backoff: backoff.get(),
        multiplier: multiplier.get(),
        max_delay: max_delay.get(),
        linear_step: linear_step.get(),
        jitter: jitter.get(),
        suffix: suffix.get(),
        dlt_suffix: dlt_suffix.get(),
        dlt: dlt.get(),
        fixed_delay: fixed_delay.get(),
        max_retry_topics: max_retry_topics.get(),
        tiers: tiers.get(),
        group_naming: group_naming.get(),
        timeout: timeout.get(),
        blocking_attempts: blocking_attempts.get(),
        blocking_delay: blocking_delay.get(),
        auto_create_topics: auto_create_topics.get(),
        partitions: partitions.get(),
        replication: replication.get(),
        circuit_breaker: circuit_breaker.get(),
        key_concurrency: key_concurrency.get(),
        handler_timeout: handler_timeout.get(),
        stalled_after: stalled_after.get(),
        name: name.get(),
        krate: krate.get(),
    })
}

/// Reads the settings inside `circuit_breaker(...)`; errors go to `cx`.
fn breaker_settings(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<BreakerArgs> {
    let mut window = Attr::none(cx, WINDOW);
    let mut min_calls = Attr::none(cx, MIN_CALLS);
    let mut failure_rate = Attr::none(cx, FAILURE_RATE);
    let mut min_keys = Attr::none(cx, MIN_KEYS);
    let mut probe_delay = Attr::none(cx, PROBE_DELAY);
    let mut max_probe_delay = Attr::none(cx, MAX_PROBE_DELAY);
    meta.parse_nested_meta(|inner| {
        let Some(&key) = CIRCUIT_BREAKER_ARGS.iter().find(|s| inner.path == **s) else {
            return unknown(cx, &inner, CIRCUIT_BREAKER_ARGS);
        };
        let v: Expr = inner.value()?.parse()?;
        match key {
            WINDOW => window.set_opt(&v, duration(cx, &v, key)),
            MIN_CALLS => min_calls.set_opt(&v, lit_int(cx, &v, key)),
            FAILURE_RATE => failure_rate.set_opt(&v, lit_float(cx, &v, key)),
            MIN_KEYS => min_keys.set_opt(&v, lit_int(cx, &v, key)),
            PROBE_DELAY => probe_delay.set_opt(&v, duration(cx, &v, key)),
            MAX_PROBE_DELAY => max_probe_delay.set_opt(&v, duration(cx, &v, key)),
            _ => unreachable!("`{key}` is listed in CIRCUIT_BREAKER_ARGS but not read"),
        }
        Ok(())
    })?;
    Ok(BreakerArgs {
        window: window.get(),
        min_calls: min_calls.get(),
        failure_rate: failure_rate.get(),
        min_keys: min_keys.get(),
        probe_delay: probe_delay.get(),
        max_probe_delay: max_probe_delay.get(),
    })
}

/// Reads `#[dlt_handler(...)]`'s arguments; errors go to `cx`.
pub(crate) fn parse_dlt(cx: &Ctxt, args: TokenStream) -> Option<DltArgs> {
    let mut listener = Attr::none(cx, LISTENER);
    let mut name = Attr::none(cx, NAME);
    let mut krate = Attr::none(cx, CRATE);
    let parser = syn::meta::parser(|meta| {
        let Some(&key) = DLT_HANDLER.iter().find(|s| meta.path == **s) else {
            return unknown(cx, &meta, DLT_HANDLER);
        };
        let v: Expr = meta.value()?.parse()?;
        match key {
            LISTENER => listener.set_opt(&v, path(cx, &v, key)),
            NAME => name.set_opt(&v, lit_str(cx, &v, key).map(|s| s.value())),
            CRATE => krate.set_opt(&v, path_in_str(cx, &v, key)),
            _ => unreachable!("`{key}` is listed in DLT_HANDLER but not read"),
        }
        Ok(())
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(e);
        return None;
    }
    if !listener.seen() {
        cx.syn_error(syn::Error::new(
            Span::call_site(),
            "missing argument `listener`: the `#[retryable_topic]` handler whose DLT this reads, e.g. listener = consume",
        ));
    }
    Some(DltArgs { listener: listener.get()?, name: name.get(), krate: krate.get() })
}
