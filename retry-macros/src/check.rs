//! The check pass: retry-core judges the arguments.
//!
//! The macro builds the real [`Backoff`], [`RetryPolicy`] and [`Topology`] with retry-core's
//! public builders at compile time (retry-core without its runtime) and maps each
//! `ConfigError` back to the token of the argument that set it. The builder calls made
//! here are the ones the expansion emits, so what was checked is what runs; no rule,
//! default or enum of the core is copied into the macro.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, ToTokens};

use retry_core::backoff::{Backoff, BackoffParts};
use retry_core::policy::RetryPolicyBuilder;
use retry_core::topology::Topology;
use retry_core::{CircuitBreaker, ConfigError, RetryPolicy, TopicSpec, TopicStrategy};

use crate::attr::{BreakerArgs, RetryableArgs, Spanned};
use crate::ctxt::Ctxt;
use crate::symbol::{Symbol, PARTITIONS, REPLICATION, TIERS, TOPICS};

/// What the check pass hands to the expansion.
pub(crate) struct Checked {
    /// The source topics.
    pub topics: Vec<syn::LitStr>,
    /// The consumer group.
    pub group: syn::LitStr,
    /// The calls on `RetryPolicy::builder()` for the arguments written (`.attempts(900)`, …).
    pub policy_calls: Vec<TokenStream>,
    /// The calls on `Listener::builder(..)` beside topics, group, policy and handler.
    pub listener_calls: Vec<TokenStream>,
}

/// The builder calls, made at compile time and recorded for the expansion.
struct Calls<'p> {
    p: &'p TokenStream,
    builder: RetryPolicyBuilder,
    tokens: Vec<TokenStream>,
}

impl Calls<'_> {
    fn call(&mut self, apply: impl FnOnce(RetryPolicyBuilder) -> RetryPolicyBuilder, tokens: TokenStream) {
        self.builder = apply(std::mem::take(&mut self.builder));
        self.tokens.push(tokens);
    }

    fn duration(&self, d: Duration) -> TokenStream {
        let (p, secs, nanos) = (self.p, d.as_secs(), d.subsec_nanos());
        quote!(#p::Duration::new(#secs, #nanos))
    }
}

/// The value of an argument, if written.
fn v<T: Copy>(arg: &Option<Spanned<T>>) -> Option<T> {
    arg.as_ref().map(|a| a.value)
}

