//! [`HandlerError`]: a handler's failure, classified as retryable, fatal or undecodable.
//!
//! It sits below both [`handler`](crate::handler) and [`record`](crate::record), so neither
//! imports the other for it.

use crate::headers::FailureKind;

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
