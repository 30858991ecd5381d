use retryable_topic::{retryable_topic, HandlerError};
#[retryable_topic(topics = ["t"], group = "g")]
async fn h<T: serde::de::DeserializeOwned>(v: T) -> Result<(), HandlerError> { let _ = v; Ok(()) }
fn main() {}
