//! Code generation. The generated code only calls retry-core's public builders through
//! `<crate>::__private` (absolute paths, one table of re-exports), so every listener can
//! be written by hand just as well.

use std::time::Duration;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_quote, ItemFn, Path, ReturnType};

use crate::attr::{self, DltStrategy, FixedDelay, RetryableArgs};
use crate::check::{self, Payload};
use crate::ctxt::Ctxt;

/// The item unchanged, followed by the errors (so IDEs keep seeing the function).
fn with_error(item: TokenStream, err: syn::Error) -> TokenStream {
    let mut tokens = item;
    tokens.extend(err.into_compile_error());
    tokens
}

fn duration(p: &TokenStream, d: Duration) -> TokenStream {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    quote!(#p::Duration::new(#secs, #nanos))
}

fn private(krate: Option<Path>) -> TokenStream {
    let krate: Path = krate.unwrap_or_else(|| parse_quote!(::retryable_topic));
    quote!(#krate::__private)
}

/// Compile-time checks placed on the user's own tokens, so a wrong handler is reported
/// where it is written: the future must be `Send + 'static`, the error convertible into a
/// `HandlerError`, a JSON payload `DeserializeOwned`.
fn assertions(p: &TokenStream, f: &ItemFn, payload: &Payload) -> TokenStream {
    let ident = &f.sig.ident;
    let ty = payload.ty();
    let out_span = match &f.sig.output {
        ReturnType::Type(_, t) => t.span(),
        ReturnType::Default => ident.span(),
    };
    let send = quote_spanned! {ident.span()=>
        fn __assert_send<F: ::core::future::Future + ::core::marker::Send + 'static>(f: F) -> F { f }
        let __fut = __assert_send(#ident(__payload));
    };
    let result = quote_spanned! {out_span=>
        fn __assert_result<E: ::core::convert::Into<#p::HandlerError>>(_: ::core::result::Result<(), E>) {}
        let _ = async move { __assert_result(__fut.await) };
    };
    let de = match payload {
        Payload::Json(_) => quote_spanned! {ty.span()=>
            fn __assert_payload<T: #p::DeserializeOwned>() {}
            __assert_payload::<#ty>();
        },
        Payload::Record(_) => quote!(),
    };
    quote! {
        #[allow(unused, clippy::all)]
        const _: () = {
            fn __check(__payload: #ty) {
                #send
                #result
                #de
            }
        };
    }
}

fn handler_call(p: &TokenStream, f: &ItemFn, payload: &Payload) -> TokenStream {
    let ident = &f.sig.ident;
    match payload {
        Payload::Json(_) => quote!(#p::json(#ident)),
        Payload::Record(_) => quote!(#p::record(#ident)),
    }
}

/// The listener's name: `name = "..."`, or the handler's path (`my_app::consume`).
fn listener_name(f: &ItemFn, name: Option<&String>) -> TokenStream {
    let ident = &f.sig.ident;
    match name {
        Some(n) => quote!(#n),
        None => quote!(::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident))),
    }
}

/// The listener struct beside the function, and its registration.
fn registration(p: &TokenStream, f: &ItemFn, name: &TokenStream, body: TokenStream, what: &str) -> TokenStream {
    let ident = &f.sig.ident;
    let vis = &f.vis;
    let doc = format!("The listener declared by `#[{what}]` on the handler [`{ident}`](fn@{ident}): `{ident}::listener()` builds it.");
    quote! {
        #[doc = #doc]
        #[allow(non_camel_case_types, missing_docs)]
        #vis struct #ident {}

        impl #ident {
            /// Builds this handler's listener (topics, group, retry policy and handler).
            #[allow(dead_code)]
            #vis fn listener() -> #p::Result<#p::Listener> {
                #body
            }
        }

        #p::inventory::submit! {
            #p::Registration { name: #name, build: #ident::listener }
        }
    }
}

fn policy(p: &TokenStream, a: &RetryableArgs) -> TokenStream {
    let mut calls = Vec::new();
    if let Some(n) = a.attempts {
        calls.push(quote!(.attempts(#n)));
    }
    let initial = a.backoff.unwrap_or(Duration::from_secs(1));
    let cap = a.max_delay.unwrap_or(Duration::from_secs(30)).max(initial);
    let (d0, dmax) = (duration(p, initial), duration(p, cap));
    let backoff = match (a.multiplier, a.linear_step) {
        (Some(m), _) => quote!(#p::Backoff::exponential(#d0, #m, #dmax)),
        (None, Some(step)) => {
            let step = duration(p, step);
            quote!(#p::Backoff::linear(#d0, #step, #dmax))
        }
        (None, None) => quote!(#p::Backoff::fixed(#d0)),
    };
    calls.push(quote!(.backoff(#backoff)));
    if let Some(j) = a.jitter {
        calls.push(quote!(.jitter(#j)));
    }
    if let Some(s) = &a.suffix {
        calls.push(quote!(.retry_suffix(#s)));
    }
    if let Some(s) = &a.dlt_suffix {
        calls.push(quote!(.dlt_suffix(#s)));
    }
    if let Some(d) = a.dlt {
        let v = match d {
            DltStrategy::AlwaysRetryOnError => quote!(AlwaysRetryOnError),
            DltStrategy::FailOnError => quote!(FailOnError),
            DltStrategy::NoDlt => quote!(NoDlt),
        };
        calls.push(quote!(.dlt(#p::DltStrategy::#v)));
    }
    if let Some(t) = a.fixed_delay {
        let v = match t {
            FixedDelay::SingleTopic => quote!(SingleTopic),
            FixedDelay::MultipleTopics => quote!(MultipleTopics),
        };
        calls.push(quote!(.topic_strategy(#p::TopicStrategy::#v)));
    }
    if let Some(n) = a.max_retry_topics {
        calls.push(quote!(.max_retry_topics(#n)));
    }
    if let Some(g) = a.group_naming {
        let v = match g {
            retry_core::GroupNaming::PerGroup => quote!(PerGroup),
            retry_core::GroupNaming::Shared => quote!(Shared),
        };
        calls.push(quote!(.group_naming(#p::GroupNaming::#v)));
    }
    if let Some(t) = a.timeout {
        let t = duration(p, t);
        calls.push(quote!(.timeout(#t)));
    }
    if a.blocking_attempts.is_some() || a.blocking_delay.is_some() {
        let n = a.blocking_attempts.unwrap_or(0);
        let d = duration(p, a.blocking_delay.unwrap_or(Duration::from_millis(100)));
        calls.push(quote!(.blocking_attempts(#n, #d)));
    }
    if a.auto_create_topics {
        let opt = |v: Option<i32>| match v {
            Some(n) => quote!(::core::option::Option::Some(#n)),
            None => quote!(::core::option::Option::None),
        };
        let (parts, repl) = (opt(a.partitions), opt(a.replication));
        calls.push(quote!(.auto_create_topics(#p::TopicSpec { partitions: #parts, replication: #repl })));
    }
    quote!(#p::RetryPolicy::builder() #(#calls)* .build()?)
}

/// Parses the annotated fn, its arguments (`parse_args`) and its signature, reporting every
/// error at once; `Err` is the original fn with those errors, so the fn is still emitted.
fn parse_handler<A>(
    item: TokenStream,
    what: &str,
    parse_args: impl FnOnce(&Ctxt) -> Option<A>,
) -> Result<(ItemFn, A, Payload), TokenStream> {
    let f: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => return Err(with_error(item, syn::Error::new(e.span(), format!("#[{what}] goes on an `async fn` handler")))),
    };
    let cx = Ctxt::new();
    let parsed = parse_args(&cx);
    let payload = check::handler(&cx, &f, what);
    if let Err(e) = cx.check() {
        return Err(with_error(item, e));
    }
    let (Some(a), Some(payload)) = (parsed, payload) else { unreachable!("errors were reported above") };
    Ok((f, a, payload))
}

/// The fn as written, the compile-time assertions on its signature, and the registration
/// of the listener that `body` builds.
fn emit(p: &TokenStream, f: &ItemFn, payload: &Payload, listener_name: &TokenStream, body: TokenStream, what: &str) -> TokenStream {
    let checks = assertions(p, f, payload);
    let reg = registration(p, f, listener_name, body, what);
    quote! {
        #f
        #checks
        #reg
    }
}

/// `#[retryable_topic]`.
pub(crate) fn retryable_topic(args: TokenStream, item: TokenStream) -> TokenStream {
    let (f, mut a, payload) = match parse_handler(item, "retryable_topic", |cx| attr::parse_retryable(cx, args)) {
        Ok(parsed) => parsed,
        Err(tokens) => return tokens,
    };
    let p = private(a.krate.take());
    let topics = &a.topics;
    let group = &a.group;
    let policy = policy(&p, &a);
    let handler = handler_call(&p, &f, &payload);
    let listener_name = listener_name(&f, a.name.as_ref());
    let body = quote! {
        let policy = #policy;
        #p::Listener::builder(#listener_name)
            .topics([#(#topics),*])
            .group(#group)
            .policy(policy)
            .handler(#handler)
            .build()
    };
    emit(&p, &f, &payload, &listener_name, body, "retryable_topic")
}

/// `#[dlt_handler]`.
pub(crate) fn dlt_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    let (f, mut a, payload) = match parse_handler(item, "dlt_handler", |cx| attr::parse_dlt(cx, args)) {
        Ok(parsed) => parsed,
        Err(tokens) => return tokens,
    };
    let p = private(a.krate.take());
    let source = &a.listener;
    let listener_name = listener_name(&f, a.name.as_ref());
    let handler = handler_call(&p, &f, &payload);
    let body = quote_spanned! {source.span()=>
        #source::listener()?.dead_letter_listener(#listener_name)?.handler(#handler).build()
    };
    emit(&p, &f, &payload, &listener_name, body, "dlt_handler")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pretty(tokens: TokenStream) -> String {
        prettyplease::unparse(&syn::parse2(tokens).expect("expansion parses as a file"))
    }

    /// Compares an expansion with its snapshot in `tests/expand/`; `UPDATE_EXPAND=1`
    /// rewrites the snapshot.
    fn check_snapshot(name: &str, got: TokenStream) {
        let got = pretty(got);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand").join(format!("{name}.expanded.rs"));
        if std::env::var_os("UPDATE_EXPAND").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
        }
        let want =
            std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing snapshot {}; run with UPDATE_EXPAND=1", path.display()));
        assert_eq!(got, want, "expansion of {name} changed; review and run with UPDATE_EXPAND=1");
    }

    #[test]
    fn seed_expansion() {
        let args = quote!(
            topics = ["weather-forecast"],
            group = "my-listener-group",
            attempts = 900,
            backoff = "5m",
            suffix = "-retries",
            dlt = no_dlt,
            fixed_delay = single_topic
        );
        let item = quote!(
            async fn consume(forecast: WeatherForecast) -> Result<(), Error> {
                Ok(())
            }
        );
        check_snapshot("seed", retryable_topic(args, item));
    }

    #[test]
    fn record_and_exponential_expansion() {
        let args = quote!(
            topics = ["a", "b"],
            group = "g",
            backoff = "1s",
            multiplier = 2.0,
            max_delay = "1m",
            jitter = 0.1,
            fixed_delay = multiple_topics,
            max_retry_topics = 4,
            timeout = "1h",
            blocking_attempts = 2,
            auto_create_topics = true,
            partitions = 3,
            name = "audit",
            crate = "::my_crate"
        );
        let item = quote!(
            pub async fn audit(record: Record) -> Result<(), HandlerError> {
                Ok(())
            }
        );
        check_snapshot("record_exponential", retryable_topic(args, item));
    }

    #[test]
    fn dlt_expansion() {
        let item = quote!(
            async fn on_dead(record: Record) -> Result<(), HandlerError> {
                Ok(())
            }
        );
        check_snapshot("dlt", dlt_handler(quote!(listener = consume), item));
    }

    #[test]
    fn errors_keep_the_function() {
        let out = retryable_topic(
            quote!(attempts = 0),
            quote!(
                async fn f(x: u8) -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .to_string();
        assert!(out.contains("async fn f"), "{out}");
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("at least 1") && out.contains("missing argument `topics`"), "{out}");
    }
}
