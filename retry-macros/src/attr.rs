//! Parsing and compile-time validation of the macro arguments.
//!
//! Each argument is read with `syn::meta::parser`; values are checked with the very
//! functions retry-core uses at run time (durations, topic names, suffixes), and every
//! error points at its token.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Expr, ExprArray, ExprLit, Ident, Lit, LitStr, Path};

use retry_core::duration::parse_duration;
use retry_core::topics::{self, GroupNaming};

use crate::ctxt::Ctxt;

/// Every argument of `#[retryable_topic]`, in documentation order.
pub(crate) const RETRYABLE_KEYS: &[&str] = &[
    "topics",
    "group",
    "attempts",
    "backoff",
    "multiplier",
    "max_delay",
    "linear_step",
    "jitter",
    "suffix",
    "dlt_suffix",
    "dlt",
    "fixed_delay",
    "max_retry_topics",
    "group_naming",
    "timeout",
    "blocking_attempts",
    "blocking_delay",
    "auto_create_topics",
    "partitions",
    "replication",
    "name",
    "crate",
];

/// Every argument of `#[dlt_handler]`.
pub(crate) const DLT_KEYS: &[&str] = &["listener", "name", "crate"];

/// A value that may be set once; a second setting is an error at its token
/// (serde_derive's `Attr<T>`).
pub(crate) struct Attr<'c, T> {
    cx: &'c Ctxt,
    name: &'static str,
    value: Option<(T, TokenStream)>,
}

impl<'c, T> Attr<'c, T> {
    pub(crate) fn none(cx: &'c Ctxt, name: &'static str) -> Self {
        Attr { cx, name, value: None }
    }

    pub(crate) fn set<A: ToTokens>(&mut self, at: A, value: T) {
        let tokens = at.into_token_stream();
        if self.value.is_some() {
            self.cx.error_spanned_by(tokens, format!("duplicate argument `{}`", self.name));
        } else {
            self.value = Some((value, tokens));
        }
    }

    pub(crate) fn get(self) -> Option<T> {
        self.value.map(|(v, _)| v)
    }

    pub(crate) fn get_with_tokens(self) -> Option<(T, TokenStream)> {
        self.value
    }
}

/// DLT strategy as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DltStrategy {
    AlwaysRetryOnError,
    FailOnError,
    NoDlt,
}

/// Retry-topic layout as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FixedDelay {
    SingleTopic,
    MultipleTopics,
}

/// The validated arguments of `#[retryable_topic]`.
pub(crate) struct RetryableArgs {
    pub topics: Vec<String>,
    pub group: String,
    pub attempts: Option<u32>,
    pub backoff: Option<Duration>,
    pub multiplier: Option<f64>,
    pub max_delay: Option<Duration>,
    pub linear_step: Option<Duration>,
    pub jitter: Option<f64>,
    pub suffix: Option<String>,
    pub dlt_suffix: Option<String>,
    pub dlt: Option<DltStrategy>,
    pub fixed_delay: Option<FixedDelay>,
    pub max_retry_topics: Option<usize>,
    pub group_naming: Option<GroupNaming>,
    pub timeout: Option<Duration>,
    pub blocking_attempts: Option<u32>,
    pub blocking_delay: Option<Duration>,
    pub auto_create_topics: bool,
    pub partitions: Option<i32>,
    pub replication: Option<i32>,
    pub name: Option<String>,
    pub krate: Option<Path>,
}

/// The validated arguments of `#[dlt_handler]`.
pub(crate) struct DltArgs {
    pub listener: Path,
    pub name: Option<String>,
    pub krate: Option<Path>,
}

fn unknown(meta: &ParseNestedMeta<'_>, keys: &[&str]) -> syn::Error {
    let got = meta.path.to_token_stream().to_string().replace(' ', "");
    meta.error(format!("unknown argument `{got}`; expected one of: {}", keys.join(", ")))
}

fn lit_str(cx: &Ctxt, e: &Expr, key: &str) -> Option<LitStr> {
    match e {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s.clone()),
        other => {
            cx.error_spanned_by(other, format!("`{key}` takes a string literal, e.g. {key} = \"...\""));
            None
        }
    }
}

fn lit_int<N>(cx: &Ctxt, e: &Expr, key: &str) -> Option<(N, Expr)>
where
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    match e {
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => match i.base10_parse::<N>() {
            Ok(n) => Some((n, e.clone())),
            Err(err) => {
                cx.error_spanned_by(i, format!("`{key}`: {err}"));
                None
            }
        },
        other => {
            cx.error_spanned_by(other, format!("`{key}` takes an integer literal, e.g. {key} = 3"));
            None
        }
    }
}

