//! Code generation. The generated code only calls retry-core's public builders through
//! `<crate>::__private` (absolute paths, one table of re-exports), so every listener can
//! be written by hand just as well.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_quote, ItemFn, Path, ReturnType};

use crate::attr;
use crate::check;
use crate::ctxt::Ctxt;
use crate::signature::{self, Payload};

/// The item unchanged, followed by the errors (so IDEs keep seeing the function).
fn with_error(item: TokenStream, err: syn::Error) -> TokenStream {
    let mut tokens = item;
    tokens.extend(err.into_compile_error());
    tokens
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
    let payload = signature::handler(&cx, &f, what);
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
    let parse_and_check = |cx: &Ctxt| {
        let mut a = attr::parse_retryable(cx, args)?;
        let p = private(a.krate.take().map(|k| k.value));
        let checked = check::retryable(cx, &p, &a)?;
        Some((a, p, checked))
    };
    let (f, (a, p, checked), payload) = match parse_handler(item, "retryable_topic", parse_and_check) {
        Ok(parsed) => parsed,
        Err(tokens) => return tokens,
    };
    let (topics, group) = (&checked.topics, &checked.group);
    let calls = &checked.policy_calls;
    let listener_calls = &checked.listener_calls;
    let handler = handler_call(&p, &f, &payload);
    let listener_name = listener_name(&f, a.name.as_ref().map(|n| &n.value));
    let body = quote! {
        let policy = #p::RetryPolicy::builder() #(#calls)* .build()?;
        #p::Listener::builder(#listener_name)
            .topics([#(#topics),*])
            .group(#group)
            .policy(policy)
            .handler(#handler)
            #(#listener_calls)*
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
    let p = private(a.krate.take().map(|k| k.value));
    let source = &a.listener.value;
    let listener_name = listener_name(&f, a.name.as_ref().map(|n| &n.value));
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
            circuit_breaker(window = "5s", min_keys = 3),
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
