use retryable_topic::{retryable_topic, HandlerError};
#[retryable_topic(topics = ["a", "a-retries"], group = "g", group_naming = shared)]
async fn h(v: serde_json::Value) -> Result<(), HandlerError> { let _ = v; Ok(()) }
fn main() {}
