async fn on_dead(record: Record) -> Result<(), HandlerError> {
    Ok(())
}
#[allow(unused, clippy::all)]
const _: () = {
    fn __check(__payload: Record) {
        fn __assert_send<F: ::core::future::Future + ::core::marker::Send + 'static>(
            f: F,
        ) -> F {
            f
        }
        let __fut = __assert_send(on_dead(__payload));
        fn __assert_result<
            E: ::core::convert::Into<::retryable_topic::__private::HandlerError>,
        >(_: ::core::result::Result<(), E>) {}
        let _ = async move { __assert_result(__fut.await) };
    }
};
///The listener declared by `#[dlt_handler]` on the handler [`on_dead`](fn@on_dead): `on_dead::listener()` builds it.
#[allow(non_camel_case_types, missing_docs)]
struct on_dead {}
impl on_dead {
    /// Builds this handler's listener (topics, group, retry policy and handler).
    #[allow(dead_code)]
    fn listener() -> ::retryable_topic::__private::Result<
        ::retryable_topic::__private::Listener,
    > {
        consume::listener()?
            .dead_letter_listener(
                ::core::concat!(
                    ::core::module_path!(), "::", ::core::stringify!(on_dead)
                ),
            )?
            .handler(::retryable_topic::__private::record(on_dead))
            .build()
    }
}
::retryable_topic::__private::inventory::submit! {
    ::retryable_topic::__private::Registration { name :
    ::core::concat!(::core::module_path!(), "::", ::core::stringify!(on_dead)), build :
    on_dead::listener }
}
