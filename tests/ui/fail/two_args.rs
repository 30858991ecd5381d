use retryable_topic::{retryable_topic, HandlerError};
#[retryable_topic(topics = ["t"], group = "g")]
async fn h(v: serde_json::Value, extra: u32) -> Result<(), HandlerError> { let _ = (v, extra); Ok(()) }
fn main() {}