/// A value of one of retry-core's enums as a path to its variant (`DltStrategy::NoDlt`).
fn variant<T: std::fmt::Debug>(p: &TokenStream, ty: &str, value: T) -> TokenStream {
    let (ty, v) = (format_ident!("{ty}"), format_ident!("{value:?}"));
    quote!(#p::#ty::#v)
}

/// Checks `#[retryable_topic]`'s arguments with retry-core; errors go to `cx`.
pub(crate) fn retryable(cx: &Ctxt, p: &TokenStream, a: &RetryableArgs) -> Option<Checked> {
    let mut errors = Vec::new();
    let mut calls = Calls { p, builder: RetryPolicy::builder(), tokens: Vec::new() };

    if let Some(n) = v(&a.attempts) {
        calls.call(|b| b.attempts(n), quote!(.attempts(#n)));
    }
    let parts =
        BackoffParts { delay: v(&a.backoff), multiplier: v(&a.multiplier), linear_step: v(&a.linear_step), max_delay: v(&a.max_delay) };
    if parts != BackoffParts::default() {
        match parts.build() {
            Ok(backoff) => {
                let tokens = backoff_tokens(&calls, backoff);
                calls.call(|b| b.backoff(backoff), quote!(.backoff(#tokens)));
            }
            Err(e) => errors.extend(e),
        }
    }
    if let Some(j) = v(&a.jitter) {
        calls.call(|b| b.jitter(j), quote!(.jitter(#j)));
    }
    if let Some(s) = &a.suffix {
        let s = s.value.clone();
        calls.call(|b| b.retry_suffix(s.clone()), quote!(.retry_suffix(#s)));
    }
    if let Some(s) = &a.dlt_suffix {
        let s = s.value.clone();
        calls.call(|b| b.dlt_suffix(s.clone()), quote!(.dlt_suffix(#s)));
    }
    if let Some(d) = v(&a.dlt) {
        let t = variant(p, "DltStrategy", d);
        calls.call(|b| b.dlt(d), quote!(.dlt(#t)));
    }
    if let Some(s) = v(&a.fixed_delay) {
        let t = variant(p, "TopicStrategy", s);
        calls.call(|b| b.topic_strategy(s), quote!(.topic_strategy(#t)));
    }
    if let Some(n) = v(&a.max_retry_topics) {
        calls.call(|b| b.max_retry_topics(n), quote!(.max_retry_topics(#n)));
    }
    if let Some(tiers) = &a.tiers {
        if v(&a.fixed_delay) == Some(TopicStrategy::Ladder) {
            let durations: Vec<Duration> = tiers.value.iter().map(|(_, d)| *d).collect();
            let tokens: Vec<TokenStream> = durations.iter().map(|d| calls.duration(*d)).collect();
            calls.call(|b| b.ladder_tiers(durations), quote!(.ladder_tiers([#(#tokens),*])));
        } else {
            // The macro's own syntax: tiers belong to the ladder.
            cx.error_spanned_by(&tiers.tokens, format!("`{TIERS}` only applies with `fixed_delay = ladder`"));
        }
    }
    if let Some(g) = v(&a.group_naming) {
        let t = variant(p, "GroupNaming", g);
        calls.call(|b| b.group_naming(g), quote!(.group_naming(#t)));
    }
    if let Some(d) = v(&a.timeout) {
        let t = calls.duration(d);
        calls.call(|b| b.timeout(d), quote!(.timeout(#t)));
    }
    if let Some(n) = v(&a.blocking_attempts) {
        calls.call(|b| b.blocking_attempts(n), quote!(.blocking_attempts(#n)));
    }
    if let Some(d) = v(&a.blocking_delay) {
        let t = calls.duration(d);
        calls.call(|b| b.blocking_delay(d), quote!(.blocking_delay(#t)));
    }
    let (partitions, replication) = (v(&a.partitions), v(&a.replication));
    if v(&a.auto_create_topics) == Some(true) {
        let spec = TopicSpec { partitions, replication };
        let opt = |n: Option<i32>| match n {
            Some(n) => quote!(::core::option::Option::Some(#n)),
            None => quote!(::core::option::Option::None),
        };
        let (pt, rt) = (opt(partitions), opt(replication));
        calls.call(|b| b.auto_create_topics(spec), quote!(.auto_create_topics(#p::TopicSpec { partitions: #pt, replication: #rt })));
    } else {
        // The macro's own syntax: these two are parts of `auto_create_topics`.
        for arg in [PARTITIONS, REPLICATION] {
            if let Some(t) = a.tokens_of(arg) {
                cx.error_spanned_by(t, format!("`{arg}` only applies with `auto_create_topics = true`"));
            }
        }
    }

    let policy = match std::mem::take(&mut calls.builder).check() {
        Ok(policy) => Some(policy),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    // The topics are checked under the policy as written, or the default one when it is
    // invalid (its own errors are already reported), so both kinds come at once.
    if let (Some(topics), Some(group)) = (&a.topics, &a.group) {
        let names: Vec<String> = topics.value.iter().map(|t| t.value()).collect();
        if let Err(e) = Topology::check(&names, &group.value.value(), &policy.clone().unwrap_or_default()) {
            errors.extend(e);
        }
    }
    let mut listener_calls = Vec::new();
    if let Some(b) = &a.circuit_breaker {
        let (breaker, tokens) = circuit_breaker(&calls, &b.value);
        match breaker.check() {
            Ok(()) => listener_calls.push(quote!(.circuit_breaker(#tokens))),
            Err(e) => errors.extend(e),
        }
    }
    if let Some(n) = v(&a.key_concurrency) {
        match retry_core::concurrency::check_key_concurrency(n) {
            Ok(n) => listener_calls.push(quote!(.key_concurrency(#n))),
            Err(e) => errors.push(e),
        }
    }
    // The call-time settings: each checked by its rule, then set by the setter of its name.
    type Check = fn(Duration) -> Result<Duration, ConfigError>;
    let call_time: [(Option<Duration>, Check, &str); 2] = [
        (v(&a.handler_timeout), retry_core::call_time::check_handler_timeout, "handler_timeout"),
        (v(&a.stalled_after), retry_core::call_time::check_stalled_after, "stalled_after"),
    ];
    for (d, check, setter) in call_time {
        match d.map(check) {
            Some(Ok(d)) => {
                let (t, setter) = (calls.duration(d), format_ident!("{setter}"));
                listener_calls.push(quote!(.#setter(#t)));
            }
            Some(Err(e)) => errors.push(e),
            None => {}
        }
    }
    let valid = errors.is_empty();
    for e in errors {
        report(cx, a, e);
    }
    let (Some(topics), Some(group)) = (&a.topics, &a.group) else { return None };
    policy.filter(|_| valid).map(|_| Checked {
        topics: topics.value.clone(),
        group: group.value.clone(),
        policy_calls: calls.tokens,
        listener_calls,
    })
}

/// The breaker the settings describe (built with retry-core's setters) and the tokens
/// that build it by hand.
fn circuit_breaker(calls: &Calls<'_>, b: &BreakerArgs) -> (CircuitBreaker, TokenStream) {
    let p = calls.p;
    let mut breaker = CircuitBreaker::default();
    let mut tokens = quote!(#p::CircuitBreaker::default());
    if let Some(d) = v(&b.window) {
        breaker = breaker.window(d);
        let t = calls.duration(d);
        tokens.extend(quote!(.window(#t)));
    }
    if let Some(n) = v(&b.min_calls) {
        breaker = breaker.min_calls(n);
        tokens.extend(quote!(.min_calls(#n)));
    }
    if let Some(r) = v(&b.failure_rate) {
        breaker = breaker.failure_rate(r);
        tokens.extend(quote!(.failure_rate(#r)));
    }
    if let Some(n) = v(&b.min_keys) {
        breaker = breaker.min_keys(n);
        tokens.extend(quote!(.min_keys(#n)));
    }
    if let Some(d) = v(&b.probe_delay) {
        breaker = breaker.probe_delay(d);
        let t = calls.duration(d);
        tokens.extend(quote!(.probe_delay(#t)));
    }
    if let Some(d) = v(&b.max_probe_delay) {
        breaker = breaker.max_probe_delay(d);
        let t = calls.duration(d);
        tokens.extend(quote!(.max_probe_delay(#t)));
    }
    (breaker, tokens)
}

/// The tokens that build `backoff` by hand.
fn backoff_tokens(calls: &Calls<'_>, backoff: Backoff) -> TokenStream {
    let p = calls.p;
    match backoff {
        Backoff::Fixed(d) => {
            let d = calls.duration(d);
            quote!(#p::Backoff::fixed(#d))
        }
        Backoff::Exponential { initial, multiplier, max } => {
            let (d, m) = (calls.duration(initial), calls.duration(max));
            quote!(#p::Backoff::exponential(#d, #multiplier, #m))
        }
        Backoff::Linear { initial, step, max } => {
            let (d, s, m) = (calls.duration(initial), calls.duration(step), calls.duration(max));
            quote!(#p::Backoff::linear(#d, #s, #m))
        }
        other => {
            let msg = format!("retryable_topic cannot emit the backoff {other:?}; build this listener by hand");
            quote!(::core::compile_error!(#msg))
        }
    }
}

/// Reports a core error at the token of the argument that set it (the element of a list
/// where it names one), or at the attribute when the argument was left at its default.
fn report(cx: &Ctxt, a: &RetryableArgs, e: ConfigError) {
    let Some(arg) = Symbol::of_setting(&e.setting) else {
        cx.syn_error(syn::Error::new(Span::call_site(), e.to_string()));
        return;
    };
    let element = match (arg, e.item) {
        (TOPICS, Some(i)) => a.topics.as_ref().and_then(|t| t.value.get(i)).map(ToTokens::into_token_stream),
        (TIERS, Some(i)) => a.tiers.as_ref().and_then(|t| t.value.get(i)).map(|(lit, _)| lit.to_token_stream()),
        _ => None,
    };
    match element.or_else(|| a.tokens_of(arg).cloned()) {
        Some(tokens) => cx.error_spanned_by(tokens, format!("`{arg}`: {}", e.reason)),
        None => cx.syn_error(syn::Error::new(Span::call_site(), format!("`{arg}` (left at its default): {}", e.reason))),
    }
}
