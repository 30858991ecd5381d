async fn consume(forecast: WeatherForecast) -> Result<(), Error> {
    Ok(())
}
#[allow(unused, clippy::all)]
const _: () = {
    fn __check(__payload: WeatherForecast) {
        fn __assert_send<F: ::core::future::Future + ::core::marker::Send + 'static>(
            f: F,
        ) -> F {
            f
        }
        let __fut = __assert_send(consume(__payload));
        fn __assert_result<
            E: ::core::convert::Into<::retryable_topic::__private::HandlerError>,
        >(_: ::core::result::Result<(), E>) {}
        let _ = async move { __assert_result(__fut.await) };
        fn __assert_payload<T: ::retryable_topic::__private::DeserializeOwned>() {}
        __assert_payload::<WeatherForecast>();
    }
};
///The listener declared by `#[retryable_topic]` on the handler [`consume`](fn@consume): `consume::listener()` builds it.
#[allow(non_camel_case_types, missing_docs)]
struct consume {}
impl consume {
    /// Builds this handler's listener (topics, group, retry policy and handler).
    #[allow(dead_code)]
    fn listener() -> ::retryable_topic::__private::Result<
        ::retryable_topic::__private::Listener,
    > {
        let policy = ::retryable_topic::__private::RetryPolicy::builder()
            .attempts(900u32)
            .backoff(
                ::retryable_topic::__private::Backoff::fixed(
                    ::retryable_topic::__private::Duration::new(300u64, 0u32),
                ),
            )
            .retry_suffix("-retries")
            .dlt(::retryable_topic::__private::DltStrategy::NoDlt)
            .topic_strategy(::retryable_topic::__private::TopicStrategy::SingleTopic)
            .build()?;
        ::retryable_topic::__private::Listener::builder(
                ::core::concat!(
                    ::core::module_path!(), "::", ::core::stringify!(consume)
                ),
            )
            .topics(["weather-forecast"])
            .group("my-listener-group")
            .policy(policy)
            .handler(::retryable_topic::__private::json(consume))
            .build()
    }
}
::retryable_topic::__private::inventory::submit! {
    ::retryable_topic::__private::Registration { name :
    ::core::concat!(::core::module_path!(), "::", ::core::stringify!(consume)), build :
    consume::listener }
}