fn lit_float(cx: &Ctxt, e: &Expr, key: &str) -> Option<f64> {
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

fn lit_bool(cx: &Ctxt, e: &Expr, key: &str) -> Option<bool> {
    match e {
        Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) => Some(b.value),
        other => {
            cx.error_spanned_by(other, format!("`{key}` takes `true` or `false`"));
            None
        }
    }
}

fn duration(cx: &Ctxt, e: &Expr, key: &str) -> Option<Duration> {
    let s = lit_str(cx, e, key)?;
    parse_duration(&s.value()).map_err(|err| cx.error_spanned_by(&s, format!("`{key}`: {err}"))).ok()
}

fn ident_choice<T: Copy>(cx: &Ctxt, e: &Expr, key: &str, choices: &[(&str, T)]) -> Option<T> {
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    let expected = format!("`{key}` takes one of: {}", names.join(", "));
    match e {
        Expr::Path(p) => match p.path.get_ident() {
            Some(id) => match choices.iter().find(|(n, _)| id == n) {
                Some((_, v)) => Some(*v),
                None => {
                    cx.error_spanned_by(id, format!("unknown `{key}` value `{id}`; {expected}"));
                    None
                }
            },
            None => {
                cx.error_spanned_by(p, expected);
                None
            }
        },
        other => {
            cx.error_spanned_by(other, expected);
            None
        }
    }
}

fn topic_list(cx: &Ctxt, e: &Expr) -> Option<Vec<(String, LitStr)>> {
    let items: Vec<&Expr> = match e {
        Expr::Array(ExprArray { elems, .. }) => elems.iter().collect(),
        Expr::Lit(ExprLit { lit: Lit::Str(_), .. }) => vec![e],
        other => {
            cx.error_spanned_by(other, "`topics` takes a list of string literals, e.g. topics = [\"orders\"]");
            return None;
        }
    };
    if items.is_empty() {
        cx.error_spanned_by(e, "`topics` needs at least one topic");
        return None;
    }
    let mut out = Vec::new();
    for item in items {
        let s = lit_str(cx, item, "topics")?;
        match topics::validate_topic_name(&s.value()) {
            Ok(()) => out.push((s.value(), s)),
            Err(err) => cx.error_spanned_by(&s, err),
        }
    }
    Some(out)
}

