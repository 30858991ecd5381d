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

use crate::headers::FailureKind;
use crate::record::Record;

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A handler's failure, classified.
pub struct HandlerError {
    kind: FailureKind,
    source: BoxError,
}

impl HandlerError {
    /// A failure that may heal (an outage): the record is retried.
    pub fn retryable(error: impl Into<BoxError>) -> Self {
        HandlerError { kind: FailureKind::Retryable, source: error.into() }
    }
    /// A failure no retry can heal (an outlier): the record goes straight to the DLT.
    pub fn fatal(error: impl Into<BoxError>) -> Self {
        HandlerError { kind: FailureKind::Fatal, source: error.into() }
    }
    /// The payload could not be read: straight to the DLT.
    pub fn decode(error: impl Into<BoxError>) -> Self {
        HandlerError { kind: FailureKind::Decode, source: error.into() }
    }
    /// The classification.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }
    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        self.kind == FailureKind::Retryable
    }
    /// The underlying error.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::retryable(error)
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.source)
    }
}

impl std::fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerError").field("kind", &self.kind).field("source", &self.source).finish()
    }
}

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
