//! Handlers and their errors: what a listener calls for each record.
//!
//! A handler returns `Result<(), E>` with any `E: Into<HandlerError>`. Every
//! `std::error::Error` converts into a *retryable* [`HandlerError`]; say
//! [`HandlerError::fatal`] for failures a retry cannot heal (they go straight to the DLT).

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

pub use crate::failure::{BoxError, HandlerError};
use crate::record::Record;

/// Something that handles records. Implemented by [`json`] and [`record`] handlers, or by
/// hand.
pub trait Handler: Send + Sync + 'static {
    /// Handles one record.
    fn handle(&self, record: Record) -> BoxFuture<'static, Result<(), HandlerError>>;
}

impl<H: Handler + ?Sized> Handler for Arc<H> {
    fn handle(&self, record: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
        (**self).handle(record)
    }
}

/// A handler taking the payload deserialized from JSON; see [`json`].
pub struct JsonHandler<T, F> {
    f: F,
    _payload: PhantomData<fn() -> T>,
}

/// Wraps `f(payload)`: the payload is read as JSON into `T`; a payload that does not read
/// is a decode error (straight to the DLT) and `f` is not called.
pub fn json<T, F, Fut, E>(f: F) -> JsonHandler<T, F>
where
    T: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    JsonHandler { f, _payload: PhantomData }
}

impl<T, F, Fut, E> Handler for JsonHandler<T, F>
where
    T: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    fn handle(&self, record: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
        match record.json::<T>() {
            Ok(payload) => (self.f)(payload).map(|r| r.map_err(Into::into)).boxed(),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }
}

/// A handler taking the whole [`Record`]; see [`record`].
pub struct RecordHandler<F> {
    f: F,
}

/// Wraps `f(record)`, for key, headers and metadata access or non-JSON payloads.
pub fn record<F, Fut, E>(f: F) -> RecordHandler<F>
where
    F: Fn(Record) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    RecordHandler { f }
}

impl<F, Fut, E> Handler for RecordHandler<F>
where
    F: Fn(Record) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    fn handle(&self, record: Record) -> BoxFuture<'static, Result<(), HandlerError>> {
        (self.f)(record).map(|r| r.map_err(Into::into)).boxed()
    }
}
