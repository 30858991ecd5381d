use retryable_topic::{retryable_topic, HandlerError};
#[retryable_topic(topics = ["t"], group = "g", stalled_after = "0s")]
async fn h(v: serde_json::Value) -> Result<(), HandlerError> { let _ = v; Ok(()) }
fn main() {}