/// Parses `#[retryable_topic(...)]`'s arguments. Errors go to `cx`; `None` when a
/// required argument is missing or invalid.
pub(crate) fn parse_retryable(cx: &Ctxt, args: TokenStream) -> Option<RetryableArgs> {
    let mut topics_ = Attr::none(cx, "topics");
    let mut group = Attr::none(cx, "group");
    let mut attempts = Attr::none(cx, "attempts");
    let mut backoff = Attr::none(cx, "backoff");
    let mut multiplier = Attr::none(cx, "multiplier");
    let mut max_delay = Attr::none(cx, "max_delay");
    let mut linear_step = Attr::none(cx, "linear_step");
    let mut jitter = Attr::none(cx, "jitter");
    let mut suffix = Attr::none(cx, "suffix");
    let mut dlt_suffix = Attr::none(cx, "dlt_suffix");
    let mut dlt = Attr::none(cx, "dlt");
    let mut fixed_delay = Attr::none(cx, "fixed_delay");
    let mut max_retry_topics = Attr::none(cx, "max_retry_topics");
    let mut group_naming = Attr::none(cx, "group_naming");
    let mut timeout = Attr::none(cx, "timeout");
    let mut blocking_attempts = Attr::none(cx, "blocking_attempts");
    let mut blocking_delay = Attr::none(cx, "blocking_delay");
    let mut auto_create = Attr::none(cx, "auto_create_topics");
    let mut partitions = Attr::none(cx, "partitions");
    let mut replication = Attr::none(cx, "replication");
    let mut name = Attr::none(cx, "name");
    let mut krate = Attr::none(cx, "crate");
    let mut all_parsed = true;

    let parser = syn::meta::parser(|meta| {
        let Some(key) = meta.path.get_ident().map(Ident::to_string) else {
            return Err(unknown(&meta, RETRYABLE_KEYS));
        };
        if !RETRYABLE_KEYS.contains(&key.as_str()) {
            return Err(unknown(&meta, RETRYABLE_KEYS));
        }
        let value: Expr = meta.value()?.parse()?;
        match key.as_str() {
            "topics" => {
                if let Some(t) = topic_list(cx, &value) {
                    topics_.set(&value, t);
                } else {
                    all_parsed = false;
                }
            }
            "group" => {
                if let Some(s) = lit_str(cx, &value, "group") {
                    if s.value().is_empty() {
                        cx.error_spanned_by(&s, "`group` must not be empty");
                    }
                    group.set(&value, s);
                } else {
                    all_parsed = false;
                }
            }
            "attempts" => {
                if let Some((n, e)) = lit_int::<u32>(cx, &value, "attempts") {
                    if n < 1 {
                        cx.error_spanned_by(&e, "`attempts` must be at least 1 (the first attempt counts)");
                    }
                    attempts.set(&value, n);
                }
            }
            "backoff" => duration(cx, &value, "backoff").into_iter().for_each(|d| backoff.set(&value, d)),
            "max_delay" => duration(cx, &value, "max_delay").into_iter().for_each(|d| max_delay.set(&value, d)),
            "linear_step" => duration(cx, &value, "linear_step").into_iter().for_each(|d| linear_step.set(&value, d)),
            "timeout" => duration(cx, &value, "timeout").into_iter().for_each(|d| timeout.set(&value, d)),
            "blocking_delay" => duration(cx, &value, "blocking_delay").into_iter().for_each(|d| blocking_delay.set(&value, d)),
            "multiplier" => {
                if let Some(m) = lit_float(cx, &value, "multiplier") {
                    if !(m >= 1.0 && m.is_finite()) {
                        cx.error_spanned_by(&value, "`multiplier` must be at least 1.0");
                    }
                    multiplier.set(&value, m);
                }
            }
            "jitter" => {
                if let Some(j) = lit_float(cx, &value, "jitter") {
                    if !(0.0..=1.0).contains(&j) {
                        cx.error_spanned_by(&value, "`jitter` must be within 0.0..=1.0");
                    }
                    jitter.set(&value, j);
                }
            }
            "suffix" | "dlt_suffix" => {
                if let Some(s) = lit_str(cx, &value, &key) {
                    if let Err(err) = topics::validate_suffix(&s.value()) {
                        cx.error_spanned_by(&s, format!("`{key}`: {err}"));
                    }
                    if key == "suffix" {
                        suffix.set(&value, s.value())
                    } else {
                        dlt_suffix.set(&value, s.value())
                    }
                }
            }
            "dlt" => {
                let choices = [
                    ("always_retry_on_error", DltStrategy::AlwaysRetryOnError),
                    ("fail_on_error", DltStrategy::FailOnError),
                    ("no_dlt", DltStrategy::NoDlt),
                ];
                if let Some(d) = ident_choice(cx, &value, "dlt", &choices) {
                    dlt.set(&value, d);
                }
            }
            "fixed_delay" => {
                let choices = [("single_topic", FixedDelay::SingleTopic), ("multiple_topics", FixedDelay::MultipleTopics)];
                if let Some(f) = ident_choice(cx, &value, "fixed_delay", &choices) {
                    fixed_delay.set(&value, f);
                }
            }
            "group_naming" => {
                let choices = [("per_group", GroupNaming::PerGroup), ("shared", GroupNaming::Shared)];
                if let Some(g) = ident_choice(cx, &value, "group_naming", &choices) {
                    group_naming.set(&value, g);
                }
            }
            "max_retry_topics" => {
                if let Some((n, e)) = lit_int::<usize>(cx, &value, &key) {
                    if n < 1 {
                        cx.error_spanned_by(&e, "`max_retry_topics` must be at least 1");
                    }
                    max_retry_topics.set(&value, n);
                }
            }
            "blocking_attempts" => {
                if let Some((n, _)) = lit_int::<u32>(cx, &value, &key) {
                    blocking_attempts.set(&value, n);
                }
            }
            "partitions" | "replication" => {
                if let Some((n, e)) = lit_int::<i32>(cx, &value, &key) {
                    if n < 1 {
                        cx.error_spanned_by(&e, format!("`{key}` must be at least 1"));
                    }
                    if key == "partitions" {
                        partitions.set(&value, n)
                    } else {
                        replication.set(&value, n)
                    }
                }
            }
            "auto_create_topics" => {
                if let Some(b) = lit_bool(cx, &value, &key) {
                    auto_create.set(&value, b);
                }
            }
            "name" => {
                if let Some(s) = lit_str(cx, &value, "name") {
                    name.set(&value, s.value());
                }
            }
            "crate" => {
                if let Some(s) = lit_str(cx, &value, "crate") {
                    match s.parse::<Path>() {
                        Ok(p) => krate.set(&value, p),
                        Err(_) => cx.error_spanned_by(&s, "`crate` takes a path, e.g. crate = \"::retryable_topic\""),
                    }
                }
            }
            _ => unreachable!("key checked against RETRYABLE_KEYS"),
        }
        Ok(())
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(e);
        return None;
    }

    let (multiplier, linear_step, max_delay) = (multiplier.get_with_tokens(), linear_step.get_with_tokens(), max_delay.get_with_tokens());
    if let (Some(_), Some((_, t))) = (&multiplier, &linear_step) {
        cx.error_spanned_by(t, "`linear_step` and `multiplier` exclude each other: pick linear or exponential backoff");
    }
    if let (None, None, Some((_, t))) = (&multiplier, &linear_step, &max_delay) {
        cx.error_spanned_by(t, "`max_delay` caps a growing backoff: add `multiplier` (exponential) or `linear_step` (linear)");
    }
    let topics_ = topics_.get();
    let group = group.get();
    let suffix = suffix.get();
    let dlt_suffix = dlt_suffix.get();
    let group_naming = group_naming.get();
    let (partitions, replication) = (partitions.get_with_tokens(), replication.get_with_tokens());
    let auto_create_topics = auto_create.get().unwrap_or(false);
    if !auto_create_topics {
        for (_, tokens) in partitions.iter().chain(replication.iter()) {
            cx.error_spanned_by(tokens, "`partitions` and `replication` only apply with `auto_create_topics = true`");
        }
    }
    if topics_.is_none() && all_parsed {
        cx.syn_error(syn::Error::new(Span::call_site(), "missing argument `topics`, e.g. topics = [\"orders\"]"));
    }
    if group.is_none() && all_parsed {
        cx.syn_error(syn::Error::new(Span::call_site(), "missing argument `group`, e.g. group = \"my-group\""));
    }
    let (topics_, group) = (topics_?, group?);
    // The derived names must be legal too: checked with the run-time rule.
    let retry_suffix = suffix.clone().unwrap_or_else(|| "-retries".into());
    let dlt_sfx = dlt_suffix.clone().unwrap_or_else(|| "-dlt".into());
    let naming = group_naming.unwrap_or_default();
    for (t, lit) in &topics_ {
        let derived = topics::retry_topic(t, &retry_suffix, &group.value(), naming, Some(99))
            .and_then(|_| topics::dlt_topic(t, &dlt_sfx, &group.value(), naming));
        if let Err(err) = derived {
            cx.error_spanned_by(&group, format!("retry/DLT topic names derived from `{}` and this group are invalid: {err}", lit.value()));
        }
    }
    Some(RetryableArgs {
        topics: topics_.into_iter().map(|(t, _)| t).collect(),
        group: group.value(),
        attempts: attempts.get(),
        backoff: backoff.get(),
        multiplier: multiplier.map(|(m, _)| m),
        max_delay: max_delay.map(|(d, _)| d),
        linear_step: linear_step.map(|(d, _)| d),
        jitter: jitter.get(),
        suffix,
        dlt_suffix,
        dlt: dlt.get(),
        fixed_delay: fixed_delay.get(),
        max_retry_topics: max_retry_topics.get(),
        group_naming,
        timeout: timeout.get(),
        blocking_attempts: blocking_attempts.get(),
        blocking_delay: blocking_delay.get(),
        auto_create_topics,
        partitions: partitions.map(|(n, _)| n),
        replication: replication.map(|(n, _)| n),
        name: name.get(),
        krate: krate.get(),
    })
}

/// Parses `#[dlt_handler(...)]`'s arguments.
pub(crate) fn parse_dlt(cx: &Ctxt, args: TokenStream) -> Option<DltArgs> {
    let mut listener = Attr::none(cx, "listener");
    let mut name = Attr::none(cx, "name");
    let mut krate = Attr::none(cx, "crate");
    let parser = syn::meta::parser(|meta| {
        let key = meta.path.get_ident().map(Ident::to_string).unwrap_or_default();
        match key.as_str() {
            "listener" => {
                let p: Path = meta.value()?.parse()?;
                listener.set(&p, p.clone());
            }
            "name" => {
                let s: LitStr = meta.value()?.parse()?;
                name.set(&s, s.value());
            }
            "crate" => {
                let s: LitStr = meta.value()?.parse()?;
                let p: Path = s.parse()?;
                krate.set(&s, p);
            }
            _ => return Err(unknown(&meta, DLT_KEYS)),
        }
        Ok(())
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(e);
        return None;
    }
    let Some(listener) = listener.get() else {
        cx.syn_error(syn::Error::new(
            Span::call_site(),
            "missing argument `listener`: the `#[retryable_topic]` handler whose DLT this reads, e.g. listener = consume",
        ));
        return None;
    };
    Some(DltArgs { listener, name: name.get(), krate: krate.get() })
}
