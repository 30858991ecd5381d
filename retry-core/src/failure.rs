//! [`HandlerError`]: a handler's failure, classified as retryable, fatal or undecodable.
//!
//! It sits below both [`handler`](crate::handler) and [`record`](crate::record), so neither
//! imports the other for it.

use std::time::Duration;

use crate::headers::FailureKind;

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A handler's failure, classified.
pub struct HandlerError {
    kind: FailureKind,
    source: BoxError,
    delay: Option<Duration>,
}

impl HandlerError {
    /// A failure that may heal (an outage): the record is retried.
    pub fn retryable(error: impl Into<BoxError>) -> Self {
        HandlerError { kind: FailureKind::Retryable, source: error.into(), delay: None }
    }
    /// A failure no retry can heal (an outlier): the record goes straight to the DLT.
    pub fn fatal(error: impl Into<BoxError>) -> Self {
        HandlerError { kind: FailureKind::Fatal, source: error.into(), delay: None }
    }
    /// The payload could not be read: straight to the DLT.
    pub fn decode(error: impl Into<BoxError>) -> Self {
        HandlerError { kind: FailureKind::Decode, source: error.into(), delay: None }
    }
    /// Not now, but in `delay`: the record is retried like a retryable failure, due after
    /// `delay` instead of the policy's backoff (capped at the backoff's longest delay), and
    /// the attempt counts. For a handler that knows when to come back (a rate limit's
    /// `Retry-After`, a scheduled delivery). It is counted as `deferred`, not `failed`, and
    /// never suggests an outage to the circuit breaker.
    pub fn retry_after(error: impl Into<BoxError>, delay: Duration) -> Self {
        HandlerError { kind: FailureKind::Retryable, source: error.into(), delay: Some(delay) }
    }
    /// The delay asked for with [`retry_after`](Self::retry_after).
    pub fn requested_delay(&self) -> Option<Duration> {
        self.delay
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
    /// This failure with its error turned into its text and dropped: all the runtime keeps
    /// of it after the call, so that the error's own code (`Display`, `Drop`) runs inside
    /// the call's `catch_unwind` (see `engine::execute`), never in the partition's owner.
    pub(crate) fn rendered(self) -> Self {
        HandlerError { source: Box::new(Rendered(self.source.to_string())), ..self }
    }
    /// A failure of `kind` (and `delay`) known only by `text`: for an error whose
    /// rendering panicked.
    pub(crate) fn from_text(kind: FailureKind, delay: Option<Duration>, text: String) -> Self {
        HandlerError { kind, source: Box::new(Rendered(text)), delay }
    }
    /// The error's text: borrowed once [rendered](Self::rendered), so a failed record's
    /// text is formatted once, not again for its retry headers.
    pub(crate) fn text(&self) -> std::borrow::Cow<'_, str> {
        match self.source.downcast_ref::<Rendered>() {
            Some(Rendered(text)) => text.as_str().into(),
            None => self.source.to_string().into(),
        }
    }
}

/// An error as the text it rendered to.
struct Rendered(String);

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for Rendered {}

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
        f.debug_struct("HandlerError").field("kind", &self.kind).field("source", &self.source).field("delay", &self.delay).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn a_rendered_error_keeps_its_text_and_lends_it() {
        let e = HandlerError::retry_after(std::io::Error::other("rate limited"), Duration::from_secs(5));
        assert!(matches!(e.text(), Cow::Owned(t) if t == "rate limited"));
        let e = e.rendered();
        assert!(matches!(e.text(), Cow::Borrowed("rate limited")));
        assert_eq!(
            (e.to_string().as_str(), e.kind(), e.requested_delay()),
            ("rate limited", FailureKind::Retryable, Some(Duration::from_secs(5)))
        );
        assert_eq!(format!("{:?}", e.source()), "\"rate limited\"");
    }
}
