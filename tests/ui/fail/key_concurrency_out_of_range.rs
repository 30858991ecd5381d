use retryable_topic::{retryable_topic, HandlerError};
#[retryable_topic(topics = ["t"], group = "g", key_concurrency = 0)]
async fn h(v: serde_json::Value) -> Result<(), HandlerError> { let _ = v; Ok(()) }
fn main() {}
