pub async fn audit(record: Record) -> Result<(), HandlerError> {
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
        let __fut = __assert_send(audit(__payload));
        fn __assert_result<
            E: ::core::convert::Into<::my_crate::__private::HandlerError>,
        >(_: ::core::result::Result<(), E>) {}
        let _ = async move { __assert_result(__fut.await) };
    }
};
///The listener declared by `#[retryable_topic]` on the handler [`audit`](fn@audit): `audit::listener()` builds it.
#[allow(non_camel_case_types, missing_docs)]
pub struct audit {}
impl audit {
    /// Builds this handler's listener (topics, group, retry policy and handler).
    #[allow(dead_code)]
    pub fn listener() -> ::my_crate::__private::Result<::my_crate::__private::Listener> {
        let policy = ::my_crate::__private::RetryPolicy::builder()
            .backoff(
                ::my_crate::__private::Backoff::exponential(
                    ::my_crate::__private::Duration::new(1u64, 0u32),
                    2f64,
                    ::my_crate::__private::Duration::new(60u64, 0u32),
                ),
            )
            .jitter(0.1f64)
            .topic_strategy(::my_crate::__private::TopicStrategy::MultipleTopics)
            .max_retry_topics(4usize)
            .timeout(::my_crate::__private::Duration::new(3600u64, 0u32))
            .blocking_attempts(2u32)
            .auto_create_topics(::my_crate::__private::TopicSpec {
                partitions: ::core::option::Option::Some(3i32),
                replication: ::core::option::Option::None,
            })
            .build()?;
        ::my_crate::__private::Listener::builder("audit")
            .topics(["a", "b"])
            .group("g")
            .policy(policy)
            .handler(::my_crate::__private::record(audit))
            .circuit_breaker(
                ::my_crate::__private::CircuitBreaker::default()
                    .window(::my_crate::__private::Duration::new(5u64, 0u32))
                    .min_keys(3u32),
            )
            .build()
    }
}
::my_crate::__private::inventory::submit! {
    ::my_crate::__private::Registration { name : "audit", build : audit::listener }
}
