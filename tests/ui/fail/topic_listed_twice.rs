use retryable_topic::{retryable_topic, HandlerError};
#[retryable_topic(topics = ["a", "b", "a"], group = "g")]
async fn h(v: serde_json::Value) -> Result<(), HandlerError> { let _ = v; Ok(()) }
fn main() {}
